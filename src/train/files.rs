//! Training data from the user's own files: a CSV file with a header row, a pair of NumPy `.npy`
//! files (features and labels), or a `.npz` archive as `keras.datasets` writes them. Each is read
//! into a [`Table`] of row-major samples.
//!
//! * [`read_csv`]: the header names the columns. The label or target columns are chosen by name
//!   ([`TargetSpec`]), and every other column is a numeric feature. A file without a quote
//!   character is split at line boundaries and parsed on all cores. A file with one is parsed
//!   on one thread, since a quoted cell may hold a newline. Either way each row keeps the 1-based
//!   line number it starts on, and the first error in the file is the one reported.
//! * [`read_npy_pair`] and [`read_npz`]: `ndarray-npy` parses the `.npy` headers (shape, dtype,
//!   order). The data is decoded here, chunk by chunk, straight into the table. A conversion
//!   (int64 to class labels, float64 to float32) therefore never holds two copies of an array,
//!   and the first NaN is found where it is read.
//!
//! Invariant: a returned table holds `len() >= 1` samples of `sample_size() >= 1` values each,
//! every float in it is finite, and `features` and `targets` agree on the sample count. The
//! memory the data needs is known before any of it is allocated: for a CSV file, the line ends
//! bound the rows and the header gives the columns; for `.npy` arrays, their headers give it.
//! That figure is checked against the caller's budget, and a file bigger than the budget is
//! refused unread.
//!
//! Never: panics on any input; guesses at bad data (a missing column, a NaN, a ragged row or a
//! fractional label is an error naming the file, line and column, or the array and index);
//! knows what the columns mean to a model (the caller checks labels against its classes, and
//! `lines` points back into the file).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use ndarray_npy::npy::header::{Header, Layout};

use crate::graph::lower::suggest;
use crate::model::memory::show_bytes;

/// Samples read from a file, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// One sample's shape: CSV `[features]`; npy/npz: the array's dims after the first.
    pub sample: Vec<usize>,
    /// `len() * sample_size()` values, sample after sample.
    pub features: Features,
    /// CSV: the header names of the feature columns, in order; npy/npz: empty.
    pub feature_names: Vec<String>,
    /// One class label, or `width` float targets, per sample.
    pub targets: Targets,
    /// For messages: where each row came from. CSV: the 1-based line of each data row (so
    /// errors found later, e.g. a label out of the model's range, can name file:line:col).
    /// npy/npz: empty.
    pub lines: Vec<u64>,
    /// CSV: 1-based column number of the (first) label/target column, the first one named in
    /// [`TargetSpec::Target`]; npy: 0.
    pub target_column: usize,
}

/// The feature values of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Bytes, as a `uint8` array holds them (pixels, say).
    U8(Vec<u8>),
    /// 32-bit floats, all finite.
    F32(Vec<f32>),
}

/// The targets of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Integer class labels (>= 0).
    Classes(Vec<u32>),
    /// Float targets, `width` per row (regression).
    Values {
        /// Targets per row (>= 1).
        width: usize,
        /// `len() * width` finite values, row after row.
        data: Vec<f32>,
    },
}

impl Table {
    /// The number of samples.
    pub fn len(&self) -> usize {
        match &self.targets {
            Targets::Classes(c) => c.len(),
            Targets::Values { width, data } => data.len().checked_div(*width).unwrap_or(0),
        }
    }

    /// Whether the table has no samples (never true of a table this module returns).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per sample: the product of [`Table::sample`].
    pub fn sample_size(&self) -> usize {
        self.sample.iter().product()
    }
}

/// What the file's target column(s) hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSpec<'a> {
    /// `label=COL`: one column of integer class labels (text like `3`, also `3.0`; not `3.5`,
    /// not negative).
    Label(&'a str),
    /// `target=COL[,COL...]`: float target columns (regression), in the order given.
    Target(&'a [String]),
    /// No target column: every column is a feature (rows to predict). The table's targets
    /// are then class 0 for every row.
    None,
}

/// How to read a CSV file.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions<'a> {
    /// The field separator: `b','`, `b';'`, `b'\t'`, ...
    pub delimiter: u8,
    /// Which columns are targets; the others are features.
    pub targets: TargetSpec<'a>,
    /// The memory budget, in bytes: a file whose data would need more is refused unread.
    pub max_bytes: u64,
}

/// Everything that can go wrong reading a data file. Each message names the file, and the line
/// and column (CSV) or the array and index (npy/npz) at fault.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An I/O operation on a path failed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`open`, `read`).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file alone is bigger than the memory budget.
    #[error("{origin}: the file is {}, more than the memory limit of {}", show_size(*.size), show_size(*.limit))]
    FileTooLarge {
        /// The file.
        origin: String,
        /// Its size, in bytes.
        size: u64,
        /// The budget, in bytes.
        limit: u64,
    },
    /// The data would need more memory than the budget; found before allocating it.
    #[error("{origin}: {what} would need {}{detail}; the memory limit is {}", show_size(*.need), show_size(*.limit))]
    TooLarge {
        /// The file.
        origin: String,
        /// What needs the memory (`its 60000 rows × 785 columns`).
        what: String,
        /// The memory it needs, in bytes.
        need: u64,
        /// How that is counted, empty or starting with a space.
        detail: String,
        /// The budget, in bytes.
        limit: u64,
    },
    /// A CSV file with no header row.
    #[error(
        "{origin}: the file is empty; a CSV file needs a header row naming the columns, then one row per sample"
    )]
    Empty {
        /// The file.
        origin: String,
    },
    /// A CSV file with a header and nothing after it.
    #[error("{origin}: no data rows after the header (line {header_line})")]
    NoRows {
        /// The file.
        origin: String,
        /// The header's line.
        header_line: u64,
    },
    /// A target column the header does not name.
    #[error(
        "{origin}:{header_line}: the header has no column {name:?}{hint}; its {count} columns are {shown}"
    )]
    NoColumn {
        /// The file.
        origin: String,
        /// The header's line.
        header_line: u64,
        /// The name asked for.
        name: String,
        /// ` (did you mean "label"?)`, or empty.
        hint: String,
        /// The header's number of columns.
        count: usize,
        /// The first few, quoted.
        shown: String,
    },
    /// A target column the header names more than once.
    #[error(
        "{origin}:{header_line}: the header names {name:?} twice (columns {first} and {second}), so which one is the {role} is ambiguous"
    )]
    DuplicateColumn {
        /// The file.
        origin: String,
        /// The header's line.
        header_line: u64,
        /// The name.
        name: String,
        /// 1-based column of its first occurrence.
        first: usize,
        /// 1-based column of its second occurrence.
        second: usize,
        /// `label` or `target`.
        role: &'static str,
    },
    /// A [`TargetSpec`] that cannot be satisfied by any file.
    #[error("{origin}: {problem}")]
    BadSpec {
        /// The file.
        origin: String,
        /// What is wrong with the spec.
        problem: String,
    },
    /// Every column of the header is a target.
    #[error("{origin}:{header_line}: every column of the header is a target; there are no feature columns")]
    NoFeatures {
        /// The file.
        origin: String,
        /// The header's line.
        header_line: u64,
    },
    /// A CSV cell that is not what its column needs.
    #[error("{origin}:{line}:{col} (column {column:?}): {problem}")]
    Cell {
        /// The file.
        origin: String,
        /// 1-based line the row starts on.
        line: u64,
        /// 1-based column number.
        col: usize,
        /// The column's header name.
        column: String,
        /// What is wrong, quoting the cell.
        problem: String,
    },
    /// A CSV row with more or fewer fields than the header.
    #[error(
        "{origin}:{line}:{col}: ragged row: {found} fields, but the header (line {header_line}) has {expected}"
    )]
    Ragged {
        /// The file.
        origin: String,
        /// 1-based line the row starts on.
        line: u64,
        /// 1-based column of the first missing or extra field.
        col: usize,
        /// The row's number of fields.
        found: usize,
        /// The header's.
        expected: usize,
        /// The header's line.
        header_line: u64,
    },
    /// The CSV parser failed.
    #[error("{origin}:{line}: {source}")]
    Csv {
        /// The file.
        origin: String,
        /// The line it failed on.
        line: u64,
        /// The parser's error.
        source: csv::Error,
    },
    /// A broken invariant of this module (more CSV rows than line ends, a panicked thread),
    /// reported rather than panicking.
    #[error("{origin}: {what}; this is a bug in symdiff")]
    Bug {
        /// The file.
        origin: String,
        /// What went wrong.
        what: String,
    },
    /// Not an `.npy` array, or one whose header cannot be read.
    #[error("{origin}: not a NumPy .npy array: {problem}")]
    NotNpy {
        /// The file (or `file.npz, array NAME`).
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// An element type this reader does not take for that role.
    #[error("{origin}: dtype {descr:?} ({name}) is not supported for {role}; {supported}")]
    Dtype {
        /// The array.
        origin: String,
        /// The header's type descriptor.
        descr: String,
        /// Its NumPy name.
        name: String,
        /// `features` or `labels`.
        role: &'static str,
        /// What is supported instead.
        supported: &'static str,
    },
    /// An array of the wrong rank or with an empty dimension.
    #[error("{origin}: shape {shape}: {problem}")]
    Shape {
        /// The array.
        origin: String,
        /// Its shape, as NumPy prints it.
        shape: String,
        /// What is wrong.
        problem: String,
    },
    /// The data after an `.npy` header is shorter or longer than the header says.
    #[error(
        "{origin}: the header says shape {shape} of {dtype}, {expected} bytes of data, but {found} bytes follow it: {problem}"
    )]
    DataLength {
        /// The array.
        origin: String,
        /// Its shape, as NumPy prints it.
        shape: String,
        /// Its dtype's NumPy name.
        dtype: String,
        /// Data bytes the header declares.
        expected: u64,
        /// Data bytes present (or read before the end).
        found: u64,
        /// `truncated` or `trailing bytes`.
        problem: &'static str,
    },
    /// Features and labels disagree on the number of samples.
    #[error("{x} has {x_len} samples but {y} has {y_len}")]
    CountMismatch {
        /// The features array.
        x: String,
        /// Its samples.
        x_len: usize,
        /// The labels array.
        y: String,
        /// Its samples.
        y_len: usize,
    },
    /// A NaN or infinite value in a float array (or one too big for a 32-bit float).
    #[error(
        "{origin}: element {index} (sample {sample}, value {element} of {size}) is {value}; NaN and infinite values are refused (nothing is trained on bad data)"
    )]
    NotFinite {
        /// The array.
        origin: String,
        /// The element's index, as `[12, 0, 5]`.
        index: String,
        /// The value, as written (`NaN`, `inf`, `1e300`).
        value: String,
        /// 0-based sample number.
        sample: usize,
        /// 0-based position within the sample.
        element: usize,
        /// Values per sample.
        size: usize,
    },
    /// A label below 0 or above `u32::MAX` in an integer array.
    #[error("{origin}: element {index} is {value}; class labels must be whole numbers from 0 to 4294967295")]
    BadLabel {
        /// The array.
        origin: String,
        /// The element's index, as `[3]`.
        index: String,
        /// The value.
        value: String,
    },
    /// An `.npz` file that is not a readable zip archive.
    #[error("{origin}: not a readable .npz (zip) archive: {source}")]
    Zip {
        /// The file (or `file.npz, array NAME`).
        origin: String,
        /// The zip reader's error.
        source: zip::result::ZipError,
    },
    /// An `.npz` archive without an array the data set needs.
    #[error("{origin}: no array named {name}{hint}; the archive holds {present}")]
    MissingArray {
        /// The file.
        origin: String,
        /// The array needed.
        name: &'static str,
        /// ` (did you mean y_train?)` or why it is needed, or empty.
        hint: String,
        /// The names it holds, comma separated.
        present: String,
    },
}

