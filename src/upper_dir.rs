//! Commit with the built-in writer: the upper dir of an active snapshot
//! becomes `layer.erofs` as it is, overlayfs's whiteouts (0/0 character
//! devices) and xattrs (opaque, redirect) kept; file data copied with
//! `copy_file_range` (a reflink where the filesystem can).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layer_out::writer_error;
use crate::logging::Logger;
use crate::mkfs::TempBlob;
use crate::mkfs_options::Builtin;
use crate::sys;
use crate::tar::{quote, Entry, Kind, Time};

/// Builds `<snapshot_dir>/layer.erofs` from `src_dir` with the built-in
/// writer: a temporary file renamed into place, fsynced first with
/// `sync_commit`. Returns the blob's length.
pub(crate) fn build_blob(
    config: &Config,
    b: &Builtin,
    snapshot_dir: &Path,
    src_dir: &Path,
    uuid: [u8; 16],
    log: &Logger,
) -> Result<u64> {
    let tmp = TempBlob::new(snapshot_dir, log);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp.path)
        .map_err(|e| Error::io("create", &tmp.path, e))?;
    let root = meta_of(
        b,
        src_dir,
        &fs::symlink_metadata(src_dir).map_err(|e| Error::io("stat", src_dir, e))?,
    )?;
    let builder = erofs_writer::Builder::new(file, b.writer_options(Some(uuid)), root)
        .map_err(writer_error)?;
    let mut walk = Walk {
        b,
        builder,
        top_dev: fs::metadata(src_dir)
            .map_err(|e| Error::io("stat", src_dir, e))?
            .dev(),
        links: HashMap::new(),
        until: Instant::now() + config.convert_timeout(),
        seconds: config.convert_timeout_seconds,
    };
    walk.dir(src_dir, b"")?;
    walk.builder.finish().map_err(writer_error)?;
    tmp.install(snapshot_dir, config.sync_commit)
}

struct Walk<'b> {
    b: &'b Builtin,
    builder: erofs_writer::Builder,
    top_dev: u64,
    /// Files with several links, by (device, inode): their first path.
    links: HashMap<(u64, u64), Vec<u8>>,
    until: Instant,
    seconds: u64,
}

/// The attributes of `path` (stat `md`) as the writer takes them.
fn meta_of(b: &Builtin, path: &Path, md: &fs::Metadata) -> Result<erofs_writer::Meta> {
    let mut xattrs = sys::fs::xattrs_nofollow(path, |_| true)
        .map_err(|e| Error::io("read xattrs of", path, e))?;
    for (name, value) in xattrs.iter_mut() {
        if erofs_writer::format::xattr_index(name).is_none() {
            return Err(Error::invalid_argument(format!(
                "{} has xattr {}, which EROFS cannot store",
                path.display(),
                quote(name)
            )));
        }
        // Where overlayfs copied this directory up from is meaningless in
        // the image; an empty origin only tells overlayfs to filter the
        // whiteouts inside (as mkfs.erofs writes it).
        if md.is_dir() && name == b"trusted.overlay.origin" {
            value.clear();
        }
    }
    let mut e = Entry::new(Vec::new(), Kind::Regular);
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime = Time {
        secs: md.mtime(),
        nanos: md.mtime_nsec() as u32,
    };
    e.xattrs = xattrs;
    Ok(b.overrides.meta(&e))
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
            .map_err(|e| Error::io("read directory", dir, e))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("read directory", dir, e))?;
        names.sort();
        for name in names {
            if Instant::now() > self.until {
                return Err(Error::unavailable(format!(
                    "the conversion ran longer than config field \"convert_timeout_seconds\" \
                     allows ({} s) and was stopped",
                    self.seconds
                )));
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let rel = if rel.is_empty() {
                name.clone()
            } else {
                [rel, b"/", &name].concat()
            };
            self.entry(&path, &rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &[u8]) -> Result<()> {
        use erofs_writer::Special;
        let md = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if md.dev() != self.top_dev {
            return Err(Error::failed_precondition(format!(
                "{} is a mount point inside the upper dir; unmount it before committing",
                path.display()
            )));
        }
        let ft = md.file_type();
        let meta = meta_of(self.b, path, &md)?;
        if ft.is_char_device() && md.rdev() == 0 {
            return self.builder.add_whiteout(rel, meta).map_err(writer_error);
        }
        let w = &mut self.builder;
        if ft.is_dir() {
            w.add_dir(rel, meta).map_err(writer_error)?;
            return self.dir(path, rel);
        }
        // Hard links of any kind of file stay links (as mkfs.erofs keeps them).
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                return w.add_hard_link(rel, first).map_err(writer_error);
            }
            self.links.insert(key, rel.to_vec());
        }
        let r = if ft.is_file() {
            let f = sys::fs::open_nofollow(path).map_err(|e| Error::io("open", path, e))?;
            w.add_file_from(rel, meta, md.len(), &f)
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| Error::io("read symlink", path, e))?;
            w.add_symlink(rel, meta, target.as_os_str().as_bytes())
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = sys::fs::major_minor(md.rdev());
            let special = if ft.is_char_device() {
                Special::Char { major, minor }
            } else {
                Special::Block { major, minor }
            };
            w.add_special(rel, meta, special)
        } else if ft.is_fifo() {
            w.add_special(rel, meta, Special::Fifo)
        } else {
            w.add_special(rel, meta, Special::Socket)
        };
        r.map_err(writer_error)
    }
}
