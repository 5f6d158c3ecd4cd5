//! Offline volumes: the tape tier. `export` writes every instance that is on no volume yet
//! into capped ustar files (`strata-vol-<UTC time>-<n>.tar`) that any `tar` reads: one
//! Part-10 file per instance at `<study>/<series>/<instance>.dcm` (UIDs only, never patient
//! data), then `MANIFEST.json` (every member's UIDs, transfer syntax, offset, length, SHA-256
//! and CRC-32C) and `SHA256SUMS` (`sha256sum -c` format). Volumes are capped at
//! `max_size`, not padded to it; an instance larger than the cap goes alone in its own volume.
//!
//! Order, so that a kill at any step records nothing that is not durable: the volume is
//! journaled in the locator, written as `<name>.tar.tmp`, fsynced, read back (every header
//! and member checked), renamed into place with its folder fsynced, and only then recorded
//! with its copies in one transaction. [`recover`] deletes what killed exports left.
//!
//! Reading ([`scan`], [`read_member`]) is for `strata backup import-volume`; [`check_copy`]
//! is for `strata verify --volumes DIR`.

pub mod tar;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::locator::copies::{Copy, CopyKind, ORIGINAL};
use crate::locator::volumes::{Unvolumed, Volume};
use crate::locator::{now_millis, Locator, LocatorError};
use crate::reader::{Payload, ReadError, Reader};

/// Name of the manifest member.
pub const MANIFEST: &str = "MANIFEST.json";
/// Name of the checksum list member.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// What `MANIFEST.json` says it is.
pub const FORMAT: &str = "strata-volume/1";
/// Locator rows read at a time.
const PAGE: u32 = 500;
/// Largest manifest an import reads.
const MAX_MANIFEST: u64 = 256 << 20;

/// Why a volume could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error("cannot write volume {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read volume {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("volume {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error(transparent)]
    Tar(#[from] tar::TarError),
}

/// One member as `MANIFEST.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Where the file's bytes start inside the volume.
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
    pub crc32c: u32,
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub volume: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub strata_version: String,
    pub members: Vec<Member>,
}

