//! `strata backup import-volume`: brings offline volumes back. Each member is read and
//! checked against the volume's manifest (SHA-256 and CRC-32C) first; then a member whose
//! primary is missing or damaged is re-created online, a member the locator does not know (a
//! rebuilt locator) is stored like a C-STORE ([`super::import`]), an intact one is left
//! alone. Studies touched are queued for a new near-line copy, and the volume's copies are
//! recorded if the locator had forgotten them.
//!
//! A member of at most [`READ_ONCE_LIMIT`] is read once and used from memory; a larger one is
//! checked a MiB at a time and read again in parts where it is used, so a member of any size
//! takes bounded memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinSet;
use tracing::warn;

use super::import::{store_member, store_member_bytes, FileStoreError, PARALLEL};
use super::Ingest;
use crate::backup::volume::{self, Manifest, Member, MemberRead};
use crate::convert::{ConvertError, Converter};
use crate::jobs::{JobReport, Progress};
use crate::locator::archive::PlacedInstance;
use crate::locator::volumes::Volume;
use crate::locator::{Locator, LocatorError};
use crate::reader::{Origin, Payload, Reader};

/// Members up to this size are read once and used from memory: at most [`PARALLEL`] of
/// them are held by stores in flight, one more by the reading.
pub const READ_ONCE_LIMIT: u64 = 16 << 20;

/// Why an import could not go on (single members failing are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ImportVolumeError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// What importing volumes did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportVolumeSummary {
    pub volumes: u64,
    pub members: u64,
    /// Primaries re-created online from the volume.
    pub restored: u64,
    /// Instances the locator did not know, ingested.
    pub ingested: u64,
    /// Primaries that read back intact: left alone.
    pub intact: u64,
    /// Members of another version than the one stored now: left alone.
    pub other_version: u64,
    /// Members deleted (`strata delete`) after the volume was written: left out.
    pub deleted: u64,
    /// Members whose bytes fail their SHA-256 or CRC-32C: not used.
    pub damaged: u64,
    pub failed: u64,
    /// Studies queued for a new near-line copy.
    pub queued_for_backup: u64,
    /// Offline copies recorded for a volume the locator had forgotten.
    pub copies_recorded: u64,
    /// `volume member: reason` for every damaged or failed member, `volume: reason` for an
    /// unreadable volume.
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl JobReport for ImportVolumeSummary {
    fn failed(&self) -> bool {
        self.failed + self.damaged > 0
    }
}

/// What an import works with.
pub struct VolumeImport<'a> {
    pub locator: &'a Arc<Locator>,
    pub reader: &'a Reader,
    pub converter: &'a Converter,
    pub ingest: &'a Ingest,
    pub progress: &'a dyn Progress,
}

/// A member handed to a store task, its label for messages, and how the store went.
type Stored = (Member, String, Result<(), FileStoreError>);

/// The import's running account.
#[derive(Default)]
struct Account {
    summary: ImportVolumeSummary,
    /// Studies to queue for a new near-line copy.
    studies: BTreeSet<String>,
}

impl Account {
    fn fail(&mut self, progress: &dyn Progress, label: &str, reason: &str) {
        progress.note(&format!("{label}: {reason}"));
        self.summary.failures.push(format!("{label}: {reason}"));
    }

    fn stored(&mut self, progress: &dyn Progress, joined: Result<Stored, tokio::task::JoinError>) {
        let (member, label, result) = joined.expect("volume store task panicked");
        match result {
            Ok(()) => {
                self.summary.ingested += 1;
                self.studies.insert(member.study_instance_uid);
            }
            Err(reason) => {
                self.summary.failed += 1;
                self.fail(progress, &label, &reason.to_string());
            }
        }
    }
}

