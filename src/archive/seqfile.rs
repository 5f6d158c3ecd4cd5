//! The S-DICOM container: a Hadoop SequenceFile, version 6, uncompressed. I/O-free: this
//! module turns headers and records into bytes and back; stores move the bytes.
//!
//! Layout (Hadoop's `SequenceFile.Writer`, which `SequenceFile.Reader` and `hadoop fs -text`
//! read unmodified):
//!
//! ```text
//! "SEQ" 06
//! Text  key class    "org.apache.hadoop.io.Text"
//! Text  value class  "org.apache.hadoop.io.BytesWritable"
//! u8    compressed = 0, u8 block-compressed = 0
//! i32   metadata count, then (Text key, Text value) pairs
//! [16]  sync marker
//! records, each optionally preceded by  i32 -1, [16] sync  (at least every 2000 bytes)
//!   i32 record length (key + value bytes), i32 key length,
//!   key   = Text: vint length + UTF-8 SOP Instance UID
//!   value = BytesWritable: i32 length + the Part-10 file bytes
//! ```
//! A file one record cannot hold (about 2 GiB with its key: record lengths are signed 32-bit,
//! see [`is_split`]) is split into consecutive records: the first keyed by its SOP Instance
//! UID, each further one by the empty key (a continuation, [`CONTINUATION_HEAD`] bytes of
//! head, never preceded by a sync marker, unlike Hadoop's writer would); every value but the
//! last holds [`PART_VALUE`] bytes, and the values concatenated in order are the file.
//! [`value_extents`] maps a range of the file to container ranges; [`layout`] tells a reader
//! without the key whether a file of some length is split.
//! Integers are big-endian; `Text` lengths are Hadoop's zero-compressed vints. Metadata
//! carries `strata.format` = [`FORMAT`], `strata.study_instance_uid` and
//! `strata.instance_count`.

/// Metadata value naming this container format and its version.
pub const FORMAT: &str = "S-DICOM 1";
const KEY_CLASS: &str = "org.apache.hadoop.io.Text";
const VALUE_CLASS: &str = "org.apache.hadoop.io.BytesWritable";
const VERSION: u8 = 6;
const SYNC_ESCAPE: i32 = -1;
/// Hadoop's SYNC_INTERVAL: a sync marker precedes a record once this many bytes have passed.
const SYNC_INTERVAL: u64 = 100 * (4 + 16);
/// Records larger than this are refused when reading (BytesWritable holds an i32 anyway).
const MAX_RECORD: usize = i32::MAX as usize;
/// The value length of each record of a split file but its last: 512 MiB, so that Hadoop
/// 2.7's `BytesWritable`, which grows its buffer to 1.5 times the value in `int` arithmetic
/// (HADOOP-11901, fixed in 2.8), reads it.
pub const PART_VALUE: u64 = 512 << 20;
/// The longest value any record can hold (with a one-byte key, the empty one).
const LONGEST_VALUE: u64 = i32::MAX as u64 - 4 - 1;
/// The longest key a file's record takes: a SOP Instance UID (PS3.5 9.1); a container
/// builder refuses longer, so a reader knows the layout from the length alone up to
/// [`LONGEST_WHOLE`].
pub const LONGEST_KEY: usize = 64;
/// The longest file that one record holds under any key up to [`LONGEST_KEY`]: value
/// length, key length byte, key.
const LONGEST_WHOLE: u64 = i32::MAX as u64 - 4 - 1 - LONGEST_KEY as u64;
/// Bytes between two values of a split file: record length, key length, the empty key's
/// length byte, value length.
pub const CONTINUATION_HEAD: u64 = 4 + 4 + 1 + 4;

