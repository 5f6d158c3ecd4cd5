//! The locator database: the patient/study/series/instance index, where every instance's
//! bytes live, and the audit log. All SQL in Strata lives in this module.
//!
//! Two databases, one API (`dialect`): SQLite, the embedded default, runs in WAL mode with
//! `synchronous = FULL`, so a committed row survives power loss; it allows one writer at a
//! time, so writes take an in-process lock first and queue here instead of failing with
//! SQLITE_BUSY. PostgreSQL serves several nodes sharing one site; it locks rows, and the few
//! decisions that must not race between nodes (which copy of a SOP Instance UID wins) take a
//! transaction-scoped advisory lock. Statements use `$N` placeholders, which both accept.

pub mod archive;
pub mod audit;
pub mod commitments;
pub mod copies;
pub mod correction;
pub mod dialect;
mod direct;
pub mod find;
pub mod frames;
pub mod jobs;
pub mod leases;
pub mod lifecycle;
pub mod migrate;
pub mod rejection;
pub mod retrieve;
pub mod samples;
pub mod volumes;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard};

pub use dialect::Dialect;
pub use leases::{Owner, Role};

use crate::config::LocatorConfig;
use crate::model::person_name;
use crate::model::{
    IndexedAttributes, InstanceAttributes, PatientAttributes, SeriesAttributes, StoredObject,
    StudyAttributes, Tier,
};

