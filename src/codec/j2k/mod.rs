//! JPEG 2000 Part-1 encoder producing raw codestreams (`.j2c`, starting with SOC FF4F), the
//! payload DICOM encapsulates for transfer syntaxes 1.2.840.10008.1.2.4.90 (lossless only)
//! and .91 (lossless or lossy). Pure computation: no I/O.
//!
//! Four modes: lossless (reversible 5/3, RCT for RGB), lossy to a compression ratio or to a
//! PSNR (irreversible 9/7, ICT for RGB, PCRD-opt rate control over quality layers), and MAXSHIFT
//! region of interest (reversible 5/3; ROI pixels decode bit-exact while the background is
//! truncated to a ratio). The pipeline is: DC shift -> colour transform -> DWT ->
//! quantisation -> ROI scaling -> tier-1 per code-block (parallel) -> rate allocation ->
//! tier-2 packets -> codestream markers.
//!
//! Module map: `dwt` transforms, `mq`/`t1` tier-1 coding, `tagtree`/`t2` packets, `rate`
//! PCRD-opt, `codestream` markers, `color` RCT/ICT, `roi` MAXSHIFT, [`mask`] ROI masks,
//! [`prefix`] reduced-resolution codestreams cut from a stored one's first bytes.

mod codestream;
mod color;
mod dwt;
pub mod mask;
mod mq;
pub mod prefix;
mod rate;
mod roi;
mod t1;
mod t2;
mod tagtree;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use mask::{AutoMask, Mask};

/// Errors from [`encode`] and the mask builders; each names what was wrong with the input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum J2kError {
    #[error("invalid image dimensions {width}x{height}")]
    InvalidDimensions { width: u32, height: u32 },
    #[error("unsupported component count {0} (1 or 3 supported)")]
    UnsupportedComponents(u16),
    #[error("unsupported bits stored {0} (1..=16 supported)")]
    UnsupportedBitDepth(u8),
    #[error("sample buffer holds {actual} samples, image needs {expected}")]
    SampleCountMismatch { expected: usize, actual: usize },
    #[error("sample {index} = {value} does not fit {bits} bits ({signedness})")]
    SampleOutOfRange {
        index: usize,
        value: i64,
        bits: u8,
        signedness: &'static str,
    },
    #[error("ROI mask is {}x{} but the image is {}x{}", mask.0, mask.1, image.0, image.1)]
    MaskSizeMismatch { mask: (u32, u32), image: (u32, u32) },
    #[error("mask bitmap has {actual} entries, {expected} expected")]
    MaskBitmapLength { expected: usize, actual: usize },
    #[error("invalid code-block size {0}x{1} (powers of two, 4..=1024, area <= 4096)")]
    InvalidCodeBlock(u32, u32),
    #[error("invalid tile size {width}x{height}: {reason}")]
    InvalidTile {
        width: u32,
        height: u32,
        reason: &'static str,
    },
    #[error("invalid compression ratio {0} (must be finite and >= 1)")]
    InvalidRatio(f32),
    #[error("invalid PSNR target {0} dB (must be finite and positive)")]
    InvalidPsnr(f32),
    #[error("invalid layer count {0} (1..=64)")]
    InvalidLayers(u8),
    #[error("coefficients need {0} guard bits; at most 7 can be signalled")]
    TooManyGuardBits(u32),
}

