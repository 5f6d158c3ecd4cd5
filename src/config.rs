//! The one typed configuration of Strata, loaded once from a TOML file.
//!
//! Nothing else in the crate reads files or the environment for settings: `main` loads a
//! [`Config`] and hands the parts each component needs down to it. Relative paths in the file
//! are resolved against the folder that holds the file, so a config works from any working
//! directory. `config/strata.toml` documents every key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dicom: DicomConfig,
    pub storage: StorageConfig,
    pub locator: LocatorConfig,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub retrieve: RetrieveConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    #[serde(default)]
    pub tiering: TieringConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub commitment: CommitmentConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub renditions: RenditionsConfig,
}

/// `[renditions]`: the rendition cache (rendered images and thumbnails kept for the next
/// request; see `crate::renditions`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionsConfig {
    /// MiB of renditions kept; 0 (the default): no cache, every view is drawn again.
    #[serde(default)]
    pub cache_mb: u64,
    /// The cache's folder (a local disk; emptied when the server starts). Required with
    /// `cache_mb`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `value` (the default: requests x cost per byte) or `lru` (least recently used, to
    /// compare with).
    #[serde(default)]
    pub policy: RenditionPolicy,
}

/// `[renditions] policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionPolicy {
    #[default]
    Value,
    Lru,
}

/// `[audit]`: where audit entries go besides the locator's audit log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `udp://HOST:PORT` of a syslog collector (an audit record repository): every entry is
    /// also sent there as a DICOM audit message (PS3.15 A.5) in an RFC 5424 line. Empty:
    /// none.
    #[serde(default)]
    pub syslog: String,
}

/// `[lifecycle]`: how long studies are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Years a study is kept after its Study Date (its newest instance's arrival when it
    /// has none); then it is deleted from every tier and copy. 0: kept forever.
    #[serde(default)]
    pub retention_years: u32,
    /// Per modality, instead of `retention_years`: a study is kept as long as the longest
    /// retention of its modalities (Modalities in Study); 0 keeps it forever. Example:
    /// `retention_years_by_modality = { MG = 10, CT = 10 }`.
    #[serde(default)]
    pub retention_years_by_modality: std::collections::BTreeMap<String, u32>,
    /// Days the bytes of instances hidden by an IOCM rejection note (a Key Object Selection
    /// document titled with a CID 7011 code) are kept before the lifecycle pass deletes
    /// them from every tier and copy. 0: at the next pass.
    #[serde(default = "defaults::rejected_keep_days")]
    pub rejected_keep_days: u32,
    /// When the server deletes expired studies by itself: `HH:MM-HH:MM` in UTC. Empty:
    /// never; run `strata lifecycle run` instead (`strata schedule` lists them first).
    #[serde(default)]
    pub window: String,
    /// How often the server looks for expired studies inside the window (seconds).
    #[serde(default = "defaults::tiering_poll_secs")]
    pub poll_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> LifecycleConfig {
        LifecycleConfig {
            retention_years: 0,
            retention_years_by_modality: Default::default(),
            rejected_keep_days: defaults::rejected_keep_days(),
            window: String::new(),
            poll_secs: defaults::tiering_poll_secs(),
        }
    }
}

/// `[status]`: the history the status page plots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Seconds between two samples of the tiers, queues and ingest counts.
    #[serde(default = "defaults::status_sample_secs")]
    pub sample_secs: u64,
    /// Hours of samples kept (older ones are deleted as new ones are taken).
    #[serde(default = "defaults::status_keep_hours")]
    pub keep_hours: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            sample_secs: defaults::status_sample_secs(),
            keep_hours: defaults::status_keep_hours(),
        }
    }
}

/// `[web]`: the DICOMweb (HTTP) front end. No `listen`: no HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the HTTP listener; the DICOMweb root is `/dicom-web`.
    pub listen: Option<SocketAddr>,
    /// Absolute URL of the server as clients reach it (behind a proxy), used in the URLs
    /// the server returns; absent: `http://` and the request's Host header.
    pub public_url: Option<String>,
    /// Requests without credentials are served as an anonymous user (find, get, store).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// `[[web.users]]`: who may log in (HTTP Basic), and what each may do.
    #[serde(default)]
    pub users: Vec<WebUserConfig>,
    /// Most requests served at once; more wait for a slot.
    #[serde(default = "defaults::web_max_requests")]
    pub max_requests: usize,
    /// Largest STOW-RS request body in MiB; a larger one gets 413 and nothing is stored.
    #[serde(default = "defaults::web_max_upload_mb")]
    pub max_upload_mb: u64,
    /// Most HTTP connections open at once; more wait in the listen backlog.
    #[serde(default = "defaults::web_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection has to send a whole request head, from when it opens and from
    /// the end of each response: a client trickling its headers or keeping an idle
    /// connection open is closed after this long.
    #[serde(default = "defaults::web_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Seconds a connection may go with nothing read or written either way, even in the
    /// middle of a request (a stalled upload, an answer the client does not read): then it
    /// is closed, and its request with it.
    #[serde(default = "defaults::web_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Origins (`scheme://host[:port]`) whose pages may call the DICOMweb API from a
    /// browser (CORS), e.g. a viewer served from another host; `"*"`: any origin.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain for HTTPS (relative to the config file's folder); with
    /// `tls_key`, the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            public_url: None,
            allow_anonymous: false,
            users: Vec::new(),
            max_requests: defaults::web_max_requests(),
            max_upload_mb: defaults::web_max_upload_mb(),
            max_connections: defaults::web_max_connections(),
            header_timeout_secs: defaults::web_header_timeout_secs(),
            idle_timeout_secs: defaults::web_idle_timeout_secs(),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// One `[[web.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUserConfig {
    pub name: String,
    /// Argon2 PHC string, as printed by `strata hash-password`; absent: no HTTP Basic login
    /// (a user with bearer tokens only, e.g. a script or an AI pipeline).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of this user's bearer tokens, as printed by `strata new-token`; several
    /// for rotation.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Verbs this user may use: `find` (QIDO-RS), `get` (WADO-RS), `store` (STOW-RS),
    /// `admin`.
    pub allow: Vec<Service>,
}

