//! Reading the attributes the locator indexes from a stored Part-10 file.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use std::io::Read;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTable;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::dataset::{budget, read_file_meta, scan, ScanEnd};

use crate::model::{
    IndexedAttributes, InstanceAttributes, PatientAttributes, SeriesAttributes, StudyAttributes,
};

/// Why a file's attributes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AttributeError {
    #[error("cannot parse the data set: {0}")]
    Parse(String),
    #[error("required attribute {0} is missing or empty")]
    Missing(&'static str),
    #[error("{name} {value:?} is not a valid UID (PS3.5 9.1): it {problem}")]
    BadUid {
        name: &'static str,
        /// The value, cut to 80 characters.
        value: String,
        problem: crate::model::uid::UidError,
    },
}

/// Every attribute the locator indexes, and the image dimensions the Pixel Data check needs
/// (up to Bits Allocated, (0028,0100)), sit below this tag. Reading stops here, so large
/// elements after it (LUT data, pixel data, encapsulated documents, vendor blobs in higher
/// groups) are never loaded to index an instance.
const STOP_AT: Tag = Tag(0x0028, 0x0101);

/// Bytes of data set before [`STOP_AT`] we are willing to look through.
const HEADER_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads the attributes below [`STOP_AT`] from a Part-10 file and extracts the indexed ones,
/// decoding text with the data set's Specific Character Set. The data set is scanned first,
/// so hostile nesting is refused instead of overflowing the stack. Blocking.
pub fn read_attributes(path: &Path) -> Result<IndexedAttributes, AttributeError> {
    read_attributes_checking(path, None)
}

/// [`read_attributes`], and with `native_pixel_bytes` (the declared length of native Pixel
/// Data, when known) the check that it holds what the image's dimensions need.
fn read_attributes_checking(
    path: &Path,
    native_pixel_bytes: Option<u64>,
) -> Result<IndexedAttributes, AttributeError> {
    scan_file(path, Some(STOP_AT), HEADER_LIMIT)?;
    let object = OpenFileOptions::new()
        .read_until(STOP_AT)
        .open_file(path)
        .map_err(|e| AttributeError::Parse(error_chain(&e)))?;
    check_pixel_data(&object, native_pixel_bytes)?;
    extract(&object)
}

/// Checks the data set of the Part-10 file at `path` (up to `stop`, within `limit` bytes)
/// before anything parses it: hostile nesting or lengths are refused, not followed.
pub(super) fn scan_file(path: &Path, stop: Option<Tag>, limit: u64) -> Result<(), AttributeError> {
    let parse = |e: &dyn std::fmt::Display| AttributeError::Parse(e.to_string());
    let file = std::fs::File::open(path).map_err(|e| parse(&e))?;
    let file_len = file.metadata().map_err(|e| parse(&e))?.len();
    let mut file = std::io::BufReader::new(file);
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble).map_err(|e| parse(&e))?;
    let meta = read_file_meta(&mut file).map_err(|e| parse(&e))?;
    let ts = transfer_syntax(&meta)?;
    match scan(file, ts, stop, budget(ts, limit, file_len)) {
        Ok(ScanEnd::ReachedStop | ScanEnd::End) => Ok(()),
        Ok(ScanEnd::Truncated) => Err(AttributeError::Parse("data set is truncated".into())),
        Err(e) => Err(parse(&e)),
    }
}

/// Like [`read_attributes`], but parses `head` (the first bytes of the file, preamble
/// included) when a scan shows it holds everything below [`STOP_AT`]: when it is the whole
/// file, or when the stop tag is reached inside it. Otherwise reads the file.
pub fn read_attributes_with_head(
    path: &Path,
    head: &[u8],
    file_length: u64,
    native_pixel_bytes: Option<u64>,
) -> Result<IndexedAttributes, AttributeError> {
    let whole_file = head.len() as u64 == file_length;
    let Some(data_set) = head.get(128..) else {
        return read_attributes_checking(path, native_pixel_bytes);
    };
    let mut cursor = std::io::Cursor::new(data_set);
    let Ok(meta) = read_file_meta(&mut cursor) else {
        return read_attributes_checking(path, native_pixel_bytes);
    };
    let ts = transfer_syntax(&meta)?;
    let data_set = &data_set[cursor.position() as usize..];
    // Usually the head holds the whole header: one parse gives the indexed attributes and
    // the metadata.
    if let Some(object) = whole_header(head, data_set, ts, whole_file) {
        check_pixel_data(&object, native_pixel_bytes)?;
        let mut attributes = extract(&object)?;
        let json = crate::codec::json::data_set(&object);
        attributes.metadata = serde_json::to_string(&json).ok();
        return Ok(attributes);
    }
    let rest = data_set.to_vec();
    let limit = budget(ts, HEADER_LIMIT, rest.len() as u64);
    match scan(std::io::Cursor::new(rest), ts, Some(STOP_AT), limit) {
        Ok(ScanEnd::ReachedStop) => {}
        Ok(ScanEnd::End) if whole_file => {}
        Err(e) if whole_file => return Err(AttributeError::Parse(e.to_string())),
        // Cut short by the head's size: the file is the authority.
        _ => return read_attributes_checking(path, native_pixel_bytes),
    }
    let object = OpenFileOptions::new()
        .read_until(STOP_AT)
        .read_preamble(ReadPreamble::Always)
        .from_reader(head)
        .map_err(|e| AttributeError::Parse(error_chain(&e)))?;
    check_pixel_data(&object, native_pixel_bytes)?;
    extract(&object)
}

