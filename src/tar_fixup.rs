//! Rewrites an OCI layer tar stream on its way to `mkfs.erofs --tar --aufs`,
//! where converting each layer on its own gets stacked trees wrong:
//!
//! - A layer that adds `a/b/file` without entries for `a` and `a/b` gets
//!   invented directories (0777 and root-owned here; 0755 in other versions),
//!   and overlayfs shows the upper layer's directory attributes. We emit
//!   explicit entries that copy the attributes (mode, owner, times, non-trusted
//!   xattrs) the directory has in the layers below, as containerd's walking
//!   differ does (`mkparent`: the first lower that has the path decides, a
//!   non-directory there means "replaced", defaults 0755 root).
//! - `.wh.X` and a new directory `X/` in the same layer: the whiteout applies
//!   to the lower layers only (OCI image spec), so the new `X/` must be opaque.
//!   We add `X/.wh..wh..opq`; a whiteout after `X` was created in this layer
//!   becomes that marker (for a directory) or is dropped (anything else).
//! - PAX `mtime`/`atime`/`ctime` with a fraction shorter than 9 digits are
//!   read by mkfs.erofs as nanoseconds ("1.5" -> 1 s 5 ns): we pad them.
//!
//! Everything else (file data, sparse maps, long names, links, xattrs) passes
//! through byte for byte.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

const BLOCK: usize = 512;
const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// Attributes given to a directory the layer does not describe itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The lower layers' directories (mounted layer roots), top-most first.
pub(crate) struct Lowers {
    pub dirs: Vec<PathBuf>,
    pub now_ns: i64,
}

impl Lowers {
    fn default_attrs(&self) -> DirAttrs {
        DirAttrs {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: self.now_ns,
            xattrs: Vec::new(),
        }
    }

    /// The attributes of directory `rel` in the first lower that has it.
    fn lookup(&self, rel: &[u8]) -> Result<Option<DirAttrs>> {
        for dir in &self.dirs {
            let path = if rel.is_empty() {
                dir.clone()
            } else {
                dir.join(OsStr::from_bytes(rel))
            };
            match std::fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {
                    return Ok(Some(DirAttrs {
                        mode: md.mode() & 0o7777,
                        uid: md.uid(),
                        gid: md.gid(),
                        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                        xattrs: copyable_xattrs(&path)
                            .map_err(|e| Error::io("read xattrs of", &path, e))?,
                    }))
                }
                // Replaced by something else: its attributes do not apply.
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(Error::io("stat", &path, e)),
            }
        }
        Ok(None)
    }
}

/// Extended attributes a directory's copy takes along: not `trusted.*`
/// (overlayfs's own, and privileged), as containerd's `copyUpXAttrs`.
fn copyable_xattrs(path: &std::path::Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut names = vec![0u8; 4096];
    // SAFETY: buffer and length match.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) | Some(libc::ENODATA) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.") {
            continue;
        }
        let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut value = vec![0u8; 65536];
        // SAFETY: buffer and length match.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

