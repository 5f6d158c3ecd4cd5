//! C-FIND against the real server with DCMTK findscu and pynetdicom.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A server holding ten one-image studies per modality pair, one per test patient.
fn server_with_corpus(dicom_extra: &str, corpus_args: &[&str]) -> (TestServer, Corpus) {
    let corpus = Corpus::generate(corpus_args);
    let server = TestServer::start(dicom_extra);
    let paths: Vec<PathBuf> = corpus.paths();
    let out = server.storescu("VIEWER", &paths);
    assert!(out.status.success(), "{}", text(&out));
    (server, corpus)
}

fn ten_patients() -> Vec<&'static str> {
    vec![
        "--ct-studies",
        "5",
        "--ct-images",
        "2",
        "--mr-studies",
        "5",
        "--mr-images",
        "1",
        "--seed",
        "3",
    ]
}

/// Runs `scu.py find`; returns the matches and the final status line.
fn find(server: &TestServer, options: &[&str], keys: &[&str]) -> (Vec<Value>, String) {
    let mut args: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    for k in keys {
        args.push("-k".into());
        args.push(k.to_string());
    }
    let out = server.scu("find", "VIEWER", &args);
    let out = text(&out);
    let matches = out
        .lines()
        .filter_map(|l| l.strip_prefix("MATCH "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let last = out
        .lines()
        .find(|l| l.starts_with("FINAL"))
        .unwrap_or_else(|| panic!("no final status: {out}"))
        .to_string();
    (matches, last)
}

fn field<'a>(m: &'a Value, key: &str) -> &'a str {
    m[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {m}"))
}

#[test]
fn study_level_matching_rules() {
    let (server, corpus) = server_with_corpus("", &ten_patients());
    // Universal matching returns every study, newest first, with every requested key.
    let (all, last) = find(
        &server,
        &[],
        &[
            "StudyDate=",
            "PatientName=",
            "StudyInstanceUID=",
            "AccessionNumber=",
            "StudyComments=",
            "InstanceAvailability=",
        ],
    );
    assert_eq!(last, "FINAL 0x0000");
    assert_eq!(all.len(), 10);
    let dates: Vec<&str> = all.iter().map(|m| field(m, "StudyDate")).collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted, "not newest first");
    for m in &all {
        // An attribute we do not index still comes back, empty.
        assert_eq!(field(m, "StudyComments"), "");
        assert_eq!(field(m, "RetrieveAETitle"), "STRATA");
        assert_eq!(field(m, "InstanceAvailability"), "ONLINE");
    }

    // Single value, wildcard (* and ?), and case sensitivity by default.
    let (m, _) = find(&server, &[], &["PatientID=PID0004", "PatientName="]);
    assert_eq!(m.len(), 1);
    assert_eq!(field(&m[0], "PatientName"), "张^伟");
    let (m, _) = find(&server, &[], &["PatientName=M*"]);
    let names: Vec<&str> = m.iter().map(|x| field(x, "PatientName")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with('M')));
    let (m, _) = find(&server, &[], &["PatientName=m*"]);
    assert!(m.is_empty(), "matching must be case-sensitive by default");
    let (m, _) = find(&server, &[], &["PatientID=PID000?"]);
    assert_eq!(m.len(), 10);

    // List of UIDs.
    let uids = corpus.study_uids();
    let list = format!("StudyInstanceUID={}\\{}", uids[0], uids[3]);
    let (m, _) = find(&server, &[], &[&list]);
    let mut got: Vec<&str> = m.iter().map(|x| field(x, "StudyInstanceUID")).collect();
    got.sort();
    let mut want = vec![uids[0].as_str(), uids[3].as_str()];
    want.sort();
    assert_eq!(got, want);

    // Date ranges: closed, open at either end; every date checked against the full list.
    let mut all_dates: Vec<String> = dates.iter().map(|s| s.to_string()).collect();
    all_dates.sort();
    let (low, high) = (all_dates[2].clone(), all_dates[6].clone());
    for (key, expect) in [
        (
            format!("StudyDate={low}-{high}"),
            all_dates
                .iter()
                .filter(|d| **d >= low && **d <= high)
                .count(),
        ),
        (
            format!("StudyDate={low}-"),
            all_dates.iter().filter(|d| **d >= low).count(),
        ),
        (
            format!("StudyDate=-{high}"),
            all_dates.iter().filter(|d| **d <= high).count(),
        ),
    ] {
        let (m, last) = find(&server, &[], &[&key]);
        assert_eq!(last, "FINAL 0x0000");
        assert_eq!(m.len(), expect, "{key}");
    }

    // SQL wildcards and quotes in values are plain characters.
    for key in [
        "PatientName=%",
        "PatientName=_*",
        "PatientID=' OR '1'='1",
        "PatientName=O'Brien*",
    ] {
        let (m, last) = find(&server, &[], &[key]);
        assert!(m.is_empty(), "{key} matched {m:?}");
        assert_eq!(last, "FINAL 0x0000");
    }
}

