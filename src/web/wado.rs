//! WADO-RS (PS3.18 10.4) retrieval of studies, series and instances as
//! `multipart/related; type="application/dicom"`, read through the same retrieve service as
//! C-MOVE and C-GET: any tier, damaged primaries answered from backups, transcoded when the
//! client asks for another transfer syntax than the stored one.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use tokio::sync::mpsc;
use tracing::warn;

use super::accept::media_ranges;
use super::WebError;
use crate::model::transfer_syntax::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use crate::online::part10_header;
use crate::retrieve::Instances;
use crate::service::{Piece, Retrieval, RetrieveItem};

/// The transfer syntax a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `transfer-syntax=*`: each instance as stored.
    AsStored,
    Syntax(String),
}

/// The transfer syntax of the first acceptable media range of `accept` (none: Explicit VR
/// Little Endian, the default of PS3.18 for `application/dicom`), or 406.
pub fn negotiate(accept: Option<&str>) -> Result<Wanted, WebError> {
    let default = || Wanted::Syntax(EXPLICIT_VR_LITTLE_ENDIAN.to_string());
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(default());
    };
    for range in media_ranges(accept) {
        let param = |name: &str| range.param(name);
        let wanted = match range.media_type.as_str() {
            "*/*" | "multipart/*" => Some(default()),
            "multipart/related" => match param("type") {
                None | Some("application/dicom") => Some(match param("transfer-syntax") {
                    Some("*") => Wanted::AsStored,
                    Some(uid) => Wanted::Syntax(uid.to_string()),
                    None => default(),
                }),
                Some(_) => None,
            },
            _ => None,
        };
        if let Some(wanted) = wanted {
            return Ok(wanted);
        }
    }
    Err(WebError::not_acceptable(format!(
        "cannot answer with any of {accept:?}: multipart/related; type=\"application/dicom\" only"
    )))
}

/// The syntax to send `item` in, when it can be produced: as stored, or transcoded to an
/// uncompressed syntax (as a C-MOVE does).
fn syntax_for(item: &RetrieveItem, wanted: &Wanted) -> Option<String> {
    match wanted {
        Wanted::AsStored => Some(item.transfer_syntax_uid.clone()),
        Wanted::Syntax(uid) if *uid == item.transfer_syntax_uid => Some(uid.clone()),
        Wanted::Syntax(uid)
            if uid == EXPLICIT_VR_LITTLE_ENDIAN || uid == IMPLICIT_VR_LITTLE_ENDIAN =>
        {
            Some(uid.clone())
        }
        Wanted::Syntax(_) => None,
    }
}

/// The boundary between parts: fixed text that cannot occur in a part's headers, and a
/// per-response number so that nested bodies differ.
pub(super) fn boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "strata-{:016x}-{:x}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// A multipart body of `instances`, each a Part-10 file: its content type (with the
/// boundary) and the stream of its bytes. 406 when an instance cannot be had in the syntax
/// asked for.
pub fn multipart(
    instances: Instances,
    wanted: &Wanted,
    our_aet: &str,
) -> Result<(String, impl Stream<Item = Result<Bytes, WebError>>), WebError> {
    let mut plan = Vec::with_capacity(instances.items().len());
    for (index, item) in instances.items().iter().enumerate() {
        let syntax = syntax_for(item, wanted).ok_or_else(|| {
            WebError::not_acceptable(format!(
                "instance {} is stored in {} and cannot be sent in the transfer syntax asked for",
                item.sop_instance_uid, item.transfer_syntax_uid
            ))
        })?;
        plan.push((index, syntax));
    }
    let boundary = boundary();
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let pieces = instances.read(plan.clone());
    let state = Parts {
        pieces,
        items: instances.items().to_vec(),
        plan,
        boundary,
        our_aet: our_aet.to_string(),
        finished: false,
        _instances: instances,
    };
    Ok((content_type, stream::unfold(state, Parts::next)))
}

struct Parts {
    pieces: mpsc::Receiver<Piece>,
    items: Vec<RetrieveItem>,
    plan: Vec<(usize, String)>,
    boundary: String,
    our_aet: String,
    finished: bool,
    /// Keeps the retrieve (and its reader) alive while the body streams.
    _instances: Instances,
}

impl Parts {
    async fn next(mut self) -> Option<(Result<Bytes, WebError>, Parts)> {
        if self.finished {
            return None;
        }
        let piece = match self.pieces.recv().await {
            Some(piece) => piece,
            None => {
                self.finished = true;
                let end = Bytes::from(format!("\r\n--{}--\r\n", self.boundary));
                return Some((Ok(end), self));
            }
        };
        let bytes = match piece {
            Piece::Data(bytes) => Ok(bytes),
            Piece::Start { index, length, .. } => self.part_head(index, length),
            Piece::Failed { index, reason } => {
                // Nothing can take back the parts already sent: the body ends short, so
                // the client sees an incomplete response rather than a wrong one.
                let uid = &self.items[index].sop_instance_uid;
                warn!(sop_instance_uid = %uid, %reason, "WADO-RS: instance unreadable, response aborted");
                self.finished = true;
                Err(WebError::internal(format!("instance {uid}: {reason}")))
            }
        };
        Some((bytes, self))
    }

    /// The boundary, the part's headers and the Part-10 header of plan entry `index`.
    fn part_head(&self, index: usize, length: u64) -> Result<Bytes, WebError> {
        let item = &self.items[index];
        let syntax = &self
            .plan
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(item.transfer_syntax_uid.as_str(), |(_, s)| s.as_str());
        let header = part10_header(
            &item.sop_class_uid,
            &item.sop_instance_uid,
            syntax,
            &self.our_aet,
        )
        .map_err(|e| WebError::internal(e.to_string()))?;
        let mut out = BytesMut::with_capacity(header.len() + 256);
        out.extend_from_slice(
            format!(
                "\r\n--{}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\
                 Content-Length: {}\r\n\r\n",
                self.boundary,
                header.len() as u64 + length
            )
            .as_bytes(),
        );
        out.extend_from_slice(&header);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_as_viewers_send_them() {
        let stored = Ok(Wanted::AsStored);
        assert_eq!(
            negotiate(Some(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*"
            )),
            stored
        );
        assert_eq!(
            negotiate(Some(
                "multipart/related; type=application/dicom; transfer-syntax=*"
            )),
            stored
        );
        assert_eq!(
            negotiate(None),
            Ok(Wanted::Syntax(EXPLICIT_VR_LITTLE_ENDIAN.into()))
        );
        assert_eq!(
            negotiate(Some("*/*")),
            Ok(Wanted::Syntax(EXPLICIT_VR_LITTLE_ENDIAN.into()))
        );
        // The higher quality wins; q=0 is never chosen.
        assert_eq!(
            negotiate(Some(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2;q=0.5, \
                 multipart/related; type=\"application/dicom\"; transfer-syntax=*;q=0.9"
            )),
            stored
        );
        assert!(negotiate(Some("multipart/related; type=application/dicom; q=0")).is_err());
        assert!(negotiate(Some("image/jpeg")).is_err());
        assert!(negotiate(Some("multipart/related; type=\"application/octet-stream\"")).is_err());
    }
}
