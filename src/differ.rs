//! The EROFS differ: an OCI layer (tar, gzip or zstd; or a native EROFS
//! blob) goes straight into `layer.erofs` of an active snapshot, written by
//! the built-in EROFS writer (or `mkfs.erofs --tar` for the `mkfs_options`
//! only it implements), instead of being unpacked into the upper dir and
//! converted again at commit.
//!
//! An apply runs on two threads: one reads the layer and decompresses it
//! (and hashes the data as given when a compressed layer's digest is to be
//! verified), a few buffers ahead of the other, the caller's, which checks
//! the entries and writes the image. The diffID is hashed by whichever has
//! less to do: the reading thread for a tar, the caller's for a compressed
//! layer (`pipelined`).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layer_out::{writer_error, ErofsOut};
use crate::layer_tar::Rewriter;
use crate::lowers::Lowers;
use crate::mkfs::{mkfs_failure, TempBlob};
use crate::mkfs_options::{Builtin, Plan};
use crate::subprocess;

/// Options of one apply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyOptions {
    /// The layer descriptor's media type; empty: a tar, compression detected.
    #[serde(default)]
    pub media_type: String,
    /// The layer descriptor's digest (of the data as given): verified, and the
    /// image UUID is derived from it, as containerd does.
    #[serde(default)]
    pub digest: Option<String>,
}

/// What an apply produced: containerd's `ocispec.Descriptor` of the
/// uncompressed layer (its diffID and size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Every layer media type the differ applies, and what it declares: the one
/// list. [`format_of`] reads it, and the C ABI hands it to the bindings
/// ([`media_types`]), which decline other types before calling the library.
const MEDIA_TYPES: &[(&str, Declared)] = &[
    (MEDIA_TYPE_TAR, Declared::Tar(Compression::None)),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Declared::Tar(Compression::Gzip),
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Declared::Tar(Compression::Zstd),
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Declared::Tar(Compression::None),
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Declared::Tar(Compression::Gzip),
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Declared::Tar(Compression::Zstd),
    ),
    // containerd: these Docker types may hold a compressed layer under the
    // wrong name; the compression is detected.
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Declared::Tar(Compression::Detect),
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        Declared::Tar(Compression::Detect),
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Declared::Tar(Compression::Zstd),
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Declared::Tar(Compression::Gzip),
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Declared::Tar(Compression::Gzip),
    ),
    (MEDIA_TYPE_EROFS, Declared::Erofs(Compression::None)),
    (
        "application/vnd.erofs.layer.v1+zstd",
        Declared::Erofs(Compression::Zstd),
    ),
];

/// containerd's native EROFS layer (`images.MediaTypeErofsLayer`).
const MEDIA_TYPE_EROFS: &str = "application/vnd.erofs.layer.v1";

/// What a layer media type says about the data.
#[derive(Debug, Clone, Copy)]
enum Declared {
    Tar(Compression),
    Erofs(Compression),
}

/// The layer media types the differ applies (an empty one, a tar with the
/// compression detected, is accepted too).
pub fn media_types() -> impl Iterator<Item = &'static str> {
    MEDIA_TYPES.iter().map(|(t, _)| *t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
    /// Not declared: decided by the data's magic number.
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    Tar(Compression),
    /// A native EROFS blob (`application/vnd.erofs.layer.v1`), copied as is.
    Erofs {
        media_type: String,
        compression: Compression,
    },
}

/// Understands the layer media types of [`MEDIA_TYPES`], and the empty one.
pub(crate) fn format_of(media_type: &str) -> Result<Format> {
    if media_type.is_empty() {
        return Ok(Format::Tar(Compression::Detect));
    }
    match MEDIA_TYPES.iter().find(|(t, _)| *t == media_type) {
        Some((_, Declared::Tar(compression))) => Ok(Format::Tar(*compression)),
        Some((_, Declared::Erofs(compression))) => Ok(Format::Erofs {
            media_type: MEDIA_TYPE_EROFS.to_string(),
            compression: *compression,
        }),
        None => Err(Error::invalid_argument(format!(
            "media type {media_type:?} is not a layer type this differ applies"
        ))),
    }
}

fn magic(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// UUID version 5 (SHA-1, URL namespace) of `erofs:blobs/<digest>`, the
/// image UUID containerd's EROFS differ gives a layer.
pub(crate) fn layer_uuid(digest: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("erofs:blobs/{digest}").as_bytes(),
    )
}

