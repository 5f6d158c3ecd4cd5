//! Checks on encoded data sets before they are turned into objects.
//!
//! dicom-object builds nested sequences by recursion, so a peer can send a few kilobytes of
//! nested sequence headers and overflow the stack of whatever thread parses them. Before
//! building an object from untrusted bytes, [`scan`] walks its tokens iteratively and refuses
//! deep nesting and oversized (e.g. decompression-bomb) input.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::Codec;
use dicom_encoding::TransferSyntax;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::meta::FileMetaTable;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_parser::dataset::{DataSetReader, DataToken};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Real data sets nest a handful of levels; this is far above any of them.
pub const MAX_NESTING: usize = 32;

/// Why a data set was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("sequences nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("data set larger than {0} bytes once decoded")]
    TooLarge(u64),
    /// Refused before anything is allocated for it: a hostile length would otherwise make
    /// the parser reserve up to 4 GiB for a few bytes of input.
    #[error("{what} declares {len} bytes, more than the {left} left of the data set")]
    LengthPastEnd { what: String, len: u32, left: u64 },
    #[error("cannot parse the data set: {0}")]
    Parse(String),
}

/// Why a small data set held in memory (an identifier, an Action Information) was not
/// decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown transfer syntax {0}")]
    UnknownTransferSyntax(String),
    #[error(transparent)]
    Refused(#[from] ScanError),
    #[error("cannot parse the data set: {0}")]
    Parse(String),
}

impl DecodeError {
    /// Whether it was refused for its size (a resource limit, not malformed data).
    pub fn is_too_large(&self) -> bool {
        matches!(self, DecodeError::Refused(ScanError::TooLarge(_)))
    }
}

/// Decodes a small untrusted data set held in memory, encoded in `transfer_syntax_uid`:
/// scanned first (nesting, at most `max_bytes` once decoded), then built.
pub fn decode_small(
    bytes: &[u8],
    transfer_syntax_uid: &str,
    max_bytes: u64,
) -> Result<InMemDicomObject, DecodeError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| DecodeError::UnknownTransferSyntax(transfer_syntax_uid.to_string()))?;
    let budget = budget(ts, max_bytes, bytes.len() as u64);
    // Scan first: nesting is refused before the (recursive) object builder sees it.
    if scan(std::io::Cursor::new(bytes.to_vec()), ts, None, budget)? == ScanEnd::Truncated {
        return Err(DecodeError::Parse("the data set is truncated".into()));
    }
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| DecodeError::Parse(e.to_string()))
}

/// Opens a whole Part-10 file held in memory whose bytes are not trusted (a file given to
/// `strata transcode`, a stored instance about to be decoded): preamble and file meta
/// checked ([`read_file_meta`]), the data set scanned (nesting; no length past the end;
/// deflated, at most `max_bytes` once inflated; not truncated), then built.
pub fn open_part10(file: &[u8], max_bytes: u64) -> Result<DefaultDicomObject, ScanError> {
    let (rest, ts) = data_set_of(file)?;
    let budget = budget(ts, max_bytes, rest.len() as u64);
    if scan(std::io::Cursor::new(rest.to_vec()), ts, None, budget)? == ScanEnd::Truncated {
        return Err(ScanError::Parse("the data set is truncated".into()));
    }
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(file)
        .map_err(|e| ScanError::Parse(e.to_string()))
}

/// Opens the first bytes of a Part-10 file whose bytes are not trusted, up to its Pixel
/// Data (a head read to decode a reduced image from): preamble and file meta checked, the
/// data set scanned up to Pixel Data, which must be within `head`, then built without it.
pub fn open_part10_head(head: &[u8]) -> Result<DefaultDicomObject, ScanError> {
    let (rest, ts) = data_set_of(head)?;
    let budget = budget(ts, rest.len() as u64, rest.len() as u64);
    let stop = Some(tags::PIXEL_DATA);
    if scan(std::io::Cursor::new(rest.to_vec()), ts, stop, budget)? != ScanEnd::ReachedStop {
        return Err(ScanError::Parse("no Pixel Data in the head read".into()));
    }
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(head)
        .map_err(|e| ScanError::Parse(e.to_string()))
}

