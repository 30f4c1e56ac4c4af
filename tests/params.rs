//! Gradients with parameters: values read at each call and not differentiated. Each case
//! compares `eval_params` with the interpreter's gradient of the same formula, for several
//! parameter values through one compiled function (the data change, the code does not), in
//! straight-line code and in loops, including a loop slot that reads a variable in some
//! terms and a parameter in others.

use symdiff::{Expr, compile_gradient_params};

/// The gradient of `src` with respect to `vars`, `params` read from each of `data`.
fn check(src: &str, vars: &[&str], params: &[&str], data: &[Vec<f64>], looped: bool) {
    let f = Expr::parse(src).unwrap();
    let g = compile_gradient_params(&f, vars, params).unwrap();
    assert_eq!((g.len(), g.params()), (vars.len(), params.len()));
    assert_eq!(!g.stats().classes.is_empty(), looped, "{src}: loops");
    let x: Vec<f64> = (0..vars.len()).map(|i| 0.3 + 0.1 * i as f64).collect();
    let grads = f.gradient(vars);
    for p in data {
        let mut grad = vec![f64::NAN; vars.len()];
        let value = g.eval_params(&x, p, &mut grad).unwrap();
        let bound: Vec<(&str, f64)> = vars
            .iter()
            .copied()
            .zip(x.iter().copied())
            .chain(params.iter().copied().zip(p.iter().copied()))
            .collect();
        let mut exprs = vec![f.clone()];
        exprs.extend(grads.iter().cloned());
        let expect = Expr::eval_all(&exprs, &bound).unwrap();
        let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!((value - expect[0]).abs() <= 1e-11 * scale, "{src}: value {value} vs {}", expect[0]);
        for (k, v) in vars.iter().enumerate() {
            assert!(
                (grad[k] - expect[k + 1]).abs() <= 1e-11 * scale,
                "{src}: d/d{v} {} vs {}",
                grad[k],
                expect[k + 1]
            );
        }
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

fn data(n: usize, seed: f64) -> Vec<f64> {
    (0..n).map(|i| 0.5 + ((i as f64 * 0.618 + seed).fract())).collect()
}

#[test]
fn gradients_with_parameters() {
    check(
        "(y - a*exp(-b*t))^2",
        &["a", "b"],
        &["t", "y"],
        &[vec![1.0, 3.0], vec![5.0, 2.0], vec![0.0, 0.0]],
        false,
    );
    check("x*y*z + sin(x*p)", &["x", "y", "z"], &["p"], &[vec![0.5], vec![-2.0]], false);
    // A fit to 60 data points: the points' (t, y) are parameters, read by the loop.
    let (t, y) = (names("t", 60), names("y", 60));
    let fit: Vec<String> = (0..60).map(|k| format!("({} - (a*exp(-b*{}) + c))^2", y[k], t[k])).collect();
    let params: Vec<&str> = t.iter().chain(&y).map(String::as_str).collect();
    let sets = [data(120, 0.1), data(120, 0.7)];
    check(&fit.join(" + "), &["a", "b", "c"], &params, &sets, true);
    // One slot reads a variable in some terms and a parameter in others: the loop computes
    // the parameters' partials too and drops them.
    let (x, p) = (names("x", 41), names("p", 20));
    let mixed: Vec<String> = (0..40)
        .map(|i| format!("sin({})*{}", if i % 2 == 0 { &x[i / 2] } else { &p[i / 2] }, x[i + 1]))
        .collect();
    let vars: Vec<&str> = x.iter().map(String::as_str).collect();
    let params: Vec<&str> = p.iter().map(String::as_str).collect();
    check(&mixed.join(" + "), &vars, &params, &[data(20, 0.2), data(20, 0.9)], true);
}

#[test]
fn parameter_errors() {
    let f = Expr::parse("(y - a*t)^2").unwrap();
    let g = compile_gradient_params(&f, &["a"], &["t", "y"]).unwrap();
    let mut grad = [7.0];
    assert!(g.try_eval(&[1.0], &mut grad).unwrap_err().to_string().contains("eval_params"));
    assert!(g.eval(&[1.0], &mut grad).is_nan());
    assert!(g.eval_params(&[1.0], &[1.0], &mut grad).is_err());
    assert_eq!(grad, [7.0], "nothing written on wrong lengths");
    let e = compile_gradient_params(&f, &["a", "t"], &["t", "y"]).err().expect("refused").to_string();
    assert!(e.contains("listed twice"), "{e}");
    let e = compile_gradient_params(&f, &["a"], &["t"]).err().expect("refused").to_string();
    assert!(e.contains("`y`"), "{e}");
}
