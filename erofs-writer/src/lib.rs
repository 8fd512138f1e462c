//! # erofs-writer
//!
//! Writes uncompressed EROFS images (the kernel's read-only filesystem) in
//! one pass: entries are added by path, each regular file's data is written
//! to its final place in the image as it is added (streamed from a reader,
//! or copied from a file with `copy_file_range`), and [`Builder::finish`]
//! writes the metadata after the data and the superblock last. Nothing is
//! read back, nothing is written twice.
//!
//! It knows nothing of containers: a tar or directory front end decides
//! what goes in. What it writes (see `docs/erofs-writer.md` in the
//! repository for the on-disk choices):
//!
//! - regular files, plain (contiguous blocks) or chunk-based when sparse
//!   (chunks with no data get no blocks: holes stay holes);
//! - directories of any size (sorted entries packed into blocks, small ones
//!   inline after their inode), symlinks (inline), character and block
//!   devices, fifos, sockets, hard links;
//! - xattrs of the `user.`, `trusted.`, `security.` namespaces and POSIX
//!   ACLs, inline, and shared when two inodes or more carry the same one;
//! - 32-byte compact inodes where the attributes fit, 64-byte extended ones
//!   otherwise (owners past 65535, sizes past 4 GiB, nanosecond mtimes other
//!   than the image's build time);
//! - overlayfs whiteouts (0/0 character devices; their directory gets an
//!   empty `trusted.overlay.origin` so overlayfs never lists them).
//!
//! The same entries in the same order give the same bytes.

mod builder;
pub mod format;
pub mod tree;

pub use builder::Builder;

/// How to build the image.
#[derive(Debug, Clone)]
pub struct Options {
    /// log2 of the block size (12: 4 KiB, the default).
    pub block_size_bits: u8,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// The build time compact inodes take as their mtime (seconds,
    /// nanoseconds); `None`: the most common mtime of the image.
    pub build_time: Option<(u64, u32)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            block_size_bits: 12,
            uuid: [0; 16],
            build_time: None,
        }
    }
}

/// The attributes of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits, with set-uid, set-gid and sticky (the type comes
    /// from what is added).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Extended attributes, full names.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The entries without data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// Why an entry or the image could not be written.
#[derive(Debug)]
pub enum Error {
    /// What was added cannot be written (a bad name, a missing parent, a
    /// hard link to nothing); the message names the path.
    Invalid(String),
    /// Reading an entry's data failed.
    Read(std::io::Error),
    /// Writing the image failed.
    Write(std::io::Error),
}

impl Error {
    pub(crate) fn invalid(message: String) -> Error {
        Error::Invalid(message)
    }
    pub(crate) fn read(e: std::io::Error) -> Error {
        Error::Read(e)
    }
    pub(crate) fn write(e: std::io::Error) -> Error {
        Error::Write(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(m) => f.write_str(m),
            Error::Read(e) => write!(f, "read entry data: {e}"),
            Error::Write(e) => write!(f, "write image: {e}"),
        }
    }
}

impl std::error::Error for Error {}
