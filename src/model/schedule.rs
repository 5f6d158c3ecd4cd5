//! Daily windows (`HH:MM-HH:MM`, UTC) in which the server's workers run: whether a minute
//! falls inside one, and when one opens next. Pure functions of the clock value given.

/// Whether `minute` (since midnight) falls in `window`; equal ends mean all day.
pub fn in_window(window: (u32, u32), minute: u32) -> bool {
    let (start, end) = window;
    if start == end {
        true
    } else if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

/// Minutes from `minute` until `window` next opens (0 when it is open now).
pub fn minutes_until_open(window: (u32, u32), minute: u32) -> u32 {
    if in_window(window, minute) {
        0
    } else {
        (window.0 + 1440 - minute) % 1440
    }
}

/// The current minute since midnight, UTC.
pub fn minute_now() -> u32 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    ((millis / 60_000) % 1440) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_past_midnight() {
        assert!(in_window((60, 300), 60));
        assert!(!in_window((60, 300), 300));
        assert!(in_window((22 * 60, 2 * 60), 23 * 60));
        assert!(in_window((22 * 60, 2 * 60), 30));
        assert!(!in_window((22 * 60, 2 * 60), 12 * 60));
        assert!(in_window((0, 0), 23 * 60 + 59));
    }

    #[test]
    fn the_next_opening_is_counted_in_minutes() {
        assert_eq!(minutes_until_open((60, 300), 100), 0);
        assert_eq!(minutes_until_open((60, 300), 300), 1200);
        assert_eq!(minutes_until_open((22 * 60, 2 * 60), 21 * 60), 60);
        assert_eq!(minutes_until_open((60, 300), 0), 60);
    }
}
