//! JPEG 2000 for DICOM instances: turns a Part-10 file (any transfer syntax whose pixel data
//! dicom-pixeldata can decode) into one with encapsulated JPEG 2000 pixel data, and checks a
//! lossless result by decoding it again.
//!
//! Output follows PS3.5 A.4: one fragment per frame, a Basic Offset Table, transfer syntax
//! 1.2.840.10008.1.2.4.90 (lossless) or .91 (ROI/lossy), Planar Configuration 0 and, for
//! colour, YBR_RCT/YBR_ICT. Lossy output is always marked (PS3.3 C.7.6.1.1.5): Lossy Image
//! Compression "01", the ratio and method "ISO_15444_1" appended to any earlier ones, and a
//! Derivation Description naming the ROI coding. The SOP Instance UID is kept: a compressed
//! copy stands for the same instance, and its marking says what it is.

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::{PixelDecoder, PlanarConfiguration};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::j2k::{self, EncodeParams, Image, Mask, Mode, Samples};
use crate::model::levels::FrameLevels;

/// JPEG 2000 Image Compression (Lossless Only).
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
/// JPEG 2000 Image Compression (lossless or lossy).
pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";

/// What to turn an instance into.
#[derive(Debug, Clone)]
pub enum Target {
    /// Reversible 5/3, every sample kept.
    Lossless,
    /// MAXSHIFT region of interest: ROI samples kept exactly, the background compressed
    /// `ratio`:1 (the overall ratio is lower, by how much the ROI takes).
    Roi { roi: Roi, ratio: f32 },
}

/// Where the region of interest is.
#[derive(Debug, Clone)]
pub enum Roi {
    /// From each frame's grey histogram (Otsu threshold, clean-up).
    Auto,
    /// A rectangle in pixel coordinates: x, y, width, height.
    Rect(u32, u32, u32, u32),
}

/// Why an instance could not be transcoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot parse the Part-10 file: {0}")]
    Parse(String),
    #[error("no pixel data to compress")]
    NoPixelData,
    #[error("cannot decode the stored pixel data: {0}")]
    Decode(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("JPEG 2000 encoding failed: {0}")]
    Encode(#[from] j2k::J2kError),
    #[error("cannot write the Part-10 file: {0}")]
    Write(String),
    #[error("frame {frame} does not decode to the original samples: {detail}")]
    Mismatch { frame: u32, detail: String },
}

/// A transcoded instance.
#[derive(Debug, Clone)]
pub struct Transcoded {
    /// The whole Part-10 file.
    pub file: Vec<u8>,
    pub transfer_syntax_uid: &'static str,
    /// Uncompressed pixel bytes over compressed ones.
    pub ratio: f64,
    /// Whether every sample decodes exactly.
    pub lossless: bool,
    /// For automatic ROI: the smallest and largest fraction of a frame chosen.
    pub roi_fraction: Option<(f64, f64)>,
    /// Encoder remarks for the log (ROI fallback to lossless and the like).
    pub notes: Vec<String>,
    /// Where each frame's codestream and its resolution levels are in `file`; empty when
    /// they cannot be told (a tiled codestream, or an element after the pixel data).
    pub levels: Vec<FrameLevels>,
}

/// Raw samples of every frame, as the encoder takes them.
struct Frames {
    width: u32,
    height: u32,
    components: u16,
    bits_stored: u8,
    signed: bool,
    /// Samples per frame, interleaved for colour.
    frames: Vec<Vec<i32>>,
}

/// Reads a Part-10 file from memory.
fn open(part10: &[u8]) -> Result<DefaultDicomObject, CodecError> {
    crate::dataset::open_part10(part10, MAX_INFLATED).map_err(|e| CodecError::Parse(e.to_string()))
}

/// Most a deflated input may inflate to.
const MAX_INFLATED: u64 = 1 << 30;
/// Most decoded pixel data compressed at once.
const MAX_DECODED: u64 = 1 << 30;

