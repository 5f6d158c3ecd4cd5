//! Bandwidth throttles of the background writers (`[backup]` and `[tiering]`
//! `throttle_mb_s`): sleep between writes so that the average stays under the limit.

use std::time::{Duration, Instant};

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
        self.written += bytes;
        if let Some(rate) = self.bytes_per_sec {
            let due = Duration::from_secs_f64(self.written as f64 / rate);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}
