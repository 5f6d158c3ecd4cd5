//! Two `strata serve` nodes sharing one site, as a regional platform runs them: one locator
//! (the SQLite file both processes open on this machine, or with STRATA_TEST_LOCATOR=postgres
//! one PostgreSQL database), one online folder (standing in for the SAN), one archive folder
//! and one near-line folder; each node with its own `[node] id`, port and config. Work is
//! shared through leases in the locator: no node takes over another's work while its lease
//! holds, and every node takes over a dead one's once it has expired.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One site of two nodes.
struct Site {
    _dir: tempfile::TempDir,
    shared: PathBuf,
    a: TestServer,
    b: TestServer,
}

/// A node's config: its `[node]` id, the site's shared folders and locator, and extra
/// `[tiering]` and `[backup]` keys.
fn node_config(shared: &Path, node: &str, tiering: &str, backup: &str) -> PathBuf {
    let dir = shared.join(node);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("strata.toml"),
        format!(
            "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\nartim_timeout_secs = 3\n\
             dimse_timeout_secs = 10\nshutdown_grace_secs = 20\n{PEERS}\n\
             [storage]\nonline_dir = \"{site}/online\"\n\
             [locator]\nurl = \"{url}\"\n\
             [archive]\npath = \"{site}/archive\"\n\
             [tiering]\n{tiering}\n\
             [backup]\nnearline_dir = \"{site}/nearline\"\n{backup}\n\
             [node]\nid = \"{node}\"\nlease_secs = 2\n\
             [log]\nlevel = \"strata=debug,info\"\n",
            site = shared.display(),
            url = locator_url(shared),
        ),
    )
    .unwrap();
    dir
}

impl Site {
    /// Two nodes, `node-a` and `node-b`, with the same `[tiering]` and `[backup]` keys.
    fn start(tiering: &str, backup: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().to_owned();
        let a = TestServer::start_in(&node_config(&shared, "node-a", tiering, backup), "", "");
        let b = TestServer::start_in(&node_config(&shared, "node-b", tiering, backup), "", "");
        Site {
            _dir: dir,
            shared,
            a,
            b,
        }
    }

