//! Job history: every run of a long job — `tier run`, `backup run`, `verify`, `import`,
//! `restore` from the CLI, and the server workers' tiering, backup and repair passes that
//! found work — leaves one `job_runs` row in the locator, so `strata status` and `strata
//! schedule` (other processes) can show the last run of each job.
//!
//! Recording a job is two lines around its body:
//!
//! ```ignore
//! let run = JobRun::start(&locator, JobKind::ExportVolume, Trigger::Cli).await;
//! let result = export_volume_body(&locator, ...).await; // Result<Summary, SomeError>
//! run.finish(&locator, &result).await;                  // before locator.close()
//! ```
//!
//! where the summary type implements [`JobReport`] (`Serialize` plus whether anything
//! failed). Recording never fails the job: a locator error while recording is logged.
//! A row left `running` by a process that has died (kill -9, power loss) reads as
//! `interrupted`, and is settled as such by the next job that starts.

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use crate::audit::Auditor;
use crate::locator::jobs::JobRunRow;
use crate::locator::{now_millis, Locator, LocatorError};
use crate::metrics;
use crate::model::schedule::iso8601;

/// Array fields of a stored summary keep at most this many items (failure lists can be
/// long); the cut is noted in a `<field>_truncated` count.
const SUMMARY_ITEMS_KEPT: usize = 20;

pub use crate::locator::jobs::READ_FALLBACKS;

/// The long jobs whose runs are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobKind {
    Tier,
    Backup,
    Verify,
    Import,
    Restore,
    Repair,
    ExportVolume,
    ImportVolume,
    Delete,
    Retention,
}

impl JobKind {
    /// Every job, in the order reports list them.
    pub const ALL: [JobKind; 10] = [
        JobKind::Tier,
        JobKind::Backup,
        JobKind::Repair,
        JobKind::Verify,
        JobKind::Import,
        JobKind::Restore,
        JobKind::ExportVolume,
        JobKind::ImportVolume,
        JobKind::Delete,
        JobKind::Retention,
    ];

    /// The locator's and JSON's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Tier => "tier",
            JobKind::Backup => "backup",
            JobKind::Verify => "verify",
            JobKind::Import => "import",
            JobKind::Restore => "restore",
            JobKind::Repair => "repair",
            JobKind::ExportVolume => "export-volume",
            JobKind::ImportVolume => "import-volume",
            JobKind::Delete => "delete",
            JobKind::Retention => "retention",
        }
    }
}

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An admin, through the `strata` CLI.
    Cli,
    /// The server's background workers.
    Server,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Server => "server",
        }
    }
}

/// A batch job's closing line, the same shape for every job over many items: `imported 9 of
/// 10 files (1 failed), 12.3 MB in 4.5 s`, with `, N instances` after the failures when the
/// items are studies.
pub struct BatchLine<'a> {
    /// What was done to an item: "imported", "archived", "backed up".
    pub done_verb: &'a str,
    pub done: u64,
    pub total: u64,
    /// What the items are: "files", "studies".
    pub items: &'a str,
    pub failed: u64,
    pub instances: Option<u64>,
    pub bytes: u64,
    pub seconds: f64,
}

impl std::fmt::Display for BatchLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} of {} {} ({} failed)",
            self.done_verb, self.done, self.total, self.items, self.failed
        )?;
        if let Some(instances) = self.instances {
            write!(f, ", {instances} instances")?;
        }
        writeln!(
            f,
            ", {:.1} MB in {:.1} s",
            self.bytes as f64 / 1e6,
            self.seconds
        )
    }
}

/// Where a long job reports as it goes: the command line's progress line (a terminal's
/// redrawn line, failures kept above it).
pub trait Progress {
    /// A line that stays, e.g. why something was skipped.
    fn note(&self, line: &str);
    /// `done` of `total` handled; `counts` says what so far, `bytes` how much was moved.
    fn update(&self, done: u64, total: u64, counts: &str, bytes: u64);
}

/// A job's summary as recorded: its JSON form, and whether anything in it failed (the
/// run's outcome is then `failed`, like the CLI's non-zero exit).
pub trait JobReport: Serialize {
    fn failed(&self) -> bool;
}

impl<T: JobReport> JobReport for &T {
    fn failed(&self) -> bool {
        (*self).failed()
    }
}

/// A run in progress; [`JobRun::finish`] records how it ended.
#[must_use = "a run left unfinished reads as running, then interrupted"]
#[derive(Debug)]
pub struct JobRun {
    id: Option<i64>,
    job: JobKind,
    trigger: Trigger,
    /// Where an admin command's run is audited besides the locator (syslog).
    auditor: Option<Auditor>,
    /// The lease the run's claims are taken under.
    lease: i64,
    started: std::time::Instant,
}

