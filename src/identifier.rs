//! The identifier of a C-FIND, C-MOVE or C-GET request: checked against nesting and size
//! before parsing (untrusted input), parsed in its transfer syntax, and its Query/Retrieve
//! Level read and checked against the information model.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::dataset::decode_small;
use crate::model::query::QueryLevel;
use crate::service::{Outcome, Status};

/// Decoded identifier bytes we look through (a deflated one may expand).
const MAX_IDENTIFIER_BYTES: u64 = 4 * 1024 * 1024;

/// A decoded identifier.
#[derive(Debug)]
pub struct Identifier {
    pub object: InMemDicomObject,
    pub level: QueryLevel,
}

/// Decodes `bytes` (encoded in `transfer_syntax_uid`). The Study Root models have no
/// PATIENT level. Failures are the final response: 0xC000 for undecodable data, 0xA700 for
/// an oversized one, 0xA900 for a missing or wrong level.
pub fn decode(
    bytes: &[u8],
    transfer_syntax_uid: &str,
    study_root: bool,
) -> Result<Identifier, Outcome> {
    let object = decode_small(bytes, transfer_syntax_uid, MAX_IDENTIFIER_BYTES).map_err(|e| {
        if e.is_too_large() {
            Outcome::failure(Status::OutOfResources, e.to_string())
        } else {
            Outcome::failure(Status::CannotUnderstand, format!("bad identifier: {e}"))
        }
    })?;
    let bad = |comment: &str| Outcome::failure(Status::DataSetDoesNotMatchSopClass, comment);
    let level = object
        .element_opt(tags::QUERY_RETRIEVE_LEVEL)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .and_then(|v| QueryLevel::parse(&v))
        .ok_or_else(|| bad("missing or invalid QueryRetrieveLevel"))?;
    if study_root && level == QueryLevel::Patient {
        return Err(bad("Study Root has no PATIENT level"));
    }
    Ok(Identifier { object, level })
}
