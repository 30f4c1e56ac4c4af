//! Local derivative rules: the partial derivative of one node with respect to one of its
//! arguments, as graph nodes.
//!
//! Together with the function table (`graph::func`, where each function's derivative sits
//! beside its forward meaning) this is the **only** place derivative rules live. Forward
//! (symbolic `d/dx`) and reverse mode both combine these partials with the chain rule; they
//! differ only in the order they do it.
//!
//! | node            | meaning        | ∂node/∂arg_i                          |
//! |-----------------|----------------|---------------------------------------|
//! | `a + b + ...`   | sum            | `1`                                   |
//! | `a * b * ...`   | product        | product of the other factors          |
//! | `b ^ e`         | power          | `e * b^(e-1)` (base), `b^e * log(b)` (exponent) |
//! | `f(u)`          | table function | `FUNCS[f].deriv(u)`                   |
//!
//! Tensor operators are not elementwise, so reverse mode needs their vector-Jacobian
//! products instead of partials; they sit in [`vjp`], one line each, beside what the
//! operator computes:
//!
//! | node                | meaning                     | contribution of adjoint `Ā` to the argument |
//! |---------------------|-----------------------------|---------------------------------------------|
//! | elementwise `f(a…)` | broadcasting `+ * ^ f`      | `Ā * ∂f/∂a`, summed back to `a`'s shape     |
//! | `a @ b`             | matrix product              | `Ā @ bᵀ` to `a`, `aᵀ @ Ā` to `b`            |
//! | `sum(a, k)`         | sum over axis `k`           | `Ā` broadcast back over axis `k`            |
//! | `broadcast(a)`      | repeat along new axes       | `Ā` summed back to `a`'s shape              |
//! | `reshape(a)`        | same elements, new shape    | `Ā` reshaped back                           |
//! | `transpose(a)`      | swap the two axes           | `transpose(Ā)`                              |
//! | `logsoftmax(a)`     | `a - logsumexp(a)` per row  | `Ā - softmax(a) * sum(Ā, last)`             |
//! | `onehot(l, k)`      | labels to one-hot rows      | nothing (labels are data)                   |

use crate::graph::{ALL_AXES, Func, Graph, Id, Op};

/// `∂node/∂args(node)[i]`, for elementwise operators (scalars included).
pub fn partial(g: &mut Graph, node: Id, i: usize) -> Id {
    match g.op(node) {
        Op::Add => g.num(1.0),
        Op::Mul => {
            let others: smallvec::SmallVec<[Id; 8]> =
                g.args(node).iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &a)| a).collect();
            g.mul(&others)
        }
        Op::Pow => {
            let [b, e] = [g.args(node)[0], g.args(node)[1]];
            if i == 0 {
                // d/db b^e = e * b^(e-1)
                let m1 = g.num(-1.0);
                let e1 = g.add(&[e, m1]);
                let p = g.pow(b, e1);
                g.mul(&[e, p])
            } else {
                // d/de b^e = b^e * log(b)
                let l = g.func(crate::graph::Func::Log, b);
                g.mul(&[node, l])
            }
        }
        Op::Func(f) => {
            let u = g.args(node)[0];
            (f.def().deriv)(g, u)
        }
        Op::Num(_) | Op::Const(_) | Op::Var(_) => g.num(0.0),
        Op::MatMul
        | Op::Sum(_)
        | Op::Max(_)
        | Op::Broadcast(_)
        | Op::Reshape(_)
        | Op::Transpose
        | Op::LogSoftmax
        | Op::OneHot(_) => {
            debug_assert!(false, "partial of a tensor operator; reverse mode uses vjp");
            g.num(0.0)
        }
    }
}

/// Whether the partials of the product `node` with respect to its arguments `which` are
/// cheaper built together by [`product_partials`] than one by one. One by one, each is the
/// product of the other `k - 1` factors, times the adjoint: `|which| * (k - 1)`
/// multiplications, quadratic when many factors depend on the inputs. Together, from prefix
/// and suffix products seeded with the adjoint, they cost at most about `3k`: no more as soon
/// as three factors depend on the inputs (and the same nodes for `x*y*z`).
pub fn is_wide(g: &Graph, node: Id, which: usize) -> bool {
    g.op(node) == Op::Mul && which > 2
}

/// The partials of the product `node` with respect to its arguments `which` (ascending),
/// each multiplied by `seed` (an adjoint, or `1`), for a wide product (see [`is_wide`]).
///
/// The algorithm. With factors `a_0 ... a_{k-1}`, the partial for `a_i` times the seed is
/// `L_i * R_i`, where `L_0 = seed`, `L_i = L_{i-1} * a_{i-1}` (the seed times the factors
/// before `i`) and `R_{k-1} = 1`, `R_i = a_{i+1} * R_{i+1}` (the factors after `i`). Each
/// `L` and `R` is one binary node built from its predecessor without flattening it
/// ([`Graph::mul_step`]), so the whole set costs at most `3k` multiplications and `O(k)`
/// nodes; no factor is divided out, so a zero factor is safe. Only the prefixes up to the
/// last requested argument and the suffixes down to the first are built.
pub fn product_partials(g: &mut Graph, node: Id, which: &[usize], seed: Id) -> Vec<Id> {
    let args: Vec<Id> = g.args(node).to_vec();
    let k = args.len();
    let (Some(&first), Some(&last)) = (which.first(), which.last()) else { return Vec::new() };
    let mut prefix = vec![seed; k];
    for i in 1..=last {
        prefix[i] = g.mul_step(prefix[i - 1], args[i - 1]);
    }
    // suffix[i] is None for the empty product after the last factor.
    let mut suffix: Vec<Option<Id>> = vec![None; k];
    for i in (first..k - 1).rev() {
        suffix[i] = Some(match suffix[i + 1] {
            Some(s) => g.mul_step(args[i + 1], s),
            None => args[i + 1],
        });
    }
    which
        .iter()
        .map(|&i| match suffix[i] {
            Some(s) => g.mul_step(prefix[i], s),
            None => prefix[i],
        })
        .collect()
}

