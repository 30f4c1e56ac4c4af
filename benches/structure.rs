//! The expression compiler at scale: large sums with structure (and one graph without),
//! written as a new user would write them, against hand-written Rust gradients.
//!
//! ```text
//! cargo bench --bench structure                          # 10^3, 10^4, 10^5 terms, every shape
//! cargo bench --bench structure -- --sizes 1e3,1e6       # pick sizes (also SYMDIFF_BENCH_SIZES)
//! cargo bench --bench structure -- --shapes rosenbrock,lj   # pick shapes (names as printed)
//! cargo bench --bench structure -- --quick               # 10^3 and 10^4, fewer calls
//! ```
//!
//! Shapes, each at 10³, 10⁴, 10⁵ (and, when asked for, 10⁶) terms: banded sums (Rosenbrock,
//! Broyden tridiagonal, Luksan-Vlček's `f`, B7 of the benchmark list), a sum over data points
//! with numeric constants (a 3-parameter exponential least-squares fit), pair interactions
//! (Lennard-Jones energy of all pairs of atoms in 3-D), reductions with a shared
//! subexpression (logsumexp; softmax cross-entropy, which reads one `log(Σ exp)` in every
//! term), and a graph with no structure (the random DAG of `benches/gradient.rs`, built
//! through the API since it has no short text form).
//!
//! For every case the formula *text* is generated and goes through the public API only:
//! `Expr::parse`, `compile_gradient` (whose object reports the gradient's build time; compile
//! is the rest of `compile_gradient`'s wall time) and `CompiledGradient::eval`. Evaluation is
//! timed as the median of many rounds, each round timing a batch of compiled calls and then a
//! batch of the hand-written gradient, so that the machine's noise hits both. The hand-written
//! gradient is plain Rust in this binary; the compiled result is checked against it at the
//! same point (`err`: the largest difference over the value and every partial, relative to
//! the largest magnitude among them), so a wrong result cannot look fast. One exception is
//! expected: the random DAG of 10⁵ operations is chaotic (partials near 10²⁷, its value
//! changed in the third digit by the order of one sum), so the hand-written sweep, which adds
//! in another order, differs from it by `err` 1, while the compiled value equals the
//! interpreter's; `tests/cheap_gradient.rs` checks compiled random DAGs of up to 20,000
//! operations against the interpreter.
//!
//! Each case runs in a child process (this binary re-executed with `--case SHAPE N`), so that
//! `peak` (the child's `VmHWM` from `/proc/self/status`) is the case's own peak memory and a
//! case that fails (an error from the library, a crash, the allocator, `--timeout` seconds)
//! prints one line saying why and the run goes on.
//!
//! `stats` is [`describe`] of the compiled function's `CompileStats`.
//!
//! ```text
//! cargo bench --bench structure -- --build --sizes 1e6   # building in code against parsing
//! ```
//!
//! `--build` measures something else: the Rosenbrock function, and a least-squares sum
//! `(x_i - c_i)^2` with a number of its own in every term, built in code (`Expr::var` for `x0
//! ... xN`, the operators, `powi` and `Expr::sum`, as a user would write them) against
//! `Expr::parse` of their text, in one child process per shape and size (built first, then
//! parsed; the text is generated before the clock starts). The row has both times, their
//! ratio, the time the variables alone took, the peak memory after building, both DAGs' node
//! counts, and the relative difference of their values at one point (the built Rosenbrock sum
//! creates `x0` before `x1` where the text names `x1` first, so its terms are stored, and
//! added, in another order).

use std::hint::black_box;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use symdiff::{CompileStats, Expr, compile_gradient};

#[allow(dead_code)]
#[path = "common/report.rs"]
mod report;
use report::cpu_model;

#[allow(dead_code)]
#[path = "common/random_dag.rs"]
mod random_dag;

/// Every shape, in the order they are run.
const SHAPES: [&str; 8] = [
    "rosenbrock",
    "broyden",
    "luksan-vlcek",
    "exp-fit",
    "lennard-jones",
    "logsumexp",
    "softmax-ce",
    "random-dag",
];

/// How the compiled function came out: the one place that says it (extend it when
/// `CompileStats` learns more, such as the classes structure recovery found).
fn describe(stats: &CompileStats) -> String {
    format!(
        "{}; {} chunks, {} spilled, {}, {} KiB of code",
        stats.structure(),
        stats.chunks,
        stats.spilled,
        stats.allocator,
        stats.code_bytes >> 10
    )
}