/// One volume written by an export.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
    pub instances: u64,
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportSummary {
    pub volumes: Vec<Written>,
    pub instances: u64,
    /// Bytes of the volume files.
    pub bytes: u64,
    pub failed: u64,
    /// `instance: reason` for every instance not exported.
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl crate::jobs::JobReport for ExportSummary {
    fn failed(&self) -> bool {
        self.failed > 0
    }
}

/// Parses `10G`, `500M`, `64K` or plain bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim_end_matches(['B', 'b', 'i'])),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("bad size unit in {s:?} (K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&n| n >= 64 << 10)
        .ok_or_else(|| format!("size {s:?} must be at least 64K"))
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (UTC), for volume names.
fn compact_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Deletes what exports killed part-way left: journaled volumes of dead processes (their
/// temporary or unrecorded files, then their rows). Returns how many were cleaned up.
pub async fn recover(locator: &Locator) -> Result<usize, VolumeError> {
    let mut cleaned = 0;
    let live = locator.live_leases().await?;
    for v in locator.volumes().await? {
        // This process's own volumes too: it may be writing one now.
        let alive = v
            .lease
            .is_some_and(|l| live.contains(&l) || l == locator.lease());
        if v.state != "writing" || alive {
            continue;
        }
        let dir = PathBuf::from(&v.directory);
        for name in [format!("{}.tmp", file_name(&v.id)), file_name(&v.id)] {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {
                    warn!(volume = %v.id, file = %name, "deleted an unrecorded volume file of an interrupted export")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(VolumeError::Write {
                        path: dir.join(name),
                        source,
                    })
                }
            }
        }
        locator.drop_volume(&v.id).await?;
        cleaned += 1;
    }
    Ok(cleaned)
}

/// A volume being written.
struct Open {
    id: String,
    temp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    written: u64,
    members: Vec<Member>,
    /// Length `MANIFEST.json` and `SHA256SUMS` will have with the members so far.
    manifest_len: u64,
    sums_len: u64,
    created_at: i64,
}

impl Open {
    /// Size of the finished volume if `len` more bytes at `path` were added.
    fn projected(&self, path: &str, len: u64) -> u64 {
        let entry = 400 + path.len() as u64 * 2;
        self.written
            + tar::member_size(len)
            + tar::member_size(self.manifest_len + entry)
            + tar::member_size(self.sums_len + 67 + path.len() as u64)
            + tar::END.len() as u64
    }
}

/// Writes volumes of everything on no volume yet into `out`, each at most `max_size` bytes,
/// member writes paced to `throttle_mb_s` (0: unlimited). `progress` hears (instances done,
/// instances to do, bytes written).
pub async fn export(
    locator: &Locator,
    reader: &Reader,
    out: &Path,
    max_size: u64,
    throttle_mb_s: f64,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<ExportSummary, VolumeError> {
    let mut throttle = crate::throttle::Throttle::new(throttle_mb_s);
    let started = std::time::Instant::now();
    crate::durable::create_dir_durable(out).map_err(|source| VolumeError::Write {
        path: out.to_owned(),
        source,
    })?;
    let out = out.canonicalize().map_err(|source| VolumeError::Write {
        path: out.to_owned(),
        source,
    })?;
    recover(locator).await?;
    let total = locator.unvolumed_count().await?;
    let mut summary = ExportSummary::default();
    let mut open: Option<Open> = None;
    let mut after = 0;
    let mut done = 0;
    loop {
        let page = locator.unvolumed_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for instance in page {
            done += 1;
            // An instance no ustar header can describe (8 GiB or more, or UIDs too long for
            // the path fields) is named and skipped, not read: it must not stop every export.
            let path = member_path(
                &instance.study_instance_uid,
                &instance.series_instance_uid,
                &instance.sop_instance_uid,
            );
            let skip = |summary: &mut ExportSummary, e: &dyn std::fmt::Display| {
                warn!(sop_instance_uid = %instance.sop_instance_uid, error = %e, "not exported to a volume");
                summary.failed += 1;
                summary
                    .failures
                    .push(format!("{}: {e}", instance.sop_instance_uid));
            };
            if let Err(e) = tar::header(&path, instance.object.length, 0) {
                skip(&mut summary, &e);
                continue;
            }
            // Held whole up to `HOLD_LIMIT`, else read in parts while it is written.
            let payload = match reader
                .payload(&instance.sop_instance_uid, &instance.object)
                .await
            {
                Ok(payload) => payload,
                Err(e) => {
                    skip(&mut summary, &e);
                    continue;
                }
            };
            let len = payload.len();
            if let Some(v) = &open {
                if !v.members.is_empty() && v.projected(&path, len) > max_size {
                    let v = open.take().expect("open volume");
                    summary
                        .volumes
                        .push(finish(locator, v, &out, &mut summary.bytes).await?);
                }
            }
            if open.is_none() {
                // Unique across runs (recovery runs first) and within one.
                let now = now_millis();
                let id = format!(
                    "strata-vol-{}{:03}Z-{:03}",
                    compact_utc(now / 1000).trim_end_matches('Z'),
                    now % 1000,
                    summary.volumes.len() + 1
                );
                open = Some(start(locator, &id, &out).await?);
            }
            let v = open.as_mut().expect("open volume");
            if v.members.is_empty() && v.projected(&path, len) > max_size {
                warn!(sop_instance_uid = %instance.sop_instance_uid, bytes = len, max_size, "instance larger than a volume: written alone");
            }
            let uid = instance.sop_instance_uid.clone();
            match add(v, reader, instance, path, &payload).await {
                Ok(()) => {}
                Err(Failed::Read(e)) => {
                    warn!(sop_instance_uid = %uid, error = %e, "not exported to a volume");
                    summary.failed += 1;
                    summary.failures.push(format!("{uid}: {e}"));
                    // A volume begun for this member alone is given up, not written empty.
                    if v.members.is_empty() {
                        abandon(locator, open.take().expect("open volume")).await?;
                    }
                    continue;
                }
                Err(Failed::Write(e)) => return Err(e),
            }
            progress(done, total, summary.bytes + v.written);
            throttle.pace(len).await;
        }
    }
    if let Some(v) = open.take() {
        summary
            .volumes
            .push(finish(locator, v, &out, &mut summary.bytes).await?);
    }
    summary.instances = summary.volumes.iter().map(|v| v.instances).sum();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// `STUDY/SERIES/INSTANCE.dcm` by UID. A component that is not a valid UID (a locator
/// older than the ingest check, a hostile value) is replaced by `x` and a digest of it, so
/// no member name can climb out of the folder it is extracted into (`..`, `/`) whatever the
/// data.
pub(crate) fn member_path(study: &str, series: &str, instance: &str) -> String {
    let safe = |uid: &str| {
        if crate::model::uid::is_path_safe(uid) {
            uid.to_string()
        } else {
            format!("x{}", crate::model::uid::digest_key(uid))
        }
    };
    format!("{}/{}/{}.dcm", safe(study), safe(series), safe(instance))
}

async fn start(locator: &Locator, id: &str, out: &Path) -> Result<Open, VolumeError> {
    locator.begin_volume(id, &out.display().to_string()).await?;
    let temp = out.join(format!("{id}.tar.tmp"));
    let file = std::fs::File::create(&temp).map_err(|source| VolumeError::Write {
        path: temp.clone(),
        source,
    })?;
    let created_at = now_millis();
    let manifest_len = manifest_text(id, created_at, &[]).len() as u64;
    Ok(Open {
        id: id.to_string(),
        temp,
        file: std::io::BufWriter::with_capacity(1 << 20, file),
        written: 0,
        members: Vec::new(),
        manifest_len,
        sums_len: 0,
        created_at,
    })
}

/// Gives up a volume that holds no member: its temporary removed, its journal entry
/// dropped (what [`recover`] does for an interrupted export's).
async fn abandon(locator: &Locator, v: Open) -> Result<(), VolumeError> {
    let Open { id, temp, file, .. } = v;
    drop(file);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(VolumeError::Write { path: temp, source }),
    }
    locator.drop_volume(&id).await?;
    Ok(())
}

/// Why a member was not added: its instance could not be read (the export goes on without
/// it), or the volume could not be written (the export stops).
enum Failed {
    Read(ReadError),
    Write(VolumeError),
}

impl From<VolumeError> for Failed {
    fn from(e: VolumeError) -> Failed {
        Failed::Write(e)
    }
}

/// Appends one member with `payload`'s bytes: held ones at once, a large instance's part by
/// part from its intact origin, hashed as they go, so a member of any size takes one part of
/// memory. A read that fails part-way (the origin found damaged at its end) cuts the volume
/// back to where the member began. Blocking writes: volumes go to local or tape-staging
/// disks, and the export is a command-line job.
async fn add(
    v: &mut Open,
    reader: &Reader,
    i: Unvolumed,
    path: String,
    payload: &Payload,
) -> Result<(), Failed> {
    let len = payload.len();
    let header =
        tar::header(&path, len, (v.created_at / 1000) as u64).map_err(VolumeError::from)?;
    let start = v.written;
    let mut digest = MemberDigest::default();
    v.write(&header)?;
    match payload {
        Payload::Whole(bytes) => {
            digest.update(bytes);
            v.write(bytes)?;
        }
        Payload::Parts(origin) => {
            let mut parts = reader.parts(origin);
            loop {
                match parts.next().await {
                    Ok(Some(part)) => {
                        digest.update(&part);
                        v.write(&part)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        v.cut_back(start)?;
                        return Err(Failed::Read(e));
                    }
                }
            }
        }
    }
    v.write(&[0u8; 512][..(tar::padded(len) - len) as usize])?;
    v.written = start + tar::member_size(len);
    let (sha256, crc32c) = digest.finish();
    let member = Member {
        offset: start + tar::BLOCK,
        length: len,
        sha256,
        crc32c,
        path,
        sop_instance_uid: i.sop_instance_uid,
        series_instance_uid: i.series_instance_uid,
        study_instance_uid: i.study_instance_uid,
        transfer_syntax_uid: i.object.transfer_syntax_uid,
    };
    let entry = serde_json::to_string(&member).expect("member JSON");
    v.manifest_len += entry.len() as u64 + if v.members.is_empty() { 0 } else { 2 };
    v.sums_len += 67 + member.path.len() as u64;
    v.members.push(member);
    Ok(())
}

impl Open {
    fn write(&mut self, bytes: &[u8]) -> Result<(), VolumeError> {
        self.file
            .write_all(bytes)
            .map_err(|source| VolumeError::Write {
                path: self.temp.clone(),
                source,
            })
    }

    /// Drops everything written after `at` bytes (a member abandoned part-way).
    fn cut_back(&mut self, at: u64) -> Result<(), VolumeError> {
        let cut = (|| {
            self.file.flush()?;
            self.file.get_ref().set_len(at)?;
            self.file.seek(SeekFrom::Start(at)).map(|_| ())
        })();
        self.written = at;
        cut.map_err(|source| VolumeError::Write {
            path: self.temp.clone(),
            source,
        })
    }
}

/// SHA-256 and CRC-32C of a member's bytes, fed in pieces.
#[derive(Default)]
struct MemberDigest {
    sha256: Sha256,
    crc32c: u32,
}

impl MemberDigest {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
    }

    fn finish(self) -> (String, u32) {
        (hex(&self.sha256.finalize()), self.crc32c)
    }
}

fn write_member(v: &mut Open, header: &[u8; 512], data: &[u8]) -> Result<(), VolumeError> {
    let len = data.len() as u64;
    v.write(header)?;
    v.write(data)?;
    v.write(&[0u8; 512][..(tar::padded(len) - len) as usize])?;
    v.written += tar::member_size(len);
    Ok(())
}

/// `MANIFEST.json`'s text: one member per line, so its length is known as members are added.
fn manifest_text(id: &str, created_at: i64, members: &[Member]) -> String {
    let head = serde_json::json!({
        "format": FORMAT,
        "volume": id,
        "created_at": created_at,
        "strata_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string();
    // `{"format":...,"members":[` then the members, then `]}`.
    let head = format!("{},\"members\":[\n", head.trim_end_matches('}'));
    let body: Vec<String> = members
        .iter()
        .map(|m| serde_json::to_string(m).expect("member JSON"))
        .collect();
    format!("{head}{}\n]}}\n", body.join(",\n"))
}

fn sums_text(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}  {}\n", m.sha256, m.path))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the manifest, checksums and end marker; makes the file durable, reads it back,
/// publishes it and records it with its copies.
async fn finish(
    locator: &Locator,
    mut v: Open,
    out: &Path,
    total: &mut u64,
) -> Result<Written, VolumeError> {
    let manifest = manifest_text(&v.id, v.created_at, &v.members);
    let sums = sums_text(&v.members);
    let mtime = (v.created_at / 1000) as u64;
    for (name, text) in [
        (MANIFEST, manifest.as_bytes()),
        (SHA256SUMS, sums.as_bytes()),
    ] {
        let header = tar::header(name, text.len() as u64, mtime)?;
        write_member(&mut v, &header, text)?;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| VolumeError::Write { path, source }
    };
    v.file.write_all(&tar::END).map_err(io(&v.temp))?;
    v.written += tar::END.len() as u64;
    let file = v.file.into_inner().map_err(|e| VolumeError::Write {
        path: v.temp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&v.temp))?;
    drop(file);
    let temp = v.temp.clone();
    let members = v.members.clone();
    let sha256 = tokio::task::spawn_blocking(move || check(&temp, &members))
        .await
        .expect("volume check task")?;
    let path = out.join(file_name(&v.id));
    std::fs::rename(&v.temp, &path).map_err(io(&path))?;
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(io(out))?;
    let volume = Volume {
        id: v.id.clone(),
        state: "complete".into(),
        directory: out.display().to_string(),
        size: v.written,
        instances: v.members.len() as u64,
        sha256,
        created_at: v.created_at,
        lease: None,
    };
    let copies = copies_of(&v.id, &v.members);
    locator.record_volume(&volume, &copies, false).await?;
    info!(volume = %v.id, instances = volume.instances, bytes = volume.size, "offline volume written, verified and recorded");
    *total += v.written;
    Ok(Written {
        id: v.id,
        path,
        size: volume.size,
        instances: volume.instances,
    })
}

/// The offline copies a volume's members are.
pub fn copies_of(volume: &str, members: &[Member]) -> Vec<Copy> {
    let created_at = now_millis();
    members
        .iter()
        .map(|m| Copy {
            sop_instance_uid: m.sop_instance_uid.clone(),
            kind: CopyKind::Offline,
            location: volume.to_string(),
            member: m.path.clone(),
            offset: m.offset,
            length: m.length,
            crc32c: m.crc32c,
            format: ORIGINAL.into(),
            source_crc32c: m.crc32c,
            created_at,
        })
        .collect()
}

/// Reads a written volume back in one pass: every header parses, every member listed is
/// where the manifest says with the right SHA-256 and CRC-32C, and the manifest and
/// checksums are there. Returns the SHA-256 of the whole file, hashed on the same pass.
/// Blocking.
fn check(path: &Path, members: &[Member]) -> Result<String, VolumeError> {
    let scanned = scan(path)?;
    let invalid = |detail: String| VolumeError::Invalid {
        path: path.to_owned(),
        detail,
    };
    if scanned.manifest.members != members {
        return Err(invalid("manifest differs from what was written".into()));
    }
    let read_err = |source| VolumeError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let mut ordered: Vec<&Member> = members.iter().collect();
    ordered.sort_by_key(|m| m.offset);
    let mut whole = Sha256::new();
    let mut at = 0u64;
    for m in ordered {
        // The headers and padding before the member, then the member itself.
        let gap = m
            .offset
            .checked_sub(at)
            .ok_or_else(|| invalid(format!("{} overlaps the member before it", m.path)))?;
        stream_range(&mut file, at, gap, |bytes| whole.update(bytes)).map_err(read_err)?;
        let mut digest = MemberDigest::default();
        stream_range(&mut file, m.offset, m.length, |bytes| {
            whole.update(bytes);
            digest.update(bytes);
        })
        .map_err(read_err)?;
        if digest.finish() != (m.sha256.clone(), m.crc32c) {
            return Err(invalid(format!("{} reads back damaged", m.path)));
        }
        at = m.offset + m.length;
    }
    let rest = size.saturating_sub(at);
    stream_range(&mut file, at, rest, |bytes| whole.update(bytes)).map_err(read_err)?;
    Ok(hex(&whole.finalize()))
}

/// Feeds `length` bytes of `file` from `offset` to `each`, a MiB at a time, so a range of
/// any size is read in bounded memory. A file that ends first is `UnexpectedEof`. Blocking.
fn stream_range(
    file: &mut std::fs::File,
    offset: u64,
    length: u64,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Read::take(&mut *file, length);
    let mut buf = vec![0u8; (1 << 20).min(length.max(1) as usize)];
    let mut read = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        each(&buf[..n]);
        read += n as u64;
    }
    if read < length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends {read} bytes into the {length} bytes at offset {offset}"),
        ));
    }
    Ok(())
}

