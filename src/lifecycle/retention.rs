//! Retention (issue #18): which studies are past `[lifecycle]` retention, a pass that deletes
//! them (the same delete as `strata delete --study`) and the bytes of instances rejected
//! more than `rejected_keep_days` ago, and the server's worker that runs a pass inside its
//! window. A study's age counts from its Study Date (from its newest
//! instance's arrival when it has none); a study with a malformed Study Date never expires
//! by itself (named in the log; an admin decides).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Deleter, LifecycleError};
use crate::config::LifecycleConfig;
use crate::jobs::{JobKind, JobReport, JobRun, Trigger};
use crate::locator::lifecycle::{DeleteScope, StudyAge};
use crate::locator::rejection::PendingRejection;
use crate::locator::{now_millis, Locator, LocatorError};
use crate::model::schedule::{in_window, iso8601, minute_now};

/// Who the audit names for deletes by retention.
const ACTOR: &str = "retention";

/// The retention rules of a config.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionPolicy {
    /// 0: forever.
    pub retention_years: u32,
    pub by_modality: BTreeMap<String, u32>,
    /// Days rejected instances' bytes are kept.
    pub rejected_keep_days: u32,
}

impl From<&LifecycleConfig> for RetentionPolicy {
    fn from(c: &LifecycleConfig) -> RetentionPolicy {
        RetentionPolicy {
            retention_years: c.retention_years,
            by_modality: c.retention_years_by_modality.clone(),
            rejected_keep_days: c.rejected_keep_days,
        }
    }
}

impl RetentionPolicy {
    /// Instances rejected at or before this time (Unix ms) are due for deletion at `now_ms`.
    pub fn rejected_cutoff(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.rejected_keep_days) * 86_400_000
    }

    /// Whether anything can expire at all.
    pub fn any(&self) -> bool {
        self.retention_years > 0 || self.by_modality.values().any(|y| *y > 0)
    }

    /// Years a study with these modalities is kept; `None`: forever.
    pub fn years_for(&self, modalities: &[String]) -> Option<u32> {
        let of = |m: &String| {
            self.by_modality
                .get(m)
                .copied()
                .unwrap_or(self.retention_years)
        };
        let years = if modalities.is_empty() {
            self.retention_years
        } else if modalities.iter().any(|m| of(m) == 0) {
            0
        } else {
            modalities.iter().map(of).max().unwrap_or(0)
        };
        (years > 0).then_some(years)
    }
}

/// A study past its retention.
#[derive(Debug, Clone, Serialize)]
pub struct Expired {
    pub study_instance_uid: String,
    pub patient_id: String,
    /// `YYYYMMDD`: the Study Date, or the day its newest instance arrived.
    pub date: String,
    pub modalities: Vec<String>,
    pub retention_years: u32,
}

/// `YYYYMMDD` of a Unix time in ms (UTC).
fn day_of(ms: i64) -> String {
    iso8601(ms)[..10].replace('-', "")
}

/// The studies of `ages` past retention on the day of `now_ms`.
pub fn expired(policy: &RetentionPolicy, ages: Vec<StudyAge>, now_ms: i64) -> Vec<Expired> {
    let today = day_of(now_ms);
    let (year, month_day) = today.split_at(4);
    let year: u32 = year.parse().unwrap_or(0);
    let mut out = Vec::new();
    for age in ages {
        let Some(years) = policy.years_for(&age.modalities) else {
            continue;
        };
        let date = if age.study_date.is_empty() {
            match age.newest_received_ms {
                Some(ms) => day_of(ms),
                None => continue,
            }
        } else if age.study_date.len() == 8 && age.study_date.bytes().all(|b| b.is_ascii_digit()) {
            age.study_date.clone()
        } else {
            warn!(study = %age.study_instance_uid, study_date = %age.study_date,
                "malformed Study Date: the study never expires by itself");
            continue;
        };
        // Kept for `years` after its date: expired once today is past the anniversary.
        let cutoff = format!("{:04}{month_day}", year.saturating_sub(years));
        if date < cutoff {
            out.push(Expired {
                study_instance_uid: age.study_instance_uid,
                patient_id: age.patient_id,
                date,
                modalities: age.modalities,
                retention_years: years,
            });
        }
    }
    out
}