/// A hand-written value and gradient: `hand(x, grad)` returns the value.
type Hand = Box<dyn FnMut(&[f64], &mut [f64]) -> f64>;

/// A function ready to be compiled, with its hand-written gradient.
struct Case {
    /// What `Expr::parse` read (the random DAG: none).
    text_bytes: usize,
    /// Time to get the expression: parsing (and, for softmax-ce, one substitution).
    parse: Duration,
    expr: Expr,
    vars: Vec<String>,
    point: Vec<f64>,
    /// The hand-written value and gradient.
    hand: Hand,
}

/// A deterministic stream of numbers in [0, 1) (xorshift), for data and points.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Parses `text`, timing it.
fn parse(text: &str) -> Result<(Expr, Duration), String> {
    let start = Instant::now();
    let e = Expr::parse(text).map_err(|e| one_line(&e.to_string()))?;
    Ok((e, start.elapsed()))
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

/// A sum of `terms` written-out terms over `x0 ... x{n-1}`, with its hand-written gradient.
fn banded(
    text: String,
    n: usize,
    point: Vec<f64>,
    hand: impl FnMut(&[f64], &mut [f64]) -> f64 + 'static,
) -> Result<Case, String> {
    let (expr, parse) = parse(&text)?;
    Ok(Case { text_bytes: text.len(), parse, expr, vars: names("x", n), point, hand: Box::new(hand) })
}

fn rosenbrock(terms: usize) -> Result<Case, String> {
    let n = terms + 1;
    let text = (0..n - 1)
        .map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1))
        .collect::<Vec<_>>()
        .join(" + ");
    let point = (0..n).map(|i| 0.5 + 0.3 * (i as f64 * 0.7).sin()).collect();
    banded(text, n, point, |x, g| {
        let mut f = 0.0;
        g.fill(0.0);
        for i in 0..x.len() - 1 {
            let t = x[i + 1] - x[i] * x[i];
            let u = 1.0 - x[i];
            f += 100.0 * t * t + u * u;
            g[i] += -400.0 * x[i] * t - 2.0 * u;
            g[i + 1] += 200.0 * t;
        }
        f
    })
}

/// Broyden tridiagonal: `r_i = (3 - 2 x_i) x_i - x_{i-1} - 2 x_{i+1} + 1` with
/// `x_{-1} = x_n = 0` (the boundary terms are written without them), `f = Σ r_i²`.
fn broyden(terms: usize) -> Result<Case, String> {
    let n = terms.max(2);
    let term = |i: usize| {
        let mut t = format!("((3 - 2*x{i})*x{i}");
        if i > 0 {
            t += &format!(" - x{}", i - 1);
        }
        if i + 1 < n {
            t += &format!(" - 2*x{}", i + 1);
        }
        t + " + 1)^2"
    };
    let text = (0..n).map(term).collect::<Vec<_>>().join(" + ");
    let point = (0..n).map(|i| -1.0 + 0.2 * (i as f64 * 0.3).cos()).collect();
    banded(text, n, point, |x, g| {
        let n = x.len();
        let at = |i: isize| if i < 0 || i as usize >= n { 0.0 } else { x[i as usize] };
        let mut f = 0.0;
        g.fill(0.0);
        for i in 0..n {
            let r = (3.0 - 2.0 * x[i]) * x[i] - at(i as isize - 1) - 2.0 * at(i as isize + 1) + 1.0;
            f += r * r;
            g[i] += 2.0 * r * (3.0 - 4.0 * x[i]);
            if i > 0 {
                g[i - 1] -= 2.0 * r;
            }
            if i + 1 < n {
                g[i + 1] -= 4.0 * r;
            }
        }
        f
    })
}

/// Luksan-Vlček's `f` (B7): `Σ_{i=2..N} 100 (x_{i-1}² - x_i)² + (x_{i-1} - 1)²`, at its
/// standard starting point (-1.2 at odd 1-based indices, 1 at even ones).
fn luksan_vlcek(terms: usize) -> Result<Case, String> {
    let n = terms + 1;
    let text = (1..n)
        .map(|i| format!("100*(x{}^2 - x{i})^2 + (x{} - 1)^2", i - 1, i - 1))
        .collect::<Vec<_>>()
        .join(" + ");
    let point = (0..n).map(|i| if i % 2 == 0 { -1.2 } else { 1.0 }).collect();
    banded(text, n, point, |x, g| {
        let mut f = 0.0;
        g.fill(0.0);
        for i in 1..x.len() {
            let t = x[i - 1] * x[i - 1] - x[i];
            let u = x[i - 1] - 1.0;
            f += 100.0 * t * t + u * u;
            g[i - 1] += 400.0 * t * x[i - 1] + 2.0 * u;
            g[i] -= 200.0 * t;
        }
        f
    })
}

