//! The archive tier on a real HDFS (Apache Hadoop 2.7.3 NameNode and DataNode on loopback,
//! started by tools/hdfs-dev.sh): containers are one file per study on the NameNode, served
//! bit-identically, and interoperate with Hadoop's own SequenceFile reader, writer and
//! `FsShell -text`; kill -9 of the converter and of restore loses nothing on HDFS either; a
//! container truncated by Hadoop is served from its near-line copy and repaired; a thumbnail
//! of an image archived as JPEG 2000 reads only the head of the instance from its container.

mod common;
#[path = "common/hdfs.rs"]
mod hdfs_dev;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use hdfs_dev::Hdfs;
use serde_json::Value;
use strata::archive::seqfile;

#[test]
fn hdfs_containers_are_one_file_per_study_interoperate_with_hadoop_and_survive_kill_9() {
    let hdfs = Hdfs::start();
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "2",
        "--ct-images",
        "5",
        "--mr-studies",
        "1",
        "--mr-images",
        "3",
        "--seed",
        "21",
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"hdfs\"\npath = \"/strata-test\"\nhdfs_url = \"{}\"\n{SHORT_LEASES}",
            hdfs.url()
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let before = hdfs.files_total();

    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["archived"], 3, "{summary}");

    // One file per study on the NameNode (plus a fan-out folder the first time one is used),
    // not one per instance.
    let mut containers = Vec::new();
    for study in corpus.study_uids() {
        let out = server.cli(&["locate", "--json", "--study", &study]);
        let located: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<&str> = located
            .iter()
            .map(|l| l["location"].as_str().unwrap())
            .collect();
        assert!(located.iter().all(|l| l["tier"] == "archive"));
        assert!(
            names.iter().all(|n| *n == names[0]),
            "one container per study"
        );
        containers.push((study.clone(), names[0].to_string()));
    }
    let folders: std::collections::HashSet<&str> = containers
        .iter()
        .map(|(_, c)| c.split('/').next().unwrap())
        .collect();
    assert_eq!(
        hdfs.files_total() - before,
        (containers.len() + folders.len()) as u64,
        "NameNode files grew by more than one per study"
    );

    // Served from HDFS, byte for byte.
    for (study, _) in &containers {
        assert_same_data_sets(
            &server.get_study(study),
            &originals(&corpus, study),
            "served from HDFS",
        );
    }

    // Storage Commitment checks each archived instance's own record on HDFS.
    let (status, _, report) =
        commit_request(server.port, "VIEWER", &corpus.paths(), &[], 30.0, &[]);
    assert_eq!(status, 0x0000);
    let report = report.expect("no commitment report");
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(
        report["committed"].as_array().unwrap().len(),
        corpus.files.len(),
        "{report}"
    );

    // Hadoop's own SequenceFile.Reader reads our containers from HDFS.
    let classes = tempfile::tempdir().unwrap();
    let javac = Command::new("javac")
        .arg("-cp")
        .arg(&hdfs.env["HDFS_CLASSPATH"])
        .arg("-d")
        .arg(classes.path())
        .arg(repo().join("tools/hadoop/SeqRead.java"))
        .arg(repo().join("tools/hadoop/SeqWrite.java"))
        .output()
        .unwrap();
    assert!(javac.status.success(), "{}", text(&javac));
    for (study, container) in &containers {
        let dump = tempfile::tempdir().unwrap();
        let url = format!("{}/strata-test/{container}", hdfs.url());
        let out = hdfs.java(
            classes.path(),
            &["SeqRead", &url, dump.path().to_str().unwrap()],
        );
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        let files: Vec<_> = corpus
            .files
            .iter()
            .filter(|f| &f.study_instance_uid == study)
            .collect();
        assert_eq!(log.matches("KEY ").count(), files.len(), "{log}");
        assert!(
            log.contains(&format!("META strata.study_instance_uid={study}")),
            "{log}"
        );
        assert!(log.contains("META strata.format=S-DICOM 1"), "{log}");
        for f in files {
            let value = dump.path().join(&f.sop_instance_uid);
            assert!(
                data_set_bytes(&value) == data_set_bytes(&corpus.path(f)),
                "Hadoop read different bytes for {}",
                f.sop_instance_uid
            );
        }
        // And `hadoop fs -text` prints one line per record.
        let out = hdfs.java(
            classes.path(),
            &["org.apache.hadoop.fs.FsShell", "-text", &url],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, log.matches("KEY ").count());
    }

    // What Hadoop's SequenceFile.Writer writes, our reader reads.
    let written = dir.path().join("hadoop.seq");
    let inputs: Vec<PathBuf> = corpus.paths().into_iter().take(3).collect();
    let mut args = vec!["SeqWrite".to_string(), written.display().to_string()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hdfs.java(classes.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&written).unwrap();
    let header = seqfile::decode_header(&bytes).unwrap();
    assert_eq!(header.get("written.by"), Some("hadoop"));
    let mut at = header.length;
    let mut seen = Vec::new();
    while let Some(r) =
        seqfile::next_record(&bytes, 0, at, bytes.len() as u64, &header.sync).unwrap()
    {
        let value = &bytes[r.value.offset as usize..(r.value.offset + r.value.length) as usize];
        let input = inputs
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy() == r.key)
            .unwrap();
        assert!(value == std::fs::read(input).unwrap(), "{} differs", r.key);
        seen.push(r.key);
        at = r.next;
    }
    assert_eq!(seen.len(), 3);

    // Kill -9 of the converter and of restore on HDFS: served throughout, every instance
    // exactly once, and a final run leaves no temporaries and one container per study.
    let studies = corpus.study_uids();
    let mut interrupted = 0;
    for round in 0..12u64 {
        let archived = studies.iter().find(|s| {
            let out = server.cli(&["locate", "--json", "--study", s]);
            String::from_utf8_lossy(&out.stdout).contains("\"archive\"")
        });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        match (round % 2, archived) {
            (1, Some(study)) => cmd.args(["restore", "--study", study]),
            _ => cmd.args(["tier", "run", "--min-age-days", "0"]),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let pending_jobs = || {
            runtime.block_on(async {
                let locator = locator(dir.path()).await;
                let jobs = locator.pending_jobs().await.unwrap();
                locator.close().await;
                jobs.len()
            })
        };
        let mut child = cmd.arg("--config").arg(&server.config).spawn().unwrap();
        // Kill at a different moment of the move each round: once its job is journaled
        // (process start and HDFS connection take longer on a loaded machine), plus a delay.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pending_jobs() == 0
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(round * 15));
        let _ = child.kill();
        let _ = child.wait();
        // The next run takes over the killed one's move once its lease has expired.
        wait_for_lease_expiry(&server.config, child.id());
        let pending = pending_jobs();
        interrupted += usize::from(pending > 0);
        for study in &studies {
            let out = server.cli(&["locate", "--json", "--study", study]);
            let located: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
            let want = corpus
                .files
                .iter()
                .filter(|f| &f.study_instance_uid == study)
                .count();
            assert_eq!(located.len(), want, "round {round}");
            assert_same_data_sets(
                &server.get_study(study),
                &originals(&corpus, study),
                &format!("round {round}"),
            );
        }
    }
    eprintln!("{interrupted} of 12 kills interrupted a move on HDFS");
    assert!(interrupted >= 2, "the kills rarely hit a move in progress");
    let out = server.cli(&["tier", "run", "--min-age-days", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = hdfs.java(
        classes.path(),
        &[
            "org.apache.hadoop.fs.FsShell",
            "-ls",
            "-R",
            &format!("{}/strata-test", hdfs.url()),
        ],
    );
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert_eq!(listing.matches(".sdcm").count(), studies.len(), "{listing}");
    assert!(!listing.contains(".part"), "temporaries left: {listing}");

    // `strata delete` on HDFS: an instance's container is written again without it (read
    // back by Hadoop), a whole study's container goes.
    let container_of = |study: &str| {
        server.locate(study)[0]["location"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = hdfs.files_below("/strata-test");
    let old = container_of(&studies[0]);
    let gone = corpus
        .files
        .iter()
        .find(|f| f.study_instance_uid == studies[0])
        .unwrap();
    let (ok, deleted) = cli_json(
        &server,
        &["delete", "--json", "--instance", &gone.sop_instance_uid],
    );
    assert!(ok, "{deleted}");
    assert_eq!(deleted["archive_containers_rewritten"], 1, "{deleted}");
    let new = container_of(&studies[0]);
    let after = hdfs.files_below("/strata-test");
    assert!(before.contains(&old) && !after.contains(&old), "{after:?}");
    assert!(after.contains(&new), "{after:?}");
    let dump = tempfile::tempdir().unwrap();
    let url = format!("{}/strata-test/{new}", hdfs.url());
    let out = hdfs.java(
        classes.path(),
        &["SeqRead", &url, dump.path().to_str().unwrap()],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let left = corpus
        .files
        .iter()
        .filter(|f| f.study_instance_uid == studies[0])
        .count()
        - 1;
    assert_eq!(log.matches("KEY ").count(), left, "{log}");
    assert!(!log.contains(&gone.sop_instance_uid), "{log}");
    let mut want = originals(&corpus, &studies[0]);
    want.remove(&gone.sop_instance_uid);
    assert_same_data_sets(
        &server.get_study(&studies[0]),
        &want,
        "after a delete on HDFS",
    );
    let doomed = container_of(&studies[1]);
    let (ok, deleted) = cli_json(&server, &["delete", "--json", "--study", &studies[1]]);
    assert!(ok, "{deleted}");
    assert_eq!(deleted["study_gone"], true, "{deleted}");
    let after = hdfs.files_below("/strata-test");
    assert!(!after.contains(&doomed), "{after:?}");
    assert_eq!(
        after.iter().filter(|f| f.ends_with(".sdcm")).count(),
        studies.len() - 1,
        "{after:?}"
    );
}

#[test]
fn an_archive_on_an_ha_name_service_keeps_serving_across_a_namenode_failover() {
    let hdfs = Hdfs::start_with("start-ha");
    assert_eq!(hdfs.url(), "hdfs://ns1");
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "2",
        "--ct-images",
        "4",
        "--mr-studies",
        "0",
        "--seed",
        "23",
    ]);
    let studies = corpus.study_uids();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"hdfs\"\npath = \"/strata-ha\"\nhdfs_url = \"hdfs://ns1\"\n\
             hadoop_conf_dir = \"{}\"\n",
            hdfs.env["HDFS_CONF_DIR"]
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    let store_and_archive = |study: &str| {
        assert!(server
            .storescu("MODALITY", &corpus.study_paths(study))
            .status
            .success());
        let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["archived"], 1, "{summary}");
    };
    store_and_archive(&studies[0]);
    assert_same_data_sets(
        &server.get_study(&studies[0]),
        &originals(&corpus, &studies[0]),
        "served through nn1",
    );

    // The active NameNode dies; the standby takes over by hand, as an admin would do.
    assert_eq!(hdfs.haadmin(&["-getServiceState", "nn1"]), "active");
    hdfs.kill_namenode(1);
    // --forceactive: DFSHAAdmin otherwise insists on asking the dead nn1 for its state first.
    hdfs.haadmin(&["-transitionToActive", "--forceactive", "nn2"]);
    assert_eq!(hdfs.haadmin(&["-getServiceState", "nn2"]), "active");

    // The running server's client fails over: the archived study is still served.
    assert_same_data_sets(
        &server.get_study(&studies[0]),
        &originals(&corpus, &studies[0]),
        "served through nn2 after failover",
    );
    // And the converter archives the next study through nn2.
    store_and_archive(&studies[1]);
    let out = server.cli(&["locate", "--json", "--study", &studies[1]]);
    let located: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        located.iter().all(|l| l["tier"] == "archive"),
        "{located:?}"
    );
    for study in &studies {
        assert_same_data_sets(
            &server.get_study(study),
            &originals(&corpus, study),
            "served after failover",
        );
    }
    // nn2 knows both containers (plus the folders above them), written before and after.
    assert!(
        hdfs.files_total_on("2") >= 3,
        "{}",
        hdfs.files_total_on("2")
    );
}