/// What `node` passes back to its argument `i` when its adjoint is `adj`: the
/// vector-Jacobian product (for elementwise operators, `adj * partial` summed back to the
/// argument's shape).
pub fn vjp(g: &mut Graph, node: Id, i: usize, adj: Id) -> Id {
    let a = g.args(node)[i];
    match g.op(node) {
        Op::Add | Op::Mul | Op::Pow | Op::Func(_) => {
            let p = partial(g, node, i);
            let c = g.mul_shared(adj, p);
            unbroadcast(g, c, a)
        }
        Op::MatMul => {
            let [x, w] = [g.args(node)[0], g.args(node)[1]];
            if i == 0 {
                let wt = g.transpose(w);
                g.matmul(adj, wt)
            } else {
                let xt = g.transpose(x);
                g.matmul(xt, adj)
            }
        }
        Op::Sum(axis) => {
            let target = g.shape_id_of(a);
            if axis == ALL_AXES {
                return g.broadcast(adj, target);
            }
            let mut kept = g.shape(a).to_vec();
            kept[axis as usize] = 1;
            let kept = g.shape_id(&kept);
            let r = g.reshape(adj, kept);
            g.broadcast(r, target)
        }
        Op::Max(axis) => {
            // The adjoint goes to the maxima, split evenly between ties:
            // is_max = 1 - sign(|a - max|), weight = is_max / (number of maxima).
            let target = g.shape_id_of(a);
            let kept = if axis == ALL_AXES {
                ShapeIdOrScalar::Scalar
            } else {
                let mut k = g.shape(a).to_vec();
                k[axis as usize] = 1;
                ShapeIdOrScalar::Shape(g.shape_id(&k))
            };
            let spread = |g: &mut Graph, x: Id| match kept {
                ShapeIdOrScalar::Scalar => g.broadcast(x, target),
                ShapeIdOrScalar::Shape(k) => {
                    let r = g.reshape(x, k);
                    g.broadcast(r, target)
                }
            };
            let m = spread(g, node);
            let d = g.sub(a, m);
            let ad = g.func(Func::Abs, d);
            let sg = g.func(Func::Sign, ad);
            let one = g.num(1.0);
            let is_max = g.sub(one, sg);
            let count = g.sum(is_max, (axis != ALL_AXES).then_some(axis as usize));
            let share = g.div_by(adj, count);
            let share = spread(g, share);
            g.mul(&[is_max, share])
        }
        Op::Broadcast(_) => unbroadcast(g, adj, a),
        Op::Reshape(_) => {
            let s = g.shape_id_of(a);
            g.reshape(adj, s)
        }
        Op::Transpose => g.transpose(adj),
        Op::LogSoftmax => {
            // y = a - logsumexp(a): ā = ȳ - softmax(a) * sum(ȳ) per row, softmax(a) = exp(y).
            let softmax = g.func(Func::Exp, node);
            let last = g.shape(node).len() - 1;
            let total = g.sum(adj, Some(last));
            let mut kept = g.shape(node).to_vec();
            kept[last] = 1;
            let kept = g.shape_id(&kept);
            let total = g.reshape(total, kept);
            let full = g.shape_id_of(node);
            let total = g.broadcast(total, full);
            let t = g.mul(&[softmax, total]);
            g.sub(adj, t)
        }
        Op::OneHot(_) | Op::Num(_) | Op::Const(_) | Op::Var(_) => {
            let zero = g.num(0.0);
            let s = g.shape_id_of(a);
            g.broadcast(zero, s)
        }
    }
}

enum ShapeIdOrScalar {
    Scalar,
    Shape(crate::graph::ShapeId),
}

/// `c` summed down to the shape of `a`, undoing numpy broadcasting: leading axes `a` lacks are
/// summed away, axes where `a` has size 1 are summed and kept.
pub fn unbroadcast(g: &mut Graph, c: Id, a: Id) -> Id {
    let target = g.shape(a).to_vec();
    if g.shape(c) == target.as_slice() {
        return c;
    }
    if target.is_empty() {
        return g.sum(c, None);
    }
    let mut cur = c;
    while g.shape(cur).len() > target.len() {
        cur = g.sum(cur, Some(0));
    }
    for (k, &t) in target.iter().enumerate() {
        if t == 1 && g.shape(cur)[k] != 1 {
            let s = g.sum(cur, Some(k));
            let mut kept = g.shape(cur).to_vec();
            kept[k] = 1;
            let kept = g.shape_id(&kept);
            cur = g.reshape(s, kept);
        }
    }
    cur
}

/// `d(b^e)` when both `b` and `e` vary, with derivatives `db` and `de`:
/// `b^e * (de*log(b) + e*db/b)`, the two partials above with `b^e` factored out; `db` and
/// `de` are shared, merged into their uses up to `limit` arguments (`Graph::mul_shared`).
pub fn pow_both(g: &mut Graph, node: Id, db: Id, de: Id, limit: usize) -> Id {
    let [b, e] = [g.args(node)[0], g.args(node)[1]];
    let l = g.func(crate::graph::Func::Log, b);
    let t1 = g.mul_shared_within(de, l, limit);
    let rb = g.recip(b);
    let eb = g.mul(&[e, rb]);
    let t2 = g.mul_shared_within(db, eb, limit);
    let s = g.add_shared_within(&[t1, t2], limit);
    g.mul_shared_within(node, s, limit)
}
