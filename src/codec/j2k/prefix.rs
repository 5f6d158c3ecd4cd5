//! Reduced-resolution codestreams cut from the first bytes of a single-tile, resolution-major
//! (RPCL) codestream with PLT markers, as [`super::encode`] writes them. Reading only
//! `Encoded::resolution_ends[r]` bytes of a stored codestream and passing them here gives a
//! complete codestream that decoders read at `1 / 2^(levels - r)` of the full size (their
//! "reduce" option): the main header without TLM, one tile-part holding the packets of
//! resolutions `0..=r` with its SOT and PLT rewritten to match, EOC.
//!
//! The input comes from storage, so it is checked as untrusted bytes: whatever it holds, the
//! answer is a codestream or an error, never a panic.

/// Why a prefix could not be cut.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("not a JPEG 2000 codestream (no SOC marker)")]
    NotCodestream,
    #[error("the codestream ends inside its headers")]
    Truncated,
    #[error("marker {0:#06X} has an invalid length")]
    BadMarker(u16),
    #[error("unsupported codestream for resolution prefixes: {0}")]
    Unsupported(&'static str),
    #[error("{asked} resolutions asked of a codestream with {have}")]
    NoSuchResolution { asked: usize, have: usize },
    #[error("the PLT markers list {listed} packets, the headers imply {expected}")]
    PacketCount { listed: usize, expected: usize },
    #[error("{needed} bytes are needed, {have} were given")]
    Short { needed: usize, have: usize },
}

const SOC: u16 = 0xFF4F;
const SIZ: u16 = 0xFF51;
const COD: u16 = 0xFF52;
const COC: u16 = 0xFF53;
const TLM: u16 = 0xFF55;
const PLT: u16 = 0xFF58;
const POC: u16 = 0xFF5F;
const SOT: u16 = 0xFF90;
const SOD: u16 = 0xFF93;

fn u16_at(b: &[u8], at: usize) -> Result<u16, PrefixError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(PrefixError::Truncated)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PrefixError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(PrefixError::Truncated)
}

/// One marker segment: its code and body (after the length field).
fn segment(b: &[u8], at: usize) -> Result<(u16, &[u8]), PrefixError> {
    let code = u16_at(b, at)?;
    let len = u16_at(b, at + 2)? as usize;
    if len < 2 {
        return Err(PrefixError::BadMarker(code));
    }
    let body = b.get(at + 4..at + 2 + len).ok_or(PrefixError::Truncated)?;
    Ok((code, body))
}

/// What the main header says about the packets.
#[derive(Default)]
struct Layout {
    components: usize,
    layers: usize,
    resolutions: usize,
    /// The image area's size (Xsiz - XOsiz, Ysiz - YOsiz).
    columns: u32,
    rows: u32,
}

/// Parses the main header; returns it without TLM, the layout and where SOT starts.
fn main_header(b: &[u8]) -> Result<(Vec<u8>, Layout, usize), PrefixError> {
    if u16_at(b, 0).ok() != Some(SOC) {
        return Err(PrefixError::NotCodestream);
    }
    let mut kept = SOC.to_be_bytes().to_vec();
    let mut layout = Layout::default();
    let mut at = 2;
    loop {
        let code = u16_at(b, at)?;
        if code == SOT {
            break;
        }
        let (_, body) = segment(b, at)?;
        let end = at + 4 + body.len();
        match code {
            SIZ => {
                let dim = |i: usize| u32_at(body, 2 + 4 * i);
                let (w, h, x0, y0, tw, th, tx0, ty0) = (
                    dim(0)?,
                    dim(1)?,
                    dim(2)?,
                    dim(3)?,
                    dim(4)?,
                    dim(5)?,
                    dim(6)?,
                    dim(7)?,
                );
                let one_tile = tw > 0
                    && th > 0
                    && tx0 <= x0
                    && ty0 <= y0
                    && w.saturating_sub(tx0) <= tw
                    && h.saturating_sub(ty0) <= th;
                if !one_tile {
                    return Err(PrefixError::Unsupported("more than one tile"));
                }
                layout.components = u16_at(body, 34)? as usize;
                layout.columns = w.saturating_sub(x0);
                layout.rows = h.saturating_sub(y0);
            }
            COD => {
                let scod = *body.first().ok_or(PrefixError::Truncated)?;
                if scod & 1 != 0 {
                    return Err(PrefixError::Unsupported("precincts other than the default"));
                }
                if *body.get(1).ok_or(PrefixError::Truncated)? != super::codestream::RPCL {
                    return Err(PrefixError::Unsupported(
                        "progression order other than RPCL",
                    ));
                }
                layout.layers = u16_at(body, 2)? as usize;
                layout.resolutions = *body.get(5).ok_or(PrefixError::Truncated)? as usize + 1;
            }
            COC | POC => {
                return Err(PrefixError::Unsupported("COC or POC markers"));
            }
            _ => {}
        }
        if code != TLM {
            kept.extend_from_slice(&b[at..end]);
        }
        at = end;
    }
    if layout.components == 0 || layout.layers == 0 || layout.resolutions == 0 {
        return Err(PrefixError::Unsupported("no SIZ or COD in the main header"));
    }
    Ok((kept, layout, at))
}

/// Decodes the Iplt lengths of the PLT segments' bodies (after Zplt).
fn packet_lengths(iplt: &[u8]) -> Result<Vec<u32>, PrefixError> {
    let mut lens = Vec::new();
    let mut v: u32 = 0;
    for &byte in iplt {
        if v > (u32::MAX >> 7) {
            return Err(PrefixError::Unsupported("a packet longer than 4 GiB"));
        }
        v = (v << 7) | (byte & 0x7F) as u32;
        if byte & 0x80 == 0 {
            lens.push(v);
            v = 0;
        }
    }
    if v != 0 {
        return Err(PrefixError::BadMarker(PLT));
    }
    Ok(lens)
}

