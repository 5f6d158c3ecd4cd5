//! The DICOMweb front end (PS3.18) under `/dicom-web`: QIDO-RS searches and WADO-RS
//! retrieval over HTTP. Like the DIMSE layer it is a thin adapter over the query and
//! retrieve services and never touches storage; it runs in the same process as the DIMSE
//! listener and stops with it.
//!
//! Every request is authenticated first ([`auth`]), then checked for its verb; at most
//! `[web] max_requests` are served at once (a request waits up to [`SLOT_WAIT`] for a slot,
//! then gets 503).

mod accept;
pub mod auth;
mod conn;
mod cors;
mod frames;
mod json;
mod qido;
mod rendered;
mod status_page;
mod stow;
mod tls;
mod wado;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query as QueryParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::audit::Caller;
use crate::config::{Service, WebConfig};
use crate::ingest::Ingest;
use crate::metrics;
use crate::model::query::QueryLevel;
use crate::query::Query;
use crate::retrieve::{Instances, Retrieve, RetrieveError, RetrieveKeys};
use crate::service::metrics::Metrics;
use crate::service::site::Site;
use crate::service::{AccessPolicy, Principal};
use auth::{AuthError, Users};
use qido::{path_uid, Scope, Search};

/// How long a request waits for one of the `[web] max_requests` slots.
pub const SLOT_WAIT: Duration = Duration::from_secs(30);

/// The services the HTTP front end adapts.
#[derive(Debug, Clone)]
pub struct WebServices {
    pub ingest: Ingest,
    pub query: Query,
    pub retrieve: Retrieve,
    /// Our AE title, written as Source AE Title into the files WADO-RS sends.
    pub our_aet: String,
    /// The process's one access policy (the DIMSE listener's too).
    pub policy: Arc<AccessPolicy>,
    /// The `/metrics` answer.
    pub metrics: Arc<Metrics>,
    /// What the status page shows.
    pub site: Site,
}

#[derive(Debug, Clone)]
struct Web {
    services: WebServices,
    users: Arc<Users>,
    public_url: Option<String>,
    slots: Arc<Semaphore>,
    /// `[web] max_upload_mb` in bytes.
    max_upload: u64,
}

/// An HTTP error answer: status and a one-line reason (text/plain).
/// Query parameters as a test writes them.
#[cfg(test)]
fn test_params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
pub struct WebError {
    status: StatusCode,
    message: String,
}

impl WebError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> WebError {
        WebError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub fn not_acceptable(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_ACCEPTABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for WebError {}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let headers = response.headers_mut();
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Strata\", charset=\"UTF-8\""),
            );
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"Strata\""),
            );
        }
        response
    }
}

impl From<AuthError> for WebError {
    fn from(e: AuthError) -> WebError {
        WebError::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

/// Serves `/dicom-web` on `listener` (HTTPS with `tls`) until `shutdown` turns true;
/// requests still running then get `grace` to finish before their connections are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: &WebConfig,
    services: WebServices,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let web = Web {
        services,
        users: Arc::new(Users::from_config(config)),
        public_url: config
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        slots: Arc::new(Semaphore::new(config.max_requests)),
        max_upload: config.max_upload_mb.saturating_mul(1 << 20),
    };
    let app = router(web, cors::Origins::new(&config.cors_origins));
    let limits = conn::Limits {
        max_connections: config.max_connections,
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        grace,
    };
    match tls {
        None => conn::serve(listener, app, limits, shutdown).await,
        Some(tls) => match tls::TlsListener::new(listener, tls) {
            Ok(listener) => conn::serve(listener, app, limits, shutdown).await,
            Err(e) => warn!(error = %e, "HTTPS listener failed"),
        },
    }
    info!("HTTP server stopped");
}

fn router(web: Web, origins: cors::Origins) -> Router {
    const STUDY: u8 = 0;
    const SERIES: u8 = 1;
    const INSTANCE: u8 = 2;
    let instance = "/studies/{study}/series/{series}/instances/{instance}";
    let dicom_web = Router::new()
        .route("/studies", get(search_at::<STUDY>).post(store_at))
        .route("/series", get(search_at::<SERIES>))
        .route("/instances", get(search_at::<INSTANCE>))
        .route("/studies/{study}", get(retrieve_at).post(store_at))
        .route("/studies/{study}/series", get(search_at::<SERIES>))
        .route("/studies/{study}/instances", get(search_at::<INSTANCE>))
        .route("/studies/{study}/metadata", get(metadata_at))
        .route("/studies/{study}/series/{series}", get(retrieve_at))
        .route(
            "/studies/{study}/series/{series}/instances",
            get(search_at::<INSTANCE>),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(metadata_at),
        )
        .route(instance, get(retrieve_at))
        .route(&format!("{instance}/metadata"), get(metadata_at))
        .route(
            &format!("{instance}/frames/{{frames}}"),
            get(instance_frames),
        )
        .route(&format!("{instance}/rendered"), get(image_at::<false>))
        .route(&format!("{instance}/thumbnail"), get(image_at::<true>))
        .route(
            &format!("{instance}/frames/{{frames}}/rendered"),
            get(image_at::<false>),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/thumbnail"),
            get(image_at::<true>),
        )
        .route(
            &format!("{instance}/bulkdata/{{tag}}"),
            get(instance_bulk_data),
        )
        .route("/studies/{study}/rendered", get(images_at))
        .route("/studies/{study}/series/{series}/rendered", get(images_at))
        .route("/studies/{study}/thumbnail", get(image_at::<true>))
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(image_at::<true>),
        );
    let app = Router::new()
        .nest("/dicom-web", dicom_web)
        .route("/metrics", get(metrics_at))
        .route("/", get(status_page_at))
        .layer(middleware::from_fn_with_state(web.clone(), admit))
        .layer(middleware::from_fn(count_request))
        .with_state(web);
    if origins.is_empty() {
        app
    } else {
        // Outside `admit`: preflights carry no credentials and take no slot.
        app.layer(middleware::from_fn_with_state(
            Arc::new(origins),
            cors::cors,
        ))
    }
}

