//! `strata backup run` and `strata verify`: the backup worker from the command line.

use std::path::Path;
use std::sync::Arc;

use super::progress::Progress;
use crate::archive::ArchiveError;
use crate::backup::{Backup, BackupError, VerifyReport};
use crate::config::Config;
use crate::convert::{ConvertError, Converter};
use crate::jobs::{JobKind, JobReport, JobRun, Progress as _, Trigger};
use crate::locator::{Locator, LocatorError, Owner, Role};
use crate::online::OnlineError;

/// Why a backup command could not run at all (single studies failing are counted).
#[derive(Debug, thiserror::Error)]
pub enum BackupCommandError {
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Open(#[from] super::TierError),
}

/// What `strata backup run` did: the same record as a server's backup pass.
pub type BackupSummary = crate::backup::BackupPass;

/// The stores, locator, converter and backup worker (with its reader) of a config.
pub(super) struct Stack {
    pub locator: Arc<Locator>,
    pub converter: Arc<Converter>,
    pub backup: Arc<Backup>,
    pub auditor: crate::audit::Auditor,
}

impl Stack {
    pub async fn open(config: &Config) -> Result<Stack, BackupCommandError> {
        let (locator, reader, converter) = super::tier::open_parts(config).await?;
        let converter = Arc::new(converter);
        let backup = Arc::new(
            Backup::new(
                locator.clone(),
                reader,
                &config.backup.nearline_dir,
                converter.clone(),
                config.backup.throttle_mb_s,
            )?
            .with_format(config.backup.format, config.backup.roi_ratio),
        );
        let auditor = crate::audit::Auditor::for_command(config, locator.clone());
        Ok(Stack {
            locator,
            converter,
            backup,
            auditor,
        })
    }
}

/// Queues studies for a near-line copy (`strata backup run --study`); each must be stored.
pub async fn enqueue_backup(config: &Config, studies: &[String]) -> Result<(), BackupCommandError> {
    if studies.is_empty() {
        return Ok(());
    }
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    for study in studies {
        if locator.study_instances(study).await?.is_empty() {
            locator.close().await;
            return Err(BackupError::UnknownStudy(study.clone()).into());
        }
        locator.enqueue_backup(study, "manual").await?;
    }
    locator.close().await;
    Ok(())
}

/// Backs up every queued study now.
pub async fn backup_run(config: &Config) -> Result<BackupSummary, BackupCommandError> {
    let stack = Stack::open(config).await?;
    let run = JobRun::start(&stack.locator, JobKind::Backup, Trigger::Cli)
        .await
        .audited(&stack.auditor);
    let result = back_up_queue(&stack).await;
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    result
}

async fn back_up_queue(stack: &Stack) -> Result<BackupSummary, BackupCommandError> {
    stack.converter.recover().await?;
    stack.backup.recover().await?;
    let progress = Progress::start();
    let mut summary = BackupSummary::default();
    stack
        .backup
        .run_queue(
            || true,
            |study, result, done, total| {
                summary.studies = total;
                match result {
                    Err(e) => progress.note(&format!("study {study} not backed up: {e}")),
                    Ok(backed) => {
                        for lost in &backed.lost {
                            progress.note(&format!("study {study}: left out {lost}"));
                        }
                    }
                }
                summary.record(study, result);
                let counts = format!("backed up {} failed {}", summary.backed_up, summary.failed);
                progress.update(done, total, &counts, summary.bytes);
            },
        )
        .await?;
    summary.seconds = progress.finish();
    Ok(summary)
}

/// Scrubs every copy; with `repair`, mends what it can.
/// `volumes`: the folder holding the offline volume files, to check offline copies too.
pub async fn verify(
    config: &Config,
    repair: bool,
    volumes: Option<&Path>,
) -> Result<VerifyReport, BackupCommandError> {
    let stack = Stack::open(config).await?;
    let run = JobRun::start(&stack.locator, JobKind::Verify, Trigger::Cli)
        .await
        .audited(&stack.auditor);
    let result = scrub(&stack, repair, volumes).await;
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    result
}

async fn scrub(
    stack: &Stack,
    repair: bool,
    volumes: Option<&Path>,
) -> Result<VerifyReport, BackupCommandError> {
    if repair {
        stack.converter.recover().await?;
        stack.backup.recover().await?;
    }
    let progress = Progress::start();
    let report = stack
        .backup
        .verify(repair, volumes, |done, total, bytes| {
            progress.update(done, total, "checked", bytes)
        })
        .await;
    progress.finish();
    Ok(report?)
}

impl JobReport for VerifyReport {
    /// Like the CLI's exit status: damage that remains is a failure.
    fn failed(&self) -> bool {
        self.remaining > 0
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        for (name, c) in &self.primaries {
            writeln!(
                f,
                "primary {name:<9} ok {} missing {} damaged {}",
                c.ok, c.missing, c.damaged
            )?;
        }
        for (name, c) in &self.copies {
            writeln!(
                f,
                "copy    {name:<9} ok {} missing {} damaged {}",
                c.ok, c.missing, c.damaged
            )?;
        }
        for (volume, copies) in &self.volumes_absent {
            writeln!(
                f,
                "volume  {volume}: not in the folder given, {copies} copies not checked"
            )?;
        }
        if self.offline_not_checked > 0 && self.volumes_absent.is_empty() {
            writeln!(
                f,
                "copy    offline   {} not checked (give --volumes DIR to check them)",
                self.offline_not_checked
            )?;
        }
        if self.offline_to_export > 0 {
            writeln!(
                f,
                "copy    offline   {} damaged or missing: the next `strata backup export-volume` writes them to a new volume",
                self.offline_to_export
            )?;
        }
        if self.lossy_only > 0 {
            writeln!(
                f,
                "LOSSLESS LOST  {} instances survive only as lossy JPEG 2000 ROI copies: \
                 retrieves send those, marked lossy; import an offline volume to mend them",
                self.lossy_only
            )?;
        }
        if self.unrecoverable > 0 {
            writeln!(
                f,
                "UNRECOVERABLE  {} instances have no intact copy left",
                self.unrecoverable
            )?;
        }
        writeln!(
            f,
            "repaired {} primaries, {} near-line studies; {} damaged or missing copies remain ({:.1} s)",
            self.repaired_primaries, self.repaired_studies, self.remaining, self.seconds
        )
    }
}
