//! `strata transcode`: one Part-10 file to JPEG 2000 (lossless, or MAXSHIFT ROI with a lossy
//! background), written atomically next to nothing else the server owns.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec::dicom::{to_j2k, CodecError, Roi, Target};

/// Why `strata transcode` failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot transcode {path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug, Serialize)]
pub struct TranscodeSummary {
    pub output: PathBuf,
    pub transfer_syntax_uid: String,
    pub lossless: bool,
    pub ratio: f64,
    /// Automatic ROI: smallest and largest fraction of a frame inside the ROI.
    pub roi_fraction: Option<(f64, f64)>,
    pub notes: Vec<String>,
}

/// Transcodes `input` into `output` (temporary file, fsync, rename).
pub fn transcode(
    input: &Path,
    output: &Path,
    target: &Target,
) -> Result<TranscodeSummary, TranscodeError> {
    let data = std::fs::read(input).map_err(|source| TranscodeError::Read {
        path: input.to_owned(),
        source,
    })?;
    let done = to_j2k(&data, target).map_err(|source| TranscodeError::Codec {
        path: input.to_owned(),
        source,
    })?;
    if let (Target::Roi { roi: Roi::Auto, .. }, Some((lo, hi))) = (target, done.roi_fraction) {
        tracing::info!(input = %input.display(), min_fraction = lo, max_fraction = hi, "automatic ROI chosen");
    }
    for note in &done.notes {
        tracing::warn!(input = %input.display(), note = %note, "encoder note");
    }
    let write_err = |source| TranscodeError::Write {
        path: output.to_owned(),
        source,
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let temp = output.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&done.file)?;
        file.sync_all()?;
        std::fs::rename(&temp, output)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(write_err(e));
    }
    Ok(TranscodeSummary {
        output: output.to_owned(),
        transfer_syntax_uid: done.transfer_syntax_uid.to_string(),
        lossless: done.lossless,
        ratio: done.ratio,
        roi_fraction: done.roi_fraction,
        notes: done.notes,
    })
}

/// Parses `--roi`: `auto` or `x,y,w,h`.
pub fn parse_roi(text: &str) -> Result<Roi, String> {
    if text == "auto" {
        return Ok(Roi::Auto);
    }
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--roi {text:?}: expected auto or x,y,w,h"))?;
    match parts[..] {
        [x, y, w, h] if w > 0 && h > 0 => Ok(Roi::Rect(x, y, w, h)),
        _ => Err(format!(
            "--roi {text:?}: expected auto or x,y,w,h with w, h > 0"
        )),
    }
}
