//! Snapshot metadata in SQLite (WAL), shared by every process that opens the
//! same root. Each operation runs one short transaction; writers take the
//! write lock up front (`BEGIN IMMEDIATE`) so two writers never deadlock on a
//! lock upgrade, and wait up to [`BUSY_TIMEOUT`] for each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::error::{Error, Result};
use crate::info::{BlobRecord, Info, Kind, Labels, Timestamp, Usage};

/// How long an operation waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bumped whenever the schema changes; a newer database is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: names snapshots/<id>/
    key           TEXT NOT NULL UNIQUE,
    kind          INTEGER NOT NULL,                  -- containerd's Kind: 1 view, 2 active, 3 committed
    parent_id     INTEGER REFERENCES snapshots(id),
    parent        TEXT NOT NULL DEFAULT '',          -- the parent's name (committed names never change)
    parent_ids    TEXT NOT NULL DEFAULT '',          -- every ancestor's id, nearest first
    labels        TEXT NOT NULL DEFAULT '{}',        -- JSON object
    created       INTEGER NOT NULL,                  -- ns since the epoch, UTC
    updated       INTEGER NOT NULL,
    size          INTEGER NOT NULL DEFAULT 0,        -- usage of a committed snapshot
    inodes        INTEGER NOT NULL DEFAULT 0,
    blob_size     INTEGER,                           -- length of layer.erofs when committed
    verity_digest BLOB                               -- fs-verity digest measured at commit
);
CREATE INDEX IF NOT EXISTS snapshots_parent_id ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO state (name, value) VALUES ('mount_generation', 0);
";

/// The columns `SnapshotRow::from_row` reads, as a macro so queries are
/// `concat!`-ed at compile time (no formatting on the hot path).
macro_rules! columns {
    () => {
        "id, key, kind, parent, parent_ids, labels, created, updated, size, inodes, blob_size"
    };
}

/// One row of the `snapshots` table.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRow {
    pub id: i64,
    pub key: String,
    pub kind: Kind,
    pub parent: String,
    /// Every ancestor, nearest first.
    pub parent_ids: Vec<i64>,
    pub labels: Labels,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub usage: Usage,
    /// Length of `layer.erofs`: recorded by commit, or by the differ for an
    /// active snapshot whose layer it applied.
    pub blob_size: Option<u64>,
}

