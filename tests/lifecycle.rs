//! Deleting (issue #18): `strata delete` takes a series, an instance or a whole study out of
//! every tier and copy: online files, archive containers (rewritten without them, or removed
//! with the study), near-line containers (written again for what is left), and marks their
//! offline copies deleted so `import-volume` does not bring them back; C-FIND and C-GET
//! (pynetdicom) stop showing them at once, the rest of the study is served unchanged, and
//! the same objects can be stored again. A delete killed (-9) while it rewrites a container
//! never shows a deleted instance again, and the next run finishes it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::c_find as find;
use common::*;
use serde_json::Value;

const BACKUP: &str = "[backup]\nenqueue_on_receive = true\npoll_secs = 3600\n";

fn delete(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["delete", "--json", "--reason", "wrong patient"];
    all.extend(args);
    let (ok, summary) = cli_json(server, &all);
    assert!(ok, "{summary} {}", server.log());
    summary
}

fn series_of(server: &TestServer, study: &str) -> Vec<String> {
    let mut uids: Vec<String> = find(
        server,
        "SERIES",
        &[
            format!("StudyInstanceUID={study}"),
            "SeriesInstanceUID=".into(),
        ],
    )
    .iter()
    .map(|m| m["SeriesInstanceUID"].as_str().unwrap().to_string())
    .collect();
    uids.sort();
    uids
}

/// Every stored file below the tiers' folders (not the locator, which names deleted UIDs).
fn tier_files(server: &TestServer) -> Vec<PathBuf> {
    ["online", "archive", "nearline"]
        .iter()
        .flat_map(|d| files_below(&server.dir.join(d)))
        .collect()
}

/// The tier files holding any of `uids` (as the bytes of the UID text).
fn holding(files: &[PathBuf], uids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        for uid in uids {
            if bytes.windows(uid.len()).any(|w| w == uid.as_bytes()) {
                found.push(format!("{} holds {uid}", f.display()));
            }
        }
    }
    found
}

fn containers(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sdcm"))
        .collect()
}

fn uids_of(corpus: &Corpus, series: &str) -> Vec<String> {
    corpus
        .files
        .iter()
        .filter(|f| f.series_instance_uid == series)
        .map(|f| f.sop_instance_uid.clone())
        .collect()
}

