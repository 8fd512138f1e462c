//! Reading tar archives the way Go's `archive/tar` does (the reader
//! containerd, and most scanners of container images, use), and writing the
//! canonical entries this library hands to `mkfs.erofs`.
//!
//! A layer is hostile input, and the danger of tar is that two readers see
//! different files in one archive. So this reader:
//!
//! - follows Go's reader exactly where the formats are clear: PAX records
//!   override header fields (`size` too, so data is never taken for headers),
//!   numbers are parsed as Go parses them, GNU and PAX sparse files are read
//!   in every encoding, and each extended header is limited to 1 MiB, so the
//!   memory an entry takes is bounded by the size of its headers;
//! - refuses what readers disagree on, instead of picking one reading: two
//!   extended headers of one kind for one entry, a PAX path and a GNU long
//!   name that differ, a global PAX header that would change entries, data
//!   after a directory or link header, a lone zero block followed by more
//!   headers, an unknown entry type or sparse version.
//!
//! What an entry *means* in an OCI layer (whiteouts, paths, links) is the
//! business of `layer_tar`; this module only gets the bytes right.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

pub(crate) const BLOCK: usize = 512;

/// The largest extended header (PAX records, GNU long name or link target,
/// sparse map) one entry may carry: Go's `maxSpecialFileSize`.
pub(crate) const MAX_SPECIAL: u64 = 1 << 20;

/// The type of an entry, once extended headers are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
}

impl Kind {
    pub fn typeflag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Directory => b'5',
            Kind::Fifo => b'6',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Regular => "regular file",
            Kind::HardLink => "hard link",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Directory => "directory",
            Kind::Fifo => "fifo",
        }
    }
}

/// A time as a `timespec`: whole seconds (rounded down) and nanoseconds in
/// `0..1_000_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn from_nanos(ns: i128) -> Option<Time> {
        let secs = i64::try_from(ns.div_euclid(1_000_000_000)).ok()?;
        Some(Time {
            secs,
            nanos: ns.rem_euclid(1_000_000_000) as u32,
        })
    }
}

/// Extended attributes: `(name, value)` pairs.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry of the archive, with every extended header applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The name as the archive gives it (not normalized).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, with set-uid, set-gid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    /// The file's size (of a sparse file: its full length); 0 but for files.
    pub size: u64,
    /// Hard link or symlink target.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, by name, each once.
    pub xattrs: Xattrs,
    /// Data fragments `(offset, length)` of a sparse file; the rest are holes.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// Offset in the tar stream of the first header block of this entry.
    pub offset: u64,
}

impl Entry {
    /// An entry with no data and default attributes (for writing).
    pub fn new(path: Vec<u8>, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            size: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
            offset: 0,
        }
    }

    /// The name for messages.
    pub fn display(&self) -> String {
        quote(&self.path)
    }
}

/// A byte string for messages: as a Rust string literal, lossy, cut at 200.
pub(crate) fn quote(b: &[u8]) -> String {
    if b.len() > 200 {
        format!(
            "{:?}... ({} bytes)",
            String::from_utf8_lossy(&b[..200]),
            b.len()
        )
    } else {
        format!("{:?}", String::from_utf8_lossy(b))
    }
}

/// What a read is for, named in the error when the stream ends inside it.
#[derive(Clone, Copy)]
enum What<'a> {
    /// The current entry's data.
    Data,
    /// An extended header of this kind.
    Header(&'a str),
}

fn bad(offset: u64, what: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("layer tar, at byte {offset}: {what}"))
}

/// How an entry's data maps onto the stream.
enum Data {
    Plain,
    Sparse {
        fragments: Vec<(u64, u64)>,
        /// Index of the first fragment that ends after `pos`.
        next: usize,
        pos: u64,
        size: u64,
    },
}

/// A streaming tar reader; see the module documentation.
pub(crate) struct Reader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Bytes of the current entry's stored data not consumed yet.
    stored_left: u64,
    /// Padding after the current entry's stored data.
    pad: u64,
    data: Data,
    /// The current entry, for messages.
    current: Vec<u8>,
    finished: bool,
}

/// The fields of one header block, as Go reads them.
struct Raw {
    typeflag: u8,
    name: Vec<u8>,
    link: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: i64,
    dev_major: i64,
    dev_minor: i64,
    gnu: bool,
}

/// PAX records of one extended header, later ones overriding earlier.
#[derive(Default)]
struct Pax {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// GNU sparse 0.0 `offset`/`numbytes` pairs, joined as Go does.
    sparse_map: Vec<Vec<u8>>,
}

