//! The library's front door: [`Expr`], a formula you can differentiate, print and evaluate,
//! and [`Error`], everything that can go wrong with one.
//!
//! An `Expr` is a handle (a node id) into a graph shared by every expression derived from
//! it, so `f.diff("x")` adds nodes next to `f`'s and shares its subexpressions. The graph is
//! append-only: a handle never dangles and never changes meaning.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashMap;

use crate::diff;
use crate::graph::{self, Graph, Id, Scope, Style};
use crate::syntax::{self, Diagnostic};

mod build;

pub use build::Operand;

/// Every error the library reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Malformed input text; render it with [`Diagnostic::render`] for a caret.
    #[error("{0}")]
    Parse(Diagnostic),
    /// Evaluation failed: a domain error, a division by zero, an overflow or a missing value.
    #[error("{0}")]
    Eval(#[from] graph::EvalError),
    /// Arguments that do not fit the call (wrong lengths, unknown variable names, ...).
    #[error("{0}")]
    Invalid(String),
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Error {
        Error::Parse(d)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A formula: a node in a shared, hash-consed expression graph.
///
/// ```
/// let f = symdiff::Expr::parse("x^3 + 2*x^2 + 1")?;
/// let df = f.diff("x");
/// assert_eq!(df.to_string(), "3*x^2 + 4*x");
/// assert_eq!(df.eval(&[("x", 4.0)])?, 64.0);
/// # Ok::<(), symdiff::Error>(())
/// ```
///
/// **Built in code.** [`Expr::var`] and [`Expr::num`], the operators `+ - * /` and unary `-`
/// (between `Expr`, `&Expr` and `f64`, and `+=` and friends), [`pow`](Expr::pow),
/// [`powi`](Expr::powi), a method per built-in function ([`sin`](Expr::sin),
/// [`sigmoid`](Expr::sigmoid), ...) and [`Expr::sum`] / [`Expr::product`] (also `impl Sum`
/// and `impl Product`) build the nodes the parser builds for the same text, with no text in
/// between: the result prints and evaluates as the parsed formula does.
///
/// ```
/// use symdiff::Expr;
/// let x = Expr::var("x");
/// let f = (x.clone() + 1.0) * 2.0;
/// assert_eq!(f.to_string(), Expr::parse("(x + 1)*2")?.to_string());
/// assert_eq!((&x - &x).to_string(), "0");
/// let xs: Vec<Expr> = (0..3).map(|i| Expr::var(&format!("x{i}"))).collect();
/// let sum: Expr = xs.iter().map(|xi| xi.sin()).sum();
/// assert_eq!(sum.to_string(), "sin(x0) + sin(x1) + sin(x2)");
/// # Ok::<(), symdiff::Error>(())
/// ```
///
/// Which graph: `Expr::var`, `Expr::num`, [`Expr::pi`] and [`Expr::e`] build in the calling
/// thread's default graph, which every expression built from them on that thread shares
/// for as long as any of them is alive (the thread holds it weakly: after the last is
/// dropped, the next `Expr::var` starts an empty graph). [`var_in`](Expr::var_in) and
/// [`num_in`](Expr::num_in) build in another expression's graph (a parsed one, say), so
/// parsing and building mix without copying. Expressions of different graphs still
/// combine: those of the graph with fewer nodes are copied into the other. Building has no
/// size limit (as [`diff`](Expr::diff) has none); the node budget of the `try_` routes grows
/// with what was built. NaN and infinite numbers, which no formula can write, are constants
/// without a value: evaluating them fails.
#[derive(Clone)]
pub struct Expr {
    graph: Arc<Mutex<Graph>>,
    id: Id,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({self})")
    }
}

/// Derivatives are the `diff` stage's; lowering calls back here for each order of
/// `diff(e, x, n)`, within the node budget.
pub(crate) fn derive(g: &mut Graph, e: Id, var: Id) -> Result<Id, graph::OverBudget> {
    diff::forward::try_derivative(g, e, var)
}

/// Formulas of at least twice this many bytes that are long sums are parsed in pieces of
/// about this size (see [`Expr::parse_in_pieces`]): 64 KiB of text, a syntax tree of about
/// a megabyte, is read and lowered at a time.
const PIECE_BYTES: usize = 64 << 10;

/// The node budget of a graph parsed from `src`: [`NODE_BUDGET`](crate::NODE_BUDGET) (10
/// million nodes), or one node per byte of text if that is more. A written-out formula lowers
/// to about 0.2 nodes per byte and its gradient to two or three times that, so a large formula
/// and its gradient fit; a derivative that multiplies the formula's size (`d^40/dx^40`) is
/// stopped, as it is for small formulas, at a budget proportional to what was written.
pub(crate) fn budget_for(src: &str) -> usize {
    graph::NODE_BUDGET.max(src.len())
}

/// The library's error for a derivative, gradient or Hessian over the node budget.
fn too_large(what: &str, b: graph::OverBudget) -> Error {
    Error::Invalid(b.message(what))
}

impl Expr {
    /// Parses a formula: numbers, variables, `+ - * / ^` (`**` too), parentheses, the built-in
    /// functions and `diff(expr, x[, n])`.
    ///
    /// Text up to [`MAX_FORMULA`](crate::MAX_FORMULA) bytes is read (a written-out sum of
    /// millions of terms); longer text is an error. The expression's graph may grow to
    /// [`NODE_BUDGET`](crate::NODE_BUDGET) nodes or one node per byte of `src`, whichever is
    /// more, so a large formula has room for its gradient while a
    /// derivative that swells is still stopped. Text from a person (a command line, a
    /// terminal) is better read with [`parse_limited`](Self::parse_limited) and
    /// [`MAX_INPUT`](crate::MAX_INPUT), as the `symdiff` commands do.
    pub fn parse(src: &str) -> Result<Expr> {
        Self::parse_limited(src, syntax::MAX_FORMULA)
    }

    /// [`parse`](Self::parse), refusing text over `max_bytes` (at most
    /// [`MAX_FORMULA`](crate::MAX_FORMULA)) with an error that names the size and the limit.
    pub fn parse_limited(src: &str, max_bytes: usize) -> Result<Expr> {
        Self::parse_limited_with_lets(src, &[], max_bytes)
    }

    /// [`parse`](Self::parse) with named constants, as `let n = 1000` gives them: each name
    /// in `lets` is that number wherever the formula uses it, in particular in the bounds of
    /// sums and in indices, which must be known when the formula is read.
    ///
    /// ```
    /// use symdiff::Expr;
    /// let rosenbrock = "sum(i = 0..n-2, 100*(x[i+1] - x[i]^2)^2 + (1 - x[i])^2)";
    /// let f = Expr::parse_with_lets(rosenbrock, &[("n", 3.0)])?;
    /// assert_eq!(f.variables(), ["x[0]", "x[1]", "x[2]"]);
    /// assert_eq!(f.eval(&[("x[0]", 1.0), ("x[1]", 1.0), ("x[2]", 1.0)])?, 0.0);
    /// // Without a value for `n`, the bound is an error at `n`.
    /// let err = Expr::parse(rosenbrock).unwrap_err().to_string();
    /// assert!(err.starts_with("formula:1:12: `n` has no value here"), "{err}");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn parse_with_lets(src: &str, lets: &[(&str, f64)]) -> Result<Expr> {
        Self::parse_limited_with_lets(src, lets, syntax::MAX_FORMULA)
    }

    /// [`parse_with_lets`](Self::parse_with_lets), refusing text over `max_bytes` as
    /// [`parse_limited`](Self::parse_limited) does.
    pub fn parse_limited_with_lets(src: &str, lets: &[(&str, f64)], max_bytes: usize) -> Result<Expr> {
        let limit = max_bytes.min(syntax::MAX_FORMULA);
        let lookup = |n: &str| lets.iter().find(|(m, _)| *m == n).map(|p| p.1);
        if src.len() <= limit
            && src.len() >= 2 * PIECE_BYTES
            && let Some(e) = Self::parse_in_pieces(src, PIECE_BYTES, &lookup)
        {
            return Ok(e);
        }
        let (ast, root) = syntax::parse_formula(src, &graph::lower::is_builtin_function, limit)?;
        let mut g = Graph::new();
        g.set_budget(budget_for(src));
        let functions = HashMap::new();
        let scope = Scope { src, ast: &ast, functions: &functions, derive, lets: &lookup, inline_lets: true };
        let id = scope.lower(&mut g, root)?;
        drop(ast);
        Ok(Expr { graph: Arc::new(Mutex::new(g)), id })
    }

    /// A long formula, parsed and lowered piece by piece into a new graph
    /// ([`lower_in_pieces`]). `None` if anything fails.
    fn parse_in_pieces(src: &str, piece_bytes: usize, lets: graph::Lets<'_>) -> Option<Expr> {
        let mut g = Graph::new();
        g.set_budget(budget_for(src));
        let id = lower_in_pieces(&mut g, src, piece_bytes, lets)?;
        Some(Expr { graph: Arc::new(Mutex::new(g)), id })
    }

    /// Parses `src` into the graph `self` lives in, so that combining the two (with
    /// [`substitute`](Self::substitute), say) shares nodes instead of copying them. The graph's
    /// node budget grows with the text as in [`parse`](Self::parse).
    pub fn parse_with(&self, src: &str) -> Result<Expr> {
        self.parse_beside(src, &[])
    }

    /// [`parse_with`](Self::parse_with), with values for names as in
    /// [`parse_with_lets`](Self::parse_with_lets).
    ///
    /// ```
    /// use symdiff::Expr;
    /// let f = Expr::parse_with_lets("sum(i = 0..n-1, x[i])", &[("n", 3.0)])?;
    /// let g = f.parse_beside("prod(i = 0..n-1, x[i])", &[("n", 2.0)])?;
    /// assert_eq!(g.to_string(), "x[0]*x[1]");
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn parse_beside(&self, src: &str, lets: &[(&str, f64)]) -> Result<Expr> {
        let lookup = |n: &str| lets.iter().find(|(m, _)| *m == n).map(|p| p.1);
        let more = budget_for(src).saturating_sub(graph::NODE_BUDGET);
        if (2 * PIECE_BYTES..=syntax::MAX_FORMULA).contains(&src.len()) {
            // A long sum, in pieces as `parse` reads it; if that fails, its nodes are
            // forgotten and the one-piece parse below gives the error.
            let pieces = self.transaction(|g| {
                let budget = g.budget();
                g.set_budget(budget.saturating_add(more));
                lower_in_pieces(g, src, PIECE_BYTES, &lookup).ok_or(budget)
            });
            match pieces {
                Ok(id) => return Ok(self.derived(id)),
                Err(budget) => self.graph().set_budget(budget),
            }
        }
        let (ast, root) =
            syntax::parse_formula(src, &graph::lower::is_builtin_function, syntax::MAX_FORMULA)?;
        let functions = HashMap::new();
        let scope = Scope { lets: &lookup, inline_lets: true, ..Scope::new(src, &ast, &functions, derive) };
        let id = self.transaction(|g| {
            g.set_budget(g.budget().saturating_add(more));
            Ok::<_, Error>(scope.lower(g, root)?)
        })?;
        Ok(self.derived(id))
    }

    /// `f` on the graph, under its lock; if it fails, the nodes it built are forgotten (no
    /// other expression can hold them: the lock was held throughout).
    fn transaction<T, E>(
        &self,
        f: impl FnOnce(&mut Graph) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut g = self.graph();
        let mark = g.mark();
        let r = f(&mut g);
        if r.is_err() {
            g.rollback(mark);
        }
        r
    }

    pub(crate) fn graph(&self) -> MutexGuard<'_, Graph> {
        // The graph is append-only, so a panic elsewhere cannot leave it half-changed.
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node this expression is.
    pub(crate) fn node(&self) -> Id {
        self.id
    }

    /// Whether `self` and `other` live in the same graph.
    pub(crate) fn shares_graph(&self, other: &Expr) -> bool {
        Arc::ptr_eq(&self.graph, &other.graph)
    }

    fn derived(&self, id: Id) -> Expr {
        Expr { graph: Arc::clone(&self.graph), id }
    }

    /// The simplified derivative with respect to `var` (0 if `var` does not occur).
    ///
    /// There is no size limit here: derivatives can grow exponentially with the order (the
    /// 20th derivative of `x^x` has millions of nodes). For expressions that come from users,
    /// [`try_diff`](Self::try_diff) stops at the node budget instead.
    pub fn diff(&self, var: &str) -> Expr {
        self.nth_diff(var, 1)
    }

    /// The `n`-th derivative with respect to `var` (no size limit; see [`diff`](Self::diff)).
    pub fn nth_diff(&self, var: &str, n: u32) -> Expr {
        let id = {
            let mut g = self.graph();
            let v = g.var(var);
            diff::nth_derivative(&mut g, self.id, v, n)
        };
        self.derived(id)
    }

    /// [`diff`](Self::diff), or an error if it would grow the expression's graph past the
    /// node budget ([`NODE_BUDGET`](crate::NODE_BUDGET) nodes), the limit every route from
    /// user input keeps to.
    pub fn try_diff(&self, var: &str) -> Result<Expr> {
        self.try_nth_diff(var, 1)
    }

    /// [`nth_diff`](Self::nth_diff) within the node budget (see [`try_diff`](Self::try_diff)).
    pub fn try_nth_diff(&self, var: &str, n: u32) -> Result<Expr> {
        let id = self.transaction(|g| {
            let v = g.var(var);
            diff::forward::try_nth_derivative(g, self.id, v, n).map_err(|b| {
                too_large(
                    &if n == 1 {
                        "the derivative".to_owned()
                    } else {
                        format!("the derivative of order {n}")
                    },
                    b,
                )
            })
        })?;
        Ok(self.derived(id))
    }

    /// The partial derivatives with respect to `vars`, in that order, built by reverse mode
    /// (one backward sweep for all of them; each printed partial equals `diff`'s value, though
    /// not always its printed form). No size limit; see [`try_gradient`](Self::try_gradient).
    pub fn gradient(&self, vars: &[&str]) -> Vec<Expr> {
        let ids = {
            let mut g = self.graph();
            let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
            diff::reverse::gradient(&mut g, self.id, &vs)
        };
        ids.into_iter().map(|id| self.derived(id)).collect()
    }

    /// [`gradient`](Self::gradient) within the node budget (see [`try_diff`](Self::try_diff)).
    pub fn try_gradient(&self, vars: &[&str]) -> Result<Vec<Expr>> {
        let ids = self.transaction(|g| {
            let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
            diff::reverse::try_gradient(g, self.id, &vs).map_err(|b| too_large("the gradient", b))
        })?;
        Ok(ids.into_iter().map(|id| self.derived(id)).collect())
    }

    /// The Hessian matrix with respect to `vars`. No size limit; see
    /// [`try_hessian`](Self::try_hessian).
    pub fn hessian(&self, vars: &[&str]) -> Vec<Vec<Expr>> {
        let rows = {
            let mut g = self.graph();
            let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
            diff::hessian(&mut g, self.id, &vs)
        };
        rows.into_iter().map(|r| r.into_iter().map(|id| self.derived(id)).collect()).collect()
    }

    /// [`hessian`](Self::hessian) within the node budget (see [`try_diff`](Self::try_diff)).
    pub fn try_hessian(&self, vars: &[&str]) -> Result<Vec<Vec<Expr>>> {
        let rows = self.transaction(|g| {
            let vs: Vec<Id> = vars.iter().map(|v| g.var(v)).collect();
            diff::forward::try_hessian(g, self.id, &vs).map_err(|b| too_large("the Hessian", b))
        })?;
        Ok(rows.into_iter().map(|r| r.into_iter().map(|id| self.derived(id)).collect()).collect())
    }

    /// `self` with `value` in place of every occurrence of the variable `var` (composition).
    /// No size limit: composing in a loop can grow the graph as far as memory allows (the
    /// routes from user input, such as calls of REPL functions, keep to the node budget).
    pub fn substitute(&self, var: &str, value: &Expr) -> Expr {
        self.substitute_all(&[(var, value)])
    }

    /// `self` with every `(var, value)` substituted at once: `x*y` with `x := y, y := x` is
    /// `y*x`. Costs in proportion to `self`'s DAG, not the values' (values from another graph
    /// are copied in first).
    pub fn substitute_all(&self, pairs: &[(&str, &Expr)]) -> Expr {
        let foreign: Vec<Option<Graph>> = pairs
            .iter()
            .map(|(_, v)| (!Arc::ptr_eq(&self.graph, &v.graph)).then(|| v.graph().clone()))
            .collect();
        let mut g = self.graph();
        let mut map: HashMap<Id, Id> = HashMap::new();
        for ((var, value), copy) in pairs.iter().zip(&foreign) {
            let v = g.var(var);
            let image = match copy {
                Some(other) => graph::lower::import(&mut g, other, value.id),
                None => value.id,
            };
            map.insert(v, image);
        }
        let id = graph::substitute(&mut g, self.id, &map);
        drop(g);
        self.derived(id)
    }

    /// The value at the given point. Every variable must have a value; domain problems
    /// (`log(-1)`, `1/0`, overflow) are errors, never a silent NaN or infinity.
    pub fn eval(&self, point: &[(&str, f64)]) -> Result<f64> {
        let g = self.graph();
        // A scan for a few variables; an index for many, so that 100,000 cost linear time.
        let index: HashMap<&str, f64> =
            if point.len() > 16 { point.iter().map(|&(n, v)| (n, v)).collect() } else { HashMap::new() };
        let lookup = |name: &str| {
            if point.len() > 16 {
                index.get(name).copied()
            } else {
                point.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
            }
        };
        Ok(graph::eval(&g, &[self.id], &lookup)?[0])
    }

    /// The values of all of `exprs` at one point, in one pass over their nodes (a gradient's
    /// partials share most of theirs: evaluating them one by one would walk the shared part
    /// once per partial). Errors as [`eval`](Self::eval).
    pub fn eval_all(exprs: &[Expr], point: &[(&str, f64)]) -> Result<Vec<f64>> {
        let Some(first) = exprs.first() else { return Ok(Vec::new()) };
        if !exprs.iter().all(|e| e.shares_graph(first)) {
            return exprs.iter().map(|e| e.eval(point)).collect();
        }
        let g = first.graph();
        let index: HashMap<&str, f64> = point.iter().map(|&(n, v)| (n, v)).collect();
        let roots: Vec<Id> = exprs.iter().map(|e| e.id).collect();
        Ok(graph::eval(&g, &roots, &|name| index.get(name).copied())?)
    }

    /// The variables the expression depends on, sorted by name.
    pub fn variables(&self) -> Vec<String> {
        let g = self.graph();
        variables(&g, &[self.id])
    }

    /// The variables written in the formula this expression was parsed from, in the order
    /// they first appear, including those simplification cancelled: for `x - x + y` this is
    /// `x, y` where [`variables`](Self::variables) is `y`. (For an expression that shares its
    /// graph with others, every variable any of them has built.)
    ///
    /// ```
    /// let f = symdiff::Expr::parse("z*y - z*y + x")?;
    /// assert_eq!(f.written_variables(), ["z", "y", "x"]);
    /// assert_eq!(f.variables(), ["x"]);
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn written_variables(&self) -> Vec<String> {
        self.graph().var_names().map(str::to_owned).collect()
    }

    /// The partials of `self` with respect to `vars`, printed so that what they share is
    /// written once: `Some((texts, block))`, each partial's text over names `t1`, `t2`, ...
    /// and the `where` block defining them, when the partials written out would be more than
    /// four times as long as that; `None` when they are short enough to print alone (then
    /// print [`diff`](Self::diff)'s textbook forms). The partials are reverse mode's, which
    /// share prefix and suffix products: the gradient of a product of n factors is written
    /// in O(n), not as n products of n - 1 factors.
    ///
    /// ```
    /// let f = symdiff::Expr::parse_with_lets("prod(i = 0..n-1, x[i])", &[("n", 20.0)])?;
    /// let vars = f.variables();
    /// let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    /// let (texts, block) = f.shared_partials(&vars, false)?.expect("20 partials of 19 factors");
    /// assert_eq!(texts.len(), 20);
    /// assert!(block.starts_with("where\n  t1 = "));
    /// assert!(symdiff::Expr::parse("x*y*z")?.shared_partials(&["x", "y", "z"], false)?.is_none());
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn shared_partials(&self, vars: &[&str], latex: bool) -> Result<Option<(Vec<String>, String)>> {
        let grad = self.try_gradient(vars)?;
        let ids: Vec<Id> = grad.iter().map(|e| e.id).collect();
        let style = if latex { Style::Latex } else { Style::Text };
        Ok(graph::print_shared(&self.graph(), &ids, style))
    }

    /// LaTeX for the expression (`3 x^{2} + 4 x`).
    pub fn to_latex(&self) -> String {
        graph::print(&self.graph(), self.id, Style::Latex)
    }

    /// Number of distinct nodes in the expression's DAG.
    pub fn node_count(&self) -> usize {
        self.graph().reachable(&[self.id]).len()
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&graph::print(&self.graph(), self.id, Style::Text))
    }
}

