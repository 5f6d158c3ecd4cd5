//! Reads a retrieve's instances ahead of the network: up to `prefetch` instances are read (and
//! checked, and transcoded where the destination needs another syntax) in parallel, and
//! handed over in plan order as [`Piece`]s through a bounded channel.
//!
//! Memory stays bounded whatever the study size: at most `prefetch` instances are held, plus
//! the channel's [`PIECES_IN_FLIGHT`] chunks. Instances up to [`WHOLE_LIMIT`] are read whole
//! and verified against their CRC-32C before the first byte goes out; larger ones stream in
//! chunks and are verified at the end (a mismatch then aborts the sub-operation's
//! association, the only way to take back a half-sent data set, and queues the primary for
//! repair so the next retrieve finds it mended).
//!
//! A primary that is missing or damaged is answered from its next lossless backup copy; when
//! only a lossy (JPEG 2000 ROI) copy survives, that copy is sent, marked lossy in its data
//! set, and the sub-operation counts as a warning.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::transcode::transcode;
use crate::codec::dicom::JPEG_2000;
use crate::model::StoredObject;
use crate::net::Piece;
use crate::reader::{data_set_offset, ReadError, Reader};

/// Size of the `Data` pieces handed to the network layer.
const CHUNK: usize = 1 << 20;
/// Pieces buffered between reader and network.
const PIECES_IN_FLIGHT: usize = 16;
/// Instances up to this size are read whole and verified before sending.
const WHOLE_LIMIT: u64 = 32 << 20;
/// Read size for larger instances.
const LARGE_CHUNK: u64 = 4 << 20;

/// Starts the reader task for `plan` (item index, transfer syntax to send in).
pub(super) fn start(
    reader: Relocating,
    objects: Arc<Vec<StoredObject>>,
    plan: Vec<(usize, String)>,
    prefetch: usize,
) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    tokio::spawn(produce(reader, objects, plan, prefetch, tx));
    rx
}

struct Ahead {
    index: usize,
    /// The transfer syntax to send in.
    ts: String,
    /// Set for instances read whole; `None` streams.
    whole: Option<JoinHandle<Result<Prepared, String>>>,
}

/// A data set ready to send, and why it is not the stored one, if it is not.
struct Prepared {
    data: Bytes,
    warning: Option<String>,
}

async fn produce(
    reader: Relocating,
    objects: Arc<Vec<StoredObject>>,
    plan: Vec<(usize, String)>,
    prefetch: usize,
    tx: mpsc::Sender<Piece>,
) {
    let mut next = 0;
    let mut ahead: VecDeque<Ahead> = VecDeque::new();
    loop {
        while ahead.len() < prefetch && next < plan.len() {
            let (index, ts) = plan[next].clone();
            next += 1;
            let object = objects[index].clone();
            let whole = (object.length <= WHOLE_LIMIT || ts != object.transfer_syntax_uid)
                .then(|| tokio::spawn(prepare_whole(reader.clone(), index, object, ts.clone())));
            ahead.push_back(Ahead { index, ts, whole });
            // Evidence of the read-ahead bound (`[retrieve] prefetch`) for tests and operators.
            debug!(instance = index, ahead = ahead.len(), "retrieve read ahead");
        }
        let Some(Ahead { index, ts, whole }) = ahead.pop_front() else {
            return;
        };
        let sent = match whole {
            Some(handle) => {
                let prepared = handle
                    .await
                    .unwrap_or_else(|e| Err(format!("reader task failed: {e}")));
                send_prepared(&tx, index, prepared).await
            }
            None => match stream_large(&reader, &objects[index], index, &tx).await {
                Streamed::Done(sent) => sent,
                // Unreadable before anything went out: from a backup copy, whole.
                Streamed::Unreadable(first) => {
                    let prepared =
                        prepare_from_copy(&reader, index, &objects[index], &ts, first).await;
                    send_prepared(&tx, index, prepared).await
                }
            },
        };
        if !sent {
            // The network side is gone (cancel, abort): stop reading.
            return;
        }
    }
}

async fn send_prepared(
    tx: &mpsc::Sender<Piece>,
    index: usize,
    prepared: Result<Prepared, String>,
) -> bool {
    let Prepared { data, warning } = match prepared {
        Ok(prepared) => prepared,
        Err(reason) => return tx.send(Piece::Failed { index, reason }).await.is_ok(),
    };
    let length = data.len() as u64;
    let start = Piece::Start {
        index,
        length,
        warning,
    };
    if tx.send(start).await.is_err() {
        return false;
    }
    let mut at = 0;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        if tx.send(Piece::Data(data.slice(at..end))).await.is_err() {
            return false;
        }
        at = end;
    }
    true
}

/// The reader, plus a way to find an instance again when its copy moved away meanwhile (a
/// tier move finished between listing the instances and reading this one).
#[derive(Clone)]
pub(super) struct Relocating {
    pub reader: Reader,
    pub locator: Arc<crate::locator::Locator>,
    pub sop_instance_uids: Arc<Vec<String>>,
}

