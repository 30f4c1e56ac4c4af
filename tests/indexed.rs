//! Indexed variables and sums in the formula language: `x[i]`, `sum(i = a..b, ...)` and
//! `prod(...)`, bounds from numbers, `let` names and enclosing indices (both bounds
//! included). Each expansion is checked against the formula written out by hand (same
//! printed form, same value), and the errors against their messages and positions.

use symdiff::{Expr, compile_gradient};

/// `src` (with `n = 5`) parses to the same expression as `written`.
fn check(src: &str, written: &str) {
    let f = Expr::parse_with_lets(src, &[("n", 5.0)]).unwrap_or_else(|e| panic!("{src}: {e}"));
    let w = Expr::parse(written).unwrap_or_else(|e| panic!("{written}: {e}"));
    assert_eq!(f.to_string(), w.to_string(), "{src}");
    let vars = w.variables();
    let at: Vec<(&str, f64)> =
        vars.iter().enumerate().map(|(k, v)| (v.as_str(), 0.3 + 0.1 * k as f64)).collect();
    assert_eq!(f.eval(&at).ok(), w.eval(&at).ok(), "{src}");
}

/// `src` fails with a message starting `expected` (position included).
fn check_error(src: &str, expected: &str) {
    let err = Expr::parse_with_lets(src, &[("n", 5.0)]).map(|e| e.to_string()).unwrap_err().to_string();
    assert!(err.starts_with(expected), "{src}: {err}");
}

#[rustfmt::skip]
#[test]
fn sums_expand_as_written() {
    check("sum(i = 0..3, x[i]^2)", "x[0]^2 + x[1]^2 + x[2]^2 + x[3]^2");
    check("sum(i = 0..n-2, 100*(x[i+1] - x[i]^2)^2 + (1 - x[i])^2)",
          "100*(x[1] - x[0]^2)^2 + (1 - x[0])^2 + 100*(x[2] - x[1]^2)^2 + (1 - x[1])^2 + 100*(x[3] - x[2]^2)^2 + (1 - x[2])^2 + 100*(x[4] - x[3]^2)^2 + (1 - x[3])^2");
    check("prod(i = 1..4, i*x[i])", "1*x[1]*2*x[2]*3*x[3]*4*x[4]");
    check("sum(i = 0..2, sum(j = 0..i, a[i,j]))", "a[0,0] + a[1,0] + a[1,1] + a[2,0] + a[2,1] + a[2,2]");
    check("sum(i = 2..2, sin(x[i]))", "sin(x[2])");
    check("sum(i = 3..2, x[i])", "0");
    check("prod(i = 3..2, x[i])", "1");
    check("sum(i = 0..1, y*x[2*i+1])", "y*x[1] + y*x[3]");
    check("n*x[n-1] + sum(k = 0..n/5, k)", "5*x[4] + 1");
    check("sum(i = 0..1, i) + i", "1 + i");
    check("x[0] + x[ 0 ]", "2*x[0]");
}

#[rustfmt::skip]
#[test]
fn bad_bounds_and_indices_are_positioned_errors() {
    check_error("sum(i = 0..m, x[i])", "formula:1:12: `m` has no value here");
    check_error("x[j]", "formula:1:3: `j` has no value here");
    check_error("x[2-3]", "formula:1:3: an index must be 0 or more, here it is -1");
    check_error("x[0.5]", "formula:1:3: an index must be a whole number, here it is 0.5");
    check_error("x[1/0]", "formula:1:3: division by zero in an index");
    check_error("x[y]", "formula:1:3: `y` has no value here");
    check_error("x[sin(1)]", "formula:1:3: an index must be whole-number arithmetic");
    check_error("sin[0]", "formula:1:1: `sin` is a function; only a variable can be indexed");
    check_error("sum(i = 0..2, i[0])", "formula:1:15: `i` is the index of a sum");
    check_error("n[0]", "formula:1:1: `n` is a constant");
    check_error("max(i = 0..2, x)", "formula:1:1: `max` does not take an index range");
    check_error("sum(sin = 0..2, x)", "formula:1:5: `sin` already has a meaning");
    check_error("sum(i = 0..1e12, x[i])", "formula:1:12: a bound is out of range");
    check_error("sum(i = 0..1e8, x)", "formula:1:1: this sum has 100000001 terms");
    check_error("2..3", "formula:1:2: unexpected `..`");
    check_error("sum(i = 0..2 x)", "formula:1:14: unexpected name `x`");
}

