//! ID-mapped layers (containerd's `remap-ids`): a container in a user
//! namespace sees the layers' files owned by its own IDs, without a chown,
//! and what it writes lands in its upper dir with the mapped host IDs.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use erofs_snapshotter::{mount_all, ErrorKind, Mount};

const UIDMAP: &str = "containerd.io/snapshot/uidmapping";
const GIDMAP: &str = "containerd.io/snapshot/gidmapping";

/// Host IDs of the container's root: uid 100000, gid 200000.
fn mapped() -> erofs_snapshotter::Labels {
    labels(&[(UIDMAP, "0:100000:65536"), (GIDMAP, "0:200000:65536")])
}

fn owner(p: &Path) -> (u32, u32) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

/// Runs `script` with `sh` as root (uid 0, gid 0) of a new user namespace
/// mapping 0 to host 100000 (uids) and 200000 (gids), 65536 of each, in
/// this mount namespace; returns its standard output. A holder process
/// makes the namespace; its maps are written from here, then `nsenter`
/// joins it as its root.
fn in_user_namespace(script: &str) -> String {
    let mut holder = Command::new("unshare")
        .args(["--user", "sh", "-c", "read go"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let ns = format!("/proc/{pid}/ns/user");
    // Until the holder is in its namespace, ns/user is this process's.
    let mine = fs::read_link("/proc/self/ns/user").unwrap();
    while fs::read_link(&ns).unwrap() == mine {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536\n").unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), "0 200000 65536\n").unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--user={ns}"))
        .args(["--setuid=0", "--setgid=0", "sh", "-ec", script])
        .output()
        .unwrap();
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    holder.wait().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_container_in_a_user_namespace_sees_its_own_ids_and_writes_mapped_ones() {
    let env = Env::new();
    let s = env.open();
    assert!(
        s.capabilities().contains(&"remap-ids"),
        "kernel 6.18 mounts EROFS through ID-mapped mounts: {:?} ({:?})",
        s.capabilities(),
        s.remap_ids_supported()
    );
    layer(&env, &s, "base", "", |p| {
        write(p, "etc/hostname", "base\n");
        write(p, "home/user/notes", "mine\n");
        chown(p.join("home/user"), Some(1000), Some(1000)).unwrap();
        chown(p.join("home/user/notes"), Some(1000), Some(1001)).unwrap();
    });
    layer(&env, &s, "top", "base", |p| write(p, "etc/motd", "top\n"));

    let mounts = s.prepare("ctr", "top", &mapped()).unwrap();
    let opts = &mounts[0].options;
    let at = |o: &str| opts.iter().position(|x| x == o).unwrap();
    let lower = opts
        .iter()
        .position(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert!(at("uidmap=0:100000:65536") < lower, "{opts:?}");
    assert!(at("gidmap=0:200000:65536") < lower, "{opts:?}");
    // The upper dir is the container root's, as containerd's snapshotter makes it.
    let upper = snapshot_dir(&mounts).join("fs");
    assert_eq!(owner(&upper), (100000, 200000));

    with_mounted(&env, "ctr", &mounts, |root| {
        // The host sees the layers' files through the mapping...
        assert_eq!(owner(&root.join("etc/hostname")), (100000, 200000));
        assert_eq!(owner(&root.join("home/user/notes")), (101000, 201001));
        // ... the container its own IDs, and it writes as its root.
        let seen = in_user_namespace(&format!(
            "cd {}; stat -c \"%u %g %n\" etc/hostname etc/motd home/user/notes; \
             echo new > etc/new; mkdir home/user/dir; chown 1000:1000 home/user/dir; \
             echo changed >> etc/hostname",
            root.display()
        ));
        assert_eq!(
            seen,
            "0 0 etc/hostname\n0 0 etc/motd\n1000 1001 home/user/notes\n"
        );
    });
    // What it wrote is in the upper dir with the host IDs.
    assert_eq!(owner(&upper.join("etc/new")), (100000, 200000));
    assert_eq!(owner(&upper.join("home/user/dir")), (101000, 201000));
    assert_eq!(owner(&upper.join("etc/hostname")), (100000, 200000));
    assert_eq!(read(&upper, "etc/hostname"), "base\nchanged\n");
    // The layers themselves are untouched: nothing was chowned.
    let v = s.view("plain", "top", &no_labels()).unwrap();
    with_mounted(&env, "plain", &v, |root| {
        assert_eq!(owner(&root.join("etc/hostname")), (0, 0));
        assert_eq!(owner(&root.join("home/user/notes")), (1000, 1001));
    });
    // mounts() says the same as prepare did.
    assert_eq!(s.mounts("ctr").unwrap(), mounts);
}

#[test]
fn a_view_of_one_layer_is_mapped_too() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "x"));
    let mounts = s.view("v", "base", &mapped()).unwrap();
    assert_eq!(mounts.len(), 1);
    assert!(
        mounts[0]
            .options
            .contains(&"uidmap=0:100000:65536".to_string()),
        "{mounts:?}"
    );
    with_mounted(&env, "v", &mounts, |root| {
        assert_eq!(owner(&root.join("f")), (100000, 200000));
        assert_eq!(
            in_user_namespace(&format!("stat -c %u:%g {}/f", root.display())),
            "0:0\n"
        );
    });
}

