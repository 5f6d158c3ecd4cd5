//! C-ECHO and C-STORE against the real server with DCMTK and pynetdicom.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn dcmtk_store_keeps_data_sets_byte_identical_and_indexed() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
    ]);
    let server = TestServer::start("");
    let (ok, out) = server.echoscu("MODALITY", "STRATA");
    assert!(ok, "echoscu failed: {out}");

    let out = server.storescu("MODALITY", &corpus.paths());
    assert!(out.status.success(), "storescu failed: {}", text(&out));

    let mut status = server.status();
    // The server is the one process holding a lease (this status command leaves itself out).
    let nodes = status.as_object_mut().unwrap().remove("nodes").unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["role"], "server", "{nodes:?}");
    assert_eq!(nodes[0]["live"], true, "{nodes:?}");
    assert_eq!(nodes[0]["claims"], 0, "{nodes:?}");
    assert_eq!(
        std::fs::read_to_string(server.dir.join("node-id"))
            .unwrap()
            .trim(),
        nodes[0]["node"].as_str().unwrap(),
        "the node id made on first start is kept beside the config"
    );
    let total_bytes: u64 = files_below(&server.online_dir())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        status,
        serde_json::json!({
            "patients": 2, "studies": 2, "series": 2, "instances": 5, "bytes": total_bytes,
            "tiers": {
                "online": {"instances": 5, "bytes": total_bytes},
                "archive": {"instances": 0, "bytes": 0}
            },
            "copies": {"nearline": 0, "offline": 0},
            "queues": {"backup": 0, "repairs": 0},
            "commitments": {"checking": 0, "ready": 0, "reported": 0, "given_up": 0},
            "last_runs": {
                "tier": null, "backup": null, "repair": null, "verify": null, "import": null,
                "restore": null, "export-volume": null, "import-volume": null,
                "delete": null, "retention": null
            },
            "read_fallbacks": 0,
            // Nothing has read a stored instance yet (storing reads none back).
            "bytes_read": {"online": 0, "archive": 0, "nearline": 0, "offline": 0},
            // No rendition cache configured: nothing counted.
            "renditions": {
                "hits": 0, "misses": 0, "hit_ratio": 0.0, "bytes": 0, "cpu_seconds_saved": 0.0
            }
        })
    );

    let locator = locator(&server.dir).await;
    for f in &corpus.files {
        let object = locator
            .find_instance(&f.sop_instance_uid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} not indexed", f.sop_instance_uid));
        let stored = server.online_dir().join(&object.location);
        assert_eq!(
            data_set_bytes(&stored),
            data_set_bytes(&corpus.path(f)),
            "data set differs for {}",
            f.path
        );
        let bytes = std::fs::read(&stored).unwrap();
        assert_eq!(bytes.len() as u64, object.length);
        assert_eq!(crc32c::crc32c(&bytes), object.crc32c);
        // Paths are opaque: neither patient data nor UIDs appear in them.
        assert!(!object.location.contains(&f.patient_id));
        assert!(!object.location.contains(&f.study_instance_uid));
        // DCMTK accepts the stored file as valid Part-10.
        let check = dcmtk("dcmftest").arg(&stored).output().unwrap();
        assert!(
            text(&check).starts_with("yes:"),
            "dcmftest: {}",
            text(&check)
        );
    }
    // One folder per study.
    let study_dirs: std::collections::HashSet<_> = files_below(&server.online_dir())
        .iter()
        .map(|p| p.parent().unwrap().to_owned())
        .collect();
    assert_eq!(study_dirs.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn pynetdicom_store_indexes_names_in_every_character_set() {
    // Ten one-image studies: one per test patient, so every character set appears.
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "5",
        "--ct-images",
        "1",
        "--mr-studies",
        "5",
        "--mr-images",
        "1",
        "--seed",
        "3",
    ]);
    let charsets: std::collections::HashSet<_> = corpus
        .files
        .iter()
        .map(|f| f.specific_character_set.as_str())
        .collect();
    assert!(
        charsets.contains("GB18030")
            && charsets.contains("ISO_IR 192")
            && charsets.contains("ISO_IR 100")
    );

    let server = TestServer::start("");
    let paths = corpus.paths();
    let args: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = server.scu("store", "VIEWER", &args);
    let (ok, other) = acknowledged(&text(&out));
    assert_eq!(ok.len(), 10, "{}", text(&out));
    assert!(other.is_empty());

    let locator = locator(&server.dir).await;
    for f in &corpus.files {
        let indexed = locator
            .indexed_attributes(&f.sop_instance_uid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            indexed.patient.patient_name, f.patient_name,
            "charset {}",
            f.specific_character_set
        );
        assert_eq!(indexed.patient.patient_id, f.patient_id);
        assert_eq!(
            indexed.instance.specific_character_set,
            f.specific_character_set
        );
        let object = locator
            .find_instance(&f.sop_instance_uid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            data_set_bytes(&server.online_dir().join(&object.location)),
            data_set_bytes(&corpus.path(f))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_parallel_associations_all_land() {
    let corpus = Corpus::generate(&["--ct-studies", "8", "--ct-images", "4", "--mr-studies", "0"]);
    let server = TestServer::start("");
    let children: Vec<_> = corpus
        .study_uids()
        .iter()
        .map(|study| {
            dcmtk("storescu")
                .args([
                    "-aet",
                    "MODALITY",
                    "-aec",
                    "STRATA",
                    "127.0.0.1",
                    &server.port.to_string(),
                ])
                .args(corpus.study_paths(study))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    assert_eq!(children.len(), 8);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "storescu failed: {}", text(&out));
    }
    let status = server.status();
    assert_eq!(status["instances"], 32);
    assert_eq!(status["studies"], 8);
    let locator = locator(&server.dir).await;
    for f in &corpus.files {
        assert!(locator
            .find_instance(&f.sop_instance_uid)
            .await
            .unwrap()
            .is_some());
    }
    // Each of the 8 associations stored its own study.
    let log = server.log_when(|l| l.matches("stored=4").count() >= 8);
    assert_eq!(log.matches("stored=4").count(), 8, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_keep_the_stored_copy_by_default() {
    let corpus = Corpus::generate(&["--ct-studies", "1", "--ct-images", "1", "--mr-studies", "0"]);
    let server = TestServer::start("");
    let path = corpus.paths().remove(0);
    let mut stored = Vec::new();
    for _ in 0..2 {
        let out = server.scu("store", "VIEWER", &[&path]);
        assert_eq!(acknowledged(&text(&out)).0.len(), 1, "{}", text(&out));
        let files: Vec<_> = files_below(&server.online_dir());
        assert_eq!(files.len(), 1, "{files:?}");
        stored.push((files[0].clone(), std::fs::read(&files[0]).unwrap()));
    }
    assert_eq!(server.instances(), 1);
    // `keep`: the first copy stays where it was, byte for byte.
    assert_eq!(stored[0], stored[1], "the stored copy changed");
    let log = server.log_when(|l| l.contains("duplicate kept"));
    assert!(log.contains("duplicate kept"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_policy_replaces_the_stored_copy() {
    let corpus = Corpus::generate(&["--ct-studies", "1", "--ct-images", "1", "--mr-studies", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "", "duplicate_policy = \"overwrite\"");
    let f = &corpus.files[0];
    let path = corpus.path(f);
    let out = server.scu("store", "VIEWER", &[&path]);
    assert_eq!(acknowledged(&text(&out)).0.len(), 1);
    let first = locator(&server.dir)
        .await
        .find_instance(&f.sop_instance_uid)
        .await
        .unwrap()
        .unwrap();

    let out = server.scu("store", "VIEWER", &[&path]);
    assert_eq!(acknowledged(&text(&out)).0.len(), 1);
    let second = locator(&server.dir)
        .await
        .find_instance(&f.sop_instance_uid)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.location, second.location);
    assert!(
        !server.online_dir().join(&first.location).exists(),
        "old copy left behind"
    );
    assert_eq!(
        data_set_bytes(&server.online_dir().join(&second.location)),
        data_set_bytes(&path)
    );
    assert_eq!(server.instances(), 1);
    let log = server.log_when(|l| l.contains("replaced a stored instance"));
    assert!(log.contains("replaced a stored instance"), "{log}");
}

/// Implicit VR Little Endian, the DICOM default: stored as received and served to an
/// Implicit-only requestor byte for byte; an Explicit-only requestor gets every instance
/// too, converted.
#[test]
fn implicit_vr_instances_are_stored_as_received_and_served_to_both_kinds_of_requestor() {
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
        "--transfer-syntax",
        "implicit",
        "--seed",
        "41",
    ]);
    let server = TestServer::start("");
    server.store(&corpus);
    for study in corpus.study_uids() {
        let dir = tempfile::tempdir().unwrap();
        let out = text(&server.scu(
            "get",
            "VIEWER",
            &[
                "--implicit-only".to_string(),
                "--out".into(),
                dir.path().display().to_string(),
                "-k".into(),
                format!("StudyInstanceUID={study}"),
            ],
        ));
        assert!(out.contains("FINAL 0x0000"), "{out}");
        let names: Vec<String> = files_below(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.ends_with(&format!(".{IMPLICIT}"))),
            "{names:?}"
        );
        assert_same_data_sets(
            &received(dir.path()),
            &originals(&corpus, &study),
            &format!("implicit-only requestor: {study}"),
        );
        let explicit = server.get_study(&study);
        let mut got: Vec<&String> = explicit.keys().collect();
        let want = originals(&corpus, &study);
        let mut expected: Vec<&String> = want.keys().collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "explicit-only requestor: {study}");
        for (uid, bytes) in &explicit {
            assert_ne!(
                bytes, &want[uid],
                "{uid} was not converted for the explicit requestor"
            );
        }
    }
}

/// Standard elements rewritten with VR UN by an anonymiser (PS3.5 6.2.2): the SOP Class,
/// SOP Instance, Study and Series UIDs and the patient's name and ID are read through UN,
/// the instance is stored as sent, found by its name, and served bit-identical.
#[test]
fn standard_elements_encoded_as_un_are_read_and_the_object_kept_as_sent() {
    let corpus = Corpus::small(1, 1, 0, 0, 47);
    let dir = tempfile::tempdir().unwrap();
    let un_file = dir.path().join("un.dcm");
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(
            r#"
import sys, warnings, pydicom
from pydicom.dataelem import RawDataElement
warnings.simplefilter("ignore")
# Written as UN, not turned back into the dictionary's VR.
pydicom.config.replace_un_with_known_vr = False
ds = pydicom.dcmread(sys.argv[1])
ds.PatientName = "UNKNOWN^VR"
for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
           "PatientName", "PatientID"):
    e = ds[kw]
    raw = str(e.value).encode()
    if len(raw) % 2:
        raw += b"\0" if e.VR == "UI" else b" "
    ds[e.tag] = RawDataElement(e.tag, "UN", len(raw), raw, 0, False, True)
ds.save_as(sys.argv[2], enforce_file_format=True)
"#,
        )
        .arg(corpus.path(&corpus.files[0]))
        .arg(&un_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The file really carries UN where the standard says UI and PN (raw explicit VR headers;
    // dcmdump would show the dictionary's VR).
    let raw = std::fs::read(&un_file).unwrap();
    let has = |header: &[u8]| raw.windows(header.len()).any(|w| w == header);
    assert!(has(b"\x08\x00\x16\x00UN\0\0"), "SOP Class UID as UN");
    assert!(has(b"\x10\x00\x10\x00UN\0\0"), "Patient's Name as UN");

    let server = TestServer::start("");
    let out = server.scu("store", "VIEWER", &[un_file.display().to_string()]);
    let log = text(&out);
    assert!(log.contains("STATUS 0x0000"), "{log}");
    let found = server.findscu(
        "VIEWER",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=UNKNOWN*",
            "StudyInstanceUID",
        ],
    );
    let study = &corpus.files[0].study_instance_uid;
    assert!(found.contains(study.as_str()), "{found}");
    let served = server.get_study(study);
    assert_eq!(served.len(), 1);
    assert_eq!(
        served.values().next().unwrap(),
        &data_set_bytes(&un_file),
        "served as sent"
    );
}

/// Explicit VR Big Endian (retired; old modalities send it, DCMTK and Orthanc accept it):
/// stored as received, served bit-identical to a requestor that takes it, and re-encoded
/// with identical pixels for one that takes only Implicit VR Little Endian.
#[test]
fn explicit_vr_big_endian_is_stored_as_sent_and_re_encoded_for_others() {
    const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    let corpus = Corpus::small(1, 2, 0, 0, 48);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, f) in corpus.files.iter().enumerate() {
        let big = dir.path().join(format!("big-{i}.dcm"));
        let out = dcmtk("dcmconv")
            .arg("+tb")
            .arg(corpus.path(f))
            .arg(&big)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        files.push(big);
    }
    let server = TestServer::start("");
    let out = text(&server.scu("store", "VIEWER", &files));
    assert_eq!(out.matches("STATUS 0x0000").count(), files.len(), "{out}");
    let study = &corpus.files[0].study_instance_uid;
    // Stored as received: each online file ends with the data set exactly as sent.
    let sent: Vec<Vec<u8>> = files.iter().map(|f| data_set_bytes(f)).collect();
    for f in server.locate(study) {
        let stored =
            std::fs::read(server.online_dir().join(f["location"].as_str().unwrap())).unwrap();
        assert!(sent.iter().any(|d| stored.ends_with(d)), "{f}");
    }

    let get = |context: &str| {
        let got = tempfile::tempdir().unwrap();
        server.get_study_into(
            study,
            got.path(),
            &["--context".into(), format!("{CT}:{context}")],
        );
        got
    };
    let as_sent = get(BIG_ENDIAN);
    let by_uid: std::collections::HashMap<String, std::path::PathBuf> = files
        .iter()
        .zip(&corpus.files)
        .map(|(p, f)| (f.sop_instance_uid.clone(), p.clone()))
        .collect();
    let received = received(as_sent.path());
    assert_eq!(received.len(), files.len());
    for (uid, bytes) in &received {
        assert_eq!(bytes, &data_set_bytes(&by_uid[uid]), "{uid} bit-identical");
    }
    let re_encoded = get(IMPLICIT);
    for (uid, original) in &by_uid {
        let other = re_encoded.path().join(format!("{uid}.{IMPLICIT}"));
        assert!(other.exists(), "{} missing", other.display());
        let out = std::process::Command::new(python())
            .arg(repo().join("tools/compare_pixels.py"))
            .arg(original)
            .arg(&other)
            .args(["--ts", IMPLICIT])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("compare_pixels: {}", text(&out)));
        assert_eq!(report["identical"], true, "{report}");
    }
}
