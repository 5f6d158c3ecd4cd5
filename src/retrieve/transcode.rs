//! Re-encodes a stored instance for a destination that does not accept its stored transfer
//! syntax: between uncompressed syntaxes by rewriting the data set, and from a compressed
//! syntax (JPEG, JPEG Lossless, JPEG 2000, HTJ2K, RLE) by decoding the pixel data first.
//!
//! Decoding never makes an image look better than it is: a lossy original keeps its Lossy
//! Image Compression marking, which travels with the rest of the data set. JPEG-LS has no
//! decoder here (dicom-rs would need the CharLS C++ library); such instances fail with that
//! reason, as does anything whose decoded pixels would exceed [`MAX_DECODED`] (one frame:
//! multi-frame instances and those over [`DECODE_WHOLE_LIMIT`] are decoded frame by frame),
//! and an uncompressed data set over [`MAX_IN_MEMORY`] that cannot be re-encoded as a stream.

use crate::codec::pixels::{
    check_decodable, guard_decoder, regroup_fragments, ImageAttributes, PixelError,
};
use dicom_dictionary_std::tags;
use dicom_encoding::{Codec, TransferSyntax, TransferSyntaxIndex};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Largest decoded pixel data held in memory for one instance (per prefetched instance);
/// above [`DECODE_WHOLE_LIMIT`], for one frame.
pub const MAX_DECODED: u64 = 1 << 30;
/// Largest data set re-encoded in memory between uncompressed syntaxes. Larger instances
/// are re-encoded as a stream (`super::stream`), which holds only the elements around the
/// top-level Pixel Data; this bounds what is left (no such element, or a deflated syntax).
pub const MAX_IN_MEMORY: u64 = 256 << 20;

/// Why an instance could not be re-encoded.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("unknown transfer syntax {0}")]
    UnknownSyntax(String),
    #[error("cannot convert {from} to {to}: only decoding to uncompressed syntaxes is supported")]
    ToCompressed { from: String, to: String },
    #[error("cannot decode {name} ({uid}): no decoder for it in this build")]
    NoDecoder { name: String, uid: String },
    #[error("cannot parse the stored data set: {0}")]
    Parse(String),
    #[error("bad or missing {0} in the stored data set")]
    Attribute(&'static str),
    #[error(
        "decoded pixel data would take {0} bytes, more than the {MAX_DECODED} allowed in memory"
    )]
    TooLargeToDecode(u64),
    #[error(
        "re-encoding would hold the {0}-byte data set in memory (at most {MAX_IN_MEMORY}): it has \
         no top-level Pixel Data to stream around"
    )]
    TooLargeInMemory(u64),
    #[error("cannot decode {name}: {reason}")]
    Decode { name: String, reason: String },
    #[error("cannot encode in {name}: {reason}")]
    Encode { name: String, reason: String },
}

impl From<PixelError> for TranscodeError {
    fn from(e: PixelError) -> Self {
        match e {
            PixelError::Attribute(name) => TranscodeError::Attribute(name),
            PixelError::TooLarge(size) => TranscodeError::TooLargeToDecode(size),
            e @ (PixelError::Rle { .. }
            | PixelError::J2kSize(_)
            | PixelError::DecoderPanicked(_)) => TranscodeError::Decode {
                name: "the stored pixel data".into(),
                reason: e.to_string(),
            },
        }
    }
}

fn syntax(uid: &str) -> Result<&'static TransferSyntax, TranscodeError> {
    TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| TranscodeError::UnknownSyntax(uid.to_string()))
}

fn encode(
    object: &InMemDicomObject,
    to: &TransferSyntax,
    out: &mut Vec<u8>,
) -> Result<(), TranscodeError> {
    object
        .write_dataset_with_ts(out, to)
        .map_err(|e| TranscodeError::Encode {
            name: to.name().to_string(),
            reason: e.to_string(),
        })
}

/// Re-encodes `bytes`, a run of whole top-level elements of a data set in the uncompressed
/// syntax `from`, in the uncompressed syntax `to`; with the Bits Allocated among them, if any.
pub fn reencode_elements(
    bytes: &[u8],
    from: &str,
    to: &str,
) -> Result<(Vec<u8>, Option<u16>), TranscodeError> {
    let (from_ts, to_ts) = (syntax(from)?, syntax(to)?);
    let object = InMemDicomObject::read_dataset_with_ts(bytes, from_ts)
        .map_err(|e| TranscodeError::Parse(e.to_string()))?;
    let bits = object
        .element_opt(tags::BITS_ALLOCATED)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok());
    let mut out = Vec::with_capacity(bytes.len() + 256);
    encode(&object, to_ts, &mut out)?;
    Ok((out, bits))
}

