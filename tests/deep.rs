//! Size and depth: nothing in the pipeline may recurse on the input's shape. These run on
//! the test harness's default 2 MiB thread stacks, so any recursion proportional to the
//! depth would overflow here.

use symdiff::Expr;

const DEPTH: usize = 100_000;

fn check(src: &str, x: f64, expect_value: f64) {
    let f = Expr::parse(src).unwrap_or_else(|e| panic!("parse failed: {e}"));
    let df = f.diff("x");
    let printed = df.to_string();
    assert!(!printed.is_empty());
    let v = f.eval(&[("x", x)]).unwrap_or_else(|e| panic!("eval failed: {e}"));
    assert!((v - expect_value).abs() <= 1e-9 * expect_value.abs().max(1.0), "{v} vs {expect_value}");
}

#[test]
fn deep_parentheses() {
    check(&format!("{}x{}", "(".repeat(DEPTH), ")".repeat(DEPTH)), 2.0, 2.0);
}

#[test]
fn deep_function_nesting() {
    // sin(sin(...(x))) 100,000 times: the derivative is a product of 100,000 cosines.
    let src = format!("{}x{}", "sin(".repeat(DEPTH), ")".repeat(DEPTH));
    let f = Expr::parse(&src).unwrap();
    let df = f.diff("x");
    let v = df.eval(&[("x", 0.0)]).unwrap();
    assert_eq!(v, 1.0); // every cos(0) is 1
    assert!(df.node_count() < 4 * DEPTH); // linear, shared with the forward chain
    let _ = df.to_string(); // printed with named shared subexpressions, no overflow
}

#[test]
fn deep_unary_minus_and_powers() {
    check(&format!("{}x", "-".repeat(DEPTH)), 3.0, 3.0);
    check(&format!("{}x", "-".repeat(DEPTH + 1)), 3.0, -3.0);
    // x^(x^(...^2)) right-nested: parse and differentiate symbolically (no evaluation: huge).
    let f = Expr::parse(&format!("{}2", "x^".repeat(DEPTH))).unwrap();
    let _ = f.diff("x").node_count();
}

#[test]
fn long_sums_and_products() {
    check(&format!("{}x", "1+".repeat(DEPTH)), 1.0, DEPTH as f64 + 1.0);
    let terms: Vec<String> = (0..DEPTH).map(|i| format!("{}*x^{}", i % 7 + 1, i % 13)).collect();
    let f = Expr::parse(&terms.join(" + ")).unwrap();
    let df = f.diff("x");
    assert!(df.to_string().len() < 200, "like terms are collected: {df}");
}

#[test]
fn million_node_dag() {
    // a_{k+1} = sin(a_k)*y + a_k: every step adds a few nodes and uses a_k twice, so the
    // tree is exponentially large while the DAG has about a million nodes.
    let step = Expr::parse("sin(x)*y + x").unwrap();
    let mut a = Expr::parse("x").unwrap();
    let steps = 250_000;
    for _ in 0..steps {
        a = step.substitute("x", &a);
    }
    assert!(a.node_count() >= 750_000, "{}", a.node_count());
    let da = a.diff("x");
    assert!(da.node_count() >= 1_000_000, "{}", da.node_count());
    let v = da.eval(&[("x", 0.1), ("y", 1e-6)]).unwrap();
    assert!(v.is_finite() && v > 1.0, "{v}");
}