/// Decodes every frame's samples, masked to Bits Stored (sign-extended when signed), so that
/// values compare equal whatever the high bits held.
fn frames(object: &DefaultDicomObject) -> Result<Frames, CodecError> {
    if object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_none()
    {
        return Err(CodecError::NoPixelData);
    }
    // Whole: the encoder takes every frame at once (backup and archive never give it an
    // instance over `reader::HOLD_LIMIT`).
    super::pixels::check_decodable(object, MAX_DECODED, false)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    let decoded = super::pixels::guard_decoder(|| object.decode_pixel_data())
        .map_err(|e| CodecError::Decode(e.to_string()))?
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    let components = decoded.samples_per_pixel();
    let bits_allocated = decoded.bits_allocated();
    let bits_stored = decoded.bits_stored();
    if components != 1 && components != 3 {
        return Err(CodecError::Unsupported(format!(
            "{components} samples per pixel"
        )));
    }
    if !matches!(bits_allocated, 8 | 16) || bits_stored == 0 || bits_stored > 16 {
        return Err(CodecError::Unsupported(format!(
            "{bits_stored} of {bits_allocated} bits per sample"
        )));
    }
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let (width, height) = (decoded.columns(), decoded.rows());
    let per_frame = width as usize * height as usize * components as usize;
    let planar =
        components == 3 && decoded.planar_configuration() == PlanarConfiguration::PixelFirst;
    let mut frames = Vec::with_capacity(decoded.number_of_frames() as usize);
    for f in 0..decoded.number_of_frames() {
        let bytes = decoded
            .frame_data(f)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        let raw: Vec<i32> = if bits_allocated == 8 {
            bytes.iter().map(|&b| b as i32).collect()
        } else {
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                .collect()
        };
        if raw.len() < per_frame {
            return Err(CodecError::Decode(format!(
                "frame {f} has {} samples, expected {per_frame}",
                raw.len()
            )));
        }
        let mut samples: Vec<i32> = raw[..per_frame]
            .iter()
            .map(|&v| fit(v, bits_stored, signed))
            .collect();
        if planar {
            let plane = per_frame / 3;
            samples = (0..per_frame)
                .map(|i| samples[(i % 3) * plane + i / 3])
                .collect();
        }
        frames.push(samples);
    }
    Ok(Frames {
        width,
        height,
        components,
        bits_stored: bits_stored as u8,
        signed,
        frames,
    })
}

/// The low `bits` bits of `v`, sign-extended when `signed`.
fn fit(v: i32, bits: u16, signed: bool) -> i32 {
    let masked = v & ((1i32 << bits) - 1);
    if signed && masked >> (bits - 1) & 1 == 1 {
        masked - (1i32 << bits)
    } else {
        masked
    }
}

