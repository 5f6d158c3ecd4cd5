//! The online tier: plain Part-10 files, one folder per study, written atomically.
//!
//! Layout: `ROOT/<aa>/<study key>/<instance key>.dcm`, where the keys are hex digests of the
//! UIDs (no patient data in paths) and `<aa>` fans studies out over 256 folders. New files
//! are written under `ROOT/tmp/`, fsynced, then renamed into place and the folder fsynced;
//! temporaries carry the lease of the process writing them, and those of processes whose
//! lease has gone (on any node sharing the folder) are deleted at start, so a crash never
//! leaves a visible partial file.

mod part10;
mod temp;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::uid::digest_key;

use crate::durable::{create_dir_durable, sync_dir};
use crate::locator::leases::LeaseToken;
use crate::locator::{Locator, LocatorError};

pub use part10::{part10_header, Part10Writer, WrittenFile, HEAD_LEN};
pub use temp::TempFile;

/// Why an online-tier operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("cannot prepare online folder {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("cannot create temporary file in {path}: {source}")]
    CreateTemp { path: PathBuf, source: io::Error },
    #[error("cannot write temporary file {path}: {source}")]
    WriteTemp { path: PathBuf, source: io::Error },
    #[error("cannot publish {path}: {source}")]
    Publish { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot tell which temporaries are in use: {0}")]
    Leases(#[source] LocatorError),
}

impl OnlineError {
    /// The underlying I/O error, e.g. to tell a full disk from other failures.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            OnlineError::Prepare { source, .. }
            | OnlineError::CreateTemp { source, .. }
            | OnlineError::WriteTemp { source, .. }
            | OnlineError::Publish { source, .. }
            | OnlineError::Remove { source, .. } => Some(source),
            OnlineError::Leases(_) => None,
        }
    }
}

/// The online tier rooted at one folder.
#[derive(Debug)]
pub struct OnlineStore {
    root: PathBuf,
    tmp: PathBuf,
    next_temp: AtomicU64,
    /// This process's lease, in temporaries' and new files' names.
    lease: LeaseToken,
    /// Study folders whose entry in their fan-out folder this process has made durable, so
    /// that later files in them need only the study folder synced. Invariant: nothing (on
    /// any node sharing the folder) removes a study folder; whatever comes to must forget it
    /// here, or a re-created folder's entry would never be synced. Emptied when full.
    durable_dirs: std::sync::Mutex<HashSet<PathBuf>>,
}

/// Study folders remembered as durable, at most.
const DURABLE_DIRS_LIMIT: usize = 16_384;

