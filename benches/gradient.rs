//! Gradient benchmarks (criterion), with a ratio summary at the end of the run.
//!
//! `cargo bench --bench gradient` measures, for the extended Rosenbrock function with
//! n = 10, 100, 1,000 and 10,000 variables: building the gradient graph, compiling it, and
//! one evaluation of value + gradient, against the interpreter and a hand-written Rust
//! gradient in this same binary; the function alone (for the cheap-gradient ratio); the
//! swell case (10th derivative of sin^7, with the interpreter); the product of n variables
//! (n = 1,000 and 10,000) against a hand-written prefix/suffix gradient; and a
//! 100,000-operation random DAG; and batches (`eval_many`, four points per call)
//! against one `eval` per point, on random DAGs and continued fractions of about 10², 10³ and
//! 10⁴ nodes. Every compiled gradient also reports its operations
//! relative to the function's (`CompileStats::gradient_ratio`, counts, not times). The summary
//! reads criterion's estimates back and prints every comparison as a ratio measured in this
//! run. `cargo bench --bench gradient -- --quick` is a faster, rougher pass.
//!
//! Batches are per core: run them as `taskset -c 0 cargo bench --bench gradient -- batch`,
//! or a large batch is also split across threads (the summary says how many it could use).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use symdiff::{Expr, compile, compile_gradient};

// The generator is shared with `benches/structure.rs`, which also uses its hand-written
// gradient.
#[allow(dead_code)]
#[path = "common/random_dag.rs"]
mod random_dag;
use random_dag::{RandomDag, random_dag};

#[allow(dead_code)]
#[path = "common/report.rs"]
mod report;
#[path = "common/rosenbrock.rs"]
mod rosenbrock;
use report::{fmt, median};
use rosenbrock::{names, point, rosenbrock};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// The analytic gradient, written by hand: the "hand-written native code" baseline.
fn rosenbrock_by_hand(x: &[f64], g: &mut [f64]) -> f64 {
    let n = x.len();
    let mut f = 0.0;
    g.fill(0.0);
    for i in 0..n - 1 {
        let t = x[i + 1] - x[i] * x[i];
        let u = 1.0 - x[i];
        f += 100.0 * t * t + u * u;
        g[i] += -400.0 * x[i] * t - 2.0 * u;
        g[i + 1] += 200.0 * t;
    }
    f
}

fn rosenbrock_benches(c: &mut Criterion) {
    for n in SIZES {
        let src = rosenbrock(n);
        let vars = names(n);
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let x = point(n);
        let mut group = c.benchmark_group(format!("rosenbrock/{n}"));
        if n >= 1_000 {
            group.sample_size(10).measurement_time(Duration::from_secs(4));
        }
        // Building the gradient graph (reverse mode) on a freshly parsed function.
        group.bench_function("build", |b| {
            b.iter_batched(
                || Expr::parse(&src).unwrap(),
                |f| black_box(f.gradient(&vars)),
                BatchSize::PerIteration,
            )
        });
        // Build + compile, end to end.
        group.bench_function("build+compile", |b| {
            b.iter_batched(
                || Expr::parse(&src).unwrap(),
                |f| black_box(compile_gradient(&f, &vars).unwrap()),
                BatchSize::PerIteration,
            )
        });
        let f = Expr::parse(&src).unwrap();
        let g = compile_gradient(&f, &vars).unwrap();
        let mut grad = vec![0.0; n];
        group.bench_function("eval-compiled", |b| b.iter(|| g.eval(black_box(&x), &mut grad)));
        group.bench_function("eval-by-hand", |b| b.iter(|| rosenbrock_by_hand(black_box(&x), &mut grad)));
        let value_only = compile(std::slice::from_ref(&f), &vars).unwrap();
        let mut out = [0.0];
        group.bench_function("eval-function-only", |b| b.iter(|| value_only.eval(black_box(&x), &mut out)));
        if n <= 1_000 {
            let grads = f.gradient(&vars);
            let at: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
            group.bench_function("eval-interpreter", |b| {
                b.iter(|| {
                    let v = f.eval(black_box(&at)).unwrap();
                    for gk in &grads {
                        black_box(gk.eval(&at).unwrap());
                    }
                    v
                })
            });
        }
        group.finish();
    }
}

/// The gradient of `x0*x1*...*x(n-1)` by hand: prefix products forward, suffix products
/// backward, no division (safe with a zero factor).
fn product_by_hand(x: &[f64], g: &mut [f64]) -> f64 {
    let mut p = 1.0;
    for (gi, &xi) in g.iter_mut().zip(x) {
        *gi = p;
        p *= xi;
    }
    let mut s = 1.0;
    for (gi, &xi) in g.iter_mut().zip(x).rev() {
        *gi *= s;
        s *= xi;
    }
    p
}

