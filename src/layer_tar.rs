//! An OCI layer, read entry by entry ([`crate::tar::Reader`]), checked as a
//! container runtime applies it, and written again as the canonical tar
//! stream that `mkfs.erofs --tar --aufs` converts. mkfs.erofs only ever sees
//! entries this library parsed and wrote itself, never bytes it did not.
//!
//! What converting each layer on its own gets wrong, and is fixed here:
//!
//! - A layer that adds `a/b/file` without entries for `a` and `a/b` would
//!   get invented directories (0777, root-owned with mkfs.erofs 1.8.6), and
//!   overlayfs shows the upper layer's directory attributes. Explicit entries
//!   are emitted that copy the attributes the directory has in the layers
//!   below (mode, owner, time, non-`trusted.` xattrs), as containerd's walking
//!   differ does; the lookup stays inside the lower layers (`lowers`).
//! - `.wh.X` and a new directory `X/` in the same layer: the whiteout hides
//!   the lower layers only (OCI image spec), so the new `X/` is made opaque.
//! - An opaque marker at the root of a layer: overlayfs ignores an opaque
//!   root, so every name of the lower roots this layer does not make is
//!   whited out, and the directories it makes there are made opaque.
//! - A hard link to a file of a lower layer: the file is copied into this
//!   layer and linked there, as overlayfs's copy-up does when containerd
//!   applies the link on a mounted overlay.
//! - Sparse files are written out dense (mkfs.erofs 1.8.6 drops or mangles
//!   them), PAX times carry nanoseconds as mkfs.erofs reads them.
//!
//! And what no runtime can apply is refused with an invalid-argument error
//! naming the entry: paths leaving the layer, names longer than 255 bytes,
//! links to nowhere, whiteouts of `.` or `..`, xattrs Linux cannot hold, and
//! layers past the size limits of the configuration.

use std::io::Read;

use erofs_writer::tree::{Id, Tree, ROOT};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::layer_out::{FileData, LayerOut};
use crate::lowers::{Lowers, Object};
use crate::tar::{self, quote, Entry, Kind, Reader, Time};

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";
/// Longest name of one path component (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Longest path below the root, leaving room for its leading `/` (`PATH_MAX`).
const PATH_MAX: usize = 4095;
/// Largest xattr value Linux stores (`XATTR_SIZE_MAX` is 65536; EROFS keeps
/// the length in 16 bits).
const XATTR_VALUE_MAX: usize = 65535;
/// Room for one file's xattrs in the image: mkfs.erofs 1.8.6 fails beyond
/// 32 KiB of inode metadata (the inode, its xattrs, an inline symlink target).
const XATTRS_MAX: usize = 24 * 1024;
/// What any layer may expand to before the expansion ratio is enforced, so
/// that a small layer holding one well-compressed file still applies.
pub(crate) const EXPANSION_ALLOWANCE: u64 = 64 << 20;

/// What this layer has said about a path so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir { opaque: bool },
    Other(Kind),
    Whiteout,
}

/// Attributes of a directory this layer describes implicitly.
struct DirAttrs {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Time,
    xattrs: tar::Xattrs,
}

/// The attributes of a directory that entry `e` implies and no layer
/// describes: containerd's defaults (0755, root), and `e`'s mtime where
/// containerd takes the time of the apply, so that the same layer gives the
/// same image.
fn default_attrs(e: &Entry) -> DirAttrs {
    DirAttrs {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: e.mtime,
        xattrs: Vec::new(),
    }
}

/// The rewriter. `out` receives the checked layer.
pub(crate) struct Rewriter<'a, O: LayerOut> {
    out: O,
    lowers: &'a Lowers,
    limits: Limits,
    /// Bytes of layer data (as given) read so far.
    consumed: &'a dyn Fn() -> u64,
    /// What this layer said about each path: `nodes[id]` for the entry
    /// `names` gives `id` (the root is `ROOT`; a replaced entry gets a new
    /// id, and what it held is forgotten with it).
    names: Tree,
    nodes: Vec<Node>,
    /// The layer described its root, or it was emitted.
    root_seen: bool,
    opaque_root: bool,
    /// Bytes of file data written.
    written: u64,
}

