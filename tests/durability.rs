//! Durable before first use: a layer committed without a flush is flushed,
//! with every layer below it, before the first snapshot that uses it is
//! handed out; once, recorded in the metadata. (That a power cut then
//! spares it is shown in the VM: `tests/vm_guest.rs`, `powercut_*`.)

mod common;

use common::*;
use erofs_snapshotter::Snapshotter;

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
