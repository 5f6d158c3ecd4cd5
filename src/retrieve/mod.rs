//! The C-MOVE and C-GET service: turns a retrieve identifier into the list of instances to
//! send (through the locator) and hands their data sets to the network layer through the
//! [`Reader`], whichever tier holds them, prefetching ahead of the network.

pub mod coerce;
mod stream;
pub mod transcode;

use std::sync::Arc;

use dicom_dictionary_std::tags;
use tokio::sync::{mpsc, Semaphore};

use crate::audit::{Auditor, Caller, Entry, Event};
use crate::identifier::{self, Identifier};
use crate::ingest::attributes::metadata_from_head;
use crate::locator::frames::FramePlace;
use crate::locator::retrieve::required_key;
pub use crate::locator::retrieve::{MetadataRow, RetrieveKeys};
use crate::locator::Locator;
use crate::model::correction::Coercion;
use crate::model::levels::FrameLevels;
use crate::model::matching::Matcher;
use crate::model::query::QueryLevel;
use crate::model::sop_class::{
    PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE,
};
use crate::model::StoredObject;
use crate::net::RetrieveRequest;
use crate::reader::Reader;
use crate::renditions::{self, Renditions};
use crate::service::{Outcome, Piece, Retrieval, RetrieveItem, Status};

/// Settings of the retrieve service.
#[derive(Debug, Clone)]
pub struct RetrieveOptions {
    /// Most instances one C-MOVE/C-GET may send; more is refused with Out of Resources.
    pub max_instances: usize,
    /// Instances read ahead of the network, in parallel.
    pub prefetch: usize,
    /// Instances decoded frame by frame at once, over all retrieves (each holds a blocking
    /// thread while its peer reads); more wait for a turn.
    pub frame_decoders: usize,
    /// Whether reduced views read only the resolution levels they need
    /// ([`Instances::reduced_head`]); false: always whole.
    pub resolution_levels: bool,
}

/// The most bytes of an instance held to describe it (its header must fit).
pub const DESCRIBE_HEAD: usize = 16 << 20;
/// Instances remembered as not describable (then forgotten all at once).
const UNDESCRIBABLE_KEPT: usize = 10_000;

/// The C-MOVE/C-GET service.
#[derive(Debug, Clone)]
pub struct Retrieve {
    locator: Arc<Locator>,
    reader: Reader,
    options: RetrieveOptions,
    /// Instances without metadata that could not be described: not read again.
    undescribable: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    auditor: Option<Auditor>,
    /// Turns to decode frame by frame (`RetrieveOptions::frame_decoders`).
    decoders: Arc<Semaphore>,
    /// Rendered images and thumbnails kept for the next request.
    renditions: Option<Renditions>,
}

/// The instances of one C-MOVE or C-GET.
#[derive(Debug)]
pub struct Instances {
    items: Vec<RetrieveItem>,
    uids: Arc<Vec<String>>,
    objects: Arc<Vec<StoredObject>>,
    /// Per instance, the index's values to send it with when its study was corrected.
    coercions: Arc<Vec<Option<Arc<Coercion>>>>,
    locator: Arc<Locator>,
    reader: Reader,
    prefetch: usize,
    decoders: Arc<Semaphore>,
    resolution_levels: bool,
    renditions: Option<Renditions>,
}

fn refuse(status: Status, comment: impl Into<String>) -> Outcome {
    Outcome::failure(status, comment)
}

/// Why the instances of a retrieve could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error("more than {0} instances")]
    TooMany(usize),
    #[error(transparent)]
    Locator(#[from] crate::locator::LocatorError),
}

impl RetrieveError {
    fn outcome(self) -> Outcome {
        match self {
            RetrieveError::TooMany(_) => refuse(Status::SubOperationsRefused, self.to_string()),
            RetrieveError::Locator(_) => refuse(Status::ProcessingFailure, self.to_string()),
        }
    }
}

impl Retrieve {
    pub fn new(locator: Arc<Locator>, reader: Reader, options: RetrieveOptions) -> Retrieve {
        let decoders = Arc::new(Semaphore::new(options.frame_decoders.max(1)));
        Retrieve {
            locator,
            reader,
            options,
            undescribable: Arc::default(),
            auditor: None,
            decoders,
            renditions: None,
        }
    }

