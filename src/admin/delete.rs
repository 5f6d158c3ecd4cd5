//! `strata delete`: removes a study, series or instance from every tier and copy (see
//! `crate::lifecycle`), recorded in the job history and, per instance, in the audit log;
//! `strata lifecycle run`: the same for every study past retention (or only lists them).

use std::sync::Arc;

use super::backup::{BackupCommandError, Stack};
use crate::config::Config;
use crate::jobs::{JobKind, JobRun, Trigger};
use crate::lifecycle::retention::{self, RetentionPass, RetentionPolicy};
use crate::lifecycle::{Deleted, Deleter, LifecycleError};
use crate::locator::lifecycle::DeleteScope;
use crate::locator::LocatorError;

/// Why `strata delete` did not delete.
#[derive(Debug, thiserror::Error)]
pub enum DeleteCommandError {
    #[error(transparent)]
    Open(#[from] BackupCommandError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
}

/// Deletes `scope` for `reason`; the audit names the operating-system user and node.
pub async fn delete(
    config: &Config,
    scope: &DeleteScope,
    reason: &str,
) -> Result<Deleted, DeleteCommandError> {
    let stack = Stack::open(config).await?;
    let who = crate::audit::operator(stack.locator.node());
    let deleter = deleter(&stack);
    let run = JobRun::start(&stack.locator, JobKind::Delete, Trigger::Cli)
        .await
        .audited(&stack.auditor);
    let result = deleter.delete(scope, reason, &who).await;
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    Ok(result?)
}

fn deleter(stack: &Stack) -> Deleter {
    Deleter::new(
        stack.locator.clone(),
        stack.converter.clone(),
        Arc::clone(&stack.backup),
    )
    .with_auditor(stack.auditor.clone())
}

/// Deletes every study past `[lifecycle]` retention and the rejected instances due now; with
/// `dry_run`, only lists them.
pub async fn lifecycle_run(
    config: &Config,
    dry_run: bool,
) -> Result<RetentionPass, DeleteCommandError> {
    let stack = Stack::open(config).await?;
    let policy = RetentionPolicy::from(&config.lifecycle);
    let result = if dry_run {
        retention::pass(&deleter(&stack), &stack.locator, &policy, true, || true).await
    } else {
        let run = JobRun::start(&stack.locator, JobKind::Retention, Trigger::Cli)
            .await
            .audited(&stack.auditor);
        let result =
            retention::pass(&deleter(&stack), &stack.locator, &policy, false, || true).await;
        run.finish(&stack.locator, &result).await;
        result
    };
    stack.locator.close().await;
    Ok(result?)
}

/// Who touched a study (`strata audit --study`): the audit log's rows for its instances,
/// stored now or deleted, folded per event, actor and detail.
/// With `study` `None`, the newest `recent` entries instead, one per row.
pub async fn audit(
    config: &Config,
    study: Option<&str>,
    recent: u32,
) -> Result<Vec<crate::locator::audit::AuditSummary>, DeleteCommandError> {
    use crate::locator::{Locator, Owner, Role};
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let result = match study {
        Some(study) => locator.study_audit(study).await,
        None => locator.recent_audit(recent).await,
    };
    locator.close().await;
    Ok(result?)
}