/// Bytes for a message: exact below 1 KiB, else KiB/MiB/GiB with one decimal.
fn show_size(n: u64) -> String {
    if n < 1024 { format!("{n} bytes") } else { show_bytes(n) }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { op, path, source }
}

/// A cell for a message: quoted and escaped, cut after 40 characters.
fn quote(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell);
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut:?}…")
    } else {
        format!("{text:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Below this many bytes of rows, a CSV file is parsed on one thread.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Most threads a CSV file is parsed on.
const MAX_THREADS: usize = 8;

/// Header columns named in a "no such column" message.
const SHOWN_COLUMNS: usize = 8;

/// Reads a CSV file: a header row, then one sample per row. The columns [`CsvOptions::targets`]
/// names hold the labels or targets; every other column is a feature, stored as `f32`. Cells may
/// be quoted and padded with spaces; a UTF-8 BOM, CRLF line ends and blank lines are fine.
pub fn read_csv(path: &Path, opts: &CsvOptions<'_>) -> Result<Table, FileError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
    read_csv_in(path, opts, threads, PARALLEL_MIN_BYTES)
}

/// [`read_csv`] on up to `parts` threads once the rows are `parallel_min` bytes or more.
fn read_csv_in(
    path: &Path,
    opts: &CsvOptions<'_>,
    parts: usize,
    parallel_min: usize,
) -> Result<Table, FileError> {
    let origin = path.display().to_string();
    let file = read_within(path, &origin, opts.max_bytes)?;
    let text = file.strip_prefix(b"\xef\xbb\xbf".as_slice()).unwrap_or(&file);
    let head = csv_header(text, opts.delimiter, &origin)?;
    let plan = plan_columns(&head, opts.targets, opts.delimiter, &origin)?;
    let body = text.get(head.end..).unwrap_or_default();

    // A quote may hide a newline inside a cell, so only a file without one is split.
    let quoted = body.contains(&b'"');
    let parts = if body.len() >= parallel_min && !quoted { parts.max(1) } else { 1 };
    let chunks = split_at_lines(body, parts);
    let mut bounds = Vec::with_capacity(chunks.len());
    let mut first_lines = Vec::with_capacity(chunks.len());
    let mut line = head.end_line;
    for chunk in &chunks {
        let (rows, newlines) = row_bound(chunk);
        bounds.push(rows);
        first_lines.push(line);
        line = line.saturating_add(newlines as u64);
    }
    let rows: usize = bounds.iter().sum();
    if rows == 0 {
        return Err(FileError::NoRows { origin, header_line: head.line });
    }

    // The file's text, then per row: the features, the targets (4 bytes each, as u32 or f32)
    // and the line number.
    let per_row = (plan.features as u128 + plan.targets as u128) * 4 + 8;
    let need = (file.len() as u128).saturating_add(rows as u128 * per_row);
    if need > u128::from(opts.max_bytes) {
        return Err(FileError::TooLarge {
            origin,
            what: format!("its {rows} rows × {} columns", plan.roles.len()),
            need: u64::try_from(need).unwrap_or(u64::MAX),
            detail: format!(
                " as 32-bit floats, with the {} of the file itself",
                show_size(file.len() as u64)
            ),
            limit: opts.max_bytes,
        });
    }
    let (nf, nt) = (plan.features, plan.targets);
    let mut features = vec![0f32; rows * nf];
    let mut classes = vec![0u32; if plan.classes { rows } else { 0 }];
    let mut values = vec![0f32; if plan.classes { 0 } else { rows * nt }];
    let mut lines = vec![0u64; rows];

    // Each chunk fills its own stretch of the outputs, sized by its row bound.
    let mut outs = Vec::with_capacity(chunks.len());
    {
        let (mut f, mut c, mut v, mut l) =
            (features.as_mut_slice(), classes.as_mut_slice(), values.as_mut_slice(), lines.as_mut_slice());
        for &b in &bounds {
            let (f0, f1) = f.split_at_mut((b * nf).min(f.len()));
            let (c0, c1) = c.split_at_mut(if plan.classes { b.min(c.len()) } else { 0 });
            let (v0, v1) = v.split_at_mut(if plan.classes { 0 } else { (b * nt).min(v.len()) });
            let (l0, l1) = l.split_at_mut(b.min(l.len()));
            outs.push(Out { features: f0, classes: c0, values: v0, lines: l0 });
            (f, c, v, l) = (f1, c1, v1, l1);
        }
    }
    let ctx = Ctx { origin: &origin, quoted, delimiter: opts.delimiter, plan: &plan, header_line: head.line };
    let results = parse_chunks(&ctx, &chunks, &first_lines, outs);

    // The first error in file order; else close the gaps the bounds left.
    let mut counts = Vec::with_capacity(results.len());
    for r in results {
        counts.push(r?);
    }
    let (mut start, mut kept) = (0, 0);
    for (&bound, &n) in bounds.iter().zip(&counts) {
        if start != kept {
            features.copy_within(start * nf..(start + n) * nf, kept * nf);
            lines.copy_within(start..start + n, kept);
            if plan.classes {
                classes.copy_within(start..start + n, kept);
            } else {
                values.copy_within(start * nt..(start + n) * nt, kept * nt);
            }
        }
        start += bound;
        kept += n;
    }
    if kept == 0 {
        return Err(FileError::NoRows { origin, header_line: head.line });
    }
    features.truncate(kept * nf);
    lines.truncate(kept);
    let targets = if plan.classes {
        classes.truncate(kept);
        Targets::Classes(classes)
    } else {
        values.truncate(kept * nt);
        Targets::Values { width: nt, data: values }
    };
    Ok(Table {
        sample: vec![nf],
        features: Features::F32(features),
        feature_names: plan.feature_names,
        targets,
        lines,
        target_column: plan.target_column,
    })
}

/// Reads a whole file, refusing one bigger than `max` bytes before reading it.
fn read_within(path: &Path, origin: &str, max: u64) -> Result<Vec<u8>, FileError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let size = file.metadata().map_err(io_err("read", path))?.len();
    let too_large = |size| FileError::FileTooLarge { origin: origin.to_owned(), size, limit: max };
    if size > max {
        return Err(too_large(size));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).map_err(|_| too_large(size))?);
    file.take(max.saturating_add(1)).read_to_end(&mut buf).map_err(io_err("read", path))?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// The header row of a CSV file.
struct Head {
    /// The column names, trimmed.
    names: Vec<String>,
    /// The line it is on.
    line: u64,
    /// Byte offset of the first data row (in the text after any BOM).
    end: usize,
    /// The line the data rows start on.
    end_line: u64,
}

fn csv_reader(data: &[u8], delimiter: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(data)
}

fn csv_header(text: &[u8], delimiter: u8, origin: &str) -> Result<Head, FileError> {
    let mut reader = csv_reader(text, delimiter);
    let mut record = ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(FileError::Empty { origin: origin.to_owned() }),
        Err(source) => return Err(csv_error(origin, 1, source)),
    }
    let names = record.iter().map(|c| String::from_utf8_lossy(c.trim_ascii()).into_owned()).collect();
    let line = record_line(&reader, &record, text, 1, true);
    let end = usize::try_from(reader.position().byte()).unwrap_or(text.len());
    Ok(Head { names, line, end, end_line: reader.position().line() })
}

/// The line a record just read starts on, in a chunk that starts on `first_line`.
///
/// A record's own position is where the reader stood before it, ahead of any blank lines
/// and, after a CRLF row, of the `\n` the `\r` left. So count back from the reader's position
/// past the record instead: its line, less the `\n` just consumed as the terminator and the
/// newlines quoted inside its cells (`quoted`: the chunk may have some).
fn record_line(
    reader: &csv::Reader<&[u8]>,
    record: &ByteRecord,
    chunk: &[u8],
    first_line: u64,
    quoted: bool,
) -> u64 {
    let pos = reader.position();
    let end = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
    let ended_by_lf = end.checked_sub(1).and_then(|i| chunk.get(i)) == Some(&b'\n');
    let inside = if quoted { record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64 } else { 0 };
    first_line + pos.line().saturating_sub(1 + inside + u64::from(ended_by_lf))
}

/// A csv error at a line of a chunk that starts on `first_line`.
fn csv_error(origin: &str, first_line: u64, source: csv::Error) -> FileError {
    let at = source.position().map_or(1, csv::Position::line);
    FileError::Csv { origin: origin.to_owned(), line: first_line + at.saturating_sub(1), source }
}

/// What a CSV column holds.
#[derive(Debug, Clone, Copy)]
enum Role {
    Feature,
    /// The n-th target, in the order of the spec.
    Target(usize),
}

/// The columns of a CSV file, resolved against a [`TargetSpec`].
struct Plan {
    /// One per header column.
    roles: Vec<Role>,
    /// The header's names, for messages.
    names: Vec<String>,
    feature_names: Vec<String>,
    features: usize,
    targets: usize,
    /// Class labels (one target) rather than float targets.
    classes: bool,
    target_column: usize,
}

fn plan_columns(head: &Head, spec: TargetSpec<'_>, delimiter: u8, origin: &str) -> Result<Plan, FileError> {
    let (wanted, classes, role): (Vec<&str>, bool, &'static str) = match spec {
        TargetSpec::Label(name) => (vec![name], true, "label"),
        TargetSpec::Target(names) => (names.iter().map(String::as_str).collect(), false, "target"),
        TargetSpec::None => (Vec::new(), true, "label"),
    };
    let bad_spec = |problem: String| FileError::BadSpec { origin: origin.to_owned(), problem };
    if wanted.is_empty() && spec != TargetSpec::None {
        return Err(bad_spec("no target columns were named (target=COL[,COL...] needs at least one)".into()));
    }
    let mut roles = vec![Role::Feature; head.names.len()];
    let mut target_column = 0;
    for (t, &name) in wanted.iter().enumerate() {
        if wanted.get(..t).is_some_and(|before| before.contains(&name)) {
            return Err(bad_spec(format!("column {name:?} is named twice in target=")));
        }
        let mut found =
            head.names.iter().enumerate().filter(|(_, n)| n.as_str() == name.trim()).map(|(i, _)| i);
        let Some(col) = found.next() else {
            return Err(no_column(head, name, delimiter, origin));
        };
        if let Some(second) = found.next() {
            return Err(FileError::DuplicateColumn {
                origin: origin.to_owned(),
                header_line: head.line,
                name: name.to_owned(),
                first: col + 1,
                second: second + 1,
                role,
            });
        }
        if let Some(r) = roles.get_mut(col) {
            *r = Role::Target(t);
        }
        if t == 0 {
            target_column = col + 1;
        }
    }
    let feature_names: Vec<String> = head
        .names
        .iter()
        .zip(&roles)
        .filter(|(_, r)| matches!(r, Role::Feature))
        .map(|(n, _)| n.clone())
        .collect();
    if feature_names.is_empty() {
        return Err(FileError::NoFeatures { origin: origin.to_owned(), header_line: head.line });
    }
    Ok(Plan {
        roles,
        names: head.names.clone(),
        features: feature_names.len(),
        feature_names,
        targets: wanted.len(),
        classes,
        target_column,
    })
}