/// What a volume holds, from its own headers and manifest.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub manifest: Manifest,
    /// Path → (data offset, length) of every member found in the headers.
    pub entries: BTreeMap<String, (u64, u64)>,
}

/// Walks a volume's headers (seeking over the data) and reads its manifest. Blocking.
pub fn scan(path: &Path) -> Result<Scanned, VolumeError> {
    let read_err = |source| VolumeError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |detail: String| VolumeError::Invalid {
        path: path.to_owned(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let mut entries = BTreeMap::new();
    let mut at = 0u64;
    loop {
        if at + tar::BLOCK > size {
            return Err(invalid(format!("ends without an end marker at byte {at}")));
        }
        let mut h = [0u8; 512];
        file.seek(SeekFrom::Start(at)).map_err(read_err)?;
        file.read_exact(&mut h).map_err(read_err)?;
        let Some(entry) = tar::parse(&h, at)? else {
            break;
        };
        if at + tar::member_size(entry.len) > size {
            return Err(invalid(format!("{} is cut short", entry.path)));
        }
        entries.insert(entry.path, (at + tar::BLOCK, entry.len));
        at += tar::member_size(entry.len);
    }
    let &(offset, len) = entries
        .get(MANIFEST)
        .ok_or_else(|| invalid(format!("no {MANIFEST}")))?;
    if len > MAX_MANIFEST {
        return Err(invalid(format!("{MANIFEST} of {len} bytes")));
    }
    let mut text = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    file.read_exact(&mut text).map_err(read_err)?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!("unknown format {:?}", manifest.format)));
    }
    for m in &manifest.members {
        if entries.get(&m.path) != Some(&(m.offset, m.length)) {
            return Err(invalid(format!(
                "{} is not where the manifest says",
                m.path
            )));
        }
    }
    Ok(Scanned { manifest, entries })
}

