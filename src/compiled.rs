//! Compiled functions, the library's fast path: a gradient (or a vector function, its
//! Jacobian, a Hessian) built by reverse mode as graph nodes and JIT-compiled by Cranelift to
//! native code.
//!
//! ```
//! let f = symdiff::Expr::parse("x^3 + 2*x^2 + 1")?;
//! let g = symdiff::compile_gradient(&f, &["x"])?;
//! let mut grad = [0.0];
//! assert_eq!(g.eval(&[4.0], &mut grad), 97.0);
//! assert_eq!(grad, [64.0]);
//! # Ok::<(), symdiff::Error>(())
//! ```
//!
//! Compiled code computes exactly what the interpreter computes, in the same order, but it
//! does not check domains: `log(-1)` is NaN there, not an error. Use [`Expr::eval`] to find
//! out *why* a value is NaN.

use std::time::Duration;

use hashbrown::HashMap;

use crate::diff;
use crate::expr::{Error, Expr, Result};
use crate::graph::{Graph, Id};
use crate::jit::scalar::{GradientCode, GradientError, VectorCode};
use crate::jit::{self, CompileOptions, CompileStats};

impl From<jit::JitError> for Error {
    fn from(e: jit::JitError) -> Error {
        Error::Invalid(e.to_string())
    }
}

/// The roots of `exprs` in one graph (a copy when they come from different graphs) plus the
/// variable nodes of `vars`, under a lock-free view for the duration of `f`. If `f` fails, the
/// nodes it built are forgotten (a gradient stopped at the node budget leaves none behind).
pub(crate) fn with_graph<T>(
    exprs: &[&Expr],
    vars: &[&str],
    f: impl FnOnce(&mut Graph, &[Id], &[Id]) -> Result<T>,
) -> Result<T> {
    let first = exprs[0];
    let same = exprs.iter().all(|e| e.shares_graph(first));
    if same {
        let mut g = first.graph();
        let mark = g.mark();
        let roots: Vec<Id> = exprs.iter().map(|e| e.node()).collect();
        let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
        let r = f(&mut g, &roots, &vs);
        if r.is_err() {
            g.rollback(mark);
        }
        r
    } else {
        let mut g = Graph::new();
        let roots: Vec<Id> = exprs
            .iter()
            .map(|e| {
                let copy = e.graph().clone();
                crate::graph::lower::import(&mut g, &copy, e.node())
            })
            .collect();
        let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
        f(&mut g, &roots, &vs)
    }
}

pub(crate) fn check_vars(exprs: &[&Expr], vars: &[&str]) -> Result<()> {
    let mut seen = HashMap::new();
    for v in vars {
        if seen.insert(*v, ()).is_some() {
            return Err(Error::Invalid(format!("variable `{v}` is listed twice")));
        }
    }
    // One scan per run of expressions in one graph (10⁵ equations parsed into one graph are
    // one scan), not one per expression; none where every variable of the graph is listed
    // (the common case, and a walk over millions of nodes saved).
    let mut names = Vec::new();
    for run in exprs.chunk_by(|a, b| a.shares_graph(b)) {
        let g = run[0].graph();
        if g.var_names().all(|v| seen.contains_key(v)) {
            continue;
        }
        let roots: Vec<Id> = run.iter().map(|x| x.node()).collect();
        names.extend(crate::expr::variables(&g, &roots));
    }
    if let Some(missing) = names.into_iter().find(|x| !seen.contains_key(x.as_str())) {
        return Err(Error::Invalid(format!("`{missing}` is not among the variables {vars:?}")));
    }
    Ok(())
}

/// The first `m` points of `xs` (`n` values each) `lanes` at a time, as `f(i, count, inputs,
/// outputs)` for the `count` points from `i` on: their inputs interleaved (`x0 y0 z0 w0 x1
/// ...` for four lanes), and room for `k` interleaved outputs of `lanes` (this thread's
/// buffers, reused). The last group may hold fewer points (at least two): the missing lanes
/// repeat its last point, and their outputs are dropped. Returns the points done: all of
/// them, or all but one (a single point left over runs faster in one-lane code).
fn for_batches(
    xs: &[f64],
    n: usize,
    m: usize,
    k: usize,
    lanes: usize,
    mut f: impl FnMut(usize, usize, &[f64], &mut [f64]),
) -> usize {
    BATCH.with(|buf| {
        let (xl, ol) = &mut *buf.borrow_mut();
        xl.resize(lanes * n, 0.0);
        ol.resize(lanes * k, 0.0);
        let mut done = 0;
        while m - done >= 2 {
            let count = (m - done).min(lanes);
            interleave(&xs[done * n..(done + count) * n], n, lanes, xl);
            f(done, count, xl, ol);
            done += count;
        }
        done
    })
}

