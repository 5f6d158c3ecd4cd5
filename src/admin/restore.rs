//! `strata restore --study UID`: opens the stack, records the run and drives the progress
//! line; the restore itself is [`crate::backup::Backup::restore_study`].

use super::backup::{BackupCommandError, Stack};
use super::progress::Progress;
pub use crate::backup::restore::RestoreSummary;
use crate::config::Config;
use crate::jobs::{JobKind, JobRun, Trigger};

/// Restores a study online. An unknown study is an error; instances that cannot be mended
/// are listed and make the run a failure (non-zero exit), recorded as such.
pub async fn restore(config: &Config, study: &str) -> Result<RestoreSummary, BackupCommandError> {
    let stack = Stack::open(config).await?;
    let run = JobRun::start(&stack.locator, JobKind::Restore, Trigger::Cli)
        .await
        .audited(&stack.auditor);
    let progress = Progress::start();
    let result = stack.backup.restore_study(study, &progress).await;
    progress.finish();
    let result = result.map_err(BackupCommandError::from);
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    result
}
