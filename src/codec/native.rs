//! The byte layout of data sets in the three uncompressed transfer syntaxes (Implicit VR
//! Little Endian, Explicit VR Little Endian, Explicit VR Big Endian): where the top-level
//! Pixel Data element sits, how an element header is written in each, and the byte order of
//! its value. Pure functions over byte slices, so a retrieve can re-encode an instance of any
//! size by rewriting the few bytes around its pixel data and streaming the rest.

use dicom_core::Tag;

use crate::model::transfer_syntax::{
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;
/// Undefined-length sequences and items open at once; real data sets nest a handful.
const MAX_OPEN: usize = 64;

/// An uncompressed transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Native {
    /// The syntax for `uid`, if it is one of the three (deflated data sets are not: their
    /// bytes are a zlib stream).
    pub fn of(uid: &str) -> Option<Native> {
        match uid.trim_end_matches('\0') {
            IMPLICIT_VR_LITTLE_ENDIAN => Some(Native::ImplicitLittle),
            EXPLICIT_VR_LITTLE_ENDIAN => Some(Native::ExplicitLittle),
            EXPLICIT_VR_BIG_ENDIAN => Some(Native::ExplicitBig),
            _ => None,
        }
    }

    fn big_endian(self) -> bool {
        self == Native::ExplicitBig
    }

    fn u16(self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.big_endian() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big_endian() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn put_u16(self, out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&if self.big_endian() {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put_u32(self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&if self.big_endian() {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
}

/// Whether an explicit VR has the 4-byte length form (PS3.5 7.1.2). Every VR but the
/// listed short ones does, and so does an unknown VR (read as UN, as dicom-object does).
pub fn has_long_length(vr: &[u8]) -> bool {
    !matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// The top-level Pixel Data element of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelData {
    /// Offset of its element header in the data set.
    pub header_at: usize,
    /// Offset of its value.
    pub value_at: usize,
    /// Length of its value.
    pub length: u32,
    /// Its VR as encoded (`None` in Implicit VR).
    pub vr: Option<[u8; 2]>,
}

impl PixelData {
    /// Offset of the first byte after its value.
    pub fn value_end(&self) -> u64 {
        self.value_at as u64 + u64::from(self.length)
    }
}

/// What a walk over the start of a data set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The top-level Pixel Data element, with a defined length.
    Found(PixelData),
    /// The bytes end before the walk could decide; it needs at least this many.
    NeedMore(usize),
    /// The data set has no top-level Pixel Data element (it ended, or a later tag came).
    Absent,
}

/// Why a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("{0} at offset {1} with no open sequence or item")]
    StrayDelimiter(Tag, usize),
    #[error("more than {MAX_OPEN} undefined-length sequences and items open at offset {0}")]
    TooDeep(usize),
    #[error("the top-level Pixel Data has an undefined length in an uncompressed syntax")]
    UndefinedPixelData,
}

/// Walks the data set `bytes` (encoded in `syntax`) element by element, skipping values by
/// their lengths and entering only undefined-length sequences and items, until the top-level
/// Pixel Data. `complete` says `bytes` is the whole data set (then running out means
/// [`Walk::Absent`]). Lengths are trusted only to move forward: nothing is allocated.
pub fn find_pixel_data(bytes: &[u8], syntax: Native, complete: bool) -> Result<Walk, WalkError> {
    // The syntax of each open undefined-length sequence or item: inside an explicit UN of
    // undefined length the encoding is Implicit VR Little Endian (PS3.5 6.2.2).
    let mut open: Vec<Native> = Vec::new();
    let mut at = 0usize;
    loop {
        let here = open.last().copied().unwrap_or(syntax);
        let need = |n: usize| {
            if complete {
                Ok(Walk::Absent)
            } else {
                Ok(Walk::NeedMore(n))
            }
        };
        let Some(head) = bytes.get(at..at + 8) else {
            return need(at + 8);
        };
        let tag = Tag(here.u16(&head[0..2]), here.u16(&head[2..4]));
        if tag == ITEM_END || tag == SEQUENCE_END {
            if open.pop().is_none() {
                return Err(WalkError::StrayDelimiter(tag, at));
            }
            at += 8;
            continue;
        }
        let (header, length, vr) = if tag == ITEM || here == Native::ImplicitLittle {
            (8, here.u32(&head[4..8]), None)
        } else if has_long_length(&head[4..6]) {
            let Some(long) = bytes.get(at + 8..at + 12) else {
                return need(at + 12);
            };
            (12, here.u32(long), Some([head[4], head[5]]))
        } else {
            (
                8,
                u32::from(here.u16(&head[6..8])),
                Some([head[4], head[5]]),
            )
        };
        if open.is_empty() && tag >= PIXEL_DATA {
            if tag > PIXEL_DATA {
                return Ok(Walk::Absent);
            }
            if length == UNDEFINED {
                return Err(WalkError::UndefinedPixelData);
            }
            return Ok(Walk::Found(PixelData {
                header_at: at,
                value_at: at + header,
                length,
                vr,
            }));
        }
        at += header;
        if length == UNDEFINED {
            if open.len() >= MAX_OPEN {
                return Err(WalkError::TooDeep(at));
            }
            let inner = if vr == Some(*b"UN") {
                Native::ImplicitLittle
            } else {
                here
            };
            open.push(inner);
        } else {
            at = at.saturating_add(length as usize);
        }
    }
}

/// The header of a Pixel Data element of `length` bytes with `vr` (OB or OW) in `syntax`.
pub fn pixel_data_header(syntax: Native, vr: [u8; 2], length: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    syntax.put_u16(&mut out, PIXEL_DATA.0);
    syntax.put_u16(&mut out, PIXEL_DATA.1);
    if syntax != Native::ImplicitLittle {
        out.extend_from_slice(&vr);
        out.extend_from_slice(&[0, 0]);
    }
    syntax.put_u32(&mut out, length);
    out
}

/// The VR to write Pixel Data with: as encoded when the source says, else (Implicit VR,
/// where PS3.5 A.1 makes it OW) OB for samples of at most 8 bits and OW above.
pub fn pixel_data_vr(source: Option<[u8; 2]>, bits_allocated: u16) -> [u8; 2] {
    match source {
        Some(vr) if vr == *b"OB" || vr == *b"OW" => vr,
        _ if bits_allocated <= 8 => *b"OB",
        _ => *b"OW",
    }
}

/// Whether Pixel Data bytes change between `from` (with `from_vr`) and `to` (with `to_vr`):
/// OW is a stream of 16-bit words in each syntax's byte order, OB a stream of bytes.
pub fn swaps(from: Native, from_vr: [u8; 2], to: Native, to_vr: [u8; 2]) -> bool {
    let order = |syntax: Native, vr: [u8; 2]| vr == *b"OW" && syntax.big_endian();
    // An OW value in little endian has the same bytes as OB; only a big-endian OW differs.
    order(from, from_vr) != order(to, to_vr)
}

/// Swaps the bytes of each 16-bit word of `bytes` in place (a trailing odd byte stays).
pub fn swap_words(bytes: &mut [u8]) {
    for word in bytes.chunks_exact_mut(2) {
        word.swap(0, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit_le(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        if has_long_length(vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn finds_pixel_data_after_an_undefined_length_sequence_and_a_un_sequence() {
        let mut ds = explicit_le((0x0008, 0x0016), b"UI", b"1.2\0");
        // (0008,1140) SQ undefined, one undefined item holding a short element.
        ds.extend_from_slice(&[
            0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend(explicit_le((0x0008, 0x1150), b"UI", b"1.2\0"));
        ds.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        // A private UN of undefined length: implicit VR inside, with a pixel-data-like tag
        // that must not count (it is not at the top level).
        ds.extend_from_slice(&[
            0x09, 0, 0x10, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 2, 0, 0, 0, 1, 2]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let header_at = ds.len();
        ds.extend(explicit_le((0x7FE0, 0x0010), b"OW", &[1, 2, 3, 4]));
        let expected = PixelData {
            header_at,
            value_at: header_at + 12,
            length: 4,
            vr: Some(*b"OW"),
        };
        assert_eq!(
            find_pixel_data(&ds, Native::ExplicitLittle, true),
            Ok(Walk::Found(expected))
        );
        // Any cut before the pixel data header ends asks for more, never finds or fails.
        for cut in 0..header_at + 12 {
            match find_pixel_data(&ds[..cut], Native::ExplicitLittle, false) {
                Ok(Walk::NeedMore(n)) => assert!(n > cut, "cut {cut}: {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn implicit_and_big_endian_headers_and_absent_pixel_data() {
        let mut ds = vec![0x08, 0, 0x16, 0, 4, 0, 0, 0];
        ds.extend_from_slice(b"1.2\0");
        let header_at = ds.len();
        ds.extend(pixel_data_header(Native::ImplicitLittle, *b"OW", 2));
        ds.extend_from_slice(&[5, 6]);
        let found = find_pixel_data(&ds, Native::ImplicitLittle, true).unwrap();
        assert_eq!(
            found,
            Walk::Found(PixelData {
                header_at,
                value_at: header_at + 8,
                length: 2,
                vr: None
            })
        );
        let big = pixel_data_header(Native::ExplicitBig, *b"OB", 0x0102_0304);
        assert_eq!(big, [0x7F, 0xE0, 0x00, 0x10, b'O', b'B', 0, 0, 1, 2, 3, 4]);
        let Walk::Found(p) = find_pixel_data(&big, Native::ExplicitBig, false).unwrap() else {
            panic!()
        };
        assert_eq!((p.length, p.vr), (0x0102_0304, Some(*b"OB")));
        // No pixel data: the end (when complete) or a later top-level tag says so.
        assert_eq!(
            find_pixel_data(&ds[..header_at], Native::ImplicitLittle, true),
            Ok(Walk::Absent)
        );
        let later = explicit_le((0xFFFC, 0xFFFC), b"OB", &[0, 0]);
        assert_eq!(
            find_pixel_data(&later, Native::ExplicitLittle, false),
            Ok(Walk::Absent)
        );
    }

    #[test]
    fn hostile_layouts_are_refused_without_allocating() {
        let stray = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        assert!(matches!(
            find_pixel_data(&stray, Native::ExplicitLittle, true),
            Err(WalkError::StrayDelimiter(..))
        ));
        let deep: Vec<u8> = std::iter::repeat_n([0x08, 0, 0x40, 0x11, 0xFF, 0xFF, 0xFF, 0xFF], 100)
            .flatten()
            .collect();
        assert!(matches!(
            find_pixel_data(&deep, Native::ImplicitLittle, false),
            Err(WalkError::TooDeep(_))
        ));
        // A 4 GiB length skips forward and asks for the bytes after it.
        let huge = [0x09, 0, 0x10, 0x10, 0xFE, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            find_pixel_data(&huge, Native::ImplicitLittle, false),
            Ok(Walk::NeedMore(8 + 0xFFFF_FFFE + 8))
        );
        let undefined = [0xE0, 0x7F, 0x10, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            find_pixel_data(&undefined, Native::ImplicitLittle, true),
            Err(WalkError::UndefinedPixelData)
        );
    }

    #[test]
    fn only_a_big_endian_ow_changes_the_bytes() {
        use Native::*;
        assert!(!swaps(ImplicitLittle, *b"OW", ExplicitLittle, *b"OW"));
        assert!(swaps(ExplicitLittle, *b"OW", ExplicitBig, *b"OW"));
        assert!(swaps(ExplicitBig, *b"OW", ImplicitLittle, *b"OW"));
        assert!(!swaps(ExplicitBig, *b"OB", ExplicitLittle, *b"OB"));
        assert!(!swaps(ImplicitLittle, *b"OW", ExplicitBig, *b"OB"));
        assert_eq!(pixel_data_vr(None, 8), *b"OB");
        assert_eq!(pixel_data_vr(None, 16), *b"OW");
        assert_eq!(pixel_data_vr(Some(*b"OW"), 8), *b"OW");
        let mut words = [1, 2, 3, 4, 5];
        swap_words(&mut words);
        assert_eq!(words, [2, 1, 4, 3, 5]);
    }
}