/// A Part-10 file's data set bytes and transfer syntax, once its preamble and file meta
/// are checked ([`read_file_meta`]).
fn data_set_of(file: &[u8]) -> Result<(&[u8], &'static TransferSyntax), ScanError> {
    let mut rest = file
        .get(128..)
        .ok_or_else(|| ScanError::Parse("not a DICOM file: shorter than its preamble".into()))?;
    let meta = read_file_meta(&mut rest)?;
    let uid = meta.transfer_syntax().trim_end_matches('\0');
    let ts = TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| ScanError::Parse(format!("unknown transfer syntax {uid}")))?;
    Ok((rest, ts))
}

/// The `max_bytes` to [`scan`] a data set of `stored_len` bytes with: undeflated, a data set
/// is no longer than its bytes, so no length may point past them (deflated, it may inflate
/// up to `max_bytes`).
pub fn budget(ts: &TransferSyntax, max_bytes: u64, stored_len: u64) -> u64 {
    match ts.codec() {
        Codec::Dataset(Some(_)) => max_bytes,
        _ => max_bytes.min(stored_len),
    }
}

/// Largest File Meta Information group read (PS3.10 7.1; a few hundred bytes in practice).
pub const MAX_FILE_META_BYTES: u32 = 64 * 1024;

/// Reads the File Meta Information of a Part-10 stream positioned after its preamble (at
/// `DICM`), leaving it at the data set. The group is bounded by its group length (0002,0000)
/// and every element checked to end inside it before dicom-object parses it: that parser
/// reserves and zero-fills each element's declared length, so a hostile length of 4 GiB in
/// a 200-byte file would otherwise cost 4 GiB.
pub fn read_file_meta<R: Read>(r: &mut R) -> Result<FileMetaTable, ScanError> {
    let io = |e: std::io::Error| ScanError::Parse(format!("file meta: {e}"));
    let mut head = [0u8; 16];
    r.read_exact(&mut head).map_err(io)?;
    if &head[..4] != b"DICM" {
        return Err(ScanError::Parse("not a DICOM file: no DICM prefix".into()));
    }
    if head[4..12] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0] {
        return Err(ScanError::Parse(
            "the file meta does not start with its group length (0002,0000)".into(),
        ));
    }
    let group_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    if group_len > MAX_FILE_META_BYTES {
        return Err(ScanError::Parse(format!(
            "the file meta declares {group_len} bytes (at most {MAX_FILE_META_BYTES})"
        )));
    }
    let mut group = vec![0u8; group_len as usize];
    r.read_exact(&mut group).map_err(io)?;
    check_meta_lengths(&group)?;
    FileMetaTable::from_reader(&[&head[..], &group].concat()[..])
        .map_err(|e| ScanError::Parse(format!("file meta: {e}")))
}

