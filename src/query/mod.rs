//! The C-FIND service: Patient Root and Study Root information models at every level. It
//! decodes the identifier (in whatever Specific Character Set it declares), turns its keys
//! into a [`FindQuery`], asks the locator, and encodes one response identifier per match in
//! UTF-8 (ISO_IR 192), every requested key present.

mod encode;
mod keys;

use std::sync::Arc;

use dicom_core::header::Header;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use crate::audit::{Auditor, Caller, Entry, Event};
use crate::identifier::{self, Identifier};
use crate::locator::find::FindRow;
use crate::locator::Locator;
use crate::model::matching::Matcher;
use crate::model::query::{Attribute, ComputedKeys, FindQuery, QueryLevel};
use crate::net::{FindRequest, FindResults};
use crate::service::{Outcome, Status};

pub use keys::{attribute_for, value as attribute_value, Computed};

pub use crate::model::sop_class::{PATIENT_ROOT_FIND, STUDY_ROOT_FIND};

/// Settings of the query service.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Our AE title, returned as Retrieve AE Title.
    pub our_aet: String,
    /// More matches than this end the C-FIND with Out of Resources after this many.
    pub max_matches: usize,
    /// Person names match regardless of case.
    pub case_insensitive_names: bool,
}

/// The C-FIND service.
#[derive(Debug, Clone)]
pub struct Query {
    locator: Arc<Locator>,
    options: Arc<QueryOptions>,
    auditor: Option<Auditor>,
}

/// A key of the identifier: the attribute asked for, the VR it is answered in (a computed
/// key's own, whatever the requestor sent), and whether it is computed.
#[derive(Debug, Clone)]
struct RequestedKey {
    tag: Tag,
    vr: VR,
    computed: Option<Computed>,
}

/// The matches of one C-FIND, encoded one at a time as they are sent.
#[derive(Debug)]
pub struct Matches {
    rows: tokio::sync::mpsc::Receiver<Result<FindRow, crate::locator::LocatorError>>,
    /// Matches sent so far.
    sent: usize,
    keys: Vec<RequestedKey>,
    level: QueryLevel,
    /// Instance Availability goes into every match (asked for, or IMAGE level).
    availability: bool,
    transfer_syntax_uid: String,
    /// `Some(explicit)` when the identifier syntax is one `encode::write` handles.
    fast_syntax: Option<bool>,
    options: Arc<QueryOptions>,
}

fn refuse(status: Status, comment: impl Into<String>) -> Outcome {
    Outcome::failure(status, comment)
}

impl Query {
    pub fn new(locator: Arc<Locator>, options: QueryOptions) -> Query {
        Query {
            locator,
            options: Arc::new(options),
            auditor: None,
        }
    }

    /// Records every query in `auditor`'s trail.
    pub fn with_auditor(mut self, auditor: Auditor) -> Query {
        self.auditor = Some(auditor);
        self
    }

    /// Appends the audit entry of a query by `caller` (`via`: C-FIND, QIDO-RS) of the
    /// information model `model` (its SOP Class UID, the audit's queried object).
    async fn audit(
        &self,
        caller: &Caller,
        (via, model): (&str, &str),
        query: Result<&FindQuery, &str>,
    ) {
        let Some(auditor) = &self.auditor else { return };
        let who = caller.who();
        let address = caller.ip();
        let (detail, study) = match query {
            Ok(query) => (
                format!("{via} {}", query.describe()),
                query.study_instance_uid(),
            ),
            Err(why) => (format!("{via}: {why}"), None),
        };
        let entry = Entry {
            address: &address,
            study,
            object: model,
            detail: &detail,
            failed: query.is_err(),
            ..Entry::new(Event::Queried, &who)
        };
        auditor.record_access(&entry).await;
    }

    /// Runs a search that is already protocol-neutral (QIDO-RS): the matching rows, at most
    /// `query.limit` and never more than `[query] max_matches`, plus one row when there are
    /// more. Name matching follows `[query] case_insensitive_names`, as for C-FIND.
    pub async fn search(
        &self,
        caller: &Caller,
        mut query: FindQuery,
    ) -> tokio::sync::mpsc::Receiver<Result<FindRow, crate::locator::LocatorError>> {
        query.case_insensitive_names = self.options.case_insensitive_names;
        query.limit = query.limit.min(self.options.max_matches);
        // QIDO-RS searches the Study Root information model.
        self.audit(caller, ("QIDO-RS", STUDY_ROOT_FIND), Ok(&query))
            .await;
        self.locator.find(query)
    }

