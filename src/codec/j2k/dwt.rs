//! Discrete wavelet transforms (ISO/IEC 15444-1 Annex F): the reversible 5/3 integer lifting
//! and the irreversible 9/7 floating-point lifting, multi-level and two-dimensional, with
//! whole-sample symmetric extension at the edges.
//!
//! Coefficients stay in the input buffer in the Mallat layout: after each level the low band
//! occupies the top-left `ceil(w/2) x ceil(h/2)` corner, HL to its right, LH below, HH
//! diagonally. Every region starts at an even coordinate because tile origins are multiples of
//! `2^levels` (enforced by the caller), so low-pass samples are always at even positions.
//!
//! The forward 2D step filters columns first and rows second; the inverse undoes rows first,
//! which is the order decoders use, so the integer 5/3 path inverts exactly.
//!
//! Vertical filtering runs as whole-row vector operations (cache friendly); horizontal
//! filtering works on one row at a time.

use std::sync::OnceLock;

const ALPHA: f32 = -1.586_134_3;
const BETA: f32 = -0.052_980_117;
const GAMMA: f32 = 0.882_911_1;
const DELTA: f32 = 0.443_506_87;
const K: f32 = 1.230_174_1;

/// Dimensions of the low band after each level: `dims[j]` is the region transformed at level
/// `j + 1`.
pub fn level_dims(w: usize, h: usize, levels: u8) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(levels as usize);
    let (mut cw, mut ch) = (w, h);
    for _ in 0..levels {
        out.push((cw, ch));
        cw = cw.div_ceil(2);
        ch = ch.div_ceil(2);
    }
    out
}

/// Forward reversible 5/3 transform in place.
pub fn fwd53(buf: &mut [i32], w: usize, h: usize, stride: usize, levels: u8) {
    let mut tmp = Vec::new();
    for (cw, ch) in level_dims(w, h, levels) {
        vert53_fwd(buf, cw, ch, stride, &mut tmp);
        for y in 0..ch {
            horiz53_fwd(&mut buf[y * stride..y * stride + cw], &mut tmp);
        }
    }
}

/// Inverse reversible 5/3 transform in place (exact inverse of [`fwd53`]).
pub fn inv53(buf: &mut [i32], w: usize, h: usize, stride: usize, levels: u8) {
    let mut tmp = Vec::new();
    for (cw, ch) in level_dims(w, h, levels).into_iter().rev() {
        for y in 0..ch {
            horiz53_inv(&mut buf[y * stride..y * stride + cw], &mut tmp);
        }
        vert53_inv(buf, cw, ch, stride, &mut tmp);
    }
}

/// Forward irreversible 9/7 transform in place.
pub fn fwd97(buf: &mut [f32], w: usize, h: usize, stride: usize, levels: u8) {
    let mut tmp = Vec::new();
    for (cw, ch) in level_dims(w, h, levels) {
        vert97(buf, cw, ch, stride, &mut tmp, true);
        for y in 0..ch {
            horiz97_fwd(&mut buf[y * stride..y * stride + cw], &mut tmp);
        }
    }
}

/// Inverse irreversible 9/7 transform in place.
pub fn inv97(buf: &mut [f32], w: usize, h: usize, stride: usize, levels: u8) {
    let mut tmp = Vec::new();
    for (cw, ch) in level_dims(w, h, levels).into_iter().rev() {
        for y in 0..ch {
            horiz97_inv(&mut buf[y * stride..y * stride + cw], &mut tmp);
        }
        vert97(buf, cw, ch, stride, &mut tmp, false);
    }
}

// Mirror helpers for an even-start signal of length n >= 2.
#[inline(always)]
fn left(i: usize) -> usize {
    if i == 0 {
        1
    } else {
        i - 1
    }
}
#[inline(always)]
fn right(i: usize, n: usize) -> usize {
    if i + 1 >= n {
        i - 1
    } else {
        i + 1
    }
}

fn horiz53_fwd(x: &mut [i32], tmp: &mut Vec<i32>) {
    let n = x.len();
    if n < 2 {
        return;
    }
    for i in (1..n).step_by(2) {
        x[i] -= (x[i - 1] + x[right(i, n)]) >> 1;
    }
    for i in (0..n).step_by(2) {
        x[i] += (x[left(i)] + x[right(i, n)] + 2) >> 2;
    }
    deinterleave(x, tmp);
}

