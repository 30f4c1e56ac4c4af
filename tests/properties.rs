//! Property tests over generated expressions.
//!
//! * Every symbolic partial derivative agrees with a central finite difference at random
//!   points where the function is defined.
//! * The printed form of every generated expression and of its derivative reads back to
//!   the same function.
//! * Random bytes and random token soup never make the parser, the REPL or the printer panic.
//! * Simplification never gives a value to a constant expression that has none. A random
//!   constant expression is evaluated as written by a reference interpreter over its tree
//!   (symdiff's domain rules, no simplification): whenever that fails (`0/0`, `log(-1)`, an
//!   overflow), evaluating the simplified expression fails too, and where both have values
//!   they agree. (The converse is not asserted: simplification is exact where the tree
//!   rounds, so `(-2)^(sqrt(2)*sqrt(2))` is `4` simplified but a negative base to a
//!   fractional power as written.)
//!
//! The finite-difference oracle. With step `h = 1e-4 * max(1, |x|)` the central difference
//! `D(h) = (f(x+h) - f(x-h)) / 2h` has truncation error about `h² |f'''| / 6` and rounding
//! error about `eps |f| / h`. We accept a point only where the difference quotient is itself
//! trustworthy: `D(h)` and `D(h/2)` must agree to 1e-4 (relative), otherwise the point is
//! next to a kink, a pole or an overflow and is skipped. There, the Richardson estimate
//! `(4 D(h/2) - D(h)) / 3` (error O(h⁴)) must match the symbolic derivative to a relative
//! 1e-5 of `max(1, |f'|, |f| / |x|)`, which is a tolerance a few orders above both error terms.

use proptest::prelude::*;
use symdiff::{Expr, Session};

const UNARY: &[&str] = &[
    "exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "abs",
    "sigmoid", "softplus", "relu",
];

/// Random formulas over x, y and z, as text.
fn formula() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        Just("z".to_owned()),
        (1u32..6).prop_map(|n| n.to_string()),
        (-30i32..30).prop_map(|n| format!("{}", n as f64 / 10.0)),
        Just("pi".to_owned()),
    ];
    leaf.prop_recursive(5, 40, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / {b})")),
            (inner.clone(), 0u32..5).prop_map(|(a, n)| format!("({a})^{n}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a})^({b})")),
            (inner.clone(), prop::sample::select(UNARY)).prop_map(|(a, f)| format!("{f}({a})")),
            inner.clone().prop_map(|a| format!("-{a}")),
        ]
    })
}

fn point() -> impl Strategy<Value = [f64; 3]> {
    [-3.0f64..3.0, -3.0f64..3.0, 0.05f64..3.0]
}

const VARS: [&str; 3] = ["x", "y", "z"];

fn eval_at(f: &Expr, p: [f64; 3]) -> Option<f64> {
    f.eval(&[("x", p[0]), ("y", p[1]), ("z", p[2])]).ok().filter(|v| v.is_finite() && v.abs() < 1e8)
}

/// A constant expression as a tree, so that the reference evaluates what was written.
#[derive(Debug, Clone)]
enum Const {
    Num(f64),
    Neg(Box<Const>),
    Func(&'static str, Box<Const>),
    Bin(char, Box<Const>, Box<Const>),
}

impl Const {
    fn text(&self) -> String {
        match self {
            Const::Num(x) => format!("{x:e}"),
            Const::Neg(a) => format!("(-{})", a.text()),
            Const::Func(f, a) => format!("{f}({})", a.text()),
            Const::Bin(op, a, b) => format!("({} {op} {})", a.text(), b.text()),
        }
    }

