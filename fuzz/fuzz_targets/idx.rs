//! IDX files (raw or gzip): headers, sizes and payloads are checked before anything is
//! allocated, so arbitrary bytes give an error, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = symdiff::train::data::parse_idx(data, "fuzz.idx");
});