impl JobRun {
    /// Records that `job` starts now in this process (and settles runs of dead processes
    /// as interrupted).
    pub async fn start(locator: &Locator, job: JobKind, trigger: Trigger) -> JobRun {
        settle_dead_runs(locator).await;
        let id = match locator
            .start_run(
                job.as_str(),
                trigger.as_str(),
                std::process::id(),
                now_millis(),
            )
            .await
        {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(job = job.as_str(), error = %e, "cannot record the start of a job run");
                None
            }
        };
        JobRun {
            id,
            job,
            trigger,
            auditor: None,
            lease: locator.lease(),
            started: std::time::Instant::now(),
        }
    }

    /// Audits the end of this (CLI) run through `auditor`, its syslog included.
    pub fn audited(mut self, auditor: &Auditor) -> JobRun {
        self.auditor = Some(auditor.clone());
        self
    }

    /// Records the outcome: `ok` with the summary, `failed` with the summary when it counts
    /// failures, or `failed` with `{"error": …}` when the job could not run.
    /// A failed run whose lease expired meanwhile (the process stalled) says so: its
    /// failure is then that loss, whatever error surfaced first.
    pub async fn finish<S: JobReport, E: Display>(self, locator: &Locator, result: &Result<S, E>) {
        let failed = result.as_ref().map_or(true, |s| s.failed());
        let lease_lost = failed && matches!(locator.lease_holds(self.lease).await, Ok(false));
        if lease_lost {
            crate::locator::leases::report_lost(self.lease);
        }
        let job = self.job.as_str();
        if self.trigger == Trigger::Cli {
            let error = result.as_ref().err().map(ToString::to_string);
            audit_command(locator, self.auditor.as_ref(), job, error, failed).await;
        }
        metrics::JOB_RUNS.inc(&[job, if failed { "failed" } else { "ok" }]);
        metrics::JOB_DURATION.observe_duration(&[job], self.started.elapsed());
        // A command's reads count once it is done (a server's count every few seconds too).
        crate::reader::count_reads_in_locator(locator).await;
        let Some(id) = self.id else { return };
        let (outcome, mut summary) = match result {
            Ok(s) => (
                if s.failed() { "failed" } else { "ok" },
                bounded(serde_json::to_value(s).unwrap_or(Value::Null)),
            ),
            Err(e) => ("failed", serde_json::json!({ "error": e.to_string() })),
        };
        if let (true, Value::Object(fields)) = (lease_lost, &mut summary) {
            fields.insert("lease_lost".into(), true.into());
        }
        if let Err(e) = locator
            .finish_run(id, now_millis(), outcome, &summary.to_string())
            .await
        {
            warn!(job = self.job.as_str(), run = id, error = %e, "cannot record the end of a job run");
        }
    }
}

/// Appends an admin command's audit entry: who ran which job, and how it ended.
async fn audit_command(
    locator: &Locator,
    auditor: Option<&Auditor>,
    job: &str,
    error: Option<String>,
    failed: bool,
) {
    let who = crate::audit::operator(locator.node());
    let detail = match error {
        Some(error) => format!("{job}: {error}"),
        None => job.to_string(),
    };
    if let Some(auditor) = auditor {
        let entry = crate::audit::Entry {
            detail: &detail,
            failed,
            ..crate::audit::Entry::new(crate::audit::Event::Admin, &who)
        };
        return auditor.record(&entry).await;
    }
    let row = crate::locator::audit::AuditRow {
        at: now_millis(),
        event: crate::audit::Event::Admin.as_str(),
        who: &who,
        detail: &detail,
        outcome: if failed { "failed" } else { "ok" },
        ..Default::default()
    };
    if let Err(e) = locator.append_audit(&row).await {
        metrics::AUDIT_FAILURES.inc(&["locator"]);
        warn!(job, error = %e, "cannot audit an admin command");
    }
}

/// Cuts long arrays among a summary's top-level fields.
fn bounded(mut summary: Value) -> Value {
    if let Value::Object(fields) = &mut summary {
        let mut cuts = Vec::new();
        for (name, value) in fields.iter_mut() {
            if let Value::Array(items) = value {
                if items.len() > SUMMARY_ITEMS_KEPT {
                    cuts.push((
                        format!("{name}_truncated"),
                        items.len() - SUMMARY_ITEMS_KEPT,
                    ));
                    items.truncate(SUMMARY_ITEMS_KEPT);
                }
            }
        }
        for (name, cut) in cuts {
            fields.insert(name, cut.into());
        }
    }
    summary
}