/// The names of the variables under `roots`, sorted by [`variable_order`].
pub(crate) fn variables(g: &Graph, roots: &[Id]) -> Vec<String> {
    let mut names: Vec<String> =
        g.reachable(roots).into_iter().filter_map(|id| g.var_name(id).map(str::to_owned)).collect();
    names.sort_by(|a, b| variable_order(a, b));
    names
}

/// The order in which symdiff lists variables: by name, and the elements of an indexed
/// variable by their indices as numbers, so that `x[2]` comes before `x[10]`.
///
/// ```
/// let mut names = vec!["x[10]", "y", "x[2]", "a[1,0]", "a[0,5]"];
/// names.sort_by(|a, b| symdiff::variable_order(a, b));
/// assert_eq!(names, ["a[0,5]", "a[1,0]", "x[2]", "x[10]", "y"]);
/// ```
pub fn variable_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |name| match element(name) {
        Some((base, ix)) => (base, Some(ix)),
        None => (name, None),
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

pub use crate::graph::lower::element;
pub(crate) use crate::graph::lower::element_name;

/// The rows of a list literal `[a, b, ...]`, or `None` for anything else.
fn list(ast: &syntax::Ast, node: syntax::AstId) -> Option<&[syntax::AstId]> {
    match &ast.node(node).kind {
        syntax::AstKind::List(rows) => Some(rows),
        _ => None,
    }
}

/// A point: values for variables, as written on a command line (`x=4, y=pi/2`); a list
/// gives the elements of an indexed variable (`x=[1, 2]` is `x[0]=1, x[1]=2`).
#[derive(Debug, Clone, Default)]
pub struct Point {
    source: String,
    /// `(name, span, value)`; a list's elements are entries named `x[0]`, `x[1]`, ...
    entries: Vec<(String, crate::syntax::Span, f64)>,
    /// The position of each name in `entries`.
    index: HashMap<String, usize>,
    /// The names given a list, where they are written, and the list's shape.
    lists: Vec<(String, crate::syntax::Span, Vec<usize>)>,
    /// What the errors of [`check_names`](Self::check_names) and
    /// [`check_complete`](Self::check_complete) call the text (`--at` unless set).
    origin: Option<String>,
}

impl Point {
    /// Parses `name = value` pairs separated by commas; values may be constant formulas.
    pub fn parse(src: &str) -> Result<Point> {
        let (ast, bindings) = syntax::parse_bindings(src)?;
        let mut g = Graph::new();
        let functions = HashMap::new();
        let scope = Scope::new(src, &ast, &functions, derive);
        let mut entries: Vec<(String, crate::syntax::Span, f64)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::with_capacity(bindings.len());
        let mut lists: Vec<(String, crate::syntax::Span, Vec<usize>)> = Vec::new();
        let twice = |span, name: &str| Diagnostic::new(src, span, format!("`{name}` is given a value twice"));
        for b in &bindings {
            // `x` or, for `x[2] = ...`, the element's name.
            let name = scope.binding_name(b)?;
            if index.contains_key(&name) || lists.iter().any(|l| l.0 == name) {
                return Err(twice(b.name.span, &name).into());
            }
            // A list gives the elements: `x = [1, 2]` is `x[0] = 1, x[1] = 2`, and
            // `a = [[1, 2], [3, 4]]` is `a[0,0] = 1, ...`. The shape is read down the first
            // elements; every row must match it. Walked with a stack of (node, its index),
            // so a deep list cannot overflow the call stack. An element takes one number.
            let mut shape = Vec::new();
            let mut first = b.value;
            while let Some(rows) = list(&ast, first) {
                if !b.index.is_empty() {
                    return Err(Diagnostic::new(
                        src,
                        ast.span(first),
                        format!("`{name}` is one element: its value is a number"),
                    )
                    .into());
                }
                shape.push(rows.len());
                match rows.first() {
                    Some(&r) => first = r,
                    None => {
                        return Err(
                            Diagnostic::new(src, ast.span(first), "an empty list gives no values").into()
                        );
                    }
                }
            }
            if !shape.is_empty() {
                lists.push((name.clone(), b.name.span, shape.clone()));
            }
            let mut stack = vec![(b.value, Vec::new())];
            while let Some((node, at)) = stack.pop() {
                match (list(&ast, node), shape.get(at.len())) {
                    (Some(rows), Some(&n)) if rows.len() == n => {
                        for (k, &r) in rows.iter().enumerate().rev() {
                            let mut at = at.clone();
                            at.push(k);
                            stack.push((r, at));
                        }
                    }
                    (None, None) => {
                        let element = if at.is_empty() { name.clone() } else { element_name(&name, &at) };
                        let span = if at.is_empty() { b.name.span } else { ast.span(node) };
                        if index.contains_key(&element) {
                            return Err(twice(span, &element).into());
                        }
                        let id = scope.lower(&mut g, node)?;
                        if let Some(v) = variables(&g, &[id]).first() {
                            return Err(Diagnostic::new(
                                src,
                                ast.span(node),
                                format!("a value cannot use the variable `{v}`"),
                            )
                            .into());
                        }
                        let value = graph::eval(&g, &[id], &|_| None)?[0];
                        index.insert(element.clone(), entries.len());
                        entries.push((element, span, value));
                    }
                    _ => {
                        let dims = shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
                        return Err(Diagnostic::new(
                            src,
                            ast.span(node),
                            format!("`{name}` is a list of shape [{dims}]; this part does not fit it"),
                        )
                        .into());
                    }
                }
            }
        }
        Ok(Point { source: src.to_owned(), entries, index, lists, origin: None })
    }

    /// `(name, value)` pairs in the order written.
    pub fn values(&self) -> Vec<(&str, f64)> {
        self.entries.iter().map(|(n, _, v)| (n.as_str(), *v)).collect()
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.index.get(name).map(|&k| self.entries[k].2)
    }

    /// The point, with later errors pointing into the text as `origin` (a file's name)
    /// rather than `--at`.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Point {
        self.origin = Some(origin.into());
        self
    }

    fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or("--at")
    }

    /// The names given values, in the order written (a list's elements as `x[0]`, ...).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _, _)| n.as_str())
    }

    /// Errors (with a caret into the point's text) for a name not among `vars`. A list
    /// `x = [...]` needs elements `x[i]` among `vars`, but not every element of it.
    ///
    /// ```
    /// use symdiff::Point;
    /// let vars = ["x[0]".to_owned(), "x[1]".to_owned(), "y".to_owned()];
    /// Point::parse("x = [1, 2, 3], y = 4")?.check_names(&vars)?;
    /// let e = Point::parse("z = 1")?.check_names(&vars).unwrap_err();
    /// assert!(e.to_string().contains("`z` does not occur in the expression"));
    /// let e = Point::parse("x = 1")?.check_names(&vars).unwrap_err();
    /// assert!(e.to_string().contains("give its elements as a list"));
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn check_names(&self, vars: &[String]) -> Result<()> {
        let known: hashbrown::HashSet<&str> = vars.iter().map(String::as_str).collect();
        let indexed = |base: &str| vars.iter().any(|v| element(v).is_some_and(|(b, _)| b == base));
        for (base, span, _) in &self.lists {
            if !indexed(base) {
                let message = if known.contains(base.as_str()) {
                    format!("`{base}` is a number in the expression, not an indexed variable")
                } else {
                    format!("`{base}` does not occur in the expression")
                };
                return Err(Diagnostic::new(&self.source, *span, message)
                    .with_help("a list gives the elements of a variable written `x[i]`")
                    .with_origin(self.origin())
                    .into());
            }
        }
        let listed = |name: &str| element(name).is_some_and(|(b, _)| self.lists.iter().any(|l| l.0 == b));
        for (name, span, _) in &self.entries {
            if !known.contains(name.as_str()) && !listed(name) {
                let mut d = Diagnostic::new(
                    &self.source,
                    *span,
                    format!("`{name}` does not occur in the expression"),
                );
                if indexed(name) {
                    d = d.with_help(format!(
                        "`{name}` is indexed in the expression ({name}[i]): give its elements as a list, as in {name}=[1, 2]"
                    ));
                } else if let Some(s) = graph::lower::suggest(name, vars.iter().cloned()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(d.with_origin(self.origin()).into());
            }
        }
        Ok(())
    }

    /// Errors naming the first of `vars` without a value: an element outside the list given
    /// for its variable, or the first few without one.
    ///
    /// ```
    /// use symdiff::Point;
    /// let vars = ["x[0]".to_owned(), "x[4]".to_owned()];
    /// let e = Point::parse("x = [1, 2]")?.check_complete(&vars).unwrap_err();
    /// assert!(e.to_string().contains("`x[4]` is outside `x`, whose shape is [2]"));
    /// # Ok::<(), symdiff::Error>(())
    /// ```
    pub fn check_complete(&self, vars: &[String]) -> Result<()> {
        let missing: Vec<&String> = vars.iter().filter(|v| self.get(v).is_none()).collect();
        let Some(first) = missing.first() else { return Ok(()) };
        for m in &missing {
            if let Some((base, _)) = element(m)
                && let Some((_, span, shape)) = self.lists.iter().find(|l| l.0 == base)
            {
                let dims = shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
                return Err(Diagnostic::new(
                    &self.source,
                    *span,
                    format!("`{m}` is outside `{base}`, whose shape is [{dims}]"),
                )
                .with_help("indices start at 0 and stay below each dimension")
                .with_origin(self.origin())
                .into());
            }
        }
        const SHOWN: usize = 5;
        let mut list = missing.iter().take(SHOWN).map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        if missing.len() > SHOWN {
            list.push_str(&format!(", ... ({} in all)", missing.len()));
        }
        let example = match element(first) {
            Some((base, _)) => format!("{base}=[1, 2, ...]"),
            None => format!("{first}=1"),
        };
        Err(Error::Invalid(format!(
            "no value for {list}; give every variable a value with --at, as in --at {example}"
        )))
    }
}

