//! `strata backup export-volume`, `import-volume` and `volumes`: offline volumes from the
//! command line. Import brings a volume back: members whose primary is missing or damaged are
//! re-created online, members the locator does not know (a rebuilt locator) are ingested like
//! a C-STORE, intact ones are left alone; their studies are queued for a new near-line copy,
//! and the volume's copies are recorded if the locator had forgotten them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use super::backup::BackupCommandError;
use super::progress::Progress;
use crate::backup::volume::{self, ExportSummary, VolumeError};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::archive::PlacedInstance;
use crate::locator::volumes::Volume;
use crate::locator::{Locator, Owner, Role};
use crate::online::OnlineStore;
use crate::reader::{Origin, Payload};

/// Why a volume command could not run at all (single instances failing are counted).
#[derive(Debug, thiserror::Error)]
pub enum VolumeCommandError {
    #[error(transparent)]
    Open(#[from] BackupCommandError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Tier(#[from] super::TierError),
    #[error(transparent)]
    Locator(#[from] crate::locator::LocatorError),
    #[error(transparent)]
    Online(#[from] crate::online::OnlineError),
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
}

/// Writes volumes of everything not yet on one.
pub async fn export_volume(
    config: &Config,
    out: &Path,
    max_size: u64,
    throttle_mb_s: f64,
) -> Result<ExportSummary, VolumeCommandError> {
    let (locator, reader, _) = super::tier::open_parts(config).await?;
    let run = JobRun::start(&locator, JobKind::ExportVolume, Trigger::Cli)
        .await
        .audited(&crate::audit::Auditor::for_command(config, locator.clone()));
    let progress = Progress::start();
    let summary = volume::export(
        &locator,
        &reader,
        out,
        max_size,
        throttle_mb_s,
        |done, total, bytes| progress.update(done, total, "exported", bytes),
    )
    .await;
    progress.finish();
    run.finish(&locator, &summary).await;
    locator.close().await;
    Ok(summary?)
}

/// The volumes the locator knows.
pub async fn volumes(config: &Config) -> Result<Vec<Volume>, VolumeCommandError> {
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let volumes = locator.volumes().await?;
    locator.close().await;
    Ok(volumes)
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

/// A member handed to an ingest task, its label for messages, and how the ingest went.
type IngestResult = (volume::Member, String, Result<(), String>);

/// Imports each volume file.
pub async fn import_volume(
    config: &Config,
    files: &[PathBuf],
) -> Result<ImportVolumeSummary, VolumeCommandError> {
    let (locator, reader, converter) = super::tier::open_parts(config).await?;
    let run = JobRun::start(&locator, JobKind::ImportVolume, Trigger::Cli)
        .await
        .audited(&crate::audit::Auditor::for_command(config, locator.clone()));
    let result = import_volumes(config, &locator, &reader, &converter, files).await;
    run.finish(&locator, &result).await;
    locator.close().await;
    result
}

async fn import_volumes(
    config: &Config,
    locator: &Arc<Locator>,
    reader: &crate::reader::Reader,
    converter: &crate::convert::Converter,
    files: &[PathBuf],
) -> Result<ImportVolumeSummary, VolumeCommandError> {
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, locator).await?);
    let ingest = Ingest::new(online, locator.clone(), config.storage.duplicate_policy)
        .with_auditor(crate::audit::Auditor::for_command(config, locator.clone()));
    converter.recover().await?;
    let progress = Progress::start();
    let mut summary = ImportVolumeSummary::default();
    let mut studies = BTreeSet::new();
    for path in files {
        let scanned = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || volume::scan(&path))
                .await
                .expect("volume scan task")
        };
        let scanned = match scanned {
            Ok(scanned) => scanned,
            Err(e) => {
                progress.note(&format!("{}: {e}", path.display()));
                summary.failures.push(format!("{}: {e}", path.display()));
                summary.failed += 1;
                continue;
            }
        };
        summary.volumes += 1;
        let manifest = &scanned.manifest;
        let total = manifest.members.len() as u64;
        let mut file = std::fs::File::open(path).map_err(|source| VolumeError::Read {
            path: path.clone(),
            source,
        })?;
        let mut good = Vec::new();
        let deleted = locator.deleted_in_volume(&manifest.volume).await?;
        let mut ingests = tokio::task::JoinSet::new();
        let ingested = |joined: Result<IngestResult, tokio::task::JoinError>,
                        summary: &mut ImportVolumeSummary,
                        studies: &mut BTreeSet<String>| {
            let (member, label, result) = joined.expect("volume ingest task panicked");
            match result {
                Ok(()) => {
                    summary.ingested += 1;
                    studies.insert(member.study_instance_uid);
                }
                Err(reason) => {
                    summary.failed += 1;
                    progress.note(&format!("{label}: {reason}"));
                    summary.failures.push(format!("{label}: {reason}"));
                }
            }
        };
        for (n, m) in manifest.members.iter().enumerate() {
            summary.members += 1;
            if deleted.contains(&m.sop_instance_uid) {
                summary.deleted += 1;
                continue;
            }
            let fail = |summary: &mut ImportVolumeSummary, reason: String| {
                progress.note(&format!("{} {}: {reason}", manifest.volume, m.path));
                summary
                    .failures
                    .push(format!("{} {}: {reason}", manifest.volume, m.path));
            };
            // Checked a MiB at a time, then read again in parts where it is used: a member of
            // any size takes bounded memory.
            let checked = volume::member_intact(&mut file, path, m);
            if !matches!(checked, Ok(true)) {
                // The locator's copy of it (if it has one) no longer counts, and the next
                // export-volume writes the instance again.
                for copy in volume::copies_of(&manifest.volume, std::slice::from_ref(m)) {
                    locator.mark_copy(&copy, true).await?;
                }
            }
            match checked {
                Ok(true) => {}
                Ok(false) => {
                    summary.damaged += 1;
                    warn!(volume = %manifest.volume, member = %m.path, "volume member damaged: not used");
                    fail(&mut summary, "damaged (SHA-256 mismatch)".into());
                    continue;
                }
                Err(e) => {
                    summary.failed += 1;
                    fail(&mut summary, e.to_string());
                    continue;
                }
            }
            good.push(m.clone());
            match locator.find_instance(&m.sop_instance_uid).await? {
                Some(primary) if primary.crc32c != m.crc32c => summary.other_version += 1,
                Some(primary) => {
                    if reader.check_primary(&primary).await.is_ok() {
                        summary.intact += 1;
                    } else {
                        let instance = PlacedInstance {
                            sop_instance_uid: m.sop_instance_uid.clone(),
                            object: primary,
                        };
                        match converter
                            .replace_with_online(
                                &m.study_instance_uid,
                                &instance,
                                Payload::Parts(Origin::Offline {
                                    file: path.clone(),
                                    copy: volume::copies_of(
                                        &manifest.volume,
                                        std::slice::from_ref(m),
                                    )
                                    .remove(0),
                                }),
                            )
                            .await
                        {
                            Ok(_) => {
                                // Mended: off the repair queue now, not at the server's
                                // next poll (Instance Availability reads the queue).
                                locator.finish_repair(&m.sop_instance_uid).await?;
                                summary.restored += 1;
                                studies.insert(m.study_instance_uid.clone());
                            }
                            Err(e) => {
                                summary.failed += 1;
                                fail(&mut summary, e.to_string());
                            }
                        }
                    }
                }
                None => {
                    // A rebuilt locator ingests every member: their fsyncs overlap, bounded
                    // like `strata import`; members are still read one after another.
                    if ingests.len() >= super::import::PARALLEL {
                        let joined = ingests.join_next().await.expect("a task is in flight");
                        ingested(joined, &mut summary, &mut studies);
                    }
                    let ingest = ingest.clone();
                    let member = m.clone();
                    let label = format!("{} {}", manifest.volume, m.path);
                    let file = path.clone();
                    ingests.spawn(async move {
                        let result = super::import::ingest_member(
                            &ingest,
                            &file,
                            member.offset,
                            member.length,
                        )
                        .await;
                        (member, label, result)
                    });
                }
            }
            progress.update(n as u64 + 1, total, "imported", 0);
        }
        // Every member is indexed before the volume's copies are recorded against them.
        while let Some(joined) = ingests.join_next().await {
            ingested(joined, &mut summary, &mut studies);
        }
        // A volume the locator forgot (or only partly knows): record its intact members.
        let known = locator
            .volumes()
            .await?
            .into_iter()
            .any(|v| v.id == manifest.volume && v.state == "complete");
        if !known {
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
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
            summary.copies_recorded += locator
                .record_volume(&volume, &volume::copies_of(&manifest.volume, &good), true)
                .await?;
        }
    }
    for study in &studies {
        locator.enqueue_backup(study, "repair").await?;
    }
    summary.queued_for_backup = studies.len() as u64;
    summary.seconds = progress.finish();
    Ok(summary)
}
