//! Structural sparsity: which entries of a Jacobian or Hessian are not identically zero, and
//! the graph nodes of exactly those entries.
//!
//! **Structural, not sampled.** An entry belongs to the pattern when its simplified
//! derivative is not the number `0`. Nothing is evaluated, so an entry that happens to
//! vanish at some points (`∂²/∂x∂y` of `x*y*(x - 1)` at `x = 1/2`) is in the pattern and
//! simply computes 0 there; an entry that simplification proves zero (`∂/∂y` of `x + y - y`)
//! is not.
//!
//! **Cost in proportion to the entries' own graphs.** A row is derived by one reverse sweep
//! over the nodes its output reaches, with respect to the variables it reaches and no others:
//! the Jacobian of a banded system of 10⁵ equations costs 10⁵ small sweeps, never one sweep
//! per pair of (equation, variable). A dense pattern costs what its dense matrix would.
//!
//! **Order.** Entries are in row-major order, columns ascending within a row (coordinate
//! form, ready for CSR): the Jacobian of `(x*y, y + z)` over `x, y, z` is
//! `(0,0) (0,1) (1,1) (1,2)`.
//!
//! Nothing here compiles or evaluates; `jit::scalar::program` compiles the entries.

use hashbrown::HashMap;

use super::reverse::try_gradient;
use crate::graph::node::OverBudget;
use crate::graph::{Graph, Id, Op};

/// A sparsity pattern in coordinate form: entry `k` is at `(rows[k], cols[k])`, in row-major
/// order with ascending columns, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pattern {
    pub nrows: usize,
    pub ncols: usize,
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
}

impl Pattern {
    /// The pattern of the `(row, col)` pairs (any order, duplicates allowed).
    pub fn from_pairs(nrows: usize, ncols: usize, mut pairs: Vec<(u32, u32)>) -> Pattern {
        pairs.sort_unstable();
        pairs.dedup();
        let (rows, cols) = pairs.into_iter().unzip();
        Pattern { nrows, ncols, rows, cols }
    }

    /// Entry `k`'s position for each `(row, col)` of the pattern.
    pub fn positions(&self) -> HashMap<(u32, u32), u32> {
        self.rows.iter().zip(&self.cols).enumerate().map(|(k, (&r, &c))| ((r, c), k as u32)).collect()
    }
}

/// The variables among `inputs` that `root` reaches, as indices into `inputs`, ascending.
fn reached(g: &Graph, root: Id, index: &HashMap<Id, u32>) -> Vec<u32> {
    let mut found: Vec<u32> = g
        .reachable(&[root])
        .into_iter()
        .filter(|&id| matches!(g.op(id), Op::Var(_)))
        .filter_map(|id| index.get(&id).copied())
        .collect();
    found.sort_unstable();
    found
}

/// The rows of `outputs`' Jacobian with respect to `inputs`, each restricted to the columns
/// `keep` admits: `(column, entry)` pairs, columns ascending, no structural zeros.
fn rows(
    g: &mut Graph,
    outputs: &[Id],
    inputs: &[Id],
    keep: impl Fn(usize, u32) -> bool,
) -> Result<Vec<Vec<(u32, Id)>>, OverBudget> {
    let index: HashMap<Id, u32> = inputs.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
    let mut out = Vec::with_capacity(outputs.len());
    for (r, &o) in outputs.iter().enumerate() {
        let cols: Vec<u32> = reached(g, o, &index).into_iter().filter(|&c| keep(r, c)).collect();
        let wrt: Vec<Id> = cols.iter().map(|&c| inputs[c as usize]).collect();
        let d = try_gradient(g, o, &wrt)?;
        out.push(cols.into_iter().zip(d).filter(|&(_, d)| !g.is_num(d, 0.0)).collect());
    }
    Ok(out)
}

