//! EBCOT tier-1 (ISO/IEC 15444-1 Annex D): codes one code-block's quantised coefficients
//! bit-plane by bit-plane in significance propagation, magnitude refinement and cleanup
//! passes, using the 19 contexts and the MQ coder. Default code-block style only (one MQ
//! codeword for the whole block, terminated after the last pass).
//!
//! For rate allocation every pass records the cumulative byte length that makes the block
//! decodable up to that pass, and the cumulative squared-error reduction (in coefficient
//! units; the caller applies the band's synthesis weight).
//!
//! Neighbourhood state lives in one `u32` per coefficient on a one-sample padded grid, so
//! the context of a coefficient is a table lookup on its low flag bits and no bounds checks
//! are needed at block edges.

use super::mq::{prefix_decodes, MqEncoder, CTX_RL, CTX_UNI};
use super::roi::roi_passes;

const N_SIG: u32 = 1 << 0;
const S_SIG: u32 = 1 << 1;
const W_SIG: u32 = 1 << 2;
const E_SIG: u32 = 1 << 3;
const NW_SIG: u32 = 1 << 4;
const NE_SIG: u32 = 1 << 5;
const SW_SIG: u32 = 1 << 6;
const SE_SIG: u32 = 1 << 7;
const N_NEG: u32 = 1 << 8;
const S_NEG: u32 = 1 << 9;
const W_NEG: u32 = 1 << 10;
const E_NEG: u32 = 1 << 11;
const SIG: u32 = 1 << 12;
const VISIT: u32 = 1 << 13;
const REFINED: u32 = 1 << 14;
const NEIGHBOURS: u32 = 0xFF;

/// Context for zero coding from the 8 neighbour significance bits, per band orientation
/// (0 = LL, 1 = HL, 2 = LH, 3 = HH), Table D.1.
static ZC_LUT: [[u8; 256]; 4] = build_zc();
/// Sign context (low 5 bits) and XOR bit (bit 7) from the 4 direct neighbours' significance
/// and sign bits, Table D.3.
static SC_LUT: [u8; 256] = build_sc();

const fn zc_context(orient: usize, nb: u32) -> u8 {
    let mut h = ((nb & W_SIG != 0) as u32) + ((nb & E_SIG != 0) as u32);
    let mut v = ((nb & N_SIG != 0) as u32) + ((nb & S_SIG != 0) as u32);
    let d = ((nb & NW_SIG != 0) as u32)
        + ((nb & NE_SIG != 0) as u32)
        + ((nb & SW_SIG != 0) as u32)
        + ((nb & SE_SIG != 0) as u32);
    if orient == 3 {
        let hv = h + v;
        return if d >= 3 {
            8
        } else if d == 2 {
            if hv >= 1 {
                7
            } else {
                6
            }
        } else if d == 1 {
            if hv >= 2 {
                5
            } else if hv == 1 {
                4
            } else {
                3
            }
        } else if hv >= 2 {
            2
        } else {
            hv as u8
        };
    }
    if orient == 1 {
        let t = h;
        h = v;
        v = t;
    }
    if h == 2 {
        8
    } else if h == 1 {
        if v >= 1 {
            7
        } else if d >= 1 {
            6
        } else {
            5
        }
    } else if v == 2 {
        4
    } else if v == 1 {
        3
    } else if d >= 2 {
        2
    } else {
        d as u8
    }
}

const fn build_zc() -> [[u8; 256]; 4] {
    let mut t = [[0u8; 256]; 4];
    let mut o = 0;
    while o < 4 {
        let mut i = 0;
        while i < 256 {
            t[o][i] = zc_context(o, i as u32);
            i += 1;
        }
        o += 1;
    }
    t
}

const fn sc_contrib(i: usize, sig: usize, neg: usize) -> i32 {
    if i & sig == 0 {
        0
    } else if i & neg != 0 {
        -1
    } else {
        1
    }
}

