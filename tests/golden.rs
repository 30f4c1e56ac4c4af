//! Golden derivatives: a table of formulas, their printed derivatives (one insta snapshot),
//! and for every row three independent checks:
//!
//! * the printed form is compact: no `*1`, `+ 0`, `^1`, double negation or uncombined
//!   numeric coefficients;
//! * the printed form reads back (through the parser) to the same function, so the printer's
//!   parentheses are right;
//! * the derivative agrees with a central finite difference of the original formula.

use symdiff::Expr;

mod common;
use common::{POINTS, TABLE, close};

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
