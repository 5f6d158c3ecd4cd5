//! Requests per second per calling AE title (`[dicom] max_requests_per_sec_per_ae`): one token
//! bucket per AE title, shared by all of its associations, holding one second of requests.
//! The table is bounded: when it is full, buckets that have refilled (AE titles idle for a
//! second) are dropped, and a new AE title is refused while every tracked one is busy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most AE titles tracked at once.
const MAX_TRACKED: usize = 4096;

#[derive(Debug)]
pub struct RequestRate {
    per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RequestRate {
    /// A limit of `per_sec` requests per second per AE title; `None` for 0 (no limit).
    pub fn new(per_sec: u32) -> Option<RequestRate> {
        (per_sec > 0).then(|| RequestRate {
            per_sec: f64::from(per_sec),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The limit, in requests per second.
    pub fn per_sec(&self) -> u32 {
        self.per_sec as u32
    }

    /// Whether one more request from `ae` is within the limit (and counts it if so).
    pub fn admit(&self, ae: &str) -> bool {
        self.admit_at(ae, Instant::now())
    }

    fn admit_at(&self, ae: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let refill = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + elapsed * self.per_sec).min(self.per_sec)
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(ae) {
            buckets.retain(|_, b| refill(b) < self.per_sec);
            if buckets.len() >= MAX_TRACKED {
                return false;
            }
        }
        let bucket = buckets.entry(ae.to_string()).or_insert(Bucket {
            tokens: self.per_sec,
            at: now,
        });
        let tokens = refill(bucket);
        *bucket = Bucket {
            tokens: if tokens >= 1.0 { tokens - 1.0 } else { tokens },
            at: now,
        };
        tokens >= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_busy_ae_is_held_to_its_rate_and_others_are_not_touched() {
        let rate = RequestRate::new(5).unwrap();
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| rate.admit_at("BUSY", t0)).count();
        assert_eq!(admitted, 5, "one second's worth at once");
        assert!(rate.admit_at("QUIET", t0), "another AE has its own bucket");
        // 400 ms later two more requests are due, not three.
        let later = t0 + Duration::from_millis(400);
        let admitted = (0..20).filter(|_| rate.admit_at("BUSY", later)).count();
        assert_eq!(admitted, 2);
        assert!(RequestRate::new(0).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let rate = RequestRate::new(1).unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            assert!(rate.admit_at(&format!("AE{i}"), t0));
        }
        // Every tracked AE title is busy: a new one waits.
        assert!(!rate.admit_at("NEW", t0));
        // A second later they have all refilled and are dropped to make room.
        assert!(rate.admit_at("NEW", t0 + Duration::from_secs(1)));
        assert!(rate.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
