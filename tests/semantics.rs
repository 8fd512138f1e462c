//! containerd's snapshotter contract: kinds, parents, errors, labels, walk,
//! usage and cleanup, against the real kernel and mkfs.erofs.

mod common;

use std::fs;

use common::*;
use erofs_snapshotter::{ErrorKind, InfoUpdate, Kind, Snapshotter};

fn kind_of<T: std::fmt::Debug>(r: erofs_snapshotter::Result<T>) -> (ErrorKind, String) {
    let e = r.unwrap_err();
    (e.kind(), e.message().to_string())
}

#[test]
fn lifecycle_prepare_commit_view_remove() {
    let env = Env::new();
    let s = env.open();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].options, ["rw", "rbind"]);
    with_mounted(&env, "a", &m, |p| {
        // containerd's RootPermission check.
        assert_eq!(mode(p), 0o755);
        write(p, "etc/hello", "hello");
    });
    assert_eq!(s.mounts("a").unwrap(), m);
    s.commit("base", "a", &labels(&[("l", "1")])).unwrap();
    assert_eq!(s.stat("a").unwrap_err().kind(), ErrorKind::NotFound);
    let info = s.stat("base").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.labels, labels(&[("l", "1")]));
    assert_eq!(info.created, info.updated);

    // A view of one layer is that layer's image.
    let v = s.view("v", "base", &no_labels()).unwrap();
    assert_eq!(v[0].kind, "erofs");
    assert!(v[0].source.ends_with("/layer.erofs"), "{v:?}");
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(read(p, "etc/hello"), "hello");
        // Views are read-only (containerd's ViewReadonly).
        assert!(fs::write(p.join("x"), "x").is_err());
    });
    // An empty view is a read-only bind mount.
    let e = s.view("empty", "", &no_labels()).unwrap();
    assert_eq!(e[0].options, ["ro", "rbind"]);
    with_mounted(&env, "empty", &e, |p| {
        assert!(fs::write(p.join("x"), "x").is_err())
    });

    s.remove("v").unwrap();
    s.remove("empty").unwrap();
    s.remove("base").unwrap();
    assert!(s.walk(&[]).unwrap().is_empty());
}

#[test]
fn error_classes_follow_containerd() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "c1", "", |p| write(p, "f", "1"));
    s.prepare("a1", "c1", &no_labels()).unwrap();
    s.view("v1", "c1", &no_labels()).unwrap();

    let (k, m) = kind_of(s.prepare("x", "missing", &no_labels()));
    assert_eq!(k, ErrorKind::NotFound);
    assert!(m.contains("\"missing\""), "{m}");
    let (k, m) = kind_of(s.prepare("x", "a1", &no_labels()));
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(m.contains("not a committed"), "{m}");
    assert_eq!(
        kind_of(s.prepare("a1", "", &no_labels())).0,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind_of(s.view("c1", "", &no_labels())).0,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind_of(s.prepare("", "", &no_labels())).0,
        ErrorKind::InvalidArgument
    );
    let (k, m) = kind_of(s.commit("c2", "v1", &no_labels()));
    assert_eq!(k, ErrorKind::FailedPrecondition, "{m}");
    assert!(m.contains("view"), "{m}");
    assert_eq!(
        kind_of(s.commit("c2", "c1", &no_labels())).0,
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind_of(s.commit("c2", "nope", &no_labels())).0,
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(s.commit("c1", "a1", &no_labels())).0,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind_of(s.commit("", "a1", &no_labels())).0,
        ErrorKind::InvalidArgument
    );
    let (k, m) = kind_of(s.remove("c1"));
    assert_eq!(k, ErrorKind::FailedPrecondition);
    assert!(m.contains("children"), "{m}");
    assert_eq!(kind_of(s.remove("nope")).0, ErrorKind::NotFound);
    assert_eq!(kind_of(s.stat("nope")).0, ErrorKind::NotFound);
    assert_eq!(kind_of(s.mounts("nope")).0, ErrorKind::NotFound);
    assert_eq!(kind_of(s.mounts("c1")).0, ErrorKind::FailedPrecondition);
    assert_eq!(kind_of(s.usage("nope")).0, ErrorKind::NotFound);
    let (k, m) = kind_of(s.walk(&["name==".to_string()]));
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(m.contains("name=="), "{m}");
    let big = "v".repeat(4096);
    let (k, m) = kind_of(s.prepare("x", "", &labels(&[("k", &big)])));
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(m.contains("4097"), "{m}");
    // Every failure above left the snapshots as they were.
    let names: Vec<String> = s.walk(&[]).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["a1", "c1", "v1"]);
    // ... and after removing the children the parent can go.
    s.remove("a1").unwrap();
    s.remove("v1").unwrap();
    s.remove("c1").unwrap();
}