const fn build_sc() -> [u8; 256] {
    // Index bits 0..3: N,S,W,E significant; bits 4..7: N,S,W,E negative.
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let v = sc_contrib(i, 1, 16) + sc_contrib(i, 2, 32);
        let h = sc_contrib(i, 4, 64) + sc_contrib(i, 8, 128);
        let h = if h > 1 {
            1
        } else if h < -1 {
            -1
        } else {
            h
        };
        let v = if v > 1 {
            1
        } else if v < -1 {
            -1
        } else {
            v
        };
        let (ctx, xor) = match (h, v) {
            (1, 1) => (13, 0),
            (1, 0) => (12, 0),
            (1, _) => (11, 0),
            (0, 1) => (10, 0),
            (0, 0) => (9, 0),
            (0, _) => (10, 1),
            (_, 1) => (11, 1),
            (_, 0) => (12, 1),
            _ => (13, 1),
        };
        t[i] = ctx | (xor << 7);
        i += 1;
    }
    t
}

/// One coding pass's truncation point.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassInfo {
    /// Bytes of the block's codeword needed to decode up to and including this pass.
    pub rate: u32,
    /// Cumulative squared-error reduction after this pass, in coefficient units squared.
    pub dist: f64,
}

/// Tier-1 result for one code-block.
#[derive(Clone, Debug, Default)]
pub struct CodedBlock {
    /// The terminated MQ codeword.
    pub data: Vec<u8>,
    /// One entry per coding pass, in coding order.
    pub passes: Vec<PassInfo>,
    /// Number of magnitude bit-planes actually coded (0: block is all zero).
    pub numbps: u8,
}

/// Reusable buffers for coding many blocks on one thread.
#[derive(Default)]
pub struct T1Scratch {
    flags: Vec<u32>,
    mq: Option<MqEncoder>,
}

/// How a block is coded beyond its samples.
#[derive(Clone, Copy, Debug)]
pub struct Coding {
    /// Band orientation: 0 = LL, 1 = HL, 2 = LH, 3 = HH (selects the zero-coding contexts).
    pub orient: u8,
    /// MAXSHIFT already applied to ROI magnitudes (0 = no ROI).
    pub roi_shift: u8,
    /// Whether distortion figures are wanted (anything may be truncated).
    pub need_dist: bool,
}

/// Codes one code-block. `mags` and `negs` are row-major `w*h`. Without `need_dist`
/// (nothing will be truncated) every pass reports zero distortion reduction, which saves the
/// arithmetic.
pub fn encode_block(
    w: usize,
    h: usize,
    mags: &[u32],
    negs: &[bool],
    opts: Coding,
    scratch: &mut T1Scratch,
) -> CodedBlock {
    let Coding {
        orient,
        roi_shift,
        need_dist,
    } = opts;
    let max = mags.iter().fold(0u32, |a, &b| a | b);
    let numbps = (32 - max.leading_zeros()) as u8;
    if numbps == 0 {
        return CodedBlock::default();
    }
    let fw = w + 2;
    let flags = &mut scratch.flags;
    flags.clear();
    flags.resize(fw * (h + 2), 0);
    let mq = scratch.mq.get_or_insert_with(MqEncoder::new);
    mq.reset();
    let zc = &ZC_LUT[orient as usize & 3];
    let roi_thresh = if roi_shift > 0 {
        1u32 << roi_shift
    } else {
        u32::MAX
    };
    let roi_scale = 0.25f64.powi(roi_shift as i32);
    let blk = Blk {
        w,
        h,
        fw,
        mags,
        negs,
        zc,
        roi_thresh,
        roi_shift,
        roi_scale,
        need_dist,
    };
    let flags = &mut flags[..];
    let mut dist = 0.0;
    let mut passes = Vec::with_capacity(numbps as usize * 3);
    // ROI passes must survive truncation exactly, so their symbols are logged for a check.
    let roi_n = if roi_shift > 0 {
        roi_passes(numbps, roi_shift)
    } else {
        0
    };
    let total_passes = 3 * numbps as usize - 2;
    let check_roi = roi_n > 0 && roi_n < total_passes;
    if check_roi {
        mq.start_log();
    }
    let mut roi_symbols = 0;
    for p in (0..numbps).rev() {
        if p + 1 < numbps {
            dist += sig_prop(&blk, flags, mq, p);
            passes.push(PassInfo {
                rate: mq.committed() as u32 + 3,
                dist,
            });
            dist += mag_ref(&blk, flags, mq, p);
            passes.push(PassInfo {
                rate: mq.committed() as u32 + 3,
                dist,
            });
        }
        dist += cleanup(&blk, flags, mq, p);
        passes.push(PassInfo {
            rate: mq.committed() as u32 + 3,
            dist,
        });
        if passes.len() == roi_n {
            roi_symbols = mq.log_len();
        }
    }
    let log = if check_roi { mq.take_log() } else { Vec::new() };
    let data = mq.flush().to_vec();
    let total = data.len() as u32;
    let mut prev = 0u32;
    for pass in passes.iter_mut() {
        let mut r = pass.rate.min(total).max(prev);
        // A truncated segment ending in 0xFF decodes the same without that byte.
        while r > prev && r < total && data[r as usize - 1] == 0xFF {
            r -= 1;
        }
        pass.rate = r;
        prev = r;
    }
    if let Some(last) = passes.last_mut() {
        last.rate = total;
    }
    if check_roi {
        // The rate estimate after a pass is almost always enough, but the ROI must be
        // bit-exact: grow the truncation length until a real decode reproduces every ROI
        // symbol (the full codeword always does).
        let mut r = passes[roi_n - 1].rate as usize;
        while r < data.len() && !prefix_decodes(&data[..r], &log[..roi_symbols]) {
            r += 1;
        }
        for pass in passes[roi_n - 1..].iter_mut() {
            pass.rate = pass.rate.max(r as u32);
        }
    }
    CodedBlock {
        data,
        passes,
        numbps,
    }
}

