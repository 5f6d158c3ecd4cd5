//! HTTP connections, bounded: at most `[web] max_connections` open at once (more wait in
//! the listen backlog), and each closed when it does not send a whole request head within
//! `[web] header_timeout_secs`, counted from when it opens and from the end of each
//! response. A client that trickles its headers (slowloris) or keeps an idle keep-alive
//! connection holds its slot that long at most. On shutdown no connection is accepted, each
//! finishes the request it is serving, and whatever still runs after the grace period is
//! dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// How long requests still running at shutdown may take.
    pub grace: Duration,
}

/// Serves `app` on the connections of `listener` until `shutdown` turns true.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stopping(&mut shutdown) => break,
        };
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => break,
        };
        let connection =
            http1.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                debug!(%error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            grace_secs = limits.grace.as_secs(),
            "HTTP requests still running after the grace period: closed"
        );
    }
    connections.abort_all();
}

/// Returns once `shutdown` is true (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
