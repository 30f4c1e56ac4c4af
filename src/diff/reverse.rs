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
//! principle). Two things keep that constant small:
//!
//! * the partials of a product of k factors, many of them depending on the inputs, are built
//!   from shared prefix and suffix products seeded with the adjoint
//!   (`rules::product_partials`): at most 3k multiplications, not the k² of k products of
//!   k-1 factors;
//! * an adjoint is multiplied into each contribution, and the contributions are summed, with
//!   `Graph::mul_shared` and `Graph::add_shared`, which keep a shared adjoint one argument
//!   instead of copying its factors into every use (`simplify::SHARE_LIMIT`).
//!
//! The compiled gradient program (function and gradient) stays within 4 times the
//! function's operations; `tests/cheap_gradient.rs` holds it to that.

use smallvec::SmallVec;

use super::rules::{is_wide, product_partials, unbroadcast, vjp};
use crate::graph::node::OverBudget;
use crate::graph::{Graph, Id, NodeMap};

/// `[∂output/∂inputs[0], ∂output/∂inputs[1], ...]`.
pub fn gradient(g: &mut Graph, output: Id, inputs: &[Id]) -> Vec<Id> {
    gradient_with_adjoints(g, output, inputs, &[]).0
}

/// [`gradient`], stopping with an error once the graph is over its node budget (for input
/// from users).
pub fn try_gradient(g: &mut Graph, output: Id, inputs: &[Id]) -> Result<Vec<Id>, OverBudget> {
    Ok(try_gradient_with_adjoints(g, output, inputs, &[])?.0)
}

/// [`gradient`], also returning the adjoints `∂output/∂node` of the nodes in `keep` (`None`
/// for a node that does not lie between the inputs and the output).
pub fn gradient_with_adjoints(
    g: &mut Graph,
    output: Id,
    inputs: &[Id],
    keep: &[Id],
) -> (Vec<Id>, Vec<Option<Id>>) {
    g.unbudgeted(|g| try_gradient_with_adjoints(g, output, inputs, keep)).unwrap_or_default()
}

/// [`gradient_with_adjoints`] within the node budget (checked after every node).
pub fn try_gradient_with_adjoints(
    g: &mut Graph,
    output: Id,
    inputs: &[Id],
    keep: &[Id],
) -> Result<(Vec<Id>, Vec<Option<Id>>), OverBudget> {
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
        let adj = g.add_shared(&parts);
        adjoint.set(id, Some(adj));
        if g.is_zero(adj) {
            continue;
        }
        let which: Vec<usize> = (0..g.args(id).len()).filter(|&i| *depends.get(g.args(id)[i])).collect();
        if is_wide(g, id, which.len()) {
            // A wide product: its partials from shared prefix and suffix products.
            for (&i, c) in which.iter().zip(product_partials(g, id, &which, adj)) {
                let a = g.args(id)[i];
                let c = unbroadcast(g, c, a);
                if !g.is_zero(c) {
                    contributions.get_mut(a).push(c);
                }
            }
        } else {
            for i in which {
                let a = g.args(id)[i];
                let c = vjp(g, id, i, adj);
                if !g.is_zero(c) {
                    contributions.get_mut(a).push(c);
                }
            }
        }
        g.check_budget()?;
    }
    let grads = inputs
        .iter()
        .map(|&i| {
            let d = match adjoint.get(i) {
                Some(a) => *a,
                None => {
                    let zero = g.num(0.0);
                    let s = g.shape_id_of(i);
                    g.broadcast(zero, s)
                }
            };
            g.keep_undefined_of(output, d) // an output without a value has no gradient
        })
        .collect();
    Ok((grads, keep.iter().map(|&k| *adjoint.get(k)).collect()))
}

/// The Jacobian of `outputs` (rows) with respect to `inputs` (columns): one reverse sweep
/// per output. Within the node budget.
pub fn try_jacobian(g: &mut Graph, outputs: &[Id], inputs: &[Id]) -> Result<Vec<Vec<Id>>, OverBudget> {
    outputs.iter().map(|&o| try_gradient(g, o, inputs)).collect()
}

