//! Helpers shared by the integration tests. They run as root against the real
//! kernel and the real mkfs.erofs.
#![allow(dead_code)]

pub mod rawtar;
pub mod trees;

#[allow(unused_imports)]
pub use trees::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use erofs_snapshotter::{mount_all, unmount_all, Config, Labels, Mount, Snapshotter};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("erofs-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        Env { dir, root }
    }

    pub fn config(&self) -> Config {
        Config::new(&self.root)
    }

    pub fn open(&self) -> Snapshotter {
        Snapshotter::open(self.config()).unwrap()
    }

    pub fn open_with(&self, f: impl FnOnce(&mut Config)) -> Snapshotter {
        let mut c = self.config();
        f(&mut c);
        Snapshotter::open(c).unwrap()
    }

    /// A fresh directory for mounting under the test's temporary directory.
    pub fn target(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("mnt").join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

/// Runs `fsck.erofs` (erofs-utils, an independent reader) on `image`.
pub fn fsck(image: &Path) -> Result<(), String> {
    let out = std::process::Command::new("fsck.erofs")
        .arg(image)
        .output()
        .map_err(|e| format!("run fsck.erofs: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "fsck.erofs {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Every layer blob under `root` (committed or applied).
pub fn layer_blobs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let blob = e.path().join("layer.erofs");
        if blob.is_file() {
            out.push(blob);
        }
    }
    out
}

/// A failed test must not leave mounts (or immutable files) behind in /tmp;
/// a passing one checks every image it wrote with `fsck.erofs`.
impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let bad: Vec<String> = layer_blobs(&self.root)
                .iter()
                .filter_map(|b| fsck(b).err())
                .collect();
            if !bad.is_empty() {
                let mut left = mounts_under(self.dir.path());
                left.sort_by_key(|m| std::cmp::Reverse(m.len()));
                for m in left {
                    let _ = unmount_all(Path::new(&m), true);
                }
                panic!("images that fail fsck.erofs:\n{}", bad.join("\n"));
            }
        }
        let mut left = mounts_under(self.dir.path());
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = unmount_all(Path::new(&m), true);
        }
        clear_immutable(self.dir.path());
    }
}

fn clear_immutable(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => clear_immutable(&p),
            Ok(t) if t.is_file() => {
                let _ = erofs_snapshotter::integrity::set_immutable(&p, false);
            }
            _ => {}
        }
    }
}

/// Mounts `mounts` on a fresh target, runs `f`, unmounts.
pub fn with_mounted<T>(env: &Env, name: &str, mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let target = env.target(name);
    mount_all(mounts, &target).unwrap();
    let guard = Unmount(target.clone());
    let out = f(&target);
    drop(guard);
    out
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        unmount_all(&self.0, false).unwrap();
    }
}

/// `len` bytes that no two seeds share and no compressor shrinks
/// (xorshift64), fast to make even in an emulated VM.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn no_labels() -> Labels {
    Labels::new()
}

/// Creates an active snapshot, applies `f` to its mounted tree, commits it.
pub fn layer(env: &Env, s: &Snapshotter, name: &str, parent: &str, f: impl FnOnce(&Path)) {
    let key = format!("{name}-active");
    let mounts = s.prepare(&key, parent, &no_labels()).unwrap();
    with_mounted(env, &key, &mounts, f);
    s.commit(name, &key, &no_labels()).unwrap();
}

pub fn write(p: &Path, rel: &str, content: &str) {
    let f = p.join(rel);
    if let Some(d) = f.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(f, content).unwrap();
}

pub fn read(p: &Path, rel: &str) -> String {
    fs::read_to_string(p.join(rel)).unwrap()
}

pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Mount points under `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&(dir.clone() + "/")))
        .collect()
}

/// A small tmpfs mounted under the test's directory (a disk that fills up),
/// detached when dropped.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl Env {
    /// A tmpfs of `size` (`"24m"`) at `<test dir>/<name>`.
    pub fn small_disk(&self, name: &str, size: &str) -> SmallDisk {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).unwrap();
        mount_all(
            &[Mount {
                kind: "tmpfs".into(),
                source: "tmpfs".into(),
                target: None,
                options: vec![format!("size={size}"), "mode=0700".into()],
            }],
            &path,
        )
        .unwrap();
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = unmount_all(&self.path, true);
    }
}

/// A logger that keeps the messages of warnings and errors, for assertions.
pub fn capturing_logger() -> (
    erofs_snapshotter::Logger,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = seen.clone();
    let logger = erofs_snapshotter::Logger::new(
        std::sync::Arc::new(move |_, m: &str| sink.lock().unwrap().push(m.to_string())),
        erofs_snapshotter::Level::Warn,
    );
    (logger, seen)
}

/// The snapshot directory an active snapshot's mounts write into.
pub fn snapshot_dir(mounts: &[Mount]) -> PathBuf {
    let m = mounts.last().unwrap();
    let fs_dir = match m.kind.as_str() {
        "bind" => PathBuf::from(&m.source),
        _ => PathBuf::from(
            m.options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir="))
                .unwrap(),
        ),
    };
    fs_dir.parent().unwrap().to_path_buf()
}

/// Files of a snapshot directory that are blobs or temporary blobs.
pub fn blobs_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("layer.erofs"))
        .collect()
}
