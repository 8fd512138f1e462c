//! The parent layers of an apply, looked up as overlayfs merges them and
//! strictly inside each layer's root: one component at a time, never
//! following a symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
//!
//! A path exists in the merged view if the top-most layer that has its first
//! component has a directory there, and so on down: a non-directory or a
//! whiteout hides everything below it, an opaque directory hides the layers
//! under it. So `d/sub` over a lower layer where `d` is a symlink to a host
//! directory does not exist (it is never looked up on the host), which is
//! also what overlayfs shows once this layer makes `d` a directory.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};

use crate::error::{Error, Result};
use crate::tar::{quote, Time, Xattrs};

/// Largest xattr value Linux stores (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: usize = 64 * 1024;

/// The lower layers (mounted layer roots), top-most first.
pub(crate) struct Lowers {
    roots: Vec<(PathBuf, OwnedFd)>,
    /// The time given to directories no layer describes.
    pub now: Time,
}

/// An object found in a lower layer.
pub(crate) struct Object {
    pub stat: Stat,
    /// The directory that holds it, and its name; `None` for a layer root.
    parent: Option<(OwnedFd, Vec<u8>)>,
    /// The object itself, opened (`O_PATH` but for directories).
    fd: OwnedFd,
    /// The layer's root, for messages.
    layer: PathBuf,
}

