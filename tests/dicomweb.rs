//! DICOMweb (QIDO-RS, WADO-RS) against the real server: dicomweb-client drives every
//! endpoint and compares the answers with what was stored (tools/dicomweb_check.py), and
//! plain HTTP requests check the error answers and a client that disconnects mid-response.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const VIEWER: (&str, &str) = ("viewer", "viewer pass");
const FINDER: (&str, &str) = ("finder", "finder pass");

/// A server with an HTTP listener and two users: VIEWER may find, get and store, FINDER
/// only find; `extra` goes into `[web]`.
fn web_server(dir: &std::path::Path, extra: &str) -> TestServer {
    let web = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\n{extra}\n\
         [[web.users]]\nname = \"{}\"\npassword_hash = \"{}\"\nallow = [\"find\", \"get\", \"store\"]\n\
         [[web.users]]\nname = \"{}\"\npassword_hash = \"{}\"\nallow = [\"find\"]\n",
        VIEWER.0,
        password_hash(VIEWER.1),
        FINDER.0,
        password_hash(FINDER.1)
    );
    let server = TestServer::start_in(dir, "", &web);
    assert!(server.web_port.is_some());
    server
}

const BOUNDARY: &str = "test-boundary-0a1b";

/// A multipart/related body of these Part-10 files, bytes as they are.
fn multipart(files: &[PathBuf]) -> Vec<u8> {
    let mut body = Vec::new();
    for file in files {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(file).unwrap());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `body` in chunked transfer coding, 64 KiB a chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(65536) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The head of a STOW-RS POST to /dicom-web/studies as `authorization`.
fn stow_head(port: u16, authorization: &str, length: Option<usize>) -> String {
    let framing = match length {
        Some(length) => format!("Content-Length: {length}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Authorization: {authorization}\r\n{framing}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}\r\n"
    )
}

/// Waits up to 10 s for the online tier's temporaries to be gone; true when they are.
fn no_temporaries(server: &TestServer) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = files_below(&server.online_dir().join("tmp"));
        if left.is_empty() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("temporaries left: {left:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dicomweb_client_finds_and_retrieves_what_was_stored_online_and_archived() {
    let corpus = Corpus::small(2, 3, 2, 2, 21);
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(dir.path(), "");
    // The first study goes to the archive tier; the others stay online.
    let archived = corpus.study_uids()[0].clone();
    let out = server.storescu("MODALITY", &corpus.study_paths(&archived));
    assert!(out.status.success(), "{}", text(&out));
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server
        .locate(&archived)
        .iter()
        .all(|l| l["tier"] == "archive"));
    let rest: Vec<PathBuf> = corpus
        .files
        .iter()
        .filter(|f| f.study_instance_uid != archived)
        .map(|f| corpus.path(f))
        .collect();
    let out = server.storescu("MODALITY", &rest);
    assert!(out.status.success(), "{}", text(&out));

    let sent_by_stow = Corpus::small(1, 3, 1, 2, 23);
    let out = Command::new(python())
        .arg(repo().join("tools/dicomweb_check.py"))
        .arg("--stow")
        .arg(sent_by_stow.dir.path())
        .args([
            "--url",
            &format!("http://127.0.0.1:{}/dicom-web", server.web_port.unwrap()),
        ])
        .args([
            "--user",
            VIEWER.0,
            "--password",
            VIEWER.1,
            "--archived",
            &archived,
        ])
        .arg("--corpus")
        .arg(corpus.dir.path())
        .output()
        .unwrap();
    let log = text(&out);
    eprintln!("{log}");
    assert!(out.status.success(), "{log}\n{}", server.log());
    assert!(log.contains("checks passed"), "{log}");
}

#[test]
fn http_errors_are_answered_with_their_status_and_the_server_keeps_serving() {
    let corpus = Corpus::small(1, 3, 0, 0, 22);
    let dir = tempfile::tempdir().unwrap();
    // A script's user: a bearer token from `strata new-token`, no password.
    let (token, sha256) = new_token();
    let server = web_server(
        dir.path(),
        &format!(
            "max_upload_mb = 1\n[[web.users]]\nname = \"pipeline\"\n\
             token_sha256 = [\"{sha256}\"]\nallow = [\"find\"]"
        ),
    );
    server.store(&corpus);
    let port = server.web_port.unwrap();
    let study = corpus.study_uids()[0].clone();
    let viewer = basic(VIEWER);
    let as_viewer = [("Authorization", viewer.as_str())];

    // 401: no credentials, a wrong password, an unknown scheme; the challenge names Basic.
    let (status, head, _) = http_get(port, "/dicom-web/studies", &[]);
    assert_eq!(status, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: basic"),
        "{head}"
    );
    let wrong = basic((VIEWER.0, "not the password"));
    assert_eq!(
        http_get(port, "/dicom-web/studies", &[("Authorization", &wrong)]).0,
        401
    );
    let (status, head, _) = http_get(
        port,
        "/dicom-web/studies",
        &[("Authorization", "Bearer strata_not-a-token")],
    );
    assert_eq!(status, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let digest = [("Authorization", "Digest abc")];
    assert_eq!(http_get(port, "/dicom-web/studies", &digest).0, 401);
    // The token's user may search (its verb), not retrieve.
    let bearer = format!("Bearer {token}");
    let as_pipeline = [("Authorization", bearer.as_str())];
    let (status, _, body) = http_get(port, "/dicom-web/studies", &as_pipeline);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(&study));
    assert_eq!(
        http_get(port, &format!("/dicom-web/studies/{study}"), &as_pipeline).0,
        403
    );

    // 403: FINDER may search but not retrieve.
    let finder = basic(FINDER);
    let as_finder = [("Authorization", finder.as_str())];
    assert_eq!(http_get(port, "/dicom-web/studies", &as_finder).0, 200);
    let path = format!("/dicom-web/studies/{study}");
    assert_eq!(http_get(port, &path, &as_finder).0, 403);

    // 400: a bad UID in the path, an unknown query key, a bad range.
    let (status, _, body) = http_get(port, "/dicom-web/studies/1.2.x/series", &as_viewer);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        http_get(port, "/dicom-web/studies?NoSuchKey=1", &as_viewer).0,
        400
    );
    assert_eq!(
        http_get(port, "/dicom-web/studies?limit=-1", &as_viewer).0,
        400
    );

    // 404: nothing stored under that UID.
    assert_eq!(
        http_get(port, "/dicom-web/studies/1.2.3.4.5", &as_viewer).0,
        404
    );

    // 406: an Accept header naming nothing the server can send.
    let png = [as_viewer[0], ("Accept", "image/png")];
    assert_eq!(http_get(port, &path, &png).0, 406);
    let xml = [as_viewer[0], ("Accept", "application/xml")];
    assert_eq!(http_get(port, "/dicom-web/studies", &xml).0, 406);
    let jpeg_ls = [
        as_viewer[0],
        (
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.80",
        ),
    ];
    assert_eq!(http_get(port, &path, &jpeg_ls).0, 406);

    // Rendered images: 403 without `get`, 406 for a media type other than JPEG and PNG,
    // 400 for a bad window or several frames, 404 for a frame the instance lacks.
    let file = &corpus.files[0];
    let instance = format!(
        "/dicom-web/studies/{study}/series/{}/instances/{}",
        file.series_instance_uid, file.sop_instance_uid
    );
    let thumbnail = format!("/dicom-web/studies/{study}/thumbnail");
    assert_eq!(http_get(port, &thumbnail, &as_finder).0, 403);
    let (status, head, _) = http_get(port, &thumbnail, &as_viewer);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    let gif = [as_viewer[0], ("Accept", "image/gif")];
    assert_eq!(http_get(port, &format!("{instance}/rendered"), &gif).0, 406);
    for bad in [
        "rendered?window=40",
        "frames/1,2/rendered",
        "rendered?viewport=9999,1",
    ] {
        let (status, _, body) = http_get(port, &format!("{instance}/{bad}"), &as_viewer);
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        http_get(port, &format!("{instance}/frames/2/rendered"), &as_viewer).0,
        404
    );
    // A study's /rendered: 403 without `get`, 406 for GIF, 404 for a study not stored.
    let study_rendered = format!("/dicom-web/studies/{study}/rendered");
    assert_eq!(http_get(port, &study_rendered, &as_finder).0, 403);
    assert_eq!(http_get(port, &study_rendered, &gif).0, 406);
    let (status, head, _) = http_get(port, &study_rendered, &as_viewer);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: multipart/related; type=\"image/jpeg\""),
        "{head}"
    );
    assert_eq!(
        http_get(port, "/dicom-web/studies/1.2.3.999/rendered", &as_viewer).0,
        404
    );

    // fuzzymatching is said to be unsupported in a Warning header, and literal matching done.
    let (status, head, _) = http_get(port, "/dicom-web/studies?fuzzymatching=true", &as_viewer);
    assert_eq!(status, 200);
    assert!(
        head.contains("fuzzymatching parameter is not supported"),
        "{head}"
    );

    // Clients that hang up part-way through a study leave the server serving.
    for _ in 0..5 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {viewer}\r\n\
             Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 4096];
        let n = stream.read(&mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    }
    let (status, _, body) = http_get(port, &path, &as_viewer);
    assert_eq!(status, 200);
    let originals = corpus.study_paths(&study);
    // Every instance of the study is in the body (chunked, so only a containment check).
    for original in &originals {
        let data_set = data_set_bytes(original);
        let tail = &data_set[data_set.len() - 64..];
        assert!(
            body.windows(64).any(|w| w == tail),
            "{} missing",
            original.display()
        );
    }
    assert!(server.log().contains("web_addr"));
}

