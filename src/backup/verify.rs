//! `verify`: scrubs every primary copy and every near-line copy against its CRC-32C, and with
//! `repair` mends what it found: damaged or missing primaries are re-created online from an
//! intact backup copy, damaged or missing near-line copies by rewriting their study's
//! near-line container from the (by then intact) primaries.
//!
//! Offline copies sit on volumes, usually on tape, so they are checked only when the folder
//! holding the volume files is given (`--volumes DIR`, a mounted tape or a copy of it): each
//! is read at its recorded offset in its volume file. Verify cannot rewrite a volume; a
//! damaged offline copy is marked bad, which puts its instance back among those the next
//! `strata backup export-volume` writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Serialize;
use tracing::warn;

use super::{Backup, BackupError, Repaired};
use crate::locator::copies::{Copy, CopyKind};
use crate::model::StoredObject;
use crate::reader::ReadError;

/// Rows read from the locator at a time.
const PAGE: u32 = 1000;
/// Copies read and checked at once.
const PARALLEL: usize = 4;
/// How long a repair waits for another process moving the same study.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How many copies of one tier or kind were found intact, missing or damaged.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub missing: u64,
    pub damaged: u64,
}

impl Counts {
    fn add(&mut self, result: &Result<(), ReadError>) -> bool {
        match result {
            Ok(()) => self.ok += 1,
            Err(e) if e.is_missing() => self.missing += 1,
            Err(_) => self.damaged += 1,
        }
        result.is_ok()
    }
}

/// What a scrub found and, with repair, mended. Its JSON form is printed by `strata verify
/// --json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Primary copies per tier (`online`, `archive`).
    pub primaries: BTreeMap<&'static str, Counts>,
    /// Extra copies per kind (`nearline`; `offline` when the volumes were given).
    pub copies: BTreeMap<&'static str, Counts>,
    /// Primaries re-created from a backup copy.
    pub repaired_primaries: u64,
    /// Studies whose near-line container was rewritten.
    pub repaired_studies: u64,
    /// Damaged or missing copies still so after this run (0 after a complete repair).
    pub remaining: u64,
    /// Bad primaries whose every lossless copy is lost too, with a lossy (JPEG 2000 ROI)
    /// copy left: retrieves send that copy, marked lossy; only a lossless copy (an offline
    /// volume) can mend them.
    pub lossy_only: u64,
    /// Bad primaries with no intact copy at all.
    pub unrecoverable: u64,
    /// Offline (volume) copies not read: no volume folder was given, or their volume file is
    /// not in it.
    pub offline_not_checked: u64,
    /// Volumes whose file is not in the folder given, with how many copies each holds.
    pub volumes_absent: BTreeMap<String, u64>,
    /// Damaged or missing offline copies: written again by the next `export-volume`.
    pub offline_to_export: u64,
    /// One line per problem found or left.
    pub problems: Vec<String>,
    pub seconds: f64,
}

impl VerifyReport {
    /// Damaged or missing copies found by the scrub.
    pub fn found(&self) -> u64 {
        self.primaries
            .values()
            .chain(self.copies.values())
            .map(|c| c.missing + c.damaged)
            .sum()
    }
}

