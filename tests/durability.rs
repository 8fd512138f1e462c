//! Durable before first use: a layer committed without a flush is flushed,
//! with every layer below it, before the first snapshot that uses it is
//! handed out; once, recorded in the metadata. (That a power cut then
//! spares it is shown in the VM: `tests/vm_guest.rs`, `powercut_*`.)

mod common;

use common::*;
use erofs_snapshotter::{ErrorKind, Snapshotter};

/// The `durable` column of the committed snapshots, by name.
fn durable(env: &Env) -> Vec<(String, bool)> {
    let db = rusqlite::Connection::open(env.root.join("metadata.db")).unwrap();
    let mut st = db
        .prepare("SELECT key, durable FROM snapshots WHERE kind = 3 ORDER BY key")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn chain(env: &Env, s: &Snapshotter) {
    layer(env, s, "a", "", |t| write(t, "a", "a"));
    layer(env, s, "b", "a", |t| write(t, "b", "b"));
    layer(env, s, "c", "b", |t| write(t, "c", "c"));
}

fn all(names: &[&str], value: bool) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), value)).collect()
}

#[test]
fn layers_become_durable_at_their_first_use() {
    let env = Env::new();
    let s = env.open();
    // An image unpacked as containerd's unpacker does (the label names the
    // chain an extraction makes): no flush on the way.
    let mut parent = String::new();
    for name in ["a", "b", "c"] {
        let key = format!("extract-{name}");
        let mounts = s
            .prepare(
                &key,
                &parent,
                &labels(&[("containerd.io/snapshot.ref", name)]),
            )
            .unwrap();
        with_mounted(&env, &key, &mounts, |t| write(t, name, name));
        s.commit(name, &key, &no_labels()).unwrap();
        parent = name.to_string();
    }
    assert_eq!(durable(&env), all(&["a", "b", "c"], false));
    // A container's snapshot on it is the first use: the whole chain is
    // flushed and recorded.
    s.prepare("container", "c", &no_labels()).unwrap();
    assert_eq!(durable(&env), all(&["a", "b", "c"], true));
    // A commit on a durable parent is not durable by itself; a view is a use.
    layer(&env, &s, "d", "c", |t| write(t, "d", "d"));
    assert_eq!(durable(&env).last().unwrap(), &("d".to_string(), false));
    s.view("v", "d", &no_labels()).unwrap();
    assert_eq!(durable(&env).last().unwrap(), &("d".to_string(), true));
}

#[test]
fn with_durable_before_use_off_nothing_is_flushed() {
    let env = Env::new();
    let s = env.open_with(|c| c.durable_before_use = false);
    chain(&env, &s);
    s.view("v", "c", &no_labels()).unwrap();
    assert_eq!(durable(&env), all(&["a", "b", "c"], false));
    // Turned on later, the first use flushes the whole chain.
    drop(s);
    let s = env.open();
    s.view("w", "c", &no_labels()).unwrap();
    assert_eq!(durable(&env), all(&["a", "b", "c"], true));
}

#[test]
fn sync_commit_commits_durable_layers() {
    let env = Env::new();
    let s = env.open_with(|c| c.sync_commit = true);
    chain(&env, &s);
    assert_eq!(durable(&env), all(&["a", "b", "c"], true));
}

// ---- layers lost in a crash ---------------------------------------------

