//! Layers on disk and in the kernel: what survives the conversion to EROFS,
//! how stacks of layers read back, integrity flags, and who unmounts what.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use erofs_snapshotter::integrity::is_immutable;
use erofs_snapshotter::{mount_all, unmount_all, ErrorKind};

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {p:?}: {}", std::io::Error::last_os_error());
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// The layer blob of committed snapshot `name`: the top lower directory of a
/// snapshot prepared on it is `snapshots/<id>/fs`, next to `layer.erofs`.
fn blob_of(s: &erofs_snapshotter::Snapshotter, name: &str) -> PathBuf {
    let key = format!("probe-{name}");
    let m = s.prepare(&key, name, &no_labels()).unwrap();
    s.remove(&key).unwrap();
    let lower = m[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    let top = Path::new(lower.split(':').next().unwrap());
    top.parent().unwrap().join("layer.erofs")
}

#[test]
fn three_layers_with_whiteouts_and_opaque_dirs() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "l1", "", |p| {
        write(p, "keep", "l1");
        write(p, "gone", "l1");
        write(p, "dir/old", "l1");
        write(p, "dir/sub/deep", "l1");
        write(p, "replaced/a", "l1");
        write(p, "overwrite", "l1");
    });
    layer(&env, &s, "l2", "l1", |p| {
        // Overlay records these as whiteouts (0/0 char devices) and an opaque dir.
        fs::remove_file(p.join("gone")).unwrap();
        fs::remove_dir_all(p.join("replaced")).unwrap();
        fs::create_dir(p.join("replaced")).unwrap();
        write(p, "replaced/b", "l2");
        write(p, "overwrite", "l2");
        write(p, "dir/new", "l2");
    });
    layer(&env, &s, "l3", "l2", |p| {
        fs::remove_dir_all(p.join("dir/sub")).unwrap();
        write(p, "gone", "back in l3");
        fs::rename(p.join("keep"), p.join("moved")).unwrap();
    });
    // The upper of l2 really held overlay whiteouts: they must be in the blob.
    let l2 = blob_of(&s, "l2");
    with_mounted(
        &env,
        "raw-l2",
        &[erofs_snapshotter::Mount {
            kind: "erofs".into(),
            source: l2.to_string_lossy().into_owned(),
            target: None,
            options: vec!["ro".into()],
        }],
        |p| {
            let wh = fs::symlink_metadata(p.join("gone")).unwrap();
            assert!(std::os::unix::fs::FileTypeExt::is_char_device(
                &wh.file_type()
            ));
            assert_eq!(wh.rdev(), 0);
            assert_eq!(
                get_xattr(&p.join("replaced"), "trusted.overlay.opaque").as_deref(),
                Some(&b"y"[..])
            );
        },
    );

    let check = |p: &Path| {
        assert_eq!(read(p, "moved"), "l1");
        assert!(!p.join("keep").exists());
        assert_eq!(read(p, "gone"), "back in l3");
        assert_eq!(read(p, "dir/old"), "l1");
        assert_eq!(read(p, "dir/new"), "l2");
        assert!(!p.join("dir/sub").exists());
        assert!(
            !p.join("replaced/a").exists(),
            "opaque dir must hide the lower contents"
        );
        assert_eq!(read(p, "replaced/b"), "l2");
        assert_eq!(read(p, "overwrite"), "l2");
    };
    let v = s.view("v", "l3", &no_labels()).unwrap();
    assert_eq!(v[0].kind, "overlay");
    with_mounted(&env, "v", &v, check);
    let a = s.prepare("a", "l3", &no_labels()).unwrap();
    with_mounted(&env, "a", &a, |p| {
        check(p);
        write(p, "container-write", "x");
    });
    // A second container from the same image does not see the first one's writes.
    let b = s.prepare("b", "l3", &no_labels()).unwrap();
    with_mounted(&env, "b", &b, |p| {
        assert!(!p.join("container-write").exists())
    });
}

