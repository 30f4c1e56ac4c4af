//! The function table: every built-in unary function, its forward meaning, where it is
//! defined, and its derivative, side by side.
//!
//! This is **the one place derivative rules for functions live**. Symbolic differentiation,
//! reverse mode and the JIT's fused kernels all read `deriv` from here, so a rule is written
//! once; `+`, `*` and `^` have their rules beside their constructors' meaning in
//! `diff::rules`. A derivative is built as graph nodes (through the simplifying constructors),
//! never evaluated numerically.
//!
//! Subgradients: `abs` and `relu` are not differentiable at 0; symdiff uses the subgradient 0
//! there (`sign(0) = 0`, `step(0) = 0`), as TensorFlow, PyTorch and JAX do.

use super::node::{Graph, Id};

/// A built-in unary function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Func {
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Abs,
    Sigmoid,
    Softplus,
    Relu,
    /// Heaviside step with `step(0) = 0`: the derivative of `relu`.
    Step,
    /// `sign(x)` with `sign(0) = 0`: the derivative of `abs`.
    Sign,
}

/// Where a function is defined: a predicate and how to say it (`x > 0`).
pub type Domain = (fn(f64) -> bool, &'static str);

/// One row of the table.
pub struct FuncDef {
    pub func: Func,
    pub name: &'static str,
    /// LaTeX command for the function name.
    pub latex: &'static str,
    /// Forward meaning, in f64.
    pub eval: fn(f64) -> f64,
    /// Where the function is defined, as a predicate and its wording for error messages;
    /// `None` means everywhere.
    pub domain: Option<Domain>,
    /// `d/du f(u)` as graph nodes, given the node of `u`.
    pub deriv: fn(&mut Graph, Id) -> Id,
}

/// Stable `log(1 + exp(x))`.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn step(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x.is_nan() {
        x
    } else {
        0.0
    }
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x // 0 (the subgradient convention) or NaN
    }
}

fn relu(x: f64) -> f64 {
    // NaN stays NaN (a comparison alone would turn it into 0).
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

#[rustfmt::skip]
/// The table, in [`Func`] order (checked by a test).
pub static FUNCS: [FuncDef; 17] = [
    //                              forward meaning        domain                                                  derivative d/du f(u)
    FuncDef { func: Func::Exp,      name: "exp",      latex: "\\exp",    eval: super::math::exp, domain: None,                                deriv: |g, u| g.func(Func::Exp, u) },
    FuncDef { func: Func::Log,      name: "log",      latex: "\\log",    eval: f64::ln,   domain: Some((|x| x > 0.0, "x > 0")),                  deriv: |g, u| g.recip(u) },
    FuncDef { func: Func::Sin,      name: "sin",      latex: "\\sin",    eval: super::math::sin, domain: None,                                          deriv: |g, u| g.func(Func::Cos, u) },
    FuncDef { func: Func::Cos,      name: "cos",      latex: "\\cos",    eval: super::math::cos, domain: None,                                          deriv: |g, u| { let s = g.func(Func::Sin, u); g.neg(s) } },
    FuncDef { func: Func::Tan,      name: "tan",      latex: "\\tan",    eval: f64::tan,  domain: None,                                          deriv: |g, u| { let t = g.func(Func::Tan, u); let t2 = g.square(t); let one = g.num(1.0); g.add(&[one, t2]) } },
    FuncDef { func: Func::Asin,     name: "asin",     latex: "\\arcsin", eval: f64::asin, domain: Some((|x| (-1.0..=1.0).contains(&x), "-1 <= x <= 1")), deriv: |g, u| { let r = one_minus_square(g, u); let h = g.num(-0.5); g.pow(r, h) } },
    FuncDef { func: Func::Acos,     name: "acos",     latex: "\\arccos", eval: f64::acos, domain: Some((|x| (-1.0..=1.0).contains(&x), "-1 <= x <= 1")), deriv: |g, u| { let r = one_minus_square(g, u); let h = g.num(-0.5); let p = g.pow(r, h); g.neg(p) } },
    FuncDef { func: Func::Atan,     name: "atan",     latex: "\\arctan", eval: f64::atan, domain: None,                                          deriv: |g, u| { let u2 = g.square(u); let one = g.num(1.0); let s = g.add(&[one, u2]); g.recip(s) } },
    FuncDef { func: Func::Sinh,     name: "sinh",     latex: "\\sinh",   eval: f64::sinh, domain: None,                                          deriv: |g, u| g.func(Func::Cosh, u) },
    FuncDef { func: Func::Cosh,     name: "cosh",     latex: "\\cosh",   eval: f64::cosh, domain: None,                                          deriv: |g, u| g.func(Func::Sinh, u) },
    FuncDef { func: Func::Tanh,     name: "tanh",     latex: "\\tanh",   eval: super::math::tanh, domain: None,                                          deriv: |g, u| { let t = g.func(Func::Tanh, u); one_minus_square(g, t) } },
    FuncDef { func: Func::Abs,      name: "abs",      latex: "",         eval: f64::abs,  domain: None,                                          deriv: |g, u| g.func(Func::Sign, u) },
    FuncDef { func: Func::Sigmoid,  name: "sigmoid",  latex: "\\sigma",  eval: super::math::sigmoid, domain: None,                                          deriv: |g, u| { let s = g.func(Func::Sigmoid, u); let one = g.num(1.0); let c = g.sub(one, s); g.mul(&[s, c]) } },
    FuncDef { func: Func::Softplus, name: "softplus", latex: "\\operatorname{softplus}", eval: softplus, domain: None,                           deriv: |g, u| g.func(Func::Sigmoid, u) },
    FuncDef { func: Func::Relu,     name: "relu",     latex: "\\operatorname{relu}",     eval: relu,     domain: None,                           deriv: |g, u| g.func(Func::Step, u) },
    FuncDef { func: Func::Step,     name: "step",     latex: "\\operatorname{step}",     eval: step,     domain: None,                           deriv: |g, _| g.num(0.0) },
    FuncDef { func: Func::Sign,     name: "sign",     latex: "\\operatorname{sign}",     eval: sign,     domain: None,                           deriv: |g, _| g.num(0.0) },
];

fn one_minus_square(g: &mut Graph, u: Id) -> Id {
    let u2 = g.square(u);
    let one = g.num(1.0);
    g.sub(one, u2)
}

impl Func {
    pub fn def(self) -> &'static FuncDef {
        &FUNCS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn eval(self, x: f64) -> f64 {
        (self.def().eval)(x)
    }

    /// The function called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Func> {
        FUNCS.iter().find(|d| d.name == name).map(|d| d.func)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::math::sigmoid;

    #[test]
    fn table_is_in_enum_order() {
        for (i, d) in FUNCS.iter().enumerate() {
            assert_eq!(d.func as usize, i, "{} is out of place", d.name);
            assert_eq!(Func::from_name(d.name), Some(d.func));
        }
    }

    #[test]
    fn stable_forms_match_naive_ones_where_those_are_exact() {
        for x in [-30.0, -2.0, -0.5, 0.0, 0.5, 2.0, 30.0] {
            assert!((sigmoid(x) - 1.0 / (1.0 + f64::exp(-x))).abs() < 1e-15);
            assert!((softplus(x) - (1.0 + f64::exp(x)).ln()).abs() < 1e-12);
        }
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(softplus(1000.0), 1000.0);
        assert_eq!((sign(0.0), step(0.0), relu(0.0)), (0.0, 0.0, 0.0));
    }
}
