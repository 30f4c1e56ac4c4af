//! A gradient with loops: recovered classes compiled once each, the rest straight-line.
//!
//! Owns [`GradientCode`] (what `compile_gradient` returns underneath) and [`compile_gradient`],
//! which decides between one straight-line function (`lower.rs`) and a program of loops
//! (`loops.rs`) around straight-line phases.
//!
//! **The program.** `graph::structure::recover` finds sums `A_1 < A_2 < ... < A_r` (by id)
//! with classes among their terms. Write `σ_j` for the sum of `A_j`'s classes, so that
//! `A_j = σ_j + rest_j`. Each `σ_j` becomes a fresh variable, and the function is rebuilt
//! over them: `f*(x, σ)`; the externals `E_e` the classes read are rebuilt the same way
//! (`E*_e(x, σ_{<j})`, since an external of `A_j` may use an earlier sum, as the `log S` of a
//! softmax cross-entropy uses the sum `S`). Then, for values,
//!
//! 1. for `j = 1..r`: compute the externals of `A_j` (phase `pre_j`), run its loops: `σ_j`,
//!    and per member the template's partials, scattered into an accumulator `acc_j` (or
//!    straight into the gradient when `∂f/∂σ_j` is 1) and into the external adjoints;
//! 2. `main`: `f*`, `∂f*/∂x` and `∂f*/∂σ` (reverse mode on the rebuilt function);
//!
//! and, for the gradient, the chain rule backwards over the sums: for `j = r..1`, with
//! `σ̄_j = ∂f/∂σ_j` now complete (every later use of `σ_j` has been accounted for),
//! `x̄ += σ̄_j · acc_j`, and the externals' adjoints `η_e = σ̄_j · ∂σ_j/∂E_e` are pushed
//! through the externals by one more reverse-mode phase (`post_j`, the gradient of
//! `Σ_e η_e E*_e` with the `η` as inputs), into `x̄` and the `σ̄` of earlier sums.
//!
//! **Exactness.** Each member's value is computed as the interpreter computes the term (see
//! `loops.rs`); its partials are the reverse-mode partials of the term alone, scaled by
//! `σ̄_j` afterwards (not at all when `σ̄_j` is the literal 1). Sums over members are left
//! folds in member order, class after class, and the rebuilt function adds `σ_j` to its
//! sums where the original added the terms. So the value and every partial are the
//! interpreter's up to the order of additions across members: the error of a reordered sum,
//! at most about `(m - 1)·ε·Σ|terms|` for `m` terms.
//!
//! **When.** Only when there are classes (at least `MIN_MEMBERS` like terms) and they hold
//! at least half of the function's nodes; otherwise the gradient is one straight-line
//! function, exactly as before.

use hashbrown::HashMap;

use super::loops::{self, Array, ClassLoop, LoopFn, Loops, Source};
use super::lower::{CompileOptions, CompiledFunction, JitError, Stats, compile};
use crate::diff::reverse;
use crate::diff::sparsity::{self, Pattern};
use crate::graph::node::OverBudget;
use crate::graph::structure::{self, LoopSum, SlotKind, TArg};
use crate::graph::{Graph, Id};

/// Why a gradient could not be compiled.
#[derive(Debug)]
pub enum GradientError {
    Budget(OverBudget),
    Jit(JitError),
}

impl From<JitError> for GradientError {
    fn from(e: JitError) -> GradientError {
        GradientError::Jit(e)
    }
}

impl From<OverBudget> for GradientError {
    fn from(e: OverBudget) -> GradientError {
        GradientError::Budget(e)
    }
}

/// A compiled value-and-gradient.
pub enum GradientCode {
    /// One straight-line function, and its four-lane version for batches.
    Straight(Box<CompiledFunction>, Box<Batch>),
    /// Loops and phases.
    Looped(Box<Looped>),
}

impl GradientCode {
    /// Number of inputs (differentiated).
    pub fn inputs(&self) -> usize {
        match self {
            GradientCode::Straight(c, _) => c.groups()[1],
            GradientCode::Looped(l) => l.n,
        }
    }

    /// Number of parameters (read after the inputs, not differentiated).
    pub fn params(&self) -> usize {
        match self {
            GradientCode::Straight(c, _) => c.inputs() - c.groups()[1],
            GradientCode::Looped(l) => l.np,
        }
    }

    /// The value at `x` (the inputs, then the parameters), the gradient into `grad`; `None`
    /// (nothing written) on wrong lengths.
    pub fn call(&self, x: &[f64], grad: &mut [f64]) -> Option<f64> {
        match self {
            GradientCode::Straight(c, _) => {
                let mut value = [0.0];
                c.call2(x, &mut value, grad).then_some(value[0])
            }
            GradientCode::Looped(l) => l.call(x, grad),
        }
    }

    /// The value and gradient at as many points at once as the batch code has lanes (see
    /// [`batch_lanes`](Self::batch_lanes)): `x` holds the points' inputs (then parameters)
    /// interleaved (`x0 y0 z0 w0 x1 ...` for four), `values` receives one value per point and
    /// `grad` the gradients interleaved. `false` (nothing written) when there is no batch
    /// code (a program of loops, a function too large to keep a copy of, see [`Batch`]) or
    /// on wrong lengths.
    pub fn call_batch(&self, x: &[f64], values: &mut [f64], grad: &mut [f64]) -> bool {
        match self {
            GradientCode::Straight(_, batch) => batch.get().is_some_and(|c| c.call2(x, values, grad)),
            GradientCode::Looped(_) => false,
        }
    }

    /// The points per call of [`call_batch`](Self::call_batch) (compiling its code now if
    /// it has not been), or `None` when there is no batch code.
    pub fn batch_lanes(&self) -> Option<usize> {
        match self {
            GradientCode::Straight(_, batch) => batch.get().map(|c| c.lanes()),
            GradientCode::Looped(_) => None,
        }
    }

    pub fn stats(&self) -> &Stats {
        match self {
            GradientCode::Straight(c, _) => c.stats(),
            GradientCode::Looped(l) => &l.stats,
        }
    }

    pub fn ir(&self) -> Option<&str> {
        match self {
            GradientCode::Straight(c, _) => c.ir(),
            GradientCode::Looped(l) => l.ir.as_deref(),
        }
    }
}

/// The batch version of a straight-line program, a gradient's or a vector function's,
/// compiled the first time a batch asks for it: most programs are never evaluated in
/// batches, and compiling both versions up front would triple every compile time. Until then
/// it keeps an exact copy of the program's nodes ([`Graph::extract`]), so every lane
/// computes bit for bit what the one-lane code computes. Only programs of at most
/// [`BATCH_OPS`] operations keep one: beyond, the copy would cost memory in proportion to a
/// function whose batches are split across cores anyway.
///
/// **Four lanes or two.** Four points per call (two pairs, one host call for all four, see
/// `lower.rs`) where the one-lane code is at most [`FOUR_LANE_BYTES`] long; two beyond.
/// Four-lane code is about twice as long as two-lane code, and a long straight-line program
/// is paced by fetching its code: at 10⁴ operations (2 MB of one-lane code) four lanes ran
/// no faster per point than one, two lanes 1.5 times as fast.
pub struct Batch {
    code: std::sync::OnceLock<Option<CompiledFunction>>,
    source: std::sync::Mutex<Option<BatchSource>>,
    lanes: usize,
}

