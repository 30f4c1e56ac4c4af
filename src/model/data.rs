//! The `data` line of a model file: where the samples come from and what is done to them.
//!
//! ```text
//! data mnist                                        # the built-in MNIST (fetched, cached)
//! data idx "train-images.gz" "train-labels.gz" test_images="t10k-images.gz" test_labels="t10k-labels.gz"
//! data csv "iris.csv" label=species validation_split=0.2 normalize
//! data csv "houses.csv" target="price" test="houses-test.csv" delimiter=";"
//! data npy "x.npy" "y.npy" test_x="x_test.npy" test_y="y_test.npy" divide=255
//! data npz "mnist.npz" divide=255                   # x_train, y_train, x_test, y_test
//! ```
//!
//! Paths are in quotes and relative to the model file's folder. Options:
//!
//! * `label=COLUMN` (CSV): integer class labels, one column; `target=COLUMN` or
//!   `target="a,b"` (CSV): float targets, for regression. Every other column is a feature.
//!   NumPy files hold class labels (integers, or floats with whole values) unless the line
//!   says `regression`: then the second array holds float targets, one or a row per sample.
//! * `test=PATH` (CSV), `test_x=`/`test_y=` (npy), `test_images=`/`test_labels=` (idx): a test
//!   split of its own. An npz file brings `x_test` and `y_test` when it has them.
//! * `validation_split=F` (0 < F < 1): the samples are shuffled with the `train` line's seed,
//!   then the last `ceil(F × N)` of that order are held out for validation; the rest train.
//!   Validation is what each epoch reports; the test split is what the end of `train` and
//!   `symdiff eval` report. Without a validation split, the test split is used for both (as
//!   the seed's Keras script passes `validation_data=(x_test, y_test)`).
//! * `divide=D`: every feature is divided by `D` first (`divide=255` for pixels). `data mnist`
//!   and `data idx` divide by 255.
//! * `normalize`: each feature is standardised, `(v - mean) / std`, with the mean and the
//!   standard deviation of the training samples (a constant feature gets std 1). The same
//!   statistics apply to validation, test and `predict`, and are saved with the weights.
//!
//! Invariant: this module only reads the line; it opens no file. Every path, option and
//! value is checked here with its position, so that loading reports only what the files hold.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::syntax::{Diagnostic, Item, Name, Span, Spanned, Value};

use super::{Ctx, Options};

/// Where the samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `data mnist`: MNIST from `--data DIR`, `$SYMDIFF_DATA` or the cache.
    Mnist,
    /// `data idx IMAGES LABELS`: unsigned-byte IDX files (raw or gzipped).
    Idx { train: [PathBuf; 2], test: Option<[PathBuf; 2]> },
    /// `data csv PATH`: a header row, then one sample per row.
    Csv { train: PathBuf, test: Option<PathBuf>, delimiter: u8, targets: Targets },
    /// `data npy X Y`: two NumPy arrays, samples along the first axis.
    Npy { train: [PathBuf; 2], test: Option<[PathBuf; 2]> },
    /// `data npz FILE`: `x_train`, `y_train` and, if present, `x_test`, `y_test`.
    Npz { path: PathBuf },
}

/// Which CSV columns are the targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// `label=COLUMN`: integer class labels.
    Label(String),
    /// `target=COLUMN,...`: float targets (regression).
    Values(Vec<String>),
}

/// The `data` line, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub source: Source,
    /// Held out for validation, of the (shuffled) training samples.
    pub validation_split: Option<f64>,
    /// Standardise the features with the training samples' statistics.
    pub normalize: bool,
    /// Every feature is divided by this first.
    pub divide: f64,
    /// Float targets (`target=` for CSV, the word `regression` for NumPy files).
    pub regression: bool,
    /// The line, for messages about what the files hold.
    pub span: Span,
}

impl DataSpec {
    /// The built-in MNIST.
    pub fn mnist(span: Span) -> DataSpec {
        DataSpec {
            source: Source::Mnist,
            validation_split: None,
            normalize: false,
            divide: 255.0,
            regression: false,
            span,
        }
    }

    /// The sample shape and number of classes the source fixes, when the line alone says
    /// (only the built-in MNIST: files are read later).
    pub fn known_shape(&self) -> Option<(Vec<usize>, usize)> {
        match self.source {
            Source::Mnist => Some((vec![28, 28], 10)),
            _ => None,
        }
    }

    /// Samples in the training and test splits, where the line alone says (for the memory
    /// estimate; unknown is "as many as a batch").
    pub fn sizes(&self) -> (usize, usize) {
        match self.source {
            Source::Mnist => (60_000, 10_000),
            _ => (usize::MAX, usize::MAX),
        }
    }