/// `[commitment]`: Storage Commitment reports (N-EVENT-REPORT) that could not be delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentConfig {
    /// Seconds between attempts to deliver a report on a new association to the requestor.
    #[serde(default = "defaults::commitment_retry_secs")]
    pub retry_secs: u64,
    /// Hours after the request when an undelivered report is given up (logged, and kept in
    /// the locator with state `given_up`). Fractions allowed.
    #[serde(default = "defaults::commitment_give_up_hours")]
    pub give_up_hours: f64,
}

impl Default for CommitmentConfig {
    fn default() -> Self {
        CommitmentConfig {
            retry_secs: defaults::commitment_retry_secs(),
            give_up_hours: defaults::commitment_give_up_hours(),
        }
    }
}

/// `[node]`: this machine among the nodes sharing one site (one locator, one online folder).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id, unique within the site. Default: the host name and a random suffix,
    /// kept in `node-id` beside the config file (written on first use).
    #[serde(default)]
    pub id: String,
    /// Seconds a process's lease lasts without a heartbeat (renewed every third of it): how
    /// long before another process may take over the work of one that died.
    #[serde(default = "defaults::lease_secs")]
    pub lease_secs: u64,
    /// This machine's host name (not a key: read at load), shown beside the node's leases.
    #[serde(skip)]
    pub host: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            lease_secs: defaults::lease_secs(),
            host: String::new(),
        }
    }
}

impl NodeConfig {
    /// The lease duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// This machine's host name (the kernel's, as `hostname` prints it), or `strata` when it has
/// none.
pub fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    match name.trim() {
        "" | "(none)" => "strata".to_string(),
        name => name.to_string(),
    }
}

/// The node id kept in `base/node-id`, made from `host` and a random suffix on first use. A
/// folder that cannot be written gives the host name alone.
fn resolve_node_id(base: &Path, host: &str) -> String {
    let file = base.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_string();
        }
    }
    let seed = format!(
        "{host}{:?}{}{:p}",
        std::time::SystemTime::now(),
        std::process::id(),
        &file
    );
    let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
    let id = format!(
        "{host}-{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    );
    // Written whole under a temporary name, then renamed: two first starts at once agree on
    // whichever rename lands last, and the loser reads it back.
    let temp = base.join(format!(".node-id.{}.tmp", std::process::id()));
    if std::fs::write(&temp, format!("{id}\n")).is_ok() && std::fs::rename(&temp, &file).is_ok() {
        return std::fs::read_to_string(&file)
            .map(|s| s.trim().to_string())
            .unwrap_or(id);
    }
    let _ = std::fs::remove_file(&temp);
    host.to_string()
}

/// `[backup]`: near-line copies of every study, and recovery from them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The near-line folder (a NAS mount): one S-DICOM container per backed-up study.
    #[serde(default = "defaults::nearline_dir")]
    pub nearline_dir: PathBuf,
    /// Format of near-line copies: `original` (bytes as stored) or `j2k-roi` (JPEG 2000 with
    /// MAXSHIFT region-of-interest coding: the automatically found anatomy lossless, the
    /// background lossy, marked Lossy Image Compression 01). A `j2k-roi` copy never replaces
    /// the only lossless copy: the primary stays as stored, and instances that are not
    /// uncompressed or losslessly compressed images are copied as stored.
    #[serde(default)]
    pub format: BackupFormat,
    /// Compression ratio of the background of `j2k-roi` copies (the ROI stays lossless).
    #[serde(default = "defaults::roi_ratio")]
    pub roi_ratio: f32,
    /// Queue a study for backup as soon as an instance of it is received (not only when it
    /// is archived).
    #[serde(default)]
    pub enqueue_on_receive: bool,
    /// When the server runs the backup queue by itself: `HH:MM-HH:MM` in UTC, like
    /// `[tiering] window`. Empty: never; run `strata backup run` instead.
    #[serde(default)]
    pub window: String,
    /// Bandwidth limit of backup writes in MB/s; 0 is unlimited.
    #[serde(default)]
    pub throttle_mb_s: f64,
    /// How often the server looks at the backup queue (inside the window) and at the repair
    /// queue (always), in seconds.
    #[serde(default = "defaults::tiering_poll_secs")]
    pub poll_secs: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            nearline_dir: defaults::nearline_dir(),
            format: BackupFormat::default(),
            roi_ratio: defaults::roi_ratio(),
            enqueue_on_receive: false,
            window: String::new(),
            throttle_mb_s: 0.0,
            poll_secs: defaults::tiering_poll_secs(),
        }
    }
}

