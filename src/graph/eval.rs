//! The interpreter: the reference semantics of a graph, in f64.
//!
//! Every other way of computing a graph (the JIT above all) is tested against this one.
//! It walks the reachable nodes once in id order (children before parents, so no recursion)
//! and checks every operation's domain: a value that would silently be NaN or infinite in
//! IEEE arithmetic (`log(-1)`, `1/0`, `exp(1000)`) is an [`EvalError`] naming the
//! subexpression and the offending value instead.
//!
//! One exception makes a fault stay local: **a product with a `step` factor that is 0 is 0**,
//! whatever its other factors are, faults included. Derivatives need it: the chain rule
//! through `relu(u)` multiplies by `step(u)`, and where `u < 0` the function is flat while the
//! outer derivative may be undefined at the clamp — `d/dy sqrt(relu(y))` is
//! `step(y)/(2*sqrt(relu(y)))`, which is `0` for `y < 0`, not `0/0`. So a fault does not end
//! the walk: it marks the node, marks flow up through every parent except such a product, and
//! the first fault (in id order) that reaches a root is reported. The JIT computes the same
//! product as a select on the step (never `0 * inf`).
//!
//! [`apply`] is one node's step, shared with the graph, which applies it to constant nodes as
//! they are built: a constant the interpreter would reject is marked undefined there, so that
//! the simplifier cannot make it vanish (`0*log(-1)` stays an error).

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
    /// A NaN appeared (only possible when an input value is NaN or infinite, or a program
    /// built a NaN number with `Expr::num`).
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

/// Why one operation has no value (see [`apply`]); [`eval`] turns it into a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// `b^e` with `b = 0` and `e < 0`.
    DivisionByZero,
    /// `b^e` with `b <= 0` (the value here) and an exponent that is not a number.
    VariableExponent(f64),
    /// `b^e` with `b < 0` and a fractional `e` (the values here).
    NegativePower(f64, f64),
    /// A function outside its domain, at this argument.
    Domain(Func, f64),
    /// A finite computation whose result is not finite (this value).
    NotFinite(f64),
    /// A tensor operation.
    Tensor,
}