/// Every element of the meta group (Explicit VR Little Endian) ends inside it.
fn check_meta_lengths(group: &[u8]) -> Result<(), ScanError> {
    let mut at = 0usize;
    while at < group.len() {
        let header = group.get(at..at + 8).ok_or_else(|| {
            ScanError::Parse(format!(
                "the file meta ends inside an element header at {at}"
            ))
        })?;
        let word = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let what = format!("file meta element ({:04X},{:04X})", word(0), word(2));
        let long = crate::codec::native::has_long_length(&header[4..6]);
        let (header_len, len) = if long {
            let bytes = group.get(at + 8..at + 12).ok_or_else(|| {
                ScanError::Parse(format!("the file meta ends inside the header of {what}"))
            })?;
            (12, u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
        } else {
            (8, u32::from(word(6)))
        };
        let left = (group.len() - at - header_len) as u64;
        if u64::from(len) > left {
            return Err(ScanError::LengthPastEnd { what, len, left });
        }
        at += header_len + len as usize;
    }
    Ok(())
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// A top-level element at or after the stop tag was reached.
    ReachedStop,
    /// The data ended cleanly.
    End,
    /// The data ended in the middle of an element (a truncated head, for instance).
    Truncated,
}

/// Walks the tokens of a data set encoded in `ts` until the top-level `stop` tag, the end,
/// or `max_bytes` of decoded input. Deflated data is inflated on the way.
pub fn scan<R: Read + 'static>(
    source: R,
    ts: &TransferSyntax,
    stop: Option<Tag>,
    max_bytes: u64,
) -> Result<ScanEnd, ScanError> {
    let source: Box<dyn Read> = match ts.codec() {
        Codec::Dataset(Some(adapter)) => adapter.adapt_reader(Box::new(source)),
        _ => Box::new(source),
    };
    // One byte more than allowed, to tell "exactly at the limit" from "over it".
    let count = Rc::new(Cell::new(0u64));
    let counted = CountingReader {
        inner: source.take(max_bytes + 1),
        count: count.clone(),
    };
    let over = || count.get() > max_bytes;
    let mut reader =
        DataSetReader::new_with_ts(counted, ts).map_err(|e| ScanError::Parse(e.to_string()))?;
    let mut depth = 0usize;
    loop {
        let token = match reader.next() {
            None if over() => return Err(ScanError::TooLarge(max_bytes)),
            None => return Ok(ScanEnd::End),
            Some(Ok(token)) => token,
            Some(Err(_)) if over() => return Err(ScanError::TooLarge(max_bytes)),
            Some(Err(e)) if is_eof(&e) => return Ok(ScanEnd::Truncated),
            Some(Err(e)) => return Err(ScanError::Parse(e.to_string())),
        };
        let at_stop = |tag: Tag| depth == 0 && stop.is_some_and(|s| tag >= s);
        let stops_here = match &token {
            DataToken::ElementHeader(h) => at_stop(h.tag),
            DataToken::SequenceStart { tag, .. } => at_stop(*tag),
            // Encapsulated Pixel Data: its fragments are not looked into.
            DataToken::PixelSequenceStart => at_stop(tags::PIXEL_DATA),
            _ => false,
        };
        let left = max_bytes.saturating_sub(count.get());
        if let Some((what, len)) = declared_length(&token).filter(|_| !stops_here) {
            if u64::from(len) > left {
                return Err(ScanError::LengthPastEnd { what, len, left });
            }
        }
        match token {
            DataToken::ElementHeader(header) if at_stop(header.tag) => {
                return Ok(ScanEnd::ReachedStop)
            }
            DataToken::SequenceStart { tag, .. } if at_stop(tag) => {
                return Ok(ScanEnd::ReachedStop)
            }
            DataToken::PixelSequenceStart if stops_here => return Ok(ScanEnd::ReachedStop),
            DataToken::SequenceStart { .. }
            | DataToken::PixelSequenceStart
            | DataToken::ItemStart { .. } => {
                depth += 1;
                // Two tokens per level: the sequence and its item.
                if depth > MAX_NESTING * 2 {
                    return Err(ScanError::TooDeep);
                }
            }
            DataToken::SequenceEnd | DataToken::ItemEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        if over() {
            return Err(ScanError::TooLarge(max_bytes));
        }
    }
}

/// The defined length a token announces (an element's value, a sequence, an item or a
/// pixel data fragment), with what it belongs to.
fn declared_length(token: &DataToken) -> Option<(String, u32)> {
    match token {
        DataToken::ElementHeader(h) => h.len.get().map(|len| (format!("element {}", h.tag), len)),
        DataToken::SequenceStart { tag, len } => {
            len.get().map(|len| (format!("sequence {tag}"), len))
        }
        DataToken::ItemStart { len } => len.get().map(|len| ("an item".to_string(), len)),
        _ => None,
    }
}

fn is_eof(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        let text = err.to_string().to_lowercase();
        if text.contains("unexpected end")
            || text.contains("eof")
            || text.contains("fill whole buffer")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Counts bytes read, so the scan can tell when the size limit was hit.
struct CountingReader<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

    /// `levels` nested (0008,1115) sequences of undefined length, each with one item.
    pub(crate) fn nested(levels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..levels {
            out.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..levels {
            out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        out
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let deep = nested(4000);
        assert!(matches!(
            scan(std::io::Cursor::new(deep), &ts, None, 1 << 20),
            Err(ScanError::TooDeep)
        ));
        assert_eq!(
            scan(std::io::Cursor::new(nested(5)), &ts, None, 1 << 20).unwrap(),
            ScanEnd::End
        );
    }

    #[test]
    fn size_limit_and_truncation_are_told_apart() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        // (0010,0010) PN of 200 bytes.
        let mut element = vec![0x10, 0x00, 0x10, 0x00, b'P', b'N', 200, 0];
        element.extend(std::iter::repeat_n(b'A', 200));
        // One element longer than the limit is refused at its header, before its value is
        // read; elements that add up to more than the limit, once the limit is passed.
        assert!(matches!(
            scan(std::io::Cursor::new(element.clone()), &ts, None, 100),
            Err(ScanError::LengthPastEnd {
                len: 200,
                left: 92,
                ..
            })
        ));
        let mut three = Vec::new();
        for element in [0x10u8, 0x20, 0x30] {
            three.extend_from_slice(&[0x10, 0x00, element, 0x00, b'L', b'O', 40, 0]);
            three.extend(std::iter::repeat_n(b'A', 40));
        }
        assert!(matches!(
            scan(std::io::Cursor::new(three), &ts, None, 100),
            Err(ScanError::TooLarge(100))
        ));
        let cut = element[..50].to_vec();
        assert_eq!(
            scan(std::io::Cursor::new(cut), &ts, None, 1000).unwrap(),
            ScanEnd::Truncated
        );
        // Reaching the stop tag ends the scan before anything after it is read.
        assert_eq!(
            scan(
                std::io::Cursor::new(element),
                &ts,
                Some(Tag(0x0010, 0x0000)),
                1000
            )
            .unwrap(),
            ScanEnd::ReachedStop
        );
    }

    #[test]
    fn the_stop_at_pixel_data_holds_for_encapsulated_pixel_data() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        // (0028,0010) US 512, then encapsulated (7FE0,0010): an empty offset table and the
        // first 8 bytes of a 1000-byte fragment, as a head read of an instance holds them.
        let mut head = vec![0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0, 0x00, 0x02];
        head.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        head.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        head.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xE8, 0x03, 0, 0]);
        head.extend_from_slice(&[0xFF, 0x4F, 0xFF, 0x51, 0, 0, 0, 0]);
        let len = head.len() as u64;
        let stop = Some(tags::PIXEL_DATA);
        assert_eq!(
            scan(std::io::Cursor::new(head.clone()), &ts, stop, len).unwrap(),
            ScanEnd::ReachedStop
        );
        // Without a stop, the fragment's length is checked against what is left.
        assert!(matches!(
            scan(std::io::Cursor::new(head), &ts, None, len),
            Err(ScanError::LengthPastEnd { len: 1000, .. })
        ));
    }

    /// Found by fuzzing (fuzz/regressions/identifier): a 97-byte identifier whose last
    /// element declares 1.16 GB made the scan and then the object builder each reserve and
    /// zero-fill that much, for seconds. Both are refused at the header now.
    #[test]
    fn a_length_past_the_end_is_refused_before_anything_is_reserved() {
        // (0008,0052) CS "STUDY ", then (5200,4300) CS with a 4-byte length of 0x45535245.
        let mut bytes = vec![0x08, 0x00, 0x52, 0x00, b'C', b'S', 6, 0];
        bytes.extend_from_slice(b"STUDY ");
        bytes.extend_from_slice(&[
            0x00, 0x52, 0x00, 0x43, b'O', b'B', 0, 0, 0x45, 0x52, 0x53, 0x45,
        ]);
        bytes.extend_from_slice(b"SERIES");
        let started = std::time::Instant::now();
        let err = decode_small(&bytes, "1.2.840.10008.1.2.1", 1 << 20).unwrap_err();
        assert!(!err.is_too_large(), "{err}");
        assert!(
            err.to_string()
                .contains("declares 1163088453 bytes, more than the 6 left"),
            "{err}"
        );
        // Milliseconds, not the seconds a 1 GiB zero-fill takes.
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        // A data set that ends inside an element header is not built at all.
        let cut = &bytes[..20];
        assert!(matches!(
            decode_small(cut, "1.2.840.10008.1.2.1", 1 << 20),
            Err(DecodeError::Parse(m)) if m.contains("truncated")
        ));
    }

    fn file_meta(elements: &[u8]) -> Vec<u8> {
        let mut out = b"DICM".to_vec();
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(elements.len() as u32).to_le_bytes());
        out.extend_from_slice(elements);
        out
    }

    /// Found by fuzzing (fuzz/regressions/transcode): a data set element declaring gigabytes
    /// made the decode path's parser (and `strata transcode`'s) zero-fill them.
    #[test]
    fn open_part10_checks_the_data_set_before_building_it() {
        let mut ts = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0];
        ts.extend_from_slice(b"1.2.840.10008.1.2.1\0");
        let mut file = vec![0u8; 128];
        file.extend(file_meta(&ts));
        // (0008,0060) CS "CT"
        file.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T']);
        let opened = open_part10(&file, 1 << 20).unwrap();
        assert_eq!(opened.meta().transfer_syntax(), "1.2.840.10008.1.2.1");
        // (0009,0010) OB declaring 0xF0000000 bytes, four present.
        let mut hostile = file.clone();
        hostile.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
        hostile.extend_from_slice(&0xF000_0000u32.to_le_bytes());
        hostile.extend_from_slice(&[1, 2, 3, 4]);
        let err = open_part10(&hostile, 1 << 20).unwrap_err();
        assert!(matches!(err, ScanError::LengthPastEnd { .. }), "{err}");
        assert!(open_part10(&file[..100], 1 << 20).is_err());
    }

    /// Found by fuzzing (fuzz/regressions/part10): a file meta element declaring 2 GiB made
    /// dicom-object's meta parser zero-fill 2 GiB for a 700-byte file.
    #[test]
    fn file_meta_lengths_are_checked_before_dicom_object_reads_them() {
        // (0002,0010) UI "1.2.840.10008.1.2.1"
        let mut ts = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0];
        ts.extend_from_slice(b"1.2.840.10008.1.2.1\0");
        // (0002,0001) OB with a length of 0x80000000 and two bytes.
        let mut hostile = vec![
            0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 0, 0, 0, 0x80, 0, 1,
        ];
        hostile.extend_from_slice(&ts);
        let err = read_file_meta(&mut &file_meta(&hostile)[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("file meta element (0002,0001) declares 2147483648 bytes"),
            "{err}"
        );
        // An unknown VR is read as UN, with a 4-byte length (found by fuzzing too).
        let mut unknown = vec![
            0x02, 0x00, 0x03, 0x00, 0xAB, 0xBB, 0x20, 0x00, 0, 0, 0, 0x80,
        ];
        unknown.extend_from_slice(&ts);
        let err = read_file_meta(&mut &file_meta(&unknown)[..]).unwrap_err();
        assert!(
            err.to_string().contains("(0002,0003) declares 2147483648"),
            "{err}"
        );
        // A group length beyond the cap is refused without reading on.
        let mut huge = file_meta(&[]);
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_file_meta(&mut &huge[..]).is_err());
        // A well-formed group is read, and the stream is left at the data set.
        let mut stream = file_meta(&ts);
        stream.extend_from_slice(b"DATA");
        let mut r = &stream[..];
        let _ = read_file_meta(&mut r);
        assert_eq!(r, b"DATA");
    }
}
