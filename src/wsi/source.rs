//! The source image of a slide, read a band of rows at a time and never held whole: a PNG
//! (not interlaced) row by row, a TIFF a strip or a row of tiles at a time. Either gives
//! RGB rows (alpha dropped, grey repeated, YCbCr from JPEG-compressed TIFF converted) and the
//! ICC profile the file carries, if any. The file is untrusted: sizes are checked against the
//! limits below before anything is allocated for them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::pyramid::CHANNELS;
use super::WsiError;

/// Largest decoded strip or tile (bytes): a TIFF written as a few huge strips is refused
/// rather than read into memory whole. (A JPEG-compressed one is decoded by the crate from
/// its own header's size, at most 16,384 x 16,384.)
const LARGEST_CHUNK: usize = 256 << 20;
/// Largest band (a strip, or a row of tiles, as stored): checked against the header before
/// anything is read, since a row of tall narrow tiles passes the per-tile limit. A band is
/// held twice at most (as stored and as RGB rows).
const LARGEST_BAND: u64 = 512 << 20;
/// Largest ICC profile taken from a source (bytes); a bigger one is refused.
const LARGEST_ICC: usize = 4 << 20;

/// An open source image.
pub struct Source {
    pub width: u32,
    pub height: u32,
    /// The embedded ICC profile (PNG `iCCP`, TIFF tag 34675), if any.
    pub icc_profile: Option<Vec<u8>>,
    rows: Rows,
    /// For errors.
    path: std::path::PathBuf,
}

enum Rows {
    Png {
        reader: Box<png::Reader<BufReader<File>>>,
        /// Samples per pixel after expansion (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
        samples: usize,
    },
    Tiff(Box<TiffRows>),
}

impl Source {
    /// Opens `path`, PNG or TIFF by its first bytes.
    pub fn open(path: &Path) -> Result<Source, WsiError> {
        let bad = |e: &dyn std::fmt::Display| WsiError::Source(format!("{}: {e}", path.display()));
        let mut magic = [0u8; 4];
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| bad(&e))?;
        let rows = match magic {
            [0x89, b'P', b'N', b'G'] => open_png(path),
            [b'I', b'I', 42 | 43, 0] | [b'M', b'M', 0, 42 | 43] => open_tiff(path),
            _ => Err("neither PNG nor TIFF".to_string()),
        };
        let (width, height, icc_profile, rows) = rows.map_err(|e| bad(&e))?;
        Ok(Source {
            width,
            height,
            icc_profile,
            rows,
            path: path.to_path_buf(),
        })
    }

    /// The next row as RGB, `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<Vec<u8>>, WsiError> {
        let row = match &mut self.rows {
            Rows::Png { reader, samples } => {
                let samples = *samples;
                reader
                    .next_row()
                    .map(|row| row.map(|row| to_rgb(row.data(), samples, false)))
                    .map_err(|e| e.to_string())
            }
            Rows::Tiff(tiff) => tiff.next_row(),
        };
        row.map_err(|e| WsiError::Source(format!("{}: {e}", self.path.display())))
    }
}

/// What opening a source gives: width, height, ICC profile, rows.
type Opened = (u32, u32, Option<Vec<u8>>, Rows);

fn open_png(path: &Path) -> Result<Opened, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(BufReader::with_capacity(1 << 20, file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let reader = decoder.read_info().map_err(|e| e.to_string())?;
    let info = reader.info();
    if info.interlaced {
        return Err(
            "an interlaced PNG cannot be read row by row; write it without interlacing".into(),
        );
    }
    let (width, height) = (info.width, info.height);
    let icc_profile = info.icc_profile.as_ref().and_then(|p| rgb_profile(p));
    let samples = match reader.output_color_type().0 {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("an indexed PNG was not expanded".into()),
    };
    let rows = Rows::Png {
        reader: Box::new(reader),
        samples,
    };
    Ok((width, height, icc_profile, rows))
}

/// `profile` when it is a whole ICC profile of RGB data (its header's size, signature and
/// colour space), else `None` with a warning: the slide then gets sRGB's. A grey source's
/// grey profile does not describe the RGB tiles made of it.
fn rgb_profile(profile: &[u8]) -> Option<Vec<u8>> {
    let field = |at: usize| profile.get(at..at + 4);
    let size = field(0).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if profile.len() >= 132
        && size == Some(profile.len())
        && field(36) == Some(b"acsp")
        && field(16) == Some(b"RGB ")
    {
        return Some(profile.to_vec());
    }
    tracing::warn!(
        bytes = profile.len(),
        "the source's ICC profile is not a whole RGB profile; sRGB's is written instead"
    );
    None
}

/// `samples`-per-pixel 8-bit pixels as RGB; `ycbcr`: three samples are YCbCr (full range,
/// as JPEG keeps them), converted.
fn to_rgb(data: &[u8], samples: usize, ycbcr: bool) -> Vec<u8> {
    if samples == 3 && !ycbcr {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() / samples * CHANNELS);
    for pixel in data.chunks_exact(samples) {
        match samples {
            1 | 2 => out.extend_from_slice(&[pixel[0]; 3]),
            _ if ycbcr => out.extend_from_slice(&ycbcr_to_rgb(pixel[0], pixel[1], pixel[2])),
            _ => out.extend_from_slice(&pixel[..3]),
        }
    }
    out
}

/// JFIF's YCbCr to RGB (ITU-R BT.601, full range), rounded.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        clamp(y + 1.402 * cr),
        clamp(y - 0.344_136 * cb - 0.714_136 * cr),
        clamp(y + 1.772 * cb),
    ]
}

