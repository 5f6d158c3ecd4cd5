//! `strata status`: what is stored, per tier and per backup kind, what is queued, the last
//! run of each job and how many reads fell back to a backup copy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::jobs::{last_runs, RunView, READ_FALLBACKS};
use crate::locator::commitments::CommitmentCounts;
use crate::locator::copies::{CopyKind, QueueLengths};
use crate::locator::jobs::{
    bytes_read_counter, READ_FROM, RENDITION_BYTES_OF, RENDITION_CPU_SAVED_US, RENDITION_HITS,
    RENDITION_MISSES,
};
use crate::locator::{Locator, LocatorError, Owner, Role, TierTotals};
use crate::model::schedule::iso8601;
use crate::model::Tier;

/// The status report; its JSON form is a contract other tools rely on.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
    /// Per tier; `online` and `archive` are always present.
    pub tiers: BTreeMap<&'static str, TierTotals>,
    /// Backup copies per kind (`nearline`, `offline`).
    pub copies: BTreeMap<&'static str, u64>,
    /// Studies waiting for a near-line copy, instances waiting for their primary's repair.
    pub queues: QueueLengths,
    /// Storage Commitment requests by state: being checked, reports waiting (retried),
    /// reported, given up.
    pub commitments: CommitmentCounts,
    /// The last run of every job (`tier`, `backup`, `repair`, `verify`, `import`, `restore`,
    /// `export-volume`, `import-volume`, `delete`, `retention`), `null` for a job that never ran.
    pub last_runs: BTreeMap<&'static str, Option<RunView>>,
    /// Reads served from a backup copy because the primary was missing or damaged, by every
    /// process, ever.
    pub read_fallbacks: u64,
    /// Bytes of stored instances read by every process, ever, per tier (`online`, `archive`)
    /// and kind of backup copy (`nearline`, `offline`); a server adds its reads every few
    /// seconds, a command when it is done.
    pub bytes_read: BTreeMap<&'static str, u64>,
    /// The rendition caches of every server (`[renditions]`).
    pub renditions: RenditionCounts,
    /// The processes of every node that held a lease in the last hour (this command's own
    /// left out), newest first.
    pub nodes: Vec<NodeView>,
}

/// The rendition caches' counts: every server's sums since the locator was created, and
/// the bytes they hold now.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RenditionCounts {
    /// Rendered images and thumbnails answered from a cache.
    pub hits: u64,
    /// Those drawn because no cache held them.
    pub misses: u64,
    /// hits / (hits + misses); 0 before any request.
    pub hit_ratio: f64,
    /// Bytes the caches hold (each server's, as it last said).
    pub bytes: u64,
    /// CPU seconds of decoding and drawing that the hits saved.
    pub cpu_seconds_saved: f64,
}

/// The rendition caches' counters.
pub async fn rendition_counts(locator: &Locator) -> Result<RenditionCounts, LocatorError> {
    let hits = locator.counter(RENDITION_HITS).await?;
    let misses = locator.counter(RENDITION_MISSES).await?;
    Ok(RenditionCounts {
        hits,
        misses,
        hit_ratio: if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        },
        bytes: locator.counter_sum(RENDITION_BYTES_OF).await?,
        cpu_seconds_saved: locator.counter(RENDITION_CPU_SAVED_US).await? as f64 / 1e6,
    })
}

/// One process's lease as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// `[node] id`.
    pub node: String,
    /// `server` or `cli`.
    pub role: String,
    pub host: String,
    pub pid: i64,
    /// The lease (fencing token).
    pub lease: i64,
    /// UTC, ISO-8601, database clock.
    pub started_at: String,
    pub renewed_at: String,
    pub expires_at: String,
    /// Whether the lease holds now; an expired one's work is taken over by others.
    pub live: bool,
    /// Claims it still holds: archive moves, backup claims, volumes being written, runs.
    pub claims: i64,
}

/// Leases shown: held now or expired within the last hour.
const RECENT_MS: i64 = 3600 * 1000;

/// Builds the report from the locator.
pub async fn status(config: &Config) -> Result<StatusReport, LocatorError> {
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let result = report(&locator, Some(locator.lease())).await;
    locator.close().await;
    result
}

