//! What the snapshotter says about a snapshot: its kind, its [`Info`] and
//! [`Usage`], labels and containerd's rules for them, and timestamps.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Labels of a snapshot, ordered by key.
pub type Labels = BTreeMap<String, String>;

/// Labels as the metadata store keeps them in memory: sorted pairs packed
/// in one string, so a row's labels take two allocations whatever their
/// number (a [`Labels`] map allocates an eleven-entry node for one label and
/// two strings per label), and a handle can keep every snapshot of a large
/// host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowLabels {
    /// Key, value, key, value... one after the other, keys in order.
    text: Box<str>,
    /// Where each key and each value ends in `text`.
    ends: Box<[u32]>,
}

impl RowLabels {
    fn from_sorted<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> RowLabels {
        // Sized once: no reallocation, no shrinking copy.
        let (len, n) = pairs
            .clone()
            .fold((0, 0), |(len, n), (k, v)| (len + k.len() + v.len(), n + 2));
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(n);
        for (k, v) in pairs {
            text.push_str(k);
            ends.push(text.len() as u32);
            text.push_str(v);
            ends.push(text.len() as u32);
        }
        RowLabels {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Label `i` in key order.
    fn pair(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[2 * i - 1] as usize
        };
        let mid = self.ends[2 * i] as usize;
        let end = self.ends[2 * i + 1] as usize;
        (&self.text[start..mid], &self.text[mid..end])
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, v) = self.pair(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.len()).map(|i| self.pair(i))
    }

