//! Compiled gradients against independent oracles:
//!
//! * the interpreter on the same graph: compiled code computes the same operations in the
//!   same order, so values must agree to 4 ulp (in practice they are identical);
//! * symbolic forward differentiation: reverse mode must give the same partials;
//! * finite differences, for Jacobians and Hessians of known functions.

use proptest::prelude::*;
use symdiff::{Expr, compile, compile_gradient, compile_hessian, compile_jacobian};

mod common;
use common::{POINTS, TABLE, close};

#[allow(dead_code)]
#[path = "../benches/common/random_dag.rs"]
mod random_dag;

/// Distance in units in the last place (0 for equal values, including equal infinities).
fn ulps(a: f64, b: f64) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() || b.is_nan() || a.signum() != b.signum() {
        return u64::MAX;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
}

/// The compiled value and gradient of `src` at `point` agree with the interpreter on the
/// same (reverse-mode) gradient graph, and with forward-mode symbolic partials.
fn check(src: &str, vars: &[&str], point: &[f64]) -> bool {
    let f = Expr::parse(src).unwrap();
    let g = compile_gradient(&f, vars).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut grad = vec![0.0; vars.len()];
    let value = g.eval(point, &mut grad);
    let at: Vec<(&str, f64)> = vars.iter().copied().zip(point.iter().copied()).collect();
    let Ok(expect) = f.eval(&at) else { return false };
    assert!(ulps(value, expect) <= 4, "{src} at {at:?}: compiled {value} vs interpreted {expect}");
    for (k, (partial, v)) in f.gradient(vars).iter().zip(vars).enumerate() {
        let Ok(expect) = partial.eval(&at) else { return false };
        assert!(
            ulps(grad[k], expect) <= 4,
            "{src}: d/d{v} at {at:?}: compiled {} vs interpreted {expect}",
            grad[k]
        );
        if let Ok(forward) = f.diff(v).eval(&at) {
            assert!(
                close(grad[k], forward, 1e-12),
                "{src}: reverse d/d{v} = {} vs forward {forward}",
                grad[k]
            );
        }
    }
    true
}

#[test]
fn golden_formulas_compile_and_agree() {
    for (src, _) in TABLE {
        let vars: Vec<String> = Expr::parse(src).unwrap().variables();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let mut checked = 0;
        for &(x, y) in POINTS {
            let point: Vec<f64> = vars.iter().map(|v| if *v == "x" { x } else { y }).collect();
            checked += usize::from(check(src, &vars, &point));
        }
        assert!(checked >= 2, "{src}: too few points");
    }
}

#[test]
fn seed_example() {
    let f = Expr::parse("x^3 + 2*x^2 + 1").unwrap();
    let g = compile_gradient(&f, &["x"]).unwrap();
    let mut grad = [0.0];
    assert_eq!(g.eval(&[4.0], &mut grad), 97.0);
    assert_eq!(grad, [64.0]);
}

#[rustfmt::skip]
#[test]
fn singular_and_extreme_points() {
    // At and near the points where functions or their derivatives are singular or kinked,
    // and at arguments that overflow naive formulas: compiled and interpreted agree wherever
    // the interpreter has a value.
    let cases: &[(&str, &[f64])] = &[
        ("sqrt(x)",        &[0.0, 1e-300, 1e-12, 4.0]),
        ("log(x)",         &[1e-300, 1e-12, 1.0, 1e300]),
        ("relu(x)",        &[-1.0, -0.0, 0.0, 1e-300, 2.0]),
        ("sqrt(relu(x))",  &[-1.0, -0.0, 0.0, 1e-300, 2.0]),
        ("relu(x)^0.3 + log(1 + sqrt(relu(-x)))", &[-1.0, 0.0, 1e-300, 2.0]),
        ("abs(x)",         &[-1.0, -0.0, 0.0, 1e-300]),
        ("exp(x)",         &[-745.0, -700.0, 0.0, 700.0, 709.0]),
        ("softplus(x)",    &[-800.0, -30.0, 0.0, 30.0, 800.0]),
        ("sigmoid(x)",     &[-800.0, -30.0, 0.0, 30.0, 800.0]),
        ("tanh(x)",        &[-400.0, -1e-8, 0.0, 1e-8, 400.0]),
        ("x^x",            &[1e-10, 0.5, 1.0, 10.0]),
        ("x^-3 + x^0.5",   &[1e-3, 1.0, 1e3]),
        ("asin(x) + acos(x)", &[-0.999999, 0.0, 0.999999]),
    ];
    for (src, points) in cases {
        for &x in *points {
            check(src, &["x"], &[x]);
        }
    }
}

