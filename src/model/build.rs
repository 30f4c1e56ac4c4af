//! From a model spec to graphs: the training graph (forward pass, loss, and the gradient of
//! the loss with respect to every parameter, built by reverse mode) and the inference graph
//! (no dropout, batch normalisation with running statistics).
//!
//! Every layer is a few ordinary nodes: `dense` is `h @ kernel + bias` and its activation,
//! `dropout` multiplies by a mask that is an *input* of the step (so the graph stays a pure
//! function and the trainer draws the mask), `batchnorm` is written out with `mean`, `sum`
//! and powers. Nothing here knows a derivative: reverse mode derives them all.
//!
//! Names: parameters are `dense_1.kernel`, `dense_1.bias`, `batch_normalization_1.gamma`,
//! ... as Keras saves them; in formulas (`regularizer = ...`) the dot is an underscore
//! (`dense_1_kernel`), and `logits` and `labels` name the model's output and the labels.

use hashbrown::HashMap;

use super::{Activation, Layer, Let, Loss, ModelSpec, find_let};
use crate::diff;
use crate::graph::lower::import_with;
use crate::graph::{FnDef, Func, Graph, Id, Scope};
use crate::syntax::Diagnostic;

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// A trainable parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// The name in weight files: `dense_1.kernel`.
    pub name: String,
    pub var: Id,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Whether an `l2` factor applies (for reporting).
    pub l2: f64,
}

/// A dropout layer's mask input.
#[derive(Debug, Clone)]
pub struct Dropout {
    pub mask: Id,
    pub rate: f64,
    pub shape: Vec<usize>,
}

/// A batch-normalisation layer's statistics.
#[derive(Debug, Clone)]
pub struct BatchNormStats {
    /// `batch_normalization_1`.
    pub name: String,
    /// Running mean and variance: inputs of the inference graph.
    pub running_mean: Id,
    pub running_var: Id,
    /// Mean and variance of the batch: outputs of the training graph.
    pub batch_mean: Option<Id>,
    pub batch_var: Option<Id>,
    pub momentum: f64,
    pub width: usize,
}

/// A model as a graph.
pub struct Built {
    pub graph: Graph,
    pub batch: usize,
    pub training: bool,
    /// `[batch, ...input]` images.
    pub input: Id,
    /// `[batch]` integer labels (as floats).
    pub labels: Id,
    pub params: Vec<Param>,
    pub dropouts: Vec<Dropout>,
    pub batchnorms: Vec<BatchNormStats>,
    /// `[batch, classes]`.
    pub logits: Id,
    /// The scalar loss (with regularization terms).
    pub loss: Id,
    /// `∂loss/∂param`, one per parameter (training graphs only).
    pub grads: Vec<Id>,
    /// Each layer's output, named for `symdiff show`.
    pub layer_outputs: Vec<(String, Id)>,
}

fn shape_err(spec: &ModelSpec, e: impl std::fmt::Display) -> Diagnostic {
    let end = spec.source.len();
    Diagnostic::new(&spec.source, crate::syntax::Span::new(end, end), e.to_string()).with_origin(&spec.origin)
}

/// Builds the training (`training = true`) or inference graph for batches of `batch`.
///
/// `ModelSpec::parse` checked that training at the file's batch size fits in memory; a
/// training graph for a larger batch (`symdiff bench` times 256) is checked here, before the
/// caller allocates anything for it.
pub fn build(spec: &ModelSpec, batch: usize, training: bool) -> Result<Built, Diagnostic> {
    let built = build_graph(spec, batch, training)?;
    if training && batch > spec.train.batch {
        spec.check_memory(&built)?;
    }
    Ok(built)
}