/// An error about entry `e` of the layer.
fn refuse(e: &Entry, what: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!(
        "layer entry {} (at tar byte {}): {what}",
        e.display(),
        e.offset
    ))
}

/// Normalizes a path of the layer: no leading `/` or `./`, no `.` or empty
/// components, no trailing `/`; the root is empty. `..` is refused (an entry
/// stays inside the layer), as are names and paths Linux cannot hold.
fn normalize(path: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if path.contains(&0) {
        return Err("a NUL byte in the path".into());
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("the path leaves the layer root ('..')".into()),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "a name of {} bytes; Linux allows at most {NAME_MAX}",
                    c.len()
                ))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > PATH_MAX - 1 {
        return Err(format!(
            "a path of {} bytes; Linux paths are at most {PATH_MAX} bytes",
            out.len() + 1
        ));
    }
    Ok(out)
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Checks an entry's xattrs: names Linux and EROFS hold, values that fit.
fn check_xattrs(e: &Entry) -> Result<()> {
    // As EROFS stores them: a 12-byte header, then 4-byte aligned entries.
    let total: usize = 12
        + e.xattrs
            .iter()
            .map(|(n, v)| (4 + n.len() + v.len()).next_multiple_of(4))
            .sum::<usize>();
    for (name, value) in &e.xattrs {
        let shown = quote(name);
        if name.len() > NAME_MAX {
            return Err(refuse(
                e,
                format!(
                    "xattr name {shown} is {} bytes; Linux allows at most {NAME_MAX}",
                    name.len()
                ),
            ));
        }
        let known = [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len())
            || matches!(
                name.as_slice(),
                b"system.posix_acl_access" | b"system.posix_acl_default"
            );
        if !known {
            return Err(refuse(
                e,
                format!(
                    "xattr {shown} is not in a namespace a layer can hold (user., trusted., \
                     security., or a POSIX ACL)"
                ),
            ));
        }
        if name.contains(&b'=') {
            return Err(refuse(
                e,
                format!("xattr name {shown} contains '=', which mkfs.erofs cannot take"),
            ));
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(refuse(
                e,
                format!(
                    "xattr {shown} has a value of {} bytes; at most {XATTR_VALUE_MAX} fit",
                    value.len()
                ),
            ));
        }
    }
    if !e.xattrs.is_empty() && total > XATTRS_MAX {
        return Err(refuse(
            e,
            format!(
                "its xattrs take {total} bytes; at most {XATTRS_MAX} fit with one file in the image"
            ),
        ));
    }
    Ok(())
}

/// A regular file's data in the tar stream.
struct TarData<'r, R: Read> {
    reader: &'r mut Reader<R>,
    fragments: Option<Vec<(u64, u64)>>,
}

impl<R: Read> FileData for TarData<'_, R> {
    fn fragments(&self) -> Option<&[(u64, u64)]> {
        self.fragments.as_deref()
    }
    fn read_dense(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.reader.read_data(buf)
    }
    fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.reader.read_stored(buf)
    }
}

/// A file of a lower layer (copied up: dense).
struct LowerData {
    file: std::fs::File,
    path: Vec<u8>,
}

impl FileData for LowerData {
    fn fragments(&self) -> Option<&[(u64, u64)]> {
        None
    }
    fn read_dense(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.file.read(buf).map_err(|e| {
            Error::internal(format!(
                "read {} from a lower layer: {e}",
                quote(&self.path)
            ))
        })
    }
    fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.read_dense(buf)
    }
}

/// A file's data counted against the expansion limit as it is read.
struct Metered<'m> {
    data: &'m mut dyn FileData,
    entry: &'m Entry,
    written: &'m mut u64,
    limits: Limits,
    consumed: &'m dyn Fn() -> u64,
    /// Sparse files were counted whole before they were read.
    counting: bool,
}

impl Metered<'_> {
    fn count(&mut self, n: usize) -> Result<usize> {
        if self.counting {
            *self.written += n as u64;
            check_expansion(*self.written, self.limits, self.consumed, self.entry)?;
        }
        Ok(n)
    }
}

