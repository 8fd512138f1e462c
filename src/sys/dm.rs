//! Device-mapper, through `/dev/mapper/control` (`<linux/dm-ioctl.h>`): make
//! a device, load its table, activate it, remove it (at once, or deferred
//! until its last user, the mount, goes away). What `dmsetup create`,
//! `dmsetup remove --deferred` do, without libdevmapper or udev.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{ioctl, opcode, Ioctl, IoctlOutput, Opcode};

/// `struct dm_ioctl`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; 128],
    uuid: [u8; 129],
    data: [u8; 7],
}

/// `struct dm_target_spec`, followed by its parameters (NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; 16],
}

const HEADER: usize = std::mem::size_of::<DmIoctl>();
const PAYLOAD: usize = 4096;

/// The header and room for one target's table after it.
#[repr(C, align(8))]
struct Request {
    header: DmIoctl,
    payload: [u8; PAYLOAD],
}

const DM_DEV_CREATE: Opcode = opcode::read_write::<DmIoctl>(0xfd, 3);
const DM_DEV_REMOVE: Opcode = opcode::read_write::<DmIoctl>(0xfd, 4);
const DM_DEV_SUSPEND: Opcode = opcode::read_write::<DmIoctl>(0xfd, 6);
const DM_TABLE_LOAD: Opcode = opcode::read_write::<DmIoctl>(0xfd, 9);

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;

/// An ioctl of `/dev/mapper/control` with a whole request (header and payload).
struct Call<'a, const OPCODE: Opcode>(&'a mut Request);

// SAFETY: the pointer is to a `Request` the kernel reads and writes at most
// `data_size` bytes of (its whole size).
unsafe impl<const OPCODE: Opcode> Ioctl for Call<'_, OPCODE> {
    type Output = ();
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> Opcode {
        OPCODE
    }
    fn as_ptr(&mut self) -> *mut c_void {
        (self.0 as *mut Request).cast()
    }
    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

fn request(name: &str, flags: u32) -> io::Result<Box<Request>> {
    if name.is_empty() || name.len() >= 128 || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device-mapper name {name:?}: 1 to 127 bytes, no '/'"),
        ));
    }
    let mut r = Box::new(Request {
        header: DmIoctl {
            version: [4, 0, 0],
            data_size: std::mem::size_of::<Request>() as u32,
            data_start: HEADER as u32,
            target_count: 0,
            open_count: 0,
            flags,
            event_nr: 0,
            padding: 0,
            dev: 0,
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        },
        payload: [0; PAYLOAD],
    });
    r.header.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

/// The (major, minor) of the block device open as `f`.
pub(crate) fn dev_numbers(f: &File) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    Ok(super::fs::major_minor(f.metadata()?.rdev()))
}

/// `/dev/mapper/control`.
pub(crate) fn control() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
}

/// Makes device `name` (no table yet); returns its (major, minor).
pub(crate) fn create(ctl: &impl AsFd, name: &str) -> io::Result<(u32, u32)> {
    let mut r = request(name, 0)?;
    // SAFETY: see `Call`.
    unsafe { ioctl(ctl, Call::<DM_DEV_CREATE>(&mut r)) }?;
    // The kernel's huge_encode_dev.
    let dev = r.header.dev;
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    Ok((major, minor))
}

/// Loads the one-target table `target` (`"verity"`) over `sectors` 512-byte
/// sectors with `params`, read-only, into device `name`'s inactive slot.
pub(crate) fn load_table(
    ctl: &impl AsFd,
    name: &str,
    target: &str,
    sectors: u64,
    params: &str,
) -> io::Result<()> {
    let spec = std::mem::size_of::<DmTargetSpec>();
    // The parameters NUL-terminated, the whole padded to 8 bytes.
    let used = (spec + params.len() + 1).next_multiple_of(8);
    if used > PAYLOAD || target.len() >= 16 || params.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device-mapper table of {name:?} too long or malformed"),
        ));
    }
    let mut r = request(name, DM_READONLY_FLAG)?;
    r.header.target_count = 1;
    let mut t = DmTargetSpec {
        sector_start: 0,
        length: sectors,
        status: 0,
        next: used as u32,
        target_type: [0; 16],
    };
    t.target_type[..target.len()].copy_from_slice(target.as_bytes());
    // SAFETY: DmTargetSpec is plain old data of `spec` bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts((&t as *const DmTargetSpec).cast::<u8>(), spec) };
    r.payload[..spec].copy_from_slice(bytes);
    r.payload[spec..spec + params.len()].copy_from_slice(params.as_bytes());
    // SAFETY: see `Call`.
    Ok(unsafe { ioctl(ctl, Call::<DM_TABLE_LOAD>(&mut r)) }?)
}

/// Activates the table loaded into device `name` (a resume).
pub(crate) fn resume(ctl: &impl AsFd, name: &str) -> io::Result<()> {
    let mut r = request(name, 0)?;
    // SAFETY: see `Call`.
    Ok(unsafe { ioctl(ctl, Call::<DM_DEV_SUSPEND>(&mut r)) }?)
}

/// Removes device `name`; `deferred`: once its last user has closed it
/// (now, if it has none).
pub(crate) fn remove(ctl: &impl AsFd, name: &str, deferred: bool) -> io::Result<()> {
    let mut r = request(name, if deferred { DM_DEFERRED_REMOVE } else { 0 })?;
    // SAFETY: see `Call`.
    Ok(unsafe { ioctl(ctl, Call::<DM_DEV_REMOVE>(&mut r)) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_linux() {
        assert_eq!(HEADER, 312);
        assert_eq!(std::mem::size_of::<DmTargetSpec>(), 40);
        // _IOWR(0xfd, 3, struct dm_ioctl) on x86-64 and the generic encoding.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
    }

    #[test]
    fn names_are_checked_before_any_call() {
        for bad in ["", "a/b", &"x".repeat(128)] {
            assert!(request(bad, 0).is_err(), "{bad:?}");
        }
    }
}
