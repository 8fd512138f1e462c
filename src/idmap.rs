//! ID-mapped layers for containers in user namespaces (containerd's
//! `remap-ids`): the mapping labels, and whether this kernel can mount
//! EROFS layers and overlayfs through ID-mapped mounts.
//!
//! A snapshot labelled with containerd's mappings gets an upper dir owned
//! by the mapped root, and mounts whose options carry `uidmap=` and
//! `gidmap=` (containerd's spelling): containerd's mount code (and
//! [`crate::mounts::mount_all`]) mounts each lower dir through an ID-mapped
//! copy, so the container sees the layers' files owned by its own IDs and
//! nothing is chowned.

use crate::error::{Error, Result};
use crate::sys;

/// containerd's `snapshots.LabelSnapshotUIDMapping`.
pub const LABEL_UIDMAPPING: &str = "containerd.io/snapshot/uidmapping";
/// containerd's `snapshots.LabelSnapshotGIDMapping`.
pub const LABEL_GIDMAPPING: &str = "containerd.io/snapshot/gidmapping";

/// Extents the kernel takes in one map (`/proc/PID/uid_map`).
const MAX_EXTENTS: usize = 340;

/// One extent: `count` IDs from `inside` (in the container) are `outside`
/// (on the host) onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A list of extents as containerd writes it: `inside:outside:count`,
/// comma-separated (`0:100000:65536`). Each number is decimal, below
/// 2^32 - 1 (containerd's invalid ID), the count at least 1, and no range
/// runs past 2^32; `what` names the input in the error.
pub fn parse_extents(what: &str, text: &str) -> Result<Vec<Extent>> {
    let bad = |why: String| Error::invalid_argument(format!("{what} {text:?}: {why}"));
    if text.is_empty() {
        return Err(bad("empty; expected inside:outside:count[,...]".into()));
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let nums: Vec<&str> = part.split(':').collect();
        if nums.len() != 3 {
            return Err(bad(format!(
                "{part:?} is not inside:outside:count (three numbers)"
            )));
        }
        let mut v = [0u32; 3];
        for (slot, n) in v.iter_mut().zip(&nums) {
            *slot = match n.parse::<u32>() {
                Ok(x) if n.bytes().all(|b| b.is_ascii_digit()) && x != u32::MAX => x,
                _ => {
                    return Err(bad(format!(
                        "{n:?} in {part:?} is not an ID (a decimal number below 4294967295)"
                    )))
                }
            };
        }
        let e = Extent {
            inside: v[0],
            outside: v[1],
            count: v[2],
        };
        if e.count == 0 {
            return Err(bad(format!("{part:?} maps no IDs (count 0)")));
        }
        if e.inside.checked_add(e.count).is_none() || e.outside.checked_add(e.count).is_none() {
            return Err(bad(format!("{part:?} runs past the largest ID")));
        }
        out.push(e);
    }
    if out.len() > MAX_EXTENTS {
        return Err(bad(format!(
            "{} extents; the kernel takes at most {MAX_EXTENTS}",
            out.len()
        )));
    }
    // The kernel refuses overlapping extents, on either side.
    for (i, a) in out.iter().enumerate() {
        for b in &out[..i] {
            let overlap = |x: u32, y: u32| {
                u64::from(x) < u64::from(y) + u64::from(b.count)
                    && u64::from(y) < u64::from(x) + u64::from(a.count)
            };
            if overlap(a.inside, b.inside) || overlap(a.outside, b.outside) {
                return Err(bad(format!(
                    "{}:{}:{} overlaps {}:{}:{}",
                    a.inside, a.outside, a.count, b.inside, b.outside, b.count
                )));
            }
        }
    }
    // Nor does it take a map longer than a page in its one write.
    if proc_map(&out).len() >= 4096 {
        return Err(bad(
            "longer than the kernel takes (4095 bytes written as a map)".into(),
        ));
    }
    Ok(out)
}

/// The host ID of `id` in the container, as containerd's `toHost`.
fn to_host(id: u32, extents: &[Extent]) -> Option<u32> {
    extents
        .iter()
        .find(|e| id >= e.inside && id - e.inside < e.count)
        .map(|e| e.outside + (id - e.inside))
}

/// The mappings a snapshot's labels ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    /// The labels' texts, passed on as the mounts' `uidmap=`/`gidmap=`.
    pub uid_text: Option<String>,
    pub gid_text: Option<String>,
    uid: Vec<Extent>,
    gid: Vec<Extent>,
}

impl IdMap {
    /// The mappings the two labels' values ask for (None: that label is
    /// not there); None when neither is. A malformed label is
    /// invalid-argument, naming it.
    pub fn from_values(uid: Option<&str>, gid: Option<&str>) -> Result<Option<IdMap>> {
        let uid_text = uid.map(str::to_string);
        let gid_text = gid.map(str::to_string);
        match (&uid_text, &gid_text) {
            (None, None) => return Ok(None),
            // An ID-mapped mount maps both (containerd's mount code and
            // mount_all make none with one): half a mapping is refused.
            (Some(_), None) | (None, Some(_)) => {
                let (have, missing) = if uid_text.is_some() {
                    (LABEL_UIDMAPPING, LABEL_GIDMAPPING)
                } else {
                    (LABEL_GIDMAPPING, LABEL_UIDMAPPING)
                };
                return Err(Error::invalid_argument(format!(
                    "label {have:?} without label {missing:?}: ID-mapped layers need both"
                )));
            }
            _ => {}
        }
        let parse = |label: &str, t: &Option<String>| match t {
            Some(t) => parse_extents(&format!("label {label:?}"), t),
            None => Ok(Vec::new()),
        };
        Ok(Some(IdMap {
            uid: parse(LABEL_UIDMAPPING, &uid_text)?,
            gid: parse(LABEL_GIDMAPPING, &gid_text)?,
            uid_text,
            gid_text,
        }))
    }

