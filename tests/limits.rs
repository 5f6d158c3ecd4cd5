//! Limits with clear answers: a peer over `[storage] max_instance_mb`,
//! `[dicom] max_requests_per_sec_per_ae` or `[retrieve] max_concurrent` gets a status that
//! names the limit, nothing half-done is left behind, and everyone else is served.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// A Part-10 CT file of `side` x `side` 16-bit pixels in study 1.2.3.77, written to `dir`.
fn ct_file(dir: &Path, sop_instance: &str, side: u16) -> PathBuf {
    let uid = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    let mut data = explicit_element((0x0008, 0x0016), b"UI", &uid(CT_IMAGE));
    data.extend(explicit_element(
        (0x0008, 0x0018),
        b"UI",
        &uid(sop_instance),
    ));
    data.extend(explicit_element((0x0010, 0x0020), b"LO", b"LIMIT1"));
    data.extend(explicit_element((0x0020, 0x000D), b"UI", &uid("1.2.3.77")));
    data.extend(explicit_element(
        (0x0020, 0x000E),
        b"UI",
        &uid("1.2.3.77.1"),
    ));
    let us = |tag, v: u16| explicit_element(tag, b"US", &v.to_le_bytes());
    data.extend(us((0x0028, 0x0002), 1));
    data.extend(us((0x0028, 0x0010), side));
    data.extend(us((0x0028, 0x0011), side));
    data.extend(us((0x0028, 0x0100), 16));
    let pixels = u32::from(side) * u32::from(side) * 2;
    data.extend(b"\xe0\x7f\x10\x00OW\0\0");
    data.extend(pixels.to_le_bytes());
    data.extend(vec![0x11u8; pixels as usize]);
    let mut file =
        strata::online::part10_header(CT_IMAGE, sop_instance, EXPLICIT_LE, "LIMITS").unwrap();
    file.extend(data);
    let path = dir.join(format!("{sop_instance}.dcm"));
    std::fs::write(&path, file).unwrap();
    path
}

