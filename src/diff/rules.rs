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

use crate::graph::{Graph, Id, Op};

/// `∂node/∂args(node)[i]`.
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
    }
}

/// `d(b^e)` when both `b` and `e` vary, with derivatives `db` and `de`:
/// `b^e * (de*log(b) + e*db/b)`, the two partials above with `b^e` factored out.
pub fn pow_both(g: &mut Graph, node: Id, db: Id, de: Id) -> Id {
    let [b, e] = [g.args(node)[0], g.args(node)[1]];
    let l = g.func(crate::graph::Func::Log, b);
    let t1 = g.mul(&[de, l]);
    let rb = g.recip(b);
    let t2 = g.mul(&[e, db, rb]);
    let s = g.add(&[t1, t2]);
    g.mul(&[node, s])
}
