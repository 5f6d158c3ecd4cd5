//! The status page's history: every server samples the tiers, the queues and its own count
//! of instances ingested every `[status] sample_secs` into the locator ([`Sampler`]), and the
//! page reads them back as plot-ready series ([`History`]): bytes per tier over the kept
//! window, queue lengths, and the ingest rate of every node together over the last hour and
//! the last day.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::locator::samples::Sample;
use crate::locator::{now_millis, Locator, LocatorError};
use crate::metrics;
use crate::model::Tier;

/// The series of this process's ingest count (cumulative since it started).
const INGESTED: &str = "ingested";
const TIER_BYTES: &str = "tier_bytes:";
const QUEUE: &str = "queue:";

/// Takes a sample every period until shutdown.
#[derive(Debug)]
pub struct Sampler {
    pub locator: Arc<Locator>,
    pub every: Duration,
    pub keep: Duration,
}

impl Sampler {
    /// Samples at once, then every period, until `shutdown` turns true. A failed sample is
    /// logged and the next one tried on time.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match self.sample().await {
                Ok(()) => debug!("status sample taken"),
                Err(e) => warn!(error = %e, "cannot take the status page's sample"),
            }
        }
    }

    async fn sample(&self) -> Result<(), LocatorError> {
        let mut series = vec![(
            INGESTED.to_string(),
            metrics::INGEST_INSTANCES.value(&[]) as i64,
        )];
        let mut tiers: BTreeMap<&str, i64> =
            [(Tier::Online.as_str(), 0), (Tier::Archive.as_str(), 0)]
                .into_iter()
                .collect();
        for (tier, totals) in self.locator.tier_totals().await? {
            tiers.insert(tier.as_str(), totals.bytes as i64);
        }
        series.extend(tiers.iter().map(|(t, b)| (format!("{TIER_BYTES}{t}"), *b)));
        let queues = self.locator.queue_lengths().await?;
        series.push((format!("{QUEUE}backup"), queues.backup as i64));
        series.push((format!("{QUEUE}repair"), queues.repairs as i64));
        let now = now_millis();
        let keep_from = now - self.keep.as_millis() as i64;
        self.locator.record_samples(now, &series, keep_from).await
    }
}

/// A plotted line: its name and its points (Unix milliseconds, value), oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Vec<(i64, f64)>,
}

/// What the page plots.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// When the history was read (Unix milliseconds).
    pub now: i64,
    /// Where the tier and queue plots start: `now` less the kept window.
    pub since: i64,
    /// Bytes per tier.
    pub tier_bytes: Vec<Line>,
    /// Backup and repair queue lengths.
    pub queues: Vec<Line>,
    /// Instances ingested per minute by every node together, in one-minute bins over the
    /// last hour.
    pub ingest_hour: Line,
    /// The same in 30-minute bins over the last day.
    pub ingest_day: Line,
}

impl History {
    /// Reads the samples of the kept window.
    pub async fn read(locator: &Locator, keep: Duration) -> Result<History, LocatorError> {
        let now = now_millis();
        let since = now - keep.as_millis() as i64;
        let samples = locator.samples_since(since).await?;
        Ok(History::of(&samples, now, since))
    }

    fn of(samples: &[Sample], now: i64, since: i64) -> History {
        let increments = increments(samples);
        History {
            now,
            since,
            tier_bytes: lines(samples, TIER_BYTES),
            queues: lines(samples, QUEUE),
            ingest_hour: rate("per minute, last hour", &increments, now, 60_000, 60),
            ingest_day: rate("per minute, last day", &increments, now, 1_800_000, 48),
        }
    }
}

/// The series starting with `prefix`, one line each (named without the prefix).
fn lines(samples: &[Sample], prefix: &str) -> Vec<Line> {
    let mut lines: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for s in samples {
        if let Some(name) = s.series.strip_prefix(prefix) {
            lines
                .entry(name)
                .or_default()
                .push((s.taken_at, s.value as f64));
        }
    }
    lines
        .into_iter()
        .map(|(name, points)| Line {
            name: name.to_string(),
            points,
        })
        .collect()
}

/// Instances ingested between each node's consecutive samples, at the later one's time. A
/// count lower than the one before means the server restarted: it counted from 0 again.
fn increments(samples: &[Sample]) -> Vec<(i64, i64)> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for s in samples.iter().filter(|s| s.series == INGESTED) {
        if let Some(before) = last.insert(&s.node, s.value) {
            let added = if s.value >= before {
                s.value - before
            } else {
                s.value
            };
            out.push((s.taken_at, added));
        }
    }
    out
}

/// `bins` bins of `width` ms ending at `now`: instances per minute in each, from the first
/// bin holding a sample on (earlier bins have no data, which is not a rate of 0).
fn rate(name: &str, increments: &[(i64, i64)], now: i64, width: i64, bins: i64) -> Line {
    let start = now - width * bins;
    let mut sums = vec![0i64; bins as usize];
    let mut first = None;
    for &(t, n) in increments {
        if t <= start || t > now {
            continue;
        }
        let bin = (((t - start - 1) / width) as usize).min(sums.len() - 1);
        sums[bin] += n;
        first = Some(first.map_or(bin, |f: usize| f.min(bin)));
    }
    let per_minute = width as f64 / 60_000.0;
    let points = match first {
        None => Vec::new(),
        Some(first) => (first..sums.len())
            .map(|bin| {
                let end = start + width * (bin as i64 + 1);
                (end, sums[bin] as f64 / per_minute)
            })
            .collect(),
    };
    Line {
        name: name.to_string(),
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(taken_at: i64, node: &str, series: &str, value: i64) -> Sample {
        Sample {
            taken_at,
            node: node.into(),
            series: series.into(),
            value,
        }
    }

    #[test]
    fn the_ingest_rate_adds_nodes_and_survives_a_restart() {
        let now = 10 * 60_000;
        let samples = [
            sample(6 * 60_000, "a", "ingested", 100),
            sample(6 * 60_000, "b", "ingested", 0),
            sample(7 * 60_000, "a", "ingested", 160),
            sample(7 * 60_000, "b", "ingested", 30),
            // a restarted: it counts from 0 again.
            sample(8 * 60_000, "a", "ingested", 20),
            sample(8 * 60_000, "b", "ingested", 30),
            sample(8 * 60_000, "a", "tier_bytes:online", 5),
        ];
        let history = History::of(&samples, now, 0);
        let points = &history.ingest_hour.points;
        // From the first bin with an increment (ending at minute 7) to now.
        assert_eq!(
            points,
            &[
                (7 * 60_000, 90.0),
                (8 * 60_000, 20.0),
                (9 * 60_000, 0.0),
                (10 * 60_000, 0.0)
            ]
        );
        assert_eq!(history.ingest_day.points, [(now, 110.0 / 30.0)]);
        assert_eq!(
            history.tier_bytes,
            [Line {
                name: "online".into(),
                points: vec![(8 * 60_000, 5.0)]
            }]
        );
    }
}
