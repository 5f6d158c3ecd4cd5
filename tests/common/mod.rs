//! Shared harness for integration tests: a real `strata` server process on port 0 in a temp
//! folder, real DCMTK tools, pynetdicom through `tools/scu.py`, and generated corpora.
//! `tools/test.sh` installs DCMTK and the Python venv; a missing tool fails the test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this run of the suite puts every test site's locator on PostgreSQL
/// (`STRATA_TEST_LOCATOR=postgres`, the cluster of `tools/pg-dev.sh`) instead of SQLite.
pub fn on_postgres() -> bool {
    std::env::var("STRATA_TEST_LOCATOR").as_deref() == Ok("postgres")
}

/// The `[locator] url` of the test site in `dir`: `locator.db` in it, or on PostgreSQL a
/// database of its own, named after the folder (so a server restarted in the same folder, and
/// every CLI run there, finds the same index), created if missing.
pub fn locator_url(dir: &Path) -> String {
    if !on_postgres() {
        return format!("sqlite://{}", dir.join("locator.db").display());
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    pg_database_url(&format!("t_{:016x}", hasher.finish()))
}

/// The URL of database `name` in the cluster of `tools/pg-dev.sh`, created if missing.
pub fn pg_database_url(name: &str) -> String {
    let out = Command::new(repo().join("tools/pg-dev.sh"))
        .args(["url", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tools/pg-dev.sh url {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A `[node]` section for tests that kill processes with kill -9: leases of 2 s, so the work
/// of a killed process is taken over soon (see [`wait_for_lease_expiry`]).
pub const SHORT_LEASES: &str = "\n[node]\nlease_secs = 2\n";

/// Waits (at most 30 s) until the lease of the process `pid`, killed, has expired by the
/// locator's clock, as `strata status` shows it: from then on its work is others' to take
/// over.
pub fn wait_for_lease_expiry(config: &Path, pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["status", "--json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let held = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["pid"] == pid && n["live"] == true);
        if !held {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease of killed process {pid} never expired: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (polling every 2 ms, at most 30 s) until `evidence()` holds while `child` is still
/// running: true once it holds, false if the child exited first. Tests that kill a job part-way
/// wait on evidence that it is under way (a temporary file, a row) instead of sleeping.
pub fn wait_while_running(child: &mut Child, evidence: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if evidence() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no evidence of the job's progress after 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Fills the locator of the test site in `dir` with `studies` synthetic one-instance
/// studies of 1,000 patients (`tools/fill_locator.py`: index rows only, no files).
pub fn fill_locator(dir: &Path, studies: u32) {
    let target = if on_postgres() {
        vec!["--url".to_string(), locator_url(dir)]
    } else {
        vec![
            "--db".to_string(),
            dir.join("locator.db").to_string_lossy().into_owned(),
        ]
    };
    let n = studies.to_string();
    let out = Command::new(python())
        .arg(repo().join("tools/fill_locator.py"))
        .args(target)
        .args(["--studies", &n, "--instances", &n, "--patients", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The venv Python with pydicom and pynetdicom.
pub fn python() -> PathBuf {
    let path = std::env::var_os("STRATA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} missing: run tools/test.sh, which installs it",
        path.display()
    );
    path
}

/// Makes a very large multi-frame CT at `path` with `tools/big_instance.py` (`mb` MiB of
/// pixel data; `pattern` `ramp` or `rows`, which RLE makes small): its SOP Instance UID and
/// Study Instance UID.
pub fn make_big_instance(path: &Path, mb: u64, pattern: &str) -> (String, String) {
    let out = Command::new(python())
        .arg(repo().join("tools/big_instance.py"))
        .args(["make", path.to_str().unwrap(), "--mb", &mb.to_string()])
        .args(["--pattern", pattern])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let made = String::from_utf8(out.stdout).unwrap();
    let (sop_instance_uid, study) = made.trim().split_once(' ').unwrap();
    (sop_instance_uid.to_string(), study.to_string())
}

/// A DCMTK tool from Debian (not pynetdicom's same-named scripts), with Nagle off.
pub fn dcmtk(tool: &str) -> Command {
    let path = Path::new("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{} missing: run tools/test.sh, which installs dcmtk",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env("TCP_NODELAY", "1");
    cmd
}

/// One manifest entry written by tools/gen_corpus.py.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CorpusFile {
    pub path: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub specific_character_set: String,
}

/// A generated corpus in its own temp folder.
pub struct Corpus {
    pub dir: tempfile::TempDir,
    pub files: Vec<CorpusFile>,
}

impl Corpus {
    /// Runs tools/gen_corpus.py with these arguments.
    pub fn generate(args: &[&str]) -> Corpus {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(python())
            .arg(repo().join("tools/gen_corpus.py"))
            .arg("--out")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gen_corpus failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
        let files = serde_json::from_str(&manifest).unwrap();
        Corpus { dir, files }
    }

    /// A small corpus: `ct` CT studies of `ct_images` slices and `mr` MR studies of
    /// `mr_images` slices, from `seed`.
    pub fn small(ct: u32, ct_images: u32, mr: u32, mr_images: u32, seed: u32) -> Corpus {
        let args = [ct, ct_images, mr, mr_images, seed].map(|n| n.to_string());
        Corpus::generate(&[
            "--ct-studies",
            &args[0],
            "--ct-images",
            &args[1],
            "--mr-studies",
            &args[2],
            "--mr-images",
            &args[3],
            "--seed",
            &args[4],
        ])
    }

    pub fn path(&self, f: &CorpusFile) -> PathBuf {
        self.dir.path().join(&f.path)
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| self.path(f)).collect()
    }

    /// Files of one study (by index in generation order).
    pub fn study_paths(&self, study_instance_uid: &str) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| f.study_instance_uid == study_instance_uid)
            .map(|f| self.path(f))
            .collect()
    }

    /// SOP Instance UID -> path of its file.
    pub fn paths_by_uid(&self) -> HashMap<String, PathBuf> {
        self.files
            .iter()
            .map(|f| (f.sop_instance_uid.clone(), self.path(f)))
            .collect()
    }

    pub fn study_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = Vec::new();
        for f in &self.files {
            if !uids.contains(&f.study_instance_uid) {
                uids.push(f.study_instance_uid.clone());
            }
        }
        uids
    }
}

/// The data set bytes of a Part-10 file: everything after the file meta group.
pub fn data_set_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[128..132],
        b"DICM",
        "{} is not Part-10",
        path.display()
    );
    // (0002,0000) UL: tag(4) VR(2) len(2) value(4) right after DICM.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_len..].to_vec()
}

/// Peers every test server knows.
pub const PEERS: &str = r#"
[[dicom.peers]]
aet = "MODALITY"
host = "127.0.0.1"
port = 1
allow = ["echo", "store"]

[[dicom.peers]]
aet = "VIEWER"
host = "127.0.0.1"
port = 1

[[dicom.peers]]
aet = "ECHOONLY"
host = "127.0.0.1"
port = 1
allow = ["echo"]
"#;

/// Writes `dir/strata.toml`: our AE on port 0, the test peers, `online/` and `locator.db`
/// in `dir`, plus `extra` TOML sections (e.g. `[query]`). Returns the config path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\n{PEERS}\n[storage]\n\
             online_dir = \"online\"\n[locator]\nurl = \"{}\"\n{extra}\n",
            locator_url(dir)
        ),
    )
    .unwrap();
    config
}

/// A running `strata serve` in a temp folder.
pub struct TestServer {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    /// The TLS listener's port, when the config has `tls_listen`.
    pub tls_port: Option<u16>,
    /// The HTTP (DICOMweb) listener's port, when the config has a `[web]` listen address.
    pub web_port: Option<u16>,
    child: Option<Child>,
    stderr_log: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with the default test config plus `extra` lines in `[dicom]`.
    pub fn start(dicom_extra: &str) -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let mut server = TestServer::start_in(&dir, dicom_extra, "");
        server._temp = Some(temp);
        server
    }

    /// Starts (or restarts) a server whose files live in `dir`.
    pub fn start_in(dir: &Path, dicom_extra: &str, storage_extra: &str) -> TestServer {
        let config = dir.join("strata.toml");
        if !config.exists() {
            // Test defaults for the timeouts, unless `dicom_extra` (whose first lines are in
            // `[dicom]`) sets them.
            let timeouts: String = [
                ("artim_timeout_secs", 3),
                ("dimse_timeout_secs", 10),
                ("shutdown_grace_secs", 20),
            ]
            .iter()
            .filter(|(key, _)| !dicom_extra.contains(&format!("{key} =")))
            .map(|(key, secs)| format!("{key} = {secs}\n"))
            .collect();
            std::fs::write(
                &config,
                format!(
                    "[dicom]\naet = \"STRATA\"\nlisten = \"127.0.0.1:0\"\n{timeouts}\
                     {dicom_extra}\n{PEERS}\n\
                     [storage]\nonline_dir = \"online\"\n{storage_extra}\n\
                     [locator]\nurl = \"{}\"\n[log]\nlevel = \"strata=debug,info\"\n",
                    locator_url(dir)
                ),
            )
            .unwrap();
        }
        let stderr_log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            });
        let port_of = |line: &str, prefix: &str| -> u16 {
            line.strip_prefix(prefix)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        };
        let port = port_of(&line, "listening on ");
        let text = std::fs::read_to_string(&config).unwrap();
        let tls_port = text.contains("tls_listen").then(|| {
            let line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            port_of(&line, "tls listening on ")
        });
        let web_port = text.contains("[web]\nlisten").then(|| {
            let line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            port_of(&line, "web listening on ")
        });
        TestServer {
            tls_port,
            web_port,
            dir: dir.to_owned(),
            config,
            port,
            child: Some(child),
            stderr_log,
            _temp: None,
        }
    }

    pub fn online_dir(&self) -> PathBuf {
        self.dir.join("online")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The server's log once `done` holds for it (or after 20 s, for the caller's assertion
    /// to report): a client's exit does not mean the server has written its line yet.
    pub fn log_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if done(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `strata status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn instances(&self) -> u64 {
        self.status()["instances"].as_u64().unwrap()
    }

    /// `strata ARGS --config <this server's config>`: the admin CLI beside the server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// C-GET of a whole study with pynetdicom (Explicit VR Little Endian); SOP Instance UID
    /// -> data set bytes as received. Fails the test unless the C-GET succeeds.
    pub fn get_study(&self, study: &str) -> HashMap<String, Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        self.get_study_into(study, dir.path(), &[]);
        received(dir.path())
    }

    /// C-GET of a whole study with pynetdicom as VIEWER into `out`, with more `scu.py get`
    /// options (`--context SOP:TS`); fails the test unless it succeeds.
    pub fn get_study_into(&self, study: &str, out: &Path, extra: &[String]) {
        let mut args = vec![
            "--out".to_string(),
            out.display().to_string(),
            "-k".into(),
            format!("StudyInstanceUID={study}"),
        ];
        args.extend_from_slice(extra);
        let log = text(&self.scu("get", "VIEWER", &args));
        assert!(
            log.lines().any(|l| l.starts_with("FINAL 0x0000")),
            "C-GET failed: {log}"
        );
    }

    /// Stores a whole corpus with DCMTK storescu as MODALITY; fails the test unless it
    /// succeeds.
    pub fn store(&self, corpus: &Corpus) {
        let out = self.storescu("MODALITY", &corpus.paths());
        assert!(out.status.success(), "storescu failed: {}", text(&out));
    }

    /// `strata locate --json` of a study: one object per instance (tier, location, copies).
    pub fn locate(&self, study: &str) -> Vec<serde_json::Value> {
        let (ok, located) = cli_json(self, &["locate", "--json", "--study", study]);
        assert!(ok, "{located}");
        located.as_array().unwrap().clone()
    }

    /// C-MOVE of a whole study with pynetdicom to `dest_aet`, whose files land in `dest`
    /// (emptied first): the final response line and what arrived.
    pub fn move_study(
        &self,
        dest_aet: &str,
        dest: &Path,
        study: &str,
    ) -> (String, HashMap<String, Vec<u8>>) {
        for f in files_below(dest) {
            std::fs::remove_file(f).unwrap();
        }
        let key = format!("StudyInstanceUID={study}");
        let out = text(&self.scu("move", "VIEWER", &["--dest", dest_aet, "-k", &key]));
        let last = out
            .lines()
            .find(|l| l.starts_with("FINAL"))
            .unwrap_or_else(|| panic!("no final response: {out}"))
            .to_string();
        (last, received(dest))
    }

    /// tools/scu.py with the server's address filled in. The operation must have run to its
    /// final response (exit 0; whatever the statuses): a refused association (2), an abort
    /// (3) or a crash of the client fails the test here, never passes a negative check.
    pub fn scu<S: AsRef<std::ffi::OsStr>>(&self, sub: &str, aet: &str, args: &[S]) -> Output {
        self.scu_exiting(0, sub, aet, args)
    }

    /// tools/scu.py, which must exit with `code`: 0 completed, 2 association refused, 3 the
    /// association aborted mid-operation (by either side).
    pub fn scu_exiting<S: AsRef<std::ffi::OsStr>>(
        &self,
        code: i32,
        sub: &str,
        aet: &str,
        args: &[S],
    ) -> Output {
        let out = Command::new(python())
            .arg(repo().join("tools/scu.py"))
            .args([sub, "127.0.0.1", &self.port.to_string(), "--aet", aet])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "scu.py {sub} ended otherwise than expected: {}\nthe server's log ends:\n{}",
            text(&out),
            log_tail(&self.log(), 40)
        );
        out
    }

    /// DCMTK echoscu; returns (success, stderr+stdout).
    pub fn echoscu(&self, aet: &str, aec: &str) -> (bool, String) {
        let out = dcmtk("echoscu")
            .args([
                "-aet",
                aet,
                "-aec",
                aec,
                "127.0.0.1",
                &self.port.to_string(),
            ])
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    }

    /// DCMTK findscu (Study Root, verbose) with `-k` keys; returns its whole output.
    pub fn findscu(&self, aet: &str, keys: &[&str]) -> String {
        let mut cmd = dcmtk("findscu");
        cmd.args([
            "-v",
            "-S",
            "-aet",
            aet,
            "-aec",
            "STRATA",
            "127.0.0.1",
            &self.port.to_string(),
        ]);
        for key in keys {
            cmd.args(["-k", key]);
        }
        text(&cmd.output().unwrap())
    }

    /// DCMTK storescu of these files on one association.
    pub fn storescu(&self, aet: &str, files: &[PathBuf]) -> Output {
        dcmtk("storescu")
            .args([
                "-aet",
                aet,
                "-aec",
                "STRATA",
                "127.0.0.1",
                &self.port.to_string(),
            ])
            .args(files)
            .output()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        child.wait().unwrap()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of `log`.
pub fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes an IOCM rejection note titled `code` (CID 7011) naming the instances of `files`
/// to `out` (tools/rejection_note.py); returns its SOP Instance UID.
pub fn rejection_note(code: &str, files: &[PathBuf], out: &Path) -> String {
    let made = Command::new(python())
        .arg(repo().join("tools/rejection_note.py"))
        .args(["--code", code, "--out"])
        .arg(out)
        .args(files)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    String::from_utf8(made.stdout).unwrap().trim().to_string()
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// Runs a `strata` subcommand with `--json` output on the server's config: whether it
/// exited 0, and its JSON (fails the test when stdout is not JSON).
pub fn cli_json(server: &TestServer, args: &[&str]) -> (bool, serde_json::Value) {
    strata_json(args, &server.config)
}

/// `strata ARGS --config CONFIG` with `--json` output: whether it exited 0, and its JSON
/// (fails the test when stdout is not JSON).
pub fn strata_json(args: &[&str], config: &Path) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
    (out.status.success(), value)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parses scu.py store output: SOP Instance UIDs acknowledged with Success, and other codes.
pub fn acknowledged(out: &str) -> (Vec<String>, Vec<(u16, String)>) {
    let mut ok = Vec::new();
    let mut other = Vec::new();
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some("STATUS") {
            let code =
                u16::from_str_radix(parts.next().unwrap().trim_start_matches("0x"), 16).unwrap();
            let uid = parts.next().unwrap().to_string();
            if code == 0 {
                ok.push(uid);
            } else {
                other.push((code, uid));
            }
        }
    }
    (ok, other)
}

/// Every regular file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Opens the server's locator through Strata's own code (as a CLI process of node `test`).
pub async fn locator(server_dir: &Path) -> strata::locator::Locator {
    strata::locator::Locator::open(
        &strata::config::LocatorConfig {
            url: locator_url(server_dir),
            max_connections: 2,
            sqlite_cache_mib: 4,
        },
        strata::locator::Owner {
            node: "test".into(),
            host: strata::config::host_name(),
            role: strata::locator::Role::Cli,
            ttl: Duration::from_secs(30),
        },
    )
    .await
    .unwrap()
}

/// SOP Instance UID -> data set bytes of every file below `dir` (DCMTK names Part-10 files
/// `<modality>.<uid>` or `<modality><uid>`, our pynetdicom tools `<uid>.<transfer syntax>`
/// with raw data sets).
pub fn received(dir: &Path) -> HashMap<String, Vec<u8>> {
    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
    files_below(dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let bytes = std::fs::read(&p).unwrap();
            if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
                let uid = name
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .to_string();
                (uid, data_set_bytes(&p))
            } else {
                let uid = name
                    .strip_suffix(&format!(".{EXPLICIT}"))
                    .or_else(|| name.strip_suffix(&format!(".{IMPLICIT}")))
                    .or_else(|| name.strip_suffix(&format!(".{BIG_ENDIAN}")))
                    .unwrap_or(&name)
                    .to_string();
                (uid, bytes)
            }
        })
        .collect()
}

