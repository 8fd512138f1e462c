//! Every system call the library makes, in one place.
//!
//! The calls go through `rustix`: safe wrappers over the raw system calls
//! with the architecture-correct encodings (ioctl numbers differ on ppc, mips
//! and sparc), the new mount API and `openat2`, which `nix` lacks. What
//! `rustix` does not wrap (loop-device ioctls that return a value, the
//! `Ioctl` descriptions themselves) is written here, each `unsafe` block with
//! its reason. No other module calls `libc` or `rustix` directly; they call
//! the functions here, which speak `std::io::Result`, `OwnedFd` and `File`.

pub(crate) mod dm;
pub(crate) mod fs;
pub(crate) mod ioctl;
pub(crate) mod mm;
pub(crate) mod mount;
pub(crate) mod process;

use std::io;

/// An `errno` value, for matching errors: `Some(Errno::NOENT)`.
pub(crate) use rustix::io::Errno;

/// The `errno` of an OS error.
pub(crate) fn errno(e: &io::Error) -> Option<Errno> {
    Errno::from_io_error(e)
}

/// An `io::Error` of `errno`.
pub(crate) fn error(e: Errno) -> io::Error {
    e.into()
}