    /// Keeps rendered images and thumbnails in `renditions` (see [`Instances::rendition`]).
    pub fn with_renditions(mut self, renditions: Renditions) -> Retrieve {
        self.renditions = Some(renditions);
        self
    }

    /// Records every retrieve in `auditor`'s trail.
    pub fn with_auditor(mut self, auditor: Auditor) -> Retrieve {
        self.auditor = Some(auditor);
        self
    }

    /// Appends the audit entries of a retrieve by `caller` (`via`: C-MOVE, WADO-RS, ...):
    /// one per study the keys name, or one for the patient or the failure.
    async fn audit(
        &self,
        caller: &Caller,
        via: &str,
        keys: &RetrieveKeys,
        result: Result<usize, &str>,
    ) {
        let Some(auditor) = &self.auditor else { return };
        let who = caller.who();
        let address = caller.ip();
        // Nothing to send is a failure too (404, or a C-MOVE of nothing).
        let result = result.and_then(|count| match count {
            0 => Err("no matching instances"),
            n => Ok(n),
        });
        let detail = match result {
            Ok(count) => format!("{via} {count} instances"),
            Err(why) => format!("{via}: {why}"),
        };
        let entry = Entry {
            address: &address,
            patient: keys.patient_id.as_deref(),
            detail: &detail,
            failed: result.is_err(),
            ..Entry::new(Event::Retrieved, &who)
        };
        if keys.study_instance_uids.is_empty() {
            return auditor.record_access(&entry).await;
        }
        for study in &keys.study_instance_uids {
            let entry = Entry {
                study: Some(study),
                ..entry
            };
            auditor.record_access(&entry).await;
        }
    }

    /// Checks the identifier of `caller`'s request and lists the instances it names.
    pub async fn begin(
        &self,
        caller: &Caller,
        request: RetrieveRequest,
    ) -> Result<Instances, Outcome> {
        let via = match request.sop_class_uid.as_str() {
            PATIENT_ROOT_GET | STUDY_ROOT_GET => "C-GET",
            _ => "C-MOVE",
        };
        let keys = match self.parse(&request) {
            Ok(keys) => keys,
            Err(outcome) => {
                let why = outcome.comment.clone().unwrap_or_default();
                self.audit(caller, via, &RetrieveKeys::default(), Err(&why))
                    .await;
                return Err(outcome);
            }
        };
        let result = self.instances(&keys).await;
        match &result {
            Ok(instances) => {
                self.audit(caller, via, &keys, Ok(instances.items.len()))
                    .await
            }
            Err(e) => self.audit(caller, via, &keys, Err(&e.to_string())).await,
        }
        result.map_err(RetrieveError::outcome)
    }

    /// The instances `keys` name, for `caller` (`via`: which WADO request).
    pub async fn instances_for(
        &self,
        caller: &Caller,
        via: &str,
        keys: &RetrieveKeys,
    ) -> Result<Instances, RetrieveError> {
        let result = self.instances(keys).await;
        match &result {
            Ok(instances) => {
                self.audit(caller, via, keys, Ok(instances.items.len()))
                    .await
            }
            Err(e) => self.audit(caller, via, keys, Err(&e.to_string())).await,
        }
        result
    }

    fn parse(&self, request: &RetrieveRequest) -> Result<RetrieveKeys, Outcome> {
        let model = request.sop_class_uid.as_str();
        let study_root = match model {
            STUDY_ROOT_MOVE | STUDY_ROOT_GET => true,
            PATIENT_ROOT_MOVE | PATIENT_ROOT_GET => false,
            _ => {
                return Err(refuse(
                    Status::SopClassNotSupported,
                    "only Patient Root and Study Root MOVE/GET",
                ))
            }
        };
        parse_identifier(request, study_root)
    }

