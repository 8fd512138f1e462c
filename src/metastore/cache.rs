//! What a handle of the metadata store keeps in memory, and the counter
//! shared by every process of the root that tells it when to stop trusting
//! it (see [`ChangeCounter`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use super::{MetaStore, SnapshotRow};
use crate::error::{Error, Result};
use crate::info::Info;

/// Rows read while the change counter stood at `seq` (see [`ChangeCounter`]).
#[derive(Default)]
pub(super) struct Cache {
    seq: u64,
    rows: HashMap<String, Arc<Cached>>,
    all: Option<Arc<Vec<SnapshotRow>>>,
    /// Walk results, by filter list (the few a host repeats).
    walks: HashMap<Vec<String>, Arc<[Info]>>,
}

/// A snapshot as read from the database, with the mount generation read in
/// the same statement and its [`Info`] made once on demand.
pub(crate) struct Cached {
    pub row: SnapshotRow,
    pub generation: i64,
    info: OnceLock<Arc<Info>>,
}

impl Cached {
    /// The snapshot's info: the same `Arc` for as long as this entry is
    /// served, so callers may key what they derive from it on its identity.
    pub fn info(&self) -> Arc<Info> {
        self.info.get_or_init(|| Arc::new(self.row.info())).clone()
    }
}

/// Distinct walk filter lists kept at most.
const MAX_CACHED_WALKS: usize = 16;

/// Entries kept at most; past that the cache starts over.
const MAX_CACHED_ROWS: usize = 16 * 1024;

impl MetaStore {
    /// The cache protocol (see [`ChangeCounter`]): serve `lookup` while no
    /// process has written since the entry was cached; otherwise `load`, and
    /// `store` the result if no write began meanwhile.
    fn cached<T: Clone>(
        &self,
        lookup: impl FnOnce(&Cache) -> Option<T>,
        load: impl FnOnce() -> Result<T>,
        store: impl FnOnce(&mut Cache, T),
    ) -> Result<T> {
        let seq = self.changes.stable();
        if let Some(seq) = seq {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.seq == seq {
                if let Some(hit) = lookup(&cache) {
                    return Ok(hit);
                }
            }
        }
        let value = load()?;
        if let Some(seq) = seq {
            if self.changes.stable() == Some(seq) {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.reset_to(seq);
                store(&mut cache, value.clone());
            }
        }
        Ok(value)
    }

    /// A snapshot and the mount generation, from this handle's cache when no
    /// process has written since they were read.
    pub fn cached_get(&self, key: &str) -> Result<Arc<Cached>> {
        self.cached(
            |c| c.rows.get(key).cloned(),
            || {
                let (row, generation) = self.read_one(|tx| tx.get_with_generation(key))?;
                Ok(Arc::new(Cached {
                    row,
                    generation,
                    info: OnceLock::new(),
                }))
            },
            |c, v| {
                if c.rows.len() >= MAX_CACHED_ROWS {
                    c.rows.clear();
                }
                c.rows.insert(key.to_string(), v);
            },
        )
    }

    /// What `make` selects from every row for `filters` (a walk), cached by
    /// filter list.
    pub fn cached_walk(
        &self,
        filters: &[String],
        make: impl FnOnce(&[SnapshotRow]) -> Result<Arc<[Info]>>,
    ) -> Result<Arc<[Info]>> {
        self.cached(
            |c| c.walks.get(filters).cloned(),
            || make(&self.cached_all()?),
            |c, v| {
                if c.walks.len() >= MAX_CACHED_WALKS {
                    c.walks.clear();
                }
                c.walks.insert(filters.to_vec(), v);
            },
        )
    }

    /// Every snapshot by key.
    pub fn cached_all(&self) -> Result<Arc<Vec<SnapshotRow>>> {
        self.cached(
            |c| c.all.clone(),
            || Ok(Arc::new(self.read_one(|tx| tx.all())?)),
            |c, v| c.all = Some(v),
        )
    }
}
impl Cache {
    fn reset_to(&mut self, seq: u64) {
        if self.seq != seq {
            self.seq = seq;
            self.rows.clear();
            self.all = None;
            self.walks.clear();
        }
    }
}

