//! Mounts: the concrete `{type, source, target, options}` records the
//! snapshotter returns, and the system calls that perform them, so that a C
//! program or a script without a container runtime can mount a snapshot.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loopdev;
use crate::sys::fs::{fd_path, open_in_root, open_path};
use crate::sys::mount::MountFlags;
use crate::sys::{self, Errno};

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

/// Unmounts everything stacked on `target` (as containerd's `UnmountAll`);
/// `detach` unmounts lazily. Returns how many mounts were removed.
pub fn unmount_all(target: &Path, detach: bool) -> Result<usize> {
    let mut n = 0;
    // As containerd: a mount can be busy for a moment (e.g. a forked child
    // that has not exec'd yet still holds a descriptor in it).
    let mut busy_retries = 50;
    loop {
        match sys::mount::unmount(target, detach) {
            Ok(()) => n += 1,
            Err(e) if sys::errno(&e) == Some(Errno::BUSY) && busy_retries > 0 => {
                busy_retries -= 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // EINVAL: not a mount point (any more). ENOENT: gone.
            Err(e) if matches!(sys::errno(&e), Some(Errno::INVAL) | Some(Errno::NOENT)) => {
                return Ok(n)
            }
            Err(e) if sys::errno(&e) == Some(Errno::INTR) => continue,
            Err(e) => {
                let kind = if sys::errno(&e) == Some(Errno::BUSY) {
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
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedOptions {
    pub flags: MountFlags,
    pub data: Vec<String>,
    pub loop_dev: bool,
    /// containerd's `uidmap=` and `gidmap=`: the mount is made through
    /// ID-mapped mounts (see [`crate::idmap`]), not given to the kernel.
    pub uidmap: Option<String>,
    pub gidmap: Option<String>,
}

pub(crate) fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions {
        flags: MountFlags::empty(),
        data: Vec::new(),
        loop_dev: false,
        uidmap: None,
        gidmap: None,
    };
    for o in options {
        if let Some(v) = o.strip_prefix("uidmap=") {
            p.uidmap = Some(v.to_string());
            continue;
        }
        if let Some(v) = o.strip_prefix("gidmap=") {
            p.gidmap = Some(v.to_string());
            continue;
        }
        let none = MountFlags::empty();
        let (set, clear) = match o.as_str() {
            "ro" => (MountFlags::RDONLY, none),
            "rw" => (none, MountFlags::RDONLY),
            "bind" => (MountFlags::BIND, none),
            "rbind" => (MountFlags::BIND | MountFlags::REC, none),
            "nosuid" => (MountFlags::NOSUID, none),
            "suid" => (none, MountFlags::NOSUID),
            "nodev" => (MountFlags::NODEV, none),
            "dev" => (none, MountFlags::NODEV),
            "noexec" => (MountFlags::NOEXEC, none),
            "exec" => (none, MountFlags::NOEXEC),
            "sync" => (MountFlags::SYNCHRONOUS, none),
            "async" => (none, MountFlags::SYNCHRONOUS),
            "noatime" => (MountFlags::NOATIME, none),
            "relatime" => (MountFlags::RELATIME, none),
            "nodiratime" => (MountFlags::NODIRATIME, none),
            "defaults" => (none, none),
            "loop" => {
                p.loop_dev = true;
                (none, none)
            }
            _ => {
                p.data.push(o.clone());
                (none, none)
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
        for _ in 0..made.stacked {
            let _ = sys::mount::unmount(&made.path, true);
        }
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
    /// Mounts stacked there: 2 for an ID-mapped copy on top of the mount.
    stacked: usize,
}

/// Resolves a mount's `sub` target inside `mount_point` and opens it.
fn resolve_target(mount_point: &Path, sub: Option<&str>) -> Result<Dest> {
    let root = open_path(mount_point).map_err(|e| target_error(mount_point, None, e))?;
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
    let fd = open_in_root(&root, Path::new(sub), false)
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
    let kind = match sys::errno(&e) {
        Some(Errno::NOENT) | Some(Errno::NOTDIR) => crate::ErrorKind::NotFound,
        // A symlink loop, or a /proc magic link.
        Some(Errno::LOOP) => crate::ErrorKind::InvalidArgument,
        Some(Errno::PERM) | Some(Errno::ACCESS) => crate::ErrorKind::FailedPrecondition,
        Some(Errno::NOSYS) => crate::ErrorKind::NotImplemented,
        _ => crate::ErrorKind::Internal,
    };
    let what = match sub {
        Some(sub) => format!("mount target {sub:?} in {}", mount_point.display()),
        None => format!("mount point {}", mount_point.display()),
    };
    let hint = if sys::errno(&e) == Some(Errno::NOSYS) {
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
                stacked: 1,
            });
        }
        let root = open_path(mount_point)?;
        let fd = open_in_root(&root, &self.rel, true)?;
        Ok(Made {
            path: fd_path(&fd),
            _fd: Some(fd),
            stacked: 1,
        })
    }
}

/// Mounts `m` on `dest`.
fn mount_one(m: &Mount, mount_point: &Path, dest: &Dest) -> Result<Made> {
    let mut p = parse_options(&m.options);
    // An ID-mapped mount, as containerd's mount code makes it: an overlay's
    // lower dirs are each mounted through an ID-mapped copy; any other
    // mount is made, then an ID-mapped copy of it put on top.
    let userns = match (&p.uidmap, &p.gidmap) {
        (None, None) => None,
        (Some(u), Some(g)) => Some(crate::idmap::user_namespace(u, g).map_err(|e| {
            e.context(format!("mount {} {:?} on {}", m.kind, m.source, dest.shown))
        })?),
        _ => {
            return Err(Error::invalid_argument(format!(
                "mount {} {:?} on {}: options {}: an ID-mapped mount needs both uidmap= and \
                 gidmap=",
                m.kind,
                m.source,
                dest.shown,
                shown_options(&m.options)
            )))
        }
    };
    // Held until the overlay is mounted: its lower dirs name them.
    let mut mapped_lowers = Vec::new();
    if let (Some(ns), "overlay") = (&userns, m.kind.as_str()) {
        for opt in p.data.iter_mut() {
            let Some(list) = opt.strip_prefix("lowerdir=") else {
                continue;
            };
            let mut names = Vec::new();
            for dir in split_lowerdirs(list) {
                let fd = sys::mount::clone_idmapped(Path::new(&dir), ns, true).map_err(|e| {
                    Error::new(
                        idmap_error_kind(&e),
                        format!(
                            "ID-mapped mount of lower dir {dir:?} for {}: {e}",
                            dest.shown
                        ),
                    )
                })?;
                names.push(escape_overlay_path(&fd_path(&fd).to_string_lossy()));
                mapped_lowers.push(fd);
            }
            *opt = format!("lowerdir={}", names.join(":"));
        }
    }
    let fail = |e: io::Error| {
        let kind = match sys::errno(&e) {
            _ if loopdev::is_unavailable(&e) => crate::ErrorKind::Unavailable,
            Some(Errno::NOENT) | Some(Errno::NOTDIR) => crate::ErrorKind::NotFound,
            Some(Errno::PERM) | Some(Errno::ACCESS) => crate::ErrorKind::FailedPrecondition,
            Some(Errno::NODEV) => crate::ErrorKind::Unavailable,
            Some(Errno::INVAL) => crate::ErrorKind::InvalidArgument,
            None if e.kind() == io::ErrorKind::InvalidInput => crate::ErrorKind::InvalidArgument,
            _ => crate::ErrorKind::Internal,
        };
        Error::new(
            kind,
            format!(
                "mount {} {:?} on {} (options {}): {e}",
                m.kind,
                m.source,
                dest.shown,
                shown_options(&m.options)
            ),
        )
    };
    // A bind mount takes MS_RDONLY (and the other per-mount flags) only on remount.
    let mut remount = MountFlags::empty();
    match m.kind.as_str() {
        "bind" | "rbind" => {
            let mut flags = p.flags | MountFlags::BIND;
            if m.kind == "rbind" {
                flags |= MountFlags::REC;
            }
            sys::mount::mount(
                OsStr::new(&m.source),
                &dest.path,
                "none",
                flags - MountFlags::RDONLY,
                None,
            )
            .map_err(fail)?;
            remount = flags
                & (MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC);
        }
        "erofs" => {
            let data = (!p.data.is_empty()).then(|| p.data.join(","));
            let source = Path::new(&m.source);
            let r = if p.loop_dev {
                loopdev::mount_via_loop(source, &dest.path, p.flags, data.as_deref())
            } else {
                match sys::mount::mount(
                    source.as_os_str(),
                    &dest.path,
                    "erofs",
                    p.flags,
                    data.as_deref(),
                ) {
                    // A kernel without file-backed EROFS wants a block device.
                    Err(e) if sys::errno(&e) == Some(Errno::NOTBLK) && is_regular(source) => {
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
            sys::mount::mount(
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
    if !remount.is_empty() {
        if let Err(e) = sys::mount::remount_bind(&new.path, remount) {
            let _ = sys::mount::unmount(&new.path, true);
            return Err(fail(e));
        }
    }
    drop(mapped_lowers);
    match userns {
        Some(ns) if m.kind != "overlay" => map_in_place(new, &ns, p.flags, &dest.shown),
        _ => Ok(new),
    }
}

/// Puts an ID-mapped copy of the mount just made (`new`) on top of it,
/// as containerd's `IDMapMount(target, target)`; on failure unmounts it.
fn map_in_place(mut new: Made, ns: &OwnedFd, flags: MountFlags, shown: &str) -> Result<Made> {
    let r = sys::mount::clone_idmapped(&new.path, ns, flags.contains(MountFlags::RDONLY))
        .and_then(|copy| sys::mount::attach(&copy, &open_path(&new.path)?));
    match r {
        Ok(()) => {
            new.stacked = 2;
            Ok(new)
        }
        Err(e) => {
            let _ = sys::mount::unmount(&new.path, true);
            Err(Error::new(
                idmap_error_kind(&e),
                format!("ID-mapped mount of {shown}: {e}"),
            ))
        }
    }
}

/// An ID-mapped mount the kernel or the filesystem cannot make is
/// unavailable; anything else internal.
fn idmap_error_kind(e: &io::Error) -> crate::ErrorKind {
    match sys::errno(e) {
        Some(Errno::INVAL | Errno::NOSYS | Errno::PERM | Errno::OPNOTSUPP) => {
            crate::ErrorKind::Unavailable
        }
        Some(Errno::NOENT | Errno::NOTDIR) => crate::ErrorKind::NotFound,
        _ => crate::ErrorKind::Internal,
    }
}

fn is_regular(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

/// Most lower directories one overlay stacks (the kernel's `OVL_MAX_STACK`).
pub const OVERLAY_MAX_LOWERS: usize = 500;

/// `options` for a message: a long list of lower directories is shown as
/// its first and last entries and their count, not whole.
fn shown_options(options: &[String]) -> String {
    let shown: Vec<String> = options
        .iter()
        .map(|o| match o.split_once('=') {
            Some(("lowerdir", list)) if list.len() > 200 => {
                let dirs = split_lowerdirs(list);
                format!(
                    "lowerdir={}:...:{} ({} directories)",
                    dirs[0],
                    dirs[dirs.len() - 1],
                    dirs.len()
                )
            }
            _ => o.clone(),
        })
        .collect();
    format!("{shown:?}")
}

/// Longest option string `mount(2)` accepts (one page, with the NUL).
const MAX_MOUNT_DATA: usize = 4095;

/// Mounts an overlay; when the options do not fit in one page (many long
/// lower directories), uses the new mount API with one `lowerdir+` per layer.
fn mount_overlay(source: &str, dest: &Dest, p: &ParsedOptions) -> io::Result<()> {
    let lowers: usize = p
        .data
        .iter()
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .map(|l| split_lowerdirs(l).len())
        .sum();
    if lowers > OVERLAY_MAX_LOWERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{lowers} lower directories; overlayfs stacks at most {OVERLAY_MAX_LOWERS} \
                 (OVL_MAX_STACK)"
            ),
        ));
    }
    let data = p.data.join(",");
    if data.len() <= MAX_MOUNT_DATA {
        return sys::mount::mount(
            OsStr::new(source),
            &dest.path,
            "overlay",
            p.flags,
            Some(&data),
        );
    }
    mount_overlay_fsconfig(dest, p)
}

/// The overlay through the new mount API: one `fsconfig` per option, one
/// `lowerdir+` per layer.
fn mount_overlay_fsconfig(dest: &Dest, p: &ParsedOptions) -> io::Result<()> {
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    for opt in &p.data {
        match opt.split_once('=') {
            Some(("lowerdir", list)) => {
                for dir in split_lowerdirs(list) {
                    options.push(("lowerdir+".into(), Some(dir)));
                }
            }
            Some((k, v)) => options.push((k.into(), Some(v.into()))),
            None => options.push((opt.clone(), None)),
        }
    }
    let options: Vec<(&str, Option<&str>)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    // Onto the destination's fd: a path would be looked up again, and
    // move_mount does not follow a /proc/self/fd link.
    sys::mount::mount_configured(
        "overlay",
        &options,
        p.flags.contains(MountFlags::RDONLY),
        &dest.fd,
    )
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
        assert_eq!(
            p.flags,
            MountFlags::RDONLY | MountFlags::BIND | MountFlags::REC
        );
        assert!(p.loop_dev);
        assert_eq!(p.data, ["lowerdir=/a:/b", "index=off"]);
        let p = parse_options(&["ro".into(), "rw".into()]);
        assert_eq!(p.flags, MountFlags::empty());
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