/// A TIFF's first image, a strip or a row of tiles at a time.
struct TiffRows {
    decoder: tiff::decoder::Decoder<BufReader<File>>,
    width: u32,
    samples: usize,
    ycbcr: bool,
    tiled: bool,
    /// Chunk size (columns, rows).
    chunk: (u32, u32),
    /// The next strip, or the next row of tiles.
    next_band: u32,
    bands: u32,
    /// Rows decoded and not yet taken, as RGB.
    ready: VecDeque<Vec<u8>>,
}

fn open_tiff(path: &Path) -> Result<Opened, String> {
    use tiff::decoder::{ChunkType, Decoder, Limits};
    use tiff::tags::Tag;
    use tiff::ColorType;
    let file = File::open(path).map_err(|e| e.to_string())?;
    let limits = |bytes: usize| {
        let mut limits = Limits::default();
        limits.decoding_buffer_size = bytes;
        limits.intermediate_buffer_size = bytes;
        limits
    };
    // The ICC tag is read as one value per byte: its limit counts those values.
    let mut decoder = Decoder::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| e.to_string())?
        .with_limits(limits(
            LARGEST_ICC * std::mem::size_of::<tiff::decoder::ifd::Value>(),
        ));
    let icc_profile = match decoder.find_tag(Tag::IccProfile) {
        Ok(Some(value)) => rgb_profile(&value.into_u8_vec().map_err(|e| e.to_string())?),
        Ok(None) => None,
        Err(e) => return Err(format!("ICC profile (tag 34675): {e}")),
    };
    let mut decoder = decoder.with_limits(limits(LARGEST_CHUNK));
    let (width, height) = decoder.dimensions().map_err(|e| e.to_string())?;
    let planar = decoder
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(|e| e.to_string())?;
    if planar == Some(2) {
        return Err("planar (separate) TIFF samples are not read; write them contiguous".into());
    }
    let color = decoder.colortype().map_err(|e| e.to_string())?;
    let (samples, ycbcr) = match color {
        ColorType::Gray(8) => (1, false),
        // Grey and alpha: the crate names two 8-bit samples so.
        ColorType::GrayA(8)
        | ColorType::Multiband {
            bit_depth: 8,
            num_samples: 2,
        } => (2, false),
        ColorType::RGB(8) => (3, false),
        ColorType::RGBA(8) => (4, false),
        ColorType::YCbCr(8) => (3, true),
        other => {
            return Err(format!(
                "{other:?} TIFF pixels are not read: 8-bit grey, RGB or YCbCr (with or without alpha) only"
            ))
        }
    };
    let tiled = decoder.get_chunk_type() == ChunkType::Tile;
    let chunk = decoder.chunk_dimensions();
    if chunk.0 == 0 || chunk.1 == 0 {
        return Err("strips or tiles of no size".into());
    }
    let band = u64::from(chunk.1.min(height)) * u64::from(width) * samples as u64;
    if band > LARGEST_BAND {
        return Err(format!(
            "strips or rows of tiles of {band} bytes: at most {LARGEST_BAND} are read at once"
        ));
    }
    let bands = height.div_ceil(chunk.1);
    let count = if tiled {
        decoder.tile_count()
    } else {
        decoder.strip_count()
    }
    .map_err(|e| e.to_string())?;
    let needed = if tiled {
        u64::from(bands) * u64::from(width.div_ceil(chunk.0))
    } else {
        u64::from(bands)
    };
    if u64::from(count) < needed {
        return Err(format!(
            "{count} strips or tiles listed, {needed} needed for its size"
        ));
    }
    let rows = Rows::Tiff(Box::new(TiffRows {
        decoder,
        width,
        samples,
        ycbcr,
        tiled,
        chunk,
        next_band: 0,
        bands,
        ready: VecDeque::new(),
    }));
    Ok((width, height, icc_profile, rows))
}

impl TiffRows {
    fn next_row(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.ready.is_empty() && self.next_band < self.bands {
            self.read_band().map_err(|e| {
                format!(
                    "TIFF {} {}: {e}",
                    if self.tiled { "tile row" } else { "strip" },
                    self.next_band
                )
            })?;
            self.next_band += 1;
        }
        Ok(self.ready.pop_front())
    }

    /// Decodes one chunk as 8-bit samples: its (columns, rows) and bytes.
    fn chunk(&mut self, index: u32) -> Result<((u32, u32), Vec<u8>), String> {
        let size = self.decoder.chunk_data_dimensions(index);
        let bytes = match self.decoder.read_chunk(index).map_err(|e| e.to_string())? {
            tiff::decoder::DecodingResult::U8(bytes) => bytes,
            _ => return Err("not 8-bit samples".into()),
        };
        let expected = size.0 as usize * size.1 as usize * self.samples;
        if bytes.len() < expected {
            return Err(format!(
                "{} bytes decoded, {expected} expected",
                bytes.len()
            ));
        }
        Ok((size, bytes))
    }