/// Sample storage of an [`Image`]; interleaved (R, G, B, R, ...) for colour.
#[derive(Clone, Copy, Debug)]
pub enum Samples<'a> {
    /// 8-bit storage (BitsAllocated 8).
    U8(&'a [u8]),
    /// 16-bit unsigned storage (BitsAllocated 16, PixelRepresentation 0).
    U16(&'a [u16]),
    /// 16-bit two's complement storage (PixelRepresentation 1).
    I16(&'a [i16]),
    /// Any values already widened to 32 bits.
    I32(&'a [i32]),
}

impl Samples<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Samples::U8(s) => s.len(),
            Samples::U16(s) => s.len(),
            Samples::I16(s) => s.len(),
            Samples::I32(s) => s.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` as a signed integer.
    pub fn get(&self, i: usize) -> i32 {
        match self {
            Samples::U8(s) => s[i] as i32,
            Samples::U16(s) => s[i] as i32,
            Samples::I16(s) => s[i] as i32,
            Samples::I32(s) => s[i],
        }
    }

    fn to_vec(self) -> Vec<i32> {
        match self {
            Samples::U8(s) => s.iter().map(|&v| v as i32).collect(),
            Samples::U16(s) => s.iter().map(|&v| v as i32).collect(),
            Samples::I16(s) => s.iter().map(|&v| v as i32).collect(),
            Samples::I32(s) => s.to_vec(),
        }
    }
}

/// An image to encode. Values must fit `bits_stored` (two's complement range when `signed`).
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 (grey) or 3 (RGB, interleaved).
    pub components: u16,
    /// Significant bits per sample (DICOM BitsStored), 1..=16; higher bits must be clear
    /// (or sign extension for signed data).
    pub bits_stored: u8,
    /// Two's complement samples (DICOM PixelRepresentation 1); unsigned ones are DC-shifted.
    pub signed: bool,
    /// Row-major samples, `width * height * components` of them.
    pub samples: Samples<'a>,
}

impl Image<'_> {
    /// Checks dimensions, component count, bit depth and sample count (not sample values).
    pub fn validate(&self) -> Result<(), J2kError> {
        if self.width == 0 || self.height == 0 {
            return Err(J2kError::InvalidDimensions {
                width: self.width,
                height: self.height,
            });
        }
        if self.components != 1 && self.components != 3 {
            return Err(J2kError::UnsupportedComponents(self.components));
        }
        if !(1..=16).contains(&self.bits_stored) {
            return Err(J2kError::UnsupportedBitDepth(self.bits_stored));
        }
        let expected = self.width as usize * self.height as usize * self.components as usize;
        if self.samples.len() != expected {
            return Err(J2kError::SampleCountMismatch {
                expected,
                actual: self.samples.len(),
            });
        }
        Ok(())
    }

    /// Bytes of the uncompressed samples as given (1 byte per sample for `U8`, 2 for `U16` and
    /// `I16`, whole bytes covering `bits_stored` for `I32`) — what DICOM's Lossy Image
    /// Compression Ratio divides, and the reference for every ratio here.
    pub fn raw_bytes(&self) -> usize {
        let per_sample = match self.samples {
            Samples::U8(_) => 1,
            Samples::U16(_) | Samples::I16(_) => 2,
            Samples::I32(_) => (self.bits_stored as usize).div_ceil(8),
        };
        self.width as usize * self.height as usize * self.components as usize * per_sample
    }
}

/// What to optimise for.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'m> {
    /// Reversible 5/3, every bit kept.
    Lossless,
    /// Irreversible 9/7 truncated to `raw_bytes / ratio` bytes.
    Lossy { ratio: f32 },
    /// Irreversible 9/7 truncated to the fewest bytes whose estimated PSNR (peak
    /// `2^bits - 1`, over all samples) reaches `psnr` dB.
    Quality { psnr: f32 },
    /// Reversible 5/3 with MAXSHIFT: pixels inside `mask` decode exactly, and the background
    /// is compressed `background_ratio`:1. The codestream is truncated to the ROI's lossless
    /// size plus the background's raw size over the ratio, by dropping background coding
    /// passes only: a large ROI does not starve the background.
    Roi {
        mask: &'m Mask,
        background_ratio: f32,
    },
}

/// Encoder settings. `Default` gives lossless, 5 levels, 64x64 code-blocks, one layer,
/// one tile, all cores.
#[derive(Clone, Copy, Debug)]
pub struct EncodeParams<'m> {
    /// Lossless, lossy (ratio or PSNR) or ROI.
    pub mode: Mode<'m>,
    /// Decomposition levels; reduced to what the image (tile) size allows.
    pub levels: u8,
    /// Code-block width and height (powers of two, area <= 4096).
    pub code_block: (u32, u32),
    /// Quality layers (1..=64); layer budgets double up to the final one.
    pub layers: u8,
    /// Tile size; `None` is one tile. Sizes must be multiples of `2^levels`.
    pub tile: Option<(u32, u32)>,
    /// Worker threads for tier-1; 0 uses every available core.
    pub threads: usize,
}

impl Default for EncodeParams<'_> {
    fn default() -> Self {
        EncodeParams {
            mode: Mode::Lossless,
            levels: 5,
            code_block: (64, 64),
            layers: 1,
            tile: None,
            threads: 0,
        }
    }
}

/// An encoded codestream and what the encoder decided.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Raw JPEG 2000 codestream (SOC ... EOC).
    pub codestream: Vec<u8>,
    /// [`Image::raw_bytes`] divided by the codestream length.
    pub achieved_ratio: f32,
    /// MAXSHIFT value written in RGN, when ROI coding was applied.
    pub roi_shift: Option<u8>,
    /// One line for the caller's log when the encoder deviated from the request (ROI
    /// fallback to lossless, ROI alone exceeding the budget).
    pub note: Option<String>,
    /// Whether every sample decodes exactly (reversible path with nothing truncated).
    pub lossless: bool,
    /// Whether the reversible 5/3 path was used.
    pub reversible: bool,
    /// Decomposition levels actually used.
    pub levels: u8,
    /// For a single-tile codestream (the default), where the packets of resolutions `0..=r`
    /// end, from the codestream's first byte: `resolution_ends[r]` bytes hold what decoding
    /// at `1 / 2^(levels - r)` of the size needs (see [`prefix::resolution_prefix`]).
    /// Empty when tiled (each tile's resolutions are in its own tile-part).
    pub resolution_ends: Vec<usize>,
}

/// Encodes `image` as a JPEG 2000 codestream.
pub fn encode(image: &Image<'_>, params: &EncodeParams<'_>) -> Result<Encoded, J2kError> {
    image.validate()?;
    let (cbw, cbh) = params.code_block;
    let cb_ok = |v: u32| v.is_power_of_two() && (4..=1024).contains(&v);
    if !cb_ok(cbw) || !cb_ok(cbh) || cbw * cbh > 4096 {
        return Err(J2kError::InvalidCodeBlock(cbw, cbh));
    }
    if params.layers == 0 || params.layers > 64 {
        return Err(J2kError::InvalidLayers(params.layers));
    }
    match params.mode {
        Mode::Lossy { ratio }
        | Mode::Roi {
            background_ratio: ratio,
            ..
        } if !(ratio.is_finite() && ratio >= 1.0) => {
            return Err(J2kError::InvalidRatio(ratio));
        }
        Mode::Quality { psnr } if !(psnr.is_finite() && psnr > 0.0) => {
            return Err(J2kError::InvalidPsnr(psnr))
        }
        Mode::Roi { mask, .. } if (mask.width(), mask.height()) != (image.width, image.height) => {
            return Err(J2kError::MaskSizeMismatch {
                mask: (mask.width(), mask.height()),
                image: (image.width, image.height),
            });
        }
        _ => {}
    }
    let planes = component_planes(image)?;
    match encode_planes(image, params, &planes)? {
        Ok(e) => Ok(e),
        Err(needed) => {
            let lossless = EncodeParams {
                mode: Mode::Lossless,
                ..*params
            };
            let mut e =
                encode_planes(image, &lossless, &planes)?.expect("lossless never needs ROI planes");
            e.note = Some(format!(
                "ROI not applied: MAXSHIFT would need {needed} coded bit-planes, above the decoder-safe {}; encoded lossless",
                roi::MAX_CODED_PLANES
            ));
            Ok(e)
        }
    }
}

/// De-interleaves, range-checks and DC-level-shifts the samples (B.1.1).
fn component_planes(image: &Image<'_>) -> Result<Vec<Vec<i32>>, J2kError> {
    let nc = image.components as usize;
    let bits = image.bits_stored;
    let (lo, hi) = if image.signed {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (0, (1i64 << bits) - 1)
    };
    let all = image.samples.to_vec();
    if let Some(i) = all.iter().position(|&v| (v as i64) < lo || (v as i64) > hi) {
        return Err(J2kError::SampleOutOfRange {
            index: i,
            value: all[i] as i64,
            bits,
            signedness: if image.signed { "signed" } else { "unsigned" },
        });
    }
    let shift = if image.signed { 0 } else { 1i32 << (bits - 1) };
    Ok((0..nc)
        .map(|c| all.iter().skip(c).step_by(nc).map(|&v| v - shift).collect())
        .collect())
}

/// A band's place in a tile-component's Mallat buffer and on the absolute band grid.
#[derive(Clone, Copy, Debug)]
struct BandGeom {
    res: usize,
    orient: u8,
    /// Decomposition level (0 only for the LL of an untransformed tile).
    level: u8,
    lx: usize,
    ly: usize,
    w: usize,
    h: usize,
    ax: usize,
    ay: usize,
}

fn band_geoms(w: usize, h: usize, levels: u8, tx0: usize, ty0: usize) -> Vec<BandGeom> {
    let dims = dwt::level_dims(w, h, levels);
    let n = levels as usize;
    let (llw, llh) = if n == 0 {
        (w, h)
    } else {
        (dims[n - 1].0.div_ceil(2), dims[n - 1].1.div_ceil(2))
    };
    let mut out = vec![BandGeom {
        res: 0,
        orient: 0,
        level: levels,
        lx: 0,
        ly: 0,
        w: llw,
        h: llh,
        ax: tx0 >> n,
        ay: ty0 >> n,
    }];
    for r in 1..=n {
        let j = n - r + 1;
        let (cw, ch) = dims[j - 1];
        let (lw, lh) = (cw.div_ceil(2), ch.div_ceil(2));
        let (ax, ay) = (tx0 >> j, ty0 >> j);
        for (orient, lx, ly, bw, bh) in [
            (1, lw, 0, cw - lw, lh),
            (2, 0, lh, lw, ch - lh),
            (3, lw, lh, cw - lw, ch - lh),
        ] {
            out.push(BandGeom {
                res: r,
                orient,
                level: j as u8,
                lx,
                ly,
                w: bw,
                h: bh,
                ax,
                ay,
            });
        }
    }
    out
}

fn band_gain(orient: u8) -> u8 {
    [0, 1, 1, 2][orient as usize]
}

/// One tile-component after transform and quantisation.
struct TcData {
    tile: usize,
    comp: usize,
    w: usize,
    mags: Vec<u32>,
    negs: Vec<bool>,
    roi: Option<Vec<bool>>,
}

struct Job {
    tc: usize,
    band: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// `Err(planes)` asks the caller to fall back: MAXSHIFT would need too many bit-planes.
fn encode_planes(
    image: &Image<'_>,
    params: &EncodeParams<'_>,
    planes: &[Vec<i32>],
) -> Result<Result<Encoded, u32>, J2kError> {
    let (w, h) = (image.width as usize, image.height as usize);
    let nc = image.components as usize;
    let bits = image.bits_stored;
    let reversible = !matches!(params.mode, Mode::Lossy { .. } | Mode::Quality { .. });
    let (cbw, cbh) = params.code_block;
    let roi_mask = match params.mode {
        Mode::Roi { mask, .. } => Some(mask),
        _ => None,
    };
    let (tw, th) = params.tile.unwrap_or((image.width, image.height));
    if tw == 0 || th == 0 {
        return Err(J2kError::InvalidTile {
            width: tw,
            height: th,
            reason: "zero size",
        });
    }
    let (tw, th) = ((tw as usize).min(w), (th as usize).min(h));
    let max_levels = (usize::BITS - 1 - tw.min(th).leading_zeros()) as u8;
    let levels = params.levels.min(max_levels).min(15);
    // Tile origins must be multiples of 2^levels so every band starts at an even position
    // (one tile along an axis has origin 0 there).
    if (tw < w && tw % (1 << levels) != 0) || (th < h && th % (1 << levels) != 0) {
        return Err(J2kError::InvalidTile {
            width: tw as u32,
            height: th as u32,
            reason: "tile size must be a multiple of 2^levels",
        });
    }
    let (ntx, nty) = (w.div_ceil(tw), h.div_ceil(th));
    let tiles: Vec<(usize, usize, usize, usize)> = (0..ntx * nty)
        .map(|t| {
            let (x0, y0) = ((t % ntx) * tw, (t / ntx) * th);
            (x0, y0, (x0 + tw).min(w), (y0 + th).min(h))
        })
        .collect();
    for &(x0, y0, x1, y1) in &tiles {
        for k in 0..=levels as u32 {
            let cell = |a: usize, b: usize| (a >> k) >> 15 == ((b.div_ceil(1 << k)) - 1) >> 15;
            if !cell(x0, x1) || !cell(y0, y1) {
                return Err(J2kError::InvalidTile {
                    width: tw as u32,
                    height: th as u32,
                    reason: "a tile crosses a 32768-sample precinct boundary; use smaller tiles",
                });
            }
        }
    }
    if tiles.len() > u16::MAX as usize {
        return Err(J2kError::InvalidTile {
            width: tw as u32,
            height: th as u32,
            reason: "more than 65535 tiles",
        });
    }
    let threads = if params.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        params.threads
    };

    // Step sizes per band (same for every tile-component: same geometry per level).
    let geoms0 = band_geoms(tw, th, levels, 0, 0);
    let steps: Vec<(u8, u16, f64)> = geoms0
        .iter()
        .map(|g| {
            let rb = bits + band_gain(g.orient);
            if reversible {
                (rb, 0, 1.0)
            } else {
                codestream::encode_step(1.0 / dwt::band_weight(false, g.orient, g.level).sqrt(), rb)
            }
        })
        .collect();

    // Transform and quantise each tile (its components together, for the colour transform).
    let per_tile: Vec<Vec<TcData>> = par_map(
        &(0..tiles.len()).collect::<Vec<_>>(),
        threads,
        |&t, _: &mut ()| {
            let (x0, y0, x1, y1) = tiles[t];
            let (cw, ch) = (x1 - x0, y1 - y0);
            let geoms = band_geoms(cw, ch, levels, x0, y0);
            let extract = |p: &Vec<i32>| -> Vec<i32> {
                (y0..y1)
                    .flat_map(|y| p[y * w + x0..y * w + x1].iter().copied())
                    .collect()
            };
            let mut comps: Vec<Vec<i32>> = planes.iter().map(extract).collect();
            let roi = roi_mask.map(|m| {
                let pix: Vec<bool> = (y0..y1)
                    .flat_map(|y| m.bits()[y * w + x0..y * w + x1].iter().copied())
                    .collect();
                roi::wavelet_mask(&pix, cw, ch, levels, reversible)
            });
            let mut out = Vec::with_capacity(nc);
            if reversible {
                if nc == 3 {
                    let (a, rest) = comps.split_at_mut(1);
                    let (b, c) = rest.split_at_mut(1);
                    color::rct_forward(&mut a[0], &mut b[0], &mut c[0]);
                }
                for (c, mut buf) in comps.into_iter().enumerate() {
                    dwt::fwd53(&mut buf, cw, ch, cw, levels);
                    let negs = buf.iter().map(|&v| v < 0).collect();
                    let mags = buf.iter().map(|&v| v.unsigned_abs()).collect();
                    out.push(TcData {
                        tile: t,
                        comp: c,
                        w: cw,
                        mags,
                        negs,
                        roi: roi.clone(),
                    });
                }
            } else {
                let mut f: Vec<Vec<f32>> = comps
                    .drain(..)
                    .map(|p| p.into_iter().map(|v| v as f32).collect())
                    .collect();
                if nc == 3 {
                    let (a, rest) = f.split_at_mut(1);
                    let (b, c) = rest.split_at_mut(1);
                    color::ict_forward(&mut a[0], &mut b[0], &mut c[0]);
                }
                for (c, mut buf) in f.into_iter().enumerate() {
                    dwt::fwd97(&mut buf, cw, ch, cw, levels);
                    let mut mags = vec![0u32; cw * ch];
                    let mut negs = vec![false; cw * ch];
                    for (g, &(_, _, step)) in geoms.iter().zip(&steps) {
                        let inv = (1.0 / step) as f32;
                        for y in g.ly..g.ly + g.h {
                            for x in g.lx..g.lx + g.w {
                                let v = buf[y * cw + x];
                                mags[y * cw + x] = (v.abs() * inv) as u32;
                                negs[y * cw + x] = v < 0.0;
                            }
                        }
                    }
                    out.push(TcData {
                        tile: t,
                        comp: c,
                        w: cw,
                        mags,
                        negs,
                        roi: None,
                    });
                }
            }
            out
        },
    );
    let mut tcs: Vec<TcData> = per_tile.into_iter().flatten().collect();

    // Guard bits: enough for the largest magnitude of every band (E-2: Mb = G + eps - 1).
    let mut band_planes = vec![0u32; geoms0.len()];
    let (mut bg_max, mut roi_max) = (0u32, 0u32);
    for tc in &tcs {
        let (x0, y0, x1, y1) = tiles[tc.tile];
        for (b, g) in band_geoms(x1 - x0, y1 - y0, levels, x0, y0)
            .iter()
            .enumerate()
        {
            for y in g.ly..g.ly + g.h {
                for x in g.lx..g.lx + g.w {
                    let i = y * tc.w + x;
                    let m = tc.mags[i];
                    band_planes[b] = band_planes[b].max(roi::planes(m));
                    match &tc.roi {
                        Some(r) if r[i] => roi_max = roi_max.max(m),
                        _ => bg_max = bg_max.max(m),
                    }
                }
            }
        }
    }
    let guard = band_planes
        .iter()
        .zip(&steps)
        .map(|(&k, &(eps, _, _))| (k + 1).saturating_sub(eps as u32))
        .max()
        .unwrap_or(0)
        .max(2);
    if guard > 7 {
        return Err(J2kError::TooManyGuardBits(guard));
    }
    let mb: Vec<u32> = steps
        .iter()
        .map(|&(eps, _, _)| guard + eps as u32 - 1)
        .collect();

    // MAXSHIFT: ROI magnitudes move above every background magnitude (see roi.rs for +1).
    let shift = if roi_mask.is_some() {
        let s = roi::planes(bg_max) + 1;
        let needed = s + roi::planes(roi_max);
        if needed > roi::MAX_CODED_PLANES {
            return Ok(Err(needed));
        }
        for tc in tcs.iter_mut() {
            if let Some(r) = &tc.roi {
                for (m, &is_roi) in tc.mags.iter_mut().zip(r) {
                    if is_roi {
                        *m <<= s;
                    }
                }
            }
        }
        s as u8
    } else {
        0
    };

    // Tier-1 over every code-block, in parallel. A single lossless layer truncates nothing,
    // so it needs no distortion figures.
    let need_dist = !(matches!(params.mode, Mode::Lossless) && params.layers == 1);
    let mut jobs = Vec::new();
    let mut tc_geoms = Vec::with_capacity(tcs.len());
    for (i, tc) in tcs.iter().enumerate() {
        let (x0, y0, x1, y1) = tiles[tc.tile];
        let geoms = band_geoms(x1 - x0, y1 - y0, levels, x0, y0);
        for (b, g) in geoms.iter().enumerate() {
            for_each_block(g, cbw as usize, cbh as usize, |x, y, bw, bh| {
                jobs.push(Job {
                    tc: i,
                    band: b,
                    x,
                    y,
                    w: bw,
                    h: bh,
                })
            });
        }
        tc_geoms.push(geoms);
    }
    let coded = par_map(&jobs, threads, |job, scratch: &mut t1::T1Scratch| {
        let tc = &tcs[job.tc];
        let g = &tc_geoms[job.tc][job.band];
        let mut mags = Vec::with_capacity(job.w * job.h);
        let mut negs = Vec::with_capacity(job.w * job.h);
        for y in g.ly + job.y..g.ly + job.y + job.h {
            let row = y * tc.w + g.lx + job.x;
            mags.extend_from_slice(&tc.mags[row..row + job.w]);
            negs.extend_from_slice(&tc.negs[row..row + job.w]);
        }
        let coding = t1::Coding {
            orient: g.orient,
            roi_shift: shift,
            need_dist,
        };
        t1::encode_block(job.w, job.h, &mags, &negs, coding, scratch)
    });

    // Assemble the tier-2 tree.
    let colour_weight: [f64; 3] = match (nc, reversible) {
        (3, true) => [3.0, 0.6875, 0.6875],
        (3, false) => [3.0, 3.258, 2.476],
        _ => [1.0; 3],
    };
    let mut t2tiles: Vec<t2::Tile> = (0..tiles.len())
        .map(|_| t2::Tile { comps: Vec::new() })
        .collect();
    let mut coded = coded.into_iter();
    let mut job_iter = jobs.iter().peekable();
    for (i, tc) in tcs.iter().enumerate() {
        let geoms = &tc_geoms[i];
        let mut comp = t2::TileComp {
            resolutions: vec![t2::Resolution::default(); levels as usize + 1],
        };
        for (b, g) in geoms.iter().enumerate() {
            let (ncbx, ncby) = block_grid(g, cbw as usize, cbh as usize);
            let weight = dwt::band_weight(reversible, g.orient, g.level)
                * steps[b].2
                * steps[b].2
                * colour_weight[tc.comp];
            let mut band = t2::Band {
                ncbx,
                ncby,
                blocks: Vec::with_capacity(ncbx * ncby),
            };
            while job_iter.peek().is_some_and(|j| j.tc == i && j.band == b) {
                job_iter.next();
                let cb = coded.next().expect("one coded block per job");
                let numbps = cb.numbps as u32;
                let zbp = if numbps == 0 {
                    0
                } else {
                    mb[b] + shift as u32 - numbps
                };
                let min_passes = if shift > 0 {
                    roi::roi_passes(cb.numbps, shift)
                } else {
                    0
                };
                band.blocks.push(t2::Block {
                    coded: cb,
                    zbp,
                    cuts: Vec::new(),
                    min_passes,
                    weight,
                });
            }
            comp.resolutions[g.res].bands.push(band);
        }
        t2tiles[tc.tile].comps.push(comp);
    }

    // Headers, then rate allocation against the real header size.
    let siz = codestream::Siz {
        width: image.width,
        height: image.height,
        tile_w: tw as u32,
        tile_h: th as u32,
        comps: vec![(bits, image.signed); nc],
    };
    let cod = codestream::Cod {
        layers: params.layers as u16,
        mct: nc == 3,
        levels,
        cb_w_log2: cbw.trailing_zeros() as u8,
        cb_h_log2: cbh.trailing_zeros() as u8,
        reversible,
    };
    let qcd = codestream::Qcd {
        guard_bits: guard as u8,
        reversible,
        bands: steps.iter().map(|&(e, m, _)| (e, m)).collect(),
    };
    let roi_shift = (shift > 0).then_some(shift);
    let header = codestream::main_header(&siz, &cod, &qcd, roi_shift, "Strata J2K");
    let packets_per_tile = (levels as usize + 1) * nc * params.layers as usize;
    let overhead = header.len()
        + codestream::tlm_len(tiles.len())
        + tiles.len()
            * (codestream::TILE_PART_OVERHEAD + codestream::plt_len_estimate(packets_per_tile))
        + codestream::EOC.len();
    let nl = params.layers as usize;
    let raw = image.raw_bytes();
    let final_budget = match params.mode {
        Mode::Lossless => None,
        Mode::Lossy { ratio } => Some((raw as f64 / ratio as f64) as usize),
        Mode::Roi {
            mask,
            background_ratio: ratio,
        } => {
            // A zero budget keeps only the passes the ROI needs (they are never dropped).
            rate::allocate(&mut t2tiles, &[Some(0)], overhead);
            let roi_only = overhead + t2tiles.iter().map(|t| t2::tile_len(t, 1)).sum::<usize>();
            let background = raw as f64 * (1.0 - mask.count() as f64 / (w * h) as f64);
            Some(roi_only + (background / ratio as f64) as usize)
        }
        Mode::Quality { psnr } => {
            let peak = ((1u64 << bits) - 1) as f64;
            let samples = (w * h * nc) as f64;
            // The error model (mid-interval reconstruction, orthogonal-basis energy) runs
            // about 0.3 dB optimistic against OpenJPEG at high rates: aim that much higher.
            let max_error = peak * peak * samples / 10f64.powf((psnr as f64 + 0.3) / 10.0);
            Some(rate::budget_for_error(&mut t2tiles, max_error, overhead))
        }
    };
    let top = match final_budget {
        Some(b) => b,
        None => {
            // Intermediate lossless layers are fractions of the full size.
            rate::allocate(&mut t2tiles, &[None], overhead);
            overhead + t2tiles.iter().map(|t| t2::tile_len(t, 1)).sum::<usize>()
        }
    };
    let budgets: Vec<Option<usize>> = (0..nl)
        .map(|l| {
            if l + 1 == nl {
                final_budget
            } else {
                Some(top >> (nl - 1 - l).min(30))
            }
        })
        .collect();
    rate::allocate(&mut t2tiles, &budgets, overhead);

    let bodies: Vec<(Vec<u8>, t2::TileBody)> = t2tiles
        .iter()
        .map(|tile| {
            let body = t2::encode_tile(tile, nl);
            (codestream::plt(&body.packet_lens), body)
        })
        .collect();
    let lengths: Vec<(u16, u32)> = bodies
        .iter()
        .enumerate()
        .map(|(t, (plt, body))| (t as u16, codestream::tile_part_len(plt, &body.bytes) as u32))
        .collect();
    let mut out = header;
    out.extend_from_slice(&codestream::tlm(&lengths));
    let mut resolution_ends = Vec::new();
    for (t, (plt, body)) in bodies.iter().enumerate() {
        codestream::tile_part(&mut out, t as u16, plt, &body.bytes);
        if bodies.len() == 1 {
            let data = out.len() - body.bytes.len();
            resolution_ends = body.resolution_ends.iter().map(|e| data + e).collect();
        }
    }
    out.extend_from_slice(&codestream::EOC);

    let complete = t2tiles
        .iter()
        .flat_map(|t| t.blocks())
        .all(|b| b.cuts.last().copied().unwrap_or(0) == b.coded.passes.len());
    let note = match (final_budget, roi_shift) {
        (Some(b), Some(_)) if out.len() > b + b / 10 => Some(format!(
            "ROI alone needs {} bytes, above the {} byte budget",
            out.len(),
            b
        )),
        _ => None,
    };
    Ok(Ok(Encoded {
        achieved_ratio: raw as f32 / out.len() as f32,
        codestream: out,
        roi_shift,
        note,
        lossless: reversible && complete,
        reversible,
        levels,
        resolution_ends,
    }))
}

/// Code-block grid size of a band (blocks anchored at multiples of the block size).
fn block_grid(g: &BandGeom, cbw: usize, cbh: usize) -> (usize, usize) {
    if g.w == 0 || g.h == 0 {
        return (0, 0);
    }
    (
        (g.ax + g.w).div_ceil(cbw) - g.ax / cbw,
        (g.ay + g.h).div_ceil(cbh) - g.ay / cbh,
    )
}

/// Calls `f(x, y, w, h)` for each code-block of a band in raster order, in band-local
/// coordinates.
fn for_each_block(
    g: &BandGeom,
    cbw: usize,
    cbh: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let (ncbx, ncby) = block_grid(g, cbw, cbh);
    for by in 0..ncby {
        let ay0 = ((g.ay / cbh + by) * cbh).max(g.ay);
        let ay1 = ((g.ay / cbh + by + 1) * cbh).min(g.ay + g.h);
        for bx in 0..ncbx {
            let ax0 = ((g.ax / cbw + bx) * cbw).max(g.ax);
            let ax1 = ((g.ax / cbw + bx + 1) * cbw).min(g.ax + g.w);
            f(ax0 - g.ax, ay0 - g.ay, ax1 - ax0, ay1 - ay0);
        }
    }
}

/// Maps `f` over `items` on `threads` scoped threads pulling indices from a shared counter;
/// each thread owns one `S` (scratch buffers). Results keep the input order.
fn par_map<T: Sync, R: Send, S: Default>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T, &mut S) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        let mut s = S::default();
        return items.iter().map(|i| f(i, &mut s)).collect();
    }
    let next = AtomicUsize::new(0);
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut s = S::default();
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break;
                        }
                        out.push((i, f(&items[i], &mut s)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in parts.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every index is processed once"))
        .collect()
}
