//! Schedules, job history and status: `strata schedule --json` with windows around the
//! current UTC time (open and closed; next opening and closing to the minute) and exact
//! queues; `strata status --json` showing the last `tier run` and `backup run` with their
//! summaries, a `backup run` killed with kill -9 as interrupted, the server's repair pass,
//! and the persistent count of reads served from a backup copy. The backup throttle is
//! measured on real data: a throttled run cannot be faster than its limit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use strata::model::schedule::iso8601;

/// The server never runs tiering or the backup queue by itself here (no windows): the CLI
/// and the schedule's configs do.
const SERVER: &str =
    "[backup]\nenqueue_on_receive = true\npoll_secs = 1\n[tiering]\nmin_age_days = 0\n";

/// A config beside the server's, on the same locator and folders, with its own `[tiering]`
/// and `[backup]` sections.
fn sibling_config(dir: &Path, name: &str, sections: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\n[storage]\nonline_dir = \"online\"\n\
             [locator]\nurl = \"{}\"\n{sections}\n",
            common::locator_url(dir)
        ),
    )
    .unwrap();
    path
}

fn schedule(config: &Path) -> Value {
    let (ok, report) = strata_json(&["schedule", "--json"], config);
    assert!(ok, "{report}");
    report
}

/// `HH:MM-HH:MM` for minutes of the day (any integers, taken modulo a day).
fn window(start: i64, end: i64) -> String {
    let hm = |m: i64| {
        let m = m.rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("{}-{}", hm(start), hm(end))
}

fn now_minute() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    ms / 60_000
}

/// ISO-8601 of an absolute minute (since the epoch).
fn at(minute: i64) -> Value {
    Value::String(iso8601(minute * 60_000))
}

