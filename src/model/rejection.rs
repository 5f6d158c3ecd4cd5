//! IOCM rejection notes (IHE RAD Imaging Object Change Management): a Key Object Selection
//! document (PS3.3 A.35.4) whose Concept Name is one of the rejection titles of PS3.16 CID
//! 7011 names instances that are to disappear at once and be deleted later.

use serde::Serialize;

/// Key Object Selection Document Storage.
pub const KEY_OBJECT_SELECTION: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// The document titles of CID 7011 "Rejected for Quality Reasons" and its siblings (coding
/// scheme DCM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RejectionCode {
    /// 113001
    Quality,
    /// 113037
    PatientSafety,
    /// 113038
    IncorrectWorklistEntry,
    /// 113039
    RetentionExpired,
}

impl RejectionCode {
    const ALL: [RejectionCode; 4] = [
        RejectionCode::Quality,
        RejectionCode::PatientSafety,
        RejectionCode::IncorrectWorklistEntry,
        RejectionCode::RetentionExpired,
    ];

    /// The title with Code Value `value` in Coding Scheme Designator `scheme`, if it is a
    /// rejection title.
    pub fn of(scheme: &str, value: &str) -> Option<RejectionCode> {
        if scheme != "DCM" {
            return None;
        }
        Self::ALL.into_iter().find(|c| c.code() == value)
    }

    /// Code Value (0008,0100).
    pub fn code(self) -> &'static str {
        match self {
            RejectionCode::Quality => "113001",
            RejectionCode::PatientSafety => "113037",
            RejectionCode::IncorrectWorklistEntry => "113038",
            RejectionCode::RetentionExpired => "113039",
        }
    }

    /// Code Meaning (0008,0104).
    pub fn meaning(self) -> &'static str {
        match self {
            RejectionCode::Quality => "Rejected for Quality Reasons",
            RejectionCode::PatientSafety => "Rejected for Patient Safety Reasons",
            RejectionCode::IncorrectWorklistEntry => "Incorrect Modality Worklist Entry",
            RejectionCode::RetentionExpired => "Data Retention Policy Expired",
        }
    }
}

/// One instance a rejection note names (Current Requested Procedure Evidence Sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedReference {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// A received rejection note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionNote {
    /// The note's own SOP Instance UID.
    pub sop_instance_uid: String,
    pub code: RejectionCode,
    pub references: Vec<RejectedReference>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cid_7011_titles_in_dcm_are_rejections() {
        assert_eq!(
            RejectionCode::of("DCM", "113001"),
            Some(RejectionCode::Quality)
        );
        assert_eq!(
            RejectionCode::of("DCM", "113039"),
            Some(RejectionCode::RetentionExpired)
        );
        // Key Object Selection titles that are not rejections, and another scheme.
        assert_eq!(RejectionCode::of("DCM", "113000"), None);
        assert_eq!(RejectionCode::of("99LOCAL", "113001"), None);
    }
}