fn build_graph(spec: &ModelSpec, batch: usize, training: bool) -> Result<Built, Diagnostic> {
    let mut g = Graph::new();
    let mut in_shape = vec![batch];
    in_shape.extend_from_slice(&spec.input);
    let input = g.var_shaped("input", &in_shape).map_err(|e| shape_err(spec, e.0))?;
    // Class labels are one number per sample; regression targets a row as wide as the output.
    let label_shape = if spec.regression { vec![batch, spec.classes] } else { vec![batch] };
    let labels = g.var_shaped("labels", &label_shape).map_err(|e| shape_err(spec, e.0))?;
    let mut params = Vec::new();
    let mut dropouts = Vec::new();
    let mut batchnorms = Vec::new();
    let mut layer_outputs = Vec::new();
    let mut h = input;
    let (mut dense_n, mut drop_n, mut bn_n, mut flat_n, mut act_n) = (0, 0, 0, 0, 0);
    let mut l2_terms: Vec<Id> = Vec::new();
    for layer in &spec.layers {
        match layer {
            Layer::Flatten => {
                flat_n += 1;
                let width: usize = g.shape(h)[1..].iter().product();
                let s = g.shape_id(&[batch, width]);
                h = g.reshape(h, s);
                layer_outputs.push((format!("flatten_{flat_n}"), h));
            }
            Layer::Dense { units, activation, l2 } => {
                dense_n += 1;
                let name = format!("dense_{dense_n}");
                let fan_in = g.shape(h)[1];
                let kernel = param(
                    &mut g,
                    &mut params,
                    &format!("{name}.kernel"),
                    &[fan_in, *units],
                    Init::GlorotUniform { fan_in, fan_out: *units },
                    *l2,
                )?;
                let bias = param(&mut g, &mut params, &format!("{name}.bias"), &[*units], Init::Zeros, 0.0)?;
                let z = g.matmul(h, kernel);
                h = g.add(&[z, bias]);
                if let Some(a) = activation {
                    h = activate(spec, &mut g, h, a);
                }
                if *l2 > 0.0 {
                    let sq = g.square(kernel);
                    let s = g.sum(sq, None);
                    let c = g.num(*l2);
                    l2_terms.push(g.mul(&[c, s]));
                }
                layer_outputs.push((name, h));
            }
            Layer::Activation(a) => {
                act_n += 1;
                h = activate(spec, &mut g, h, a);
                layer_outputs
                    .push((format!("{}_{act_n}", a.name().split('(').next().unwrap_or("activation")), h));
            }
            Layer::Dropout { rate } => {
                drop_n += 1;
                if training && *rate > 0.0 {
                    let shape = g.shape(h).to_vec();
                    let mask = g
                        .var_shaped(&format!("dropout_{drop_n}.mask"), &shape)
                        .map_err(|e| shape_err(spec, e.0))?;
                    h = g.mul(&[h, mask]);
                    dropouts.push(Dropout { mask, rate: *rate, shape });
                }
                layer_outputs.push((format!("dropout_{drop_n}"), h));
            }
            Layer::BatchNorm { momentum, epsilon } => {
                bn_n += 1;
                let name = format!("batch_normalization_{bn_n}");
                let width = g.shape(h)[1];
                let gamma = param(&mut g, &mut params, &format!("{name}.gamma"), &[width], Init::Ones, 0.0)?;
                let beta = param(&mut g, &mut params, &format!("{name}.beta"), &[width], Init::Zeros, 0.0)?;
                let running_mean = g
                    .var_shaped(&format!("{name}.moving_mean"), &[width])
                    .map_err(|e| shape_err(spec, e.0))?;
                let running_var = g
                    .var_shaped(&format!("{name}.moving_variance"), &[width])
                    .map_err(|e| shape_err(spec, e.0))?;
                let eps = g.num(*epsilon);
                let (mean, var, stats) = if training {
                    let inv_b = g.num(1.0 / batch as f64);
                    let s = g.sum(h, Some(0));
                    let mean = g.mul(&[inv_b, s]);
                    let d = g.sub(h, mean);
                    let d2 = g.square(d);
                    let s2 = g.sum(d2, Some(0));
                    let var = g.mul(&[inv_b, s2]);
                    (mean, var, (Some(mean), Some(var)))
                } else {
                    (running_mean, running_var, (None, None))
                };
                let centered = g.sub(h, mean);
                let ve = g.add(&[var, eps]);
                let inv_std = g.powi(ve, -0.5);
                let xhat = g.mul(&[centered, inv_std]);
                let scaled = g.mul(&[gamma, xhat]);
                h = g.add(&[scaled, beta]);
                batchnorms.push(BatchNormStats {
                    name: name.clone(),
                    running_mean,
                    running_var,
                    batch_mean: stats.0,
                    batch_var: stats.1,
                    momentum: *momentum,
                    width,
                });
                layer_outputs.push((name, h));
            }
        }
    }
    let logits = h;
    let classes = spec.classes;
    let mut loss = match &spec.loss {
        Loss::SoftmaxCrossEntropy => {
            let lp = g.log_softmax(logits);
            let oh = g.one_hot(labels, classes);
            let picked = g.mul(&[lp, oh]);
            let total = g.sum(picked, None);
            let c = g.num(-1.0 / batch as f64);
            g.mul(&[c, total])
        }
        Loss::Mse => {
            // Regression: against the targets; classification: against the one-hot labels.
            let target = if spec.regression { labels } else { g.one_hot(labels, classes) };
            let d = g.sub(logits, target);
            let d2 = g.square(d);
            let total = g.sum(d2, None);
            let c = g.num(1.0 / (batch * classes) as f64);
            g.mul(&[c, total])
        }
        Loss::Formula(body) => formula(spec, &mut g, *body, logits, labels, &params, "loss")?,
    };
    // A `let` may not take a parameter's name (formulas name `dense_1.kernel` `dense_1_kernel`).
    for Let { name, span, .. } in &spec.lets {
        if params.iter().any(|p| p.name.replace('.', "_") == *name || p.name == *name) {
            return Err(Diagnostic::new(
                &spec.source,
                *span,
                format!("`{name}` names a parameter of the model; a `let` cannot rename it"),
            )
            .with_origin(&spec.origin));
        }
    }
    let mut terms = vec![loss];
    terms.extend(l2_terms);
    for &r in &spec.regularizers {
        terms.push(formula(spec, &mut g, r, logits, labels, &params, "regularizer")?);
    }
    loss = g.add(&terms);
    let grads = if training {
        let vars: Vec<Id> = params.iter().map(|p| p.var).collect();
        diff::reverse::gradient(&mut g, loss, &vars)
    } else {
        Vec::new()
    };
    Ok(Built {
        graph: g,
        batch,
        training,
        input,
        labels,
        params,
        dropouts,
        batchnorms,
        logits,
        loss,
        grads,
        layer_outputs,
    })
}

