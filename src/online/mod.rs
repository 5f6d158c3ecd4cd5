//! The online tier: plain Part-10 files, one folder per study, written atomically.
//!
//! Layout: `ROOT/<aa>/<study key>/<instance key>.dcm`, where the keys are hex digests of the
//! UIDs (no patient data in paths) and `<aa>` fans studies out over 256 folders. New files
//! are written under `ROOT/tmp/`, fsynced, then renamed into place and the folder fsynced;
//! temporaries carry the lease of the process writing them, and those of processes whose
//! lease has gone (on any node sharing the folder) are deleted at start, so a crash never
//! leaves a visible partial file.

mod part10;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::uid::digest_key;

use crate::durable::{create_dir_durable, sync_dir};
use crate::locator::leases::LeaseToken;
use crate::locator::{Locator, LocatorError};

pub use part10::{part10_header, Part10Writer, WrittenFile, HEAD_LEN};

/// Why an online-tier operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("cannot prepare online folder {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    #[error("cannot create temporary file in {path}: {source}")]
    CreateTemp { path: PathBuf, source: io::Error },
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
}

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

    /// Creates a new, empty temporary file for an incoming instance.
    pub fn create_temp(&self) -> Result<(PathBuf, std::fs::File), OnlineError> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", self.lease.get()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map(|file| (path, file))
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

    /// Moves a fully written and fsynced temporary file to `location`, durably: the new
    /// name survives a crash once this returns. Blocking.
    pub fn publish(&self, temp: &Path, location: &str) -> Result<(), OnlineError> {
        let target = self.path(location);
        let publish_err = |source| OnlineError::Publish {
            path: target.clone(),
            source,
        };
        let study_dir = target.parent().expect("locations have a folder");
        let fan_dir = study_dir.parent().expect("locations have two folders");
        create_dir_durable(study_dir).map_err(publish_err)?;
        std::fs::rename(temp, &target).map_err(publish_err)?;
        // Both, always: the study folder may have been created by another association
        // that has not made it durable yet.
        sync_dir(study_dir).map_err(publish_err)?;
        sync_dir(fan_dir).map_err(publish_err)
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

#[cfg(test)]
mod tests {
    use super::*;

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

        let (temp, file) = store.create_temp().unwrap();
        drop(file);
        std::fs::write(&temp, b"complete").unwrap();
        let location = store.new_location("1.2", "1.2.3");
        store.publish(&temp, &location).unwrap();
        assert!(!temp.exists());
        assert_eq!(std::fs::read(store.path(&location)).unwrap(), b"complete");
        store.remove(&location).unwrap();
        assert!(!store.path(&location).exists());
    }
}