/// Native Pixel Data of `declared` bytes must hold Rows x Columns x Samples per Pixel x
/// Bits Allocated x Number of Frames bits (PS3.5 8.1.1; two samples for YBR_FULL_422): a
/// shorter one is a broken image, whatever its element structure says. Nothing to check
/// without the dimensions.
fn check_pixel_data(
    object: &DefaultDicomObject,
    declared: Option<u64>,
) -> Result<(), AttributeError> {
    let Some(declared) = declared else {
        return Ok(());
    };
    let number = |tag: Tag| -> Option<u64> {
        object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .and_then(|v| v.trim_matches(|c: char| c == ' ' || c == '\0').parse().ok())
    };
    let (Some(rows), Some(columns), Some(bits)) = (
        number(tags::ROWS),
        number(tags::COLUMNS),
        number(tags::BITS_ALLOCATED),
    ) else {
        return Ok(());
    };
    let samples = number(tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1);
    // YBR_FULL_422 keeps two samples per pixel, not three (PS3.3 C.7.6.3.1.2).
    let photometric = text_of(object, tags::PHOTOMETRIC_INTERPRETATION);
    let samples = if photometric == "YBR_FULL_422" {
        samples.min(2)
    } else {
        samples
    };
    let frames = number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let needed = rows
        .saturating_mul(columns)
        .saturating_mul(samples)
        .saturating_mul(frames)
        .saturating_mul(bits)
        .div_ceil(8);
    if declared < needed {
        return Err(AttributeError::Parse(format!(
            "Pixel Data holds {declared} bytes; {rows} rows x {columns} columns x {samples} \
             samples x {bits} bits x {frames} frames need {needed}"
        )));
    }
    Ok(())
}

fn transfer_syntax(
    meta: &FileMetaTable,
) -> Result<&'static dicom_encoding::TransferSyntax, AttributeError> {
    let uid = meta.transfer_syntax().trim_end_matches(['\0', ' ']);
    TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| AttributeError::Parse(format!("unknown transfer syntax {uid}")))
}

/// The text value of a standard element, also when an anonymiser rewrote it with VR UN
/// (PS3.5 6.2.2): its bytes are then the value as the standard VR would encode it (text
/// VRs only here; a name in another character set than UTF-8 or ASCII is kept lossily).
fn text_of(object: &DefaultDicomObject, tag: Tag) -> String {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| {
            if e.vr() == dicom_core::VR::UN {
                e.to_bytes()
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            } else {
                e.to_str().ok().map(|v| v.into_owned())
            }
        })
        .map(|v| v.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
        .unwrap_or_default()
}

fn extract(object: &DefaultDicomObject) -> Result<IndexedAttributes, AttributeError> {
    let text = |tag: Tag| text_of(object, tag);
    let integer = |tag: Tag| text(tag).parse::<i64>().ok();
    let required = |tag: Tag, name: &'static str| {
        let v = text(tag);
        if v.is_empty() {
            Err(AttributeError::Missing(name))
        } else {
            Ok(v)
        }
    };
    // UIDs name folders, containers and volume members downstream: only real UIDs pass.
    let uid = |tag: Tag, name: &'static str| {
        let v = required(tag, name)?;
        match crate::model::uid::check(&v) {
            Ok(valid) => {
                if valid.leading_zero {
                    tracing::warn!(attribute = name, value = %v, "UID with a leading zero in a component (not standard; accepted)");
                }
                Ok(v)
            }
            Err(problem) => Err(AttributeError::BadUid {
                name,
                value: v.chars().take(80).collect(),
                problem,
            }),
        }
    };
    Ok(IndexedAttributes {
        patient: PatientAttributes {
            patient_id: text(tags::PATIENT_ID),
            issuer_of_patient_id: text(tags::ISSUER_OF_PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            patient_sex: text(tags::PATIENT_SEX),
        },
        study: StudyAttributes {
            study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_id: text(tags::STUDY_ID),
            study_description: text(tags::STUDY_DESCRIPTION),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
        },
        series: SeriesAttributes {
            series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            modality: text(tags::MODALITY),
            series_number: integer(tags::SERIES_NUMBER),
            series_description: text(tags::SERIES_DESCRIPTION),
            body_part_examined: text(tags::BODY_PART_EXAMINED),
        },
        instance: InstanceAttributes {
            sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            sop_class_uid: uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
            instance_number: integer(tags::INSTANCE_NUMBER),
            specific_character_set: text(tags::SPECIFIC_CHARACTER_SET),
        },
        metadata: None,
    })
}