fn no_column(head: &Head, name: &str, delimiter: u8, origin: &str) -> FileError {
    // A header read as one column was probably split at the wrong character.
    let other = match head.names.as_slice() {
        [only] => {
            [b',', b';', b'\t', b'|'].into_iter().find(|&d| d != delimiter && only.as_bytes().contains(&d))
        }
        _ => None,
    };
    let hint = match other {
        Some(d) => format!(" (it reads as one column: is the delimiter {:?}?)", char::from(d)),
        None => suggest(name.trim(), head.names.iter().cloned())
            .map_or(String::new(), |s| format!(" (did you mean {s:?}?)")),
    };
    // Each name shortened: a file that is not CSV at all can have a "header" of megabytes.
    let short = |n: &String| match n.char_indices().nth(40) {
        Some((at, _)) => format!("{:?}…", &n[..at]),
        None => format!("{n:?}"),
    };
    let mut shown = head.names.iter().take(SHOWN_COLUMNS).map(short).collect::<Vec<_>>().join(", ");
    if head.names.len() > SHOWN_COLUMNS {
        let _ = write!(shown, ", … ({} more)", head.names.len() - SHOWN_COLUMNS);
    }
    FileError::NoColumn {
        origin: origin.to_owned(),
        header_line: head.line,
        name: name.to_owned(),
        hint,
        count: head.names.len(),
        shown,
    }
}

/// Splits `body` into at most `parts` pieces, each but the last ending just after a `\n`.
fn split_at_lines(body: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 1..parts {
        let target = (body.len() / parts).saturating_mul(i).max(start);
        let Some(end) = body.get(target..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) else {
            break;
        };
        let end = target + end + 1;
        chunks.push(body.get(start..end).unwrap_or_default());
        start = end;
    }
    if start < body.len() || chunks.is_empty() {
        chunks.push(body.get(start..).unwrap_or_default());
    }
    chunks
}

/// At most how many records `chunk` holds (each ends at a `\n`, `\r\n` or lone `\r`, the last
/// maybe at the end), and how many `\n` it has (the csv crate's line count).
fn row_bound(chunk: &[u8]) -> (usize, usize) {
    let lf = chunk.iter().filter(|&&b| b == b'\n').count();
    let (cr, crlf) = if chunk.contains(&b'\r') {
        (chunk.iter().filter(|&&b| b == b'\r').count(), chunk.windows(2).filter(|w| *w == b"\r\n").count())
    } else {
        (0, 0)
    };
    let open = chunk.last().is_some_and(|&b| b != b'\n' && b != b'\r');
    (lf + cr - crlf + usize::from(open), lf)
}

/// What every chunk's parser shares.
struct Ctx<'a> {
    origin: &'a str,
    /// Whether the text has a quote character (then a cell may hold a newline).
    quoted: bool,
    delimiter: u8,
    plan: &'a Plan,
    header_line: u64,
}

/// One chunk's stretch of the outputs.
struct Out<'a> {
    features: &'a mut [f32],
    classes: &'a mut [u32],
    values: &'a mut [f32],
    lines: &'a mut [u64],
}

/// Parses the chunks, each on its own thread but the first (on this one). A thread that cannot
/// be started is an I/O error, one that panics a bug; both are reported, never propagated.
fn parse_chunks(
    ctx: &Ctx<'_>,
    chunks: &[&[u8]],
    first_lines: &[u64],
    outs: Vec<Out<'_>>,
) -> Vec<Result<usize, FileError>> {
    let mut jobs = chunks.iter().zip(first_lines).zip(outs);
    let Some(((&first, &first_line), first_out)) = jobs.next() else { return Vec::new() };
    std::thread::scope(|s| {
        let pending: Vec<_> = jobs
            .map(|((&chunk, &line), out)| {
                std::thread::Builder::new()
                    .name("csv".into())
                    .spawn_scoped(s, move || parse_chunk(ctx, chunk, line, out))
            })
            .collect();
        let mut results = vec![parse_chunk(ctx, first, first_line, first_out)];
        for p in pending {
            results.push(match p {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(FileError::Bug {
                        origin: ctx.origin.to_owned(),
                        what: "a parsing thread panicked".into(),
                    })
                }),
                Err(source) => {
                    Err(FileError::Io { op: "start a thread to parse", path: ctx.origin.into(), source })
                }
            });
        }
        results
    })
}

/// Why a cell was refused.
enum Fault {
    Empty,
    NotNumber,
    NotFinite,
    NotLabel,
}

/// Parses the rows of one chunk that starts on `first_line`; returns how many it held.
fn parse_chunk(ctx: &Ctx<'_>, chunk: &[u8], first_line: u64, out: Out<'_>) -> Result<usize, FileError> {
    let plan = ctx.plan;
    let (nf, nt) = (plan.features, plan.targets);
    let mut reader = csv_reader(chunk, ctx.delimiter);
    let mut record = ByteRecord::new();
    let mut row = 0usize;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(row),
            Err(source) => return Err(csv_error(ctx.origin, first_line, source)),
        }
        let line = record_line(&reader, &record, chunk, first_line, ctx.quoted);
        if record.len() != plan.roles.len() {
            return Err(FileError::Ragged {
                origin: ctx.origin.to_owned(),
                line,
                col: record.len().min(plan.roles.len()) + 1,
                found: record.len(),
                expected: plan.roles.len(),
                header_line: ctx.header_line,
            });
        }
        let (Some(features), Some(slot)) =
            (out.features.get_mut(row * nf..(row + 1) * nf), out.lines.get_mut(row))
        else {
            let what = format!("line {line}: more rows than line ends were counted");
            return Err(FileError::Bug { origin: ctx.origin.to_owned(), what });
        };
        *slot = line;
        let mut features = features.iter_mut();
        for (col, (cell, role)) in record.iter().zip(&plan.roles).enumerate() {
            let fault = match *role {
                Role::Feature => match parse_f32(cell) {
                    Ok(x) => {
                        if let Some(f) = features.next() {
                            *f = x;
                        }
                        continue;
                    }
                    Err(fault) => fault,
                },
                Role::Target(_) if plan.classes => match parse_label(cell) {
                    Ok(label) => {
                        if let Some(c) = out.classes.get_mut(row) {
                            *c = label;
                        }
                        continue;
                    }
                    Err(fault) => fault,
                },
                Role::Target(t) => match parse_f32(cell) {
                    Ok(x) => {
                        if let Some(v) = out.values.get_mut(row * nt + t) {
                            *v = x;
                        }
                        continue;
                    }
                    Err(fault) => fault,
                },
            };
            return Err(cell_error(ctx, line, col, cell, fault));
        }
        row += 1;
    }
}

fn cell_error(ctx: &Ctx<'_>, line: u64, col: usize, cell: &[u8], fault: Fault) -> FileError {
    let q = quote(cell);
    let problem = match fault {
        Fault::Empty => "the cell is empty; every row needs a value in every column".to_owned(),
        Fault::NotNumber => format!("{q} is not a number"),
        Fault::NotFinite => format!(
            "{q} is not a finite 32-bit float; NaN and infinite values are refused (nothing is trained on bad data)"
        ),
        Fault::NotLabel => {
            format!("{q} is not a class label; labels are whole numbers from 0 to 4294967295 (like 3 or 3.0)")
        }
    };
    FileError::Cell {
        origin: ctx.origin.to_owned(),
        line,
        col: col + 1,
        column: ctx.plan.names.get(col).cloned().unwrap_or_default(),
        problem,
    }
}

/// A feature or float target: `str::parse::<f32>` of the trimmed cell, finite. Short plain
/// integers take a shortcut that gives the same `f32` (below 10^7 < 2^24 they are exact).
#[inline]
fn parse_f32(cell: &[u8]) -> Result<f32, Fault> {
    let t = cell.trim_ascii();
    if let Some(n) = small_int(t, 7) {
        return Ok(n as f32);
    }
    if t.is_empty() {
        return Err(Fault::Empty);
    }
    match std::str::from_utf8(t).map(str::parse::<f32>) {
        Ok(Ok(x)) if x.is_finite() => Ok(x),
        Ok(Ok(_)) => Err(Fault::NotFinite),
        _ => Err(Fault::NotNumber),
    }
}

/// `t` as a number when it is 1 to `max_digits` (at most 9) ASCII digits.
#[inline]
fn small_int(t: &[u8], max_digits: usize) -> Option<u32> {
    if t.is_empty() || t.len() > max_digits {
        return None;
    }
    let mut n = 0u32;
    for &b in t {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u32::from(d);
    }
    Some(n)
}

/// A class label: a whole number from 0 to `u32::MAX`, written as an integer or a float
/// (`3`, `3.0`, `3e0`).
#[inline]
fn parse_label(cell: &[u8]) -> Result<u32, Fault> {
    let t = cell.trim_ascii();
    if let Some(n) = small_int(t, 9) {
        return Ok(n);
    }
    if t.is_empty() {
        return Err(Fault::Empty);
    }
    match std::str::from_utf8(t).map(str::parse::<f64>) {
        Ok(Ok(x)) if x >= 0.0 && x.fract() == 0.0 && x <= f64::from(u32::MAX) => Ok(x as u32),
        _ => Err(Fault::NotLabel),
    }
}

// ---------------------------------------------------------------------------------------------
// NumPy
// ---------------------------------------------------------------------------------------------

/// The longest `.npy` header accepted (NumPy itself refuses more than 10,000 bytes by default).
const MAX_NPY_HEADER: usize = 1 << 16;

/// The deepest bracket nesting accepted in an `.npy` header (real ones nest 2 or 3 deep).
const MAX_NPY_NESTING: usize = 16;

/// Bytes decoded at a time.
const CHUNK_BYTES: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Uint,
    Float,
}

/// A numeric `.npy` element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtype {
    kind: Kind,
    /// Bytes per element: 1, 2, 4 or 8 (floats: 4 or 8).
    size: usize,
    big_endian: bool,
}

impl Dtype {
    /// The NumPy name: `uint8`, `float64`, `>i4` as `int32 (big-endian)`.
    fn name(self) -> String {
        let kind = match self.kind {
            Kind::Int => "int",
            Kind::Uint => "uint",
            Kind::Float => "float",
        };
        let order = if self.big_endian && self.size > 1 { " (big-endian)" } else { "" };
        format!("{kind}{}{order}", self.size * 8)
    }
}

/// Parses a type descriptor such as `<f8`, `|u1` or `>i4`; `Err` holds the NumPy name of a
/// type that is not an integer or a 32/64-bit float.
fn parse_descr(descr: &str) -> Result<Dtype, String> {
    let (order, rest) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => {
            (descr.get(..1).unwrap_or_default(), descr.get(1..).unwrap_or_default())
        }
        _ => ("=", descr),
    };
    let big_endian = order == ">" || (order == "=" && cfg!(target_endian = "big"));
    let (kind, size) = match rest {
        "b" => ('i', Some(1)),
        "B" => ('u', Some(1)),
        _ => {
            let mut chars = rest.chars();
            let kind = chars.next().unwrap_or(' ');
            (kind, chars.as_str().parse::<usize>().ok())
        }
    };
    let dtype = |kind| size.map(|size| Dtype { kind, size, big_endian });
    let found = match (kind, size) {
        ('i', Some(1 | 2 | 4 | 8)) => dtype(Kind::Int),
        ('u', Some(1 | 2 | 4 | 8)) => dtype(Kind::Uint),
        ('f', Some(4 | 8)) => dtype(Kind::Float),
        _ => None,
    };
    found.ok_or_else(|| {
        let bits = size.map_or(String::new(), |s| (s * 8).to_string());
        match kind {
            'b' | '?' => "bool".to_owned(),
            'f' if size == Some(2) => "float16".to_owned(),
            'f' => format!("float{bits}, extended precision"),
            'c' => format!("complex{bits}"),
            'i' | 'u' => format!("{}int{bits}", if kind == 'u' { "u" } else { "" }),
            'U' => "unicode strings".to_owned(),
            'S' | 'a' => "byte strings".to_owned(),
            'O' => "Python objects".to_owned(),
            'M' => "datetime64".to_owned(),
            'm' => "timedelta64".to_owned(),
            'V' => "raw bytes (void)".to_owned(),
            _ => "unknown".to_owned(),
        }
    })
}

