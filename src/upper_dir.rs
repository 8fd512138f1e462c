//! Commit with the built-in writer: the upper dir of an active snapshot
//! becomes `layer.erofs` as it is, overlayfs's whiteouts (0/0 character
//! devices) and xattrs (opaque, redirect) kept; file data copied with
//! `copy_file_range` (a reflink where the filesystem can).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc;
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
    let file = tmp.create(0o644)?;
    let root = meta_of(
        b,
        src_dir,
        &fs::symlink_metadata(src_dir).map_err(|e| Error::io("stat", src_dir, e))?,
    )?;
    let mut builder = erofs_writer::Builder::new(file, b.writer_options(Some(uuid)), root)
        .map_err(writer_error)?;
    let top_dev = fs::metadata(src_dir)
        .map_err(|e| Error::io("stat", src_dir, e))?
        .dev();
    let until = Instant::now() + config.convert_timeout();
    // Two threads, as apply has: this one writes the image while the other
    // walks the upper dir a few entries ahead (the stats, xattrs, opens and
    // small files' reads, which on a cold cache wait for the disk).
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        scope.spawn(move || {
            let mut walk = Walk {
                b,
                tx,
                top_dev,
                links: HashMap::new(),
            };
            if let Err(e) = walk.dir(src_dir, b"") {
                // Unless the writer is gone, and with it the need to know.
                let _ = walk.tx.send(Err(e));
            }
        });
        for item in rx {
            if Instant::now() > until {
                return Err(Error::unavailable(format!(
                    "the conversion ran longer than config field \"convert_timeout_seconds\" \
                     allows ({} s) and was stopped",
                    config.convert_timeout_seconds
                )));
            }
            write(&mut builder, item?)?;
        }
        // Dropping `rx` on an early return stops the walk at its next send.
        Ok(())
    })?;
    builder.finish().map_err(writer_error)?;
    tmp.install(snapshot_dir, config.sync_commit)
}

/// Entries the walk may be ahead of the writer: each holds at most one open
/// file or `SMALL` bytes of data.
const AHEAD: usize = 128;

/// Files up to this size are read by the walk; larger ones are copied by
/// the writer with `copy_file_range`.
const SMALL: u64 = 16 * 1024;

/// How many entries of a directory the walk stats (and whose data it asks
/// the kernel for) before it sends them.
const PREFETCH: usize = 64;

/// The stat of `path`, and for a small regular file, its data asked for.
fn prefetch(path: &Path) -> Result<fs::Metadata> {
    let md = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if md.is_file() && md.len() > 0 && md.len() <= SMALL {
        // Only a hint: a file that cannot be opened now fails when it is read.
        // It is opened again then: keeping the descriptor would hold up to
        // PREFETCH open per directory level of the walk.
        if let Ok(f) = sys::fs::open_nofollow(path) {
            let _ = sys::fs::will_need(&f, md.len());
        }
    }
    Ok(md)
}

/// One entry of the upper dir, as the walk found it.
enum Item {
    Whiteout(Vec<u8>, erofs_writer::Meta),
    Dir(Vec<u8>, erofs_writer::Meta),
    /// A further name of a file seen before (by its first path).
    HardLink(Vec<u8>, Vec<u8>),
    /// A file's data, read.
    Data(Vec<u8>, erofs_writer::Meta, Vec<u8>),
    /// A larger file of this size, open.
    File(Vec<u8>, erofs_writer::Meta, u64, fs::File),
    Symlink(Vec<u8>, erofs_writer::Meta, Vec<u8>),
    Special(Vec<u8>, erofs_writer::Meta, erofs_writer::Special),
}

fn write(w: &mut erofs_writer::Builder, item: Item) -> Result<()> {
    match item {
        Item::Whiteout(rel, meta) => w.add_whiteout(&rel, meta),
        Item::Dir(rel, meta) => w.add_dir(&rel, meta),
        Item::HardLink(rel, first) => w.add_hard_link(&rel, &first),
        Item::Data(rel, meta, data) => w.add_file(&rel, meta, data.len() as u64, &mut &data[..]),
        Item::File(rel, meta, size, f) => w.add_file_from(&rel, meta, size, &f),
        Item::Symlink(rel, meta, target) => w.add_symlink(&rel, meta, &target),
        Item::Special(rel, meta, special) => w.add_special(&rel, meta, special),
    }
    .map_err(writer_error)
}

