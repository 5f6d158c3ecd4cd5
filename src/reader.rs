//! The reader: "give me the bytes of this instance", whichever tier holds them. Retrieve asks
//! here with the locator's [`StoredObject`]; each tier answers positioned range reads, so the
//! archive tier (S-DICOM containers) plugs in beside the online one without retrieve changing.
//!
//! With recovery attached ([`Reader::with_recovery`]), a primary copy that is missing or
//! fails its CRC-32C is answered from the instance's next good copy (near-line), and the
//! instance is queued in the locator for its primary to be re-created in the background.
//! Only copies of the instance's exact bytes (`original` format) stand in for a primary;
//! a lossy JPEG 2000 ROI copy is served only by [`Reader::read_lossy_copy`], for a retrieve
//! whose every lossless copy is gone, and is never written back as a primary.
//!
//! Every byte read is counted per tier (and kind of copy): in the process's metrics, and in
//! the locator's counters that every process adds to ([`count_reads_in_locator`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::archive::container::ContainerBuilder;
use crate::archive::seqfile::Placed;
use crate::archive::{Archive, ContainerWriter, LocalStore};
use crate::locator::copies::{Copy, CopyKind};
use crate::locator::jobs::{bytes_read_counter, READ_FROM};
use crate::locator::Locator;
use crate::metrics;
use crate::model::{StoredObject, Tier};
use crate::online::OnlineStore;
use crate::throttle::Throttle;

/// Why an instance could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {location} at {offset}+{length}: {source}")]
    Io {
        location: String,
        offset: u64,
        length: u64,
        source: std::io::Error,
    },
    #[error("{location} is damaged: CRC-32C {found:08x}, expected {expected:08x}")]
    Checksum {
        location: String,
        found: u32,
        expected: u32,
    },
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("cannot list the copies of {uid}: {source}")]
    Copies {
        uid: String,
        source: crate::locator::LocatorError,
    },
    #[error("{uid}: no intact backup copy ({tried} tried)")]
    NoGoodCopy { uid: String, tried: usize },
    #[error("{primary}; and {uid} has no intact backup copy ({tried} tried)")]
    Unrecoverable {
        uid: String,
        tried: usize,
        primary: Box<ReadError>,
    },
    #[error("{location}: offline copies are read only by `strata backup import-volume`")]
    Offline { location: String },
    #[error(
        "{uid}: every lossless copy is lost; only a lossy {format} copy survives (in {location})"
    )]
    OnlyLossy {
        uid: String,
        format: String,
        location: String,
    },
}

impl ReadError {
    /// Whether the copy is absent (file or container gone) rather than damaged.
    pub fn is_missing(&self) -> bool {
        let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        match self {
            ReadError::Io { source, .. } => not_found(source),
            ReadError::Archive(crate::archive::ArchiveError::Read { source, .. }) => {
                not_found(source)
            }
            _ => false,
        }
    }
}

/// Reads instances from the tiers.
#[derive(Debug, Clone)]
pub struct Reader {
    online: Arc<OnlineStore>,
    archive: Arc<Archive>,
    recovery: Option<Arc<Recovery>>,
}

/// Bytes read at a time from an instance too large to hold whole.
pub const PART: u64 = 4 << 20;

/// Instances larger than this are never held whole by the background workers (tiering,
/// backup): they are copied into containers in parts of [`PART`] bytes.
pub const HOLD_LIMIT: u64 = 64 << 20;

/// One instance's bytes on their way into a container: held whole, or (too large to hold)
/// read in parts from where they are while the container is written.
#[derive(Debug, Clone)]
pub enum Payload {
    Whole(Bytes),
    Parts(Origin),
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Whole(bytes) => bytes.len() as u64,
            Payload::Parts(origin) => origin.length(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// CRC-32C of the bytes (for parts, as the origin records it).
    pub fn crc32c(&self) -> u32 {
        match self {
            Payload::Whole(bytes) => crc32c::crc32c(bytes),
            Payload::Parts(origin) => origin.crc32c(),
        }
    }
}

/// Where the bytes of one instance's Part-10 file are read from: its primary, a near-line
/// copy of the same bytes, or an offline copy in a volume file at hand (`file`: where the
/// volume is now, e.g. mounted for `backup import-volume`).
#[derive(Debug, Clone)]
pub enum Origin {
    Primary(StoredObject),
    Nearline(Copy),
    Offline { file: PathBuf, copy: Copy },
}

impl Origin {
    pub fn location(&self) -> &str {
        match self {
            Origin::Primary(object) => &object.location,
            Origin::Nearline(copy) => &copy.location,
            Origin::Offline { copy, .. } => &copy.member,
        }
    }

