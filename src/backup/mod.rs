//! The backup worker: near-line copies of whole studies, and re-creation of damaged primary
//! copies from them.
//!
//! A study in the backup queue gets ONE near-line S-DICOM container (the archive's format,
//! in `[backup] nearline_dir`) holding every instance as stored, read through the [`Reader`]
//! from whichever tier holds it and checked against its CRC-32C. Order, so that a kill at any
//! step loses nothing and never records a copy that is not durable:
//!
//! 1. claim the queued study in the locator, journaling the container name;
//! 2. write the container under a temporary name, fsync, read it back and check every
//!    record and checksum, rename it into place (folders fsynced);
//! 3. in one locator transaction, record every instance's copy (replacing older near-line
//!    copies), take the study off the queue and drop the claim;
//! 4. delete the older near-line containers nothing points at any more.
//!
//! [`Backup::recover`] (run before work) deletes temporaries of dead processes, releases
//! their claims and deletes near-line containers no copy points at (a kill between 2 and 3,
//! or between 3 and 4). Writes are paced to `[backup] throttle_mb_s`.
//!
//! With `[backup] format = "j2k-roi"`, each uncompressed or losslessly compressed image
//! whose primary reads back intact goes into the container as JPEG 2000 with MAXSHIFT ROI
//! coding (anatomy lossless, background lossy, marked lossy); everything else, and every
//! instance read from a backup copy because its primary is damaged, goes in as stored, so a
//! lossy copy never takes the place of the last lossless one.
//!
//! Repairs: an instance whose primary was found missing or damaged (by a read, or by
//! [`verify`]) is re-created on the online tier from an intact copy through the converter's
//! journaled online write, and the locator switched to it.

pub mod restore;
pub mod verify;
pub mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crc32c::crc32c;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::archive::container::{verify as verify_container, ContainerBuilder, Expected};
use crate::archive::{container_name, temp_name, ArchiveError, ArchiveStore, LocalStore};
use crate::codec::dicom::{to_j2k, Roi, Target};
use crate::config::BackupFormat;
use crate::convert::{ConvertError, Converter};
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::archive::PlacedInstance;
use crate::locator::copies::{Copy, CopyKind, J2K_ROI, ORIGINAL};
use crate::locator::{now_millis, Locator, LocatorError};
use crate::model::levels::FrameLevels;
use crate::model::schedule::{in_window, minute_now};
use crate::model::StoredObject;
use crate::reader::{Origin, Payload, ReadError, Reader, HOLD_LIMIT};
use crate::throttle::Throttle;

pub use verify::{Counts, VerifyReport};

/// Instances read ahead of the near-line container being written.
const READ_AHEAD: usize = 2;

/// Why a backup or repair step failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("verification of near-line container {0}")]
    Verify(String),
    #[error("study {0} is not in the locator")]
    UnknownStudy(String),
    #[error("study {0} is being backed up by another process")]
    Busy(String),
    #[error("cannot tidy the near-line folder {path}: {source}")]
    Tidy {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What backing up one study did.
#[derive(Debug, Clone, Default)]
pub struct BackedUp {
    pub instances: usize,
    pub bytes: u64,
    /// `uid: why` for each instance left out because no lossless bytes of it survive.
    pub lost: Vec<String>,
}

/// What re-creating one primary did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repaired {
    /// Re-created online from a backup copy.
    Recreated,
    /// The primary reads back intact now (moved or repaired meanwhile): nothing to do.
    AlreadyIntact,
    /// The instance is no longer stored.
    Gone,
}

/// Writes near-line copies and re-creates damaged primaries.
pub struct Backup {
    locator: Arc<Locator>,
    reader: Reader,
    nearline: LocalStore,
    nearline_dir: PathBuf,
    converter: Arc<Converter>,
    throttle_mb_s: f64,
    format: BackupFormat,
    roi_ratio: f32,
}

/// One instance as it goes into a near-line container.
struct Prepared {
    payload: Payload,
    format: &'static str,
    /// Where the resolution levels of a `j2k-roi` copy's frames end (empty otherwise).
    levels: Vec<FrameLevels>,
    /// CRC-32C of the primary's bytes the copy was made from.
    source_crc32c: u32,
}

