//! `strata schedule`: when the server's tiering, backup and retention workers run (window,
//! throttle, open now or not, next opening and closing in UTC), what the next pass would take
//! on (studies due for archiving, the backup and repair queues, the studies past retention,
//! listed before they are deleted) and each worker's last run.

use serde::Serialize;

use crate::config::{parse_window, Config};
use crate::jobs::{last_runs, JobKind, RunView};
use crate::lifecycle::retention::{list_expired, Expired, RetentionPolicy};
use crate::locator::archive::DueTotals;
use crate::locator::copies::QueueLengths;
use crate::locator::{now_millis, Locator, LocatorError, Owner, Role};
use crate::model::schedule::{in_window, iso8601, next_close, next_open};

/// The schedule report; its JSON form is a contract for tools.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    /// When the report was made: UTC, ISO-8601.
    pub now: String,
    pub tiering: WorkerSchedule<TieringQueue>,
    pub backup: WorkerSchedule<QueueLengths>,
    /// Re-creation of damaged primaries: the server does it at every poll, whatever the
    /// window.
    pub repair: RepairSchedule,
    /// Deleting studies past `[lifecycle]` retention.
    pub retention: WorkerSchedule<RetentionQueue>,
}

/// Studies the next retention pass would delete.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionQueue {
    pub policy: RetentionPolicy,
    /// Studies past retention now.
    pub studies: u64,
    /// The first of them (at most [`LISTED`]), in the order they were stored: `strata
    /// lifecycle run --dry-run --json` lists them all.
    pub listed: Vec<Expired>,
}

/// Studies past retention listed in the report, at most.
pub const LISTED: usize = 100;

/// When one worker runs, what it would take on next, and how its last run went.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSchedule<Q> {
    /// `HH:MM-HH:MM`, UTC; `null`: the server never runs it by itself (run it by hand).
    pub window: Option<String>,
    /// Bandwidth limit in MB/s, 0 unlimited.
    pub throttle_mb_s: Option<f64>,
    /// How often the server looks for work inside the window (seconds).
    pub poll_secs: u64,
    /// Whether the window contains the current minute (false without a window).
    pub open_now: bool,
    /// When the window next opens after now (UTC, ISO-8601); `null` without a window or
    /// for an all-day one.
    pub next_open: Option<String>,
    /// When the window next closes after now; `null` as for `next_open`.
    pub next_close: Option<String>,
    pub queued: Q,
    pub last_run: Option<RunView>,
}

/// Studies the next tiering pass would archive.
#[derive(Debug, Clone, Serialize)]
pub struct TieringQueue {
    /// Studies are due once their newest instance is older than this.
    pub min_age_days: u32,
    /// Due studies, their online instances and those instances' bytes.
    #[serde(flatten)]
    pub due: DueTotals,
}

/// The repair queue's side of the backup worker.
#[derive(Debug, Clone, Serialize)]
pub struct RepairSchedule {
    pub poll_secs: u64,
    /// Instances whose primary waits for re-creation.
    pub queued: u64,
    pub last_run: Option<RunView>,
}

/// Builds the report from the config, the clock and the locator.
pub async fn schedule(config: &Config) -> Result<ScheduleReport, LocatorError> {
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let result = report(config, &locator).await;
    locator.close().await;
    result
}

/// Builds the report with a locator already open.
pub async fn report(config: &Config, locator: &Locator) -> Result<ScheduleReport, LocatorError> {
    let now = now_millis();
    let cutoff = now - i64::from(config.tiering.min_age_days) * 86_400_000;
    let due = locator.due_totals(cutoff).await?;
    let queues = locator.queue_lengths().await?;
    let policy = RetentionPolicy::from(&config.lifecycle);
    let mut expired = list_expired(locator, &policy).await?;
    let studies = expired.len() as u64;
    expired.truncate(LISTED);
    let mut runs = last_runs(locator).await?;
    let mut last = |job: JobKind| runs.remove(job.as_str()).flatten();
    Ok(ScheduleReport {
        now: iso8601(now),
        tiering: worker(
            &config.tiering.window,
            Some(config.tiering.throttle_mb_s),
            config.tiering.poll_secs,
            now,
            TieringQueue {
                min_age_days: config.tiering.min_age_days,
                due,
            },
            last(JobKind::Tier),
        ),
        backup: worker(
            &config.backup.window,
            Some(config.backup.throttle_mb_s),
            config.backup.poll_secs,
            now,
            queues.clone(),
            last(JobKind::Backup),
        ),
        repair: RepairSchedule {
            poll_secs: config.backup.poll_secs,
            queued: queues.repairs,
            last_run: last(JobKind::Repair),
        },
        retention: worker(
            &config.lifecycle.window,
            None,
            config.lifecycle.poll_secs,
            now,
            RetentionQueue {
                policy,
                studies,
                listed: expired,
            },
            last(JobKind::Retention),
        ),
    })
}

