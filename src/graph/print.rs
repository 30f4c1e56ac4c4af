//! The printer: canonical graphs back to what a person writes, as text or LaTeX.
//!
//! The canonical form stores `a - b` as `a + (-1)*b`, `a/b` as `a * b^-1` and `sqrt(x)` as
//! `x^0.5`; the printer undoes all three, puts numeric coefficients in front, moves negative
//! powers into a denominator, recovers small fractions from their decimals (`0.333…` prints
//! as `1/3`), and writes the fewest parentheses the grammar needs to read it back.
//!
//! Order: terms of a sum by descending polynomial degree, numbers last (`3*x^2 + 4*x + 1`),
//! ties in the order the subexpressions were first built; factors of a product with
//! variables (and their powers) first, by name. A sum that would start with a minus starts
//! with its first positive term instead (`1 - x`, not `-x + 1`).
//!
//! **Size.** A DAG can be exponentially smaller than its tree. When the tree of an expression
//! has more than [`INLINE_LIMIT`] nodes, every shared subexpression is printed once, named
//! (`t1`, `t2`, ...) in a `where` block after the expression, so output stays linear in the DAG.
//!
//! Nothing here recurses: the emitter works from an explicit stack.

use hashbrown::HashMap;

use super::func::Func;
use super::node::{Graph, Id, Op};

/// Output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Text,
    Latex,
}

/// Trees larger than this print with named shared subexpressions.
pub const INLINE_LIMIT: u64 = 4000;

/// How a printed node binds, loosest first; decides parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Sum,
    /// Starts with a unary minus: `-x`, `-2*x`, `-3`.
    Neg,
    Product,
    Power,
    Atom,
}

enum Item {
    Str(&'static str),
    Own(String),
    /// Print a node; `neg` prints it with its sign flipped (for `a - b`).
    Node(Id, bool),
}

/// Prints `root` in `style`.
pub fn print(g: &Graph, root: Id, style: Style) -> String {
    Printer::new(g, &[root], style).render(root)
}

/// Prints `root` with the nodes in `names` (other than `root` itself) written as those names:
/// equations over named intermediates, as `symdiff show` prints a model.
///
/// **Cost.** A print walks only the part of the DAG between its root and the named nodes, so
/// printing a chain of equations, each over the names before it, costs in proportion to the
/// equations, not to the graph below them. An expression whose tree (down to the names) has
/// more than [`INLINE_LIMIT`] nodes prints its shared subexpressions once, in a `where` block,
/// as [`print`] does, so output stays linear in the DAG. A named node orders among the terms
/// of a sum by the polynomial degree of its own expression when it was printed with these
/// names (`names` records it), and like a variable otherwise.
pub fn print_named(g: &Graph, root: Id, style: Style, names: &mut Names) -> String {
    // The nodes between `root` and the names, in id order (a topological order).
    let mut seen = hashbrown::HashSet::new();
    let mut stack = vec![root];
    seen.insert(root);
    while let Some(id) = stack.pop() {
        if id != root && names.names.contains_key(&id) {
            continue;
        }
        for &a in g.args(id) {
            if seen.insert(a) {
                stack.push(a);
            }
        }
    }
    let mut order: Vec<Id> = seen.into_iter().collect();
    order.sort_unstable();
    let (given, degrees) = (&names.names, &names.degrees);
    let leaf = |id: Id| -> Option<f64> {
        (id != root && given.contains_key(&id)).then(|| degrees.get(&id).copied().unwrap_or(1.0))
    };
    let p = Printer::over(g, &order, &[root], style, Some(given), &leaf, INLINE_LIMIT);
    let out = p.render(root);
    let d = p.degree[&root];
    names.degrees.insert(root, d);
    out
}

/// Prints `roots` together, when printing each alone would be over four times longer (their
/// trees written out, against the DAG's nodes): each root's text, and one `where` block
/// naming every subexpression of at least 5 nodes that they share, among them or within one
/// (`t1`, `t2`, ...). `None` when they are short enough alone. The partials of a product of
/// n factors written out are n products of n - 1 factors; a reverse-mode gradient shares
/// prefix and suffix products, and printed together it stays linear in n.
pub fn print_shared(g: &Graph, roots: &[Id], style: Style) -> Option<(Vec<String>, String)> {
    let reach = g.reachable(roots);
    let p = Printer::over(g, &reach, roots, style, None, &|_| None, 0);
    let written = roots.iter().fold(0u64, |t, r| t.saturating_add(p.size[r]));
    (written > 4 * reach.len() as u64 + 100).then(|| render_together(&p, roots))
}

/// Each root's text and the one `where` block of `p`.
fn render_together(p: &Printer<'_>, roots: &[Id]) -> (Vec<String>, String) {
    let texts = roots
        .iter()
        .map(|&r| {
            let mut out = String::new();
            p.emit(r, &mut out);
            out
        })
        .collect();
    (texts, p.where_block())
}

/// Names for [`print_named`]: nodes printed as words, and the degrees of the roots printed
/// with them so far.
#[derive(Debug, Clone, Default)]
pub struct Names {
    names: HashMap<Id, String>,
    degrees: HashMap<Id, f64>,
}

impl Names {
    /// `id` prints as `name` wherever another expression uses it (a later name replaces it).
    pub fn insert(&mut self, id: Id, name: impl Into<String>) {
        self.names.insert(id, name.into());
    }

