//! C-MOVE and C-GET against the real server: DCMTK movescu/getscu with a DCMTK storescp
//! destination, pynetdicom as requestor and as a choosy destination, and the failure cases.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;

const IMPLICIT: &str = "1.2.840.10008.1.2";

/// A server that knows DEST (on `dest_port`) and DOWN (a port nobody listens on).
fn server(dest_port: u16, retrieve: &str) -> TestServer {
    // Held until the test process exits, so no other test can start listening on it.
    let down = Box::leak(Box::new(RefusingPort::bind())).port;
    TestServer::start(&format!(
        "[[dicom.peers]]\naet = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n\
         [[dicom.peers]]\naet = \"DOWN\"\nhost = \"127.0.0.1\"\nport = {down}\n{retrieve}"
    ))
}

fn corpus(ct_images: &str, mr_images: &str) -> Corpus {
    Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        ct_images,
        "--mr-studies",
        "1",
        "--mr-images",
        mr_images,
        "--seed",
        "5",
    ])
}

/// Every line of `scu.py move|get` output that starts with FINAL.
fn final_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("FINAL"))
        .unwrap_or_else(|| panic!("no final response: {out}"))
}

fn stored_state(server: &TestServer) -> (u64, usize) {
    (server.instances(), files_below(&server.online_dir()).len())
}