/// Random formulas as in tests/properties.rs, over x, y, z.
fn formula() -> impl Strategy<Value = String> {
    const UNARY: &[&str] = &[
        "exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "abs",
        "sigmoid", "softplus", "relu",
    ];
    let leaf = prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        Just("z".to_owned()),
        (1u32..6).prop_map(|n| n.to_string()),
        (-30i32..30).prop_map(|n| format!("{}", n as f64 / 10.0)),
    ];
    leaf.prop_recursive(5, 40, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / {b})")),
            (inner.clone(), -3i32..5).prop_map(|(a, n)| format!("({a})^{n}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a})^({b})")),
            (inner.clone(), prop::sample::select(UNARY)).prop_map(|(a, f)| format!("{f}({a})")),
        ]
    })
}

/// `eval_many` (four or two points per call in `f64x2` code, a last one alone) against one
/// `eval` per point: the same bits, NaN where `eval` gives NaN.
fn check_batch(f: &Expr, vars: &[&str], m: usize, xs: &[f64]) {
    check_batch_of(&compile_gradient(f, vars).unwrap(), f, vars, m, xs);
}

/// [`check_batch`] of `f` compiled as `g`.
fn check_batch_of(g: &symdiff::CompiledGradient, f: &Expr, vars: &[&str], m: usize, xs: &[f64]) {
    let n = vars.len();
    let (mut values, mut grads) = (vec![0.0; m], vec![0.0; m * n]);
    g.eval_many(xs, &mut values, &mut grads).unwrap();
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for i in 0..m {
        let mut one = vec![0.0; n];
        let v = g.eval(&xs[i * n..(i + 1) * n], &mut one);
        assert!(same(v, values[i]), "{f} at point {i}: {v} alone, {} in a batch", values[i]);
        for j in 0..n {
            assert!(
                same(one[j], grads[i * n + j]),
                "d/d{} of {f} at point {i}: {} alone, {} in a batch",
                vars[j],
                one[j],
                grads[i * n + j]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_formulas_compile_like_the_interpreter(src in formula(), p in [-3.0f64..3.0, -3.0f64..3.0, 0.0f64..3.0]) {
        check(&src, &["x", "y", "z"], &p);
    }

    #[test]
    fn batches_give_each_point_what_one_call_gives(src in formula(), xs in prop::collection::vec(-3.0f64..3.0, 3..22)) {
        let f = Expr::parse(&src).unwrap();
        let m = xs.len() / 3;
        check_batch(&f, &["x", "y", "z"], m, &xs[..3 * m]);
    }
}

/// `Compiled::eval_many` (vector functions, Jacobians) against one `eval` per point, bit for
/// bit, for odd and even batches and one large enough to be split across threads; and
/// functions of no variables.
#[test]
fn vector_batches_give_each_point_what_one_call_gives() {
    let fs = [
        Expr::parse("x*y + sin(x)").unwrap(),
        Expr::parse("relu(x - y)/(1 + y^2)").unwrap(),
        Expr::parse("exp(-x)*log(1 + y^2)").unwrap(),
    ];
    let c = compile(&fs, &["x", "y"]).unwrap();
    for m in [1, 2, 3, 4, 5, 6, 7, 40_001] {
        let xs: Vec<f64> = (0..2 * m).map(|i| (i as f64 * 0.37).sin() * 2.0).collect();
        let mut out = vec![0.0; 3 * m];
        c.eval_many(&xs, &mut out).unwrap();
        for i in (0..m).step_by(1 + m / 50) {
            let mut one = [0.0; 3];
            c.eval(&xs[2 * i..2 * i + 2], &mut one).unwrap();
            let row = &out[3 * i..3 * i + 3];
            assert!(
                one.iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits()),
                "point {i} of {m}: {one:?} vs {row:?}"
            );
        }
    }
    let k = compile(&[Expr::parse("2 + pi").unwrap()], &[]).unwrap();
    let mut out = vec![0.0; 300_000];
    k.eval_many(&[], &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 2.0 + std::f64::consts::PI));
    let g = compile_gradient(&Expr::parse("2 + pi").unwrap(), &[]).unwrap();
    let mut values = vec![0.0; 300_000];
    g.eval_many(&[], &mut values, &mut []).unwrap();
    assert!(values.iter().all(|&v| v == 2.0 + std::f64::consts::PI));
}

/// Every function computed by a host call, and `x^y` by `pow`, over batches of points: on
/// x86-64 one call computes four lanes (two `f64x2` in, two written back; in one AVX
/// register where the processor has AVX2), and each lane must be what the one-lane code
/// gives, at ordinary points, out of the domain (NaN), at infinities and at signed zeros.
#[test]
fn host_functions_over_batches_give_each_lane_what_one_call_gives() {
    let points = [0.3, -0.7, 2.5, -1e-300, 0.0, -0.0, 1e300, -1e300, 40.0, -745.5, 710.0, 1.0, -1.0, 0.5];
    for f in [
        "exp(x)",
        "exp(x)*log(x)",
        "log(x)",
        "sin(x)",
        "cos(x)",
        "tan(x)",
        "asin(x)",
        "acos(x)",
        "atan(x)",
        "sinh(x)",
        "cosh(x)",
        "tanh(x)",
        "sigmoid(x)",
        "softplus(x)",
        "x^y",
        "x^2.5",
    ] {
        let e = Expr::parse(f).unwrap();
        let vars = e.variables();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let xs: Vec<f64> = (0..points.len() * vars.len())
            .map(|i| points[(i * 5 + i / points.len()) % points.len()])
            .collect();
        check_batch(&e, &vars, points.len(), &xs);
    }
}

/// `exp` is computed inline (`graph::math::exp`'s operations, two lanes at a time): the
/// compiled value, one point at a time, in pairs and inside a loop over like terms, is the
/// interpreter's to the bit, over the whole range, its edges (overflow, the subnormal
/// results, underflow to 0) and the special values.
#[test]
fn inline_exp_is_the_interpreters_to_the_bit() {
    let mut xs: Vec<f64> = (0..20_000).map(|i| -750.0 + 1470.0 * ((i as f64 * 0.618_034) % 1.0)).collect();
    xs.extend((0..2_000).map(|i| (i as f64 - 1000.0) * 1e-3));
    xs.extend((0..500).map(|i| -708.0 - i as f64 * 0.075));
    xs.extend([0.0, -0.0, 1.0, 709.78, 709.79, 710.0, 1e300, -1e300, -745.13, -745.14]);
    xs.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN, f64::MIN_POSITIVE, -f64::MIN_POSITIVE]);
    let interpreted = |x: f64| match Expr::parse("exp(x)").unwrap().eval(&[("x", x)]) {
        Ok(v) => v,
        // The interpreter refuses overflow (exp(800)) and non-finite inputs; there the special
        // values are IEEE's, as libm gives them.
        Err(_) => x.exp(),
    };
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let f = Expr::parse("exp(x)").unwrap();
    let g = compile_gradient(&f, &["x"]).unwrap();
    let (mut values, mut grads) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    g.eval_many(&xs, &mut values, &mut grads).unwrap();
    for (i, &x) in xs.iter().enumerate() {
        let want = interpreted(x);
        let mut d = [0.0];
        let v = g.eval(&[x], &mut d);
        assert!(same(v, want) && same(d[0], want), "exp({x:e}): compiled {v:e}, interpreter {want:e}");
        assert!(same(values[i], want) && same(grads[i], want), "exp({x:e}) in a pair: {:e}", values[i]);
    }
    // A sum of like terms: one loop whose body computes exp on both lanes.
    let n = 1001;
    let src = (0..n).map(|i| format!("exp(x{i})")).collect::<Vec<_>>().join(" + ");
    let f = Expr::parse(&src).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = compile_gradient(&f, &vars).unwrap();
    assert_eq!(g.stats().classes.len(), 1, "{:?}", g.stats().classes);
    let x: Vec<f64> = (0..n).map(|i| -700.0 + 1405.0 * ((i as f64 * 0.618_034) % 1.0)).collect();
    let mut grad = vec![0.0; n];
    g.eval(&x, &mut grad);
    for i in 0..n {
        assert!(same(grad[i], interpreted(x[i])), "d/dx{i} = exp({}): {:e}", x[i], grad[i]);
    }
}