#[test]
fn nesting_is_bounded() {
    let deep = (0..20).fold("x".to_owned(), |body, k| format!("sum(i{k} = 0..1, {body})"));
    let err = Expr::parse(&deep).unwrap_err().to_string();
    assert!(err.contains("nest at most 16 deep"), "{err}");
}

/// A sum written with an index compiles to the same loops as the written-out sum, and its
/// gradient agrees with the interpreter's.
#[test]
fn indexed_rosenbrock_compiles_to_loops() {
    let n = 1000;
    let f =
        Expr::parse_with_lets("sum(i = 0..n-2, 100*(x[i+1] - x[i]^2)^2 + (1 - x[i])^2)", &[("n", n as f64)])
            .unwrap();
    let vars = f.variables();
    assert_eq!(vars.len(), n);
    assert_eq!((vars[0].as_str(), vars[10].as_str(), vars[n - 1].as_str()), ("x[0]", "x[10]", "x[999]"));
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let g = compile_gradient(&f, &names).unwrap();
    assert!(!g.stats().classes.is_empty(), "no loops: {}", g.stats().structure());
    let x: Vec<f64> = (0..n).map(|i| 0.5 + 0.3 * (i as f64 * 0.7).sin()).collect();
    let mut grad = vec![0.0; n];
    let value = g.eval(&x, &mut grad);
    let at: Vec<(&str, f64)> = names.iter().copied().zip(x.iter().copied()).collect();
    let mut exprs = vec![f.clone()];
    exprs.extend(f.gradient(&names));
    let want = Expr::eval_all(&exprs, &at).unwrap();
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert!((value - want[0]).abs() <= 1e-11 * scale);
    for k in 0..n {
        assert!((grad[k] - want[k + 1]).abs() <= 1e-11 * scale, "d/d{}", names[k]);
    }
}

/// The partials of a product printed together (`Expr::shared_partials`) are short and mean
/// what the textbook forms mean: the `where` names are read back one by one, each partial
/// is read back over them, and the value is the symbolic derivative's at a point.
#[test]
fn shared_partials_are_short_and_read_back() {
    for (src, n) in [
        ("prod(i = 0..n-1, x[i])", 40),
        ("prod(i = 0..n-1, sin(x[i]) + 2)", 25),
        ("exp(prod(i = 0..n-1, x[i]))", 30),
    ] {
        let f = Expr::parse_with_lets(src, &[("n", n as f64)]).unwrap();
        let vars = f.variables();
        let names: Vec<&str> = vars.iter().map(String::as_str).collect();
        let (texts, block) =
            f.shared_partials(&names, false).unwrap().unwrap_or_else(|| panic!("{src}: not shared"));
        let printed: usize = texts.iter().map(String::len).sum::<usize>() + block.len();
        assert!(printed < 100 * n, "{src}: {printed} bytes for {n} partials");
        let at: Vec<(&str, f64)> =
            names.iter().enumerate().map(|(k, v)| (*v, 0.9 + 0.01 * k as f64)).collect();
        // The names, in order: each definition uses the variables and the names before it.
        let mut defs: Vec<(String, Expr)> = Vec::new();
        for line in block.lines().skip(1) {
            let (name, body) = line.trim().split_once(" = ").unwrap();
            let e = f.parse_with(body).unwrap();
            let pairs: Vec<(&str, &Expr)> = defs.iter().map(|(n, e)| (n.as_str(), e)).collect();
            defs.push((name.to_owned(), e.substitute_all(&pairs)));
        }
        let pairs: Vec<(&str, &Expr)> = defs.iter().map(|(n, e)| (n.as_str(), e)).collect();
        for (v, text) in names.iter().zip(&texts) {
            let d = f.parse_with(text).unwrap().substitute_all(&pairs).eval(&at).unwrap();
            let want = f.diff(v).eval(&at).unwrap();
            assert!((d - want).abs() <= 1e-12 * want.abs().max(1.0), "{src}: d/d{v} = {text}: {d} vs {want}");
        }
    }
    // Short partials stay textbook forms.
    let f = Expr::parse("x*y*z + sin(x)").unwrap();
    assert!(f.shared_partials(&["x", "y", "z"], false).unwrap().is_none());
}
