//! Moving a site's locator to another database (`strata locator migrate`): every table
//! copied row for row, ids kept, in foreign-key order and in batches, into an empty target;
//! then each table's row count and a SHA-256 over its rows in key order compared on both
//! sides. Leases are not copied: the site is stopped meanwhile, and claims whose lease is
//! unknown are recovered by the first run on the new locator, as after any crash. Nor are
//! the status page's samples: its history restarts on the new locator.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::dialect::Dialect;
use super::{Locator, LocatorError};

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Transfer(e)
}

/// A column and how it is bound on insert.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
}

/// One table: its name, key (for paging and ordering) and columns, key first.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Has an identity column whose sequence must move past the copied ids (PostgreSQL).
    identity: bool,
}

use Kind::{Int, Text};

/// Every table of the schema (migration 0013), parents before children.
const TABLES: &[Table] = &[
    Table {
        name: "patients",
        columns: &[
            ("id", Int),
            ("patient_id", Text),
            ("issuer_of_patient_id", Text),
            ("patient_name", Text),
            ("patient_birth_date", Text),
            ("patient_sex", Text),
            ("patient_name_key", Text),
        ],
        identity: true,
    },
    Table {
        name: "studies",
        columns: &[
            ("id", Int),
            ("patient_fk", Int),
            ("study_instance_uid", Text),
            ("study_date", Text),
            ("study_time", Text),
            ("accession_number", Text),
            ("study_id", Text),
            ("study_description", Text),
            ("referring_physician_name", Text),
            ("referring_physician_name_key", Text),
            ("modalities_in_study", Text),
            ("corrected_at", Int),
        ],
        identity: true,
    },
    Table {
        name: "series",
        columns: &[
            ("id", Int),
            ("study_fk", Int),
            ("series_instance_uid", Text),
            ("modality", Text),
            ("series_number", Int),
            ("series_description", Text),
            ("body_part_examined", Text),
        ],
        identity: true,
    },
    Table {
        name: "instances",
        columns: &[
            ("id", Int),
            ("series_fk", Int),
            ("sop_instance_uid", Text),
            ("sop_class_uid", Text),
            ("instance_number", Int),
            ("specific_character_set", Text),
            ("transfer_syntax_uid", Text),
            ("tier", Text),
            ("location", Text),
            ("byte_offset", Int),
            ("byte_length", Int),
            ("crc32c", Int),
            ("received_at", Int),
            ("source_ae", Text),
        ],
        identity: true,
    },
    Table {
        name: "audit_log",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("event", Text),
            ("ae", Text),
            ("sop_instance_uid", Text),
            ("detail", Text),
            ("study_instance_uid", Text),
            ("address", Text),
            ("outcome", Text),
        ],
        identity: true,
    },
    Table {
        name: "archive_jobs",
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("study_instance_uid", Text),
            ("container", Text),
            ("state", Text),
            ("old_locations", Text),
            ("started_at", Int),
            ("lease", Int),
        ],
        identity: true,
    },
    Table {
        name: "copies",
        columns: &[
            ("id", Int),
            ("sop_instance_uid", Text),
            ("kind", Text),
            ("location", Text),
            ("member", Text),
            ("byte_offset", Int),
            ("byte_length", Int),
            ("crc32c", Int),
            ("format", Text),
            ("created_at", Int),
            ("source_crc32c", Int),
            ("bad_since", Int),
        ],
        identity: true,
    },
    Table {
        name: "backup_queue",
        columns: &[
            ("study_instance_uid", Text),
            ("enqueued_at", Int),
            ("reason", Text),
            ("container", Text),
            ("lease", Int),
        ],
        identity: false,
    },
    Table {
        name: "repairs",
        columns: &[
            ("sop_instance_uid", Text),
            ("detected_at", Int),
            ("reason", Text),
        ],
        identity: false,
    },
    Table {
        name: "deleted_instances",
        columns: &[
            ("sop_instance_uid", Text),
            ("study_instance_uid", Text),
            ("series_instance_uid", Text),
            ("deleted_at", Int),
            ("reason", Text),
            ("offline_volumes", Text),
        ],
        identity: false,
    },
    Table {
        name: "rejected_instances",
        columns: &[
            ("sop_instance_uid", Text),
            ("study_instance_uid", Text),
            ("series_instance_uid", Text),
            ("rejected_at", Int),
            ("code", Text),
            ("note_uid", Text),
            ("tier", Text),
            ("location", Text),
            ("byte_length", Int),
            ("nearline", Text),
        ],
        identity: false,
    },
    Table {
        name: "job_runs",
        columns: &[
            ("id", Int),
            ("job", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("outcome", Text),
            ("summary", Text),
            ("pid", Int),
            ("\"trigger\"", Text),
            ("lease", Int),
            ("node", Text),
        ],
        identity: true,
    },
    Table {
        name: "instance_metadata",
        columns: &[("sop_instance_uid", Text), ("json", Text)],
        identity: false,
    },
    Table {
        name: "resolution_levels",
        columns: &[
            ("sop_instance_uid", Text),
            ("crc32c", Int),
            ("frames", Text),
        ],
        identity: false,
    },
    Table {
        name: "frame_offsets",
        columns: &[
            ("sop_instance_uid", Text),
            ("frame", Int),
            ("crc32c", Int),
            ("byte_offset", Int),
            ("byte_length", Int),
        ],
        identity: false,
    },
    Table {
        name: "counters",
        columns: &[("name", Text), ("value", Int)],
        identity: false,
    },
    Table {
        name: "volumes",
        columns: &[
            ("id", Text),
            ("state", Text),
            ("directory", Text),
            ("size", Int),
            ("instances", Int),
            ("sha256", Text),
            ("created_at", Int),
            ("lease", Int),
        ],
        identity: false,
    },
    Table {
        name: "commitments",
        columns: &[
            ("id", Int),
            ("transaction_uid", Text),
            ("calling_ae", Text),
            ("received_at", Int),
            ("state", Text),
            ("association", Int),
            ("lease", Int),
            ("event_type", Int),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("last_error", Text),
            ("finished_at", Int),
        ],
        identity: true,
    },
    Table {
        name: "commitment_items",
        columns: &[
            ("id", Int),
            ("commitment_fk", Int),
            ("position", Int),
            ("sop_class_uid", Text),
            ("sop_instance_uid", Text),
            ("failure_reason", Int),
        ],
        identity: true,
    },
];