/// A least-squares fit of `a*exp(-b*t) + c` to `terms` data points `(t_k, y_k)`, written
/// into the formula as numbers.
fn exp_fit(terms: usize) -> Result<Case, String> {
    let mut s = Stream(0x2545_f491_4f6c_dd1d);
    let mut data = Vec::with_capacity(terms);
    let mut text = String::new();
    for k in 0..terms {
        let t = format!("{:.4}", 5.0 * s.next());
        let tv: f64 = t.parse().unwrap();
        let y = format!("{:.5}", 2.5 * (-1.3 * tv).exp() + 0.5 + 0.1 * (s.next() - 0.5));
        if k > 0 {
            text += " + ";
        }
        text += &format!("({y} - (a*exp(-b*{t}) + c))^2");
        data.push((tv, y.parse::<f64>().unwrap()));
    }
    let (expr, parse) = parse(&text)?;
    let vars = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let hand = move |p: &[f64], g: &mut [f64]| {
        let (a, b, c) = (p[0], p[1], p[2]);
        let mut f = 0.0;
        g.fill(0.0);
        for &(t, y) in &data {
            let e = (-b * t).exp();
            let r = y - (a * e + c);
            f += r * r;
            g[0] -= 2.0 * r * e;
            g[1] += 2.0 * r * a * t * e;
            g[2] -= 2.0 * r;
        }
        f
    };
    Ok(Case { text_bytes: text.len(), parse, expr, vars, point: vec![2.0, 1.0, 0.3], hand: Box::new(hand) })
}

/// Lennard-Jones energy of all pairs of `m` atoms (`m(m-1)/2 ≈ terms`), each pair
/// `4*((1/r2)^6 - (1/r2)^3)` with the squared distance `r2` written out, atoms on a jittered
/// cubic lattice (no two closer than about 0.9).
fn lennard_jones(terms: usize) -> Result<Case, String> {
    let m = ((1.0 + (1.0 + 8.0 * terms as f64).sqrt()) / 2.0).round() as usize;
    let side = (m as f64).cbrt().ceil() as usize;
    let mut s = Stream(0x9e37_79b9_7f4a_7c15);
    let mut point = Vec::with_capacity(3 * m);
    let mut vars = Vec::with_capacity(3 * m);
    for i in 0..m {
        let cell = [i % side, (i / side) % side, i / (side * side)];
        for (axis, c) in ["x", "y", "z"].iter().zip(cell) {
            point.push(1.1 * c as f64 + 0.05 * (s.next() - 0.5));
            vars.push(format!("{axis}{i}"));
        }
    }
    let mut text = String::new();
    for i in 0..m {
        for j in i + 1..m {
            if !text.is_empty() {
                text += " + ";
            }
            let r2 = format!("((x{i} - x{j})^2 + (y{i} - y{j})^2 + (z{i} - z{j})^2)");
            text += &format!("4*((1/{r2})^6 - (1/{r2})^3)");
        }
    }
    let (expr, parse) = parse(&text)?;
    let hand = move |p: &[f64], g: &mut [f64]| {
        let m = p.len() / 3;
        let mut f = 0.0;
        g.fill(0.0);
        for i in 0..m {
            for j in i + 1..m {
                let d = [p[3 * i] - p[3 * j], p[3 * i + 1] - p[3 * j + 1], p[3 * i + 2] - p[3 * j + 2]];
                let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                let s = 1.0 / r2;
                let s3 = s * s * s;
                let s6 = s3 * s3;
                f += 4.0 * (s6 - s3);
                // dE/dr2, times d(r2)/d(p_i) = 2 d.
                let de = (-24.0 * s6 + 12.0 * s3) * s;
                for a in 0..3 {
                    g[3 * i + a] += 2.0 * de * d[a];
                    g[3 * j + a] -= 2.0 * de * d[a];
                }
            }
        }
        f
    };
    Ok(Case { text_bytes: text.len(), parse, expr, vars, point, hand: Box::new(hand) })
}

fn lse_text(n: usize) -> String {
    format!("log({})", (0..n).map(|i| format!("exp(x{i})")).collect::<Vec<_>>().join(" + "))
}

