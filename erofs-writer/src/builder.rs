//! The image builder: entries are added by path, file data is written to
//! its final place in the image as it is added, and [`Builder::finish`]
//! lays out and writes the metadata, then the superblock.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::format::{self, Inode as DiskInode, SuperBlock};
use crate::{Error, Meta, Options, Special};

type NodeId = usize;

/// An xattr as EROFS stores it: prefix index, the rest of the name, value.
type Xattr = (u8, Vec<u8>, Vec<u8>);

/// What a node holds.
enum Body {
    Dir {
        entries: BTreeMap<Vec<u8>, NodeId>,
        /// It holds whiteouts: marked for overlayfs (see `finish`).
        whiteouts: bool,
    },
    File {
        size: u64,
        data: FileData,
    },
    Symlink(Vec<u8>),
    Device {
        mode_type: u32,
        rdev: u32,
    },
}

enum FileData {
    /// No data blocks (an empty file).
    None,
    /// `blocks` contiguous blocks from `start`.
    Plain { start: u32 },
    /// Chunks of `block << bits` bytes; `NULL_ADDR` for a hole.
    Chunked { bits: u8, chunks: Vec<u32> },
}

struct Node {
    meta: Meta,
    body: Body,
}

/// Buffered writes into the image file at increasing offsets, with random
/// access writes for the metadata.
struct Output {
    file: File,
    buf: Vec<u8>,
    /// Image offset of `buf[0]`.
    buf_at: u64,
}

const OUT_BUF: usize = 1 << 20;

impl Output {
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.buf_at)?;
            self.buf_at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes `data` at image offset `at`.
    fn write_at(&mut self, data: &[u8], at: u64) -> io::Result<()> {
        if at != self.buf_at + self.buf.len() as u64 {
            self.flush()?;
            self.buf_at = at;
        }
        if data.len() >= OUT_BUF {
            self.flush()?;
            self.file.write_all_at(data, at)?;
            self.buf_at = at + data.len() as u64;
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_BUF {
            self.flush()?;
        }
        Ok(())
    }
}

