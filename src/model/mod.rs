//! Stage 5: the model language. A model file says what to train and how:
//!
//! ```text
//! data      mnist                 # the data set
//! input     28x28                 # one sample's shape
//! flatten
//! dense     128 relu              # units, activation, options (l2=0.001)
//! dropout   0.2
//! dense     10
//! loss      softmax_cross_entropy
//! optimizer adam lr=0.001
//! train     epochs=5 batch=32 seed=1
//! ```
//!
//! A line `let name = value` names a number for the whole file (its value may use the lets
//! above it): formulas read it as that number, and a layer or setting line that gives the name
//! as a value (`dense units`) gets the number.
//!
//! This module owns the meaning of every line ([`ModelSpec::parse`], with positioned errors
//! and "did you mean" for misspelt names), what training the file asks of memory
//! (`memory.rs`, checked at parse time), and the lowering of a spec to a graph (`build.rs`):
//! layers, losses and user-defined activations all become ordinary nodes of the one
//! expression graph, so reverse mode differentiates them like any formula. What a model is,
//! read back from that graph: a table of layers (`summary.rs`) or its equations (`show.rs`).
//!
//! **Architecture Invariant:** every option the file can say is validated here, with the
//! line it came from; nothing downstream re-parses text or falls back to a silent default.

pub mod build;
pub mod callbacks;
pub mod data;
pub mod memory;
pub mod schedule;
pub mod show;
pub mod summary;
#[cfg(test)]
mod tests;

use hashbrown::HashMap;

use crate::graph::lower::suggest;
use crate::graph::{FnDef, Graph, Scope};
use crate::syntax::{self, Ast, Diagnostic, Item, ModelLine, Name, Span, Spanned, Value};

/// An elementwise activation.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `alpha*x` otherwise.
    LeakyRelu(f64),
    /// `x` for `x > 0`, `alpha*(exp(x) - 1)` otherwise.
    Elu(f64),
    /// The logistic function.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `log(1 + exp(x))`.
    Softplus,
    /// A formula defined in the file with `activation name(x) = ...`.
    Custom(String),
}

impl Activation {
    /// How the activation is written in a model file.
    pub fn name(&self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu(a) => format!("leaky_relu({a})"),
            Activation::Elu(a) => format!("elu({a})"),
            Activation::Sigmoid => "sigmoid".into(),
            Activation::Tanh => "tanh".into(),
            Activation::Softplus => "softplus".into(),
            Activation::Custom(n) => n.clone(),
        }
    }
}

/// A layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Merge all axes but the batch axis.
    Flatten,
    /// `x @ kernel + bias`, then the activation; `l2` adds `l2 * sum(kernel^2)` to the loss.
    Dense { units: usize, activation: Option<Activation>, l2: f64 },
    /// An activation on its own.
    Activation(Activation),
    /// Zero each unit with probability `rate` in training (scaling the rest by `1/(1-rate)`).
    Dropout { rate: f64 },
    /// Batch normalisation over the batch axis (Keras' defaults: momentum 0.99, epsilon 1e-3).
    BatchNorm { momentum: f64, epsilon: f64 },
}

/// The loss.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// Mean over the batch of `-log softmax(logits)[label]` (integer labels, logits in).
    SoftmaxCrossEntropy,
    /// Mean over the batch and the classes of `(logits - onehot(label))^2`.
    Mse,
    /// A formula over `logits`, `labels` and the parameters (`loss = ...`).
    Formula(syntax::AstId),
}

/// The optimizer, with Keras' defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent, with optional (heavy-ball) momentum.
    Sgd { lr: f64, momentum: f64, nesterov: bool },
    /// Adam (Kingma and Ba), in Keras' form.
    Adam { lr: f64, beta1: f64, beta2: f64, epsilon: f64 },
}

/// The `train` line.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
}

/// A parsed, validated model file.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The file's name, for messages.
    pub origin: String,
    /// The file's text (formulas in it are lowered from here).
    pub source: String,
    /// Where the samples come from (`data mnist`, `data csv "train.csv" label=y`, ...).
    pub data: data::DataSpec,
    /// One sample's shape.
    pub input: Vec<usize>,
    /// Number of classes (classification), or of target values per sample (regression): the
    /// width of the model's output.
    pub classes: usize,
    /// Regression (float targets, `loss mse`, reported as loss and mean absolute error)
    /// rather than classification.
    pub regression: bool,
    /// Where the `input` line and the last layer are, for messages about what the data
    /// files hold.
    pub input_span: Span,
    pub output_span: Span,
    pub layers: Vec<Layer>,
    pub loss: Loss,
    /// Extra loss terms written as formulas (`regularizer = ...`).
    pub regularizers: Vec<syntax::AstId>,
    pub optimizer: Optimizer,
    pub train: TrainSettings,
    /// How the learning rate changes with the step or the epoch (`schedule ...`).
    pub schedule: crate::model::schedule::Schedule,
    /// `reduce_lr_on_plateau ...`, in its initial state.
    pub plateau: Option<crate::model::schedule::Plateau>,
    /// `early_stopping ...`, in its initial state.
    pub early_stopping: Option<crate::model::schedule::EarlyStopping>,
    /// User-defined activations: the body over one scalar parameter, in `activations`.
    pub activation_defs: HashMap<String, FnDef>,
    /// The graph holding the activation definitions.
    pub activations: Graph,
    /// The syntax tree of every formula in the file.
    pub ast: Ast,
    /// `let` names with their values and where each was given, in file order.
    pub lets: Vec<Let>,
    /// Where the batch size is set, for messages about memory: the `batch=` value, else the
    /// `train` line, else (the default batch) the layer with the most values per sample.
    pub batch_span: Span,
}