#[test]
fn stow_rs_bodies_that_cannot_be_stored_leave_nothing() {
    // max_upload_mb = 1: one CT slice (about 0.5 MiB) fits, three do not.
    let corpus = Corpus::small(1, 3, 0, 0, 24);
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(dir.path(), "max_upload_mb = 1");
    let port = server.web_port.unwrap();
    let viewer = basic(VIEWER);
    let paths = corpus.paths();
    let three = multipart(&paths);
    assert!(three.len() > 1 << 20);

    // FINDER may not store; a body that is not multipart/related of application/dicom: 415.
    let (status, _, _) = http(
        port,
        &stow_head(port, &basic(FINDER), Some(three.len())),
        &three,
    );
    assert_eq!(status, 403);
    let head = stow_head(port, &viewer, Some(4)).replace("multipart/related", "application/json");
    assert_eq!(http(port, &head, b"{}\r\n").0, 415);

    // Over max_upload_mb, declared up front or found while a chunked body streams: 413.
    let (status, _, body) = http(port, &stow_head(port, &viewer, Some(three.len())), &three);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(port, &stow_head(port, &viewer, None), &chunked(&three));
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("nothing stored"));

    // A client that hangs up in the middle of its second instance.
    let two = multipart(&paths[..2]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(format!("{}\r\n", stow_head(port, &viewer, None)).as_bytes())
        .unwrap();
    let sent = chunked(&two[..two.len() * 3 / 4]);
    stream.write_all(&sent[..sent.len() - 5]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);

    assert!(no_temporaries(&server));
    assert_eq!(
        server.instances(),
        0,
        "nothing of the refused bodies is stored"
    );

    // And one that fits is stored whole and acknowledged only then.
    let one = multipart(&paths[..1]);
    let (status, _, body) = http(port, &stow_head(port, &viewer, None), &chunked(&one));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.instances(), 1);
    assert!(no_temporaries(&server));
}