/// Lowers `src` into `g` piece by piece ([`syntax::cut_sum`]), giving the same nodes as
/// lowering its one-piece syntax tree (the terms are lowered in the same order and summed by
/// the same calls), without ever holding the whole syntax tree. A formula that is not a sum is
/// one piece, lowered as the one-piece parse lowers it. `None` if anything fails (the nodes
/// built so far stay in `g`); the caller then parses the text in one piece, for the positioned
/// error.
///
/// On two threads the pieces are parsed by both (each claims the next piece nobody has),
/// while this thread lowers them in order: lowering builds the one graph and cannot be shared,
/// but parsing can, so neither thread waits for the other for long. A helper stays at most
/// [`AHEAD`] pieces ahead of the lowering, which bounds the syntax trees held at once.
fn lower_in_pieces(g: &mut Graph, src: &str, piece_bytes: usize, lets: graph::Lets<'_>) -> Option<Id> {
    // About one new node per ten bytes of a written-out sum (Rosenbrock 8 in 45 bytes a term,
    // Lennard-Jones 12 in 125).
    g.reserve(src.len() / 10);
    let pieces = syntax::cut_sum(src, piece_bytes);
    if pieces.len() == 1
        && let Some(inside) = syntax::wrapped_sum(src, piece_bytes)
    {
        return lower_wrapped(g, src, inside, piece_bytes, lets);
    }
    lower_sum(g, src, &pieces, lets)
}