/// The error of a conversion that ran past `convert_timeout_seconds`.
fn timed_out(seconds: u64) -> io::Error {
    crate::error::carry(Error::unavailable(format!(
        "the conversion ran longer than config field \"convert_timeout_seconds\" allows \
         ({seconds} s) and was stopped"
    )))
}

/// A reader that hashes (SHA-256, when asked to) and counts what passes
/// through; the count can be read from another thread.
struct Hashing<R> {
    inner: R,
    hash: Option<Sha256>,
    count: Arc<AtomicU64>,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, hash: bool) -> Self {
        Hashing {
            inner,
            hash: hash.then(Sha256::new),
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The digest (when hashed) and the count.
    fn digest(self) -> (Option<String>, u64) {
        let d = self
            .hash
            .map(|h| format!("sha256:{}", crate::integrity::hex(&h.finalize())));
        (d, self.count.load(Ordering::Relaxed))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The compression to decode `r` with, from the declared one and the first
/// bytes; a mismatch between declared and actual compression is a clear
/// error rather than a corrupt-tar one.
fn compression_of<R: BufRead>(r: &mut R, declared: Compression) -> Result<Compression> {
    let head = r
        .fill_buf()
        .map_err(|e| Error::internal(format!("read layer: {e}")))?;
    let actual = magic(head);
    match declared {
        Compression::Detect => Ok(actual),
        d if head.is_empty() => Ok(d),
        d if d == actual => Ok(d),
        d => {
            let name = |c: Compression| match c {
                Compression::Gzip => "gzip-compressed",
                Compression::Zstd => "zstd-compressed",
                _ => "uncompressed",
            };
            Err(Error::invalid_argument(format!(
                "the media type says the layer is {} but the data is {}",
                name(d),
                name(actual)
            )))
        }
    }
}

/// `r` decompressed (as [`compression_of`] chose).
fn decompressor<'a, R: BufRead + 'a>(r: R, chosen: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match chosen {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(r)
                .map_err(|e| Error::internal(format!("start zstd decoder: {e}")))?,
        ),
        _ => Box::new(r),
    })
}

/// Bytes of the layer's tar stream the reading thread hands over at once.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the threads: memory is `CHUNK` times about
/// twice this.
const IN_FLIGHT: usize = 4;

/// A chunk of the tar stream (its first `.1` bytes), or why there is none.
type Chunk = io::Result<(Vec<u8>, usize)>;

/// What a pipelined conversion found, once the layer is read to its end.
struct Digests {
    /// SHA-256 and size of the uncompressed layer.
    diff_id: String,
    size: u64,
    /// SHA-256 of the data as given, where it differs from the diffID and
    /// a digest is to be verified.
    raw: Option<String>,
}

/// What the reading thread found: [`Digests`] but for the diffID where the
/// converting thread hashed it (see [`pipelined`]).
struct Found {
    diff_id: Option<String>,
    size: u64,
    raw: Option<String>,
}

/// The reading thread: `input` read, decompressed and (with `hash_stream`)
/// hashed, in chunks sent to the converting thread, which sends them back
/// to be filled again. An error is sent as the next chunk. `None` when it
/// stopped early (an error, or the converting thread gone).
fn produce(
    input: &mut (dyn Read + Send),
    declared: Compression,
    verify: bool,
    hash_stream: bool,
    consumed: &AtomicU64,
    tx: SyncSender<Chunk>,
    free: Receiver<Vec<u8>>,
) -> Option<Found> {
    let result = (|| -> io::Result<Option<Found>> {
        let counted = Counted {
            inner: input,
            count: consumed,
        };
        let mut buffered = BufReader::with_capacity(CHUNK, counted);
        let chosen = compression_of(&mut buffered, declared).map_err(crate::error::carry)?;
        // Uncompressed, the data as given is the tar stream: one hash.
        let mut raw = Hashing::new(buffered, verify && chosen != Compression::None);
        let mut stream = Hashing::new(
            decompressor(BufReader::with_capacity(64 * 1024, &mut raw), chosen)
                .map_err(crate::error::carry)?,
            hash_stream,
        );
        loop {
            let mut buf = free.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            if tx.send(Ok((buf, n))).is_err() {
                return Ok(None);
            }
        }
        let (diff_id, size) = stream.digest();
        // Whatever follows the compressed stream still counts for the digest.
        io::copy(&mut raw, &mut io::sink())?;
        Ok(Some(Found {
            diff_id,
            size,
            raw: raw.digest().0,
        }))
    })();
    match result {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e));
            None
        }
    }
}

