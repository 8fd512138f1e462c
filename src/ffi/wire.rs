//! The JSON of snapshot infos the C ABI returns, and a per-handle cache of
//! it. The core answers in types ([`Info`]); here they become JSON.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::info::{Info, InfoRef, Labels, RowLabels, Timestamp};
use crate::metastore::Cached;
use crate::snapshotter::Walked;

/// An info as the C ABI writes it: `{"kind", "name", "parent", "labels",
/// "created", "updated", "created_ns", "updated_ns"}`. Each time is given
/// twice: in RFC 3339 in UTC with nine fraction digits (what Go's
/// `time.RFC3339Nano` reads), and as integer nanoseconds since the Unix
/// epoch, which the bindings use so that they parse no dates.
#[derive(Debug, Serialize)]
pub struct InfoJson<'a> {
    kind: &'static str,
    name: &'a str,
    parent: &'a str,
    labels: LabelsJson<'a>,
    #[serde(serialize_with = "rfc3339")]
    created: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    updated: Timestamp,
    created_ns: i64,
    updated_ns: i64,
}

impl<'a> From<&'a Info> for InfoJson<'a> {
    fn from(info: &'a Info) -> InfoJson<'a> {
        InfoJson {
            kind: info.kind.as_str(),
            name: &info.name,
            parent: &info.parent,
            labels: LabelsJson::Map(&info.labels),
            created: info.created,
            updated: info.updated,
            created_ns: info.created.0,
            updated_ns: info.updated.0,
        }
    }
}

impl<'a> From<InfoRef<'a>> for InfoJson<'a> {
    fn from(info: InfoRef<'a>) -> InfoJson<'a> {
        InfoJson {
            kind: info.kind.as_str(),
            name: info.name,
            parent: info.parent,
            labels: LabelsJson::Row(info.labels),
            created: info.created,
            updated: info.updated,
            created_ns: info.created.0,
            updated_ns: info.updated.0,
        }
    }
}

/// Labels as a JSON object, from either form.
#[derive(Debug)]
enum LabelsJson<'a> {
    Map(&'a Labels),
    Row(&'a RowLabels),
}

impl Serialize for LabelsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LabelsJson::Map(m) => m.serialize(s),
            LabelsJson::Row(r) => r.serialize(s),
        }
    }
}

fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

/// `value` as JSON; our shapes always encode (maps have string keys).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("encode JSON: {e}")))
}

/// The JSON of one info.
pub(crate) fn info(info: &Info) -> Result<String> {
    encode(&InfoJson::from(info))
}

/// The JSON array of infos.
pub(crate) fn infos(infos: &[Arc<Cached>]) -> Result<String> {
    // One buffer, one info after the other: no vector of all of them.
    let mut out = Vec::with_capacity(infos.len() * 320 + 2);
    out.push(b'[');
    for (i, c) in infos.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &InfoJson::from(c.row.info_ref()))
            .map_err(|e| Error::internal(format!("encode JSON: {e}")))?;
    }
    out.push(b']');
    String::from_utf8(out).map_err(|e| Error::internal(format!("encode JSON: {e}")))
}

/// Distinct keys whose info JSON a handle keeps at most; past that it starts
/// over.
const MAX_INFOS: usize = 16 * 1024;

/// Distinct walk filter lists whose JSON a handle keeps at most.
const MAX_WALKS: usize = 16;

/// The JSON last made for what the core returned, per handle. `stat` and
/// `walk` run on every container start, and the core serves them from its
/// read cache, handing out the same `Arc` for as long as the value is
/// unchanged (and a new one once any process may have changed it). An entry
/// here is served only while the core returns the very `Arc` it was made
/// from, so it is never stale. It holds a `Weak` of that `Arc`: the
/// allocation, and so its address, cannot be reused while the entry exists;
/// and once the core has let go of the value (its cache starts over after
/// any write) the entry is dead and swept, so that this cache holds about
/// what the core's holds.
#[derive(Default)]
pub(crate) struct JsonCache {
    infos: Mutex<Table<String, Info>>,
    walks: Mutex<Table<Vec<String>, [Arc<Cached>]>>,
}

struct Table<K, T: ?Sized> {
    entries: HashMap<K, Made<T>>,
    /// The size at which dead entries are swept next.
    sweep_at: usize,
}

impl<K, T: ?Sized> Default for Table<K, T> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
            sweep_at: 0,
        }
    }
}

struct Made<T: ?Sized> {
    from: Weak<T>,
    json: Arc<str>,
}

