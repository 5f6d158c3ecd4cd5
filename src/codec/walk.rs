//! Whether a data set arrived whole: a walk over its element headers as the fragments stream
//! in, skipping values without holding them (I/O-free, a few bytes of state). A C-STORE
//! whose data set ends inside an element (its last element shorter than its declared length,
//! a header cut short, an undefined-length sequence never closed) is a truncated transfer and
//! must not be acknowledged. The indexing parse stops before the pixel data, so it cannot see
//! this.
//!
//! The same walk finds where the top-level native Pixel Data sits, so a retrieve can
//! re-encode an instance of any size around it (`retrieve::stream`).
//!
//! Implicit and Explicit VR Little Endian (encapsulated pixel data included) and Explicit VR
//! Big Endian; for a deflated data set, or when the structure is not one the walk
//! understands, it gives no verdict and the parser decides as before.

use std::fmt;

use super::native::{has_long_length, Native, PixelData};

/// Deepest nesting of undefined-length sequences and items followed.
const MAX_DEPTH: usize = 64;

/// (FFFE,E000) Item, (FFFE,E00D) Item Delimitation, (FFFE,E0DD) Sequence Delimitation.
const ITEM: u32 = 0xFFFE_E000;
const ITEM_END: u32 = 0xFFFE_E00D;
const SEQUENCE_END: u32 = 0xFFFE_E0DD;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: u32 = 0x7FE0_0010;

/// Where the data set ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub tag: Option<(u16, u16)>,
    pub what: String,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            Some((g, e)) => write!(f, "data set truncated in ({g:04X},{e:04X}): {}", self.what),
            None => write!(f, "data set truncated: {}", self.what),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Elements of a data set (top level, or an undefined-length item) in `syntax`.
    DataSet { syntax: Native },
    /// Items of an undefined-length sequence or encapsulated pixel data; the items' data
    /// sets are in `syntax`.
    Items { syntax: Native },
}

/// The walk over one data set.
#[derive(Debug)]
pub struct ElementWalk {
    /// Contexts entered; the first is the top-level data set.
    stack: Vec<Context>,
    /// Header bytes gathered so far.
    header: Vec<u8>,
    /// Value bytes still to skip, and the tag they belong to.
    skipping: Option<(u64, u32, u64)>,
    /// The structure was not understood: no verdict.
    lost: bool,
    last_tag: Option<u32>,
    /// Bytes followed so far.
    at: u64,
    /// The top-level native (not encapsulated) Pixel Data element.
    native_pixel_data: Option<PixelData>,
}

impl ElementWalk {
    /// A walk for a data set in `syntax` (an encapsulated syntax walks as Explicit VR
    /// Little Endian).
    pub fn new(syntax: Native) -> ElementWalk {
        ElementWalk {
            stack: vec![Context::DataSet { syntax }],
            header: Vec::with_capacity(12),
            skipping: None,
            lost: false,
            last_tag: None,
            at: 0,
            native_pixel_data: None,
        }
    }

    /// The declared length of the top-level Pixel Data (7FE0,0010) when it is native (a
    /// defined length), for the check against the image's dimensions.
    pub fn native_pixel_data_len(&self) -> Option<u64> {
        self.native_pixel_data().map(|p| u64::from(p.length))
    }

    /// The top-level Pixel Data when it is native, once its header has been followed.
    pub fn native_pixel_data(&self) -> Option<PixelData> {
        self.native_pixel_data.filter(|_| !self.lost)
    }

