//! Leases: who owns work in progress, across every process of every node sharing the site.
//!
//! Each process that opens the locator (a server, a CLI run) takes one lease: a `leases` row
//! with its node id, role and an expiry on the database's clock, renewed by a heartbeat task.
//! The row id is the process's fencing token and is never reused. Claims on work (archive
//! moves, backup claims, volumes being written, job runs, temporaries' file names) carry the
//! token; a claim is another process's to recover once its lease has expired (or was ended
//! by a clean exit), and commits that depend on a claim check in the same transaction that
//! the lease still holds. No process ID decides anything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use tracing::{error, info, warn};

use super::dialect::Dialect;
use super::{Locator, LocatorError};

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Lease(e)
}

/// What a process does, for `strata status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `strata serve`.
    Server,
    /// Any other command.
    Cli,
}

impl Owner {
    /// This process as `[node]` describes it.
    pub fn of(node: &crate::config::NodeConfig, role: Role) -> Owner {
        Owner {
            node: node.id.clone(),
            host: node.host.clone(),
            role,
            ttl: node.lease(),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Cli => "cli",
        }
    }
}

/// Who this process is among the site's nodes.
#[derive(Debug, Clone)]
pub struct Owner {
    /// `[node] id`.
    pub node: String,
    /// The machine's host name, shown with the lease.
    pub host: String,
    pub role: Role,
    /// How long the lease lasts without a heartbeat.
    pub ttl: Duration,
}

/// One lease as `strata status` shows it.
#[derive(Debug, Clone, Serialize, FromRow, PartialEq, Eq)]
pub struct LeaseRow {
    pub id: i64,
    pub node: String,
    pub role: String,
    pub host: String,
    pub pid: i64,
    /// Unix milliseconds, database clock.
    pub started_at: i64,
    pub renewed_at: i64,
    pub expires_at: i64,
    /// Claims it holds: archive moves, backup claims, volumes being written, runs.
    pub claims: i64,
    /// 1 while it holds (database clock), else 0.
    pub live: i64,
}

/// The process's current lease, shared with its heartbeat task.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) id: Arc<AtomicI64>,
    pub(super) owner: Owner,
}

/// This process's current lease id, for stores that stamp it on their temporaries; follows
/// the heartbeat when it has to take a new lease.
#[derive(Debug, Clone)]
pub struct LeaseToken(Arc<AtomicI64>);

impl LeaseToken {
    /// A token that never changes (stores used without a locator, tests).
    pub fn fixed(id: i64) -> LeaseToken {
        LeaseToken(Arc::new(AtomicI64::new(id)))
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The SQL condition "lease `token` (an expression) is held now".
pub(super) fn holds(dialect: Dialect, token: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM leases WHERE leases.id = {token} AND leases.expires_at > {})",
        dialect.now_ms()
    )
}

/// Expired leases are forgotten this long after expiry (their claims are recovered long
/// before; `strata status` shows recently seen nodes).
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

async fn take(pool: &AnyPool, dialect: Dialect, owner: &Owner) -> Result<i64, sqlx::Error> {
    let now = dialect.now_ms();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM leases WHERE expires_at < {now} - $1"
    )))
    .bind(FORGET_AFTER_MS)
    .execute(pool)
    .await?;
    // Only the dialect's clock expression is spliced in; values are bound.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO leases (node, role, host, pid, started_at, renewed_at, expires_at) \
         VALUES ($1, $2, $3, $4, {now}, {now}, {now} + $5) RETURNING id"
    )))
    .bind(&owner.node)
    .bind(owner.role.as_str())
    .bind(&owner.host)
    .bind(i64::from(std::process::id()))
    .bind(owner.ttl.as_millis() as i64)
    .fetch_one(pool)
    .await
}

/// Renews lease `id` unless it has expired; false when it was lost.
async fn renew(
    pool: &AnyPool,
    dialect: Dialect,
    id: i64,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let now = dialect.now_ms();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE leases SET renewed_at = {now}, expires_at = {now} + $1 \
         WHERE id = $2 AND expires_at > {now}"
    )))
    .bind(ttl.as_millis() as i64)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Says that lease `id` was lost (the heartbeat found it expired, or a run that failed
/// found it so): what ran under it does not commit.
pub fn report_lost(id: i64) {
    error!(
        lease = id,
        "this process's lease expired; its work in progress will not commit"
    );
}

/// The heartbeat: renews the lease three times per lifetime. A lease found expired (the
/// process stalled, or the database was away longer than the lease) is never revived, since
/// another process may have taken over its claims: work under it fails its fenced commits,
/// and the process takes a new lease for new work.
pub(super) fn spawn_heartbeat(
    pool: AnyPool,
    dialect: Dialect,
    held: Arc<Held>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ttl = held.owner.ttl;
        loop {
            tokio::time::sleep(ttl / 3).await;
            let id = held.id.load(Ordering::SeqCst);
            match renew(&pool, dialect, id, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    report_lost(id);
                    match take(&pool, dialect, &held.owner).await {
                        Ok(new) => {
                            held.id.store(new, Ordering::SeqCst);
                            info!(lease = new, "took a new lease");
                        }
                        Err(e) => warn!(error = %e, "cannot take a new lease; trying again"),
                    }
                }
                Err(e) => {
                    warn!(lease = id, error = %e, "cannot renew this process's lease; trying again")
                }
            }
        }
    })
}