    /// Every path the line names, resolved against `dir` (the model file's folder).
    pub fn resolve(&self, dir: &Path) -> DataSpec {
        let r = |p: &PathBuf| if p.is_absolute() { p.clone() } else { dir.join(p) };
        let pair = |p: &[PathBuf; 2]| [r(&p[0]), r(&p[1])];
        let source = match &self.source {
            Source::Mnist => Source::Mnist,
            Source::Idx { train, test } => Source::Idx { train: pair(train), test: test.as_ref().map(pair) },
            Source::Csv { train, test, delimiter, targets } => Source::Csv {
                train: r(train),
                test: test.as_ref().map(r),
                delimiter: *delimiter,
                targets: targets.clone(),
            },
            Source::Npy { train, test } => Source::Npy { train: pair(train), test: test.as_ref().map(pair) },
            Source::Npz { path } => Source::Npz { path: r(path) },
        };
        DataSpec { source, ..self.clone() }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |p: &PathBuf| p.display().to_string();
        match &self.source {
            Source::Mnist => f.write_str("mnist"),
            Source::Idx { train, .. } => write!(f, "idx {:?} {:?}", p(&train[0]), p(&train[1])),
            Source::Csv { train, .. } => write!(f, "csv {:?}", p(train)),
            Source::Npy { train, .. } => write!(f, "npy {:?} {:?}", p(&train[0]), p(&train[1])),
            Source::Npz { path } => write!(f, "npz {:?}", p(path)),
        }
    }
}

/// The kinds of data a `data` line names.
pub const KINDS: &[&str] = &["mnist", "idx", "csv", "npy", "npz"];