    /// The metadata of the instances `keys` name (WADO-RS `/metadata`), from the locator
    /// alone: no stored file or archive container is read, except once for instances
    /// stored without metadata (see [`Retrieve::describe`]).
    pub async fn metadata(
        &self,
        caller: &Caller,
        keys: &RetrieveKeys,
    ) -> Result<Vec<MetadataRow>, RetrieveError> {
        let via = "WADO-RS metadata";
        let mut rows = match self
            .locator
            .instance_metadata(keys, self.options.max_instances)
            .await
        {
            Ok(rows) if rows.len() > self.options.max_instances => {
                let e = RetrieveError::TooMany(self.options.max_instances);
                self.audit(caller, via, keys, Err(&e.to_string())).await;
                return Err(e);
            }
            Ok(rows) => rows,
            Err(e) => {
                self.audit(caller, via, keys, Err(&e.to_string())).await;
                return Err(e.into());
            }
        };
        self.audit(caller, via, keys, Ok(rows.len())).await;
        if rows.iter().any(|row| row.json.is_none()) {
            self.describe(&mut rows).await;
        }
        for row in &mut rows {
            if let (Some(json), Some(coercion)) = (&row.json, &row.coercion) {
                row.json = Some(coerce::coerce_json(json, coercion));
            }
        }
        Ok(rows)
    }

    /// Instances without metadata (stored before it was kept, or whose header was longer
    /// than what ingest parses in one go) are read once from whichever tier holds them,
    /// one at a time and only their first [`DESCRIBE_HEAD`] bytes (reading stops there),
    /// described, and the description kept: the next request needs the locator alone. One
    /// that cannot be read or described, or of which only a lossy substitute is left, stays
    /// without (the answer then says so) and is not read again by this process.
    async fn describe(&self, rows: &mut [MetadataRow]) {
        let undescribable =
            |uid: &str| self.undescribable.lock().is_ok_and(|set| set.contains(uid));
        let keys = RetrieveKeys {
            sop_instance_uids: rows
                .iter()
                .filter(|row| row.json.is_none() && !undescribable(&row.sop_instance_uid))
                .map(|row| row.sop_instance_uid.clone())
                .collect(),
            ..RetrieveKeys::default()
        };
        if keys.sop_instance_uids.is_empty() {
            return;
        }
        let mut instances = match self.instances(&keys).await {
            Ok(instances) => instances,
            Err(e) => return tracing::warn!(error = %e, "cannot list instances to describe"),
        };
        // Described as stored: a correction is applied when the metadata is answered.
        instances.coercions = Arc::default();
        for (index, item) in instances.items.iter().enumerate() {
            let described = match self.head_of(&instances, index).await {
                Some((head, whole)) => {
                    let crc32c = instances.objects[index].crc32c;
                    self.keep_description(&item.sop_instance_uid, crc32c, head, whole)
                        .await
                }
                None => None,
            };
            match described {
                Some(json) => {
                    if let Some(row) = rows
                        .iter_mut()
                        .find(|row| row.sop_instance_uid == item.sop_instance_uid)
                    {
                        row.json = Some(json);
                    }
                }
                None => {
                    if let Ok(mut set) = self.undescribable.lock() {
                        if set.len() >= UNDESCRIBABLE_KEPT {
                            set.clear();
                        }
                        set.insert(item.sop_instance_uid.clone());
                    }
                }
            }
        }
    }

    /// The first [`DESCRIBE_HEAD`] bytes of entry `index` as a Part-10 file, as stored, and
    /// whether that is the whole file; `None` when it cannot be read or only a lossy
    /// substitute is left.
    async fn head_of(&self, instances: &Instances, index: usize) -> Option<(Vec<u8>, bool)> {
        let item = &instances.items[index];
        let mut head = crate::online::part10_header(
            &item.sop_class_uid,
            &item.sop_instance_uid,
            &item.transfer_syntax_uid,
            "",
        )
        .ok()?;
        let mut pieces = instances.read(vec![(index, item.transfer_syntax_uid.clone())]);
        let mut whole = false;
        while let Some(piece) = pieces.recv().await {
            match piece {
                Piece::Start {
                    warning: Some(warning),
                    ..
                } => {
                    tracing::warn!(sop_instance_uid = %item.sop_instance_uid, %warning, "not described from a substitute");
                    return None;
                }
                Piece::Start { length, .. } => {
                    whole = (head.len() as u64).saturating_add(length) <= DESCRIBE_HEAD as u64;
                }
                Piece::Data(bytes) => {
                    let room = DESCRIBE_HEAD.saturating_sub(head.len());
                    head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    if head.len() >= DESCRIBE_HEAD {
                        // Dropping the receiver stops the read.
                        break;
                    }
                }
                Piece::Failed { reason, .. } => {
                    tracing::warn!(sop_instance_uid = %item.sop_instance_uid, %reason, "cannot read an instance to describe it");
                    return None;
                }
            }
        }
        Some((head, whole))
    }