const LAYERS: &[&str] =
    &["flatten", "dense", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "dropout", "batchnorm"];
const SETTINGS: &[&str] = &[
    "data",
    "input",
    "loss",
    "optimizer",
    "train",
    "activation",
    "regularizer",
    "schedule",
    "reduce_lr_on_plateau",
    "early_stopping",
];
const BUILTIN_ACTIVATIONS: &[&str] = &["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"];
const OPTIMIZERS: &[&str] = &["adam", "sgd"];
const LOSSES: &[&str] = &["softmax_cross_entropy", "mse"];

/// Most memory a model may ask for, in bytes: its parameters and optimizer state (checked
/// first, from the layers alone), and everything training at its batch size holds
/// ([`memory`]). A model that needs more is refused, before anything is allocated, with the
/// size it would need.
pub fn memory_budget() -> u64 {
    // Half of the machine's available memory, when the system says; else 8 GiB.
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    avail.map_or(8 << 30, |b| b / 2)
}

struct Ctx<'a> {
    src: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.src, span, message).with_origin(self.origin)
    }

    fn unknown(&self, what: &str, name: &Name, candidates: &[&str]) -> Diagnostic {
        let mut d = self.err(name.span, format!("unknown {what} `{}`", name.text));
        if let Some(s) = suggest(&name.text, candidates.iter().map(|c| c.to_string())) {
            d = d.with_help(format!("did you mean `{s}`?"));
        } else {
            d = d.with_help(format!("expected one of: {}", candidates.join(", ")));
        }
        d
    }

    fn number(&self, v: &Spanned<Value>, what: &str) -> Result<f64, Diagnostic> {
        match &v.value {
            Value::Num(x) => Ok(*x),
            _ => Err(self.err(v.span, format!("{what} must be a number"))),
        }
    }

    /// A number in `lo..=hi` (or `lo..hi` when `open_hi`).
    fn ranged(
        &self,
        v: &Spanned<Value>,
        what: &str,
        lo: f64,
        hi: f64,
        open_hi: bool,
    ) -> Result<f64, Diagnostic> {
        let x = self.number(v, what)?;
        let ok = x >= lo && if open_hi { x < hi } else { x <= hi };
        if ok {
            Ok(x)
        } else {
            let bracket = if open_hi { ")" } else { "]" };
            Err(self.err(v.span, format!("{what} must be in [{lo}, {hi}{bracket}, not {x}")))
        }
    }

    fn positive(&self, v: &Spanned<Value>, what: &str) -> Result<f64, Diagnostic> {
        let x = self.number(v, what)?;
        if x > 0.0 && x.is_finite() {
            Ok(x)
        } else {
            Err(self.err(v.span, format!("{what} must be positive, not {x}")))
        }
    }

    fn count(&self, v: &Spanned<Value>, what: &str, max: u64) -> Result<usize, Diagnostic> {
        let x = self.number(v, what)?;
        if x.fract() == 0.0 && x >= 1.0 && x <= max as f64 {
            Ok(x as usize)
        } else {
            Err(self.err(v.span, format!("{what} must be a whole number from 1 to {max}, not {x}")))
        }
    }
}

/// Options of one line: `name=value` pairs, each allowed once, each checked against the
/// line's list of known options.
struct Options<'a> {
    found: Vec<(&'a Name, &'a Spanned<Value>)>,
}

impl<'a> Options<'a> {
    fn take(
        cx: &Ctx<'_>,
        items: &'a [Item],
        allowed: &[&str],
        line: &str,
    ) -> Result<(Options<'a>, Vec<&'a Item>), Diagnostic> {
        let mut found: Vec<(&Name, &Spanned<Value>)> = Vec::new();
        let mut rest = Vec::new();
        for item in items {
            match item {
                Item::Option { name, value } => {
                    if !allowed.contains(&name.text.as_str()) {
                        let mut d = cx.err(name.span, format!("`{line}` has no option `{}`", name.text));
                        d = match suggest(&name.text, allowed.iter().map(|a| a.to_string())) {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None if allowed.is_empty() => d.with_help(format!("`{line}` takes no options")),
                            None => d.with_help(format!("options of `{line}`: {}", allowed.join(", "))),
                        };
                        return Err(d);
                    }
                    if found.iter().any(|(n, _)| n.text == name.text) {
                        return Err(cx.err(name.span, format!("option `{}` is given twice", name.text)));
                    }
                    found.push((name, value));
                }
                other => rest.push(other),
            }
        }
        Ok((Options { found }, rest))
    }

    fn get(&self, name: &str) -> Option<&'a Spanned<Value>> {
        self.found.iter().find(|(n, _)| n.text == name).map(|(_, v)| *v)
    }
}

/// A file-level setting seen once, with where.
struct Once<T> {
    value: Option<(T, Span)>,
}