/// containerd's `WithParent` at commit (`storage.CommitActive`): a snapshot
/// prepared without a parent takes the one given, and then its chain is
/// that parent's: the mounts of what is made on it, removal order, walks.
#[test]
fn commit_with_a_parent_rebases_a_parentless_snapshot() {
    let env = Env::new();
    let s = env.open();
    let m = s.prepare("a0", "", &no_labels()).unwrap();
    with_mounted(&env, "a0", &m, |p| write(p, "base", "0"));
    s.commit("c0", "a0", &no_labels()).unwrap();
    // Prepared with no parent, written, committed onto c0.
    let m = s.prepare("a1", "", &no_labels()).unwrap();
    assert_eq!(m[0].kind, "bind");
    with_mounted(&env, "a1", &m, |p| write(p, "top", "1"));
    s.commit_with_parent("c1", "a1", "c0", &no_labels())
        .unwrap();
    assert_eq!(s.stat("c1").unwrap().parent, "c0");
    let v = s.view("v", "c1", &no_labels()).unwrap();
    assert_eq!(v[0].kind, "overlay", "two layers: {v:?}");
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(read(p, "base"), "0");
        assert_eq!(read(p, "top"), "1");
    });
    let (k, m) = kind_of(s.remove("c0"));
    assert_eq!(k, ErrorKind::FailedPrecondition, "{m}");
    let walked = s.walk(&["parent==c0".to_string()]).unwrap();
    assert_eq!(walked.len(), 1);
    assert_eq!(walked[0].name, "c1");

    // A layer containerd's parallel unpack prepares without its parent
    // (labelled with the parent's chain ID) is an overlay on an empty lower
    // dir, which mount(2) takes as it is: an applier writing into it keeps
    // whiteouts and opaque directories as overlayfs does (as containerd's
    // walking differ does for an overlay), and the rebased layer hides what
    // is below it. containerd issue #13030.
    let unpack = labels(&[("containerd.io/snapshot/parent-chain-id", "sha256:c1")]);
    let m = s.prepare("a2", "", &unpack).unwrap();
    assert_eq!(m[0].kind, "overlay", "{m:?}");
    let empty = fs::canonicalize(env.root.join("empty")).unwrap();
    assert!(
        m[0].options
            .contains(&format!("lowerdir={}", empty.display())),
        "{m:?}"
    );
    assert_eq!(s.mounts("a2").unwrap(), m);
    with_mounted(&env, "a2", &m, |p| write(p, "new", "2"));
    let upper = m[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap();
    let upper = std::path::Path::new(upper);
    // What containerd's archive.Apply writes for `.wh.top` and `.wh.base`.
    for name in ["top", "base"] {
        let c =
            std::ffi::CString::new(upper.join(name).into_os_string().into_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
    }
    s.commit_with_parent("c2", "a2", "c1", &no_labels())
        .unwrap();
    let v = s.view("v2", "c2", &no_labels()).unwrap();
    with_mounted(&env, "v2", &v, |p| {
        assert_eq!(read(p, "new"), "2");
        assert!(!p.join("top").exists() && !p.join("base").exists());
    });
    assert_eq!(
        fs::read_dir(&empty).unwrap().count(),
        0,
        "the lower stays empty"
    );

    // The errors of containerd's storage, and a failed commit changes nothing.
    s.prepare("b", "", &no_labels()).unwrap();
    let (k, m) = kind_of(s.commit_with_parent("bc", "b", "nope", &no_labels()));
    assert_eq!(k, ErrorKind::NotFound, "{m}");
    assert!(m.contains("nope"), "{m}");
    let (k, m) = kind_of(s.commit_with_parent("bc", "b", "v", &no_labels()));
    assert_eq!(k, ErrorKind::FailedPrecondition, "{m}");
    assert_eq!(s.stat("b").unwrap().kind, Kind::Active);
    s.prepare("on-c0", "c0", &no_labels()).unwrap();
    let (k, m) = kind_of(s.commit_with_parent("x", "on-c0", "c1", &no_labels()));
    assert_eq!(k, ErrorKind::InvalidArgument, "{m}");
    assert!(m.contains("c0") && m.contains("c1"), "{m}");
    // Its own parent, or none, is no change.
    s.commit_with_parent("x", "on-c0", "c0", &no_labels())
        .unwrap();
    assert_eq!(s.stat("x").unwrap().parent, "c0");
    s.commit_with_parent("bc", "b", "", &no_labels()).unwrap();
    assert_eq!(s.stat("bc").unwrap().parent, "");
}

/// overlayfs stacks at most 500 lower directories: a chain that deep still
/// mounts, one layer more is refused at prepare with a short message, and a
/// mount of more is refused before the kernel with a message that does not
/// list every directory.
#[test]
fn past_500_layers_the_error_is_early_and_short() {
    let env = Env::new();
    let s = env.open();
    let mut parent = String::new();
    for i in 0..500 {
        s.prepare(&format!("a{i}"), &parent, &no_labels()).unwrap();
        s.commit(&format!("c{i}"), &format!("a{i}"), &no_labels())
            .unwrap();
        parent = format!("c{i}");
    }
    let m = s.prepare("top", "c499", &no_labels()).unwrap();
    with_mounted(&env, "top", &m, |p| write(p, "f", "500 layers below"));
    s.commit("c500", "top", &no_labels()).unwrap();
    let (k, msg) = kind_of(s.prepare("over", "c500", &no_labels()));
    assert_eq!(k, ErrorKind::InvalidArgument, "{msg}");
    assert!(msg.contains("501 layers") && msg.contains("500"), "{msg}");
    assert!(msg.len() < 300, "{msg}");
    // A mount of 501 lower directories given by hand.
    let lower: Vec<String> = (0..501)
        .map(|i| env.root.join(format!("x{i}")).display().to_string())
        .collect();
    let target = env.target("many");
    let e = erofs_snapshotter::mount_all(
        &[erofs_snapshotter::Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec!["ro".into(), format!("lowerdir={}", lower.join(":"))],
        }],
        &target,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("501 directories") && e.message().len() < 1000,
        "{e}"
    );
}