/// A member read for import ([`read_member`]).
#[derive(Debug)]
pub enum MemberRead {
    /// Intact, and read whole: used from memory, not read again.
    Whole(bytes::Bytes),
    /// Intact, checked a MiB at a time (it is larger than the caller holds): read again in
    /// parts where it is used.
    Intact,
    /// Its bytes fail the manifest's SHA-256 or CRC-32C.
    Damaged,
}

/// Reads and checks one member against the manifest (SHA-256 and CRC-32C): held whole if
/// it is at most `hold` bytes, else only checked, in bounded memory. A file cut short is an
/// error. Blocking.
pub fn read_member(path: &Path, m: &Member, hold: u64) -> Result<MemberRead, VolumeError> {
    let read_err = |source| VolumeError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    if m.length > hold {
        return Ok(match member_intact(&mut file, path, m)? {
            true => MemberRead::Intact,
            false => MemberRead::Damaged,
        });
    }
    let mut bytes = Vec::with_capacity(m.length as usize);
    let mut digest = MemberDigest::default();
    stream_range(&mut file, m.offset, m.length, |part| {
        digest.update(part);
        bytes.extend_from_slice(part);
    })
    .map_err(read_err)?;
    Ok(if digest.finish() == (m.sha256.clone(), m.crc32c) {
        MemberRead::Whole(bytes.into())
    } else {
        MemberRead::Damaged
    })
}

