//! Memory stays bounded whatever the instance size: a very large instance (made on the fly
//! by `tools/big_instance.py`, 400 MiB of pixel data unless `STRATA_BIG_MB` says otherwise)
//! is stored, then retrieved as stored and re-encoded to the other uncompressed syntaxes,
//! online, archived and from a near-line backup copy, and decoded from RLE, with the
//! server's peak RSS (VmHWM) checked against a bound far below the instance size after every
//! step; the CLI runs that archive, back up, verify, write it to an offline volume and
//! restore it from there are held to the same bound, and so are STOW-RS and WADO-RS.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Peak resident memory the server may reach, in MiB: what it needs for itself plus its
/// bounded buffers (read-ahead, pieces in flight, PDUs), whatever the instance size.
const PEAK_RSS_MIB: u64 = 160;

fn big_mb() -> u64 {
    std::env::var("STRATA_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn big_instance(args: &[&str]) -> std::process::Output {
    std::process::Command::new(python())
        .arg(repo().join("tools/big_instance.py"))
        .args(args)
        .output()
        .unwrap()
}

/// Checks every frame of the instance received at `path` in `syntax`.
fn check(path: &Path, mb: u64, syntax: &str, pattern: &str) {
    let out = big_instance(&[
        "check",
        path.to_str().unwrap(),
        "--mb",
        &mb.to_string(),
        "--syntax",
        syntax,
        "--pattern",
        pattern,
    ]);
    assert!(out.status.success(), "{syntax}: {}", text(&out));
}

/// The peak resident set of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/pid/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in kB");
    kib / 1024
}

fn assert_bounded(server: &TestServer, after: &str) -> u64 {
    let peak = peak_rss_mib(server.pid());
    assert!(
        peak <= PEAK_RSS_MIB,
        "peak RSS {peak} MiB after {after}, bound {PEAK_RSS_MIB} MiB"
    );
    eprintln!("peak RSS after {after}: {peak} MiB");
    peak
}