/// Points one after the other (`n` values each, at least one point) as `lanes` (2 or 4)
/// interleaved lanes, the last point repeated in the lanes past the points given.
fn interleave(points: &[f64], n: usize, lanes: usize, out: &mut [f64]) {
    match lanes {
        4 => interleave_n::<4>(points, n, out),
        _ => interleave_n::<2>(points, n, out),
    }
}

/// [`interleave`] for `L` lanes: one pass over `out`, an entry at a time.
fn interleave_n<const L: usize>(points: &[f64], n: usize, out: &mut [f64]) {
    let Some(count) = points.len().checked_div(n) else { return };
    let rows: [&[f64]; L] = std::array::from_fn(|l| &points[l.min(count - 1) * n..][..n]);
    for (j, entry) in out[..L * n].chunks_exact_mut(L).enumerate() {
        for (x, row) in entry.iter_mut().zip(&rows) {
            *x = row[j];
        }
    }
}

/// `lanes` (2 or 4) interleaved lanes back as points one after the other (`k` values each),
/// as many as `points` has room for.
fn deinterleave(from: &[f64], k: usize, lanes: usize, points: &mut [f64]) {
    match lanes {
        4 => deinterleave_n::<4>(from, k, points),
        _ => deinterleave_n::<2>(from, k, points),
    }
}

/// [`deinterleave`] for `L` lanes: one pass over `from`, an entry at a time.
fn deinterleave_n<const L: usize>(from: &[f64], k: usize, points: &mut [f64]) {
    let count = points.len().checked_div(k).unwrap_or(0).min(L);
    for (j, entry) in from[..L * k].chunks_exact(L).enumerate() {
        for (l, &x) in entry[..count].iter().enumerate() {
            points[l * k + j] = x;
        }
    }
}