#[test]
fn batches_of_the_golden_table_and_of_chunked_code() {
    for (src, _) in TABLE {
        let f = Expr::parse(src).unwrap();
        let vars = f.variables();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let xs: Vec<f64> = (0..7 * vars.len().max(1)).map(|i| 0.9 * (i as f64 * 0.71).sin() + 0.05).collect();
        check_batch(&f, &vars, 7, &xs[..7 * vars.len()]);
    }
    // Several chunks and scratch slots: the pairs cross chunk boundaries through scratch.
    let n = 1500;
    let mut src = format!("x{}", n - 1);
    for i in (0..n - 1).rev() {
        src = format!("x{i} + 1/(1 + ({src})^2) + relu(x{i})*sin(x{i})");
    }
    let f = Expr::parse(&src).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let xs: Vec<f64> = (0..5 * n).map(|i| (i as f64 * 0.37).sin()).collect();
    check_batch(&f, &vars, 5, &xs);
}

#[test]
fn large_functions_without_structure_take_the_chunked_path_and_agree() {
    // A continued fraction over 3,000 variables: no sum of like terms, so no loops; the
    // gradient is straight-line code in several chunks compiled in parallel.
    let n = 3000;
    let mut src = format!("x{}", n - 1);
    for i in (0..n - 1).rev() {
        src = format!("x{i} + 1/(1 + ({src})^2)");
    }
    let f = Expr::parse(&src).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = compile_gradient(&f, &vars).unwrap();
    assert!(g.stats().chunks > 1 && g.stats().classes.is_empty(), "{:?}", g.stats());
    let x: Vec<f64> = (0..n).map(|i| 0.3 + (i as f64 * 0.37).sin()).collect();
    let mut grad = vec![0.0; n];
    let value = g.eval(&x, &mut grad);
    let at: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let mut exprs = vec![f.clone()];
    exprs.extend(f.gradient(&vars));
    let expect = Expr::eval_all(&exprs, &at).unwrap();
    assert!(ulps(value, expect[0]) <= 4, "{value} vs {}", expect[0]);
    for i in 0..n {
        assert!(ulps(grad[i], expect[i + 1]) <= 4, "d/dx{i}: {} vs {}", grad[i], expect[i + 1]);
    }
}

