//! JPEG 2000 ROI near-line copies (`[backup] format = "j2k-roi"`): images are backed up
//! compressed and marked lossy, an instance whose primary is damaged keeps a lossless
//! near-line copy (a lossy copy never replaces the last lossless one), C-MOVE returns
//! bit-identical originals wherever a lossless copy survives, and when only the lossy copy is
//! left it is sent marked lossy, counted as a warning and named in the log, and `verify`
//! reports it without pretending `--repair` can mend it. Its thumbnail then reads only the
//! first resolutions of the lossy copy (whose levels are recorded like the archive's), and is
//! not kept in the rendition cache as the instance's.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// SOP Instance UID -> its `locate --json` entry.
fn locate(server: &TestServer, study: &str) -> HashMap<String, Value> {
    let (ok, located) = cli_json(server, &["locate", "--json", "--study", study]);
    assert!(ok, "{located}");
    located
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["sop_instance_uid"].as_str().unwrap().to_string(),
                i.clone(),
            )
        })
        .collect()
}

const BACKUP: &str = "[backup]\nenqueue_on_receive = true\npoll_secs = 1\n";

/// Adds to the `[backup]` section of the server's config (the CLI reads it at each run).
fn add_to_backup(server: &TestServer, more: &str) {
    let config = std::fs::read_to_string(&server.config).unwrap();
    assert!(config.contains(BACKUP));
    let config = config.replace(BACKUP, &format!("{BACKUP}{more}"));
    std::fs::write(&server.config, config).unwrap();
}

