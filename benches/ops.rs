//! Latency of the snapshotter's operations on this machine, as a table of
//! medians. `cargo bench --bench ops` (as root). Not a test: nothing is asserted.

use std::ffi::{c_char, CString};
use std::ptr;
use std::time::{Duration, Instant};

use ::erofs_snapshotter::ffi::{
    erofs_snapshotter_close, erofs_snapshotter_mounts, erofs_snapshotter_open,
    erofs_snapshotter_stat, erofs_snapshotter_string_free, erofs_snapshotter_walk, EROFS_OK,
};
use erofs_snapshotter::{Config, Labels, Snapshotter};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut(usize) -> T) -> Duration {
    median(
        (0..n)
            .map(|i| {
                let t = Instant::now();
                std::hint::black_box(f(i));
                t.elapsed()
            })
            .collect(),
    )
}

fn chain(s: &Snapshotter, prefix: &str, len: usize) -> String {
    let none = Labels::new();
    let mut parent = String::new();
    for i in 0..len {
        let key = format!("{prefix}-{i}-a");
        s.prepare(&key, &parent, &none).unwrap();
        let name = format!("{prefix}-{i}");
        s.commit(&name, &key, &none).unwrap();
        parent = name;
    }
    parent
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(Config::new(dir.path().join("root"))).unwrap();
    let none = Labels::new();
    let mut rows: Vec<(String, Duration)> = Vec::new();

    rows.push((
        "prepare (no parent)".into(),
        time(200, |i| s.prepare(&format!("p{i}"), "", &none).unwrap()),
    ));
    for n in [1usize, 10, 50] {
        let top = chain(&s, &format!("c{n}"), n);
        rows.push((
            format!("prepare ({n} parents)"),
            time(100, |i| {
                s.prepare(&format!("p{n}-{i}"), &top, &none).unwrap()
            }),
        ));
        rows.push((
            format!("mounts ({n} parents)"),
            time(2000, |_| s.mounts(&format!("p{n}-0")).unwrap()),
        ));
    }
    rows.push((
        "mounts (no parent)".into(),
        time(2000, |_| s.mounts("p0").unwrap()),
    ));
    rows.push(("stat".into(), time(5000, |_| s.stat("p0").unwrap())));
    let total = s.walk(&[]).unwrap().len();
    rows.push((
        format!("walk ({total} snapshots)"),
        time(50, |_| s.walk(&[]).unwrap()),
    ));
    // The same reads through the C ABI (JSON out), on a second handle.
    let config = serde_json::json!({ "root": s.root() }).to_string();
    let config = CString::new(config).unwrap();
    let mut h = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_open(config.as_ptr(), &mut h, ptr::null_mut()),
        EROFS_OK
    );
    let c_call = |f: &dyn Fn(*mut *mut c_char) -> i32| {
        let mut out = ptr::null_mut();
        assert_eq!(f(&mut out), EROFS_OK);
        erofs_snapshotter_string_free(out);
    };
    rows.push((
        "stat (C ABI)".into(),
        time(5000, |_| {
            c_call(&|out| erofs_snapshotter_stat(h, c"p0".as_ptr(), out, ptr::null_mut()))
        }),
    ));
    rows.push((
        format!("walk (C ABI, {total} snapshots)"),
        time(50, |_| {
            c_call(&|out| erofs_snapshotter_walk(h, ptr::null(), out, ptr::null_mut()))
        }),
    ));
    rows.push((
        "mounts (C ABI, 10 parents)".into(),
        time(2000, |_| {
            c_call(&|out| erofs_snapshotter_mounts(h, c"p10-0".as_ptr(), out, ptr::null_mut()))
        }),
    ));
    erofs_snapshotter_close(h);
    rows.push((
        "commit (empty)".into(),
        time(50, |i| {
            s.commit(&format!("e{i}"), &format!("p{}", i + 100), &none)
                .unwrap()
        }),
    ));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let img = dir.path().join("empty.erofs");
    rows.push((
        "mkfs.erofs alone (empty dir)".into(),
        time(50, |_| {
            std::process::Command::new(&s.config().mkfs_path)
                .args(["--quiet", "-Enoinline_data", "-b4096"])
                .arg(&img)
                .arg(&empty)
                .status()
                .unwrap()
        }),
    ));
    rows.push((
        "remove (committed)".into(),
        time(50, |i| s.remove(&format!("e{i}")).unwrap()),
    ));

    println!(
        "erofs-snapshotter operations, medians ({}; `cargo bench --bench ops`)",
        std::env::consts::ARCH
    );
    println!("| operation | median |");
    println!("| --- | --- |");
    for (name, d) in rows {
        println!("| {name} | {d:.1?} |");
    }
    // The committed layers stay mounted for other handles of the root: take
    // them down before the directory goes, or every run leaves its mounts.
    drop(s);
    let snapshots = dir.path().join("root/snapshots");
    for e in std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = erofs_snapshotter::unmount_all(&e.path().join("fs"), true);
    }
}
