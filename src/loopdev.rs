//! Loop devices, for kernels without file-backed EROFS mounts (before 6.12),
//! and for the ext4 images of writable block layers (`default_size`). The
//! device is configured with autoclear (read-only for EROFS), so it goes
//! away when the mount on it does.
//!
//! Where `/dev` is not a devtmpfs (a container's tmpfs `/dev`, filled once at
//! its start), the kernel may hand out a loop device (`LOOP_CTL_GET_FREE`,
//! which adds one when none is free) whose node does not exist. That is
//! reported as `unavailable`, naming the device and the likely cause; the
//! node is not created with mknod. `/dev` belongs to the host or the
//! container runtime, which decides which devices a container may use (an
//! unprivileged or user-namespaced container could not make or open the node
//! anyway), util-linux's losetup does not create it either, and a node made
//! behind the runtime's back would hide the misconfiguration until the next
//! tool trips over it. Retrying, as was done, cannot help: the same device
//! stays free and is handed out again.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::ioctl::{LoopInfo64, LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY};
use crate::sys::mount::MountFlags;
use crate::sys::{self, Errno};

/// A loop device cannot be had on this machine as it is set up (no node,
/// none free): callers report it as `unavailable`, not as an internal error.
#[derive(Debug)]
struct Unavailable(String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

fn unavailable(message: String) -> io::Error {
    io::Error::other(Unavailable(message))
}

/// True for an error that says the machine cannot provide a loop device.
pub(crate) fn is_unavailable(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unavailable>())
}

fn open(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).open(path)
}

/// Attaches `backing` read-only to a free loop device; returns the device,
/// opened. With autoclear the device detaches when its last user (the mount)
/// goes away, so the returned file must be closed once mounted.
pub(crate) fn attach(backing: &Path) -> io::Result<(File, PathBuf)> {
    attach_in(Path::new("/dev"), backing, false)
}

/// [`attach`] with the device nodes looked for in `dev_dir` (a test's fake
/// /dev), read-write when `writable`.
fn attach_in(dev_dir: &Path, backing: &Path, writable: bool) -> io::Result<(File, PathBuf)> {
    let backing_file = open(backing, writable)?;
    let ctl_path = dev_dir.join("loop-control");
    let ctl = open(&ctl_path, true).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => unavailable(format!(
            "{} does not exist; is the loop module loaded, and is {} a devtmpfs?",
            ctl_path.display(),
            dev_dir.display()
        )),
        _ => e,
    })?;
    for _ in 0..64 {
        let n = sys::ioctl::loop_get_free(&ctl)?;
        let dev_path = dev_dir.join(format!("loop{n}"));
        let dev = match open(&dev_path, writable) {
            Ok(d) => d,
            // Asking again would return the same device (see the module doc).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(unavailable(format!(
                    "loop device {} does not exist (LOOP_CTL_GET_FREE returned {n}); is {} a \
                     devtmpfs? In a container, give it the loop devices or a devtmpfs /dev",
                    dev_path.display(),
                    dev_dir.display()
                )))
            }
            Err(e) => return Err(e),
        };
        let ro = if writable { 0 } else { LO_FLAGS_READ_ONLY };
        let info = LoopInfo64::new(ro | LO_FLAGS_AUTOCLEAR, backing.as_os_str().as_bytes());
        let e = match sys::ioctl::loop_configure(&dev, &backing_file, info) {
            Ok(()) => return Ok((dev, dev_path)),
            Err(e) => e,
        };
        match sys::errno(&e) {
            // Another process took this device between GET_FREE and CONFIGURE.
            Some(Errno::BUSY) => continue,
            // Kernels before 5.8: the two-step configuration.
            Some(Errno::INVAL) | Some(Errno::NOTTY) => {
                if let Err(e) = sys::ioctl::loop_set_fd(&dev, &backing_file) {
                    if sys::errno(&e) == Some(Errno::BUSY) {
                        continue;
                    }
                    return Err(e);
                }
                if let Err(e) = sys::ioctl::loop_set_status(&dev, info) {
                    let _ = sys::ioctl::loop_clear(&dev);
                    return Err(e);
                }
                return Ok((dev, dev_path));
            }
            _ => return Err(e),
        }
    }
    Err(unavailable(
        "no free loop device after 64 attempts (others took each one first)".to_string(),
    ))
}

