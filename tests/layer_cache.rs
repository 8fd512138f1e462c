//! Layer content caches (containerd's `layer_content_caches`): a layer found
//! in a cache by diffID is used as it is, by another root, with nothing
//! converted and nothing written to the cache.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use erofs_snapshotter::{ApplyOptions, ErrorKind, Labels, Snapshotter};
use sha2::{Digest, Sha256};

/// A tar layer of `files` (path, content), with `whiteouts`, and its diffID.
fn layer(files: &[(&str, &str)], whiteouts: &[&str]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let entries = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes()))
        .chain(whiteouts.iter().map(|w| {
            let (dir, name) = w.rsplit_once('/').map_or(("", *w), |(d, n)| (d, n));
            let p = if dir.is_empty() {
                format!(".wh.{name}")
            } else {
                format!("{dir}/.wh.{name}")
            };
            (p, &b""[..])
        }));
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }
    let data = b.into_inner().unwrap();
    let diff_id = format!("sha256:{:x}", Sha256::digest(&data));
    (data, diff_id)
}

/// The labels containerd's unpacker gives the extraction of a layer.
fn unpack_labels(chain: &str, diff_id: &str) -> Labels {
    labels(&[
        ("containerd.io/snapshot.ref", chain),
        ("containerd.io/snapshot/diff-id", diff_id),
    ])
}

/// Every file below `p` with its content.
fn tree(p: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir(p) {
        if e.is_file() {
            let rel = e.strip_prefix(p).unwrap().to_string_lossy().into_owned();
            out.insert(rel, fs::read_to_string(&e).unwrap());
        }
    }
    out
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

/// Every file of a cache directory with its length and mtime.
fn cache_state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    walkdir(dir)
        .into_iter()
        .map(|p| {
            let md = fs::symlink_metadata(&p).unwrap();
            (p, (md.len(), md.mtime_nsec()))
        })
        .collect()
}

struct Unpacked {
    chain: Vec<String>,
}

/// Unpacks `layers` as containerd's unpacker does in sequence: prepare on
/// the previous chain ID with the extraction labels, apply unless the
/// mounts are read only (staged: the layer came from a cache), commit.
/// Returns the chain IDs and how many layers were applied.
fn unpack(s: &Snapshotter, layers: &[(Vec<u8>, String)]) -> (Unpacked, usize) {
    let mut chain: Vec<String> = Vec::new();
    let mut applied = 0;
    for (i, (data, diff_id)) in layers.iter().enumerate() {
        let name = format!("chain-{i}");
        let parent = chain.last().cloned().unwrap_or_default();
        let key = format!("extract-{i}");
        let l = unpack_labels(&name, diff_id);
        let mounts = s.prepare(&key, &parent, &l).unwrap();
        let staged = mounts.last().unwrap().options.iter().any(|o| o == "ro");
        if !staged {
            let got = s
                .apply(&key, &mut Cursor::new(data), &ApplyOptions::default())
                .unwrap();
            assert_eq!(&got.digest, diff_id);
            applied += 1;
        }
        s.commit(&name, &key, &l).unwrap();
        chain.push(name);
    }
    (Unpacked { chain }, applied)
}

fn image() -> Vec<(Vec<u8>, String)> {
    vec![
        layer(
            &[("etc/os", "base"), ("etc/gone", "x"), ("bin/sh", "sh")],
            &[],
        ),
        layer(&[("app/main", "v1")], &["etc/gone"]),
        layer(&[("app/main", "v2"), ("app/data", "d")], &[]),
    ]
}

