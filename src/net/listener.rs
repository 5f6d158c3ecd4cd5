//! The accept loop: a bounded number of associations, ARTIM on negotiation, graceful shutdown;
//! on the TLS listener the TLS handshake first, within the same ARTIM timeout.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::AsyncServerAssociation;
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

use super::access::Admission;
use super::association::{self, RetrieveSettings, Timeouts};
use super::handler::{AssociationContext, Services};
use super::negotiation::Negotiator;
use super::Wire;
use crate::metrics;

/// Everything the network layer needs to know, decided by the caller.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub admission: Admission,
    /// Abstract syntaxes (SOP classes) we accept presentation contexts for.
    pub abstract_syntaxes: Vec<String>,
    /// Transfer syntaxes we accept; the requestor's preference order picks among them.
    pub transfer_syntaxes: Vec<String>,
    pub max_associations: usize,
    /// Permits for `max_associations`, shared by the plain and the TLS listener.
    pub permits: Arc<Semaphore>,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub timeouts: Timeouts,
    pub retrieve: RetrieveSettings,
    pub shutdown_grace: Duration,
    /// Where open associations take commitment reports, shared by the listeners.
    pub outbox: Arc<super::commitment::Outbox>,
}

/// Association numbers, unique in the process across listeners (commitment reports find
/// their association by it).
static NEXT_ASSOCIATION: AtomicU64 = AtomicU64::new(1);

type Options = ServerAssociationOptions<'static, Admission, Negotiator>;

/// Serves associations on `listener` (over TLS with `tls`) until `shutdown` turns true, then
/// waits up to the grace period for in-flight operations before returning.
pub async fn serve<S: Services>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: NetConfig,
    services: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(config.admission.clone())
        .ae_title(config.admission.our_aet().to_string())
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
    let over_tls = tls.is_some();
    if let Some(tls) = tls {
        options = options.tls_config(tls);
    }
    let options: Arc<Options> = Arc::new(options);
    let admission = Arc::new(config.admission.clone());
    let permits = config.permits.clone();
    // Connections turned away still get a proper A-ASSOCIATE-RJ, but only this many at once.
    let reject_permits = Arc::new(Semaphore::new(config.max_associations.max(4)));
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
                let id = NEXT_ASSOCIATION.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(handle_connection(
                    stream,
                    over_tls,
                    peer,
                    id,
                    permit,
                    options.clone(),
                    services.clone(),
                    admission.clone(),
                    config.clone(),
                    shutdown.clone(),
                ));
            }
            Err(_) => match reject_permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics::DICOM_ASSOCIATIONS.inc(&["busy"]);
                    warn!(%peer, limit = config.max_associations, "association limit reached: rejecting");
                    tasks.spawn(reject_busy(stream, config.artim_timeout, permit));
                }
                Err(_) => {
                    metrics::DICOM_ASSOCIATIONS.inc(&["busy"]);
                    drop(stream)
                }
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
    over_tls: bool,
    peer: SocketAddr,
    id: u64,
    _permit: OwnedSemaphorePermit,
    options: Arc<Options>,
    services: Arc<S>,
    admission: Arc<Admission>,
    config: NetConfig,
    shutdown: watch::Receiver<bool>,
) {
    let artim = config.artim_timeout;
    let accepted = Accepted {
        id,
        peer,
        services,
        admission,
        config,
        shutdown,
    };
    if over_tls {
        // The TLS handshake counts against ARTIM like the A-ASSOCIATE-RQ.
        if let Some(assoc) = negotiate(options.establish_tls_async(stream), artim, id, peer).await {
            accepted.run(assoc).await;
        }
    } else if let Some(assoc) = negotiate(options.establish_async(stream), artim, id, peer).await {
        accepted.run(assoc).await;
    }
}

/// Awaits the association negotiation within ARTIM; `None` (logged) if it failed.
async fn negotiate<W: Wire>(
    establish: impl std::future::Future<
        Output = Result<AsyncServerAssociation<W>, dicom_ul::association::Error>,
    >,
    artim: Duration,
    id: u64,
    peer: SocketAddr,
) -> Option<AsyncServerAssociation<W>> {
    let negotiated = tokio::time::timeout(artim, establish).await;
    let result = match &negotiated {
        Ok(Ok(_)) => "accepted",
        _ => "rejected",
    };
    metrics::DICOM_ASSOCIATIONS.inc(&[result]);
    match negotiated {
        Err(_) => {
            info!(association = id, %peer, "ARTIM expired before A-ASSOCIATE-RQ");
            None
        }
        Ok(Err(e)) => {
            // dicom-ul has already sent the A-ASSOCIATE-RJ or A-ABORT the error calls for (a
            // failed TLS handshake has had its alert).
            info!(association = id, %peer, reason = %e, "association refused");
            None
        }
        Ok(Ok(assoc)) => Some(assoc),
    }
}

/// What an accepted connection needs once its association is established.
struct Accepted<S> {
    id: u64,
    peer: SocketAddr,
    services: Arc<S>,
    admission: Arc<Admission>,
    config: NetConfig,
    shutdown: watch::Receiver<bool>,
}

impl<S: Services> Accepted<S> {
    async fn run<W: Wire>(self, assoc: AsyncServerAssociation<W>) {
        let _open = metrics::Held::new(&metrics::DICOM_ASSOCIATIONS_OPEN);
        let ctx = AssociationContext {
            id: self.id,
            calling_ae: dicom_ul::association::Association::peer_ae_title(&assoc)
                .trim()
                .to_string(),
            peer: self.peer,
        };
        association::serve(
            assoc,
            ctx,
            self.services,
            self.admission,
            self.config.timeouts,
            self.config.retrieve.clone(),
            self.config.outbox.clone(),
            self.shutdown,
        )
        .await;
    }
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