struct Walk<'b> {
    b: &'b Builtin,
    tx: mpsc::SyncSender<Result<Item>>,
    top_dev: u64,
    /// Files with several links, by (device, inode): their first path.
    links: HashMap<(u64, u64), Vec<u8>>,
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
    /// Walks `dir` (`rel` in the image) in the order the image lists it,
    /// depth first; stops early (with `Ok`) when the writer has stopped.
    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<bool> {
        let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
            .map_err(|e| Error::io("read directory", dir, e))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("read directory", dir, e))?;
        names.sort();
        let paths: Vec<_> = names
            .iter()
            .map(|name| dir.join(std::ffi::OsStr::from_bytes(name)))
            .collect();
        // Each entry stat'ed `PREFETCH` entries before it is sent, and a
        // small file's data asked for then: on a cold cache the disk
        // reads many at once instead of one at a time.
        let mut ahead = std::collections::VecDeque::with_capacity(PREFETCH);
        let mut next = 0;
        for (name, path) in names.into_iter().zip(&paths) {
            while next < paths.len() && ahead.len() < PREFETCH {
                ahead.push_back(prefetch(&paths[next])?);
                next += 1;
            }
            let md = ahead.pop_front().expect("stat'ed ahead");
            let rel = if rel.is_empty() {
                name
            } else {
                [rel, b"/", &name].concat()
            };
            if !self.entry(path, md, rel)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the entry at `path` (and, for a directory, what it holds);
    /// `false` when the writer has stopped.
    fn entry(&mut self, path: &Path, md: fs::Metadata, rel: Vec<u8>) -> Result<bool> {
        use erofs_writer::Special;
        if md.dev() != self.top_dev {
            return Err(Error::failed_precondition(format!(
                "{} is a mount point inside the upper dir; unmount it before committing",
                path.display()
            )));
        }
        let ft = md.file_type();
        let meta = meta_of(self.b, path, &md)?;
        let item = if ft.is_char_device() && md.rdev() == 0 {
            Item::Whiteout(rel, meta)
        } else if ft.is_dir() {
            if self.tx.send(Ok(Item::Dir(rel.clone(), meta))).is_err() {
                return Ok(false);
            }
            return self.dir(path, &rel);
        } else if let Some(first) = self.seen(&md, &rel) {
            // Hard links of any kind of file stay links (as mkfs.erofs
            // keeps them).
            Item::HardLink(rel, first)
        } else if ft.is_file() {
            let f = sys::fs::open_nofollow(path).map_err(|e| Error::io("open", path, e))?;
            if md.len() <= SMALL {
                let mut data = Vec::with_capacity(md.len() as usize);
                (&f).take(md.len())
                    .read_to_end(&mut data)
                    .map_err(|e| Error::io("read", path, e))?;
                // Shorter than its stat said: the writer says so.
                Item::Data(rel, meta, data)
            } else {
                Item::File(rel, meta, md.len(), f)
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| Error::io("read symlink", path, e))?;
            Item::Symlink(rel, meta, target.into_os_string().into_vec())
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = sys::fs::major_minor(md.rdev());
            let special = if ft.is_char_device() {
                Special::Char { major, minor }
            } else {
                Special::Block { major, minor }
            };
            Item::Special(rel, meta, special)
        } else if ft.is_fifo() {
            Item::Special(rel, meta, Special::Fifo)
        } else {
            Item::Special(rel, meta, Special::Socket)
        };
        Ok(self.tx.send(Ok(item)).is_ok())
    }

    /// The first path of the file `md` when it has several links and was
    /// seen before; else `None`, remembering `rel` for its other links.
    fn seen(&mut self, md: &fs::Metadata, rel: &[u8]) -> Option<Vec<u8>> {
        if md.nlink() < 2 {
            return None;
        }
        let key = (md.dev(), md.ino());
        if let Some(first) = self.links.get(&key) {
            return Some(first.clone());
        }
        self.links.insert(key, rel.to_vec());
        None
    }
}