#[test]
fn dcmtk_movescu_and_getscu_receive_bit_identical_instances() {
    let corpus = corpus("6", "4");
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = DcmtkStorescp::start("DEST", dest_dir.path());
    let server = server(dest.port, "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let uids = corpus.study_uids();
    let (ct, mr) = (&uids[0], &uids[1]);

    // Study Root, STUDY level.
    let out = text(
        &dcmtk("movescu")
            .args([
                "-v", "-S", "-aet", "VIEWER", "-aec", "STRATA", "-aem", "DEST",
            ])
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
            .arg(format!("StudyInstanceUID={ct}"))
            .args(["127.0.0.1", &server.port.to_string()])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("Received Final Move Response (Success)"),
        "{out}"
    );
    assert_same_data_sets(
        &received(dest_dir.path()),
        &originals(&corpus, ct),
        "C-MOVE",
    );

    // Patient Root, SERIES level, into a clean folder.
    for f in files_below(dest_dir.path()) {
        std::fs::remove_file(f).unwrap();
    }
    let mr_file = corpus
        .files
        .iter()
        .find(|f| &f.study_instance_uid == mr)
        .unwrap();
    let out = text(
        &dcmtk("movescu")
            .args([
                "-v", "-P", "-aet", "VIEWER", "-aec", "STRATA", "-aem", "DEST",
            ])
            .args(["-k", "QueryRetrieveLevel=SERIES", "-k"])
            .arg(format!("PatientID={}", mr_file.patient_id))
            .arg("-k")
            .arg(format!("StudyInstanceUID={mr}"))
            .arg("-k")
            .arg(format!("SeriesInstanceUID={}", mr_file.series_instance_uid))
            .args(["127.0.0.1", &server.port.to_string()])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("Received Final Move Response (Success)"),
        "{out}"
    );
    assert_same_data_sets(
        &received(dest_dir.path()),
        &originals(&corpus, mr),
        "C-MOVE",
    );

    // C-GET, STUDY level and IMAGE level, with getscu keeping the bytes as received.
    let get_dir = tempfile::tempdir().unwrap();
    let getscu = |keys: &[String], dir: &Path| {
        let mut cmd = dcmtk("getscu");
        cmd.args(["-v", "-S", "-aet", "VIEWER", "-aec", "STRATA", "+B", "-od"])
            .arg(dir);
        for k in keys {
            cmd.args(["-k", k]);
        }
        text(
            &cmd.args(["127.0.0.1", &server.port.to_string()])
                .output()
                .unwrap(),
        )
    };
    let out = getscu(
        &[
            "QueryRetrieveLevel=STUDY".into(),
            format!("StudyInstanceUID={ct}"),
        ],
        get_dir.path(),
    );
    assert!(out.contains("Received C-GET Response (Success)"), "{out}");
    assert_same_data_sets(&received(get_dir.path()), &originals(&corpus, ct), "C-GET");

    let one = corpus
        .files
        .iter()
        .find(|f| &f.study_instance_uid == ct)
        .unwrap();
    let image_dir = tempfile::tempdir().unwrap();
    let out = getscu(
        &[
            "QueryRetrieveLevel=IMAGE".into(),
            format!("StudyInstanceUID={ct}"),
            format!("SeriesInstanceUID={}", one.series_instance_uid),
            format!("SOPInstanceUID={}", one.sop_instance_uid),
        ],
        image_dir.path(),
    );
    assert!(out.contains("Received C-GET Response (Success)"), "{out}");
    let got = received(image_dir.path());
    assert_eq!(got.len(), 1);
    assert!(got[&one.sop_instance_uid] == data_set_bytes(&corpus.path(one)));
}

#[test]
fn pynetdicom_move_and_get_report_counts_and_deliver_identical_bytes() {
    let corpus = corpus("5", "3");
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    let dest_port = dest.port;
    let server = server(dest_port, "[retrieve]\nmove_associations = 2\n");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let uids = corpus.study_uids();

    // Two parallel associations to the destination; Pending counts after each instance.
    let key = format!("StudyInstanceUID={}", uids[0]);
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    let pending: Vec<&str> = out.lines().filter(|l| l.starts_with("PENDING")).collect();
    assert_eq!(pending.len(), 5, "{out}");
    assert!(
        pending[0].contains("remaining=4 completed=1 failed=0"),
        "{out}"
    );
    assert_eq!(
        final_line(&out),
        "FINAL 0x0000 remaining=- completed=5 failed=0 warning=0",
        "{out}"
    );
    assert_same_data_sets(
        &received(dest_dir.path()),
        &originals(&corpus, &uids[0]),
        "C-MOVE",
    );

    // Patient Root C-GET at PATIENT level: everything of that patient.
    let mr = corpus
        .files
        .iter()
        .find(|f| f.study_instance_uid == uids[1])
        .unwrap();
    let get_dir = tempfile::tempdir().unwrap();
    let out = text(&server.scu(
        "get",
        "VIEWER",
        &[
            "--model".to_string(),
            "patient".into(),
            "--level".into(),
            "PATIENT".into(),
            "--out".into(),
            get_dir.path().display().to_string(),
            "-k".into(),
            format!("PatientID={}", mr.patient_id),
        ],
    ));
    assert_eq!(
        final_line(&out),
        "FINAL 0x0000 remaining=- completed=3 failed=0 warning=0",
        "{out}"
    );
    assert_same_data_sets(
        &received(get_dir.path()),
        &originals(&corpus, &uids[1]),
        "C-GET",
    );
}

#[test]
fn retrieve_failures_get_the_right_status_and_change_nothing() {
    let corpus = corpus("5", "3");
    let dest_dir = tempfile::tempdir().unwrap();
    // This destination takes MR only.
    let dest = py_storescp("DEST", dest_dir.path(), &["--accept", "MR"]);
    let server = server(dest.port, "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let before = stored_state(&server);
    let uids = corpus.study_uids();
    let both = format!("StudyInstanceUID={}\\{}", uids[0], uids[1]);

    // Unknown destination: refused at once.
    let out = text(&server.scu("move", "VIEWER", &["--dest", "NOWHERE", "-k", &both]));
    assert!(final_line(&out).starts_with("FINAL 0xA801"), "{out}");

    // Destination down: every sub-operation fails.
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DOWN", "-k", &both]));
    assert!(
        final_line(&out).starts_with("FINAL 0xA702 remaining=- completed=0 failed=8"),
        "{out}"
    );

    // Destination refusing CT: MR arrives, CT is listed as failed.
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &both]));
    assert!(
        final_line(&out).starts_with("FINAL 0xB000 remaining=- completed=3 failed=5"),
        "{out}"
    );
    let failed: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("FAILED_UIDS "))
        .unwrap_or_else(|| panic!("no failed list: {out}"))
        .split(' ')
        .collect();
    let mut ct: Vec<&str> = corpus
        .files
        .iter()
        .filter(|f| f.study_instance_uid == uids[0])
        .map(|f| f.sop_instance_uid.as_str())
        .collect();
    let mut failed_sorted = failed.clone();
    failed_sorted.sort();
    ct.sort();
    assert_eq!(failed_sorted, ct);
    assert_eq!(received(dest_dir.path()).len(), 3);

    // Bad identifiers.
    let out = text(&server.scu(
        "move",
        "VIEWER",
        &["--dest", "DEST", "-k", "StudyInstanceUID="],
    ));
    assert!(final_line(&out).starts_with("FINAL 0xA900"), "{out}");
    let out = text(&server.scu(
        "move",
        "VIEWER",
        &["--dest", "DEST", "--level", "PATIENT", "-k", "PatientID=X"],
    ));
    assert!(final_line(&out).starts_with("FINAL 0xA900"), "{out}");
    // An AE allowed only to store may not retrieve.
    let out = text(&server.scu("move", "MODALITY", &["--dest", "DEST", "-k", &both]));
    assert!(final_line(&out).starts_with("FINAL 0x0124"), "{out}");

    // Nothing matched: success with nothing sent.
    let out = text(&server.scu(
        "move",
        "VIEWER",
        &["--dest", "DEST", "-k", "StudyInstanceUID=1.2.3"],
    ));
    assert_eq!(
        final_line(&out),
        "FINAL 0x0000 remaining=- completed=0 failed=0 warning=0"
    );

    assert_eq!(stored_state(&server), before);
    let (ok, log) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "{log}");
}

