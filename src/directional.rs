//! Directional derivatives compiled without forming the matrix: Hessian-vector products
//! `H(x)·v`, Jacobian-vector products `J(x)·v` and vector-Jacobian products `uᵀ·J(x)`.
//!
//! Each is a gradient or a vector function over the point *and* the direction, built as
//! graph nodes and compiled like any other:
//!
//! * `H·v = ∇ₓ(∇f·v)`: reverse mode over the scalar `s(x, v) = Σᵢ vᵢ·∂f/∂xᵢ`, so a sum of
//!   like terms keeps its loops (`s` is again such a sum) and the cost stays a small multiple
//!   of the gradient's, whatever `n`;
//! * `uᵀ·J = ∇ₓ(Σᵢ uᵢ·fᵢ)`: one reverse sweep;
//! * `J·v`: row `i` is `Σⱼ Jᵢⱼ·vⱼ` over the structurally nonzero entries of row `i` only
//!   (`diff::sparsity`), so a banded system costs its bands.
//!
//! The direction's variables are named `#v0, #v1, ...` (a name no formula can write) and
//! are forgotten with every other node built here once the code is compiled: the user's
//! graph is left as it was.

use crate::compiled::{check_vars, gradient_error, lengths, with_graph};
use crate::diff::{reverse, sparsity};
use crate::expr::{Error, Expr, Result};
use crate::graph::{Graph, Id};
use crate::jit::scalar::{GradientCode, compile_gradient};
use crate::jit::{self, CompileOptions, CompileStats};

std::thread_local! {
    /// `(inputs, outputs)` scratch of one call: the point and the direction side by side.
    static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `x` then `v` in one input array, and an output array of `outputs` entries, for `f`.
fn with_scratch<T>(x: &[f64], v: &[f64], outputs: usize, f: impl FnOnce(&[f64], &mut [f64]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (input, output) = &mut *s;
        input.clear();
        input.extend_from_slice(x);
        input.extend_from_slice(v);
        output.clear();
        output.resize(outputs, 0.0);
        f(input, output)
    })
}

/// Runs `build` on the graph of `exprs` (one shared graph: a copy when they come from
/// several), with the variables of `vars` and `k` fresh direction variables, and forgets
/// every node it built afterwards.
fn in_scratch_graph<T>(
    exprs: &[&Expr],
    vars: &[&str],
    k: usize,
    build: impl FnOnce(&mut Graph, &[Id], &[Id], &[Id]) -> Result<T>,
) -> Result<T> {
    if exprs.is_empty() {
        return Err(Error::Invalid("nothing to compile: no expressions".into()));
    }
    check_vars(exprs, vars)?;
    with_graph(exprs, vars, |g, roots, vs| {
        let mark = g.mark();
        let dir: Vec<Id> = (0..k).map(|i| g.var(&format!("#v{i}"))).collect();
        let r = build(g, roots, vs, &dir);
        g.rollback(mark);
        r
    })
}

/// A compiled directional derivative: a function of a point `x` and a direction.
pub struct CompiledDirectional {
    code: DirectionalCode,
    /// Variables (the length of `x`).
    n: usize,
    /// Length of the direction.
    k: usize,
    /// Length of the result.
    m: usize,
}

enum DirectionalCode {
    /// A gradient with respect to `x`, the direction its parameters.
    Gradient(GradientCode),
    /// A vector function of `x ++ direction` with `m` outputs.
    Vector(jit::scalar::VectorCode),
}

impl CompiledDirectional {
    /// Number of variables (the length of `x`).
    pub fn inputs(&self) -> usize {
        self.n
    }

    /// Length of the direction (`v` or `u`).
    pub fn direction_len(&self) -> usize {
        self.k
    }

    /// Length of the result.
    pub fn outputs(&self) -> usize {
        self.m
    }

    /// How the product was compiled: nodes, chunks, classes of like terms in loops.
    pub fn stats(&self) -> &CompileStats {
        match &self.code {
            DirectionalCode::Gradient(c) => c.stats(),
            DirectionalCode::Vector(c) => c.stats(),
        }
    }

    /// The product at the point `x` in the direction `dir`, into `out`. Wrong lengths are
    /// an error; nothing is written then.
    pub fn eval(&self, x: &[f64], dir: &[f64], out: &mut [f64]) -> Result<()> {
        if x.len() != self.n || dir.len() != self.k || out.len() != self.m {
            return Err(Error::Invalid(format!(
                "a directional derivative at {} values in a direction of {} into {} (expected {}, {} and {})",
                x.len(),
                dir.len(),
                out.len(),
                self.n,
                self.k,
                self.m
            )));
        }
        match &self.code {
            DirectionalCode::Gradient(c) => with_scratch(x, dir, 0, |input, _| {
                c.call(input, out).map(|_| ()).ok_or_else(|| lengths(self.n, input.len(), out.len()))
            }),
            DirectionalCode::Vector(c) => with_scratch(x, dir, 0, |input, _| {
                if c.call1(input, out) {
                    Ok(())
                } else {
                    Err(lengths(self.n + self.k, input.len(), out.len()))
                }
            }),
        }
    }
}

