//! The interpreter: the reference semantics of a graph, in f64.
//!
//! Every other way of computing a graph (the JIT above all) is tested against this one.
//! It walks the reachable nodes once in id order (children before parents, so no recursion)
//! and checks every operation's domain: a value that would silently be NaN or infinite in
//! IEEE arithmetic (`log(-1)`, `1/0`, `exp(1000)`) is an [`EvalError`] naming the
//! subexpression and the offending value instead.

use std::fmt;

use super::func::Func;
use super::node::{Graph, Id, NodeMap, Op};
use super::print::{Style, format_number, print};

/// What went wrong during evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalErrorKind {
    /// A variable has no value.
    Unbound,
    /// An argument outside a function's domain (`log(-1)`, `asin(2)`, `sqrt(-1)`).
    Domain,
    /// Division by zero (`1/0`, `0^-1`).
    DivisionByZero,
    /// A finite computation whose result does not fit in an f64 (`exp(1000)`).
    Overflow,
    /// A NaN appeared (only possible when an input value is NaN or infinite).
    NotANumber,
    /// A tensor operation reached the scalar interpreter (use the tensor interpreter).
    Tensor,
}

/// An evaluation failure, with the subexpression where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    /// The category, for programs that react to it.
    pub kind: EvalErrorKind,
    /// The full message, naming the subexpression and the offending value.
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

/// Subexpressions are quoted in messages up to this many characters.
const QUOTE_LIMIT: usize = 60;

fn quote(g: &Graph, id: Id) -> String {
    let s = print(g, id, Style::Text);
    if s.chars().count() > QUOTE_LIMIT || s.contains('\n') {
        let cut: String = s.lines().next().unwrap_or("").chars().take(QUOTE_LIMIT).collect();
        format!("`{cut}…`")
    } else {
        format!("`{s}`")
    }
}

/// Evaluates `roots` with variable values given by `value_of` (by variable name).
pub fn eval(g: &Graph, roots: &[Id], value_of: &dyn Fn(&str) -> Option<f64>) -> Result<Vec<f64>, EvalError> {
    let order = g.reachable(roots);
    let mut v = Values(NodeMap::new(&order, 0.0f64));
    for &id in &order {
        let args = g.args(id);
        let x = match g.op(id) {
            Op::Num(bits) => f64::from_bits(bits),
            Op::Const(c) => c.value(),
            Op::Var(_) => {
                let name = g.var_name(id).unwrap_or("?");
                value_of(name).ok_or_else(|| EvalError {
                    kind: EvalErrorKind::Unbound,
                    message: format!("variable `{name}` has no value"),
                })?
            }
            Op::Add => args.iter().map(|a| v[*a]).sum(),
            Op::Mul => args.iter().map(|a| v[*a]).product(),
            Op::Pow => {
                let (b, e) = (v[args[0]], v[args[1]]);
                if b == 0.0 && e < 0.0 {
                    return Err(EvalError {
                        kind: EvalErrorKind::DivisionByZero,
                        message: if g.as_num(args[0]).is_some() {
                            format!("division by zero in {}", quote(g, id))
                        } else {
                            format!("division by zero in {}: {} is 0", quote(g, id), quote(g, args[0]))
                        },
                    });
                }
                if b <= 0.0 && g.as_num(args[1]).is_none() {
                    // b^e with a varying exponent means exp(e*log(b)): a real function only
                    // for b > 0, and its derivative needs log(b) (see rules.rs).
                    return Err(EvalError {
                        kind: EvalErrorKind::Domain,
                        message: format!(
                            "domain error in {}: a power with a variable exponent needs a positive base, here {} is {}",
                            quote(g, id),
                            quote(g, args[0]),
                            format_number(b),
                        ),
                    });
                }
                if b < 0.0 && e.fract() != 0.0 && e.is_finite() {
                    let what = if e.abs() == 0.5 {
                        "square root".to_owned()
                    } else {
                        format!("power {}", format_number(e))
                    };
                    return Err(EvalError {
                        kind: EvalErrorKind::Domain,
                        message: format!(
                            "domain error in {}: {what} of a negative number ({} is {})",
                            quote(g, id),
                            quote(g, args[0]),
                            format_number(b),
                        ),
                    });
                }
                pow(b, e)
            }
            Op::MatMul
            | Op::Sum(_)
            | Op::Max(_)
            | Op::Broadcast(_)
            | Op::Reshape(_)
            | Op::Transpose
            | Op::LogSoftmax
            | Op::OneHot(_) => {
                return Err(EvalError {
                    kind: EvalErrorKind::Tensor,
                    message: format!("{} is a tensor expression; it needs tensor values", quote(g, id)),
                });
            }
            Op::Func(f) => {
                let a = v[args[0]];
                if let Some((ok, wording)) = f.def().domain
                    && !ok(a)
                    && !a.is_nan()
                {
                    let kind = if f == Func::Log && a == 0.0 {
                        EvalErrorKind::DivisionByZero
                    } else {
                        EvalErrorKind::Domain
                    };
                    return Err(EvalError {
                        kind,
                        message: format!(
                            "domain error in {}: {}(x) is defined for {wording}, here x = {}",
                            quote(g, id),
                            f.name(),
                            format_number(a),
                        ),
                    });
                }
                f.eval(a)
            }
        };
        if !x.is_finite() {
            // Every earlier value was finite (or evaluation would have stopped), so this node
            // is where the problem starts.
            let message = match g.op(id) {
                Op::Var(_) => format!("variable {} is {x}", quote(g, id)),
                _ if x.is_nan() => format!("{} is not a number (NaN)", quote(g, id)),
                _ => format!("overflow: {} is too large for f64", quote(g, id)),
            };
            let kind = if x.is_nan() { EvalErrorKind::NotANumber } else { EvalErrorKind::Overflow };
            return Err(EvalError { kind, message });
        }
        v.0.set(id, x);
    }
    Ok(roots.iter().map(|r| v[*r]).collect())
}

/// `b^e` as the interpreter (and the JIT) define it: exact special cases first.
pub fn pow(b: f64, e: f64) -> f64 {
    if e == 2.0 {
        b * b
    } else if e == -1.0 {
        1.0 / b
    } else if e == 0.5 {
        b.sqrt()
    } else if e == -0.5 {
        1.0 / b.sqrt()
    } else if e.fract() == 0.0 && e.abs() <= 64.0 {
        let p = powi(b, e.abs() as u32);
        if e < 0.0 { 1.0 / p } else { p }
    } else {
        b.powf(e)
    }
}

/// `b^n` by square-and-multiply, in a fixed order the JIT reproduces exactly.
pub fn powi(b: f64, mut n: u32) -> f64 {
    let mut result = 1.0;
    let mut base = b;
    let mut first = true;
    while n > 0 {
        if n & 1 == 1 {
            result = if first { base } else { result * base };
            first = false;
        }
        n >>= 1;
        if n > 0 {
            base *= base;
        }
    }
    result
}

/// Values by node, indexable as `v[id]`.
struct Values(NodeMap<f64>);

impl std::ops::Index<Id> for Values {
    type Output = f64;
    fn index(&self, id: Id) -> &f64 {
        self.0.get(id)
    }
}