#[test]
fn a_snapshot_without_parent_has_its_upper_dir_owned_by_the_mapped_root() {
    let env = Env::new();
    let s = env.open();
    let mounts = s.prepare("scratch", "", &mapped()).unwrap();
    assert_eq!(mounts[0].kind, "bind");
    assert!(!mounts[0].options.iter().any(|o| o.contains("map=")));
    assert_eq!(owner(Path::new(&mounts[0].source)), (100000, 200000));
}

#[test]
fn bad_mapping_labels_are_refused_naming_the_label_and_leave_nothing_behind() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "x"));
    let before = fs::read_dir(env.root.join("snapshots")).unwrap().count();
    for (label, value, says) in [
        (UIDMAP, "0:100000", "three numbers"),
        (UIDMAP, "0:100000:0", "count 0"),
        (GIDMAP, "x:1:1", "not an ID"),
        (GIDMAP, "0:4294967295:1", "not an ID"),
        (UIDMAP, "0:4294967200:1000", "past the largest ID"),
        (UIDMAP, "", "empty"),
        // The container's root must be mapped: it owns the upper dir.
        (UIDMAP, "1:100000:10", "container's root"),
        // The kernel refuses overlapping extents.
        (GIDMAP, "0:200000:10,5:300000:10", "overlaps"),
    ] {
        // The other label well-formed: the error is about this one.
        let mut l = mapped();
        l.insert(label.to_string(), value.to_string());
        for parent in ["", "base"] {
            let e = s.prepare("bad", parent, &l).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{value:?}: {e}");
            assert!(
                e.message().contains(label) && e.message().contains(says),
                "{e}"
            );
        }
    }
    // Half a mapping: an ID-mapped mount maps both.
    let e = s
        .prepare("bad", "base", &labels(&[(UIDMAP, "0:100000:65536")]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains(UIDMAP) && e.message().contains(GIDMAP),
        "{e}"
    );
    assert_eq!(
        fs::read_dir(env.root.join("snapshots")).unwrap().count(),
        before
    );
    assert_eq!(s.walk(&[]).unwrap().len(), 1);
    // Set later by an update: refused the same way, the labels kept.
    s.prepare("ok", "base", &mapped()).unwrap();
    let mut labels = s.stat("ok").unwrap().labels;
    labels.insert(UIDMAP.into(), "0:1".into());
    let update = erofs_snapshotter::InfoUpdate {
        name: "ok".into(),
        labels,
    };
    let e = s.update(&update, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(s.stat("ok").unwrap().labels, mapped());
}

#[test]
fn mount_all_wants_both_maps_and_well_formed_ones() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "x"));
    layer(&env, &s, "top", "base", |p| write(p, "g", "y"));
    let good = s.prepare("ctr", "top", &mapped()).unwrap();
    let target = env.target("t");
    let with = |f: &dyn Fn(&mut Vec<String>)| {
        let mut m: Vec<Mount> = good.clone();
        f(&mut m[0].options);
        m
    };
    let only_uid = with(&|o| o.retain(|x| !x.starts_with("gidmap=")));
    let e = mount_all(&only_uid, &target).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("needs both uidmap= and gidmap="),
        "{e}"
    );
    let malformed = with(&|o| {
        for x in o.iter_mut().filter(|x| x.starts_with("uidmap=")) {
            *x = "uidmap=0:-1:5".into();
        }
    });
    let e = mount_all(&malformed, &target).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("uidmap"), "{e}");
    assert!(
        mounts_under(&target).is_empty(),
        "{:?}",
        mounts_under(&target)
    );
}

/// Threads making ID-mapped mounts at once: each makes its own user
/// namespace (a cloned child), and no child may hold another thread's
/// descriptors (a pipe kept open by another's child hung both threads).
#[test]
fn id_mapped_mounts_from_many_threads_at_once() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "x"));
    layer(&env, &s, "top", "base", |p| write(p, "g", "y"));
    let mounts = s.view("v", "top", &mapped()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..8 {
        let (mounts, tx) = (mounts.clone(), tx.clone());
        let target = env.target(&format!("t{t}"));
        std::thread::spawn(move || {
            for _ in 0..40 {
                mount_all(&mounts, &target).unwrap();
                assert_eq!(owner(&target.join("f")), (100000, 200000));
                erofs_snapshotter::unmount_all(&target, false).unwrap();
            }
            tx.send(t).unwrap();
        });
    }
    drop(tx);
    for _ in 0..8 {
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("a thread making ID-mapped mounts hung or failed");
    }
}
