//! Where a checked layer goes: the canonical tar stream `mkfs.erofs --tar
//! --aufs` converts ([`TarOut`]), or the built-in EROFS writer
//! ([`ErofsOut`]). The front end (`layer_tar`) decides what the layer holds;
//! an output only writes it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::mkfs_options::Overrides;
use crate::tar::{self, quote, Entry, Kind};

/// The content of one regular file, as an output reads it.
pub(crate) trait FileData {
    /// The data fragments of a sparse file; `None` for a dense one.
    fn fragments(&self) -> Option<&[(u64, u64)]>;
    /// The whole content, holes as zeros: the entry's size in all.
    fn read_dense(&mut self, buf: &mut [u8]) -> Result<usize>;
    /// Only the fragments' bytes, in order (a sparse file).
    fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// What a layer is written as.
pub(crate) trait LayerOut {
    /// A directory, symlink, device, fifo or hard link (`e.path`
    /// normalized, `.` for the root; a hard link's `e.link` is its target's
    /// path in the layer).
    fn entry(&mut self, e: &Entry) -> Result<()>;
    /// A regular file of `e.size` bytes read from `data`.
    fn file(&mut self, e: &Entry, data: &mut dyn FileData) -> Result<()>;
    /// A whiteout hiding the lower layers' `rel`.
    fn whiteout(&mut self, rel: &[u8]) -> Result<()>;
    /// Directory `dir` of this layer hides the lower layers' (opaque).
    fn opaque(&mut self, dir: &[u8]) -> Result<()>;
}

const OPAQUE: &[u8] = b".wh..wh..opq";

/// The canonical tar stream for `mkfs.erofs --tar --aufs`: whiteouts and
/// opaque markers as AUFS entries, sparse files dense.
///
/// What mkfs.erofs 1.8.6 would write wrongly is refused as not implemented
/// (containerd then tries its next differ; the built-in writer, the
/// default, applies such layers): device minors of 2^19 and more (it
/// computes the device number in a signed 32-bit int), a directory given
/// again with another value for an xattr it had (it keeps both copies, the
/// first read), and a directory where this layer made a hard link (it
/// writes a corrupt directory).
pub(crate) struct TarOut<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Hard links written, by path.
    links: HashSet<Vec<u8>>,
    /// The xattrs of the directories written with some, by path.
    dir_xattrs: HashMap<Vec<u8>, tar::Xattrs>,
}

/// Smallest device minor mkfs.erofs 1.8.6 writes wrongly.
const MKFS_MINOR_LIMIT: u32 = 1 << 19;

/// What mkfs.erofs cannot write of entry `e`.
fn mkfs_cannot(e: &Entry, what: impl std::fmt::Display) -> Error {
    Error::not_implemented(format!(
        "layer entry {}: {what}, which mkfs.erofs 1.8.6 (used for these mkfs_options) writes \
         wrongly; the built-in writer, used without such mkfs_options, applies this layer",
        e.display()
    ))
}

/// A failed write to mkfs.erofs (its own error, if it exited, explains it
/// better), or a full disk under the tar kept for tar-index mode.
fn write_error(e: io::Error) -> Error {
    match crate::sys::errno(&e) {
        Some(crate::sys::Errno::NOSPC) | Some(crate::sys::Errno::DQUOT) => {
            Error::unavailable(format!("write the converted layer: {e}"))
        }
        _ => Error::internal(format!("write to mkfs.erofs: {e}")),
    }
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> TarOut<W> {
        TarOut {
            out,
            buf: vec![0u8; 256 * 1024],
            links: HashSet::new(),
            dir_xattrs: HashMap::new(),
        }
    }

    /// Ends the archive; returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&[0u8; 2 * tar::BLOCK])
            .map_err(write_error)?;
        Ok(self.out)
    }

    fn header(&mut self, e: &Entry) -> Result<()> {
        tar::write_header(&mut self.out, e).map_err(write_error)
    }

    fn plain(&mut self, path: Vec<u8>) -> Result<()> {
        self.header(&Entry::new(path, Kind::Regular))
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

impl<W: Write> LayerOut for TarOut<W> {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        match e.kind {
            Kind::Char | Kind::Block if e.dev_minor >= MKFS_MINOR_LIMIT => Err(mkfs_cannot(
                e,
                format_args!("device minor {} (2^19 or more)", e.dev_minor),
            )),
            Kind::HardLink => {
                self.links.insert(e.path.clone());
                self.header(e)
            }
            Kind::Directory if self.links.contains(&e.path) => Err(mkfs_cannot(
                e,
                "a directory where this layer made a hard link",
            )),
            Kind::Directory => {
                let Some(had) = self.dir_xattrs.get_mut(&e.path) else {
                    if !e.xattrs.is_empty() {
                        self.dir_xattrs.insert(e.path.clone(), e.xattrs.clone());
                    }
                    return self.header(e);
                };
                // Given again: only the xattrs it did not have yet.
                let mut again = e.clone();
                again.xattrs.clear();
                for (name, value) in &e.xattrs {
                    match had.iter().find(|(n, _)| n == name) {
                        Some((_, v)) if v == value => {}
                        Some(_) => {
                            return Err(mkfs_cannot(
                                e,
                                format_args!(
                                    "a directory given again with another value for xattr {}",
                                    quote(name)
                                ),
                            ))
                        }
                        None => again.xattrs.push((name.clone(), value.clone())),
                    }
                }
                had.extend(again.xattrs.iter().cloned());
                self.header(&again)
            }
            _ => self.header(e),
        }
    }

    fn file(&mut self, e: &Entry, data: &mut dyn FileData) -> Result<()> {
        let mut dense = e.clone();
        dense.sparse = None;
        self.header(&dense)?;
        let mut left = e.size;
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| {
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = data.read_dense(&mut buf[..want])?;
                if n == 0 {
                    return Err(Error::invalid_argument(format!(
                        "layer entry {}: the data ends early",
                        e.display()
                    )));
                }
                self.out.write_all(&buf[..n]).map_err(write_error)?;
                left -= n as u64;
            }
            let pad = tar::padding(e.size) as usize;
            buf[..pad].fill(0);
            self.out.write_all(&buf[..pad]).map_err(write_error)
        })();
        self.buf = buf;
        result
    }

    fn whiteout(&mut self, rel: &[u8]) -> Result<()> {
        let (dir, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        self.plain(join(dir, &[b".wh.", name].concat()))
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.plain(join(dir, OPAQUE))
    }
}

