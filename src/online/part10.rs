//! Writing a Part-10 file from a data set that arrives in fragments, with bounded memory.

use std::io::{self, Write};
use std::path::Path;

use dicom_object::meta::FileMetaTableBuilder;

use super::TempFile;

/// Fragments are gathered up to this size before one write to the file. Large enough that a
/// typical CT/MR image is written in one go when it completes, which saves thread hand-offs;
/// small enough to bound memory per association.
const WRITE_CHUNK: usize = 1024 * 1024;

/// Write buffers kept for reuse, at most: a fresh megabyte per instance costs page faults,
/// zeroed pages and copies as it grows, more than the instance's own bytes (`perf`).
const SPARE_BUFFERS: usize = 8;

/// Spare write buffers (capacity `WRITE_CHUNK`, empty), shared by every writer.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// An empty buffer of `WRITE_CHUNK` bytes' capacity, reused when one is spare.
fn take_buffer() -> Vec<u8> {
    SPARE
        .lock()
        .ok()
        .and_then(|mut spare| spare.pop())
        .unwrap_or_else(|| Vec::with_capacity(WRITE_CHUNK))
}

/// Gives a buffer back for the next writer (dropped when enough are spare).
fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() != WRITE_CHUNK {
        return;
    }
    buffer.clear();
    if let Ok(mut spare) = SPARE.lock() {
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    }
}

/// The first bytes of each file are kept in memory, so the header can be parsed without
/// reading the file back.
pub const HEAD_LEN: usize = 64 * 1024;

/// Our implementation identity, written into every file meta group we create.
/// A UUID-derived UID (PS3.5 B.2): no registered root needed.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.28016557956225824439765197779556998511";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("STRATA_", env!("CARGO_PKG_VERSION"));

/// Preamble, `DICM` and the file meta group for a data set received over the network.
pub fn part10_header(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
    source_ae: &str,
) -> Result<Vec<u8>, dicom_object::meta::Error> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !source_ae.is_empty() {
        builder = builder.source_application_entity_title(source_ae);
    }
    let meta = builder.build()?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)?;
    Ok(out)
}

/// The result of a finished write.
#[derive(Debug)]
pub struct WrittenFile {
    /// The temporary written: removed when this is dropped, unless published.
    pub path: TempFile,
    /// Total file length in bytes.
    pub length: u64,
    /// CRC-32C of the whole file.
    pub crc32c: u32,
    /// Offset of the data set inside the file (the header length).
    pub data_set_offset: u64,
}

/// Streams a Part-10 file to a temporary path: header first, then data set fragments.
/// File I/O runs on the blocking pool; at most [`WRITE_CHUNK`] bytes are held in memory.
#[derive(Debug)]
pub struct Part10Writer {
    path: TempFile,
    file: Target,
    buffer: Vec<u8>,
    /// The first [`HEAD_LEN`] bytes of the file (fewer if the file is shorter).
    head: Vec<u8>,
    crc32c: u32,
    length: u64,
    data_set_offset: u64,
}

/// The file being written: created (`create_new`) in the first trip to the blocking pool
/// that writes, so that an instance written in one go costs one trip, not two.
#[derive(Debug)]
enum Target {
    NotCreated,
    Open(std::fs::File),
    /// An earlier write failed or the file was handed back.
    Closed,
}

impl Target {
    /// The open file, created now if it was not yet. Blocking.
    fn open(self, path: &Path) -> io::Result<std::fs::File> {
        match self {
            Target::NotCreated => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path),
            Target::Open(file) => Ok(file),
            Target::Closed => Err(closed()),
        }
    }
}

impl Part10Writer {
    /// Starts a new file at `path` (which must not exist) with its header already buffered;
    /// the file is created with the first write. Dropping the writer, or an error in
    /// [`Part10Writer::finish_then`], removes the file.
    pub fn new(path: TempFile, header: Vec<u8>) -> Part10Writer {
        let mut buffer = take_buffer();
        buffer.extend_from_slice(&header);
        Part10Writer {
            path,
            file: Target::NotCreated,
            head: header.clone(),
            crc32c: crc32c::crc32c(&header),
            length: header.len() as u64,
            data_set_offset: header.len() as u64,
            buffer,
        }
    }

