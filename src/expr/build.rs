//! Expressions built in code: [`Expr::var`] and [`Expr::num`], the operators of `std::ops`
//! (`+ - * /` and unary `-`, between `Expr`, `&Expr` and `f64` on either side, and their
//! `+=` forms), [`Expr::pow`], [`Expr::powi`], a method per built-in function (`x.sin()`,
//! `x.sigmoid()`, ...), and sums and products of iterators ([`Expr::sum`],
//! [`Expr::product`], `impl Sum`, `impl Product`).
//!
//! **The same graph as parsing.** Every builder calls the simplifying constructor that
//! lowering calls for the same text (`graph::lower`): `a - b` is `a + (-1)*b` (for a finite
//! number `b`, `a + (-b)`, the node `(-1)*b` folds to), `a / b` is `a * b^-1`, `-a` is
//! `(-1)*a`, `sqrt(a)` is `a^0.5`, and a function is `Graph::func`. So a
//! built expression is canonical and hash-consed like a parsed one, `x - x` is `0`, and it
//! prints as the equivalent text does when parsed (`tests/build.rs` checks a table of cases
//! and random expression trees, printed and evaluated both ways). There is no text in
//! between.
//!
//! **Which graph.** An `Expr` is a node of a graph behind a mutex, and combining two
//! expressions of one graph costs one lock and the new nodes. [`Expr::var`], [`Expr::num`],
//! [`Expr::pi`] and [`Expr::e`] build in the calling thread's *default graph*, so `x + y`
//! with both made by `Expr::var` copies nothing.
//!
//! **Invariant:** on one thread, every expression built from `Expr::var`, `Expr::num`,
//! `Expr::pi` and `Expr::e` lives in one graph for as long as any expression of that graph is
//! alive. The thread holds the graph weakly: once the last expression of it is dropped the
//! graph is freed, and the next `Expr::var` starts a fresh one (so memory does not grow with
//! expressions long dropped, and a program that builds one formula at a time starts each in
//! an empty graph).
//!
//! To build in another expression's graph (one from [`Expr::parse`], or one that must stay
//! apart from the default graph), use [`Expr::var_in`] and [`Expr::num_in`]: parsing and
//! building then mix without copying. Expressions of different graphs (another thread's, or
//! parsed ones) still combine: the expressions of the graph with fewer nodes are copied into
//! the one with more (through the simplifying constructors, by `graph::lower::import`, as
//! [`Expr::substitute_all`] does), and the result lives there. No two graphs are ever locked
//! at once, so threads combining expressions cannot deadlock.
//!
//! **Sums of many terms.** [`Expr::sum`] (and `impl Sum`) builds one n-ary node in one call,
//! linear in the number of terms: the node the parser builds for `t1 + t2 + ... + tn`, as
//! [`Expr::product`] is the parser's `f1*f2*...*fn`. A loop of `acc = acc + term` (or
//! `acc += term`) is linear too, since nested sums of more than `FLATTEN_LIMIT` (64) terms are
//! kept as one argument instead of being flattened again, but the result is a chain of nested
//! sums that has the same value and printed form and is not the parser's node: use
//! [`Expr::sum`] for long sums.
//!
//! **Numbers that are not finite.** The parser cannot write them. [`Expr::num`] accepts any
//! `f64` (an operator cannot return an error): NaN and ±infinity become *undefined
//! constants*, like `log(-1)` (see `graph::simplify`, rule 5). No simplification makes them
//! vanish (`0*Expr::num(f64::NAN)` stays), they print as `NaN`, `inf` and `-inf` (which do
//! not read back), and evaluating an expression that holds one fails, naming it. Compiled
//! code, which checks no domains, computes with them as IEEE numbers.
//!
//! **No size limit.** Building in code has no limit, as [`Expr::diff`] has none: the program
//! decides what it builds. The node budget the fallible routes keep to
//! ([`Expr::try_diff`], [`compile_gradient`](crate::compile_gradient), ...) grows with what
//! was built instead, as a parsed graph's grows with its text: after every builder call the
//! budget is at least [`HEADROOM`] times the graph's size, so a built formula has room for its
//! gradient while a derivative that swells is still stopped.
//!
//! Names are not checked: `Expr::var("pi")` is a variable named `pi`, not the constant
//! ([`Expr::pi`]). Expressions whose printed form should read back use names the parser reads
//! as variables (identifiers other than `pi`, `e` and the built-in functions).

