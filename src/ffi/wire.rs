//! The JSON of snapshot infos the C ABI returns. The core answers in types ([`Info`]); here they become JSON.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::info::{Info, InfoRef, Labels, RowLabels, Timestamp};
use crate::metastore::Cached;
use crate::snapshotter::Walked;

use super::CText;

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
    let mut out = Vec::new();
    infos_into(infos, &mut out);
    String::from_utf8(out).map_err(|e| Error::internal(format!("encode JSON: {e}")))
}

/// [`infos`], appended to `out`: one info after the other, no vector of
/// all of them.
fn infos_into(infos: &[Arc<Cached>], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, c) in infos.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_info(out, c.row.info_ref());
    }
    out.push(b']');
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
        // Checked 16 bytes at a time with no early exit, which the compiler
        // vectorizes (a walk of 100,000 snapshots checks 40 MB).
        let plain = s.as_bytes().chunks(16).all(|c| {
            c.iter().fold(true, |ok, &b| {
                ok & (b >= 0x20) & (b != b'"') & (b != b'\\') & (b != 0x7f)
            })
        });
        if plain {
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
    let start = out.len();
    i.created.write_rfc3339(out);
    let end = out.len();
    out.extend_from_slice(b"\",\"updated\":\"");
    if i.updated == i.created {
        // Usual for snapshots never updated: the same text again.
        out.extend_from_within(start..end);
    } else {
        i.updated.write_rfc3339(out);
    }
    out.extend_from_slice(b"\",\"created_ns\":");
    write_i64(out, i.created.0);
    out.extend_from_slice(b",\"updated_ns\":");
    write_i64(out, i.updated.0);
    out.push(b'}');
}

/// `v` in decimal, without going through `fmt`.
fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut u = v.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes the JSON of what the core's walk returned straight into the
/// string handed to the caller, sized from the walks before: nothing is
/// kept between walks but that size. (Keeping the last walk's JSON made a
/// repeated walk a copy, but cost about 500 bytes a snapshot for as long as
/// the handle lived; writing it again costs about what faulting in the
/// fresh pages of a copy did.)
#[derive(Default)]
pub(crate) struct WalkJson {
    /// Bytes per info of the last walk, rounded up.
    per_info: AtomicUsize,
}

impl WalkJson {
    pub fn infos(&self, value: &Walked) -> CText {
        let n = value.0.len();
        let per = self.per_info.load(Ordering::Relaxed).max(64);
        let mut text = CText::with_capacity(n * per + 2);
        infos_into(&value.0, text.bytes());
        if n > 0 {
            let len = text.bytes().len();
            self.per_info.store(len.div_ceil(n) + 8, Ordering::Relaxed);
        }
        text
    }
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
            durable: true,
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
    fn walk_json_is_written_in_place_whatever_the_size_guessed() {
        // A stat's JSON, written from the kept row, is the Info's.
        assert_eq!(
            info_ref(sample_row().row.info_ref()),
            info(&sample()).unwrap()
        );
        let w = WalkJson::default();
        let text = |mut t: CText| {
            String::from_utf8(t.bytes()[super::super::STRING_HEADER..].to_vec()).unwrap()
        };
        // No size known yet (a guess too small), then the size of two
        // infos applied to one and to many (too big, too small).
        for n in [2, 1, 300, 0, 2] {
            let rows: Vec<_> = (0..n).map(|_| sample_row()).collect();
            let walked = Walked(rows.clone().into());
            assert_eq!(text(w.infos(&walked)), infos(&rows).unwrap(), "{n} infos");
        }
    }
}
