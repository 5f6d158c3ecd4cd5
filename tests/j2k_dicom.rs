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
