//! The EROFS differ: OCI layers applied straight into `layer.erofs`, checked
//! against a reference extraction (layers extracted in order onto a plain
//! directory, whiteouts applied to what lies below) and against the walking
//! path (the same layers extracted through the mounted overlay, then
//! committed), with real mkfs.erofs and kernel mounts.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use erofs_snapshotter::{ApplyOptions, ErrorKind, Kind, Snapshotter};
use sha2::{Digest, Sha256};

// ---- building layers ---------------------------------------------------------

/// A layer under construction (the `tar` crate writes PAX/GNU as needed).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Layer(b)
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    fn dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    fn file(mut self, path: &str, content: &[u8], mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, mode, 0, 0);
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    fn owned_file(mut self, path: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    fn pax(mut self, records: &[(&str, &[u8])]) -> Layer {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Layer {
        let mut h = Self::header(kind, 0o777, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn device(mut self, kind: tar::EntryType, path: &str, major: u32, minor: u32) -> Layer {
        let mut h = Self::header(kind, 0o640, 0, 6);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    fn whiteout(self, path: &str) -> Layer {
        let p = Path::new(path);
        let name = format!(".wh.{}", p.file_name().unwrap().to_str().unwrap());
        let full = p.parent().unwrap().join(name);
        self.file(full.to_str().unwrap(), b"", 0o644)
    }

    fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    fn build(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// A sparse file archived by GNU tar (`--sparse`: old GNU 'S' entries).
fn gnu_sparse_tar(dir: &Path) -> Vec<u8> {
    let src = dir.join("sparse-src");
    fs::create_dir_all(src.join("data")).unwrap();
    let f = fs::File::create(src.join("data/sparse.img")).unwrap();
    f.set_len(16 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"head", 0).unwrap();
    f.write_at(b"middle", 8 << 20).unwrap();
    f.write_at(b"tail", (16 << 20) - 4).unwrap();
    let out = dir.join("sparse.tar");
    let ok = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "--owner=0", "--group=0", "-C"])
        .arg(&src)
        .args(["-cf"])
        .arg(&out)
        .arg("data/sparse.img")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut bytes = fs::read(&out).unwrap();
    // Drop GNU tar's end-of-archive blocks: it is concatenated into a layer.
    while bytes.len() >= 512 && bytes[bytes.len() - 512..].iter().all(|b| *b == 0) {
        bytes.truncate(bytes.len() - 512);
    }
    bytes
}

// ---- reading trees back ------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<String>,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: Option<(i64, i64)>,
    /// The first path (in walk order) of the same inode, for hard links.
    same_as: Option<String>,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 8192];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.") {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if len >= 0 {
            v.truncate(len as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), v);
        }
    }
    out
}

/// Every entry below `root` (not the root itself, whose attributes the
/// caller's mount decides), by relative path.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            entries.push((p, md));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, md) in entries {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "file"
        };
        let same_as = if kind == "file" && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            match inodes.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                    None
                }
            }
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content: (kind == "file")
                    .then(|| format!("{:x}", Sha256::digest(fs::read(&p).unwrap()))),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
                xattrs: xattrs(&p),
                mtime: (kind == "file").then(|| (md.mtime(), md.mtime_nsec())),
                same_as,
            },
        );
    }
    out
}