/// Rows read and written per statement.
const BATCH: usize = 1000;

/// One table as copied and checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub rows: u64,
    /// SHA-256 over the rows in key order (each column as text, NULL distinct from empty).
    pub sha256: String,
}

/// Why a migration was refused or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(
        "the target locator is not empty ({table} has rows): migrate into a new, empty database"
    )]
    TargetNotEmpty { table: &'static str },
    #[error("table {table} differs after copying: {from} rows {from_sha256} here, {to} rows {to_sha256} there")]
    Mismatch {
        table: &'static str,
        from: u64,
        from_sha256: String,
        to: u64,
        to_sha256: String,
    },
}

/// The page after key `$1`, or with `first` the first page.
fn select_text(table: &Table, first: bool) -> String {
    // Aliased: PostgreSQL would otherwise name `CAST(id AS TEXT)` "id" and order by it as
    // text.
    let columns: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("CAST({}.{c} AS TEXT) AS c{i}", table.name))
        .collect();
    let key = table.columns[0].0;
    let after = match table.columns[0].1 {
        Int => "CAST($1 AS BIGINT)",
        Text => "$1",
    };
    let filter = if first {
        String::new()
    } else {
        format!("WHERE {}.{key} > {after}", table.name)
    };
    format!(
        "SELECT {} FROM {table} {filter} ORDER BY {table}.{key} LIMIT {BATCH}",
        columns.join(", "),
        table = table.name
    )
}

/// A page of rows as text (NULL as `None`), after key `after` (text of the key; `None`: the
/// first page).
async fn page(
    locator: &Locator,
    table: &Table,
    after: Option<&str>,
) -> Result<Vec<Vec<Option<String>>>, LocatorError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(select_text(table, after.is_none())));
    if let Some(after) = after {
        query = query.bind(after.to_string());
    }
    let rows = query.fetch_all(&locator.pool).await.map_err(err)?;
    rows.iter()
        .map(|row| {
            (0..table.columns.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(format!("c{i}").as_str())
                        .map_err(err)
                })
                .collect()
        })
        .collect()
}

