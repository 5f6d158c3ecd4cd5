//! Writing one S-DICOM container and checking it against what was meant to go in.

use super::seqfile::{self, Placed, RecordWriter, FORMAT};
use super::{ArchiveError, ArchiveStore, ContainerWriter};

/// A container being filled, record by record.
pub struct ContainerBuilder<W: ContainerWriter> {
    writer: W,
    records: RecordWriter,
    /// Bytes still due in the record being written.
    in_record: u64,
    /// Bytes of the file being written beyond that record (a split file's further parts).
    after_record: u64,
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
            in_record: 0,
            after_record: 0,
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
    /// returns where its bytes will be (split over records past 2 GiB, see
    /// [`seqfile::value_extents`]). The caller writes exactly `length` bytes.
    pub async fn begin(
        &mut self,
        sop_instance_uid: &str,
        length: u64,
    ) -> Result<Placed, ArchiveError> {
        debug_assert_eq!(
            self.in_record + self.after_record,
            0,
            "previous file complete"
        );
        if sop_instance_uid.len() > seqfile::LONGEST_KEY {
            return Err(ArchiveError::KeyTooLong {
                key: sop_instance_uid.to_string(),
            });
        }
        let file = self.records.begin_file(sop_instance_uid, length);
        self.in_record = file.first_record;
        self.after_record = length - self.in_record;
        self.writer.write(&file.head).await?;
        Ok(file.placed)
    }

