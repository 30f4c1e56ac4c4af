//! From a model's `data` line to the samples training reads: the files opened (by the readers
//! of `files.rs` and `data.rs`), checked against the model, and split.
//!
//! * [`load`]: the training, validation and test tables of a [`ModelSpec`].
//! * Checks against the model, each naming the file, and the line and column where the file
//!   has them: the sample size against the `input` line, class labels against the width of
//!   the last layer (`0..classes`), regression targets against it, float labels that are not
//!   whole numbers.
//! * The validation split: the samples are shuffled with the `train` line's seed (a generator
//!   of its own, so the training stream is untouched), and the last `ceil(F × N)` positions
//!   of that permutation are held out; both parts keep the file's order.
//!
//! Never: trains on anything it has not checked; keeps a sample in both parts of a split.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::data::{self as idx, Mnist};
use super::files::{self, CsvOptions, Features, Table, TargetSpec, Targets};
use super::trainer::{self, Dataset};
use crate::model::ModelSpec;
use crate::model::data::{self as spec_data, Source};
use crate::syntax::Diagnostic;

/// The samples of a model's `data` line.
pub struct Loaded {
    pub train: Table,
    /// Held out by `validation_split`.
    pub validation: Option<Table>,
    /// The test split the files give.
    pub test: Option<Table>,
    /// Where the samples came from, for the user: `"iris.csv"`, `"MNIST in /data"`.
    pub origin: String,
}

impl Loaded {
    /// What each epoch reports on: the validation split, else the test split.
    pub fn validation(&self) -> Option<&Table> {
        self.validation.as_ref().or(self.test.as_ref())
    }

    /// What the end of training and `eval` report on: the test split, else the validation
    /// split.
    pub fn test(&self) -> Option<&Table> {
        self.test.as_ref().or(self.validation.as_ref())
    }

    /// The name of what [`test`](Self::test) gives: `"test"`, or `"validation"` when the
    /// files have no test split.
    pub fn test_name(&self) -> &'static str {
        if self.test.is_some() { "test" } else { "validation" }
    }
}

/// What went wrong, in words that name the file (and the model file's line, rendered).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Idx(#[from] idx::DataError),
    #[error(transparent)]
    File(#[from] files::FileError),
    /// A check against the model: a rendered diagnostic or a sentence.
    #[error("{0}")]
    Model(String),
}

/// A table as the trainer reads it, with the model's sample shape (a CSV row of 784 values is
/// a 28×28 sample when the `input` line says so; [`load`] checked that the sizes agree).
pub fn dataset<'a>(table: &'a Table, spec: &ModelSpec) -> Dataset<'a> {
    Dataset {
        features: match &table.features {
            Features::U8(v) => trainer::Features::U8(v),
            Features::F32(v) => trainer::Features::F32(v),
        },
        targets: match &table.targets {
            Targets::Classes(l) => trainer::Targets::Classes(l),
            Targets::Values { width, data } => trainer::Targets::Values { width: *width, data },
        },
        sample: spec.input.clone(),
    }
}

/// MNIST's two splits as tables.
pub fn mnist_tables(m: Mnist) -> (Table, Table) {
    let sample = vec![m.rows, m.cols];
    let table = |images: Vec<u8>, labels: Vec<u8>| Table {
        sample: sample.clone(),
        features: Features::U8(images),
        feature_names: Vec::new(),
        targets: Targets::Classes(labels.into_iter().map(u32::from).collect()),
        lines: Vec::new(),
        target_column: 0,
    };
    (table(m.train_images, m.train_labels), table(m.test_images, m.test_labels))
}

