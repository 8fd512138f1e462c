//! # erofs-snapshotter
//!
//! A containerd-style EROFS snapshotter: committed snapshots are EROFS images
//! (`layer.erofs`, built by `mkfs.erofs`), active snapshots are overlayfs
//! mounts over them. The safe Rust API is [`Snapshotter`]; the C ABI in
//! [`ffi`] (header `include/erofs_snapshotter.h`) is a thin shell over it.
//!
//! ## Error handling
//! Every fallible call returns [`Error`], whose [`ErrorKind`] is one of
//! containerd's `errdefs` classes and maps 1:1 to a stable C status code.
//! Messages are one line and name the key, path, field or option at fault.
//!
//! ## Thread safety
//! A [`Snapshotter`] is `Send + Sync`: any number of threads may call it at
//! once. Several processes may open the same root at once; the metadata is
//! in SQLite (WAL) and directories are created and retired under flocks.
//!
//! ## Compatibility
//! The status codes and JSON shapes of the C ABI are stable; new functions
//! may be added, existing ones keep their signatures and meaning.

/// cbindgen:ignore
pub mod config;
/// cbindgen:ignore
pub mod differ;
/// cbindgen:ignore
pub mod erofs;
/// cbindgen:ignore
pub mod error;
pub mod ffi;
/// cbindgen:ignore
pub mod filters;
/// cbindgen:ignore
pub mod info;
/// cbindgen:ignore
pub mod integrity;
/// cbindgen:ignore
mod json;
/// cbindgen:ignore
mod layer_tar;
/// cbindgen:ignore
mod layers;
/// cbindgen:ignore
mod layout;
/// cbindgen:ignore
pub mod logging;
/// cbindgen:ignore
mod loopdev;
/// cbindgen:ignore
mod lowers;
/// cbindgen:ignore
mod metastore;
/// cbindgen:ignore
pub mod mounts;
/// cbindgen:ignore
mod snapshotter;
/// cbindgen:ignore
mod subprocess;
/// cbindgen:ignore
mod tar;

pub use config::Config;
pub use differ::{Applied, ApplyOptions};
pub use error::{Error, ErrorKind, Result};
pub use info::{Info, InfoUpdate, Kind, Labels, Timestamp, Usage};
pub use logging::{Level, Logger};
pub use mounts::{mount_all, unmount_all, Mount};
pub use snapshotter::Snapshotter;

/// The library version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
