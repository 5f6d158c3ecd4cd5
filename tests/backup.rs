//! Backup and recovery with real damage: `strata backup run` writes one near-line container
//! per study; then an online file is deleted, near-line bytes flipped, a whole near-line
//! folder deleted and an archive container truncated. C-GET still returns bit-identical
//! originals (from the surviving copies), the server re-creates the damaged primaries in the
//! background, `strata verify` counts every damaged copy exactly, `--repair` mends them, and
//! `strata restore` restores from whichever copy exists. kill -9 of `strata backup run` at
//! many moments never leaves a recorded copy that is not durable, and a rerun completes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const BACKUP: &str = "[backup]\nenqueue_on_receive = true\npoll_secs = 1\n";

fn backup_run(server: &TestServer) -> Value {
    let (ok, summary) = cli_json(server, &["backup", "run", "--json"]);
    assert!(ok, "backup run failed: {summary}");
    summary
}

fn verify(server: &TestServer, repair: bool) -> (bool, Value) {
    if repair {
        cli_json(server, &["verify", "--repair", "--json"])
    } else {
        cli_json(server, &["verify", "--json"])
    }
}

fn counts(ok: u64, missing: u64, damaged: u64) -> Value {
    json!({"ok": ok, "missing": missing, "damaged": damaged})
}