impl<T> Once<T> {
    fn set(&mut self, cx: &Ctx<'_>, what: &str, value: T, span: Span) -> Result<(), Diagnostic> {
        if let Some((_, first)) = &self.value {
            let (line, _) = crate::syntax::line_col(cx.src, first.start);
            return Err(cx.err(span, format!("`{what}` is given twice (first on line {line})")));
        }
        self.value = Some((value, span));
        Ok(())
    }
}

impl ModelSpec {
    /// Parses and validates a model file. `origin` names it in messages.
    pub fn parse(src: &str, origin: &str) -> Result<ModelSpec, Diagnostic> {
        let cx = Ctx { src, origin };
        let (ast, lines) = syntax::parse_model(src).map_err(|d| d.with_origin(origin))?;
        // `let` lines first: their names hold for the whole file, in formulas and as the
        // values of layer and setting lines.
        let lets = read_lets(&cx, &ast, &lines)?;
        let lines: Vec<ModelLine> = lines.into_iter().map(|l| with_lets(l, &lets)).collect();
        let let_value = |n: &str| find_let(&lets, n).map(|l| l.value);
        let mut data = Once { value: None };
        let mut input = Once { value: None };
        let mut loss = Once { value: None };
        let mut optimizer = Once { value: None };
        let mut train = Once { value: None };
        let mut schedule = Once { value: None };
        let mut plateau = Once { value: None };
        let mut early_stopping = Once { value: None };
        let mut layers: Vec<(Layer, Span)> = Vec::new();
        let mut regularizers = Vec::new();
        let mut activations = Graph::new();
        let mut activation_defs: HashMap<String, FnDef> = HashMap::new();
        let mut activation_spans: HashMap<String, Span> = HashMap::new();
        let mut batch_span: Option<Span> = None;
        for line in &lines {
            match line {
                ModelLine::Define { head, name, params, body, span } => {
                    if head.text != "activation" {
                        return Err(cx
                            .err(
                                head.span,
                                format!("only activations are defined with `(x) = ...`, not `{}`", head.text),
                            )
                            .with_help("write `activation swish(x) = x * sigmoid(x)`"));
                    }
                    if BUILTIN_ACTIVATIONS.contains(&name.text.as_str())
                        || LAYERS.contains(&name.text.as_str())
                    {
                        return Err(
                            cx.err(name.span, format!("`{}` is built in and cannot be redefined", name.text))
                        );
                    }
                    if let Some(l) = find_let(&lets, &name.text) {
                        let (line, _) = crate::syntax::line_col(src, l.span.start);
                        return Err(cx.err(
                            name.span,
                            format!("`{}` is already a `let` name (line {line})", name.text),
                        ));
                    }
                    if activation_defs.contains_key(&name.text) {
                        return Err(cx.err(name.span, format!("activation `{}` is defined twice", name.text)));
                    }
                    let param = match params.as_slice() {
                        [Spanned { value: Value::Word(p), .. }] => p.clone(),
                        _ => {
                            return Err(cx
                                .err(*span, "an activation takes exactly one parameter")
                                .with_help(format!("write `activation {}(x) = ...`", name.text)));
                        }
                    };
                    if let Some(l) = find_let(&lets, &param) {
                        let (line, _) = crate::syntax::line_col(src, l.span.start);
                        return Err(cx.err(
                            params[0].span,
                            format!("the parameter `{param}` is also a `let` name (line {line})"),
                        ));
                    }
                    let functions = HashMap::new();
                    let scope = Scope::new(src, &ast, &functions, crate::expr::derive);
                    let (tree, root) = own_tree(&ast, *body);
                    let scope = Scope { ast: &tree, lets: &let_value, inline_lets: true, ..scope };
                    let id = scope.lower(&mut activations, root).map_err(|d| d.with_origin(origin))?;
                    let vars = crate::expr::variables(&activations, &[id]);
                    if let Some(v) = vars.iter().find(|v| **v != param) {
                        return Err(cx.err(
                            ast.span(*body),
                            format!("the activation uses `{v}`, which is not its parameter `{param}`"),
                        ));
                    }
                    elementwise(&cx, &activations, id, ast.span(*body))?;
                    activation_defs.insert(name.text.clone(), FnDef { params: vec![param], body: id });
                    activation_spans.insert(name.text.clone(), name.span);
                }
                ModelLine::Let { .. } => {} // read above
                ModelLine::Formula { head, body, span } => match head.text.as_str() {
                    "regularizer" => regularizers.push(*body),
                    "loss" => loss.set(&cx, "loss", Loss::Formula(*body), *span)?,
                    _ => {
                        return Err(cx
                            .err(head.span, format!("`{} = ...` is not a model line", head.text))
                            .with_help(
                                "formulas are given as `regularizer = ...` or `activation name(x) = ...`",
                            ));
                    }
                },
                ModelLine::Statement { head, args, items, span } => {
                    let word = head.text.as_str();
                    if !args.is_empty() && !matches!(word, "leaky_relu" | "elu") {
                        return Err(cx.err(*span, format!("`{word}` takes no arguments in parentheses")));
                    }
                    match word {
                        "data" => data.set(&cx, "data", data::parse(&cx, items, *span)?, *span)?,
                        "schedule" => {
                            schedule.set(&cx, word, callbacks::schedule(&cx, items, *span)?, *span)?
                        }
                        "reduce_lr_on_plateau" => {
                            plateau.set(&cx, word, callbacks::plateau(&cx, items, *span)?, *span)?
                        }
                        "early_stopping" => early_stopping.set(
                            &cx,
                            word,
                            callbacks::early_stopping(&cx, items, *span)?,
                            *span,
                        )?,
                        "input" => {
                            let (_, rest) = Options::take(&cx, items, &[], word)?;
                            let shape = match rest.as_slice() {
                                [Item::Value(Spanned { value: Value::Dims(d), .. })] => d.clone(),
                                [Item::Value(Spanned { value: Value::Num(n), span: s })] => {
                                    vec![cx.count(
                                        &Spanned { value: Value::Num(*n), span: *s },
                                        "the input size",
                                        1 << 24,
                                    )?]
                                }
                                _ => return Err(cx.err(*span, "`input` takes a shape, as in `input 28x28`")),
                            };
                            if shape.contains(&0) {
                                return Err(cx.err(*span, "input sizes must be positive"));
                            }
                            input.set(&cx, "input", shape, *span)?;
                        }
                        "loss" => {
                            let (_, rest) = Options::take(&cx, items, &[], word)?;
                            let l = match rest.as_slice() {
                                [Item::Value(Spanned { value: Value::Word(w), span: s })] => match w.as_str()
                                {
                                    "softmax_cross_entropy" | "sparse_categorical_crossentropy" => {
                                        Loss::SoftmaxCrossEntropy
                                    }
                                    "mse" => Loss::Mse,
                                    _ => {
                                        let n = Name { text: w.clone(), span: *s };
                                        return Err(cx.unknown("loss", &n, LOSSES));
                                    }
                                },
                                _ => {
                                    return Err(cx.err(
                                        *span,
                                        "`loss` takes one name, as in `loss softmax_cross_entropy`",
                                    ));
                                }
                            };
                            loss.set(&cx, "loss", l, *span)?;
                        }
                        "optimizer" => {
                            let (kind, items) = match items.split_first() {
                                Some((Item::Value(Spanned { value: Value::Word(w), span: s }), rest)) => {
                                    (Name { text: w.clone(), span: *s }, rest)
                                }
                                _ => {
                                    return Err(cx.err(
                                        *span,
                                        "`optimizer` takes a name first, as in `optimizer adam lr=0.001`",
                                    ));
                                }
                            };
                            let opt = match kind.text.as_str() {
                                "adam" => {
                                    let (o, rest) = Options::take(
                                        &cx,
                                        items,
                                        &["lr", "beta1", "beta2", "epsilon"],
                                        "optimizer adam",
                                    )?;
                                    if let Some(extra) = rest.first() {
                                        return Err(cx.err(
                                            extra.span(),
                                            "unexpected; options are written `name=value`",
                                        ));
                                    }
                                    Optimizer::Adam {
                                        lr: o
                                            .get("lr")
                                            .map(|v| cx.positive(v, "lr"))
                                            .transpose()?
                                            .unwrap_or(0.001),
                                        beta1: o
                                            .get("beta1")
                                            .map(|v| cx.ranged(v, "beta1", 0.0, 1.0, true))
                                            .transpose()?
                                            .unwrap_or(0.9),
                                        beta2: o
                                            .get("beta2")
                                            .map(|v| cx.ranged(v, "beta2", 0.0, 1.0, true))
                                            .transpose()?
                                            .unwrap_or(0.999),
                                        epsilon: o
                                            .get("epsilon")
                                            .map(|v| cx.positive(v, "epsilon"))
                                            .transpose()?
                                            .unwrap_or(1e-7),
                                    }
                                }
                                "sgd" => {
                                    let (o, rest) = Options::take(
                                        &cx,
                                        items,
                                        &["lr", "momentum", "nesterov"],
                                        "optimizer sgd",
                                    )?;
                                    if let Some(extra) = rest.first() {
                                        return Err(cx.err(
                                            extra.span(),
                                            "unexpected; options are written `name=value`",
                                        ));
                                    }
                                    let nesterov = match o.get("nesterov") {
                                        None => false,
                                        Some(Spanned { value: Value::Word(w), span: s }) => {
                                            match w.as_str() {
                                                "true" => true,
                                                "false" => false,
                                                _ => return Err(cx.err(*s, "nesterov is `true` or `false`")),
                                            }
                                        }
                                        Some(v) => {
                                            return Err(cx.err(v.span, "nesterov is `true` or `false`"));
                                        }
                                    };
                                    Optimizer::Sgd {
                                        lr: o
                                            .get("lr")
                                            .map(|v| cx.positive(v, "lr"))
                                            .transpose()?
                                            .unwrap_or(0.01),
                                        momentum: o
                                            .get("momentum")
                                            .map(|v| cx.ranged(v, "momentum", 0.0, 1.0, true))
                                            .transpose()?
                                            .unwrap_or(0.0),
                                        nesterov,
                                    }
                                }
                                _ => return Err(cx.unknown("optimizer", &kind, OPTIMIZERS)),
                            };
                            optimizer.set(&cx, "optimizer", opt, *span)?;
                        }
                        "train" => {
                            let (o, rest) = Options::take(&cx, items, &["epochs", "batch", "seed"], word)?;
                            if let Some(extra) = rest.first() {
                                return Err(cx.err(
                                    extra.span(),
                                    "unexpected; options are written `name=value`, as in `epochs=5`",
                                ));
                            }
                            let t = TrainSettings {
                                epochs: o
                                    .get("epochs")
                                    .map(|v| cx.count(v, "epochs", 100_000))
                                    .transpose()?
                                    .unwrap_or(5),
                                batch: o
                                    .get("batch")
                                    .map(|v| cx.count(v, "batch", 1 << 20))
                                    .transpose()?
                                    .unwrap_or(32),
                                seed: o
                                    .get("seed")
                                    .map(|v| cx.count(v, "seed", u32::MAX as u64))
                                    .transpose()?
                                    .map_or(1, |s| s as u64),
                            };
                            batch_span = Some(o.get("batch").map_or(*span, |v| v.span));
                            train.set(&cx, "train", t, *span)?;
                        }
                        _ => {
                            let layer = layer(&cx, head, args, items, &activation_defs)?;
                            layers.push((layer, *span));
                        }
                    }
                }
            }
        }
        let end = Span::new(src.len(), src.len());
        let need = |what: &str, example: &str| {
            cx.err(end, format!("the model has no `{what}` line")).with_help(format!("add `{example}`"))
        };
        let (data, _) = data.value.ok_or_else(|| need("data", "data mnist"))?;
        let (input, input_span) = input.value.ok_or_else(|| need("input", "input 28x28"))?;
        if let Some((data_sample, _)) = data.known_shape()
            && input != data_sample
        {
            return Err(cx.err(
                input_span,
                format!(
                    "`{data}` samples are {}, not {}",
                    crate::graph::show_shape(&data_sample),
                    crate::graph::show_shape(&input)
                ),
            ));
        }
        let (loss, loss_span) = loss.value.ok_or_else(|| need("loss", "loss softmax_cross_entropy"))?;
        let regression = data.regression;
        if regression && loss == Loss::SoftmaxCrossEntropy {
            return Err(cx
                .err(
                    loss_span,
                    "softmax_cross_entropy needs class labels, but the `data` line asks for float targets",
                )
                .with_help("use `loss mse` for regression, or `label=COLUMN` for classes"));
        }
        let (optimizer, _) = optimizer.value.ok_or_else(|| need("optimizer", "optimizer adam lr=0.001"))?;
        let train = train.value.map(|t| t.0).unwrap_or(TrainSettings { epochs: 5, batch: 32, seed: 1 });
        if let (Some(_), Some((_, at))) = (&schedule.value, &plateau.value) {
            return Err(cx
                .err(*at, "`reduce_lr_on_plateau` and `schedule` both set the learning rate")
                .with_help("keep one of them (Keras refuses the pair too)"));
        }
        // A monitored metric the model reports: accuracy for classes, mae for regression.
        let callbacks = [
            plateau.value.as_ref().map(|(p, at)| (p.monitor(), *at)),
            early_stopping.value.as_ref().map(|(e, at)| (e.monitor(), *at)),
        ];
        for (m, at) in callbacks.into_iter().flatten() {
            let name = m.name();
            let wrong = if data.regression { name.ends_with("accuracy") } else { name.ends_with("mae") };
            if wrong {
                let what = if data.regression {
                    "a regression model reports `mae`, not accuracy"
                } else {
                    "a classifier reports `accuracy`, not `mae`"
                };
                return Err(cx.err(at, format!("this line monitors `{name}`, but {what}")));
            }
        }
        let mut spec = ModelSpec {
            origin: origin.to_owned(),
            source: src.to_owned(),
            data,
            input,
            classes: 0,
            regression,
            input_span,
            output_span: input_span,
            layers: layers.iter().map(|(l, _)| l.clone()).collect(),
            loss,
            regularizers,
            optimizer,
            train,
            schedule: schedule.value.map_or(crate::model::schedule::Schedule::Constant, |s| s.0),
            plateau: plateau.value.map(|p| p.0),
            early_stopping: early_stopping.value.map(|e| e.0),
            activation_defs,
            activations,
            ast,
            lets,
            batch_span: batch_span.unwrap_or(input_span),
        };
        let widest = spec.check_shapes(&cx, &layers, input_span)?;
        spec.output_span = layers.last().map_or(input_span, |l| l.1);
        spec.batch_span = batch_span.unwrap_or(widest);
        // Formulas (a loss, regularizers) are checked by building the training graph once:
        // names, shapes and scalar-ness are all checked there, with positions. The same graph
        // says how much memory training needs (`memory.rs`), checked before anything is
        // allocated for it.
        let built = build::build(&spec, spec.train.batch, true)?;
        spec.check_memory(&built)?;
        Ok(spec)
    }