/// (Remaining, Completed) of a final 0xFE00 response with no failures or warnings, Remaining
/// above zero (a cancel that came too late for a study of `total` would end 0x0000).
fn cancelled_counts(out: &str, total: usize) -> (usize, usize) {
    let last = final_line(out);
    assert!(last.starts_with("FINAL 0xFE00 "), "{out}");
    let count = |name: &str| -> usize {
        last.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{name}=")[..]))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} count: {out}"))
    };
    assert_eq!((count("failed"), count("warning")), (0, 0), "{out}");
    let remaining = count("remaining");
    assert!((1..total).contains(&remaining), "{out}");
    (remaining, count("completed"))
}

#[test]
fn cancel_and_abort_mid_study_stop_cleanly() {
    let corpus = corpus("40", "1");
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    let dest_port = dest.port;
    let server = server(dest_port, "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let before = stored_state(&server);
    let ct = format!("StudyInstanceUID={}", corpus.study_uids()[0]);

    // C-MOVE cancelled after two Pending responses.
    let out = text(&server.scu(
        "move",
        "VIEWER",
        &["--dest", "DEST", "--cancel-after", "2", "-k", &ct],
    ));
    // Stopped after the sub-operation in flight: what is left is reported as Remaining.
    let (remaining, completed) = cancelled_counts(&out, 40);
    assert!(completed >= 2, "two Pending responses came first: {out}");
    assert_eq!(remaining + completed, 40, "{out}");

    // C-GET cancelled the same way.
    let get_dir = tempfile::tempdir().unwrap();
    let out = text(&server.scu(
        "get",
        "VIEWER",
        &[
            "--out".to_string(),
            get_dir.path().display().to_string(),
            "--cancel-after".into(),
            "2".into(),
            "-k".into(),
            ct.clone(),
        ],
    ));
    let (remaining, completed) = cancelled_counts(&out, 40);
    assert_eq!(remaining + completed, 40, "{out}");
    assert_eq!(received(get_dir.path()).len(), completed, "{out}");

    // The requestor aborts mid-study: the server notices and keeps serving.
    let abort_dir = tempfile::tempdir().unwrap();
    let out = text(&server.scu_exiting(
        3,
        "get",
        "VIEWER",
        &[
            "--out".to_string(),
            abort_dir.path().display().to_string(),
            "--abort-after".into(),
            "3".into(),
            "-k".into(),
            ct.clone(),
        ],
    ));
    assert!(!out.contains("FINAL 0x0000"), "{out}");
    let (ok, log) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "{log}");
    assert_eq!(stored_state(&server), before);
    // And a whole retrieve still works afterwards.
    let again = tempfile::tempdir().unwrap();
    let out = text(&server.scu(
        "get",
        "VIEWER",
        &[
            "--out".to_string(),
            again.path().display().to_string(),
            "-k".into(),
            ct,
        ],
    ));
    assert!(final_line(&out).starts_with("FINAL 0x0000"), "{out}");
    assert_eq!(received(again.path()).len(), 40);
}

#[test]
fn a_destination_aborting_mid_study_fails_the_rest_and_the_server_keeps_serving() {
    let corpus = corpus("10", "1");
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &["--abort-after", "3"]);
    let dest_port = dest.port;
    let server = server(dest_port, "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let before = stored_state(&server);
    let ct = format!("StudyInstanceUID={}", corpus.study_uids()[0]);
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &ct]));
    let last = final_line(&out);
    // Two or three made it before the abort (the third's response may be lost with it).
    assert!(
        last.starts_with("FINAL 0xB000 remaining=- completed=2 failed=8")
            || last.starts_with("FINAL 0xB000 remaining=- completed=3 failed=7"),
        "{out}"
    );
    assert!(out.contains("FAILED_UIDS "), "{out}");
    assert_eq!(stored_state(&server), before);
    let (ok, log) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "{log}");
}

#[test]
fn destinations_that_take_only_implicit_vr_get_a_transcoded_copy() {
    let corpus = corpus("2", "1");
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &["--implicit-only"]);
    let dest_port = dest.port;
    let server = server(dest_port, "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let ct = format!("StudyInstanceUID={}", corpus.study_uids()[0]);
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &ct]));
    assert!(final_line(&out).starts_with("FINAL 0x0000"), "{out}");
    let files: Vec<PathBuf> = files_below(dest_dir.path());
    assert_eq!(files.len(), 2);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let uid = name
            .strip_suffix(&format!(".{IMPLICIT}"))
            .expect("sent as Implicit VR");
        let original = corpus
            .files
            .iter()
            .find(|f| f.sop_instance_uid == uid)
            .unwrap();
        let implicit = dicom_object::InMemDicomObject::read_dataset_with_ts(
            &std::fs::read(&path).unwrap()[..],
            &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let explicit = dicom_object::InMemDicomObject::read_dataset_with_ts(
            &data_set_bytes(&corpus.path(original))[..],
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let pixels = |o: &dicom_object::InMemDicomObject| {
            o.element(dicom_dictionary_std::tags::PIXEL_DATA)
                .unwrap()
                .to_bytes()
                .unwrap()
                .to_vec()
        };
        assert!(
            pixels(&implicit) == pixels(&explicit),
            "{uid}: pixels differ"
        );
        assert_eq!(
            implicit
                .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            uid
        );
    }
}

