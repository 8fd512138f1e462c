//! Committed layers mounted on their `fs/` directories, so an overlay can use
//! them as lower directories. Mounting needs no database: what a commit
//! recorded about a blob, and the mount generation, come from the caller.
//!
//! `mounts` runs on every container start, so it must not pay a system call
//! per lower: each handle remembers which layers it has seen mounted, and the
//! remembered set is valid while the metadata's mount generation is unchanged.
//! Every unmount done by the library of a layer a snapshot still names
//! (remove, the last close) bumps the generation in the same database all
//! processes share, so a handle never trusts a layer that another process
//! unmounted. (cleanup detaches only layers of orphans, which no row names.) A layer not in the set is
//! checked (`statfs`), validated against what its commit recorded (length,
//! fs-verity digest) and mounted, under the snapshot directory's flock so two
//! processes never stack two mounts.
//!
//! Every open handle holds a shared flock on `users.lock`. At close a handle
//! that can take it exclusively is the last user of the root and detaches the
//! layer mounts (lazily: overlays of running containers keep their references).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::DmverityMode;
use crate::dmverity;
use crate::error::{Error, ErrorKind, Result};
use crate::info::BlobRecord;
use crate::integrity;
use crate::layout::{lock_dir, parse_id, Layout};
use crate::logging::Logger;
use crate::mounts::{mount_points_under, unmount_all};
use crate::sys::fs::{flock, Lock};
use crate::sys::mount::{fs_magic, MountFlags, EROFS_SUPER_MAGIC};
use crate::sys::{self, Errno};

/// How EROFS images on the root's filesystem mount: file-backed needs a
/// 6.12+ kernel and a backing filesystem that supports it (tmpfs does not).
/// Probed by the first layer mount of a handle, then remembered.
const MODE_UNKNOWN: u8 = 0;
const MODE_FILE: u8 = 1;
const MODE_LOOP: u8 = 2;

struct Seen {
    generation: i64,
    /// Layers known to be mounted, and whether each is the snapshot's own
    /// `layer.erofs` (not a layer content cache's file) mounted from the
    /// file (not through dm-verity).
    mounted: HashMap<i64, bool>,
}

pub(crate) struct Layers {
    layout: Layout,
    verity: bool,
    dmverity: DmverityMode,
    seen: Mutex<Seen>,
    users: File,
    mode: AtomicU8,
}

impl Layers {
    /// Registers this handle as a user of the root (shared flock). Blocks
    /// while a last user is detaching the layers.
    pub fn open(layout: &Layout, verity: bool, dmverity: DmverityMode) -> Result<Layers> {
        let path = layout.users_lock();
        let users = crate::layout::open_shared_file(&path)?;
        flock(&users, Lock::Shared).map_err(|e| Error::io("lock", &path, e))?;
        Ok(Layers {
            layout: layout.clone(),
            verity,
            dmverity,
            seen: Mutex::new(Seen {
                generation: -1,
                mounted: HashMap::new(),
            }),
            users,
            mode: AtomicU8::new(MODE_UNKNOWN),
        })
    }

    /// Makes sure the layers of the committed snapshots `ids` are mounted.
    /// `generation` must have been read in the same transaction as `ids`;
    /// `records` gives what the commits of layers not known to be mounted
    /// recorded about their blobs.
    pub fn ensure(
        &self,
        ids: &[i64],
        generation: i64,
        records: impl FnOnce(&[i64]) -> Result<Vec<Option<BlobRecord>>>,
    ) -> Result<()> {
        let missing: Vec<i64> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.generation != generation {
                seen.mounted.clear();
                seen.generation = generation;
            }
            ids.iter()
                .copied()
                .filter(|id| !seen.mounted.contains_key(id))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let blobs = records(&missing)?;
        for (id, blob) in missing.iter().zip(blobs) {
            let blob = blob.ok_or_else(|| {
                Error::failed_precondition(format!(
                    "snapshot id {id} has no committed layer blob recorded"
                ))
            })?;
            // A view of the layer alone may mount its file itself only when
            // it is the snapshot's own and not guarded by dm-verity.
            let plain = self.mount_layer(*id, &blob)? && blob.path.is_none();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.generation == generation {
                seen.mounted.insert(*id, plain);
            }
        }
        Ok(())
    }

