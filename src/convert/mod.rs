//! The converter: moves aged studies from the online tier into one S-DICOM container each,
//! folds late arrivals into a new container, and restores studies back online.
//!
//! Every move is journaled in the locator (`archive_jobs`) and ordered so that a kill at any
//! step loses nothing and never shows an instance twice:
//!
//! 1. journal the job (`writing`, with the copies about to be created);
//! 2. write the container (or the online copies) under temporary names, make them durable,
//!    read them back and check length, structure and every checksum, publish them;
//! 3. in one locator transaction, point every instance that is still where the job found it
//!    at its new copy, and mark the job `committed` with the old copies;
//! 4. delete the old copies nothing references any more; drop the job.
//!
//! Until step 3 commits, readers use the old copies, which stay in place; after it, the new
//! ones, which are durable. [`Converter::recover`] finishes committed jobs and undoes the
//! others (deleting what they may have written) before any new work.
//!
//! Late arrivals: an instance that arrives for an archived study is stored online as usual and
//! served from there. The study then has online instances again, so once its newest instance
//! is older than `min_age_days` the next run archives it again: the new container holds every
//! instance of the study (the archived ones copied from the old container), and the old
//! container is deleted once nothing points at it.

use std::sync::Arc;

use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::archive::container::{verify, ContainerBuilder, Expected};
use crate::archive::{container_name, temp_name, Archive, ArchiveError, ArchiveStore};
use crate::config::ArchiveCompression;
use crate::locator::archive::{Committed, PlacedInstance, Switch};
use crate::locator::{Locator, LocatorError};
use crate::model::levels::FrameLevels;
use crate::model::{StoredObject, Tier};
use crate::online::{OnlineError, OnlineStore};
use crate::reader::{Payload, ReadError, Reader};

/// Instances read ahead of the container being written.
const READ_AHEAD: usize = 4;

/// Why a study could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("verification of {0}")]
    Verify(String),
    #[error("study {0} is not in the locator")]
    UnknownStudy(String),
    #[error("study {0} is being moved by another process; left to it")]
    Busy(String),
}

/// What one study's move did.
#[derive(Debug, Clone, Default)]
pub struct Moved {
    pub instances: usize,
    pub bytes: u64,
}

/// Moves studies between the online tier and the archive.
pub struct Converter {
    locator: Arc<Locator>,
    online: Arc<OnlineStore>,
    archive: Arc<Archive>,
    reader: Reader,
    compression: ArchiveCompression,
    /// `[tiering] throttle_mb_s` for container writes.
    throttle_mb_s: f64,
}

impl Converter {
    pub fn new(
        locator: Arc<Locator>,
        online: Arc<OnlineStore>,
        archive: Arc<Archive>,
        reader: Reader,
    ) -> Converter {
        Converter {
            locator,
            online,
            archive,
            reader,
            compression: ArchiveCompression::None,
            throttle_mb_s: 0.0,
        }
    }

    /// Paces container writes to `mb_s` (`[tiering] throttle_mb_s`; 0 unlimited).
    pub fn with_throttle(mut self, mb_s: f64) -> Converter {
        self.throttle_mb_s = mb_s;
        self
    }

    /// Sets what happens to images on their way into a container (`[archive] compression`).
    pub fn with_compression(mut self, compression: ArchiveCompression) -> Converter {
        self.compression = compression;
        self
    }