    pub fn to_map(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl From<&Labels> for RowLabels {
    fn from(labels: &Labels) -> RowLabels {
        RowLabels::from_sorted(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl Serialize for RowLabels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A JSON object of labels read straight into the packed form (a key given
/// twice keeps its last value, as a map would).
impl<'de> Deserialize<'de> for RowLabels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RowLabels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of string labels")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RowLabels, A::Error> {
                let mut pairs: Vec<(std::borrow::Cow<'de, str>, std::borrow::Cow<'de, str>)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(pair) = map.next_entry::<BorrowedOrOwned, BorrowedOrOwned>()? {
                    pairs.push((pair.0 .0, pair.1 .0));
                }
                // What this library wrote is in order already (a map's
                // order); anything else is sorted, stably: among equal keys
                // the last one given stays last, and is the one kept.
                if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                    let mut i = 0;
                    while i + 1 < pairs.len() {
                        if pairs[i].0 == pairs[i + 1].0 {
                            pairs.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                }
                Ok(RowLabels::from_sorted(
                    pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
                ))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A string borrowed from the input when it has no escapes.
struct BorrowedOrOwned<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowedOrOwned<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BorrowedOrOwned<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedOrOwned(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedOrOwned(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedOrOwned(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// containerd's limit on a label: key and value together.
pub const MAX_LABEL_SIZE: usize = 4096;

/// The kind of a snapshot. The numbers are containerd's `snapshots.Kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    View = 1,
    Active = 2,
    Committed = 3,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    pub(crate) fn from_i64(v: i64) -> Result<Kind> {
        match v {
            1 => Ok(Kind::View),
            2 => Ok(Kind::Active),
            3 => Ok(Kind::Committed),
            _ => Err(Error::internal(format!(
                "metadata database: unknown snapshot kind {v}"
            ))),
        }
    }
}

/// A point in time, nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// `2006-01-02T15:04:05.999999999Z`, always nine fraction digits.
    pub fn to_rfc3339(self) -> String {
        let mut out = Vec::with_capacity(30);
        self.write_rfc3339(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// [`Timestamp::to_rfc3339`] appended to `out`, with no allocation in
    /// the usual case (a year of four digits).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as u64;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u64;
        let (y, m, d) = civil_from_days(days);
        // Written digit by digit: this runs for every Info a caller reads.
        let mut b = *b"0000-00-00T00:00:00.000000000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        if !(0..=9999).contains(&y) {
            let text = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
                sod / 3600,
                (sod / 60) % 60,
                sod % 60
            );
            out.extend_from_slice(text.as_bytes());
            return;
        }
        put(0, 4, y as u64);
        put(5, 2, u64::from(m));
        put(8, 2, u64::from(d));
        put(11, 2, sod / 3600);
        put(14, 2, (sod / 60) % 60);
        put(17, 2, sod % 60);
        put(20, 9, nanos);
        out.extend_from_slice(&b);
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Information about a snapshot, as containerd's `snapshots.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub kind: Kind,
    pub name: String,
    pub parent: String,
    pub labels: Labels,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// An [`Info`] borrowed from where the snapshotter keeps it (a walk's
/// result), labels in their compact form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRef<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub parent: &'a str,
    pub labels: &'a RowLabels,
    pub created: Timestamp,
    pub updated: Timestamp,
}

impl InfoRef<'_> {
    pub fn to_info(&self) -> Info {
        Info {
            kind: self.kind,
            name: self.name.to_string(),
            parent: self.parent.to_string(),
            labels: self.labels.to_map(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// Resources a snapshot takes by itself, as containerd's `snapshots.Usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// The part of an [`Info`] that `update` reads: the name and the labels.
/// Other fields of the JSON are accepted and ignored, as containerd ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InfoUpdate {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

/// Checks containerd's label rules: non-empty keys, key and value together at
/// most [`MAX_LABEL_SIZE`] bytes.
pub fn validate_labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::invalid_argument("label key must not be empty"));
        }
        let total = k.len() + v.len();
        if total > MAX_LABEL_SIZE {
            let shown: String = k.chars().take(64).collect();
            return Err(Error::invalid_argument(format!(
                "label key and value length ({total} bytes) greater than maximum size \
                 ({MAX_LABEL_SIZE} bytes), key: {shown}"
            )));
        }
    }
    // containerd's ID-mapping labels are read at every mount: a malformed
    // one is refused when it is set.
    crate::idmap::IdMap::from_values(
        labels
            .get(crate::idmap::LABEL_UIDMAPPING)
            .map(String::as_str),
        labels
            .get(crate::idmap::LABEL_GIDMAPPING)
            .map(String::as_str),
    )?;
    Ok(())
}

/// Applies an update's labels to `current` following containerd's field-path
/// rules: no paths replaces all labels; `labels` replaces all labels;
/// `labels.<key>` sets (or, when absent from the update, removes) one label.
/// Any other path names a field that cannot be updated.
pub fn apply_label_update(
    name: &str,
    current: &Labels,
    update: &Labels,
    fieldpaths: &[String],
) -> Result<Labels> {
    if fieldpaths.is_empty() {
        return Ok(update.clone());
    }
    let mut labels = current.clone();
    for path in fieldpaths {
        if let Some(key) = path.strip_prefix("labels.") {
            match update.get(key) {
                Some(v) => labels.insert(key.to_string(), v.clone()),
                None => labels.remove(key),
            };
        } else if path == "labels" {
            labels = update.clone();
        } else {
            return Err(Error::invalid_argument(format!(
                "cannot update {path:?} field on snapshot {name:?}"
            )));
        }
    }
    Ok(labels)
}

/// What a commit recorded about `layer.erofs`, checked before it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    pub size: u64,
    pub verity_digest: Option<Vec<u8>>,
    /// Where the blob is when it is not the snapshot's own `layer.erofs`:
    /// a layer content cache's file.
    pub path: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_labels_read_and_write_like_a_map() {
        let json = r#"{"b":"2","a":"1","c\"q":"x\u00e9","a":"last","":""}"#;
        let row: RowLabels = serde_json::from_str(json).unwrap();
        let map: Labels = serde_json::from_str(json).unwrap();
        assert_eq!(row.to_map(), map);
        assert_eq!(row.len(), 4);
        assert_eq!(row.get("a"), Some("last"));
        assert_eq!(row.get("c\"q"), Some("xé"));
        assert_eq!(row.get(""), Some(""));
        assert_eq!(row.get("z"), None);
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(RowLabels::from(&map), row);
        let empty: RowLabels = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty() && empty.get("a").is_none());
        assert!(serde_json::from_str::<RowLabels>(r#"{"a":1}"#).is_err());
    }

    use crate::error::ErrorKind;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc3339_nanos() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            Timestamp(1_700_000_000_123_456_789).to_rfc3339(),
            "2023-11-14T22:13:20.123456789Z"
        );
        // A leap day and a date before the epoch.
        assert_eq!(
            Timestamp(951_782_400_000_000_001).to_rfc3339(),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn label_size_limit() {
        let k = "k".repeat(10);
        assert!(validate_labels(&labels(&[(&k, &"v".repeat(MAX_LABEL_SIZE - 10))])).is_ok());
        let e = validate_labels(&labels(&[(&k, &"v".repeat(MAX_LABEL_SIZE - 9))])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("4097 bytes"), "{}", e.message());
        assert!(validate_labels(&labels(&[("", "v")])).is_err());
    }

    #[test]
    fn field_paths_follow_containerd() {
        let cur = labels(&[("l1", "v1"), ("l2", "v2"), ("l3", "v3")]);
        let upd = labels(&[("l1", "updated"), ("l4", "v4")]);
        let fp = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(apply_label_update("s", &cur, &upd, &[]).unwrap(), upd);
        assert_eq!(
            apply_label_update("s", &cur, &upd, &fp(&["labels.l1", "labels.l2"])).unwrap(),
            labels(&[("l1", "updated"), ("l3", "v3")])
        );
        assert_eq!(
            apply_label_update("s", &cur, &upd, &fp(&["labels"])).unwrap(),
            upd
        );
        let e = apply_label_update("s", &cur, &upd, &fp(&["parent"])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("\"parent\""));
    }
}
