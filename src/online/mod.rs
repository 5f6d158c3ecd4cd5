//! The online tier: plain Part-10 files, one folder per study, written atomically.
//!
//! Layout: `ROOT/<aa>/<study key>/<instance key>.dcm`, where the keys are hex digests of the
//! UIDs (no patient data in paths) and `<aa>` fans studies out over 256 folders. New files
//! are written under `ROOT/tmp/`, fsynced, then renamed into place and the folder fsynced;
//! `tmp/` is emptied at start, so a crash never leaves a visible partial file.

mod part10;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::durable::{create_dir_durable, sync_dir};

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
}

impl OnlineError {
    /// The underlying I/O error, e.g. to tell a full disk from other failures.
    pub fn io(&self) -> &io::Error {
        match self {
            OnlineError::Prepare { source, .. }
            | OnlineError::CreateTemp { source, .. }
            | OnlineError::Publish { source, .. }
            | OnlineError::Remove { source, .. } => source,
        }
    }
}

/// The online tier rooted at one folder.
#[derive(Debug)]
pub struct OnlineStore {
    root: PathBuf,
    tmp: PathBuf,
    next_temp: AtomicU64,
}

impl OnlineStore {
    /// Opens (creating if needed) the tier and deletes temporaries left by a crash.
    pub fn open(root: &Path) -> Result<OnlineStore, OnlineError> {
        let prepare = |path: &Path, source| OnlineError::Prepare {
            path: path.to_owned(),
            source,
        };
        let tmp = root.join("tmp");
        create_dir_durable(&tmp).map_err(|e| prepare(&tmp, e))?;
        // Temporaries are named `<pid>-<n>.part`. Those of a live process (a server, an import
        // running beside this one) are in use; the rest were left by a crash.
        let mut removed = 0usize;
        for entry in std::fs::read_dir(&tmp).map_err(|e| prepare(&tmp, e))? {
            let path = entry.map_err(|e| prepare(&tmp, e))?.path();
            let owner = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let in_use = owner.is_some_and(|pid| {
                pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
            });
            if !in_use {
                std::fs::remove_file(&path).map_err(|e| prepare(&path, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(removed, folder = %tmp.display(), "removed partial files left by an interrupted run");
        }
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
        })
    }

    /// Root folder of the tier.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a new, empty temporary file for an incoming instance.
    pub fn create_temp(&self) -> Result<(PathBuf, std::fs::File), OnlineError> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", std::process::id()));
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
        let study = key(study_instance_uid);
        let instance = key(sop_instance_uid);
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{}/{study}/{instance}.{nanos:x}{:x}{n:x}.dcm",
            &study[..2],
            std::process::id()
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

/// A 128-bit hex digest of a UID: opaque, fixed-length, filesystem-safe.
fn key(uid: &str) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_opaque_grouped_by_study_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = OnlineStore::open(dir.path()).unwrap();
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
        let store = OnlineStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

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
