//! Codestream syntax (ISO/IEC 15444-1 Annex A): main-header markers SOC, SIZ, COD, QCD, RGN,
//! COM, TLM; one tile-part per tile (SOT, PLT, SOD, packet data); EOC. Only what the encoder
//! emits. TLM (every tile-part's length) and PLT (every packet's length) let a reader find
//! where a resolution ends without decoding packet headers.

/// Parameters of the SIZ marker.
pub struct Siz {
    pub width: u32,
    pub height: u32,
    pub tile_w: u32,
    pub tile_h: u32,
    /// (bit depth, signed) per component.
    pub comps: Vec<(u8, bool)>,
}

/// Progression order resolution-position-component-layer (Table A.16).
pub const RPCL: u8 = 2;

/// Parameters of the COD marker (default precincts, RPCL, default code-block style).
pub struct Cod {
    pub layers: u16,
    pub mct: bool,
    pub levels: u8,
    pub cb_w_log2: u8,
    pub cb_h_log2: u8,
    pub reversible: bool,
}

/// Quantisation default (QCD): reversible bands carry an exponent only; irreversible bands
/// carry exponent and mantissa (scalar expounded).
pub struct Qcd {
    pub guard_bits: u8,
    pub reversible: bool,
    /// (exponent, mantissa) per band in codestream order LL, then HL/LH/HH from the lowest
    /// resolution up.
    pub bands: Vec<(u8, u16)>,
}

fn marker(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// SOC through the last main-header marker.
pub fn main_header(
    siz: &Siz,
    cod: &Cod,
    qcd: &Qcd,
    roi_shift: Option<u8>,
    comment: &str,
) -> Vec<u8> {
    let mut out = vec![0xFF, 0x4F];
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&0u16.to_be_bytes()); // Rsiz: Part-1 capabilities only
    for v in [siz.width, siz.height, 0, 0, siz.tile_w, siz.tile_h, 0, 0] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&(siz.comps.len() as u16).to_be_bytes());
    for &(bits, signed) in &siz.comps {
        b.push(((signed as u8) << 7) | (bits - 1));
        b.push(1);
        b.push(1);
    }
    marker(&mut out, 0xFF51, &b);

    let body = [
        0u8, // Scod: default precincts, no SOP/EPH
        RPCL,
        (cod.layers >> 8) as u8,
        cod.layers as u8,
        cod.mct as u8,
        cod.levels,
        cod.cb_w_log2 - 2,
        cod.cb_h_log2 - 2,
        0, // code-block style: none of bypass/reset/termall/...
        cod.reversible as u8,
    ];
    marker(&mut out, 0xFF52, &body);

    let mut q = vec![(qcd.guard_bits << 5) | if qcd.reversible { 0 } else { 2 }];
    for &(exp, mant) in &qcd.bands {
        if qcd.reversible {
            q.push(exp << 3);
        } else {
            q.extend_from_slice(&(((exp as u16) << 11) | (mant & 0x7FF)).to_be_bytes());
        }
    }
    marker(&mut out, 0xFF5C, &q);

    if let Some(s) = roi_shift {
        for c in 0..siz.comps.len() {
            // Crgn is one byte while there are fewer than 257 components; Srgn 0 = MAXSHIFT.
            marker(&mut out, 0xFF5E, &[c as u8, 0, s]);
        }
    }
    if !comment.is_empty() {
        let mut c = vec![0u8, 1]; // Rcom = 1: Latin-1 text
        c.extend_from_slice(comment.as_bytes());
        marker(&mut out, 0xFF64, &c);
    }
    out
}

/// TLM entries per marker segment: Ltlm (16 bits) holds 4 bytes and 6 a tile-part.
const TLM_PER_MARKER: usize = (u16::MAX as usize - 4) / 6;

/// TLM marker segments (A.7.1) giving each tile-part's tile index (16 bits) and length
/// (32 bits), in codestream order.
pub fn tlm(tile_parts: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tlm_len(tile_parts.len()));
    for (z, chunk) in tile_parts.chunks(TLM_PER_MARKER).enumerate() {
        // Stlm: ST = 2 (16-bit Ttlm), SP = 1 (32-bit Ptlm).
        let mut b = vec![u8::try_from(z).unwrap_or(u8::MAX), 0b0110_0000];
        for &(tile, len) in chunk {
            b.extend_from_slice(&tile.to_be_bytes());
            b.extend_from_slice(&len.to_be_bytes());
        }
        marker(&mut out, 0xFF55, &b);
    }
    out
}

/// Length of [`tlm`] for `n` tile-parts.
pub fn tlm_len(n: usize) -> usize {
    n.div_ceil(TLM_PER_MARKER) * 6 + n * 6
}

/// Most Iplt bytes in one PLT marker segment (Lplt and Zplt take 3 of its 65,535).
const PLT_BYTES_PER_MARKER: usize = u16::MAX as usize - 3;

