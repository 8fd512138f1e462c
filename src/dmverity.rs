//! dm-verity hash trees for layer blobs, in containerd 2.4's format, so a
//! layer formatted by either is mounted by the other: the tree is appended
//! to the blob itself (`veritysetup format` with the data and hash device
//! the same file), and `<blob>.dmverity` holds the root hash and where the
//! verity superblock starts.
//!
//! The layout (containerd's `internal/dmverity.FormatLayer`, go-dmverity's
//! `verity.Create`, the kernel's `Documentation/admin-guide/device-mapper/
//! verity.rst`): the blob, zeros up to the next 4 KiB boundary
//! (`hashoffset`), a 512-byte verity superblock in a 4 KiB block, then the
//! tree, its top level first. Hash type 1, SHA-256, 4 KiB data and hash
//! blocks, a salt of 32 zero bytes (containerd's default), each digest
//! `sha256(salt || block)`, 128 digests a hash block, zero padded. The root
//! hash is the digest of the top level's one block (of the one data block
//! when there is only one).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const DIGEST: usize = 32;
const PER_BLOCK: u64 = BLOCK / DIGEST as u64;
/// containerd's default salt: 64 hex zeros.
const SALT: [u8; 32] = [0; 32];
const SUPERBLOCK: usize = 512;

/// What `<blob>.dmverity` holds: containerd's `DmverityMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The root hash, lower-case hex.
    #[serde(rename = "roothash")]
    pub root_hash: String,
    /// Where the verity superblock starts: the blob's length rounded up to
    /// 4 KiB. The tree starts one block later.
    #[serde(rename = "hashoffset")]
    pub hash_offset: u64,
}

impl Metadata {
    /// The dm-verity table line for a device whose data and hash are the
    /// same block device `dev` (`MAJOR:MINOR` or a path), as the kernel's
    /// `verity` target reads it.
    pub fn table(&self, dev: &str) -> String {
        let data_blocks = self.hash_offset / BLOCK;
        let hash_start = self.hash_offset / BLOCK + 1;
        format!(
            "1 {dev} {dev} {BLOCK} {BLOCK} {data_blocks} {hash_start} sha256 {} {}",
            self.root_hash,
            crate::integrity::hex(&SALT)
        )
    }
}

/// Checks that this kernel can mount through dm-verity, as containerd's
/// `dmverity.IsSupported` (the `dm_verity` module loaded or built in), and
/// that device-mapper's control node exists; `what` names the setting that
/// asked, `otherwise` what else the user can do. Unsupported is
/// `unavailable`.
pub fn probe(what: &str, otherwise: &str) -> Result<()> {
    for (path, need) in [
        (
            "/sys/module/dm_verity",
            "the dm_verity module (modprobe dm_verity)",
        ),
        (
            "/dev/mapper/control",
            "device-mapper's control node (the dm_mod module, a devtmpfs /dev)",
        ),
    ] {
        if !Path::new(path).exists() {
            return Err(Error::unavailable(format!(
                "{what} needs dm-verity, but {path} does not exist: load {need}, or {otherwise}"
            )));
        }
    }
    Ok(())
}

/// `<blob>.dmverity`.
pub fn metadata_path(blob: &Path) -> PathBuf {
    let mut p = blob.as_os_str().to_owned();
    p.push(".dmverity");
    PathBuf::from(p)
}

/// Reads `<blob>.dmverity`; None when there is none.
pub fn read_metadata(blob: &Path) -> Result<Option<Metadata>> {
    let path = metadata_path(blob);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read dm-verity metadata", &path, e)),
    };
    let m: Metadata = serde_json::from_str(&text).map_err(|e| {
        Error::failed_precondition(format!("dm-verity metadata {}: {e}", path.display()))
    })?;
    if m.root_hash.len() != 2 * DIGEST || !m.root_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::failed_precondition(format!(
            "dm-verity metadata {}: roothash {:?} is not a SHA-256 digest in hex",
            path.display(),
            m.root_hash
        )));
    }
    if m.hash_offset == 0 || m.hash_offset % BLOCK != 0 {
        return Err(Error::failed_precondition(format!(
            "dm-verity metadata {}: hashoffset {} is not a positive multiple of {BLOCK}",
            path.display(),
            m.hash_offset
        )));
    }
    Ok(Some(m))
}

fn digest(block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(SALT);
    h.update(block);
    h.finalize().into()
}

/// Blocks of each level of the tree over `data_blocks`, leaves first
/// (none when there is one data block: the root is its digest).
fn levels(data_blocks: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(PER_BLOCK);
        out.push(n);
    }
    out
}

/// Hash blocks of the digests of `blocks` (each `BLOCK` bytes).
fn hash_level(
    blocks: impl Iterator<Item = io::Result<[u8; DIGEST]>>,
    count: u64,
) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; (count.div_ceil(PER_BLOCK) * BLOCK) as usize];
    for (i, d) in blocks.enumerate() {
        out[i * DIGEST..(i + 1) * DIGEST].copy_from_slice(&d?);
    }
    Ok(out)
}

