//! What a third-party pixel data decoder may be given. The decoders (dicom-pixeldata and
//! the transfer syntax adapters) size their output from the Image Pixel attributes and trust
//! the headers inside the fragments: an absurd Rows or an RLE header declaring four billion
//! segments makes them allocate gigabytes or panic. [`check_decodable`] reads the attributes
//! once, bounds the decoded size and checks the RLE headers (PS3.5 Annex G) first.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Why pixel data is not handed to a decoder.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("missing or invalid {0}")]
    Attribute(&'static str),
    #[error("decoded pixel data would take {0} bytes, over the limit")]
    TooLarge(u64),
    #[error("JPEG 2000 image larger than its attributes say: {0}")]
    J2kSize(String),
    #[error("RLE frame {frame}: {reason} (PS3.5 G.3)")]
    Rle { frame: usize, reason: String },
    #[error("the decoder failed on this pixel data: {0}")]
    DecoderPanicked(String),
}

/// Each frame's bitstream of encapsulated pixel data (PS3.5 A.4) from its `fragments` and
/// Basic Offset Table (`offsets`), `count` frames: all fragments for one frame; otherwise
/// split by the offset table, else one fragment per frame, else at the fragments that begin
/// a JPEG, JPEG-LS or JPEG 2000 bitstream. `Err(why)` when the frames cannot be told apart.
pub fn frame_bitstreams(
    fragments: &[Vec<u8>],
    offsets: &[u32],
    count: usize,
) -> Result<Vec<Vec<u8>>, String> {
    if fragments.is_empty() {
        return Err("no fragments".into());
    }
    // Which fragments start a frame.
    let starts: Vec<usize> = if count == 1 {
        vec![0]
    } else if offsets.len() == count {
        // Offsets count from the first fragment's item tag; each item has an 8-byte header.
        let mut position = 0u64;
        let mut at = std::collections::HashMap::new();
        for (i, fragment) in fragments.iter().enumerate() {
            at.insert(position, i);
            position += 8 + fragment.len() as u64;
        }
        offsets
            .iter()
            .map(|o| at.get(&u64::from(*o)).copied())
            .collect::<Option<_>>()
            .ok_or("the Basic Offset Table points between fragments")?
    } else if fragments.len() == count {
        (0..count).collect()
    } else {
        let begins = |f: &Vec<u8>| {
            f.starts_with(&[0xFF, 0xD8])
                || f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
                || f.starts_with(&[0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20])
        };
        let starts: Vec<usize> = (0..fragments.len())
            .filter(|&i| begins(&fragments[i]))
            .collect();
        if starts.len() != count || starts.first() != Some(&0) {
            return Err(format!(
                "{} fragments for {count} frames, no offset table, and {} begin a bitstream",
                fragments.len(),
                starts.len()
            ));
        }
        starts
    };
    if starts.windows(2).any(|w| w[0] >= w[1]) || starts.first() != Some(&0) {
        return Err("the Basic Offset Table is not in frame order".into());
    }
    let ends = starts.iter().skip(1).copied().chain([fragments.len()]);
    Ok(starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| fragments[start..end].concat())
        .collect())
}

/// Several fragments per frame and no offset table (as some encoders write multi-frame
/// images): the decoders cannot find the frames, so the fragments are regrouped one per
/// frame (PS3.5 A.4 allows both). Nothing changes when they already are one per frame, when
/// an offset table says where frames begin, or when the frames cannot be told apart (the
/// decoder then says why it fails).
pub fn regroup_fragments(object: &mut DefaultDicomObject) {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, Length, VR};
    let count = match object.element_opt(tags::NUMBER_OF_FRAMES) {
        Ok(Some(e)) => e.to_int::<usize>().unwrap_or(1),
        _ => 1,
    };
    let Ok(Some(pixel_data)) = object.element_opt(tags::PIXEL_DATA) else {
        return;
    };
    let value = pixel_data.value();
    let (Some(fragments), Some(offsets)) = (value.fragments(), value.offset_table()) else {
        return;
    };
    if count <= 1 || fragments.len() == count || offsets.len() == count {
        return;
    }
    if let Ok(frames) = frame_bitstreams(fragments, offsets, count) {
        object.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::UNDEFINED,
            PixelFragmentSequence::new(Vec::<u32>::new(), frames),
        ));
    }
}

