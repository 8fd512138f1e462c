//! Background deletion: an active snapshot whose upper dir holds many small
//! files (written back to disk first, as a container's would be) is
//! removed, and the clock runs until the trash is empty; beside it, in the
//! same run, `rm -rf` of an identical tree (one thread, the floor a
//! single-threaded deletion cannot beat) and how long `close` takes with
//! the deletion still under way. `cargo bench --bench trash` (as root);
//! `TRASH_FILES` sets the number of files (default 100,000). A table, not a
//! test: nothing is asserted.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use erofs_snapshotter::{Config, Labels, Snapshotter};

/// `files` one-byte files in directories of 1,000, flushed to disk.
fn fill(dir: &Path, files: usize) {
    for d in 0..files.div_ceil(1000) {
        let sub = dir.join(format!("d{d}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..1000.min(files - d * 1000) {
            fs::write(sub.join(format!("f{f}")), b"x").unwrap();
        }
    }
    assert!(Command::new("sync").status().unwrap().success());
}

fn wait_empty(trash: &Path) -> Duration {
    let started = Instant::now();
    while fs::read_dir(trash).unwrap().next().is_some() {
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn main() {
    let files: usize = std::env::var("TRASH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::Builder::new()
        .prefix("erofs-bench-trash-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let none = Labels::new();

    // The floor: one thread, rm -rf.
    let plain = tmp.path().join("plain");
    fill(&plain, files);
    let t = Instant::now();
    assert!(Command::new("rm")
        .arg("-rf")
        .arg(&plain)
        .status()
        .unwrap()
        .success());
    let rm = t.elapsed();

    // remove, then until the trash is empty.
    let root = tmp.path().join("root");
    let s = Snapshotter::open(Config::new(&root)).unwrap();
    let m = s.prepare("a", "", &none).unwrap();
    fill(Path::new(&m[0].source), files);
    let t = Instant::now();
    s.remove("a").unwrap();
    let remove = t.elapsed();
    let emptied = remove + wait_empty(&root.join("trash"));

    // close with a whole tree queued, then the next open finishes it.
    let m = s.prepare("b", "", &none).unwrap();
    fill(Path::new(&m[0].source), files);
    s.remove("b").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(s);
    let close = t.elapsed();
    let left = fs::read_dir(root.join("trash")).unwrap().count();
    let s = Snapshotter::open(Config::new(&root)).unwrap();
    let resumed = wait_empty(&root.join("trash"));
    drop(s);

    let uname = Command::new("uname").arg("-r").output().unwrap();
    println!(
        "cargo bench --bench trash: {files} one-byte files in {} directories, flushed \
         first; kernel {}; /var/tmp is {}",
        files.div_ceil(1000),
        String::from_utf8_lossy(&uname.stdout).trim(),
        mount_of("/var/tmp")
    );
    println!("{:<46} {:>10}", "what", "seconds");
    let row = |what: &str, d: Duration| println!("{what:<46} {:>10.3}", d.as_secs_f64());
    row("rm -rf (one thread, the floor)", rm);
    row("remove (the call)", remove);
    row("remove until the trash is empty", emptied);
    row("close with a tree being deleted", close);
    println!("{:<46} {:>10}", "  trash entries left at close", left);
    row("  next open until the trash is empty", resumed);
    println!(
        "{:<46} {:>9.2}x",
        "emptied / rm -rf",
        emptied.as_secs_f64() / rm.as_secs_f64()
    );
}

fn mount_of(path: &str) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best = (0, String::new());
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() > 3 && path.starts_with(f[1]) && f[1].len() >= best.0 {
            best = (f[1].len(), format!("{} ({})", f[2], f[3]));
        }
    }
    best.1
}
