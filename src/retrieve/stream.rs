//! Reads a retrieve's instances ahead of the network: up to `prefetch` instances are read (and
//! checked, and transcoded where the destination needs another syntax) in parallel, and
//! handed over in plan order as [`Piece`]s through a bounded channel.
//!
//! Memory stays bounded whatever the study size: at most `prefetch` instances are held, plus
//! the channel's [`PIECES_IN_FLIGHT`] chunks. Instances up to [`WHOLE_LIMIT`] are read whole
//! and verified against their CRC-32C before the first byte goes out; larger ones stream in
//! chunks and are verified at the end (a mismatch then aborts the sub-operation's
//! association, the only way to take back a half-sent data set).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::transcode::transcode;
use crate::model::StoredObject;
use crate::net::Piece;
use crate::reader::{data_set_offset, Reader};

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
    /// Set for instances read whole; `None` streams.
    whole: Option<JoinHandle<Result<Bytes, String>>>,
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
                .then(|| tokio::spawn(prepare_whole(reader.clone(), index, object, ts)));
            ahead.push_back(Ahead { index, whole });
        }
        let Some(Ahead { index, whole }) = ahead.pop_front() else {
            return;
        };
        let sent = match whole {
            Some(handle) => {
                let prepared = handle
                    .await
                    .unwrap_or_else(|e| Err(format!("reader task failed: {e}")));
                match prepared {
                    Ok(data) => send_whole(&tx, index, data).await,
                    Err(reason) => tx.send(Piece::Failed { index, reason }).await.is_ok(),
                }
            }
            None => stream_large(&reader.reader, &objects[index], index, &tx).await,
        };
        if !sent {
            // The network side is gone (cancel, abort): stop reading.
            return;
        }
    }
}

async fn send_whole(tx: &mpsc::Sender<Piece>, index: usize, data: Bytes) -> bool {
    let length = data.len() as u64;
    if tx.send(Piece::Start { index, length }).await.is_err() {
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
) -> Result<Bytes, String> {
    let file = match reader.reader.read_verified(&object).await {
        Ok(file) => file,
        Err(first) => {
            let uid = &reader.sop_instance_uids[index];
            match reader.locator.find_instance(uid).await {
                Ok(Some(now)) if now.location != object.location || now.tier != object.tier => {
                    tracing::info!(sop_instance_uid = %uid, from = %object.location, to = %now.location, "instance moved while being retrieved; reading its new copy");
                    reader
                        .reader
                        .read_instance(uid, &now)
                        .await
                        .map_err(|e| e.to_string())?
                }
                // Missing or damaged where it still is: its next good backup copy, if any
                // (the primary is then queued for re-creation).
                _ => reader
                    .reader
                    .read_fallback(uid, &object, first)
                    .await
                    .map_err(|e| e.to_string())?,
            }
        }
    };
    let start = data_set_offset(&file).map_err(|e| format!("{}: {e}", object.location))?;
    if ts == object.transfer_syntax_uid {
        return Ok(file.slice(start..));
    }
    let from = object.transfer_syntax_uid.clone();
    tokio::task::spawn_blocking(move || transcode(&file, start, &from, &ts).map(Bytes::from))
        .await
        .map_err(|e| format!("transcoding task failed: {e}"))?
}

/// Streams a large instance in chunks, verifying its CRC-32C at the end. The last piece is
/// held back until the check passes, so damage is reported while the data set is still
/// incomplete on the wire.
async fn stream_large(
    reader: &Reader,
    object: &StoredObject,
    index: usize,
    tx: &mpsc::Sender<Piece>,
) -> bool {
    let mut crc = 0u32;
    let mut at = 0u64;
    let mut started = false;
    let mut held: Option<Bytes> = None;
    while at < object.length {
        let len = LARGE_CHUNK.min(object.length - at);
        let chunk = match reader.read_range(object, at, len).await {
            Ok(chunk) => chunk,
            Err(e) => {
                return tx
                    .send(Piece::Failed {
                        index,
                        reason: e.to_string(),
                    })
                    .await
                    .is_ok()
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
                    return tx.send(Piece::Failed { index, reason }).await.is_ok();
                }
            };
            let length = object.length - start as u64;
            if tx.send(Piece::Start { index, length }).await.is_err() {
                return false;
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
                    return false;
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
        return tx.send(Piece::Failed { index, reason }).await.is_ok();
    }
    match held {
        Some(last) => tx.send(Piece::Data(last)).await.is_ok(),
        None => true,
    }
}
