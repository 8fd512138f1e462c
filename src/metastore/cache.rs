//! What a handle of the metadata store keeps in memory, and the counter
//! shared by every process of the root that tells it when to stop trusting
//! it (see [`ChangeCounter`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use super::{MetaStore, SnapshotRow};
use crate::error::{Error, Result};
use crate::info::Info;

/// What a handle knows of the database, brought up to date by reading only
/// what changed since (see `seq_schema` in `queries`): no size limit to
/// fall off, and a write by any process costs the next read one indexed
/// query for the rows it wrote, not a reload.
#[derive(Default)]
pub(super) struct Cache {
    /// The change counter when the cache was last found up to date; a read
    /// while it still holds that value needs no query at all.
    counter: Option<u64>,
    /// The database change the rows reflect; None before the first read.
    seq: Option<i64>,
    /// The mount generation as of `seq`.
    generation: i64,
    /// Snapshots by key: every one once `complete` (a walk loaded them),
    /// else those read so far.
    rows: BTreeMap<Arc<str>, Arc<Cached>>,
    complete: bool,
    /// Walk results by filter list (the few a host repeats), until a change.
    walks: HashMap<Vec<String>, Arc<[Arc<Cached>]>>,
    /// How many keys the shared ring had recorded when the cache was last
    /// up to date (see [`ChangeCounter`]).
    ring_pos: Option<u64>,
    /// Hashes of keys written since the rows were last read from the
    /// database, as the ring told: a kept row of such a key is read again.
    dirty: std::collections::HashSet<u64>,
}

/// A ring entry saying the mount generation changed.
pub(super) const GENERATION_CHANGED: u64 = 0;

/// The ring's hash of a key: FNV-1a, the same in every process and
/// version (never 0, which is [`GENERATION_CHANGED`]).
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Dirty keys past which a handle reads what changed from the database.
const MAX_DIRTY: usize = 4096;

/// A snapshot as read from the database, with its [`Info`] made once on
/// demand.
#[derive(Debug)]
pub(crate) struct Cached {
    pub row: SnapshotRow,
    info: OnceLock<Arc<Info>>,
    /// What a front end made of the row (the C ABI: its JSON), kept with
    /// it, so it is served exactly as long as the row is, whatever the
    /// number of rows; the core never reads it.
    pub text: OnceLock<Arc<str>>,
}

impl Cached {
    pub(crate) fn new(row: SnapshotRow) -> Arc<Cached> {
        Arc::new(Cached {
            row,
            info: OnceLock::new(),
            text: OnceLock::new(),
        })
    }

    /// The snapshot's info: the same `Arc` for as long as this entry is
    /// served, so callers may key what they derive from it on its identity.
    pub fn info(&self) -> Arc<Info> {
        self.info.get_or_init(|| Arc::new(self.row.info())).clone()
    }
}

/// Distinct walk filter lists kept at most.
const MAX_CACHED_WALKS: usize = 16;

impl MetaStore {
    /// Brings `c` up to date: nothing to do while the change counter holds
    /// the value it had when `c` last was; else the rows written and the
    /// keys removed since `c.seq`, read in one transaction, applied in
    /// order (removals first: a key removed and used again comes back with
    /// its new row). The database is the truth at every step, so a row read
    /// later than `c.seq` (a point read) may sit in `c` too.
    pub(super) fn sync(&self, c: &mut Cache) -> Result<()> {
        let before = self.changes.stable();
        if before.is_some() && c.counter == before {
            return Ok(());
        }
        // The keys written since, from the ring, when it holds them all:
        // no query, only the rows of those keys are read again when used.
        if let (Some(now), Some(pos)) = (before, c.ring_pos) {
            if let Some((hashes, len)) = self.changes.recorded_since(pos) {
                if self.changes.stable() == Some(now)
                    && !hashes.contains(&GENERATION_CHANGED)
                    && c.dirty.len() + hashes.len() <= MAX_DIRTY
                {
                    if !hashes.is_empty() {
                        c.walks.clear();
                    }
                    c.dirty.extend(hashes);
                    c.counter = Some(now);
                    c.ring_pos = Some(len);
                    return Ok(());
                }
            }
        }
        self.sync_from_database(c, before)
    }