    /// Mounts the layer of snapshot `id` on its `fs/` unless it is; true
    /// when it is mounted from its file, not through dm-verity.
    fn mount_layer(&self, id: i64, blob: &BlobRecord) -> Result<bool> {
        let dir = self.layout.snapshot_dir(id);
        let _lock =
            lock_dir(&dir, true).map_err(|e| Error::io("lock snapshot directory", &dir, e))?;
        let fs = self.layout.fs_dir(id);
        match fs_magic(&fs) {
            // Mounted by another handle: through dm-verity where the blob
            // has a tree to be (a view then binds the mount).
            Ok(EROFS_SUPER_MAGIC) => {
                return Ok(self.dmverity == DmverityMode::Off
                    || !dmverity::metadata_path(&self.layout.blob(id)).exists())
            }
            Ok(_) => {}
            // A commit that stopped between retiring the upper dir and making
            // the mount point again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => crate::layout::make_mount_point(&fs)?,
            Err(e) => return Err(Error::io("statfs", &fs, e)),
        }
        let path = blob.path.clone().unwrap_or_else(|| self.layout.blob(id));
        self.verify_blob(&path, blob)?;
        let verity = match self.dmverity {
            DmverityMode::Off => None,
            mode => match dmverity::read_metadata(&path)? {
                Some(meta) => Some(meta),
                None if mode == DmverityMode::On => {
                    return Err(Error::failed_precondition(format!(
                        "dmverity_mode is \"on\" but layer blob {} has no dm-verity metadata ({} \
                         does not exist): it was made without enable_dmverity; remove the \
                         snapshot and unpack the image again with enable_dmverity, or set \
                         dmverity_mode to \"auto\"",
                        path.display(),
                        dmverity::metadata_path(&path).display()
                    )))
                }
                None => None,
            },
        };
        if let Some(meta) = verity {
            self.mount_through_dmverity(id, &path, blob.size, &fs, &meta)?;
            return Ok(false);
        }
        mount_erofs_file(&path, &fs, &self.mode).map_err(|e| {
            let message = format!("mount layer {} on {}: {e}", path.display(), fs.display());
            mount_error(&e, message)
        })?;
        Ok(true)
    }