/// Re-encodes `file` (a whole Part-10 file whose data set starts at `data_start`, stored in
/// transfer syntax `from`) as a data set in transfer syntax `to`.
pub fn transcode(
    file: &[u8],
    data_start: usize,
    from: &str,
    to: &str,
) -> Result<Vec<u8>, TranscodeError> {
    let (from_ts, to_ts) = (syntax(from)?, syntax(to)?);
    if to_ts.is_encapsulated_pixel_data() {
        return Err(TranscodeError::ToCompressed {
            from: from_ts.name().to_string(),
            to: to_ts.name().to_string(),
        });
    }
    if !from_ts.is_encapsulated_pixel_data() {
        let size = (file.len() - data_start) as u64;
        if size > MAX_IN_MEMORY {
            return Err(TranscodeError::TooLargeInMemory(size));
        }
        return reencode_elements(&file[data_start..], from, to).map(|(out, _)| out);
    }
    let (object, _) = parse_for_decoding(file, from)?;
    decode_whole(object, to)
}

/// The name of the transfer syntax `object` is stored in.
fn syntax_name(object: &DefaultDicomObject) -> String {
    let uid = object.meta().transfer_syntax();
    TransferSyntaxRegistry
        .get(uid)
        .map_or_else(|| uid.to_string(), |ts| ts.name().to_string())
}

/// Whether `uid` is a syntax with encapsulated (compressed) pixel data.
pub fn syntax_is_encapsulated(uid: &str) -> bool {
    TransferSyntaxRegistry
        .get(uid)
        .is_some_and(|ts| ts.is_encapsulated_pixel_data())
}

/// Decodes the whole pixel data of `object` (encapsulated) and encodes the data set in the
/// uncompressed syntax `to`.
pub fn decode_whole(mut object: DefaultDicomObject, to: &str) -> Result<Vec<u8>, TranscodeError> {
    let to_ts = syntax(to)?;
    let name = syntax_name(&object);
    let decoded = check_decodable(&object, MAX_DECODED, false)?.decoded_size();
    guard_decoder(|| object.transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased()))?.map_err(|e| {
        TranscodeError::Decode {
            name,
            reason: e.to_string(),
        }
    })?;
    // Attributes that describe the encapsulated form only.
    object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
    let mut out = Vec::with_capacity(decoded as usize + 4096);
    encode(&object, to_ts, &mut out)?;
    Ok(out)
}

/// Decoded pixel data larger than this is decoded one frame at a time
/// ([`decode_by_frame`]) instead of whole.
pub const DECODE_WHOLE_LIMIT: u64 = 64 << 20;

/// What [`decode_by_frame`] hands out, in order: the data set's length once, then its bytes.
pub enum Decoded {
    Length(u64),
    Bytes(Vec<u8>),
}

/// Parses a stored Part-10 file with encapsulated pixel data, and tells whether it is to be
/// decoded frame by frame (multi-frame, or over [`DECODE_WHOLE_LIMIT`] decoded; else
/// [`decode_whole`] decodes it whole).
pub fn parse_for_decoding(
    file: &[u8],
    from: &str,
) -> Result<(DefaultDicomObject, bool), TranscodeError> {
    let from_ts = syntax(from)?;
    if !matches!(from_ts.codec(), Codec::EncapsulatedPixelData(Some(_), _)) {
        return Err(TranscodeError::NoDecoder {
            name: from_ts.name().to_string(),
            uid: from.to_string(),
        });
    }
    // Checked as untrusted input, although ingest checked it and its CRC-32C matched: the
    // parser reserves whatever a length declares.
    let mut object = crate::dataset::open_part10(file, MAX_IN_MEMORY)
        .map_err(|e| TranscodeError::Parse(e.to_string()))?;
    regroup_fragments(&mut object);
    // Multi-frame too: dicom-pixeldata 0.10 fails to decode some whole multi-frame RLE
    // images (DCMTK's dcmcrle output) that it decodes frame by frame.
    let image = ImageAttributes::read(&object)?;
    let by_frame = image.frames > 1 || image.decoded_size() > DECODE_WHOLE_LIMIT;
    check_decodable(&object, MAX_DECODED, by_frame)?;
    Ok((object, by_frame))
}