/// Stored syntaxes whose pixels a `j2k-roi` copy may be made from: uncompressed or lossless
/// (a lossy original is copied as stored rather than compressed a second time).
fn roi_source(transfer_syntax_uid: &str) -> bool {
    crate::model::transfer_syntax::is_native(transfer_syntax_uid)
        || matches!(
            transfer_syntax_uid,
            "1.2.840.10008.1.2.4.57"
                | "1.2.840.10008.1.2.4.70"
                | "1.2.840.10008.1.2.4.90"
                | "1.2.840.10008.1.2.5"
        )
}

impl Backup {
    /// `reader` should have recovery attached (so a study whose primary is damaged can still
    /// be backed up from an older copy); `nearline` is the store rooted at `nearline_dir`.
    pub fn new(
        locator: Arc<Locator>,
        reader: Reader,
        nearline_dir: &Path,
        converter: Arc<Converter>,
        throttle_mb_s: f64,
    ) -> Result<Backup, BackupError> {
        Ok(Backup {
            locator,
            reader,
            nearline: LocalStore::open(nearline_dir)?,
            nearline_dir: nearline_dir.to_owned(),
            converter,
            throttle_mb_s,
            format: BackupFormat::Original,
            roi_ratio: 10.0,
        })
    }

    /// Sets what near-line copies hold (`[backup] format` and `roi_ratio`).
    pub fn with_format(mut self, format: BackupFormat, roi_ratio: f32) -> Backup {
        self.format = format;
        self.roi_ratio = roi_ratio;
        self
    }