/// What near-line copies hold (`[backup] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum BackupFormat {
    /// The instance's bytes as stored.
    #[default]
    #[serde(rename = "original")]
    Original,
    /// JPEG 2000, region of interest lossless, background lossy.
    #[serde(rename = "j2k-roi")]
    J2kRoi,
}

/// `[archive]`: where S-DICOM containers go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `local` (a folder, possibly a NAS mount) or `hdfs`.
    #[serde(default = "defaults::archive_backend")]
    pub backend: ArchiveBackend,
    /// The folder, or the path inside HDFS.
    #[serde(default = "defaults::archive_path")]
    pub path: PathBuf,
    /// `hdfs://host:port` or a name service (`hdfs://ns1`, with `HADOOP_CONF_DIR` for HA).
    #[serde(default)]
    pub hdfs_url: Option<String>,
    /// Hadoop config folder for name services and HA; else `HADOOP_CONF_DIR` is used.
    #[serde(default)]
    pub hadoop_conf_dir: Option<String>,
    /// User name presented to HDFS (simple authentication); else the process user.
    #[serde(default)]
    pub hdfs_user: Option<String>,
    /// HDFS block size for containers (MiB); else the cluster default.
    #[serde(default)]
    pub block_size_mb: Option<u64>,
    /// HDFS replication for containers; else the cluster default.
    #[serde(default)]
    pub replication: Option<u32>,
    /// `none` keeps instances as stored; `j2k-lossless` re-encodes uncompressed images as
    /// JPEG 2000 lossless on their way into a container, each checked by decoding it again.
    #[serde(default)]
    pub compression: ArchiveCompression,
}

/// What the converter does to images on their way into the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveCompression {
    /// Bytes unchanged.
    #[default]
    None,
    /// Uncompressed images become JPEG 2000 lossless (1.2.840.10008.1.2.4.90).
    J2kLossless,
}

/// The archive store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveBackend {
    Local,
    Hdfs,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            backend: defaults::archive_backend(),
            path: defaults::archive_path(),
            hdfs_url: None,
            hadoop_conf_dir: None,
            hdfs_user: None,
            block_size_mb: None,
            replication: None,
            compression: ArchiveCompression::None,
        }
    }
}

/// `[tiering]`: when studies move from the online tier to the archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieringConfig {
    /// Studies whose newest instance is older than this are archived.
    #[serde(default = "defaults::min_age_days")]
    pub min_age_days: u32,
    /// When the server runs the converter by itself: `HH:MM-HH:MM` in UTC (may wrap past
    /// midnight; `00:00-00:00` is all day). Empty: never; run `strata tier run` instead.
    #[serde(default)]
    pub window: String,
    /// How often the server looks for due studies inside the window (seconds).
    #[serde(default = "defaults::tiering_poll_secs")]
    pub poll_secs: u64,
    /// Bandwidth limit of container writes in MB/s (server and `strata tier run`); 0 is
    /// unlimited.
    #[serde(default)]
    pub throttle_mb_s: f64,
}

impl Default for TieringConfig {
    fn default() -> Self {
        TieringConfig {
            min_age_days: defaults::min_age_days(),
            window: String::new(),
            poll_secs: defaults::tiering_poll_secs(),
            throttle_mb_s: 0.0,
        }
    }
}

/// Parses `HH:MM-HH:MM` into minutes since midnight (start, end).
pub fn parse_window(window: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = window.split_once('-')?;
    Some((minutes(a)?, minutes(b)?))
}

/// `[retrieve]`: C-MOVE and C-GET behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveConfig {
    /// Associations opened in parallel to one C-MOVE destination (large studies).
    #[serde(default = "defaults::move_associations")]
    pub move_associations: usize,
    /// Instances read ahead of the network, in parallel, per sub-operation stream.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: usize,
    /// Most instances one C-MOVE/C-GET may send; more is refused (0xA702).
    #[serde(default = "defaults::max_retrieve_instances")]
    pub max_instances: usize,
    /// How long connecting to a C-MOVE destination may take (seconds).
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Most C-MOVE and C-GET operations running at once on this node, over all associations
    /// (one association runs one at a time); more are refused with 0xA702.
    #[serde(default = "defaults::max_concurrent_retrieves")]
    pub max_concurrent: usize,
    /// WADO-RS thumbnails and viewport renders of an instance whose JPEG 2000 resolution
    /// levels are recorded (archived with `compression = "j2k-lossless"`) read and decode
    /// only the resolutions they need; false reads and decodes it whole (to compare).
    #[serde(default = "defaults::resolution_levels")]
    pub resolution_levels: bool,
}