impl OnlineStore {
    /// Opens (creating if needed) the tier for the process holding `lease`, and deletes
    /// temporaries left by a crash: all but those of `in_use`, the leases other processes
    /// (of any node sharing the folder) hold now.
    pub fn open(
        root: &Path,
        lease: LeaseToken,
        in_use: &HashSet<i64>,
    ) -> Result<OnlineStore, OnlineError> {
        let prepare = |path: &Path, source| OnlineError::Prepare {
            path: path.to_owned(),
            source,
        };
        let tmp = root.join("tmp");
        create_dir_durable(&tmp).map_err(|e| prepare(&tmp, e))?;
        remove_temporaries(&tmp, in_use)?;
        sync_dir(&tmp).map_err(|e| prepare(&tmp, e))?;
        // The 256 fan-out folders exist, durably, before any store: then a store only has to
        // make its study folder and file durable, whatever other associations are doing.
        for fan in 0..=255u8 {
            let dir = root.join(format!("{fan:02x}"));
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(|e| prepare(&dir, e))?;
            }
        }
        sync_dir(root).map_err(|e| prepare(root, e))?;
        Ok(OnlineStore {
            root: root.to_owned(),
            tmp,
            next_temp: AtomicU64::new(0),
            lease,
            durable_dirs: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Opens the tier for the process holding `locator`'s lease (on the blocking pool),
    /// keeping the temporaries of every other lease held now.
    pub async fn open_for(root: &Path, locator: &Locator) -> Result<OnlineStore, OnlineError> {
        let in_use = locator
            .others_live_leases()
            .await
            .map_err(OnlineError::Leases)?;
        let root = root.to_owned();
        let lease = locator.lease_token();
        tokio::task::spawn_blocking(move || OnlineStore::open(&root, lease, &in_use))
            .await
            .expect("blocking open")
    }

    /// Deletes the temporaries of processes whose lease has gone (`in_use`: the leases held
    /// now, this process's own included); returns how many. The server runs it now and then,
    /// so what a dead process (of any node) left does not wait for the next start.
    pub fn remove_temporaries(&self, in_use: &HashSet<i64>) -> Result<usize, OnlineError> {
        remove_temporaries(&self.tmp, in_use)
    }

    /// Root folder of the tier.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new name for a temporary file, never used before (no I/O: the writer creates it);
    /// the file goes when the [`TempFile`] does, unless published.
    pub fn temp_file(&self) -> TempFile {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        TempFile::new(self.tmp.join(format!("{}-{n}.part", self.lease.get())))
    }

    /// Creates a new, empty temporary file. Blocking.
    pub fn create_temp(&self) -> Result<(TempFile, std::fs::File), OnlineError> {
        let temp = self.temp_file();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp.path())
            .map(|file| (temp, file))
            .map_err(|source| OnlineError::CreateTemp {
                path: self.tmp.clone(),
                source,
            })
    }

    /// A new, never used location (relative to the root) for a copy of an instance. Every
    /// copy gets its own name, so publishing one can never replace another: a copy the
    /// locator still points at stays valid until the locator points elsewhere.
    pub fn new_location(&self, study_instance_uid: &str, sop_instance_uid: &str) -> String {
        let study = digest_key(study_instance_uid);
        let instance = digest_key(sop_instance_uid);
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // The lease is unique across the site's nodes, so two nodes never pick one name.
        format!(
            "{}/{study}/{instance}.{nanos:x}{:x}{n:x}.dcm",
            &study[..2],
            self.lease.get()
        )
    }

    /// Absolute path of a location.
    pub fn path(&self, location: &str) -> PathBuf {
        self.root.join(location)
    }

    /// Moves a fully written temporary file to `location`, durably: its bytes and the new
    /// name survive a crash once this returns. Blocking.
    pub fn publish(&self, temp: &Path, location: &str) -> Result<(), OnlineError> {
        self.publish_all(&[(temp, location)])
            .pop()
            .expect("one answer per file")
    }

    /// Moves fully written temporary files to their locations and makes them durable, data
    /// and names, sharing the folder syncs: each study folder once, however many files went
    /// into it, and its fan-out folder only the first time this process publishes into it
    /// (see `durable_dirs`); every sync (each file's `fdatasync`, each folder's `fsync`) runs
    /// at once. One answer per file, in order; a file's bytes and name survive a crash once
    /// its answer is `Ok`. A crash before that may leave a file under its final name whose
    /// bytes are not all on disk: no row points at it (rows are recorded after the answer),
    /// so nothing serves it; like any unreferenced file it stays until removed by hand (no
    /// scrub looks for them yet). Blocking.
    pub fn publish_all(&self, files: &[(&Path, &str)]) -> Vec<Result<(), OnlineError>> {
        let mut answers: Vec<Result<(), OnlineError>> = Vec::with_capacity(files.len());
        // Folder -> the files whose answer waits for its sync.
        let mut to_sync: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        let mut new_study_dirs = Vec::new();
        for (i, (temp, location)) in files.iter().enumerate() {
            let target = self.path(location);
            let study_dir = target.parent().expect("locations have a folder").to_owned();
            let known = self.dir_is_durable(&study_dir);
            let linked = (|| {
                if !known {
                    create_dir_durable(&study_dir)?;
                }
                std::fs::rename(temp, &target)
            })();
            answers.push(linked.map_err(|source| OnlineError::Publish {
                path: target.clone(),
                source,
            }));
            if answers[i].is_err() {
                continue;
            }
            to_sync.entry(study_dir.clone()).or_default().push(i);
            if !known {
                // The study folder may have been made by another writer (an association of
                // an earlier run, another node) that has not made it durable yet.
                let fan_dir = study_dir.parent().expect("locations have two folders");
                to_sync.entry(fan_dir.to_owned()).or_default().push(i);
                new_study_dirs.push(study_dir);
            }
        }
        // Each folder once and each renamed file's data, all at once: a file's data sync and
        // its folder's overlap instead of following each other (the device may even serve
        // them with one cache flush).
        let mut jobs: Vec<SyncJob> = to_sync.keys().cloned().map(SyncJob::Folder).collect();
        for (i, (_, location)) in files.iter().enumerate() {
            if answers[i].is_ok() {
                jobs.push(SyncJob::Data(i, self.path(location)));
            }
        }
        let results = run_at_once(&jobs, SyncJob::run);
        for (job, result) in jobs.iter().zip(results) {
            let Err(source) = result else { continue };
            let (path, failed): (&Path, &[usize]) = match job {
                SyncJob::Folder(dir) => {
                    new_study_dirs.retain(|d| d != dir && d.parent() != Some(dir.as_path()));
                    (dir, &to_sync[dir])
                }
                SyncJob::Data(i, path) => (path, std::slice::from_ref(i)),
            };
            for &i in failed {
                if answers[i].is_ok() {
                    answers[i] = Err(OnlineError::Publish {
                        path: path.to_owned(),
                        source: io::Error::new(source.kind(), source.to_string()),
                    });
                }
            }
        }
        self.remember_durable(new_study_dirs);
        answers
    }

    /// Whether `study_dir` is known to be durably linked into its fan-out folder: this process
    /// synced that folder after the study folder existed.
    fn dir_is_durable(&self, study_dir: &Path) -> bool {
        self.durable_dirs
            .lock()
            .expect("durable folders lock")
            .contains(study_dir)
    }

    fn remember_durable(&self, dirs: Vec<PathBuf>) {
        if dirs.is_empty() {
            return;
        }
        let mut known = self.durable_dirs.lock().expect("durable folders lock");
        if known.len() + dirs.len() > DURABLE_DIRS_LIMIT {
            known.clear();
        }
        known.extend(dirs);
    }

    /// Deletes a file of the tier, durably. Blocking.
    pub fn remove(&self, location: &str) -> Result<(), OnlineError> {
        let path = self.path(location);
        std::fs::remove_file(&path).map_err(|source| OnlineError::Remove {
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|source| OnlineError::Remove {
                path: dir.to_owned(),
                source,
            })?;
        }
        Ok(())
    }
}

impl OnlineStore {
    /// Deletes many copies (already gone counts as deleted), then fsyncs each folder they were
    /// in once, so the deletions are durable together: a study's copies share one folder.
    pub fn remove_all(&self, locations: &[String]) -> Result<(), OnlineError> {
        let mut dirs = std::collections::BTreeSet::new();
        for location in locations {
            let path = self.path(location);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(OnlineError::Remove { path, source: e })
                }
                _ => {}
            }
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_owned());
            }
        }
        for dir in dirs {
            sync_dir(&dir).map_err(|source| OnlineError::Remove { path: dir, source })?;
        }
        Ok(())
    }
}