    /// The reader this worker uses (with recovery).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Cleans up after interrupted runs: temporaries and claims of dead processes, and
    /// near-line containers no copy points at. Returns how many files were removed.
    pub async fn recover(&self) -> Result<usize, BackupError> {
        // The folder may have been lost as a whole; it is ours to re-create.
        LocalStore::open(&self.nearline_dir)?;
        // Another process's claims (on any node) are its own while its lease holds.
        let in_use = self.locator.others_live_leases().await?;
        let mut removed = self.nearline.remove_temporaries(&in_use).await?;
        for queued in self.locator.backup_queue().await? {
            let Some(container) = queued.container else {
                continue;
            };
            if !queued.lease.is_some_and(|l| in_use.contains(&l)) {
                warn!(study = %queued.study_instance_uid, container = %container, "releasing an interrupted backup");
                self.locator
                    .release_backup(&queued.study_instance_uid, &container)
                    .await?;
            }
        }
        // Listed first, checked after: a live writer claims its container before creating
        // it and keeps the claim until its copies are recorded, so a container listed here
        // and then found neither claimed nor recorded is a dead run's.
        for name in self.containers_on_disk()? {
            if self.locator.nearline_container_in_use(&name).await? {
                continue;
            }
            warn!(container = %name, "deleting a near-line container no copy points at");
            self.nearline.delete(&name).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes those of `containers` no copy points at any more (after a delete); returns
    /// how many went.
    pub async fn delete_unreferenced(&self, containers: &[String]) -> Result<usize, BackupError> {
        let mut deleted = 0;
        for name in containers {
            if !self.locator.nearline_container_in_use(name).await? {
                self.nearline.delete(name).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Names of the published containers in the near-line folder (`<aa>/<name>.sdcm`).
    fn containers_on_disk(&self) -> Result<Vec<String>, BackupError> {
        let tidy = |path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Tidy { path, source }
        };
        let mut names = Vec::new();
        let root = &self.nearline_dir;
        for fan in std::fs::read_dir(root).map_err(tidy(root))? {
            let fan = fan.map_err(tidy(root))?;
            let fan_name = fan.file_name().to_string_lossy().to_string();
            if fan_name == "tmp" || !fan.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(fan.path()).map_err(tidy(&fan.path()))? {
                let file = file.map_err(tidy(&fan.path()))?;
                let name = file.file_name().to_string_lossy().to_string();
                if name.ends_with(".sdcm") {
                    names.push(format!("{fan_name}/{name}"));
                }
            }
        }
        Ok(names)
    }

    /// Backs up every queued study, one at a time, while `keep_going()` says so; reports
    /// each study's result to `done` (study, result, studies so far, studies queued).
    pub async fn run_queue(
        &self,
        keep_going: impl Fn() -> bool,
        mut done: impl FnMut(&str, &Result<BackedUp, BackupError>, u64, u64),
    ) -> Result<(), BackupError> {
        let queue = self.locator.backup_queue().await?;
        let total = queue.len() as u64;
        for (n, queued) in queue.iter().enumerate() {
            if !keep_going() {
                break;
            }
            let study = &queued.study_instance_uid;
            let result = self.backup_study(study).await;
            done(study, &result, n as u64 + 1, total);
        }
        Ok(())
    }

    /// Writes one near-line container with every instance of a queued study and records
    /// the copies (steps 1-4 above).
    pub async fn backup_study(&self, study_instance_uid: &str) -> Result<BackedUp, BackupError> {
        let mark = self.locator.backup_mark(study_instance_uid).await?;
        let instances = self.locator.study_instances(study_instance_uid).await?;
        if instances.is_empty() {
            return Err(BackupError::UnknownStudy(study_instance_uid.to_string()));
        }
        let name = container_name(study_instance_uid);
        if !self.locator.claim_backup(study_instance_uid, &name).await? {
            return Err(BackupError::Busy(study_instance_uid.to_string()));
        }
        let temp = temp_name(&name, self.locator.lease());
        // An instance whose bytes are gone for good (no intact primary or lossless copy) is
        // left out, named, and the rest written again: it must not keep the whole study
        // from a near-line copy. (The container's header counts its records, so the write
        // starts over rather than skipping in place; such losses are rare.)
        let mut included = instances;
        let mut lost = Vec::new();
        let written = loop {
            match self
                .write(study_instance_uid, &included, &temp, &name)
                .await
            {
                Err(BackupError::Read(e))
                    if included.len() > 1
                        && e.permanently_lost().is_some_and(|uid| {
                            included.iter().any(|i| i.sop_instance_uid == uid)
                        }) =>
                {
                    let uid = e.permanently_lost().unwrap_or_default().to_string();
                    warn!(study = %study_instance_uid, sop_instance_uid = %uid, error = %e,
                        "no lossless bytes left: backing up the study without it");
                    let _ = self.nearline.delete(&temp).await;
                    included.retain(|i| i.sop_instance_uid != uid);
                    lost.push(format!("{uid}: {e}"));
                }
                other => break other,
            }
        };
        match written {
            Ok((copies, mut backed)) => {
                backed.lost = lost;
                let unused = match self
                    .locator
                    .record_nearline(study_instance_uid, &name, mark, &copies)
                    .await
                {
                    Ok(unused) => unused,
                    Err(e) => {
                        // Not recorded (or the answer to a commit that landed was lost: then
                        // copies point at it): deleted only once nothing is known to point
                        // at it; otherwise the next recovery decides.
                        let _ = self.locator.release_backup(study_instance_uid, &name).await;
                        if let Ok(false) = self.locator.nearline_container_in_use(&name).await {
                            let _ = self.nearline.delete(&name).await;
                        }
                        return Err(e.into());
                    }
                };
                for old in &unused {
                    self.nearline.delete(old).await?;
                }
                info!(study = %study_instance_uid, container = %name, instances = backed.instances,
                    bytes = backed.bytes, replaced = unused.len(), "near-line copy recorded");
                Ok(backed)
            }
            Err(e) => {
                // Nothing points at what was written.
                let _ = self.nearline.delete(&temp).await;
                let _ = self.nearline.delete(&name).await;
                let _ = self.locator.release_backup(study_instance_uid, &name).await;
                Err(e)
            }
        }
    }

    async fn write(
        &self,
        study_instance_uid: &str,
        instances: &[PlacedInstance],
        temp: &str,
        name: &str,
    ) -> Result<(Vec<(Copy, Vec<FrameLevels>)>, BackedUp), BackupError> {
        // The temporaries' folder goes with a lost near-line folder; bring it back.
        LocalStore::open(&self.nearline_dir)?;
        let started = Instant::now();
        let writer = self.nearline.create_temp(temp).await?;
        let mut builder =
            ContainerBuilder::start(writer, study_instance_uid, instances.len()).await?;
        let mut throttle = Throttle::new(self.throttle_mb_s);
        let mut expected = Vec::with_capacity(instances.len());
        // One instance at a time in memory, plus the read-ahead and the builder's buffer.
        let reader = self.reader.clone();
        let (format, ratio) = (self.format, self.roi_ratio);
        let sources: Vec<(String, StoredObject)> = instances
            .iter()
            .map(|i| (i.sop_instance_uid.clone(), i.object.clone()))
            .collect();
        let mut files = futures_util::stream::iter(sources)
            .map(move |(uid, object)| {
                let reader = reader.clone();
                async move { prepare(&reader, &uid, &object, format, ratio).await }
            })
            .buffered(READ_AHEAD);
        let mut formats = Vec::with_capacity(instances.len());
        for instance in instances {
            let prepared: Prepared = files.next().await.expect("one read per instance")?;
            let uid = &instance.sop_instance_uid;
            let (placed, crc32c) = self
                .reader
                .append(&mut builder, uid, &prepared.payload, &mut throttle)
                .await?;
            expected.push(Expected {
                sop_instance_uid: uid.clone(),
                placed,
                crc32c,
            });
            formats.push((prepared.format, prepared.source_crc32c, prepared.levels));
        }
        let length = builder.finish().await?;
        verify_container(&self.nearline, temp, &expected, length)
            .await
            .map_err(BackupError::Verify)?;
        self.nearline.publish(temp, name).await?;
        debug!(study = %study_instance_uid, bytes = length, ms = started.elapsed().as_millis() as u64, "near-line container written and verified");
        let created_at = now_millis();
        let copies = expected
            .into_iter()
            .zip(formats)
            .map(|(e, (format, source_crc32c, levels))| {
                let copy = Copy {
                    sop_instance_uid: e.sop_instance_uid,
                    kind: CopyKind::Nearline,
                    location: name.to_string(),
                    member: String::new(),
                    offset: e.placed.offset,
                    length: e.placed.length,
                    crc32c: e.crc32c,
                    format: format.into(),
                    source_crc32c,
                    created_at,
                };
                (copy, levels)
            })
            .collect::<Vec<_>>();
        let backed = BackedUp {
            instances: copies.len(),
            bytes: length,
            lost: Vec::new(),
        };
        Ok((copies, backed))
    }

    /// Re-creates the primary copy of one instance from an intact backup copy, unless it
    /// reads back intact after all. Takes the instance off the repair queue when done.
    pub async fn repair_instance(&self, sop_instance_uid: &str) -> Result<Repaired, BackupError> {
        let Some(primary) = self.locator.find_instance(sop_instance_uid).await? else {
            self.locator.finish_repair(sop_instance_uid).await?;
            return Ok(Repaired::Gone);
        };
        if self.reader.check_primary(&primary).await.is_ok() {
            self.locator.finish_repair(sop_instance_uid).await?;
            return Ok(Repaired::AlreadyIntact);
        }
        let (payload, copy) = if primary.length > HOLD_LIMIT {
            let copy = self
                .reader
                .check_good_copy(sop_instance_uid, &primary)
                .await?;
            (Payload::Parts(Origin::Nearline(copy.clone())), copy)
        } else {
            let (bytes, copy) = self
                .reader
                .read_good_copy(sop_instance_uid, &primary)
                .await?;
            (Payload::Whole(bytes), copy)
        };
        let study = self
            .locator
            .study_of(sop_instance_uid)
            .await?
            .ok_or_else(|| BackupError::UnknownStudy(sop_instance_uid.to_string()))?;
        let instance = PlacedInstance {
            sop_instance_uid: sop_instance_uid.to_string(),
            object: primary,
        };
        self.converter
            .replace_with_online(&study, &instance, payload)
            .await?;
        self.locator.finish_repair(sop_instance_uid).await?;
        info!(sop_instance_uid = %sop_instance_uid, copy_kind = copy.kind.as_str(), copy = %copy.location, "primary re-created from a backup copy");
        Ok(Repaired::Recreated)
    }

    /// Works through the repair queue; returns how many primaries were re-created, and the
    /// instances that could not be, with why.
    pub async fn repair_pending(&self) -> Result<(u64, Vec<(String, BackupError)>), BackupError> {
        let (mut recreated, mut failed) = (0, Vec::new());
        for uid in self.locator.pending_repairs().await? {
            match self.repair_instance(&uid).await {
                Ok(Repaired::Recreated) => recreated += 1,
                Ok(_) => {}
                Err(e) => failed.push((uid, e)),
            }
        }
        Ok((recreated, failed))
    }
}

/// Reads one instance for its near-line copy and, for `j2k-roi`, compresses it. Only bytes
/// read from the intact primary are compressed: bytes that had to come from a backup copy
/// go in as they are, since that copy is about to be replaced.
async fn prepare(
    reader: &Reader,
    uid: &str,
    object: &StoredObject,
    format: BackupFormat,
    ratio: f32,
) -> Result<Prepared, BackupError> {
    let original = |bytes: Bytes| Prepared {
        source_crc32c: crc32c(&bytes),
        payload: Payload::Whole(bytes),
        format: ORIGINAL,
        levels: Vec::new(),
    };
    if object.length > HOLD_LIMIT {
        // Copied in parts as stored (a JPEG 2000 copy would need it whole).
        let payload = reader.payload(uid, object).await?;
        return Ok(Prepared {
            source_crc32c: payload.crc32c(),
            payload,
            format: ORIGINAL,
            levels: Vec::new(),
        });
    }
    if format == BackupFormat::Original || !roi_source(&object.transfer_syntax_uid) {
        return Ok(original(reader.read_instance(uid, object).await?));
    }
    let bytes = match reader.read_verified(object).await {
        Ok(bytes) => bytes,
        Err(failure) => return Ok(original(reader.read_fallback(uid, object, failure).await?)),
    };
    let input = bytes.clone();
    let target = Target::Roi {
        roi: Roi::Auto,
        ratio,
    };
    let result = tokio::task::spawn_blocking(move || to_j2k(&input, &target))
        .await
        .expect("compression task");
    match result {
        // Above 28 bit-planes the encoder falls back to lossless: keep the original then,
        // it is the better lossless copy (bit-identical).
        Ok(done) if !done.lossless && done.file.len() < bytes.len() => {
            debug!(sop_instance_uid = %uid, ratio = done.ratio, roi = ?done.roi_fraction, "near-line copy compressed with JPEG 2000 ROI");
            Ok(Prepared {
                source_crc32c: object.crc32c,
                payload: Payload::Whole(Bytes::from(done.file)),
                format: J2K_ROI,
                levels: done.levels,
            })
        }
        Ok(_) => Ok(original(bytes)),
        Err(e) => {
            debug!(sop_instance_uid = %uid, reason = %e, "near-line copy kept as stored");
            Ok(original(bytes))
        }
    }
}

/// When the server's backup worker runs.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    /// Minutes since midnight UTC (start, end), as `[tiering] window`; `None`: the queue is
    /// left to `strata backup run`.
    pub window: Option<(u32, u32)>,
    /// How often the worker looks at its queues.
    pub poll: Duration,
}

/// What one pass of the server's backup worker over the backup queue did (recorded in the
/// job history; the same counts as `strata backup run`'s summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupPass {
    /// Studies queued when the pass began.
    pub studies: u64,
    pub backed_up: u64,
    pub failed: u64,
    /// Studies another process (of this or another node) was backing up: left to it.
    pub busy: u64,
    pub instances: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Instances left out of their study's copy: no lossless bytes of them survive.
    pub lost_instances: u64,
    /// `study: reason` for every study not backed up, and `study: uid: why` for every
    /// instance left out.
    pub failures: Vec<String>,
}

impl std::fmt::Display for BackupPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::jobs::BatchLine {
            done_verb: "backed up",
            done: self.backed_up,
            total: self.studies,
            items: "studies",
            failed: self.failed,
            instances: Some(self.instances),
            bytes: self.bytes,
            seconds: self.seconds,
        }
        .fmt(f)
    }
}