#[test]
fn delete_takes_series_instances_and_studies_out_of_every_tier_and_copy() {
    // Study A: 6 CT images in 3 series, archived; study B: 4 CT images in 2 series, online.
    let a_corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "6",
        "--mr-studies",
        "0",
        "--series-per-study",
        "3",
        "--seed",
        "81",
    ]);
    let b_corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "4",
        "--mr-studies",
        "0",
        "--series-per-study",
        "2",
        "--seed",
        "82",
    ]);
    let server = TestServer::start(BACKUP);
    server.store(&a_corpus);
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    server.store(&b_corpus);
    let (ok, backed) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{backed}");
    assert_eq!(backed["backed_up"], 2, "{backed}");
    let volumes = tempfile::tempdir().unwrap();
    let (ok, exported) = cli_json(
        &server,
        &[
            "backup",
            "export-volume",
            "--json",
            "--out",
            volumes.path().to_str().unwrap(),
        ],
    );
    assert!(ok, "{exported}");
    let a = a_corpus.study_uids()[0].clone();
    let b = b_corpus.study_uids()[0].clone();
    let a_series = series_of(&server, &a);
    assert_eq!(a_series.len(), 3);
    let old_container = server.locate(&a)[0]["location"]
        .as_str()
        .unwrap()
        .to_string();

    // A series of the archived study: its container is written again without it.
    let gone_series = a_series[1].clone();
    let gone = uids_of(&a_corpus, &gone_series);
    assert_eq!(gone.len(), 2);
    let d = delete(&server, &["--series", &gone_series]);
    assert_eq!(d["level"], "SERIES", "{d}");
    assert_eq!(d["instances"], 2, "{d}");
    assert_eq!(d["study_gone"], false, "{d}");
    assert_eq!(d["archive_containers"], 1, "{d}");
    assert_eq!(d["archive_containers_rewritten"], 1, "{d}");
    assert_eq!(d["nearline_containers"], 1, "{d}");
    assert_eq!(d["nearline_rewritten"], true, "{d}");
    assert_eq!(d["offline_volumes"].as_array().unwrap().len(), 1, "{d}");
    let remaining: Vec<String> = a_series
        .iter()
        .filter(|s| **s != gone_series)
        .cloned()
        .collect();
    assert_eq!(series_of(&server, &a), remaining);
    let study = find(
        &server,
        "STUDY",
        &[
            format!("StudyInstanceUID={a}"),
            "NumberOfStudyRelatedInstances=".into(),
            "NumberOfStudyRelatedSeries=".into(),
        ],
    );
    assert_eq!(study[0]["NumberOfStudyRelatedInstances"], "4", "{study:?}");
    assert_eq!(study[0]["NumberOfStudyRelatedSeries"], "2", "{study:?}");
    let mut want = originals(&a_corpus, &a);
    want.retain(|uid, _| !gone.contains(uid));
    assert_same_data_sets(&server.get_study(&a), &want, "after the series delete");
    let located = server.locate(&a);
    assert!(located.iter().all(|l| l["tier"] == "archive"
        && l["location"] != old_container.as_str()
        && l["copies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "nearline")));
    assert!(!server.dir.join("archive").join(&old_container).exists());
    assert_eq!(holding(&tier_files(&server), &gone), Vec::<String>::new());

    // An online instance.
    let b_uids: Vec<String> = b_corpus
        .files
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .collect();
    let d = delete(&server, &["--instance", &b_uids[0]]);
    assert_eq!(
        (d["instances"].as_u64(), d["online_files"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    assert_eq!(d["nearline_rewritten"], true, "{d}");
    assert_eq!(server.locate(&b).len(), 3);
    assert_eq!(
        holding(&tier_files(&server), &b_uids[..1]),
        Vec::<String>::new()
    );

    // The whole archived study: container, near-line copy, rows and all.
    let d = delete(&server, &["--study", &a]);
    assert_eq!(
        (d["instances"].as_u64(), d["study_gone"].as_bool()),
        (Some(4), Some(true)),
        "{d}"
    );
    assert!(find(&server, "STUDY", &[format!("StudyInstanceUID={a}")]).is_empty());
    let a_uids: Vec<String> = a_corpus
        .files
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .collect();
    assert_eq!(holding(&tier_files(&server), &a_uids), Vec::<String>::new());
    assert_eq!(containers(&server.dir.join("archive")).len(), 0);
    assert_eq!(
        containers(&server.dir.join("nearline")).len(),
        1,
        "study B's"
    );
    // Recorded: the job history and the counts.
    let status = server.status();
    assert_eq!(status["last_runs"]["delete"]["outcome"], "ok", "{status}");
    assert_eq!(
        status["last_runs"]["delete"]["summary"]["instances"], 4,
        "{status}"
    );
    assert_eq!(status["studies"], 1, "{status}");
    assert_eq!(status["instances"], 3, "{status}");

    let again = server.cli(&["delete", "--study", &a]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains(&format!("no STUDY with UID {a} is stored")),
        "{}",
        text(&again)
    );

    // Who touched the study: the modality that sent it, the admin who deleted it, and why
    // (queries and retrieves of it are there too: tests/audit.rs).
    let (ok, audit) = cli_json(&server, &["audit", "--json", "--study", &a]);
    assert!(ok, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let stored: Vec<&Value> = entries.iter().filter(|e| e["event"] == "stored").collect();
    assert_eq!(stored.len(), 1, "{audit}");
    assert_eq!(
        (&stored[0]["who"], &stored[0]["instances"]),
        (&Value::from("MODALITY"), &Value::from(6)),
        "{audit}"
    );
    let deleted: Vec<&Value> = entries.iter().filter(|e| e["event"] == "deleted").collect();
    assert_eq!(deleted.len(), 1, "{audit}");
    assert!(
        deleted[0]["who"].as_str().unwrap().starts_with("cli:"),
        "{audit}"
    );
    assert_eq!(deleted[0]["instances"], 6, "{audit}");
    assert_eq!(deleted[0]["detail"], "wrong patient", "{audit}");
    let others: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            !["stored", "deleted", "queried", "retrieved"].contains(&e["event"].as_str().unwrap())
        })
        .collect();
    assert!(others.is_empty(), "{audit}");

    // The volume still holds them; importing it leaves them out.
    let files: Vec<String> = files_below(volumes.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["backup", "import-volume", "--json"];
    args.extend(files.iter().map(String::as_str));
    let (ok, imported) = cli_json(&server, &args);
    assert!(ok, "{imported}");
    assert_eq!(imported["deleted"], 7, "{imported}");
    assert_eq!(imported["ingested"], 0, "{imported}");
    assert!(find(&server, "STUDY", &[format!("StudyInstanceUID={a}")]).is_empty());

    // The server cached the deleted series' rows when it stored them: storing the same
    // objects again makes new ones, served in full.
    server.store(&a_corpus);
    assert_eq!(series_of(&server, &a).len(), 3);
    assert_same_data_sets(
        &server.get_study(&a),
        &originals(&a_corpus, &a),
        "stored again after the delete",
    );
}

#[test]
fn a_delete_killed_while_it_rewrites_a_container_is_finished_by_the_next_run() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "24",
        "--mr-studies",
        "0",
        "--series-per-study",
        "2",
        "--seed",
        "83",
    ]);
    // Container writes paced to 4 MB/s: the rewrite of the remaining 6 MB takes 1.5 s.
    let server = TestServer::start(&format!("{SHORT_LEASES}[tiering]\nthrottle_mb_s = 4\n"));
    server.store(&corpus);
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let study = corpus.study_uids()[0].clone();
    let series = series_of(&server, &study);
    let gone = uids_of(&corpus, &series[0]);
    let tmp = server.dir.join("archive/tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["delete", "--series", &series[0], "--config"])
        .arg(&server.config)
        .spawn()
        .unwrap();
    assert!(
        wait_while_running(&mut child, || !files_below(&tmp).is_empty()),
        "the delete ended before rewriting the container"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();

    // Gone from the index at once; the rest served from the old container meanwhile.
    assert_eq!(series_of(&server, &study), series[1..].to_vec());
    let mut want = originals(&corpus, &study);
    want.retain(|uid, _| !gone.contains(uid));
    assert_same_data_sets(&server.get_study(&study), &want, "after the kill");

    // The next run (any converter) finishes it once the killed one's lease expired.
    wait_for_lease_expiry(&server.config, child.id());
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(containers(&server.dir.join("archive")).len(), 1);
    assert!(files_below(&tmp).is_empty());
    assert_eq!(holding(&tier_files(&server), &gone), Vec::<String>::new());
    assert_same_data_sets(&server.get_study(&study), &want, "after recovery");
    let located: HashMap<String, usize> =
        server
            .locate(&study)
            .iter()
            .fold(HashMap::new(), |mut m, l| {
                *m.entry(l["location"].as_str().unwrap().to_string())
                    .or_default() += 1;
                m
            });
    assert_eq!(located.len(), 1, "{located:?}");
}

#[test]
fn studies_past_retention_are_listed_first_then_deleted_by_the_server_in_its_window() {
    // Generated Study Dates fall in 2019-2024: MR (1 year) is past retention, CT (100) not.
    let corpus = Corpus::small(1, 2, 2, 2, 84);
    let dir = tempfile::tempdir().unwrap();
    let policy = "[lifecycle]\nretention_years = 100\nretention_years_by_modality = { MR = 1 }\npoll_secs = 1\n";
    write_config(dir.path(), policy);
    let server = TestServer::start_in(dir.path(), "", "");
    server.store(&corpus);
    let modality_of = |study: &str| {
        corpus
            .files
            .iter()
            .find(|f| f.study_instance_uid == study)
            .unwrap()
            .modality
            .clone()
    };
    let mut mr: Vec<String> = corpus
        .study_uids()
        .into_iter()
        .filter(|s| modality_of(s) == "MR")
        .collect();
    mr.sort();
    let ct: Vec<String> = corpus
        .study_uids()
        .into_iter()
        .filter(|s| modality_of(s) == "CT")
        .collect();
    assert_eq!((mr.len(), ct.len()), (2, 1));
    let listed = |v: &Value| {
        let mut uids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["study_instance_uid"].as_str().unwrap().to_string())
            .collect();
        uids.sort();
        uids
    };

    // Listed first: by `strata schedule` and a dry run, which deletes nothing.
    let (ok, schedule) = cli_json(&server, &["schedule", "--json"]);
    assert!(ok, "{schedule}");
    let retention = &schedule["retention"];
    assert_eq!(retention["queued"]["studies"], 2, "{retention}");
    assert_eq!(listed(&retention["queued"]["listed"]), mr, "{retention}");
    assert_eq!(retention["window"], Value::Null, "{retention}");
    let (ok, dry) = cli_json(&server, &["lifecycle", "run", "--dry-run", "--json"]);
    assert!(ok, "{dry}");
    assert_eq!(listed(&dry["expired"]), mr, "{dry}");
    assert!(
        dry["expired"][0]["date"].as_str().unwrap() < "20251205",
        "{dry}"
    );
    assert_eq!(dry["deleted"], 0, "{dry}");
    assert_eq!(server.instances(), 6);

    // The server's worker, inside its (all-day) window, deletes them.
    server.terminate();
    let config = dir.path().join("strata.toml");
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config = text_config.replace(
        "poll_secs = 1\n",
        "poll_secs = 1\nwindow = \"00:00-00:00\"\n",
    );
    std::fs::write(&config, text_config).unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.instances() != 2 {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for study in &mr {
        assert!(find(&server, "STUDY", &[format!("StudyInstanceUID={study}")]).is_empty());
    }
    assert_same_data_sets(
        &server.get_study(&ct[0]),
        &originals(&corpus, &ct[0]),
        "the CT study is kept",
    );
    let status = server.status();
    let run = &status["last_runs"]["retention"];
    assert_eq!(run["trigger"], "server", "{status}");
    assert_eq!(run["summary"]["deleted"], 2, "{status}");
    let (ok, after) = cli_json(&server, &["lifecycle", "run", "--json"]);
    assert!(ok, "{after}");
    assert_eq!(after["expired"].as_array().unwrap().len(), 0, "{after}");
}

/// 64 bytes from the end of a file's Pixel Data (noise: no other instance has them).
fn pixel_needle(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[bytes.len() - 1000..bytes.len() - 936].to_vec()
}

/// The tier files holding any of `needles`.
fn holding_bytes(files: &[PathBuf], needles: &[Vec<u8>]) -> usize {
    files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .count()
}

fn image_uids(server: &TestServer, study: &str) -> Vec<String> {
    let mut uids: Vec<String> = series_of(server, study)
        .iter()
        .flat_map(|series| {
            find(
                server,
                "IMAGE",
                &[
                    format!("StudyInstanceUID={study}"),
                    format!("SeriesInstanceUID={series}"),
                    "SOPInstanceUID=".into(),
                ],
            )
        })
        .map(|m| m["SOPInstanceUID"].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

#[test]
fn a_rejection_note_hides_instances_at_once_and_their_bytes_go_after_the_keep_days() {
    // One CT study of 6 images in 3 series, archived and copied near-line.
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "6",
        "--mr-studies",
        "0",
        "--series-per-study",
        "3",
        "--seed",
        "86",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let web = "[web]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n";
    write_config(dir.path(), &format!("{BACKUP}{web}"));
    let config = dir.path().join("strata.toml");
    let server = TestServer::start_in(dir.path(), "", "");
    server.store(&corpus);
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let (ok, backed) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{backed}");
    let study = corpus.study_uids()[0].clone();
    let series = series_of(&server, &study);
    assert_eq!(series.len(), 3);

    // The note rejects the first series and one image of the second (113037).
    let mut rejected = uids_of(&corpus, &series[0]);
    rejected.push(uids_of(&corpus, &series[1])[0].clone());
    let by_uid = corpus.paths_by_uid();
    let rejected_paths: Vec<PathBuf> = rejected.iter().map(|u| by_uid[u].clone()).collect();
    let note = dir.path().join("rejection.dcm");
    let note_uid = rejection_note("113037", &rejected_paths, &note);
    let needles: Vec<Vec<u8>> = rejected_paths.iter().map(|p| pixel_needle(p)).collect();
    assert_eq!(
        holding_bytes(&tier_files(&server), &needles),
        2,
        "archive and near-line"
    );

    let sent = server.storescu("MODALITY", std::slice::from_ref(&note));
    assert!(sent.status.success(), "{} {}", text(&sent), server.log());

    // At once: C-FIND and C-GET see the rest of the study and the note, nothing rejected.
    let mut kept: Vec<String> = corpus
        .files
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .filter(|u| !rejected.contains(u))
        .collect();
    kept.push(note_uid.clone());
    kept.sort();
    assert_eq!(image_uids(&server, &study), kept);
    let counts = find(
        &server,
        "STUDY",
        &[
            format!("StudyInstanceUID={study}"),
            "NumberOfStudyRelatedInstances=".into(),
            "NumberOfStudyRelatedSeries=".into(),
        ],
    );
    assert_eq!(
        counts[0]["NumberOfStudyRelatedInstances"], "4",
        "{counts:?}"
    );
    assert_eq!(counts[0]["NumberOfStudyRelatedSeries"], "3", "{counts:?}");
    // C-GET with a context for the note as well as the images.
    let syntaxes = "1.2.840.10008.1.2.1,1.2.840.10008.1.2";
    let contexts: Vec<String> = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.59"]
        .iter()
        .flat_map(|class| ["--context".to_string(), format!("{class}:{syntaxes}")])
        .collect();
    let get_all = || {
        let out = tempfile::tempdir().unwrap();
        server.get_study_into(&study, out.path(), &contexts);
        received(out.path())
    };
    let got = get_all();
    let mut got_uids: Vec<String> = got.keys().cloned().collect();
    got_uids.sort();
    assert_eq!(got_uids, kept);
    let mut want = originals(&corpus, &study);
    want.retain(|uid, _| !rejected.contains(uid));
    let mut got_images = got.clone();
    got_images.remove(&note_uid);
    assert_same_data_sets(&got_images, &want, "the rest of the study");
    // QIDO-RS and WADO-RS too.
    let port = server.web_port.unwrap();
    let (status, _, body) = http_get(port, &format!("/dicom-web/studies/{study}/instances"), &[]);
    assert_eq!(status, 200);
    let listed: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let mut qido: Vec<String> = listed
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    qido.sort();
    assert_eq!(qido, kept);
    let wado = format!(
        "/dicom-web/studies/{study}/series/{}/instances/{}",
        series[0], rejected[0]
    );
    assert_eq!(http_get(port, &wado, &[]).0, 404);
    // Their bytes are kept for now.
    assert_eq!(holding_bytes(&tier_files(&server), &needles), 2);

    // Sent again (a lost answer): accepted, nothing more hidden. A rejected image sent
    // again is acknowledged and stays hidden.
    let again = server.storescu("MODALITY", std::slice::from_ref(&note));
    assert!(again.status.success(), "{}", text(&again));
    let again = server.scu(
        "store",
        "MODALITY",
        &[rejected_paths[0].display().to_string()],
    );
    let (acked, failed) = acknowledged(&text(&again));
    assert_eq!(acked, rejected[..1].to_vec(), "{failed:?} {}", text(&again));
    assert_eq!(image_uids(&server, &study), kept);
    assert_eq!(holding_bytes(&tier_files(&server), &needles), 2);

    // The default keep (30 days): nothing is due.
    let (ok, dry) = cli_json(&server, &["lifecycle", "run", "--dry-run", "--json"]);
    assert!(ok, "{dry}");
    assert_eq!(dry["policy"]["rejected_keep_days"], 30, "{dry}");
    assert_eq!(dry["rejected"].as_array().unwrap().len(), 0, "{dry}");

    // Kept 0 days: listed by a dry run, then deleted from the archive container (written
    // again without them) and the near-line copy (written again for the rest).
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str("\n[lifecycle]\nrejected_keep_days = 0\n");
    std::fs::write(&config, text_config).unwrap();
    let (ok, dry) = cli_json(&server, &["lifecycle", "run", "--dry-run", "--json"]);
    assert!(ok, "{dry}");
    assert_eq!(
        dry["rejected"][0]["study_instance_uid"],
        study.as_str(),
        "{dry}"
    );
    assert_eq!(dry["rejected"][0]["instances"], 3, "{dry}");
    assert_eq!(holding_bytes(&tier_files(&server), &needles), 2);
    let (ok, run) = cli_json(&server, &["lifecycle", "run", "--json"]);
    assert!(ok, "{run}");
    assert_eq!(run["rejected_deleted"], 3, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert_eq!(
        holding_bytes(&tier_files(&server), &needles),
        0,
        "{}",
        server.log()
    );
    assert_eq!(image_uids(&server, &study), kept);
    let mut got = get_all();
    assert!(got.remove(&note_uid).is_some());
    assert_same_data_sets(&got, &want, "after the rejected bytes went");
    let (ok, after) = cli_json(&server, &["lifecycle", "run", "--dry-run", "--json"]);
    assert!(ok, "{after}");
    assert_eq!(after["rejected"].as_array().unwrap().len(), 0, "{after}");

    // The trail: who rejected what, and the deletion that followed.
    let (ok, audit) = cli_json(&server, &["audit", "--json", "--study", &study]);
    assert!(ok, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let of =
        |event: &str| -> Vec<&Value> { entries.iter().filter(|e| e["event"] == event).collect() };
    let rejections = of("rejected");
    assert_eq!(rejections.len(), 1, "{audit}");
    assert_eq!(rejections[0]["who"], "MODALITY", "{audit}");
    assert_eq!(rejections[0]["address"], "127.0.0.1", "{audit}");
    assert_eq!(rejections[0]["instances"], 3, "{audit}");
    assert!(
        rejections[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Rejected for Patient Safety Reasons (113037)"),
        "{audit}"
    );
    let deletions = of("deleted");
    assert_eq!(deletions.len(), 1, "{audit}");
    assert_eq!(
        (&deletions[0]["who"], &deletions[0]["instances"]),
        (&Value::from("retention"), &Value::from(3)),
        "{audit}"
    );
}

#[test]
fn deleting_rejected_instances_killed_mid_rewrite_is_finished_by_the_next_run() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "24",
        "--mr-studies",
        "0",
        "--series-per-study",
        "2",
        "--seed",
        "87",
    ]);
    // Container writes paced to 4 MB/s: the rewrite of the remaining 6 MB takes 1.5 s.
    let server = TestServer::start(&format!(
        "{SHORT_LEASES}[tiering]\nthrottle_mb_s = 4\n[lifecycle]\nrejected_keep_days = 0\n"
    ));
    server.store(&corpus);
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let study = corpus.study_uids()[0].clone();
    let series = series_of(&server, &study);
    let rejected = uids_of(&corpus, &series[0]);
    let by_uid = corpus.paths_by_uid();
    let rejected_paths: Vec<PathBuf> = rejected.iter().map(|u| by_uid[u].clone()).collect();
    let note = server.dir.join("rejection.dcm");
    let note_uid = rejection_note("113001", &rejected_paths, &note);
    let sent = server.storescu("MODALITY", std::slice::from_ref(&note));
    assert!(sent.status.success(), "{}", text(&sent));
    assert_eq!(
        series_of(&server, &study).len(),
        2,
        "the rest and the note's"
    );

    let tmp = server.dir.join("archive/tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["lifecycle", "run", "--config"])
        .arg(&server.config)
        .spawn()
        .unwrap();
    assert!(
        wait_while_running(&mut child, || !files_below(&tmp).is_empty()),
        "the pass ended before rewriting the container"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();

    // The journal holds the delete: no longer listed as due; the rest is served meanwhile.
    let (ok, dry) = cli_json(&server, &["lifecycle", "run", "--dry-run", "--json"]);
    assert!(ok, "{dry}");
    assert_eq!(dry["rejected"].as_array().unwrap().len(), 0, "{dry}");
    let mut want = originals(&corpus, &study);
    want.retain(|uid, _| !rejected.contains(uid));
    let contexts: Vec<String> = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.59"]
        .iter()
        .map(|class| format!("--context={class}:1.2.840.10008.1.2.1,1.2.840.10008.1.2"))
        .collect();
    let get = || {
        let out = tempfile::tempdir().unwrap();
        server.get_study_into(&study, out.path(), &contexts);
        let mut got = received(out.path());
        assert!(got.remove(&note_uid).is_some(), "the note is served");
        got
    };
    assert_same_data_sets(&get(), &want, "after the kill");

    // The next run (any converter) finishes it once the killed one's lease expired.
    wait_for_lease_expiry(&server.config, child.id());
    let out = server.cli(&["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(files_below(&tmp).is_empty());
    assert_eq!(containers(&server.dir.join("archive")).len(), 1);
    let needles: Vec<Vec<u8>> = rejected_paths.iter().map(|p| pixel_needle(p)).collect();
    assert_eq!(holding_bytes(&tier_files(&server), &needles), 0);
    assert_same_data_sets(&get(), &want, "after recovery");
}
