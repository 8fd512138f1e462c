//! Reading trees back for comparisons (two writers, or a writer and a
//! model), and finding a snapshot's image.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use erofs_snapshotter::{Mount, Snapshotter};
use sha2::{Digest, Sha256};

use super::{no_labels, Env};

pub fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Bytes as text: UTF-8 as it is, except `\` and control characters; any
/// other byte as `\xNN` (so that two names never show alike).
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// An xattr value to show: as it is if short, else its length and hash.
pub fn show_value(v: &[u8]) -> String {
    if v.len() <= 40 {
        show(v)
    } else {
        format!("<{} bytes sha {}>", v.len(), &sha256(v)[7..19])
    }
}

/// Every xattr of `p` (not following a symlink), sorted by name.
pub fn lxattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffer and length match.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    names.truncate(n.max(0) as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: buffer and length match.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(len.max(0) as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

/// Every entry below `root` by relative path (not the root itself), as
/// `(relative path bytes, full path, metadata)`, sorted by path.
pub fn walk(root: &Path) -> Vec<(Vec<u8>, PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap_or_else(|e| {
                panic!(
                    "{}: listed in its directory, but lstat fails: {e}",
                    p.display()
                )
            });
            if md.is_dir() {
                stack.push(p.clone());
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.push((rel, p, md));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Everything a layer holds, for comparing two writers: every entry's type,
/// mode, owner, link count, mtime (ns), size, content, link target, device
/// number, every xattr (overlayfs's too), and which names share an inode.
pub fn full_tree(root: &Path) -> BTreeMap<String, String> {
    full_tree_with(root, |_, _| true)
}

/// [`full_tree`] with only the xattrs `keep` keeps (name, value).
pub fn full_tree_with(
    root: &Path,
    keep: impl Fn(&[u8], &[u8]) -> bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (rel, p, md) in walk(root) {
        let rel = show(&rel);
        let ft = md.file_type();
        let mut desc = format!(
            "mode {:o} owner {}:{} mtime {}.{:09}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec()
        );
        if ft.is_file() {
            let data = fs::read(&p).unwrap();
            desc += &format!(" size {} sha {}", data.len(), &sha256(&data)[7..19]);
        } else if ft.is_symlink() {
            desc += &format!(
                " -> {}",
                show(fs::read_link(&p).unwrap().as_os_str().as_bytes())
            );
        } else if ft.is_char_device() || ft.is_block_device() {
            desc += &format!(" rdev {:x}", md.rdev());
        }
        if !ft.is_dir() && md.nlink() > 1 {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            desc += &format!(" links {} with {first}", md.nlink());
        } else if ft.is_dir() {
            desc += &format!(" nlink {}", md.nlink());
        }
        let xs: Vec<String> = lxattrs(&p)
            .iter()
            .filter(|(n, v)| keep(n, v))
            .map(|(n, v)| format!("{}={}", show(n), show_value(v)))
            .collect();
        desc += &format!(" xattrs {xs:?}");
        out.insert(rel, desc);
    }
    out
}

/// Line by line, the differences of two maps of entries.
pub fn tree_diffs(
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
    got_name: &str,
    want_name: &str,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for k in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        match (got.get(k), want.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => diffs.push(format!(
                "{k}:\n   {got_name:<8} {a:?}\n   {want_name:<8} {b:?}"
            )),
        }
    }
    diffs
}

pub fn assert_same_full_tree(what: &str, got: &Path, want: &Path) {
    let diffs = tree_diffs(&full_tree(got), &full_tree(want), "built-in", "mkfs");
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// The metadata id (directory name) of snapshot `name`: the layer its view
/// of one layer mounts.
pub fn id_of(env: &Env, s: &Snapshotter, name: &str) -> String {
    let v = s.view("id-probe", name, &no_labels()).unwrap();
    s.remove("id-probe").unwrap();
    // A view's top lower layer is `name`'s: its image, or its fs/ dir.
    let top = match v[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
    {
        Some(list) => PathBuf::from(list.split(':').next().unwrap()),
        None => PathBuf::from(&v[0].source),
    };
    let id = top
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(env.root.join("snapshots").join(&id).is_dir());
    id
}

/// The image of committed snapshot `name`.
pub fn blob_of(env: &Env, s: &Snapshotter, name: &str) -> PathBuf {
    env.root
        .join("snapshots")
        .join(id_of(env, s, name))
        .join("layer.erofs")
}

/// Mounts image `blob` read-only on a fresh target (whiteouts and overlayfs
/// xattrs visible), runs `f`, unmounts.
pub fn with_image<T>(env: &Env, name: &str, blob: &Path, f: impl FnOnce(&Path) -> T) -> T {
    let m = Mount {
        kind: "erofs".into(),
        source: blob.to_string_lossy().into_owned(),
        target: None,
        options: vec!["ro".into()],
    };
    super::with_mounted(env, name, &[m], f)
}

/// The upper dir of an active snapshot's mounts.
pub fn upperdir(mounts: &[Mount]) -> PathBuf {
    PathBuf::from(
        mounts[0]
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .unwrap(),
    )
}