/// SOP Instance UID -> data set bytes of the corpus files of one study.
pub fn originals(corpus: &Corpus, study: &str) -> HashMap<String, Vec<u8>> {
    corpus
        .files
        .iter()
        .filter(|f| f.study_instance_uid == study)
        .map(|f| (f.sop_instance_uid.clone(), data_set_bytes(&corpus.path(f))))
        .collect()
}

/// The same instances with the same data set bytes.
pub fn assert_same_data_sets(
    got: &HashMap<String, Vec<u8>>,
    want: &HashMap<String, Vec<u8>>,
    what: &str,
) {
    let mut g: Vec<&String> = got.keys().collect();
    let mut w: Vec<&String> = want.keys().collect();
    g.sort();
    w.sort();
    assert_eq!(g, w, "{what}: received a different set of instances");
    for (uid, bytes) in want {
        assert!(
            got[uid] == *bytes,
            "{what}: {uid} differs from what was stored"
        );
    }
}

/// A loopback port nobody listens on, for as long as this lives: a socket bound to it and
/// never put in the listening state, so a connection to it is refused and no other test can
/// take the port meanwhile.
pub struct RefusingPort {
    pub port: u16,
    _socket: socket2::Socket,
}

impl RefusingPort {
    pub fn bind() -> RefusingPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        RefusingPort {
            port,
            _socket: socket,
        }
    }
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A storage SCP a test started, listening on `port` (bound by the SCP itself on port 0 and
/// read back, so no other process can take it between a probe and the bind).
pub struct Destination {
    pub port: u16,
    _process: Running,
}

/// tools/scp.py: a pynetdicom destination accepting only some SOP classes.
pub fn py_storescp(aet: &str, out: &Path, extra: &[&str]) -> Destination {
    let mut child = Command::new(python())
        .arg(repo().join("tools/scp.py"))
        .arg("0")
        .args(["--aet", aet, "--out"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("scp.py did not start: {line:?}"));
    Destination {
        port,
        _process: Running(child),
    }
}

/// Flips one byte in the middle of the online file of `located` (a `locate --json` entry).
pub fn damage_primary(server: &TestServer, located: &serde_json::Value) {
    let path = server
        .online_dir()
        .join(located["location"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
}

/// tools/commit.py request: one N-ACTION for `files` and `refs` (`CLASS:INSTANCE`) from
/// `aet`, waiting `wait` seconds for the report on the same association (0: release at
/// once). Returns the N-ACTION status, the Transaction UID and the report if one came.
pub fn commit_request(
    port: u16,
    aet: &str,
    files: &[PathBuf],
    refs: &[String],
    wait: f64,
    extra: &[&str],
) -> (u16, String, Option<serde_json::Value>) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tools/commit.py"))
        .args(["request", "127.0.0.1", &port.to_string(), "--aet", aet])
        .args(["--wait", &wait.to_string()])
        .args(extra);
    for r in refs {
        cmd.args(["--ref", r]);
    }
    let out = cmd.args(files).output().unwrap();
    let log = text(&out);
    let action = log
        .lines()
        .find_map(|l| l.strip_prefix("ACTION 0x"))
        .unwrap_or_else(|| panic!("no N-ACTION answer: {log}"));
    let (status, transaction) = action.split_once(' ').unwrap();
    let report = log
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .map(|r| serde_json::from_str(r).unwrap());
    (
        u16::from_str_radix(status, 16).unwrap(),
        transaction.to_string(),
        report,
    )
}

/// tools/commit.py listen: a modality's server that takes commitment reports on new
/// associations (accepting the caller in the SCP role).
pub struct CommitListener {
    pub port: u16,
    reports: mpsc::Receiver<serde_json::Value>,
    _process: Running,
}

impl CommitListener {
    /// Listens on `port` (0: any) as `aet`, with more options (TLS).
    pub fn start(port: u16, aet: &str, extra: &[&str]) -> CommitListener {
        let mut child = Command::new(python())
            .arg(repo().join("tools/commit.py"))
            .args(["listen", &port.to_string(), "--aet", aet])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = first
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("commit.py listen did not start: {first:?}"));
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(report) = line.strip_prefix("REPORT ") {
                    let _ = tx.send(serde_json::from_str(report).unwrap());
                }
            }
        });
        CommitListener {
            port,
            reports,
            _process: Running(child),
        }
    }

    /// The next report received, if one comes within `timeout`.
    pub fn next_report(&self, timeout: Duration) -> Option<serde_json::Value> {
        self.reports.recv_timeout(timeout).ok()
    }
}