#[test]
fn stow_rs_acknowledged_instances_survive_kill_9() {
    let corpus = Corpus::small(1, 4, 0, 0, 25);
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(dir.path(), "");
    let port = server.web_port.unwrap();
    let body = multipart(&corpus.paths());
    let (status, _, answer) = http(
        port,
        &stow_head(port, &basic(VIEWER), Some(body.len())),
        &body,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // The answer came: every instance is durable. Nothing gets a chance to flush now.
    server.kill9();
    let server = TestServer::start_in(dir.path(), "", "");
    assert_eq!(server.instances(), 4);
    let study = corpus.study_uids()[0].clone();
    assert_same_data_sets(
        &server.get_study(&study),
        &originals(&corpus, &study),
        "after kill -9",
    );
    // A web user has no AE title: the files name ours as their Source AE Title.
    let mut files = Vec::new();
    let mut folders = vec![dir.path().join("online")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "dcm") {
                files.push(path);
            }
        }
    }
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files {
        assert_eq!(
            source_ae(&std::fs::read(&file).unwrap()),
            "STRATA",
            "{file:?}"
        );
    }
}

/// The Source AE Title (0002,0016) of a Part-10 file's meta (explicit VR little endian).
fn source_ae(part10: &[u8]) -> String {
    let mut at = 132;
    while at + 8 <= part10.len() && part10[at..at + 2] == [2, 0] {
        let element = u16::from_le_bytes([part10[at + 2], part10[at + 3]]);
        let vr = &part10[at + 4..at + 6];
        let (length, value) = if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let n = u32::from_le_bytes(part10[at + 8..at + 12].try_into().unwrap()) as usize;
            (n, at + 12)
        } else {
            (
                u16::from_le_bytes([part10[at + 6], part10[at + 7]]) as usize,
                at + 8,
            )
        };
        if element == 0x0016 {
            return String::from_utf8_lossy(&part10[value..value + length])
                .trim_end_matches([' ', '\0'])
                .to_string();
        }
        at = value + length;
    }
    String::new()
}

