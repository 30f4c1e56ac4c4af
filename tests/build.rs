//! Expressions built in code (`Expr::var`, the operators, `pow`, the function methods,
//! `Expr::sum`, ...) against the same formulas parsed: they print the same, evaluate the same
//! (the same values to the bit, or the same errors), and parsing the text into the built
//! expression's graph prints the same again.
//!
//! Every case builds in a fresh default graph: the expressions of the case before are all
//! dropped, so the thread's default graph is freed and the next `Expr::var` starts another
//! (see `Expr`'s doc), and nodes are created in the order the text names them.
//!
//! The table is one line per case; the property test builds random expression trees both
//! ways (in code, with `f64` operands on either side, and as fully parenthesised text).

use proptest::prelude::*;
use symdiff::Expr;

fn v(name: &str) -> Expr {
    Expr::var(name)
}

fn n(x: f64) -> Expr {
    Expr::num(x)
}

const POINTS: [[f64; 3]; 4] = [[0.7, -1.3, 2.1], [-0.4, 0.9, 0.3], [2.0, 0.5, -1.5], [0.0, 1.0, -0.0]];

/// `built` prints as `text` parsed, evaluates as it does at every point (values or errors,
/// over `x`, `y`, `z`), and `text` parsed into `built`'s graph prints the same.
#[track_caller]
fn check(built: Expr, text: &str) {
    let short: String = text.chars().take(80).collect();
    let parsed = Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(built.to_string(), parsed.to_string(), "{short}");
    let again = built.parse_with(text).unwrap();
    assert_eq!(again.to_string(), built.to_string(), "{short}, parsed into the built graph");
    for p in POINTS {
        let at = [("x", p[0]), ("y", p[1]), ("z", p[2])];
        assert_eq!(built.eval(&at), parsed.eval(&at), "{short} at {p:?}");
    }
}

#[test]
#[rustfmt::skip]
fn operators_build_what_the_parser_builds() {
    check(v("x") + 1.0, "x + 1");
    check((v("x") + 1.0) * 2.0, "(x + 1)*2");
    check(1.0 + v("x"), "1 + x");
    check(2.0 * v("x") * 3.0, "2*x*3");
    check(v("x") - v("y") - v("z"), "x - y - z");
    check(v("z") - v("y") - v("x"), "z - y - x");
    check(v("x") / v("y") / v("z"), "x/y/z");
    check(v("x") * v("y") / (v("z") * v("x")), "x*y/(z*x)");
    check(1.0 / v("x"), "1/x");
    check(v("x") / 4.0, "x/4");
    check(-v("x"), "-x");
    check(-(-v("x")), "-(-x)");
    check(-v("x") - v("y"), "-x - y");
    check(v("x") * -2.0, "x*-2");
    check(v("x") + -0.0, "x + -0");
    check(v("x") - 3.0, "x - 3");
    check(v("x") - -2.5, "x - -2.5");
    check(v("x") - 0.0, "x - 0");
    check(v("x") - -0.0, "x - -0");
    check(v("x") - 1e308 - 1e308, "x - 1e308 - 1e308");
    check((v("x") - 2.0) * (v("y") - 3.0) - 3.0 * v("y"), "(x - 2)*(y - 3) - 3*y");
    check({ let mut f = v("x"); f -= 3.0; f }, "x - 3");
    check(3.0 - v("x") * 0.5, "3 - x*0.5");
    check({ let x = v("x"); &x - &x }, "x - x");
    check({ let x = v("x"); &x / &x }, "x/x");
    check({ let x = v("x"); &x * &x }, "x*x");
    check({ let x = v("x"); &x + &x + &x - 3.0 * &x }, "x + x + x - 3*x");
    check(v("x") * v("y") - v("y") * v("x"), "x*y - y*x");
    check(v("y") * v("x") - v("x") * v("y") + v("b") + v("a") - (v("a") + v("b")), "y*x - x*y + b + a - (a + b)");
    check((v("a") + v("b")) + (v("c") + v("a")), "(a + b) + (c + a)");
    check((v("x") + 1.0) - 2.0 * (v("x") - 1.0), "(x + 1) - 2*(x - 1)");
    check(2.0 * (3.0 * v("x").powi(2)), "2*(3*x^2)");
    check({ let mut f = v("x"); f += 1.0; f *= v("y"); f -= 2.0; f /= v("z"); f }, "((x + 1)*y - 2)/z");
    check({ let mut f = v("x"); let y = v("y"); f += &y; f *= &y; f -= v("z"); f /= &y; f }, "((x + y)*y - z)/y");
}

