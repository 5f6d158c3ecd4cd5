//! The locator side of deleting (issue #18): taking a study's, series' or instance's rows
//! out of the index in one transaction, with the journal entry that makes removing their
//! bytes resumable, and the record of what was deleted (`deleted_instances`), which keeps
//! offline copies (volumes cannot be rewritten) from coming back.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{copies, now_millis, Locator, LocatorError};
use crate::model::Tier;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Lifecycle(e)
}

/// The counter bumped whenever a transaction removes series rows: a process that cached a
/// series row's id empties its cache when the counter moved (ids may be reused).
pub(super) const HIERARCHY_COUNTER: &str = "hierarchy_deletions";

/// What to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteScope {
    Study(String),
    Series(String),
    Instance(String),
}

impl DeleteScope {
    /// The UID named.
    pub fn uid(&self) -> &str {
        match self {
            DeleteScope::Study(uid) | DeleteScope::Series(uid) | DeleteScope::Instance(uid) => uid,
        }
    }

    /// The query level's name (PS3.4 C.6): `STUDY`, `SERIES` or `IMAGE`.
    pub fn level(&self) -> &'static str {
        match self {
            DeleteScope::Study(_) => "STUDY",
            DeleteScope::Series(_) => "SERIES",
            DeleteScope::Instance(_) => "IMAGE",
        }
    }

    /// The condition on `st`/`se`/`i` (studies, series, instances) selecting the scope, its
    /// UID bound at `$1`.
    fn condition(&self) -> &'static str {
        match self {
            DeleteScope::Study(_) => "st.study_instance_uid = $1",
            DeleteScope::Series(_) => "se.series_instance_uid = $1",
            DeleteScope::Instance(_) => "i.sop_instance_uid = $1",
        }
    }
}

/// What one delete took out of the index: the copies whose bytes are to go.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub instances: u64,
    pub bytes: u64,
    /// No instance of the study is left.
    pub study_gone: bool,
    /// Each primary copy's place (online files, archive containers), once.
    pub primaries: Vec<(Tier, String)>,
    /// Near-line containers that held copies of them.
    pub nearline: Vec<String>,
    /// Offline volumes holding copies of them, now marked deleted.
    pub offline_volumes: Vec<String>,
}

impl Removed {
    /// Marks delete journal entry `job` committed with the primary copies (deleted by the
    /// job's end once nothing points at them) and commits `tx`, which took them out.
    pub(super) async fn commit(
        &self,
        mut tx: Transaction<'_, Any>,
        job: i64,
    ) -> Result<(), sqlx::Error> {
        let old: Vec<(&str, &str)> = self
            .primaries
            .iter()
            .map(|(t, l)| (t.as_str(), l.as_str()))
            .collect();
        super::archive::mark_committed(&mut tx, job, &old).await?;
        tx.commit().await
    }
}

/// What retention looks at for one study.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StudyAge {
    pub study_instance_uid: String,
    pub patient_id: String,
    /// `YYYYMMDD`; empty when the study has none.
    pub study_date: String,
    pub modalities: Vec<String>,
    /// When its newest instance arrived (Unix ms); only read for studies without a date.
    #[serde(skip)]
    pub newest_received_ms: Option<i64>,
}

/// One instance about to leave the index.
pub(super) struct Doomed {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    series_id: i64,
    study_id: i64,
    patient_id: i64,
    pub tier: Tier,
    pub location: String,
    pub length: u64,
}

/// The columns [`doomed`] reads, from `instances i`, `series se` and `studies st`.
pub(super) const DOOMED_COLUMNS: &str = "i.sop_instance_uid, i.tier, i.location, i.byte_length, \
    se.series_instance_uid, st.study_instance_uid, se.id AS series_id, st.id AS study_id, \
    st.patient_fk AS patient_id";

pub(super) fn doomed(row: &AnyRow) -> Result<Doomed, sqlx::Error> {
    let tier: String = row.try_get("tier")?;
    Ok(Doomed {
        sop_instance_uid: row.try_get("sop_instance_uid")?,
        study_instance_uid: row.try_get("study_instance_uid")?,
        series_instance_uid: row.try_get("series_instance_uid")?,
        series_id: row.try_get("series_id")?,
        study_id: row.try_get("study_id")?,
        patient_id: row.try_get("patient_id")?,
        tier: Tier::parse(&tier)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown tier {tier:?}").into()))?,
        location: row.try_get("location")?,
        length: row.try_get::<i64, _>("byte_length")? as u64,
    })
}

