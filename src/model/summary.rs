//! `symdiff summary`: a model's layers with their output shapes and parameter counts, and the
//! totals, as Keras' `model.summary()` prints them; `train` prints the same table first.
//!
//! Owns [`Summary`]. The shapes and counts are read off the inference graph that
//! [`build`](super::build::build) makes at batch 1 (the graph training uses, without dropout
//! masks), so the table cannot disagree with what is trained: a layer's output shape is its
//! node's shape less the batch axis, its parameters are the parameters named after it
//! (`dense_1.kernel`, `dense_1.bias`), and a batch normalisation's moving mean and variance
//! are its non-trainable parameters, as Keras counts them. It never trains or reads data.

use std::fmt;

use super::build::build;
use super::{Layer, ModelSpec};
use crate::syntax::Diagnostic;

/// One layer of a [`Summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// `dense_1`, as the weight files name the layer's parameters.
    pub name: String,
    /// Keras' class name: `Dense`, `Flatten`, `Dropout`, `BatchNormalization`, `Activation`.
    pub kind: &'static str,
    /// The output shape of one sample (the batch axis left out).
    pub shape: Vec<usize>,
    /// Trainable and non-trainable parameters of the layer together.
    pub params: usize,
}

/// A model's layers and parameter totals.
///
/// ```
/// let file = "data mnist\ninput 28x28\nflatten\ndense 10\nloss softmax_cross_entropy\n\
///             optimizer adam lr=0.001\ntrain epochs=1\n";
/// let spec = symdiff::model::ModelSpec::parse(file, "m.model")?;
/// let s = symdiff::model::summary::summary(&spec)?;
/// assert_eq!((s.rows[1].shape.clone(), s.trainable), (vec![10], 7850)); // 784*10 + 10
/// assert!(s.to_string().contains("dense_1 (Dense)"));
/// # Ok::<(), symdiff::Diagnostic>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The model file's name.
    pub origin: String,
    pub rows: Vec<SummaryRow>,
    /// Parameters the optimizer updates.
    pub trainable: usize,
    /// Parameters training keeps but does not differentiate (moving statistics).
    pub non_trainable: usize,
}

/// The summary of `spec` (an error only where the model cannot be built at all).
pub fn summary(spec: &ModelSpec) -> Result<Summary, Diagnostic> {
    let built = build(spec, 1, false)?;
    let g = &built.graph;
    let size = |shape: &[usize]| shape.iter().product::<usize>();
    let mut rows = Vec::with_capacity(spec.layers.len());
    for (layer, (name, id)) in spec.layers.iter().zip(&built.layer_outputs) {
        let prefix = format!("{name}.");
        let trainable: usize =
            built.params.iter().filter(|p| p.name.starts_with(&prefix)).map(|p| size(&p.shape)).sum();
        let moving: usize = built.batchnorms.iter().filter(|b| &b.name == name).map(|b| 2 * b.width).sum();
        let kind = match layer {
            Layer::Flatten => "Flatten",
            Layer::Dense { .. } => "Dense",
            Layer::Activation(_) => "Activation",
            Layer::Dropout { .. } => "Dropout",
            Layer::BatchNorm { .. } => "BatchNormalization",
        };
        rows.push(SummaryRow {
            name: name.clone(),
            kind,
            shape: g.shape(*id)[1..].to_vec(),
            params: trainable + moving,
        });
    }
    let trainable = built.params.iter().map(|p| size(&p.shape)).sum();
    let non_trainable = built.batchnorms.iter().map(|b| 2 * b.width).sum();
    Ok(Summary { origin: spec.origin.clone(), rows, trainable, non_trainable })
}

/// `101770` as `101,770`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` parameters of 4 bytes (the trainer's `f32`), as Keras writes the size: `397.54 KB`.
fn bytes(n: usize) -> String {
    let b = 4.0 * n as f64;
    match b {
        b if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.2} GB", b / (1024.0 * 1024.0 * 1024.0)),
        b if b >= 1024.0 * 1024.0 => format!("{:.2} MB", b / (1024.0 * 1024.0)),
        b if b >= 1024.0 => format!("{:.2} KB", b / 1024.0),
        b => format!("{b:.2} B"),
    }
}

impl fmt::Display for Summary {
    /// The table: a row per layer (`dense_1 (Dense)  (None, 128)  100,480`), then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<[String; 3]> = self
            .rows
            .iter()
            .map(|r| {
                let dims: Vec<String> = r.shape.iter().map(|d| d.to_string()).collect();
                [
                    format!("{} ({})", r.name, r.kind),
                    format!("(None, {})", dims.join(", ")),
                    grouped(r.params),
                ]
            })
            .collect();
        let head = ["Layer (type)", "Output Shape", "Param #"];
        let width =
            |k: usize| cells.iter().map(|c| c[k].chars().count()).chain([head[k].len()]).max().unwrap_or(0);
        let (w0, w1, w2) = (width(0), width(1), width(2));
        let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + 4);
        writeln!(f, "Model: \"{}\"", self.origin)?;
        writeln!(f, "{}", rule('━'))?;
        writeln!(f, "{:w0$}  {:w1$}  {:>w2$}", head[0], head[1], head[2])?;
        writeln!(f, "{}", rule('━'))?;
        for [a, b, c] in &cells {
            writeln!(f, "{a:w0$}  {b:w1$}  {c:>w2$}")?;
        }
        writeln!(f, "{}", rule('━'))?;
        let total = self.trainable + self.non_trainable;
        writeln!(f, " Total params: {} ({})", grouped(total), bytes(total))?;
        writeln!(f, " Trainable params: {} ({})", grouped(self.trainable), bytes(self.trainable))?;
        write!(f, " Non-trainable params: {} ({})", grouped(self.non_trainable), bytes(self.non_trainable))
    }
}