    /// `[query] max_matches`: the most rows one search returns.
    pub fn max_matches(&self) -> usize {
        self.options.max_matches
    }

    /// Checks the request of `caller` and runs the query.
    pub async fn begin(&self, caller: &Caller, request: FindRequest) -> Result<Matches, Outcome> {
        let model = request.sop_class_uid.clone();
        match self.prepare(request) {
            Ok((query, matches)) => {
                self.audit(caller, ("C-FIND", &model), Ok(&query)).await;
                Ok(Matches {
                    rows: self.locator.find(query),
                    ..matches
                })
            }
            Err(outcome) => {
                let why = format!("{model}: {}", outcome.comment.as_deref().unwrap_or(""));
                self.audit(caller, ("C-FIND", &model), Err(&why)).await;
                Err(outcome)
            }
        }
    }

    /// The query of a request, and its matches still without rows.
    fn prepare(&self, request: FindRequest) -> Result<(FindQuery, Matches), Outcome> {
        let model = request.sop_class_uid.as_str();
        if model != PATIENT_ROOT_FIND && model != STUDY_ROOT_FIND {
            return Err(refuse(
                Status::SopClassNotSupported,
                "only Patient Root and Study Root FIND",
            ));
        }
        let Identifier {
            object: identifier,
            level,
        } = identifier::decode(
            &request.identifier,
            &request.transfer_syntax_uid,
            model == STUDY_ROOT_FIND,
        )?;

        let mut conditions = Vec::new();
        let mut keys = Vec::new();
        let mut computed = ComputedKeys::default();
        for element in identifier.iter() {
            let tag = element.tag();
            if tag == tags::SPECIFIC_CHARACTER_SET || tag == tags::QUERY_RETRIEVE_LEVEL {
                continue;
            }
            let computed_key = Computed::for_tag(tag);
            keys.push(RequestedKey {
                tag,
                vr: computed_key.map_or(element.vr(), Computed::vr),
                computed: computed_key,
            });
            if let Some(which) = computed_key {
                match which {
                    Computed::ModalitiesInStudy => computed.modalities = true,
                    Computed::SopClassesInStudy => computed.sop_classes = true,
                    _ => computed.related_counts = true,
                }
                let value = element.to_str().map(|v| v.to_string()).unwrap_or_default();
                if tag == tags::MODALITIES_IN_STUDY && level == QueryLevel::Study {
                    // A list of modalities: any of them.
                    let values: Vec<String> = value
                        .split('\\')
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .collect();
                    let matcher = match values.as_slice() {
                        [] => Matcher::Universal,
                        [one] => Matcher::parse("CS", one).map_err(|e| {
                            refuse(Status::DataSetDoesNotMatchSopClass, e.to_string())
                        })?,
                        _ => Matcher::UidList(values),
                    };
                    conditions.push((Attribute::ModalitiesInStudy, matcher));
                }
                continue;
            }
            let Some(attribute) = attribute_for(tag) else {
                continue;
            };
            if attribute.level() > level || element.vr() == VR::SQ {
                continue;
            }
            let value = element.to_str().map(|v| v.to_string()).unwrap_or_default();
            let matcher = Matcher::parse(element.vr().to_string(), &value)
                .map_err(|e| refuse(Status::DataSetDoesNotMatchSopClass, e.to_string()))?;
            conditions.push((attribute, matcher));
        }
        check_unique_keys(model, level, &conditions)?;

        let availability = keys.iter().any(|k| k.tag == tags::INSTANCE_AVAILABILITY);
        let query = FindQuery {
            level,
            conditions,
            case_insensitive_names: self.options.case_insensitive_names,
            combined_datetime: request.combined_datetime,
            availability,
            computed,
            limit: self.options.max_matches,
        };
        let (_, no_rows) = tokio::sync::mpsc::channel(1);
        let matches = Matches {
            rows: no_rows,
            sent: 0,
            keys,
            level,
            availability: availability || level == QueryLevel::Image,
            fast_syntax: encode::fast_syntax(&request.transfer_syntax_uid),
            transfer_syntax_uid: request.transfer_syntax_uid,
            options: self.options.clone(),
        };
        Ok((query, matches))
    }
}