fn horiz53_inv(x: &mut [i32], tmp: &mut Vec<i32>) {
    let n = x.len();
    if n < 2 {
        return;
    }
    interleave(x, tmp);
    for i in (0..n).step_by(2) {
        x[i] -= (x[left(i)] + x[right(i, n)] + 2) >> 2;
    }
    for i in (1..n).step_by(2) {
        x[i] += (x[i - 1] + x[right(i, n)]) >> 1;
    }
}

fn horiz97_fwd(x: &mut [f32], tmp: &mut Vec<f32>) {
    let n = x.len();
    if n < 2 {
        return;
    }
    for (coef, start) in [(ALPHA, 1), (BETA, 0), (GAMMA, 1), (DELTA, 0)] {
        for i in (start..n).step_by(2) {
            x[i] += coef * (x[left(i)] + x[right(i, n)]);
        }
    }
    for (i, v) in x.iter_mut().enumerate() {
        *v *= if i & 1 == 0 { 1.0 / K } else { K };
    }
    deinterleave(x, tmp);
}

fn horiz97_inv(x: &mut [f32], tmp: &mut Vec<f32>) {
    let n = x.len();
    if n < 2 {
        return;
    }
    interleave(x, tmp);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= if i & 1 == 0 { K } else { 1.0 / K };
    }
    for (coef, start) in [(DELTA, 0), (GAMMA, 1), (BETA, 0), (ALPHA, 1)] {
        for i in (start..n).step_by(2) {
            x[i] -= coef * (x[left(i)] + x[right(i, n)]);
        }
    }
}

fn deinterleave<T: Copy>(x: &mut [T], tmp: &mut Vec<T>) {
    tmp.clear();
    tmp.extend(x.iter().step_by(2));
    tmp.extend(x.iter().skip(1).step_by(2));
    x.copy_from_slice(tmp);
}

fn interleave<T: Copy>(x: &mut [T], tmp: &mut Vec<T>) {
    let n = x.len();
    let lo = n.div_ceil(2);
    tmp.clear();
    tmp.extend_from_slice(x);
    for i in 0..n {
        x[i] = if i & 1 == 0 {
            tmp[i / 2]
        } else {
            tmp[lo + i / 2]
        };
    }
}

/// Row `r` of the current region as (start, end) offsets.
#[inline(always)]
fn row(r: usize, stride: usize, cw: usize) -> std::ops::Range<usize> {
    r * stride..r * stride + cw
}

/// Applies `dst[k] = f(dst[k], a[k], b[k])` to rows of one buffer (`a` may equal `b`; neither
/// equals `dst`).
fn lift_rows<T: Copy>(
    buf: &mut [T],
    dst: usize,
    a: usize,
    b: usize,
    stride: usize,
    cw: usize,
    f: impl Fn(T, T, T) -> T,
) {
    let rd = row(dst, stride, cw);
    // Split around the destination row so the source rows can be borrowed beside it.
    let (lo, hi) = buf.split_at_mut(rd.start);
    let (drow, rest) = hi.split_at_mut(cw);
    let src = |r: usize| -> &[T] {
        let s = r * stride;
        if s < rd.start {
            &lo[s..s + cw]
        } else {
            let o = s - rd.end;
            &rest[o..o + cw]
        }
    };
    for ((d, &x), &y) in drow.iter_mut().zip(src(a)).zip(src(b)) {
        *d = f(*d, x, y);
    }
}

fn reorder_rows<T: Copy>(
    buf: &mut [T],
    cw: usize,
    ch: usize,
    stride: usize,
    tmp: &mut Vec<T>,
    to_mallat: bool,
) {
    tmp.clear();
    for r in 0..ch {
        tmp.extend_from_slice(&buf[row(r, stride, cw)]);
    }
    let lo = ch.div_ceil(2);
    for r in 0..ch {
        let src = if to_mallat {
            if r < lo {
                2 * r
            } else {
                2 * (r - lo) + 1
            }
        } else if r & 1 == 0 {
            r / 2
        } else {
            lo + r / 2
        };
        buf[row(r, stride, cw)].copy_from_slice(&tmp[src * cw..src * cw + cw]);
    }
}

