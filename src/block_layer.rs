//! Writable block layers (containerd's block mode, `default_size`): an
//! active snapshot's upper dir and work dir live in an ext4 image of its own
//! (`snapshots/<id>/rwlayer.img`, containerd's name), mounted through a loop
//! device on `snapshots/<id>/rw`, so what a container writes is bounded by
//! the image's size and never by the host's free space.
//!
//! The image is made at prepare by e2fsprogs' `mkfs.ext4` (as containerd's
//! mount manager makes it: a sparse file, then `mkfs.ext4 -q`), with
//! `upper/` and `work/` already in it (`-d`), owned as the snapshot's upper
//! dir must be, and no blocks reserved for root (`-m 0`: a container's
//! root, without `CAP_SYS_RESOURCE`, could not use them). The library mounts
//! it when the snapshot's mounts are asked for, so they stay concrete
//! (overlay `upperdir=.../rw/upper`); commit converts `rw/upper` into
//! `layer.erofs` like an upper dir, then unmounts and deletes the image.
//! Unlike the read-only layers, an image stays mounted when the last handle
//! closes: a container may be writing to it.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::RootAttrs;
use crate::logging::Logger;
use crate::sys;

/// The image's name in the snapshot's directory (containerd's).
pub(crate) const IMAGE: &str = "rwlayer.img";
/// Its mount point in the snapshot's directory.
pub(crate) const MOUNT_DIR: &str = "rw";
/// containerd's `snapshots.LabelSnapshotMaxSize`.
pub const LABEL_MAX_SIZE: &str = "containerd.io/snapshot/max-size";

/// The program that makes the images.
const MKFS_EXT4: &str = "mkfs.ext4";
/// Smallest image accepted: ext4 with a journal needs a few hundred KiB of
/// its own, and a container's writes need room.
pub const MIN_SIZE: u64 = 1 << 20;
/// How long `mkfs.ext4` may take (sparse images: well under a second).
const MKFS_TIMEOUT: Duration = Duration::from_secs(120);

/// `ext4` magic (statfs).
const EXT4_SUPER_MAGIC: i64 = 0xEF53;

/// Checks that `mkfs.ext4` runs (at open, in block mode).
pub(crate) fn check_mkfs() -> Result<()> {
    let out = crate::subprocess::run(MKFS_EXT4.as_ref(), &["-V".into()], &[], MKFS_TIMEOUT)
        .map_err(|e| {
            Error::unavailable(format!(
                "config field \"default_size\" (block mode) needs {MKFS_EXT4} from e2fsprogs, \
                 which cannot be run: {e}; install e2fsprogs or set \"default_size\" to 0"
            ))
        })?;
    if !out.success() {
        return Err(Error::unavailable(format!(
            "config field \"default_size\" (block mode): `{MKFS_EXT4} -V` failed: {}",
            out.output.trim()
        )));
    }
    Ok(())
}

/// The size of an active snapshot's image, as containerd's
/// `writableSize`: label [`LABEL_MAX_SIZE`] when it is a positive decimal
/// number, else (with a warning, as containerd) `default`.
pub(crate) fn size_for(label: Option<&str>, default: u64, log: &Logger) -> u64 {
    let Some(v) = label else {
        return default;
    };
    match v.parse::<i64>() {
        Ok(n) if n > 0 => n as u64,
        _ => {
            log.warn(format_args!(
                "invalid {LABEL_MAX_SIZE} label {v:?} (a positive number of bytes), \
                 falling back to default_size {default}"
            ));
            default
        }
    }
}

/// Refuses an image size the filesystem holding `dir` could never back
/// (larger than the filesystem itself) or too small for ext4; `what` names
/// the field or label it came from.
pub(crate) fn check_size(dir: &Path, size: u64, what: &str) -> Result<()> {
    if size < MIN_SIZE {
        return Err(Error::invalid_argument(format!(
            "{what}: {size} bytes is too small for a writable ext4 layer (at least {MIN_SIZE})"
        )));
    }
    let total = sys::fs::total_space(dir).map_err(|e| Error::io("statfs", dir, e))?;
    if size > total {
        return Err(Error::invalid_argument(format!(
            "{what}: {size} bytes is larger than the filesystem of {} ({total} bytes)",
            dir.display()
        )));
    }
    Ok(())
}

