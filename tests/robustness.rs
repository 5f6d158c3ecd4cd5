//! Bad input and limits: every case gets the right rejection or abort, and the server keeps
//! serving afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
use dicom_ul::Pdu;

const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

fn assert_still_serving(server: &TestServer) {
    let (ok, out) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "server stopped serving: {out}\n{}", server.log());
}

fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection; returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
}

fn association_rq(calling: &str, max_pdu: u32) -> Vec<u8> {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: "STRATA".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: VERIFICATION.into(),
            transfer_syntaxes: vec![IMPLICIT_LE.into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(max_pdu)],
    });
    let mut out = Vec::new();
    dicom_ul::write_pdu(&mut out, &rq).unwrap();
    out
}

#[test]
fn wrong_called_ae_and_unknown_caller_are_rejected_with_the_standard_reasons() {
    let server = TestServer::start("");
    let (ok, out) = server.echoscu("VIEWER", "NOT-STRATA");
    assert!(!ok);
    assert!(out.contains("Called AE Title Not Recognized"), "{out}");
    let (ok, out) = server.echoscu("STRANGER", "STRATA");
    assert!(!ok);
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    assert_still_serving(&server);
}

#[test]
fn unknown_callers_are_accepted_when_configured() {
    let server = TestServer::start("accept_unknown_callers = true");
    let (ok, out) = server.echoscu("STRANGER", "STRATA");
    assert!(ok, "{out}");
}

#[test]
fn unknown_sop_class_context_is_rejected_and_storage_classes_accepted() {
    let server = TestServer::start("");
    let out = server.scu(
        "propose",
        "VIEWER",
        &[
            "1.2.3.4.5.6.7",
            "1.2.840.10008.5.1.4.1.1.481.2",
            "1.2.840.10008.5.1.4.1.1.6",
        ],
    );
    let out = text(&out);
    // Reason 3: abstract syntax not supported (PS3.8 9.3.3.2).
    assert!(out.contains("REJECTED 1.2.3.4.5.6.7 3"), "{out}");
    // RT Dose and the retired Ultrasound class are storage classes like any other.
    assert!(
        out.contains("ACCEPTED 1.2.840.10008.5.1.4.1.1.481.2"),
        "{out}"
    );
    assert!(out.contains("ACCEPTED 1.2.840.10008.5.1.4.1.1.6"), "{out}");
    assert!(out.contains("ECHO 0x0000"), "{out}");
}

#[test]
fn peers_may_only_use_the_services_they_are_allowed() {
    let corpus = Corpus::generate(&["--ct-studies", "1", "--ct-images", "1", "--mr-studies", "0"]);
    let server = TestServer::start("");
    let path = corpus.paths().remove(0);
    let out = server.scu("store", "ECHOONLY", &[&path]);
    let (ok, other) = acknowledged(&text(&out));
    assert!(ok.is_empty());
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].0, 0x0124, "Refused: Not Authorized expected");
    assert_eq!(server.instances(), 0);
    let (ok, _) = server.echoscu("ECHOONLY", "STRATA");
    assert!(ok);
}

#[test]
fn garbage_bytes_are_dropped_and_server_keeps_serving() {
    let server = TestServer::start("");
    let mut stream = connect(&server);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut stream);
    // Either nothing or an A-ABORT/A-ASSOCIATE-RJ PDU, never a DICOM acceptance.
    assert!(
        got.is_empty() || got[0] == 0x07 || got[0] == 0x03,
        "{got:?}"
    );
    assert_still_serving(&server);
}

