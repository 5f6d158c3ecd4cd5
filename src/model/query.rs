//! What a C-FIND asks of the locator, independent of DICOM encoding and of SQL.

use super::matching::Matcher;

/// Query/Retrieve level (0008,0052).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueryLevel {
    Patient,
    Study,
    Series,
    Image,
}

impl QueryLevel {
    pub fn parse(value: &str) -> Option<QueryLevel> {
        match value.trim() {
            "PATIENT" => Some(QueryLevel::Patient),
            "STUDY" => Some(QueryLevel::Study),
            "SERIES" => Some(QueryLevel::Series),
            "IMAGE" => Some(QueryLevel::Image),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueryLevel::Patient => "PATIENT",
            QueryLevel::Study => "STUDY",
            QueryLevel::Series => "SERIES",
            QueryLevel::Image => "IMAGE",
        }
    }
}

/// An indexed attribute that can be matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    PatientId,
    IssuerOfPatientId,
    PatientName,
    PatientBirthDate,
    PatientSex,
    StudyInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    StudyId,
    StudyDescription,
    ReferringPhysicianName,
    SeriesInstanceUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    BodyPartExamined,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
    /// Computed from the study's series; matchable at STUDY level.
    ModalitiesInStudy,
}

impl Attribute {
    /// The level whose entity holds the attribute.
    pub fn level(self) -> QueryLevel {
        use Attribute::*;
        match self {
            PatientId | IssuerOfPatientId | PatientName | PatientBirthDate | PatientSex => {
                QueryLevel::Patient
            }
            StudyInstanceUid
            | StudyDate
            | StudyTime
            | AccessionNumber
            | StudyId
            | StudyDescription
            | ReferringPhysicianName
            | ModalitiesInStudy => QueryLevel::Study,
            SeriesInstanceUid | Modality | SeriesNumber | SeriesDescription | BodyPartExamined => {
                QueryLevel::Series
            }
            SopInstanceUid | SopClassUid | InstanceNumber => QueryLevel::Image,
        }
    }
}

/// One C-FIND as the locator sees it.
#[derive(Debug, Clone)]
pub struct FindQuery {
    pub level: QueryLevel,
    pub conditions: Vec<(Attribute, Matcher)>,
    /// Person names match regardless of case.
    pub case_insensitive_names: bool,
    /// StudyDate and StudyTime ranges match as one date-time range (negotiated per
    /// association, PS3.4 C.5.1.1.2).
    pub combined_datetime: bool,
    /// Instance Availability was asked for: find the tiers below each match.
    pub availability: bool,
    /// Which computed attributes were asked for; the rest are not computed.
    pub computed: ComputedKeys,
    /// At most this many rows are returned (plus one, to tell that there were more).
    pub limit: usize,
}

/// The computed return keys a C-FIND asks for, so that only those cost a subquery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputedKeys {
    /// Number of Patient/Study/Series Related Studies, Series, Instances.
    pub related_counts: bool,
    /// Modalities in Study.
    pub modalities: bool,
    /// SOP Classes in Study.
    pub sop_classes: bool,
}

impl ComputedKeys {
    pub fn any(self) -> bool {
        self.related_counts || self.modalities || self.sop_classes
    }
}

impl FindQuery {
    /// What the query asks, for the audit: its level and each matching key with its value
    /// (`STUDY PatientId=123 StudyDate=20240101-`); universal keys left out.
    pub fn describe(&self) -> String {
        let mut text = self.level.as_str().to_string();
        for (attribute, matcher) in &self.conditions {
            let value = match matcher {
                Matcher::Universal => continue,
                Matcher::Single(v) | Matcher::Wildcard(v) => v.clone(),
                Matcher::UidList(list) => list.join("\\"),
                Matcher::Range { low, high } => format!(
                    "{}-{}",
                    low.as_deref().unwrap_or(""),
                    high.as_deref().unwrap_or("")
                ),
            };
            text.push_str(&format!(" {attribute:?}={value}"));
        }
        text
    }

    /// The one study the query names by its UID, if it does.
    pub fn study_instance_uid(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find_map(|(attribute, matcher)| match (attribute, matcher) {
                (Attribute::StudyInstanceUid, Matcher::Single(uid)) => Some(uid.as_str()),
                (Attribute::StudyInstanceUid, Matcher::UidList(list)) if list.len() == 1 => {
                    Some(list[0].as_str())
                }
                _ => None,
            })
    }
}