/// Builds one EROFS image; see the crate documentation.
pub struct Builder {
    out: Output,
    opts: Options,
    block: u64,
    nodes: Vec<Node>,
    /// Image offset where the next file's data goes (block aligned).
    data_end: u64,
    scratch: Vec<u8>,
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
        Ok(Builder {
            out: Output {
                file,
                buf: Vec::with_capacity(OUT_BUF),
                buf_at: block,
            },
            opts,
            block,
            nodes: vec![Node {
                meta: root,
                body: Body::Dir {
                    entries: BTreeMap::new(),
                    whiteouts: false,
                },
            }],
            // Block 0 holds the superblock.
            data_end: block,
            scratch: vec![0u8; 256 * 1024],
        })
    }

    /// The node at `path` (components separated by `/`; empty: the root).
    fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut id = 0;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            match &self.nodes[id].body {
                Body::Dir { entries, .. } => id = *entries.get(comp)?,
                _ => return None,
            }
        }
        Some(id)
    }

    /// The directory that holds `path`, and its last component.
    fn parent_of<'p>(&self, path: &'p [u8]) -> Result<(NodeId, &'p [u8]), Error> {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        check_name(path, name)?;
        let id = self.lookup(dir).ok_or_else(|| {
            Error::invalid(format!("{}: its directory does not exist", path_str(path)))
        })?;
        match self.nodes[id].body {
            Body::Dir { .. } => Ok((id, name)),
            _ => Err(Error::invalid(format!(
                "{}: {} is not a directory",
                path_str(path),
                path_str(dir)
            ))),
        }
    }

    /// Puts `node` at `name` in `dir`, replacing what was there (a directory
    /// over a directory keeps the old one's entries).
    fn insert(&mut self, dir: NodeId, name: &[u8], node: Node) -> NodeId {
        let existing = match &self.nodes[dir].body {
            Body::Dir { entries, .. } => entries.get(name).copied(),
            _ => unreachable!("checked by parent_of"),
        };
        if let Some(old) = existing {
            if let (Body::Dir { .. }, Body::Dir { .. }) = (&self.nodes[old].body, &node.body) {
                self.nodes[old].meta = node.meta;
                return old;
            }
        }
        let id = self.nodes.len();
        self.nodes.push(node);
        if let Body::Dir { entries, .. } = &mut self.nodes[dir].body {
            entries.insert(name.to_vec(), id);
        }
        id
    }

    /// A directory at `path` (its parent must exist). An existing directory
    /// there takes `meta` and keeps its entries.
    pub fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        check_meta(path, &meta)?;
        if is_root(path) {
            self.nodes[0].meta = meta;
            return Ok(());
        }
        let (dir, name) = self.parent_of(path)?;
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::Dir {
                    entries: BTreeMap::new(),
                    whiteouts: false,
                },
            },
        );
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
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::Symlink(target.to_vec()),
            },
        );
        Ok(())
    }

    /// A device, fifo or socket at `path`.
    pub fn add_special(&mut self, path: &[u8], meta: Meta, special: Special) -> Result<(), Error> {
        check_meta(path, &meta)?;
        let (mode_type, rdev) = match special {
            Special::Char { major, minor } => (format::S_IFCHR, format::encode_dev(major, minor)),
            Special::Block { major, minor } => (format::S_IFBLK, format::encode_dev(major, minor)),
            Special::Fifo => (format::S_IFIFO, 0),
            Special::Socket => (format::S_IFSOCK, 0),
        };
        let (dir, name) = self.parent_of(path)?;
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::Device { mode_type, rdev },
            },
        );
        Ok(())
    }

    /// An overlayfs whiteout (a 0/0 character device) at `path` with
    /// attributes `meta`; its directory is marked so overlayfs never shows
    /// it as a device.
    pub fn add_whiteout(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        let (dir, _) = self.parent_of(path)?;
        self.add_special(path, meta, Special::Char { major: 0, minor: 0 })?;
        if let Body::Dir { whiteouts, .. } = &mut self.nodes[dir].body {
            *whiteouts = true;
        }
        Ok(())
    }

    /// A hard link at `path` to the non-directory already at `target`.
    pub fn add_hard_link(&mut self, path: &[u8], target: &[u8]) -> Result<(), Error> {
        let id = self.lookup(target).ok_or_else(|| {
            Error::invalid(format!(
                "{}: hard link to {}, which does not exist",
                path_str(path),
                path_str(target)
            ))
        })?;
        if let Body::Dir { .. } = self.nodes[id].body {
            return Err(Error::invalid(format!(
                "{}: hard link to the directory {}",
                path_str(path),
                path_str(target)
            )));
        }
        let (dir, name) = self.parent_of(path)?;
        if let Body::Dir { entries, .. } = &mut self.nodes[dir].body {
            entries.insert(name.to_vec(), id);
        }
        Ok(())
    }

    /// Sets extended attribute `name` of the entry at `path` (replacing a
    /// value it had).
    pub fn set_xattr(&mut self, path: &[u8], name: &[u8], value: &[u8]) -> Result<(), Error> {
        let id = self
            .lookup(path)
            .ok_or_else(|| Error::invalid(format!("{}: does not exist", path_str(path))))?;
        let xattrs = &mut self.nodes[id].meta.xattrs;
        xattrs.retain(|(n, _)| n != name);
        xattrs.push((name.to_vec(), value.to_vec()));
        let meta = self.nodes[id].meta.clone();
        check_meta(path, &meta)
    }

    /// Removes `path` (and what lies below it) if it exists.
    pub fn remove(&mut self, path: &[u8]) -> Result<(), Error> {
        let (dir, name) = self.parent_of(path)?;
        if let Body::Dir { entries, .. } = &mut self.nodes[dir].body {
            entries.remove(name);
        }
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

    /// Copies `size` bytes of `data` into the image at `at`.
    fn stream(
        &mut self,
        path: &[u8],
        data: &mut dyn Read,
        size: u64,
        at: u64,
    ) -> Result<(), Error> {
        let mut left = size;
        let mut pos = at;
        let mut buf = std::mem::take(&mut self.scratch);
        let result = (|| {
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = match data.read(&mut buf[..want]) {
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
                self.out.write_at(&buf[..n], pos).map_err(Error::write)?;
                pos += n as u64;
                left -= n as u64;
            }
            Ok(())
        })();
        self.scratch = buf;
        result
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
        let file_data = if size == 0 {
            FileData::None
        } else {
            let at = self.align_data();
            let start = self.block_of(at)?;
            self.block_of(at + size - 1)?;
            self.stream(path, data, size, at)?;
            self.data_end = at + size;
            FileData::Plain { start }
        };
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::File {
                    size,
                    data: file_data,
                },
            },
        );
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
        let file_data = if size == 0 {
            FileData::None
        } else {
            let at = self.align_data();
            let start = self.block_of(at)?;
            self.block_of(at + size - 1)?;
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
            FileData::Plain { start }
        };
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::File {
                    size,
                    data: file_data,
                },
            },
        );
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
        let zeros = vec![0u8; 64 * 1024];
        let frags: Vec<(u64, u64)> = fragments.iter().copied().filter(|f| f.1 > 0).collect();
        // Fragment `fi` has `done` of its bytes written.
        let (mut fi, mut done) = (0usize, 0u64);
        while fi < frags.len() {
            let c = (frags[fi].0 + done) / chunk;
            let chunk_start = c * chunk;
            let chunk_end = (chunk_start + chunk).min(size);
            let at = self.align_data();
            chunks[c as usize] = self.block_of(at)?;
            self.block_of(at + (chunk_end - chunk_start) - 1)?;
            // The chunk's bytes: fragment data where there is some, zeros
            // between.
            let mut pos = chunk_start;
            while fi < frags.len() {
                let (off, len) = frags[fi];
                let cur = off + done;
                if cur >= chunk_end {
                    break;
                }
                self.write_zeros(&zeros, at + (pos - chunk_start), cur - pos)?;
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
            self.write_zeros(&zeros, at + (pos - chunk_start), chunk_end - pos)?;
            self.data_end = at + (chunk_end - chunk_start);
        }
        self.insert(
            dir,
            name,
            Node {
                meta,
                body: Body::File {
                    size,
                    data: FileData::Chunked { bits, chunks },
                },
            },
        );
        Ok(())
    }

    fn write_zeros(&mut self, zeros: &[u8], mut at: u64, mut n: u64) -> Result<(), Error> {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.out.write_at(&zeros[..k], at).map_err(Error::write)?;
            at += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Writes the metadata and the superblock; returns the image's size.
    pub fn finish(mut self) -> Result<u64, Error> {
        let block = self.block;
        let bs = block as usize;

        // Reachable nodes, depth first by name: the root first, so its nid
        // fits the superblock's 16 bits.
        let mut order: Vec<NodeId> = Vec::new();
        let mut index: HashMap<NodeId, usize> = HashMap::new();
        let mut parent: HashMap<NodeId, NodeId> = HashMap::new();
        let mut links: HashMap<NodeId, u32> = HashMap::new();
        let mut stack = vec![(0usize, 0usize)];
        while let Some((id, from)) = stack.pop() {
            *links.entry(id).or_default() += 1;
            if index.contains_key(&id) {
                continue;
            }
            index.insert(id, order.len());
            order.push(id);
            parent.insert(id, from);
            if let Body::Dir { entries, .. } = &self.nodes[id].body {
                for child in entries.values().rev() {
                    stack.push((*child, id));
                }
            }
        }

        // Directory contents: sorted names, packed into blocks.
        struct DirLayout {
            blocks: Vec<Vec<(Vec<u8>, NodeId)>>,
            size: u64,
        }
        let mut dirs: HashMap<NodeId, DirLayout> = HashMap::new();
        for &id in &order {
            let Body::Dir { entries, .. } = &self.nodes[id].body else {
                continue;
            };
            let mut all: Vec<(Vec<u8>, NodeId)> =
                entries.iter().map(|(n, c)| (n.clone(), *c)).collect();
            all.push((b".".to_vec(), id));
            all.push((b"..".to_vec(), parent[&id]));
            all.sort();
            let mut blocks: Vec<Vec<(Vec<u8>, NodeId)>> = vec![Vec::new()];
            let mut used = 0usize;
            for (name, child) in all {
                let need = format::DIRENT_SIZE + name.len();
                if used + need > bs {
                    blocks.push(Vec::new());
                    used = 0;
                }
                used += need;
                blocks
                    .last_mut()
                    .expect("one block at least")
                    .push((name, child));
            }
            let size = (blocks.len() as u64 - 1) * block + used as u64;
            dirs.insert(id, DirLayout { blocks, size });
        }

        // Extended attributes: what two inodes or more carry is shared.
        let xattrs_of = |id: NodeId| -> Vec<Xattr> {
            let node = &self.nodes[id];
            let mut v: Vec<Xattr> = node
                .meta
                .xattrs
                .iter()
                .filter_map(|(n, val)| {
                    format::xattr_index(n).map(|(i, s)| (i, s.to_vec(), val.clone()))
                })
                .collect();
            if let Body::Dir {
                whiteouts: true, ..
            } = node.body
            {
                // Kernel commit b79e05aaa166: overlayfs never iterates a
                // directory with an origin xattr directly, so it filters
                // the whiteouts in it. The value is irrelevant here.
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
        };
        let node_xattrs: Vec<Vec<Xattr>> = order.iter().map(|&id| xattrs_of(id)).collect();
        let mut counts: BTreeMap<&Xattr, u32> = BTreeMap::new();
        for xs in &node_xattrs {
            for x in xs {
                *counts.entry(x).or_default() += 1;
            }
        }
        let mut shared_area: Vec<u8> = Vec::new();
        let mut shared_id: BTreeMap<Xattr, u32> = BTreeMap::new();
        for (x, n) in &counts {
            if *n >= 2 {
                shared_id.insert((*x).clone(), (shared_area.len() / 4) as u32);
                format::encode_xattr_entry(&mut shared_area, x.0, &x.1, &x.2);
            }
        }
        // Each inode's xattr body: header, shared ids, inline entries.
        let ibodies: Vec<Vec<u8>> = node_xattrs
            .iter()
            .map(|xs| {
                if xs.is_empty() {
                    return Vec::new();
                }
                let mut shared: Vec<u32> = Vec::new();
                let mut inline: Vec<u8> = Vec::new();
                for x in xs {
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
            })
            .collect();

        // The build time compact inodes take: the most common mtime.
        let (build_time, build_nsec) = self.opts.build_time.unwrap_or_else(|| {
            let mut freq: BTreeMap<(i64, u32), u32> = BTreeMap::new();
            for &id in &order {
                let m = &self.nodes[id].meta;
                *freq.entry((m.mtime, m.mtime_nsec)).or_default() += 1;
            }
            let best = freq
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(t, _)| *t)
                .unwrap_or((0, 0));
            (best.0.max(0) as u64, best.1)
        });

        // The data area ends here; shared xattrs, then the inodes, then the
        // blocks of directories and symlinks too large to inline.
        let xattr_start = self.data_end.next_multiple_of(block);
        let meta_start = (xattr_start + shared_area.len() as u64).next_multiple_of(block);
        let xattr_blkaddr = if shared_area.is_empty() {
            0
        } else {
            self.block_of(xattr_start)?
        };
        let meta_blkaddr = self.block_of(meta_start)?;

        struct Placed {
            inode: DiskInode,
            at: u64,
            /// Bytes after the inode and its xattrs: inline data or a chunk map.
            tail: Vec<u8>,
            /// Blocks of directory or symlink data to place after the inodes.
            blocks: Option<Vec<u8>>,
        }
        let mut placed: Vec<Placed> = Vec::with_capacity(order.len());
        let mut cursor = 0u64;
        let mut feature_incompat = 0u32;
        for (i, &id) in order.iter().enumerate() {
            let node = &self.nodes[id];
            let m = &node.meta;
            let nlink = match &node.body {
                Body::Dir { entries, .. } => {
                    2 + entries
                        .values()
                        .filter(|c| matches!(self.nodes[**c].body, Body::Dir { .. }))
                        .count() as u32
                }
                _ => links[&id],
            };
            let mut inode = DiskInode {
                extended: false,
                layout: format::LAYOUT_FLAT_PLAIN,
                xattr_icount: 0,
                mode: m.mode & 0o7777,
                nlink,
                size: 0,
                i_u: format::NULL_ADDR,
                ino: i as u32 + 1,
                uid: m.uid,
                gid: m.gid,
                mtime: m.mtime.max(0) as u64,
                mtime_nsec: m.mtime_nsec,
            };
            let mut tail = Vec::new();
            let mut blocks = None;
            match &node.body {
                Body::Dir { .. } => {
                    inode.mode |= format::S_IFDIR;
                    let d = &dirs[&id];
                    inode.size = d.size;
                    // Encoded once the nids are known; the size decides
                    // where it goes.
                    if d.size < block {
                        inode.layout = format::LAYOUT_FLAT_INLINE;
                        tail = vec![0u8; d.size as usize];
                    } else {
                        blocks = Some(vec![0u8; d.blocks.len() * bs]);
                    }
                }
                Body::File { size, data } => {
                    inode.mode |= format::S_IFREG;
                    inode.size = *size;
                    match data {
                        FileData::None => {}
                        FileData::Plain { start } => inode.i_u = *start,
                        FileData::Chunked { bits, chunks } => {
                            inode.layout = format::LAYOUT_CHUNK_BASED;
                            inode.i_u = u32::from(*bits);
                            for c in chunks {
                                tail.extend_from_slice(&c.to_le_bytes());
                            }
                            feature_incompat |= format::FEATURE_INCOMPAT_CHUNKED_FILE;
                        }
                    }
                }
                Body::Symlink(target) => {
                    inode.mode |= format::S_IFLNK;
                    inode.size = target.len() as u64;
                    inode.layout = format::LAYOUT_FLAT_INLINE;
                    tail = target.clone();
                }
                Body::Device { mode_type, rdev } => {
                    inode.mode |= mode_type;
                    inode.i_u = *rdev;
                }
            }
            inode.extended = inode.uid > u32::from(u16::MAX)
                || inode.gid > u32::from(u16::MAX)
                || inode.nlink > u32::from(u16::MAX)
                || inode.size > u64::from(u32::MAX)
                || (inode.mtime, inode.mtime_nsec) != (build_time, build_nsec);
            let ibody = &ibodies[i];
            if !ibody.is_empty() {
                inode.xattr_icount =
                    ((ibody.len() - format::XATTR_IBODY_HEADER_SIZE) / 4 + 1) as u16;
            }
            let head = inode.encoded_size() + ibody.len();
            // Inline data must not cross a block boundary; too big to fit
            // in one block with its inode, it goes to blocks of its own.
            if inode.layout == format::LAYOUT_FLAT_INLINE && head + tail.len() > bs {
                inode.layout = format::LAYOUT_FLAT_PLAIN;
                let mut b = std::mem::take(&mut tail);
                b.resize(b.len().next_multiple_of(bs), 0);
                blocks = Some(b);
            }
            cursor = cursor.next_multiple_of(format::INODE_SLOT);
            let whole = (head + tail.len()) as u64;
            if whole <= block && cursor % block + whole > block {
                cursor = cursor.next_multiple_of(block);
            }
            placed.push(Placed {
                inode,
                at: cursor,
                tail,
                blocks,
            });
            cursor += whole;
        }
        if placed[0].at / format::INODE_SLOT > u64::from(u16::MAX) {
            return Err(Error::invalid("the root inode is out of reach".to_string()));
        }
        let nids: Vec<u64> = placed.iter().map(|p| p.at / format::INODE_SLOT).collect();
        let nid_of = |id: NodeId| nids[index[&id]];

        // Blocks of large directories and symlinks, after the inodes.
        let mut next_block = (meta_start + cursor).next_multiple_of(block);
        for p in placed.iter_mut() {
            if let Some(b) = &p.blocks {
                p.inode.i_u = self.block_of(next_block)?;
                next_block += b.len() as u64;
            }
        }
        // Directory entries, now that every nid is known.
        for (i, &id) in order.iter().enumerate() {
            let Some(d) = dirs.get(&id) else { continue };
            let mut content = Vec::with_capacity(d.size as usize);
            for (bi, entries) in d.blocks.iter().enumerate() {
                let start = content.len();
                let mut nameoff = entries.len() * format::DIRENT_SIZE;
                for (name, child) in entries {
                    content.extend_from_slice(&nid_of(*child).to_le_bytes());
                    content.extend_from_slice(&(nameoff as u16).to_le_bytes());
                    content.push(self.file_type(*child));
                    content.push(0);
                    nameoff += name.len();
                }
                for (name, _) in entries {
                    content.extend_from_slice(name);
                }
                if bi + 1 < d.blocks.len() {
                    content.resize(start + bs, 0);
                }
            }
            let p = &mut placed[i];
            match &mut p.blocks {
                Some(b) => b[..content.len()].copy_from_slice(&content),
                None => p.tail.copy_from_slice(&content),
            }
        }

        // Write it all: shared xattrs, inodes, blocks, then the superblock.
        let mut meta = vec![0u8; cursor as usize];
        let mut enc = Vec::with_capacity(64);
        for (i, p) in placed.iter().enumerate() {
            enc.clear();
            p.inode.encode(&mut enc);
            enc.extend_from_slice(&ibodies[i]);
            enc.extend_from_slice(&p.tail);
            meta[p.at as usize..p.at as usize + enc.len()].copy_from_slice(&enc);
        }
        if !shared_area.is_empty() {
            self.out
                .write_at(&shared_area, xattr_start)
                .map_err(Error::write)?;
        }
        self.out.write_at(&meta, meta_start).map_err(Error::write)?;
        let mut at = (meta_start + cursor).next_multiple_of(block);
        for p in &placed {
            if let Some(b) = &p.blocks {
                self.out.write_at(b, at).map_err(Error::write)?;
                at += b.len() as u64;
            }
        }
        self.out.flush().map_err(Error::write)?;
        let image_len = at.max(meta_start + cursor).next_multiple_of(block);
        let sb = SuperBlock {
            blkszbits: self.opts.block_size_bits,
            root_nid: (placed[0].at / format::INODE_SLOT) as u16,
            inos: order.len() as u64,
            build_time,
            build_time_nsec: build_nsec,
            blocks: self.block_of(image_len)?,
            meta_blkaddr,
            xattr_blkaddr,
            uuid: self.opts.uuid,
            volume_name: [0; 16],
            feature_compat: format::FEATURE_COMPAT_SB_CHKSUM | format::FEATURE_COMPAT_MTIME,
            feature_incompat,
        };
        let mut first = vec![0u8; bs - format::SUPER_OFFSET as usize];
        first[..format::SUPER_SIZE].copy_from_slice(&sb.encode());
        let crc = format::super_checksum(&first);
        first[4..8].copy_from_slice(&crc.to_le_bytes());
        let file = &self.out.file;
        file.write_all_at(&first, format::SUPER_OFFSET)
            .map_err(Error::write)?;
        file.set_len(image_len).map_err(Error::write)?;
        Ok(image_len)
    }

    fn file_type(&self, id: NodeId) -> u8 {
        match &self.nodes[id].body {
            Body::Dir { .. } => format::FT_DIR,
            Body::File { .. } => format::FT_REG_FILE,
            Body::Symlink(_) => format::FT_SYMLINK,
            Body::Device { mode_type, .. } => match *mode_type {
                format::S_IFCHR => format::FT_CHRDEV,
                format::S_IFBLK => format::FT_BLKDEV,
                format::S_IFIFO => format::FT_FIFO,
                _ => format::FT_SOCK,
            },
        }
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
