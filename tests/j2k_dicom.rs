//! JPEG 2000 applied to DICOM instances, judged by independent decoders: `strata transcode`
//! output decoded by OpenJPEG (pylibjpeg-openjpeg, through tools/compare_pixels.py), J2K
//! instances decoded for uncompressed-only C-MOVE destinations, and the archive converter's
//! `compression = "j2k-lossless"`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const J2K: &str = "1.2.840.10008.1.2.4.91";
const IMPLICIT: &str = "1.2.840.10008.1.2";

/// tools/compare_pixels.py: pixels of `other` (a Part-10 file, or a bare data set in `ts`)
/// against `original`, decoded independently.
fn compare(original: &Path, other: &Path, ts: Option<&str>, roi: Option<&str>) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tools/compare_pixels.py"))
        .arg(original)
        .arg(other);
    if let Some(ts) = ts {
        cmd.args(["--ts", ts]);
    }
    if let Some(roi) = roi {
        cmd.args(["--roi", roi]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "compare_pixels: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap()
}

fn corpus() -> Corpus {
    Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
        "--seed",
        "31",
    ])
}

#[test]
fn transcode_writes_lossless_files_and_marked_roi_files_that_openjpeg_decodes() {
    let corpus = corpus();
    let out = tempfile::tempdir().unwrap();
    for (i, file) in corpus.files.iter().enumerate() {
        let original = corpus.path(file);
        let lossless = out.path().join(format!("{i}-lossless.dcm"));
        let run = strata(&[
            "transcode",
            "--to",
            "j2k-lossless",
            "--json",
            original.to_str().unwrap(),
            lossless.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run));
        let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(summary["lossless"], true);
        assert!(summary["ratio"].as_f64().unwrap() > 1.0, "{summary}");
        let got = compare(&original, &lossless, None, None);
        assert_eq!(got["transfer_syntax"], J2K_LOSSLESS);
        assert_eq!(got["identical"], true, "{got}");
        assert_eq!(
            got["lossy"],
            Value::Null,
            "lossless output is not marked lossy"
        );
        assert_eq!(got["sop_instance_uid"], file.sop_instance_uid.as_str());

        // ROI: a rectangle kept exactly, the rest compressed and the file marked lossy.
        let roi = out.path().join(format!("{i}-roi.dcm"));
        let run = strata(&[
            "transcode",
            "--to",
            "j2k-roi",
            "--roi",
            "40,50,100,80",
            "--ratio",
            "8",
            "--json",
            original.to_str().unwrap(),
            roi.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run));
        let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
        let got = compare(&original, &roi, None, Some("40,50,100,80"));
        eprintln!(
            "{}: ROI ratio {:.2}:1, background PSNR {:.1} dB",
            file.path,
            summary["ratio"].as_f64().unwrap(),
            got["background_psnr"].as_f64().unwrap()
        );
        assert_eq!(got["transfer_syntax"], J2K);
        assert_eq!(got["roi_identical"], true, "{got}");
        assert_eq!(
            got["identical"], false,
            "the background was compressed: {got}"
        );
        assert_eq!(got["lossy"], "01");
        assert_eq!(got["method"], serde_json::json!(["ISO_15444_1"]));
        let ratio: f64 = got["ratio"][0].as_str().unwrap().parse().unwrap();
        assert!(
            (ratio - summary["ratio"].as_f64().unwrap()).abs() < 0.01,
            "{got}"
        );
        assert!(ratio > 2.0, "{got}");
        assert!(
            got["derivation"].as_str().unwrap().contains("MAXSHIFT"),
            "{got}"
        );
    }
    // Automatic ROI says how much of the image it chose.
    let original = corpus.path(&corpus.files[0]);
    let auto = out.path().join("auto.dcm");
    let run = strata(&[
        "transcode",
        "--to",
        "j2k-roi",
        "--roi",
        "auto",
        original.to_str().unwrap(),
        auto.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("automatic ROI chosen"), "{stderr}");
    assert!(text(&run).contains("% of the image"), "{}", text(&run));
    // Bad input: a clear error line, no output file.
    let bad = strata(&[
        "transcode",
        "--to",
        "j2k-lossless",
        repo().join("README.md").to_str().unwrap(),
        out.path().join("x.dcm").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("strata: error: cannot transcode"),
        "{}",
        text(&bad)
    );
    assert!(!out.path().join("x.dcm").exists());
}

#[test]
fn jpeg_2000_instances_are_stored_as_sent_and_decoded_for_uncompressed_only_destinations() {
    let corpus = corpus();
    let file = &corpus.files[0];
    let original = corpus.path(file);
    let work = tempfile::tempdir().unwrap();
    let j2k = work.path().join("j2k.dcm");
    let run = strata(&[
        "transcode",
        "--to",
        "j2k-lossless",
        original.to_str().unwrap(),
        j2k.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let implicit_dir = tempfile::tempdir().unwrap();
    let implicit = py_storescp("DEST", implicit_dir.path(), &["--implicit-only"]);
    let implicit_port = implicit.port;
    let all_dir = tempfile::tempdir().unwrap();
    let all = py_storescp("ALL", all_dir.path(), &["--compressed"]);
    let all_port = all.port;
    let server = TestServer::start(&format!(
        "[[dicom.peers]]\naet = \"DEST\"\nhost = \"127.0.0.1\"\nport = {implicit_port}\n\
         [[dicom.peers]]\naet = \"ALL\"\nhost = \"127.0.0.1\"\nport = {all_port}\n"
    ));
    let stored = dcmtk("storescu")
        .args(["-xv", "-aet", "MODALITY", "-aec", "STRATA", "127.0.0.1"])
        .arg(server.port.to_string())
        .arg(&j2k)
        .output()
        .unwrap();
    assert!(stored.status.success(), "{}", text(&stored));
    let key = format!("SOPInstanceUID={}", file.sop_instance_uid);
    let series = format!("SeriesInstanceUID={}", file.series_instance_uid);
    let study = format!("StudyInstanceUID={}", file.study_instance_uid);
    for (dest, dir, ts) in [
        ("DEST", &implicit_dir, IMPLICIT),
        ("ALL", &all_dir, J2K_LOSSLESS),
    ] {
        let out = text(&server.scu(
            "move",
            "VIEWER",
            &[
                "--dest", dest, "--level", "IMAGE", "-k", &study, "-k", &series, "-k", &key,
            ],
        ));
        assert!(out.contains("FINAL 0x0000"), "{out}");
        let received = dir.path().join(format!("{}.{ts}", file.sop_instance_uid));
        let got = compare(&original, &received, Some(ts), None);
        assert_eq!(got["identical"], true, "{dest}: {got}");
    }
    // The J2K destination got the stored bytes unchanged.
    let sent = std::fs::read(
        all_dir
            .path()
            .join(format!("{}.{J2K_LOSSLESS}", file.sop_instance_uid)),
    )
    .unwrap();
    assert!(sent == data_set_bytes(&j2k), "not bit-identical");
}

#[test]
fn the_converter_can_archive_images_as_checked_jpeg_2000_lossless() {
    let corpus = corpus();
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("ALL", dest_dir.path(), &["--compressed"]);
    let dest_port = dest.port;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"local\"\npath = \"archive\"\ncompression = \"j2k-lossless\"\n\
             [[dicom.peers]]\naet = \"ALL\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n"
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let online_bytes = server.status()["tiers"]["online"]["bytes"]
        .as_u64()
        .unwrap();
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = server.status();
    let archived = status["tiers"]["archive"]["bytes"].as_u64().unwrap();
    eprintln!("archive holds {archived} bytes for {online_bytes} bytes stored online");
    assert!(archived < online_bytes, "{status}");
    assert_eq!(status["tiers"]["online"]["instances"], 0, "{status}");

    for study in corpus.study_uids() {
        // Over C-GET in Explicit VR Little Endian: decoded again, every sample as stored.
        let got = server.get_study(&study);
        let files: Vec<&CorpusFile> = corpus
            .files
            .iter()
            .filter(|f| f.study_instance_uid == study)
            .collect();
        assert_eq!(got.len(), files.len());
        for f in &files {
            let path = dest_dir.path().join(format!("get-{}", f.sop_instance_uid));
            std::fs::write(&path, &got[&f.sop_instance_uid]).unwrap();
            let cmp = compare(&corpus.path(f), &path, Some("1.2.840.10008.1.2.1"), None);
            assert_eq!(cmp["identical"], true, "{cmp}");
        }
        // Over C-MOVE to a destination taking JPEG 2000: the archived J2K bytes.
        let key = format!("StudyInstanceUID={study}");
        let out = text(&server.scu("move", "VIEWER", &["--dest", "ALL", "-k", &key]));
        assert!(out.contains("FINAL 0x0000"), "{out}");
        for f in &files {
            let received: PathBuf = dest_dir
                .path()
                .join(format!("{}.{J2K_LOSSLESS}", f.sop_instance_uid));
            let cmp = compare(&corpus.path(f), &received, Some(J2K_LOSSLESS), None);
            assert_eq!(cmp["identical"], true, "{cmp}");
        }
    }
}

/// `opj_decompress -r reduce` of `j2c` to a PGM file's bytes.
fn opj_reduced(j2c: &Path, reduce: usize) -> Vec<u8> {
    let out = j2c.with_extension(format!("r{reduce}.pgm"));
    let done = Command::new("/usr/bin/opj_decompress")
        .arg("-i")
        .arg(j2c)
        .args(["-r", &reduce.to_string(), "-o"])
        .arg(&out)
        .output()
        .expect("run /usr/bin/opj_decompress (apt-get install libopenjp2-tools)");
    assert!(done.status.success(), "opj_decompress: {}", text(&done));
    std::fs::read(&out).unwrap()
}

#[test]
fn archived_codestreams_record_where_each_resolution_ends() {
    use strata::codec::j2k::prefix::resolution_prefix;
    let corpus = corpus();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[archive]\nbackend = \"local\"\npath = \"archive\"\ncompression = \"j2k-lossless\"\n",
    );
    let server = TestServer::start_in(dir.path(), "", "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let work = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for study in corpus.study_uids() {
        let (ok, located) = cli_json(&server, &["locate", "--json", "--study", &study]);
        assert!(ok, "{located}");
        for instance in located.as_array().unwrap() {
            assert_eq!(instance["tier"], "archive", "{instance}");
            let container = server
                .dir
                .join("archive")
                .join(instance["location"].as_str().unwrap());
            let bytes = std::fs::read(&container).unwrap();
            let at = instance["offset"].as_u64().unwrap() as usize;
            let length = instance["length"].as_u64().unwrap() as usize;
            let levels = instance["resolution_levels"].as_array().unwrap();
            assert_eq!(levels.len(), 1, "one frame, one codestream: {instance}");
            let frame = &levels[0];
            assert_eq!(frame["frame"], 1);
            let start = at + frame["codestream_offset"].as_u64().unwrap() as usize;
            let ends: Vec<usize> = frame["resolution_ends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_u64().unwrap() as usize)
                .collect();
            assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
            let whole_end = start + ends[ends.len() - 1];
            assert_eq!(&bytes[start..start + 2], [0xFF, 0x4F], "SOC where recorded");
            assert_eq!(
                &bytes[whole_end..whole_end + 2],
                [0xFF, 0xD9],
                "EOC after the last"
            );
            assert!(whole_end + 2 <= at + length, "inside the instance");
            let whole = work.path().join(format!("{checked}.j2c"));
            std::fs::write(&whole, &bytes[start..whole_end + 2]).unwrap();
            // Each level cut from the first bytes decodes to what the whole codestream
            // gives at that size.
            for (r, &end) in ends.iter().enumerate() {
                let cut = resolution_prefix(&bytes[start..start + end], r + 1)
                    .unwrap_or_else(|e| panic!("level {r} of {instance}: {e}"));
                let part = work.path().join(format!("{checked}-{r}.j2c"));
                std::fs::write(&part, cut).unwrap();
                let reduce = ends.len() - 1 - r;
                assert!(
                    opj_reduced(&part, reduce) == opj_reduced(&whole, reduce),
                    "level {r} of {instance}"
                );
            }
            // The 128-pixel level of a 512x512 CT: at most 1/8 of the instance's bytes.
            let file = corpus
                .files
                .iter()
                .find(|f| f.sop_instance_uid == instance["sop_instance_uid"])
                .unwrap();
            if file.modality == "CT" && ends.len() >= 3 {
                let thumbnail =
                    frame["codestream_offset"].as_u64().unwrap() as usize + ends[ends.len() - 3];
                assert!(thumbnail * 8 <= length, "{thumbnail} of {length} bytes");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, corpus.files.len());
}

/// A PNG's size and 8-bit samples.
fn png_pixels(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn thumbnails_of_archived_images_read_and_decode_only_their_lowest_resolutions() {
    let corpus = corpus();
    let dir = tempfile::tempdir().unwrap();
    let (token, sha256) = new_token();
    let bearer = format!("Bearer {token}");
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"local\"\npath = \"archive\"\ncompression = \"j2k-lossless\"\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\
             [[web.users]]\nname = \"viewer\"\ntoken_sha256 = [\"{sha256}\"]\n\
             allow = [\"find\", \"get\", \"admin\"]\n"
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    let port = server.web_port.unwrap();
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let png = [("Authorization", bearer.as_str()), ("Accept", "image/png")];
    let url = |f: &CorpusFile, what: &str| {
        format!(
            "/dicom-web/studies/{}/series/{}/instances/{}/{what}",
            f.study_instance_uid, f.series_instance_uid, f.sop_instance_uid
        )
    };
    // Online and uncompressed: drawn from the whole image.
    let get = |path: &str| {
        let (status, head, body) = http_get(port, path, &png);
        assert_eq!(status, 200, "{path}: {head}");
        body
    };
    let before: Vec<Vec<u8>> = corpus
        .files
        .iter()
        .map(|f| get(&url(f, "thumbnail")))
        .collect();
    let mut online_bytes = 0.0;
    for study in corpus.study_uids() {
        for i in server.locate(&study) {
            online_bytes += i["length"].as_f64().unwrap();
        }
    }
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut lengths = std::collections::HashMap::new();
    for study in corpus.study_uids() {
        let (ok, located) = cli_json(&server, &["locate", "--json", "--study", &study]);
        assert!(ok, "{located}");
        for i in located.as_array().unwrap() {
            assert!(
                !i["resolution_levels"].as_array().unwrap().is_empty(),
                "{i}"
            );
            let uid = i["sop_instance_uid"].as_str().unwrap().to_string();
            lengths.insert(uid, i["length"].as_f64().unwrap());
        }
    }
    for (f, before) in corpus.files.iter().zip(&before) {
        let length = lengths[&f.sop_instance_uid];
        let read = |path: &str| {
            let start = read_bytes(port, &bearer, "archive");
            let body = get(path);
            (body, read_bytes(port, &bearer, "archive") - start)
        };
        let (after, thumbnail_bytes) = read(&url(f, "thumbnail"));
        let (w, h, old) = png_pixels(before);
        let (w2, h2, new) = png_pixels(&after);
        assert_eq!((w, h), (w2, h2), "the same size from the lower resolutions");
        let diff = old
            .iter()
            .zip(&new)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() as f64)
            .sum::<f64>()
            / old.len() as f64;
        eprintln!(
            "{} {}: thumbnail {w}x{h} read {thumbnail_bytes} of {length} bytes; mean difference {diff:.2} of 255",
            f.modality, f.sop_instance_uid
        );
        // A lossless codestream's low-pass bands are the image averaged (about 5 of 255 from
        // our scaling of the whole image, for these phantoms); a wrong level or a broken
        // decode is far off.
        assert!(
            diff < 8.0,
            "thumbnail drawn from the lowest resolutions differs by {diff}"
        );
        if f.modality == "CT" {
            // 512x512: the 128-pixel level, at most 1/8 of the stored bytes.
            assert!(
                thumbnail_bytes > 0.0 && thumbnail_bytes * 8.0 <= length,
                "{thumbnail_bytes} of {length}"
            );
            let (_, viewport_bytes) = read(&url(f, "rendered?viewport=256,256"));
            assert!(
                viewport_bytes > thumbnail_bytes && viewport_bytes * 2.0 < length,
                "{viewport_bytes} of {length}"
            );
        }
        // The full size is read whole, checked against its checksum.
        let (_, whole) = read(&url(f, "rendered"));
        assert!(whole >= length, "{whole} of {length}");
    }
    // Every process adds what it read to the locator's counters: the tier run (which read
    // each online file whole) when it ended, the server every few seconds.
    let served = read_bytes(port, &bearer, "archive");
    let site = |tier: &str| server.status()["bytes_read"][tier].as_f64().unwrap();
    let started = std::time::Instant::now();
    while site("archive") < served && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(site("archive") >= served, "{} < {served}", site("archive"));
    assert!(
        site("online") >= online_bytes,
        "{} < {online_bytes}",
        site("online")
    );
    let in_metrics = || {
        let (_, _, body) = http_get(port, "/metrics", &[("Authorization", &bearer)]);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("strata_site_read_bytes_total{tier=\"archive\"} ")
                    .map(|v| v.parse::<f64>().unwrap())
            })
            .unwrap_or(0.0)
    };
    // The site's series are read from the locator at most every 10 s.
    while in_metrics() < served && started.elapsed() < std::time::Duration::from_secs(40) {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(in_metrics() >= served, "{} < {served}", in_metrics());
}
