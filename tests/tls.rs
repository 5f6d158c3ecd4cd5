//! DICOM over TLS (`[dicom] tls_listen`) with DCMTK's tools built with OpenSSL (echo, store,
//! find) and pynetdicom over Python's ssl (get: DCMTK 3.6.7's getscu has no TLS), bit-identical
//! as on the plain port; anonymous clients when no CA is
//! configured; with `tls_ca`, client certificates required and verified (none, untrusted and
//! expired ones refused, logged, and the server keeps serving); plain DICOM on the TLS port
//! refused; Storage Commitment over TLS, the report on the request's association and on a
//! new TLS association to the requestor. Certificates come from `tools/make-test-certs.sh`.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// A throwaway PKI (`tools/make-test-certs.sh`).
fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(repo().join("tools/make-test-certs.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    dir
}

/// A server with a TLS listener using the PKI in `certs`, requiring client certificates
/// signed by its CA when `verify_clients`.
fn tls_server(certs: &Path, verify_clients: bool) -> TestServer {
    tls_server_with(certs, verify_clients, "")
}

fn tls_server_with(certs: &Path, verify_clients: bool, peers: &str) -> TestServer {
    let file = |name: &str| certs.join(name).display().to_string();
    let ca = if verify_clients {
        format!("tls_ca = \"{}\"\n", file("ca.crt"))
    } else {
        String::new()
    };
    let server = TestServer::start(&format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{ca}{peers}",
        file("server.crt"),
        file("server.key")
    ));
    assert!(server.tls_port.is_some());
    server
}

/// DCMTK's TLS options: trust our CA, and present `client` (`client`, `untrusted`, `expired`)
/// or no certificate (anonymous) when None.
fn tls_args(certs: &Path, client: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = match client {
        Some(name) => vec![
            "+tls".into(),
            certs.join(format!("{name}.key")).display().to_string(),
            certs.join(format!("{name}.crt")).display().to_string(),
        ],
        None => vec!["+tla".into()],
    };
    args.extend(["+cf".into(), certs.join("ca.crt").display().to_string()]);
    args
}