#[test]
fn large_sums_of_like_terms_take_loops_and_agree() {
    // 2,000-variable Rosenbrock: two classes of 1,999 like terms, one loop each.
    let n = 2000;
    let src: String = (0..n - 1)
        .map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1))
        .collect::<Vec<_>>()
        .join(" + ");
    let f = Expr::parse(&src).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = compile_gradient(&f, &vars).unwrap();
    let classes: Vec<(usize, usize)> =
        g.stats().classes.iter().map(|c| (c.members, c.template_nodes)).collect();
    assert_eq!(classes, [(1999, 5), (1999, 3)]);
    let x: Vec<f64> = (0..n).map(|i| 0.3 + (i as f64 * 0.37).sin()).collect();
    let mut grad = vec![0.0; n];
    let value = g.eval(&x, &mut grad);
    // The analytic gradient, written by hand, as the oracle.
    let mut expect = vec![0.0; n];
    let mut fx = 0.0;
    for i in 0..n - 1 {
        let t = x[i + 1] - x[i] * x[i];
        fx += 100.0 * t * t + (1.0 - x[i]) * (1.0 - x[i]);
        expect[i] += -400.0 * x[i] * t - 2.0 * (1.0 - x[i]);
        expect[i + 1] += 200.0 * t;
    }
    assert!(close(value, fx, 1e-12), "{value} vs {fx}");
    for i in 0..n {
        assert!(close(grad[i], expect[i], 1e-10), "d/dx{i}: {} vs {}", grad[i], expect[i]);
    }
}