impl FileData for Metered<'_> {
    fn fragments(&self) -> Option<&[(u64, u64)]> {
        self.data.fragments()
    }
    fn read_dense(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.data.read_dense(buf)?;
        self.count(n)
    }
    fn read_stored(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.data.read_stored(buf)?;
        self.count(n)
    }
}

/// Refuses a layer whose files (`written` bytes so far) grew past the
/// expansion limit for the layer data read (`consumed`).
fn check_expansion(written: u64, l: Limits, consumed: &dyn Fn() -> u64, e: &Entry) -> Result<()> {
    let ratio = l.max_expansion_ratio;
    if ratio == 0 || written <= EXPANSION_ALLOWANCE {
        return Ok(());
    }
    let consumed = consumed();
    if written > consumed.saturating_mul(ratio) {
        return Err(refuse(
            e,
            format!(
                "the layer expands more than the limit max_expansion_ratio ({ratio}) allows: \
                 {written} bytes of files from {consumed} bytes of layer data"
            ),
        ));
    }
    Ok(())
}

impl<'a, O: LayerOut> Rewriter<'a, O> {
    pub fn new(
        out: O,
        lowers: &'a Lowers,
        limits: Limits,
        consumed: &'a dyn Fn() -> u64,
    ) -> Rewriter<'a, O> {
        Rewriter {
            out,
            lowers,
            limits,
            consumed,
            names: Tree::new(),
            nodes: vec![Node::Dir { opaque: false }],
            root_seen: false,
            opaque_root: false,
            written: 0,
        }
    }

    /// Writes every entry of `reader` to the output; returns it.
    pub fn run<R: Read>(mut self, reader: &mut Reader<R>) -> Result<O> {
        while let Some(e) = reader.next_entry()? {
            self.entry(reader, e)?;
        }
        if self.opaque_root {
            self.hide_lower_root()?;
        }
        Ok(self.out)
    }

    fn entry<R: Read>(&mut self, reader: &mut Reader<R>, mut e: Entry) -> Result<()> {
        let rel = normalize(&e.path).map_err(|w| refuse(&e, w))?;
        check_xattrs(&e)?;
        let (parent, name) = split(&rel);
        if rel.is_empty() {
            if e.kind != Kind::Directory {
                return Err(refuse(
                    &e,
                    format!("the layer root cannot be a {}", e.kind.name()),
                ));
            }
            e.path = b".".to_vec();
            self.out.entry(&e)?;
            self.root_seen = true;
            return Ok(());
        }
        if name == OPAQUE {
            let dir = self.ensure_parents(&rel, &e)?;
            if parent.is_empty() {
                self.opaque_root = true;
            } else {
                self.make_opaque(dir, parent)?;
            }
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WHITEOUT) {
            if target.is_empty()
                || target == b"."
                || target == b".."
                || target.starts_with(WHITEOUT)
            {
                return Err(refuse(
                    &e,
                    format!(
                        "a whiteout of {}, which is not a name a layer can hold",
                        quote(target)
                    ),
                ));
            }
            let dir = self.ensure_parents(&rel, &e)?;
            let path = join(parent, target);
            match self.child(dir, target) {
                // The whiteout hides the lower layers only: what this layer
                // made stays, and a directory of it stops merging with theirs.
                Some((id, Node::Dir { .. })) => self.make_opaque(id, &path)?,
                Some(_) => {}
                None => {
                    self.out.whiteout(&path)?;
                    self.add(dir, target, Node::Whiteout, &e)?;
                }
            }
            return Ok(());
        }
        let dir = self.ensure_parents(&rel, &e)?;
        let previous = self.child(dir, name);
        // A directory over a directory (or over this layer's whiteout) is
        // the same node; anything else replaces the old one, and forgets
        // what this layer put below it.
        let (keep, opaque) = match (previous, e.kind) {
            (Some((id, Node::Dir { opaque })), Kind::Directory) => (Some(id), opaque),
            // The whiteout in this layer still hides the lower directory.
            (Some((id, Node::Whiteout)), Kind::Directory) => (Some(id), true),
            _ => (None, false),
        };
        e.path = rel.clone();
        match e.kind {
            Kind::HardLink => {
                let target = self.link_target(&rel, &e)?;
                e.link = target;
                e.mode = 0;
                e.xattrs.clear();
                self.out.entry(&e)?;
            }
            Kind::Symlink => {
                if e.link.is_empty() {
                    return Err(refuse(&e, "a symlink with an empty target"));
                }
                if e.link.contains(&0) {
                    return Err(refuse(&e, "a NUL byte in the symlink target"));
                }
                if e.link.len() > PATH_MAX {
                    return Err(refuse(
                        &e,
                        format!(
                            "a symlink target of {} bytes; Linux allows at most {PATH_MAX}",
                            e.link.len()
                        ),
                    ));
                }
                self.out.entry(&e)?;
            }
            Kind::Regular => {
                let fragments = e.sparse.take();
                self.file(&e, &mut TarData { reader, fragments })?;
            }
            Kind::Directory | Kind::Char | Kind::Block | Kind::Fifo => {
                e.link.clear();
                self.out.entry(&e)?;
            }
        }
        let node = match e.kind {
            Kind::Directory => Node::Dir { opaque },
            k => Node::Other(k),
        };
        match keep {
            Some(id) => self.nodes[id as usize] = node,
            None => {
                self.add(dir, name, node, &e)?;
            }
        }
        if opaque && previous.map(|p| p.1) != Some(Node::Dir { opaque: true }) {
            self.out.opaque(&rel)?;
        }
        Ok(())
    }

    /// What this layer said about `name` in directory `dir`.
    fn child(&self, dir: Id, name: &[u8]) -> Option<(Id, Node)> {
        self.names
            .get(dir, name)
            .map(|id| (id, self.nodes[id as usize]))
    }

    /// Records `node` as `name` in directory `dir`, replacing what was there.
    fn add(&mut self, dir: Id, name: &[u8], node: Node, e: &Entry) -> Result<Id> {
        let too_many = || refuse(e, "the layer has more entries or names than 2^32");
        let id = Id::try_from(self.nodes.len())
            .ok()
            .filter(|id| *id < Id::MAX)
            .ok_or_else(too_many)?;
        self.names.set(dir, name, id).map_err(|_| too_many())?;
        self.nodes.push(node);
        Ok(id)
    }

    /// What this layer said about `rel`, and whether what it said about an
    /// ancestor hides a lower layer's `rel` (an opaque directory, a
    /// replacement).
    fn find(&self, rel: &[u8]) -> (Option<(Id, Node)>, bool) {
        let (mut id, mut hidden) = (ROOT, false);
        for comp in rel.split(|b| *b == b'/') {
            if id != ROOT {
                match self.nodes[id as usize] {
                    Node::Dir { opaque } => hidden |= opaque,
                    _ => return (None, true),
                }
            }
            match self.names.get(id, comp) {
                Some(c) => id = c,
                None => return (None, hidden),
            }
        }
        (Some((id, self.nodes[id as usize])), hidden)
    }

    /// A regular file, within the size limits; its data is counted against
    /// the expansion limit as it is read (a sparse file whole, first).
    fn file(&mut self, e: &Entry, data: &mut dyn FileData) -> Result<()> {
        let l = self.limits;
        if l.max_file_size > 0 && e.size > l.max_file_size {
            return Err(refuse(
                e,
                format!(
                    "a file of {} bytes is larger than the limit max_file_size ({} bytes)",
                    e.size, l.max_file_size
                ),
            ));
        }
        if l.max_layer_size > 0 && self.written.saturating_add(e.size) > l.max_layer_size {
            return Err(refuse(
                e,
                format!(
                    "with this file of {} bytes the layer's files exceed the limit \
                     max_layer_size ({} bytes)",
                    e.size, l.max_layer_size
                ),
            ));
        }
        let sparse = data.fragments().is_some();
        if sparse {
            self.written += e.size;
            check_expansion(self.written, l, self.consumed, e)?;
        }
        let mut metered = Metered {
            data,
            entry: e,
            written: &mut self.written,
            limits: l,
            consumed: self.consumed,
            counting: !sparse,
        };
        self.out.file(e, &mut metered)
    }

    /// Emits entries for the root and every ancestor of `rel` this layer
    /// has not described yet; returns the directory that holds `rel`.
    fn ensure_parents(&mut self, rel: &[u8], e: &Entry) -> Result<Id> {
        if !self.root_seen {
            let attrs = self.lower_attrs(b"", e)?;
            self.emit_dir(b"", &attrs)?;
            self.root_seen = true;
        }
        let parent = split(rel).0;
        let (mut dir, mut hidden) = (ROOT, false);
        if parent.is_empty() {
            return Ok(dir);
        }
        let mut end = 0;
        for comp in parent.split(|b| *b == b'/') {
            end += comp.len();
            let path = &rel[..end];
            end += 1;
            if let Node::Dir { opaque: true } = self.nodes[dir as usize] {
                hidden |= dir != ROOT;
            }
            dir = match self.child(dir, comp) {
                Some((id, Node::Dir { .. })) => id,
                Some((_, Node::Other(kind))) => {
                    return Err(refuse(
                        e,
                        format!(
                            "it lies under {}, which this layer made a {}",
                            quote(path),
                            kind.name()
                        ),
                    ))
                }
                // Whited out, then made again: the lower one stays hidden.
                Some((id, Node::Whiteout)) => {
                    self.emit_dir(path, &default_attrs(e))?;
                    self.nodes[id as usize] = Node::Dir { opaque: false };
                    self.make_opaque(id, path)?;
                    id
                }
                None => {
                    let attrs = if hidden {
                        default_attrs(e)
                    } else {
                        self.lower_attrs(path, e)?
                    };
                    self.emit_dir(path, &attrs)?;
                    self.add(dir, comp, Node::Dir { opaque: false }, e)?
                }
            };
        }
        Ok(dir)
    }

    /// The attributes directory `rel` has in the lower layers (containerd's
    /// `mkparent`: defaults when it is missing or not a directory there).
    fn lower_attrs(&self, rel: &[u8], e: &Entry) -> Result<DirAttrs> {
        match self.lowers.lookup(rel)? {
            Some(o) if o.is_dir() => Ok(DirAttrs {
                mode: o.stat.st_mode & 0o7777,
                uid: o.stat.st_uid,
                gid: o.stat.st_gid,
                mtime: o.mtime(),
                // As containerd's copyUpXAttrs: not `trusted.*` (overlayfs's
                // own, and privileged).
                xattrs: o.xattrs(|n| !n.starts_with(b"trusted."))?,
            }),
            _ => Ok(default_attrs(e)),
        }
    }

    fn emit_dir(&mut self, rel: &[u8], a: &DirAttrs) -> Result<()> {
        let mut e = Entry::new(
            if rel.is_empty() {
                b".".to_vec()
            } else {
                rel.to_vec()
            },
            Kind::Directory,
        );
        e.mode = a.mode;
        e.uid = a.uid;
        e.gid = a.gid;
        e.mtime = a.mtime;
        e.xattrs = a.xattrs.clone();
        self.out.entry(&e)
    }

    /// Makes directory `id` of this layer, at `path`, opaque (once).
    fn make_opaque(&mut self, id: Id, path: &[u8]) -> Result<()> {
        if let Node::Dir { opaque } = &mut self.nodes[id as usize] {
            if !*opaque {
                *opaque = true;
                self.out.opaque(path)?;
            }
        }
        Ok(())
    }

    /// The target of hard link `rel`, which must be a non-directory made
    /// earlier in this layer or present in a lower layer (then copied up).
    fn link_target(&mut self, rel: &[u8], e: &Entry) -> Result<Vec<u8>> {
        if e.link.starts_with(b"/") {
            return Err(refuse(
                e,
                format!("a hard link to the absolute path {}", quote(&e.link)),
            ));
        }
        let target = normalize(&e.link)
            .map_err(|w| refuse(e, format!("hard link target {}: {w}", quote(&e.link))))?;
        if target.is_empty() {
            return Err(refuse(e, "a hard link to the layer root"));
        }
        if target == rel {
            return Err(refuse(e, "a hard link to itself"));
        }
        let missing = || {
            refuse(
                e,
                format!(
                    "a hard link to {}, which is neither an earlier entry of this layer nor in a \
                     lower layer",
                    quote(&target)
                ),
            )
        };
        let (found, hidden) = self.find(&target);
        match found.map(|f| f.1) {
            Some(Node::Dir { .. }) => Err(refuse(
                e,
                format!("a hard link to the directory {}", quote(&target)),
            )),
            Some(Node::Whiteout) => Err(missing()),
            Some(Node::Other(_)) => Ok(target),
            None if hidden
                || target
                    .rsplit(|b| *b == b'/')
                    .next()
                    .is_some_and(|n| n.starts_with(WHITEOUT)) =>
            {
                Err(missing())
            }
            None => match self.lowers.lookup(&target)? {
                None => Err(missing()),
                Some(o) if o.is_dir() => Err(refuse(
                    e,
                    format!("a hard link to the directory {}", quote(&target)),
                )),
                Some(o) => {
                    self.copy_up(&target, &o, e)?;
                    Ok(target)
                }
            },
        }
    }

    /// Copies `o`, found at `rel` in a lower layer, into this layer (what
    /// overlayfs does before it links to a lower file).
    fn copy_up(&mut self, rel: &[u8], o: &Object, link: &Entry) -> Result<()> {
        use crate::sys::fs::FileType;
        let dir = self.ensure_parents(rel, link)?;
        let kind = match o.file_type() {
            FileType::RegularFile => Kind::Regular,
            FileType::Symlink => Kind::Symlink,
            FileType::CharacterDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Fifo => Kind::Fifo,
            other => {
                return Err(refuse(
                    link,
                    format!(
                        "a hard link to {} in a lower layer, a {other:?}",
                        quote(rel)
                    ),
                ))
            }
        };
        let mut e = Entry::new(rel.to_vec(), kind);
        e.offset = link.offset;
        e.mode = o.stat.st_mode & 0o7777;
        e.uid = o.stat.st_uid;
        e.gid = o.stat.st_gid;
        e.mtime = o.mtime();
        e.xattrs = o.xattrs(|n| !n.starts_with(b"trusted.overlay."))?;
        match kind {
            Kind::Regular => {
                e.size = o.stat.st_size as u64;
                let mut data = LowerData {
                    file: o.open_file()?,
                    path: rel.to_vec(),
                };
                self.file(&e, &mut data)?;
            }
            Kind::Symlink => {
                e.link = o.read_link()?;
                self.out.entry(&e)?;
            }
            _ => {
                (e.dev_major, e.dev_minor) = crate::sys::fs::major_minor(o.stat.st_rdev);
                self.out.entry(&e)?;
            }
        }
        self.add(dir, split(rel).1, Node::Other(kind), link)?;
        Ok(())
    }

    /// A root-level opaque marker: overlayfs ignores an opaque layer root,
    /// so every lower name this layer does not make is whited out, and its
    /// own directories there stop merging with the lower ones.
    fn hide_lower_root(&mut self) -> Result<()> {
        let names = if self.lowers.is_empty() {
            Default::default()
        } else {
            self.lowers.root_names()?
        };
        for name in names {
            match self.child(ROOT, &name) {
                None => {
                    self.out.whiteout(&name)?;
                    let e = Entry::new(name.clone(), Kind::Char);
                    self.add(ROOT, &name, Node::Whiteout, &e)?;
                }
                Some((id, Node::Dir { .. })) => self.make_opaque(id, &name)?,
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_contained() {
        assert_eq!(normalize(b"./a//b/").unwrap(), b"a/b");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b"/etc/x").unwrap(), b"etc/x");
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(&[b'n'; 256]).is_err());
        assert!(normalize(&[b'n'; 255]).is_ok());
        let deep: Vec<u8> = b"a/".repeat(3000);
        assert!(normalize(&deep).unwrap_err().contains("4095"));
    }
}
