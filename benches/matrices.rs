//! Sparse Hessians and Jacobians, Hessian-vector products (criterion), with a ratio summary.
//!
//! `cargo bench --bench matrices` measures, in one run:
//!
//! * the sparse Hessian of Rosenbrock at n = 10⁴ (29,998 entries in full): compiling it, and
//!   one evaluation against a hand-written sparse Hessian (the same entries, in the same
//!   order);
//! * the sparse Jacobian of the Broyden tridiagonal system at n = 10⁵: compiling it (the
//!   symbolic pattern, the entries, Cranelift), and one evaluation;
//! * the Hessian-vector product of Rosenbrock at n = 10⁴ against the function's own compiled
//!   evaluation (`compile`) and its compiled gradient.
//!
//! The CPU model is printed with the summary. `-- --quick` is a faster, rougher pass.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};

#[allow(dead_code)]
#[path = "common/report.rs"]
mod report;
#[path = "common/rosenbrock.rs"]
mod rosenbrock;
use report::{cpu_model, fmt, median};
use rosenbrock::{names, point, rosenbrock};
use symdiff::{
    Expr, Triangle, compile, compile_gradient, compile_hvp, compile_sparse_hessian, compile_sparse_jacobian,
};

/// Rosenbrock's full Hessian by hand, row-major (`(i, i-1)`, `(i, i)`, `(i, i+1)`): the
/// pattern `compile_sparse_hessian` gives.
fn rosenbrock_hessian_by_hand(x: &[f64], v: &mut [f64]) {
    let n = x.len();
    let mut k = 0;
    for i in 0..n {
        if i > 0 {
            v[k] = -400.0 * x[i - 1];
            k += 1;
        }
        let mut d = 0.0;
        if i + 1 < n {
            d += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0;
        }
        if i > 0 {
            d += 200.0;
        }
        v[k] = d;
        k += 1;
        if i + 1 < n {
            v[k] = -400.0 * x[i];
            k += 1;
        }
    }
}

fn sparse_hessian_benches(c: &mut Criterion) {
    let n = 10_000;
    let f = Expr::parse(&rosenbrock(n)).unwrap();
    let vars = names(n);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("sparse-hessian-10000");
    group.sample_size(10);
    group.bench_function("compile", |b| {
        b.iter(|| black_box(compile_sparse_hessian(&f, &vars, Triangle::Full).unwrap()))
    });
    let h = compile_sparse_hessian(&f, &vars, Triangle::Full).unwrap();
    let x = point(n);
    let mut v = vec![0.0; h.pattern().nnz()];
    let mut by_hand = vec![0.0; 3 * n - 2];
    h.eval(&x, &mut v).unwrap();
    rosenbrock_hessian_by_hand(&x, &mut by_hand);
    let err = v.iter().zip(&by_hand).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("sparse Hessian: {} entries, largest difference from the hand-written one {err:e}", v.len());
    group.bench_function("eval", |b| b.iter(|| h.eval(black_box(&x), &mut v).unwrap()));
    group.bench_function("eval-by-hand", |b| {
        b.iter(|| rosenbrock_hessian_by_hand(black_box(&x), &mut by_hand))
    });
    group.finish();
}

fn sparse_jacobian_benches(c: &mut Criterion) {
    let n = 100_000;
    let srcs: Vec<String> = (0..n)
        .map(|i| format!("(3 - 2*x{i})*x{i} - x{} - 2*x{} + 1", i.max(1) - 1, (i + 1).min(n - 1)))
        .collect();
    let first = Expr::parse(&srcs[0]).unwrap();
    let fs: Vec<Expr> = srcs.iter().map(|s| first.parse_with(s).unwrap()).collect();
    let vars = names(n);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("sparse-jacobian-100000");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("compile", |b| {
        b.iter_batched(
            || {
                let first = Expr::parse(&srcs[0]).unwrap();
                srcs.iter().map(|s| first.parse_with(s).unwrap()).collect::<Vec<_>>()
            },
            |fs| black_box(compile_sparse_jacobian(&fs, &vars).unwrap()),
            BatchSize::PerIteration,
        )
    });
    let j = compile_sparse_jacobian(&fs, &vars).unwrap();
    let x = point(n);
    let mut v = vec![0.0; j.pattern().nnz()];
    group.bench_function("eval", |b| b.iter(|| j.eval(black_box(&x), &mut v).unwrap()));
    group.finish();
}

fn hvp_benches(c: &mut Criterion) {
    let n = 10_000;
    let f = Expr::parse(&rosenbrock(n)).unwrap();
    let vars = names(n);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let hvp = compile_hvp(&f, &vars).unwrap();
    let func = compile(std::slice::from_ref(&f), &vars).unwrap();
    let grad = compile_gradient(&f, &vars).unwrap();
    let x = point(n);
    let dir: Vec<f64> = (0..n).map(|i| ((i * 7) % 11) as f64 / 11.0 - 0.5).collect();
    let (mut out, mut value, mut g) = (vec![0.0; n], [0.0], vec![0.0; n]);
    let mut group = c.benchmark_group("hvp-10000");
    group.bench_function("eval-hvp", |b| b.iter(|| hvp.eval(black_box(&x), &dir, &mut out).unwrap()));
    group.bench_function("eval-function", |b| b.iter(|| func.eval(black_box(&x), &mut value).unwrap()));
    group.bench_function("eval-gradient", |b| b.iter(|| grad.eval(black_box(&x), &mut g)));
    group.finish();
}

fn summary() {
    println!("\nSummary (medians from this run; ratios of times measured in this run) on {}\n", cpu_model());
    let h = |w: &str| median(&format!("sparse-hessian-10000/{w}"));
    if let (Some(c), Some(e), Some(by_hand)) = (h("compile"), h("eval"), h("eval-by-hand")) {
        println!(
            "sparse Hessian, Rosenbrock n = 10^4: compile {}, eval {}, by hand {}, compiled/hand {:.2}x",
            fmt(c),
            fmt(e),
            fmt(by_hand),
            e / by_hand
        );
    }
    let j = |w: &str| median(&format!("sparse-jacobian-100000/{w}"));
    if let (Some(c), Some(e)) = (j("compile"), j("eval")) {
        println!("sparse Jacobian, Broyden n = 10^5: compile {}, eval {}", fmt(c), fmt(e));
    }
    let v = |w: &str| median(&format!("hvp-10000/{w}"));
    if let (Some(hv), Some(f), Some(g)) = (v("eval-hvp"), v("eval-function"), v("eval-gradient")) {
        println!(
            "Hessian-vector product, Rosenbrock n = 10^4: {}, function {}, gradient {}: hvp/function {:.2}x, hvp/gradient {:.2}x",
            fmt(hv),
            fmt(f),
            fmt(g),
            hv / f,
            hv / g
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    sparse_hessian_benches(&mut c);
    sparse_jacobian_benches(&mut c);
    hvp_benches(&mut c);
    c.final_summary();
    summary();
}