/// Why a locator operation failed; each variant names the operation.
#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    #[error("invalid locator url {url:?}: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("cannot open the locator database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("the locator database at {0} does not answer (10 s)")]
    Unreachable(String),
    #[error("cannot apply locator migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot look up instance {uid}: {source}")]
    Lookup { uid: String, source: sqlx::Error },
    #[error("cannot record instance {uid}: {source}")]
    Record { uid: String, source: sqlx::Error },
    #[error("cannot record instance {uid}: {source}")]
    RecordDirect {
        uid: String,
        source: rusqlite::Error,
    },
    #[error("cannot open the locator's write connection: {0}")]
    OpenDirect(#[source] rusqlite::Error),
    #[error("cannot run the query: {0}")]
    Find(#[source] sqlx::Error),
    #[error("cannot read locator statistics: {0}")]
    Stats(#[source] sqlx::Error),
    #[error("cannot fill person-name search keys: {0}")]
    Backfill(#[source] sqlx::Error),
    #[error("cannot update the tier-move journal: {0}")]
    Journal(#[source] sqlx::Error),
    #[error("cannot update the copies or the backup queues: {0}")]
    Copies(#[source] sqlx::Error),
    #[error("cannot read or record job runs or counters: {0}")]
    Jobs(#[source] sqlx::Error),
    #[error("cannot copy the locator: {0}")]
    Transfer(#[source] sqlx::Error),
    #[error("cannot delete from the index: {0}")]
    Lifecycle(#[source] sqlx::Error),
    #[error("cannot append to or read the audit log: {0}")]
    Audit(#[source] sqlx::Error),
    #[error("cannot record or read the status page's samples: {0}")]
    Samples(#[source] sqlx::Error),
    #[error("cannot record or read storage commitments: {0}")]
    Commitments(#[source] sqlx::Error),
    #[error("cannot record or read frame offsets: {0}")]
    Frames(#[source] sqlx::Error),
    #[error("cannot take, renew or read leases: {0}")]
    Lease(#[source] sqlx::Error),
    #[error(
        "the lease this work was claimed under has expired: another process may have taken \
         it over; not recorded (this process's lease is now {0})"
    )]
    LeaseLost(i64),
    #[error("unknown tier {0:?} in the locator")]
    UnknownTier(String),
    #[error("the backup claim on study {study_instance_uid} for {container} was released meanwhile (taken for an interrupted run); not recorded")]
    ClaimLost {
        study_instance_uid: String,
        container: String,
    },
}

/// Facts about one instance as it is stored, beyond its attributes.
#[derive(Debug, Clone)]
pub struct NewInstance<'a> {
    pub attributes: &'a IndexedAttributes,
    pub object: &'a StoredObject,
    /// Calling AE title of the sender.
    pub source_ae: &'a str,
    /// The audit's name for the sender (the AE title, `user NAME`, ...) and its IP address.
    pub who: &'a str,
    pub address: &'a str,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Queue the instance's study for a near-line copy in the same transaction.
    pub enqueue_backup: bool,
}

/// What recording an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new instance.
    Stored,
    /// The instance was already stored and kept; the new copy is not referenced.
    Kept,
    /// The row now points at the new copy; the old one is no longer referenced.
    Replaced(StoredObject),
}

/// Totals for `strata status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
    /// Instances and bytes per tier (those holding nothing are absent); the two above are
    /// their sums.
    #[serde(skip)]
    pub tiers: Vec<(Tier, TierTotals)>,
}

/// The locator's connection pool at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open.
    pub open: u32,
    /// Of which idle.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// Count and bytes held by one tier.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TierTotals {
    pub instances: u64,
    pub bytes: u64,
}

/// Series ids remembered, at most; the cache is simply emptied when full.
const SERIES_CACHE_LIMIT: usize = 4096;

/// Series row ids known to be committed, valid while the locator's hierarchy-deletions
/// counter (see `lifecycle`) reads `epoch`: a deleted series row's id may be reused.
#[derive(Debug, Default)]
struct SeriesCache {
    epoch: i64,
    ids: HashMap<String, i64>,
}

/// The locator database.
#[derive(Debug)]
pub struct Locator {
    pool: AnyPool,
    /// SQLite only: the connection write transactions ([`Locator::begin_write`]) run on,
    /// so no other transaction's commit empties its page cache (single-statement writes on
    /// the pool and the direct writer's commits still do).
    writer: Option<AnyPool>,
    /// SQLite on a file only: received instances of known series are recorded here, on the
    /// committer's trip to the blocking pool (see `direct` and
    /// [`Locator::record_instances_here`]).
    direct: Option<direct::DirectWriter>,
    dialect: Dialect,
    /// SQLite only: one writer at a time within this process.
    write_lock: Mutex<()>,
    /// This process's lease (see `leases`) and its heartbeat.
    held: std::sync::Arc<leases::Held>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Series Instance UID -> series row id, for rows known to be committed. Instances arrive
    /// series by series, so this skips three lookups for all but the first of each series.
    /// Deleting series rows (any process, any node) bumps a counter; the cache is emptied
    /// when the counter moved since it was filled (see [`SeriesCache`]).
    series_ids: std::sync::Mutex<SeriesCache>,
}

impl Locator {
    /// Connects (creating an SQLite database if missing), applies pending migrations and
    /// takes this process's lease, renewed from then on by a heartbeat task.
    pub async fn open(config: &LocatorConfig, owner: Owner) -> Result<Locator, LocatorError> {
        sqlx::any::install_default_drivers();
        let url_error = |source| LocatorError::Url {
            url: without_password(&config.url),
            source,
        };
        let dialect = Dialect::of_url(&config.url).ok_or_else(|| {
            url_error(sqlx::Error::Configuration(
                "the scheme must be sqlite://, postgres:// or postgresql://".into(),
            ))
        })?;
        // SQLite on a file: where it is, for the direct writer (an in-memory database has
        // no second connection to it).
        let mut database_file = None;
        let options = match dialect {
            Dialect::Sqlite => {
                let sqlite = SqliteConnectOptions::from_str(&config.url)
                    .map_err(url_error)?
                    .create_if_missing(true);
                if let Some(parent) = std::path::Path::new(sqlite.get_filename()).parent() {
                    // A missing folder is the most common first-run failure; create it.
                    let _ = std::fs::create_dir_all(parent);
                }
                if !config.url.contains(":memory:") && !config.url.contains("mode=memory") {
                    database_file = Some(sqlite.get_filename().to_owned());
                }
                AnyConnectOptions::from_url(&sqlite.to_url_lossy())
            }
            Dialect::Postgres => AnyConnectOptions::from_str(&config.url),
        }
        .map_err(url_error)?;
        if dialect == Dialect::Postgres {
            // One direct attempt first: an unreachable or refusing server is named at once
            // instead of after the pool's acquire timeout.
            use sqlx::Connection;
            let first = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::AnyConnection::connect_with(&options),
            )
            .await
            .map_err(|_| LocatorError::Unreachable(without_password(&config.url)))?
            .map_err(LocatorError::Connect)?;
            let _ = first.close().await;
        }
        let cache_kib = u64::from(config.sqlite_cache_mib.max(1)) * 1024;
        let pool = pool_options(dialect, cache_kib)
            .max_connections(config.max_connections.max(1))
            .connect_with(options.clone())
            .await
            .map_err(LocatorError::Connect)?;
        // SQLite: every write transaction ([`Locator::begin_write`]) runs on this one
        // connection. A connection whose page cache another connection's commit made stale
        // drops its whole cache and reads the pages back (WAL); write transactions taken
        // from the pool in turn did that on every commit (25 page reads and a 16 MiB cache
        // emptied per instance received, a third of the server's CPU with one association
        // sending). Single-statement writes on the pool, and the direct writer's commits
        // (received instances, below), still make it stale; the transactions it runs are
        // rarer now, and it keeps them off the pool's connections.
        let writer = match dialect {
            Dialect::Sqlite => Some(
                pool_options(dialect, cache_kib)
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(LocatorError::Connect)?,
            ),
            Dialect::Postgres => None,
        };
        match dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        fill_person_name_keys(&pool)
            .await
            .map_err(LocatorError::Backfill)?;
        let direct = database_file
            .map(|path| direct::DirectWriter::open(&path, &sqlite_pragmas(cache_kib)))
            .transpose()
            .map_err(LocatorError::OpenDirect)?;
        let held = Locator::take_first_lease(&pool, dialect, owner).await?;
        let heartbeat = leases::spawn_heartbeat(pool.clone(), dialect, held.clone());
        Ok(Locator {
            pool,
            writer,
            direct,
            dialect,
            write_lock: Mutex::new(()),
            held,
            heartbeat,
            series_ids: std::sync::Mutex::new(SeriesCache::default()),
        })
    }

    /// The database this locator runs on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Queues this process's writers one at a time on SQLite (which has one write lock per
    /// database); nothing on PostgreSQL.
    async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => {
                let waiting = std::time::Instant::now();
                let guard = self.write_lock.lock().await;
                crate::metrics::LOCATOR_WAIT.observe_duration(&["writer"], waiting.elapsed());
                Some(guard)
            }
            Dialect::Postgres => None,
        }
    }

    /// Inside a write transaction, waits for and takes a lock on `key` held until commit or
    /// rollback, so decisions about one key (a SOP Instance UID, a study's move) never race
    /// between nodes. PostgreSQL: a transaction-scoped advisory lock on the key's hash;
    /// SQLite: nothing more, its write transaction already excludes every other writer.
    async fn lock_key(&self, tx: &mut AnyConnection, key: &str) -> Result<(), sqlx::Error> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Opens a write transaction (see [`Dialect::begin_write`]).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let waiting = std::time::Instant::now();
        let pool = self.writer.as_ref().unwrap_or(&self.pool);
        let tx = pool.begin_with(self.dialect.begin_write()).await;
        crate::metrics::LOCATOR_WAIT.observe_duration(&["begin"], waiting.elapsed());
        tx
    }

    /// The connection pool now: connections open, of which idle, and the most it opens
    /// (SQLite's write connection apart: it is never what a query waits for).
    pub fn pool_state(&self) -> PoolState {
        PoolState {
            open: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Ends this process's lease and closes the pool (on SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        self.heartbeat.abort();
        self.end_lease().await;
        if let Some(direct) = &self.direct {
            let _writer = self.write_guard().await; // not in the middle of a commit
            direct.close();
        }
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }

    /// Where an instance is stored, if it is.
    pub async fn find_instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<StoredObject>, LocatorError> {
        let mut conn = self.pool.acquire().await.map_err(LocatorError::Connect)?;
        select_object(&mut conn, sop_instance_uid)
            .await
            .map_err(|source| LocatorError::Lookup {
                uid: sop_instance_uid.to_string(),
                source,
            })
    }

    /// Where an instance is stored once no write deciding its SOP Instance UID is in flight:
    /// read inside a write transaction that first takes the UID's lock (SQLite: the write
    /// lock; PostgreSQL: the advisory lock that [`Locator::record_instances`] holds until its
    /// commit lands). For deciding whether a file may go after a commit's answer was lost:
    /// a plain read could run before that commit becomes visible.
    pub async fn find_instance_settled(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<StoredObject>, LocatorError> {
        let lookup = |source| LocatorError::Lookup {
            uid: sop_instance_uid.to_string(),
            source,
        };
        let _writer = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(lookup)?;
        self.lock_key(&mut tx, sop_instance_uid)
            .await
            .map_err(lookup)?;
        let found = select_object(&mut tx, sop_instance_uid)
            .await
            .map_err(lookup)?;
        tx.rollback().await.map_err(lookup)?;
        Ok(found)
    }

    /// The attributes indexed for an instance, level by level, if it is stored.
    pub async fn indexed_attributes(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<IndexedAttributes>, LocatorError> {
        let row = sqlx::query(
            "SELECT p.patient_id, p.issuer_of_patient_id, p.patient_name, p.patient_birth_date, \
               p.patient_sex, st.study_instance_uid, st.study_date, st.study_time, \
               st.accession_number, st.study_id, st.study_description, \
               st.referring_physician_name, se.series_instance_uid, se.modality, \
               se.series_number, se.series_description, se.body_part_examined, \
               i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.specific_character_set \
             FROM instances i JOIN series se ON se.id = i.series_fk \
               JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk \
             WHERE i.sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| LocatorError::Lookup {
            uid: sop_instance_uid.to_string(),
            source,
        })?;
        Ok(row.map(|r| IndexedAttributes {
            patient: PatientAttributes {
                patient_id: r.get("patient_id"),
                issuer_of_patient_id: r.get("issuer_of_patient_id"),
                patient_name: r.get("patient_name"),
                patient_birth_date: r.get("patient_birth_date"),
                patient_sex: r.get("patient_sex"),
            },
            study: StudyAttributes {
                study_instance_uid: r.get("study_instance_uid"),
                study_date: r.get("study_date"),
                study_time: r.get("study_time"),
                accession_number: r.get("accession_number"),
                study_id: r.get("study_id"),
                study_description: r.get("study_description"),
                referring_physician_name: r.get("referring_physician_name"),
            },
            series: SeriesAttributes {
                series_instance_uid: r.get("series_instance_uid"),
                modality: r.get("modality"),
                series_number: r.get("series_number"),
                series_description: r.get("series_description"),
                body_part_examined: r.get("body_part_examined"),
            },
            instance: InstanceAttributes {
                sop_instance_uid: r.get("sop_instance_uid"),
                sop_class_uid: r.get("sop_class_uid"),
                instance_number: r.get("instance_number"),
                specific_character_set: r.get("specific_character_set"),
            },
            metadata: None,
        }))
    }

    /// Indexes an instance and records where it is, in one transaction with its audit entry
    /// (see [`Locator::record_instances`]).
    pub async fn record_instance(
        &self,
        new: &NewInstance<'_>,
        replace: bool,
    ) -> Result<Recorded, LocatorError> {
        let mut recorded = self
            .record_instances(std::slice::from_ref(new), replace)
            .await?;
        Ok(recorded.pop().expect("one answer per instance"))
    }

    /// Indexes instances and records where they are, each with its audit entry, all in one
    /// transaction: a group commit, one WAL sync on SQLite, one commit on PostgreSQL, however
    /// many instances. If a SOP Instance UID is already stored (also by an earlier instance of
    /// the same batch), the existing row is kept unless `replace`. The decisions and writes
    /// happen in a write transaction that first locks every SOP Instance UID of the batch, in
    /// sorted order (SQLite's database lock; PostgreSQL advisory locks), so two processes or
    /// nodes storing the same instance at once cannot both win, nor deadlock. One answer per
    /// instance, in order; any failure rolls back the whole batch.
    pub async fn record_instances(
        &self,
        batch: &[NewInstance<'_>],
        replace: bool,
    ) -> Result<Vec<Recorded>, LocatorError> {
        let first_uid = || {
            batch
                .first()
                .map(|n| n.attributes.instance.sop_instance_uid.clone())
                .unwrap_or_default()
        };
        if let Some(direct) = &self.direct {
            if let Some(done) = self.record_direct(direct, batch, replace).await {
                return done;
            }
        }
        let _writer = self.write_guard().await;
        let mut tx = self
            .begin_write()
            .await
            .map_err(|source| LocatorError::Record {
                uid: first_uid(),
                source,
            })?;
        let mut uids: Vec<&str> = batch
            .iter()
            .map(|n| n.attributes.instance.sop_instance_uid.as_str())
            .collect();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            // The same UID's other stores, on any node, wait here until this one commits.
            self.lock_key(&mut tx, uid)
                .await
                .map_err(|source| LocatorError::Record {
                    uid: uid.to_string(),
                    source,
                })?;
        }
        // Series rows deleted since the cache was filled: ids in it may be stale.
        let epoch: i64 = sqlx::query_scalar(HIERARCHY_EPOCH)
            .bind(lifecycle::HIERARCHY_COUNTER)
            .fetch_one(&mut *tx)
            .await
            .map_err(|source| LocatorError::Record {
                uid: first_uid(),
                source,
            })?;
        {
            let mut cache = self.series_ids.lock().expect("series cache lock");
            if cache.epoch != epoch {
                cache.ids.clear();
                cache.epoch = epoch;
            }
        }
        let rejected = rejection::rejected_among(&mut tx, self.dialect, batch)
            .await
            .map_err(|source| LocatorError::Record {
                uid: first_uid(),
                source,
            })?;
        // Series rows made or found in this transaction: cached only once it commits.
        let mut new_series: HashMap<String, i64> = HashMap::new();
        let mut answers = Vec::with_capacity(batch.len());
        let mut enqueued: Vec<&str> = Vec::new();
        for new in batch {
            let uid = &new.attributes.instance.sop_instance_uid;
            let record = |source| LocatorError::Record {
                uid: uid.clone(),
                source,
            };
            if rejected.contains(uid.as_str()) {
                // IOCM: an instance rejected earlier stays hidden when it is sent again
                // (acknowledged, not indexed, like a duplicate kept).
                tracing::info!(sop_instance_uid = %uid, "received again after its rejection: not indexed");
                answers.push(Recorded::Kept);
                continue;
            }
            let answer = match self.record_in(&mut tx, new, replace, &mut new_series).await {
                Ok(answer) => answer,
                Err(e) => {
                    // A series deleted after the counter was read (PostgreSQL) fails the
                    // insert; the next attempt looks the hierarchy up afresh.
                    self.forget_series();
                    return Err(record(e));
                }
            };
            let study = new.attributes.study.study_instance_uid.as_str();
            if new.enqueue_backup && answer != Recorded::Kept && !enqueued.contains(&study) {
                copies::enqueue_in(&mut tx, self.dialect, study, "received")
                    .await
                    .map_err(record)?;
                enqueued.push(study);
            }
            answers.push(answer);
        }
        tx.commit().await.map_err(|source| LocatorError::Record {
            uid: first_uid(),
            source,
        })?;
        if !new_series.is_empty() {
            let mut cache = self.series_ids.lock().expect("series cache lock");
            if cache.epoch == epoch {
                if cache.ids.len() + new_series.len() > SERIES_CACHE_LIMIT {
                    cache.ids.clear();
                }
                cache.ids.extend(new_series);
            }
        }
        Ok(answers)
    }

    /// [`Locator::record_instances`] on the direct writer, when it takes the batch: every
    /// instance of a series whose row id is cached, and no overwrite. `None`: nothing was
    /// written; the sqlx path must record the batch.
    async fn record_direct(
        &self,
        direct: &direct::DirectWriter,
        batch: &[NewInstance<'_>],
        replace: bool,
    ) -> Option<Result<Vec<Recorded>, LocatorError>> {
        let (epoch, series) = self.direct_series(batch, replace)?;
        let _writer = self.write_guard().await;
        run_here(|| self.record_direct_locked(direct, batch, &series, epoch))
    }

    /// [`Locator::record_instances`] for a blocking thread (never a runtime's worker): the
    /// batch is recorded here when the direct writer can take it (SQLite on a file, no
    /// `replace`, every series' row known), so publishing and recording a batch is one trip
    /// to the blocking pool. `None`: nothing was written; use `record_instances`.
    pub fn record_instances_here(
        &self,
        batch: &[NewInstance<'_>],
        replace: bool,
    ) -> Option<Result<Vec<Recorded>, LocatorError>> {
        let direct = self.direct.as_ref()?;
        let (epoch, series) = self.direct_series(batch, replace)?;
        let waiting = std::time::Instant::now();
        let _writer = self.write_lock.blocking_lock();
        crate::metrics::LOCATOR_WAIT.observe_duration(&["writer"], waiting.elapsed());
        self.record_direct_locked(direct, batch, &series, epoch)
    }

    /// The cached hierarchy epoch and each instance's series row id, when the direct writer
    /// may take `batch`.
    fn direct_series(&self, batch: &[NewInstance<'_>], replace: bool) -> Option<(i64, Vec<i64>)> {
        if replace || batch.is_empty() {
            return None;
        }
        let cache = self.series_ids.lock().expect("series cache lock");
        let series: Option<Vec<i64>> = batch
            .iter()
            .map(|n| {
                cache
                    .ids
                    .get(&n.attributes.series.series_instance_uid)
                    .copied()
            })
            .collect();
        Some((cache.epoch, series?))
    }

    /// The direct commit, under the write lock; blocking (the commit syncs the WAL).
    fn record_direct_locked(
        &self,
        direct: &direct::DirectWriter,
        batch: &[NewInstance<'_>],
        series: &[i64],
        epoch: i64,
    ) -> Option<Result<Vec<Recorded>, LocatorError>> {
        let batch: Vec<(&NewInstance<'_>, i64)> =
            batch.iter().zip(series.iter().copied()).collect();
        match direct.record(&batch, epoch) {
            Ok(direct::Direct::Committed(answers)) => Some(Ok(answers)),
            // Series rows were deleted meanwhile, or the locator is closing. The cached ids
            // are forgotten, so the sqlx path that records the batch instead does not try
            // this writer again first; it fills the cache afresh.
            Ok(direct::Direct::NotTaken) => {
                self.forget_series();
                None
            }
            Err(source) => {
                self.forget_series();
                let uid = batch[0].0.attributes.instance.sop_instance_uid.clone();
                Some(Err(LocatorError::RecordDirect { uid, source }))
            }
        }
    }

    /// One instance of [`Locator::record_instances`], inside its transaction.
    async fn record_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        new: &NewInstance<'_>,
        replace: bool,
        new_series: &mut HashMap<String, i64>,
    ) -> Result<Recorded, sqlx::Error> {
        let uid = &new.attributes.instance.sop_instance_uid;
        let series_uid = &new.attributes.series.series_instance_uid;
        let known_series = self
            .cached_series(series_uid)
            .or_else(|| new_series.get(series_uid).copied());
        if let (false, Some(series_fk)) = (replace, known_series) {
            // The common case in one statement: a new instance of a known series, or a
            // duplicate kept (nothing inserted).
            return Ok(
                if insert_new_instance(tx, self.dialect, series_fk, new).await? {
                    Recorded::Stored
                } else {
                    Recorded::Kept
                },
            );
        }
        let existing = select_object(tx, uid).await?;
        if existing.is_some() && !replace {
            return Ok(Recorded::Kept);
        }
        let series_fk = match known_series {
            Some(id) => id,
            None => {
                let id = upsert_hierarchy(tx, new.attributes).await?;
                new_series.insert(series_uid.clone(), id);
                id
            }
        };
        insert_instance(
            tx,
            series_fk,
            new,
            "DO UPDATE SET series_fk = excluded.series_fk, \
               sop_class_uid = excluded.sop_class_uid, instance_number = excluded.instance_number, \
               specific_character_set = excluded.specific_character_set, \
               transfer_syntax_uid = excluded.transfer_syntax_uid, tier = excluded.tier, \
               location = excluded.location, byte_offset = excluded.byte_offset, \
               byte_length = excluded.byte_length, crc32c = excluded.crc32c, \
               received_at = excluded.received_at, source_ae = excluded.source_ae",
        )
        .await?;
        upsert_metadata(tx, uid, new.attributes.metadata.as_deref()).await?;
        if existing.is_some() {
            let (patient, study) = (&new.attributes.patient, &new.attributes.study);
            let who = (new.who, new.address);
            correction::follow_resent(tx, patient, study, who, new.received_at).await?;
        }
        let event = if existing.is_some() {
            "replaced"
        } else {
            "stored"
        };
        insert_audit(
            tx,
            new.received_at,
            event,
            (new.who, new.address),
            Some(uid),
            "",
        )
        .await?;
        Ok(match existing {
            Some(old) => Recorded::Replaced(old),
            None => Recorded::Stored,
        })
    }

    /// The SQL condition "this process's lease holds now" (its token bound at `param`).
    pub(crate) fn lease_holds_sql(&self, param: &str) -> String {
        leases::holds(self.dialect, param)
    }

    /// Empties the series cache (its ids may be stale).
    fn forget_series(&self) {
        self.series_ids
            .lock()
            .expect("series cache lock")
            .ids
            .clear();
    }

    fn cached_series(&self, series_instance_uid: &str) -> Option<i64> {
        self.series_ids
            .lock()
            .expect("series cache lock")
            .ids
            .get(series_instance_uid)
            .copied()
    }

    /// Overall counts and bytes.
    pub async fn totals(&self) -> Result<Totals, LocatorError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM patients) AS patients, \
               (SELECT COUNT(*) FROM studies) AS studies, (SELECT COUNT(*) FROM series) AS series",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(LocatorError::Stats)?;
        let n = |column| row.get::<i64, _>(column) as u64;
        // One grouped scan of the instances gives both the per-tier and the whole totals
        // (at a million instances, a second scan for the sum would cost as much again).
        let tiers = self.tier_totals().await?;
        Ok(Totals {
            patients: n("patients"),
            studies: n("studies"),
            series: n("series"),
            instances: tiers.iter().map(|(_, t)| t.instances).sum(),
            bytes: tiers.iter().map(|(_, t)| t.bytes).sum(),
            tiers,
        })
    }

    /// Counts and bytes per tier; tiers holding nothing are absent.
    pub async fn tier_totals(&self) -> Result<Vec<(Tier, TierTotals)>, LocatorError> {
        let rows = sqlx::query(
            "SELECT tier, COUNT(*) AS instances, \
               CAST(COALESCE(SUM(byte_length), 0) AS BIGINT) AS bytes FROM instances GROUP BY tier",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(LocatorError::Stats)?;
        rows.into_iter()
            .map(|row| {
                let tier: String = row.get("tier");
                Ok((
                    Tier::parse(&tier).ok_or(LocatorError::UnknownTier(tier))?,
                    TierTotals {
                        instances: row.get::<i64, _>("instances") as u64,
                        bytes: row.get::<i64, _>("bytes") as u64,
                    },
                ))
            })
            .collect()
    }
}

/// A pool's options with its connections' settings: on SQLite WAL, `synchronous = FULL`,
/// foreign keys, case-sensitive LIKE (C-FIND wildcards are case-sensitive except where a
/// query folds case itself; PostgreSQL's LIKE already is), a busy timeout, and a page cache
/// of `cache_kib` (bounded, so the server's memory is too; the operating system caches the
/// file itself).
/// SQLite's connections are files in this process and never go away, so they are not
/// pinged before each use (a round trip to sqlx's SQLite thread per transaction).
fn pool_options(dialect: Dialect, cache_kib: u64) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(dialect == Dialect::Postgres)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    conn.execute(sqlx::AssertSqlSafe(sqlite_pragmas(cache_kib)))
                        .await?;
                }
                Ok(())
            })
        })
}

/// Runs blocking `work` on this thread. On tokio's multi-thread runtime (the server) the
/// worker's other tasks move to another thread meanwhile; elsewhere (a current-thread
/// runtime: tests, the command line) it simply runs.
fn run_here<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Every SQLite connection's settings (`cache_kib`: its page cache).
fn sqlite_pragmas(cache_kib: u64) -> String {
    // A negative cache_size is in KiB.
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         PRAGMA foreign_keys = ON; PRAGMA case_sensitive_like = ON; \
         PRAGMA busy_timeout = 30000; PRAGMA cache_size = -{cache_kib};"
    )
}

impl Drop for Locator {
    fn drop(&mut self) {
        // Without a clean `close` the lease simply expires.
        self.heartbeat.abort();
    }
}

/// The hierarchy-deletions counter (`$1`: its name), 0 before the first deletion.
const HIERARCHY_EPOCH: &str = "SELECT COALESCE((SELECT value FROM counters WHERE name = $1), 0)";

/// An audit row: at, event, ae, address, sop_instance_uid, detail.
const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (at, event, ae, address, sop_instance_uid, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A new instance's metadata row (`$1` its UID, `$2` the JSON), unless one is there.
const METADATA_INSERT_NEW: &str = "INSERT INTO instance_metadata (sop_instance_uid, json) \
     VALUES ($1, $2) ON CONFLICT (sop_instance_uid) DO NOTHING";

/// The columns of an instance's row, bound as `$1`..`$13` by [`bind_instance`].
const INSTANCE_INSERT: &str = "INSERT INTO instances (series_fk, sop_instance_uid, \
       sop_class_uid, instance_number, specific_character_set, transfer_syntax_uid, tier, \
       location, byte_offset, byte_length, crc32c, received_at, source_ae) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (sop_instance_uid)";

fn bind_instance<'q>(
    sql: String,
    series_fk: i64,
    new: &'q NewInstance<'q>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let a = &new.attributes.instance;
    let o = new.object;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(series_fk)
        .bind(&a.sop_instance_uid)
        .bind(&a.sop_class_uid)
        .bind(a.instance_number)
        .bind(&a.specific_character_set)
        .bind(&o.transfer_syntax_uid)
        .bind(o.tier.as_str())
        .bind(&o.location)
        .bind(o.offset as i64)
        .bind(o.length as i64)
        .bind(i64::from(o.crc32c))
        .bind(new.received_at)
        .bind(new.source_ae)
}

/// Inserts an instance's row; `on_conflict` says what an existing row of the same SOP
/// Instance UID gets (a constant clause, never data). Returns the rows written.
async fn insert_instance(
    tx: &mut Transaction<'_, Any>,
    series_fk: i64,
    new: &NewInstance<'_>,
    on_conflict: &'static str,
) -> Result<u64, sqlx::Error> {
    let done = bind_instance(format!("{INSTANCE_INSERT} {on_conflict}"), series_fk, new)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Inserts a new instance's row and its "stored" audit entry in one round trip, unless its
/// SOP Instance UID is stored already (then neither; returns false). PostgreSQL: one
/// statement whose audit insert reads the instance insert's RETURNING; SQLite: two
/// statements in one call, the second guarded by `changes()`.
async fn insert_new_instance(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    series_fk: i64,
    new: &NewInstance<'_>,
) -> Result<bool, sqlx::Error> {
    let audit = "INSERT INTO audit_log (at, event, ae, address, sop_instance_uid, detail)";
    let metadata = "INSERT INTO instance_metadata (sop_instance_uid, json)";
    let sql = match dialect {
        Dialect::Postgres => format!(
            "WITH inserted AS ({INSTANCE_INSERT} DO NOTHING RETURNING sop_instance_uid), \
             described AS ({metadata} SELECT sop_instance_uid, CAST($14 AS TEXT) FROM inserted \
               WHERE CAST($14 AS TEXT) IS NOT NULL ON CONFLICT (sop_instance_uid) DO NOTHING) \
             {audit} SELECT $12, 'stored', $15, $16, sop_instance_uid, '' FROM inserted"
        ),
        Dialect::Sqlite => format!(
            "{INSTANCE_INSERT} DO NOTHING; \
             {audit} SELECT $12, 'stored', $15, $16, $2, '' WHERE changes() = 1; \
             {metadata} SELECT $2, $14 WHERE changes() = 1 AND $14 IS NOT NULL \
               ON CONFLICT (sop_instance_uid) DO NOTHING"
        ),
    };
    let done = bind_instance(sql, series_fk, new)
        .bind(new.attributes.metadata.as_deref())
        .bind(new.who)
        .bind(new.address)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Writes (or replaces) an instance's metadata row; none kept when `json` is `None`.
async fn upsert_metadata(
    tx: &mut Transaction<'_, Any>,
    sop_instance_uid: &str,
    json: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM instance_metadata WHERE sop_instance_uid = $1")
        .bind(sop_instance_uid)
        .execute(&mut **tx)
        .await?;
    if let Some(json) = json {
        sqlx::query("INSERT INTO instance_metadata (sop_instance_uid, json) VALUES ($1, $2)")
            .bind(sop_instance_uid)
            .bind(json)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Where an instance is stored, read through any connection or transaction.
async fn select_object(
    conn: &mut AnyConnection,
    sop_instance_uid: &str,
) -> Result<Option<StoredObject>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tier, location, byte_offset, byte_length, crc32c, transfer_syntax_uid \
         FROM instances WHERE sop_instance_uid = $1",
    )
    .bind(sop_instance_uid)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| stored_object(&row)).transpose()
}

/// The copy described by the columns `tier, location, byte_offset, byte_length, crc32c,
/// transfer_syntax_uid` of `instances`, selected in that order from column `first` on.
pub(crate) fn stored_object(row: &AnyRow) -> Result<StoredObject, sqlx::Error> {
    let tier: String = row.try_get("tier")?;
    let tier = Tier::parse(&tier)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown tier {tier:?}").into()))?;
    Ok(StoredObject {
        tier,
        location: row.try_get("location")?,
        offset: row.try_get::<i64, _>("byte_offset")? as u64,
        length: row.try_get::<i64, _>("byte_length")? as u64,
        crc32c: row.try_get::<i64, _>("crc32c")? as u32,
        transfer_syntax_uid: row.try_get("transfer_syntax_uid")?,
    })
}

/// Finds or creates the patient row of `p`; its id.
async fn patient_fk(
    tx: &mut Transaction<'_, Any>,
    p: &PatientAttributes,
) -> Result<i64, sqlx::Error> {
    let find_patient = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM patients WHERE patient_id = $1 AND issuer_of_patient_id = $2",
        )
        .bind(&p.patient_id)
        .bind(&p.issuer_of_patient_id)
    };
    let mut patient = find_patient().fetch_optional(&mut **tx).await?;
    if patient.is_none() {
        patient = sqlx::query_scalar(
            "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, \
               patient_birth_date, patient_sex, patient_name_key) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (patient_id, issuer_of_patient_id) DO NOTHING RETURNING id",
        )
        .bind(&p.patient_id)
        .bind(&p.issuer_of_patient_id)
        .bind(&p.patient_name)
        .bind(&p.patient_birth_date)
        .bind(&p.patient_sex)
        .bind(person_name::search_key(&p.patient_name))
        .fetch_optional(&mut **tx)
        .await?;
    }
    match patient {
        Some(id) => Ok(id),
        None => find_patient().fetch_one(&mut **tx).await,
    }
}

