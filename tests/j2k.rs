//! JPEG 2000 encoder against independent decoders: OpenJPEG's `opj_decompress` (Debian
//! libopenjp2-tools), the `openjp2` crate (a Rust port of OpenJPEG) and pylibjpeg-openjpeg
//! (set STRATA_PYTHON to a Python with it; default .venv/bin/python). Images are generated
//! here; nothing is skipped when a decoder is missing — the test fails and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::codec::j2k::prefix::resolution_prefix;
use strata::codec::j2k::{encode, EncodeParams, Encoded, Image, Mask, Mode, Samples};

#[path = "common/j2k_images.rs"]
mod images;
use images::{ct_phantom, mr_like, rgb_image, signed_image};

// ---------- decoders ----------

#[derive(Debug, Clone, PartialEq)]
struct Decoded {
    w: u32,
    h: u32,
    comps: u32,
    /// Interleaved samples.
    samples: Vec<i32>,
}

fn write_j2c(dir: &Path, name: &str, enc: &Encoded) -> PathBuf {
    let p = dir.join(format!("{name}.j2c"));
    std::fs::write(&p, &enc.codestream).unwrap();
    p
}

/// `opj_decompress` to little-endian raw (component planes, 1 or 2 bytes per sample).
fn decode_opj_cli(j2c: &Path, w: u32, h: u32, comps: u32, bits: u8, signed: bool) -> Decoded {
    decode_opj_cli_reduced(j2c, 0, w, h, comps, bits, signed)
}

/// `opj_decompress -r reduce`: `w` and `h` are the full size.
fn decode_opj_cli_reduced(
    j2c: &Path,
    reduce: u32,
    w: u32,
    h: u32,
    comps: u32,
    bits: u8,
    signed: bool,
) -> Decoded {
    let (w, h) = (w.div_ceil(1 << reduce), h.div_ceil(1 << reduce));
    let out = j2c.with_extension("rawl");
    let res = Command::new("/usr/bin/opj_decompress")
        .arg("-i")
        .arg(j2c)
        .arg("-o")
        .arg(&out)
        .arg("-r")
        .arg(reduce.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run /usr/bin/opj_decompress (apt-get install libopenjp2-tools): {e}")
        });
    assert!(
        res.status.success(),
        "opj_decompress failed on {}: {}{}",
        j2c.display(),
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let raw = std::fs::read(&out).unwrap();
    let n = (w * h) as usize;
    let bps = if bits <= 8 { 1 } else { 2 };
    assert_eq!(
        raw.len(),
        n * comps as usize * bps,
        "opj_decompress raw size"
    );
    let mut samples = vec![0i32; n * comps as usize];
    for c in 0..comps as usize {
        for i in 0..n {
            let k = c * n + i;
            let v = if bps == 1 {
                if signed {
                    raw[k] as i8 as i32
                } else {
                    raw[k] as i32
                }
            } else {
                let u = u16::from_le_bytes([raw[2 * k], raw[2 * k + 1]]);
                if signed {
                    u as i16 as i32
                } else {
                    u as i32
                }
            };
            samples[i * comps as usize + c] = v;
        }
    }
    Decoded {
        w,
        h,
        comps,
        samples,
    }
}

/// The openjp2 crate (pure Rust port of OpenJPEG), through its safe codec API.
fn decode_openjp2_crate(j2c: &Path) -> Decoded {
    decode_openjp2_crate_reduced(j2c, 0)
}

/// The openjp2 crate with its `cp_reduce` option: the highest `reduce` levels discarded.
fn decode_openjp2_crate_reduced(j2c: &Path, reduce: u32) -> Decoded {
    use openjp2::openjpeg::{opj_dparameters_t, OPJ_CODEC_J2K};
    use openjp2::{Codec, Stream};
    let mut stream = Stream::new_file(j2c, 1 << 16, true).expect("open codestream");
    let mut codec = Codec::new_decoder(OPJ_CODEC_J2K).expect("openjp2 decoder");
    let mut params = opj_dparameters_t::default();
    params.cp_reduce = reduce;
    assert!(codec.setup_decoder(&mut params) != 0, "openjp2 setup");
    let mut image = codec.read_header(&mut stream).expect("openjp2 read_header");
    assert!(
        codec.decode(&mut stream, &mut image) != 0,
        "openjp2 decode failed for {}",
        j2c.display()
    );
    assert!(
        codec.end_decompress(&mut stream) != 0,
        "openjp2 end_decompress"
    );
    let comps = image.comps().expect("components");
    let (w, h) = (comps[0].w, comps[0].h);
    let nc = comps.len();
    let mut samples = vec![0i32; (w * h) as usize * nc];
    for (c, comp) in comps.iter().enumerate() {
        let data = comp.data().expect("component data");
        for (i, &v) in data.iter().enumerate() {
            samples[i * nc + c] = v;
        }
    }
    Decoded {
        w,
        h,
        comps: nc as u32,
        samples,
    }
}