    fn read_band(&mut self) -> Result<(), String> {
        let band = self.next_band;
        let row_bytes = self.width as usize * self.samples;
        if !self.tiled {
            let ((columns, rows), bytes) = self.chunk(band)?;
            if columns != self.width {
                return Err(format!("{columns} columns, the image has {}", self.width));
            }
            for row in bytes.chunks_exact(row_bytes).take(rows as usize) {
                self.ready.push_back(to_rgb(row, self.samples, self.ycbcr));
            }
            return Ok(());
        }
        let across = self.width.div_ceil(self.chunk.0);
        let mut rows: Vec<Vec<u8>> = Vec::new();
        for column in 0..across {
            let ((columns, height), bytes) = self.chunk(band * across + column)?;
            if rows.is_empty() {
                rows = vec![vec![0u8; row_bytes]; height as usize];
            } else if rows.len() != height as usize {
                return Err("tiles of one row differ in height".into());
            }
            let x = (column * self.chunk.0) as usize * self.samples;
            let width = columns as usize * self.samples;
            if x + width > row_bytes {
                return Err("a tile reaches past the image's width".into());
            }
            for (row, tile_row) in rows.iter_mut().zip(bytes.chunks_exact(width)) {
                row[x..x + width].copy_from_slice(tile_row);
            }
        }
        for row in rows {
            self.ready.push_back(to_rgb(&row, self.samples, self.ycbcr));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycbcr_converts_as_jfif_does() {
        assert_eq!(ycbcr_to_rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(ycbcr_to_rgb(76, 85, 255), [254, 0, 0]);
        assert_eq!(ycbcr_to_rgb(255, 128, 128), [255, 255, 255]);
    }

    #[test]
    fn grey_and_alpha_become_rgb() {
        assert_eq!(to_rgb(&[7, 200, 9, 100], 2, false), [7, 7, 7, 9, 9, 9]);
        assert_eq!(to_rgb(&[1, 2, 3, 4], 4, false), [1, 2, 3]);
    }

    #[test]
    fn only_a_whole_rgb_icc_profile_is_kept() {
        let srgb = crate::wsi::icc::srgb();
        assert_eq!(rgb_profile(&srgb), Some(srgb.clone()));
        let mut grey = srgb.clone();
        grey[16..20].copy_from_slice(b"GRAY");
        assert_eq!(rgb_profile(&grey), None);
        assert_eq!(rgb_profile(&srgb[..srgb.len() - 1]), None, "cut short");
        assert_eq!(rgb_profile(b"acsp"), None);
    }

    /// A little-endian TIFF header and IFD of `entries` (tag, type, values), values that do
    /// not fit in an entry stored after the IFD; no pixel data.
    fn tiff_header(entries: &[(u16, u16, Vec<u32>)]) -> Vec<u8> {
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        let after = 8 + 2 + 12 * entries.len() + 4;
        let mut extra: Vec<u8> = Vec::new();
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, kind, values) in entries {
            let mut data: Vec<u8> = Vec::new();
            for v in values {
                match kind {
                    3 => data.extend_from_slice(&(*v as u16).to_le_bytes()),
                    _ => data.extend_from_slice(&v.to_le_bytes()),
                }
            }
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            if data.len() <= 4 {
                data.resize(4, 0);
                out.extend_from_slice(&data);
            } else {
                out.extend_from_slice(&((after + extra.len()) as u32).to_le_bytes());
                extra.extend_from_slice(&data);
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&extra);
        out
    }

    #[test]
    fn a_row_of_tall_narrow_tiles_is_refused_before_it_is_read() {
        // 100,000 x 100,000 RGB in tiles 16 wide and the image's height: each tile is
        // 4.8 MB, their row 30 GB.
        let (side, tile_width) = (100_000u32, 16u32);
        let across = side.div_ceil(tile_width);
        let header = tiff_header(&[
            (256, 4, vec![side]),
            (257, 4, vec![side]),
            (258, 3, vec![8, 8, 8]),
            (259, 3, vec![1]),
            (262, 3, vec![2]),
            (277, 3, vec![3]),
            (284, 3, vec![1]),
            (322, 4, vec![tile_width]),
            (323, 4, vec![side]),
            (324, 4, vec![8; across as usize]),
            (325, 4, vec![16; across as usize]),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tall.tif");
        std::fs::write(&path, header).unwrap();
        let Err(e) = Source::open(&path) else {
            panic!("opened")
        };
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn neither_png_nor_tiff_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        std::fs::write(&path, [0xFF, 0xD8, 0xFF, 0xE0, 0, 0]).unwrap();
        let Err(e) = Source::open(&path) else {
            panic!("opened")
        };
        assert!(e.to_string().contains("neither PNG nor TIFF"), "{e}");
    }
}