fn nearline_containers(dir: &Path) -> Vec<PathBuf> {
    files_below(&dir.join("nearline"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sdcm"))
        .collect()
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0xff;
    file.write_all_at(&b, at).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn damaged_copies_are_served_from_survivors_found_by_verify_and_repaired() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "2",
        "--ct-images",
        "4",
        "--mr-studies",
        "1",
        "--mr-images",
        "3",
        "--seed",
        "31",
    ]);
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    let dest_port = dest.port;
    let server = TestServer::start(&format!(
        "[[dicom.peers]]\naet = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n{BACKUP}"
    ));
    let uids = corpus.study_uids();
    let (a, b, c) = (uids[0].clone(), uids[1].clone(), uids[2].clone());
    // a and b are archived; c stays online.
    let mut first = corpus.study_paths(&a);
    first.extend(corpus.study_paths(&b));
    assert!(server.storescu("MODALITY", &first).status.success());
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server
        .storescu("MODALITY", &corpus.study_paths(&c))
        .status
        .success());
    let n = |s: &str| corpus.study_paths(s).len() as u64;
    let total = n(&a) + n(&b) + n(&c);

    let summary = backup_run(&server);
    assert_eq!(summary["studies"], 3, "{summary}");
    assert_eq!(summary["backed_up"], 3, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["instances"], total, "{summary}");
    assert_eq!(
        nearline_containers(&server.dir).len(),
        3,
        "one container per study"
    );
    let status = server.status();
    assert_eq!(status["copies"]["nearline"], total, "{status}");
    assert_eq!(status["queues"]["backup"], 0, "{status}");
    assert_eq!(backup_run(&server)["studies"], 0, "nothing left queued");
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
    assert_eq!(
        report["primaries"]["online"],
        counts(n(&c), 0, 0),
        "{report}"
    );
    assert_eq!(
        report["primaries"]["archive"],
        counts(n(&a) + n(&b), 0, 0),
        "{report}"
    );
    assert_eq!(
        report["copies"]["nearline"],
        counts(total, 0, 0),
        "{report}"
    );

    // The damage.
    let located_a = {
        let mut l = server.locate(&a);
        l.sort_by_key(|i| i["offset"].as_u64().unwrap());
        l
    };
    let located_b = server.locate(&b);
    let located_c = server.locate(&c);
    // 1. An online file of c is deleted.
    let lost_online = located_c[0].clone();
    std::fs::remove_file(
        server
            .online_dir()
            .join(lost_online["location"].as_str().unwrap()),
    )
    .unwrap();
    // 2. Bytes flipped in the near-line copy of a's first instance.
    let flipped = &located_a[0]["copies"][0];
    flip_byte(
        &server
            .dir
            .join("nearline")
            .join(flipped["location"].as_str().unwrap()),
        flipped["offset"].as_u64().unwrap() + flipped["length"].as_u64().unwrap() / 2,
    );
    // 3. The whole near-line folder holding b's container is deleted.
    let b_container = located_b[0]["copies"][0]["location"].as_str().unwrap();
    let lost_dir = b_container.split('/').next().unwrap().to_string();
    std::fs::remove_dir_all(server.dir.join("nearline").join(&lost_dir)).unwrap();
    // 4. a's archive container is truncated inside its second-to-last instance: the last two
    //    are damaged.
    let cut = &located_a[located_a.len() - 2];
    let container = server
        .dir
        .join("archive")
        .join(cut["location"].as_str().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&container)
        .unwrap()
        .set_len(cut["offset"].as_u64().unwrap() + 10)
        .unwrap();
    let truncated: Vec<String> = located_a[located_a.len() - 2..]
        .iter()
        .map(|l| l["sop_instance_uid"].as_str().unwrap().to_string())
        .collect();
    // Which near-line copies are gone or damaged now (a folder may hold several studies).
    let (mut copies_missing, mut copies_damaged) = (0, 0);
    for l in located_a.iter().chain(&located_b).chain(&located_c) {
        let copy = &l["copies"][0];
        if copy["location"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{lost_dir}/"))
        {
            copies_missing += 1;
        } else if copy == flipped {
            copies_damaged += 1;
        }
    }
    // The flipped copy is damaged unless its folder was the one deleted.
    let flipped_lost = flipped["location"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{lost_dir}/"));
    assert!(copies_missing >= n(&b));
    assert_eq!(copies_damaged, u64::from(!flipped_lost));

    // verify finds every damaged copy, exactly, and fails.
    let (ok, report) = verify(&server, false);
    assert!(!ok, "verify must fail while damage remains: {report}");
    assert_eq!(
        report["primaries"]["online"],
        counts(n(&c) - 1, 1, 0),
        "{report}"
    );
    assert_eq!(
        report["primaries"]["archive"],
        counts(n(&a) + n(&b) - 2, 0, 2),
        "{report}"
    );
    assert_eq!(
        report["copies"]["nearline"],
        counts(
            total - copies_missing - copies_damaged,
            copies_missing,
            copies_damaged
        ),
        "{report}"
    );
    assert_eq!(
        report["remaining"],
        3 + copies_missing + copies_damaged,
        "{report}"
    );

    // C-MOVE and C-GET still return bit-identical originals: every instance has a lossless
    // survivor.
    for s in [&a, &b, &c] {
        let (last, moved) = server.move_study("DEST", dest_dir.path(), s);
        assert!(last.starts_with("FINAL 0x0000"), "{last}");
        assert_same_data_sets(&moved, &originals(&corpus, s), "C-MOVE after damage");
        assert_same_data_sets(&server.get_study(s), &originals(&corpus, s), "after damage");
    }
    let log = server.log_when(|l| l.contains("served from a backup copy"));
    assert!(
        log.contains("served from a backup copy"),
        "fallbacks are logged: {log}"
    );

    // The server re-creates the three damaged primaries online, in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    let repaired = |server: &TestServer| {
        let online: HashMap<String, String> = [&a, &c]
            .iter()
            .flat_map(|s| server.locate(s))
            .filter(|l| l["tier"] == "online")
            .map(|l| {
                (
                    l["sop_instance_uid"].as_str().unwrap().to_string(),
                    l["location"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let uid = lost_online["sop_instance_uid"].as_str().unwrap();
        online
            .get(uid)
            .is_some_and(|l| l != lost_online["location"].as_str().unwrap())
            && truncated.iter().all(|u| online.contains_key(u))
    };
    while !repaired(&server) {
        assert!(
            Instant::now() < deadline,
            "primaries not re-created: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, report) = verify(&server, false);
    assert!(!ok, "{report}");
    assert_eq!(
        report["primaries"]["online"],
        counts(n(&c) + 2, 0, 0),
        "{report}"
    );
    assert_eq!(
        report["primaries"]["archive"],
        counts(n(&a) + n(&b) - 2, 0, 0),
        "{report}"
    );
    assert_eq!(
        report["remaining"],
        copies_missing + copies_damaged,
        "{report}"
    );

    // --repair rewrites the near-line copies; a second verify is clean.
    let (ok, report) = verify(&server, true);
    assert!(ok, "repair left damage: {report}");
    assert_eq!(report["remaining"], 0, "{report}");
    assert!(
        report["repaired_studies"].as_u64().unwrap() >= 2,
        "{report}"
    );
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
    assert_eq!(
        report["copies"]["nearline"],
        counts(total, 0, 0),
        "{report}"
    );
    assert_eq!(
        nearline_containers(&server.dir).len(),
        3,
        "old containers deleted"
    );
    for s in [&a, &b, &c] {
        assert_same_data_sets(&server.get_study(s), &originals(&corpus, s), "after repair");
    }

    // The archive copy of a is lost entirely: restore brings a online from near-line.
    std::fs::remove_file(&container).unwrap();
    let out = server.cli(&["restore", "--study", &a]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.locate(&a).iter().all(|l| l["tier"] == "online"));
    assert_same_data_sets(&server.get_study(&a), &originals(&corpus, &a), "restored");
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
    // The restore's reads fell back to near-line and queued those primaries for repair; the
    // server finds them intact online now and empties the queue.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = server.status();
        if status["queues"] == json!({"backup": 0, "repairs": 0}) {
            break;
        }
        assert!(Instant::now() < deadline, "queues not emptied: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_during_backup_never_records_a_copy_that_is_not_durable() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "3",
        "--ct-images",
        "30",
        "--mr-studies",
        "0",
        "--seed",
        "32",
    ]);
    // Copies paced to 20 MB/s: a 15 MB study takes about 0.75 s to back up, so a kill at most
    // 0.3 s after its container appeared always lands inside the copy.
    let server = TestServer::start(&format!("{BACKUP}throttle_mb_s = 20\n{SHORT_LEASES}"));
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let studies = corpus.study_uids();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let requeue = || {
        runtime.block_on(async {
            let locator = locator(&server.dir).await;
            for s in &studies {
                locator.enqueue_backup(s, "test").await.unwrap();
            }
            locator.close().await;
        })
    };
    let tmp = server.dir.join("nearline/tmp");
    for round in 0..6usize {
        // Every round backs everything up again (replacing the copies), so kills land in
        // first copies and in replacements alike.
        requeue();
        // Temporaries a killed run left, for this one to delete: not evidence of this run.
        let left = files_below(&tmp);
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["backup", "run", "--config"])
            .arg(&server.config)
            .spawn()
            .unwrap();
        assert!(
            wait_while_running(&mut child, || files_below(&tmp)
                .iter()
                .any(|p| !left.contains(p))),
            "round {round}: the backup run ended before writing a copy"
        );
        std::thread::sleep(Duration::from_millis((round as u64 * 53) % 300));
        let _ = child.kill();
        let _ = child.wait();
        // The next run takes over the killed one's claim once its lease has expired.
        wait_for_lease_expiry(&server.config, child.id());
        let claimed = runtime.block_on(async {
            let locator = locator(&server.dir).await;
            let queue = locator.backup_queue().await.unwrap();
            locator.close().await;
            queue.iter().any(|q| q.container.is_some())
        });
        assert!(
            claimed && files_below(&tmp).iter().any(|p| !left.contains(p)),
            "round {round}: the kill did not interrupt a copy"
        );
        // Every recorded copy is there and intact.
        let (_, report) = verify(&server, false);
        assert_eq!(
            report["copies"]["nearline"]["missing"], 0,
            "round {round}: a recorded copy is missing: {report}"
        );
        assert_eq!(
            report["copies"]["nearline"]["damaged"], 0,
            "round {round}: a recorded copy is damaged: {report}"
        );
        assert_eq!(report["remaining"], 0, "round {round}: {report}");
    }

    // A full run recovers and completes: one copy per instance, no orphans.
    let summary = backup_run(&server);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(server.status()["queues"]["backup"], 0);
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
    assert_eq!(report["copies"]["nearline"], counts(90, 0, 0), "{report}");
    let mut referenced = std::collections::HashSet::new();
    for s in &studies {
        for l in server.locate(s) {
            let copies = l["copies"].as_array().unwrap();
            assert_eq!(copies.len(), 1, "{l}");
            referenced.insert(copies[0]["location"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(referenced.len(), 3);
    assert_eq!(
        nearline_containers(&server.dir).len(),
        3,
        "orphan near-line containers left behind"
    );
    assert!(
        files_below(&server.dir.join("nearline/tmp")).is_empty(),
        "orphan temporaries left behind"
    );
    // The copies serve: with its online files gone, a study comes back from near-line.
    for l in server.locate(&studies[0]) {
        std::fs::remove_file(server.online_dir().join(l["location"].as_str().unwrap())).unwrap();
    }
    assert_same_data_sets(
        &server.get_study(&studies[0]),
        &originals(&corpus, &studies[0]),
        "served from near-line",
    );
}

#[test]
fn the_server_backs_up_queued_studies_inside_its_window() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
        "--seed",
        "33",
    ]);
    let server = TestServer::start(
        "[backup]\nenqueue_on_receive = true\npoll_secs = 1\nwindow = \"00:00-00:00\"\nthrottle_mb_s = 50\n",
    );
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.status();
        if status["copies"]["nearline"] == 5 && status["queues"]["backup"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not backed up in time: {status} {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
    assert_eq!(nearline_containers(&server.dir).len(), 2);
    // The server's backup passes are in the job history, with what they backed up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.status();
        let run = &status["last_runs"]["backup"];
        if run["outcome"] == "ok" {
            assert_eq!(run["trigger"], "server", "{status}");
            assert!(
                run["summary"]["backed_up"].as_u64().unwrap() >= 1,
                "{status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no finished backup pass recorded: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn large_streamed_instances_fall_back_too_and_damage_found_while_streaming_is_repaired() {
    // 4608 x 4608 x 16 bits: 42 MB per instance, above the 32 MiB whole-read limit, so
    // retrieves stream them from the primary.
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "2",
        "--mr-studies",
        "0",
        "--ct-scale",
        "9",
        "--seed",
        "53",
    ]);
    let server = TestServer::start(BACKUP);
    let study = corpus.study_uids()[0].clone();
    assert!(server
        .storescu("MODALITY", &corpus.study_paths(&study))
        .status
        .success());
    assert_eq!(backup_run(&server)["instances"], 2);
    let originals = originals(&corpus, &study);
    let mut located = server.locate(&study);
    located.sort_by_key(|i| i["sop_instance_uid"].as_str().unwrap().to_string());
    assert!(located[0]["length"].as_u64().unwrap() > 32 << 20);
    let path_of = |i: &Value| server.online_dir().join(i["location"].as_str().unwrap());
    let wait_for_repairs = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.status()["queues"]["repairs"] != 0 {
            assert!(Instant::now() < deadline, "not repaired: {}", server.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // A missing large primary: served whole from its near-line copy, then re-created.
    std::fs::remove_file(path_of(&located[0])).unwrap();
    assert_same_data_sets(&server.get_study(&study), &originals, "large fallback");
    let fallback = "primary copy unreadable; served from a backup copy";
    assert!(server.log_when(|l| l.contains(fallback)).contains(fallback));
    wait_for_repairs();
    assert!(server.locate(&study).iter().all(|i| path_of(i).exists()));

    // A damaged large primary is found only at the end of streaming it: that retrieve fails
    // (the half-sent data set cannot be taken back), the primary is queued for repair, and
    // the next retrieve is whole and bit-identical.
    let mut located = server.locate(&study);
    located.sort_by_key(|i| i["sop_instance_uid"].as_str().unwrap().to_string());
    let damaged = path_of(&located[1]);
    flip_byte(&damaged, std::fs::metadata(&damaged).unwrap().len() - 1000);
    let dir = tempfile::tempdir().unwrap();
    let key = format!("StudyInstanceUID={study}");
    // The server aborts the association mid data set: the requestor sees an abort (3).
    let out = text(&server.scu_exiting(
        3,
        "get",
        "VIEWER",
        &["--out", dir.path().to_str().unwrap(), "-k", &key],
    ));
    assert!(out.contains("ABORTED"), "damage must not pass: {out}");
    assert!(!out.contains("FINAL 0x0000"), "damage must not pass: {out}");
    assert!(
        server
            .log_when(|l| l.contains("is damaged: CRC-32C"))
            .contains("is damaged: CRC-32C"),
        "{}",
        server.log()
    );
    wait_for_repairs();
    assert_same_data_sets(&server.get_study(&study), &originals, "after repair");
    let (ok, report) = verify(&server, false);
    assert!(ok, "{report}");
}

/// An instance lost before its first backup (its only file deleted) is named and left out;
/// the rest of its study still gets its near-line copy and leaves the queue.
#[test]
fn an_instance_with_no_lossless_bytes_left_does_not_keep_its_study_from_a_copy() {
    let corpus = Corpus::small(1, 4, 0, 1, 97);
    let server = TestServer::start(BACKUP);
    server.store(&corpus);
    let study = corpus.study_uids()[0].clone();
    let located = server.locate(&study);
    let gone = located[0]["sop_instance_uid"].as_str().unwrap().to_string();
    std::fs::remove_file(
        server
            .online_dir()
            .join(located[0]["location"].as_str().unwrap()),
    )
    .unwrap();
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(!ok, "a lost instance fails the run: {summary}");
    assert_eq!(summary["backed_up"], 1, "{summary}");
    assert_eq!(summary["instances"], 3, "{summary}");
    assert_eq!(summary["lost_instances"], 1, "{summary}");
    assert!(
        summary["failures"][0].as_str().unwrap().contains(&gone),
        "{summary}"
    );
    let status = server.status();
    assert_eq!(status["queues"]["backup"], 0, "{status}");
    assert_eq!(status["copies"]["nearline"], 3, "{status}");
    // The three that were copied come back from near-line if their files go too; the lost
    // one stays named as unrecoverable.
    for l in &located[1..] {
        std::fs::remove_file(server.online_dir().join(l["location"].as_str().unwrap())).unwrap();
    }
    let (ok, report) = verify(&server, true);
    assert!(!ok, "the lost instance remains: {report}");
    assert_eq!(report["primaries"]["online"], counts(0, 4, 0), "{report}");
    assert_eq!(report["repaired_primaries"], 3, "{report}");
    assert_eq!(report["unrecoverable"], 1, "{report}");
    for l in &located[1..] {
        let uid = l["sop_instance_uid"].as_str().unwrap();
        let now = server.locate(&study);
        let placed = now.iter().find(|n| n["sop_instance_uid"] == uid).unwrap();
        let file = server
            .online_dir()
            .join(placed["location"].as_str().unwrap());
        let original = corpus
            .files
            .iter()
            .find(|f| f.sop_instance_uid == uid)
            .unwrap();
        assert_eq!(
            data_set_bytes(&file),
            data_set_bytes(&corpus.path(original)),
            "{uid} re-created from its near-line copy"
        );
    }
}
