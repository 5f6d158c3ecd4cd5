//! `GET /metrics` against the real server: only a user allowed `admin` reads it, Debian's
//! `promtool check metrics` accepts every answer, and the counters move as DCMTK's tools,
//! HTTP requests and a CLI job do their work.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One scrape: the answer's samples by series (`name{labels}` as written), and the text.
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }
}

/// Scrapes `/metrics` with `authorization`, checks the answer with promtool, parses it.
fn scrape(port: u16, authorization: &str) -> Scrape {
    let (status, head, body) = http_get(port, "/metrics", &[("Authorization", authorization)]);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_accepts(&text);
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect();
    Scrape { samples, text }
}

/// `promtool check metrics` reads the exposition on standard input; it exits non-zero and
/// names the problem for a malformed answer or one breaking the naming conventions.
fn promtool_accepts(exposition: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tools/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{exposition}"
    );
}

#[test]
fn metrics_are_for_admins_pass_promtool_and_count_what_happens() {
    let (admin_token, admin_sha) = new_token();
    let (viewer_token, viewer_sha) = new_token();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        "",
        &format!(
            "[web]\nlisten = \"127.0.0.1:0\"\n\
             [[web.users]]\nname = \"prometheus\"\ntoken_sha256 = [\"{admin_sha}\"]\nallow = [\"admin\"]\n\
             [[web.users]]\nname = \"viewer\"\ntoken_sha256 = [\"{viewer_sha}\"]\nallow = [\"find\", \"get\"]\n"
        ),
    );
    let port = server.web_port.unwrap();
    let admin = format!("Bearer {admin_token}");
    let viewer = format!("Bearer {viewer_token}");

    // Nobody but an admin: 401 without credentials, 403 for a user without `admin`.
    assert_eq!(http_get(port, "/metrics", &[]).0, 401);
    assert_eq!(
        http_get(port, "/metrics", &[("Authorization", &viewer)]).0,
        403
    );

    let before = scrape(port, &admin);
    let site_read = Instant::now();
    let zero = |series: &str| assert_eq!(before.value(series), 0.0, "{series}");
    zero("strata_dicom_associations_total{result=\"accepted\"}");
    zero("strata_dicom_associations_open");
    zero("strata_ingest_instances_total");
    zero("strata_tier_instances{tier=\"online\"}");
    assert_eq!(before.value("strata_site_up"), 1.0);
    assert!(before.value("process_resident_memory_bytes") > 1e6);
    // The server's allocator reports what it holds; what is live is resident.
    let heap = before.value("strata_heap_allocated_bytes");
    assert!(heap > 1e5, "{heap}");
    assert!(before.value("strata_heap_resident_bytes") >= heap);

    // DIMSE: an echo, three instances on one association, a search, and an association
    // refused for a called AE title that is not ours.
    let corpus = Corpus::small(1, 3, 0, 0, 31);
    let (echoed, said) = server.echoscu("MODALITY", "STRATA");
    assert!(echoed, "{said}");
    let out = server.storescu("MODALITY", &corpus.paths());
    assert!(out.status.success(), "{}", text(&out));
    let found = server.findscu("VIEWER", &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]);
    assert!(found.contains("Received Final Find Response"), "{found}");
    let (echoed, _) = server.echoscu("MODALITY", "NOT-STRATA");
    assert!(!echoed, "an association to another AE title was accepted");
    // HTTP: a search and one instance's retrieval (read from the online tier).
    let study = &corpus.files[0];
    let (status, _, _) = http_get(port, "/dicom-web/studies", &[("Authorization", &viewer)]);
    assert_eq!(status, 200);
    let instance_path = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        study.study_instance_uid, study.series_instance_uid, study.sop_instance_uid
    );
    let (status, _, body) = http_get(
        port,
        &instance_path,
        &[
            ("Authorization", &viewer),
            ("Accept", "multipart/related; type=\"application/dicom\""),
        ],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // A job run by the CLI shows among the site's figures.
    let out = server.cli(&["verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));

    // The site's figures are read at most every 10 s.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(site_read.elapsed()));
    let after = scrape(port, &admin);
    let is = |series: &str, expected: f64| {
        assert_eq!(after.value(series), expected, "{series}\n{}", after.text)
    };
    is("strata_dicom_associations_total{result=\"accepted\"}", 3.0);
    is("strata_dicom_associations_total{result=\"rejected\"}", 1.0);
    is("strata_dicom_associations_open", 0.0);
    is(
        "strata_dimse_operations_total{operation=\"C-ECHO\",status=\"success\"}",
        1.0,
    );
    is(
        "strata_dimse_operations_total{operation=\"C-STORE\",status=\"success\"}",
        3.0,
    );
    is(
        "strata_dimse_operations_total{operation=\"C-FIND\",status=\"success\"}",
        1.0,
    );
    is(
        "strata_dimse_operation_duration_seconds_count{operation=\"C-STORE\"}",
        3.0,
    );
    is(
        "strata_dimse_operation_duration_seconds_bucket{operation=\"C-STORE\",le=\"+Inf\"}",
        3.0,
    );
    is("strata_ingest_instances_total", 3.0);
    is("strata_ingest_commit_batch_instances_sum", 3.0);
    is("strata_tier_instances{tier=\"online\"}", 3.0);
    is("strata_tier_instances{tier=\"archive\"}", 0.0);
    is(
        "strata_stored_objects{level=\"study\"}",
        corpus.study_uids().len() as f64,
    );
    assert_eq!(
        after.value("strata_ingest_bytes_total"),
        after.value("strata_tier_bytes{tier=\"online\"}")
    );
    is(
        "strata_http_requests_total{method=\"GET\",route=\"/metrics\",code=\"401\"}",
        1.0,
    );
    is(
        "strata_http_requests_total{method=\"GET\",route=\"/metrics\",code=\"403\"}",
        1.0,
    );
    is(
        "strata_http_requests_total{method=\"GET\",route=\"/dicom-web/studies\",code=\"200\"}",
        1.0,
    );
    let instance_route = "/dicom-web/studies/{study}/series/{series}/instances/{instance}";
    is(
        &format!(
            "strata_http_requests_total{{method=\"GET\",route=\"{instance_route}\",code=\"200\"}}"
        ),
        1.0,
    );
    let stored = std::fs::metadata(corpus.path(study)).unwrap().len() as f64;
    assert!(
        after.value("strata_read_bytes_total{tier=\"online\"}") >= stored * 0.9,
        "{}",
        after.text
    );
    is("strata_job_last_run_success{job=\"verify\"}", 1.0);
    is("strata_queue_length{queue=\"backup\"}", 0.0);
    let live_servers: f64 = after
        .samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with("strata_leases{")
                && series.ends_with(",role=\"server\",state=\"live\"}")
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(live_servers, 1.0, "{}", after.text);
    assert!(after.value("strata_locator_wait_seconds_count{wait=\"begin\"}") >= 1.0);
    assert!(after.value("process_cpu_seconds_total") > 0.0);
}