fn vert53_fwd(buf: &mut [i32], cw: usize, ch: usize, stride: usize, tmp: &mut Vec<i32>) {
    if ch < 2 {
        return;
    }
    for r in (1..ch).step_by(2) {
        lift_rows(buf, r, r - 1, right(r, ch), stride, cw, |d, a, b| {
            d - ((a + b) >> 1)
        });
    }
    for r in (0..ch).step_by(2) {
        lift_rows(buf, r, left(r), right(r, ch), stride, cw, |d, a, b| {
            d + ((a + b + 2) >> 2)
        });
    }
    reorder_rows(buf, cw, ch, stride, tmp, true);
}

fn vert53_inv(buf: &mut [i32], cw: usize, ch: usize, stride: usize, tmp: &mut Vec<i32>) {
    if ch < 2 {
        return;
    }
    reorder_rows(buf, cw, ch, stride, tmp, false);
    for r in (0..ch).step_by(2) {
        lift_rows(buf, r, left(r), right(r, ch), stride, cw, |d, a, b| {
            d - ((a + b + 2) >> 2)
        });
    }
    for r in (1..ch).step_by(2) {
        lift_rows(buf, r, r - 1, right(r, ch), stride, cw, |d, a, b| {
            d + ((a + b) >> 1)
        });
    }
}

fn vert97(buf: &mut [f32], cw: usize, ch: usize, stride: usize, tmp: &mut Vec<f32>, forward: bool) {
    if ch < 2 {
        return;
    }
    let scale = |buf: &mut [f32], inverse_gain: bool| {
        for r in 0..ch {
            let even = r & 1 == 0;
            let s = if even != inverse_gain { 1.0 / K } else { K };
            for v in &mut buf[row(r, stride, cw)] {
                *v *= s;
            }
        }
    };
    if forward {
        for (coef, start) in [(ALPHA, 1), (BETA, 0), (GAMMA, 1), (DELTA, 0)] {
            for r in (start..ch).step_by(2) {
                lift_rows(buf, r, left(r), right(r, ch), stride, cw, |d, a, b| {
                    d + coef * (a + b)
                });
            }
        }
        scale(buf, false);
        reorder_rows(buf, cw, ch, stride, tmp, true);
    } else {
        reorder_rows(buf, cw, ch, stride, tmp, false);
        scale(buf, true);
        for (coef, start) in [(DELTA, 0), (GAMMA, 1), (BETA, 0), (ALPHA, 1)] {
            for r in (start..ch).step_by(2) {
                lift_rows(buf, r, left(r), right(r, ch), stride, cw, |d, a, b| {
                    d - coef * (a + b)
                });
            }
        }
    }
}

/// L2 norms of the 1D synthesis basis functions: `[reversible][high][level-1]`, for levels
/// 1..=MAX_NORM_LEVEL; beyond that each extra level multiplies a norm by sqrt(2).
const MAX_NORM_LEVEL: usize = 8;

fn norms() -> &'static [[[f64; MAX_NORM_LEVEL]; 2]; 2] {
    static NORMS: OnceLock<[[[f64; MAX_NORM_LEVEL]; 2]; 2]> = OnceLock::new();
    NORMS.get_or_init(|| {
        let mut out = [[[0.0; MAX_NORM_LEVEL]; 2]; 2];
        for (rev, out_rev) in out.iter_mut().enumerate() {
            for (high, out_band) in out_rev.iter_mut().enumerate() {
                for level in 1..=MAX_NORM_LEVEL {
                    let n = 64usize << level;
                    // Position of the impulse inside the band, away from the edges.
                    let band_len = n >> level;
                    let pos = if high == 1 {
                        (n >> level) + band_len / 2
                    } else {
                        band_len / 2
                    };
                    let norm = if rev == 1 {
                        const SCALE: f64 = 65536.0;
                        let mut v = vec![0i32; n];
                        v[pos] = SCALE as i32;
                        inv53(&mut v, n, 1, n, level as u8);
                        v.iter()
                            .map(|&x| (x as f64 / SCALE).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    } else {
                        let mut v = vec![0f32; n];
                        v[pos] = 1.0;
                        inv97(&mut v, n, 1, n, level as u8);
                        v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
                    };
                    out_band[level - 1] = norm;
                }
            }
        }
        out
    })
}