#[test]
fn keys_are_arbitrary_and_never_paths() {
    let env = Env::new();
    let s = env.open();
    let keys = [
        "../../../../escape",
        "/etc/passwd",
        "with space\tand tab",
        "ünïcødé/🙂",
        "a/../b",
        &"k".repeat(2000),
    ];
    for k in keys {
        s.prepare(k, "", &no_labels()).unwrap();
        assert_eq!(s.stat(k).unwrap().name, k);
    }
    for ent in fs::read_dir(env.root.join("snapshots")).unwrap() {
        let name = ent.unwrap().file_name().into_string().unwrap();
        assert!(name.bytes().all(|b| b.is_ascii_digit()), "{name}");
    }
    assert!(!env.dir.path().join("escape").exists());
    for k in keys {
        s.commit(&format!("c:{k}"), k, &no_labels()).unwrap();
        s.remove(&format!("c:{k}")).unwrap();
    }
}

#[test]
fn update_follows_field_paths() {
    let env = Env::new();
    let s = env.open();
    s.prepare(
        "a",
        "",
        &labels(&[("l1", "v1"), ("l2", "v2"), ("l3", "v3")]),
    )
    .unwrap();
    let before = s.stat("a").unwrap();
    let upd = |pairs: &[(&str, &str)]| InfoUpdate {
        name: "a".into(),
        labels: labels(pairs),
    };
    let fp = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let info = s
        .update(
            &upd(&[("l1", "updated"), ("l4", "v4")]),
            &fp(&["labels.l1", "labels.l2"]),
        )
        .unwrap();
    assert_eq!(info.labels, labels(&[("l1", "updated"), ("l3", "v3")]));
    assert_eq!(info.created, before.created);
    assert!(info.updated > before.updated);
    assert_eq!(s.stat("a").unwrap(), info);
    let info = s.update(&upd(&[("l4", "v4")]), &fp(&["labels"])).unwrap();
    assert_eq!(info.labels, labels(&[("l4", "v4")]));
    let info = s.update(&upd(&[("x", "y")]), &[]).unwrap();
    assert_eq!(info.labels, labels(&[("x", "y")]));
    let (k, m) = kind_of(s.update(&upd(&[]), &fp(&["parent"])));
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(m.contains("parent"), "{m}");
    let big = "v".repeat(5000);
    assert_eq!(
        kind_of(s.update(&upd(&[("k", &big)]), &[])).0,
        ErrorKind::InvalidArgument
    );
    assert_eq!(s.stat("a").unwrap().labels, labels(&[("x", "y")]));
    let missing = InfoUpdate {
        name: "nope".into(),
        labels: Default::default(),
    };
    assert_eq!(kind_of(s.update(&missing, &[])).0, ErrorKind::NotFound);
}

