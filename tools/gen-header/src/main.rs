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
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))?;
    config.after_includes = Some(version_macros(&root)?);
    let bindings = cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .map_err(|e| format!("cbindgen could not generate the header: {e}"))?;
    let mut text = Vec::new();
    bindings.write(&mut text);
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))
}

/// The version macros, from the root's `Cargo.toml` (the package's
/// `version`) and `build.rs` (`SOVERSION`).
fn version_macros(root: &Path) -> Result<String, String> {
    let read =
        |name: &str| std::fs::read_to_string(root.join(name)).map_err(|e| format!("{name}: {e}"));
    let manifest = read("Cargo.toml")?;
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        .ok_or("Cargo.toml: no version")?;
    let parts: Vec<&str> = version.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        return Err(format!(
            "Cargo.toml: version {version:?} is not MAJOR.MINOR.PATCH"
        ));
    };
    let build = read("build.rs")?;
    let so = build
        .lines()
        .find_map(|l| l.strip_prefix("const SOVERSION: u32 = ")?.strip_suffix(';'))
        .ok_or("build.rs: no SOVERSION")?;
    Ok(format!(
        "\n/** The version of this header (erofs_snapshotter_version() gives the library's). */\n\
         #define EROFS_SNAPSHOTTER_VERSION \"{version}\"\n\
         #define EROFS_SNAPSHOTTER_VERSION_MAJOR {major}\n\
         #define EROFS_SNAPSHOTTER_VERSION_MINOR {minor}\n\
         #define EROFS_SNAPSHOTTER_VERSION_PATCH {patch}\n\
         /** The ABI number: the N of liberofs_snapshotter.so.N, its SONAME. */\n\
         #define EROFS_SNAPSHOTTER_SOVERSION {so}\n"
    ))
}
