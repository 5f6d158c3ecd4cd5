//! MAXSHIFT region of interest (ISO/IEC 15444-1 Annex H, RGN marker A.6.3).
//!
//! The pixel mask is carried into the wavelet domain conservatively: a coefficient is ROI if
//! any pixel its synthesis basis touches is ROI (5/3: low support 3, high support 5; 9/7: 7
//! and 9), level by level, separably. ROI coefficient magnitudes are then scaled up by `s`
//! bit-planes so every ROI magnitude is at least `2^s` and every background magnitude is
//! below it; the decoder finds ROI coefficients by magnitude alone and needs no mask.
//!
//! OpenJPEG applies its `>= 2^s` test to magnitudes that still carry one extra fractional
//! bit (its tier-1 works at twice the coefficient scale), so a background coefficient in
//! `[2^(s-1), 2^s)` would be mistaken for ROI there. We therefore pick `s` one larger than
//! the background's bit-plane count: still a valid MAXSHIFT for any conforming decoder.

use super::dwt::level_dims;

/// OpenJPEG rejects code-blocks whose coded bit-planes plus one reach 31; we stay one
/// plane below that.
pub const MAX_CODED_PLANES: u32 = 28;

/// Wavelet-domain ROI mask in the same Mallat layout as the coefficients of a `w x h` tile.
pub fn wavelet_mask(
    pixels: &[bool],
    w: usize,
    h: usize,
    levels: u8,
    reversible: bool,
) -> Vec<bool> {
    let (a, b) = if reversible { (1isize, 2isize) } else { (3, 4) };
    let mut m = pixels.to_vec();
    let mut tmp = Vec::new();
    for (cw, ch) in level_dims(w, h, levels) {
        let (lw, lh) = (cw.div_ceil(2), ch.div_ceil(2));
        // Horizontal: low coefficient k sits at 2k, high coefficient k at 2k + 1.
        for y in 0..ch {
            let row = &m[y * w..y * w + cw];
            tmp.clear();
            for k in 0..cw {
                let (centre, r) = if k < lw {
                    (2 * k as isize, a)
                } else {
                    (2 * (k - lw) as isize + 1, b)
                };
                let lo = (centre - r).max(0) as usize;
                let hi = ((centre + r) as usize).min(cw - 1);
                tmp.push(row[lo..=hi].iter().any(|&v| v));
            }
            m[y * w..y * w + cw].copy_from_slice(&tmp);
        }
        // Vertical, column by column over the new layout.
        let mut col = Vec::with_capacity(ch);
        for x in 0..cw {
            col.clear();
            col.extend((0..ch).map(|y| m[y * w + x]));
            for k in 0..ch {
                let (centre, r) = if k < lh {
                    (2 * k as isize, a)
                } else {
                    (2 * (k - lh) as isize + 1, b)
                };
                let lo = (centre - r).max(0) as usize;
                let hi = ((centre + r) as usize).min(ch - 1);
                m[k * w + x] = col[lo..=hi].iter().any(|&v| v);
            }
        }
    }
    m
}

/// Number of leading coding passes of a block with `numbps` coded planes that code planes
/// at or above `shift` (i.e. carry ROI information).
pub fn roi_passes(numbps: u8, shift: u8) -> usize {
    if numbps > shift {
        1 + 3 * (numbps - 1 - shift) as usize
    } else {
        0
    }
}

/// Bit-planes in a magnitude (0 for 0).
pub fn planes(v: u32) -> u32 {
    32 - v.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::super::dwt::{fwd53, inv53};
    use super::*;

    #[test]
    fn roi_pixels_survive_loss_of_all_background_coefficients() {
        // Zeroing every non-ROI coefficient must leave the ROI pixels of the reversible
        // transform exact: that is the property MAXSHIFT relies on.
        let (w, h, levels) = (45usize, 38usize, 4u8);
        let mut s = 99u64;
        let img: Vec<i32> = (0..w * h)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) % 4096) as i32 - 2048
            })
            .collect();
        let mut pix = vec![false; w * h];
        for y in 10..17 {
            for x in 20..31 {
                pix[y * w + x] = true;
            }
        }
        pix[0] = true; // a corner pixel exercises the mirrored edge
        let mask = wavelet_mask(&pix, w, h, levels, true);
        let mut c = img.clone();
        fwd53(&mut c, w, h, w, levels);
        for (v, &m) in c.iter_mut().zip(&mask) {
            if !m {
                *v = 0;
            }
        }
        inv53(&mut c, w, h, w, levels);
        for i in 0..w * h {
            if pix[i] {
                assert_eq!(c[i], img[i], "ROI pixel {} {}", i % w, i / w);
            }
        }
        let frac = mask.iter().filter(|&&m| m).count() as f64 / (w * h) as f64;
        assert!(frac < 0.5, "mask must stay local, got {frac}");
    }

    #[test]
    fn roi_pass_count() {
        assert_eq!(roi_passes(10, 6), 1 + 3 * 3);
        assert_eq!(roi_passes(6, 6), 0);
        assert_eq!(roi_passes(7, 6), 1);
    }
}