/// Everything done to a formula of n variables at a point of n values (what `symdiff eval`,
/// `diff` and `grad` do, and a REPL line with `at`): parsing, the point, evaluation, every
/// partial by forward mode, the gradient by reverse mode.
fn wide(n: usize) -> std::time::Duration {
    let vars: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let sum = vars.join(" + ");
    let at: Vec<String> = vars.iter().map(|v| format!("{v}=1")).collect();
    let at = at.join(",");
    let start = std::time::Instant::now();
    let f = Expr::parse(&sum).unwrap();
    let p = symdiff::Point::parse(&at).unwrap();
    let names = f.variables();
    p.check_names(&names).unwrap();
    p.check_complete(&names).unwrap();
    assert_eq!(f.eval(&p.values()).unwrap(), n as f64);
    for v in &names {
        assert_eq!(f.diff(v).to_string(), "1");
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let grad = f.gradient(&refs);
    assert!(Expr::eval_all(&grad, &p.values()).unwrap().iter().all(|&g| g == 1.0));
    let mut s = symdiff::Session::new();
    assert_eq!(s.run(&format!("{sum} at {at}")).unwrap(), n.to_string());
    assert_eq!(s.run(&format!("d/dx7 {sum} at {at}")).unwrap(), "1");
    start.elapsed()
}

/// A cost test: four times the variables may take about four times as long, not sixteen
/// (10^5 variables took 37 s to evaluate when a step was quadratic; they take well under a
/// second now). The absolute slack absorbs timer noise on small runs.
#[test]
fn many_variables_cost_linear_time() {
    let small = wide(25_000);
    let large = wide(100_000);
    assert!(
        large < small * 8 + std::time::Duration::from_secs(2),
        "4x the variables took {large:?}, against {small:?}: superlinear"
    );
}

/// Formulas long enough to be read in pieces (over 128 KiB), through the public entry points:
/// a long sum, a long sum inside a function (in pieces, or one piece where more is around it),
/// and a long sum read into another
/// expression's graph give the values written; a mistake anywhere in them is reported at its
/// line and column in the whole text, as in a short formula.
#[test]
fn long_formulas_read_in_pieces() {
    let n = 20_000; // about 300 KB of text
    let sum: String =
        (0..n).map(|i| format!("{}*x{} - y", i % 5 + 1, i % 100)).collect::<Vec<_>>().join(" + ");
    let at: Vec<(String, f64)> =
        (0..100).map(|i| (format!("x{i}"), 0.01 * i as f64)).chain([("y".to_owned(), 0.5)]).collect();
    let at: Vec<(&str, f64)> = at.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let want: f64 = (0..n).map(|i| (i % 5 + 1) as f64 * 0.01 * (i % 100) as f64 - 0.5).sum();
    let close = |v: f64, w: f64| (v - w).abs() <= 1e-9 * w.abs().max(1.0);
    let f = Expr::parse(&sum).unwrap();
    assert!(close(f.eval(&at).unwrap(), want));
    let wrapped = Expr::parse(&format!("log(exp(1) + ({sum})^2)")).unwrap();
    assert!(close(wrapped.eval(&at).unwrap(), (1f64.exp() + want * want).ln()));
    let beside = Expr::parse("y").unwrap().parse_with(&sum).unwrap();
    assert!(close(beside.eval(&at).unwrap(), want));
    // The sum in pieces inside a call, the rest around it.
    let around = Expr::parse(&format!("-log({sum})^2")).unwrap();
    assert!(close(around.eval(&at).unwrap(), -want.ln().powi(2)));
    let around = Expr::parse("y").unwrap().parse_with(&format!("-log(({sum}))")).unwrap();
    assert!(close(around.eval(&at).unwrap(), -want.ln()));
    // Mistakes, each inserted before a ` + ` of the text: (about where, what, the byte of the
    // inserted text the report points at, the message).
    let cases = [
        (sum.len() / 2, " + * ", 3, "unexpected `*`"),
        (sum.len() - 3, " + sinn(x1)", 3, "unknown function `sinn`"),
        (sum.len() * 3 / 4, "\n + x1 $ ", 7, "unexpected character `$`"),
        (100, " + )", 3, "unexpected `)`"),
    ];
    for ((around, insert, offset, message), (before, after)) in
        cases.into_iter().flat_map(|c| [(c, ("", "")), (c, ("-log(", ")^2"))])
    {
        let cut = sum[..around].rfind(" + ").unwrap();
        let bad = format!("{before}{}{}{}{after}", &sum[..cut], insert, &sum[cut..]);
        let at = before.len() + cut + offset;
        let line = bad[..at].matches('\n').count() + 1;
        let col = bad[..at].chars().rev().take_while(|&c| c != '\n').count() + 1;
        for err in [Expr::parse(&bad).unwrap_err(), Expr::parse("y").unwrap().parse_with(&bad).unwrap_err()] {
            let text = err.to_string();
            let head = text.lines().next().unwrap_or("");
            assert!(
                head.starts_with(&format!("formula:{line}:{col}: ")),
                "{insert:?}: expected {line}:{col}: {head}"
            );
            assert!(head.contains(message), "{insert:?}: {head}");
        }
    }
}
