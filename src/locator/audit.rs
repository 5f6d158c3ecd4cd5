//! The audit log (issue #18, item 6): appending entries that are not written with the rows
//! they are about (queries, retrieves, admin commands; stores and deletes are written in
//! their own transactions), and reading back who touched a study. The table is append-only
//! (a trigger refuses changes).

use sqlx::Row;

use super::{Locator, LocatorError};

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Audit(e)
}

/// One entry to append.
#[derive(Debug, Clone, Default)]
pub struct AuditRow<'a> {
    /// Unix ms.
    pub at: i64,
    /// `queried`, `retrieved`, `admin`, ...
    pub event: &'a str,
    /// The calling AE title, `user NAME`, `anonymous`, or who ran the command.
    pub who: &'a str,
    /// The caller's network address (`ip:port`), empty when there is none.
    pub address: &'a str,
    pub study_instance_uid: Option<&'a str>,
    pub sop_instance_uid: Option<&'a str>,
    pub detail: &'a str,
    /// `ok` or `failed`.
    pub outcome: &'a str,
}

/// Audit rows of one study, folded: one per event, actor, address and detail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditSummary {
    /// `stored`, `replaced`, `deleted`, `queried`, `retrieved`.
    pub event: String,
    /// The calling AE title, the web user, or who ran the command (`cli:USER@node`,
    /// `retention`).
    pub who: String,
    /// The caller's address, when the entry has one.
    pub address: String,
    /// Instances the rows name (0 for entries about the whole study).
    pub instances: u64,
    /// Rows folded into this one.
    pub entries: u64,
    /// Unix ms of the first and the last such row.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The reason, for a delete; what was asked, for a query or a retrieve.
    pub detail: String,
    /// `ok`, or `failed` when any folded row failed.
    pub outcome: String,
    /// The study or instance the row names (only in [`Locator::recent_audit`]'s rows).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
}

impl Locator {
    /// Appends one audit entry.
    pub async fn append_audit(&self, row: &AuditRow<'_>) -> Result<(), LocatorError> {
        sqlx::query(
            "INSERT INTO audit_log (at, event, ae, address, study_instance_uid, \
               sop_instance_uid, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.at)
        .bind(row.event)
        .bind(row.who)
        .bind(row.address)
        .bind(row.study_instance_uid)
        .bind(row.sop_instance_uid)
        .bind(row.detail)
        .bind(row.outcome)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(err)
    }

    /// Who did what to a study: the audit log's rows for its instances, stored now or
    /// deleted, and those naming the study itself (queries, retrieves), folded per event,
    /// actor, address and detail, oldest first.
    pub async fn study_audit(&self, study: &str) -> Result<Vec<AuditSummary>, LocatorError> {
        let rows = sqlx::query(
            "SELECT event, ae, address, detail, \
               COUNT(sop_instance_uid) AS instances, COUNT(*) AS entries, \
               MIN(at) AS first_ms, MAX(at) AS last_ms, MIN(outcome) AS outcome, '' AS object \
             FROM audit_log WHERE study_instance_uid = $1 OR sop_instance_uid IN \
               (SELECT i.sop_instance_uid FROM instances i JOIN series se ON se.id = i.series_fk \
                  JOIN studies st ON st.id = se.study_fk WHERE st.study_instance_uid = $1 \
                UNION SELECT sop_instance_uid FROM deleted_instances WHERE study_instance_uid = $1) \
             GROUP BY event, ae, address, detail ORDER BY MIN(id)",
        )
        .bind(study)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        summaries(&rows)
    }

    /// The newest `limit` audit entries, newest last, one per row.
    pub async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditSummary>, LocatorError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT id, event, ae, address, detail, \
               CASE WHEN sop_instance_uid IS NULL THEN 0 ELSE 1 END AS instances, \
               1 AS entries, at AS first_ms, at AS last_ms, outcome, \
               COALESCE(sop_instance_uid, study_instance_uid, '') AS object \
             FROM audit_log ORDER BY id DESC LIMIT $1) newest ORDER BY id",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        summaries(&rows)
    }
}

fn summaries(rows: &[sqlx::any::AnyRow]) -> Result<Vec<AuditSummary>, LocatorError> {
    rows.iter()
        .map(|r| {
            Ok(AuditSummary {
                event: r.try_get("event")?,
                who: r.try_get("ae")?,
                address: r.try_get("address")?,
                instances: r.try_get::<i64, _>("instances")? as u64,
                entries: r.try_get::<i64, _>("entries")? as u64,
                first_ms: r.try_get("first_ms")?,
                last_ms: r.try_get("last_ms")?,
                detail: r.try_get("detail")?,
                outcome: r.try_get("outcome")?,
                object: r.try_get("object")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(err)
}
