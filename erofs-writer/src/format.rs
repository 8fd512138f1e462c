//! The on-disk structures this writer emits, as the kernel's
//! `fs/erofs/erofs_fs.h` defines them (little endian, packed as written).

/// `EROFS_SUPER_MAGIC_V1`.
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// The superblock lies 1024 bytes into the image.
pub const SUPER_OFFSET: u64 = 1024;
/// Its size (no extension slots).
pub const SUPER_SIZE: usize = 128;

pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x1;
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
pub const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x4;

/// Data layouts (`i_format` bits 1..3).
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_FLAT_INLINE: u16 = 2;
pub const LAYOUT_CHUNK_BASED: u16 = 4;

/// A block address meaning "no block" (a hole, or no data).
pub const NULL_ADDR: u32 = u32::MAX;

pub const COMPACT_INODE_SIZE: usize = 32;
pub const EXTENDED_INODE_SIZE: usize = 64;
/// Inodes are addressed in 32-byte slots (their nid).
pub const INODE_SLOT: u64 = 32;

pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
pub const XATTR_ENTRY_HEADER_SIZE: usize = 4;

pub const XATTR_INDEX_USER: u8 = 1;
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
pub const XATTR_INDEX_TRUSTED: u8 = 4;
pub const XATTR_INDEX_SECURITY: u8 = 6;

pub const DIRENT_SIZE: usize = 12;

/// Directory entry file types.
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Linux's `new_encode_dev` (what the kernel's EROFS reads back).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The superblock fields this writer sets.
#[derive(Debug, Clone, Default)]
pub struct SuperBlock {
    pub blkszbits: u8,
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub build_time_nsec: u32,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_compat: u32,
    pub feature_incompat: u32,
}

impl SuperBlock {
    /// The 128 bytes, with the checksum field zero (see [`super_checksum`]).
    pub fn encode(&self) -> [u8; SUPER_SIZE] {
        let mut b = [0u8; SUPER_SIZE];
        b[0..4].copy_from_slice(&SUPER_MAGIC.to_le_bytes());
        // 4..8 checksum
        b[8..12].copy_from_slice(&self.feature_compat.to_le_bytes());
        b[12] = self.blkszbits;
        b[13] = 0; // sb_extslots
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        b[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        b[32..36].copy_from_slice(&self.build_time_nsec.to_le_bytes());
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        b[44..48].copy_from_slice(&self.xattr_blkaddr.to_le_bytes());
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        b[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        // 84..86 compression, 86..88 extra_devices, 88..90 devt_slotoff,
        // 90 dirblkbits (0: one block), 91 xattr_prefix_count,
        // 92..96 xattr_prefix_start, 96..104 packed_nid, 104.. reserved
        b
    }
}

/// The superblock checksum: CRC32C over the rest of block 0 from the
/// superblock on, with the checksum field zero, seeded with !0 (the
/// kernel's `erofs_superblock_csum_verify`).
pub fn super_checksum(block_from_super: &[u8]) -> u32 {
    crc32c(!0, block_from_super)
}

/// CRC32C (Castagnoli), without the final inversion (as the kernel's
/// `crc32c()` library call returns it).
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The fields of an on-disk inode.
#[derive(Debug, Clone, Default)]
pub struct Inode {
    pub extended: bool,
    pub layout: u16,
    pub xattr_icount: u16,
    pub mode: u32,
    pub nlink: u32,
    pub size: u64,
    /// `raw_blkaddr`, `rdev`, or the chunk format.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
}

impl Inode {
    pub fn encoded_size(&self) -> usize {
        if self.extended {
            EXTENDED_INODE_SIZE
        } else {
            COMPACT_INODE_SIZE
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let format = u16::from(self.extended) | (self.layout << 1);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&self.xattr_icount.to_le_bytes());
        out.extend_from_slice(&(self.mode as u16).to_le_bytes());
        if self.extended {
            out.extend_from_slice(&0u16.to_le_bytes()); // i_reserved
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&self.uid.to_le_bytes());
            out.extend_from_slice(&self.gid.to_le_bytes());
            out.extend_from_slice(&self.mtime.to_le_bytes());
            out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
            out.extend_from_slice(&self.nlink.to_le_bytes());
            out.extend_from_slice(&[0u8; 16]);
        } else {
            out.extend_from_slice(&(self.nlink as u16).to_le_bytes());
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes()); // i_reserved
            out.extend_from_slice(&self.i_u.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&(self.uid as u16).to_le_bytes());
            out.extend_from_slice(&(self.gid as u16).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes()); // i_reserved2
        }
    }
}

/// An xattr name split as EROFS stores it: a prefix index and the rest.
/// `None` for names outside the namespaces EROFS indexes.
pub fn xattr_index(name: &[u8]) -> Option<(u8, &[u8])> {
    const PREFIXES: [(&[u8], u8); 3] = [
        (b"user.", XATTR_INDEX_USER),
        (b"trusted.", XATTR_INDEX_TRUSTED),
        (b"security.", XATTR_INDEX_SECURITY),
    ];
    match name {
        b"system.posix_acl_access" => return Some((XATTR_INDEX_POSIX_ACL_ACCESS, b"")),
        b"system.posix_acl_default" => return Some((XATTR_INDEX_POSIX_ACL_DEFAULT, b"")),
        _ => {}
    }
    PREFIXES.iter().find_map(|(p, i)| {
        name.strip_prefix(*p)
            .filter(|s| !s.is_empty())
            .map(|s| (*i, s))
    })
}

/// One xattr entry, padded to 4 bytes.
pub fn encode_xattr_entry(out: &mut Vec<u8>, index: u8, suffix: &[u8], value: &[u8]) {
    out.push(suffix.len() as u8);
    out.push(index);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The size of an entry as [`encode_xattr_entry`] writes it.
pub fn xattr_entry_size(suffix_len: usize, value_len: usize) -> usize {
    (XATTR_ENTRY_HEADER_SIZE + suffix_len + value_len).next_multiple_of(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn inode_sizes() {
        let mut v = Vec::new();
        Inode::default().encode(&mut v);
        assert_eq!(v.len(), COMPACT_INODE_SIZE);
        v.clear();
        Inode {
            extended: true,
            ..Default::default()
        }
        .encode(&mut v);
        assert_eq!(v.len(), EXTENDED_INODE_SIZE);
    }

    #[test]
    fn device_numbers_encode_as_linux_does() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(4095, 1048575), 0xffff_ffff);
    }

    #[test]
    fn xattr_prefixes() {
        assert_eq!(xattr_index(b"user.a"), Some((1, &b"a"[..])));
        assert_eq!(
            xattr_index(b"security.capability"),
            Some((6, &b"capability"[..]))
        );
        assert_eq!(xattr_index(b"system.posix_acl_access"), Some((2, &b""[..])));
        assert_eq!(xattr_index(b"user."), None);
        assert_eq!(xattr_index(b"other.x"), None);
    }
}