    /// Refuses training graph `built` (at this spec's batch size or another) if training
    /// needs more memory than the machine has ([`memory`]), pointing at the batch size.
    pub fn check_memory(&self, built: &build::Built) -> Result<(), Diagnostic> {
        self.check_memory_within(built, memory_budget())
    }

    /// [`Self::check_memory`] against a budget of `budget` bytes.
    pub fn check_memory_within(&self, built: &build::Built, budget: u64) -> Result<(), Diagnostic> {
        memory::check(&memory::needed(self, built), budget).map_err(|(message, help)| {
            Diagnostic::new(&self.source, self.batch_span, message).with_origin(&self.origin).with_help(help)
        })
    }

    /// Follows the shape through the layers: flat input for dense layers, the last layer
    /// as wide as the number of classes, and the memory the parameters need. Returns the line
    /// of the layer with the most values per sample.
    fn check_shapes(
        &mut self,
        cx: &Ctx<'_>,
        layers: &[(Layer, Span)],
        input_span: Span,
    ) -> Result<Span, Diagnostic> {
        let mut shape = self.input.clone();
        let mut params: u64 = 0;
        let mut last = input_span;
        let mut widest = (self.input.iter().product::<usize>(), input_span);
        for (layer, span) in layers {
            match layer {
                Layer::Flatten => shape = vec![shape.iter().product()],
                Layer::Dense { units, .. } => {
                    if shape.len() != 1 {
                        return Err(cx
                            .err(
                                *span,
                                format!(
                                    "`dense` needs a flat input, but it gets {}",
                                    crate::graph::show_shape(&shape)
                                ),
                            )
                            .with_help("add `flatten` before it"));
                    }
                    params = params.saturating_add((shape[0] as u64 + 1).saturating_mul(*units as u64));
                    shape = vec![*units];
                }
                Layer::BatchNorm { .. } => {
                    params = params.saturating_add(4 * shape.iter().product::<usize>() as u64)
                }
                Layer::Activation(_) | Layer::Dropout { .. } => {}
            }
            last = *span;
            if shape.iter().product::<usize>() > widest.0 {
                widest = (shape.iter().product(), *span);
            }
        }
        let known = self.data.known_shape().map(|(_, classes)| classes);
        if shape.len() != 1 && known.is_none() {
            return Err(cx
                .err(
                    last,
                    format!(
                        "the model ends with {} values per sample; it must end flat",
                        crate::graph::show_shape(&shape)
                    ),
                )
                .with_help("add `flatten`, then a `dense` layer as wide as the classes or targets"));
        }
        self.classes = known.unwrap_or(shape[0]);
        if shape != [self.classes] {
            return Err(cx
                .err(
                    last,
                    format!(
                        "the model ends with {} values per sample, but `{}` has {} classes",
                        crate::graph::show_shape(&shape),
                        self.data,
                        self.classes
                    ),
                )
                .with_help(format!("end with `dense {}`", self.classes)));
        }
        // Parameters, gradients and two optimizer moments, in f32 (and activations per
        // batch, which are small next to them for any model that fits).
        let bytes = params.saturating_mul(4 * 4);
        let budget = memory_budget();
        if bytes > budget {
            return Err(cx.err(
                last,
                format!(
                    "this model has {params} parameters and would need {:.1} GiB for them, their gradients and the optimizer; {:.1} GiB is available",
                    bytes as f64 / (1u64 << 30) as f64,
                    budget as f64 / (1u64 << 30) as f64
                ),
            ));
        }
        Ok(widest.1)
    }