    /// Length of the Part-10 file.
    pub fn length(&self) -> u64 {
        match self {
            Origin::Primary(object) => object.length,
            Origin::Nearline(copy) | Origin::Offline { copy, .. } => copy.length,
        }
    }

    /// CRC-32C of the Part-10 file.
    pub fn crc32c(&self) -> u32 {
        match self {
            Origin::Primary(object) => object.crc32c,
            Origin::Nearline(copy) | Origin::Offline { copy, .. } => copy.crc32c,
        }
    }
}

/// The file an [`Origin`] holds, read part by part ([`Reader::parts`]).
pub struct Parts<'a> {
    reader: &'a Reader,
    origin: &'a Origin,
    at: u64,
    crc: u32,
}

impl Parts<'_> {
    /// The next part of at most [`PART`] bytes; `None` after the last, once the CRC-32C of
    /// everything read matched the origin's (else the error says it is damaged).
    pub async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        let length = self.origin.length();
        if self.at == length {
            check_crc(self.origin.location(), self.crc, self.origin.crc32c())?;
            return Ok(None);
        }
        let len = PART.min(length - self.at);
        let part = self.reader.read_part(self.origin, self.at, len).await?;
        self.crc = crc32c::crc32c_append(self.crc, &part);
        self.at += len;
        Ok(Some(part))
    }
}

