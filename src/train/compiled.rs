//! The compiled training step: the training graph, extended with the optimizer's update and
//! the batch-normalisation running statistics, planned into fused kernels and compiled by
//! Cranelift into one native function over buffers allocated once (`jit::step::Program`).
//! Inference (validation, evaluation, prediction) is compiled the same way.
//!
//! The update is written as graph nodes, so the same fusion that handles the forward and
//! backward passes turns it into one loop per parameter shape, writing each parameter and its
//! optimizer state in place:
//!
//! ```text
//! Adam:  m' = b1*m + (1-b1)*g      v' = b2*v + (1-b2)*g^2      p' = p - alpha*m'/(sqrt(v') + eps)
//!        with alpha = lr*sqrt(1 - b2^t)/(1 - b1^t) an input of the step
//! SGD:   p' = p - lr*g;  with momentum: u' = mu*u - lr*g,  p' = p + u'  (Nesterov: p + mu*u' - lr*g)
//! ```
//!
//! Except Adam's, by default: the same formula, in the same order, runs as one host kernel per
//! parameter (`jit::fuse::AdamUpdate`, `runtime::sd_adam`) over the gradient the program
//! stores, because its square root and division per element run twice as fast in 256-bit
//! vectors as in Cranelift's 128-bit ones. The graph form stays (`host_adam` false) and the
//! tests check both against the interpreter.
//!
//! The interpreter's optimizer (`optimizer.rs`) writes `m += (g - m)(1 - b1)`: the same
//! number up to rounding; the tests hold the two to a relative 1e-5 after a step.

use std::time::Duration;

use hashbrown::HashMap;
use ndarray::ArrayD;

use crate::graph::{Graph, Id, Op};
use crate::jit::fuse::{AdamCoefficients, AdamUpdate, Request, Unsupported};
use crate::jit::step::Program;
use crate::model::build::{Built, build};
use crate::model::{ModelSpec, Optimizer};

/// The compiled training step and its node ids.
pub struct CompiledStep {
    pub program: Program,
    pub built: Built,
    /// Optimizer state inputs per parameter (Adam: m and v; SGD with momentum: velocity).
    pub state: Vec<Vec<Id>>,
    /// Adam's `alpha` for this step.
    pub alpha: Option<Id>,
    /// SGD's learning rate for this step, when it changes during training (a `schedule` or
    /// `reduce_lr_on_plateau`); otherwise it is a constant of the program.
    pub lr: Option<Id>,
}

impl CompiledStep {
    /// Every node the program stores (for tests).
    #[cfg(test)]
    fn program_nodes(&self) -> Vec<Id> {
        self.program.stored_nodes()
    }

    /// Whether `node` is an input that the update overwrites (parameters and their state).
    #[cfg(test)]
    fn is_updated_input(&self, node: Id) -> bool {
        self.built.params.iter().any(|p| p.var == node)
            || self.state.iter().flatten().any(|&s| s == node)
            || self.built.batchnorms.iter().any(|b| b.running_mean == node || b.running_var == node)
    }
}

/// The compiled inference program for one batch size.
pub struct CompiledInference {
    pub program: Program,
    pub built: Built,
}

fn var(g: &mut Graph, name: &str, shape: &[usize]) -> Result<Id, Unsupported> {
    g.var_shaped(name, shape).map_err(|e| Unsupported(e.0))
}

/// Compiles the training step of `spec` for batches of `batch`.
pub fn compile_step(spec: &ModelSpec, batch: usize, keep_ir: bool) -> Result<CompiledStep, Unsupported> {
    compile_step_with(spec, batch, keep_ir, true, true)
}

/// The loss, logits and gradients of a batch, without the update: a data-parallel rank's
/// step (`parallel.rs`), whose gradients are summed over the ranks before the update.
pub fn compile_gradients(spec: &ModelSpec, batch: usize, keep_ir: bool) -> Result<CompiledStep, Unsupported> {
    let built = build(spec, batch, true).map_err(|d| Unsupported(d.message))?;
    let mut outputs = vec![built.loss, built.logits];
    for &g in &built.grads {
        if !outputs.contains(&g) {
            outputs.push(g);
        }
    }
    let mut inputs = vec![built.input, built.labels];
    inputs.extend(built.params.iter().map(|p| p.var));
    inputs.extend(built.dropouts.iter().map(|d| d.mask));
    let program = without_update(&built, inputs, outputs, keep_ir)?;
    // No optimizer state in the program: each parameter's list is empty.
    let state = vec![Vec::new(); built.params.len()];
    Ok(CompiledStep { program, built, state, alpha: None, lr: None })
}