/// Whether a member's bytes are what the manifest says (SHA-256 and CRC-32C), read a MiB
/// at a time so a member of any size is checked in bounded memory. A file cut short is an
/// error. Blocking.
fn member_intact(file: &mut std::fs::File, path: &Path, m: &Member) -> Result<bool, VolumeError> {
    let mut digest = MemberDigest::default();
    stream_range(file, m.offset, m.length, |bytes| digest.update(bytes)).map_err(|source| {
        VolumeError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(digest.finish() == (m.sha256.clone(), m.crc32c))
}

/// The file a volume is written as, in whatever folder holds it now.
pub fn file_name(volume: &str) -> String {
    format!("{volume}.tar")
}

/// Checks one recorded offline copy where its volume file now is (blocking): the copy's
/// bytes at its offset, streamed through CRC-32C a MiB at a time, so a member of any size
/// is checked in bounded memory. A missing file is [`ReadError::is_missing`]; a file cut
/// short or bytes that fail the checksum are damage.
pub fn check_copy(path: &Path, copy: &Copy) -> Result<(), ReadError> {
    let location = format!("{}:{}", path.display(), copy.member);
    let io = |source| ReadError::Io {
        location: location.clone(),
        offset: copy.offset,
        length: copy.length,
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut crc = 0u32;
    stream_range(&mut file, copy.offset, copy.length, |bytes| {
        crc = crc32c::crc32c_append(crc, bytes)
    })
    .map_err(io)?;
    if crc != copy.crc32c {
        return Err(ReadError::Checksum {
            location,
            found: crc,
            expected: copy.crc32c,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member whose origin fails part-way (its bytes do not match its CRC-32C, found after
    /// the last part) is cut back out of the volume file, and a volume left with no member is
    /// abandoned: no file, no journal entry.
    #[tokio::test]
    async fn a_member_failing_part_way_is_cut_back_and_an_empty_volume_abandoned() {
        use crate::model::{StoredObject, Tier};
        use crate::reader::Origin;
        let (_locator_dir, locator) = crate::locator::tests::temp_locator().await;
        let dir = tempfile::tempdir().unwrap();
        let online = crate::online::OnlineStore::open(
            &dir.path().join("online"),
            locator.lease_token(),
            &Default::default(),
        )
        .unwrap();
        let archive = crate::archive::LocalStore::open(&dir.path().join("archive")).unwrap();
        let reader = Reader::new(
            std::sync::Arc::new(online),
            std::sync::Arc::new(crate::archive::Archive::Local(archive)),
        );
        let length = 3 * crate::reader::PART + 100;
        let source = dir.path().join("source.dcm");
        std::fs::write(&source, vec![7u8; length as usize]).unwrap();
        let copy = Copy {
            sop_instance_uid: "1.2.3".into(),
            kind: CopyKind::Offline,
            location: "v".into(),
            member: "m".into(),
            offset: 0,
            length,
            crc32c: 1,
            format: ORIGINAL.into(),
            source_crc32c: 1,
            created_at: 0,
        };
        let instance = Unvolumed {
            id: 1,
            sop_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2".into(),
            study_instance_uid: "1".into(),
            object: StoredObject {
                tier: Tier::Online,
                location: "x".into(),
                offset: 0,
                length,
                crc32c: 1,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            },
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut v = start(&locator, "strata-vol-test", &out).await.unwrap();
        let payload = Payload::Parts(Origin::Offline { file: source, copy });
        let added = add(
            &mut v,
            &reader,
            instance,
            "1/1.2/1.2.3.dcm".into(),
            &payload,
        )
        .await;
        assert!(matches!(added, Err(Failed::Read(_))));
        assert_eq!((v.written, v.members.len()), (0, 0));
        v.file.flush().unwrap();
        assert_eq!(std::fs::metadata(&v.temp).unwrap().len(), 0);
        assert_eq!(locator.volumes().await.unwrap().len(), 1);
        let temp = v.temp.clone();
        abandon(&locator, v).await.unwrap();
        assert!(!temp.exists());
        assert!(locator.volumes().await.unwrap().is_empty());
    }

    /// A range is fed whole across several reads; a file that ends inside it is an error.
    #[test]
    fn a_range_is_streamed_whole_or_reported_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut got = Vec::new();
        stream_range(&mut file, 7, (2 << 20) + 5, |b| got.extend_from_slice(b)).unwrap();
        assert_eq!(got, bytes[7..7 + (2 << 20) + 5]);
        let short = stream_range(&mut file, 1 << 20, 3 << 20, |_| {}).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof, "{short}");
        stream_range(&mut file, 3 << 20, 0, |_| panic!("nothing to feed")).unwrap();
    }

    /// A member is held whole up to the limit, only checked beyond it, and damaged when a
    /// byte differs from what the manifest's digests say, either way.
    #[test]
    fn a_member_is_read_once_when_small_and_checked_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.tar");
        let mut bytes: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let data = &bytes[100..1100];
        let mut digest = MemberDigest::default();
        digest.update(data);
        let (sha256, crc32c) = digest.finish();
        let m = Member {
            path: "1.2/3.4/5.dcm".into(),
            sop_instance_uid: "5".into(),
            series_instance_uid: "3.4".into(),
            study_instance_uid: "1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            offset: 100,
            length: 1000,
            sha256,
            crc32c,
        };
        match read_member(&path, &m, 1000).unwrap() {
            MemberRead::Whole(held) => assert_eq!(&held[..], data),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_member(&path, &m, 999).unwrap(),
            MemberRead::Intact
        ));
        bytes[600] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        for hold in [1000, 999] {
            assert!(matches!(
                read_member(&path, &m, hold).unwrap(),
                MemberRead::Damaged
            ));
        }
        let past_the_end = Member { offset: 4500, ..m };
        assert!(read_member(&path, &past_the_end, 1000).is_err());
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("70000"), Ok(70000));
        assert!(parse_size("1K").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(compact_utc(0), "19700101T000000Z");
        assert_eq!(compact_utc(1_795_000_000), "20261118T110640Z");
    }

    #[test]
    fn manifest_length_is_predicted_exactly() {
        let m = |n: u32| Member {
            path: format!("1.2/3.4/{n}.dcm"),
            sop_instance_uid: n.to_string(),
            series_instance_uid: "3.4".into(),
            study_instance_uid: "1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            offset: 512 * u64::from(n),
            length: 1000,
            sha256: "ab".repeat(32),
            crc32c: n,
        };
        let mut len = manifest_text("v", 5, &[]).len();
        let mut members = Vec::new();
        for n in 0..3 {
            let entry = serde_json::to_string(&m(n)).unwrap().len();
            len += entry + if members.is_empty() { 0 } else { 2 };
            members.push(m(n));
            assert_eq!(manifest_text("v", 5, &members).len(), len);
        }
        let parsed: Manifest = serde_json::from_str(&manifest_text("v", 5, &members)).unwrap();
        assert_eq!(parsed.members, members);
    }
}