/// Read-only description of the block being coded. The mutable state (flags, MQ coder) is
/// passed to the pass functions as separate `&mut` arguments so the compiler knows they do
/// not alias and can keep the coder's registers in CPU registers through a pass.
struct Blk<'a> {
    w: usize,
    h: usize,
    fw: usize,
    mags: &'a [u32],
    negs: &'a [bool],
    zc: &'a [u8; 256],
    roi_thresh: u32,
    roi_shift: u8,
    roi_scale: f64,
    need_dist: bool,
}

impl Blk<'_> {
    /// Weighs an error reduction measured at plane `p` for magnitude `m`: ROI coefficients
    /// are scaled back to image units, and their bits below the shift carry no information.
    #[inline(always)]
    fn weigh(&self, m: u32, p: u8, d: f64) -> f64 {
        if m >= self.roi_thresh {
            if p < self.roi_shift {
                0.0
            } else {
                d * self.roi_scale
            }
        } else {
            d
        }
    }

    /// Error reduction when magnitude `m` becomes significant at plane `p` (reconstruction
    /// moves from 0 to the middle of [2^p, 2^(p+1)), or to `m` itself at plane 0).
    /// Adds to `acc` only when there is something to add: a running floating-point sum
    /// updated for every visited coefficient would serialise the scan on add latency.
    #[inline(always)]
    fn add_sig_dist(&self, acc: &mut f64, m: u32, p: u8) {
        if self.need_dist {
            *acc += self.sig_dist(m, p);
        }
    }

    #[inline(always)]
    fn add_ref_dist(&self, acc: &mut f64, m: u32, p: u8) {
        if self.need_dist {
            *acc += self.ref_dist(m, p);
        }
    }

    #[inline(always)]
    fn sig_dist(&self, m: u32, p: u8) -> f64 {
        let mf = m as f64;
        let rec = if p == 0 { mf } else { 1.5 * (1u64 << p) as f64 };
        let d = mf * mf - (mf - rec) * (mf - rec);
        self.weigh(m, p, d)
    }

    /// Error reduction when plane `p` of an already significant magnitude is refined.
    #[inline(always)]
    fn ref_dist(&self, m: u32, p: u8) -> f64 {
        let one = 1u64 << p;
        let t = (m as u64 & (2 * one - 1)) as f64;
        let onef = one as f64;
        let rec = if p == 0 {
            t
        } else if (m >> p) & 1 == 1 {
            1.5 * onef
        } else {
            0.5 * onef
        };
        let d = (t - onef) * (t - onef) - (t - rec) * (t - rec);
        self.weigh(m, p, d)
    }
}

#[inline(always)]
fn code_sign_and_mark(b: &Blk, flags: &mut [u32], mq: &mut MqEncoder, fi: usize, ci: usize) {
    let f = flags[fi];
    let sc = SC_LUT[((f & 0xF) | ((f >> 4) & 0xF0)) as usize];
    let neg = b.negs[ci];
    mq.encode((neg as u32) ^ (sc as u32 >> 7), (sc & 0x1F) as usize);
    let fw = b.fw;
    flags[fi] |= SIG;
    if neg {
        flags[fi - fw] |= S_SIG | S_NEG;
        flags[fi + fw] |= N_SIG | N_NEG;
        flags[fi - 1] |= E_SIG | E_NEG;
        flags[fi + 1] |= W_SIG | W_NEG;
    } else {
        flags[fi - fw] |= S_SIG;
        flags[fi + fw] |= N_SIG;
        flags[fi - 1] |= E_SIG;
        flags[fi + 1] |= W_SIG;
    }
    flags[fi - fw - 1] |= SE_SIG;
    flags[fi - fw + 1] |= SW_SIG;
    flags[fi + fw - 1] |= NE_SIG;
    flags[fi + fw + 1] |= NW_SIG;
}