/// The longest one-lane code (in bytes, `Stats::code_bytes`) whose batch version has four
/// lanes (see [`Batch`]).
pub const FOUR_LANE_BYTES: usize = 256 * 1024;

/// The copy a [`Batch`] compiles from: its graph, the inputs (then parameters), the
/// outputs, and where the second output group starts (the gradient after the value; 0 for
/// one group).
type BatchSource = (Graph, Vec<Id>, Vec<Id>, usize);

/// The most operations a straight-line program may have to keep a four-lane version.
pub const BATCH_OPS: usize = 200_000;

impl Batch {
    /// Keeps what the batch version of the program `groups` (one or two output groups)
    /// over `read`, compiled one lane at a time as `one`, needs, if the program has at most
    /// [`BATCH_OPS`] operations.
    fn keep(g: &Graph, read: &[Id], groups: &[&[Id]], one: &Stats) -> Batch {
        let source = (one.ops <= BATCH_OPS).then(|| {
            let roots: Vec<Id> = read.iter().chain(groups.iter().flat_map(|o| o.iter())).copied().collect();
            let (copy, ids) = g.extract(&roots);
            let outs = ids[read.len()..].to_vec();
            let split = if groups.len() > 1 { groups[0].len() } else { 0 };
            (copy, ids[..read.len()].to_vec(), outs, split)
        });
        let lanes = if one.code_bytes <= FOUR_LANE_BYTES { 4 } else { 2 };
        Batch { code: std::sync::OnceLock::new(), source: std::sync::Mutex::new(source), lanes }
    }

    /// The batch code, compiled on first use (`None` if there is no copy to compile, or
    /// compiling failed: then batches run one point at a time).
    fn get(&self) -> Option<&CompiledFunction> {
        self.code
            .get_or_init(|| {
                let (g, read, outs, split) = self.source.lock().unwrap_or_else(|p| p.into_inner()).take()?;
                let groups: Vec<&[Id]> =
                    if split == 0 { vec![&outs] } else { vec![&outs[..split], &outs[split..]] };
                super::lower::compile_lanes(&g, &read, &groups, &CompileOptions::default(), self.lanes).ok()
            })
            .as_ref()
    }
}

/// One recovered sum at run time.
struct SumCode {
    /// Computes this sum's externals into `ext[ext_start..ext_start + ext_len]`.
    pre: Option<CompiledFunction>,
    ext_start: usize,
    ext_len: usize,
    /// Entry points of its classes' loops.
    loops: Vec<usize>,
    /// The loops scatter straight into the gradient (`∂f/∂σ_j` is the literal 1).
    direct: bool,
    /// Pushes the externals' adjoints back: outputs are `x̄` entries (`post_x`), then `σ̄`
    /// entries of earlier sums (`post_sigma`).
    post: Option<(CompiledFunction, Vec<u32>, Vec<u32>)>,
}

/// The program (see the module doc).
pub struct Looped {
    n: usize,
    /// Parameters, read after the inputs and not differentiated.
    np: usize,
    /// A loop scatters partials past the inputs (a slot reading inputs for some members and
    /// parameters for others): the gradient then needs room for the parameters too.
    scatters_params: bool,
    sums: Vec<SumCode>,
    /// `None` when `f*` is one `σ_j` (a sum and nothing else): the value is that sum.
    main: Option<CompiledFunction>,
    /// A phase reads the inputs: they are copied into the phases' input array.
    phases_read_x: bool,
    /// The inputs whose `∂f*/∂x` is not identically zero, in `main`'s second group.
    main_nz: Vec<u32>,
    ext_total: usize,
    /// Sums whose loops scatter into an accumulator of their own (not `direct`).
    indirect: usize,
    /// Scratch a call needs (see `call`).
    work: usize,
    code: Loops,
    stats: Stats,
    ir: Option<String>,
}

// SAFETY: as for `CompiledFunction`: finalized code reading only its arguments, and tables
// that are never written after compiling.
unsafe impl Send for Looped {}
unsafe impl Sync for Looped {}