thread_local! {
    /// A batch's inputs and outputs, interleaved, for [`for_batches`].
    static BATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A compiled scalar function with its gradient: one native call gives both.
pub struct CompiledGradient {
    code: GradientCode,
    build_time: Duration,
}

impl CompiledGradient {
    /// Number of variables.
    pub fn len(&self) -> usize {
        self.code.inputs()
    }

    /// `true` for a function of no variables.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `x`, with the gradient written to `grad`.
    ///
    /// Lengths are checked: if `x` or `grad` does not have one entry per variable, nothing is
    /// computed, `grad` is left as it was and the result is NaN. Use [`try_eval`](Self::try_eval)
    /// for an error instead.
    pub fn eval(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        self.try_eval(x, grad).unwrap_or(f64::NAN)
    }

    /// Like [`eval`](Self::eval), with an error for wrong lengths.
    pub fn try_eval(&self, x: &[f64], grad: &mut [f64]) -> Result<f64> {
        if self.params() > 0 {
            return Err(Error::Invalid(format!(
                "this gradient also reads {} parameters: call eval_params(x, params, grad)",
                self.params()
            )));
        }
        self.code.call(x, grad).ok_or_else(|| lengths(self.len(), x.len(), grad.len()))
    }

    /// Number of parameters (see [`compile_gradient_params`]).
    pub fn params(&self) -> usize {
        self.code.params()
    }

    /// The value at the point `x` with the parameters `params`, with the gradient (with
    /// respect to the variables only) written to `grad`. Wrong lengths are an error; nothing
    /// is written then.
    pub fn eval_params(&self, x: &[f64], params: &[f64], grad: &mut [f64]) -> Result<f64> {
        let (n, np) = (self.len(), self.params());
        if x.len() != n || params.len() != np || grad.len() != n {
            return Err(Error::Invalid(format!(
                "expected {n} values, {np} parameters and {n} gradient entries, got {}, {} and {}",
                x.len(),
                params.len(),
                grad.len()
            )));
        }
        if np == 0 {
            return self.try_eval(x, grad);
        }
        POINT.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            buf.extend_from_slice(x);
            buf.extend_from_slice(params);
            self.code.call(&buf, grad).ok_or_else(|| lengths(n, x.len(), grad.len()))
        })
    }

    /// Evaluates many points: `xs` holds the points one after another (`len()` values each),
    /// `values` receives one value per point and `grads` one gradient per point.
    ///
    /// Four points run at once, two per `f64x2` instruction and four per call of a host
    /// function (`tanh`, `sin`, ...), in code compiled for that the first time a batch needs
    /// it (a straight-line gradient of up to 200,000 operations, two points at once where its
    /// code is long; one compiled to loops, which already run two terms at once, goes point
    /// by point). Every point gets exactly what
    /// [`eval`](Self::eval) gives it. Large batches are also split across the machine's
    /// cores.
    ///
    /// ```
    /// let f = symdiff::Expr::parse("x*y + sin(x)")?;
    /// let g = symdiff::compile_gradient(&f, &["x", "y"])?;
    /// let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // three points (x, y)
    /// let (mut values, mut grads) = ([0.0; 3], [0.0; 6]);
    /// g.eval_many(&xs, &mut values, &mut grads)?;
    /// let mut one = [0.0; 2];
    /// assert_eq!(values[1], g.eval(&[3.0, 4.0], &mut one));
    /// assert_eq!(grads[2..4], one);
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn eval_many(&self, xs: &[f64], values: &mut [f64], grads: &mut [f64]) -> Result<()> {
        if self.params() > 0 {
            return Err(Error::Invalid(
                "eval_many: this gradient reads parameters; call eval_params per point".into(),
            ));
        }
        let n = self.len();
        let m = values.len();
        if xs.len() != m * n || grads.len() != m * n {
            return Err(Error::Invalid(format!(
                "eval_many: {m} values need {} inputs and {} gradient entries, got {} and {}",
                m * n,
                m * n,
                xs.len(),
                grads.len()
            )));
        }
        // Compiled here, once, rather than by every thread at its first pair.
        let lanes = if m >= 2 { self.code.batch_lanes() } else { None };
        let run = |xs: &[f64], values: &mut [f64], grads: &mut [f64]| {
            let m = values.len();
            let mut done = 0;
            if let Some(lanes) = lanes {
                done = for_batches(xs, n, m, n, lanes, |i, count, xl, gl| {
                    let mut v = [0.0; 4];
                    let ok = self.code.call_batch(xl, &mut v[..lanes], gl);
                    debug_assert!(ok);
                    deinterleave(gl, n, lanes, &mut grads[i * n..(i + count) * n]);
                    values[i..i + count].copy_from_slice(&v[..count]);
                });
            }
            for i in done..m {
                let value = self.code.call(&xs[i * n..(i + 1) * n], &mut grads[i * n..(i + 1) * n]);
                debug_assert!(value.is_some());
                values[i] = value.unwrap_or(f64::NAN);
            }
        };
        // Threads pay off only when each gets real work (about 100 µs of it).
        // (No inputs: no chunks of `xs` to split by, and nothing worth splitting.)
        let threads =
            if m * (self.code.stats().ops + 1) < 200_000 || n == 0 { 1 } else { crate::jit::cores() };
        if threads < 2 {
            run(xs, values, grads);
            return Ok(());
        }
        let chunk = m.div_ceil(threads);
        std::thread::scope(|s| {
            for ((xs, values), grads) in xs
                .chunks(chunk * n.max(1))
                .zip(values.chunks_mut(chunk))
                .zip(grads.chunks_mut(chunk * n.max(1)))
            {
                s.spawn(move || run(xs, values, grads));
            }
        });
        Ok(())
    }

    /// The Cranelift IR of the compiled function, if compiled with `keep_ir`.
    pub fn ir(&self) -> Option<&str> {
        self.code.ir()
    }

    /// Time spent before the program was built: the gradient graph (reverse mode) for
    /// straight-line code, the search for classes of like terms for loops.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// Time spent building the program: Cranelift, and for loops also the templates'
    /// derivatives and the phases around them.
    pub fn compile_time(&self) -> Duration {
        self.code.stats().compile_time
    }

    /// Nodes in the compiled graph (function and gradient together).
    pub fn node_count(&self) -> usize {
        self.code.stats().nodes
    }

    /// How the function was compiled: nodes, chunks, spilled values, allocator, time.
    pub fn stats(&self) -> &CompileStats {
        self.code.stats()
    }
}

pub(crate) fn lengths(n: usize, x: usize, out: usize) -> Error {
    Error::Invalid(format!("expected {n} inputs and {n} outputs, got {x} and {out}"))
}

/// Builds the gradient of `f` with respect to `vars` by reverse mode and compiles value and
/// gradient into one native function. Every variable of `f` must be listed.
pub fn compile_gradient(f: &Expr, vars: &[&str]) -> Result<CompiledGradient> {
    compile_gradient_with(f, vars, &CompileOptions::default())
}

std::thread_local! {
    /// A point and its parameters side by side, for [`CompiledGradient::eval_params`].
    static POINT: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`compile_gradient`] with options: keeping the Cranelift IR for [`CompiledGradient::ir`],
