//! Daily windows (`HH:MM-HH:MM`, UTC) in which the server's workers run: whether a minute
//! falls inside one, when one opens and closes next, and UTC ISO-8601 timestamps for
//! showing those times. Pure functions of the clock value given.

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

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 1440;

/// When `window` next opens strictly after `now_ms` (Unix milliseconds), to the minute:
/// while it is open, that is the following opening. `None` for an all-day window (it never
/// closes, so it never opens again).
pub fn next_open(window: (u32, u32), now_ms: i64) -> Option<i64> {
    next_edge(window, window.0, now_ms)
}

/// When `window` next closes after `now_ms` (Unix milliseconds), to the minute. `None` for
/// an all-day window.
pub fn next_close(window: (u32, u32), now_ms: i64) -> Option<i64> {
    next_edge(window, window.1, now_ms)
}

/// The next time of day `edge` (minutes since midnight) strictly after `now_ms`'s minute.
fn next_edge(window: (u32, u32), edge: u32, now_ms: i64) -> Option<i64> {
    if window.0 == window.1 {
        return None;
    }
    let minute = now_ms.div_euclid(MINUTE_MS);
    let of_day = minute.rem_euclid(DAY_MINUTES);
    let mut ahead = (i64::from(edge) - of_day).rem_euclid(DAY_MINUTES);
    if ahead == 0 {
        // The edge is this very minute: it has just happened; the next one is tomorrow.
        ahead = DAY_MINUTES;
    }
    Some((minute + ahead) * MINUTE_MS)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix milliseconds (UTC, proleptic Gregorian; sub-second
/// part dropped).
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

    #[test]
    fn timestamps_are_utc_iso_8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(iso8601(4_107_542_400_000), "2100-03-01T00:00:00Z");
        assert_eq!(iso8601(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn next_edges_are_strictly_ahead() {
        let day = 86_400_000;
        // 2000-01-01T00:00Z is a multiple of a day; now is 02:30:15 that day.
        let midnight = 946_684_800_000;
        let now = midnight + (150 * 60 + 15) * 1000;
        // Open now (01:00-05:00): closes today at 05:00, opens again tomorrow at 01:00.
        assert_eq!(next_close((60, 300), now), Some(midnight + 300 * 60_000));
        assert_eq!(
            next_open((60, 300), now),
            Some(midnight + day + 60 * 60_000)
        );
        // Closed (22:00-02:00, wrapping): opens tonight at 22:00, closes tomorrow at 02:00.
        assert_eq!(next_open((1320, 120), now), Some(midnight + 1320 * 60_000));
        assert_eq!(
            next_close((1320, 120), now),
            Some(midnight + day + 120 * 60_000)
        );
        // An edge this very minute has just happened.
        assert_eq!(
            next_open((150, 300), now),
            Some(midnight + day + 150 * 60_000)
        );
        assert_eq!(next_open((0, 0), now), None);
        assert_eq!(next_close((0, 0), now), None);
    }
}