use std::borrow::Borrow;
use std::cell::RefCell;
use std::iter::{Product, Sum};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use hashbrown::HashMap;

use super::Expr;
use crate::graph::node::Constant;
use crate::graph::{Func, Graph, Id};

/// After every builder call the graph's node budget is at least this many times its size
/// (see the module doc): room for a gradient, two or three times the function, as a parsed
/// graph's one operation per byte of text gives.
const HEADROOM: usize = 4;

thread_local! {
    /// The calling thread's default graph, held weakly (see the module doc).
    static DEFAULT: RefCell<Weak<Mutex<Graph>>> = const { RefCell::new(Weak::new()) };
}

/// The calling thread's default graph, started if it is not alive. A thread whose
/// thread-locals are being destroyed gets a graph of its own.
fn default_graph() -> Arc<Mutex<Graph>> {
    let fresh = || Arc::new(Mutex::new(Graph::new()));
    DEFAULT
        .try_with(|d| {
            let mut d = d.borrow_mut();
            d.upgrade().unwrap_or_else(|| {
                let g = fresh();
                *d = Arc::downgrade(&g);
                g
            })
        })
        .unwrap_or_else(|_| fresh())
}

fn lock(g: &Mutex<Graph>) -> MutexGuard<'_, Graph> {
    // The graph is append-only, so a panic elsewhere cannot leave it half-changed.
    g.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the node budget at [`HEADROOM`] times the graph's size.
fn grew(g: &mut Graph) {
    let want = g.size().saturating_mul(HEADROOM);
    if want > g.budget() {
        g.set_budget(want);
    }
}

/// A new expression: `f` builds its node in `graph`.
fn build_in(graph: Arc<Mutex<Graph>>, f: impl FnOnce(&mut Graph) -> Id) -> Expr {
    let id = {
        let mut g = lock(&graph);
        let id = f(&mut g);
        grew(&mut g);
        id
    };
    Expr { graph, id }
}

mod private {
    /// What an [`Operand`](super::Operand) is.
    pub enum Arg<'a> {
        Expr(&'a crate::Expr),
        Num(f64),
    }

    pub trait Sealed {
        fn arg(&self) -> Arg<'_>;
    }
}

use private::Arg;

/// What [`Expr::pow`] (like the operators) takes: an [`Expr`], a `&Expr` or an `f64`. Sealed:
/// these three are all.
///
/// ```
/// use symdiff::Expr;
/// let x = Expr::var("x");
/// assert_eq!(x.pow(2.0).to_string(), "x^2");
/// assert_eq!(x.pow(&x).to_string(), "x^x");
/// assert_eq!(x.pow(x.clone() + 1.0).to_string(), "x^(x + 1)");
/// ```
pub trait Operand: private::Sealed {}

impl private::Sealed for Expr {
    fn arg(&self) -> Arg<'_> {
        Arg::Expr(self)
    }
}
impl private::Sealed for &Expr {
    fn arg(&self) -> Arg<'_> {
        Arg::Expr(self)
    }
}
impl private::Sealed for f64 {
    fn arg(&self) -> Arg<'_> {
        Arg::Num(*self)
    }
}
impl Operand for Expr {}
impl Operand for &Expr {}
impl Operand for f64 {}