/// or checking the compiled code against the interpreter before returning it
/// (`check`): at up to 8 random points of the domain (drawn from [-2, 2] per variable; points
/// where the interpreter reports a domain error or overflow are skipped, up to 64 tried), the
/// value and every partial must agree within 1e-9 of the largest of them, else the result is
/// an error naming the point and the first entry that disagrees.
pub fn compile_gradient_with(f: &Expr, vars: &[&str], opts: &CompileOptions) -> Result<CompiledGradient> {
    gradient_of(f, vars, &[], opts)
}

/// Compiles the value and gradient of `f` with respect to `vars`, reading `params` as well:
/// values passed at each call and not differentiated (data, weights, a time step), so that
/// new data needs no recompiling. Every variable of `f` is in one of the two lists.
///
/// ```
/// // A least-squares term with its data point (t, y) as parameters.
/// let f = symdiff::Expr::parse("(y - a*exp(-b*t))^2")?;
/// let g = symdiff::compile_gradient_params(&f, &["a", "b"], &["t", "y"])?;
/// let mut grad = [0.0; 2];
/// let value = g.eval_params(&[2.0, 0.0], &[1.0, 3.0], &mut grad)?; // (3 - 2)^2
/// assert_eq!((value, grad), (1.0, [-2.0, 4.0]));
/// let value = g.eval_params(&[2.0, 0.0], &[5.0, 2.0], &mut grad)?; // other data, same code
/// assert_eq!((value, grad), (0.0, [0.0, 0.0]));
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_gradient_params(f: &Expr, vars: &[&str], params: &[&str]) -> Result<CompiledGradient> {
    gradient_of(f, vars, params, &CompileOptions::default())
}

fn gradient_of(f: &Expr, vars: &[&str], params: &[&str], opts: &CompileOptions) -> Result<CompiledGradient> {
    let all: Vec<&str> = vars.iter().chain(params).copied().collect();
    check_vars(&[f], &all)?;
    let start = std::time::Instant::now();
    let code = with_graph(&[f], &all, |g, roots, ids| {
        let (vs, ps) = ids.split_at(vars.len());
        jit::scalar::compile_gradient(g, roots[0], vs, ps, opts).map_err(|e| match e {
            GradientError::Budget(b) => too_large("the gradient", b),
            GradientError::Jit(e) => e.into(),
        })
    })?;
    let build_time = start.elapsed().saturating_sub(code.stats().compile_time);
    let compiled = CompiledGradient { code, build_time };
    if opts.check {
        check_against_interpreter(f, &all, vars.len(), &compiled)?;
    }
    Ok(compiled)
}

/// Points tried by [`CompileOptions::check`], and how many of them must be in the domain.
const CHECK_TRIES: usize = 64;
const CHECK_POINTS: usize = 8;

/// Compares `code` with the interpreter (the value and the reverse-mode gradient as graph
/// nodes, evaluated with domain checks) at up to [`CHECK_POINTS`] random points where the
/// interpreter has a value, drawn from [-2, 2] per variable and parameter by a fixed
/// generator. Agreement is within the rounding guarantee of a reordered sum: `1e-9` of the
/// largest magnitude among the value and the partials at that point.
fn check_against_interpreter(f: &Expr, all: &[&str], n: usize, code: &CompiledGradient) -> Result<()> {
    let grads = f.try_gradient(&all[..n])?;
    let mut exprs = vec![f.clone()];
    exprs.extend(grads);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    };
    let mut checked = 0;
    for _ in 0..CHECK_TRIES {
        let point: Vec<f64> = all.iter().map(|_| next()).collect();
        let bound: Vec<(&str, f64)> = all.iter().copied().zip(point.iter().copied()).collect();
        let Ok(expect) = Expr::eval_all(&exprs, &bound) else { continue };
        if expect.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let mut grad = vec![0.0; n];
        let value = code.eval_params(&point[..n], &point[n..], &mut grad)?;
        let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let got = std::iter::once(value).chain(grad.iter().copied());
        let what = std::iter::once("the value".to_owned()).chain(all[..n].iter().map(|v| format!("d/d{v}")));
        for ((got, want), what) in got.zip(&expect).zip(what) {
            // NaN compiled where the interpreter has a value is a disagreement too.
            let agrees = (got - want).abs() <= 1e-9 * scale;
            if !agrees {
                let at: Vec<String> = bound.iter().map(|(v, x)| format!("{v}={x}")).collect();
                return Err(Error::Invalid(format!(
                    "compiled code disagrees with the interpreter at {}: {what} is {got} compiled, {want} interpreted",
                    at.join(",")
                )));
            }
        }
        checked += 1;
        if checked == CHECK_POINTS {
            break;
        }
    }
    Ok(())
}