impl Locator {
    /// The Study Instance UID the scope belongs to, if it is stored.
    pub async fn study_of_scope(
        &self,
        scope: &DeleteScope,
    ) -> Result<Option<String>, LocatorError> {
        // Only the scope's fixed condition is spliced in; the UID is bound.
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT st.study_instance_uid FROM instances i \
             JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk \
             WHERE {} LIMIT 1",
            scope.condition()
        )))
        .bind(scope.uid())
        .fetch_optional(&self.pool)
        .await
        .map_err(err)
    }

    /// In one transaction, while `job` (a `delete` journal entry claiming the study) is this
    /// process's and its lease holds: removes every instance of `scope` in `study` from the
    /// index with its metadata, backup copies' rows and repairs; records each as deleted
    /// (with the offline volumes holding it) and audits it; removes series, study and
    /// patient rows left empty; queues what is left of the study for a new near-line copy
    /// when the old one held deleted instances; and marks the job committed with the primary
    /// copies to delete. Readers see the instances before or after, never half.
    pub async fn remove_instances(
        &self,
        job: i64,
        study: &str,
        scope: &DeleteScope,
        reason: &str,
        who: &str,
    ) -> Result<Removed, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        if !self.job_is_own(&mut tx, job).await.map_err(err)? {
            return Err(LocatorError::LeaseLost(self.lease()));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOOMED_COLUMNS} \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk \
             WHERE {} AND st.study_instance_uid = $2",
            scope.condition()
        )))
        .bind(scope.uid())
        .bind(study)
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        let doomed: Vec<Doomed> = rows
            .iter()
            .map(doomed)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if doomed.is_empty() {
            tx.commit().await.map_err(err)?;
            return Ok(Removed::default());
        }
        let (removed, _) = self
            .take_out(&mut tx, &doomed, "deleted", (who, ""), reason)
            .await
            .map_err(err)?;
        if removed.study_gone {
            sqlx::query("DELETE FROM backup_queue WHERE study_instance_uid = $1")
                .bind(study)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        } else if !removed.nearline.is_empty() {
            copies::enqueue_in(&mut tx, self.dialect, study, "deleted")
                .await
                .map_err(err)?;
        }
        removed.commit(tx, job).await.map_err(err)?;
        Ok(removed)
    }

    /// Takes `doomed` (not empty) out of the index inside `tx`: records each in
    /// `deleted_instances` (with the offline volumes holding it) and audits it as `event` by
    /// `actor` with `detail`; deletes its rows, its copies', metadata and repairs, and the
    /// series, study and patient rows left empty. Returns what went, and every copy row
    /// (SOP Instance UID, kind, location) the instances had.
    pub(super) async fn take_out(
        &self,
        tx: &mut Transaction<'_, Any>,
        doomed: &[Doomed],
        event: &str,
        actor: (&str, &str),
        detail: &str,
    ) -> Result<(Removed, Vec<(String, String, String)>), sqlx::Error> {
        let uids: Vec<&str> = doomed.iter().map(|d| d.sop_instance_uid.as_str()).collect();
        let list = serde_json::to_string(&uids).expect("strings serialize");
        let in_list = self.dialect.json_strings("$1");
        let copies: Vec<(String, String, String)> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT sop_instance_uid, kind, location FROM copies WHERE sop_instance_uid IN {in_list}"
        )))
        .bind(&list)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("sop_instance_uid")?,
                r.try_get("kind")?,
                r.try_get("location")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let mut removed = Removed::default();
        let now = now_millis();
        for d in doomed {
            let volumes: Vec<&str> = copies
                .iter()
                .filter(|(uid, kind, _)| uid == &d.sop_instance_uid && kind == "offline")
                .map(|(_, _, location)| location.as_str())
                .collect();
            record_deleted(tx, d, now, detail, &volumes).await?;
            super::insert_audit(tx, now, event, actor, Some(&d.sop_instance_uid), detail).await?;
            removed.bytes += d.length;
            let primary = (d.tier, d.location.clone());
            if !removed.primaries.contains(&primary) {
                removed.primaries.push(primary);
            }
        }
        removed.instances = doomed.len() as u64;
        for (_, kind, location) in &copies {
            let places = match kind.as_str() {
                "nearline" => &mut removed.nearline,
                _ => &mut removed.offline_volumes,
            };
            if !places.contains(location) {
                places.push(location.clone());
            }
        }
        for table in [
            "copies",
            "instance_metadata",
            "resolution_levels",
            "frame_offsets",
            "repairs",
            "instances",
        ] {
            // Only fixed table names and the dialect's list are spliced in.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE sop_instance_uid IN {in_list}"
            )))
            .bind(&list)
            .execute(&mut **tx)
            .await?;
        }
        removed.study_gone = self.remove_empty_rows(tx, doomed).await?;
        Ok((removed, copies))
    }

    /// Removes the series, study and patient rows `doomed` leaves without instances; bumps
    /// the hierarchy counter when series rows went. Returns whether the study row went.
    async fn remove_empty_rows(
        &self,
        tx: &mut Transaction<'_, Any>,
        doomed: &[Doomed],
    ) -> Result<bool, sqlx::Error> {
        let ids = |f: fn(&Doomed) -> i64| {
            let mut ids: Vec<i64> = doomed.iter().map(f).collect();
            ids.sort_unstable();
            ids.dedup();
            serde_json::to_string(&ids).expect("numbers serialize")
        };
        let in_list = self.dialect.json_ints("$1");
        let series = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM series WHERE id IN {in_list} \
             AND NOT EXISTS (SELECT 1 FROM instances WHERE series_fk = series.id)"
        )))
        .bind(ids(|d| d.series_id))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if series > 0 {
            sqlx::query(
                "INSERT INTO counters (name, value) VALUES ($1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
            )
            .bind(HIERARCHY_COUNTER)
            .execute(&mut **tx)
            .await?;
        }
        let studies = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM studies WHERE id IN {in_list} \
             AND NOT EXISTS (SELECT 1 FROM series WHERE study_fk = studies.id)"
        )))
        .bind(ids(|d| d.study_id))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM patients WHERE id IN {in_list} \
             AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_fk = patients.id)"
        )))
        .bind(ids(|d| d.patient_id))
        .execute(&mut **tx)
        .await?;
        Ok(studies > 0)
    }

    /// Every study with its Study Date and modalities (retention's input); the arrival of
    /// the newest instance only for studies without a date.
    pub async fn study_ages(&self) -> Result<Vec<StudyAge>, LocatorError> {
        let rows = sqlx::query(
            "SELECT st.study_instance_uid, st.study_date, st.modalities_in_study, p.patient_id, \
               CASE WHEN st.study_date = '' THEN \
                 (SELECT MAX(i.received_at) FROM series se JOIN instances i ON i.series_fk = se.id \
                  WHERE se.study_fk = st.id) END AS newest_received \
             FROM studies st JOIN patients p ON p.id = st.patient_fk ORDER BY st.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                let modalities: String = r.try_get("modalities_in_study")?;
                Ok(StudyAge {
                    study_instance_uid: r.try_get("study_instance_uid")?,
                    patient_id: r.try_get("patient_id")?,
                    study_date: r.try_get("study_date")?,
                    modalities: modalities
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                    newest_received_ms: r.try_get("newest_received")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(err)
    }

    /// Whether the journal entry `job` is this process's and its lease holds; its row stays
    /// locked (PostgreSQL) until the transaction ends, so no recovery takes it meanwhile.
    pub(super) async fn job_is_own(
        &self,
        tx: &mut Transaction<'_, Any>,
        job: i64,
    ) -> Result<bool, sqlx::Error> {
        let owned: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM archive_jobs WHERE id = $1 AND lease = $2 AND {}{}",
            self.lease_holds_sql("$2"),
            self.dialect.for_update()
        )))
        .bind(job)
        .bind(self.lease())
        .fetch_optional(&mut **tx)
        .await?;
        Ok(owned.is_some())
    }

    /// SOP Instance UIDs deleted while `volume` held a copy of them: left out when the
    /// volume is imported.
    pub async fn deleted_in_volume(&self, volume: &str) -> Result<HashSet<String>, LocatorError> {
        let rows = sqlx::query(
            "SELECT sop_instance_uid, offline_volumes FROM deleted_instances \
             WHERE offline_volumes LIKE $1",
        )
        .bind(format!("%\"{}\"%", volume.replace(['%', '_'], "")))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .iter()
            .filter(|r| {
                serde_json::from_str::<Vec<String>>(r.get("offline_volumes"))
                    .is_ok_and(|v| v.iter().any(|id| id == volume))
            })
            .map(|r| r.get("sop_instance_uid"))
            .collect())
    }
}