    /// The value as written, with the interpreter's domain rules, or `None` where it has
    /// none. `big` collects the largest magnitude on the way (the scale of rounding errors).
    fn reference(&self, big: &mut f64) -> Option<f64> {
        let v = match self {
            Const::Num(x) => *x,
            Const::Neg(a) => -a.reference(big)?,
            Const::Func(f, a) => {
                let a = a.reference(big)?;
                match *f {
                    "exp" => a.exp(),
                    "log" if a > 0.0 => a.ln(),
                    "sqrt" if a >= 0.0 => a.sqrt(),
                    "asin" if (-1.0..=1.0).contains(&a) => a.asin(),
                    // Beyond 2^50 an argument's last bit moves the sine by more than 0.1, and
                    // the simplifier may fold constants in another order (`a/(b/c)` as
                    // `a*c/b`): no tolerance then says whether the result is right.
                    "sin" | "cos" if a.abs() > 1.1e15 => {
                        *big = f64::INFINITY;
                        if *f == "sin" { a.sin() } else { a.cos() }
                    }
                    "sin" => a.sin(),
                    "cos" => a.cos(),
                    "atan" => a.atan(),
                    "tanh" => a.tanh(),
                    "abs" => a.abs(),
                    _ => return None, // outside the domain
                }
            }
            Const::Bin(op, a, b) => {
                let (a, b) = (a.reference(big)?, b.reference(big)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' if b != 0.0 => a / b,
                    '^' if !(a == 0.0 && b < 0.0 || a < 0.0 && b.fract() != 0.0) => a.powf(b),
                    _ => return None, // division by zero, negative base to a fractional power
                }
            }
        };
        *big = big.max(v.abs());
        v.is_finite().then_some(v)
    }
}

fn constant() -> impl Strategy<Value = Const> {
    let leaf = prop::sample::select(&[0.0, 1.0, 2.0, 3.0, 0.5, 1000.0, 1e300][..]).prop_map(Const::Num);
    leaf.prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (prop::sample::select(&['+', '-', '*', '/', '^'][..]), inner.clone(), inner.clone())
                .prop_map(|(op, a, b)| Const::Bin(op, Box::new(a), Box::new(b))),
            (
                prop::sample::select(
                    &["exp", "log", "sqrt", "asin", "sin", "cos", "atan", "tanh", "abs"][..]
                ),
                inner.clone()
            )
                .prop_map(|(f, a)| Const::Func(f, Box::new(a))),
            inner.prop_map(|a| Const::Neg(Box::new(a))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn simplification_keeps_undefined_constants_undefined(c in constant()) {
        let src = c.text();
        let f = Expr::parse(&src).unwrap();
        let mut big = 1.0f64;
        let want = c.reference(&mut big);
        match (want, f.eval(&[])) {
            (None, Ok(v)) => prop_assert!(false, "{} has no value as written, but simplifies to {} = {}", src, f, v),
            (Some(a), Ok(b)) => prop_assert!((a - b).abs() <= 1e-9 * big,
                "{} is {} as written, but simplifies to {} = {}", src, a, f, b),
            _ => {}
        }
    }

    #[test]
    fn partials_match_finite_differences(src in formula(), p in point()) {
        let f = Expr::parse(&src).unwrap();
        let Some(fx) = eval_at(&f, p) else { return Ok(()) };
        for (i, var) in VARS.iter().enumerate() {
            let d = f.diff(var);
            let h = 1e-4 * p[i].abs().max(1.0);
            let shifted = |dx: f64| { let mut q = p; q[i] += dx; eval_at(&f, q) };
            let (Some(a), Some(b), Some(a2), Some(b2)) = (shifted(h), shifted(-h), shifted(h / 2.0), shifted(-h / 2.0)) else { continue };
            let d1 = (a - b) / (2.0 * h);
            let d2 = (a2 - b2) / h;
            let scale = d1.abs().max(d2.abs()).max(1.0);
            if (d1 - d2).abs() > 1e-4 * scale {
                continue; // the difference quotient is not an oracle here (see the module doc)
            }
            let richardson = (4.0 * d2 - d1) / 3.0;
            let dv = match d.eval(&[("x", p[0]), ("y", p[1]), ("z", p[2])]) {
                Ok(v) => v,
                Err(e) => {
                    prop_assert!(false, "d/d{var} of {src} = {d} fails at {p:?} where f = {fx} is smooth: {e}");
                    continue;
                }
            };
            let tol = 1e-5 * dv.abs().max(1.0).max(fx.abs() / p[i].abs().max(1.0));
            prop_assert!((dv - richardson).abs() <= tol,
                "d/d{} of {} = {} is {} at {:?}, finite differences give {}", var, src, d, dv, p, richardson);
        }
    }

    #[test]
    fn printed_forms_read_back(src in formula(), p in point()) {
        let f = Expr::parse(&src).unwrap();
        for e in [f.clone(), f.diff("x")] {
            let printed = e.to_string();
            let back = Expr::parse(&printed).map_err(|err| TestCaseError::fail(format!("{printed}: {err}")))?;
            // Printing may round a constant in its last bit (`x/0.3` prints as `10*x/3`); where
            // the function turns that into more than the tolerance (`sin(x^27/0.3)` at x = 2.3,
            // an argument of 10^10), the two values are no oracle: moving the point by a few
            // ulps changes the value as much.
            let nudged = p.map(|v| v * (1.0 + 1e-13));
            let ill = match (eval_at(&e, p), eval_at(&e, nudged)) {
                (Some(a), Some(b)) => (a - b).abs() > 1e-10 * a.abs().max(1.0),
                _ => true,
            };
            if ill {
                continue;
            }
            if let (Some(a), Some(b)) = (eval_at(&e, p), eval_at(&back, p)) {
                prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{} reads back as a different function: {} vs {}", printed, a, b);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Expr::parse(&text).map(|e| (e.to_string(), e.diff("x").to_string()));
        let _ = Session::new().run(&text);
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(&[
        "x", "y", "f", "2", ".5", "1e3", "+", "-", "*", "/", "^", "**", "(", ")", "[", "]", ",", "=",
        "sin", "diff", "d/dx", "grad", "hessian", "at", "wrt", "let", "@", "e", "pi", "log", ":", " ",
    ][..]), 0..30)) {
        let text: String = tokens.concat();
        let _ = Expr::parse(&text).map(|e| (e.to_string(), e.to_latex(), e.eval(&[("x", 0.5), ("y", 2.0)])));
        let mut s = Session::new();
        let _ = s.run("f(x, y) = x*y");
        let _ = s.run(&text);
    }
}
