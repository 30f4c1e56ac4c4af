//! The tensor interpreter: the reference semantics of graphs over tensors, on ndarray.
//!
//! Like the scalar interpreter it walks the reachable nodes in id order (children first, no
//! recursion). It is generic over the element type: `f64` for gradient checks, `f32` for
//! training, the precision the compiled training step uses. Elementwise operators broadcast
//! as numpy does; functions apply the function table's `eval` to every element (computed in
//! f64 and rounded), so every element means exactly what the scalar interpreter says.
//!
//! It does not check domains element by element (a training step would drown in checks);
//! callers look for NaN and infinity in what they care about (the loss, the gradients) and
//! use the scalar interpreter to explain them.

use ndarray::{ArrayD, ArrayViewD, Axis, Ix2, IxDyn, Zip};

use super::eval::{EvalError, EvalErrorKind, pow};
use super::node::{ALL_AXES, Graph, Id, NodeMap, Op, show_shape};

/// Element types the tensor interpreter computes in.
pub trait Real:
    ndarray::LinalgScalar
    + num_traits::Float
    + ndarray::ScalarOperand
    + std::iter::Sum
    + Send
    + Sync
    + std::fmt::Debug
{
    /// From f64, rounding.
    fn from_f64(x: f64) -> Self;
    /// To f64, exactly.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

fn err(kind: EvalErrorKind, message: String) -> EvalError {
    EvalError { kind, message }
}

/// `a` and `b` broadcast together and combined elementwise by `f`.
fn zip_with<T: Real>(a: &ArrayD<T>, b: &ArrayD<T>, shape: &[usize], f: impl Fn(T, T) -> T) -> ArrayD<T> {
    match (a.broadcast(IxDyn(shape)), b.broadcast(IxDyn(shape))) {
        (Some(x), Some(y)) => Zip::from(&x).and(&y).map_collect(|&p, &q| f(p, q)),
        _ => unreachable!("node shapes are broadcast-compatible by construction"),
    }
}

/// Evaluates `roots`. `input(v)` gives the value of variable node `v` (its shape must be the
/// node's shape).
pub fn eval_tensors<'a, T: Real>(
    g: &Graph,
    roots: &[Id],
    input: &dyn Fn(Id) -> Option<ArrayViewD<'a, T>>,
) -> Result<Vec<ArrayD<T>>, EvalError> {
    let order = g.reachable(roots);
    let mut v: NodeMap<Option<ArrayD<T>>> = NodeMap::new(&order, None);
    for &id in &order {
        let args = g.args(id);
        let val = |k: usize| v.get(args[k]).as_ref().expect("arguments are evaluated before their users");
        let shape = g.shape(id);
        let out: ArrayD<T> = match g.op(id) {
            Op::Num(bits) => ArrayD::from_elem(IxDyn(&[]), T::from_f64(f64::from_bits(bits))),
            Op::Const(c) => ArrayD::from_elem(IxDyn(&[]), T::from_f64(c.value())),
            Op::Var(_) => {
                let name = g.var_name(id).unwrap_or("?");
                let x = input(id)
                    .ok_or_else(|| err(EvalErrorKind::Unbound, format!("variable `{name}` has no value")))?;
                if x.shape() != shape {
                    return Err(err(
                        EvalErrorKind::Tensor,
                        format!(
                            "`{name}` should be {}, but its value is {}",
                            show_shape(shape),
                            show_shape(x.shape())
                        ),
                    ));
                }
                x.to_owned()
            }
            Op::Add => {
                let mut acc = val(0).clone();
                for k in 1..args.len() {
                    let s = super::node::broadcast_shapes(acc.shape(), val(k).shape()).unwrap_or_default();
                    acc = zip_with(&acc, val(k), &s, |p, q| p + q);
                }
                if acc.shape() != shape {
                    acc.broadcast(IxDyn(shape)).map(|b| b.to_owned()).unwrap_or(acc)
                } else {
                    acc
                }
            }
            Op::Mul => {
                let mut acc = val(0).clone();
                for k in 1..args.len() {
                    let s = super::node::broadcast_shapes(acc.shape(), val(k).shape()).unwrap_or_default();
                    acc = zip_with(&acc, val(k), &s, |p, q| p * q);
                }
                if acc.shape() != shape {
                    acc.broadcast(IxDyn(shape)).map(|b| b.to_owned()).unwrap_or(acc)
                } else {
                    acc
                }
            }
            Op::Pow => zip_with(val(0), val(1), shape, |b, e| T::from_f64(pow(b.to_f64(), e.to_f64()))),
            Op::Func(f) => {
                let eval = f.def().eval;
                val(0).mapv(|x| T::from_f64(eval(x.to_f64())))
            }
            Op::MatMul => {
                let a = val(0).view().into_dimensionality::<Ix2>().map_err(|e| tensor_err(g, id, e))?;
                let b = val(1).view().into_dimensionality::<Ix2>().map_err(|e| tensor_err(g, id, e))?;
                a.dot(&b).into_dyn()
            }
            Op::Sum(axis) => {
                if axis == ALL_AXES {
                    ArrayD::from_elem(IxDyn(&[]), val(0).sum())
                } else {
                    val(0).sum_axis(Axis(axis as usize))
                }
            }
            Op::Max(axis) => {
                if axis == ALL_AXES {
                    ArrayD::from_elem(IxDyn(&[]), val(0).iter().copied().fold(T::neg_infinity(), T::max))
                } else {
                    val(0).fold_axis(Axis(axis as usize), T::neg_infinity(), |&m, &x| m.max(x))
                }
            }
            Op::Broadcast(_) => match val(0).broadcast(IxDyn(shape)) {
                Some(b) => b.to_owned(),
                None => return Err(tensor_err(g, id, "cannot broadcast")),
            },
            Op::Reshape(_) => {
                let a = val(0);
                let flat: Vec<T> = a.iter().copied().collect();
                ArrayD::from_shape_vec(IxDyn(shape), flat).map_err(|e| tensor_err(g, id, e))?
            }
            Op::Transpose => val(0).t().as_standard_layout().into_owned(),
            Op::LogSoftmax => {
                let mut y = val(0).clone();
                let last = Axis(y.ndim().saturating_sub(1));
                for mut row in y.lanes_mut(last) {
                    let m = row.iter().copied().fold(T::neg_infinity(), T::max);
                    let lse = m + row.iter().map(|&x| (x - m).exp()).sum::<T>().ln();
                    row.mapv_inplace(|x| x - lse);
                }
                y
            }
            Op::OneHot(k) => {
                let labels = val(0);
                let mut out = ArrayD::zeros(IxDyn(shape));
                let k = k as usize;
                for (i, &l) in labels.iter().enumerate() {
                    let c = l.to_f64();
                    if c < 0.0 || c.fract() != 0.0 || c >= k as f64 {
                        return Err(err(
                            EvalErrorKind::Domain,
                            format!("label {c} at position {i} is not a class in 0..{k}"),
                        ));
                    }
                    if let Some(cell) = out.as_slice_mut().and_then(|s| s.get_mut(i * k + c as usize)) {
                        *cell = T::one();
                    }
                }
                out
            }
        };
        v.set(id, Some(out));
    }
    Ok(roots.iter().map(|r| v.get(*r).clone().unwrap_or_else(|| ArrayD::zeros(IxDyn(&[])))).collect())
}

fn tensor_err(g: &Graph, id: Id, e: impl std::fmt::Display) -> EvalError {
    let s = super::print::print(g, id, super::print::Style::Text);
    err(EvalErrorKind::Tensor, format!("in `{s}`: {e}"))
}