#[test]
#[rustfmt::skip]
fn powers_build_what_the_parser_builds() {
    check(v("x").powi(2) * v("y") * v("x").powi(3), "x^2*y*x^3");
    check(v("x").powi(1), "x^1");
    check(v("x").powi(0), "x^0");
    check(v("x").powi(-2), "x^-2");
    check(v("x").pow(0.5), "x^0.5");
    check(v("x").sqrt(), "sqrt(x)");
    check(v("x").pow(v("y")), "x^y");
    check(v("x").pow(v("y") + 1.0), "x^(y + 1)");
    check({ let x = v("x"); x.pow(&x) }, "x^x");
    check(v("x").powi(2).powi(3), "(x^2)^3");
    check(v("x").powi(2).pow(0.5), "(x^2)^0.5");
    check((4.0 * v("y")).pow(0.5) + 3.0 / (2.0 * v("x")), "(4*y)^0.5 + 3/(2*x)");
    check(n(2.0).pow(10.0) + n(4.0).pow(0.5), "2^10 + 4^0.5");
    check(n(2.0).pow(0.5), "2^0.5");
    check(n(1.0).pow(v("x")), "1^x");
    check(n(0.0).pow(3.0), "0^3");
    check(n(0.0).pow(-1.0), "0^-1");
    check(n(-8.0).pow(1.0 / 3.0), "(-8)^(1/3)");
    check(n(2.0).pow(v("x")), "2^x");
    check(Expr::e().pow(2.0 * v("x")), "e^(2*x)");
    check(v("x").powi(3).nth_diff("x", 2), "diff(x^3, x, 2)");
}

#[test]
#[rustfmt::skip]
fn functions_and_constants_build_what_the_parser_builds() {
    check(v("x").exp().log(), "log(exp(x))");
    check(v("x").log().exp(), "exp(log(x))");
    check(v("x").ln(), "ln(x)");
    check(Expr::e().log(), "log(e)");
    check(n(1.0).sin(), "sin(1)");
    check(n(0.0).exp() + n(0.0).cos(), "exp(0) + cos(0)");
    check(2.0 * Expr::pi() * v("x"), "2*pi*x");
    check(Expr::pi().sin(), "sin(pi)");
    check(v("x").sin().powi(2) + v("x").cos().powi(2), "sin(x)^2 + cos(x)^2");
    check(v("x").tan() * v("y").atan() - v("z").tanh(), "tan(x)*atan(y) - tanh(z)");
    check(v("x").asin() + v("y").acos(), "asin(x) + acos(y)");
    check(v("x").sinh() / v("y").cosh(), "sinh(x)/cosh(y)");
    check(v("x").abs().sign() + v("y").relu().step(), "sign(abs(x)) + step(relu(y))");
    check(v("x").sigmoid() * v("y").softplus(), "sigmoid(x)*softplus(y)");
    check(v("x").sqrt() * v("y").log(), "sqrt(x)*log(y)");
    check((v("x") * v("y")).sin().diff("x"), "diff(sin(x*y), x)");
}