fn product_benches(c: &mut Criterion) {
    for n in [1_000, 10_000] {
        let src = (0..n).map(|i| format!("x{i}")).collect::<Vec<_>>().join("*");
        let vars = names(n);
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let x: Vec<f64> = (0..n).map(|i| 1.0 + 1e-4 * (i as f64 * 0.7).sin()).collect();
        let mut group = c.benchmark_group(format!("product/{n}"));
        group.sample_size(10);
        group.bench_function("build+compile", |b| {
            b.iter_batched(
                || Expr::parse(&src).unwrap(),
                |f| black_box(compile_gradient(&f, &vars).unwrap()),
                BatchSize::PerIteration,
            )
        });
        let f = Expr::parse(&src).unwrap();
        let g = compile_gradient(&f, &vars).unwrap();
        eprintln!("product/{n}: gradient/function operations {:.2}x", g.stats().gradient_ratio());
        let mut grad = vec![0.0; n];
        group.bench_function("eval-compiled", |b| b.iter(|| g.eval(black_box(&x), &mut grad)));
        group.bench_function("eval-by-hand", |b| b.iter(|| product_by_hand(black_box(&x), &mut grad)));
        group.finish();
    }
}

fn swell_benches(c: &mut Criterion) {
    let src = "sin(sin(sin(sin(sin(sin(sin(x)))))))";
    let mut group = c.benchmark_group("swell");
    group.sample_size(10);
    group.bench_function("build-10th-derivative", |b| {
        b.iter_batched(
            || Expr::parse(src).unwrap(),
            |f| black_box(f.nth_diff("x", 10)),
            BatchSize::PerIteration,
        )
    });
    let d10 = Expr::parse(src).unwrap().nth_diff("x", 10);
    eprintln!("swell: the 10th derivative has {} DAG nodes", d10.node_count());
    group.bench_function("compile-10th-derivative", |b| {
        b.iter(|| black_box(compile(std::slice::from_ref(&d10), &["x"]).unwrap()))
    });
    let compiled = compile(std::slice::from_ref(&d10), &["x"]).unwrap();
    let mut out = [0.0];
    group.bench_function("eval-10th-derivative", |b| b.iter(|| compiled.eval(black_box(&[0.3]), &mut out)));
    group.bench_function("eval-10th-derivative-interpreter", |b| {
        b.iter(|| d10.eval(black_box(&[("x", 0.3)])))
    });
    let with_gradient = compile_gradient(&d10, &["x"]).unwrap();
    eprintln!("swell: gradient/function operations {:.2}x", with_gradient.stats().gradient_ratio());
    group.finish();
}

fn random_dag_benches(c: &mut Criterion) {
    let RandomDag { expr: f, vars, .. } = random_dag(100_000);
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    eprintln!("random DAG: {} nodes", f.node_count());
    let mut group = c.benchmark_group("random-dag-100k");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("build+compile", |b| b.iter(|| black_box(compile_gradient(&f, &vars).unwrap())));
    let g = compile_gradient(&f, &vars).unwrap();
    eprintln!("random DAG: gradient/function operations {:.2}x", g.stats().gradient_ratio());
    let x: Vec<f64> = (0..vars.len()).map(|i| 0.1 + 0.01 * i as f64).collect();
    let mut grad = vec![0.0; vars.len()];
    group.bench_function("eval-compiled", |b| b.iter(|| g.eval(black_box(&x), &mut grad)));
    let value_only = compile(std::slice::from_ref(&f), &vars).unwrap();
    let mut out = [0.0];
    group.bench_function("eval-function-only", |b| b.iter(|| value_only.eval(black_box(&x), &mut out)));
    group.finish();
}

/// The batch cases: (name, function, variables).
fn batch_cases() -> Vec<(String, Expr, Vec<String>)> {
    let mut cases = Vec::new();
    for ops in [100, 1_000, 10_000] {
        let d = random_dag::generate(20, ops, 0x2545_f491_4f6c_dd1d, 64);
        cases.push((format!("random-dag-{ops}"), d.expr, d.vars));
    }
    // Rational: no host calls, every operation one vector instruction for both points.
    for n in [10, 100, 1_000] {
        let mut src = format!("x{}", n - 1);
        for i in (0..n - 1).rev() {
            src = format!("x{i} + 1/(1 + x{i}*({src})^2)");
        }
        cases.push((format!("fraction-{n}"), Expr::parse(&src).unwrap(), names(n)));
    }
    cases
}