    /// Finishes or undoes moves interrupted by a crash, and removes temporaries. Run before
    /// any new move.
    pub async fn recover(&self) -> Result<usize, ConvertError> {
        // A move is its process's own while that process's lease holds, this process's
        // too: the server's tiering pass and its repairs share one lease and may overlap.
        let in_use = self.locator.live_leases().await?;
        let temporaries = self.archive.remove_temporaries(&in_use).await?;
        let jobs: Vec<_> = self
            .locator
            .pending_jobs()
            .await?
            .into_iter()
            .filter(|job| !job.lease.is_some_and(|l| in_use.contains(&l)))
            .collect();
        for job in &jobs {
            if job.committed {
                info!(job = job.id, study = %job.study_instance_uid, "finishing an interrupted move");
            } else {
                warn!(job = job.id, study = %job.study_instance_uid, kind = %job.kind, "undoing an interrupted move");
                if job.kind == "archive" || job.kind == "repack" {
                    self.delete_unreferenced(Tier::Archive, &job.container)
                        .await?;
                }
            }
            // Committed: the old copies; not committed: the copies the job was creating.
            if job.committed && job.kind == "delete" {
                self.finish_delete(job.id, &job.study_instance_uid, &job.old_locations)
                    .await?;
            } else {
                self.finish(job.id, &job.old_locations).await?;
            }
        }
        if temporaries > 0 || !jobs.is_empty() {
            info!(
                temporaries,
                jobs = jobs.len(),
                "recovered interrupted moves"
            );
        }
        Ok(jobs.len())
    }