    /// The host IDs of the container's root, which own a new upper dir (as
    /// containerd's `IDMap.RootPair`; a missing map is the identity).
    pub fn root_pair(&self) -> Result<(u32, u32)> {
        let host = |label: &str, extents: &[Extent]| {
            if extents.is_empty() {
                return Ok(0);
            }
            to_host(0, extents).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "label {label:?} maps no host ID to the container's root (ID 0)"
                ))
            })
        };
        Ok((
            host(LABEL_UIDMAPPING, &self.uid)?,
            host(LABEL_GIDMAPPING, &self.gid)?,
        ))
    }

    /// The mount options saying it (containerd's spelling), each for a
    /// label that is there.
    pub fn mount_options(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.uid_text {
            out.push(format!("uidmap={t}"));
        }
        if let Some(t) = &self.gid_text {
            out.push(format!("gidmap={t}"));
        }
        out
    }
}

/// The text of a `/proc/PID/uid_map` for `extents`.
fn proc_map(extents: &[Extent]) -> String {
    extents
        .iter()
        .map(|e| format!("{} {} {}\n", e.inside, e.outside, e.count))
        .collect()
}

/// A user namespace with the mappings of mount options `uidmap` and
/// `gidmap` (see [`IdMap::mount_options`]), for ID-mapped mounts.
pub(crate) fn user_namespace(uidmap: &str, gidmap: &str) -> Result<std::os::fd::OwnedFd> {
    let uid = parse_extents("mount option uidmap", uidmap)?;
    let gid = parse_extents("mount option gidmap", gidmap)?;
    sys::process::user_namespace(&proc_map(&uid), &proc_map(&gid)).map_err(|e| {
        Error::new(
            unavailable_or_internal(&e),
            format!("make a user namespace for uidmap={uidmap} gidmap={gidmap}: {e}"),
        )
    })
}

fn unavailable_or_internal(e: &std::io::Error) -> crate::ErrorKind {
    match sys::errno(e) {
        Some(sys::Errno::PERM | sys::Errno::ACCESS | sys::Errno::NOSYS | sys::Errno::INVAL) => {
            crate::ErrorKind::Unavailable
        }
        _ => crate::ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_parse_as_containerd_writes_them() {
        assert_eq!(
            parse_extents("m", "0:100000:65536,65536:200000:1").unwrap(),
            vec![
                Extent {
                    inside: 0,
                    outside: 100000,
                    count: 65536
                },
                Extent {
                    inside: 65536,
                    outside: 200000,
                    count: 1
                }
            ]
        );
        for bad in [
            "",
            "0:1",
            "0:1:2:3",
            "a:1:1",
            "-1:0:1",
            "+1:0:1",
            " 0:1:1",
            "0:1:0",
            "0:4294967295:1",
            "0:4294967290:10",
            "0:1:1,",
            "99999999999:0:1",
        ] {
            let e = parse_extents("label \"x\"", bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("label \"x\""), "{e}");
        }
        let many = vec!["0:0:1"; MAX_EXTENTS + 1].join(",");
        assert!(parse_extents("m", &many).is_err());
        // Overlaps on either side, which the kernel refuses.
        for bad in ["0:100:10,5:200:10", "0:100:10,20:105:10"] {
            let e = parse_extents("m", bad).unwrap_err();
            assert!(e.message().contains("overlaps"), "{e}");
        }
        assert!(parse_extents("m", "0:100:10,10:200:10").is_ok());
        // 340 extents of large IDs: more than a page written as a map.
        let long: Vec<String> = (0..340)
            .map(|i| format!("{}:{}:1", 4_000_000_000u32 + i, 4_100_000_000u32 + i))
            .collect();
        let e = parse_extents("m", &long.join(",")).unwrap_err();
        assert!(e.message().contains("4095"), "{e}");
    }

    #[test]
    fn the_root_pair_is_the_host_ids_of_the_containers_root() {
        let m = IdMap::from_values(Some("1:5000:10,0:100000:1"), Some("0:200000:65536"))
            .unwrap()
            .unwrap();
        assert_eq!(m.root_pair().unwrap(), (100000, 200000));
        assert_eq!(
            m.mount_options(),
            ["uidmap=1:5000:10,0:100000:1", "gidmap=0:200000:65536"]
        );
        // One label alone: half a mapping, refused naming both.
        for (u, g) in [(Some("0:7:1"), None), (None, Some("0:7:1"))] {
            let e = IdMap::from_values(u, g).unwrap_err();
            assert!(
                e.message().contains(LABEL_UIDMAPPING) && e.message().contains(LABEL_GIDMAPPING),
                "{e}"
            );
        }
        // No mapping of the root.
        let m = IdMap::from_values(Some("1:7:1"), Some("0:7:1"))
            .unwrap()
            .unwrap();
        let e = m.root_pair().unwrap_err();
        assert!(e.message().contains(LABEL_UIDMAPPING), "{e}");
        assert_eq!(IdMap::from_values(None, None).unwrap(), None);
        let e = IdMap::from_values(Some("0:1:1"), Some("0:1")).unwrap_err();
        assert!(e.message().contains(LABEL_GIDMAPPING), "{e}");
    }
}
