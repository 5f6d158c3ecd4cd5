//! C-STORE into the online tier: stream the data set to a temporary Part-10 file, read and
//! check its attributes, rename it into its study folder, sync its data and the folder (at
//! once), commit the locator row, and only then answer Success. The last three steps are a
//! group commit (`commit`): instances of every association that finish together sync at
//! once, share the folder syncs and one locator commit.
//!
//! A crash at any point leaves either nothing visible (the temporary is removed at the next
//! start) or, between rename and commit, an unindexed file under a name no row refers to; the
//! sender got no Success and retries. Such orphans are harmless; a scrub (`strata verify`,
//! backup issue) is where they will be found and removed.
//!
//! Duplicates are decided by the locator in the same transaction that records the instance,
//! so concurrent stores of one SOP Instance UID, even from two processes, keep exactly one.
//!
//! An IOCM rejection note (a Key Object Selection document titled from CID 7011) is applied
//! before it is committed like any other instance (`rejection`, [`Locator::reject`]).

pub mod attributes;
mod commit;
pub mod import;
pub mod import_volume;
pub mod rejection;

use std::io;
use std::sync::Arc;

pub use attributes::{read_attributes, read_attributes_with_head, AttributeError};

use crate::audit::{Auditor, Caller, Entry, Event};
use crate::codec::native::Native;
use crate::codec::walk::ElementWalk;
use crate::config::DuplicatePolicy;
use crate::locator::Locator;
use crate::model::rejection::KEY_OBJECT_SELECTION;
use crate::model::transfer_syntax::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
use crate::model::IndexedAttributes;
use crate::online::{part10_header, OnlineStore, Part10Writer, WrittenFile};
use crate::service::{Outcome, Status, StoreRequest, StoreSink, StoreStart};

use commit::{Committer, Finished};
use rejection::read_rejection_note;

/// The store service: online tier plus locator.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    online: Arc<OnlineStore>,
    locator: Arc<Locator>,
    duplicates: DuplicatePolicy,
    /// `[backup] enqueue_on_receive`: queue the study for backup with each new instance.
    enqueue_backup: bool,
    /// `[storage] max_instance_mb` in bytes (0: no limit).
    max_instance_bytes: u64,
    /// Sends each commit's stores to syslog (their audit rows go with the instances').
    auditor: Option<Auditor>,
    /// Our AE title: the Source AE Title of instances from principals without one (web
    /// users), since the file is then first written by us.
    receiving_ae: String,
    /// The group commit, started with the first instance (after the settings above).
    committer: std::sync::OnceLock<Committer>,
}

/// Who sent an instance: the Source AE Title its file meta gets, and the audit's caller and
/// address.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub source_ae: String,
    pub who: String,
    pub address: String,
}

