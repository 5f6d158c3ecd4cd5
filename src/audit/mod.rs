//! The audit trail (issue #18, item 6): who stored, queried, retrieved, deleted or
//! administered what, when, from where, and with which outcome. Every entry goes to the
//! locator's append-only `audit_log` (stores and deletes in their own transactions, the
//! rest through [`Auditor::record`]) and, with `[audit] syslog`, as a DICOM audit message
//! (PS3.15 A.5) in an RFC 5424 line over UDP.
//!
//! Viewers fetch a study one frame or instance at a time: repeated reads or queries of the
//! same study by the same caller and address within [`FOLD`] are one entry, the first.

pub mod atna;
mod syslog;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::locator::audit::AuditRow;
use crate::locator::{now_millis, Locator};
use crate::metrics;
use crate::service::Principal;

pub use syslog::{Syslog, SyslogError};

/// Repeats of an access within this long are folded into its first entry.
pub const FOLD: Duration = Duration::from_secs(60);
/// Accesses remembered for folding; past this many the memory starts over.
const REMEMBERED: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Stored,
    Queried,
    Retrieved,
    Deleted,
    /// An IOCM rejection note hid instances.
    Rejected,
    /// A study's or patient's attributes were corrected.
    Updated,
    /// An admin command (job) ran.
    Admin,
    /// The server started or stopped.
    Started,
    Stopped,
}

impl Event {
    /// The locator's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Stored => "stored",
            Event::Queried => "queried",
            Event::Retrieved => "retrieved",
            Event::Deleted => "deleted",
            Event::Rejected => "rejected",
            Event::Updated => "updated",
            Event::Admin => "admin",
            Event::Started => "started",
            Event::Stopped => "stopped",
        }
    }
}

/// Who asks, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The peer's address; `None` for the operator's commands.
    pub address: Option<SocketAddr>,
}

impl Caller {
    pub fn new(principal: Principal, address: Option<SocketAddr>) -> Caller {
        Caller { principal, address }
    }

    /// The audit's name for the principal: the AE title as is (as stored instances name
    /// their Source AE), `user NAME`, `anonymous`, `operator`.
    pub fn who(&self) -> String {
        match &self.principal {
            Principal::Ae(aet) => aet.clone(),
            Principal::User(name) => format!("user {name}"),
            Principal::Anonymous => "anonymous".into(),
            Principal::Operator => "operator".into(),
        }
    }

    /// The peer's IP address (the port changes with every connection), or empty.
    pub fn ip(&self) -> String {
        self.address
            .map(|a| canonical(a.ip()).to_string())
            .unwrap_or_default()
    }
}

/// An IPv4 address mapped into IPv6 reads as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One entry, as [`Auditor::record`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub event: Event,
    pub who: &'a str,
    pub address: &'a str,
    pub study: Option<&'a str>,
    pub patient: Option<&'a str>,
    /// What a query searched (its information model or level).
    pub object: &'a str,
    /// What was asked (the query's keys, the retrieve's scope and size) or why.
    pub detail: &'a str,
    pub failed: bool,
}

impl<'a> Entry<'a> {
    pub fn new(event: Event, who: &'a str) -> Entry<'a> {
        Entry {
            event,
            who,
            address: "",
            study: None,
            patient: None,
            object: "",
            detail: "",
            failed: false,
        }
    }
}

/// An access, for folding repeats: event, caller, address, and the study (or, without one,
/// what was asked).
type AccessKey = (Event, String, String, String);

/// Appends audit entries; one per process, shared by every service.
#[derive(Debug, Clone)]
pub struct Auditor {
    locator: Arc<Locator>,
    syslog: Option<Arc<Syslog>>,
    /// When each recent access was first recorded.
    recent: Arc<Mutex<HashMap<AccessKey, Instant>>>,
}

/// How the audit names whoever runs a `strata` command: `cli:USER@node`.
pub fn operator(node: &str) -> String {
    format!(
        "cli:{}@{node}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

impl Auditor {
    /// The auditor of a configuration: its locator, and `[audit] syslog` when set.
    pub fn open(
        config: &crate::config::Config,
        locator: Arc<Locator>,
    ) -> Result<Auditor, SyslogError> {
        let syslog = match config.audit.syslog.as_str() {
            "" => None,
            url => Some(Arc::new(Syslog::open(url, &config.dicom.aet)?)),
        };
        Ok(Auditor::new(locator, syslog))
    }

    /// The auditor of an admin command: as [`Auditor::open`], but a syslog collector that
    /// cannot be reached (its name does not resolve) only costs a warning: the command's
    /// entries still go to the locator.
    pub fn for_command(config: &crate::config::Config, locator: Arc<Locator>) -> Auditor {
        match Auditor::open(config, locator.clone()) {
            Ok(auditor) => auditor,
            Err(error) => {
                tracing::warn!(%error, "audit entries go to the locator only");
                Auditor::new(locator, None)
            }
        }
    }

    pub fn new(locator: Arc<Locator>, syslog: Option<Arc<Syslog>>) -> Auditor {
        Auditor {
            locator,
            syslog,
            recent: Arc::default(),
        }
    }

    /// Records `entry` in the locator and sends it to syslog. A failure to record is logged
    /// and counted, never the caller's failure.
    pub async fn record(&self, entry: &Entry<'_>) {
        let at = now_millis();
        metrics::AUDIT_ENTRIES.inc(&[entry.event.as_str()]);
        let row = AuditRow {
            at,
            event: entry.event.as_str(),
            who: entry.who,
            address: entry.address,
            study_instance_uid: entry.study,
            sop_instance_uid: None,
            detail: entry.detail,
            outcome: if entry.failed { "failed" } else { "ok" },
        };
        if let Err(error) = self.locator.append_audit(&row).await {
            metrics::AUDIT_FAILURES.inc(&["locator"]);
            tracing::warn!(event = entry.event.as_str(), %error, "cannot append to the audit log");
        }
        self.send(entry, at);
    }

    /// Sends `entry` to syslog only (its row was written with the data it is about).
    pub fn send(&self, entry: &Entry<'_>, at_ms: i64) {
        if let Some(syslog) = &self.syslog {
            syslog.send(entry, at_ms);
        }
    }

    /// Records an access (a query or a retrieve), unless the same caller accessed the same
    /// study the same way within [`FOLD`]. Failures are always recorded.
    pub async fn record_access(&self, entry: &Entry<'_>) {
        if !entry.failed && self.seen_recently(entry) {
            return;
        }
        self.record(entry).await;
    }

    fn seen_recently(&self, entry: &Entry<'_>) -> bool {
        let key = (
            entry.event,
            entry.who.to_string(),
            entry.address.to_string(),
            // Queries without a study differ by what they ask.
            entry
                .study
                .map_or_else(|| format!("?{}", entry.detail), str::to_string),
        );
        let now = Instant::now();
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        if let Some(at) = recent.get(&key) {
            if now.duration_since(*at) < FOLD {
                return true;
            }
        }
        if recent.len() >= REMEMBERED {
            recent.retain(|_, at| now.duration_since(*at) < FOLD);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(key, now);
        false
    }
}