#[test]
fn ownership_modes_xattrs_and_special_files_survive_commit() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| {
        write(p, "private/secret", "s");
        fs::set_permissions(p.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(p.join("private"), Some(1234), Some(5678)).unwrap();
        write(p, "suid", "x");
        fs::set_permissions(p.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        write(p, "sticky/f", "x");
        fs::set_permissions(p.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::lchown(p.join("sticky/f"), Some(42), Some(43)).unwrap();
        symlink("private/secret", p.join("link")).unwrap();
        fs::hard_link(p.join("suid"), p.join("hard")).unwrap();
        set_xattr(&p.join("suid"), "user.note", b"kept");
        set_xattr(
            &p.join("suid"),
            "security.capability",
            &[
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
        let dev = CString::new(p.join("null").as_os_str().as_bytes()).unwrap();
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        let fifo = CString::new(p.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        fs::write(p.join("empty"), b"").unwrap();
        fs::write(p.join("big"), vec![7u8; 3 << 20]).unwrap();
    });
    let v = s.view("v", "base", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        let md = fs::metadata(p.join("private")).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (0o700, 1234, 5678)
        );
        assert_eq!(mode(&p.join("suid")), 0o4755);
        assert_eq!(mode(&p.join("sticky")), 0o1777);
        let f = fs::symlink_metadata(p.join("sticky/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (42, 43));
        assert_eq!(
            fs::read_link(p.join("link")).unwrap(),
            Path::new("private/secret")
        );
        assert_eq!(
            fs::metadata(p.join("hard")).unwrap().ino(),
            fs::metadata(p.join("suid")).unwrap().ino()
        );
        assert_eq!(
            get_xattr(&p.join("suid"), "user.note").as_deref(),
            Some(&b"kept"[..])
        );
        assert!(get_xattr(&p.join("suid"), "security.capability").is_some());
        let null = fs::symlink_metadata(p.join("null")).unwrap();
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &fs::symlink_metadata(p.join("fifo")).unwrap().file_type()
        ));
        assert_eq!(fs::read(p.join("big")).unwrap(), vec![7u8; 3 << 20]);
        assert_eq!(fs::read(p.join("empty")).unwrap(), b"");
    });
    // A new active snapshot's root takes the owner and mode of the image root.
    layer(&env, &s, "owned-root", "", |p| {
        std::os::unix::fs::chown(p, Some(7), Some(8)).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o750)).unwrap();
    });
    let a = s.prepare("a", "owned-root", &no_labels()).unwrap();
    with_mounted(&env, "a", &a, |p| {
        let md = fs::metadata(p).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 7, 8));
    });
}

#[test]
fn immutable_flag_on_and_off() {
    let env = Env::new();
    let on = env.open_with(|c| c.set_immutable = true);
    layer(&env, &on, "c", "", |p| write(p, "f", "x"));
    let blob = blob_of(&on, "c");
    assert!(is_immutable(&blob).unwrap(), "flag set with set_immutable");
    on.remove("c").unwrap();
    on.cleanup().unwrap();
    assert!(
        !blob.exists(),
        "remove clears the flag so the blob can be deleted"
    );
    drop(on);

    let env = Env::new();
    let off = env.open();
    layer(&env, &off, "c", "", |p| write(p, "f", "x"));
    let blob = blob_of(&off, "c");
    assert!(!is_immutable(&blob).unwrap(), "no flag by default");
    // A blob already gone counts as removed.
    let other = blob.with_file_name("layer.erofs");
    fs::remove_file(&other).unwrap();
    off.remove("c").unwrap();
}

#[test]
fn truncated_blob_is_refused_never_mounted() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "c", "", |p| write(p, "f", &"x".repeat(100_000)));
    let blob = blob_of(&s, "c");
    drop(s); // last user: the layer is unmounted
    assert!(mounts_under(&env.root).is_empty());
    // A crash cut the blob short.
    let len = fs::metadata(&blob).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let s = env.open();
    let e = s.prepare("a", "c", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(
        e.message().contains("cut short") && e.message().contains(&blob.display().to_string()),
        "{}",
        e.message()
    );
    let e = s.view("v", "c", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(
        mounts_under(&env.root).is_empty(),
        "nothing mounted from a damaged blob"
    );
    // The failed prepares left nothing behind, and the snapshot can be removed.
    assert_eq!(s.walk(&[]).unwrap().len(), 1);
    s.remove("c").unwrap();
}

#[test]
fn last_close_detaches_layers_but_running_overlays_keep_working() {
    let env = Env::new();
    let s1 = env.open();
    let s2 = env.open(); // another user of the same root
    layer(&env, &s1, "l1", "", |p| write(p, "a", "1"));
    layer(&env, &s1, "l2", "l1", |p| write(p, "b", "2"));
    let m = s1.prepare("ctr", "l2", &no_labels()).unwrap();
    let target = env.target("container");
    mount_all(&m, &target).unwrap();
    assert_eq!(mounts_under(&env.root).len(), 2);
    drop(s1);
    assert_eq!(
        mounts_under(&env.root).len(),
        2,
        "another handle still uses the root"
    );
    drop(s2);
    assert!(
        mounts_under(&env.root).is_empty(),
        "last close detaches the layer mounts"
    );
    // The container's overlay still reads its lowers and writes its upper.
    assert_eq!(read(&target, "a"), "1");
    assert_eq!(read(&target, "b"), "2");
    write(&target, "c", "3");
    unmount_all(&target, false).unwrap();
    // Reopening mounts the layers again on demand.
    let s = env.open();
    let m = s.mounts("ctr").unwrap();
    with_mounted(&env, "again", &m, |p| {
        assert_eq!(read(p, "a"), "1");
        assert_eq!(read(p, "c"), "3");
    });
}

#[test]
fn remove_unmounts_its_layer() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "c", "", |p| write(p, "f", "x"));
    s.prepare("a", "c", &no_labels()).unwrap();
    assert_eq!(mounts_under(&env.root).len(), 1);
    s.remove("a").unwrap();
    s.remove("c").unwrap();
    assert!(mounts_under(&env.root).is_empty());
    s.cleanup().unwrap();
    assert_eq!(fs::read_dir(env.root.join("snapshots")).unwrap().count(), 0);
}

