//! Corrections (issue #18, item 5): the patient and study attributes an admin may change
//! after the fact (`strata update`), or that a re-sent object changes under
//! `duplicate_policy = overwrite`. The index takes the new values; stored bytes stay as
//! received (the original stays provable) and retrieves answer with the index's values
//! (`retrieve::coerce`).

use super::{PatientAttributes, StudyAttributes};

/// The level an attribute belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Patient,
    Study,
}

/// An attribute a correction may change, in tag order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attribute {
    StudyDate,
    StudyTime,
    AccessionNumber,
    ReferringPhysicianName,
    StudyDescription,
    PatientName,
    PatientID,
    IssuerOfPatientID,
    PatientBirthDate,
    PatientSex,
    StudyID,
}

/// Every attribute, in tag order.
pub const ATTRIBUTES: [Attribute; 11] = [
    Attribute::StudyDate,
    Attribute::StudyTime,
    Attribute::AccessionNumber,
    Attribute::ReferringPhysicianName,
    Attribute::StudyDescription,
    Attribute::PatientName,
    Attribute::PatientID,
    Attribute::IssuerOfPatientID,
    Attribute::PatientBirthDate,
    Attribute::PatientSex,
    Attribute::StudyID,
];

impl Attribute {
    /// The keyword of PS3.6.
    pub fn keyword(self) -> &'static str {
        match self {
            Attribute::StudyDate => "StudyDate",
            Attribute::StudyTime => "StudyTime",
            Attribute::AccessionNumber => "AccessionNumber",
            Attribute::ReferringPhysicianName => "ReferringPhysicianName",
            Attribute::StudyDescription => "StudyDescription",
            Attribute::PatientName => "PatientName",
            Attribute::PatientID => "PatientID",
            Attribute::IssuerOfPatientID => "IssuerOfPatientID",
            Attribute::PatientBirthDate => "PatientBirthDate",
            Attribute::PatientSex => "PatientSex",
            Attribute::StudyID => "StudyID",
        }
    }

    /// The attribute of a keyword.
    pub fn from_keyword(keyword: &str) -> Option<Attribute> {
        ATTRIBUTES.into_iter().find(|a| a.keyword() == keyword)
    }

    /// (group, element).
    pub fn tag(self) -> (u16, u16) {
        match self {
            Attribute::StudyDate => (0x0008, 0x0020),
            Attribute::StudyTime => (0x0008, 0x0030),
            Attribute::AccessionNumber => (0x0008, 0x0050),
            Attribute::ReferringPhysicianName => (0x0008, 0x0090),
            Attribute::StudyDescription => (0x0008, 0x1030),
            Attribute::PatientName => (0x0010, 0x0010),
            Attribute::PatientID => (0x0010, 0x0020),
            Attribute::IssuerOfPatientID => (0x0010, 0x0021),
            Attribute::PatientBirthDate => (0x0010, 0x0030),
            Attribute::PatientSex => (0x0010, 0x0040),
            Attribute::StudyID => (0x0020, 0x0010),
        }
    }

    /// The value representation.
    pub fn vr(self) -> &'static str {
        match self {
            Attribute::StudyDate | Attribute::PatientBirthDate => "DA",
            Attribute::StudyTime => "TM",
            Attribute::AccessionNumber | Attribute::StudyID => "SH",
            Attribute::ReferringPhysicianName | Attribute::PatientName => "PN",
            Attribute::StudyDescription | Attribute::PatientID | Attribute::IssuerOfPatientID => {
                "LO"
            }
            Attribute::PatientSex => "CS",
        }
    }

    pub fn level(self) -> Level {
        match self {
            Attribute::PatientName
            | Attribute::PatientID
            | Attribute::IssuerOfPatientID
            | Attribute::PatientBirthDate
            | Attribute::PatientSex => Level::Patient,
            _ => Level::Study,
        }
    }

    /// Checks a new value against the attribute's value representation (one value; the
    /// index keeps text, so no backslash or control character).
    pub fn check(self, value: &str) -> Result<(), CorrectionError> {
        let bad = |why: &str| CorrectionError::BadValue {
            keyword: self.keyword(),
            value: value.to_string(),
            why: why.to_string(),
        };
        if value.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("control characters and backslashes are not allowed"));
        }
        let most = match self.vr() {
            "DA" => 8,
            "TM" => 16,
            "SH" | "CS" => 16,
            // PN: 64 characters per component group, three groups.
            "PN" => 194,
            _ => 64,
        };
        if value.chars().count() > most {
            return Err(bad(&format!("longer than {most} characters")));
        }
        if self == Attribute::PatientID && value.trim().is_empty() {
            return Err(bad("a patient needs an ID"));
        }
        let ok = match self.vr() {
            "DA" => {
                value.is_empty() || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()))
            }
            "TM" => value.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "CS" => value
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_'),
            "PN" => value.matches('=').count() <= 2,
            _ => true,
        };
        if !ok {
            return Err(bad(match self.vr() {
                "DA" => "a date is YYYYMMDD",
                "TM" => "a time is HHMMSS.FFFFFF",
                "CS" => "a code string is upper-case letters, digits, spaces and underscores",
                _ => "a person name has at most three component groups",
            }));
        }
        Ok(())
    }

    /// The index's value of this attribute in `patient` and `study`.
    pub fn value_in<'a>(
        self,
        patient: &'a PatientAttributes,
        study: &'a StudyAttributes,
    ) -> &'a str {
        match self {
            Attribute::StudyDate => &study.study_date,
            Attribute::StudyTime => &study.study_time,
            Attribute::AccessionNumber => &study.accession_number,
            Attribute::ReferringPhysicianName => &study.referring_physician_name,
            Attribute::StudyDescription => &study.study_description,
            Attribute::PatientName => &patient.patient_name,
            Attribute::PatientID => &patient.patient_id,
            Attribute::IssuerOfPatientID => &patient.issuer_of_patient_id,
            Attribute::PatientBirthDate => &patient.patient_birth_date,
            Attribute::PatientSex => &patient.patient_sex,
            Attribute::StudyID => &study.study_id,
        }
    }
}

