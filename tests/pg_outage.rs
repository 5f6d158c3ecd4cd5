//! The PostgreSQL locator going away and coming back while a node ingests: C-STOREs during the
//! outage are answered with a failure status (never Success without a commit, never a hang),
//! and the node recovers by itself once the database is back. The database is a private
//! cluster of `tools/pg-dev.sh` (its own folder and socket), so the rest of the suite's
//! database stays up; `tools/test.sh` runs this binary in its PostgreSQL pass.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A private cluster, stopped and deleted when dropped.
struct Cluster(PathBuf);

impl Cluster {
    fn pg(&self, args: &[&str]) -> String {
        let out = Command::new(repo().join("tools/pg-dev.sh"))
            .args(args)
            .env("STRATA_PG_DIR", &self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg-dev.sh {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/pg-dev.sh"))
            .arg("stop")
            .env("STRATA_PG_DIR", &self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// scu.py store of `files` through `server`: the statuses, SOP Instance UID by UID.
fn store(server: &TestServer, files: &[PathBuf]) -> (Vec<String>, Vec<(u16, String)>) {
    let args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    acknowledged(&text(&server.scu("store", "MODALITY", &args)))
}

#[test]
fn a_database_outage_fails_stores_clearly_and_the_node_recovers_by_itself() {
    assert!(on_postgres(), "this binary runs in the PostgreSQL pass");
    // Under /tmp itself: the postgres user must be able to reach the folder.
    let cluster = Cluster(PathBuf::from(format!(
        "/tmp/strata-pg-outage-{}",
        std::process::id()
    )));
    cluster.pg(&["start", "--fresh"]);
    let url = cluster.pg(&["url", "outage"]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let config = std::fs::read_to_string(&path).unwrap();
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                format!("url = \"{url}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, config).unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    let before = Corpus::small(1, 4, 0, 1, 95);
    let during = Corpus::small(1, 2, 0, 1, 96);
    let after = Corpus::small(1, 4, 0, 1, 97);
    server.store(&before);

    cluster.pg(&["stop"]);
    let started = Instant::now();
    let (acked, failed) = store(&server, &during.paths());
    assert!(
        acked.is_empty(),
        "acknowledged without a database: {acked:?}"
    );
    assert_eq!(failed.len(), 2, "every store answered: {failed:?}");
    for (code, uid) in &failed {
        assert_eq!(*code, 0x0110, "{uid}: processing failure");
    }
    let log = server.log_when(|l| l.contains("cannot record instance"));
    assert!(log.contains("cannot record instance"), "{log}");
    let outage = started.elapsed();

    cluster.pg(&["start"]);
    // Recovers by itself: the next stores succeed without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (acked, _) = store(&server, &after.paths());
        if acked.len() == after.files.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (acked, failed) = store(&server, &during.paths());
    assert_eq!(acked.len(), 2, "{failed:?}");
    assert_eq!(
        server.instances(),
        (before.files.len() + during.files.len() + after.files.len()) as u64
    );
    for corpus in [&before, &during, &after] {
        let study = &corpus.study_uids()[0];
        assert_same_data_sets(
            &server.get_study(study),
            &originals(corpus, study),
            "after the outage",
        );
    }
    // The outage cost each store at most the pool's acquire timeout, not a hang.
    eprintln!("two stores during the outage took {outage:?}");
}
