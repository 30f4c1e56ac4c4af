//! Symbolic differentiation: `d/dx` of a node, as a new node.
//!
//! The algorithm is forward accumulation over the DAG. A node that does not depend on `x` has
//! derivative 0 and is skipped. The nodes reachable from the root are visited in id order
//! (children first); when the same root is differentiated again (with respect to another
//! variable: `grad`, a Hessian row, `symdiff diff` of 100,000 variables) only the nodes
//! between `x` and the root are visited, found by walking *up* from `x` through the root's
//! users index ([`Graph::repeated_users`]), so all the partials cost in proportion to the
//! function, not once per variable. Either way, for each node that depends on `x`
//!
//! ```text
//! d(node) = Σ_i  ∂node/∂arg_i · d(arg_i)        (over the arguments that depend on x)
//! ```
//!
//! with the partials from `rules.rs`. Each node's derivative is computed once (memoized), so
//! the work is linear in the size of the DAG, and the result shares every forward
//! subexpression it uses. A derivative `d(arg)` is shared by every user of `arg`, so it is
//! multiplied and summed in with `Graph::mul_shared` and `Graph::add_shared`, which keep it
//! one argument rather than copying its factors or terms into each use
//! (`simplify::SHARE_LIMIT`; up to `PRINTED_SHARE_LIMIT` for functions of fewer than
//! `PRINTED_OPS` operations, whose derivatives are printed), and the partials of a product of many factors that depend on
//! `x` come from shared prefix and suffix products (`rules::product_partials`). So each
//! order of derivative costs a bounded number of operations per edge of the DAG below it,
//! counted in operations, not in nodes: `d^10/dx^10` of `sin(sin(...(x)))` stays small.
//!
//! The `try_` functions check the graph's node budget after every node (they serve input from
//! users: `diff(...)`, the REPL's `d/dx`, `grad` and `hessian`); the others have no limit.

use hashbrown::HashSet;

use super::rules::{is_wide, partial, product_partials};
use crate::graph::node::OverBudget;
use crate::graph::simplify::{PRINTED_SHARE_LIMIT, SHARE_LIMIT};
use crate::graph::{Graph, Id, NodeMap, Op};

/// Functions of fewer operations than this are differentiated for reading: shared
/// derivatives merge into their uses up to [`PRINTED_SHARE_LIMIT`] arguments, so that printed
/// results keep their compact canonical form. Larger ones (derivatives of derivatives above
/// all, whose copies would compound order after order) use [`SHARE_LIMIT`].
const PRINTED_OPS: usize = 1_000;

/// The share limit for differentiating a function of `ops` operations (see [`PRINTED_OPS`]).
fn share_limit(ops: usize) -> usize {
    if ops < PRINTED_OPS { PRINTED_SHARE_LIMIT } else { SHARE_LIMIT }
}

/// `d root / d var`; `var` must be a variable node. Stops with an error once the graph is
/// over its node budget.
pub fn try_derivative(g: &mut Graph, root: Id, var: Id) -> Result<Id, OverBudget> {
    let Some(users) = g.repeated_users(root) else {
        return scan(g, root, var);
    };
    let limit = share_limit(users.ops());
    let Some(start) = users.position(var) else {
        let zero = g.num(0.0);
        return Ok(g.keep_undefined_of(root, zero));
    };
    // Walk up from `var`: every (user, argument index) edge through which a node depends on it.
    let mut seen: HashSet<u32> = HashSet::new();
    seen.insert(start);
    let mut stack = vec![start];
    let mut through: Vec<(u32, u32)> = Vec::new();
    while let Some(p) = stack.pop() {
        for &(user, i) in users.of(p) {
            through.push((user, i));
            if seen.insert(user) {
                stack.push(user);
            }
        }
    }
    // By user, in id order (children first), argument indices ascending.
    through.sort_unstable();
    let mut visit: Vec<Id> = through.iter().map(|&(p, _)| users.node(p)).collect();
    visit.dedup();
    visit.push(var);
    let mut d: NodeMap<Option<Id>> = NodeMap::new(&visit, None);
    let one = g.num(1.0);
    d.set(var, Some(one));
    let mut terms = Vec::new();
    for group in through.chunk_by(|a, b| a.0 == b.0) {
        let id = users.node(group[0].0);
        terms.clear();
        let r = if g.op(id) == Op::Pow && group.len() == 2 {
            // Both base and exponent depend on x: the combined rule
            // d(b^e) = b^e * (de*log(b) + e*db/b) prints as SymPy does (x^x*(log(x) + 1)).
            let [b, e] = [g.args(id)[0], g.args(id)[1]];
            let (db, de) = (derivative_of(&d, b), derivative_of(&d, e));
            super::rules::pow_both(g, id, db, de, limit)
        } else if is_wide(g, id, group.len()) {
            let which: Vec<usize> = group.iter().map(|&(_, i)| i as usize).collect();
            let one = g.num(1.0);
            for (&i, part) in which.iter().zip(product_partials(g, id, &which, one)) {
                let da = derivative_of(&d, g.args(id)[i]);
                terms.push(g.mul_shared_within(part, da, limit));
            }
            g.add_shared_within(&terms, limit)
        } else {
            for &(_, i) in group {
                let a = g.args(id)[i as usize];
                let da = derivative_of(&d, a);
                let part = partial(g, id, i as usize);
                terms.push(g.mul_shared_within(part, da, limit));
            }
            g.add_shared_within(&terms, limit)
        };
        d.set(id, Some(r));
        g.check_budget()?;
    }
    let r = derivative_of(&d, root);
    Ok(g.keep_undefined_of(root, r))
}