/// Reads and verifies the whole file, cuts off the file meta, transcodes if asked.
async fn prepare_whole(
    reader: Relocating,
    index: usize,
    object: StoredObject,
    ts: String,
) -> Result<Prepared, String> {
    match reader.reader.read_verified(&object).await {
        Ok(file) => {
            finish(
                file,
                &object.location,
                &object.transfer_syntax_uid,
                &ts,
                None,
            )
            .await
        }
        Err(first) => prepare_from_copy(&reader, index, &object, &ts, first).await,
    }
}

/// After the primary failed with `first`: the instance's new primary if it moved meanwhile
/// (a tier move finished between listing and reading), else its next lossless backup copy
/// (the primary is then queued for re-creation), else a lossy copy with a warning.
async fn prepare_from_copy(
    reader: &Relocating,
    index: usize,
    object: &StoredObject,
    ts: &str,
    first: ReadError,
) -> Result<Prepared, String> {
    let uid = &reader.sop_instance_uids[index];
    let location = &object.location;
    if let Ok(Some(now)) = reader.locator.find_instance(uid).await {
        if now.location != object.location || now.tier != object.tier {
            tracing::info!(sop_instance_uid = %uid, from = %object.location, to = %now.location, "instance moved while being retrieved; reading its new copy");
            let file = reader
                .reader
                .read_instance(uid, &now)
                .await
                .map_err(|e| e.to_string())?;
            return finish(file, &now.location, &now.transfer_syntax_uid, ts, None).await;
        }
    }
    match reader.reader.read_fallback(uid, object, first).await {
        Ok(file) => finish(file, location, &object.transfer_syntax_uid, ts, None).await,
        Err(ReadError::OnlyLossy { .. }) => {
            let (file, copy) = reader
                .reader
                .read_lossy_copy(uid, object)
                .await
                .map_err(|e| e.to_string())?;
            let warning = format!(
                "every lossless copy is lost; sent the lossy {} copy from {} (marked Lossy \
                 Image Compression 01)",
                copy.format, copy.location
            );
            finish(file, &copy.location, JPEG_2000, ts, Some(warning)).await
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Cuts off the file meta of `file` (in syntax `from`) and transcodes it to `ts` if needed.
async fn finish(
    file: Bytes,
    location: &str,
    from: &str,
    ts: &str,
    warning: Option<String>,
) -> Result<Prepared, String> {
    let start = data_set_offset(&file).map_err(|e| format!("{location}: {e}"))?;
    if ts == from {
        return Ok(Prepared {
            data: file.slice(start..),
            warning,
        });
    }
    let (from, ts) = (from.to_string(), ts.to_string());
    let data =
        tokio::task::spawn_blocking(move || transcode(&file, start, &from, &ts).map(Bytes::from))
            .await
            .map_err(|e| format!("transcoding task failed: {e}"))??;
    Ok(Prepared { data, warning })
}

/// How streaming a large instance ended.
enum Streamed {
    /// Sent, or failed after starting (false: the network side is gone).
    Done(bool),
    /// The primary could not be read at all; nothing was sent.
    Unreadable(ReadError),
}

/// Streams a large instance in chunks, verifying its CRC-32C at the end. The last piece is
/// held back until the check passes, so damage is reported while the data set is still
/// incomplete on the wire.
async fn stream_large(
    relocating: &Relocating,
    object: &StoredObject,
    index: usize,
    tx: &mpsc::Sender<Piece>,
) -> Streamed {
    let reader: &Reader = &relocating.reader;
    let mut crc = 0u32;
    let mut at = 0u64;
    let mut started = false;
    let mut held: Option<Bytes> = None;
    while at < object.length {
        let len = LARGE_CHUNK.min(object.length - at);
        let chunk = match reader.read_range(object, at, len).await {
            Ok(chunk) => chunk,
            Err(e) if !started => return Streamed::Unreadable(e),
            Err(e) => {
                let reason = e.to_string();
                return Streamed::Done(tx.send(Piece::Failed { index, reason }).await.is_ok());
            }
        };
        crc = crc32c::crc32c_append(crc, &chunk);
        let data = if started {
            chunk
        } else {
            let start = match data_set_offset(&chunk) {
                Ok(start) => start,
                Err(e) => {
                    let reason = format!("{}: {e}", object.location);
                    return Streamed::Done(tx.send(Piece::Failed { index, reason }).await.is_ok());
                }
            };
            let length = object.length - start as u64;
            let piece = Piece::Start {
                index,
                length,
                warning: None,
            };
            if tx.send(piece).await.is_err() {
                return Streamed::Done(false);
            }
            started = true;
            chunk.slice(start..)
        };
        at += len;
        let mut from = 0;
        while from < data.len() {
            let end = (from + CHUNK).min(data.len());
            if let Some(previous) = held.replace(data.slice(from..end)) {
                if tx.send(Piece::Data(previous)).await.is_err() {
                    return Streamed::Done(false);
                }
            }
            from = end;
        }
    }
    if crc != object.crc32c {
        let reason = format!(
            "{} is damaged: CRC-32C {crc:08x}, expected {:08x}",
            object.location, object.crc32c
        );
        let uid = &relocating.sop_instance_uids[index];
        reader.report_damaged(uid, &reason).await;
        return Streamed::Done(tx.send(Piece::Failed { index, reason }).await.is_ok());
    }
    Streamed::Done(match held {
        Some(last) => tx.send(Piece::Data(last)).await.is_ok(),
        None => true,
    })
}