/// `f` over the nodes of `a` and `b`, in one graph.
fn binary(a: Arg<'_>, b: Arg<'_>, f: impl FnOnce(&mut Graph, Id, Id) -> Id) -> Expr {
    match (a, b) {
        (Arg::Expr(x), Arg::Expr(y)) if Arc::ptr_eq(&x.graph, &y.graph) => {
            build_in(Arc::clone(&x.graph), |g| f(g, x.id, y.id))
        }
        (Arg::Expr(x), Arg::Expr(y)) => {
            // Two items: never `None`.
            combine([x, y], |g, ids| f(g, ids[0], ids[1])).unwrap_or_else(|| x.clone())
        }
        (Arg::Expr(x), Arg::Num(n)) => build_in(Arc::clone(&x.graph), |g| {
            let n = g.num(n);
            f(g, x.id, n)
        }),
        (Arg::Num(n), Arg::Expr(y)) => build_in(Arc::clone(&y.graph), |g| {
            let n = g.num(n);
            f(g, n, y.id)
        }),
        (Arg::Num(m), Arg::Num(n)) => build_in(default_graph(), |g| {
            let (m, n) = (g.num(m), g.num(n));
            f(g, m, n)
        }),
    }
}

/// `f` over the nodes of `items`, in one graph: the one they share, or else the largest of
/// theirs, into which the others' are copied (each graph's expressions in one walk, so what
/// they share is copied once). `None` for no items. Linear in the items (and the copies).
fn combine<T: Borrow<Expr>>(
    items: impl IntoIterator<Item = T>,
    f: impl FnOnce(&mut Graph, &[Id]) -> Id,
) -> Option<Expr> {
    let mut graphs: Vec<Arc<Mutex<Graph>>> = Vec::new();
    // The position in `graphs` of each graph after the first, by address.
    let mut index: HashMap<*const Mutex<Graph>, usize> = HashMap::new();
    let mut ids: Vec<Id> = Vec::new();
    // Which graph each item is in; empty while there is one.
    let mut which: Vec<usize> = Vec::new();
    for item in items {
        let e = item.borrow();
        let k = if graphs.first().is_some_and(|g| Arc::ptr_eq(g, &e.graph)) {
            0
        } else if graphs.is_empty() {
            graphs.push(Arc::clone(&e.graph));
            0
        } else {
            *index.entry(Arc::as_ptr(&e.graph)).or_insert_with(|| {
                graphs.push(Arc::clone(&e.graph));
                graphs.len() - 1
            })
        };
        if k != 0 && which.is_empty() {
            which.resize(ids.len(), 0);
        }
        if !which.is_empty() {
            which.push(k);
        }
        ids.push(e.id);
    }
    if graphs.len() > 1 {
        // The largest graph is the home; every other graph's items are copied out (each
        // into a graph of its own, under that graph's lock only), then into the home.
        let sizes: Vec<usize> = graphs.iter().map(|g| lock(g).len()).collect();
        let home = (0..graphs.len()).max_by_key(|&k| (sizes[k], usize::MAX - k)).unwrap_or(0);
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); graphs.len()];
        for (p, &k) in which.iter().enumerate() {
            positions[k].push(p);
        }
        let mut copies = Vec::new();
        for (k, graph) in graphs.iter().enumerate() {
            if k == home {
                continue;
            }
            let roots: Vec<Id> = positions[k].iter().map(|&p| ids[p]).collect();
            let mut copy = Graph::new();
            let there = crate::graph::lower::import_all(&mut copy, &lock(graph), &roots);
            copies.push((k, copy, there));
        }
        graphs.swap(0, home);
        let graph = Arc::clone(&graphs[0]);
        let mut g = lock(&graph);
        for (k, copy, roots) in copies {
            let there = crate::graph::lower::import_all(&mut g, &copy, &roots);
            for (&p, id) in positions[k].iter().zip(there) {
                ids[p] = id;
            }
        }
        drop(g);
        return Some(build_in(graph, |g| f(g, &ids)));
    }
    let graph = graphs.pop()?;
    Some(build_in(graph, |g| f(g, &ids)))
}

