//! Source export: the same straight-line program the JIT compiles, written out as C or Rust so
//! a gradient can ship without symdiff.
//!
//! The emitted code follows the interpreter's definition operation by operation (left folds,
//! square-and-multiply for integer powers, the stable `sigmoid` and `softplus`), calling the
//! target's libm for transcendentals. With the same libm it computes the same bits, except
//! where symdiff's own `exp`, `sin`, `cos` and `tanh` (`graph::math`, within about an ulp) and
//! the target's differ in the last bits (against glibc: `exp` on about one input in a
//! thousand, `sin` and `cos` on 3 %, `tanh` on 10 %).

use crate::graph::{Func, Graph, Id, Op};

/// Target language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// C99 with `<math.h>`.
    C,
    /// Rust (std only).
    Rust,
}

fn literal(x: f64, lang: Lang) -> String {
    let s = format!("{x:e}"); // shortest round-trip digits
    match lang {
        // A program can build numbers that are not finite (`Expr::num(f64::NAN)`).
        Lang::C if x.is_nan() => "NAN".to_owned(),
        Lang::C if x.is_infinite() => if x > 0.0 { "INFINITY" } else { "(-INFINITY)" }.to_owned(),
        Lang::Rust if x.is_nan() => "f64::NAN".to_owned(),
        Lang::Rust if x.is_infinite() => {
            if x > 0.0 { "f64::INFINITY" } else { "f64::NEG_INFINITY" }.to_owned()
        }
        Lang::C => s,
        Lang::Rust => format!("{s}_f64"),
    }
}

const C_HELPERS: &[(Func, &str)] = &[
    (
        Func::Sigmoid,
        "static double sd_sigmoid(double x) { if (x >= 0.0) return 1.0 / (1.0 + exp(-x)); double e = exp(x); return e / (1.0 + e); }",
    ),
    (Func::Softplus, "static double sd_softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }"),
    (Func::Relu, "static double sd_relu(double x) { return (x > 0.0 || x != x) ? x : 0.0; }"),
    (Func::Step, "static double sd_step(double x) { return x > 0.0 ? 1.0 : (x != x ? x : 0.0); }"),
    (Func::Sign, "static double sd_sign(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x); }"),
];

const RUST_HELPERS: &[(Func, &str)] = &[
    (
        Func::Sigmoid,
        "fn sd_sigmoid(x: f64) -> f64 { if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { let e = x.exp(); e / (1.0 + e) } }",
    ),
    (Func::Softplus, "fn sd_softplus(x: f64) -> f64 { x.max(0.0) + (-x.abs()).exp().ln_1p() }"),
    (Func::Relu, "fn sd_relu(x: f64) -> f64 { if x > 0.0 || x.is_nan() { x } else { 0.0 } }"),
    (Func::Step, "fn sd_step(x: f64) -> f64 { if x > 0.0 { 1.0 } else if x.is_nan() { x } else { 0.0 } }"),
    (Func::Sign, "fn sd_sign(x: f64) -> f64 { if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { x } }"),
];

fn call(f: Func, a: &str, lang: Lang) -> String {
    match (f, lang) {
        (Func::Sigmoid | Func::Softplus | Func::Relu | Func::Step | Func::Sign, _) => {
            format!("sd_{}({a})", f.name())
        }
        (Func::Abs, Lang::C) => format!("fabs({a})"),
        (_, Lang::C) => format!("{}({a})", f.name()),
        (Func::Log, Lang::Rust) => format!("{a}.ln()"),
        (_, Lang::Rust) => format!("{a}.{}()", f.name()),
    }
}