/// A compiled vector function: `outputs()` values from `inputs()` values.
pub struct Compiled {
    code: VectorCode,
}

impl Compiled {
    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.code.inputs()
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.code.outputs()
    }

    /// How the function was compiled: nodes, chunks, classes of like terms in loops.
    pub fn stats(&self) -> &CompileStats {
        self.code.stats()
    }

    /// Computes the outputs at `x`. Wrong lengths are an error; nothing is written then.
    pub fn eval(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        if self.code.call1(x, out) { Ok(()) } else { Err(lengths(self.inputs(), x.len(), out.len())) }
    }

    /// Evaluates consecutive points of `xs` into consecutive rows of `out`: four points at
    /// once in `f64x2` code, large batches across the cores, as
    /// [`CompiledGradient::eval_many`]; every row is what [`eval`](Self::eval) gives.
    ///
    /// ```
    /// let f = [symdiff::Expr::parse("x*y")?, symdiff::Expr::parse("x + sin(y)")?];
    /// let c = symdiff::compile(&f, &["x", "y"])?;
    /// let mut out = [0.0; 6];
    /// c.eval_many(&[1.0, 2.0, 3.0, 4.0, 5.0, 0.0], &mut out)?;
    /// assert_eq!(out, [2.0, 1.0 + 2f64.sin(), 12.0, 3.0 + 4f64.sin(), 0.0, 5.0]);
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn eval_many(&self, xs: &[f64], out: &mut [f64]) -> Result<()> {
        let (n, k) = (self.inputs(), self.outputs());
        let m = out.len().checked_div(k).unwrap_or(0);
        if out.len() != m * k || xs.len() != m * n {
            return Err(Error::Invalid(format!(
                "eval_many: inputs of {} values and outputs of {} do not make whole points of {n} inputs and {k} outputs",
                xs.len(),
                out.len()
            )));
        }
        // As `CompiledGradient::eval_many`: four (or two) points at a time in batch code, a
        // last one alone, large batches across the cores.
        let lanes = if m >= 2 { self.code.batch_lanes() } else { None };
        let run = |xs: &[f64], out: &mut [f64]| {
            let m = out.len().checked_div(k).unwrap_or(xs.len() / n.max(1));
            let mut done = 0;
            if let Some(lanes) = lanes {
                done = for_batches(xs, n, m, k, lanes, |i, count, xl, ol| {
                    let ok = self.code.call_batch(xl, ol);
                    debug_assert!(ok);
                    deinterleave(ol, k, lanes, &mut out[i * k..(i + count) * k]);
                });
            }
            for i in done..m {
                self.code.call1(&xs[i * n..(i + 1) * n], &mut out[i * k..(i + 1) * k]);
            }
        };
        let threads = if m * (self.code.stats().ops + 1) < 200_000 || n == 0 || k == 0 {
            1
        } else {
            crate::jit::cores()
        };
        if threads < 2 {
            run(xs, out);
            return Ok(());
        }
        let chunk = m.div_ceil(threads);
        std::thread::scope(|s| {
            for (xs, out) in xs.chunks(chunk * n.max(1)).zip(out.chunks_mut(chunk * k)) {
                s.spawn(move || run(xs, out));
            }
        });
        Ok(())
    }
}

fn compile_outputs(
    exprs: &[&Expr],
    vars: &[&str],
    build: impl FnOnce(&mut Graph, &[Id], &[Id]) -> Result<Vec<Id>>,
) -> Result<Compiled> {
    if exprs.is_empty() {
        return Err(Error::Invalid("nothing to compile: no expressions".into()));
    }
    check_vars(exprs, vars)?;
    let code = with_graph(exprs, vars, |g, roots, vs| {
        let outs = build(g, roots, vs)?;
        jit::scalar::compile_vector(g, &outs, vs).map_err(|e| gradient_error("the function", e))
    })?;
    Ok(Compiled { code })
}

/// The error for a derivative over the graph's node budget (the gradients, Jacobians and
/// Hessians compiled here are built from input, so they keep to it as every such route does).
pub(crate) fn too_large(what: &str, b: crate::graph::OverBudget) -> Error {
    Error::Invalid(b.message(what))
}

/// Compiles the vector function `(f_1, ..., f_m)` of `vars`.
pub fn compile(fs: &[Expr], vars: &[&str]) -> Result<Compiled> {
    let refs: Vec<&Expr> = fs.iter().collect();
    compile_outputs(&refs, vars, |_, roots, _| Ok(roots.to_vec()))
}