/// An `.npy` header, checked: a numeric dtype and a shape whose size fits in memory arithmetic.
#[derive(Debug, Clone)]
struct NpyHead {
    /// The array, for messages (`x.npy`, `data.npz, array x_train`).
    origin: String,
    shape: Vec<usize>,
    fortran: bool,
    /// The type descriptor as written (`<f8`).
    descr: String,
    /// `None` for a type this reader cannot decode; [`NpyHead::descr`] says which.
    dtype: Option<Dtype>,
    /// The product of the shape.
    elements: usize,
    /// `elements * size` (0 when the dtype is unknown).
    data_bytes: u64,
    /// Bytes after the header, from the file's or zip entry's size.
    available: u64,
}

impl NpyHead {
    /// The shape as NumPy prints it: `(60000, 28, 28)`, `(3,)`.
    fn shape_text(&self) -> String {
        match self.shape.as_slice() {
            [n] => format!("({n},)"),
            dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
        }
    }

    fn dtype_name(&self) -> String {
        self.dtype.map_or_else(|| self.descr.clone(), Dtype::name)
    }

    /// The number of samples: the first dimension.
    fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Values per sample: the product of the dimensions after the first.
    fn sample_size(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    fn shape_error(&self, problem: impl Into<String>) -> FileError {
        FileError::Shape { origin: self.origin.clone(), shape: self.shape_text(), problem: problem.into() }
    }

    /// The header's data length against the bytes after the header, before reading any.
    fn check_length(&self) -> Result<(), FileError> {
        if self.available == self.data_bytes {
            return Ok(());
        }
        Err(self.length_error(self.available))
    }

    fn length_error(&self, found: u64) -> FileError {
        FileError::DataLength {
            origin: self.origin.clone(),
            shape: self.shape_text(),
            dtype: self.dtype_name(),
            expected: self.data_bytes,
            found,
            problem: if found < self.data_bytes { "truncated" } else { "trailing bytes" },
        }
    }
}

/// Reads and checks an `.npy` header from `r`, which holds `total` bytes in all. The preamble
/// (magic, version, header length) is checked here so that a forged length allocates nothing;
/// `ndarray-npy` parses the header's dictionary.
fn read_head(r: &mut impl Read, origin: &str, total: u64) -> Result<NpyHead, FileError> {
    let not_npy = |problem: String| FileError::NotNpy { origin: origin.to_owned(), problem };
    let mut pre = [0u8; 8];
    let got = read_up_to(r, &mut pre).map_err(|e| not_npy(format!("cannot read it: {e}")))?;
    let pre = pre.get(..got).unwrap_or_default();
    if !pre.starts_with(b"\x93NUMPY") || got < 8 {
        let what = if pre.starts_with(b"PK\x03\x04") {
            "it is a zip archive (an .npz file?)".to_owned()
        } else if got == 0 {
            "it is empty".to_owned()
        } else if b"\x93NUMPY".starts_with(pre) || pre.starts_with(b"\x93NUMPY") {
            format!("it ends after {got} bytes, inside the preamble")
        } else {
            format!("it starts with {}, not with \\x93NUMPY", quote(pre))
        };
        return Err(not_npy(what));
    }
    let (major, minor) = (pre.get(6).copied().unwrap_or(0), pre.get(7).copied().unwrap_or(0));
    let len_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => {
            return Err(not_npy(format!(
                "format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)"
            )));
        }
    };
    let mut len = [0u8; 4];
    let len_slice = len.get_mut(..len_bytes).unwrap_or_default();
    r.read_exact(len_slice).map_err(|_| not_npy("it ends inside the preamble".to_owned()))?;
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_NPY_HEADER {
        return Err(not_npy(format!(
            "its header claims {header_len} bytes, more than the {MAX_NPY_HEADER} a real array header needs"
        )));
    }
    let mut raw = Vec::with_capacity(8 + len_bytes + header_len);
    raw.extend_from_slice(pre);
    raw.extend_from_slice(len.get(..len_bytes).unwrap_or_default());
    let dict_start = raw.len();
    let mut dict = vec![0u8; header_len];
    let got = read_up_to(r, &mut dict).map_err(|e| not_npy(format!("cannot read its header: {e}")))?;
    if got < header_len {
        return Err(not_npy(format!("it ends inside its header ({got} of {header_len} bytes)")));
    }
    let depth = dict
        .iter()
        .scan(0usize, |d, &b| {
            match b {
                b'(' | b'[' | b'{' => *d += 1,
                b')' | b']' | b'}' => *d = d.saturating_sub(1),
                _ => {}
            }
            Some(*d)
        })
        .max()
        .unwrap_or(0);
    if depth > MAX_NPY_NESTING {
        return Err(not_npy(format!("its header nests brackets {depth} deep")));
    }
    raw.extend_from_slice(&dict);
    let header = Header::from_reader(&mut raw.as_slice()).map_err(|e| not_npy(e.to_string()))?;
    let header_bytes = (dict_start + header_len) as u64;

    let descr = match header.type_descriptor.as_string() {
        Some(s) => s.clone(),
        None => header.type_descriptor.to_string(),
    };
    let dtype = parse_descr(&descr).ok();
    let elements = header.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let mut head = NpyHead {
        origin: origin.to_owned(),
        shape: header.shape,
        fortran: header.layout == Layout::Fortran,
        descr,
        dtype,
        elements: elements.unwrap_or(usize::MAX),
        data_bytes: 0,
        available: total.saturating_sub(header_bytes),
    };
    let data_bytes = elements.and_then(|n| n.checked_mul(dtype.map_or(0, |d| d.size)));
    match data_bytes.and_then(|b| u64::try_from(b).ok()) {
        Some(b) => head.data_bytes = b,
        None => return Err(head.shape_error("the array's size overflows a 64-bit count")),
    }
    Ok(head)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

const FEATURE_TYPES: &str = "features may be any integer type, float32 or float64";
const LABEL_TYPES: &str =
    "labels may be any integer type (class labels), float32 or float64 (regression targets)";

/// Checks a features array's header: a numeric dtype, at least one sample of at least one value.
fn check_features(x: &NpyHead) -> Result<(), FileError> {
    if x.dtype.is_none() {
        return Err(unsupported(x, "features", FEATURE_TYPES));
    }
    if x.shape.is_empty() {
        return Err(
            x.shape_error("a 0-D array is a single value; features must be (N, ...), one row per sample")
        );
    }
    if x.len() == 0 {
        return Err(x.shape_error("the array holds no samples"));
    }
    if x.sample_size() == 0 {
        return Err(x.shape_error("each sample has 0 values"));
    }
    x.check_length()
}

/// Checks a labels array's header: 1-D `(N,)` or 2-D `(N, k)`, integers only as `(N,)` or
/// `(N, 1)`.
fn check_labels(y: &NpyHead) -> Result<(), FileError> {
    let Some(dtype) = y.dtype else {
        return Err(unsupported(y, "labels", LABEL_TYPES));
    };
    match y.shape.as_slice() {
        [_] => {}
        [_, 0] => return Err(y.shape_error("each sample has 0 targets")),
        [_, 1] => {}
        [_, _] if dtype.kind != Kind::Float => {
            return Err(y.shape_error(
                "integer labels are one class per sample, (N,) or (N, 1); store regression targets as floats",
            ));
        }
        [_, _] => {}
        _ => return Err(y.shape_error("labels must be 1-D (N,) or 2-D (N, k)")),
    }
    y.check_length()
}

fn unsupported(head: &NpyHead, role: &'static str, supported: &'static str) -> FileError {
    FileError::Dtype {
        origin: head.origin.clone(),
        descr: head.descr.clone(),
        name: parse_descr(&head.descr).err().unwrap_or_default(),
        role,
        supported,
    }
}

/// Memory for an array as this module stores it: bytes stay bytes, everything else is 4 bytes
/// an element (f32 or u32).
fn stored_bytes(head: &NpyHead, features: bool) -> u64 {
    let byte = features && head.dtype.is_some_and(|d| d.kind == Kind::Uint && d.size == 1);
    (head.elements as u64).saturating_mul(if byte { 1 } else { 4 })
}

/// `x (60000, 28, 28) uint8`, for size messages.
fn describe(head: &NpyHead, name: &str) -> String {
    format!("{name} {} {}", head.shape_text(), head.dtype_name())
}

/// Refuses `heads` (features, labels, features, labels, ...) whose data would need more than
/// `max` bytes.
fn check_budget(origin: &str, heads: &[(&NpyHead, &str)], max: u64) -> Result<(), FileError> {
    let need =
        heads.iter().enumerate().fold(0u64, |n, (i, (h, _))| n.saturating_add(stored_bytes(h, i % 2 == 0)));
    if need <= max {
        return Ok(());
    }
    let what = heads.iter().map(|(h, name)| describe(h, name)).collect::<Vec<_>>().join(", ");
    Err(FileError::TooLarge {
        origin: origin.to_owned(),
        what,
        need,
        detail: " (bytes as bytes, other features as 32-bit floats, labels as 32-bit integers)".to_owned(),
        limit: max,
    })
}

/// One decoded element.
#[derive(Debug, Clone, Copy)]
enum Value {
    I(i64),
    U(u64),
    F(f64),
}

/// Where the elements of an array go: row-major (C order) positions, in file order.
struct Order {
    fortran: bool,
    shape: Vec<usize>,
    /// Row-major strides.
    strides: Vec<usize>,
    /// Fortran order: the multi-index of the next element.
    index: Vec<usize>,
    next: usize,
}

impl Order {
    fn new(head: &NpyHead) -> Order {
        let mut strides = vec![1; head.shape.len()];
        for i in (0..head.shape.len().saturating_sub(1)).rev() {
            let s = strides.get(i + 1).copied().unwrap_or(1) * head.shape.get(i + 1).copied().unwrap_or(1);
            if let Some(slot) = strides.get_mut(i) {
                *slot = s;
            }
        }
        Order {
            fortran: head.fortran,
            shape: head.shape.clone(),
            strides,
            index: vec![0; head.shape.len()],
            next: 0,
        }
    }

    /// The row-major position of the next element in the file.
    #[inline]
    fn advance(&mut self) -> usize {
        let here = self.next;
        if !self.fortran {
            self.next += 1;
            return here;
        }
        // The first index runs fastest; carry into the next one at its end.
        for ((i, &n), &s) in self.index.iter_mut().zip(&self.shape).zip(&self.strides) {
            *i += 1;
            self.next += s;
            if *i < n {
                break;
            }
            *i = 0;
            self.next -= n * s;
        }
        here
    }
}

/// The multi-index `[12, 0, 5]` of row-major position `pos` in `shape`.
fn index_text(shape: &[usize], mut pos: usize) -> String {
    let mut index = vec![0; shape.len()];
    for (slot, &n) in index.iter_mut().zip(shape).rev() {
        if n > 0 {
            *slot = pos % n;
            pos /= n;
        }
    }
    format!("[{}]", index.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
}

/// Reads the data of `head` from `r` (just after the header), handing each element with its
/// row-major position to `put`; then checks that nothing follows it.
fn decode(
    r: &mut impl Read,
    head: &NpyHead,
    mut put: impl FnMut(usize, Value) -> Result<(), FileError>,
) -> Result<(), FileError> {
    let Some(dtype) = head.dtype else { return Err(unsupported(head, "data", FEATURE_TYPES)) };
    let size = dtype.size;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut order = Order::new(head);
    let mut left = head.elements;
    let mut read = 0u64;
    macro_rules! each {
        ($bytes:expr, $t:ty, $n:literal, $variant:ident, $wide:ty) => {
            for c in $bytes.chunks_exact($n) {
                let Ok(a) = <[u8; $n]>::try_from(c) else { continue };
                let v = if dtype.big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) };
                put(order.advance(), Value::$variant(<$wide>::from(v)))?;
            }
        };
    }
    while left > 0 {
        let n = left.min(CHUNK_BYTES / size);
        let Some(bytes) = buf.get_mut(..n * size) else { break };
        let got = read_up_to(r, bytes).map_err(|e| FileError::NotNpy {
            origin: head.origin.clone(),
            problem: format!("cannot read its data: {e}"),
        })?;
        read += got as u64;
        if got < bytes.len() {
            return Err(head.length_error(read));
        }
        match (dtype.kind, size) {
            (Kind::Uint, 1) => each!(bytes, u8, 1, U, u64),
            (Kind::Uint, 2) => each!(bytes, u16, 2, U, u64),
            (Kind::Uint, 4) => each!(bytes, u32, 4, U, u64),
            (Kind::Uint, _) => each!(bytes, u64, 8, U, u64),
            (Kind::Int, 1) => each!(bytes, i8, 1, I, i64),
            (Kind::Int, 2) => each!(bytes, i16, 2, I, i64),
            (Kind::Int, 4) => each!(bytes, i32, 4, I, i64),
            (Kind::Int, _) => each!(bytes, i64, 8, I, i64),
            (Kind::Float, 4) => each!(bytes, f32, 4, F, f64),
            (Kind::Float, _) => each!(bytes, f64, 8, F, f64),
        }
        left -= n;
    }
    check_end(r, head, read)
}