/// A program that computes `outputs` and updates nothing (no aliases, no guard, no Adam
/// kernel), its buffers reused: a rank's gradients, or inference.
fn without_update(
    built: &Built,
    inputs: Vec<Id>,
    outputs: Vec<Id>,
    keep_ir: bool,
) -> Result<Program, Unsupported> {
    let req = Request {
        graph: &built.graph,
        inputs,
        outputs,
        aliases: Vec::new(),
        data: vec![built.input],
        guard: None,
        reuse: true,
        adam: Vec::new(),
    };
    Program::compile(&req, keep_ir)
}

/// [`compile_step`], optionally without buffer reuse (so every stored node keeps its value),
/// and with Adam's update as graph nodes (`host_adam` false) or by the host kernel.
fn compile_step_with(
    spec: &ModelSpec,
    batch: usize,
    keep_ir: bool,
    reuse: bool,
    host_adam: bool,
) -> Result<CompiledStep, Unsupported> {
    let mut built = build(spec, batch, true).map_err(|d| Unsupported(d.message))?;
    let g = &mut built.graph;
    let mut outputs = vec![built.loss, built.logits];
    let mut aliases = Vec::new();
    let mut inputs = vec![built.input, built.labels];
    let mut state = Vec::new();
    let mut alpha = None;
    let mut sgd_lr: Option<Id> = None;
    let mut adam = Vec::new();
    // Gradients already among the outputs (several parameters can share one, a zero).
    let mut grads_out: hashbrown::HashSet<Id> = outputs.iter().copied().collect();
    for (p, &grad) in built.params.iter().zip(&built.grads) {
        inputs.push(p.var);
        let (new_p, st) = match spec.optimizer {
            Optimizer::Adam { beta1, beta2, epsilon, .. } => {
                let a = match alpha {
                    Some(a) => a,
                    None => {
                        let a = var(g, "adam.alpha", &[])?;
                        alpha = Some(a);
                        a
                    }
                };
                let m = var(g, &format!("{}.m", p.name), &p.shape)?;
                let v = var(g, &format!("{}.v", p.name), &p.shape)?;
                // The host kernel reads the gradient from its buffer, so the gradient must be
                // computed into one (not a constant or an input, which no instruction writes).
                let computed = !matches!(g.op(grad), Op::Num(_) | Op::Const(_) | Op::Var(_));
                if host_adam && computed {
                    let coef = AdamCoefficients {
                        beta1: beta1 as f32,
                        c1: (1.0 - beta1) as f32,
                        beta2: beta2 as f32,
                        c2: (1.0 - beta2) as f32,
                        eps: epsilon as f32,
                    };
                    adam.push(AdamUpdate { param: p.var, m, v, grad, alpha: a, coef });
                    if grads_out.insert(grad) {
                        outputs.push(grad);
                    }
                    state.push(vec![m, v]);
                    continue;
                }
                let (b1, c1) = (g.num(beta1), g.num(1.0 - beta1));
                let t1 = g.mul(&[b1, m]);
                let t2 = g.mul(&[c1, grad]);
                let m_new = g.add(&[t1, t2]);
                let (b2, c2) = (g.num(beta2), g.num(1.0 - beta2));
                let g2 = g.square(grad);
                let t3 = g.mul(&[b2, v]);
                let t4 = g.mul(&[c2, g2]);
                let v_new = g.add(&[t3, t4]);
                let eps = g.num(epsilon);
                let root = g.powi(v_new, 0.5);
                let den = g.add(&[root, eps]);
                let step = g.div_by(m_new, den);
                let scaled = g.mul(&[a, step]);
                let p_new = g.sub(p.var, scaled);
                outputs.extend([m_new, v_new]);
                aliases.extend([(m_new, m), (v_new, v)]);
                (p_new, vec![m, v])
            }
            Optimizer::Sgd { lr, momentum, nesterov } => {
                let lr_g = {
                    let varies = spec.lr_varies();
                    let c = match sgd_lr {
                        Some(c) => c,
                        None if varies => {
                            let c = var(g, "sgd.lr", &[])?;
                            sgd_lr = Some(c);
                            c
                        }
                        None => g.num(lr),
                    };
                    g.mul(&[c, grad])
                };
                if momentum == 0.0 {
                    (g.sub(p.var, lr_g), Vec::new())
                } else {
                    let u = var(g, &format!("{}.momentum", p.name), &p.shape)?;
                    let mu = g.num(momentum);
                    let mu_u = g.mul(&[mu, u]);
                    let u_new = g.sub(mu_u, lr_g);
                    let p_new = if nesterov {
                        let mu_un = g.mul(&[mu, u_new]);
                        let t = g.add(&[p.var, mu_un]);
                        g.sub(t, lr_g)
                    } else {
                        g.add(&[p.var, u_new])
                    };
                    outputs.push(u_new);
                    aliases.push((u_new, u));
                    (p_new, vec![u])
                }
            }
        };
        outputs.push(new_p);
        aliases.push((new_p, p.var));
        state.push(st);
    }
    for s in state.iter().flatten() {
        inputs.push(*s);
    }
    inputs.extend(alpha);
    inputs.extend(sgd_lr);
    for d in &built.dropouts {
        inputs.push(d.mask);
    }
    for bn in &built.batchnorms {
        inputs.extend([bn.running_mean, bn.running_var]);
        for (run, stat) in [(bn.running_mean, bn.batch_mean), (bn.running_var, bn.batch_var)] {
            let Some(stat) = stat else { continue };
            let m = g.num(bn.momentum);
            let c = g.num(1.0 - bn.momentum);
            let a = g.mul(&[m, run]);
            let b = g.mul(&[c, stat]);
            let new = g.add(&[a, b]);
            outputs.push(new);
            aliases.push((new, run));
        }
    }
    let data = vec![built.input];
    let guard = Some(built.loss);
    let req = Request { graph: &built.graph, inputs, outputs, aliases, data, guard, reuse, adam };
    let program = Program::compile(&req, keep_ir)?;
    Ok(CompiledStep { program, built, state, alpha, lr: sgd_lr })
}

