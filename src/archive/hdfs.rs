//! The HDFS archive store, through `hdfs-native` (no JVM, no libhdfs). A container is written
//! in one pass, `hsync`ed (every DataNode of the pipeline has it on disk) and closed under a
//! temporary name, then renamed: the NameNode's rename is atomic.

use std::sync::Arc;

use bytes::Bytes;
use std::collections::HashMap;

use hdfs_native::file::FileReader;
use hdfs_native::{Client, ClientBuilder, WriteOptions};

use super::{ArchiveError, ArchiveStore, ContainerWriter};

/// Bytes gathered before a write to the DataNode pipeline.
const WRITE_BUFFER: usize = 4 << 20;

/// Settings of the HDFS store.
#[derive(Debug, Clone)]
pub struct HdfsOptions {
    /// `hdfs://host:port`, or `hdfs://nameservice` with a Hadoop config folder for HA.
    pub url: String,
    /// Folder inside HDFS holding the containers.
    pub root: String,
    /// Hadoop config folder (`core-site.xml`, `hdfs-site.xml`); else `HADOOP_CONF_DIR`.
    pub conf_dir: Option<String>,
    /// User name the NameNode sees (simple authentication).
    pub user: Option<String>,
    pub block_size: Option<u64>,
    pub replication: Option<u32>,
}

/// Open readers kept for reuse: a published container never changes, and opening one costs
/// a NameNode round trip (block locations).
const READERS_KEPT: usize = 64;

/// Containers in an HDFS folder.
#[derive(Clone)]
pub struct HdfsStore {
    client: Arc<Client>,
    options: HdfsOptions,
    readers: Arc<std::sync::Mutex<HashMap<String, Arc<FileReader>>>>,
}

impl std::fmt::Debug for HdfsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HdfsStore")
            .field("options", &self.options)
            .finish()
    }
}

/// A container being written to HDFS.
pub struct HdfsWriter {
    name: String,
    file: hdfs_native::file::FileWriter,
    buf: Vec<u8>,
    written: u64,
}

fn io(e: hdfs_native::HdfsError) -> std::io::Error {
    crate::metrics::HDFS_ERRORS.inc(&[]);
    match e {
        hdfs_native::HdfsError::FileNotFound(_) => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}

impl HdfsStore {
    /// Connects and makes sure the root and its `tmp/` folder exist.
    pub async fn open(options: HdfsOptions) -> Result<HdfsStore, ArchiveError> {
        let prepare = |source| ArchiveError::Prepare {
            path: format!("{}{}", options.url, options.root),
            source,
        };
        let mut builder = ClientBuilder::new().with_url(options.url.clone());
        if let Some(dir) = &options.conf_dir {
            builder = builder.with_config_dir(dir.clone());
        }
        if let Some(user) = &options.user {
            builder = builder.with_user(user.clone());
        }
        let client = builder.build().map_err(|e| prepare(io(e)))?;
        client
            .mkdirs(&format!("{}/tmp", options.root), 0o755, true)
            .await
            .map_err(|e| prepare(io(e)))?;
        Ok(HdfsStore {
            client: Arc::new(client),
            options,
            readers: Arc::default(),
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", self.options.root.trim_end_matches('/'), name)
    }
}

impl HdfsWriter {
    async fn flush_buffer(&mut self) -> Result<(), ArchiveError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(WRITE_BUFFER),
        ));
        self.file
            .write_bytes(data)
            .await
            .map_err(|e| ArchiveError::Write {
                name: self.name.clone(),
                source: io(e),
            })?;
        Ok(())
    }
}

impl ContainerWriter for HdfsWriter {
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
        let name = self.name.clone();
        let err = |e| ArchiveError::Write {
            name: name.clone(),
            source: io(e),
        };
        self.file.hsync().await.map_err(err)?;
        self.file.close().await.map_err(err)?;
        Ok(self.written)
    }
}

impl ArchiveStore for HdfsStore {
    type Writer = HdfsWriter;

    async fn create_temp(&self, name: &str) -> Result<HdfsWriter, ArchiveError> {
        let mut options = WriteOptions::default().overwrite(true).create_parent(true);
        if let Some(size) = self.options.block_size {
            options = options.block_size(size);
        }
        if let Some(r) = self.options.replication {
            options = options.replication(r);
        }
        let file = self
            .client
            .create(&self.path(name), options)
            .await
            .map_err(|e| ArchiveError::Write {
                name: name.to_string(),
                source: io(e),
            })?;
        Ok(HdfsWriter {
            name: name.to_string(),
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            written: 0,
        })
    }

    async fn read_at(&self, name: &str, offset: u64, length: u64) -> Result<Bytes, ArchiveError> {
        let err = |source| ArchiveError::Read {
            name: name.to_string(),
            offset,
            length,
            source,
        };
        let cached = self
            .readers
            .lock()
            .expect("reader cache")
            .get(name)
            .cloned();
        let reader = match cached {
            // Temporaries are still growing: never cache them.
            Some(reader) => reader,
            None => {
                let reader = Arc::new(
                    self.client
                        .read(&self.path(name))
                        .await
                        .map_err(|e| err(io(e)))?,
                );
                if !name.starts_with("tmp/") {
                    let mut readers = self.readers.lock().expect("reader cache");
                    if readers.len() >= READERS_KEPT {
                        readers.clear();
                    }
                    readers.insert(name.to_string(), reader.clone());
                }
                reader
            }
        };
        // hdfs-native panics on a range past the end: a truncated container is an error.
        if offset.saturating_add(length) > reader.file_length() as u64 {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file has only {} bytes", reader.file_length()),
            )));
        }
        reader
            .read_range(offset as usize, length as usize)
            .await
            .map_err(|e| err(io(e)))
    }

    async fn len(&self, name: &str) -> Result<u64, ArchiveError> {
        self.client
            .get_file_info(&self.path(name))
            .await
            .map(|s| s.length as u64)
            .map_err(|e| ArchiveError::Read {
                name: name.to_string(),
                offset: 0,
                length: 0,
                source: io(e),
            })
    }

    async fn publish(&self, temp: &str, name: &str) -> Result<(), ArchiveError> {
        let err = |e| ArchiveError::Rename {
            from: temp.to_string(),
            to: name.to_string(),
            source: io(e),
        };
        let target = self.path(name);
        if let Some((parent, _)) = target.rsplit_once('/') {
            self.client.mkdirs(parent, 0o755, true).await.map_err(err)?;
        }
        self.client
            .rename(&self.path(temp), &target, false)
            .await
            .map_err(err)
    }

    async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        self.readers.lock().expect("reader cache").remove(name);
        match self.client.delete(&self.path(name), false).await {
            Ok(_) => Ok(()),
            Err(hdfs_native::HdfsError::FileNotFound(_)) => Ok(()),
            Err(e) => Err(ArchiveError::Delete {
                name: name.to_string(),
                source: io(e),
            }),
        }
    }

    async fn remove_temporaries(
        &self,
        in_use: &std::collections::HashSet<i64>,
    ) -> Result<usize, ArchiveError> {
        let err = |e| ArchiveError::Prepare {
            path: self.path("tmp"),
            source: io(e),
        };
        let mut removed = 0;
        for status in self
            .client
            .list_status(&self.path("tmp"), false)
            .await
            .map_err(err)?
        {
            let file = status.path.rsplit('/').next().unwrap_or("").to_string();
            if !super::temporary_in_use(&file, in_use) {
                self.client.delete(&status.path, false).await.map_err(err)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