thread_local! {
    static WORK: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Looped {
    /// `x` holds the inputs and then the parameters; `grad` the inputs' partials.
    fn call(&self, x: &[f64], out: &mut [f64]) -> Option<f64> {
        let (n, r, e) = (self.n, self.sums.len(), self.ext_total);
        let full = n + self.np;
        if x.len() != full || out.len() != n {
            return None;
        }
        let (indirect, main_out) = (self.indirect, self.main_nz.len() + r);
        WORK.with(|w| {
            let mut w = w.borrow_mut();
            // inputs [x, p, σ, η] | ext | ext_adj | acc per indirect sum | main out | σ̄ |
            // post out | gradient with room for the parameters' partials
            if w.len() < self.work {
                w.resize(self.work, 0.0);
            }
            let (inputs, tail) = w.split_at_mut(full + r + e);
            let (ext, tail) = tail.split_at_mut(e);
            let (ext_adj, tail) = tail.split_at_mut(e);
            let (accs, tail) = tail.split_at_mut(indirect * full);
            let (main, tail) = tail.split_at_mut(main_out);
            let (sbar, tail) = tail.split_at_mut(r);
            let post_len = tail.len() - full;
            let (post, room) = tail.split_at_mut(post_len);
            // Loops scatter parameters' partials (of slots that also read inputs) past `n`.
            let grad: &mut [f64] = if self.scatters_params { &mut *room } else { &mut *out };
            if self.phases_read_x {
                inputs[..full].copy_from_slice(x);
            }
            inputs[full..].fill(0.0);
            ext_adj.fill(0.0);
            accs.fill(0.0);
            grad.fill(0.0);
            let mut acc_of = Vec::with_capacity(r);
            let mut next_acc = 0;
            for (j, s) in self.sums.iter().enumerate() {
                if let Some(pre) = &s.pre {
                    pre.call1(inputs, &mut ext[s.ext_start..s.ext_start + s.ext_len]);
                }
                let target: *mut f64 = if s.direct {
                    acc_of.push(usize::MAX);
                    grad.as_mut_ptr()
                } else {
                    acc_of.push(next_acc);
                    next_acc += 1;
                    accs[(next_acc - 1) * full..].as_mut_ptr()
                };
                let mut sum = 0.0f64;
                for &l in &s.loops {
                    // SAFETY: every loop was compiled for this signature; it reads inputs at
                    // indices below `n + np` (checked when its index rules were made),
                    // externals below `ext_total`, and writes partials of `target` and
                    // `ext_adj` at those indices: `target` is `n + np` long (`n` when no
                    // loop writes past the inputs, `scatters_params`), `ext_adj`
                    // `ext_total`.
                    unsafe {
                        let f: LoopFn = std::mem::transmute::<*const u8, LoopFn>(self.code.entries[l]);
                        f(x.as_ptr(), target, ext.as_ptr(), ext_adj.as_mut_ptr(), &mut sum);
                    }
                }
                inputs[full + j] = sum;
            }
            let mut value = [0.0];
            match &self.main {
                Some(code) => {
                    code.call2(inputs, &mut value, main);
                    for (k, &i) in self.main_nz.iter().enumerate() {
                        grad[i as usize] += main[k];
                    }
                    sbar.copy_from_slice(&main[self.main_nz.len()..]);
                }
                None => {
                    // f* = σ_j: its only partial is ∂f*/∂σ_j = 1.
                    let j = self.sums.len() - 1;
                    value[0] = inputs[full + j];
                    sbar.fill(0.0);
                    sbar[j] = 1.0;
                }
            }
            for (j, s) in self.sums.iter().enumerate().rev() {
                let sb = sbar[j];
                if !s.direct {
                    let acc = &accs[acc_of[j] * full..acc_of[j] * full + n];
                    for (g, a) in grad.iter_mut().zip(acc) {
                        *g += sb * a;
                    }
                }
                if let Some((code, xs, sigmas)) = &s.post {
                    for k in s.ext_start..s.ext_start + s.ext_len {
                        inputs[full + r + k] = if s.direct { ext_adj[k] } else { sb * ext_adj[k] };
                    }
                    let out = &mut post[..xs.len() + sigmas.len()];
                    code.call1(inputs, out);
                    for (k, &i) in xs.iter().enumerate() {
                        grad[i as usize] += out[k];
                    }
                    for (k, &i) in sigmas.iter().enumerate() {
                        sbar[i as usize] += out[xs.len() + k];
                    }
                }
            }
            if self.scatters_params {
                out.copy_from_slice(&room[..n]);
            }
            Some(value[0])
        })
    }
}

/// Compiles `f`'s value and gradient with respect to `inputs` (variable nodes), reading
/// `params` too (variables passed at call time, after the inputs, and not differentiated):
/// with loops when `f` has classes, else one straight-line function. The graph is left as
/// it was.
pub fn compile_gradient(
    g: &mut Graph,
    f: Id,
    inputs: &[Id],
    params: &[Id],
    opts: &CompileOptions,
) -> Result<GradientCode, GradientError> {
    let (found, operations) = structure::recover(g, &[f]);
    let read: Vec<Id> = inputs.iter().chain(params).copied().collect();
    if !worth_loops(&found, operations) {
        let grad = reverse::try_gradient(g, f, inputs)?;
        let code = compile(g, &read, &[&[f], &grad], opts)?;
        let batch = Batch::keep(g, &read, &[&[f], &grad], code.stats());
        return Ok(GradientCode::Straight(Box::new(code), Box::new(batch)));
    }
    let mark = g.mark();
    let r = build(g, f, inputs, params, &found, opts);
    g.rollback(mark);
    r.map(|l| GradientCode::Looped(Box::new(l)))
}

/// Loops pay when the classes hold most of the function: at least half of its operation
/// nodes (leaves not counted) are in members. A few like terms in a large irregular function (a nested derivative has some)
/// would only add phases around them.
/// `operations`: the function's operation nodes ([`structure::recover`]).
fn worth_loops(found: &[LoopSum], operations: usize) -> bool {
    let looped: usize =
        found.iter().flat_map(|l| &l.classes).map(|c| c.members.len() * c.template.len()).sum();
    looped > 0 && 2 * looped >= operations
}

fn build(
    g: &mut Graph,
    f: Id,
    inputs: &[Id],
    params: &[Id],
    found: &[LoopSum],
    opts: &CompileOptions,
) -> Result<Looped, GradientError> {
    let start = std::time::Instant::now();
    let n = inputs.len();
    let np = params.len();
    // Every phase and loop reads the inputs and then the parameters; only the inputs are
    // differentiated (a loop's partials of a slot that reads only parameters are not
    // computed; one that reads both scatters into a gradient buffer with room for them).
    let read: Vec<Id> = inputs.iter().chain(params).copied().collect();
    let r = found.len();
    let sigma: Vec<Id> = (0..r).map(|j| g.var(&format!("#sum{j}"))).collect();
    // The externals, numbered in order of first use, sum by sum. An external that two sums
    // read has an entry in each sum's range: its adjoint from sum j is scaled by σ̄_j alone
    // (`post_j`), and two sums' σ̄ differ (`u*Σ... + v*Σ...`).
    let mut ext_index: Vec<HashMap<Id, u32>> = Vec::new();
    let mut ext_nodes: Vec<Id> = Vec::new();
    let mut ext_ranges = Vec::new();
    for l in found {
        let first = ext_nodes.len();
        let mut index = HashMap::new();
        for c in &l.classes {
            for s in c.slots.iter().filter(|s| s.kind == SlotKind::External) {
                for &e in &s.column {
                    index.entry(e).or_insert_with(|| {
                        ext_nodes.push(e);
                        (ext_nodes.len() - 1) as u32
                    });
                }
            }
        }
        ext_index.push(index);
        ext_ranges.push((first, ext_nodes.len() - first));
    }
    let eta: Vec<Id> = (0..ext_nodes.len()).map(|k| g.var(&format!("#adj{k}"))).collect();
    let w: Vec<Id> = read.iter().chain(&sigma).chain(&eta).copied().collect();
    // Rebuild the function and the externals over the σ.
    let mut roots = vec![f];
    roots.extend_from_slice(&ext_nodes);
    let image = rebuild(g, &roots, found, &sigma)?;
    let fstar = image[&f];
    // main: f*, ∂f*/∂x (the entries not identically zero), ∂f*/∂σ.
    let wrt: Vec<Id> = inputs.iter().chain(&sigma).copied().collect();
    let grad = reverse::try_gradient(g, fstar, &wrt)?;
    let main_nz: Vec<u32> = (0..n).filter(|&i| !g.is_num(grad[i], 0.0)).map(|i| i as u32).collect();
    let mut out: Vec<Id> = main_nz.iter().map(|&i| grad[i as usize]).collect();
    out.extend_from_slice(&grad[n..]);
    let mut straight = 0;
    // Whether a phase reads an input (a variable other than the σ and η).
    let internal: hashbrown::HashSet<Id> = sigma.iter().chain(&eta).copied().collect();
    let reads_x = |g: &Graph, v: Id| matches!(g.op(v), crate::graph::Op::Var(_)) && !internal.contains(&v);
    let mut read_x = g.reachable(&out).iter().chain(&[fstar]).any(|v| reads_x(g, *v));
    let main = if fstar == sigma[r - 1] && main_nz.is_empty() {
        None
    } else {
        let code = compile(g, &w, &[&[fstar], &out], &CompileOptions::default())?;
        straight += code.stats().nodes;
        read_x |= g.reachable(&[fstar]).iter().any(|v| reads_x(g, *v));
        Some(code)
    };
    // Per sum: pre and post phases.
    let mut sums = Vec::new();
    let mut feeds_later = vec![false; r]; // σ_j is read by a later sum's externals
    for j in 0..r {
        let (first, len) = ext_ranges[j];
        let ext: Vec<Id> = ext_nodes[first..first + len].iter().map(|e| image[e]).collect();
        let (pre, post) = if ext.is_empty() {
            (None, None)
        } else {
            let pre = compile(g, &w, &[&ext], &CompileOptions::default())?;
            straight += pre.stats().nodes;
            read_x |= g.reachable(&ext).iter().any(|v| reads_x(g, *v));
            let terms: Vec<Id> =
                ext.iter().zip(&eta[first..first + len]).map(|(&e, &h)| g.mul(&[h, e])).collect();
            let y = g.add(&terms);
            let wrt: Vec<Id> = inputs.iter().chain(&sigma[..j]).copied().collect();
            let d = reverse::try_gradient(g, y, &wrt)?;
            let xs: Vec<u32> = (0..n).filter(|&i| !g.is_num(d[i], 0.0)).map(|i| i as u32).collect();
            let ss: Vec<u32> = (0..j).filter(|&i| !g.is_num(d[n + i], 0.0)).map(|i| i as u32).collect();
            for &i in &ss {
                feeds_later[i as usize] = true;
            }
            let outs: Vec<Id> =
                xs.iter().map(|&i| d[i as usize]).chain(ss.iter().map(|&i| d[n + i as usize])).collect();
            let post = if outs.is_empty() {
                None
            } else {
                let code = compile(g, &w, &[&outs], &CompileOptions::default())?;
                straight += code.stats().nodes;
                read_x |= g.reachable(&outs).iter().any(|v| reads_x(g, *v));
                Some((code, xs, ss))
            };
            (Some(pre), post)
        };
        sums.push(SumCode { pre, ext_start: first, ext_len: len, loops: Vec::new(), direct: false, post });
    }
    for (j, s) in sums.iter_mut().enumerate() {
        s.direct = g.is_num(grad[n + j], 1.0) && !feeds_later[j];
    }
    // The classes' loops: the classes of one sum with equal numbers of members share one.
    let input_of: HashMap<Id, u32> = read.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
    let mut class_loops: Vec<Vec<ClassLoop>> = Vec::new();
    let mut class_stats = Vec::new();
    let mut scatters_params = false;
    for (j, l) in found.iter().enumerate() {
        let mut by_members: Vec<(usize, usize)> = Vec::new(); // (members, loop)
        for c in &l.classes {
            let mut cl = template(g, c, &input_of, &ext_index[j], None)?;
            // No partials for a slot that reads parameters only; a slot that reads both
            // scatters past the inputs.
            let (m, n) = (c.members.len(), n as i64);
            cl.partials.retain(|&(s, _)| cl.sources[s].input_span(m).is_none_or(|(lo, _)| lo < n));
            scatters_params |=
                cl.partials.iter().any(|&(s, _)| cl.sources[s].input_span(m).is_some_and(|(_, hi)| hi >= n));
            class_stats.push(class_stats_of(c));
            match by_members.iter().find(|(m, _)| *m == c.members.len()) {
                Some(&(_, k)) => class_loops[k].push(cl),
                None => {
                    by_members.push((c.members.len(), class_loops.len()));
                    sums[j].loops.push(class_loops.len());
                    class_loops.push(vec![cl]);
                }
            }
        }
    }
    // Operations: the straight-line phases', and each template's (value and partials) once
    // per member; the function's own, on the original graph, for the ratio.
    let mut ops = main.as_ref().map_or(0, |m| m.stats().ops)
        + sums.iter().map(|s| s.pre.as_ref().map_or(0, |p| p.stats().ops)).sum::<usize>()
        + sums.iter().map(|s| s.post.as_ref().map_or(0, |p| p.0.stats().ops)).sum::<usize>();
    for grp in &class_loops {
        for l in grp {
            let roots: Vec<Id> = std::iter::once(l.value).chain(l.partials.iter().map(|p| p.1)).collect();
            ops += l.members * l.graph.ops_of(&roots);
        }
    }
    let value_ops = g.ops_of(&[f]);
    let code = loops::compile(&mut class_loops, opts.keep_ir)?;
    let looped_nodes = class_stats.iter().map(|c| c.members * c.template_nodes).sum();
    let main_stats = main.as_ref().map(|m| m.stats());
    let stats = Stats {
        nodes: straight,
        ops,
        value_ops,
        chunks: code.entries.len() + main_stats.map_or(0, |s| s.chunks),
        spilled: main_stats.map_or(0, |s| s.spilled),
        code_bytes: code.bytes + main_stats.map_or(0, |s| s.code_bytes),
        compile_time: start.elapsed(),
        allocator: main_stats.map_or("backtracking", |s| s.allocator),
        classes: class_stats,
        looped_nodes,
    };
    let ir = opts.keep_ir.then(|| code.ir.clone());
    let (r, e) = (sums.len(), ext_nodes.len());
    let indirect = sums.iter().filter(|s| !s.direct).count();
    let post = sums.iter().map(|s| s.post.as_ref().map_or(0, |p| p.1.len() + p.2.len())).max().unwrap_or(0);
    let full = n + np;
    let work = (full + r + e) + 2 * e + indirect * full + (main_nz.len() + r) + r + post + full;
    Ok(Looped {
        n,
        np,
        scatters_params,
        sums,
        main,
        phases_read_x: read_x,
        main_nz,
        ext_total: e,
        indirect,
        work,
        code,
        stats,
        ir,
    })
}

/// `roots` rebuilt with every recovered sum `A_j` replaced by `σ_j + rest_j`: a depth-first
/// walk that enters a recovered sum only through its rest (its classes' members are never
/// needed again), then a rebuild in post-order.
fn rebuild(
    g: &mut Graph,
    roots: &[Id],
    found: &[LoopSum],
    sigma: &[Id],
) -> Result<HashMap<Id, Id>, OverBudget> {
    let which: HashMap<Id, usize> = found.iter().enumerate().map(|(j, l)| (l.sum, j)).collect();
    let children = |g: &Graph, id: Id| -> Vec<Id> {
        match which.get(&id) {
            Some(&j) => found[j].rest.clone(),
            None => g.args(id).to_vec(),
        }
    };
    let mut order = Vec::new();
    let mut seen: hashbrown::HashSet<Id> = hashbrown::HashSet::new();
    let mut stack: Vec<(Id, Vec<Id>, usize)> = Vec::new();
    for &root in roots {
        if !seen.insert(root) {
            continue;
        }
        stack.push((root, children(g, root), 0));
        while let Some((id, kids, next)) = stack.last_mut() {
            if *next < kids.len() {
                let a = kids[*next];
                *next += 1;
                if seen.insert(a) {
                    let k = children(g, a);
                    stack.push((a, k, 0));
                }
                continue;
            }
            order.push(*id);
            stack.pop();
        }
    }
    let mut new: HashMap<Id, Id> = HashMap::with_capacity(order.len());
    let mut args = Vec::new();
    for id in order {
        let image = if let Some(&j) = which.get(&id) {
            args.clear();
            args.push(sigma[j]);
            args.extend(found[j].rest.iter().map(|a| new[a]));
            g.add(&args)
        } else {
            crate::graph::lower::rebuild_over(g, id, &new, &mut args)
        };
        new.insert(id, image);
        g.check_budget()?;
    }
    Ok(new)
}

/// The template graph of class `c` and where its slots live.
fn template(
    g: &Graph,
    c: &structure::Class,
    input_of: &HashMap<Id, u32>,
    ext_index: &HashMap<Id, u32>,
    hessian_width: Option<usize>,
) -> Result<ClassLoop, GradientError> {
    let mut tg = Graph::new();
    let mut slot_vars = Vec::new();
    let mut slot_nodes = Vec::new();
    let mut sources = Vec::new();
    for (s, slot) in c.slots.iter().enumerate() {
        match slot.kind {
            SlotKind::Num if slot.uniform() => {
                let v = g.as_num(slot.column[0]).expect("a number slot holds numbers");
                slot_nodes.push(tg.num(v));
                slot_vars.push(None);
                sources.push(Source::Numbers(Vec::new()));
            }
            kind => {
                let v = tg.var(&format!("p{s}"));
                slot_nodes.push(v);
                slot_vars.push(Some(v));
                sources.push(match kind {
                    SlotKind::Num => Source::Numbers(
                        slot.column
                            .iter()
                            .map(|&x| g.as_num(x).expect("a number slot holds numbers"))
                            .collect(),
                    ),
                    SlotKind::Var => {
                        let mut idx = Vec::with_capacity(slot.column.len());
                        for v in &slot.column {
                            idx.push(*input_of.get(v).ok_or_else(|| {
                                JitError::NotAnInput(g.var_name(*v).unwrap_or("?").to_owned())
                            })?);
                        }
                        Source::of_indices(Array::Inputs, &idx)
                    }
                    SlotKind::External => {
                        let idx: Vec<u32> = slot.column.iter().map(|e| ext_index[e]).collect();
                        Source::of_indices(Array::External, &idx)
                    }
                });
            }
        }
    }
    let mut nodes: Vec<Id> = Vec::with_capacity(c.template.len());
    for t in &c.template {
        let args: Vec<Id> = t
            .args
            .iter()
            .map(|a| match *a {
                TArg::Node(k) => nodes[k as usize],
                TArg::Slot(s) => slot_nodes[s as usize],
                TArg::Exponent(e) => tg.num(e),
                TArg::Constant(k) => tg.constant(k),
            })
            .collect();
        // As it is (not re-simplified): the member's own operations, in its order.
        nodes.push(tg.intern(t.op, &args));
    }
    let value = *nodes.last().expect("a template has nodes");
    let wrt: Vec<(usize, Id)> = slot_vars.iter().enumerate().filter_map(|(s, v)| v.map(|v| (s, v))).collect();
    let diff_slots: Vec<(usize, Id)> =
        wrt.into_iter().filter(|(s, _)| c.slots[*s].kind != SlotKind::Num).collect();
    let vars: Vec<Id> = diff_slots.iter().map(|p| p.1).collect();
    let (mut partials, mut pairs) = (Vec::new(), Vec::new());
    match hessian_width {
        None => {
            let d = reverse::gradient(&mut tg, value, &vars);
            partials = diff_slots
                .iter()
                .zip(d)
                .filter(|(_, d)| !tg.is_num(*d, 0.0))
                .map(|((s, _), d)| (*s, d))
                .collect();
        }
        Some(_) => {
            let h = reverse::try_hessian(&mut tg, value, &vars)?;
            for (a, row) in h.iter().enumerate() {
                for (b, &d) in row.iter().enumerate() {
                    if !tg.is_num(d, 0.0) {
                        pairs.push((diff_slots[a].0, diff_slots[b].0, d));
                    }
                }
            }
        }
    }
    let width = hessian_width.unwrap_or(0);
    Ok(ClassLoop {
        graph: tg,
        value,
        partials,
        pairs,
        width,
        pair_at: Vec::new(),
        value_at: Vec::new(),
        slot_vars,
        sources,
        members: c.members.len(),
    })
}

/// Runs every loop of `code`, which reads no externals, on `x`, writing into `out`; returns
/// the sum of the members' values.
///
/// # Safety
/// `x` has the length the loops were compiled for, and `out` is valid for every position
/// their tables and index rules write (null when they write nothing: no partials, no
/// outputs).
unsafe fn run_loops(code: &Loops, x: &[f64], out: *mut f64) -> f64 {
    let mut sum = 0.0f64;
    for &entry in &code.entries {
        // SAFETY: the caller's contract; every entry has the `LoopFn` signature.
        unsafe {
            let f: LoopFn = std::mem::transmute::<*const u8, LoopFn>(entry);
            f(x.as_ptr(), out, std::ptr::null(), std::ptr::null_mut(), &mut sum);
        }
    }
    sum
}

/// What a class compiles as, for [`Stats::classes`].
fn class_stats_of(c: &structure::Class) -> super::lower::ClassStats {
    super::lower::ClassStats {
        members: c.members.len(),
        template_nodes: c.template.len(),
        slots: c.slots.len(),
    }
}

/// `cl` into the group of loops whose classes have its number of members (one loop runs
/// member `k` of each in iteration `k`), or a new group.
fn push_grouped(groups: &mut Vec<Vec<ClassLoop>>, cl: ClassLoop) {
    match groups.iter_mut().find(|grp| grp[0].members == cl.members) {
        Some(grp) => grp.push(cl),
        None => groups.push(vec![cl]),
    }
}

/// Runs `code` on `x` and writes (or, with `add`, adds) its outputs to the entries `at` of
/// `out`, through the thread's scratch.
fn scatter_rest(code: &CompiledFunction, at: &[u32], x: &[f64], out: &mut [f64], add: bool) {
    scatter(&WORK, at, out, add, |w| {
        code.call1(x, w);
    });
}

thread_local! {
    /// The scratch of [`Entries`], whose computed entries may themselves be code that uses
    /// [`WORK`] (a vector function with loops and a rest).
    static ENTRY_WORK: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `compute` into the scratch `work`, then its values written (or added) to the entries
/// `at` of `out`. `compute` must not use `work` itself.
fn scatter(
    work: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f64>>>,
    at: &[u32],
    out: &mut [f64],
    add: bool,
    compute: impl FnOnce(&mut [f64]),
) {
    work.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() < at.len() {
            w.resize(at.len(), 0.0);
        }
        compute(&mut w[..at.len()]);
        for (k, &i) in at.iter().enumerate() {
            if add {
                out[i as usize] += w[k];
            } else {
                out[i as usize] = w[k];
            }
        }
    });
}