/// Finds or creates the patient, study and series rows; returns the series id.
/// The first instance of a study or series sets its attributes. Another node may create the
/// same row meanwhile: the insert then does nothing and the row is read again.
async fn upsert_hierarchy(
    tx: &mut Transaction<'_, Any>,
    attributes: &IndexedAttributes,
) -> Result<i64, sqlx::Error> {
    let s = &attributes.study;
    let find_study = || {
        sqlx::query_scalar::<_, i64>("SELECT id FROM studies WHERE study_instance_uid = $1")
            .bind(&s.study_instance_uid)
    };
    let mut study = find_study().fetch_optional(&mut **tx).await?;
    if study.is_none() {
        let patient = patient_fk(tx, &attributes.patient).await?;
        study = sqlx::query_scalar(
            "INSERT INTO studies (patient_fk, study_instance_uid, study_date, study_time, \
               accession_number, study_id, study_description, referring_physician_name, \
               referring_physician_name_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (study_instance_uid) DO NOTHING RETURNING id",
        )
        .bind(patient)
        .bind(&s.study_instance_uid)
        .bind(&s.study_date)
        .bind(&s.study_time)
        .bind(&s.accession_number)
        .bind(&s.study_id)
        .bind(&s.study_description)
        .bind(&s.referring_physician_name)
        .bind(person_name::search_key(&s.referring_physician_name))
        .fetch_optional(&mut **tx)
        .await?;
    }
    let study = match study {
        Some(id) => id,
        None => find_study().fetch_one(&mut **tx).await?,
    };

    let r = &attributes.series;
    let find_series = || {
        sqlx::query_scalar::<_, i64>("SELECT id FROM series WHERE series_instance_uid = $1")
            .bind(&r.series_instance_uid)
    };
    if let Some(id) = find_series().fetch_optional(&mut **tx).await? {
        return Ok(id);
    }
    let inserted = sqlx::query_scalar(
        "INSERT INTO series (study_fk, series_instance_uid, modality, series_number, \
           series_description, body_part_examined) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (series_instance_uid) DO NOTHING RETURNING id",
    )
    .bind(study)
    .bind(&r.series_instance_uid)
    .bind(&r.modality)
    .bind(r.series_number)
    .bind(&r.series_description)
    .bind(&r.body_part_examined)
    .fetch_optional(&mut **tx)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => find_series().fetch_one(&mut **tx).await,
    }
}