#[test]
#[rustfmt::skip]
fn undefined_constants_fail_as_parsed_ones_do() {
    check((v("x") - v("x")) * n(-1.0).log() + 1.0 / n(0.0) - 1.0 / n(0.0), "(x - x)*log(-1) + 1/0 - 1/0");
    check(n(-1.0).log(), "log(-1)");
    check(n(0.0).log(), "log(0)");
    check(n(-1.0).sqrt(), "sqrt(-1)");
    check(n(2.0).asin(), "asin(2)");
    check(n(1000.0).exp(), "exp(1000)");
    check(n(1e308) * 10.0, "1e308*10");
    check(0.0 * n(-1.0).log(), "0*log(-1)");
    check(n(-1.0).log().exp(), "exp(log(-1))");
    check(v("x") + n(0.0) / n(0.0), "x + 0/0");
    check(v("x").log() + v("y").acos(), "log(x) + acos(y)");
    check(v("z").pow(v("y")), "z^y");
}

#[test]
#[rustfmt::skip]
fn sums_and_products_of_iterators_are_one_node() {
    check(Expr::sum([v("x"), v("y"), -v("z"), n(2.0)]), "x + y - z + 2");
    check(Expr::sum(Vec::<Expr>::new()), "0");
    check(Expr::sum([v("x")]), "x");
    check(Expr::product([v("x"), v("y").sin(), n(2.0)]), "x*sin(y)*2");
    check(Expr::product(Vec::<Expr>::new()), "1");
    check(Expr::product([v("x"), v("y").powi(-1)]), "x/y");
    check([v("x"), v("y"), v("z")].iter().sum(), "x + y + z");
    check([v("x"), v("y"), v("z")].into_iter().sum(), "x + y + z");
    check([v("x"), v("y"), v("z")].iter().product(), "x*y*z");
    check([v("x"), v("y"), v("z")].into_iter().product(), "x*y*z");
    check({ let x = v("x"); Expr::sum([&x, &x, &x]) }, "x + x + x");
    check({ let x = v("x"); Expr::product([&x, &x, &x]) }, "x*x*x");
    check(Expr::sum((0..100).map(|i| f64::from(i) * v("x"))), &(0..100).map(|i| format!("{i}*x")).collect::<Vec<_>>().join(" + "));
    check(Expr::sum((0..300).map(|i| v(&format!("x{i}")).sin())), &(0..300).map(|i| format!("sin(x{i})")).collect::<Vec<_>>().join(" + "));
    check(Expr::product((0..300).map(|i| v(&format!("x{i}")))), &(0..300).map(|i| format!("x{i}")).collect::<Vec<_>>().join("*"));
    check(Expr::sum((0..500).map(rosenbrock_term)), &(0..500).map(rosenbrock_text).collect::<Vec<_>>().join(" + "));
    check({ let mut f = n(0.0); for i in 0..300 { f += v(&format!("x{i}")) } f }, &(0..300).map(|i| format!("x{i}")).collect::<Vec<_>>().join(" + "));
}

fn rosenbrock_term(i: usize) -> Expr {
    let b = v(&format!("x{}", i + 1)); // named first, as in the text
    let a = v(&format!("x{i}"));
    100.0 * (b - a.powi(2)).powi(2) + (1.0 - a).powi(2)
}

fn rosenbrock_text(i: usize) -> String {
    format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1)
}

#[test]
#[rustfmt::skip]
fn parsed_and_built_expressions_mix() {
    check(Expr::parse("sin(x)").unwrap() + v("y"), "sin(x) + y");
    check(v("x") * Expr::parse("x + y").unwrap(), "x*(x + y)");
    check({ let f = Expr::parse("x^2").unwrap(); &f + f.var_in("y") }, "x^2 + y");
    check({ let f = Expr::parse("x^2").unwrap(); &f * f.num_in(3.0) }, "x^2*3");
    check({ let f = Expr::parse("x*y").unwrap(); f.var_in("x") * &f - &f * f.var_in("x") }, "x*y*x - x*y*x");
    check(Expr::sum([v("x"), v("y"), Expr::parse("z").unwrap(), Expr::parse("x + y").unwrap()]), "x + y + z + (x + y)");
    check(std::thread::spawn(|| v("x") + 1.0).join().unwrap() * v("y"), "(x + 1)*y");
}