/// The statistics of loops plus one straight-line rest, `ops` operations in all.
fn loop_stats(
    start: std::time::Instant,
    code: &Loops,
    rest: Option<&CompiledFunction>,
    ops: usize,
    classes: Vec<super::lower::ClassStats>,
) -> Stats {
    let looped_nodes = classes.iter().map(|c| c.members * c.template_nodes).sum();
    Stats {
        nodes: rest.map_or(0, |r| r.stats().nodes),
        ops,
        value_ops: ops,
        chunks: code.entries.len() + rest.map_or(0, |r| r.stats().chunks),
        spilled: rest.map_or(0, |r| r.stats().spilled),
        code_bytes: code.bytes + rest.map_or(0, |r| r.stats().code_bytes),
        compile_time: start.elapsed(),
        allocator: "backtracking",
        classes,
        looped_nodes,
    }
}

/// A compiled vector function: one straight-line function; loops over classes with a
/// straight-line rest (a Hessian assembled from its terms, or classes of like outputs);
/// entries copied from a template of numbers around computed ones; or a large sum's value.
pub enum VectorCode {
    /// One straight-line function, and its four-lane version for batches.
    Straight(Box<CompiledFunction>, Box<Batch>),
    Looped(Box<LoopedEntries>),
    Entries(Box<Entries>),
    Sum(Box<LoopedSum>),
}

