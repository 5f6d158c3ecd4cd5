//! Group commit: instances whose bytes are written wait here to be published into their
//! study folders and recorded in the locator. One task takes every instance waiting, renames
//! them all, syncs each file's data and each folder once, all at once
//! ([`OnlineStore::publish_all`]), records
//! them all in one locator transaction (one WAL sync on SQLite, one commit on PostgreSQL),
//! and only then answers each: no Success before both the file and its row are durable.
//! Publishing and, on SQLite, recording run in one trip to the blocking pool
//! ([`Locator::record_instances_here`]); where the locator declines that (PostgreSQL, a
//! series' first instance, `overwrite`), the batch is recorded by
//! [`Locator::record_instances`] back on the runtime. With one association sending, a
//! batch is one instance; with N sending at once, up to N share the syncs, without any
//! waiting window: instances that finish while a batch commits form the next one.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::Sender;
use crate::audit::{Auditor, Entry, Event};
use crate::config::DuplicatePolicy;
use crate::locator::{now_millis, Locator, LocatorError, NewInstance, Recorded};
use crate::metrics;
use crate::model::{IndexedAttributes, StoredObject, Tier};
use crate::online::{OnlineStore, WrittenFile};
use crate::service::{Outcome, Status};

use super::io_status;

/// Instances waiting for the committer, at most (senders wait beyond: the associations
/// storing them are held, not their bytes).
const QUEUE: usize = 64;
/// Instances per batch, at most.
const BATCH: usize = 32;

/// A written, checked instance, ready to be published (synced) and recorded.
#[derive(Debug)]
pub(super) struct Finished {
    pub written: WrittenFile,
    pub attributes: IndexedAttributes,
    pub transfer_syntax_uid: String,
    pub sender: Sender,
}

/// A finished instance waiting for the committer, and where its outcome goes.
#[derive(Debug)]
struct Pending {
    finished: Finished,
    answer: oneshot::Sender<Outcome>,
}

/// The committer's handle: where finished instances are sent.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    queue: mpsc::Sender<Pending>,
}

/// A batch after its trip to the blocking pool: the instances published (each with its
/// location), where each is, and their answers from the locator when it could record them
/// on that thread.
struct Published {
    ready: Vec<(Pending, String)>,
    objects: Vec<StoredObject>,
    recorded: Option<Result<Vec<Recorded>, LocatorError>>,
}

/// What the committer task owns.
#[derive(Debug)]
struct Worker {
    online: Arc<OnlineStore>,
    locator: Arc<Locator>,
    replace: bool,
    enqueue_backup: bool,
    auditor: Option<Auditor>,
}

impl Committer {
    /// Starts the committer task; it ends when every handle is gone.
    pub fn start(
        online: Arc<OnlineStore>,
        locator: Arc<Locator>,
        duplicates: DuplicatePolicy,
        enqueue_backup: bool,
        auditor: Option<Auditor>,
    ) -> Committer {
        let (queue, received) = mpsc::channel(QUEUE);
        let worker = Worker {
            online,
            locator,
            replace: duplicates == DuplicatePolicy::Overwrite,
            enqueue_backup,
            auditor,
        };
        tokio::spawn(worker.run(received));
        Committer { queue }
    }

    /// Publishes and records one instance with whatever else is waiting; its outcome.
    pub async fn commit(&self, finished: Finished) -> Outcome {
        let (answer, answered) = oneshot::channel();
        let temp = finished.written.path.path().to_owned();
        if let Err(refused) = self.queue.send(Pending { finished, answer }).await {
            // The committer is gone (the server is stopping): nothing was published.
            drop(refused); // removes the temporary
            return Outcome::failure(Status::ProcessingFailure, "the server is stopping");
        }
        answered.await.unwrap_or_else(|_| {
            warn!(temp = %temp.display(), "the committer dropped an instance");
            Outcome::failure(Status::ProcessingFailure, "the commit was interrupted")
        })
    }
}

impl Worker {
    async fn run(self, mut received: mpsc::Receiver<Pending>) {
        let worker = Arc::new(self);
        let mut batch = Vec::with_capacity(BATCH);
        let (mut instances, mut batches) = (0u64, 0u64);
        while received.recv_many(&mut batch, BATCH).await > 0 {
            instances += batch.len() as u64;
            batches += 1;
            debug!(instances = batch.len(), "group commit");
            metrics::COMMIT_BATCH.observe(&[], batch.len() as f64);
            worker
                .clone()
                .commit_batch(std::mem::take(&mut batch))
                .await;
        }
        if batches > 0 {
            info!(
                instances,
                batches,
                per_batch = instances as f64 / batches as f64,
                "group commit: stopped"
            );
        }
    }

