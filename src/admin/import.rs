//! `strata import`: walks folders of Part-10 files and ingests each through the same code
//! path as a C-STORE (temp file, fsync, parse, rename, commit), several at a time. Files that
//! are not readable DICOM are reported and skipped; nothing is half-indexed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use super::progress::Progress;
use crate::audit::Caller;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::{Locator, LocatorError, Owner, Role};
use crate::online::{OnlineError, OnlineStore};
use crate::service::{Outcome, Principal, StoreRequest, StoreSink, StoreStart};

/// Files ingested at once.
pub(super) const PARALLEL: usize = 4;
/// Bytes read from a file per write to the ingest sink.
const CHUNK: usize = 256 * 1024;

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

/// Imports every regular file below `roots`.
pub async fn import(config: &Config, roots: &[PathBuf]) -> Result<ImportSummary, ImportError> {
    let mut files = Vec::new();
    for root in roots {
        walk(root, &mut files)?;
    }
    files.sort();
    let locator =
        Arc::new(Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?);
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, &locator).await?);
    // An import is a receipt like a C-STORE, so it honours `[backup] enqueue_on_receive`
    // and `[storage] max_instance_mb` too. (A volume import restores what was acknowledged
    // once: no size limit there.)
    let auditor = crate::audit::Auditor::for_command(config, locator.clone());
    let ingest = Ingest::new(online, locator.clone(), config.storage.duplicate_policy)
        .backup_on_receive(config.backup.enqueue_on_receive)
        .max_instance_mb(config.storage.max_instance_mb)
        .with_auditor(auditor.clone());
    let run = JobRun::start(&locator, JobKind::Import, Trigger::Cli)
        .await
        .audited(&auditor);
    let summary = import_files(&ingest, files).await;
    run.finish(&locator, &Ok::<_, ImportError>(&summary)).await;
    locator.close().await;
    Ok(summary)
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
                let result = import_file(&ingest, &path).await;
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

/// Ingests one file like a C-STORE; returns its size or why it was not stored.
async fn import_file(ingest: &Ingest, path: &Path) -> Result<u64, String> {
    let path_owned = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || open_part10(&path_owned))
        .await
        .map_err(|e| e.to_string())?;
    let (file, request, size) = opened?;
    let sink = match ingest.begin(&Caller::new(Principal::Operator, None), request) {
        StoreStart::Receive(sink) => sink,
        StoreStart::Answer(outcome) => return outcome_result(outcome, size),
    };
    send(sink, file)
        .await
        .and_then(|outcome| outcome_result(outcome, size))
}

/// Sends the rest of `data` (positioned at the data set) into `sink` a chunk at a time;
/// the outcome, or why it could not be read.
async fn send<R: Read + Send + 'static>(
    mut sink: crate::ingest::IngestSink,
    mut data: R,
) -> Result<Outcome, String> {
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let n = data.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (data, n)
        })
        .await
        .map_err(|e| e.to_string())?;
        data = read.0;
        let chunk = match read.1 {
            Ok(chunk) => chunk,
            Err(e) => {
                sink.abandon().await;
                return Err(format!("read failed: {e}"));
            }
        };
        if chunk.is_empty() {
            break;
        }
        if let Err(outcome) = sink.write(chunk).await {
            sink.abandon().await;
            return Ok(outcome);
        }
    }
    Ok(sink.finish().await)
}

fn outcome_result(outcome: Outcome, size: u64) -> Result<u64, String> {
    if outcome.status.is_failure() {
        Err(format!(
            "{} {}",
            outcome.status,
            outcome.comment.unwrap_or_default()
        ))
    } else {
        Ok(size)
    }
}

/// Opens a Part-10 file and positions it at the data set. Blocking.
fn open_part10(path: &Path) -> Result<(std::fs::File, StoreRequest, u64), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (request, _) = read_meta(&mut file)?;
    Ok((file, request, size))
}

fn read_meta(r: &mut impl Read) -> Result<(StoreRequest, Option<String>), String> {
    crate::ingest::read_part10_meta(r).map_err(|e| e.to_string())
}

/// Ingests one Part-10 file that is a member of an offline volume (`length` bytes at
/// `offset` in the volume file `volume`) like a C-STORE, read a chunk at a time. The member
/// is a file Strata wrote, so its sender (Source AE in the file meta) is kept: the stored
/// file is then the member byte for byte, and the volume's copy of it still counts.
pub(super) async fn ingest_member(
    ingest: &Ingest,
    volume: &Path,
    offset: u64,
    length: u64,
) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let volume = volume.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&volume).map_err(|e| format!("cannot open: {e}"))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("cannot seek: {e}"))?;
        let mut member = file.take(length);
        let (request, source_ae) = read_meta(&mut member)?;
        Ok::<_, String>((member, request, source_ae))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (member, request, source_ae) = opened?;
    // Stored as its original sender sent it, when the member says who that was.
    let sender = source_ae.map_or(Principal::Operator, |aet| Principal::ae(&aet));
    let sink = match ingest.begin(&Caller::new(sender, None), request) {
        StoreStart::Receive(sink) => sink,
        StoreStart::Answer(outcome) => return outcome_result(outcome, 0).map(|_| ()),
    };
    send(sink, member)
        .await
        .and_then(|outcome| outcome_result(outcome, 0))
        .map(|_| ())
}