    /// Describes one instance from its Part-10 `head` (`whole`: the entire file, whose
    /// CRC-32C the locator gave as `crc32c`) and keeps the description; `None` when it
    /// cannot be described.
    async fn keep_description(
        &self,
        uid: &str,
        crc32c: u32,
        head: Vec<u8>,
        whole: bool,
    ) -> Option<String> {
        let described = tokio::task::spawn_blocking(move || metadata_from_head(&head, whole)).await;
        let Ok(Some(json)) = described else {
            tracing::warn!(sop_instance_uid = %uid, "cannot describe an instance: its header does not parse or is too long");
            return None;
        };
        match self.locator.keep_metadata(uid, crc32c, &json).await {
            Ok(()) => {
                tracing::info!(sop_instance_uid = %uid, "described an instance stored without metadata")
            }
            Err(e) => {
                tracing::warn!(sop_instance_uid = %uid, error = %e, "cannot keep an instance's metadata")
            }
        }
        Some(json)
    }

    /// Lists the instances `keys` name, in sending order (protocol-neutral: C-MOVE, C-GET
    /// and WADO-RS all start here).
    async fn instances(&self, keys: &RetrieveKeys) -> Result<Instances, RetrieveError> {
        let rows = self
            .locator
            .retrieve_instances(keys, self.options.max_instances)
            .await?;
        if rows.len() > self.options.max_instances {
            return Err(RetrieveError::TooMany(self.options.max_instances));
        }
        let mut items = Vec::with_capacity(rows.len());
        let mut objects = Vec::with_capacity(rows.len());
        let mut coercions = Vec::with_capacity(rows.len());
        for row in rows {
            items.push(RetrieveItem {
                sop_class_uid: row.sop_class_uid,
                sop_instance_uid: row.sop_instance_uid,
                transfer_syntax_uid: row.object.transfer_syntax_uid.clone(),
            });
            objects.push(row.object);
            coercions.push(row.coercion);
        }
        let uids = items
            .iter()
            .map(|i: &RetrieveItem| i.sop_instance_uid.clone())
            .collect();
        Ok(Instances {
            items,
            uids: Arc::new(uids),
            objects: Arc::new(objects),
            coercions: Arc::new(coercions),
            locator: self.locator.clone(),
            reader: self.reader.clone(),
            prefetch: self.options.prefetch.max(1),
            decoders: self.decoders.clone(),
            resolution_levels: self.options.resolution_levels,
            renditions: self.renditions.clone(),
        })
    }
}

/// The level and unique keys of a retrieve identifier.
fn parse_identifier(request: &RetrieveRequest, study_root: bool) -> Result<RetrieveKeys, Outcome> {
    let bad = |comment: String| refuse(Status::DataSetDoesNotMatchSopClass, comment);
    let Identifier {
        object: identifier,
        level,
    } = identifier::decode(
        &request.identifier,
        &request.transfer_syntax_uid,
        study_root,
    )?;
    let text = |tag| {
        identifier
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|v| v.trim_matches(['\0', ' ']).to_string())
            })
            .unwrap_or_default()
    };
    // Lists of UIDs follow C-FIND's rules for UI values (no wildcards, digits and dots).
    let list = |tag| -> Result<Vec<String>, Outcome> {
        match Matcher::parse("UI", &text(tag)) {
            Ok(Matcher::Single(uid)) => Ok(vec![uid]),
            Ok(Matcher::UidList(uids)) => Ok(uids),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(bad(e.to_string())),
        }
    };
    let patient_id = Some(text(tags::PATIENT_ID)).filter(|p| !p.is_empty());
    if patient_id
        .as_deref()
        .is_some_and(|p| p.contains(['*', '?', '\\']))
    {
        return Err(bad("PatientID must be a single value".into()));
    }
    let keys = RetrieveKeys {
        patient_id,
        study_instance_uids: if level >= QueryLevel::Study {
            list(tags::STUDY_INSTANCE_UID)?
        } else {
            Vec::new()
        },
        series_instance_uids: if level >= QueryLevel::Series {
            list(tags::SERIES_INSTANCE_UID)?
        } else {
            Vec::new()
        },
        sop_instance_uids: if level == QueryLevel::Image {
            list(tags::SOP_INSTANCE_UID)?
        } else {
            Vec::new()
        },
    };
    let has_level_key = match level {
        QueryLevel::Patient => keys.patient_id.is_some(),
        QueryLevel::Study => !keys.study_instance_uids.is_empty(),
        QueryLevel::Series => !keys.series_instance_uids.is_empty(),
        QueryLevel::Image => !keys.sop_instance_uids.is_empty(),
    };
    if !has_level_key {
        return Err(bad(format!(
            "{} level needs a unique {}",
            level.as_str(),
            required_key(level)
        )));
    }
    Ok(keys)
}

