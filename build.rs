//! Regenerates `include/erofs_snapshotter.h` from the FFI layer with cbindgen.
//! The header is committed; CI regenerates it and fails on a difference.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must be valid");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(crate_dir.join("include/erofs_snapshotter.h"));
        }
        // A syntax error elsewhere is reported by rustc with better messages.
        Err(e) => println!("cargo:warning=cbindgen could not generate the header: {e}"),
    }
}
