//! QIDO-RS (PS3.18 10.6): searches for studies, series and instances, answered from the
//! locator alone (no stored file or archive container is opened, whatever the tier).
//! Matching follows C-FIND's rules: the query parameters become the same [`FindQuery`].

use crate::audit::Caller;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use serde_json::{Map, Value};

use super::json;
use super::WebError;
use crate::locator::find::FindRow;
use crate::model::matching::Matcher;
use crate::model::query::{Attribute, ComputedKeys, FindQuery, QueryLevel};
use crate::query::{attribute_for, Computed, Query};

/// What a search names in its path: the level, and the study and series it is inside.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub study: Option<String>,
    pub series: Option<String>,
}

/// One returned attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Return {
    Indexed(Attribute, Tag),
    Computed(Computed, Tag),
    Availability,
    RetrieveUrl,
}

/// A parsed search: the locator query, what to return, and the page asked for.
#[derive(Debug)]
pub struct Search {
    query: FindQuery,
    returns: Vec<Return>,
    offset: usize,
    limit: usize,
    /// Warnings for the response's `Warning` header.
    pub warnings: Vec<String>,
}

/// Rows of a search, as the DICOM JSON array to answer with, and whether more matched than
/// `[query] max_matches` allowed.
pub struct Answer {
    pub objects: Vec<Value>,
    pub truncated: bool,
}

const STUDY_DEFAULTS: &[Tag] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::MODALITIES_IN_STUDY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::RETRIEVE_URL,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::STUDY_DESCRIPTION,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

const SERIES_DEFAULTS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_NUMBER,
    tags::SERIES_INSTANCE_UID,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::RETRIEVE_URL,
];

const INSTANCE_DEFAULTS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_AVAILABILITY,
    tags::RETRIEVE_URL,
    tags::INSTANCE_NUMBER,
];

/// Every attribute `includefield=all` can add: those Strata indexes, and the computed ones.
const ALL: &[Tag] = &[
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_NAME,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::STUDY_ID,
    tags::STUDY_DESCRIPTION,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::MODALITIES_IN_STUDY,
    tags::SOP_CLASSES_IN_STUDY,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
    tags::SERIES_INSTANCE_UID,
    tags::MODALITY,
    tags::SERIES_NUMBER,
    tags::SERIES_DESCRIPTION,
    tags::BODY_PART_EXAMINED,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::SOP_INSTANCE_UID,
    tags::SOP_CLASS_UID,
    tags::INSTANCE_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::RETRIEVE_URL,
];

/// A tag named by keyword (`PatientID`) or as eight hex digits (`00100020`).
fn parse_tag(name: &str) -> Option<Tag> {
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16).ok()?;
        let element = u16::from_str_radix(&name[4..], 16).ok()?;
        return Some(Tag(group, element));
    }
    StandardDataDictionary
        .by_name(name)
        .map(|entry| entry.tag())
}

fn vr_of(tag: Tag) -> VR {
    if let Some(computed) = Computed::for_tag(tag) {
        return computed.vr();
    }
    StandardDataDictionary
        .by_tag(tag)
        .map_or(VR::UN, |entry| entry.vr().relaxed())
}

/// A UID from the request path: one valid UID, or 400.
pub fn path_uid(uid: &str) -> Result<String, WebError> {
    match Matcher::parse("UI", uid) {
        Ok(Matcher::Single(uid)) => Ok(uid),
        _ => Err(WebError::bad_request(format!("{uid:?} is not a valid UID"))),
    }
}