/// Compiles the Jacobian of `(f_1, ..., f_m)`: `m × n` outputs, row by row (reverse mode, one
/// sweep per output). A Jacobian too large to hold densely is refused; use
/// [`compile_sparse_jacobian`] for its nonzero entries.
///
/// ```
/// let x = symdiff::Expr::parse("x*y")?;
/// let y = x.parse_with("x + y^2")?;
/// let j = symdiff::compile_jacobian(&[x, y], &["x", "y"])?;
/// let mut out = [0.0; 4];
/// j.eval(&[2.0, 3.0], &mut out)?;
/// assert_eq!(out, [3.0, 2.0, 1.0, 6.0]);
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_jacobian(fs: &[Expr], vars: &[&str]) -> Result<Compiled> {
    dense_fits("Jacobian", fs.len(), vars.len(), "compile_sparse_jacobian")?;
    let refs: Vec<&Expr> = fs.iter().collect();
    compile_outputs(&refs, vars, |g, roots, vs| {
        Ok(diff::reverse::try_jacobian(g, roots, vs).map_err(|b| too_large("the Jacobian", b))?.concat())
    })
}

/// Compiles the Hessian of `f`: `n × n` outputs, row by row (reverse over reverse). A large
/// sum of like terms is assembled by loops: each term's Hessian, computed once as a template,
/// is added into the matrix for every term. A Hessian too large to hold densely is refused;
/// use [`compile_sparse_hessian`] for its nonzero entries.
pub fn compile_hessian(f: &Expr, vars: &[&str]) -> Result<Compiled> {
    dense_fits("Hessian", vars.len(), vars.len(), "compile_sparse_hessian")?;
    check_vars(&[f], vars)?;
    let code = with_graph(&[f], vars, |g, roots, vs| {
        jit::scalar::compile_hessian(g, roots[0], vs).map_err(|e| gradient_error("the Hessian", e))
    })?;
    Ok(Compiled { code })
}

pub(crate) fn gradient_error(what: &str, e: GradientError) -> Error {
    match e {
        GradientError::Budget(b) => too_large(what, b),
        GradientError::Jit(e) => e.into(),
    }
}