    async fn commit_batch(self: Arc<Self>, batch: Vec<Pending>) {
        let worker = self.clone();
        let instances = batch.len();
        let published = tokio::task::spawn_blocking(move || worker.publish_then_record(batch));
        let Published {
            ready,
            objects,
            recorded,
        } = match published.await {
            Ok(published) => published,
            Err(failed) => {
                // A trip that panicked (or never ran: the runtime is stopping) dropped its
                // instances' answers: each association reports an interrupted commit. Files
                // it renamed but did not record are left unreferenced, as after a crash.
                error!(error = %failed, instances, "group commit: the publish and record trip failed");
                return;
            }
        };
        if ready.is_empty() {
            return;
        }
        let recorded = match recorded {
            Some(recorded) => recorded,
            None => {
                let news = self.news(&ready, &objects, now_millis());
                self.locator.record_instances(&news, self.replace).await
            }
        };
        match recorded {
            Ok(answers) => {
                let stored: Vec<&Finished> = ready
                    .iter()
                    .zip(&answers)
                    .filter(|(_, recorded)| !matches!(recorded, Recorded::Kept))
                    .map(|((pending, _), _)| &pending.finished)
                    .collect();
                self.announce(&stored);
                for ((pending, location), recorded) in ready.into_iter().zip(answers) {
                    let outcome = self.settle(&pending.finished, &location, recorded).await;
                    let _ = pending.answer.send(outcome);
                }
            }
            Err(e) => {
                // One instance may spoil the batch, or the commit's answer was lost: each
                // instance on its own, checking first whether the batch landed after all.
                warn!(error = %e, instances = ready.len(), "group commit failed; recording one by one");
                for ((pending, location), object) in ready.into_iter().zip(&objects) {
                    let outcome = self
                        .record_alone(&pending.finished, &location, object)
                        .await;
                    let _ = pending.answer.send(outcome);
                }
            }
        }
    }

    /// On the blocking pool: publishes every instance of `batch` (answering those that fail
    /// at once), then records the rest when the locator can do that on this thread
    /// ([`Locator::record_instances_here`]), so a batch costs one trip.
    fn publish_then_record(&self, batch: Vec<Pending>) -> Published {
        let locations: Vec<String> = batch
            .iter()
            .map(|p| {
                self.online.new_location(
                    &p.finished.attributes.study.study_instance_uid,
                    &p.finished.attributes.instance.sop_instance_uid,
                )
            })
            .collect();
        let files: Vec<(&Path, &str)> = batch
            .iter()
            .zip(&locations)
            .map(|(p, l)| (p.finished.written.path.path(), l.as_str()))
            .collect();
        let published = self.online.publish_all(&files);
        drop(files);
        let mut ready = Vec::with_capacity(batch.len());
        for ((mut pending, location), published) in batch.into_iter().zip(locations).zip(published)
        {
            match published {
                Ok(()) => {
                    pending.finished.written.path.published();
                    ready.push((pending, location));
                }
                Err(e) => {
                    // Not recorded, so neither name may stay: the temporary (dropped with
                    // the instance), or the file renamed before a folder sync failed (its
                    // name is never reused).
                    let failure = Outcome::failure(io_status(e.io()), e.to_string());
                    let Pending { finished, answer } = pending;
                    drop(finished);
                    remove_quietly(&self.online.path(&location));
                    let _ = answer.send(failure);
                }
            }
        }
        let objects: Vec<StoredObject> = ready
            .iter()
            .map(|(p, location)| StoredObject {
                tier: Tier::Online,
                location: location.clone(),
                offset: 0,
                length: p.finished.written.length,
                crc32c: p.finished.written.crc32c,
                transfer_syntax_uid: p.finished.transfer_syntax_uid.clone(),
            })
            .collect();
        let recorded = if ready.is_empty() {
            None
        } else {
            let news = self.news(&ready, &objects, now_millis());
            self.locator.record_instances_here(&news, self.replace)
        };
        Published {
            ready,
            objects,
            recorded,
        }
    }