/// A long sum inside parentheses with only signs and function calls around it
/// ([`syntax::wrapped_sum`], `log(exp(x0) + exp(x1) + ...)`): the sum `src[inside]` is lowered
/// in pieces first, then the text around it, with a name that text does not hold standing
/// for the sum. Nothing around the sum comes before it, so the nodes are built in the order,
/// and are the ones, that lowering the whole text builds. `None` if anything fails.
fn lower_wrapped(
    g: &mut Graph,
    src: &str,
    inside: std::ops::Range<usize>,
    piece_bytes: usize,
    lets: graph::Lets<'_>,
) -> Option<Id> {
    let pieces = syntax::cut_sum_in(src, inside.clone(), piece_bytes);
    let sum = lower_sum(g, src, &pieces, lets)?;
    // A name the text around the sum does not hold (that text ends in `(` before the sum and
    // starts with `)` after it, so no name of it runs into this one).
    let (before, after) = (&src[..inside.start], &src[inside.end..]);
    let name = (0..)
        .map(|k| format!("_sum{k}"))
        .find(|n| !before.contains(n.as_str()) && !after.contains(n.as_str()))?;
    let around = format!("{before}{name}{after}");
    let (ast, root) = syntax::parse_formula(&around, &|_| false, around.len()).ok()?;
    let functions = HashMap::from([(name, graph::lower::FnDef { params: Vec::new(), body: sum })]);
    let scope = Scope { src: &around, ast: &ast, functions: &functions, derive, lets, inline_lets: true };
    scope.lower(g, root).ok()
}

