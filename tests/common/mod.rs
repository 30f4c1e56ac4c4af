//! Shared test data: the golden formula table (used by the golden, compiled and reverse-mode
//! tests), and where the real MNIST files are (`mnist`).

#![allow(dead_code)]

pub mod mnist;
pub mod sklearn;

/// `(formula, variable)`: polynomials, quotients, powers with variable exponents, exp/log,
/// trigonometric and inverse, hyperbolic, nested, several variables, activations, constants.
#[rustfmt::skip]
pub const TABLE: &[(&str, &str)] = &[
    // polynomials
    ("x^3 + 2*x^2 + 1", "x"),
    ("5", "x"),
    ("x", "x"),
    ("3*x - 7", "x"),
    ("(x + 1)^2", "x"),
    ("(2*x - 3)^5", "x"),
    ("x^10 - x^9 + x", "x"),
    ("(x^2 + 1)*(x^3 - x)", "x"),
    ("(x + 1)*(x - 1) - x^2", "x"),
    // quotients and negative powers
    ("1/x", "x"),
    ("1/x^2", "x"),
    ("x/(x + 1)", "x"),
    ("(x^2 + 1)/(x - 3)", "x"),
    ("(x + y)/(x - y)", "x"),
    ("3/(2*x)", "x"),
    ("(1 - x)/(1 + x^2)", "x"),
    // roots and fractional powers
    ("sqrt(x)", "x"),
    ("sqrt(x^2 + 1)", "x"),
    ("x^(1/3)", "x"),
    ("x^1.5", "x"),
    ("1/sqrt(1 + x)", "x"),
    // variable exponents
    ("x^x", "x"),
    ("2^x", "x"),
    ("x^y", "y"),
    ("x^sin(x)", "x"),
    ("e^(x^2)", "x"),
    // exp and log
    ("exp(x)", "x"),
    ("exp(-x^2)", "x"),
    ("x*exp(x)", "x"),
    ("log(x)", "x"),
    ("log(x^2 + 1)", "x"),
    ("x*log(x) - x", "x"),
    ("log(sin(x) + 2)", "x"),
    ("exp(log(x) * 2)", "x"),
    // trigonometric
    ("sin(x)", "x"),
    ("cos(x)", "x"),
    ("tan(x)", "x"),
    ("sin(x)^2 + cos(x)^2", "x"),
    ("sin(2*x)*cos(x)", "x"),
    ("sin(x)/x", "x"),
    ("cos(x^2)", "x"),
    // inverse trigonometric
    ("asin(x/3)", "x"),
    ("acos(x/3)", "x"),
    ("atan(x)", "x"),
    ("atan(y/x)", "x"),
    ("x*asin(x/4)", "x"),
    // hyperbolic
    ("sinh(x)", "x"),
    ("cosh(x)", "x"),
    ("tanh(x)", "x"),
    ("tanh(2*x + 1)", "x"),
    ("cosh(x)^2 - sinh(x)^2", "x"),
    // nested compositions
    ("sin(cos(x))", "x"),
    ("exp(sin(x^2))", "x"),
    ("log(log(x + 3))", "x"),
    ("sqrt(1 + sin(x)^2)", "x"),
    ("sin(sin(sin(x)))", "x"),
    ("abs(sin(x))", "x"),
    // several variables
    ("x^2*y + sin(x*y)", "x"),
    ("x^2*y + sin(x*y)", "y"),
    ("exp(x*y)", "y"),
    ("x*y + y^2 + x", "y"),
    ("(x - y)^2", "y"),
    ("log(x^2 + y^2)", "x"),
    ("sqrt(x^2 + y^2)", "y"),
    ("x/y", "y"),
    // activations
    ("sigmoid(x)", "x"),
    ("1/(1 + exp(-x))", "x"),
    ("softplus(x)", "x"),
    ("log(1 + exp(x))", "x"),
    ("relu(x)", "x"),
    ("abs(x)", "x"),
    ("x*sigmoid(x)", "x"),
    ("x/(1 + exp(-x))", "x"),
    ("tanh(softplus(x))*x", "x"),
    ("0.5*x*(1 + tanh(0.7978845608*(x + 0.044715*x^3)))", "x"),
    ("relu(x) + 0.2*relu(-x)", "x"),
    // flat where x < 0, though sqrt is singular at the clamp: the derivative is 0 there
    ("y*sqrt(relu(x))", "x"),
    // constants
    ("pi*x^2", "x"),
    ("sin(pi*x)", "x"),
    ("e^x", "x"),
];

/// Points tried for numeric checks; those where a formula is undefined are skipped.
pub const POINTS: &[(f64, f64)] = &[(0.7, 1.3), (1.9, 0.4), (-0.6, 2.2), (0.3, -0.8), (2.5, 1.7)];

/// Relative closeness with an absolute floor of `rel` near zero.
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}