fn assert_same_tree(got: &Path, want: &Path) {
    let (g, w) = (tree(got), tree(want));
    let mut diffs = Vec::new();
    for (k, wn) in &w {
        match g.get(k) {
            None => diffs.push(format!("missing {k}")),
            Some(gn) if gn != wn => diffs.push(format!("{k}:\n   got {gn:?}\n  want {wn:?}")),
            _ => {}
        }
    }
    for k in g.keys() {
        if !w.contains_key(k) {
            diffs.push(format!("unexpected {k}"));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// The reference: layers extracted in order onto a plain directory. A
/// layer's whiteouts and opaque markers delete what lies below first, then
/// its entries are extracted (implicit directories that exist below keep
/// their attributes, since they are simply there).
fn reference_apply(dest: &Path, layer: &[u8]) {
    let mut ar = tar::Archive::new(layer);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new(""));
        if name == ".wh..wh..opq" {
            if let Ok(rd) = fs::read_dir(dest.join(parent)) {
                for c in rd {
                    let c = c.unwrap().path();
                    if c.is_dir() && !c.is_symlink() {
                        fs::remove_dir_all(&c).unwrap();
                    } else {
                        fs::remove_file(&c).unwrap();
                    }
                }
            }
        } else if let Some(target) = name.strip_prefix(".wh.") {
            let t = dest.join(parent).join(target);
            if let Ok(md) = fs::symlink_metadata(&t) {
                if md.is_dir() {
                    fs::remove_dir_all(&t).unwrap();
                } else {
                    fs::remove_file(&t).unwrap();
                }
            }
        }
    }
    let mut ar = tar::Archive::new(layer);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        {
            continue;
        }
        let h = e.header();
        let kind = h.entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            // The tar crate unpacks these as regular files.
            let target = dest.join(&path);
            let _ = fs::remove_file(&target);
            let fmt = if kind.is_fifo() {
                libc::S_IFIFO
            } else if kind.is_block_special() {
                libc::S_IFBLK
            } else {
                libc::S_IFCHR
            };
            let dev = libc::makedev(
                h.device_major().unwrap().unwrap_or(0),
                h.device_minor().unwrap().unwrap_or(0),
            );
            let c = CString::new(target.as_os_str().as_bytes()).unwrap();
            assert_eq!(
                unsafe { libc::mknod(c.as_ptr(), fmt | h.mode().unwrap(), dev) },
                0
            );
            std::os::unix::fs::lchown(
                &target,
                Some(h.uid().unwrap() as u32),
                Some(h.gid().unwrap() as u32),
            )
            .unwrap();
            fs::set_permissions(
                &target,
                std::os::unix::fs::PermissionsExt::from_mode(h.mode().unwrap()),
            )
            .unwrap();
            continue;
        }
        // The tar crate ignores PAX mtimes; a reference must not.
        let pax_mtime = e.pax_extensions().unwrap().and_then(|exts| {
            exts.flatten()
                .find(|x| x.key() == Ok("mtime"))
                .and_then(|x| x.value().ok().map(str::to_string))
        });
        assert!(e.unpack_in(dest).unwrap(), "reference unpack of {path:?}");
        if let Some(m) = pax_mtime {
            let (secs, frac) = m.split_once('.').unwrap_or((&m, "0"));
            let nanos: i64 = format!("{frac:0<9}")[..9].parse().unwrap();
            let ts = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: secs.parse().unwrap(),
                    tv_nsec: nanos,
                },
            ];
            let c = CString::new(dest.join(&path).as_os_str().as_bytes()).unwrap();
            assert_eq!(
                unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        ts.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                },
                0
            );
        }
    }
}

// ---- the layers under test ------------------------------------------------------

fn layers(dir: &Path) -> Vec<Vec<u8>> {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(200));
    let l1 = Layer::new()
        .dir("./", 0o755, 0, 0)
        .dir("etc", 0o755, 0, 0)
        .file("etc/hostname", b"layer1\n", 0o644)
        .dir("private", 0o700, 1234, 5678)
        .owned_file("private/key", b"secret", 0o600, 1234, 5678)
        .dir("tree", 0o755, 0, 0)
        .dir("tree/sub", 0o750, 10, 20)
        .file("tree/sub/a", b"a", 0o644)
        .file("tree/sub/b", b"b", 0o644)
        .dir("replaced", 0o755, 0, 0)
        .file("replaced/old", b"old", 0o644)
        .dir("opaque", 0o755, 0, 0)
        .file("opaque/lower", b"lower", 0o644)
        .file("bin-tool", b"#!/bin/sh\n", 0o4755)
        .link(tar::EntryType::Link, "bin-tool-hardlink", "bin-tool")
        .link(tar::EntryType::Symlink, "etc/link", "../private/key")
        .device(tar::EntryType::Char, "dev-null", 1, 3)
        .device(tar::EntryType::Block, "dev-loop", 7, 0)
        .device(tar::EntryType::Fifo, "fifo", 0, 0)
        .file(&long_name, b"long", 0o644)
        .pax(&[
            ("SCHILY.xattr.user.origin", b"layer1"),
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
        ])
        .file("xattr-file", b"x", 0o755)
        .pax(&[("mtime", b"1700000000.5")])
        .file("fractional-mtime", b"half a second", 0o644)
        .build();
    let mut l2 = Layer::new()
        // No entries for "private" or "tree/sub": implicit, they keep their lower attributes.
        .owned_file("private/added", b"added", 0o600, 1234, 5678)
        .file("tree/sub/c", b"c", 0o644)
        // A new directory with implicit parents nothing below has.
        .file("brand/new/file", b"new", 0o644)
        .whiteout("etc/hostname")
        .whiteout("tree/sub/a")
        // Whiteout then a new directory of the same name: the new one hides the old contents.
        .whiteout("replaced")
        .dir("replaced", 0o711, 0, 0)
        .file("replaced/new", b"new", 0o644)
        .opaque("opaque")
        .file("opaque/upper", b"upper", 0o644);
    // A sparse file (GNU tar's own encoding) as part of the second layer.
    let sparse = gnu_sparse_tar(dir);
    l2.0.get_mut().extend_from_slice(&sparse);
    let l2 = l2.build();
    let l3 = Layer::new()
        // The new directory created before its whiteout in the same layer.
        .dir("tree/sub", 0o700, 10, 20)
        .file("tree/sub/d", b"d", 0o644)
        .whiteout("tree/sub")
        .file("etc/hostname", b"layer3\n", 0o644)
        .whiteout("bin-tool-hardlink")
        .file("brand/new/file", b"newer", 0o644)
        .build();
    vec![l1, l2, l3]
}

