//! Which renditions the cache keeps: an I/O-free index of entries with their sizes, costs
//! and requests, deciding admission and eviction. [`Policy::Value`] is
//! Greedy-Dual-Size-Frequency (Cherkasova, 1998): an entry's value is the requests for it
//! times what it costs to compute, per byte it occupies, plus the cache's clock, which rises
//! to the value of each entry evicted, so that entries asked for long ago age out even when
//! they were popular once. A rendition not cached is admitted only when its value is above
//! that of every entry it would push out; requests for renditions not (or no longer) cached
//! are remembered for a while, so a second request admits what a first one could not.
//! [`Policy::Lru`] (least recently used, admitting everything) is there to compare with.

use std::collections::{BTreeSet, HashMap, HashSet};

/// How entries are valued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Requests x cost / bytes, aged (Greedy-Dual-Size-Frequency).
    Value,
    /// Least recently used; every rendition admitted.
    Lru,
}

/// One rendition, as the index knows it.
#[derive(Debug, Clone)]
struct Entry {
    /// Names its file.
    id: u64,
    uid: String,
    bytes: u64,
    /// Microseconds it took to compute (the value's cost).
    cost_us: u64,
    /// CPU microseconds it took to compute (what a hit saves).
    cpu_us: u64,
    requests: u64,
    priority: f64,
    /// False until its file is written: a lookup then misses, without dropping it.
    ready: bool,
}

/// A hit: the file to read and the CPU time the hit saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub id: u64,
    pub cpu_us: u64,
}

/// What an offer did: the file to write when the rendition is admitted, and the files of
/// the entries it pushed out (or that were another version of its instance) to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub id: Option<u64>,
    pub evicted: Vec<u64>,
}

/// The index: every entry, ordered by priority.
#[derive(Debug)]
pub struct Index {
    policy: Policy,
    budget: u64,
    used: u64,
    entries: HashMap<String, Entry>,
    /// (priority as ordered bits, id) -> key.
    order: BTreeSet<(u64, u64)>,
    keys: HashMap<u64, String>,
    /// SOP Instance UID -> keys of its entries.
    by_instance: HashMap<String, HashSet<String>>,
    /// Requests for keys not cached, remembered for admission.
    ghosts: HashMap<String, u64>,
    clock: f64,
    tick: u64,
    next_id: u64,
}

/// Requests remembered for renditions not cached: at least this many keys, or four per
/// entry; past that, every count is halved and those at 0 forgotten.
const GHOSTS_AT_LEAST: usize = 4096;

/// A rendition larger than this share of the budget is not kept: one would push out many.
pub const LARGEST_SHARE: u64 = 8;

impl Index {
    pub fn new(policy: Policy, budget: u64) -> Index {
        Index {
            policy,
            budget,
            used: 0,
            entries: HashMap::new(),
            order: BTreeSet::new(),
            keys: HashMap::new(),
            by_instance: HashMap::new(),
            ghosts: HashMap::new(),
            clock: 0.0,
            tick: 0,
            next_id: 1,
        }
    }

    /// Bytes held by entries.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every SOP Instance UID with an entry.
    pub fn instances(&self) -> Vec<String> {
        self.by_instance.keys().cloned().collect()
    }

