//! Storing Part-10 files that arrive as files, not over an association: `strata import`
//! and the members of offline volumes go through [`Ingest::begin`] and its sink, so they
//! meet the same checks, the same durable write and the same commit as a C-STORE.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{read_part10_meta, Ingest, IngestSink, MetaError};
use crate::audit::Caller;
use crate::service::{Outcome, Principal, Status, StoreRequest, StoreSink, StoreStart};

/// Files (or volume members) stored at once by an import: their fsyncs overlap.
pub const PARALLEL: usize = 4;
/// Bytes read from a file per write to the ingest sink.
const CHUNK: usize = 256 * 1024;

/// Why a file was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot seek: {0}")]
    Seek(#[source] std::io::Error),
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Ingest refused it: the status and comment a C-STORE would have been answered with.
    #[error("{status} {comment}")]
    Refused { status: Status, comment: String },
    #[error("a blocking read stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Stores the Part-10 file at `path` as an operator's receipt, read a chunk at a time; its
/// size.
pub async fn store_file(ingest: &Ingest, path: &Path) -> Result<u64, FileStoreError> {
    let path = path.to_owned();
    let (file, request, size) = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(FileStoreError::Open)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (request, _) = read_part10_meta(&mut file)?;
        Ok::<_, FileStoreError>((file, request, size))
    })
    .await??;
    if let Some(sink) = begin(ingest, Principal::Operator, request)? {
        accepted(send(sink, file).await?)?;
    }
    Ok(size)
}

/// Stores a Part-10 file that is a member of an offline volume (`length` bytes at `offset`
/// in the volume file `volume`), read a chunk at a time. The member is a file Strata wrote,
/// so its sender (Source AE in the file meta) is kept: the stored file is then the member
/// byte for byte, and the volume's copy of it still counts.
pub async fn store_member(
    ingest: &Ingest,
    volume: &Path,
    offset: u64,
    length: u64,
) -> Result<(), FileStoreError> {
    use std::io::{Seek, SeekFrom};
    let volume: PathBuf = volume.to_owned();
    let (member, request, source_ae) = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&volume).map_err(FileStoreError::Open)?;
        file.seek(SeekFrom::Start(offset))
            .map_err(FileStoreError::Seek)?;
        let mut member = file.take(length);
        let (request, source_ae) = read_part10_meta(&mut member)?;
        Ok::<_, FileStoreError>((member, request, source_ae))
    })
    .await??;
    match begin(ingest, sender(source_ae), request)? {
        Some(sink) => accepted(send(sink, member).await?),
        None => Ok(()),
    }
}

/// [`store_member`] for a member already read (and checked) whole: no second read.
pub async fn store_member_bytes(ingest: &Ingest, member: Bytes) -> Result<(), FileStoreError> {
    let mut cursor = std::io::Cursor::new(&member[..]);
    let (request, source_ae) = read_part10_meta(&mut cursor)?;
    let data_set = member.slice(cursor.position() as usize..);
    let Some(mut sink) = begin(ingest, sender(source_ae), request)? else {
        return Ok(());
    };
    for chunk in data_set.chunks(CHUNK) {
        if let Err(outcome) = sink.write(chunk.to_vec()).await {
            sink.abandon().await;
            return accepted(outcome);
        }
    }
    accepted(sink.finish().await)
}

/// Stored as its original sender sent it, when the file says who that was.
fn sender(source_ae: Option<String>) -> Principal {
    source_ae.map_or(Principal::Operator, |aet| Principal::ae(&aet))
}

/// The ingest sink to send the data set into, or `None` when ingest answered at once with
/// a status that is not a failure (nothing to send); a refusal is an error.
fn begin(
    ingest: &Ingest,
    principal: Principal,
    request: StoreRequest,
) -> Result<Option<IngestSink>, FileStoreError> {
    match ingest.begin(&Caller::new(principal, None), request) {
        StoreStart::Receive(sink) => Ok(Some(sink)),
        StoreStart::Answer(outcome) => accepted(outcome).map(|()| None),
    }
}

/// The outcome as a result: a failure status is [`FileStoreError::Refused`].
fn accepted(outcome: Outcome) -> Result<(), FileStoreError> {
    if outcome.status.is_failure() {
        Err(FileStoreError::Refused {
            status: outcome.status,
            comment: outcome.comment.unwrap_or_default(),
        })
    } else {
        Ok(())
    }
}

/// Sends the rest of `data` (positioned at the data set) into `sink` a chunk at a time;
/// the outcome, or why it could not be read.
async fn send<R: Read + Send + 'static>(
    mut sink: IngestSink,
    mut data: R,
) -> Result<Outcome, FileStoreError> {
    loop {
        let (back, read) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let n = data.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (data, n)
        })
        .await?;
        data = back;
        let chunk = match read {
            Ok(chunk) => chunk,
            Err(e) => {
                sink.abandon().await;
                return Err(FileStoreError::Read(e));
            }
        };
        if chunk.is_empty() {
            break;
        }
        if let Err(outcome) = sink.write(chunk).await {
            sink.abandon().await;
            return Ok(outcome);
        }
    }
    Ok(sink.finish().await)
}
