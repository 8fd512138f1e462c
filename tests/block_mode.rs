//! Block mode (containerd's `default_size`): a container's writable layer is
//! an ext4 image of its own, so it cannot fill the host's disk.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use erofs_snapshotter::{Config, ErrorKind, Snapshotter};

const MIB: u64 = 1 << 20;
const MAX_SIZE: &str = "containerd.io/snapshot/max-size";

fn open_block(env: &Env, size: u64) -> Snapshotter {
    env.open_with(|c| c.default_size = size)
}

/// The snapshot directory of `key`'s mounts (upper dir in `rw/upper`).
fn dir_of(mounts: &[erofs_snapshotter::Mount]) -> PathBuf {
    let rw = snapshot_dir(mounts);
    assert_eq!(rw.file_name().unwrap(), "rw", "{mounts:?}");
    rw.parent().unwrap().to_path_buf()
}

/// Writes `len` bytes to `path`; the error of the first failed write.
fn fill(path: &Path, len: u64) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    let chunk = vec![0x5au8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

#[test]
fn a_container_gets_enospc_at_its_size_and_the_host_disk_is_untouched() {
    let env = Env::new();
    let s = open_block(&env, 16 * MIB);
    layer(&env, &s, "base", "", |p| write(p, "etc/hostname", "base\n"));
    let mounts = s.prepare("ctr", "base", &no_labels()).unwrap();
    let opts = &mounts[0].options;
    assert!(
        opts.iter()
            .any(|o| o.starts_with("upperdir=") && o.ends_with("/rw/upper")),
        "{opts:?}"
    );
    let dir = dir_of(&mounts);
    let image = dir.join("rwlayer.img");
    assert_eq!(fs::metadata(&image).unwrap().len(), 16 * MIB);
    with_mounted(&env, "ctr", &mounts, |root| {
        assert_eq!(read(root, "etc/hostname"), "base\n");
        fill(&root.join("small"), 4 * MIB).unwrap();
        let e = fill(&root.join("big"), 32 * MIB).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
        fs::remove_file(root.join("big")).unwrap();
    });
    // The image never grew: the host's disk holds at most its 16 MiB.
    let md = fs::metadata(&image).unwrap();
    assert_eq!(md.len(), 16 * MIB);
    assert!(
        md.blocks() * 512 <= 16 * MIB,
        "{} bytes allocated",
        md.blocks() * 512
    );
    // usage is what is used inside the image.
    let u = s.usage("ctr").unwrap();
    assert!(u.size >= 4 * MIB as i64 && u.size < 5 * MIB as i64, "{u:?}");

    // Commit converts the image's upper dir, then the image goes.
    s.commit("top", "ctr", &no_labels()).unwrap();
    assert!(!image.exists());
    assert!(mounts_under(&dir.join("rw")).is_empty());
    let v = s.view("v", "top", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |root| {
        assert_eq!(read(root, "etc/hostname"), "base\n");
        assert_eq!(fs::metadata(root.join("small")).unwrap().len(), 4 * MIB);
        assert!(!root.join("big").exists());
    });
    for blob in layer_blobs(&env.root) {
        fsck(&blob).unwrap();
    }
}

#[test]
fn the_max_size_label_sets_one_snapshots_size_as_containerd_reads_it() {
    let env = Env::new();
    let (log, seen) = capturing_logger();
    let mut c = env.config();
    c.default_size = 8 * MIB;
    let s = Snapshotter::open_with_logger(c, log).unwrap();
    let size_of = |key: &str, labels: &erofs_snapshotter::Labels| {
        let m = s.prepare(key, "", labels).unwrap();
        fs::metadata(dir_of(&m).join("rwlayer.img")).unwrap().len()
    };
    assert_eq!(size_of("a", &labels(&[(MAX_SIZE, "33554432")])), 32 * MIB);
    // containerd's fall-backs: anything but a positive number of bytes.
    for (i, bad) in ["", "100MB", "0", "-1"].iter().enumerate() {
        assert_eq!(
            size_of(&format!("b{i}"), &labels(&[(MAX_SIZE, bad)])),
            8 * MIB
        );
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .any(|m| m.contains(MAX_SIZE) && m.contains(&format!("{bad:?}"))),
            "no warning for {bad:?}: {seen:?}"
        );
    }
    // Larger than the filesystem, or too small: refused, naming the label,
    // and nothing left behind.
    let before = fs::read_dir(env.root.join("snapshots")).unwrap().count();
    for huge in [(1u64 << 62).to_string(), "4096".to_string()] {
        let e = s
            .prepare("huge", "", &labels(&[(MAX_SIZE, &huge)]))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains(MAX_SIZE), "{e}");
    }
    assert_eq!(
        fs::read_dir(env.root.join("snapshots")).unwrap().count(),
        before
    );
    assert!(s.stat("huge").is_err());
}