/// pylibjpeg-openjpeg via tools/j2k_decode.py.
fn decode_pylibjpeg(j2c: &Path) -> Decoded {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("STRATA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let out = j2c.with_extension("i32");
    let res = Command::new(&python)
        .arg(root.join("tools/j2k_decode.py"))
        .arg(j2c)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set STRATA_PYTHON or run tools/test.sh): {e}",
                python.display()
            )
        });
    assert!(
        res.status.success(),
        "pylibjpeg decode failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let dims: Vec<u32> = String::from_utf8_lossy(&res.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let raw = std::fs::read(&out).unwrap();
    let samples = raw
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Decoded {
        w: dims[0],
        h: dims[1],
        comps: dims[2],
        samples,
    }
}

/// Decodes with all three decoders and checks they agree on geometry.
fn decode_all(
    dir: &Path,
    name: &str,
    enc: &Encoded,
    img: &Image<'_>,
) -> Vec<(&'static str, Decoded)> {
    let p = write_j2c(dir, name, enc);
    let all = vec![
        (
            "opj_decompress",
            decode_opj_cli(
                &p,
                img.width,
                img.height,
                img.components as u32,
                img.bits_stored,
                img.signed,
            ),
        ),
        ("openjp2 crate", decode_openjp2_crate(&p)),
        ("pylibjpeg-openjpeg", decode_pylibjpeg(&p)),
    ];
    for (who, d) in &all {
        assert_eq!(
            (d.w, d.h, d.comps),
            (img.width, img.height, img.components as u32),
            "{who}: geometry of {name}"
        );
    }
    all
}

fn samples_i32(img: &Image<'_>) -> Vec<i32> {
    (0..img.samples.len()).map(|i| img.samples.get(i)).collect()
}

fn assert_lossless(dir: &Path, name: &str, img: &Image<'_>, params: &EncodeParams<'_>) -> Encoded {
    let enc = encode(img, params).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&enc.codestream[..2], &[0xFF, 0x4F], "SOC");
    assert!(enc.lossless, "{name}: encoder must report lossless");
    let want = samples_i32(img);
    for (who, d) in decode_all(dir, name, &enc, img) {
        if let Some(i) = (0..want.len()).find(|&i| d.samples[i] != want[i]) {
            panic!(
                "{name}: {who} differs at sample {i}: {} != {}",
                d.samples[i], want[i]
            );
        }
    }
    println!(
        "{name}: {} bytes, ratio {:.2}",
        enc.codestream.len(),
        enc.achieved_ratio
    );
    enc
}

fn psnr(a: &[i32], b: &[i32], bits: u8, select: impl Fn(usize) -> bool) -> f64 {
    let (mut se, mut n) = (0f64, 0usize);
    for i in 0..a.len() {
        if select(i) {
            se += ((a[i] - b[i]) as f64).powi(2);
            n += 1;
        }
    }
    let peak = ((1u64 << bits) - 1) as f64;
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (peak * peak / (se / n as f64)).log10()
}

fn gray<'a>(w: u32, h: u32, bits: u8, px: &'a [u16]) -> Image<'a> {
    Image {
        width: w,
        height: h,
        components: 1,
        bits_stored: bits,
        signed: false,
        samples: Samples::U16(px),
    }
}

fn rgb<'a>(w: u32, h: u32, px: &'a [u8]) -> Image<'a> {
    Image {
        width: w,
        height: h,
        components: 3,
        bits_stored: 8,
        signed: false,
        samples: Samples::U8(px),
    }
}

// ---------- lossless ----------

#[test]
fn lossless_ct_12bit_decodes_identically_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    assert_lossless(
        dir.path(),
        "ct",
        &gray(512, 512, 12, &px),
        &EncodeParams::default(),
    );
}

#[test]
fn lossless_mr_16bit_and_multiple_layers() {
    let dir = tempfile::tempdir().unwrap();
    let px = mr_like(256, 256);
    let img = gray(256, 256, 16, &px);
    assert_lossless(dir.path(), "mr", &img, &EncodeParams::default());
    assert_lossless(
        dir.path(),
        "mr_layers",
        &img,
        &EncodeParams {
            layers: 4,
            ..Default::default()
        },
    );
}

#[test]
fn lossless_rgb_8bit_with_rct() {
    let dir = tempfile::tempdir().unwrap();
    let px = rgb_image(200, 150);
    assert_lossless(
        dir.path(),
        "rgb",
        &rgb(200, 150, &px),
        &EncodeParams::default(),
    );
}