    /// The next bytes of the file begun last (a split file's further record heads are
    /// written between them where its parts end).
    pub async fn write_part(&mut self, mut part: &[u8]) -> Result<(), ArchiveError> {
        while !part.is_empty() {
            if self.in_record == 0 {
                assert!(self.after_record > 0, "more bytes than the file's length");
                let next = self.after_record.min(seqfile::PART_VALUE);
                let head = self.records.continuation(next);
                self.writer.write(&head).await?;
                self.in_record = next;
                self.after_record -= next;
            }
            let take = (self.in_record as usize).min(part.len());
            self.writer.write(&part[..take]).await?;
            self.in_record -= take as u64;
            part = &part[take..];
        }
        Ok(())
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
        let split = seqfile::is_split(&e.sop_instance_uid, e.placed.length);
        let (file_at, file_length) = (e.placed.offset, e.placed.length);
        let extents = seqfile::value_extents(file_at, file_length, split, 0, file_length);
        let mut crc = 0u32;
        for (part, &(offset, part_length)) in extents.iter().enumerate() {
            // Sync marker, lengths, key and value length: well under 1 KiB.
            window.cover(at, (length - at).min(1024)).await?;
            let record = seqfile::next_record(&window.bytes, window.base, at, length, &header.sync)
                .map_err(|err| format!("{name}: {err}"))?
                .ok_or_else(|| format!("{name}: ends before {}", e.sop_instance_uid))?;
            let key = if part == 0 {
                e.sop_instance_uid.as_str()
            } else {
                ""
            };
            let place = Placed {
                offset,
                length: part_length,
            };
            if record.key != key || record.value != place {
                return Err(format!(
                    "{name}: record {part} of {} misplaced",
                    e.sop_instance_uid
                ));
            }
            let mut cur = offset;
            let end = offset + part_length;
            while cur < end {
                window.cover(cur, 1).await?;
                let from = (cur - window.base) as usize;
                let take = ((end - cur) as usize).min(window.bytes.len() - from);
                crc = crc32c::crc32c_append(crc, &window.bytes[from..from + take]);
                cur += take as u64;
            }
            at = record.next;
        }
        if crc != e.crc32c {
            return Err(format!("{name}: {} fails its checksum", e.sop_instance_uid));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the small writes (record heads) with their positions and only counts the rest:
    /// a 2 GiB payload is not worth holding to check where the heads went.
    #[derive(Default)]
    struct Heads {
        position: u64,
        heads: Vec<(u64, Vec<u8>)>,
    }

    impl ContainerWriter for Heads {
        async fn write(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
            if bytes.len() < 1024 {
                self.heads.push((self.position, bytes.to_vec()));
            }
            self.position += bytes.len() as u64;
            Ok(())
        }

        async fn finish(self) -> Result<u64, ArchiveError> {
            Ok(self.position)
        }
    }

    /// Written in parts that do not line up with the records' ends, a file over 2 GiB gets
    /// its continuation heads exactly where its parts end, and the next file follows it.
    #[tokio::test]
    async fn a_file_over_2_gib_written_in_parts_gets_its_continuation_heads() {
        let mut builder = ContainerBuilder::start(Heads::default(), "1.2.9", 2)
            .await
            .unwrap();
        let length = 4 * seqfile::PART_VALUE + 5_000_000;
        assert!(seqfile::is_split("1.2.9.1", length));
        let placed = builder.begin("1.2.9.1", length).await.unwrap();
        let part = vec![0u8; 7 << 20];
        let mut left = length;
        while left > 0 {
            let n = left.min(part.len() as u64) as usize;
            builder.write_part(&part[..n]).await.unwrap();
            left -= n as u64;
        }
        let after = builder.add("1.2.9.2", b"small").await.unwrap();
        let header = seqfile::decode_header(&builder.writer.heads[0].1).unwrap();
        let heads = builder.writer.heads.clone();
        let end = builder.finish().await.unwrap();
        // header, first head, four continuations, the small file's head (and its 5 bytes, a
        // small write too).
        let records: Vec<&(u64, Vec<u8>)> = heads.iter().filter(|(_, b)| b.len() > 5).collect();
        assert_eq!(
            records.len(),
            7,
            "{:?}",
            heads.iter().map(|h| h.0).collect::<Vec<_>>()
        );
        let extents = seqfile::value_extents(placed.offset, length, true, 0, length);
        assert_eq!(extents.len(), 5);
        let mut found = Vec::new();
        for (at, bytes) in &records[1..] {
            let record = seqfile::next_record(bytes, *at, *at, end, &header.sync)
                .unwrap()
                .unwrap();
            found.push((record.key, (record.value.offset, record.value.length)));
        }
        assert_eq!(found[0], ("1.2.9.1".to_string(), extents[0]));
        for part in 1..5 {
            assert_eq!(found[part], (String::new(), extents[part]));
        }
        assert_eq!(found[5], ("1.2.9.2".to_string(), (after.offset, 5)));
        assert_eq!(end, after.offset + 5);
    }

    /// A file over one part (512 MiB) that one record holds stays whole: written to a real
    /// container, checked by `verify`, and a read across the 512 MiB mark finds it whole from
    /// its length alone (keys are at most 64 characters, so no probe is needed).
    #[tokio::test]
    async fn a_file_over_one_part_that_one_record_holds_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::archive::LocalStore::open(dir.path()).unwrap();
        let writer = store.create_temp("c.tmp").await.unwrap();
        let mut builder = ContainerBuilder::start(writer, "1.2.8", 1).await.unwrap();
        let length = seqfile::PART_VALUE + (1 << 20);
        assert_eq!(seqfile::layout(length), seqfile::Layout::Whole);
        let too_long = "1.".repeat(32) + "9";
        assert!(matches!(
            builder.begin(&too_long, length).await,
            Err(ArchiveError::KeyTooLong { .. })
        ));
        let placed = builder.begin("1.2.8.1", length).await.unwrap();
        let pattern = |i: u64| ((i % (1 << 20)) % 251) as u8;
        let part: Vec<u8> = (0..1u64 << 20).map(pattern).collect();
        let mut crc = 0;
        for _ in 0..length >> 20 {
            builder.write_part(&part).await.unwrap();
            crc = crc32c::crc32c_append(crc, &part);
        }
        let end = builder.finish().await.unwrap();
        let expected = [Expected {
            sop_instance_uid: "1.2.8.1".into(),
            placed,
            crc32c: crc,
        }];
        verify(&store, "c.tmp", &expected, end).await.unwrap();
        let at = seqfile::PART_VALUE - 100;
        let read =
            crate::archive::read_file_range(&store, "c.tmp", (placed.offset, length), at, 200)
                .await
                .unwrap();
        let want: Vec<u8> = (at..at + 200).map(pattern).collect();
        assert_eq!(&read[..], &want[..]);
        // Read as if split, the same range would come from elsewhere.
        let as_split = seqfile::value_extents(placed.offset, length, true, at, 200);
        assert_eq!(as_split.len(), 2);
    }
}