/// Runs a third-party decoder, turning a panic into an error: on hostile input the
/// dicom-rs 0.10 adapters index past their buffers (the RLE adapter on a segment that
/// decodes short, the JPEG 2000 one on a codestream larger than Rows x Columns; fuzzing
/// found both). The checks above refuse what is known; this keeps the rest to one failed
/// instance instead of a failed worker thread or CLI.
pub fn guard_decoder<T>(decode: impl FnOnce() -> T) -> Result<T, PixelError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".into());
        PixelError::DecoderPanicked(message)
    })
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The Image Pixel attributes a decode needs (PS3.3 C.7.6.3), read once.
#[derive(Debug)]
pub struct ImageAttributes {
    pub rows: u64,
    pub columns: u64,
    pub samples_per_pixel: u64,
    /// Number of Frames, 1 when absent (or 0).
    pub frames: u64,
    pub bits_allocated: u64,
    pub photometric_interpretation: Option<String>,
}

impl ImageAttributes {
    /// Rows, Columns and Bits Allocated are required; Samples per Pixel and Number of
    /// Frames default to 1. Present but not a number is an error naming the attribute.
    pub fn read(object: &DefaultDicomObject) -> Result<Self, PixelError> {
        let int = |tag, name: &'static str, default: Option<u64>| match object.element_opt(tag) {
            Ok(Some(e)) => e.to_int::<u64>().map_err(|_| PixelError::Attribute(name)),
            _ => default.ok_or(PixelError::Attribute(name)),
        };
        let photometric_interpretation = object
            .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()));
        Ok(ImageAttributes {
            rows: int(tags::ROWS, "Rows", None)?,
            columns: int(tags::COLUMNS, "Columns", None)?,
            samples_per_pixel: int(tags::SAMPLES_PER_PIXEL, "Samples per Pixel", Some(1))?,
            frames: int(tags::NUMBER_OF_FRAMES, "Number of Frames", Some(1))?.max(1),
            bits_allocated: int(tags::BITS_ALLOCATED, "Bits Allocated", None)?,
            photometric_interpretation,
        })
    }

    /// Bytes of one decoded frame: Rows × Columns × Samples per Pixel × bytes per sample
    /// (saturating: absurd attributes give a size that is refused, never an overflow).
    pub fn frame_size(&self) -> u64 {
        [
            self.columns,
            self.samples_per_pixel,
            self.bits_allocated.div_ceil(8),
        ]
        .iter()
        .fold(self.rows, |size, n| size.saturating_mul(*n))
    }

    /// Bytes of the whole decoded pixel data.
    pub fn decoded_size(&self) -> u64 {
        self.frame_size().saturating_mul(self.frames)
    }
}

/// The attributes of `object`, checked for a decode of at most `max_decoded` bytes at a
/// time (per frame when `by_frame`), its RLE fragments' headers checked when it is RLE.
pub fn check_decodable(
    object: &DefaultDicomObject,
    max_decoded: u64,
    by_frame: bool,
) -> Result<ImageAttributes, PixelError> {
    let image = ImageAttributes::read(object)?;
    let size = if by_frame {
        image.frame_size()
    } else {
        image.decoded_size()
    };
    if size > max_decoded {
        return Err(PixelError::TooLarge(size));
    }
    let syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    if syntax == RLE_LOSSLESS {
        check_rle(object, &image)?;
    }
    if is_jpeg_2000(syntax) {
        check_j2k_sizes(object, &image)?;
    }
    Ok(image)
}

