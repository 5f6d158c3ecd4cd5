//! The locator side of backup and recovery: each instance's extra copies (near-line,
//! offline), the backup queue, and the queue of primaries to re-create.
//!
//! Invariant: a `copies` row exists only for bytes that are durable and verified; the backup
//! worker records a study's copies in one transaction after its container is published.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{now_millis, stored_object, Dialect, Locator, LocatorError};
use crate::model::levels::FrameLevels;
use crate::model::StoredObject;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Copies(e)
}

/// What kind of store an extra copy is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CopyKind {
    /// An S-DICOM container in the near-line folder.
    Nearline,
    /// A member of an offline volume file.
    Offline,
}

impl CopyKind {
    /// The locator's and JSON's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyKind::Nearline => "nearline",
            CopyKind::Offline => "offline",
        }
    }

    fn parse(s: &str) -> Result<CopyKind, sqlx::Error> {
        match s {
            "nearline" => Ok(CopyKind::Nearline),
            "offline" => Ok(CopyKind::Offline),
            other => Err(sqlx::Error::Decode(
                format!("unknown copy kind {other:?}").into(),
            )),
        }
    }
}

/// One extra copy of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sop_instance_uid: String,
    pub kind: CopyKind,
    /// Container name (near-line) or volume id (offline).
    pub location: String,
    /// Member name inside an offline volume; empty for near-line copies.
    pub member: String,
    pub offset: u64,
    pub length: u64,
    pub crc32c: u32,
    /// `original`: the Part-10 file byte for byte as stored; `j2k-roi`: JPEG 2000 with the
    /// region of interest lossless and the background lossy (marked lossy in the data set).
    pub format: String,
    /// CRC-32C of the primary this copy was made from (= `crc32c` for `original` copies).
    pub source_crc32c: u32,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A study waiting in the backup queue.
#[derive(Debug, Clone)]
pub struct QueuedStudy {
    pub study_instance_uid: String,
    pub enqueued_at: i64,
    pub reason: String,
    /// A container some process is (or was) writing for it.
    pub container: Option<String>,
    /// The lease of the process that claimed it.
    pub lease: Option<i64>,
}

/// One primary copy, for scrubbing.
#[derive(Debug, Clone)]
pub struct Primary {
    pub id: i64,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub object: StoredObject,
}

/// Lengths of the work queues, for `strata status` and `strata schedule`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueLengths {
    pub backup: u64,
    pub repairs: u64,
}

pub(super) fn copy_row(row: &AnyRow) -> Result<Copy, sqlx::Error> {
    Ok(Copy {
        sop_instance_uid: row.try_get("sop_instance_uid")?,
        kind: CopyKind::parse(row.try_get("kind")?)?,
        location: row.try_get("location")?,
        member: row.try_get("member")?,
        offset: row.try_get::<i64, _>("byte_offset")? as u64,
        length: row.try_get::<i64, _>("byte_length")? as u64,
        crc32c: row.try_get::<i64, _>("crc32c")? as u32,
        format: row.try_get("format")?,
        created_at: row.try_get("created_at")?,
        source_crc32c: row.try_get::<i64, _>("source_crc32c")? as u32,
    })
}

pub(super) const COPY_COLUMNS: &str =
    "sop_instance_uid, kind, location, member, byte_offset, byte_length, \
     crc32c, format, created_at, source_crc32c";

/// The format of copies that hold the instance's bytes unchanged.
pub const ORIGINAL: &str = "original";
/// The format of JPEG 2000 ROI copies (lossy background, marked lossy).
pub const J2K_ROI: &str = "j2k-roi";

impl Copy {
    /// Whether the copy holds the instance's bytes unchanged (and so can replace a lost
    /// primary bit for bit).
    pub fn is_original(&self) -> bool {
        self.format == ORIGINAL
    }
}

/// Queues a study (`$1`) at `$2` for `$3`, or moves its place in the queue on.
pub(super) fn enqueue_sql(dialect: Dialect) -> String {
    // Only the dialect's spelling of "the larger" is spliced in; values are bound.
    format!(
        "INSERT INTO backup_queue (study_instance_uid, enqueued_at, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (study_instance_uid) DO UPDATE SET enqueued_at = {}",
        dialect.greatest("excluded.enqueued_at", "backup_queue.enqueued_at + 1")
    )
}

