//! Bandwidth throttles of the background writers (`[backup]` and `[tiering]`
//! `throttle_mb_s`): sleep between writes so that the average stays under the limit.

use std::time::{Duration, Instant};

/// Time spent not writing (planning, reading, waiting on the locator) that may be made up for
/// with a burst: beyond it, idle time earns no credit, so writes after a pause are paced too.
const BURST: Duration = Duration::from_millis(50);

/// Paces writes to a bandwidth limit by sleeping between them.
pub struct Throttle {
    bytes_per_sec: Option<f64>,
    started: Instant,
    written: u64,
}

impl Throttle {
    /// `mb_s` 0 (or less) is unlimited.
    pub fn new(mb_s: f64) -> Throttle {
        Throttle {
            bytes_per_sec: (mb_s > 0.0).then_some(mb_s * 1e6),
            started: Instant::now(),
            written: 0,
        }
    }

    /// Accounts `bytes` just written, sleeping as long as needed to keep to the limit.
    pub async fn pace(&mut self, bytes: u64) {
        if let Some(pause) = self.pause_after(bytes, Instant::now()) {
            tokio::time::sleep(pause).await;
        }
    }

    /// How long to sleep after `bytes` more were written, at `now`.
    fn pause_after(&mut self, bytes: u64, now: Instant) -> Option<Duration> {
        let rate = self.bytes_per_sec?;
        let due = Duration::from_secs_f64(self.written as f64 / rate);
        let idle = now.saturating_duration_since(self.started + due);
        if idle > BURST {
            self.started += idle - BURST;
        }
        self.written += bytes;
        let due = Duration::from_secs_f64(self.written as f64 / rate);
        let elapsed = now.saturating_duration_since(self.started);
        (due > elapsed).then(|| due - elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_after_a_pause_are_paced_too() {
        let mut throttle = Throttle::new(1.0); // 1 MB/s
        let start = throttle.started;
        // A second of planning first: only 50 ms of it may be made up for.
        let later = start + Duration::from_secs(1);
        let pause = throttle.pause_after(1_000_000, later).unwrap();
        assert_eq!(pause, Duration::from_millis(950));
        // Writing on at the limit: each 100 kB takes 100 ms.
        let next = later + pause;
        let pause = throttle.pause_after(100_000, next).unwrap();
        assert_eq!(pause, Duration::from_millis(100));
    }

    #[test]
    fn unlimited_never_pauses() {
        let mut throttle = Throttle::new(0.0);
        assert_eq!(throttle.pause_after(u64::MAX / 2, Instant::now()), None);
    }
}
