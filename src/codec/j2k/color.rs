//! Multiple-component transforms (ISO/IEC 15444-1 Annex G): the reversible colour transform
//! (RCT) for lossless RGB and the irreversible colour transform (ICT) for lossy RGB. Both run
//! on DC-level-shifted samples and are signalled by MCT = 1 in COD.

/// Forward RCT in place: (R, G, B) -> (Y, Cb, Cr), exactly invertible in integers.
pub fn rct_forward(r: &mut [i32], g: &mut [i32], b: &mut [i32]) {
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rv, gv, bv) = (*r, *g, *b);
        *r = (rv + 2 * gv + bv) >> 2;
        *g = bv - gv;
        *b = rv - gv;
    }
}

/// Forward ICT in place (YCbCr with the JPEG weights).
pub fn ict_forward(r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rv, gv, bv) = (*r, *g, *b);
        *r = 0.299 * rv + 0.587 * gv + 0.114 * bv;
        *g = -0.168_736 * rv - 0.331_264 * gv + 0.5 * bv;
        *b = 0.5 * rv - 0.418_688 * gv - 0.081_312 * bv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rct_inverts_exactly() {
        let vals = [-128, -1, 0, 1, 77, 127];
        for &rv in &vals {
            for &gv in &vals {
                for &bv in &vals {
                    let (mut r, mut g, mut b) = (vec![rv], vec![gv], vec![bv]);
                    rct_forward(&mut r, &mut g, &mut b);
                    // G.2 inverse
                    let gg = r[0] - ((g[0] + b[0]) >> 2);
                    assert_eq!((b[0] + gg, gg, g[0] + gg), (rv, gv, bv));
                }
            }
        }
    }

    #[test]
    fn ict_maps_grey_to_luma_only() {
        let (mut r, mut g, mut b) = (vec![50.0], vec![50.0], vec![50.0]);
        ict_forward(&mut r, &mut g, &mut b);
        assert!((r[0] - 50.0).abs() < 1e-3 && g[0].abs() < 1e-3 && b[0].abs() < 1e-3);
    }
}