impl Expr {
    /// The variable `name`, in the calling thread's default graph (see [`Expr`]: "Built in
    /// code").
    ///
    /// ```
    /// use symdiff::Expr;
    /// let (x, y) = (Expr::var("x"), Expr::var("y"));
    /// let f = (&x + 1.0) * 2.0 - &y / &x;
    /// assert_eq!(f.to_string(), Expr::parse("(x + 1)*2 - y/x")?.to_string());
    /// assert_eq!(f.eval(&[("x", 2.0), ("y", 4.0)])?, 4.0);
    /// assert_eq!((&x - &x).to_string(), "0");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn var(name: &str) -> Expr {
        build_in(default_graph(), |g| g.var(name))
    }

    /// The number `x`, in the calling thread's default graph. NaN and ±infinity, which no
    /// formula can write, are undefined constants: evaluating them fails.
    ///
    /// ```
    /// use symdiff::Expr;
    /// assert_eq!(Expr::num(2.5).to_string(), "2.5");
    /// assert_eq!((Expr::var("x") * Expr::num(0.0)).to_string(), "0");
    /// let nan = Expr::num(f64::NAN);
    /// assert_eq!((0.0 * &nan).to_string(), "0*NaN");
    /// assert!(nan.eval(&[]).unwrap_err().to_string().contains("not a number"));
    /// ```
    pub fn num(x: f64) -> Expr {
        build_in(default_graph(), |g| g.num(x))
    }

    /// The constant `pi`, as the parser reads it.
    ///
    /// ```
    /// use symdiff::Expr;
    /// assert_eq!((2.0 * Expr::pi()).to_string(), "2*pi");
    /// assert_eq!(Expr::pi().sin().eval(&[])?.abs() < 1e-15, true);
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn pi() -> Expr {
        build_in(default_graph(), |g| g.constant(Constant::Pi))
    }

    /// The constant `e`, as the parser reads it.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// assert_eq!(Expr::e().pow(&x).to_string(), "exp(x)");
    /// assert_eq!(Expr::e().log().to_string(), "1");
    /// ```
    pub fn e() -> Expr {
        build_in(default_graph(), |g| g.constant(Constant::E))
    }

    /// The variable `name` in `self`'s graph, so that parsed and built expressions mix
    /// without copying.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let f = Expr::parse("x^2 + y")?;
    /// let z = f.var_in("z");
    /// let g = &f * &z;
    /// assert_eq!(g.to_string(), "z*(x^2 + y)");
    /// assert_eq!(g.diff("z").to_string(), f.to_string());
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn var_in(&self, name: &str) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.var(name))
    }

    /// The number `x` in `self`'s graph (see [`var_in`](Self::var_in) and [`num`](Self::num)).
    ///
    /// ```
    /// use symdiff::Expr;
    /// let f = Expr::parse("sin(x)")?;
    /// let half = f.num_in(0.5);
    /// assert_eq!((&f * &half).to_string(), "sin(x)/2");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn num_in(&self, x: f64) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.num(x))
    }

    /// `self ^ exp`, with an expression or a number for `exp`; as the parser's `^` and `pow`.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// assert_eq!(x.pow(0.5).to_string(), "sqrt(x)");
    /// assert_eq!(Expr::num(2.0).pow(&x).to_string(), Expr::parse("2^x")?.to_string());
    /// assert!(Expr::num(0.0).pow(-1.0).eval(&[]).is_err()); // division by zero, as `0^-1`
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn pow(&self, exp: impl Operand) -> Expr {
        binary(Arg::Expr(self), private::Sealed::arg(&exp), |g, a, b| g.pow(a, b))
    }

    /// `self ^ n` for a whole number `n`.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// assert_eq!(x.powi(3).diff("x").to_string(), "3*x^2");
    /// assert_eq!((x.powi(2) * x.powi(-2)).to_string(), "1");
    /// ```
    pub fn powi(&self, n: i32) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.powi(self.id, f64::from(n)))
    }

    /// `sqrt(self)`, which is `self^0.5` (the parser's `sqrt`); negative arguments fail at
    /// evaluation as they do parsed.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// assert_eq!(x.sqrt().to_string(), "sqrt(x)");
    /// assert_eq!(x.sqrt().eval(&[("x", -1.0)]), Expr::parse("sqrt(x)")?.eval(&[("x", -1.0)]));
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn sqrt(&self) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.powi(self.id, 0.5))
    }

    /// `ln(self)`: the natural logarithm, [`log`](Self::log) (the parser's `ln` too).
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// assert_eq!(x.ln().to_string(), "log(x)");
    /// ```
    pub fn ln(&self) -> Expr {
        self.log()
    }

    fn func(&self, f: Func) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.func(f, self.id))
    }

    /// The sum of `terms` as one n-ary node (the parser's node for `t1 + t2 + ... + tn`), in
    /// time linear in their number; `0` for none. Terms from several graphs are combined in
    /// the largest.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x: Vec<Expr> = (0..4).map(|i| Expr::var(&format!("x{i}"))).collect();
    /// let f = Expr::sum((0..3).map(|i| 100.0 * (&x[i + 1] - x[i].powi(2)).powi(2) + (1.0 - &x[i]).powi(2)));
    /// let text = "100*(x1 - x0^2)^2 + (1 - x0)^2 + 100*(x2 - x1^2)^2 + (1 - x1)^2 + 100*(x3 - x2^2)^2 + (1 - x2)^2";
    /// assert_eq!(f.to_string(), Expr::parse(text)?.to_string());
    /// assert_eq!(Expr::sum(Vec::<Expr>::new()).to_string(), "0");
    /// let total: Expr = x.iter().sum();
    /// assert_eq!(total.to_string(), "x0 + x1 + x2 + x3");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn sum<T: Borrow<Expr>>(terms: impl IntoIterator<Item = T>) -> Expr {
        combine(terms, |g, ids| g.add(ids)).unwrap_or_else(|| Expr::num(0.0))
    }

    /// The product of `factors` as one n-ary node (the parser's `f1*f2*...*fn`), in linear
    /// time; `1` for none.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let x = Expr::var("x");
    /// let f = Expr::product([x.clone(), x.sin(), 2.0 * &x]);
    /// assert_eq!(f.to_string(), Expr::parse("x*sin(x)*2*x")?.to_string());
    /// assert_eq!(Expr::product(Vec::<Expr>::new()).to_string(), "1");
    /// let p: Expr = (1..=4).map(|k| Expr::num(k as f64)).product();
    /// assert_eq!(p.to_string(), "24");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn product<T: Borrow<Expr>>(factors: impl IntoIterator<Item = T>) -> Expr {
        combine(factors, |g, ids| g.mul(ids)).unwrap_or_else(|| Expr::num(1.0))
    }
}

