//! Every JSON document the library takes (the configuration, labels, infos,
//! mounts, filters, apply options) on arbitrary bytes: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    erofs_snapshotter::fuzzing::json_inputs(data);
});