/// Every study past retention now.
pub async fn list_expired(
    locator: &Locator,
    policy: &RetentionPolicy,
) -> Result<Vec<Expired>, LocatorError> {
    if !policy.any() {
        return Ok(Vec::new());
    }
    Ok(expired(policy, locator.study_ages().await?, now_millis()))
}

/// What one retention pass did (`strata lifecycle run --json`, the job history).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionPass {
    pub dry_run: bool,
    pub policy: RetentionPolicy,
    /// Studies past retention when the pass started.
    pub expired: Vec<Expired>,
    /// Studies with rejected instances due for deletion when the pass started.
    pub rejected: Vec<PendingRejection>,
    /// Rejected instances deleted (also counted in `instances` and `bytes`).
    pub rejected_deleted: u64,
    pub deleted: u64,
    pub instances: u64,
    pub bytes: u64,
    pub failed: u64,
    /// `study: why` for every study not deleted.
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl JobReport for RetentionPass {
    fn failed(&self) -> bool {
        self.failed > 0
    }
}

/// Lists the studies past retention and, unless `dry_run`, deletes them one at a time while
/// `keep_going()` says so.
pub async fn pass(
    deleter: &Deleter,
    locator: &Locator,
    policy: &RetentionPolicy,
    dry_run: bool,
    keep_going: impl Fn() -> bool,
) -> Result<RetentionPass, LocatorError> {
    let started = Instant::now();
    // One cutoff for the listing and the purge: only what was listed is purged.
    let cutoff = policy.rejected_cutoff(now_millis());
    let mut pass = RetentionPass {
        dry_run,
        policy: policy.clone(),
        expired: list_expired(locator, policy).await?,
        rejected: locator.rejections(cutoff).await?,
        ..RetentionPass::default()
    };
    if !dry_run && (!pass.expired.is_empty() || !pass.rejected.is_empty()) {
        // Interrupted deletes and moves finish first, once for the whole pass.
        if let Err(e) = deleter.recover().await {
            warn!(error = %e, "retention: interrupted work not recovered; nothing deleted");
            pass.failed += 1;
            pass.failures.push(format!("recovery: {e}"));
            pass.seconds = started.elapsed().as_secs_f64();
            return Ok(pass);
        }
        for study in pass.expired.clone() {
            if !keep_going() {
                break;
            }
            let reason = format!(
                "retention expired: {} years after {}",
                study.retention_years, study.date
            );
            let scope = DeleteScope::Study(study.study_instance_uid.clone());
            match deleter.delete_recovered(&scope, &reason, ACTOR).await {
                Ok(d) => {
                    pass.deleted += 1;
                    pass.instances += d.instances;
                    pass.bytes += d.bytes;
                }
                // Gone meanwhile (another node's pass, an admin): nothing left to do.
                Err(LifecycleError::NotFound { .. }) => {}
                Err(e) => {
                    warn!(study = %study.study_instance_uid, error = %e, "retention: study not deleted");
                    pass.failed += 1;
                    pass.failures
                        .push(format!("{}: {e}", study.study_instance_uid));
                }
            }
        }
        purge_rejected(deleter, cutoff, &mut pass, &keep_going).await;
    }
    pass.seconds = started.elapsed().as_secs_f64();
    Ok(pass)
}

/// Deletes the bytes of the rejected instances `pass` found due, study by study.
async fn purge_rejected(
    deleter: &Deleter,
    cutoff: i64,
    pass: &mut RetentionPass,
    keep_going: &impl Fn() -> bool,
) {
    for pending in pass.rejected.clone() {
        if !keep_going() {
            break;
        }
        let study = &pending.study_instance_uid;
        match deleter.purge_rejected(study, cutoff, ACTOR).await {
            Ok(Some(d)) => {
                pass.rejected_deleted += d.instances;
                pass.instances += d.instances;
                pass.bytes += d.bytes;
            }
            // Purged meanwhile (another node's pass).
            Ok(None) => {}
            Err(e) => {
                warn!(study = %study, error = %e, "rejected instances not deleted");
                pass.failed += 1;
                pass.failures.push(format!("{study}: {e}"));
            }
        }
    }
}

