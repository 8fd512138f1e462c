//! Files, directories, locks and extended attributes.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(crate) use rustix::fs::{FileType, Stat};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};

use super::Errno;

/// Largest xattr value Linux stores (`XATTR_SIZE_MAX`), and the largest
/// list of names (`XATTR_LIST_MAX`).
const XATTR_MAX: usize = 64 * 1024;

/// Opens `p` with `O_PATH`, following symlinks (the caller chose `p`).
pub(crate) fn open_path(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens directory `p` for reading.
pub(crate) fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens file `p` read-only without following a symlink at its end.
pub(crate) fn open_nofollow(p: &Path) -> io::Result<File> {
    Ok(File::from(rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?))
}

/// Opens `rel` below `root` as if `root` were `/`: absolute symlinks and
/// `..` stop at `root`, /proc magic links are refused; with `no_symlinks`,
/// any symlink is. Retried when the kernel asks (a rename raced a `..`).
pub(crate) fn open_in_root(root: &impl AsFd, rel: &Path, no_symlinks: bool) -> io::Result<OwnedFd> {
    let mut flags = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    if no_symlinks {
        flags |= ResolveFlags::NO_SYMLINKS;
    }
    let mut tries = 16;
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            flags,
        ) {
            Err(Errno::AGAIN) if tries > 0 => tries -= 1,
            r => return Ok(r?),
        }
    }
}

/// What [`open_beneath`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// Anything, `O_PATH` (stat it, read a symlink).
    Path,
    /// A directory, for reading.
    Dir,
    /// A regular file, for reading.
    File,
}

/// Opens the entry `name` (one component) of directory `dir`, never
/// following a symlink, never leaving `dir` or its filesystem.
pub(crate) fn open_beneath(dir: &impl AsFd, name: &[u8], how: Open) -> io::Result<OwnedFd> {
    let flags = match how {
        Open::Path => OFlags::PATH,
        Open::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
        Open::File => OFlags::RDONLY,
    };
    Ok(rustix::fs::openat2(
        dir,
        OsStr::from_bytes(name),
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )?)
}

pub(crate) fn fstat(fd: &impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// The major and minor numbers of a device number.
pub(crate) fn major_minor(rdev: u64) -> (u32, u32) {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// The target of the symlink `fd` (opened `O_PATH | O_NOFOLLOW`).
pub(crate) fn read_link(fd: &impl AsFd) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(fd, "", Vec::new())?.into_bytes())
}

/// The names in directory `fd` but `.` and `..`.
pub(crate) fn dir_names(fd: &impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    Ok(dir_entries(fd)?.into_iter().map(|(name, _)| name).collect())
}

/// The entries of directory `fd` but `.` and `..`, each with whether it is
/// a directory (from `d_type`, else `fstatat` without following).
pub(crate) fn dir_entries(fd: &impl AsFd) -> io::Result<Vec<(Vec<u8>, bool)>> {
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::new(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match ent.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let st =
                    rustix::fs::statat(fd, ent.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        out.push((name.to_vec(), is_dir));
    }
    Ok(out)
}

/// Removes entry `name` of directory `dir` (`rmdir` when `is_dir`); never
/// follows a symlink.
pub(crate) fn unlink_at(dir: &impl AsFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        rustix::fs::AtFlags::REMOVEDIR
    } else {
        rustix::fs::AtFlags::empty()
    };
    Ok(rustix::fs::unlinkat(dir, OsStr::from_bytes(name), flags)?)
}

/// True when reading directory `dir` reports the type of its entry `name`
/// (overlayfs needs `d_type`).
pub(crate) fn dir_reports_type(dir: &Path, name: &[u8]) -> io::Result<bool> {
    for ent in rustix::fs::Dir::new(open_dir(dir)?)? {
        let ent = ent?;
        if ent.file_name().to_bytes() == name {
            return Ok(ent.file_type() != FileType::Unknown);
        }
    }
    Err(super::error(Errno::NOENT))
}

/// Asks the kernel to start reading the first `len` bytes of `f` into the
/// page cache (`POSIX_FADV_WILLNEED`), without waiting for them: reads of
/// many small files overlap on the disk instead of waiting one by one.
pub(crate) fn will_need(f: &impl AsFd, len: u64) -> io::Result<()> {
    Ok(rustix::fs::fadvise(
        f,
        0,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::WillNeed,
    )?)
}