/// Refuses a dense `rows × cols` matrix that would not fit: more entries than one compiled
/// array can index, or more than half the memory the system has available (its entries
/// and the graph's table of them take 12 bytes each), before anything is allocated.
fn dense_fits(what: &str, rows: usize, cols: usize, sparse: &str) -> Result<()> {
    let entries = rows.saturating_mul(cols);
    let bytes = entries.saturating_mul(12);
    let available = available_memory();
    if entries > jit::scalar::MAX_ARRAY || available.is_some_and(|a| bytes > a / 2) {
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        let room =
            available.map_or(String::new(), |a| format!(", and {:.1} GiB of memory is available", gib(a)));
        return Err(Error::Invalid(format!(
            "the dense {what} of {rows} x {cols} has {entries} entries ({:.1} GiB){room}; \
             `{sparse}` computes only the entries that are not identically zero",
            gib(entries.saturating_mul(8))
        )));
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (`None` where there is no such file).
fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Which entries of a symmetric matrix a sparse Hessian holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triangle {
    /// The entries on and below the diagonal (`col <= row`): each pair once.
    Lower,
    /// Every entry; the upper triangle repeats the lower one's values.
    Full,
}

/// The structural sparsity pattern of a Jacobian or Hessian: the entries whose simplified
/// derivative is not identically zero, found symbolically (exact, not sampled). An entry that
/// vanishes only at some points is in the pattern and evaluates to 0 there.
///
/// Entries are in row-major order with ascending columns (coordinate form); [`csr`](Self::csr)
/// gives the compressed-row form of the same order.
///
/// ```
/// let f = symdiff::Expr::parse("x^2*y + z^2")?;
/// let h = symdiff::compile_sparse_hessian(&f, &["x", "y", "z"], symdiff::Triangle::Lower)?;
/// let p = h.pattern();
/// assert_eq!((p.rows(), p.cols()), (&[0, 1, 2][..], &[0, 0, 2][..]));
/// let (row_start, cols) = p.csr();
/// assert_eq!((row_start, cols), (vec![0, 1, 2, 3], &[0, 0, 2][..]));
/// # Ok::<(), symdiff::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsePattern(diff::sparsity::Pattern);

impl SparsePattern {
    /// Rows of the matrix (outputs of a Jacobian, variables of a Hessian).
    pub fn nrows(&self) -> usize {
        self.0.nrows
    }

    /// Columns of the matrix (variables).
    pub fn ncols(&self) -> usize {
        self.0.ncols
    }

    /// Entries in the pattern.
    pub fn nnz(&self) -> usize {
        self.0.rows.len()
    }

    /// The row of each entry.
    pub fn rows(&self) -> &[u32] {
        &self.0.rows
    }

    /// The column of each entry.
    pub fn cols(&self) -> &[u32] {
        &self.0.cols
    }

    /// Compressed rows: `row_start[i]..row_start[i + 1]` are row `i`'s entries (`nrows + 1`
    /// offsets), with their columns.
    pub fn csr(&self) -> (Vec<usize>, &[u32]) {
        let mut start = vec![0usize; self.0.nrows + 1];
        for &r in &self.0.rows {
            start[r as usize + 1] += 1;
        }
        for i in 0..self.0.nrows {
            start[i + 1] += start[i];
        }
        (start, &self.0.cols)
    }
}

/// The compiled values of a sparse Jacobian or Hessian, one per entry of its
/// [`pattern`](Self::pattern), in pattern order.
///
/// ```
/// let a = symdiff::Expr::parse("x*y")?;
/// let b = a.parse_with("y + z")?;
/// let j = symdiff::compile_sparse_jacobian(&[a, b], &["x", "y", "z"])?;
/// assert_eq!(j.pattern().nnz(), 4); // (0,0) (0,1) (1,1) (1,2)
/// let mut values = vec![0.0; 4];
/// j.eval(&[2.0, 3.0, 5.0], &mut values)?;
/// assert_eq!(values, [3.0, 2.0, 1.0, 1.0]);
/// # Ok::<(), symdiff::Error>(())
/// ```
pub struct CompiledSparse {
    pattern: SparsePattern,
    code: VectorCode,
}

impl CompiledSparse {
    /// Which entries [`eval`](Self::eval) computes.
    pub fn pattern(&self) -> &SparsePattern {
        &self.pattern
    }

    /// Number of variables.
    pub fn inputs(&self) -> usize {
        self.code.inputs()
    }

    /// How the values were compiled: nodes, chunks, classes of like terms in loops.
    pub fn stats(&self) -> &CompileStats {
        self.code.stats()
    }

    /// The entries' values at `x`, into `values` (one per entry of the pattern). Wrong
    /// lengths are an error; nothing is written then.
    pub fn eval(&self, x: &[f64], values: &mut [f64]) -> Result<()> {
        if self.code.call1(x, values) { Ok(()) } else { Err(lengths(self.inputs(), x.len(), values.len())) }
    }
}

/// Compiles the sparse Jacobian of `(f_1, ..., f_m)`: its structural pattern and the values
/// of its entries (one reverse sweep per output, over the variables it reaches).
pub fn compile_sparse_jacobian(fs: &[Expr], vars: &[&str]) -> Result<CompiledSparse> {
    if fs.is_empty() {
        return Err(Error::Invalid("nothing to compile: no expressions".into()));
    }
    let refs: Vec<&Expr> = fs.iter().collect();
    check_vars(&refs, vars)?;
    let (p, code) = with_graph(&refs, vars, |g, roots, vs| {
        jit::scalar::compile_sparse_jacobian(g, roots, vs).map_err(|e| gradient_error("the Jacobian", e))
    })?;
    Ok(CompiledSparse { pattern: SparsePattern(p), code })
}

/// Compiles the sparse Hessian of `f`: its structural pattern (the lower triangle or every
/// entry) and the values of its entries. A large sum of like terms is assembled by loops,
/// each term's entries added at their positions in the pattern.
///
/// ```
/// // Rosenbrock: a tridiagonal Hessian, 3n - 2 entries in full.
/// let n = 100;
/// let terms: Vec<String> = (0..n - 1)
///     .map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1))
///     .collect();
/// let f = symdiff::Expr::parse(&terms.join(" + "))?;
/// let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
/// let vars: Vec<&str> = names.iter().map(String::as_str).collect();
/// let h = symdiff::compile_sparse_hessian(&f, &vars, symdiff::Triangle::Full)?;
/// assert_eq!(h.pattern().nnz(), 3 * n - 2);
/// let mut values = vec![0.0; h.pattern().nnz()];
/// h.eval(&vec![1.0; n], &mut values)?;
/// assert_eq!(values[..2], [802.0, -400.0]); // row 0 at the minimum
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_sparse_hessian(f: &Expr, vars: &[&str], triangle: Triangle) -> Result<CompiledSparse> {
    check_vars(&[f], vars)?;
    let (p, code) = with_graph(&[f], vars, |g, roots, vs| {
        jit::scalar::compile_sparse_hessian(g, roots[0], vs, triangle == Triangle::Full)
            .map_err(|e| gradient_error("the Hessian", e))
    })?;
    Ok(CompiledSparse { pattern: SparsePattern(p), code })
}

fn export(f: &Expr, vars: &[&str], name: &str, lang: jit::export::Lang) -> Result<String> {
    check_vars(&[f], vars)?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::Invalid(format!("`{name}` is not a valid function name")));
    }
    // The formula goes into the comment line by line: a large one prints with a `where`
    // block, and every line of it must stay inside the comment.
    let formula = f.to_string();
    let header = match lang {
        jit::export::Lang::C => {
            let body: String = formula.replace("*/", "* /").lines().map(|l| format!(" *   {l}\n")).collect();
            format!(
                "/* Generated by symdiff {}: the value and gradient of\n{body} * with respect to x[] = ({}). */\n",
                env!("CARGO_PKG_VERSION"),
                vars.join(", ")
            )
        }
        jit::export::Lang::Rust => {
            let body: String = formula.lines().map(|l| format!("//   {l}\n")).collect();
            format!(
                "// Generated by symdiff {}: the value and gradient of\n{body}// with respect to x = [{}].\n",
                env!("CARGO_PKG_VERSION"),
                vars.join(", ")
            )
        }
    };
    with_graph(&[f], vars, |g, roots, vs| {
        let grad = diff::reverse::try_gradient(g, roots[0], vs).map_err(|b| too_large("the gradient", b))?;
        Ok(jit::export::emit(g, vs, roots[0], &grad, name, lang, &header))
    })
}

