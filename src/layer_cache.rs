//! Layer content caches, containerd's `layer_content_caches`: read-only
//! directories of pre-converted EROFS layers, typically on storage a fleet
//! shares, so each layer is converted once. A file is found by the layer's
//! diffID at `<dir>/<algorithm>/<first two hex digits>/<hex>.erofs`
//! (containerd's `erofsutils.CacheBlobPath`), and an image-layer
//! extraction (a `prepare` carrying containerd's `snapshot.ref` and
//! `snapshot/diff-id` labels) that finds its layer there uses that file as
//! its blob: nothing is fetched, applied or converted.
//!
//! Before use a file is checked: a regular file holding an EROFS superblock
//! whose recorded size it has (a copy cut short is refused), and, when the
//! file has fs-verity, its digest is recorded so every later mount compares
//! it. The size is recorded too, like a blob's at commit. A file that fails
//! a check is a miss (logged): the layer is converted as usual. The
//! library never writes to a cache; [`export`] fills one from a root.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::info::{BlobRecord, Labels};
use crate::integrity;
use crate::logging::Logger;

/// Set by containerd's unpacker on the `prepare` of each layer it extracts.
pub(crate) const LABEL_REF: &str = "containerd.io/snapshot.ref";
/// The layer's diffID (the digest of its uncompressed tar), same origin.
pub(crate) const LABEL_DIFF_ID: &str = "containerd.io/snapshot/diff-id";

const EROFS_SUPER_OFFSET: u64 = 1024;
const EROFS_SUPER_MAGIC_V1: u32 = 0xE0F5_E1E2;

/// The cache file of diffID `diff_id` under `dir`, or why `diff_id` is not
/// a digest (containerd's `digest.Parse`: a known algorithm and as many
/// lowercase hex digits as it makes).
pub(crate) fn blob_path(dir: &Path, diff_id: &str) -> std::result::Result<PathBuf, String> {
    let (algorithm, hex) = diff_id
        .split_once(':')
        .ok_or_else(|| format!("{diff_id:?} is not a digest (algorithm:hex)"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "{diff_id:?}: unknown digest algorithm {algorithm:?}"
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "{diff_id:?}: a {algorithm} digest is {len} lowercase hex digits"
        ));
    }
    Ok(dir
        .join(algorithm)
        .join(&hex[..2])
        .join(format!("{hex}.erofs")))
}

/// The cache file serving the layer a `prepare` with `labels` extracts, if
/// any cache of `dirs` has one that passes the checks.
pub(crate) fn lookup(dirs: &[PathBuf], labels: &Labels, log: &Logger) -> Option<BlobRecord> {
    if dirs.is_empty() || labels.get(LABEL_REF).is_none_or(|r| r.is_empty()) {
        return None;
    }
    let diff_id = labels.get(LABEL_DIFF_ID)?;
    for dir in dirs {
        let path = match blob_path(dir, diff_id) {
            Ok(p) => p,
            Err(e) => {
                log.warn(format_args!(
                    "layer content cache: label {LABEL_DIFF_ID}: {e}; converting the layer"
                ));
                return None;
            }
        };
        match check(&path) {
            Ok(blob) => return Some(blob),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // An unreadable cache (a network mount down) or a damaged file
            // must not fail the pull, nor hide a later cache.
            Err(e) => log.warn(format_args!(
                "layer content cache: {}: {e}; not using it",
                path.display()
            )),
        }
    }
    None
}

/// What a cache file is, if it may serve a layer: see the module's doc.
fn check(path: &Path) -> io::Result<BlobRecord> {
    // The operator's layout may use links; what is recorded is the file.
    let real = fs::canonicalize(path)?;
    let mut f = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&real)?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut sb = [0u8; 64];
    f.seek(SeekFrom::Start(EROFS_SUPER_OFFSET))?;
    f.read_exact(&mut sb)
        .map_err(|_| io::Error::other(format!("{} bytes: too short for EROFS", md.size())))?;
    let word = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().unwrap());
    if word(0) != EROFS_SUPER_MAGIC_V1 {
        return Err(io::Error::other("no EROFS superblock"));
    }
    let blkszbits = sb[12];
    if !(9..=16).contains(&blkszbits) {
        return Err(io::Error::other(format!(
            "EROFS superblock: block size 2^{blkszbits} is not valid"
        )));
    }
    let want = u64::from(word(36)) << blkszbits;
    if md.size() < want {
        return Err(io::Error::other(format!(
            "{} bytes, but its superblock says {want}: cut short",
            md.size()
        )));
    }
    Ok(BlobRecord {
        size: md.size(),
        // Recorded when the file has it; then compared at every mount.
        verity_digest: integrity::measure_verity(&real).ok(),
        path: Some(real),
    })
}

/// Copies `blob` (a committed layer) into cache `dir` as the layer with
/// diffID `diff_id`, unless a file that passes the checks is there: written
/// to a temporary file, flushed and renamed into place, so a reader never
/// sees it half written. Returns the cache file's path.
pub(crate) fn export(blob: &Path, dir: &Path, diff_id: &str) -> Result<PathBuf> {
    let dest = blob_path(dir, diff_id)
        .map_err(|e| Error::invalid_argument(format!("label {LABEL_DIFF_ID}: {e}")))?;
    // A layer with a dm-verity tree takes its sidecar along (written
    // before the blob is renamed into place: a reader that finds the blob
    // finds the sidecar), as containerd's caches hold them.
    let verity = crate::dmverity::read_metadata(blob)?;
    if check(&dest).is_ok() {
        return Ok(dest);
    }
    let parent = dest.parent().unwrap_or(dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| Error::io("create directory", parent, e))?;
    let (tmp, mut out) = crate::layout::unique_file(parent, ".tmp-", 0o644)?;
    let result = (|| {
        let mut src = File::open(blob).map_err(|e| Error::io("open", blob, e))?;
        io::copy(&mut src, &mut out).map_err(|e| Error::io("copy layer to", &tmp, e))?;
        out.sync_all().map_err(|e| Error::io("flush", &tmp, e))?;
        if let Some(meta) = &verity {
            crate::dmverity::write_metadata(&dest, meta)?;
        }
        fs::rename(&tmp, &dest).map_err(|e| Error::io("rename into place", &dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_containerds() {
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_path(Path::new("/c"), &format!("sha256:{hex}")).unwrap(),
            PathBuf::from(format!("/c/sha256/ab/{hex}.erofs"))
        );
        for bad in [
            "",
            "sha256",
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(blob_path(Path::new("/c"), bad).is_err(), "{bad:?}");
        }
        // Nothing in a label can leave the cache directory.
        assert!(blob_path(Path::new("/c"), &format!("sha256:../{}", "a".repeat(61))).is_err());
    }
}
