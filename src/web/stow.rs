//! STOW-RS (PS3.18 10.5): `multipart/related; type="application/dicom"` bodies, each part a
//! Part-10 file, stored through the same ingest path as C-STORE (fsync and locator commit
//! before the answer).
//!
//! Nothing of a request is stored until its whole body has arrived: each part streams into
//! its own temporary file, and only after the last byte are they finished (group-committed
//! together). A body over `[web] max_upload_mb`, a malformed one or a client that hangs up
//! leaves only temporaries, which are removed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use bytes::BytesMut;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::json;
use super::WebError;
use crate::audit::Caller;
use crate::ingest::{read_part10_meta, Ingest, IngestSink};
use crate::service::{Outcome, Status, StoreRequest, StoreSink, StoreStart};
use axum::http::StatusCode;

/// Most instances one request may bring (each holds an open temporary until the body ends).
pub const MAX_PARTS: usize = 1000;
/// Instances finished (fsynced and committed) at once after the body ends.
const FINISHING: usize = 16;
/// The preamble, `DICM` and the longest file meta group accepted.
const MAX_HEAD: usize = 132 + 12 + 64 * 1024;

/// What one part came to.
struct Part {
    request: Option<StoreRequest>,
    outcome: Outcome,
}

/// Parts received whole and waiting for the end of the body; dropped unfinished (an error,
/// a client gone), their temporaries are removed.
#[derive(Default)]
struct Waiting(Vec<(StoreRequest, IngestSink)>);

impl Drop for Waiting {
    fn drop(&mut self) {
        let sinks = std::mem::take(&mut self.0);
        if !sinks.is_empty() {
            tokio::spawn(async move {
                for (_, sink) in sinks {
                    sink.abandon().await;
                }
            });
        }
    }
}

/// The boundary of a `multipart/related; type="application/dicom"` content type, or 415.
pub fn boundary(content_type: Option<&str>) -> Result<String, WebError> {
    let unsupported = || {
        WebError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary",
        )
    };
    let mut params = content_type.ok_or_else(unsupported)?.split(';');
    let media_type = params.next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("multipart/related") {
        return Err(unsupported());
    }
    let mut boundary = None;
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "type" if !value.eq_ignore_ascii_case("application/dicom") => return Err(unsupported()),
            "boundary" if !value.is_empty() => boundary = Some(value.to_string()),
            _ => {}
        }
    }
    boundary.ok_or_else(unsupported)
}