/// [`try_derivative`] by one scan over the whole DAG (the first derivative of a root): the
/// same nodes in the same order, so the same result.
fn scan(g: &mut Graph, root: Id, var: Id) -> Result<Id, OverBudget> {
    let order = g.reachable(&[root]);
    let limit = share_limit(order.iter().map(|&id| g.ops(id)).sum());
    let mut d: NodeMap<Option<Id>> = NodeMap::new(&order, None);
    let mut terms = Vec::new();
    for &id in &order {
        if id == var {
            let one = g.num(1.0);
            d.set(id, Some(one));
            continue;
        }
        if g.op(id) == Op::Pow
            && let [b, e] = *g.args(id)
            && let (Some(db), Some(de)) = (*d.get(b), *d.get(e))
        {
            let r = super::rules::pow_both(g, id, db, de, limit); // see try_derivative
            d.set(id, Some(r));
            g.check_budget()?;
            continue;
        }
        terms.clear();
        let which: Vec<usize> = (0..g.args(id).len()).filter(|&i| d.get(g.args(id)[i]).is_some()).collect();
        if is_wide(g, id, which.len()) {
            let one = g.num(1.0);
            for (&i, part) in which.iter().zip(product_partials(g, id, &which, one)) {
                let da = derivative_of(&d, g.args(id)[i]);
                terms.push(g.mul_shared_within(part, da, limit));
            }
        } else {
            for i in which {
                let da = derivative_of(&d, g.args(id)[i]);
                let part = partial(g, id, i);
                terms.push(g.mul_shared_within(part, da, limit));
            }
        }
        if !terms.is_empty() {
            let sum = g.add_shared_within(&terms, limit);
            d.set(id, Some(sum));
            g.check_budget()?;
        }
    }
    let r = match *d.get(root) {
        Some(r) => r,
        None => g.num(0.0),
    };
    Ok(g.keep_undefined_of(root, r))
}

/// The derivative of a node below the current one (children are visited first).
fn derivative_of(d: &NodeMap<Option<Id>>, a: Id) -> Id {
    d.get(a).expect("children are differentiated before their users")
}

/// The `order`-th derivative (order 0 is the expression itself), within the node budget.
pub fn try_nth_derivative(g: &mut Graph, root: Id, var: Id, order: u32) -> Result<Id, OverBudget> {
    let mut e = root;
    for _ in 0..order {
        e = try_derivative(g, e, var)?;
    }
    Ok(e)
}

/// [`try_nth_derivative`] without a node budget.
pub fn nth_derivative(g: &mut Graph, root: Id, var: Id, order: u32) -> Id {
    g.unbudgeted(|g| try_nth_derivative(g, root, var, order)).unwrap_or(root)
}

/// Every first partial, one per variable, within the node budget.
pub fn try_gradient(g: &mut Graph, root: Id, vars: &[Id]) -> Result<Vec<Id>, OverBudget> {
    vars.iter().map(|&v| try_derivative(g, root, v)).collect()
}

/// The Hessian matrix, row by row; only the upper triangle is derived, the rest mirrored.
/// Within the node budget.
pub fn try_hessian(g: &mut Graph, root: Id, vars: &[Id]) -> Result<Vec<Vec<Id>>, OverBudget> {
    let grad = try_gradient(g, root, vars)?;
    let n = vars.len();
    let mut h = vec![vec![root; n]; n];
    for i in 0..n {
        for j in i..n {
            let hij = try_derivative(g, grad[i], vars[j])?;
            h[i][j] = hij;
            h[j][i] = hij;
        }
    }
    Ok(h)
}

/// [`try_hessian`] without a node budget.
pub fn hessian(g: &mut Graph, root: Id, vars: &[Id]) -> Vec<Vec<Id>> {
    g.unbudgeted(|g| try_hessian(g, root, vars)).unwrap_or_default()
}