    /// [`MetaStore::sync`] by reading what changed from the database.
    fn sync_from_database(&self, c: &mut Cache, before: Option<u64>) -> Result<()> {
        // Read before the database: what is recorded from here on is seen
        // next time (again, maybe: harmless). Marks are cleared only once
        // the read succeeded, so a failed one leaves them. The position is
        // kept only if no write was under way from `before` to the end of
        // the read: a writer records its keys before it commits, so an entry
        // below `ring` may belong to a write this read did not see yet.
        let ring = self.changes.ring_len();
        let ring_at = |after: Option<u64>| (before.is_some() && before == after).then_some(ring);
        let Some(since) = c.seq else {
            // Nothing kept yet: where the database stands is all there is to know.
            let (seq, _, generation) = self.read_one(|tx| tx.positions())?;
            let after = self.changes.stable();
            c.dirty.clear();
            c.ring_pos = ring_at(after);
            c.seq = Some(seq);
            c.generation = generation;
            c.counter = before.filter(|b| after == Some(*b));
            return Ok(());
        };
        let delta = self.read_one(|tx| tx.changes_since(since))?;
        c.dirty.clear();
        if delta.seq < since || since < delta.floor {
            // Further behind than the removal records go (or another
            // database): start again.
            c.rows.clear();
            c.complete = false;
            c.walks.clear();
        } else if !delta.rows.is_empty() || !delta.removed.is_empty() {
            c.walks.clear();
            for key in &delta.removed {
                c.rows.remove(key.as_str());
            }
            for row in delta.rows {
                c.rows.insert(row.key.clone(), Cached::new(row));
            }
        }
        c.seq = Some(delta.seq);
        c.generation = delta.generation;
        let after = self.changes.stable();
        c.ring_pos = ring_at(after);
        c.counter = if before.is_some() && before == after {
            before
        } else {
            None
        };
        Ok(())
    }