    /// Every published container (`<aa>/<name>.sdcm`) below `folder` of the site.
    fn containers(&self, folder: &str) -> HashSet<String> {
        files_below(&self.shared.join(folder))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sdcm"))
            .map(|p| {
                p.strip_prefix(self.shared.join(folder))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    fn temporaries(&self) -> Vec<PathBuf> {
        ["online/tmp", "archive/tmp", "nearline/tmp"]
            .iter()
            .flat_map(|t| files_below(&self.shared.join(t)))
            .collect()
    }

    /// The site's state, through node `b`'s CLI: each study archived in exactly one container
    /// with one near-line copy per instance, and no container on disk that nothing points at.
    fn assert_one_container_and_one_copy_per_study(&self, studies: &[String]) {
        let mut archive = HashSet::new();
        let mut nearline = HashSet::new();
        for study in studies {
            let located = self.b.locate(study);
            let places: HashSet<&str> = located
                .iter()
                .map(|i| {
                    assert_eq!(i["tier"], "archive", "{study}: {i}");
                    i["location"].as_str().unwrap()
                })
                .collect();
            assert_eq!(places.len(), 1, "{study} is in {places:?}");
            archive.extend(places.iter().map(|p| p.to_string()));
            for i in &located {
                let copies: Vec<&Value> = i["copies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["kind"] == "nearline")
                    .collect();
                assert_eq!(copies.len(), 1, "{study}: {i}");
                nearline.insert(copies[0]["location"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(
            nearline.len(),
            studies.len(),
            "one near-line container per study"
        );
        assert_eq!(
            self.containers("archive"),
            archive,
            "archive containers on disk"
        );
        assert_eq!(
            self.containers("nearline"),
            nearline,
            "near-line containers on disk"
        );
    }
}

/// Waits (at most `secs`) until `done` holds, polling every 200 ms.
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every study of the corpus, got through `server`, is bit-identical to what was sent.
fn assert_served(server: &TestServer, corpus: &Corpus, studies: &[String], label: &str) {
    for study in studies {
        assert_same_data_sets(
            &server.get_study(study),
            &originals(corpus, study),
            &format!("{label}: {study}"),
        );
    }
}

#[test]
fn studies_stored_at_either_node_are_found_and_served_by_both_and_each_is_worked_on_once() {
    let corpus = Corpus::small(2, 12, 2, 6, 71);
    let studies = corpus.study_uids();
    // Both nodes run tiering and backup all day, polling every second: they compete for
    // every study from the moment it arrives.
    let site = Site::start(
        "min_age_days = 0\nwindow = \"00:00-00:00\"\npoll_secs = 1",
        "enqueue_on_receive = true\nwindow = \"00:00-00:00\"\npoll_secs = 1",
    );
    // Half the studies to each node, at the same time.
    let (to_a, to_b) = studies.split_at(studies.len() / 2);
    let paths = |list: &[String]| -> Vec<PathBuf> {
        list.iter().flat_map(|s| corpus.study_paths(s)).collect()
    };
    std::thread::scope(|scope| {
        let a = scope.spawn(|| site.a.storescu("MODALITY", &paths(to_a)));
        let b = scope.spawn(|| site.b.storescu("MODALITY", &paths(to_b)));
        for out in [a.join().unwrap(), b.join().unwrap()] {
            assert!(out.status.success(), "{}", text(&out));
        }
    });
    // Found through the other node.
    let found = site
        .b
        .findscu("VIEWER", &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]);
    for study in &studies {
        assert!(
            found.contains(study.as_str()),
            "{study} not found through node b: {found}"
        );
    }
    let total = corpus.files.len() as u64;
    wait_until(90, "every study is archived and backed up", || {
        let s = site.a.status();
        s["instances"] == total
            && s["tiers"]["online"]["instances"] == 0
            && s["queues"]["backup"] == 0
            && s["copies"]["nearline"] == total
    });
    site.assert_one_container_and_one_copy_per_study(&studies);
    assert!(site.temporaries().is_empty(), "{:?}", site.temporaries());
    // Both nodes show each other in `status`, with their own node ids.
    let nodes: HashSet<String> = site.a.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "server" && n["live"] == true)
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes, HashSet::from(["node-a".into(), "node-b".into()]));
    assert_served(&site.a, &corpus, &studies, "through node a");
    assert_served(&site.b, &corpus, &studies, "through node b");
}

#[test]
fn the_same_instances_sent_to_both_nodes_at_once_are_stored_once() {
    let corpus = Corpus::small(1, 30, 0, 1, 72);
    let site = Site::start("", "");
    std::thread::scope(|scope| {
        let a = scope.spawn(|| site.a.storescu("MODALITY", &corpus.paths()));
        let b = scope.spawn(|| site.b.storescu("MODALITY", &corpus.paths()));
        for out in [a.join().unwrap(), b.join().unwrap()] {
            assert!(out.status.success(), "{}", text(&out));
        }
    });
    let study = &corpus.study_uids()[0];
    let located = site.a.locate(study);
    assert_eq!(located.len(), 30);
    // `keep`: one row per instance, and the loser's file is gone, so the online folder holds
    // exactly the files the locator names.
    let named: HashSet<PathBuf> = located
        .iter()
        .map(|i| {
            site.shared
                .join("online")
                .join(i["location"].as_str().unwrap())
        })
        .collect();
    let on_disk: HashSet<PathBuf> = files_below(&site.shared.join("online"))
        .into_iter()
        .filter(|p| !p.starts_with(site.shared.join("online/tmp")))
        .collect();
    assert_eq!(on_disk, named);
    assert_served(&site.b, &corpus, &corpus.study_uids(), "through node b");
}

/// Starts `strata ARGS` with node `node`'s config, waits until `started` holds (evidence that
/// it is working), then kills it with SIGKILL; returns its process id.
fn kill_9_once(config: &Path, args: &[&str], started: impl Fn() -> bool) -> u32 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .arg("--config")
        .arg(config)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} ended before it was seen working"
        );
        assert!(Instant::now() < deadline, "{args:?} never seen working");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    child.id()
}

#[test]
fn work_of_a_node_killed_mid_job_is_left_alone_while_its_lease_holds_then_finished_by_the_other() {
    // Three MR studies of 1 MB: a second each at the writers' 1 MB/s.
    let corpus = Corpus::small(0, 1, 3, 8, 73);
    let studies = corpus.study_uids();
    // Slow writers (1 MB/s), so each job is still running when it is killed; no workers of
    // their own: the jobs are CLI runs on either node.
    let site = Site::start(
        "throttle_mb_s = 1",
        "throttle_mb_s = 1\nenqueue_on_receive = true",
    );
    site.a.store(&corpus);
    let a = site.a.config.clone();
    let b = site.b.config.clone();
    let pending = |table: &str| -> usize {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let locator = locator(&site.shared).await;
            let n = match table {
                "archive_jobs" => locator.pending_jobs().await.unwrap().len(),
                _ => locator
                    .backup_queue()
                    .await
                    .unwrap()
                    .iter()
                    .filter(|q| q.container.is_some())
                    .count(),
            };
            locator.close().await;
            n
        })
    };