/// C-FIND (pynetdicom) at `level` with `keys`: the matches.
fn find(server: &TestServer, level: &str, keys: &[&str]) -> Vec<Value> {
    let mut args = vec!["--level", level];
    for k in keys {
        args.extend(["-k", k]);
    }
    let out = text(&server.scu("find", "VIEWER", &args));
    assert!(out.contains("FINAL 0x0000"), "{out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("MATCH "))
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

fn compare_pixels(original: &Path, other: &Path, ts: &str) -> Value {
    let out = Command::new(python())
        .arg(repo().join("tools/compare_pixels.py"))
        .arg(original)
        .arg(other)
        .args(["--ts", ts])
        // An empty ROI: the PSNR is over the whole image.
        .args(["--roi", "0,0,0,0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "compare_pixels: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn roi_copies_are_lossy_marked_extra_copies_and_served_only_when_nothing_lossless_survives() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "4",
        "--mr-studies",
        "0",
        "--seed",
        "47",
    ]);
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    let dest_port = dest.port;
    let (token, sha256) = new_token();
    let bearer = format!("Bearer {token}");
    let server = TestServer::start(&format!(
        "[[dicom.peers]]\naet = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n\
         {BACKUP}[renditions]\ncache_mb = 8\ndir = \"renditions\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n\
         [[web.users]]\nname = \"admin\"\ntoken_sha256 = [\"{sha256}\"]\nallow = [\"admin\"]\n"
    ));
    let study = corpus.study_uids()[0].clone();
    let paths: Vec<PathBuf> = corpus.study_paths(&study);
    assert!(server.storescu("MODALITY", &paths).status.success());
    let originals = originals(&corpus, &study);
    let file_of = |uid: &str| -> PathBuf {
        corpus
            .files
            .iter()
            .find(|f| f.sop_instance_uid == uid)
            .map(|f| corpus.path(f))
            .unwrap()
    };

    // A first near-line copy, as stored.
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{summary}");
    let located = locate(&server, &study);
    assert!(located
        .values()
        .all(|i| i["copies"][0]["format"] == "original"));
    let mut uids: Vec<String> = located.keys().cloned().collect();
    uids.sort();
    let (x, y) = (uids[0].clone(), uids[1].clone());

    // x's primary is lost; the study is backed up again, as JPEG 2000 ROI. x can only be read from its near-line original: that copy must stay
    // lossless.
    std::fs::remove_file(
        server
            .online_dir()
            .join(located[&x]["location"].as_str().unwrap()),
    )
    .unwrap();
    add_to_backup(&server, "format = \"j2k-roi\"\nroi_ratio = 10\n");
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json", "--study", &study]);
    assert!(ok, "{summary}");
    assert_eq!(summary["backed_up"], 1, "{summary}");
    let located = locate(&server, &study);
    for (uid, i) in &located {
        let copies = i["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 1, "one near-line copy each: {i}");
        let copy = &copies[0];
        if *uid == x {
            assert_eq!(copy["format"], "original", "x's only lossless copy: {i}");
        } else {
            assert_eq!(copy["format"], "j2k-roi", "{i}");
            assert!(
                copy["length"].as_u64().unwrap() * 3 < i["length"].as_u64().unwrap(),
                "a ROI copy is much smaller than the primary: {i}"
            );
        }
    }

    // The server re-creates x's primary (queued by the backup's fallback read); every
    // instance comes back bit-identical, and every copy verifies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.status()["queues"]["repairs"] != 0 {
        assert!(
            Instant::now() < deadline,
            "x not repaired: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (last, got) = server.move_study("DEST", dest_dir.path(), &study);
    assert!(last.starts_with("FINAL 0x0000"), "{last}");
    assert_same_data_sets(&got, &originals, "after x's repair");
    let (ok, report) = cli_json(&server, &["verify", "--json"]);
    assert!(ok, "{report}");
    assert_eq!(report["copies"]["nearline"]["ok"], uids.len(), "{report}");

    // y's primary is lost too, and y's only other copy is lossy: C-MOVE sends it, marked
    // lossy, as a warning; the others still come back bit-identical.
    let located = locate(&server, &study);
    std::fs::remove_file(
        server
            .online_dir()
            .join(located[&y]["location"].as_str().unwrap()),
    )
    .unwrap();
    let (last, got) = server.move_study("DEST", dest_dir.path(), &study);
    assert!(
        last.starts_with("FINAL 0xB000") && last.contains("failed=0 warning=1"),
        "{last}"
    );
    assert_eq!(got.len(), uids.len());
    for uid in uids.iter().filter(|u| **u != y) {
        assert!(got[uid] == originals[uid], "{uid} differs");
    }
    let log = server.log_when(|l| l.contains("every lossless copy is lost") && l.contains(&y));
    assert!(
        log.contains("every lossless copy is lost") && log.contains(&y),
        "the log says a lossy copy was served: {log}"
    );

    // y's thumbnail (y is known lost: queued for repair) reads only the first resolutions
    // of its lossy copy, each time: a view of a lossy copy is not cached as y's.
    let web = server.web_port.unwrap();
    let series = &corpus
        .files
        .iter()
        .find(|f| f.sop_instance_uid == y)
        .unwrap()
        .series_instance_uid;
    let thumbnail = format!("/dicom-web/studies/{study}/series/{series}/instances/{y}/thumbnail");
    let copy_length = locate(&server, &study)[&y]["copies"][0]["length"]
        .as_f64()
        .unwrap();
    for _ in 0..2 {
        let before = read_bytes(web, &bearer, "nearline");
        let (status, head, body) = http_get(web, &thumbnail, &[("Accept", "image/jpeg")]);
        assert_eq!(status, 200, "{head}");
        assert!(body.starts_with(&[0xFF, 0xD8]), "a JPEG");
        let read = read_bytes(web, &bearer, "nearline") - before;
        eprintln!("thumbnail of y: {read} of the lossy copy's {copy_length} bytes read");
        assert!(
            read > 0.0 && read * 4.0 < copy_length,
            "{read} of the lossy copy's {copy_length} bytes read"
        );
    }
    assert!(server
        .log()
        .contains("reduced view drawn from the lossy copy"));
    // Its full-size rendering reads the lossy copy whole, each time (not cached either).
    let rendered = format!("/dicom-web/studies/{study}/series/{series}/instances/{y}/rendered");
    for _ in 0..2 {
        let before = read_bytes(web, &bearer, "nearline");
        let (status, head, _) = http_get(web, &rendered, &[("Accept", "image/png")]);
        assert_eq!(status, 200, "{head}");
        let read = read_bytes(web, &bearer, "nearline") - before;
        assert!(read >= copy_length, "{read} of {copy_length} bytes read");
    }
    let received_y = files_below(dest_dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&y))
        .unwrap();
    let pixels = compare_pixels(&file_of(&y), &received_y, EXPLICIT);
    assert_eq!(pixels["lossy"], "01", "marked lossy: {pixels}");
    assert_eq!(pixels["identical"], false, "{pixels}");
    let psnr = pixels["background_psnr"].as_f64().unwrap();
    assert!(psnr > 35.0, "a useful image: {pixels}");

    // C-FIND's Instance Availability follows the best copy: y's is near-line now.
    let study_key = format!("StudyInstanceUID={study}");
    let matches = find(&server, "STUDY", &[&study_key, "InstanceAvailability="]);
    assert_eq!(
        matches[0]["InstanceAvailability"], "NEARLINE",
        "{matches:?}"
    );
    let series = find(&server, "SERIES", &[&study_key, "SeriesInstanceUID="]);
    let series_key = format!(
        "SeriesInstanceUID={}",
        series[0]["SeriesInstanceUID"].as_str().unwrap()
    );
    let matches = find(
        &server,
        "IMAGE",
        &[
            &study_key,
            &series_key,
            "SOPInstanceUID=",
            "InstanceAvailability=",
        ],
    );
    assert_eq!(matches.len(), uids.len());
    for m in &matches {
        let expected = if m["SOPInstanceUID"] == y.as_str() {
            "NEARLINE"
        } else {
            "ONLINE"
        };
        assert_eq!(m["InstanceAvailability"], expected, "{m}");
    }

    // verify names the case; --repair does not turn the lossy copy into the primary.
    let (ok, report) = cli_json(&server, &["verify", "--json"]);
    assert!(!ok, "{report}");
    assert_eq!(report["lossy_only"], 1, "{report}");
    assert_eq!(report["unrecoverable"], 0, "{report}");
    assert!(
        report["problems"].as_array().unwrap().iter().any(|p| p
            .as_str()
            .unwrap()
            .contains("only a lossy j2k-roi copy survives")),
        "{report}"
    );
    let (ok, report) = cli_json(&server, &["verify", "--repair", "--json"]);
    assert!(!ok, "{report}");
    assert_eq!(report["repaired_primaries"], 0, "{report}");
    assert_eq!(report["remaining"], 1, "{report}");
    let y_now = &locate(&server, &study)[&y];
    assert!(
        !server
            .online_dir()
            .join(y_now["location"].as_str().unwrap())
            .exists(),
        "no primary re-created from a lossy copy"
    );
    assert_eq!(y_now["copies"][0]["format"], "j2k-roi");
}
