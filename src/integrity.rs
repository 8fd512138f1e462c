//! Integrity features of committed blobs: FS_IMMUTABLE_FL and fs-verity.
//! Both are opt-in: IMMUTABLE_FL costs a synchronous flush per layer.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::{self, Errno};

/// Sets or clears FS_IMMUTABLE_FL on `path` (no-op when already so).
pub fn set_immutable(path: &Path, enable: bool) -> io::Result<()> {
    let f = sys::fs::open_nofollow(path)?;
    let flags = sys::ioctl::inode_flags(&f)?;
    let new = if enable {
        flags | sys::ioctl::FS_IMMUTABLE_FL
    } else {
        flags & !sys::ioctl::FS_IMMUTABLE_FL
    };
    if new == flags {
        return Ok(());
    }
    sys::ioctl::set_inode_flags(&f, new)
}

/// True when FS_IMMUTABLE_FL is set on `path`.
pub fn is_immutable(path: &Path) -> io::Result<bool> {
    let f = sys::fs::open_nofollow(path)?;
    Ok(sys::ioctl::inode_flags(&f)? & sys::ioctl::FS_IMMUTABLE_FL != 0)
}

/// Enables fs-verity (SHA-256, 4 KiB blocks) on `path`; no writable file
/// descriptor may be open on it.
pub fn enable_verity(path: &Path) -> io::Result<()> {
    let f = sys::fs::open_nofollow(path)?;
    match sys::ioctl::enable_verity(&f, 4096) {
        // Already enabled (a retried commit) is success.
        Err(e) if sys::errno(&e) == Some(Errno::EXIST) => Ok(()),
        r => r,
    }
}

/// The fs-verity digest of `path`, prefixed by its algorithm number (the
/// same bytes under another hash are another digest); ENODATA when
/// fs-verity is not enabled on it.
pub fn measure_verity(path: &Path) -> io::Result<Vec<u8>> {
    let f = sys::fs::open_nofollow(path)?;
    let (algorithm, digest) = sys::ioctl::measure_verity(&f)?;
    let mut out = Vec::with_capacity(digest.len() + 2);
    out.extend_from_slice(&algorithm.to_le_bytes());
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Whether blob `path` (of `len` bytes) has blocks a crash left allocated
/// but never written (they read as zeros), from its extent map; write-back
/// still under way is waited for before saying so. False where the
/// filesystem keeps no extent map.
pub fn has_unwritten_blocks(path: &Path, len: u64) -> io::Result<bool> {
    let f = sys::fs::open_nofollow(path)?;
    let unsupported = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL)
        )
    };
    match sys::ioctl::has_unwritten(&f, len, 0) {
        Ok(false) => Ok(false),
        Ok(true) => sys::ioctl::has_unwritten(&f, len, sys::ioctl::FIEMAP_FLAG_SYNC),
        Err(e) if unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
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
    fn immutable_flag_round_trip() {
        // Needs root and a filesystem with inode flags (ext4, xfs, btrfs, tmpfs).
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        std::fs::write(&f, b"x").unwrap();
        set_immutable(&f, true).unwrap();
        assert!(is_immutable(&f).unwrap());
        assert!(std::fs::remove_file(&f).is_err());
        set_immutable(&f, false).unwrap();
        assert!(!is_immutable(&f).unwrap());
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
