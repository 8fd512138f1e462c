//! Mounts: the concrete `{type, source, target, options}` records the
//! snapshotter returns, and the system calls that perform them, so that a C
//! program or a script without a container runtime can mount a snapshot.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::MoveMountFlags;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loopdev;

/// One mount, as containerd's `mount.Mount`; usable with a plain `mount(2)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    /// Sub-path of the mount point this mount goes to (absent: the mount point itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// `statfs` magic of EROFS.
pub const EROFS_SUPER_MAGIC: i64 = 0xE0F5_E1E2;

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `mount(2)`.
pub(crate) fn sys_mount(
    source: &OsStr,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = cstr(source)?;
    let tgt = cstr(target.as_os_str())?;
    let ty = cstr(OsStr::new(fstype))?;
    let data = data.map(|d| cstr(OsStr::new(d))).transpose()?;
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `umount2(2)`.
pub(crate) fn sys_umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let tgt = cstr(target.as_os_str())?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(tgt.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The filesystem magic of the filesystem `path` is on.
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    let p = cstr(path.as_os_str())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a statfs buffer.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } == 0 {
        Ok(st.f_type as i64)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts everything stacked on `target` (as containerd's `UnmountAll`);
/// `detach` unmounts lazily. Returns how many mounts were removed.
pub fn unmount_all(target: &Path, detach: bool) -> Result<usize> {
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    let mut n = 0;
    // As containerd: a mount can be busy for a moment (e.g. a forked child
    // that has not exec'd yet still holds a descriptor in it).
    let mut busy_retries = 50;
    loop {
        match sys_umount(target, flags) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && busy_retries > 0 => {
                busy_retries -= 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // EINVAL: not a mount point (any more). ENOENT: gone.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                return Ok(n)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                let kind = if e.raw_os_error() == Some(libc::EBUSY) {
                    crate::ErrorKind::FailedPrecondition
                } else {
                    crate::ErrorKind::Internal
                };
                return Err(Error::new(
                    kind,
                    format!("unmount {}: {e}", target.display()),
                ));
            }
        }
    }
}

/// Mount flags and the remaining data options, as `mount(8)` splits them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ParsedOptions {
    pub flags: libc::c_ulong,
    pub data: Vec<String>,
    pub loop_dev: bool,
}

pub(crate) fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    for o in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "noatime" => (libc::MS_NOATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "defaults" => (0, 0),
            "loop" => {
                p.loop_dev = true;
                (0, 0)
            }
            _ => {
                p.data.push(o.clone());
                (0, 0)
            }
        };
        p.flags = (p.flags | set) & !clear;
    }
    p
}