/// A reader that counts what passes through into a shared counter.
struct Counted<'c, R> {
    inner: R,
    count: &'c AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The converting thread's end: the tar stream as the reading thread
/// sends it, until `convert_timeout_seconds` after the conversion began
/// (also while the reading thread waits for its input).
struct Source {
    rx: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    end: usize,
    until: Instant,
    seconds: u64,
    /// Hashing the stream here instead of on the reading thread: each
    /// chunk as it arrives, the digest set once the stream has ended.
    hash: Option<Sha256>,
    diff_id: Arc<OnceLock<String>>,
}

impl Read for Source {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.end {
            if !self.cur.is_empty() {
                let _ = self.free.try_send(std::mem::take(&mut self.cur));
            }
            let left = self.until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok((buf, n))) => {
                    if let Some(h) = &mut self.hash {
                        h.update(&buf[..n]);
                    }
                    (self.cur, self.pos, self.end) = (buf, 0, n)
                }
                Ok(Err(e)) => return Err(e),
                // The reading thread is done: after an error it sent, the
                // apply fails whatever this digest says.
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(h) = self.hash.take() {
                        let _ = self
                            .diff_id
                            .set(format!("sha256:{}", crate::integrity::hex(&h.finalize())));
                    }
                    return Ok(0);
                }
                Err(RecvTimeoutError::Timeout) => return Err(timed_out(self.seconds)),
            }
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `convert` on the caller's thread with the layer's tar stream, read
/// from `input` on a thread of its own; returns what `convert` returned and
/// the digests. `convert` gets the stream and how many bytes of the layer
/// (as given) were read so far, and must read the stream to its end.
///
/// Decompression is most of a compressed layer's reading, so the converting
/// thread hashes its stream (the diffID) and the two threads share the
/// work more evenly; an uncompressed layer is hashed on the reading thread,
/// which has little else to do. (`bench/writer.sh`, 5 runs each: the 709 MiB
/// gzip synthetic layer 3.83 s before, 3.00 s after, against 3.49 and 3.70 s
/// for gunzip + SHA-256 alone in the same runs.)
fn pipelined<T>(
    config: &Config,
    input: &mut (dyn Read + Send),
    declared: Compression,
    verify: bool,
    convert: impl FnOnce(Source, &dyn Fn() -> u64) -> Result<T>,
) -> Result<(T, Digests)> {
    let consumed = AtomicU64::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
    let hash_here = matches!(declared, Compression::Gzip | Compression::Zstd);
    let diff_id = Arc::new(OnceLock::new());
    let source = Source {
        rx,
        free: free_tx,
        cur: Vec::new(),
        pos: 0,
        end: 0,
        until: Instant::now() + config.convert_timeout(),
        seconds: config.convert_timeout_seconds,
        hash: hash_here.then(Sha256::new),
        diff_id: diff_id.clone(),
    };
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("layer-reader".into())
            .spawn_scoped(scope, || {
                produce(input, declared, verify, !hash_here, &consumed, tx, free_rx)
            })
            .map_err(|e| Error::internal(format!("start the layer reading thread: {e}")))?;
        let result = convert(source, &|| consumed.load(Ordering::Relaxed));
        // `source` is gone: a reading thread still at work stops at its
        // next chunk.
        let digests = match reader.join() {
            Ok(d) => d,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (result, digests) {
            (Ok(v), Some(found)) => {
                let diff_id = match found.diff_id {
                    Some(d) => d,
                    None => diff_id.get().cloned().ok_or_else(|| {
                        Error::internal("the layer was not read to its end".to_string())
                    })?,
                };
                let (size, raw) = (found.size, found.raw);
                Ok((v, Digests { diff_id, size, raw }))
            }
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err(Error::internal(
                "the layer reading thread stopped before the end of the layer".to_string(),
            )),
        }
    })
}