#[test]
fn computed_keys_and_all_levels_of_both_models() {
    let (server, corpus) = server_with_corpus(
        "",
        &[
            "--ct-studies",
            "1",
            "--ct-images",
            "3",
            "--mr-studies",
            "1",
            "--mr-images",
            "2",
            "--seed",
            "5",
        ],
    );
    let ct = corpus
        .files
        .iter()
        .find(|f| f.path.starts_with("000"))
        .unwrap()
        .clone();
    let study = format!("StudyInstanceUID={}", ct.study_instance_uid);

    let (m, _) = find(
        &server,
        &[],
        &[
            &study,
            "ModalitiesInStudy=",
            "NumberOfStudyRelatedSeries=",
            "NumberOfStudyRelatedInstances=",
            "SOPClassesInStudy=",
        ],
    );
    assert_eq!(m.len(), 1);
    assert_eq!(field(&m[0], "ModalitiesInStudy"), "CT");
    assert_eq!(field(&m[0], "NumberOfStudyRelatedSeries"), "1");
    assert_eq!(field(&m[0], "NumberOfStudyRelatedInstances"), "3");
    assert_eq!(
        field(&m[0], "SOPClassesInStudy"),
        "1.2.840.10008.5.1.4.1.1.2"
    );

    // ModalitiesInStudy also filters: one value, a list, a wildcard.
    let (m, _) = find(&server, &[], &["ModalitiesInStudy=MR", "StudyInstanceUID="]);
    assert_eq!(m.len(), 1);
    assert_ne!(field(&m[0], "StudyInstanceUID"), ct.study_instance_uid);
    let (m, _) = find(&server, &[], &["ModalitiesInStudy=CT\\MR"]);
    assert_eq!(m.len(), 2);
    let (m, _) = find(&server, &[], &["ModalitiesInStudy=C*"]);
    assert_eq!(m.len(), 1);

    // Patient Root: PATIENT level with related counts.
    let pid = format!("PatientID={}", ct.patient_id);
    let (m, _) = find(
        &server,
        &["--model", "patient", "--level", "PATIENT"],
        &[
            &pid,
            "PatientName=",
            "NumberOfPatientRelatedStudies=",
            "NumberOfPatientRelatedInstances=",
        ],
    );
    assert_eq!(m.len(), 1);
    assert_eq!(field(&m[0], "NumberOfPatientRelatedStudies"), "1");
    assert_eq!(field(&m[0], "NumberOfPatientRelatedInstances"), "3");

    // SERIES and IMAGE levels under their unique keys, in both models.
    let (series, _) = find(
        &server,
        &["--level", "SERIES"],
        &[
            &study,
            "SeriesInstanceUID=",
            "Modality=",
            "NumberOfSeriesRelatedInstances=",
        ],
    );
    assert_eq!(series.len(), 1);
    assert_eq!(field(&series[0], "Modality"), "CT");
    assert_eq!(field(&series[0], "NumberOfSeriesRelatedInstances"), "3");
    let series_key = format!(
        "SeriesInstanceUID={}",
        field(&series[0], "SeriesInstanceUID")
    );
    for options in [
        vec!["--level", "IMAGE"],
        vec!["--level", "IMAGE", "--model", "patient"],
    ] {
        let mut keys = vec![
            study.as_str(),
            series_key.as_str(),
            "SOPInstanceUID=",
            "InstanceNumber=",
        ];
        if options.contains(&"patient") {
            keys.push(&pid);
        }
        let (images, last) = find(&server, &options, &keys);
        assert_eq!(last, "FINAL 0x0000");
        let numbers: Vec<&str> = images.iter().map(|x| field(x, "InstanceNumber")).collect();
        assert_eq!(numbers, ["1", "2", "3"]);
    }
    let (images, _) = find(
        &server,
        &["--level", "IMAGE"],
        &[&study, &series_key, "InstanceNumber=2", "SOPInstanceUID="],
    );
    assert_eq!(images.len(), 1);
}

