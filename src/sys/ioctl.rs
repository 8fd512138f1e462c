//! The ioctls the library uses: inode flags, fs-verity, loop devices. The
//! `_IOC`-encoded numbers are computed per architecture by
//! `rustix::ioctl::opcode`; the loop-device numbers are plain constants on
//! every architecture (`<linux/loop.h>`).

use std::ffi::{c_int, c_long, c_void};
use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{
    ioctl, opcode, Getter, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, Updater,
};

/// `FS_IMMUTABLE_FL` from `<linux/fs.h>`.
pub(crate) const FS_IMMUTABLE_FL: c_int = 0x10;

/// `_IOR('f', 1, long)`: the kernel reads and writes an `int` through it.
const FS_IOC_GETFLAGS: Opcode = opcode::read::<c_long>(b'f', 1);
/// `_IOW('f', 2, long)`.
const FS_IOC_SETFLAGS: Opcode = opcode::write::<c_long>(b'f', 2);
/// `_IOW('f', 133, struct fsverity_enable_arg)`.
const FS_IOC_ENABLE_VERITY: Opcode = opcode::write::<FsverityEnableArg>(b'f', 133);
/// `_IOWR('f', 134, struct fsverity_digest)`: the header only, the digest
/// follows it.
const FS_IOC_MEASURE_VERITY: Opcode = opcode::read_write::<[u16; 2]>(b'f', 134);

/// The inode flags of an open file (`FS_IOC_GETFLAGS`).
pub(crate) fn inode_flags(f: &impl AsFd) -> io::Result<c_int> {
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer.
    Ok(unsafe { ioctl(f, Getter::<FS_IOC_GETFLAGS, c_int>::new()) }?)
}

/// Sets the inode flags of an open file (`FS_IOC_SETFLAGS`).
pub(crate) fn set_inode_flags(f: &impl AsFd, flags: c_int) -> io::Result<()> {
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer.
    Ok(unsafe { ioctl(f, Setter::<FS_IOC_SETFLAGS, c_int>::new(flags)) }?)
}

/// `struct fsverity_enable_arg` from `<linux/fsverity.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsverityEnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

const FS_VERITY_HASH_ALG_SHA256: u32 = 1;
/// Room for the largest digest (SHA-512).
const MAX_DIGEST: usize = 64;

/// Enables fs-verity with SHA-256 and `block_size` blocks on a file opened
/// read-only (no writable descriptor may be open on it).
pub(crate) fn enable_verity(f: &impl AsFd, block_size: u32) -> io::Result<()> {
    let arg = FsverityEnableArg {
        version: 1,
        hash_algorithm: FS_VERITY_HASH_ALG_SHA256,
        block_size,
        ..Default::default()
    };
    // SAFETY: the kernel reads a struct fsverity_enable_arg through the
    // pointer; salt and signature pointers are null with sizes 0.
    Ok(unsafe {
        ioctl(
            f,
            Setter::<FS_IOC_ENABLE_VERITY, FsverityEnableArg>::new(arg),
        )
    }?)
}

/// `struct fsverity_digest` followed by room for the largest digest.
#[repr(C)]
struct FsverityDigest {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; MAX_DIGEST],
}

/// The fs-verity digest of a file: its algorithm number and its bytes.
/// `ENODATA` when fs-verity is not enabled on it.
pub(crate) fn measure_verity(f: &impl AsFd) -> io::Result<(u16, Vec<u8>)> {
    let mut d = FsverityDigest {
        digest_algorithm: 0,
        digest_size: MAX_DIGEST as u16,
        digest: [0; MAX_DIGEST],
    };
    // SAFETY: digest_size tells the kernel how much room follows the header,
    // which the struct provides.
    unsafe {
        ioctl(
            f,
            Updater::<FS_IOC_MEASURE_VERITY, FsverityDigest>::new(&mut d),
        )
    }?;
    let n = usize::from(d.digest_size).min(MAX_DIGEST);
    Ok((d.digest_algorithm, d.digest[..n].to_vec()))
}

// ---- loop devices -------------------------------------------------------

const LOOP_SET_FD: Opcode = 0x4C00;
const LOOP_CLR_FD: Opcode = 0x4C01;
const LOOP_SET_STATUS64: Opcode = 0x4C04;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
pub(crate) const LO_FLAGS_READ_ONLY: u32 = 1;
pub(crate) const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    /// Flags `flags`, the backing file's name (for losetup) `name`, cut to fit.
    pub fn new(flags: u32, name: &[u8]) -> LoopInfo64 {
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        info
    }
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An ioctl without argument whose result is its return value.
struct ReturnsInt<const OPCODE: Opcode>;

