//! The schema of the metadata database and every statement run on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::info::{BlobRecord, Info, InfoRef, Kind, Labels, RowLabels, Timestamp, Usage};

/// What lets a handle bring its cache up to date by reading only what
/// changed: every write of a row stamps it with the next `seq`, and every
/// key that stops naming a row (remove, the active key of a commit) is
/// recorded in `removed` with its `seq`. `removed` keeps the last
/// [`REMOVED_KEPT`] or so; a handle further behind (`removed_floor`) reads
/// everything again.
macro_rules! seq_schema {
    () => {
        "
CREATE INDEX IF NOT EXISTS snapshots_seq ON snapshots(seq);
CREATE TABLE IF NOT EXISTS removed (seq INTEGER PRIMARY KEY, key TEXT NOT NULL);
INSERT OR IGNORE INTO state (name, value) VALUES ('seq', 0), ('removed_floor', 0);
"
    };
}

/// Removal records kept at least.
const REMOVED_KEPT: i64 = 64 * 1024;

pub(super) const SCHEMA: &str = concat!(
    "
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
    verity_digest BLOB,                              -- fs-verity digest measured at commit
    blob_ref      TEXT,                              -- the layer's file in a layer content cache
    seq           INTEGER NOT NULL DEFAULT 0,        -- the change that last wrote the row
    durable       INTEGER NOT NULL DEFAULT 1,        -- 1: this layer and every ancestor on disk
    lost          INTEGER NOT NULL DEFAULT 0         -- 1: the blob was found cut short or missing
);
CREATE INDEX IF NOT EXISTS snapshots_parent_id ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO state (name, value) VALUES ('mount_generation', 0);
",
    seq_schema!()
);

/// What takes a database of schema version N (from 1) to N + 1, at index N - 1.
pub(super) const MIGRATIONS: &[&str] = &[
    // 2: layers served from a layer content cache.
    "ALTER TABLE snapshots ADD COLUMN blob_ref TEXT;",
    // 3: caches kept up to date by what changed (see `seq_schema`).
    concat!(
        "ALTER TABLE snapshots ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
        seq_schema!()
    ),
    // 4: layers made durable before their first use (layers of older
    // versions were committed long ago: taken as durable).
    "ALTER TABLE snapshots ADD COLUMN durable INTEGER NOT NULL DEFAULT 1;",
    // 5: layers found lost after a crash, until repaired.
    "ALTER TABLE snapshots ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;",
];

/// The columns `SnapshotRow::from_row` reads, as a macro so queries are
/// `concat!`-ed at compile time (no formatting on the hot path).
macro_rules! columns {
    () => {
        "id, key, kind, parent, parent_ids, labels, created, updated, size, inodes, blob_size, blob_ref, durable"
    };
}

/// A snapshot and the mount generation, by key: the statement of `stat`.
const GET_WITH_GENERATION: &str = concat!(
    "SELECT ",
    columns!(),
    ", (SELECT value FROM state WHERE name = 'mount_generation') FROM snapshots WHERE key = ?1"
);

/// A committed layer's blob and what its commit recorded of it, for a check.
pub(crate) struct BlobCheck {
    pub id: i64,
    pub key: String,
    pub record: BlobRecord,
    pub durable: bool,
    /// The bytes its blocks took at commit (`size`).
    pub used: i64,
}

/// The columns `BlobCheck::from_row` reads.
macro_rules! blob_check_columns {
    () => {
        "id, key, blob_size, verity_digest, blob_ref, durable, size"
    };
}

impl BlobCheck {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<BlobCheck> {
        let path: Option<String> = r.get(4)?;
        Ok(BlobCheck {
            id: r.get(0)?,
            key: r.get(1)?,
            record: BlobRecord {
                size: r.get::<_, i64>(2)? as u64,
                verity_digest: r.get(3)?,
                path: path.map(PathBuf::from),
            },
            durable: r.get::<_, i64>(5)? != 0,
            used: r.get(6)?,
        })
    }
}

/// One row of the `snapshots` table.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRow {
    pub id: i64,
    pub key: Arc<str>,
    pub kind: Kind,
    pub parent: String,
    /// Every ancestor, nearest first.
    pub parent_ids: Vec<i64>,
    pub labels: RowLabels,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub usage: Usage,
    /// Length of `layer.erofs`: recorded by commit, or by the differ for an
    /// active snapshot whose layer it applied.
    pub blob_size: Option<u64>,
    /// The blob's path in a layer content cache; None: `layer.erofs` in
    /// the snapshot's own directory.
    pub blob_ref: Option<PathBuf>,
    /// This layer and every ancestor are on disk (blob flushed, row
    /// committed durably); false for a layer committed without a flush and
    /// not used since.
    pub durable: bool,
}

