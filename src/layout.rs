//! The on-disk layout under `root`, and the file-system steps that keep it
//! consistent with the metadata:
//!
//! ```text
//! root/                     0700
//!   metadata.db             SQLite (WAL)
//!   users.lock              flock: shared by every open handle (see layer_mounts.rs)
//!   changes                 a counter moved by every write (see metastore.rs)
//!   snapshots/              0700
//!     new-*/                a snapshot being created (flock held by its creator)
//!     <id>/                 named by the metadata id, never by the key
//!       fs/                 upper dir of an active snapshot; mount point of a committed layer
//!       work/               overlayfs work dir of an active snapshot
//!       .erofslayer         marks a directory prepared by this snapshotter (for the differ)
//!       layer.erofs         the committed layer
//!   trash/                  0700, directories waiting to be deleted (trash.rs)
//! ```

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::info::{Kind, Usage};
use crate::logging::Logger;
use crate::sys;

/// Prefix of a snapshot directory that is being created.
pub const STAGING_PREFIX: &str = "new-";
/// Marker file the EROFS differ looks for.
pub const MARKER: &str = ".erofslayer";
/// Name of the committed layer blob.
pub const BLOB: &str = "layer.erofs";
/// Prefix of a blob being written (in the snapshot directory).
pub const BLOB_TMP_PREFIX: &str = ".layer.erofs.tmp-";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub snapshots: PathBuf,
    pub trash: PathBuf,
    /// An empty directory, the lower layer of a snapshot awaiting a rebase.
    pub empty: PathBuf,
}

