//! Gradients compiled with loops (structure recovery) against the interpreter.
//!
//! Each case is a large function written out as a new user would write it: the compiled
//! value and gradient must agree with the interpreter (the value of `f` and of every
//! reverse-mode partial, evaluated in one pass) within the rounding of a reordered sum, and
//! the classes found must be the expected ones, near misses included: a term with another
//! operator or exponent is not merged; one with another number is merged with the number in
//! a table.

use proptest::prelude::*;
use symdiff::{Expr, compile, compile_gradient, compile_hessian, compile_jacobian};

/// `n` terms joined by ` + `.
fn sum(n: usize, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(" + ")
}

/// A point that is not special: every coordinate different, away from 0 and 1.
fn point(n: usize) -> Vec<f64> {
    (0..n).map(|i| 0.5 + 0.3 * ((i as f64) * 0.7).sin()).collect()
}

/// The classes as `members x nodes`, largest first.
fn classes(stats: &symdiff::CompileStats) -> String {
    let mut c: Vec<(usize, usize)> = stats.classes.iter().map(|c| (c.members, c.template_nodes)).collect();
    c.sort_by(|a, b| b.cmp(a));
    c.iter().map(|(m, t)| format!("{m}x{t}")).collect::<Vec<_>>().join(", ")
}

/// Compiles the gradient of `src` over `vars` (all of its variables, sorted), checks the
/// classes against `expected` and the results against the interpreter at `point`.
fn check_at(src: &str, expected: &str, at: &[f64]) {
    let f = Expr::parse(src).unwrap_or_else(|e| panic!("{e}"));
    let names = f.variables();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = compile_gradient(&f, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(classes(g.stats()), expected, "classes of {}", &src[..src.len().min(80)]);
    let x = &at[..vars.len()];
    let mut grad = vec![0.0; vars.len()];
    let value = g.eval(x, &mut grad);
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let mut exprs = vec![f.clone()];
    exprs.extend(f.gradient(&vars));
    let expect = Expr::eval_all(&exprs, &bound).expect("the interpreter evaluates it");
    let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-11 * scale;
    assert!(close(value, expect[0]), "value: compiled {value}, interpreted {}", expect[0]);
    for (k, v) in vars.iter().enumerate() {
        assert!(close(grad[k], expect[k + 1]), "d/d{v}: compiled {}, interpreted {}", grad[k], expect[k + 1]);
    }
}

fn check(src: &str, expected: &str) {
    check_at(src, expected, &point(100_000));
}

/// Variable `x{i}` zero-padded so that sorted names are in index order.
fn x(i: usize) -> String {
    format!("x{i:05}")
}

#[test]
fn shapes() {
    let n = 300;
    // Banded sums.
    check(&sum(n - 1, |i| format!("100*({} - {}^2)^2 + (1 - {})^2", x(i + 1), x(i), x(i))), "299x5, 299x3");
    let broyden = |i: usize| {
        let left = if i == 0 { String::new() } else { format!(" - {}", x(i - 1)) };
        let right = if i == n - 1 { String::new() } else { format!(" - 2*{}", x(i + 1)) };
        format!("((3 - 2*{0})*{0}{left}{right} + 1)^2", x(i))
    };
    check(&sum(n, broyden), "298x7");
    let lv = |i: usize| format!("100*({}^2 - {})^2 + ({} - 1)^2", x(i), x(i + 1), x(i));
    check(&sum(n - 1, lv), "299x5, 299x2");
    // Data points: numbers that differ per term.
    let t = |k: usize| (k as f64 * 0.37).sin();
    let fit = |k: usize| format!("({} - (a*exp(-b*{}) + c))^2", 1.0 + t(k + 7), t(k));
    check(&sum(200, fit), "199x6");
    // Pair interactions.
    let atoms = 12;
    let mut pairs = Vec::new();
    for i in 0..atoms {
        for j in i + 1..atoms {
            let r2 = format!("(px{i} - px{j})^2 + (py{i} - py{j})^2 + (pz{i} - pz{j})^2");
            pairs.push(format!("4*((1/({r2}))^6 - (1/({r2}))^3)"));
        }
    }
    check(&pairs.join(" + "), "66x15");
    // Reductions with a shared subexpression.
    check(&format!("log({})", sum(n, |i| format!("exp({})", x(i)))), "300x1");
    let softmax = sum(n, |i| {
        format!("{}*({} - log({}))", 0.5 + (i % 7) as f64, x(i), sum(n, |j| format!("exp({})", x(j))))
    });
    check(&softmax, "300x1, 300x1");
    // Two sums that read the same shared subexpressions, each under its own factor (`u` and
    // `w`): each sum's partials through them are scaled by its own factor.
    let e = |k: usize| {
        format!("({:.3} - a*exp(-b*{:.3}) - c)", 2.0 + (k as f64 * 0.37).sin(), 1.0 + (k % 5) as f64 / 4.0)
    };
    let two = format!(
        "u*({}) + w*({})",
        sum(40, |k| format!("{}*sin({})", 1 + k % 3, e(k))),
        sum(40, |k| format!("{}^2", e(k)))
    );
    check(&two, "40x1, 26x2");
    // Flat where a term's relu clamps (about half the members at this point), where sqrt is
    // singular: those partials are 0 in the vector lanes too, never 0*inf.
    check(&sum(n, |i| format!("sqrt(relu({} - 0.5))", x(i))), "300x3");
}

#[test]
fn near_misses() {
    let n = 40;
    // One member with another number: merged, the number in a table.
    check(&sum(n, |i| format!("{}*{}^2", if i == 7 { 101 } else { 100 }, x(i))), "40x2");
    // Another exponent or operator: not merged.
    check(&sum(n, |i| format!("{}^{}", x(i), if i == 7 { 3 } else { 2 })), "39x1");
    check(&sum(n, |i| format!("{}({})", if i == 7 { "cos" } else { "sin" }, x(i))), "39x1");
    // A shared operand: computed once, outside, and read by every member.
    check(&sum(n, |i| format!("sin({} + {})*exp(sin(u)*cos(v))", x(i), x(i + 1))), "40x3");
    // Too few like terms for a loop.
    check(&sum(10, |i| format!("sin({})", x(i))), "");
}

/// The compiled Hessian of `src` (over its sorted variables) has the classes `expected` and
/// agrees with the interpreter's Hessian (reverse over reverse, evaluated in one pass).
fn check_hessian(src: &str, expected: &str) {
    let f = Expr::parse(src).unwrap_or_else(|e| panic!("{e}"));
    let names = f.variables();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let h = compile_hessian(&f, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(classes(h.stats()), expected, "classes of the Hessian of {}", &src[..src.len().min(80)]);
    let n = vars.len();
    let x = point(n);
    let mut out = vec![0.0; n * n];
    h.eval(&x, &mut out).unwrap();
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let expect = Expr::eval_all(&f.hessian(&vars).concat(), &bound).expect("the interpreter evaluates it");
    let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (k, (a, b)) in out.iter().zip(&expect).enumerate() {
        assert!((a - b).abs() <= 1e-11 * scale, "H[{}][{}]: compiled {a}, interpreted {b}", k / n, k % n);
    }
}

/// The compiled vector function `srcs` (over their sorted variables) has the classes
/// `expected`; a sum agrees with the interpreter within the rounding of a reordered sum, and
/// classes of like outputs to the bit (each output is computed as in straight-line code).
fn check_vector(srcs: &[String], expected: &str) {
    let first = Expr::parse(&srcs[0]).unwrap_or_else(|e| panic!("{e}"));
    let fs: Vec<Expr> = srcs.iter().map(|s| first.parse_with(s).unwrap()).collect();
    let mut names: Vec<String> = fs.iter().flat_map(|f| f.variables()).collect();
    names.sort();
    names.dedup();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = compile(&fs, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(classes(c.stats()), expected, "classes of {}", &srcs[0][..srcs[0].len().min(80)]);
    let x = point(vars.len());
    let mut out = vec![f64::NAN; fs.len()];
    c.eval(&x, &mut out).unwrap();
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let expect = Expr::eval_all(&fs, &bound).unwrap();
    for (k, (a, b)) in out.iter().zip(&expect).enumerate() {
        if fs.len() == 1 {
            assert!((a - b).abs() <= 1e-11 * b.abs().max(1.0), "value: compiled {a}, interpreted {b}");
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "output {k}: compiled {a}, interpreted {b}");
        }
    }
}

#[test]
fn vector_functions() {
    let n = 60;
    // One large sum: its value by loops.
    check_vector(
        &[sum(n - 1, |i| format!("100*({} - {}^2)^2 + (1 - {})^2", x(i + 1), x(i), x(i)))],
        "59x5, 59x3",
    );
    check_vector(&[sum(n, |i| format!("sin({})*{}", x(i), 0.5 + i as f64)) + " + exp(u)"], "60x2");
    // A shared operand keeps a sum straight-line.
    check_vector(&[format!("log({})", sum(n, |i| format!("exp({})", x(i))))], "");
    // Like outputs: the residuals of a banded system, with a near miss and a repeated output.
    let mut rows: Vec<String> = (0..n)
        .map(|i| format!("(3 - 2*{})*{} - {} - 2*{} + 1", x(i + 1), x(i + 1), x(i), x(i + 2)))
        .collect();
    rows[7] = format!("(3 - 2*{})*{} - {} - 3*{} + 1", x(8), x(8), x(7), x(9));
    rows.push(rows[0].clone());
    check_vector(&rows, "58x6"); // not row 7, nor row 0, which is also output 60
    check_vector(&rows[..10], "");
    // The Jacobian of the banded system: like entries in loops, the rest straight-line.
    let first = Expr::parse(&rows[0]).unwrap();
    let fs: Vec<Expr> = rows[..n].iter().map(|s| first.parse_with(s).unwrap()).collect();
    let names: Vec<String> = (0..n + 2).map(x).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let j = compile_jacobian(&fs, &vars).unwrap();
    let mut out = vec![0.0; n * (n + 2)];
    let pt = point(n + 2);
    j.eval(&pt, &mut out).unwrap();
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(pt.iter().copied()).collect();
    for (r, f) in fs.iter().enumerate() {
        for (c, v) in vars.iter().enumerate() {
            let e = f.diff(v).eval(&bound).unwrap();
            assert_eq!(out[r * (n + 2) + c].to_bits(), e.to_bits(), "J[{r}][{c}]");
        }
    }
}

#[test]
fn hessians() {
    let n = 60;
    // Element assembly: a banded matrix from two templates.
    check_hessian(
        &sum(n - 1, |i| format!("100*({} - {}^2)^2 + (1 - {})^2", x(i + 1), x(i), x(i))),
        "59x5, 59x3",
    );
    // Plus a rest that is not a class, and uniform variables (every term reads a, b, c).
    let t = |k: usize| (k as f64 * 0.37).sin() + 1.5;
    let fit = |k: usize| format!("({} - (a*exp(-b*{}) + c))^2", 1.0 + t(k + 7), t(k));
    check_hessian(&(sum(40, fit) + " + sin(a*b*c)"), "39x6");
    // A shared subexpression: straight-line code.
    check_hessian(&format!("log({})", sum(20, |i| format!("exp({})", x(i)))), "");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Sums of terms drawn from a few shapes, with numbers and variables drawn per term and
    /// the odd near miss: whatever the classes, the results are the interpreter's.
    #[test]
    fn generated_sums(terms in proptest::collection::vec((0usize..6, 0usize..40, 0usize..40, -3i32..4), 16..120)) {
        let shapes = [
            "{c}*(x{a} - x{b})^2",
            "sin(x{a})*x{b}",
            "exp({c}*x{a}) + x{b}",
            "(x{a} + {c})^3",
            "x{a}*x{b}/(1 + x{a}^2)",
            "log(1 + x{a}^2)*{c}",
        ];
        let src = terms
            .iter()
            .map(|&(s, a, b, c)| {
                shapes[s].replace("{a}", &format!("{a:02}")).replace("{b}", &format!("{b:02}")).replace("{c}", &format!("{}.25", c))
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let f = Expr::parse(&src).unwrap();
        let names = f.variables();
        let vars: Vec<&str> = names.iter().map(String::as_str).collect();
        let g = compile_gradient(&f, &vars).unwrap();
        let x = point(vars.len());
        let mut grad = vec![0.0; vars.len()];
        let value = g.eval(&x, &mut grad);
        let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
        let mut exprs = vec![f.clone()];
        exprs.extend(f.gradient(&vars));
        let expect = Expr::eval_all(&exprs, &bound).unwrap();
        let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        prop_assert!((value - expect[0]).abs() <= 1e-11 * scale, "{src}: value {value} vs {}", expect[0]);
        for k in 0..vars.len() {
            prop_assert!((grad[k] - expect[k + 1]).abs() <= 1e-11 * scale, "{src}: d/d{} {} vs {}", vars[k], grad[k], expect[k + 1]);
        }
    }
}