#[test]
fn metadata_of_an_instance_stored_without_it_is_described_once_from_its_file() {
    let corpus = Corpus::small(1, 2, 0, 0, 31);
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(dir.path(), "");
    // A corpus instance with a 100 kB private value before Pixel Data: its header is longer
    // than what ingest parses in one go, so it is stored without metadata, as instances
    // stored before metadata was kept are.
    let long = dir.path().join("long-header.dcm");
    let script = "import sys\nfrom pydicom import dcmread\n\
                  ds = dcmread(sys.argv[1])\n\
                  ds.private_block(0x0029, 'STRATA TEST', create=True).add_new(0x10, 'OB', bytes(100000))\n\
                  from pydicom.uid import generate_uid; ds.SOPInstanceUID = generate_uid()\n\
                  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
                  ds.save_as(sys.argv[2])\nprint(ds.SOPInstanceUID)\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(corpus.path(&corpus.files[0]))
        .arg(&long)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let long_uid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut files = corpus.paths();
    files.push(long.clone());
    let out = server.storescu("MODALITY", &files);
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());

    let study = corpus.study_uids()[0].clone();
    let port = server.web_port.unwrap();
    let path = format!("/dicom-web/studies/{study}/metadata");
    let auth = basic(VIEWER);
    let described = |server: &TestServer| {
        server
            .log()
            .matches("described an instance stored without metadata")
            .count()
    };
    for round in 0..2 {
        let (status, head, body) = http_get(port, &path, &[("Authorization", &auth)]);
        assert_eq!(status, 200, "{head}");
        let body = String::from_utf8(body).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
        let instances = json.as_array().unwrap();
        assert_eq!(instances.len(), corpus.files.len() + 1);
        let described_one = instances
            .iter()
            .find(|i| i["00080018"]["Value"][0] == long_uid.as_str())
            .expect("the long-header instance");
        assert_eq!(
            described_one["00280010"]["Value"][0], 512,
            "Rows, round {round}"
        );
        assert!(
            described_one["00291010"]["BulkDataURI"]
                .as_str()
                .is_some_and(|uri| uri.ends_with("/bulkdata/00291010")),
            "{described_one}"
        );
        assert_eq!(
            described_one["00100020"]["Value"][0].as_str(),
            Some(corpus.files[0].patient_id.as_str())
        );
        assert!(!head.to_ascii_lowercase().contains("warning:"), "{head}");
        // Described from its file the first time only: then the locator answers.
        assert_eq!(described(&server), 1, "round {round}");
    }
}

/// When a connection's peer closes it (the read ends), seen from a thread of its own.
fn closed_at(stream: &TcpStream) -> std::thread::JoinHandle<std::time::Instant> {
    let mut stream = stream.try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        std::time::Instant::now()
    })
}