/// Reads a `data` line: `items` after the word `data`, `span` the whole line.
pub(super) fn parse(cx: &Ctx<'_>, items: &[Item], span: Span) -> Result<DataSpec, Diagnostic> {
    let Some((first, items)) = items.split_first() else {
        return Err(cx
            .err(span, "`data` needs a data set or a file kind")
            .with_help("write `data mnist`, or `data csv \"train.csv\" label=COLUMN`"));
    };
    let kind = match first {
        Item::Value(Spanned { value: Value::Word(w), span }) => Name { text: w.clone(), span: *span },
        other => {
            return Err(cx
                .err(other.span(), "expected a data set or a file kind")
                .with_help(format!("one of: {}", KINDS.join(", "))));
        }
    };
    let allowed: &[&str] = match kind.text.as_str() {
        "mnist" => &["validation_split", "normalize", "divide"],
        "idx" => &["test_images", "test_labels", "validation_split", "normalize", "divide"],
        "csv" => &["label", "target", "test", "delimiter", "validation_split", "normalize", "divide"],
        "npy" => &["test_x", "test_y", "validation_split", "normalize", "divide"],
        "npz" => &["validation_split", "normalize", "divide"],
        _ => return Err(cx.unknown("data set", &kind, KINDS)),
    };
    let (o, rest) = Options::take(cx, items, allowed, "data")?;
    // Positional items: paths in quotes, and the words `normalize` and `regression`.
    let mut paths: Vec<(PathBuf, Span)> = Vec::new();
    let (mut normalize, mut regression) = (false, false);
    for item in rest {
        match item {
            Item::Value(Spanned { value: Value::Text(t), span }) => {
                if t.is_empty() {
                    return Err(cx.err(*span, "the path is empty"));
                }
                paths.push((PathBuf::from(t), *span));
            }
            Item::Value(Spanned { value: Value::Word(w), span }) if w == "normalize" || w == "regression" => {
                let flag = if w == "normalize" { &mut normalize } else { &mut regression };
                if *flag {
                    return Err(cx.err(*span, format!("`{w}` is given twice")));
                }
                if w == "regression" && !matches!(kind.text.as_str(), "npy" | "npz") {
                    let help = if kind.text == "csv" {
                        "a CSV file says it with `target=COLUMN` (float targets) instead of `label=`"
                    } else {
                        "only NumPy files (`data npy`, `data npz`) can hold float targets"
                    };
                    return Err(cx
                        .err(*span, format!("`data {}` takes no `regression`", kind.text))
                        .with_help(help));
                }
                *flag = true;
            }
            Item::Value(Spanned { value: Value::Word(w), span }) => {
                return Err(cx
                    .err(*span, format!("unexpected `{w}`"))
                    .with_help(format!("file paths are written in quotes: `\"{w}.csv\"`")));
            }
            other => return Err(cx.err(other.span(), "unexpected; write file paths in quotes")),
        }
    }
    if o.get("normalize").is_some() {
        return Err(cx.err(span, "`normalize` is a word of its own, not `normalize=...`"));
    }
    let wanted = match kind.text.as_str() {
        "mnist" => (0, ""),
        "csv" | "npz" => (1, if kind.text == "csv" { "\"train.csv\"" } else { "\"mnist.npz\"" }),
        "idx" => (2, "\"train-images-idx3-ubyte.gz\" \"train-labels-idx1-ubyte.gz\""),
        _ => (2, "\"x_train.npy\" \"y_train.npy\""),
    };
    if paths.len() != wanted.0 {
        let at = paths.get(wanted.0).map_or(span, |p| p.1);
        let message = match wanted.0 {
            0 => "`data mnist` takes no paths (the files come from --data DIR or the cache)".to_owned(),
            1 => format!("`data {}` takes one path, as in `data {} {}`", kind.text, kind.text, wanted.1),
            _ => format!("`data {}` takes two paths, as in `data {} {}`", kind.text, kind.text, wanted.1),
        };
        return Err(cx.err(at, message));
    }
    let text = |name: &str| -> Result<Option<String>, Diagnostic> {
        match o.get(name) {
            None => Ok(None),
            Some(Spanned { value: Value::Text(t), .. } | Spanned { value: Value::Word(t), .. })
                if !t.is_empty() =>
            {
                Ok(Some(t.clone()))
            }
            Some(v) => Err(cx.err(v.span, format!("`{name}=` takes a name or a text in quotes"))),
        }
    };
    let path = |name: &str| -> Result<Option<PathBuf>, Diagnostic> {
        match o.get(name) {
            None => Ok(None),
            Some(Spanned { value: Value::Text(t), .. }) if !t.is_empty() => Ok(Some(PathBuf::from(t))),
            Some(v) => {
                Err(cx.err(v.span, format!("`{name}=` takes a path in quotes, as in `{name}=\"test.csv\"`")))
            }
        }
    };
    // Two options that go together (`test_x` and `test_y`).
    let both = |a: &str, b: &str| -> Result<Option<[PathBuf; 2]>, Diagnostic> {
        match (path(a)?, path(b)?) {
            (Some(x), Some(y)) => Ok(Some([x, y])),
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(cx.err(o.get(a).map_or(span, |v| v.span), format!("`{a}=` needs `{b}=` too")))
            }
            (None, Some(_)) => {
                Err(cx.err(o.get(b).map_or(span, |v| v.span), format!("`{b}=` needs `{a}=` too")))
            }
        }
    };
    let mut p = paths.into_iter().map(|(p, _)| p);
    let mut next = || p.next().unwrap_or_default();
    let source = match kind.text.as_str() {
        "mnist" => Source::Mnist,
        "idx" => Source::Idx { train: [next(), next()], test: both("test_images", "test_labels")? },
        "npy" => Source::Npy { train: [next(), next()], test: both("test_x", "test_y")? },
        "npz" => Source::Npz { path: next() },
        _ => {
            let targets = match (text("label")?, text("target")?) {
                (Some(l), None) => Targets::Label(l),
                (None, Some(t)) => {
                    regression = true;
                    let cols: Vec<String> = t.split(',').map(|c| c.trim().to_owned()).collect();
                    if let Some(v) = o.get("target").filter(|_| cols.iter().any(String::is_empty)) {
                        return Err(cx.err(v.span, "an empty column name in `target=`"));
                    }
                    Targets::Values(cols)
                }
                (Some(_), Some(_)) => {
                    return Err(cx
                        .err(o.get("target").map_or(span, |v| v.span), "give `label=` or `target=`, not both")
                        .with_help(
                            "`label=` names integer class labels; `target=` float targets (regression)",
                        ));
                }
                (None, None) => {
                    return Err(cx
                        .err(span, "`data csv` needs the column to learn: `label=COLUMN` or `target=COLUMN`")
                        .with_help(
                            "`label=` for integer class labels, `target=` for float targets (regression)",
                        ));
                }
            };
            let delimiter = match o.get("delimiter") {
                None => b',',
                Some(v) => match &v.value {
                    Value::Word(w) if w == "tab" => b'\t',
                    Value::Text(t) if t.len() == 1 && t.is_ascii() && t != "\"" && t != "\n" => {
                        t.as_bytes()[0]
                    }
                    Value::Text(t) if t == "\\t" || t == "\t" => b'\t',
                    _ => {
                        return Err(cx
                            .err(v.span, "`delimiter=` takes one character in quotes")
                            .with_help("as in `delimiter=\";\"`, or `delimiter=tab`"));
                    }
                },
            };
            Source::Csv { train: next(), test: path("test")?, delimiter, targets }
        }
    };
    let validation_split =
        o.get("validation_split").map(|v| cx.ranged(v, "validation_split", 0.0, 1.0, true)).transpose()?;
    if let (Some(0.0), Some(v)) = (validation_split, o.get("validation_split")) {
        return Err(cx.err(v.span, "validation_split must be above 0 (leave it out for none)"));
    }
    let default_divide = if matches!(source, Source::Mnist | Source::Idx { .. }) { 255.0 } else { 1.0 };
    let divide = o.get("divide").map(|v| cx.positive(v, "divide")).transpose()?.unwrap_or(default_divide);
    Ok(DataSpec { source, validation_split, normalize, divide, regression, span })
}
