//! The `symdiff` binary, as a user runs it: arguments in, stdout/stderr and exit code out.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

struct Out {
    stdout: String,
    stderr: String,
    code: i32,
}

fn run(args: &[&str], stdin: &str) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("symdiff runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("symdiff finishes");
    Out {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Runs `args` and checks stdout exactly and the exit code.
fn check(args: &[&str], stdout: &str, code: i32) {
    let out = run(args, "");
    assert_eq!(out.stdout, stdout, "symdiff {args:?}\nstderr: {}", out.stderr);
    assert_eq!(out.code, code, "symdiff {args:?}\nstderr: {}", out.stderr);
}

/// Runs `args`, expects failure with `code` and `stderr` containing `err`.
fn check_err(args: &[&str], err: &str, code: i32) {
    let out = run(args, "");
    assert_eq!(out.code, code, "symdiff {args:?}: {}", out.stderr);
    assert!(out.stderr.contains(err), "symdiff {args:?}: stderr `{}` lacks `{err}`", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[rustfmt::skip]
#[test]
fn one_shot_commands() {
    check(&["diff", "x^3 + 2*x^2 + 1"], "3*x^2 + 4*x\n", 0);
    check(&["diff", "x^3 + 2*x^2 + 1", "--at", "x=4"], "64\n", 0);
    check(&["diff", "x^3 + 2*x^2 + 1", "--json"], "{\"derivatives\":{\"x\":\"3*x^2 + 4*x\"}}\n", 0);
    check(&["diff", "x^3 + 2*x^2 + 1", "--at", "x=4", "--json"], "{\"derivatives\":{\"x\":\"3*x^2 + 4*x\"},\"values\":{\"x\":64}}\n", 0);
    check(&["diff", "x^2*y + sin(x*y)"], "d/dx = 2*x*y + y*cos(x*y)\nd/dy = x^2 + x*cos(x*y)\n", 0);
    check(&["diff", "x^2*y + sin(x*y)", "--wrt", "y"], "x^2 + x*cos(x*y)\n", 0);
    check(&["diff", "x^2*y", "--format", "latex"], "d/dx = 2 x y\nd/dy = x^{2}\n", 0);
    check(&["diff", "sqrt(x)", "--format", "latex"], "\\frac{1}{2 \\sqrt{x}}\n", 0);
    check(&["diff", "-x^2"], "-2*x\n", 0);
    check(&["grad", "x^3 + 2*x^2 + 1", "--at", "x=4", "--json"], "{\"value\":97,\"grad\":{\"x\":64}}\n", 0);
    check(&["grad", "x^3 + 2*x^2 + 1", "--at", "x=4"], "value = 97\nd/dx = 64\n", 0);
    check(&["grad", "x*y", "--at", "x=0.1,y=3", "--json"], "{\"value\":0.30000000000000004,\"grad\":{\"x\":3,\"y\":0.1}}\n", 0);
    check(&["grad", "x*y", "--at", "x=2", "--at", "y=pi", "--json"], "{\"value\":6.283185307179586,\"grad\":{\"x\":3.141592653589793,\"y\":2}}\n", 0);
    check(&["grad", "x^3 + 2*x^2 + 1", "--at", "x=4", "--json", "--interp"], "{\"value\":97,\"grad\":{\"x\":64}}\n", 0);
    check(&["grad", "x^2*y + sin(x*y)", "--at", "x=1,y=2"], "value = 2.909297426825682\nd/dx = 3.1677063269057153\nd/dy = 0.5838531634528576\n", 0);
    check(&["grad", "x^2*y + sin(x*y)", "--at", "x=1,y=2", "--interp"], "value = 2.909297426825682\nd/dx = 3.1677063269057153\nd/dy = 0.5838531634528576\n", 0);
    check(&["eval", "2^3^2"], "512\n", 0);
    // A variable cancelled by simplification is still the formula's: its partial is 0.
    check(&["grad", "x - x + y", "--at", "x=1.5,y=2"], "value = 2\nd/dx = 0\nd/dy = 1\n", 0);
    check(&["grad", "2^3^2"], "value = 512\n", 0);
    check(&["diff", "x - x + y", "--wrt", "x"], "0\n", 0);
    check(&["hessian", "x^2*y + sin(z)", "--at", "x=1,y=2,z=0"], "value = 2\nhessian over x, y, z:\n4  2  0\n2  0  0\n0  0  0\n", 0);
    check(&["hessian", "x^2*y + sin(z)", "--at", "x=1,y=2,z=0", "--json"], "{\"value\":2,\"variables\":[\"x\",\"y\",\"z\"],\"hessian\":[[4,2,0],[2,0,0],[0,0,0]]}\n", 0);
    check(&["hessian", "x^2*y + z^3", "--at", "x=1,y=2,z=1", "--sparse", "--json"], "{\"value\":3,\"variables\":[\"x\",\"y\",\"z\"],\"triangle\":\"lower\",\"entries\":[[0,0,4],[1,0,2],[2,2,6]]}\n", 0);
    check(&["hessian", "x^2*y + z^3", "--at", "x=1,y=2,z=1", "--sparse"], "value = 3\nd2/dxdx = 4\nd2/dydx = 2\nd2/dzdz = 6\n", 0);
    check(&["hessian", "x^2*y + z^3", "--at", "x=1,y=2,z=1", "--wrt", "y", "--wrt", "x", "--json"], "{\"value\":3,\"variables\":[\"y\",\"x\"],\"hessian\":[[0,2],[2,4]]}\n", 0);
    check(&["hessian", "x + y", "--at", "x=1,y=2", "--sparse"], "value = 3\n(every second derivative is identically zero)\n", 0);
    check(&["jacobian", "x*y, x + y^2", "sin(x - 1)", "--at", "x=1,y=2"], "f0 = 2\nf1 = 5\nf2 = 0\njacobian over x, y:\n2  1\n1  4\n1  0\n", 0);
    check(&["jacobian", "x*y, y - y + 3", "--at", "x=1,y=2", "--sparse", "--json"], "{\"values\":[2,3],\"variables\":[\"x\",\"y\"],\"entries\":[[0,0,2],[0,1,1]]}\n", 0);
    check(&["jacobian", "--at", "x=1,y=2", "--json", "--", "-x, (x + y)"], "{\"values\":[-1,3],\"variables\":[\"x\",\"y\"],\"jacobian\":[[-1,0],[1,1]]}\n", 0);
    check(&["eval", "sin(x)", "--at", "x=pi/2", "--json"], "{\"value\":1}\n", 0);
}

#[rustfmt::skip]
#[test]
fn one_shot_errors() {
    check_err(&["diff", "x^^2"], "formula:1:3", 1);
    check_err(&["diff", "x^^2"], "x^^2\n  |   ^", 1);
    check_err(&["diff", "(x + 1"], "unexpected end of input", 1);
    check_err(&["diff", ""], "empty input", 1);
    check_err(&["diff", "x^2", "--wrt", "z"], "`z` does not occur", 1);
    check_err(&["diff", "x^2", "--at", "x=1,z=2"], "--at:1:5", 1);
    check_err(&["diff", "x^2", "--at", "x="], "--at:1:3", 1);
    check_err(&["grad", "x*y", "--at", "x=1"], "no value for `y`", 1);
    check_err(&["grad", "x*y", "--at", "x=1,y=q"], "cannot use the variable `q`", 1);
    check_err(&["eval", "log(x)", "--at", "x=-1"], "domain error in `log(x)`", 1);
    check_err(&["eval", "1/0"], "division by zero", 1);
    check_err(&["eval", "exp(1000)"], "overflow", 1);
    check_err(&["eval", "x"], "no value for `x`", 1);
    check_err(&["grad", "x"], "no value for `x`", 1);
    check_err(&["grad", "x*y", "--at", "x=1,y=2,q=3"], "`q` does not occur", 1);
    check_err(&["hessian", "x*y", "--at", "x=1"], "no value for `y`", 1);
    check_err(&["hessian", "x*y", "--at", "x=1,y=1", "--wrt", "q"], "`q` does not occur", 1);
    check_err(&["hessian", "x*y", "--at", "x=1,y=1", "--wrt", "x", "--wrt", "x"], "listed twice", 1);
    check_err(&["hessian", "log(x)*x^3", "--at", "x=-1"], "domain error in `log(x)`", 1); // compiled NaN explained
    check_err(&["hessian", "x^", "--at", "x=1"], "formula:1:3", 1);
    check_err(&["jacobian", "x*y, x +", "--at", "x=1,y=1"], "unexpected end of input", 1);
    check_err(&["jacobian", "sqrt(x), x", "--at", "x=-1"], "domain error in `sqrt(x)`", 1);
    check_err(&["jacobian", ",", "--at", "x=1"], "no formulas", 1);
    check_err(&["grad", "log(x)", "--at", "x=-1"], "domain error in `log(x)`", 1); // compiled NaN explained
    check_err(&["grad", "sqrt(x)", "--at", "x=0"], "division by zero", 1);
    check_err(&["export", "x^2", "--name", "2bad"], "not a valid function name", 1);
    check_err(&["frobnicate"], "unrecognized subcommand", 2);
}

/// Indexed variables on the command line: `--let` for bounds, lists in `--at`, `--wrt x` for
/// every element, gradients as vectors in JSON (one line per element in text).
#[rustfmt::skip]
#[test]
fn indexed_variables() {
    const ROSENBROCK: &str = "sum(i = 0..n-2, 100*(x[i+1] - x[i]^2)^2 + (1 - x[i])^2)";
    check(&["grad", ROSENBROCK, "--let", "n=4", "--at", "x=[1.5,2,0.5,1]"], "value = 1289\nd/dx[0] = 151\nd/dx[1] = 2752\nd/dx[2] = -851\nd/dx[3] = 150\n", 0);
    check(&["grad", ROSENBROCK, "--let", "n=4", "--at", "x=[1.5,2,0.5,1]", "--json"], "{\"value\":1289,\"grad\":{\"x\":[151,2752,-851,150]}}\n", 0);
    check(&["grad", ROSENBROCK, "--let", "n=4", "--at", "x=[1.5,2,0.5,1]", "--interp", "--json"], "{\"value\":1289,\"grad\":{\"x\":[151,2752,-851,150]}}\n", 0);
    // An element the list gives but the formula does not use has the partial 0.
    check(&["grad", "x[0]*x[1]", "--at", "x=[1.5,2,3]", "--json"], "{\"value\":3,\"grad\":{\"x\":[2,1.5,0]}}\n", 0);
    check(&["grad", "a[0,0]*a[1,1] - a[0,1]*a[1,0]", "--at", "a=[[1,2],[3,4]]", "--json"], "{\"value\":-2,\"grad\":{\"a\":[[4,-3],[-2,1]]}}\n", 0);
    check(&["diff", "sum(i = 0..2, x[i]^3)", "--wrt", "x", "--json"], "{\"derivatives\":{\"x\":[\"3*x[0]^2\",\"3*x[1]^2\",\"3*x[2]^2\"]}}\n", 0);
    check(&["diff", "sum(i = 0..2, x[i]^3) + y", "--wrt", "x", "--at", "x=[1,2,3],y=0"], "d/dx[0] = 3\nd/dx[1] = 12\nd/dx[2] = 27\n", 0);
    check(&["hessian", "sum(i = 0..n-1, x[i]^3) + y^2", "--let", "n=3", "--at", "x=[1,2,3],y=1", "--wrt", "x", "--sparse"], "value = 37\nd2/dx[0]dx[0] = 6\nd2/dx[1]dx[1] = 12\nd2/dx[2]dx[2] = 18\n", 0);
    check(&["jacobian", "sum(i = 0..n-1, x[i])", "prod(i = 0..n-1, x[i])", "--let", "n=3", "--at", "x=[1,2,3]"], "f0 = 6\nf1 = 6\njacobian over x[0], x[1], x[2]:\n1  1  1\n6  3  2\n", 0);
    check(&["eval", "sum(i = 0..n-1, x[i])", "--let", "n=2^2", "--at", "x=[1,2,3,4]"], "10\n", 0);
    check(&["export", "sum(i = 0..n-1, x[i]^2)", "--let", "n=2", "--lang", "rust"], &run(&["export", "x[0]^2 + x[1]^2", "--lang", "rust"], "").stdout, 0);
    // One element at a time, as the text prints them.
    check(&["grad", "x[0]*x[1]", "--at", "x[0]=2,x[1]=3", "--json"], "{\"value\":6,\"grad\":{\"x\":[3,2]}}\n", 0);
    check(&["eval", "a[1,0]*y", "--at", "a[1,0]=2,y=4"], "8\n", 0);
    check_err(&["grad", "x[0]*x[1]", "--at", "x=[1,2],x[0]=3"], "`x[0]` is given a value twice", 1);
    check_err(&["grad", "x[0]*x[1]", "--at", "x[0]=2,x[1]=[3]"], "`x[1]` is one element: its value is a number", 1);
    check_err(&["grad", "x[0]*x[1]", "--at", "x[0]=2,x[1.5]=3"], "an index must be a whole number", 1);
    // The partials of a product print over shared prefix and suffix products: linear, not
    // 30 lines of 29 factors.
    let out = run(&["diff", "prod(i = 0..29, x[i])"], "");
    assert!(out.code == 0 && out.stdout.contains("\nwhere\n  t1 = ") && out.stdout.len() < 2000, "{}{}", out.stdout, out.stderr);
    check(&["diff", "x*y*z"], "d/dx = y*z\nd/dy = x*z\nd/dz = x*y\n", 0);
    // 5,000 factors: the textbook forms would pass the node budget; the shared form is linear.
    let out = run(&["diff", "prod(i = 0..4999, x[i])"], "");
    assert!(out.code == 0 && out.stdout.lines().count() < 20_000, "{}", out.stderr);
    let out = run(&["repl"], "grad prod(i = 0..4999, x[i])\n");
    assert!(out.stderr.is_empty() && out.stdout.lines().count() < 20_000, "{}", out.stderr);
    check_err(&["grad", "x[0]*x[5]", "--at", "x=[1.5,2,3]"], "`x[5]` is outside `x`, whose shape is [3]", 1);
    check_err(&["grad", "x[0]*x[1]", "--at", "x=1"], "give its elements as a list", 1);
    check_err(&["grad", "x*y", "--at", "x=[1,2],y=1"], "`x` is a number in the expression, not an indexed variable", 1);
    check_err(&["grad", "a[0,0]", "--at", "a=[[1,2],[3]]"], "1:10", 1);
    check_err(&["grad", "x[0]", "--at", "x=[]"], "an empty list gives no values", 1);
    check_err(&["grad", "x[0]", "--at", "x=[1,y]"], "a value cannot use the variable `y`", 1);
    check_err(&["grad", "sum(i = 0..n-1, x[i])", "--let", "n=[1,2]"], "a let value is one number, not a list", 1);
    check_err(&["grad", "sum(i = 0..n-1, x[i])", "--let", "n=200"], "no value for `x[0]`, `x[1]`, `x[2]`, `x[3]`, `x[4]`, ... (200 in all)", 1);
    check_err(&["grad", "sum(i = 0..n-1, x[i])", "--let", "n=1.5"], "whole number", 1);
    check_err(&["grad", "sum(i = 0..m-1, x[i])", "--let", "n=2"], "`m`", 1);
    check_err(&["diff", "x[0] + y", "--wrt", "z"], "--wrt z: `z` does not occur in the expression", 1);
    check_err(&["hessian", "x[0]*x[1]", "--at", "x=[1,2]", "--wrt", "x", "--wrt", "x[1]"], "`x[1]` is listed twice", 1);
}

/// Indexed variables in the REPL: element values from a named list, `at x[i] = ...`, bounds
/// from `let`, and positioned errors for an element outside the list or an unbound bound.
#[test]
fn repl_indexed_variables() {
    let script = "let n = 3\nx = [1, 2, 3]\nsum(i = 0..n-1, x[i]^2)\nd/dx[1] sum(i = 0..n-1, x[i]^2)\n\
                  x[n-1]*y at y = 2\nz[0]*z[1] at z[0] = 5, z[1] = 2\nz[n-2] at z[1] = 7\nx[7]\nsum(i = 0..m, i)\n";
    let out = run(&["repl"], script);
    assert_eq!(out.stdout, "14\n4\n6\n10\n7\n", "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("`x[7]` is outside `x`, whose shape is [3]\n --> <stdin>:8:1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`m` has no value here") && out.stderr.contains("<stdin>:9:12"),
        "{}",
        out.stderr
    );
    // A product's gradient prints over shared prefix and suffix products.
    let out = run(&["repl"], "grad prod(i = 0..29, w[i])\n");
    assert!(
        out.stdout.starts_with("d/dw[0] = w[1]*t") && out.stdout.contains("\nwhere\n  t1 = "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.len() < 2000, "{}", out.stdout);
}

#[test]
fn formula_from_stdin() {
    let deep = format!("{}x{}", "(".repeat(200_000), ")".repeat(200_000));
    let out = run(&["diff", "-"], &deep);
    assert_eq!((out.stdout.as_str(), out.code), ("1\n", 0), "{}", out.stderr);
}

#[test]
fn repl_script_mode() {
    let script = "\
d/dx x^3 + 2*x^2 + 1
d/dx x^3 + 2*x^2 + 1 at x = 4
f(x, y) = x^2*y + sin(x*y)
grad f
x^^2
let a = 3
a*x at x = 2
hessian x^2*y
diff(x^4, x, 2)
d^2/dx^2 x^4
:help
";
    let out = run(&["repl"], script);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..11],
        &[
            "3*x^2 + 4*x",
            "64",
            "df/dx = 2*x*y + y*cos(x*y)",
            "df/dy = x^2 + x*cos(x*y)",
            "6",
            "d2/dx2 = 2*y",
            "d2/dxdy = 2*x",
            "d2/dy2 = 0",
            "12*x^2",
            "12*x^2",
            "What a line can be:",
        ]
    );
    assert_eq!(out.code, 1, "a failed line makes the exit code 1");
    assert!(out.stderr.contains("--> <stdin>:5:3"), "{}", out.stderr);
    // No arguments at all is the REPL too.
    let out = run(&[], "d/dx x^3 + 2*x^2 + 1\n");
    assert_eq!((out.stdout.as_str(), out.code), ("3*x^2 + 4*x\n", 0));
}

#[test]
fn repl_survives_invalid_utf8() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x + \xff\xfe\nd/dx x^2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2*x\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>:1:5: the line is not valid UTF-8"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn timings_and_export() {
    let out = run(&["grad", "x^2*y", "--at", "x=1,y=2", "--timings"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    for phase in ["parse", "gradient graph", "compile", "evaluate (native)"] {
        assert!(out.stderr.contains(phase), "no `{phase}` in {}", out.stderr);
    }
    assert!(out.stderr.contains("structure: no classes of like terms: "), "{}", out.stderr);
    // Thirty like terms: one class, one loop, and the same numbers as the interpreter.
    let sum: Vec<String> = (10..40).map(|i| format!("sin(x{i})^2")).collect();
    let at: Vec<String> = (10..40).map(|i| format!("x{i}={}", i as f64 / 10.0)).collect();
    let (sum, at) = (sum.join(" + "), at.join(","));
    let out = run(&["grad", &sum, "--at", &at, "--timings"], "");
    assert!(
        out.stderr.contains("structure: 1 class in loops (30 terms x 2 nodes; 60 node evaluations)"),
        "{}",
        out.stderr
    );
    // Each partial is one term's (the same to the bit); the value, a sum over the terms,
    // may be added in another order.
    let interpreted = run(&["grad", &sum, "--at", &at, "--interp"], "");
    let (value, partials) = out.stdout.split_once('\n').expect("a value line");
    let (expect, expect_partials) = interpreted.stdout.split_once('\n').expect("a value line");
    assert_eq!(partials, expect_partials);
    let number = |line: &str| line.trim_start_matches("value = ").parse::<f64>().expect("a number");
    assert!((number(value) - number(expect)).abs() <= 1e-12 * number(expect).abs(), "{value} vs {expect}");
    let out = run(&["export", "x^3 + 2*x^2 + 1"], "");
    assert!(out.stdout.contains("double f(const double *x, double *grad) {"), "{}", out.stdout);
    let out = run(&["export", "x^3 + 2*x^2 + 1", "--lang", "rust", "--name", "cubic"], "");
    assert!(
        out.stdout.contains("pub fn cubic(x: &[f64; 1], grad: &mut [f64; 1]) -> f64 {"),
        "{}",
        out.stdout
    );
}

#[test]
fn repl_ir_and_time() {
    let out = run(&["repl"], "f(x, y) = x^2*y + sin(x*y)\n:ir f\n:time f at x = 1, y = 2\n:time f\n");
    assert!(out.stdout.contains("function u0:0(i64, i64, i64, i64) system_v {"), "{}", out.stdout);
    assert!(out.stdout.contains("call"), "sin and cos are host calls: {}", out.stdout);
    assert!(out.stdout.contains("compiled: ") && out.stdout.contains("interpreter: "), "{}", out.stdout);
    assert!(out.stderr.contains("give every variable a value"), "{}", out.stderr);
}

/// A tiny MNIST-shaped data set (`n` samples of noise) in `dir`, and a small model file
/// beside it; returns the model's path.
fn tiny_mnist(dir: &std::path::Path, n: u32, train: &str) -> String {
    common::mnist::write_synthetic(dir, n);
    let model = dir.join("tiny.model");
    std::fs::write(
        &model,
        format!(
            "data mnist\ninput 28x28\nflatten\ndense 8 relu\ndense 10\nloss softmax_cross_entropy\n\
             optimizer adam\ntrain {train}\n"
        ),
    )
    .unwrap();
    model.to_str().unwrap().to_owned()
}

/// A tiny model trained on synthetic MNIST in `dir`, its weights saved: the model file's
/// path and the weights' path.
fn trained_tiny(dir: &std::path::Path, n: u32, train: &str) -> (String, String) {
    let model = tiny_mnist(dir, n, train);
    let weights = dir.join("w.safetensors").to_str().unwrap().to_owned();
    let data = dir.to_str().unwrap();
    let out = run(&["train", &model, "--data", data, "--no-checkpoint", "--save", &weights], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    (model, weights)
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("symdiff-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where stdout goes: a full disk (`/dev/full`), or a pipe whose reader is already gone.
#[derive(Clone, Copy, Debug)]
enum Sink {
    Full,
    Closed,
}

/// Runs `args` with stdout into `sink`; returns the exit code and stderr.
fn run_into(args: &[&str], sink: Sink) -> (Option<i32>, String) {
    let stdout: Stdio = match sink {
        Sink::Full => std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full").into(),
        Sink::Closed => {
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader); // every write gets EPIPE
            writer.into()
        }
    };
    let out = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("symdiff runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `epoch` a checkpoint's metadata records.
fn checkpoint_epoch(path: &std::path::Path) -> String {
    symdiff::train::weights::metadata(path).unwrap()["epoch"].clone()
}

#[test]
fn output_that_cannot_be_written() {
    let dir = scratch("output");
    let (model, w) = trained_tiny(&dir, 40, "epochs=2 batch=16 seed=1");
    let (data, w) = (dir.to_str().unwrap(), w.as_str());
    let images = dir.join("t10k-images-idx3-ubyte");
    let images = images.to_str().unwrap();
    #[rustfmt::skip]
    let commands: &[&[&str]] = &[
        &["diff", "x^3 + 2*x^2 + 1"],
        &["diff", "x^2*y", "--json"],
        &["grad", "x^2*y", "--at", "x=1,y=2"],
        &["eval", "2^10"],
        &["export", "x^3 + 2*x^2 + 1", "--lang", "rust"],
        &["show", &model],
        &["show", &model, "--dot"],
        &["summary", &model],
        &["summary", &model, "--json"],
        &["eval", &model, "--weights", w, "--data", data],
        &["predict", &model, "--weights", w, images, "--json"],
        &["bench", &model, "--data", data, "--epochs", "1", "--steps", "1"],
        &["--help"],
        &["--version"],
    ];
    for args in commands {
        // A closed pipe ends quietly, with success; a full disk is an error.
        let (code, err) = run_into(args, Sink::Closed);
        assert_eq!((code, err.as_str()), (Some(0), ""), "{args:?} into a closed pipe");
        let (code, err) = run_into(args, Sink::Full);
        assert_eq!(code, Some(1), "{args:?} > /dev/full: {err}");
        assert_eq!(err, "error: writing to stdout: No space left on device (os error 28)\n", "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_writes_the_checkpoint_before_the_line_that_cannot_be_printed() {
    let dir = scratch("train-output");
    let model = tiny_mnist(&dir, 40, "epochs=3 batch=16 seed=1");
    let data = dir.to_str().unwrap();
    for sink in [Sink::Closed, Sink::Full] {
        for json in [&["--json"][..], &[]] {
            let ckpt = dir.join(format!("{sink:?}-{}.ckpt", json.len()));
            let c = ckpt.to_str().unwrap();
            let args = [&["train", &model, "--data", data, "--checkpoint", c][..], json].concat();
            let (code, err) = run_into(&args, sink);
            // The first epoch's line fails: its checkpoint is on disk, and training stopped.
            assert_eq!(checkpoint_epoch(&ckpt), "1", "{sink:?} {json:?}: {err}");
            match sink {
                // Quiet: no error, only the usual notes (the `training ...` line without --json).
                Sink::Closed => {
                    assert_eq!(code, Some(0), "{json:?}: {err}");
                    assert!(!err.contains("error") && !err.contains("panicked"), "{json:?}: {err}");
                }
                Sink::Full => {
                    assert_eq!(code, Some(1), "{err}");
                    assert!(
                        err.contains("error: writing to stdout: No space left on device")
                            && err.contains(
                                "training stopped after epoch 1; the checkpoint after epoch 1 is in"
                            )
                            && err
                                .contains(&format!("`symdiff train {model} --data {data} --checkpoint {c}")),
                        "{err}"
                    );
                }
            }
        }
    }
    // `symdiff train M --json | head -1`: the reader takes one line and goes; training stops
    // at the next line it cannot write, whose epoch's checkpoint is already written.
    let ckpt = dir.join("head.ckpt");
    let c = ckpt.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(["train", &model, "--data", data, "--checkpoint", c, "--json", "--epochs", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first)
        .unwrap();
    assert!(first.starts_with("{\"epoch\":1,"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.as_ref()), (Some(0), ""));
    let epoch: usize = checkpoint_epoch(&ckpt).parse().unwrap();
    assert!((2..100000).contains(&epoch), "stopped at epoch {epoch}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `symdiff summary`: the layers, their output shapes and parameters, and the totals, as
/// Keras' `model.summary()` counts them (the seed model has 101,770 parameters; a batch
/// normalisation of 128 units has 512, of which 256 are its moving statistics), as text and
/// JSON; a file that is not a model is a positioned error.
#[test]
fn summary_lists_layers_shapes_and_parameters() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let seed = format!("{examples}/mnist.model");
    let rows = [
        "flatten_1 (Flatten)  (None, 784)         0",
        "dense_1 (Dense)      (None, 128)   100,480",
        "dropout_1 (Dropout)  (None, 128)         0",
        "dense_2 (Dense)      (None, 10)      1,290",
        " Total params: 101,770 (397.54 KB)",
        " Trainable params: 101,770 (397.54 KB)",
        " Non-trainable params: 0 (0.00 B)",
    ];
    let out = run(&["summary", &seed], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    for row in rows {
        assert!(out.stdout.lines().any(|l| l == row), "no line `{row}` in\n{}", out.stdout);
    }
    let out = run(&["summary", &format!("{examples}/mnist_batchnorm.model"), "--json"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["total"].as_u64(), v["trainable"].as_u64(), v["non_trainable"].as_u64()),
        (Some(102_282), Some(102_026), Some(256))
    );
    assert_eq!(v["layers"][2]["type"], "BatchNormalization");
    assert_eq!(v["layers"][2]["params"], 512);
    assert_eq!(v["layers"][1]["output_shape"], serde_json::json!([128]));
    // Another width and activation.
    let dir = scratch("summary");
    let flat = dir.join("flat.model");
    std::fs::write(&flat, "data mnist\ninput 28x28\nflatten\ndense 32 tanh\ndense 10\nloss softmax_cross_entropy\noptimizer adam lr=0.001\ntrain epochs=1\n").unwrap();
    let out = run(&["summary", flat.to_str().unwrap()], "");
    let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(out.stdout.lines().any(|l| words(l) == "dense_1 (Dense) (None, 32) 25,120"), "{}", out.stdout);
    assert!(out.stdout.lines().any(|l| words(l) == "Total params: 25,450 (99.41 KB)"), "{}", out.stdout);
    let bad = dir.join("bad.model");
    std::fs::write(&bad, "data mnist\ninput 28x28\nflaten\n").unwrap();
    check_err(&["summary", bad.to_str().unwrap()], "3:1", 1);
    check_err(&["summary", "nowhere.model"], "cannot read nowhere.model", 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `symdiff eval` with weights reports the confusion matrix and per-class precision and
/// recall: checked against each other (rows are supports, the trace over the total is the
/// reported accuracy, precision and recall are the diagonal over columns and rows), and the
/// text form has the same tables.
#[test]
fn eval_reports_a_confusion_matrix() {
    let dir = scratch("confusion");
    let (model, w) = trained_tiny(&dir, 60, "epochs=2 batch=16 seed=3");
    let (data, w) = (dir.to_str().unwrap(), w.as_str());
    let out = run(&["eval", &model, "--weights", w, "--data", data, "--json"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert_eq!(rows.len(), 10);
    let total: u64 = rows.iter().flatten().sum();
    let trace: u64 = (0..10).map(|c| rows[c][c]).sum();
    assert!(total > 0);
    assert_eq!(v["test_accuracy"].as_f64().unwrap(), trace as f64 / total as f64);
    for c in 0..10 {
        let class = &v["per_class"][c];
        let support: u64 = rows[c].iter().sum();
        let predicted: u64 = rows.iter().map(|r| r[c]).sum();
        assert_eq!(class["support"].as_u64(), Some(support));
        let share =
            |n: u64| if n == 0 { serde_json::Value::Null } else { (rows[c][c] as f64 / n as f64).into() };
        assert_eq!(
            (class["recall"].clone(), class["precision"].clone()),
            (share(support), share(predicted)),
            "class {c}"
        );
    }
    let out = run(&["eval", &model, "--weights", w, "--data", data], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("confusion matrix (rows: true class, columns: predicted)"), "{}", out.stdout);
    assert!(out.stdout.contains("class  precision  recall  support"), "{}", out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --log FILE`: a CSV header and one row per epoch, the same figures as the `--json`
/// lines; a resumed run keeps the earlier epochs' rows; a log that cannot be written stops
/// training before it starts.
#[test]
fn train_logs_every_epoch_to_csv() {
    let dir = scratch("log");
    let model = tiny_mnist(&dir, 40, "epochs=3 batch=16 seed=2");
    let data = dir.to_str().unwrap();
    let log = dir.join("history.csv");
    let ckpt = dir.join("c.safetensors");
    let (l, c) = (log.to_str().unwrap(), ckpt.to_str().unwrap());
    let out =
        run(&["train", &model, "--data", data, "--epochs", "2", "--checkpoint", c, "--log", l, "--json"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "epoch,loss,accuracy,val_loss,val_accuracy,seconds");
    assert_eq!(rows.len(), 3, "{text}");
    for (k, line) in out.stdout.lines().take(2).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let cells: Vec<&str> = rows[k + 1].split(',').collect();
        assert_eq!(cells[0], (k + 1).to_string());
        for (i, key) in ["loss", "accuracy", "val_loss", "val_accuracy"].iter().enumerate() {
            // (serde_json reads floats to within an ulp, not always to the bit)
            let (a, b) = (cells[i + 1].parse::<f64>().unwrap(), v[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-15 * a.abs().max(1.0), "{key} of epoch {}: {a} vs {b}", k + 1);
        }
    }
    // Resumed for a third epoch: the first two rows stay.
    let out = run(&["train", &model, "--data", data, "--checkpoint", c, "--log", l, "--resume"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let again = std::fs::read_to_string(&log).unwrap();
    assert_eq!(again.lines().count(), 4, "{again}");
    // The earlier rows come back from the checkpoint (figures to within an ulp).
    for (old, new) in text.lines().zip(again.lines()) {
        let (a, b): (Vec<&str>, Vec<&str>) = (old.split(',').collect(), new.split(',').collect());
        assert_eq!(a[0], b[0]);
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            if let (Ok(x), Ok(y)) = (x.parse::<f64>(), y.parse::<f64>()) {
                assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{old} vs {new}");
            }
        }
    }
    check_err(
        &["train", &model, "--data", data, "--no-checkpoint", "--log", "/nonexistent/dir/h.csv"],
        "cannot write the log /nonexistent/dir/h.csv",
        1,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_of_a_model_file_without_weights_says_so() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mnist.model");
    check_err(&["eval", model], "= help: `", 1);
    check_err(
        &["eval", model],
        "is a model file, not a formula; to evaluate a trained model, give its weights",
        1,
    );
    check_err(&["eval", "nowhere/m.model"], "`nowhere/m.model` is a model file", 1);
    // An existing file without the extension, parsed as a formula that needs a value.
    let dir = scratch("eval-file");
    let file = dir.join("net");
    std::fs::write(&file, "data mnist\n").unwrap();
    let f = file.to_str().unwrap();
    check_err(&["eval", f], "names a file, not a formula", 1);
    // A formula that happens to name a file but evaluates is a formula.
    let out = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(["eval", "net", "--at", "net=2"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), out.status.code()), ("2\n", Some(0)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_reports_every_figure_even_with_few_steps() {
    let dir = scratch("bench");
    let model = tiny_mnist(&dir, 40, "epochs=1 batch=16 seed=1");
    let out = run(&["bench", &model, "--data", dir.to_str().unwrap(), "--steps", "1", "--json"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    // A warm-up that ended inside the only timed block left these NaN (null in JSON).
    for key in ["step32_us", "step256_us", "interp_step32_us", "compile_ms", "fit_gflop_per_s"] {
        assert!(report[key].as_f64().is_some_and(f64::is_finite), "{key}: {report}");
    }
    assert!(report["flop_counting"].as_str().unwrap().starts_with("dense-equivalent"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The REPL's script mode writes through the same writer as the commands: a closed pipe ends
/// it quietly (with status 1 when a line failed), a full disk is an error, and neither panics.
#[test]
fn repl_output_that_cannot_be_written() {
    let full = "error: writing to stdout: No space left on device (os error 28)\n";
    #[rustfmt::skip]
    let cases = [
        (Sink::Closed, "1+1\n", 0, ""),
        (Sink::Closed, "x^^2\n1+1\n", 1, "unexpected `^`"),
        (Sink::Full, "1+1\n", 1, full),
        (Sink::Full, "x^^2\n1+1\n", 1, full),
    ];
    for (sink, lines, code, err) in cases {
        let stdout: Stdio = match sink {
            Sink::Full => {
                std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full").into()
            }
            Sink::Closed => std::io::pipe().expect("pipe").1.into(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("symdiff runs");
        // Many lines: the REPL must stop at the first write that fails, not read them all.
        let _ = child.stdin.take().expect("stdin").write_all(lines.repeat(10_000).as_bytes());
        let out = child.wait_with_output().expect("symdiff finishes");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sink:?} {lines:?}: {stderr}");
        assert!(stderr.contains(err), "{sink:?} {lines:?}: {stderr}");
        if let Sink::Full = sink {
            assert!(stderr.ends_with(full), "the write error is the last word: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `ans` is the last result of an expression or derivative line; a failed line keeps it.
#[test]
fn repl_ans() {
    let script = "d/dx x^3\nd/dx ans\nans at x = 2\nans + 1\nlog(-1)\nans\nx = 5\nd/dx x^2\nans\n";
    let out = run(&["repl"], script);
    assert_eq!(out.stdout, "3*x^2\n6*x\n12\n13\n13\n10\n10\n", "{}", out.stderr);
    assert!(out.stderr.contains("log(x) is defined for x > 0"), "{}", out.stderr);
}

/// `--at @FILE`: a point longer than a command line may be (200,000 elements over many
/// lines), with errors that point into the file or name it.
#[test]
fn points_from_files() {
    let dir = scratch("at-file");
    let long = dir.join("x.txt");
    let values: Vec<String> = (0..200_000).map(|i| format!("{}", i % 3)).collect();
    std::fs::write(&long, format!("x = [{}]\n", values.join(",\n"))).unwrap();
    let at = format!("@{}", long.display());
    let out = run(&["grad", "sum(i = 0..n-1, x[i]^2)", "--let", "n=200000", "--at", &at, "--json"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sum: u64 = (0..200_000u64).map(|i| (i % 3) * (i % 3)).sum();
    assert!(
        out.stdout.starts_with(&format!("{{\"value\":{sum},\"grad\":{{\"x\":[0,2,4,0,2,4,")),
        "{}",
        &out.stdout[..80]
    );
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "x = [1, 2,\n 3, [4]]\n").unwrap();
    let bad_at = format!("@{}", bad.display());
    check_err(&["grad", "x[0]", "--at", &bad_at], &format!("--> {}:2:5", bad.display()), 1);
    check_err(&["grad", "x[0]*x[9]", "--at", &bad_at.replace("bad", "missing")], "cannot read it", 1);
    std::fs::write(&bad, b"x = \xff").unwrap();
    check_err(&["grad", "x[0]", "--at", &bad_at], "not UTF-8 text (at byte 4)", 1);
    check_err(&["grad", "x[0]", "--at", &at, "--at", "y=1"], "give no other --at with it", 1);
    let _ = std::fs::remove_dir_all(&dir);
}
