//! Mounting: `mount(2)`, `umount2(2)`, `statfs(2)`, and the new mount API
//! (`fsopen`, `fsconfig`, `fsmount`, `move_mount`).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) use rustix::mount::MountFlags;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};

/// `statfs` magic of EROFS.
pub(crate) const EROFS_SUPER_MAGIC: i64 = 0xE0F5_E1E2;

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| super::error(super::Errno::INVAL))
}

/// `mount(source, target, fstype, flags, data)`.
pub(crate) fn mount(
    source: &OsStr,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let data = data.map(|d| cstring(d.as_bytes())).transpose()?;
    Ok(rustix::mount::mount(
        source,
        target,
        fstype,
        flags,
        data.as_deref(),
    )?)
}

/// `mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL)`: changes
/// the per-mount flags of a bind mount.
pub(crate) fn remount_bind(target: &Path, flags: MountFlags) -> io::Result<()> {
    Ok(rustix::mount::mount_remount(
        target,
        flags | MountFlags::BIND,
        "",
    )?)
}

/// `umount2(target, detach ? MNT_DETACH : 0)`.
pub(crate) fn unmount(target: &Path, detach: bool) -> io::Result<()> {
    let flags = if detach {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    Ok(rustix::mount::unmount(target, flags)?)
}

/// The magic number of the filesystem `path` is on.
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    Ok(rustix::fs::statfs(path)?.f_type as i64)
}

/// Mounts a `fstype` filesystem configured with `options` (`key=value`, or
/// a flag without value) through the new mount API, onto the directory
/// `dest` (an open descriptor: no path is looked up again). Options are
/// given one call each, so there is no one-page limit on their length.
pub(crate) fn mount_configured(
    fstype: &str,
    options: &[(&str, Option<&str>)],
    read_only: bool,
    dest: &impl AsFd,
) -> io::Result<()> {
    attach(&mount_detached(fstype, options, read_only)?, dest)
}

/// A new `fstype` filesystem configured with `options` (as in
/// [`mount_configured`]; read only, both the filesystem and the mount,
/// when `read_only`), mounted nowhere: a detached mount (`fsmount`),
/// usable as a path through `/proc/self/fd/N` and gone when the descriptor
/// is closed, by the caller or by the kernel when the process dies.
pub(crate) fn mount_detached(
    fstype: &str,
    options: &[(&str, Option<&str>)],
    read_only: bool,
) -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    if read_only {
        // The superblock's flag (a read-only device cannot be opened for
        // writing), as MS_RDONLY sets; the mount's is set below.
        rustix::mount::fsconfig_set_flag(&fs, "ro")?;
    }
    for (key, value) in options {
        match value {
            Some(v) => {
                rustix::mount::fsconfig_set_string(&fs, *key, OsStr::from_bytes(v.as_bytes()))?
            }
            None => rustix::mount::fsconfig_set_flag(&fs, *key)?,
        }
    }
    rustix::mount::fsconfig_create(&fs)?;
    let attrs = if read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    Ok(rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        attrs,
    )?)
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`,
/// not its submounts) whose IDs are mapped through the user namespace
/// `userns` (`mount_setattr(MOUNT_ATTR_IDMAP)`), read only when `read_only`.
/// Usable as a path through `/proc/self/fd/N` (an overlay's lower dir) or
/// attached with [`attach`].
pub(crate) fn clone_idmapped(
    path: &Path,
    userns: &impl AsFd,
    read_only: bool,
) -> io::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    set_idmap(&tree, userns, read_only)?;
    Ok(tree)
}

/// Maps the IDs of the detached mount `mnt` (one never attached: the
/// kernel refuses the others) through the user namespace `userns`
/// (`mount_setattr(MOUNT_ATTR_IDMAP)`), and makes it read only when
/// `read_only`.
pub(crate) fn set_idmap(mnt: &impl AsFd, userns: &impl AsFd, read_only: bool) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    if read_only {
        attr.attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes of `attr`,
    // which lives across the call; the path is a NUL-terminated literal.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `mnt` onto the directory `dest` (an open
/// descriptor), on top of whatever is mounted there.
pub(crate) fn attach(mnt: &impl AsFd, dest: &impl AsFd) -> io::Result<()> {
    Ok(rustix::mount::move_mount(
        mnt,
        "",
        dest,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?)
}