#[test]
fn schedule_shows_windows_around_now_exact_queues_and_last_runs() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "2",
        "--ct-images",
        "3",
        "--mr-studies",
        "1",
        "--mr-images",
        "2",
        "--seed",
        "71",
    ]);
    let server = TestServer::start(SERVER);
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let online_bytes = server.status()["tiers"]["online"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(online_bytes > 0);

    // Windows an hour away from now on either side: the minute ticking over between here
    // and the command changes nothing.
    let now = now_minute();
    let open = window(now - 60, now + 60);
    let closed = window(now + 120, now + 180);
    let tiering_open = sibling_config(
        &server.dir,
        "tiering-open.toml",
        &format!(
            "[tiering]\nmin_age_days = 0\nwindow = \"{open}\"\nthrottle_mb_s = 3\n\
             [backup]\nwindow = \"{closed}\"\nthrottle_mb_s = 2\n"
        ),
    );
    let report = schedule(&tiering_open);
    let t = &report["tiering"];
    assert_eq!(t["window"], open.as_str(), "{report}");
    assert_eq!(t["open_now"], true, "{report}");
    assert_eq!(t["next_close"], at(now + 60), "{report}");
    assert_eq!(t["next_open"], at(now - 60 + 1440), "{report}");
    assert_eq!(t["throttle_mb_s"], 3.0, "{report}");
    assert_eq!(t["queued"]["studies"], 3, "{report}");
    assert_eq!(t["queued"]["instances"], 8, "{report}");
    assert_eq!(t["queued"]["bytes"], online_bytes, "{report}");
    let b = &report["backup"];
    assert_eq!(b["window"], closed.as_str(), "{report}");
    assert_eq!(b["open_now"], false, "{report}");
    assert_eq!(b["next_open"], at(now + 120), "{report}");
    assert_eq!(b["next_close"], at(now + 180), "{report}");
    assert_eq!(b["throttle_mb_s"], 2.0, "{report}");
    assert_eq!(b["queued"]["backup"], 3, "{report}");
    assert_eq!(b["queued"]["repairs"], 0, "{report}");
    assert_eq!(report["repair"]["queued"], 0, "{report}");
    assert_eq!(t["last_run"], Value::Null, "{report}");
    assert_eq!(b["last_run"], Value::Null, "{report}");

    // The other way round, the tiering window wrapping past midnight when now is early.
    let backup_open = sibling_config(
        &server.dir,
        "backup-open.toml",
        &format!(
            "[tiering]\nmin_age_days = 0\nwindow = \"{}\"\n[backup]\nwindow = \"{}\"\n",
            window(now - 300, now - 200),
            window(now - 1, now + 90)
        ),
    );
    let report = schedule(&backup_open);
    let t = &report["tiering"];
    assert_eq!(t["open_now"], false, "{report}");
    assert_eq!(t["next_open"], at(now - 300 + 1440), "{report}");
    assert_eq!(t["next_close"], at(now - 200 + 1440), "{report}");
    let b = &report["backup"];
    assert_eq!(b["open_now"], true, "{report}");
    assert_eq!(b["next_close"], at(now + 90), "{report}");
    assert_eq!(b["next_open"], at(now - 1 + 1440), "{report}");
    assert_eq!(b["throttle_mb_s"], 0.0, "0 is unlimited: {report}");

    // No windows: run by hand; all day: open, never closing.
    let by_hand = sibling_config(
        &server.dir,
        "by-hand.toml",
        "[tiering]\nmin_age_days = 0\n[backup]\nwindow = \"00:00-00:00\"\n",
    );
    let report = schedule(&by_hand);
    let t = &report["tiering"];
    assert_eq!(t["window"], Value::Null, "{report}");
    assert_eq!(t["open_now"], false, "{report}");
    assert_eq!(t["next_open"], Value::Null, "{report}");
    assert_eq!(t["next_close"], Value::Null, "{report}");
    let b = &report["backup"];
    assert_eq!(b["open_now"], true, "{report}");
    assert_eq!(b["next_open"], Value::Null, "{report}");
    assert_eq!(b["next_close"], Value::Null, "{report}");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["schedule", "--config"])
        .arg(&by_hand)
        .output()
        .unwrap();
    assert!(out.status.success());
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("none — run by hand"), "{human}");
    assert!(human.contains("3 studies due"), "{human}");

    // tier run, then backup run: status and schedule show both runs with their summaries.
    let (ok, tiered) = strata_json(&["tier", "run", "--json"], &server.config);
    assert!(ok && tiered["archived"] == 3, "{tiered}");
    let (ok, backed) = strata_json(&["backup", "run", "--json"], &server.config);
    assert!(ok && backed["backed_up"] == 3, "{backed}");
    let status = server.status();
    let tier = &status["last_runs"]["tier"];
    assert_eq!(tier["outcome"], "ok", "{status}");
    assert_eq!(tier["trigger"], "cli", "{status}");
    assert_eq!(tier["summary"]["archived"], 3, "{status}");
    assert_eq!(tier["summary"]["instances"], 8, "{status}");
    assert_eq!(tier["summary"]["failed"], 0, "{status}");
    assert!(tier["finished_at"].is_string(), "{status}");
    // The recorded run is the one just made: its summary is what the run printed, and it
    // took time.
    assert_eq!(tier["summary"], tiered, "{status}");
    assert!(tier["seconds"].as_f64().unwrap() > 0.0, "{status}");
    let backup = &status["last_runs"]["backup"];
    assert_eq!(backup["outcome"], "ok", "{status}");
    assert_eq!(backup["summary"]["backed_up"], 3, "{status}");
    assert_eq!(backup["summary"]["instances"], 8, "{status}");
    assert_eq!(backup["summary"]["bytes"], backed["bytes"], "{status}");
    assert_eq!(status["last_runs"]["verify"], Value::Null, "{status}");
    assert_eq!(status["read_fallbacks"], 0, "{status}");
    // The contract's older fields are still there.
    assert_eq!(status["studies"], 3, "{status}");
    assert_eq!(status["queues"]["backup"], 0, "{status}");
    assert_eq!(status["tiers"]["archive"]["instances"], 8, "{status}");

    let report = schedule(&tiering_open);
    assert_eq!(report["tiering"]["queued"]["studies"], 0, "{report}");
    assert_eq!(report["tiering"]["queued"]["bytes"], 0, "{report}");
    assert_eq!(report["backup"]["queued"]["backup"], 0, "{report}");
    assert_eq!(report["tiering"]["last_run"]["id"], tier["id"], "{report}");
    assert_eq!(report["backup"]["last_run"]["id"], backup["id"], "{report}");

    // A failing job is recorded as failed, with the reason; restore offers --json.
    let (ok, _) = strata_json(&["status", "--json"], &server.config);
    assert!(ok);
    let out = server.cli(&["restore", "--study", "1.2.3.4.5.6.7.8.9", "--json"]);
    assert!(
        !out.status.success(),
        "restoring an unknown study must fail"
    );
    let status = server.status();
    let restore = &status["last_runs"]["restore"];
    assert_eq!(restore["outcome"], "failed", "{status}");
    assert!(
        restore["summary"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("1.2.3.4.5.6.7.8.9")),
        "{status}"
    );
    let study = &corpus.study_uids()[0];
    let (ok, restored) = strata_json(&["restore", "--study", study, "--json"], &server.config);
    assert!(ok, "{restored}");
    assert_eq!(restored["study"], study.as_str(), "{restored}");
    assert_eq!(
        restored["instances"],
        corpus.study_paths(study).len(),
        "{restored}"
    );
    assert_eq!(server.status()["last_runs"]["restore"]["outcome"], "ok");
}

