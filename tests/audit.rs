//! The audit trail (issue #18, item 6): stores, C-FIND (pynetdicom), C-GET, QIDO-RS and
//! WADO-RS, `strata delete` and the server's start and stop each leave an entry naming who
//! (AE title, web user, operator), from which address, what, and the outcome; `strata audit
//! --study` folds them per study, `--recent` lists the newest. With `[audit] syslog` every
//! entry also reaches a syslog collector (tools/audit_listen.py, parsing each message with
//! Python's XML parser) as a DICOM audit message (PS3.15 A.5) in an RFC 5424 line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// tools/audit_listen.py on 127.0.0.1: its port, and its messages as they come.
struct Collector {
    child: Child,
    port: u16,
    messages: mpsc::Receiver<Value>,
}

impl Collector {
    fn start() -> Collector {
        let mut child = Command::new(python())
            .arg(repo().join("tools/audit_listen.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = first["port"].as_u64().unwrap() as u16;
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Collector {
            child,
            port,
            messages,
        }
    }

    /// Messages until one satisfies `done` (or 20 s pass): all of them.
    fn until(&self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        while let Ok(m) = self.messages.recv_timeout(Duration::from_secs(20)) {
            let stop = done(&m);
            got.push(m);
            if stop {
                return got;
            }
        }
        panic!("no such audit message; got {got:#?}");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn requestor(m: &Value) -> (String, String) {
    let p = m["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["requestor"] == true)
        .unwrap_or_else(|| panic!("no requestor in {m}"));
    (
        p["user"].as_str().unwrap().to_string(),
        p["address"].as_str().unwrap_or("").to_string(),
    )
}

fn entry<'a>(entries: &'a [Value], event: &str, who: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["event"] == event && e["who"] == who)
        .unwrap_or_else(|| panic!("no {event} by {who} in {entries:#?}"))
}

/// STOW-RS of one Part-10 file, anonymous: the HTTP status.
fn stow(port: u16, file: &[u8]) -> u16 {
    let mut body = b"--audit-boundary\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--audit-boundary--\r\n");
    let head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\nContent-Type: multipart/related; type=\"application/dicom\"; \
         boundary=audit-boundary\r\n",
        body.len()
    );
    http(port, &head, &body).0
}

#[test]
fn stores_queries_retrieves_and_deletes_are_audited_in_the_locator_and_over_syslog() {
    let collector = Collector::start();
    let corpus = Corpus::small(1, 6, 0, 0, 61);
    let study = corpus.study_uids()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        "",
        &format!(
            "[web]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n\
             [audit]\nsyslog = \"udp://127.0.0.1:{}\"\n",
            collector.port
        ),
    );
    let started = collector.until(|m| m["event_type"] == "110120");
    let start = started.last().unwrap();
    assert_eq!(
        (start["priority"].as_u64(), start["msgid"].as_str()),
        (Some(85), Some("IHE+RFC-3881"))
    );
    assert_eq!(start["root"], "AuditMessage");
    assert_eq!(
        start["source"].as_str().unwrap().split('@').next(),
        Some("STRATA")
    );