/// Adds a study to the backup queue, or moves its mark forward: `enqueued_at` strictly grows
/// with every enqueue (even if the clock steps back or two land in one millisecond), so a
/// backup that read the mark before listing the study's instances dequeues it only if
/// nothing was added since (see [`Locator::backup_mark`]). Runs inside the caller's
/// transaction.
pub(super) async fn enqueue_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    study_instance_uid: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(enqueue_sql(dialect)))
        .bind(study_instance_uid)
        .bind(now_millis())
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records copy `c`, inside the caller's transaction, unless
/// its source is no longer the instance's current bytes (the instance was overwritten
/// meanwhile) or the same place is already recorded. Returns whether it was recorded.
pub(super) async fn insert_copy(conn: &mut AnyConnection, c: &Copy) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO copies (sop_instance_uid, kind, location, member, \
           byte_offset, byte_length, crc32c, format, created_at, source_crc32c) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS \
           (SELECT 1 FROM instances WHERE sop_instance_uid = $11 AND crc32c = $12) \
         ON CONFLICT (sop_instance_uid, kind, location) DO NOTHING",
    )
    .bind(&c.sop_instance_uid)
    .bind(c.kind.as_str())
    .bind(&c.location)
    .bind(&c.member)
    .bind(c.offset as i64)
    .bind(c.length as i64)
    .bind(i64::from(c.crc32c))
    .bind(&c.format)
    .bind(c.created_at)
    .bind(i64::from(c.source_crc32c))
    .bind(&c.sop_instance_uid)
    .bind(i64::from(c.source_crc32c))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

