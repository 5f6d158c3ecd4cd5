//! Writing one S-DICOM container and checking it against what was meant to go in.

use super::seqfile::{self, Placed, RecordWriter, FORMAT};
use super::{ArchiveError, ArchiveStore, ContainerWriter};

/// A container being filled, record by record.
pub struct ContainerBuilder<W: ContainerWriter> {
    writer: W,
    records: RecordWriter,
}

impl<W: ContainerWriter> ContainerBuilder<W> {
    /// Writes the header: format, study and instance count in the metadata.
    pub async fn start(
        mut writer: W,
        study_instance_uid: &str,
        instance_count: usize,
    ) -> Result<ContainerBuilder<W>, ArchiveError> {
        let mut sync = [0u8; 16];
        // Any 16 bytes serve; Hadoop uses an MD5 of a UUID and the time.
        let seed = format!(
            "{study_instance_uid}{:?}{}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        sync.copy_from_slice(&digest[..16]);
        let metadata = vec![
            ("strata.format".to_string(), FORMAT.to_string()),
            (
                "strata.study_instance_uid".to_string(),
                study_instance_uid.to_string(),
            ),
            (
                "strata.instance_count".to_string(),
                instance_count.to_string(),
            ),
        ];
        let header = seqfile::encode_header(&metadata, sync);
        writer.write(&header).await?;
        Ok(ContainerBuilder {
            writer,
            records: RecordWriter::new(sync, header.len() as u64),
        })
    }

    /// Appends one instance (its Part-10 file bytes); returns where its bytes are.
    pub async fn add(
        &mut self,
        sop_instance_uid: &str,
        file: &[u8],
    ) -> Result<Placed, ArchiveError> {
        let placed = self.begin(sop_instance_uid, file.len() as u64).await?;
        self.write_part(file).await?;
        Ok(placed)
    }

    /// Starts the record of an instance of `length` bytes, which follow in
    /// [`ContainerBuilder::write_part`] calls (for an instance too large to hold whole);
    /// returns where its bytes will be. The caller writes exactly `length` bytes.
    pub async fn begin(
        &mut self,
        sop_instance_uid: &str,
        length: u64,
    ) -> Result<Placed, ArchiveError> {
        if !RecordWriter::fits(sop_instance_uid, length) {
            return Err(ArchiveError::TooLargeForRecord {
                sop_instance_uid: sop_instance_uid.to_string(),
                length,
            });
        }
        let (head, placed) = self.records.begin_record(sop_instance_uid, length);
        self.writer.write(&head).await?;
        Ok(placed)
    }

    /// The next bytes of the record begun last.
    pub async fn write_part(&mut self, part: &[u8]) -> Result<(), ArchiveError> {
        self.writer.write(part).await
    }

    /// Makes the container durable; returns its length.
    pub async fn finish(self) -> Result<u64, ArchiveError> {
        let expected = self.records.position();
        let written = self.writer.finish().await?;
        debug_assert_eq!(written, expected);
        Ok(written)
    }
}

/// What one record must hold.
#[derive(Debug, Clone)]
pub struct Expected {
    pub sop_instance_uid: String,
    pub placed: Placed,
    pub crc32c: u32,
}

/// Reads a written container back: its length, its header, every record's key and place in
/// order, and every payload's CRC-32C. An `Err` names the first difference.
///
/// One sequential pass in large windows, read one window ahead of the checking so the store
/// never waits for the CPU: few reads however many records, at most three windows in memory.
pub async fn verify<S: ArchiveStore>(
    store: &S,
    name: &str,
    expected: &[Expected],
    length: u64,
) -> Result<(), String> {
    let actual = store.len(name).await.map_err(|e| e.to_string())?;
    if actual != length {
        return Err(format!("{name}: {actual} bytes, expected {length}"));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let read = async move {
        let mut at = 0;
        while at < length {
            let size = WINDOW.min(length - at);
            let window = store
                .read_at(name, at, size)
                .await
                .map_err(|e| e.to_string());
            let failed = window.is_err();
            if tx.send(window).await.is_err() || failed {
                // The checking side stopped (a difference found) or the read failed.
                return;
            }
            at += size;
        }
    };
    let check = check_records(
        Window {
            base: 0,
            bytes: bytes::Bytes::new(),
            next: rx,
            length,
        },
        name,
        expected,
        length,
    );
    tokio::join!(read, check).1
}

async fn check_records(
    mut window: Window,
    name: &str,
    expected: &[Expected],
    length: u64,
) -> Result<(), String> {
    window.cover(0, (64 * 1024).min(length)).await?;
    let header = seqfile::decode_header(&window.bytes).map_err(|e| format!("{name}: {e}"))?;
    let mut at = header.length;
    for e in expected {
        // Sync marker, lengths, key and value length: well under 1 KiB.
        window.cover(at, (length - at).min(1024)).await?;
        let record = seqfile::next_record(&window.bytes, window.base, at, length, &header.sync)
            .map_err(|err| format!("{name}: {err}"))?
            .ok_or_else(|| format!("{name}: ends before {}", e.sop_instance_uid))?;
        if record.key != e.sop_instance_uid || record.value != e.placed {
            return Err(format!(
                "{name}: record for {} misplaced",
                e.sop_instance_uid
            ));
        }
        let mut crc = 0u32;
        let mut cur = e.placed.offset;
        let end = e.placed.offset + e.placed.length;
        while cur < end {
            window.cover(cur, 1).await?;
            let from = (cur - window.base) as usize;
            let take = ((end - cur) as usize).min(window.bytes.len() - from);
            crc = crc32c::crc32c_append(crc, &window.bytes[from..from + take]);
            cur += take as u64;
        }
        if crc != e.crc32c {
            return Err(format!("{name}: {} fails its checksum", e.sop_instance_uid));
        }
        at = record.next;
    }
    if at != length {
        return Err(format!(
            "{name}: {} unexpected bytes at the end",
            length - at
        ));
    }
    Ok(())
}

/// Bytes read at a time during verification.
const WINDOW: u64 = 8 << 20;

/// The part of the container in memory during verification, fed in order by the reader.
struct Window {
    base: u64,
    bytes: bytes::Bytes,
    next: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    length: u64,
}

impl Window {
    /// Makes sure `[at, at + need)` is in memory (`at` never goes backwards), taking the next
    /// windows as needed; a record straddling two windows is joined (at most 1 KiB copied).
    async fn cover(&mut self, at: u64, need: u64) -> Result<(), String> {
        while at + need > self.base + self.bytes.len() as u64 {
            let end = self.base + self.bytes.len() as u64;
            let Some(chunk) = self.next.recv().await else {
                return Err(format!(
                    "container shorter than expected: {end} of {} bytes read",
                    self.length
                ));
            };
            let chunk = chunk?;
            if at >= end {
                self.base = end;
                self.bytes = chunk;
            } else {
                let mut joined = Vec::with_capacity((end - at) as usize + chunk.len());
                joined.extend_from_slice(&self.bytes[(at - self.base) as usize..]);
                joined.extend_from_slice(&chunk);
                self.base = at;
                self.bytes = joined.into();
            }
        }
        Ok(())
    }
}
