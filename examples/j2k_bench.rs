//! JPEG 2000 encoder benchmark: encodes generated (or raw) images N times and prints one
//! `key=value` line per image and mode: ms per image, MB/s of raw input, codestream size,
//! achieved ratio, PSNR from decoding the result with the openjp2 crate (for ROI: whether
//! ROI pixels are exact and the background PSNR). tools/bench.sh runs it beside
//! `opj_compress`; `--write-pgm DIR` writes the generated images for that.
//!
//!   j2k_bench [--image ct|mr|rgb] [--raw FILE,W,H,BITS] [--mode lossless|lossy:R|psnr:DB|roi:R]
//!             [--runs N] [--threads N] [--layers N] [--write-pgm DIR] [--out FILE.j2c]

#[path = "../tests/common/j2k_images.rs"]
mod images;

use std::time::Instant;

use strata::codec::j2k::{encode, EncodeParams, Image, Mask, Mode, Samples};

struct Args {
    image: String,
    raw: Option<(String, u32, u32, u8)>,
    mode: String,
    runs: usize,
    threads: usize,
    layers: u8,
    write_pgm: Option<String>,
    out: Option<String>,
}

fn parse() -> Args {
    let mut a = Args {
        image: "ct".into(),
        raw: None,
        mode: "lossless".into(),
        runs: 10,
        threads: 0,
        layers: 1,
        write_pgm: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--image" => a.image = v(),
            "--mode" => a.mode = v(),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--threads" => a.threads = v().parse().expect("--threads N"),
            "--layers" => a.layers = v().parse().expect("--layers N"),
            "--write-pgm" => a.write_pgm = Some(v()),
            "--out" => a.out = Some(v()),
            "--raw" => {
                let s = v();
                let p: Vec<&str> = s.split(',').collect();
                assert_eq!(p.len(), 4, "--raw FILE,W,H,BITS");
                a.raw = Some((
                    p[0].into(),
                    p[1].parse().unwrap(),
                    p[2].parse().unwrap(),
                    p[3].parse().unwrap(),
                ));
            }
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn write_pgm(path: &str, w: u32, h: u32, bits: u8, px: &[u16]) {
    let mut data = format!("P5\n{w} {h}\n{}\n", (1u32 << bits) - 1).into_bytes();
    for &v in px {
        if bits <= 8 {
            data.push(v as u8);
        } else {
            data.extend_from_slice(&v.to_be_bytes());
        }
    }
    std::fs::write(path, data).expect("write pgm");
}

/// Decodes with the openjp2 crate (OpenJPEG port) through a temporary file.
fn decode(codestream: &[u8]) -> Vec<i32> {
    use openjp2::openjpeg::{opj_dparameters_t, OPJ_CODEC_J2K};
    use openjp2::{Codec, Stream};
    let path = std::env::temp_dir().join(format!("j2k_bench_{}.j2c", std::process::id()));
    std::fs::write(&path, codestream).expect("write temp codestream");
    let mut stream = Stream::new_file(&path, 1 << 16, true).expect("open");
    let mut codec = Codec::new_decoder(OPJ_CODEC_J2K).expect("decoder");
    let mut params = opj_dparameters_t::default();
    codec.setup_decoder(&mut params);
    let mut image = codec.read_header(&mut stream).expect("header");
    assert!(codec.decode(&mut stream, &mut image) != 0, "decode failed");
    codec.end_decompress(&mut stream);
    let _ = std::fs::remove_file(&path);
    let comps = image.comps().expect("components");
    let nc = comps.len();
    let n = comps[0].data().expect("data").len();
    let mut out = vec![0; n * nc];
    for (c, comp) in comps.iter().enumerate() {
        for (i, &v) in comp.data().expect("data").iter().enumerate() {
            out[i * nc + c] = v;
        }
    }
    out
}

fn psnr(a: &[i32], b: &[i32], bits: u8, sel: impl Fn(usize) -> bool) -> f64 {
    let (mut se, mut n) = (0f64, 0usize);
    for i in (0..a.len()).filter(|&i| sel(i)) {
        se += ((a[i] - b[i]) as f64).powi(2);
        n += 1;
    }
    let peak = ((1u64 << bits) - 1) as f64;
    if se == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (peak * peak * n as f64 / se).log10()
    }
}

fn main() {
    let args = parse();
    let (gw, gh) = match args.image.as_str() {
        "mr" => (256, 256),
        _ => (512, 512),
    };
    if let Some(dir) = &args.write_pgm {
        write_pgm(
            &format!("{dir}/ct.pgm"),
            512,
            512,
            12,
            &images::ct_phantom(512, 512),
        );
        write_pgm(
            &format!("{dir}/mr.pgm"),
            256,
            256,
            16,
            &images::mr_like(256, 256),
        );
        return;
    }
    let (u16px, u8px, bits, comps);
    let (mut w, mut h) = (gw, gh);
    let samples = if let Some((file, rw, rh, rbits)) = &args.raw {
        let raw = std::fs::read(file).expect("read raw image");
        u16px = raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect::<Vec<_>>();
        (w, h, bits, comps) = (*rw, *rh, *rbits, 1u16);
        assert_eq!(u16px.len(), (w * h) as usize, "raw file size");
        Samples::U16(&u16px)
    } else {
        match args.image.as_str() {
            "ct" => {
                u16px = images::ct_phantom(w, h);
                (bits, comps) = (12, 1);
                Samples::U16(&u16px)
            }
            "mr" => {
                u16px = images::mr_like(w, h);
                (bits, comps) = (16, 1);
                Samples::U16(&u16px)
            }
            "rgb" => {
                u8px = images::rgb_image(w, h);
                (bits, comps) = (8, 3);
                Samples::U8(&u8px)
            }
            other => panic!("unknown image {other}"),
        }
    };
    let img = Image {
        width: w,
        height: h,
        components: comps,
        bits_stored: bits,
        signed: false,
        samples,
    };
    let mut mask = Mask::new(w, h);
    // The CT phantom's lesion (see ct_phantom), with a margin.
    mask.add_ellipse(
        w as f64 * 0.62,
        h as f64 * 0.45,
        w as f64 * 0.06,
        h as f64 * 0.06,
    );
    let mode = match args.mode.split_once(':') {
        None if args.mode == "lossless" => Mode::Lossless,
        Some(("lossy", r)) => Mode::Lossy {
            ratio: r.parse().expect("lossy:RATIO"),
        },
        Some(("psnr", r)) => Mode::Quality {
            psnr: r.parse().expect("psnr:DB"),
        },
        Some(("roi", r)) => Mode::Roi {
            mask: &mask,
            background_ratio: r.parse().expect("roi:RATIO"),
        },
        _ => panic!("--mode lossless|lossy:R|psnr:DB|roi:R"),
    };
    let params = EncodeParams {
        mode,
        threads: args.threads,
        layers: args.layers,
        ..Default::default()
    };
    let first = encode(&img, &params).expect("encode");
    if let Some(out) = &args.out {
        std::fs::write(out, &first.codestream).expect("write --out codestream");
    }
    let start = Instant::now();
    for _ in 0..args.runs {
        std::hint::black_box(encode(&img, &params).expect("encode"));
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / args.runs.max(1) as f64;
    let raw_mb = img.raw_bytes() as f64 / 1e6;
    let orig: Vec<i32> = (0..img.samples.len()).map(|i| img.samples.get(i)).collect();
    let dec = decode(&first.codestream);
    let nc = comps as usize;
    let mut line = format!(
        "j2k image={} mode={} threads={} ms={ms:.2} mbs={:.1} bytes={} ratio={:.3} psnr={:.2}",
        args.image,
        args.mode,
        args.threads,
        raw_mb / (ms / 1000.0),
        first.codestream.len(),
        first.achieved_ratio,
        psnr(&orig, &dec, bits, |_| true)
    );
    if let Mode::Roi { mask, .. } = mode {
        let exact = (0..orig.len()).all(|i| !mask.bits()[i / nc] || orig[i] == dec[i]);
        line += &format!(
            " roi_exact={exact} roi_px={} bg_psnr={:.2} shift={:?}",
            mask.count(),
            psnr(&orig, &dec, bits, |i| !mask.bits()[i / nc]),
            first.roi_shift
        );
    }
    if let Some(note) = &first.note {
        line += &format!(" note=\"{note}\"");
    }
    println!("{line}");
}