/// The layer written by the built-in EROFS writer.
pub(crate) struct ErofsOut {
    builder: erofs_writer::Builder,
    overrides: Overrides,
}

/// A `FileData` read as a plain reader; our own errors travel inside the
/// I/O error (`carry`) and come out again in [`writer_error`].
struct Reading<'a> {
    data: &'a mut dyn FileData,
    stored: bool,
}

impl Read for Reading<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = if self.stored {
            self.data.read_stored(buf)
        } else {
            self.data.read_dense(buf)
        };
        r.map_err(crate::error::carry)
    }
}

/// The writer's error as ours: what the layer got wrong is invalid, a full
/// disk unavailable, our own errors (limits, corrupt data) as they were.
pub(crate) fn writer_error(e: erofs_writer::Error) -> Error {
    match e {
        erofs_writer::Error::Invalid(m) => Error::invalid_argument(format!("layer entry {m}")),
        erofs_writer::Error::Read(e) => match crate::error::uncarry(e) {
            Ok(ours) => ours,
            Err(e) => Error::internal(format!("read layer data: {e}")),
        },
        erofs_writer::Error::Write(e) => match crate::sys::errno(&e) {
            Some(crate::sys::Errno::NOSPC) | Some(crate::sys::Errno::DQUOT) => {
                Error::unavailable(format!("write the layer image: {e}"))
            }
            _ => Error::internal(format!("write the layer image: {e}")),
        },
    }
}

impl ErofsOut {
    pub fn new(builder: erofs_writer::Builder, overrides: Overrides) -> ErofsOut {
        ErofsOut { builder, overrides }
    }

    /// Writes the metadata and superblock; returns the image size.
    pub fn finish(self) -> Result<u64> {
        self.builder.finish().map_err(writer_error)
    }
}

impl LayerOut for ErofsOut {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        use erofs_writer::Special;
        let meta = self.overrides.meta(e);
        let path = if e.path == b"." {
            &b""[..]
        } else {
            &e.path[..]
        };
        let b = &mut self.builder;
        match e.kind {
            Kind::Directory => b.add_dir(path, meta),
            Kind::Symlink => b.add_symlink(path, meta, &e.link),
            Kind::HardLink => b.add_hard_link(path, &e.link),
            Kind::Char => b.add_special(
                path,
                meta,
                Special::Char {
                    major: e.dev_major,
                    minor: e.dev_minor,
                },
            ),
            Kind::Block => b.add_special(
                path,
                meta,
                Special::Block {
                    major: e.dev_major,
                    minor: e.dev_minor,
                },
            ),
            Kind::Fifo => b.add_special(path, meta, Special::Fifo),
            Kind::Regular => {
                return Err(Error::internal(format!(
                    "regular file {} without its data",
                    quote(path)
                )))
            }
        }
        .map_err(writer_error)
    }

    fn file(&mut self, e: &Entry, data: &mut dyn FileData) -> Result<()> {
        let meta = self.overrides.meta(e);
        let fragments = data.fragments().map(<[(u64, u64)]>::to_vec);
        let r = match fragments {
            Some(frags) => self.builder.add_sparse_file(
                &e.path,
                meta,
                e.size,
                &frags,
                &mut Reading { data, stored: true },
            ),
            None => self.builder.add_file(
                &e.path,
                meta,
                e.size,
                &mut Reading {
                    data,
                    stored: false,
                },
            ),
        };
        r.map_err(writer_error)
    }

    fn whiteout(&mut self, rel: &[u8]) -> Result<()> {
        // As mkfs.erofs --aufs makes them: no permission bits, time 0.
        self.builder
            .add_whiteout(rel, erofs_writer::Meta::default())
            .map_err(writer_error)
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.builder
            .set_xattr(dir, b"trusted.overlay.opaque", b"y")
            .map_err(writer_error)
    }
}
