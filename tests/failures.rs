//! Failures must leave every snapshot as it was: a failing or killed
//! mkfs.erofs, a full disk, several processes on one root.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use erofs_snapshotter::{mount_all, unmount_all, ErrorKind, Kind, Mount};

const CTL: &str = env!("CARGO_BIN_EXE_erofs-snapshotter-ctl");

fn snapshot_dirs(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Files in snapshot directories that look like layer blobs.
fn blobs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in snapshot_dirs(root) {
        for e in fs::read_dir(&d).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if n.contains("layer.erofs") {
                out.push(format!("{}/{n}", d.display()));
            }
        }
    }
    out
}

#[test]
fn failing_mkfs_leaves_the_active_snapshot_intact() {
    let env = Env::new();
    let bad = env.open_with(|c| c.mkfs_options = vec!["--no-such-option".into()]);
    let m = bad.prepare("a", "", &no_labels()).unwrap();
    with_mounted(&env, "a", &m, |p| write(p, "data", "precious"));
    let e = bad.commit("c", "a", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("mkfs.erofs failed")
            && e.message().contains("--no-such-option")
            && e.message().contains("mkfs_options"),
        "{}",
        e.message()
    );
    assert_eq!(bad.stat("a").unwrap().kind, Kind::Active);
    assert_eq!(bad.stat("c").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(
        blobs(&env.root).is_empty(),
        "no blob, temporary or not: {:?}",
        blobs(&env.root)
    );
    drop(bad);
    // The same snapshot commits with a working configuration.
    let good = env.open();
    with_mounted(&env, "a2", &good.mounts("a").unwrap(), |p| {
        assert_eq!(read(p, "data"), "precious")
    });
    good.commit("c", "a", &no_labels()).unwrap();
    with_mounted(
        &env,
        "v",
        &good.view("v", "c", &no_labels()).unwrap(),
        |p| assert_eq!(read(p, "data"), "precious"),
    );
}

#[test]
fn full_disk_during_commit_is_unavailable_and_harmless() {
    let env = Env::new();
    let disk = env.small_disk("small", "24m");
    let small = disk.path.clone();
    let mut c = env.config();
    c.root = small.join("root");
    let s = erofs_snapshotter::Snapshotter::open(c).unwrap();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    let target = env.target("a");
    mount_all(&m, &target).unwrap();
    // 14 MiB of incompressible data: the upper fits, the upper plus its image does not.
    let mut data = vec![0u8; 14 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(target.join("big"), &data).unwrap();
    unmount_all(&target, false).unwrap();
    let e = s.commit("c", "a", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.message().contains("No space left on device"),
        "{}",
        e.message()
    );
    assert_eq!(s.stat("a").unwrap().kind, Kind::Active);
    assert!(blobs(s.root()).is_empty());
    // Room made (a smaller file): the commit goes through.
    mount_all(&m, &target).unwrap();
    fs::write(target.join("big"), &data[..4 << 20]).unwrap();
    unmount_all(&target, false).unwrap();
    s.commit("c", "a", &no_labels()).unwrap();
    with_mounted(&env, "v", &s.view("v", "c", &no_labels()).unwrap(), |p| {
        assert_eq!(fs::read(p.join("big")).unwrap(), &data[..4 << 20]);
    });
    drop(s);
}

fn ctl(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(CTL);
    cmd.arg("--config")
        .arg(format!("{{\"root\": {:?}}}", env.root.to_string_lossy()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn ctl_ok(env: &Env, args: &[&str]) -> String {
    let out = ctl(env, args).output().unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_killed_commit_leaves_a_consistent_state() {
    let env = Env::new();
    let s = env.open();
    let m = s.prepare("a", "", &no_labels()).unwrap();
    with_mounted(&env, "a", &m, |p| {
        for i in 0..2000 {
            write(p, &format!("d{}/f{i}", i % 20), &format!("file {i}"));
        }
        fs::write(p.join("big"), vec![3u8; 64 << 20]).unwrap();
    });
    // Kill the committing process (and its mkfs.erofs) at growing delays;
    // after each kill the snapshot is either still active or fully committed.
    let mut committed = false;
    for delay_ms in [5u64, 20, 60, 150, 400, 1500] {
        let mut child = ctl(&env, &["commit", "c", "a"])
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let status = child.wait().unwrap();
        let reopened = env.open();
        reopened.cleanup().unwrap();
        match (reopened.stat("a"), reopened.stat("c")) {
            (Ok(a), Err(e)) => {
                assert_eq!(a.kind, Kind::Active);
                assert_eq!(e.kind(), ErrorKind::NotFound);
                // No half-written blob is left, and nothing temporary either.
                assert!(
                    blobs(&env.root).iter().all(|b| !b.contains(".tmp")),
                    "after kill at {delay_ms} ms ({status}): {:?}",
                    blobs(&env.root)
                );
            }
            (Err(e), Ok(c)) => {
                assert_eq!(e.kind(), ErrorKind::NotFound);
                assert_eq!(c.kind, Kind::Committed);
                committed = true;
                break;
            }
            other => panic!("inconsistent after kill at {delay_ms} ms: {other:?}"),
        }
    }
    if !committed {
        s.commit("c", "a", &no_labels()).unwrap();
    }
    let v = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &v, |p| {
        assert_eq!(read(p, "d7/f1307"), "file 1307");
        assert_eq!(fs::metadata(p.join("big")).unwrap().len(), 64 << 20);
    });
}

#[test]
fn several_processes_share_one_root() {
    let env = Env::new();
    let s = env.open();
    layer(&env, &s, "base", "", |p| write(p, "f", "base"));
    let started = Instant::now();
    std::thread::scope(|scope| {
        // Two other processes, one operation per process, beside this one.
        for w in 0..2 {
            let env = &env;
            scope.spawn(move || {
                for i in 0..8 {
                    let key = format!("p{w}-{i}");
                    let mounts = ctl_ok(env, &["prepare", &key, "base"]);
                    assert!(mounts.contains("overlay"), "{mounts}");
                    ctl_ok(env, &["commit", &format!("{key}-c"), &key]);
                    ctl_ok(env, &["view", &format!("{key}-v"), &format!("{key}-c")]);
                    ctl_ok(env, &["remove", &format!("{key}-v")]);
                    ctl_ok(env, &["remove", &format!("{key}-c")]);
                }
            });
        }
        let s = &s;
        scope.spawn(move || {
            for i in 0..8 {
                let key = format!("local-{i}");
                s.prepare(&key, "base", &no_labels()).unwrap();
                s.commit(&format!("{key}-c"), &key, &no_labels()).unwrap();
                s.remove(&format!("{key}-c")).unwrap();
            }
        });
    });
    eprintln!("48 cross-process operations in {:?}", started.elapsed());
    let names: Vec<String> = s.walk(&[]).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["base"]);
    // The other processes closed while this handle was open: layers stay mounted.
    assert_eq!(mounts_under(&env.root).len(), 1);
    let stat: serde_json::Value = serde_json::from_str(&ctl_ok(&env, &["stat", "base"])).unwrap();
    assert_eq!(stat["kind"], "committed");
    s.cleanup().unwrap();
    assert_eq!(snapshot_dirs(&env.root).len(), 1);
    drop(s);
    assert!(mounts_under(&env.root).is_empty());
}

#[test]
fn sync_commit_commits() {
    let env = Env::new();
    let s = env.open_with(|c| c.sync_commit = true);
    layer(&env, &s, "c", "", |p| write(p, "f", "durable"));
    with_mounted(&env, "v", &s.view("v", "c", &no_labels()).unwrap(), |p| {
        assert_eq!(read(p, "f"), "durable")
    });
}

/// A handle serves stat, mounts and walk from memory while nothing changed;
/// a write by another process is seen at once.
#[test]
fn cached_reads_see_other_processes_writes() {
    let env = Env::new();
    let s = env.open();
    s.prepare("x", "", &no_labels()).unwrap();
    for _ in 0..3 {
        assert!(s.stat("x").unwrap().labels.is_empty());
        assert_eq!(s.walk(&[]).unwrap().len(), 1);
        s.mounts("x").unwrap();
    }
    ctl_ok(&env, &["label", "x", "k=v"]);
    assert_eq!(s.stat("x").unwrap().labels, labels(&[("k", "v")]));
    assert_eq!(s.walk(&["labels.k==v".to_string()]).unwrap().len(), 1);
    ctl_ok(&env, &["prepare", "y"]);
    assert_eq!(s.walk(&[]).unwrap().len(), 2);
    ctl_ok(&env, &["commit", "x-c", "x"]);
    assert_eq!(s.stat("x").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.mounts("x").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.stat("x-c").unwrap().kind, Kind::Committed);
    ctl_ok(&env, &["remove", "x-c"]);
    assert_eq!(s.stat("x-c").unwrap_err().kind(), ErrorKind::NotFound);
}

/// Processes opening a fresh root at the same instant all succeed. The first
/// switch of a new database to WAL upgrades a read lock to a write lock,
/// which SQLite does not retry through its busy handler: unserialized, one of
/// two processes got "database is locked" about one round in ten.
#[test]
fn processes_opening_a_fresh_root_at_once_all_succeed() {
    use std::io::Write;
    const ROUNDS: usize = 100;
    const PROCS: usize = 6;
    let env = Env::new();
    let started = Instant::now();
    let mut failed = Vec::new();
    for round in 0..ROUNDS {
        let root = env.dir.path().join(format!("root-{round}"));
        let config = format!("{{\"root\": {:?}}}", root.to_string_lossy());
        // Each child waits on its stdin, so all of them are released at once.
        let mut children: Vec<_> = (0..PROCS)
            .map(|_| {
                Command::new("sh")
                    .arg("-c")
                    .arg(r#"read _; exec "$0" "$@""#)
                    .arg(CTL)
                    .args(["--config", &config, "walk"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let mut stdins: Vec<_> = children
            .iter_mut()
            .map(|c| c.stdin.take().unwrap())
            .collect();
        for s in &mut stdins {
            s.write_all(b"\n").unwrap();
        }
        drop(stdins);
        for c in children {
            let out = c.wait_with_output().unwrap();
            if !out.status.success() {
                failed.push(format!(
                    "round {round}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    eprintln!(
        "{ROUNDS} rounds of {PROCS} processes opening a fresh root: {} failed, in {:?}",
        failed.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{} failed opens: {failed:#?}",
        failed.len()
    );
}

/// A creation whose transaction fails after its directory was renamed into
/// place moves the directory aside; when that fails too, the host's logger
/// hears of it. Here the disk is full (the commit cannot grow the WAL) and
/// the trash is immutable.
#[test]
fn a_failed_rollback_of_a_creation_reaches_the_host_logger() {
    let env = Env::new();
    let small = env.dir.path().join("small");
    fs::create_dir(&small).unwrap();
    mount_all(
        &[Mount {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: None,
            options: vec!["size=4m".into(), "mode=0700".into()],
        }],
        &small,
    )
    .unwrap();
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("chattr")
                .arg("-i")
                .arg(self.0.join("root/trash"))
                .status();
            let _ = unmount_all(&self.0, true);
        }
    }
    let _umount = Umount(small.clone());
    let (logger, seen) = capturing_logger();
    let mut c = env.config();
    c.root = small.join("root");
    let s = erofs_snapshotter::Snapshotter::open_with_logger(c, logger).unwrap();
    s.prepare("a", "", &no_labels()).unwrap();
    // Fill the disk.
    let filler = small.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let trash = small.join("root/trash");
    assert!(Command::new("chattr")
        .arg("+i")
        .arg(&trash)
        .status()
        .unwrap()
        .success());
    let e = s.prepare("b", "", &no_labels()).unwrap_err();
    eprintln!("prepare on a full disk: {e}");
    assert!(Command::new("chattr")
        .arg("-i")
        .arg(&trash)
        .status()
        .unwrap()
        .success());
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.contains("prepare \"b\": could not move")
                && m.contains("Operation not permitted")),
        "{seen:?}"
    );
    // Room again: cleanup retires the orphan, and the key can be created.
    fs::remove_file(&filler).unwrap();
    s.cleanup().unwrap();
    assert_eq!(snapshot_dirs(s.root()).len(), 1);
    s.prepare("b", "", &no_labels()).unwrap();
}

/// Where `/dev` is not a devtmpfs (a container's tmpfs /dev), the node of the
/// loop device the kernel hands out may not exist. Run for real: a private
/// mount namespace with a tmpfs on /dev holding only loop-control and null,
/// and a root on tmpfs (no file-backed EROFS there, so layers need a loop
/// device). The error says what is missing, as `unavailable`, at once.
#[test]
fn a_missing_loop_device_node_is_reported() {
    let env = Env::new();
    let disk = env.small_disk("tmpfs", "64m");
    let small = disk.path.clone();
    let root = small.join("root");
    let config = format!("{{\"root\": {:?}}}", root.to_string_lossy());
    {
        let mut c = env.config();
        c.root = root.clone();
        let s = erofs_snapshotter::Snapshotter::open(c).unwrap();
        layer(&env, &s, "c", "", |p| write(p, "f", "x"));
    }
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(
            r#"mount -t tmpfs -o mode=0755 devtmp /dev
mknod /dev/loop-control c 10 237
mknod /dev/null c 1 3
exec "$@""#,
        )
        .arg("sh")
        .arg(CTL)
        .args(["--config", &config, "view", "v", "c"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("view without /dev/loopN ({took:?}): {}", stderr.trim());
    assert_eq!(
        out.status.code(),
        Some(erofs_snapshotter::ffi::status(ErrorKind::Unavailable)),
        "{stderr}"
    );
    assert!(
        stderr.contains("unavailable: ")
            && stderr.contains(" does not exist (LOOP_CTL_GET_FREE returned ")
            && stderr.contains("devtmpfs"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The same root works where the nodes are.
    let out = Command::new(CTL)
        .args(["--config", &config, "view", "v", "c"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