/// Applies `layers` through the differ; returns the top committed name.
fn apply_stack(
    s: &Snapshotter,
    prefix: &str,
    layers: &[Vec<u8>],
    media: &str,
    compress: fn(&[u8]) -> Vec<u8>,
) -> String {
    let mut parent = String::new();
    for (i, l) in layers.iter().enumerate() {
        let key = format!("{prefix}-{i}-extract");
        s.prepare(&key, &parent, &no_labels()).unwrap();
        let data = compress(l);
        let opts = ApplyOptions {
            media_type: media.into(),
            digest: Some(sha256(&data)),
        };
        let applied = s.apply(&key, &mut Cursor::new(&data), &opts).unwrap();
        assert_eq!(
            applied.digest,
            sha256(l),
            "diffID is the digest of the uncompressed tar"
        );
        assert_eq!(applied.size, l.len() as u64);
        let name = format!("{prefix}-{i}");
        s.commit(&name, &key, &no_labels()).unwrap();
        parent = name;
    }
    parent
}

/// A tar whose entry climbs out of the layer root (the tar crate refuses to
/// write one, so the header is made by hand).
fn escaping_tar() -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes()[..14].copy_from_slice(b"../../etc/evil");
    h.set_mode(0o644);
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(b"x");
    out.resize(out.len() + 511 + 1024, 0);
    out
}

// ---- tests -----------------------------------------------------------------------

#[test]
fn three_layers_equal_the_reference_extraction() {
    let env = Env::new();
    let s = env.open();
    let layers = layers(env.dir.path());
    let reference = env.dir.path().join("reference");
    fs::create_dir(&reference).unwrap();
    for (i, l) in layers.iter().enumerate() {
        reference_apply(&reference, l);
        // Each stack, top at layer i, reads back as the reference so far.
        let top = apply_stack(
            &s,
            &format!("s{i}"),
            &layers[..=i],
            "application/vnd.oci.image.layer.v1.tar",
            |d| d.to_vec(),
        );
        let v = s.view(&format!("v{i}"), &top, &no_labels()).unwrap();
        with_mounted(&env, &format!("v{i}"), &v, |p| {
            assert_same_tree(p, &reference)
        });
    }
    // The points where mkfs.erofs alone is wrong, spelled out.
    let v = s.view("final", "s2-2", &no_labels()).unwrap();
    with_mounted(&env, "final", &v, |p| {
        let private = fs::metadata(p.join("private")).unwrap();
        assert_eq!(
            (private.mode() & 0o7777, private.uid(), private.gid()),
            (0o700, 1234, 5678)
        );
        let sub = fs::metadata(p.join("tree/sub")).unwrap();
        assert_eq!((sub.mode() & 0o7777, sub.uid(), sub.gid()), (0o700, 10, 20));
        assert!(
            !p.join("replaced/old").exists(),
            "whiteout + new dir: the old contents stay hidden"
        );
        assert_eq!(read(p, "replaced/new"), "new");
        assert!(
            !p.join("tree/sub/a").exists()
                && !p.join("tree/sub/b").exists()
                && !p.join("tree/sub/c").exists()
        );
        assert_eq!(read(p, "tree/sub/d"), "d");
        let frac = fs::metadata(p.join("fractional-mtime")).unwrap();
        assert_eq!(
            (frac.mtime(), frac.mtime_nsec()),
            (1_700_000_000, 500_000_000)
        );
        let sparse = fs::read(p.join("data/sparse.img")).unwrap();
        assert_eq!(sparse.len(), 16 << 20);
        assert_eq!(&sparse[8 << 20..(8 << 20) + 6], b"middle");
        assert_eq!(fs::metadata(p).unwrap().mode() & 0o7777, 0o755);
    });
}