/// Transcodes a Part-10 file to JPEG 2000. A lossless target is checked by decoding the
/// result and comparing every sample before it is returned.
pub fn to_j2k(part10: &[u8], target: &Target) -> Result<Transcoded, CodecError> {
    let mut object = open(part10)?;
    let source = frames(&object)?;
    let mut fragments = Vec::with_capacity(source.frames.len());
    let mut notes = Vec::new();
    let mut lossless = true;
    let mut roi_fraction: Option<(f64, f64)> = None;
    let mut compressed = 0usize;
    let mut resolution_ends = Vec::with_capacity(source.frames.len());
    for samples in &source.frames {
        let image = Image {
            width: source.width,
            height: source.height,
            components: source.components,
            bits_stored: source.bits_stored,
            signed: source.signed,
            samples: Samples::I32(samples),
        };
        let mask;
        let mode = match target {
            Target::Lossless => Mode::Lossless,
            Target::Roi { roi, ratio } => {
                mask = match roi {
                    Roi::Auto => {
                        let auto = Mask::auto(&image)?;
                        let (lo, hi) = roi_fraction.unwrap_or((1.0, 0.0));
                        roi_fraction = Some((lo.min(auto.fraction), hi.max(auto.fraction)));
                        auto.mask
                    }
                    Roi::Rect(x, y, w, h) => {
                        let mut m = Mask::new(source.width, source.height);
                        m.add_rect(*x, *y, *w, *h);
                        m
                    }
                };
                Mode::Roi {
                    mask: &mask,
                    background_ratio: *ratio,
                }
            }
        };
        let encoded = j2k::encode(
            &image,
            &EncodeParams {
                mode,
                ..EncodeParams::default()
            },
        )?;
        lossless &= encoded.lossless;
        if let Some(note) = encoded.note {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        resolution_ends.push(encoded.resolution_ends);
        let mut fragment = encoded.codestream;
        // Fragments have even lengths (PS3.5 A.4); decoders stop at EOC.
        if fragment.len() % 2 == 1 {
            fragment.push(0);
        }
        compressed += fragment.len();
        fragments.push(fragment);
    }
    let raw = source.frames.len()
        * source.width as usize
        * source.height as usize
        * source.components as usize
        * (source.bits_stored as usize).div_ceil(8);
    let ratio = raw as f64 / compressed.max(1) as f64;
    let ts_uid = if lossless {
        JPEG_2000_LOSSLESS
    } else {
        JPEG_2000
    };
    let lengths: Vec<usize> = fragments.iter().map(Vec::len).collect();
    encapsulate(&mut object, fragments, source.components, lossless, ts_uid)?;
    if !lossless {
        mark_lossy(&mut object, ratio, target);
    }
    let mut file = Vec::with_capacity(compressed + 4096);
    object
        .write_all(&mut file)
        .map_err(|e| CodecError::Write(e.to_string()))?;
    if lossless {
        check_lossless(&source, &file)?;
    }
    let size = (source.width, source.height);
    let levels = frame_levels(&file, &lengths, resolution_ends, size);
    Ok(Transcoded {
        levels,
        file,
        transfer_syntax_uid: ts_uid,
        ratio,
        lossless,
        roi_fraction,
        notes,
    })
}

/// Where each frame's codestream starts in `file`, written with one fragment per frame of
/// `lengths` as its last element (the items, then the sequence delimiter, end the file),
/// and where its resolutions end; empty when a codestream has no resolution ends (tiled) or
/// the bytes found there are not an item holding a codestream (something followed the pixel
/// data).
fn frame_levels(
    file: &[u8],
    lengths: &[usize],
    ends: Vec<Vec<usize>>,
    (columns, rows): (u32, u32),
) -> Vec<FrameLevels> {
    const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
    const SOC: [u8; 2] = [0xFF, 0x4F];
    let items: usize = lengths.iter().map(|l| 8 + l).sum();
    let Some(mut at) = file.len().checked_sub(8 + items) else {
        return Vec::new();
    };
    let mut levels = Vec::with_capacity(lengths.len());
    for (n, (length, ends)) in lengths.iter().zip(ends).enumerate() {
        let start = at + 8;
        let holds_codestream =
            file.get(at..at + 4) == Some(&ITEM[..]) && file.get(start..start + 2) == Some(&SOC[..]);
        if ends.is_empty() || !holds_codestream {
            return Vec::new();
        }
        levels.push(FrameLevels {
            frame: n as u32 + 1,
            columns,
            rows,
            codestream_offset: start as u64,
            resolution_ends: ends.into_iter().map(|e| e as u64).collect(),
        });
        at = start + length;
    }
    levels
}

/// Replaces the pixel data with `fragments` (one per frame) and sets the attributes and
/// transfer syntax that go with JPEG 2000.
fn encapsulate(
    object: &mut DefaultDicomObject,
    fragments: Vec<Vec<u8>>,
    components: u16,
    lossless: bool,
    ts_uid: &str,
) -> Result<(), CodecError> {
    // Basic Offset Table: each frame's first item, from the first item's first byte.
    let mut offsets = Vec::with_capacity(fragments.len());
    let mut at = 0u64;
    for f in &fragments {
        offsets.push(
            u32::try_from(at).map_err(|_| {
                CodecError::Unsupported("encapsulated pixel data over 4 GiB".into())
            })?,
        );
        at += 8 + f.len() as u64;
    }
    object.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OB,
        Length::UNDEFINED,
        PixelFragmentSequence::new(offsets, fragments),
    ));
    object.remove_element(tags::EXTENDED_OFFSET_TABLE);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
    object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
    if components == 3 {
        let pi = if lossless { "YBR_RCT" } else { "YBR_ICT" };
        object.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            pi,
        ));
        object.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| CodecError::Write(format!("transfer syntax {ts_uid} not registered")))?;
    object.update_meta(|meta| meta.set_transfer_syntax(ts));
    Ok(())
}

