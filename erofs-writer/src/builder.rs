//! The image builder: entries are added by path, file data is written to
//! its final place in the image as it is added, and [`Builder::finish`]
//! lays out and writes the metadata, then the superblock.
//!
//! Memory is a few dozen bytes per entry: a 48-byte [`Node`], its name in
//! the [`Tree`], and (while finishing) a few integers; extended attributes,
//! symlink targets and chunk maps only for the entries that have them. The
//! metadata is written as it is laid out, never held whole.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::format::{self, Inode as DiskInode, SuperBlock};
use crate::tree::{Id, Listing, Tree, ROOT};
use crate::{Error, Meta, Options, Special};

/// An xattr as EROFS stores it: prefix index, the rest of the name, value.
type Xattr = (u8, Vec<u8>, Vec<u8>);

/// `Node::flags`: a directory that holds whiteouts (see `finish`).
const WHITEOUTS: u8 = 1;
/// `Node::flags`: a regular file stored in chunks (`data` indexes `chunk_maps`).
const CHUNKED: u8 = 2;

/// What the image holds of one entry.
struct Node {
    mtime: i64,
    /// Regular files: the size; symlinks: the target's length.
    size: u64,
    /// Regular files: the first block of their data (plain, `size` > 0) or
    /// their index in `chunk_maps` (chunked); devices: the encoded device
    /// number; symlinks: where the target starts in `targets`.
    data: u64,
    uid: u32,
    gid: u32,
    mtime_nsec: u32,
    /// File type and permission bits.
    mode: u32,
    /// 1 + the index of its xattrs in `xattrs`; 0: none.
    xattrs: u32,
    flags: u8,
}

/// What a new node is, apart from its attributes (see [`Node`]).
#[derive(Clone, Copy)]
struct Body {
    kind: u32,
    size: u64,
    data: u64,
    flags: u8,
}

impl Body {
    fn of(kind: u32) -> Body {
        Body {
            kind,
            size: 0,
            data: 0,
            flags: 0,
        }
    }

    fn file(size: u64, data: u64, flags: u8) -> Body {
        Body {
            kind: format::S_IFREG,
            size,
            data,
            flags,
        }
    }
}

impl Node {
    fn is_dir(&self) -> bool {
        self.mode & format::S_IFMT == format::S_IFDIR
    }
}

/// Buffered writes into the image file at increasing offsets: a gap of
/// less than a buffer is written as zeros (block padding, inode slots), a
/// larger one or a step back flushes and moves on.
struct Output {
    file: File,
    buf: Box<[u8]>,
    /// Bytes of `buf` in use.
    len: usize,
    /// Image offset of `buf[0]`.
    buf_at: u64,
}

const OUT_BUF: usize = 1 << 20;

impl Output {
    fn new(file: File, at: u64) -> Output {
        Output {
            file,
            buf: vec![0u8; OUT_BUF].into_boxed_slice(),
            len: 0,
            buf_at: at,
        }
    }

    fn end(&self) -> u64 {
        self.buf_at + self.len as u64
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.file.write_all_at(&self.buf[..self.len], self.buf_at)?;
            self.buf_at += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }

    /// Makes `at` the offset the next byte of the buffer goes to.
    fn seek(&mut self, at: u64) -> io::Result<()> {
        let end = self.end();
        if at == end {
            return Ok(());
        }
        if at > end && at - end <= (OUT_BUF - self.len) as u64 {
            let gap = (at - end) as usize;
            self.buf[self.len..self.len + gap].fill(0);
            self.len += gap;
            return Ok(());
        }
        self.flush()?;
        self.buf_at = at;
        Ok(())
    }

    /// Room in the buffer for at least one byte.
    fn room(&mut self) -> io::Result<&mut [u8]> {
        if self.len == OUT_BUF {
            self.flush()?;
        }
        Ok(&mut self.buf[self.len..])
    }

    /// Writes `data` at image offset `at`.
    fn write_at(&mut self, mut data: &[u8], at: u64) -> io::Result<()> {
        self.seek(at)?;
        while !data.is_empty() {
            let room = self.room()?;
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Builds one EROFS image; see the crate documentation.
pub struct Builder {
    out: Output,
    opts: Options,
    block: u64,
    e: Entries,
    /// Image offset where the next file's data goes (block aligned).
    data_end: u64,
}

/// What the image holds, apart from file data.
struct Entries {
    block: u64,
    /// Entry `id` is `nodes[id]`; the root is [`ROOT`]. Entries a later one
    /// replaced stay here, unreachable.
    nodes: Vec<Node>,
    tree: Tree,
    xattrs: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    targets: Vec<u8>,
    /// Chunk size bits and block addresses of the chunked files.
    chunk_maps: Vec<(u8, Vec<u32>)>,
}

/// Most chunks a sparse file's map may have (4 bytes each): past that the
/// chunks grow, and holes smaller than a chunk are written as zeros.
const MAX_CHUNKS: u64 = 1 << 18;

fn path_str(path: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(path))
}

/// True for a path naming the root: empty, `/` or `.` components only.
fn is_root(path: &[u8]) -> bool {
    path.split(|b| *b == b'/')
        .all(|c| c.is_empty() || c == b".")
}

fn check_name(path: &[u8], name: &[u8]) -> Result<(), Error> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::invalid(format!(
            "{}: not a valid name",
            path_str(path)
        )));
    }
    if name.len() > 255 {
        return Err(Error::invalid(format!(
            "{}: a name of {} bytes; EROFS holds at most 255",
            path_str(path),
            name.len()
        )));
    }
    Ok(())
}