#[test]
fn connections_are_bounded_and_one_that_never_completes_its_request_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(
        dir.path(),
        "max_connections = 2\nheader_timeout_secs = 2\nidle_timeout_secs = 3",
    );
    let port = server.web_port.unwrap();
    let started = std::time::Instant::now();
    // Both connections the server allows: one silent, one trickling its request head.
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut trickling = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let silent_closed = closed_at(&silent);
    let trickling_closed = closed_at(&trickling);
    std::thread::spawn(move || {
        for byte in b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n" {
            if trickling.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    // A third client waits for a slot, and gets one once the head timeout closed the others.
    let (status, _, _) = http_get(
        port,
        "/dicom-web/studies",
        &[("Authorization", &basic(VIEWER))],
    );
    let answered = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        answered >= Duration::from_millis(1500),
        "the third connection was served after {answered:?}, before a slot was free"
    );
    for (what, closed) in [("silent", silent_closed), ("trickling", trickling_closed)] {
        let after = closed.join().unwrap() - started;
        assert!(
            after >= Duration::from_millis(1500) && after < Duration::from_secs(15),
            "the {what} connection was closed after {after:?}, not after header_timeout_secs"
        );
    }
    // Idle after a response: closed too (keep-alive is not forever).
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let kept_closed = closed_at(&kept);
    let asked = std::time::Instant::now();
    kept.write_all(
        format!(
            "GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\r\n",
            basic(VIEWER)
        )
        .as_bytes(),
    )
    .unwrap();
    let idle = kept_closed.join().unwrap() - asked;
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(15),
        "an idle keep-alive connection was closed after {idle:?}"
    );
    // An upload that stalls after its head: closed once nothing moved for idle_timeout_secs,
    // and nothing of it is stored.
    let before = server.instances();
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let stalled_closed = closed_at(&stalled);
    let sent = std::time::Instant::now();
    stalled
        .write_all(
            format!(
                "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\
                 Content-Type: multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}\r\n\
                 Content-Length: 1000000\r\n\r\n--{BOUNDARY}\r\n",
                basic(VIEWER)
            )
            .as_bytes(),
        )
        .unwrap();
    let stalled_for = stalled_closed.join().unwrap() - sent;
    assert!(
        stalled_for >= Duration::from_millis(2500) && stalled_for < Duration::from_secs(15),
        "a stalled upload was closed after {stalled_for:?}, not after idle_timeout_secs"
    );
    assert_eq!(server.instances(), before);
}

#[test]
fn https_serves_dicomweb_and_a_client_that_never_shakes_hands_holds_up_no_one() {
    let certs = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("tools/make-test-certs.sh"))
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let corpus = Corpus::small(1, 2, 0, 0, 26);
    let dir = tempfile::tempdir().unwrap();
    let server = web_server(
        dir.path(),
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            certs.path().join("server.crt").display(),
            certs.path().join("server.key").display()
        ),
    );
    server.store(&corpus);
    let port = server.web_port.unwrap();
    // Connections that never start a handshake.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let url = format!("https://127.0.0.1:{port}/dicom-web/studies");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-s", "-S", "--max-time", "20", "-u", "viewer:viewer pass"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let ca = certs.path().join("ca.crt");
    let out = curl(&["--cacert", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let studies: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        studies[0]["0020000D"]["Value"][0],
        corpus.study_uids()[0].as_str()
    );
    // A client that does not trust the CA refuses the server; plain HTTP gets no answer.
    assert_eq!(
        curl(&[]).status.code(),
        Some(60),
        "certificate not verified"
    );
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}/dicom-web/studies"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("0020000D"));
    // The silent connections are closed once the handshake timeout passes.
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection stayed open: {other:?}"),
        }
    }
}