/// The pattern and the entries (in pattern order) of `rows`.
fn assemble(nrows: usize, ncols: usize, rows: Vec<Vec<(u32, Id)>>) -> (Pattern, Vec<Id>) {
    let mut p = Pattern { nrows, ncols, ..Pattern::default() };
    let mut entries = Vec::new();
    for (r, row) in rows.into_iter().enumerate() {
        for (c, d) in row {
            p.rows.push(r as u32);
            p.cols.push(c);
            entries.push(d);
        }
    }
    (p, entries)
}

/// The Jacobian of `outputs` with respect to `inputs`: its pattern and its entries.
pub fn jacobian(g: &mut Graph, outputs: &[Id], inputs: &[Id]) -> Result<(Pattern, Vec<Id>), OverBudget> {
    let rows = rows(g, outputs, inputs, |_, _| true)?;
    Ok(assemble(outputs.len(), inputs.len(), rows))
}

/// The Hessian of `f` with respect to `inputs`: its pattern and entries, the lower triangle
/// (`col <= row`) or, with `full`, every entry (the upper triangle mirrors the lower one's
/// nodes). Row `i` is the reverse-mode derivative of `∂f/∂x_i`.
pub fn hessian(g: &mut Graph, f: Id, inputs: &[Id], full: bool) -> Result<(Pattern, Vec<Id>), OverBudget> {
    let grad = try_gradient(g, f, inputs)?;
    let lower = rows(g, &grad, inputs, |r, c| c as usize <= r)?;
    let n = inputs.len();
    if !full {
        return Ok(assemble(n, n, lower));
    }
    let mut all: Vec<Vec<(u32, Id)>> = vec![Vec::new(); n];
    for (r, row) in lower.iter().enumerate() {
        for &(c, d) in row {
            all[r].push((c, d));
            if c as usize != r {
                all[c as usize].push((r as u32, d));
            }
        }
    }
    for row in &mut all {
        row.sort_unstable_by_key(|e| e.0);
    }
    Ok(assemble(n, n, all))
}

#[cfg(test)]
mod tests {
    use super::{hessian, jacobian};

    /// The pattern of the Jacobian (or, with `h`, the lower or full Hessian) of `src` over
    /// the variables `vars`, as `"r,c r,c ..."`.
    fn check(src: &str, vars: &[&str], what: &str, expected: &str) {
        let first = crate::Expr::parse(src.split(';').next().unwrap()).expect("formula");
        let exprs: Vec<_> = src.split(';').map(|s| first.parse_with(s).expect("formula")).collect();
        let mut g = first.graph();
        let outs: Vec<_> = exprs.iter().map(|e| e.node()).collect();
        let vs: Vec<_> = vars.iter().map(|v| g.var(v)).collect();
        let (p, entries) = match what {
            "jacobian" => jacobian(&mut g, &outs, &vs).unwrap(),
            "lower" => hessian(&mut g, outs[0], &vs, false).unwrap(),
            _ => hessian(&mut g, outs[0], &vs, true).unwrap(),
        };
        assert_eq!(entries.len(), p.rows.len());
        let got: Vec<String> = p.rows.iter().zip(&p.cols).map(|(r, c)| format!("{r},{c}")).collect();
        assert_eq!(got.join(" "), expected, "{what} of {src}");
    }

    #[test]
    fn patterns() {
        check("x*y; y + z", &["x", "y", "z"], "jacobian", "0,0 0,1 1,1 1,2");
        check("x + y - y; 3", &["x", "y"], "jacobian", "0,0");
        check("sin(x)*y", &["y", "x"], "jacobian", "0,0 0,1");
        check("x^2*y + z^2", &["x", "y", "z"], "lower", "0,0 1,0 2,2");
        check("x^2*y + z^2", &["x", "y", "z"], "full", "0,0 0,1 1,0 2,2");
        check("x*y*(x - 1)", &["x", "y"], "lower", "0,0 1,0");
        check("x + y", &["x", "y"], "lower", "");
        check("exp(x*y*z)", &["x", "y", "z"], "lower", "0,0 1,0 1,1 2,0 2,1 2,2");
        check("sign(x)*y", &["x", "y"], "lower", "");
    }
}