    // Tiering: node a's run is killed while it moves a study.
    let killed = kill_9_once(&a, &["tier", "run", "--min-age-days", "0"], || {
        pending("archive_jobs") > 0
    });
    // While its lease holds, node b leaves that study alone and archives the others.
    let (_, first) = strata_json(&["tier", "run", "--min-age-days", "0", "--json"], &b);
    assert_eq!(first["busy"], 1, "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    wait_for_lease_expiry(&b, killed);
    // Then node b undoes the dead move and archives the study itself.
    let (ok, second) = strata_json(&["tier", "run", "--min-age-days", "0", "--json"], &b);
    assert!(ok, "{second}");
    assert_eq!(second["archived"], 1, "{second}");
    assert_eq!(pending("archive_jobs"), 0);

    // Backup: the same with node a's backup run.
    let killed = kill_9_once(&a, &["backup", "run"], || pending("backup_queue") > 0);
    let (_, first) = strata_json(&["backup", "run", "--json"], &b);
    assert_eq!(first["busy"], 1, "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    wait_for_lease_expiry(&b, killed);
    let (ok, second) = strata_json(&["backup", "run", "--json"], &b);
    assert!(ok, "{second}");
    assert_eq!(second["backed_up"], 1, "{second}");

    site.assert_one_container_and_one_copy_per_study(&studies);
    assert!(site.temporaries().is_empty(), "{:?}", site.temporaries());
    // The killed runs show as interrupted, with the node that ran them.
    let status = site.b.status();
    for job in ["tier", "backup"] {
        let run = &status["last_runs"][job];
        assert_eq!(run["outcome"], "ok", "{status}");
        assert_eq!(run["node"], "node-b", "{status}");
    }
    assert_served(&site.a, &corpus, &studies, "through node a");
    assert_served(&site.b, &corpus, &studies, "through node b");
}

#[test]
fn a_node_killed_while_receiving_loses_nothing_it_acknowledged_and_the_other_sweeps_its_files() {
    let corpus = Corpus::small(1, 80, 0, 1, 74);
    let Site {
        _dir, shared, a, b, ..
    } = Site::start("", "");
    let killed = a.pid();
    let files = corpus.paths();
    let mut sender = dcmtk("storescu")
        .args([
            "-aet",
            "MODALITY",
            "-aec",
            "STRATA",
            "127.0.0.1",
            &a.port.to_string(),
        ])
        .args(&files)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill node a once it has stored some instances (evidence: rows in the locator).
    wait_until(60, "node a has stored some instances", || {
        b.instances() >= 20
    });
    a.kill9();
    let _ = sender.wait();
    // The sender retries the whole study through node b; everything lands exactly once.
    let out = b.storescu("MODALITY", &files);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(b.instances(), 80);
    wait_for_lease_expiry(&b.config, killed);
    // Node a's partial file, if it left one, is deleted by a live node's sweep.
    wait_until(30, "the killed node's temporaries are swept", || {
        files_below(&shared.join("online/tmp")).is_empty()
    });
    let study = &corpus.study_uids()[0];
    let got: HashMap<String, Vec<u8>> = b.get_study(study);
    assert_same_data_sets(&got, &originals(&corpus, study), "after the kill");
}
