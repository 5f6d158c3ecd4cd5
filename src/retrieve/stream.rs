//! Reads a retrieve's instances ahead of the network: up to `prefetch` instances are read (and
//! checked, and transcoded where the destination needs another syntax) in parallel, and
//! handed over in plan order as [`Piece`]s through a bounded channel.
//!
//! Memory stays bounded whatever the study size: at most `prefetch` instances are held, plus
//! the channel's [`PIECES_IN_FLIGHT`] chunks. Instances up to [`WHOLE_LIMIT`] are read whole
//! and verified against their CRC-32C before the first byte goes out; larger ones stream in
//! chunks (re-encoded on the way when both syntaxes are uncompressed: only the elements
//! around the pixel data are held) and are verified at the end (a mismatch then aborts the sub-operation's
//! association, the only way to take back a half-sent data set, and queues the primary for
//! repair so the next retrieve finds it mended).
//!
//! A primary that is missing or damaged is answered from its next lossless backup copy (a
//! large one streamed from the copy in the same way, after checking it in parts); when
//! only a lossy (JPEG 2000 ROI) copy survives, that copy is sent, marked lossy in its data
//! set, and the sub-operation counts as a warning.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::debug;

use super::coerce::{coerce, coerce_head, CoerceError};
use super::transcode::{
    decode_by_frame, decode_whole, parse_for_decoding, reencode_elements, syntax_is_encapsulated,
    transcode, Decoded, TranscodeError, MAX_IN_MEMORY,
};
use crate::codec::dicom::JPEG_2000;
use crate::codec::native::{
    pixel_data_header, pixel_data_vr, swap_words, swaps, Native, PixelData,
};
use crate::codec::walk::ElementWalk;
use crate::model::correction::Coercion;
use crate::model::StoredObject;
use crate::reader::{data_set_offset, Origin, ReadError, Reader, PART};
use crate::service::Piece;
use dicom_object::DefaultDicomObject;

/// Size of the `Data` pieces handed to the network layer.
const CHUNK: usize = 1 << 20;
/// Pieces buffered between reader and network.
const PIECES_IN_FLIGHT: usize = 16;
/// Instances up to this size are read whole and verified before sending.
const WHOLE_LIMIT: u64 = 32 << 20;
/// The longest a frame-by-frame decode waits for its peer to take one piece (up to
/// [`CHUNK`] bytes, about 17 KB/s at the least) before it stops and gives its turn back.
const PEER_TAKES_A_PIECE: std::time::Duration = std::time::Duration::from_secs(60);

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
    body: Body,
    warning: Option<String>,
}

enum Body {
    /// The data set's bytes.
    Ready(Bytes),
    /// A parsed instance whose pixel data is decoded frame by frame as it is sent, into the
    /// uncompressed syntax given.
    ByFrame(Box<DefaultDicomObject>, String),
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
            let whole = (object.length <= WHOLE_LIMIT || !streams(&object, &ts))
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
                send_prepared(&tx, &reader.decoders, index, prepared).await
            }
            None => stream_instance(&reader, &objects[index], index, &ts, &tx).await,
        };
        if !sent {
            // The network side is gone (cancel, abort): stop reading.
            return;
        }
    }
}

