//! No acknowledged image is ever lost: kill -9 mid-ingest, SIGTERM mid-ingest, a full disk.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Starts a pynetdicom store of `files` and returns it with its stdout lines.
fn spawn_store(
    server: &TestServer,
    files: &[std::path::PathBuf],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(python())
        .arg(repo().join("tools/scu.py"))
        .args([
            "store",
            "127.0.0.1",
            &server.port.to_string(),
            "--aet",
            "MODALITY",
        ])
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for `n` Success lines; returns every line read so far.
fn wait_for_acks(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("STATUS 0x0000"))
        .count()
        < n
    {
        lines.push(
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("store stalled"),
        );
    }
    lines
}

/// Every acknowledged instance is indexed, its file exists with the recorded length and CRC,
/// and its data set is the one sent. Every indexed instance has its file.
async fn assert_acknowledged_are_durable(dir: &Path, corpus: &Corpus, acked: &[String]) -> usize {
    let locator = locator(dir).await;
    let online = dir.join("online");
    for uid in acked {
        let object = locator
            .find_instance(uid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged instance {uid} lost"));
        let bytes =
            std::fs::read(online.join(&object.location)).expect("file of an acknowledged instance");
        assert_eq!(bytes.len() as u64, object.length);
        assert_eq!(crc32c::crc32c(&bytes), object.crc32c, "{uid} corrupted");
        let source = corpus
            .files
            .iter()
            .find(|f| &f.sop_instance_uid == uid)
            .unwrap();
        assert_eq!(
            data_set_bytes(&online.join(&object.location)),
            data_set_bytes(&corpus.path(source))
        );
    }
    let mut indexed = 0;
    for f in &corpus.files {
        if let Some(object) = locator.find_instance(&f.sop_instance_uid).await.unwrap() {
            assert!(
                online.join(&object.location).exists(),
                "indexed without a file: {}",
                f.sop_instance_uid
            );
            indexed += 1;
        }
    }
    locator.close().await;
    indexed
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_ingest_loses_nothing_acknowledged() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "120",
        "--mr-studies",
        "0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), SHORT_LEASES);
    let server = TestServer::start_in(dir.path(), "", "");
    let killed = server.pid();
    let (mut client, rx) = spawn_store(&server, &corpus.paths());
    let mut lines = wait_for_acks(&rx, 25);
    server.kill9();
    let _ = client.wait();
    // The reader thread ends at the client's EOF, so this collects every line.
    lines.extend(rx.iter());
    let (acked, failed) = acknowledged(&lines.join("\n"));
    assert!(
        acked.len() >= 25 && acked.len() < 120,
        "kill came too late: {} acked",
        acked.len()
    );
    assert!(failed.is_empty());

    // Restart on the same folder: acknowledged data is all there, and the killed server's
    // temporaries are deleted once its lease has expired (by the new server's sweep).
    let server = TestServer::start_in(dir.path(), "", "");
    wait_for_lease_expiry(&server.config, killed);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(server.online_dir().join("tmp"))
        .unwrap()
        .next()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary files of the killed server were never swept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let indexed = assert_acknowledged_are_durable(dir.path(), &corpus, &acked).await;
    // At most the one instance in flight may have been committed without its response.
    assert!(
        indexed <= acked.len() + 1,
        "{indexed} indexed for {} acknowledged",
        acked.len()
    );

    // The sender retries the whole study; everything lands exactly once.
    retry_lands_everything_once(&server, dir.path(), &corpus).await;
}

/// Group commit: instances of eight associations share folder syncs and locator commits.
/// kill -9 while all eight store: every acknowledged instance is there and identical, every
/// file in a study folder is whole (no partial data under a final name), and a retry lands
/// everything exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_eight_associations_store_loses_nothing_acknowledged() {
    const LANES: usize = 8;
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "8",
        "--ct-images",
        "30",
        "--mr-studies",
        "0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), SHORT_LEASES);
    let server = TestServer::start_in(dir.path(), "", "");
    let killed = server.pid();
    let mut studies: Vec<&str> = corpus
        .files
        .iter()
        .map(|f| f.study_instance_uid.as_str())
        .collect();
    studies.sort();
    studies.dedup();
    assert_eq!(studies.len(), LANES);
    let (acks_tx, acks) = std::sync::mpsc::channel::<String>();
    let mut clients = Vec::new();
    for study in &studies {
        let (client, rx) = spawn_store(&server, &corpus.study_paths(study));
        let tx = acks_tx.clone();
        std::thread::spawn(move || {
            for line in rx.iter() {
                let _ = tx.send(line);
            }
        });
        clients.push(client);
    }
    drop(acks_tx);
    // Killed once each lane is well under way (8 x 30 instances in all).
    let mut lines = wait_for_acks(&acks, 60);
    server.kill9();
    for client in &mut clients {
        let _ = client.wait();
    }
    lines.extend(acks.iter());
    let (acked, failed) = acknowledged(&lines.join("\n"));
    assert!(
        acked.len() >= 60 && acked.len() < corpus.files.len(),
        "kill came too late: {} acked",
        acked.len()
    );
    assert!(failed.is_empty(), "{failed:?}");

    let server = TestServer::start_in(dir.path(), "", "");
    wait_for_lease_expiry(&server.config, killed);
    let indexed = assert_acknowledged_are_durable(dir.path(), &corpus, &acked).await;
    // At most the instance in flight on each association may have been committed without
    // its response.
    assert!(
        indexed <= acked.len() + LANES,
        "{indexed} indexed for {} acknowledged",
        acked.len()
    );
    // Nothing partial under a final name: every file in a study folder holds the whole data
    // set of one corpus instance (a file renamed but not yet recorded is whole too).
    let whole: std::collections::HashSet<Vec<u8>> =
        corpus.paths().iter().map(|p| data_set_bytes(p)).collect();
    let mut files = 0;
    for fan in std::fs::read_dir(server.online_dir()).unwrap() {
        let fan = fan.unwrap().path();
        if fan.file_name().unwrap() == "tmp" || !fan.is_dir() {
            continue;
        }
        for study in std::fs::read_dir(&fan).unwrap() {
            for file in std::fs::read_dir(study.unwrap().path()).unwrap() {
                let file = file.unwrap().path();
                assert!(
                    whole.contains(&data_set_bytes(&file)),
                    "partial or foreign data set in {file:?}"
                );
                files += 1;
            }
        }
    }
    assert!(
        files >= acked.len(),
        "{files} files for {} acked",
        acked.len()
    );

    // The senders retry everything; each instance lands exactly once.
    retry_lands_everything_once(&server, dir.path(), &corpus).await;
}