/// Compresses `input` with a DCMTK tool (`dcmcjpeg`, `dcmcrle`, `dcmcjpls`) into `output`.
fn compress(tool: &str, input: &Path, output: &Path) {
    let out = dcmtk(tool).arg(input).arg(output).output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_data_set(bytes: &[u8], ts: &str) -> dicom_object::InMemDicomObject {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .unwrap_or_else(|| panic!("unknown transfer syntax {ts}"));
    dicom_object::InMemDicomObject::read_dataset_with_ts(bytes, ts).unwrap()
}

/// The same tags with the same values, items of sequences compared the same way (lengths and
/// the encoding of the headers may differ between transfer syntaxes).
fn assert_same_elements(
    got: &dicom_object::InMemDicomObject,
    want: &dicom_object::InMemDicomObject,
    what: &str,
) {
    use dicom_core::header::Header;
    let tags = |o: &dicom_object::InMemDicomObject| o.iter().map(|e| e.tag()).collect::<Vec<_>>();
    assert_eq!(tags(got), tags(want), "{what}: different elements");
    for element in want.iter() {
        let other = got.element(element.tag()).unwrap();
        match (element.items(), other.items()) {
            (Some(want_items), Some(got_items)) => {
                assert_eq!(
                    got_items.len(),
                    want_items.len(),
                    "{what}: {}",
                    element.tag()
                );
                for (g, w) in got_items.iter().zip(want_items) {
                    assert_same_elements(g, w, &format!("{what} {}", element.tag()));
                }
            }
            _ => assert!(
                other.to_bytes().unwrap() == element.to_bytes().unwrap(),
                "{what}: {} differs",
                element.tag()
            ),
        }
    }
}

fn element_bytes(o: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> Vec<u8> {
    o.element(tag).unwrap().to_bytes().unwrap().to_vec()
}

/// The first study of `corpus` and its instances.
fn first_study(corpus: &Corpus) -> (String, Vec<&CorpusFile>) {
    let study = corpus.study_uids()[0].clone();
    let files = corpus
        .files
        .iter()
        .filter(|f| f.study_instance_uid == study)
        .collect();
    (study, files)
}

/// A server with two C-MOVE destinations: DEST takes Implicit VR Little Endian only, ALL
/// takes the compressed syntaxes too.
struct DecodingDestinations {
    dest_dir: tempfile::TempDir,
    all_dir: tempfile::TempDir,
    server: TestServer,
    _destinations: [Destination; 2],
}

impl DecodingDestinations {
    fn start() -> DecodingDestinations {
        let dest_dir = tempfile::tempdir().unwrap();
        let dest = py_storescp("DEST", dest_dir.path(), &["--implicit-only"]);
        let all_dir = tempfile::tempdir().unwrap();
        let all = py_storescp("ALL", all_dir.path(), &["--compressed"]);
        let server = server(
            dest.port,
            &format!(
                "[[dicom.peers]]\naet = \"ALL\"\nhost = \"127.0.0.1\"\nport = {}\n",
                all.port
            ),
        );
        DecodingDestinations {
            dest_dir,
            all_dir,
            server,
            _destinations: [dest, all],
        }
    }
}

#[test]
fn compressed_instances_are_decoded_for_destinations_that_take_only_uncompressed_data() {
    use dicom_dictionary_std::tags;
    let corpus = corpus("3", "1");
    let (study, ct) = first_study(&corpus);
    let compressed = tempfile::tempdir().unwrap();
    // JPEG Lossless (process 14, SV1), RLE Lossless, and JPEG-LS, which this build cannot decode.
    // Each with the storescu option that proposes its syntax.
    let tools = [
        ("dcmcjpeg", "1.2.840.10008.1.2.4.70", "-xs"),
        ("dcmcrle", "1.2.840.10008.1.2.5", "-xr"),
        ("dcmcjpls", "1.2.840.10008.1.2.4.80", "-xt"),
    ];
    let mut sent = Vec::new();
    for ((tool, ts, _), file) in tools.iter().zip(&ct) {
        let path = compressed.path().join(format!("{tool}.dcm"));
        compress(tool, &corpus.path(file), &path);
        sent.push((path, *ts, file.sop_instance_uid.clone(), corpus.path(file)));
    }
    // Every field bound: the destinations must live as long as the test.
    let DecodingDestinations {
        dest_dir,
        all_dir,
        server,
        _destinations,
    } = DecodingDestinations::start();
    for ((path, ..), (_, _, propose)) in sent.iter().zip(tools) {
        let stored = dcmtk("storescu")
            .args([propose, "-aet", "MODALITY", "-aec", "STRATA", "127.0.0.1"])
            .arg(server.port.to_string())
            .arg(path)
            .output()
            .unwrap();
        assert!(stored.status.success(), "{}", text(&stored));
    }
    let before = stored_state(&server);

    let key = format!("StudyInstanceUID={study}");
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    let jpeg_ls_uid = &sent[2].2;
    assert!(
        final_line(&out).starts_with("FINAL 0xB000 remaining=- completed=2 failed=1"),
        "{out}"
    );
    assert!(out.contains(&format!("FAILED_UIDS {jpeg_ls_uid}")), "{out}");
    let log = server.log_when(|l| l.contains("no decoder for it"));
    assert!(
        log.contains("no decoder for it"),
        "the JPEG-LS failure is logged with its reason: {log}"
    );
    for (_, ts, uid, original) in &sent[..2] {
        let path = dest_dir.path().join(format!("{uid}.{IMPLICIT}"));
        let received = read_data_set(&std::fs::read(&path).unwrap(), IMPLICIT);
        let original = read_data_set(
            &data_set_bytes(original),
            "1.2.840.10008.1.2.1", // the corpus is Explicit VR Little Endian
        );
        assert!(
            element_bytes(&received, tags::PIXEL_DATA)
                == element_bytes(&original, tags::PIXEL_DATA),
            "{ts}: decoded pixels differ from the uncompressed original"
        );
        for tag in [
            tags::SOP_INSTANCE_UID,
            tags::PHOTOMETRIC_INTERPRETATION,
            tags::BITS_STORED,
            tags::ROWS,
        ] {
            assert_eq!(
                received.element(tag).unwrap().to_str().unwrap(),
                original.element(tag).unwrap().to_str().unwrap(),
                "{ts}: {tag}"
            );
        }
    }
    assert_eq!(
        stored_state(&server),
        before,
        "retrieval changes nothing stored"
    );

    // A destination that takes the compressed syntaxes gets the stored bytes unchanged.
    let out = text(&server.scu("move", "VIEWER", &["--dest", "ALL", "-k", &key]));
    assert!(final_line(&out).starts_with("FINAL 0x0000"), "{out}");
    for (path, ts, uid, _) in &sent {
        let received = std::fs::read(all_dir.path().join(format!("{uid}.{ts}"))).unwrap();
        assert!(received == data_set_bytes(path), "{ts}: not bit-identical");
    }
}

/// Encapsulated Pixel Data as some modalities write it (tools/loose_encaps.py, from a DCMTK
/// JPEG Lossless file): an empty offset table with a frame split into an odd-length unpadded
/// fragment and the rest, the same with even fragments, and no offset table item at all.
/// Each data set is whole, so each is stored as sent and served bit-identical; the first
/// two are decoded for an uncompressed-only destination (as DCMTK's dcmdjpeg decodes them),
/// and the third, which no decoder here can frame, fails with its reason.
#[test]
fn loosely_encapsulated_pixel_data_is_stored_as_sent_and_decoded_where_it_can_be() {
    use dicom_dictionary_std::tags;
    let corpus = corpus("3", "1");
    let (study, ct) = first_study(&corpus);
    let files = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    for (mode, file) in ["odd", "padded", "no-bot"].into_iter().zip(&ct) {
        let jpeg = files.path().join(format!("{mode}-jpeg.dcm"));
        compress("dcmcjpeg", &corpus.path(file), &jpeg);
        let loose = files.path().join(format!("{mode}.dcm"));
        let out = std::process::Command::new(python())
            .arg(repo().join("tools/loose_encaps.py"))
            .args([&jpeg, &loose])
            .arg(mode)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        sent.push((
            mode,
            loose,
            file.sop_instance_uid.clone(),
            corpus.path(file),
        ));
    }
    // Every field bound: the destinations must live as long as the test.
    let DecodingDestinations {
        dest_dir,
        all_dir,
        server,
        _destinations,
    } = DecodingDestinations::start();
    let paths: Vec<&PathBuf> = sent.iter().map(|(_, path, ..)| path).collect();
    let out = text(&server.scu("store", "MODALITY", &paths));
    assert!(out.contains("DONE ok=3 failed=0"), "{out}");

    let key = format!("StudyInstanceUID={study}");
    let out = text(&server.scu("move", "VIEWER", &["--dest", "ALL", "-k", &key]));
    assert!(final_line(&out).starts_with("FINAL 0x0000"), "{out}");
    for (mode, path, uid, _) in &sent {
        // dcmcjpeg's default: JPEG Lossless, first-order prediction.
        let got = all_dir.path().join(format!("{uid}.1.2.840.10008.1.2.4.70"));
        let got = std::fs::read(&got).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(got == data_set_bytes(path), "{mode}: not bit-identical");
    }

    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    assert!(
        final_line(&out).starts_with("FINAL 0xB000 remaining=- completed=2 failed=1"),
        "{out}"
    );
    assert!(out.contains(&format!("FAILED_UIDS {}", sent[2].2)), "{out}");
    for (mode, _, uid, original) in &sent[..2] {
        let path = dest_dir.path().join(format!("{uid}.{IMPLICIT}"));
        let decoded = read_data_set(&std::fs::read(&path).unwrap(), IMPLICIT);
        let original = read_data_set(&data_set_bytes(original), EXPLICIT);
        assert!(
            element_bytes(&decoded, tags::PIXEL_DATA) == element_bytes(&original, tags::PIXEL_DATA),
            "{mode}: decoded pixels differ from the uncompressed original"
        );
    }
}

const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// One study of CR, DX (HTJ2K), US multi-frame (Deflated), SC RGB (JPEG baseline), SR
/// (Implicit VR) and RT Structure Set instances: `tools/gen_corpus.py --zoo`.
fn zoo() -> Corpus {
    Corpus::generate(&[
        "--ct-studies",
        "0",
        "--mr-studies",
        "0",
        "--zoo",
        "--seed",
        "9",
    ])
}

/// `--context SOP:TS` arguments for scu.py and scp.py: each zoo SOP class in `syntax`, or in
/// its own stored syntax when `syntax` is None.
fn zoo_contexts(zoo: &Corpus, syntax: Option<&str>) -> Vec<String> {
    zoo.files
        .iter()
        .flat_map(|f| {
            let ts = syntax.unwrap_or(&f.transfer_syntax_uid);
            ["--context".to_string(), format!("{}:{ts}", f.sop_class_uid)]
        })
        .collect()
}

/// A destination DEST taking each zoo SOP class in `syntax` (its stored one when None),
/// writing into the returned folder, and a server that knows it.
fn zoo_site(zoo: &Corpus, syntax: Option<&str>) -> (tempfile::TempDir, Destination, TestServer) {
    let dest_dir = tempfile::tempdir().unwrap();
    let args = zoo_contexts(zoo, syntax);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dest = py_storescp("DEST", dest_dir.path(), &args);
    let server = server(dest.port, "");
    (dest_dir, dest, server)
}

/// Files a destination wrote, by name (`<SOP Instance UID>.<transfer syntax UID>`).
fn received_by_name(dir: &Path) -> HashMap<String, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_sop_class_and_transfer_syntax_of_the_zoo_is_stored_and_served_as_received() {
    let zoo = zoo();
    let kinds: Vec<(&str, &str)> = zoo
        .files
        .iter()
        .map(|f| (f.modality.as_str(), f.transfer_syntax_uid.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("CR", EXPLICIT),
            ("DX", "1.2.840.10008.1.2.4.201"),
            ("US", "1.2.840.10008.1.2.1.99"),
            ("OT", "1.2.840.10008.1.2.4.50"),
            ("SR", IMPLICIT),
            ("RTSTRUCT", EXPLICIT),
        ],
        "the zoo the generator makes"
    );
    let (dest_dir, _dest, server) = zoo_site(&zoo, None);
    let out = text(&server.scu("store", "MODALITY", &zoo.paths()));
    let (ok, failed) = acknowledged(&out);
    assert_eq!((ok.len(), failed), (zoo.files.len(), vec![]), "{out}");

    // Every instance comes back in the syntax it was stored in, its data set bytes unchanged.
    let want: HashMap<String, Vec<u8>> = zoo
        .files
        .iter()
        .map(|f| {
            let name = format!("{}.{}", f.sop_instance_uid, f.transfer_syntax_uid);
            (name, data_set_bytes(&zoo.path(f)))
        })
        .collect();
    let study = zoo.study_uids()[0].clone();
    let key = format!("StudyInstanceUID={study}");
    let got_dir = tempfile::tempdir().unwrap();
    let mut get_args = vec!["--out".to_string(), got_dir.path().display().to_string()];
    get_args.extend(zoo_contexts(&zoo, None));
    get_args.extend(["-k".to_string(), key.clone()]);
    let out = text(&server.scu("get", "VIEWER", &get_args));
    assert!(
        final_line(&out).starts_with("FINAL 0x0000 remaining=- completed=6 failed=0"),
        "{out}"
    );
    assert_same_data_sets(&received_by_name(got_dir.path()), &want, "C-GET");
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    assert!(
        final_line(&out).starts_with("FINAL 0x0000 remaining=- completed=6 failed=0"),
        "{out}"
    );
    assert_same_data_sets(&received_by_name(dest_dir.path()), &want, "C-MOVE");

    // The study's computed keys see every series.
    let out = text(&server.scu(
        "find",
        "VIEWER",
        &[
            "-k",
            &key,
            "-k",
            "ModalitiesInStudy=",
            "-k",
            "NumberOfStudyRelatedSeries=",
            "-k",
            "NumberOfStudyRelatedInstances=",
        ],
    ));
    let line = out.lines().find(|l| l.starts_with("MATCH ")).unwrap();
    let found: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
    let mut modalities: Vec<&str> = found["ModalitiesInStudy"]
        .as_str()
        .unwrap()
        .split('\\')
        .collect();
    modalities.sort();
    assert_eq!(
        modalities,
        ["CR", "DX", "OT", "RTSTRUCT", "SR", "US"],
        "{out}"
    );
    assert_eq!(found["NumberOfStudyRelatedSeries"], "6", "{out}");
    assert_eq!(found["NumberOfStudyRelatedInstances"], "6", "{out}");
}

#[test]
fn an_explicit_vr_only_destination_gets_every_zoo_instance_inflated_decoded_or_re_encoded() {
    use dicom_dictionary_std::tags;
    let zoo = zoo();
    let (dest_dir, _dest, server) = zoo_site(&zoo, Some(EXPLICIT));
    let out = text(&server.scu("store", "MODALITY", &zoo.paths()));
    assert_eq!(acknowledged(&out).0.len(), zoo.files.len(), "{out}");
    let key = format!("StudyInstanceUID={}", zoo.study_uids()[0]);
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    assert!(
        final_line(&out).starts_with("FINAL 0x0000 remaining=- completed=6 failed=0"),
        "{out}"
    );
    let got = received_by_name(dest_dir.path());
    for f in &zoo.files {
        let bytes = got
            .get(&format!("{}.{EXPLICIT}", f.sop_instance_uid))
            .unwrap_or_else(|| panic!("{}: not received in Explicit VR", f.modality));
        let sent = read_data_set(bytes, EXPLICIT);
        let original = read_data_set(&data_set_bytes(&zoo.path(f)), &f.transfer_syntax_uid);
        assert_eq!(
            sent.element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            f.sop_instance_uid
        );
        match f.modality.as_str() {
            // Stored in Explicit VR: the stored bytes.
            "CR" | "RTSTRUCT" => assert!(bytes == &data_set_bytes(&zoo.path(f)), "{}", f.modality),
            // Inflated or re-encoded: the same elements.
            "US" | "SR" => assert_same_elements(&sent, &original, &f.modality),
            "DX" => {
                // HTJ2K lossless decoded: the exact pixels, 256x256 of 16 bits.
                assert_eq!(element_bytes(&sent, tags::PIXEL_DATA).len(), 256 * 256 * 2);
                use dicom_pixeldata::PixelDecoder;
                let file = dicom_object::open_file(zoo.path(f)).unwrap();
                let decoded = file.decode_pixel_data().unwrap();
                assert!(
                    element_bytes(&sent, tags::PIXEL_DATA) == decoded.data(),
                    "DX: decoded pixels differ from the HTJ2K original"
                );
            }
            "OT" => {
                // JPEG baseline decoded: RGB pixels, still marked lossy with its method.
                assert_eq!(element_bytes(&sent, tags::PIXEL_DATA).len(), 256 * 256 * 3);
                for (tag, value) in [
                    (tags::LOSSY_IMAGE_COMPRESSION, "01"),
                    (tags::LOSSY_IMAGE_COMPRESSION_METHOD, "ISO_10918_1"),
                    (tags::PHOTOMETRIC_INTERPRETATION, "RGB"),
                ] {
                    assert_eq!(
                        sent.element(tag).unwrap().to_str().unwrap().trim(),
                        value,
                        "SC: {tag}"
                    );
                }
            }
            other => panic!("unexpected zoo modality {other}"),
        }
    }
}

#[test]
fn an_instance_too_large_to_decode_fails_with_the_reason_and_the_rest_are_sent() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let zoo = zoo();
    let (cr, sc) = (&zoo.files[0], &zoo.files[3]);
    assert_eq!((cr.modality.as_str(), sc.modality.as_str()), ("CR", "OT"));
    // The JPEG baseline SC claiming 30000 x 30000 RGB: 2.7 GB once decoded, over the 1 GiB
    // cap, so it must fail before any decoder allocates it.
    let mut big = dicom_object::open_file(zoo.path(sc)).unwrap();
    for tag in [tags::ROWS, tags::COLUMNS] {
        big.put(DataElement::new(
            tag,
            VR::US,
            PrimitiveValue::from(30000_u16),
        ));
    }
    let big_path = zoo.dir.path().join("big.dcm");
    big.write_to_file(&big_path).unwrap();
    let (dest_dir, _dest, server) = zoo_site(&zoo, Some(IMPLICIT));
    let out = text(&server.scu("store", "MODALITY", &[zoo.path(cr), big_path.clone()]));
    assert_eq!(acknowledged(&out).0.len(), 2, "{out}");
    let key = format!("StudyInstanceUID={}", zoo.study_uids()[0]);
    let out = text(&server.scu("move", "VIEWER", &["--dest", "DEST", "-k", &key]));
    assert!(
        final_line(&out).starts_with("FINAL 0xB000 remaining=- completed=1 failed=1"),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAILED_UIDS {}", sc.sop_instance_uid)),
        "{out}"
    );
    let log = server.log_when(|l| l.contains("allowed in memory"));
    assert!(
        log.contains("would take 2700000000 bytes, more than the 1073741824 allowed in memory"),
        "{log}"
    );
    assert_eq!(
        files_below(dest_dir.path()),
        vec![dest_dir
            .path()
            .join(format!("{}.{IMPLICIT}", cr.sop_instance_uid))]
    );
}

#[test]
fn keys_of_the_levels_above_restrict_a_move_and_the_configured_limits_hold() {
    let corpus = corpus("6", "4");
    let uids = corpus.study_uids();
    let (ct, mr) = (&uids[0], &uids[1]);
    let mr_file = corpus
        .files
        .iter()
        .find(|f| &f.study_instance_uid == mr)
        .unwrap();
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    // SILENT takes the connection (the kernel completes it) and never answers the
    // association request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let server = server(
        dest.port,
        &format!(
            "[[dicom.peers]]\naet = \"SILENT\"\nhost = \"127.0.0.1\"\nport = {silent_port}\n\
             [retrieve]\nmax_instances = 5\nconnect_timeout_secs = 1\n"
        ),
    );
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let before = stored_state(&server);
    let moved = |args: &[&str]| -> String {
        let out = text(&server.scu("move", "VIEWER", args));
        final_line(&out).to_string()
    };

    // Patient Root, STUDY level: a PatientID that is not the study's restricts to nothing.
    let study = format!("StudyInstanceUID={mr}");
    let patient = |id: &str| format!("PatientID={id}");
    let patient_root = ["--model", "patient", "--dest", "DEST"];
    let wrong = patient("NOT-THIS-ONE");
    let args: Vec<&str> = patient_root
        .iter()
        .copied()
        .chain(["-k", &wrong, "-k", &study])
        .collect();
    assert_eq!(
        moved(&args),
        "FINAL 0x0000 remaining=- completed=0 failed=0 warning=0"
    );
    assert!(files_below(dest_dir.path()).is_empty());
    let right = patient(&mr_file.patient_id);
    let args: Vec<&str> = patient_root
        .iter()
        .copied()
        .chain(["-k", &right, "-k", &study])
        .collect();
    assert_eq!(
        moved(&args),
        "FINAL 0x0000 remaining=- completed=4 failed=0 warning=0"
    );
    assert_eq!(files_below(dest_dir.path()).len(), 4);

    // Study Root, SERIES level: the MR series under the CT study's UID is no match.
    let series = format!("SeriesInstanceUID={}", mr_file.series_instance_uid);
    let other_study = format!("StudyInstanceUID={ct}");
    assert_eq!(
        moved(&[
            "--level",
            "SERIES",
            "--dest",
            "DEST",
            "-k",
            &other_study,
            "-k",
            &series
        ]),
        "FINAL 0x0000 remaining=- completed=0 failed=0 warning=0"
    );

    // max_instances = 5: the six-instance CT study is refused whole.
    let out = moved(&["--dest", "DEST", "-k", &other_study]);
    assert!(out.starts_with("FINAL 0xA702 "), "{out}");
    assert!(out.contains("more than 5 instances"), "{out}");
    assert_eq!(files_below(dest_dir.path()).len(), 4, "nothing more sent");

    // connect_timeout_secs = 1: a destination that never answers fails every sub-operation
    // after a second (the default would wait ten).
    let started = std::time::Instant::now();
    let out = moved(&["--dest", "SILENT", "-k", &study]);
    assert!(
        out.starts_with("FINAL 0xA702 remaining=- completed=0 failed=4"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "the move waited {:?} for SILENT, not the configured second",
        started.elapsed()
    );
    let log = server.log_when(|l| l.contains("did not answer in time"));
    assert!(
        log.contains("move destination did not answer in time"),
        "{log}"
    );
    drop(silent);
    assert_eq!(stored_state(&server), before);
}

#[test]
fn instances_are_read_ahead_of_the_network_no_further_than_prefetch() {
    let corpus = corpus("8", "1");
    let study = corpus.study_uids()[0].clone();
    let most_ahead = |prefetch: usize| -> usize {
        let server = TestServer::start(&format!("[retrieve]\nprefetch = {prefetch}\n"));
        server.store(&corpus);
        assert_same_data_sets(
            &server.get_study(&study),
            &originals(&corpus, &study),
            "C-GET",
        );
        // One "retrieve read ahead" line per instance, with how many were read ahead then.
        let log = server.log_when(|l| l.matches("retrieve read ahead").count() >= 8);
        let ahead: Vec<usize> = log
            .lines()
            .filter(|l| l.contains("retrieve read ahead"))
            .map(|l| {
                l.split("ahead=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{l}"))
            })
            .collect();
        assert_eq!(ahead.len(), 8, "{log}");
        ahead.into_iter().max().unwrap()
    };
    // The first reads fill the window at once: the most ahead is the configured bound.
    assert_eq!(most_ahead(2), 2);
    assert_eq!(most_ahead(5), 5);
}