fn check_meta(path: &[u8], meta: &Meta) -> Result<(), Error> {
    for (name, value) in &meta.xattrs {
        let Some((_, suffix)) = format::xattr_index(name) else {
            return Err(Error::invalid(format!(
                "{}: xattr {} is not in a namespace EROFS stores (user., trusted., security., \
                 a POSIX ACL)",
                path_str(path),
                path_str(name)
            )));
        };
        if suffix.len() > 255 || value.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(format!(
                "{}: xattr {} too large ({} byte name, {} byte value)",
                path_str(path),
                path_str(name),
                name.len(),
                value.len()
            )));
        }
    }
    Ok(())
}

fn too_large(_: crate::tree::TooLarge) -> Error {
    Error::invalid("the image holds more entries or names than 2^32".to_string())
}

/// The names of directory `dir` as EROFS lists them: sorted bytewise, with
/// `.` and `..` (naming `parent`) in their places.
fn dir_entries<'l>(
    listing: &'l Listing<'_>,
    dir: Id,
    parent: Id,
) -> impl Iterator<Item = (&'l [u8], Id)> + 'l {
    let mut dots = [(&b"."[..], dir), (&b".."[..], parent)]
        .into_iter()
        .peekable();
    let mut children = listing.children(dir).peekable();
    std::iter::from_fn(move || match (dots.peek(), children.peek()) {
        (Some(d), Some(c)) if d.0 < c.0 => dots.next(),
        (Some(_), None) => dots.next(),
        _ => children.next(),
    })
}

/// Packs directory entries into blocks of `bs` bytes: calls `block` with
/// the entries of each block, in order; returns the directory's size.
fn pack_dir<'a>(
    entries: impl Iterator<Item = (&'a [u8], Id)>,
    bs: usize,
    mut block: impl FnMut(&[(&'a [u8], Id)], bool),
) -> u64 {
    let mut cur: Vec<(&[u8], Id)> = Vec::new();
    let (mut used, mut full) = (0usize, 0u64);
    for (name, id) in entries {
        let need = format::DIRENT_SIZE + name.len();
        if used + need > bs {
            block(&cur, false);
            cur.clear();
            full += 1;
            used = 0;
        }
        used += need;
        cur.push((name, id));
    }
    block(&cur, true);
    full * bs as u64 + used as u64
}

impl Builder {
    /// Starts an image in `file` (which should be empty), with a root
    /// directory of the given attributes.
    pub fn new(file: File, opts: Options, root: Meta) -> Result<Builder, Error> {
        if !(9..=16).contains(&opts.block_size_bits) {
            return Err(Error::invalid(format!(
                "block size 2^{} is not one EROFS supports",
                opts.block_size_bits
            )));
        }
        check_meta(b"/", &root)?;
        let block = 1u64 << opts.block_size_bits;
        let mut b = Builder {
            // Block 0 holds the superblock.
            out: Output::new(file, block),
            opts,
            block,
            e: Entries {
                block,
                nodes: Vec::new(),
                tree: Tree::new(),
                xattrs: Vec::new(),
                targets: Vec::new(),
                chunk_maps: Vec::new(),
            },
            data_end: block,
        };
        b.e.push(root, Body::of(format::S_IFDIR))?;
        Ok(b)
    }

    /// The directory that holds `path`, and its last component.
    fn parent_of<'p>(&self, path: &'p [u8]) -> Result<(Id, &'p [u8]), Error> {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        check_name(path, name)?;
        let id = self.e.lookup(dir).ok_or_else(|| {
            Error::invalid(format!("{}: its directory does not exist", path_str(path)))
        })?;
        if self.e.node(id).is_dir() {
            Ok((id, name))
        } else {
            Err(Error::invalid(format!(
                "{}: {} is not a directory",
                path_str(path),
                path_str(dir)
            )))
        }
    }

    /// Puts a new node at `name` in `dir`, replacing what was there (a
    /// directory over a directory keeps the old one's entries).
    fn insert(&mut self, dir: Id, name: &[u8], meta: Meta, body: Body) -> Result<Id, Error> {
        if let Some(old) = self.e.tree.get(dir, name) {
            if body.kind == format::S_IFDIR && self.e.node(old).is_dir() {
                self.e.redo_dir(old, meta)?;
                return Ok(old);
            }
        }
        let id = self.e.push(meta, body)?;
        self.e.tree.set(dir, name, id).map_err(too_large)?;
        Ok(id)
    }

    /// A directory at `path` (its parent must exist). An existing directory
    /// there takes `meta` (its xattrs added to those it has) and keeps its
    /// entries.
    pub fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        check_meta(path, &meta)?;
        if is_root(path) {
            return self.e.redo_dir(ROOT, meta);
        }
        let (dir, name) = self.parent_of(path)?;
        self.insert(dir, name, meta, Body::of(format::S_IFDIR))?;
        Ok(())
    }

    /// A symlink at `path` to `target`.
    pub fn add_symlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<(), Error> {
        check_meta(path, &meta)?;
        if target.is_empty() || target.len() as u64 >= self.block || target.contains(&0) {
            return Err(Error::invalid(format!(
                "{}: a symlink target of {} bytes",
                path_str(path),
                target.len()
            )));
        }
        let (dir, name) = self.parent_of(path)?;
        let at = self.e.targets.len() as u64;
        let body = Body {
            size: target.len() as u64,
            data: at,
            ..Body::of(format::S_IFLNK)
        };
        self.insert(dir, name, meta, body)?;
        self.e.targets.extend_from_slice(target);
        Ok(())
    }

    /// A device, fifo or socket at `path`.
    pub fn add_special(&mut self, path: &[u8], meta: Meta, special: Special) -> Result<(), Error> {
        check_meta(path, &meta)?;
        let (kind, rdev) = match special {
            Special::Char { major, minor } => (format::S_IFCHR, format::encode_dev(major, minor)),
            Special::Block { major, minor } => (format::S_IFBLK, format::encode_dev(major, minor)),
            Special::Fifo => (format::S_IFIFO, 0),
            Special::Socket => (format::S_IFSOCK, 0),
        };
        let (dir, name) = self.parent_of(path)?;
        let body = Body {
            data: u64::from(rdev),
            ..Body::of(kind)
        };
        self.insert(dir, name, meta, body)?;
        Ok(())
    }

    /// An overlayfs whiteout (a 0/0 character device) at `path` with
    /// attributes `meta`; its directory is marked so overlayfs never shows
    /// it as a device.
    pub fn add_whiteout(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        let (dir, _) = self.parent_of(path)?;
        self.add_special(path, meta, Special::Char { major: 0, minor: 0 })?;
        self.e.nodes[dir as usize].flags |= WHITEOUTS;
        Ok(())
    }

    /// A hard link at `path` to the non-directory already at `target`.
    pub fn add_hard_link(&mut self, path: &[u8], target: &[u8]) -> Result<(), Error> {
        let id = self.e.lookup(target).ok_or_else(|| {
            Error::invalid(format!(
                "{}: hard link to {}, which does not exist",
                path_str(path),
                path_str(target)
            ))
        })?;
        if self.e.node(id).is_dir() {
            return Err(Error::invalid(format!(
                "{}: hard link to the directory {}",
                path_str(path),
                path_str(target)
            )));
        }
        let (dir, name) = self.parent_of(path)?;
        self.e.tree.set(dir, name, id).map_err(too_large)?;
        Ok(())
    }

    /// Sets extended attribute `name` of the entry at `path` (replacing a
    /// value it had).
    pub fn set_xattr(&mut self, path: &[u8], name: &[u8], value: &[u8]) -> Result<(), Error> {
        let id = self
            .e
            .lookup(path)
            .ok_or_else(|| Error::invalid(format!("{}: does not exist", path_str(path))))?;
        let mut xattrs = match self.e.node(id).xattrs {
            0 => Vec::new(),
            i => self.e.xattrs[i as usize - 1].clone(),
        };
        xattrs.retain(|(n, _)| n != name);
        xattrs.push((name.to_vec(), value.to_vec()));
        let meta = Meta {
            xattrs,
            ..Meta::default()
        };
        check_meta(path, &meta)?;
        match self.e.node(id).xattrs {
            0 => self.e.nodes[id as usize].xattrs = self.e.store_xattrs(meta.xattrs)?,
            i => self.e.xattrs[i as usize - 1] = meta.xattrs,
        }
        Ok(())
    }

    /// Removes `path` (and what lies below it) if it exists.
    pub fn remove(&mut self, path: &[u8]) -> Result<(), Error> {
        let (dir, name) = self.parent_of(path)?;
        self.e.tree.remove(dir, name);
        Ok(())
    }

    fn align_data(&mut self) -> u64 {
        self.data_end = self.data_end.next_multiple_of(self.block);
        self.data_end
    }

    fn block_of(&self, offset: u64) -> Result<u32, Error> {
        u32::try_from(offset / self.block)
            .map_err(|_| Error::invalid("the image grows past 2^32 blocks".to_string()))
    }

    /// Copies `size` bytes of `data` into the image at `at`, read straight
    /// into the output buffer.
    fn stream(
        &mut self,
        path: &[u8],
        data: &mut dyn Read,
        size: u64,
        at: u64,
    ) -> Result<(), Error> {
        self.out.seek(at).map_err(Error::write)?;
        let mut left = size;
        while left > 0 {
            let room = self.out.room().map_err(Error::write)?;
            let want = left.min(room.len() as u64) as usize;
            let n = match data.read(&mut room[..want]) {
                Ok(0) => {
                    return Err(Error::invalid(format!(
                        "{}: the data ends {left} bytes early",
                        path_str(path)
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::read(e)),
            };
            self.out.len += n;
            left -= n as u64;
        }
        Ok(())
    }

    /// Where the next file's (or chunk's) `size` (> 0) bytes go: the byte offset and the
    /// first block, both checked to fit the format's block addresses.
    fn place_data(&mut self, size: u64) -> Result<(u64, u32), Error> {
        let at = self.align_data();
        let start = self.block_of(at)?;
        self.block_of(at + size - 1)?;
        Ok((at, start))
    }

    /// A regular file at `path` of `size` bytes read from `data`, written
    /// to its place in the image now.
    pub fn add_file(
        &mut self,
        path: &[u8],
        meta: Meta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        check_meta(path, &meta)?;
        let (dir, name) = self.parent_of(path)?;
        let mut start = 0;
        if size > 0 {
            let at;
            (at, start) = self.place_data(size)?;
            self.stream(path, data, size, at)?;
            self.data_end = at + size;
        }
        self.insert(dir, name, meta, Body::file(size, u64::from(start), 0))?;
        Ok(())
    }

    /// A regular file copied from `src` (`size` bytes from its start), with
    /// `copy_file_range` where the kernel can (reflinks on filesystems that
    /// have them), else read and written.
    pub fn add_file_from(
        &mut self,
        path: &[u8],
        meta: Meta,
        size: u64,
        src: &File,
    ) -> Result<(), Error> {
        check_meta(path, &meta)?;
        let (dir, name) = self.parent_of(path)?;
        let mut start = 0;
        if size > 0 {
            let at;
            (at, start) = self.place_data(size)?;
            self.out.flush().map_err(Error::write)?;
            let copied = copy_range(src, &self.out.file, size, at)?;
            if copied < size {
                // What copy_file_range could not do, the slow way.
                let mut rest = FileAt {
                    file: src,
                    pos: copied,
                };
                self.stream(path, &mut rest, size - copied, at + copied)?;
                self.out.flush().map_err(Error::write)?;
            }
            self.out.buf_at = at + size;
            self.data_end = at + size;
        }
        self.insert(dir, name, meta, Body::file(size, u64::from(start), 0))?;
        Ok(())
    }

    /// A sparse regular file of `size` bytes whose data lies in `fragments`
    /// (`(offset, length)`, sorted, not overlapping, inside `size`), read
    /// from `data` in that order. Holes stay holes: chunks that hold no data
    /// get no blocks (chunk-based layout).
    pub fn add_sparse_file(
        &mut self,
        path: &[u8],
        meta: Meta,
        size: u64,
        fragments: &[(u64, u64)],
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        check_meta(path, &meta)?;
        let (dir, name) = self.parent_of(path)?;
        let mut end = 0;
        for &(off, len) in fragments {
            if off < end || off.checked_add(len).is_none_or(|e| e > size) {
                return Err(Error::invalid(format!(
                    "{}: sparse fragments out of order or past the end",
                    path_str(path)
                )));
            }
            end = off + len;
        }
        let mut bits = 0u8;
        while size.div_ceil(self.block << bits) > MAX_CHUNKS {
            bits += 1;
        }
        let chunk = self.block << bits;
        let nchunks = size.div_ceil(chunk);
        let mut chunks = vec![format::NULL_ADDR; nchunks as usize];
        let frags: Vec<(u64, u64)> = fragments.iter().copied().filter(|f| f.1 > 0).collect();
        // Fragment `fi` has `done` of its bytes written.
        let (mut fi, mut done) = (0usize, 0u64);
        while fi < frags.len() {
            let c = (frags[fi].0 + done) / chunk;
            let chunk_start = c * chunk;
            let chunk_end = (chunk_start + chunk).min(size);
            let at;
            (at, chunks[c as usize]) = self.place_data(chunk_end - chunk_start)?;
            // The chunk's bytes: fragment data where there is some, zeros
            // between.
            let mut pos = chunk_start;
            while fi < frags.len() {
                let (off, len) = frags[fi];
                let cur = off + done;
                if cur >= chunk_end {
                    break;
                }
                self.write_zeros(at + (pos - chunk_start), cur - pos)?;
                let take = (off + len).min(chunk_end) - cur;
                self.stream(path, data, take, at + (cur - chunk_start))?;
                pos = cur + take;
                done += take;
                if done < len {
                    // It goes on in the next chunk.
                    break;
                }
                fi += 1;
                done = 0;
            }
            self.write_zeros(at + (pos - chunk_start), chunk_end - pos)?;
            self.data_end = at + (chunk_end - chunk_start);
        }
        let map = self.e.chunk_maps.len() as u64;
        self.e.chunk_maps.push((bits, chunks));
        self.insert(dir, name, meta, Body::file(size, map, CHUNKED))?;
        Ok(())
    }

    fn write_zeros(&mut self, mut at: u64, mut n: u64) -> Result<(), Error> {
        const ZEROS: [u8; 4096] = [0u8; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.out.write_at(&ZEROS[..k], at).map_err(Error::write)?;
            at += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Writes the metadata and the superblock; returns the image's size.
    pub fn finish(self) -> Result<u64, Error> {
        let Builder {
            mut out,
            opts,
            block,
            e,
            data_end,
        } = self;
        let bs = block as usize;
        let block_of = |offset: u64| -> Result<u32, Error> {
            u32::try_from(offset / block)
                .map_err(|_| Error::invalid("the image grows past 2^32 blocks".to_string()))
        };
        let listing = e.tree.listing();
        let count = e.nodes.len();

        // Reachable nodes, depth first by name: the root first, so its nid
        // fits the superblock's 16 bits. `links[id]` counts the names that
        // reach node `id` (0: unreachable).
        let mut order: Vec<Id> = Vec::new();
        let mut parent: Vec<Id> = vec![ROOT; count];
        let mut links: Vec<u32> = vec![0; count];
        let mut stack: Vec<(Id, Id)> = vec![(ROOT, ROOT)];
        let mut kids: Vec<Id> = Vec::new();
        while let Some((id, from)) = stack.pop() {
            links[id as usize] += 1;
            if links[id as usize] > 1 {
                continue;
            }
            order.push(id);
            parent[id as usize] = from;
            if e.node(id).is_dir() {
                kids.clear();
                kids.extend(listing.children(id).map(|(_, c)| c));
                stack.extend(kids.iter().rev().map(|&c| (c, id)));
            }
        }
        let dir_entries = |id: Id| dir_entries(&listing, id, parent[id as usize]);
        let nlink = |id: Id| -> u32 {
            if e.node(id).is_dir() {
                2 + listing
                    .children(id)
                    .filter(|(_, c)| e.node(*c).is_dir())
                    .count() as u32
            } else {
                links[id as usize]
            }
        };

        // Extended attributes: what two inodes or more carry is shared.
        let mut counts: BTreeMap<Xattr, u32> = BTreeMap::new();
        for &id in &order {
            let n = e.node(id);
            if n.xattrs != 0 || n.flags & WHITEOUTS != 0 {
                for x in e.xattrs_of(id) {
                    *counts.entry(x).or_default() += 1;
                }
            }
        }
        let mut shared_area: Vec<u8> = Vec::new();
        let mut shared_id: BTreeMap<Xattr, u32> = BTreeMap::new();
        for (x, n) in counts {
            if n >= 2 {
                shared_id.insert(x.clone(), (shared_area.len() / 4) as u32);
                format::encode_xattr_entry(&mut shared_area, x.0, &x.1, &x.2);
            }
        }

        // The build time compact inodes take: the most common mtime (the
        // earliest of the most common).
        let build = opts.build_time.unwrap_or_else(|| {
            let mut times: Vec<(i64, u32)> = order
                .iter()
                .map(|&id| (e.node(id).mtime, e.node(id).mtime_nsec))
                .collect();
            times.sort_unstable();
            let mut best = ((0, 0), 0usize);
            for run in times.chunk_by(|a, b| a == b) {
                if run.len() > best.1 || (run.len() == best.1 && run[0] < best.0) {
                    best = (run[0], run.len());
                }
            }
            // Before 1970: two's complement, as the kernel reads it back.
            (best.0 .0 as u64, best.0 .1)
        });

        // The data area ends here; shared xattrs, then the inodes, then the
        // blocks of directories and symlinks too large to inline.
        let xattr_start = data_end.next_multiple_of(block);
        let meta_start = (xattr_start + shared_area.len() as u64).next_multiple_of(block);
        let xattr_blkaddr = if shared_area.is_empty() {
            0
        } else {
            block_of(xattr_start)?
        };
        let meta_blkaddr = block_of(meta_start)?;

        // Where each inode goes (`nid[id]`, in 32-byte slots from
        // `meta_start`), and which nodes keep their data in blocks after
        // the inodes (with its length in bytes).
        let mut nid: Vec<u64> = vec![0; count];
        let mut outside: HashMap<Id, u64> = HashMap::new();
        let mut cursor = 0u64;
        for &id in &order {
            let dir_size = if e.node(id).is_dir() {
                pack_dir(dir_entries(id), bs, |_, _| {})
            } else {
                0
            };
            let (inode, tail) = e.disk_inode(id, nlink(id), dir_size, build);
            let head = inode.encoded_size() + e.ibody(id, &shared_id).len();
            let mut whole = head as u64;
            if inode.layout != format::LAYOUT_FLAT_INLINE {
                whole += tail as u64;
                if e.node(id).is_dir() {
                    outside.insert(id, dir_size);
                }
            } else if head + tail > bs {
                // Inline data must not cross a block boundary; too big to
                // fit in one block with its inode, it goes to blocks of
                // its own.
                outside.insert(id, tail as u64);
            } else {
                whole += tail as u64;
            }
            cursor = cursor.next_multiple_of(format::INODE_SLOT);
            if whole <= block && cursor % block + whole > block {
                cursor = cursor.next_multiple_of(block);
            }
            nid[id as usize] = cursor / format::INODE_SLOT;
            cursor += whole;
        }
        if nid[ROOT as usize] > u64::from(u16::MAX) {
            return Err(Error::invalid("the root inode is out of reach".to_string()));
        }
        // Blocks of large directories and symlinks, after the inodes, in
        // the order of their inodes.
        let blocks_start = (meta_start + cursor).next_multiple_of(block);
        let mut block_at: HashMap<Id, u32> = HashMap::with_capacity(outside.len());
        let mut next = blocks_start;
        for &id in &order {
            if let Some(len) = outside.get(&id) {
                block_at.insert(id, block_of(next)?);
                next += len.next_multiple_of(block);
            }
        }
        let image_len = next.max(meta_start + cursor).next_multiple_of(block);
        let image_blocks = block_of(image_len)?;

        // A directory's content, now that every nid is known.
        let file_type = |id: Id| match e.node(id).mode & format::S_IFMT {
            format::S_IFDIR => format::FT_DIR,
            format::S_IFREG => format::FT_REG_FILE,
            format::S_IFLNK => format::FT_SYMLINK,
            format::S_IFCHR => format::FT_CHRDEV,
            format::S_IFBLK => format::FT_BLKDEV,
            format::S_IFIFO => format::FT_FIFO,
            _ => format::FT_SOCK,
        };
        let dir_content = |id: Id, content: &mut Vec<u8>| {
            pack_dir(dir_entries(id), bs, |entries, last| {
                let start = content.len();
                let mut nameoff = entries.len() * format::DIRENT_SIZE;
                for (name, child) in entries {
                    content.extend_from_slice(&nid[*child as usize].to_le_bytes());
                    content.extend_from_slice(&(nameoff as u16).to_le_bytes());
                    content.push(file_type(*child));
                    content.push(0);
                    nameoff += name.len();
                }
                for (name, _) in entries {
                    content.extend_from_slice(name);
                }
                if !last {
                    content.resize(start + bs, 0);
                }
            });
        };

        // Write it all, in order: shared xattrs, inodes, blocks, then the
        // superblock.
        if !shared_area.is_empty() {
            out.write_at(&shared_area, xattr_start)
                .map_err(Error::write)?;
        }
        let mut enc: Vec<u8> = Vec::with_capacity(256);
        let mut data: Vec<u8> = Vec::new();
        for (i, &id) in order.iter().enumerate() {
            let node = e.node(id);
            data.clear();
            let mut dir_size = 0;
            match node.mode & format::S_IFMT {
                format::S_IFDIR if outside.contains_key(&id) => dir_size = outside[&id],
                format::S_IFDIR => {
                    dir_content(id, &mut data);
                    dir_size = data.len() as u64;
                }
                format::S_IFLNK => data.extend_from_slice(
                    &e.targets[node.data as usize..(node.data + node.size) as usize],
                ),
                format::S_IFREG if node.flags & CHUNKED != 0 => {
                    for c in &e.chunk_maps[node.data as usize].1 {
                        data.extend_from_slice(&c.to_le_bytes());
                    }
                }
                _ => {}
            }
            let (mut inode, _) = e.disk_inode(id, nlink(id), dir_size, build);
            let ibody = e.ibody(id, &shared_id);
            inode.ino = i as u32 + 1;
            if !ibody.is_empty() {
                inode.xattr_icount =
                    ((ibody.len() - format::XATTR_IBODY_HEADER_SIZE) / 4 + 1) as u16;
            }
            if let Some(b) = block_at.get(&id) {
                inode.layout = format::LAYOUT_FLAT_PLAIN;
                inode.i_u = *b;
            }
            enc.clear();
            inode.encode(&mut enc);
            enc.extend_from_slice(&ibody);
            if !block_at.contains_key(&id) {
                enc.extend_from_slice(&data);
            }
            out.write_at(&enc, meta_start + nid[id as usize] * format::INODE_SLOT)
                .map_err(Error::write)?;
        }
        for &id in &order {
            let Some(b) = block_at.get(&id) else { continue };
            let node = e.node(id);
            data.clear();
            if node.is_dir() {
                dir_content(id, &mut data);
            } else {
                data.extend_from_slice(
                    &e.targets[node.data as usize..(node.data + node.size) as usize],
                );
            }
            out.write_at(&data, u64::from(*b) * block)
                .map_err(Error::write)?;
        }
        out.flush().map_err(Error::write)?;
        let sb = SuperBlock {
            blkszbits: opts.block_size_bits,
            root_nid: nid[ROOT as usize] as u16,
            inos: order.len() as u64,
            build_time: build.0,
            build_time_nsec: build.1,
            blocks: image_blocks,
            meta_blkaddr,
            xattr_blkaddr,
            uuid: opts.uuid,
            volume_name: [0; 16],
            feature_compat: format::FEATURE_COMPAT_SB_CHKSUM | format::FEATURE_COMPAT_MTIME,
            feature_incompat: if order.iter().any(|&id| e.node(id).flags & CHUNKED != 0) {
                format::FEATURE_INCOMPAT_CHUNKED_FILE
            } else {
                0
            },
        };
        let mut first = vec![0u8; bs - format::SUPER_OFFSET as usize];
        first[..format::SUPER_SIZE].copy_from_slice(&sb.encode());
        let crc = format::super_checksum(&first);
        first[4..8].copy_from_slice(&crc.to_le_bytes());
        out.file
            .write_all_at(&first, format::SUPER_OFFSET)
            .map_err(Error::write)?;
        out.file.set_len(image_len).map_err(Error::write)?;
        Ok(image_len)
    }
}

impl Entries {
    /// A new node; returns its id.
    fn push(&mut self, meta: Meta, body: Body) -> Result<Id, Error> {
        let id = Id::try_from(self.nodes.len())
            .ok()
            .filter(|id| *id < Id::MAX)
            .ok_or_else(|| too_large(crate::tree::TooLarge))?;
        let xattrs = self.store_xattrs(meta.xattrs)?;
        self.nodes.push(Node {
            mtime: meta.mtime,
            size: body.size,
            data: body.data,
            uid: meta.uid,
            gid: meta.gid,
            mtime_nsec: meta.mtime_nsec,
            mode: body.kind | (meta.mode & 0o7777),
            xattrs,
            flags: body.flags,
        });
        Ok(id)
    }

    fn store_xattrs(&mut self, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<u32, Error> {
        if xattrs.is_empty() {
            return Ok(0);
        }
        self.xattrs.push(xattrs);
        u32::try_from(self.xattrs.len()).map_err(|_| too_large(crate::tree::TooLarge))
    }

    /// Directory `id` given again: it takes `meta`'s attributes and xattrs,
    /// and keeps the xattrs `meta` does not set (as a directory that exists
    /// takes the attributes of an entry applied over it).
    fn redo_dir(&mut self, id: Id, meta: Meta) -> Result<(), Error> {
        let mut xattrs = match self.node(id).xattrs {
            0 => Vec::new(),
            i => std::mem::take(&mut self.xattrs[i as usize - 1]),
        };
        for (name, value) in meta.xattrs {
            match xattrs.iter_mut().find(|(n, _)| *n == name) {
                Some(x) => x.1 = value,
                None => xattrs.push((name, value)),
            }
        }
        let index = match self.node(id).xattrs {
            0 => self.store_xattrs(xattrs)?,
            i => {
                self.xattrs[i as usize - 1] = xattrs;
                i
            }
        };
        let n = &mut self.nodes[id as usize];
        n.mode = format::S_IFDIR | (meta.mode & 0o7777);
        (n.uid, n.gid) = (meta.uid, meta.gid);
        (n.mtime, n.mtime_nsec) = (meta.mtime, meta.mtime_nsec);
        n.xattrs = index;
        Ok(())
    }

    fn node(&self, id: Id) -> &Node {
        &self.nodes[id as usize]
    }

    /// The node at `path` (components separated by `/`; empty: the root).
    fn lookup(&self, path: &[u8]) -> Option<Id> {
        self.tree.lookup(path, |id| self.node(id).is_dir())
    }

    /// The xattrs of node `id` as EROFS stores them, sorted.
    fn xattrs_of(&self, id: Id) -> Vec<Xattr> {
        let node = self.node(id);
        let mut v: Vec<Xattr> = match node.xattrs {
            0 => Vec::new(),
            i => self.xattrs[i as usize - 1]
                .iter()
                .filter_map(|(n, val)| {
                    format::xattr_index(n).map(|(i, s)| (i, s.to_vec(), val.clone()))
                })
                .collect(),
        };
        if node.is_dir() && node.flags & WHITEOUTS != 0 {
            // Kernel commit b79e05aaa166: overlayfs never iterates a
            // directory with an origin xattr directly, so it filters the
            // whiteouts in it. The value is irrelevant here.
            if !v
                .iter()
                .any(|(i, s, _)| *i == format::XATTR_INDEX_TRUSTED && s == b"overlay.origin")
            {
                v.push((
                    format::XATTR_INDEX_TRUSTED,
                    b"overlay.origin".to_vec(),
                    Vec::new(),
                ));
            }
        }
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        v
    }

    /// Node `id`'s xattr body: header, shared ids, inline entries (empty
    /// without xattrs).
    fn ibody(&self, id: Id, shared_id: &BTreeMap<Xattr, u32>) -> Vec<u8> {
        let node = self.node(id);
        if node.xattrs == 0 && node.flags & WHITEOUTS == 0 {
            return Vec::new();
        }
        let xs = self.xattrs_of(id);
        if xs.is_empty() {
            return Vec::new();
        }
        let mut shared: Vec<u32> = Vec::new();
        let mut inline: Vec<u8> = Vec::new();
        for x in &xs {
            match shared_id.get(x) {
                Some(id) if shared.len() < 255 => shared.push(*id),
                _ => format::encode_xattr_entry(&mut inline, x.0, &x.1, &x.2),
            }
        }
        let mut body = vec![0u8; format::XATTR_IBODY_HEADER_SIZE];
        body[4] = shared.len() as u8;
        for id in shared {
            body.extend_from_slice(&id.to_le_bytes());
        }
        body.extend_from_slice(&inline);
        body
    }

    /// Node `id`'s inode, but for its number, its xattr count and the block
    /// address of data stored after the inodes; and the length of what
    /// follows its xattrs (inline data or a chunk map).
    fn disk_inode(
        &self,
        id: Id,
        nlink: u32,
        dir_size: u64,
        build: (u64, u32),
    ) -> (DiskInode, usize) {
        let n = self.node(id);
        let mut inode = DiskInode {
            extended: false,
            layout: format::LAYOUT_FLAT_PLAIN,
            xattr_icount: 0,
            mode: n.mode,
            nlink,
            size: 0,
            i_u: format::NULL_ADDR,
            ino: 0,
            uid: n.uid,
            gid: n.gid,
            // Before 1970: two's complement, as the kernel reads it back.
            mtime: n.mtime as u64,
            mtime_nsec: n.mtime_nsec,
        };
        let mut tail = 0;
        match n.mode & format::S_IFMT {
            format::S_IFDIR => {
                inode.size = dir_size;
                if dir_size < self.block {
                    inode.layout = format::LAYOUT_FLAT_INLINE;
                    tail = dir_size as usize;
                }
            }
            format::S_IFREG => {
                inode.size = n.size;
                if n.flags & CHUNKED != 0 {
                    let (bits, chunks) = &self.chunk_maps[n.data as usize];
                    inode.layout = format::LAYOUT_CHUNK_BASED;
                    inode.i_u = u32::from(*bits);
                    tail = chunks.len() * 4;
                } else if n.size > 0 {
                    inode.i_u = n.data as u32;
                }
            }
            format::S_IFLNK => {
                inode.size = n.size;
                inode.layout = format::LAYOUT_FLAT_INLINE;
                tail = n.size as usize;
            }
            _ => inode.i_u = n.data as u32,
        }
        inode.extended = inode.uid > u32::from(u16::MAX)
            || inode.gid > u32::from(u16::MAX)
            || inode.nlink > u32::from(u16::MAX)
            || inode.size > u64::from(u32::MAX)
            || (inode.mtime, inode.mtime_nsec) != build;
        (inode, tail)
    }
}

/// A reader of `file` from offset `pos` on.
struct FileAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Copies up to `size` bytes from the start of `src` to `dst` at `at` with
/// `copy_file_range`; returns how many it copied (0 where the kernel cannot
/// copy between these files).
fn copy_range(src: &File, dst: &File, size: u64, at: u64) -> Result<u64, Error> {
    let mut done = 0u64;
    while done < size {
        let mut from = done;
        let mut to = at + done;
        let want = (size - done).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => continue,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS,
            ) if done == 0 => return Ok(0),
            Err(e) => return Err(Error::write(e.into())),
        }
    }
    Ok(done)
}