#[inline(always)]
fn sig_prop_one(
    b: &Blk,
    flags: &mut [u32],
    mq: &mut MqEncoder,
    fi: usize,
    ci: usize,
    p: u8,
    dist: &mut f64,
) {
    let f = flags[fi];
    if f & SIG != 0 || f & NEIGHBOURS == 0 {
        return;
    }
    let m = b.mags[ci];
    let bit = (m >> p) & 1;
    mq.encode(bit, b.zc[(f & NEIGHBOURS) as usize] as usize);
    if bit != 0 {
        code_sign_and_mark(b, flags, mq, fi, ci);
        b.add_sig_dist(dist, m, p);
    }
    flags[fi] |= VISIT;
}

#[inline(always)]
fn mag_ref_one(
    b: &Blk,
    flags: &mut [u32],
    mq: &mut MqEncoder,
    fi: usize,
    ci: usize,
    p: u8,
    dist: &mut f64,
) {
    let f = flags[fi];
    if f & (SIG | VISIT) != SIG {
        return;
    }
    let m = b.mags[ci];
    let cx = if f & REFINED != 0 {
        16
    } else if f & NEIGHBOURS != 0 {
        15
    } else {
        14
    };
    mq.encode((m >> p) & 1, cx);
    flags[fi] = f | REFINED;
    b.add_ref_dist(dist, m, p);
}

#[inline(always)]
fn cleanup_one(
    b: &Blk,
    flags: &mut [u32],
    mq: &mut MqEncoder,
    fi: usize,
    ci: usize,
    p: u8,
    dist: &mut f64,
) {
    let f = flags[fi];
    if f & (SIG | VISIT) == 0 {
        let m = b.mags[ci];
        let bit = (m >> p) & 1;
        mq.encode(bit, b.zc[(f & NEIGHBOURS) as usize] as usize);
        if bit != 0 {
            code_sign_and_mark(b, flags, mq, fi, ci);
            b.add_sig_dist(dist, m, p);
        }
    }
    flags[fi] &= !VISIT;
}

/// OR of the four flags of a full stripe column starting at `fi`.
#[inline(always)]
fn column4(flags: &[u32], fi: usize, fw: usize) -> u32 {
    flags[fi] | flags[fi + fw] | flags[fi + 2 * fw] | flags[fi + 3 * fw]
}

/// Runs `$one` over every stripe column in scan order. Full stripes use a fixed trip count
/// of 4 (unrolled) and are skipped when `$skip(OR of their flags)` says there is nothing to
/// code; the short last stripe takes the general path. A macro rather than a generic
/// function: with a closure or fn-item parameter the per-coefficient body stayed an
/// out-of-line call per visit, which cost a third of tier-1 time.
macro_rules! scan {
    ($b:expr, $flags:expr, $mq:expr, $p:expr, $skip:expr, $one:ident) => {{
        let (b, flags, mq, p): (&Blk, &mut [u32], &mut MqEncoder, u8) = ($b, $flags, $mq, $p);
        let (w, h, fw) = (b.w, b.h, b.fw);
        let mut dist = 0.0;
        for y0 in (0..h).step_by(4) {
            let rows = (h - y0).min(4);
            let fbase = (y0 + 1) * fw + 1;
            let cbase = y0 * w;
            for x in 0..w {
                let (fi, ci) = (fbase + x, cbase + x);
                if rows == 4 {
                    if $skip(column4(flags, fi, fw)) {
                        continue;
                    }
                    for k in 0..4 {
                        $one(b, flags, mq, fi + k * fw, ci + k * w, p, &mut dist);
                    }
                } else {
                    for k in 0..rows {
                        $one(b, flags, mq, fi + k * fw, ci + k * w, p, &mut dist);
                    }
                }
            }
        }
        dist
    }};
}