impl SnapshotRow {
    pub fn info(&self) -> Info {
        Info {
            kind: self.kind,
            name: self.key.clone(),
            parent: self.parent.clone(),
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
        let parent_ids: String = row.get(4)?;
        let labels: String = row.get(5)?;
        Ok(SnapshotRow {
            id: row.get(0)?,
            key: row.get(1)?,
            kind: Kind::from_i64(row.get(2)?).map_err(|e| corrupt(2, e))?,
            parent: row.get(3)?,
            parent_ids: decode_ids(&parent_ids).map_err(|e| corrupt(4, e))?,
            labels: serde_json::from_str(&labels).map_err(|e| corrupt(5, e))?,
            created: Timestamp(row.get(6)?),
            updated: Timestamp(row.get(7)?),
            usage: Usage {
                size: row.get(8)?,
                inodes: row.get(9)?,
            },
            blob_size: row.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        })
    }
}

fn corrupt(col: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn encode_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
}

fn decode_ids(s: &str) -> Result<Vec<i64>> {
    s.split_ascii_whitespace()
        .map(|p| {
            p.parse().map_err(|_| {
                Error::internal(format!("metadata database: bad parent id list {s:?}"))
            })
        })
        .collect()
}

/// The metadata database of one root, with a small pool of connections so
/// threads sharing a handle do not wait on each other for reads.
pub(crate) struct MetaStore {
    path: PathBuf,
    sync: bool,
    idle: Mutex<Vec<Connection>>,
    changes: ChangeCounter,
    cache: Mutex<Cache>,
}

/// Rows read while the change counter stood at `seq` (see [`ChangeCounter`]).
#[derive(Default)]
struct Cache {
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

/// Connections kept open for reuse; more are opened on demand under load.
const MAX_IDLE: usize = 4;

impl MetaStore {
    /// Opens (creating if needed) the database at `path`. `sync` asks for
    /// `synchronous=FULL` so a recorded commit survives power loss.
    /// `changes` is the shared change counter file (created if needed).
    pub fn open(path: &Path, changes: &Path, sync: bool) -> Result<MetaStore> {
        let store = MetaStore {
            path: path.to_path_buf(),
            sync,
            idle: Mutex::new(Vec::new()),
            changes: ChangeCounter::open(changes)?,
            cache: Mutex::new(Cache::default()),
        };
        let mut conn = store.connect()?;
        // Several processes may create the schema at once: one transaction each.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::failed_precondition(format!(
                "metadata database {}: schema version {version} is newer than this library's \
                 {SCHEMA_VERSION}; upgrade erofs-snapshotter",
                path.display()
            )));
        }
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        tx.commit()?;
        store.put_back(conn);
        Ok(store)
    }

    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
            Error::unavailable(format!(
                "open metadata database {}: {e}",
                self.path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers run beside one writer, across processes.
        let mode = enable_wal(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::unavailable(format!(
                "metadata database {}: cannot use WAL mode (got {mode}); the root's filesystem \
                 must support shared memory maps",
                self.path.display()
            )));
        }
        conn.execute_batch(if self.sync {
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
        } else {
            "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
        })?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn take(&self) -> Result<Connection> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match conn {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` in a read transaction (a consistent snapshot of the database).
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run(TransactionBehavior::Deferred, f)
    }

    /// Runs `f` in a write transaction; it commits only if `f` succeeds.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.take()?;
        let mut marked = None;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&Tx { tx: &tx })?;
            // Readers stop trusting their caches before the data changes...
            marked = Some(self.changes.begin_write());
            tx.commit()?;
            Ok(out)
        })();
        // ... and may cache again once it has.
        if let Some(m) = marked {
            self.changes.end_write(m);
        }
        self.put_back(conn);
        result
    }

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

    /// Runs `f`, which must issue a single statement, without an explicit
    /// transaction: one statement is atomic by itself, and the hot read
    /// paths (`stat`, `mounts`) save a BEGIN and a COMMIT.
    pub fn read_one<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let result = f(&Tx { tx: &conn });
        self.put_back(conn);
        result
    }

    fn run<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.take()?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(behavior)?;
            let out = f(&Tx { tx: &tx })?;
            tx.commit()?;
            Ok(out)
        })();
        self.put_back(conn);
        result
    }
}

/// `PRAGMA journal_mode=WAL`, retried while the database is busy. On a new
/// database (the only time the switch writes) SQLite takes a read lock, reads
/// the header, then upgrades to the write lock to rewrite it. A failed
/// upgrade is never waited for in the busy handler (two readers waiting to
/// upgrade would deadlock): it returns SQLITE_BUSY at once. So when several
/// processes open a fresh root at the same instant, all but the first to
/// upgrade failed with "database is locked". The failed statement holds no
/// lock, so trying again is safe; once the first process has converted the
/// file the switch only reads. Gives up after [`BUSY_TIMEOUT`], as writers do.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
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
struct ChangeCounter {
    map: crate::sys::mm::SharedCounter,
}

impl ChangeCounter {
    fn open(path: &Path) -> Result<ChangeCounter> {
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
    fn stable(&self) -> Option<u64> {
        let v = self.counter().load(AtomicOrdering::SeqCst);
        (v % 2 == 0).then_some(v)
    }

    fn begin_write(&self) -> u64 {
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

    fn end_write(&self, began: u64) {
        self.counter().fetch_max(began + 1, AtomicOrdering::SeqCst);
    }
}

/// A connection inside a transaction (or running one statement), with the
/// queries the snapshotter needs.
pub(crate) struct Tx<'a> {
    tx: &'a Connection,
}

impl Tx<'_> {
    pub fn get(&self, key: &str) -> Result<Option<SnapshotRow>> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            columns!(),
            " FROM snapshots WHERE key = ?1"
        ))?;
        Ok(st.query_row([key], SnapshotRow::from_row).optional()?)
    }

    /// The snapshot and the mount generation, read by one statement.
    pub fn get_with_generation(&self, key: &str) -> Result<(SnapshotRow, i64)> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            columns!(),
            ", (SELECT value FROM state WHERE name = 'mount_generation') FROM snapshots WHERE key = ?1"
        ))?;
        st.query_row([key], |r| Ok((SnapshotRow::from_row(r)?, r.get(11)?)))
            .optional()?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))
    }

    /// Like [`Tx::get`], but a missing key is containerd's not-found error.
    pub fn must_get(&self, key: &str) -> Result<SnapshotRow> {
        self.get(key)?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))
    }

    pub fn get_by_id(&self, id: i64) -> Result<Option<SnapshotRow>> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            columns!(),
            " FROM snapshots WHERE id = ?1"
        ))?;
        Ok(st.query_row([id], SnapshotRow::from_row).optional()?)
    }

    /// The blob records of committed snapshots among `ids`, in the same order.
    pub fn blobs(&self, ids: &[i64]) -> Result<Vec<Option<BlobRecord>>> {
        let mut st = self
            .tx
            .prepare_cached("SELECT blob_size, verity_digest FROM snapshots WHERE id = ?1")?;
        ids.iter()
            .map(|id| {
                let rec = st
                    .query_row([id], |r| {
                        let size: Option<i64> = r.get(0)?;
                        let digest: Option<Vec<u8>> = r.get(1)?;
                        Ok(size.map(|s| BlobRecord {
                            size: s as u64,
                            verity_digest: digest,
                        }))
                    })
                    .optional()?;
                Ok(rec.flatten())
            })
            .collect()
    }

    /// Inserts a new active or view snapshot; returns its id.
    pub fn insert(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&SnapshotRow>,
        labels: &Labels,
        now: Timestamp,
    ) -> Result<i64> {
        let parent_ids: Vec<i64> = match parent {
            Some(p) => std::iter::once(p.id)
                .chain(p.parent_ids.iter().copied())
                .collect(),
            None => Vec::new(),
        };
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let mut st = self.tx.prepare_cached(
            "INSERT INTO snapshots (key, kind, parent_id, parent, parent_ids, labels, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?;
        st.execute(params![
            key,
            kind as i64,
            parent.map(|p| p.id),
            parent.map(|p| p.key.as_str()).unwrap_or(""),
            encode_ids(&parent_ids),
            labels,
            now.0,
        ])?;
        Ok(self.tx.last_insert_rowid())
    }

    pub fn has_children(&self, id: i64) -> Result<bool> {
        let mut st = self
            .tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM snapshots WHERE parent_id = ?1)")?;
        Ok(st.query_row([id], |r| r.get(0))?)
    }

    pub fn delete(&self, id: i64) -> Result<()> {
        let mut st = self
            .tx
            .prepare_cached("DELETE FROM snapshots WHERE id = ?1")?;
        st.execute([id])?;
        Ok(())
    }

    /// Turns active snapshot `id` into committed snapshot `name`, keeping its id
    /// (and so its directory), as containerd's storage does.
    pub fn commit(
        &self,
        id: i64,
        name: &str,
        labels: &Labels,
        now: Timestamp,
        usage: Usage,
        blob: &BlobRecord,
    ) -> Result<()> {
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET key = ?2, kind = ?3, labels = ?4, created = ?5, updated = ?5,
                 size = ?6, inodes = ?7, blob_size = ?8, verity_digest = ?9
             WHERE id = ?1",
        )?;
        st.execute(params![
            id,
            name,
            Kind::Committed as i64,
            labels,
            now.0,
            usage.size,
            usage.inodes,
            blob.size as i64,
            blob.verity_digest,
        ])?;
        Ok(())
    }

    /// Records the blob the differ wrote for active snapshot `id`.
    pub fn record_applied(&self, id: i64, blob_size: u64) -> Result<()> {
        let mut st = self
            .tx
            .prepare_cached("UPDATE snapshots SET blob_size = ?2 WHERE id = ?1")?;
        st.execute(params![id, blob_size as i64])?;
        Ok(())
    }

    pub fn update_labels(&self, id: i64, labels: &Labels, now: Timestamp) -> Result<()> {
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let mut st = self
            .tx
            .prepare_cached("UPDATE snapshots SET labels = ?2, updated = ?3 WHERE id = ?1")?;
        st.execute(params![id, labels, now.0])?;
        Ok(())
    }

    /// Every snapshot, ordered by key (bytewise, as containerd's bolt store walks).
    pub fn all(&self) -> Result<Vec<SnapshotRow>> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            columns!(),
            " FROM snapshots ORDER BY key"
        ))?;
        let rows = st.query_map([], SnapshotRow::from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The kind of every snapshot, by id.
    pub fn kinds(&self) -> Result<HashMap<i64, Kind>> {
        let mut st = self.tx.prepare_cached("SELECT id, kind FROM snapshots")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (id, kind) = r?;
            Ok((id, Kind::from_i64(kind)?))
        })
        .collect()
    }

    /// Counter bumped by every unmount of a layer, so a handle knows when its
    /// record of mounted layers may be stale (see `layers.rs`).
    pub fn mount_generation(&self) -> Result<i64> {
        let mut st = self
            .tx
            .prepare_cached("SELECT value FROM state WHERE name = 'mount_generation'")?;
        Ok(st.query_row([], |r| r.get(0))?)
    }

    pub fn bump_mount_generation(&self) -> Result<i64> {
        let mut st = self.tx.prepare_cached(
            "UPDATE state SET value = value + 1 WHERE name = 'mount_generation' RETURNING value",
        )?;
        Ok(st.query_row([], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_round_trip() {
        assert_eq!(encode_ids(&[]), "");
        assert_eq!(decode_ids("").unwrap(), Vec::<i64>::new());
        assert_eq!(decode_ids(&encode_ids(&[3, 2, 1])).unwrap(), vec![3, 2, 1]);
        assert!(decode_ids("1 x").is_err());
    }

    /// What another process holds while it converts a new database to WAL
    /// (the write lock of the rollback journal) makes the upgrade in our own
    /// conversion fail at once, without the busy handler: open must wait.
    #[test]
    fn open_waits_for_another_process_converting_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let other = Connection::open(&db).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (opened, waited) = std::thread::scope(|scope| {
            let opener = scope.spawn(|| {
                let started = std::time::Instant::now();
                let r = MetaStore::open(&db, &dir.path().join("changes"), false);
                (r, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("ROLLBACK").unwrap();
            opener.join().unwrap()
        });
        let store = opened.unwrap_or_else(|e| panic!("open failed after {waited:?}: {e}"));
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        store.write(|tx| tx.bump_mount_generation()).unwrap();
    }

    #[test]
    fn schema_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let store = MetaStore::open(&db, &dir.path().join("changes"), false).unwrap();
        // Opening twice (another process) is fine.
        let _again = MetaStore::open(&db, &dir.path().join("changes"), false).unwrap();
        let now = Timestamp::now();
        let a = store
            .write(|tx| tx.insert(Kind::Active, "a", None, &Labels::new(), now))
            .unwrap();
        store
            .write(|tx| {
                tx.commit(
                    a,
                    "c",
                    &Labels::new(),
                    now,
                    Usage {
                        size: 4096,
                        inodes: 1,
                    },
                    &BlobRecord {
                        size: 4096,
                        verity_digest: None,
                    },
                )
            })
            .unwrap();
        let parent = store.read(|tx| tx.must_get("c")).unwrap();
        let b = store
            .write(|tx| tx.insert(Kind::View, "v", Some(&parent), &Labels::new(), now))
            .unwrap();
        let v = store.read(|tx| tx.must_get("v")).unwrap();
        assert_eq!(v.parent_ids, vec![a]);
        assert_eq!(v.parent, "c");
        assert!(store.read(|tx| tx.has_children(a)).unwrap());
        store.write(|tx| tx.delete(b)).unwrap();
        assert!(!store.read(|tx| tx.has_children(a)).unwrap());
        assert_eq!(
            store.read(|tx| tx.must_get("v")).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        let g = store.write(|tx| tx.bump_mount_generation()).unwrap();
        assert_eq!(store.read(|tx| tx.mount_generation()).unwrap(), g);
    }

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

    #[test]
    fn failed_closure_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            MetaStore::open(&dir.path().join("m.db"), &dir.path().join("changes"), false).unwrap();
        let r: Result<()> = store.write(|tx| {
            tx.insert(Kind::Active, "a", None, &Labels::new(), Timestamp::now())?;
            Err(Error::internal("boom"))
        });
        assert!(r.is_err());
        assert!(store.read(|tx| tx.get("a")).unwrap().is_none());
    }
}