    /// Deletes a copy if no instance points at it (any more).
    async fn delete_unreferenced(&self, tier: Tier, location: &str) -> Result<(), ConvertError> {
        if self.locator.location_in_use(tier, location).await? {
            return Ok(());
        }
        match tier {
            Tier::Archive => self.archive.delete(location).await?,
            Tier::Online => {
                let online = self.online.clone();
                let location = location.to_string();
                let result = tokio::task::spawn_blocking(move || match online.remove(&location) {
                    Err(e)
                        if e.io()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        Ok(())
                    }
                    other => other,
                })
                .await
                .expect("blocking remove");
                result?;
            }
        }
        Ok(())
    }

    /// Archives one study: every instance, online or already archived, into a new container.
    /// A study with nothing online is left alone.
    pub async fn archive_study(&self, study_instance_uid: &str) -> Result<Moved, ConvertError> {
        let name = container_name(study_instance_uid);
        let temp = temp_name(&name, self.locator.lease());
        // The claim first, then the listing: what another node archived before the claim is
        // seen as archived.
        let job = self
            .claim(
                self.locator
                    .begin_job("archive", study_instance_uid, &name, &[]),
                study_instance_uid,
            )
            .await?;
        let instances = match self.locator.study_instances(study_instance_uid).await {
            Ok(instances) if instances.iter().any(|i| i.object.tier == Tier::Online) => instances,
            listed => {
                self.locator.finish_job(job).await?;
                return match listed? {
                    none if none.is_empty() => {
                        Err(ConvertError::UnknownStudy(study_instance_uid.to_string()))
                    }
                    _ => Ok(Moved::default()),
                };
            }
        };
        let moved = self
            .write_and_switch(job, study_instance_uid, &instances, &temp, &name)
            .await?;
        info!(study = %study_instance_uid, container = %name, instances = moved.instances, bytes = moved.bytes, "study archived");
        Ok(moved)
    }

    /// Writes `instances` into the new container `name` (through `temp`), switches them to
    /// it and deletes what they left once nothing points at it; on failure, removes what
    /// was written and forgets the job.
    async fn write_and_switch(
        &self,
        job: i64,
        study_instance_uid: &str,
        instances: &[PlacedInstance],
        temp: &str,
        name: &str,
    ) -> Result<Moved, ConvertError> {
        match self
            .write_container(study_instance_uid, instances, temp, name)
            .await
        {
            Ok((switches, moved)) => {
                let committed = self
                    .commit(job, &switches, &[(Tier::Archive, name.to_string())])
                    .await?;
                self.finish(job, &committed.old_locations).await?;
                let switched = committed.switched;
                if switched < switches.len() {
                    // Someone else moved some instances meanwhile (another converter, an
                    // overwrite, a delete): the new container may hold nothing anyone
                    // points at.
                    warn!(study = %study_instance_uid, switched, of = switches.len(), "instances moved during archiving");
                    self.delete_unreferenced(Tier::Archive, name).await?;
                }
                Ok(moved)
            }
            Err(e) => {
                // Nothing points at what was written: remove it and forget the job.
                let _ = self.archive.delete(temp).await;
                let _ = self.delete_unreferenced(Tier::Archive, name).await;
                let _ = self.locator.finish_job(job).await;
                Err(e)
            }
        }
    }

    /// Rewrites the archive containers `containers` of a study with only the instances that
    /// still point at them (after a delete took some out), under a new name, the move
    /// journaled like archiving; the old containers go once nothing points at them.
    pub async fn repack(
        &self,
        study_instance_uid: &str,
        containers: &[String],
    ) -> Result<Moved, ConvertError> {
        let name = container_name(study_instance_uid);
        let temp = temp_name(&name, self.locator.lease());
        let job = self
            .claim(
                self.locator
                    .begin_job("repack", study_instance_uid, &name, &[]),
                study_instance_uid,
            )
            .await?;
        let listed = self.locator.study_instances(study_instance_uid).await;
        let instances: Vec<PlacedInstance> = match listed {
            Ok(all) => all
                .into_iter()
                .filter(|i| {
                    i.object.tier == Tier::Archive && containers.contains(&i.object.location)
                })
                .collect(),
            Err(e) => {
                self.locator.finish_job(job).await?;
                return Err(e.into());
            }
        };
        if instances.is_empty() {
            self.locator.finish_job(job).await?;
            return Ok(Moved::default());
        }
        let moved = self
            .write_and_switch(job, study_instance_uid, &instances, &temp, &name)
            .await?;
        info!(study = %study_instance_uid, container = %name, instances = moved.instances, bytes = moved.bytes, "archive container rewritten");
        Ok(moved)
    }

    /// The end of a committed delete (the index no longer has its instances): rewrites the
    /// archive containers the study still uses without the deleted instances, then deletes
    /// the old copies nothing references and drops the job. Returns the containers
    /// rewritten.
    pub async fn finish_delete(
        &self,
        job: i64,
        study_instance_uid: &str,
        old_locations: &[(Tier, String)],
    ) -> Result<usize, ConvertError> {
        let containers: Vec<String> = old_locations
            .iter()
            .filter(|(t, _)| *t == Tier::Archive)
            .map(|(_, l)| l.clone())
            .collect();
        let mut rewritten = 0;
        if !containers.is_empty() {
            let in_use: Vec<String> = self
                .locator
                .locations_in_use(Tier::Archive, &containers)
                .await?
                .into_iter()
                .collect();
            if !in_use.is_empty() {
                self.repack(study_instance_uid, &in_use).await?;
                rewritten = in_use.len();
            }
        }
        self.finish(job, old_locations).await?;
        Ok(rewritten)
    }

    /// The job id of a claimed move, or [`ConvertError::Busy`].
    async fn claim(
        &self,
        begin: impl std::future::Future<Output = Result<Option<i64>, LocatorError>>,
        study_instance_uid: &str,
    ) -> Result<i64, ConvertError> {
        begin
            .await?
            .ok_or_else(|| ConvertError::Busy(study_instance_uid.to_string()))
    }

    async fn write_container(
        &self,
        study_instance_uid: &str,
        instances: &[PlacedInstance],
        temp: &str,
        name: &str,
    ) -> Result<(Vec<Switch>, Moved), ConvertError> {
        let started = std::time::Instant::now();
        let writer = self.archive.create_temp(temp).await?;
        let mut builder =
            ContainerBuilder::start(writer, study_instance_uid, instances.len()).await?;
        let mut expected = Vec::with_capacity(instances.len());
        // Reads run ahead of the container's writes, so neither waits for the other.
        // Owned futures: borrowing ones make the tiering task's future not provably Send.
        // A damaged or missing source copy is read from its backup copy (and queued for
        // repair), so the new container gets intact bytes.
        let objects: Vec<(String, StoredObject)> = instances
            .iter()
            .map(|i| (i.sop_instance_uid.clone(), i.object.clone()))
            .collect();
        let reader = self.reader.clone();
        let compression = self.compression;
        let mut files = futures_util::stream::iter(objects)
            .map(move |(uid, object)| {
                let reader = reader.clone();
                async move {
                    // One too large to hold is kept in its stored syntax (compressing
                    // would need it whole).
                    let payload = reader.payload(&uid, &object).await?;
                    let Payload::Whole(bytes) = payload else {
                        return Ok::<_, ConvertError>((payload, StoredAs::unchanged(&object)));
                    };
                    let (bytes, stored_as) = compress(compression, &object, bytes).await;
                    Ok((Payload::Whole(bytes), stored_as))
                }
            })
            .buffered(READ_AHEAD);
        let mut stored_as = Vec::with_capacity(instances.len());
        let mut throttle = crate::throttle::Throttle::new(self.throttle_mb_s);
        for instance in instances {
            let (payload, as_stored) = files.next().await.expect("one read per instance")?;
            let uid = &instance.sop_instance_uid;
            let (placed, crc32c) = self
                .reader
                .append(&mut builder, uid, &payload, &mut throttle)
                .await?;
            expected.push(Expected {
                sop_instance_uid: uid.clone(),
                placed,
                crc32c,
            });
            stored_as.push(as_stored);
        }
        let length = builder.finish().await?;
        let written = started.elapsed();
        verify(self.archive.as_ref(), temp, &expected, length)
            .await
            .map_err(ConvertError::Verify)?;
        debug!(study = %study_instance_uid, bytes = length, write_ms = written.as_millis() as u64,
            verify_ms = (started.elapsed() - written).as_millis() as u64, "container written and verified");
        self.archive.publish(temp, name).await?;
        let switches = instances
            .iter()
            .zip(&expected)
            .zip(stored_as)
            .map(|((instance, e), as_stored)| Switch {
                sop_instance_uid: instance.sop_instance_uid.clone(),
                from_tier: instance.object.tier,
                from_location: instance.object.location.clone(),
                to: StoredObject {
                    tier: Tier::Archive,
                    location: name.to_string(),
                    offset: e.placed.offset,
                    length: e.placed.length,
                    crc32c: e.crc32c,
                    transfer_syntax_uid: as_stored.transfer_syntax_uid,
                },
                levels: as_stored.levels,
            })
            .collect();
        let moved = Moved {
            instances: expected.len(),
            bytes: length,
        };
        Ok((switches, moved))
    }

    /// Brings every archived instance of a study back to the online tier.
    pub async fn restore_study(&self, study_instance_uid: &str) -> Result<Moved, ConvertError> {
        let instances = self.locator.study_instances(study_instance_uid).await?;
        if instances.is_empty() {
            return Err(ConvertError::UnknownStudy(study_instance_uid.to_string()));
        }
        let archived: Vec<&PlacedInstance> = instances
            .iter()
            .filter(|i| i.object.tier == Tier::Archive)
            .collect();
        if archived.is_empty() {
            return Ok(Moved::default());
        }
        let targets: Vec<String> = archived
            .iter()
            .map(|i| {
                self.online
                    .new_location(study_instance_uid, &i.sop_instance_uid)
            })
            .collect();
        let planned: Vec<(Tier, String)> =
            targets.iter().map(|t| (Tier::Online, t.clone())).collect();
        let job = self
            .claim(
                self.locator.begin_job(
                    "restore",
                    study_instance_uid,
                    &archived[0].object.location,
                    &planned,
                ),
                study_instance_uid,
            )
            .await?;
        let mut switches = Vec::new();
        let mut moved = Moved::default();
        let result: Result<(), ConvertError> = async {
            for (instance, target) in archived.iter().zip(&targets) {
                // From the container, or from whichever backup copy survives.
                let payload = self
                    .reader
                    .payload(&instance.sop_instance_uid, &instance.object)
                    .await?;
                moved.bytes += payload.len();
                moved.instances += 1;
                self.write_online(target, &payload).await?;
                switches.push(Switch {
                    sop_instance_uid: instance.sop_instance_uid.clone(),
                    from_tier: Tier::Archive,
                    from_location: instance.object.location.clone(),
                    to: StoredObject {
                        tier: Tier::Online,
                        location: target.clone(),
                        offset: 0,
                        length: payload.len(),
                        crc32c: payload.crc32c(),
                        transfer_syntax_uid: instance.object.transfer_syntax_uid.clone(),
                    },
                    levels: Vec::new(),
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            for t in &targets {
                let _ = self.delete_unreferenced(Tier::Online, t).await;
            }
            let _ = self.locator.finish_job(job).await;
            return Err(e);
        }
        let written: Vec<(Tier, String)> =
            targets.iter().map(|t| (Tier::Online, t.clone())).collect();
        let committed = self.commit(job, &switches, &written).await?;
        self.finish(job, &committed.old_locations).await?;
        info!(study = %study_instance_uid, instances = moved.instances, "study restored online");
        Ok(moved)
    }

    /// Writes `payload` to a new online file at `target` through the atomic path (temporary
    /// file, then [`OnlineStore::publish`]: fdatasync, rename, folder fsync); a payload read in
    /// parts is checked against its CRC-32C before it is published. A write that fails (a
    /// full disk, a damaged origin) removes its temporary: left, it would take space until
    /// the next start.
    async fn write_online(&self, target: &str, payload: &Payload) -> Result<(), ConvertError> {
        let (mut temp, file) = self.online.create_temp()?;
        let written = self
            .publish_online(temp.path(), file, target, payload)
            .await;
        if written.is_ok() {
            temp.published();
        }
        written // on failure, dropping `temp` removes it (if the rename did not happen)
    }

    /// See [`Converter::write_online`]: fills the temporary at `path` and publishes it.
    async fn publish_online(
        &self,
        path: &std::path::Path,
        file: std::fs::File,
        target: &str,
        payload: &Payload,
    ) -> Result<(), ConvertError> {
        use tokio::io::AsyncWriteExt;
        let io = |source| OnlineError::WriteTemp {
            path: path.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::from_std(file);
        match payload {
            Payload::Whole(bytes) => file.write_all(bytes).await.map_err(io)?,
            Payload::Parts(origin) => {
                let mut parts = self.reader.parts(origin);
                while let Some(part) = parts.next().await? {
                    file.write_all(&part).await.map_err(io)?;
                }
            }
        }
        // Hands the written bytes to the kernel; `publish` makes them durable.
        file.flush().await.map_err(io)?;
        let online = self.online.clone();
        let (path, target) = (path.to_owned(), target.to_string());
        tokio::task::spawn_blocking(move || online.publish(&path, &target))
            .await
            .expect("blocking publish")?;
        Ok(())
    }

    /// Re-creates a damaged or missing primary copy on the online tier from `bytes` (intact,
    /// read from a backup copy), journaled like a restore: the new file is made durable, the
    /// instance switched to it only if it is still where `instance` says, then the damaged
    /// copy deleted once nothing points at it. Returns whether the instance was switched.
    pub async fn replace_with_online(
        &self,
        study_instance_uid: &str,
        instance: &PlacedInstance,
        payload: Payload,
    ) -> Result<bool, ConvertError> {
        let target = self
            .online
            .new_location(study_instance_uid, &instance.sop_instance_uid);
        let job = self
            .claim(
                self.locator.begin_job(
                    "repair",
                    study_instance_uid,
                    &instance.object.location,
                    &[(Tier::Online, target.clone())],
                ),
                study_instance_uid,
            )
            .await?;
        if let Err(e) = self.write_online(&target, &payload).await {
            let _ = self.delete_unreferenced(Tier::Online, &target).await;
            let _ = self.locator.finish_job(job).await;
            return Err(e);
        }
        let switch = Switch {
            sop_instance_uid: instance.sop_instance_uid.clone(),
            from_tier: instance.object.tier,
            from_location: instance.object.location.clone(),
            to: StoredObject {
                tier: Tier::Online,
                location: target.clone(),
                offset: 0,
                length: payload.len(),
                crc32c: payload.crc32c(),
                transfer_syntax_uid: instance.object.transfer_syntax_uid.clone(),
            },
            levels: Vec::new(),
        };
        let committed = self
            .commit(job, &[switch], &[(Tier::Online, target.clone())])
            .await?;
        self.finish(job, &committed.old_locations).await?;
        if committed.switched == 0 {
            // Moved meanwhile: the new file is not referenced.
            self.delete_unreferenced(Tier::Online, &target).await?;
        }
        info!(sop_instance_uid = %instance.sop_instance_uid, from = %instance.object.location, to = %target, "primary copy re-created online");
        Ok(committed.switched == 1)
    }

    /// Step 3 of a move: switch the instances to what this run `written`. When the commit
    /// does not happen (the lease was lost and another process undid the move, or the locator
    /// failed), what this run wrote is deleted once the locator says nothing points at it;
    /// an unanswered question leaves it for recovery.
    async fn commit(
        &self,
        job: i64,
        switches: &[Switch],
        written: &[(Tier, String)],
    ) -> Result<Committed, ConvertError> {
        match self.locator.commit_job(job, switches).await {
            Ok(committed) => Ok(committed),
            Err(e) => {
                warn!(job, error = %e, "move not committed: deleting what it wrote");
                for (tier, location) in written {
                    let _ = self.delete_unreferenced(*tier, location).await;
                }
                Err(e.into())
            }
        }
    }

    /// Step 4 of a committed job: delete the old copies nothing references, drop the job.
    async fn finish(&self, job: i64, old_locations: &[(Tier, String)]) -> Result<(), ConvertError> {
        for tier in [Tier::Online, Tier::Archive] {
            let of_tier: Vec<String> = old_locations
                .iter()
                .filter(|(t, _)| *t == tier)
                .map(|(_, l)| l.clone())
                .collect();
            if of_tier.is_empty() {
                continue;
            }
            let in_use = self.locator.locations_in_use(tier, &of_tier).await?;
            let unused: Vec<String> = of_tier
                .into_iter()
                .filter(|l| !in_use.contains(l))
                .collect();
            match tier {
                Tier::Online => {
                    let online = self.online.clone();
                    tokio::task::spawn_blocking(move || online.remove_all(&unused))
                        .await
                        .expect("blocking remove")?;
                }
                Tier::Archive => {
                    for location in &unused {
                        self.archive.delete(location).await?;
                    }
                }
            }
        }
        self.locator.finish_job(job).await?;
        Ok(())
    }
}

/// How an instance goes into the container.
struct StoredAs {
    transfer_syntax_uid: String,
    /// Where its frames' resolution levels end, when the converter encoded it.
    levels: Vec<FrameLevels>,
}

impl StoredAs {
    fn unchanged(object: &StoredObject) -> StoredAs {
        StoredAs {
            transfer_syntax_uid: object.transfer_syntax_uid.clone(),
            levels: Vec::new(),
        }
    }
}

/// An instance's bytes as they go into the container: unchanged, or JPEG 2000 lossless when
/// configured, the image is uncompressed, and the result is smaller (the encoder checks
/// every sample by decoding before it returns). An image that cannot be compressed goes in
/// unchanged, with the reason in the log.
async fn compress(
    compression: ArchiveCompression,
    object: &StoredObject,
    bytes: bytes::Bytes,
) -> (bytes::Bytes, StoredAs) {
    if compression == ArchiveCompression::None
        || !crate::model::transfer_syntax::is_native(&object.transfer_syntax_uid)
    {
        return (bytes, StoredAs::unchanged(object));
    }
    let input = bytes.clone();
    let result = tokio::task::spawn_blocking(move || {
        crate::codec::dicom::to_j2k(&input, &crate::codec::dicom::Target::Lossless)
    })
    .await
    .expect("compression task");
    match result {
        Ok(done) if done.lossless && done.file.len() < bytes.len() => {
            let stored_as = StoredAs {
                transfer_syntax_uid: done.transfer_syntax_uid.to_string(),
                levels: done.levels,
            };
            (bytes::Bytes::from(done.file), stored_as)
        }
        Ok(done) => {
            debug!(location = %object.location, ratio = done.ratio, "JPEG 2000 not smaller; archived as stored");
            (bytes, StoredAs::unchanged(object))
        }
        Err(e) => {
            info!(location = %object.location, reason = %e, "not compressed; archived as stored");
            (bytes, StoredAs::unchanged(object))
        }
    }
}
