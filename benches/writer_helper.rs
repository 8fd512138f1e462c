//! Helper of `bench/writer.sh` (the writer benchmark); not a benchmark by
//! itself: `cargo bench` without arguments prints what it is and exits.
//!
//! ```text
//! writer_helper gunzip-sha256 FILE
//!     The floor of a gzip apply: FILE decompressed with the library's own
//!     decoder (flate2 on zlib-rs, MultiGzDecoder behind a 256 KiB BufReader,
//!     as src/differ.rs reads a layer) and the output hashed with SHA-256
//!     (sha2, as the diffID), nothing written. Prints "sha256:HEX BYTES".
//! writer_helper sha256 FILE
//!     The hashing part of a tar apply's floor: FILE read through a 256 KiB
//!     buffer and hashed with SHA-256 (the diffID), nothing written.
//!     Prints "sha256:HEX BYTES".
//! writer_helper commit CONFIG_JSON NAME KEY
//!     Opens the snapshotter (not timed), commits active snapshot KEY as NAME
//!     and prints the seconds the commit call took. Exits right away: the
//!     background deletion of the retired upper dir (off the critical path in
//!     a daemon; `erofs-snapshotter-ctl commit` waits for it at exit) is left
//!     to the next cleanup.
//! ```

use std::io::{self, BufReader, Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use erofs_snapshotter::{Config, Labels, Snapshotter};
use sha2::{Digest, Sha256};

const USAGE: &str = "writer_helper: a helper of bench/writer.sh (make bench-writer)
usage: writer_helper gunzip-sha256 FILE
       writer_helper sha256 FILE
       writer_helper commit CONFIG_JSON NAME KEY";

/// SHA-256 of `path`'s content, gunzipped first if `gunzip`.
fn sha256(path: &str, gunzip: bool) -> io::Result<(String, u64)> {
    let file = BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut input: Box<dyn Read> = if gunzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((format!("sha256:{hex}"), total))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [cmd @ ("gunzip-sha256" | "sha256"), file] => match sha256(file, *cmd == "gunzip-sha256") {
            Ok((digest, n)) => {
                println!("{digest} {n}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("writer_helper: {file}: {e}");
                ExitCode::FAILURE
            }
        },
        ["commit", config, name, key] => {
            let s = match Config::from_json(config).and_then(Snapshotter::open) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("writer_helper: open: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let t = Instant::now();
            let r = s.commit(name, key, &Labels::new());
            let secs = t.elapsed().as_secs_f64();
            if let Err(e) = r {
                eprintln!("writer_helper: commit: {e}");
                return ExitCode::FAILURE;
            }
            println!("{secs:.6}");
            let _ = io::stdout().flush();
            // Not waiting for the trash thread (see above).
            std::process::exit(0)
        }
        // `cargo bench` runs every bench target with --bench.
        [] | ["--bench", ..] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