#[test]
fn truncated_association_request_times_out_under_artim() {
    let server = TestServer::start("");
    let rq = association_rq("VIEWER", 16384);
    let mut stream = connect(&server);
    stream.write_all(&rq[..20]).unwrap();
    let started = Instant::now();
    read_to_close(&mut stream);
    // ARTIM is 3 s in the test config.
    assert!(started.elapsed() < Duration::from_secs(10));
    // The socket closes as the timer fires; the log line follows a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("ARTIM expired") {
        assert!(
            Instant::now() < deadline,
            "no ARTIM log line: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A truncated request followed by a close is also harmless.
    let mut stream = connect(&server);
    stream.write_all(&rq[..7]).unwrap();
    drop(stream);
    assert_still_serving(&server);
}

#[test]
fn pdu_larger_than_negotiated_aborts_the_association() {
    let server = TestServer::start("max_pdu_length = 16384");
    let mut stream = connect(&server);
    stream.write_all(&association_rq("VIEWER", 16384)).unwrap();
    let mut header = [0u8; 6];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x02, "expected A-ASSOCIATE-AC");
    let len = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();

    // A P-DATA-TF claiming 20000 bytes, more than the 16384 we advertised.
    let mut pdu = vec![0x04, 0x00];
    pdu.extend_from_slice(&20_000u32.to_be_bytes());
    pdu.extend_from_slice(&vec![0u8; 20_000]);
    let _ = stream.write_all(&pdu);
    let got = read_to_close(&mut stream);
    assert_eq!(got.first(), Some(&0x07), "expected A-ABORT, got {got:?}");
    assert_still_serving(&server);
}

#[test]
fn unparseable_data_set_is_refused_and_nothing_is_stored() {
    let corpus = Corpus::generate(&["--ct-studies", "1", "--ct-images", "1", "--mr-studies", "0"]);
    let server = TestServer::start("");
    // Keep the file meta and the SOP Class/Instance UID elements (clients read them to build
    // the command), then an element whose length runs past the end, then noise.
    let good = std::fs::read(corpus.paths().remove(0)).unwrap();
    let group_len = u32::from_le_bytes(good[140..144].try_into().unwrap()) as usize;
    let data_set = 144 + group_len;
    let sop_instance = good[data_set..]
        .windows(6)
        .position(|w| w == [0x08, 0x00, 0x18, 0x00, b'U', b'I'])
        .unwrap()
        + data_set;
    let end = sop_instance
        + 8
        + u16::from_le_bytes([good[sop_instance + 6], good[sop_instance + 7]]) as usize;
    let mut bad = good[..end].to_vec();
    bad.extend_from_slice(&[0x08, 0x00, 0x20, 0x00, b'D', b'A', 0xF0, 0xFF]);
    bad.extend((0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let path = corpus.dir.path().join("bad.dcm");
    std::fs::write(&path, bad).unwrap();

    let out = server.scu("store", "VIEWER", &[&path]);
    let (ok, other) = acknowledged(&text(&out));
    assert!(ok.is_empty(), "{}", text(&out));
    assert_eq!(other.len(), 1, "{}", text(&out));
    // README: unparseable data, 0xC000 (Error: Cannot Understand).
    let code = other[0].0;
    assert_eq!(
        code,
        0xC000,
        "status 0x{code:04X}: {}\n{}",
        text(&out),
        server.log()
    );
    assert_eq!(server.instances(), 0);
    assert!(
        files_below(&server.online_dir()).is_empty(),
        "partial files left"
    );
    assert_still_serving(&server);
}

#[test]
fn association_limit_rejects_with_local_limit_exceeded() {
    let server = TestServer::start("max_associations = 2");
    let open = || {
        dicom_ul::ClientAssociationOptions::new()
            .with_abstract_syntax(VERIFICATION)
            .calling_ae_title("VIEWER")
            .called_ae_title("STRATA")
            .establish(format!("127.0.0.1:{}", server.port))
    };
    let first = open().expect("first association");
    let second = open().expect("second association");
    let third = open();
    let err = format!(
        "{:?}",
        third.expect_err("third association must be rejected")
    );
    assert!(err.contains("LocalLimitExceeded"), "{err}");
    drop(first);
    drop(second);
    // Slots free up once associations end.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, out) = server.echoscu("VIEWER", "STRATA");
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn abort_in_the_middle_of_a_data_set_leaves_nothing_behind() {
    use strata::net::command::{CommandField, CommandSet};

    // A 2 MiB instance: the server writes the first MiB to its temporary before the end.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.dcm");
    let made = std::process::Command::new(python())
        .arg(repo().join("tools/big_instance.py"))
        .args(["make"])
        .arg(&path)
        .args(["--mb", "2"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let sop_instance_uid = text(&made).split_whitespace().next().unwrap().to_string();
    let server = TestServer::start("");
    let data_set = data_set_bytes(&path);
    let (mut assoc, context) = ct_association(&server, Duration::from_secs(30));
    let command = CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE)
        .with_data_set(&sop_instance_uid)
        .encode();
    assoc.send(&pdata(context, true, true, command)).unwrap();
    // Three quarters of the data set, then A-ABORT.
    for chunk in data_set[..data_set.len() * 3 / 4].chunks(16_000) {
        assoc
            .send(&pdata(context, false, false, chunk.to_vec()))
            .unwrap();
    }
    // Wait for the evidence (the partial file in tmp/), not for a fixed time.
    let tmp = server.online_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the partial instance never reached tmp/"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the partial instance streams to tmp/"
    );
    assoc.abort().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&tmp).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "partial file left after A-ABORT");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.instances(), 0);
    assert_still_serving(&server);
}

