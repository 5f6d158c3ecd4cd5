//! The rendition cache: rendered images and thumbnails (WADO-RS `/rendered`,
//! `/thumbnail`) kept as files in a local folder, up to `[renditions] cache_mb`, so that a
//! view asked for again is not read and drawn again. Which renditions stay is the
//! [`policy`]'s decision: requests times cost per byte, not recency.
//!
//! A rendition's key names its instance's stored version (CRC-32C and length of the copy
//! read): a changed instance (stored again, converted) never matches its old renditions,
//! whose entries go as soon as a new one is kept. Every request finds the instance in the
//! locator before it looks here, so a deleted instance's renditions are never served; a
//! sweep drops them (and those of changed instances) every minute. The folder is emptied
//! when the server starts: the cache is rebuilt by use, never trusted across runs.
//!
//! Counts go to the process's metrics at once and to the locator's counters every few
//! seconds (`strata status`: hits, misses, bytes held per node, CPU seconds saved).

pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::locator::jobs::{
    RENDITION_BYTES_OF, RENDITION_CPU_SAVED_US, RENDITION_HITS, RENDITION_MISSES,
};
use crate::locator::Locator;
use crate::metrics;
use crate::model::StoredObject;
pub use policy::Policy;
use policy::{Index, Offered};

/// How often a server adds its counts to the locator.
const COUNTS_TO_LOCATOR_EVERY: Duration = Duration::from_secs(5);
/// How often the sweep looks for renditions of deleted or changed instances.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Instances one sweep looks up (the next sweep goes on from there).
const SWEEP_AT_MOST: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RenditionError {
    #[error("rendition cache folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One rendition: which instance, which stored copy of it, and which view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub sop_instance_uid: String,
    /// The stored copy's CRC-32C and length, as [`version`] writes them.
    pub version: String,
    /// The view: frame, size, window, media, quality, as the renderer's caller writes them.
    pub view: String,
}

impl Key {
    pub fn new(sop_instance_uid: &str, object: &StoredObject, view: String) -> Key {
        Key {
            sop_instance_uid: sop_instance_uid.to_string(),
            version: version(object),
            view,
        }
    }

    fn text(&self) -> String {
        format!("{}|{}|{}", self.sop_instance_uid, self.version, self.view)
    }
}

/// The version of an instance's stored copy, as keys hold it.
pub fn version(object: &StoredObject) -> String {
    format!("{:08x}-{}", object.crc32c, object.length)
}

/// What computing a rendition cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// From the request's start to the image encoded: reading, decoding, drawing.
    pub elapsed: Duration,
    /// CPU time of the decoding and drawing (what a hit saves the server).
    pub cpu: Duration,
}

/// The CPU time this thread has used: measure around blocking work.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The cache's counts since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
    pub entries: usize,
    pub cpu_saved: Duration,
}

/// The cache; clones share it.
#[derive(Debug, Clone)]
pub struct Renditions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    cpu_saved_us: AtomicU64,
    /// Counts not yet added to the locator: hits, misses, CPU microseconds saved.
    unsent: [AtomicU64; 3],
    /// Where the next sweep starts (an SOP Instance UID; empty: the first).
    swept_to: Mutex<String>,
    /// The bytes the metrics gauge shows now.
    gauged: AtomicU64,
}

