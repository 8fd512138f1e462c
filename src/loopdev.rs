//! Loop devices, for kernels without file-backed EROFS mounts (before 6.12).
//! The device is configured read-only with autoclear, so it goes away when
//! the mount on it does.
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
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::mounts::sys_mount;

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_STATUS64: u64 = 0x4C04;
const LOOP_CONFIGURE: u64 = 0x4C0A;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

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

fn open_cloexec(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Attaches `backing` read-only to a free loop device; returns the device,
/// opened. With autoclear the device detaches when its last user (the mount)
/// goes away, so the returned file must be closed once mounted.
pub(crate) fn attach(backing: &Path) -> io::Result<(File, PathBuf)> {
    attach_in(Path::new("/dev"), backing)
}

/// [`attach`] with the device nodes looked for in `dev_dir` (a test's fake /dev).
fn attach_in(dev_dir: &Path, backing: &Path) -> io::Result<(File, PathBuf)> {
    let backing_file = open_cloexec(backing, false)?;
    let ctl_path = dev_dir.join("loop-control");
    let ctl = open_cloexec(&ctl_path, true).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => unavailable(format!(
            "{} does not exist; is the loop module loaded, and is {} a devtmpfs?",
            ctl_path.display(),
            dev_dir.display()
        )),
        _ => e,
    })?;
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev_path = dev_dir.join(format!("loop{n}"));
        let dev = match open_cloexec(&dev_path, false) {
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
        // SAFETY: zero is a valid bit pattern for these plain-data structs.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing_file.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        let name = backing.as_os_str().as_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: the kernel reads a struct loop_config.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            return Ok((dev, dev_path));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // Another process took this device between GET_FREE and CONFIGURE.
            Some(libc::EBUSY) => continue,
            // Kernels before 5.8: the two-step configuration.
            Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                // SAFETY: LOOP_SET_FD takes the backing fd by value.
                if unsafe {
                    libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing_file.as_raw_fd())
                } < 0
                {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        continue;
                    }
                    return Err(e);
                }
                // SAFETY: the kernel reads a struct loop_info64.
                if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &cfg.info) } < 0 {
                    let e = io::Error::last_os_error();
                    // SAFETY: LOOP_CLR_FD takes no argument.
                    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
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
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (dev, dev_path) = attach(source)?;
    let r = sys_mount(
        OsStr::new(dev_path.as_os_str()),
        target,
        "erofs",
        flags | libc::MS_RDONLY,
        data,
    );
    // Closing our reference lets autoclear detach the device with the mount
    // (or right now, when the mount failed).
    drop(dev);
    r
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
        let e = attach_in(&fake_dev, &image).unwrap_err();
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
        let e = attach_in(&fake_dev, &image).unwrap_err();
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
        let e = attach_in(&fake_dev, &dir.path().join("no-image")).unwrap_err();
        assert!(!is_unavailable(&e) && e.kind() == io::ErrorKind::NotFound);
    }

    #[test]
    fn struct_layout_matches_linux() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