impl Backup {
    /// Scrubs everything; with `repair`, mends what can be mended. `volumes` is the folder
    /// holding the volume files, to check offline copies too. `progress` hears (checked,
    /// total, bytes) as the scrub goes.
    pub async fn verify(
        &self,
        repair: bool,
        volumes: Option<&Path>,
        mut progress: impl FnMut(u64, u64, u64),
    ) -> Result<VerifyReport, BackupError> {
        let started = std::time::Instant::now();
        let mut report = VerifyReport::default();
        report.primaries.insert("online", Counts::default());
        report.primaries.insert("archive", Counts::default());
        report.copies.insert("nearline", Counts::default());
        // Volume id -> its file in the folder given, when one was.
        let volume_files: Option<HashMap<String, PathBuf>> = match volumes {
            Some(dir) => {
                report.copies.insert("offline", Counts::default());
                let known = self.locator.volumes().await?;
                Some(
                    known
                        .into_iter()
                        .map(|v| {
                            let file = dir.join(super::volume::file_name(&v.id));
                            (v.id, file)
                        })
                        .filter(|(_, file)| file.exists())
                        .collect(),
                )
            }
            None => None,
        };
        let total = self.locator.totals().await?.instances + self.locator.copy_count().await?;
        let (mut checked, mut bytes) = (0u64, 0u64);

        // Primaries, page by page, a few reads at a time.
        let mut bad_primaries: Vec<(String, StoredObject)> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.locator.primaries_page(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let reader = self.reader.clone();
            let locator = self.locator.clone();
            let mut results = futures_util::stream::iter(page)
                .map(|mut p| {
                    let (reader, locator) = (reader.clone(), locator.clone());
                    async move {
                        let mut result = reader.check_primary(&p.object).await;
                        if result.is_err() {
                            // A move (the server's tiering, a repair) or a delete may have
                            // finished since the page was read: what the row says now counts.
                            match locator.find_instance(&p.sop_instance_uid).await {
                                Ok(Some(now)) if now != p.object => {
                                    result = reader.check_primary(&now).await;
                                    p.object = now;
                                }
                                Ok(None) => return (p, None),
                                _ => {}
                            }
                        }
                        (p, Some(result))
                    }
                })
                .buffered(PARALLEL);
            while let Some((p, result)) = results.next().await {
                checked += 1;
                bytes += p.object.length;
                let Some(result) = result else {
                    // Deleted meanwhile.
                    progress(checked, total, bytes);
                    continue;
                };
                let tier = p.object.tier.as_str();
                let counts = report.primaries.entry(tier).or_default();
                if let Err(e) = &result {
                    warn!(sop_instance_uid = %p.sop_instance_uid, tier, location = %p.object.location, error = %e, "verify: primary copy unreadable");
                    report
                        .problems
                        .push(format!("{} primary ({tier}): {e}", p.sop_instance_uid));
                    bad_primaries.push((p.sop_instance_uid.clone(), p.object.clone()));
                }
                counts.add(&result);
                progress(checked, total, bytes);
            }
        }

        // Backup copies: near-line always, offline when their volume file is at hand.
        let mut bad_copies: Vec<String> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.locator.copies_page(after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            let reader = self.reader.clone();
            let locator = self.locator.clone();
            let files = &volume_files;
            let mut results = futures_util::stream::iter(page)
                .map(|(_, c)| {
                    let (reader, locator) = (reader.clone(), locator.clone());
                    let file = match c.kind {
                        CopyKind::Nearline => None,
                        CopyKind::Offline => Some(
                            files
                                .as_ref()
                                .and_then(|files| files.get(&c.location).cloned()),
                        ),
                    };
                    async move {
                        let result = match file {
                            None => Some(reader.check_copy(&c).await),
                            Some(None) => None,
                            Some(Some(file)) => Some(check_offline(file, c.clone()).await),
                        };
                        // A near-line container written again since the page was read (the
                        // backup worker after a move or a repair) replaced this copy: gone.
                        let gone = matches!(result, Some(Err(_)))
                            && c.kind == CopyKind::Nearline
                            && locator
                                .copies_of(&c.sop_instance_uid)
                                .await
                                .is_ok_and(|now| {
                                    !now.iter()
                                        .any(|n| n.location == c.location && n.offset == c.offset)
                                });
                        (c, result, gone)
                    }
                })
                .buffered(PARALLEL);
            while let Some((c, result, gone)) = results.next().await {
                checked += 1;
                if gone {
                    progress(checked, total, bytes);
                    continue;
                }
                let Some(result) = result else {
                    report.offline_not_checked += 1;
                    if volume_files.is_some() {
                        *report.volumes_absent.entry(c.location.clone()).or_default() += 1;
                    }
                    progress(checked, total, bytes);
                    continue;
                };
                bytes += c.length;
                let kind = c.kind.as_str();
                let counts = report.copies.entry(kind).or_default();
                self.locator.mark_copy(&c, result.is_err()).await?;
                if let Err(e) = &result {
                    warn!(sop_instance_uid = %c.sop_instance_uid, kind, location = %c.location, error = %e, "verify: backup copy unreadable");
                    let what = match c.kind {
                        CopyKind::Nearline => "near-line copy".to_string(),
                        CopyKind::Offline => format!("offline copy (volume {})", c.location),
                    };
                    report
                        .problems
                        .push(format!("{} {what}: {e}", c.sop_instance_uid));
                    match c.kind {
                        CopyKind::Nearline => bad_copies.push(c.sop_instance_uid.clone()),
                        CopyKind::Offline => report.offline_to_export += 1,
                    }
                }
                counts.add(&result);
                progress(checked, total, bytes);
            }
        }
        report.remaining = report.found();

        // What each bad primary can be mended from (few reads: only the damage).
        for (uid, object) in &bad_primaries {
            match self.reader.check_good_copy(uid, object).await {
                Ok(_) => {}
                Err(e @ ReadError::OnlyLossy { .. }) => {
                    report.lossy_only += 1;
                    report.problems.push(e.to_string());
                }
                Err(e) => {
                    report.unrecoverable += 1;
                    report.problems.push(e.to_string());
                }
            }
        }

        if repair {
            let uids: Vec<String> = bad_primaries.into_iter().map(|(uid, _)| uid).collect();
            self.repair(&mut report, &uids, &bad_copies).await?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Primaries first (from backup copies), then the near-line containers of the studies
    /// with bad copies (from the primaries).
    /// [`Backup::repair_instance`], waiting (up to [`BUSY_WAIT`]) while another process
    /// (the server's repair worker, found the same damage on a read) moves the study: it
    /// usually mends the very instance, which then reads back intact.
    async fn repair_waiting_for_others(&self, uid: &str) -> Result<Repaired, BackupError> {
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match self.repair_instance(uid).await {
                Err(BackupError::Convert(crate::convert::ConvertError::Busy(_)))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                other => return other,
            }
        }
    }

    async fn repair(
        &self,
        report: &mut VerifyReport,
        bad_primaries: &[String],
        bad_copies: &[String],
    ) -> Result<(), BackupError> {
        for uid in bad_primaries {
            // Queued first: a kill part-way leaves the work for the next run or the server.
            self.locator.enqueue_repair(uid, "found by verify").await?;
        }
        for uid in self.locator.pending_repairs().await? {
            match self.repair_waiting_for_others(&uid).await {
                Ok(Repaired::Recreated) => report.repaired_primaries += 1,
                Ok(_) => {}
                Err(e) => report
                    .problems
                    .push(format!("{uid} primary not re-created: {e}")),
            }
        }
        let mut studies = BTreeSet::new();
        for uid in bad_copies {
            if let Some(study) = self.locator.study_of(uid).await? {
                studies.insert(study);
            }
        }
        for study in studies {
            self.locator.enqueue_backup(&study, "repair").await?;
            match self.backup_study(&study).await {
                Ok(_) => {
                    report.repaired_studies += 1;
                }
                Err(e) => report
                    .problems
                    .push(format!("study {study}: near-line copy not rewritten: {e}")),
            }
        }
        // What is left: look again at what was bad (few reads, and exact).
        let mut left = 0;
        for uid in bad_copies {
            let copies = self.locator.copies_of(uid).await?;
            let mut intact = false;
            for c in copies.iter().filter(|c| c.kind == CopyKind::Nearline) {
                if self.reader.check_copy(c).await.is_ok() {
                    intact = true;
                    break;
                }
            }
            if !intact {
                left += 1;
            }
        }
        let mut primaries_bad_now = 0;
        for uid in bad_primaries {
            if let Some(p) = self.locator.find_instance(uid).await? {
                if self.reader.check_primary(&p).await.is_err() {
                    primaries_bad_now += 1;
                }
            }
        }
        // Verify cannot rewrite a volume: those wait for the next export-volume.
        report.remaining = primaries_bad_now + left + report.offline_to_export;
        Ok(())
    }
}

/// One offline copy checked in its volume file, off the async threads.
async fn check_offline(file: PathBuf, copy: Copy) -> Result<(), ReadError> {
    let location = format!("{}:{}", file.display(), copy.member);
    let (offset, length) = (copy.offset, copy.length);
    tokio::task::spawn_blocking(move || super::volume::check_copy(&file, &copy))
        .await
        .unwrap_or_else(|e| {
            Err(ReadError::Io {
                location,
                offset,
                length,
                source: std::io::Error::other(e),
            })
        })
}