fn param(
    g: &mut Graph,
    params: &mut Vec<Param>,
    name: &str,
    shape: &[usize],
    init: Init,
    l2: f64,
) -> Result<Id, Diagnostic> {
    let var =
        g.var_shaped(name, shape).map_err(|e| Diagnostic::new("", crate::syntax::Span::default(), e.0))?;
    params.push(Param { name: name.to_owned(), var, shape: shape.to_vec(), init, l2 });
    Ok(var)
}

/// `a(h)`, elementwise, as nodes.
fn activate(spec: &ModelSpec, g: &mut Graph, h: Id, a: &Activation) -> Id {
    match a {
        Activation::Relu => g.func(Func::Relu, h),
        Activation::Sigmoid => g.func(Func::Sigmoid, h),
        Activation::Tanh => g.func(Func::Tanh, h),
        Activation::Softplus => g.func(Func::Softplus, h),
        Activation::LeakyRelu(alpha) => {
            // relu(h) - alpha*relu(-h)
            let pos = g.func(Func::Relu, h);
            let nh = g.neg(h);
            let neg = g.func(Func::Relu, nh);
            let c = g.num(-alpha);
            let t = g.mul(&[c, neg]);
            g.add(&[pos, t])
        }
        Activation::Elu(alpha) => {
            // relu(h) + alpha*(exp(-relu(-h)) - 1): exp of a non-positive number never overflows
            let pos = g.func(Func::Relu, h);
            let nh = g.neg(h);
            let r = g.func(Func::Relu, nh);
            let m = g.neg(r);
            let e = g.func(Func::Exp, m);
            let one = g.num(-1.0);
            let em1 = g.add(&[e, one]);
            let c = g.num(*alpha);
            let t = g.mul(&[c, em1]);
            g.add(&[pos, t])
        }
        Activation::Custom(name) => {
            let def = &spec.activation_defs[name];
            let param = spec.activations.find_var(&def.params[0]);
            let map: HashMap<Id, Id> = param.map(|p| (p, h)).into_iter().collect();
            let out = import_with(g, &spec.activations, def.body, map);
            // A body that does not read its parameter (`3`; `0*x` and `x - x` simplify to
            // numbers) is that number at every unit: the layer keeps its shape, and the
            // derivative through it is zero. `ModelSpec::parse` checked the body is one number
            // of elementwise operations, so it is either `h`'s shape or a scalar.
            let shape = g.shape_id_of(h);
            if g.shape_id_of(out) == shape { out } else { g.broadcast(out, shape) }
        }
    }
}