/// Lossy Image Compression, its ratio and method (appended to earlier ones), and a
/// Derivation Description saying what was done.
fn mark_lossy(object: &mut DefaultDicomObject, ratio: f64, target: &Target) {
    let previous = |object: &DefaultDicomObject, tag| -> Vec<String> {
        object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut ratios = previous(object, tags::LOSSY_IMAGE_COMPRESSION_RATIO);
    ratios.push(format!("{ratio:.2}"));
    let mut methods = previous(object, tags::LOSSY_IMAGE_COMPRESSION_METHOD);
    methods.push("ISO_15444_1".to_string());
    object.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION,
        VR::CS,
        "01",
    ));
    object.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION_RATIO,
        VR::DS,
        PrimitiveValue::Strs(ratios.into()),
    ));
    object.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION_METHOD,
        VR::CS,
        PrimitiveValue::Strs(methods.into()),
    ));
    let what = match target {
        Target::Roi { roi: Roi::Auto, ratio } => format!(
            "JPEG 2000 MAXSHIFT region-of-interest coding (automatic ROI from the grey histogram): ROI lossless, background lossy {ratio}:1"
        ),
        Target::Roi { roi: Roi::Rect(x, y, w, h), ratio } => format!(
            "JPEG 2000 MAXSHIFT region-of-interest coding (ROI {w}x{h} at {x},{y}): ROI lossless, background lossy {ratio}:1"
        ),
        Target::Lossless => "JPEG 2000 lossy compression".to_string(),
    };
    let description = match previous(object, tags::DERIVATION_DESCRIPTION).first() {
        Some(earlier) => format!("{earlier}; {what}"),
        None => what,
    };
    object.put(DataElement::new(
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        description,
    ));
}

/// Decodes `file` again and compares every sample of every frame with `source`.
fn check_lossless(source: &Frames, file: &[u8]) -> Result<(), CodecError> {
    let decoded = frames(&open(file)?)?;
    if decoded.frames.len() != source.frames.len() {
        return Err(CodecError::Mismatch {
            frame: 0,
            detail: format!(
                "{} frames decoded, {} encoded",
                decoded.frames.len(),
                source.frames.len()
            ),
        });
    }
    for (f, (a, b)) in source.frames.iter().zip(&decoded.frames).enumerate() {
        if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
            return Err(CodecError::Mismatch {
                frame: f as u32,
                detail: format!("sample {i}: {} encoded, {} decoded", a[i], b[i]),
            });
        }
        if a.len() != b.len() {
            return Err(CodecError::Mismatch {
                frame: f as u32,
                detail: format!("{} samples decoded, {} encoded", b.len(), a.len()),
            });
        }
    }
    Ok(())
}

/// Checks that `compressed` (any transfer syntax) decodes to exactly the samples of
/// `original`: what the archive converter requires before a compressed copy replaces an
/// uncompressed one.
pub fn same_pixels(original: &[u8], compressed: &[u8]) -> Result<(), CodecError> {
    let source = frames(&open(original)?)?;
    check_lossless(&source, compressed)
}

