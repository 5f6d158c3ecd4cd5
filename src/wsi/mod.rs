//! Whole-slide images: a large image (PNG or TIFF, [`source`]) made into a DICOM VL Whole Slide Microscopy
//! Image series, one TILED_FULL multi-frame instance per pyramid level ([`pyramid`]: each
//! level half the previous until one tile holds it), written as Part-10 files ready for
//! ingest ([`instance`]). The image is read row by row and never held whole: memory is a
//! few strips (one tile high) per level, whatever the image's size. Tiles are encoded on
//! every core while the next rows are read; each level's tiles are appended in order to a
//! file of their own, and the Part-10 file is written around them at the end.

pub mod icc;
pub mod instance;
pub mod pyramid;
pub mod source;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use instance::{FramePlace, LevelHeader, Slide};
use pyramid::{Pyramid, Strip, CHANNELS};
use source::Source;

/// How tiles are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsiCodec {
    /// JPEG baseline (lossy, marked so), 4:2:2.
    Jpeg,
    /// JPEG 2000 lossless, our encoder.
    J2k,
}

#[derive(Debug, thiserror::Error)]
pub enum WsiError {
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Encode(String),
    #[error("{0}")]
    Dicom(String),
    #[error("{0}")]
    Io(String),
}

/// What a slide is made with.
#[derive(Debug, Clone)]
pub struct WsiOptions {
    pub patient_id: String,
    pub patient_name: String,
    pub tile: u32,
    pub codec: WsiCodec,
    /// JPEG quality, 1-100.
    pub quality: u8,
    /// Micrometres per pixel at full resolution.
    pub mpp: f64,
}

/// One level as written.
#[derive(Debug, Clone)]
pub struct BuiltLevel {
    pub header: LevelHeader,
    pub path: PathBuf,
    pub frames: Vec<FramePlace>,
    pub bytes: u64,
}

/// The slide as written, ready to store.
#[derive(Debug, Clone)]
pub struct BuiltSlide {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub width: u32,
    pub height: u32,
    pub levels: Vec<BuiltLevel>,
}

/// A fresh UID: `2.25.` and 128 random bits (PS3.5 B.2).
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // Never expected on Linux; time and process make a unique enough value then.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (now ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    format!("2.25.{}", u128::from_le_bytes(bytes))
}

/// Encoder threads at most (one per core up to this).
const MOST_ENCODERS: usize = 8;
/// Strips waiting for an encoder.
const QUEUED_STRIPS: usize = 2;

/// A strip's tiles, encoded.
struct Encoded {
    level: usize,
    index: u32,
    tiles: Vec<Vec<u8>>,
}

fn encode_tile(pixels: &[u8], tile: u32, options: &WsiOptions) -> Result<Vec<u8>, WsiError> {
    match options.codec {
        WsiCodec::Jpeg => {
            let image = turbojpeg::Image {
                pixels,
                width: tile as usize,
                pitch: tile as usize * CHANNELS,
                height: tile as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            let mut compressor =
                turbojpeg::Compressor::new().map_err(|e| WsiError::Encode(e.to_string()))?;
            compressor.set_quality(options.quality.clamp(1, 100) as i32);
            compressor.set_subsamp(turbojpeg::Subsamp::Sub2x1);
            compressor
                .compress_to_vec(image)
                .map_err(|e| WsiError::Encode(e.to_string()))
        }
        WsiCodec::J2k => {
            use crate::codec::j2k;
            let image = j2k::Image {
                width: tile,
                height: tile,
                components: 3,
                bits_stored: 8,
                signed: false,
                samples: j2k::Samples::U8(pixels),
            };
            let params = j2k::EncodeParams {
                threads: 1,
                ..Default::default()
            };
            j2k::encode(&image, &params)
                .map(|encoded| encoded.codestream)
                .map_err(|e| WsiError::Encode(e.to_string()))
        }
    }
}

/// Encodes strips from `jobs` until it closes.
fn encoder(
    jobs: Arc<Mutex<Receiver<Strip>>>,
    results: SyncSender<Result<Encoded, WsiError>>,
    tile: u32,
    options: WsiOptions,
) {
    loop {
        let strip = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(strip) => strip,
            Err(_) => return,
        };
        let columns = strip.width.div_ceil(tile);
        let tiles: Result<Vec<Vec<u8>>, WsiError> = (0..columns)
            .map(|c| encode_tile(&strip.tile(c, tile), tile, &options))
            .collect();
        let encoded = tiles.map(|tiles| Encoded {
            level: strip.level,
            index: strip.index,
            tiles,
        });
        if results.send(encoded).is_err() {
            return;
        }
    }
}

