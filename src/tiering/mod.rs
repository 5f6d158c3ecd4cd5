//! The tiering worker inside the server: during the configured window it archives the studies
//! that are due, one at a time, and stops between two studies when the window closes or the
//! server shuts down. Its state is the locator itself (which studies still have online
//! instances, and the move journal), so a restart simply continues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::convert::{ConvertError, Converter, Moved};
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::{now_millis, Locator};

/// When and what the worker archives.
#[derive(Debug, Clone)]
pub struct TieringSchedule {
    /// Minutes since midnight UTC: start and end (the end may be before the start: the
    /// window then wraps past midnight).
    pub window: (u32, u32),
    pub min_age_days: u32,
    /// How often the worker looks at the clock and for due studies.
    pub poll: Duration,
}

pub use crate::model::schedule::{in_window, minute_now};

/// Runs until `shutdown` turns true.
pub async fn run(
    converter: Arc<Converter>,
    locator: Arc<Locator>,
    schedule: TieringSchedule,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(window = ?schedule.window, min_age_days = schedule.min_age_days, "tiering worker ready");
    loop {
        if in_window(schedule.window, minute_now()) {
            if let Err(e) = converter.recover().await {
                warn!(error = %e, "tiering: recovery failed");
            }
            let cutoff = now_millis() - i64::from(schedule.min_age_days) * 86_400_000;
            match locator.studies_due(cutoff).await {
                Err(e) => warn!(error = %e, "tiering: cannot list due studies"),
                // Only passes that find work are recorded: idle polls would bury the history.
                Ok(studies) if studies.is_empty() => debug!(open = true, due = 0, "tiering poll"),
                Ok(studies) => {
                    let run = JobRun::start(&locator, JobKind::Tier, Trigger::Server).await;
                    let pass = archive(&converter, &studies, &schedule, &shutdown).await;
                    info!(
                        studies = pass.studies,
                        archived = pass.archived,
                        failed = pass.failed,
                        bytes = pass.bytes,
                        "tiering pass done"
                    );
                    run.finish(&locator, &Ok::<_, std::convert::Infallible>(pass))
                        .await;
                }
            }
        } else {
            debug!(open = false, "tiering poll");
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.poll) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// What one tiering pass did, of the server or of `strata tier run` (recorded in the job
/// history).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TieringPass {
    /// Studies due when the pass began.
    pub studies: u64,
    pub archived: u64,
    pub failed: u64,
    /// Studies another process (of this or another node) was moving: left to it.
    pub busy: u64,
    pub instances: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// `study: reason` for every study that was not archived.
    pub failures: Vec<String>,
}

impl std::fmt::Display for TieringPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::jobs::BatchLine {
            done_verb: "archived",
            done: self.archived,
            total: self.studies,
            items: "studies",
            failed: self.failed,
            instances: Some(self.instances),
            bytes: self.bytes,
            seconds: self.seconds,
        }
        .fmt(f)
    }
}

impl TieringPass {
    /// Studies tried so far.
    fn attempted(&self) -> u64 {
        self.archived + self.failed + self.busy
    }

    /// Counts one study's outcome.
    pub fn record(&mut self, study: &str, result: &Result<Moved, ConvertError>) {
        match result {
            Ok(moved) => {
                self.archived += 1;
                self.instances += moved.instances as u64;
                self.bytes += moved.bytes;
            }
            Err(ConvertError::Busy(_)) => self.busy += 1,
            Err(e) => {
                self.failed += 1;
                self.failures.push(format!("{study}: {e}"));
            }
        }
    }
}

impl JobReport for TieringPass {
    fn failed(&self) -> bool {
        self.failed > 0
    }
}

/// Studies failing one after another before a pass stops until the next poll.
const FAILURES_BEFORE_PAUSE: u32 = 5;

/// Archives `studies` one at a time until done, the window closes, the server stops or
/// [`FAILURES_BEFORE_PAUSE`] fail in a row.
async fn archive(
    converter: &Converter,
    studies: &[String],
    schedule: &TieringSchedule,
    shutdown: &watch::Receiver<bool>,
) -> TieringPass {
    let started = Instant::now();
    let mut pass = TieringPass {
        studies: studies.len() as u64,
        ..TieringPass::default()
    };
    let mut failed_in_a_row = 0;
    for study in studies {
        if *shutdown.borrow() || !in_window(schedule.window, minute_now()) {
            break;
        }
        if failed_in_a_row == FAILURES_BEFORE_PAUSE {
            // The archive store is most likely down (an HDFS DataNode or NameNode gone):
            // failing every due study in turn only fills the log; the next poll tries again.
            warn!(
                failed = failed_in_a_row,
                left = studies.len() as u64 - pass.attempted(),
                "tiering: pass paused after consecutive failures; retried at the next poll"
            );
            break;
        }
        let result = converter.archive_study(study).await;
        match &result {
            Err(e @ ConvertError::Busy(_)) => {
                info!(study = %study, reason = %e, "tiering: study skipped")
            }
            Err(e) => {
                failed_in_a_row += 1;
                warn!(study = %study, error = %e, "tiering: study not archived")
            }
            Ok(_) => failed_in_a_row = 0,
        }
        pass.record(study, &result);
    }
    pass.seconds = started.elapsed().as_secs_f64();
    pass
}