/// A method per function of the function table (`graph::func::FUNCS`), each with an example
/// that checks it against the parser.
macro_rules! functions {
    ($($name:ident => $func:ident, $arg:literal;)*) => {
        impl Expr {
            $(
                #[doc = concat!("`", stringify!($name), "(self)`, as the parser's `", stringify!($name),
                    "`; outside its domain evaluation fails as it does parsed.\n\n```\nuse symdiff::Expr;\n",
                    "let x = Expr::var(\"x\");\nlet parsed = Expr::parse(\"", stringify!($name), "(x)\")?;\n",
                    "assert_eq!(x.", stringify!($name), "().to_string(), parsed.to_string());\n",
                    "let at = [(\"x\", ", stringify!($arg), ")];\n",
                    "assert_eq!(x.", stringify!($name), "().eval(&at), parsed.eval(&at));\n",
                    "# Ok::<(), symdiff::Error>(())\n```")]
                pub fn $name(&self) -> Expr {
                    self.func(Func::$func)
                }
            )*
        }
    };
}

functions! {
    exp => Exp, 0.5;
    log => Log, -1.0;
    sin => Sin, 0.5;
    cos => Cos, 0.5;
    tan => Tan, 0.5;
    asin => Asin, 2.0;
    acos => Acos, 2.0;
    atan => Atan, 0.5;
    sinh => Sinh, 0.5;
    cosh => Cosh, 0.5;
    tanh => Tanh, 0.5;
    abs => Abs, -0.5;
    sigmoid => Sigmoid, 0.5;
    softplus => Softplus, 0.5;
    relu => Relu, -0.5;
    step => Step, 0.5;
    sign => Sign, -0.5;
}