impl Search {
    /// Parses the query parameters of a search at `level` inside `scope`.
    pub fn parse(
        level: QueryLevel,
        scope: &Scope,
        params: &[(String, String)],
        max_matches: usize,
    ) -> Result<Search, WebError> {
        let mut conditions = Vec::new();
        let mut computed = ComputedKeys::default();
        let mut warnings = Vec::new();
        let mut offset = 0;
        let mut limit = max_matches;
        let mut wanted: Vec<Tag> = match level {
            QueryLevel::Study | QueryLevel::Patient => STUDY_DEFAULTS.to_vec(),
            QueryLevel::Series => SERIES_DEFAULTS.to_vec(),
            QueryLevel::Image => INSTANCE_DEFAULTS.to_vec(),
        };
        let number = |key: &str, value: &str| {
            value
                .parse::<usize>()
                .map_err(|_| WebError::bad_request(format!("{key}={value:?} is not a number")))
        };
        for (key, value) in params {
            match key.as_str() {
                "limit" => limit = number(key, value)?.min(max_matches),
                "offset" => offset = number(key, value)?,
                "fuzzymatching" => {
                    if value == "true" {
                        warnings.push(
                            "The fuzzymatching parameter is not supported. \
                             Only literal matching has been performed."
                                .into(),
                        );
                    }
                }
                "includefield" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if field == "all" {
                            wanted.extend_from_slice(ALL);
                        } else {
                            wanted.push(parse_tag(field).ok_or_else(|| {
                                WebError::bad_request(format!("unknown attribute {field:?}"))
                            })?);
                        }
                    }
                }
                _ => {
                    let tag = parse_tag(key).ok_or_else(|| {
                        WebError::bad_request(format!("unknown query parameter {key:?}"))
                    })?;
                    conditions.push(condition(level, tag, value)?);
                    wanted.push(tag);
                }
            }
        }
        if let Some(study) = &scope.study {
            conditions.push((Attribute::StudyInstanceUid, Matcher::Single(study.clone())));
        }
        if let Some(series) = &scope.series {
            conditions.push((
                Attribute::SeriesInstanceUid,
                Matcher::Single(series.clone()),
            ));
        }
        let mut returns: Vec<Return> = Vec::new();
        for tag in wanted {
            let item = if tag == tags::INSTANCE_AVAILABILITY {
                Some(Return::Availability)
            } else if tag == tags::RETRIEVE_URL {
                Some(Return::RetrieveUrl)
            } else if let Some(which) = Computed::for_tag(tag) {
                match which {
                    Computed::ModalitiesInStudy => computed.modalities = true,
                    Computed::SopClassesInStudy => computed.sop_classes = true,
                    _ => computed.related_counts = true,
                }
                Some(Return::Computed(which, tag))
            } else {
                // Attributes Strata does not index cannot be returned; PS3.18 lets the
                // origin server leave them out.
                attribute_for(tag)
                    .filter(|a| a.level() <= level)
                    .map(|a| Return::Indexed(a, tag))
            };
            if let Some(item) = item.filter(|i| !returns.contains(i)) {
                returns.push(item);
            }
        }
        let query = FindQuery {
            level,
            conditions,
            case_insensitive_names: false,
            combined_datetime: false,
            availability: returns.contains(&Return::Availability),
            computed,
            limit: offset.saturating_add(limit).min(max_matches),
        };
        Ok(Search {
            query,
            returns,
            offset,
            limit,
            warnings,
        })
    }

    /// Runs the search; `base` is the DICOMweb root for Retrieve URLs.
    pub async fn run(self, query: &Query, caller: &Caller, base: &str) -> Result<Answer, WebError> {
        let fetched = self.query.limit;
        let mut rows = query.search(caller, self.query.clone()).await;
        let mut objects = Vec::new();
        let mut seen = 0usize;
        let mut truncated = false;
        while let Some(row) = rows.recv().await {
            let row = row.map_err(|e| WebError::internal(e.to_string()))?;
            seen += 1;
            if seen > fetched {
                // One row beyond the limit: there were more matches.
                truncated = fetched >= query.max_matches();
                break;
            }
            if seen <= self.offset || objects.len() == self.limit {
                continue;
            }
            objects.push(self.object(&row, base));
        }
        Ok(Answer { objects, truncated })
    }

    fn object(&self, row: &FindRow, base: &str) -> Value {
        let level = self.query.level;
        let mut object = Map::new();
        for item in &self.returns {
            match *item {
                Return::Indexed(attribute, tag) => json::put(
                    &mut object,
                    tag,
                    vr_of(tag),
                    &crate::query::attribute_value(row, attribute),
                ),
                Return::Computed(which, tag) => {
                    json::put(&mut object, tag, which.vr(), &which.value(row, level))
                }
                Return::Availability => json::put(
                    &mut object,
                    tags::INSTANCE_AVAILABILITY,
                    VR::CS,
                    row.availability.as_str(),
                ),
                Return::RetrieveUrl => json::put(
                    &mut object,
                    tags::RETRIEVE_URL,
                    VR::UR,
                    &retrieve_url(row, level, base),
                ),
            }
        }
        Value::Object(object)
    }
}