/// A scalar function that is a large sum with classes of like terms: its value as loops
/// over the classes plus the rest of the sum straight-line (the value half of
/// [`compile_gradient`]'s program, for [`compile_vector`] with one output).
pub struct LoopedSum {
    n: usize,
    code: Loops,
    rest: Option<CompiledFunction>,
    stats: Stats,
}

// SAFETY: as for `Looped`.
unsafe impl Send for LoopedSum {}
unsafe impl Sync for LoopedSum {}

impl LoopedSum {
    fn call1(&self, x: &[f64], out: &mut [f64]) -> bool {
        if x.len() != self.n || out.len() != 1 {
            return false;
        }
        // SAFETY: the loops were compiled without externals for `x`'s length (checked
        // above); their classes have no partials and no output tables, so they write nothing.
        let sum = unsafe { run_loops(&self.code, x, std::ptr::null_mut()) };
        let mut rest = [0.0];
        if let Some(code) = &self.rest {
            code.call1(x, &mut rest);
        }
        out[0] = sum + rest[0];
        true
    }
}

/// `f` as a [`LoopedSum`] when it is one large sum with classes that read no shared
/// subexpression and hold most of it; `None` otherwise.
fn sum_code(g: &mut Graph, f: Id, inputs: &[Id]) -> Result<Option<VectorCode>, GradientError> {
    let (found, operations) = structure::recover(g, &[f]);
    let simple = worth_loops(&found, operations)
        && found.len() == 1
        && found[0].sum == f
        && found[0].classes.iter().all(|c| c.slots.iter().all(|s| s.kind != SlotKind::External));
    if !simple {
        return Ok(None);
    }
    let start = std::time::Instant::now();
    let mark = g.mark();
    let r = (|| {
        let l = &found[0];
        let input_of: HashMap<Id, u32> = inputs.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        let mut groups: Vec<Vec<ClassLoop>> = Vec::new();
        let mut class_stats = Vec::new();
        for c in &l.classes {
            let mut cl = template(g, c, &input_of, &HashMap::new(), None)?;
            cl.partials.clear();
            class_stats.push(class_stats_of(c));
            push_grouped(&mut groups, cl);
        }
        let rest = if l.rest.is_empty() {
            None
        } else {
            let r = g.add(&l.rest);
            Some(compile(g, inputs, &[&[r]], &CompileOptions::default())?)
        };
        let mut ops = rest.as_ref().map_or(0, |r| r.stats().ops);
        for grp in &groups {
            for l in grp {
                ops += l.members * l.graph.ops_of(&[l.value]);
            }
        }
        let code = loops::compile(&mut groups, false)?;
        let stats = loop_stats(start, &code, rest.as_ref(), ops, class_stats);
        Ok(LoopedSum { n: inputs.len(), code, rest, stats })
    })();
    g.rollback(mark);
    r.map(|l| Some(VectorCode::Sum(Box::new(l))))
}