/// `STATUS 0x.... UID` lines of tools/scu.py store.
fn store_statuses(out: &std::process::Output) -> Vec<String> {
    text(out)
        .lines()
        .filter_map(|l| l.strip_prefix("STATUS "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_data_set_over_max_instance_mb_gets_a700_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "", "max_instance_mb = 1");
    let files = tempfile::tempdir().unwrap();
    // 2 MiB of pixels, then 512 KiB, on one association: the first is refused, the second
    // stored.
    let big = ct_file(files.path(), "1.2.3.77.1.1", 1024);
    let small = ct_file(files.path(), "1.2.3.77.1.2", 512);
    let out = server.scu("store", "MODALITY", &[&big, &small]);
    assert_eq!(store_statuses(&out), ["0xA700", "0x0000"], "{}", text(&out));
    let log = server.log_when(|l| l.contains("max_instance_mb"));
    assert!(
        log.contains("data set over [storage] max_instance_mb = 1"),
        "{log}"
    );
    assert_eq!(server.instances(), 1);
    // Nothing of the refused data set is left: one file in the online tier, no temp file.
    let kept = files_below(&server.online_dir());
    assert_eq!(kept.len(), 1, "{kept:?}");
    // `strata import` honours the same limit.
    let out = server.cli(&["import", big.to_str().unwrap()]);
    assert!(text(&out).contains("max_instance_mb"), "{}", text(&out));
    assert_eq!(server.instances(), 1);
}

/// `FINAL 0x.... comment` lines of tools/scu.py find.
fn finals(out: &std::process::Output) -> Vec<String> {
    text(out)
        .lines()
        .filter_map(|l| l.strip_prefix("FINAL "))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_ae_over_its_request_rate_is_refused_and_others_are_served() {
    let server =
        TestServer::start("max_requests_per_sec_per_ae = 3\naccept_unknown_callers = true\n");
    // 15 C-FINDs on one association as fast as pynetdicom sends them: about one second's
    // worth (3) pass, the rest are refused with 0xA700 naming the limit.
    let started = Instant::now();
    let out = server.scu("find", "VIEWER", &["--repeat", "15", "-k", "PatientID=X"]);
    let elapsed = started.elapsed();
    let finals = finals(&out);
    assert_eq!(finals.len(), 15, "{}", text(&out));
    let passed = finals.iter().filter(|f| f.starts_with("0x0000")).count();
    let refused: Vec<_> = finals.iter().filter(|f| f.starts_with("0xA700")).collect();
    assert_eq!(passed + refused.len(), 15, "{finals:?}");
    // The bucket holds 3 and refills 3 per second while the burst runs.
    let allowed = 3 + (elapsed.as_secs_f64() * 3.0).floor() as usize;
    assert!(
        passed >= 3 && passed <= allowed,
        "{passed} passed in {elapsed:?}: {finals:?}"
    );
    assert!(
        refused[0].contains("over [dicom] max_requests_per_sec_per_ae = 3"),
        "{refused:?}"
    );
    // Others are served at once; C-ECHO is not counted, even for VIEWER.
    let out = server.scu("find", "OTHER", &["-k", "PatientID=X"]);
    assert_eq!(finals_of(&out), ["0x0000"], "{}", text(&out));
    assert!(server.echoscu("VIEWER", "STRATA").0);
    // A second later VIEWER may query again.
    std::thread::sleep(Duration::from_millis(1100));
    let out = server.scu("find", "VIEWER", &["-k", "PatientID=X"]);
    assert_eq!(finals_of(&out), ["0x0000"], "{}", text(&out));
}

fn finals_of(out: &std::process::Output) -> Vec<String> {
    finals(out)
        .into_iter()
        .map(|f| f.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn retrieves_over_max_concurrent_get_a702_and_run_again_once_a_slot_frees() {
    // A C-MOVE destination that accepts TCP and never answers: the move holds its slot
    // until connect_timeout_secs.
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in stall.incoming().flatten() {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let peer =
        format!("[[dicom.peers]]\naet = \"STALL\"\nhost = \"127.0.0.1\"\nport = {stall_port}\n");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        &peer,
        "[retrieve]\nmax_concurrent = 1\nconnect_timeout_secs = 4",
    );
    let files = tempfile::tempdir().unwrap();
    let file = ct_file(files.path(), "1.2.3.77.1.3", 64);
    assert_eq!(
        store_statuses(&server.scu("store", "MODALITY", &[&file])),
        ["0x0000"]
    );

    let port = server.port;
    let mover = std::thread::spawn(move || {
        std::process::Command::new(python())
            .arg(repo().join("tools/scu.py"))
            .args(["move", "127.0.0.1", &port.to_string(), "--aet", "VIEWER"])
            .args(["--dest", "STALL", "-k", "StudyInstanceUID=1.2.3.77"])
            .output()
            .unwrap()
    });
    // The move is running once its destination has been connected to.
    accepted
        .recv_timeout(Duration::from_secs(10))
        .expect("the C-MOVE connects to its destination");
    let out_dir = tempfile::tempdir().unwrap();
    let get = |out: &Path| {
        server.scu(
            "get",
            "VIEWER",
            &[
                "--out",
                out.to_str().unwrap(),
                "-k",
                "StudyInstanceUID=1.2.3.77",
            ],
        )
    };
    let out = get(out_dir.path());
    let refused = finals(&out);
    assert_eq!(refused.len(), 1, "{}", text(&out));
    assert!(refused[0].starts_with("0xA702"), "{refused:?}");
    assert!(
        refused[0].contains("[retrieve] max_concurrent = 1: every retrieve slot is busy"),
        "{refused:?}"
    );
    assert!(files_below(out_dir.path()).is_empty());

    // The move gives up on its silent destination and frees the slot.
    let moved = mover.join().unwrap();
    let moved = finals(&moved);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(!moved[0].starts_with("0x0000"), "{moved:?}");
    let out = get(out_dir.path());
    assert!(finals(&out)[0].starts_with("0x0000"), "{}", text(&out));
    assert_eq!(files_below(out_dir.path()).len(), 1);
}

/// Web clients that ask for a compressed instance uncompressed (decoded frame by frame, the
/// decoding thread waiting on the client as it reads) and then read nothing: more of them
/// than the blocking pool has threads. Each waits for a turn without a thread, so stores
/// (whose writes and syncs need the pool) are still answered. Without the turns, the stalled
/// decodes take every thread and the store below never finishes.
#[test]
fn stalled_clients_of_frame_by_frame_decodes_do_not_hold_up_stores() {
    use std::io::Write;
    let files = tempfile::tempdir().unwrap();
    let plain = files.path().join("big.dcm");
    let rle = files.path().join("big-rle.dcm");
    let (_, study) = make_big_instance(&plain, 64, "rows");
    let out = dcmtk("dcmcrle").arg(&plain).arg(&rle).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    // One retrieve at a time: the pool has 1 x move_associations turns plus 32 threads for
    // short work, fewer than the 40 stalled clients below.
    let server = TestServer::start_in(
        dir.path(),
        "",
        "[retrieve]\nmax_concurrent = 1\n\
         [web]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\nidle_timeout_secs = 300\n",
    );
    let out = text(&server.scu("store", "MODALITY", std::slice::from_ref(&rle)));
    assert_eq!(acknowledged(&out).0.len(), 1, "{out}");

    let web = server.web_port.unwrap();
    let request = format!(
        "GET /dicom-web/studies/{study} HTTP/1.1\r\n\
         Host: 127.0.0.1\r\n\
         Accept: multipart/related; type=\"application/dicom\"; \
         transfer-syntax={EXPLICIT_LE}\r\n\r\n"
    );
    let stalled: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut client = std::net::TcpStream::connect(("127.0.0.1", web)).unwrap();
            client.write_all(request.as_bytes()).unwrap();
            client
        })
        .collect();
    // Every stalled answer has started: its decode has filled what the socket and the
    // channel hold, or waits for a turn.
    let started = Instant::now();
    while server.log().matches("retrieve read ahead").count() < stalled.len()
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert_eq!(
        log.matches("retrieve read ahead").count(),
        stalled.len(),
        "every client's retrieve started: {}",
        log_tail(&log, 40)
    );
    // One turn (max_concurrent 1 x move_associations 1): every other decode waits for it
    // without a thread.
    let waiting = || {
        server
            .log()
            .matches("frame-by-frame decode waits for a turn")
            .count()
    };
    while waiting() < stalled.len() - 1 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        waiting(),
        stalled.len() - 1,
        "{}",
        log_tail(&server.log(), 40)
    );

    let small = ct_file(files.path(), "1.2.3.77.1.9", 64);
    let stored = std::process::Command::new("timeout")
        .args([
            "30",
            "/usr/bin/storescu",
            "-aet",
            "MODALITY",
            "-aec",
            "STRATA",
        ])
        .arg("127.0.0.1")
        .arg(server.port.to_string())
        .arg(&small)
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(
        stored.status.success(),
        "a store waited behind stalled decodes: {}\n{}",
        text(&stored),
        log_tail(&server.log(), 40)
    );
    drop(stalled);
}