/// The metadata (DICOM JSON of the data set below Pixel Data) of a Part-10 file whose first
/// bytes are `head` (`whole_file`: all of it), for an instance stored without: `None` when
/// the head does not hold the whole header or it does not parse. Blocking.
pub fn metadata_from_head(head: &[u8], whole_file: bool) -> Option<String> {
    let mut cursor = std::io::Cursor::new(head.get(128..)?);
    let meta = read_file_meta(&mut cursor).ok()?;
    let ts = transfer_syntax(&meta).ok()?;
    let data_set = &head[128 + cursor.position() as usize..];
    let object = whole_header(head, data_set, ts, whole_file)?;
    serde_json::to_string(&crate::codec::json::data_set(&object)).ok()
}

/// The data set below Pixel Data, parsed, when `data_set` (the bytes after the file meta,
/// in `ts`) holds all of it and it scans and parses cleanly; `None` otherwise (a header
/// longer than the head, a flaw after the indexed attributes): then the attributes come
/// from the shorter parse, without metadata, which is never a reason to refuse an instance.
fn whole_header(
    head: &[u8],
    data_set: &[u8],
    ts: &dicom_encoding::TransferSyntax,
    whole_file: bool,
) -> Option<DefaultDicomObject> {
    let rest = data_set.to_vec();
    let limit = budget(ts, HEADER_LIMIT, rest.len() as u64);
    match scan(
        std::io::Cursor::new(rest),
        ts,
        Some(tags::PIXEL_DATA),
        limit,
    ) {
        Ok(ScanEnd::ReachedStop) => {}
        Ok(ScanEnd::End) if whole_file => {}
        _ => return None,
    }
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .read_preamble(ReadPreamble::Always)
        .from_reader(head)
        .ok()
}

/// One line with every cause, for logs and Error Comment.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    /// Writes a small CT-like file; `filler` bytes of a private element sit before Pixel Data.
    fn write_file(path: &Path, filler: usize) {
        let mut obj = InMemDicomObject::new_empty();
        let mut put =
            |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
        put(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5");
        put(tags::PATIENT_NAME, VR::PN, "张^伟");
        put(tags::PATIENT_ID, VR::LO, "P7");
        put(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        put(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4");
        obj.put(DataElement::new(
            Tag(0x0029, 0x1010),
            VR::OB,
            PrimitiveValue::from(vec![0x55u8; filler]),
        ));
        // After the private element: must still be indexed when the head is too short.
        obj.put(DataElement::new(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from("42"),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![0u8; 512]),
        ));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                    .media_storage_sop_instance_uid("1.2.3.4.5")
                    .transfer_syntax("1.2.840.10008.1.2.1"),
            )
            .unwrap();
        file.write_to_file(path).unwrap();
    }

    fn head_of(path: &Path) -> (Vec<u8>, u64) {
        let bytes = std::fs::read(path).unwrap();
        let head = bytes[..bytes.len().min(crate::online::HEAD_LEN)].to_vec();
        (head, bytes.len() as u64)
    }

    #[test]
    fn head_parse_matches_file_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.dcm");
        write_file(&path, 100);
        let (head, len) = head_of(&path);
        let mut from_head = read_attributes_with_head(&path, &head, len, None).unwrap();
        // The head also gives the metadata (the whole header, as DICOM JSON).
        let metadata = from_head.metadata.take().expect("metadata from the head");
        let json: serde_json::Value = serde_json::from_str(&metadata).unwrap();
        assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "张^伟");
        assert_eq!(json["00080005"]["Value"][0], "ISO_IR 192");
        assert_eq!(from_head, read_attributes(&path).unwrap());
        assert_eq!(from_head.patient.patient_name, "张^伟");
        assert_eq!(from_head.instance.instance_number, Some(42));
    }

    #[test]
    fn header_longer_than_the_head_is_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big-header.dcm");
        write_file(&path, 100_000);
        let (head, len) = head_of(&path);
        assert!((head.len() as u64) < len);
        let attributes = read_attributes_with_head(&path, &head, len, None).unwrap();
        assert_eq!(attributes.instance.instance_number, Some(42));
        assert_eq!(attributes.series.series_instance_uid, "1.2.3.4");
        // Metadata only comes from a head that holds the whole header.
        assert_eq!(attributes.metadata, None);
    }
}