impl Default for RetrieveConfig {
    fn default() -> Self {
        RetrieveConfig {
            move_associations: defaults::move_associations(),
            prefetch: defaults::prefetch(),
            max_instances: defaults::max_retrieve_instances(),
            connect_timeout_secs: defaults::connect_timeout_secs(),
            max_concurrent: defaults::max_concurrent_retrieves(),
            resolution_levels: defaults::resolution_levels(),
        }
    }
}

/// `[query]`: C-FIND behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// A C-FIND with more matches returns this many, then Refused: Out of Resources.
    #[serde(default = "defaults::max_matches")]
    pub max_matches: usize,
    /// Match Person Name keys regardless of case.
    #[serde(default)]
    pub case_insensitive_names: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_matches: defaults::max_matches(),
            case_insensitive_names: false,
        }
    }
}

/// `[dicom]`: our application entity and who may talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomConfig {
    /// Our AE title; associations calling another title are rejected.
    pub aet: String,
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Accept associations from calling AE titles missing from `peers`.
    #[serde(default)]
    pub accept_unknown_callers: bool,
    /// Known application entities.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Most associations served at once; more are rejected as "local limit exceeded".
    #[serde(default = "defaults::max_associations")]
    pub max_associations: usize,
    /// Most DIMSE requests per second from one calling AE title, over all its associations
    /// (C-ECHO not counted); more are refused with an out-of-resources status. 0: no limit.
    #[serde(default)]
    pub max_requests_per_sec_per_ae: u32,
    /// Largest P-DATA-TF PDU we accept (bytes); bigger ones abort the association.
    #[serde(default = "defaults::max_pdu_length")]
    pub max_pdu_length: u32,
    /// ARTIM: how long a new connection may take to send its A-ASSOCIATE-RQ (seconds).
    #[serde(default = "defaults::artim_timeout_secs")]
    pub artim_timeout_secs: u64,
    /// How long we wait for the next PDU while a DIMSE message is in progress (seconds).
    #[serde(default = "defaults::dimse_timeout_secs")]
    pub dimse_timeout_secs: u64,
    /// How long an association may sit idle between messages before we abort it (seconds).
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight operations may take to finish (seconds).
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// A second listener for DICOM over TLS (PS3.15 Annex B); needs `tls_cert` and `tls_key`.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener (relative to the config file's folder).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, TLS clients must present a certificate they signed.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

/// One `[[dicom.peers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub aet: String,
    pub host: String,
    pub port: u16,
    /// DIMSE services this peer may request of us.
    #[serde(default = "defaults::allow_all")]
    pub allow: Vec<Service>,
    /// Associations we open to this peer (C-MOVE sub-operations) use TLS, with our
    /// `tls_cert` as client certificate and the peer's checked against `tls_ca`.
    #[serde(default)]
    pub tls: bool,
}

/// A verb a DIMSE peer or a web user may be allowed (see `service::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Echo,
    Store,
    Find,
    Move,
    Get,
    /// Storage Commitment (N-ACTION of the Push Model).
    Commit,
    /// Administration endpoints (never granted by default).
    Admin,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Echo => "echo",
            Service::Store => "store",
            Service::Find => "find",
            Service::Move => "move",
            Service::Get => "get",
            Service::Commit => "commit",
            Service::Admin => "admin",
        })
    }
}

/// `[storage]`: the online tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root folder of the online tier (one sub-folder per study).
    pub online_dir: PathBuf,
    /// What a C-STORE of an already stored SOP Instance UID does.
    #[serde(default)]
    pub duplicate_policy: DuplicatePolicy,
    /// Largest data set a C-STORE (or an import) may bring, in MiB; a larger one is refused
    /// with 0xA700 and nothing is kept. 0: no limit.
    #[serde(default)]
    pub max_instance_mb: u64,
}

/// Policy for an incoming instance whose SOP Instance UID is already stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// Keep the stored copy, discard the new one, answer Success.
    #[default]
    Keep,
    /// Replace the stored copy with the new one.
    Overwrite,
}

