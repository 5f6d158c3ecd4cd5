//! The OHIF viewer in headless Chromium against the real server (tools/ohif_check.py): OHIF's
//! prebuilt site is served from another origin (so CORS is exercised), logs in with HTTP
//! Basic, lists the stored studies (with thumbnails from `/thumbnail`) and draws a CT image
//! from the frames it fetched over DICOMweb.
//! Screenshots are kept in target/test-artefacts/ohif.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

/// OHIF's `dist/`, fetched by tools/test.sh (`install_ohif` in tools/setup-deps.sh).
fn ohif_dist() -> std::path::PathBuf {
    let dist = std::env::var_os("STRATA_OHIF_DIST")
        .map(Into::into)
        .unwrap_or_else(|| repo().join(".cache/ohif/3.13.2/dist"));
    assert!(
        dist.join("index.html").exists(),
        "{} missing: run tools/test.sh, which fetches OHIF",
        dist.display()
    );
    dist
}

#[test]
fn ohif_lists_the_stored_studies_and_draws_a_ct_image() {
    let corpus = Corpus::small(1, 12, 1, 3, 31);
    let ct = corpus
        .files
        .iter()
        .find(|f| f.modality == "CT")
        .unwrap()
        .study_instance_uid
        .clone();
    let mut families: Vec<String> = corpus
        .files
        .iter()
        .map(|f| f.patient_name.split('^').next().unwrap().to_string())
        .collect();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), 2);
    let shots = repo().join("target/test-artefacts/ohif");
    let _ = std::fs::remove_dir_all(&shots);

    // The viewer's site first: its origin goes into the server's cors_origins.
    let mut check = Command::new(python());
    check
        .arg(repo().join("tools/ohif_check.py"))
        .arg("--dist")
        .arg(ohif_dist())
        .arg("--shots")
        .arg(&shots)
        .args(["--study", &ct, "--user", "viewer:viewer pass"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for family in &families {
        check.args(["--patient", family]);
    }
    let mut child = check.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let origin = line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("no origin from ohif_check.py: {line:?}"))
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let hash = password_hash("viewer pass");
    let web = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\ncors_origins = [\"{origin}\"]\n\
         [[web.users]]\nname = \"viewer\"\npassword_hash = \"{hash}\"\nallow = [\"find\", \"get\"]\n"
    );
    let server = TestServer::start_in(dir.path(), "", &web);
    server.store(&corpus);

    let root = format!("http://127.0.0.1:{}/dicom-web", server.web_port.unwrap());
    writeln!(child.stdin.take().unwrap(), "{root}").unwrap();
    let mut report = String::new();
    stdout.read_line(&mut report).unwrap();
    let status = child.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(report.trim())
        .unwrap_or_else(|e| panic!("ohif_check.py said {report:?}: {e}"));
    assert!(status.success(), "OHIF check failed: {report}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["seen"]["study_list"],
        serde_json::json!(families),
        "{report}"
    );
    let canvas = &report["seen"]["canvas"];
    assert!(canvas["distinct"].as_u64().unwrap() >= 16, "{report}");
    let kinds = report["request_kinds"].to_string();
    for kind in ["studies", "series", "metadata", "frames", "thumbnail"] {
        assert!(
            kinds.contains(kind),
            "OHIF made no {kind} request: {report}"
        );
    }
    assert!(shots.join("viewer.png").exists());
    assert!(shots.join("study-list.png").exists());
}