/// Writes `value` and `grads` (functions of `inputs`) as one function named `name`.
pub fn emit(
    g: &Graph,
    inputs: &[Id],
    value: Id,
    grads: &[Id],
    name: &str,
    lang: Lang,
    header: &str,
) -> String {
    let mut roots = vec![value];
    roots.extend_from_slice(grads);
    let order = g.reachable(&roots);
    let t = |id: Id| format!("t{}", id.index());
    let mut body = Vec::new();
    let mut helpers: Vec<Func> = Vec::new();
    let decl = match lang {
        Lang::C => "const double",
        Lang::Rust => "let",
    };
    for &id in &order {
        let args = g.args(id);
        let rhs = match g.op(id) {
            Op::Num(bits) => literal(f64::from_bits(bits), lang),
            Op::Const(c) => literal(c.value(), lang),
            Op::Var(_) => {
                let k = inputs.iter().position(|&v| v == id).unwrap_or(usize::MAX);
                format!("x[{k}]")
            }
            Op::Add => args.iter().map(|&a| t(a)).collect::<Vec<_>>().join(" + "),
            Op::Mul => {
                let product = args.iter().map(|&a| t(a)).collect::<Vec<_>>().join(" * ");
                // A zero step factor makes the product 0 (see `graph::eval`).
                match args.iter().find(|&&a| g.op(a) == Op::Func(crate::graph::Func::Step)) {
                    Some(&s) => match lang {
                        Lang::C => format!("{} == 0.0 ? 0.0 : {product}", t(s)),
                        Lang::Rust => format!("if {} == 0.0 {{ 0.0 }} else {{ {product} }}", t(s)),
                    },
                    None => product,
                }
            }
            Op::Pow => pow(&t(args[0]), &t(args[1]), g.as_num(args[1]), lang),
            Op::Func(f) => {
                if !helpers.contains(&f) {
                    helpers.push(f);
                }
                call(f, &t(args[0]), lang)
            }
            // Callers check that exported functions are scalar.
            Op::MatMul
            | Op::Sum(_)
            | Op::Max(_)
            | Op::Broadcast(_)
            | Op::Reshape(_)
            | Op::Transpose
            | Op::LogSoftmax
            | Op::OneHot(_) => "0.0 /* tensor operation: not exportable */".to_owned(),
        };
        body.push(format!("    {decl} {} = {rhs};", t(id)));
    }
    let n = inputs.len();
    let mut out = String::new();
    out += header;
    match lang {
        Lang::C => {
            out += "#include <math.h>\n\n";
            for (f, src) in C_HELPERS {
                if helpers.contains(f) {
                    out += src;
                    out += "\n";
                }
            }
            out += &format!(
                "\n/* Returns the value; writes the {n} partial derivative(s) to grad. */\ndouble {name}(const double *x, double *grad) {{\n"
            );
            out += &body.join("\n");
            out += "\n";
            for (k, &gk) in grads.iter().enumerate() {
                out += &format!("    grad[{k}] = {};\n", t(gk));
            }
            out += &format!("    return {};\n}}\n", t(value));
        }
        Lang::Rust => {
            for (f, src) in RUST_HELPERS {
                if helpers.contains(f) {
                    out += "#[inline]\n";
                    out += src;
                    out += "\n";
                }
            }
            out += &format!(
                "\n/// Returns the value; writes the {n} partial derivative(s) to `grad`.\n#[allow(clippy::all, unused_parens, unused_variables)]\npub fn {name}(x: &[f64; {n}], grad: &mut [f64; {n}]) -> f64 {{\n"
            );
            out += &body.join("\n");
            out += "\n";
            for (k, &gk) in grads.iter().enumerate() {
                out += &format!("    grad[{k}] = {};\n", t(gk));
            }
            out += &format!("    {}\n}}\n", t(value));
        }
    }
    out
}

/// `b^e` as `graph::eval::pow` computes it.
fn pow(b: &str, e: &str, exponent: Option<f64>, lang: Lang) -> String {
    let sqrt = |x: &str| match lang {
        Lang::C => format!("sqrt({x})"),
        Lang::Rust => format!("{x}.sqrt()"),
    };
    match exponent {
        Some(2.0) => format!("{b} * {b}"),
        Some(-1.0) => format!("1.0 / {b}"),
        Some(0.5) => sqrt(b),
        Some(-0.5) => format!("1.0 / {}", sqrt(b)),
        Some(x) if x.fract() == 0.0 && x.abs() <= 64.0 => {
            // Square-and-multiply, in the interpreter's order, as one expression.
            // A negative power is a power of the reciprocal, `(1/b)^n`.
            let mut n = x.abs() as u32;
            let mut result: Option<String> = None;
            let mut base = if x < 0.0 { format!("(1.0 / {b})") } else { b.to_owned() };
            while n > 0 {
                if n & 1 == 1 {
                    result = Some(match result {
                        None => base.clone(),
                        Some(r) => format!("({r} * {base})"),
                    });
                }
                n >>= 1;
                if n > 0 {
                    base = format!("({base} * {base})");
                }
            }
            result.unwrap_or_else(|| "1.0".to_owned())
        }
        _ => match lang {
            Lang::C => format!("pow({b}, {e})"),
            Lang::Rust => format!("{b}.powf({e})"),
        },
    }
}
