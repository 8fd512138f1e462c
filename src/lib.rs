//! # erofs-snapshotter
//!
//! A containerd-style EROFS snapshotter: committed snapshots are EROFS images
//! (`layer.erofs`, built by `mkfs.erofs`), active snapshots are overlayfs
//! mounts over them. The safe Rust API is [`Snapshotter`]; the C ABI in
//! [`ffi`] (header `include/erofs_snapshotter.h`) is a thin shell over it.
//!
//! ## Error handling
//! Every fallible call returns [`Error`], whose [`ErrorKind`] is one of
//! containerd's `errdefs` classes; the C ABI maps each 1:1 to a stable status
//! code ([`ffi::status`]).
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
mod block_layer;
/// cbindgen:ignore
pub mod config;
/// cbindgen:ignore
pub mod differ;
/// cbindgen:ignore
pub mod dmverity;
/// cbindgen:ignore
pub mod error;
pub mod ffi;
/// cbindgen:ignore
pub mod filters;
/// cbindgen:ignore
pub mod idmap;
/// cbindgen:ignore
pub mod info;
/// cbindgen:ignore
pub mod integrity;
/// cbindgen:ignore
mod json;
/// cbindgen:ignore
mod layer_cache;
/// cbindgen:ignore
mod layer_mounts;
/// cbindgen:ignore
mod layer_out;
/// cbindgen:ignore
mod layer_tar;
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
pub mod mkfs;
/// cbindgen:ignore
mod mkfs_options;
/// cbindgen:ignore
pub mod mounts;
/// cbindgen:ignore
mod snapshotter;
/// cbindgen:ignore
mod subprocess;
/// cbindgen:ignore
mod sys;
/// cbindgen:ignore
mod tar;
/// cbindgen:ignore
mod trash;
/// cbindgen:ignore
mod upper_dir;

pub use config::Config;
pub use differ::{Applied, ApplyOptions};
pub use error::{Error, ErrorKind, Result};
pub use info::{Info, InfoRef, InfoUpdate, Kind, Labels, RowLabels, Timestamp, Usage};
pub use logging::{Level, Logger};
pub use mounts::{mount_all, unmount_all, Mount};
pub use snapshotter::{Snapshotter, Walked};

/// The library version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entry points of the fuzz targets in `fuzz/`; not part of the API.
/// cbindgen:ignore
#[doc(hidden)]
pub mod fuzzing {
    use crate::info::{InfoUpdate, Labels};
    use crate::json::decode;
    use crate::tar::Reader;

    /// Reads `data` as an uncompressed layer tar over no lower layers and
    /// writes the stream mkfs.erofs would get; that stream must read back
    /// with our own reader, entry for entry, as canonical paths.
    pub fn layer_tar(data: &[u8]) {
        let lowers = crate::lowers::Lowers::none();
        let limits = crate::config::Limits {
            max_layer_size: 64 << 20,
            max_file_size: 16 << 20,
            max_expansion_ratio: 100,
        };
        let consumed = || data.len() as u64;
        let mut reader = Reader::new(data);
        let out = crate::layer_out::TarOut::new(Vec::new());
        let Ok(out) = crate::layer_tar::Rewriter::new(out, &lowers, limits, &consumed)
            .run(&mut reader)
            .and_then(|o| o.finish())
        else {
            return;
        };
        let mut back = Reader::new(&out[..]);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let e = match back.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => panic!("our own output does not read back: {e}"),
            };
            assert!(
                e.path == b"."
                    || !e
                        .path
                        .split(|b| *b == b'/')
                        .any(|c| c.is_empty() || c == b"." || c == b".."),
                "a written path is not canonical: {:?}",
                String::from_utf8_lossy(&e.path)
            );
            let mut n = 0u64;
            loop {
                match back.read_data(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) => panic!("our own output does not read back: {e}"),
                }
            }
            assert_eq!(n, e.size, "data of {:?}", String::from_utf8_lossy(&e.path));
        }
        // The same layer through the built-in EROFS writer: an error or an
        // image, never a panic; the same entries are accepted either way.
        let Ok(file) = crate::sys::fs::memfd("fuzz-image") else {
            return;
        };
        let root = erofs_writer::Meta {
            mode: 0o755,
            ..Default::default()
        };
        let builder = erofs_writer::Builder::new(file, erofs_writer::Options::default(), root)
            .expect("default options");
        let out = crate::layer_out::ErofsOut::new(builder, Default::default());
        let mut reader = Reader::new(data);
        let written = crate::layer_tar::Rewriter::new(out, &lowers, limits, &consumed)
            .run(&mut reader)
            .and_then(|o| o.finish());
        assert!(
            written.is_ok(),
            "the tar output took the layer, the EROFS writer refused it: {written:?}"
        );
    }

    /// Decodes `data` as every JSON document the library takes; errors are
    /// fine, panics are not, and a message is one line.
    pub fn json_inputs(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Err(e) = crate::Config::from_json(text) {
            assert!(!e.message().contains('\n'));
        }
        if let Err(e) = decode::<Option<Labels>>(text) {
            assert!(!e.message("labels_json", Some(&[])).contains('\n'));
        }
        if let Ok(Some(labels)) = decode::<Option<Labels>>(text) {
            let _ = crate::info::validate_labels(&labels);
        }
        let _ = decode::<InfoUpdate>(text).map_err(|e| e.message("info_json", None));
        let _ = decode::<Vec<crate::Mount>>(text).map_err(|e| e.message("mounts_json", None));
        let _ = decode::<Option<Vec<String>>>(text).map(|f| {
            crate::filters::Filter::parse_all(&f.unwrap_or_default()).ok();
        });
        let _ = decode::<crate::ApplyOptions>(text);
    }
}
