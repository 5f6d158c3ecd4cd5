//! The byte layout of data sets in the three uncompressed transfer syntaxes (Implicit VR
//! Little Endian, Explicit VR Little Endian, Explicit VR Big Endian): how lengths and
//! headers are read and written in each, and the byte order of a Pixel Data value. With the
//! walk that finds the top-level Pixel Data (`super::walk`), a retrieve re-encodes an
//! instance of any size by rewriting the few bytes around its pixel data and streaming the
//! rest.

use dicom_core::Tag;

use crate::model::transfer_syntax::{
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

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

    pub fn is_implicit(self) -> bool {
        self == Native::ImplicitLittle
    }

    /// The 16-bit number at the start of `b`, in this syntax's byte order.
    pub fn u16(self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.big_endian() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    /// The 32-bit number at the start of `b`, in this syntax's byte order.
    pub fn u32(self, b: &[u8]) -> u32 {
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
    pub header_at: u64,
    /// Offset of its value.
    pub value_at: u64,
    /// Length of its value.
    pub length: u32,
    /// Its VR as encoded (`None` in Implicit VR).
    pub vr: Option<[u8; 2]>,
}

impl PixelData {
    /// Offset of the first byte after its value.
    pub fn value_end(&self) -> u64 {
        self.value_at + u64::from(self.length)
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

    #[test]
    fn headers_in_each_syntax() {
        assert_eq!(
            pixel_data_header(Native::ExplicitBig, *b"OB", 0x0102_0304),
            [0x7F, 0xE0, 0x00, 0x10, b'O', b'B', 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            pixel_data_header(Native::ExplicitLittle, *b"OW", 2),
            [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            pixel_data_header(Native::ImplicitLittle, *b"OW", 2),
            [0xE0, 0x7F, 0x10, 0x00, 2, 0, 0, 0]
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
