//! Reading a received Key Object Selection document as an IOCM rejection note: its title
//! (Concept Name Code Sequence) and the instances it names (Current Requested Procedure
//! Evidence Sequence). Other Key Object Selection documents are ordinary instances.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::attributes::{scan_file, AttributeError};
use crate::model::rejection::{RejectedReference, RejectionCode, RejectionNote};

/// The largest Key Object Selection document read whole (a reference takes about 150
/// bytes: this is room for some 100 000 instances).
const NOTE_LIMIT: u64 = 16 * 1024 * 1024;

/// The rejection note in the Part-10 file at `path` (a Key Object Selection document), or
/// `None` when its title is not a rejection (CID 7011). The data set is scanned before it
/// is parsed, like every received data set. Blocking.
pub fn read_rejection_note(path: &Path) -> Result<Option<RejectionNote>, AttributeError> {
    let parse = |e: &dyn std::fmt::Display| AttributeError::Parse(e.to_string());
    let file_len = std::fs::metadata(path).map_err(|e| parse(&e))?.len();
    if file_len > NOTE_LIMIT {
        return Err(AttributeError::Parse(format!(
            "Key Object Selection document over {} MiB",
            NOTE_LIMIT >> 20
        )));
    }
    scan_file(path, None, NOTE_LIMIT)?;
    let object = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| parse(&e))?;
    note_of(&object)
}

fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim_matches([' ', '\0']).to_string())
        .unwrap_or_default()
}

fn items(object: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// The rejection note a Key Object Selection data set is, if its title is a rejection.
fn note_of(object: &InMemDicomObject) -> Result<Option<RejectionNote>, AttributeError> {
    let Some(title) = items(object, tags::CONCEPT_NAME_CODE_SEQUENCE).first() else {
        return Ok(None);
    };
    let Some(code) = RejectionCode::of(
        &text(title, tags::CODING_SCHEME_DESIGNATOR),
        &text(title, tags::CODE_VALUE),
    ) else {
        return Ok(None);
    };
    let mut references = Vec::new();
    for study in items(object, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE) {
        let study_instance_uid = text(study, tags::STUDY_INSTANCE_UID);
        for series in items(study, tags::REFERENCED_SERIES_SEQUENCE) {
            let series_instance_uid = text(series, tags::SERIES_INSTANCE_UID);
            for sop in items(series, tags::REFERENCED_SOP_SEQUENCE) {
                let sop_instance_uid = text(sop, tags::REFERENCED_SOP_INSTANCE_UID);
                if study_instance_uid.is_empty()
                    || series_instance_uid.is_empty()
                    || sop_instance_uid.is_empty()
                {
                    return Err(AttributeError::Missing(
                        "Study, Series or Referenced SOP Instance UID of the rejected evidence",
                    ));
                }
                references.push(RejectedReference {
                    study_instance_uid: study_instance_uid.clone(),
                    series_instance_uid: series_instance_uid.clone(),
                    sop_instance_uid,
                });
            }
        }
    }
    if references.is_empty() {
        return Err(AttributeError::Missing(
            "Current Requested Procedure Evidence Sequence (the rejected instances)",
        ));
    }
    Ok(Some(RejectionNote {
        sop_instance_uid: text(object, tags::SOP_INSTANCE_UID),
        code,
        references,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::mem::InMemElement;

    fn item(elements: Vec<InMemElement>) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elements)
    }

    fn text_element(tag: Tag, vr: VR, value: &str) -> InMemElement {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }

    fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    }

    fn note(scheme: &str, code: &str, sops: &[&str]) -> InMemDicomObject {
        let sops = sops
            .iter()
            .map(|uid| {
                item(vec![
                    text_element(
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        "1.2.840.10008.5.1.4.1.1.2",
                    ),
                    text_element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid),
                ])
            })
            .collect();
        item(vec![
            text_element(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.99"),
            sequence(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                vec![item(vec![
                    text_element(tags::CODE_VALUE, VR::SH, code),
                    text_element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
                ])],
            ),
            sequence(
                tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
                vec![item(vec![
                    text_element(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                    sequence(
                        tags::REFERENCED_SERIES_SEQUENCE,
                        vec![item(vec![
                            text_element(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
                            sequence(tags::REFERENCED_SOP_SEQUENCE, sops),
                        ])],
                    ),
                ])],
            ),
        ])
    }

    #[test]
    fn a_rejection_title_names_its_evidence() {
        let parsed = note_of(&note("DCM", "113037", &["1.2.3.4.5", "1.2.3.4.6"]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.code, RejectionCode::PatientSafety);
        assert_eq!(parsed.sop_instance_uid, "1.2.3.99");
        let uids: Vec<&str> = parsed
            .references
            .iter()
            .map(|r| r.sop_instance_uid.as_str())
            .collect();
        assert_eq!(uids, ["1.2.3.4.5", "1.2.3.4.6"]);
        assert_eq!(parsed.references[0].series_instance_uid, "1.2.3.4");
        assert_eq!(parsed.references[0].study_instance_uid, "1.2.3");
    }

    #[test]
    fn other_titles_are_ordinary_documents_and_empty_rejections_are_refused() {
        // 113000 "Of Interest" is a Key Object Selection title, not a rejection.
        assert_eq!(
            note_of(&note("DCM", "113000", &["1.2.3.4.5"])).unwrap(),
            None
        );
        assert!(matches!(
            note_of(&note("DCM", "113001", &[])),
            Err(AttributeError::Missing(_))
        ));
    }
}