/// A formula of the model file over `logits`, `labels` and the parameters.
fn formula(
    spec: &ModelSpec,
    g: &mut Graph,
    body: crate::syntax::AstId,
    logits: Id,
    labels: Id,
    params: &[Param],
    what: &str,
) -> Result<Id, Diagnostic> {
    let mut names: HashMap<String, FnDef> = HashMap::new();
    names.insert("logits".into(), FnDef { params: Vec::new(), body: logits });
    names.insert("labels".into(), FnDef { params: Vec::new(), body: labels });
    for p in params {
        names.insert(p.name.replace('.', "_"), FnDef { params: Vec::new(), body: p.var });
    }
    let (tree, root) = super::own_tree(&spec.ast, body);
    let lets = |n: &str| find_let(&spec.lets, n).map(|l| l.value);
    let scope = Scope {
        lets: &lets,
        inline_lets: true,
        ..Scope::new(&spec.source, &tree, &names, crate::expr::derive)
    };
    // A name that is none of the above (nor an index of a `sum(i = ...)`) becomes a new
    // variable of the graph as it is lowered: it is unknown. (Read off the variables the
    // lowering added, which come last, not by walking the model's graph below the formula,
    // which would cost the model's size.)
    let before = g.var_names().count();
    let id = scope.lower(g, root).map_err(|d| d.with_origin(&spec.origin))?;
    if let Some(v) = g.var_names().nth(before) {
        let base = v.split('[').next().unwrap_or(v);
        let at = (0..=root.0)
            .find_map(|k| {
                let node = tree.node(crate::syntax::AstId(k));
                match &node.kind {
                    crate::syntax::AstKind::Name(n) if **n == *v => Some(node.span),
                    crate::syntax::AstKind::Index(ix) if ix.name == base => Some(ix.name_span),
                    _ => None,
                }
            })
            .unwrap_or(spec.ast.span(body));
        let mut known: Vec<String> = names.keys().cloned().collect();
        known.sort();
        return Err(Diagnostic::new(&spec.source, at, format!("unknown name `{base}` in the {what}"))
            .with_origin(&spec.origin)
            .with_help(format!("known names: {}", known.join(", "))));
    }
    let span = spec.ast.span(body);
    if !g.is_scalar(id) {
        return Err(Diagnostic::new(
            &spec.source,
            span,
            format!("the {what} must be a number, but this is {}", crate::graph::show_shape(g.shape(id))),
        )
        .with_origin(&spec.origin)
        .with_help("reduce it with `sum(...)` or `mean(...)`"));
    }
    Ok(id)
}