impl SnapshotRow {
    pub fn info_ref(&self) -> InfoRef<'_> {
        InfoRef {
            kind: self.kind,
            name: &self.key,
            parent: &self.parent,
            labels: &self.labels,
            created: self.created,
            updated: self.updated,
        }
    }

    /// The snapshot and its ancestors, nearest first: the lowers of its children.
    pub fn chain(&self) -> Vec<i64> {
        std::iter::once(self.id)
            .chain(self.parent_ids.iter().copied())
            .collect()
    }

    pub fn info(&self) -> Info {
        Info {
            kind: self.kind,
            name: self.key.to_string(),
            parent: self.parent.clone(),
            labels: self.labels.to_map(),
            created: self.created,
            updated: self.updated,
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
        SnapshotRow::from_row_at(row, 0)
    }

    /// The row whose `columns!()` start at column `at`.
    fn from_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<SnapshotRow> {
        let text = |i: usize| -> rusqlite::Result<&str> {
            row.get_ref(at + i)?
                .as_str()
                .map_err(|e| corrupt(at + i, e))
        };
        Ok(SnapshotRow {
            id: row.get(at)?,
            key: text(1)?.into(),
            kind: Kind::from_i64(row.get(at + 2)?).map_err(|e| corrupt(at + 2, e))?,
            parent: text(3)?.to_string(),
            parent_ids: decode_ids(text(4)?).map_err(|e| corrupt(at + 4, e))?,
            labels: serde_json::from_str(text(5)?).map_err(|e| corrupt(at + 5, e))?,
            created: Timestamp(row.get(at + 6)?),
            updated: Timestamp(row.get(at + 7)?),
            usage: Usage {
                size: row.get(at + 8)?,
                inodes: row.get(at + 9)?,
            },
            blob_size: row.get::<_, Option<i64>>(at + 10)?.map(|v| v as u64),
            blob_ref: row.get::<_, Option<String>>(at + 11)?.map(PathBuf::from),
            durable: row.get::<_, i64>(at + 12)? != 0,
        })
    }
}

