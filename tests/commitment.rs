//! Storage Commitment (PS3.4 Annex J) against pynetdicom as the requestor: the report on the
//! request's association and on a new one (pynetdicom accepting us in the SCP role), each
//! instance checked where it lives (online, archived, near-line when the primary is damaged),
//! unknown, damaged and class-conflict instances named with their Failure Reason, and a
//! report that survives a kill -9 of the server between N-ACTION and report.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const BACKUP: &str = "[backup]\nenqueue_on_receive = true\npoll_secs = 1\n";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const UNKNOWN: &str = "1.2.826.0.1.3680043.8.498.424242";

/// The failed instances of a report, with their reasons.
fn failures(report: &Value) -> HashMap<String, u64> {
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_string(), f[1].as_u64().unwrap()))
        .collect()
}

fn committed(report: &Value) -> Vec<String> {
    let mut uids: Vec<String> = report["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

#[test]
fn each_instance_is_checked_where_it_lives_and_failures_are_named_on_the_same_association() {
    let corpus = Corpus::small(3, 3, 0, 0, 41);
    let server = TestServer::start(BACKUP);
    let studies = corpus.study_uids();
    let (archived, backed_up, fresh) = (&studies[0], &studies[1], &studies[2]);
    // `archived` goes to the archive tier; `backed_up` has near-line copies; `fresh` only
    // its online primary.
    assert!(server
        .storescu("MODALITY", &corpus.study_paths(archived))
        .status
        .success());
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server
        .storescu("MODALITY", &corpus.study_paths(backed_up))
        .status
        .success());
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{summary}");
    assert!(server
        .storescu("MODALITY", &corpus.study_paths(fresh))
        .status
        .success());
    assert!(server
        .locate(archived)
        .iter()
        .all(|l| l["tier"] == "archive"));

    // A damaged primary with an intact near-line copy is still committed; one without is not.
    let healed = server.locate(backed_up)[0].clone();
    damage_primary(&server, &healed);
    let lost = server.locate(fresh)[0].clone();
    damage_primary(&server, &lost);
    let lost_uid = lost["sop_instance_uid"].as_str().unwrap().to_string();
    // Stored as CT, referenced as MR: a class/instance conflict.
    let conflict = server.locate(fresh)[1]["sop_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();

    let conflict_path = corpus.paths_by_uid()[&conflict].clone();
    let files: Vec<_> = corpus
        .paths()
        .into_iter()
        .filter(|p| *p != conflict_path)
        .collect();
    let refs = [
        format!("{CT_IMAGE}:{UNKNOWN}"),
        format!("{MR_IMAGE}:{conflict}"),
    ];
    let (status, transaction, report) =
        commit_request(server.port, "VIEWER", &files, &refs, 30.0, &[]);
    assert_eq!(status, 0x0000);
    let report = report.expect("no report on the request's association");
    assert_eq!(report["transaction_uid"], transaction.as_str());
    assert_eq!(report["event_type"], 2, "{report}");
    let expected_failures: HashMap<String, u64> = [
        (UNKNOWN.to_string(), 0x0112),
        (lost_uid.clone(), 0x0110),
        (conflict.clone(), 0x0119),
    ]
    .into();
    assert_eq!(failures(&report), expected_failures, "{report}");
    let mut expected: Vec<String> = corpus
        .files
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .filter(|u| *u != lost_uid && *u != conflict)
        .collect();
    expected.sort();
    assert_eq!(committed(&report), expected, "{report}");
    let log = server.log();
    assert!(
        log.contains("commitment report sent on the request's association"),
        "{log}"
    );

    // Everything intact: Event Type 1, no Failed SOP Sequence.
    let intact: Vec<_> = corpus.study_paths(archived);
    let (_, _, report) = commit_request(server.port, "VIEWER", &intact, &[], 30.0, &[]);
    let report = report.expect("no report");
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(committed(&report).len(), intact.len());
    assert!(failures(&report).is_empty());
}

#[test]
fn n_action_is_refused_without_the_commit_verb_and_for_a_bad_request() {
    let server = TestServer::start("");
    let corpus = Corpus::small(1, 1, 0, 0, 42);
    // MODALITY may only echo and store.
    let (status, _, report) =
        commit_request(server.port, "MODALITY", &corpus.paths(), &[], 0.0, &[]);
    assert_eq!(status, 0x0124, "not authorized");
    assert!(report.is_none());
    // No references at all: an empty Referenced SOP Sequence.
    let (status, _, _) = commit_request(server.port, "VIEWER", &[], &[], 0.0, &[]);
    assert_eq!(status, 0x0115, "invalid argument value");
    // The server is still serving.
    let (status, _, report) = commit_request(
        server.port,
        "VIEWER",
        &[],
        &[format!("{CT_IMAGE}:{UNKNOWN}")],
        30.0,
        &[],
    );
    assert_eq!(status, 0x0000);
    assert_eq!(failures(&report.unwrap())[UNKNOWN], 0x0112);
}

#[test]
fn the_report_goes_on_a_new_association_when_the_requestor_has_released() {
    let corpus = Corpus::small(1, 3, 0, 0, 43);
    let listener = CommitListener::start(0, "LISTENER", &[]);
    let server = TestServer::start(&format!(
        "[[dicom.peers]]\naet = \"LISTENER\"\nhost = \"127.0.0.1\"\nport = {}\n",
        listener.port
    ));
    server.store(&corpus);
    let (status, transaction, report) =
        commit_request(server.port, "LISTENER", &corpus.paths(), &[], 0.0, &[]);
    assert_eq!(status, 0x0000);
    assert!(report.is_none(), "released at once");
    let report = listener
        .next_report(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no report on a new association: {}", server.log()));
    assert_eq!(report["transaction_uid"], transaction.as_str());
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(report["calling_ae"], "STRATA", "{report}");
    assert_eq!(committed(&report).len(), corpus.files.len());
}

#[test]
fn a_report_pending_at_kill_9_is_delivered_after_the_restart_and_an_undeliverable_one_is_given_up()
{
    let corpus = Corpus::small(1, 2, 0, 0, 44);
    let dir = tempfile::tempdir().unwrap();
    // The requestor's port, reserved but not listening yet: every delivery fails.
    let reserved = RefusingPort::bind();
    let port = reserved.port;
    let nowhere = RefusingPort::bind();
    let peers = format!(
        "[[dicom.peers]]\naet = \"LISTENER\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[dicom.peers]]\naet = \"NOWHERE\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [commitment]\nretry_secs = 1\ngive_up_hours = 0.003\n{SHORT_LEASES}",
        nowhere.port
    );
    let server = TestServer::start_in(dir.path(), &peers, "");
    server.store(&corpus);
    // The request's association refuses the report too, should the check finish before the
    // release (it takes a millisecond): the report is then pending for the LISTENER port.
    let (status, transaction, _) = commit_request(
        server.port,
        "LISTENER",
        &corpus.paths(),
        &[],
        0.0,
        &["--refuse-reports"],
    );
    assert_eq!(status, 0x0000);
    let log = server.log_when(|log| log.contains("commitment report not delivered"));
    assert!(log.contains("commitment report not delivered"), "{log}");
    server.kill9();

    drop(reserved);
    let listener = CommitListener::start(port, "LISTENER", &[]);
    let server = TestServer::start_in(dir.path(), "", "");
    // Taken over once the killed process's lease (2 s) has expired.
    let report = listener
        .next_report(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no report after the restart: {}", server.log()));
    assert_eq!(report["transaction_uid"], transaction.as_str());
    assert_eq!(committed(&report).len(), corpus.files.len());

    // A requestor whose address never answers: given up after give_up_hours (10.8 s here),
    // logged, not retried for ever. Its request association refuses the report, should the
    // check finish before the release (it takes a millisecond).
    let (status, _, _) = commit_request(
        server.port,
        "NOWHERE",
        &corpus.paths(),
        &[],
        0.0,
        &["--refuse-reports"],
    );
    assert_eq!(status, 0x0000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.log().contains("storage commitment report given up") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(listener.next_report(Duration::from_millis(200)).is_none());
    let status = server.status();
    assert_eq!(
        status["commitments"],
        serde_json::json!({"checking": 0, "ready": 0, "reported": 1, "given_up": 1}),
        "{status}"
    );
}