fn open_beneath(dir: &OwnedFd, name: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        OsStr::from_bytes(name),
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(io::Error::from)
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

impl Lowers {
    /// Opens the layer roots `dirs` (top-most first).
    pub fn open(dirs: &[PathBuf], now: Time) -> Result<Lowers> {
        let mut roots = Vec::with_capacity(dirs.len());
        for d in dirs {
            let fd = rustix::fs::open(
                d,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open lower layer", d, e.into()))?;
            roots.push((d.clone(), fd));
        }
        Ok(Lowers { roots, now })
    }

    /// No lower layers (a layer without parent).
    pub fn none(now: Time) -> Lowers {
        Lowers {
            roots: Vec::new(),
            now,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// What the merged lower layers have at `rel` (normalized: no `.`, `..`
    /// or empty components; empty for the root), without following symlinks.
    pub fn lookup(&self, rel: &[u8]) -> Result<Option<Object>> {
        let fail = |layer: &Path, e: io::Error| {
            Error::io(&format!("look up {} in lower layer", quote(rel)), layer, e)
        };
        // Directories of the layers that still take part, top-most first.
        let mut dirs: Vec<(&Path, OwnedFd)> = Vec::with_capacity(self.roots.len());
        for (p, fd) in &self.roots {
            dirs.push((p, fd.try_clone().map_err(|e| fail(p, e))?));
        }
        if rel.is_empty() {
            let Some((layer, fd)) = dirs.into_iter().next() else {
                return Ok(None);
            };
            let stat = rustix::fs::fstat(&fd).map_err(|e| fail(layer, e.into()))?;
            return Ok(Some(Object {
                stat,
                parent: None,
                fd,
                layer: layer.to_path_buf(),
            }));
        }
        let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let mut next: Vec<(&Path, OwnedFd)> = Vec::new();
            for (layer, dir) in dirs {
                let fd = match open_beneath(&dir, comp, OFlags::PATH) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(fail(layer, e)),
                };
                let stat = rustix::fs::fstat(&fd).map_err(|e| fail(layer, e.into()))?;
                if is_whiteout(&stat) {
                    break;
                }
                if !is_dir(&stat) {
                    if next.is_empty() && last {
                        return Ok(Some(Object {
                            stat,
                            parent: Some((dir, comp.to_vec())),
                            fd,
                            layer: layer.to_path_buf(),
                        }));
                    }
                    // A non-directory ends the path, or hides what lies below.
                    break;
                }
                let fd = open_beneath(&dir, comp, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| fail(layer, e))?;
                if last {
                    return Ok(Some(Object {
                        stat,
                        parent: Some((dir, comp.to_vec())),
                        fd,
                        layer: layer.to_path_buf(),
                    }));
                }
                let opaque = read_xattr(&fd, b"trusted.overlay.opaque")
                    .map_err(|e| fail(layer, e))?
                    .is_some_and(|v| v == b"y");
                next.push((layer, fd));
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                return Ok(None);
            }
            dirs = next;
        }
        Ok(None)
    }

    /// Names in the root of every lower layer (what a root-level opaque
    /// marker must hide).
    pub fn root_names(&self) -> Result<BTreeSet<Vec<u8>>> {
        let mut names = BTreeSet::new();
        for (path, fd) in &self.roots {
            let dir = rustix::fs::openat(
                fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open lower layer", path, e.into()))?;
            let d = rustix::fs::Dir::new(dir)
                .map_err(|e| Error::io("read lower layer", path, e.into()))?;
            for ent in d {
                let ent = ent.map_err(|e| Error::io("read lower layer", path, e.into()))?;
                let name = ent.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.insert(name.to_vec());
                }
            }
        }
        Ok(names)
    }
}

/// `fgetxattr` of one attribute on a non-`O_PATH` descriptor.
fn read_xattr(fd: &OwnedFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::fgetxattr(fd, OsStr::from_bytes(name), &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Object {
    pub fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    pub fn mtime(&self) -> Time {
        Time {
            secs: self.stat.st_mtime,
            nanos: self.stat.st_mtime_nsec as u32,
        }
    }

    /// A path naming the object itself without following it: through the
    /// descriptor of its directory.
    fn proc_path(&self) -> PathBuf {
        match &self.parent {
            Some((dir, name)) => {
                let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
                p.push(OsStr::from_bytes(name));
                p
            }
            None => PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd())),
        }
    }

    fn fail(&self, what: &str, e: io::Error) -> Error {
        Error::io(what, &self.layer, e)
    }

    /// Its extended attributes whose names `keep` accepts.
    pub fn xattrs(&self, keep: impl Fn(&[u8]) -> bool) -> Result<Xattrs> {
        let path = self.proc_path();
        let mut names = vec![0u8; 4096];
        let n = loop {
            match rustix::fs::llistxattr(&path, &mut names[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if names.len() < XATTR_SIZE_MAX => {
                    names.resize(XATTR_SIZE_MAX, 0)
                }
                Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(self.fail("list xattrs in lower layer", e.into())),
            }
        };
        names.truncate(n);
        let mut out = Vec::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if !keep(name) {
                continue;
            }
            let mut value = vec![0u8; XATTR_SIZE_MAX];
            match rustix::fs::lgetxattr(&path, OsStr::from_bytes(name), &mut value[..]) {
                Ok(len) => {
                    value.truncate(len);
                    out.push((name.to_vec(), value));
                }
                // Removed meanwhile: layers are read-only, but be lenient.
                Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(self.fail("read xattr in lower layer", e.into())),
            }
        }
        Ok(out)
    }

    /// The content of a regular file.
    pub fn open_file(&self) -> Result<File> {
        let fd = match &self.parent {
            Some((dir, name)) => open_beneath(dir, name, OFlags::RDONLY),
            None => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        }
        .map_err(|e| self.fail("open file in lower layer", e))?;
        // The same file we looked at (layers are read-only; this is a check).
        let st = rustix::fs::fstat(&fd).map_err(|e| self.fail("stat", e.into()))?;
        if st.st_ino != self.stat.st_ino || st.st_dev != self.stat.st_dev {
            return Err(Error::internal(format!(
                "a file in lower layer {} changed while it was read",
                self.layer.display()
            )));
        }
        Ok(File::from(fd))
    }

    /// The target of a symlink.
    pub fn read_link(&self) -> Result<Vec<u8>> {
        let target = rustix::fs::readlinkat(self.fd.as_fd(), "", Vec::new())
            .map_err(|e| self.fail("read symlink in lower layer", e.into()))?;
        Ok(target.into_bytes())
    }
}