    /// Whether the learning rate changes during training (a `schedule` or
    /// `reduce_lr_on_plateau`), so that the step takes it as an input.
    pub fn lr_varies(&self) -> bool {
        self.schedule != schedule::Schedule::Constant || self.plateau.is_some()
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        let mut width: usize = self.input.iter().product();
        let mut n = 0;
        for l in &self.layers {
            match l {
                Layer::Dense { units, .. } => {
                    n += (width + 1) * units;
                    width = *units;
                }
                Layer::BatchNorm { .. } => n += 2 * width,
                _ => {}
            }
        }
        n
    }
}

/// The formula at `root` of the file's syntax tree, copied into a tree of its own (spans stay
/// positions in the file). Lowering reads the tree below its root's id, so lowering each of
/// many formulas from the file's one tree would cost the square of the file's length.
/// Words the model language gives a meaning to as values besides the names of layers, data
/// sets, optimizers and losses; a `let` cannot take any of them, since a `let` name is also
/// read as a value (`dense units`).
const VALUE_WORDS: &[&str] =
    &["sparse_categorical_crossentropy", "true", "false", "logits", "labels", "pi", "e"];

/// A `let` line: the name, its number, and where the name was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    pub name: String,
    pub value: f64,
    pub span: Span,
}

/// The let named `name`, if any.
pub(crate) fn find_let<'a>(lets: &'a [Let], name: &str) -> Option<&'a Let> {
    lets.iter().find(|l| l.name == name)
}