/// The value and gradient of `f` as a standalone C function
/// `double name(const double *x, double *grad)`.
pub fn export_c(f: &Expr, vars: &[&str], name: &str) -> Result<String> {
    export(f, vars, name, jit::export::Lang::C)
}

/// The value and gradient of `f` as a standalone Rust function
/// `fn name(x: &[f64; N], grad: &mut [f64; N]) -> f64`.
pub fn export_rust(f: &Expr, vars: &[&str], name: &str) -> Result<String> {
    export(f, vars, name, jit::export::Lang::Rust)
}

#[cfg(test)]
mod tests {
    use super::{CompileOptions, check_against_interpreter, compile_gradient_params, compile_gradient_with};
    use crate::Expr;

    /// The check on `src`'s gradient over its variables (sorted) and `params`, against the
    /// interpreter of `against` (the same formula: it must pass; another: it must name the
    /// first entry that differs).
    fn check(src: &str, against: &str, params: &[&str], expected: &str) {
        let f = Expr::parse(src).unwrap();
        let names: Vec<String> =
            f.variables().into_iter().filter(|v| !params.contains(&v.as_str())).collect();
        let vars: Vec<&str> = names.iter().map(String::as_str).collect();
        let code = compile_gradient_params(&f, &vars, params).unwrap();
        let all: Vec<&str> = vars.iter().chain(params).copied().collect();
        let other = f.parse_with(against).unwrap();
        let got = match check_against_interpreter(&other, &all, vars.len(), &code) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        assert!(got.contains(expected), "{src} against {against}: {got}");
    }

    #[test]
    fn checks() {
        check("x^2*y + sin(x)", "x^2*y + sin(x)", &[], "ok");
        check("log(x)*y", "log(x)*y", &[], "ok"); // half the points are outside the domain
        check("(y - a*t)^2", "(y - a*t)^2", &["t", "y"], "ok");
        let rosen: Vec<String> =
            (0..99).map(|i| format!("100*(x{:02} - x{i:02}^2)^2 + (1 - x{i:02})^2", i + 1)).collect();
        check(&rosen.join(" + "), &rosen.join(" + "), &[], "ok"); // loops
        check("x^2*y + sin(x)", "x^2*y + cos(x)", &[], "the value is");
        check("x^2*y + x", "x^2*y + x + y", &[], "the value is");
        check("x*y", "x*y + 0*sqrt(y)", &[], "ok");
        check("x + 2*y", "x + 2*y + 1e-14*x", &[], "ok"); // within the tolerance
        check("x + y", "x + 2*y - y + 3*x - 3*x + 1e-3*y", &[], "the value is 1.56");
    }

    #[test]
    fn the_option_runs_the_check() {
        let f = Expr::parse("exp(x)*y - y^3").unwrap();
        let opts = CompileOptions { check: true, ..Default::default() };
        let g = compile_gradient_with(&f, &["x", "y"], &opts).unwrap();
        let mut grad = [0.0; 2];
        assert_eq!(g.eval(&[0.0, 1.0], &mut grad), 0.0);
    }
}