#[test]
fn walk_filters_like_containerds_suite() {
    let env = Env::new();
    let s = env.open();
    let gc = ("containerd.io/gc.root", "check-walk");
    s.prepare("a-np", "", &labels(&[gc])).unwrap();
    s.prepare("p-tmp", "", &labels(&[gc])).unwrap();
    s.commit("p", "p-tmp", &labels(&[gc])).unwrap();
    s.prepare("a", "p", &labels(&[gc])).unwrap();
    s.view("v", "p", &labels(&[gc])).unwrap();
    s.prepare("p-wl-tmp", "", &labels(&[gc])).unwrap();
    s.commit("p-wl", "p-wl-tmp", &labels(&[("l", "1"), gc]))
        .unwrap();
    s.prepare("a-wl", "p-wl", &labels(&[("l", "2"), gc]))
        .unwrap();
    s.view("v-wl", "p-wl", &labels(&[("l", "3"), gc])).unwrap();
    s.prepare("a-np-wl", "", &labels(&[("l", "2"), gc]))
        .unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["labels.\"containerd.io/gc.root\"==check-walk"],
            &["a", "a-np", "a-np-wl", "a-wl", "p", "p-wl", "v", "v-wl"],
        ),
        (
            &["kind==active,labels.\"containerd.io/gc.root\"==check-walk"],
            &["a", "a-np", "a-np-wl", "a-wl"],
        ),
        (
            &["kind==view,labels.\"containerd.io/gc.root\"==check-walk"],
            &["v", "v-wl"],
        ),
        (
            &["kind==committed,labels.\"containerd.io/gc.root\"==check-walk"],
            &["p", "p-wl"],
        ),
        (&["name==p", "name==a-np-wl"], &["a-np-wl", "p"]),
        (&["name==a-wl,labels.l"], &["a-wl"]),
        (&["parent==p"], &["a", "v"]),
        (
            &["parent!=\"\",labels.\"containerd.io/gc.root\"==check-walk"],
            &["a", "a-wl", "v", "v-wl"],
        ),
        (&["labels.l"], &["a-np-wl", "a-wl", "p-wl", "v-wl"]),
        (&["labels.l==2"], &["a-np-wl", "a-wl"]),
        (&["name~=^a-"], &["a-np", "a-np-wl", "a-wl"]),
    ];
    for (filters, want) in cases {
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let got: Vec<String> = s
            .walk(&filters)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(got, *want, "filters {filters:?}");
    }
}