/// One scalar operation of the interpreter: `op` over `args` (nodes of `g`) whose values are
/// `value(arg)`. This is the one definition of what a scalar node computes and where it is
/// defined; [`eval`] applies it to every node, and the graph applies it to constant nodes
/// when they are built (to mark the undefined ones, see `graph::node`).
pub fn apply(g: &Graph, op: Op, args: &[Id], value: impl Fn(Id) -> f64) -> Result<f64, Fault> {
    let x = match op {
        Op::Num(bits) => f64::from_bits(bits),
        Op::Const(c) => c.value(),
        Op::Var(_) => return Err(Fault::Tensor), // callers look variables up themselves
        Op::Add => args.iter().map(|&a| value(a)).sum(),
        Op::Mul => args.iter().map(|&a| value(a)).product(),
        Op::Pow => {
            let (b, e) = (value(args[0]), value(args[1]));
            if b == 0.0 && e < 0.0 {
                return Err(Fault::DivisionByZero);
            }
            if b <= 0.0 && g.as_num(args[1]).is_none() {
                // b^e with a varying exponent means exp(e*log(b)): a real function only
                // for b > 0, and its derivative needs log(b) (see rules.rs).
                return Err(Fault::VariableExponent(b));
            }
            if b < 0.0 && e.fract() != 0.0 && e.is_finite() {
                return Err(Fault::NegativePower(b, e));
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
        | Op::OneHot(_) => return Err(Fault::Tensor),
        Op::Func(f) => {
            let a = value(args[0]);
            if let Some((ok, _)) = f.def().domain
                && !ok(a)
                && !a.is_nan()
            {
                return Err(Fault::Domain(f, a));
            }
            f.eval(a)
        }
    };
    if x.is_finite() { Ok(x) } else { Err(Fault::NotFinite(x)) }
}

/// The message for `fault` at node `id`.
fn explain(g: &Graph, id: Id, fault: Fault) -> EvalError {
    let args = g.args(id);
    let (kind, message) = match fault {
        Fault::DivisionByZero => (
            EvalErrorKind::DivisionByZero,
            if g.as_num(args[0]).is_some() {
                format!("division by zero in {}", quote(g, id))
            } else {
                format!("division by zero in {}: {} is 0", quote(g, id), quote(g, args[0]))
            },
        ),
        Fault::VariableExponent(b) => (
            EvalErrorKind::Domain,
            format!(
                "domain error in {}: a power with a variable exponent needs a positive base, here {} is {}",
                quote(g, id),
                quote(g, args[0]),
                format_number(b),
            ),
        ),
        Fault::NegativePower(b, e) => {
            let what =
                if e.abs() == 0.5 { "square root".to_owned() } else { format!("power {}", format_number(e)) };
            (
                EvalErrorKind::Domain,
                format!(
                    "domain error in {}: {what} of a negative number ({} is {})",
                    quote(g, id),
                    quote(g, args[0]),
                    format_number(b),
                ),
            )
        }
        Fault::Domain(f, a) => (
            if f == Func::Log && a == 0.0 { EvalErrorKind::DivisionByZero } else { EvalErrorKind::Domain },
            format!(
                "domain error in {}: {}(x) is defined for {}, here x = {}",
                quote(g, id),
                f.name(),
                f.def().domain.map_or("", |d| d.1),
                format_number(a),
            ),
        ),
        // Every earlier value was finite (or evaluation would have stopped), so this node is
        // where the problem starts.
        Fault::NotFinite(x) if x.is_nan() => {
            (EvalErrorKind::NotANumber, format!("{} is not a number (NaN)", quote(g, id)))
        }
        Fault::NotFinite(_) => {
            (EvalErrorKind::Overflow, format!("overflow: {} is too large for f64", quote(g, id)))
        }
        Fault::Tensor => (
            EvalErrorKind::Tensor,
            format!("{} is a tensor expression; it needs tensor values", quote(g, id)),
        ),
    };
    EvalError { kind, message }
}

/// Evaluates `roots` with variable values given by `value_of` (by variable name).
pub fn eval(g: &Graph, roots: &[Id], value_of: &dyn Fn(&str) -> Option<f64>) -> Result<Vec<f64>, EvalError> {
    /// No fault below this node.
    const FINE: u32 = u32::MAX;
    let order = g.reachable(roots);
    let mut v = Values(NodeMap::new(&order, 0.0f64));
    // The index into `faults` of the first fault below each node, or FINE. Faults are found in
    // id order, so a smaller index is an earlier fault.
    let mut fault = NodeMap::new(&order, FINE);
    let mut faults: Vec<EvalError> = Vec::new();
    for &id in &order {
        let x = match g.op(id) {
            Op::Var(_) => {
                let name = g.var_name(id).unwrap_or("?");
                let x = value_of(name).ok_or_else(|| EvalError {
                    kind: EvalErrorKind::Unbound,
                    message: format!("variable `{name}` has no value"),
                })?;
                if !x.is_finite() {
                    let kind = if x.is_nan() { EvalErrorKind::NotANumber } else { EvalErrorKind::Overflow };
                    return Err(EvalError { kind, message: format!("variable {} is {x}", quote(g, id)) });
                }
                x
            }
            op => {
                let args = g.args(id);
                if op == Op::Mul && args.iter().any(|&a| is_zero_step(g, a, &v, &fault)) {
                    0.0
                } else if let Some(first) = args.iter().map(|&a| *fault.get(a)).min().filter(|&f| f != FINE) {
                    fault.set(id, first);
                    continue;
                } else {
                    match apply(g, op, args, |a| v[a]) {
                        Ok(x) => x,
                        Err(f) => {
                            fault.set(id, faults.len() as u32);
                            faults.push(explain(g, id, f));
                            continue;
                        }
                    }
                }
            }
        };
        v.0.set(id, x);
    }
    if let Some(first) = roots.iter().map(|&r| *fault.get(r)).min().filter(|&f| f != FINE) {
        return Err(faults.swap_remove(first as usize));
    }
    Ok(roots.iter().map(|r| v[*r]).collect())
}

/// Whether `a` is a `step(u)` whose value is 0 (with no fault below it).
fn is_zero_step(g: &Graph, a: Id, v: &Values, fault: &NodeMap<u32>) -> bool {
    g.op(a) == Op::Func(Func::Step) && *fault.get(a) == u32::MAX && v[a] == 0.0
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
        // A negative power is a power of the reciprocal, `(1/b)^n`: every negative power of
        // one base then shares its one division (`x^-6`, `x^-3` and their derivatives `x^-7`,
        // `x^-4` in a pair potential), which compiled code computes once.
        if e < 0.0 { powi(1.0 / b, e.abs() as u32) } else { powi(b, e as u32) }
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