/// An expression tree, to be built in code and written as text.
#[derive(Debug, Clone)]
enum Tree {
    Var(&'static str),
    Num(f64),
    Pi,
    Neg(Box<Tree>),
    Bin(char, Box<Tree>, Box<Tree>),
    /// An operator with a number on the left (`true`) or the right.
    WithNum(char, bool, f64, Box<Tree>),
    Powi(Box<Tree>, i32),
    Func(&'static str, Box<Tree>),
    Sum(Vec<Tree>),
    Product(Vec<Tree>),
}

const FUNCTIONS: &[&str] = &[
    "exp", "log", "ln", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "abs",
    "sigmoid", "softplus", "relu", "step", "sign",
];

impl Tree {
    fn text(&self) -> String {
        match self {
            Tree::Var(name) => (*name).to_owned(),
            Tree::Num(x) => format!("({x})"),
            Tree::Pi => "pi".to_owned(),
            Tree::Neg(a) => format!("(-{})", a.text()),
            Tree::Bin('^', a, b) => format!("(({})^({}))", a.text(), b.text()),
            Tree::Bin(op, a, b) => format!("({} {op} {})", a.text(), b.text()),
            Tree::WithNum(op, true, x, a) => format!("(({x}) {op} {})", a.text()),
            Tree::WithNum(op, false, x, a) => format!("({} {op} ({x}))", a.text()),
            Tree::Powi(a, k) => format!("(({})^({k}))", a.text()),
            Tree::Func(f, a) => format!("{f}({})", a.text()),
            Tree::Sum(ts) if ts.is_empty() => "0".to_owned(),
            Tree::Product(ts) if ts.is_empty() => "1".to_owned(),
            Tree::Sum(ts) => format!("({})", ts.iter().map(Tree::text).collect::<Vec<_>>().join(" + ")),
            Tree::Product(ts) => format!("({})", ts.iter().map(Tree::text).collect::<Vec<_>>().join("*")),
        }
    }

    fn build(&self) -> Expr {
        match self {
            Tree::Var(name) => Expr::var(name),
            Tree::Num(x) => Expr::num(*x),
            Tree::Pi => Expr::pi(),
            Tree::Neg(a) => -a.build(),
            Tree::Bin(op, a, b) => {
                let (a, b) = (a.build(), b.build());
                match op {
                    '+' => a + b,
                    '-' => &a - b,
                    '*' => a * &b,
                    '/' => &a / &b,
                    _ => a.pow(b),
                }
            }
            Tree::WithNum(op, left, x, a) => {
                let a = a.build();
                match (op, left) {
                    ('+', true) => *x + a,
                    ('-', true) => *x - &a,
                    ('*', true) => *x * a,
                    ('/', true) => *x / &a,
                    ('+', false) => &a + *x,
                    ('-', false) => a - *x,
                    ('*', false) => &a * *x,
                    ('/', false) => a / *x,
                    _ => a.pow(*x),
                }
            }
            Tree::Powi(a, k) => a.build().powi(*k),
            Tree::Func(f, a) => {
                let a = a.build();
                match *f {
                    "exp" => a.exp(),
                    "log" => a.log(),
                    "ln" => a.ln(),
                    "sqrt" => a.sqrt(),
                    "sin" => a.sin(),
                    "cos" => a.cos(),
                    "tan" => a.tan(),
                    "asin" => a.asin(),
                    "acos" => a.acos(),
                    "atan" => a.atan(),
                    "sinh" => a.sinh(),
                    "cosh" => a.cosh(),
                    "tanh" => a.tanh(),
                    "abs" => a.abs(),
                    "sigmoid" => a.sigmoid(),
                    "softplus" => a.softplus(),
                    "relu" => a.relu(),
                    "step" => a.step(),
                    _ => a.sign(),
                }
            }
            Tree::Sum(ts) => ts.iter().map(Tree::build).sum(),
            Tree::Product(ts) => ts.iter().map(Tree::build).product(),
        }
    }
}

/// Which chain a node continues when it is the left operand of an operator: `+ -` (1) or
/// `* /` (2); 0 for neither.
fn family(t: &Tree) -> u8 {
    match t {
        Tree::Bin('+' | '-', ..) | Tree::WithNum('+' | '-', ..) => 1,
        Tree::Sum(ts) if ts.len() > 1 => 1,
        Tree::Bin('*' | '/', ..) | Tree::WithNum('*' | '/', ..) => 2,
        Tree::Product(ts) if ts.len() > 1 => 2,
        Tree::Sum(ts) | Tree::Product(ts) => ts.first().map_or(0, family),
        _ => 0,
    }
}

impl Tree {
    /// Whether every chain of the text is one call of the builder: no left operand of `+ -`
    /// (or `* /`) is itself one, which the parser would merge into its parent's chain (parentheses
    /// do not separate chains). Then building in code makes the parser's calls in the
    /// parser's order, and the result is the same node: it evaluates to the same bits. A
    /// merged chain makes the same canonical form, but its like terms and factors are combined
    /// later, after more nodes were built, so the arguments of a sum or product can be stored
    /// (and added or multiplied) in another order: the value may differ in the last bits.
    fn aligned(&self) -> bool {
        let left = |op: &char, a: &Tree| match op {
            '+' | '-' => family(a) != 1,
            '*' | '/' => family(a) != 2,
            _ => true,
        };
        match self {
            Tree::Var(_) | Tree::Num(_) | Tree::Pi => true,
            Tree::Neg(a) | Tree::Powi(a, _) | Tree::Func(_, a) => a.aligned(),
            Tree::Bin(op, a, b) => left(op, a) && a.aligned() && b.aligned(),
            Tree::WithNum(op, on_left, _, a) => (*on_left || left(op, a)) && a.aligned(),
            Tree::Sum(ts) => ts.first().is_none_or(|a| family(a) != 1) && ts.iter().all(Tree::aligned),
            Tree::Product(ts) => ts.first().is_none_or(|a| family(a) != 2) && ts.iter().all(Tree::aligned),
        }
    }
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![(0u32..6).prop_map(f64::from), (-30i32..30).prop_map(|k| f64::from(k) / 10.0)]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        prop::sample::select(&["x", "y", "z"][..]).prop_map(Tree::Var),
        number().prop_map(Tree::Num),
        Just(Tree::Pi),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let op = prop::sample::select(&['+', '-', '*', '/', '^'][..]);
        prop_oneof![
            (op.clone(), inner.clone(), inner.clone()).prop_map(|(o, a, b)| Tree::Bin(
                o,
                Box::new(a),
                Box::new(b)
            )),
            (op, any::<bool>(), number(), inner.clone()).prop_map(|(o, left, x, a)| Tree::WithNum(
                o,
                left && o != '^',
                x,
                Box::new(a)
            )),
            inner.clone().prop_map(|a| Tree::Neg(Box::new(a))),
            (inner.clone(), -3i32..5).prop_map(|(a, k)| Tree::Powi(Box::new(a), k)),
            (prop::sample::select(FUNCTIONS), inner.clone()).prop_map(|(f, a)| Tree::Func(f, Box::new(a))),
            prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::Sum),
            prop::collection::vec(inner, 0..5).prop_map(Tree::Product),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Random trees built in code print as their text parsed and evaluate to the same value
    /// (the same bits when every chain of the text is one builder call, see
    /// `Tree::aligned`; else within rounding) or fail with the same error.
    #[test]
    fn random_trees_build_what_the_parser_builds(t in tree(), p in [-3.0f64..3.0, -3.0f64..3.0, -3.0f64..3.0]) {
        let text = t.text();
        let built = t.build();
        let parsed = Expr::parse(&text).unwrap();
        prop_assert_eq!(built.to_string(), parsed.to_string(), "{}", text);
        let at = [("x", p[0]), ("y", p[1]), ("z", p[2])];
        match (built.eval(&at), parsed.eval(&at)) {
            (Ok(b), Ok(q)) if !t.aligned() => prop_assert!((b - q).abs() <= 1e-12 * b.abs().max(q.abs()).max(1.0), "{}: {} vs {}", text, b, q),
            (b, q) => prop_assert_eq!(b, q, "{}", text),
        }
    }
}
