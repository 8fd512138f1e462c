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
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::fs::{open_beneath, FileType, Open, Stat};
use crate::sys::{self, Errno};
use crate::tar::{quote, Time, Xattrs};

/// The lower layers (mounted layer roots), top-most first.
pub(crate) struct Lowers {
    roots: Vec<(PathBuf, OwnedFd)>,
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

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

impl Lowers {
    /// Opens the layer roots `dirs` (top-most first).
    pub fn open(dirs: &[PathBuf]) -> Result<Lowers> {
        let mut roots = Vec::with_capacity(dirs.len());
        for d in dirs {
            let fd = sys::fs::open_dir(d).map_err(|e| Error::io("open lower layer", d, e))?;
            roots.push((d.clone(), fd));
        }
        Ok(Lowers { roots })
    }

    /// No lower layers (a layer without parent).
    pub fn none() -> Lowers {
        Lowers { roots: Vec::new() }
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
            let stat = sys::fs::fstat(&fd).map_err(|e| fail(layer, e))?;
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
                let fd = match open_beneath(&dir, comp, Open::Path) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(fail(layer, e)),
                };
                let stat = sys::fs::fstat(&fd).map_err(|e| fail(layer, e))?;
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
                let fd = open_beneath(&dir, comp, Open::Dir).map_err(|e| fail(layer, e))?;
                if last {
                    return Ok(Some(Object {
                        stat,
                        parent: Some((dir, comp.to_vec())),
                        fd,
                        layer: layer.to_path_buf(),
                    }));
                }
                let opaque = sys::fs::get_xattr(&fd, b"trusted.overlay.opaque")
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
            names.extend(
                sys::fs::dir_names(fd).map_err(|e| Error::io("read lower layer", path, e))?,
            );
        }
        Ok(names)
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

    fn fail(&self, what: &str, e: io::Error) -> Error {
        Error::io(what, &self.layer, e)
    }

    /// Its extended attributes whose names `keep` accepts (read through its
    /// directory, never following it).
    pub fn xattrs(&self, keep: impl Fn(&[u8]) -> bool) -> Result<Xattrs> {
        let path = match &self.parent {
            Some((dir, name)) => sys::fs::entry_path(dir, Some(name)),
            None => sys::fs::entry_path(&self.fd, None),
        };
        sys::fs::xattrs_nofollow(&path, keep)
            .map_err(|e| self.fail("read xattrs in lower layer", e))
    }

    /// The content of a regular file.
    pub fn open_file(&self) -> Result<File> {
        let fd = match &self.parent {
            Some((dir, name)) => open_beneath(dir, name, Open::File),
            None => Err(sys::error(Errno::ISDIR)),
        }
        .map_err(|e| self.fail("open file in lower layer", e))?;
        // The same file we looked at (layers are read-only; this is a check).
        let st = sys::fs::fstat(&fd).map_err(|e| self.fail("stat", e))?;
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
        sys::fs::read_link(&self.fd).map_err(|e| self.fail("read symlink in lower layer", e))
    }
}
