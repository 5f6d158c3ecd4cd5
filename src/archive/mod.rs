//! The archive tier: S-DICOM containers (one Hadoop SequenceFile per study, see [`seqfile`])
//! on an archive store. The store is one trait with two backends: a local or NAS folder and
//! HDFS. Containers are written under a temporary name, made durable, verified, and only then
//! renamed to their final name; temporaries of interrupted runs are removed by
//! [`ArchiveStore::remove_temporaries`].

pub mod container;
pub mod hdfs;
pub mod local;
pub mod seqfile;

use std::collections::HashSet;
use std::future::Future;

use bytes::Bytes;

pub use hdfs::{HdfsOptions, HdfsStore};
pub use local::LocalStore;

/// Why an archive-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot prepare the archive at {path}: {source}")]
    Prepare {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write container {name}: {source}")]
    Write {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot read container {name} at {offset}+{length}: {source}")]
    Read {
        name: String,
        offset: u64,
        length: u64,
        source: std::io::Error,
    },
    #[error("cannot rename container {from} to {to}: {source}")]
    Rename {
        from: String,
        to: String,
        source: std::io::Error,
    },
    #[error("cannot delete container {name}: {source}")]
    Delete {
        name: String,
        source: std::io::Error,
    },
    #[error("record key {key:?} is longer than a SOP Instance UID may be (64 characters)")]
    KeyTooLong { key: String },
}

/// A container being written: bytes go out in order, `finish` makes them durable.
pub trait ContainerWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), ArchiveError>> + Send;
    /// Flushes, syncs and closes; returns the length written.
    fn finish(self) -> impl Future<Output = Result<u64, ArchiveError>> + Send;
}

/// Where containers live. Names are relative, `/`-separated, and never contain patient data.
pub trait ArchiveStore: Send + Sync + 'static {
    type Writer: ContainerWriter;

    /// Creates (replacing any leftover) the temporary `name` for writing.
    fn create_temp(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Self::Writer, ArchiveError>> + Send;

    /// `length` bytes at `offset` of container `name` (a final or temporary name).
    fn read_at(
        &self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> impl Future<Output = Result<Bytes, ArchiveError>> + Send;

    /// Length of container `name`.
    fn len(&self, name: &str) -> impl Future<Output = Result<u64, ArchiveError>> + Send;

    /// Atomically and durably gives temporary `temp` its final name `name`.
    fn publish(
        &self,
        temp: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), ArchiveError>> + Send;

    /// Removes container `name` (a missing one is not an error).
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), ArchiveError>> + Send;

    /// Removes temporaries left by interrupted runs: all but those stamped with a lease in
    /// `in_use` (held now by another process, of any node); returns how many.
    fn remove_temporaries(
        &self,
        in_use: &HashSet<i64>,
    ) -> impl Future<Output = Result<usize, ArchiveError>> + Send;
}

/// Bytes `[at, at + len)` of the file placed at `offset` with `length` bytes in container
/// `name`: one positioned read, or one per part when the range crosses the end of a part of
/// a split file (see [`seqfile::value_extents`]), joined.
pub async fn read_file_range<S: ArchiveStore>(
    store: &S,
    name: &str,
    (offset, length): (u64, u64),
    at: u64,
    len: u64,
) -> Result<Bytes, ArchiveError> {
    let split = match seqfile::layout(length) {
        seqfile::Layout::Whole => false,
        seqfile::Layout::Split => true,
        // Within a key's length of 2 GiB: whole unless its key was too long for one record;
        // the first record's value length says which.
        seqfile::Layout::Probe => {
            let stored = store.read_at(name, offset - 4, 4).await?;
            let stored: [u8; 4] = stored[..].try_into().map_err(|_| short(name, offset))?;
            seqfile::split_by_value_length(stored, length).ok_or_else(|| short(name, offset))?
        }
    };
    let extents = seqfile::value_extents(offset, length, split, at, len);
    if let [(offset, len)] = extents[..] {
        return store.read_at(name, offset, len).await;
    }
    let mut joined = bytes::BytesMut::with_capacity(len as usize);
    for (offset, len) in extents {
        joined.extend_from_slice(&store.read_at(name, offset, len).await?);
    }
    Ok(joined.freeze())
}

