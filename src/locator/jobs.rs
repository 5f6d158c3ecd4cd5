//! The locator side of job history and counters: one `job_runs` row per run of a long job
//! (CLI or server worker), and named counters every process adds to (read fallbacks).
//! Judging whether a running row's process is still alive is the caller's business
//! (`crate::jobs`); this module only stores and reads.

use sqlx::Row;

use super::{Locator, LocatorError};

/// The counter of reads served from a backup copy because the primary was missing or
/// damaged (every process, since the locator was created).
pub const READ_FALLBACKS: &str = "read_fallbacks";

/// Rows kept per job; older ones are pruned when a run starts, so the table stays bounded.
const RUNS_KEPT_PER_JOB: i64 = 200;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Jobs(e)
}

/// One stored run, as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRunRow {
    pub id: i64,
    pub job: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds; `None` while running or when interrupted.
    pub finished_at: Option<i64>,
    /// `running`, `ok`, `failed` or `interrupted`.
    pub outcome: String,
    /// The job's JSON summary, once finished.
    pub summary: Option<String>,
    pub pid: u32,
    /// `cli` or `server`.
    pub trigger: String,
}

const COLUMNS: &str = "id, job, started_at, finished_at, outcome, summary, pid, \"trigger\"";

fn row_of(row: &sqlx::sqlite::SqliteRow) -> JobRunRow {
    JobRunRow {
        id: row.get(0),
        job: row.get(1),
        started_at: row.get(2),
        finished_at: row.get(3),
        outcome: row.get(4),
        summary: row.get(5),
        pid: row.get::<i64, _>(6) as u32,
        trigger: row.get(7),
    }
}

impl Locator {
    /// Records that `job` started now in process `pid`; returns the run's id. Prunes the
    /// job's oldest rows beyond the kept number.
    pub async fn start_run(
        &self,
        job: &str,
        trigger: &str,
        pid: u32,
        started_at: i64,
    ) -> Result<i64, LocatorError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await.map_err(err)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO job_runs (job, started_at, outcome, pid, \"trigger\") \
             VALUES (?, ?, 'running', ?, ?) RETURNING id",
        )
        .bind(job)
        .bind(started_at)
        .bind(i64::from(pid))
        .bind(trigger)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(
            "DELETE FROM job_runs WHERE job = ? AND id NOT IN \
             (SELECT id FROM job_runs WHERE job = ? ORDER BY id DESC LIMIT ?)",
        )
        .bind(job)
        .bind(job)
        .bind(RUNS_KEPT_PER_JOB)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(id)
    }

    /// Records how run `id` ended (`ok` or `failed`) with its JSON summary.
    pub async fn finish_run(
        &self,
        id: i64,
        finished_at: i64,
        outcome: &str,
        summary: &str,
    ) -> Result<(), LocatorError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query("UPDATE job_runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?")
            .bind(finished_at)
            .bind(outcome)
            .bind(summary)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Runs still marked `running` (some may belong to processes that died).
    pub async fn runs_in_progress(&self) -> Result<Vec<JobRunRow>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM job_runs WHERE outcome = 'running' ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Marks a running row whose process is gone as `interrupted` (`finished_at` stays NULL:
    /// nobody saw it end).
    pub async fn settle_interrupted_run(&self, id: i64) -> Result<(), LocatorError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE job_runs SET outcome = 'interrupted' WHERE id = ? AND outcome = 'running'",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// The most recently started run of every job that has run at all, by job name.
    pub async fn last_runs(&self) -> Result<Vec<JobRunRow>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM job_runs r \
             WHERE r.id = (SELECT MAX(l.id) FROM job_runs l WHERE l.job = r.job) ORDER BY job"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Adds `by` to counter `name` (created at 0 when missing); returns the new value.
    pub async fn add_to_counter(&self, name: &str, by: u64) -> Result<u64, LocatorError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO counters (name, value) VALUES (?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value RETURNING value",
        )
        .bind(name)
        .bind(by as i64)
        .fetch_one(&self.pool)
        .await
        .map(|v| v as u64)
        .map_err(err)
    }

    /// The value of counter `name` (0 when it never counted).
    pub async fn counter(&self, name: &str) -> Result<u64, LocatorError> {
        sqlx::query_scalar::<_, i64>("SELECT value FROM counters WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(err)
    }
}