/// Sends a large instance as a stream ([`stream_from`]): from its primary; if that cannot be
/// read at all, from where it moved meanwhile or from its next intact near-line copy; if
/// only a lossy copy survives, that (small) copy whole. False when the network side is gone.
async fn stream_instance(
    reader: &Relocating,
    object: &StoredObject,
    index: usize,
    ts: &str,
    tx: &mpsc::Sender<Piece>,
) -> bool {
    let mut object = object.clone();
    let primary = Origin::Primary(object.clone());
    let mut streamed = stream_from(reader, &object, &primary, index, ts, tx).await;
    if matches!(streamed, Streamed::Unreadable(_)) {
        if let Some(now) = reader.moved(index, &object).await {
            object = now;
            let primary = Origin::Primary(object.clone());
            streamed = stream_from(reader, &object, &primary, index, ts, tx).await;
        }
    }
    if let Streamed::Unreadable(first) = streamed {
        let uid = &reader.sop_instance_uids[index];
        streamed = match reader.reader.fallback_origin(uid, &object, first).await {
            Ok(copy) => stream_from(reader, &object, &copy, index, ts, tx).await,
            Err(ReadError::OnlyLossy { .. }) => {
                let prepared = prepare_lossy(reader, index, &object, ts).await;
                return send_prepared(tx, &reader.decoders, index, prepared).await;
            }
            Err(e) => Streamed::Unreadable(e),
        };
    }
    match streamed {
        Streamed::Done(sent) => sent,
        Streamed::Unreadable(e) => {
            let reason = e.to_string();
            tx.send(Piece::Failed { index, reason }).await.is_ok()
        }
        Streamed::Whole(why) if object.length > MAX_IN_MEMORY => {
            let reason = format!("{why}; {}", TranscodeError::TooLargeInMemory(object.length));
            tx.send(Piece::Failed { index, reason }).await.is_ok()
        }
        Streamed::Whole(why) => {
            debug!(instance = index, why, "re-encoding in memory");
            let prepared = prepare_whole(reader.clone(), index, object, ts.to_string()).await;
            send_prepared(tx, &reader.decoders, index, prepared).await
        }
    }
}

/// Streams the file `origin` holds of a large instance: as stored, or re-encoded.
async fn stream_from(
    reader: &Relocating,
    object: &StoredObject,
    origin: &Origin,
    index: usize,
    ts: &str,
    tx: &mpsc::Sender<Piece>,
) -> Streamed {
    if ts == object.transfer_syntax_uid {
        stream_large(reader, origin, index, ts, tx).await
    } else {
        stream_reencoded(reader, object, origin, index, ts, tx).await
    }
}

