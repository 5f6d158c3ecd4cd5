//! Wires the configuration, stores, locator and network layer into a running server, and
//! shuts it down cleanly: stop accepting, let in-flight operations finish, close the locator.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::archive::{Archive, ArchiveError, LocalStore};
use crate::audit::{Auditor, Caller};
use crate::backup::{self, Backup, BackupError, BackupSchedule};
use crate::commitment::{CommitmentSettings, StorageCommitment};
use crate::config::Config;
use crate::config::RenditionPolicy;
use crate::convert::Converter;
use crate::ingest::Ingest;
use crate::ingest::IngestSink;
use crate::locator::{Locator, LocatorError, Owner, Role};
use crate::model::sop_class::{
    PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STORAGE_COMMITMENT_PUSH, STORAGE_SOP_CLASSES,
    STUDY_ROOT_GET, STUDY_ROOT_MOVE,
};
use crate::model::transfer_syntax::{STORAGE_TRANSFER_SYNTAXES, VERIFICATION_SOP_CLASS};
use crate::net::access::Admission;
use crate::net::commitment::{deliver_reports, Outbox, ReportSettings};
use crate::net::{
    self, tls, AssociationContext, CommitmentReport, CommitmentRequest, FindRequest, NetConfig,
    RetrieveRequest, RetrieveSettings, Services, Timeouts,
};
use crate::online::{OnlineError, OnlineStore};
use crate::query::{Matches, Query, QueryOptions, PATIENT_ROOT_FIND, STUDY_ROOT_FIND};
use crate::reader::Reader;
use crate::renditions::{Policy, Renditions};
use crate::retrieve::{Instances, Retrieve, RetrieveOptions};
use crate::service::metrics::Metrics;
use crate::service::site::Site;
use crate::service::{AccessPolicy, Principal};
use crate::service::{Outcome, StoreRequest, StoreStart};
use crate::tiering::{self, TieringSchedule};
use crate::web::{self, WebServices};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error(transparent)]
    Syslog(#[from] crate::audit::SyslogError),
    #[error(transparent)]
    Renditions(#[from] crate::renditions::RenditionError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The addresses the server accepts connections on (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// DIMSE, plain.
    pub dicom: SocketAddr,
    /// DIMSE over TLS, when `[dicom] tls_listen` is set.
    pub tls: Option<SocketAddr>,
    /// HTTP (DICOMweb), when `[web] listen` is set.
    pub web: Option<SocketAddr>,
}

/// Runs the server until `shutdown` turns true. `on_listening` is told the bound addresses
/// once connections can be accepted.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(Listening),
) -> Result<(), ServerError> {
    let locator =
        Arc::new(Locator::open(&config.locator, Owner::of(&config.node, Role::Server)).await?);
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, &locator).await?);
    let archive = Arc::new(Archive::open(&config.archive).await?);
    // Every read falls back to a backup copy when the primary is missing or damaged.
    let reader = Reader::new(online.clone(), archive.clone()).with_recovery(
        locator.clone(),
        LocalStore::open(&config.backup.nearline_dir)?,
    );
    let (listener, addr) = bind(config.dicom.listen).await?;
    let tls = match (
        &config.dicom.tls_listen,
        &config.dicom.tls_cert,
        &config.dicom.tls_key,
    ) {
        (Some(at), Some(cert), Some(key)) => {
            let tls = tls::server_config(cert, key, config.dicom.tls_ca.as_deref())?;
            Some((bind(*at).await?, tls))
        }
        _ => None,
    };
    let web_tls = match (&config.web.tls_cert, &config.web.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key, None)?),
        _ => None,
    };
    let web_listener = match config.web.listen {
        Some(at) => Some(
            web::bind(at)
                .await
                .map_err(|source| ServerError::Bind { addr: at, source })?,
        ),
        None => None,
    };
    let commitment = Arc::new(StorageCommitment::new(
        locator.clone(),
        reader.clone(),
        CommitmentSettings {
            retry: std::time::Duration::from_secs(config.commitment.retry_secs.max(1)),
            give_up: std::time::Duration::from_secs_f64(config.commitment.give_up_hours * 3600.0),
            poll: std::time::Duration::from_secs(2),
        },
    ));
    let auditor = Auditor::open(&config, locator.clone())?;
    let renditions = open_renditions(&config)?;
    let mut retrieve = Retrieve::new(
        locator.clone(),
        reader.clone(),
        RetrieveOptions {
            max_instances: config.retrieve.max_instances,
            prefetch: config.retrieve.prefetch,
            frame_decoders: config.retrieve.frame_decoders(),
            resolution_levels: config.retrieve.resolution_levels,
        },
    )
    .with_auditor(auditor.clone());
    if let Some(cache) = &renditions {
        retrieve = retrieve.with_renditions(cache.clone());
    }
    let services = Arc::new(Strata {
        commitment: commitment.clone(),
        ingest: Ingest::new(
            online.clone(),
            locator.clone(),
            config.storage.duplicate_policy,
        )
        .backup_on_receive(config.backup.enqueue_on_receive)
        .max_instance_mb(config.storage.max_instance_mb)
        .receiving_ae(&config.dicom.aet)
        .with_auditor(auditor.clone()),
        retrieve,
        query: Query::new(
            locator.clone(),
            QueryOptions {
                our_aet: config.dicom.aet.clone(),
                max_matches: config.query.max_matches,
                case_insensitive_names: config.query.case_insensitive_names,
            },
        )
        .with_auditor(auditor.clone()),
    });
    // One access policy for every front end.
    let policy = Arc::new(AccessPolicy::from_config(&config));
    let mut net_config = net_config(&config, policy.clone());
    if let (Some(ca), Some(cert), Some(key)) = (
        &config.dicom.tls_ca,
        &config.dicom.tls_cert,
        &config.dicom.tls_key,
    ) {
        net_config.retrieve.tls = Some(tls::client_config(ca, cert, key)?);
    }
    let converter = Arc::new(
        Converter::new(
            locator.clone(),
            online.clone(),
            archive.clone(),
            reader.clone(),
        )
        .with_compression(config.archive.compression)
        .with_throttle(config.tiering.throttle_mb_s),
    );
    let tiering = crate::config::parse_window(&config.tiering.window).map(|window| {
        let schedule = TieringSchedule {
            window,
            min_age_days: config.tiering.min_age_days,
            poll: std::time::Duration::from_secs(config.tiering.poll_secs.max(1)),
        };
        tokio::spawn(tiering::run(
            converter.clone(),
            locator.clone(),
            schedule,
            shutdown.clone(),
        ))
    });
    // Always running: it re-creates damaged primaries found by reads; it works through the
    // backup queue only inside its window.
    let backup = Arc::new(
        Backup::new(
            locator.clone(),
            reader.clone(),
            &config.backup.nearline_dir,
            converter.clone(),
            config.backup.throttle_mb_s,
        )?
        .with_format(config.backup.format, config.backup.roi_ratio),
    );
    let retention = spawn_retention(&config, &locator, converter, &backup, &auditor, &shutdown);
    let backup_worker = tokio::spawn(backup::run(
        backup,
        BackupSchedule {
            window: crate::config::parse_window(&config.backup.window),
            poll: std::time::Duration::from_secs(config.backup.poll_secs.max(1)),
        },
        shutdown.clone(),
    ));
    let checks = tokio::spawn(commitment.run_checks(shutdown.clone()));
    let reports = tokio::spawn(deliver_reports(
        services.clone(),
        net_config.outbox.clone(),
        ReportSettings {
            admission: net_config.admission.clone(),
            retrieve: net_config.retrieve.clone(),
            dimse_timeout: net_config.timeouts.dimse,
        },
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep_online_temporaries(
        online.clone(),
        locator.clone(),
        config.node.lease() * 2,
        shutdown.clone(),
    ));
    let site = Site::new(locator.clone(), Arc::new(config.clone()));
    let sampler = tokio::spawn(site.sampler().run(shutdown.clone()));
    let reads = tokio::spawn(crate::reader::count_reads_until(
        locator.clone(),
        shutdown.clone(),
    ));
    let renditions =
        renditions.map(|cache| tokio::spawn(cache.run(locator.clone(), shutdown.clone())));
    let tls_addr = tls.as_ref().map(|((_, at), _)| *at);
    let web_addr = web_listener.as_ref().map(|(_, at)| *at);
    let http = web_listener.map(|(listener, _)| {
        let services = WebServices {
            ingest: services.ingest.clone(),
            query: services.query.clone(),
            retrieve: services.retrieve.clone(),
            our_aet: config.dicom.aet.clone(),
            policy: policy.clone(),
            metrics: Arc::new(Metrics::new(locator.clone())),
            site: site.clone(),
        };
        let (web_config, grace) = (config.web.clone(), net_config.shutdown_grace);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            web::serve(listener, web_tls, &web_config, services, shutdown, grace).await
        })
    });
    info!(%addr, tls_addr = ?tls_addr, web_addr = ?web_addr, aet = %config.dicom.aet, online = %online.root().display(), "listening");
    let who = crate::audit::operator(locator.node());
    let started = format!("listening on {addr}");
    let entry = |event, detail| crate::audit::Entry {
        detail,
        ..crate::audit::Entry::new(event, &who)
    };
    auditor
        .record(&entry(crate::audit::Event::Started, &started))
        .await;
    on_listening(Listening {
        dicom: addr,
        tls: tls_addr,
        web: web_addr,
    });
    let plain = net::serve(
        listener,
        None,
        net_config.clone(),
        services.clone(),
        shutdown.clone(),
    );
    match tls {
        Some(((tls_listener, _), tls)) => {
            let over_tls = net::serve(tls_listener, Some(tls), net_config, services, shutdown);
            tokio::join!(plain, over_tls);
        }
        None => plain.await,
    }
    // They stop between two studies once shutdown is signalled.
    for worker in [tiering, retention].into_iter().flatten() {
        let _ = worker.await;
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    let _ = backup_worker.await;
    let _ = sweeper.await;
    let _ = sampler.await;
    let _ = reads.await;
    if let Some(renditions) = renditions {
        let _ = renditions.await;
    }
    let _ = checks.await;
    let _ = reports.await;
    // Reads that ended after the last count (retrieves, commitment checks).
    crate::reader::count_reads_in_locator(&locator).await;
    auditor
        .record(&entry(crate::audit::Event::Stopped, "shut down"))
        .await;
    locator.close().await;
    info!("stopped");
    Ok(())
}

