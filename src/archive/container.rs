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
        let (head, placed) = self
            .records
            .begin_record(sop_instance_uid, file.len() as u64);
        self.writer.write(&head).await?;
        self.writer.write(file).await?;
        Ok(placed)
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
    let head = store
        .read_at(name, 0, length.min(64 * 1024))
        .await
        .map_err(|e| e.to_string())?;
    let header = seqfile::decode_header(&head).map_err(|e| format!("{name}: {e}"))?;
    // One sequential pass in large windows: few reads however many records.
    let mut window = Window {
        base: 0,
        bytes: head,
    };
    let mut at = header.length;
    for e in expected {
        // Sync marker, lengths, key and value length: well under 1 KiB.
        window
            .cover(store, name, at, (length - at).min(1024), length)
            .await?;
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
            window.cover(store, name, cur, 1, length).await?;
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

/// Bytes read during verification.
const WINDOW: u64 = 8 << 20;

/// The part of the container in memory during verification.
struct Window {
    base: u64,
    bytes: bytes::Bytes,
}

impl Window {
    /// Makes sure `[at, at + need)` is in memory, reading a new window from `at` if not.
    async fn cover<S: ArchiveStore>(
        &mut self,
        store: &S,
        name: &str,
        at: u64,
        need: u64,
        length: u64,
    ) -> Result<(), String> {
        let end = self.base + self.bytes.len() as u64;
        if at >= self.base && at + need <= end {
            return Ok(());
        }
        let size = WINDOW.max(need).min(length - at);
        self.bytes = store
            .read_at(name, at, size)
            .await
            .map_err(|e| e.to_string())?;
        self.base = at;
        Ok(())
    }
}
