//! The layer path on arbitrary bytes: the tar reader, the OCI checks and the
//! canonical writer must never panic, and what they write must read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    erofs_snapshotter::fuzzing::layer_tar(data);
});
