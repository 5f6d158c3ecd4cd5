//! One pyramid level as a DICOM VL Whole Slide Microscopy Image (PS3.3 A.32.8): the
//! attributes of its modules, and the Part-10 file written around its encoded tiles (one
//! fragment a frame, TILED_FULL order) with a Basic Offset Table. I/O only in
//! [`write_level`], which copies the tiles from the file they were appended to.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{WsiCodec, WsiError};
use crate::online::part10_header;

/// VL Whole Slide Microscopy Image Storage.
pub const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// What every level of one slide shares.
#[derive(Debug, Clone)]
pub struct Slide {
    pub patient_id: String,
    pub patient_name: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub dimension_organization_uid: String,
    pub specimen_uid: String,
    pub container_id: String,
    /// Full-resolution pixel spacing, millimetres.
    pub spacing_mm: f64,
    pub width: u32,
    pub height: u32,
    pub tile: u32,
    pub codec: WsiCodec,
    pub quality: u8,
    /// `YYYYMMDD`, `HHMMSS`.
    pub date: String,
    pub time: String,
    /// The source's ICC profile, or sRGB's ([`super::icc::srgb`]); required of colour
    /// images in the Optical Path (PS3.3 C.8.12.5).
    pub icc_profile: Vec<u8>,
}

/// One level: which, its size and its tiles.
#[derive(Debug, Clone)]
pub struct LevelHeader {
    pub level: usize,
    pub sop_instance_uid: String,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// Bytes of the tiles as encoded, for the lossy compression ratio.
    pub encoded_bytes: u64,
}

fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    o.put(DataElement::new(tag, vr, value.into()));
}

fn strs(values: &[&str]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|s| s.to_string()).collect())
}

fn sequence(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code sequence item (value, scheme, meaning).
fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::CODE_VALUE, VR::SH, value);
    put(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put(&mut item, tags::CODE_MEANING, VR::LO, meaning);
    item
}

fn ds(value: f64) -> String {
    // DS: at most 16 characters.
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.chars().take(16).collect()
}

/// The transfer syntax of `codec`'s tiles.
pub fn transfer_syntax(codec: WsiCodec) -> &'static str {
    match codec {
        WsiCodec::Jpeg => JPEG_BASELINE,
        WsiCodec::J2k => JPEG_2000_LOSSLESS,
    }
}