/// Whether a pass would delete anything now.
async fn has_work(locator: &Locator, policy: &RetentionPolicy) -> Result<bool, LocatorError> {
    let cutoff = policy.rejected_cutoff(now_millis());
    Ok(!list_expired(locator, policy).await?.is_empty()
        || !locator.rejections(cutoff).await?.is_empty())
}

/// When the server's retention worker runs.
#[derive(Debug, Clone)]
pub struct RetentionSchedule {
    /// Minutes since midnight UTC, start and end (may wrap past midnight).
    pub window: (u32, u32),
    pub poll: Duration,
}

/// The server's retention worker: inside its window, a pass whenever studies are past
/// retention. Runs until `shutdown` turns true.
pub async fn run(
    deleter: Arc<Deleter>,
    locator: Arc<Locator>,
    policy: RetentionPolicy,
    schedule: RetentionSchedule,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(window = ?schedule.window, retention_years = policy.retention_years, "retention worker ready");
    loop {
        if in_window(schedule.window, minute_now()) {
            match has_work(&locator, &policy).await {
                Err(e) => warn!(error = %e, "retention: cannot list expired studies"),
                // Only passes that find work are recorded.
                Ok(false) => debug!(expired = 0, "retention poll"),
                Ok(true) => {
                    let run = JobRun::start(&locator, JobKind::Retention, Trigger::Server).await;
                    let keep_going =
                        || !*shutdown.borrow() && in_window(schedule.window, minute_now());
                    let result = pass(&deleter, &locator, &policy, false, keep_going).await;
                    if let Ok(p) = &result {
                        info!(
                            deleted = p.deleted,
                            failed = p.failed,
                            instances = p.instances,
                            bytes = p.bytes,
                            "retention pass done"
                        );
                    }
                    run.finish(&locator, &result).await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.poll) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(date: &str, modalities: &[&str]) -> StudyAge {
        StudyAge {
            study_instance_uid: format!("1.2.{date}.{}", modalities.join("")),
            patient_id: "P".into(),
            study_date: date.into(),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            newest_received_ms: None,
        }
    }

    #[test]
    fn a_study_expires_after_the_longest_retention_of_its_modalities() {
        let policy = RetentionPolicy {
            retention_years: 5,
            by_modality: BTreeMap::from([("MG".into(), 10), ("XA".into(), 0)]),
            rejected_keep_days: 30,
        };
        // 2026-12-05.
        let now = 1_796_428_800_000;
        assert_eq!(day_of(now), "20261205");
        let uids = |ages| -> Vec<String> {
            expired(&policy, ages, now)
                .into_iter()
                .map(|e| e.date)
                .collect()
        };
        // CT: 5 years; the anniversary itself is still kept.
        assert_eq!(uids(vec![age("20211205", &["CT"])]), Vec::<String>::new());
        assert_eq!(uids(vec![age("20211204", &["CT"])]), vec!["20211204"]);
        // MG with CT: the longer, 10 years.
        assert!(uids(vec![age("20161206", &["CT", "MG"])]).is_empty());
        assert_eq!(uids(vec![age("20161204", &["MG"])]), vec!["20161204"]);
        // XA is kept forever, whatever else the study holds.
        assert!(uids(vec![age("19900101", &["CT", "XA"])]).is_empty());
        // A malformed date never expires; no date counts from the newest arrival.
        assert!(uids(vec![age("2016", &["CT"])]).is_empty());
        let mut undated = age("", &["CT"]);
        undated.newest_received_ms = Some(now - 6 * 366 * 86_400_000);
        assert_eq!(expired(&policy, vec![undated], now).len(), 1);
        // No retention: nothing expires.
        let forever = RetentionPolicy::default();
        assert!(expired(&forever, vec![age("19000101", &["CT"])], now).is_empty());
    }
}