    /// Mounts `blob` on `fs` through a dm-verity device made from its
    /// sidecar `meta` (the blob, `len` bytes as verified, on a read-only
    /// loop device, data and tree both), removed (deferred) as soon as it is
    /// mounted: it goes away with the mount, and takes the loop device
    /// (autoclear) with it. A block whose hash does not match reads as EIO
    /// inside the container.
    fn mount_through_dmverity(
        &self,
        id: i64,
        blob: &Path,
        len: u64,
        fs: &Path,
        meta: &dmverity::Metadata,
    ) -> Result<()> {
        let fail = |what: &str, e: io::Error| {
            let message = format!(
                "mount layer {} through dm-verity: {what}: {e}",
                blob.display()
            );
            mount_error(&e, message)
        };
        if meta.hash_offset >= len {
            return Err(Error::failed_precondition(format!(
                "layer blob {} is {len} bytes but its dm-verity metadata puts the hash tree at \
                 {}: refusing to mount it",
                blob.display(),
                meta.hash_offset
            )));
        }
        let ctl = sys::dm::control().map_err(|e| {
            Error::unavailable(format!(
                "layer blob {} has dm-verity metadata but /dev/mapper/control cannot be opened \
                 ({e}): load dm_mod and dm_verity, or set dmverity_mode to \"off\"",
                blob.display()
            ))
        })?;
        // A name of its own for each mount of the layer: an earlier device
        // of it lives on (removal deferred) while overlays of running
        // containers still use a mount that was detached (the last close).
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let name = format!(
            "erofs-snapshotter-{:016x}-{id}-{nonce:x}",
            crate::metastore::key_hash(&self.layout.root.to_string_lossy())
        );
        let (device, _) = crate::loopdev::attach(blob).map_err(|e| fail("loop device", e))?;
        let (lmaj, lmin) = sys::dm::dev_numbers(&device).map_err(|e| fail("loop device", e))?;
        let (_, minor) = sys::dm::create(&ctl, &name).map_err(|e| fail("create device", e))?;
        let made = (|| {
            let table = meta.table(&format!("{lmaj}:{lmin}"));
            sys::dm::load_table(&ctl, &name, "verity", meta.hash_offset / 512, &table)
                .map_err(|e| fail(&format!("load table {table:?}"), e))?;
            sys::dm::resume(&ctl, &name).map_err(|e| fail("activate", e))?;
            // devtmpfs makes the node under the kernel's name.
            let node = std::path::PathBuf::from(format!("/dev/dm-{minor}"));
            if !node.exists() {
                return Err(Error::unavailable(format!(
                    "dm-verity device {name} is {} but that node does not exist; is /dev a devtmpfs?",
                    node.display()
                )));
            }
            let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID;
            sys::mount::mount(node.as_os_str(), fs, "erofs", flags, None)
                .map_err(|e| fail(&format!("mount {}", node.display()), e))
        })();
        drop(device);
        // Deferred: now when the mount failed, else with the mount.
        let removed = sys::dm::remove(&ctl, &name, made.is_ok());
        made?;
        removed.map_err(|e| fail("deferred remove", e))
    }