/// Points per batch: enough to amortise the call, few enough to stay in cache.
const BATCH: usize = 64;

fn batch_benches(c: &mut Criterion) {
    for (name, f, vars) in batch_cases() {
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let n = vars.len();
        let g = compile_gradient(&f, &vars).unwrap();
        eprintln!("batch/{name}: {} nodes, {}", f.node_count(), g.stats().structure());
        let xs: Vec<f64> = (0..BATCH * n).map(|i| 0.2 + 0.5 * (i as f64 * 0.37).sin().abs()).collect();
        let (mut values, mut grads) = (vec![0.0; BATCH], vec![0.0; BATCH * n]);
        g.eval_many(&xs, &mut values, &mut grads).unwrap(); // compiles the batch code
        let mut group = c.benchmark_group(format!("batch/{name}"));
        group.bench_function("eval-each", |b| {
            b.iter(|| {
                for (i, v) in values.iter_mut().enumerate() {
                    *v = g.eval(black_box(&xs[i * n..(i + 1) * n]), &mut grads[i * n..(i + 1) * n]);
                }
            })
        });
        group.bench_function("eval-many", |b| {
            b.iter(|| g.eval_many(black_box(&xs), &mut values, &mut grads).unwrap())
        });
        group.finish();
    }
}

fn summary() {
    println!("\nSummary (medians from this run; ratios of times measured in this run)\n");
    println!(
        "| n | build | build+compile | eval compiled | by hand | compiled/hand | interpreter/compiled | gradient/function |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in SIZES {
        let get = |what: &str| median(&format!("rosenbrock_{n}/{what}"));
        let (Some(build), Some(bc), Some(ev), Some(hand), Some(func)) = (
            get("build"),
            get("build+compile"),
            get("eval-compiled"),
            get("eval-by-hand"),
            get("eval-function-only"),
        ) else {
            continue;
        };
        let interp = get("eval-interpreter").map_or("-".to_owned(), |i| format!("{:.0}x", i / ev));
        println!(
            "| {n} | {} | {} | {} | {} | {:.2}x | {interp} | {:.2}x |",
            fmt(build),
            fmt(bc),
            fmt(ev),
            fmt(hand),
            ev / hand,
            ev / func
        );
    }
    for n in [1_000, 10_000] {
        let get = |what: &str| median(&format!("product_{n}/{what}"));
        if let (Some(bc), Some(e), Some(h)) =
            (get("build+compile"), get("eval-compiled"), get("eval-by-hand"))
        {
            println!(
                "product of {n}: build+compile {}, eval {}, by hand {}, compiled/hand {:.2}x",
                fmt(bc),
                fmt(e),
                fmt(h),
                e / h
            );
        }
    }
    if let (Some(b), Some(c), Some(e)) = (
        median("swell/build-10th-derivative"),
        median("swell/compile-10th-derivative"),
        median("swell/eval-10th-derivative"),
    ) {
        let interp = median("swell/eval-10th-derivative-interpreter")
            .map_or("-".to_owned(), |i| format!("{:.1}x", i / e));
        println!(
            "\nswell (10th derivative of sin^7): build {}, compile {}, eval {}, interpreter/compiled {interp}",
            fmt(b),
            fmt(c),
            fmt(e)
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    println!(
        "\nbatches of {BATCH} points, eval_many against one eval per point ({threads} threads available; CPU: {}):",
        report::cpu_model()
    );
    for (name, ..) in batch_cases() {
        if let (Some(each), Some(many)) =
            (median(&format!("batch_{name}/eval-each")), median(&format!("batch_{name}/eval-many")))
        {
            println!(
                "  {name}: per point {} one by one, {} batched: {:.2}x the throughput",
                fmt(each / BATCH as f64),
                fmt(many / BATCH as f64),
                each / many
            );
        }
    }
    if let (Some(bc), Some(e), Some(f)) = (
        median("random-dag-100k/build+compile"),
        median("random-dag-100k/eval-compiled"),
        median("random-dag-100k/eval-function-only"),
    ) {
        println!(
            "random DAG (100k ops): build+compile {}, eval {}, gradient/function {:.2}x",
            fmt(bc),
            fmt(e),
            e / f
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    rosenbrock_benches(&mut c);
    product_benches(&mut c);
    swell_benches(&mut c);
    random_dag_benches(&mut c);
    batch_benches(&mut c);
    c.final_summary();
    summary();
}