/// Reads the data `spec` names (paths relative to `model_dir`; `data mnist` from `mnist_dir`,
/// `$SYMDIFF_DATA` or the cache, fetched if need be), checks it against the model, and
/// splits off the validation samples. `log` hears about fetching.
pub fn load(
    spec: &ModelSpec,
    model_dir: &Path,
    mnist_dir: Option<&Path>,
    max_bytes: u64,
    log: &mut dyn FnMut(&str),
) -> Result<Loaded, SourceError> {
    let data = spec.data.resolve(model_dir);
    if let (Some(dir), false) = (mnist_dir, data.source == Source::Mnist) {
        return Err(SourceError::Model(
            render(
                spec,
                data.span,
                format!(
                    "--data {} names MNIST's folder, but this `data` line names its own files",
                    dir.display()
                ),
            ) + "help: leave out --data (the line's paths are relative to the model file)\n",
        ));
    }
    let (train, test, origin) = match &data.source {
        Source::Mnist => {
            let dir = idx::resolve_mnist(mnist_dir, log)?;
            let (train, test) = mnist_tables(idx::load_mnist(&dir)?);
            (train, Some(test), format!("MNIST in {}", dir.display()))
        }
        Source::Idx { train, test } => {
            let read = |p: &[std::path::PathBuf; 2]| -> Result<Table, SourceError> {
                let images = idx::read_idx(&p[0])?;
                let labels = idx::read_idx(&p[1])?;
                idx_table(images, labels, &p[0], &p[1])
            };
            let t = test.as_ref().map(read).transpose()?;
            (read(train)?, t, train[0].display().to_string())
        }
        Source::Csv { train, test, delimiter, targets } => {
            let opts = CsvOptions { delimiter: *delimiter, targets: target_spec(targets), max_bytes };
            let t = test.as_ref().map(|p| files::read_csv(p, &opts)).transpose()?;
            (files::read_csv(train, &opts)?, t, train.display().to_string())
        }
        Source::Npy { train, test } => {
            let t = test.as_ref().map(|p| files::read_npy_pair(&p[0], &p[1], max_bytes)).transpose()?;
            (files::read_npy_pair(&train[0], &train[1], max_bytes)?, t, train[0].display().to_string())
        }
        Source::Npz { path } => {
            let (train, test) = files::read_npz(path, max_bytes)?;
            (train, test, path.display().to_string())
        }
    };
    // The test split's file, for messages (its labels' file where there are two).
    let test_origin = match &data.source {
        Source::Csv { test: Some(t), .. } => t.display().to_string(),
        Source::Npy { test: Some(t), .. } | Source::Idx { test: Some(t), .. } => t[1].display().to_string(),
        _ => origin.clone(),
    };
    let train = check(spec, train, &origin)?;
    let test = test.map(|t| check(spec, t, &test_origin)).transpose()?;
    let (train, validation) = match data.validation_split {
        None => (train, None),
        Some(fraction) => {
            let (t, v) = split(train, fraction, spec.train.seed);
            if t.is_empty() || v.is_empty() {
                return Err(SourceError::Model(render(
                    spec,
                    data.span,
                    format!(
                        "validation_split={fraction} of {} samples leaves {} to train on and {} to validate",
                        t.len() + v.len(),
                        t.len(),
                        v.len()
                    ),
                )));
            }
            (t, Some(v))
        }
    };
    if train.is_empty() {
        return Err(SourceError::Model(format!("error: {origin}: no samples to train on\n")));
    }
    if validation.is_none() && test.is_none() {
        return Err(SourceError::Model(
            render(spec, data.span, "the data has no test split to validate on".to_owned())
                + "help: add `validation_split=0.1`, or a test file (`test=\"test.csv\"` for CSV)\n",
        ));
    }
    Ok(Loaded { train, validation, test, origin })
}

/// The columns a CSV `data` line learns, as the reader takes them.
pub fn target_spec(targets: &spec_data::Targets) -> TargetSpec<'_> {
    match targets {
        spec_data::Targets::Label(l) => TargetSpec::Label(l),
        spec_data::Targets::Values(v) => TargetSpec::Target(v),
    }
}

/// A diagnostic at `span` of the model file, rendered.
fn render(spec: &ModelSpec, span: crate::syntax::Span, message: String) -> String {
    Diagnostic::new(&spec.source, span, message).with_origin(&spec.origin).render()
}

/// An IDX pair (images, labels) as a table.
fn idx_table(images: idx::Idx, labels: idx::Idx, ip: &Path, lp: &Path) -> Result<Table, SourceError> {
    if labels.dims.len() != 1 || images.dims.is_empty() || images.dims[0] != labels.dims[0] {
        return Err(SourceError::Model(format!(
            "error: {} holds {:?} and {} holds {:?}: expected N samples of images and N labels\n",
            ip.display(),
            images.dims,
            lp.display(),
            labels.dims
        )));
    }
    Ok(Table {
        sample: images.dims[1..].to_vec(),
        features: Features::U8(images.data),
        feature_names: Vec::new(),
        targets: Targets::Classes(labels.data.into_iter().map(u32::from).collect()),
        lines: Vec::new(),
        target_column: 0,
    })
}

/// Where sample `i` of a table is, for messages: `file:line:col` for CSV, `sample i` else.
fn place(table: &Table, origin: &str, i: usize, column: usize) -> String {
    match table.lines.get(i) {
        Some(line) => format!("{origin}:{line}:{column}"),
        None => format!("{origin}, sample {i}"),
    }
}