#[test]
fn bad_queries_get_failure_statuses_with_a_reason() {
    let (server, _) = server_with_corpus(
        "",
        &["--ct-studies", "1", "--ct-images", "1", "--mr-studies", "0"],
    );
    for (options, keys, why) in [
        (
            vec!["--level", "SERIES"],
            vec!["Modality="],
            "unique StudyInstanceUID",
        ),
        (
            vec!["--level", "IMAGE", "--model", "patient"],
            vec!["StudyInstanceUID=1.2", "SeriesInstanceUID=1.2.3"],
            "unique PatientID",
        ),
        (
            vec!["--level", "PATIENT"],
            vec!["PatientID="],
            "Study Root has no PATIENT",
        ),
        (
            vec!["--level", "NONSENSE"],
            vec!["PatientID="],
            "QueryRetrieveLevel",
        ),
        (vec![], vec!["StudyDate=2024"], "invalid matching value"),
        (
            vec![],
            vec!["StudyInstanceUID=1.2.*"],
            "invalid matching value",
        ),
    ] {
        let (m, last) = find(&server, &options, &keys);
        assert!(m.is_empty());
        assert!(last.starts_with("FINAL 0xA9"), "{keys:?}: {last}");
        assert!(last.contains(why), "{keys:?}: {last}");
    }
    let (ok, out) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "{out}");
}

#[test]
fn queries_in_other_character_sets_match_names_stored_in_utf8_and_others() {
    let (server, _) = server_with_corpus("", &ten_patients());
    // Each name queried in another character set than the one it was stored in (the corpus
    // stores 王 in GB18030, 张 and Greek in ISO_IR 192, Müller and García in ISO_IR 100), and
    // once in its own.
    for (charset, name) in [
        ("ISO_IR 192", "王^小明"),
        ("GB18030", "张^伟"),
        ("GB18030", "Müller^Jürgen"),
        ("ISO_IR 192", "GARCÍA^JOSÉ"),
        ("ISO_IR 126", "Παπαδόπουλος^Γιώργος"),
        ("GB18030", "王^小明"),
    ] {
        let key = format!("PatientName={name}");
        let (m, last) = find(&server, &["--charset", charset], &[&key, "PatientID="]);
        assert_eq!(last, "FINAL 0x0000");
        assert_eq!(m.len(), 1, "{charset} {name}");
        assert_eq!(field(&m[0], "PatientName"), name);
    }
    // Wildcards work on non-Latin text too.
    let (m, _) = find(
        &server,
        &["--charset", "ISO_IR 192"],
        &["PatientName=Иван*"],
    );
    assert_eq!(m.len(), 1);
}