pub(super) async fn insert_audit(
    tx: &mut Transaction<'_, Any>,
    at: i64,
    event: &str,
    (who, address): (&str, &str),
    sop_instance_uid: Option<&str>,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(AUDIT_INSERT)
        .bind(at)
        .bind(event)
        .bind(who)
        .bind(address)
        .bind(sop_instance_uid)
        .bind(detail)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// A locator URL with any password replaced by `***`, for messages and reports.
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Gives names written before migration 0003 (or by tools writing SQL directly) their search
/// keys. A no-op scan when every key is present.
async fn fill_person_name_keys(pool: &AnyPool) -> Result<(), sqlx::Error> {
    for (table, name, key) in [
        ("patients", "patient_name", "patient_name_key"),
        (
            "studies",
            "referring_physician_name",
            "referring_physician_name_key",
        ),
    ] {
        // Safe: table and column names are the constants above.
        let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {name} FROM {table} WHERE {key} = ''"
        )))
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            continue;
        }
        let mut tx = pool.begin().await?;
        let update = format!("UPDATE {table} SET {key} = $1 WHERE id = $2");
        for (id, value) in rows {
            sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .bind(person_name::search_key(&value))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::*;

    fn attributes(sop: &str, series: &str) -> IndexedAttributes {
        IndexedAttributes {
            patient: PatientAttributes {
                patient_id: "P1".into(),
                patient_name: "Doe^Jane".into(),
                ..Default::default()
            },
            study: StudyAttributes {
                study_instance_uid: "1.2.3".into(),
                study_date: "20240101".into(),
                ..Default::default()
            },
            series: SeriesAttributes {
                series_instance_uid: series.into(),
                modality: "CT".into(),
                ..Default::default()
            },
            instance: InstanceAttributes {
                sop_instance_uid: sop.into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                ..Default::default()
            },
            metadata: None,
        }
    }

    pub(crate) fn test_owner() -> Owner {
        Owner {
            node: "unit-test".into(),
            host: crate::config::host_name(),
            role: Role::Cli,
            ttl: std::time::Duration::from_secs(30),
        }
    }

    /// A fresh locator in a temporary folder (kept alive by the returned guard), or with
    /// `STRATA_TEST_LOCATOR=postgres` a fresh database in the cluster of `tools/pg-dev.sh`.
    pub(crate) async fn temp_locator() -> (tempfile::TempDir, Locator) {
        let dir = tempfile::tempdir().unwrap();
        let url = if std::env::var("STRATA_TEST_LOCATOR").as_deref() == Ok("postgres") {
            let name = format!(
                "unit_{}_{}",
                std::process::id(),
                dir.path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_lowercase()
            )
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
            let out = std::process::Command::new(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/pg-dev.sh"),
            )
            .args(["url", &name])
            .output()
            .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        } else {
            format!("sqlite://{}", dir.path().join("l.db").display())
        };
        let config = LocatorConfig {
            url,
            max_connections: 2,
            sqlite_cache_mib: 4,
        };
        let locator = Locator::open(&config, test_owner()).await.unwrap();
        (dir, locator)
    }

    fn object(location: &str, length: u64) -> StoredObject {
        StoredObject {
            tier: Tier::Online,
            location: location.into(),
            offset: 0,
            length,
            crc32c: 0xDEADBEEF,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        }
    }

    /// The direct writer (SQLite) records what the sqlx path records: the instance row,
    /// its audit entry and metadata, the backup queue's mark; a duplicate (also within one
    /// batch) and a rejected instance are kept out; after a hierarchy deletion, and once
    /// closed, it takes nothing and the sqlx path records.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_direct_writer_records_what_the_sqlx_path_records() {
        let (_dir, locator) = temp_locator().await;
        let Some(direct) = &locator.direct else {
            assert_eq!(
                locator.dialect(),
                Dialect::Postgres,
                "SQLite on a file has one"
            );
            return;
        };
        let instance = |sop: &str, metadata: Option<&str>| {
            let mut a = attributes(sop, "1.2.3.9");
            a.instance.instance_number = Some(sop.len() as i64);
            a.metadata = metadata.map(str::to_string);
            a
        };
        let stored = |n: u32| StoredObject {
            tier: Tier::Online,
            location: format!("aa/{n}.dcm"),
            offset: u64::from(n),
            length: 100 + u64::from(n),
            crc32c: 0xDEAD_0000 + n,
            transfer_syntax_uid: format!("1.2.840.10008.1.2.{n}"),
        };
        let new = |attributes, object| NewInstance {
            attributes,
            object,
            source_ae: "MODALITY",
            who: "user alice",
            address: "127.0.0.1",
            received_at: 1_000,
            enqueue_backup: true,
        };
        // What the index holds for `uid`: its row, its metadata, its "stored" audit entries.
        let row = |uid: &str| {
            let (pool, uid) = (locator.pool.clone(), uid.to_string());
            async move {
                let r = sqlx::query(
                    "SELECT i.series_fk, i.sop_class_uid, i.instance_number, i.tier, i.location, \
                       i.byte_offset, i.byte_length, i.crc32c, i.transfer_syntax_uid, \
                       i.received_at, i.source_ae, \
                       (SELECT json FROM instance_metadata m \
                          WHERE m.sop_instance_uid = i.sop_instance_uid) AS json, \
                       (SELECT COUNT(*) FROM audit_log a WHERE a.sop_instance_uid = $1 \
                          AND a.event = 'stored' AND a.at = 1000 AND a.ae = 'user alice' \
                          AND a.address = '127.0.0.1') AS audits \
                     FROM instances i WHERE i.sop_instance_uid = $1",
                )
                .bind(uid)
                .fetch_one(&pool)
                .await
                .unwrap();
                let text = |c: &str| r.get::<String, _>(c);
                let int = |c: &str| r.get::<i64, _>(c);
                let json: Option<String> = r.get("json");
                let columns = [
                    text("sop_class_uid"),
                    text("tier"),
                    text("location"),
                    text("transfer_syntax_uid"),
                    text("source_ae"),
                ];
                let numbers = [
                    int("series_fk"),
                    int("instance_number"),
                    int("byte_offset"),
                    int("byte_length"),
                    int("crc32c"),
                    int("received_at"),
                    int("audits"),
                ];
                (columns, numbers, json)
            }
        };
        // The series' first instance: not taken (its series id is not cached yet).
        let (first, one) = (instance("1.2.3.1", Some(r#"{"a":1}"#)), stored(1));
        stored_by_sqlx(&locator, direct, &new(&first, &one)).await;
        assert_eq!(direct.commits(), 0);
        let by_sqlx = row("1.2.3.1").await;
        let mark = locator.backup_mark("1.2.3").await.unwrap();
        // A batch of the same series through `record_instances`: taken, in one commit.
        let (second, two) = (instance("1.2.3.22", Some(r#"{"b":2}"#)), stored(2));
        let (third, three) = (instance("1.2.3.333", None), stored(3));
        let (rejected, four) = (instance("1.2.3.4444", None), stored(4));
        sqlx::query(
            "INSERT INTO rejected_instances (sop_instance_uid, study_instance_uid, \
               series_instance_uid, rejected_at, code, note_uid, tier, location, byte_length) \
             VALUES ('1.2.3.4444', '1.2.3', '1.2.3.9', 1, '113001', '1.9', 'online', 'x', 1)",
        )
        .execute(&locator.pool)
        .await
        .unwrap();
        let (b, c, d) = (
            new(&second, &two),
            new(&third, &three),
            new(&rejected, &four),
        );
        let answers = locator
            .record_instances(&[b.clone(), b.clone(), c, d], false)
            .await
            .unwrap();
        assert_eq!(
            answers,
            [
                Recorded::Stored,
                Recorded::Kept,
                Recorded::Stored,
                Recorded::Kept
            ],
            "the repeated UID and the rejected one kept out"
        );
        assert_eq!(direct.commits(), 1);
        assert!(
            locator.backup_mark("1.2.3").await.unwrap() > mark,
            "queued again"
        );
        assert!(locator.find_instance("1.2.3.4444").await.unwrap().is_none());
        let by_direct = row("1.2.3.22").await;
        assert_eq!(by_sqlx.1[0], by_direct.1[0], "the same series row");
        for (row, n, json) in [
            (by_sqlx, 1, Some(r#"{"a":1}"#)),
            (by_direct, 2, Some(r#"{"b":2}"#)),
        ] {
            let o = stored(n);
            let uid_len = if n == 1 { 7 } else { 8 };
            assert_eq!(
                row.0,
                [
                    "1.2.840.10008.5.1.4.1.1.2".to_string(),
                    "online".into(),
                    o.location,
                    o.transfer_syntax_uid,
                    "MODALITY".into()
                ]
            );
            let numbers = [
                uid_len,
                o.offset as i64,
                o.length as i64,
                i64::from(o.crc32c),
                1_000,
                1,
            ];
            assert_eq!(row.1[1..], numbers, "instance {n}");
            assert_eq!(row.2.as_deref(), json);
        }
        assert_eq!(row("1.2.3.333").await.2, None, "no metadata row");
        // The same UID again: kept, nothing new.
        let again = locator.record_direct(direct, &[b.clone()], false).await;
        assert_eq!(again.unwrap().unwrap(), vec![Recorded::Kept]);
        assert_eq!(row("1.2.3.22").await.1[6], 1, "still one audit entry");
        // Series rows deleted since the ids were cached: not taken, nothing written.
        sqlx::query("INSERT INTO counters (name, value) VALUES ($1, 1)")
            .bind(lifecycle::HIERARCHY_COUNTER)
            .execute(&locator.pool)
            .await
            .unwrap();
        let (fifth, five) = (instance("1.2.3.5", None), stored(5));
        stored_by_sqlx(&locator, direct, &new(&fifth, &five)).await;
        // Closed: not taken; the sqlx path records.
        direct.close();
        let (sixth, six) = (instance("1.2.3.6", None), stored(6));
        stored_by_sqlx(&locator, direct, &new(&sixth, &six)).await;
        assert_eq!(direct.commits(), 2, "the repeated UID's commit, no other");
    }

    /// `record_instances_here` (the committer's blocking trip) waits for the write lock an
    /// async writer holds, then records in one direct commit; after a hierarchy deletion it
    /// declines, writes nothing, and the sqlx path that records instead does not try the
    /// direct writer again. On PostgreSQL it always declines.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_blocking_trip_records_after_the_write_lock_and_declines_after_a_deletion() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_dir, locator) = temp_locator().await;
        let new = |attributes, object| NewInstance {
            attributes,
            object,
            source_ae: "MODALITY",
            who: "MODALITY",
            address: "127.0.0.1",
            received_at: 1_000,
            enqueue_backup: false,
        };
        let (first, one) = (attributes("1.2.3.1", "1.2.3.9"), object("aa/1.dcm", 10));
        locator
            .record_instance(&new(&first, &one), false)
            .await
            .unwrap();
        let (second, two) = (attributes("1.2.3.2", "1.2.3.9"), object("aa/2.dcm", 20));
        let batch = [new(&second, &two)];
        let Some(direct) = &locator.direct else {
            assert_eq!(
                locator.dialect(),
                Dialect::Postgres,
                "SQLite on a file has one"
            );
            assert!(locator.record_instances_here(&batch, false).is_none());
            return;
        };
        // On a thread of its own, as on the blocking pool (never a runtime worker).
        let here = |batch: &[NewInstance<'_>]| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| locator.record_instances_here(batch, false))
                    .join()
                    .unwrap()
            })
        };
        let held = locator.write_guard().await;
        let done = AtomicBool::new(false);
        let recorded = std::thread::scope(|scope| {
            let trip = scope.spawn(|| {
                let recorded = locator.record_instances_here(&batch, false);
                done.store(true, Ordering::SeqCst);
                recorded
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(!done.load(Ordering::SeqCst), "it waited for the write lock");
            drop(held);
            trip.join().unwrap()
        });
        assert_eq!(recorded.unwrap().unwrap(), vec![Recorded::Stored]);
        assert_eq!(direct.commits(), 1);
        assert!(locator.find_instance("1.2.3.2").await.unwrap().is_some());
        // Series rows deleted since the ids were cached: declined, nothing written.
        sqlx::query("INSERT INTO counters (name, value) VALUES ($1, 1)")
            .bind(lifecycle::HIERARCHY_COUNTER)
            .execute(&locator.pool)
            .await
            .unwrap();
        let (third, three) = (attributes("1.2.3.3", "1.2.3.9"), object("aa/3.dcm", 30));
        let batch = [new(&third, &three)];
        assert!(here(&batch).is_none());
        assert!(locator.find_instance("1.2.3.3").await.unwrap().is_none());
        // The cached ids are forgotten, so the fallback goes straight to sqlx (no second
        // direct attempt), which caches the series afresh.
        assert_eq!(locator.cached_series("1.2.3.9"), None);
        let answers = locator.record_instances(&batch, false).await.unwrap();
        assert_eq!(answers, vec![Recorded::Stored]);
        assert_eq!(
            direct.commits(),
            1,
            "no direct commit for the declined batch"
        );
        assert!(locator.cached_series("1.2.3.9").is_some());
        let (fourth, four) = (attributes("1.2.3.4", "1.2.3.9"), object("aa/4.dcm", 40));
        let batch = [new(&fourth, &four)];
        assert!(here(&batch).is_some());
        assert_eq!(
            direct.commits(),
            2,
            "taken again once the cache is filled afresh"
        );
    }

    /// `new` is not taken by the direct writer (nothing is written); the sqlx path stores it.
    async fn stored_by_sqlx(
        locator: &Locator,
        direct: &direct::DirectWriter,
        new: &NewInstance<'_>,
    ) {
        let taken = locator
            .record_direct(direct, std::slice::from_ref(new), false)
            .await;
        assert!(taken.is_none(), "{taken:?}");
        let uid = &new.attributes.instance.sop_instance_uid;
        assert!(
            locator.find_instance(uid).await.unwrap().is_none(),
            "nothing written"
        );
        let recorded = locator.record_instance(new, false).await.unwrap();
        assert_eq!(recorded, Recorded::Stored);
    }

    /// A backup claim is released only for its own container, keeps its container "in use"
    /// for other processes' recovery, and a backup whose claim was released cannot record.
    #[tokio::test(flavor = "multi_thread")]
    async fn backup_claims_protect_their_container_until_recorded() {
        let (_dir, locator) = temp_locator().await;
        let study = "1.2.3";
        locator.enqueue_backup(study, "archived").await.unwrap();
        assert!(locator.claim_backup(study, "aa/one.sdcm").await.unwrap());
        assert!(
            !locator.claim_backup(study, "aa/two.sdcm").await.unwrap(),
            "busy"
        );
        assert!(locator
            .nearline_container_in_use("aa/one.sdcm")
            .await
            .unwrap());
        assert!(!locator
            .nearline_container_in_use("aa/two.sdcm")
            .await
            .unwrap());
        // A stale release for another container leaves this claim alone.
        locator.release_backup(study, "aa/two.sdcm").await.unwrap();
        assert!(locator
            .nearline_container_in_use("aa/one.sdcm")
            .await
            .unwrap());
        // Released (taken for dead): recording now fails, and a new claim can go ahead.
        locator.release_backup(study, "aa/one.sdcm").await.unwrap();
        let mark = locator.backup_mark(study).await.unwrap();
        let lost = locator
            .record_nearline(study, "aa/one.sdcm", mark, &[])
            .await;
        assert!(
            matches!(lost, Err(LocatorError::ClaimLost { .. })),
            "{lost:?}"
        );
        assert!(locator.claim_backup(study, "aa/two.sdcm").await.unwrap());
        locator
            .record_nearline(study, "aa/two.sdcm", mark, &[])
            .await
            .unwrap();
        assert_eq!(locator.queue_lengths().await.unwrap().backup, 0);
        assert!(!locator
            .nearline_container_in_use("aa/two.sdcm")
            .await
            .unwrap());
    }

    /// A store that lands after a backup read the queue mark (here in the same millisecond,
    /// and with the clock gone back) keeps the study queued; a backup that saw every enqueue
    /// takes it off.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_dequeues_only_what_it_listed() {
        let (_dir, locator) = temp_locator().await;
        let study = "1.2.3";
        assert_eq!(locator.backup_mark(study).await.unwrap(), None);
        locator.enqueue_backup(study, "received").await.unwrap();
        let mark = locator.backup_mark(study).await.unwrap();
        assert!(mark.is_some());
        // Pretend the clock stepped back a minute: the next enqueue must still move the mark.
        sqlx::query("UPDATE backup_queue SET enqueued_at = enqueued_at + 60000")
            .execute(&locator.pool)
            .await
            .unwrap();
        let mark = locator.backup_mark(study).await.unwrap();
        locator.enqueue_backup(study, "received").await.unwrap();
        assert!(locator.backup_mark(study).await.unwrap() > mark);
        assert!(locator.claim_backup(study, "aa/x.sdcm").await.unwrap());
        locator
            .record_nearline(study, "aa/x.sdcm", mark, &[])
            .await
            .unwrap();
        assert_eq!(
            locator.queue_lengths().await.unwrap().backup,
            1,
            "still queued"
        );
        let mark = locator.backup_mark(study).await.unwrap();
        assert!(locator.claim_backup(study, "aa/y.sdcm").await.unwrap());
        locator
            .record_nearline(study, "aa/y.sdcm", mark, &[])
            .await
            .unwrap();
        assert_eq!(locator.queue_lengths().await.unwrap().backup, 0, "dequeued");
        locator.enqueue_backup(study, "received").await.unwrap();
        assert!(locator.claim_backup(study, "aa/z.sdcm").await.unwrap());
        locator
            .record_nearline(study, "aa/z.sdcm", None, &[])
            .await
            .unwrap();
        assert_eq!(
            locator.queue_lengths().await.unwrap().backup,
            1,
            "a study not queued when listed stays queued"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_records_each_instance_once_with_its_audit_entry() {
        let (_dir, locator) = temp_locator().await;
        let new = |a: &'static IndexedAttributes, o: &'static StoredObject| NewInstance {
            attributes: a,
            object: o,
            source_ae: "MOD",
            who: "MOD",
            address: "10.0.0.9",
            received_at: 7,
            enqueue_backup: false,
        };
        let leak =
            |sop: &str, series: &str| -> (&'static IndexedAttributes, &'static StoredObject) {
                (
                    Box::leak(Box::new(attributes(sop, series))),
                    Box::leak(Box::new(object(sop, 10))),
                )
            };
        let (a1, o1) = leak("1.2.3.1.1", "1.2.3.1");
        assert_eq!(
            locator.record_instance(&new(a1, o1), false).await.unwrap(),
            Recorded::Stored
        );
        let (a2, o2) = leak("1.2.3.1.2", "1.2.3.1");
        let (a3, o3) = leak("1.2.3.2.1", "1.2.3.2");
        let (a4, o4) = leak("1.2.3.2.2", "1.2.3.2");
        // A new instance of a known series, the same again in the batch, a new series, a
        // second instance of that series, and one stored before.
        let batch = [
            new(a2, o2),
            new(a2, o2),
            new(a3, o3),
            new(a4, o4),
            new(a1, o1),
        ];
        assert_eq!(
            locator.record_instances(&batch, false).await.unwrap(),
            vec![
                Recorded::Stored,
                Recorded::Kept,
                Recorded::Stored,
                Recorded::Stored,
                Recorded::Kept
            ]
        );
        assert_eq!(locator.totals().await.unwrap().instances, 4);
        assert_eq!(locator.totals().await.unwrap().series, 2);
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT sop_instance_uid FROM audit_log WHERE event = 'stored' \
             ORDER BY sop_instance_uid",
        )
        .fetch_all(&locator.pool)
        .await
        .unwrap();
        assert_eq!(stored, ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1", "1.2.3.2.2"]);
        // Each names its sender and the sender's address.
        let senders: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT ae || ' ' || address FROM audit_log WHERE event = 'stored'",
        )
        .fetch_all(&locator.pool)
        .await
        .unwrap();
        assert_eq!(senders, ["MOD 10.0.0.9"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_hierarchy_once_and_replaces_instances() {
        let (_dir, locator) = temp_locator().await;
        for (sop, series, len) in [
            ("1.2.3.1.1", "1.2.3.1", 100),
            ("1.2.3.1.2", "1.2.3.1", 50),
            ("1.2.3.2.1", "1.2.3.2", 25),
        ] {
            let a = attributes(sop, series);
            let o = object(sop, len);
            let recorded = locator
                .record_instance(
                    &NewInstance {
                        attributes: &a,
                        object: &o,
                        source_ae: "MOD",
                        who: "MOD",
                        address: "10.0.0.9",
                        received_at: 1,
                        enqueue_backup: false,
                    },
                    false,
                )
                .await
                .unwrap();
            assert_eq!(recorded, Recorded::Stored);
        }
        // Again without replace: the stored row is kept. With replace: the old one is reported.
        let a = attributes("1.2.3.1.1", "1.2.3.1");
        let o = object("elsewhere", 10);
        let again = NewInstance {
            attributes: &a,
            object: &o,
            source_ae: "MOD",
            who: "MOD",
            address: "10.0.0.9",
            received_at: 2,
            enqueue_backup: true,
        };
        assert_eq!(
            locator.record_instance(&again, false).await.unwrap(),
            Recorded::Kept
        );
        let replaced = locator.record_instance(&again, true).await.unwrap();
        // Only the recorded (replacing) copy queued its study for backup.
        assert_eq!(locator.queue_lengths().await.unwrap().backup, 1);
        assert_eq!(replaced, Recorded::Replaced(object("1.2.3.1.1", 100)));
        assert_eq!(
            locator.totals().await.unwrap(),
            Totals {
                patients: 1,
                studies: 1,
                series: 2,
                instances: 3,
                bytes: 85,
                tiers: vec![(
                    Tier::Online,
                    TierTotals {
                        instances: 3,
                        bytes: 85
                    }
                )],
            }
        );
        let found = locator.find_instance("1.2.3.1.1").await.unwrap().unwrap();
        assert_eq!(found.location, "elsewhere");
        assert_eq!(found.crc32c, 0xDEADBEEF);
        assert!(locator.find_instance("9.9").await.unwrap().is_none());
        let indexed = locator
            .indexed_attributes("1.2.3.2.1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(indexed, attributes("1.2.3.2.1", "1.2.3.2"));
        let tiers = locator.tier_totals().await.unwrap();
        assert_eq!(
            tiers,
            vec![(
                Tier::Online,
                TierTotals {
                    instances: 3,
                    bytes: 85
                }
            )]
        );

        // The audit log refuses changes.
        let err = sqlx::query("DELETE FROM audit_log")
            .execute(&locator.pool)
            .await;
        assert!(err.is_err());
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&locator.pool)
            .await
            .unwrap();
        assert_eq!(n, 4);
    }
}