/// Compiles inference (loss and logits, no dropout, running statistics) for `batch`.
pub fn compile_inference(
    spec: &ModelSpec,
    batch: usize,
    keep_ir: bool,
) -> Result<CompiledInference, Unsupported> {
    let built = build(spec, batch, false).map_err(|d| Unsupported(d.message))?;
    let mut inputs = vec![built.input, built.labels];
    inputs.extend(built.params.iter().map(|p| p.var));
    for bn in &built.batchnorms {
        inputs.extend([bn.running_mean, bn.running_var]);
    }
    let program = without_update(&built, inputs, vec![built.loss, built.logits], keep_ir)?;
    Ok(CompiledInference { program, built })
}

/// Copies `values` into `node`'s buffer. Refuses (returns `false`, writing nothing) a node
/// without a buffer or values of another length.
pub fn write(program: &mut Program, node: Id, values: &ArrayD<f32>) -> bool {
    let Some(dst) = program.slot_mut(node) else { return false };
    if dst.len() != values.len() {
        return false;
    }
    match values.as_slice() {
        Some(src) => dst.copy_from_slice(src),
        None => dst.iter_mut().zip(values.iter()).for_each(|(d, s)| *d = *s),
    }
    true
}

/// Copies `node`'s buffer into `values`.
pub fn read(program: &Program, node: Id, values: &mut ArrayD<f32>) {
    if let Some(src) = program.slot(node) {
        for (d, s) in values.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Per-kernel times gathered over an epoch, with the kernels' names.
#[derive(Debug, Default, Clone)]
pub struct KernelTimes {
    pub names: Vec<String>,
    pub times: Vec<Duration>,
    pub steps: usize,
}

impl KernelTimes {
    /// A table: kernel, total time, time per step, share.
    pub fn report(&self) -> String {
        let total: Duration = self.times.iter().sum();
        let mut out = format!("{:<40} {:>10} {:>10} {:>6}\n", "kernel", "total", "per step", "share");
        let steps = self.steps.max(1) as u32;
        for (n, t) in self.names.iter().zip(&self.times) {
            out += &format!(
                "{:<40} {:>10.2?} {:>10.2?} {:>5.1}%\n",
                n,
                t,
                *t / steps,
                100.0 * t.as_secs_f64() / total.as_secs_f64().max(1e-12)
            );
        }
        out += &format!("{:<40} {:>10.2?} {:>10.2?}\n", "all kernels", total, total / steps);
        out
    }
}

/// What compiled inference needs per batch size, cached.
#[derive(Default)]
pub struct InferenceCache {
    pub programs: HashMap<usize, CompiledInference>,
}

#[cfg(test)]
mod tests {
    //! Every node the compiled program stores agrees with the tensor interpreter; and one
    //! compiled training step agrees with one interpreted step (relative error ≤ 1e-5).

    use hashbrown::HashMap;
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::graph::tensor::eval_tensors;

    fn fill(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    /// Runs `step` on random inputs and compares every stored node with the interpreter.
    fn check_program(name: &str, step: &mut CompiledStep) {
        let g = &step.built.graph;
        let mut values: HashMap<Id, ArrayD<f32>> = HashMap::new();
        let stored: Vec<Id> = step.program_nodes();
        let vars: Vec<Id> = g
            .reachable(&stored)
            .into_iter()
            .filter(|&id| matches!(g.op(id), crate::graph::Op::Var(_)))
            .collect();
        for (k, &v) in vars.iter().enumerate() {
            let mut a = fill(g.shape(v), k as u64 + 3);
            if v == step.built.labels {
                a = a.mapv(|x| ((x + 1.0) * 4.99).floor());
            }
            if g.var_name(v).is_some_and(|n| n.ends_with(".v") || n.ends_with("running_var")) {
                a = a.mapv(f32::abs);
            }
            if v == step.built.input {
                a = a.mapv(|x| (x + 1.0) / 2.0);
            }
            values.insert(v, a);
        }
        for (&v, a) in &values {
            assert!(write(&mut step.program, v, a));
        }
        let expect = eval_tensors::<f32>(g, &stored, &|v| values.get(&v).map(|a| a.view())).unwrap();
        step.program.run();
        for (node, want) in stored.iter().zip(&expect) {
            let Some(got) = step.program.slot(*node) else { continue };
            if step.is_updated_input(*node) {
                continue; // overwritten in place by the update
            }
            // Relative to the tensor's largest element: sums run in another order (GEMM
            // blocking, vector lanes), so elements that cancel to near zero differ in their
            // last bits relative to the terms, not to themselves.
            let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            for (k, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{name}: node {} ({}) element {k}: compiled {a}, interpreted {b}",
                    node.index(),
                    crate::graph::print(g, *node, crate::graph::Style::Text)
                        .chars()
                        .take(120)
                        .collect::<String>()
                );
            }
        }
    }

    fn model(body: &str, optimizer: &str) -> ModelSpec {
        let src = format!("data mnist\ninput 28x28\n{body}\noptimizer {optimizer}\ntrain batch=8\n");
        ModelSpec::parse(&src, "test").unwrap_or_else(|e| panic!("{}", e.render()))
    }

    /// Every layer kind, loss and optimizer, as (name, layers and loss, optimizer).
    const CASES: &[(&str, &str, &str)] = &[
        ("seed", "flatten\ndense 12 relu\ndropout 0.2\ndense 10\nloss softmax_cross_entropy", "adam"),
        (
            "leaky",
            "flatten\ndense 12\nleaky_relu(0.2)\ndropout 0.5\ndense 10\nloss softmax_cross_entropy",
            "adam",
        ),
        ("elu", "flatten\ndense 13\nelu(0.7)\ndense 10\nloss softmax_cross_entropy", "adam lr=0.01"),
        ("sigmoid", "flatten\ndense 12 sigmoid\ndense 10\nloss softmax_cross_entropy", "adam"),
        (
            "tanh",
            "flatten\ndense 12\ntanh\ndense 10\nloss softmax_cross_entropy",
            "adam beta1=0.8 beta2=0.99",
        ),
        ("softplus", "flatten\ndense 9 softplus\ndense 10\nloss softmax_cross_entropy", "adam"),
        (
            "batchnorm",
            "flatten\ndense 12\nbatchnorm momentum=0.9 epsilon=0.001\nrelu\ndropout 0.5\ndense 10\nloss softmax_cross_entropy",
            "adam",
        ),
        (
            "l2",
            "flatten\ndense 12 relu l2=0.001\ndropout 0.5\ndense 10 l2=0.01\nloss softmax_cross_entropy",
            "adam",
        ),
        (
            "swish",
            "activation swish(x) = x * sigmoid(x)\nflatten\ndense 12 swish\ndense 10\nloss softmax_cross_entropy",
            "adam",
        ),
        (
            "deep",
            "flatten\ndense 16 relu\ndense 11 tanh\ndense 7 relu\ndense 10\nloss softmax_cross_entropy",
            "adam",
        ),
        // Maps of 16k elements and more are shared between threads in ranges of units, the
        // last range doing the flat tail (8 × 2101 = 16808 = 1050 × 16 + 8) or whole rows.
        (
            "wide",
            "flatten\ndense 2101 relu\ndropout 0.3\ndense 10\nloss softmax_cross_entropy",
            "sgd lr=0.05 momentum=0.9",
        ),
        ("mse", "flatten\ndense 12 relu\ndense 10\nloss mse", "sgd lr=0.1"),
        ("sgd", "flatten\ndense 12 relu\ndense 10\nloss softmax_cross_entropy", "sgd lr=0.05"),
        (
            "momentum",
            "flatten\ndense 12 relu\ndense 10\nloss softmax_cross_entropy",
            "sgd lr=0.05 momentum=0.9",
        ),
        (
            "nesterov",
            "flatten\ndense 12 relu\ndense 10\nloss softmax_cross_entropy",
            "sgd lr=0.05 momentum=0.9 nesterov=true",
        ),
    ];

    /// Trains `body` (layers and loss) for three steps from the same start on both engines
    /// (the compiled step and the interpreter), then validates on both: every step's loss and
    /// correct count, and the validation loss and accuracy (over batches of 8 and a tail of 4,
    /// compiled as two inference programs), must agree.
    fn engines_agree(name: &str, body: &str, optimizer: &str) {
        use crate::train::trainer::{Dataset, Trainer};
        let spec = model(body, optimizer);
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let images: Vec<u8> = (0..20 * 784).map(|_| if next() % 5 == 0 { next() as u8 } else { 0 }).collect();
        let labels: Vec<u32> = (0..20).map(|_| (next() % 10) as u32).collect();
        let data = Dataset::images(&images, &labels, vec![28, 28]);
        let mut interp = Trainer::new(spec.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut compiled = Trainer::new(spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        compiled.compile(false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let close = |what: &str, a: f64, b: f64| {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{name}: {what}: interpreter {a}, compiled {b}"
            );
        };
        for step in 0..3 {
            let idx: Vec<usize> = (0..8).map(|k| (k * 7 + step * 5) % 20).collect();
            let a = interp.train_step(&data, &idx, 1, step + 1).unwrap_or_else(|e| panic!("{name}: {e}"));
            let b = compiled.train_step(&data, &idx, 1, step + 1).unwrap_or_else(|e| panic!("{name}: {e}"));
            close(&format!("loss of step {}", step + 1), a.0, b.0);
            assert_eq!(a.1, b.1, "{name}: correct count of step {}", step + 1);
        }
        let a = interp.evaluate(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = compiled.evaluate(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        close("validation loss", a.0, b.0);
        close("validation accuracy", a.1, b.1);
    }

    /// The loss the compiled step reports is the interpreter's for every kind of loss formula:
    /// constant (no instruction computes a number, so one that is an output gets a map of its
    /// own), of the parameters only, of the labels only, and of the logits.
    #[test]
    fn compiled_losses_match_the_interpreter_for_every_loss_formula() {
        let layers = "flatten\ndense 12 relu\ndense 10";
        for loss in [
            "3",
            "3 + 0*sum(logits)",
            "pi",
            "-2.5",
            "sum(labels)/8",
            "sum(dense_1_bias) + 1",
            "0.5*sum(dense_2_kernel^2)",
            "mean(logits)",
            "mean((logits - onehot(labels, 10))^2)",
            "-sum(logsoftmax(logits)*onehot(labels, 10))/8 + 3",
        ] {
            for optimizer in ["adam", "sgd lr=0.1", "sgd lr=0.1 momentum=0.9"] {
                engines_agree(
                    &format!("loss = {loss} ({optimizer})"),
                    &format!("{layers}\nloss = {loss}"),
                    optimizer,
                );
            }
        }
    }

    /// An activation that does not read its parameter gives its layer its value at every unit:
    /// both engines train such models alike, at any depth of the model.
    #[test]
    fn constant_activations_train_alike_on_both_engines() {
        let sce = "loss softmax_cross_entropy";
        for body in ["0*x", "3", "x - x", "x/x", "x^0", "pi"] {
            let def = format!("activation k(x) = {body}\nflatten");
            for rest in [
                format!("dense 12 k\ndense 10\n{sce}"),
                format!("dense 12 relu\ndense 10 k\n{sce}"),
                format!("dense 12\nk\ndropout 0.5\ndense 10\n{sce}"),
                "dense 12 k\nbatchnorm\ndense 10\nloss mse".to_string(),
            ] {
                for optimizer in ["adam", "sgd lr=0.1"] {
                    engines_agree(
                        &format!("{body}: {rest} ({optimizer})"),
                        &format!("{def}\n{rest}"),
                        optimizer,
                    );
                }
            }
        }
    }

    /// A deep model's step has more instructions than one driver function holds: it runs as a
    /// driver over parts, agrees with the interpreter, and a non-finite loss still stops it
    /// before any update (the guard sits in the last part).
    #[test]
    fn deep_models_run_as_a_driver_over_parts() {
        use crate::train::trainer::{Dataset, Trainer};
        let deep = format!("flatten\n{}dense 10", "dense 4 relu\n".repeat(600));
        let body = format!("{deep}\nloss softmax_cross_entropy");
        let step = compile_step(&model(&body, "adam"), 8, false).unwrap();
        let n = step.program.info.len();
        assert!(
            n > crate::jit::step::DRIVER_PART,
            "only {n} instructions: the test needs more than one part"
        );
        engines_agree("600 dense layers", &body, "adam");
        // log of a negative mean: NaN at the first step, on both engines.
        let spec = model(&format!("{deep}\nloss = log(mean(logits) - 100)"), "adam");
        let images = vec![1u8; 8 * 784];
        let labels = vec![3u32; 8];
        let data = Dataset::images(&images, &labels, vec![28, 28]);
        let mut t = Trainer::new(spec).unwrap();
        let before = t.params.clone();
        t.compile(false).unwrap();
        let r = t.train_step(&data, &(0..8).collect::<Vec<_>>(), 1, 1);
        assert!(r.is_err(), "a NaN loss trained: {r:?}");
        t.sync();
        assert!(t.params == before, "the step updated parameters after a NaN loss");
    }

    /// No kernel grows with the depth of a model: a chain of 3000 activations (one elementwise
    /// expression forward, one backward) is cut into kernels of bounded size, so compiling it
    /// costs in proportion to its length.
    #[test]
    fn kernels_stay_bounded_in_deep_models() {
        let longest = |layers: usize| {
            let body = format!("flatten\ndense 10\n{}loss softmax_cross_entropy", "tanh\n".repeat(layers));
            let step = compile_step(&model(&body, "sgd lr=0.1"), 8, true).unwrap();
            step.program.info.iter().map(|k| k.ir.lines().count()).max().unwrap_or(0)
        };
        let (short, long) = (longest(300), longest(3000));
        assert!(long <= 2 * short, "the longest kernel has {short} lines at 300 layers, {long} at 3000");
    }

    /// The memory a model file is checked for (`model::memory`) covers what the compiled
    /// step and inference allocate: their arenas fit in it, for every layer kind and optimizer.
    #[test]
    fn the_memory_check_covers_the_compiled_buffers() {
        for &(name, body, optimizer) in CASES {
            let spec = model(body, optimizer);
            for batch in [8, 100] {
                let built = build(&spec, batch, true).unwrap();
                let need = crate::model::memory::needed(&spec, &built);
                let train = compile_step(&spec, batch, false).unwrap_or_else(|e| panic!("{name}: {e}"));
                let infer = compile_inference(&spec, batch, false).unwrap_or_else(|e| panic!("{name}: {e}"));
                let arenas = 4 * (train.program.arena_len() + infer.program.arena_len()) as u64;
                assert!(
                    arenas <= need.total(),
                    "{name} at batch {batch}: arenas of {arenas} bytes, but the check counts {need:?}"
                );
            }
        }
    }

    #[test]
    fn mismatched_buffers_are_refused() {
        let spec = model("flatten\ndense 12 relu\ndense 10\nloss softmax_cross_entropy", "adam");
        let mut step = compile_step(&spec, 8, false).unwrap();
        let kernel = step.built.params[0].var;
        let before = step.program.slot(kernel).unwrap().to_vec();
        assert!(!write(&mut step.program, kernel, &ArrayD::ones(IxDyn(&[784, 11]))));
        assert!(!write(&mut step.program, kernel, &ArrayD::ones(IxDyn(&[5]))));
        assert_eq!(step.program.slot(kernel).unwrap(), &before[..], "a refused write changed the buffer");
        assert!(write(&mut step.program, kernel, &ArrayD::ones(IxDyn(&[784, 12]))));
    }

    #[test]
    fn compiled_nodes_agree_with_the_interpreter() {
        for &(name, body, optimizer) in CASES {
            let spec = model(body, optimizer);
            for host_adam in [false, true] {
                let mut step = compile_step_with(&spec, 8, false, false, host_adam)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                check_program(name, &mut step);
            }
        }
    }
}
