//! `strata locator migrate`: moves a stopped site's locator into a new, empty database (an
//! SQLite site outgrowing one node moves to PostgreSQL), checks every table on both sides,
//! and says which config line switches the site over.

use serde::Serialize;

use crate::config::{Config, LocatorConfig};
use crate::locator::migrate::{copy_site, MigrateError, TableCheck};
use crate::locator::{without_password, Locator, LocatorError, Owner, Role};

/// What a migration copied and checked.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateSummary {
    /// The target, password hidden.
    pub to: String,
    /// Every table: rows and the SHA-256 of its rows, equal on both sides.
    pub tables: Vec<TableCheck>,
    pub seconds: f64,
    /// The `[locator]` line that switches the site to the new database.
    pub config_line: String,
}

/// Why the site's locator was not moved.
#[derive(Debug, thiserror::Error)]
pub enum LocatorCommandError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("{node} ({role}, pid {pid} on {host}) holds a lease on this site: stop every node and job before migrating")]
    SiteRunning {
        node: String,
        role: String,
        pid: i64,
        host: String,
    },
    #[error("the target {0} is the site's own locator")]
    SameDatabase(String),
}

/// Copies the locator of `config` into the empty database at `to` and checks it.
pub async fn migrate_locator(
    config: &Config,
    to: &str,
    mut progress: impl FnMut(&TableCheck),
) -> Result<MigrateSummary, LocatorCommandError> {
    let started = std::time::Instant::now();
    if to == config.locator.url {
        return Err(LocatorCommandError::SameDatabase(without_password(to)));
    }
    let from = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let own = from.lease();
    if let Some(other) = from
        .recent_leases(0)
        .await?
        .into_iter()
        .find(|l| l.id != own && l.live == 1)
    {
        from.close().await;
        return Err(LocatorCommandError::SiteRunning {
            node: other.node,
            role: other.role,
            pid: other.pid,
            host: other.host,
        });
    }
    let target = LocatorConfig {
        url: to.to_string(),
        max_connections: 4,
        sqlite_cache_mib: config.locator.sqlite_cache_mib,
    };
    let to_locator = Locator::open(&target, Owner::of(&config.node, Role::Cli)).await?;
    let result = copy_site(&from, &to_locator, &mut progress).await;
    to_locator.close().await;
    from.close().await;
    Ok(MigrateSummary {
        to: without_password(to),
        tables: result?,
        seconds: started.elapsed().as_secs_f64(),
        config_line: format!("url = \"{to}\""),
    })
}

impl std::fmt::Display for MigrateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.tables {
            writeln!(
                f,
                "{:<13} {:>10} rows  sha256 {}",
                t.table, t.rows, t.sha256
            )?;
        }
        writeln!(
            f,
            "copied and checked in {:.1} s into {}; switch every node's [locator] to:",
            self.seconds, self.to
        )?;
        writeln!(f, "{}", self.config_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            without_password("postgres://strata:s3cret@db:5432/pacs"),
            "postgres://strata:***@db:5432/pacs"
        );
        assert_eq!(
            without_password("postgres://strata@localhost/pacs?host=/run/postgresql"),
            "postgres://strata@localhost/pacs?host=/run/postgresql"
        );
    }
}