fn lse_point(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i as f64 * 0.37).sin()).collect()
}

fn logsumexp(terms: usize) -> Result<Case, String> {
    banded(lse_text(terms), terms, lse_point(terms), |x, g| {
        let mut s = 0.0;
        for (gi, xi) in g.iter_mut().zip(x) {
            *gi = xi.exp();
            s += *gi;
        }
        for gi in g.iter_mut() {
            *gi /= s;
        }
        s.ln()
    })
}

/// Softmax cross-entropy `Σ w_i*(x_i - log(Σ_j exp(x_j)))` with literal weights. Written out,
/// the text would hold the `log(Σ exp)` once per term (quadratic), so it is written once and
/// substituted for a name, as a user would: the graph holds it once.
fn softmax_ce(terms: usize) -> Result<Case, String> {
    let mut s = Stream(0x1234_5678_9abc_def1);
    let w: Vec<String> = (0..terms).map(|_| format!("{:.4}", 0.01 + s.next())).collect();
    let outer =
        w.iter().enumerate().map(|(i, w)| format!("{w}*(x{i} - lse)")).collect::<Vec<_>>().join(" + ");
    let lse = lse_text(terms);
    let start = Instant::now();
    let l = Expr::parse(&lse).map_err(|e| one_line(&e.to_string()))?;
    let o = l.parse_with(&outer).map_err(|e| one_line(&e.to_string()))?;
    let expr = o.substitute("lse", &l);
    let parse = start.elapsed();
    let w: Vec<f64> = w.iter().map(|w| w.parse().unwrap()).collect();
    let hand = move |x: &[f64], g: &mut [f64]| {
        let mut s = 0.0;
        for (gi, xi) in g.iter_mut().zip(x) {
            *gi = xi.exp();
            s += *gi;
        }
        let l = s.ln();
        let total: f64 = w.iter().sum();
        let mut f = 0.0;
        for i in 0..x.len() {
            f += w[i] * (x[i] - l);
            g[i] = w[i] - total * g[i] / s;
        }
        f
    };
    Ok(Case {
        text_bytes: lse.len() + outer.len(),
        parse,
        expr,
        vars: names("x", terms),
        point: lse_point(terms),
        hand: Box::new(hand),
    })
}

fn random_dag(terms: usize) -> Result<Case, String> {
    let start = Instant::now();
    let dag = random_dag::random_dag(terms.max(100));
    let parse = start.elapsed();
    let point = (0..dag.vars.len()).map(|i| 0.1 + 0.01 * i as f64).collect();
    let expr = dag.expr.clone();
    let vars = dag.vars.clone();
    let (mut v, mut adj) = (Vec::new(), Vec::new());
    let hand = move |x: &[f64], g: &mut [f64]| dag.by_hand(x, g, &mut v, &mut adj);
    Ok(Case { text_bytes: 0, parse, expr, vars, point, hand: Box::new(hand) })
}

fn build(shape: &str, terms: usize) -> Result<Case, String> {
    match shape {
        "rosenbrock" => rosenbrock(terms),
        "broyden" => broyden(terms),
        "luksan-vlcek" => luksan_vlcek(terms),
        "exp-fit" => exp_fit(terms),
        "lennard-jones" => lennard_jones(terms),
        "logsumexp" => logsumexp(terms),
        "softmax-ce" => softmax_ce(terms),
        "random-dag" => random_dag(terms),
        other => Err(format!("unknown shape `{other}` (shapes: {})", SHAPES.join(", "))),
    }
}

/// The peak resident memory of this process so far, in bytes (`VmHWM`).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The largest difference between `a` and `b`, relative to the largest magnitude in `b`.
fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn fmt_time(d: f64) -> String {
    match d {
        x if x >= 1.0 => format!("{x:.2} s"),
        x if x >= 1e-3 => format!("{:.1} ms", x * 1e3),
        x if x >= 1e-6 => format!("{:.1} µs", x * 1e6),
        x => format!("{:.0} ns", x * 1e9),
    }
}