/// DCMTK's storescp as a destination, writing data sets exactly as received (+B). storescp
/// cannot bind port 0, so this process listens (port 0, read back) and hands each accepted
/// connection to a `storescp --inetd` of its own, as an inetd super-server would.
pub struct DcmtkStorescp {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl DcmtkStorescp {
    pub fn start(aet: &str, out: &Path) -> DcmtkStorescp {
        DcmtkStorescp::start_with(aet, out, &[])
    }

    /// With more storescp options (`+tls KEY CERT +cf CA` for TLS).
    pub fn start_with(aet: &str, out: &Path, options: &[String]) -> DcmtkStorescp {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (aet, out, stopping) = (aet.to_string(), out.to_path_buf(), stop.clone());
        let options = options.to_vec();
        let acceptor = std::thread::spawn(move || {
            let mut children = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let output = stream.try_clone().unwrap();
                        let child = dcmtk("storescp")
                            .args(["--inetd", "-aet", &aet, "+B"])
                            .args(&options)
                            .arg("-od")
                            .arg(&out)
                            .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                            .stdout(Stdio::from(std::os::fd::OwnedFd::from(output)))
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap();
                        children.push(Running(child));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        DcmtkStorescp {
            port,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for DcmtkStorescp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A raw association (dicom-ul) calling STRATA as MODALITY with one CT Image Storage context
/// in Explicit VR Little Endian, reads timing out after `read_timeout`; and that context's id.
pub fn ct_association(
    server: &TestServer,
    read_timeout: Duration,
) -> (dicom_ul::ClientAssociation<std::net::TcpStream>, u8) {
    let assoc = dicom_ul::ClientAssociationOptions::new()
        .with_presentation_context(CT_IMAGE_STORAGE, vec!["1.2.840.10008.1.2.1"])
        .calling_ae_title("MODALITY")
        .called_ae_title("STRATA")
        .read_timeout(read_timeout)
        .establish(format!("127.0.0.1:{}", server.port))
        .unwrap();
    let context = assoc.presentation_contexts()[0].id;
    (assoc, context)
}

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// One P-DATA-TF PDU with one value: a command or data set fragment, last or not.
pub fn pdata(context: u8, command: bool, is_last: bool, data: Vec<u8>) -> dicom_ul::Pdu {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    dicom_ul::Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context,
            value_type: if command {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last,
            data,
        }],
    }
}

/// One element in Explicit VR Little Endian with a 2-byte length (VRs such as UI, LO, US).
pub fn explicit_element(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// One HTTP/1.1 request (`head` without the final blank line, `body` sent as it is):
/// status code, the response head, and the body as sent (not de-chunked). A connection reset
/// after the answer (a server answering before reading the whole body) still counts.
pub fn http(port: u16, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if !response.is_empty() => {
                eprintln!("after {} bytes: {e}", response.len());
                break;
            }
            Err(e) => panic!("no answer: {e}"),
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut head =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    http(port, &head, b"")
}

/// A new bearer token from `strata new-token`, and the SHA-256 that goes in the config.
/// The value of one series of a server's `/metrics` (`series` ends with the space before
/// the value; 0 when absent), asked with `authorization` (an admin's).
pub fn metric(port: u16, authorization: &str, series: &str) -> f64 {
    let (status, head, body) = http_get(port, "/metrics", &[("Authorization", authorization)]);
    assert_eq!(status, 200, "{head}");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Bytes of stored instances a server read from `tier` (its `/metrics`).
pub fn read_bytes(port: u16, authorization: &str, tier: &str) -> f64 {
    metric(
        port,
        authorization,
        &format!("strata_read_bytes_total{{tier=\"{tier}\"}} "),
    )
}

pub fn new_token() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("new-token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let (token, sha256) = printed.trim().split_once('\n').unwrap();
    (token.to_string(), sha256.to_string())
}

/// `strata hash-password` of `password` (read from standard input).
pub fn password_hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// An HTTP Basic `Authorization` value.
pub fn basic((user, password): (&str, &str)) -> String {
    use base64::Engine;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

/// C-FIND (pynetdicom, as VIEWER) matches at `level` for `keys` (`Keyword=value`), each as
/// the JSON `tools/scu.py` prints.
pub fn c_find(server: &TestServer, level: &str, keys: &[String]) -> Vec<serde_json::Value> {
    let mut args = vec!["--level".to_string(), level.to_string()];
    for k in keys {
        args.push("-k".into());
        args.push(k.clone());
    }
    let out = text(&server.scu("find", "VIEWER", &args));
    out.lines()
        .filter_map(|l| l.strip_prefix("MATCH "))
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}