// The skip tests: a column where nothing has a significant neighbour has nothing for the
// significance pass; one without significant coefficients has nothing to refine.

/// Significance propagation pass at plane `p`; returns its distortion reduction.
fn sig_prop(b: &Blk, flags: &mut [u32], mq: &mut MqEncoder, p: u8) -> f64 {
    scan!(b, flags, mq, p, |f: u32| f & NEIGHBOURS == 0, sig_prop_one)
}

/// Magnitude refinement pass at plane `p`; returns its distortion reduction.
fn mag_ref(b: &Blk, flags: &mut [u32], mq: &mut MqEncoder, p: u8) -> f64 {
    scan!(b, flags, mq, p, |f: u32| f & SIG == 0, mag_ref_one)
}

/// Cleanup pass at plane `p` (with run-length mode); returns its distortion reduction.
fn cleanup(b: &Blk, flags: &mut [u32], mq: &mut MqEncoder, p: u8) -> f64 {
    let (w, h, fw) = (b.w, b.h, b.fw);
    let mut dist = 0.0;
    for y0 in (0..h).step_by(4) {
        let rows = (h - y0).min(4);
        let fbase = (y0 + 1) * fw + 1;
        let cbase = y0 * w;
        for x in 0..w {
            let (fi0, ci0) = (fbase + x, cbase + x);
            if rows < 4 {
                for k in 0..rows {
                    cleanup_one(b, flags, mq, fi0 + k * fw, ci0 + k * w, p, &mut dist);
                }
                continue;
            }
            let mut start = 0;
            if column4(flags, fi0, fw) & (SIG | VISIT | NEIGHBOURS) == 0 {
                // Run-length mode: one symbol says whether any of the four becomes
                // significant, then the position of the first one.
                let first = (0..4).find(|&k| (b.mags[ci0 + k * w] >> p) & 1 != 0);
                match first {
                    None => {
                        mq.encode(0, CTX_RL);
                        continue;
                    }
                    Some(k) => {
                        mq.encode(1, CTX_RL);
                        mq.encode((k >> 1) as u32, CTX_UNI);
                        mq.encode((k & 1) as u32, CTX_UNI);
                        let ci = ci0 + k * w;
                        code_sign_and_mark(b, flags, mq, fi0 + k * fw, ci);
                        b.add_sig_dist(&mut dist, b.mags[ci], p);
                        start = k + 1;
                    }
                }
            }
            for k in start..4 {
                cleanup_one(b, flags, mq, fi0 + k * fw, ci0 + k * w, p, &mut dist);
            }
        }
    }
    dist
}

#[cfg(test)]
pub(crate) mod tests {
    //! A reference tier-1 decoder written straight from Annex D (no flag tricks), used to
    //! check that the encoder's passes decode back to the coefficients, both in full and
    //! when truncated at every recorded pass length.
    use super::super::mq::MqDecoder;
    use super::*;