#[test]
fn usage_of_active_and_committed() {
    let env = Env::new();
    let s = env.open();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    with_mounted(&env, "a", &m, |p| {
        fs::write(p.join("big"), vec![1u8; 1 << 20]).unwrap();
        fs::create_dir(p.join("d")).unwrap();
    });
    let u = s.usage("a").unwrap();
    assert!(u.size >= 1 << 20, "{u:?}");
    assert_eq!(u.inodes, 3, "root, file, dir: {u:?}");
    s.commit("c", "a", &no_labels()).unwrap();
    let u = s.usage("c").unwrap();
    let blob = fs::read_dir(env.root.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("layer.erofs");
    assert_eq!(
        u.size as u64,
        fs::metadata(&blob)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap()
    );
    assert_eq!(u.inodes, 1);
}

#[test]
fn cleanup_removes_orphans_but_not_live_staging() {
    let env = Env::new();
    let s = env.open();
    s.prepare("keep", "", &no_labels()).unwrap();
    let snaps = env.root.join("snapshots");
    // A directory no snapshot owns (e.g. from a crash between rename and commit).
    fs::create_dir_all(snaps.join("999/fs/junk")).unwrap();
    // A staging directory whose creator died (no lock held) ...
    fs::create_dir_all(snaps.join("new-dead/fs")).unwrap();
    // ... and one a concurrent prepare still holds.
    let live = snaps.join("new-live");
    fs::create_dir_all(live.join("fs")).unwrap();
    let lock = fs::File::open(&live).unwrap();
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    // An unfinished blob left by an interrupted commit.
    let keep_dir = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(".erofslayer").exists())
        .unwrap();
    fs::write(keep_dir.join(".layer.erofs.tmp-1-1"), b"partial").unwrap();

    s.cleanup().unwrap();
    assert!(!snaps.join("999").exists());
    assert!(!snaps.join("new-dead").exists());
    assert!(
        live.exists(),
        "a staging directory in use must survive cleanup"
    );
    assert!(!keep_dir.join(".layer.erofs.tmp-1-1").exists());
    assert!(keep_dir.join("fs").is_dir());
    assert_eq!(fs::read_dir(env.root.join("trash")).unwrap().count(), 0);
    s.mounts("keep").unwrap();
    drop(lock);
    s.cleanup().unwrap();
    assert!(!live.exists());
}

#[test]
fn root_layout_and_permissions() {
    let env = Env::new();
    let s = env.open();
    s.prepare("a", "", &no_labels()).unwrap();
    for d in ["", "snapshots", "trash", "empty"] {
        assert_eq!(mode(&env.root.join(d)), 0o700, "{d}");
    }
    assert!(env.root.join("metadata.db").is_file());
    let dir = env.root.join("snapshots/1");
    assert!(
        dir.join("fs").is_dir() && dir.join("work").is_dir() && dir.join(".erofslayer").is_file()
    );
    // Every descriptor the library keeps open under the root is close-on-exec.
    let root = fs::canonicalize(&env.root).unwrap();
    let mut checked = 0;
    for ent in fs::read_dir("/proc/self/fd").unwrap() {
        let ent = ent.unwrap();
        let Ok(target) = fs::read_link(ent.path()) else {
            continue;
        };
        if !target.starts_with(&root) {
            continue;
        }
        let fd: i32 = ent.file_name().to_str().unwrap().parse().unwrap();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(
            flags >= 0 && flags & libc::FD_CLOEXEC != 0,
            "fd {fd} -> {target:?} lacks O_CLOEXEC"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the database and lock files open, saw {checked}"
    );
    drop(s);
}

#[test]
fn threads_share_one_handle() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "base"));
    std::thread::scope(|scope| {
        for t in 0..6 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..5 {
                    let key = format!("t{t}-{i}");
                    s.prepare(&key, "base", &labels(&[("t", &t.to_string())]))
                        .unwrap();
                    s.mounts(&key).unwrap();
                    s.commit(&format!("{key}-c"), &key, &no_labels()).unwrap();
                    s.view(&format!("{key}-v"), &format!("{key}-c"), &no_labels())
                        .unwrap();
                    s.remove(&format!("{key}-v")).unwrap();
                    s.remove(&format!("{key}-c")).unwrap();
                }
            });
        }
    });
    assert_eq!(s.walk(&[]).unwrap().len(), 1);
}

