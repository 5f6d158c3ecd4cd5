//! The status page at `/` in Debian's headless chromium (tools/status_check.py): only a user
//! allowed `admin` opens it, and the browser shows the tiers, the runs and the nodes as the
//! locator holds them and plots with data points from the server's samples. The screenshot is
//! kept in target/test-artefacts/status/.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_status_page_shows_the_site_and_plots_its_samples_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        "",
        &format!(
            "[web]\nlisten = \"127.0.0.1:0\"\n\
             [[web.users]]\nname = \"admin\"\npassword_hash = \"{}\"\nallow = [\"admin\"]\n\
             [[web.users]]\nname = \"viewer\"\npassword_hash = \"{}\"\nallow = [\"find\"]\n\
             [status]\nsample_secs = 1\n",
            password_hash("admin pass"),
            password_hash("viewer pass")
        ),
    );
    let port = server.web_port.unwrap();
    assert_eq!(http_get(port, "/", &[]).0, 401);
    let viewer = basic(("viewer", "viewer pass"));
    assert_eq!(http_get(port, "/", &[("Authorization", &viewer)]).0, 403);

    // Two studies a few samples apart, so the tier plot rises, and a job run to list.
    let first = Corpus::small(1, 3, 0, 0, 41);
    let second = Corpus::small(0, 0, 1, 2, 42);
    server.store(&first);
    std::thread::sleep(Duration::from_millis(2500));
    server.store(&second);
    let out = server.cli(&["verify", "--json"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(2500));

    let shot = repo().join("target/test-artefacts/status/status.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(python())
        .arg(repo().join("tools/status_check.py"))
        .args(["--url", &format!("http://127.0.0.1:{port}/")])
        .args(["--user", "admin:admin pass", "--shot"])
        .arg(&shot)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["title"], "Strata status", "{seen}");
    let headings = seen["headings"].to_string();
    for heading in [
        "History",
        "Tiers",
        "Queues",
        "Schedules",
        "Last runs",
        "Nodes",
    ] {
        assert!(headings.contains(heading), "{heading} missing: {seen}");
    }

    // The tiers table as the locator holds them: every instance online.
    let stored = (first.files.len() + second.files.len()).to_string();
    let online = seen["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[0] == "online")
        .unwrap_or_else(|| panic!("no online row: {seen}"));
    assert_eq!(online[1], stored.as_str(), "{seen}");
    let runs = seen["runs"].to_string();
    assert!(runs.contains("[\"verify\",\"ok\""), "{seen}");
    let live_server = seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|row| row[1] == "server" && row[4] == "live");
    assert!(live_server, "{seen}");

    // The plots hold data points the browser drew: bytes online from several samples (a line
    // with width and height: it rose with the second study), the ingest rate in the last hour.
    let plot = |id: &str| {
        seen["plots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no plot {id}: {seen}"))
            .clone()
    };
    let tiers = plot("tier-bytes");
    let online_line = tiers["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "online")
        .unwrap_or_else(|| panic!("no online line: {seen}"))
        .clone();
    assert!(online_line["points"].as_u64().unwrap() >= 3, "{seen}");
    assert_eq!(online_line["drawn"], online_line["points"], "{seen}");
    assert!(online_line["width"].as_f64().unwrap() > 100.0, "{seen}");
    assert!(online_line["height"].as_f64().unwrap() > 10.0, "{seen}");
    let ingest = plot("ingest-hour");
    assert_eq!(ingest["empty"], false, "{seen}");
    assert!(
        ingest["lines"][0]["points"].as_u64().unwrap() >= 1,
        "{seen}"
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