/// `table` checked against the model: sample size, and targets that fit its output. Float
/// labels with whole values become classes; integer labels of a regression, targets.
fn check(spec: &ModelSpec, mut table: Table, origin: &str) -> Result<Table, SourceError> {
    let want: usize = spec.input.iter().product();
    let have = table.sample_size();
    if want != have {
        return Err(SourceError::Model(render(
            spec,
            spec.input_span,
            format!(
                "{origin} has {have} feature values per sample ({}), but the model's input takes {want}",
                crate::graph::show_shape(&table.sample)
            ),
        )));
    }
    let k = spec.classes;
    let col = table.target_column;
    if spec.regression {
        if let Targets::Classes(labels) = &table.targets {
            let data = labels.iter().map(|&l| l as f32).collect();
            table.targets = Targets::Values { width: 1, data };
        }
        if let Targets::Values { width, .. } = table.targets
            && width != k
        {
            return Err(SourceError::Model(render(
                spec,
                spec.output_span,
                format!("{origin} has {width} target values per sample, but the model ends with {k}"),
            )));
        }
        return Ok(table);
    }
    if let Targets::Values { width, data } = &table.targets {
        if *width != 1 {
            return Err(SourceError::Model(format!(
                "error: {origin}: the labels are rows of {width} floats; class labels are one whole number \
                 per sample\nhelp: for float targets, add `regression` to the `data` line (NumPy) or use `target=` (CSV)\n"
            )));
        }
        let mut labels = Vec::with_capacity(data.len());
        for (i, &v) in data.iter().enumerate() {
            if v.fract() != 0.0 || v < 0.0 || v >= u32::MAX as f32 {
                return Err(SourceError::Model(format!(
                    "error: {}: the label {v} is not a class (a whole number from 0)\nhelp: for float targets, \
                     add `regression` to the `data` line\n",
                    place(&table, origin, i, col)
                )));
            }
            labels.push(v as u32);
        }
        table.targets = Targets::Classes(labels);
    }
    if let Targets::Classes(labels) = &table.targets
        && let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= k)
    {
        let top = labels.iter().copied().max().unwrap_or(l);
        return Err(SourceError::Model(
            format!(
                "error: {}: label {l} is out of range: the model has {k} classes (0 to {})\n",
                place(&table, origin, i, col),
                k - 1
            ) + &render(
                spec,
                spec.output_span,
                format!(
                    "the last layer has {k} outputs; the labels go up to {top}, so it needs {}",
                    top as usize + 1
                ),
            ),
        ));
    }
    Ok(table)
}

/// The samples of `table` at `rows`, in that order.
fn select(table: &Table, rows: &[usize]) -> Table {
    let s = table.sample_size();
    let features = match &table.features {
        Features::U8(v) => {
            Features::U8(rows.iter().flat_map(|&i| v[i * s..(i + 1) * s].iter().copied()).collect())
        }
        Features::F32(v) => {
            Features::F32(rows.iter().flat_map(|&i| v[i * s..(i + 1) * s].iter().copied()).collect())
        }
    };
    let targets = match &table.targets {
        Targets::Classes(l) => Targets::Classes(rows.iter().map(|&i| l[i]).collect()),
        Targets::Values { width, data } => Targets::Values {
            width: *width,
            data: rows.iter().flat_map(|&i| data[i * width..(i + 1) * width].iter().copied()).collect(),
        },
    };
    Table {
        sample: table.sample.clone(),
        features,
        feature_names: table.feature_names.clone(),
        targets,
        lines: if table.lines.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&i| table.lines[i]).collect()
        },
        target_column: table.target_column,
    }
}

/// Which samples of `n` a validation split of `fraction` holds out, with `seed`: the last
/// `ceil(fraction × n)` positions of a Fisher–Yates permutation, sorted. The rest train.
pub fn validation_rows(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1); // not the training stream
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let held = ((fraction * n as f64).ceil() as usize).min(n);
    let (train, validation) = order.split_at_mut(n - held);
    train.sort_unstable();
    validation.sort_unstable();
    (train.to_vec(), validation.to_vec())
}

fn split(table: Table, fraction: f64, seed: u64) -> (Table, Table) {
    let (t, v) = validation_rows(table.len(), fraction, seed);
    (select(&table, &t), select(&table, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(n: usize, fraction: f64, held: usize) {
        let (t, v) = validation_rows(n, fraction, 1);
        assert_eq!(v.len(), held, "{n} × {fraction}");
        assert_eq!(t.len() + v.len(), n);
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every sample in exactly one part");
        assert!(t.windows(2).all(|w| w[0] < w[1]) && v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(validation_rows(n, fraction, 1), (t, v.clone()), "the same seed, the same split");
        if n > 20 {
            assert_ne!(validation_rows(n, fraction, 2).1, v, "another seed, another split");
            assert_ne!(v, ((n - held)..n).collect::<Vec<_>>(), "shuffled, not the file's last rows");
        }
    }

    #[test]
    fn validation_split_takes_the_ceiling_of_the_fraction_of_a_shuffled_order() {
        check_split(10, 0.1, 1);
        check_split(10, 0.15, 2);
        check_split(100, 0.2, 20);
        check_split(150, 0.2, 30);
        check_split(1, 0.5, 1);
        check_split(60_000, 0.1, 6_000);
    }
}