/// A counter in a small file every process sharing the root maps, moved by
/// every write transaction, so a reader can tell with one memory load
/// whether the database may have changed since it cached a row.
///
/// A writer makes it odd before committing ("data about to change: do not
/// cache") and even again after. A reader caches what it read only if the
/// counter was the same even value before and after the read, and serves
/// from the cache only while it still is. Writers are serialized by SQLite,
/// but a writer's "after" can come when the next writer is already inside its
/// transaction; `fetch_max` keeps the counter odd then. A writer that dies
/// between the two steps leaves it odd: caching stays off (reads go to the
/// database, correct and slower) until the next write completes.
pub(super) struct ChangeCounter {
    map: crate::sys::mm::SharedCounter,
}

impl ChangeCounter {
    pub(super) fn open(path: &Path) -> Result<ChangeCounter> {
        let f = crate::layout::open_shared_file(path)?;
        let len = 4096;
        if f.metadata().map_err(|e| Error::io("stat", path, e))?.len() < len {
            // Extending never loses a value another process wrote: set_len
            // only adds zeros past the end.
            f.set_len(len).map_err(|e| Error::io("size", path, e))?;
        }
        let map = crate::sys::mm::SharedCounter::map(&f).map_err(|e| Error::io("map", path, e))?;
        Ok(ChangeCounter { map })
    }

    fn counter(&self) -> &AtomicU64 {
        self.map.get()
    }

    /// The counter when no write is under way (even), else None.
    pub(super) fn stable(&self) -> Option<u64> {
        let v = self.counter().load(AtomicOrdering::SeqCst);
        (v % 2 == 0).then_some(v)
    }

    pub(super) fn begin_write(&self) -> u64 {
        let c = self.counter();
        let mut v = c.load(AtomicOrdering::SeqCst);
        loop {
            let next = if v % 2 == 0 { v + 1 } else { v + 2 };
            match c.compare_exchange(v, next, AtomicOrdering::SeqCst, AtomicOrdering::SeqCst) {
                Ok(_) => return next,
                Err(now) => v = now,
            }
        }
    }

    pub(super) fn end_write(&self, began: u64) {
        self.counter().fetch_max(began + 1, AtomicOrdering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{Kind, Labels, Timestamp};

    #[test]
    fn change_counter_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let a = ChangeCounter::open(&dir.path().join("c")).unwrap();
        let b = ChangeCounter::open(&dir.path().join("c")).unwrap(); // another process
        assert_eq!(a.stable(), Some(0));
        let m = a.begin_write();
        assert_eq!(b.stable(), None, "no caching while a write is under way");
        // The next writer begins before the first one's end: still odd after it.
        let m2 = b.begin_write();
        a.end_write(m);
        assert_eq!(a.stable(), None);
        b.end_write(m2);
        let after = a.stable().unwrap();
        assert!(after > 0);
        // A writer that died between begin and end leaves caching off ...
        let _dead = a.begin_write();
        assert_eq!(b.stable(), None);
        // ... until the next write completes.
        let m3 = b.begin_write();
        b.end_write(m3);
        assert!(a.stable().unwrap() > after);
    }

    #[test]
    fn cache_serves_until_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let changes = dir.path().join("changes");
        let a = MetaStore::open(&db, &changes, false).unwrap();
        let b = MetaStore::open(&db, &changes, false).unwrap();
        a.write(|tx| tx.insert(Kind::Active, "k", None, &Labels::new(), Timestamp::now()))
            .unwrap();
        let row = a.cached_get("k").unwrap().row.clone();
        // A change made behind SQLite's back is invisible while cached ...
        a.read_one(|tx| {
            tx.tx
                .execute("UPDATE snapshots SET parent = 'sneaky' WHERE key = 'k'", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(a.cached_get("k").unwrap().row.parent, row.parent);
        // ... and any write through a store (here: another handle's) ends it.
        b.write(|tx| tx.bump_mount_generation()).unwrap();
        assert_eq!(a.cached_get("k").unwrap().row.parent, "sneaky");
    }
}