    /// A snapshot and the mount generation, from this handle's cache once
    /// it is up to date, else read (and kept).
    pub fn cached_get(&self, key: &str) -> Result<(Arc<Cached>, i64)> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.sync(&mut c)?;
        let hash = key_hash(key);
        let dirty = c.dirty.contains(&hash);
        if !dirty {
            if let Some(hit) = c.rows.get(key) {
                return Ok((hit.clone(), c.generation));
            }
            if c.complete {
                return Err(Error::not_found(format!("snapshot {key:?} does not exist")));
            }
        }
        match self.read_one(|tx| tx.get_with_generation(key)) {
            Ok((row, generation)) => {
                let entry = Cached::new(row);
                c.rows.insert(entry.row.key.clone(), entry.clone());
                if dirty {
                    // Read after the write the ring told of: current again.
                    c.dirty.remove(&hash);
                }
                Ok((entry, generation))
            }
            Err(e) => {
                if dirty && e.kind() == crate::ErrorKind::NotFound {
                    c.rows.remove(key);
                    c.dirty.remove(&hash);
                }
                Err(e)
            }
        }
    }

    /// The snapshots `select` picks from all of them (a walk), in key
    /// order; cached by filter list until something changes.
    pub fn cached_walk(
        &self,
        filters: &[String],
        select: impl FnOnce(&mut dyn Iterator<Item = &Arc<Cached>>) -> Result<Arc<[Arc<Cached>]>>,
    ) -> Result<Arc<[Arc<Cached>]>> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.sync(&mut c)?;
        if !c.dirty.is_empty() {
            let before = self.changes.stable();
            self.sync_from_database(&mut c, before)?;
        }
        if !c.complete {
            let (rows, (seq, _, generation)) =
                self.read(|tx| Ok((tx.all(Cached::new)?, tx.positions()?)))?;
            let mut rows = rows;
            // In key order first: building the map from sorted entries is linear.
            rows.sort_unstable_by(|a, b| a.row.key.cmp(&b.row.key));
            c.rows = rows.into_iter().map(|r| (r.row.key.clone(), r)).collect();
            c.seq = Some(seq);
            c.generation = generation;
            c.complete = true;
            c.walks.clear();
        }
        if let Some(hit) = c.walks.get(filters) {
            return Ok(hit.clone());
        }
        let selected = select(&mut c.rows.values())?;
        if c.walks.len() >= MAX_CACHED_WALKS {
            c.walks.clear();
        }
        c.walks.insert(filters.to_vec(), selected.clone());
        Ok(selected)
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
/// Word of the shared page counting the keys ever recorded in the ring.
const RING_LEN: usize = 2;
/// First word of the ring.
const RING: usize = 8;
/// Slots of the ring: the rest of the page.
const RING_SLOTS: usize = crate::sys::mm::SharedCounter::WORDS - RING;

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

    /// Appends the hashes of the keys a write touches to the ring; called
    /// between [`ChangeCounter::begin_write`] and the commit, so a reader
    /// that sees the counter even and unchanged around reading the ring
    /// read every entry of every finished write.
    pub(super) fn record(&self, hashes: &[u64]) {
        for &h in hashes {
            let i = self.map.word(RING_LEN).fetch_add(1, AtomicOrdering::SeqCst);
            self.map
                .word(RING + (i % RING_SLOTS as u64) as usize)
                .store(h, AtomicOrdering::SeqCst);
        }
    }

    pub(super) fn ring_len(&self) -> u64 {
        self.map.word(RING_LEN).load(AtomicOrdering::SeqCst)
    }

    /// The hashes recorded since the ring held `pos` entries, and how many
    /// it holds now; None when some were overwritten since.
    pub(super) fn recorded_since(&self, pos: u64) -> Option<(Vec<u64>, u64)> {
        let len = self.ring_len();
        if len < pos || len - pos > RING_SLOTS as u64 {
            return None;
        }
        let hashes = (pos..len)
            .map(|i| {
                self.map
                    .word(RING + (i % RING_SLOTS as u64) as usize)
                    .load(AtomicOrdering::SeqCst)
            })
            .collect();
        // Entries appended while we read may have overwritten what we read.
        (self.ring_len() - pos <= RING_SLOTS as u64).then_some((hashes, len))
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
        let row = a.cached_get("k").unwrap().0.row.clone();
        // A change made behind SQLite's back is invisible while cached ...
        a.read_one(|tx| {
            tx.tx
                .execute("UPDATE snapshots SET parent = 'sneaky' WHERE key = 'k'", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(a.cached_get("k").unwrap().0.row.parent, row.parent);
        // ... and a write through a store (here: another handle's) is seen
        // by the next read: what it wrote, nothing else.
        b.write(|tx| tx.insert(Kind::Active, "k2", None, &Labels::new(), Timestamp::now()))
            .unwrap();
        assert_eq!(a.cached_get("k2").unwrap().0.row.key.as_ref(), "k2");
        assert_eq!(a.cached_get("k").unwrap().0.row.parent, row.parent);
    }

    /// Two handles on one new database (as two processes would have).
    fn two_handles() -> (tempfile::TempDir, MetaStore, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let changes = dir.path().join("changes");
        let a = MetaStore::open(&db, &changes, false).unwrap();
        let b = MetaStore::open(&db, &changes, false).unwrap();
        (dir, a, b)
    }

    fn keys(store: &MetaStore) -> Vec<String> {
        store
            .cached_walk(&[], |rows| Ok(rows.cloned().collect()))
            .unwrap()
            .iter()
            .map(|c| c.row.key.to_string())
            .collect()
    }

    /// Another handle's writes (insert, labels, commit under a new name,
    /// delete) reach this handle's cache by what changed, in key order, and
    /// a handle further behind than the removal records go starts over.
    #[test]
    fn changes_reach_the_cache_incrementally() {
        let (_dir, a, b) = two_handles();
        let now = Timestamp::now();
        for k in ["b", "a", "c"] {
            b.write(|tx| tx.insert(Kind::Active, k, None, &Labels::new(), now))
                .unwrap();
        }
        assert_eq!(keys(&a), ["a", "b", "c"]);
        let id_b = a.cached_get("b").unwrap().0.row.id;
        let labels: Labels = [("x".to_string(), "1".to_string())].into();
        b.write(|tx| tx.update_labels(id_b, &labels, now)).unwrap();
        assert_eq!(a.cached_get("b").unwrap().0.row.labels.get("x"), Some("1"));
        let blob = crate::info::BlobRecord {
            size: 1,
            verity_digest: None,
            path: None,
        };
        b.write(|tx| {
            tx.commit(
                id_b,
                "z",
                None,
                &Labels::new(),
                now,
                Default::default(),
                &blob,
                false,
            )
        })
        .unwrap();
        assert_eq!(keys(&a), ["a", "c", "z"]);
        assert_eq!(
            a.cached_get("b").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        let id_a = a.cached_get("a").unwrap().0.row.id;
        b.write(|tx| tx.delete(id_a)).unwrap();
        // The key is used again at once: the new row, not the removal, wins.
        b.write(|tx| tx.insert(Kind::View, "a", None, &Labels::new(), now))
            .unwrap();
        assert_eq!(keys(&a), ["a", "c", "z"]);
        assert_eq!(a.cached_get("a").unwrap().0.row.kind, Kind::View);

        // Behind the removal records: everything is read again.
        b.write(|tx| {
            tx.tx.execute(
                "UPDATE state SET value = (SELECT value FROM state WHERE name = 'seq') + 1
                 WHERE name = 'removed_floor'",
                [],
            )?;
            tx.tx.execute("DELETE FROM snapshots WHERE key = 'c'", [])?;
            Ok(())
        })
        .unwrap();
        b.write(|tx| tx.insert(Kind::Active, "d", None, &Labels::new(), now))
            .unwrap();
        assert_eq!(keys(&a), ["a", "d", "z"]);
    }

    /// The ring tells another handle which keys changed; when more changed
    /// than it holds, the database does.
    #[test]
    fn the_ring_and_its_overflow() {
        let (_dir, a, b) = two_handles();
        let now = Timestamp::now();
        for k in ["k", "j"] {
            b.write(|tx| tx.insert(Kind::Active, k, None, &Labels::new(), now))
                .unwrap();
        }
        let k = a.cached_get("k").unwrap().0;
        let j = a.cached_get("j").unwrap().0;
        let labels = |v: &str| -> Labels { [("x".to_string(), v.to_string())].into() };
        b.write(|tx| tx.update_labels(k.row.id, &labels("1"), now))
            .unwrap();
        // The untouched row is still the kept one; the touched one is read.
        assert!(Arc::ptr_eq(&a.cached_get("j").unwrap().0, &j));
        assert_eq!(a.cached_get("k").unwrap().0.row.labels.get("x"), Some("1"));
        b.write(|tx| tx.update_labels(k.row.id, &labels("2"), now))
            .unwrap();
        for i in 0..RING_SLOTS + 10 {
            b.write(|tx| tx.insert(Kind::Active, &format!("n{i}"), None, &Labels::new(), now))
                .unwrap();
        }
        assert_eq!(a.cached_get("k").unwrap().0.row.labels.get("x"), Some("2"));
        assert_eq!(a.cached_get("n3").unwrap().0.row.key.as_ref(), "n3");
        // A removal through the ring: gone for the other handle too.
        b.write(|tx| tx.delete(j.row.id)).unwrap();
        assert_eq!(
            a.cached_get("j").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    /// A handle that reads the database while another's write is under way
    /// (its keys in the ring, its commit not yet visible) must not take
    /// the ring as read up to there: the write's key would never be read.
    /// (Seen as a NotFound for a just-made snapshot, threads sharing a handle.)
    #[test]
    fn a_read_during_a_write_does_not_skip_its_keys() {
        let (_dir, a, b) = two_handles();
        assert!(keys(&b).is_empty()); // b keeps every row from here on
        let m = a.changes.begin_write();
        a.changes.record(&[key_hash("x")]);
        assert!(keys(&b).is_empty(), "the write is not committed yet");
        a.read_one(|tx| tx.insert(Kind::Active, "x", None, &Labels::new(), Timestamp::now()))
            .unwrap();
        a.changes.end_write(m);
        assert_eq!(b.cached_get("x").unwrap().0.row.key.as_ref(), "x");
        assert_eq!(keys(&b), ["x"]);
    }
}