#[test]
fn lossless_odd_and_tiny_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for &(w, h, bits) in &[
        (37u32, 61u32, 12u8),
        (1, 1, 8),
        (1, 17, 10),
        (23, 1, 16),
        (3, 2, 12),
        (65, 64, 9),
        (130, 7, 12),
    ] {
        let max = (1u32 << bits) - 1;
        let px: Vec<u16> = ct_phantom(w, h)
            .iter()
            .map(|&v| (v as u32 * max / 4095) as u16)
            .collect();
        assert_lossless(
            dir.path(),
            &format!("odd_{w}x{h}_{bits}"),
            &gray(w, h, bits, &px),
            &EncodeParams::default(),
        );
    }
}

#[test]
fn lossless_low_bit_depths() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [1u8, 2, 5, 7] {
        let max = (1u32 << bits) - 1;
        let px: Vec<u8> = ct_phantom(67, 45)
            .iter()
            .map(|&v| (v as u32 * max / 4095) as u8)
            .collect();
        let img = Image {
            width: 67,
            height: 45,
            components: 1,
            bits_stored: bits,
            signed: false,
            samples: Samples::U8(&px),
        };
        assert_lossless(
            dir.path(),
            &format!("bits{bits}"),
            &img,
            &EncodeParams::default(),
        );
    }
    let sp: Vec<i16> = signed_image(40, 30).iter().map(|&v| v >> 8).collect();
    let img = Image {
        width: 40,
        height: 30,
        components: 1,
        bits_stored: 8,
        signed: true,
        samples: Samples::I16(&sp),
    };
    assert_lossless(dir.path(), "signed8", &img, &EncodeParams::default());
}

#[test]
fn lossless_signed_16bit() {
    let dir = tempfile::tempdir().unwrap();
    let px = signed_image(97, 83);
    let img = Image {
        width: 97,
        height: 83,
        components: 1,
        bits_stored: 16,
        signed: true,
        samples: Samples::I16(&px),
    };
    assert_lossless(dir.path(), "signed16", &img, &EncodeParams::default());
}

#[test]
fn lossless_tiled_and_small_code_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(300, 170);
    let img = gray(300, 170, 12, &px);
    let p = EncodeParams {
        tile: Some((128, 64)),
        levels: 3,
        code_block: (32, 16),
        ..Default::default()
    };
    assert_lossless(dir.path(), "tiled", &img, &p);
    let rgb = rgb_image(100, 90);
    let img = Image {
        width: 100,
        height: 90,
        components: 3,
        bits_stored: 8,
        signed: false,
        samples: Samples::U8(&rgb),
    };
    assert_lossless(
        dir.path(),
        "tiled_rgb",
        &img,
        &EncodeParams {
            tile: Some((32, 32)),
            levels: 2,
            ..Default::default()
        },
    );
    // Edge tiles one sample wide/high: their high-pass bands are empty at every level.
    let px = ct_phantom(33, 65);
    let img = gray(33, 65, 12, &px);
    let enc = assert_lossless(
        dir.path(),
        "tiled_sliver",
        &img,
        &EncodeParams {
            tile: Some((32, 32)),
            ..Default::default()
        },
    );
    assert_eq!(enc.levels, 5);
}

