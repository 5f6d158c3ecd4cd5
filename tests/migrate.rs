//! `strata locator migrate`: a stopped SQLite site with archived, backed-up and
//! volume-exported studies moves into an empty PostgreSQL database (a database of its own in
//! the cluster of `tools/pg-dev.sh`), and is then served from it bit-identical. The source is
//! always SQLite, so `tools/test.sh` runs this binary in its SQLite pass only.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn migrate(config: &std::path::Path, to: &str) -> (bool, String, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["locator", "migrate", "--json", "--to", to, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), text(&out), json)
}

/// The status report without what belongs to the processes of the moment.
fn site_state(server: &TestServer) -> Value {
    let mut status = server.status();
    status.as_object_mut().unwrap().remove("nodes");
    status
}

#[test]
fn a_stopped_sqlite_site_moves_to_postgresql_and_serves_everything_from_it() {
    assert!(
        !on_postgres(),
        "the source of a migration is an SQLite site"
    );
    let corpus = Corpus::small(2, 6, 1, 4, 81);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[backup]\nenqueue_on_receive = true\n");
    let server = TestServer::start_in(dir.path(), "", "");
    server.store(&corpus);
    let (ok, tiered) = cli_json(&server, &["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(ok, "{tiered}");
    let (ok, backed) = cli_json(&server, &["backup", "run", "--json"]);
    assert!(ok, "{backed}");
    let volumes = tempfile::tempdir().unwrap();
    let out = server.cli(&[
        "backup",
        "export-volume",
        "--json",
        "--out",
        volumes.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let before = site_state(&server);
    assert_eq!(before["copies"]["offline"], corpus.files.len(), "{before}");

    let name = format!(
        "migrate_{}",
        dir.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let url = pg_database_url(&name);
    // Refused while a node holds a lease on the site.
    let (ok, said, _) = migrate(&server.config, &url);
    assert!(!ok && said.contains("holds a lease"), "{said}");
    let config_path = server.config.clone();
    assert_eq!(server.terminate().code(), Some(0));

    let (ok, said, summary) = migrate(&config_path, &url);
    assert!(ok, "{said}");
    let rows = |table: &str| {
        summary["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("{table} missing: {summary}"))["rows"]
            .clone()
    };
    assert_eq!(rows("instances"), corpus.files.len(), "{summary}");
    assert_eq!(rows("copies"), 2 * corpus.files.len(), "{summary}");
    assert_eq!(rows("volumes"), 1, "{summary}");
    assert_eq!(
        summary["config_line"],
        format!("url = \"{url}\""),
        "{summary}"
    );
    // A second migration into the now populated database is refused.
    let (ok, said, _) = migrate(&config_path, &url);
    assert!(!ok && said.contains("not empty"), "{said}");

    // Switch the site over and serve everything from PostgreSQL.
    let config = std::fs::read_to_string(&config_path).unwrap();
    let switched: String = config
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                summary["config_line"].as_str().unwrap().to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(switched, config);
    std::fs::write(&config_path, switched).unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    assert_eq!(site_state(&server), before);
    for study in corpus.study_uids() {
        assert_same_data_sets(
            &server.get_study(&study),
            &originals(&corpus, &study),
            &format!("{study} from the migrated site"),
        );
    }
    let (ok, verified) = cli_json(
        &server,
        &[
            "verify",
            "--json",
            "--volumes",
            volumes.path().to_str().unwrap(),
        ],
    );
    assert!(ok, "{verified}");
    assert_eq!(
        verified["copies"]["offline"]["ok"],
        corpus.files.len(),
        "{verified}"
    );
    // New instances get new ids after the copied ones.
    let late = Corpus::small(1, 2, 0, 1, 82);
    server.store(&late);
    assert_eq!(server.instances(), (corpus.files.len() + 2) as u64);
}