/// Why bytes are not a container we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a SequenceFile (bad magic)")]
    Magic,
    #[error("SequenceFile version {0} is not supported (need 6)")]
    Version(u8),
    #[error("key/value classes {0}/{1} are not Text/BytesWritable")]
    Classes(String, String),
    #[error("compressed SequenceFiles are not S-DICOM containers")]
    Compressed,
    #[error("truncated at byte {0}")]
    Truncated(u64),
    #[error("malformed {what} at byte {at}")]
    Malformed { what: &'static str, at: u64 },
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub metadata: Vec<(String, String)>,
    pub sync: [u8; 16],
    /// Length of the header in bytes: the first record starts here.
    pub length: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Encodes a header.
pub fn encode_header(metadata: &[(String, String)], sync: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"SEQ");
    out.push(VERSION);
    put_text(&mut out, KEY_CLASS);
    put_text(&mut out, VALUE_CLASS);
    out.push(0);
    out.push(0);
    out.extend_from_slice(&(metadata.len() as i32).to_be_bytes());
    for (k, v) in metadata {
        put_text(&mut out, k);
        put_text(&mut out, v);
    }
    out.extend_from_slice(&sync);
    out
}

/// Writes records, tracking the position so sync markers land where Hadoop puts them and
/// each value's offset is known.
#[derive(Debug, Clone)]
pub struct RecordWriter {
    sync: [u8; 16],
    position: u64,
    last_sync: u64,
}

/// Where a record's value landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Offset of the value's payload (the Part-10 bytes) in the container.
    pub offset: u64,
    pub length: u64,
}

impl RecordWriter {
    /// Starts after a header of `header_len` bytes.
    pub fn new(sync: [u8; 16], header_len: u64) -> RecordWriter {
        RecordWriter {
            sync,
            position: header_len,
            // Hadoop's writer starts counting from 0, not from the end of the header.
            last_sync: 0,
        }
    }

    /// Whether a record with this key and value length fits the format: SequenceFile record
    /// lengths are signed 32-bit, so a value stays under 2 GiB.
    pub fn fits(key: &str, value_len: u64) -> bool {
        let mut key_bytes = Vec::with_capacity(key.len() + 5);
        put_text(&mut key_bytes, key);
        key_bytes.len() as u64 + 4 + value_len <= i32::MAX as u64
    }

    /// The bytes that precede a file of `length` bytes stored under `key` (the head of its
    /// first record, see [`RecordWriter::begin_record`]), and where the file will be: from
    /// the returned offset, `length` bytes spread as [`value_extents`] says. A split file's
    /// further heads come from [`RecordWriter::continuation`] after each full part.
    pub fn begin_file(&mut self, key: &str, length: u64) -> FileHead {
        let first_record = if is_split(key, length) {
            PART_VALUE
        } else {
            length
        };
        let (head, placed) = self.begin_record(key, first_record);
        FileHead {
            head,
            placed: Placed {
                offset: placed.offset,
                length,
            },
            first_record,
        }
    }