fn corrupt(col: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

/// The error of using a snapshot whose chain holds lost layer `key`.
pub(crate) fn lost_error(key: &str) -> Error {
    Error::failed_precondition(format!(
        "layer {key:?} was lost: its blob was found cut short, missing, or with blocks that \
         never reached the disk (a crash?); repair it with the layer's tar (the proxy daemon \
         does, from containerd's content store), or remove the image and pull it again"
    ))
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

/// What changed since a handle's cache was last brought up to date
/// ([`Tx::changes_since`]).
pub(crate) struct Delta {
    /// The last change.
    pub seq: i64,
    /// Changes up to this one may be missing from `removed`.
    pub floor: i64,
    pub generation: i64,
    /// Rows written since, as they are now.
    pub rows: Vec<SnapshotRow>,
    /// Keys that stopped naming a row since, oldest first.
    pub removed: Vec<String>,
}

/// A connection inside a transaction (or running one statement), with the
/// queries the snapshotter needs.
pub(crate) struct Tx<'a> {
    pub(super) tx: &'a Connection,
    /// Hashes of the keys this transaction wrote (see `ChangeCounter`).
    pub(super) changed: std::cell::RefCell<Vec<u64>>,
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
        let mut st = self.tx.prepare_cached(GET_WITH_GENERATION)?;
        st.query_row([key], |r| Ok((SnapshotRow::from_row(r)?, r.get(13)?)))
            .optional()?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))
    }

    /// Prepares (into the connection's cache) the statements of the hot
    /// read paths, without running them.
    pub fn prepare_hot(&self) -> Result<()> {
        self.tx.prepare_cached(GET_WITH_GENERATION)?;
        Ok(())
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
        let mut st = self.tx.prepare_cached(
            "SELECT blob_size, verity_digest, blob_ref FROM snapshots WHERE id = ?1",
        )?;
        ids.iter()
            .map(|id| {
                let rec = st
                    .query_row([id], |r| {
                        let size: Option<i64> = r.get(0)?;
                        let digest: Option<Vec<u8>> = r.get(1)?;
                        let path: Option<String> = r.get(2)?;
                        Ok(size.map(|s| BlobRecord {
                            size: s as u64,
                            verity_digest: digest,
                            path: path.map(PathBuf::from),
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
        let parent_ids: Vec<i64> = parent.map(SnapshotRow::chain).unwrap_or_default();
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "INSERT INTO snapshots (key, kind, parent_id, parent, parent_ids, labels, created, updated, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        )?;
        st.execute(params![
            key,
            kind as i64,
            parent.map(|p| p.id),
            parent.map(|p| &*p.key).unwrap_or(""),
            encode_ids(&parent_ids),
            labels,
            now.0,
            seq,
        ])?;
        self.touch(Some(key));
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
            .prepare_cached("DELETE FROM snapshots WHERE id = ?1 RETURNING key")?;
        let key: Option<String> = st.query_row([id], |r| r.get(0)).optional()?;
        if let Some(key) = key {
            self.record_removed(&key)?;
        }
        Ok(())
    }

    /// The next change number (see `seq_schema`).
    fn next_seq(&self) -> Result<i64> {
        let mut st = self.tx.prepare_cached(
            "UPDATE state SET value = value + 1 WHERE name = 'seq' RETURNING value",
        )?;
        Ok(st.query_row([], |r| r.get(0))?)
    }

    /// Records that `key` no longer names the row it named.
    fn record_removed(&self, key: &str) -> Result<()> {
        self.touch(Some(key));
        let seq = self.next_seq()?;
        let mut st = self
            .tx
            .prepare_cached("INSERT INTO removed (seq, key) VALUES (?1, ?2)")?;
        st.execute(params![seq, key])?;
        // Now and then, forget the oldest: a handle that far behind reloads.
        if seq % 1024 == 0 && seq > REMOVED_KEPT {
            let floor = seq - REMOVED_KEPT;
            self.tx
                .execute("DELETE FROM removed WHERE seq <= ?1", [floor])?;
            self.tx.execute(
                "UPDATE state SET value = max(value, ?1) WHERE name = 'removed_floor'",
                [floor],
            )?;
        }
        Ok(())
    }

    /// What changed since change `since`, and where the database stands:
    /// one statement (so one consistent read, with no transaction to open),
    /// its first column telling a row (0) from a removed key (1) and the
    /// positions (2).
    pub fn changes_since(&self, since: i64) -> Result<Delta> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT 0, ",
            columns!(),
            " FROM snapshots WHERE seq > ?1
             UNION ALL SELECT 1, NULL, key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                 FROM removed WHERE seq > ?1
             UNION ALL SELECT 2, (SELECT value FROM state WHERE name = 'seq'),
                 (SELECT value FROM state WHERE name = 'removed_floor'),
                 (SELECT value FROM state WHERE name = 'mount_generation'),
                 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        ))?;
        let mut delta = Delta {
            seq: 0,
            floor: 0,
            generation: 0,
            rows: Vec::new(),
            removed: Vec::new(),
        };
        let mut rows = st.query([since])?;
        while let Some(r) = rows.next()? {
            match r.get::<_, i64>(0)? {
                0 => delta.rows.push(SnapshotRow::from_row_at(r, 1)?),
                1 => delta.removed.push(r.get(2)?),
                _ => {
                    delta.seq = r.get(1)?;
                    delta.floor = r.get(2)?;
                    delta.generation = r.get(3)?;
                }
            }
        }
        Ok(delta)
    }

    /// The last change, the oldest one `removed` still holds, and the
    /// mount generation.
    pub fn positions(&self) -> Result<(i64, i64, i64)> {
        let mut st = self.tx.prepare_cached(
            "SELECT (SELECT value FROM state WHERE name = 'seq'),
                    (SELECT value FROM state WHERE name = 'removed_floor'),
                    (SELECT value FROM state WHERE name = 'mount_generation')",
        )?;
        Ok(st.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
    }

    /// Turns active snapshot `id` into committed snapshot `name`, keeping its id
    /// (and so its directory), as containerd's storage does; `rebase` gives a
    /// snapshot created without a parent the parent `rebase`.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        id: i64,
        name: &str,
        rebase: Option<&SnapshotRow>,
        labels: &Labels,
        now: Timestamp,
        usage: Usage,
        blob: &BlobRecord,
        durable: bool,
    ) -> Result<()> {
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let old: String = self
            .tx
            .prepare_cached("SELECT key FROM snapshots WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        self.record_removed(&old)?;
        self.touch(Some(name));
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET key = ?2, kind = ?3, labels = ?4, created = ?5, updated = ?5,
                 size = ?6, inodes = ?7, blob_size = ?8, verity_digest = ?9, seq = ?10,
                 durable = ?11
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
            seq,
            durable,
        ])?;
        if let Some(p) = rebase {
            let mut st = self.tx.prepare_cached(
                "UPDATE snapshots SET parent_id = ?2, parent = ?3, parent_ids = ?4 WHERE id = ?1",
            )?;
            st.execute(params![id, p.id, &*p.key, encode_ids(&p.chain())])?;
        }
        Ok(())
    }

    /// Records that active snapshot `id` is served by `blob`, a layer
    /// content cache's file, which its commit uses as is.
    pub fn record_cached(&self, id: i64, blob: &BlobRecord) -> Result<()> {
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET blob_size = ?2, verity_digest = ?3, blob_ref = ?4, seq = ?5
             WHERE id = ?1 RETURNING key",
        )?;
        let path = blob.path.as_ref().map(|p| p.to_string_lossy().into_owned());
        let seq = self.next_seq()?;
        let key: String = st.query_row(
            params![id, blob.size as i64, blob.verity_digest, path, seq],
            |r| r.get(0),
        )?;
        self.touch(Some(&key));
        Ok(())
    }

    /// Of snapshots `ids`, those not known to be durable, with whether each
    /// has a blob of its own (not a layer content cache's file).
    pub fn not_durable(&self, ids: &[i64]) -> Result<Vec<(i64, bool)>> {
        let mut st = self.tx.prepare_cached(
            "SELECT durable, blob_ref IS NULL, lost, key FROM snapshots WHERE id = ?1",
        )?;
        let mut out = Vec::new();
        for id in ids {
            let row: Option<(bool, bool, bool, String)> = st
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, i64>(0)? != 0,
                        r.get(1)?,
                        r.get::<_, i64>(2)? != 0,
                        r.get(3)?,
                    ))
                })
                .optional()?;
            match row {
                Some((_, _, true, key)) => return Err(lost_error(&key)),
                Some((false, own, false, _)) => out.push((*id, own)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Committed snapshots whose blob is to be checked, with what their
    /// commit recorded: every one (`all`), or only those not yet known to
    /// be on disk (the only ones a power cut can take). Lost ones are left
    /// out (they are lost already).
    pub fn blobs_to_check(&self, all: bool) -> Result<Vec<BlobCheck>> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            blob_check_columns!(),
            " FROM snapshots WHERE kind = 3 AND lost = 0 AND blob_size IS NOT NULL \
             AND (?1 OR durable = 0)"
        ))?;
        let rows = st.query_map([all], BlobCheck::from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Committed snapshot `id` as [`Tx::blobs_to_check`] gives it, if it
    /// still is one to check.
    pub fn blob_to_check(&self, id: i64) -> Result<Option<BlobCheck>> {
        let mut st = self.tx.prepare_cached(concat!(
            "SELECT ",
            blob_check_columns!(),
            " FROM snapshots WHERE id = ?1 AND kind = 3 AND lost = 0 AND blob_size IS NOT NULL"
        ))?;
        Ok(st.query_row([id], BlobCheck::from_row).optional()?)
    }

    /// Records that the blob of committed snapshot `id` is lost: it is not
    /// durable, nor is any snapshot above it, until it is repaired.
    pub fn mark_lost(&self, id: i64) -> Result<()> {
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET lost = (id = ?1), durable = 0, seq = ?2 \
             WHERE id = ?1 OR instr(' ' || parent_ids || ' ', ' ' || ?1 || ' ') > 0 \
             RETURNING key",
        )?;
        let keys = st.query_map(params![id, seq], |r| r.get::<_, String>(0))?;
        for key in keys {
            self.touch(Some(&key?));
        }
        Ok(())
    }

    /// The keys of every lost layer, in key order.
    pub fn lost(&self) -> Result<Vec<String>> {
        let mut st = self
            .tx
            .prepare_cached("SELECT key FROM snapshots WHERE lost = 1 ORDER BY key")?;
        let keys = st.query_map([], |r| r.get(0))?;
        Ok(keys.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records the blob a repair put in place of lost snapshot `id`'s: found
    /// again, and (like any new blob) not yet durable.
    pub fn record_repaired(&self, id: i64, blob: &BlobRecord, usage: Usage) -> Result<()> {
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET lost = 0, durable = 0, blob_size = ?2, verity_digest = ?3, \
             blob_ref = NULL, size = ?4, inodes = ?5, seq = ?6 WHERE id = ?1 RETURNING key",
        )?;
        let key: String = st.query_row(
            params![
                id,
                blob.size as i64,
                blob.verity_digest,
                usage.size,
                usage.inodes,
                seq
            ],
            |r| r.get(0),
        )?;
        self.touch(Some(&key));
        Ok(())
    }

    /// Records that snapshots `ids` (each with every one below) are durable.
    pub fn mark_durable(&self, ids: &[i64]) -> Result<()> {
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET durable = 1, seq = ?2 WHERE id = ?1 RETURNING key",
        )?;
        for id in ids {
            let key: Option<String> = st.query_row(params![id, seq], |r| r.get(0)).optional()?;
            self.touch(key.as_deref());
        }
        Ok(())
    }

    /// Records the blob the differ wrote for active snapshot `id`.
    pub fn record_applied(&self, id: i64, blob_size: u64) -> Result<()> {
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET blob_size = ?2, seq = ?3 WHERE id = ?1 RETURNING key",
        )?;
        let key: String = st.query_row(params![id, blob_size as i64, seq], |r| r.get(0))?;
        self.touch(Some(&key));
        Ok(())
    }

    pub fn update_labels(&self, id: i64, labels: &Labels, now: Timestamp) -> Result<()> {
        let labels = serde_json::to_string(labels)
            .map_err(|e| Error::internal(format!("encode labels: {e}")))?;
        let seq = self.next_seq()?;
        let mut st = self.tx.prepare_cached(
            "UPDATE snapshots SET labels = ?2, updated = ?3, seq = ?4 WHERE id = ?1 RETURNING key",
        )?;
        let key: String = st.query_row(params![id, labels, now.0, seq], |r| r.get(0))?;
        self.touch(Some(&key));
        Ok(())
    }

    /// Every snapshot, in no particular order: the table read straight
    /// through (by key, each row would be a lookup from the key's index;
    /// the cache orders the rows itself).
    /// Every row, each made into `T` as it is read (a walk of 100,000 rows
    /// moves no 200-byte row twice).
    pub fn all<T>(&self, mut make: impl FnMut(SnapshotRow) -> T) -> Result<Vec<T>> {
        let mut st = self
            .tx
            .prepare_cached(concat!("SELECT ", columns!(), " FROM snapshots"))?;
        let rows = st.query_map([], SnapshotRow::from_row)?;
        Ok(rows
            .map(|r| r.map(&mut make))
            .collect::<rusqlite::Result<Vec<_>>>()?)
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

    /// The boot (see `Snapshotter::open`) in which the layers not yet durable
    /// were last checked; None before the first check.
    pub fn checked_boot(&self) -> Result<Option<i64>> {
        let mut st = self
            .tx
            .prepare_cached("SELECT value FROM state WHERE name = 'checked_boot'")?;
        Ok(st.query_row([], |r| r.get(0)).optional()?)
    }

    pub fn set_checked_boot(&self, boot: i64) -> Result<()> {
        let mut st = self.tx.prepare_cached(
            "INSERT INTO state (name, value) VALUES ('checked_boot', ?1) \
             ON CONFLICT (name) DO UPDATE SET value = ?1",
        )?;
        st.execute([boot])?;
        Ok(())
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
        self.touch(None);
        let mut st = self.tx.prepare_cached(
            "UPDATE state SET value = value + 1 WHERE name = 'mount_generation' RETURNING value",
        )?;
        Ok(st.query_row([], |r| r.get(0))?)
    }
}