/// `length` bytes at `offset` in the local file at `path` (named `location` in errors).
async fn read_local(
    path: PathBuf,
    location: String,
    offset: u64,
    length: u64,
) -> Result<Bytes, ReadError> {
    tokio::task::spawn_blocking(move || {
        let io = |source| ReadError::Io {
            location: location.clone(),
            offset,
            length,
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        crate::buffers::read_at(&file, offset, length).map_err(io)
    })
    .await
    .expect("blocking read task")
}

/// Bytes this process read from each of [`READ_FROM`] and has not yet added to the
/// locator's counters (see [`count_reads_in_locator`]).
static NOT_IN_LOCATOR: [AtomicU64; READ_FROM.len()] =
    [const { AtomicU64::new(0) }; READ_FROM.len()];

/// How often a server adds its reads to the locator's counters.
const READS_TO_LOCATOR_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts `bytes` read from `from` (a tier or a kind of copy), once read: in the process's
/// metrics now, in the locator at the next [`count_reads_in_locator`].
fn count_read(from: &str, bytes: u64) {
    metrics::READ_BYTES.add(&[from], bytes as f64);
    if let Some(at) = READ_FROM.iter().position(|f| *f == from) {
        NOT_IN_LOCATOR[at].fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Adds the bytes this process read since the last call to the locator's counters, which
/// every process adds to (`strata status` shows their sums). What cannot be added now stays
/// for the next call: counting never fails a read.
pub async fn count_reads_in_locator(locator: &Locator) {
    for (at, from) in READ_FROM.iter().enumerate() {
        let bytes = NOT_IN_LOCATOR[at].swap(0, Ordering::Relaxed);
        if bytes == 0 {
            continue;
        }
        if let Err(e) = locator
            .add_to_counter(&bytes_read_counter(from), bytes)
            .await
        {
            NOT_IN_LOCATOR[at].fetch_add(bytes, Ordering::Relaxed);
            warn!(from, bytes, error = %e, "cannot add the bytes read to the locator");
        }
    }
}

/// A server's counting: its reads go to the locator every few seconds, and once more when
/// `shutdown` turns true.
pub async fn count_reads_until(locator: Arc<Locator>, mut shutdown: watch::Receiver<bool>) {
    loop {
        // A sender gone counts as shutdown too: never a loop that does not wait.
        let stop = tokio::select! {
            () = tokio::time::sleep(READS_TO_LOCATOR_EVERY) => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        count_reads_in_locator(&locator).await;
        if stop {
            return;
        }
    }
}

/// How a good copy is taken once found: its bytes read whole, or only checked in parts.
#[derive(Debug, Clone, Copy)]
enum Take {
    Read,
    Check,
}

/// What a reader needs to fall back to other copies.
#[derive(Debug)]
struct Recovery {
    locator: Arc<Locator>,
    nearline: LocalStore,
    /// Reads answered from a copy other than the primary since start (this process; the
    /// locator's `read_fallbacks` counter holds every process's total).
    fallbacks: AtomicU64,
}

impl Recovery {
    /// Counts a read served from a backup copy: in this reader, in the process's metrics
    /// and in the locator (so `strata status`, another process, can show it; counting must
    /// not fail a read that succeeded). This reader's count and the locator's total.
    async fn count_fallback(&self, uid: &str) -> (u64, Option<u64>) {
        let count = self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::READ_FALLBACKS.inc(&[]);
        let total = match self
            .locator
            .add_to_counter(crate::locator::jobs::READ_FALLBACKS, 1)
            .await
        {
            Ok(total) => Some(total),
            Err(e) => {
                warn!(sop_instance_uid = %uid, error = %e, "cannot count the fallback in the locator");
                None
            }
        };
        (count, total)
    }

    /// Records in the locator that a copy is missing or damaged (for Instance Availability).
    async fn mark_bad(&self, copy: &Copy) {
        if let Err(e) = self.locator.mark_copy(copy, true).await {
            warn!(sop_instance_uid = %copy.sop_instance_uid, error = %e, "cannot mark a copy bad");
        }
    }
}

impl Reader {
    pub fn new(online: Arc<OnlineStore>, archive: Arc<Archive>) -> Reader {
        Reader {
            online,
            archive,
            recovery: None,
        }
    }

    /// Lets [`Reader::read_instance`] fall back to the copies the locator lists, read from
    /// the near-line store.
    pub fn with_recovery(mut self, locator: Arc<Locator>, nearline: LocalStore) -> Reader {
        self.recovery = Some(Arc::new(Recovery {
            locator,
            nearline,
            fallbacks: AtomicU64::new(0),
        }));
        self
    }

    /// Reads answered from a copy other than the primary since this reader was made.
    pub fn fallbacks(&self) -> u64 {
        self.recovery
            .as_ref()
            .map_or(0, |r| r.fallbacks.load(Ordering::Relaxed))
    }

    /// Instance `uid` whose primary is `primary`, checked against its CRC-32C; if the primary
    /// is missing or damaged, from its next good copy (see [`Reader::read_fallback`]).
    pub async fn read_instance(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<Bytes, ReadError> {
        match self.read_verified(primary).await {
            Ok(bytes) => Ok(bytes),
            Err(e) => self.read_fallback(uid, primary, e).await,
        }
    }

    /// After the primary of `uid` failed with `failure`: the bytes of its next good copy. The
    /// instance is queued for its primary to be re-created, and the fallback logged and
    /// counted. Without recovery, or without a good copy, the error says so.
    pub async fn read_fallback(
        &self,
        uid: &str,
        primary: &StoredObject,
        failure: ReadError,
    ) -> Result<Bytes, ReadError> {
        let (bytes, copy) = self.fallback(uid, primary, failure, Take::Read).await?;
        match bytes {
            Some(bytes) => Ok(bytes),
            None => self.read_copy(&copy).await,
        }
    }

    /// As [`Reader::read_fallback`], for an instance too large to hold: its next near-line
    /// copy that checks out (read in parts, never whole), to be read from in parts.
    pub async fn fallback_origin(
        &self,
        uid: &str,
        primary: &StoredObject,
        failure: ReadError,
    ) -> Result<Origin, ReadError> {
        let (_, copy) = self.fallback(uid, primary, failure, Take::Check).await?;
        Ok(Origin::Nearline(copy))
    }

    async fn fallback(
        &self,
        uid: &str,
        primary: &StoredObject,
        failure: ReadError,
        take: Take,
    ) -> Result<(Option<Bytes>, Copy), ReadError> {
        let Some(recovery) = &self.recovery else {
            return Err(failure);
        };
        // Queued whatever copies survive: C-FIND's Instance Availability reads the queue, and
        // an offline volume import or a later backup copy may yet mend it.
        self.report_damaged(uid, &failure.to_string()).await;
        let found = match self.first_good_copy(uid, primary, take).await {
            Ok(found) => found,
            Err(e @ ReadError::OnlyLossy { .. }) => {
                warn!(sop_instance_uid = %uid, primary_tier = primary.tier.as_str(),
                    primary = %primary.location, error = %failure, "primary copy unreadable and no lossless copy left");
                return Err(e);
            }
            Err(ReadError::NoGoodCopy { uid, tried }) => {
                return Err(ReadError::Unrecoverable {
                    uid,
                    tried,
                    primary: Box::new(failure),
                })
            }
            Err(e) => return Err(e),
        };
        let copy = &found.1;
        let (count, total) = recovery.count_fallback(uid).await;
        warn!(sop_instance_uid = %uid, primary_tier = primary.tier.as_str(),
            primary = %primary.location, error = %failure, copy_kind = copy.kind.as_str(),
            copy = %copy.location, fallbacks = count, fallbacks_total = ?total,
            "primary copy unreadable; served from a backup copy");
        Ok(found)
    }

    /// The recovery parts and `uid`'s near-line copies of the same bytes as `primary` (same
    /// CRC-32C: a copy taken before the instance was overwritten is another version).
    /// Offline copies are left out: they sit on volumes, read back only by importing them.
    async fn nearline_copies(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<(&Recovery, Vec<Copy>), ReadError> {
        let recovery = self
            .recovery
            .as_deref()
            .ok_or_else(|| ReadError::NoGoodCopy {
                uid: uid.to_string(),
                tried: 0,
            })?;
        let copies = recovery
            .locator
            .copies_of(uid)
            .await
            .map_err(|source| ReadError::Copies {
                uid: uid.to_string(),
                source,
            })?;
        let copies = copies
            .into_iter()
            .filter(|c| c.source_crc32c == primary.crc32c && c.kind == CopyKind::Nearline)
            .collect();
        Ok((recovery, copies))
    }

    /// The bytes of the first of `uid`'s extra copies that reads back intact, and that copy.
    /// Only copies of the same bytes as `primary` count (same CRC-32C): a copy taken before
    /// the instance was overwritten is another version.
    pub async fn read_good_copy(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<(Bytes, Copy), ReadError> {
        let (bytes, copy) = self.first_good_copy(uid, primary, Take::Read).await?;
        match bytes {
            Some(bytes) => Ok((bytes, copy)),
            None => Ok((self.read_copy(&copy).await?, copy)),
        }
    }

    /// As [`Reader::read_good_copy`], checking each copy in parts and keeping no bytes: the
    /// copy that checks out.
    pub async fn check_good_copy(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<Copy, ReadError> {
        Ok(self.first_good_copy(uid, primary, Take::Check).await?.1)
    }

    async fn first_good_copy(
        &self,
        uid: &str,
        primary: &StoredObject,
        take: Take,
    ) -> Result<(Option<Bytes>, Copy), ReadError> {
        let (recovery, copies) = self.nearline_copies(uid, primary).await?;
        let mut tried = 0;
        let mut lossy = None;
        for copy in copies {
            if !copy.is_original() {
                lossy.get_or_insert(copy);
                continue;
            }
            tried += 1;
            let taken = match take {
                Take::Read => self.read_copy(&copy).await.map(Some),
                Take::Check => self.check_copy(&copy).await.map(|()| None),
            };
            match taken {
                Ok(bytes) => return Ok((bytes, copy)),
                Err(e) => {
                    warn!(sop_instance_uid = %uid, copy_kind = copy.kind.as_str(), copy = %copy.location, error = %e, "backup copy unreadable too");
                    recovery.mark_bad(&copy).await;
                }
            }
        }
        if let Some(copy) = lossy {
            return Err(ReadError::OnlyLossy {
                uid: uid.to_string(),
                format: copy.format,
                location: copy.location,
            });
        }
        Err(ReadError::NoGoodCopy {
            uid: uid.to_string(),
            tried,
        })
    }

    /// The last resort of a retrieve whose primary and lossless copies are all gone: the
    /// bytes of an intact lossy copy of the same version (marked lossy in its data set), and
    /// that copy. Logged as such, counted as a fallback, and the primary queued for repair
    /// (which only a lossless copy, e.g. from an offline volume, can do).
    pub async fn read_lossy_copy(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<(Bytes, Copy), ReadError> {
        let (recovery, copies) = self.nearline_copies(uid, primary).await?;
        for copy in copies.into_iter().filter(|c| !c.is_original()) {
            match self.read_copy(&copy).await {
                Ok(bytes) => {
                    let (count, _) = recovery.count_fallback(uid).await;
                    warn!(sop_instance_uid = %uid, copy_kind = copy.kind.as_str(), copy = %copy.location,
                        format = %copy.format, fallbacks = count,
                        "every lossless copy is lost; serving the lossy copy, marked lossy");
                    let reason = format!(
                        "every lossless copy is lost; only a lossy {} copy survives",
                        copy.format
                    );
                    if let Err(e) = recovery.locator.enqueue_repair(uid, &reason).await {
                        warn!(sop_instance_uid = %uid, error = %e, "cannot queue the primary for re-creation");
                    }
                    return Ok((bytes, copy));
                }
                Err(e) => {
                    warn!(sop_instance_uid = %uid, copy = %copy.location, error = %e, "lossy copy unreadable too");
                    recovery.mark_bad(&copy).await;
                }
            }
        }
        Err(ReadError::NoGoodCopy {
            uid: uid.to_string(),
            tried: 0,
        })
    }

    /// Queues `uid`'s primary for re-creation (damage found by a read, including a large
    /// instance found damaged only at the end of streaming it).
    pub async fn report_damaged(&self, uid: &str, reason: &str) {
        if let Some(recovery) = &self.recovery {
            if let Err(e) = recovery.locator.enqueue_repair(uid, reason).await {
                warn!(sop_instance_uid = %uid, error = %e, "cannot queue the primary for re-creation");
            }
        }
    }

    /// An extra copy's bytes, checked against its CRC-32C.
    pub async fn read_copy(&self, copy: &Copy) -> Result<Bytes, ReadError> {
        let bytes = self.read_copy_range(copy, 0, copy.length).await?;
        check(&copy.location, &bytes, copy.crc32c)?;
        Ok(bytes)
    }

    /// `length` bytes at `at` bytes into a near-line copy (unchecked: a part cannot be
    /// checked against the whole copy's CRC-32C, so the caller parses it as untrusted).
    pub async fn read_copy_range(
        &self,
        copy: &Copy,
        at: u64,
        length: u64,
    ) -> Result<Bytes, ReadError> {
        let recovery = self.recovery.as_ref().ok_or_else(|| ReadError::Offline {
            location: copy.location.clone(),
        })?;
        if copy.kind != CopyKind::Nearline {
            return Err(ReadError::Offline {
                location: copy.location.clone(),
            });
        }
        let bytes = crate::archive::read_file_range(
            &recovery.nearline,
            &copy.location,
            (copy.offset, copy.length),
            at,
            length,
        )
        .await?;
        count_read("nearline", length);
        Ok(bytes)
    }

    /// `length` bytes at `at` bytes into the instance's Part-10 file.
    pub async fn read_range(
        &self,
        object: &StoredObject,
        at: u64,
        length: u64,
    ) -> Result<Bytes, ReadError> {
        let bytes = match object.tier {
            Tier::Online => {
                let path = self.online.path(&object.location);
                read_local(path, object.location.clone(), object.offset + at, length).await?
            }
            // One positioned read inside the study's container (one per part crossed of a
            // file over 2 GiB).
            Tier::Archive => {
                crate::archive::read_file_range(
                    self.archive.as_ref(),
                    &object.location,
                    (object.offset, object.length),
                    at,
                    length,
                )
                .await?
            }
        };
        count_read(object.tier.as_str(), length);
        Ok(bytes)
    }

    /// The whole Part-10 file, checked against its stored CRC-32C.
    pub async fn read_verified(&self, object: &StoredObject) -> Result<Bytes, ReadError> {
        let bytes = self.read_range(object, 0, object.length).await?;
        check(&object.location, &bytes, object.crc32c)?;
        Ok(bytes)
    }

    /// `length` bytes at `at` bytes into the Part-10 file that `origin` holds.
    pub async fn read_part(
        &self,
        origin: &Origin,
        at: u64,
        length: u64,
    ) -> Result<Bytes, ReadError> {
        match origin {
            Origin::Primary(object) => self.read_range(object, at, length).await,
            Origin::Nearline(copy) => {
                let recovery = self.recovery.as_ref().ok_or_else(|| ReadError::Offline {
                    location: copy.location.clone(),
                })?;
                let bytes = crate::archive::read_file_range(
                    &recovery.nearline,
                    &copy.location,
                    (copy.offset, copy.length),
                    at,
                    length,
                )
                .await?;
                count_read("nearline", length);
                Ok(bytes)
            }
            Origin::Offline { file, copy } => {
                let location = format!("{}:{}", file.display(), copy.member);
                let bytes = read_local(file.clone(), location, copy.offset + at, length).await?;
                count_read("offline", length);
                Ok(bytes)
            }
        }
    }

    /// Reads the file `origin` holds in parts of [`PART`] bytes, checking its CRC-32C:
    /// whatever its size, one part is in memory at a time.
    pub async fn check(&self, origin: &Origin) -> Result<(), ReadError> {
        let mut parts = self.parts(origin);
        while parts.next().await?.is_some() {}
        Ok(())
    }

    /// The file `origin` holds, part by part.
    pub fn parts<'a>(&'a self, origin: &'a Origin) -> Parts<'a> {
        Parts {
            reader: self,
            origin,
            at: 0,
            crc: 0,
        }
    }

    /// Whether the primary `object` reads back intact (read in parts, see [`Reader::check`]).
    pub async fn check_primary(&self, object: &StoredObject) -> Result<(), ReadError> {
        self.check(&Origin::Primary(object.clone())).await
    }

    /// Whether a near-line copy reads back intact (in parts); offline copies are not read.
    pub async fn check_copy(&self, copy: &Copy) -> Result<(), ReadError> {
        if copy.kind != CopyKind::Nearline {
            return Err(ReadError::Offline {
                location: copy.location.clone(),
            });
        }
        self.check(&Origin::Nearline(copy.clone())).await
    }

    /// Instance `uid` for a worker to copy: its bytes (verified, from a backup copy if need
    /// be, as [`Reader::read_instance`]), or if it is over [`HOLD_LIMIT`] an intact origin
    /// to read in parts ([`Reader::intact_origin`]; logged).
    pub async fn payload(&self, uid: &str, primary: &StoredObject) -> Result<Payload, ReadError> {
        if primary.length <= HOLD_LIMIT {
            return Ok(Payload::Whole(self.read_instance(uid, primary).await?));
        }
        debug!(sop_instance_uid = %uid, bytes = primary.length, "too large to hold: copied in parts");
        Ok(Payload::Parts(self.intact_origin(uid, primary).await?))
    }

    /// An intact copy of instance `uid` to read in parts: its primary if that checks out,
    /// else its next near-line copy that does (see [`Reader::fallback_origin`]).
    pub async fn intact_origin(
        &self,
        uid: &str,
        primary: &StoredObject,
    ) -> Result<Origin, ReadError> {
        match self.check_primary(primary).await {
            Ok(()) => Ok(Origin::Primary(primary.clone())),
            Err(failure) => self.fallback_origin(uid, primary, failure).await,
        }
    }

    /// Appends instance `uid` to a container being built, paced by `throttle`: held bytes
    /// at once, or read from their origin in parts, their CRC-32C checked against the
    /// origin's at the end (a mismatch fails the container). Returns where its bytes are
    /// and their CRC-32C.
    pub async fn append<W: ContainerWriter>(
        &self,
        builder: &mut ContainerBuilder<W>,
        uid: &str,
        payload: &Payload,
        throttle: &mut Throttle,
    ) -> Result<(Placed, u32), ReadError> {
        let placed = builder.begin(uid, payload.len()).await?;
        let origin = match payload {
            Payload::Whole(bytes) => {
                builder.write_part(bytes).await?;
                throttle.pace(bytes.len() as u64).await;
                return Ok((placed, crc32c::crc32c(bytes)));
            }
            Payload::Parts(origin) => origin,
        };
        let mut parts = self.parts(origin);
        while let Some(part) = parts.next().await? {
            builder.write_part(&part).await?;
            throttle.pace(part.len() as u64).await;
        }
        Ok((placed, origin.crc32c()))
    }

    /// Records that a near-line copy was found damaged while it was read in parts.
    pub async fn report_bad_copy(&self, copy: &Copy) {
        if let Some(recovery) = &self.recovery {
            recovery.mark_bad(copy).await;
        }
    }
}

impl ReadError {
    /// The instance whose bytes are gone for good: its primary is damaged or missing (not
    /// merely unreachable) and no intact backup copy exists. `None` for anything a retry
    /// might get past (an I/O error, an unreachable archive, a locator error) and for a
    /// lossy-only survivor, whose primary failure is not known here.
    pub fn permanently_lost(&self) -> Option<&str> {
        match self {
            ReadError::Unrecoverable { uid, primary, .. } if primary.is_damage() => Some(uid),
            _ => None,
        }
    }

    /// The bytes were read and are wrong, or the file or container is not there (or ends
    /// early, or a container's record is not where the locator says): a statement about the
    /// data, not about reaching it.
    fn is_damage(&self) -> bool {
        let gone = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::InvalidData
            )
        };
        match self {
            ReadError::Checksum { .. } => true,
            ReadError::Io { source, .. } => gone(source),
            ReadError::Archive(crate::archive::ArchiveError::Read { source, .. }) => gone(source),
            _ => false,
        }
    }
}

fn check(location: &str, bytes: &[u8], expected: u32) -> Result<(), ReadError> {
    check_crc(location, crc32c::crc32c(bytes), expected)
}

fn check_crc(location: &str, found: u32, expected: u32) -> Result<(), ReadError> {
    if found != expected {
        return Err(ReadError::Checksum {
            location: location.to_string(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Where the data set starts in a Part-10 file: after the 128-byte preamble, `DICM` and the
/// File Meta Information group (always Explicit VR Little Endian). `head` needs to hold the
/// meta group; a few kilobytes always do.
pub fn data_set_offset(head: &[u8]) -> Result<usize, String> {
    if head.len() < 132 || &head[128..132] != b"DICM" {
        return Err("no DICM prefix".into());
    }
    let mut pos = 132;
    loop {
        let Some(h) = head.get(pos..pos + 8) else {
            // The meta group runs to the end of what we have: the data set is empty.
            return if pos == head.len() {
                Ok(pos)
            } else {
                Err("truncated file meta".into())
            };
        };
        if u16::from_le_bytes([h[0], h[1]]) != 0x0002 {
            return Ok(pos);
        }
        let vr = &h[4..6];
        let long = crate::codec::native::has_long_length(vr);
        let (len, header) = if long {
            let l = head.get(pos + 8..pos + 12).ok_or("truncated file meta")?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (u16::from_le_bytes([h[6], h[7]]) as usize, 8)
        };
        if len == u32::MAX as usize {
            return Err("undefined length in file meta".into());
        }
        pos += header + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_set_offset_walks_the_meta_group() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        // (0002,0000) UL 4
        f.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0, 10, 0, 0, 0]);
        // (0002,0001) OB, long form, 2 bytes
        f.extend_from_slice(&[2, 0, 1, 0, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 1]);
        let data_start = f.len();
        // (0008,0016) UI ...
        f.extend_from_slice(&[8, 0, 0x16, 0, b'U', b'I', 2, 0, b'1', 0]);
        assert_eq!(data_set_offset(&f), Ok(data_start));
        assert!(data_set_offset(&f[..100]).is_err());
        assert!(data_set_offset(&f[..140]).is_err());
    }
}