/// Runs one case in this process and prints its table row (or why it could not run).
fn run_case(shape: &str, terms: usize, quick: bool) {
    let row = |rest: String| println!("| {shape} | {terms} | {rest} |");
    let mut case = match build(shape, terms) {
        Ok(c) => c,
        Err(e) => return row(format!("parse failed: {e}")),
    };
    let vars: Vec<&str> = case.vars.iter().map(String::as_str).collect();
    let start = Instant::now();
    let g = match compile_gradient(&case.expr, &vars) {
        Ok(g) => g,
        Err(e) => {
            return row(format!(
                "{:.1} MB | {} | compile_gradient failed: {}",
                case.text_bytes as f64 / 1e6,
                fmt_time(case.parse.as_secs_f64()),
                one_line(&e.to_string())
            ));
        }
    };
    let total = start.elapsed();
    let build = g.build_time();
    let compile = total.saturating_sub(build);

    let n = vars.len();
    let x = case.point.clone();
    let (mut gc, mut gh) = (vec![0.0; n], vec![0.0; n]);
    let vc = g.eval(&x, &mut gc);
    let vh = (case.hand)(&x, &mut gh);
    let mut all_c = gc.clone();
    all_c.push(vc);
    let mut all_h = gh.clone();
    all_h.push(vh);
    let err = max_rel_err(&all_c, &all_h);

    // Interleaved rounds: a batch of compiled calls, then a batch of hand-written ones, each
    // batch about 2 ms (at least one call), so that noise hits both sides alike.
    let one = {
        let t = Instant::now();
        g.eval(black_box(&x), &mut gc);
        t.elapsed().as_secs_f64().max(1e-9)
    };
    let batch = ((2e-3 / one) as usize).clamp(1, 100_000);
    let rounds = if quick { 7 } else { 21 };
    let budget = if quick { 1.0 } else { 4.0 };
    let (mut tc, mut th) = (Vec::new(), Vec::new());
    let begin = Instant::now();
    while tc.len() < rounds && (tc.len() < 3 || begin.elapsed().as_secs_f64() < budget) {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(g.eval(black_box(&x), &mut gc));
        }
        tc.push(t.elapsed().as_secs_f64() / batch as f64);
        let t = Instant::now();
        for _ in 0..batch {
            black_box((case.hand)(black_box(&x), &mut gh));
        }
        th.push(t.elapsed().as_secs_f64() / batch as f64);
    }
    let (ec, eh) = (median(&mut tc), median(&mut th));
    let peak = peak_memory().map_or("?".to_owned(), |b| format!("{} MiB", b >> 20));
    row(format!(
        "{:.2} MB | {} | {} | {} | {} | {} | {:.1}x | {peak} | {err:.1e} | {}",
        case.text_bytes as f64 / 1e6,
        fmt_time(case.parse.as_secs_f64()),
        fmt_time(build.as_secs_f64()),
        fmt_time(compile.as_secs_f64()),
        fmt_time(ec),
        fmt_time(eh),
        ec / eh,
        describe(g.stats())
    ));
}

/// The shapes `--build` builds in code and parses: Rosenbrock (nine nodes a term, made of
/// two variables) and a least-squares sum `(x_i - c_i)^2` with a different number `c_i` in
/// every term (four nodes a term).
const BUILT: [&str; 2] = ["rosenbrock", "least-squares"];

/// Builds `shape` (one of [`BUILT`]) of `terms` terms in code and parses its text, and prints
/// the row of `--build`.
fn run_build_case(shape: &str, terms: usize) {
    let rosenbrock = shape == "rosenbrock";
    let n = if rosenbrock { terms + 1 } else { terms };
    let c = |i: usize| i as f64 * 0.5 + 0.25;
    let text = if rosenbrock {
        (0..n - 1).map(|i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1)).collect::<Vec<_>>()
    } else {
        (0..n).map(|i| format!("(x{i} - {})^2", c(i))).collect::<Vec<_>>()
    }
    .join(" + ");
    let names = names("x", n);
    let start = Instant::now();
    let x: Vec<Expr> = names.iter().map(|v| Expr::var(v)).collect();
    let vars = start.elapsed();
    let built = if rosenbrock {
        Expr::sum((0..n - 1).map(|i| 100.0 * (&x[i + 1] - x[i].powi(2)).powi(2) + (1.0 - &x[i]).powi(2)))
    } else {
        Expr::sum(x.iter().enumerate().map(|(i, xi)| (xi - c(i)).powi(2)))
    };
    let build = start.elapsed();
    let peak = peak_memory().map_or("?".to_owned(), |b| format!("{} MiB", b >> 20));
    drop(x);
    let (parsed, parse) = match parse(&text) {
        Ok(p) => p,
        Err(e) => return println!("| {shape} | {terms} | parse failed: {e} |"),
    };
    let point: Vec<(&str, f64)> =
        names.iter().enumerate().map(|(i, v)| (v.as_str(), 0.5 + 0.3 * (i as f64 * 0.7).sin())).collect();
    let diff = match (built.eval(&point), parsed.eval(&point)) {
        (Ok(b), Ok(p)) => format!("{:.1e}", (b - p).abs() / p.abs().max(f64::MIN_POSITIVE)),
        (b, p) => format!("evaluation failed: {b:?} / {p:?}"),
    };
    println!(
        "| {shape} | {terms} | {} | {} | {:.2}x | {} | {peak} | {} / {} | {diff} |",
        fmt_time(parse.as_secs_f64()),
        fmt_time(build.as_secs_f64()),
        build.as_secs_f64() / parse.as_secs_f64(),
        fmt_time(vars.as_secs_f64()),
        built.node_count(),
        parsed.node_count(),
    );
}

