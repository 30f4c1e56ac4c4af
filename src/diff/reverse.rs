//! Reverse mode: the gradient of one output with respect to many inputs, built as graph
//! nodes in one backward sweep.
//!
//! PRECONDITION: `output` and `inputs` are nodes of `g`; inputs are variable nodes.
//! POSTCONDITION: the result has one node per input, `∂output/∂input`, built in the same
//! graph and sharing the forward subexpressions it needs.
//!
//! The algorithm. Take the nodes reachable from the output in id order (a topological
//! order). Mark those that depend on a requested input (a forward scan); only they get an
//! adjoint, so nothing is built for data that needs no gradient. Then walk the marked nodes
//! backwards, from the output (adjoint 1) down: when a node is reached, every node that uses
//! it has already been visited and has pushed its contribution, so its adjoint is the sum of
//! those contributions, built as **one** n-ary sum. The node then pushes
//! `adjoint · ∂node/∂arg_i` to each marked argument, with the partials from `rules.rs` (the
//! same rules symbolic `d/dx` uses).
//!
//! Cost: one partial per (node, dependent argument) edge, so the gradient graph is a constant
//! factor larger than the function's, whatever the number of inputs (the cheap-gradient
//! principle). Products of k factors cost O(k²) for their k partials; the simplifier keeps
//! nested products at most `FLATTEN_LIMIT` wide, so this is bounded except for very long
//! products written out in the input.

use smallvec::SmallVec;

use super::rules::partial;
use crate::graph::{Graph, Id, NodeMap};

/// `[∂output/∂inputs[0], ∂output/∂inputs[1], ...]`.
pub fn gradient(g: &mut Graph, output: Id, inputs: &[Id]) -> Vec<Id> {
    let order = g.reachable(&[output]);
    // Forward: which nodes depend on a requested input.
    let mut depends = NodeMap::new(&order, false);
    for &i in inputs {
        depends.set(i, true);
    }
    for &id in &order {
        if g.args(id).iter().any(|a| *depends.get(*a)) {
            depends.set(id, true);
        }
    }
    // Backward: accumulate contributions, one n-ary sum per node.
    let mut contributions: NodeMap<SmallVec<[Id; 2]>> = NodeMap::new(&order, SmallVec::new());
    let mut adjoint: NodeMap<Option<Id>> = NodeMap::new(&order, None);
    let one = g.num(1.0);
    contributions.get_mut(output).push(one);
    for &id in order.iter().rev() {
        if !*depends.get(id) || contributions.get(id).is_empty() {
            continue;
        }
        let parts = std::mem::take(contributions.get_mut(id));
        let adj = g.add(&parts);
        adjoint.set(id, Some(adj));
        if g.is_num(adj, 0.0) {
            continue;
        }
        let n = g.args(id).len();
        for i in 0..n {
            let a = g.args(id)[i];
            if !*depends.get(a) {
                continue;
            }
            let p = partial(g, id, i);
            let c = g.mul(&[adj, p]);
            if !g.is_num(c, 0.0) {
                contributions.get_mut(a).push(c);
            }
        }
    }
    inputs.iter().map(|&i| adjoint.get(i).unwrap_or_else(|| g.num(0.0))).collect()
}

/// The Jacobian of `outputs` (rows) with respect to `inputs` (columns): one reverse sweep
/// per output.
pub fn jacobian(g: &mut Graph, outputs: &[Id], inputs: &[Id]) -> Vec<Vec<Id>> {
    outputs.iter().map(|&o| gradient(g, o, inputs)).collect()
}

/// The Hessian of `output`: reverse mode over each component of the reverse-mode gradient.
/// Symmetric by construction of the mathematics, not of the graph; only the upper triangle is
/// derived and mirrored.
pub fn hessian(g: &mut Graph, output: Id, inputs: &[Id]) -> Vec<Vec<Id>> {
    let grad = gradient(g, output, inputs);
    let n = inputs.len();
    let mut h = vec![vec![output; n]; n];
    for i in 0..n {
        let row = gradient(g, grad[i], &inputs[i..]);
        for (k, &hij) in row.iter().enumerate() {
            h[i][i + k] = hij;
            h[i + k][i] = hij;
        }
    }
    h
}