impl Renditions {
    /// A cache of at most `budget` bytes in `dir` (created, and emptied of what a previous
    /// run left).
    pub fn open(dir: &Path, budget: u64, policy: Policy) -> Result<Renditions, RenditionError> {
        let folder = |source| RenditionError::Folder {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(folder)?;
        for entry in std::fs::read_dir(dir).map_err(folder)? {
            let path = entry.map_err(folder)?.path();
            // Only what this cache writes: a number, or a number and ".tmp".
            let ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                let n = n.strip_suffix(".tmp").unwrap_or(n);
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            });
            if ours {
                std::fs::remove_file(&path).map_err(folder)?;
            }
        }
        metrics::RENDITION_REQUESTS.touch(&["hit"]);
        metrics::RENDITION_REQUESTS.touch(&["miss"]);
        metrics::RENDITION_BYTES.touch(&[]);
        metrics::RENDITION_CPU_SAVED.touch(&[]);
        Ok(Renditions {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                index: Mutex::new(Index::new(policy, budget)),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                cpu_saved_us: AtomicU64::new(0),
                unsent: [const { AtomicU64::new(0) }; 3],
                swept_to: Mutex::new(String::new()),
                gauged: AtomicU64::new(0),
            }),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: u64) -> PathBuf {
        self.inner.dir.join(id.to_string())
    }

    /// The rendition, when cached; a miss is counted and remembered.
    pub async fn get(&self, key: &Key) -> Option<Bytes> {
        let text = key.text();
        let hit = self.index().request(&text);
        let image = match hit {
            Some(hit) => match tokio::fs::read(self.path(hit.id)).await {
                Ok(image) => Some((image, hit.cpu_us)),
                Err(e) => {
                    debug!(id = hit.id, error = %e, "cached rendition unreadable; dropped");
                    if self.index().remove_id(&text, hit.id) {
                        let _ = tokio::fs::remove_file(self.path(hit.id)).await;
                    }
                    self.gauge();
                    None
                }
            },
            None => None,
        };
        let Some((image, cpu_us)) = image else {
            self.count(1, false, 0);
            return None;
        };
        self.count(0, true, cpu_us);
        Some(Bytes::from(image))
    }

    fn count(&self, misses: u64, hit: bool, cpu_us: u64) {
        let inner = &self.inner;
        if hit {
            inner.hits.fetch_add(1, Ordering::Relaxed);
            inner.unsent[0].fetch_add(1, Ordering::Relaxed);
            inner.cpu_saved_us.fetch_add(cpu_us, Ordering::Relaxed);
            inner.unsent[2].fetch_add(cpu_us, Ordering::Relaxed);
            metrics::RENDITION_REQUESTS.inc(&["hit"]);
            metrics::RENDITION_CPU_SAVED.add(&[], cpu_us as f64 / 1e6);
        }
        if misses > 0 {
            inner.misses.fetch_add(misses, Ordering::Relaxed);
            inner.unsent[1].fetch_add(misses, Ordering::Relaxed);
            metrics::RENDITION_REQUESTS.add(&["miss"], misses as f64);
        }
    }

    /// Offers a computed rendition: kept when the policy admits it. Never fails the request:
    /// a file that cannot be written is left out.
    pub async fn keep(&self, key: &Key, image: Bytes, cost: Cost) {
        let text = key.text();
        let Offered { id, evicted } = self.index().offer(
            &text,
            &key.sop_instance_uid,
            &key.version,
            image.len() as u64,
            cost.elapsed.as_micros() as u64,
            cost.cpu.as_micros() as u64,
        );
        self.delete(evicted).await;
        if let Some(id) = id {
            let (path, tmp) = (self.path(id), self.inner.dir.join(format!("{id}.tmp")));
            // A cache: no sync. A crash leaves files the next start deletes.
            let written = match tokio::fs::write(&tmp, &image).await {
                Ok(()) => tokio::fs::rename(&tmp, &path).await,
                Err(e) => Err(e),
            };
            let kept = match written {
                Ok(()) => self.index().written(id),
                Err(e) => {
                    warn!(path = %tmp.display(), error = %e, "rendition not cached");
                    let _ = tokio::fs::remove_file(&tmp).await;
                    self.index().remove_id(&text, id);
                    false
                }
            };
            if !kept {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        self.gauge();
    }

    /// Offers a rendition in a task of its own, so a request that ends (its client gone)
    /// never leaves an entry admitted but not written.
    pub fn keep_detached(&self, key: &Key, image: Bytes, cost: Cost) {
        let (cache, key) = (self.clone(), key.clone());
        tokio::spawn(async move { cache.keep(&key, image, cost).await });
    }

    /// Sets the bytes gauge to what the index holds now.
    fn gauge(&self) {
        let index = self.index();
        let now = index.used();
        let before = self.inner.gauged.swap(now, Ordering::Relaxed);
        metrics::RENDITION_BYTES.add(&[], now as f64 - before as f64);
    }

    async fn delete(&self, ids: Vec<u64>) {
        for id in ids {
            if let Err(e) = tokio::fs::remove_file(self.path(id)).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(id, error = %e, "evicted rendition not deleted");
                }
            }
        }
    }

    /// Drops the renditions of up to `at_most` instances, on from the last sweep, that the
    /// locator no longer holds, or holds another copy of: how many entries went.
    pub async fn sweep(&self, locator: &Locator, at_most: usize) -> usize {
        let mut uids = self.index().instances();
        uids.sort();
        let from = self
            .inner
            .swept_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let start = uids.partition_point(|u| *u <= from);
        let batch: Vec<String> = uids[start..].iter().take(at_most).cloned().collect();
        let last = if batch.len() < at_most {
            String::new() // the end: the next sweep starts again
        } else {
            batch.last().cloned().unwrap_or_default()
        };
        *self
            .inner
            .swept_to
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = last;
        let mut dropped = 0;
        for uid in batch {
            let current = match locator.find_instance(&uid).await {
                Ok(found) => found.map(|o| version(&o)),
                Err(e) => {
                    debug!(sop_instance_uid = %uid, error = %e, "sweep: lookup failed");
                    continue;
                }
            };
            let gone = self.index().forget(&uid, current.as_deref());
            dropped += gone.len();
            self.delete(gone).await;
            self.gauge();
        }
        dropped
    }

    /// This process's counts since it started.
    pub fn counts(&self) -> Counts {
        let index = self.index();
        Counts {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            bytes: index.used(),
            entries: index.len(),
            cpu_saved: Duration::from_micros(self.inner.cpu_saved_us.load(Ordering::Relaxed)),
        }
    }

    /// Adds the counts since the last call to the locator's counters (every process's sums)
    /// and sets this node's bytes held. What cannot be added now stays for the next call.
    pub async fn count_in_locator(&self, locator: &Locator, bytes: u64) {
        let names = [RENDITION_HITS, RENDITION_MISSES, RENDITION_CPU_SAVED_US];
        for (at, name) in names.iter().enumerate() {
            let n = self.inner.unsent[at].swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            if let Err(e) = locator.add_to_counter(name, n).await {
                self.inner.unsent[at].fetch_add(n, Ordering::Relaxed);
                warn!(counter = name, error = %e, "cannot add rendition counts to the locator");
            }
        }
        let held = format!("{RENDITION_BYTES_OF}{}", locator.node());
        if let Err(e) = locator.set_counter(&held, bytes).await {
            warn!(counter = %held, error = %e, "cannot record the rendition cache's size");
        }
    }

    /// A server's upkeep: counts to the locator every few seconds, a sweep every minute;
    /// when `shutdown` turns true, the last counts and this node's size as 0 (the next
    /// start empties the folder).
    pub async fn run(self, locator: Arc<Locator>, mut shutdown: watch::Receiver<bool>) {
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(COUNTS_TO_LOCATOR_EVERY) => false,
                _ = shutdown.wait_for(|stop| *stop) => true,
            };
            if stop {
                self.count_in_locator(&locator, 0).await;
                return;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = tokio::time::Instant::now();
                let dropped = self.sweep(&locator, SWEEP_AT_MOST).await;
                if dropped > 0 {
                    debug!(
                        dropped,
                        "renditions of deleted or changed instances dropped"
                    );
                }
            }
            let bytes = self.index().used();
            self.count_in_locator(&locator, bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tier;

    fn object(crc32c: u32) -> StoredObject {
        StoredObject {
            tier: Tier::Online,
            location: "x".into(),
            offset: 0,
            length: 1000,
            crc32c,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        }
    }

    fn cost() -> Cost {
        Cost {
            elapsed: Duration::from_millis(5),
            cpu: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn a_kept_rendition_is_served_from_its_file_until_its_instance_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("7"), b"left by a previous run").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
        let cache = Renditions::open(dir.path(), 1 << 20, Policy::Value).unwrap();
        assert!(!dir.path().join("7").exists(), "emptied at start");
        assert!(dir.path().join("notes.txt").exists(), "only its own files");
        let key = Key::new("1.2.3", &object(1), "thumbnail".into());
        assert_eq!(cache.get(&key).await, None);
        cache
            .keep(&key, Bytes::from_static(b"jpeg bytes"), cost())
            .await;
        assert_eq!(cache.get(&key).await.as_deref(), Some(&b"jpeg bytes"[..]));
        let counts = cache.counts();
        assert_eq!((counts.hits, counts.misses, counts.bytes), (1, 1, 10));
        assert_eq!(counts.cpu_saved, Duration::from_millis(4));
        // Stored again: the old rendition is never served, and goes when the new one comes.
        let changed = Key::new("1.2.3", &object(2), "thumbnail".into());
        assert_eq!(cache.get(&changed).await, None);
        cache
            .keep(&changed, Bytes::from_static(b"new jpeg"), cost())
            .await;
        assert_eq!(cache.counts().entries, 1);
        assert_eq!(cache.counts().bytes, 8);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "the new rendition and notes.txt");
        // A file gone under it: a miss, and the entry goes.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "notes.txt" {
                std::fs::remove_file(path).unwrap();
            }
        }
        assert_eq!(cache.get(&changed).await, None);
        assert_eq!(cache.counts().entries, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_sweep_drops_renditions_of_instances_the_locator_no_longer_holds() {
        let (_locator_dir, locator) = crate::locator::tests::temp_locator().await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Renditions::open(dir.path(), 1 << 20, Policy::Value).unwrap();
        for uid in ["1.1", "1.2", "1.3"] {
            let key = Key::new(uid, &object(1), "thumbnail".into());
            cache.get(&key).await;
            cache.keep(&key, Bytes::from_static(b"img"), cost()).await;
        }
        assert_eq!(cache.counts().entries, 3);
        // Two per sweep: the first sweep drops two, the second the third, then none is left.
        assert_eq!(cache.sweep(&locator, 2).await, 2);
        assert_eq!(cache.sweep(&locator, 2).await, 1);
        assert_eq!(
            cache.counts(),
            Counts {
                hits: 0,
                misses: 3,
                bytes: 0,
                entries: 0,
                cpu_saved: Duration::ZERO,
            }
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        cache.count_in_locator(&locator, 0).await;
        assert_eq!(locator.counter(RENDITION_MISSES).await.unwrap(), 3);
    }
}
