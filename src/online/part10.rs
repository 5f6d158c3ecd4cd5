//! Writing a Part-10 file from a data set that arrives in fragments, with bounded memory.

use std::io::{self, Write};
use std::path::Path;

use dicom_object::meta::FileMetaTableBuilder;

use super::TempFile;

/// Fragments are gathered up to this size before one write to the file. Large enough that a
/// typical CT/MR image is written in one go when it completes, which saves thread hand-offs;
/// small enough to bound memory per association.
const WRITE_CHUNK: usize = 1024 * 1024;

/// Direct I/O writes whole blocks of this size from memory aligned to it (4 KiB: a
/// multiple of every disk's logical block here). A buffer holds a chunk, the partial block
/// carried over from the last write, and up to a block of padding in front that aligns
/// its data (the allocator offsets large allocations within their first page).
const BLOCK: usize = 4096;
const BUFFER_CAPACITY: usize = WRITE_CHUNK + 2 * BLOCK;

/// Write buffers kept for reuse, at most: a fresh megabyte per instance costs page faults,
/// zeroed pages and copies as it grows, more than the instance's own bytes (`perf`).
const SPARE_BUFFERS: usize = 8;

/// Spare write buffers (capacity `BUFFER_CAPACITY`, empty), shared by every writer.
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A buffer of [`BUFFER_CAPACITY`] bytes, reused when one is spare, holding only the
/// padding that puts what is appended next at a [`BLOCK`] boundary in memory (its length
/// is that padding's).
fn take_buffer() -> Vec<u8> {
    let mut buffer = SPARE
        .lock()
        .ok()
        .and_then(|mut spare| spare.pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY));
    buffer.resize(buffer.as_ptr().align_offset(BLOCK).min(BLOCK), 0);
    buffer
}

/// Gives a buffer back for the next writer (dropped when enough are spare).
fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() != BUFFER_CAPACITY {
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
    /// Padding at the front of `buffer`, not part of the file (see [`take_buffer`]).
    pad: usize,
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
    Open(Output),
    /// An earlier write failed or the file was handed back.
    Closed,
}

impl Target {
    /// The open file, created now if it was not yet. Blocking.
    fn open(self, path: &Path) -> io::Result<Output> {
        match self {
            Target::NotCreated => Output::create(path),
            Target::Open(output) => Ok(output),
            Target::Closed => Err(closed()),
        }
    }
}

/// A new file written with direct I/O where the file system takes it: whole blocks go from
/// the write buffer to the disk, without a copy into the page cache (half of the CPU spent
/// per instance received, on this machine, was that copy; storescp pays it too), and the
/// data sync at publication waits only for the last partial block and the disk's cache.
/// The last partial block, and everything once a write could not be direct, goes through
/// the page cache.
#[derive(Debug)]
struct Output {
    file: std::fs::File,
    direct: bool,
    /// Bytes written so far (the file's position).
    position: u64,
}

impl Output {
    /// Creates `path` (which must not exist), for direct I/O if its file system allows it.
    fn create(path: &Path) -> io::Result<Output> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        let direct = options
            .clone()
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path);
        let (file, direct) = match direct {
            Ok(file) => (file, true),
            // Refused after the file was made (a file system without direct I/O): open
            // the new file again without.
            Err(e) if is_invalid(&e) && path.exists() => (options.open(path)?, false),
            Err(e) if is_invalid(&e) => (options.create_new(true).open(path)?, false),
            Err(e) => return Err(e),
        };
        Ok(Output {
            file,
            direct,
            position: 0,
        })
    }

    /// Writes `data`'s whole blocks, and the rest too when `last`; returns the bytes
    /// written (what is left is less than a block, kept for the next write).
    fn write(&mut self, data: &[u8], last: bool) -> io::Result<usize> {
        let mut done = 0;
        if self.direct && data.as_ptr().align_offset(BLOCK) == 0 {
            let blocks = data.len() / BLOCK * BLOCK;
            while done < blocks {
                match self.file.write(&data[done..blocks]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        self.position += n as u64;
                        if n % BLOCK != 0 {
                            break; // a short write: the rest goes through the page cache
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if is_invalid(&e) => break,
                    Err(e) => return Err(e),
                }
            }
            if !last && done == blocks {
                return Ok(done);
            }
        }
        self.buffered()?;
        let rest = &data[done..];
        self.file.write_all(rest)?;
        if rest.len() >= BLOCK {
            // Not the last partial block alone (its sync writes it as soon): a file written
            // through the page cache.
            start_writeback(&self.file, self.position, rest.len());
        }
        self.position += rest.len() as u64;
        Ok(data.len())
    }

    /// Turns direct I/O off for the rest of the file (its position may no longer be a
    /// block's start).
    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            let flags = rustix::fs::fcntl_getfl(&self.file)?;
            rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
            self.direct = false;
        }
        Ok(())
    }
}