/// The write end of a socket pair feeding mkfs.erofs's stdin. A socket and
/// not a pipe: `send(MSG_NOSIGNAL)` reports a dead reader as EPIPE instead of
/// raising SIGPIPE, which would kill a C host that did not ignore it. A
/// failed write is remembered: then mkfs.erofs's own error explains it.
struct SocketWriter(OwnedFd, Rc<Cell<bool>>);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.send(buf);
        if r.is_err() {
            self.1.set(true);
        }
        r
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SocketWriter {
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::process::send_nosignal(&self.0, buf)
    }
}

/// Writes to two places (mkfs and the tar kept for tar-index mode).
struct Tee<A, B>(A, Option<B>);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        if let Some(b) = &mut self.1 {
            b.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        if let Some(b) = &mut self.1 {
            b.flush()?;
        }
        Ok(())
    }
}

/// The argv of the tar conversion (containerd's `ConvertTarErofs` and
/// `GenerateTarIndexAndAppendTar`).
pub(crate) fn tar_args(
    config: &Config,
    dest: &Path,
    uuid: Option<&str>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = if config.enable_tar_index {
        vec!["--tar=i".into(), "--aufs".into(), "--quiet".into()]
    } else {
        // `--sort=none`: file data goes straight to its place in the image
        // (without it, into a temporary file first: twice the disk).
        vec![
            "--tar=f".into(),
            "--aufs".into(),
            "--quiet".into(),
            "-Enoinline_data".into(),
            "--sort=none".into(),
        ]
    };
    if !config.sets_block_size() {
        args.push("-b4096".into());
    }
    args.extend(config.mkfs_options.iter().map(Into::into));
    if let Some(u) = uuid {
        args.push("-U".into());
        args.push(u.into());
    }
    args.push(dest.into());
    args
}

/// Converts the layer read from `input` into `tmp.path` (not yet installed).
/// `lowers` are the parent layers' roots, top-most first.
pub(crate) fn convert(
    config: &Config,
    tmp: &TempBlob,
    input: &mut (dyn Read + Send),
    opts: &ApplyOptions,
    lowers: &Lowers,
) -> Result<Applied> {
    let verify = opts.digest.is_some();
    // What was converted, and the digest of the data as given.
    let (applied, got) = match format_of(&opts.media_type)? {
        Format::Erofs {
            media_type,
            compression,
        } => copy_erofs(tmp, input, compression, media_type)?,
        Format::Tar(compression) => {
            let uuid = opts.digest.as_deref().map(layer_uuid);
            let ((), d) = match config.layer_plan() {
                Plan::Builtin(b) => {
                    pipelined(config, input, compression, verify, |tar, consumed| {
                        convert_builtin(config, &b, tmp, tar, consumed, uuid, lowers)
                    })?
                }
                Plan::Mkfs { .. } => {
                    let keep_tar = config
                        .enable_tar_index
                        .then(|| TempBlob::with_suffix(tmp, "tar"));
                    let uuid = uuid.map(|u| u.to_string());
                    let r = pipelined(config, input, compression, verify, |tar, consumed| {
                        convert_tar(
                            config,
                            tmp,
                            tar,
                            consumed,
                            uuid.as_deref(),
                            lowers,
                            keep_tar.as_ref(),
                        )
                    })?;
                    if let Some(tar) = &keep_tar {
                        append(&tmp.path, &tar.path)?;
                    }
                    r
                }
            };
            let got = d.raw.unwrap_or_else(|| d.diff_id.clone());
            let applied = Applied {
                digest: d.diff_id,
                size: d.size,
                media_type: MEDIA_TYPE_TAR.to_string(),
            };
            (applied, got)
        }
    };
    if let Some(want) = &opts.digest {
        if &got != want {
            return Err(Error::invalid_argument(format!(
                "layer digest mismatch: the descriptor says {want}, the data is {got}"
            )));
        }
    }
    Ok(applied)
}

/// A native EROFS blob, decompressed into `tmp.path` as it is; returns it
/// and the digest of the data as given.
fn copy_erofs(
    tmp: &TempBlob,
    input: &mut dyn Read,
    compression: Compression,
    media_type: String,
) -> Result<(Applied, String)> {
    let mut raw = Hashing::new(BufReader::with_capacity(CHUNK, input), true);
    let mut stream = Hashing::new(decompressor(BufReader::new(&mut raw), compression)?, true);
    let mut f = tmp.create(0o644)?;
    io::copy(&mut stream, &mut f).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            Error::invalid_argument(format!("layer data is corrupt: {e}"))
        }
        _ => Error::io("write", &tmp.path, e),
    })?;
    let (digest, size) = stream.digest();
    // The rest of the input (padding after the blob) still counts for the digest.
    io::copy(&mut raw, &mut io::sink()).map_err(|e| Error::internal(format!("read layer: {e}")))?;
    let applied = Applied {
        digest: digest.expect("hashed"),
        size,
        media_type,
    };
    Ok((applied, raw.digest().0.expect("hashed")))
}