#[test]
fn many_layers_mount_through_mount_all() {
    // containerd's 128LayersMount: too many lowers for one mount(2) page.
    let env = Env::new();
    let s = env.open();
    let mut parent = String::new();
    for i in 0..128 {
        let name = format!("layer-{i}");
        layer(&env, &s, &name, &parent, |p| {
            write(p, "overwriteme", &format!("{i}"));
            write(p, &format!("addhere/file-{i}"), "same");
        });
        parent = name;
    }
    let v = s.view("full", &parent, &no_labels()).unwrap();
    assert!(v[0].options.iter().map(String::len).sum::<usize>() > 4096);
    with_mounted(&env, "full", &v, |p| {
        assert_eq!(read(p, "overwriteme"), "127");
        assert_eq!(fs::read_dir(p.join("addhere")).unwrap().count(), 128);
    });
}

#[test]
fn commit_uses_a_blob_written_by_a_differ() {
    let env = Env::new();
    let s = env.open();
    s.prepare("a", "", &no_labels()).unwrap();
    // A differ writes layer.erofs next to the marker instead of filling fs/.
    let dir = fs::canonicalize(env.root.join("snapshots/1")).unwrap();
    assert!(dir.join(".erofslayer").exists());
    let src = env.dir.path().join("differ-src");
    write(&src, "from-differ", "yes");
    let ok = std::process::Command::new("mkfs.erofs")
        .args(["--quiet", "-b4096"])
        .arg(dir.join("layer.erofs"))
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    s.commit("c", "a", &no_labels()).unwrap();
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| assert_eq!(read(p, "from-differ"), "yes"));
}

#[test]
fn overlay_options_are_passed_through() {
    let env = Env::new();
    let s = env.open_with(|c| c.ovl_mount_options = vec!["redirect_dir=on".into()]);
    layer(&env, &s, "l1", "", |p| write(p, "dir/f", "1"));
    layer(&env, &s, "l2", "l1", |p| {
        fs::rename(p.join("dir"), p.join("renamed")).unwrap()
    });
    let m = s.prepare("a", "l2", &no_labels()).unwrap();
    assert!(m[0].options.contains(&"redirect_dir=on".to_string()));
    with_mounted(&env, "a", &m, |p| {
        assert_eq!(read(p, "renamed/f"), "1");
        assert!(!p.join("dir").exists());
    });
}

#[test]
fn a_layer_unmounted_elsewhere_is_mounted_again() {
    let env = Env::new();
    let a = env.open();
    layer(&env, &a, "c", "", |p| write(p, "f", "x"));
    layer(&env, &a, "unrelated", "", |p| write(p, "g", "y"));
    a.prepare("x", "c", &no_labels()).unwrap(); // `a` now remembers layer c as mounted
    let fs_dir = fs::canonicalize(env.root.join("snapshots/1/fs")).unwrap();
    assert_eq!(mounts_under(&env.root), [fs_dir.to_string_lossy()]);
    // Another user unmounts c's layer; every unmount the library does bumps
    // the mount generation, as this remove in a second handle does.
    unmount_all(&fs_dir, true).unwrap();
    let b = env.open();
    b.remove("unrelated").unwrap();
    // `a` sees the new generation and checks its layers again.
    let m = a.mounts("x").unwrap();
    assert_eq!(mounts_under(&env.root), [fs_dir.to_string_lossy()]);
    with_mounted(&env, "x", &m, |p| assert_eq!(read(p, "f"), "x"));
}

