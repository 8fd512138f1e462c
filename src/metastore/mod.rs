//! Snapshot metadata in SQLite (WAL), shared by every process that opens the
//! same root. Each operation runs one short transaction; writers take the
//! write lock up front (`BEGIN IMMEDIATE`) so two writers never deadlock on a
//! lock upgrade, and wait up to [`BUSY_TIMEOUT`] for each other.
//!
//! This file: the connection pool and the transactions. `cache`: what each
//! handle keeps in memory and the counter that tells it when to stop
//! trusting it. `queries`: the schema and every statement.

mod cache;
mod queries;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

pub(crate) use cache::{key_hash, Cached};
use cache::{Cache, ChangeCounter};
pub(crate) use queries::{BlobCheck, SnapshotRow, Tx};
use queries::{MIGRATIONS, SCHEMA};

/// How long an operation waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bumped whenever the schema changes; a newer database is refused.
const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// The metadata database of one root, with a small pool of connections so
/// threads sharing a handle do not wait on each other for reads.
pub(crate) struct MetaStore {
    path: PathBuf,
    sync: bool,
    idle: Mutex<Vec<Connection>>,
    changes: ChangeCounter,
    cache: Mutex<Cache>,
}

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
        // Usually the schema is current: a read says so, with no write lock.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            store.put_back(conn);
            store.warm()?;
            return Ok(store);
        }
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
        if version == 0 {
            tx.execute_batch(SCHEMA)?;
        } else {
            // An older database: each step in turn, in this transaction.
            for step in &MIGRATIONS[version as usize - 1..] {
                tx.execute_batch(step)?;
            }
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        tx.commit()?;
        store.put_back(conn);
        store.warm()?;
        Ok(store)
    }

    /// Readies the first operation at open: the connection reads the schema
    /// and prepares the statements of a `stat` and of a look for changes,
    /// and the cache learns where the database stands, so the first call a
    /// caller makes costs what the next ones do.
    fn warm(&self) -> Result<()> {
        self.read_one(|tx| tx.prepare_hot())?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.sync(&mut c)
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
        // The rows a handle uses are kept as values (cache.rs): SQLite's
        // own page cache need not be large (its default is 2 MiB a connection).
        conn.execute_batch("PRAGMA cache_size=-512;")?;
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
        self.write_with(false, f)
    }

    /// [`MetaStore::write`] committed with `synchronous=FULL` whatever the
    /// store's setting: when it returns, this transaction and every one
    /// committed before it (the WAL is synced up to its end) are on disk.
    pub fn write_durable<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.write_with(!self.sync, f)
    }

    fn write_with<T>(&self, full: bool, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.take()?;
        if full {
            conn.execute_batch("PRAGMA synchronous=FULL;")?;
        }
        let mut marked = None;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let t = Tx::new(&tx);
            let out = f(&t)?;
            // Readers stop trusting their caches before the data changes,
            // and learn which keys it touches...
            marked = Some(self.changes.begin_write());
            self.changes.record(&t.changed.borrow());
            tx.commit()?;
            Ok(out)
        })();
        // ... and may cache again once it has.
        if let Some(m) = marked {
            self.changes.end_write(m);
        }
        // A connection that cannot go back to the store's setting is dropped.
        if !full || conn.execute_batch("PRAGMA synchronous=NORMAL;").is_ok() {
            self.put_back(conn);
        }
        result
    }

    /// Runs `f`, which must issue a single statement, without an explicit
    /// transaction: one statement is atomic by itself, and the hot read
    /// paths (`stat`, `mounts`) save a BEGIN and a COMMIT.
    pub fn read_one<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let result = f(&Tx::new(&conn));
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
            let out = f(&Tx::new(&tx))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{Kind, Labels, Timestamp};

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

    /// A database an older library made is brought up to date at open,
    /// its rows kept.
    #[test]
    fn older_schemas_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        // Version 1's schema, as it was.
        let v1 = "
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, kind INTEGER NOT NULL,
    parent_id INTEGER REFERENCES snapshots(id), parent TEXT NOT NULL DEFAULT '',
    parent_ids TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '{}',
    created INTEGER NOT NULL, updated INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0, blob_size INTEGER, verity_digest BLOB);
CREATE INDEX snapshots_parent_id ON snapshots(parent_id);
CREATE TABLE state (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO state (name, value) VALUES ('mount_generation', 0);";
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(v1).unwrap();
        conn.execute_batch(
            "INSERT INTO snapshots (key, kind, created, updated) VALUES ('old', 2, 1, 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let store = MetaStore::open(&db, &dir.path().join("changes"), false).unwrap();
        let row = store.read(|tx| tx.must_get("old")).unwrap();
        assert_eq!(row.blob_ref, None);
        // The cache sees rows written before and after the migration.
        store
            .write(|tx| tx.insert(Kind::Active, "new", None, &Labels::new(), Timestamp::now()))
            .unwrap();
        assert_eq!(store.cached_get("old").unwrap().0.row.id, row.id);
        let all = store
            .cached_walk(&[], |rows| Ok(rows.cloned().collect()))
            .unwrap();
        assert_eq!(all.len(), 2);
        let version: i64 = store
            .read_one(|tx| Ok(tx.tx.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Opening again (another process, later) changes nothing.
        MetaStore::open(&db, &dir.path().join("changes"), false).unwrap();
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