/// The `let` lines, in file order, each value computed from numbers and the lets above it.
fn read_lets(cx: &Ctx<'_>, ast: &Ast, lines: &[ModelLine]) -> Result<Vec<Let>, Diagnostic> {
    let mut lets: Vec<Let> = Vec::new();
    for line in lines {
        let ModelLine::Let { name, value, .. } = line else { continue };
        let n = name.text.as_str();
        let reserved = LAYERS.contains(&n)
            || SETTINGS.contains(&n)
            || BUILTIN_ACTIVATIONS.contains(&n)
            || [data::KINDS, OPTIMIZERS, LOSSES, VALUE_WORDS].iter().any(|w| w.contains(&n))
            || crate::graph::lower::is_builtin_function(n);
        if reserved {
            return Err(
                cx.err(name.span, format!("`{n}` has a meaning in model files; a `let` cannot rename it"))
            );
        }
        if let Some(first) = find_let(&lets, n) {
            let (line, _) = crate::syntax::line_col(cx.src, first.span.start);
            return Err(cx.err(name.span, format!("`{n}` is given twice (first on line {line})")));
        }
        let lookup = |m: &str| find_let(&lets, m).map(|l| l.value);
        let functions = HashMap::new();
        let (tree, root) = own_tree(ast, *value);
        let scope = Scope {
            lets: &lookup,
            inline_lets: true,
            ..Scope::new(cx.src, &tree, &functions, crate::expr::derive)
        };
        let mut g = Graph::new();
        let id = scope.lower(&mut g, root).map_err(|d| d.with_origin(cx.origin))?;
        match g.as_num(id) {
            Some(x) if x.is_finite() => lets.push(Let { name: n.to_owned(), value: x, span: name.span }),
            _ => {
                let why = match g.var_names().next() {
                    Some(v) => format!("`{v}` has no value here"),
                    None => "it is not a finite number".to_owned(),
                };
                return Err(cx
                    .err(ast.span(*value), format!("the value of `{n}` must be a number: {why}"))
                    .with_help("a `let` value is a number or a formula of numbers and the lets above it"));
            }
        }
    }
    Ok(lets)
}

