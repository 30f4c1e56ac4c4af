//! The user's data files (CSV, `.npy`, `.npz`): arbitrary bytes give a table or an error that
//! names the file, never a panic or an allocation beyond the memory budget given.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use symdiff::train::files::{CsvOptions, TargetSpec, read_csv, read_npy_pair, read_npz};

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("symdiff-fuzz-files-{}", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    if std::fs::write(p, data).is_err() {
        return;
    }
    let budget = 64 << 20;
    let targets = ["y".to_owned(), "b".to_owned()];
    for spec in [TargetSpec::Label("y"), TargetSpec::Target(&targets), TargetSpec::None] {
        for delimiter in [b',', b';'] {
            let _ = read_csv(p, &CsvOptions { delimiter, targets: spec, max_bytes: budget });
        }
    }
    let _ = read_npy_pair(p, p, budget);
    let _ = read_npz(p, budget);
});
