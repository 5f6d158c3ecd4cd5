//! The locator side of moving studies between tiers: which studies are due, their instances,
//! the journal of moves in progress, and switching every instance of a move in one
//! transaction.

use sqlx::Row;

use super::copies::{copy_row, Copy, COPY_COLUMNS, J2K_ROI, ORIGINAL};
use super::{stored_object, Locator, LocatorError};
use crate::model::levels::FrameLevels;
use crate::model::{StoredObject, Tier};

/// One instance of a study with where it is now.
#[derive(Debug, Clone)]
pub struct PlacedInstance {
    pub sop_instance_uid: String,
    pub object: StoredObject,
}

/// A move in progress, from the journal.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub study_instance_uid: String,
    pub container: String,
    pub committed: bool,
    pub old_locations: Vec<(Tier, String)>,
    /// Lease of the process that runs (or ran) the job; `None` for jobs journaled before
    /// leases existed.
    pub lease: Option<i64>,
}

/// What a committed job switched.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Instances now pointing at their new copy.
    pub switched: usize,
    /// The copies they left, to delete once nothing references them.
    pub old_locations: Vec<(Tier, String)>,
}

/// Point one instance at a new copy, if it still is where the move found it.
#[derive(Debug, Clone)]
pub struct Switch {
    pub sop_instance_uid: String,
    pub from_tier: Tier,
    pub from_location: String,
    pub to: StoredObject,
    /// Where the new copy's resolution levels end, when the converter encoded it; recorded
    /// for the new copy's bytes (`to.crc32c`). Other copies' levels stay, for their bytes.
    pub levels: Vec<FrameLevels>,
}

/// Studies due for archiving, one row each (`uid`, `newest`, `online_instances`,
/// `online_bytes`): at least one online instance, newest instance received before the cutoff
/// (the one bound parameter). The tiering worker, `tier run` and `strata schedule` all select
/// through this, so what `schedule` shows queued is what the next pass archives.
const DUE_STUDIES: &str = "SELECT st.study_instance_uid AS uid, MAX(i.received_at) AS newest, \
     SUM(CASE WHEN i.tier = 'online' THEN 1 ELSE 0 END) AS online_instances, \
     SUM(CASE WHEN i.tier = 'online' THEN i.byte_length ELSE 0 END) AS online_bytes \
     FROM studies st JOIN series se ON se.study_fk = st.id JOIN instances i ON i.series_fk = se.id \
     GROUP BY st.id \
     HAVING MAX(i.received_at) < $1 AND SUM(CASE WHEN i.tier = 'online' THEN 1 ELSE 0 END) > 0";

/// What the next tiering pass would archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DueTotals {
    pub studies: u64,
    /// Online instances of those studies.
    pub instances: u64,
    /// Bytes of those online instances.
    pub bytes: u64,
}

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Journal(e)
}