/// Mounts `mounts` on `target` in order, as containerd's `mount.All`. On
/// failure the mounts already made are undone. The target must exist.
///
/// A mount's `target` sub-path is resolved inside `target` as if `target`
/// were `/` (containerd's `fs.RootPath`): symlinks and `..` in the tree never
/// lead outside it. `..` in the sub-path itself is refused; a sub-path that
/// does not exist there is `not found`. Each sub-path is resolved after the
/// mounts before it, so it can lie in one of them.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Err(Error::invalid_argument("no mounts given"));
    }
    let mut done: Vec<Made> = Vec::new();
    for m in mounts {
        let made =
            resolve_target(target, m.target.as_deref()).and_then(|d| mount_one(m, target, &d));
        match made {
            Ok(made) => done.push(made),
            Err(e) => {
                undo(&done);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn undo(done: &[Made]) {
    for made in done.iter().rev() {
        let _ = sys_umount(&made.path, libc::MNT_DETACH);
    }
}

/// Where one mount goes.
struct Dest {
    /// What `mount(2)` is given: the mount point, or `/proc/self/fd/N` of
    /// `fd`, which the kernel follows to that directory without a lookup.
    path: PathBuf,
    /// The destination, opened (`O_PATH`) before mounting.
    fd: OwnedFd,
    /// The destination relative to the mount point without symlinks or `..`
    /// (empty: the mount point). Walked again after mounting it reaches the
    /// new mount; `path` and `fd` still name the directory under it.
    rel: PathBuf,
    /// For messages.
    shown: String,
}

/// A mount just made.
struct Made {
    /// Names it for a remount or an unmount: the mount point (where it is the
    /// top mount), or `/proc/self/fd/N` of `_fd`.
    path: PathBuf,
    _fd: Option<OwnedFd>,
}

/// `/proc/self/fd/N`: what `fd` refers to, for calls that take a path.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `p` with `O_PATH`, following symlinks: the caller chose `p`.
fn open_location(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` below `root` with `root` as `/`: absolute symlinks and `..`
/// stop at `root`; /proc magic links are refused.
fn open_in_root(root: &OwnedFd, rel: &Path, extra: ResolveFlags) -> io::Result<OwnedFd> {
    let flags = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | extra;
    let mut tries = 16;
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            flags,
        ) {
            // A rename or mount raced the walk of a `..`; the kernel asks to retry.
            Err(rustix::io::Errno::AGAIN) if tries > 0 => tries -= 1,
            r => return Ok(r?),
        }
    }
}

/// Resolves a mount's `sub` target inside `mount_point` and opens it.
fn resolve_target(mount_point: &Path, sub: Option<&str>) -> Result<Dest> {
    let root = open_location(mount_point).map_err(|e| target_error(mount_point, None, e))?;
    let sub = match sub {
        Some(s) if !s.is_empty() => s,
        _ => {
            return Ok(Dest {
                path: mount_point.to_path_buf(),
                fd: root,
                rel: PathBuf::new(),
                shown: mount_point.display().to_string(),
            })
        }
    };
    if Path::new(sub)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::invalid_argument(format!(
            "mount target {sub:?} must stay below the mount point"
        )));
    }
    let fd = open_in_root(&root, Path::new(sub), ResolveFlags::empty())
        .map_err(|e| target_error(mount_point, Some(sub), e))?;
    // The kernel's name for both (no symlinks, no `..`) gives the path below
    // the mount point that reaches the mount once it is made.
    let names =
        std::fs::read_link(fd_path(&root)).and_then(|r| Ok((r, std::fs::read_link(fd_path(&fd))?)));
    let (root_name, name) = names.map_err(|e| {
        Error::failed_precondition(format!(
            "mount target {sub:?} in {}: reading /proc/self/fd: {e} (is /proc mounted?)",
            mount_point.display()
        ))
    })?;
    let rel = name.strip_prefix(&root_name).map_err(|_| {
        Error::internal(format!(
            "mount target {sub:?} in {}: resolved to {}, not below {}",
            mount_point.display(),
            name.display(),
            root_name.display()
        ))
    })?;
    Ok(Dest {
        path: fd_path(&fd),
        rel: rel.to_path_buf(),
        shown: format!("{} (target {sub:?})", name.display()),
        fd,
    })
}

fn target_error(mount_point: &Path, sub: Option<&str>, e: io::Error) -> Error {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => crate::ErrorKind::NotFound,
        // A symlink loop, or a /proc magic link.
        Some(libc::ELOOP) => crate::ErrorKind::InvalidArgument,
        Some(libc::EPERM) | Some(libc::EACCES) => crate::ErrorKind::FailedPrecondition,
        Some(libc::ENOSYS) => crate::ErrorKind::NotImplemented,
        _ => crate::ErrorKind::Internal,
    };
    let what = match sub {
        Some(sub) => format!("mount target {sub:?} in {}", mount_point.display()),
        None => format!("mount point {}", mount_point.display()),
    };
    let hint = if e.raw_os_error() == Some(libc::ENOSYS) {
        " (resolving a mount target needs openat2, Linux 5.6)"
    } else {
        ""
    };
    Error::new(kind, format!("{what}: {e}{hint}"))
}

impl Dest {
    /// Names the mount just made here. A fresh walk from the mount point
    /// crosses into it, as the fd opened before it does not.
    fn made(&self, mount_point: &Path) -> io::Result<Made> {
        if self.rel.as_os_str().is_empty() {
            // The caller's path, as always: needs no /proc.
            return Ok(Made {
                path: mount_point.to_path_buf(),
                _fd: None,
            });
        }
        let root = open_location(mount_point)?;
        let fd = open_in_root(&root, &self.rel, ResolveFlags::NO_SYMLINKS)?;
        Ok(Made {
            path: fd_path(&fd),
            _fd: Some(fd),
        })
    }
}

/// Mounts `m` on `dest`.
fn mount_one(m: &Mount, mount_point: &Path, dest: &Dest) -> Result<Made> {
    let p = parse_options(&m.options);
    let fail = |e: io::Error| {
        let kind = match e.raw_os_error() {
            _ if loopdev::is_unavailable(&e) => crate::ErrorKind::Unavailable,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => crate::ErrorKind::NotFound,
            Some(libc::EPERM) | Some(libc::EACCES) => crate::ErrorKind::FailedPrecondition,
            Some(libc::ENODEV) => crate::ErrorKind::Unavailable,
            Some(libc::EINVAL) => crate::ErrorKind::InvalidArgument,
            _ => crate::ErrorKind::Internal,
        };
        Error::new(
            kind,
            format!(
                "mount {} {:?} on {} (options {:?}): {e}",
                m.kind, m.source, dest.shown, m.options
            ),
        )
    };
    // A bind mount takes MS_RDONLY (and the other per-mount flags) only on remount.
    let mut remount = 0;
    match m.kind.as_str() {
        "bind" | "rbind" => {
            let mut flags = p.flags | libc::MS_BIND;
            if m.kind == "rbind" {
                flags |= libc::MS_REC;
            }
            sys_mount(
                OsStr::new(&m.source),
                &dest.path,
                "none",
                flags & !libc::MS_RDONLY,
                None,
            )
            .map_err(fail)?;
            remount =
                flags & (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        }
        "erofs" => {
            let data = (!p.data.is_empty()).then(|| p.data.join(","));
            let source = Path::new(&m.source);
            let r = if p.loop_dev {
                loopdev::mount_via_loop(source, &dest.path, p.flags, data.as_deref())
            } else {
                match sys_mount(
                    source.as_os_str(),
                    &dest.path,
                    "erofs",
                    p.flags,
                    data.as_deref(),
                ) {
                    // A kernel without file-backed EROFS wants a block device.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTBLK) && is_regular(source) => {
                        loopdev::mount_via_loop(source, &dest.path, p.flags, data.as_deref())
                    }
                    r => r,
                }
            };
            r.map_err(fail)?;
        }
        "overlay" => mount_overlay(&m.source, dest, &p).map_err(fail)?,
        other => {
            let data = (!p.data.is_empty()).then(|| p.data.join(","));
            sys_mount(
                OsStr::new(&m.source),
                &dest.path,
                other,
                p.flags,
                data.as_deref(),
            )
            .map_err(fail)?;
        }
    }
    // Without the new mount open it cannot be named safely, so it is left
    // mounted rather than risk unmounting something else.
    let new = dest.made(mount_point).map_err(|e| {
        Error::internal(format!(
            "mounted {} {:?} on {} but cannot open the new mount (left mounted): {e}",
            m.kind, m.source, dest.shown
        ))
    })?;
    if remount != 0 {
        let r = sys_mount(
            OsStr::new("none"),
            &new.path,
            "none",
            remount | libc::MS_BIND | libc::MS_REMOUNT,
            None,
        );
        if let Err(e) = r {
            let _ = sys_umount(&new.path, libc::MNT_DETACH);
            return Err(fail(e));
        }
    }
    Ok(new)
}

fn is_regular(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

/// Longest option string `mount(2)` accepts (one page, with the NUL).
const MAX_MOUNT_DATA: usize = 4095;

/// Mounts an overlay; when the options do not fit in one page (many long
/// lower directories), uses the new mount API with one `lowerdir+` per layer.
fn mount_overlay(source: &str, dest: &Dest, p: &ParsedOptions) -> io::Result<()> {
    let data = p.data.join(",");
    if data.len() <= MAX_MOUNT_DATA {
        return sys_mount(
            OsStr::new(source),
            &dest.path,
            "overlay",
            p.flags,
            Some(&data),
        );
    }
    mount_overlay_fsconfig(dest, p)
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn mount_overlay_fsconfig(dest: &Dest, p: &ParsedOptions) -> io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 1;

    let name = CString::new("overlay").map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fsopen with a valid C string; the fd is owned below.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: a new fd we own.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let fs_raw = std::os::fd::AsRawFd::as_raw_fd(&fs);
    let set = |key: &str, value: Option<&str>| -> io::Result<()> {
        let k = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let v = value
            .map(|v| CString::new(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
            .transpose()?;
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: valid fd and C strings.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs_raw, cmd, k.as_ptr(), vp, 0) })
            .map(drop)
    };
    for opt in &p.data {
        match opt.split_once('=') {
            Some(("lowerdir", list)) => {
                for dir in split_lowerdirs(list) {
                    set("lowerdir+", Some(&dir))?;
                }
            }
            Some((k, v)) => set(k, Some(v))?,
            None => set(opt, None)?,
        }
    }
    // SAFETY: valid fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_raw,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    let attrs = if p.flags & libc::MS_RDONLY != 0 {
        MOUNT_ATTR_RDONLY
    } else {
        0
    };
    // SAFETY: valid fd; the new mount fd is owned below.
    let mnt = check(unsafe { libc::syscall(libc::SYS_fsmount, fs_raw, FSMOUNT_CLOEXEC, attrs) })?;
    // SAFETY: a new fd we own.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    // Onto the destination's fd: a path would be looked up again, and
    // move_mount does not follow a /proc/self/fd link.
    rustix::mount::move_mount(
        &mnt,
        "",
        &dest.fd,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// Splits a `lowerdir=` value at unescaped colons.
fn split_lowerdirs(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Escapes a path for a `lowerdir=` list (`:` and `,` and `\` are special).
pub(crate) fn escape_overlay_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// major:minor of the mounted filesystem.
    pub dev: (u32, u32),
    /// The directory of that filesystem which is mounted (`/` unless a bind).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: String,
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountInfo> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    let dev = std::str::from_utf8(fields.get(2)?).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let path = |f: &[u8]| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f)));
    Some(MountInfo {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        root: path(fields.get(3)?),
        mount_point: path(fields.get(4)?),
        fstype: String::from_utf8_lossy(fields.get(sep + 1)?).into_owned(),
        super_options: String::from_utf8_lossy(&unescape_mountinfo(fields.get(sep + 3)?))
            .into_owned(),
    })
}

/// The mount table of this mount namespace.
pub(crate) fn mount_table() -> io::Result<Vec<MountInfo>> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    Ok(info
        .split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// Mount points of this mount namespace that lie strictly below `prefix`.
pub(crate) fn mount_points_under(prefix: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(mount_table()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != prefix && p.starts_with(prefix))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_like_mount8() {
        let opts: Vec<String> = ["ro", "rbind", "loop", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_options(&opts);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC);
        assert!(p.loop_dev);
        assert_eq!(p.data, ["lowerdir=/a:/b", "index=off"]);
        let p = parse_options(&["ro".into(), "rw".into()]);
        assert_eq!(p.flags, 0);
    }

    #[test]
    fn lowerdir_escaping_round_trips() {
        let dirs = ["/a:b", "/c,d", "/e\\f", "/plain"];
        let joined = dirs
            .iter()
            .map(|d| escape_overlay_path(d))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(split_lowerdirs(&joined), dirs);
    }

    #[test]
    fn mountinfo_lines() {
        let l = br"36 35 98:0 /mnt1 /mnt/a\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.dev, (98, 0));
        assert_eq!(m.root, PathBuf::from("/mnt1"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert!(parse_mountinfo_line(b"garbage").is_none());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape_mountinfo(br"/x\04"), b"/x\\04");
    }

    #[test]
    fn mount_json_shape() {
        let m = Mount {
            kind: "bind".into(),
            source: "/s".into(),
            target: None,
            options: vec!["rw".into(), "rbind".into()],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"bind","source":"/s","options":["rw","rbind"]}"#
        );
        let back: Mount =
            serde_json::from_str(r#"{"type":"bind","source":"/s","target":"x"}"#).unwrap();
        assert_eq!(back.target.as_deref(), Some("x"));
        assert!(back.options.is_empty());
    }
}
