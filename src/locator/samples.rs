//! The status page's history: samples of named series (`tier_bytes:online`,
//! `queue:backup`, `ingested`, ...) taken by each server, kept for `[status] keep_hours`.

use sqlx::Row;

use super::{Locator, LocatorError};

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Samples(e)
}

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Unix milliseconds.
    pub taken_at: i64,
    pub node: String,
    pub series: String,
    pub value: i64,
}

impl Locator {
    /// Records this node's values of `series` taken at `taken_at`, and deletes every sample
    /// taken before `keep_from`, in one transaction.
    pub async fn record_samples(
        &self,
        taken_at: i64,
        series: &[(String, i64)],
        keep_from: i64,
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        for (name, value) in series {
            sqlx::query(
                "INSERT INTO status_samples (taken_at, node, series, value) VALUES ($1, $2, $3, $4)",
            )
            .bind(taken_at)
            .bind(self.node())
            .bind(name)
            .bind(*value)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        sqlx::query("DELETE FROM status_samples WHERE taken_at < $1")
            .bind(keep_from)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// Every sample taken since `since` (Unix milliseconds), oldest first.
    pub async fn samples_since(&self, since: i64) -> Result<Vec<Sample>, LocatorError> {
        let rows = sqlx::query(
            "SELECT taken_at, node, series, value FROM status_samples \
             WHERE taken_at >= $1 ORDER BY taken_at, node, series",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows
            .iter()
            .map(|row| Sample {
                taken_at: row.get("taken_at"),
                node: row.get("node"),
                series: row.get("series"),
                value: row.get("value"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread")]
    async fn samples_are_kept_for_their_window_and_read_oldest_first() {
        let (_dir, locator) = crate::locator::tests::temp_locator().await;
        let series = |v: i64| vec![("queue:backup".to_string(), v), ("ingested".to_string(), v)];
        locator.record_samples(1_000, &series(1), 0).await.unwrap();
        locator.record_samples(2_000, &series(2), 0).await.unwrap();
        // The third sample's window starts after the first.
        locator
            .record_samples(3_000, &series(3), 1_500)
            .await
            .unwrap();
        let kept = locator.samples_since(0).await.unwrap();
        let taken: Vec<(i64, &str, i64)> = kept
            .iter()
            .map(|s| (s.taken_at, s.series.as_str(), s.value))
            .collect();
        assert_eq!(
            taken,
            [
                (2_000, "ingested", 2),
                (2_000, "queue:backup", 2),
                (3_000, "ingested", 3),
                (3_000, "queue:backup", 3)
            ]
        );
        assert_eq!(locator.samples_since(2_500).await.unwrap().len(), 2);
    }
}