#[test]
fn a_very_large_instance_is_stored_and_retrieved_in_each_uncompressed_syntax_in_bounded_memory() {
    let mb = big_mb();
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("big.dcm");
    let (sop_instance_uid, study) = make_big_instance(&file, mb, "ramp");
    assert!(std::fs::metadata(&file).unwrap().len() > mb << 20);

    // The server's own repair worker would mend the lost primary from the backup copy at
    // its next poll, racing the `verify` steps below that check the CLI's repair: pushed out.
    // Both ends of a C-GET wait for a whole instance to pass (the requestor for its
    // message, the server for the sub-operation's answer): given time in proportion to its
    // size (the test defaults are 10 and 30 s).
    let server = TestServer::start(&format!(
        "dimse_timeout_secs = {}\n[backup]\npoll_secs = 86400\n",
        10 + mb / 40
    ));
    // pynetdicom sends the file's bytes unchanged (DCMTK's storescu drops the trailing
    // padding).
    let out = text(&server.scu("store", "MODALITY", std::slice::from_ref(&file)));
    assert_eq!(acknowledged(&out).0.len(), 1, "{out}");
    assert_eq!(server.instances(), 1);
    assert_bounded(&server, "C-STORE");

    let get_and_check = |ts: &str, syntax: &str, tier: &str| {
        let got = tempfile::tempdir().unwrap();
        server.get_study_into(
            &study,
            got.path(),
            &[
                "--context".into(),
                format!("{CT_IMAGE}:{ts}"),
                "--dimse-timeout".into(),
                (10 + mb / 40).to_string(),
            ],
        );
        check(
            &got.path().join(format!("{sop_instance_uid}.{ts}")),
            mb,
            syntax,
            "ramp",
        );
        assert_bounded(&server, &format!("C-GET in {syntax} from {tier}"));
    };
    for (ts, syntax) in [
        (EXPLICIT_LE, "explicit"),
        (IMPLICIT_LE, "implicit"),
        (EXPLICIT_BE, "big"),
    ] {
        get_and_check(ts, syntax, "online");
    }
    // Archived into an S-DICOM container (local backend) by a CLI run that copies it in
    // parts: read from there the same way.
    let out = cli_bounded(&server, &["tier", "run", "--min-age-days", "0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let located = server.locate(&study);
    assert_eq!(located[0]["tier"], "archive", "{}", text(&out));
    get_and_check(EXPLICIT_LE, "explicit", "archive");
    get_and_check(IMPLICIT_LE, "implicit", "archive");

    // Backed up near-line (copied in parts too), then the archive container lost: served
    // from the backup copy, streamed from it as stored and re-encoded.
    let out = cli_bounded(&server, &["backup", "run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let location = located[0]["location"].as_str().unwrap();
    let container = server.dir.join("archive").join(location);
    std::fs::remove_file(&container).unwrap_or_else(|e| panic!("{container:?}: {e}"));
    get_and_check(EXPLICIT_LE, "explicit", "a backup copy");
    get_and_check(IMPLICIT_LE, "implicit", "a backup copy");
    let log = server.log();
    assert!(log.contains("served from a backup copy"), "{log}");
    // `strata verify` finds the loss and the intact copy, checking both in parts.
    let out = cli_bounded(&server, &["verify", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["unrecoverable"], 0, "{report}");
    assert_eq!(report["primaries"]["archive"]["missing"], 1, "{report}");
    assert_eq!(report["copies"]["nearline"]["ok"], 1, "{report}");
    // Repaired: the primary re-created online from the copy, part by part.
    let out = cli_bounded(&server, &["verify", "--repair", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["repaired_primaries"], 1, "{report}");
    assert_eq!(server.locate(&study)[0]["tier"], "online", "{report}");
    get_and_check(EXPLICIT_LE, "explicit", "the repaired primary");

    // Written to an offline volume part by part (the export and its read-back hash each
    // member as it goes): GNU tar extracts the member byte for byte as stored.
    let stored = server
        .online_dir()
        .join(server.locate(&study)[0]["location"].as_str().unwrap());
    let volumes = tempfile::tempdir().unwrap();
    let into = volumes.path().to_str().unwrap();
    let out = cli_bounded(
        &server,
        &["backup", "export-volume", "--json", "--out", into],
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(summary["instances"], 1, "{summary}");
    let volume = PathBuf::from(summary["volumes"][0]["path"].as_str().unwrap());
    let extracted = tempfile::tempdir().unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&volume)
        .arg("-C")
        .arg(extracted.path())
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar));
    let member = extracted
        .path()
        .join(&study)
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join(format!("{sop_instance_uid}.dcm"));
    assert_same_file(&stored, &member);
    drop(extracted);

    // The primary damaged: `import-volume` checks the member and re-creates the primary from
    // it, both in parts.
    flip_one_byte(&stored);
    let out = cli_bounded(
        &server,
        &[
            "backup",
            "import-volume",
            "--json",
            volume.to_str().unwrap(),
        ],
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(summary["restored"], 1, "{summary}");
    assert_eq!(summary["damaged"], 0, "{summary}");
    get_and_check(
        EXPLICIT_LE,
        "explicit",
        "the primary restored from a volume",
    );

    // Re-encoding streamed: the server said so, and nothing fell back to memory.
    let log = server.log();
    assert!(!log.contains("re-encoding in memory"), "{log}");
}

/// STOW-RS and WADO-RS stream too: the same very large instance stored by a chunked STOW-RS
/// POST (curl reads the body from a pipe) and retrieved by WADO-RS as stored (byte for byte)
/// and re-encoded, with the server's peak RSS under the same bound after each.
#[test]
fn a_very_large_instance_goes_through_stow_rs_and_wado_rs_in_bounded_memory() {
    let mb = big_mb();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.dcm");
    let (_, study) = make_big_instance(&file, mb, "ramp");
    let server_dir = tempfile::tempdir().unwrap();
    let web = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\nmax_upload_mb = {}\n\
         [[web.users]]\nname = \"viewer\"\npassword_hash = \"{}\"\n\
         allow = [\"find\", \"get\", \"store\"]\n",
        mb * 2 + 64,
        password_hash("viewer pass")
    );
    let server = TestServer::start_in(server_dir.path(), "", &web);
    let url = format!("http://127.0.0.1:{}/dicom-web", server.web_port.unwrap());
    const STOW: &str = "b=big-boundary-5c1d; \
        { printf -- '--%s\\r\\nContent-Type: application/dicom\\r\\n\\r\\n' $b; cat \"$1\"; \
          printf -- '\\r\\n--%s--\\r\\n' $b; } \
        | curl -sS --fail-with-body -u 'viewer:viewer pass' -X POST -T - \
          -H \"Content-Type: multipart/related; type=\\\"application/dicom\\\"; boundary=$b\" \
          -H 'Accept: application/dicom+json' \"$2/studies\"";
    let out = std::process::Command::new("bash")
        .args(["-c", STOW, "stow"])
        .arg(&file)
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    assert_eq!(server.instances(), 1, "{}", text(&out));
    assert_bounded(&server, "STOW-RS");

    let wado = |transfer_syntax: &str| {
        let body = dir.path().join("wado.multipart");
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", "-u", "viewer:viewer pass", "-H"])
            .arg(format!(
                "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax={transfer_syntax}"
            ))
            .arg("-o")
            .arg(&body)
            .arg(format!("{url}/studies/{study}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out), server.log());
        let part = dir.path().join(format!("wado.{transfer_syntax}.dcm"));
        single_part(&body, &part);
        std::fs::remove_file(&body).unwrap();
        part
    };
    // As stored: the stored file byte for byte (its file meta is Strata's).
    let stored = server
        .online_dir()
        .join(server.locate(&study)[0]["location"].as_str().unwrap());
    let as_stored = wado("*");
    assert_same_file(&stored, &as_stored);
    check(&as_stored, mb, "explicit", "ramp");
    assert_bounded(&server, "WADO-RS as stored");
    let implicit = wado(IMPLICIT_LE);
    check(&implicit, mb, "implicit", "ramp");
    assert_bounded(&server, "WADO-RS in Implicit VR Little Endian");
}

/// Copies the one part of the multipart/related body at `body` into `out`, streaming: from
/// the end of its headers to the closing delimiter.
fn single_part(body: &Path, out: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let find = |hay: &[u8], needle: &[u8], last: bool| {
        let mut at = hay
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle);
        let found = if last { at.last() } else { at.next() };
        found.map(|(i, _)| i as u64).expect("multipart framing")
    };
    let mut f = std::fs::File::open(body).unwrap();
    let len = f.metadata().unwrap().len();
    let mut head = vec![0u8; 4096.min(len) as usize];
    f.read_exact(&mut head).unwrap();
    let start = find(&head, b"\r\n\r\n", false) + 4;
    let tail_len = 256.min(len);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len)).unwrap();
    f.read_exact(&mut tail).unwrap();
    let end = len - tail_len + find(&tail, b"\r\n--", true);
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut to = std::fs::File::create(out).unwrap();
    std::io::copy(&mut f.take(end - start), &mut to).unwrap();
}

/// The two files hold the same bytes (`cmp`, which streams them).
fn assert_same_file(a: &Path, b: &Path) {
    let cmp = std::process::Command::new("cmp")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(cmp.status.success(), "{}", text(&cmp));
}

/// Flips the byte in the middle of the file at `path`, in place.
fn flip_one_byte(path: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let middle = file.metadata().unwrap().len() / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(middle)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0xFF;
    file.seek(SeekFrom::Start(middle)).unwrap();
    file.write_all(&byte).unwrap();
}

/// Runs a `strata` command with its peak RSS checked against the
/// bound: Python runs it and reports the child's `ru_maxrss`.
fn cli_bounded(server: &TestServer, args: &[&str]) -> std::process::Output {
    const REPORT: &str = "import resource, subprocess, sys\n\
        done = subprocess.run(sys.argv[1:])\n\
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n\
        print(f'peak-rss-kib {peak}', file=sys.stderr)\n\
        sys.exit(done.returncode)\n";
    let out = std::process::Command::new(python())
        .args(["-c", REPORT, env!("CARGO_BIN_EXE_strata")])
        .args(args)
        .arg("--config")
        .arg(&server.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak reported: {stderr}"));
    let peak = kib / 1024;
    assert!(
        peak <= PEAK_RSS_MIB,
        "`strata {}` peak RSS {peak} MiB, bound {PEAK_RSS_MIB} MiB",
        args.join(" ")
    );
    eprintln!("peak RSS of `strata {}`: {peak} MiB", args.join(" "));
    out
}

/// The same size compressed (DCMTK's `dcmcrle`, RLE Lossless: a few MB) and taken by a
/// destination that only accepts Implicit VR Little Endian: decoded one frame at a time,
/// never whole. (Decoded whole, dicom-pixeldata 0.10 fails on this RLE multi-frame at any
/// size: `STRATA_BIG_MB=16` showed it before multi-frame instances were decoded by frame.)
#[test]
fn a_very_large_compressed_instance_is_decoded_frame_by_frame_in_bounded_memory() {
    let mb = big_mb();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("big.dcm");
    let rle = dir.path().join("big-rle.dcm");
    let (sop_instance_uid, study) = make_big_instance(&plain, mb, "rows");
    let out = dcmtk("dcmcrle").arg(&plain).arg(&rle).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(&plain).unwrap();
    assert!(std::fs::metadata(&rle).unwrap().len() < (mb << 20) / 8);

    let server = TestServer::start("");
    let out = text(&server.scu("store", "MODALITY", std::slice::from_ref(&rle)));
    assert_eq!(acknowledged(&out).0.len(), 1, "{out}");
    let got = tempfile::tempdir().unwrap();
    server.get_study_into(
        &study,
        got.path(),
        &["--context".into(), format!("{CT_IMAGE}:{IMPLICIT_LE}")],
    );
    let received = got.path().join(format!("{sop_instance_uid}.{IMPLICIT_LE}"));
    check(&received, mb, "implicit", "rows");
    assert_bounded(&server, "C-GET decoded from RLE");
}
