//! The extended Rosenbrock function as text, its variables and a point that is not special:
//! the shared inputs of the gradient and matrices benchmarks.

/// `Σ 100*(x[i+1] - x[i]^2)^2 + (1 - x[i])^2` over `n` variables `x0 .. x{n-1}`.
pub fn rosenbrock(n: usize) -> String {
    (0..n - 1).map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1)).collect::<Vec<_>>().join(" + ")
}

/// The variable names `x0 .. x{n-1}`.
pub fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("x{i}")).collect()
}

/// Every coordinate different and away from 0 and 1.
pub fn point(n: usize) -> Vec<f64> {
    (0..n).map(|i| 0.5 + 0.3 * (i as f64 * 0.7).sin()).collect()
}