/// Converts with the built-in writer: every entry checked by the front end
/// goes straight into the image, file data to its place as it is read.
fn convert_builtin(
    config: &Config,
    b: &Builtin,
    tmp: &TempBlob,
    tar: Source,
    consumed: &dyn Fn() -> u64,
    uuid: Option<uuid::Uuid>,
    lowers: &Lowers,
) -> Result<()> {
    let file = tmp.create(0o644)?;
    let root = erofs_writer::Meta {
        mode: 0o755,
        ..Default::default()
    };
    let builder =
        erofs_writer::Builder::new(file, b.writer_options(uuid.map(|u| *u.as_bytes())), root)
            .map_err(writer_error)?;
    let mut reader = crate::tar::Reader::new(tar);
    let out = ErofsOut::new(builder, b.overrides.clone());
    Rewriter::new(out, lowers, config.limits(), consumed)
        .run(&mut reader)?
        .finish()?;
    drain(reader.into_inner())
}

/// Reads what follows the end-of-archive marker: it still belongs to the
/// diffID.
fn drain(mut tar: Source) -> Result<()> {
    io::copy(&mut tar, &mut io::sink()).map_err(|e| match crate::error::uncarry(e) {
        Ok(ours) => ours,
        Err(e) => Error::invalid_argument(format!("layer data is corrupt after the archive: {e}")),
    })?;
    Ok(())
}

fn convert_tar(
    config: &Config,
    tmp: &TempBlob,
    tar: Source,
    consumed: &dyn Fn() -> u64,
    uuid: Option<&str>,
    lowers: &Lowers,
    keep_tar: Option<&TempBlob>,
) -> Result<()> {
    let (ours, theirs) = crate::sys::process::socketpair()
        .map_err(|e| Error::internal(format!("socketpair: {e}")))?;
    let dir = tmp.path.parent().unwrap_or(Path::new("."));
    // mkfs.erofs's temporary files go next to the blob: the same disk.
    let mut child = subprocess::spawn(
        config.mkfs_path.as_ref(),
        &tar_args(config, &tmp.path, uuid),
        &[("TMPDIR", dir.as_os_str())],
        Stdio::from(theirs),
        config.convert_timeout(),
    )
    .map_err(|e| Error::unavailable(format!("cannot run {:?}: {e}", config.mkfs_path)))?;
    let tar_file = match keep_tar {
        Some(t) => Some(t.create(0o600)?),
        None => None,
    };
    let mkfs_gone = Rc::new(Cell::new(false));
    let result = (|| -> Result<()> {
        let out = Tee(
            SocketWriter(ours, mkfs_gone.clone()),
            tar_file.map(io::BufWriter::new),
        );
        let mut reader = crate::tar::Reader::new(tar);
        let out = io::BufWriter::with_capacity(256 * 1024, out);
        let out = crate::layer_out::TarOut::new(out);
        let mut out = Rewriter::new(out, lowers, config.limits(), consumed)
            .run(&mut reader)?
            .finish()?;
        out.flush()
            .map_err(|e| Error::internal(format!("write to mkfs.erofs: {e}")))?;
        // Closing the socket is mkfs.erofs's end of input.
        drop(out);
        drain(reader.into_inner())
    })();
    // Our own error is the cause unless mkfs.erofs stopped reading first.
    if result.is_err() && !mkfs_gone.get() {
        child.kill();
    }
    let finished = child
        .wait()
        .map_err(|e| Error::internal(format!("wait for mkfs.erofs: {e}")))?;
    match result {
        Err(e) if !mkfs_gone.get() => Err(e),
        Ok(()) if finished.success() => Ok(()),
        _ => Err(mkfs_failure(config, "mkfs.erofs --tar", &finished, dir)),
    }
}