impl Locator {
    /// Every extra copy of an instance: near-line first, then offline, newest first.
    pub async fn copies_of(&self, sop_instance_uid: &str) -> Result<Vec<Copy>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COPY_COLUMNS} FROM copies WHERE sop_instance_uid = $1 \
             ORDER BY kind = 'offline', created_at DESC, id DESC"
        )))
        .bind(sop_instance_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(|r| copy_row(r).map_err(err)).collect()
    }

    /// The offline copies of an instance's current bytes (`source_crc32c`, the primary's
    /// CRC-32C) not found damaged: the volumes worth importing to mend it.
    pub async fn usable_offline_copies(
        &self,
        sop_instance_uid: &str,
        source_crc32c: u32,
    ) -> Result<Vec<Copy>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COPY_COLUMNS} FROM copies WHERE sop_instance_uid = $1 AND kind = 'offline' \
             AND source_crc32c = $2 AND format = 'original' AND bad_since IS NULL \
             ORDER BY created_at DESC, id DESC"
        )))
        .bind(sop_instance_uid)
        .bind(i64::from(source_crc32c))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(|r| copy_row(r).map_err(err)).collect()
    }

    /// Up to `limit` copies with row id above `after`, in id order, with their ids (paging).
    pub async fn copies_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Copy)>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COPY_COLUMNS}, id FROM copies WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| Ok((r.get::<i64, _>("id"), copy_row(r).map_err(err)?)))
            .collect()
    }

    /// Up to `limit` primaries with instance row id above `after`, in id order (paging).
    pub async fn primaries_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Primary>, LocatorError> {
        let rows = sqlx::query(
            "SELECT i.id, i.sop_instance_uid, st.study_instance_uid, i.tier, i.location, \
               i.byte_offset, i.byte_length, i.crc32c, i.transfer_syntax_uid \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk WHERE i.id > $1 ORDER BY i.id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(Primary {
                    id: r.get("id"),
                    sop_instance_uid: r.get("sop_instance_uid"),
                    study_instance_uid: r.get("study_instance_uid"),
                    object: stored_object(r).map_err(err)?,
                })
            })
            .collect()
    }

    /// The study an instance belongs to.
    pub async fn study_of(&self, sop_instance_uid: &str) -> Result<Option<String>, LocatorError> {
        sqlx::query_scalar(
            "SELECT st.study_instance_uid FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk WHERE i.sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)
    }

    /// Queues a study for a near-line copy.
    pub async fn enqueue_backup(
        &self,
        study_instance_uid: &str,
        reason: &str,
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        let mut conn = self.pool.acquire().await.map_err(err)?;
        enqueue_in(&mut conn, self.dialect, study_instance_uid, reason)
            .await
            .map_err(err)
    }

    /// The backup queue, oldest first.
    pub async fn backup_queue(&self) -> Result<Vec<QueuedStudy>, LocatorError> {
        let rows = sqlx::query(
            "SELECT study_instance_uid, enqueued_at, reason, container, lease \
             FROM backup_queue ORDER BY enqueued_at, study_instance_uid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| QueuedStudy {
                study_instance_uid: r.get("study_instance_uid"),
                enqueued_at: r.get("enqueued_at"),
                reason: r.get("reason"),
                container: r.get("container"),
                lease: r.get("lease"),
            })
            .collect())
    }

    /// Claims a queued study for this process, journaling the container about to be written
    /// (recovery deletes it if no copy ever points at it). False if another process holds it
    /// or it left the queue.
    pub async fn claim_backup(
        &self,
        study_instance_uid: &str,
        container: &str,
    ) -> Result<bool, LocatorError> {
        let _guard = self.write_guard().await;
        let done = sqlx::query(
            "UPDATE backup_queue SET container = $1, lease = $2 \
             WHERE study_instance_uid = $3 AND container IS NULL",
        )
        .bind(container)
        .bind(self.lease())
        .bind(study_instance_uid)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the claim on a queued study for `container` (never recorded, or gone); a
    /// newer claim on the same study, for another container, is left alone.
    pub async fn release_backup(
        &self,
        study_instance_uid: &str,
        container: &str,
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "UPDATE backup_queue SET container = NULL, lease = NULL \
             WHERE study_instance_uid = $1 AND container = $2",
        )
        .bind(study_instance_uid)
        .bind(container)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// The study's backup queue mark (`None`: not queued). A backup reads it *before* listing
    /// the study's instances: an instance committed after this read moves the mark past it,
    /// and one committed before is in the listing, so dequeuing only at this mark never
    /// drops an instance the backup did not copy. (A time taken before listing would not do:
    /// a store's transaction sets its time before it commits.)
    pub async fn backup_mark(&self, study_instance_uid: &str) -> Result<Option<i64>, LocatorError> {
        sqlx::query_scalar("SELECT enqueued_at FROM backup_queue WHERE study_instance_uid = $1")
            .bind(study_instance_uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)
    }

    /// In one transaction: records `copies` (all in `container`, whose bytes are durable and
    /// verified; with the resolution levels of those encoded resolution first) in place of the instances' older near-line copies, and takes the study off
    /// the queue unless it was queued again after `mark` (from [`Locator::backup_mark`]; `None`
    /// keeps any queue entry). A copy whose source CRC no
    /// longer matches its instance (overwritten meanwhile) is not recorded. Returns the old near-line
    /// containers nothing points at any more, to delete.
    pub async fn record_nearline(
        &self,
        study_instance_uid: &str,
        container: &str,
        mark: Option<i64>,
        copies: &[(Copy, Vec<FrameLevels>)],
    ) -> Result<Vec<String>, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        // Only while the claim holds: another process's recovery that took this writer for
        // dead has released it and may have deleted the container.
        // The claim's row stays locked until commit, so no release slips in between; and only
        // while this process's lease holds.
        let claimed: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT study_instance_uid FROM backup_queue \
             WHERE study_instance_uid = $1 AND container = $2 AND lease = $3 AND {}{}",
            self.lease_holds_sql("$3"),
            self.dialect.for_update()
        )))
        .bind(study_instance_uid)
        .bind(container)
        .bind(self.lease())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        if claimed.is_none() {
            // Still our container, but no longer our live lease: say that rather than
            // "released", which is what a takeover leaves.
            let still_ours: Option<String> = sqlx::query_scalar(
                "SELECT study_instance_uid FROM backup_queue \
                 WHERE study_instance_uid = $1 AND container = $2",
            )
            .bind(study_instance_uid)
            .bind(container)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            return Err(match still_ours {
                Some(_) => LocatorError::LeaseLost(self.lease()),
                None => LocatorError::ClaimLost {
                    study_instance_uid: study_instance_uid.to_string(),
                    container: container.to_string(),
                },
            });
        }
        let mut old: Vec<String> = Vec::new();
        for (c, levels) in copies {
            let replaced: Vec<String> = sqlx::query_scalar(
                "DELETE FROM copies WHERE sop_instance_uid = $1 AND kind = 'nearline' \
                 AND EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = $2 AND crc32c = $3) \
                 RETURNING location",
            )
            .bind(&c.sop_instance_uid)
            .bind(&c.sop_instance_uid)
            .bind(i64::from(c.source_crc32c))
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            for l in replaced {
                if !old.contains(&l) && l != container {
                    old.push(l);
                }
            }
            let inserted = insert_copy(&mut tx, c).await.map_err(err)?;
            if inserted && !levels.is_empty() {
                super::archive::record_levels(&mut tx, &c.sop_instance_uid, c.crc32c, levels)
                    .await
                    .map_err(err)?;
            } else {
                // A replaced ROI copy's levels go with it.
                super::archive::forget_stale_levels(&mut tx, &c.sop_instance_uid)
                    .await
                    .map_err(err)?;
            }
        }
        sqlx::query("DELETE FROM backup_queue WHERE study_instance_uid = $1 AND enqueued_at <= $2")
            .bind(study_instance_uid)
            .bind(mark.unwrap_or(i64::MIN))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query(
            "UPDATE backup_queue SET container = NULL, lease = NULL \
             WHERE study_instance_uid = $1",
        )
        .bind(study_instance_uid)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let mut unused = Vec::new();
        for l in old {
            let used: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM copies WHERE location = $1 LIMIT 1")
                    .bind(&l)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err)?;
            if used.is_none() {
                unused.push(l);
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(unused)
    }

    /// Whether a near-line container is claimed by a backup (being written) or pointed at
    /// by a copy, read in one statement: a writer's commit records its copies and drops its
    /// claim together, so a published container is always one or the other until deleted.
    pub async fn nearline_container_in_use(&self, container: &str) -> Result<bool, LocatorError> {
        sqlx::query_scalar::<_, i64>(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM backup_queue WHERE container = $1) \
             OR EXISTS (SELECT 1 FROM copies WHERE location = $2 AND kind = 'nearline') \
             THEN 1 ELSE 0 END",
        )
        .bind(container)
        .bind(container)
        .fetch_one(&self.pool)
        .await
        .map(|n| n == 1)
        .map_err(err)
    }

    /// Notes whether a copy read back intact (`bad` false) or missing or damaged.
    pub async fn mark_copy(&self, copy: &Copy, bad: bool) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "UPDATE copies SET bad_since = CASE WHEN $1 THEN COALESCE(bad_since, $2) END \
             WHERE sop_instance_uid = $3 AND kind = $4 AND location = $5",
        )
        .bind(bad)
        .bind(now_millis())
        .bind(&copy.sop_instance_uid)
        .bind(copy.kind.as_str())
        .bind(&copy.location)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// Notes that an instance's primary copy is missing or damaged, for re-creation.
    pub async fn enqueue_repair(
        &self,
        sop_instance_uid: &str,
        reason: &str,
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO repairs (sop_instance_uid, detected_at, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (sop_instance_uid) DO NOTHING",
        )
        .bind(sop_instance_uid)
        .bind(now_millis())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// Instances whose primary waits for re-creation, oldest first.
    pub async fn pending_repairs(&self) -> Result<Vec<String>, LocatorError> {
        sqlx::query_scalar("SELECT sop_instance_uid FROM repairs ORDER BY detected_at")
            .fetch_all(&self.pool)
            .await
            .map_err(err)
    }

    /// Takes an instance off the repair queue.
    pub async fn finish_repair(&self, sop_instance_uid: &str) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query("DELETE FROM repairs WHERE sop_instance_uid = $1")
            .bind(sop_instance_uid)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// How many extra copies are recorded.
    pub async fn copy_count(&self) -> Result<u64, LocatorError> {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM copies")
            .fetch_one(&self.pool)
            .await
            .map(|n| n as u64)
            .map_err(err)
    }

    /// Instances with at least one copy, per kind.
    pub async fn copy_totals(&self) -> Result<Vec<(CopyKind, u64)>, LocatorError> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(DISTINCT sop_instance_uid) AS instances FROM copies GROUP BY kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    CopyKind::parse(r.get("kind")).map_err(err)?,
                    r.get::<i64, _>("instances") as u64,
                ))
            })
            .collect()
    }

    /// How long the work queues are.
    pub async fn queue_lengths(&self) -> Result<QueueLengths, LocatorError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM backup_queue) AS backup, \
               (SELECT COUNT(*) FROM repairs) AS repairs",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok(QueueLengths {
            backup: row.get::<i64, _>("backup") as u64,
            repairs: row.get::<i64, _>("repairs") as u64,
        })
    }
}