/// Each level's tiles appended to a file in frame order, strips taken in any order.
struct TileFiles {
    files: Vec<BufWriter<std::fs::File>>,
    paths: Vec<PathBuf>,
    lengths: Vec<Vec<u32>>,
    next: Vec<u32>,
    early: BTreeMap<(usize, u32), Vec<Vec<u8>>>,
}

impl TileFiles {
    fn create(dir: &Path, levels: usize) -> Result<TileFiles, WsiError> {
        let mut files = Vec::new();
        let mut paths = Vec::new();
        for level in 0..levels {
            let path = dir.join(format!("level-{level}.tiles"));
            let file = std::fs::File::create(&path)
                .map_err(|e| WsiError::Io(format!("{}: {e}", path.display())))?;
            files.push(BufWriter::with_capacity(1 << 20, file));
            paths.push(path);
        }
        Ok(TileFiles {
            files,
            paths,
            lengths: vec![Vec::new(); levels],
            next: vec![0; levels],
            early: BTreeMap::new(),
        })
    }

    fn take(&mut self, encoded: Encoded) -> Result<(), WsiError> {
        self.early
            .insert((encoded.level, encoded.index), encoded.tiles);
        let level = encoded.level;
        while let Some(tiles) = self.early.remove(&(level, self.next[level])) {
            for tile in tiles {
                self.files[level]
                    .write_all(&tile)
                    .map_err(|e| WsiError::Io(e.to_string()))?;
                self.lengths[level].push(tile.len() as u32);
            }
            self.next[level] += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<PathBuf>, Vec<Vec<u32>>), WsiError> {
        for file in &mut self.files {
            file.flush().map_err(|e| WsiError::Io(e.to_string()))?;
        }
        if !self.early.is_empty() {
            return Err(WsiError::Encode("strips missing from a level".into()));
        }
        Ok((self.paths, self.lengths))
    }
}

/// What [`encode_levels`] made: per level, the file of its tiles and their lengths.
struct Levels {
    width: u32,
    height: u32,
    icc_profile: Option<Vec<u8>>,
    tiles: Vec<PathBuf>,
    lengths: Vec<Vec<u32>>,
}

/// Reads `image` row by row into the pyramid, `workers` threads encoding its strips; each
/// level's tiles end in a file in `dir`.
fn encode_levels(image: &Path, dir: &Path, options: &WsiOptions) -> Result<Levels, WsiError> {
    let mut source = Source::open(image)?;
    let (width, height, tile) = (source.width, source.height, options.tile);
    let mut pyramid = Pyramid::new(width, height, tile);
    let mut files = TileFiles::create(dir, pyramid.levels())?;
    // Memory is about (QUEUED_STRIPS + workers + levels) strips of width x tile x 3 bytes.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(MOST_ENCODERS));
    // Strips waiting for an encoder and tiles waiting for the writer: a few each.
    let (send_job, jobs) = sync_channel::<Strip>(QUEUED_STRIPS);
    let (send_result, results) = sync_channel::<Result<Encoded, WsiError>>(2 * workers);
    // Only the encoders hold the strips' receiver: if they all stop (the writer failed),
    // sending a strip fails instead of waiting forever.
    let jobs = Arc::new(Mutex::new(jobs));
    let mut receivers: Vec<_> = (0..workers).map(|_| jobs.clone()).collect();
    drop(jobs);
    std::thread::scope(|scope| {
        for jobs in receivers.drain(..) {
            let (results, options) = (send_result.clone(), options.clone());
            scope.spawn(move || encoder(jobs, results, tile, options));
        }
        drop(send_result);
        let writer = scope.spawn(move || -> Result<TileFiles, WsiError> {
            for encoded in results {
                files.take(encoded?)?;
            }
            Ok(files)
        });
        let read = (|| -> Result<(), WsiError> {
            while let Some(row) = source.next_row()? {
                for strip in pyramid.push_row(&row) {
                    if send_job.send(strip).is_err() {
                        return Ok(()); // the writer failed: its error is the one to report
                    }
                }
            }
            if !pyramid.complete() {
                return Err(WsiError::Source(format!(
                    "{}: fewer rows than its header says",
                    image.display()
                )));
            }
            Ok(())
        })();
        drop(send_job);
        let files = writer
            .join()
            .map_err(|_| WsiError::Encode("the tile writer panicked".into()))?;
        read?;
        let (tiles, lengths) = files?.finish()?;
        Ok(Levels {
            width,
            height,
            icc_profile: source.icc_profile.take(),
            tiles,
            lengths,
        })
    })
}

/// Builds the slide of `image` as Part-10 files in `dir` (which holds the work files too).
pub fn build(image: &Path, dir: &Path, options: &WsiOptions) -> Result<BuiltSlide, WsiError> {
    if !(0.001..=1000.0).contains(&options.mpp) {
        return Err(WsiError::Source(format!(
            "mpp {}: 0.001 to 1000 micrometres a pixel",
            options.mpp
        )));
    }
    if options.patient_id.trim().is_empty() || options.patient_id.chars().count() > 64 {
        return Err(WsiError::Source("patient id: 1 to 64 characters".into()));
    }
    if !(16..=4096).contains(&options.tile) || options.tile % 16 != 0 {
        return Err(WsiError::Source(format!(
            "tile {}: a multiple of 16 from 16 to 4096",
            options.tile
        )));
    }
    let Levels {
        width,
        height,
        icc_profile,
        tiles,
        lengths,
    } = encode_levels(image, dir, options)?;
    let (date, time) = today();
    let container = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("slide")
        .chars()
        .take(64)
        .collect();
    let slide = Slide {
        patient_id: options.patient_id.clone(),
        patient_name: options.patient_name.clone(),
        study_instance_uid: new_uid(),
        series_instance_uid: new_uid(),
        frame_of_reference_uid: new_uid(),
        dimension_organization_uid: new_uid(),
        specimen_uid: new_uid(),
        container_id: container,
        spacing_mm: options.mpp / 1000.0,
        width,
        height,
        tile: options.tile,
        codec: options.codec,
        quality: options.quality,
        date,
        time,
        icc_profile: icc_profile.unwrap_or_else(icc::srgb),
    };
    let mut levels = Vec::new();
    for (level, ((w, h), (tiles, lengths))) in pyramid::level_sizes(width, height, options.tile)
        .into_iter()
        .zip(tiles.iter().zip(&lengths))
        .enumerate()
    {
        let header = LevelHeader {
            level,
            sop_instance_uid: new_uid(),
            width: w,
            height: h,
            frames: lengths.len() as u32,
            encoded_bytes: lengths.iter().map(|&n| n as u64).sum(),
        };
        let path = dir.join(format!("level-{level}.dcm"));
        let frames = instance::write_level(&slide, &header, tiles, lengths, &path)?;
        let _ = std::fs::remove_file(tiles);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| WsiError::Io(format!("{}: {e}", path.display())))?
            .len();
        levels.push(BuiltLevel {
            header,
            path,
            frames,
            bytes,
        });
    }
    Ok(BuiltSlide {
        study_instance_uid: slide.study_instance_uid,
        series_instance_uid: slide.series_instance_uid,
        width,
        height,
        levels,
    })
}

/// Today, UTC: `YYYYMMDD`, `HHMMSS`.
fn today() -> (String, String) {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let stamp = crate::model::schedule::iso8601(seconds * 1000);
    // "YYYY-MM-DDTHH:MM:SS..."
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits[..8].to_string(), digits[8..14].to_string())
}