#[test]
fn differ_equals_the_walking_path() {
    // The walking path: each layer extracted through the mounted overlay
    // (deletions become overlay whiteouts), then converted at commit.
    let env = Env::new();
    let s = env.open();
    let layers = layers(env.dir.path());
    let mut parent = String::new();
    for (i, l) in layers.iter().enumerate() {
        let key = format!("walk-{i}-extract");
        let m = s.prepare(&key, &parent, &no_labels()).unwrap();
        with_mounted(&env, &key, &m, |p| reference_apply(p, l));
        s.commit(&format!("walk-{i}"), &key, &no_labels()).unwrap();
        parent = format!("walk-{i}");
    }
    let top = apply_stack(
        &s,
        "diff",
        &layers,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        gzip,
    );
    let walked = s.view("walked", &parent, &no_labels()).unwrap();
    let diffed = s.view("diffed", &top, &no_labels()).unwrap();
    with_mounted(&env, "walked", &walked, |w| {
        with_mounted(&env, "diffed", &diffed, |d| assert_same_tree(d, w));
    });
}

#[test]
fn compressions_and_native_blobs() {
    let env = Env::new();
    let s = env.open();
    let l = Layer::new()
        .dir("d", 0o755, 0, 0)
        .file("d/f", b"hello", 0o644)
        .build();
    for (media, data) in [
        ("application/vnd.oci.image.layer.v1.tar", l.clone()),
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&l)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&l)),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&l),
        ),
        // Docker's plain type holding a compressed layer (containerd
        // detects the compression).
        ("application/vnd.docker.image.rootfs.diff.tar", gzip(&l)),
        ("application/vnd.docker.image.rootfs.diff.tar", l.clone()),
        (
            "application/vnd.docker.image.rootfs.diff.tar.zstd",
            zstd(&l),
        ),
        ("", zstd(&l)),
        ("", gzip(&l)),
    ] {
        let key = format!("k-{media}-{}", data.len());
        s.prepare(&key, "", &no_labels()).unwrap();
        let a = s
            .apply(
                &key,
                &mut Cursor::new(&data),
                &ApplyOptions {
                    media_type: media.into(),
                    digest: None,
                },
            )
            .unwrap();
        assert_eq!(
            (a.digest.as_str(), a.size),
            (sha256(&l).as_str(), l.len() as u64),
            "{media}"
        );
        s.commit(&format!("{key}-c"), &key, &no_labels()).unwrap();
        let v = s
            .view(&format!("{key}-v"), &format!("{key}-c"), &no_labels())
            .unwrap();
        with_mounted(&env, &key, &v, |p| assert_eq!(read(p, "d/f"), "hello"));
    }
    // A native EROFS layer is copied as is.
    let src = env.dir.path().join("native");
    write(&src, "native-file", "from an erofs layer");
    let img = env.dir.path().join("native.erofs");
    assert!(std::process::Command::new("mkfs.erofs")
        .args(["--quiet", "-b4096"])
        .arg(&img)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    let blob = fs::read(&img).unwrap();
    for (media, data) in [
        ("application/vnd.erofs.layer.v1", blob.clone()),
        ("application/vnd.erofs.layer.v1+zstd", zstd(&blob)),
    ] {
        let key = format!("native-{}", data.len());
        s.prepare(&key, "", &no_labels()).unwrap();
        let a = s
            .apply(
                &key,
                &mut Cursor::new(&data),
                &ApplyOptions {
                    media_type: media.into(),
                    digest: Some(sha256(&data)),
                },
            )
            .unwrap();
        assert_eq!(a.media_type, "application/vnd.erofs.layer.v1");
        assert_eq!(a.digest, sha256(&blob));
        s.commit(&format!("{key}-c"), &key, &no_labels()).unwrap();
        let v = s
            .view(&format!("{key}-v"), &format!("{key}-c"), &no_labels())
            .unwrap();
        with_mounted(&env, &key, &v, |p| {
            assert_eq!(read(p, "native-file"), "from an erofs layer")
        });
    }
}