// SAFETY: no pointer is passed; the output is the call's return value.
unsafe impl<const OPCODE: Opcode> Ioctl for ReturnsInt<OPCODE> {
    type Output = c_int;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        OPCODE
    }
    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::null_mut()
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<c_int> {
        Ok(out)
    }
}

/// The number of a free loop device, from `/dev/loop-control`.
pub(crate) fn loop_get_free(ctl: &impl AsFd) -> io::Result<c_int> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
    Ok(unsafe { ioctl(ctl, ReturnsInt::<LOOP_CTL_GET_FREE>) }?)
}

/// Attaches `backing` to loop device `dev` with `info`, in one step
/// (`LOOP_CONFIGURE`, Linux 5.8).
pub(crate) fn loop_configure(
    dev: &impl AsFd,
    backing: &impl AsFd,
    info: LoopInfo64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let cfg = LoopConfig {
        fd: backing.as_fd().as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: the kernel reads a struct loop_config through the pointer.
    Ok(unsafe { ioctl(dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(cfg)) }?)
}

/// Attaches `backing` to loop device `dev` (`LOOP_SET_FD`).
pub(crate) fn loop_set_fd(dev: &impl AsFd, backing: &impl AsFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = backing.as_fd().as_raw_fd() as usize;
    // SAFETY: LOOP_SET_FD takes the backing descriptor by value.
    Ok(unsafe { ioctl(dev, IntegerSetter::<LOOP_SET_FD>::new_usize(fd)) }?)
}

/// Sets the status (flags, name) of loop device `dev` (`LOOP_SET_STATUS64`).
pub(crate) fn loop_set_status(dev: &impl AsFd, info: LoopInfo64) -> io::Result<()> {
    // SAFETY: the kernel reads a struct loop_info64 through the pointer.
    Ok(unsafe { ioctl(dev, Setter::<LOOP_SET_STATUS64, LoopInfo64>::new(info)) }?)
}

/// Detaches loop device `dev` (`LOOP_CLR_FD`).
pub(crate) fn loop_clear(dev: &impl AsFd) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    Ok(unsafe { ioctl(dev, NoArg::<LOOP_CLR_FD>::new()) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_linux() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::size_of::<FsverityEnableArg>(), 128);
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn opcodes_match_the_generic_encoding() {
        // The values <linux/fs.h> gives on x86_64 and arm64.
        assert_eq!(FS_IOC_GETFLAGS as u64, 0x8008_6601);
        assert_eq!(FS_IOC_SETFLAGS as u64, 0x4008_6602);
        assert_eq!(FS_IOC_ENABLE_VERITY as u64, 0x4080_6685);
        assert_eq!(FS_IOC_MEASURE_VERITY as u64, 0xc004_6686);
    }
}

/// One extent of `struct fiemap_extent` (`<linux/fiemap.h>`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// Extents asked for per `FS_IOC_FIEMAP` call.
const FIEMAP_BATCH: usize = 32;

/// `struct fiemap` with room for [`FIEMAP_BATCH`] extents.
#[repr(C)]
#[derive(Default)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; FIEMAP_BATCH],
}

/// `_IOWR('f', 11, struct fiemap)`: the header's size is what the number encodes.
const FS_IOC_FIEMAP: Opcode = opcode::read_write::<[u64; 4]>(b'f', 11);
/// `FIEMAP_FLAG_SYNC`: write the file's dirty pages back first.
pub(crate) const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Allocated but never written: reads as zeros.
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// Whether some extent of the first `len` bytes of a file is allocated but
/// not written: what a crash leaves of data that had not reached the disk
/// on ext4 and xfs (it reads as zeros), by `FS_IOC_FIEMAP` with `flags`:
/// the extent map only, no data read. (Holes are not counted: a sparse file
/// is fine.) Extents whose write-back is still under way count too, unless
/// `flags` has [`FIEMAP_FLAG_SYNC`]. `EOPNOTSUPP` where the filesystem has
/// no extent map.
pub(crate) fn has_unwritten(f: &impl AsFd, len: u64, flags: u32) -> io::Result<bool> {
    let mut next = 0u64;
    while next < len {
        let mut m = Fiemap {
            start: next,
            length: len - next,
            flags,
            extent_count: FIEMAP_BATCH as u32,
            ..Default::default()
        };
        // SAFETY: extent_count tells the kernel how many extents follow the
        // header, which the struct provides room for.
        unsafe { ioctl(f, Updater::<FS_IOC_FIEMAP, Fiemap>::new(&mut m)) }?;
        let got = &m.extents[..(m.mapped_extents as usize).min(FIEMAP_BATCH)];
        if got.iter().any(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0) {
            return Ok(true);
        }
        match got.last() {
            Some(e) if e.flags & FIEMAP_EXTENT_LAST == 0 => next = e.logical + e.length,
            _ => break,
        }
    }
    Ok(false)
}