#[test]
fn case_insensitive_person_names_by_config() {
    let corpus = Corpus::generate(&ten_patients());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[query]\ncase_insensitive_names = true");
    let server = TestServer::start_in(dir.path(), "", "");
    assert!(server.storescu("VIEWER", &corpus.paths()).status.success());
    let (m, _) = find(&server, &[], &["PatientName=m*"]);
    assert_eq!(m.len(), 2);
    let (m, _) = find(&server, &[], &["PatientName=doe^jane"]);
    assert_eq!(m.len(), 1);
}

#[test]
fn cancel_stops_the_stream_and_max_matches_is_enforced() {
    // More matches than socket buffers hold, so the server is still sending when the cancel
    // arrives. C-FIND needs only the index: tools/fill_locator.py fills it directly.
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[query]\nmax_matches = 100000");
    let server = TestServer::start_in(dir.path(), "", "");
    fill_locator(dir.path(), 20000);
    let (m, last) = find(
        &server,
        &["--cancel-after", "1"],
        &["PatientName=", "StudyDescription="],
    );
    assert_eq!(last, "FINAL 0xFE00", "cancel not honoured");
    assert!(m.len() < 20000, "{} matches after cancel", m.len());
    let log = server.log_when(|l| l.contains("status=Cancel"));
    assert!(log.contains("status=Cancel"), "{log}");

    // A result over several pages of the locator (2,048, then 4,096 rows per statement) comes
    // whole, once each, newest first, with computed keys on every match.
    let (m, last) = find(
        &server,
        &[],
        &[
            "StudyDate=20220101-",
            "StudyTime=",
            "StudyInstanceUID=",
            "InstanceAvailability=",
            "NumberOfStudyRelatedInstances=",
        ],
    );
    assert_eq!(last, "FINAL 0x0000");
    assert!(m.len() > 6144, "only {} matches: not three pages", m.len());
    let keys: Vec<(&str, &str)> = m
        .iter()
        .map(|x| (field(x, "StudyDate"), field(x, "StudyTime")))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "not newest first");
    assert!(keys.iter().all(|(date, _)| *date >= "20220101"));
    let uids: std::collections::HashSet<&str> =
        m.iter().map(|x| field(x, "StudyInstanceUID")).collect();
    assert_eq!(uids.len(), m.len(), "a study came twice");
    for x in &m {
        assert_eq!(field(x, "InstanceAvailability"), "ONLINE");
        assert_eq!(field(x, "NumberOfStudyRelatedInstances"), "1");
    }

    let corpus = Corpus::generate(&ten_patients());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[query]\nmax_matches = 3");
    let limited = TestServer::start_in(dir.path(), "", "");
    assert!(limited.storescu("VIEWER", &corpus.paths()).status.success());
    let (m, last) = find(&limited, &[], &["PatientName="]);
    assert_eq!(m.len(), 3);
    assert!(last.starts_with("FINAL 0xA700"), "{last}");
}

#[test]
fn dcmtk_findscu_sees_pending_matches_and_success() {
    let (server, _) = server_with_corpus("", &ten_patients());
    let out = server.findscu(
        "VIEWER",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=M*",
            "StudyInstanceUID=",
            "ModalitiesInStudy=",
        ],
    );
    assert_eq!(out.matches("(Pending)").count(), 2, "{out}");
    assert!(
        out.contains("Received Final Find Response (Success)"),
        "{out}"
    );
    // An AE allowed only to store may not query.
    let out = server.findscu("MODALITY", &["QueryRetrieveLevel=STUDY", "PatientName="]);
    // DCMTK names no C-FIND status 0124H and prints it raw.
    assert!(
        out.contains("Final Find Response (Unknown Status: 0x124)"),
        "{out}"
    );
    assert!(!out.contains("(Pending)"), "{out}");
}

