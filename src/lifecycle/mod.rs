//! The study lifecycle (issue #18): deleting a study, series or instance from every tier and
//! copy.
//!
//! A delete is journaled like a tier move (`archive_jobs`, kind `delete`) and ordered so that
//! a kill at any step leaves the objects either fully visible or fully gone:
//!
//! 1. claim the study (the journal entry; no archive, restore or other delete of it runs
//!    meanwhile);
//! 2. in one locator transaction, take the instances out of the index (with their copies'
//!    rows, metadata and repairs), record them in `deleted_instances` with the offline
//!    volumes that hold them, audit each, and mark the job committed with their primary
//!    copies. From here on nothing serves them;
//! 3. rewrite the archive containers the study still uses without them, delete the online
//!    files and containers nothing points at, drop the job ([`Converter::finish_delete`]);
//! 4. near-line: containers no copy points at are deleted; when instances of the study
//!    remain, the study was queued (in step 2) for a new near-line copy, written now, which
//!    replaces the old container.
//!
//! A kill before step 2 commits leaves everything as it was (recovery drops the job); after
//! it, [`Converter::recover`] finishes step 3 and the backup worker's recovery and queue
//! finish step 4. Offline volumes cannot be rewritten: `strata backup import-volume` leaves
//! their deleted members out.

pub mod retention;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use crate::audit::{Auditor, Entry, Event};
use crate::backup::{Backup, BackupError};
use crate::convert::{ConvertError, Converter};
use crate::locator::lifecycle::{DeleteScope, Removed};
use crate::locator::{Locator, LocatorError};
use crate::model::Tier;

/// Why a delete did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("no {level} with UID {uid} is stored")]
    NotFound { level: &'static str, uid: String },
    #[error("study {0} is being moved or deleted by another process; try again later")]
    Busy(String),
}

/// What a delete did (`strata delete --json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deleted {
    /// `STUDY`, `SERIES` or `IMAGE`.
    pub level: &'static str,
    pub uid: String,
    pub study: String,
    pub reason: String,
    pub instances: u64,
    pub bytes: u64,
    /// No instance of the study is left.
    pub study_gone: bool,
    pub online_files: u64,
    pub archive_containers: u64,
    /// Archive containers still holding other instances, written again without these.
    pub archive_containers_rewritten: u64,
    pub nearline_containers: u64,
    /// The rest of the study's new near-line copy was written (`false`: none needed, or it
    /// was left queued for the backup worker; see `nearline_pending`).
    pub nearline_rewritten: bool,
    pub nearline_pending: bool,
    /// Offline volumes holding copies: marked deleted in the locator (volumes cannot be
    /// rewritten; importing them leaves these instances out).
    pub offline_volumes: Vec<String>,
    pub seconds: f64,
}

impl crate::jobs::JobReport for Deleted {
    fn failed(&self) -> bool {
        false
    }
}

/// Deletes objects from every tier and copy.
pub struct Deleter {
    locator: Arc<Locator>,
    converter: Arc<Converter>,
    backup: Arc<Backup>,
    auditor: Option<Auditor>,
}

impl Deleter {
    pub fn new(locator: Arc<Locator>, converter: Arc<Converter>, backup: Arc<Backup>) -> Deleter {
        Deleter {
            locator,
            converter,
            backup,
            auditor: None,
        }
    }

    /// Sends each delete to `auditor`'s syslog too (the audit log's rows are written with
    /// the delete).
    pub fn with_auditor(mut self, auditor: Auditor) -> Deleter {
        self.auditor = Some(auditor);
        self
    }

    /// Runs interrupted deletes and moves to their end: once before a series of deletes.
    pub async fn recover(&self) -> Result<(), LifecycleError> {
        self.converter.recover().await?;
        Ok(())
    }

    /// Deletes everything in `scope`; `who` (the audit's actor) and `reason` are recorded
    /// with each instance. Runs interrupted deletes and moves to their end first.
    pub async fn delete(
        &self,
        scope: &DeleteScope,
        reason: &str,
        who: &str,
    ) -> Result<Deleted, LifecycleError> {
        self.recover().await?;
        self.delete_recovered(scope, reason, who).await
    }