/// Central finite differences of a compiled vector function, as a Jacobian oracle.
fn fd_jacobian(f: &symdiff::Compiled, x: &[f64]) -> Vec<f64> {
    let (n, m) = (f.inputs(), f.outputs());
    let mut jac = vec![0.0; m * n];
    for j in 0..n {
        let h = 1e-6 * x[j].abs().max(1.0);
        let (mut a, mut b) = (x.to_vec(), x.to_vec());
        a[j] += h;
        b[j] -= h;
        let (mut fa, mut fb) = (vec![0.0; m], vec![0.0; m]);
        f.eval(&a, &mut fa).unwrap();
        f.eval(&b, &mut fb).unwrap();
        for i in 0..m {
            jac[i * n + j] = (fa[i] - fb[i]) / (2.0 * h);
        }
    }
    jac
}

#[rustfmt::skip]
#[test]
fn jacobians_and_hessians_of_known_functions() {
    let cases: &[(&[&str], &[&str], &[f64])] = &[
        // Rosenbrock (3 variables), its gradient as a vector function too
        (&["100*(y - x^2)^2 + (1 - x)^2 + 100*(z - y^2)^2 + (1 - y)^2"], &["x", "y", "z"], &[-1.2, 1.0, 0.7]),
        // Himmelblau
        (&["(x^2 + y - 11)^2 + (x + y^2 - 7)^2"], &["x", "y"], &[3.5, -1.5]),
        // softmax of three logits: a vector function
        (&["exp(a)/(exp(a) + exp(b) + exp(c))", "exp(b)/(exp(a) + exp(b) + exp(c))", "exp(c)/(exp(a) + exp(b) + exp(c))"],
            &["a", "b", "c"], &[0.3, -1.1, 2.0]),
    ];
    for (srcs, vars, x) in cases {
        let fs: Vec<Expr> = srcs.iter().map(|s| Expr::parse(s).unwrap()).collect();
        let f = compile(&fs, vars).unwrap();
        let jac = compile_jacobian(&fs, vars).unwrap();
        let mut got = vec![0.0; jac.outputs()];
        jac.eval(x, &mut got).unwrap();
        for (k, (a, b)) in got.iter().zip(fd_jacobian(&f, x)).enumerate() {
            assert!(close(*a, b, 1e-7), "{srcs:?}: Jacobian entry {k}: {a} vs finite difference {b}");
        }
        if fs.len() == 1 {
            // The Hessian is the Jacobian of the gradient.
            let grads = fs[0].gradient(vars);
            let grad_f = compile(&grads, vars).unwrap();
            let hess = compile_hessian(&fs[0], vars).unwrap();
            let mut h = vec![0.0; hess.outputs()];
            hess.eval(x, &mut h).unwrap();
            for (k, (a, b)) in h.iter().zip(fd_jacobian(&grad_f, x)).enumerate() {
                assert!(close(*a, b, 1e-6), "{srcs:?}: Hessian entry {k}: {a} vs finite difference {b}");
            }
        }
    }
}

