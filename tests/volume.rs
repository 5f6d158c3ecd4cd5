//! Offline volumes: `strata backup export-volume` writes capped ustar files that GNU tar and
//! `sha256sum -c` read without Strata, records them, and writes nothing twice; after the
//! online tier and the near-line folder are both lost, `import-volume` brings every instance
//! back bit-identical; a damaged member is refused and named; a rebuilt (empty) locator
//! ingests a volume; `restore` mends a study from whichever copy survives and names the
//! volume it needs when only a volume does; `verify --volumes DIR` reads every offline copy in its volume file and
//! the next export replaces the bad ones; kill -9 of an export never leaves a recorded
//! volume that is not complete and intact; and `--throttle-mb-s` holds.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BACKUP: &str = "[backup]\nenqueue_on_receive = true\npoll_secs = 1\n";

fn export(server: &TestServer, out: &Path, max_size: &str) -> Value {
    let out = out.to_str().unwrap();
    let (ok, summary) = cli_json(
        server,
        &[
            "backup",
            "export-volume",
            "--json",
            "--out",
            out,
            "--max-size",
            max_size,
        ],
    );
    assert!(ok, "{summary}");
    summary
}

fn volume_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    files.sort();
    files
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Extracts a volume with GNU tar and checks it with `sha256sum -c`; returns the folder.
fn extract_and_check(volume: &Path, into: &Path) -> PathBuf {
    let dir = into.join(volume.file_stem().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(volume)
        .arg("-C")
        .arg(&dir));
    let checked = run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir));
    assert!(!checked.contains("FAILED"), "{checked}");
    dir
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json")).unwrap()).unwrap()
}

/// C-GET of a study with pynetdicom: its final line and what arrived.
fn get(server: &TestServer, study: &str) -> (String, HashMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("StudyInstanceUID={study}");
    let out = text(&server.scu(
        "get",
        "VIEWER",
        &["--out", dir.path().to_str().unwrap(), "-k", &key],
    ));
    let last = out
        .lines()
        .rfind(|l| l.starts_with("FINAL"))
        .unwrap_or("no final response")
        .to_string();
    (last, received(dir.path()))
}

fn availability(server: &TestServer, study: &str) -> String {
    let key = format!("StudyInstanceUID={study}");
    let out = text(&server.scu(
        "find",
        "VIEWER",
        &[
            "--level",
            "STUDY",
            "-k",
            &key,
            "-k",
            "InstanceAvailability=",
        ],
    ));
    let m: Value = serde_json::from_str(
        out.lines()
            .find_map(|l| l.strip_prefix("MATCH "))
            .unwrap_or_else(|| panic!("{out}")),
    )
    .unwrap();
    m["InstanceAvailability"].as_str().unwrap().to_string()
}

fn remove_online(server: &TestServer) {
    std::fs::remove_dir_all(server.online_dir()).unwrap();
    std::fs::create_dir_all(server.online_dir()).unwrap();
}

