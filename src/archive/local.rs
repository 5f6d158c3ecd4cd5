//! The local (or NAS-mounted) archive store: containers are files below one folder. Writes
//! go to `tmp/`, are fsynced, then renamed into place and the folders fsynced.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ArchiveError, ArchiveStore, ContainerWriter};
use crate::durable::{create_dir_durable, sync_dir};

/// An archive folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// A container file being written. Bytes gather in a buffer; full buffers are written on
/// the blocking pool so the async threads never wait on the disk.
pub struct LocalWriter {
    name: String,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    written: u64,
}

const WRITE_BUFFER: usize = 4 << 20;

impl LocalStore {
    /// Opens (creating) the archive folder.
    pub fn open(root: &Path) -> Result<LocalStore, ArchiveError> {
        let tmp = root.join("tmp");
        create_dir_durable(&tmp).map_err(|source| ArchiveError::Prepare {
            path: tmp.display().to_string(),
            source,
        })?;
        Ok(LocalStore {
            root: root.to_owned(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking archive task")
}

impl LocalWriter {
    async fn flush_buffer(&mut self) -> Result<(), ArchiveError> {
        let mut file = self.file.take().expect("writer not finished");
        let buf = std::mem::take(&mut self.buf);
        let (file, buf, result) = blocking(move || {
            let result = file.write_all(&buf);
            (file, buf, result)
        })
        .await;
        self.file = Some(file);
        self.buf = buf;
        self.buf.clear();
        result.map_err(|source| ArchiveError::Write {
            name: self.name.clone(),
            source,
        })
    }
}

impl ContainerWriter for LocalWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush_buffer().await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, ArchiveError> {
        self.flush_buffer().await?;
        let file = self.file.take().expect("writer not finished");
        blocking(move || file.sync_all())
            .await
            .map_err(|source| ArchiveError::Write {
                name: self.name.clone(),
                source,
            })?;
        Ok(self.written)
    }
}

impl ArchiveStore for LocalStore {
    type Writer = LocalWriter;

    async fn create_temp(&self, name: &str) -> Result<LocalWriter, ArchiveError> {
        let path = self.path(name);
        let name = name.to_string();
        let file = blocking(move || std::fs::File::create(&path))
            .await
            .map_err(|source| ArchiveError::Write {
                name: name.clone(),
                source,
            })?;
        Ok(LocalWriter {
            name,
            file: Some(file),
            buf: Vec::with_capacity(WRITE_BUFFER),
            written: 0,
        })
    }

    async fn read_at(&self, name: &str, offset: u64, length: u64) -> Result<Bytes, ArchiveError> {
        let path = self.path(name);
        blocking(move || {
            let file = std::fs::File::open(&path)?;
            crate::buffers::read_at(&file, offset, length)
        })
        .await
        .map_err(|source| ArchiveError::Read {
            name: name.to_string(),
            offset,
            length,
            source,
        })
    }

    async fn len(&self, name: &str) -> Result<u64, ArchiveError> {
        let path = self.path(name);
        blocking(move || std::fs::metadata(&path).map(|m| m.len()))
            .await
            .map_err(|source| ArchiveError::Read {
                name: name.to_string(),
                offset: 0,
                length: 0,
                source,
            })
    }

    async fn publish(&self, temp: &str, name: &str) -> Result<(), ArchiveError> {
        let (from, to) = (self.path(temp), self.path(name));
        let root = self.root.clone();
        blocking(move || {
            let dir = to.parent().expect("names have a folder").to_owned();
            create_dir_durable(&dir)?;
            std::fs::rename(&from, &to)?;
            sync_dir(&dir)?;
            sync_dir(&root)?;
            sync_dir(from.parent().expect("temporaries have a folder"))
        })
        .await
        .map_err(|source| ArchiveError::Rename {
            from: temp.to_string(),
            to: name.to_string(),
            source,
        })
    }

    async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        let path = self.path(name);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("names have a folder")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|source| ArchiveError::Delete {
            name: name.to_string(),
            source,
        })
    }

    async fn remove_temporaries(&self, in_use: &HashSet<i64>) -> Result<usize, ArchiveError> {
        let tmp = self.root.join("tmp");
        let in_use = in_use.clone();
        blocking(move || {
            let mut removed = 0;
            for entry in std::fs::read_dir(&tmp)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !super::temporary_in_use(name, &in_use) {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
            sync_dir(&tmp)?;
            Ok(removed)
        })
        .await
        .map_err(|source| ArchiveError::Prepare {
            path: "tmp".into(),
            source,
        })
    }
}