/// The rendition cache, when `[renditions] cache_mb` is set.
fn open_renditions(config: &Config) -> Result<Option<Renditions>, ServerError> {
    let settings = &config.renditions;
    let Some(dir) = settings.dir.as_deref().filter(|_| settings.cache_mb > 0) else {
        return Ok(None);
    };
    let policy = match settings.policy {
        RenditionPolicy::Value => Policy::Value,
        RenditionPolicy::Lru => Policy::Lru,
    };
    let budget = settings.cache_mb.saturating_mul(1 << 20);
    Ok(Some(Renditions::open(dir, budget, policy)?))
}

/// The lifecycle worker (retention, rejected instances), when `[lifecycle]` has a window.
fn spawn_retention(
    config: &Config,
    locator: &Arc<Locator>,
    converter: Arc<Converter>,
    backup: &Arc<Backup>,
    auditor: &Auditor,
    shutdown: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    use crate::lifecycle::retention::{self, RetentionPolicy, RetentionSchedule};
    let policy = RetentionPolicy::from(&config.lifecycle);
    let window = crate::config::parse_window(&config.lifecycle.window)?;
    let deleter = crate::lifecycle::Deleter::new(locator.clone(), converter, backup.clone())
        .with_auditor(auditor.clone());
    Some(tokio::spawn(retention::run(
        Arc::new(deleter),
        locator.clone(),
        policy,
        RetentionSchedule {
            window,
            poll: std::time::Duration::from_secs(config.lifecycle.poll_secs.max(1)),
        },
        shutdown.clone(),
    )))
}