/// Stores the parts of `body`; `study` is the study the path names, if any.
pub async fn store(
    ingest: &Ingest,
    from: &Caller,
    study: Option<String>,
    boundary: String,
    body: Body,
    max_bytes: u64,
    base: &str,
) -> Result<(StatusCode, Value), WebError> {
    let over = Arc::new(AtomicBool::new(false));
    let flag = over.clone();
    let mut received = 0u64;
    let counted = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(io::Error::other)?;
        received += chunk.len() as u64;
        if received > max_bytes {
            flag.store(true, Ordering::Relaxed);
            return Err(io::Error::other("body over [web] max_upload_mb"));
        }
        Ok::<_, io::Error>(chunk)
    });
    let mut multipart = multer::Multipart::new(counted, boundary);
    let mut waiting = Waiting::default();
    let mut failed = Vec::new();
    let body_error = |e: multer::Error| {
        if over.load(Ordering::Relaxed) {
            WebError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body over [web] max_upload_mb = {} (nothing stored)",
                    max_bytes >> 20
                ),
            )
        } else {
            WebError::bad_request(format!("malformed multipart body (nothing stored): {e}"))
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(body_error)? {
        let media_type = field.content_type().map(|m| m.essence_str().to_string());
        if media_type.is_some_and(|m| m != "application/dicom") {
            return Err(WebError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "each part must be application/dicom (nothing stored)",
            ));
        }
        match receive(ingest, from, &mut field, study.as_deref()).await {
            Ok(Ok((request, sink))) => waiting.0.push((request, sink)),
            Ok(Err(part)) => failed.push(part),
            Err(e) => return Err(body_error(e)),
        }
        if waiting.0.len() + failed.len() > MAX_PARTS {
            return Err(WebError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {MAX_PARTS} instances in one request (nothing stored)"),
            ));
        }
    }
    let sinks = std::mem::take(&mut waiting.0);
    // Finished in a task of its own: a client that hangs up now cannot leave an instance
    // half-committed.
    let finished = tokio::spawn(async move {
        futures_util::stream::iter(sinks)
            .map(|(request, sink)| async move {
                let outcome = sink.finish().await;
                Part {
                    request: Some(request),
                    outcome,
                }
            })
            .buffered(FINISHING)
            .collect::<Vec<Part>>()
            .await
    })
    .await
    .map_err(|e| WebError::internal(e.to_string()))?;
    let (stored, mut refused): (Vec<Part>, Vec<Part>) = finished
        .into_iter()
        .partition(|p| !p.outcome.status.is_failure());
    refused.extend(failed);
    for part in &refused {
        let uid = part
            .request
            .as_ref()
            .map_or("", |r| r.sop_instance_uid.as_str());
        let reason = part.outcome.comment.as_deref().unwrap_or("");
        tracing::warn!(sop_instance_uid = uid, status = %part.outcome.status, reason, "STOW-RS: instance refused");
    }
    if stored.is_empty() && refused.is_empty() {
        return Err(WebError::bad_request("no instances in the body"));
    }
    let status = match (stored.is_empty(), refused.is_empty()) {
        (_, true) => StatusCode::OK,
        (true, false) => StatusCode::CONFLICT,
        (false, false) => StatusCode::ACCEPTED,
    };
    Ok((status, answer(&stored, &refused, study.as_deref(), base)))
}

/// Reads one part: the store it became (waiting to be finished), or why it failed. `Err`
/// is a failure of the body itself (the request ends).
async fn receive(
    ingest: &Ingest,
    from: &Caller,
    field: &mut multer::Field<'_>,
    study: Option<&str>,
) -> Result<Result<(StoreRequest, IngestSink), Part>, multer::Error> {
    let mut head = BytesMut::new();
    let (request, mut sink) = loop {
        let Some(chunk) = field.chunk().await? else {
            let outcome = match read_part10_meta(&mut &head[..]) {
                Err(e) => Outcome::failure(Status::CannotUnderstand, e.to_string()),
                Ok(_) => Outcome::failure(Status::CannotUnderstand, "no data set"),
            };
            return Ok(Err(Part {
                request: None,
                outcome,
            }));
        };
        head.extend_from_slice(&chunk);
        let Some(needed) = head_length(&head) else {
            if head.len() >= 144 || head.len() > MAX_HEAD {
                // Not the start of a Part-10 file: say why, skip the part.
                let reason = read_part10_meta(&mut &head[..])
                    .err()
                    .map_or("not a DICOM Part-10 file".to_string(), |e| e.to_string());
                return skip(
                    field,
                    Outcome::failure(Status::CannotUnderstand, reason),
                    None,
                )
                .await;
            }
            continue;
        };
        if head.len() < needed {
            continue;
        }
        let request = match read_part10_meta(&mut &head[..needed]) {
            Ok((request, _)) => request,
            Err(e) => {
                let outcome = Outcome::failure(Status::CannotUnderstand, e.to_string());
                return skip(field, outcome, None).await;
            }
        };
        match ingest.begin(from, request.clone()) {
            StoreStart::Receive(mut sink) => {
                if let Some(study) = study {
                    sink.expect_study(study.to_string());
                }
                let rest = head.split_off(needed);
                if !rest.is_empty() {
                    if let Err(outcome) = sink.write(rest.to_vec()).await {
                        sink.abandon().await;
                        return skip(field, outcome, Some(request)).await;
                    }
                }
                break (request, sink);
            }
            StoreStart::Answer(outcome) => return skip(field, outcome, Some(request)).await,
        }
    };
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Ok((request, sink))),
            Err(e) => {
                sink.abandon().await;
                return Err(e);
            }
        };
        if let Err(outcome) = sink.write(chunk.to_vec()).await {
            sink.abandon().await;
            return skip(field, outcome, Some(request)).await;
        }
    }
}