/// Outputs written by loops over classes and by a straight-line rest at the positions it
/// lists. Two kinds:
///
/// * **assembled** (a Hessian of `Σ classes + rest`): every member's template Hessian is
///   added into the matrix (element assembly), then the rest's entries that are not
///   identically zero are added; the output starts at zero;
/// * **stored** (a vector function with classes of like outputs, such as the entries of a
///   banded system's Jacobian): each member's value is stored at its output, and the rest
///   stores the others. Every output is computed as in straight-line code, so the results
///   are the same to the bit.
pub struct LoopedEntries {
    n: usize,
    /// Entries written: `n * n` for a dense Hessian, the sparse pattern's, or the outputs.
    outputs: usize,
    code: Loops,
    rest: Option<(CompiledFunction, Vec<u32>)>,
    assembled: bool,
    stats: Stats,
}

// SAFETY: as for `Looped`.
unsafe impl Send for LoopedEntries {}
unsafe impl Sync for LoopedEntries {}

impl LoopedEntries {
    /// The entries at `x` into `out`; `false` (nothing written) on wrong lengths.
    fn call1(&self, x: &[f64], out: &mut [f64]) -> bool {
        if x.len() != self.n || out.len() != self.outputs {
            return false;
        }
        if self.assembled {
            out.fill(0.0);
        }
        // SAFETY: the loops were compiled without externals for `x`'s length (checked
        // above) and write only at their tables' positions, all inside `out`.
        unsafe { run_loops(&self.code, x, out.as_mut_ptr()) };
        if let Some((code, idx)) = &self.rest {
            scatter_rest(code, idx, x, out, self.assembled);
        }
        true
    }
}

/// Compiles the vector function `outs` of `inputs`: with loops over classes of like
/// outputs when they hold at least half of its nodes (classes that read a shared
/// subexpression stay straight-line), else one straight-line function.
pub fn compile_vector(g: &mut Graph, outs: &[Id], inputs: &[Id]) -> Result<VectorCode, GradientError> {
    let straight =
        |g: &mut Graph| -> Result<VectorCode, GradientError> { VectorCode::straight(g, inputs, outs) };
    if let [f] = outs
        && let Some(code) = sum_code(g, *f, inputs)?
    {
        return Ok(code);
    }
    if outs.len() < structure::MIN_MEMBERS {
        return straight(g);
    }
    let start = std::time::Instant::now();
    let mark = g.mark();
    // The outputs as the terms of one sum, not simplified: its classes are classes of
    // outputs, one output per member.
    let all = g.intern(crate::graph::Op::Add, outs);
    let found = structure::recover_grouped(g, &[all], 1);
    let Some(l) = found.into_iter().find(|l| l.sum == all) else {
        g.rollback(mark);
        return straight(g);
    };
    let simple: Vec<&structure::Class> =
        l.classes.iter().filter(|c| c.slots.iter().all(|s| s.kind != SlotKind::External)).collect();
    let looped: usize = simple.iter().map(|c| c.members.len() * c.template.len()).sum();
    let nodes = g.reachable(outs).iter().filter(|&&id| !g.args(id).is_empty()).count();
    if 2 * looped < nodes {
        g.rollback(mark);
        return straight(g);
    }
    let r = (|| {
        let mut position: HashMap<Id, u32> = HashMap::new();
        for (k, &o) in outs.iter().enumerate() {
            position.entry(o).or_insert(k as u32);
        }
        let input_of: HashMap<Id, u32> = inputs.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        let mut in_loops = vec![false; outs.len()];
        let mut groups: Vec<Vec<ClassLoop>> = Vec::new();
        let mut class_stats = Vec::new();
        for c in &simple {
            let mut cl = template(g, c, &input_of, &HashMap::new(), None)?;
            cl.partials.clear();
            cl.value_at = c.members.iter().map(|m| position[&m[0]]).collect();
            for &k in &cl.value_at {
                in_loops[k as usize] = true;
            }
            class_stats.push(class_stats_of(c));
            push_grouped(&mut groups, cl);
        }
        // Every output not stored by a loop (a repeated output node is stored by the loop
        // once and by the rest at its other positions).
        let idx: Vec<u32> = (0..outs.len() as u32).filter(|&k| !in_loops[k as usize]).collect();
        let rest_nodes: Vec<Id> = idx.iter().map(|&k| outs[k as usize]).collect();
        let rest = if rest_nodes.is_empty() {
            None
        } else {
            Some((compile(g, inputs, &[&rest_nodes], &CompileOptions::default())?, idx))
        };
        let mut ops = rest.as_ref().map_or(0, |r| r.0.stats().ops);
        for grp in &groups {
            for l in grp {
                ops += l.members * l.graph.ops_of(&[l.value]);
            }
        }
        let code = loops::compile(&mut groups, false)?;
        let stats = loop_stats(start, &code, rest.as_ref().map(|r| &r.0), ops, class_stats);
        Ok(LoopedEntries { n: inputs.len(), outputs: outs.len(), code, rest, assembled: false, stats })
    })();
    g.rollback(mark);
    r.map(|l| VectorCode::Looped(Box::new(l)))
}