/// Lowers the pieces of one sum cut from `src` ([`syntax::cut_sum_in`]) in order, as
/// [`lower_in_pieces`] describes. `None` if anything fails.
fn lower_sum(g: &mut Graph, src: &str, pieces: &[syntax::Piece], lets: graph::Lets<'_>) -> Option<Id> {
    let functions = HashMap::new();
    let mut terms = Vec::new();
    let mut whole = None;
    let mut lower = |p: &syntax::Piece, parsed: Result<(syntax::Ast, syntax::AstId), ()>| {
        let (ast, root) = parsed.ok()?;
        let scope = Scope { src, ast: &ast, functions: &functions, derive, lets, inline_lets: true };
        if p.last && p.first.is_none() {
            whole = Some(scope.lower(g, root).ok()?); // not a sum: one piece
        } else {
            scope.lower_terms(g, root, p.negated, p.first, &mut terms).ok()?;
        }
        Some(ast)
    };
    let parse = |p: &syntax::Piece| syntax::parse_piece(src, p);
    if !graph::second_thread() || pieces.len() < 2 {
        for p in pieces {
            lower(p, parse(p))?;
        }
    } else {
        type Parsed = Result<(syntax::Ast, syntax::AstId), ()>;
        struct Shared {
            next: usize,                        // the first piece nobody has claimed
            lowered: usize,                     // pieces lowered so far
            stop: bool,                         // lowering is over (done or failed)
            slots: Vec<Option<(Parsed, bool)>>, // parsed pieces (by the helper?), until lowered
            garbage: Vec<syntax::Ast>,          // the helper's trees, back for it to free
        }
        let state = Mutex::new(Shared {
            next: 0,
            lowered: 0,
            stop: false,
            slots: (0..pieces.len()).map(|_| None).collect(),
            garbage: Vec::new(),
        });
        let changed = std::sync::Condvar::new();
        let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
        let ok = std::thread::scope(|s| {
            s.spawn(|| {
                loop {
                    let (i, garbage) = {
                        let mut st = lock();
                        while !st.stop && st.next < pieces.len() && st.next >= st.lowered + AHEAD {
                            st = changed.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        if st.stop || st.next >= pieces.len() {
                            break;
                        }
                        st.next += 1;
                        (st.next - 1, std::mem::take(&mut st.garbage))
                    };
                    // Trees are freed by the thread that allocated them: freeing another
                    // thread's allocations contends for its allocator arena.
                    drop(garbage);
                    let parsed = parse(&pieces[i]);
                    lock().slots[i] = Some((parsed, true));
                    changed.notify_all();
                }
                // Wait for the lowering to finish, then free what came back.
                let mut st = lock();
                while !st.stop {
                    st = changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                let garbage = std::mem::take(&mut st.garbage);
                drop(st);
                drop(garbage);
            });
            let mut ok = true;
            for (i, p) in pieces.iter().enumerate() {
                // The piece, once parsed (by the helper or here). While it is being parsed,
                // this thread parses the next piece nobody has claimed, if any, instead of
                // waiting.
                let (parsed, helper) = {
                    let mut st = lock();
                    loop {
                        if let Some(parsed) = st.slots[i].take() {
                            break parsed;
                        }
                        let j = st.next;
                        if j < pieces.len() && j <= i + AHEAD {
                            st.next += 1;
                            drop(st);
                            let parsed = parse(&pieces[j]);
                            st = lock();
                            st.slots[j] = Some((parsed, false));
                            continue;
                        }
                        st = changed.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let Some(ast) = lower(p, parsed) else {
                    ok = false;
                    break;
                };
                let mut st = lock();
                st.lowered = i + 1;
                if helper {
                    st.garbage.push(ast);
                } else {
                    drop(st);
                    drop(ast);
                }
                changed.notify_all();
            }
            lock().stop = true;
            changed.notify_all();
            ok
        });
        if !ok {
            return None;
        }
    }
    match whole {
        Some(id) => Some(id),
        None => graph::lower::finish_sum(g, &terms).ok(),
    }
}

/// How many pieces a helper thread parses ahead of the lowering, at most.
const AHEAD: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallible derivatives stop at the node budget and leave the graph as it was; the
    /// infallible ones have no limit.
    #[test]
    fn try_derivatives_keep_to_the_node_budget() {
        let f = Expr::parse("diff(x^y*y^x, x, 4)").unwrap();
        let before = f.graph().len();
        let size = f.graph().size();
        f.graph().set_budget(size + 50);
        for err in [
            f.try_nth_diff("x", 3).map(|_| ()),
            f.try_diff("y").map(|_| ()),
            f.try_gradient(&["x", "y"]).map(|_| ()),
            f.try_hessian(&["x", "y"]).map(|_| ()),
            crate::compile_gradient(&f, &["x", "y"]).map(|_| ()),
            crate::export_c(&f, &["x", "y"], "f").map(|_| ()),
        ] {
            let err = err.expect_err("over the budget");
            assert!(err.to_string().contains("operations (the limit"), "{err}");
            let after = f.graph().len();
            assert_eq!(after, before, "{err}: the failed call's nodes are forgotten");
        }
        let _ = f.nth_diff("x", 3);
        let grown = f.graph().len();
        assert!(grown > before + 50, "nth_diff itself has no limit");
        let g = Expr::parse("x*y").unwrap();
        assert_eq!(g.try_diff("x").unwrap().to_string(), "y");
        assert_eq!(g.try_gradient(&["x", "y"]).unwrap().len(), 2);
    }

    /// A parsed graph's node budget: `NODE_BUDGET`, or one node per byte of the text if more;
    /// text parsed into the graph later adds its share.
    #[test]
    fn node_budget_grows_with_the_text() {
        let long = format!("x^2 #{}", "-".repeat(graph::NODE_BUDGET));
        let check = |e: &Expr, want: usize| assert_eq!(e.graph().budget(), want);
        check(&Expr::parse("x").unwrap(), graph::NODE_BUDGET);
        check(&Expr::parse(&long).unwrap(), long.len());
        check(&Expr::parse(&long).unwrap().parse_with("y").unwrap(), long.len());
        check(&Expr::parse("x").unwrap().parse_with(&long).unwrap(), long.len());
    }

    /// A sum parsed in pieces (here cut at every term) is the same graph as in one piece: the
    /// same nodes, ids and printed form (a formula that is not a sum is one piece); text that
    /// does not parse, or lower, in pieces is left to the one-piece parse (`None`), whose
    /// error has the position.
    #[test]
    fn sums_parse_in_pieces_to_the_same_graph() {
        let check = |src: &str, in_pieces: bool| {
            let whole = Expr::parse_limited(src, 1 << 20);
            match (Expr::parse_in_pieces(src, 1, &graph::lower::no_lets), whole) {
                (Some(p), Ok(w)) => {
                    assert!(in_pieces, "{src}: parsed in pieces");
                    assert_eq!((p.id, p.graph().len()), (w.id, w.graph().len()), "{src}");
                    assert_eq!(p.to_string(), w.to_string(), "{src}");
                }
                (None, _) => assert!(!in_pieces, "{src}: not parsed in pieces"),
                (Some(_), Err(e)) => panic!("{src}: in pieces, but one piece fails: {e}"),
            }
            // The same into a graph that already has nodes (as `parse_with` reads a long sum).
            let base = || Expr::parse("x*y + sin(x - z) + a*b").unwrap();
            let (b, w) = (base(), base().parse_with(src));
            let p = lower_in_pieces(&mut b.graph(), src, 1, &graph::lower::no_lets);
            match (p, w) {
                (Some(p), Ok(w)) => {
                    assert_eq!((p, b.graph().len()), (w.id, w.graph().len()), "{src} beside");
                    assert_eq!(b.derived(p).to_string(), w.to_string(), "{src} beside");
                }
                (None, _) => assert!(!in_pieces, "{src}: not parsed in pieces beside"),
                (Some(_), Err(e)) => panic!("{src}: in pieces beside, but one piece fails: {e}"),
            }
        };
        check("100*(x1 - x0^2)^2 + (1 - x0)^2 + 100*(x2 - x1^2)^2 + (1 - x1)^2", true);
        check("-x - y + -z - -w + +v", true);
        check("a - (b - c) - (d + e) + f*(g - h) - 2^-x - 3", true);
        check("(a + b) + c - (d - e)", true);
        check("x + x - x + 2*x - y + y", true);
        check("sin(x - y) + exp(-x + y) - log(1 + x^2) + pi - e + diff(x^3 - x, x)", true);
        check("1 + 2 - 3 + x", true);
        check("x*y - y*x + x/y - y/x", true);
        check("x + 0", true);
        check("x", true); // one piece, lowered as one
        check("(x + y)", true);
        check("(x + y)^2 - sin(x - y)", true);
        check("x - y + ", false);
        check("x + sinn(y) - z", false);
        check("x + (y - z", false);
        check("x + y) - z", false);
        check("x + [1, 2] - y", false);
        check("(a - b) + (c - d) - ((e + f)) + +(g - h) - -(i + j) + k", true);
        check("((a - b) + c) - (d - e) + f", true);
        check("x + y #comment\n - (z - w) # more", true);
        check(
            "4*((1/((x0 - x1)^2 + (y0 - y1)^2))^6 - (1/((x0 - x1)^2 + (y0 - y1)^2))^3) + 4*(1/(x0 - x2)^2)^6",
            true,
        );
        check("(1.5e-3 - (a*exp(-b*0.25) + c))^2 + (2.5 - (a*exp(-b*1e2) + c))^2 - 1e-3", true);
        // What the byte scan of `cut_sum` must not take for signs between terms, or must.
        check("x1e-5 + 2E+3 - .5e-2*y + 2.e-3 - 7e+0", true);
        check("a - # a comment with ( and + in it\n b + c # ) -", true);
        check("sum(i = 0..2, x[i] - 1) - x[1] + x[2]^-2 - d - -e", true);
        check("α - β + γ*δ - 1", true);
        check("2e-x + y", false);
        check("x + 3 - let", false);
        // A sum inside parentheses (`syntax::wrapped_sum`): the sum in pieces, then around it.
        check("log(exp(x0) + exp(x1) - exp(x2) + exp(x0))", true);
        check("-log(exp(x) + exp(y))^2*z - 1", true);
        check("-(sqrt((a - b + c + a*b)))*y/x", true);
        check("exp(sin(x + y) + cos(x - y))^(x + y)", true);
        check("log(# a comment ( with - and )\n a + b - c)", true);
        check("(((a + b) - (c - d)))", true);
        check("log((a - b) + (c - d))*log(a - b)", true);
        check("sum(i = 0..2, x[i] - 1)", true); // not a wrapped sum: `=` inside
        check("diff(x^3 - x*y + y, x)", true); // not a wrapped sum: `,` inside
        check("log(x + y))", false);
        check("log(x + y", false);
        check("log(x + y]", false);
        check("log(x + y, z)", false);
        check("log(x + 1) +", false);
        check("log(x +) + 1", false);
        check("f(x + y)", false);
        check("log(_sum0 + x)", true);
        check("-log(a + _sum0 - c)*_sum0^2", true);
        check("((a + b) - c)*x - ((a*b)*c)^2", true);
        check("((a*b)*c/(d*e))^2", true);
        check("(-(a - b)*(c + d) - e)", true);
        check("log((a + b) - (c - d))", true);
    }

    #[test]
    fn eval_all_evaluates_in_one_pass() {
        let f = Expr::parse("x^2*y").unwrap();
        let grad = f.gradient(&["x", "y"]);
        assert_eq!(Expr::eval_all(&grad, &[("x", 3.0), ("y", 2.0)]).unwrap(), [12.0, 9.0]);
        assert!(Expr::eval_all(&grad, &[("x", 3.0)]).is_err());
    }
}