/// Twelve one-image studies, one per patient, including multi-group and sparse names.
fn twelve_patients() -> Vec<&'static str> {
    vec![
        "--ct-studies",
        "6",
        "--ct-images",
        "1",
        "--mr-studies",
        "6",
        "--mr-images",
        "1",
        "--seed",
        "3",
        "--extra-patients",
    ]
}

fn names(m: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = m
        .iter()
        .map(|x| field(x, "PatientName").to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn person_names_match_by_component_and_component_group() {
    let (server, _) = server_with_corpus("", &twelve_patients());
    let yamada = "Yamada^Tarou=山田^太郎=やまだ^たろう";
    for (key, want) in [
        // An empty component in the key matches anything.
        ("SMITH", vec!["SMITH^JOHN^A"]),
        ("SMITH^JOHN", vec!["SMITH^JOHN^A"]),
        ("^JANE", vec!["DOE^JANE"]),
        ("SMITH^JANE", vec![]),
        ("SMI", vec![]),
        // Trailing empty components are the same name.
        ("WHITE^^^DR", vec!["WHITE^^^DR^"]),
        ("WHITE^^^DR^^", vec!["WHITE^^^DR^"]),
        ("WHITE^^^MR", vec![]),
        // Wildcards stay in their component, and the whole value is tried too.
        ("S*^J*", vec!["SMITH^JOHN^A"]),
        ("*^JOHN", vec!["SMITH^JOHN^A"]),
        ("*JOHN*", vec!["SMITH^JOHN^A"]),
        ("^^A", vec!["SMITH^JOHN^A"]),
        // Component groups: alphabetic, ideographic, phonetic.
        ("Yamada^Tarou", vec![yamada]),
        ("山田^太郎", vec![yamada]),
        ("やまだ", vec![yamada]),
        ("=山田^太郎", vec![yamada]),
        ("Yamada=山田", vec![yamada]),
        ("Yamada=田中", vec![]),
        ("==やま*", vec![yamada]),
    ] {
        let k = format!("PatientName={key}");
        let (m, last) = find(&server, &["--charset", "ISO_IR 192"], &[&k]);
        assert_eq!(last, "FINAL 0x0000", "{key}");
        assert_eq!(names(&m), want, "{key}");
    }
    // DCMTK agrees on the plain case.
    let out = server.findscu("VIEWER", &["QueryRetrieveLevel=STUDY", "PatientName=SMITH"]);
    assert_eq!(out.matches("(Pending)").count(), 1, "{out}");
}

#[test]
fn combined_study_date_and_time_range_when_negotiated() {
    let (server, _) = server_with_corpus("", &twelve_patients());
    let (all, _) = find(&server, &[], &["StudyDate=", "StudyTime="]);
    let mut stamps: Vec<(String, String)> = all
        .iter()
        .map(|m| {
            (
                field(m, "StudyDate").to_string(),
                field(m, "StudyTime").to_string(),
            )
        })
        .collect();
    stamps.sort();
    // A window whose start time is later in the day than its end time, so the two readings
    // of the standard give different answers.
    let (lo, hi) = (0..stamps.len())
        .flat_map(|a| (a + 2..stamps.len()).map(move |b| (a, b)))
        .map(|(a, b)| (stamps[a].clone(), stamps[b].clone()))
        .find(|(a, b)| a.1 > b.1 && a.0 < b.0)
        .expect("corpus has a window with a later start time");
    let date_key = format!("StudyDate={}-{}", lo.0, hi.0);
    let time_key = format!("StudyTime={}-{}", lo.1, hi.1);
    let combined_want = stamps
        .iter()
        .filter(|s| format!("{}{}", s.0, s.1) >= format!("{}{}", lo.0, lo.1))
        .filter(|s| format!("{}{}", s.0, s.1) <= format!("{}{}", hi.0, hi.1))
        .count();
    assert!(combined_want >= 3);
    let (m, last) = find(&server, &["--combined-datetime"], &[&date_key, &time_key]);
    assert_eq!(last, "FINAL 0x0000");
    assert_eq!(m.len(), combined_want, "{date_key} {time_key} combined");
    // Without the negotiation each key is its own range; this one is empty for times.
    let (m, _) = find(&server, &[], &[&date_key, &time_key]);
    assert_eq!(m.len(), 0, "{date_key} {time_key} separate");
    // Combined with a single date: that day between the two times.
    let day = format!("StudyDate={}", lo.0);
    let from = format!("StudyTime={}-", lo.1);
    let (m, _) = find(&server, &["--combined-datetime"], &[&day, &from]);
    let want = stamps.iter().filter(|s| s.0 == lo.0 && s.1 >= lo.1).count();
    assert_eq!(m.len(), want);
}

#[test]
fn stalled_query_clients_hold_no_database_connection() {
    // Four DCMTK findscu processes stopped with SIGSTOP part-way through 60,000 matches of
    // about 400 bytes (more than loopback's socket buffers hold, so the server's writes to
    // them block), on a server whose
    // locator pool has two connections: a C-ECHO, a C-STORE, a C-FIND and a C-GET by others
    // are still served, and the stalled queries finish once resumed. The server gives up on
    // a peer that takes no data for `dimse_timeout_secs`; that is set well beyond how long
    // the others take here, even on a loaded machine (the default 60 s cut the first stalled
    // queries off once while CI shared the cores).
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[query]\nmax_matches = 100000");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config
            .replace("[locator]\n", "[locator]\nmax_connections = 2\n")
            .replace("[dicom]\n", "[dicom]\ndimse_timeout_secs = 600\n"),
    )
    .unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    fill_locator(dir.path(), 60000);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut child = dcmtk("findscu")
            .args(["-v", "-S", "-aet", "VIEWER", "-aec", "STRATA", "127.0.0.1"])
            .arg(server.port.to_string())
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName="])
            .args([
                "-k",
                "PatientID=",
                "-k",
                "PatientBirthDate=",
                "-k",
                "StudyDate=",
            ])
            .args([
                "-k",
                "StudyTime=",
                "-k",
                "AccessionNumber=",
                "-k",
                "StudyID=",
            ])
            .args(["-k", "StudyDescription=", "-k", "ReferringPhysicianName="])
            .args(["-k", "StudyInstanceUID=", "-k", "ModalitiesInStudy="])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Stopped once the server is answering it (DCMTK logs to stderr).
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        loop {
            let line = lines
                .next()
                .expect("findscu ended before a response")
                .unwrap();
            if line.contains("Find Response") {
                break;
            }
        }
        signal(child.id(), "STOP");
        stalled.push((child, lines));
    }
    let (ok, out) = server.echoscu("VIEWER", "STRATA");
    assert!(ok, "C-ECHO beside stalled queries: {out}");
    let corpus = Corpus::small(1, 3, 0, 1, 91);
    let files: Vec<String> = corpus
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (acked, failed) = acknowledged(&text(&server.scu("store", "MODALITY", &files)));
    assert_eq!(acked.len(), 3, "C-STORE beside stalled queries: {failed:?}");
    let (m, last) = find(
        &server,
        &[],
        &["PatientID=FILL0000001", "StudyInstanceUID="],
    );
    assert_eq!(last, "FINAL 0x0000", "C-FIND beside stalled queries");
    assert!(!m.is_empty());
    let study = &corpus.study_uids()[0];
    assert_same_data_sets(
        &server.get_study(study),
        &originals(&corpus, study),
        "C-GET beside stalled queries",
    );
    // Resumed, each stalled query receives every match.
    for (mut child, lines) in stalled {
        signal(child.id(), "CONT");
        let pending = lines
            .map(|l| l.unwrap())
            .filter(|l| l.contains("(Pending)"))
            .count();
        assert!(child.wait().unwrap().success());
        assert!(
            pending > 30_000,
            "a stalled query got {pending} matches: cut off to serve the others"
        );
    }
}