    /// [`Deleter::delete`] after [`Deleter::recover`] ran (a pass over many studies).
    pub async fn delete_recovered(
        &self,
        scope: &DeleteScope,
        reason: &str,
        who: &str,
    ) -> Result<Deleted, LifecycleError> {
        let started = Instant::now();
        let not_found = || LifecycleError::NotFound {
            level: scope.level(),
            uid: scope.uid().to_string(),
        };
        let study = self
            .locator
            .study_of_scope(scope)
            .await?
            .ok_or_else(not_found)?;
        let job = self
            .locator
            .begin_job("delete", &study, "", &[])
            .await?
            .ok_or_else(|| LifecycleError::Busy(study.clone()))?;
        let removed = match self
            .locator
            .remove_instances(job, &study, scope, reason, who)
            .await
        {
            Ok(removed) if removed.instances > 0 => removed,
            other => {
                // Not committed: nothing changed; the journal entry goes.
                let _ = self.locator.finish_job(job).await;
                return Err(match other {
                    Ok(_) => not_found(),
                    Err(e) => e.into(),
                });
            }
        };
        info!(level = scope.level(), uid = %scope.uid(), study = %study, instances = removed.instances,
            bytes = removed.bytes, reason, who, "deleted from the index");
        self.announce(
            &study,
            who,
            &format!("{} instances ({reason})", removed.instances),
        );
        let mut deleted = Deleted {
            level: scope.level(),
            uid: scope.uid().to_string(),
            reason: reason.to_string(),
            ..Deleted::default()
        };
        self.remove_bytes(job, &study, &removed, &mut deleted)
            .await?;
        deleted.seconds = started.elapsed().as_secs_f64();
        Ok(deleted)
    }

    /// Deletes the bytes of `study`'s instances rejected at or before `cutoff_ms` (IOCM
    /// rejection notes hid them from the index when they came), as [`Deleter::delete`]
    /// deletes a study's: journaled, resumable. `Ok(None)`: none is due. Call
    /// [`Deleter::recover`] first (once per pass).
    pub async fn purge_rejected(
        &self,
        study: &str,
        cutoff_ms: i64,
        who: &str,
    ) -> Result<Option<Deleted>, LifecycleError> {
        let started = Instant::now();
        let job = self
            .locator
            .begin_job("delete", study, "", &[])
            .await?
            .ok_or_else(|| LifecycleError::Busy(study.to_string()))?;
        let removed = match self
            .locator
            .take_due_rejections(job, study, cutoff_ms, who)
            .await
        {
            Ok(removed) if removed.instances > 0 => removed,
            other => {
                let _ = self.locator.finish_job(job).await;
                return other.map(|_| None).map_err(Into::into);
            }
        };
        info!(study = %study, instances = removed.instances, bytes = removed.bytes,
            "deleting rejected instances");
        let detail = format!("{} rejected instances", removed.instances);
        self.announce(study, who, &detail);
        let mut deleted = Deleted {
            level: "IMAGE",
            uid: study.to_string(),
            reason: "rejected".to_string(),
            ..Deleted::default()
        };
        self.remove_bytes(job, study, &removed, &mut deleted)
            .await?;
        deleted.seconds = started.elapsed().as_secs_f64();
        Ok(Some(deleted))
    }

    /// Sends a delete to the auditor's syslog (its audit rows went with the index change).
    fn announce(&self, study: &str, who: &str, detail: &str) {
        if let Some(auditor) = &self.auditor {
            let entry = Entry {
                study: Some(study),
                detail,
                ..Entry::new(Event::Deleted, who)
            };
            auditor.send(&entry, crate::locator::now_millis());
        }
    }

    /// The byte phase of a committed delete `job` of `removed` (steps 3 and 4 above), with
    /// its figures in `deleted`.
    async fn remove_bytes(
        &self,
        job: i64,
        study: &str,
        removed: &Removed,
        deleted: &mut Deleted,
    ) -> Result<(), LifecycleError> {
        let count = |tier| removed.primaries.iter().filter(|(t, _)| *t == tier).count() as u64;
        deleted.study = study.to_string();
        deleted.instances = removed.instances;
        deleted.bytes = removed.bytes;
        deleted.study_gone = removed.study_gone;
        deleted.online_files = count(Tier::Online);
        deleted.archive_containers = count(Tier::Archive);
        deleted.offline_volumes = removed.offline_volumes.clone();
        deleted.archive_containers_rewritten = self
            .converter
            .finish_delete(job, study, &removed.primaries)
            .await? as u64;
        deleted.nearline_containers = removed.nearline.len() as u64;
        if !removed.nearline.is_empty() {
            if !removed.study_gone {
                // Queued in the same transaction; written now so the deleted instances'
                // bytes go at once. Left queued if that fails.
                match self.backup.backup_study(study).await {
                    Ok(_) => deleted.nearline_rewritten = true,
                    Err(e) => {
                        warn!(study = %study, error = %e, "near-line copy of the rest of the study left to the backup worker");
                        deleted.nearline_pending = true;
                    }
                }
            }
            self.backup.delete_unreferenced(&removed.nearline).await?;
        }
        Ok(())
    }
}
