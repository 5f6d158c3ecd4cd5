//! Corrections (issue #18, item 5): `strata update` changes a study's or a patient's
//! attributes in the index, moves a study to another patient and merges two patients; a
//! re-sent object with new values changes the index under `duplicate_policy = overwrite`.
//! C-FIND and QIDO-RS answer with the new values, C-GET (pynetdicom) and WADO-RS send the
//! instances with them (an archived study too), while the stored files stay byte for byte
//! as received. Every change is in the audit log with its old and new values.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::c_find as find;
use common::*;
use serde_json::Value;

/// The study-level answer for `study`: patient and study attributes.
fn study_row(server: &TestServer, study: &str) -> Value {
    let rows = find(
        server,
        "STUDY",
        &[
            format!("StudyInstanceUID={study}"),
            "PatientName=".into(),
            "PatientID=".into(),
            "StudyDescription=".into(),
            "PatientSex=".into(),
        ],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

fn studies_of_patient(server: &TestServer, patient_id: &str) -> Vec<String> {
    let mut uids: Vec<String> = find(
        server,
        "STUDY",
        &[
            format!("PatientID={patient_id}"),
            "StudyInstanceUID=".into(),
        ],
    )
    .iter()
    .map(|m| m["StudyInstanceUID"].as_str().unwrap().to_string())
    .collect();
    uids.sort();
    uids
}

fn update(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["update", "--json"];
    all.extend(args);
    let (ok, summary) = cli_json(server, &all);
    assert!(ok, "{summary} {}", server.log());
    summary
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// SHA-less fingerprint of every stored file: its bytes.
fn stored(server: &TestServer) -> HashMap<PathBuf, Vec<u8>> {
    ["online", "archive"]
        .iter()
        .flat_map(|d| files_below(&server.dir.join(d)))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Each received data set carries `values` and not `gone`, and ends with the same bytes
/// (its pixel data) as the original.
fn assert_sent_with(
    got: &HashMap<String, Vec<u8>>,
    originals: &HashMap<String, Vec<u8>>,
    values: &[&str],
    gone: &[&str],
) {
    assert_eq!(got.len(), originals.len());
    for (uid, bytes) in got {
        for v in values {
            assert!(contains(bytes, v), "{uid} lacks {v}");
        }
        for v in gone {
            assert!(!contains(bytes, v), "{uid} still has {v}");
        }
        let original = &originals[uid];
        let tail = 4096.min(original.len());
        assert!(
            bytes.ends_with(&original[original.len() - tail..]),
            "{uid}: the pixel data differs"
        );
    }
}

fn modified_copy(from: &Path, to: &Path, settings: &[&str]) {
    std::fs::copy(from, to).unwrap();
    let mut modify = dcmtk("dcmodify");
    modify.arg("-nb");
    for s in settings {
        modify.args(["-m", s]);
    }
    let out = modify.arg(to).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn corrections_change_the_index_and_what_retrieves_send_never_the_stored_files() {
    // Two CT studies of different patients, 3 images each; study A archived.
    let corpus = Corpus::small(2, 3, 0, 0, 91);
    let dir = tempfile::tempdir().unwrap();
    let web = "[web]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n";
    let config = write_config(dir.path(), web);
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace(
        "[storage]\n",
        "[storage]\nduplicate_policy = \"overwrite\"\n",
    );
    std::fs::write(&config, toml).unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    server.store(&corpus);
    let studies = corpus.study_uids();
    let (a, b) = (studies[0].clone(), studies[1].clone());
    let first_of = |study: &str| {
        corpus
            .files
            .iter()
            .find(|f| f.study_instance_uid == study)
            .unwrap()
            .clone()
    };
    let (pa, pb) = (first_of(&a), first_of(&b));
    assert_ne!(pa.patient_id, pb.patient_id);
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = stored(&server);
    assert!(before
        .keys()
        .any(|p| p.extension().is_some_and(|e| e == "sdcm")));

    // Refused with a reason, nothing changed.
    let bad = server.cli(&["update", "--study", &a, "--set", "StudyInstanceUID=1.2.3"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("cannot be corrected"), "{}", text(&bad));
    let bad = server.cli(&["update", "--study", "1.2.3.4", "--set", "PatientSex=M"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("no study 1.2.3.4"), "{}", text(&bad));
    let bad = server.cli(&["update", "--patient", &pa.patient_id, "--set", "StudyID=7"]);
    assert!(
        text(&bad).contains("is a study attribute"),
        "{}",
        text(&bad)
    );

    // Study A goes to a new patient, renamed, with a new description.
    let updated = update(
        &server,
        &[
            "--study",
            &a,
            "--set",
            "PatientID=NEW-77",
            "--set",
            "PatientName=Roe^Richard",
            "--set",
            "StudyDescription=Corrected head CT",
        ],
    );
    assert_eq!(updated["studies"], serde_json::json!([a]), "{updated}");
    assert_eq!(updated["patient_id"], "NEW-77", "{updated}");
    let changed: Vec<&str> = updated["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attribute"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["StudyDescription", "PatientName", "PatientID"]);
    let row = study_row(&server, &a);
    assert_eq!(
        (
            &row["PatientID"],
            &row["PatientName"],
            &row["StudyDescription"]
        ),
        (
            &Value::from("NEW-77"),
            &Value::from("Roe^Richard"),
            &Value::from("Corrected head CT")
        ),
        "{row}"
    );
    assert_eq!(
        studies_of_patient(&server, &pa.patient_id),
        Vec::<String>::new()
    );
    // Study B is untouched and still sent as stored.
    assert_eq!(study_row(&server, &b)["PatientID"], pb.patient_id.as_str());
    assert_same_data_sets(&server.get_study(&b), &originals(&corpus, &b), "study B");

    // C-GET of the archived study: the new values, the same pixel data.
    let old_name = pa.patient_name.clone();
    let a_originals = originals(&corpus, &a);
    assert_sent_with(
        &server.get_study(&a),
        &a_originals,
        &["Roe^Richard", "NEW-77", "Corrected head CT"],
        &[&old_name, &pa.patient_id],
    );
    // QIDO-RS and WADO-RS (metadata and instances) too.
    let port = server.web_port.unwrap();
    let (status, _, body) = http_get(port, "/dicom-web/studies?PatientID=NEW-77", &[]);
    assert_eq!(status, 200);
    let listed: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["0020000D"]["Value"][0], a.as_str());
    let (status, _, body) = http_get(port, &format!("/dicom-web/studies/{a}/metadata"), &[]);
    assert_eq!(status, 200);
    let metadata: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(metadata.len(), 3);
    for m in &metadata {
        assert_eq!(
            m["00100010"]["Value"][0]["Alphabetic"], "Roe^Richard",
            "{m}"
        );
        assert_eq!(m["00100020"]["Value"][0], "NEW-77", "{m}");
        assert_eq!(m["00081030"]["Value"][0], "Corrected head CT", "{m}");
    }
    let accept = [("Accept", "multipart/related; type=\"application/dicom\"")];
    let (status, _, body) = http_get(port, &format!("/dicom-web/studies/{a}"), &accept);
    assert_eq!(status, 200);
    assert_eq!(body.windows(4).filter(|w| w == b"DICM").count(), 3);
    assert!(contains(&body, "Roe^Richard") && !contains(&body, &old_name));

    // Merge: patient B's studies go to NEW-77, who keeps the corrected name.
    let merged = update(
        &server,
        &["--patient", &pb.patient_id, "--set", "PatientID=NEW-77"],
    );
    assert_eq!(merged["merged"], pb.patient_id.as_str(), "{merged}");
    assert_eq!(merged["studies"], serde_json::json!([b]), "{merged}");
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(studies_of_patient(&server, "NEW-77"), both);
    assert_eq!(
        studies_of_patient(&server, &pb.patient_id),
        Vec::<String>::new()
    );
    assert_eq!(study_row(&server, &b)["PatientName"], "Roe^Richard");
    let b_originals = originals(&corpus, &b);
    assert_sent_with(
        &server.get_study(&b),
        &b_originals,
        &["Roe^Richard", "NEW-77"],
        &[&pb.patient_name, &pb.patient_id],
    );

    // A re-sent instance of B with a new description and sex changes the index (overwrite):
    // the study's other instances are sent with them too.
    let resent = dir.path().join("resent.dcm");
    let b_paths = corpus.study_paths(&b);
    modified_copy(
        &b_paths[0],
        &resent,
        &[
            "(0008,1030)=Re-sent description",
            "(0010,0040)=O",
            "(0010,0010)=Roe^Richard",
            "(0010,0020)=NEW-77",
        ],
    );
    let sent = server.scu("store", "MODALITY", &[resent.display().to_string()]);
    let (acked, failed) = acknowledged(&text(&sent));
    assert_eq!(acked.len(), 1, "{failed:?} {}", text(&sent));
    let row = study_row(&server, &b);
    assert_eq!(row["StudyDescription"], "Re-sent description", "{row}");
    assert_eq!(row["PatientSex"], "O", "{row}");
    // The patient's other study takes the patient-level change (sex), not B's description.
    let row_a = study_row(&server, &a);
    assert_eq!(row_a["PatientSex"], "O", "{row_a}");
    assert_eq!(row_a["StudyDescription"], "Corrected head CT", "{row_a}");
    let got = server.get_study(&b);
    for (uid, bytes) in &got {
        assert!(contains(bytes, "Re-sent description"), "{uid}");
    }

    // The stored files are the ones received (the re-sent one is new, the replaced one is
    // kept out of the online folder): nothing stored before was changed.
    let after = stored(&server);
    for (path, bytes) in &before {
        if let Some(now) = after.get(path) {
            assert!(now == bytes, "{} was changed", path.display());
        }
    }
    assert!(after
        .keys()
        .any(|p| p.extension().is_some_and(|e| e == "sdcm")));
    let archived: Vec<_> = before
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "sdcm"))
        .collect();
    for p in archived {
        assert_eq!(after.get(p), before.get(p), "{}", p.display());
    }

    // The trail: who changed what, from which value to which.
    let (ok, audit) = cli_json(&server, &["audit", "--json", "--study", &a]);
    assert!(ok, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let updates: Vec<&Value> = entries.iter().filter(|e| e["event"] == "updated").collect();
    assert_eq!(updates.len(), 2, "{audit}");
    let by_cli = updates
        .iter()
        .find(|e| e["who"].as_str().unwrap().starts_with("cli:"))
        .unwrap();
    let detail = by_cli["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("PatientID {:?} -> \"NEW-77\"", pa.patient_id)),
        "{detail}"
    );
    assert!(updates.iter().any(|e| e["who"] == "MODALITY"), "{audit}");
}

/// The first `n` bytes of a file.
fn head(path: &Path, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    let mut file = std::fs::File::open(path).unwrap();
    let read = file.read(&mut bytes).unwrap();
    bytes.truncate(read);
    bytes
}

#[test]
fn a_large_corrected_instance_is_streamed_with_the_new_values_in_each_uncompressed_syntax() {
    // 40 MiB of pixel data: over the size read whole, so it streams (as stored, or
    // re-encoded between the uncompressed syntaxes).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.dcm");
    let (sop, study) = make_big_instance(&file, 40, "ramp");
    let (sop, study) = (sop.as_str(), study.as_str());
    let server = TestServer::start("");
    let sent = text(&server.scu("store", "MODALITY", std::slice::from_ref(&file)));
    assert_eq!(acknowledged(&sent).0.len(), 1, "{sent}");
    update(
        &server,
        &["--study", study, "--set", "PatientName=Roe^Big^Jürgen"],
    );
    for (ts, syntax) in [
        ("1.2.840.10008.1.2.1", "explicit"),
        ("1.2.840.10008.1.2", "implicit"),
        ("1.2.840.10008.1.2.2", "big"),
    ] {
        let got = tempfile::tempdir().unwrap();
        server.get_study_into(
            study,
            got.path(),
            &["--context".into(), format!("{CT_IMAGE_STORAGE}:{ts}")],
        );
        let path = got.path().join(format!("{sop}.{ts}"));
        let start = head(&path, 4096);
        // UTF-8 (the instance had no character set), declared.
        assert!(contains(&start, "Roe^Big^Jürgen"), "{syntax}");
        assert!(contains(&start, "ISO_IR 192"), "{syntax}");
        assert!(!contains(&start, "BIG^INSTANCE"), "{syntax}");
        let out = std::process::Command::new(python())
            .arg(repo().join("tools/big_instance.py"))
            .args([
                "check",
                path.to_str().unwrap(),
                "--mb",
                "40",
                "--syntax",
                syntax,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{syntax}: {}", text(&out));
    }
}
