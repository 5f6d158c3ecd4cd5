//! `strata backup export-volume`, `import-volume` and `volumes`: offline volumes from the
//! command line (export: `backup::volume`; import: `ingest::import_volume`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backup::BackupCommandError;
use super::progress::Progress;
use crate::backup::volume::{self, ExportSummary, VolumeError};
use crate::config::Config;
use crate::ingest::import_volume::{ImportVolumeError, VolumeImport};
use crate::ingest::Ingest;
use crate::jobs::{JobKind, JobRun, Progress as _, Trigger};
use crate::locator::volumes::Volume;
use crate::locator::{Locator, Owner, Role};
use crate::online::OnlineStore;

pub use crate::ingest::import_volume::ImportVolumeSummary;

/// Why a volume command could not run at all (single instances failing are counted).
#[derive(Debug, thiserror::Error)]
pub enum VolumeCommandError {
    #[error(transparent)]
    Open(#[from] BackupCommandError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Tier(#[from] super::TierError),
    #[error(transparent)]
    Locator(#[from] crate::locator::LocatorError),
    #[error(transparent)]
    Online(#[from] crate::online::OnlineError),
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    #[error(transparent)]
    Import(#[from] ImportVolumeError),
}

/// Writes volumes of everything not yet on one.
pub async fn export_volume(
    config: &Config,
    out: &Path,
    max_size: u64,
    throttle_mb_s: f64,
) -> Result<ExportSummary, VolumeCommandError> {
    let (locator, reader, _) = super::tier::open_parts(config).await?;
    let run = JobRun::start(&locator, JobKind::ExportVolume, Trigger::Cli)
        .await
        .audited(&crate::audit::Auditor::for_command(config, locator.clone()));
    let progress = Progress::start();
    let summary = volume::export(
        &locator,
        &reader,
        out,
        max_size,
        throttle_mb_s,
        |done, total, bytes| progress.update(done, total, "exported", bytes),
    )
    .await;
    progress.finish();
    run.finish(&locator, &summary).await;
    locator.close().await;
    Ok(summary?)
}

/// The volumes the locator knows.
pub async fn volumes(config: &Config) -> Result<Vec<Volume>, VolumeCommandError> {
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let volumes = locator.volumes().await?;
    locator.close().await;
    Ok(volumes)
}

/// Imports each volume file (`ingest::import_volume`).
pub async fn import_volume(
    config: &Config,
    files: &[PathBuf],
) -> Result<ImportVolumeSummary, VolumeCommandError> {
    let (locator, reader, converter) = super::tier::open_parts(config).await?;
    let run = JobRun::start(&locator, JobKind::ImportVolume, Trigger::Cli)
        .await
        .audited(&crate::audit::Auditor::for_command(config, locator.clone()));
    let result = import_volumes(config, &locator, &reader, &converter, files).await;
    run.finish(&locator, &result).await;
    locator.close().await;
    result
}

async fn import_volumes(
    config: &Config,
    locator: &Arc<Locator>,
    reader: &crate::reader::Reader,
    converter: &crate::convert::Converter,
    files: &[PathBuf],
) -> Result<ImportVolumeSummary, VolumeCommandError> {
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, locator).await?);
    let ingest = Ingest::new(online, locator.clone(), config.storage.duplicate_policy)
        .with_auditor(crate::audit::Auditor::for_command(config, locator.clone()));
    let progress = Progress::start();
    let summary = VolumeImport {
        locator,
        reader,
        converter,
        ingest: &ingest,
        progress: &progress,
    }
    .run(files)
    .await;
    progress.finish();
    Ok(summary?)
}