impl Pax {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.records
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// A record's value; an empty value keeps the header's (as Go).
    fn get_nonempty(&self, key: &[u8]) -> Option<&[u8]> {
        self.get(key).filter(|v| !v.is_empty())
    }
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            offset: 0,
            stored_left: 0,
            pad: 0,
            data: Data::Plain,
            current: Vec::new(),
            finished: false,
        }
    }

    /// The underlying reader (positioned after what was consumed).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads `buf` whole: `what` it holds is named only in an error.
    fn read_exact(&mut self, buf: &mut [u8], what: What<'_>) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    let what = match what {
                        What::Data => format!("the data of entry {}", quote(&self.current)),
                        What::Header(h) => h.to_string(),
                    };
                    return Err(bad(
                        self.offset + got as u64,
                        format!("truncated: the stream ends inside {what}"),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, self.offset + got as u64)),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads a block; `None` at a clean end of stream (no byte read).
    fn read_block(&mut self, blk: &mut [u8; BLOCK]) -> Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut blk[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(bad(
                        self.offset + got as u64,
                        "truncated: the stream ends inside a 512-byte block",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, self.offset + got as u64)),
            }
        }
        self.offset += BLOCK as u64;
        Ok(true)
    }

    fn skip(&mut self, mut n: u64, what: What<'_>) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// The data of an extended header: at most [`MAX_SPECIAL`] bytes.
    fn read_special(&mut self, size: i64, at: u64, what: &str) -> Result<Vec<u8>> {
        if size < 0 || size as u64 > MAX_SPECIAL {
            return Err(bad(
                at,
                format!("{what} of {size} bytes; at most {MAX_SPECIAL} bytes are accepted"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact(&mut data, What::Header(what))?;
        self.skip(padding(size as u64), What::Header(what))?;
        Ok(data)
    }

    /// The next entry, `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.finished {
            return Ok(None);
        }
        // What the caller did not read of the previous entry.
        let left = self.stored_left + self.pad;
        self.stored_left = 0;
        self.pad = 0;
        self.data = Data::Plain;
        self.skip(left, What::Data)?;

        let start = self.offset;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut blk = [0u8; BLOCK];
        loop {
            let at = self.offset;
            if !self.read_block(&mut blk)? {
                return self.end(
                    pax.is_some() || long_name.is_some() || long_link.is_some(),
                    at,
                );
            }
            if blk.iter().all(|b| *b == 0) {
                // Two zero blocks end the archive; one, then the end of the stream, too.
                let second = self.offset;
                if self.read_block(&mut blk)? && blk.iter().any(|b| *b != 0) {
                    return Err(bad(
                        second,
                        "a header follows a single zero block: tar readers disagree on whether \
                         the archive ended",
                    ));
                }
                return self.end(
                    pax.is_some() || long_name.is_some() || long_link.is_some(),
                    at,
                );
            }
            let raw = parse_header(&blk, at)?;
            match raw.typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(bad(at, "two PAX extended headers for one entry"));
                    }
                    let data = self.read_special(raw.size, at, "a PAX extended header")?;
                    pax = Some(parse_pax(&data, at)?);
                }
                b'g' => {
                    if pax.is_some() || long_name.is_some() || long_link.is_some() {
                        return Err(bad(
                            at,
                            "a global PAX header between an entry's extended headers and the entry",
                        ));
                    }
                    let data = self.read_special(raw.size, at, "a global PAX header")?;
                    check_global(&parse_pax(&data, at)?, at)?;
                }
                b'L' => {
                    if long_name.is_some() {
                        return Err(bad(at, "two GNU long names for one entry"));
                    }
                    let data = self.read_special(raw.size, at, "a GNU long name")?;
                    long_name = Some(cstr(&data).to_vec());
                }
                b'K' => {
                    if long_link.is_some() {
                        return Err(bad(at, "two GNU long link targets for one entry"));
                    }
                    let data = self.read_special(raw.size, at, "a GNU long link target")?;
                    long_link = Some(cstr(&data).to_vec());
                }
                _ => {
                    let pax = pax.unwrap_or_default();
                    let entry = self.entry(raw, &blk, &pax, long_name, long_link, start, at)?;
                    self.current = entry.path.clone();
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn end(&mut self, dangling: bool, at: u64) -> Result<Option<Entry>> {
        if dangling {
            return Err(bad(
                at,
                "the archive ends after an extended header, without its entry",
            ));
        }
        self.finished = true;
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        raw: Raw,
        blk: &[u8; BLOCK],
        pax: &Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        start: u64,
        at: u64,
    ) -> Result<Entry> {
        let mut path = raw.name;
        if let Some(p) = pax.get_nonempty(b"path") {
            path = p.to_vec();
        }
        if let Some(n) = long_name {
            if pax.get_nonempty(b"path").is_some_and(|p| p != n.as_slice()) {
                return Err(bad(
                    at,
                    format!(
                        "entry has both a PAX path {} and a GNU long name {}: tar readers \
                         disagree on which wins",
                        quote(pax.get(b"path").unwrap_or_default()),
                        quote(&n)
                    ),
                ));
            }
            path = n;
        }
        let mut link = raw.link;
        if let Some(l) = pax.get_nonempty(b"linkpath") {
            link = l.to_vec();
        }
        if let Some(l) = long_link {
            if pax
                .get_nonempty(b"linkpath")
                .is_some_and(|p| p != l.as_slice())
            {
                return Err(bad(
                    at,
                    format!(
                        "entry {} has both a PAX linkpath and a GNU long link: tar readers \
                         disagree on which wins",
                        quote(&path)
                    ),
                ));
            }
            link = l;
        }
        // The entry's name as read so far, quoted only for an error.
        let shown = path.clone();
        let fail = |what: String| bad(at, format!("entry {}: {what}", quote(&shown)));
        let int = |key: &str, v: &[u8]| -> Result<i64> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| fail(format!("PAX record {key}={} is not a number", quote(v))))
        };
        let mut size = raw.size;
        if let Some(v) = pax.get_nonempty(b"size") {
            size = int("size", v)?;
        }
        let mut uid = raw.uid;
        if let Some(v) = pax.get_nonempty(b"uid") {
            uid = int("uid", v)?;
        }
        let mut gid = raw.gid;
        if let Some(v) = pax.get_nonempty(b"gid") {
            gid = int("gid", v)?;
        }
        let mut mtime = Time {
            secs: raw.mtime,
            nanos: 0,
        };
        if let Some(v) = pax.get_nonempty(b"mtime") {
            mtime = parse_pax_time(v)
                .ok_or_else(|| fail(format!("PAX record mtime={} is not a time", quote(v))))?;
        }
        for key in ["atime", "ctime"] {
            if let Some(v) = pax.get_nonempty(key.as_bytes()) {
                parse_pax_time(v)
                    .ok_or_else(|| fail(format!("PAX record {key}={} is not a time", quote(v))))?;
            }
        }
        if size < 0 {
            return Err(fail(format!("negative size {size}")));
        }
        let id = |what: &str, v: i64| -> Result<u32> {
            u32::try_from(v).map_err(|_| {
                fail(format!(
                    "{what} {v} is outside 0..=4294967295, the range of Linux {what}s"
                ))
            })
        };
        let uid = id("uid", uid)?;
        let gid = id("gid", gid)?;
        let kind = match raw.typeflag {
            b'0' | b'7' | b'S' => {
                if path.ends_with(b"/") {
                    return Err(fail(
                        "a regular file whose name ends with '/': tar readers disagree on \
                         whether it is a directory"
                            .into(),
                    ));
                }
                Kind::Regular
            }
            // Pre-POSIX archives mark directories with a trailing slash only.
            0 if path.ends_with(b"/") => Kind::Directory,
            0 => Kind::Regular,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            t => {
                return Err(fail(format!(
                    "unsupported entry type {} (containerd does not apply it either)",
                    typeflag_name(t)
                )))
            }
        };
        if kind != Kind::Regular && size != 0 {
            return Err(fail(format!(
                "a {} with {size} bytes of data: tar readers disagree on whether data follows \
                 its header",
                kind.name()
            )));
        }
        let (dev_major, dev_minor) = match kind {
            Kind::Char | Kind::Block => {
                // What Linux's dev_t holds (12 bits of major, 20 of minor).
                if !(0..=0xfff).contains(&raw.dev_major) || !(0..=0xfffff).contains(&raw.dev_minor)
                {
                    return Err(fail(format!(
                        "device number {}:{} is out of range (major at most 4095, minor at most \
                         1048575)",
                        raw.dev_major, raw.dev_minor
                    )));
                }
                (raw.dev_major as u32, raw.dev_minor as u32)
            }
            _ => (0, 0),
        };
        let xattrs = xattrs(pax).map_err(&fail)?;

        // Sparse files: the stored data is `size` bytes, the file longer.
        let mut stored = size as u64;
        let mut sparse = None;
        let mut real_size = size as u64;
        if raw.typeflag == b'S' {
            if !raw.gnu {
                return Err(fail(
                    "an old GNU sparse entry in a header that is not in GNU format".into(),
                ));
            }
            let (fragments, real) = self.old_gnu_sparse(blk, at, &fail)?;
            sparse = Some(fragments);
            real_size = real;
        } else if let Some(version) = sparse_version(pax).map_err(&fail)? {
            if kind != Kind::Regular {
                return Err(fail(format!("a sparse {}", kind.name())));
            }
            if let Some(n) = pax.get_nonempty(b"GNU.sparse.name") {
                path = n.to_vec();
            }
            let declared = pax
                .get_nonempty(b"GNU.sparse.size")
                .or_else(|| pax.get_nonempty(b"GNU.sparse.realsize"));
            if let Some(v) = declared {
                real_size = u64::try_from(int("GNU.sparse.size", v)?)
                    .map_err(|_| fail("negative sparse size".into()))?;
            }
            let fragments = if version == (1, 0) {
                let (map, used) = self.sparse_map_1_0(stored, at, &fail)?;
                stored -= used;
                map
            } else {
                sparse_map_0_1(pax).map_err(&fail)?
            };
            sparse = Some(fragments);
        }
        if let Some(fragments) = &sparse {
            let mut end = 0u64;
            let mut total = 0u64;
            for &(off, len) in fragments {
                let e = off
                    .checked_add(len)
                    .filter(|e| *e <= real_size && off >= end)
                    .ok_or_else(|| {
                        fail(
                            "sparse map out of order, overlapping or past the end of the file"
                                .into(),
                        )
                    })?;
                end = e;
                total += len;
            }
            if total != stored {
                return Err(fail(format!(
                    "the sparse map covers {total} bytes but the entry stores {stored}"
                )));
            }
            self.data = Data::Sparse {
                fragments: fragments.clone(),
                next: 0,
                pos: 0,
                size: real_size,
            };
        }
        self.stored_left = stored;
        self.pad = padding(size as u64);
        Ok(Entry {
            path,
            kind,
            mode: (raw.mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            size: if kind == Kind::Regular { real_size } else { 0 },
            link,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
            offset: start,
        })
    }

    /// The map of an old GNU sparse (`S`) entry: four fragments in the
    /// header, 21 in each extension block. Returns it and the real size.
    fn old_gnu_sparse(
        &mut self,
        blk: &[u8; BLOCK],
        at: u64,
        fail: &dyn Fn(String) -> Error,
    ) -> Result<(Vec<(u64, u64)>, u64)> {
        let real = parse_numeric(&blk[483..495])
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| fail("bad real size in the GNU sparse header".into()))?;
        let mut fragments = Vec::new();
        let mut push = |area: &[u8], count: usize| -> Result<()> {
            for i in 0..count {
                let e = &area[i * 24..(i + 1) * 24];
                // The termination rule of GNU tar, BSD tar and Go.
                if e[0] == 0 {
                    break;
                }
                let off = parse_numeric(&e[..12]);
                let len = parse_numeric(&e[12..]);
                match (off, len) {
                    (Some(o), Some(l)) if o >= 0 && l >= 0 => fragments.push((o as u64, l as u64)),
                    _ => return Err(fail("bad number in the GNU sparse map".into())),
                }
            }
            Ok(())
        };
        push(&blk[386..482], 4)?;
        let mut extended = blk[482] != 0;
        let mut map_bytes = BLOCK as u64;
        let mut ext = [0u8; BLOCK];
        while extended {
            map_bytes += BLOCK as u64;
            if map_bytes > MAX_SPECIAL {
                return Err(fail(format!(
                    "GNU sparse map longer than {MAX_SPECIAL} bytes"
                )));
            }
            if !self.read_block(&mut ext)? {
                return Err(bad(at, "the stream ends inside a GNU sparse map"));
            }
            push(&ext[..504], 21)?;
            extended = ext[504] != 0;
        }
        Ok((fragments, real))
    }

    /// The map of a PAX sparse 1.0 entry, which leads its data: decimal
    /// numbers, one per line, padded to a block. Returns it and its length.
    fn sparse_map_1_0(
        &mut self,
        stored: u64,
        at: u64,
        fail: &dyn Fn(String) -> Error,
    ) -> Result<(Vec<(u64, u64)>, u64)> {
        let mut text: Vec<u8> = Vec::new();
        let mut used = 0u64;
        let mut blk = [0u8; BLOCK];
        let mut need: Option<usize> = None;
        let mut newlines = 0usize;
        loop {
            if need.is_none() && newlines >= 1 {
                let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
                let n = parse_decimal(first)
                    .ok_or_else(|| fail("bad entry count in the sparse map".into()))?;
                need = Some(
                    usize::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_mul(2))
                        .and_then(|n| n.checked_add(1))
                        .ok_or_else(|| fail("bad entry count in the sparse map".into()))?,
                );
            }
            if need.is_some_and(|n| newlines >= n) {
                break;
            }
            used += BLOCK as u64;
            if used > MAX_SPECIAL || used > stored {
                return Err(fail(format!(
                    "sparse map longer than {} bytes",
                    MAX_SPECIAL.min(stored)
                )));
            }
            if !self.read_block(&mut blk)? {
                return Err(bad(at, "the stream ends inside a sparse map"));
            }
            newlines += blk.iter().filter(|b| **b == b'\n').count();
            text.extend_from_slice(&blk);
        }
        let mut lines = text.split(|b| *b == b'\n').skip(1);
        let count = need.unwrap_or(1) / 2;
        let mut fragments = Vec::with_capacity(count);
        for _ in 0..count {
            let mut next = || {
                lines
                    .next()
                    .and_then(parse_decimal)
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| fail("bad number in the sparse map".into()))
            };
            let off = next()?;
            let len = next()?;
            fragments.push((off, len));
        }
        Ok((fragments, used))
    }

    /// Reads the current entry's stored data: a sparse file's fragments one
    /// after the other, without the holes. Returns 0 at its end.
    pub fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = (buf.len() as u64).min(self.stored_left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact(&mut buf[..n], What::Data)?;
        self.stored_left -= n as u64;
        Ok(n)
    }

    /// Reads the current entry's data (a sparse file's holes as zeros).
    /// Returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        match &mut self.data {
            Data::Plain => self.read_stored(buf),
            Data::Sparse {
                fragments,
                next,
                pos,
                size,
            } => {
                if *pos >= *size || buf.is_empty() {
                    return Ok(0);
                }
                while *next < fragments.len() && fragments[*next].0 + fragments[*next].1 <= *pos {
                    *next += 1;
                }
                let (n, data) = match fragments.get(*next) {
                    Some(&(off, len)) if *pos >= off => (off + len - *pos, true),
                    Some(&(off, _)) => (off - *pos, false),
                    None => (*size - *pos, false),
                };
                let n = n.min(buf.len() as u64) as usize;
                *pos += n as u64;
                if data {
                    self.read_exact(&mut buf[..n], What::Data)?;
                    self.stored_left -= n as u64;
                } else {
                    buf[..n].fill(0);
                }
                Ok(n)
            }
        }
    }
}

