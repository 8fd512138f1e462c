//! Build script: the shared library's SONAME.
//!
//! `liberofs_snapshotter.so` is linked with the SONAME
//! `liberofs_snapshotter.so.0` (the ABI number: README "Linking" says what
//! changes it), so a program records that name, not the build tree's path
//! or file. Programs linked in the build tree (`-L target/release`) look it
//! up there too: the link `target/<profile>/liberofs_snapshotter.so.0 ->
//! liberofs_snapshotter.so` is made here (it dangles until the first link).
//! `make install` installs the file as `liberofs_snapshotter.so.<version>`
//! with both names as links.

use std::path::PathBuf;

/// The ABI number: the `.so.N` of the SONAME.
const SOVERSION: u32 = 0;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liberofs_snapshotter.so.{SOVERSION}");
    // OUT_DIR is target/<profile>/build/<package>-<hash>/out.
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join(format!("liberofs_snapshotter.so.{SOVERSION}"));
    if std::fs::symlink_metadata(&link).is_err() {
        // A failure only means build-tree programs need LD_LIBRARY_PATH.
        let _ = std::os::unix::fs::symlink("liberofs_snapshotter.so", &link);
    }
}