/// `[locator]`: the database that indexes and locates every instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocatorConfig {
    /// `sqlite://PATH` (relative to the config file's folder, created if missing), or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (also `?host=/socket/folder`).
    pub url: String,
    /// Connections in the pool (SQLite on a file opens two more, for writes only).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// SQLite only: the page cache of each pooled connection, in MiB (SQLite's own default
    /// is 2; with it C-FIND at a million instances re-read index pages). The server's
    /// resident memory holds up to `max_connections` + 2 of these once the database outgrows
    /// them; the operating system's page cache still holds the file.
    #[serde(default = "defaults::sqlite_cache_mib")]
    pub sqlite_cache_mib: u32,
}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `strata=debug,info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::log_level(),
        }
    }
}

mod defaults {
    use super::Service;
    pub fn status_sample_secs() -> u64 {
        60
    }
    pub fn status_keep_hours() -> u64 {
        48
    }
    pub fn web_max_requests() -> usize {
        64
    }
    pub fn web_max_upload_mb() -> u64 {
        2048
    }
    pub fn web_max_connections() -> usize {
        1024
    }
    pub fn web_header_timeout_secs() -> u64 {
        30
    }
    pub fn web_idle_timeout_secs() -> u64 {
        120
    }
    pub fn max_concurrent_retrieves() -> usize {
        16
    }
    pub fn max_associations() -> usize {
        64
    }
    pub fn max_pdu_length() -> u32 {
        262_144
    }
    pub fn artim_timeout_secs() -> u64 {
        30
    }
    pub fn dimse_timeout_secs() -> u64 {
        60
    }
    pub fn idle_timeout_secs() -> u64 {
        300
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn allow_all() -> Vec<Service> {
        vec![
            Service::Echo,
            Service::Store,
            Service::Find,
            Service::Move,
            Service::Get,
            Service::Commit,
        ]
    }
    pub fn commitment_retry_secs() -> u64 {
        60
    }
    pub fn commitment_give_up_hours() -> f64 {
        24.0
    }
    pub fn max_connections() -> u32 {
        8
    }
    pub fn sqlite_cache_mib() -> u32 {
        16
    }
    pub fn lease_secs() -> u64 {
        30
    }
    pub fn max_matches() -> usize {
        10_000
    }
    pub fn archive_backend() -> super::ArchiveBackend {
        super::ArchiveBackend::Local
    }
    pub fn archive_path() -> std::path::PathBuf {
        "archive".into()
    }
    pub fn min_age_days() -> u32 {
        90
    }
    pub fn rejected_keep_days() -> u32 {
        30
    }
    pub fn tiering_poll_secs() -> u64 {
        60
    }
    pub fn move_associations() -> usize {
        1
    }
    pub fn prefetch() -> usize {
        4
    }
    pub fn resolution_levels() -> bool {
        true
    }
    pub fn max_retrieve_instances() -> usize {
        100_000
    }
    pub fn connect_timeout_secs() -> u64 {
        10
    }
    pub fn nearline_dir() -> std::path::PathBuf {
        "nearline".into()
    }
    pub fn roi_ratio() -> f32 {
        10.0
    }
    pub fn log_level() -> String {
        "info".to_string()
    }
}

impl Config {
    /// Reads, parses, validates and resolves the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path, resolve_node_id)
    }

    /// Parses, validates and resolves config `text` as if read from `path` (relative paths
    /// are taken from its folder). `node_id(folder, host)` names the node when the text does
    /// not; [`Config::load`] keeps that name in the folder's `node-id` file. No other I/O.
    pub fn parse(
        text: &str,
        path: &Path,
        node_id: impl FnOnce(&Path, &str) -> String,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.node.host = host_name();
        if config.node.id.trim().is_empty() {
            config.node.id = node_id(base, &config.node.host);
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for file in [
            &mut self.dicom.tls_cert,
            &mut self.dicom.tls_key,
            &mut self.dicom.tls_ca,
            &mut self.web.tls_cert,
            &mut self.web.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            *file = base.join(&*file);
        }
        self.storage.online_dir = base.join(&self.storage.online_dir);
        if let Some(dir) = &mut self.renditions.dir {
            *dir = base.join(&*dir);
        }
        self.backup.nearline_dir = base.join(&self.backup.nearline_dir);
        if self.archive.backend == ArchiveBackend::Local {
            self.archive.path = base.join(&self.archive.path);
        }
        if let Some(rest) = self.locator.url.strip_prefix("sqlite://") {
            let file = Path::new(rest);
            if file.is_relative() {
                self.locator.url = format!("sqlite://{}", base.join(file).display());
            }
        }
    }

    fn validate_web(&self) -> Result<(), String> {
        if self.web.tls_cert.is_some() != self.web.tls_key.is_some() {
            return Err("web.tls_cert and web.tls_key go together".into());
        }
        let mut names = HashSet::new();
        for user in &self.web.users {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(format!(
                    "web.users name {:?} must be non-empty, without ':'",
                    user.name
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(format!("web.users lists {:?} twice", user.name));
            }
            if user
                .password_hash
                .as_ref()
                .is_some_and(|h| !h.starts_with("$argon2"))
            {
                return Err(format!(
                    "web.users {:?}: password_hash must be an argon2 PHC string \
                     (strata hash-password prints one)",
                    user.name
                ));
            }
            if user.password_hash.is_none() && user.token_sha256.is_empty() {
                return Err(format!(
                    "web.users {:?} needs a password_hash or a token_sha256",
                    user.name
                ));
            }
            let hex = |t: &String| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
            if let Some(bad) = user.token_sha256.iter().find(|t| !hex(t)) {
                return Err(format!(
                    "web.users {:?}: token_sha256 {bad:?} must be 64 hex digits \
                     (strata new-token prints one)",
                    user.name
                ));
            }
        }
        if !(1..=65_536).contains(&self.locator.sqlite_cache_mib) {
            return Err("locator.sqlite_cache_mib must be 1 to 65536".into());
        }
        if self.web.max_requests == 0 {
            return Err("web.max_requests must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.web.max_connections) {
            return Err("web.max_connections must be 1 to 1000000".into());
        }
        if self.web.header_timeout_secs == 0 || self.web.idle_timeout_secs == 0 {
            return Err(
                "web.header_timeout_secs and web.idle_timeout_secs must be at least 1".into(),
            );
        }
        if let Some(url) = &self.web.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("web.public_url {url:?} must start with http(s)://"));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.renditions.cache_mb > 0 && self.renditions.dir.is_none() {
            return Err("renditions.cache_mb needs renditions.dir, the cache's folder".into());
        }
        if self.renditions.cache_mb > 1 << 30 {
            return Err("renditions.cache_mb must be at most 1073741824 (1 PiB)".into());
        }
        let aet_ok = |aet: &str| !aet.trim().is_empty() && aet.len() <= 16 && aet.is_ascii();
        if !aet_ok(&self.dicom.aet) {
            return Err(format!(
                "dicom.aet {:?} must be 1-16 ASCII characters",
                self.dicom.aet
            ));
        }
        let mut seen = HashSet::new();
        for peer in &self.dicom.peers {
            if !aet_ok(&peer.aet) {
                return Err(format!(
                    "dicom.peers aet {:?} must be 1-16 ASCII characters",
                    peer.aet
                ));
            }
            if !seen.insert(peer.aet.trim()) {
                return Err(format!("dicom.peers lists {:?} twice", peer.aet));
            }
        }
        let d = &self.dicom;
        if d.tls_listen.is_some() && (d.tls_cert.is_none() || d.tls_key.is_none()) {
            return Err("dicom.tls_listen needs dicom.tls_cert and dicom.tls_key".into());
        }
        let client_tls = d.tls_ca.is_some() && d.tls_cert.is_some() && d.tls_key.is_some();
        if let Some(peer) = d.peers.iter().find(|p| p.tls && !client_tls) {
            return Err(format!(
                "dicom.peers {:?} has tls = true: that needs dicom.tls_ca, tls_cert and tls_key",
                peer.aet
            ));
        }
        self.validate_web()?;
        if !self.tiering.window.is_empty() && parse_window(&self.tiering.window).is_none() {
            return Err(format!(
                "tiering.window {:?} must look like \"01:00-05:00\"",
                self.tiering.window
            ));
        }
        let syslog = &self.audit.syslog;
        if !syslog.is_empty()
            && !syslog
                .strip_prefix("udp://")
                .is_some_and(|t| t.contains(':'))
        {
            return Err(format!(
                "audit.syslog {syslog:?} must look like \"udp://127.0.0.1:514\""
            ));
        }
        if !self.lifecycle.window.is_empty() && parse_window(&self.lifecycle.window).is_none() {
            return Err(format!(
                "lifecycle.window {:?} must look like \"01:00-05:00\"",
                self.lifecycle.window
            ));
        }
        if !self.backup.window.is_empty() && parse_window(&self.backup.window).is_none() {
            return Err(format!(
                "backup.window {:?} must look like \"01:00-05:00\"",
                self.backup.window
            ));
        }
        if !(self.backup.roi_ratio >= 1.0 && self.backup.roi_ratio.is_finite()) {
            return Err(format!(
                "backup.roi_ratio {} must be a compression ratio of 1 or more",
                self.backup.roi_ratio
            ));
        }
        if !(self.backup.throttle_mb_s >= 0.0 && self.backup.throttle_mb_s.is_finite()) {
            return Err("backup.throttle_mb_s must be 0 (unlimited) or a positive number".into());
        }
        if !(self.tiering.throttle_mb_s >= 0.0 && self.tiering.throttle_mb_s.is_finite()) {
            return Err("tiering.throttle_mb_s must be 0 (unlimited) or a positive number".into());
        }
        // Each store cleans its own folder of what its locator rows do not name (a killed
        // write's leftovers): sharing a folder would let one delete the other's data.
        let mut folders = vec![
            ("storage.online_dir", &self.storage.online_dir),
            ("backup.nearline_dir", &self.backup.nearline_dir),
        ];
        if self.archive.backend == ArchiveBackend::Local {
            folders.push(("archive.path", &self.archive.path));
        }
        // The rendition cache empties its folder at start.
        if let Some(dir) = &self.renditions.dir {
            folders.push(("renditions.dir", dir));
        }
        for (i, (a, path_a)) in folders.iter().enumerate() {
            for (b, path_b) in &folders[i + 1..] {
                let (x, y) = (lexical(path_a), lexical(path_b));
                if x.starts_with(&y) || y.starts_with(&x) {
                    return Err(format!(
                        "{a} ({}) and {b} ({}) must be separate folders, neither inside the other",
                        path_a.display(),
                        path_b.display()
                    ));
                }
            }
        }
        if self.archive.backend == ArchiveBackend::Hdfs && self.archive.hdfs_url.is_none() {
            return Err("archive.hdfs_url is required with backend = \"hdfs\"".into());
        }
        if !(1..=1024).contains(&self.retrieve.max_concurrent) {
            return Err("retrieve.max_concurrent must be between 1 and 1024".into());
        }
        if !(1..=16).contains(&self.retrieve.move_associations) {
            return Err("retrieve.move_associations must be between 1 and 16".into());
        }
        if !(1..=64).contains(&self.retrieve.prefetch) {
            return Err("retrieve.prefetch must be between 1 and 64".into());
        }
        if self.dicom.max_associations == 0 {
            return Err("dicom.max_associations must be at least 1".into());
        }
        if !(4096..=16_777_216).contains(&self.dicom.max_pdu_length) {
            return Err("dicom.max_pdu_length must be between 4096 and 16777216".into());
        }
        if !(1..=3600).contains(&self.status.sample_secs) {
            return Err("status.sample_secs must be 1 to 3600".into());
        }
        if !(1..=24 * 366).contains(&self.status.keep_hours) {
            return Err("status.keep_hours must be 1 to 8784 (a year)".into());
        }
        if !(self.commitment.give_up_hours > 0.0 && self.commitment.give_up_hours <= 24.0 * 365.0) {
            return Err("commitment.give_up_hours must be above 0 and at most a year".into());
        }
        if !(2..=3600).contains(&self.node.lease_secs) {
            return Err("node.lease_secs must be between 2 and 3600".into());
        }
        let node_ok = |id: &str| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !node_ok(&self.node.id) {
            return Err(format!(
                "node.id {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                self.node.id
            ));
        }
        let url = &self.locator.url;
        if !["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(format!(
                "locator.url {:?}: must start with sqlite://, postgres:// or postgresql://",
                self.locator.url
            ));
        }
        Ok(())
    }
}

impl RetrieveConfig {
    /// Retrieves (C-MOVE/C-GET associations and WADO-RS answers alike) that may decode an
    /// instance frame by frame at once: each holds a blocking thread while it waits on a
    /// peer that reads slowly. More wait for a turn, holding no thread.
    pub fn frame_decoders(&self) -> usize {
        (self.max_concurrent * self.move_associations).min(MAX_FRAME_DECODERS)
    }

    /// Threads of the runtime's blocking pool the server needs: one for each
    /// [`frame_decoders`](Self::frame_decoders) turn and [`SHORT_BLOCKING_THREADS`] for short
    /// work. Beyond that, blocking work queues: without a bound each thread (and its
    /// allocator cache) stays for the process's life once a peak has made it.
    pub fn blocking_threads(&self) -> usize {
        self.frame_decoders() + SHORT_BLOCKING_THREADS
    }
}

/// The most turns to decode frame by frame, whatever `max_concurrent` x `move_associations`
/// (up to 16,384 by their own bounds): more threads than that would only contend.
pub const MAX_FRAME_DECODERS: usize = 256;

/// Blocking-pool threads for short work that never waits on a peer: file syncs, reads,
/// parsing, decoding, password checks. Also the bound for one-shot commands.
pub const SHORT_BLOCKING_THREADS: usize = 32;

impl DicomConfig {
    pub fn artim_timeout(&self) -> Duration {
        Duration::from_secs(self.artim_timeout_secs)
    }
    pub fn dimse_timeout(&self) -> Duration {
        Duration::from_secs(self.dimse_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `path` with `.` dropped and `..` applied by name (no file system access, so symlinks are
/// not followed): enough to tell whether two configured folders nest.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A configuration for unit tests: our AE `STRATA` on port 0 with `dicom` more `[dicom]`
/// keys, a peer `VIEWER` allowed echo and find, an in-memory locator, and `rest` (more
/// tables) after them.
#[cfg(test)]
pub(crate) fn for_tests(dicom: &str, rest: &str) -> Config {
    let text = format!(
        "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\n{dicom}\n\
         [[dicom.peers]]\naet = \"VIEWER\"\nhost = \"127.0.0.1\"\nport = 1\n\
         allow = [\"echo\", \"find\"]\n\
         [storage]\nonline_dir = \"/nonexistent\"\n[locator]\nurl = \"sqlite::memory:\"\n{rest}"
    );
    toml::from_str(&text).expect("test configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_the_one_uname_prints() {
        let out = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .unwrap();
        let expected = String::from_utf8(out.stdout).unwrap();
        assert_eq!(host_name(), expected.trim());
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            r#"
            [dicom]
            aet = "STRATA"
            listen = "127.0.0.1:0"
            [[dicom.peers]]
            aet = "VIEWER"
            host = "127.0.0.1"
            port = 11113
            allow = ["echo", "find"]
            [storage]
            online_dir = "var/online"
            [locator]
            url = "sqlite://var/locator.db"
            "#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.storage.online_dir, dir.path().join("var/online"));
        assert_eq!(
            config.locator.url,
            format!("sqlite://{}", dir.path().join("var/locator.db").display())
        );
        assert_eq!(
            config.dicom.peers[0].allow,
            vec![Service::Echo, Service::Find]
        );
        assert_eq!(config.storage.duplicate_policy, DuplicatePolicy::Keep);
    }

    /// The shipped sample documents every key: it must load as it is (unknown or misspelt
    /// keys are refused), and its values must be the defaults an absent key gets.
    #[test]
    fn the_sample_config_loads_and_states_the_defaults() {
        // A copy: loading writes `node-id` beside the file (the sample sets no `[node] id`).
        let dir = tempfile::tempdir().unwrap();
        let sample = dir.path().join("strata.toml");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/strata.toml"),
            &sample,
        )
        .unwrap();
        let config = Config::load(&sample).unwrap();
        assert_eq!(config.node.lease_secs, NodeConfig::default().lease_secs);
        let kept = std::fs::read_to_string(dir.path().join("node-id")).unwrap();
        assert_eq!(kept.trim(), config.node.id);
        assert_eq!(
            Config::load(&sample).unwrap().node.id,
            config.node.id,
            "the same id every time"
        );
        let defaults = BackupConfig::default();
        assert_eq!(config.backup.format, defaults.format);
        assert_eq!(config.backup.roi_ratio, defaults.roi_ratio);
        assert_eq!(config.backup.throttle_mb_s, defaults.throttle_mb_s);
        assert_eq!(
            config.backup.enqueue_on_receive,
            defaults.enqueue_on_receive
        );
        assert_eq!(config.backup.window, defaults.window);
        let tiering = TieringConfig::default();
        assert_eq!(config.tiering.throttle_mb_s, tiering.throttle_mb_s);
        assert_eq!(config.tiering.min_age_days, tiering.min_age_days);
        assert_eq!(config.tiering.window, tiering.window);
    }

    #[test]
    fn unknown_keys_and_bad_titles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[dicom]\naet = \"\"\nlisten = \"127.0.0.1:0\"\n[storage]\nonline_dir = \"x\"\n[locator]\nurl = \"sqlite://x.db\"\n").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::write(&path, "[dicom]\naet = \"A\"\nlisten = \"127.0.0.1:0\"\nbogus = 1\n[storage]\nonline_dir = \"x\"\n[locator]\nurl = \"sqlite://x.db\"\n").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn storage_folders_must_not_nest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folders.toml");
        let base = "[dicom]\naet = \"A\"\nlisten = \"127.0.0.1:0\"\n[storage]\nonline_dir = \"var/online\"\n[locator]\nurl = \"sqlite://x.db\"\n";
        for (extra, bad) in [
            ("[archive]\npath = \"var/archive\"\n[backup]\nnearline_dir = \"var/./archive\"\n", true),
            ("[archive]\npath = \"var/archive\"\n[backup]\nnearline_dir = \"var/archive/nl\"\n", true),
            ("[archive]\npath = \"var\"\n", true),
            ("[backup]\nnearline_dir = \"var/online/../online\"\n", true),
            ("[archive]\npath = \"var/archive\"\n[backup]\nnearline_dir = \"var/nearline\"\n", false),
            ("[archive]\nbackend = \"hdfs\"\npath = \"/var/online\"\nhdfs_url = \"hdfs://h:9000\"\n", false),
        ] {
            std::fs::write(&path, format!("{base}{extra}")).unwrap();
            let loaded = Config::load(&path);
            assert_eq!(loaded.is_err(), bad, "{extra}: {loaded:?}");
            if let Err(e) = loaded {
                assert!(e.to_string().contains("separate folders"), "{e}");
            }
        }
    }

    #[test]
    fn backup_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.toml");
        let base = "[dicom]\naet = \"A\"\nlisten = \"127.0.0.1:0\"\n[storage]\nonline_dir = \"x\"\n[locator]\nurl = \"sqlite://x.db\"\n";
        std::fs::write(
            &path,
            format!("{base}[backup]\nformat = \"jpeg2000-roi\"\n"),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("jpeg2000-roi"), "{err}");
        std::fs::write(
            &path,
            format!("{base}[backup]\nformat = \"j2k-roi\"\nroi_ratio = 0.5\n"),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("backup.roi_ratio 0.5"), "{err}");
        std::fs::write(
            &path,
            format!("{base}[backup]\nformat = \"j2k-roi\"\nroi_ratio = 20\n"),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.backup.format, BackupFormat::J2kRoi);
        assert_eq!(config.backup.roi_ratio, 20.0);
        std::fs::write(
            &path,
            format!("{base}[backup]\nformat = \"original\"\nwindow = \"25:00-01:00\"\n"),
        )
        .unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::write(
            &path,
            format!("{base}[backup]\nnearline_dir = \"nl\"\nthrottle_mb_s = 5\n"),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.backup.nearline_dir, dir.path().join("nl"));
        assert_eq!(config.backup.throttle_mb_s, 5.0);
        assert!(!config.backup.enqueue_on_receive);
    }
}
