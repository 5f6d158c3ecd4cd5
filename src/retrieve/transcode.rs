//! Re-encodes a stored instance for a destination that does not accept its stored transfer
//! syntax: between uncompressed syntaxes by rewriting the data set, and from a compressed
//! syntax (JPEG, JPEG Lossless, JPEG 2000, HTJ2K, RLE) by decoding the pixel data first.
//!
//! Decoding never makes an image look better than it is: a lossy original keeps its Lossy
//! Image Compression marking, which travels with the rest of the data set. JPEG-LS has no
//! decoder here (dicom-rs would need the CharLS C++ library); such instances fail with that
//! reason, as does anything whose decoded pixels would exceed [`MAX_DECODED`], and an
//! uncompressed data set over [`MAX_IN_MEMORY`] that cannot be re-encoded as a stream.

use dicom_dictionary_std::tags;
use dicom_encoding::{Codec, TransferSyntax, TransferSyntaxIndex};
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::InMemDicomObject;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Largest decoded pixel data held in memory for one instance (per prefetched instance).
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
    if !matches!(from_ts.codec(), Codec::EncapsulatedPixelData(Some(_), _)) {
        return Err(TranscodeError::NoDecoder {
            name: from_ts.name().to_string(),
            uid: from.to_string(),
        });
    }
    let mut object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(file)
        .map_err(|e| TranscodeError::Parse(e.to_string()))?;
    let decoded = decoded_size(&object)?;
    if decoded > MAX_DECODED {
        return Err(TranscodeError::TooLargeToDecode(decoded));
    }
    object
        .transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| TranscodeError::Decode {
            name: from_ts.name().to_string(),
            reason: e.to_string(),
        })?;
    // Attributes that describe the encapsulated form only.
    object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
    let mut out = Vec::with_capacity(file.len() + 1024);
    encode(&object, to_ts, &mut out)?;
    Ok(out)
}

/// Rows × Columns × Samples per Pixel × frames × bytes per sample, from the attributes.
fn decoded_size(object: &dicom_object::DefaultDicomObject) -> Result<u64, TranscodeError> {
    let int = |tag, name: &'static str, default: Option<u64>| -> Result<u64, TranscodeError> {
        match object.element_opt(tag) {
            Ok(Some(e)) => e
                .to_int::<u64>()
                .map_err(|_| TranscodeError::Attribute(name)),
            _ => default.ok_or(TranscodeError::Attribute(name)),
        }
    };
    let rows = int(tags::ROWS, "Rows", None)?;
    let columns = int(tags::COLUMNS, "Columns", None)?;
    let samples = int(tags::SAMPLES_PER_PIXEL, "Samples per Pixel", Some(1))?;
    let frames = int(tags::NUMBER_OF_FRAMES, "Number of Frames", Some(1))?.max(1);
    let bits = int(tags::BITS_ALLOCATED, "Bits Allocated", None)?;
    Ok(rows * columns * samples * frames * bits.div_ceil(8))
}