/// Mounts the image `source` on `target` through a loop device.
pub(crate) fn mount_via_loop(
    source: &Path,
    target: &Path,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    through_loop(source, |dev_path| {
        sys::mount::mount(
            OsStr::new(dev_path.as_os_str()),
            target,
            "erofs",
            flags | MountFlags::RDONLY,
            data,
        )
    })
}

/// `mount` (which mounts the device at the path it is given) on a loop
/// device with `image` attached read-only. Closing our reference afterwards
/// lets autoclear detach the device with the mount (or right away, when
/// `mount` failed).
pub(crate) fn through_loop<T>(
    image: &Path,
    mount: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let (dev, dev_path) = attach(image)?;
    let r = mount(&dev_path);
    drop(dev);
    r
}

/// Mounts the writable `fstype` image `source` on `target`: through the
/// loop device that already has it attached, if one does (another mount of
/// it, perhaps detached from every path but still used by an overlay:
/// mounting that device again gives the same filesystem, where a second
/// device would give two filesystems writing one file), else a new one.
pub(crate) fn mount_writable(source: &Path, target: &Path, fstype: &str) -> io::Result<()> {
    // Held open until mounted: a device cannot be cleared (autoclear waits
    // for the last close) and given to another file meanwhile.
    let (held, dev_path) = match attached(source)? {
        Some(found) => found,
        None => attach_in(Path::new("/dev"), source, true)?,
    };
    let r = sys::mount::mount(
        OsStr::new(dev_path.as_os_str()),
        target,
        fstype,
        MountFlags::empty(),
        None,
    );
    drop(held);
    r
}

/// The loop device `image` is attached to, opened, if one is: found by
/// [`device_of`], and found again once held open.
fn attached(image: &Path) -> io::Result<Option<(File, PathBuf)>> {
    let Some(dev_path) = device_of(image)? else {
        return Ok(None);
    };
    let Ok(held) = open(&dev_path, false) else {
        return Ok(None);
    };
    Ok((device_of(image)?.as_deref() == Some(dev_path.as_path())).then_some((held, dev_path)))
}

/// The loop device `image` is attached to, if any (`/sys/block/loopN/loop/
/// backing_file` names it, by the path it was attached with).
pub(crate) fn device_of(image: &Path) -> io::Result<Option<PathBuf>> {
    let want = std::fs::canonicalize(image)?;
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Ok(None);
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.as_bytes().starts_with(b"loop") {
            continue;
        }
        let Ok(backing) = std::fs::read(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.strip_suffix(b"\n").unwrap_or(&backing);
        if Path::new(OsStr::from_bytes(backing)) == want {
            return Ok(Some(Path::new("/dev").join(name)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /dev: loop-control is the real one (a symlink), so the kernel
    /// hands out a real free device, whose node the fake /dev lacks.
    #[test]
    fn a_missing_node_in_a_fake_dev_dir_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fake_dev = dir.path().join("dev");
        std::fs::create_dir(&fake_dev).unwrap();
        let image = dir.path().join("image");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let e = attach_in(&fake_dev, &image, false).unwrap_err();
        assert!(is_unavailable(&e), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}/loop-control does not exist; is the loop module loaded, and is {} a devtmpfs?",
                fake_dev.display(),
                fake_dev.display()
            )
        );
        std::os::unix::fs::symlink("/dev/loop-control", fake_dev.join("loop-control")).unwrap();
        let started = std::time::Instant::now();
        let e = attach_in(&fake_dev, &image, false).unwrap_err();
        assert!(is_unavailable(&e), "{e:?}");
        let m = e.to_string();
        assert!(
            m.starts_with(&format!("loop device {}/loop", fake_dev.display()))
                && m.contains(" does not exist (LOOP_CTL_GET_FREE returned ")
                && m.contains(&format!("is {} a devtmpfs?", fake_dev.display())),
            "{m}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Other errors keep their class.
        let e = attach_in(&fake_dev, &dir.path().join("no-image"), false).unwrap_err();
        assert!(!is_unavailable(&e) && e.kind() == io::ErrorKind::NotFound);
    }
}