impl VolumeImport<'_> {
    /// Imports each volume file in turn.
    pub async fn run(&self, files: &[PathBuf]) -> Result<ImportVolumeSummary, ImportVolumeError> {
        let started = Instant::now();
        // What killed moves left is settled before primaries are re-created.
        self.converter.recover().await?;
        let mut account = Account::default();
        for path in files {
            self.import_file(path, &mut account).await?;
        }
        for study in &account.studies {
            self.locator.enqueue_backup(study, "repair").await?;
        }
        account.summary.queued_for_backup = account.studies.len() as u64;
        account.summary.seconds = started.elapsed().as_secs_f64();
        Ok(account.summary)
    }

    async fn import_file(
        &self,
        path: &Path,
        account: &mut Account,
    ) -> Result<(), ImportVolumeError> {
        let scanned = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || volume::scan(&path))
                .await
                .expect("volume scan task")
        };
        let manifest = match scanned {
            Ok(scanned) => scanned.manifest,
            Err(e) => {
                account.summary.failed += 1;
                account.fail(self.progress, &path.display().to_string(), &e.to_string());
                return Ok(());
            }
        };
        account.summary.volumes += 1;
        let total = manifest.members.len() as u64;
        let deleted = self.locator.deleted_in_volume(&manifest.volume).await?;
        let mut stores = JoinSet::new();
        let mut good = Vec::new();
        for (n, m) in manifest.members.iter().enumerate() {
            account.summary.members += 1;
            if deleted.contains(&m.sop_instance_uid) {
                account.summary.deleted += 1;
            } else if let Some(read) = self.check_member(path, &manifest, m, account).await? {
                good.push(m.clone());
                self.use_member(path, &manifest, m, read, &mut stores, account)
                    .await?;
            }
            self.progress.update(n as u64 + 1, total, "imported", 0);
        }
        // Every member is indexed before the volume's copies are recorded against them.
        while let Some(joined) = stores.join_next().await {
            account.stored(self.progress, joined);
        }
        self.record_forgotten(path, &manifest, &good, account).await
    }

    /// Reads and checks a member; `None` (counted) when it is damaged or unreadable. A
    /// member that is not intact no longer counts as a copy, so the next export-volume
    /// writes its instance again.
    async fn check_member(
        &self,
        path: &Path,
        manifest: &Manifest,
        m: &Member,
        account: &mut Account,
    ) -> Result<Option<MemberRead>, ImportVolumeError> {
        let read = {
            let (path, m) = (path.to_owned(), m.clone());
            tokio::task::spawn_blocking(move || volume::read_member(&path, &m, READ_ONCE_LIMIT))
                .await
                .expect("volume read task")
        };
        if !matches!(read, Ok(MemberRead::Whole(_) | MemberRead::Intact)) {
            for copy in volume::copies_of(&manifest.volume, std::slice::from_ref(m)) {
                self.locator.mark_copy(&copy, true).await?;
            }
        }
        let label = label(manifest, m);
        match read {
            Ok(MemberRead::Damaged) => {
                account.summary.damaged += 1;
                warn!(volume = %manifest.volume, member = %m.path, "volume member damaged: not used");
                account.fail(self.progress, &label, "damaged (SHA-256 mismatch)");
                Ok(None)
            }
            Err(e) => {
                account.summary.failed += 1;
                account.fail(self.progress, &label, &e.to_string());
                Ok(None)
            }
            Ok(read) => Ok(Some(read)),
        }
    }

    /// Uses an intact member: left alone, re-created online, or stored (by a task of
    /// `stores`, at most [`PARALLEL`] at once).
    async fn use_member(
        &self,
        path: &Path,
        manifest: &Manifest,
        m: &Member,
        read: MemberRead,
        stores: &mut JoinSet<Stored>,
        account: &mut Account,
    ) -> Result<(), ImportVolumeError> {
        match self.locator.find_instance(&m.sop_instance_uid).await? {
            Some(primary) if primary.crc32c != m.crc32c => account.summary.other_version += 1,
            Some(primary) if self.reader.check_primary(&primary).await.is_ok() => {
                account.summary.intact += 1
            }
            Some(primary) => {
                let instance = PlacedInstance {
                    sop_instance_uid: m.sop_instance_uid.clone(),
                    object: primary,
                };
                self.restore_primary(path, manifest, m, &instance, read, account)
                    .await?
            }
            None => {
                // A rebuilt locator stores every member: their fsyncs overlap, bounded like
                // `strata import`; members are still read one after another.
                if stores.len() >= PARALLEL {
                    let joined = stores.join_next().await.expect("a task is in flight");
                    account.stored(self.progress, joined);
                }
                let ingest = self.ingest.clone();
                let member = m.clone();
                let label = label(manifest, m);
                let file = path.to_owned();
                stores.spawn(async move {
                    let result = match read {
                        MemberRead::Whole(bytes) => store_member_bytes(&ingest, bytes).await,
                        _ => store_member(&ingest, &file, member.offset, member.length).await,
                    };
                    (member, label, result)
                });
            }
        }
        Ok(())
    }

    /// Re-creates a missing or damaged primary online from the member: from memory when it
    /// was read whole, else from the volume file in parts.
    async fn restore_primary(
        &self,
        path: &Path,
        manifest: &Manifest,
        m: &Member,
        instance: &PlacedInstance,
        read: MemberRead,
        account: &mut Account,
    ) -> Result<(), ImportVolumeError> {
        let payload = match read {
            MemberRead::Whole(bytes) => Payload::Whole(bytes),
            _ => Payload::Parts(Origin::Offline {
                file: path.to_owned(),
                copy: volume::copies_of(&manifest.volume, std::slice::from_ref(m)).remove(0),
            }),
        };
        match self
            .converter
            .replace_with_online(&m.study_instance_uid, instance, payload)
            .await
        {
            Ok(_) => {
                // Mended: off the repair queue now, not at the server's next poll (Instance
                // Availability reads the queue).
                self.locator.finish_repair(&m.sop_instance_uid).await?;
                account.summary.restored += 1;
                account.studies.insert(m.study_instance_uid.clone());
            }
            Err(e) => {
                account.summary.failed += 1;
                account.fail(self.progress, &label(manifest, m), &e.to_string());
            }
        }
        Ok(())
    }

    /// A volume the locator forgot (or only partly knows): records its intact members.
    async fn record_forgotten(
        &self,
        path: &Path,
        manifest: &Manifest,
        good: &[Member],
        account: &mut Account,
    ) -> Result<(), ImportVolumeError> {
        let known = self
            .locator
            .volumes()
            .await?
            .into_iter()
            .any(|v| v.id == manifest.volume && v.state == "complete");
        if known {
            return Ok(());
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let volume = Volume {
            id: manifest.volume.clone(),
            state: "complete".into(),
            directory: path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            size,
            instances: manifest.members.len() as u64,
            sha256: String::new(),
            created_at: manifest.created_at,
            lease: None,
        };
        account.summary.copies_recorded += self
            .locator
            .record_volume(&volume, &volume::copies_of(&manifest.volume, good), true)
            .await?;
        Ok(())
    }
}

/// How a member is named in progress and failure lines: its volume, then its path there.
fn label(manifest: &Manifest, m: &Member) -> String {
    format!("{} {}", manifest.volume, m.path)
}