/// Appends the hash tree to `blob` (growing it in place) and writes
/// `<blob>.dmverity` (a temporary file renamed into place): containerd's
/// `FormatLayer`. `uuid` goes in the superblock (containerd's is random; one
/// derived from the layer keeps a conversion deterministic). Returns what
/// the sidecar holds; the blob's new length is `hash_offset + 4096 + the
/// tree`.
pub fn format_layer(blob: &Path, uuid: [u8; 16]) -> Result<Metadata> {
    let meta = append_tree(blob, uuid)?;
    write_metadata(blob, &meta)?;
    Ok(meta)
}

/// The tree of [`format_layer`] only: the caller writes the sidecar (for
/// the name the blob will have) with [`write_metadata`].
pub fn append_tree(blob: &Path, uuid: [u8; 16]) -> Result<Metadata> {
    let io = |what: &'static str| move |e: io::Error| Error::io(what, blob, e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(blob)
        .map_err(io("open for dm-verity"))?;
    let len = f.metadata().map_err(io("stat"))?.len();
    if len == 0 {
        return Err(Error::invalid_argument(format!(
            "dm-verity of {}: the blob is empty",
            blob.display()
        )));
    }
    let data_blocks = len.div_ceil(BLOCK);
    let hash_offset = data_blocks * BLOCK;
    // Leaves: the data read once, the last block zero padded (the file is
    // grown with zeros to `hash_offset` below, as containerd's truncate does).
    f.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, (&f).take(len));
    let mut block = vec![0u8; BLOCK as usize];
    let leaves = (0..data_blocks).map(|_| {
        block.fill(0);
        let mut got = 0;
        while got < block.len() {
            let n = reader.read(&mut block[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(digest(&block))
    });
    let sizes = levels(data_blocks);
    let mut tree: Vec<Vec<u8>> = Vec::with_capacity(sizes.len());
    let root = if sizes.is_empty() {
        let mut only = leaves.collect::<io::Result<Vec<_>>>().map_err(io("read"))?;
        only.pop().expect("one data block")
    } else {
        tree.push(hash_level(leaves, data_blocks).map_err(io("read"))?);
        for _ in 1..sizes.len() {
            let below = tree.last().unwrap();
            let n = below.len() as u64 / BLOCK;
            let up = hash_level(below.chunks(BLOCK as usize).map(|b| Ok(digest(b))), n)
                .map_err(io("hash"))?;
            tree.push(up);
        }
        digest(tree.last().unwrap())
    };
    // The superblock, then the levels from the top down.
    let mut sb = vec![0u8; BLOCK as usize];
    sb[..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type
    sb[16..32].copy_from_slice(&uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(SALT.len() as u16).to_le_bytes());
    sb[88..88 + SALT.len()].copy_from_slice(&SALT);
    const { assert!(88 + 256 + 168 == SUPERBLOCK) };
    f.set_len(hash_offset).map_err(io("grow"))?;
    f.seek(SeekFrom::Start(hash_offset)).map_err(io("seek"))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, &f);
    w.write_all(&sb)
        .map_err(io("write dm-verity superblock to"))?;
    for level in tree.iter().rev() {
        w.write_all(level)
            .map_err(io("write dm-verity hash tree to"))?;
    }
    w.flush().map_err(io("write dm-verity hash tree to"))?;
    drop(w);
    Ok(Metadata {
        root_hash: crate::integrity::hex(&root),
        hash_offset,
    })
}

/// Writes `<blob>.dmverity` with `meta`: a temporary file renamed into place.
pub fn write_metadata(blob: &Path, meta: &Metadata) -> Result<()> {
    let path = metadata_path(blob);
    let tmp = {
        let mut p = path.as_os_str().to_owned();
        p.push(".tmp");
        PathBuf::from(p)
    };
    let text = serde_json::to_string_pretty(meta)
        .map_err(|e| Error::internal(format!("encode dm-verity metadata: {e}")))?;
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename into place", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_veritysetup() {
        assert_eq!(levels(1), Vec::<u64>::new());
        assert_eq!(levels(2), vec![1]);
        assert_eq!(levels(128), vec![1]);
        assert_eq!(levels(129), vec![2, 1]);
        assert_eq!(levels(128 * 128 + 1), vec![129, 2, 1]);
    }

    #[test]
    fn metadata_is_containerds_json() {
        let m = Metadata {
            root_hash: "ab".repeat(32),
            hash_offset: 8192,
        };
        assert_eq!(
            serde_json::to_string_pretty(&m).unwrap(),
            format!(
                "{{\n  \"roothash\": \"{}\",\n  \"hashoffset\": 8192\n}}",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            m.table("7:0"),
            format!(
                "1 7:0 7:0 4096 4096 2 3 sha256 {} {}",
                "ab".repeat(32),
                "00".repeat(32)
            )
        );
    }
}
