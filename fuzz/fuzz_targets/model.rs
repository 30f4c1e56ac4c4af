//! Model files: parse and validate arbitrary text. Nothing may panic, hang or allocate what a
//! model would need before it is validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(d) = symdiff::model::ModelSpec::parse(text, "fuzz.model") {
        let _ = d.render();
    }
});