impl Retrieval for Instances {
    fn items(&self) -> &[RetrieveItem] {
        &self.items
    }

    fn read(&self, plan: Vec<(usize, String)>) -> mpsc::Receiver<Piece> {
        stream::start(
            stream::Relocating {
                reader: self.reader.clone(),
                locator: self.locator.clone(),
                sop_instance_uids: self.uids.clone(),
                coercions: self.coercions.clone(),
                decoders: self.decoders.clone(),
            },
            self.objects.clone(),
            plan,
            self.prefetch,
        )
    }
}

/// An instance's first bytes, enough for one frame at a reduced resolution: see
/// [`Instances::reduced_head`].
pub struct ReducedHead {
    pub levels: FrameLevels,
    /// The resolution chosen (0 the lowest).
    pub resolution: usize,
    /// The instance's first `levels.bytes_for(resolution)` bytes.
    pub head: bytes::Bytes,
    /// The bytes are of the near-line `j2k-roi` copy (lossy), every lossless copy being lost:
    /// a view drawn from them is not cached as the instance's.
    pub lossy_copy: bool,
}

/// For `levels` of `frame`, the lowest resolution at least `width` x `height` and the bytes
/// up to its end, when that is less than the whole (`length` bytes) codestream.
fn reduced_cut(
    levels: Vec<FrameLevels>,
    frame: u32,
    (width, height): (u32, u32),
    length: u64,
) -> Option<(FrameLevels, usize, u64)> {
    let levels = levels.into_iter().find(|l| l.frame == frame)?;
    let resolution = levels.resolution_for(width, height);
    // The full resolution is the whole codestream: read whole, checked.
    if resolution >= levels.levels() {
        return None;
    }
    let end = levels.bytes_for(resolution)?;
    (end <= length).then_some((levels, resolution, end))
}

impl Instances {
    /// The key of `view` (frame, size, window, media: anything the image depends on besides
    /// the instance) of entry `index`'s stored copy, when a rendition cache is configured.
    pub fn rendition_key(&self, index: usize, view: String) -> Option<renditions::Key> {
        self.renditions.as_ref()?;
        let (uid, object) = (self.uids.get(index)?, self.objects.get(index)?);
        Some(renditions::Key::new(uid, object, view))
    }

    /// The cached rendition of `key`, counted as a hit or a miss.
    pub async fn rendition(&self, key: &renditions::Key) -> Option<bytes::Bytes> {
        self.renditions.as_ref()?.get(key).await
    }

    /// Offers a rendition just computed to the cache (written by a task of its own).
    pub fn keep_rendition(
        &self,
        key: &renditions::Key,
        image: bytes::Bytes,
        cost: renditions::Cost,
    ) {
        if let Some(cache) = &self.renditions {
            cache.keep_detached(key, image, cost);
        }
    }

    /// Where `frames` of entry `index` are in its current copy's bytes, when the locator
    /// recorded it (`frame_offsets`: the tiles of a whole-slide level); `None` otherwise.
    pub async fn recorded_frames(&self, index: usize, frames: &[u32]) -> Option<Vec<FramePlace>> {
        let (uid, object) = (self.uids.get(index)?, self.objects.get(index)?);
        match self.locator.frame_offsets(uid, object.crc32c, frames).await {
            Ok(places) => places,
            Err(e) => {
                tracing::debug!(sop_instance_uid = %uid, error = %e, "frame offsets unread");
                None
            }
        }
    }