#[test]
fn wrong_lengths_are_refused_not_undefined() {
    let f = Expr::parse("x*y").unwrap();
    let g = compile_gradient(&f, &["x", "y"]).unwrap();
    let mut grad = [7.0; 2];
    assert!(g.eval(&[1.0], &mut grad).is_nan());
    assert_eq!(grad, [7.0; 2], "nothing written");
    assert!(g.try_eval(&[1.0, 2.0], &mut [0.0; 3]).is_err());
    assert!(g.eval_many(&[1.0; 5], &mut [0.0; 2], &mut [0.0; 4]).is_err());
    let v = compile(std::slice::from_ref(&f), &["x", "y"]).unwrap();
    assert!(v.eval(&[1.0, 2.0, 3.0], &mut [0.0]).is_err());
    // Variables must all be listed, once.
    assert!(compile_gradient(&f, &["x"]).is_err());
    assert!(compile_gradient(&f, &["x", "y", "x"]).is_err());
}

/// Batches of random DAGs: a small one runs four points per call, one whose one-lane code
/// is over 256 KB two per call (longer four-lane code would be paced by fetching it); both
/// give each point what one call gives, for every size of the last group.
#[test]
fn random_dag_batches_give_each_point_what_one_call_gives() {
    for (ops, long) in [(100, false), (6_000, true)] {
        let d = random_dag::generate(8, ops, 0x9e37_79b9_7f4a_7c15, 64);
        let vars: Vec<&str> = d.vars.iter().map(|s| s.as_str()).collect();
        let g = compile_gradient(&d.expr, &vars).unwrap();
        assert_eq!(
            g.stats().code_bytes > 256 * 1024,
            long,
            "{ops} operations: {} bytes",
            g.stats().code_bytes
        );
        let n = vars.len();
        for m in [2, 3, 4, 5, 6, 7, 9] {
            let xs: Vec<f64> = (0..m * n).map(|i| 0.2 + 0.5 * (i as f64 * 0.37).sin().abs()).collect();
            check_batch_of(&g, &d.expr, &vars, m, &xs);
        }
    }
}

#[test]
fn eval_many_matches_single_calls_also_across_threads() {
    let f = Expr::parse("sin(x)*exp(y) + x^3/(1 + y^2)").unwrap();
    let g = compile_gradient(&f, &["x", "y"]).unwrap();
    let m = 50_000; // large enough to be split across threads
    let xs: Vec<f64> = (0..2 * m).map(|i| (i as f64 * 0.001).sin()).collect();
    let mut values = vec![0.0; m];
    let mut grads = vec![0.0; 2 * m];
    g.eval_many(&xs, &mut values, &mut grads).unwrap();
    for i in (0..m).step_by(997) {
        let mut one = [0.0; 2];
        let v = g.eval(&xs[2 * i..2 * i + 2], &mut one);
        assert_eq!((v, one[0], one[1]), (values[i], grads[2 * i], grads[2 * i + 1]));
    }
}

#[test]
fn compiled_code_is_freed_and_recompiles() {
    // Many compile/drop cycles must not leak code memory or crash.
    let f = Expr::parse("x^2 + sin(x)").unwrap();
    for k in 0..200 {
        let g = compile_gradient(&f, &["x"]).unwrap();
        let mut d = [0.0];
        let v = g.eval(&[k as f64], &mut d);
        assert!(v.is_finite() && d[0].is_finite());
    }
}

#[test]
fn ir_is_available_on_request() {
    let f = Expr::parse("x^3 + 2*x^2 + 1").unwrap();
    let opts = symdiff::CompileOptions { keep_ir: true, ..Default::default() };
    let g = symdiff::compile_gradient_with(&f, &["x"], &opts).unwrap();
    let ir = g.ir().unwrap();
    assert!(ir.contains("fmul") && ir.contains("store"), "{ir}");
    assert!(compile_gradient(&f, &["x"]).unwrap().ir().is_none());
}