/// Owner and mode for the root of a new upper dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RootAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            snapshots: root.join("snapshots"),
            trash: root.join("trash"),
            empty: root.join("empty"),
        }
    }

    /// Creates the root (0700 when new) and its directories.
    pub fn create(&self) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| {
                // The configured root itself is wrong: say which field.
                let e = Error::io("create root directory", &self.root, e);
                match e.kind() {
                    ErrorKind::Unavailable => e,
                    _ => Error::invalid_argument(format!("config field \"root\": {}", e.message())),
                }
            })?;
        for dir in [&self.snapshots, &self.trash, &self.empty] {
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create directory", dir, e)),
            }
        }
        Ok(())
    }

    pub fn metadata_db(&self) -> PathBuf {
        self.root.join("metadata.db")
    }

    /// SQLite's write-ahead log of [`Layout::metadata_db`].
    pub fn metadata_wal(&self) -> PathBuf {
        self.root.join("metadata.db-wal")
    }

    /// The change counter every process sharing the root maps (metastore.rs).
    pub fn changes(&self) -> PathBuf {
        self.root.join("changes")
    }

    pub fn users_lock(&self) -> PathBuf {
        self.root.join("users.lock")
    }

    pub fn snapshot_dir(&self, id: i64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    pub fn fs_dir(&self, id: i64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    pub fn work_dir(&self, id: i64) -> PathBuf {
        self.snapshot_dir(id).join("work")
    }

    pub fn blob(&self, id: i64) -> PathBuf {
        self.snapshot_dir(id).join(BLOB)
    }

    /// Creates `snapshots/new-*` with `fs/` (and `work/` and the marker for an
    /// active snapshot), locked against `cleanup` until installed or dropped.
    /// A failure to remove it when dropped is reported to `log`.
    pub fn stage(&self, kind: Kind, attrs: Option<RootAttrs>, log: &Logger) -> Result<Staging> {
        let path = unique_dir(&self.snapshots, STAGING_PREFIX, 0o700)?;
        // Locked before anything else can see it: cleanup skips locked staging dirs.
        let lock = lock_dir(&path, true).map_err(|e| Error::io("lock", &path, e))?;
        let staging = Staging {
            path,
            lock: Some(lock),
            log: log.clone(),
        };
        let fs_dir = staging.path.join("fs");
        DirBuilder::new()
            .mode(0o755)
            .create(&fs_dir)
            .map_err(|e| Error::io("create directory", &fs_dir, e))?;
        // The umask must not narrow the mode containerd's suite checks (0755).
        set_mode(&fs_dir, attrs.map_or(0o755, |a| a.mode))?;
        if let Some(a) = attrs {
            std::os::unix::fs::lchown(&fs_dir, Some(a.uid), Some(a.gid))
                .map_err(|e| Error::io("chown", &fs_dir, e))?;
        }
        if kind == Kind::Active {
            let work = staging.path.join("work");
            DirBuilder::new()
                .mode(0o711)
                .create(&work)
                .map_err(|e| Error::io("create directory", &work, e))?;
            let marker = staging.path.join(MARKER);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&marker)
                .map_err(|e| Error::io("create", &marker, e))?;
        }
        Ok(staging)
    }

    /// Moves `path` into the trash; it is deleted later by [`Trash`].
    pub fn retire(&self, path: &Path, what: &str) -> Result<Option<PathBuf>> {
        let name = format!("{what}-{}", unique_suffix());
        let dest = self.trash.join(name);
        match fs::rename(path, &dest) {
            Ok(()) => Ok(Some(dest)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("move to trash", path, e)),
        }
    }

    /// Moves the upper dir of a committed snapshot to the trash; its work
    /// dir becomes `fs/`, the layer's mount point (whatever overlayfs left in
    /// it stays hidden under the mount): no directory is created, which
    /// costs more than the renames on some filesystems. Until this is done
    /// `work/` exists, which is how cleanup finds a commit that stopped here.
    pub fn retire_upper(&self, id: i64) -> Result<()> {
        let fs_dir = self.fs_dir(id);
        self.retire(&fs_dir, &format!("upper-{id}"))?;
        match fs::rename(self.work_dir(id), &fs_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => make_mount_point(&fs_dir),
            Err(e) => Err(Error::io("rename work dir to", &fs_dir, e)),
        }
    }

    /// Names of entries of `snapshots/`.
    pub fn snapshot_entries(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.snapshots)
            .map_err(|e| Error::io("read directory", &self.snapshots, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read directory", &self.snapshots, e))?;
            out.push(ent.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }
}

/// A snapshot directory under construction; removed on drop unless installed.
pub(crate) struct Staging {
    pub path: PathBuf,
    lock: Option<File>,
    log: Logger,
}

impl Staging {
    /// Renames the staging directory to `snapshots/<id>`. A leftover directory
    /// with that name can only come from a creation whose transaction rolled
    /// back (ids are allocated inside the write transaction), so it is retired.
    pub fn install(mut self, layout: &Layout, id: i64) -> Result<PathBuf> {
        let dest = layout.snapshot_dir(id);
        if let Err(e) = fs::rename(&self.path, &dest) {
            if !matches!(
                sys::errno(&e),
                Some(sys::Errno::EXIST) | Some(sys::Errno::NOTEMPTY)
            ) {
                return Err(Error::io("rename snapshot directory", &self.path, e));
            }
            layout.retire(&dest, &format!("orphan-{id}"))?;
            fs::rename(&self.path, &dest)
                .map_err(|e| Error::io("rename snapshot directory", &self.path, e))?;
        }
        self.path = PathBuf::new();
        self.lock = None;
        Ok(dest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                // Unlocked once dropped: cleanup deletes it.
                self.log.warn(format_args!(
                    "could not remove staging directory {}: {e}; cleanup will retry",
                    self.path.display()
                ));
            }
        }
    }
}

/// Creates `dir` (0755) unless it exists: the mount point of a layer.
pub(crate) fn make_mount_point(dir: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// Opens (creating, 0600) a small file every process on the root shares.
pub(crate) fn open_shared_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Opens a directory and takes an flock on it (exclusive, blocking or not).
pub(crate) fn lock_dir(path: &Path, block: bool) -> io::Result<File> {
    let f = File::from(sys::fs::open_dir(path)?);
    let lock = if block {
        sys::fs::Lock::Exclusive
    } else {
        sys::fs::Lock::TryExclusive
    };
    sys::fs::flock(&f, lock)?;
    Ok(f)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{t:08x}", std::process::id())
}

/// Creates a new file `<parent>/<prefix><unique>` for writing.
pub(crate) fn unique_file(parent: &Path, prefix: &str, mode: u32) -> Result<(PathBuf, File)> {
    unique(parent, prefix, "create", |p| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
    })
}

/// Creates a new directory `<parent>/<prefix><unique>`.
pub(crate) fn unique_dir(parent: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    unique(parent, prefix, "create directory", |p| {
        DirBuilder::new().mode(mode).create(p)
    })
    .map(|(path, ())| path)
}

/// `make` on `<parent>/<prefix><unique>`, with another name while that
/// one exists.
fn unique<T>(
    parent: &Path,
    prefix: &str,
    what: &str,
    make: impl Fn(&Path) -> io::Result<T>,
) -> Result<(PathBuf, T)> {
    loop {
        let path = parent.join(format!("{prefix}{}", unique_suffix()));
        match make(&path) {
            Ok(made) => return Ok((path, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(what, &path, e)),
        }
    }
}

/// True when readdir on `dir` reports file types (overlayfs needs d_type).
pub(crate) fn supports_d_type(dir: &Path) -> Result<bool> {
    // The root's own `snapshots/` answers without writing anything.
    if let Ok(yes) = sys::fs::dir_reports_type(dir, b"snapshots") {
        return Ok(yes);
    }
    let probe = unique_dir(dir, ".d_type-probe-", 0o700)?;
    let file = probe.join("f");
    let result = (|| {
        File::create(&file).map_err(|e| Error::io("create", &file, e))?;
        sys::fs::dir_reports_type(&probe, b"f").map_err(|e| Error::io("read directory", &probe, e))
    })();
    let _ = fs::remove_dir_all(&probe);
    result
}

/// Disk usage of a tree, as containerd's `fs.DiskUsage`: allocated bytes and
/// inodes, each hard-linked inode counted once, not crossing mount points.
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    let top = fs::symlink_metadata(root).map_err(|e| Error::io("stat", root, e))?;
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    account(&top, &mut seen, &mut usage);
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read directory", &dir, e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read directory", &dir, e))?;
            let md = match ent.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", &ent.path(), e)),
            };
            if md.dev() != top.dev() {
                continue;
            }
            account(&md, &mut seen, &mut usage);
            if md.is_dir() {
                stack.push(ent.path());
            }
        }
    }
    Ok(usage)
}