/// `a - b`. Subtracting a finite number `n` is adding `-n`, which is what `a + (-1)*n` folds
/// to: built directly, so that `x - c` for a million different `c` does not also leave a
/// million unused `c` nodes behind (it is the same node either way).
fn subtract(a: Arg<'_>, b: Arg<'_>) -> Expr {
    match b {
        Arg::Num(n) if n.is_finite() => binary(a, Arg::Num(-n), |g, a, b| g.add(&[a, b])),
        _ => binary(a, b, |g, a, b| g.sub(a, b)),
    }
}

/// `impl Op<R> for L` for every pair of `Expr`, `&Expr` and `f64` with an `Expr` on one
/// side, and `OpAssign` for `Expr`, all through `$combine` (`binary` with a constructor,
/// or [`subtract`]).
macro_rules! operator {
    ($Op:ident, $op:ident, $OpAssign:ident, $op_assign:ident, $combine:expr) => {
        operator!(@one $Op, $op, Expr, Expr, $combine);
        operator!(@one $Op, $op, Expr, &Expr, $combine);
        operator!(@one $Op, $op, &Expr, Expr, $combine);
        operator!(@one $Op, $op, &Expr, &Expr, $combine);
        operator!(@one $Op, $op, Expr, f64, $combine);
        operator!(@one $Op, $op, &Expr, f64, $combine);
        operator!(@one $Op, $op, f64, Expr, $combine);
        operator!(@one $Op, $op, f64, &Expr, $combine);
        operator!(@assign $OpAssign, $op_assign, Expr, $combine);
        operator!(@assign $OpAssign, $op_assign, &Expr, $combine);
        operator!(@assign $OpAssign, $op_assign, f64, $combine);
    };
    (@one $Op:ident, $op:ident, $L:ty, $R:ty, $combine:expr) => {
        impl $Op<$R> for $L {
            type Output = Expr;
            fn $op(self, rhs: $R) -> Expr {
                $combine(private::Sealed::arg(&self), private::Sealed::arg(&rhs))
            }
        }
    };
    (@assign $OpAssign:ident, $op_assign:ident, $R:ty, $combine:expr) => {
        impl $OpAssign<$R> for Expr {
            fn $op_assign(&mut self, rhs: $R) {
                *self = $combine(Arg::Expr(&*self), private::Sealed::arg(&rhs));
            }
        }
    };
}

operator!(Add, add, AddAssign, add_assign, |a, b| binary(a, b, |g: &mut Graph, a, b| g.add(&[a, b])));
operator!(Sub, sub, SubAssign, sub_assign, subtract);
operator!(Mul, mul, MulAssign, mul_assign, |a, b| binary(a, b, |g: &mut Graph, a, b| g.mul(&[a, b])));
operator!(Div, div, DivAssign, div_assign, |a, b| binary(a, b, |g: &mut Graph, a, b| g.div_by(a, b)));

impl Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        -&self
    }
}

impl Neg for &Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        build_in(Arc::clone(&self.graph), |g| g.neg(self.id))
    }
}

impl From<f64> for Expr {
    /// [`Expr::num`].
    fn from(x: f64) -> Expr {
        Expr::num(x)
    }
}

impl Sum for Expr {
    /// [`Expr::sum`]: one n-ary node, linear time.
    fn sum<I: Iterator<Item = Expr>>(terms: I) -> Expr {
        Expr::sum(terms)
    }
}

impl<'a> Sum<&'a Expr> for Expr {
    /// [`Expr::sum`]: one n-ary node, linear time.
    fn sum<I: Iterator<Item = &'a Expr>>(terms: I) -> Expr {
        Expr::sum(terms)
    }
}