    pub(crate) fn decode_block(
        data: &[u8],
        w: usize,
        h: usize,
        numbps: u8,
        npasses: usize,
        orient: u8,
    ) -> Vec<i64> {
        let mut dec = MqDecoder::new(data);
        let mut mag = vec![0i64; w * h];
        let mut sig = vec![false; w * h];
        let mut neg = vec![false; w * h];
        let mut visit = vec![false; w * h];
        let mut refined = vec![false; w * h];
        let nbflags = |sig: &Vec<bool>, neg: &Vec<bool>, x: usize, y: usize| -> u32 {
            let mut f = 0;
            let get = |dx: isize, dy: isize| -> Option<usize> {
                let xx = x as isize + dx;
                let yy = y as isize + dy;
                if xx < 0 || yy < 0 || xx >= w as isize || yy >= h as isize {
                    None
                } else {
                    Some(yy as usize * w + xx as usize)
                }
            };
            let dirs = [
                (0, -1, N_SIG, N_NEG),
                (0, 1, S_SIG, S_NEG),
                (-1, 0, W_SIG, W_NEG),
                (1, 0, E_SIG, E_NEG),
            ];
            for (dx, dy, s, n) in dirs {
                if let Some(i) = get(dx, dy) {
                    if sig[i] {
                        f |= s;
                        if neg[i] {
                            f |= n;
                        }
                    }
                }
            }
            for (dx, dy, s) in [
                (-1, -1, NW_SIG),
                (1, -1, NE_SIG),
                (-1, 1, SW_SIG),
                (1, 1, SE_SIG),
            ] {
                if let Some(i) = get(dx, dy) {
                    if sig[i] {
                        f |= s;
                    }
                }
            }
            f
        };
        let zc = &ZC_LUT[orient as usize];
        let mut pass = 0;
        for p in (0..numbps).rev() {
            for kind in [0, 1, 2] {
                if p + 1 == numbps && kind != 2 {
                    continue;
                }
                if pass == npasses {
                    return mag
                        .iter()
                        .zip(&neg)
                        .map(|(&m, &n)| if n { -m } else { m })
                        .collect();
                }
                pass += 1;
                for y0 in (0..h).step_by(4) {
                    let y1 = (y0 + 4).min(h);
                    for x in 0..w {
                        let mut y = y0;
                        if kind == 2 && y0 + 4 <= h {
                            let quiet = (y0..y1).all(|yy| {
                                let i = yy * w + x;
                                !sig[i] && !visit[i] && nbflags(&sig, &neg, x, yy) & NEIGHBOURS == 0
                            });
                            if quiet {
                                if dec.decode(CTX_RL) == 0 {
                                    continue;
                                }
                                let k = (dec.decode(CTX_UNI) << 1 | dec.decode(CTX_UNI)) as usize;
                                let yy = y0 + k;
                                let i = yy * w + x;
                                let f = nbflags(&sig, &neg, x, yy);
                                let sc = SC_LUT[((f & 0xF) | ((f >> 4) & 0xF0)) as usize];
                                neg[i] = (dec.decode((sc & 0x1F) as usize) ^ (sc as u32 >> 7)) == 1;
                                sig[i] = true;
                                mag[i] |= 1 << p;
                                y = yy + 1;
                            }
                        }
                        while y < y1 {
                            let i = y * w + x;
                            let f = nbflags(&sig, &neg, x, y);
                            match kind {
                                0 => {
                                    if !sig[i] && f & NEIGHBOURS != 0 {
                                        if dec.decode(zc[(f & NEIGHBOURS) as usize] as usize) == 1 {
                                            let sc =
                                                SC_LUT[((f & 0xF) | ((f >> 4) & 0xF0)) as usize];
                                            neg[i] = (dec.decode((sc & 0x1F) as usize)
                                                ^ (sc as u32 >> 7))
                                                == 1;
                                            sig[i] = true;
                                            mag[i] |= 1 << p;
                                        }
                                        visit[i] = true;
                                    }
                                }
                                1 => {
                                    if sig[i] && !visit[i] {
                                        let cx = if refined[i] {
                                            16
                                        } else if f & NEIGHBOURS != 0 {
                                            15
                                        } else {
                                            14
                                        };
                                        mag[i] |= (dec.decode(cx) as i64) << p;
                                        refined[i] = true;
                                    }
                                }
                                _ => {
                                    if !sig[i]
                                        && !visit[i]
                                        && dec.decode(zc[(f & NEIGHBOURS) as usize] as usize) == 1
                                    {
                                        let sc = SC_LUT[((f & 0xF) | ((f >> 4) & 0xF0)) as usize];
                                        neg[i] = (dec.decode((sc & 0x1F) as usize)
                                            ^ (sc as u32 >> 7))
                                            == 1;
                                        sig[i] = true;
                                        mag[i] |= 1 << p;
                                    }
                                    visit[i] = false;
                                }
                            }
                            y += 1;
                        }
                    }
                }
            }
        }
        mag.iter()
            .zip(&neg)
            .map(|(&m, &n)| if n { -m } else { m })
            .collect()
    }

    fn random_block(seed: u64, w: usize, h: usize, bits: u32) -> (Vec<u32>, Vec<bool>) {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut mags = Vec::with_capacity(w * h);
        let mut negs = Vec::with_capacity(w * h);
        for i in 0..w * h {
            // Mostly small values with sparse large ones, like wavelet detail bands.
            let r = next();
            let b = if r % 7 == 0 {
                bits
            } else {
                (r % (bits as u64 / 2 + 1)) as u32
            };
            let m = if i % 5 == 0 {
                0
            } else {
                (next() as u32) & ((1u32 << b) - 1)
            };
            mags.push(m);
            negs.push(next() & 1 == 1);
        }
        (mags, negs)
    }