/// echoscu with `options` to `port`.
fn echo_to(port: u16, options: &[String]) -> Output {
    dcmtk("echoscu")
        .args(options)
        .args([
            "-to",
            "5",
            "-aet",
            "MODALITY",
            "-aec",
            "STRATA",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .output()
        .unwrap()
}

fn echo_over_tls(server: &TestServer, certs: &Path, client: Option<&str>) -> Output {
    echo_to(server.tls_port.unwrap(), &tls_args(certs, client))
}

/// Both listeners still answer.
fn assert_serving(server: &TestServer, certs: &Path, client: Option<&str>) {
    let out = echo_over_tls(server, certs, client);
    assert!(out.status.success(), "{}", text(&out));
    let (ok, log) = server.echoscu("MODALITY", "STRATA");
    assert!(ok, "{log}");
}

#[test]
fn dcmtk_stores_finds_and_gets_over_tls_as_on_the_plain_port() {
    let certs = certificates();
    let certs = certs.path();
    let server = tls_server(certs, false);
    let corpus = Corpus::small(1, 3, 1, 2, 81);
    let tls_port = server.tls_port.unwrap().to_string();

    let out = echo_over_tls(&server, certs, None);
    assert!(out.status.success(), "echoscu over TLS: {}", text(&out));

    let out = dcmtk("storescu")
        .args(tls_args(certs, None))
        .args(["-aet", "MODALITY", "-aec", "STRATA", "127.0.0.1", &tls_port])
        .args(corpus.paths())
        .output()
        .unwrap();
    assert!(out.status.success(), "storescu over TLS: {}", text(&out));
    assert_eq!(server.instances(), 5);

    let study = corpus.study_uids()[0].clone();
    let out = text(
        &dcmtk("findscu")
            .args(tls_args(certs, None))
            .args(["-S", "-aet", "VIEWER", "-aec", "STRATA"])
            .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"])
            .args([
                "-k",
                "NumberOfStudyRelatedInstances",
                "127.0.0.1",
                &tls_port,
            ])
            .output()
            .unwrap(),
    );
    assert!(out.contains(&study), "{out}");
    assert!(
        out.contains("[3 ]"),
        "NumberOfStudyRelatedInstances 3: {out}"
    );

    // C-GET over TLS (pynetdicom: DCMTK 3.6.7's getscu and movescu have no TLS): the same
    // bytes as stored.
    let got = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python())
        .arg(repo().join("tools/scu.py"))
        .args(["get", "127.0.0.1", &tls_port, "--aet", "VIEWER", "--tls-ca"])
        .arg(certs.join("ca.crt"))
        .arg("--out")
        .arg(got.path())
        .arg("-k")
        .arg(format!("StudyInstanceUID={study}"))
        .output()
        .unwrap();
    let out_text = text(&out);
    assert!(out.status.success(), "scu.py get over TLS: {out_text}");
    assert!(
        out_text.contains("FINAL 0x0000 remaining=- completed=3 failed=0"),
        "{out_text}"
    );
    assert_same_data_sets(
        &received(got.path()),
        &originals(&corpus, &study),
        "C-GET over TLS",
    );
}

#[test]
fn with_a_ca_only_clients_with_a_valid_certificate_it_signed_get_in() {
    let certs = certificates();
    let certs = certs.path();
    let server = tls_server(certs, true);
    let out = echo_over_tls(&server, certs, Some("client"));
    assert!(
        out.status.success(),
        "a valid client certificate: {}",
        text(&out)
    );
    let refused_before = server.log().matches("association refused").count();
    for client in [None, Some("untrusted"), Some("expired")] {
        let out = echo_over_tls(&server, certs, client);
        assert!(!out.status.success(), "{client:?} got in: {}", text(&out));
    }
    let log = server.log_when(|l| l.matches("association refused").count() >= refused_before + 3);
    assert_eq!(
        log.matches("association refused").count(),
        refused_before + 3,
        "every refused handshake is logged: {log}"
    );
    assert_serving(&server, certs, Some("client"));
}

#[test]
fn plain_dicom_on_the_tls_port_is_refused_and_tls_on_the_plain_port_too() {
    let certs = certificates();
    let certs = certs.path();
    let server = tls_server(certs, false);
    let plain_on_tls = echo_to(server.tls_port.unwrap(), &[]);
    assert!(!plain_on_tls.status.success(), "{}", text(&plain_on_tls));
    let tls_on_plain = echo_to(server.port, &tls_args(certs, None));
    assert!(!tls_on_plain.status.success(), "{}", text(&tls_on_plain));
    let log = server.log_when(|l| l.matches("association refused").count() >= 2);
    assert!(log.matches("association refused").count() >= 2, "{log}");
    assert_serving(&server, certs, None);
}

#[test]
fn c_move_to_a_peer_marked_tls_goes_over_tls_to_dcmtk_storescp() {
    let certs = certificates();
    let certs = certs.path();
    let corpus = Corpus::small(1, 3, 0, 1, 82);
    let file = |name: &str| certs.join(name).display().to_string();
    // storescp +tls requires and checks a client certificate: Strata presents its own.
    let tls_dest_dir = tempfile::tempdir().unwrap();
    let tls_dest = DcmtkStorescp::start_with(
        "TLSDEST",
        tls_dest_dir.path(),
        &[
            "+tls".into(),
            file("server.key"),
            file("server.crt"),
            "+cf".into(),
            file("ca.crt"),
        ],
    );
    // A plain destination marked tls = true: the handshake fails, nothing is sent in clear.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = DcmtkStorescp::start("PLAIN", plain_dir.path());
    let peers = format!(
        "[[dicom.peers]]\naet = \"TLSDEST\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\n\
         [[dicom.peers]]\naet = \"PLAIN\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\n",
        tls_dest.port, plain.port
    );
    let server = tls_server_with(certs, true, &peers);
    server.store(&corpus);
    let study = corpus.study_uids()[0].clone();
    let key = format!("StudyInstanceUID={study}");
    let out = text(&server.scu("move", "VIEWER", &["--dest", "TLSDEST", "-k", &key]));
    assert!(
        out.contains("FINAL 0x0000 remaining=- completed=3 failed=0"),
        "{out}"
    );
    assert_same_data_sets(
        &received(tls_dest_dir.path()),
        &originals(&corpus, &study),
        "C-MOVE over TLS",
    );
    let out = text(&server.scu("move", "VIEWER", &["--dest", "PLAIN", "-k", &key]));
    assert!(
        out.contains("FINAL 0xA702 remaining=- completed=0 failed=3"),
        "{out}"
    );
    assert!(files_below(plain_dir.path()).is_empty(), "sent in clear");
    let log = server.log_when(|l| l.contains("cannot associate with the move destination"));
    assert!(
        log.contains("cannot associate with the move destination"),
        "{log}"
    );
}

#[test]
fn storage_commitment_over_tls_both_ways_with_client_certificates() {
    let certs = certificates();
    let c = |name: &str| certs.path().join(name).display().to_string();
    // The modality's own server for reports: TLS, requiring our client certificate.
    let listener = CommitListener::start(
        0,
        "LISTENER",
        &[
            "--tls-cert",
            &c("server.crt"),
            "--tls-key",
            &c("server.key"),
            "--tls-ca",
            &c("ca.crt"),
        ],
    );
    let server = tls_server_with(
        certs.path(),
        true,
        &format!(
            "[[dicom.peers]]\naet = \"LISTENER\"\nhost = \"127.0.0.1\"\nport = {}\ntls = true\n",
            listener.port
        ),
    );
    let corpus = Corpus::small(1, 2, 0, 0, 45);
    server.store(&corpus);
    let tls = [
        "--tls-ca",
        &c("ca.crt"),
        "--tls-cert",
        &c("client.crt"),
        "--tls-key",
        &c("client.key"),
    ];
    let port = server.tls_port.unwrap();
    // Report on the TLS association of the request.
    let (status, transaction, report) =
        commit_request(port, "LISTENER", &corpus.paths(), &[], 30.0, &tls);
    assert_eq!(status, 0x0000);
    let report = report.expect("no report on the TLS association");
    assert_eq!(report["transaction_uid"], transaction.as_str());
    assert_eq!(report["event_type"], 1, "{report}");
    // Released at once: the report comes on a new TLS association to the peer. The request's
    // association refuses it, should the check finish before the release (it takes a
    // millisecond): otherwise the report may be delivered there and never reach the peer.
    let refusing: Vec<&str> = tls.iter().copied().chain(["--refuse-reports"]).collect();
    let (status, transaction, _) =
        commit_request(port, "LISTENER", &corpus.paths(), &[], 0.0, &refusing);
    assert_eq!(status, 0x0000);
    let report = listener
        .next_report(std::time::Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no report over TLS: {}", server.log()));
    assert_eq!(report["transaction_uid"], transaction.as_str());
    assert_eq!(report["event_type"], 1, "{report}");
}