async fn send_prepared(
    tx: &mpsc::Sender<Piece>,
    decoders: &Arc<Semaphore>,
    index: usize,
    prepared: Result<Prepared, String>,
) -> bool {
    let (data, warning) = match prepared {
        Ok(Prepared {
            body: Body::Ready(data),
            warning,
        }) => (data, warning),
        Ok(Prepared {
            body: Body::ByFrame(object, ts),
            warning,
        }) => return send_by_frame(tx, decoders, index, object, ts, warning).await,
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
    /// Per instance, the index's values to send it with (a corrected study); may be empty.
    pub coercions: Arc<Vec<Option<Arc<Coercion>>>>,
    /// Turns to decode frame by frame, shared by every retrieve of the node.
    pub decoders: Arc<Semaphore>,
}

impl Relocating {
    fn coercion(&self, index: usize) -> Option<Arc<Coercion>> {
        self.coercions.get(index).cloned().flatten()
    }

    /// Instance `index`'s primary now, if it is no longer `object` (a tier move finished
    /// between listing the instances and reading this one).
    async fn moved(&self, index: usize, object: &StoredObject) -> Option<StoredObject> {
        let uid = &self.sop_instance_uids[index];
        let now = self.locator.find_instance(uid).await.ok()??;
        if now.location == object.location && now.tier == object.tier {
            return None;
        }
        tracing::info!(sop_instance_uid = %uid, from = %object.location, to = %now.location, "instance moved while being retrieved; reading its new copy");
        Some(now)
    }
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
            let coercion = reader.coercion(index);
            finish(
                file,
                &object.location,
                (&object.transfer_syntax_uid, &ts),
                coercion,
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
    if let Some(now) = reader.moved(index, object).await {
        let file = reader
            .reader
            .read_instance(uid, &now)
            .await
            .map_err(|e| e.to_string())?;
        let syntaxes = (now.transfer_syntax_uid.as_str(), ts);
        return finish(file, &now.location, syntaxes, reader.coercion(index), None).await;
    }
    match reader.reader.read_fallback(uid, object, first).await {
        Ok(file) => {
            let syntaxes = (object.transfer_syntax_uid.as_str(), ts);
            finish(
                file,
                &object.location,
                syntaxes,
                reader.coercion(index),
                None,
            )
            .await
        }
        Err(ReadError::OnlyLossy { .. }) => prepare_lossy(reader, index, object, ts).await,
        Err(e) => Err(e.to_string()),
    }
}

/// The last resort when every lossless copy is lost: the instance's lossy copy, with a
/// warning for the sub-operation.
async fn prepare_lossy(
    reader: &Relocating,
    index: usize,
    object: &StoredObject,
    ts: &str,
) -> Result<Prepared, String> {
    let uid = &reader.sop_instance_uids[index];
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
    let coercion = reader.coercion(index);
    finish(
        file,
        &copy.location,
        (JPEG_2000, ts),
        coercion,
        Some(warning),
    )
    .await
}

/// Cuts off the file meta of `file` (in syntax `from`), sets the index's values of a
/// corrected study, and transcodes it to `ts` if needed.
async fn finish(
    file: Bytes,
    location: &str,
    (from, ts): (&str, &str),
    coercion: Option<Arc<Coercion>>,
    warning: Option<String>,
) -> Result<Prepared, String> {
    let start = data_set_offset(&file).map_err(|e| format!("{location}: {e}"))?;
    let file = match coercion {
        None => file,
        Some(coercion) => {
            let from = from.to_string();
            tokio::task::spawn_blocking(move || {
                let data = coerce(&file[start..], &from, &coercion)?;
                let mut coerced = BytesMut::with_capacity(start + data.len());
                coerced.extend_from_slice(&file[..start]);
                coerced.extend_from_slice(&data);
                Ok::<_, CoerceError>(coerced.freeze())
            })
            .await
            .map_err(|e| format!("correcting task failed: {e}"))?
            .map_err(|e| format!("{location}: {e}"))?
        }
    };
    if ts == from {
        return Ok(Prepared {
            body: Body::Ready(file.slice(start..)),
            warning,
        });
    }
    let (from, ts) = (from.to_string(), ts.to_string());
    let body = tokio::task::spawn_blocking(move || {
        let decodes = syntax_is_encapsulated(&from) && Native::of(&ts).is_some();
        if !decodes {
            return transcode(&file, start, &from, &ts).map(|data| Body::Ready(data.into()));
        }
        let (object, by_frame) = parse_for_decoding(&file, &from)?;
        if by_frame {
            Ok(Body::ByFrame(Box::new(object), ts))
        } else {
            decode_whole(object, &ts).map(|data| Body::Ready(data.into()))
        }
    })
    .await
    .map_err(|e| format!("transcoding task failed: {e}"))?
    .map_err(|e| e.to_string())?;
    Ok(Prepared { body, warning })
}

/// Sends an instance decoded frame by frame ([`decode_by_frame`]) from a blocking thread:
/// one decoded frame is held at a time, plus the pieces in flight. The thread waits on the
/// peer as it reads, so it is taken only with one of `decoders`' turns (waited for without a
/// thread; given up when the peer goes, or takes nothing for [`PEER_TAKES_A_PIECE`]):
/// stalled peers hold at most those threads, never the ones stores and short reads need.
async fn send_by_frame(
    tx: &mpsc::Sender<Piece>,
    decoders: &Arc<Semaphore>,
    index: usize,
    object: Box<DefaultDicomObject>,
    ts: String,
    mut warning: Option<String>,
) -> bool {
    let turn = match decoders.clone().try_acquire_owned() {
        Ok(turn) => turn,
        Err(_) => {
            debug!(instance = index, "frame-by-frame decode waits for a turn");
            let turn = tokio::select! {
                turn = decoders.clone().acquire_owned() => turn,
                () = tx.closed() => return false,
            };
            let Ok(turn) = turn else { return false };
            turn
        }
    };
    let tx = tx.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        // A peer that takes no piece for PEER_TAKES_A_PIECE gives its turn back.
        let send = |piece: Piece| {
            let sent = runtime.block_on(tokio::time::timeout(PEER_TAKES_A_PIECE, tx.send(piece)));
            if sent.is_err() {
                tracing::warn!(
                    instance = index,
                    "peer took no data for 60 s; frame-by-frame decode stopped"
                );
            }
            matches!(sent, Ok(Ok(())))
        };
        let mut sink = |decoded: Decoded| match decoded {
            Decoded::Length(length) => {
                let warning = warning.take();
                send(Piece::Start {
                    index,
                    length,
                    warning,
                })
            }
            Decoded::Bytes(bytes) => {
                let bytes = Bytes::from(bytes);
                (0..bytes.len()).step_by(CHUNK).all(|at| {
                    let end = (at + CHUNK).min(bytes.len());
                    send(Piece::Data(bytes.slice(at..end)))
                })
            }
        };
        match decode_by_frame(&object, &ts, &mut sink) {
            Ok(sent) => sent,
            Err(e) => {
                let reason = e.to_string();
                send(Piece::Failed { index, reason })
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Whether a large instance is sent as a stream: as stored, or re-encoded between the
/// uncompressed syntaxes (whose pixel data passes through, swapped at most).
fn streams(object: &StoredObject, ts: &str) -> bool {
    ts == object.transfer_syntax_uid
        || (Native::of(&object.transfer_syntax_uid).is_some() && Native::of(ts).is_some())
}

/// How streaming a large instance ended.
enum Streamed {
    /// Sent, or failed after starting (false: the network side is gone).
    Done(bool),
    /// The primary could not be read at all; nothing was sent.
    Unreadable(ReadError),
    /// It cannot be re-encoded as a stream (why); nothing was sent.
    Whole(String),
}

/// Sends `Data` pieces one behind: the last is held back until the caller knows the data
/// set is whole, so damage found at the end is reported while it is still incomplete on
/// the wire.
struct Outbox<'a> {
    tx: &'a mpsc::Sender<Piece>,
    held: Option<Bytes>,
}

impl<'a> Outbox<'a> {
    fn new(tx: &'a mpsc::Sender<Piece>) -> Self {
        Outbox { tx, held: None }
    }

    /// Announces the data set and its length; false when the network side is gone.
    async fn start(&self, index: usize, length: u64) -> bool {
        let warning = None;
        let piece = Piece::Start {
            index,
            length,
            warning,
        };
        self.tx.send(piece).await.is_ok()
    }

    /// Queues `data` in pieces of at most [`CHUNK`]; false when the network side is gone.
    async fn push(&mut self, data: Bytes) -> bool {
        let mut from = 0;
        while from < data.len() {
            let end = (from + CHUNK).min(data.len());
            if let Some(previous) = self.held.replace(data.slice(from..end)) {
                if self.tx.send(Piece::Data(previous)).await.is_err() {
                    return false;
                }
            }
            from = end;
        }
        true
    }

    /// Checks the CRC-32C of everything read against the stored one: sends the held piece
    /// if it matches, else reports the damage and fails the sub-operation.
    async fn finish(
        self,
        relocating: &Relocating,
        origin: &Origin,
        index: usize,
        crc: u32,
    ) -> Streamed {
        if crc != origin.crc32c() {
            let reason = format!(
                "{} is damaged: CRC-32C {crc:08x}, expected {:08x}",
                origin.location(),
                origin.crc32c()
            );
            match origin {
                Origin::Primary(_) => {
                    let uid = &relocating.sop_instance_uids[index];
                    relocating.reader.report_damaged(uid, &reason).await;
                }
                Origin::Nearline(copy) => relocating.reader.report_bad_copy(copy).await,
                // Retrieves never read a volume file.
                Origin::Offline { .. } => {}
            }
            return Streamed::Done(self.tx.send(Piece::Failed { index, reason }).await.is_ok());
        }
        Streamed::Done(match self.held {
            Some(last) => self.tx.send(Piece::Data(last)).await.is_ok(),
            None => true,
        })
    }

    async fn fail(self, index: usize, reason: String) -> Streamed {
        Streamed::Done(self.tx.send(Piece::Failed { index, reason }).await.is_ok())
    }
}

/// Streams a large instance in chunks from `origin`, verifying its CRC-32C at the end.
async fn stream_large(
    relocating: &Relocating,
    origin: &Origin,
    index: usize,
    ts: &str,
    tx: &mpsc::Sender<Piece>,
) -> Streamed {
    let reader: &Reader = &relocating.reader;
    let mut outbox = Outbox::new(tx);
    let mut crc = 0u32;
    let mut at = 0u64;
    let length = origin.length();
    while at < length {
        let len = PART.min(length - at);
        let chunk = match reader.read_part(origin, at, len).await {
            Ok(chunk) => chunk,
            Err(e) if at == 0 => return Streamed::Unreadable(e),
            Err(e) => return outbox.fail(index, e.to_string()).await,
        };
        crc = crc32c::crc32c_append(crc, &chunk);
        let data = if at > 0 {
            chunk
        } else {
            let start = match data_set_offset(&chunk) {
                Ok(start) => start,
                Err(e) => {
                    return outbox
                        .fail(index, format!("{}: {e}", origin.location()))
                        .await
                }
            };
            let data = chunk.slice(start..);
            let read = data.len() as u64;
            let (head, rest) = match relocating.coercion(index) {
                None => (Bytes::new(), data),
                Some(coercion) => match coerce_head(&data, ts, &coercion) {
                    Ok((head, consumed)) => (Bytes::from(head), data.slice(consumed..)),
                    // Nothing sent yet: the caller reads it whole instead.
                    Err(e @ CoerceError::Short(_)) => return Streamed::Whole(e.to_string()),
                    Err(e) => {
                        return outbox
                            .fail(index, format!("{}: {e}", origin.location()))
                            .await
                    }
                },
            };
            let announced = head.len() as u64 + (length - start as u64 - read) + rest.len() as u64;
            if !outbox.start(index, announced).await {
                return Streamed::Done(false);
            }
            if !head.is_empty() && !outbox.push(head).await {
                return Streamed::Done(false);
            }
            rest
        };
        at += len;
        if !outbox.push(data).await {
            return Streamed::Done(false);
        }
    }
    outbox.finish(relocating, origin, index, crc).await
}

/// Most bytes held to re-encode a large instance as a stream: the file up to its top-level
/// Pixel Data, or the elements after it.
const MAX_AROUND_PIXELS: u64 = 64 << 20;

/// The parts of a large uncompressed instance around its top-level Pixel Data.
struct Around {
    /// The file up to the Pixel Data value (at least), as read.
    head: Bytes,
    /// Where the data set starts in the file.
    start: usize,
    pixel: PixelData,
}

/// Reads the start of a large uncompressed instance until its top-level Pixel Data.
async fn read_around(reader: &Reader, origin: &Origin, from: Native) -> Result<Around, Streamed> {
    let mut head = BytesMut::new();
    let mut walk = ElementWalk::new(from);
    let mut start = None;
    loop {
        let at = head.len() as u64;
        if at == origin.length() {
            return Err(Streamed::Whole("no top-level Pixel Data".into()));
        }
        if at >= MAX_AROUND_PIXELS {
            return Err(Streamed::Whole(format!(
                "more than {MAX_AROUND_PIXELS} bytes precede the Pixel Data"
            )));
        }
        let len = PART.min(origin.length() - at);
        let chunk = reader
            .read_part(origin, at, len)
            .await
            .map_err(Streamed::Unreadable)?;
        head.extend_from_slice(&chunk);
        let start = match start {
            Some(start) => start,
            None => {
                let found = data_set_offset(&head)
                    .map_err(|e| Streamed::Whole(format!("{}: {e}", origin.location())))?;
                walk.push(&head[found..]);
                *start.insert(found)
            }
        };
        if at > 0 {
            walk.push(&chunk);
        }
        if walk.is_lost() {
            return Err(Streamed::Whole(
                "a structure the element walk does not follow".into(),
            ));
        }
        if let Some(pixel) = walk.native_pixel_data() {
            return Ok(Around {
                head: head.freeze(),
                start,
                pixel,
            });
        }
    }
}

/// Streams a large instance re-encoded from one uncompressed syntax to another: the
/// elements before and after its top-level Pixel Data are re-encoded in memory, the pixel
/// data passes through in chunks (its 16-bit words swapped when the byte order changes),
/// and the CRC-32C of the stored file is checked at the end as in [`stream_large`].
async fn stream_reencoded(
    relocating: &Relocating,
    object: &StoredObject,
    origin: &Origin,
    index: usize,
    ts: &str,
    tx: &mpsc::Sender<Piece>,
) -> Streamed {
    let reader: &Reader = &relocating.reader;
    let (Some(from), Some(to)) = (Native::of(&object.transfer_syntax_uid), Native::of(ts)) else {
        return Streamed::Whole("not between uncompressed syntaxes".into());
    };
    let Around { head, start, pixel } = match read_around(reader, origin, from).await {
        Ok(around) => around,
        Err(streamed) => return streamed,
    };
    let value_at = start as u64 + pixel.value_at;
    let value_end = start as u64 + pixel.value_end();
    let Some(after) = origin.length().checked_sub(value_end) else {
        return Streamed::Whole(format!(
            "the Pixel Data runs past the end of {}",
            origin.location()
        ));
    };
    if after > MAX_AROUND_PIXELS {
        return Streamed::Whole(format!(
            "more than {MAX_AROUND_PIXELS} bytes follow the Pixel Data"
        ));
    }
    let tail = if after == 0 {
        Bytes::new()
    } else {
        match reader.read_part(origin, value_end, after).await {
            Ok(tail) => tail,
            Err(e) => return Streamed::Unreadable(e),
        }
    };
    let (stored, wanted) = (object.transfer_syntax_uid.clone(), ts.to_string());
    let mut elements = head.slice(start..start + pixel.header_at as usize);
    if let Some(coercion) = relocating.coercion(index) {
        match coerce(&elements, &object.transfer_syntax_uid, &coercion) {
            Ok(coerced) => elements = Bytes::from(coerced),
            Err(e) => return Streamed::Whole(e.to_string()),
        }
    }
    let tail_elements = tail.clone();
    let reencoded = tokio::task::spawn_blocking(move || {
        let (before, bits) = reencode_elements(&elements, &stored, &wanted)?;
        let after = if tail_elements.is_empty() {
            Vec::new()
        } else {
            reencode_elements(&tail_elements, &stored, &wanted)?.0
        };
        Ok::<_, TranscodeError>((before, bits, after))
    })
    .await;
    let (mut before, bits, after_out) = match reencoded {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return Streamed::Whole(e.to_string()),
        Err(e) => return Streamed::Whole(format!("transcoding task failed: {e}")),
    };
    let to_vr = pixel_data_vr(pixel.vr, bits.unwrap_or(16));
    let swap = swaps(from, pixel.vr.unwrap_or(*b"OW"), to, to_vr);
    before.extend(pixel_data_header(to, to_vr, pixel.length));
    let length = before.len() as u64 + u64::from(pixel.length) + after_out.len() as u64;
    let mut outbox = Outbox::new(tx);
    if !outbox.start(index, length).await {
        return Streamed::Done(false);
    }
    let mut crc = crc32c::crc32c(&head[..value_at as usize]);
    if !outbox.push(Bytes::from(before)).await {
        return Streamed::Done(false);
    }
    // The value is read again from its start, in chunks of even length, so no 16-bit word
    // is ever split between two chunks.
    let mut at = value_at;
    while at < value_end {
        let len = PART.min(value_end - at);
        let chunk = match reader.read_part(origin, at, len).await {
            Ok(chunk) => chunk,
            Err(e) => return outbox.fail(index, e.to_string()).await,
        };
        crc = crc32c::crc32c_append(crc, &chunk);
        let data = if swap {
            let mut words = BytesMut::from(&chunk[..]);
            swap_words(&mut words);
            words.freeze()
        } else {
            chunk
        };
        at += len;
        if !outbox.push(data).await {
            return Streamed::Done(false);
        }
    }
    crc = crc32c::crc32c_append(crc, &tail);
    if !outbox.push(Bytes::from(after_out)).await {
        return Streamed::Done(false);
    }
    outbox.finish(relocating, origin, index, crc).await
}