#[test]
fn an_interrupted_retirement_of_the_upper_dir_is_finished() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "c", "", |p| write(p, "f", "layer"));
    drop(s); // the layer is unmounted
    let dir = env.root.join("snapshots/1");
    assert!(dir.join("fs").is_dir() && !dir.join("work").exists());
    // A commit that stopped after recording: the upper dir and work dir in place ...
    fs::rename(dir.join("fs"), dir.join("work")).unwrap();
    fs::create_dir(dir.join("fs")).unwrap();
    write(&dir.join("fs"), "stale-upper-file", "x");
    let s = env.open();
    s.cleanup().unwrap();
    assert!(!dir.join("fs/stale-upper-file").exists() && !dir.join("work").exists());
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| assert_eq!(read(p, "f"), "layer"));
    drop(s);
    // ... or one that stopped with no fs/ at all: mounting makes the mount point.
    fs::remove_dir(dir.join("fs")).unwrap();
    let s = env.open();
    let v = s.view("v2", "c", &no_labels()).unwrap();
    with_mounted(&env, "v2", &v, |p| assert_eq!(read(p, "f"), "layer"));
    s.prepare("a", "c", &no_labels()).unwrap();
}

#[test]
fn commit_reads_files_and_xattrs_of_every_size() {
    // The commit walk reads small files itself, stats a directory's entries
    // ahead of the writer, and sizes its xattr buffers by need: files on
    // both sides of each bound, a directory longer than the look-ahead,
    // and xattr values and lists longer than a first guess.
    let env = Env::new();
    let s = env.open();
    let sizes = [0usize, 1, 4095, 4096, 16383, 16384, 16385, 1 << 20];
    let content = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
    };
    layer(&env, &s, "base", "", |p| {
        for (i, n) in sizes.iter().enumerate() {
            fs::write(p.join(format!("size-{n}")), content(*n, i)).unwrap();
        }
        fs::create_dir(p.join("many")).unwrap();
        for i in 0..300 {
            fs::write(p.join(format!("many/{i:04}")), content(i * 50, i)).unwrap();
        }
        set_xattr(&p.join("size-1"), "user.big", &vec![b'v'; 4000]);
        for i in 0..40 {
            let name = format!("user.{}-{i:02}", "n".repeat(50));
            set_xattr(&p.join("size-0"), &name, format!("{i}").as_bytes());
        }
    });
    let v = s.view("v", "base", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        for (i, n) in sizes.iter().enumerate() {
            assert_eq!(
                fs::read(p.join(format!("size-{n}"))).unwrap(),
                content(*n, i)
            );
        }
        for i in 0..300 {
            let got = fs::read(p.join(format!("many/{i:04}"))).unwrap();
            assert_eq!(got, content(i * 50, i), "many/{i:04}");
        }
        assert_eq!(fs::read_dir(p.join("many")).unwrap().count(), 300);
        assert_eq!(
            get_xattr(&p.join("size-1"), "user.big"),
            Some(vec![b'v'; 4000])
        );
        for i in 0..40 {
            let name = format!("user.{}-{i:02}", "n".repeat(50));
            assert_eq!(
                get_xattr(&p.join("size-0"), &name),
                Some(format!("{i}").into_bytes()),
                "{name}"
            );
        }
    });
}

#[test]
fn a_mount_inside_the_upper_dir_fails_the_commit_and_keeps_the_snapshot() {
    let env = Env::new();
    let s = env.open();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    let upper = snapshot_dir(&m).join("fs");
    for i in 0..100 {
        write(&upper, &format!("d/{i:03}"), "x");
    }
    fs::create_dir(upper.join("d/mnt")).unwrap();
    mount_all(
        &[erofs_snapshotter::Mount {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: None,
            options: vec![],
        }],
        &upper.join("d/mnt"),
    )
    .unwrap();
    let e = s.commit("c", "a", &no_labels()).unwrap_err();
    unmount_all(&upper.join("d/mnt"), false).unwrap();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(
        e.message()
            .contains("d/mnt is a mount point inside the upper dir"),
        "{e}"
    );
    // Nothing changed: the same snapshot commits once the mount is gone.
    assert!(blobs_in(&snapshot_dir(&m)).is_empty());
    assert_eq!(s.stat("a").unwrap().kind, erofs_snapshotter::Kind::Active);
    s.commit("c", "a", &no_labels()).unwrap();
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(read(p, "d/099"), "x");
        assert!(p.join("d/mnt").is_dir());
    });
}