fn account(md: &fs::Metadata, seen: &mut std::collections::HashSet<(u64, u64)>, u: &mut Usage) {
    if seen.insert((md.dev(), md.ino())) {
        u.inodes += 1;
        u.size += (md.blocks() * 512) as i64;
    }
}

/// True for an entry of `snapshots/` that is a snapshot id.
pub(crate) fn parse_id(name: &OsStr) -> Option<i64> {
    let s = name.to_str()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_locked_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let st = layout
            .stage(Kind::Active, None, &Logger::default())
            .unwrap();
        assert!(st.path.join("fs").is_dir() && st.path.join("work").is_dir());
        assert!(st.path.join(MARKER).is_file());
        // A second open file description cannot take the lock while it is staged.
        assert!(lock_dir(&st.path, false).is_err());
        let path = st.path.clone();
        drop(st);
        assert!(!path.exists());
    }

    #[test]
    fn install_replaces_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        fs::create_dir_all(layout.fs_dir(7).join("junk")).unwrap();
        let st = layout.stage(Kind::View, None, &Logger::default()).unwrap();
        let dest = st.install(&layout, 7).unwrap();
        assert!(dest.join("fs").is_dir());
        assert!(!dest.join("fs/junk").exists());
        assert!(!dest.join("work").exists());
        assert_eq!(layout.snapshot_entries().unwrap(), vec!["7".to_string()]);
    }

    #[test]
    fn d_type_and_usage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(supports_d_type(dir.path()).unwrap());
        fs::write(dir.path().join("f"), vec![1u8; 10000]).unwrap();
        fs::hard_link(dir.path().join("f"), dir.path().join("g")).unwrap();
        let u = disk_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 2);
        assert!(u.size >= 10000 + 4096 - 4096, "{u:?}");
    }

    #[test]
    fn ids_from_names() {
        assert_eq!(parse_id(OsStr::new("12")), Some(12));
        assert_eq!(parse_id(OsStr::new("new-1")), None);
        assert_eq!(parse_id(OsStr::new("")), None);
    }
}
