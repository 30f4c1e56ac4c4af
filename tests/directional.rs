//! Hessian-vector, Jacobian-vector and vector-Jacobian products against the dense compiled
//! matrices times the vector, and against finite differences of the compiled gradient (for
//! `H·v`) along the direction; the direction changes between calls without recompiling.

use symdiff::{
    Expr, compile_gradient, compile_hessian, compile_hvp, compile_jacobian, compile_jvp, compile_vjp,
};

fn point(n: usize, seed: f64) -> Vec<f64> {
    (0..n).map(|i| 0.2 + 0.8 * ((i as f64 * 0.618 + seed).fract())).collect()
}

fn close(a: f64, b: f64, scale: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (scale + b.abs())
}

/// `H(x)·v` of `src` at two directions against `H` from `compile_hessian` and against
/// central differences of the gradient along `v`; `looped`: whether loops compute it.
fn check(src: &str, looped: bool) {
    let f = Expr::parse(src).unwrap();
    let names = f.variables();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = vars.len();
    let x = point(n, 0.1);
    let hvp = compile_hvp(&f, &vars).unwrap();
    assert_eq!(!hvp.stats().classes.is_empty(), looped, "{src}: loops");
    assert_eq!(
        f.written_variables().iter().filter(|v| v.starts_with('#')).count(),
        0,
        "{src}: graph left as it was"
    );
    let mut h = vec![0.0; n * n];
    compile_hessian(&f, &vars).unwrap().eval(&x, &mut h).unwrap();
    let g = compile_gradient(&f, &vars).unwrap();
    for seed in [0.3, 0.7] {
        let v: Vec<f64> = point(n, seed).iter().map(|c| c - 0.5).collect();
        let mut out = vec![f64::NAN; n];
        hvp.eval(&x, &v, &mut out).unwrap();
        let expect: Vec<f64> = (0..n).map(|i| (0..n).map(|j| h[i * n + j] * v[j]).sum()).collect();
        let scale = expect.iter().fold(1.0f64, |m, e| m.max(e.abs()));
        let step = 1e-6;
        let at = |t: f64| {
            let xt: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + t * b).collect();
            let mut gr = vec![0.0; n];
            g.eval(&xt, &mut gr);
            gr
        };
        let (gp, gm) = (at(step), at(-step));
        for i in 0..n {
            assert!(
                close(out[i], expect[i], scale, 1e-11),
                "{src}: (Hv)[{i}] {} vs H*v {}",
                out[i],
                expect[i]
            );
            let fd = (gp[i] - gm[i]) / (2.0 * step);
            assert!(close(out[i], fd, scale, 1e-5), "{src}: (Hv)[{i}] {} vs finite differences {fd}", out[i]);
        }
    }
}

fn sum(n: usize, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(" + ")
}

#[test]
fn hessian_vector_products() {
    check("x^2*y + y^3", false);
    check("exp(x*y*z) + sin(x)/(1 + z^2)", false);
    check(&format!("log({})", sum(30, |i| format!("exp(x{i:02})"))), true); // v_i*exp(x_i)/S: like terms
    check(&sum(199, |i| format!("100*(x{:03} - x{i:03}^2)^2 + (1 - x{i:03})^2", i + 1)), true);
    let t = |k: usize| (k as f64 * 0.37).sin() + 1.5;
    check(&sum(60, |k| format!("({} - (a*exp(-b*{}) + c))^2", 1.0 + t(k + 7), t(k))), true);
}

/// `J·v` and `uᵀ·J` of the formulas `srcs` against the dense compiled Jacobian.
fn check_products(srcs: &[&str]) {
    let first = Expr::parse(srcs[0]).unwrap();
    let fs: Vec<Expr> = srcs.iter().map(|s| first.parse_with(s).unwrap()).collect();
    let mut names: Vec<String> = fs.iter().flat_map(|f| f.variables()).collect();
    names.sort();
    names.dedup();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let (m, n) = (fs.len(), vars.len());
    let x = point(n, 0.2);
    let mut jac = vec![0.0; m * n];
    compile_jacobian(&fs, &vars).unwrap().eval(&x, &mut jac).unwrap();
    let scale = jac.iter().fold(1.0f64, |a, e| a.max(e.abs()));
    let jvp = compile_jvp(&fs, &vars).unwrap();
    let vjp = compile_vjp(&fs, &vars).unwrap();
    for seed in [0.4, 0.9] {
        let v = point(n, seed);
        let mut jv = vec![f64::NAN; m];
        jvp.eval(&x, &v, &mut jv).unwrap();
        for i in 0..m {
            let e: f64 = (0..n).map(|j| jac[i * n + j] * v[j]).sum();
            assert!(close(jv[i], e, scale, 1e-12), "{srcs:?}: (Jv)[{i}] {} vs {e}", jv[i]);
        }
        let u = point(m, seed);
        let mut uj = vec![f64::NAN; n];
        vjp.eval(&x, &u, &mut uj).unwrap();
        for j in 0..n {
            let e: f64 = (0..m).map(|i| u[i] * jac[i * n + j]).sum();
            assert!(close(uj[j], e, scale, 1e-12), "{srcs:?}: (uJ)[{j}] {} vs {e}", uj[j]);
        }
    }
    // Wrong lengths are errors, and nothing is written.
    let mut out = vec![7.0; m];
    assert!(jvp.eval(&x, &x[..n - 1], &mut out).is_err());
    assert!(out.iter().all(|&o| o == 7.0));
}

#[test]
fn jacobian_products() {
    check_products(&["x*y", "x + y^2", "sin(x)*exp(y)"]);
    check_products(&["x + y - y", "3 + z - z", "sin(x)*cos(y)*z"]);
    let banded: Vec<String> = (0..200)
        .map(|i| format!("(3 - 2*x{i:03})*x{i:03} - x{:03} - 2*x{:03} + 1", i.max(1) - 1, (i + 1).min(199)))
        .collect();
    let refs: Vec<&str> = banded.iter().map(String::as_str).collect();
    check_products(&refs);
}