/// Appends the tar kept aside to the tar-index image (containerd's
/// `GenerateTarIndexAndAppendTar`).
fn append(image: &Path, tar: &Path) -> Result<()> {
    let mut src = File::open(tar).map_err(|e| Error::io("open", tar, e))?;
    let mut dst = OpenOptions::new()
        .append(true)
        .open(image)
        .map_err(|e| Error::io("open", image, e))?;
    io::copy(&mut src, &mut dst).map_err(|e| Error::io("append tar to", image, e))?;
    Ok(())
}

/// The snapshot directory that `mounts` (as this snapshotter returns them for
/// an active snapshot) write into, as containerd's `MountsToLayer` finds it.
pub(crate) fn mounts_dir(mounts: &[crate::Mount]) -> Option<PathBuf> {
    let m = mounts.last()?;
    let upper = match m.kind.as_str() {
        "bind" | "rbind" => PathBuf::from(&m.source),
        "overlay" => PathBuf::from(m.options.iter().find_map(|o| o.strip_prefix("upperdir="))?),
        _ => return None,
    };
    // A block layer's upper dir is `<dir>/rw/upper` (see `block_layer`).
    let dir = upper.parent()?;
    if upper.file_name()? == "upper" && dir.file_name()? == "rw" {
        return dir.parent().map(Path::to_path_buf);
    }
    Some(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_matches_google_uuid_new_sha1() {
        // uuid.NewSHA1(uuid.NameSpaceURL, []byte("erofs:blobs/sha256:abc")) in Go,
        // uuid.uuid5(uuid.NAMESPACE_URL, "erofs:blobs/sha256:abc") in Python.
        assert_eq!(
            layer_uuid("sha256:abc").to_string(),
            "85e718ef-380a-569e-869f-1e4fa72e8846"
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(format_of("").unwrap(), Format::Tar(Compression::Detect));
        // As containerd: a Docker layer may be compressed under this name.
        assert_eq!(
            format_of("application/vnd.docker.image.rootfs.diff.tar").unwrap(),
            Format::Tar(Compression::Detect)
        );
        assert_eq!(
            format_of("application/vnd.docker.image.rootfs.diff.tar.zstd").unwrap(),
            Format::Tar(Compression::Zstd)
        );
        assert_eq!(
            format_of("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Format::Tar(Compression::Gzip)
        );
        assert_eq!(
            format_of("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Format::Tar(Compression::Zstd)
        );
        assert_eq!(
            format_of("application/vnd.erofs.layer.v1+zstd").unwrap(),
            Format::Erofs {
                media_type: "application/vnd.erofs.layer.v1".into(),
                compression: Compression::Zstd
            }
        );
        assert!(format_of("application/vnd.erofs.layer.v1+gzip").is_err());
        assert!(format_of("application/vnd.erofs.layer.v2").is_err());
        let e = format_of("text/plain").unwrap_err();
        assert!(e.message().contains("text/plain"));
        // The list handed out is what format_of reads, without repeats.
        let listed: Vec<&str> = super::media_types().collect();
        assert_eq!(listed.len(), 13);
        for t in &listed {
            assert!(format_of(t).is_ok(), "{t}");
            assert_eq!(listed.iter().filter(|u| *u == t).count(), 1, "{t}");
        }
    }

    #[test]
    fn mounts_lead_to_the_snapshot_directory() {
        let overlay = crate::Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![
                "workdir=/r/snapshots/3/work".into(),
                "upperdir=/r/snapshots/3/fs".into(),
                "lowerdir=/r/snapshots/1/fs".into(),
            ],
        };
        assert_eq!(
            mounts_dir(&[overlay]),
            Some(PathBuf::from("/r/snapshots/3"))
        );
        let bind = crate::Mount {
            kind: "bind".into(),
            source: "/r/snapshots/4/fs".into(),
            target: None,
            options: vec![],
        };
        assert_eq!(mounts_dir(&[bind]), Some(PathBuf::from("/r/snapshots/4")));
        // Block mode: the upper dir is in the image mounted on rw/.
        let block = crate::Mount {
            kind: "bind".into(),
            source: "/r/snapshots/5/rw/upper".into(),
            target: None,
            options: vec![],
        };
        assert_eq!(mounts_dir(&[block]), Some(PathBuf::from("/r/snapshots/5")));
        let tmpfs = crate::Mount {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: None,
            options: vec![],
        };
        assert_eq!(mounts_dir(&[tmpfs]), None);
    }
}