/// Counts every answered request and its latency by route pattern (`crate::metrics`).
async fn count_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    metrics::HTTP_REQUESTS.inc(&[&method, &route, &code]);
    metrics::HTTP_DURATION.observe_duration(&[&method, &route], started.elapsed());
    response
}

/// `GET /metrics`: Prometheus text format, for a user allowed `admin`.
async fn metrics_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Admin)?;
    let mut response = Response::new(Body::from(web.services.metrics.render().await));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /`: the status page (HTML), for a user allowed `admin`.
async fn status_page_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Admin)?;
    let overview = web
        .services
        .site
        .overview()
        .await
        .map_err(|e| WebError::internal(e.to_string()))?;
    let mut response = Response::new(Body::from(status_page::render(&overview)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(response)
}

/// Takes a slot and authenticates the request; the principal goes into its extensions.
async fn admit(State(web): State<Web>, mut request: Request, next: Next) -> Response {
    let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, web.slots.clone().acquire_owned()).await
    else {
        return WebError::new(StatusCode::SERVICE_UNAVAILABLE, "too many requests at once")
            .into_response();
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Most requests carry credentials verified before: decided here, without a trip to the
    // blocking pool; only a first verification (argon2, tens of ms) goes there.
    let principal = match web.users.remembered(authorization.as_deref()) {
        Ok(Some(principal)) => Ok(Ok(principal)),
        Err(e) => Ok(Err(e)),
        Ok(None) => {
            let users = web.users.clone();
            tokio::task::spawn_blocking(move || users.authenticate(authorization.as_deref())).await
        }
    };
    match principal {
        Ok(Ok(principal)) => {
            let address = request.extensions().get::<conn::Peer>().map(|peer| peer.0);
            request
                .extensions_mut()
                .insert(Caller::new(principal, address));
            next.run(request).await
        }
        Ok(Err(e)) => WebError::from(e).into_response(),
        Err(e) => WebError::internal(e.to_string()).into_response(),
    }
}

impl Web {
    fn check(&self, principal: &Principal, verb: Service) -> Result<(), WebError> {
        self.services
            .policy
            .check(principal, verb)
            .map_err(|denied| WebError::new(StatusCode::FORBIDDEN, denied.to_string()))
    }

    /// The DICOMweb root as clients reach it: `[web] public_url`, else the Host header.
    fn base(&self, headers: &HeaderMap) -> String {
        let root = self.public_url.clone().unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        });
        format!("{root}/dicom-web")
    }
}

type Params = QueryParams<Vec<(String, String)>>;

/// 406 unless the Accept header (if any) takes `application/dicom+json`.
fn accept_dicom_json(headers: &HeaderMap) -> Result<(), WebError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        let q0 = range.replace(' ', "").contains("q=0") && !range.contains("q=0.");
        !q0 && matches!(
            media,
            "*/*" | "application/*" | "application/dicom+json" | "application/json"
        )
    });
    if acceptable {
        Ok(())
    } else {
        Err(WebError::not_acceptable(format!(
            "cannot answer with any of {accept:?}: application/dicom+json only"
        )))
    }
}

fn dicom_json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    response
}

async fn search(
    web: &Web,
    caller: &Caller,
    headers: &HeaderMap,
    level: QueryLevel,
    scope: Scope,
    params: &[(String, String)],
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Find)?;
    accept_dicom_json(headers)?;
    let search = Search::parse(level, &scope, params, web.services.query.max_matches())?;
    let warnings = search.warnings.clone();
    let answer = search
        .run(&web.services.query, caller, &web.base(headers))
        .await?;
    let body =
        serde_json::to_vec(&answer.objects).map_err(|e| WebError::internal(e.to_string()))?;
    let mut response = Response::new(Body::from(body));
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    let mut warnings = warnings;
    if answer.truncated {
        warnings.push(format!(
            "There are more than {} matches: narrow the search",
            web.services.query.max_matches()
        ));
    }
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 strata \"{warning}\"")) {
            response_headers.append(header::WARNING, value);
        }
    }
    Ok(response)
}

/// The UIDs (and frame list) a route's path names; absent ones are `None`.
#[derive(Debug, Default, serde::Deserialize)]
struct Uids {
    study: Option<String>,
    series: Option<String>,
    instance: Option<String>,
    frames: Option<String>,
    tag: Option<String>,
}

impl Uids {
    fn of(path: Option<Path<Uids>>) -> Uids {
        path.map(|Path(uids)| uids).unwrap_or_default()
    }

    /// Each UID checked (400 for a bad one).
    fn checked(&self) -> Result<[Option<String>; 3], WebError> {
        let check = |uid: &Option<String>| uid.as_deref().map(path_uid).transpose();
        Ok([
            check(&self.study)?,
            check(&self.series)?,
            check(&self.instance)?,
        ])
    }

    fn scope(&self) -> Result<Scope, WebError> {
        let [study, series, _] = self.checked()?;
        Ok(Scope { study, series })
    }

    fn keys(&self) -> Result<RetrieveKeys, WebError> {
        let [study, series, instance] = self.checked()?;
        Ok(RetrieveKeys {
            patient_id: None,
            study_instance_uids: study.into_iter().collect(),
            series_instance_uids: series.into_iter().collect(),
            sop_instance_uids: instance.into_iter().collect(),
        })
    }
}

/// QIDO-RS at `LEVEL` (0 study, 1 series, 2 instance), inside what the path names.
async fn search_at<const LEVEL: u8>(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    uids: Option<Path<Uids>>,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> Result<Response, WebError> {
    let level = match LEVEL {
        0 => QueryLevel::Study,
        1 => QueryLevel::Series,
        _ => QueryLevel::Image,
    };
    let scope = Uids::of(uids).scope()?;
    search(&web, &caller, &headers, level, scope, &params).await
}

/// WADO-RS retrieval of what the path names.
async fn retrieve_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    retrieve(&web, &caller, &headers, uids.keys()?).await
}

/// WADO-RS `/metadata` of what the path names.
async fn metadata_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    metadata(&web, &caller, &headers, uids.keys()?).await
}

/// WADO-RS: the instances `keys` name as a multipart body, or 404 when there are none.
async fn retrieve(
    web: &Web,
    caller: &Caller,
    headers: &HeaderMap,
    keys: RetrieveKeys,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Get)?;
    let wanted = wado::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))?;
    let instances = named_instances(web, caller, "WADO-RS", &keys).await?;
    let (content_type, body) = wado::multipart(instances, &wanted, &web.services.our_aet)?;
    let mut response = Response::new(Body::from_stream(body));
    let value =
        HeaderValue::from_str(&content_type).map_err(|e| WebError::internal(e.to_string()))?;
    response.headers_mut().insert(header::CONTENT_TYPE, value);
    Ok(response)
}

/// WADO-RS `/metadata`: the DICOM JSON of every instance `keys` name, as kept at ingest.
async fn metadata(
    web: &Web,
    caller: &Caller,
    headers: &HeaderMap,
    keys: RetrieveKeys,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Get)?;
    accept_dicom_json(headers)?;
    let rows = web
        .services
        .retrieve
        .metadata(caller, &keys)
        .await
        .map_err(retrieve_error)?;
    if rows.is_empty() {
        return Err(WebError::new(StatusCode::NOT_FOUND, "no such instances"));
    }
    let base = web.base(headers);
    let mut partial = 0;
    let mut body = Vec::with_capacity(rows.len() * 4096);
    body.push(b'[');
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        match &row.json {
            // Kept as JSON text at ingest: copied, not parsed again; only the BulkDataURIs
            // are made absolute, and Pixel Data's added.
            Some(json) => {
                let instance_url = format!(
                    "{base}/studies/{}/series/{}/instances/{}",
                    row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
                );
                let json = json::absolute_bulk_data(json, &instance_url);
                match json.strip_suffix('}') {
                    // An image (it has Rows): its Pixel Data, last of the top-level keys.
                    Some(open)
                        if json.contains("\"00280010\"") && !json.contains("\"7FE00010\"") =>
                    {
                        body.extend_from_slice(open.as_bytes());
                        body.extend_from_slice(
                            format!(
                                ",\"7FE00010\":{{\"vr\":\"OW\",\"BulkDataURI\":\"{instance_url}/{}7FE00010\"}}}}",
                                json::BULK_DATA_PREFIX
                            )
                            .as_bytes(),
                        );
                    }
                    _ => body.extend_from_slice(json.as_bytes()),
                }
            }
            None => {
                partial += 1;
                let mut object = serde_json::Map::new();
                for (tag, value) in [
                    (
                        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
                        &row.study_instance_uid,
                    ),
                    (
                        dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
                        &row.series_instance_uid,
                    ),
                    (
                        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                        &row.sop_instance_uid,
                    ),
                    (
                        dicom_dictionary_std::tags::SOP_CLASS_UID,
                        &row.sop_class_uid,
                    ),
                ] {
                    json::put(&mut object, tag, dicom_core::VR::UI, value);
                }
                let text =
                    serde_json::to_vec(&object).map_err(|e| WebError::internal(e.to_string()))?;
                body.extend_from_slice(&text);
            }
        }
    }
    body.push(b']');
    let mut response = dicom_json_response(body);
    if partial > 0 {
        let warning = format!(
            "299 strata \"{partial} instances have only their UIDs: stored without metadata, they could not be read to describe them\""
        );
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().insert(header::WARNING, value);
        }
    }
    Ok(response)
}

/// WADO-RS `/frames/{list}`: frames of one instance, decoded or as stored.
async fn instance_frames(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Get)?;
    let numbers = frames::frame_list(uids.frames.as_deref().unwrap_or(""))?;
    let instance = one_instance(&web, &caller, "WADO-RS frames", &uids).await?;
    let stored = &crate::service::Retrieval::items(&instance)[0].transfer_syntax_uid;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let encodings = frames::negotiate(accept, stored)?;
    let (content_type, body) = frames::frames(instance, &numbers, &encodings).await?;
    typed_response(body, &content_type)
}

/// The instances `keys` name, or 404 when there are none.
async fn named_instances(
    web: &Web,
    caller: &Caller,
    via: &str,
    keys: &RetrieveKeys,
) -> Result<Instances, WebError> {
    let instances = web
        .services
        .retrieve
        .instances_for(caller, via, keys)
        .await
        .map_err(retrieve_error)?;
    if crate::service::Retrieval::items(&instances).is_empty() {
        return Err(WebError::new(StatusCode::NOT_FOUND, "no such instances"));
    }
    Ok(instances)
}

/// The one instance the path names, or 404.
async fn one_instance(
    web: &Web,
    caller: &Caller,
    via: &str,
    uids: &Uids,
) -> Result<Instances, WebError> {
    let instances = named_instances(web, caller, via, &uids.keys()?).await?;
    if crate::service::Retrieval::items(&instances).len() != 1 {
        return Err(WebError::new(StatusCode::NOT_FOUND, "no such instance"));
    }
    Ok(instances)
}

/// A 200 answer of `body` with `content_type`.
fn typed_response(body: bytes::Bytes, content_type: &str) -> Result<Response, WebError> {
    let mut response = Response::new(Body::from(body));
    let value =
        HeaderValue::from_str(content_type).map_err(|e| WebError::internal(e.to_string()))?;
    response.headers_mut().insert(header::CONTENT_TYPE, value);
    Ok(response)
}

/// WADO-RS `/bulkdata/{tag}`: one top-level attribute's value, as metadata's BulkDataURIs
/// name them.
async fn instance_bulk_data(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Get)?;
    let text = uids.tag.as_deref().unwrap_or("");
    let tag = (text.len() == 8)
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
        .map(|t| dicom_core::Tag((t >> 16) as u16, t as u16))
        .ok_or_else(|| WebError::bad_request(format!("{text:?} is not a tag (GGGGEEEE)")))?;
    // Bulk data is sent uncompressed: the negotiation of uncompressed frames.
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    frames::negotiate(
        accept,
        crate::model::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN,
    )?;
    let instance = one_instance(&web, &caller, "WADO-RS bulk data", &uids).await?;
    let (content_type, body) = frames::bulk_data(instance, tag).await?;
    typed_response(body, &content_type)
}

/// WADO-RS `/rendered` (`THUMBNAIL` false) or `/thumbnail` of what the path names: an
/// instance (its first frame, or the one frame named), or a series or study (its middle
/// instance).
async fn image_at<const THUMBNAIL: bool>(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> Result<Response, WebError> {
    let request = rendered_request(&web, &caller, &headers, &params)?;
    let frame = match uids.frames.as_deref() {
        None => 1,
        Some(list) => match frames::frame_list(list)?.as_slice() {
            [one] => *one,
            _ => {
                return Err(WebError::bad_request(
                    "one frame at a time: a rendered frame is one image",
                ))
            }
        },
    };
    let instances = named_instances(
        &web,
        &caller,
        if THUMBNAIL {
            "WADO-RS thumbnail"
        } else {
            "WADO-RS rendered"
        },
        &uids.keys()?,
    )
    .await?;
    let count = crate::service::Retrieval::items(&instances).len();
    let resource = if THUMBNAIL {
        rendered::Resource::Thumbnail
    } else {
        rendered::Resource::Rendered
    };
    rendered::render(instances, count / 2, frame, resource, request).await
}

/// What a rendered resource's request asks for, once the caller may `get`.
fn rendered_request(
    web: &Web,
    caller: &Caller,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<rendered::Request, WebError> {
    web.check(&caller.principal, Service::Get)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    rendered::Request::parse(accept, params)
}

/// WADO-RS `/rendered` of a study or series: every image in it, one part each.
async fn images_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    Path(uids): Path<Uids>,
    headers: HeaderMap,
    QueryParams(params): Params,
) -> Result<Response, WebError> {
    let request = rendered_request(&web, &caller, &headers, &params)?;
    let instances = named_instances(&web, &caller, "WADO-RS rendered", &uids.keys()?).await?;
    rendered::render_all(instances, request).await
}

fn retrieve_error(e: RetrieveError) -> WebError {
    match e {
        RetrieveError::TooMany(_) => WebError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        RetrieveError::Locator(_) => WebError::internal(e.to_string()),
    }
}

/// STOW-RS: stores the instances of a multipart body (those of `study` only, when given).
async fn store(
    web: &Web,
    caller: &Caller,
    headers: &HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, WebError> {
    web.check(&caller.principal, Service::Store)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let boundary = stow::boundary(content_type)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > web.max_upload) {
        return Err(WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body over [web] max_upload_mb = {} (nothing stored)",
                web.max_upload >> 20
            ),
        ));
    }
    let base = web.base(headers);
    let (status, answer) = stow::store(
        &web.services.ingest,
        caller,
        study,
        boundary,
        body,
        web.max_upload,
        &base,
    )
    .await?;
    let body = serde_json::to_vec(&answer).map_err(|e| WebError::internal(e.to_string()))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    Ok(response)
}

/// A STOW-RS body and its Content-Type stored through `ingest` as the route stores them
/// (access already granted to `from`), answering the HTTP status the route would: the
/// entry of the STOW-RS fuzz target, which runs no listener.
pub async fn store_body(
    ingest: &Ingest,
    from: &Caller,
    content_type: &str,
    body: Vec<u8>,
    max_bytes: u64,
) -> StatusCode {
    let stored = async {
        let boundary = stow::boundary(Some(content_type))?;
        let body = Body::from(body);
        stow::store(
            ingest,
            from,
            None,
            boundary,
            body,
            max_bytes,
            "http://127.0.0.1",
        )
        .await
    };
    match stored.await {
        Ok((status, _)) => status,
        Err(e) => e.status,
    }
}

async fn store_at(
    State(web): State<Web>,
    Extension(caller): Extension<Caller>,
    uids: Option<Path<Uids>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let study = Uids::of(uids).scope()?.study;
    store(&web, &caller, &headers, study, body).await
}

/// Binds the `[web] listen` address.
pub async fn bind(at: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(at).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
