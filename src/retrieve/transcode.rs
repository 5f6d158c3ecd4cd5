//! Re-encodes a stored instance for a destination that does not accept its stored transfer
//! syntax: between uncompressed syntaxes by rewriting the data set, and from a compressed
//! syntax (JPEG, JPEG Lossless, JPEG 2000, HTJ2K, RLE) by decoding the pixel data first.
//!
//! Decoding never makes an image look better than it is: a lossy original keeps its Lossy
//! Image Compression marking, which travels with the rest of the data set. JPEG-LS has no
//! decoder here (dicom-rs would need the CharLS C++ library); such instances fail with that
//! reason, as does anything whose decoded pixels would exceed [`MAX_DECODED`].

use dicom_dictionary_std::tags;
use dicom_encoding::{Codec, TransferSyntaxIndex};
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Largest decoded pixel data held in memory for one instance (per prefetched instance).
pub const MAX_DECODED: u64 = 1 << 30;

/// Re-encodes `file` (a whole Part-10 file whose data set starts at `data_start`, stored in
/// transfer syntax `from`) as a data set in transfer syntax `to`.
pub fn transcode(file: &[u8], data_start: usize, from: &str, to: &str) -> Result<Vec<u8>, String> {
    let from_ts = TransferSyntaxRegistry
        .get(from)
        .ok_or_else(|| format!("unknown transfer syntax {from}"))?;
    let to_ts = TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| format!("unknown transfer syntax {to}"))?;
    if to_ts.is_encapsulated_pixel_data() {
        return Err(format!(
            "cannot convert {} to {}: only decoding to uncompressed syntaxes is supported",
            from_ts.name(),
            to_ts.name()
        ));
    }
    let mut out = Vec::with_capacity(file.len() + 1024);
    if !from_ts.is_encapsulated_pixel_data() {
        let object =
            dicom_object::InMemDicomObject::read_dataset_with_ts(&file[data_start..], from_ts)
                .map_err(|e| format!("cannot parse the stored data set: {e}"))?;
        object
            .write_dataset_with_ts(&mut out, to_ts)
            .map_err(|e| format!("cannot encode in {}: {e}", to_ts.name()))?;
        return Ok(out);
    }
    if !matches!(from_ts.codec(), Codec::EncapsulatedPixelData(Some(_), _)) {
        return Err(format!(
            "cannot decode {} ({from}): no decoder for it in this build",
            from_ts.name()
        ));
    }
    let mut object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(file)
        .map_err(|e| format!("cannot parse the stored file: {e}"))?;
    let decoded = decoded_size(&object)?;
    if decoded > MAX_DECODED {
        return Err(format!(
            "decoded pixel data would take {decoded} bytes, more than the {MAX_DECODED} allowed in memory"
        ));
    }
    object
        .transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("cannot decode {}: {e}", from_ts.name()))?;
    // Attributes that describe the encapsulated form only.
    object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE);
    object.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
    object
        .write_dataset_with_ts(&mut out, to_ts)
        .map_err(|e| format!("cannot encode in {}: {e}", to_ts.name()))?;
    Ok(out)
}

/// Rows × Columns × Samples per Pixel × frames × bytes per sample, from the attributes.
fn decoded_size(object: &dicom_object::DefaultDicomObject) -> Result<u64, String> {
    let int = |tag, name: &str, default: Option<u64>| -> Result<u64, String> {
        match object.element_opt(tag) {
            Ok(Some(e)) => e
                .to_int::<u64>()
                .map_err(|_| format!("bad {name} in the stored data set")),
            _ => default.ok_or_else(|| format!("no {name} in the stored data set")),
        }
    };
    let rows = int(tags::ROWS, "Rows", None)?;
    let columns = int(tags::COLUMNS, "Columns", None)?;
    let samples = int(tags::SAMPLES_PER_PIXEL, "Samples per Pixel", Some(1))?;
    let frames = int(tags::NUMBER_OF_FRAMES, "Number of Frames", Some(1))?.max(1);
    let bits = int(tags::BITS_ALLOCATED, "Bits Allocated", None)?;
    Ok(rows * columns * samples * frames * bits.div_ceil(8))
}