/// The entries of a sparse matrix of which some are numbers (the linear parts of a system
/// make many): the numbers are copied from a template of the values, and only the rest are
/// compiled, their results written to their positions. Code then grows with the entries
/// that depend on the point, not with the pattern.
pub struct Entries {
    n: usize,
    template: Vec<f64>,
    code: Option<(VectorCode, Vec<u32>)>,
}

/// `entries` as code: [`Entries`] when some are numbers, else one straight-line function.
fn entries_code(g: &mut Graph, inputs: &[Id], entries: &[Id]) -> Result<VectorCode, GradientError> {
    let numbers = entries.iter().filter(|&&e| g.as_num(e).is_some()).count();
    if numbers == 0 {
        return compile_vector(g, entries, inputs);
    }
    let template: Vec<f64> = entries.iter().map(|&e| g.as_num(e).unwrap_or(0.0)).collect();
    let at: Vec<u32> =
        (0..entries.len()).filter(|&k| g.as_num(entries[k]).is_none()).map(|k| k as u32).collect();
    let computed: Vec<Id> = at.iter().map(|&k| entries[k as usize]).collect();
    let code = if computed.is_empty() { None } else { Some((compile_vector(g, &computed, inputs)?, at)) };
    Ok(VectorCode::Entries(Box::new(Entries { n: inputs.len(), template, code })))
}

impl Entries {
    fn call1(&self, x: &[f64], out: &mut [f64]) -> bool {
        if x.len() != self.n || out.len() != self.template.len() {
            return false;
        }
        out.copy_from_slice(&self.template);
        if let Some((code, at)) = &self.code {
            scatter(&ENTRY_WORK, at, out, false, |w| {
                code.call1(x, w);
            });
        }
        true
    }
}

/// The statistics of code that computes nothing (every entry a number).
static NO_STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(|| Stats {
    nodes: 0,
    ops: 0,
    value_ops: 0,
    chunks: 0,
    spilled: 0,
    code_bytes: 0,
    compile_time: std::time::Duration::ZERO,
    allocator: "backtracking",
    classes: Vec::new(),
    looped_nodes: 0,
});

impl VectorCode {
    pub fn inputs(&self) -> usize {
        match self {
            VectorCode::Straight(c, _) => c.inputs(),
            VectorCode::Entries(e) => e.n,
            VectorCode::Sum(o) => o.n,
            VectorCode::Looped(l) => l.n,
        }
    }

    pub fn outputs(&self) -> usize {
        match self {
            VectorCode::Straight(c, _) => c.groups()[0],
            VectorCode::Entries(e) => e.template.len(),
            VectorCode::Sum(_) => 1,
            VectorCode::Looped(l) => l.outputs,
        }
    }

    pub fn stats(&self) -> &Stats {
        match self {
            VectorCode::Straight(c, _) => c.stats(),
            VectorCode::Entries(e) => e.code.as_ref().map_or(&*NO_STATS, |c| c.0.stats()),
            VectorCode::Sum(o) => &o.stats,
            VectorCode::Looped(l) => &l.stats,
        }
    }

    /// One straight-line function of `outs`, with what its four-lane version needs.
    fn straight(g: &Graph, inputs: &[Id], outs: &[Id]) -> Result<VectorCode, GradientError> {
        let code = compile(g, inputs, &[outs], &CompileOptions::default())?;
        let batch = Batch::keep(g, inputs, &[outs], code.stats());
        Ok(VectorCode::Straight(Box::new(code), Box::new(batch)))
    }

    /// The points per call of [`call_batch`](Self::call_batch) (compiling its code now if
    /// it has not been), or `None` without batch code: straight-line code of up to
    /// [`BATCH_OPS`] operations has it.
    pub fn batch_lanes(&self) -> Option<usize> {
        match self {
            VectorCode::Straight(_, batch) => batch.get().map(|c| c.lanes()),
            _ => None,
        }
    }

    /// The outputs at several points at once, inputs and outputs interleaved (see
    /// [`GradientCode::call_batch`]); `false` (nothing written) without batch code or on
    /// wrong lengths.
    pub fn call_batch(&self, x: &[f64], out: &mut [f64]) -> bool {
        match self {
            VectorCode::Straight(_, batch) => batch.get().is_some_and(|c| c.call1(x, out)),
            _ => false,
        }
    }

    /// The outputs at `x` into `out` (a Hessian row by row, a sparse matrix's entries in
    /// pattern order); `false` (nothing written) on wrong lengths.
    pub fn call1(&self, x: &[f64], out: &mut [f64]) -> bool {
        match self {
            VectorCode::Straight(c, _) => c.call1(x, out),
            VectorCode::Entries(e) => e.call1(x, out),
            VectorCode::Sum(o) => o.call1(x, out),
            VectorCode::Looped(l) => l.call1(x, out),
        }
    }
}

/// How a compiled Hessian lays out its entries: the dense matrix row by row, or the values
/// of a sparse pattern (`diff::sparsity`), its lower triangle or every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HessianForm {
    Dense,
    Lower,
    Full,
}

/// Compiles the Hessian of `f` with respect to `inputs`, row by row: with loops when `f` is
/// a sum with classes whose members read no shared subexpression, else straight-line.
pub fn compile_hessian(g: &mut Graph, f: Id, inputs: &[Id]) -> Result<VectorCode, GradientError> {
    Ok(hessian_code(g, f, inputs, HessianForm::Dense)?.1)
}