/// Refuses bytes after the data.
fn check_end(r: &mut impl Read, head: &NpyHead, read: u64) -> Result<(), FileError> {
    let mut one = [0u8; 1];
    match read_up_to(r, &mut one) {
        Ok(0) => Ok(()),
        Ok(_) => Err(head.length_error(head.available.max(read + 1))),
        Err(e) => Err(FileError::NotNpy {
            origin: head.origin.clone(),
            problem: format!("cannot read its data: {e}"),
        }),
    }
}

fn not_finite(head: &NpyHead, pos: usize, value: f64) -> FileError {
    let size = head.sample_size().max(1);
    let shown = if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{value:e}, beyond the range of a 32-bit float")
    };
    FileError::NotFinite {
        origin: head.origin.clone(),
        index: index_text(&head.shape, pos),
        value: shown,
        sample: pos / size,
        element: pos % size,
        size,
    }
}

/// Reads a features array (its header checked, the reader just after it).
fn read_features(r: &mut impl Read, head: &NpyHead) -> Result<Features, FileError> {
    let n = head.elements;
    if head.dtype.is_some_and(|d| d.kind == Kind::Uint && d.size == 1) {
        let mut out = vec![0u8; n];
        if head.fortran {
            decode(r, head, |pos, v| {
                if let (Some(slot), Value::U(b)) = (out.get_mut(pos), v) {
                    *slot = u8::try_from(b).unwrap_or(u8::MAX);
                }
                Ok(())
            })?;
        } else {
            let got = read_up_to(r, &mut out).map_err(|e| FileError::NotNpy {
                origin: head.origin.clone(),
                problem: format!("cannot read its data: {e}"),
            })?;
            if got < n {
                return Err(head.length_error(got as u64));
            }
            check_end(r, head, n as u64)?;
        }
        return Ok(Features::U8(out));
    }
    Ok(Features::F32(decode_f32(r, head)?))
}