/// `line` with every word value that is a `let` name replaced by the let's number
/// (`dense units relu`, `dropout rate`, `train epochs=n`).
fn with_lets(line: ModelLine, lets: &[Let]) -> ModelLine {
    let value = |v: Spanned<Value>| match &v.value {
        Value::Word(w) => match find_let(lets, w) {
            Some(l) => Spanned { value: Value::Num(l.value), span: v.span },
            None => v,
        },
        _ => v,
    };
    match line {
        ModelLine::Statement { head, args, items, span } => ModelLine::Statement {
            head,
            args: args.into_iter().map(value).collect(),
            items: items
                .into_iter()
                .map(|item| match item {
                    Item::Value(v) => Item::Value(value(v)),
                    Item::Option { name, value: v } => Item::Option { name, value: value(v) },
                    Item::Call { name, args, span } => {
                        Item::Call { name, args: args.into_iter().map(value).collect(), span }
                    }
                })
                .collect(),
            span,
        },
        other => other,
    }
}

pub(crate) fn own_tree(ast: &Ast, root: syntax::AstId) -> (Ast, syntax::AstId) {
    use syntax::AstId;
    // The subtree's ids (a tree: every node has one parent), then copied in id order, so
    // children still come before their parents.
    let mut ids = vec![root];
    let mut k = 0;
    while let Some(&id) = ids.get(k) {
        k += 1;
        ids.extend(ast.node(id).kind.children());
    }
    ids.sort_unstable();
    ids.dedup();
    let mut new: HashMap<AstId, AstId> = HashMap::with_capacity(ids.len());
    let mut tree = Ast::default();
    for id in ids {
        let node = ast.node(id);
        let kind = node.kind.map_children(|a| new[&a]);
        new.insert(id, tree.push(kind, node.span));
    }
    let root = new[&root];
    (tree, root)
}

/// Checks that an activation's body, lowered over a scalar parameter, is a number built from
/// elementwise operations only: a layer applies it to each unit on its own, so an operator
/// that mixes units (a sum, a row operator, a one-hot) cannot mean what it says there. A body
/// that does not read its parameter (`3`, `x - x`) is fine: the layer broadcasts it.
fn elementwise(cx: &Ctx<'_>, g: &Graph, body: crate::graph::Id, span: Span) -> Result<(), Diagnostic> {
    use crate::graph::Op;
    for id in g.reachable(&[body]) {
        let what = match g.op(id) {
            Op::Num(_) | Op::Const(_) | Op::Var(_) | Op::Add | Op::Mul | Op::Pow | Op::Func(_) => continue,
            Op::Sum(_) => "sum",
            Op::Max(_) => "max",
            Op::MatMul => "@",
            Op::LogSoftmax => "logsoftmax",
            Op::OneHot(_) => "onehot",
            Op::Broadcast(_) | Op::Reshape(_) | Op::Transpose => "a change of shape",
        };
        return Err(cx
            .err(span, format!("an activation is applied to each unit on its own, but this uses {what}"))
            .with_help(
                "write an elementwise formula of one number, as in `activation swish(x) = x * sigmoid(x)`",
            ));
    }
    if !g.is_scalar(body) {
        return Err(cx.err(
            span,
            format!(
                "an activation must give one number per unit, but this is {}",
                crate::graph::show_shape(g.shape(body))
            ),
        ));
    }
    Ok(())
}