fn read_error(e: io::Error, offset: u64) -> Error {
    let e = match crate::error::uncarry(e) {
        Ok(ours) => return ours,
        Err(e) => e,
    };
    match e.kind() {
        // Decompression errors surface as these from the decoders.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            Error::invalid_argument(format!(
                "layer data is corrupt or truncated at tar byte {offset}: {e}"
            ))
        }
        _ => Error::internal(format!("read layer at tar byte {offset}: {e}")),
    }
}

fn typeflag_name(t: u8) -> String {
    if t.is_ascii_graphic() {
        format!("'{}'", t as char)
    } else {
        format!("0x{t:02x}")
    }
}

pub(crate) fn padding(n: u64) -> u64 {
    n.wrapping_neg() & (BLOCK as u64 - 1)
}

/// A C string field: up to the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |i| &b[..i])
}

/// Go's `parseOctal`: spaces and NULs trimmed at both ends, cut at a NUL,
/// then octal digits only. `None` for anything else.
fn parse_octal(b: &[u8]) -> Option<i64> {
    let start = b.iter().position(|c| *c != b' ' && *c != 0);
    let Some(start) = start else {
        return Some(0);
    };
    let end = b
        .iter()
        .rposition(|c| *c != b' ' && *c != 0)
        .unwrap_or(start)
        + 1;
    let s = cstr(&b[start..end]);
    if s.is_empty() || !s.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    let mut v: u64 = 0;
    for c in s {
        v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    i64::try_from(v).ok()
}

/// Go's `parseNumeric`: GNU base-256 (two's complement, big endian, the top
/// bit of the first byte set) or octal.
fn parse_numeric(b: &[u8]) -> Option<i64> {
    if b.first().is_some_and(|c| c & 0x80 != 0) {
        let inv: u8 = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    parse_octal(b)
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
fn parse_decimal(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(want) = parse_octal(&h[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

fn parse_header(h: &[u8; BLOCK], at: u64) -> Result<Raw> {
    if !checksum_ok(h) {
        return Err(bad(
            at,
            "header checksum mismatch (not a tar stream, or compressed data declared as plain tar?)",
        ));
    }
    let magic = &h[257..263];
    let version = &h[263..265];
    let (ustar, star, gnu) = match (magic, version) {
        (b"ustar\0", _) if &h[508..512] == b"tar\0" => (true, true, false),
        (b"ustar\0", _) => (true, false, false),
        (b"ustar ", b" \0") => (false, false, true),
        _ => (false, false, false),
    };
    let field = |range: std::ops::Range<usize>, name: &str| {
        parse_numeric(&h[range]).ok_or_else(|| bad(at, format!("bad {name} field in a tar header")))
    };
    let mut name = cstr(&h[..100]).to_vec();
    let mut raw = Raw {
        typeflag: h[156],
        name: Vec::new(),
        link: cstr(&h[157..257]).to_vec(),
        size: field(124..136, "size")?,
        mode: field(100..108, "mode")?,
        uid: field(108..116, "uid")?,
        gid: field(116..124, "gid")?,
        mtime: field(136..148, "mtime")?,
        dev_major: 0,
        dev_minor: 0,
        gnu,
    };
    if ustar || gnu {
        raw.dev_major = field(329..337, "devmajor")?;
        raw.dev_minor = field(337..345, "devminor")?;
    }
    let prefix: &[u8] = if star {
        // star keeps times after a 131-byte prefix; readers that do not know
        // star read 155 bytes. Refuse what they would read differently.
        let p = cstr(&h[345..476]);
        if p.len() == 131 {
            return Err(bad(
                at,
                "a star header whose name prefix runs into its time fields",
            ));
        }
        p
    } else if ustar {
        cstr(&h[345..500])
    } else {
        if gnu {
            // Go reads the prefix field here if the GNU times do not parse;
            // GNU tar never does. Refuse what they read differently.
            for range in [345..357, 357..369] {
                if h[range.start] != 0 && parse_numeric(&h[range]).is_none() {
                    return Err(bad(
                        at,
                        "a GNU header with unreadable time fields (readers disagree on whether \
                         they are a name prefix)",
                    ));
                }
            }
        }
        b""
    };
    if !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(&name);
        name = full;
    }
    raw.name = name;
    Ok(raw)
}

/// Go's `parsePAX`: `"%d %s=%s\n"` records, each counting its own length.
fn parse_pax(data: &[u8], at: u64) -> Result<Pax> {
    let mut pax = Pax::default();
    let mut rest = data;
    while !rest.is_empty() {
        let err = || bad(at, "malformed PAX record");
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(err)?;
        let n = parse_decimal(&rest[..sp]).ok_or_else(err)?;
        if n < 5 || n as usize > rest.len() || n as usize <= sp + 1 {
            return Err(err());
        }
        let n = n as usize;
        if rest[n - 1] != b'\n' {
            return Err(err());
        }
        let rec = &rest[sp + 1..n - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or_else(err)?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        let value_may_have_nul = !matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || key.contains(&0) || (!value_may_have_nul && value.contains(&0)) {
            return Err(err());
        }
        match key {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let want: &[u8] = if pax.sparse_map.len() % 2 == 0 {
                    b"GNU.sparse.offset"
                } else {
                    b"GNU.sparse.numbytes"
                };
                if key != want || value.contains(&b',') {
                    return Err(bad(at, "malformed PAX sparse 0.0 map"));
                }
                pax.sparse_map.push(value.to_vec());
            }
            _ => pax.records.push((key.to_vec(), value.to_vec())),
        }
        rest = &rest[n..];
    }
    if !pax.sparse_map.is_empty() {
        let joined = pax.sparse_map.join(&b',');
        pax.records.push((b"GNU.sparse.map".to_vec(), joined));
    }
    Ok(pax)
}

/// A global PAX header may only carry records that change no entry: readers
/// disagree on whether the others apply (Go ignores them, GNU tar and
/// mkfs.erofs apply them).
fn check_global(pax: &Pax, at: u64) -> Result<()> {
    for (k, _) in &pax.records {
        if !matches!(k.as_slice(), b"comment" | b"charset" | b"hdrcharset") {
            return Err(bad(
                at,
                format!(
                    "a global PAX header sets {}: tar readers disagree on whether it applies to \
                     the entries that follow",
                    quote(k)
                ),
            ));
        }
    }
    Ok(())
}

/// Go's `parsePAXTime`: `[-]secs[.fraction]`, the fraction read as up to 9
/// digits of nanoseconds (more are ignored), negative times as Go does.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Time> {
    let (secs, frac) = match v.iter().position(|b| *b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    let s = parse_decimal(secs)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut digits = *b"000000000";
    for (i, d) in frac.iter().take(9).enumerate() {
        digits[i] = *d;
    }
    let ns = i128::from(parse_decimal(&digits)?);
    let total = i128::from(s) * 1_000_000_000 + if secs.first() == Some(&b'-') { -ns } else { ns };
    Time::from_nanos(total)
}

fn xattrs(pax: &Pax) -> Result<Xattrs, String> {
    let mut out: Xattrs = Vec::new();
    // Later records override earlier ones with the same key.
    let mut seen = std::collections::HashSet::new();
    let mut schily: Xattrs = Vec::new();
    let mut libarchive: Xattrs = Vec::new();
    for (k, v) in pax.records.iter().rev() {
        if !seen.insert(k.clone()) {
            continue;
        }
        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
            schily.push((name.to_vec(), v.clone()));
        } else if let Some(enc) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
            let name = url_decode(enc)
                .ok_or_else(|| format!("PAX record {} has a malformed name", quote(k)))?;
            let value = base64_decode(v)
                .ok_or_else(|| format!("PAX record {} has a value that is not base64", quote(k)))?;
            libarchive.push((name, value));
        }
    }
    for (name, value) in schily.into_iter().rev() {
        out.push((name, value));
    }
    // libarchive writes both forms; they must agree.
    for (name, value) in libarchive.into_iter().rev() {
        match out.iter().find(|(n, _)| *n == name) {
            Some((_, v)) if *v == value => {}
            Some(_) => {
                return Err(format!(
                    "the SCHILY and LIBARCHIVE records of xattr {} differ",
                    quote(&name)
                ))
            }
            None => out.push((name, value)),
        }
    }
    for (name, _) in &out {
        if name.is_empty() {
            return Err("an xattr with an empty name".into());
        }
    }
    Ok(out)
}

fn url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64 (RFC 4648), padding optional, as libarchive writes it.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The GNU sparse PAX version of an entry: `None` if not sparse. Unknown
/// versions are refused (Go reads them as plain files, GNU tar does not).
fn sparse_version(pax: &Pax) -> Result<Option<(u8, u8)>, String> {
    let major = pax.get(b"GNU.sparse.major").unwrap_or_default();
    let minor = pax.get(b"GNU.sparse.minor").unwrap_or_default();
    Ok(match (major, minor) {
        (b"0", b"0") => Some((0, 0)),
        (b"0", b"1") => Some((0, 1)),
        (b"1", b"0") => Some((1, 0)),
        (b"", b"") if pax.get_nonempty(b"GNU.sparse.map").is_some() => Some((0, 1)),
        (b"", b"") => None,
        (a, b) => {
            return Err(format!(
                "unknown GNU sparse format version {}.{}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            ))
        }
    })
}

/// Go's `readGNUSparseMap0x1`: `GNU.sparse.numblocks` pairs in `GNU.sparse.map`.
fn sparse_map_0_1(pax: &Pax) -> Result<Vec<(u64, u64)>, String> {
    let count = pax
        .get(b"GNU.sparse.numblocks")
        .and_then(parse_decimal)
        .filter(|n| *n >= 0)
        .ok_or("missing or bad GNU.sparse.numblocks")?;
    let map = pax.get(b"GNU.sparse.map").unwrap_or_default();
    let nums: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|b| *b == b',').collect()
    };
    if nums.len() as u64 != 2 * count as u64 {
        return Err(format!(
            "GNU.sparse.map has {} numbers for {count} fragments",
            nums.len()
        ));
    }
    nums.chunks(2)
        .map(|c| {
            let n = |b: &[u8]| parse_decimal(b).and_then(|v| u64::try_from(v).ok());
            match (n(c[0]), n(c[1])) {
                (Some(o), Some(l)) => Ok((o, l)),
                _ => Err("bad number in GNU.sparse.map".to_string()),
            }
        })
        .collect()
}

// ---- writing -------------------------------------------------------------

/// A PAX record (`"<len> <key>=<value>\n"`, the length counting itself).
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn put_octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

fn fits_octal(field_len: usize, v: u64) -> bool {
    v < 1u64 << (3 * (field_len - 1))
}

fn set_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
}

/// Writes the header(s) of `e` in the form mkfs.erofs reads exactly: a
/// ustar header, preceded by a PAX header for what does not fit in it.
/// mkfs.erofs reads a PAX `mtime` fraction as a count of nanoseconds, so it
/// is always written with 9 digits, after the seconds rounded down. The
/// caller writes `e.size` bytes of data and [`padding`] after it.
pub(crate) fn write_header(out: &mut dyn Write, e: &Entry) -> io::Result<()> {
    let mut records = Vec::new();
    if e.path.len() > 100 {
        pax_record(&mut records, b"path", &e.path);
    }
    if e.link.len() > 100 {
        pax_record(&mut records, b"linkpath", &e.link);
    }
    if !fits_octal(12, e.size) {
        pax_record(&mut records, b"size", e.size.to_string().as_bytes());
    }
    if !fits_octal(8, u64::from(e.uid)) {
        pax_record(&mut records, b"uid", e.uid.to_string().as_bytes());
    }
    if !fits_octal(8, u64::from(e.gid)) {
        pax_record(&mut records, b"gid", e.gid.to_string().as_bytes());
    }
    let header_mtime = u64::try_from(e.mtime.secs)
        .ok()
        .filter(|s| fits_octal(12, *s));
    if e.mtime.nanos != 0 || header_mtime.is_none() {
        let v = format!("{}.{:09}", e.mtime.secs, e.mtime.nanos);
        pax_record(&mut records, b"mtime", v.as_bytes());
    }
    for (name, value) in &e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax_record(&mut records, &key, value);
    }
    if !records.is_empty() {
        let mut x = [0u8; BLOCK];
        let xname = b"PaxHeaders/entry";
        x[..xname.len()].copy_from_slice(xname);
        put_octal(&mut x[100..108], 0o644);
        put_octal(&mut x[108..116], 0);
        put_octal(&mut x[116..124], 0);
        put_octal(&mut x[124..136], records.len() as u64);
        put_octal(&mut x[136..148], 0);
        x[156] = b'x';
        x[257..263].copy_from_slice(b"ustar\0");
        x[263..265].copy_from_slice(b"00");
        set_checksum(&mut x);
        out.write_all(&x)?;
        let pad = padding(records.len() as u64) as usize;
        records.resize(records.len() + pad, 0);
        out.write_all(&records)?;
    }
    let mut h = [0u8; BLOCK];
    let n = e.path.len().min(100);
    h[..n].copy_from_slice(&e.path[..n]);
    put_octal(&mut h[100..108], u64::from(e.mode & 0o7777));
    put_octal(&mut h[108..116], u64::from(e.uid).min(0o7777777));
    put_octal(&mut h[116..124], u64::from(e.gid).min(0o7777777));
    put_octal(&mut h[124..136], e.size.min(0o77777777777));
    put_octal(&mut h[136..148], header_mtime.unwrap_or(0));
    h[156] = e.kind.typeflag();
    let n = e.link.len().min(100);
    h[157..157 + n].copy_from_slice(&e.link[..n]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_octal(&mut h[329..337], u64::from(e.dev_major));
    put_octal(&mut h[337..345], u64::from(e.dev_minor));
    set_checksum(&mut h);
    out.write_all(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block with the given fields (ustar magic), checksummed.
    fn block(name: &[u8], typeflag: u8, size: &[u8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..124 + size.len()].copy_from_slice(size);
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        h
    }

    fn pax_block(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in records {
            pax_record(&mut data, k, v);
        }
        let size = format!("{:011o}\0", data.len());
        let mut out = block(b"PaxHeaders/x", b'x', size.as_bytes()).to_vec();
        out.extend_from_slice(&data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    fn entries(data: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut content = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                content.extend_from_slice(&buf[..n]);
            }
            out.push((e, content));
        }
        Ok(out)
    }

    #[test]
    fn numbers_as_go_parses_them() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"   644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"644\0junk"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"64 4\0"), None);
        assert_eq!(parse_octal(b"0009\0"), None);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
            Some(65536)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn pax_times_as_go_parses_them() {
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some(Time {
                secs: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.5"),
            Some(Time {
                secs: -2,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.1234567891"),
            Some(Time {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b" 1"), None);
    }

    #[test]
    fn pax_size_overrides_the_header() {
        // The header says 0 bytes; PAX says 1536: the 1536 bytes are data,
        // even when they look like a header.
        let mut tar = pax_block(&[(b"size", b"1536")]);
        tar.extend_from_slice(&block(b"big", b'0', b"00000000000\0"));
        let hidden = block(b"etc/passwd", b'0', b"00000002000\0");
        tar.extend_from_slice(&hidden);
        tar.extend_from_slice(&[b'x'; 1024]);
        tar.extend_from_slice(&[0u8; 1024]);
        let got = entries(&tar).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.path, b"big");
        assert_eq!(got[0].0.size, 1536);
        assert_eq!(&got[0].1[..512], &hidden[..]);
    }

    #[test]
    fn what_readers_disagree_on_is_refused() {
        let end = [0u8; 1024];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("two PAX", {
                let mut t = pax_block(&[(b"path", b"a")]);
                t.extend(pax_block(&[(b"path", b"b")]));
                t.extend_from_slice(&block(b"c", b'0', b"0\0"));
                t
            }),
            ("lone zero", {
                let mut t = block(b"a", b'0', b"0\0").to_vec();
                t.extend_from_slice(&[0u8; 512]);
                t.extend_from_slice(&block(b"b", b'0', b"0\0"));
                t
            }),
            ("data follows", {
                let mut t = block(b"d/", b'5', b"00000001000\0").to_vec();
                t.extend_from_slice(&[0u8; 512]);
                t
            }),
            ("global header", {
                let mut t = pax_block(&[(b"size", b"5")]);
                t[156] = b'g';
                let mut h: [u8; BLOCK] = t[..BLOCK].try_into().unwrap();
                set_checksum(&mut h);
                t[..BLOCK].copy_from_slice(&h);
                t
            }),
            ("unknown type", block(b"v", b'V', b"0\0").to_vec()),
            (
                "file named like a directory",
                block(b"f/", b'0', b"0\0").to_vec(),
            ),
            ("dangling extended header", pax_block(&[(b"path", b"x")])),
        ];
        for (what, mut tar) in cases {
            tar.extend_from_slice(&end);
            let e = entries(&tar).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{what}: {e}");
        }
    }

    #[test]
    fn extended_headers_are_bounded() {
        let mut tar = block(b"././@LongLink", b'L', b"00010000001\0").to_vec();
        tar.extend_from_slice(&[b'a'; 4096]);
        let e = entries(&tar).unwrap_err();
        assert!(e.message().contains("at most 1048576"), "{e}");
    }

    #[test]
    fn ids_past_32_bits_are_refused() {
        let mut tar = pax_block(&[(b"uid", b"1099511627781")]);
        tar.extend_from_slice(&block(b"f", b'0', b"0\0"));
        tar.extend_from_slice(&[0u8; 1024]);
        let e = entries(&tar).unwrap_err();
        assert!(e.message().contains("uid 1099511627781"), "{e}");
    }

    #[test]
    fn libarchive_xattrs_are_decoded() {
        let mut tar = pax_block(&[
            (b"LIBARCHIVE.xattr.user.la%3Dname", b"bGEtdmFsdWU="),
            (b"SCHILY.xattr.user.s", b"v\0bin"),
        ]);
        tar.extend_from_slice(&block(b"f", b'0', b"0\0"));
        tar.extend_from_slice(&[0u8; 1024]);
        let got = entries(&tar).unwrap();
        assert_eq!(
            got[0].0.xattrs,
            vec![
                (b"user.s".to_vec(), b"v\0bin".to_vec()),
                (b"user.la=name".to_vec(), b"la-value".to_vec())
            ]
        );
    }

    #[test]
    fn base64_round_trips() {
        for (enc, dec) in [
            (&b""[..], &b""[..]),
            (b"YQ==", b"a"),
            (b"YWI=", b"ab"),
            (b"YWJj", b"abc"),
            (b"YWJjZA", b"abcd"),
        ] {
            assert_eq!(base64_decode(enc).as_deref(), Some(dec));
        }
        assert_eq!(base64_decode(b"Y"), None);
        assert_eq!(base64_decode(b"Y*=="), None);
    }

    #[test]
    fn written_headers_read_back() {
        let mut e = Entry::new(vec![b'p'; 150], Kind::Regular);
        e.size = 9 << 30;
        e.uid = 1 << 30;
        e.gid = 7;
        e.mtime = Time {
            secs: 1_700_000_000,
            nanos: 5,
        };
        e.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        let mut out = Vec::new();
        write_header(&mut out, &e).unwrap();
        let mut r = Reader::new(&out[..]);
        let got = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (got.path, got.size, got.uid, got.gid, got.mtime, got.xattrs),
            (e.path, e.size, e.uid, e.gid, e.mtime, e.xattrs)
        );
    }
}