/// EINVAL: what direct I/O gets where a file system, an alignment or a length refuses it.
fn is_invalid(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

impl Part10Writer {
    /// Starts a new file at `path` (which must not exist) with its header already buffered;
    /// the file is created with the first write. Dropping the writer, or an error in
    /// [`Part10Writer::finish_then`], removes the file.
    pub fn new(path: TempFile, header: Vec<u8>) -> Part10Writer {
        let mut buffer = take_buffer();
        let pad = buffer.len();
        buffer.extend_from_slice(&header);
        Part10Writer {
            pad,
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
        let buffered = self.buffer.len().saturating_sub(self.pad);
        if buffered > 0 && buffered + fragment.len() > WRITE_CHUNK {
            self.flush_buffer().await?;
        }
        self.buffer.extend_from_slice(fragment);
        Ok(())
    }

    async fn flush_buffer(&mut self) -> io::Result<()> {
        let target = std::mem::replace(&mut self.file, Target::Closed);
        let buffer = std::mem::take(&mut self.buffer);
        let path = self.path.path().to_owned();
        let pad = self.pad;
        let (output, mut buffer, result) =
            tokio::task::spawn_blocking(move || match target.open(&path) {
                Ok(mut output) => {
                    let result = output.write(&buffer[pad..], false);
                    (Some(output), buffer, result)
                }
                Err(e) => (None, buffer, Err(e)),
            })
            .await
            .map_err(io::Error::other)?;
        // What was not written (less than a block) moves to the front.
        let written = *result.as_ref().unwrap_or(&0);
        buffer.drain(pad..pad + written);
        self.buffer = buffer;
        match (output, result) {
            (Some(output), Ok(_)) => {
                self.file = Target::Open(output);
                Ok(())
            }
            (_, Err(e)) => Err(e),
            (None, Ok(_)) => Err(closed()),
        }
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
        let pad = self.pad;
        let after = tokio::task::spawn_blocking(move || {
            target.open(&path)?.write(&buffer[pad..], true)?;
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

/// Starts writing the `len` bytes just written through the page cache at `offset` to disk,
/// without waiting, so that the data sync at publication
/// ([`super::OnlineStore::publish_all`]) waits only for what is still in flight: the disk
/// writes while the head is parsed and the commit is queued (a 512 KB instance's
/// `fdatasync` then waits about 0.15 ms instead of 0.5 here). Linux
/// starts writeback of a range's dirty pages for `POSIX_FADV_DONTNEED` and then drops only
/// its clean pages, which these are not yet. A hint: a failure changes nothing, the sync
/// decides durability.
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    if let Some(len) = std::num::NonZeroU64::new(len as u64) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

fn closed() -> io::Error {
    io::Error::other("file already closed after an earlier error")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd-sized fragments over several chunks: each flush writes whole blocks (direct I/O
    /// on this file system) and carries the partial one, and the file is every byte in
    /// order; a small instance is written whole at finish.
    #[tokio::test(flavor = "multi_thread")]
    async fn fragments_over_several_chunks_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for total in [2_600_000usize, 3_000] {
            let path = dir.path().join(format!("{total}.part"));
            let header = part10_header(
                "1.2.840.10008.5.1.4.1.1.2",
                "1.2.3",
                "1.2.840.10008.1.2",
                "",
            )
            .unwrap();
            let mut writer = Part10Writer::new(TempFile::new(path.clone()), header.clone());
            let mut expected = header.clone();
            let mut n = 0u32;
            while expected.len() < total {
                let size = 1 + (n as usize * 7_919) % 16_381;
                let fragment: Vec<u8> = (0..size).map(|i| (i as u32 ^ n) as u8).collect();
                writer.write(&fragment).await.unwrap();
                expected.extend_from_slice(&fragment);
                n += 1;
            }
            let mut written = writer.finish().await.unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), expected.len());
            assert!(
                bytes == expected,
                "{total}: the file differs from what was written"
            );
            assert_eq!(crc32c::crc32c(&bytes), written.crc32c);
            written.path.published(); // kept until the folder goes
        }
    }

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
