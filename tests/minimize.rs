//! The optimisation client in `examples/minimize.rs` (argmin's L-BFGS over a compiled
//! gradient) at sizes that run in a test: it must reach the minimum, every coordinate 1.

#[allow(dead_code)]
#[path = "../examples/minimize.rs"]
mod minimize;

/// L-BFGS on the extended Rosenbrock function of `n` variables must converge to within `tol` of the minimum.
fn check(n: usize, tol: f64) {
    let out = minimize::run(n, 0).unwrap();
    assert!(out.converged, "n = {n}: not converged after {} iterations", out.iterations);
    assert!(
        out.error <= tol && out.value <= 1e-12,
        "n = {n}: f = {}, max |x_i - 1| = {}",
        out.value,
        out.error
    );
    assert!(out.evaluations > 0);
}

#[test]
fn lbfgs_reaches_the_minimum() {
    check(2, 1e-6);
    check(60, 1e-6); // loops (30 like terms)
    check(2000, 1e-6);
}
