//! `strata restore --study UID`: makes a study whole on the online tier from whichever copy
//! survives. Online instances whose file is missing or damaged are re-created from an intact
//! lossless backup copy; archived instances come back online from their container, or from
//! a near-line copy when the container is lost. An instance that no lossless copy on disk
//! can mend is named, with the offline volumes that hold it: `strata backup import-volume`
//! brings those back (a restore never reads tape by itself, nor writes a lossy copy back as
//! a primary).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use tracing::warn;

use super::backup::{BackupCommandError, Stack};
use super::progress::Progress;
use crate::backup::Repaired;
use crate::config::Config;
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::model::Tier;

/// What `strata restore` did.
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

/// Restores a study online. An unknown study is an error; instances that cannot be mended
/// are listed and make the run a failure (non-zero exit), recorded as such.
pub async fn restore(config: &Config, study: &str) -> Result<RestoreSummary, BackupCommandError> {
    let stack = Stack::open(config).await?;
    let run = JobRun::start(&stack.locator, JobKind::Restore, Trigger::Cli)
        .await
        .audited(&stack.auditor);
    let result = restore_study(&stack, study).await;
    run.finish(&stack.locator, &result).await;
    stack.locator.close().await;
    result
}

async fn restore_study(stack: &Stack, study: &str) -> Result<RestoreSummary, BackupCommandError> {
    stack.converter.recover().await?;
    let mut summary = RestoreSummary {
        study: study.to_string(),
        ..RestoreSummary::default()
    };
    let progress = Progress::start();
    let instances = stack.locator.study_instances(study).await?;
    if instances.is_empty() {
        progress.finish();
        return Err(crate::convert::ConvertError::UnknownStudy(study.to_string()).into());
    }

    // Online instances: each read back in full and checked, the bad ones mended.
    let online: Vec<_> = instances
        .iter()
        .filter(|i| i.object.tier == Tier::Online)
        .collect();
    let mut lost = Vec::new();
    for (n, i) in online.iter().enumerate() {
        progress.update(n as u64, online.len() as u64, "checked online", 0);
        if stack.reader.check_primary(&i.object).await.is_ok() {
            continue;
        }
        let uid = &i.sop_instance_uid;
        // Queued first: if this run dies, the server's repair pass carries on.
        stack
            .locator
            .enqueue_repair(uid, "found by restore")
            .await?;
        match stack.backup.repair_instance(uid).await {
            Ok(Repaired::Recreated) => summary.repaired += 1,
            Ok(_) => {}
            Err(e) => {
                warn!(sop_instance_uid = %uid, error = %e, "restore: primary not re-created");
                lost.push((uid.clone(), e.to_string()));
            }
        }
    }

    // Archived instances: one journaled move of the study, reading each from its container
    // or a surviving near-line copy.
    progress.update(0, 1, &format!("restoring {study}"), 0);
    match stack.converter.restore_study(study).await {
        Ok(moved) => {
            summary.instances = moved.instances as u64;
            summary.bytes = moved.bytes;
        }
        Err(e) => {
            // Find which archived instances have no lossless copy on disk (only now, so a
            // healthy restore reads each instance once).
            let mut named = false;
            for i in instances.iter().filter(|i| i.object.tier == Tier::Archive) {
                if stack.reader.check_primary(&i.object).await.is_ok() {
                    continue;
                }
                if let Err(why) = stack
                    .reader
                    .check_good_copy(&i.sop_instance_uid, &i.object)
                    .await
                {
                    stack
                        .locator
                        .enqueue_repair(&i.sop_instance_uid, "found by restore")
                        .await?;
                    lost.push((i.sop_instance_uid.clone(), why.to_string()));
                    named = true;
                }
            }
            if !named {
                progress.finish();
                return Err(e.into());
            }
        }
    }

    // Where the lost ones can still come from: volumes holding their current bytes intact
    // (an older version, or a copy found damaged, would not mend them).
    let current: HashMap<&str, u32> = instances
        .iter()
        .map(|i| (i.sop_instance_uid.as_str(), i.object.crc32c))
        .collect();
    let mut volumes = BTreeSet::new();
    for (uid, _) in &lost {
        let Some(&crc) = current.get(uid.as_str()) else {
            continue;
        };
        for c in stack.locator.usable_offline_copies(uid, crc).await? {
            volumes.insert(c.location);
        }
    }
    let recorded: HashMap<String, String> = stack
        .locator
        .volumes()
        .await?
        .into_iter()
        .map(|v| (v.id, v.directory))
        .collect();
    summary.volumes_needed = volumes
        .into_iter()
        .map(|id| {
            let file = crate::backup::volume::file_name(&id);
            match recorded.get(&id) {
                Some(dir) => format!("{dir}/{file}"),
                None => file,
            }
        })
        .collect();
    summary.unrecoverable = lost
        .into_iter()
        .map(|(uid, why)| format!("{uid}: {why}"))
        .collect();
    summary.seconds = progress.finish();
    Ok(summary)
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