impl BackupPass {
    /// Counts one study's outcome.
    pub fn record(&mut self, study: &str, result: &Result<BackedUp, BackupError>) {
        match result {
            Ok(backed) => {
                self.backed_up += 1;
                self.instances += backed.instances as u64;
                self.bytes += backed.bytes;
                self.lost_instances += backed.lost.len() as u64;
                for lost in &backed.lost {
                    self.failures.push(format!("{study}: {lost}"));
                }
            }
            Err(BackupError::Busy(_)) => self.busy += 1,
            Err(e) => {
                self.failed += 1;
                self.failures.push(format!("{study}: {e}"));
            }
        }
    }
}

impl JobReport for BackupPass {
    fn failed(&self) -> bool {
        self.failed + self.lost_instances > 0
    }
}

/// What one pass over the repair queue did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairPass {
    /// Instances queued for repair when the pass began.
    pub queued: u64,
    /// Primaries re-created from a backup copy.
    pub recreated: u64,
    pub failed: u64,
    pub seconds: f64,
}

impl JobReport for RepairPass {
    fn failed(&self) -> bool {
        self.failed > 0
    }
}

/// The server's worker, until `shutdown` turns true: re-creates queued damaged primaries at
/// every poll, and works through the backup queue inside the window, stopping between two
/// studies when the window closes or the server shuts down. Passes that find work are
/// recorded in the job history (`repair`, `backup`, trigger `server`).
pub async fn run(
    backup: Arc<Backup>,
    schedule: BackupSchedule,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(window = ?schedule.window, "backup worker ready");
    let locator = backup.locator.clone();
    // Instances whose repair failed, warned about once: a primary with no lossless copy
    // left stays queued (an offline volume import may mend it) and is retried every poll.
    let mut warned = std::collections::HashSet::new();
    let mut recovered = false;
    loop {
        match locator.queue_lengths().await {
            Err(e) => warn!(error = %e, "backup: cannot read the queue lengths"),
            Ok(queues) if queues.repairs > 0 => {
                let started = Instant::now();
                match backup.repair_pending().await {
                    Err(e) => warn!(error = %e, "backup: cannot read the repair queue"),
                    Ok((recreated, failed)) => {
                        let mut new_failures = 0;
                        for (uid, e) in &failed {
                            if warned.len() >= 100_000 {
                                warned.clear();
                            }
                            if warned.insert(uid.clone()) {
                                new_failures += 1;
                                warn!(sop_instance_uid = %uid, error = %e, "primary not re-created");
                            }
                        }
                        // Recorded only when something changed: retrying the same hopeless
                        // repairs every poll would bury the job history.
                        if recreated > 0 || new_failures > 0 {
                            info!(
                                recreated,
                                failed = failed.len(),
                                "repair queue worked through"
                            );
                            let pass = RepairPass {
                                queued: queues.repairs,
                                recreated,
                                failed: failed.len() as u64,
                                seconds: started.elapsed().as_secs_f64(),
                            };
                            JobRun::start(&locator, JobKind::Repair, Trigger::Server)
                                .await
                                .finish(&locator, &Ok::<_, BackupError>(pass))
                                .await;
                        }
                    }
                }
            }
            Ok(_) => {}
        }
        let open = schedule.window.filter(|w| in_window(*w, minute_now()));
        if let Some(window) = open {
            // Once per opening of the window (recovery lists the whole near-line folder), and
            // again after a study was found claimed (perhaps by a killed `backup run`).
            if !recovered {
                match backup.recover().await {
                    Ok(_) => recovered = true,
                    Err(e) => warn!(error = %e, "backup: recovery failed"),
                }
            }
            match locator.queue_lengths().await {
                Err(e) => warn!(error = %e, "backup: cannot read the queue lengths"),
                Ok(queues) if queues.backup > 0 => {
                    let run = JobRun::start(&locator, JobKind::Backup, Trigger::Server).await;
                    let result = backup_pass(&backup, window, &shutdown, &mut recovered).await;
                    if let Err(e) = &result {
                        warn!(error = %e, "backup: cannot read the queue");
                    }
                    run.finish(&locator, &result).await;
                }
                Ok(_) => debug!(open = true, queued = 0, "backup poll"),
            }
        } else {
            debug!(open = false, "backup poll");
            recovered = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.poll) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Works through the backup queue until done, the window closes or the server stops.
/// A study found claimed (perhaps by a killed `backup run`) clears `recovered`, so the next
/// poll runs recovery.
async fn backup_pass(
    backup: &Backup,
    window: (u32, u32),
    shutdown: &watch::Receiver<bool>,
    recovered: &mut bool,
) -> Result<BackupPass, BackupError> {
    let started = Instant::now();
    let mut pass = BackupPass::default();
    backup
        .run_queue(
            || !*shutdown.borrow() && in_window(window, minute_now()),
            |study, result, _, total| {
                pass.studies = total;
                if let Err(e) = result {
                    if matches!(e, BackupError::Busy(_)) {
                        *recovered = false;
                    }
                    warn!(study = %study, error = %e, "backup: study not backed up");
                }
                pass.record(study, result);
            },
        )
        .await?;
    pass.seconds = started.elapsed().as_secs_f64();
    info!(
        studies = pass.studies,
        backed_up = pass.backed_up,
        failed = pass.failed,
        bytes = pass.bytes,
        "backup pass done"
    );
    Ok(pass)
}