#[test]
fn volumes_are_capped_self_describing_tar_files_written_once() {
    let corpus = Corpus::small(2, 4, 1, 3, 61);
    let server = TestServer::start("");
    server.store(&corpus);
    let out = tempfile::tempdir().unwrap();
    let max = 1u64 << 20;
    let summary = export(&server, out.path(), "1M");
    let files = volume_files(out.path());
    assert!(files.len() >= 2, "{summary}");
    assert_eq!(summary["volumes"].as_array().unwrap().len(), files.len());
    assert_eq!(summary["instances"], 11, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let originals = corpus.paths_by_uid();
    let extracted = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= max, "{} is {size} bytes", file.display());
        let listing = run(Command::new("tar").arg("-tf").arg(file));
        assert!(listing.lines().any(|l| l == "MANIFEST.json"), "{listing}");
        assert!(listing.lines().any(|l| l == "SHA256SUMS"), "{listing}");
        let dir = extract_and_check(file, extracted.path());
        let manifest = manifest(&dir);
        assert_eq!(manifest["format"], "strata-volume/1");
        for m in manifest["members"].as_array().unwrap() {
            let uid = m["sop_instance_uid"].as_str().unwrap().to_string();
            let path = dir.join(m["path"].as_str().unwrap());
            assert!(
                data_set_bytes(&path) == data_set_bytes(&originals[&uid]),
                "{uid} differs"
            );
            assert!(m["path"]
                .as_str()
                .unwrap()
                .starts_with(m["study_instance_uid"].as_str().unwrap()));
            seen.push(uid);
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 11, "every instance on exactly one volume");
    let status = server.status();
    assert_eq!(status["copies"]["offline"], 11, "{status}");
    let last = &status["last_runs"]["export-volume"];
    assert_eq!(last["outcome"], "ok", "{status}");
    assert_eq!(last["summary"]["instances"], 11, "{status}");
    let (ok, volumes) = cli_json(&server, &["backup", "volumes", "--json"]);
    assert!(ok);
    assert_eq!(volumes.as_array().unwrap().len(), files.len());
    for v in volumes.as_array().unwrap() {
        assert_eq!(v["state"], "complete", "{v}");
        let file = out
            .path()
            .join(format!("{}.tar", v["id"].as_str().unwrap()));
        let sum = run(Command::new("sha256sum").arg(&file));
        assert_eq!(sum.split_whitespace().next().unwrap(), v["sha256"], "{v}");
    }

    // Nothing is written twice.
    let again = export(&server, out.path(), "1M");
    assert_eq!(again["volumes"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(volume_files(out.path()).len(), files.len());
    let text_out = server.cli(&[
        "backup",
        "export-volume",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(text(&text_out).contains("nothing to export"));
}

#[test]
fn a_volume_brings_back_what_the_online_tier_and_near_line_lost() {
    let corpus = Corpus::small(1, 4, 1, 3, 62);
    let server = TestServer::start(BACKUP);
    server.store(&corpus);
    let (ok, backed) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{backed}");
    let out = tempfile::tempdir().unwrap();
    export(&server, out.path(), "10G");
    let studies = corpus.study_uids();

    // Disaster: the online tier and the whole near-line folder are gone.
    remove_online(&server);
    std::fs::remove_dir_all(server.dir.join("nearline")).unwrap();
    let (last, _) = get(&server, &studies[0]);
    assert!(!last.starts_with("FINAL 0x0000"), "{last}");
    assert_eq!(availability(&server, &studies[0]), "OFFLINE");

    let mut args = vec!["backup", "import-volume", "--json"];
    let files = volume_files(out.path());
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (ok, summary) = cli_json(&server, &args);
    assert!(ok, "{summary}");
    assert_eq!(summary["restored"], 7, "{summary}");
    assert_eq!(summary["damaged"], 0, "{summary}");
    assert_eq!(summary["queued_for_backup"], 2, "{summary}");
    for study in &studies {
        assert_same_data_sets(
            &server.get_study(study),
            &originals(&corpus, study),
            "after import-volume",
        );
        assert_eq!(availability(&server, study), "ONLINE");
    }
    // Near-line is rebuilt from the restored primaries; everything verifies.
    let (ok, backed) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{backed}");
    assert_eq!(backed["backed_up"], 2, "{backed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.status()["queues"]["repairs"] != 0 {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, report) = cli_json(&server, &["verify", "--json"]);
    assert!(ok, "{report}");
    assert_eq!(report["offline_not_checked"], 7, "{report}");
}

#[test]
fn damaged_members_are_refused_and_a_rebuilt_locator_ingests_a_volume() {
    // More members than import-volume ingests at once, so its bounded queue fills and drains.
    let corpus = Corpus::small(1, 9, 0, 1, 63);
    let server = TestServer::start("");
    server.store(&corpus);
    let out = tempfile::tempdir().unwrap();
    export(&server, out.path(), "10G");
    let volume = volume_files(out.path()).remove(0);
    let extracted = tempfile::tempdir().unwrap();
    let members = manifest(&extract_and_check(&volume, extracted.path()))["members"].clone();
    let damaged = &members[1];
    let damaged_uid = damaged["sop_instance_uid"].as_str().unwrap().to_string();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&volume)
            .unwrap();
        let at = damaged["offset"].as_u64().unwrap() + damaged["length"].as_u64().unwrap() / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    }
    let study = corpus.study_uids()[0].clone();
    remove_online(&server);
    let out_cli = server.cli(&[
        "backup",
        "import-volume",
        "--json",
        volume.to_str().unwrap(),
    ]);
    assert!(
        !out_cli.status.success(),
        "a damaged member fails the import"
    );
    let summary: Value = serde_json::from_slice(&out_cli.stdout).unwrap();
    assert_eq!(summary["damaged"], 1, "{summary}");
    assert_eq!(summary["restored"], 8, "{summary}");
    assert!(
        summary["failures"][0]
            .as_str()
            .unwrap()
            .contains(damaged["path"].as_str().unwrap()),
        "{summary}"
    );
    let status = server.status();
    let last_run = &status["last_runs"]["import-volume"];
    assert_eq!(last_run["outcome"], "failed", "{status}");
    assert_eq!(last_run["summary"]["damaged"], 1, "{status}");
    let (last, got) = get(&server, &study);
    assert!(last.contains("failed=1"), "{last}");
    assert!(
        !got.contains_key(&damaged_uid),
        "damaged bytes never served"
    );
    assert_eq!(got.len(), 8);

    // A new, empty Strata ingests the volume and records it.
    let fresh = TestServer::start("");
    let (ok, summary) = cli_json(
        &fresh,
        &[
            "backup",
            "import-volume",
            "--json",
            volume.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{summary}");
    assert_eq!(summary["ingested"], 8, "{summary}");
    assert_eq!(summary["copies_recorded"], 8, "{summary}");
    assert_eq!(summary["damaged"], 1, "{summary}");
    let mut want = originals(&corpus, &study);
    want.remove(&damaged_uid);
    let (last, got) = get(&fresh, &study);
    assert!(last.starts_with("FINAL 0x0000"), "{last}");
    assert_same_data_sets(&got, &want, "ingested from a volume");
    let (_, volumes) = cli_json(&fresh, &["backup", "volumes", "--json"]);
    assert_eq!(volumes.as_array().unwrap().len(), 1, "{volumes}");
    // The ingested files are the members byte for byte (their sender kept), so the volume's
    // copies count: only the damaged member's instance, which never came back, is missing
    // from a volume, and a new export has nothing to write.
    let again = tempfile::tempdir().unwrap();
    let summary = export(&fresh, again.path(), "10G");
    assert_eq!(summary["instances"], 0, "{summary}");
}

fn verify_volumes(server: &TestServer, dir: &Path, repair: bool) -> (bool, Value) {
    let mut args = vec!["verify", "--json", "--volumes", dir.to_str().unwrap()];
    if repair {
        args.push("--repair");
    }
    cli_json(server, &args)
}

fn volume_members(volume: &Path) -> Vec<Value> {
    let extracted = tempfile::tempdir().unwrap();
    manifest(&extract_and_check(volume, extracted.path()))["members"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn verify_reads_offline_copies_in_the_volume_folder_and_export_replaces_bad_ones() {
    let corpus = Corpus::small(2, 4, 1, 3, 64);
    let server = TestServer::start("");
    server.store(&corpus);
    let out = tempfile::tempdir().unwrap();
    export(&server, out.path(), "1M");
    let files = volume_files(out.path());
    assert!(files.len() >= 3, "{files:?}");
    let (ok, report) = verify_volumes(&server, out.path(), false);
    assert!(ok, "{report}");
    assert_eq!(report["copies"]["offline"]["ok"], 11, "{report}");
    assert_eq!(report["offline_not_checked"], 0, "{report}");

    // A flipped byte that import-volume meets: that copy stops counting, so the next export
    // writes the instance again, and verify forgets the replaced copy.
    let (a, b, c) = (&files[0], &files[1], &files[2]);
    let a_members = volume_members(a);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(a).unwrap();
        let at = a_members[0]["offset"].as_u64().unwrap() + 100;
        f.write_all_at(b"\xde\xad", at).unwrap();
    }
    let (ok, imported) = cli_json(
        &server,
        &["backup", "import-volume", "--json", a.to_str().unwrap()],
    );
    assert!(!ok, "{imported}");
    assert_eq!(imported["damaged"], 1, "{imported}");
    let again = export(&server, out.path(), "1M");
    assert_eq!(again["instances"], 1, "{again}");
    let (ok, report) = verify_volumes(&server, out.path(), false);
    assert!(ok, "{report}");
    assert_eq!(report["copies"]["offline"]["ok"], 11, "{report}");

    // A volume cut short, and one not in the folder (still on the shelf).
    let b_members = volume_members(b);
    let c_members = volume_members(c).len() as u64;
    let cut = b_members[0]["offset"].as_u64().unwrap() + 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(b)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let shelf = tempfile::tempdir().unwrap();
    let shelved = shelf.path().join(c.file_name().unwrap());
    std::fs::rename(c, &shelved).unwrap();
    let c_id = c.file_stem().unwrap().to_str().unwrap();

    let (ok, report) = verify_volumes(&server, out.path(), false);
    assert!(!ok, "{report}");
    let offline = &report["copies"]["offline"];
    assert_eq!(offline["damaged"], b_members.len() as u64, "{report}");
    assert_eq!(offline["missing"], 0, "{report}");
    assert_eq!(report["offline_not_checked"], c_members, "{report}");
    assert_eq!(report["volumes_absent"][c_id], c_members, "{report}");
    let b_id = b.file_stem().unwrap().to_str().unwrap();
    let problems = report["problems"].to_string();
    for m in &b_members {
        assert!(
            problems.contains(m["sop_instance_uid"].as_str().unwrap()),
            "{report}"
        );
    }
    assert!(problems.contains(b_id), "{report}");
    let text_out = text(&server.cli(&["verify", "--volumes", out.path().to_str().unwrap()]));
    assert!(text_out.contains("not in the folder given"), "{text_out}");
    // Without the folder, offline copies are not read, and nothing else is wrong.
    let (ok, report) = cli_json(&server, &["verify", "--json"]);
    assert!(ok, "{report}");
    assert_eq!(report["offline_not_checked"], 11, "{report}");

    // Repair cannot rewrite a volume: the damage stays until export-volume replaces it.
    let (ok, report) = verify_volumes(&server, out.path(), true);
    assert!(!ok, "{report}");
    assert_eq!(
        report["offline_to_export"],
        b_members.len() as u64,
        "{report}"
    );
    assert_eq!(report["remaining"], b_members.len() as u64, "{report}");
    let again = export(&server, out.path(), "1M");
    assert_eq!(again["instances"], b_members.len() as u64, "{again}");
    std::fs::rename(&shelved, c).unwrap();
    let (ok, report) = verify_volumes(&server, out.path(), false);
    assert!(ok, "{report}");
    assert_eq!(report["copies"]["offline"]["ok"], 11, "{report}");
    assert_eq!(report["offline_not_checked"], 0, "{report}");
}

fn restore(server: &TestServer, study: &str) -> (bool, Value) {
    cli_json(server, &["restore", "--json", "--study", study])
}

#[test]
fn restore_mends_a_study_from_whichever_copy_survives_and_names_the_volumes_it_needs() {
    let corpus = Corpus::small(1, 4, 1, 3, 65);
    // The server's own repair pass waits an hour: restore is the one mending here.
    let server = TestServer::start("[backup]\npoll_secs = 3600\n");
    server.store(&corpus);
    let studies = corpus.study_uids();
    let (a, b) = (&studies[0], &studies[1]);
    let (ok, backed) = cli_json(
        &server,
        &["backup", "run", "--study", a, "--study", b, "--json"],
    );
    assert!(ok, "{backed}");
    assert_eq!(backed["backed_up"], 2, "{backed}");
    let out = tempfile::tempdir().unwrap();
    export(&server, out.path(), "10G");
    let (ok, tiered) = cli_json(&server, &["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(ok, "{tiered}");
    assert_eq!(tiered["archived"], 2, "{tiered}");

    // a comes back online whole; then one of its files is deleted and another damaged.
    let (ok, restored) = restore(&server, a);
    assert!(ok, "{restored}");
    let a_count = originals(&corpus, a).len() as u64;
    assert_eq!(restored["instances"], a_count, "{restored}");
    assert_eq!(restored["repaired"], 0, "{restored}");
    let located = server.locate(a);
    assert!(located.iter().all(|l| l["tier"] == "online"), "{located:?}");
    let path_of = |l: &Value| server.online_dir().join(l["location"].as_str().unwrap());
    std::fs::remove_file(path_of(&located[0])).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path_of(&located[1]))
            .unwrap();
        f.write_all_at(b"\x00\xff\x00", 400).unwrap();
    }
    let (ok, restored) = restore(&server, a);
    assert!(ok, "{restored}");
    assert_eq!(restored["instances"], 0, "{restored}");
    assert_eq!(restored["repaired"], 2, "{restored}");
    assert_same_data_sets(&server.get_study(a), &originals(&corpus, a), "a restored");
    let (ok, report) = cli_json(&server, &["verify", "--json"]);
    assert!(
        ok,
        "the mended files are on disk, not only served from copies: {report}"
    );

    // b is archived; its container and its near-line copy are both lost. Only the volume
    // holds it: restore names every instance and the volume file, and fails.
    let located = server.locate(b);
    let container = server
        .dir
        .join("archive")
        .join(located[0]["location"].as_str().unwrap());
    std::fs::remove_file(&container).unwrap();
    for copy in located[0]["copies"].as_array().unwrap() {
        if copy["kind"] == "nearline" {
            let path = server
                .dir
                .join("nearline")
                .join(copy["location"].as_str().unwrap());
            std::fs::remove_file(path).unwrap();
        }
    }
    let (ok, restored) = restore(&server, b);
    assert!(!ok, "{restored}");
    let lost = restored["unrecoverable"].as_array().unwrap();
    assert_eq!(lost.len(), located.len(), "{restored}");
    for l in &located {
        let uid = l["sop_instance_uid"].as_str().unwrap();
        assert!(
            lost.iter().any(|x| x.as_str().unwrap().starts_with(uid)),
            "{uid} not named: {restored}"
        );
    }
    let volume = volume_files(out.path()).remove(0);
    assert_eq!(
        restored["volumes_needed"],
        serde_json::json!([volume.display().to_string()]),
        "{restored}"
    );
    assert_eq!(availability(&server, b), "OFFLINE");
    let status = server.status();
    assert_eq!(
        status["last_runs"]["restore"]["outcome"], "failed",
        "{status}"
    );
    let said = text(&server.cli(&["restore", "--study", b]));
    assert!(said.contains("strata backup import-volume"), "{said}");

    // A volume whose copies were found damaged is not worth fetching: not named.
    let mark_offline = |bad: bool| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let locator = locator(&server.dir).await;
            for l in &located {
                for c in locator
                    .copies_of(l["sop_instance_uid"].as_str().unwrap())
                    .await
                    .unwrap()
                {
                    locator.mark_copy(&c, bad).await.unwrap();
                }
            }
            locator.close().await;
        });
    };
    mark_offline(true);
    let (ok, restored) = restore(&server, b);
    assert!(!ok, "{restored}");
    assert_eq!(
        restored["volumes_needed"],
        serde_json::json!([]),
        "{restored}"
    );
    mark_offline(false);

    // Importing the volume it named, then restoring, makes b whole.
    let (ok, imported) = cli_json(
        &server,
        &[
            "backup",
            "import-volume",
            "--json",
            volume.to_str().unwrap(),
        ],
    );
    assert!(ok, "{imported}");
    assert_eq!(imported["restored"], located.len() as u64, "{imported}");
    let (ok, restored) = restore(&server, b);
    assert!(ok, "{restored}");
    assert!(server.locate(b).iter().all(|l| l["tier"] == "online"));
    assert_same_data_sets(&server.get_study(b), &originals(&corpus, b), "b restored");
}

#[test]
fn kill_9_during_export_never_records_an_incomplete_volume() {
    let corpus = Corpus::small(2, 40, 0, 1, 64);
    let server = TestServer::start(SHORT_LEASES);
    server.store(&corpus);
    let out = tempfile::tempdir().unwrap();
    let check_recorded = || {
        let (_, volumes) = cli_json(&server, &["backup", "volumes", "--json"]);
        for v in volumes.as_array().unwrap() {
            if v["state"] != "complete" {
                continue;
            }
            let file = out
                .path()
                .join(format!("{}.tar", v["id"].as_str().unwrap()));
            assert!(file.exists(), "recorded volume {v} has no file");
            let sum = run(Command::new("sha256sum").arg(&file));
            assert_eq!(sum.split_whitespace().next().unwrap(), v["sha256"], "{v}");
        }
    };
    // A temporary this round's export writes (not one a killed run left for it to delete).
    let temporaries = || -> Vec<PathBuf> {
        files_below(out.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tar.tmp"))
            .collect()
    };
    for round in 0..8u64 {
        let left = temporaries();
        let new_temporary = || temporaries().iter().any(|p| !left.contains(p));
        // Members paced to 20 MB/s: a 3 MB volume takes about 150 ms to write, so a kill at
        // most 49 ms after its temporary appeared always lands inside it.
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["backup", "export-volume", "--throttle-mb-s", "20"])
            .args(["--max-size", "3M", "--out"])
            .arg(out.path())
            .arg("--config")
            .arg(&server.config)
            .spawn()
            .unwrap();
        // Once a volume is being written, a little later each round.
        assert!(
            wait_while_running(&mut child, new_temporary),
            "round {round}: the export ended before writing a volume"
        );
        std::thread::sleep(Duration::from_millis(round * 7));
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the export finished");
        assert!(
            new_temporary(),
            "round {round}: the kill did not interrupt a volume: {:?} before {left:?}",
            files_below(out.path())
        );
        check_recorded();
        // The next export deletes what this one left once its lease has expired.
        wait_for_lease_expiry(&server.config, child.id());
    }
    let summary = export(&server, out.path(), "3M");
    assert_eq!(summary["failed"], 0, "{summary}");
    check_recorded();
    assert!(
        !files_below(out.path())
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".tmp")),
        "no temporaries left"
    );
    // Every instance on exactly one recorded volume, each file intact for tar.
    assert_eq!(server.status()["copies"]["offline"], 80);
    let extracted = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for file in volume_files(out.path()) {
        let dir = extract_and_check(&file, extracted.path());
        for m in manifest(&dir)["members"].as_array().unwrap() {
            seen.push(m["sop_instance_uid"].as_str().unwrap().to_string());
        }
    }
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((n, seen.len()), (80, 80), "no volume file left unrecorded");
}

/// `--throttle-mb-s` paces volume writes: a throttled export cannot beat its limit.
#[test]
fn export_volume_keeps_to_its_throttle() {
    // One CT study of 16 images of 512x512x16 bits: about 8.4 MB.
    let corpus = Corpus::small(1, 16, 0, 1, 81);
    let server = TestServer::start("");
    server.store(&corpus);
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ok, summary) = cli_json(
        &server,
        &[
            "backup",
            "export-volume",
            "--json",
            "--throttle-mb-s",
            "4",
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    let secs = started.elapsed().as_secs_f64();
    assert!(ok, "{summary}");
    assert_eq!(summary["instances"], 16, "{summary}");
    let bytes = summary["bytes"].as_u64().unwrap();
    assert!(bytes > 6_000_000, "{summary}");
    let floor = bytes as f64 / 4e6 * 0.9;
    eprintln!("throttled export: {bytes} bytes in {secs:.2} s (floor {floor:.2} s)");
    assert!(
        secs >= floor,
        "4 MB/s for {bytes} bytes took only {secs:.2} s (at least {floor:.2} s expected)"
    );
}

/// A 120-digit SOP Instance UID, which no ustar header could hold as a member name, is no
/// UID (PS3.5 9.1: at most 64 characters): import refuses it with 0xA900 and says why, and
/// everything stored fits a volume (three UIDs of at most 64 characters always fit a ustar
/// name and prefix; rows from before the check get digest names, see the unit test).
#[test]
fn an_over_long_uid_is_refused_at_import_and_every_stored_instance_fits_a_volume() {
    let corpus = Corpus::small(1, 3, 0, 1, 91);
    let server = TestServer::start("");
    server.store(&corpus);
    let odd = tempfile::tempdir().unwrap();
    let odd_file = odd.path().join("long-uid.dcm");
    let long_uid = format!("1.2.{}", "3".repeat(120));
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import sys, pydicom\n\
             ds = pydicom.dcmread(sys.argv[1])\n\
             ds.SOPInstanceUID = sys.argv[3]\n\
             ds.file_meta.MediaStorageSOPInstanceUID = sys.argv[3]\n\
             ds.save_as(sys.argv[2])\n",
        )
        .arg(corpus.path(&corpus.files[0]))
        .arg(&odd_file)
        .arg(&long_uid)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (ok, imported) = cli_json(&server, &["import", "--json", odd.path().to_str().unwrap()]);
    assert!(!ok, "{imported}");
    assert_eq!(imported["stored"], 0, "{imported}");
    let failure = imported["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("0xA900") && failure.contains("124 characters long (at most 64)"),
        "{imported}"
    );

    let dir = tempfile::tempdir().unwrap();
    let args = [
        "backup",
        "export-volume",
        "--json",
        "--out",
        dir.path().to_str().unwrap(),
    ];
    let (ok, summary) = cli_json(&server, &args);
    assert!(ok, "{summary}");
    assert_eq!(summary["instances"], corpus.files.len(), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[test]
fn instances_over_the_cap_go_alone_and_a_damaged_primary_is_exported_from_its_original_never_a_roi_copy(
) {
    let corpus = Corpus::small(2, 3, 0, 1, 93);
    let server = TestServer::start(BACKUP);
    server.store(&corpus);
    let studies = corpus.study_uids();
    let (s1, s2) = (&studies[0], &studies[1]);
    // Near-line originals of everything; then s2 backed up again as JPEG 2000 ROI copies,
    // which replace its originals (its primaries are intact).
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{summary}");
    let config = std::fs::read_to_string(&server.config).unwrap();
    let config = config.replace(BACKUP, &format!("{BACKUP}format = \"j2k-roi\"\n"));
    std::fs::write(&server.config, config).unwrap();
    let (ok, summary) = cli_json(&server, &["backup", "run", "--json", "--study", s2]);
    assert!(ok, "{summary}");
    let (one, two) = (server.locate(s1), server.locate(s2));
    assert!(one.iter().all(|l| l["copies"][0]["format"] == "original"));
    assert!(two.iter().all(|l| l["copies"][0]["format"] == "j2k-roi"));
    // A damaged primary with a near-line original, and one whose only other copy is lossy.
    let rescued = one[0]["sop_instance_uid"].as_str().unwrap().to_string();
    let lossy_only = two[0]["sop_instance_uid"].as_str().unwrap().to_string();
    damage_primary(&server, &one[0]);
    damage_primary(&server, &two[0]);

    // Every instance (about 525 kB) is larger than a 300 kB volume: each goes alone.
    let out = tempfile::tempdir().unwrap();
    let (ok, summary) = cli_json(
        &server,
        &[
            "backup",
            "export-volume",
            "--json",
            "--max-size",
            "300K",
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(!ok, "an instance left out fails the export: {summary}");
    assert_eq!(summary["instances"], 5, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let failure = summary["failures"][0].as_str().unwrap();
    assert!(failure.starts_with(&lossy_only), "{summary}");
    let files = volume_files(out.path());
    assert_eq!(files.len(), 5, "one volume per instance: {summary}");
    let originals = corpus.paths_by_uid();
    let extracted = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for file in &files {
        assert!(std::fs::metadata(file).unwrap().len() > 300 * 1024);
        let dir = extract_and_check(file, extracted.path());
        let members = manifest(&dir)["members"].as_array().unwrap().clone();
        assert_eq!(members.len(), 1, "{}: not alone", file.display());
        let uid = members[0]["sop_instance_uid"].as_str().unwrap().to_string();
        let path = dir.join(members[0]["path"].as_str().unwrap());
        // Lossless and bit-identical, the damaged one read from its near-line original.
        assert!(
            data_set_bytes(&path) == data_set_bytes(&originals[&uid]),
            "{uid} differs from what was stored"
        );
        seen.push(uid);
    }
    assert!(seen.contains(&rescued), "{seen:?}");
    assert!(!seen.contains(&lossy_only), "a ROI copy went into a volume");
}