/// The whole corpus sent again after a crash: every instance stored exactly once, intact.
async fn retry_lands_everything_once(server: &TestServer, dir: &Path, corpus: &Corpus) {
    let out = server.storescu("MODALITY", &corpus.paths());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.instances(), corpus.files.len() as u64);
    let all: Vec<String> = corpus
        .files
        .iter()
        .map(|f| f.sop_instance_uid.clone())
        .collect();
    assert_eq!(
        assert_acknowledged_are_durable(dir, corpus, &all).await,
        corpus.files.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_in_flight_store_then_exits_cleanly() {
    let corpus = Corpus::generate(&[
        "--ct-studies",
        "1",
        "--ct-images",
        "80",
        "--mr-studies",
        "0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "", "");
    let (mut client, rx) = spawn_store(&server, &corpus.paths());
    let mut lines = wait_for_acks(&rx, 10);
    let status = server.terminate();
    assert!(status.success(), "server exit status {status:?}");
    let _ = client.wait();
    lines.extend(rx.iter());
    let out = lines.join("\n");
    let (acked, failed) = acknowledged(&out);
    assert!(failed.is_empty(), "{out}");
    assert!(
        acked.len() < 80,
        "shutdown did not stop the association: {out}"
    );

    let server = TestServer::start_in(dir.path(), "", "");
    let indexed = assert_acknowledged_are_durable(dir.path(), &corpus, &acked).await;
    // Every store the server started was finished and answered before it stopped.
    assert_eq!(indexed, acked.len(), "stored without acknowledgement");
    assert_eq!(server.instances() as usize, acked.len());
}

/// A small tmpfs mounted over the online folder; unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            text(&out)
        );
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_answers_out_of_resources_and_leaves_nothing_partial() {
    let corpus = Corpus::generate(&["--ct-studies", "1", "--ct-images", "6", "--mr-studies", "0"]);
    let dir = tempfile::tempdir().unwrap();
    // Room for two 512 KiB CT images, not three.
    let _disk = SmallDisk::mount(&dir.path().join("online"), "1300k");
    let server = TestServer::start_in(dir.path(), "", "");
    let out = server.scu("store", "MODALITY", &corpus.paths());
    let (acked, failed) = acknowledged(&text(&out));
    assert_eq!(acked.len(), 2, "{}", text(&out));
    assert_eq!(failed.len(), 4, "{}", text(&out));
    for (code, _) in &failed {
        assert_eq!(
            code & 0xFF00,
            0xA700,
            "expected Refused: Out of Resources, got 0x{code:04X}"
        );
    }
    assert!(
        std::fs::read_dir(server.online_dir().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "partial file left in tmp"
    );
    assert_eq!(server.instances(), 2);
    assert_eq!(
        assert_acknowledged_are_durable(dir.path(), &corpus, &acked).await,
        2
    );
    let (ok, _) = server.echoscu("MODALITY", "STRATA");
    assert!(ok, "server stopped serving after a full disk");
    drop(server);
}

/// A C-STORE of `file` sent part-way on a raw association: the command and the first 8000
/// bytes of the data set, up to the evidence that the server is receiving it (its log; the
/// temporary file is created with the first write, at 1 MiB or at the end).
/// Returns the association, its context and the rest of the data set.
fn store_part_way(
    server: &TestServer,
    corpus: &Corpus,
    file: &CorpusFile,
) -> (
    dicom_ul::ClientAssociation<std::net::TcpStream>,
    u8,
    Vec<u8>,
) {
    use strata::net::command::{CommandField, CommandSet};
    let (mut assoc, context) = ct_association(server, Duration::from_secs(30));
    let command = CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE)
        .with_data_set(&file.sop_instance_uid)
        .encode();
    let data_set = data_set_bytes(&corpus.path(file));
    assoc.send(&pdata(context, true, true, command)).unwrap();
    assoc
        .send(&pdata(context, false, false, data_set[..8000].to_vec()))
        .unwrap();
    let receiving = format!("sop_instance_uid={} ", file.sop_instance_uid);
    let log = server.log_when(|log| {
        log.lines()
            .any(|l| l.contains("receiving a C-STORE data set") && l.contains(&receiving))
    });
    assert!(log.contains("receiving a C-STORE data set"), "{log}");
    (assoc, context, data_set[8000..].to_vec())
}

#[test]
fn sigterm_lets_a_store_in_flight_finish_and_answers_it() {
    let corpus = Corpus::small(1, 1, 0, 1, 41);
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), "", "");
    let file = corpus.files[0].clone();
    let (mut assoc, context, rest) = store_part_way(&server, &corpus, &file);
    // SIGTERM while the data set is half received: the server stops accepting, and this
    // store goes on.
    signal(server.pid(), "TERM");
    server.log_when(|l| l.contains("stopped accepting"));
    let chunks: Vec<&[u8]> = rest.chunks(16_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        assoc
            .send(&pdata(context, false, last, chunk.to_vec()))
            .unwrap();
    }
    let status = loop {
        match assoc.receive().expect("the store in flight is answered") {
            dicom_ul::Pdu::PData { data } => {
                let command = strata::net::command::CommandSet::decode(&data[0].data).unwrap();
                break command.status_code().unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(status, 0x0000, "the store in flight succeeded");
    let exit = server.child_mut().wait().unwrap();
    assert!(exit.success(), "server exit status {exit:?}");
    drop(server);

    // Acknowledged, so durable: there after a restart, bytes as sent.
    let server = TestServer::start_in(dir.path(), "", "");
    assert_eq!(server.instances(), 1);
    let study = &file.study_instance_uid;
    assert_same_data_sets(
        &server.get_study(study),
        &originals(&corpus, study),
        "after restart",
    );
}

#[test]
fn after_the_shutdown_grace_a_stalled_store_is_dropped_and_nothing_half_written_stays() {
    let corpus = Corpus::small(1, 1, 0, 1, 42);
    let dir = tempfile::tempdir().unwrap();
    // 1 s instead of the 20 s the other tests use (30 by default).
    let mut server = TestServer::start_in(dir.path(), "shutdown_grace_secs = 1\n", "");
    let file = corpus.files[0].clone();
    let (_assoc, _, _) = store_part_way(&server, &corpus, &file);
    signal(server.pid(), "TERM");
    // The client never sends the rest: the server exits once the grace is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.child_mut().try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server still waits for the stalled store after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "server exit status {exit:?}");
    let log = server.log();
    assert!(
        log.contains("grace period over: dropping remaining associations"),
        "{log}"
    );
    drop(server);

    let server = TestServer::start_in(dir.path(), "", "");
    assert_eq!(server.instances(), 0, "an unacknowledged store was kept");
    let tmp = server.online_dir().join("tmp");
    let leftovers = server.log_when(|_| files_below(&tmp).is_empty());
    assert!(
        files_below(&tmp).is_empty(),
        "half-written temporaries stay: {leftovers}"
    );
}