    /// Names `id` unless it has a name already.
    pub fn insert_new(&mut self, id: Id, name: impl Into<String>) {
        self.names.entry(id).or_insert_with(|| name.into());
    }
}

/// A formatted number: integers exactly, long decimals as small fractions when exact.
pub fn format_number(x: f64) -> String {
    match fraction(x, false) {
        Some((p, q)) => format!("{p}/{q}"),
        None => decimal(x),
    }
}

/// A value as a decimal: integers without a fraction, shortest round-trip digits otherwise.
pub fn decimal(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else if x != 0.0 && (x.abs() >= 1e16 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// `x == p/q` for a small `q`, when the decimal form is long; with `unit` also `±1/q`
/// (coefficients print `x/4` rather than `0.25*x`).
fn fraction(x: f64, unit: bool) -> Option<(i64, i64)> {
    if !x.is_finite() || x.fract() == 0.0 {
        return None;
    }
    let long = {
        let s = format!("{x:e}");
        s.split('e').next().unwrap_or("").chars().filter(char::is_ascii_digit).count() > 6
    };
    if unit && (1.0 / x).fract() == 0.0 && (1.0 / x).abs() <= 1e9 && 1.0 / (1.0 / x) == x {
        // A unit fraction: coefficients print `x/32`, not `0.03125*x`.
        let q = (1.0 / x).abs() as i64;
        return Some((x.signum() as i64, q));
    }
    for q in 2..=16i64 {
        let p = (x * q as f64).round();
        let r = p / q as f64;
        // Exact, or (for a long decimal) within a few ulps: `1/3 - 1` is
        // -0.6666666666666667 while `-2/3` is -0.6666666666666666.
        let close = r == x || (long && (r - x).abs() <= 4.0 * f64::EPSILON * x.abs());
        if p.abs() < 1e9 && close && (long || (unit && (p.abs() == 1.0 || q == 2))) {
            return Some((p as i64, q));
        }
    }
    None
}

struct Printer<'g> {
    g: &'g Graph,
    style: Style,
    /// Polynomial degree of each reachable node, for ordering terms; `-inf` for constants.
    degree: HashMap<Id, f64>,
    /// Shared subexpressions printed by name (only for large trees).
    names: HashMap<Id, String>,
    /// Names given by the caller ([`Named`]): the walk stops at them.
    given: Option<&'g HashMap<Id, String>>,
    bound: Vec<Id>,
    /// The size of each reachable node's tree written out (saturating).
    size: HashMap<Id, u64>,
}

impl<'g> Printer<'g> {
    fn new(g: &'g Graph, roots: &[Id], style: Style) -> Printer<'g> {
        let reach = g.reachable(roots);
        Printer::over(g, &reach, roots, style, None, &|_| None, INLINE_LIMIT)
    }

    /// A printer for `roots` over `reach`: every node their printing visits, in id order.
    /// `leaf(id)` is the degree of a node that prints as a name given in `given` (the walk
    /// does not go below it), `None` for the others.
    fn over(
        g: &'g Graph,
        reach: &[Id],
        roots: &[Id],
        style: Style,
        given: Option<&'g HashMap<Id, String>>,
        leaf: &dyn Fn(Id) -> Option<f64>,
        inline_limit: u64,
    ) -> Printer<'g> {
        let mut degree = HashMap::with_capacity(reach.len());
        let mut size: HashMap<Id, u64> = HashMap::with_capacity(reach.len());
        let mut parents: HashMap<Id, u32> = HashMap::with_capacity(reach.len());
        for &id in reach {
            if let Some(d) = leaf(id) {
                degree.insert(id, d);
                size.insert(id, 1);
                continue;
            }
            let args = g.args(id);
            let d = match g.op(id) {
                Op::Num(_) | Op::Const(_) => f64::NEG_INFINITY,
                Op::Var(_) => 1.0,
                Op::Add => args.iter().map(|a| degree[a]).fold(f64::NEG_INFINITY, f64::max),
                Op::Mul => {
                    let ds: Vec<f64> =
                        args.iter().map(|a| degree[a]).filter(|d: &f64| d.is_finite()).collect();
                    if ds.is_empty() { f64::NEG_INFINITY } else { ds.iter().sum() }
                }
                Op::Pow => match (degree[&args[0]], g.as_num(args[1])) {
                    (d, Some(n)) if d.is_finite() => d * n,
                    (d, _) if d == f64::NEG_INFINITY => f64::NEG_INFINITY,
                    _ => 0.0,
                },
                Op::Broadcast(_) | Op::Reshape(_) | Op::Transpose => degree[&args[0]],
                // A matrix product is a product: `x @ w + b` keeps its written order.
                Op::MatMul => args.iter().map(|a| degree[a]).filter(|d: &f64| d.is_finite()).sum(),
                Op::Func(_) | Op::Sum(_) | Op::Max(_) | Op::LogSoftmax | Op::OneHot(_) => {
                    if args.iter().all(|a| degree[a] == f64::NEG_INFINITY) { f64::NEG_INFINITY } else { 0.0 }
                }
            };
            degree.insert(id, d);
            let s = args.iter().fold(1u64, |s, a| s.saturating_add(size[a]));
            size.insert(id, s);
            for a in args {
                *parents.entry(*a).or_default() += 1;
            }
        }
        let mut names = HashMap::new();
        let mut bound = Vec::new();
        if roots.iter().any(|r| size[r] > inline_limit) {
            let is_root: hashbrown::HashSet<Id> = roots.iter().copied().collect();
            for &id in reach {
                if parents.get(&id).copied().unwrap_or(0) >= 2
                    && size[&id] >= 5
                    && !is_root.contains(&id)
                    && leaf(id).is_none()
                {
                    bound.push(id);
                    names.insert(id, format!("t{}", bound.len()));
                }
            }
        }
        Printer { g, style, degree, names, given, bound, size }
    }

    /// The name `id` prints as, if any: a shared subexpression's, else a given one.
    fn name(&self, id: Id) -> Option<&str> {
        self.names.get(&id).or_else(|| self.given.and_then(|n| n.get(&id))).map(String::as_str)
    }

    fn named(&self, id: Id) -> bool {
        self.name(id).is_some()
    }

    fn render(&self, root: Id) -> String {
        let mut out = String::new();
        self.emit(root, &mut out);
        if !self.bound.is_empty() {
            out.push('\n');
            out += &self.where_block();
        }
        out
    }

    /// `where` and a line `name = ...` per bound subexpression; empty if there are none.
    fn where_block(&self) -> String {
        let mut out = String::new();
        if self.bound.is_empty() {
            return out;
        }
        out += match self.style {
            Style::Text => "where",
            Style::Latex => "\\text{where}",
        };
        for &id in &self.bound {
            out += "\n  ";
            out += self.name(id).unwrap_or("?");
            out += " = ";
            self.emit(id, &mut out);
        }
        out
    }

    fn latex(&self) -> bool {
        self.style == Style::Latex
    }

    /// Numerical sign of how a node prints: `-x`, `-2*y`, `-3` are negative.
    fn negative(&self, id: Id) -> bool {
        let id = self.see(id);
        match self.g.op(id) {
            Op::Num(_) => self.g.as_num(id).is_some_and(|x| x < 0.0),
            Op::Mul => self.g.as_num(self.g.args(id)[0]).is_some_and(|x| x < 0.0),
            _ => false,
        }
    }

    /// A broadcast prints as what it broadcasts.
    fn see(&self, mut id: Id) -> Id {
        while matches!(self.g.op(id), Op::Broadcast(_)) && !self.named(id) {
            id = self.g.args(id)[0];
        }
        id
    }

    fn class(&self, id: Id, neg: bool) -> Class {
        let id = self.see(id);
        if self.named(id) {
            return Class::Atom;
        }
        let g = self.g;
        match g.op(id) {
            Op::MatMul => Class::Product,
            Op::Sum(_)
            | Op::Max(_)
            | Op::Reshape(_)
            | Op::Transpose
            | Op::LogSoftmax
            | Op::OneHot(_)
            | Op::Broadcast(_) => Class::Atom,
            Op::Num(_) => {
                let x = g.as_num(id).unwrap_or(0.0);
                let x = if neg { -x } else { x };
                if x < 0.0 {
                    Class::Neg
                } else if fraction(x, false).is_some() {
                    Class::Product
                } else {
                    Class::Atom
                }
            }
            Op::Const(_) | Op::Var(_) | Op::Func(_) => Class::Atom,
            Op::Add => Class::Sum,
            Op::Mul => {
                if self.negative(id) != neg {
                    Class::Neg
                } else {
                    Class::Product
                }
            }
            Op::Pow => {
                let e = g.as_num(g.args(id)[1]);
                match e {
                    Some(e) if e < 0.0 => Class::Product, // 1/x^2
                    Some(0.5) => Class::Atom,             // sqrt(x)
                    _ => Class::Power,
                }
            }
        }
    }

    /// Writes `root` (with names for bound subexpressions other than `root` itself).
    fn emit(&self, root: Id, out: &mut String) {
        let mut stack = vec![Item::Node(root, false)];
        let mut first = true;
        while let Some(item) = stack.pop() {
            match item {
                Item::Str(s) => out.push_str(s),
                Item::Own(s) => out.push_str(&s),
                Item::Node(id, neg) => {
                    if !first && let Some(name) = self.name(id) {
                        out.push_str(name);
                        continue;
                    }
                    first = false;
                    let mut pieces = Vec::new();
                    self.expand(id, neg, &mut pieces);
                    stack.extend(pieces.into_iter().rev());
                }
            }
        }
    }

    /// `child` inside a parenthesised group if `wrap`.
    fn group(&self, pieces: &mut Vec<Item>, child: Id, neg: bool, wrap: bool) {
        if wrap {
            pieces.push(Item::Str(if self.latex() { "\\left(" } else { "(" }));
            pieces.push(Item::Node(child, neg));
            pieces.push(Item::Str(if self.latex() { "\\right)" } else { ")" }));
        } else {
            pieces.push(Item::Node(child, neg));
        }
    }

    fn expand(&self, id: Id, neg: bool, pieces: &mut Vec<Item>) {
        let g = self.g;
        let latex = self.latex();
        let call = |pieces: &mut Vec<Item>, name: &'static str, arg: Id, extra: Option<String>| {
            if latex {
                pieces.push(Item::Own(format!("\\operatorname{{{name}}}\\left(")));
            } else {
                pieces.push(Item::Str(name));
                pieces.push(Item::Str("("));
            }
            pieces.push(Item::Node(arg, false));
            if let Some(e) = extra {
                pieces.push(Item::Own(format!(", {e}")));
            }
            pieces.push(Item::Str(if latex { "\\right)" } else { ")" }));
        };
        match g.op(id) {
            Op::Broadcast(_) => {
                let inner = g.args(id)[0];
                self.expand(inner, neg, pieces);
            }
            Op::MatMul => {
                if neg {
                    pieces.push(Item::Str("-"));
                }
                let [a, b] = [g.args(id)[0], g.args(id)[1]];
                self.group(pieces, a, false, self.class(a, false) < Class::Product);
                pieces.push(Item::Str(if latex { " \\mathbin{@} " } else { " @ " }));
                self.group(pieces, b, false, self.class(b, false) <= Class::Product);
            }
            Op::Sum(axis) | Op::Max(axis) => {
                if neg {
                    pieces.push(Item::Str("-"));
                }
                let extra = (axis != super::node::ALL_AXES).then(|| axis.to_string());
                let name = if matches!(g.op(id), Op::Sum(_)) { "sum" } else { "max" };
                call(pieces, name, g.args(id)[0], extra);
            }
            Op::Reshape(s) => {
                if neg {
                    pieces.push(Item::Str("-"));
                }
                call(pieces, "reshape", g.args(id)[0], Some(super::node::show_shape(g.shape_of(s))));
            }
            Op::Transpose => {
                if neg {
                    pieces.push(Item::Str("-"));
                }
                if latex {
                    let a = g.args(id)[0];
                    self.group(pieces, a, false, self.class(a, false) != Class::Atom);
                    pieces.push(Item::Str("^{\\top}"));
                } else {
                    call(pieces, "transpose", g.args(id)[0], None);
                }
            }
            Op::LogSoftmax => {
                if neg {
                    pieces.push(Item::Str("-"));
                }
                call(pieces, "logsoftmax", g.args(id)[0], None);
            }
            Op::OneHot(k) => call(pieces, "onehot", g.args(id)[0], Some(k.to_string())),
            Op::Num(_) => {
                let x = g.as_num(id).unwrap_or(0.0);
                let x = if neg { -x } else { x };
                pieces.push(Item::Own(self.number(x)));
            }
            Op::Const(c) => pieces.push(Item::Str(match (c.name(), self.latex()) {
                ("pi", true) => "\\pi",
                (name, _) => name,
            })),
            Op::Var(_) => {
                let name = g.var_name(id).unwrap_or("?");
                pieces.push(Item::Own(if self.latex() { latex_name(name) } else { name.to_owned() }));
            }
            Op::Func(f) => self.expand_func(f, g.args(id)[0], pieces),
            Op::Add => self.expand_sum(id, neg, pieces),
            Op::Mul => self.expand_product(id, neg, pieces),
            Op::Pow => {
                let [b, e] = [g.args(id)[0], g.args(id)[1]];
                match g.as_num(e) {
                    Some(x) if x < 0.0 => self.expand_product(id, neg, pieces),
                    _ => {
                        if neg {
                            pieces.push(Item::Str("-"));
                        }
                        self.expand_power(b, e, pieces)
                    }
                }
            }
        }
    }

    fn number(&self, x: f64) -> String {
        match (fraction(x, false), self.latex()) {
            (Some((p, q)), true) if p < 0 => format!("-\\frac{{{}}}{{{q}}}", -p),
            (Some((p, q)), true) => format!("\\frac{{{p}}}{{{q}}}"),
            (Some((p, q)), false) => format!("{p}/{q}"),
            (None, true) if x.abs() >= 1e16 || (x != 0.0 && x.abs() < 1e-4) => {
                let s = format!("{x:e}");
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                format!("{m} \\cdot 10^{{{e}}}")
            }
            (None, _) => decimal(x),
        }
    }

    fn expand_func(&self, f: Func, arg: Id, pieces: &mut Vec<Item>) {
        if !self.latex() {
            pieces.push(Item::Str(f.name()));
            pieces.push(Item::Str("("));
            pieces.push(Item::Node(arg, false));
            pieces.push(Item::Str(")"));
            return;
        }
        match f {
            Func::Exp => {
                pieces.push(Item::Str("e^{"));
                pieces.push(Item::Node(arg, false));
                pieces.push(Item::Str("}"));
            }
            Func::Abs => {
                pieces.push(Item::Str("\\left|"));
                pieces.push(Item::Node(arg, false));
                pieces.push(Item::Str("\\right|"));
            }
            _ => {
                pieces.push(Item::Str(f.def().latex));
                pieces.push(Item::Str("\\left("));
                pieces.push(Item::Node(arg, false));
                pieces.push(Item::Str("\\right)"));
            }
        }
    }

    /// `b^e` with `e` not a negative number.
    fn expand_power(&self, b: Id, e: Id, pieces: &mut Vec<Item>) {
        let g = self.g;
        if g.as_num(e) == Some(0.5) {
            pieces.push(Item::Str(if self.latex() { "\\sqrt{" } else { "sqrt(" }));
            pieces.push(Item::Node(b, false));
            pieces.push(Item::Str(if self.latex() { "}" } else { ")" }));
            return;
        }
        self.group(pieces, b, false, self.class(b, false) != Class::Atom);
        if self.latex() {
            pieces.push(Item::Str("^{"));
            pieces.push(Item::Node(e, false));
            pieces.push(Item::Str("}"));
        } else {
            pieces.push(Item::Str("^"));
            self.group(pieces, e, false, self.class(e, false) < Class::Power);
        }
    }

    fn expand_sum(&self, id: Id, neg: bool, pieces: &mut Vec<Item>) {
        let mut terms: Vec<Id> = self.g.args(id).to_vec();
        // Ties in degree keep the order of first construction, judged without the
        // coefficient (`-b` sorts where `b` would); terms without a value come after the
        // others, and the number after the other constant terms (`pi + 1 + log(-1)`),
        // wherever they were built.
        let g = self.g;
        let stem = |t: &Id| match (g.op(*t), g.args(*t)) {
            (Op::Mul, &[c, u]) if g.as_num(c).is_some() => u,
            _ => *t,
        };
        terms.sort_by(|a, b| {
            let (da, db) = (self.degree[a], self.degree[b]);
            db.partial_cmp(&da)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(g.is_undefined(*a).cmp(&g.is_undefined(*b)))
                .then(g.as_num(*a).is_some().cmp(&g.as_num(*b).is_some()))
                .then(stem(a).cmp(&stem(b)))
        });
        // Printed sign of each term after the overall negation.
        let sign = |t: Id| self.negative(t) != neg;
        if sign(terms[0])
            && let Some(k) = terms.iter().position(|&t| !sign(t))
        {
            let t = terms.remove(k);
            terms.insert(0, t);
        }
        for (i, &t) in terms.iter().enumerate() {
            let minus = sign(t);
            if i == 0 {
                pieces.push(Item::Node(t, neg));
            } else if minus {
                pieces.push(Item::Str(" - "));
                pieces.push(Item::Node(t, !neg));
            } else {
                pieces.push(Item::Str(" + "));
                pieces.push(Item::Node(t, neg));
            }
        }
    }

    /// Products, and powers with negative numeric exponents: `-2*x*y/(3*z^2)`.
    fn expand_product(&self, id: Id, neg: bool, pieces: &mut Vec<Item>) {
        let g = self.g;
        let (mut coef, factors): (f64, &[Id]) = match g.op(id) {
            Op::Mul => match g.as_num(g.args(id)[0]) {
                Some(c) => (c, &g.args(id)[1..]),
                None => (1.0, g.args(id)),
            },
            _ => (1.0, std::slice::from_ref(&id)),
        };
        if neg {
            coef = -coef;
        }
        // Numerator and denominator as (base, exponent-to-print) pairs; exponent None = 1.
        let mut num: Vec<Id> = Vec::new();
        let mut den: Vec<(Id, f64)> = Vec::new();
        for &f in factors {
            if g.op(f) == Op::Pow
                && let Some(x) = g.as_num(g.args(f)[1])
                && x < 0.0
            {
                den.push((g.args(f)[0], -x));
                continue;
            }
            num.push(f);
        }
        // Constants first (`2*pi*x`), then variables and their powers by name, then the rest,
        // factors without a value last (`x*sin(y)*log(-1)`).
        let key = |f: &Id| -> (u8, String, Id) {
            let base = if g.op(*f) == Op::Pow { g.args(*f)[0] } else { *f };
            match (g.op(base), g.var_name(base)) {
                _ if g.is_undefined(*f) => (3, String::new(), *f),
                (Op::Const(_), _) => (0, String::new(), *f),
                (_, Some(name)) => (1, name.to_owned(), *f),
                _ => (2, String::new(), *f),
            }
        };
        num.sort_by_key(key);
        den.sort_by_key(|(b, _)| key(b));
        if coef < 0.0 {
            pieces.push(Item::Str("-"));
            coef = -coef;
        }
        let (p, q) = match fraction(coef, true) {
            Some((p, q)) => (p as f64, q as f64),
            None => (coef, 1.0),
        };
        let latex = self.latex();
        // Numerator.
        let mut numer: Vec<Vec<Item>> = Vec::new();
        if p != 1.0 || num.is_empty() {
            numer.push(vec![Item::Own(self.number(p))]);
        }
        for &f in &num {
            let mut v = Vec::new();
            // A nested product without a value keeps its parentheses: `0*(1e300*1e300)` has
            // none, `0*1e300*1e300` reads back as `(0*1e300)*1e300 = 0`.
            let whole = g.op(f) == Op::Mul && g.is_undefined(f);
            self.group(&mut v, f, false, whole || self.class(f, false) <= Class::Neg);
            numer.push(v);
        }
        let mut denom: Vec<Vec<Item>> = Vec::new();
        if q != 1.0 {
            denom.push(vec![Item::Own(self.number(q))]);
        }
        for &(b, x) in &den {
            let mut v = Vec::new();
            self.den_factor(b, x, &mut v);
            denom.push(v);
        }
        if latex && !denom.is_empty() {
            pieces.push(Item::Str("\\frac{"));
            self.join(numer, pieces);
            pieces.push(Item::Str("}{"));
            self.join(denom, pieces);
            pieces.push(Item::Str("}"));
            return;
        }
        self.join(numer, pieces);
        if !denom.is_empty() {
            pieces.push(Item::Str("/"));
            // A single denominator factor already carries its own parentheses.
            let wrap = denom.len() > 1;
            if wrap {
                pieces.push(Item::Str("("));
            }
            self.join(denom, pieces);
            if wrap {
                pieces.push(Item::Str(")"));
            }
        }
    }

    /// One factor of a denominator: `b`, `sqrt(b)` or `b^x`.
    fn den_factor(&self, b: Id, x: f64, v: &mut Vec<Item>) {
        if x == 1.0 {
            let wrap = self.class(b, false) <= Class::Product;
            self.group(v, b, false, wrap);
        } else if x == 0.5 {
            v.push(Item::Str(if self.latex() { "\\sqrt{" } else { "sqrt(" }));
            v.push(Item::Node(b, false));
            v.push(Item::Str(if self.latex() { "}" } else { ")" }));
        } else {
            self.group(v, b, false, self.class(b, false) != Class::Atom);
            let e = self.number(x);
            if self.latex() {
                v.push(Item::Own(format!("^{{{e}}}")));
            } else if e.contains('/') {
                v.push(Item::Own(format!("^({e})")));
            } else {
                v.push(Item::Own(format!("^{e}")));
            }
        }
    }

    fn join(&self, groups: Vec<Vec<Item>>, pieces: &mut Vec<Item>) {
        for (i, grp) in groups.into_iter().enumerate() {
            if i > 0 {
                let numeric =
                    matches!(grp.first(), Some(Item::Own(s)) if s.starts_with(|c: char| c.is_ascii_digit()));
                pieces.push(Item::Str(match (self.latex(), numeric) {
                    (false, _) => "*",
                    (true, true) => " \\cdot ",
                    (true, false) => " ",
                }));
            }
            pieces.extend(grp);
        }
    }
}

/// `x1` as `x_{1}`, Greek letter names as their symbols, other long names upright.
fn latex_name(name: &str) -> String {
    const GREEK: &[&str] = &[
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
        "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega",
    ];
    let split = name.find(|c: char| c.is_ascii_digit() || c == '_').unwrap_or(name.len());
    let (head, tail) = name.split_at(split);
    let head = if GREEK.contains(&head) {
        format!("\\{head}")
    } else if head.chars().count() > 1 {
        format!("\\mathrm{{{head}}}")
    } else {
        head.to_owned()
    };
    let tail = tail.trim_start_matches('_');
    if tail.is_empty() { head } else { format!("{head}_{{{tail}}}") }
}