/// A layer's tar: one file `name` holding `name`.
fn layer_tar(name: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(name.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, name.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

fn diff_id(tar: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(tar))
}

/// Unpacks layers `names` as containerd's unpacker does: each prepared
/// with the chain's labels, applied from its tar, committed, no use.
fn unpack(s: &Snapshotter, names: &[&str]) {
    let mut parent = String::new();
    for name in names {
        let tar = layer_tar(name);
        let l = labels(&[
            ("containerd.io/snapshot.ref", name),
            ("containerd.io/snapshot/diff-id", &diff_id(&tar)),
        ]);
        let key = format!("extract-{name}");
        s.prepare(&key, &parent, &l).unwrap();
        s.apply(&key, &mut std::io::Cursor::new(tar), &Default::default())
            .unwrap();
        s.commit(name, &key, &l).unwrap();
        parent = name.to_string();
    }
}

/// The blob of committed snapshot `name`, found without using it.
fn blob_path(env: &Env, name: &str) -> std::path::PathBuf {
    let db = rusqlite::Connection::open(env.root.join("metadata.db")).unwrap();
    let id: i64 = db
        .query_row("SELECT id FROM snapshots WHERE key = ?1", [name], |r| {
            r.get(0)
        })
        .unwrap();
    env.root.join(format!("snapshots/{id}/layer.erofs"))
}

/// How many layers the metadata marks lost.
fn lost_count(env: &Env) -> i64 {
    let db = rusqlite::Connection::open(env.root.join("metadata.db")).unwrap();
    db.query_row("SELECT count(*) FROM snapshots WHERE lost = 1", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The root as the next boot finds it: its first open checks again the
/// layers not yet on disk (a crash takes them only with a reboot).
fn reboot(env: &Env) {
    let db = rusqlite::Connection::open(env.root.join("metadata.db")).unwrap();
    db.execute("UPDATE state SET value = 0 WHERE name = 'checked_boot'", [])
        .unwrap();
}

fn open_logged(env: &Env) -> (Snapshotter, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (log, seen) = capturing_logger();
    (
        Snapshotter::open_with_logger(env.config(), log).unwrap(),
        seen,
    )
}

#[test]
fn a_layer_cut_short_is_found_at_open_refused_and_repaired() {
    let env = Env::new();
    let s = env.open();
    unpack(&s, &["a", "b"]);
    drop(s);
    // What a power cut does to a layer not yet on disk.
    let blob = blob_path(&env, "b");
    let len = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Not seen until the next boot: an open in this boot checks nothing.
    drop(env.open());
    assert_eq!(lost_count(&env), 0);
    reboot(&env);

    let (s, seen) = open_logged(&env);
    let warned = seen.lock().unwrap().clone();
    assert!(
        warned.iter().any(|m| m.starts_with("layer \"b\" lost: ")
            && m.contains(&format!(
                "{} is {} bytes, {len} were committed",
                blob.display(),
                len / 2
            ))),
        "{warned:?}"
    );
    assert_eq!(s.check().unwrap(), ["b"]);
    // Never mounted: a snapshot on it is refused, by name; the layer below is fine.
    let e = s.prepare("c1", "b", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("layer \"b\" was lost"), "{e}");
    s.view("va", "a", &no_labels()).unwrap();
    // The stat still answers (containerd's records name it).
    assert_eq!(s.stat("b").unwrap().name, "b");

    // Only the right layer repairs it; only a lost layer is repaired.
    let e = s
        .repair(
            "b",
            &mut std::io::Cursor::new(layer_tar("a")),
            &Default::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("was committed from sha256:"), "{e}");
    let e = s
        .repair(
            "a",
            &mut std::io::Cursor::new(layer_tar("a")),
            &Default::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    drop(s);
    // Still lost in the next process.
    let s = env.open();
    assert_eq!(s.check().unwrap(), ["b"]);
    let applied = s
        .repair(
            "b",
            &mut std::io::Cursor::new(layer_tar("b")),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(applied.digest, diff_id(&layer_tar("b")));
    assert_eq!(s.check().unwrap(), Vec::<String>::new());
    fsck(&blob).unwrap();
    let m = s.prepare("c1", "b", &no_labels()).unwrap();
    with_mounted(&env, "c1", &m, |t| {
        assert_eq!(read(t, "a"), "a");
        assert_eq!(read(t, "b"), "b");
    });
    // Used: the repaired chain is durable like any other.
    assert!(durable(&env).iter().all(|(_, d)| *d), "{:?}", durable(&env));
}

/// A repair reads a layer as hostile as any: data cut short, not a tar,
/// or a tar whose paths climb out of the root are refused, the layer stays
/// lost, and nothing is left in its directory but what was there.
#[test]
fn a_repair_from_bad_data_leaves_the_layer_lost() {
    let env = Env::new();
    let s = env.open();
    unpack(&s, &["a"]);
    drop(s);
    let blob = blob_path(&env, "a");
    std::fs::remove_file(&blob).unwrap();
    reboot(&env);
    let s = env.open();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(blob.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let good = layer_tar("a");
    let climbing = {
        let mut t = good.clone();
        // The entry's name, in the header's first bytes: "../a".
        t[..4].copy_from_slice(b"../a");
        let sum: u32 = t[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        t[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        t
    };
    for (what, data, cause) in [
        ("cut short", good[..700].to_vec(), "truncated"),
        ("not a tar", vec![0x5a; 4096], "header checksum mismatch"),
        (
            "a name climbing out",
            climbing,
            "the path leaves the layer root",
        ),
    ] {
        let e = s
            .repair("a", &mut std::io::Cursor::new(data), &Default::default())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
        assert!(e.to_string().contains(cause), "{what}: {e}");
        assert_eq!(s.check().unwrap(), ["a"], "{what}");
        assert_eq!(listing(), before, "{what}");
    }
}

#[test]
fn a_missing_layer_takes_the_layers_above_it_until_repaired() {
    let env = Env::new();
    let s = env.open();
    unpack(&s, &["a", "b", "c"]);
    drop(s);
    std::fs::remove_file(blob_path(&env, "a")).unwrap();
    reboot(&env);
    let (s, seen) = open_logged(&env);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| m.starts_with("layer \"a\" lost: ") && m.contains("is missing")),
        "{:?}",
        seen.lock().unwrap()
    );
    // Only "a" is lost; every snapshot on it is refused, naming "a".
    assert_eq!(s.check().unwrap(), ["a"]);
    for parent in ["a", "b", "c"] {
        let e = s.view("v", parent, &no_labels()).unwrap_err();
        assert!(
            e.to_string().contains("layer \"a\" was lost"),
            "{parent}: {e}"
        );
    }
    s.repair(
        "a",
        &mut std::io::Cursor::new(layer_tar("a")),
        &Default::default(),
    )
    .unwrap();
    let m = s.view("v", "c", &no_labels()).unwrap();
    with_mounted(&env, "v", &m, |t| {
        for n in ["a", "b", "c"] {
            assert_eq!(read(t, n), n);
        }
    });
}

#[test]
fn a_layer_lost_while_open_is_found_by_cleanup() {
    let env = Env::new();
    let s = env.open();
    unpack(&s, &["a"]);
    // Durable now: open no longer checks it; cleanup does.
    s.view("v", "a", &no_labels()).unwrap();
    s.remove("v").unwrap();
    std::fs::write(blob_path(&env, "a"), b"not a layer").unwrap();
    let lost = || {
        let db = rusqlite::Connection::open(env.root.join("metadata.db")).unwrap();
        db.query_row("SELECT lost FROM snapshots WHERE key = 'a'", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    assert_eq!(lost(), 0);
    s.cleanup().unwrap();
    assert_eq!(lost(), 1);
    let e = s.view("v", "a", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    // A lost layer can be removed like any other.
    s.remove("a").unwrap();
}

/// What ext4 and xfs leave of a blob whose data had not reached the disk
/// while its length did (the writer sets it last, with a truncate): holes,
/// or allocated blocks never written; both read as zeros. A sparse file and
/// `fallocate` make exactly those.
#[test]
fn a_layer_of_blocks_never_written_is_found_at_open() {
    let env = Env::new();
    let s = env.open();
    unpack(&s, &["a", "b"]);
    drop(s);
    let (a, b) = (blob_path(&env, "a"), blob_path(&env, "b"));
    let len = std::fs::metadata(&a).unwrap().len();
    let zeros = a.with_file_name("zeros");
    let st = std::process::Command::new("fallocate")
        .args(["-l", &len.to_string()])
        .arg(&zeros)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::rename(&zeros, &a).unwrap();
    let len = std::fs::metadata(&b).unwrap().len();
    std::fs::remove_file(&b).unwrap();
    std::fs::File::create(&b).unwrap().set_len(len).unwrap();
    reboot(&env);
    let (s, seen) = open_logged(&env);
    let warned = seen.lock().unwrap().clone();
    assert!(
        warned.iter().any(|m| m.starts_with("layer \"a\" lost: ")
            && m.contains("has blocks that never reached the disk")),
        "{warned:?}"
    );
    assert!(
        warned
            .iter()
            .any(|m| m.starts_with("layer \"b\" lost: ") && m.contains("has 0 bytes of blocks")),
        "{warned:?}"
    );
    assert_eq!(s.check().unwrap(), ["a", "b"]);
    for name in ["a", "b"] {
        s.repair(
            name,
            &mut std::io::Cursor::new(layer_tar(name)),
            &Default::default(),
        )
        .unwrap();
    }
    assert_eq!(s.check().unwrap(), Vec::<String>::new());
}
