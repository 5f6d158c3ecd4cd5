//! Restoring a study online from whichever copy survives (`strata restore --study UID`).
//! Online instances whose file is missing or damaged are re-created from an intact lossless
//! backup copy; archived instances come back online from their container, or from a
//! near-line copy when the container is lost. An instance that no lossless copy on disk can
//! mend is named, with the offline volumes that hold it: `strata backup import-volume`
//! brings those back (a restore never reads tape by itself, nor writes a lossy copy back as
//! a primary).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;
use tracing::warn;

use super::{Backup, BackupError, Repaired};
use crate::jobs::{JobReport, Progress};
use crate::locator::archive::PlacedInstance;
use crate::model::Tier;

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    pub study: String,
    /// Archived instances brought back online (0 when the study was online already).
    pub instances: u64,
    pub bytes: u64,
    /// Online instances found missing or damaged and re-created from a backup copy.
    pub repaired: u64,
    /// `SOP Instance UID: why` for every instance still without an intact primary.
    pub unrecoverable: Vec<String>,
    /// Offline volume files (as recorded) that hold those instances: import them.
    pub volumes_needed: Vec<String>,
    pub seconds: f64,
}

impl JobReport for RestoreSummary {
    fn failed(&self) -> bool {
        !self.unrecoverable.is_empty()
    }
}

/// An instance no lossless copy on disk can mend, and why.
type Lost = (String, String);

impl Backup {
    /// Restores `study` online. An unknown study is an error; instances that cannot be
    /// mended are listed in the summary (which then counts as failed).
    pub async fn restore_study(
        &self,
        study: &str,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary, BackupError> {
        let started = Instant::now();
        self.converter.recover().await?;
        let instances = self.locator.study_instances(study).await?;
        if instances.is_empty() {
            return Err(BackupError::UnknownStudy(study.to_string()));
        }
        let mut summary = RestoreSummary {
            study: study.to_string(),
            ..RestoreSummary::default()
        };
        let mut lost = Vec::new();
        summary.repaired = self.mend_online(&instances, progress, &mut lost).await?;

        // Archived instances: one journaled move of the study, reading each from its
        // container or a surviving near-line copy.
        progress.update(0, 1, &format!("restoring {study}"), 0);
        match self.converter.restore_study(study).await {
            Ok(moved) => {
                summary.instances = moved.instances as u64;
                summary.bytes = moved.bytes;
            }
            Err(e) => {
                // Which archived instances have no lossless copy on disk (only now, so a
                // healthy restore reads each instance once); none named: the error stands.
                if !self.name_lost_archived(&instances, &mut lost).await? {
                    return Err(e.into());
                }
            }
        }
        summary.volumes_needed = self.volumes_holding(&instances, &lost).await?;
        summary.unrecoverable = lost
            .into_iter()
            .map(|(uid, why)| format!("{uid}: {why}"))
            .collect();
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Online instances: each read back in full and checked, the bad ones mended; returns
    /// how many were re-created.
    async fn mend_online(
        &self,
        instances: &[PlacedInstance],
        progress: &dyn Progress,
        lost: &mut Vec<Lost>,
    ) -> Result<u64, BackupError> {
        let online: Vec<_> = instances
            .iter()
            .filter(|i| i.object.tier == Tier::Online)
            .collect();
        let mut repaired = 0;
        for (n, i) in online.iter().enumerate() {
            progress.update(n as u64, online.len() as u64, "checked online", 0);
            if self.reader.check_primary(&i.object).await.is_ok() {
                continue;
            }
            let uid = &i.sop_instance_uid;
            // Queued first: if this run dies, the server's repair pass carries on.
            self.locator.enqueue_repair(uid, "found by restore").await?;
            match self.repair_instance(uid).await {
                Ok(Repaired::Recreated) => repaired += 1,
                Ok(_) => {}
                Err(e) => {
                    warn!(sop_instance_uid = %uid, error = %e, "restore: primary not re-created");
                    lost.push((uid.clone(), e.to_string()));
                }
            }
        }
        Ok(repaired)
    }

    /// Adds to `lost` the archived instances without an intact lossless copy on disk (and
    /// queues their repair); returns whether it named any.
    async fn name_lost_archived(
        &self,
        instances: &[PlacedInstance],
        lost: &mut Vec<Lost>,
    ) -> Result<bool, BackupError> {
        let mut named = false;
        for i in instances.iter().filter(|i| i.object.tier == Tier::Archive) {
            if self.reader.check_primary(&i.object).await.is_ok() {
                continue;
            }
            if let Err(why) = self
                .reader
                .check_good_copy(&i.sop_instance_uid, &i.object)
                .await
            {
                self.locator
                    .enqueue_repair(&i.sop_instance_uid, "found by restore")
                    .await?;
                lost.push((i.sop_instance_uid.clone(), why.to_string()));
                named = true;
            }
        }
        Ok(named)
    }

    /// Where the lost ones can still come from: the offline volume files (as recorded)
    /// holding their current bytes intact (an older version, or a copy found damaged, would
    /// not mend them).
    async fn volumes_holding(
        &self,
        instances: &[PlacedInstance],
        lost: &[Lost],
    ) -> Result<Vec<String>, BackupError> {
        let current: HashMap<&str, u32> = instances
            .iter()
            .map(|i| (i.sop_instance_uid.as_str(), i.object.crc32c))
            .collect();
        let mut volumes = BTreeSet::new();
        for (uid, _) in lost {
            let Some(&crc) = current.get(uid.as_str()) else {
                continue;
            };
            for c in self.locator.usable_offline_copies(uid, crc).await? {
                volumes.insert(c.location);
            }
        }
        let recorded: HashMap<String, String> = self
            .locator
            .volumes()
            .await?
            .into_iter()
            .map(|v| (v.id, v.directory))
            .collect();
        Ok(volumes
            .into_iter()
            .map(|id| {
                let file = super::volume::file_name(&id);
                match recorded.get(&id) {
                    Some(dir) => format!("{dir}/{file}"),
                    None => file,
                }
            })
            .collect())
    }
}

impl std::fmt::Display for RestoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.unrecoverable {
            writeln!(f, "NOT RESTORED {line}")?;
        }
        writeln!(
            f,
            "restored {} instances ({:.1} MB) of {} online, re-created {} damaged or missing, in {:.1} s",
            self.instances,
            self.bytes as f64 / 1e6,
            self.study,
            self.repaired,
            self.seconds
        )?;
        if !self.volumes_needed.is_empty() {
            writeln!(
                f,
                "offline copies exist: strata backup import-volume --config PATH {}",
                self.volumes_needed.join(" ")
            )?;
        }
        Ok(())
    }
}
