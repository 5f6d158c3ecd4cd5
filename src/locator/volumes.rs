//! The locator side of offline volumes: the `volumes` journal and register, and which
//! instances are not on a volume yet.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::copies::{insert_copy, Copy};
use super::{now_millis, stored_object, Locator, LocatorError};
use crate::model::StoredObject;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Copies(e)
}

/// One volume as the locator knows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    /// `writing` (journaled, not yet durable) or `complete`.
    pub state: String,
    /// The folder it was written to.
    pub directory: String,
    pub size: u64,
    pub instances: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The lease of the process writing it (while `writing`).
    #[serde(skip)]
    pub lease: Option<i64>,
}

/// An instance whose current bytes are on no volume yet.
#[derive(Debug, Clone)]
pub struct Unvolumed {
    pub id: i64,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub object: StoredObject,
}

const VOLUME_COLUMNS: &str = "id, state, directory, size, instances, sha256, created_at, lease";

fn volume_row(r: &AnyRow) -> Volume {
    Volume {
        id: r.get("id"),
        state: r.get("state"),
        directory: r.get("directory"),
        size: r.get::<i64, _>("size") as u64,
        instances: r.get::<i64, _>("instances") as u64,
        sha256: r.get("sha256"),
        created_at: r.get("created_at"),
        lease: r.get("lease"),
    }
}

/// No current offline copy: none whose source is the instance's current bytes.
// A copy found damaged or missing (`bad_since`) does not count: the next export writes the
// instance again.
const UNVOLUMED: &str = "NOT EXISTS (SELECT 1 FROM copies c WHERE c.sop_instance_uid = \
     i.sop_instance_uid AND c.kind = 'offline' AND c.source_crc32c = i.crc32c \
     AND c.bad_since IS NULL)";

impl Locator {
    /// Journals a volume about to be written by this process.
    pub async fn begin_volume(&self, id: &str, directory: &str) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO volumes (id, state, directory, created_at, lease) \
             VALUES ($1, 'writing', $2, $3, $4)",
        )
        .bind(id)
        .bind(directory)
        .bind(now_millis())
        .bind(self.lease())
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// Forgets a journaled volume whose file was never completed (or is deleted).
    pub async fn drop_volume(&self, id: &str) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query("DELETE FROM volumes WHERE id = $1 AND state = 'writing'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Every volume, oldest first.
    pub async fn volumes(&self) -> Result<Vec<Volume>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VOLUME_COLUMNS} FROM volumes ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.iter().map(volume_row).collect())
    }

    /// In one transaction: the volume turns complete with its size and checksum, and its
    /// copies are recorded (those whose source is still the instance's current bytes). With
    /// `adopt`, a volume the locator does not know (an import into a rebuilt locator) is
    /// registered first. Without `adopt` (an export recording what it wrote) only while the
    /// volume is still this process's and its lease holds: otherwise another process may
    /// have taken it for abandoned and deleted the file ([`LocatorError::LeaseLost`]).
    /// Returns how many copies were recorded.
    pub async fn record_volume(
        &self,
        volume: &Volume,
        copies: &[Copy],
        adopt: bool,
    ) -> Result<u64, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        if adopt {
            sqlx::query(
                "INSERT INTO volumes (id, state, directory, created_at) \
                 VALUES ($1, 'writing', $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&volume.id)
            .bind(&volume.directory)
            .bind(volume.created_at)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        let fence = if adopt {
            String::new()
        } else {
            format!(
                " AND state = 'writing' AND lease = $6 AND {}",
                self.lease_holds_sql("$6")
            )
        };
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE volumes SET state = 'complete', size = $1, instances = $2, sha256 = $3, \
               directory = $4, lease = NULL WHERE id = $5{fence}"
        )))
        .bind(volume.size as i64)
        .bind(volume.instances as i64)
        .bind(&volume.sha256)
        .bind(&volume.directory)
        .bind(&volume.id)
        .bind(self.lease())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if !adopt && done.rows_affected() != 1 {
            return Err(LocatorError::LeaseLost(self.lease()));
        }
        let mut recorded = 0;
        for c in copies {
            let inserted = insert_copy(&mut tx, c).await.map_err(err)?;
            recorded += u64::from(inserted);
            if inserted {
                // A copy this one replaces (found bad on an older volume) is forgotten, so
                // verify stops reporting damage that has been mended.
                sqlx::query(
                    "DELETE FROM copies WHERE sop_instance_uid = $1 AND kind = 'offline' \
                     AND location <> $2 AND bad_since IS NOT NULL",
                )
                .bind(&c.sop_instance_uid)
                .bind(&c.location)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(recorded)
    }

    /// How many instances are on no volume yet.
    pub async fn unvolumed_count(&self) -> Result<u64, LocatorError> {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM instances i WHERE {UNVOLUMED}"
        )))
        .fetch_one(&self.pool)
        .await
        .map(|n| n as u64)
        .map_err(err)
    }

    /// Up to `limit` instances on no volume yet with row id above `after`, in id order.
    pub async fn unvolumed_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Unvolumed>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT i.id, i.sop_instance_uid, se.series_instance_uid, st.study_instance_uid, \
               i.tier, i.location, i.byte_offset, i.byte_length, i.crc32c, i.transfer_syntax_uid \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk \
             WHERE i.id > $1 AND {UNVOLUMED} ORDER BY i.id LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(Unvolumed {
                    id: r.get("id"),
                    sop_instance_uid: r.get("sop_instance_uid"),
                    series_instance_uid: r.get("series_instance_uid"),
                    study_instance_uid: r.get("study_instance_uid"),
                    object: stored_object(r).map_err(err)?,
                })
            })
            .collect()
    }
}