/// Lossless size against opj_compress on the same image and settings (5 levels, 64x64).
#[test]
fn lossless_size_is_close_to_openjpeg() {
    let dir = tempfile::tempdir().unwrap();
    for (name, w, h, bits, px) in [
        ("ct", 512u32, 512u32, 12u8, ct_phantom(512, 512)),
        ("mr", 256, 256, 16, mr_like(256, 256)),
    ] {
        let enc = encode(&gray(w, h, bits, &px), &EncodeParams::default()).unwrap();
        let pgm = dir.path().join(format!("{name}.pgm"));
        let mut data = format!("P5\n{w} {h}\n{}\n", (1u32 << bits) - 1).into_bytes();
        for &v in &px {
            data.extend_from_slice(&v.to_be_bytes());
        }
        std::fs::write(&pgm, data).unwrap();
        let out = dir.path().join(format!("{name}_opj.j2k"));
        let res = Command::new("/usr/bin/opj_compress")
            .arg("-i")
            .arg(&pgm)
            .arg("-o")
            .arg(&out)
            .args(["-n", "6", "-b", "64,64"])
            .output()
            .expect("run /usr/bin/opj_compress (apt-get install libopenjp2-tools)");
        assert!(
            res.status.success(),
            "opj_compress: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let theirs = std::fs::metadata(&out).unwrap().len() as f64;
        let ours = enc.codestream.len() as f64;
        println!(
            "{name}: ours {ours} bytes, OpenJPEG {theirs} bytes, ratio {:.4}",
            ours / theirs
        );
        assert!(
            ours <= theirs * 1.03,
            "{name}: lossless size {ours} more than 3% above OpenJPEG's {theirs}"
        );
    }
}

// ---------- lossy ----------

#[test]
fn lossy_ratios_hit_target_with_sane_psnr() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    let img = gray(512, 512, 12, &px);
    let orig = samples_i32(&img);
    for &(ratio, layers, min_psnr) in &[(8.0f32, 1u8, 55.0), (20.0, 3, 48.0), (40.0, 5, 44.0)] {
        let enc = encode(
            &img,
            &EncodeParams {
                mode: Mode::Lossy { ratio },
                layers,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!enc.lossless && !enc.reversible);
        let rel = enc.achieved_ratio / ratio;
        println!(
            "lossy {ratio}: achieved {:.2} ({} bytes)",
            enc.achieved_ratio,
            enc.codestream.len()
        );
        assert!(
            (0.9..=1.1).contains(&rel),
            "ratio {ratio}: achieved {}",
            enc.achieved_ratio
        );
        for (who, d) in decode_all(dir.path(), &format!("lossy{ratio}"), &enc, &img) {
            let p = psnr(&orig, &d.samples, 12, |_| true);
            println!("  {who}: PSNR {p:.2} dB");
            assert!(
                p >= min_psnr,
                "ratio {ratio}: {who} PSNR {p:.2} < {min_psnr}"
            );
        }
    }
}

#[test]
fn lossy_rgb_and_16bit() {
    let dir = tempfile::tempdir().unwrap();
    let px = rgb_image(256, 192);
    let img = Image {
        width: 256,
        height: 192,
        components: 3,
        bits_stored: 8,
        signed: false,
        samples: Samples::U8(&px),
    };
    let enc = encode(
        &img,
        &EncodeParams {
            mode: Mode::Lossy { ratio: 12.0 },
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        (enc.achieved_ratio / 12.0 - 1.0).abs() <= 0.1,
        "rgb ratio {}",
        enc.achieved_ratio
    );
    let orig = samples_i32(&img);
    for (who, d) in decode_all(dir.path(), "lossy_rgb", &enc, &img) {
        let p = psnr(&orig, &d.samples, 8, |_| true);
        println!("rgb 12:1 {who}: PSNR {p:.2}");
        assert!(p > 30.0, "{who}: rgb PSNR {p}");
    }
    let mr = mr_like(256, 256);
    let img = gray(256, 256, 16, &mr);
    let enc = encode(
        &img,
        &EncodeParams {
            mode: Mode::Lossy { ratio: 10.0 },
            layers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        (enc.achieved_ratio / 10.0 - 1.0).abs() <= 0.1,
        "mr ratio {}",
        enc.achieved_ratio
    );
    let orig = samples_i32(&img);
    for (who, d) in decode_all(dir.path(), "lossy_mr", &enc, &img) {
        let p = psnr(&orig, &d.samples, 16, |_| true);
        println!("mr 10:1 {who}: PSNR {p:.2}");
        assert!(p > 45.0, "{who}: mr PSNR {p}");
    }
}

// ---------- region of interest ----------

fn check_roi(dir: &Path, name: &str, img: &Image<'_>, mask: &Mask, ratio: f32) -> Encoded {
    let enc = encode(
        img,
        &EncodeParams {
            mode: Mode::Roi {
                mask,
                background_ratio: ratio,
            },
            layers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let s = enc
        .roi_shift
        .unwrap_or_else(|| panic!("{name}: ROI not applied: {:?}", enc.note));
    assert!(!enc.lossless && enc.reversible);
    assert!(
        enc.codestream
            .windows(4)
            .any(|w| w == [0xFF, 0x5E, 0x00, 0x05]),
        "RGN marker"
    );
    let orig = samples_i32(img);
    let nc = img.components as usize;
    let in_roi = |i: usize| mask.bits()[i / nc];
    for (who, d) in decode_all(dir, name, &enc, img) {
        let bad = (0..orig.len())
            .filter(|&i| in_roi(i) && d.samples[i] != orig[i])
            .count();
        assert_eq!(
            bad, 0,
            "{name}: {who}: {bad} ROI samples differ (shift {s})"
        );
        let bg = psnr(&orig, &d.samples, img.bits_stored, |i| !in_roi(i));
        println!(
            "{name}: {who}: ROI exact ({} px), background PSNR {bg:.2} dB, ratio {:.2} (asked {ratio}), shift {s}",
            mask.count(),
            enc.achieved_ratio
        );
        assert!(
            bg.is_finite(),
            "{name}: background must be truncated at ratio {ratio}"
        );
        assert!(bg > 25.0, "{name}: {who}: background PSNR {bg:.2} too low");
    }
    enc
}

#[test]
fn roi_disk_is_exact_and_background_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    let img = gray(512, 512, 12, &px);
    let mut mask = Mask::new(512, 512);
    mask.add_ellipse(256.0 + 61.0, 256.0 - 26.0, 30.0, 30.0);
    let enc = check_roi(dir.path(), "roi_disk", &img, &mask, 30.0);
    assert!(enc.note.is_none(), "{:?}", enc.note);
    let rel = background_ratio(&img, &mask, &enc) / 30.0;
    assert!((0.9..=1.1).contains(&rel), "background ratio {rel} x 30");
}

/// The ratio the background got: its raw bytes over the bytes beyond the ROI's own (the
/// size of the same encoding with a background ratio too high to leave it anything).
fn background_ratio(img: &Image<'_>, mask: &Mask, enc: &Encoded) -> f64 {
    let roi_only = encode(
        img,
        &EncodeParams {
            mode: Mode::Roi {
                mask,
                background_ratio: 1e9,
            },
            layers: 2,
            ..Default::default()
        },
    )
    .unwrap()
    .codestream
    .len();
    let pixels = (img.width * img.height) as f64;
    let background_raw = img.raw_bytes() as f64 * (1.0 - mask.count() as f64 / pixels);
    background_raw / (enc.codestream.len() - roi_only) as f64
}

#[test]
fn roi_rect_on_rgb_and_odd_size() {
    let dir = tempfile::tempdir().unwrap();
    let px = rgb_image(150, 101);
    let img = Image {
        width: 150,
        height: 101,
        components: 3,
        bits_stored: 8,
        signed: false,
        samples: Samples::U8(&px),
    };
    let mut mask = Mask::new(150, 101);
    mask.add_rect(20, 30, 41, 17).add_rect(149, 100, 1, 1);
    let enc = check_roi(dir.path(), "roi_rgb", &img, &mask, 8.0);
    assert!(enc.note.is_none(), "{:?}", enc.note);
}

#[test]
fn roi_auto_mask_on_ct() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(256, 256);
    let img = gray(256, 256, 12, &px);
    let auto = Mask::auto(&img).unwrap();
    println!(
        "auto mask covers {:.1}% of the image",
        auto.fraction * 100.0
    );
    assert!(
        auto.fraction > 0.3 && auto.fraction < 0.6,
        "body ellipse is ~44% of the image, got {}",
        auto.fraction
    );
    let enc = check_roi(dir.path(), "roi_auto", &img, &auto.mask, 4.0);
    assert!(enc.note.is_none(), "{:?}", enc.note);
    let rel = background_ratio(&img, &auto.mask, &enc) / 4.0;
    assert!((0.9..=1.1).contains(&rel), "background ratio {rel} x 4");
    // At 10:1 the lossless ROI alone is larger than a tenth of the image: the background
    // still gets its share (check_roi asserts its PSNR), and the ROI stays exact.
    let enc = check_roi(dir.path(), "roi_auto_10", &img, &auto.mask, 10.0);
    assert!(enc.note.is_none(), "{:?}", enc.note);
    assert!(enc.achieved_ratio < 9.0, "ratio {}", enc.achieved_ratio);
    let rel = background_ratio(&img, &auto.mask, &enc) / 10.0;
    assert!((0.9..=1.1).contains(&rel), "background ratio {rel} x 10");
}

#[test]
fn roi_on_16bit_falls_back_to_lossless_with_note() {
    let dir = tempfile::tempdir().unwrap();
    let px = mr_like(128, 128);
    let img = gray(128, 128, 16, &px);
    let mut mask = Mask::new(128, 128);
    mask.add_rect(40, 40, 30, 30);
    let enc = assert_lossless(
        dir.path(),
        "roi_fallback",
        &img,
        &EncodeParams {
            mode: Mode::Roi {
                mask: &mask,
                background_ratio: 20.0,
            },
            ..Default::default()
        },
    );
    assert_eq!(enc.roi_shift, None);
    let note = enc.note.expect("fallback must be reported");
    assert!(note.contains("lossless"), "{note}");
}

// ---------- errors ----------

#[test]
fn bad_input_is_an_error_not_a_panic() {
    use strata::codec::j2k::J2kError;
    let px = vec![0u16; 16];
    let ok = gray(4, 4, 12, &px);
    let e = |img: &Image<'_>, p: &EncodeParams<'_>| encode(img, p).unwrap_err();
    assert!(matches!(
        e(&gray(0, 4, 12, &px), &EncodeParams::default()),
        J2kError::InvalidDimensions { .. }
    ));
    assert!(matches!(
        e(&gray(4, 4, 17, &px), &EncodeParams::default()),
        J2kError::UnsupportedBitDepth(17)
    ));
    assert!(matches!(
        e(&gray(5, 4, 12, &px), &EncodeParams::default()),
        J2kError::SampleCountMismatch { .. }
    ));
    let big = vec![5000u16; 16];
    assert!(matches!(
        e(&gray(4, 4, 12, &big), &EncodeParams::default()),
        J2kError::SampleOutOfRange { .. }
    ));
    let mask = Mask::new(3, 3);
    let roi = EncodeParams {
        mode: Mode::Roi {
            mask: &mask,
            background_ratio: 5.0,
        },
        ..Default::default()
    };
    assert!(matches!(e(&ok, &roi), J2kError::MaskSizeMismatch { .. }));
    assert!(matches!(
        e(
            &ok,
            &EncodeParams {
                code_block: (128, 64),
                ..Default::default()
            }
        ),
        J2kError::InvalidCodeBlock(..)
    ));
    assert!(matches!(
        e(
            &ok,
            &EncodeParams {
                mode: Mode::Lossy { ratio: 0.5 },
                ..Default::default()
            }
        ),
        J2kError::InvalidRatio(_)
    ));
    assert!(matches!(
        e(
            &ok,
            &EncodeParams {
                layers: 0,
                ..Default::default()
            }
        ),
        J2kError::InvalidLayers(0)
    ));
}

// ---------- tiling and signed data in the lossy paths ----------

#[test]
fn lossy_and_roi_with_tiles_and_signed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    let img = gray(512, 512, 12, &px);
    let orig = samples_i32(&img);
    let p = EncodeParams {
        mode: Mode::Lossy { ratio: 15.0 },
        tile: Some((256, 128)),
        layers: 2,
        ..Default::default()
    };
    let enc = encode(&img, &p).unwrap();
    assert!(
        (enc.achieved_ratio / 15.0 - 1.0).abs() <= 0.1,
        "tiled lossy ratio {}",
        enc.achieved_ratio
    );
    for (who, d) in decode_all(dir.path(), "tiled_lossy", &enc, &img) {
        let q = psnr(&orig, &d.samples, 12, |_| true);
        println!("tiled lossy 15:1 {who}: PSNR {q:.2}");
        assert!(q > 48.0, "{who}: tiled lossy PSNR {q}");
    }

    // A disk straddling four tiles.
    let mut mask = Mask::new(512, 512);
    mask.add_ellipse(256.0, 256.0, 40.0, 25.0);
    let enc = encode(
        &img,
        &EncodeParams {
            mode: Mode::Roi {
                mask: &mask,
                background_ratio: 20.0,
            },
            tile: Some((256, 256)),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(enc.roi_shift.is_some(), "{:?}", enc.note);
    for (who, d) in decode_all(dir.path(), "tiled_roi", &enc, &img) {
        let bad = (0..orig.len())
            .filter(|&i| mask.bits()[i] && d.samples[i] != orig[i])
            .count();
        assert_eq!(bad, 0, "tiled ROI: {who}");
        let bg = psnr(&orig, &d.samples, 12, |i| !mask.bits()[i]);
        println!(
            "tiled ROI {who}: background PSNR {bg:.2}, ratio {:.2}",
            enc.achieved_ratio
        );
        assert!(bg.is_finite() && bg > 35.0);
    }

    let sp = signed_image(120, 90);
    let simg = Image {
        width: 120,
        height: 90,
        components: 1,
        bits_stored: 16,
        signed: true,
        samples: Samples::I16(&sp),
    };
    let sorig = samples_i32(&simg);
    let enc = encode(
        &simg,
        &EncodeParams {
            mode: Mode::Lossy { ratio: 6.0 },
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        (enc.achieved_ratio / 6.0 - 1.0).abs() <= 0.1,
        "signed lossy ratio {}",
        enc.achieved_ratio
    );
    for (who, d) in decode_all(dir.path(), "signed_lossy", &enc, &simg) {
        let q = psnr(&sorig, &d.samples, 16, |_| true);
        println!("signed 16-bit 6:1 {who}: PSNR {q:.2}");
        assert!(q > 50.0, "{who}: signed lossy PSNR {q}");
    }
}

#[test]
fn psnr_target_is_met_without_overshooting_much() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    let img = gray(512, 512, 12, &px);
    let orig = samples_i32(&img);
    let mut last_size = 0;
    for &target in &[46.0f32, 52.0, 58.0] {
        let enc = encode(
            &img,
            &EncodeParams {
                mode: Mode::Quality { psnr: target },
                layers: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            enc.codestream.len() > last_size,
            "higher PSNR must cost more bytes"
        );
        last_size = enc.codestream.len();
        for (who, d) in decode_all(dir.path(), &format!("q{target}"), &enc, &img) {
            let p = psnr(&orig, &d.samples, 12, |_| true);
            println!(
                "target {target} dB: {who} {p:.2} dB at ratio {:.2}",
                enc.achieved_ratio
            );
            assert!(
                p >= target as f64 - 0.1 && p <= target as f64 + 2.0,
                "{who}: target {target}, got {p:.2}"
            );
        }
    }
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let px = ct_phantom(300, 200);
    let img = gray(300, 200, 12, &px);
    let mut mask = Mask::new(300, 200);
    mask.add_rect(100, 50, 60, 40);
    for mode in [
        Mode::Lossless,
        Mode::Lossy { ratio: 12.0 },
        Mode::Roi {
            mask: &mask,
            background_ratio: 10.0,
        },
    ] {
        let one = encode(
            &img,
            &EncodeParams {
                mode,
                threads: 1,
                layers: 2,
                tile: Some((128, 128)),
                ..Default::default()
            },
        )
        .unwrap();
        let many = encode(
            &img,
            &EncodeParams {
                mode,
                threads: 5,
                layers: 2,
                tile: Some((128, 128)),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            one.codestream == many.codestream,
            "{mode:?}: 1 vs 5 threads differ"
        );
    }
}

/// Across bit depths the ROI either applies (and is exact in every decoder) or falls back to
/// lossless with a note: never a codestream a decoder rejects. Full-range noise pushes the
/// coefficient bit-planes (and so the MAXSHIFT total) to the maximum for each depth.
#[test]
fn roi_near_the_decoder_bit_plane_limit_never_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (96u32, 80u32);
    let mut mask = Mask::new(w, h);
    mask.add_rect(30, 20, 25, 30);
    for bits in 10u8..=16 {
        let mut s = 0x1234_5678_9abc_def0u64 ^ bits as u64;
        let px: Vec<u16> = (0..w * h)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % (1u64 << bits)) as u16
            })
            .collect();
        let img = gray(w, h, bits, &px);
        let enc = encode(
            &img,
            &EncodeParams {
                mode: Mode::Roi {
                    mask: &mask,
                    background_ratio: 3.0,
                },
                ..Default::default()
            },
        )
        .unwrap();
        let orig = samples_i32(&img);
        let decoded = decode_all(dir.path(), &format!("limit{bits}"), &enc, &img);
        match enc.roi_shift {
            Some(shift) => {
                for (who, d) in &decoded {
                    assert!(
                        (0..orig.len()).all(|i| !mask.bits()[i] || d.samples[i] == orig[i]),
                        "{bits}-bit: {who}: ROI not exact"
                    );
                }
                println!(
                    "{bits}-bit noise: ROI applied, shift {shift}, ratio {:.2}",
                    enc.achieved_ratio
                );
            }
            None => {
                assert!(
                    enc.lossless && enc.note.as_deref().is_some_and(|n| n.contains("lossless")),
                    "{bits}-bit: {:?}",
                    enc.note
                );
                for (who, d) in &decoded {
                    assert_eq!(d.samples, orig, "{bits}-bit fallback: {who}");
                }
                println!("{bits}-bit noise: fallback ({})", enc.note.unwrap());
            }
        }
    }
}

// ---------- resolution-major codestreams ----------

/// Every resolution's prefix, cut by `prefix::resolution_prefix` from only the bytes up to
/// `resolution_ends[r]`, decodes (OpenJPEG's CLI and the openjp2 crate, both asked to discard
/// the levels above `r`) to exactly what the whole codestream decodes to at that size.
fn check_resolution_prefixes(dir: &Path, name: &str, img: &Image<'_>, params: &EncodeParams<'_>) {
    let enc = encode(img, params).unwrap_or_else(|e| panic!("{name}: {e}"));
    let whole = write_j2c(dir, name, &enc);
    let levels = enc.levels as u32;
    assert_eq!(enc.resolution_ends.len(), levels as usize + 1, "{name}");
    let comps = img.components as u32;
    for (r, &end) in enc.resolution_ends.iter().enumerate() {
        let reduce = levels - r as u32;
        let cut = resolution_prefix(&enc.codestream[..end], r + 1)
            .unwrap_or_else(|e| panic!("{name}: resolution {r}: {e}"));
        let part = dir.join(format!("{name}-r{r}.j2c"));
        std::fs::write(&part, &cut).unwrap();
        let (w, h, bits, signed) = (img.width, img.height, img.bits_stored, img.signed);
        let want = decode_openjp2_crate_reduced(&whole, reduce);
        assert_eq!(
            (want.w, want.h),
            (w.div_ceil(1 << reduce), h.div_ceil(1 << reduce)),
            "{name}: size at reduce {reduce}"
        );
        let from_cli = decode_opj_cli_reduced(&part, reduce, w, h, comps, bits, signed);
        let from_crate = decode_openjp2_crate_reduced(&part, reduce);
        assert!(
            from_cli == want,
            "{name}: opj_decompress -r {reduce} of the prefix differs"
        );
        assert!(
            from_crate == want,
            "{name}: openjp2 reduce {reduce} of the prefix differs"
        );
        println!(
            "{name}: resolution {r} ({}x{}): {end} of {} bytes ({:.1} %)",
            want.w,
            want.h,
            enc.codestream.len(),
            100.0 * end as f64 / enc.codestream.len() as f64
        );
    }
}

#[test]
fn resolution_prefixes_decode_like_the_whole_codestream_reduced() {
    let dir = tempfile::tempdir().unwrap();
    let px = ct_phantom(512, 512);
    let ct = gray(512, 512, 12, &px);
    check_resolution_prefixes(dir.path(), "ct", &ct, &EncodeParams::default());
    let rgb_px = rgb_image(301, 199);
    let colour = rgb(301, 199, &rgb_px);
    check_resolution_prefixes(dir.path(), "rgb", &colour, &EncodeParams::default());
    // Several quality layers, lossy: the layers of a resolution stay together.
    check_resolution_prefixes(
        dir.path(),
        "ct-lossy-layers",
        &ct,
        &EncodeParams {
            mode: Mode::Lossy { ratio: 12.0 },
            layers: 4,
            ..EncodeParams::default()
        },
    );
    let mask = {
        let mut m = Mask::new(512, 512);
        m.add_rect(100, 120, 200, 150);
        m
    };
    check_resolution_prefixes(
        dir.path(),
        "ct-roi",
        &ct,
        &EncodeParams {
            mode: Mode::Roi {
                mask: &mask,
                background_ratio: 20.0,
            },
            ..EncodeParams::default()
        },
    );
    // A 128-pixel thumbnail of a 512x512 CT (two levels discarded) needs the bytes up to
    // resolution levels - 2: at most an eighth of the codestream (#19's target).
    let enc = encode(&ct, &EncodeParams::default()).unwrap();
    let thumb = enc.resolution_ends[enc.levels as usize - 2];
    assert!(
        thumb * 8 <= enc.codestream.len(),
        "128-pixel thumbnail needs {thumb} of {} bytes",
        enc.codestream.len()
    );
}

/// The cut is not tied to our encoder: OpenJPEG's own resolution-major codestream with PLT
/// (`opj_compress -p RPCL -PLT -TLM`) cuts the same way.
#[test]
fn openjpeg_rpcl_codestreams_with_plt_cut_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (200u32, 150u32);
    let px = ct_phantom(w, h);
    let pgm = dir.path().join("ct.pgm");
    let mut bytes = format!("P5\n{w} {h}\n4095\n").into_bytes();
    for v in &px {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    std::fs::write(&pgm, bytes).unwrap();
    let whole = dir.path().join("ct.j2k");
    let res = Command::new("/usr/bin/opj_compress")
        .arg("-i")
        .arg(&pgm)
        .arg("-o")
        .arg(&whole)
        .args(["-p", "RPCL", "-PLT", "-TLM", "-n", "5"])
        .output()
        .expect("run /usr/bin/opj_compress (apt-get install libopenjp2-tools)");
    assert!(
        res.status.success(),
        "opj_compress: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let codestream = std::fs::read(&whole).unwrap();
    for r in 0..5usize {
        let reduce = 4 - r as u32;
        let cut = resolution_prefix(&codestream, r + 1)
            .unwrap_or_else(|e| panic!("resolution {r} of OpenJPEG's codestream: {e}"));
        assert!(cut.len() < codestream.len(), "the cut drops TLM at least");
        let part = dir.path().join(format!("ct-r{r}.j2k"));
        std::fs::write(&part, &cut).unwrap();
        let want = decode_openjp2_crate_reduced(&whole, reduce);
        assert_eq!(
            (want.w, want.h),
            (w.div_ceil(1 << reduce), h.div_ceil(1 << reduce))
        );
        assert!(
            decode_openjp2_crate_reduced(&part, reduce) == want,
            "openjp2 reduce {reduce} of OpenJPEG's cut differs"
        );
        assert!(
            decode_opj_cli_reduced(&part, reduce, w, h, 1, 12, false) == want,
            "opj_decompress -r {reduce} of OpenJPEG's cut differs"
        );
        println!(
            "OpenJPEG resolution {r}: {} of {} bytes",
            cut.len(),
            codestream.len()
        );
    }
}
