//! The tiering worker inside the server: during the configured window it archives the studies
//! that are due, one at a time, and stops between two studies when the window closes or the
//! server shuts down. Its state is the locator itself (which studies still have online
//! instances, and the move journal), so a restart simply continues.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::convert::Converter;
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
                Ok(studies) => {
                    for study in studies {
                        if *shutdown.borrow() || !in_window(schedule.window, minute_now()) {
                            break;
                        }
                        if let Err(e) = converter.archive_study(&study).await {
                            warn!(study = %study, error = %e, "tiering: study not archived");
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.poll) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