fn corrupt(offset: u64, what: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!(
        "corrupt or truncated layer tar at byte {offset}: {what}"
    ))
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the top bit of the first byte is the marker.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| *b != b' ' && *b != 0)
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(want) = parse_octal(&h[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want as i64 == signed
}

fn set_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn put_octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    if s.len() <= width {
        field[..width].copy_from_slice(s.as_bytes());
        field[width] = 0;
    } else {
        // base-256 for values that do not fit
        field.fill(0);
        let mut v = v;
        for b in field.iter_mut().rev() {
            *b = (v & 0xff) as u8;
            v >>= 8;
        }
        field[0] |= 0x80;
    }
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// `key=value` records of a PAX extended header, in order.
fn parse_pax(data: &[u8], offset: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| corrupt(offset, "PAX record without a length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(offset, "bad PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(corrupt(offset, "bad PAX record"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| corrupt(offset, "PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// "1700000000.5" -> "1700000000.500000000": mkfs.erofs reads the fraction
/// as a count of nanoseconds.
fn pad_fraction(v: &[u8]) -> Option<Vec<u8>> {
    let dot = v.iter().position(|b| *b == b'.')?;
    let frac = &v[dot + 1..];
    if frac.len() == 9 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = v[..=dot].to_vec();
    if frac.len() > 9 {
        out.extend_from_slice(&frac[..9]);
    } else {
        out.extend_from_slice(frac);
        out.resize(dot + 1 + 9, b'0');
    }
    Some(out)
}

/// Normalizes a tar path: no leading `./` or `/`, no trailing `/`; the root is
/// empty. `..` components are refused: an entry must stay inside the layer.
fn normalize(path: &[u8], offset: u64) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(corrupt(
                    offset,
                    format!(
                        "entry {:?} leaves the layer root",
                        String::from_utf8_lossy(path)
                    ),
                ))
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => &rel[..i],
        None => b"",
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// The stream rewriter. `out` receives the rewritten tar.
pub(crate) struct Fixup<'a, W: Write> {
    out: W,
    lowers: &'a Lowers,
    /// Paths this layer has created so far: true for directories.
    in_layer: HashMap<Vec<u8>, bool>,
    /// Targets of whiteouts seen in this layer.
    whited: HashSet<Vec<u8>>,
    /// Directories of this layer whose lower contents are hidden.
    opaque: HashSet<Vec<u8>>,
    offset: u64,
}

impl<'a, W: Write> Fixup<'a, W> {
    pub fn new(out: W, lowers: &'a Lowers) -> Fixup<'a, W> {
        Fixup {
            out,
            lowers,
            in_layer: HashMap::new(),
            whited: HashSet::new(),
            opaque: HashSet::new(),
            offset: 0,
        }
    }

    fn read_block<R: Read>(&mut self, r: &mut R, buf: &mut [u8; BLOCK]) -> Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, self.offset)),
            }
        }
        if got == 0 {
            return Ok(false);
        }
        if got < BLOCK {
            return Err(corrupt(
                self.offset + got as u64,
                "the stream ends inside a 512-byte block",
            ));
        }
        self.offset += BLOCK as u64;
        Ok(true)
    }

    fn read_data<R: Read>(&mut self, r: &mut R, size: u64) -> Result<Vec<u8>> {
        if size > 64 << 20 {
            return Err(corrupt(
                self.offset,
                format!("extended header of {size} bytes"),
            ));
        }
        let mut data = vec![0u8; padded(size) as usize];
        r.read_exact(&mut data)
            .map_err(|e| read_error(e, self.offset))?;
        self.offset += data.len() as u64;
        data.truncate(size as usize);
        Ok(data)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(write_error)
    }

    fn copy_data<R: Read>(&mut self, r: &mut R, size: u64) -> Result<()> {
        let mut left = padded(size);
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])
                .map_err(|e| read_error(e, self.offset))?;
            self.offset += n as u64;
            self.out.write_all(&buf[..n]).map_err(write_error)?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Rewrites the whole stream; returns the writer. Input after the
    /// end-of-archive marker is left unread.
    pub fn run<R: Read>(mut self, mut input: R) -> Result<W> {
        let mut hdr = [0u8; BLOCK];
        // Extended headers that belong to the next entry, as written.
        let mut pending: Vec<u8> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let at = self.offset;
            if !self.read_block(&mut input, &mut hdr)? {
                // No end-of-archive marker: accepted, as Go's and GNU tar do.
                break;
            }
            if hdr.iter().all(|b| *b == 0) {
                break;
            }
            if !checksum_ok(&hdr) {
                return Err(corrupt(at, "header checksum mismatch (not a tar stream, or compressed data declared as plain tar?)"));
            }
            let size = parse_octal(&hdr[124..136]).ok_or_else(|| corrupt(at, "bad size field"))?;
            let typeflag = hdr[156];
            match typeflag {
                b'x' => {
                    let data = self.read_data(&mut input, size)?;
                    let mut records = parse_pax(&data, at)?;
                    let mut changed = false;
                    for (k, v) in records.iter_mut() {
                        if matches!(k.as_slice(), b"mtime" | b"atime" | b"ctime") {
                            if let Some(p) = pad_fraction(v) {
                                *v = p;
                                changed = true;
                            }
                        }
                    }
                    // PAX sparse 1.0 keeps the real name apart from `path`.
                    let name = records
                        .iter()
                        .find(|(k, _)| k == b"GNU.sparse.name")
                        .or_else(|| records.iter().find(|(k, _)| k == b"path"));
                    if let Some((_, v)) = name {
                        pax_path = Some(v.clone());
                    }
                    let body = if changed {
                        records.iter().flat_map(|(k, v)| pax_record(k, v)).collect()
                    } else {
                        data
                    };
                    pax.extend(records);
                    let mut h = hdr;
                    put_octal(&mut h[124..136], body.len() as u64);
                    set_checksum(&mut h);
                    pending.extend_from_slice(&h);
                    pending.extend_from_slice(&body);
                    pending.resize(padded(pending.len() as u64) as usize, 0);
                }
                b'L' => {
                    let data = self.read_data(&mut input, size)?;
                    let name: Vec<u8> = data.split(|b| *b == 0).next().unwrap_or(&[]).to_vec();
                    long_name = Some(name);
                    pending.extend_from_slice(&hdr);
                    pending.extend_from_slice(&data);
                    pending.resize(padded(pending.len() as u64) as usize, 0);
                }
                b'K' | b'g' => {
                    let data = self.read_data(&mut input, size)?;
                    pending.extend_from_slice(&hdr);
                    pending.extend_from_slice(&data);
                    pending.resize(padded(pending.len() as u64) as usize, 0);
                }
                _ => {
                    let raw_name = match pax_path.take().or_else(|| long_name.take()) {
                        Some(n) => n,
                        None => ustar_name(&hdr),
                    };
                    let is_dir = typeflag == b'5'
                        || ((typeflag == b'0' || typeflag == 0) && raw_name.ends_with(b"/"));
                    let rel = normalize(&raw_name, at)?;
                    let pending = std::mem::take(&mut pending);
                    let pax = std::mem::take(&mut pax);
                    if typeflag == b'S' || pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
                        self.densify(&mut input, &hdr, &pax, &raw_name, &rel, size)?;
                    } else {
                        self.entry(&mut input, &hdr, pending, &rel, is_dir, size)?;
                    }
                }
            }
        }
        self.write(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }

    fn entry<R: Read>(
        &mut self,
        input: &mut R,
        hdr: &[u8; BLOCK],
        pending: Vec<u8>,
        rel: &[u8],
        is_dir: bool,
        size: u64,
    ) -> Result<()> {
        if !rel.is_empty() {
            self.ensure_parents(rel)?;
        }
        let name = &rel[rel.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1)..];
        if name.starts_with(WHITEOUT) && name != OPAQUE {
            let target = join(parent_of(rel), &name[WHITEOUT.len()..]);
            match self.in_layer.get(&target) {
                // The whiteout hides lower layers only: what this layer made stays.
                Some(true) => {
                    self.skip_entry(input, size)?;
                    self.opaque.insert(target.clone());
                    return self.emit_marker(&target);
                }
                Some(false) => return self.skip_entry(input, size),
                None => {
                    self.whited.insert(target);
                }
            }
        } else if name == OPAQUE {
            self.opaque.insert(parent_of(rel).to_vec());
        }
        self.write(&pending)?;
        self.write(hdr)?;
        self.copy_data(input, size)?;
        self.in_layer.insert(rel.to_vec(), is_dir);
        if is_dir && self.whited.contains(rel) && self.opaque.insert(rel.to_vec()) {
            self.emit_marker(rel)?;
        }
        Ok(())
    }

    /// Skips a dropped entry's data (sparse entries never get here: they
    /// go to `densify`).
    fn skip_entry<R: Read>(&mut self, input: &mut R, size: u64) -> Result<()> {
        let mut sink = io::sink();
        let mut left = padded(size);
        let mut take = input.take(left);
        let n = io::copy(&mut take, &mut sink).map_err(|e| read_error(e, self.offset))?;
        self.offset += n;
        left -= n;
        if left != 0 {
            return Err(corrupt(self.offset, "the stream ends inside an entry"));
        }
        Ok(())
    }

    /// A sparse file (old GNU `S` entries, PAX sparse 0.0, 0.1, 1.0), which
    /// mkfs.erofs drops or mangles: re-emitted as a regular file with its
    /// holes filled, as the walking differ writes it.
    fn densify<R: Read>(
        &mut self,
        input: &mut R,
        hdr: &[u8; BLOCK],
        pax: &[(Vec<u8>, Vec<u8>)],
        raw_name: &[u8],
        rel: &[u8],
        size: u64,
    ) -> Result<()> {
        let at = self.offset;
        let get = |key: &[u8]| {
            pax.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };
        let num = |v: &[u8]| -> Result<u64> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| corrupt(at, "bad number in a sparse map"))
        };
        let mut segments: Vec<(u64, u64)> = Vec::new();
        let mut map_bytes = 0u64;
        let realsize;
        if hdr[156] == b'S' {
            let mut push = |field: &[u8]| {
                if field.iter().any(|b| *b != 0) {
                    let off = parse_octal(&field[..12]);
                    let len = parse_octal(&field[12..24]);
                    if let (Some(o), Some(l)) = (off, len) {
                        segments.push((o, l));
                    }
                }
            };
            for i in 0..4 {
                push(&hdr[386 + i * 24..386 + (i + 1) * 24]);
            }
            let mut extended = hdr[482] != 0;
            let mut blk = [0u8; BLOCK];
            while extended {
                if !self.read_block(input, &mut blk)? {
                    return Err(corrupt(self.offset, "missing sparse extension header"));
                }
                for i in 0..21 {
                    push(&blk[i * 24..(i + 1) * 24]);
                }
                extended = blk[504] != 0;
            }
            realsize =
                parse_octal(&hdr[483..495]).ok_or_else(|| corrupt(at, "bad sparse real size"))?;
        } else if get(b"GNU.sparse.major") == Some(b"1") {
            realsize = num(get(b"GNU.sparse.realsize")
                .ok_or_else(|| corrupt(at, "PAX sparse 1.0 without realsize"))?)?;
            // The map leads the data: decimal lines, padded to a block.
            let mut text = Vec::new();
            let mut lines_needed: Option<u64> = None;
            let mut blk = [0u8; BLOCK];
            loop {
                if !self.read_block(input, &mut blk)? {
                    return Err(corrupt(self.offset, "the stream ends inside a sparse map"));
                }
                map_bytes += BLOCK as u64;
                text.extend_from_slice(&blk);
                let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
                let complete = lines.len() - 1;
                if lines_needed.is_none() && complete >= 1 {
                    lines_needed = Some(1 + 2 * num(lines[0])?);
                }
                if let Some(n) = lines_needed {
                    if complete as u64 >= n {
                        let nums = lines[1..n as usize]
                            .iter()
                            .map(|l| num(l))
                            .collect::<Result<Vec<u64>>>()?;
                        segments = nums.chunks(2).map(|c| (c[0], c[1])).collect();
                        break;
                    }
                }
                if map_bytes > 64 << 20 {
                    return Err(corrupt(at, "sparse map too large"));
                }
            }
        } else if let Some(map) = get(b"GNU.sparse.map") {
            realsize = num(get(b"GNU.sparse.size")
                .ok_or_else(|| corrupt(at, "PAX sparse 0.1 without size"))?)?;
            let nums = map
                .split(|b| *b == b',')
                .filter(|p| !p.is_empty())
                .map(num)
                .collect::<Result<Vec<u64>>>()?;
            if nums.len() % 2 != 0 {
                return Err(corrupt(at, "odd sparse map"));
            }
            segments = nums.chunks(2).map(|c| (c[0], c[1])).collect();
        } else {
            realsize = num(get(b"GNU.sparse.size")
                .ok_or_else(|| corrupt(at, "PAX sparse 0.0 without size"))?)?;
            let offsets = pax
                .iter()
                .filter(|(k, _)| k == b"GNU.sparse.offset")
                .map(|(_, v)| num(v));
            let lengths = pax
                .iter()
                .filter(|(k, _)| k == b"GNU.sparse.numbytes")
                .map(|(_, v)| num(v));
            for (o, l) in offsets.zip(lengths) {
                segments.push((o?, l?));
            }
        }
        let stored: u64 = segments.iter().map(|s| s.1).sum();
        if stored + map_bytes != size {
            return Err(corrupt(
                at,
                format!(
                    "sparse map covers {stored} bytes but the entry stores {}",
                    size - map_bytes.min(size)
                ),
            ));
        }
        let mut end = 0;
        for &(o, l) in &segments {
            if o < end || o.checked_add(l).is_none_or(|e| e > realsize) {
                return Err(corrupt(at, "sparse segments out of order or past the end"));
            }
            end = o + l;
        }
        // The real name: GNU.sparse.name (0.1, 1.0), else what the header says.
        let name = get(b"GNU.sparse.name")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| raw_name.to_vec());
        let rel = if get(b"GNU.sparse.name").is_some() {
            normalize(&name, at)?
        } else {
            rel.to_vec()
        };
        if !rel.is_empty() {
            self.ensure_parents(&rel)?;
        }
        let mut records = Vec::new();
        for (k, v) in pax {
            if !(k.starts_with(b"GNU.sparse.") || k == b"path" || k == b"size") {
                records.extend(pax_record(k, v));
            }
        }
        records.extend(pax_record(b"path", &name));
        if realsize > 0o77777777777 {
            records.extend(pax_record(b"size", realsize.to_string().as_bytes()));
        }
        let mut h = *hdr;
        h[156] = b'0';
        h[..100].fill(0);
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        put_octal(&mut h[124..136], realsize);
        if &h[257..263] != b"ustar\0" {
            // GNU headers keep times and the sparse map where ustar has its prefix.
            h[345..500].fill(0);
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        } else {
            h[345..500].fill(0);
        }
        set_checksum(&mut h);
        self.emit_pax(&records, 0)?;
        self.write(&h)?;
        let mut pos = 0u64;
        let zeros = vec![0u8; 64 * 1024];
        let mut buf = vec![0u8; 64 * 1024];
        let fill = |this: &mut Self, upto: u64, pos: &mut u64| -> Result<()> {
            while *pos < upto {
                let n = (upto - *pos).min(zeros.len() as u64) as usize;
                this.write(&zeros[..n])?;
                *pos += n as u64;
            }
            Ok(())
        };
        for &(o, l) in &segments {
            fill(self, o, &mut pos)?;
            let mut left = l;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                input
                    .read_exact(&mut buf[..n])
                    .map_err(|e| read_error(e, self.offset))?;
                self.offset += n as u64;
                self.write(&buf[..n])?;
                left -= n as u64;
            }
            pos = o + l;
        }
        fill(self, realsize, &mut pos)?;
        let pad = padded(realsize) - realsize;
        self.write(&zeros[..pad as usize])?;
        // Skip the stored data's own padding.
        let stored_pad = padded(stored) - stored;
        let mut skip = vec![0u8; stored_pad as usize];
        input
            .read_exact(&mut skip)
            .map_err(|e| read_error(e, self.offset))?;
        self.offset += stored_pad;
        self.in_layer.insert(rel, false);
        Ok(())
    }

    /// Emits entries for the root and every ancestor of `rel` that this
    /// layer has not described.
    fn ensure_parents(&mut self, rel: &[u8]) -> Result<()> {
        let mut prefixes: Vec<&[u8]> = vec![b""];
        for (i, b) in rel.iter().enumerate() {
            if *b == b'/' {
                prefixes.push(&rel[..i]);
            }
        }
        for dir in prefixes {
            match self.in_layer.get(dir) {
                Some(true) => continue,
                Some(false) => {
                    return Err(corrupt(
                        self.offset,
                        format!(
                            "entry {:?} lies under {:?}, which this layer made a non-directory",
                            String::from_utf8_lossy(rel),
                            String::from_utf8_lossy(dir)
                        ),
                    ))
                }
                None => {}
            }
            let hidden = self.whited.contains(dir) || self.under_opaque(dir);
            let attrs = if hidden {
                self.lowers.default_attrs()
            } else {
                self.lowers
                    .lookup(dir)?
                    .unwrap_or_else(|| self.lowers.default_attrs())
            };
            self.emit_dir(dir, &attrs)?;
            self.in_layer.insert(dir.to_vec(), true);
            if self.whited.contains(dir) && self.opaque.insert(dir.to_vec()) {
                self.emit_marker(dir)?;
            }
        }
        Ok(())
    }

    fn under_opaque(&self, dir: &[u8]) -> bool {
        let mut d = dir;
        while !d.is_empty() {
            d = parent_of(d);
            if self.opaque.contains(d) {
                return true;
            }
        }
        false
    }

    fn emit_dir(&mut self, rel: &[u8], a: &DirAttrs) -> Result<()> {
        let name = if rel.is_empty() {
            b"./".to_vec()
        } else {
            [rel, b"/"].concat()
        };
        let mut records = Vec::new();
        if name.len() > 100 {
            records.extend(pax_record(b"path", &name));
        }
        let secs = a.mtime_ns.div_euclid(1_000_000_000);
        let nanos = a.mtime_ns.rem_euclid(1_000_000_000);
        records.extend(pax_record(
            b"mtime",
            format!("{secs}.{nanos:09}").as_bytes(),
        ));
        for (k, v) in &a.xattrs {
            records.extend(pax_record(&[b"SCHILY.xattr.", k.as_slice()].concat(), v));
        }
        self.emit(&name, b'5', a, secs.max(0) as u64, &records)
    }

    fn emit_marker(&mut self, dir: &[u8]) -> Result<()> {
        let name = join(dir, OPAQUE);
        let records = if name.len() > 100 {
            pax_record(b"path", &name)
        } else {
            Vec::new()
        };
        let marker = DirAttrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: Vec::new(),
        };
        self.emit(&name, b'0', &marker, 0, &records)
    }

    /// A PAX extended header carrying `records` for the next entry.
    fn emit_pax(&mut self, records: &[u8], mtime: u64) -> Result<()> {
        if !records.is_empty() {
            let mut x = [0u8; BLOCK];
            let xname = b"PaxHeaders.0/synthetic";
            x[..xname.len()].copy_from_slice(xname);
            put_octal(&mut x[100..108], 0o644);
            put_octal(&mut x[108..116], 0);
            put_octal(&mut x[116..124], 0);
            put_octal(&mut x[124..136], records.len() as u64);
            put_octal(&mut x[136..148], mtime);
            x[156] = b'x';
            x[257..263].copy_from_slice(b"ustar\0");
            x[263..265].copy_from_slice(b"00");
            set_checksum(&mut x);
            self.write(&x)?;
            let mut data = records.to_vec();
            data.resize(padded(data.len() as u64) as usize, 0);
            self.write(&data)?;
        }
        Ok(())
    }

    /// A header (and its PAX records) for an entry without data; `a` gives
    /// mode and owner, `mtime` the header's whole seconds.
    fn emit(
        &mut self,
        name: &[u8],
        typeflag: u8,
        a: &DirAttrs,
        mtime: u64,
        pax: &[u8],
    ) -> Result<()> {
        self.emit_pax(pax, mtime)?;
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        put_octal(&mut h[100..108], u64::from(a.mode));
        put_octal(&mut h[108..116], u64::from(a.uid));
        put_octal(&mut h[116..124], u64::from(a.gid));
        put_octal(&mut h[124..136], 0);
        put_octal(&mut h[136..148], mtime);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        self.write(&h)
    }
}