    /// Bytes written so far, header included.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The temporary path being written.
    pub fn path(&self) -> &Path {
        self.path.path()
    }

    /// Appends a fragment of the data set.
    pub async fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        self.crc32c = crc32c::crc32c_append(self.crc32c, fragment);
        self.length += fragment.len() as u64;
        if self.head.len() < HEAD_LEN {
            let take = fragment.len().min(HEAD_LEN - self.head.len());
            self.head.extend_from_slice(&fragment[..take]);
        }
        // Written before it would outgrow its capacity, so the buffer is never reallocated.
        if !self.buffer.is_empty() && self.buffer.len() + fragment.len() > WRITE_CHUNK {
            self.flush_buffer().await?;
        }
        self.buffer.extend_from_slice(fragment);
        Ok(())
    }

    async fn flush_buffer(&mut self) -> io::Result<()> {
        let target = std::mem::replace(&mut self.file, Target::Closed);
        let buffer = std::mem::take(&mut self.buffer);
        let path = self.path.path().to_owned();
        let (file, mut buffer, result) =
            tokio::task::spawn_blocking(move || match target.open(&path) {
                Ok(mut file) => {
                    let result = file.write_all(&buffer);
                    (Some(file), buffer, result)
                }
                Err(e) => (None, buffer, Err(e)),
            })
            .await
            .map_err(io::Error::other)?;
        buffer.clear();
        self.buffer = buffer;
        if let (Some(file), Ok(())) = (file, &result) {
            self.file = Target::Open(file);
        }
        result
    }

    /// Writes what is buffered. The file is not synced: publishing it
    /// ([`super::OnlineStore::publish_all`]) does that, beside its folder's sync.
    pub async fn finish(self) -> io::Result<WrittenFile> {
        self.finish_then(|_, _| ())
            .await
            .map(|(written, ())| written)
    }

    /// Writes what is buffered, then runs `after` on the written file and its first
    /// [`HEAD_LEN`] bytes, all in one trip to the blocking pool. Not synced (see `finish`).
    pub async fn finish_then<T, F>(mut self, after: F) -> io::Result<(WrittenFile, T)>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &[u8]) -> T + Send + 'static,
    {
        let target = std::mem::replace(&mut self.file, Target::Closed);
        let buffer = std::mem::take(&mut self.buffer);
        let head = std::mem::take(&mut self.head);
        let path = self.path.path().to_owned();
        let after = tokio::task::spawn_blocking(move || {
            let mut file = target.open(&path)?;
            file.write_all(&buffer)?;
            give_back(buffer);
            Ok::<_, io::Error>(after(&path, &head))
        })
        .await
        .map_err(io::Error::other)??;
        let written = WrittenFile {
            path: self.path,
            length: self.length,
            crc32c: self.crc32c,
            data_set_offset: self.data_set_offset,
        };
        Ok((written, after))
    }
}

fn closed() -> io::Error {
    io::Error::other("file already closed after an earlier error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_header_then_fragments_with_running_crc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let temp = TempFile::new(path.clone());
        let header = part10_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "MOD",
        )
        .unwrap();
        assert_eq!(&header[128..132], b"DICM");
        let mut writer = Part10Writer::new(temp, header.clone());
        let big = vec![7u8; WRITE_CHUNK + 10];
        writer.write(&big).await.unwrap();
        writer.write(b"tail").await.unwrap();
        let written = writer.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, written.length);
        assert_eq!(crc32c::crc32c(&bytes), written.crc32c);
        assert_eq!(&bytes[..header.len()], &header[..]);
        assert_eq!(written.data_set_offset, header.len() as u64);
        assert!(bytes.ends_with(b"tail"));
        drop(written);
        assert!(
            !path.exists(),
            "an unpublished temporary goes with its WrittenFile"
        );
    }
}