/// `1e5`, `100000` or `100_000`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.replace('_', "");
    s.parse()
        .ok()
        .or_else(|| s.parse::<f64>().ok().filter(|x| *x >= 1.0 && x.fract() == 0.0).map(|x| x as usize))
}

/// Runs one case as a child process, relaying its row; a child that dies or runs past
/// `timeout` gets a row saying so.
/// (`built` true: a `--build` row.)
fn spawn_case(shape: &str, built: bool, terms: usize, quick: bool, timeout: Duration) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return println!("| {shape} | {terms} | cannot re-execute the benchmark: {e} |"),
    };
    let mut cmd = Command::new(exe);
    if built {
        cmd.args(["--build-case", shape, &terms.to_string()]);
    } else {
        cmd.args(["--case", shape, &terms.to_string()]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if quick {
        cmd.arg("--quick");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return println!("| {shape} | {terms} | cannot start the case: {e} |"),
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) if s.success() && !out.trim().is_empty() => print!("{out}"),
        Some(s) => {
            let why = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            println!("| {shape} | {terms} | the case failed ({s}): {why} |");
        }
        None => println!("| {shape} | {terms} | stopped after {} s (--timeout) |", timeout.as_secs()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let (Some(shape), Some(terms)) = (args.get(i + 1), args.get(i + 2).and_then(|s| parse_size(s)))
        else {
            eprintln!("usage: --case SHAPE TERMS");
            std::process::exit(2);
        };
        return run_case(shape, terms, quick);
    }
    if let Some(i) = args.iter().position(|a| a == "--build-case") {
        let (Some(shape), Some(terms)) = (args.get(i + 1), args.get(i + 2).and_then(|s| parse_size(s)))
        else {
            eprintln!("usage: --build-case SHAPE TERMS");
            std::process::exit(2);
        };
        return run_build_case(shape, terms);
    }
    let default = if quick { "1e3,1e4" } else { "1e3,1e4,1e5" };
    let sizes_arg =
        value("--sizes").or_else(|| std::env::var("SYMDIFF_BENCH_SIZES").ok()).unwrap_or(default.into());
    let Some(sizes) = sizes_arg.split(',').map(parse_size).collect::<Option<Vec<usize>>>() else {
        eprintln!("--sizes: a list of term counts such as `1e3,1e4,1e6`, not `{sizes_arg}`");
        std::process::exit(2);
    };
    let shapes: Vec<String> = match value("--shapes") {
        Some(s) => s.split(',').map(str::to_owned).collect(),
        None => SHAPES.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = shapes.iter().find(|s| !SHAPES.contains(&s.as_str())) {
        eprintln!("unknown shape `{bad}` (shapes: {})", SHAPES.join(", "));
        std::process::exit(2);
    }
    let timeout = Duration::from_secs(value("--timeout").and_then(|t| t.parse().ok()).unwrap_or(600));
    println!(
        "CPU: {} ({} threads)",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    if args.iter().any(|a| a == "--build") {
        println!("\nBuilt in code (`Expr::var`, operators, `Expr::sum`) and parsed from the text:");
        println!(
            "\n| shape | terms | parse | build in code | build/parse | of which variables | peak after building | nodes built / parsed | value difference |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for shape in BUILT {
            for &terms in &sizes {
                spawn_case(shape, true, terms, quick, timeout);
            }
        }
        return;
    }
    println!(
        "\n| shape | terms | text | parse | gradient build | compile | eval | hand-written | eval/hand | peak | err | stats |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in &shapes {
        for &terms in &sizes {
            spawn_case(shape, false, terms, quick, timeout);
        }
    }
}
