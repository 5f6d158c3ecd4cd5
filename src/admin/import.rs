//! `strata import`: walks folders of Part-10 files and ingests each through the same code
//! path as a C-STORE (`ingest::import`: temp file, fsync, parse, rename, commit), several
//! at a time. Files that
//! are not readable DICOM are reported and skipped; nothing is half-indexed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use super::progress::Progress;
use crate::config::Config;
use crate::ingest::import::PARALLEL;
use crate::ingest::Ingest;
use crate::jobs::{JobKind, JobReport, JobRun, Progress as _, Trigger};
use crate::locator::{Locator, LocatorError, Owner, Role};
use crate::online::{OnlineError, OnlineStore};

/// Why an import could not run at all (single files failing are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error("cannot read folder {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub files: u64,
    pub stored: u64,
    pub failed: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// `path: reason` for every file that was not stored.
    pub failures: Vec<String>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::jobs::BatchLine {
            done_verb: "imported",
            done: self.stored,
            total: self.files,
            items: "files",
            failed: self.failed,
            instances: None,
            bytes: self.bytes,
            seconds: self.seconds,
        }
        .fmt(f)
    }
}

/// Imports every regular file below `roots`.
pub async fn import(config: &Config, roots: &[PathBuf]) -> Result<ImportSummary, ImportError> {
    let mut files = Vec::new();
    for root in roots {
        walk(root, &mut files)?;
    }
    files.sort();
    let (locator, ingest, auditor) = receiving(config).await?;
    let run = JobRun::start(&locator, JobKind::Import, Trigger::Cli)
        .await
        .audited(&auditor);
    let summary = import_files(&ingest, files).await;
    run.finish(&locator, &Ok::<_, ImportError>(&summary)).await;
    locator.close().await;
    Ok(summary)
}

/// What a command storing instances needs: the locator, the ingest service as a receipt
/// like a C-STORE's (so it honours `[backup] enqueue_on_receive` and `[storage]
/// max_instance_mb` too; a volume import restores what was acknowledged once and has no
/// size limit), and the command's auditor.
pub(super) async fn receiving(
    config: &Config,
) -> Result<(Arc<Locator>, Ingest, crate::audit::Auditor), ImportError> {
    let locator =
        Arc::new(Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?);
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, &locator).await?);
    let auditor = crate::audit::Auditor::for_command(config, locator.clone());
    let ingest = Ingest::new(online, locator.clone(), config.storage.duplicate_policy)
        .backup_on_receive(config.backup.enqueue_on_receive)
        .max_instance_mb(config.storage.max_instance_mb)
        .with_auditor(auditor.clone());
    Ok((locator, ingest, auditor))
}

/// Ingests `files`, [`PARALLEL`] at a time; single files failing are counted.
async fn import_files(ingest: &Ingest, files: Vec<PathBuf>) -> ImportSummary {
    let progress = Progress::start();
    let mut summary = ImportSummary {
        files: files.len() as u64,
        ..Default::default()
    };
    let mut tasks = JoinSet::new();
    let mut pending = files.into_iter();
    let mut done = 0u64;
    loop {
        while tasks.len() < PARALLEL {
            let Some(path) = pending.next() else { break };
            let ingest = ingest.clone();
            tasks.spawn(async move {
                let result = crate::ingest::import::store_file(&ingest, &path).await;
                (path, result)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (path, result) = joined.expect("import task panicked");
        done += 1;
        match result {
            Ok(bytes) => {
                summary.stored += 1;
                summary.bytes += bytes;
            }
            Err(reason) => {
                summary.failed += 1;
                progress.note(&format!("skipped {}: {reason}", path.display()));
                summary
                    .failures
                    .push(format!("{}: {reason}", path.display()));
            }
        }
        let counts = format!("stored {} failed {}", summary.stored, summary.failed);
        progress.update(done, summary.files, &counts, summary.bytes);
    }
    summary.seconds = progress.finish();
    summary
}

impl JobReport for ImportSummary {
    fn failed(&self) -> bool {
        self.failed > 0
    }
}

/// Regular files below `path` (or `path` itself); symbolic links are not followed.
fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let walk_err = |source| ImportError::Walk {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(walk_err)?;
    if meta.is_file() {
        out.push(path.to_owned());
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(walk_err)? {
            walk(&entry.map_err(walk_err)?.path(), out)?;
        }
    }
    Ok(())
}