    /// The locator's view of published instances (`objects`: where each is, in order).
    fn news<'a>(
        &self,
        ready: &'a [(Pending, String)],
        objects: &'a [StoredObject],
        received_at: i64,
    ) -> Vec<NewInstance<'a>> {
        ready
            .iter()
            .zip(objects)
            .map(|((p, _), object)| NewInstance {
                attributes: &p.finished.attributes,
                object,
                source_ae: &p.finished.sender.source_ae,
                who: &p.finished.sender.who,
                address: &p.finished.sender.address,
                received_at,
                enqueue_backup: self.enqueue_backup,
            })
            .collect()
    }

    /// Sends the stores of one commit to syslog: one message per study and sender.
    fn announce(&self, stored: &[&Finished]) {
        let Some(auditor) = &self.auditor else { return };
        let mut groups: Vec<(&Finished, usize)> = Vec::new();
        for finished in stored {
            let same = |(g, _): &&mut (&Finished, usize)| {
                g.attributes.study.study_instance_uid
                    == finished.attributes.study.study_instance_uid
                    && g.sender.who == finished.sender.who
                    && g.sender.address == finished.sender.address
            };
            match groups.iter_mut().find(same) {
                Some((_, count)) => *count += 1,
                None => groups.push((finished, 1)),
            }
        }
        let at = now_millis();
        for (finished, count) in groups {
            let detail = format!("{count} instances");
            let entry = Entry {
                address: &finished.sender.address,
                study: Some(&finished.attributes.study.study_instance_uid),
                patient: Some(&finished.attributes.patient.patient_id),
                detail: &detail,
                ..Entry::new(Event::Stored, &finished.sender.who)
            };
            auditor.send(&entry, at);
        }
    }

    /// Records one instance after its batch failed.
    async fn record_alone(
        &self,
        instance: &Finished,
        location: &str,
        object: &StoredObject,
    ) -> Outcome {
        let uid = &instance.attributes.instance.sop_instance_uid;
        match self.landed(uid, location).await {
            Ok(true) => {
                warn!(sop_instance_uid = %uid, "the batch's commit answer was lost, but it landed");
                count_stored(instance);
                return Outcome::success();
            }
            Ok(false) => {}
            // Unknown: the file stays (unreferenced files are harmless; a referenced file
            // must never go).
            Err(e) => return Outcome::failure(Status::ProcessingFailure, e.to_string()),
        }
        let new = NewInstance {
            attributes: &instance.attributes,
            object,
            source_ae: &instance.sender.source_ae,
            who: &instance.sender.who,
            address: &instance.sender.address,
            received_at: now_millis(),
            enqueue_backup: self.enqueue_backup,
        };
        match self.locator.record_instance(&new, self.replace).await {
            // The stored copy may be this very file, recorded by the failed batch after all:
            // the file goes only when the row is known to point elsewhere.
            Ok(Recorded::Kept) => match self.landed(uid, location).await {
                Ok(false) => self.settle(instance, location, Recorded::Kept).await,
                Ok(true) | Err(_) => Outcome::success(),
            },
            Ok(recorded) => self.settle(instance, location, recorded).await,
            Err(e) => self.unsure(instance, location, e).await,
        }
    }

    /// Whether the locator's row for `uid` points at `location`, read once no write deciding
    /// that UID is in flight (so a commit whose answer was lost has landed or never will).
    async fn landed(&self, uid: &str, location: &str) -> Result<bool, LocatorError> {
        let found = self.locator.find_instance_settled(uid).await?;
        Ok(found.is_some_and(|f| f.tier == Tier::Online && f.location == location))
    }

    /// Removes the files no row points at once `recorded` is durable: the new copy when the
    /// stored one was kept, the old copy once the row points at the new one.
    async fn settle(&self, instance: &Finished, location: &str, recorded: Recorded) -> Outcome {
        let uid = &instance.attributes.instance.sop_instance_uid;
        if !matches!(recorded, Recorded::Kept) {
            count_stored(instance);
        }
        match recorded {
            Recorded::Stored => {}
            Recorded::Kept => {
                debug!(sop_instance_uid = %uid, "duplicate kept");
                self.remove_location(location).await;
            }
            Recorded::Replaced(old) => {
                info!(sop_instance_uid = %uid, calling_ae = %instance.sender.source_ae, "replaced a stored instance");
                if old.tier == Tier::Online && old.location != location {
                    self.remove_location(&old.location).await;
                }
            }
        }
        debug!(sop_instance_uid = %uid, bytes = instance.written.length, "stored");
        Outcome::success()
    }

    /// A commit whose answer was lost (the database went away mid-commit) may have landed:
    /// the file is removed only when the locator is known not to point at it, and a landed
    /// commit is a stored instance.
    async fn unsure(&self, instance: &Finished, location: &str, e: LocatorError) -> Outcome {
        let uid = &instance.attributes.instance.sop_instance_uid;
        match self.landed(uid, location).await {
            Ok(true) => {
                warn!(sop_instance_uid = %uid, error = %e, "the commit's answer was lost, but it landed");
                Outcome::success()
            }
            Ok(false) => {
                // Not acknowledged, so not kept: the sender will retry.
                self.remove_location(location).await;
                Outcome::failure(Status::ProcessingFailure, e.to_string())
            }
            // Unknown: the file stays.
            Err(_) => Outcome::failure(Status::ProcessingFailure, e.to_string()),
        }
    }

    async fn remove_location(&self, location: &str) {
        let online = self.online.clone();
        let target = location.to_string();
        match tokio::task::spawn_blocking(move || online.remove(&target)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot remove file"),
            Err(e) => warn!(error = %e, "cannot remove file"),
        }
    }
}

/// Deletes a published file no row points at (best effort: one left is an unreferenced file
/// `verify` finds).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        debug!(path = %path.display(), error = %e, "cannot remove temporary");
    }
}

/// Counts an instance made durable (`crate::metrics`).
fn count_stored(instance: &Finished) {
    metrics::INGEST_INSTANCES.inc(&[]);
    metrics::INGEST_BYTES.add(&[], instance.written.length as f64);
}