    /// The bitstreams at `places` of entry `index` (from [`Instances::recorded_frames`]),
    /// each frame read once however often it is named. A read is not checked against the
    /// instance's CRC-32C (only whole reads are), but each must be the fragment item
    /// recorded: its item tag and length just before it. `None` when a read fails or does
    /// not hold the item: the caller then reads the instance whole.
    pub async fn read_frames(
        &self,
        index: usize,
        places: &[FramePlace],
    ) -> Option<Vec<bytes::Bytes>> {
        let (uid, object) = (self.uids.get(index)?, self.objects.get(index)?);
        let mut read: std::collections::HashMap<u32, bytes::Bytes> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(places.len());
        for place in places {
            if let Some(bytes) = read.get(&place.frame) {
                out.push(bytes.clone());
                continue;
            }
            let start = place.offset.checked_sub(8)?;
            if place.offset.checked_add(place.length)? > object.length {
                return None;
            }
            let item = match self
                .reader
                .read_range(object, start, place.length + 8)
                .await
            {
                Ok(item) => item,
                Err(e) => {
                    tracing::debug!(sop_instance_uid = %uid, error = %e, "frame read failed; reading whole");
                    return None;
                }
            };
            let declared = u32::from_le_bytes([item[4], item[5], item[6], item[7]]) as u64;
            // Odd lengths are padded to even in the item.
            if item[..4] != [0xFE, 0xFF, 0x00, 0xE0] || declared != (place.length + 1) & !1 {
                tracing::warn!(sop_instance_uid = %uid, frame = place.frame, "recorded frame place does not hold its item; reading whole");
                return None;
            }
            let bytes = item.slice(8..);
            read.insert(place.frame, bytes.clone());
            out.push(bytes);
        }
        Some(out)
    }

    /// For frame `frame` of entry `index`, when the resolution levels of its current copy
    /// are recorded (the converter encoded it): the lowest resolution at least `width` x
    /// `height`, and the instance's bytes up to that resolution's end, in one positioned
    /// read. When the primary is known lost with only a lossy near-line copy left, the
    /// same from that copy if its levels are recorded ([`ReducedHead::lossy_copy`]).
    /// `None` otherwise (no levels, only the full resolution covers the size, or
    /// `[retrieve] resolution_levels` is off), or when that read fails: the caller then
    /// reads the instance whole, a path that checks its checksum and falls back on backup
    /// copies.
    pub async fn reduced_head(
        &self,
        index: usize,
        frame: u32,
        width: u32,
        height: u32,
    ) -> Option<ReducedHead> {
        if !self.resolution_levels {
            return None;
        }
        let (uid, object) = (self.uids.get(index)?, self.objects.get(index)?);
        let levels = match self.locator.resolution_levels(uid, object.crc32c).await {
            Ok(all) => all,
            Err(e) => {
                tracing::debug!(sop_instance_uid = %uid, error = %e, "resolution levels unread");
                return None;
            }
        };
        if levels.is_empty() {
            return self
                .lossy_reduced_head(uid, object, frame, (width, height))
                .await;
        }
        let (levels, resolution, length) =
            reduced_cut(levels, frame, (width, height), object.length)?;
        match self.reader.read_range(object, 0, length).await {
            Ok(head) => Some(ReducedHead {
                levels,
                resolution,
                head,
                lossy_copy: false,
            }),
            Err(e) => {
                tracing::debug!(sop_instance_uid = %uid, error = %e, "reduced read failed");
                self.lossy_reduced_head(uid, object, frame, (width, height))
                    .await
            }
        }
    }

    /// [`Instances::reduced_head`] from the near-line `j2k-roi` copy of `object`, when the
    /// locator knows the primary lost and no lossless copy left
    /// ([`Locator::lossy_copy_levels`]).
    async fn lossy_reduced_head(
        &self,
        uid: &str,
        object: &StoredObject,
        frame: u32,
        size: (u32, u32),
    ) -> Option<ReducedHead> {
        let (copy, levels) = match self.locator.lossy_copy_levels(uid, object.crc32c).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::debug!(sop_instance_uid = %uid, error = %e, "lossy copy levels unread");
                return None;
            }
        };
        let (levels, resolution, length) = reduced_cut(levels, frame, size, copy.length)?;
        match self.reader.read_copy_range(&copy, 0, length).await {
            Ok(head) => {
                tracing::warn!(sop_instance_uid = %uid, copy = %copy.location, bytes = length,
                    "every lossless copy is lost; reduced view drawn from the lossy copy");
                Some(ReducedHead {
                    levels,
                    resolution,
                    head,
                    lossy_copy: true,
                })
            }
            Err(e) => {
                tracing::debug!(sop_instance_uid = %uid, error = %e, "lossy copy head unread");
                None
            }
        }
    }
}
