//! The accept loop: a bounded number of associations, ARTIM on negotiation, graceful shutdown.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::access::AccessPolicy;
use super::association::{self, RetrieveSettings, Timeouts};
use super::handler::{AssociationContext, Services};
use super::negotiation::Negotiator;

/// Everything the network layer needs to know, decided by the caller.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub policy: AccessPolicy,
    /// Abstract syntaxes (SOP classes) we accept presentation contexts for.
    pub abstract_syntaxes: Vec<String>,
    /// Transfer syntaxes we accept; the requestor's preference order picks among them.
    pub transfer_syntaxes: Vec<String>,
    pub max_associations: usize,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub timeouts: Timeouts,
    pub retrieve: RetrieveSettings,
    pub shutdown_grace: Duration,
}

type Options = ServerAssociationOptions<'static, AccessPolicy, Negotiator>;

/// Serves associations on `listener` until `shutdown` turns true, then waits up to the grace
/// period for in-flight operations before returning.
pub async fn serve<S: Services>(
    listener: TcpListener,
    config: NetConfig,
    services: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(config.policy.clone())
        .ae_title(config.policy.our_aet().to_string())
        .max_pdu_length(config.max_pdu_length)
        // Strict: a PDU longer than we advertised aborts instead of growing a buffer.
        .strict(true)
        .with_negotiation(Negotiator);
    for uid in &config.abstract_syntaxes {
        options = options.with_abstract_syntax(Cow::Owned(uid.clone()));
    }
    for uid in &config.transfer_syntaxes {
        options = options.with_transfer_syntax(Cow::Owned(uid.clone()));
    }
    let options: Arc<Options> = Arc::new(options);
    let policy = Arc::new(config.policy.clone());
    let permits = Arc::new(Semaphore::new(config.max_associations));
    // Connections turned away still get a proper A-ASSOCIATE-RJ, but only this many at once.
    let reject_permits = Arc::new(Semaphore::new(config.max_associations.max(4)));
    let ids = AtomicU64::new(1);
    let mut tasks = JoinSet::new();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(handle_connection(
                    stream,
                    peer,
                    id,
                    permit,
                    options.clone(),
                    services.clone(),
                    policy.clone(),
                    config.clone(),
                    shutdown.clone(),
                ));
            }
            Err(_) => match reject_permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    warn!(%peer, limit = config.max_associations, "association limit reached: rejecting");
                    tasks.spawn(reject_busy(stream, config.artim_timeout, permit));
                }
                Err(_) => drop(stream),
            },
        }
    }

    // Close the socket now so new connections are refused at once rather than queued.
    drop(listener);
    info!(
        in_flight = tasks.len(),
        "stopped accepting; waiting for in-flight operations"
    );
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = tasks.len(),
            "grace period over: dropping remaining associations"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle_connection<S: Services>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    _permit: OwnedSemaphorePermit,
    options: Arc<Options>,
    services: Arc<S>,
    policy: Arc<AccessPolicy>,
    config: NetConfig,
    shutdown: watch::Receiver<bool>,
) {
    let assoc =
        match tokio::time::timeout(config.artim_timeout, options.establish_async(stream)).await {
            Err(_) => {
                info!(association = id, %peer, "ARTIM expired before A-ASSOCIATE-RQ");
                return;
            }
            Ok(Err(e)) => {
                // dicom-ul has already sent the A-ASSOCIATE-RJ or A-ABORT the error calls for.
                info!(association = id, %peer, reason = %e, "association refused");
                return;
            }
            Ok(Ok(assoc)) => assoc,
        };
    let ctx = AssociationContext {
        id,
        calling_ae: dicom_ul::association::Association::peer_ae_title(&assoc)
            .trim()
            .to_string(),
        peer,
    };
    association::serve(
        assoc,
        ctx,
        services,
        policy,
        config.timeouts,
        config.retrieve.clone(),
        shutdown,
    )
    .await;
}

/// Reads the A-ASSOCIATE-RQ and answers A-ASSOCIATE-RJ (transient, local limit exceeded).
async fn reject_busy(mut stream: TcpStream, artim: Duration, _permit: OwnedSemaphorePermit) {
    let mut buffer = bytes_buffer();
    let read = tokio::time::timeout(
        artim,
        // Strict: a bogus length must not make the buffer grow.
        dicom_ul::association::read_pdu_from_wire_async(&mut stream, &mut buffer, 65_536, true),
    )
    .await;
    if !matches!(read, Ok(Ok(Pdu::AssociationRQ(_)))) {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = tokio::time::timeout(artim, stream.write_all(&out)).await;
    }
}

fn bytes_buffer() -> bytes::BytesMut {
    bytes::BytesMut::with_capacity(16 * 1024)
}