/// Compiles the Hessian-vector product `H(x)·v` of `f` (`n` values from `x` and `v` of `n`
/// each), as the gradient of `∇f(x)·v` with respect to `x`: never the matrix, and loops
/// where `f` is a large sum of like terms.
///
/// ```
/// let f = symdiff::Expr::parse("x^2*y + y^3")?;
/// let hv = symdiff::compile_hvp(&f, &["x", "y"])?;
/// let mut out = [0.0; 2];
/// hv.eval(&[1.0, 2.0], &[1.0, 0.0], &mut out)?; // the first column: (2y, 2x)
/// assert_eq!(out, [4.0, 2.0]);
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_hvp(f: &Expr, vars: &[&str]) -> Result<CompiledDirectional> {
    let n = vars.len();
    let code = in_scratch_graph(&[f], vars, n, |g, roots, vs, v| {
        let grad = reverse::try_gradient(g, roots[0], vs)
            .map_err(|b| crate::compiled::too_large("the Hessian", b))?;
        let terms: Vec<Id> = grad.iter().zip(v).map(|(&d, &vi)| g.mul(&[vi, d])).collect();
        let s = g.add(&terms);
        compile_gradient(g, s, vs, v, &CompileOptions::default())
            .map_err(|e| gradient_error("the Hessian", e))
    })?;
    Ok(CompiledDirectional { code: DirectionalCode::Gradient(code), n, k: n, m: n })
}

/// Compiles the vector-Jacobian product `uᵀ·J(x)` of `(f_1, ..., f_m)` (`n` values from `x`
/// and `u` of `m`), as the gradient of `Σᵢ uᵢ·fᵢ`: one reverse sweep.
///
/// ```
/// let a = symdiff::Expr::parse("x*y")?;
/// let b = a.parse_with("x + y^2")?;
/// let vjp = symdiff::compile_vjp(&[a, b], &["x", "y"])?;
/// let mut out = [0.0; 2];
/// vjp.eval(&[2.0, 3.0], &[1.0, 10.0], &mut out)?; // (y + 10, x + 60)
/// assert_eq!(out, [13.0, 62.0]);
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_vjp(fs: &[Expr], vars: &[&str]) -> Result<CompiledDirectional> {
    let (n, m) = (vars.len(), fs.len());
    let refs: Vec<&Expr> = fs.iter().collect();
    let code = in_scratch_graph(&refs, vars, m, |g, roots, vs, u| {
        let terms: Vec<Id> = roots.iter().zip(u).map(|(&f, &ui)| g.mul(&[ui, f])).collect();
        let s = g.add(&terms);
        compile_gradient(g, s, vs, u, &CompileOptions::default())
            .map_err(|e| gradient_error("the Jacobian", e))
    })?;
    Ok(CompiledDirectional { code: DirectionalCode::Gradient(code), n, k: m, m: n })
}

/// Compiles the Jacobian-vector product `J(x)·v` of `(f_1, ..., f_m)` (`m` values from `x`
/// and `v` of `n` each): row `i` is `Σⱼ Jᵢⱼ·vⱼ` over the entries of row `i` that are not
/// identically zero.
///
/// ```
/// let a = symdiff::Expr::parse("x*y")?;
/// let b = a.parse_with("x + y^2")?;
/// let jvp = symdiff::compile_jvp(&[a, b], &["x", "y"])?;
/// let mut out = [0.0; 2];
/// jvp.eval(&[2.0, 3.0], &[1.0, 10.0], &mut out)?; // (y + 10x, 1 + 60)
/// assert_eq!(out, [23.0, 61.0]);
/// # Ok::<(), symdiff::Error>(())
/// ```
pub fn compile_jvp(fs: &[Expr], vars: &[&str]) -> Result<CompiledDirectional> {
    let (n, m) = (vars.len(), fs.len());
    let refs: Vec<&Expr> = fs.iter().collect();
    let code = in_scratch_graph(&refs, vars, n, |g, roots, vs, v| {
        let (p, entries) =
            sparsity::jacobian(g, roots, vs).map_err(|b| crate::compiled::too_large("the Jacobian", b))?;
        let mut rows: Vec<Vec<Id>> = vec![Vec::new(); m];
        for ((&r, &c), &d) in p.rows.iter().zip(&p.cols).zip(&entries) {
            let t = g.mul(&[d, v[c as usize]]);
            rows[r as usize].push(t);
        }
        let outs: Vec<Id> = rows.iter().map(|terms| g.add(terms)).collect();
        let inputs: Vec<Id> = vs.iter().chain(v).copied().collect();
        jit::scalar::compile_vector(g, &outs, &inputs).map_err(|e| gradient_error("the Jacobian", e))
    })?;
    Ok(CompiledDirectional { code: DirectionalCode::Vector(code), n, k: n, m })
}
