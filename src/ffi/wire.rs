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
#[cfg(test)]
pub(crate) fn info(info: &Info) -> Result<String> {
    encode(&InfoJson::from(info))
}

/// The JSON array of infos.
#[cfg(test)]
pub(crate) fn infos(infos: &[Arc<Cached>]) -> Result<String> {
    infos_into(infos, String::new())
}

/// [`infos`], written into `buffer` (emptied first), whose memory is used
/// again: a walk of 100,000 snapshots writes 50 MB, and fresh pages cost
/// more to fault in than to fill.
fn infos_into(infos: &[Arc<Cached>], buffer: String) -> Result<String> {
    // One buffer, one info after the other: no vector of all of them.
    let mut out = buffer.into_bytes();
    out.clear();
    out.reserve(infos.len() * 600 + 2);
    out.push(b'[');
    for (i, c) in infos.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_info(&mut out, c.row.info_ref());
    }
    out.push(b']');
    String::from_utf8(out).map_err(|e| Error::internal(format!("encode JSON: {e}")))
}

/// The JSON of one kept row, as [`info`] writes an [`Info`].
pub(crate) fn info_ref(info: InfoRef<'_>) -> String {
    let mut out = Vec::with_capacity(360);
    write_info(&mut out, info);
    // Only strings (escaped by serde_json) and ASCII are written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`InfoJson`]'s encoding, written field by field: a walk writes one per
/// snapshot, and serde's derive allocates a string for each time (100,000
/// rows: 83 ms against 98 ms through `InfoJson`; the tests check the two
/// write the same).
fn write_info(out: &mut Vec<u8>, i: InfoRef<'_>) {
    fn string(out: &mut Vec<u8>, s: &str) {
        // Most strings (keys, digests, times) need no escape: copied as is.
        if s.bytes()
            .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
        {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
    }
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(i.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"name\":");
    string(out, i.name);
    out.extend_from_slice(b",\"parent\":");
    string(out, i.parent);
    out.extend_from_slice(b",\"labels\":{");
    for (n, (k, v)) in i.labels.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"},\"created\":\"");
    i.created.write_rfc3339(out);
    out.extend_from_slice(b"\",\"updated\":\"");
    i.updated.write_rfc3339(out);
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "\",\"created_ns\":{},\"updated_ns\":{}}}",
        i.created.0, i.updated.0
    );
}

/// Distinct walk filter lists whose JSON a handle keeps at most.
const MAX_WALKS: usize = 16;

/// The JSON last made for what a walk returned, per handle and filter list
/// (a `stat`'s JSON is kept with its row, see `Cached::text`). `walk` runs
/// in containerd's garbage collector, and the core serves it from its
/// cache, handing out the same selection for as long as nothing may have
/// changed. An entry here is served only while the core returns the very
/// `Arc` it was made from, so it is never stale. It holds a `Weak` of that
/// `Arc`: the allocation, and so its address, cannot be reused while the
/// entry exists; and once the core has let go of the value the entry is
/// dead and swept, so that this cache holds about what the core's holds.
#[derive(Default)]
pub(crate) struct JsonCache {
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
    json: Arc<String>,
}

impl JsonCache {
    /// The JSON of `value`, what the core's walk returned for `filters`.
    pub fn infos(&self, filters: &[String], value: &Walked) -> Result<Arc<String>> {
        cached(&self.walks, filters, value.0.clone(), MAX_WALKS, infos_into)
    }
}

fn cached<K, Q, T>(
    table: &Mutex<Table<K, T>>,
    key: &Q,
    value: Arc<T>,
    max: usize,
    make: impl FnOnce(&T, String) -> Result<String>,
) -> Result<Arc<String>>
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
    T: ?Sized,
{
    let old = {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        match t.entries.get(key) {
            Some(made) if std::ptr::addr_eq(made.from.as_ptr(), Arc::as_ptr(&value)) => {
                return Ok(made.json.clone());
            }
            // Stale: its buffer is written again, if no caller holds it.
            Some(_) => t.entries.remove(key),
            None => None,
        }
    };
    let buffer = old
        .and_then(|made| Arc::try_unwrap(made.json).ok())
        .unwrap_or_default();
    // Made outside the lock: a walk of many snapshots takes a while.
    let json = Arc::new(make(&value, buffer)?);
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
        // A stat's JSON, written from the kept row, is the Info's.
        assert_eq!(
            info_ref(sample_row().row.info_ref()),
            info(&sample()).unwrap()
        );
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
        // A new selection for the same filters is written into the old
        // JSON's buffer once no caller holds that: the text is the new one.
        drop(walked);
        let one = Walked(vec![sample_row()].into());
        let again = cache.infos(&filters, &one).unwrap();
        assert_eq!(*again, format!("[{}]", info(&sample()).unwrap()));
    }
}
