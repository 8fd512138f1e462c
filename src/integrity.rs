//! Integrity features of committed blobs: FS_IMMUTABLE_FL and fs-verity.
//! Both are opt-in: IMMUTABLE_FL costs a synchronous flush per layer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

// ioctl numbers from <linux/fs.h> and <linux/fsverity.h> (x86_64 and every
// architecture using the generic _IOC encoding).
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOR('f', 1, long)`; the kernel reads and writes an `int` through it.
pub const FS_IOC_GETFLAGS: u64 = ioc(IOC_READ, b'f', 1, std::mem::size_of::<libc::c_long>());
/// `_IOW('f', 2, long)`.
pub const FS_IOC_SETFLAGS: u64 = ioc(IOC_WRITE, b'f', 2, std::mem::size_of::<libc::c_long>());
pub const FS_IMMUTABLE_FL: libc::c_int = 0x10;
/// `_IOW('f', 133, struct fsverity_enable_arg)`.
pub const FS_IOC_ENABLE_VERITY: u64 = ioc(
    IOC_WRITE,
    b'f',
    133,
    std::mem::size_of::<FsverityEnableArg>(),
);
/// `_IOWR('f', 134, struct fsverity_digest)`.
pub const FS_IOC_MEASURE_VERITY: u64 = ioc(IOC_READ | IOC_WRITE, b'f', 134, 4);
const FS_VERITY_HASH_ALG_SHA256: u32 = 1;
const MAX_DIGEST: usize = 64;

/// `struct fsverity_enable_arg` from <linux/fsverity.h>.
#[repr(C)]
#[derive(Debug, Default)]
pub struct FsverityEnableArg {
    pub version: u32,
    pub hash_algorithm: u32,
    pub block_size: u32,
    pub salt_size: u32,
    pub salt_ptr: u64,
    pub sig_size: u32,
    pub reserved1: u32,
    pub sig_ptr: u64,
    pub reserved2: [u64; 11],
}

/// `struct fsverity_digest` followed by room for the largest digest.
#[repr(C)]
struct FsverityDigest {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; MAX_DIGEST],
}

fn open_ro(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

fn ioctl_int(f: &File, req: u64, val: &mut libc::c_int) -> io::Result<()> {
    // SAFETY: both requests read or write one int through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, val as *mut libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The inode flags of `path` (FS_IOC_GETFLAGS).
pub fn get_flags(path: &Path) -> io::Result<libc::c_int> {
    let f = open_ro(path)?;
    let mut flags: libc::c_int = 0;
    ioctl_int(&f, FS_IOC_GETFLAGS, &mut flags)?;
    Ok(flags)
}

/// Sets or clears FS_IMMUTABLE_FL on `path` (no-op when already so).
pub fn set_immutable(path: &Path, enable: bool) -> io::Result<()> {
    let f = open_ro(path)?;
    let mut flags: libc::c_int = 0;
    ioctl_int(&f, FS_IOC_GETFLAGS, &mut flags)?;
    let mut new = if enable {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new == flags {
        return Ok(());
    }
    ioctl_int(&f, FS_IOC_SETFLAGS, &mut new)
}

/// Enables fs-verity (SHA-256, 4 KiB blocks) on `path`; no writable file
/// descriptor may be open on it.
pub fn enable_verity(path: &Path) -> io::Result<()> {
    let f = open_ro(path)?;
    let arg = FsverityEnableArg {
        version: 1,
        hash_algorithm: FS_VERITY_HASH_ALG_SHA256,
        block_size: 4096,
        ..Default::default()
    };
    // SAFETY: the kernel reads a struct fsverity_enable_arg through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_ENABLE_VERITY as _, &arg) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Already enabled (a retried commit) is success.
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// The fs-verity digest of `path`; ENODATA when verity is not enabled on it.
pub fn measure_verity(path: &Path) -> io::Result<Vec<u8>> {
    let f = open_ro(path)?;
    let mut d = FsverityDigest {
        digest_algorithm: 0,
        digest_size: MAX_DIGEST as u16,
        digest: [0; MAX_DIGEST],
    };
    // SAFETY: digest_size tells the kernel how much room follows the header.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_MEASURE_VERITY as _, &mut d) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::from(d.digest_size).min(MAX_DIGEST);
    let mut out = Vec::with_capacity(n + 2);
    // The algorithm is part of what is compared: same bytes under another hash differ.
    out.extend_from_slice(&d.digest_algorithm.to_le_bytes());
    out.extend_from_slice(&d.digest[..n]);
    Ok(out)
}

/// Checks that the filesystem of `dir` can enable fs-verity, by enabling it
/// on a scratch file. Unsupported is `unavailable` with what to change.
pub fn probe_verity(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".verity-probe-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&probe)
            .map_err(|e| Error::io("create", &probe, e))?;
        f.write_all(&[0u8; 4096])
            .map_err(|e| Error::io("write", &probe, e))?;
        drop(f);
        enable_verity(&probe).map_err(|e| {
            Error::unavailable(format!(
                "enable_fsverity is set but the filesystem of {} does not support fs-verity ({e}); \
                 use a filesystem with the verity feature (e.g. ext4 made with `mkfs.ext4 -O verity`, \
                 or btrfs) on a kernel with CONFIG_FS_VERITY, or turn enable_fsverity off",
                dir.display()
            ))
        })
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

/// Renders a digest for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_headers() {
        // Values from <linux/fs.h> and <linux/fsverity.h> on x86_64.
        assert_eq!(FS_IOC_GETFLAGS, 0x8008_6601);
        assert_eq!(FS_IOC_SETFLAGS, 0x4008_6602);
        assert_eq!(FS_IOC_ENABLE_VERITY, 0x4080_6685);
        assert_eq!(FS_IOC_MEASURE_VERITY, 0xc004_6686);
        assert_eq!(std::mem::size_of::<FsverityEnableArg>(), 128);
        assert_eq!(std::mem::offset_of!(FsverityEnableArg, salt_ptr), 16);
        assert_eq!(std::mem::offset_of!(FsverityEnableArg, sig_ptr), 32);
        assert_eq!(std::mem::offset_of!(FsverityDigest, digest), 4);
    }

    #[test]
    fn immutable_flag_round_trip() {
        // Needs root and a filesystem with inode flags (ext4, xfs, btrfs, tmpfs).
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        std::fs::write(&f, b"x").unwrap();
        set_immutable(&f, true).unwrap();
        assert_ne!(get_flags(&f).unwrap() & FS_IMMUTABLE_FL, 0);
        assert!(std::fs::remove_file(&f).is_err());
        set_immutable(&f, false).unwrap();
        assert_eq!(get_flags(&f).unwrap() & FS_IMMUTABLE_FL, 0);
    }

    #[test]
    fn verity_unsupported_here_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        match probe_verity(dir.path()) {
            // A kernel and filesystem with fs-verity: enabling then measuring must work.
            Ok(()) => {
                let f = dir.path().join("v");
                std::fs::write(&f, vec![7u8; 8192]).unwrap();
                enable_verity(&f).unwrap();
                assert_eq!(measure_verity(&f).unwrap().len(), 2 + 32);
            }
            Err(e) => {
                assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
                assert!(e.message().contains("fs-verity"), "{}", e.message());
            }
        }
        let f = dir.path().join("plain");
        std::fs::write(&f, b"x").unwrap();
        assert!(measure_verity(&f).is_err());
    }
}