/// Frame `levels.frame` of a stored JPEG 2000 instance at resolution `r` (see
/// [`FrameLevels`]), from the instance's first [`FrameLevels::bytes_for`]`(r)` bytes: its
/// data set up to the Pixel Data, with the image cut from the codestream's first bytes and
/// decoded at that size as one native frame (Rows and Columns those of the reduced image;
/// colour as RGB, the decoder undoing the component transform). Blocking.
pub fn reduced_image(
    head: &[u8],
    levels: &FrameLevels,
    r: usize,
) -> Result<InMemDicomObject, CodecError> {
    let r = r.min(levels.levels());
    let object =
        crate::dataset::open_part10_head(head).map_err(|e| CodecError::Parse(e.to_string()))?;
    let short = || CodecError::Parse("shorter than its recorded resolution levels".into());
    let end = usize::try_from(levels.bytes_for(r).ok_or_else(short)?).map_err(|_| short())?;
    let start = usize::try_from(levels.codestream_offset).map_err(|_| short())?;
    let prefix = head.get(start..end).ok_or_else(short)?;
    let cut = j2k::prefix::resolution_prefix(prefix, r + 1)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    // The head's bytes are not checked against the instance's CRC-32C: before OpenJPEG
    // allocates for the size its header declares, that size must be the recorded one.
    let (columns, rows, components) =
        j2k::prefix::declared_size(&cut).map_err(|e| CodecError::Decode(e.to_string()))?;
    if (columns, rows) != (levels.columns, levels.rows) || !matches!(components, 1 | 3) {
        return Err(CodecError::Decode(format!(
            "the codestream declares {columns}x{rows} with {components} components, \
             recorded {}x{}",
            levels.columns, levels.rows
        )));
    }
    // And OpenJPEG must give the size the levels promise.
    let (columns, rows, planes) =
        crate::codec::pixels::guard_decoder(|| decode_reduced(cut, (levels.levels() - r) as u32))
            .map_err(|e| CodecError::Decode(e.to_string()))??;
    if (columns, rows) != levels.size_at(r) {
        return Err(CodecError::Decode(format!(
            "OpenJPEG decoded {columns}x{rows}, resolution {r} is {:?}",
            levels.size_at(r)
        )));
    }
    let mut object = object.into_inner();
    let bits_allocated = object
        .element_opt(tags::BITS_ALLOCATED)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(16);
    let pixels = interleave(&planes, bits_allocated);
    let int = |v: u32| {
        u16::try_from(v)
            .map(PrimitiveValue::from)
            .map_err(|_| CodecError::Decode(format!("{v} pixels do not fit Rows/Columns")))
    };
    object.put(DataElement::new(tags::ROWS, VR::US, int(rows)?));
    object.put(DataElement::new(tags::COLUMNS, VR::US, int(columns)?));
    object.remove_element(tags::NUMBER_OF_FRAMES);
    if planes.len() == 3 {
        object.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "RGB",
        ));
        object.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            int(0)?,
        ));
    }
    let vr = if bits_allocated > 8 { VR::OW } else { VR::OB };
    object.put(DataElement::new(
        tags::PIXEL_DATA,
        vr,
        PrimitiveValue::from(pixels),
    ));
    Ok(object)
}

/// Decodes `codestream` with its highest `reduce` resolutions left out (OpenJPEG's
/// `cp_reduce`): the size and each component's samples.
fn decode_reduced(
    codestream: Vec<u8>,
    reduce: u32,
) -> Result<(u32, u32, Vec<Vec<i32>>), CodecError> {
    let params = jpeg2k::DecodeParameters::new().reduce(reduce);
    let image = jpeg2k::Image::from_bytes_with(&codestream, params)
        .map_err(|e| CodecError::Decode(format!("OpenJPEG: {e}")))?;
    let comps = image.components();
    let (w, h) = comps
        .first()
        .map(|c| (c.width(), c.height()))
        .ok_or_else(|| CodecError::Decode("OpenJPEG: no components".into()))?;
    let samples = (w as usize).saturating_mul(h as usize);
    let planes = comps
        .iter()
        .map(|c| {
            let data = c.data();
            if c.width() == w && c.height() == h && data.len() >= samples {
                Ok(data[..samples].to_vec())
            } else {
                Err(CodecError::Decode(
                    "OpenJPEG: components of different sizes".into(),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((w, h, planes))
}

/// Component planes as native pixel bytes: samples interleaved, little endian, in
/// `bits_allocated` (8 or 16) bits (a signed sample keeps its two's complement bits).
fn interleave(planes: &[Vec<i32>], bits_allocated: u16) -> Vec<u8> {
    let pixels = planes.first().map_or(0, Vec::len);
    let width = if bits_allocated > 8 { 2 } else { 1 };
    let mut out = Vec::with_capacity(pixels * planes.len() * width);
    for i in 0..pixels {
        for plane in planes {
            let v = plane[i];
            if width == 2 {
                out.extend_from_slice(&(v as u16).to_le_bytes());
            } else {
                out.push(v as u8);
            }
        }
    }
    out
}