/// Sends one request with a data set on a raw association; returns the final status code.
fn raw_request(
    server: &TestServer,
    abstract_syntax: &str,
    command: Vec<u8>,
    data_set: Vec<u8>,
) -> u16 {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use strata::net::command::CommandSet;
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .with_presentation_context(abstract_syntax, vec!["1.2.840.10008.1.2.1"])
        .calling_ae_title("VIEWER")
        .called_ae_title("STRATA")
        .establish(format!("127.0.0.1:{}", server.port))
        .unwrap();
    let context = assoc.presentation_contexts()[0].id;
    let pdv = |value_type, data| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context,
            value_type,
            is_last: true,
            data,
        }],
    };
    assoc.send(&pdv(PDataValueType::Command, command)).unwrap();
    assoc.send(&pdv(PDataValueType::Data, data_set)).unwrap();
    loop {
        match assoc.receive().expect("the server must answer, not die") {
            Pdu::PData { data } => {
                for value in data {
                    if value.value_type == PDataValueType::Command {
                        let status = CommandSet::decode(&value.data)
                            .unwrap()
                            .status_code()
                            .unwrap();
                        if status != 0xFF00 && status != 0xFF01 {
                            let _ = assoc.release();
                            return status;
                        }
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `levels` nested (0008,1115) sequences of undefined length, each with one item.
fn nested_sequences(levels: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..levels {
        out.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..levels {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    out
}

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// A CT data set in Explicit VR Little Endian: SOP Class, `sop_instance`, a Patient ID,
/// `study` (left out when `None`), a series, then `rest` (elements above group 0020, in
/// order).
fn ct_data_set(sop_instance: &[u8], study: Option<&[u8]>, rest: &[u8]) -> Vec<u8> {
    let mut out = explicit_element((0x0008, 0x0016), b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    out.extend(explicit_element((0x0008, 0x0018), b"UI", sop_instance));
    out.extend(explicit_element((0x0010, 0x0020), b"LO", b"RAW1"));
    if let Some(study) = study {
        out.extend(explicit_element((0x0020, 0x000D), b"UI", study));
    }
    out.extend(explicit_element((0x0020, 0x000E), b"UI", b"1.2.3.4.7\0"));
    out.extend_from_slice(rest);
    out
}

/// One C-STORE-RQ of `data` as CT instance `uid` (the command's Affected SOP Instance UID)
/// on a new association; the response status.
fn store_ct(server: &TestServer, message_id: u16, uid: &str, data: Vec<u8>) -> u16 {
    use strata::net::command::{CommandField, CommandSet};
    let command = CommandSet::request(CommandField::CStoreRq, message_id, CT_IMAGE)
        .with_data_set(uid)
        .encode();
    raw_request(server, CT_IMAGE, command, data)
}

#[test]
fn deeply_nested_sequences_are_refused_without_killing_the_server() {
    use strata::net::command::{CommandField, CommandSet};
    let server = TestServer::start("");
    let ct = "1.2.840.10008.5.1.4.1.1.2";

    // C-STORE: valid SOP Class/Instance UIDs, then 4000 levels of nesting.
    let mut data_set = explicit_element((0x0008, 0x0016), b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    data_set.extend(explicit_element((0x0008, 0x0018), b"UI", b"1.2.3.4.5.6"));
    data_set.extend(nested_sequences(4000));
    let command = CommandSet::request(CommandField::CStoreRq, 1, ct)
        .with_data_set("1.2.3.4.5.6")
        .encode();
    let status = raw_request(&server, ct, command, data_set);
    assert_eq!(status, 0xC000, "status 0x{status:04X}");
    assert_eq!(server.instances(), 0);

    // C-FIND: the same nesting in an identifier.
    let find = "1.2.840.10008.5.1.4.1.2.2.1";
    let mut identifier = explicit_element((0x0008, 0x0052), b"CS", b"STUDY ");
    identifier.extend(nested_sequences(4000));
    let mut command = CommandSet::request(CommandField::CFindRq, 2, find);
    command = command.with_data_set("");
    let status = raw_request(&server, find, command.encode(), identifier);
    assert_eq!(status, 0xC000, "status 0x{status:04X}");
    assert_still_serving(&server);
}

/// The nesting limit at its edge: 32 levels are parsed (the data set is then judged on its
/// content: no Study Instance UID, 0xA900), 33 are refused unparsed (0xC000); the same for a
/// C-FIND identifier (32 levels run the query).
#[test]
fn nesting_is_allowed_to_32_levels_and_refused_at_33() {
    use strata::net::command::{CommandField, CommandSet};
    let server = TestServer::start("");
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let find = "1.2.840.10008.5.1.4.1.2.2.1";
    for (levels, store_status, find_ok) in [(32, 0xA900, true), (33, 0xC000, false)] {
        let mut data_set =
            explicit_element((0x0008, 0x0016), b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
        data_set.extend(explicit_element((0x0008, 0x0018), b"UI", b"1.2.3.4.5.6"));
        data_set.extend(nested_sequences(levels));
        let command = CommandSet::request(CommandField::CStoreRq, 1, ct)
            .with_data_set("1.2.3.4.5.6")
            .encode();
        let status = raw_request(&server, ct, command, data_set);
        assert_eq!(status, store_status, "{levels} levels: 0x{status:04X}");

        let mut identifier = explicit_element((0x0008, 0x0052), b"CS", b"STUDY ");
        identifier.extend(nested_sequences(levels));
        let command = CommandSet::request(CommandField::CFindRq, 2, find).with_data_set("");
        let status = raw_request(&server, find, command.encode(), identifier);
        if find_ok {
            assert_eq!(status, 0x0000, "{levels} levels: 0x{status:04X}");
        } else {
            assert_eq!(status, 0xC000, "{levels} levels: 0x{status:04X}");
        }
    }
    assert_eq!(server.instances(), 0);
    assert_still_serving(&server);
}

/// A C-STORE data set without a required UID, with a value that is not a UID (a path, 65
/// characters), or whose SOP Instance UID is not the one its command names, is refused with
/// 0xA900 and a comment saying which; the same data set made whole and consistent is stored
/// (so each refusal is for the defect shown), and so is one with a leading-zero component
/// (old modalities), with a warning.
#[test]
fn missing_or_invalid_uids_and_a_data_set_that_contradicts_its_command_get_a900() {
    let server = TestServer::start("");
    let data_set =
        |sop_instance: &[u8], study: Option<&[u8]>| ct_data_set(sop_instance, study, &[]);
    let store = |message_id, command_uid: &str, data: Vec<u8>| {
        store_ct(&server, message_id, command_uid, data)
    };
    let status = store(1, "1.2.3.4.5.6", data_set(b"1.2.3.4.5.6", None));
    assert_eq!(status, 0xA900, "no StudyInstanceUID: 0x{status:04X}");
    let log = server.log_when(|l| l.contains("StudyInstanceUID is missing"));
    assert!(log.contains("StudyInstanceUID is missing"), "{log}");

    let status = store(
        2,
        "1.2.3.4.5.6",
        data_set(b"1.2.3.4.5.8", Some(b"1.2.3.4.6\0")),
    );
    assert_eq!(
        status, 0xA900,
        "UID differs from the command: 0x{status:04X}"
    );
    let log = server.log_when(|l| l.contains("differ from the command"));
    assert!(log.contains("differ from the command"), "{log}");
    let too_long = format!("1.{}\0", "2".repeat(63));
    for (message_id, study) in [
        (4, b"../../../../tmp/evil-study".as_slice()),
        (5, too_long.as_bytes()),
    ] {
        let status = store(
            message_id,
            "1.2.3.4.5.6",
            data_set(b"1.2.3.4.5.6", Some(study)),
        );
        assert_eq!(status, 0xA900, "not a UID: 0x{status:04X}");
    }
    let log = server.log_when(|l| l.contains("65 characters long"));
    assert!(
        log.contains("../../../../tmp/evil-study")
            && log.contains("is not a valid UID (PS3.5 9.1): it holds '/'"),
        "{log}"
    );
    assert!(log.contains("65 characters long"), "{log}");
    assert_eq!(server.instances(), 0);

    let status = store(
        3,
        "1.2.3.4.5.6",
        data_set(b"1.2.3.4.5.6", Some(b"1.2.3.4.6\0")),
    );
    assert_eq!(status, 0x0000, "the consistent data set: 0x{status:04X}");
    assert_eq!(server.instances(), 1);
    let status = store(
        6,
        "1.2.3.4.5.9",
        data_set(b"1.2.3.4.5.9", Some(b"1.02.3.4")),
    );
    assert_eq!(status, 0x0000, "a leading zero: 0x{status:04X}");
    let log = server.log_when(|l| l.contains("UID with a leading zero"));
    assert!(log.contains("UID with a leading zero"), "{log}");
    assert_eq!(server.instances(), 2);
}

#[test]
fn an_idle_association_is_aborted_after_idle_timeout_secs() {
    // 1 s instead of the default 300: an association that sends nothing is aborted well
    // before the client's 20 s read timeout.
    let server = TestServer::start("idle_timeout_secs = 1\n");
    let (mut assoc, _) = ct_association(&server, Duration::from_secs(20));
    match assoc.receive() {
        Ok(Pdu::AbortRQ { .. }) => {}
        other => panic!("expected A-ABORT for the idle association, got {other:?}"),
    }
    let log = server.log_when(|l| l.contains("idle timeout"));
    assert!(log.contains("reason=idle timeout"), "{log}");
    assert_still_serving(&server);
}

#[test]
fn a_message_stalled_midway_is_aborted_after_dimse_timeout_secs() {
    use strata::net::command::{CommandField, CommandSet};
    // 1 s instead of the 10 s the other tests use (60 by default); idle is long, so only the
    // DIMSE timeout can end this within the client's 5 s read timeout.
    let server = TestServer::start("dimse_timeout_secs = 1\nidle_timeout_secs = 600\n");
    let (mut assoc, context) = ct_association(&server, Duration::from_secs(5));
    let command = CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE)
        .with_data_set("1.2.3.4")
        .encode();
    assoc.send(&pdata(context, true, true, command)).unwrap();
    assoc
        .send(&pdata(context, false, false, vec![0x08, 0x00, 0x05, 0x00]))
        .unwrap();
    match assoc.receive() {
        Ok(Pdu::AbortRQ { .. }) => {}
        other => panic!("expected A-ABORT for the stalled message, got {other:?}"),
    }
    let log = server.log_when(|l| l.contains("DIMSE timeout"));
    assert!(log.contains("reason=DIMSE timeout"), "{log}");
    assert_eq!(server.instances(), 0);
    assert_still_serving(&server);
}

/// A data set whose last element is shorter than its declared length (a transfer cut short)
/// is refused with 0xC000 naming the element, and nothing is stored, though everything the
/// index needs arrived; the same data set whole is stored.
#[test]
fn a_data_set_ending_inside_its_pixel_data_is_refused() {
    let server = TestServer::start("");
    let data_set = |sop_instance: &[u8], pixels: usize| {
        // (7FE0,0010) OW declaring 4096 bytes.
        let mut rest = b"\xe0\x7f\x10\x00OW\0\0\x00\x10\x00\x00".to_vec();
        rest.extend(vec![0x11u8; pixels]);
        ct_data_set(sop_instance, Some(b"1.2.3.4.6\0"), &rest)
    };
    let store = |message_id, uid: &str, data: Vec<u8>| store_ct(&server, message_id, uid, data);
    let status = store(1, "1.2.3.4.5.1", data_set(b"1.2.3.4.5.1\0", 4000));
    assert_eq!(status, 0xC000, "cut short: 0x{status:04X}");
    let log = server.log_when(|l| l.contains("4000 of its 4096 bytes"));
    assert!(
        log.contains("data set truncated in (7FE0,0010): 4000 of its 4096 bytes arrived"),
        "{log}"
    );
    assert_eq!(server.instances(), 0);
    let status = store(2, "1.2.3.4.5.1", data_set(b"1.2.3.4.5.1\0", 4096));
    assert_eq!(status, 0x0000, "whole: 0x{status:04X}");
    assert_eq!(server.instances(), 1);
    assert_still_serving(&server);
}

/// Native Pixel Data shorter than Rows x Columns x Samples x Bits Allocated x Frames needs
/// (a whole element, a broken image) is refused with 0xC000 saying both numbers.
#[test]
fn pixel_data_shorter_than_the_image_needs_is_refused() {
    let server = TestServer::start("");
    let data_set = |sop_instance: &[u8], pixels: u32| {
        let us = |tag, v: u16| explicit_element(tag, b"US", &v.to_le_bytes());
        let mut rest = us((0x0028, 0x0002), 1);
        rest.extend(us((0x0028, 0x0010), 64));
        rest.extend(us((0x0028, 0x0011), 64));
        rest.extend(us((0x0028, 0x0100), 16));
        rest.extend(b"\xe0\x7f\x10\x00OW\0\0");
        rest.extend(pixels.to_le_bytes());
        rest.extend(vec![0x22u8; pixels as usize]);
        ct_data_set(sop_instance, Some(b"1.2.3.4.6\0"), &rest)
    };
    let store = |message_id, uid: &str, data: Vec<u8>| store_ct(&server, message_id, uid, data);
    let status = store(1, "1.2.3.4.5.2", data_set(b"1.2.3.4.5.2\0", 4096));
    assert_eq!(status, 0xC000, "half an image: 0x{status:04X}");
    let log = server.log_when(|l| l.contains("Pixel Data holds 4096 bytes"));
    assert!(
        log.contains("Pixel Data holds 4096 bytes; 64 rows x 64 columns x 1 samples x 16 bits x 1 frames need 8192"),
        "{log}"
    );
    assert_eq!(server.instances(), 0);
    let status = store(2, "1.2.3.4.5.2", data_set(b"1.2.3.4.5.2\0", 8192));
    assert_eq!(status, 0x0000, "the whole image: 0x{status:04X}");
    assert_eq!(server.instances(), 1);

    // YBR_FULL_422 holds two samples per pixel though it declares three: 64 x 64 x 2 bytes
    // of 8-bit samples is whole.
    let cs = |tag, v: &[u8]| explicit_element(tag, b"CS", v);
    let us = |tag, v: u16| explicit_element(tag, b"US", &v.to_le_bytes());
    let mut rest = us((0x0028, 0x0002), 3);
    rest.extend(cs((0x0028, 0x0004), b"YBR_FULL_422"));
    rest.extend(us((0x0028, 0x0010), 64));
    rest.extend(us((0x0028, 0x0011), 64));
    rest.extend(us((0x0028, 0x0100), 8));
    rest.extend(b"\xe0\x7f\x10\x00OB\0\0");
    rest.extend(8192u32.to_le_bytes());
    rest.extend(vec![0x80u8; 8192]);
    let ycbcr = ct_data_set(b"1.2.3.4.5.3\0", Some(b"1.2.3.4.6\0"), &rest);
    let status = store(3, "1.2.3.4.5.3", ycbcr);
    assert_eq!(status, 0x0000, "YBR_FULL_422: 0x{status:04X}");
    assert_eq!(server.instances(), 2);
}