/// Walks a table in key order, page by page.
async fn for_each_page(
    locator: &Locator,
    table: &Table,
    mut each: impl AsyncFnMut(Vec<Vec<Option<String>>>) -> Result<(), LocatorError>,
) -> Result<(), LocatorError> {
    let mut after: Option<String> = None;
    loop {
        let rows = page(locator, table, after.as_deref()).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        // Keys are never NULL (primary keys).
        after = Some(last[0].clone().unwrap_or_default());
        let full = rows.len() == BATCH;
        each(rows).await?;
        if !full {
            return Ok(());
        }
    }
}

/// Count and SHA-256 of a table's rows in key order.
pub async fn check_table(
    locator: &Locator,
    name: &str,
) -> Result<Option<TableCheck>, LocatorError> {
    let Some(table) = TABLES.iter().find(|t| t.name == name) else {
        return Ok(None);
    };
    checksum(locator, table).await.map(Some)
}

async fn checksum(locator: &Locator, table: &Table) -> Result<TableCheck, LocatorError> {
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    for_each_page(locator, table, async |page| {
        for row in page {
            rows += 1;
            for value in row {
                match value {
                    None => hasher.update([0u8]),
                    Some(v) => {
                        hasher.update([1u8]);
                        hasher.update((v.len() as u64).to_le_bytes());
                        hasher.update(v.as_bytes());
                    }
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(TableCheck {
        table: table.name,
        rows,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// Inserts a page of rows into `table` of `to`, in one transaction.
async fn insert_page(
    to: &Locator,
    table: &Table,
    rows: &[Vec<Option<String>>],
) -> Result<(), LocatorError> {
    let width = table.columns.len();
    let names: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let mut values = Vec::with_capacity(rows.len());
    for r in 0..rows.len() {
        let placeholders: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(c, (_, kind))| {
                let n = r * width + c + 1;
                match kind {
                    Int => format!("CAST(${n} AS BIGINT)"),
                    Text => format!("${n}"),
                }
            })
            .collect();
        values.push(format!("({})", placeholders.join(", ")));
    }
    // Safe: table and column names are the constants above; values are bound.
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        names.join(", "),
        values.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        for value in row {
            query = query.bind(value.clone());
        }
    }
    let mut tx = to.pool.begin().await.map_err(err)?;
    query.execute(&mut *tx).await.map_err(err)?;
    tx.commit().await.map_err(err)
}

/// Copies every table of `from` into `to` (empty, schema applied), then checks every table
/// on both sides. `progress` is told each table as it is done.
pub async fn copy_site(
    from: &Locator,
    to: &Locator,
    mut progress: impl FnMut(&TableCheck),
) -> Result<Vec<TableCheck>, MigrateError> {
    for table in TABLES {
        let present: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {} LIMIT 1",
            table.name
        )))
        .fetch_optional(&to.pool)
        .await
        .map_err(err)?;
        if present.is_some() {
            return Err(MigrateError::TargetNotEmpty { table: table.name });
        }
    }
    let mut checks = Vec::new();
    for table in TABLES {
        for_each_page(from, table, async |rows| {
            insert_page(to, table, &rows).await
        })
        .await?;
        if table.identity && to.dialect == Dialect::Postgres {
            // New rows on the target continue after the copied ids.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(setval(pg_get_serial_sequence('{0}', 'id'), \
                   COALESCE((SELECT MAX(id) FROM {0}), 0) + 1, false) AS BIGINT)",
                table.name
            )))
            .fetch_one(&to.pool)
            .await
            .map_err(err)?;
        }
        let here = checksum(from, table).await?;
        let there = checksum(to, table).await?;
        if here != there {
            return Err(MigrateError::Mismatch {
                table: table.name,
                from: here.rows,
                from_sha256: here.sha256,
                to: there.rows,
                to_sha256: there.sha256,
            });
        }
        progress(&here);
        checks.push(here);
    }
    Ok(checks)
}