impl Locator {
    /// Studies with at least one online instance whose newest instance arrived before
    /// `cutoff_ms` (Unix milliseconds), oldest first.
    pub async fn studies_due(&self, cutoff_ms: i64) -> Result<Vec<String>, LocatorError> {
        // Only constants are spliced in; values are bound.
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT uid FROM ({DUE_STUDIES}) AS due ORDER BY newest"
        )))
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(err)
    }

    /// How many studies [`Locator::studies_due`] would list for `cutoff_ms`, and the bytes
    /// of their online instances (what the next tiering pass moves off the online tier).
    pub async fn due_totals(&self, cutoff_ms: i64) -> Result<DueTotals, LocatorError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS studies, \
               CAST(COALESCE(SUM(online_instances), 0) AS BIGINT) AS instances, \
               CAST(COALESCE(SUM(online_bytes), 0) AS BIGINT) AS bytes FROM ({DUE_STUDIES}) AS due"
        )))
        .bind(cutoff_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok(DueTotals {
            studies: row.get::<i64, _>("studies") as u64,
            instances: row.get::<i64, _>("instances") as u64,
            bytes: row.get::<i64, _>("bytes") as u64,
        })
    }

    /// Every instance of a study, in series and instance order.
    pub async fn study_instances(
        &self,
        study_instance_uid: &str,
    ) -> Result<Vec<PlacedInstance>, LocatorError> {
        let rows = sqlx::query(
            "SELECT i.sop_instance_uid, i.tier, i.location, i.byte_offset, i.byte_length, \
               i.crc32c, i.transfer_syntax_uid \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk WHERE st.study_instance_uid = $1 \
             ORDER BY se.series_number, se.id, i.instance_number, i.id",
        )
        .bind(study_instance_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|row| {
                Ok(PlacedInstance {
                    sop_instance_uid: row.get("sop_instance_uid"),
                    object: stored_object(row).map_err(err)?,
                })
            })
            .collect()
    }

    /// Journals a move about to write `container` (archive) or the online copies in
    /// `creating` (restore, repair): what recovery deletes if the move never commits. The
    /// journal entry is also the study's claim: `None` when another process (of any node)
    /// whose lease holds is moving the same study, so each study is moved by one process at
    /// a time.
    pub async fn begin_job(
        &self,
        kind: &str,
        study_instance_uid: &str,
        container: &str,
        creating: &[(Tier, String)],
    ) -> Result<Option<i64>, LocatorError> {
        let creating: Vec<(&str, &str)> = creating
            .iter()
            .map(|(t, l)| (t.as_str(), l.as_str()))
            .collect();
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        // Two nodes claiming the same study queue here (SQLite: the write transaction).
        self.lock_key(&mut tx, &format!("move {study_instance_uid}"))
            .await
            .map_err(err)?;
        // Only the dialect's lease condition is spliced in; values are bound.
        let id = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO archive_jobs (kind, study_instance_uid, container, state, \
               old_locations, started_at, lease) \
             SELECT $1, $2, $3, 'writing', $4, $5, $6 WHERE NOT EXISTS \
               (SELECT 1 FROM archive_jobs j WHERE j.study_instance_uid = $2 \
                AND j.lease <> $6 AND {}) \
             RETURNING id",
            self.lease_holds_sql("j.lease")
        )))
        .bind(kind)
        .bind(study_instance_uid)
        .bind(container)
        .bind(serde_json::to_string(&creating).expect("strings serialize"))
        .bind(super::now_millis())
        .bind(self.lease())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(id)
    }

    /// In one transaction: switches every instance that is still where the move found it,
    /// and marks the job committed with the copies to delete. Only while this process's lease
    /// holds and the job is still its own: otherwise another process may have undone it
    /// (deleting the container), and nothing is switched ([`LocatorError::LeaseLost`]).
    pub async fn commit_job(
        &self,
        job: i64,
        switches: &[Switch],
    ) -> Result<Committed, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        // The job's row stays locked until commit, so no recovery can take it in between.
        if !self.job_is_own(&mut tx, job).await.map_err(err)? {
            return Err(LocatorError::LeaseLost(self.lease()));
        }
        let mut old = Vec::new();
        let mut switched = 0;
        for s in switches {
            let done = sqlx::query(
                "UPDATE instances SET tier = $1, location = $2, byte_offset = $3, byte_length = $4, \
                   crc32c = $5, transfer_syntax_uid = $6 \
                 WHERE sop_instance_uid = $7 AND tier = $8 AND location = $9",
            )
            .bind(s.to.tier.as_str())
            .bind(&s.to.location)
            .bind(s.to.offset as i64)
            .bind(s.to.length as i64)
            .bind(s.to.crc32c as i64)
            .bind(&s.to.transfer_syntax_uid)
            .bind(&s.sop_instance_uid)
            .bind(s.from_tier.as_str())
            .bind(&s.from_location)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            if done == 1 {
                switched += 1;
                if !s.levels.is_empty() {
                    record_levels(&mut tx, &s.sop_instance_uid, s.to.crc32c, &s.levels)
                        .await
                        .map_err(err)?;
                }
                let entry = (s.from_tier.as_str(), s.from_location.as_str());
                if !old.contains(&entry) {
                    old.push(entry);
                }
            }
        }
        if switched > 0 {
            // A newly archived study enters the backup queue in the same transaction, so no
            // crash can archive it without queueing it.
            // Only the dialect's spelling of "the larger" is spliced in; values are bound.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO backup_queue (study_instance_uid, enqueued_at, reason) \
                 SELECT study_instance_uid, $1, 'archived' FROM archive_jobs \
                 WHERE id = $2 AND kind = 'archive' \
                 ON CONFLICT (study_instance_uid) DO UPDATE SET enqueued_at = {}",
                self.dialect
                    .greatest("excluded.enqueued_at", "backup_queue.enqueued_at + 1")
            )))
            .bind(super::now_millis())
            .bind(job)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        mark_committed(&mut tx, job, &old).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(Committed {
            switched,
            old_locations: old
                .into_iter()
                .filter_map(|(t, l)| Tier::parse(t).map(|t| (t, l.to_string())))
                .collect(),
        })
    }

    /// Moves not yet finished, oldest first.
    pub async fn pending_jobs(&self) -> Result<Vec<Job>, LocatorError> {
        let rows = sqlx::query(
            "SELECT id, kind, study_instance_uid, container, state, old_locations, lease \
             FROM archive_jobs ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|row| {
                let old: Vec<(String, String)> =
                    serde_json::from_str(row.get::<&str, _>("old_locations")).unwrap_or_default();
                Ok(Job {
                    id: row.get("id"),
                    kind: row.get("kind"),
                    study_instance_uid: row.get("study_instance_uid"),
                    container: row.get("container"),
                    committed: row.get::<&str, _>("state") == "committed",
                    old_locations: old
                        .into_iter()
                        .filter_map(|(t, l)| Tier::parse(&t).map(|t| (t, l)))
                        .collect(),
                    lease: row.get("lease"),
                })
            })
            .collect()
    }

    /// Removes a finished job from the journal.
    pub async fn finish_job(&self, job: i64) -> Result<(), LocatorError> {
        sqlx::query("DELETE FROM archive_jobs WHERE id = $1")
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Which of `locations` on `tier` some instance still points at (one query for many).
    pub async fn locations_in_use(
        &self,
        tier: Tier,
        locations: &[String],
    ) -> Result<std::collections::HashSet<String>, LocatorError> {
        let list = serde_json::to_string(locations).expect("a list of strings");
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT location FROM instances WHERE tier = $1 AND location IN {}",
            self.dialect.json_strings("$2")
        )))
        .bind(tier.as_str())
        .bind(list)
        .fetch_all(&self.pool)
        .await
        .map(|found| found.into_iter().collect())
        .map_err(err)
    }

    /// Whether any instance points at `location` on `tier`.
    pub async fn location_in_use(&self, tier: Tier, location: &str) -> Result<bool, LocatorError> {
        sqlx::query_scalar::<_, i64>(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM instances WHERE location = $1 AND tier = $2) \
             THEN 1 ELSE 0 END",
        )
        .bind(location)
        .bind(tier.as_str())
        .fetch_one(&self.pool)
        .await
        .map(|n| n == 1)
        .map_err(err)
    }
}