#[test]
fn extractions_and_views_have_no_image_and_a_snapshot_without_parent_binds_its_upper() {
    let env = Env::new();
    let s = open_block(&env, 8 * MIB);
    // containerd's unpacker labels extractions; they are converted at commit.
    let m = s
        .prepare(
            "x",
            "",
            &labels(&[("containerd.io/snapshot.ref", "sha256:ab")]),
        )
        .unwrap();
    assert_eq!(m[0].kind, "bind");
    assert!(m[0].source.ends_with("/fs"), "{m:?}");
    s.commit("l", "x", &no_labels()).unwrap();
    // So does a client-side unpack's (ctr run), by containerd's key format.
    let m = s
        .prepare("ns/7/extract-123 sha256:ab", "", &no_labels())
        .unwrap();
    assert!(m[0].source.ends_with("/fs"), "{m:?}");
    let v = s.view("v", "l", &no_labels()).unwrap();
    assert!(!v
        .iter()
        .any(|m| m.options.iter().any(|o| o.contains("rw/"))));
    let m = s.prepare("scratch", "", &no_labels()).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert!(m[0].source.ends_with("/rw/upper"), "{m:?}");
    with_mounted(&env, "scratch", &m, |root| write(root, "f", "x"));
}

#[test]
fn the_image_outlives_the_handle_and_is_mounted_again_after_a_reboot() {
    let env = Env::new();
    let s = open_block(&env, 8 * MIB);
    layer(&env, &s, "base", "", |p| write(p, "f", "base"));
    let mounts = s.prepare("ctr", "base", &no_labels()).unwrap();
    let dir = dir_of(&mounts);
    with_mounted(&env, "ctr", &mounts, |root| write(root, "mine", "kept"));
    drop(s);
    // Closing the last handle leaves the image mounted (a container may be
    // writing); a new handle uses that mount.
    assert_eq!(mounts_under(&dir).len(), 1, "{:?}", mounts_under(&dir));
    let s = open_block(&env, 8 * MIB);
    assert_eq!(s.mounts("ctr").unwrap(), mounts);
    assert_eq!(mounts_under(&dir).len(), 1, "{:?}", mounts_under(&dir));
    // As after a reboot: nothing mounted; the next mounts() mounts it again.
    erofs_snapshotter::unmount_all(&dir.join("rw"), false).unwrap();
    assert_eq!(s.mounts("ctr").unwrap(), mounts);
    with_mounted(&env, "again", &mounts, |root| {
        assert_eq!(read(root, "mine"), "kept");
        assert_eq!(read(root, "f"), "base");
    });
    // Remove unmounts it and deletes it.
    s.remove("ctr").unwrap();
    s.cleanup().unwrap();
    assert!(!dir.exists());
    assert!(mounts_under(&env.root).iter().all(|m| !m.contains("/rw")));
}

#[test]
fn a_mapped_container_owns_the_upper_dir_in_its_image() {
    let env = Env::new();
    let s = open_block(&env, 8 * MIB);
    layer(&env, &s, "base", "", |p| write(p, "f", "x"));
    let mapped = labels(&[
        ("containerd.io/snapshot/uidmapping", "0:100000:65536"),
        ("containerd.io/snapshot/gidmapping", "0:200000:65536"),
    ]);
    let m = s.prepare("ctr", "base", &mapped).unwrap();
    let upper = dir_of(&m).join("rw/upper");
    let md = fs::metadata(&upper).unwrap();
    assert_eq!((md.uid(), md.gid()), (100000, 200000));
    assert!(m[0].options.contains(&"uidmap=0:100000:65536".to_string()));
}

#[test]
fn default_size_is_checked_at_open_naming_the_field() {
    let env = Env::new();
    for (json, says) in [
        (r#""16 potatoes""#, "is not a size"),
        (r#""-1""#, "is not a size"),
        ("-5", "expected a size"),
        (r#""99999999p""#, "larger than"),
    ] {
        let doc = format!(r#"{{"root": "/tmp/x", "default_size": {json}}}"#);
        let e = Config::from_json(&doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{json}: {e}");
        assert!(
            e.message().contains("default_size") && e.message().contains(says),
            "{json}: {e}"
        );
    }
    let c = Config::from_json(r#"{"root": "/tmp/x", "default_size": "64Mi"}"#).unwrap();
    assert_eq!(c.default_size, 64 * MIB);
    for (size, says) in [(4096, "too small"), (1 << 62, "larger than the filesystem")] {
        let mut c = env.config();
        c.default_size = size;
        let e = Snapshotter::open(c).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message().contains("default_size") && e.message().contains(says),
            "{e}"
        );
    }
}

#[test]
fn the_differ_applies_a_layer_to_mounts_with_a_block_layer() {
    let env = Env::new();
    let s = open_block(&env, 8 * MIB);
    let mounts = s.prepare("x", "", &no_labels()).unwrap();
    assert!(mounts[0].source.ends_with("/rw/upper"), "{mounts:?}");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
    let data = b.into_inner().unwrap();
    let opts = erofs_snapshotter::ApplyOptions {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: None,
    };
    s.apply_mounts(&mounts, &mut std::io::Cursor::new(&data), &opts)
        .unwrap();
    s.commit("l", "x", &no_labels()).unwrap();
    let v = s.view("v", "l", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |root| {
        assert_eq!(read(root, "hello"), "world")
    });
}