/// One layer line.
fn layer(
    cx: &Ctx<'_>,
    head: &Name,
    args: &[Spanned<Value>],
    items: &[Item],
    defs: &HashMap<String, FnDef>,
) -> Result<Layer, Diagnostic> {
    let word = head.text.as_str();
    let no_extra = |rest: &[&Item]| match rest.first() {
        Some(extra) => Err(cx.err(extra.span(), format!("unexpected in a `{word}` line"))),
        None => Ok(()),
    };
    Ok(match word {
        "flatten" => {
            let (_, rest) = Options::take(cx, items, &[], word)?;
            no_extra(&rest)?;
            Layer::Flatten
        }
        "dense" => {
            let (o, rest) = Options::take(cx, items, &["l2", "activation"], word)?;
            let units = match rest.first() {
                Some(Item::Value(v @ Spanned { value: Value::Num(_), .. })) => {
                    cx.count(v, "the number of units", 1 << 24)?
                }
                _ => return Err(cx.err(head.span, "`dense` needs a number of units, as in `dense 128 relu`")),
            };
            let mut activation = None;
            for item in &rest[1..] {
                if activation.is_some() {
                    return Err(cx.err(item.span(), "a dense layer has one activation"));
                }
                activation = Some(activation_item(cx, item, defs)?);
            }
            if let Some(v) = o.get("activation") {
                if activation.is_some() {
                    return Err(cx.err(v.span, "the activation is given twice"));
                }
                activation = Some(activation_item(cx, &Item::Value(v.clone()), defs)?);
            }
            let l2 = o.get("l2").map(|v| cx.ranged(v, "l2", 0.0, 1e6, false)).transpose()?.unwrap_or(0.0);
            Layer::Dense { units, activation, l2 }
        }
        "dropout" => {
            let (o, rest) = Options::take(cx, items, &["rate"], word)?;
            let rate = match (rest.as_slice(), o.get("rate")) {
                ([Item::Value(v)], None) | ([], Some(v)) => {
                    cx.ranged(v, "the dropout rate", 0.0, 1.0, true)?
                }
                _ => return Err(cx.err(head.span, "`dropout` takes a rate, as in `dropout 0.2`")),
            };
            Layer::Dropout { rate }
        }
        "batchnorm" => {
            let (o, rest) = Options::take(cx, items, &["momentum", "epsilon"], word)?;
            no_extra(&rest)?;
            Layer::BatchNorm {
                momentum: o
                    .get("momentum")
                    .map(|v| cx.ranged(v, "momentum", 0.0, 1.0, true))
                    .transpose()?
                    .unwrap_or(0.99),
                epsilon: o.get("epsilon").map(|v| cx.positive(v, "epsilon")).transpose()?.unwrap_or(1e-3),
            }
        }
        "relu" | "sigmoid" | "tanh" | "softplus" | "leaky_relu" | "elu" => {
            let (o, rest) = Options::take(
                cx,
                items,
                if word == "leaky_relu" || word == "elu" { &["alpha"] } else { &[] },
                word,
            )?;
            no_extra(&rest)?;
            let alpha = match (args, o.get("alpha")) {
                ([v], None) | ([], Some(v)) => Some(cx.number(v, "alpha")?),
                ([], None) => None,
                _ => return Err(cx.err(head.span, "give alpha once")),
            };
            Layer::Activation(builtin_activation(cx, head, alpha)?)
        }
        _ if defs.contains_key(word) => {
            let (_, rest) = Options::take(cx, items, &[], word)?;
            no_extra(&rest)?;
            Layer::Activation(Activation::Custom(word.to_owned()))
        }
        _ => {
            let names: Vec<&str> =
                LAYERS.iter().chain(SETTINGS).copied().chain(defs.keys().map(String::as_str)).collect();
            return Err(cx.unknown("layer", head, &names));
        }
    })
}

fn builtin_activation(cx: &Ctx<'_>, name: &Name, alpha: Option<f64>) -> Result<Activation, Diagnostic> {
    let no_alpha = || match alpha {
        Some(_) => Err(cx.err(name.span, format!("`{}` takes no alpha", name.text))),
        None => Ok(()),
    };
    Ok(match name.text.as_str() {
        "relu" => {
            no_alpha()?;
            Activation::Relu
        }
        "sigmoid" => {
            no_alpha()?;
            Activation::Sigmoid
        }
        "tanh" => {
            no_alpha()?;
            Activation::Tanh
        }
        "softplus" => {
            no_alpha()?;
            Activation::Softplus
        }
        "leaky_relu" => Activation::LeakyRelu(alpha.unwrap_or(0.2)),
        "elu" => Activation::Elu(alpha.unwrap_or(1.0)),
        _ => return Err(cx.unknown("activation", name, BUILTIN_ACTIVATIONS)),
    })
}

/// An activation written after `dense N`: a name, or `leaky_relu(0.2)`.
fn activation_item(
    cx: &Ctx<'_>,
    item: &Item,
    defs: &HashMap<String, FnDef>,
) -> Result<Activation, Diagnostic> {
    match item {
        Item::Value(Spanned { value: Value::Word(w), span }) => {
            if defs.contains_key(w) {
                return Ok(Activation::Custom(w.clone()));
            }
            let name = Name { text: w.clone(), span: *span };
            if !BUILTIN_ACTIVATIONS.contains(&w.as_str()) {
                let names: Vec<&str> =
                    BUILTIN_ACTIVATIONS.iter().copied().chain(defs.keys().map(String::as_str)).collect();
                return Err(cx.unknown("activation", &name, &names));
            }
            builtin_activation(cx, &name, None)
        }
        Item::Call { name, args, .. } => {
            let alpha = match args.as_slice() {
                [v] => Some(cx.number(v, "alpha")?),
                _ => return Err(cx.err(name.span, format!("`{}(...)` takes one number", name.text))),
            };
            builtin_activation(cx, name, alpha)
        }
        other => Err(cx.err(other.span(), "expected an activation, as in `relu` or `leaky_relu(0.2)`")),
    }
}