    /// Whether the walk met a structure it does not understand (it then has no verdict).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Follows the next bytes of the data set.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if let Some((remaining, tag, declared)) = self.skipping {
                let n = remaining.min(bytes.len() as u64);
                bytes = &bytes[n as usize..];
                self.at += n;
                self.skipping = (remaining > n).then_some((remaining - n, tag, declared));
                continue;
            }
            let Some(&context) = self.stack.last() else {
                // Bytes after the top-level data set closed: cannot happen (it never closes).
                self.lost = true;
                return;
            };
            let (need, known) = self.header_len(context);
            let take = (need - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.at += take as u64;
            if self.header.len() == need && known {
                self.on_header(context);
            }
        }
    }

    /// Bytes the header being read needs (8, or 12 for explicit VRs with a 32-bit length),
    /// and whether that is known yet: in Explicit VR it is once the VR (bytes 4-5) is in.
    fn header_len(&self, context: Context) -> (usize, bool) {
        match context {
            Context::DataSet { syntax } if syntax.is_implicit() => (8, true),
            Context::DataSet { .. } if self.header.len() < 6 => (6, false),
            Context::DataSet { syntax } => {
                let tag = tag_of(syntax, &self.header);
                let vr = &self.header[4..6];
                if (tag >> 16) != 0xFFFE && has_long_length(vr) {
                    (12, true)
                } else {
                    (8, true)
                }
            }
            _ => (8, true),
        }
    }

    fn on_header(&mut self, context: Context) {
        let h = std::mem::take(&mut self.header);
        let syntax = match context {
            Context::DataSet { syntax } | Context::Items { syntax } => syntax,
        };
        let tag = tag_of(syntax, &h);
        self.last_tag = Some(tag);
        match context {
            Context::Items { syntax } => {
                let length = syntax.u32(&h[4..8]);
                match (tag, length) {
                    (SEQUENCE_END, _) => {
                        self.stack.pop();
                    }
                    (ITEM, UNDEFINED) => self.enter(Context::DataSet { syntax }),
                    (ITEM, n) => self.skip(tag, n),
                    _ => self.lost = true,
                }
            }
            Context::DataSet { syntax } => {
                if tag == ITEM_END && self.stack.len() > 1 {
                    self.stack.pop();
                    return;
                }
                if tag >> 16 == 0xFFFE {
                    self.lost = true;
                    return;
                }
                let (vr, length) = if syntax.is_implicit() {
                    (None, syntax.u32(&h[4..8]))
                } else {
                    let vr = [h[4], h[5]];
                    let length = if h.len() == 12 {
                        syntax.u32(&h[8..12])
                    } else {
                        u32::from(syntax.u16(&h[6..8]))
                    };
                    (Some(vr), length)
                };
                if length != UNDEFINED {
                    if tag == PIXEL_DATA && self.stack.len() == 1 {
                        self.native_pixel_data = Some(PixelData {
                            header_at: self.at - h.len() as u64,
                            value_at: self.at,
                            length,
                            vr,
                        });
                    }
                    return self.skip(tag, length);
                }
                match vr.as_ref().map(|v| &v[..]) {
                    // Implicit VR: only a sequence has an undefined length.
                    None => self.enter(Context::Items { syntax }),
                    Some(b"SQ") => self.enter(Context::Items { syntax }),
                    // PS3.5 6.2.2: an undefined-length UN is an Implicit VR Little Endian
                    // sequence, whatever the syntax around it.
                    Some(b"UN") => self.enter(Context::Items {
                        syntax: Native::ImplicitLittle,
                    }),
                    // Encapsulated pixel data: fragments as items.
                    Some(b"OB") | Some(b"OW") => self.enter(Context::Items { syntax }),
                    _ => self.lost = true,
                }
            }
        }
    }

    fn enter(&mut self, context: Context) {
        if self.stack.len() >= MAX_DEPTH {
            self.lost = true;
        } else {
            self.stack.push(context);
        }
    }

    fn skip(&mut self, tag: u32, length: u32) {
        if length > 0 {
            self.skipping = Some((u64::from(length), tag, u64::from(length)));
        }
    }

    /// The verdict once the data set has ended: `Err` if it ended inside something.
    pub fn finish(&self) -> Result<(), Truncated> {
        if self.lost {
            return Ok(());
        }
        let split = |tag: u32| ((tag >> 16) as u16, tag as u16);
        if let Some((remaining, tag, declared)) = self.skipping {
            return Err(Truncated {
                tag: Some(split(tag)),
                what: format!("{} of its {declared} bytes arrived", declared - remaining),
            });
        }
        if !self.header.is_empty() {
            return Err(Truncated {
                tag: self.last_tag.map(split),
                what: format!("it ends {} bytes into an element header", self.header.len()),
            });
        }
        if self.stack.len() > 1 {
            return Err(Truncated {
                tag: self.last_tag.map(split),
                what: "an undefined-length sequence or item is never closed".into(),
            });
        }
        Ok(())
    }
}