/// Starts writing the dirty pages of bytes `offset..offset + len` of `f` to
/// the disk (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`; rustix does not
/// wrap it). It may block while the device's queue is full: call it from a
/// thread that can wait.
pub(crate) fn write_back(f: &impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes a descriptor and integers, no memory.
    let rc = unsafe {
        libc::sync_file_range(
            f.as_fd().as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One xattr of `fd` (not opened `O_PATH`); `None` when it has none of
/// that name or the filesystem has no xattrs.
pub(crate) fn get_xattr(fd: &impl AsFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    match sized(|buf| rustix::fs::fgetxattr(fd, OsStr::from_bytes(name), buf)) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What an xattr call that fills a buffer gives, in a buffer of the size it
/// needs: first a small one (most lists and values are a few bytes, and a
/// commit asks every entry: no zeroed 64 KiB per call), then, on `ERANGE`,
/// the size the call reports for an empty one.
fn sized(mut call: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // It grew since it was measured, or it was never measured.
            Err(Errno::RANGE) if buf.len() < XATTR_MAX => {
                let want = call(&mut [])?;
                buf = vec![0u8; want.clamp(buf.len() + 1, XATTR_MAX)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every xattr of `path`, not following a symlink at its end: `(name,
/// value)` pairs, for the names `keep` accepts.
pub(crate) fn xattrs_nofollow(
    path: &Path,
    keep: impl Fn(&[u8]) -> bool,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(names) => names,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && keep(n))
    {
        match sized(|buf| rustix::fs::lgetxattr(path, OsStr::from_bytes(name), buf)) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed meanwhile.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// `/proc/self/fd/N/name`: entry `name` of directory `dir`, as a path that
/// the xattr calls resolve without following `name` itself.
pub(crate) fn entry_path(dir: &impl AsFd, name: Option<&[u8]>) -> PathBuf {
    let mut p = fd_path(dir);
    if let Some(name) = name {
        p.push(OsStr::from_bytes(name));
    }
    p
}

/// `/proc/self/fd/N`: what `fd` refers to, for calls that take a path.
pub(crate) fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// An flock operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    Shared,
    Exclusive,
    /// Exclusive, or `EWOULDBLOCK` at once.
    TryExclusive,
    Unlock,
}

/// `flock(2)`, retried when interrupted.
pub(crate) fn flock(f: &impl AsFd, lock: Lock) -> io::Result<()> {
    use rustix::fs::FlockOperation as Op;
    let op = match lock {
        Lock::Shared => Op::LockShared,
        Lock::Exclusive => Op::LockExclusive,
        Lock::TryExclusive => Op::NonBlockingLockExclusive,
        Lock::Unlock => Op::Unlock,
    };
    loop {
        match rustix::fs::flock(f, op) {
            Err(Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Bytes this process may still write on the filesystem of `dir` (root may
/// use the blocks reserved for it).
pub(crate) fn free_space(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    let blocks = if super::process::is_root() {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Ok(blocks.saturating_mul(st.f_frsize))
}

/// The size of the filesystem of `dir`, in bytes.
pub(crate) fn total_space(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// Exchanges `a` and `b` atomically (both must exist).
pub(crate) fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags};
    Ok(renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?)
}

/// Renames `from` to `to`, failing if `to` exists.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags};
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

/// A close-on-exec duplicate of a descriptor the caller lends.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller guarantees `fd` is open for the duration of the call;
    // it is only borrowed to duplicate it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?)
}

/// An anonymous file in memory (the fuzz targets write images there, and
/// the remap-ids probe where the root has no unnamed files).
pub(crate) fn memfd(name: &str) -> io::Result<File> {
    use rustix::fs::MemfdFlags;
    Ok(File::from(rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC,
    )?))
}

/// An unnamed file on the filesystem of directory `dir`, readable and
/// writable, mode 0600 (`O_TMPFILE`): nothing to remove afterwards, even
/// when the process is killed. `EOPNOTSUPP` or `EISDIR` where that
/// filesystem has no unnamed files.
pub(crate) fn tmpfile_in(dir: &Path) -> io::Result<File> {
    Ok(File::from(rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?))
}