impl Product for Expr {
    /// [`Expr::product`]: one n-ary node, linear time.
    fn product<I: Iterator<Item = Expr>>(factors: I) -> Expr {
        Expr::product(factors)
    }
}

impl<'a> Product<&'a Expr> for Expr {
    /// [`Expr::product`]: one n-ary node, linear time.
    fn product<I: Iterator<Item = &'a Expr>>(factors: I) -> Expr {
        Expr::product(factors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::func::FUNCS;
    use crate::graph::lower::BUILTINS;

    /// `e` prints as `printed` and evaluating it (at `x = 1`) fails with `kind`.
    #[track_caller]
    fn check(e: Expr, printed: &str, kind: crate::EvalErrorKind) {
        assert_eq!(e.to_string(), printed);
        match e.eval(&[("x", 1.0)]) {
            Err(crate::Error::Eval(err)) => assert_eq!(err.kind, kind, "{printed}: {err}"),
            other => panic!("{printed}: {other:?}"),
        }
    }

    /// Numbers that are not finite are constants without a value (rule 5): kept as written,
    /// printed as Rust prints them, and an error wherever they are evaluated, derivatives
    /// included.
    #[test]
    fn numbers_that_are_not_finite_have_no_value() {
        use crate::EvalErrorKind::{NotANumber, Overflow};
        let (nan, inf, x) = (f64::NAN, f64::INFINITY, || Expr::var("x"));
        check(Expr::num(nan), "NaN", NotANumber);
        check(Expr::num(-nan), "NaN", NotANumber);
        check(Expr::num(inf), "inf", Overflow);
        check(Expr::num(-inf), "-inf", Overflow);
        check(Expr::num(0.0) * Expr::num(nan), "0*NaN", NotANumber);
        check(Expr::num(nan) - Expr::num(nan), "NaN - NaN", NotANumber);
        check(Expr::num(inf) - Expr::num(inf), "inf - inf", Overflow);
        check(Expr::num(nan) / Expr::num(nan), "NaN/NaN", NotANumber);
        check(x() * nan - x() * nan, "x*NaN - x*NaN", NotANumber);
        check(x() + inf, "x + inf", Overflow);
        check(x().pow(nan), "x^NaN", NotANumber);
        check(Expr::num(inf).sin(), "sin(inf)", Overflow);
        check((x().powi(2) * nan).diff("x"), "2*x*NaN", NotANumber);
        check(x().pow(inf).diff("x"), "inf*x^(inf - 1)", Overflow);
        check(Expr::num(nan).diff("x"), "0*NaN", NotANumber);
    }

    /// Compiled code and exported source compute with non-finite numbers as IEEE numbers.
    #[test]
    fn numbers_that_are_not_finite_compile_and_export() {
        let x = Expr::var("x");
        let f = &x * f64::INFINITY + &x * f64::NAN;
        let g = crate::compile_gradient(&f, &["x"]).unwrap();
        let mut grad = [0.0];
        assert!(g.eval(&[1.0], &mut grad).is_nan() && grad[0].is_nan());
        let c = crate::export_c(&f, &["x"], "f").unwrap();
        assert!(c.contains("NAN") && c.contains("INFINITY"), "{c}");
        let rust = crate::export_rust(&f, &["x"], "f").unwrap();
        assert!(rust.contains("f64::NAN") && rust.contains("f64::INFINITY"), "{rust}");
    }

    /// Built-in functions without a method, and why.
    const WITHOUT_METHOD: &[(&str, &str)] = &[
        ("sum", "a tensor reduction: the identity on scalars, and `Expr::sum` sums terms"),
        ("mean", "a tensor reduction: the identity on scalars"),
        ("max", "a tensor reduction: the identity on scalars"),
        ("logsumexp", "a tensor reduction: the identity on scalars"),
        ("transpose", "tensors only"),
        ("logsoftmax", "tensors only"),
        ("onehot", "tensors only"),
    ];

    /// Every built-in function the parser knows has a method that builds what the parser
    /// builds (or is listed in `WITHOUT_METHOD`): a function added to the table without a
    /// method fails here.
    #[test]
    fn every_builtin_function_has_a_method() {
        type Method = fn(&Expr) -> Expr;
        #[rustfmt::skip]
        let methods: &[(&str, &str, Method)] = &[
            ("exp", "exp(x)", Expr::exp), ("log", "log(x)", Expr::log), ("ln", "ln(x)", Expr::ln),
            ("sin", "sin(x)", Expr::sin), ("cos", "cos(x)", Expr::cos), ("tan", "tan(x)", Expr::tan),
            ("asin", "asin(x)", Expr::asin), ("acos", "acos(x)", Expr::acos), ("atan", "atan(x)", Expr::atan),
            ("sinh", "sinh(x)", Expr::sinh), ("cosh", "cosh(x)", Expr::cosh), ("tanh", "tanh(x)", Expr::tanh),
            ("abs", "abs(x)", Expr::abs), ("sigmoid", "sigmoid(x)", Expr::sigmoid),
            ("softplus", "softplus(x)", Expr::softplus), ("relu", "relu(x)", Expr::relu),
            ("step", "step(x)", Expr::step), ("sign", "sign(x)", Expr::sign),
            ("sqrt", "sqrt(x)", Expr::sqrt),
            ("pow", "pow(x, x + 1)", |x| x.pow(x + 1.0)),
            ("diff", "diff(sin(x)^2, x, 2)", |x| x.sin().powi(2).nth_diff("x", 2)),
        ];
        let names = FUNCS.iter().map(|d| d.name).chain(BUILTINS.iter().copied());
        for name in names {
            if let Some((_, text, method)) = methods.iter().find(|m| m.0 == name) {
                let built = method(&Expr::var("x"));
                let parsed = Expr::parse(text).unwrap();
                assert_eq!(built.to_string(), parsed.to_string(), "{name}");
                for x in [-2.0, -0.5, 0.0, 0.5, 2.0] {
                    let at = [("x", x)];
                    assert_eq!(built.eval(&at), parsed.eval(&at), "{name} at {x}");
                }
            } else {
                assert!(
                    WITHOUT_METHOD.iter().any(|w| w.0 == name),
                    "`{name}` is a built-in function without an `Expr` method"
                );
            }
        }
    }

    /// Building keeps the node budget at `HEADROOM` times the graph's size, so the fallible
    /// routes have room for a built formula's gradient; a small graph keeps `NODE_BUDGET`.
    #[test]
    fn the_budget_grows_with_what_is_built() {
        let x = Expr::var("x");
        assert_eq!(x.graph().budget(), crate::NODE_BUDGET);
        x.graph().set_budget(10);
        let f = Expr::sum((0..100).map(|i| (&x - x.var_in(&format!("y{i}"))).powi(2)));
        let (size, budget) = {
            let g = f.graph();
            (g.size(), g.budget())
        };
        assert!(budget >= HEADROOM * size, "{budget} < {HEADROOM} * {size}");
        let vars: Vec<String> = f.variables();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        assert_eq!(f.try_gradient(&vars).unwrap().len(), 101);
    }

    /// The default graph is one per thread while any of its expressions lives, and freed
    /// after the last.
    #[test]
    fn the_default_graph_is_shared_and_freed() {
        let x = Expr::var("x");
        let y = Expr::var("y");
        assert!(x.shares_graph(&y) && x.shares_graph(&(&x + &y)));
        let weak = Arc::downgrade(&x.graph);
        let other = std::thread::spawn(|| Expr::var("x")).join().unwrap();
        assert!(!other.shares_graph(&x));
        drop((x, y));
        assert!(weak.upgrade().is_none(), "the last expression takes the graph with it");
        let fresh = Expr::var("z");
        assert_eq!(fresh.graph().len(), 1);
    }
}
