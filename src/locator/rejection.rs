//! The locator side of IOCM rejection notes (issue #18): hiding the instances a note names,
//! in one transaction (out of the index as a delete takes them, into `rejected_instances`
//! with where their bytes still are), and later handing the due ones to a delete's journal
//! entry, whose end removes the bytes.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::lifecycle::{doomed, Doomed, Removed, DOOMED_COLUMNS};
use super::{copies, now_millis, Dialect, Locator, LocatorError, NewInstance};
use crate::model::rejection::RejectionNote;
use crate::model::Tier;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Lifecycle(e)
}

/// What applying a rejection note hid.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hidden {
    pub instances: u64,
    pub bytes: u64,
    /// The studies they belonged to.
    pub studies: Vec<String>,
    /// Instances the note names that are not stored (or not in the study and series it
    /// says): nothing to hide.
    pub not_found: u64,
}

/// A study's rejected instances waiting for their bytes to be deleted.
#[derive(Debug, Clone, Serialize)]
pub struct PendingRejection {
    pub study_instance_uid: String,
    pub instances: u64,
    pub bytes: u64,
    /// When the oldest of them was rejected (Unix ms).
    pub first_rejected_ms: i64,
}

impl Locator {
    /// Applies a rejection note received from `who` at `address`: in one transaction, the
    /// stored instances it names leave the index (C-FIND, QIDO-RS, C-MOVE/C-GET and WADO-RS
    /// no longer see them), each recorded as deleted and in `rejected_instances` with its
    /// primary copy and near-line containers, and audited as `rejected`. Their bytes stay
    /// until [`Locator::take_due_rejections`]. Applying the same note again hides nothing.
    pub async fn reject(
        &self,
        note: &RejectionNote,
        who: &str,
        address: &str,
    ) -> Result<Hidden, LocatorError> {
        let named: HashMap<&str, (&str, &str)> = note
            .references
            .iter()
            .map(|r| {
                let place = (
                    r.study_instance_uid.as_str(),
                    r.series_instance_uid.as_str(),
                );
                (r.sop_instance_uid.as_str(), place)
            })
            .collect();
        let list =
            serde_json::to_string(&named.keys().collect::<Vec<_>>()).expect("strings serialize");
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        // Only the dialect's fragments are spliced in; the UIDs are bound.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOOMED_COLUMNS} FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk WHERE i.sop_instance_uid IN {}{}",
            self.dialect.json_strings("$1"),
            self.dialect.for_update()
        )))
        .bind(&list)
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        let mut hidden_rows: Vec<Doomed> = Vec::new();
        for row in &rows {
            let d = doomed(row).map_err(err)?;
            let place = (
                d.study_instance_uid.as_str(),
                d.series_instance_uid.as_str(),
            );
            if named.get(d.sop_instance_uid.as_str()) == Some(&place) {
                hidden_rows.push(d);
            }
        }
        let mut hidden = Hidden {
            not_found: (named.len() - hidden_rows.len()) as u64,
            ..Hidden::default()
        };
        if hidden_rows.is_empty() {
            tx.commit().await.map_err(err)?;
            return Ok(hidden);
        }
        let detail = format!(
            "{} ({}), rejection note {}",
            note.code.meaning(),
            note.code.code(),
            note.sop_instance_uid
        );
        let (removed, copies) = self
            .take_out(&mut tx, &hidden_rows, "rejected", (who, address), &detail)
            .await
            .map_err(err)?;
        let now = now_millis();
        for d in &hidden_rows {
            let nearline: Vec<&str> = copies
                .iter()
                .filter(|(uid, kind, _)| uid == &d.sop_instance_uid && kind == "nearline")
                .map(|(_, _, location)| location.as_str())
                .collect();
            sqlx::query(
                "INSERT INTO rejected_instances (sop_instance_uid, study_instance_uid, \
                   series_instance_uid, rejected_at, code, note_uid, tier, location, \
                   byte_length, nearline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (sop_instance_uid) DO UPDATE SET \
                   study_instance_uid = excluded.study_instance_uid, \
                   series_instance_uid = excluded.series_instance_uid, \
                   rejected_at = excluded.rejected_at, code = excluded.code, \
                   note_uid = excluded.note_uid, tier = excluded.tier, \
                   location = excluded.location, byte_length = excluded.byte_length, \
                   nearline = excluded.nearline",
            )
            .bind(&d.sop_instance_uid)
            .bind(&d.study_instance_uid)
            .bind(&d.series_instance_uid)
            .bind(now)
            .bind(note.code.code())
            .bind(&note.sop_instance_uid)
            .bind(d.tier.as_str())
            .bind(&d.location)
            .bind(d.length as i64)
            .bind(serde_json::to_string(&nearline).expect("strings serialize"))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            if !hidden.studies.contains(&d.study_instance_uid) {
                hidden.studies.push(d.study_instance_uid.clone());
            }
        }
        for study in &hidden.studies {
            // A study with nothing left leaves the backup queue too.
            sqlx::query(
                "DELETE FROM backup_queue WHERE study_instance_uid = $1 \
                 AND NOT EXISTS (SELECT 1 FROM studies WHERE study_instance_uid = $1)",
            )
            .bind(study)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        hidden.instances = removed.instances;
        hidden.bytes = removed.bytes;
        Ok(hidden)
    }

    /// Studies with instances rejected at or before `cutoff_ms`, oldest rejection first.
    pub async fn rejections(&self, cutoff_ms: i64) -> Result<Vec<PendingRejection>, LocatorError> {
        let rows = sqlx::query(
            "SELECT study_instance_uid, COUNT(*) AS instances, \
               CAST(SUM(byte_length) AS BIGINT) AS bytes, MIN(rejected_at) AS first_rejected \
             FROM rejected_instances WHERE rejected_at <= $1 \
             GROUP BY study_instance_uid ORDER BY MIN(rejected_at), study_instance_uid",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(PendingRejection {
                    study_instance_uid: r.try_get("study_instance_uid")?,
                    instances: r.try_get::<i64, _>("instances")? as u64,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    first_rejected_ms: r.try_get("first_rejected")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(err)
    }

    /// In one transaction, while `job` (a `delete` journal entry claiming `study`) is this
    /// process's and its lease holds: takes the study's instances rejected at or before
    /// `cutoff_ms` out of `rejected_instances`, audits their deletion by `actor`, queues
    /// what is left of the study for a new near-line copy when an old one held them, and
    /// marks the job committed with their primary copies (deleted by the job's end unless
    /// an instance stored again since points at one).
    pub async fn take_due_rejections(
        &self,
        job: i64,
        study: &str,
        cutoff_ms: i64,
        actor: &str,
    ) -> Result<Removed, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        if !self.job_is_own(&mut tx, job).await.map_err(err)? {
            return Err(LocatorError::LeaseLost(self.lease()));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT sop_instance_uid, tier, location, byte_length, nearline \
             FROM rejected_instances WHERE study_instance_uid = $1 AND rejected_at <= $2{}",
            self.dialect.for_update()
        )))
        .bind(study)
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        let mut removed = Removed::default();
        let now = now_millis();
        for row in &rows {
            let uid: String = row.try_get("sop_instance_uid").map_err(err)?;
            let tier: String = row.try_get("tier").map_err(err)?;
            let location: String = row.try_get("location").map_err(err)?;
            let nearline: String = row.try_get("nearline").map_err(err)?;
            removed.instances += 1;
            removed.bytes += row.try_get::<i64, _>("byte_length").map_err(err)? as u64;
            if let Some(tier) = Tier::parse(&tier) {
                if !removed.primaries.contains(&(tier, location.clone())) {
                    removed.primaries.push((tier, location));
                }
            }
            for container in serde_json::from_str::<Vec<String>>(&nearline).unwrap_or_default() {
                if !removed.nearline.contains(&container) {
                    removed.nearline.push(container);
                }
            }
            super::insert_audit(
                &mut tx,
                now,
                "deleted",
                (actor, ""),
                Some(&uid),
                "rejected instance kept its [lifecycle] rejected_keep_days",
            )
            .await
            .map_err(err)?;
        }
        if rows.is_empty() {
            tx.commit().await.map_err(err)?;
            return Ok(removed);
        }
        removed.study_gone = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM studies WHERE study_instance_uid = $1",
        )
        .bind(study)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?
            == 0;
        if !removed.study_gone && !removed.nearline.is_empty() {
            copies::enqueue_in(&mut tx, self.dialect, study, "rejected")
                .await
                .map_err(err)?;
        }
        sqlx::query(
            "DELETE FROM rejected_instances WHERE study_instance_uid = $1 AND rejected_at <= $2",
        )
        .bind(study)
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        removed.commit(tx, job).await.map_err(err)?;
        Ok(removed)
    }
}

/// Whether the instance `$1` was rejected (a row, or none).
pub(super) const IS_REJECTED: &str =
    "SELECT 1 AS rejected FROM rejected_instances WHERE sop_instance_uid = $1";

/// Which instances of `batch` were rejected (and not yet purged): one query per group
/// commit, inside its transaction.
pub(super) async fn rejected_among(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    batch: &[NewInstance<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    let uids: Vec<&str> = batch
        .iter()
        .map(|n| n.attributes.instance.sop_instance_uid.as_str())
        .collect();
    let list = serde_json::to_string(&uids).expect("strings serialize");
    // Only the dialect's list is spliced in; the UIDs are bound.
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
        "SELECT sop_instance_uid FROM rejected_instances WHERE sop_instance_uid IN {}",
        dialect.json_strings("$1")
    )))
    .bind(list)
    .fetch_all(&mut **tx)
    .await
    .map(|found| found.into_iter().collect())
}