/// Patient, study, series, equipment and specimen: the same on every level.
fn common(slide: &Slide, o: &mut InMemDicomObject) {
    put(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(o, tags::PATIENT_NAME, VR::PN, slide.patient_name.as_str());
    put(o, tags::PATIENT_ID, VR::LO, slide.patient_id.as_str());
    put(o, tags::PATIENT_BIRTH_DATE, VR::DA, "");
    put(o, tags::PATIENT_SEX, VR::CS, "");
    put(
        o,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        slide.study_instance_uid.as_str(),
    );
    put(o, tags::STUDY_DATE, VR::DA, slide.date.as_str());
    put(o, tags::STUDY_TIME, VR::TM, slide.time.as_str());
    put(o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put(o, tags::STUDY_ID, VR::SH, "");
    put(o, tags::ACCESSION_NUMBER, VR::SH, "");
    put(o, tags::STUDY_DESCRIPTION, VR::LO, "Whole slide image");
    put(o, tags::MODALITY, VR::CS, "SM");
    put(
        o,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        slide.series_instance_uid.as_str(),
    );
    put(o, tags::SERIES_NUMBER, VR::IS, "1");
    put(o, tags::SERIES_DESCRIPTION, VR::LO, "strata wsi import");
    put(
        o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        slide.frame_of_reference_uid.as_str(),
    );
    put(
        o,
        tags::POSITION_REFERENCE_INDICATOR,
        VR::LO,
        "SLIDE_CORNER",
    );
    put(o, tags::MANUFACTURER, VR::LO, "Strata");
    put(
        o,
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        "strata wsi import",
    );
    put(o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put(
        o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    put(
        o,
        tags::CONTAINER_IDENTIFIER,
        VR::LO,
        slide.container_id.as_str(),
    );
    sequence(o, tags::ISSUER_OF_THE_CONTAINER_IDENTIFIER_SEQUENCE, vec![]);
    sequence(
        o,
        tags::CONTAINER_TYPE_CODE_SEQUENCE,
        vec![code("433466003", "SCT", "Microscope slide")],
    );
    let mut specimen = InMemDicomObject::new_empty();
    put(
        &mut specimen,
        tags::SPECIMEN_IDENTIFIER,
        VR::LO,
        slide.container_id.as_str(),
    );
    put(
        &mut specimen,
        tags::SPECIMEN_UID,
        VR::UI,
        slide.specimen_uid.as_str(),
    );
    sequence(
        &mut specimen,
        tags::ISSUER_OF_THE_SPECIMEN_IDENTIFIER_SEQUENCE,
        vec![],
    );
    sequence(&mut specimen, tags::SPECIMEN_PREPARATION_SEQUENCE, vec![]);
    sequence(o, tags::SPECIMEN_DESCRIPTION_SEQUENCE, vec![specimen]);
    sequence(o, tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]);
    let mut path = InMemDicomObject::new_empty();
    put(&mut path, tags::OPTICAL_PATH_IDENTIFIER, VR::SH, "1");
    sequence(
        &mut path,
        tags::ILLUMINATION_TYPE_CODE_SEQUENCE,
        vec![code("111744", "DCM", "Brightfield illumination")],
    );
    sequence(
        &mut path,
        tags::ILLUMINATION_COLOR_CODE_SEQUENCE,
        vec![code("414298005", "SCT", "Full Spectrum")],
    );
    put(
        &mut path,
        tags::ICC_PROFILE,
        VR::OB,
        PrimitiveValue::U8(slide.icc_profile.clone().into()),
    );
    sequence(o, tags::OPTICAL_PATH_SEQUENCE, vec![path]);
}

/// The attributes of `level` of `slide` (all but Pixel Data).
pub fn attributes(slide: &Slide, level: &LevelHeader) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    common(slide, &mut o);
    let image_type: &[&str] = if level.level == 0 {
        &["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    } else {
        &["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    };
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, WSI_SOP_CLASS);
    put(
        &mut o,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        level.sop_instance_uid.as_str(),
    );
    put(&mut o, tags::IMAGE_TYPE, VR::CS, strs(image_type));
    put(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        (level.level + 1).to_string(),
    );
    put(&mut o, tags::CONTENT_DATE, VR::DA, slide.date.as_str());
    put(&mut o, tags::CONTENT_TIME, VR::TM, slide.time.as_str());
    let acquired = format!("{}{}", slide.date, slide.time);
    put(&mut o, tags::ACQUISITION_DATE_TIME, VR::DT, acquired);
    image_pixel(slide, level, &mut o);
    whole_slide(slide, level, image_type, &mut o);
    o
}

/// Image Pixel and the compression the tiles carry.
fn image_pixel(slide: &Slide, level: &LevelHeader, o: &mut InMemDicomObject) {
    let tile = slide.tile as u16;
    put(
        o,
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(3u16),
    );
    let photometric = match slide.codec {
        // 4:2:2 YCbCr, as the JPEG encoder writes it.
        WsiCodec::Jpeg => "YBR_FULL_422",
        // Our encoder applies the reversible colour transform to RGB.
        WsiCodec::J2k => "YBR_RCT",
    };
    put(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric);
    put(
        o,
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    put(o, tags::NUMBER_OF_FRAMES, VR::IS, level.frames.to_string());
    put(o, tags::ROWS, VR::US, PrimitiveValue::from(tile));
    put(o, tags::COLUMNS, VR::US, PrimitiveValue::from(tile));
    put(o, tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16));
    put(o, tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16));
    put(o, tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16));
    put(
        o,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    put(o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put(o, tags::SPECIMEN_LABEL_IN_IMAGE, VR::CS, "NO");
    match slide.codec {
        WsiCodec::Jpeg => {
            let raw = level.frames as f64 * (slide.tile as f64).powi(2) * 3.0;
            let ratio = raw / level.encoded_bytes.max(1) as f64;
            put(o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
            put(o, tags::LOSSY_IMAGE_COMPRESSION_RATIO, VR::DS, ds(ratio));
            put(
                o,
                tags::LOSSY_IMAGE_COMPRESSION_METHOD,
                VR::CS,
                "ISO_10918_1",
            );
        }
        WsiCodec::J2k => put(o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
    }
}

/// Whole Slide Microscopy Image, Multi-frame Functional Groups (shared only: TILED_FULL)
/// and Multi-frame Dimension.
fn whole_slide(slide: &Slide, level: &LevelHeader, image_type: &[&str], o: &mut InMemDicomObject) {
    let scale = (1u64 << level.level) as f64;
    let spacing = slide.spacing_mm * scale;
    put(
        o,
        tags::TOTAL_PIXEL_MATRIX_COLUMNS,
        VR::UL,
        PrimitiveValue::from(level.width),
    );
    put(
        o,
        tags::TOTAL_PIXEL_MATRIX_ROWS,
        VR::UL,
        PrimitiveValue::from(level.height),
    );
    put(
        o,
        tags::TOTAL_PIXEL_MATRIX_FOCAL_PLANES,
        VR::UL,
        PrimitiveValue::from(1u32),
    );
    put(
        o,
        tags::NUMBER_OF_OPTICAL_PATHS,
        VR::UL,
        PrimitiveValue::from(1u32),
    );
    put(o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "TILED_FULL");
    put(
        o,
        tags::IMAGED_VOLUME_WIDTH,
        VR::FL,
        PrimitiveValue::from((slide.width as f64 * slide.spacing_mm) as f32),
    );
    put(
        o,
        tags::IMAGED_VOLUME_HEIGHT,
        VR::FL,
        PrimitiveValue::from((slide.height as f64 * slide.spacing_mm) as f32),
    );
    put(
        o,
        tags::IMAGED_VOLUME_DEPTH,
        VR::FL,
        PrimitiveValue::from(0.001f32),
    );
    put(o, tags::FOCUS_METHOD, VR::CS, "AUTO");
    put(o, tags::EXTENDED_DEPTH_OF_FIELD, VR::CS, "NO");
    put(o, tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME");
    put(
        o,
        tags::IMAGE_ORIENTATION_SLIDE,
        VR::DS,
        strs(&["0", "-1", "0", "-1", "0", "0"]),
    );
    let mut origin = InMemDicomObject::new_empty();
    put(
        &mut origin,
        tags::X_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
        VR::DS,
        "0",
    );
    put(
        &mut origin,
        tags::Y_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
        VR::DS,
        "0",
    );
    sequence(o, tags::TOTAL_PIXEL_MATRIX_ORIGIN_SEQUENCE, vec![origin]);
    let mut measures = InMemDicomObject::new_empty();
    put(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        strs(&[&ds(spacing), &ds(spacing)]),
    );
    put(&mut measures, tags::SLICE_THICKNESS, VR::DS, "0.001");
    let mut frame_type = InMemDicomObject::new_empty();
    put(&mut frame_type, tags::FRAME_TYPE, VR::CS, strs(image_type));
    let mut path = InMemDicomObject::new_empty();
    put(&mut path, tags::OPTICAL_PATH_IDENTIFIER, VR::SH, "1");
    let mut shared = InMemDicomObject::new_empty();
    sequence(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    sequence(
        &mut shared,
        tags::WHOLE_SLIDE_MICROSCOPY_IMAGE_FRAME_TYPE_SEQUENCE,
        vec![frame_type],
    );
    sequence(
        &mut shared,
        tags::OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
        vec![path],
    );
    sequence(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
    let mut organization = InMemDicomObject::new_empty();
    put(
        &mut organization,
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        slide.dimension_organization_uid.as_str(),
    );
    sequence(o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![organization]);
    let index = |pointer: Tag| {
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            slide.dimension_organization_uid.as_str(),
        );
        put(
            &mut item,
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![pointer].into()),
        );
        put(
            &mut item,
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![tags::PLANE_POSITION_SLIDE_SEQUENCE].into()),
        );
        item
    };
    sequence(
        o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            index(tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX),
            index(tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX),
        ],
    );
}

/// Where one frame's fragment is in the written file: its value's offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlace {
    pub offset: u64,
    pub length: u64,
}

/// Writes `level` of `slide` as a Part-10 file at `path`: header, attributes, then Pixel
/// Data with a Basic Offset Table and one fragment per frame, copied from `tiles` (the
/// frames' bytes one after another, `lengths` each). Where each frame's value landed.
pub fn write_level(
    slide: &Slide,
    level: &LevelHeader,
    tiles: &Path,
    lengths: &[u32],
    path: &Path,
) -> Result<Vec<FramePlace>, WsiError> {
    let syntax_uid = transfer_syntax(slide.codec);
    let syntax = TransferSyntaxRegistry
        .get(syntax_uid)
        .ok_or_else(|| WsiError::Dicom(format!("{syntax_uid} not registered")))?;
    let mut head = part10_header(WSI_SOP_CLASS, &level.sop_instance_uid, syntax_uid, "")
        .map_err(|e| WsiError::Dicom(e.to_string()))?;
    attributes(slide, level)
        .write_dataset_with_ts(&mut head, syntax)
        .map_err(|e| WsiError::Dicom(e.to_string()))?;
    // Pixel Data, OB, undefined length; the offset table's item; then one item a frame.
    head.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    let padded = |n: u32| (n as u64 + 1) & !1;
    let total: u64 = lengths.iter().map(|&n| 8 + padded(n)).sum();
    let offsets = u32::try_from(total).is_ok();
    let table_len = if offsets { 4 * lengths.len() as u32 } else { 0 };
    head.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    head.extend_from_slice(&table_len.to_le_bytes());
    if offsets {
        let mut at = 0u64;
        for &n in lengths {
            head.extend_from_slice(&(at as u32).to_le_bytes());
            at += 8 + padded(n);
        }
    }
    let io = |e: std::io::Error| WsiError::Io(format!("{}: {e}", path.display()));
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    out.write_all(&head).map_err(io)?;
    let mut source = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(tiles)
            .map_err(|e| WsiError::Io(format!("{}: {e}", tiles.display())))?,
    );
    let mut at = head.len() as u64;
    let mut places = Vec::with_capacity(lengths.len());
    let mut buffer = Vec::new();
    for &n in lengths {
        buffer.resize(n as usize, 0);
        source.read_exact(&mut buffer).map_err(io)?;
        let length = padded(n);
        out.write_all(&[0xFE, 0xFF, 0x00, 0xE0]).map_err(io)?;
        out.write_all(&(length as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&buffer).map_err(io)?;
        if length > n as u64 {
            out.write_all(&[0]).map_err(io)?;
        }
        places.push(FramePlace {
            offset: at + 8,
            length: n as u64,
        });
        at += 8 + length;
    }
    out.write_all(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0])
        .map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(places)
}