/// The error for a file whose record head is not where the locator says.
fn short(name: &str, offset: u64) -> ArchiveError {
    ArchiveError::Read {
        name: name.to_string(),
        offset: offset - 4,
        length: 4,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no record's value length before the file's first byte",
        ),
    }
}

/// The configured archive store.
#[derive(Debug)]
pub enum Archive {
    Local(LocalStore),
    Hdfs(HdfsStore),
}

impl Archive {
    /// Opens the store the configuration names.
    pub async fn open(config: &crate::config::ArchiveConfig) -> Result<Archive, ArchiveError> {
        match config.backend {
            crate::config::ArchiveBackend::Local => {
                Ok(Archive::Local(LocalStore::open(&config.path)?))
            }
            crate::config::ArchiveBackend::Hdfs => Ok(Archive::Hdfs(
                HdfsStore::open(HdfsOptions {
                    url: config.hdfs_url.clone().unwrap_or_default(),
                    root: config.path.display().to_string(),
                    conf_dir: config.hadoop_conf_dir.clone(),
                    user: config.hdfs_user.clone(),
                    block_size: config.block_size_mb.map(|mb| mb << 20),
                    replication: config.replication,
                })
                .await?,
            )),
        }
    }
}

/// The writer of the configured store.
pub enum AnyWriter {
    Local(local::LocalWriter),
    Hdfs(Box<hdfs::HdfsWriter>),
}

impl ContainerWriter for AnyWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        match self {
            AnyWriter::Local(w) => w.write(bytes).await,
            AnyWriter::Hdfs(w) => w.write(bytes).await,
        }
    }

    async fn finish(self) -> Result<u64, ArchiveError> {
        match self {
            AnyWriter::Local(w) => w.finish().await,
            AnyWriter::Hdfs(w) => w.finish().await,
        }
    }
}

impl ArchiveStore for Archive {
    type Writer = AnyWriter;

    async fn create_temp(&self, name: &str) -> Result<AnyWriter, ArchiveError> {
        match self {
            Archive::Local(s) => s.create_temp(name).await.map(AnyWriter::Local),
            Archive::Hdfs(s) => s
                .create_temp(name)
                .await
                .map(|w| AnyWriter::Hdfs(Box::new(w))),
        }
    }

    async fn read_at(&self, name: &str, offset: u64, length: u64) -> Result<Bytes, ArchiveError> {
        match self {
            Archive::Local(s) => s.read_at(name, offset, length).await,
            Archive::Hdfs(s) => s.read_at(name, offset, length).await,
        }
    }

    async fn len(&self, name: &str) -> Result<u64, ArchiveError> {
        match self {
            Archive::Local(s) => s.len(name).await,
            Archive::Hdfs(s) => s.len(name).await,
        }
    }

    async fn publish(&self, temp: &str, name: &str) -> Result<(), ArchiveError> {
        match self {
            Archive::Local(s) => s.publish(temp, name).await,
            Archive::Hdfs(s) => s.publish(temp, name).await,
        }
    }

    async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        match self {
            Archive::Local(s) => s.delete(name).await,
            Archive::Hdfs(s) => s.delete(name).await,
        }
    }

    async fn remove_temporaries(&self, in_use: &HashSet<i64>) -> Result<usize, ArchiveError> {
        match self {
            Archive::Local(s) => s.remove_temporaries(in_use).await,
            Archive::Hdfs(s) => s.remove_temporaries(in_use).await,
        }
    }
}

/// The final name of a new container for a study: a digest of the UID (no patient data),
/// fanned out over 256 folders, with a unique suffix so a re-archived study never replaces
/// a container the locator may still point at.
pub fn container_name(study_instance_uid: &str) -> String {
    let hex = crate::model::uid::digest_key(study_instance_uid);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}/{hex}.{nanos:x}.sdcm", &hex[..2])
}

/// The temporary name a container is written under before it is published, stamped with
/// the writing process's lease.
pub fn temp_name(name: &str, lease: i64) -> String {
    format!("tmp/{}.{lease}.part", name.replace('/', "_"))
}

/// Whether a temporary (`<name>.<lease>.part`) belongs to a lease in `in_use`.
pub(crate) fn temporary_in_use(file_name: &str, in_use: &HashSet<i64>) -> bool {
    file_name
        .strip_suffix(".part")
        .and_then(|s| s.rsplit('.').next())
        .and_then(|l| l.parse::<i64>().ok())
        .is_some_and(|l| in_use.contains(&l))
}