/// Runs `strata backup run --json` with `config`; returns its summary and wall-clock time.
fn timed_backup_run(config: &Path) -> (Value, f64) {
    let started = Instant::now();
    let (ok, summary) = strata_json(&["backup", "run", "--json"], config);
    let secs = started.elapsed().as_secs_f64();
    assert!(ok, "{summary}");
    (summary, secs)
}

fn requeue(dir: &Path, studies: &[String]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let locator = locator(dir).await;
        for s in studies {
            locator.enqueue_backup(s, "test").await.unwrap();
        }
        locator.close().await;
    });
}

#[test]
fn the_backup_throttle_holds_and_a_killed_run_shows_as_interrupted() {
    // One CT study of 16 images of 512x512x16 bits: about 8.4 MB.
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "16",
        "--mr-studies",
        "0",
        "--seed",
        "72",
    ]);
    let server = TestServer::start(&format!("{SERVER}{SHORT_LEASES}"));
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let studies = corpus.study_uids();
    let throttled = sibling_config(
        &server.dir,
        "throttled.toml",
        "[backup]\nthrottle_mb_s = 2\n",
    );
    let unlimited = sibling_config(&server.dir, "unlimited.toml", "[backup]\n");

    let (summary, secs) = timed_backup_run(&throttled);
    let bytes = summary["bytes"].as_u64().unwrap();
    assert!(bytes > 6_000_000, "{summary}");
    let floor = bytes as f64 / 2e6 * 0.9;
    eprintln!("throttled: {bytes} bytes in {secs:.2} s (floor {floor:.2} s)");
    assert!(
        secs >= floor,
        "2 MB/s for {bytes} bytes took only {secs:.2} s (at least {floor:.2} s expected)"
    );

    // Unlimited (0) never pauses: `throttle.rs`'s unit tests; how fast is for tools/bench.sh.
    requeue(&server.dir, &studies);
    let (summary, _) = timed_backup_run(&unlimited);
    assert_eq!(summary["bytes"], bytes, "{summary}");

    // kill -9 in the middle of a throttled run: the run shows as interrupted.
    requeue(&server.dir, &studies);
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["backup", "run", "--config"])
        .arg(&throttled)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = server.status();
        let run = &status["last_runs"]["backup"];
        if run["pid"] == pid && run["outcome"] == "running" {
            assert_eq!(run["finished_at"], Value::Null, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never showed as running: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    // A run is interrupted once its process's lease has expired.
    wait_for_lease_expiry(&server.config, pid);
    let status = server.status();
    let run = &status["last_runs"]["backup"];
    assert_eq!(run["pid"], pid, "{status}");
    assert_eq!(run["outcome"], "interrupted", "{status}");
    assert_eq!(run["finished_at"], Value::Null, "{status}");
    assert_eq!(run["summary"], Value::Null, "{status}");

    // The next run completes and is the last one; the queue is empty again.
    let (summary, _) = timed_backup_run(&unlimited);
    assert_eq!(summary["failed"], 0, "{summary}");
    let status = server.status();
    assert_eq!(status["last_runs"]["backup"]["outcome"], "ok", "{status}");
    assert_eq!(status["queues"]["backup"], 0, "{status}");
}

#[test]
fn the_tiering_throttle_holds() {
    // One CT study of 16 images of 512x512x16 bits: about 8.4 MB.
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "16",
        "--mr-studies",
        "0",
        "--seed",
        "74",
    ]);
    let server = TestServer::start(SERVER);
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let study = corpus.study_uids()[0].clone();
    let throttled = sibling_config(
        &server.dir,
        "throttled.toml",
        "[tiering]\nmin_age_days = 0\nthrottle_mb_s = 2\n",
    );
    let unlimited = sibling_config(
        &server.dir,
        "unlimited.toml",
        "[tiering]\nmin_age_days = 0\n",
    );
    let timed_tier_run = |config: &Path| {
        let started = Instant::now();
        let (ok, summary) = strata_json(&["tier", "run", "--json"], config);
        assert!(ok && summary["archived"] == 1, "{summary}");
        (summary, started.elapsed().as_secs_f64())
    };
    let (summary, secs) = timed_tier_run(&throttled);
    let bytes = summary["bytes"].as_u64().unwrap();
    assert!(bytes > 6_000_000, "{summary}");
    let floor = bytes as f64 / 2e6 * 0.9;
    eprintln!("throttled: {bytes} bytes in {secs:.2} s (floor {floor:.2} s)");
    assert!(
        secs >= floor,
        "2 MB/s for {bytes} bytes took only {secs:.2} s (at least {floor:.2} s expected)"
    );
    let (ok, restored) = strata_json(&["restore", "--json", "--study", &study], &server.config);
    assert!(ok, "{restored}");
    let (summary, _) = timed_tier_run(&unlimited);
    assert_eq!(summary["bytes"], bytes, "{summary}");
}