#[test]
fn open_rejects_bad_configuration_and_machines() {
    let env = Env::new();
    let (k, m) = kind_of(erofs_snapshotter::Config::from_json(
        r#"{"root": "/r", "mkfs_options": ["-T0 --mkfs-time"]}"#,
    ));
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(m.contains("mkfs_options"), "{m}");
    // A mkfs_path the configuration names is checked, even when the
    // built-in writer needs no mkfs.erofs (tests/no-erofs-utils.sh opens
    // the default configuration on a PATH without one)...
    let mut c = env.config();
    c.mkfs_path = "/nonexistent/mkfs.erofs".into();
    let (k, m) = kind_of(Snapshotter::open(c.clone()));
    assert_eq!(k, ErrorKind::Unavailable);
    assert!(m.contains("config field \"mkfs_path\""), "{m}");
    // ...and an option only mkfs.erofs implements says which.
    c.mkfs_options = vec!["-x2".into()];
    let (k, m) = kind_of(Snapshotter::open(c));
    assert_eq!(k, ErrorKind::Unavailable);
    assert!(
        m.contains("mkfs.erofs") && m.contains("install") && m.contains("\"-x2\""),
        "{m}"
    );
    // An mkfs.erofs that is too old.
    let fake = env.dir.path().join("old-mkfs.erofs");
    fs::write(&fake, "#!/bin/sh\necho 'mkfs.erofs (erofs-utils) 1.5'\n").unwrap();
    chmod(&fake, 0o755);
    let mut c = env.config();
    c.mkfs_options = vec!["-x2".into()];
    c.mkfs_path = fake.to_string_lossy().into_owned();
    let (k, m) = kind_of(Snapshotter::open(c));
    assert_eq!(k, ErrorKind::Unavailable);
    assert!(m.contains("1.5.0") && m.contains("1.8"), "{m}");
}

/// This machine's kernel has no fs-verity: open must say so. (On a kernel and
/// filesystem with fs-verity, the commit path is exercised instead.)
#[test]
fn fsverity_needs_support_from_the_root_filesystem() {
    let env = Env::new();
    let mut c = env.config();
    c.enable_fsverity = true;
    match Snapshotter::open(c) {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable);
            assert!(
                e.message().contains("fs-verity") && e.message().contains("enable_fsverity"),
                "{}",
                e.message()
            );
        }
        Ok(s) => {
            layer(&env, &s, "c", "", |p| write(p, "f", "x"));
            s.view("v", "c", &no_labels()).unwrap();
        }
    }
}

/// A slow commit (here: an mkfs.erofs that takes two seconds) holds no lock
/// other operations need: they complete while it converts.
#[test]
fn a_slow_commit_does_not_block_other_operations() {
    let env = Env::new();
    let slow = env.dir.path().join("slow-mkfs.erofs");
    fs::write(
        &slow,
        "#!/bin/sh\ncase \"$1\" in --version) ;; *) sleep 2 ;; esac\nexec mkfs.erofs \"$@\"\n",
    )
    .unwrap();
    chmod(&slow, 0o755);
    let fast = env.open();
    layer(&env, &fast, "other", "", |p| write(p, "f", "x"));
    let s = env.open_with(|c| {
        c.mkfs_path = slow.to_string_lossy().into_owned();
        // An option only mkfs.erofs implements sends the commit through it.
        c.mkfs_options = vec!["-x2".into()];
    });
    s.prepare("slow", "", &no_labels()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            s.commit("slow-c", "slow", &no_labels()).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Meanwhile: reads, a prepare, a view, label updates and a remove.
        s.prepare("during", "other", &no_labels()).unwrap();
        s.view("during-v", "other", &no_labels()).unwrap();
        s.stat("slow").unwrap();
        s.walk(&[]).unwrap();
        s.update(
            &InfoUpdate {
                name: "other".into(),
                labels: labels(&[("k", "v")]),
            },
            &[],
        )
        .unwrap();
        s.remove("during-v").unwrap();
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "the other operations should have finished while the commit was converting"
        );
    });
    assert_eq!(s.stat("slow-c").unwrap().kind, Kind::Committed);
}

