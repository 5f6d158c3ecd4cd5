//! Pure domain types: tiers, the attributes Strata indexes, the UID tables it negotiates, and
//! the workers' daily windows. No I/O here (beyond reading the clock).

pub mod correction;
pub mod levels;
pub mod markup;
pub mod matching;
pub mod person_name;
pub mod query;
pub mod rejection;
pub mod schedule;
pub mod sop_class;
pub mod transfer_syntax;
pub mod uid;

use serde::Serialize;

/// Instance Availability (0008,0056) of a C-FIND match: how quickly its instances can be
/// retrieved, from the best copy of each, worst instance first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstanceAvailability {
    /// On the online tier.
    #[default]
    Online,
    /// In an archive container, or (primary lost) in a near-line copy.
    Nearline,
    /// Primary lost, only on an offline volume (`strata backup import-volume` brings it back).
    Offline,
    /// Primary lost and no copy recorded.
    Unavailable,
}

impl InstanceAvailability {
    /// The locator's rank (0 online .. 3 unavailable).
    pub fn from_rank(rank: i64) -> InstanceAvailability {
        match rank {
            i64::MIN..=0 => InstanceAvailability::Online,
            1 => InstanceAvailability::Nearline,
            2 => InstanceAvailability::Offline,
            _ => InstanceAvailability::Unavailable,
        }
    }

    /// The DICOM code string.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceAvailability::Online => "ONLINE",
            InstanceAvailability::Nearline => "NEARLINE",
            InstanceAvailability::Offline => "OFFLINE",
            InstanceAvailability::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Where an instance's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Plain Part-10 files on fast local or SAN storage.
    Online,
    /// Inside an S-DICOM container on the archive store.
    Archive,
}

impl Tier {
    /// The name used in the locator and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Online => "online",
            Tier::Archive => "archive",
        }
    }

    /// Parses the locator's spelling.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "online" => Some(Tier::Online),
            "archive" => Some(Tier::Archive),
            _ => None,
        }
    }
}

/// Patient-level attributes, decoded to UTF-8 from whatever Specific Character Set was declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientAttributes {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
}

/// Study-level attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyAttributes {
    pub study_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
}

/// Series-level attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesAttributes {
    pub series_instance_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
}

/// Instance-level attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceAttributes {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub specific_character_set: String,
}

/// Everything the locator indexes about one instance, level by level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedAttributes {
    pub patient: PatientAttributes,
    pub study: StudyAttributes,
    pub series: SeriesAttributes,
    pub instance: InstanceAttributes,
    /// The whole data set as a DICOM JSON object (without Pixel Data and long binary
    /// values), when ingest could read it from the received head; served as WADO-RS
    /// `/metadata`.
    pub metadata: Option<String>,
}

/// Where and how one instance is stored, as the locator records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub tier: Tier,
    /// Tier-specific location: a path relative to the online root, or a container name.
    pub location: String,
    /// Byte offset of the Part-10 file inside `location` (0 for a plain file).
    pub offset: u64,
    /// Length of the Part-10 file in bytes.
    pub length: u64,
    /// CRC-32C of the Part-10 file bytes.
    pub crc32c: u32,
    /// Transfer syntax of the stored dataset, as received.
    pub transfer_syntax_uid: String,
}
