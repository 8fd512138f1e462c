//! The EROFS differ: an OCI layer (tar, gzip or zstd; or a native EROFS
//! blob) goes straight into `layer.erofs` of an active snapshot, converted by
//! `mkfs.erofs --tar`, instead of being unpacked into the upper dir and
//! converted again at commit.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::erofs::{mkfs_failure, TempBlob};
use crate::error::{Error, Result};
use crate::layer_tar::Rewriter;
use crate::lowers::Lowers;
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
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Declared::Tar(Compression::None),
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
pub(crate) fn layer_uuid(digest: &str) -> String {
    use sha1::Sha1;
    const NAMESPACE_URL: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let mut h = Sha1::new();
    h.update(NAMESPACE_URL);
    h.update(format!("erofs:blobs/{digest}").as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A reader that hashes (SHA-256) and counts what passes through; the count
/// can be read from elsewhere while the reader is lent out.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: Rc::new(Cell::new(0)),
        }
    }

    fn digest(self) -> (String, u64) {
        let d = self.hash.finalize();
        (
            format!("sha256:{}", crate::integrity::hex(&d)),
            self.count.get(),
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Decompresses `r` as declared; a mismatch between declared and actual
/// compression is a clear error rather than a corrupt-tar one.
fn decompressor<'a, R: BufRead + 'a>(
    mut r: R,
    declared: Compression,
) -> Result<Box<dyn Read + 'a>> {
    let head = r
        .fill_buf()
        .map_err(|e| Error::internal(format!("read layer: {e}")))?;
    let actual = magic(head);
    let empty = head.is_empty();
    let chosen = match declared {
        Compression::Detect => actual,
        d if empty => d,
        d if d == actual => d,
        d => {
            let name = |c: Compression| match c {
                Compression::Gzip => "gzip-compressed",
                Compression::Zstd => "zstd-compressed",
                _ => "uncompressed",
            };
            return Err(Error::invalid_argument(format!(
                "the media type says the layer is {} but the data is {}",
                name(d),
                name(actual)
            )));
        }
    };
    Ok(match chosen {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(r)
                .map_err(|e| Error::internal(format!("start zstd decoder: {e}")))?,
        ),
        _ => Box::new(r),
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
        loop {
            // SAFETY: a valid socket and buffer.
            let n = unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
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

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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
    input: &mut dyn Read,
    opts: &ApplyOptions,
    lowers: &Lowers,
) -> Result<Applied> {
    let format = format_of(&opts.media_type)?;
    let mut raw = Hashing::new(BufReader::with_capacity(256 * 1024, input));
    let applied = match format {
        Format::Erofs {
            media_type,
            compression,
        } => {
            let mut stream = Hashing::new(decompressor(BufReader::new(&mut raw), compression)?);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp.path)
                .map_err(|e| Error::io("create", &tmp.path, e))?;
            io::copy(&mut stream, &mut f).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                    Error::invalid_argument(format!("layer data is corrupt: {e}"))
                }
                _ => Error::io("write", &tmp.path, e),
            })?;
            let (digest, size) = stream.digest();
            Applied {
                digest,
                size,
                media_type,
            }
        }
        Format::Tar(compression) => {
            let uuid = opts.digest.as_deref().map(layer_uuid);
            let keep_tar = if config.enable_tar_index {
                Some(TempBlob::with_suffix(tmp, "tar"))
            } else {
                None
            };
            let (digest, size) = convert_tar(
                config,
                tmp,
                &mut raw,
                compression,
                uuid.as_deref(),
                lowers,
                keep_tar.as_ref(),
            )?;
            if let Some(tar) = &keep_tar {
                append(&tmp.path, &tar.path)?;
            }
            Applied {
                digest,
                size,
                media_type: MEDIA_TYPE_TAR.to_string(),
            }
        }
    };
    // The rest of the input (padding after the archive) still counts for the digest.
    io::copy(&mut raw, &mut io::sink()).map_err(|e| Error::internal(format!("read layer: {e}")))?;
    if let Some(want) = &opts.digest {
        let (got, _) = raw.digest();
        if &got != want {
            return Err(Error::invalid_argument(format!(
                "layer digest mismatch: the descriptor says {want}, the data is {got}"
            )));
        }
    }
    Ok(applied)
}

fn convert_tar<R: Read>(
    config: &Config,
    tmp: &TempBlob,
    raw: &mut Hashing<R>,
    compression: Compression,
    uuid: Option<&str>,
    lowers: &Lowers,
    keep_tar: Option<&TempBlob>,
) -> Result<(String, u64)> {
    let (ours, theirs) = socketpair().map_err(|e| Error::internal(format!("socketpair: {e}")))?;
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
        Some(t) => Some(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&t.path)
                .map_err(|e| Error::io("create", &t.path, e))?,
        ),
        None => None,
    };
    let consumed = raw.count.clone();
    let consumed = move || consumed.get();
    let mkfs_gone = Rc::new(Cell::new(false));
    let result = (|| -> Result<(String, u64)> {
        let tar = Hashing::new(decompressor(BufReader::new(raw), compression)?);
        let out = Tee(
            SocketWriter(ours, mkfs_gone.clone()),
            tar_file.map(io::BufWriter::new),
        );
        let mut reader = crate::tar::Reader::new(tar);
        let out = io::BufWriter::with_capacity(256 * 1024, out);
        let mut out = Rewriter::new(out, lowers, config.limits(), &consumed).run(&mut reader)?;
        out.flush()
            .map_err(|e| Error::internal(format!("write to mkfs.erofs: {e}")))?;
        // Closing the socket is mkfs.erofs's end of input.
        drop(out);
        // Whatever follows the end-of-archive marker still belongs to the diffID.
        let mut tar = reader.into_inner();
        io::copy(&mut tar, &mut io::sink()).map_err(|e| {
            Error::invalid_argument(format!("layer data is corrupt after the archive: {e}"))
        })?;
        Ok(tar.digest())
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
        Ok(v) if finished.success() => Ok(v),
        _ => Err(mkfs_failure(config, "mkfs.erofs --tar", &finished, dir)),
    }
}

/// Appends the tar kept aside to the tar-index image (containerd's
/// `GenerateTarIndexAndAppendTar`).
fn append(image: &Path, tar: &Path) -> Result<()> {
    let mut src = File::open(tar).map_err(|e| Error::io("open", tar, e))?;
    let mut dst = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_CLOEXEC)
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
    upper.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_matches_google_uuid_new_sha1() {
        // uuid.NewSHA1(uuid.NameSpaceURL, []byte("erofs:blobs/sha256:abc")) in Go,
        // uuid.uuid5(uuid.NAMESPACE_URL, "erofs:blobs/sha256:abc") in Python.
        assert_eq!(
            layer_uuid("sha256:abc"),
            "85e718ef-380a-569e-869f-1e4fa72e8846"
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(format_of("").unwrap(), Format::Tar(Compression::Detect));
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
        assert_eq!(listed.len(), 11);
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
        let tmpfs = crate::Mount {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: None,
            options: vec![],
        };
        assert_eq!(mounts_dir(&[tmpfs]), None);
    }
}