    /// The keys cached for instance `uid`.
    pub fn keys_of(&self, uid: &str) -> Vec<String> {
        self.by_instance
            .get(uid)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn priority(&mut self, requests: u64, cost_us: u64, bytes: u64) -> f64 {
        match self.policy {
            Policy::Value => {
                self.clock + requests as f64 * cost_us.max(1) as f64 / bytes.max(1) as f64
            }
            Policy::Lru => {
                self.tick += 1;
                self.tick as f64
            }
        }
    }

    /// A request for `key`: a hit when it is cached and written (its request counted), else
    /// a miss remembered for admission.
    pub fn request(&mut self, key: &str) -> Option<Hit> {
        let Some(entry) = self.entries.get(key) else {
            *self.ghosts.entry(key.to_string()).or_insert(0) += 1;
            self.bound_ghosts();
            return None;
        };
        if !entry.ready {
            return None;
        }
        let (id, old, requests, cost_us, bytes, cpu_us) = (
            entry.id,
            entry.priority,
            entry.requests + 1,
            entry.cost_us,
            entry.bytes,
            entry.cpu_us,
        );
        let priority = self.priority(requests, cost_us, bytes);
        self.order.remove(&(old.to_bits(), id));
        self.order.insert((priority.to_bits(), id));
        let entry = self.entries.get_mut(key).expect("entry looked up above");
        entry.requests = requests;
        entry.priority = priority;
        Some(Hit { id, cpu_us })
    }

    /// Offers a computed rendition of instance `uid`: admitted (not yet ready: see
    /// [`Index::written`]) when the policy values it above what it would push out. Entries
    /// of other versions of the instance go first: they can never be asked for again.
    pub fn offer(
        &mut self,
        key: &str,
        uid: &str,
        version: &str,
        bytes: u64,
        cost_us: u64,
        cpu_us: u64,
    ) -> Offered {
        let mut offered = Offered {
            id: None,
            evicted: Vec::new(),
        };
        if self.entries.contains_key(key) || bytes > self.budget / LARGEST_SHARE || bytes == 0 {
            return offered;
        }
        offered.evicted = self.forget(uid, Some(version));
        let requests = self.ghosts.get(key).copied().unwrap_or(1).max(1);
        let priority = match self.policy {
            Policy::Value => self.clock + requests as f64 * cost_us.max(1) as f64 / bytes as f64,
            Policy::Lru => (self.tick + 1) as f64,
        };
        // The entries it would push out, lowest first; none may be worth more.
        let mut victims = Vec::new();
        let mut freed = 0;
        for &(bits, id) in &self.order {
            if self.used - freed + bytes <= self.budget {
                break;
            }
            if self.policy == Policy::Value && f64::from_bits(bits) > priority {
                return offered;
            }
            let victim = &self.keys[&id];
            freed += self.entries[victim].bytes;
            victims.push((victim.clone(), f64::from_bits(bits)));
        }
        for (victim, victim_priority) in victims {
            if self.policy == Policy::Value {
                self.clock = self.clock.max(victim_priority);
            }
            offered.evicted.extend(self.remove(&victim));
        }
        self.ghosts.remove(key);
        let priority = self.priority(requests, cost_us, bytes);
        let id = self.next_id;
        self.next_id += 1;
        self.order.insert((priority.to_bits(), id));
        self.keys.insert(id, key.to_string());
        self.by_instance
            .entry(uid.to_string())
            .or_default()
            .insert(key.to_string());
        self.entries.insert(
            key.to_string(),
            Entry {
                id,
                uid: uid.to_string(),
                bytes,
                cost_us,
                cpu_us,
                requests,
                priority,
                ready: false,
            },
        );
        self.used += bytes;
        offered.id = Some(id);
        offered
    }

    /// The file of entry `id` is written: it may be served. False when the entry went in the
    /// meantime (its file is then to be deleted).
    pub fn written(&mut self, id: u64) -> bool {
        let Some(key) = self.keys.get(&id) else {
            return false;
        };
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.ready = true;
                true
            }
            None => false,
        }
    }

    /// Drops `key` (its file unreadable, or its instance gone): the id of its file.
    pub fn remove(&mut self, key: &str) -> Option<u64> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&(entry.priority.to_bits(), entry.id));
        self.keys.remove(&entry.id);
        if let Some(keys) = self.by_instance.get_mut(&entry.uid) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_instance.remove(&entry.uid);
            }
        }
        self.used -= entry.bytes;
        Some(entry.id)
    }

    /// Drops `key` if its entry is still the one with file `id` (not a newer one since).
    pub fn remove_id(&mut self, key: &str, id: u64) -> bool {
        if self.entries.get(key).is_some_and(|e| e.id == id) {
            self.remove(key);
            true
        } else {
            false
        }
    }

    /// Drops every entry of instance `uid` whose version is not `keep` (all of them when
    /// `None`): the ids of their files.
    pub fn forget(&mut self, uid: &str, keep: Option<&str>) -> Vec<u64> {
        let mut gone = Vec::new();
        for key in self.keys_of(uid) {
            if keep.is_none() || key.split('|').nth(1) != keep {
                gone.extend(self.remove(&key));
            }
        }
        gone
    }

    fn bound_ghosts(&mut self) {
        if self.ghosts.len() > GHOSTS_AT_LEAST.max(4 * self.entries.len()) {
            self.ghosts.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, version: &str, view: &str) -> String {
        format!("{uid}|{version}|{view}")
    }

    /// Offers and marks written: admitted or not.
    fn put(index: &mut Index, uid: &str, view: &str, bytes: u64, cost_us: u64) -> bool {
        let k = key(uid, "v1", view);
        match index.offer(&k, uid, "v1", bytes, cost_us, cost_us).id {
            Some(id) => index.written(id),
            None => false,
        }
    }

    #[test]
    fn the_budget_is_never_exceeded_and_large_renditions_are_not_kept() {
        for policy in [Policy::Value, Policy::Lru] {
            let mut index = Index::new(policy, 1000);
            assert!(
                !put(&mut index, "big", "t", 126, 10),
                "over 1/8 of the budget"
            );
            for n in 0..100 {
                let uid = format!("u{n}");
                index.request(&key(&uid, "v1", "t"));
                put(&mut index, &uid, "t", 50 + n % 7 * 10, 1000);
                assert!(index.used() <= 1000, "{policy:?}: {}", index.used());
            }
            assert!(index.len() >= 8, "{policy:?}: {}", index.len());
        }
    }

    #[test]
    fn value_keeps_costly_popular_renditions_that_lru_pushes_out() {
        // One rendition costly to compute and asked for often, then a scan of cheap ones
        // asked for once: LRU loses it, the value policy keeps it.
        for (policy, kept) in [(Policy::Value, true), (Policy::Lru, false)] {
            let mut index = Index::new(policy, 800);
            let hot = key("hot", "v1", "t");
            assert_eq!(index.request(&hot), None);
            assert!(put(&mut index, "hot", "t", 100, 50_000));
            for _ in 0..5 {
                assert!(index.request(&hot).is_some());
            }
            for n in 0..40 {
                let uid = format!("cold{n}");
                index.request(&key(&uid, "v1", "t"));
                put(&mut index, &uid, "t", 100, 1_000);
            }
            assert_eq!(index.request(&hot).is_some(), kept, "{policy:?}");
        }
    }

    #[test]
    fn a_second_request_admits_what_a_first_could_not() {
        let mut index = Index::new(Policy::Value, 800);
        for n in 0..8 {
            let uid = format!("u{n}");
            for _ in 0..3 {
                index.request(&key(&uid, "v1", "t"));
            }
            assert!(put(&mut index, &uid, "t", 100, 1000));
            for _ in 0..3 {
                index.request(&key(&uid, "v1", "t"));
            }
        }
        assert_eq!(index.used(), 800, "full");
        // A newcomer asked for twice is worth less than any entry.
        let new = key("new", "v1", "t");
        index.request(&new);
        index.request(&new);
        assert!(
            !put(&mut index, "new", "t", 100, 1000),
            "first offer refused"
        );
        for _ in 0..20 {
            index.request(&new);
        }
        assert!(
            put(&mut index, "new", "t", 100, 1000),
            "admitted once asked for more"
        );
        assert!(index.request(&new).is_some());
        assert_eq!((index.used(), index.len()), (800, 8), "one pushed out");
    }

    #[test]
    fn another_version_of_an_instance_replaces_the_old_ones() {
        let mut index = Index::new(Policy::Value, 10_000);
        let old = key("u", "v1", "t");
        index.request(&old);
        let first = index.offer(&old, "u", "v1", 100, 10, 10).id.unwrap();
        assert!(index.written(first));
        let other_view = key("u", "v1", "r");
        let second = index.offer(&other_view, "u", "v1", 100, 10, 10);
        assert!(
            second.evicted.is_empty(),
            "same version, another view: kept"
        );
        let new = key("u", "v2", "t");
        let third = index.offer(&new, "u", "v2", 100, 10, 10);
        let mut evicted = third.evicted.clone();
        evicted.sort();
        assert_eq!(evicted, [first, second.id.unwrap()]);
        let third = third.id.unwrap();
        assert_eq!(index.used(), 100);
        assert!(index.request(&old).is_none());
        // Not ready until written: a miss that does not drop it.
        assert!(index.request(&new).is_none());
        assert!(index.written(third));
        assert!(index.request(&new).is_some());
        assert_eq!(index.forget("u", Some("v2")), Vec::<u64>::new());
        assert_eq!(index.forget("u", None), [third]);
        assert!(index.is_empty() && index.used() == 0);
        assert!(index.instances().is_empty());
    }

    #[test]
    fn remembered_requests_stay_bounded() {
        let mut index = Index::new(Policy::Value, 1000);
        for n in 0..50_000 {
            index.request(&key(&format!("u{n}"), "v1", "t"));
        }
        assert!(
            index.ghosts.len() <= GHOSTS_AT_LEAST + 1,
            "{}",
            index.ghosts.len()
        );
    }
}