impl Locator {
    /// Takes this process's first lease (at open).
    pub(super) async fn take_first_lease(
        pool: &AnyPool,
        dialect: Dialect,
        owner: Owner,
    ) -> Result<Arc<Held>, LocatorError> {
        let id = take(pool, dialect, &owner).await.map_err(err)?;
        Ok(Arc::new(Held {
            id: Arc::new(AtomicI64::new(id)),
            owner,
        }))
    }

    /// This process's lease: the token its claims and temporaries carry.
    pub fn lease(&self) -> i64 {
        self.held.id.load(Ordering::SeqCst)
    }

    /// This process's lease as a token that follows renewals into a new lease.
    pub fn lease_token(&self) -> LeaseToken {
        LeaseToken(self.held.id.clone())
    }

    /// The leases other processes hold now: their temporaries and claims are in use. (This
    /// process's own leftovers, from a run that failed part-way, are its own to clean.)
    pub async fn others_live_leases(&self) -> Result<HashSet<i64>, LocatorError> {
        let own = self.lease();
        let mut live = self.live_leases().await?;
        live.remove(&own);
        Ok(live)
    }

    /// This process's node id.
    pub fn node(&self) -> &str {
        &self.held.owner.node
    }

    /// Ends this process's lease (a clean exit): its claims are free for others at once.
    pub(super) async fn end_lease(&self) {
        if let Err(e) = sqlx::query("DELETE FROM leases WHERE id = $1")
            .bind(self.lease())
            .execute(&self.pool)
            .await
        {
            warn!(lease = self.lease(), error = %e, "cannot end this process's lease; it expires by itself");
        }
    }

    /// Makes this process's lease expire now, as if its heartbeats had stopped (tests only).
    #[cfg(test)]
    pub(crate) async fn expire_lease_for_test(&self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE leases SET expires_at = {} - 1 WHERE id = $1",
            self.dialect.now_ms()
        )))
        .bind(self.lease())
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Whether lease `id` holds now (the database's clock).
    pub async fn lease_holds(&self, id: i64) -> Result<bool, LocatorError> {
        Ok(self.live_leases().await?.contains(&id))
    }

    /// The leases that hold now.
    pub async fn live_leases(&self) -> Result<HashSet<i64>, LocatorError> {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM leases WHERE expires_at > {}",
            self.dialect.now_ms()
        )))
        .fetch_all(&self.pool)
        .await
        .map(|ids| ids.into_iter().collect())
        .map_err(err)
    }

    /// Whether a claim stamped with `lease` belongs to a process other than this one that
    /// still holds its lease (so it is not ours to recover).
    pub fn held_by_other(&self, lease: Option<i64>, live: &HashSet<i64>) -> bool {
        lease.is_some_and(|l| l != self.lease() && live.contains(&l))
    }

    /// Leases held now or expired in the last `recent_ms`, newest first, with how many claims
    /// each still has.
    pub async fn recent_leases(&self, recent_ms: i64) -> Result<Vec<LeaseRow>, LocatorError> {
        sqlx::query_as::<_, LeaseRow>(sqlx::AssertSqlSafe(format!(
            "SELECT l.id, l.node, l.role, l.host, l.pid, l.started_at, l.renewed_at, \
               l.expires_at, \
               (SELECT COUNT(*) FROM archive_jobs a WHERE a.lease = l.id) \
               + (SELECT COUNT(*) FROM backup_queue b WHERE b.lease = l.id \
                  AND b.container IS NOT NULL) \
               + (SELECT COUNT(*) FROM volumes v WHERE v.lease = l.id AND v.state = 'writing') \
               + (SELECT COUNT(*) FROM job_runs r WHERE r.lease = l.id \
                  AND r.outcome = 'running') AS claims, \
               CASE WHEN l.expires_at > {now} THEN 1 ELSE 0 END AS live \
             FROM leases l WHERE l.expires_at > {now} - $1 ORDER BY l.id DESC",
            now = self.dialect.now_ms()
        )))
        .bind(recent_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(err)
    }
}
