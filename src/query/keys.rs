//! Which DICOM attribute is which indexed column, and the attributes computed per match.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use crate::locator::find::FindRow;
use crate::model::query::{Attribute, QueryLevel};

/// The indexed attribute behind a tag, if any.
pub fn attribute_for(tag: Tag) -> Option<Attribute> {
    use Attribute::*;
    Some(match tag {
        tags::PATIENT_ID => PatientId,
        tags::ISSUER_OF_PATIENT_ID => IssuerOfPatientId,
        tags::PATIENT_NAME => PatientName,
        tags::PATIENT_BIRTH_DATE => PatientBirthDate,
        tags::PATIENT_SEX => PatientSex,
        tags::STUDY_INSTANCE_UID => StudyInstanceUid,
        tags::STUDY_DATE => StudyDate,
        tags::STUDY_TIME => StudyTime,
        tags::ACCESSION_NUMBER => AccessionNumber,
        tags::STUDY_ID => StudyId,
        tags::STUDY_DESCRIPTION => StudyDescription,
        tags::REFERRING_PHYSICIAN_NAME => ReferringPhysicianName,
        tags::SERIES_INSTANCE_UID => SeriesInstanceUid,
        tags::MODALITY => Modality,
        tags::SERIES_NUMBER => SeriesNumber,
        tags::SERIES_DESCRIPTION => SeriesDescription,
        tags::BODY_PART_EXAMINED => BodyPartExamined,
        tags::SOP_INSTANCE_UID => SopInstanceUid,
        tags::SOP_CLASS_UID => SopClassUid,
        tags::INSTANCE_NUMBER => InstanceNumber,
        _ => return None,
    })
}

/// The stored value of an attribute in a match.
pub fn value(row: &FindRow, attribute: Attribute) -> String {
    use Attribute::*;
    let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    match attribute {
        PatientId => row.patient.patient_id.clone(),
        IssuerOfPatientId => row.patient.issuer_of_patient_id.clone(),
        PatientName => row.patient.patient_name.clone(),
        PatientBirthDate => row.patient.patient_birth_date.clone(),
        PatientSex => row.patient.patient_sex.clone(),
        StudyInstanceUid => row.study.study_instance_uid.clone(),
        StudyDate => row.study.study_date.clone(),
        StudyTime => row.study.study_time.clone(),
        AccessionNumber => row.study.accession_number.clone(),
        StudyId => row.study.study_id.clone(),
        StudyDescription => row.study.study_description.clone(),
        ReferringPhysicianName => row.study.referring_physician_name.clone(),
        SeriesInstanceUid => row.series.series_instance_uid.clone(),
        Modality => row.series.modality.clone(),
        SeriesNumber => number(row.series.series_number),
        SeriesDescription => row.series.series_description.clone(),
        BodyPartExamined => row.series.body_part_examined.clone(),
        SopInstanceUid => row.instance.sop_instance_uid.clone(),
        SopClassUid => row.instance.sop_class_uid.clone(),
        InstanceNumber => number(row.instance.instance_number),
        ModalitiesInStudy => row.modalities.join("\\"),
    }
}

/// Return keys computed from the index rather than stored (PS3.4 C.3.4, C.6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    NumberOfPatientRelatedStudies,
    NumberOfPatientRelatedSeries,
    NumberOfPatientRelatedInstances,
    NumberOfStudyRelatedSeries,
    NumberOfStudyRelatedInstances,
    NumberOfSeriesRelatedInstances,
    ModalitiesInStudy,
    SopClassesInStudy,
}

impl Computed {
    pub fn for_tag(tag: Tag) -> Option<Computed> {
        use Computed::*;
        Some(match tag {
            tags::NUMBER_OF_PATIENT_RELATED_STUDIES => NumberOfPatientRelatedStudies,
            tags::NUMBER_OF_PATIENT_RELATED_SERIES => NumberOfPatientRelatedSeries,
            tags::NUMBER_OF_PATIENT_RELATED_INSTANCES => NumberOfPatientRelatedInstances,
            tags::NUMBER_OF_STUDY_RELATED_SERIES => NumberOfStudyRelatedSeries,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES => NumberOfStudyRelatedInstances,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES => NumberOfSeriesRelatedInstances,
            tags::MODALITIES_IN_STUDY => ModalitiesInStudy,
            tags::SOP_CLASSES_IN_STUDY => SopClassesInStudy,
            _ => return None,
        })
    }

    /// The value for a match (several joined by `\\`); empty where the level does not
    /// define it.
    pub fn value(self, row: &FindRow, level: QueryLevel) -> String {
        use Computed::*;
        let count = |n: u64, at: QueryLevel| {
            if level == at {
                n.to_string()
            } else {
                String::new()
            }
        };
        let list = |values: &[String]| {
            if level == QueryLevel::Study {
                values.join("\\")
            } else {
                String::new()
            }
        };
        match self {
            NumberOfPatientRelatedStudies => count(row.related_studies, QueryLevel::Patient),
            NumberOfPatientRelatedSeries => count(row.related_series, QueryLevel::Patient),
            NumberOfPatientRelatedInstances => count(row.related_instances, QueryLevel::Patient),
            NumberOfStudyRelatedSeries => count(row.related_series, QueryLevel::Study),
            NumberOfStudyRelatedInstances => count(row.related_instances, QueryLevel::Study),
            NumberOfSeriesRelatedInstances => count(row.related_instances, QueryLevel::Series),
            ModalitiesInStudy => list(&row.modalities),
            SopClassesInStudy => list(&row.sop_classes),
        }
    }

    /// The VR of the element, whatever the requestor sent.
    pub fn vr(self) -> VR {
        match self {
            Computed::ModalitiesInStudy => VR::CS,
            Computed::SopClassesInStudy => VR::UI,
            _ => VR::IS,
        }
    }
}