    /// Refuses a blob that is not what its commit recorded: cut short by a
    /// crash, replaced, or (with fs-verity) without verity or with another digest.
    pub fn verify_blob(&self, path: &Path, blob: &BlobRecord) -> Result<()> {
        let md = std::fs::symlink_metadata(path).map_err(|e| {
            Error::failed_precondition(format!(
                "layer blob {} cannot be read ({e}); the snapshot is damaged: remove it and create it again",
                path.display()
            ))
        })?;
        if !md.file_type().is_file() || md.size() != blob.size {
            return Err(Error::failed_precondition(format!(
                "layer blob {} is {} bytes but {} were recorded at commit: it was cut short \
                 (crash?) or replaced; refusing to mount it, remove the snapshot and create it again",
                path.display(),
                md.size(),
                blob.size
            )));
        }
        // A cache's file is checked when it had fs-verity when first used.
        if self.verity || (blob.path.is_some() && blob.verity_digest.is_some()) {
            let digest = integrity::measure_verity(path).map_err(|e| {
                Error::failed_precondition(format!(
                    "fs-verity is not enabled on layer blob {} ({e}); refusing to mount it",
                    path.display()
                ))
            })?;
            if let Some(want) = &blob.verity_digest {
                if &digest != want {
                    return Err(Error::failed_precondition(format!(
                        "layer blob {} has fs-verity digest {} but {} was recorded at commit; \
                         refusing to mount a replaced blob",
                        path.display(),
                        integrity::hex(&digest),
                        integrity::hex(want)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether the mounted layer of snapshot `id` is its own `layer.erofs`,
    /// mounted from the file (a view of it alone may mount the file too);
    /// None when this handle does not know it to be mounted.
    pub fn local_blob(&self, id: i64) -> Option<bool> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.mounted.get(&id).copied()
    }

    /// True when this root's images need a loop device to mount (known after
    /// the first layer mount).
    pub fn needs_loop(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == MODE_LOOP
    }

    /// Lazily unmounts the layer of snapshot `id` (remove).
    pub fn unmount(&self, id: i64) -> Result<usize> {
        self.forget(id);
        unmount_all(&self.layout.fs_dir(id), true)
    }

    /// Stops trusting that the layer of snapshot `id` is mounted: its
    /// directory was moved away (cleanup detaches the mount in the trash).
    pub fn forget(&self, id: i64) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .mounted
            .remove(&id);
    }

    /// Detaches every layer mount under `snapshots/`; returns how many.
    fn detach_all(&self) -> Result<usize> {
        let points = mount_points_under(&self.layout.snapshots)
            .map_err(|e| Error::io("read mount table for", &self.layout.snapshots, e))?;
        let mut n = 0;
        for p in points {
            let is_layer = p.file_name().is_some_and(|f| f == "fs")
                && p.parent()
                    .and_then(|d| d.file_name())
                    .and_then(parse_id)
                    .is_some()
                && p.parent().and_then(Path::parent) == Some(self.layout.snapshots.as_path());
            if is_layer {
                n += unmount_all(&p, true)?;
            }
        }
        Ok(n)
    }

    /// Called at close: if this was the last handle on the root, detach the
    /// layer mounts and record it with `detached` (which bumps the mount
    /// generation). Failures are logged.
    pub fn release(&self, log: &Logger, detached: impl FnOnce() -> Result<()>) {
        let _ = flock(&self.users, Lock::Unlock);
        if flock(&self.users, Lock::TryExclusive).is_err() {
            return; // someone else still uses the root
        }
        match self.detach_all() {
            Ok(0) => {}
            Ok(n) => {
                if let Err(e) = detached() {
                    log.warn(format_args!(
                        "detached {n} layer mounts but could not record it: {e}"
                    ));
                }
            }
            Err(e) => log.warn(format_args!(
                "last user of {}: {e}",
                self.layout.root.display()
            )),
        }
        let _ = flock(&self.users, Lock::Unlock);
    }
}

/// True when an EROFS layer is mounted on `dir`.
pub(crate) fn is_layer_mounted(dir: &Path) -> bool {
    fs_magic(dir).is_ok_and(|m| m == EROFS_SUPER_MAGIC)
}

/// A failed layer mount: unavailable when the machine cannot give a loop
/// device, else internal.
fn mount_error(e: &io::Error, message: String) -> Error {
    let kind = if crate::loopdev::is_unavailable(e) {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    };
    Error::new(kind, message)
}

/// Mounts an EROFS image file read-only on `target`: file-backed where that
/// works, through a loop device otherwise; `mode` remembers which.
pub(crate) fn mount_erofs_file(image: &Path, target: &Path, mode: &AtomicU8) -> io::Result<()> {
    let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID;
    if mode.load(Ordering::Relaxed) != MODE_LOOP {
        match sys::mount::mount(image.as_os_str(), target, "erofs", flags, None) {
            Ok(()) => {
                mode.store(MODE_FILE, Ordering::Relaxed);
                return Ok(());
            }
            // No file-backed EROFS in this kernel, or not on this filesystem.
            Err(e) if sys::errno(&e) == Some(Errno::NOTBLK) => {
                mode.store(MODE_LOOP, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    crate::loopdev::mount_via_loop(image, target, flags, None)
}

/// A detached read-only mount (see [`sys::mount::mount_detached`]) of the
/// EROFS image `image`: file-backed where that works, through a loop device
/// otherwise.
fn mount_erofs_detached(image: &Path) -> io::Result<OwnedFd> {
    match erofs_detached(image) {
        Err(e) if sys::errno(&e) == Some(Errno::NOTBLK) => {
            crate::loopdev::through_loop(image, erofs_detached)
        }
        r => r,
    }
}

fn erofs_detached(source: &Path) -> io::Result<OwnedFd> {
    let source = source.to_str().ok_or_else(|| sys::error(Errno::INVAL))?;
    sys::mount::mount_detached("erofs", &[("source", Some(source))], true)
}

/// Whether this kernel mounts an EROFS layer through an ID-mapped mount
/// and stacks overlayfs on it (what `remap-ids` needs), tried on the
/// filesystem of `scratch_parent`: an empty EROFS image is mounted, the
/// mount ID-mapped, and an overlay mounted on that. Err says why not. The
/// answer is kept for the process once the kernel gave it (it worked, or
/// an ID-mapped step failed with EINVAL, EPERM, ENOSYS or EOPNOTSUPP); a
/// failure of anything else (no loop device, no space) is tried again next
/// time.
pub(crate) fn remap_ids_supported(scratch_parent: &Path) -> std::result::Result<(), String> {
    static PROBED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    if let Some(known) = PROBED.get() {
        return known.clone();
    }
    match probe_idmap(scratch_parent) {
        Ok(()) => PROBED.get_or_init(|| Ok(())).clone(),
        Err((why, true)) => PROBED.get_or_init(|| Err(why)).clone(),
        Err((why, false)) => Err(why),
    }
}

/// The probe's failure: why, and whether the kernel said no (as opposed to
/// a passing condition of this machine).
type ProbeError = (String, bool);

/// The probe. Nothing it makes has a name: the image is an unnamed file on
/// `parent`'s filesystem (or in memory), the mounts are detached (the overlay's upper and
/// work directories on a detached tmpfs), the loop device (if any) clears
/// itself. A process killed at any point leaves no file, directory, mount
/// or device behind, and nothing appears in the mount table meanwhile.
fn probe_idmap(parent: &Path) -> std::result::Result<(), ProbeError> {
    let step = |what: &str, e: &dyn std::fmt::Display| (format!("{what}: {e}"), false);
    // A step only ID-mapped mounts need: the kernel's answer.
    let kernel = |what: &str, e: &io::Error| {
        let definitive = matches!(
            sys::errno(e),
            Some(Errno::INVAL | Errno::PERM | Errno::NOSYS | Errno::OPNOTSUPP)
        );
        (format!("{what}: {e}"), definitive)
    };
    // On the root's filesystem, where layers are; in memory where that
    // filesystem has no unnamed files (NFS, FUSE): whichever filesystem
    // backs the image, the question is EROFS's.
    let file = match sys::fs::tmpfile_in(parent) {
        Err(e) if matches!(sys::errno(&e), Some(Errno::OPNOTSUPP | Errno::ISDIR)) => {
            sys::fs::memfd("erofs-idmap-probe")
        }
        r => r,
    }
    .map_err(|e| {
        step(
            &format!("create an unnamed file in {}", parent.display()),
            &e,
        )
    })?;
    let image = sys::fs::fd_path(&file);
    let root = erofs_writer::Meta {
        mode: 0o755,
        ..Default::default()
    };
    let writer = file.try_clone().map_err(|e| step("write image", &e))?;
    erofs_writer::Builder::new(writer, erofs_writer::Options::default(), root)
        .and_then(|b| b.finish())
        .map_err(|e| step("write image", &e))?;
    let layer = mount_erofs_detached(&image).map_err(|e| step("mount EROFS", &e))?;
    let ns = sys::process::user_namespace("0 666 1\n", "0 666 1\n")
        .map_err(|e| kernel("make a user namespace", &e))?;
    sys::mount::set_idmap(&layer, &ns, true).map_err(|e| kernel("ID-mapped mount of EROFS", &e))?;
    let tmpfs = sys::mount::mount_detached("tmpfs", &[("mode", Some("0700"))], false)
        .map_err(|e| step("mount tmpfs", &e))?;
    let scratch = sys::fs::fd_path(&tmpfs);
    for sub in ["upper", "work"] {
        std::fs::create_dir(scratch.join(sub)).map_err(|e| step("create directory", &e))?;
    }
    let path = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| step("path", &"not UTF-8"))
    };
    let (lower, upper, work) = (
        path(&sys::fs::fd_path(&layer))?,
        path(&scratch.join("upper"))?,
        path(&scratch.join("work"))?,
    );
    let options = [
        ("lowerdir", Some(lower.as_str())),
        ("upperdir", Some(upper.as_str())),
        ("workdir", Some(work.as_str())),
    ];
    sys::mount::mount_detached("overlay", &options, false)
        .map(drop)
        .map_err(|e| kernel("overlayfs on an ID-mapped lower dir", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mount::unmount;

    fn image(dir: &Path) -> std::path::PathBuf {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello"), b"hi").unwrap();
        let img = dir.join("img.erofs");
        let ok = std::process::Command::new("mkfs.erofs")
            .args(["--quiet", "-b4096"])
            .arg(&img)
            .arg(&src)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        img
    }

    #[test]
    fn file_backed_and_loop_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mode = AtomicU8::new(MODE_UNKNOWN);
        mount_erofs_file(&img, &mnt, &mode).unwrap();
        assert_eq!(mode.load(Ordering::Relaxed), MODE_FILE);
        assert_eq!(fs_magic(&mnt).unwrap(), EROFS_SUPER_MAGIC);
        assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"hi");
        unmount(&mnt, false).unwrap();
        // The loop path, used by kernels without file-backed EROFS.
        crate::loopdev::mount_via_loop(&img, &mnt, MountFlags::RDONLY, None).unwrap();
        assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"hi");
        unmount(&mnt, false).unwrap();
    }

    #[test]
    fn detached_erofs_mounts_file_backed_and_through_a_loop_device() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let mnt = mount_erofs_detached(&img).unwrap();
        assert_eq!(
            fs_magic(&sys::fs::fd_path(&mnt)).unwrap(),
            EROFS_SUPER_MAGIC
        );
        assert_eq!(
            std::fs::read(sys::fs::fd_path(&mnt).join("hello")).unwrap(),
            b"hi"
        );
        let loop_of = || crate::loopdev::device_of(&img).unwrap();
        assert_eq!(loop_of(), None, "file-backed on this kernel");
        drop(mnt);
        // The loop path (kernels without file-backed EROFS): the device goes
        // with the mount.
        let mnt = crate::loopdev::through_loop(&img, erofs_detached).unwrap();
        assert_eq!(
            std::fs::read(sys::fs::fd_path(&mnt).join("hello")).unwrap(),
            b"hi"
        );
        assert!(loop_of().is_some());
        drop(mnt);
        let released = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            loop_of().is_none()
        });
        assert!(released, "loop device still attached: {:?}", loop_of());
        assert!(mount_points_under(dir.path()).unwrap().is_empty());
    }

    /// The remap-ids probe never gives anything a name: while it runs, over
    /// and over, nothing appears in its directory or under it in the mount
    /// table, so a process killed mid-probe leaves nothing behind (the
    /// proxy daemon probes at start; killed then, the earlier probe left an
    /// EROFS mount in the root that nothing removed).
    #[test]
    fn the_remap_ids_probe_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (root, done) = (root.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    seen.extend(mount_points_under(&root).unwrap());
                    for e in std::fs::read_dir(&root).unwrap() {
                        seen.insert(e.unwrap().path());
                    }
                }
                seen
            })
        };
        for _ in 0..20 {
            probe_idmap(&root).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert!(seen.is_empty(), "the probe made {seen:?}");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    /// On a filesystem without unnamed files (sysfs here; NFS, FUSE in
    /// use), the probe's image is made in memory.
    #[test]
    fn the_remap_ids_probe_needs_no_unnamed_file_on_the_root() {
        let e = sys::fs::tmpfile_in(Path::new("/sys/kernel")).unwrap_err();
        assert_eq!(sys::errno(&e), Some(Errno::OPNOTSUPP));
        probe_idmap(Path::new("/sys/kernel")).unwrap();
    }
}
