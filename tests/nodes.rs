//! Two `strata serve` nodes sharing one site, as a regional platform runs them: one locator
//! (the SQLite file both processes open on this machine, or with STRATA_TEST_LOCATOR=postgres
//! one PostgreSQL database), one online folder (standing in for the SAN), one archive (a
//! folder, or the real HDFS of tools/hdfs-dev.sh) and one near-line folder; each node with its
//! own `[node] id`, port and config. Work is
//! shared through leases in the locator: no node takes over another's work while its lease
//! holds, and every node takes over a dead one's once it has expired.

mod common;
#[path = "common/hdfs.rs"]
mod hdfs_dev;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hdfs_dev::Hdfs;
use serde_json::Value;

/// One site of two nodes.
struct Site {
    _dir: tempfile::TempDir,
    shared: PathBuf,
    a: TestServer,
    b: TestServer,
    /// The archive's HDFS, when it is not the shared `archive` folder.
    hdfs: Option<Hdfs>,
}

/// The archive folder on HDFS.
const HDFS_ARCHIVE: &str = "/strata-nodes";

/// A node's config: its `[node]` id, the site's shared folders and locator, the `[archive]`
/// section (a shared folder, or HDFS), and extra `[tiering]` and `[backup]` keys.
fn node_config(shared: &Path, node: &str, archive: &str, tiering: &str, backup: &str) -> PathBuf {
    let dir = shared.join(node);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("strata.toml"),
        format!(
            "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\nartim_timeout_secs = 3\n\
             dimse_timeout_secs = 10\nshutdown_grace_secs = 20\n{PEERS}\n\
             [storage]\nonline_dir = \"{site}/online\"\n\
             [locator]\nurl = \"{url}\"\n\
             [archive]\n{archive}\n\
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
    /// Two nodes, `node-a` and `node-b`, with the same `[tiering]` and `[backup]` keys and
    /// a shared archive folder.
    fn start(tiering: &str, backup: &str) -> Site {
        Site::start_on(None, tiering, backup)
    }

    /// The same with the archive on `hdfs` when given.
    fn start_on(hdfs: Option<Hdfs>, tiering: &str, backup: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().to_owned();
        let archive = match &hdfs {
            None => format!("path = \"{}/archive\"", shared.display()),
            Some(hdfs) => format!(
                "backend = \"hdfs\"\npath = \"{HDFS_ARCHIVE}\"\nhdfs_url = \"{}\"",
                hdfs.url()
            ),
        };
        let config = |node| node_config(&shared, node, &archive, tiering, backup);
        let a = TestServer::start_in(&config("node-a"), "", "");
        let b = TestServer::start_in(&config("node-b"), "", "");
        Site {
            _dir: dir,
            shared,
            a,
            b,
            hdfs,
        }
    }

    /// Every file of the archive, relative to its root: the shared folder or HDFS.
    fn archive_files(&self) -> HashSet<String> {
        match &self.hdfs {
            Some(hdfs) => hdfs.files_below(HDFS_ARCHIVE),
            None => files_below(&self.shared.join("archive"))
                .into_iter()
                .map(|p| {
                    p.strip_prefix(self.shared.join("archive"))
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
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

    /// Temporaries left anywhere: the online and near-line folders and the archive.
    fn temporaries(&self) -> Vec<String> {
        ["online/tmp", "nearline/tmp"]
            .iter()
            .flat_map(|t| files_below(&self.shared.join(t)))
            .map(|p| p.display().to_string())
            .chain(
                self.archive_files()
                    .into_iter()
                    .filter(|f| f.starts_with("tmp/") || f.ends_with(".part")),
            )
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
        let on_archive: HashSet<String> = self
            .archive_files()
            .into_iter()
            .filter(|f| f.ends_with(".sdcm"))
            .collect();
        assert_eq!(on_archive, archive, "archive containers");
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

/// The archive moves and backup claims held under `lease`, read from the site's locator.
fn claims_of(shared: &Path, lease: i64) -> (usize, usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let locator = locator(shared).await;
        let moves = locator
            .pending_jobs()
            .await
            .unwrap()
            .iter()
            .filter(|j| j.lease == Some(lease) && !j.committed)
            .count();
        let backups = locator
            .backup_queue()
            .await
            .unwrap()
            .iter()
            .filter(|q| q.lease == Some(lease) && q.container.is_some())
            .count();
        locator.close().await;
        (moves, backups)
    })
}

/// The lease id of the live process with this pid, from `status`, if it holds one.
fn live_lease(server: &TestServer, pid: u32) -> Option<i64> {
    server.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["pid"] == pid && n["live"] == true)
        .and_then(|n| n["lease"].as_i64())
}

fn lease_of(server: &TestServer, pid: u32) -> i64 {
    live_lease(server, pid).unwrap_or_else(|| panic!("no live lease of {pid}"))
}

/// Every study is archived and backed up, judged through `server`.
fn all_done(server: &TestServer, total: u64) -> bool {
    let s = server.status();
    s["instances"] == total
        && s["tiers"]["online"]["instances"] == 0
        && s["queues"]["backup"] == 0
        && s["copies"]["nearline"] == total
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

#[test]
fn a_server_killed_mid_tier_and_backup_passes_has_its_work_finished_by_the_other() {
    server_killed_mid_passes(None);
}

#[test]
fn the_same_with_the_archive_on_hdfs() {
    server_killed_mid_passes(Some(Hdfs::start()));
}

/// Node a is killed with SIGKILL in the middle of a tiering pass and of a backup pass of its
/// own workers; node b finishes everything, nothing is done twice and nothing is lost.
fn server_killed_mid_passes(hdfs: Option<Hdfs>) {
    // Six MR studies of 1 MB; both servers run both workers all day at 1 MB/s, so each pass
    // lasts seconds and the nodes compete for every study.
    let corpus = Corpus::small(0, 1, 6, 8, 76);
    let studies = corpus.study_uids();
    let mut site = Site::start_on(
        hdfs,
        "min_age_days = 0\nwindow = \"00:00-00:00\"\npoll_secs = 1\nthrottle_mb_s = 1",
        "enqueue_on_receive = true\nwindow = \"00:00-00:00\"\npoll_secs = 1\nthrottle_mb_s = 1",
    );
    site.a.store(&corpus);
    let total = corpus.files.len() as u64;
    // Node a is killed while its tier worker moves a study and, restarted, while its backup
    // worker writes a near-line copy (in whichever order it is seen doing them): every kill
    // lands mid-pass, with a claim held.
    let (mut moving, mut backing_up) = (false, false);
    while !(moving && backing_up) {
        let pid = site.a.pid();
        let lease = lease_of(&site.b, pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        let caught = loop {
            let (moves, backups) = claims_of(&site.shared, lease);
            if (moves > 0 && !moving) || (backups > 0 && !backing_up) {
                break Some((moves > 0, backups > 0));
            }
            if all_done(&site.b, total) || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        signal(pid, "KILL");
        let Some((moves, backups)) = caught else {
            break;
        };
        (moving, backing_up) = (moving || moves, backing_up || backups);
        wait_for_lease_expiry(&site.b.config, pid);
        if !(moving && backing_up) {
            site.a = TestServer::start_in(&site.shared.join("node-a"), "", "");
        }
    }
    assert!(
        moving && backing_up,
        "node a was not caught both mid-move ({moving}) and mid-backup ({backing_up})"
    );
    // Node b takes over what node a held once its lease expired, and finishes everything.
    wait_until(120, "node b has archived and backed up every study", || {
        all_done(&site.b, total)
    });
    site.assert_one_container_and_one_copy_per_study(&studies);
    assert!(site.temporaries().is_empty(), "{:?}", site.temporaries());
    assert_served(&site.b, &corpus, &studies, "through node b");
}

/// A run whose lease runs out while it is frozen (SIGSTOP: a VM suspended, a process
/// swapped out) has lost its claims. Woken, it must not commit: it stops with an error that
/// says why and deletes what it wrote, whether or not the other node has meanwhile taken the
/// work over; the work is then done once, by a lease holder.
#[test]
fn a_run_frozen_past_its_lease_commits_nothing_and_cleans_up_after_itself() {
    let site = Site::start(
        "throttle_mb_s = 1",
        "throttle_mb_s = 1\nenqueue_on_receive = true",
    );
    let mut all = Vec::new();
    for (seed, taken_over) in [(77, true), (78, false)] {
        let corpus = Corpus::small(0, 1, 1, 8, seed);
        site.a.store(&corpus);
        for (args, done) in [
            (
                vec!["tier", "run", "--min-age-days", "0", "--json"],
                "archived",
            ),
            (vec!["backup", "run", "--json"], "backed_up"),
        ] {
            let report = freeze_past_lease(&site, &args, || {
                if taken_over {
                    // Node b undoes the frozen move and does the work itself.
                    let (ok, run) = strata_json(&args, &site.b.config);
                    assert!(ok, "{run}");
                    assert_eq!(run[done], 1, "{run}");
                }
            });
            if !taken_over {
                // Nothing disturbed the frozen run's files: the commit itself is refused.
                assert!(
                    report.contains("the lease this work was claimed under has expired"),
                    "{report}"
                );
                let (ok, run) = strata_json(&args, &site.b.config);
                assert!(ok, "{run}");
                assert_eq!(run[done], 1, "{run}");
            }
        }
        all.extend(corpus.study_uids());
        for study in corpus.study_uids() {
            assert_served(&site.a, &corpus, &[study], "through node a");
        }
    }
    site.assert_one_container_and_one_copy_per_study(&all);
    assert!(site.temporaries().is_empty(), "{:?}", site.temporaries());
}

/// Runs `strata ARGS` on node a, freezes it once it holds a claim, waits until its lease has
/// expired, runs `meanwhile`, wakes it and returns what it printed; asserts that it failed
/// and said that its lease was lost.
fn freeze_past_lease(site: &Site, args: &[&str], meanwhile: impl FnOnce()) -> String {
    let frozen = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .arg("--config")
        .arg(&site.a.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = frozen.id();
    wait_until(30, "node a's run holds a claim", || {
        live_lease(&site.b, pid).is_some_and(|lease| {
            let (moves, backups) = claims_of(&site.shared, lease);
            moves + backups > 0
        })
    });
    signal(pid, "STOP");
    wait_for_lease_expiry(&site.b.config, pid);
    meanwhile();
    signal(pid, "CONT");
    let out = frozen.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the frozen {args:?} succeeded: {report}"
    );
    assert!(
        report.contains("lease expired; its work in progress will not commit"),
        "the frozen {args:?} did not say it lost its lease: {report}"
    );
    report
}
