//! The `/metrics` answer (Prometheus text format): this process's counters, gauges and
//! histograms (`crate::metrics`), its resource use, and the site's figures read from the
//! locator at scrape time: instances and bytes per tier, backup copies, queues, Storage
//! Commitment requests, the last run of every job, and the processes holding leases. The
//! site's figures are the same on every node (aggregate them with `max`, not `sum`); they
//! are read at most once per [`SITE_TTL`], so scrapes from several Prometheus servers cost
//! the locator one set of queries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use tracing::warn;

use crate::locator::{Locator, LocatorError};
use crate::metrics::{self, header, sample, Kind};
use crate::model::Tier;

/// How long the site's figures are reused before the locator is asked again.
pub const SITE_TTL: Duration = Duration::from_secs(10);
/// How long reading the site's figures may take; a scrape then answers without them.
pub const SITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Leases shown: held now or ended within this many milliseconds.
const RECENT_LEASES_MS: i64 = 3600 * 1000;

/// Builds the `/metrics` answer.
#[derive(Debug)]
pub struct Metrics {
    locator: Arc<Locator>,
    started: SystemTime,
    /// The site's figures in exposition format, and when they were read.
    site: Mutex<Option<(Instant, String)>>,
}

impl Metrics {
    pub fn new(locator: Arc<Locator>) -> Metrics {
        metrics::touch_known_series();
        Metrics {
            locator,
            started: SystemTime::now(),
            site: Mutex::new(None),
        }
    }

    /// The whole answer.
    pub async fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        metrics::encode_all(&mut out);
        self.process(&mut out);
        self.pool(&mut out);
        out.push_str(&self.site().await);
        out
    }

    /// The site's figures, read again when older than [`SITE_TTL`]; a failed read is
    /// logged and answered with `strata_site_up 0`.
    async fn site(&self) -> String {
        let mut cached = self.site.lock().await;
        if let Some((at, text)) = cached.as_ref() {
            if at.elapsed() < SITE_TTL {
                return text.clone();
            }
        }
        let reading = Instant::now();
        let read = tokio::time::timeout(SITE_TIMEOUT, site_figures(&self.locator)).await;
        let (up, mut text) = match read {
            Ok(Ok(text)) => (1.0, text),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the site's figures for /metrics");
                (0.0, String::new())
            }
            Err(_) => {
                warn!(
                    timeout_secs = SITE_TIMEOUT.as_secs(),
                    "reading the site's figures for /metrics timed out"
                );
                (0.0, String::new())
            }
        };
        gauge(
            &mut text,
            "strata_site_up",
            "Whether the site's figures below could be read from the locator.",
            &[(vec![], up)],
        );
        gauge(
            &mut text,
            "strata_site_read_duration_seconds",
            "How long reading the site's figures from the locator took.",
            &[(vec![], reading.elapsed().as_secs_f64())],
        );
        *cached = Some((Instant::now(), text.clone()));
        text
    }

    /// The locator's connection pool in this process.
    fn pool(&self, out: &mut String) {
        let pool = self.locator.pool_state();
        gauge(
            out,
            "strata_locator_connections",
            "This process's locator connections, by state: idle, in_use.",
            &[
                (vec![("state", "idle".into())], f64::from(pool.idle)),
                (
                    vec![("state", "in_use".into())],
                    f64::from(pool.open.saturating_sub(pool.idle)),
                ),
            ],
        );
        gauge(
            out,
            "strata_locator_connections_max",
            "The most connections this process's locator pool opens (SQLite on a file keeps \
             two more, for writes).",
            &[(vec![], f64::from(pool.max))],
        );
    }

    /// This process: version, start time, memory, CPU and open files (from `/proc`).
    fn process(&self, out: &mut String) {
        gauge(
            out,
            "strata_build_info",
            "The version of this process's build (value 1).",
            &[(vec![("version", env!("CARGO_PKG_VERSION").into())], 1.0)],
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch.",
            &[(vec![], started.floor())],
        );
        if let Some(rss) = resident_bytes() {
            gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory size.",
                &[(vec![], rss as f64)],
            );
        }
        if let Some(heap) = heap_bytes() {
            gauge(
                out,
                "strata_heap_allocated_bytes",
                "Bytes the allocator (jemalloc) has handed out and not had back.",
                &[(vec![], heap.allocated as f64)],
            );
            gauge(
                out,
                "strata_heap_resident_bytes",
                "Bytes of the allocator's pages in memory: live data, metadata, and freed \
                 pages not yet given back to the system.",
                &[(vec![], heap.resident as f64)],
            );
        }
        header(
            out,
            "process_cpu_seconds_total",
            "User and system CPU time spent.",
            Kind::Counter,
        );
        sample(out, "process_cpu_seconds_total", &[], cpu_seconds());
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                out,
                "process_open_fds",
                "Open file descriptors.",
                &[(vec![], fds.count() as f64)],
            );
        }
    }
}