/// 1D synthesis norm of a low (`high == false`) or high band at decomposition `level >= 1`.
pub fn norm_1d(reversible: bool, high: bool, level: u8) -> f64 {
    let t = &norms()[reversible as usize][high as usize];
    let l = level.max(1) as usize;
    if l <= MAX_NORM_LEVEL {
        t[l - 1]
    } else {
        t[MAX_NORM_LEVEL - 1] * 2f64.sqrt().powi((l - MAX_NORM_LEVEL) as i32)
    }
}

/// Squared L2 norm of the 2D synthesis basis of a band: orientation 0 = LL, 1 = HL,
/// 2 = LH, 3 = HH, at decomposition `level` (LL with level 0 means no transform).
pub fn band_weight(reversible: bool, orient: u8, level: u8) -> f64 {
    if level == 0 {
        return 1.0;
    }
    let nx = norm_1d(reversible, orient & 1 == 1, level);
    let ny = norm_1d(reversible, orient & 2 == 2, level);
    (nx * ny).powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, n: usize, amp: i32) -> Vec<i32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % (2 * amp as u64 + 1)) as i32 - amp
            })
            .collect()
    }

    #[test]
    fn reversible_round_trip_is_exact_on_odd_sizes() {
        for (i, &(w, h, levels)) in [
            (1, 1, 0),
            (1, 7, 2),
            (7, 1, 2),
            (2, 2, 1),
            (37, 61, 5),
            (64, 64, 6),
            (5, 3, 2),
            (33, 17, 3),
        ]
        .iter()
        .enumerate()
        {
            let stride = w + 3;
            let orig = noise(i as u64 + 7, stride * h, 32768);
            let mut buf = orig.clone();
            fwd53(&mut buf, w, h, stride, levels);
            if w * h > 4 && levels > 0 {
                assert_ne!(buf, orig, "transform must change data");
            }
            inv53(&mut buf, w, h, stride, levels);
            assert_eq!(buf, orig, "{w}x{h} levels {levels}");
        }
    }

    #[test]
    fn irreversible_round_trip_is_close() {
        for &(w, h, levels) in &[(37, 61, 5), (64, 64, 3), (3, 2, 1)] {
            let orig: Vec<f32> = noise(5, w * h, 2048)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            let mut buf = orig.clone();
            fwd97(&mut buf, w, h, w, levels);
            inv97(&mut buf, w, h, w, levels);
            let err = orig
                .iter()
                .zip(&buf)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 0.05, "{w}x{h}: max error {err}");
        }
    }

    #[test]
    fn low_pass_keeps_dc_and_high_pass_removes_it() {
        let (w, h) = (32, 32);
        let mut f = vec![100f32; w * h];
        fwd97(&mut f, w, h, w, 1);
        assert!((f[0] - 100.0).abs() < 0.01, "9/7 LL DC gain is 1: {}", f[0]);
        assert!(f[w - 1].abs() < 0.01 && f[(h - 1) * w].abs() < 0.01);
        let mut i = vec![100i32; w * h];
        fwd53(&mut i, w, h, w, 2);
        assert_eq!(i[0], 100);
        assert_eq!(i[w - 1], 0);
    }

    #[test]
    fn synthesis_norms_are_plausible() {
        // 5/3 synthesis filters are (1/2, 1, 1/2) and (-1/8, -1/4, 3/4, -1/4, -1/8): norms
        // sqrt(1.5) and sqrt(0.71875). The 9/7 pair with unit DC analysis gain has synthesis
        // norms near 1.40 (low) and 0.72 (high: its analysis gain at Nyquist is 2).
        let l2 = norm_1d(true, false, 1);
        let h2 = norm_1d(true, true, 1);
        assert!(
            (l2 - 1.5f64.sqrt()).abs() < 1e-3 && (h2 - 0.71875f64.sqrt()).abs() < 1e-3,
            "5/3: {l2} {h2}"
        );
        let l1 = norm_1d(false, false, 1);
        let h1 = norm_1d(false, true, 1);
        assert!(
            (l1 - 1.40).abs() < 0.03 && (h1 - 0.72).abs() < 0.02,
            "9/7: {l1} {h1}"
        );
        // Each level adds roughly a factor sqrt(2) in 1D.
        let r = norm_1d(false, false, 6) / norm_1d(false, false, 5);
        assert!((r - 2f64.sqrt()).abs() < 0.05, "level ratio {r}");
    }
}
