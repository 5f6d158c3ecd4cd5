//! Reading the attributes the locator indexes from a stored Part-10 file.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

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
}

/// Reads everything up to Pixel Data and extracts the indexed attributes, decoding text with
/// the data set's Specific Character Set. Blocking.
pub fn read_attributes(path: &Path) -> Result<IndexedAttributes, AttributeError> {
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| AttributeError::Parse(error_chain(&e)))?;
    extract(&object)
}

fn extract(object: &DefaultDicomObject) -> Result<IndexedAttributes, AttributeError> {
    let text = |tag: Tag| -> String {
        object
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
            .unwrap_or_default()
    };
    let integer = |tag: Tag| text(tag).parse::<i64>().ok();
    let required = |tag: Tag, name: &'static str| {
        let v = text(tag);
        if v.is_empty() {
            Err(AttributeError::Missing(name))
        } else {
            Ok(v)
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
            study_instance_uid: required(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_id: text(tags::STUDY_ID),
            study_description: text(tags::STUDY_DESCRIPTION),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
        },
        series: SeriesAttributes {
            series_instance_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            modality: text(tags::MODALITY),
            series_number: integer(tags::SERIES_NUMBER),
            series_description: text(tags::SERIES_DESCRIPTION),
            body_part_examined: text(tags::BODY_PART_EXAMINED),
        },
        instance: InstanceAttributes {
            sop_instance_uid: required(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            sop_class_uid: required(tags::SOP_CLASS_UID, "SOPClassUID")?,
            instance_number: integer(tags::INSTANCE_NUMBER),
            specific_character_set: text(tags::SPECIFIC_CHARACTER_SET),
        },
    })
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