#[test]
fn tar_index_mode() {
    let env = Env::new();
    let s = env.open_with(|c| c.enable_tar_index = true);
    let layers = layers(env.dir.path());
    let reference = env.dir.path().join("reference");
    fs::create_dir(&reference).unwrap();
    for l in &layers {
        reference_apply(&reference, l);
    }
    let top = apply_stack(
        &s,
        "ti",
        &layers,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        gzip,
    );
    let v = s.view("v", &top, &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| assert_same_tree(p, &reference));
}

#[test]
fn bad_layers_leave_the_snapshot_as_it_was() {
    let env = Env::new();
    let s = env.open();
    let good = Layer::new().file("f", &vec![7u8; 100_000], 0o644).build();
    let truncated = good[..good.len() / 2].to_vec();
    let mut garbage = good.clone();
    garbage[100] ^= 0xff; // inside the first header: bad checksum
    let cases: Vec<(&str, Vec<u8>, ApplyOptions, &str)> = vec![
        (
            "truncated",
            truncated.clone(),
            ApplyOptions::default(),
            "truncated",
        ),
        (
            "truncated-gzip",
            gzip(&good)[..200].to_vec(),
            ApplyOptions {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: None,
            },
            "corrupt",
        ),
        ("corrupt", garbage, ApplyOptions::default(), "checksum"),
        (
            "wrong-compression",
            good.clone(),
            ApplyOptions {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: None,
            },
            "gzip",
        ),
        (
            "gzip-as-plain",
            gzip(&good),
            ApplyOptions {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: None,
            },
            "gzip",
        ),
        (
            "digest",
            good.clone(),
            ApplyOptions {
                media_type: String::new(),
                digest: Some(sha256(b"other")),
            },
            "digest mismatch",
        ),
        (
            "media-type",
            good.clone(),
            ApplyOptions {
                media_type: "text/plain".into(),
                digest: None,
            },
            "text/plain",
        ),
        (
            "escape",
            escaping_tar(),
            ApplyOptions::default(),
            "leaves the layer root",
        ),
    ];
    s.prepare("a", "", &no_labels()).unwrap();
    let dir = fs::canonicalize(env.root.join("snapshots/1")).unwrap();
    for (what, data, opts, needle) in cases {
        let e = s.apply("a", &mut Cursor::new(&data), &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains(needle), "{what}: {e}");
        assert_eq!(s.stat("a").unwrap().kind, Kind::Active);
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !left
                .iter()
                .any(|n| n.to_string_lossy().contains("layer.erofs")),
            "{what}: {left:?}"
        );
    }
    // mkfs.erofs failing (an option it does not know).
    let bad = env.open_with(|c| c.mkfs_options = vec!["--no-such-option".into()]);
    let e = bad
        .apply("a", &mut Cursor::new(&good), &ApplyOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("mkfs_options"), "{e}");
    drop(bad);
    // The snapshot still takes a good layer and commits it.
    s.apply("a", &mut Cursor::new(&good), &ApplyOptions::default())
        .unwrap();
    s.commit("c", "a", &no_labels()).unwrap();
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(fs::read(p.join("f")).unwrap(), vec![7u8; 100_000])
    });
}