/// Deletes the temporaries in `tmp` (`<lease>-<n>.part`) not stamped with a lease of
/// `in_use` (a server, an import running beside this one, another node): the rest were left
/// by a crash. Returns how many.
fn remove_temporaries(tmp: &Path, in_use: &HashSet<i64>) -> Result<usize, OnlineError> {
    let prepare = |path: &Path, source| OnlineError::Prepare {
        path: path.to_owned(),
        source,
    };
    let mut removed = 0usize;
    for entry in std::fs::read_dir(tmp).map_err(|e| prepare(tmp, e))? {
        let path = entry.map_err(|e| prepare(tmp, e))?.path();
        let owner = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .and_then(|lease| lease.parse::<i64>().ok());
        if !owner.is_some_and(|lease| in_use.contains(&lease)) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                // Published or removed by its writer meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(prepare(&path, e)),
            }
        }
    }
    if removed > 0 {
        tracing::warn!(removed, folder = %tmp.display(), "removed partial files left by an interrupted run");
        sync_dir(tmp).map_err(|e| prepare(tmp, e))?;
    }
    Ok(removed)
}

/// One sync of [`OnlineStore::publish_all`].
#[derive(Clone)]
enum SyncJob {
    Folder(PathBuf),
    /// The data of the `usize`th file, at its published path.
    Data(usize, PathBuf),
}