/// Why a correction is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorrectionError {
    #[error("`{0}`: expected KEYWORD=VALUE")]
    Syntax(String),
    #[error("{0} cannot be corrected (only {list})", list = keywords())]
    Unknown(String),
    #[error("{keyword} = {value:?}: {why}")]
    BadValue {
        keyword: &'static str,
        value: String,
        why: String,
    },
    #[error("{0} is set twice")]
    Twice(&'static str),
    #[error("nothing to set")]
    Empty,
}

fn keywords() -> String {
    ATTRIBUTES.map(Attribute::keyword).join(", ")
}

/// New values for some attributes, in tag order, each checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes(Vec<(Attribute, String)>);

impl Changes {
    /// The changes of `--set KEYWORD=VALUE` arguments.
    pub fn parse<S: AsRef<str>>(settings: &[S]) -> Result<Changes, CorrectionError> {
        let mut changes = Vec::new();
        for setting in settings {
            let setting = setting.as_ref();
            let (keyword, value) = setting
                .split_once('=')
                .ok_or_else(|| CorrectionError::Syntax(setting.to_string()))?;
            let attribute = Attribute::from_keyword(keyword.trim())
                .ok_or_else(|| CorrectionError::Unknown(keyword.trim().to_string()))?;
            changes.push((attribute, value.to_string()));
        }
        Changes::new(changes)
    }

    /// Checked changes.
    pub fn new(mut changes: Vec<(Attribute, String)>) -> Result<Changes, CorrectionError> {
        if changes.is_empty() {
            return Err(CorrectionError::Empty);
        }
        changes.sort_by_key(|(a, _)| *a);
        for pair in changes.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(CorrectionError::Twice(pair[0].0.keyword()));
            }
        }
        for (attribute, value) in &changes {
            attribute.check(value)?;
        }
        Ok(Changes(changes))
    }

    /// What differs between the index's `before` values and a received object's `after`.
    pub fn between(
        before: (&PatientAttributes, &StudyAttributes),
        after: (&PatientAttributes, &StudyAttributes),
    ) -> Changes {
        Changes(
            ATTRIBUTES
                .into_iter()
                .filter(|a| a.value_in(before.0, before.1) != a.value_in(after.0, after.1))
                .map(|a| (a, a.value_in(after.0, after.1).to_string()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Attribute, &str)> {
        self.0.iter().map(|(a, v)| (*a, v.as_str()))
    }

    pub fn get(&self, attribute: Attribute) -> Option<&str> {
        self.iter().find(|(a, _)| *a == attribute).map(|(_, v)| v)
    }

    /// Whether any change is at `level`.
    pub fn touches(&self, level: Level) -> bool {
        self.iter().any(|(a, _)| a.level() == level)
    }
}

/// The values a corrected study's instances are sent with: the index's patient and study
/// attributes, in tag order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coercion {
    pub values: Vec<(Attribute, String)>,
}

impl Coercion {
    /// The coercion of the index's values.
    pub fn of(patient: &PatientAttributes, study: &StudyAttributes) -> Coercion {
        Coercion {
            values: ATTRIBUTES
                .into_iter()
                .map(|a| (a, a.value_in(patient, study).to_string()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_parsed_checked_and_ordered_by_tag() {
        let changes = Changes::parse(&[
            "PatientName=Roe^Richard",
            "StudyDate=20260102",
            "PatientSex=M",
        ])
        .unwrap();
        let keywords: Vec<_> = changes.iter().map(|(a, _)| a.keyword()).collect();
        assert_eq!(keywords, ["StudyDate", "PatientName", "PatientSex"]);
        assert!(changes.touches(Level::Patient) && changes.touches(Level::Study));
        assert_eq!(changes.get(Attribute::PatientName), Some("Roe^Richard"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let refuse = |s: &str| Changes::parse(&[s]).unwrap_err().to_string();
        assert!(refuse("PatientName").contains("KEYWORD=VALUE"));
        assert!(refuse("StudyInstanceUID=1.2").contains("cannot be corrected"));
        assert!(refuse("StudyDate=2026-1-2").contains("YYYYMMDD"));
        assert!(refuse("PatientSex=m").contains("upper-case"));
        assert!(refuse("PatientID=").contains("needs an ID"));
        assert!(refuse("PatientName=A\\B").contains("backslash"));
        assert!(refuse("StudyID=12345678901234567").contains("longer than 16"));
        let twice = Changes::parse(&["PatientSex=M", "PatientSex=F"]).unwrap_err();
        assert_eq!(twice, CorrectionError::Twice("PatientSex"));
        assert_eq!(
            Changes::parse::<&str>(&[]).unwrap_err(),
            CorrectionError::Empty
        );
    }

    #[test]
    fn changes_between_two_sets_of_values_name_what_differs() {
        let patient = PatientAttributes {
            patient_id: "P1".into(),
            patient_name: "Doe^Jane".into(),
            ..Default::default()
        };
        let study = StudyAttributes::default();
        let renamed = PatientAttributes {
            patient_name: "Roe^Jane".into(),
            ..patient.clone()
        };
        let changes = Changes::between((&patient, &study), (&renamed, &study));
        assert_eq!(
            changes.iter().collect::<Vec<_>>(),
            [(Attribute::PatientName, "Roe^Jane")]
        );
        assert!(Changes::between((&patient, &study), (&patient, &study)).is_empty());
    }
}