/// Decodes `object` (encapsulated pixel data) into a data set in the uncompressed syntax
/// `to`, one frame at a time: only one decoded frame is held, never the whole image. The
/// attributes change as in a whole decode (Photometric Interpretation MONOCHROME2 or RGB,
/// the encapsulation-only attributes dropped; Lossy Image Compression kept). `sink` gets the
/// total length first, then the bytes in order; it returns false to stop (the network side
/// is gone), and so does this function.
pub fn decode_by_frame(
    object: &DefaultDicomObject,
    to: &str,
    sink: &mut dyn FnMut(Decoded) -> bool,
) -> Result<bool, TranscodeError> {
    use crate::codec::native::{pixel_data_header, pixel_data_vr, swap_words, swaps, Native};
    use dicom_core::header::Header;
    use dicom_core::{DataElement, VR};
    use dicom_pixeldata::PixelDecoder;

    let (to_ts, to_native) = match Native::of(to) {
        Some(native) => (syntax(to)?, native),
        None => {
            return Err(TranscodeError::ToCompressed {
                from: object.meta().transfer_syntax().to_string(),
                to: to.to_string(),
            })
        }
    };
    let image = check_decodable(object, MAX_DECODED, true)?;
    let frames =
        u32::try_from(image.frames).map_err(|_| TranscodeError::Attribute("Number of Frames"))?;
    let frame_len = image.frame_size();
    let total = image.decoded_size();
    let length = u32::try_from(total).map_err(|_| TranscodeError::TooLargeToDecode(total))?;
    let bits = match image.bits_allocated {
        8 => 8,
        16 => 16,
        _ => {
            return Err(TranscodeError::Attribute(
                "Bits Allocated (8 or 16 to decode)",
            ))
        }
    };
    let corrected = match (
        image.samples_per_pixel,
        image.photometric_interpretation.as_deref(),
    ) {
        (1, Some("MONOCHROME1" | "MONOCHROME2")) => None,
        (1, _) => Some("MONOCHROME2"),
        (3, _) => Some("RGB"),
        _ => None,
    };
    let dropped = [
        tags::PIXEL_DATA,
        tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
        tags::EXTENDED_OFFSET_TABLE,
        tags::EXTENDED_OFFSET_TABLE_LENGTHS,
    ];
    let kept = || object.iter().filter(|e| !dropped.contains(&e.tag()));
    let mut before =
        InMemDicomObject::from_element_iter(kept().filter(|e| e.tag() < tags::PIXEL_DATA).cloned());
    if let Some(value) = corrected {
        before.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            value,
        ));
    }
    let after =
        InMemDicomObject::from_element_iter(kept().filter(|e| e.tag() > tags::PIXEL_DATA).cloned());
    let mut head = Vec::new();
    encode(&before, to_ts, &mut head)?;
    // Decoded samples are little endian; OW words turn around for a big-endian syntax.
    let vr = pixel_data_vr(None, bits);
    let swap = swaps(Native::ExplicitLittle, vr, to_native, vr);
    head.extend(pixel_data_header(to_native, vr, length));
    let mut tail = Vec::new();
    encode(&after, to_ts, &mut tail)?;
    let total_out = head.len() as u64 + u64::from(length) + tail.len() as u64;
    if !sink(Decoded::Length(total_out)) || !sink(Decoded::Bytes(head)) {
        return Ok(false);
    }
    let name = || syntax_name(object);
    for frame in 0..frames {
        let decoded = guard_decoder(|| object.decode_pixel_data_frame(frame))?.map_err(|e| {
            TranscodeError::Decode {
                name: name(),
                reason: format!("frame {frame}: {e}"),
            }
        })?;
        let mut bytes = decoded.into_data();
        if bytes.len() as u64 != frame_len {
            return Err(TranscodeError::Decode {
                name: name(),
                reason: format!(
                    "frame {frame} decoded to {} bytes, {frame_len} expected from the attributes",
                    bytes.len()
                ),
            });
        }
        if swap {
            swap_words(&mut bytes);
        }
        if !sink(Decoded::Bytes(bytes)) {
            return Ok(false);
        }
    }
    Ok(sink(Decoded::Bytes(tail)))
}