/// The matching condition of one query parameter.
fn condition(level: QueryLevel, tag: Tag, value: &str) -> Result<(Attribute, Matcher), WebError> {
    let bad = |e: String| WebError::bad_request(e);
    if tag == tags::MODALITIES_IN_STUDY && level == QueryLevel::Study {
        let values: Vec<String> = value
            .split(['\\', ','])
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let matcher = match values.as_slice() {
            [] => Matcher::Universal,
            [one] => Matcher::parse("CS", one).map_err(|e| bad(e.to_string()))?,
            _ => Matcher::UidList(values),
        };
        return Ok((Attribute::ModalitiesInStudy, matcher));
    }
    let attribute = attribute_for(tag)
        .filter(|a| a.level() <= level)
        .ok_or_else(|| {
            bad(format!(
                "cannot match on {} at {} level",
                json::key(tag),
                level.as_str()
            ))
        })?;
    // QIDO-RS separates UID list values with commas as well as backslashes.
    let value = if vr_of(tag) == VR::UI {
        value.replace(',', "\\")
    } else {
        value.to_string()
    };
    let matcher = Matcher::parse(vr_of(tag).to_string(), &value).map_err(|e| bad(e.to_string()))?;
    Ok((attribute, matcher))
}

fn retrieve_url(row: &FindRow, level: QueryLevel, base: &str) -> String {
    let mut url = format!("{base}/studies/{}", row.study.study_instance_uid);
    if level >= QueryLevel::Series {
        url.push_str(&format!("/series/{}", row.series.series_instance_uid));
    }
    if level >= QueryLevel::Image {
        url.push_str(&format!("/instances/{}", row.instance.sop_instance_uid));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::web::test_params as params;

    #[test]
    fn keywords_and_tags_become_the_same_conditions() {
        let by_keyword = Search::parse(
            QueryLevel::Study,
            &Scope::default(),
            &params(&[("PatientID", "P1"), ("StudyDate", "20200101-20201231")]),
            100,
        )
        .unwrap();
        let by_tag = Search::parse(
            QueryLevel::Study,
            &Scope::default(),
            &params(&[("00100020", "P1"), ("00080020", "20200101-20201231")]),
            100,
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", by_keyword.query.conditions),
            format!("{:?}", by_tag.query.conditions)
        );
        assert!(matches!(
            by_keyword.query.conditions[1].1,
            Matcher::Range { .. }
        ));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let refuse = |pairs: &[(&str, &str)]| {
            Search::parse(QueryLevel::Study, &Scope::default(), &params(pairs), 100).is_err()
        };
        assert!(refuse(&[("NoSuchKeyword", "x")]));
        assert!(refuse(&[("limit", "ten")]));
        assert!(refuse(&[("StudyInstanceUID", "1.2.abc")]));
        // A series attribute cannot be matched on at study level.
        assert!(refuse(&[("SeriesDescription", "x")]));
        assert!(!refuse(&[("PatientName", "Doe*"), ("includefield", "all")]));
    }

    #[test]
    fn limit_and_offset_shape_the_locator_query() {
        let search = Search::parse(
            QueryLevel::Series,
            &Scope {
                study: Some("1.2.3".into()),
                series: None,
            },
            &params(&[("limit", "10"), ("offset", "5")]),
            100,
        )
        .unwrap();
        assert_eq!(search.query.limit, 15);
        assert!(search.query.computed.related_counts);
        assert!(search.query.conditions.iter().any(
            |(a, m)| *a == Attribute::StudyInstanceUid && *m == Matcher::Single("1.2.3".into())
        ));
    }
}