/// The length of the preamble, `DICM` and file meta group, once the group length is in
/// `head` and it looks like a Part-10 start; `None` until then (or when it is not one).
fn head_length(head: &[u8]) -> Option<usize> {
    if head.len() < 144
        || &head[128..132] != b"DICM"
        || head[132..140] != [2, 0, 0, 0, b'U', b'L', 4, 0]
    {
        return None;
    }
    let group = u32::from_le_bytes(head[140..144].try_into().ok()?) as usize;
    let needed = 144 + group;
    (needed <= MAX_HEAD).then_some(needed)
}

/// Reads past the rest of a part that will not be stored.
async fn skip(
    field: &mut multer::Field<'_>,
    outcome: Outcome,
    request: Option<StoreRequest>,
) -> Result<Result<(StoreRequest, IngestSink), Part>, multer::Error> {
    while field.chunk().await?.is_some() {}
    Ok(Err(Part { request, outcome }))
}

/// The PS3.18 response: Referenced SOP Sequence, Failed SOP Sequence with reasons.
fn answer(stored: &[Part], refused: &[Part], study: Option<&str>, base: &str) -> Value {
    let reference = |part: &Part| {
        let mut item = Map::new();
        if let Some(request) = &part.request {
            json::put(
                &mut item,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &request.sop_class_uid,
            );
            json::put(
                &mut item,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &request.sop_instance_uid,
            );
        }
        item
    };
    let mut object = Map::new();
    if let Some(study) = study {
        json::put(
            &mut object,
            tags::RETRIEVE_URL,
            VR::UR,
            &format!("{base}/studies/{study}"),
        );
    }
    let referenced: Vec<Value> = stored.iter().map(|p| Value::Object(reference(p))).collect();
    let failed: Vec<Value> = refused
        .iter()
        .map(|p| {
            let mut item = reference(p);
            json::put(
                &mut item,
                tags::FAILURE_REASON,
                VR::US,
                &p.outcome.status.code().to_string(),
            );
            Value::Object(item)
        })
        .collect();
    for (tag, items) in [
        (tags::REFERENCED_SOP_SEQUENCE, referenced),
        (tags::FAILED_SOP_SEQUENCE, failed),
    ] {
        if !items.is_empty() {
            object.insert(
                json::key(tag),
                serde_json::json!({ "vr": "SQ", "Value": items }),
            );
        }
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_as_clients_send_them() {
        let ok = |ct: &str| boundary(Some(ct));
        assert_eq!(
            ok("multipart/related; type=\"application/dicom\"; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            ok("Multipart/Related; boundary=\"x y\"; type=application/dicom").unwrap(),
            "x y"
        );
        assert!(ok("multipart/related; type=\"application/dicom+json\"; boundary=abc").is_err());
        assert!(ok("multipart/related; type=\"application/dicom\"").is_err());
        assert!(ok("application/dicom").is_err());
        assert!(boundary(None).is_err());
    }

    #[test]
    fn the_head_length_comes_from_the_group_length() {
        let mut head = vec![0u8; 128];
        head.extend_from_slice(b"DICM");
        head.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
        head.extend_from_slice(&200u32.to_le_bytes());
        assert_eq!(head_length(&head), Some(344));
        assert_eq!(head_length(&head[..143]), None);
        head[128] = b'X';
        assert_eq!(head_length(&head), None);
    }
}