/// The Hessian of `output`: reverse mode over each component of the reverse-mode gradient.
/// Symmetric by construction of the mathematics, not of the graph; only the upper triangle is
/// derived and mirrored. Within the node budget.
pub fn try_hessian(g: &mut Graph, output: Id, inputs: &[Id]) -> Result<Vec<Vec<Id>>, OverBudget> {
    let grad = try_gradient(g, output, inputs)?;
    let n = inputs.len();
    let mut h = vec![vec![output; n]; n];
    for i in 0..n {
        let row = try_gradient(g, grad[i], &inputs[i..])?;
        for (k, &hij) in row.iter().enumerate() {
            h[i][i + k] = hij;
            h[i + k][i] = hij;
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    //! Reverse mode over tensor operators against central finite differences, in f64.
    //! Each case is `sum(R * f(inputs))` for a fixed random weight tensor `R`, so every
    //! element of `f`'s output is checked, not just their sum.

    use ndarray::{ArrayD, IxDyn};

    use super::gradient;
    use crate::graph::tensor::eval_tensors;
    use crate::graph::{Func, Graph, Id};

    /// Deterministic pseudo-random values in (-1, 1).
    fn fill(shape: &[usize], seed: u64) -> ArrayD<f64> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
    }

    /// Builds `f` over variables of the given shapes, weights its output and checks the
    /// reverse-mode gradient of every input against finite differences.
    fn check(name: &str, shapes: &[&[usize]], f: impl Fn(&mut Graph, &[Id]) -> Id) {
        let mut g = Graph::new();
        let vars: Vec<Id> =
            shapes.iter().enumerate().map(|(i, s)| g.var_shaped(&format!("v{i}"), s).unwrap()).collect();
        let out = f(&mut g, &vars);
        let out_shape = g.shape(out).to_vec();
        let r = g.var_shaped("weights", &out_shape).unwrap();
        let weighted = g.mul(&[r, out]);
        let loss = g.sum(weighted, None);
        let grads = gradient(&mut g, loss, &vars);
        let mut values: Vec<ArrayD<f64>> =
            shapes.iter().enumerate().map(|(i, s)| fill(s, i as u64 + 1)).collect();
        if name.contains("labels") {
            values[1] = ArrayD::from_shape_fn(IxDyn(shapes[1]), |i| (i[0] % 3) as f64);
        }
        let weights = fill(&out_shape, 99);
        let eval = |g: &Graph, vals: &[ArrayD<f64>], roots: &[Id]| {
            eval_tensors::<f64>(g, roots, &|v| {
                if v == r {
                    return Some(weights.view());
                }
                vars.iter().position(|&x| x == v).map(|k| vals[k].view())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let got = eval(&g, &values, &grads);
        for (k, grad) in got.iter().enumerate() {
            if name.contains("labels") && k == 1 {
                continue; // labels are data
            }
            assert_eq!(grad.shape(), shapes[k], "{name}: gradient {k} has the wrong shape");
            for idx in 0..values[k].len() {
                let h = 1e-6;
                let mut plus = values.clone();
                let mut minus = values.clone();
                plus[k].as_slice_mut().unwrap()[idx] += h;
                minus[k].as_slice_mut().unwrap()[idx] -= h;
                let fd = (eval(&g, &plus, &[loss])[0].sum() - eval(&g, &minus, &[loss])[0].sum()) / (2.0 * h);
                let an = grad.iter().nth(idx).copied().unwrap_or(f64::NAN);
                assert!(
                    (fd - an).abs() <= 1e-6 * fd.abs().max(1.0),
                    "{name}: d/dv{k}[{idx}] = {an}, finite difference {fd}"
                );
            }
        }
    }

    #[rustfmt::skip]
    #[test]
    fn tensor_operators_against_finite_differences() {
        check("matmul", &[&[3, 4], &[4, 2]], |g, v| g.matmul(v[0], v[1]));
        check("bias broadcast", &[&[3, 4], &[4]], |g, v| g.add(&[v[0], v[1]]));
        check("column broadcast", &[&[3, 4], &[3, 1]], |g, v| g.mul(&[v[0], v[1]]));
        check("scalar broadcast", &[&[3, 4], &[]], |g, v| { let two = g.num_id(2.0); let p = g.pow(v[0], two); g.mul(&[p, v[1]]) });
        check("sum axis 0", &[&[3, 4]], |g, v| g.sum(v[0], Some(0)));
        check("sum axis 1", &[&[3, 4]], |g, v| g.sum(v[0], Some(1)));
        check("sum all", &[&[3, 4]], |g, v| g.sum(v[0], None));
        check("transpose", &[&[3, 4]], |g, v| g.transpose(v[0]));
        check("reshape", &[&[3, 4]], |g, v| { let s = g.shape_id(&[2, 6]); g.reshape(v[0], s) });
        check("broadcast op", &[&[4]], |g, v| { let s = g.shape_id(&[3, 4]); g.broadcast(v[0], s) });
        check("logsoftmax", &[&[3, 5]], |g, v| g.log_softmax(v[0]));
        check("max axis 1", &[&[3, 5]], |g, v| g.max(v[0], Some(1)));
        check("max all", &[&[3, 5]], |g, v| g.max(v[0], None));
        check("functions", &[&[3, 4]], |g, v| {
            let t = g.func(Func::Tanh, v[0]);
            let s = g.func(Func::Sigmoid, v[0]);
            let sp = g.func(Func::Softplus, t);
            g.mul(&[s, sp])
        });
        check("cross-entropy with labels", &[&[4, 3], &[4]], |g, v| {
            let lp = g.log_softmax(v[0]);
            let oh = g.one_hot(v[1], 3);
            let picked = g.mul(&[lp, oh]);
            g.sum(picked, Some(1))
        });
        check("dense layer", &[&[5, 4], &[4, 3], &[3]], |g, v| {
            let z = g.matmul(v[0], v[1]);
            let z = g.add(&[z, v[2]]);
            g.func(Func::Tanh, z)
        });
    }
}
