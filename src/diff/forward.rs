//! Symbolic differentiation: `d/dx` of a node, as a new node.
//!
//! The algorithm is forward accumulation over the DAG. Visit the nodes reachable from the
//! root in id order (children first). A node that does not depend on `x` has derivative 0
//! and is skipped; for the others,
//!
//! ```text
//! d(node) = Σ_i  ∂node/∂arg_i · d(arg_i)        (over the arguments that depend on x)
//! ```
//!
//! with the partials from `rules.rs`. Each node's derivative is computed once (memoized), so
//! the work is linear in the size of the DAG (times the arity of products), and the result
//! shares every forward subexpression it uses. The simplifying constructors keep it compact.

use hashbrown::HashMap;

use super::rules::partial;
use crate::graph::{Graph, Id};

/// `d root / d var`; `var` must be a variable node.
pub fn derivative(g: &mut Graph, root: Id, var: Id) -> Id {
    let order = g.reachable(&[root]);
    let mut d: HashMap<Id, Id> = HashMap::new();
    let mut terms = Vec::new();
    for &id in &order {
        if id == var {
            let one = g.num(1.0);
            d.insert(id, one);
            continue;
        }
        terms.clear();
        if g.op(id) == crate::graph::Op::Pow
            && let [b, e] = *g.args(id)
            && let (Some(&db), Some(&de)) = (d.get(&b), d.get(&e))
        {
            // Both base and exponent depend on x: the combined rule
            // d(b^e) = b^e * (de*log(b) + e*db/b) prints as SymPy does (x^x*(log(x) + 1)).
            let r = super::rules::pow_both(g, id, db, de);
            d.insert(id, r);
            continue;
        }
        let n = g.args(id).len();
        for i in 0..n {
            let a = g.args(id)[i];
            if let Some(&da) = d.get(&a) {
                let p = partial(g, id, i);
                terms.push(g.mul(&[p, da]));
            }
        }
        if !terms.is_empty() {
            let sum = g.add(&terms);
            d.insert(id, sum);
        }
    }
    let r = match d.get(&root) {
        Some(&r) => r,
        None => g.num(0.0),
    };
    g.keep_undefined_of(root, r)
}

/// The `order`-th derivative (order 0 is the expression itself).
pub fn nth_derivative(g: &mut Graph, root: Id, var: Id, order: u32) -> Id {
    (0..order).fold(root, |e, _| derivative(g, e, var))
}

/// Every first partial, one per variable.
pub fn gradient(g: &mut Graph, root: Id, vars: &[Id]) -> Vec<Id> {
    vars.iter().map(|&v| derivative(g, root, v)).collect()
}

/// The Hessian matrix, row by row; only the upper triangle is derived, the rest mirrored.
pub fn hessian(g: &mut Graph, root: Id, vars: &[Id]) -> Vec<Vec<Id>> {
    let grad = gradient(g, root, vars);
    let n = vars.len();
    let mut h = vec![vec![root; n]; n];
    for i in 0..n {
        for j in i..n {
            let hij = derivative(g, grad[i], vars[j]);
            h[i][j] = hij;
            h[j][i] = hij;
        }
    }
    h
}