/// Marks journal entry `job` committed, with the copies (tier, location) to delete once
/// nothing references them; inside the caller's transaction.
pub(super) async fn mark_committed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job: i64,
    old_locations: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE archive_jobs SET state = 'committed', old_locations = $1 WHERE id = $2")
        .bind(serde_json::to_string(old_locations).expect("strings serialize"))
        .bind(job)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records where the resolution levels of an instance's bytes with CRC-32C `crc32c` end (its
/// primary's, or a near-line copy's), and forgets those of bytes that are neither its
/// primary nor one of its copies any more; inside the caller's transaction, after the
/// primary or copies were recorded.
pub(super) async fn record_levels(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sop_instance_uid: &str,
    crc32c: u32,
    levels: &[FrameLevels],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO resolution_levels (sop_instance_uid, crc32c, frames) VALUES ($1, $2, $3) \
         ON CONFLICT (sop_instance_uid, crc32c) DO UPDATE SET frames = excluded.frames",
    )
    .bind(sop_instance_uid)
    .bind(i64::from(crc32c))
    .bind(serde_json::to_string(levels).expect("numbers serialize"))
    .execute(&mut **tx)
    .await?;
    forget_stale_levels(tx, sop_instance_uid).await
}

/// Forgets the resolution levels of an instance's bytes that are neither its primary nor
/// one of its copies (any more); inside the caller's transaction.
pub(super) async fn forget_stale_levels(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sop_instance_uid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM resolution_levels WHERE sop_instance_uid = $1 \
         AND crc32c NOT IN (SELECT crc32c FROM instances WHERE sop_instance_uid = $1) \
         AND crc32c NOT IN (SELECT crc32c FROM copies WHERE sop_instance_uid = $1)",
    )
    .bind(sop_instance_uid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parse_levels(sop_instance_uid: &str, json: &str) -> Option<Vec<FrameLevels>> {
    match serde_json::from_str(json) {
        Ok(levels) => Some(levels),
        Err(e) => {
            tracing::warn!(sop_instance_uid, error = %e, "unreadable resolution levels; read whole");
            None
        }
    }
}

impl Locator {
    /// Where the resolution levels of an instance's frames end in its bytes with CRC-32C
    /// `crc32c` (its current copy's); empty when none were recorded for those bytes, which
    /// are then read whole.
    pub async fn resolution_levels(
        &self,
        sop_instance_uid: &str,
        crc32c: u32,
    ) -> Result<Vec<FrameLevels>, LocatorError> {
        let frames: Option<String> = sqlx::query_scalar(
            "SELECT frames FROM resolution_levels WHERE sop_instance_uid = $1 AND crc32c = $2",
        )
        .bind(sop_instance_uid)
        .bind(i64::from(crc32c))
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        Ok(frames
            .and_then(|json| parse_levels(sop_instance_uid, &json))
            .unwrap_or_default())
    }

    /// When the primary with CRC-32C `source_crc32c` is known lost (queued for repair) and
    /// no lossless copy of it is left, the near-line `j2k-roi` copy made from it whose
    /// resolution levels are recorded, with those levels: what a reduced view of the
    /// instance can read instead of decoding that lossy copy whole. `None` otherwise.
    pub async fn lossy_copy_levels(
        &self,
        sop_instance_uid: &str,
        source_crc32c: u32,
    ) -> Result<Option<(Copy, Vec<FrameLevels>)>, LocatorError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, l.frames AS frames FROM copies c \
             JOIN resolution_levels l \
               ON l.sop_instance_uid = c.sop_instance_uid AND l.crc32c = c.crc32c \
             WHERE c.sop_instance_uid = $1 AND c.source_crc32c = $2 AND c.kind = 'nearline' \
               AND c.format = '{J2K_ROI}' AND c.bad_since IS NULL \
               AND EXISTS (SELECT 1 FROM repairs WHERE sop_instance_uid = $1) \
               AND NOT EXISTS (SELECT 1 FROM copies o WHERE o.sop_instance_uid = $1 \
                 AND o.source_crc32c = $2 AND o.format = '{ORIGINAL}' AND o.bad_since IS NULL) \
             LIMIT 1",
            COPY_COLUMNS
                .split(", ")
                .map(|c| format!("c.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(sop_instance_uid)
        .bind(i64::from(source_crc32c))
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let copy = copy_row(&row).map_err(err)?;
        let frames: String = row.try_get("frames").map_err(err)?;
        Ok(parse_levels(sop_instance_uid, &frames).map(|levels| (copy, levels)))
    }
}