/// Marks `running` rows whose process's lease is gone (it died, or its node did) as
/// `interrupted`.
async fn settle_dead_runs(locator: &Locator) {
    let running = match locator.runs_in_progress().await {
        Ok(running) => running,
        Err(e) => {
            warn!(error = %e, "cannot list job runs in progress");
            return;
        }
    };
    for run in running.iter().filter(|r| !r.lease_live) {
        warn!(job = %run.job, run = run.id, node = %run.node, pid = run.pid, "a job run was interrupted");
        if let Err(e) = locator.settle_interrupted_run(run.id).await {
            warn!(run = run.id, error = %e, "cannot mark a job run interrupted");
        }
    }
}

/// One run as reports show it (`strata status`, `strata schedule`).
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: i64,
    pub job: String,
    /// `cli` or `server`.
    pub trigger: String,
    /// The node (`[node] id`) and process that ran it.
    pub node: String,
    pub pid: u32,
    /// UTC, ISO-8601.
    pub started_at: String,
    /// UTC, ISO-8601; `null` while running or when interrupted.
    pub finished_at: Option<String>,
    /// Duration in seconds: to the end, or so far while running; `null` when interrupted.
    pub seconds: Option<f64>,
    /// `running`, `ok`, `failed` or `interrupted`.
    pub outcome: String,
    /// The job's JSON summary (`null` until it finishes).
    pub summary: Value,
}

impl RunView {
    fn of(row: JobRunRow) -> RunView {
        let interrupted =
            row.outcome == "interrupted" || (row.outcome == "running" && !row.lease_live);
        let outcome = if interrupted {
            "interrupted".to_string()
        } else {
            row.outcome
        };
        let seconds = match row.finished_at {
            Some(end) => Some((end - row.started_at) as f64 / 1000.0),
            None if !interrupted => Some((now_millis() - row.started_at) as f64 / 1000.0),
            None => None,
        };
        RunView {
            id: row.id,
            job: row.job,
            trigger: row.trigger,
            node: row.node,
            pid: row.pid,
            started_at: iso8601(row.started_at),
            finished_at: row.finished_at.map(iso8601),
            seconds,
            outcome,
            summary: row
                .summary
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null),
        }
    }

    /// The summary's top-level counts on one line, e.g. `studies 3 archived 3 failed 0`.
    pub fn short_summary(&self) -> String {
        let Value::Object(fields) = &self.summary else {
            return String::new();
        };
        if let Some(Value::String(error)) = fields.get("error") {
            return format!("error: {error}");
        }
        fields
            .iter()
            .filter(|(name, _)| name.as_str() != "seconds")
            .filter_map(|(name, value)| match value {
                Value::Number(n) => Some(format!("{name} {n}")),
                Value::String(s) if s.len() <= 64 => Some(format!("{name} {s}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Display for RunView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let took = self
            .seconds
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "-".into());
        write!(
            f,
            "{:<8} started {} ({}), {took}: {}",
            self.outcome,
            self.started_at,
            self.trigger,
            self.short_summary()
        )
    }
}

/// The last run of every job, keyed by job name; `None` for a job that never ran.
pub async fn last_runs(
    locator: &Locator,
) -> Result<BTreeMap<&'static str, Option<RunView>>, LocatorError> {
    let mut runs: BTreeMap<&'static str, Option<RunView>> =
        JobKind::ALL.iter().map(|k| (k.as_str(), None)).collect();
    for row in locator.last_runs().await? {
        if let Some(kind) = JobKind::ALL.iter().find(|k| k.as_str() == row.job) {
            runs.insert(kind.as_str(), Some(RunView::of(row)));
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_in_summaries_are_cut_and_counted() {
        let failures: Vec<String> = (0..25).map(|n| format!("s{n}: gone")).collect();
        let v = bounded(serde_json::json!({"failed": 25, "failures": failures}));
        assert_eq!(v["failures"].as_array().unwrap().len(), SUMMARY_ITEMS_KEPT);
        assert_eq!(v["failures_truncated"], 5);
        assert_eq!(v["failed"], 25);
    }

    /// A run is `running` while its process's lease holds, and `interrupted` once the lease
    /// is gone (the process died, or its node did), whatever became of the process ID.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_run_reads_as_interrupted_once_its_lease_is_gone() {
        let (_dir, locator) = crate::locator::tests::temp_locator().await;
        let run = JobRun::start(&locator, JobKind::Verify, Trigger::Cli).await;
        let view = last_runs(&locator).await.unwrap()["verify"]
            .clone()
            .unwrap();
        assert_eq!(view.outcome, "running");
        assert_eq!(view.node, "unit-test");
        locator.expire_lease_for_test().await;
        let view = last_runs(&locator).await.unwrap()["verify"]
            .clone()
            .unwrap();
        assert_eq!(view.outcome, "interrupted");
        assert_eq!(view.seconds, None);
        drop(run);
    }
}