/// PLT marker segments (A.7.3) giving each packet's length, seven bits a byte, most
/// significant first, the high bit set on every byte but a length's last.
pub fn plt(packet_lens: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut z = 0u8;
    let mut body = vec![z];
    for &len in packet_lens {
        let mut groups = [0u8; 5];
        let mut n = 0;
        let mut v = len;
        loop {
            groups[n] = (v & 0x7F) as u8;
            n += 1;
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        if body.len() - 1 + n > PLT_BYTES_PER_MARKER {
            marker(&mut out, 0xFF58, &body);
            z = z.saturating_add(1);
            body = vec![z];
        }
        for i in (0..n).rev() {
            body.push(groups[i] | if i > 0 { 0x80 } else { 0 });
        }
    }
    if body.len() > 1 {
        marker(&mut out, 0xFF58, &body);
    }
    out
}

/// An upper bound of [`plt`]'s length for `packets` packets shorter than 2 MiB each (three
/// bytes a length), for rate control before the packets exist.
pub fn plt_len_estimate(packets: usize) -> usize {
    let bytes = packets * 3;
    bytes + bytes.div_ceil(PLT_BYTES_PER_MARKER) * 5
}

/// Length of one tile-part's SOT + SOD overhead.
pub const TILE_PART_OVERHEAD: usize = 14;

/// Length of the tile-part [`tile_part`] writes.
pub fn tile_part_len(plt: &[u8], body: &[u8]) -> usize {
    TILE_PART_OVERHEAD + plt.len() + body.len()
}

/// Appends one complete tile-part (SOT, the PLT segments `plt`, SOD, body).
pub fn tile_part(out: &mut Vec<u8>, tile_index: u16, plt: &[u8], body: &[u8]) {
    let psot = tile_part_len(plt, body) as u32;
    let mut b = Vec::with_capacity(8);
    b.extend_from_slice(&tile_index.to_be_bytes());
    b.extend_from_slice(&psot.to_be_bytes());
    b.push(0); // TPsot
    b.push(1); // TNsot: one tile-part per tile
    marker(out, 0xFF90, &b);
    out.extend_from_slice(plt);
    out.extend_from_slice(&[0xFF, 0x93]);
    out.extend_from_slice(body);
}

/// End of codestream.
pub const EOC: [u8; 2] = [0xFF, 0xD9];

/// Splits a quantiser step (in coefficient units, relative to nominal range `rb` bits) into
/// the (exponent, mantissa) pair of E.1 and returns it with the exactly representable step.
pub fn encode_step(step: f64, rb: u8) -> (u8, u16, f64) {
    let p = step.log2().floor() as i32;
    let mut mant = ((step / 2f64.powi(p) - 1.0) * 2048.0).round() as i32;
    let mut p = p;
    if mant >= 2048 {
        mant = 0;
        p += 1;
    }
    let exp = (rb as i32 - p).clamp(0, 31);
    let actual = 2f64.powi(rb as i32 - exp) * (1.0 + mant as f64 / 2048.0);
    (exp as u8, mant as u16, actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_encoding_round_trips() {
        for &(step, rb) in &[(1.0, 12u8), (0.37, 14), (3.9, 9), (0.0123, 16)] {
            let (e, m, actual) = encode_step(step, rb);
            assert!(
                (actual - step).abs() / step < 1e-3,
                "{step} -> {e},{m} -> {actual}"
            );
        }
    }

    #[test]
    fn plt_lengths_are_seven_bits_a_byte_most_significant_first() {
        let p = plt(&[1, 127, 128, 300, 16_384]);
        assert_eq!(&p[..2], &[0xFF, 0x58]);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len() - 2);
        assert_eq!(
            &p[4..],
            &[0, 1, 0x7F, 0x81, 0x00, 0x82, 0x2C, 0x81, 0x80, 0x00]
        );
        assert!(plt(&[]).is_empty());
        // Many lengths split over several segments, numbered, none over 65,535 bytes.
        let many = plt(&vec![1 << 20; 30_000]);
        let (mut at, mut z) = (0, 0u8);
        while at < many.len() {
            let len = u16::from_be_bytes([many[at + 2], many[at + 3]]) as usize;
            assert_eq!(many[at + 4], z);
            at += 2 + len;
            z += 1;
        }
        assert_eq!((at, z), (many.len(), 2));
        assert!(many.len() <= plt_len_estimate(30_000));
    }

    #[test]
    fn tlm_lists_tile_parts_and_its_length_is_known() {
        let t = tlm(&[(0, 100), (1, 70_000)]);
        assert_eq!(t.len(), tlm_len(2));
        assert_eq!(
            t,
            [
                &[0xFF, 0x55, 0, 16, 0, 0x60][..],
                &[0, 0, 0, 0, 0, 100],
                &[0, 1, 0, 1, 0x11, 0x70]
            ]
            .concat()
        );
        assert_eq!(tlm(&vec![(7, 1); 20_000]).len(), tlm_len(20_000));
    }

    #[test]
    fn header_starts_with_soc_siz() {
        let siz = Siz {
            width: 3,
            height: 2,
            tile_w: 3,
            tile_h: 2,
            comps: vec![(12, false)],
        };
        let cod = Cod {
            layers: 1,
            mct: false,
            levels: 1,
            cb_w_log2: 6,
            cb_h_log2: 6,
            reversible: true,
        };
        let qcd = Qcd {
            guard_bits: 2,
            reversible: true,
            bands: vec![(12, 0); 4],
        };
        let h = main_header(&siz, &cod, &qcd, Some(5), "x");
        assert_eq!(&h[..4], &[0xFF, 0x4F, 0xFF, 0x51]);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 38 + 3);
        assert!(
            h.windows(5).any(|w| w == [0xFF, 0x5E, 0, 5, 0]),
            "RGN with Lrgn 5"
        );
    }
}