/// JPEG 2000 and High-Throughput JPEG 2000 transfer syntaxes (PS3.5 A.4.4, A.4.10).
fn is_jpeg_2000(syntax: &str) -> bool {
    matches!(
        syntax,
        "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// The fragments of encapsulated Pixel Data (none for native or absent Pixel Data).
fn pixel_fragments(object: &DefaultDicomObject) -> &[Vec<u8>] {
    object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments())
        .unwrap_or(&[])
}

/// Each JPEG 2000 codestream's image size (its SIZ marker, ISO 15444-1 A.5.1) must fit in
/// Rows x Columns x Samples per Pixel: the decoder allocates by the codestream's own size,
/// so a 32x32 image whose codestream declares 21792x23840 would otherwise take gigabytes.
fn check_j2k_sizes(object: &DefaultDicomObject, image: &ImageAttributes) -> Result<(), PixelError> {
    let fragments = pixel_fragments(object);
    for fragment in fragments.iter() {
        // SOC, then SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz (Xsiz
        // at byte 8, Csiz at 40).
        if fragment.len() < 4 + 38 || fragment[..4] != [0xFF, 0x4F, 0xFF, 0x51] {
            continue;
        }
        let at = |i: usize| {
            u64::from(u32::from_be_bytes(
                fragment[i..i + 4].try_into().expect("4 bytes"),
            ))
        };
        let (x, y, x0, y0) = (at(8), at(12), at(16), at(20));
        let components = u64::from(u16::from_be_bytes([fragment[40], fragment[41]]));
        let width = x.saturating_sub(x0);
        let height = y.saturating_sub(y0);
        if width > image.columns || height > image.rows || components > image.samples_per_pixel {
            return Err(PixelError::J2kSize(format!(
                "its codestream declares {width}x{height} with {components} components, the \
                 data set {}x{} with {}",
                image.columns, image.rows, image.samples_per_pixel
            )));
        }
    }
    Ok(())
}

/// Each RLE fragment (one per frame) starts with a 64-byte header: 1 to 15 segments, the
/// first at offset 64, offsets increasing and inside the fragment; each segment decodes to
/// at least Rows x Columns bytes.
fn check_rle(object: &DefaultDicomObject, image: &ImageAttributes) -> Result<(), PixelError> {
    let fragments = pixel_fragments(object);
    for (frame, fragment) in fragments.iter().enumerate() {
        let bad = |reason: String| PixelError::Rle { frame, reason };
        if fragment.len() < 64 {
            return Err(bad(format!(
                "{} bytes, shorter than its header",
                fragment.len()
            )));
        }
        let word =
            |i: usize| u32::from_le_bytes(fragment[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let segments = word(0) as usize;
        if !(1..=15).contains(&segments) {
            return Err(bad(format!("{segments} segments (1 to 15)")));
        }
        let mut previous = 0u32;
        let mut starts = Vec::with_capacity(segments);
        for n in 1..=segments {
            let offset = word(n);
            let first = n == 1;
            if (first && offset != 64)
                || (!first && offset <= previous)
                || offset as usize >= fragment.len()
            {
                return Err(bad(format!("segment {n} at offset {offset}")));
            }
            previous = offset;
            starts.push(offset as usize);
        }
        // Each segment must decode to a byte per pixel (dicom-rs indexes past a short one).
        let need = image.rows.saturating_mul(image.columns);
        let ends = starts.iter().skip(1).copied().chain([fragment.len()]);
        for (n, (start, end)) in starts.iter().zip(ends).enumerate() {
            let got = packbits_length(&fragment[*start..end], need);
            if got < need {
                return Err(bad(format!(
                    "segment {} decodes to {got} bytes, Rows x Columns = {need}",
                    n + 1
                )));
            }
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment (PS3.5 G.3.1) decodes to, counting up to `need`.
fn packbits_length(segment: &[u8], need: u64) -> u64 {
    let (mut at, mut out) = (0usize, 0u64);
    while at < segment.len() && out < need {
        let n = segment[at] as i8;
        at += 1;
        match n {
            0.. => {
                let literal = (n as usize + 1).min(segment.len() - at);
                out += literal as u64;
                at += literal;
            }
            -128 => {}
            _ if at < segment.len() => {
                out += (1 - i64::from(n)) as u64;
                at += 1;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::InMemDicomObject;

    fn image(elements: Vec<DataElement<InMemDicomObject>>) -> DefaultDicomObject {
        InMemDicomObject::from_element_iter(elements)
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.5")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                    .media_storage_sop_instance_uid("1.2.3"),
            )
            .unwrap()
    }

    fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, VR::US, PrimitiveValue::from(v))
    }

    #[test]
    fn image_attributes_give_frame_and_total_sizes_without_overflow() {
        let ct = image(vec![
            us(tags::ROWS, 512),
            us(tags::COLUMNS, 512),
            us(tags::BITS_ALLOCATED, 16),
            DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "3"),
        ]);
        let a = ImageAttributes::read(&ct).unwrap();
        assert_eq!((a.samples_per_pixel, a.frames), (1, 3));
        assert_eq!(a.frame_size(), 512 * 512 * 2);
        assert_eq!(a.decoded_size(), 3 * 512 * 512 * 2);

        // The largest values the attributes can hold: saturated, then refused by the caps.
        let absurd = image(vec![
            us(tags::ROWS, u16::MAX),
            us(tags::COLUMNS, u16::MAX),
            us(tags::SAMPLES_PER_PIXEL, u16::MAX),
            us(tags::BITS_ALLOCATED, u16::MAX),
            DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "2147483647"),
        ]);
        let a = ImageAttributes::read(&absurd).unwrap();
        assert_eq!(a.decoded_size(), u64::MAX);

        // Required attribute missing, or present and not a number: named.
        let no_rows = image(vec![us(tags::COLUMNS, 1), us(tags::BITS_ALLOCATED, 8)]);
        assert!(matches!(
            ImageAttributes::read(&no_rows),
            Err(PixelError::Attribute("Rows"))
        ));
        let bad_frames = image(vec![
            us(tags::ROWS, 1),
            us(tags::COLUMNS, 1),
            us(tags::BITS_ALLOCATED, 8),
            DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "many"),
        ]);
        assert!(matches!(
            ImageAttributes::read(&bad_frames),
            Err(PixelError::Attribute("Number of Frames"))
        ));
    }

    /// Found by fuzzing (fuzz/regressions/transcode): an RLE header declaring four billion
    /// segments, and a segment decoding short of Rows x Columns, made dicom-rs 0.10's RLE
    /// adapter allocate or index past its buffer.
    #[test]
    fn rle_headers_are_checked_before_a_decoder_sees_them() {
        use dicom_core::value::{PixelFragmentSequence, Value};
        let with_fragment = |fragment: Vec<u8>| {
            let pixels = Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![fragment]));
            image(vec![
                us(tags::ROWS, 2),
                us(tags::COLUMNS, 2),
                us(tags::BITS_ALLOCATED, 8),
                DataElement::new(tags::PIXEL_DATA, VR::OB, pixels),
            ])
        };
        let header = |words: &[u32]| {
            let mut h = vec![0u8; 64];
            for (i, w) in words.iter().enumerate() {
                h[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            h
        };
        // One segment at 64: a literal run of four bytes.
        let mut good = header(&[1, 64]);
        good.extend([3, 1, 2, 3, 4, 0]);
        assert!(check_decodable(&with_fragment(good.clone()), 1 << 20, false).is_ok());

        for (words, why) in [
            (vec![u32::MAX, 64], "segments"),
            (vec![0], "segments"),
            (vec![16, 64], "segments"),
            (vec![1, 63], "offset"),
            (vec![2, 64, 64], "offset"),
            (vec![2, 64, 1 << 20], "offset"),
        ] {
            let mut bad = header(&words);
            bad.extend([3, 1, 2, 3, 4, 0]);
            let refused = check_decodable(&with_fragment(bad), 1 << 20, false).unwrap_err();
            assert!(refused.to_string().contains(why), "{words:?}: {refused}");
        }
        // Three bytes for a 2 x 2 image, as a literal run and as a replicate run.
        for run in [&[2u8, 1, 2, 3][..], &[254, 7]] {
            let mut short = header(&[1, 64]);
            short.extend(run);
            let refused = check_decodable(&with_fragment(short), 1 << 20, false).unwrap_err();
            assert!(
                refused.to_string().contains("decodes to 3 bytes"),
                "{refused}"
            );
        }
        let short = check_decodable(&with_fragment(vec![1, 0, 0, 0]), 1 << 20, false);
        assert!(matches!(short, Err(PixelError::Rle { frame: 0, .. })));
        // The size bound, per frame or whole.
        assert!(matches!(
            check_decodable(&with_fragment(good), 3, false),
            Err(PixelError::TooLarge(4))
        ));
    }

    /// Found by fuzzing (fuzz/regressions/transcode): dicom-rs 0.10's JPEG 2000 adapter
    /// writes past its buffer when the codestream is larger than Rows x Columns.
    #[test]
    fn a_decoder_panic_becomes_an_error() {
        assert_eq!(guard_decoder(|| 7).unwrap(), 7);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let caught = guard_decoder(|| -> u8 { panic!("index 2050 out of range") });
        let formatted = guard_decoder(|| -> u8 { panic!("frame {}", 3) });
        std::panic::set_hook(hook);
        assert!(matches!(caught, Err(PixelError::DecoderPanicked(m)) if m.contains("2050")));
        assert!(matches!(formatted, Err(PixelError::DecoderPanicked(m)) if m == "frame 3"));
    }

    #[test]
    fn stored_frames_are_split_by_offsets_by_count_or_by_markers() {
        let jpeg = |n: u8| vec![0xFF, 0xD8, n, n];
        let tail = |n: u8| vec![n, 0xFF, 0xD9];
        // One frame: every fragment.
        assert_eq!(
            frame_bitstreams(&[jpeg(1), tail(1)], &[], 1).unwrap(),
            vec![[jpeg(1), tail(1)].concat()]
        );
        // Basic Offset Table: each item counts 8 bytes of header.
        let fragments = [jpeg(1), tail(1), jpeg(2), tail(2)];
        let both = vec![[jpeg(1), tail(1)].concat(), [jpeg(2), tail(2)].concat()];
        assert_eq!(
            frame_bitstreams(&fragments, &[0, 8 + 4 + 8 + 3], 2).unwrap(),
            both
        );
        assert!(frame_bitstreams(&fragments, &[0, 5], 2).is_err());
        // No table, two fragments per frame: split where a bitstream begins.
        assert_eq!(frame_bitstreams(&fragments, &[], 2).unwrap(), both);
        // One fragment per frame, whatever they hold (RLE has no marker).
        assert_eq!(
            frame_bitstreams(&[vec![1], vec![2]], &[], 2).unwrap(),
            vec![vec![1], vec![2]]
        );
        assert!(frame_bitstreams(&[vec![1], vec![2], vec![3]], &[], 2).is_err());
        assert!(frame_bitstreams(&[], &[], 1).is_err());
    }
}
