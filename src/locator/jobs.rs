//! The locator side of job history and counters: one `job_runs` row per run of a long job
//! (CLI or server worker), and named counters every process adds to (read fallbacks, bytes
//! read from each tier).
//! Judging whether a running row's process is still alive is the caller's business
//! (`crate::jobs`); this module only stores and reads.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Locator, LocatorError};

/// The counter of reads served from a backup copy because the primary was missing or
/// damaged (every process, since the locator was created).
pub const READ_FALLBACKS: &str = "read_fallbacks";

/// Where stored bytes are read from, each with a counter of the bytes every process read
/// there: the two tiers of primaries and the two kinds of backup copy.
pub const READ_FROM: [&str; 4] = ["online", "archive", "nearline", "offline"];

/// The counter of bytes read from `from` (one of [`READ_FROM`]).
pub fn bytes_read_counter(from: &str) -> String {
    format!("bytes_read_{from}")
}

/// Rendition cache counters, every server's sums: requests answered from the cache, requests
/// that were not, and CPU microseconds the hits saved.
pub const RENDITION_HITS: &str = "rendition_hits";
pub const RENDITION_MISSES: &str = "rendition_misses";
pub const RENDITION_CPU_SAVED_US: &str = "rendition_cpu_saved_us";
/// Followed by a node id: the bytes that node's rendition cache holds (set, not added).
pub const RENDITION_BYTES_OF: &str = "rendition_bytes@";

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
    /// The node that ran it.
    pub node: String,
    /// Whether the lease of the process running it still holds (a `running` row whose
    /// lease is gone was interrupted).
    pub lease_live: bool,
}

/// The columns [`row_of`] reads; `{holds}` is the condition that the run's lease holds.
const COLUMNS: &str = "id, job, started_at, finished_at, outcome, summary, pid, \"trigger\", \
     node, CASE WHEN {holds} THEN 1 ELSE 0 END AS lease_live";

fn row_of(row: &AnyRow) -> JobRunRow {
    JobRunRow {
        id: row.get("id"),
        job: row.get("job"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        outcome: row.get("outcome"),
        summary: row.get("summary"),
        pid: row.get::<i64, _>("pid") as u32,
        trigger: row.get("trigger"),
        node: row.get("node"),
        lease_live: row.get::<i64, _>("lease_live") == 1,
    }
}

impl Locator {
    /// Records that `job` started now in process `pid`, under this process's lease; returns
    /// the run's id. Prunes the job's oldest rows beyond the kept number.
    pub async fn start_run(
        &self,
        job: &str,
        trigger: &str,
        pid: u32,
        started_at: i64,
    ) -> Result<i64, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO job_runs (job, started_at, outcome, pid, \"trigger\", lease, node) \
             VALUES ($1, $2, 'running', $3, $4, $5, $6) RETURNING id",
        )
        .bind(job)
        .bind(started_at)
        .bind(i64::from(pid))
        .bind(trigger)
        .bind(self.lease())
        .bind(self.node())
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(
            "DELETE FROM job_runs WHERE job = $1 AND id NOT IN \
             (SELECT id FROM job_runs WHERE job = $2 ORDER BY id DESC LIMIT $3)",
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
        let _guard = self.write_guard().await;
        sqlx::query(
            "UPDATE job_runs SET finished_at = $1, outcome = $2, summary = $3 WHERE id = $4",
        )
        .bind(finished_at)
        .bind(outcome)
        .bind(summary)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// The columns of [`row_of`] for table alias-free `job_runs`.
    fn run_columns(&self) -> String {
        COLUMNS.replace("{holds}", &self.lease_holds_sql("job_runs.lease"))
    }

    /// Runs still marked `running` (some may belong to processes that died).
    pub async fn runs_in_progress(&self) -> Result<Vec<JobRunRow>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM job_runs WHERE outcome = 'running' ORDER BY id",
            self.run_columns()
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Marks a running row whose lease is gone as `interrupted` (`finished_at` stays NULL:
    /// nobody saw it end).
    pub async fn settle_interrupted_run(&self, id: i64) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "UPDATE job_runs SET outcome = 'interrupted' WHERE id = $1 AND outcome = 'running'",
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
            "SELECT {} FROM job_runs \
             WHERE job_runs.id = (SELECT MAX(l.id) FROM job_runs l WHERE l.job = job_runs.job) \
             ORDER BY job",
            self.run_columns()
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Adds `by` to counter `name` (created at 0 when missing); returns the new value.
    pub async fn add_to_counter(&self, name: &str, by: u64) -> Result<u64, LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value \
             RETURNING value",
        )
        .bind(name)
        .bind(by as i64)
        .fetch_one(&self.pool)
        .await
        .map(|v| v as u64)
        .map_err(err)
    }

    /// Sets counter `name` to `value` (a gauge one process owns).
    pub async fn set_counter(&self, name: &str, value: u64) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value as i64)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(err)
    }

    /// The sum of the counters whose names begin with `prefix`.
    pub async fn counter_sum(&self, prefix: &str) -> Result<u64, LocatorError> {
        let rows = sqlx::query("SELECT name, value FROM counters WHERE name >= $1")
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let mut sum = 0u64;
        for row in rows {
            let name: String = row.try_get("name").map_err(err)?;
            if name.starts_with(prefix) {
                sum += row.try_get::<i64, _>("value").map_err(err)?.max(0) as u64;
            }
        }
        Ok(sum)
    }

    /// The value of counter `name` (0 when it never counted).
    pub async fn counter(&self, name: &str) -> Result<u64, LocatorError> {
        sqlx::query_scalar::<_, i64>("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread")]
    async fn the_newest_200_runs_of_each_job_are_kept() {
        let (_dir, locator) = crate::locator::tests::temp_locator().await;
        let backup = locator.start_run("backup", "cli", 1, 0).await.unwrap();
        let mut tier = Vec::new();
        for n in 0..205 {
            tier.push(locator.start_run("tier", "cli", 1, n).await.unwrap());
        }
        let kept = |job: &'static str| {
            sqlx::query_scalar::<_, i64>("SELECT id FROM job_runs WHERE job = $1 ORDER BY id")
                .bind(job)
                .fetch_all(&locator.pool)
        };
        assert_eq!(
            kept("tier").await.unwrap(),
            tier[5..],
            "the oldest five pruned"
        );
        assert_eq!(
            kept("backup").await.unwrap(),
            [backup],
            "other jobs untouched"
        );
        locator.close().await;
    }
}