/// A cleanup with a lot to unmount holds no lock writers need. Here an
/// orphaned directory has thousands of mounts stacked on its `fs/`, which
/// cleanup detaches one `umount2` at a time (about a second). (A layer kept
/// busy by an open file would not slow it down: the library detaches lazily,
/// and a lazy unmount never fails with EBUSY.) Before: the prepare of another
/// handle waited for the whole unmounting, inside cleanup's transaction.
#[test]
fn a_slow_cleanup_does_not_block_writers() {
    use std::time::{Duration, Instant};
    const STACKED: usize = 7000;
    let env = Env::new();
    let s = env.open();
    let other = env.open();
    let orphan = env.root.join("snapshots/999");
    let fs_dir = orphan.join("fs");
    fs::create_dir_all(&fs_dir).unwrap();
    let tmpfs = erofs_snapshotter::Mount {
        kind: "tmpfs".into(),
        source: "tmpfs".into(),
        target: None,
        options: vec!["size=64k".into()],
    };
    for _ in 0..STACKED {
        erofs_snapshotter::mount_all(std::slice::from_ref(&tmpfs), &fs_dir).unwrap();
    }
    let (cleanup_took, prepare_took, prepare_done) = std::thread::scope(|scope| {
        let start = Instant::now();
        let s = &s;
        let cleanup = scope.spawn(move || {
            s.cleanup().unwrap();
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        other.prepare("during", "", &no_labels()).unwrap();
        let prepare_took = t.elapsed();
        let prepare_done = start.elapsed();
        (cleanup.join().unwrap(), prepare_took, prepare_done)
    });
    eprintln!(
        "cleanup of {STACKED} stacked mounts: {cleanup_took:?}; a prepare started at 100 ms \
         took {prepare_took:?} (done at {prepare_done:?})"
    );
    assert!(
        cleanup_took >= Duration::from_millis(500),
        "the unmounting was too fast to show anything: {cleanup_took:?}"
    );
    assert!(
        prepare_took < Duration::from_millis(250) && prepare_done * 2 < cleanup_took,
        "the prepare waited for cleanup: it took {prepare_took:?}, done at {prepare_done:?}, \
         cleanup took {cleanup_took:?}"
    );
    assert!(!orphan.exists());
    assert!(mounts_under(&env.root).is_empty());
    assert_eq!(fs::read_dir(env.root.join("trash")).unwrap().count(), 0);
    assert_eq!(s.stat("during").unwrap().kind, Kind::Active);
}

#[test]
fn bad_roots_name_the_field() {
    let env = Env::new();
    let file = env.dir.path().join("a-file");
    fs::write(&file, "").unwrap();
    for root in [
        file.join("root"),
        std::path::PathBuf::from("/proc/no-such-root"),
    ] {
        let mut c = env.config();
        c.root = root;
        let (k, m) = kind_of(Snapshotter::open(c));
        assert_eq!(k, ErrorKind::InvalidArgument, "{m}");
        assert!(m.contains("config field \"root\""), "{m}");
    }
}

#[test]
fn background_deletion_failures_reach_the_host_logger() {
    let env = Env::new();
    let (logger, seen) = capturing_logger();
    let s = Snapshotter::open_with_logger(env.config(), logger).unwrap();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    let pinned = std::path::PathBuf::from(&m[0].source).join("pinned");
    fs::write(&pinned, "x").unwrap();
    erofs_snapshotter::integrity::set_immutable(&pinned, true).unwrap();
    s.remove("a").unwrap();
    // The background deletion reports it (close does not wait for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("could not delete"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(s);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.contains("could not delete") && m.contains("Operation not permitted")),
        "{seen:?}"
    );
}

/// A staging directory that cannot be removed (here: `snapshots/` is
/// append-only, so nothing can leave it) is reported to the host's logger,
/// not only to `tracing`; cleanup deletes it later.
#[test]
fn staging_removal_failures_reach_the_host_logger() {
    use std::process::Command;
    let env = Env::new();
    let (logger, seen) = capturing_logger();
    let s = Snapshotter::open_with_logger(env.config(), logger).unwrap();
    s.prepare("a", "", &no_labels()).unwrap();
    let snaps = env.root.join("snapshots");
    let chattr = |flag: &str| {
        let ok = Command::new("chattr")
            .arg(flag)
            .arg(&snaps)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chattr {flag} {}", snaps.display());
    };
    struct Undo<F: Fn(&str)>(F);
    impl<F: Fn(&str)> Drop for Undo<F> {
        fn drop(&mut self) {
            (self.0)("-a");
        }
    }
    chattr("+a");
    let undo = Undo(chattr);
    // The key exists: the new staging directory is dropped, and cannot go.
    let (k, _) = kind_of(s.prepare("a", "", &no_labels()));
    assert_eq!(k, ErrorKind::AlreadyExists);
    drop(undo);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.contains("could not remove staging directory")
                && m.contains("Operation not permitted")),
        "{seen:?}"
    );
    s.cleanup().unwrap();
    let left: Vec<_> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