impl<'a> Tx<'a> {
    pub(super) fn new(tx: &'a Connection) -> Tx<'a> {
        Tx {
            tx,
            changed: Default::default(),
        }
    }

    /// Notes that the row of `key` (or, None, the mount generation) changed.
    fn touch(&self, key: Option<&str>) {
        self.changed
            .borrow_mut()
            .push(key.map_or(super::cache::GENERATION_CHANGED, super::cache::key_hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::MetaStore;

    #[test]
    fn id_lists_round_trip() {
        assert_eq!(encode_ids(&[]), "");
        assert_eq!(decode_ids("").unwrap(), Vec::<i64>::new());
        assert_eq!(decode_ids(&encode_ids(&[3, 2, 1])).unwrap(), vec![3, 2, 1]);
        assert!(decode_ids("1 x").is_err());
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
                    None,
                    &Labels::new(),
                    now,
                    Usage {
                        size: 4096,
                        inodes: 1,
                    },
                    &BlobRecord {
                        size: 4096,
                        verity_digest: None,
                        path: None,
                    },
                    false,
                )
            })
            .unwrap();
        let parent = store.read(|tx| tx.must_get("c")).unwrap();
        assert!(!parent.durable, "committed without a flush");
        store.write_durable(|tx| tx.mark_durable(&[a])).unwrap();
        let parent = store.read(|tx| tx.must_get("c")).unwrap();
        assert!(parent.durable);
        assert_eq!(store.read(|tx| tx.not_durable(&[a])).unwrap(), vec![]);
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
}
