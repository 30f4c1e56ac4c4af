//! Golden derivatives: a table of formulas, their printed derivatives (one insta snapshot),
//! and for every row three independent checks:
//!
//! * the printed form is compact: no `*1`, `+ 0`, `^1`, double negation or uncombined
//!   numeric coefficients;
//! * the printed form reads back (through the parser) to the same function, so the printer's
//!   parentheses are right;
//! * the derivative agrees with a central finite difference of the original formula.

use symdiff::Expr;

/// Points tried for the numeric checks; those where the formula is undefined are skipped.
const POINTS: &[(f64, f64)] = &[(0.7, 1.3), (1.9, 0.4), (-0.6, 2.2), (0.3, -0.8), (2.5, 1.7)];

/// Checks one row and returns its line for the snapshot.
fn check(formula: &str, var: &str) -> String {
    let f = Expr::parse(formula).unwrap_or_else(|e| panic!("{formula}: {e}"));
    let d = f.diff(var);
    let printed = d.to_string();
    let padded = format!("{printed} ");
    for bad in ["*1 ", "*1)", "+ 0 ", "- 0 ", "+ 0)", "--", "- -", "+ -", "^1 ", "^1)", "(1)*", "*(-"] {
        assert!(!padded.contains(bad), "{formula}: `{bad}` in {printed}");
    }
    assert!(!printed.ends_with("*1") && !printed.ends_with("^1"), "{formula}: {printed}");
    let coef_pair =
        printed.as_bytes().windows(3).any(|w| w[0].is_ascii_digit() && w[1] == b'*' && w[2].is_ascii_digit());
    assert!(!coef_pair, "{formula}: uncombined coefficients in {printed}");

    let reread = Expr::parse(&printed)
        .unwrap_or_else(|e| panic!("{formula}: printed `{printed}` does not parse: {e}"));
    let mut checked = 0;
    for &(x, y) in POINTS {
        let at = |dx: f64| {
            f.eval(&[
                (var, if var == "x" { x + dx } else { y + dx }),
                (if var == "x" { "y" } else { "x" }, if var == "x" { y } else { x }),
            ])
        };
        let point = [("x", x), ("y", y)];
        let (Ok(dv), Ok(rv)) = (d.eval(&point), reread.eval(&point)) else { continue };
        assert!(close(dv, rv, 1e-12), "{formula}: printed form differs at {point:?}: {dv} vs {rv}");
        let h = 1e-5;
        let (Ok(a), Ok(b), Ok(a2), Ok(b2)) = (at(h), at(-h), at(2.0 * h), at(-2.0 * h)) else { continue };
        let fd = (a - b) / (2.0 * h);
        let fd2 = (a2 - b2) / (4.0 * h);
        if !close(fd, fd2, 1e-5) {
            continue; // next to a kink or a pole: the difference quotient is not an oracle here
        }
        assert!(
            close(dv, fd, 1e-6),
            "{formula}: d/d{var} = {printed} is {dv} at {point:?}, finite difference {fd}"
        );
        checked += 1;
    }
    assert!(checked >= 2, "{formula}: too few points where it is defined");
    format!("d/d{var} {formula}  =  {printed}\n")
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

#[rustfmt::skip]
const TABLE: &[(&str, &str)] = &[
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
    // constants
    ("pi*x^2", "x"),
    ("sin(pi*x)", "x"),
    ("e^x", "x"),
];

#[test]
fn golden_derivatives() {
    assert!(TABLE.len() >= 60);
    let table: String = TABLE.iter().map(|(f, v)| check(f, v)).collect();
    insta::assert_snapshot!(table);
}

#[test]
fn seed_example() {
    let f = Expr::parse("x^3 + 2*x^2 + 1").unwrap();
    let df = f.diff("x");
    assert_eq!(df.to_string(), "3*x^2 + 4*x");
    assert_eq!(df.eval(&[("x", 4.0)]).unwrap(), 64.0);
}
