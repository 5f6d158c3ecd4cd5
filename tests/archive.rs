//! The archive tier on the local backend: `strata tier run` merges each aged study into one
//! S-DICOM container while the server keeps serving; retrieval and queries do not change;
//! late arrivals are folded in; `strata restore` brings a study back; kill -9 at any moment
//! loses nothing and shows nothing twice.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn tier_run(server: &TestServer) -> Value {
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tiers(server: &TestServer, study: &str) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for l in server.locate(study) {
        *count
            .entry(l["tier"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    count
}

/// Waits (30 s at most) until no instance of `studies` is online any more.
fn wait_until_archived(server: &TestServer, studies: &[String], what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while studies
        .iter()
        .any(|s| tiers(server, s).contains_key("online"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not {what} in time: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn containers(server: &TestServer) -> Vec<PathBuf> {
    files_below(&server.dir.join("archive"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sdcm"))
        .collect()
}

fn online_files(server: &TestServer) -> usize {
    files_below(&server.online_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count()
}

#[test]
fn archived_studies_are_served_identically_late_arrivals_fold_in_and_restore_works() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "6",
        "--mr-studies",
        "1",
        "--mr-images",
        "3",
        "--seed",
        "11",
    ]);
    let server = TestServer::start("");
    let uids = corpus.study_uids();
    let (ct, mr) = (uids[0].clone(), uids[1].clone());
    // One CT image arrives late, after the study is archived.
    let late = corpus.study_paths(&ct).pop().unwrap();
    let first: Vec<PathBuf> = corpus.paths().into_iter().filter(|p| *p != late).collect();
    assert!(server.storescu("MODALITY", &first).status.success());

    let summary = tier_run(&server);
    assert_eq!(summary["archived"], 2, "{summary}");
    assert_eq!(summary["failed"], 0);
    assert_eq!(tiers(&server, &ct), HashMap::from([("archive".into(), 5)]));
    assert_eq!(containers(&server).len(), 2, "one container per study");
    assert_eq!(online_files(&server), 0, "online copies are gone");
    let located = server.locate(&ct);
    assert!(located.iter().all(|l| l["offset"].as_u64().unwrap() > 0));
    let status = server.status();
    assert_eq!(status["tiers"]["archive"]["instances"], 8, "{status}");
    assert_eq!(status["tiers"]["online"]["instances"], 0, "{status}");

    // Served from the containers, byte for byte; found by C-FIND as before.
    let late_uid = &corpus
        .files
        .iter()
        .find(|f| corpus.path(f) == late)
        .unwrap()
        .sop_instance_uid;
    let mut first_ct = originals(&corpus, &ct);
    first_ct.remove(late_uid);
    assert_same_data_sets(&server.get_study(&ct), &first_ct, "CT archived");
    assert_same_data_sets(
        &server.get_study(&mr),
        &originals(&corpus, &mr),
        "MR archived",
    );
    let out = text(&server.scu(
        "find",
        "VIEWER",
        &[
            "--level",
            "STUDY",
            "-k",
            &format!("StudyInstanceUID={ct}"),
            "-k",
            "NumberOfStudyRelatedInstances=",
            "-k",
            "InstanceAvailability=",
        ],
    ));
    assert!(
        out.contains("\"NumberOfStudyRelatedInstances\": \"5\""),
        "{out}"
    );
    assert!(
        out.contains("\"InstanceAvailability\": \"NEARLINE\""),
        "{out}"
    );

    // A late arrival is stored online and served with the rest.
    assert!(server
        .storescu("MODALITY", std::slice::from_ref(&late))
        .status
        .success());
    assert_eq!(
        tiers(&server, &ct),
        HashMap::from([("archive".into(), 5), ("online".into(), 1)])
    );
    assert_same_data_sets(&server.get_study(&ct), &originals(&corpus, &ct), "CT mixed");
    // The next run folds it in: one new container for the whole study, the old one deleted.
    let summary = tier_run(&server);
    assert_eq!(summary["archived"], 1, "{summary}");
    assert_eq!(tiers(&server, &ct), HashMap::from([("archive".into(), 6)]));
    assert_eq!(containers(&server).len(), 2);
    assert_eq!(online_files(&server), 0);
    assert_same_data_sets(
        &server.get_study(&ct),
        &originals(&corpus, &ct),
        "CT folded",
    );

    // Restore brings it back online; the container goes.
    let out = server.cli(&["restore", "--study", &ct]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tiers(&server, &ct), HashMap::from([("online".into(), 6)]));
    assert_eq!(containers(&server).len(), 1);
    assert_same_data_sets(
        &server.get_study(&ct),
        &originals(&corpus, &ct),
        "CT restored",
    );
    let out = text(&server.scu(
        "find",
        "VIEWER",
        &[
            "--level",
            "STUDY",
            "-k",
            &format!("StudyInstanceUID={ct}"),
            "-k",
            "InstanceAvailability=",
        ],
    ));
    assert!(
        out.contains("\"InstanceAvailability\": \"ONLINE\""),
        "{out}"
    );
    // Nothing is due twice: a study with nothing online is left alone.
    let summary = tier_run(&server);
    assert_eq!(summary["studies"], 1, "{summary}");
}

#[test]
fn kill_9_during_tier_moves_loses_nothing_and_shows_nothing_twice() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "3",
        "--ct-images",
        "30",
        "--mr-studies",
        "0",
        "--seed",
        "12",
    ]);
    // Container writes paced to 20 MB/s: a 15 MB study takes about 0.75 s to move, so a kill
    // at most 0.3 s after its container appeared always lands inside the move.
    let server = TestServer::start(&format!("{SHORT_LEASES}[tiering]\nthrottle_mb_s = 20\n"));
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let studies = corpus.study_uids();
    let want: HashMap<String, HashMap<String, Vec<u8>>> = studies
        .iter()
        .map(|s| (s.clone(), originals(&corpus, s)))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = server.dir.join("archive/tmp");
    // Alternate: archive everything, then restore one study (one that has archived instances),
    // each killed part-way.
    for round in 0..8usize {
        let archived = studies
            .iter()
            .find(|s| tiers(&server, s).contains_key("archive"))
            .cloned();
        let restoring = round % 2 == 1 && archived.is_some();
        // Temporaries a killed run left, for this one to delete: not evidence of this run.
        let left = files_below(&tmp);
        let mut child = if restoring {
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .args([
                    "restore",
                    "--study",
                    archived.as_deref().unwrap(),
                    "--config",
                ])
                .arg(&server.config)
                .spawn()
                .unwrap()
        } else {
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .args(["tier", "run", "--min-age-days", "0", "--config"])
                .arg(&server.config)
                .spawn()
                .unwrap()
        };
        if restoring {
            // A restore is not paced: killed as soon as its first file is back online,
            // wherever it has got to by then.
            let online = online_files(&server);
            wait_while_running(&mut child, || online_files(&server) > online);
        } else {
            assert!(
                wait_while_running(&mut child, || files_below(&tmp)
                    .iter()
                    .any(|p| !left.contains(p))),
                "round {round}: the tier run ended before writing a container"
            );
            std::thread::sleep(Duration::from_millis((round as u64 * 37) % 300));
        }
        let _ = child.kill();
        let _ = child.wait();
        // The next run takes over the killed one's move once its lease has expired.
        wait_for_lease_expiry(&server.config, child.id());
        if !restoring {
            let pending = runtime.block_on(async {
                let locator = locator(&server.dir).await;
                let jobs = locator.pending_jobs().await.unwrap();
                locator.close().await;
                jobs.len()
            });
            assert!(
                pending > 0 && files_below(&tmp).iter().any(|p| !left.contains(p)),
                "round {round}: the kill did not interrupt a move ({pending} pending)"
            );
        }
        // Served throughout, and every instance exactly once.
        for s in &studies {
            let located = server.locate(s);
            assert_eq!(
                located.len(),
                30,
                "round {round}: {s} has {} rows",
                located.len()
            );
            assert_same_data_sets(
                &server.get_study(s),
                &want[s],
                &format!("round {round} after kill"),
            );
        }
    }
    // A full run recovers what was interrupted and finishes the job.
    let summary = tier_run(&server);
    assert_eq!(summary["failed"], 0, "{summary}");
    for s in &studies {
        assert_eq!(tiers(&server, s), HashMap::from([("archive".into(), 30)]));
        assert_same_data_sets(&server.get_study(s), &want[s], "after recovery");
    }
    assert_eq!(
        containers(&server).len(),
        3,
        "orphan containers left behind"
    );
    assert_eq!(online_files(&server), 0, "orphan online files left behind");
    assert!(
        files_below(&server.dir.join("archive/tmp")).is_empty(),
        "orphan temporaries left behind"
    );
}

#[test]
fn the_server_archives_due_studies_inside_its_window() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "4",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
        "--seed",
        "13",
    ]);
    let server =
        TestServer::start("[tiering]\nmin_age_days = 0\nwindow = \"00:00-00:00\"\npoll_secs = 1\n");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let studies = corpus.study_uids();
    wait_until_archived(&server, &studies, "archived by the server's worker");
    for s in &studies {
        assert_same_data_sets(
            &server.get_study(s),
            &originals(&corpus, s),
            "archived by the server",
        );
    }
    assert_eq!(containers(&server).len(), 2);
    // The server's passes are in the job history (finished just after their last commit).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.status();
        let run = &status["last_runs"]["tier"];
        if run["outcome"] == "ok" {
            assert_eq!(run["trigger"], "server", "{status}");
            assert!(
                run["summary"]["archived"].as_u64().unwrap() >= 1,
                "{status}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished tiering pass recorded: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tiering_pass_pauses_when_the_archive_store_fails_and_the_next_poll_archives() {
    // The archive folder replaced by a file while the server runs: every container write
    // fails. A pass over seven due studies stops after five failures in a row, with studies
    // left untried; once the folder is back, the next poll archives them all.
    let corpus = Corpus::small(7, 1, 0, 0, 58);
    let server =
        TestServer::start("[tiering]\nmin_age_days = 0\nwindow = \"00:00-00:00\"\npoll_secs = 2\n");
    let archive = server.dir.join("archive");
    std::fs::remove_dir_all(&archive).unwrap();
    std::fs::write(&archive, b"not a folder").unwrap();
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        let paused = log
            .lines()
            .find(|l| l.contains("pass paused after consecutive failures"));
        if let Some(line) = paused {
            assert!(line.contains("failed=5"), "{line}");
            assert!(!line.contains("left=0"), "{line}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pause: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The folder back as it was (a NAS mount returning), its temporaries folder too.
    std::fs::remove_file(&archive).unwrap();
    std::fs::create_dir_all(archive.join("tmp")).unwrap();
    let studies = corpus.study_uids();
    wait_until_archived(&server, &studies, "archived once the store was back");
    for s in &studies {
        assert_same_data_sets(
            &server.get_study(s),
            &originals(&corpus, s),
            "archived late",
        );
    }
}