fn worker<Q>(
    window: &str,
    throttle_mb_s: Option<f64>,
    poll_secs: u64,
    now: i64,
    queued: Q,
    last_run: Option<RunView>,
) -> WorkerSchedule<Q> {
    // The config was validated on load: a non-empty window parses.
    let parsed = parse_window(window);
    let minute = (now.div_euclid(60_000) % 1440) as u32;
    WorkerSchedule {
        window: parsed.map(|_| window.trim().to_string()),
        throttle_mb_s,
        poll_secs,
        open_now: parsed.is_some_and(|w| in_window(w, minute)),
        next_open: parsed.and_then(|w| next_open(w, now)).map(iso8601),
        next_close: parsed.and_then(|w| next_close(w, now)).map(iso8601),
        queued,
        last_run,
    }
}

impl<Q> WorkerSchedule<Q> {
    fn fmt_timing(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.window {
            None => writeln!(f, "  window     none — run by hand")?,
            Some(w) => {
                let state = if self.open_now {
                    "open now"
                } else {
                    "closed now"
                };
                writeln!(f, "  window     {w} UTC, {state}")?;
                match (&self.next_open, &self.next_close) {
                    (Some(open), Some(close)) if self.open_now => {
                        writeln!(f, "  closes     {close}, opens again {open}")?
                    }
                    (Some(open), Some(close)) => {
                        writeln!(f, "  opens      {open}, closes {close}")?
                    }
                    _ => writeln!(f, "  all day    never closes")?,
                }
            }
        }
        match self.throttle_mb_s {
            None => writeln!(f, "  throttle   none (not throttled)")?,
            Some(t) if t > 0.0 => writeln!(f, "  throttle   {t} MB/s")?,
            Some(_) => writeln!(f, "  throttle   unlimited")?,
        }
        Ok(())
    }
}

fn fmt_last(f: &mut std::fmt::Formatter<'_>, run: &Option<RunView>) -> std::fmt::Result {
    match run {
        Some(run) => writeln!(f, "  last run   {run}"),
        None => writeln!(f, "  last run   never"),
    }
}

impl std::fmt::Display for ScheduleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "now {} (windows are UTC)", self.now)?;
        writeln!(f, "tiering")?;
        self.tiering.fmt_timing(f)?;
        let q = &self.tiering.queued;
        writeln!(
            f,
            "  queued     {} studies due ({} instances, {:.1} MB online, older than {} days)",
            q.due.studies,
            q.due.instances,
            q.due.bytes as f64 / 1e6,
            q.min_age_days
        )?;
        fmt_last(f, &self.tiering.last_run)?;
        writeln!(f, "backup")?;
        self.backup.fmt_timing(f)?;
        writeln!(
            f,
            "  queued     {} studies for a near-line copy",
            self.backup.queued.backup
        )?;
        fmt_last(f, &self.backup.last_run)?;
        writeln!(
            f,
            "repair (every {} s, whatever the window)",
            self.repair.poll_secs
        )?;
        writeln!(
            f,
            "  queued     {} primaries to re-create",
            self.repair.queued
        )?;
        fmt_last(f, &self.repair.last_run)?;
        writeln!(f, "retention")?;
        self.retention.fmt_timing(f)?;
        let q = &self.retention.queued;
        if !q.policy.any() {
            writeln!(f, "  policy     none: studies are kept forever")?;
        }
        writeln!(f, "  queued     {} studies past retention", q.studies)?;
        for e in &q.listed {
            writeln!(
                f,
                "    {} patient {} {} {} ({} years)",
                e.study_instance_uid,
                e.patient_id,
                e.date,
                e.modalities.join("\\"),
                e.retention_years
            )?;
        }
        fmt_last(f, &self.retention.last_run)
    }
}
