//! The cheap-gradient bound: the compiled gradient program (value and gradient together)
//! takes at most [`BOUND`] times the function's arithmetic operations, on every kind of
//! graph: the golden table, products of many factors, nested derivatives, random DAGs,
//! property-generated formulas and the training graphs of the example models.
//!
//! Asserted on operation counts (`CompileStats::ops` and `value_ops`, `Graph::ops_of`), never
//! on timings. In a function of a few operations one derivative rule can dominate (`tanh(x)`
//! is one operation, its derivative `1 - tanh(x)^2` and the chain rule three more), so a
//! function is allowed [`BOUND`] times its operations or [`BOUND`] times [`FLOOR`],
//! whichever is more; every graph of [`FLOOR`] operations or more is held to the ratio
//! itself. Each compiled gradient
//! is also evaluated against the interpreter, so that a cheaper program is not a wrong one.

use proptest::prelude::*;
use symdiff::{Expr, compile_gradient};

mod common;
use common::{TABLE, close};
#[allow(dead_code)]
#[path = "../benches/common/random_dag.rs"]
mod random_dag;

/// The most the gradient program may cost, in multiples of the function.
const BOUND: f64 = 4.0;

/// Functions smaller than this many operations are held to `BOUND * FLOOR` operations.
const FLOOR: usize = 16;

/// Compiles the gradient of `f`, checks the operation bound and compares value and gradient
/// with the interpreter at `x = 0.3 + 0.01 i` for the i-th variable. Returns the ratio.
#[track_caller]
fn check(name: &str, f: &Expr) -> f64 {
    let vars = f.variables();
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let g = compile_gradient(f, &names).unwrap_or_else(|e| panic!("{name}: {e}"));
    let s = g.stats();
    assert!(
        s.ops as f64 <= BOUND * s.value_ops.max(FLOOR) as f64,
        "{name}: the gradient program has {} operations, the function {} ({:.2}x)",
        s.ops,
        s.value_ops,
        s.gradient_ratio()
    );
    let x: Vec<f64> = (0..names.len()).map(|i| 0.3 + 0.01 * i as f64).collect();
    let mut grad = vec![0.0; names.len()];
    let value = g.eval(&x, &mut grad);
    let point: Vec<(&str, f64)> = names.iter().copied().zip(x.iter().copied()).collect();
    if let (Ok(want), Ok(grads)) = (f.eval(&point), Expr::eval_all(&f.gradient(&names), &point)) {
        assert!(close(value, want, 1e-12), "{name}: value {value}, interpreter {want}");
        for (k, (a, b)) in grad.iter().zip(&grads).enumerate() {
            assert!(close(*a, *b, 1e-9), "{name}: d/d{} = {a}, interpreter {b}", names[k]);
        }
    }
    s.gradient_ratio()
}

fn product(n: usize) -> Expr {
    Expr::parse(&(0..n).map(|i| format!("x{i}")).collect::<Vec<_>>().join("*")).unwrap()
}

/// A random DAG of `ops` nodes over 20 variables (the benchmark's generator, smaller): each
/// node combines two earlier ones, mostly among the 16 most recent, through a template.
fn random_dag(ops: usize, seed: u64) -> Expr {
    random_dag::generate(20, ops, seed | 1, 16).expr
}

#[test]
fn golden_table() {
    for (formula, _) in TABLE {
        check(formula, &Expr::parse(formula).unwrap());
    }
}

#[rustfmt::skip]
#[test]
fn products_sums_and_chains() {
    for n in [2, 5, 10, 65, 100, 1_000, 10_000] {
        assert!(check(&format!("product of {n}"), &product(n)) < BOUND);
    }
    check("product of sums", &Expr::parse(&(0..200).map(|i| format!("(x{i} + x{})", i + 1)).collect::<Vec<_>>().join("*")).unwrap());
    check("product with a zero factor", &Expr::parse(&format!("{}*sin(y - y)", (0..100).map(|i| format!("x{i}")).collect::<Vec<_>>().join("*"))).unwrap());
    check("sin chain", &Expr::parse(&format!("{}x{}", "sin(".repeat(500), ")".repeat(500))).unwrap());
    check("tanh chain", &Expr::parse(&format!("{}x{}", "tanh(2*".repeat(300), ")".repeat(300))).unwrap());
    check("rosenbrock", &Expr::parse(&(0..999).map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1)).collect::<Vec<_>>().join(" + ")).unwrap());
}

#[rustfmt::skip]
#[test]
fn nested_derivatives() {
    for k in 1..=7 {
        check(&format!("d^{k}/dx^{k} sin^7"), &Expr::parse(&format!("diff(sin(sin(sin(sin(sin(sin(sin(x))))))), x, {k})")).unwrap());
    }
    check("d^3/dx^3 x^y*y^x", &Expr::parse("diff(x^y*y^x, x, 3)").unwrap());
    check("d^4/dx^4 product", &Expr::parse("diff(x*sin(x)*exp(x)*cos(x)*log(x)*y, x, 4)").unwrap());
}

#[test]
fn random_dags() {
    for (ops, seed) in [(200, 1), (2_000, 2), (20_000, 3)] {
        check(&format!("random DAG of {ops}"), &random_dag(ops, seed));
    }
}

/// The training graphs: the loss and its gradient with respect to every parameter, against
/// the loss alone, counted on the graph (one tensor operation counts one).
#[test]
fn training_graphs() {
    use symdiff::model::{ModelSpec, build::build};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "model") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let spec =
            ModelSpec::parse(&src, &path.display().to_string()).unwrap_or_else(|d| panic!("{}", d.render()));
        let built = build(&spec, 8, true).unwrap_or_else(|d| panic!("{}", d.render()));
        let loss = built.graph.ops_of(&[built.loss]);
        let mut roots = built.grads.clone();
        roots.push(built.loss);
        let all = built.graph.ops_of(&roots);
        assert!(all as f64 <= BOUND * loss as f64, "{}: {all} operations, the loss {loss}", path.display());
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} example models");
}

fn formula() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        (1u32..6).prop_map(|n| n.to_string()),
        Just("pi".to_owned()),
    ];
    leaf.prop_recursive(6, 60, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..6).prop_map(|v| format!("({})", v.join(" + "))),
            prop::collection::vec(inner.clone(), 2..8).prop_map(|v| format!("({})", v.join("*"))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / {b})")),
            (inner.clone(), 0u32..5).prop_map(|(a, n)| format!("({a})^{n}")),
            inner.clone().prop_map(|a| format!("sin({a})")),
            inner.clone().prop_map(|a| format!("exp({a})")),
            inner.clone().prop_map(|a| format!("tanh({a})")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn generated_formulas(src in formula()) {
        let f = Expr::parse(&src).unwrap();
        if !f.variables().is_empty() {
            check(&src, &f);
        }
    }
}