/// The name of a ustar (or GNU, or v7) header; the ustar prefix is used only
/// with the POSIX magic (GNU headers keep other data there).
fn ustar_name(h: &[u8; BLOCK]) -> Vec<u8> {
    let cut = |f: &[u8]| {
        f.iter()
            .position(|b| *b == 0)
            .map_or(f, |i| &f[..i])
            .to_vec()
    };
    let name = cut(&h[..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cut(&h[345..500]);
        if !prefix.is_empty() {
            return [prefix.as_slice(), b"/", name.as_slice()].concat();
        }
    }
    name
}

fn read_error(e: io::Error, offset: u64) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(offset, "the stream ends inside an entry"),
        // Decompression errors surface as InvalidData from the decoders.
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            Error::invalid_argument(format!("layer data is corrupt at tar byte {offset}: {e}"))
        }
        _ => Error::internal(format!("read layer at tar byte {offset}: {e}")),
    }
}

/// A failed write to mkfs.erofs; the caller replaces it with mkfs's own error
/// when mkfs exited.
fn write_error(e: io::Error) -> Error {
    Error::internal(format!("write to mkfs.erofs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"   644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(
            parse_octal(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
            Some(65536)
        );
        let mut f = [0u8; 12];
        put_octal(&mut f, 1 << 40);
        assert_eq!(parse_octal(&f), Some(1 << 40));
    }

    #[test]
    fn pax_records_round_trip() {
        let mut data = pax_record(b"path", b"a/b");
        data.extend(pax_record(b"mtime", b"1.5"));
        let recs = parse_pax(&data, 0).unwrap();
        assert_eq!(
            recs,
            vec![
                (b"path".to_vec(), b"a/b".to_vec()),
                (b"mtime".to_vec(), b"1.5".to_vec())
            ]
        );
        // The length counts itself, across a digit boundary too.
        assert_eq!(pax_record(b"k", &[b'x'; 93]).len(), 99);
        assert_eq!(pax_record(b"k", &[b'x'; 94]).len(), 101);
        assert!(pax_record(b"k", &[b'x'; 94]).starts_with(b"101 k="));
        assert!(parse_pax(b"5 a=b\n", 0).is_err());
    }

    #[test]
    fn fractions_are_padded_to_nanoseconds() {
        assert_eq!(
            pad_fraction(b"1700000000.5").unwrap(),
            b"1700000000.500000000"
        );
        assert_eq!(pad_fraction(b"1.1234567891"), Some(b"1.123456789".to_vec()));
        assert_eq!(pad_fraction(b"1.123456789"), None);
        assert_eq!(pad_fraction(b"17"), None);
    }

    #[test]
    fn paths_are_normalized_and_contained() {
        assert_eq!(normalize(b"./a//b/", 0).unwrap(), b"a/b");
        assert_eq!(normalize(b"./", 0).unwrap(), b"");
        assert_eq!(normalize(b"/etc/x", 0).unwrap(), b"etc/x");
        assert!(normalize(b"a/../../x", 0).is_err());
    }
}