/// Hierarchical queries need a unique key (single value or UID list) for every level above.
fn check_unique_keys(
    model: &str,
    level: QueryLevel,
    conditions: &[(Attribute, Matcher)],
) -> Result<(), Outcome> {
    let has = |attribute: Attribute| {
        conditions
            .iter()
            .any(|(a, m)| *a == attribute && matches!(m, Matcher::Single(_) | Matcher::UidList(_)))
    };
    let mut required = Vec::new();
    if model == PATIENT_ROOT_FIND && level > QueryLevel::Patient {
        required.push((Attribute::PatientId, "PatientID"));
    }
    if level > QueryLevel::Study {
        required.push((Attribute::StudyInstanceUid, "StudyInstanceUID"));
    }
    if level > QueryLevel::Series {
        required.push((Attribute::SeriesInstanceUid, "SeriesInstanceUID"));
    }
    for (attribute, name) in required {
        if !has(attribute) {
            return Err(refuse(
                Status::DataSetDoesNotMatchSopClass,
                format!("{} level needs a unique {name}", level.as_str()),
            ));
        }
    }
    Ok(())
}

impl Matches {
    /// The response identifier of one match: Specific Character Set, Query/Retrieve Level,
    /// Retrieve AE Title, Instance Availability when due, and every requested key.
    fn encode(&self, row: &FindRow) -> Result<Vec<u8>, Outcome> {
        let mut elements = vec![
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into()),
            text(
                tags::QUERY_RETRIEVE_LEVEL,
                VR::CS,
                self.level.as_str().into(),
            ),
            text(
                tags::RETRIEVE_AE_TITLE,
                VR::AE,
                self.options.our_aet.as_str().into(),
            ),
        ];
        if self.availability {
            elements.push(text(
                tags::INSTANCE_AVAILABILITY,
                VR::CS,
                availability(row).into(),
            ));
        }
        for key in &self.keys {
            if key.tag == tags::RETRIEVE_AE_TITLE || key.tag == tags::INSTANCE_AVAILABILITY {
                continue;
            }
            let value = if let Some(computed) = key.computed {
                computed.value(row, self.level)
            } else if key.vr == VR::SQ {
                String::new()
            } else {
                attribute_for(key.tag)
                    .filter(|a| a.level() <= self.level)
                    .map(|a| keys::value(row, a))
                    .unwrap_or_default()
            };
            elements.push(text(key.tag, key.vr, value.into()));
        }
        let failed =
            |e: String| refuse(Status::ProcessingFailure, format!("encoding a match: {e}"));
        match self.fast_syntax {
            Some(explicit) => encode::write(elements, explicit).map_err(|e| failed(e.to_string())),
            None => encode::write_generic(elements, &self.transfer_syntax_uid).map_err(failed),
        }
    }
}

fn text(tag: Tag, vr: VR, value: std::borrow::Cow<'_, str>) -> encode::Element<'_> {
    encode::Element { tag, vr, value }
}

/// The worst availability of the instances below the match, each from its best copy (see
/// [`crate::model::InstanceAvailability`]).
fn availability(row: &FindRow) -> &'static str {
    row.availability.as_str()
}

impl FindResults for Matches {
    async fn next(&mut self) -> Option<Result<Vec<u8>, Outcome>> {
        let row = match self.rows.recv().await? {
            Ok(row) => row,
            Err(e) => return Some(Err(refuse(Status::ProcessingFailure, e.to_string()))),
        };
        if self.sent == self.options.max_matches {
            // The locator returns one row beyond the limit only when there are more.
            self.rows.close();
            return Some(Err(refuse(
                Status::OutOfResources,
                format!("more than {} matches", self.options.max_matches),
            )));
        }
        self.sent += 1;
        Some(self.encode(&row))
    }
}