fn tag_of(syntax: Native, h: &[u8]) -> u32 {
    (u32::from(syntax.u16(&h[0..2])) << 16) | u32::from(syntax.u16(&h[2..4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
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

    fn tagged(tag: u32, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out
    }

    /// A data set with an undefined-length sequence (one undefined-length item) and
    /// encapsulated pixel data, whole.
    fn whole() -> Vec<u8> {
        let mut d = explicit((0x0008, 0x0018), b"UI", b"1.2.3.4\0");
        d.extend(b"\x08\x00\x15\x11SQ\0\0\xff\xff\xff\xff");
        d.extend(tagged(ITEM, UNDEFINED));
        d.extend(explicit((0x0008, 0x1155), b"UI", b"1.2\0"));
        d.extend(tagged(ITEM_END, 0));
        d.extend(tagged(SEQUENCE_END, 0));
        d.extend(b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff");
        d.extend(tagged(ITEM, 0));
        d.extend(tagged(ITEM, 6));
        d.extend(b"abcdef");
        d.extend(tagged(SEQUENCE_END, 0));
        d
    }

    fn walk(bytes: &[u8], chunk: usize, explicit_vr: bool) -> Result<(), Truncated> {
        let syntax = if explicit_vr {
            Native::ExplicitLittle
        } else {
            Native::ImplicitLittle
        };
        let mut w = ElementWalk::new(syntax);
        for c in bytes.chunks(chunk.max(1)) {
            w.push(c);
        }
        w.finish()
    }

    #[test]
    fn a_whole_data_set_passes_in_any_fragmentation() {
        let d = whole();
        for chunk in [1, 3, 7, 64, d.len()] {
            assert_eq!(walk(&d, chunk, true), Ok(()), "chunk {chunk}");
        }
        let mut implicit = Vec::new();
        implicit.extend(tagged(0x0008_0018, 4));
        implicit.extend(b"1.2\0");
        implicit.extend(tagged(0x0008_1115, UNDEFINED));
        implicit.extend(tagged(ITEM, UNDEFINED));
        implicit.extend(tagged(0x0008_1155, 4));
        implicit.extend(b"1.2\0");
        implicit.extend(tagged(ITEM_END, 0));
        implicit.extend(tagged(SEQUENCE_END, 0));
        implicit.extend(tagged(0x7FE0_0010, 4));
        implicit.extend(b"\0\0\0\0");
        assert_eq!(walk(&implicit, 5, false), Ok(()));
        assert_eq!(walk(&[], 1, true), Ok(()), "an empty data set is whole");
    }

    #[test]
    fn every_cut_of_a_data_set_is_found() {
        let d = whole();
        // A cut between two top-level elements leaves a shorter data set that is whole (the
        // UI element ends at 16, the sequence at 64); every other cut is inside something.
        for cut in 1..d.len() {
            let verdict = walk(&d[..cut], 5, true);
            assert_eq!(
                verdict.is_ok(),
                cut == 16 || cut == 64,
                "cut at {cut}: {verdict:?}"
            );
        }
        let mut short = explicit((0x0008, 0x0018), b"UI", b"1.2\0");
        short.extend(b"\xe0\x7f\x10\x00OW\0\0\x00\x10\x00\x00");
        short.extend(vec![0u8; 4000]);
        let mut w = ElementWalk::new(Native::ExplicitLittle);
        w.push(&short);
        assert_eq!(w.native_pixel_data_len(), Some(4096));
        assert_eq!(
            w.native_pixel_data(),
            Some(PixelData {
                header_at: 12,
                value_at: 24,
                length: 4096,
                vr: Some(*b"OW")
            })
        );
        let err = walk(&short, 512, true).unwrap_err();
        assert_eq!(err.tag, Some((0x7FE0, 0x0010)));
        assert_eq!(
            err.to_string(),
            "data set truncated in (7FE0,0010): 4000 of its 4096 bytes arrived"
        );
    }

    #[test]
    fn a_structure_it_does_not_understand_gets_no_verdict() {
        // An undefined length on a VR that cannot have one: the parser decides.
        let mut d = b"\x08\x00\x18\x00UT\0\0\xff\xff\xff\xff".to_vec();
        d.extend(b"xx");
        assert_eq!(walk(&d, 4, true), Ok(()));
    }

    #[test]
    fn finds_the_top_level_pixel_data_past_sequences_and_a_un_sequence_in_any_fragmentation() {
        let mut d = explicit((0x0008, 0x0016), b"UI", b"1.2\0");
        d.extend(b"\x08\x00\x40\x11SQ\0\0\xff\xff\xff\xff");
        d.extend(tagged(ITEM, UNDEFINED));
        d.extend(explicit((0x0008, 0x1150), b"UI", b"1.2\0"));
        d.extend(tagged(ITEM_END, 0));
        d.extend(tagged(SEQUENCE_END, 0));
        // A private UN of undefined length: Implicit VR inside, with a Pixel Data tag that is
        // not at the top level.
        d.extend(b"\x09\x00\x10\x10UN\0\0\xff\xff\xff\xff");
        d.extend(tagged(ITEM, UNDEFINED));
        d.extend(tagged(PIXEL_DATA, 2));
        d.extend(b"\x01\x02");
        d.extend(tagged(ITEM_END, 0));
        d.extend(tagged(SEQUENCE_END, 0));
        let header_at = d.len() as u64;
        d.extend(explicit((0x7FE0, 0x0010), b"OW", &[1, 2, 3, 4]));
        let expected = PixelData {
            header_at,
            value_at: header_at + 12,
            length: 4,
            vr: Some(*b"OW"),
        };
        for chunk in [1, 5, 12, d.len()] {
            let mut w = ElementWalk::new(Native::ExplicitLittle);
            for (i, c) in d.chunks(chunk).enumerate() {
                // Never found before its header has been followed.
                if ((i * chunk) as u64) < header_at + 12 {
                    assert_eq!(w.native_pixel_data(), None, "chunk {chunk}");
                }
                w.push(c);
            }
            assert_eq!(w.native_pixel_data(), Some(expected), "chunk {chunk}");
            assert_eq!(w.finish(), Ok(()));
        }
    }

    #[test]
    fn big_endian_is_walked_and_its_cuts_found() {
        let mut d = b"\x00\x08\x00\x16UI\x00\x04".to_vec();
        d.extend(b"1.2\0");
        d.extend(b"\x00\x08\x11\x40SQ\0\0\xff\xff\xff\xff");
        d.extend(b"\xff\xfe\xe0\x00\x00\x00\x00\x08");
        d.extend(b"\x00\x08\x11\x55UI\x00\x00");
        d.extend(b"\xff\xfe\xe0\xdd\0\0\0\0");
        d.extend(super::super::native::pixel_data_header(
            Native::ExplicitBig,
            *b"OW",
            4,
        ));
        d.extend([1, 2, 3, 4]);
        let mut w = ElementWalk::new(Native::ExplicitBig);
        w.push(&d);
        assert_eq!(w.finish(), Ok(()));
        let pixel = w.native_pixel_data().unwrap();
        assert_eq!((pixel.value_end(), pixel.length), (d.len() as u64, 4));
        let mut cut = ElementWalk::new(Native::ExplicitBig);
        cut.push(&d[..d.len() - 1]);
        assert_eq!(
            cut.finish().unwrap_err().to_string(),
            "data set truncated in (7FE0,0010): 3 of its 4 bytes arrived"
        );
    }

    #[test]
    fn hostile_nesting_and_lengths_allocate_nothing() {
        let mut w = ElementWalk::new(Native::ImplicitLittle);
        for _ in 0..1000 {
            w.push(&tagged(0x0008_1140, UNDEFINED));
            w.push(&tagged(ITEM, UNDEFINED));
        }
        assert!(w.is_lost(), "nesting is bounded");
        let mut w = ElementWalk::new(Native::ImplicitLittle);
        w.push(&tagged(0x0009_1010, 0xFFFF_FFFE));
        assert_eq!(w.native_pixel_data(), None);
        assert!(w.finish().is_err(), "a 4 GiB value never arrived");
    }
}
