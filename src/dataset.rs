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
use dicom_encoding::transfer_syntax::Codec;
use dicom_encoding::TransferSyntax;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
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
    // Scan first: nesting is refused before the (recursive) object builder sees it.
    scan(std::io::Cursor::new(bytes.to_vec()), ts, None, max_bytes)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| DecodeError::Parse(e.to_string()))
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
        match token {
            DataToken::ElementHeader(header) if at_stop(header.tag) => {
                return Ok(ScanEnd::ReachedStop)
            }
            DataToken::SequenceStart { tag, .. } if at_stop(tag) => {
                return Ok(ScanEnd::ReachedStop)
            }
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
        assert!(matches!(
            scan(std::io::Cursor::new(element.clone()), &ts, None, 100),
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
}