/// Makes `<dir>/rwlayer.img`: a sparse file of `size` bytes formatted ext4,
/// holding `upper/` (with `attrs`, else 0755 root) and `work/`.
pub(crate) fn make_image(dir: &Path, size: u64, attrs: Option<RootAttrs>) -> Result<()> {
    let seed = dir.join(".rwseed");
    let made = (|| {
        let upper = seed.join("upper");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&upper)
            .map_err(|e| Error::io("create directory", &upper, e))?;
        let work = seed.join("work");
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&work)
            .map_err(|e| Error::io("create directory", &work, e))?;
        if let Some(a) = attrs {
            fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(a.mode))
                .map_err(|e| Error::io("chmod", &upper, e))?;
            std::os::unix::fs::lchown(&upper, Some(a.uid), Some(a.gid))
                .map_err(|e| Error::io("chown", &upper, e))?;
        }
        let image = dir.join(IMAGE);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&image)
            .map_err(|e| Error::io("create", &image, e))?;
        f.set_len(size).map_err(|e| Error::io("size", &image, e))?;
        drop(f);
        let args: Vec<OsString> = vec![
            "-q".into(),
            "-F".into(),
            "-m".into(),
            "0".into(),
            "-d".into(),
            seed.clone().into(),
            image.clone().into(),
        ];
        let out = crate::subprocess::run(MKFS_EXT4.as_ref(), &args, &[], MKFS_TIMEOUT)
            .map_err(|e| Error::unavailable(format!("run {MKFS_EXT4}: {e}")))?;
        if out.timed_out {
            return Err(Error::unavailable(format!(
                "{MKFS_EXT4} of {} did not finish in {} s",
                image.display(),
                MKFS_TIMEOUT.as_secs()
            )));
        }
        if !out.success() {
            return Err(Error::internal(format!(
                "{MKFS_EXT4} of {} ({size} bytes) failed: {}",
                image.display(),
                out.output.trim()
            )));
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&seed);
    if made.is_err() {
        let _ = fs::remove_file(dir.join(IMAGE));
    }
    made
}

/// Whether the snapshot in `dir` has a block layer.
pub(crate) fn has_image(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(IMAGE)).is_ok_and(|m| m.is_file())
}

/// [`ensure_mounted`] with the snapshot directory's lock held, so that two
/// callers never both find the image unmounted (and attach it twice) and a
/// removal's unmount and retirement see no mount made in between.
pub(crate) fn ensure_mounted_locked(dir: &Path) -> Result<PathBuf> {
    let _lock = crate::layout::lock_dir(dir, true)
        .map_err(|e| Error::io("lock snapshot directory", dir, e))?;
    ensure_mounted(dir)
}

/// `<dir>/rw`, the image mounted on it (mounted now if it is not). The
/// caller holds the directory's lock (see [`ensure_mounted_locked`]).
pub(crate) fn ensure_mounted(dir: &Path) -> Result<PathBuf> {
    let mnt = dir.join(MOUNT_DIR);
    if is_mounted(dir, &mnt) {
        return Ok(mnt);
    }
    match fs::DirBuilder::new().mode(0o755).create(&mnt) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", &mnt, e)),
    }
    let image = dir.join(IMAGE);
    crate::loopdev::mount_writable(&image, &mnt, "ext4").map_err(|e| {
        let kind = if crate::loopdev::is_unavailable(&e) {
            crate::ErrorKind::Unavailable
        } else {
            crate::ErrorKind::Internal
        };
        Error::new(
            kind,
            format!(
                "mount the writable layer {} on {}: {e}",
                image.display(),
                mnt.display()
            ),
        )
    })?;
    Ok(mnt)
}

/// `mnt` is an ext4 mount (not the directory of `dir`'s filesystem).
fn is_mounted(dir: &Path, mnt: &Path) -> bool {
    let (Ok(d), Ok(m)) = (fs::metadata(dir), fs::metadata(mnt)) else {
        return false;
    };
    d.dev() != m.dev() && sys::mount::fs_magic(mnt).is_ok_and(|f| f == EXT4_SUPER_MAGIC)
}

/// Unmounts `<dir>/rw` (everything stacked there), if mounted.
pub(crate) fn unmount(dir: &Path) -> Result<()> {
    let mnt = dir.join(MOUNT_DIR);
    if !mnt.exists() {
        return Ok(());
    }
    crate::mounts::unmount_all(&mnt, true).map(drop)
}

/// The upper dir in the mounted image.
pub(crate) fn upper(mnt: &Path) -> PathBuf {
    mnt.join("upper")
}

/// The work dir in the mounted image.
pub(crate) fn work(mnt: &Path) -> PathBuf {
    mnt.join("work")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_wins_when_it_is_a_positive_number_else_the_default() {
        // containerd's TestWritableSize, case for case.
        let log = Logger::default();
        let d = 16 << 20;
        for (label, want) in [
            (None, d),
            (Some("268435456"), 268435456),
            (Some(""), d),
            (Some("100MB"), d),
            (Some("0"), d),
            (Some("-1"), d),
        ] {
            assert_eq!(size_for(label, d, &log), want, "{label:?}");
        }
        // No default: an unset or invalid label gives 0, a valid one counts.
        assert_eq!(size_for(None, 0, &log), 0);
        assert_eq!(size_for(Some("1048576"), 0, &log), 1048576);
    }
}