#[test]
fn apply_by_mounts_and_its_refusals() {
    let env = Env::new();
    let s = env.open();
    let l = Layer::new().file("f", b"via mounts", 0o644).build();
    let base = Layer::new().file("b", b"base", 0o644).build();
    apply_stack(&s, "base", &[base], "", |d| d.to_vec());
    let m = s.prepare("a", "base-0", &no_labels()).unwrap();
    s.apply_mounts(&m, &mut Cursor::new(&l), &ApplyOptions::default())
        .unwrap();
    s.commit("c", "a", &no_labels()).unwrap();
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(read(p, "f"), "via mounts");
        assert_eq!(read(p, "b"), "base");
    });
    // Read-only mounts (a view).
    let e = s
        .apply_mounts(&v, &mut Cursor::new(&l), &ApplyOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    // Mounts of another snapshotter (or none we know) are not ours.
    let other = erofs_snapshotter::Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            "upperdir=/var/lib/containerd/x/fs".into(),
            "workdir=/w".into(),
            "lowerdir=/l".into(),
        ],
    };
    let e = s
        .apply_mounts(&[other], &mut Cursor::new(&l), &ApplyOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotImplemented, "{e}");
    // A view cannot take a layer by key either.
    s.view("view", "c", &no_labels()).unwrap();
    assert_eq!(
        s.apply("view", &mut Cursor::new(&l), &ApplyOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn sparse_files_in_every_gnu_encoding() {
    let env = Env::new();
    let s = env.open();
    let src = env.dir.path().join("sparse-src");
    fs::create_dir_all(src.join("data")).unwrap();
    let f = fs::File::create(src.join("data/sparse.img")).unwrap();
    f.set_len(40 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    for (off, what) in [
        (0u64, &b"head"[..]),
        (9 << 20, b"middle"),
        ((40 << 20) - 4, b"tail"),
    ] {
        f.write_at(what, off).unwrap();
    }
    drop(f);
    let want = fs::read(src.join("data/sparse.img")).unwrap();
    for (format, version) in [
        ("gnu", None),
        ("pax", Some("0.0")),
        ("pax", Some("0.1")),
        ("pax", Some("1.0")),
    ] {
        let out = env.dir.path().join(format!("{format}-{version:?}.tar"));
        let mut cmd = std::process::Command::new("tar");
        cmd.args([
            "--sparse",
            &format!("--format={format}"),
            "--owner=0",
            "--group=0",
        ]);
        if let Some(v) = version {
            cmd.arg(format!("--sparse-version={v}"));
        }
        assert!(cmd
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&out)
            .arg("data/sparse.img")
            .status()
            .unwrap()
            .success());
        let key = format!("sparse-{format}-{version:?}");
        s.prepare(&key, "", &no_labels()).unwrap();
        s.apply(
            &key,
            &mut fs::File::open(&out).unwrap(),
            &ApplyOptions::default(),
        )
        .unwrap();
        s.commit(&format!("{key}-c"), &key, &no_labels()).unwrap();
        let v = s
            .view(&format!("{key}-v"), &format!("{key}-c"), &no_labels())
            .unwrap();
        with_mounted(&env, &key, &v, |p| {
            let names: Vec<_> = fs::read_dir(p.join("data"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                ["sparse.img"],
                "{format} {version:?}: no GNUSparseFile.N stand-ins"
            );
            assert!(
                fs::read(p.join("data/sparse.img")).unwrap() == want,
                "{format} {version:?}: content differs"
            );
        });
    }
}

/// The built-in writer and mkfs.erofs give the same layers: each image on
/// its own (whiteouts, opaque directories and all) and the stack through
/// overlayfs; for applied layers and for committed upper dirs. The built-in
/// writer also gives the same bytes for the same layer.
#[test]
fn the_built_in_writer_equals_mkfs() {
    let builtin = Env::new();
    let mkfs = Env::new();
    let b = builtin.open();
    // An option only mkfs.erofs implements sends every layer through it.
    let m = mkfs.open_with(|c| c.mkfs_options = vec!["-x2".into()]);
    let layers = layers(builtin.dir.path());
    let media = "application/vnd.oci.image.layer.v1.tar+gzip";
    let tops = [
        apply_stack(&b, "diff", &layers, media, gzip),
        apply_stack(&m, "diff", &layers, media, gzip),
    ];
    // Commit: one upper dir, copied as it is (cp -a keeps times, owners,
    // xattrs, devices and hard links) into a snapshot of each.
    let upper = builtin.dir.path().join("upper-src");
    build_upper(&upper, builtin.dir.path());
    for (s, key) in [(&b, "up"), (&m, "up")] {
        let mounts = s.prepare(key, "diff-2", &no_labels()).unwrap();
        let dir = PathBuf::from(
            mounts[0]
                .options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir="))
                .unwrap(),
        );
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(upper.join("."))
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        s.commit("up-c", key, &no_labels()).unwrap();
    }
    for (kind, names) in [
        ("applied", &["diff-0", "diff-1", "diff-2"][..]),
        ("committed", &["up-c"]),
    ] {
        for name in names {
            let images: Vec<PathBuf> = [(&builtin, &b), (&mkfs, &m)]
                .iter()
                .map(|(env, s)| {
                    let blob = env
                        .root
                        .join("snapshots")
                        .join(id_of(env, s, name))
                        .join("layer.erofs");
                    let target = env.target(&format!("{name}-img"));
                    erofs_snapshotter::mount_all(
                        &[erofs_snapshotter::Mount {
                            kind: "erofs".into(),
                            source: blob.to_string_lossy().into_owned(),
                            target: None,
                            options: vec!["ro".into()],
                        }],
                        &target,
                    )
                    .unwrap();
                    target
                })
                .collect();
            assert_same_full_tree(&format!("{kind} layer {name}"), &images[0], &images[1]);
            for i in &images {
                erofs_snapshotter::unmount_all(i, false).unwrap();
            }
        }
    }
    let tops = [tops[0].clone(), tops[1].clone()];
    for (what, names) in [
        ("applied stack", &tops),
        ("committed stack", &["up-c".to_string(), "up-c".to_string()]),
    ] {
        let vb = b.view("top-b", &names[0], &no_labels()).unwrap();
        let vm = m.view("top-m", &names[1], &no_labels()).unwrap();
        with_mounted(&builtin, "top-b", &vb, |x| {
            with_mounted(&mkfs, "top-m", &vm, |y| assert_same_full_tree(what, x, y));
        });
        b.remove("top-b").unwrap();
        m.remove("top-m").unwrap();
    }
    // The same layer twice: the same bytes.
    let blob = |key: &str| {
        let dir = differ_blob_dir(&b, key);
        fs::read(dir.join("layer.erofs")).unwrap()
    };
    for key in ["again-1", "again-2"] {
        b.prepare(key, "diff-0", &no_labels()).unwrap();
        b.apply(key, &mut Cursor::new(&layers[1]), &ApplyOptions::default())
            .unwrap();
    }
    assert!(
        blob("again-1") == blob("again-2"),
        "the same layer gave different images"
    );
}

/// An upper dir as overlayfs leaves it: every kind of entry, a whiteout,
/// an opaque directory, a redirect, hard links, xattrs, nanosecond times.
fn build_upper(upper: &Path, scratch: &Path) {
    let _ = scratch;
    fs::create_dir_all(upper.join("dir/sub")).unwrap();
    fs::create_dir_all(upper.join("opaque")).unwrap();
    fs::create_dir_all(upper.join("moved")).unwrap();
    fs::write(upper.join("dir/file"), b"content").unwrap();
    fs::write(upper.join("dir/sub/big"), vec![9u8; 300_000]).unwrap();
    fs::hard_link(upper.join("dir/file"), upper.join("hard")).unwrap();
    std::os::unix::fs::symlink("dir/file", upper.join("link")).unwrap();
    let mk = |p: &Path, mode: u32, dev: u64| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, 0);
    };
    mk(&upper.join("whiteout"), libc::S_IFCHR, 0);
    mk(
        &upper.join("dir/null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    );
    mk(&upper.join("fifo"), libc::S_IFIFO | 0o600, 0);
    let set = |p: &Path, name: &str, value: &[u8]| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        // SAFETY: valid strings and buffer.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0, "setxattr {name}");
    };
    set(&upper.join("opaque"), "trusted.overlay.opaque", b"y");
    set(
        &upper.join("moved"),
        "trusted.overlay.redirect",
        b"/dir/sub",
    );
    set(&upper.join("dir/file"), "user.k", b"v");
    set(&upper.join("dir"), "security.test", b"label");
    let f = fs::File::open(upper.join("dir/file")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5))
        .unwrap();
}

/// The snapshot directory of active snapshot `key`.
fn differ_blob_dir(s: &Snapshotter, key: &str) -> PathBuf {
    let m = s.mounts(key).unwrap();
    let upper = m[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&m[0].source));
    upper.parent().unwrap().to_path_buf()
}