/// Records one deleted instance; the volumes of an earlier delete of the same UID (stored
/// again since) stay listed.
async fn record_deleted(
    tx: &mut Transaction<'_, Any>,
    d: &Doomed,
    at: i64,
    reason: &str,
    volumes: &[&str],
) -> Result<(), sqlx::Error> {
    let earlier: Option<String> = sqlx::query_scalar(
        "SELECT offline_volumes FROM deleted_instances WHERE sop_instance_uid = $1",
    )
    .bind(&d.sop_instance_uid)
    .fetch_optional(&mut **tx)
    .await?;
    let mut all: Vec<String> = earlier
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    for v in volumes {
        if !all.iter().any(|a| a == v) {
            all.push(v.to_string());
        }
    }
    sqlx::query(
        "INSERT INTO deleted_instances (sop_instance_uid, study_instance_uid, \
           series_instance_uid, deleted_at, reason, offline_volumes) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (sop_instance_uid) DO UPDATE SET study_instance_uid = excluded.study_instance_uid, \
           series_instance_uid = excluded.series_instance_uid, deleted_at = excluded.deleted_at, \
           reason = excluded.reason, offline_volumes = excluded.offline_volumes",
    )
    .bind(&d.sop_instance_uid)
    .bind(&d.study_instance_uid)
    .bind(&d.series_instance_uid)
    .bind(at)
    .bind(reason)
    .bind(serde_json::to_string(&all).expect("strings serialize"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