/// Builds the report with a locator already open; the process holding lease `skip` (the
/// command's own) is left out of the nodes.
pub async fn report(locator: &Locator, skip: Option<i64>) -> Result<StatusReport, LocatorError> {
    let totals = locator.totals().await?;
    let mut tiers = BTreeMap::new();
    tiers.insert(Tier::Online.as_str(), TierTotals::default());
    tiers.insert(Tier::Archive.as_str(), TierTotals::default());
    for (tier, t) in totals.tiers.iter().cloned() {
        tiers.insert(tier.as_str(), t);
    }
    let mut copies = BTreeMap::new();
    copies.insert(CopyKind::Nearline.as_str(), 0);
    copies.insert(CopyKind::Offline.as_str(), 0);
    for (kind, n) in locator.copy_totals().await? {
        copies.insert(kind.as_str(), n);
    }
    let queues = locator.queue_lengths().await?;
    let commitments = locator.commitment_counts().await?;
    let last_runs = last_runs(locator).await?;
    let read_fallbacks = locator.counter(READ_FALLBACKS).await?;
    let bytes_read = bytes_read(locator).await?;
    let renditions = rendition_counts(locator).await?;
    let nodes = locator
        .recent_leases(RECENT_MS)
        .await?
        .into_iter()
        .filter(|l| Some(l.id) != skip)
        .map(|l| NodeView {
            node: l.node,
            role: l.role,
            host: l.host,
            pid: l.pid,
            lease: l.id,
            started_at: iso8601(l.started_at),
            renewed_at: iso8601(l.renewed_at),
            expires_at: iso8601(l.expires_at),
            live: l.live == 1,
            claims: l.claims,
        })
        .collect();
    Ok(StatusReport {
        patients: totals.patients,
        studies: totals.studies,
        series: totals.series,
        instances: totals.instances,
        bytes: totals.bytes,
        tiers,
        copies,
        queues,
        commitments,
        last_runs,
        read_fallbacks,
        bytes_read,
        renditions,
        nodes,
    })
}

/// The locator's counters of bytes read, by tier and kind of copy.
pub async fn bytes_read(locator: &Locator) -> Result<BTreeMap<&'static str, u64>, LocatorError> {
    let mut read = BTreeMap::new();
    for from in READ_FROM {
        read.insert(from, locator.counter(&bytes_read_counter(from)).await?);
    }
    Ok(read)
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "patients   {}", self.patients)?;
        writeln!(f, "studies    {}", self.studies)?;
        writeln!(f, "series     {}", self.series)?;
        writeln!(f, "instances  {}", self.instances)?;
        writeln!(f, "bytes      {}", self.bytes)?;
        for (tier, t) in &self.tiers {
            writeln!(
                f,
                "tier {tier:<8} {} instances, {} bytes",
                t.instances, t.bytes
            )?;
        }
        for (kind, n) in &self.copies {
            writeln!(f, "copies {kind:<8} {n} instances")?;
        }
        writeln!(
            f,
            "queued     {} studies for backup, {} primaries for repair",
            self.queues.backup, self.queues.repairs
        )?;
        let c = &self.commitments;
        writeln!(
            f,
            "commitment {} being checked, {} reports waiting, {} reported, {} given up",
            c.checking, c.ready, c.reported, c.given_up
        )?;
        writeln!(
            f,
            "fallbacks  {} reads served from a backup copy",
            self.read_fallbacks
        )?;
        let read: Vec<String> = self
            .bytes_read
            .iter()
            .map(|(from, bytes)| format!("{from} {bytes}"))
            .collect();
        writeln!(f, "bytes read {}", read.join(", "))?;
        let r = &self.renditions;
        writeln!(
            f,
            "renditions {} hits, {} misses ({:.1}% hits), {} bytes cached, {:.1} CPU seconds saved",
            r.hits,
            r.misses,
            r.hit_ratio * 100.0,
            r.bytes,
            r.cpu_seconds_saved
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "node {:<12} {} {} pid {} on {} lease {} {}, {} claims",
                n.node,
                n.role,
                if n.live { "live" } else { "expired" },
                n.pid,
                n.host,
                n.lease,
                if n.live {
                    format!("until {}", n.expires_at)
                } else {
                    format!("at {}", n.expires_at)
                },
                n.claims
            )?;
        }
        for (job, run) in &self.last_runs {
            if let Some(run) = run {
                writeln!(f, "last {job:<13} {run}")?;
            }
        }
        Ok(())
    }
}