/// Compiles the values of the Hessian's sparsity pattern (in pattern order), the lower
/// triangle or, with `full`, every entry; returns the pattern with the code.
pub fn compile_sparse_hessian(
    g: &mut Graph,
    f: Id,
    inputs: &[Id],
    full: bool,
) -> Result<(Pattern, VectorCode), GradientError> {
    let form = if full { HessianForm::Full } else { HessianForm::Lower };
    let (p, code) = hessian_code(g, f, inputs, form)?;
    Ok((p.expect("a sparse form has a pattern"), code))
}

/// Compiles the values of the Jacobian's sparsity pattern, in pattern order.
pub fn compile_sparse_jacobian(
    g: &mut Graph,
    outputs: &[Id],
    inputs: &[Id],
) -> Result<(Pattern, VectorCode), GradientError> {
    let (p, entries) = sparsity::jacobian(g, outputs, inputs)?;
    Ok((p, entries_code(g, inputs, &entries)?))
}

/// A (row, column) of a sparse Hessian and the factor a member's partial is added with.
type SparseEntry = ((u32, u32), f64);

/// The entry of the sparse pattern a second partial of slots `a` and `b` (in diff order)
/// of one member goes to, reading variables `ra` and `rb`, with the factor it is added
/// with: the lower triangle takes each unordered pair once, so a pair of two slots that
/// read one variable counts twice on the diagonal. `None`: not stored (the upper half).
fn sparse_entry(form: HessianForm, a: usize, b: usize, ra: u32, rb: u32) -> Option<SparseEntry> {
    match form {
        HessianForm::Full | HessianForm::Dense => Some(((ra, rb), 1.0)),
        HessianForm::Lower if a > b => None,
        HessianForm::Lower if a < b && ra == rb => Some(((ra, rb), 2.0)),
        HessianForm::Lower => Some(((ra.max(rb), ra.min(rb)), 1.0)),
    }
}

fn hessian_code(
    g: &mut Graph,
    f: Id,
    inputs: &[Id],
    form: HessianForm,
) -> Result<(Option<Pattern>, VectorCode), GradientError> {
    let n = inputs.len();
    let (found, operations) = structure::recover(g, &[f]);
    let simple = worth_loops(&found, operations)
        && found.len() == 1
        && found[0].sum == f
        && found[0].classes.iter().all(|c| c.slots.iter().all(|s| s.kind != SlotKind::External));
    if !simple {
        if form == HessianForm::Dense {
            let h = reverse::try_hessian(g, f, inputs)?.concat();
            return Ok((None, VectorCode::straight(g, inputs, &h)?));
        }
        let (p, entries) = sparsity::hessian(g, f, inputs, form == HessianForm::Full)?;
        return Ok((Some(p), entries_code(g, inputs, &entries)?));
    }
    let start = std::time::Instant::now();
    let mark = g.mark();
    let r = (|| {
        let l = &found[0];
        let rest = g.add(&l.rest);
        // The rest's entries (not identically zero) and where each goes.
        let (pattern_rest, rest_entries) = match form {
            HessianForm::Dense => {
                let h = reverse::try_hessian(g, rest, inputs)?.concat();
                let idx: Vec<u32> =
                    (0..h.len()).filter(|&k| !g.is_num(h[k], 0.0)).map(|k| k as u32).collect();
                let entries: Vec<Id> = idx.iter().map(|&k| h[k as usize]).collect();
                (idx.iter().map(|&k| (k / n as u32, k % n as u32)).collect::<Vec<_>>(), entries)
            }
            _ => {
                let (p, entries) = sparsity::hessian(g, rest, inputs, form == HessianForm::Full)?;
                (p.rows.into_iter().zip(p.cols).collect(), entries)
            }
        };
        let input_of: HashMap<Id, u32> = inputs.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        let mut loops_: Vec<ClassLoop> = Vec::new();
        let mut class_stats = Vec::new();
        for c in &l.classes {
            loops_.push(template(g, c, &input_of, &HashMap::new(), Some(n))?);
            class_stats.push(class_stats_of(c));
        }
        // A sparse pattern: the rest's entries and every member's, each member's pairs
        // pointing at theirs.
        let pattern = if form == HessianForm::Dense {
            None
        } else {
            let mut all = pattern_rest.clone();
            let mut per_pair: Vec<Vec<Vec<Option<SparseEntry>>>> = Vec::new();
            for cl in &loops_ {
                let mut pairs = Vec::new();
                for &(a, b, _) in &cl.pairs {
                    let entries: Vec<Option<SparseEntry>> = (0..cl.members)
                        .map(|k| {
                            let ra = cl.sources[a].index(k).expect("a differentiated slot reads an input");
                            let rb = cl.sources[b].index(k).expect("a differentiated slot reads an input");
                            sparse_entry(form, a, b, ra, rb)
                        })
                        .collect();
                    all.extend(entries.iter().flatten().map(|e| e.0));
                    pairs.push(entries);
                }
                per_pair.push(pairs);
            }
            let p = Pattern::from_pairs(n, n, all);
            let at = p.positions();
            for (cl, pairs) in loops_.iter_mut().zip(per_pair) {
                let mut keep = Vec::new();
                let mut tables = Vec::new();
                for (pair, entries) in cl.pairs.iter().zip(pairs) {
                    if entries[0].is_none() {
                        continue; // the upper half (the same for every member: a > b)
                    }
                    let table: Vec<u32> =
                        entries.iter().map(|e| at[&e.expect("one half for all").0]).collect();
                    let weights: Vec<f64> = entries.iter().map(|e| e.expect("one half for all").1).collect();
                    let weight = weights.iter().any(|&w| w != 1.0).then_some(weights);
                    keep.push(*pair);
                    tables.push((table, weight));
                }
                cl.pairs = keep;
                cl.pair_at = tables;
            }
            Some(p)
        };
        let idx: Vec<u32> = match &pattern {
            None => pattern_rest.iter().map(|&(r, c)| r * n as u32 + c).collect(),
            Some(p) => {
                let at = p.positions();
                pattern_rest.iter().map(|rc| at[rc]).collect()
            }
        };
        let rest = if rest_entries.is_empty() {
            None
        } else {
            Some((compile(g, inputs, &[&rest_entries], &CompileOptions::default())?, idx))
        };
        let mut groups: Vec<Vec<ClassLoop>> = Vec::new();
        for cl in loops_ {
            push_grouped(&mut groups, cl);
        }
        let mut ops = rest.as_ref().map_or(0, |r| r.0.stats().ops);
        for grp in &groups {
            for l in grp {
                let roots: Vec<Id> = l.pairs.iter().map(|p| p.2).collect();
                ops += l.members * l.graph.ops_of(&roots);
            }
        }
        let code = loops::compile(&mut groups, false)?;
        let stats = loop_stats(start, &code, rest.as_ref().map(|r| &r.0), ops, class_stats);
        let outputs = pattern.as_ref().map_or(n * n, |p| p.rows.len());
        Ok((pattern, LoopedEntries { n, outputs, code, rest, assembled: true, stats }))
    })();
    g.rollback(mark);
    r.map(|(p, l)| (p, VectorCode::Looped(Box::new(l))))
}