type Series = (Vec<(&'static str, String)>, f64);

/// Appends a gauge family with these series.
fn gauge(out: &mut String, name: &str, help: &str, series: &[Series]) {
    header(out, name, help, Kind::Gauge);
    for (labels, value) in series {
        sample(out, name, labels, *value);
    }
}

/// The site's figures from the locator, in exposition format.
async fn site_figures(locator: &Locator) -> Result<String, LocatorError> {
    let mut out = String::new();
    let totals = locator.totals().await?;
    gauge(
        &mut out,
        "strata_stored_objects",
        "Patients, studies, series and instances in the locator (site-wide).",
        &[
            (vec![("level", "patient".into())], totals.patients as f64),
            (vec![("level", "study".into())], totals.studies as f64),
            (vec![("level", "series".into())], totals.series as f64),
            (vec![("level", "instance".into())], totals.instances as f64),
        ],
    );
    let mut tiers: BTreeMap<&str, (u64, u64)> = [Tier::Online, Tier::Archive]
        .iter()
        .map(|t| (t.as_str(), (0, 0)))
        .collect();
    for (tier, t) in &totals.tiers {
        tiers.insert(tier.as_str(), (t.instances, t.bytes));
    }
    let per_tier = |pick: fn(&(u64, u64)) -> u64| -> Vec<Series> {
        tiers
            .iter()
            .map(|(tier, t)| (vec![("tier", tier.to_string())], pick(t) as f64))
            .collect()
    };
    gauge(
        &mut out,
        "strata_tier_instances",
        "Instances whose primary copy is in each tier (site-wide).",
        &per_tier(|t| t.0),
    );
    gauge(
        &mut out,
        "strata_tier_bytes",
        "Bytes of the instances whose primary copy is in each tier (site-wide).",
        &per_tier(|t| t.1),
    );
    let copies: Vec<Series> = locator
        .copy_totals()
        .await?
        .into_iter()
        .map(|(kind, n)| (vec![("kind", kind.as_str().to_string())], n as f64))
        .collect();
    gauge(
        &mut out,
        "strata_backup_copies",
        "Backup copies of instances, by kind: nearline, offline (site-wide).",
        &copies,
    );
    let queues = locator.queue_lengths().await?;
    gauge(
        &mut out,
        "strata_queue_length",
        "Work waiting (site-wide): studies for a near-line copy (backup), instances whose \
         primary waits to be re-created from a copy (repair).",
        &[
            (vec![("queue", "backup".into())], queues.backup as f64),
            (vec![("queue", "repair".into())], queues.repairs as f64),
        ],
    );
    let c = locator.commitment_counts().await?;
    gauge(
        &mut out,
        "strata_commitment_requests",
        "Storage Commitment requests by state: checking, ready (report not delivered yet), \
         reported, given_up (site-wide).",
        &[
            (vec![("state", "checking".into())], c.checking as f64),
            (vec![("state", "ready".into())], c.ready as f64),
            (vec![("state", "reported".into())], c.reported as f64),
            (vec![("state", "given_up".into())], c.given_up as f64),
        ],
    );
    let fallbacks = locator
        .counter(crate::locator::jobs::READ_FALLBACKS)
        .await?;
    header(
        &mut out,
        "strata_site_read_fallbacks_total",
        "Reads served from a backup copy by every process of the site, ever.",
        Kind::Counter,
    );
    sample(
        &mut out,
        "strata_site_read_fallbacks_total",
        &[],
        fallbacks as f64,
    );
    let read = crate::service::site::status::bytes_read(locator).await?;
    header(
        &mut out,
        "strata_site_read_bytes_total",
        "Bytes of stored instances read by every process of the site, ever, by tier: online, \
         archive, nearline, offline.",
        Kind::Counter,
    );
    for (from, bytes) in read {
        sample(
            &mut out,
            "strata_site_read_bytes_total",
            &[("tier", from.to_string())],
            bytes as f64,
        );
    }
    job_runs(&mut out, locator).await?;
    leases(&mut out, locator).await?;
    Ok(out)
}

/// The last run of every job that ran (CLI runs included): when it started, how long it
/// took, whether it succeeded.
async fn job_runs(out: &mut String, locator: &Locator) -> Result<(), LocatorError> {
    let runs = locator.last_runs().await?;
    let job = |job: &str| vec![("job", job.to_string())];
    gauge(
        out,
        "strata_job_last_run_start_timestamp_seconds",
        "When the last run of each job started, since the Unix epoch (site-wide).",
        &runs
            .iter()
            .map(|r| (job(&r.job), (r.started_at / 1000) as f64))
            .collect::<Vec<_>>(),
    );
    gauge(
        out,
        "strata_job_last_run_duration_seconds",
        "How long the last finished run of each job took (site-wide).",
        &runs
            .iter()
            .filter_map(|r| {
                let end = r.finished_at?;
                Some((job(&r.job), (end - r.started_at) as f64 / 1000.0))
            })
            .collect::<Vec<_>>(),
    );
    gauge(
        out,
        "strata_job_last_run_success",
        "1 if the last run of each job succeeded, 0 if it failed or was interrupted; absent \
         while it runs (site-wide).",
        &runs
            .iter()
            .filter(|r| r.outcome != "running")
            .map(|r| (job(&r.job), if r.outcome == "ok" { 1.0 } else { 0.0 }))
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// Processes holding a lease now, or whose lease ended in the last hour, by node and role.
async fn leases(out: &mut String, locator: &Locator) -> Result<(), LocatorError> {
    let mut counts: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    for lease in locator.recent_leases(RECENT_LEASES_MS).await? {
        let state = if lease.live == 1 { "live" } else { "expired" };
        *counts.entry((lease.node, lease.role, state)).or_default() += 1;
    }
    gauge(
        out,
        "strata_leases",
        "Processes of each node and role (server, cli) whose lease holds (live) or ended in \
         the last hour (expired).",
        &counts
            .into_iter()
            .map(|((node, role, state), n)| {
                (
                    vec![("node", node), ("role", role), ("state", state.into())],
                    n as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// Resident set size from `/proc/self/status` (`VmRSS`, in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the allocator holds, from jemalloc's statistics.
struct Heap {
    allocated: u64,
    resident: u64,
}

/// jemalloc's `stats.allocated` and `stats.resident`, refreshed (they are cached until the
/// statistics epoch advances).
fn heap_bytes() -> Option<Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(Heap {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

/// User plus system CPU time of every thread of this process, in seconds
/// (`CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_reads_its_memory_and_cpu_time() {
        assert!(super::resident_bytes().unwrap() > 1 << 20);
        // jemalloc is the allocator here too: what it holds is counted, and what is live
        // is resident.
        // black_box: LLVM may elide an allocation it sees unused, and now it sees malloc.
        let kept = std::hint::black_box(vec![1u8; 8 << 20]);
        let heap = super::heap_bytes().unwrap();
        assert!(heap.allocated >= kept.len() as u64, "{}", heap.allocated);
        assert!(
            heap.resident >= heap.allocated,
            "{} {}",
            heap.resident,
            heap.allocated
        );
        drop(kept);
        // Spinning shows as CPU time: 20 ms of it within 10 s, however loaded the machine.
        let before = super::cpu_seconds();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while super::cpu_seconds() - before < 0.02 && start.elapsed().as_secs() < 10 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let spent = super::cpu_seconds() - before;
        assert!(
            spent >= 0.02,
            "{spent} s of CPU after spinning for {:?}",
            start.elapsed()
        );
    }
}