#[test]
fn a_container_truncated_on_hdfs_is_served_from_its_near_line_copy_and_repaired() {
    let hdfs = Hdfs::start();
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "5",
        "--mr-studies",
        "0",
        "--seed",
        "24",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = py_storescp("DEST", dest_dir.path(), &[]);
    let dest_port = dest.port;
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"hdfs\"\npath = \"/strata-backup\"\nhdfs_url = \"{}\"\n\
             [backup]\npoll_secs = 1\n\
             [[dicom.peers]]\naet = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n",
            hdfs.url()
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let study = corpus.study_uids()[0].clone();
    let out = server.cli(&["tier", "run", "--min-age-days", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    // Archiving queued the study; the backup copies it from HDFS to near-line.
    let out = server.cli(&["backup", "run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["backed_up"], 1, "{summary}");
    assert_eq!(summary["instances"], 5, "{summary}");

    // Hadoop truncates the container inside its last instance.
    let out = server.cli(&["locate", "--json", "--study", &study]);
    let mut located: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    located.sort_by_key(|l| l["offset"].as_u64().unwrap());
    let last = located.last().unwrap();
    assert_eq!(last["tier"], "archive");
    let url = format!(
        "{}/strata-backup/{}",
        hdfs.url(),
        last["location"].as_str().unwrap()
    );
    let cut = (last["offset"].as_u64().unwrap() + 100).to_string();
    let no_classes = tempfile::tempdir().unwrap();
    let out = hdfs.java(
        no_classes.path(),
        &[
            "org.apache.hadoop.fs.FsShell",
            "-truncate",
            "-w",
            &cut,
            &url,
        ],
    );
    assert!(out.status.success(), "truncate failed: {}", text(&out));

    // verify sees exactly one damaged archive copy; C-MOVE and C-GET are still bit-identical.
    let out = server.cli(&["verify", "--json"]);
    assert!(!out.status.success(), "verify must fail: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["primaries"]["archive"],
        serde_json::json!({"ok": 4, "missing": 0, "damaged": 1}),
        "{report}"
    );
    assert_eq!(report["copies"]["nearline"]["ok"], 5, "{report}");
    let (last, moved) = server.move_study("DEST", dest_dir.path(), &study);
    assert!(last.starts_with("FINAL 0x0000"), "{last}");
    assert_same_data_sets(
        &moved,
        &originals(&corpus, &study),
        "C-MOVE, truncated on HDFS",
    );
    assert_same_data_sets(
        &server.get_study(&study),
        &originals(&corpus, &study),
        "truncated on HDFS",
    );
    // The damaged primary is re-created online (by the server, or by --repair, whichever
    // comes first); afterwards verify is clean.
    let out = server.cli(&["verify", "--repair", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = server.cli(&["verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = server.cli(&["locate", "--json", "--study", &study]);
    let located: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let online = located.iter().filter(|l| l["tier"] == "online").count();
    assert_eq!(online, 1, "{located:?}");
    assert_same_data_sets(
        &server.get_study(&study),
        &originals(&corpus, &study),
        "repaired",
    );
}

#[test]
fn thumbnails_of_images_archived_on_hdfs_read_only_the_head_of_each_instance() {
    let hdfs = Hdfs::start();
    let corpus = Corpus::small(1, 3, 0, 0, 23);
    let dir = tempfile::tempdir().unwrap();
    let (token, sha256) = new_token();
    let bearer = format!("Bearer {token}");
    write_config(
        dir.path(),
        &format!(
            "[archive]\nbackend = \"hdfs\"\npath = \"/strata-levels\"\nhdfs_url = \"{}\"\n\
             compression = \"j2k-lossless\"\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\
             [[web.users]]\nname = \"viewer\"\ntoken_sha256 = [\"{sha256}\"]\n\
             allow = [\"get\", \"admin\"]\n{SHORT_LEASES}",
            hdfs.url()
        ),
    );
    let server = TestServer::start_in(dir.path(), "", "");
    let port = server.web_port.unwrap();
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let out = server.cli(&["tier", "run", "--min-age-days", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let study = &corpus.files[0].study_instance_uid;
    let (ok, located) = cli_json(&server, &["locate", "--json", "--study", study]);
    assert!(ok, "{located}");
    let png = [("Authorization", bearer.as_str()), ("Accept", "image/png")];
    for i in located.as_array().unwrap() {
        assert_eq!(i["tier"], "archive", "{i}");
        assert!(
            !i["resolution_levels"].as_array().unwrap().is_empty(),
            "{i}"
        );
        let f = corpus
            .files
            .iter()
            .find(|f| i["sop_instance_uid"] == f.sop_instance_uid.as_str())
            .unwrap();
        let url = |what: &str| {
            format!(
                "/dicom-web/studies/{}/series/{}/instances/{}/{what}",
                f.study_instance_uid, f.series_instance_uid, f.sop_instance_uid
            )
        };
        let length = i["length"].as_f64().unwrap();
        let before = read_bytes(port, &bearer, "archive");
        let (status, head, thumbnail) = http_get(port, &url("thumbnail"), &png);
        assert_eq!(status, 200, "{head}\n{}", server.log());
        let read = read_bytes(port, &bearer, "archive") - before;
        // A 512x512 CT's 128-pixel level: at most 1/8 of its bytes, from the container.
        assert!(read > 0.0 && read * 8.0 <= length, "{read} of {length}");
        assert_eq!(&thumbnail[..8], b"\x89PNG\r\n\x1a\n");
        // The whole image still reads whole, from the same container.
        let before = read_bytes(port, &bearer, "archive");
        let (status, head, _) = http_get(port, &url("rendered"), &png);
        assert_eq!(status, 200, "{head}");
        assert!(read_bytes(port, &bearer, "archive") - before >= length);
    }
    assert!(!server.log().contains("reading whole"), "{}", server.log());
}