#[test]
fn reads_served_from_a_backup_copy_are_counted_and_the_repair_pass_recorded() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "3",
        "--mr-studies",
        "0",
        "--seed",
        "73",
    ]);
    let server = TestServer::start(SERVER);
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    let study = corpus.study_uids()[0].clone();
    let (ok, backed) = strata_json(&["backup", "run", "--json"], &server.config);
    assert!(ok && backed["backed_up"] == 1, "{backed}");
    assert_eq!(server.status()["read_fallbacks"], 0);

    // Damage: one online primary is deleted; C-GET through the server falls back.
    let (ok, located) = strata_json(&["locate", "--json", "--study", &study], &server.config);
    assert!(ok, "{located}");
    let lost = located[0]["location"].as_str().unwrap();
    std::fs::remove_file(server.online_dir().join(lost)).unwrap();
    assert_same_data_sets(
        &server.get_study(&study),
        &originals(&corpus, &study),
        "after damage",
    );
    let status = server.status();
    assert!(
        status["read_fallbacks"].as_u64().unwrap() >= 1,
        "the fallback is counted: {status}"
    );

    // The server re-creates the primary and records its repair pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.status();
        let repair = &status["last_runs"]["repair"];
        if repair["outcome"] == "ok" && status["queues"]["repairs"] == 0 {
            assert_eq!(repair["trigger"], "server", "{status}");
            assert!(
                repair["summary"]["recreated"].as_u64().unwrap() >= 1,
                "{status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no repair pass recorded: {status} {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["status", "--config"])
        .arg(&server.config)
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("reads served from a backup copy"), "{human}");
    assert!(human.contains("last repair"), "{human}");
}