#[test]
fn rendered_images_come_from_the_rendition_cache_until_their_instance_changes() {
    let corpus = Corpus::small(1, 1, 0, 0, 43);
    let dir = tempfile::tempdir().unwrap();
    let (token, sha256) = new_token();
    let bearer = format!("Bearer {token}");
    let server = TestServer::start_in(
        dir.path(),
        "",
        &format!(
            "duplicate_policy = \"overwrite\"\n\
             [renditions]\ncache_mb = 8\ndir = \"renditions\"\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\
             [[web.users]]\nname = \"viewer\"\ntoken_sha256 = [\"{sha256}\"]\n\
             allow = [\"find\", \"get\", \"store\", \"admin\"]\n"
        ),
    );
    let port = server.web_port.unwrap();
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let f = &corpus.files[0];
    let url = |what: &str| {
        format!(
            "/dicom-web/studies/{}/series/{}/instances/{}/{what}",
            f.study_instance_uid, f.series_instance_uid, f.sop_instance_uid
        )
    };
    let png = [("Authorization", bearer.as_str()), ("Accept", "image/png")];
    let get = |path: &str| {
        let (status, head, body) = http_get(port, path, &png);
        assert_eq!(status, 200, "{path}: {head}");
        body
    };
    let count = |result: &str| {
        metric(
            port,
            &bearer,
            &format!("strata_rendition_cache_requests_total{{result=\"{result}\"}} "),
        )
    };
    // Renditions kept (files, not temporaries) and their bytes.
    let files = || {
        let sizes: Vec<u64> = std::fs::read_dir(dir.path().join("renditions"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .collect();
        (sizes.len(), sizes.iter().sum::<u64>() as f64)
    };
    // A rendition is written by a task of its own after the answer: wait until `n` are
    // kept and the cache counts their bytes (it does once they may be served).
    let settle = |n: usize| {
        let started = std::time::Instant::now();
        let kept = || {
            let (count, bytes) = files();
            count == n && metric(port, &bearer, "strata_rendition_cache_bytes ") == bytes
        };
        while !kept() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(kept(), "{n} renditions kept: {:?}", files());
    };
    let thumbnail = get(&url("thumbnail"));
    let rendered = get(&url("rendered"));
    assert_eq!((count("hit"), count("miss")), (0.0, 2.0));
    settle(2);
    assert_eq!(get(&url("thumbnail")), thumbnail, "the same image");
    assert_eq!(get(&url("rendered")), rendered);
    assert_eq!(
        (count("hit"), count("miss")),
        (2.0, 2.0),
        "both from the cache"
    );
    // Another view is another rendition.
    assert!(get(&url("rendered?viewport=64,64")) != thumbnail);
    assert_eq!(count("miss"), 3.0);
    settle(3);

    // The instance stored again with other pixels: its new image, never the cached one, and
    // its old renditions go when the new one is kept.
    let changed = dir.path().join("changed.dcm");
    let script = "import sys\nfrom pydicom import dcmread\n\
                  ds = dcmread(sys.argv[1])\n\
                  ds.PixelData = bytes(255 - b for b in ds.PixelData)\n\
                  ds.save_as(sys.argv[2])\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(corpus.path(f))
        .arg(&changed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.storescu("MODALITY", &[changed]).status.success());
    let new_thumbnail = get(&url("thumbnail"));
    assert!(
        new_thumbnail != thumbnail,
        "the cached image of the old version"
    );
    assert_eq!(count("miss"), 4.0);
    settle(1); // the old version's three renditions went
    assert_eq!(get(&url("thumbnail")), new_thumbnail);
    assert_eq!(count("hit"), 3.0);
    assert!(
        metric(
            port,
            &bearer,
            "strata_rendition_cache_cpu_saved_seconds_total "
        ) > 0.0,
        "hits save the CPU time their drawing took"
    );
    let held = metric(port, &bearer, "strata_rendition_cache_bytes ");
    assert_eq!(held, new_thumbnail.len() as f64);

    // Every server's counts reach the locator: `strata status` shows them.
    let started = std::time::Instant::now();
    let renditions = loop {
        let renditions = server.status()["renditions"].clone();
        let settled = renditions["hits"] == 3 && renditions["bytes"].as_f64() == Some(held);
        if settled || started.elapsed() > Duration::from_secs(20) {
            break renditions;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(renditions["hits"], 3, "{renditions}");
    assert_eq!(renditions["misses"], 4, "{renditions}");
    assert_eq!(renditions["hit_ratio"].as_f64(), Some(3.0 / 7.0));
    assert_eq!(renditions["bytes"].as_f64(), Some(held), "{renditions}");
    assert!(renditions["cpu_seconds_saved"].as_f64().unwrap() > 0.0);
    let out = server.cli(&["status"]);
    assert!(
        text(&out).contains("renditions 3 hits, 4 misses (42.9% hits)"),
        "{}",
        text(&out)
    );
}