    #[test]
    fn full_decode_is_exact_for_all_orientations_and_odd_sizes() {
        let mut scratch = T1Scratch::default();
        for (i, &(w, h)) in [
            (64, 64),
            (1, 1),
            (3, 5),
            (17, 9),
            (64, 7),
            (5, 64),
            (32, 33),
        ]
        .iter()
        .enumerate()
        {
            for orient in 0..4u8 {
                let (mags, negs) = random_block(i as u64 * 4 + orient as u64, w, h, 12);
                let cb = encode_block(
                    w,
                    h,
                    &mags,
                    &negs,
                    Coding {
                        orient,
                        roi_shift: 0,
                        need_dist: true,
                    },
                    &mut scratch,
                );
                let dec = decode_block(&cb.data, w, h, cb.numbps, cb.passes.len(), orient);
                for k in 0..w * h {
                    let want = if negs[k] && mags[k] != 0 {
                        -(mags[k] as i64)
                    } else {
                        mags[k] as i64
                    };
                    assert_eq!(dec[k], want, "{w}x{h} orient {orient} coeff {k}");
                }
            }
        }
    }

    #[test]
    fn truncated_prefixes_decode_the_included_passes() {
        let mut scratch = T1Scratch::default();
        let (w, h) = (32, 32);
        let (mags, negs) = random_block(99, w, h, 10);
        let cb = encode_block(
            w,
            h,
            &mags,
            &negs,
            Coding {
                orient: 3,
                roi_shift: 0,
                need_dist: true,
            },
            &mut scratch,
        );
        let full = decode_block(&cb.data, w, h, cb.numbps, cb.passes.len(), 3);
        assert_eq!(cb.passes.len(), 3 * cb.numbps as usize - 2);
        for (k, pass) in cb.passes.iter().enumerate() {
            let prefix = &cb.data[..pass.rate as usize];
            let got = decode_block(prefix, w, h, cb.numbps, k + 1, 3);
            let want = decode_block(&cb.data, w, h, cb.numbps, k + 1, 3);
            assert_eq!(
                got,
                want,
                "pass {k} truncated at {} of {} bytes",
                pass.rate,
                cb.data.len()
            );
        }
        assert_eq!(full.len(), w * h);
        let dists: Vec<f64> = cb.passes.iter().map(|p| p.dist).collect();
        assert!(
            dists.windows(2).all(|d| d[1] >= d[0] - 1e-9),
            "distortion reduction must accumulate"
        );
        let total: f64 = mags.iter().map(|&m| (m as f64) * (m as f64)).sum();
        assert!(
            (dists.last().unwrap() - total).abs() < 1e-6 * total,
            "full decode removes all error"
        );
    }

    #[test]
    fn roi_truncation_point_decodes_every_roi_bit() {
        let mut scratch = T1Scratch::default();
        let (w, h, shift) = (32usize, 32usize, 9u8);
        for seed in 0..200u64 {
            let (mut mags, negs) = random_block(1000 + seed, w, h, 8);
            // Random ROI subset: shifted above every (< 2^8) background magnitude.
            for (i, m) in mags.iter_mut().enumerate() {
                if (i as u64 * 2654435761 + seed) % 3 == 0 && *m > 0 {
                    *m <<= shift;
                }
            }
            let cb = encode_block(
                w,
                h,
                &mags,
                &negs,
                Coding {
                    orient: (seed % 4) as u8,
                    roi_shift: shift,
                    need_dist: true,
                },
                &mut scratch,
            );
            let n = roi_passes(cb.numbps, shift);
            let cut = cb.passes[n - 1].rate as usize;
            let got = decode_block(&cb.data[..cut], w, h, cb.numbps, n, (seed % 4) as u8);
            for i in 0..w * h {
                if mags[i] >= 1 << shift {
                    let want = if negs[i] {
                        -(mags[i] as i64)
                    } else {
                        mags[i] as i64
                    };
                    assert_eq!(
                        got[i], want,
                        "seed {seed} coeff {i}: ROI value after truncation at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_zero_block_has_no_passes() {
        let mut scratch = T1Scratch::default();
        let cb = encode_block(
            4,
            4,
            &[0; 16],
            &[false; 16],
            Coding {
                orient: 0,
                roi_shift: 0,
                need_dist: true,
            },
            &mut scratch,
        );
        assert_eq!(cb.numbps, 0);
        assert!(cb.passes.is_empty() && cb.data.is_empty());
    }
}
