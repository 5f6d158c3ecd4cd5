//! `strata wsi import`: a large image made into a whole-slide series (`crate::wsi`, built on
//! every core in a work folder beside the image) and stored level by level through the same
//! path as `strata import`; the job is recorded as an import.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::frames::FramePlace;
use crate::locator::{Locator, LocatorError};
use crate::wsi::{self, WsiError, WsiOptions};

#[derive(Debug, thiserror::Error)]
pub enum WsiImportError {
    #[error(transparent)]
    Build(#[from] WsiError),
    #[error(transparent)]
    Receiving(#[from] super::ImportError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error("work folder {path}: {source}")]
    WorkFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("level {level} not stored: {reason}")]
    Store { level: usize, reason: String },
}

/// One level as stored.
#[derive(Debug, Clone, Serialize)]
pub struct WsiLevel {
    pub sop_instance_uid: String,
    pub columns: u32,
    pub rows: u32,
    pub frames: u32,
    pub bytes: u64,
}

/// What `wsi import` did.
#[derive(Debug, Clone, Serialize)]
pub struct WsiSummary {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Finest first.
    pub levels: Vec<WsiLevel>,
    /// Reading, building and encoding the pyramid.
    pub build_seconds: f64,
    /// All of it, storing included.
    pub seconds: f64,
    /// Width x height x 3: the source's pixel bytes.
    pub source_bytes: u64,
}

impl std::fmt::Display for WsiSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "study {} series {}: {} levels built in {:.1} s ({:.1} MB/s of pixels), stored in {:.1} s",
            self.study_instance_uid,
            self.series_instance_uid,
            self.levels.len(),
            self.build_seconds,
            self.source_bytes as f64 / 1e6 / self.build_seconds.max(1e-9),
            self.seconds
        )?;
        for (n, level) in self.levels.iter().enumerate() {
            writeln!(
                f,
                "level {n} {}x{} {} frames {} bytes {}",
                level.columns, level.rows, level.frames, level.bytes, level.sop_instance_uid
            )?;
        }
        Ok(())
    }
}

impl JobReport for WsiSummary {
    fn failed(&self) -> bool {
        false
    }
}

/// Builds the slide of `image` and stores it.
pub async fn wsi_import(
    config: &Config,
    image: &Path,
    options: WsiOptions,
) -> Result<WsiSummary, WsiImportError> {
    let started = std::time::Instant::now();
    let work = work_folder(image);
    // A new folder, never one that exists (another import's, or a link planted there).
    std::fs::create_dir(&work).map_err(|source| WsiImportError::WorkFolder {
        path: work.clone(),
        source,
    })?;
    let result = build_and_store(config, image, &work, options, started).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// `<image>.wsi-work-<random>` beside the image: room for its encoded levels, not in /tmp.
fn work_folder(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("slide");
    let random = wsi::new_uid();
    let tail = &random[random.len().saturating_sub(12)..];
    image.with_file_name(format!("{name}.wsi-work-{tail}"))
}

async fn build_and_store(
    config: &Config,
    image: &Path,
    work: &Path,
    options: WsiOptions,
    started: std::time::Instant,
) -> Result<WsiSummary, WsiImportError> {
    let (image_path, work_path) = (image.to_path_buf(), work.to_path_buf());
    let built = tokio::task::spawn_blocking(move || wsi::build(&image_path, &work_path, &options))
        .await
        .map_err(|e| WsiError::Encode(e.to_string()))??;
    let build_seconds = started.elapsed().as_secs_f64();
    let (locator, ingest, auditor) = super::import::receiving(config).await?;
    let run = JobRun::start(&locator, JobKind::Import, Trigger::Cli)
        .await
        .audited(&auditor);
    let result = store_levels(&ingest, &locator, &built).await;
    let summary = result.map(|levels| WsiSummary {
        study_instance_uid: built.study_instance_uid.clone(),
        series_instance_uid: built.series_instance_uid.clone(),
        levels,
        build_seconds,
        seconds: started.elapsed().as_secs_f64(),
        source_bytes: built.width as u64 * built.height as u64 * 3,
    });
    run.finish(&locator, &summary.as_ref()).await;
    locator.close().await;
    summary
}

/// Stores each level, then records where its frames are in the stored bytes.
async fn store_levels(
    ingest: &Ingest,
    locator: &Locator,
    built: &wsi::BuiltSlide,
) -> Result<Vec<WsiLevel>, WsiImportError> {
    let mut levels = Vec::new();
    for (n, level) in built.levels.iter().enumerate() {
        let failed = |reason: String| WsiImportError::Store { level: n, reason };
        let bytes = crate::ingest::import::store_file(ingest, &level.path)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let uid = &level.header.sop_instance_uid;
        let stored = locator
            .find_instance(uid)
            .await?
            .ok_or_else(|| failed("not in the locator once stored".into()))?;
        // Ingest keeps the data set's bytes and writes its own file meta group: the frames
        // moved by the difference in length.
        let shift = stored.length as i64 - level.bytes as i64;
        let places: Vec<FramePlace> = level
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| FramePlace {
                frame: i as u32 + 1,
                offset: (f.offset as i64 + shift) as u64,
                length: f.length,
            })
            .collect();
        locator
            .record_frame_offsets(uid, stored.crc32c, &places)
            .await?;
        levels.push(WsiLevel {
            sop_instance_uid: level.header.sop_instance_uid.clone(),
            columns: level.header.width,
            rows: level.header.height,
            frames: level.header.frames,
            bytes,
        });
    }
    Ok(levels)
}
