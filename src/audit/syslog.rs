//! Sending audit messages to a syslog collector over UDP (RFC 5426): one datagram per
//! entry, from a non-blocking socket, so that a slow or absent collector never holds a
//! request up. A message that cannot be sent is dropped and counted
//! (`strata_audit_failures_total{sink="syslog"}`); the locator's row stays.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

use super::atna::{self, Source};
use super::Entry;
use crate::metrics;

/// Why `[audit] syslog` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("[audit] syslog must be udp://HOST:PORT, not {0:?}")]
    Url(String),
    #[error("cannot resolve the syslog collector {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("cannot open a UDP socket for syslog: {0}")]
    Socket(#[source] std::io::Error),
}

/// A connected UDP socket to the collector.
#[derive(Debug)]
pub struct Syslog {
    socket: UdpSocket,
    source: Source,
}

impl Syslog {
    /// Opens the socket for `url` (`udp://host:port`); `aet` names this application.
    pub fn open(url: &str, aet: &str) -> Result<Syslog, SyslogError> {
        let target = url
            .strip_prefix("udp://")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SyslogError::Url(url.to_string()))?;
        let address: SocketAddr = target
            .to_socket_addrs()
            .map_err(|source| SyslogError::Resolve {
                target: target.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| SyslogError::Url(url.to_string()))?;
        let local: SocketAddr = if address.is_ipv4() {
            "0.0.0.0:0".parse().expect("a literal address")
        } else {
            "[::]:0".parse().expect("a literal address")
        };
        let socket = UdpSocket::bind(local).map_err(SyslogError::Socket)?;
        socket.connect(address).map_err(SyslogError::Socket)?;
        socket.set_nonblocking(true).map_err(SyslogError::Socket)?;
        Ok(Syslog {
            socket,
            source: Source {
                aet: aet.to_string(),
                host: crate::config::host_name(),
                pid: std::process::id(),
            },
        })
    }

    /// Sends one entry; never waits.
    pub fn send(&self, entry: &Entry<'_>, at_ms: i64) {
        let line = atna::syslog_line(entry, at_ms, &self.source);
        if let Err(error) = self.socket.send(line.as_bytes()) {
            metrics::AUDIT_FAILURES.inc(&["syslog"]);
            tracing::debug!(%error, "audit message not sent to syslog");
        }
    }
}
