//! `strata delete`: removes a study, series or instance from every tier and copy (see
//! `crate::lifecycle`), recorded in the job history and, per instance, in the audit log.

use std::sync::Arc;

use super::backup::{BackupCommandError, Stack};
use crate::config::Config;
use crate::jobs::{JobKind, JobRun, Trigger};
use crate::lifecycle::{Deleted, Deleter, LifecycleError};
use crate::locator::lifecycle::DeleteScope;

/// Why `strata delete` did not delete.
#[derive(Debug, thiserror::Error)]
pub enum DeleteCommandError {
    #[error(transparent)]
    Open(#[from] BackupCommandError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// Deletes `scope` for `reason`; the audit names the operating-system user and node.
pub async fn delete(
    config: &Config,
    scope: &DeleteScope,
    reason: &str,
) -> Result<Deleted, DeleteCommandError> {
    let stack = Stack::open(config).await?;
    let who = format!(
        "cli:{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        stack.locator.node()
    );
    let deleter = Deleter::new(
        stack.locator.clone(),
        stack.converter.clone(),
        Arc::clone(&stack.backup),
    );
    let run = JobRun::start(&stack.locator, JobKind::Delete, Trigger::Cli).await;
    let result = deleter.delete(scope, reason, &who).await;
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    Ok(result?)
}