fn expected() -> BTreeMap<String, String> {
    [
        ("app/data", "d"),
        ("app/main", "v2"),
        ("bin/sh", "sh"),
        ("etc/os", "base"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// A first root that converts `layers` and puts the first `n` into a cache
/// directory (checked by fsck.erofs): the root (to keep), the cache, and
/// the files exported.
fn exported(layers: &[(Vec<u8>, String)], n: usize) -> (Env, PathBuf, Vec<PathBuf>) {
    let first = Env::new();
    let cache = first.dir.path().join("cache");
    let a = first.open();
    let (ua, applied) = unpack(&a, layers);
    assert_eq!(applied, layers.len());
    let files = ua.chain[..n]
        .iter()
        .map(|name| {
            let p = a.export_layer(name, &cache).unwrap();
            assert!(
                p.starts_with(&cache) && p.extension().unwrap() == "erofs",
                "{p:?}"
            );
            fsck(&p).unwrap();
            p
        })
        .collect();
    (first, cache, files)
}

#[test]
fn a_second_root_converts_nothing_when_the_cache_has_the_layers() {
    let layers = image();
    let (_first, cache, _) = exported(&layers, layers.len());
    let before = cache_state(&cache);

    // The second root, sharing the cache, applies nothing.
    let second = Env::new();
    let b = second.open_with(|c| c.layer_content_caches = vec![cache.clone()]);
    let (ub, applied) = unpack(&b, &layers);
    assert_eq!(applied, 0, "every layer came from the cache");
    assert!(
        layer_blobs(&second.root).is_empty(),
        "no layer.erofs written: {:?}",
        layer_blobs(&second.root)
    );
    let v = b.view("v", ub.chain.last().unwrap(), &no_labels()).unwrap();
    with_mounted(&second, "v", &v, |p| assert_eq!(tree(p), expected()));
    // A view of one cached layer is that layer.
    let v0 = b.view("v0", &ub.chain[0], &no_labels()).unwrap();
    with_mounted(&second, "v0", &v0, |p| {
        assert_eq!(read(p, "etc/gone"), "x");
    });
    // Usage counts the cached layer, as containerd does.
    assert!(b.usage(&ub.chain[0]).unwrap().size > 0);
    // Removing everything leaves the cache alone; it was never written to.
    for k in ["v", "v0", "chain-2", "chain-1", "chain-0"] {
        b.remove(k).unwrap();
    }
    b.cleanup().unwrap();
    assert_eq!(cache_state(&cache), before);
}

/// containerd's parallel unpack with a cache: each layer prepared without
/// a parent is served read only, then committed onto the one below.
#[test]
fn cached_layers_rebase_like_applied_ones() {
    let layers = image();
    let (first, cache, _) = exported(&layers, layers.len());
    let second = Env::new();
    let b = second
        .open_with(|c| c.layer_content_caches = vec![first.dir.path().join("none"), cache.clone()]);
    for (i, (_, diff_id)) in layers.iter().enumerate().rev() {
        let m = b
            .prepare(
                &format!("x{i}"),
                "",
                &unpack_labels(&format!("chain-{i}"), diff_id),
            )
            .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, "erofs", "{m:?}");
        assert!(m[0].options.contains(&"ro".to_string()));
        // Nothing to apply into a staged layer.
        let e = b
            .apply(
                &format!("x{i}"),
                &mut Cursor::new(&layers[i].0),
                &ApplyOptions::default(),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    }
    for i in 0..layers.len() {
        let parent = if i == 0 {
            String::new()
        } else {
            format!("chain-{}", i - 1)
        };
        b.commit_with_parent(
            &format!("chain-{i}"),
            &format!("x{i}"),
            &parent,
            &no_labels(),
        )
        .unwrap();
    }
    let v = b.view("v", "chain-2", &no_labels()).unwrap();
    with_mounted(&second, "v", &v, |p| assert_eq!(tree(p), expected()));
    assert!(layer_blobs(&second.root).is_empty());
}

/// A cache's file that is cut short, or not EROFS, is not used: the layer
/// is converted as usual and the host's logger hears why.
#[test]
fn a_damaged_cache_file_is_a_miss() {
    let layers = image();
    let (_first, cache, files) = exported(&layers, 2);
    let (p0, p1) = (files[0].clone(), files[1].clone());
    let len = fs::metadata(&p0).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p0)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fs::write(&p1, vec![0u8; 8192]).unwrap();

    let second = Env::new();
    let (logger, seen) = capturing_logger();
    let mut config = second.config();
    config.layer_content_caches = vec![cache.clone()];
    let b = Snapshotter::open_with_logger(config, logger).unwrap();
    let (ub, applied) = unpack(&b, &layers);
    assert_eq!(
        applied, 3,
        "layers 0 and 1 damaged in the cache, layer 2 not in it"
    );
    let warnings = seen.lock().unwrap().join("\n");
    assert!(
        warnings.contains("cut short") && warnings.contains(&p0.display().to_string()),
        "{warnings}"
    );
    assert!(warnings.contains("no EROFS superblock"), "{warnings}");
    let v = b.view("v", ub.chain.last().unwrap(), &no_labels()).unwrap();
    with_mounted(&second, "v", &v, |p| assert_eq!(tree(p), expected()));
}

/// A cache's file replaced after it was first used (here: cut short) is
/// refused at the next mount, by name, never mounted.
#[test]
fn a_cache_file_changed_after_use_is_refused() {
    let layers = image();
    let (_first, cache, files) = exported(&layers[..1], 1);
    let p0 = files[0].clone();
    let second = Env::new();
    let b = second.open_with(|c| c.layer_content_caches = vec![cache.clone()]);
    unpack(&b, &layers[..1]);
    drop(b); // the last user detaches the layer mounts
    let len = fs::metadata(&p0).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p0)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    let b = second.open_with(|c| c.layer_content_caches = vec![cache.clone()]);
    let e = b.view("v", "chain-0", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.message().contains(&p0.display().to_string()), "{e}");
}

#[test]
fn export_needs_a_committed_layer_with_a_diff_id() {
    let env = Env::new();
    let s = env.open();
    let cache = env.dir.path().join("cache");
    s.prepare("a", "", &no_labels()).unwrap();
    let e = s.export_layer("a", &cache).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    s.commit("c", "a", &no_labels()).unwrap();
    let e = s.export_layer("c", &cache).unwrap_err();
    assert!(e.message().contains("diff-id"), "{e}");
    let e = s.export_layer("c", Path::new("relative")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(!cache.exists());
}
