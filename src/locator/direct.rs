//! SQLite's hot write without sqlx's worker thread: recording a batch of received instances
//! of series already known, in one transaction on a connection of its own, on the thread
//! that asks.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, and every statement is a
//! round trip to it: a group commit through [`Locator::record_instances`] is five or more
//! (BEGIN, the hierarchy counter, the rejected list, the insert, a backup-queue mark per
//! study when backups are on, COMMIT), two thread wake-ups each. Here equivalent statements
//! run where the committer already is. Only the common case comes here: every instance of
//! the batch belongs to a series whose row id is cached, and a duplicate is kept, not
//! overwritten. Anything else (a series' first instance, the overwrite policy, a hierarchy
//! deletion since the ids were cached) takes the sqlx path, which stays the reference. The
//! instance row, audit entry, counter and queue statements are its own text (shared
//! constants); the rejected check is one UID at a time and the metadata row a plain insert,
//! where sqlx's path folds them into fewer round trips. The same durability holds (WAL,
//! `synchronous = FULL`, the in-process write lock held).
//!
//! [`Locator::record_instances`]: super::Locator::record_instances

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tracing::info;

use super::{
    copies, Dialect, NewInstance, Recorded, AUDIT_INSERT, HIERARCHY_EPOCH, INSTANCE_INSERT,
    METADATA_INSERT_NEW,
};

/// Statements built once (the statement cache looks them up by text every batch).
static INSTANCE_INSERT_NEW: LazyLock<String> =
    LazyLock::new(|| format!("{INSTANCE_INSERT} DO NOTHING"));
static ENQUEUE_BACKUP: LazyLock<String> = LazyLock::new(|| copies::enqueue_sql(Dialect::Sqlite));

/// The write connection for [`DirectWriter::record`].
pub(super) struct DirectWriter {
    /// `None` once closed (or given up, see [`DirectWriter::record`]).
    connection: Mutex<Option<Connection>>,
    /// Transactions committed here.
    commits: AtomicU64,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter").finish_non_exhaustive()
    }
}

/// What one direct commit did.
#[derive(Debug)]
pub(super) enum Direct {
    /// Committed: one answer per instance, in order.
    Committed(Vec<Recorded>),
    /// Nothing was written: series rows were deleted since the ids were cached, or the
    /// writer is closed.
    NotTaken,
}

impl DirectWriter {
    /// Opens the (migrated) database at `path` with the pool's pragmas.
    pub(super) fn open(path: &Path, pragmas: &str) -> rusqlite::Result<DirectWriter> {
        let connection = Connection::open(path)?;
        connection.execute_batch(pragmas)?;
        Ok(DirectWriter {
            connection: Mutex::new(Some(connection)),
            commits: AtomicU64::new(0),
        })
    }

    /// Closes the connection (the pools' closing then checkpoints the WAL); later batches
    /// are not taken.
    pub(super) fn close(&self) {
        let connection = self.lock().take();
        if let Some(Err((_, e))) = connection.map(Connection::close) {
            tracing::warn!(error = %e, "cannot close the locator's direct write connection");
        }
    }

    /// Transactions committed here so far.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        // A panic while it was held left no transaction open (dropping it rolled back).
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `batch` (each instance with its series' row id, cached while the hierarchy
    /// counter read `epoch`) in one transaction; the caller holds the write lock. Blocking:
    /// the commit syncs the WAL.
    pub(super) fn record(
        &self,
        batch: &[(&NewInstance<'_>, i64)],
        epoch: i64,
    ) -> rusqlite::Result<Direct> {
        let mut slot = self.lock();
        let Some(connection) = slot.as_mut() else {
            return Ok(Direct::NotTaken);
        };
        let done = record_batch(connection, batch, epoch);
        match &done {
            Ok(Direct::Committed(_)) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if !connection.is_autocommit() => {
                // A failed commit whose rollback failed too (an I/O error) leaves the
                // transaction open, holding the database's write lock: the connection is
                // given up, and later batches take the sqlx path.
                tracing::warn!(error = %e, "the direct write connection is stuck in a transaction: closed");
                if let Some(Err((_, e))) = slot.take().map(Connection::close) {
                    tracing::warn!(error = %e, "cannot close the direct write connection");
                }
            }
            _ => {}
        }
        done
    }
}

/// [`DirectWriter::record`]'s transaction.
fn record_batch(
    connection: &mut Connection,
    batch: &[(&NewInstance<'_>, i64)],
    epoch: i64,
) -> rusqlite::Result<Direct> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now: i64 = tx
        .prepare_cached(HIERARCHY_EPOCH)?
        .query_row(params![super::lifecycle::HIERARCHY_COUNTER], |row| {
            row.get(0)
        })?;
    if now != epoch {
        return Ok(Direct::NotTaken); // rolled back when dropped
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut enqueued: Vec<&str> = Vec::new();
    for (new, series_fk) in batch {
        let answer = record_one(&tx, new, *series_fk)?;
        let study = new.attributes.study.study_instance_uid.as_str();
        if new.enqueue_backup && answer != Recorded::Kept && !enqueued.contains(&study) {
            tx.prepare_cached(&ENQUEUE_BACKUP)?.execute(params![
                study,
                super::now_millis(),
                "received"
            ])?;
            enqueued.push(study);
        }
        answers.push(answer);
    }
    tx.commit()?;
    Ok(Direct::Committed(answers))
}

/// One instance of a batch, inside its transaction: what the sqlx path's
/// `insert_new_instance` does, statement by statement.
fn record_one(
    tx: &rusqlite::Transaction<'_>,
    new: &NewInstance<'_>,
    series_fk: i64,
) -> rusqlite::Result<Recorded> {
    let a = &new.attributes.instance;
    let o = new.object;
    let rejected = tx
        .prepare_cached(super::rejection::IS_REJECTED)?
        .query_row(params![a.sop_instance_uid], |_| Ok(()))
        .optional()?
        .is_some();
    if rejected {
        info!(sop_instance_uid = %a.sop_instance_uid, "received again after its rejection: not indexed");
        return Ok(Recorded::Kept);
    }
    let inserted = tx.prepare_cached(&INSTANCE_INSERT_NEW)?.execute(params![
        series_fk,
        a.sop_instance_uid,
        a.sop_class_uid,
        a.instance_number,
        a.specific_character_set,
        o.transfer_syntax_uid,
        o.tier.as_str(),
        o.location,
        o.offset as i64,
        o.length as i64,
        i64::from(o.crc32c),
        new.received_at,
        new.source_ae,
    ])?;
    if inserted == 0 {
        return Ok(Recorded::Kept);
    }
    tx.prepare_cached(AUDIT_INSERT)?.execute(params![
        new.received_at,
        "stored",
        new.who,
        new.address,
        a.sop_instance_uid,
        ""
    ])?;
    if let Some(json) = new.attributes.metadata.as_deref() {
        tx.prepare_cached(METADATA_INSERT_NEW)?
            .execute(params![a.sop_instance_uid, json])?;
    }
    Ok(Recorded::Stored)
}