/// Waits (at most 30 s) until the server's log holds `n` more lines with `what` and every one
/// of `fields` than it did when `since` was read.
fn wait_for_polls(server: &TestServer, since: &str, what: &str, fields: &[&str], n: usize) {
    let count = |log: &str| {
        log.lines()
            .filter(|l| l.contains(what) && fields.iter().all(|f| l.contains(f)))
            .count()
    };
    let before = count(since);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server.log()) < before + n {
        assert!(
            Instant::now() < deadline,
            "no {n} {what} {fields:?} in 30 s: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Moves every instance of `study` `days` into the past, as if it had been received then.
fn backdate(dir: &Path, study: &str, days: i64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&locator_url(dir)).await.unwrap();
        let done = sqlx::query(
            "UPDATE instances SET received_at = received_at - $1 WHERE series_fk IN \
             (SELECT se.id FROM series se JOIN studies st ON st.id = se.study_fk \
              WHERE st.study_instance_uid = $2)",
        )
        .bind(days * 86_400_000)
        .bind(study)
        .execute(&pool)
        .await
        .unwrap();
        assert!(done.rows_affected() > 0);
        pool.close().await;
    });
}

fn tier_of(server: &TestServer, study: &str) -> Vec<String> {
    let mut tiers: Vec<String> = server
        .locate(study)
        .iter()
        .map(|l| l["tier"].as_str().unwrap().to_string())
        .collect();
    tiers.dedup();
    tiers
}

#[test]
fn the_server_workers_keep_to_their_windows_and_to_the_age_limit() {
    let corpus = Corpus::small(2, 2, 0, 1, 76);
    let studies = corpus.study_uids();
    let (old, new) = (&studies[0], &studies[1]);
    let dir = tempfile::tempdir().unwrap();
    let now = now_minute();
    // Windows an hour from now: closed, whatever minute it turns meanwhile.
    let closed = window(now + 60, now + 120);
    let server = TestServer::start_in(
        dir.path(),
        &format!(
            "[tiering]\nmin_age_days = 0\nwindow = \"{closed}\"\npoll_secs = 1\n\
             [backup]\nenqueue_on_receive = true\nwindow = \"{closed}\"\npoll_secs = 1\n"
        ),
        "",
    );
    assert!(server
        .storescu("MODALITY", &corpus.paths())
        .status
        .success());
    // Two polls of each worker after the store, both windows closed: nothing moves.
    let since = server.log();
    wait_for_polls(&server, &since, "tiering poll", &["open=false"], 2);
    wait_for_polls(&server, &since, "backup poll", &["open=false"], 2);
    for s in [old, new] {
        assert_eq!(tier_of(&server, s), ["online"], "archived while closed");
    }
    let status = server.status();
    assert_eq!(status["queues"]["backup"], 2, "{status}");
    assert_eq!(
        status["copies"]["nearline"], 0,
        "copied while closed: {status}"
    );
    drop(server);

    // All-day windows, and only studies received more than a day ago are due.
    std::fs::remove_file(dir.path().join("strata.toml")).unwrap();
    let server = TestServer::start_in(
        dir.path(),
        "[tiering]\nmin_age_days = 1\nwindow = \"00:00-00:00\"\npoll_secs = 1\n\
         [backup]\nenqueue_on_receive = true\nwindow = \"00:00-00:00\"\npoll_secs = 1\n",
        "",
    );
    // The backup worker works through its queue now that its window is open.
    wait_for_polls(&server, "", "backup poll", &["open=true", "queued=0"], 1);
    let status = server.status();
    assert_eq!(status["queues"]["backup"], 0, "{status}");
    assert_eq!(status["copies"]["nearline"], 4, "{status}");
    // Two tiering polls that found nothing due: both studies are a few seconds old.
    wait_for_polls(&server, "", "tiering poll", &["open=true", "due=0"], 2);
    for s in [old, new] {
        assert_eq!(tier_of(&server, s), ["online"], "archived before its age");
    }
    // One study received two days ago: archived by the worker; the other stays.
    backdate(dir.path(), old, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tier_of(&server, old) != ["archive"] {
        assert!(
            Instant::now() < deadline,
            "the due study was never archived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let since = server.log();
    wait_for_polls(&server, &since, "tiering poll", &["open=true", "due=0"], 2);
    assert_eq!(tier_of(&server, new), ["online"], "archived before its age");
}
