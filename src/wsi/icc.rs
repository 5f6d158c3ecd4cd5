//! The ICC profile a slide's Optical Path carries when its source image has none (a PNG
//! without `iCCP`, a TIFF without tag 34675): sRGB, which such a file's RGB values are taken
//! to be. Written here (an ICC v2 display profile: matrix and tone curves, PCS XYZ), not
//! copied from a file, so the binary needs nothing installed.

/// sRGB's primaries adapted to D50 (Bradford), the PCS's white, as ICC profiles give them.
const RED: [f64; 3] = [0.436_074_7, 0.222_504_5, 0.013_932_2];
const GREEN: [f64; 3] = [0.385_064_9, 0.716_878_6, 0.097_104_5];
const BLUE: [f64; 3] = [0.143_080_4, 0.060_616_9, 0.714_173_3];
const D50: [f64; 3] = [0.964_2, 1.0, 0.824_9];
/// Entries of the tabulated sRGB tone curve.
const CURVE_POINTS: usize = 1024;

fn s15_fixed16(v: f64) -> [u8; 4] {
    ((v * 65536.0).round() as i32).to_be_bytes()
}

fn xyz(v: [f64; 3]) -> Vec<u8> {
    let mut out = b"XYZ \0\0\0\0".to_vec();
    for c in v {
        out.extend_from_slice(&s15_fixed16(c));
    }
    out
}

/// textDescriptionType (ICC v2): ASCII, then empty Unicode and ScriptCode parts.
fn description(text: &str) -> Vec<u8> {
    let mut out = b"desc\0\0\0\0".to_vec();
    out.extend_from_slice(&(text.len() as u32 + 1).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out.extend_from_slice(&[0; 4 + 4 + 2 + 1 + 67]);
    out
}

fn text(text: &str) -> Vec<u8> {
    let mut out = b"text\0\0\0\0".to_vec();
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

/// The sRGB transfer function (IEC 61966-2-1), tabulated.
fn srgb_curve() -> Vec<u8> {
    let mut out = b"curv\0\0\0\0".to_vec();
    out.extend_from_slice(&(CURVE_POINTS as u32).to_be_bytes());
    for i in 0..CURVE_POINTS {
        let v = i as f64 / (CURVE_POINTS - 1) as f64;
        let linear = if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        };
        out.extend_from_slice(&((linear * 65535.0).round() as u16).to_be_bytes());
    }
    out
}

/// The sRGB profile, about 2.6 KB.
pub fn srgb() -> Vec<u8> {
    let curve = srgb_curve();
    // (signature, data); the three tone curves share one element.
    let tags: [(&[u8; 4], Vec<u8>); 9] = [
        (b"desc", description("sRGB IEC61966-2.1")),
        (b"cprt", text("No copyright, use freely")),
        (b"wtpt", xyz(D50)),
        (b"rXYZ", xyz(RED)),
        (b"gXYZ", xyz(GREEN)),
        (b"bXYZ", xyz(BLUE)),
        (b"rTRC", curve.clone()),
        (b"gTRC", Vec::new()),
        (b"bTRC", Vec::new()),
    ];
    let table = 128 + 4 + 12 * tags.len();
    let mut data: Vec<u8> = Vec::new();
    let mut entries = Vec::new();
    let mut curve_at = 0;
    for (signature, element) in &tags {
        let (at, len) = if element.is_empty() {
            (curve_at, curve.len())
        } else {
            let at = table + data.len();
            data.extend_from_slice(element);
            while data.len() % 4 != 0 {
                data.push(0);
            }
            (at, element.len())
        };
        if *signature == b"rTRC" {
            curve_at = at;
        }
        entries.push((*signature, at as u32, len as u32));
    }
    let size = (table + data.len()) as u32;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // preferred CMM
    out.extend_from_slice(&[2, 0x10, 0, 0]); // version 2.1
    out.extend_from_slice(b"mntrRGB XYZ ");
    for part in [2026u16, 1, 1, 0, 0, 0] {
        out.extend_from_slice(&part.to_be_bytes());
    }
    out.extend_from_slice(b"acsp");
    out.extend_from_slice(&[0; 24]); // platform, flags, manufacturer, model, attributes
    out.extend_from_slice(&0u32.to_be_bytes()); // rendering intent: perceptual
    for c in D50 {
        out.extend_from_slice(&s15_fixed16(c));
    }
    out.extend_from_slice(&[0; 48]); // creator, profile ID, reserved
    debug_assert_eq!(out.len(), 128);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (signature, at, len) in entries {
        out.extend_from_slice(signature);
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> usize {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
    }

    #[test]
    fn the_srgb_profile_is_well_formed() {
        let p = srgb();
        assert_eq!(u32_at(&p, 0), p.len());
        assert_eq!(&p[36..40], b"acsp");
        assert_eq!(&p[12..24], b"mntrRGB XYZ ");
        let count = u32_at(&p, 128);
        let mut signatures = Vec::new();
        for i in 0..count {
            let entry = 132 + 12 * i;
            let (at, len) = (u32_at(&p, entry + 4), u32_at(&p, entry + 8));
            assert!(
                at % 4 == 0 && at + len <= p.len(),
                "tag {i} inside the profile"
            );
            signatures.push(String::from_utf8(p[entry..entry + 4].to_vec()).unwrap());
            let kind = &p[at..at + 4];
            assert!([b"desc", b"text", b"XYZ ", b"curv"].contains(&kind.try_into().unwrap()));
        }
        for required in [
            "desc", "cprt", "wtpt", "rXYZ", "gXYZ", "bXYZ", "rTRC", "gTRC", "bTRC",
        ] {
            assert!(signatures.iter().any(|s| s == required), "{required}");
        }
        // The curve's ends: black and white.
        let curve = u32_at(&p, 132 + 12 * 6 + 4);
        assert_eq!(u32_at(&p, curve + 8), CURVE_POINTS);
        assert_eq!(&p[curve + 12..curve + 14], [0, 0]);
        let last = curve + 12 + 2 * (CURVE_POINTS - 1);
        assert_eq!(&p[last..last + 2], [0xFF, 0xFF]);
    }
}