/// Every element as a 32-bit float: integers converted, floats rounded and refused when the
/// result is not finite (NaN, an infinity, or beyond f32's range), naming the element.
fn decode_f32(r: &mut impl Read, head: &NpyHead) -> Result<Vec<f32>, FileError> {
    let mut out = vec![0f32; head.elements];
    decode(r, head, |pos, v| {
        let x = match v {
            Value::I(i) => i as f32,
            Value::U(u) => u as f32,
            Value::F(f) => {
                let x = f as f32;
                if !x.is_finite() {
                    return Err(not_finite(head, pos, f));
                }
                x
            }
        };
        if let Some(slot) = out.get_mut(pos) {
            *slot = x;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads a labels array (its header checked, the reader just after it): integers as classes,
/// floats as targets.
fn read_targets(r: &mut impl Read, head: &NpyHead) -> Result<Targets, FileError> {
    let n = head.elements;
    if head.dtype.is_some_and(|d| d.kind == Kind::Float) {
        return Ok(Targets::Values { width: head.sample_size().max(1), data: decode_f32(r, head)? });
    }
    let mut classes = vec![0u32; n];
    decode(r, head, |pos, v| {
        let label = match v {
            Value::I(i) => u32::try_from(i).map_err(|_| i.to_string()),
            Value::U(u) => u32::try_from(u).map_err(|_| u.to_string()),
            Value::F(f) => Err(f.to_string()),
        };
        match label {
            Ok(label) => {
                if let Some(slot) = classes.get_mut(pos) {
                    *slot = label;
                }
                Ok(())
            }
            Err(value) => Err(FileError::BadLabel {
                origin: head.origin.clone(),
                index: index_text(&head.shape, pos),
                value,
            }),
        }
    })?;
    Ok(Targets::Classes(classes))
}

fn npy_table(x: &NpyHead, features: Features, targets: Targets) -> Table {
    Table {
        sample: x.shape.get(1..).unwrap_or_default().to_vec(),
        features,
        feature_names: Vec::new(),
        targets,
        lines: Vec::new(),
        target_column: 0,
    }
}

fn count_mismatch(x: &NpyHead, y: &NpyHead) -> Result<(), FileError> {
    if x.len() == y.len() {
        return Ok(());
    }
    Err(FileError::CountMismatch { x: x.origin.clone(), x_len: x.len(), y: y.origin.clone(), y_len: y.len() })
}

/// Opens a file for reading and returns it with its size; refuses one bigger than `max`.
fn open_within(path: &Path, max: u64) -> Result<(File, u64), FileError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let size = file.metadata().map_err(io_err("read", path))?.len();
    if size > max {
        return Err(FileError::FileTooLarge { origin: path.display().to_string(), size, limit: max });
    }
    Ok((file, size))
}

/// `X.npy` (features: uint8 kept as U8; any other int or float dtype converted to F32) and
/// `Y.npy` (labels: integer dtype → Classes (negative → error); float dtype → Values,
/// width 1 for 1-D, k for 2-D `[N, k]`). N must agree.
pub fn read_npy_pair(x: &Path, y: &Path, max_bytes: u64) -> Result<Table, FileError> {
    let (xf, xs) = open_within(x, max_bytes)?;
    let (yf, ys) = open_within(y, max_bytes)?;
    let (mut xr, mut yr) = (BufReader::new(xf), BufReader::new(yf));
    let xh = read_head(&mut xr, &x.display().to_string(), xs)?;
    let yh = read_head(&mut yr, &y.display().to_string(), ys)?;
    check_features(&xh)?;
    check_labels(&yh)?;
    count_mismatch(&xh, &yh)?;
    check_budget(&xh.origin, &[(&xh, "features"), (&yh, "labels")], max_bytes)?;
    let features = read_features(&mut xr, &xh)?;
    let targets = read_targets(&mut yr, &yh)?;
    Ok(npy_table(&xh, features, targets))
}

type Archive = zip::ZipArchive<BufReader<File>>;

/// The index of array `name` in an `.npz` archive, with or without the `.npy` suffix.
fn find_array(zip: &Archive, name: &str) -> Option<usize> {
    zip.index_for_name(name).or_else(|| zip.index_for_name(&format!("{name}.npy")))
}

/// The header of the array at `index`.
fn npz_head(zip: &mut Archive, origin: &str, index: usize, name: &str) -> Result<NpyHead, FileError> {
    let array = format!("{origin}, array {name}");
    let mut entry = zip.by_index(index).map_err(|source| FileError::Zip { origin: array.clone(), source })?;
    let size = entry.size();
    read_head(&mut entry, &array, size)
}

/// Reads the array at `index` (whose header is `head`) as features or as labels.
fn npz_read<T>(
    zip: &mut Archive,
    head: &NpyHead,
    index: usize,
    read: impl FnOnce(&mut zip::read::ZipFile<'_, BufReader<File>>, &NpyHead) -> Result<T, FileError>,
) -> Result<T, FileError> {
    let mut entry =
        zip.by_index(index).map_err(|source| FileError::Zip { origin: head.origin.clone(), source })?;
    let size = entry.size();
    // Past the header again: it was checked when the budget was.
    read_head(&mut entry, &head.origin, size)?;
    read(&mut entry, head)
}

/// `.npz` as `keras.datasets` writes them: arrays `x_train`, `y_train` and optionally `x_test`,
/// `y_test` (with or without the `.npy` suffix inside the zip). Returns (train, Some(test) or
/// None).
pub fn read_npz(path: &Path, max_bytes: u64) -> Result<(Table, Option<Table>), FileError> {
    let origin = path.display().to_string();
    let (file, _) = open_within(path, max_bytes)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|source| FileError::Zip { origin: origin.clone(), source })?;
    let mut present: Vec<String> =
        zip.file_names().map(|n| n.strip_suffix(".npy").unwrap_or(n).to_owned()).collect();
    present.sort();
    let known = ["x_train", "y_train", "x_test", "y_test"];
    let missing = |name: &'static str, why: &str| {
        let others = present.iter().filter(|n| !known.contains(&n.as_str())).cloned();
        let hint = match suggest(name, others) {
            Some(s) => format!(" (did you mean {s}?)"),
            None => why.to_owned(),
        };
        let present = if present.is_empty() { "no arrays".to_owned() } else { present.join(", ") };
        FileError::MissingArray { origin: origin.clone(), name, hint, present }
    };
    let need = " (features x_train and labels y_train are needed)";
    let xi = find_array(&zip, "x_train").ok_or_else(|| missing("x_train", need))?;
    let yi = find_array(&zip, "y_train").ok_or_else(|| missing("y_train", need))?;
    let test = match (find_array(&zip, "x_test"), find_array(&zip, "y_test")) {
        (Some(xt), Some(yt)) => Some((xt, yt)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(missing("y_test", " (the archive has x_test; a test split needs both)"));
        }
        (None, Some(_)) => {
            return Err(missing("x_test", " (the archive has y_test; a test split needs both)"));
        }
    };

    let xh = npz_head(&mut zip, &origin, xi, "x_train")?;
    let yh = npz_head(&mut zip, &origin, yi, "y_train")?;
    check_features(&xh)?;
    check_labels(&yh)?;
    count_mismatch(&xh, &yh)?;
    let test_heads = match test {
        Some((xt, yt)) => {
            let xth = npz_head(&mut zip, &origin, xt, "x_test")?;
            let yth = npz_head(&mut zip, &origin, yt, "y_test")?;
            check_features(&xth)?;
            check_labels(&yth)?;
            count_mismatch(&xth, &yth)?;
            if xth.shape.get(1..) != xh.shape.get(1..) {
                return Err(xth.shape_error(format!(
                    "test samples must have the shape of the training samples, {}",
                    describe(&xh, "x_train")
                )));
            }
            if yth.shape.get(1..) != yh.shape.get(1..)
                || yth.dtype.map(|d| d.kind == Kind::Float) != yh.dtype.map(|d| d.kind == Kind::Float)
            {
                return Err(yth.shape_error(format!(
                    "test labels must be of the kind and shape of the training labels, {}",
                    describe(&yh, "y_train")
                )));
            }
            Some((xt, yt, xth, yth))
        }
        None => None,
    };
    let mut heads = vec![(&xh, "x_train"), (&yh, "y_train")];
    if let Some((_, _, xth, yth)) = &test_heads {
        heads.extend([(xth, "x_test"), (yth, "y_test")]);
    }
    check_budget(&origin, &heads, max_bytes)?;

    let features = npz_read(&mut zip, &xh, xi, |r, h| read_features(r, h))?;
    let targets = npz_read(&mut zip, &yh, yi, |r, h| read_targets(r, h))?;
    let train = npy_table(&xh, features, targets);
    let test = match test_heads {
        Some((xt, yt, xth, yth)) => {
            let features = npz_read(&mut zip, &xth, xt, |r, h| read_features(r, h))?;
            let targets = npz_read(&mut zip, &yth, yt, |r, h| read_targets(r, h))?;
            Some(npy_table(&xth, features, targets))
        }
        None => None,
    };
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, ShapeBuilder};
    use ndarray_npy::{NpzWriter, WritableElement, WriteNpyExt};
    use std::io::Write as _;

    use crate::train::scratch::Scratch;

    /// A table in one line.
    fn show(t: &Table) -> String {
        let x = match &t.features {
            Features::U8(v) => format!("u8 {v:?}"),
            Features::F32(v) => format!("{v:?}"),
        };
        let y = match &t.targets {
            Targets::Classes(c) => format!("classes {c:?}"),
            Targets::Values { width, data } => format!("values/{width} {data:?}"),
        };
        let names = if t.feature_names.is_empty() { String::new() } else { t.feature_names.join(",") + " " };
        let lines = if t.lines.is_empty() { String::new() } else { format!(" lines {:?}", t.lines) };
        format!("{:?} {names}x {x} y {y}{lines} col {}", t.sample, t.target_column)
    }

    /// The outcome in one line: the table, or the message with the scratch directory left out.
    fn outcome(r: Result<Table, FileError>, dir: &Scratch) -> String {
        match r {
            Ok(t) => show(&t),
            Err(e) => e.to_string().replace(&format!("{}/", dir.0.display()), ""),
        }
    }

    /// `found` is `expected`, or starts with it when it ends in `*`.
    #[track_caller]
    fn expect(found: &str, expected: &str) {
        match expected.strip_suffix('*') {
            Some(prefix) => assert!(found.starts_with(prefix), "\n got: {found}\nwant: {expected}"),
            None => assert_eq!(found, expected, "\n got: {found}\nwant: {expected}"),
        }
    }

    /// Writes `text` to `data.csv`, reads it with `spec` (`label=COL` or `target=A,B`),
    /// `delimiter` and a budget of `max` bytes, serially and split into 2 and 3 chunks (quote-free
    /// files only), and checks the outcome: the table's summary or the exact message.
    #[track_caller]
    fn check_csv(dir: &Scratch, text: &str, delimiter: u8, spec: &str, max: u64, expected: &str) {
        let path = dir.write("data.csv", text.as_bytes());
        let names: Vec<String>;
        let targets = match spec.split_once('=') {
            Some(("label", col)) => TargetSpec::Label(col),
            Some(("target", cols)) => {
                names = cols.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
                TargetSpec::Target(&names)
            }
            _ => panic!("bad spec {spec}"),
        };
        let opts = CsvOptions { delimiter, targets, max_bytes: max };
        let serial = outcome(read_csv_in(&path, &opts, 1, 0), dir);
        expect(&serial, expected);
        for parts in [2, 3] {
            let split = outcome(read_csv_in(&path, &opts, parts, 0), dir);
            assert_eq!(split, serial, "{parts} parts of {text:?}");
        }
    }

    #[test]
    fn csv_cases() {
        let dir = Scratch::new("csv");
        let max = u64::MAX;
        let nan = "is not a finite 32-bit float; NaN and infinite values are refused (nothing is trained on bad data)";
        let not_label = "is not a class label; labels are whole numbers from 0 to 4294967295 (like 3 or 3.0)";
        let empty = "data.csv: the file is empty; a CSV file needs a header row naming the columns, then one row per sample";
        #[rustfmt::skip]
        let cases: &[(&str, u8, &str, String)] = &[
            // Good files.
            ("label,x1,x2\n3,1.5,2\n0,-1,1e3\n",       b',', "label=label",    "[2] x1,x2 x [1.5, 2.0, -1.0, 1000.0] y classes [3, 0] lines [2, 3] col 1".into()),
            ("x1,label,x2\n1,2,3\n",                   b',', "label=label",    "[2] x1,x2 x [1.0, 3.0] y classes [2] lines [2] col 2".into()),
            ("a,y1,b,y2\n1,2,3,4\n5,6,7,8\n",           b',', "target=y2,y1",   "[2] a,b x [1.0, 3.0, 5.0, 7.0] y values/2 [4.0, 2.0, 8.0, 6.0] lines [2, 3] col 4".into()),
            ("label;x\n1;2.5\n",                       b';', "label=label",    "[1] x x [2.5] y classes [1] lines [2] col 1".into()),
            ("label\tx\n1\t2.5\n",                     b'\t', "label=label",   "[1] x x [2.5] y classes [1] lines [2] col 1".into()),
            ("\"label\",\"x\"\n\"1\",\"1.5\"\n",       b',', "label=label",    "[1] x x [1.5] y classes [1] lines [2] col 1".into()),
            ("\u{feff}label,x\n1,2\n",                 b',', "label=label",    "[1] x x [2.0] y classes [1] lines [2] col 1".into()),
            ("label,x\r\n1,2\r\n3,4\r\n",              b',', "label=label",    "[1] x x [2.0, 4.0] y classes [1, 3] lines [2, 3] col 1".into()),
            ("label,x\n1,2\n\n\n",                     b',', "label=label",    "[1] x x [2.0] y classes [1] lines [2] col 1".into()),
            ("label,x\n1,2\n\n3,4\n",                  b',', "label=label",    "[1] x x [2.0, 4.0] y classes [1, 3] lines [2, 4] col 1".into()),
            ("label, x\n 1 , 2 \n",                    b',', "label=label",    "[1] x x [2.0] y classes [1] lines [2] col 1".into()),
            ("label,x\n3.0,1\n1e2,2\n4294967295,3\n",  b',', "label=label",    "[1] x x [1.0, 2.0, 3.0] y classes [3, 100, 4294967295] lines [2, 3, 4] col 1".into()),
            ("label,x\n1,2",                           b',', "label=label",    "[1] x x [2.0] y classes [1] lines [2] col 1".into()),
            ("label,x\n1,0.1\n2,16777217\n3,-0\n",     b',', "label=label",    "[1] x x [0.1, 16777216.0, -0.0] y classes [1, 2, 3] lines [2, 3, 4] col 1".into()),
            ("\"x\ny\",label\n1,2\n",                  b',', "label=label",    "[1] x\ny x [1.0] y classes [2] lines [3] col 2".into()),
            // FIXME: lone CR line ends end rows, but the csv crate counts lines at `\n` only.
            ("label,x\r1,2\r3,4\r",                    b',', "label=label",    "[1] x x [2.0, 4.0] y classes [1, 3] lines [1, 1] col 1".into()),
            // No data.
            ("",                                       b',', "label=label",    empty.into()),
            ("\n\n",                                   b',', "label=label",    empty.into()),
            ("\u{feff}",                               b',', "label=label",    empty.into()),
            ("label,x\n",                              b',', "label=label",    "data.csv: no data rows after the header (line 1)".into()),
            ("label,x\n\n\r\n",                        b',', "label=label",    "data.csv: no data rows after the header (line 1)".into()),
            // The header and the spec.
            ("lable,x\n1,2\n",                         b',', "label=label",    "data.csv:1: the header has no column \"label\" (did you mean \"lable\"?); its 2 columns are \"lable\", \"x\"".into()),
            ("a,b,c,d,e,f,g,h,i,j\n1,2,3,4,5,6,7,8,9,0\n", b',', "label=label", "data.csv:1: the header has no column \"label\"; its 10 columns are \"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", … (2 more)".into()),
            ("label;x\n1;2\n",                         b',', "label=label",    "data.csv:1: the header has no column \"label\" (it reads as one column: is the delimiter ';'?); its 1 columns are \"label;x\"".into()),
            ("label,label,x\n1,2,3\n",                 b',', "label=label",    "data.csv:1: the header names \"label\" twice (columns 1 and 2), so which one is the label is ambiguous".into()),
            ("y,x\n1,2\n",                             b',', "target=y,y",     "data.csv: column \"y\" is named twice in target=".into()),
            ("y,x\n1,2\n",                             b',', "target=",        "data.csv: no target columns were named (target=COL[,COL...] needs at least one)".into()),
            ("label\n1\n",                             b',', "label=label",    "data.csv:1: every column of the header is a target; there are no feature columns".into()),
            // Bad cells, named by line, column number and column name.
            ("label,x1,x2\n1,2,3\n4,abc,6\n",          b',', "label=label",    "data.csv:3:2 (column \"x1\"): \"abc\" is not a number".into()),
            ("label,x\n1,\n",                          b',', "label=label",    "data.csv:2:2 (column \"x\"): the cell is empty; every row needs a value in every column".into()),
            ("label,x\n,1\n",                          b',', "label=label",    "data.csv:2:1 (column \"label\"): the cell is empty; every row needs a value in every column".into()),
            ("label,x,y\n1,2\n",                       b',', "label=label",    "data.csv:2:3: ragged row: 2 fields, but the header (line 1) has 3".into()),
            ("label,x\n1,2,3\n",                       b',', "label=label",    "data.csv:2:3: ragged row: 3 fields, but the header (line 1) has 2".into()),
            ("label,x\n1,2\n \n",                      b',', "label=label",    "data.csv:3:2: ragged row: 1 fields, but the header (line 1) has 2".into()),
            ("label,x\n1,nan\n",                       b',', "label=label",    format!("data.csv:2:2 (column \"x\"): \"nan\" {nan}")),
            ("label,x\n1,NaN\n",                       b',', "label=label",    format!("data.csv:2:2 (column \"x\"): \"NaN\" {nan}")),
            ("label,x\n1,-inf\n",                      b',', "label=label",    format!("data.csv:2:2 (column \"x\"): \"-inf\" {nan}")),
            ("label,x\n1,1e39\n",                      b',', "label=label",    format!("data.csv:2:2 (column \"x\"): \"1e39\" {nan}")),
            ("y,x\ninf,1\n",                           b',', "target=y",       format!("data.csv:2:1 (column \"y\"): \"inf\" {nan}")),
            ("label,x\n3.5,1\n",                       b',', "label=label",    format!("data.csv:2:1 (column \"label\"): \"3.5\" {not_label}")),
            ("label,x\n-1,1\n",                        b',', "label=label",    format!("data.csv:2:1 (column \"label\"): \"-1\" {not_label}")),
            ("label,x\nabc,1\n",                       b',', "label=label",    format!("data.csv:2:1 (column \"label\"): \"abc\" {not_label}")),
            ("label,x\nnan,1\n",                       b',', "label=label",    format!("data.csv:2:1 (column \"label\"): \"nan\" {not_label}")),
            ("label,x\n4294967296,1\n",                b',', "label=label",    format!("data.csv:2:1 (column \"label\"): \"4294967296\" {not_label}")),
            // Line numbers past CRLF, a BOM, blank lines and quoted newlines.
            ("label,x\r\n1,2\r\n3,x\r\n",              b',', "label=label",    "data.csv:3:2 (column \"x\"): \"x\" is not a number".into()),
            ("\u{feff}label,x\n1,a\n",                 b',', "label=label",    "data.csv:2:2 (column \"x\"): \"a\" is not a number".into()),
            ("label,x\n\n\n1,2\n\n2,b\n",              b',', "label=label",    "data.csv:6:2 (column \"x\"): \"b\" is not a number".into()),
            ("\n\r\nlabel,x\n1,a\n",                b',', "label=label",    "data.csv:4:2 (column \"x\"): \"a\" is not a number".into()),
            ("\n\nlabel,x\n\n",                       b',', "label=label",    "data.csv: no data rows after the header (line 3)".into()),
            ("\"x\ny\",label\n1,2\n\"3\",a\n",         b',', "label=label",    format!("data.csv:4:2 (column \"label\"): \"a\" {not_label}")),
            ("label,x\n1,\"2\n3\"\n",                  b',', "label=label",    "data.csv:2:2 (column \"x\"): \"2\\n3\" is not a number".into()),
            ("label,x\n1,\"2\"\n4,z\n",                b',', "label=label",    "data.csv:3:2 (column \"x\"): \"z\" is not a number".into()),
            ("label,x\n1,abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\n", b',', "label=label", "data.csv:2:2 (column \"x\"): \"abcdefghijklmnopqrstuvwxyzabcdefghijklmn\"… is not a number".into()),
            ("label,x\n1,\u{e9}\n",                    b',', "label=label",    "data.csv:2:2 (column \"x\"): \"\u{e9}\" is not a number".into()),
        ];
        for (text, delimiter, spec, expected) in cases {
            check_csv(&dir, text, *delimiter, spec, max, expected);
        }
    }

    #[test]
    fn csv_size_is_checked_before_reading() {
        let dir = Scratch::new("csv-size");
        let text = "label,x\n1,2\n3,4\n"; // 16 bytes, 2 rows
        #[rustfmt::skip]
        let cases: &[(u64, &str)] = &[
            (10, "data.csv: the file is 16 bytes, more than the memory limit of 10 bytes"),
            // 16 bytes of text, then per row a feature and a label (4 bytes each) and a line (8).
            (47, "data.csv: its 2 rows × 2 columns would need 48 bytes as 32-bit floats, with the 16 bytes of the file itself; the memory limit is 47 bytes"),
            (48, "[1] x x [2.0, 4.0] y classes [1, 3] lines [2, 3] col 1"),
            (3 << 30, "[1] x x [2.0, 4.0] y classes [1, 3] lines [2, 3] col 1"),
        ];
        for (max, expected) in cases {
            check_csv(&dir, text, b',', "label=label", *max, expected);
        }
        let missing = read_csv(
            &dir.0.join("absent.csv"),
            &CsvOptions { delimiter: b',', targets: TargetSpec::Label("label"), max_bytes: u64::MAX },
        );
        let msg = outcome(missing, &dir);
        assert!(msg.starts_with("cannot open ") && msg.contains("absent.csv"), "{msg}");
    }

    /// A file big enough to split, with blank lines, CRLF and a bad cell near the end: every
    /// split gives the serial result.
    #[test]
    fn csv_splits_agree_with_one_thread() {
        let dir = Scratch::new("csv-split");
        let mut text = String::from("label,a,b\n");
        for i in 0..300u32 {
            let end = if i % 7 == 0 { "\r\n" } else { "\n" };
            let _ = write!(text, "{},{},{}.25{end}", i % 10, i * 3, i);
            if i % 50 == 0 {
                text.push('\n');
            }
        }
        let opts = CsvOptions { delimiter: b',', targets: TargetSpec::Label("label"), max_bytes: u64::MAX };
        let path = dir.write("data.csv", text.as_bytes());
        let serial = read_csv_in(&path, &opts, 1, 0);
        assert!(matches!(&serial, Ok(t) if t.len() == 300 && t.lines.last() == Some(&307)), "{serial:?}");
        for parts in 2..=6 {
            let split = read_csv_in(&path, &opts, parts, 0);
            assert!(matches!((&serial, &split), (Ok(a), Ok(b)) if a == b), "{parts} parts differ");
        }
        text.push_str("1,2,3\n4,5,oops\n");
        let path = dir.write("data.csv", text.as_bytes());
        for parts in 1..=6 {
            let msg = outcome(read_csv_in(&path, &opts, parts, 0), &dir);
            assert_eq!(msg, "data.csv:309:3 (column \"b\"): \"oops\" is not a number", "{parts} parts");
        }
    }

    /// A body, the parts asked for, the chunks expected, and the body's row bound and `\n` count.
    type SplitCase<'a> = (&'a str, usize, &'a [&'a str], (usize, usize));

    #[test]
    fn split_and_bound() {
        #[rustfmt::skip]
        let cases: &[SplitCase<'_>] = &[
            ("a\nb\nc\nd\n", 2, &["a\nb\nc\n", "d\n"],  (4, 4)),
            ("ab\nc\n",     2, &["ab\n", "c\n"],        (2, 2)),
            ("a\nb\nc\nd",   3, &["a\nb\n", "c\n", "d"], (4, 3)),
            ("abcdef\n",     4, &["abcdef\n"],          (1, 1)),
            ("a\r\nb\rc",    1, &["a\r\nb\rc"],         (3, 1)),
            ("",             2, &[""],                  (0, 0)),
            ("\n\n",         1, &["\n\n"],              (2, 2)),
        ];
        for (body, parts, chunks, bound) in cases {
            let got: Vec<&[u8]> = split_at_lines(body.as_bytes(), *parts);
            let want: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
            assert_eq!(got, want, "{body:?} in {parts}");
            assert_eq!(row_bound(body.as_bytes()), *bound, "{body:?}");
        }
    }

    /// An `.npy` file holding `data` with `shape`, in C order or (`fortran`) Fortran order.
    fn npy<A: WritableElement>(shape: &[usize], data: Vec<A>, fortran: bool) -> Vec<u8> {
        let dims = IxDyn(shape);
        let array =
            if fortran { ArrayD::from_shape_vec(dims.f(), data) } else { ArrayD::from_shape_vec(dims, data) };
        let mut out = Vec::new();
        if let Ok(a) = array {
            let _ = a.write_npy(&mut out);
        }
        out
    }

    /// An `.npy` file written by hand: version 1.0, `descr`, `shape` as Python writes it, `data`.
    fn raw_npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        dict.extend(std::iter::repeat_n(b' ', pad));
        dict.push(b'\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend(dict);
        v.extend_from_slice(data);
        v
    }

    fn cut(mut v: Vec<u8>, n: usize) -> Vec<u8> {
        v.truncate(v.len().saturating_sub(n));
        v
    }

    fn append(mut v: Vec<u8>, extra: &[u8]) -> Vec<u8> {
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn npy_pair_cases() {
        let dir = Scratch::new("npy");
        let max = u64::MAX;
        let pixels: Vec<u8> = (0..12).collect();
        let x_u8 = npy(&[3, 2, 2], pixels.clone(), false);
        let y_u8 = npy(&[3], vec![1u8, 0, 2], false);
        let x_f32 = npy(&[2, 3], vec![0.5f32, 1.0, 1.5, 2.0, 2.5, 3.0], false);
        let nan = "NaN and infinite values are refused (nothing is trained on bad data)";
        let labels = "class labels must be whole numbers from 0 to 4294967295";
        let be_i4: Vec<u8> = [1i32, -2, 300, 4].iter().flat_map(|v| v.to_be_bytes()).collect();
        let be_f8: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
        huge_header.extend_from_slice(&u32::MAX.to_le_bytes());
        let deep = format!("{}{}", "(".repeat(40), ")".repeat(40));
        #[rustfmt::skip]
        let cases: &[(Vec<u8>, Vec<u8>, u64, String)] = &[
            // Good pairs.
            (x_u8.clone(), y_u8.clone(), max, "[2, 2] x u8 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] y classes [1, 0, 2] col 0".into()),
            (x_u8.clone(), npy(&[3], vec![5i64, 0, 7], false), max, "[2, 2] x u8 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] y classes [5, 0, 7] col 0".into()),
            (x_u8.clone(), npy(&[3, 1], vec![5u16, 0, 7], false), max, "[2, 2] x u8 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] y classes [5, 0, 7] col 0".into()),
            (x_f32.clone(), npy(&[2], vec![0.25f64, -1.0], false), max, "[3] x [0.5, 1.0, 1.5, 2.0, 2.5, 3.0] y values/1 [0.25, -1.0] col 0".into()),
            (x_f32.clone(), npy(&[2, 2], vec![1f64, 2.0, 3.0, 4.0], false), max, "[3] x [0.5, 1.0, 1.5, 2.0, 2.5, 3.0] y values/2 [1.0, 2.0, 3.0, 4.0] col 0".into()),
            (npy(&[2, 2], vec![-3i32, 4, 16777217, 0], false), npy(&[2], vec![1u32, 0], false), max, "[2] x [-3.0, 4.0, 16777216.0, 0.0] y classes [1, 0] col 0".into()),
            (npy(&[3], vec![7u8, 8, 9], false), y_u8.clone(), max, "[] x u8 [7, 8, 9] y classes [1, 0, 2] col 0".into()),
            // Fortran order comes out row-major; big-endian data is swapped.
            (npy(&[2, 3], vec![0u8, 1, 2, 3, 4, 5], true), npy(&[2], vec![0u8, 1], false), max, "[3] x u8 [0, 2, 4, 1, 3, 5] y classes [0, 1] col 0".into()),
            (npy(&[2, 2, 2], (0..8).map(|v| v as f32).collect(), true), npy(&[2], vec![0u8, 1], true), max, "[2, 2] x [0.0, 4.0, 2.0, 6.0, 1.0, 5.0, 3.0, 7.0] y classes [0, 1] col 0".into()),
            (raw_npy(">i4", "(2, 2)", &be_i4), raw_npy(">f8", "(2,)", &be_f8), max, "[2] x [1.0, -2.0, 300.0, 4.0] y values/1 [1.5, -2.0] col 0".into()),
            (raw_npy("|u1", "(1, 2)", &[3, 4]), raw_npy("<i2", "(1,)", &[9, 0]), max, "[2] x u8 [3, 4] y classes [9] col 0".into()),
            // Bad values.
            (npy(&[2, 3], vec![0f64, 1.0, 2.0, 3.0, 4.0, f64::NAN], false), npy(&[2], vec![0u8, 1], false), max, format!("x.npy: element [1, 2] (sample 1, value 2 of 3) is NaN; {nan}")),
            (npy(&[2, 1, 2], vec![0f32, f32::NEG_INFINITY, 2.0, 3.0], false), npy(&[2], vec![0u8, 1], false), max, format!("x.npy: element [0, 0, 1] (sample 0, value 1 of 2) is -inf; {nan}")),
            (npy(&[1, 2], vec![0f64, 1e300], false), npy(&[1], vec![0u8], false), max, format!("x.npy: element [0, 1] (sample 0, value 1 of 2) is 1e300, beyond the range of a 32-bit float; {nan}")),
            (x_f32.clone(), npy(&[2], vec![1f32, f32::INFINITY], false), max, format!("y.npy: element [1] (sample 1, value 0 of 1) is inf; {nan}")),
            (x_u8.clone(), npy(&[3], vec![1i64, -1, 2], false), max, format!("y.npy: element [1] is -1; {labels}")),
            (x_u8.clone(), npy(&[3], vec![1u64, 1 << 32, 2], false), max, format!("y.npy: element [1] is 4294967296; {labels}")),
            // Shapes and types.
            (x_u8.clone(), npy(&[3, 2], vec![0i64; 6], false), max, "y.npy: shape (3, 2): integer labels are one class per sample, (N,) or (N, 1); store regression targets as floats".into()),
            (x_u8.clone(), npy(&[3, 1, 1], vec![0f32; 3], false), max, "y.npy: shape (3, 1, 1): labels must be 1-D (N,) or 2-D (N, k)".into()),
            (x_u8.clone(), npy(&[], vec![0f32], false), max, "y.npy: shape (): labels must be 1-D (N,) or 2-D (N, k)".into()),
            (x_u8.clone(), npy(&[3, 0], Vec::<f32>::new(), false), max, "y.npy: shape (3, 0): each sample has 0 targets".into()),
            (x_u8.clone(), npy(&[2], vec![0u8, 1], false), max, "x.npy has 3 samples but y.npy has 2".into()),
            (npy(&[], vec![1u8], false), y_u8.clone(), max, "x.npy: shape (): a 0-D array is a single value; features must be (N, ...), one row per sample".into()),
            (npy(&[0, 3], Vec::<u8>::new(), false), y_u8.clone(), max, "x.npy: shape (0, 3): the array holds no samples".into()),
            (npy(&[3, 0], Vec::<u8>::new(), false), y_u8.clone(), max, "x.npy: shape (3, 0): each sample has 0 values".into()),
            (npy(&[3], vec![true, false, true], false), y_u8.clone(), max, "x.npy: dtype \"|b1\" (bool) is not supported for features; features may be any integer type, float32 or float64".into()),
            (x_u8.clone(), raw_npy("<c16", "(3,)", &[0; 48]), max, "y.npy: dtype \"<c16\" (complex128) is not supported for labels; labels may be any integer type (class labels), float32 or float64 (regression targets)".into()),
            (x_u8.clone(), raw_npy("<f2", "(3,)", &[0; 6]), max, "y.npy: dtype \"<f2\" (float16) is not supported for labels; *".into()),
            (x_u8.clone(), raw_npy("<U3", "(3,)", &[0; 36]), max, "y.npy: dtype \"<U3\" (unicode strings) is not supported for labels; *".into()),
            // Not npy, or damaged.
            (b"hello, world".to_vec(), y_u8.clone(), max, "x.npy: not a NumPy .npy array: it starts with \"hello, w\", not with \\x93NUMPY".into()),
            (Vec::new(), y_u8.clone(), max, "x.npy: not a NumPy .npy array: it is empty".into()),
            (b"\x93NUM".to_vec(), y_u8.clone(), max, "x.npy: not a NumPy .npy array: it ends after 4 bytes, inside the preamble".into()),
            (b"PK\x03\x04rest".to_vec(), y_u8.clone(), max, "x.npy: not a NumPy .npy array: it is a zip archive (an .npz file?)".into()),
            (b"\x93NUMPY\x09\x00\x10\x00".to_vec(), y_u8.clone(), max, "x.npy: not a NumPy .npy array: format version 9.0 is not supported (1.0, 2.0 and 3.0 are)".into()),
            (huge_header, y_u8.clone(), max, "x.npy: not a NumPy .npy array: its header claims 4294967295 bytes, more than the 65536 a real array header needs".into()),
            (raw_npy("|u1", &deep, &[]), y_u8.clone(), max, "x.npy: not a NumPy .npy array: its header nests brackets 41 deep".into()),
            (cut(raw_npy("|u1", "(1,)", &[]), 20), y_u8.clone(), max, "x.npy: not a NumPy .npy array: it ends inside its header (98 of 118 bytes)".into()),
            (raw_npy("|u1", "'abc'", &[]), y_u8.clone(), max, "x.npy: not a NumPy .npy array: error parsing header: illegal value for key shape: *".into()),
            (cut(x_u8.clone(), 3), y_u8.clone(), max, "x.npy: the header says shape (3, 2, 2) of uint8, 12 bytes of data, but 9 bytes follow it: truncated".into()),
            (append(x_u8.clone(), &[0, 0]), y_u8.clone(), max, "x.npy: the header says shape (3, 2, 2) of uint8, 12 bytes of data, but 14 bytes follow it: trailing bytes".into()),
            (x_f32.clone(), cut(npy(&[2], vec![1f64, 2.0], false), 1), max, "y.npy: the header says shape (2,) of float64, 16 bytes of data, but 15 bytes follow it: truncated".into()),
            // The budget: file sizes first, then what the arrays need as stored (bytes stay
            // bytes, labels become 4-byte integers).
            (x_u8.clone(), y_u8.clone(), 100, "x.npy: the file is 140 bytes, more than the memory limit of 100 bytes".into()),
            (npy(&[1000], vec![0u8; 1000], false), npy(&[1000], vec![0u8; 1000], false), 4999, "x.npy: features (1000,) uint8, labels (1000,) uint8 would need 4.9 KiB (bytes as bytes, other features as 32-bit floats, labels as 32-bit integers); the memory limit is 4.9 KiB".into()),
            (npy(&[1000], vec![0u8; 1000], false), npy(&[1000], vec![0u8; 1000], false), 5000, "[] x u8 [0, 0, *".into()),
        ];
        for (x, y, max, expected) in cases {
            let xp = dir.write("x.npy", x);
            let yp = dir.write("y.npy", y);
            expect(&outcome(read_npy_pair(&xp, &yp, *max), &dir), expected);
        }
    }

    /// An `.npz` archive of `arrays` (name, `.npy` bytes), stored or deflated, each entry named
    /// as given (`NpzWriter` always appends `.npy`; `keras.datasets` files have it too).
    fn zip_of(arrays: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
        let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, bytes) in arrays {
            let _ = z.start_file(*name, options);
            let _ = z.write_all(bytes);
        }
        z.finish().map(io::Cursor::into_inner).unwrap_or_default()
    }

    fn npz_outcome(r: Result<(Table, Option<Table>), FileError>, dir: &Scratch) -> String {
        match r {
            Ok((train, test)) => {
                format!("{} | {}", show(&train), test.as_ref().map_or("no test".into(), show))
            }
            Err(e) => e.to_string().replace(&format!("{}/", dir.0.display()), ""),
        }
    }

    #[test]
    fn npz_cases() {
        let dir = Scratch::new("npz");
        let max = u64::MAX;
        let xtr = || npy(&[2, 2, 2], (0..8u8).collect(), false);
        let ytr = || npy(&[2], vec![3u8, 4], false);
        let xte = || npy(&[1, 2, 2], vec![9u8; 4], false);
        let yte = || npy(&[1], vec![5u8], false);
        // NpzWriter, stored and compressed, as numpy.savez and savez_compressed write them.
        let mut written = Vec::new();
        for compressed in [false, true] {
            let mut w = if compressed {
                NpzWriter::new_compressed(io::Cursor::new(Vec::new()))
            } else {
                NpzWriter::new(io::Cursor::new(Vec::new()))
            };
            let x: ArrayD<u8> =
                ArrayD::from_shape_vec(IxDyn(&[2, 2, 2]), (0..8).collect()).unwrap_or_default();
            let y: ArrayD<u8> = ArrayD::from_shape_vec(IxDyn(&[2]), vec![3, 4]).unwrap_or_default();
            let _ = w.add_array("x_train", &x);
            let _ = w.add_array("y_train", &y);
            let _ = w.add_array("x_test", &x);
            let _ = w.add_array("y_test", &y);
            written.push(w.finish().map(io::Cursor::into_inner).unwrap_or_default());
        }
        let train = "[2, 2] x u8 [0, 1, 2, 3, 4, 5, 6, 7] y classes [3, 4] col 0";
        let test = "[2, 2] x u8 [9, 9, 9, 9] y classes [5] col 0";
        let nan = "NaN and infinite values are refused (nothing is trained on bad data)";
        #[rustfmt::skip]
        let cases: &[(Vec<u8>, u64, String)] = &[
            (written[0].clone(), max, format!("{train} | {train}")),
            (written[1].clone(), max, format!("{train} | {train}")),
            (zip_of(&[("x_train.npy", xtr()), ("y_train.npy", ytr()), ("x_test.npy", xte()), ("y_test.npy", yte())], true), max, format!("{train} | {test}")),
            (zip_of(&[("x_train", xtr()), ("y_train", ytr()), ("x_test", xte()), ("y_test", yte())], false), max, format!("{train} | {test}")),
            (zip_of(&[("y_train.npy", ytr()), ("x_train.npy", xtr())], true), max, format!("{train} | no test")),
            (zip_of(&[("x_train.npy", npy(&[2, 3], vec![1f64, 2.0, 3.0, 4.0, 5.0, 6.0], false)), ("y_train.npy", npy(&[2, 2], vec![0.5f32, 1.5, 2.5, 3.5], false))], true), max,
                "[3] x [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] y values/2 [0.5, 1.5, 2.5, 3.5] col 0 | no test".into()),
            // Missing arrays.
            (zip_of(&[("x_train.npy", xtr()), ("y_trian.npy", ytr())], false), max, "data.npz: no array named y_train (did you mean y_trian?); the archive holds x_train, y_trian".into()),
            (zip_of(&[("features.npy", xtr())], false), max, "data.npz: no array named x_train (features x_train and labels y_train are needed); the archive holds features".into()),
            (zip_of(&[], false), max, "data.npz: no array named x_train (features x_train and labels y_train are needed); the archive holds no arrays".into()),
            (zip_of(&[("x_train.npy", xtr()), ("y_train.npy", ytr()), ("x_test.npy", xte())], false), max, "data.npz: no array named y_test (the archive has x_test; a test split needs both); the archive holds x_test, x_train, y_train".into()),
            // Bad arrays, named by archive and array.
            (zip_of(&[("x_train.npy", npy(&[2, 2], vec![0f64, 1.0, f64::NAN, 3.0], false)), ("y_train.npy", ytr())], true), max, format!("data.npz, array x_train: element [1, 0] (sample 1, value 0 of 2) is NaN; {nan}")),
            (zip_of(&[("x_train.npy", xtr()), ("y_train.npy", npy(&[3], vec![1u8, 2, 3], false))], true), max, "data.npz, array x_train has 2 samples but data.npz, array y_train has 3".into()),
            (zip_of(&[("x_train.npy", xtr()), ("y_train.npy", ytr()), ("x_test.npy", npy(&[1, 4], vec![0u8; 4], false)), ("y_test.npy", yte())], false), max,
                "data.npz, array x_test: shape (1, 4): test samples must have the shape of the training samples, x_train (2, 2, 2) uint8".into()),
            (zip_of(&[("x_train.npy", xtr()), ("y_train.npy", ytr()), ("x_test.npy", xte()), ("y_test.npy", npy(&[1], vec![0.5f32], false))], false), max,
                "data.npz, array y_test: shape (1,): test labels must be of the kind and shape of the training labels, y_train (2,) uint8".into()),
            (zip_of(&[("x_train.npy", b"not npy".to_vec()), ("y_train.npy", ytr())], true), max, "data.npz, array x_train: not a NumPy .npy array: it starts with \"not npy\", not with \\x93NUMPY".into()),
            (zip_of(&[("x_train.npy", cut(xtr(), 1)), ("y_train.npy", ytr())], true), max, "data.npz, array x_train: the header says shape (2, 2, 2) of uint8, 8 bytes of data, but 7 bytes follow it: truncated".into()),
            (b"plain text, not a zip".to_vec(), max, "data.npz: not a readable .npz (zip) archive: *".into()),
            // The budget: the archive's size, then the arrays as stored.
            (written[1].clone(), 100, "data.npz: the file is *".into()),
            (written[0].clone(), 5000, format!("{train} | {train}")),
            (zip_of(&[("x_train.npy", npy(&[300], vec![0u8; 300], false)), ("y_train.npy", npy(&[300], vec![0i8; 300], false))], true), 1400,
                "data.npz: x_train (300,) uint8, y_train (300,) int8 would need 1.5 KiB (bytes as bytes, other features as 32-bit floats, labels as 32-bit integers); the memory limit is 1.4 KiB".into()),
        ];
        for (archive, max, expected) in cases {
            let path = dir.write("data.npz", archive);
            expect(&npz_outcome(read_npz(&path, *max), &dir), expected);
        }
    }
}