impl Ingest {
    pub fn new(
        online: Arc<OnlineStore>,
        locator: Arc<Locator>,
        duplicates: DuplicatePolicy,
    ) -> Ingest {
        Ingest {
            inner: Arc::new(Inner {
                online,
                locator,
                duplicates,
                enqueue_backup: false,
                max_instance_bytes: 0,
                auditor: None,
                receiving_ae: String::new(),
                committer: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sends what each commit stored to `auditor`'s syslog.
    pub fn with_auditor(mut self, auditor: Auditor) -> Ingest {
        Arc::make_mut(&mut self.inner).auditor = Some(auditor);
        self
    }

    /// Names `aet` (ours) as the Source AE Title of instances stored by principals without
    /// an AE title of their own (STOW-RS from web users).
    pub fn receiving_ae(mut self, aet: &str) -> Ingest {
        Arc::make_mut(&mut self.inner).receiving_ae = aet.trim().to_string();
        self
    }

    /// Queues each received instance's study for a near-line copy, in the same locator
    /// transaction that records the instance (`[backup] enqueue_on_receive`).
    pub fn backup_on_receive(mut self, on: bool) -> Ingest {
        Arc::make_mut(&mut self.inner).enqueue_backup = on;
        self
    }

    /// Refuses data sets larger than `mb` MiB with 0xA700 (`[storage] max_instance_mb`; 0
    /// for no limit).
    pub fn max_instance_mb(mut self, mb: u64) -> Ingest {
        Arc::make_mut(&mut self.inner).max_instance_bytes = mb.saturating_mul(1 << 20);
        self
    }
}

impl Inner {
    /// Turns a written temporary file into an indexed, durable instance.
    async fn commit(
        &self,
        written: WrittenFile,
        parsed: Result<IndexedAttributes, AttributeError>,
        request: &StoreRequest,
        sender: &Sender,
        expected_study: Option<&str>,
    ) -> Outcome {
        let attributes = match parsed {
            Ok(a) => a,
            Err(e) => {
                drop(written); // removes the temporary
                let status = match e {
                    AttributeError::Parse(_) => Status::CannotUnderstand,
                    AttributeError::Missing(_) | AttributeError::BadUid { .. } => {
                        Status::DataSetDoesNotMatchSopClass
                    }
                };
                return Outcome::failure(status, e.to_string());
            }
        };
        let instance = &attributes.instance;
        if instance.sop_instance_uid != request.sop_instance_uid
            || instance.sop_class_uid != request.sop_class_uid
        {
            drop(written); // removes the temporary
            return Outcome::failure(
                Status::DataSetDoesNotMatchSopClass,
                "SOP Class/Instance UID in the data set differ from the command",
            );
        }
        if let Some(study) = expected_study {
            if attributes.study.study_instance_uid != study {
                drop(written); // removes the temporary
                return Outcome::failure(
                    Status::DataSetDoesNotMatchSopClass,
                    format!(
                        "StudyInstanceUID {} is not the study {study} the request names",
                        attributes.study.study_instance_uid
                    ),
                );
            }
        }
        if instance.sop_class_uid == KEY_OBJECT_SELECTION {
            if let Err(refused) = self.apply_rejection(written.path.path(), sender).await {
                drop(written); // removes the temporary
                return refused;
            }
        }

        let committer = self.committer.get_or_init(|| {
            Committer::start(
                self.online.clone(),
                self.locator.clone(),
                self.duplicates,
                self.enqueue_backup,
                self.auditor.clone(),
            )
        });
        committer
            .commit(Finished {
                written,
                attributes,
                transfer_syntax_uid: request.transfer_syntax_uid.clone(),
                sender: sender.clone(),
            })
            .await
    }

    /// Applies the rejection note in the written file at `path`, if the Key Object Selection
    /// document is one (IOCM): before the note itself is stored, so the sender's Success
    /// means the instances it names are gone from every query and retrieve. A note resent
    /// after a lost answer hides nothing more.
    async fn apply_rejection(
        &self,
        path: &std::path::Path,
        sender: &Sender,
    ) -> Result<(), Outcome> {
        let path = path.to_owned();
        let note = match tokio::task::spawn_blocking(move || read_rejection_note(&path)).await {
            Ok(Ok(Some(note))) => note,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                return Err(Outcome::failure(
                    Status::DataSetDoesNotMatchSopClass,
                    format!("rejection note: {e}"),
                ))
            }
            Err(e) => {
                return Err(Outcome::failure(
                    Status::ProcessingFailure,
                    format!("reading the rejection note: {e}"),
                ))
            }
        };
        let hidden = self
            .locator
            .reject(&note, &sender.who, &sender.address)
            .await
            .map_err(|e| {
                Outcome::failure(
                    Status::ProcessingFailure,
                    format!("applying the rejection note: {e}"),
                )
            })?;
        tracing::info!(note = %note.sop_instance_uid, code = note.code.code(), who = %sender.who,
            hidden = hidden.instances, not_found = hidden.not_found, "rejection note applied");
        if let Some(auditor) = &self.auditor {
            let detail = format!(
                "{} instances: {} ({})",
                hidden.instances,
                note.code.meaning(),
                note.code.code()
            );
            for study in &hidden.studies {
                let entry = Entry {
                    address: &sender.address,
                    study: Some(study),
                    detail: &detail,
                    ..Entry::new(Event::Rejected, &sender.who)
                };
                auditor.send(&entry, crate::locator::now_millis());
            }
        }
        Ok(())
    }
}

/// Why a Part-10 stream's preamble and file meta could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not a DICOM Part-10 file (too short)")]
    TooShort,
    #[error("not a DICOM Part-10 file ({0})")]
    NotPart10(crate::dataset::ScanError),
    #[error("file meta lacks SOP Instance UID or transfer syntax")]
    Incomplete,
}

/// Reads the preamble and file meta of a Part-10 stream, leaving it at the data set: the
/// store request it makes, and the meta's Source Application Entity Title, if any.
pub fn read_part10_meta(
    r: &mut impl std::io::Read,
) -> Result<(StoreRequest, Option<String>), MetaError> {
    let mut preamble = [0u8; 128];
    r.read_exact(&mut preamble)
        .map_err(|_| MetaError::TooShort)?;
    let meta = crate::dataset::read_file_meta(r).map_err(MetaError::NotPart10)?;
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let request = StoreRequest {
        sop_class_uid: trim(meta.media_storage_sop_class_uid()),
        sop_instance_uid: trim(meta.media_storage_sop_instance_uid()),
        transfer_syntax_uid: trim(meta.transfer_syntax()),
        move_originator_ae: None,
    };
    if request.sop_instance_uid.is_empty() || request.transfer_syntax_uid.is_empty() {
        return Err(MetaError::Incomplete);
    }
    let source_ae = meta
        .source_application_entity_title
        .as_deref()
        .map(trim)
        .filter(|ae| !ae.is_empty());
    Ok((request, source_ae))
}

/// Maps an I/O failure to the C-STORE status a sender can act on.
fn io_status(e: Option<&io::Error>) -> Status {
    match e.and_then(io::Error::raw_os_error) {
        // ENOSPC, EDQUOT: out of resources, retry later.
        Some(28) | Some(122) => Status::OutOfResources,
        _ => Status::ProcessingFailure,
    }
}

/// One C-STORE data set on its way to disk.
#[derive(Debug)]
pub struct IngestSink {
    ingest: Arc<Inner>,
    request: StoreRequest,
    sender: Sender,
    writer: Part10Writer,
    /// Follows the element headers as the data set streams in: a data set that ends inside
    /// an element is refused (`None` for syntaxes it cannot follow).
    walk: Option<ElementWalk>,
    /// Data set bytes received so far.
    received: u64,
    /// The study the instance must belong to (STOW-RS to `/studies/{study}`).
    expected_study: Option<String>,
}

impl IngestSink {
    /// Refuses the instance at `finish` unless its Study Instance UID is `study`.
    pub fn expect_study(&mut self, study: String) {
        self.expected_study = Some(study);
    }
}

impl Ingest {
    /// Starts storing one instance, whatever brought it (C-STORE, STOW-RS, an import): the
    /// data set streams into a temporary file. The principal's AE title is written as the
    /// Source AE Title of its file meta (ours for web users, who have none). Whether `from`
    /// may store is its front end's check, made before the data set is read.
    pub fn begin(&self, from: &Caller, request: StoreRequest) -> StoreStart<IngestSink> {
        let inner = &self.inner;
        let source_ae = match from.principal.source_ae() {
            "" => inner.receiving_ae.as_str(),
            aet => aet,
        };
        // Duplicates are decided when the instance is recorded, in the same transaction:
        // checking here as well would cost a locator round trip on every instance.
        let header = match part10_header(
            &request.sop_class_uid,
            &request.sop_instance_uid,
            &request.transfer_syntax_uid,
            source_ae,
        ) {
            Ok(h) => h,
            Err(e) => {
                return StoreStart::Answer(Outcome::failure(
                    Status::CannotUnderstand,
                    format!("cannot build file meta: {e}"),
                ))
            }
        };
        // The temporary is created with the first write (one trip to the blocking pool for an
        // instance written in one go).
        let temp = inner.online.temp_file();
        tracing::debug!(sop_instance_uid = %request.sop_instance_uid, temp = %temp.path().display(), "receiving a C-STORE data set");
        StoreStart::Receive(IngestSink {
            ingest: inner.clone(),
            sender: Sender {
                source_ae: source_ae.to_string(),
                who: from.who(),
                address: from.ip(),
            },
            expected_study: None,
            walk: walk_for(&request.transfer_syntax_uid),
            request,
            writer: Part10Writer::new(temp, header),
            received: 0,
        })
    }
}

/// The element walk for a data set in `transfer_syntax_uid`: every syntax we accept but the
/// deflated one (whose bytes are not elements until inflated); the encapsulated ones are
/// Explicit VR Little Endian.
fn walk_for(transfer_syntax_uid: &str) -> Option<ElementWalk> {
    match transfer_syntax_uid {
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => None,
        uid => Some(ElementWalk::new(
            Native::of(uid).unwrap_or(Native::ExplicitLittle),
        )),
    }
}

impl StoreSink for IngestSink {
    async fn write(&mut self, fragment: Vec<u8>) -> Result<(), Outcome> {
        self.received += fragment.len() as u64;
        let limit = self.ingest.max_instance_bytes;
        if limit > 0 && self.received > limit {
            return Err(Outcome::failure(
                Status::OutOfResources,
                format!("data set over [storage] max_instance_mb = {}", limit >> 20),
            ));
        }
        if let Some(walk) = &mut self.walk {
            walk.push(&fragment);
        }
        self.writer
            .write(&fragment)
            .await
            .map_err(|e| Outcome::failure(io_status(Some(&e)), format!("writing: {e}")))
    }

    async fn finish(self) -> Outcome {
        let IngestSink {
            ingest,
            request,
            sender,
            writer,
            walk,
            expected_study,
            ..
        } = self;
        if let Some(Err(truncated)) = walk.as_ref().map(ElementWalk::finish) {
            drop(writer); // removes the temporary
            return Outcome::failure(Status::CannotUnderstand, truncated.to_string());
        }
        let native_pixel_bytes = walk.as_ref().and_then(ElementWalk::native_pixel_data_len);
        // Parse in the same blocking call as the last write, from memory when possible.
        let length = writer.length();
        let parse = move |path: &std::path::Path, head: &[u8]| {
            read_attributes_with_head(path, head, length, native_pixel_bytes)
        };
        match writer.finish_then(parse).await {
            Ok((written, parsed)) => {
                let expected = expected_study.as_deref();
                ingest
                    .commit(written, parsed, &request, &sender, expected)
                    .await
            }
            // The temporary went with the writer.
            Err(e) => Outcome::failure(io_status(Some(&e)), format!("writing: {e}")),
        }
    }

    async fn abandon(self) {
        // Dropping the writer removes the temporary.
    }
}
