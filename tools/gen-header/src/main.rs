//! Writes the C header of the erofs-snapshotter crate (the repository root,
//! two directories up) to the path given as the only argument, with the
//! settings of the root's `cbindgen.toml`.
//!
//! `make header` writes `include/erofs_snapshotter.h`; `make header-check`
//! writes to a temporary file and compares it with the committed header.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: erofs-snapshotter-gen-header OUTPUT.h");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-header: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))?;
    let bindings = cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .map_err(|e| format!("cbindgen could not generate the header: {e}"))?;
    let mut text = Vec::new();
    bindings.write(&mut text);
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))
}