/// The full size (columns, rows) and the components a single-tile RPCL codestream's main
/// header declares: what a decoder would allocate for, read before it is trusted to.
pub fn declared_size(codestream: &[u8]) -> Result<(u32, u32, usize), PrefixError> {
    let (_, layout, _) = main_header(codestream)?;
    Ok((layout.columns, layout.rows, layout.components))
}

/// Cuts a codestream holding resolutions `0..resolutions` (the lowest first) from `prefix`,
/// which needs at least the bytes up to that resolution's end.
pub fn resolution_prefix(prefix: &[u8], resolutions: usize) -> Result<Vec<u8>, PrefixError> {
    let (header, layout, sot) = main_header(prefix)?;
    if resolutions == 0 || resolutions > layout.resolutions {
        return Err(PrefixError::NoSuchResolution {
            asked: resolutions,
            have: layout.resolutions,
        });
    }
    let (_, sot_body) = segment(prefix, sot)?;
    if sot_body.len() != 8 || u16_at(sot_body, 0)? != 0 || sot_body[6] != 0 {
        return Err(PrefixError::Unsupported(
            "a first tile-part other than tile 0's only",
        ));
    }
    let mut at = sot + 4 + sot_body.len();
    let mut iplt = Vec::new();
    loop {
        let code = u16_at(prefix, at)?;
        if code == SOD {
            at += 2;
            break;
        }
        let (_, body) = segment(prefix, at)?;
        if code != PLT || body.is_empty() {
            return Err(PrefixError::Unsupported(
                "tile-part header markers other than PLT",
            ));
        }
        iplt.extend_from_slice(&body[1..]);
        at += 4 + body.len();
    }
    let lens = packet_lengths(&iplt)?;
    let per_resolution = layout.components * layout.layers;
    let expected = per_resolution * layout.resolutions;
    if lens.len() != expected {
        return Err(PrefixError::PacketCount {
            listed: lens.len(),
            expected,
        });
    }
    let kept = &lens[..per_resolution * resolutions];
    let data_len: usize = kept.iter().map(|&l| l as usize).sum();
    let data = prefix.get(at..at + data_len).ok_or(PrefixError::Short {
        needed: at + data_len,
        have: prefix.len(),
    })?;
    let plt = super::codestream::plt(kept);
    let mut out = header;
    out.reserve(data_len + plt.len() + 16);
    super::codestream::tile_part(&mut out, 0, &plt, data);
    out.extend_from_slice(&super::codestream::EOC);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::j2k::{encode, EncodeParams, Image, Samples};

    fn ramp(w: u32, h: u32) -> Vec<u16> {
        (0..w * h)
            .map(|i| ((i % w) * 7 + (i / w) * 3) as u16 & 0xFFF)
            .collect()
    }

    fn gray12(w: u32, h: u32, px: &[u16]) -> Image<'_> {
        Image {
            width: w,
            height: h,
            components: 1,
            bits_stored: 12,
            signed: false,
            samples: Samples::U16(px),
        }
    }

    #[test]
    fn each_resolution_end_cuts_a_prefix_and_the_last_one_is_the_whole() {
        let px = ramp(64, 48);
        let image = gray12(64, 48, &px);
        let enc = encode(&image, &EncodeParams::default()).unwrap();
        let cs = &enc.codestream;
        let ends = &enc.resolution_ends;
        assert_eq!(ends.len(), enc.levels as usize + 1);
        assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
        assert_eq!(*ends.last().unwrap(), cs.len() - 2, "the last ends at EOC");
        for (r, &end) in ends.iter().enumerate() {
            let cut = resolution_prefix(&cs[..end], r + 1).unwrap();
            assert_eq!(&cut[cut.len() - 2..], &[0xFF, 0xD9]);
            assert!(cut.len() <= end + 2, "no bigger than what was read");
            assert_eq!(
                resolution_prefix(&cs[..end - 1], r + 1),
                Err(PrefixError::Short {
                    needed: end,
                    have: end - 1
                })
            );
        }
        // The whole resolution set, cut from the whole codestream, is the codestream
        // without its TLM marker.
        let whole = resolution_prefix(cs, ends.len()).unwrap();
        assert_eq!(whole.len(), cs.len() - 12);
        assert_eq!(
            resolution_prefix(cs, ends.len() + 1),
            Err(PrefixError::NoSuchResolution {
                asked: ends.len() + 1,
                have: ends.len()
            })
        );
    }

    #[test]
    fn tiled_and_foreign_input_is_refused_not_panicked_on() {
        let px = ramp(64, 64);
        let image = gray12(64, 64, &px);
        let tiled = encode(
            &image,
            &EncodeParams {
                tile: Some((32, 32)),
                levels: 2,
                ..EncodeParams::default()
            },
        )
        .unwrap();
        assert!(tiled.resolution_ends.is_empty());
        assert_eq!(
            resolution_prefix(&tiled.codestream, 1),
            Err(PrefixError::Unsupported("more than one tile"))
        );
        assert_eq!(
            resolution_prefix(b"not j2k", 1),
            Err(PrefixError::NotCodestream)
        );
        let whole = encode(&image, &EncodeParams::default()).unwrap().codestream;
        for n in 0..whole.len() {
            let _ = resolution_prefix(&whole[..n], 1);
            let mut flipped = whole.clone();
            flipped[n] ^= 0xA5;
            let _ = resolution_prefix(&flipped, 3);
        }
    }
}