    /// The head of the next record of a split file, holding `value_len` bytes (at most
    /// [`PART_VALUE`]): no sync marker, the empty key.
    pub fn continuation(&mut self, value_len: u64) -> Vec<u8> {
        debug_assert!(value_len <= PART_VALUE);
        let mut out = Vec::with_capacity(CONTINUATION_HEAD as usize);
        out.extend_from_slice(&((1 + 4 + value_len) as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        put_text(&mut out, "");
        out.extend_from_slice(&(value_len as i32).to_be_bytes());
        self.position += CONTINUATION_HEAD + value_len;
        out
    }

    /// The bytes that precede the value payload of a record with this key and value length
    /// (a sync marker if due, the record and key lengths, the key, the value length). The
    /// caller then writes the `value_len` payload bytes themselves.
    pub fn begin_record(&mut self, key: &str, value_len: u64) -> (Vec<u8>, Placed) {
        let mut out = Vec::with_capacity(64 + key.len());
        if self.position >= self.last_sync + SYNC_INTERVAL {
            out.extend_from_slice(&SYNC_ESCAPE.to_be_bytes());
            out.extend_from_slice(&self.sync);
            self.last_sync = self.position + out.len() as u64;
        }
        let mut key_bytes = Vec::with_capacity(key.len() + 5);
        put_text(&mut key_bytes, key);
        let value_bytes = 4 + value_len;
        let record_len = key_bytes.len() as u64 + value_bytes;
        out.extend_from_slice(&(record_len as i32).to_be_bytes());
        out.extend_from_slice(&(key_bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(&key_bytes);
        out.extend_from_slice(&(value_len as i32).to_be_bytes());
        let offset = self.position + out.len() as u64;
        self.position = offset + value_len;
        (
            out,
            Placed {
                offset,
                length: value_len,
            },
        )
    }

    /// Total bytes written so far, header included.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// Whether a file of `length` bytes stored under `key` is split over several records: exactly
/// when one record cannot hold it (as writers before the split was introduced refused it).
pub fn is_split(key: &str, length: u64) -> bool {
    !RecordWriter::fits(key, length)
}

/// The start of a file in a container ([`RecordWriter::begin_file`]).
#[derive(Debug, Clone)]
pub struct FileHead {
    /// The first record's head, written before the file's bytes.
    pub head: Vec<u8>,
    /// Where the file's bytes will be.
    pub placed: Placed,
    /// How many of them the first record holds (all, or [`PART_VALUE`] of a split file).
    pub first_record: u64,
}

/// What a file's length alone says of its records, for a reader without its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Whole,
    Split,
    /// Either, by the key's length (only within [`LONGEST_KEY`] bytes of 2 GiB):
    /// [`split_by_value_length`] on the 4 bytes before the file's first byte (the first
    /// record's value length) tells.
    Probe,
}

/// See [`Layout`]: a file that one record holds under any key up to [`LONGEST_KEY`] is
/// whole, one over the longest value a record can hold is split, one in between is whole if
/// its key is short enough.
pub fn layout(length: u64) -> Layout {
    if length <= LONGEST_WHOLE {
        Layout::Whole
    } else if length > LONGEST_VALUE {
        Layout::Split
    } else {
        Layout::Probe
    }
}

/// Whether a file of `length` bytes is split, from the value length stored in the 4 bytes
/// before its first byte: a whole file's record holds all of it, a split file's first
/// record [`PART_VALUE`] bytes. `None` when those bytes are neither (not a file's start).
pub fn split_by_value_length(value_length: [u8; 4], length: u64) -> Option<bool> {
    let stored = i32::from_be_bytes(value_length) as u64;
    if stored == length {
        Some(false)
    } else if stored == PART_VALUE && length > PART_VALUE {
        Some(true)
    } else {
        None
    }
}

/// The container ranges (offset, length) that hold bytes `[at, at + len)` of a file placed
/// at `offset` with `length` bytes (`split` as [`is_split`] says): one range unless the file
/// is split and the bytes cross a part's end. `at + len` must not pass `length`.
pub fn value_extents(offset: u64, length: u64, split: bool, at: u64, len: u64) -> Vec<(u64, u64)> {
    debug_assert!(at + len <= length);
    if !split {
        return vec![(offset + at, len)];
    }
    let mut out = Vec::new();
    let (mut at, end) = (at, at + len);
    while at < end {
        let part = at / PART_VALUE;
        let take = ((part + 1) * PART_VALUE).min(end) - at;
        out.push((offset + at + part * CONTINUATION_HEAD, take));
        at += take;
    }
    out
}

/// Parses the header from the start of a container; `bytes` must hold all of it (a few
/// hundred bytes; 64 KiB is plenty).
pub fn decode_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(3)? != b"SEQ" {
        return Err(FormatError::Magic);
    }
    let version = c.take(1)?[0];
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let key_class = c.text()?;
    let value_class = c.text()?;
    if key_class != KEY_CLASS || value_class != VALUE_CLASS {
        return Err(FormatError::Classes(key_class, value_class));
    }
    let flags = c.take(2)?;
    if flags != [0, 0] {
        return Err(FormatError::Compressed);
    }
    let count = c.i32()?;
    if !(0..=10_000).contains(&count) {
        return Err(FormatError::Malformed {
            what: "metadata count",
            at: c.at as u64,
        });
    }
    let mut metadata = Vec::new();
    for _ in 0..count {
        let k = c.text()?;
        let v = c.text()?;
        metadata.push((k, v));
    }
    let sync: [u8; 16] = c.take(16)?.try_into().expect("16 bytes");
    Ok(Header {
        metadata,
        sync,
        length: c.at as u64,
    })
}

/// One record as found by [`next_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead {
    pub key: String,
    /// Where the value payload starts and how long it is.
    pub value: Placed,
    /// Where the next record (or sync marker) starts.
    pub next: u64,
}

/// Reads the record at `at` (skipping a sync marker there) from `bytes`, which start at
/// container offset `base` and must hold at least the record's head (sync, lengths, key,
/// value length); the payload itself need not be present. `Ok(None)` at the end of file.
pub fn next_record(
    bytes: &[u8],
    base: u64,
    at: u64,
    file_len: u64,
    sync: &[u8; 16],
) -> Result<Option<RecordHead>, FormatError> {
    if at == file_len {
        return Ok(None);
    }
    let mut c = Cursor {
        bytes,
        at: (at - base) as usize,
    };
    let mut record_len = c.i32()?;
    if record_len == SYNC_ESCAPE {
        let marker = c.take(16)?;
        if marker != sync {
            return Err(FormatError::Malformed {
                what: "sync marker",
                at: base + c.at as u64 - 16,
            });
        }
        if base + c.at as u64 == file_len {
            return Ok(None);
        }
        record_len = c.i32()?;
    }
    let key_len = c.i32()?;
    let here = base + c.at as u64;
    if record_len < 0 || key_len < 0 || key_len > record_len || record_len as usize > MAX_RECORD {
        return Err(FormatError::Malformed {
            what: "record lengths",
            at: here,
        });
    }
    let key_start = c.at;
    let key = c.text()?;
    if c.at - key_start != key_len as usize {
        return Err(FormatError::Malformed {
            what: "key length",
            at: here,
        });
    }
    let value_len = c.i32()?;
    if value_len < 0 || 4 + value_len as i64 + key_len as i64 != record_len as i64 {
        return Err(FormatError::Malformed {
            what: "value length",
            at: here,
        });
    }
    let offset = base + c.at as u64;
    let next = offset + value_len as u64;
    if next > file_len {
        return Err(FormatError::Truncated(file_len));
    }
    Ok(Some(RecordHead {
        key,
        value: Placed {
            offset,
            length: value_len as u64,
        },
        next,
    }))
}

/// Hadoop's `Text.write`: a zero-compressed vint length, then UTF-8.
fn put_text(out: &mut Vec<u8>, s: &str) {
    put_vlong(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Hadoop's `WritableUtils.writeVLong`.
fn put_vlong(out: &mut Vec<u8>, mut i: i64) {
    if (-112..=127).contains(&i) {
        out.push(i as u8);
        return;
    }
    let mut len: i64 = -112;
    if i < 0 {
        i ^= -1;
        len = -120;
    }
    let mut tmp = i;
    while tmp != 0 {
        tmp >>= 8;
        len -= 1;
    }
    out.push(len as u8);
    let len = if len < -120 {
        -(len + 120)
    } else {
        -(len + 112)
    };
    for idx in (1..=len).rev() {
        let shift = (idx - 1) * 8;
        out.push(((i >> shift) & 0xFF) as u8);
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(FormatError::Truncated(self.at as u64))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// Hadoop's `WritableUtils.readVLong`.
    fn vlong(&mut self) -> Result<i64, FormatError> {
        let first = self.take(1)?[0] as i8;
        if first >= -112 {
            return Ok(first as i64);
        }
        let size = if first < -120 {
            -119 - first as i64
        } else {
            -111 - first as i64
        };
        let mut v: i64 = 0;
        for &b in self.take(size as usize - 1)? {
            v = (v << 8) | b as i64;
        }
        Ok(if first < -120 { v ^ -1 } else { v })
    }

    fn text(&mut self) -> Result<String, FormatError> {
        let at = self.at as u64;
        let len = self.vlong()?;
        if !(0..=1 << 20).contains(&len) {
            return Err(FormatError::Malformed { what: "text", at });
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::Malformed { what: "text", at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlongs_match_hadoop() {
        // Values and encodings from WritableUtils' zero-compressed format.
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (127, vec![127]),
            (-112, vec![0x90]),
            (128, vec![0x8F, 0x80]),
            (255, vec![0x8F, 0xFF]),
            (256, vec![0x8E, 0x01, 0x00]),
            (-113, vec![0x87, 0x70]),
            (1 << 20, vec![0x8D, 0x10, 0x00, 0x00]),
        ] {
            let mut out = Vec::new();
            put_vlong(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            let mut c = Cursor { bytes: &out, at: 0 };
            assert_eq!(c.vlong().unwrap(), v);
        }
    }

    #[test]
    fn containers_round_trip_with_sync_markers() {
        let sync = [7u8; 16];
        let meta = vec![("strata.format".to_string(), FORMAT.to_string())];
        let mut file = encode_header(&meta, sync);
        let header = decode_header(&file).unwrap();
        assert_eq!(header.get("strata.format"), Some(FORMAT));
        assert_eq!(header.length, file.len() as u64);
        let mut writer = RecordWriter::new(sync, file.len() as u64);
        let values: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1500 + i as usize]).collect();
        let mut placed = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let (head, p) = writer.begin_record(&format!("1.2.{i}"), v.len() as u64);
            file.extend_from_slice(&head);
            assert_eq!(p.offset, file.len() as u64);
            file.extend_from_slice(v);
            placed.push(p);
        }
        assert_eq!(writer.position(), file.len() as u64);
        // Sync markers were written (each 1.5 KB record crosses the 2000-byte interval).
        let escapes = file
            .windows(20)
            .filter(|w| w[..4] == [0xFF; 4] && w[4..] == sync)
            .count();
        assert!(escapes >= 2, "{escapes}");
        let mut at = header.length;
        let mut keys = Vec::new();
        while let Some(r) = next_record(&file, 0, at, file.len() as u64, &sync).unwrap() {
            let v = &file[r.value.offset as usize..(r.value.offset + r.value.length) as usize];
            assert_eq!(v, &values[keys.len()][..]);
            assert_eq!(r.value, placed[keys.len()]);
            keys.push(r.key);
            at = r.next;
        }
        assert_eq!(keys, ["1.2.0", "1.2.1", "1.2.2", "1.2.3", "1.2.4"]);
        // Damage is an error, not a panic.
        assert!(next_record(
            &file[..file.len() - 3],
            0,
            header.length,
            file.len() as u64 - 3,
            &sync
        )
        .is_ok());
        let mut bad = file.clone();
        bad[header.length as usize + 3] ^= 0x55;
        let _ = next_record(&bad, 0, header.length, bad.len() as u64, &sync);
        assert_eq!(decode_header(b"SEQ\x05"), Err(FormatError::Version(5)));
        assert_eq!(decode_header(b"PK\x03\x04"), Err(FormatError::Magic));
    }

    /// Found by the 2 GiB run of tests/memory.rs: a 2 GiB instance's record length wrapped
    /// to a negative i32 and only the container's verification caught it.
    #[test]
    fn records_over_the_32_bit_lengths_do_not_fit() {
        assert!(RecordWriter::fits("1.2.3", (1 << 31) - 100));
        assert!(!RecordWriter::fits("1.2.3", (1 << 31) - 4));
        assert!(!RecordWriter::fits("1.2.3", 4 << 30));
    }

    /// A file over 2 GiB is split into records that Hadoop's reader walks (the heads parse
    /// where the writer put them) and [`value_extents`] finds every byte of it, across the
    /// parts' ends. Only the heads are materialised: the payloads would be 5 GiB.
    #[test]
    fn files_over_2_gib_are_split_into_records_and_found_again() {
        let sync = [9u8; 16];
        let header = encode_header(&[], sync);
        let mut writer = RecordWriter::new(sync, header.len() as u64);
        let small = writer.begin_file("1.2.1", 3000);
        let (small_head, small) = (small.head, small.placed);
        let length = 4 * PART_VALUE + 123_456;
        let file = writer.begin_file("1.2.2", length);
        assert_eq!(file.first_record, PART_VALUE);
        let (head, placed) = (file.head, file.placed);
        // The head of the first record comes after the small file and a sync marker.
        let first_head_at = small.offset + small.length;
        assert_eq!(placed.offset, first_head_at + head.len() as u64);
        assert_eq!(placed.length, length);
        let mut heads = vec![(first_head_at, head)];
        for value_len in [PART_VALUE, PART_VALUE, PART_VALUE, 123_456] {
            let at = writer.position();
            heads.push((at, writer.continuation(value_len)));
        }
        let end = writer.position();
        assert_eq!(end, placed.offset + length + 4 * CONTINUATION_HEAD);
        let after = writer.begin_file("1.2.3", 10).placed;
        assert!(after.offset > end);

        // Each head parses where it was written, and the records chain.
        let mut values = Vec::new();
        for (i, (at, bytes)) in heads.iter().enumerate() {
            let record = next_record(bytes, *at, *at, end + 1000, &sync)
                .unwrap()
                .unwrap();
            assert_eq!(record.key, if i == 0 { "1.2.2" } else { "" });
            if let Some((next_at, _)) = heads.get(i + 1) {
                assert_eq!(record.next, *next_at);
            } else {
                assert_eq!(record.next, end);
            }
            values.push((record.value.offset, record.value.length));
        }
        assert_eq!(values[0], (placed.offset, PART_VALUE));
        assert_eq!(values[1].1, PART_VALUE);
        assert_eq!(values[4].1, 123_456);
        // The whole file, and ranges crossing parts' ends, map onto those values.
        assert!(is_split("1.2.2", length));
        assert_eq!(layout(length), Layout::Split);
        assert_eq!(
            value_extents(placed.offset, length, true, 0, length),
            values
        );
        assert_eq!(
            value_extents(
                placed.offset,
                length,
                true,
                PART_VALUE - 10,
                PART_VALUE + 30
            ),
            vec![
                (values[0].0 + PART_VALUE - 10, 10),
                (values[1].0, PART_VALUE),
                (values[2].0, 20)
            ]
        );
        assert_eq!(
            value_extents(placed.offset, length, true, 4 * PART_VALUE + 6, 50),
            vec![(values[4].0 + 6, 50)]
        );
        // A reader without the key finds the split from the first record's value length.
        let first = &heads[0].1;
        let first_value_length: [u8; 4] = first[first.len() - 4..].try_into().unwrap();
        assert_eq!(
            split_by_value_length(first_value_length, length),
            Some(true)
        );
        // A file that fits stays one record, its range one read.
        assert_eq!(small_head.len() as u64 + header.len() as u64, small.offset);
        assert!(!is_split("1.2.1", small.length));
        assert_eq!(
            value_extents(small.offset, small.length, false, 100, 200),
            vec![(small.offset + 100, 200)]
        );
    }

    /// The split rule is the old writer's refusal, so every container written before it
    /// reads the same: a file under a short key stays whole up to the last byte a record
    /// holds, and a reader without the key tells the two apart by the stored value length.
    #[test]
    fn only_files_no_record_can_hold_are_split() {
        let uid = "1.2.840.10008.5.1.4.1.1.2.12345678901234567890123456789012345678";
        assert_eq!(uid.len(), 64);
        // A record holds: 4 (value length) + 1 (key length byte) + key + value.
        let most_for_uid = i32::MAX as u64 - 4 - 65;
        assert!(!is_split(uid, most_for_uid));
        assert!(is_split(uid, most_for_uid + 1));
        assert!(!is_split("1.2.3", most_for_uid + 59));
        assert!(is_split("1.2.3", most_for_uid + 60));
        assert_eq!(layout(PART_VALUE + 1), Layout::Whole);
        assert_eq!(layout(most_for_uid), Layout::Whole);
        assert_eq!(layout(most_for_uid + 1), Layout::Probe);
        assert_eq!(layout(LONGEST_VALUE), Layout::Probe);
        assert_eq!(layout(LONGEST_VALUE + 1), Layout::Split);
        let whole = (most_for_uid + 30) as i32;
        assert_eq!(
            split_by_value_length(whole.to_be_bytes(), most_for_uid + 30),
            Some(false)
        );
        assert_eq!(
            split_by_value_length((PART_VALUE as i32).to_be_bytes(), most_for_uid + 30),
            Some(true)
        );
        assert_eq!(
            split_by_value_length(7i32.to_be_bytes(), most_for_uid),
            None
        );
    }
}