impl SyncJob {
    fn run(&self) -> io::Result<()> {
        match self {
            SyncJob::Folder(dir) => sync_dir(dir),
            // fdatasync: the data and the size needed to read it back; no timestamps.
            SyncJob::Data(_, path) => std::fs::File::open(path)?.sync_data(),
        }
    }
}

/// Runs every job at once, the last one here, the others on the threads of the tokio
/// runtime's blocking pool when there is one (kept between batches: no thread is created per
/// sync), else on short-lived threads of their own. Each job is claimed once: after its own,
/// this thread runs every job no pool thread has started yet, so it only ever waits for jobs
/// that are running (a full pool, even one whose every thread is here, queues rather than
/// deadlocks). Results in job order.
fn run_at_once<T: Clone + Send + Sync + 'static>(
    jobs: &[T],
    run: fn(&T) -> io::Result<()>,
) -> Vec<io::Result<()>> {
    let Some((last, rest)) = jobs.split_last() else {
        return Vec::new();
    };
    let mut results: Vec<Option<io::Result<()>>> = (0..jobs.len()).map(|_| None).collect();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let claimed: Arc<Vec<AtomicBool>> =
            Arc::new(rest.iter().map(|_| AtomicBool::new(false)).collect());
        let (done, answers) = std::sync::mpsc::channel();
        for (i, job) in rest.iter().enumerate() {
            let (done, job, claimed) = (done.clone(), job.clone(), claimed.clone());
            // Not awaited: the answer comes through the channel. A job the runtime drops
            // unrun (shutting down) was never claimed, so it runs here below.
            drop(runtime.spawn_blocking(move || {
                if !claimed[i].swap(true, Ordering::AcqRel) {
                    let _ = done.send((i, run(&job)));
                }
            }));
        }
        drop(done);
        results[rest.len()] = Some(run(last));
        let mut running = 0;
        for (i, job) in rest.iter().enumerate() {
            if claimed[i].swap(true, Ordering::AcqRel) {
                running += 1;
            } else {
                results[i] = Some(run(job));
            }
        }
        // A pool thread that claimed a job answers unless it panicked; then every sender
        // is gone once the queued tasks have run, and its job runs again below.
        for (i, result) in answers.iter().take(running) {
            results[i] = Some(result);
        }
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = rest
                .iter()
                .map(|job| {
                    std::thread::Builder::new()
                        .name("sync".into())
                        .spawn_scoped(scope, move || run(job))
                })
                .collect();
            results[rest.len()] = Some(run(last));
            for (i, spawned) in running.into_iter().enumerate() {
                if let Ok(handle) = spawned {
                    results[i] = Some(
                        handle
                            .join()
                            .unwrap_or_else(|_| Err(io::Error::other("sync panicked"))),
                    );
                }
            }
        });
    }
    jobs.iter()
        .zip(results)
        .map(|(job, result)| result.unwrap_or_else(|| run(job)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_answers_each_file_and_syncs_run_at_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = OnlineStore::open(dir.path(), LeaseToken::fixed(1), &HashSet::new()).unwrap();
        let temps: Vec<PathBuf> = (0..3)
            .map(|i| {
                let t = dir.path().join(format!("t{i}"));
                std::fs::write(&t, [i as u8; 10]).unwrap();
                t
            })
            .collect();
        let locations = [
            store.new_location("1.2.3", "1.2.3.1"),
            store.new_location("1.2.3", "1.2.3.2"),
            store.new_location("1.2.4", "1.2.4.1"),
        ];
        // The third temporary is gone: only its answer fails.
        std::fs::remove_file(&temps[2]).unwrap();
        let files: Vec<(&Path, &str)> = temps
            .iter()
            .zip(&locations)
            .map(|(t, l)| (t.as_path(), l.as_str()))
            .collect();
        let answers = store.publish_all(&files);
        assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
        assert!(answers[2].is_err());
        assert_eq!(std::fs::read(store.path(&locations[1])).unwrap(), [1u8; 10]);

        fn odd_fails(i: &i32) -> io::Result<()> {
            if i % 2 == 1 {
                Err(io::Error::other(format!("job {i}")))
            } else {
                Ok(())
            }
        }
        let results = run_at_once(&[0, 1, 2, 3], odd_fails);
        let shown: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(shown, ["ok", "job 1", "ok", "job 3"]);
        // The same on a runtime's blocking pool.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let pooled = runtime.spawn_blocking(|| run_at_once(&[0, 1, 2, 3, 4], odd_fails));
        let results = runtime.block_on(pooled).unwrap();
        let failed: Vec<bool> = results.iter().map(|r| r.is_err()).collect();
        assert_eq!(failed, [false, true, false, true, false]);
    }

    #[test]
    fn syncs_finish_on_a_blocking_pool_whose_only_thread_waits_for_them() {
        // One blocking thread, taken by the batch itself: its other jobs queue behind it,
        // so they must run here rather than be waited for.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .max_blocking_threads(1)
            .enable_time()
            .build()
            .unwrap();
        fn slow_odd_fails(i: &i32) -> io::Result<()> {
            std::thread::sleep(std::time::Duration::from_millis(10));
            if i % 2 == 1 {
                Err(io::Error::other(format!("job {i}")))
            } else {
                Ok(())
            }
        }
        let jobs: Vec<i32> = (0..6).collect();
        let pooled = runtime.spawn_blocking(move || run_at_once(&jobs, slow_odd_fails));
        let outcome = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), pooled).await
        });
        // A deadlocked batch would hold the thread forever: do not wait for it.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        let results = outcome
            .expect("a full blocking pool deadlocked the batch")
            .unwrap();
        let failed: Vec<bool> = results.iter().map(|r| r.is_err()).collect();
        assert_eq!(failed, [false, true, false, true, false, true]);
    }

    #[test]
    fn locations_are_opaque_grouped_by_study_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = OnlineStore::open(dir.path(), LeaseToken::fixed(1), &HashSet::new()).unwrap();
        let a = store.new_location("1.2.3", "1.2.3.4");
        let b = store.new_location("1.2.3", "1.2.3.5");
        let (dir_a, _) = a.rsplit_once('/').unwrap();
        let (dir_b, _) = b.rsplit_once('/').unwrap();
        assert_eq!(dir_a, dir_b);
        assert!(!a.contains("1.2.3"));
        assert_ne!(a, store.new_location("1.2.3", "1.2.3.4"));
    }

    #[test]
    fn open_removes_stale_temporaries_and_publish_moves_atomically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/old.part"), b"half").unwrap();
        std::fs::write(dir.path().join("tmp/7-0.part"), b"a dead process's").unwrap();
        std::fs::write(dir.path().join("tmp/8-0.part"), b"a live process's").unwrap();
        let store =
            OnlineStore::open(dir.path(), LeaseToken::fixed(9), &HashSet::from([8])).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("8-0.part")]);

        let (mut temp, file) = store.create_temp().unwrap();
        drop(file);
        std::fs::write(temp.path(), b"complete").unwrap();
        let location = store.new_location("1.2", "1.2.3");
        store.publish(temp.path(), &location).unwrap();
        assert!(!temp.path().exists());
        temp.published();
        drop(temp);
        assert_eq!(std::fs::read(store.path(&location)).unwrap(), b"complete");
        store.remove(&location).unwrap();
        assert!(!store.path(&location).exists());
    }
}