    server.store(&corpus);
    let stored = collector.until(|m| m["event_id"] == "110104" && m["action"] == "C");
    let stored = stored.last().unwrap();
    assert_eq!(requestor(stored), ("MODALITY".into(), "127.0.0.1".into()));
    assert!(stored["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from(study.as_str())));
    // C-FIND for the study, twice within a minute: one entry.
    for _ in 0..2 {
        let out = server.scu(
            "find",
            "VIEWER",
            &[
                "--level",
                "STUDY",
                "-k",
                &format!("StudyInstanceUID={study}"),
                "-k",
                "PatientID=",
            ],
        );
        assert!(text(&out).contains("MATCH "), "{}", text(&out));
    }
    let query = collector.until(|m| m["event_id"] == "110112");
    let query = query.last().unwrap();
    assert_eq!(requestor(query), ("VIEWER".into(), "127.0.0.1".into()));
    // The queried object: the information model's SOP Class UID (Study Root FIND).
    assert!(query["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from("1.2.840.10008.5.1.4.1.2.2.1")));
    assert!(query["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from(study.as_str())));

    // C-GET, twice: one entry.
    assert_eq!(server.get_study(&study).len(), 6);
    assert_eq!(server.get_study(&study).len(), 6);
    let get = collector.until(|m| m["event_id"] == "110104" && m["action"] == "R");
    assert_eq!(
        requestor(get.last().unwrap()),
        ("VIEWER".into(), "127.0.0.1".into())
    );

    // QIDO-RS and WADO-RS metadata, anonymous.
    let port = server.web_port.unwrap();
    let qido = format!("/dicom-web/studies?StudyInstanceUID={study}");
    assert_eq!(http_get(port, &qido, &[]).0, 200);
    let metadata = format!("/dicom-web/studies/{study}/metadata");
    assert_eq!(http_get(port, &metadata, &[]).0, 200);
    let wado = collector.until(|m| m["event_id"] == "110104" && requestor(m).0 == "anonymous");
    assert_eq!(requestor(wado.last().unwrap()).1, "127.0.0.1");
    // A retrieve of an unknown study is a failure, audited as such.
    let missing = "/dicom-web/studies/1.2.3.999/metadata";
    assert_eq!(http_get(port, missing, &[]).0, 404);

    // A STOW-RS by an anonymous web client.
    let posted = Corpus::small(1, 1, 0, 0, 62);
    let file = std::fs::read(posted.paths()[0].clone()).unwrap();
    assert_eq!(stow(port, &file), 200);
    let (ok, posted_audit) = cli_json(
        &server,
        &["audit", "--study", &posted.study_uids()[0], "--json"],
    );
    assert!(ok, "{posted_audit}");
    let web_store = entry(
        posted_audit["entries"].as_array().unwrap(),
        "stored",
        "anonymous",
    );
    assert_eq!(
        (
            web_store["instances"].as_u64(),
            web_store["address"].as_str()
        ),
        (Some(1), Some("127.0.0.1"))
    );

    // A rejection note for that instance, also by STOW-RS: 110103 with action D.
    let note = dir.path().join("rejection.dcm");
    rejection_note("113001", &posted.paths()[..1], &note);
    assert_eq!(stow(port, &std::fs::read(&note).unwrap()), 200);
    let rejected = collector.until(|m| m["event_id"] == "110103");
    let rejected = rejected.last().unwrap();
    assert_eq!(rejected["action"], "D");
    assert_eq!(
        requestor(rejected),
        ("anonymous".into(), "127.0.0.1".into())
    );
    assert!(rejected["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from(posted.study_uids()[0].as_str())));
    let (ok, posted_audit) = cli_json(
        &server,
        &["audit", "--study", &posted.study_uids()[0], "--json"],
    );
    assert!(ok, "{posted_audit}");
    let rejection = entry(
        posted_audit["entries"].as_array().unwrap(),
        "rejected",
        "anonymous",
    );
    assert_eq!(rejection["instances"], 1, "{posted_audit}");

    // A delete by the operator.
    let instance = corpus
        .files
        .iter()
        .find(|f| f.study_instance_uid == study)
        .unwrap();
    let (ok, deleted) = cli_json(
        &server,
        &[
            "delete",
            "--json",
            "--reason",
            "wrong patient",
            "--instance",
            &instance.sop_instance_uid,
        ],
    );
    assert!(ok, "{deleted}");
    let delete = collector.until(|m| m["event_id"] == "110105");
    let delete = delete.last().unwrap();
    assert_eq!(delete["action"], "D");
    assert!(requestor(delete).0.starts_with("cli:"));
    // The command itself: a local service operation, by the same operator.
    let command = collector.until(|m| m["event_type"] == "110142");
    let command = command.last().unwrap();
    assert_eq!(
        (command["event_id"].as_str(), command["outcome"].as_str()),
        (Some("110113"), Some("0"))
    );
    assert_eq!(requestor(command).0, requestor(delete).0);

    // A correction by the operator: 110103 with action U, naming the study.
    let (ok, updated) = cli_json(
        &server,
        &[
            "update",
            "--json",
            "--study",
            &study,
            "--set",
            "PatientName=Roe^Richard",
        ],
    );
    assert!(ok, "{updated}");
    let update = collector.until(|m| m["event_id"] == "110103" && m["action"] == "U");
    let update = update.last().unwrap();
    assert!(requestor(update).0.starts_with("cli:"));
    assert!(update["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from(study.as_str())));

    // An import by the operator is a store like any other: 110104 with action C.
    let imported = Corpus::small(1, 1, 0, 0, 44);
    let file = imported.paths()[0].display().to_string();
    let out = server.cli(&["import", &file]);
    assert!(out.status.success(), "{}", text(&out));
    let import = collector
        .until(|m| m["event_id"] == "110104" && m["action"] == "C" && requestor(m).0 == "operator");
    assert!(import.last().unwrap()["objects"]
        .as_array()
        .unwrap()
        .contains(&Value::from(imported.study_uids()[0].as_str())));

    // The study's trail, folded.
    let (ok, audit) = cli_json(&server, &["audit", "--study", &study, "--json"]);
    assert!(ok, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let stored = entry(entries, "stored", "MODALITY");
    assert_eq!(
        (stored["instances"].as_u64(), stored["address"].as_str()),
        (Some(6), Some("127.0.0.1"))
    );
    let queried = entry(entries, "queried", "VIEWER");
    assert_eq!(
        (queried["entries"].as_u64(), queried["address"].as_str()),
        (Some(1), Some("127.0.0.1"))
    );
    assert!(
        queried["detail"]
            .as_str()
            .unwrap()
            .starts_with("C-FIND STUDY"),
        "{queried}"
    );
    let got = entry(entries, "retrieved", "VIEWER");
    assert_eq!(
        got["entries"], 1,
        "two C-GETs within a minute fold into one entry"
    );
    assert_eq!(got["detail"], "C-GET 6 instances");
    let web = entry(entries, "retrieved", "anonymous");
    assert_eq!(web["detail"], "WADO-RS metadata 6 instances");
    assert_eq!(
        entry(entries, "queried", "anonymous")["address"],
        "127.0.0.1"
    );
    let gone = entries.iter().find(|e| e["event"] == "deleted").unwrap();
    assert_eq!(
        (gone["instances"].as_u64(), gone["detail"].as_str()),
        (Some(1), Some("wrong patient"))
    );
    assert!(entries.iter().all(|e| e["outcome"] == "ok"), "{entries:#?}");

    // The newest entries: the failed retrieve, and the delete command as an admin entry.
    let (ok, recent) = cli_json(&server, &["audit", "--recent", "20", "--json"]);
    assert!(ok, "{recent}");
    let recent = recent["entries"].as_array().unwrap();
    let failed = recent
        .iter()
        .find(|e| e["object"] == "1.2.3.999")
        .unwrap_or_else(|| panic!("no failed retrieve in {recent:#?}"));
    assert_eq!(
        (failed["event"].as_str(), failed["outcome"].as_str()),
        (Some("retrieved"), Some("failed"))
    );
    let admin = recent.iter().find(|e| e["event"] == "admin").unwrap();
    assert_eq!(
        (admin["detail"].as_str(), admin["outcome"].as_str()),
        (Some("delete"), Some("ok"))
    );
    assert!(admin["who"].as_str().unwrap().starts_with("cli:"));

    // Stopping is the last message.
    assert!(server.terminate().success());
    let stopped = collector.until(|m| m["event_type"] == "110121");
    assert!(
        stopped.iter().all(|m| m.get("error").is_none()),
        "{stopped:#?}"
    );
}
