//! Real data sets for the tests, as a Python package ships them: scikit-learn's wheel holds
//! `sklearn/datasets/data/` (wine, iris, diabetes, ...). The wheel is fetched once from PyPI
//! with the machine's `pip` (pinned version and SHA-256), kept in the per-user cache beside
//! MNIST, and read with the zip reader; nothing is committed to the repository.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

const VERSION: &str = "1.5.2";
const WHEEL: &str = "scikit_learn-1.5.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const SHA256: &str = "f8b0ccd4a902836493e026c03256e8b206656f91fbcc4fde28c57a5b752561f1";

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The wheel's path in the cache, fetched (once per test process) if it is not there.
fn wheel() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // Beside MNIST's folder: `~/.cache/symdiff/scikit-learn-VERSION`.
        let mnist = symdiff::train::data::default_cache_dir()
            .expect("a cache directory ($XDG_CACHE_HOME or $HOME) for the test data");
        let cache = mnist.parent().unwrap_or(&mnist).join(format!("scikit-learn-{VERSION}"));
        let path = cache.join(WHEEL);
        if path.exists() && sha256(&std::fs::read(&path).unwrap_or_default()) == SHA256 {
            return path;
        }
        let staging = cache.with_extension(format!("partial-{}", std::process::id()));
        std::fs::create_dir_all(&staging).expect("create the staging directory");
        let pip = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                &format!("scikit-learn=={VERSION}"),
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args([
                "--platform",
                "manylinux2014_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
            ])
            .args(["--quiet", "--dest"])
            .arg(&staging)
            .status()
            .expect("the tests fetch scikit-learn's data sets with `python3 -m pip download`");
        assert!(pip.success(), "`pip download scikit-learn=={VERSION}` failed");
        let fetched = staging.join(WHEEL);
        let bytes = std::fs::read(&fetched).expect("pip wrote the wheel");
        assert_eq!(sha256(&bytes), SHA256, "the scikit-learn wheel's checksum");
        std::fs::create_dir_all(&cache).expect("create the cache directory");
        std::fs::rename(&fetched, &path).expect("move the wheel into the cache");
        let _ = std::fs::remove_dir_all(&staging);
        path
    })
    .clone()
}

/// The bytes of `sklearn/datasets/data/{name}` (gunzipped when the name ends in `.gz`).
pub fn data_file(name: &str) -> Vec<u8> {
    let file = std::fs::File::open(wheel()).expect("open the wheel");
    let mut zip = zip::ZipArchive::new(file).expect("the wheel is a zip file");
    let mut entry =
        zip.by_name(&format!("sklearn/datasets/data/{name}")).expect("the data file is in the wheel");
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).expect("read the data file");
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).expect("gunzip the data file");
        return out;
    }
    bytes
}