impl JsonCache {
    /// The JSON of `value`, the info of `key` the core returned.
    pub fn info(&self, key: &str, value: Arc<Info>) -> Result<Arc<str>> {
        cached(&self.infos, key, value, MAX_INFOS, info)
    }

    /// The JSON of `value`, what the core's walk returned for `filters`.
    pub fn infos(&self, filters: &[String], value: &Walked) -> Result<Arc<str>> {
        cached(&self.walks, filters, value.0.clone(), MAX_WALKS, infos)
    }
}

fn cached<K, Q, T>(
    table: &Mutex<Table<K, T>>,
    key: &Q,
    value: Arc<T>,
    max: usize,
    make: impl FnOnce(&T) -> Result<String>,
) -> Result<Arc<str>>
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
    T: ?Sized,
{
    {
        let t = table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(made) = t.entries.get(key) {
            if std::ptr::addr_eq(made.from.as_ptr(), Arc::as_ptr(&value)) {
                return Ok(made.json.clone());
            }
        }
    }
    // Made outside the lock: a walk of many snapshots takes a while.
    let json: Arc<str> = make(&value)?.into();
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if t.entries.len() >= t.sweep_at {
        t.entries.retain(|_, made| made.from.strong_count() > 0);
        if t.entries.len() >= max {
            t.entries.clear();
        }
        t.sweep_at = (2 * t.entries.len()).clamp(8, max);
    }
    t.entries.insert(
        key.to_owned(),
        Made {
            from: Arc::downgrade(&value),
            json: json.clone(),
        },
    );
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::Kind;

    fn sample() -> Info {
        Info {
            kind: Kind::Committed,
            name: "n".into(),
            parent: String::new(),
            labels: [("a".to_string(), "b".to_string())].into(),
            created: Timestamp(0),
            updated: Timestamp(1_700_000_000_123_456_789),
        }
    }

    /// `sample()` as the metadata store keeps it.
    fn sample_row() -> Arc<Cached> {
        let i = sample();
        Cached::new(crate::metastore::SnapshotRow {
            id: 1,
            key: i.name.as_str().into(),
            kind: i.kind,
            parent: i.parent.clone(),
            parent_ids: Vec::new(),
            labels: RowLabels::from(&i.labels),
            created: i.created,
            updated: i.updated,
            usage: crate::info::Usage::default(),
            blob_size: None,
            blob_ref: None,
        })
    }

    #[test]
    fn info_json_shape() {
        assert_eq!(
            info(&sample()).unwrap(),
            r#"{"kind":"committed","name":"n","parent":"","labels":{"a":"b"},"created":"1970-01-01T00:00:00.000000000Z","updated":"2023-11-14T22:13:20.123456789Z","created_ns":0,"updated_ns":1700000000123456789}"#
        );
        assert_eq!(infos(&[]).unwrap(), "[]");
        // A walk's infos are written from the rows kept, exactly as a stat's.
        assert_eq!(
            infos(&[sample_row(), sample_row()]).unwrap(),
            format!("[{0},{0}]", info(&sample()).unwrap())
        );
    }

    #[test]
    fn cache_serves_only_the_value_it_was_made_from() {
        let cache = JsonCache::default();
        let a = Arc::new(sample());
        let first = cache.info("n", a.clone()).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.info("n", a.clone()).unwrap()));
        // An equal value in a new Arc (the core read it again): made again.
        let mut changed = sample();
        changed.labels.clear();
        let b = Arc::new(changed);
        let second = cache.info("n", b.clone()).unwrap();
        assert!(!second.contains("\"a\":\"b\""), "{second}");
        assert!(Arc::ptr_eq(&second, &cache.info("n", b.clone()).unwrap()));

        // Entries whose value the core let go of are swept.
        let dropped: Vec<Arc<Info>> = (0..100).map(|_| Arc::new(sample())).collect();
        for (i, v) in dropped.iter().enumerate() {
            cache.info(&format!("k{i}"), v.clone()).unwrap();
        }
        drop(dropped);
        for i in 0..100 {
            cache.info(&format!("t{i}"), Arc::new(sample())).unwrap();
        }
        let left = cache.infos.lock().unwrap().entries.len();
        assert!(
            left < 100,
            "{left} entries after 201 made, 200 of them dead"
        );
        assert!(Arc::ptr_eq(&second, &cache.info("n", b).unwrap()));

        let all = Walked(vec![sample_row(), sample_row()].into());
        let filters = vec!["kind==committed".to_string()];
        let walked = cache.infos(&filters, &all).unwrap();
        assert!(Arc::ptr_eq(&walked, &cache.infos(&filters, &all).unwrap()));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&walked)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