/// Every `every`, deletes the online temporaries of processes (of any node sharing the
/// online folder) whose lease has gone: a node killed part-way through a C-STORE leaves its
/// partial file until someone's lease outlives it, not until its own restart.
async fn sweep_online_temporaries(
    online: Arc<OnlineStore>,
    locator: Arc<Locator>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let in_use = match locator.live_leases().await {
            Ok(in_use) => in_use,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read leases; online temporaries not swept");
                continue;
            }
        };
        let online = online.clone();
        match tokio::task::spawn_blocking(move || online.remove_temporaries(&in_use)).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot sweep online temporaries"),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

fn net_config(config: &Config, policy: Arc<AccessPolicy>) -> NetConfig {
    let d = &config.dicom;
    let mut abstract_syntaxes: Vec<String> = [
        VERIFICATION_SOP_CLASS,
        STORAGE_COMMITMENT_PUSH,
        PATIENT_ROOT_FIND,
        STUDY_ROOT_FIND,
        PATIENT_ROOT_MOVE,
        STUDY_ROOT_MOVE,
        PATIENT_ROOT_GET,
        STUDY_ROOT_GET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    abstract_syntaxes.extend(STORAGE_SOP_CLASSES.iter().map(|(uid, _)| uid.to_string()));
    NetConfig {
        admission: Admission::new(d, policy),
        abstract_syntaxes,
        transfer_syntaxes: STORAGE_TRANSFER_SYNTAXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        max_associations: d.max_associations,
        permits: Arc::new(tokio::sync::Semaphore::new(d.max_associations)),
        max_pdu_length: d.max_pdu_length,
        artim_timeout: d.artim_timeout(),
        timeouts: Timeouts {
            dimse: d.dimse_timeout(),
            idle: d.idle_timeout(),
        },
        shutdown_grace: d.shutdown_grace(),
        retrieve: RetrieveSettings {
            move_associations: config.retrieve.move_associations,
            max_pdu_length: d.max_pdu_length,
            connect_timeout: std::time::Duration::from_secs(config.retrieve.connect_timeout_secs),
            tls: None,
            max_concurrent: config.retrieve.max_concurrent,
            slots: Arc::new(tokio::sync::Semaphore::new(config.retrieve.max_concurrent)),
        },
        outbox: Arc::new(Outbox::default()),
    }
}

/// A listener on `at`, and the address it is bound to (port 0 picks one).
async fn bind(at: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind { addr: at, source };
    let listener = TcpListener::bind(at).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// The audit's caller of an association.
fn caller(association: &AssociationContext) -> Caller {
    Caller::new(
        Principal::ae(&association.calling_ae),
        Some(association.peer),
    )
}

/// The DIMSE services Strata offers, each delegated to its module.
struct Strata {
    commitment: Arc<StorageCommitment>,
    ingest: Ingest,
    query: Query,
    retrieve: Retrieve,
}

impl Services for Strata {
    type Sink = IngestSink;
    type Matches = Matches;
    type Retrieval = Instances;

    async fn begin_store(
        &self,
        association: &AssociationContext,
        request: StoreRequest,
    ) -> StoreStart<IngestSink> {
        self.ingest.begin(&caller(association), request)
    }

    async fn begin_find(
        &self,
        association: &AssociationContext,
        request: FindRequest,
    ) -> Result<Matches, Outcome> {
        self.query.begin(&caller(association), request).await
    }

    async fn begin_retrieve(
        &self,
        association: &AssociationContext,
        request: RetrieveRequest,
    ) -> Result<Instances, Outcome> {
        self.retrieve.begin(&caller(association), request).await
    }

    async fn request_commitment(
        &self,
        association: &AssociationContext,
        request: CommitmentRequest,
    ) -> Outcome {
        self.commitment.request(association, request).await
    }

    async fn due_reports(&self) -> Vec<CommitmentReport> {
        self.commitment.due_reports().await
    }

    async fn report_delivered(&self, key: i64, result: Result<(), String>) {
        self.commitment.delivered(key, result).await
    }
}
