//! Lowering: from a syntax tree to graph nodes.
//!
//! Owns name resolution for formulas: built-in functions (from the function table), the
//! constants `pi` and `e`, user-defined functions (inlined at each call by substitution),
//! and the `diff(expr, x[, n])` operator. Every node goes through the simplifying
//! constructors, so what comes out is canonical. Unknown names get "did you mean": an
//! unknown function against the functions in scope, and a new name that makes an operation
//! fail against the tensors in scope (`logsoftmax(logit)` means `logits`).
//!
//! The AST arena lists children before parents, so lowering is one forward scan over the
//! nodes under the root: no recursion, whatever the nesting depth.
//!
//! Derivatives belong to a later stage (`diff`), so `diff(...)` calls back through the
//! [`Derive`] function the caller passes in.
//!
//! **The node budget.** Lowering builds from user input, so it keeps the graph within its
//! node budget ([`Graph::check_budget`], `NODE_BUDGET`): after every syntax node, inside every
//! inlined user function (substitution checks as it goes) and inside every order of a
//! `diff(...)`. Past the budget it stops with an error at the part of the formula that grew
//! it, naming the limit. Nested `diff(diff(...))`, a chain of functions each differentiating
//! the previous one, or functions that call each other twice per level therefore end in an
//! error, not in the allocator.

use hashbrown::HashMap;
use smallvec::SmallVec;

use super::func::Func;
use super::node::{ALL_AXES, Constant, Graph, Id, Op, OverBudget, broadcast_shapes};
use crate::syntax::{Ast, AstId, AstKind, BinOp, Diagnostic, Index, Reduce, Span};

/// A user-defined function `f(x, y) = body`. The body is a node over the parameters'
/// variable nodes; a call substitutes the arguments for them.
#[derive(Debug, Clone)]
pub struct FnDef {
    pub params: Vec<String>,
    pub body: Id,
}

/// `d expr / d var` (one order), supplied by the caller; it stops at the node budget.
pub type Derive = fn(&mut Graph, Id, Id) -> Result<Id, OverBudget>;

/// Largest order `diff(e, x, n)` and `d^n/dx^n` accept: each order can double the size.
pub const MAX_ORDER: u32 = 64;

/// Where a lowering happens: the source text (for diagnostics) and the names in scope.
pub struct Scope<'a> {
    pub src: &'a str,
    pub ast: &'a Ast,
    pub functions: &'a HashMap<String, FnDef>,
    pub derive: Derive,
    /// Values of names for the bounds of sums and for indices (`let n = 1000`).
    pub lets: Lets<'a>,
    /// Whether a name with a value in `lets` is that number everywhere in the formula (the
    /// library's and the command line's `let`), or only in bounds and indices (the REPL,
    /// where a named value stays a name until a result is evaluated).
    pub inline_lets: bool,
}

/// The values of `let` names, by name.
pub type Lets<'a> = &'a dyn Fn(&str) -> Option<f64>;

/// No `let` names.
pub fn no_lets(_: &str) -> Option<f64> {
    None
}

/// How deeply sums and products with an index may nest: each level lowers its body once per
/// index value, by a recursive call.
pub const MAX_NESTED_SUMS: usize = 16;

/// Largest index or bound magnitude (indices and term counts stay far inside `u32`).
pub const MAX_INDEX: i64 = 1 << 31;

/// The indices of the enclosing sums and their current values, innermost last.
type Env<'s> = [(&'s str, i64)];

/// Built-in functions that are not in the function table.
pub const BUILTINS: &[&str] =
    &["sqrt", "ln", "pow", "diff", "sum", "mean", "max", "logsumexp", "transpose", "logsoftmax", "onehot"];

/// Whether `name` is a built-in function.
pub fn is_builtin_function(name: &str) -> bool {
    builtin_names().any(|b| b == name)
}

/// Every built-in name a call may use, for "did you mean" suggestions.
fn builtin_names() -> impl Iterator<Item = &'static str> {
    super::func::FUNCS.iter().map(|d| d.name).chain(BUILTINS.iter().copied())
}

impl<'a> Scope<'a> {
    /// A scope without `let` names.
    pub fn new(
        src: &'a str,
        ast: &'a Ast,
        functions: &'a HashMap<String, FnDef>,
        derive: Derive,
    ) -> Scope<'a> {
        Scope { src, ast, functions, derive, lets: &no_lets, inline_lets: false }
    }
}

impl Scope<'_> {
    fn err(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.src, span, message)
    }

    /// Lowers the subtree at `root`.
    pub fn lower(&self, g: &mut Graph, root: AstId) -> Result<Id, Diagnostic> {
        Ok(self.lower_many(g, &[root])?[0])
    }

    /// Lowers the subtrees at `roots` (in one forward scan, as if they were one tree), giving
    /// one node per root.
    pub fn lower_many(&self, g: &mut Graph, roots: &[AstId]) -> Result<Vec<Id>, Diagnostic> {
        self.scan(g, roots, &[], &[])
    }

    /// [`lower_many`](Self::lower_many), giving the negation of each root whose entry in
    /// `negate` is true (missing entries: false), built right after the root itself, as a
    /// chain builds the negation of a subtracted operand.
    fn scan(
        &self,
        g: &mut Graph,
        roots: &[AstId],
        negate: &[bool],
        env: &Env,
    ) -> Result<Vec<Id>, Diagnostic> {
        // The subtrees' smallest id, by an explicit stack: the arrays below cover ids from
        // there to the last root only, so lowering the k-th of many `at` values costs in
        // proportion to that value, not to k.
        let top = roots.iter().map(|r| r.0 as usize).max().unwrap_or(0);
        let mut base = top;
        let mut stack = roots.to_vec();
        while let Some(a) = stack.pop() {
            base = base.min(a.0 as usize);
            stack.extend(children(&self.ast.node(a).kind));
        }
        // Mark the subtrees: children have smaller ids, so one backward pass finds them.
        // Index `i` of the arrays is node `base + i`.
        let n = top + 1 - base;
        let at = |a: &AstId| a.0 as usize - base;
        let mut inside = vec![false; n];
        for r in roots {
            inside[at(r)] = true;
        }
        for i in (0..n).rev() {
            if inside[i] {
                for c in children(&self.ast.node(AstId((base + i) as u32)).kind) {
                    inside[at(&c)] = true;
                }
            }
        }
        // A chain `a + b - c + ...` (or `a * b / c * ...`) is lowered with one n-ary call at
        // its top, not one call per operator: building it pairwise would re-flatten the
        // growing sum at every step. `chained[i]`: node i's parent continues its chain.
        let family = |k: &AstKind| match k {
            AstKind::Binary(BinOp::Add | BinOp::Sub, ..) => 1,
            AstKind::Binary(BinOp::Mul | BinOp::Div, ..) => 2,
            _ => 0,
        };
        let mut chained = vec![false; n];
        for (i, _) in inside.iter().enumerate().filter(|(_, inside)| **inside) {
            let kind = &self.ast.node(AstId((base + i) as u32)).kind;
            if let AstKind::Binary(_, a, _) = kind
                && family(kind) != 0
                && family(&self.ast.node(*a).kind) == family(kind)
            {
                chained[at(a)] = true;
            }
        }
        let mut negated = vec![false; n];
        for (r, _) in roots.iter().zip(negate).filter(|(_, neg)| **neg) {
            negated[at(r)] = true;
        }
        let mut out: HashMap<usize, Id> = HashMap::new();
        let mut ids = Lowered { base, ids: vec![None; n], links: vec![None; n] };
        // Names that became new (scalar) variables here, where they were written.
        let mut fresh: Vec<(&str, Span)> = Vec::new();
        // What each name resolved to, so that a name written a million times is looked up
        // (in the functions, the function table and the variables) once.
        let mut resolved: HashMap<&str, Id> = HashMap::with_capacity(n / 4);
        for i in 0..n {
            if !inside[i] {
                continue;
            }
            let node = self.ast.node(AstId((base + i) as u32));
            if chained[i] {
                // A link below the top of its chain (`a - b` in `a - b - c`): its right
                // operand, negated or inverted now, right after it was lowered, so that the
                // chain's nodes are built in the order they are written (as `Expr`'s
                // operators build them); the top builds the one n-ary node.
                if let AstKind::Binary(op, _, b) = &node.kind {
                    ids.links[i] = Some(link(g, *op, ids.get(b)));
                }
                continue;
            }
            let id = match &node.kind {
                AstKind::Num(x) => Ok(g.num(*x)),
                AstKind::Name(name) => match resolved.get(&**name) {
                    Some(&id) => Ok(id),
                    None if let Some(&(_, k)) = env.iter().rev().find(|(n, _)| *n == &**name) => {
                        let id = g.num(k as f64);
                        resolved.insert(name, id);
                        Ok(id)
                    }
                    None => {
                        // One look-up: a variable node built just now is a new name.
                        let before = g.len();
                        let id = self.name(g, name, node.span)?;
                        if id.index() >= before && g.var_name(id).is_some() {
                            fresh.push((name, node.span));
                        }
                        resolved.insert(name, id);
                        Ok(id)
                    }
                },
                AstKind::Neg(a) => Ok(g.neg(ids.get(a))),
                AstKind::Binary(BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div, ..) => {
                    self.chain(g, AstId((base + i) as u32), &ids)
                }
                AstKind::Binary(BinOp::Pow, a, b) => {
                    let (a, b) = (ids.get(a), ids.get(b));
                    self.check(g, Op::Pow, &[a, b], node.span).map(|_| g.pow(a, b))
                }
                AstKind::Binary(BinOp::MatMul, a, b) => {
                    let (a, b) = (ids.get(a), ids.get(b));
                    self.check(g, Op::MatMul, &[a, b], node.span).map(|_| g.matmul(a, b))
                }
                AstKind::Call(c) => {
                    let vals: Vec<Id> = c.args.iter().map(|a| ids.get(a)).collect();
                    self.call(g, &c.name, c.name_span, node.span, &c.args, &vals)
                }
                AstKind::Index(ix) => self.element(g, ix, env),
                AstKind::Reduce(r) => self.reduce(g, r, node.span, env),
                AstKind::List(_) => Err(self
                    .err(node.span, "a tensor literal can only be given to a name")
                    .with_help("write `w = [[1], [2]]`, then use `w`")),
            };
            let id = id.map_err(|d| self.misspelt(g, &fresh, node.span).unwrap_or(d))?;
            ids.ids[i] = Some(id);
            if negated[i] {
                out.insert(i, g.neg(id));
            }
            g.check_budget().map_err(|b| self.err(node.span, b.message("this expression")))?;
        }
        Ok(roots.iter().map(|r| out.get(&at(r)).copied().unwrap_or_else(|| ids.get(r))).collect())
    }

    /// The terms of the sum (or difference) at `root`, lowered (subtracted ones negated),
    /// appended to `terms` left to right; the first one is subtracted if `negated`.
    /// [`finish_sum`] builds the sum from them exactly as lowering the whole chain would: this
    /// is how a long sum is lowered in pieces. `first`: the chain's nodes start
    /// there (a node starting later is a sum in parentheses, one term); `None`: every `+ -`
    /// on the left spine is the chain's, as at the start of a formula.
    pub fn lower_terms(
        &self,
        g: &mut Graph,
        root: AstId,
        negated: bool,
        first: Option<usize>,
        terms: &mut Vec<Id>,
    ) -> Result<(), Diagnostic> {
        // The left spine of `+ -` nodes, as `chain` walks it: right operands, top first.
        let mut spine = Vec::new();
        let mut cur = root;
        while let AstKind::Binary(op @ (BinOp::Add | BinOp::Sub), a, b) = &self.ast.node(cur).kind
            && first.is_none_or(|f| self.ast.span(cur).start == f)
        {
            spine.push((*b, *op == BinOp::Sub));
            cur = *a;
        }
        spine.push((cur, negated));
        spine.reverse();
        let roots: Vec<AstId> = spine.iter().map(|t| t.0).collect();
        let negate: Vec<bool> = spine.iter().map(|t| t.1).collect();
        terms.extend(self.scan(g, &roots, &negate, &[])?);
        Ok(())
    }

    /// An operation at `span` failed: if a name in it that became a new scalar variable is a
    /// misspelling of a defined tensor (`logsoftmax(logit)` for `logits`), that is the error
    /// to report, not the shapes.
    fn misspelt(&self, g: &Graph, fresh: &[(&str, Span)], span: Span) -> Option<Diagnostic> {
        let tensors = || {
            self.functions
                .iter()
                .filter(|(_, d)| d.params.is_empty() && !g.is_scalar(d.body))
                .map(|(name, _)| name.clone())
        };
        fresh.iter().filter(|(_, at)| at.start >= span.start && at.end <= span.end).find_map(|&(name, at)| {
            let best = suggest(name, tensors())?;
            Some(self.err(at, format!("unknown name `{name}`")).with_help(format!("did you mean `{best}`?")))
        })
    }

    /// Lowers the chain of `+ -` (or `* /`) whose top is `top`: walk down the left spine
    /// collecting right operands, then build one n-ary node. Subtracted and divided operands
    /// were negated or inverted as the scan passed their links (`links`); the top's own
    /// right operand, which was just lowered, is negated or inverted here, so that the nodes
    /// are built in the order they are written, as `Expr`'s operators build `a - b - c`, and
    /// a formula built in code is the node its text parses to.
    fn chain(&self, g: &mut Graph, top: AstId, ids: &Lowered) -> Result<Id, Diagnostic> {
        let additive = matches!(self.ast.node(top).kind, AstKind::Binary(BinOp::Add | BinOp::Sub, ..));
        let mut items = Vec::new();
        let mut cur = top;
        loop {
            match &self.ast.node(cur).kind {
                AstKind::Binary(op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div), a, b)
                    if matches!(op, BinOp::Add | BinOp::Sub) == additive =>
                {
                    items.push(if cur == top { link(g, *op, ids.get(b)) } else { ids.link(&cur) });
                    cur = *a;
                }
                _ => {
                    items.push(ids.get(&cur));
                    break;
                }
            }
        }
        items.reverse();
        let op = if additive { Op::Add } else { Op::Mul };
        self.check(g, op, &items, self.ast.span(top))?;
        Ok(if additive { g.add(&items) } else { g.mul(&items) })
    }

    /// Errors, at `span`, if `op` does not accept arguments of these shapes.
    fn check(&self, g: &Graph, op: Op, args: &[Id], span: Span) -> Result<Vec<usize>, Diagnostic> {
        // Scalars always combine elementwise: the common case costs one look at each argument.
        if matches!(op, Op::Add | Op::Mul | Op::Pow) && args.iter().all(|&a| g.is_scalar(a)) {
            return Ok(Vec::new());
        }
        let shapes: Vec<&[usize]> = args.iter().map(|a| g.shape(*a)).collect();
        g.result_shape(op, &shapes).map_err(|e| self.err(span, e.0))
    }

    /// A whole number from a constant argument, within `range`.
    fn integer(
        &self,
        g: &Graph,
        arg: Id,
        at: AstId,
        what: &str,
        range: std::ops::Range<usize>,
    ) -> Result<usize, Diagnostic> {
        match g.as_num(arg) {
            Some(k) if k.fract() == 0.0 && k >= range.start as f64 && k < range.end as f64 => Ok(k as usize),
            _ => Err(self.err(
                self.ast.span(at),
                format!(
                    "{what} must be a whole number from {} to {}",
                    range.start,
                    range.end.saturating_sub(1)
                ),
            )),
        }
    }

    fn name(&self, g: &mut Graph, name: &str, span: Span) -> Result<Id, Diagnostic> {
        if let Some(def) = self.functions.get(name)
            && def.params.is_empty()
        {
            return Ok(def.body); // a named expression
        }
        if self.functions.contains_key(name) || Func::from_name(name).is_some() {
            return Err(self
                .err(span, format!("`{name}` is a function, not a value"))
                .with_help(format!("call it, as in `{name}(x)`")));
        }
        if self.inline_lets
            && let Some(v) = (self.lets)(name)
        {
            return Ok(g.num(v));
        }
        Ok(match name {
            "pi" => g.constant(Constant::Pi),
            "e" => g.constant(Constant::E),
            _ => g.var(name),
        })
    }

    /// The name a binding gives a value to: `x` for `x = ...`, the element's name `x[3]` for
    /// `x[3] = ...` (indices as in a formula: whole numbers from numbers and let values,
    /// positioned errors).
    pub fn binding_name(&self, b: &crate::syntax::Binding) -> Result<String, Diagnostic> {
        if b.index.is_empty() {
            return Ok(b.name.text.clone());
        }
        let ix = Index { name: b.name.text.clone(), name_span: b.name.span, indices: b.index.clone() };
        let mut g = Graph::new();
        let id = self.element(&mut g, &ix, &[])?;
        Ok(g.var_name(id).unwrap_or_default().to_owned())
    }

    /// `x[i]`: the scalar variable named `x[3]` for the index's value 3 (`a[1,2]` for two).
    fn element(&self, g: &mut Graph, ix: &Index, env: &Env) -> Result<Id, Diagnostic> {
        let base = ix.name.as_str();
        let what = if env.iter().any(|(n, _)| *n == base) {
            Some("the index of a sum, a number")
        } else if self.functions.get(base).is_some_and(|d| !d.params.is_empty()) || is_builtin_function(base)
        {
            Some("a function")
        } else if self.functions.contains_key(base) {
            Some("a named expression")
        } else if matches!(base, "pi" | "e") || (self.inline_lets && (self.lets)(base).is_some()) {
            Some("a constant")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(self
                .err(ix.name_span, format!("`{base}` is {what}; only a variable can be indexed"))
                .with_help("an indexed variable is a name that has no other meaning, as in `x[i]`"));
        }
        let mut at: SmallVec<[usize; 2]> = SmallVec::new();
        for &a in &ix.indices {
            let i = self.whole(a, env, "an index")?;
            if i < 0 {
                return Err(self
                    .err(self.ast.span(a), format!("an index must be 0 or more, here it is {i}"))
                    .with_help("indices start at 0: the first element of `x` is `x[0]`"));
            }
            at.push(i as usize);
        }
        Ok(g.var(&element_name(base, &at)))
    }

    /// `sum(i = lo..hi, body)` or `prod(...)`: the body lowered once per index value, `lo` to
    /// `hi` with both included, into one n-ary node (as the written-out sum would be; the
    /// compiler recovers the loop). An empty range is the sum 0 or the product 1.
    fn reduce(&self, g: &mut Graph, r: &Reduce, span: Span, env: &Env) -> Result<Id, Diagnostic> {
        let additive = match r.name.as_str() {
            "sum" => true,
            "prod" => false,
            other => {
                return Err(self
                    .err(r.name_span, format!("`{other}` does not take an index range"))
                    .with_help("only `sum(i = a..b, ...)` and `prod(i = a..b, ...)` do"));
            }
        };
        let index = r.index.text.as_str();
        if is_builtin_function(index) || self.functions.contains_key(index) || matches!(index, "pi" | "e") {
            return Err(self.err(
                r.index.span,
                format!("`{index}` already has a meaning; an index needs a name of its own"),
            ));
        }
        if env.len() >= MAX_NESTED_SUMS {
            return Err(self.err(span, format!("sums and products nest at most {MAX_NESTED_SUMS} deep here")));
        }
        let lo = self.whole(r.lo, env, "a bound")?;
        let hi = self.whole(r.hi, env, "a bound")?;
        let count = if hi >= lo { (hi - lo + 1) as usize } else { 0 };
        if count > g.budget() {
            return Err(self.err(
                span,
                format!(
                    "this {} has {count} terms, more than the node budget of {} allows",
                    if additive { "sum" } else { "product" },
                    g.budget()
                ),
            ));
        }
        let mut inner: Vec<(&str, i64)> = env.to_vec();
        inner.push((index, lo));
        let mut terms = Vec::with_capacity(count);
        for k in lo..=hi {
            inner.last_mut().expect("pushed above").1 = k;
            terms.push(self.scan(g, &[r.body], &[], &inner)?[0]);
        }
        Ok(match terms.len() {
            0 => g.num(if additive { 0.0 } else { 1.0 }),
            1 => terms[0],
            _ => {
                let op = if additive { Op::Add } else { Op::Mul };
                self.check(g, op, &terms, span)?;
                if additive { g.add(&terms) } else { g.mul(&terms) }
            }
        })
    }

    /// A bound or an index: integer arithmetic (`+ - * / ^`, parentheses) on numbers, `let`
    /// names and the indices of enclosing sums, computed now. `what` names it in errors.
    fn whole(&self, root: AstId, env: &Env, what: &str) -> Result<i64, Diagnostic> {
        // The subtree in id order: children first (see `syntax::ast`), no recursion.
        let mut ids = vec![root];
        let mut k = 0;
        while let Some(&id) = ids.get(k) {
            k += 1;
            ids.extend(self.ast.node(id).kind.children());
        }
        ids.sort_unstable();
        let mut val: HashMap<AstId, f64> = HashMap::with_capacity(ids.len());
        for id in ids {
            let node = self.ast.node(id);
            let x = match &node.kind {
                AstKind::Num(x) => *x,
                AstKind::Name(n) => match env.iter().rev().find(|(m, _)| *m == &**n) {
                    Some(&(_, k)) => k as f64,
                    None => match (self.lets)(n) {
                        Some(v) => v,
                        None => {
                            return Err(self
                                .err(node.span, format!("`{n}` has no value here: {what} must be known when the formula is read"))
                                .with_help(format!(
                                    "bounds and indices are numbers, the indices of enclosing sums and names given a value: `let {n} = 10` in the REPL or a model file, `--let {n}=10` on the command line"
                                )));
                        }
                    },
                },
                AstKind::Neg(a) => -val[a],
                AstKind::Binary(
                    op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow),
                    a,
                    b,
                ) => {
                    let (a, b) = (val[a], val[b]);
                    match op {
                        BinOp::Add => a + b,
                        BinOp::Sub => a - b,
                        BinOp::Mul => a * b,
                        BinOp::Div if b == 0.0 => {
                            return Err(self.err(node.span, format!("division by zero in {what}")));
                        }
                        BinOp::Div => a / b,
                        _ => a.powf(b),
                    }
                }
                _ => {
                    return Err(self
                        .err(node.span, format!("{what} must be whole-number arithmetic, not this"))
                        .with_help("bounds and indices use + - * / ^ on numbers and names with values"));
                }
            };
            if x.is_nan() || x.abs() > MAX_INDEX as f64 {
                return Err(
                    self.err(node.span, format!("{what} is out of range here (at most {MAX_INDEX} in size)"))
                );
            }
            val.insert(id, x);
        }
        let x = val[&root];
        if x.fract() != 0.0 {
            return Err(self.err(
                self.ast.span(root),
                format!("{what} must be a whole number, here it is {}", super::print::format_number(x)),
            ));
        }
        Ok(x as i64)
    }

    fn arity(&self, name: &str, span: Span, want: &[usize], got: usize) -> Result<(), Diagnostic> {
        if want.contains(&got) {
            return Ok(());
        }
        let want_s = match want {
            [1] => "1 argument".to_owned(),
            [n] => format!("{n} arguments"),
            [a, b] => format!("{a} or {b} arguments"),
            _ => format!("{want:?} arguments"),
        };
        let were = if got == 1 { "was" } else { "were" };
        Err(self.err(span, format!("`{name}` takes {want_s}, but {got} {were} given")))
    }

    fn call(
        &self,
        g: &mut Graph,
        name: &str,
        name_span: Span,
        span: Span,
        arg_asts: &[AstId],
        args: &[Id],
    ) -> Result<Id, Diagnostic> {
        if let Some(def) = self.functions.get(name) {
            self.arity(name, span, &[def.params.len()], args.len())?;
            let params: Vec<Id> = def.params.iter().map(|p| g.var(p)).collect();
            if args.iter().any(|a| !g.is_scalar(*a)) {
                let bind: HashMap<Id, Vec<usize>> =
                    params.iter().zip(args).map(|(&p, &a)| (p, g.shape(a).to_vec())).collect();
                g.shape_under(def.body, &bind)
                    .map_err(|e| self.err(span, format!("in `{name}`: {}", e.0)))?;
            }
            let map: HashMap<Id, Id> = params.into_iter().zip(args.iter().copied()).collect();
            return try_substitute(g, def.body, &map).map_err(|b| {
                self.err(span, b.message(&format!("this call of `{name}`"))).with_help(
                    "a call builds the function's body for its arguments, so functions that call the one before twice double at every level",
                )
            });
        }
        if let Some(f) = Func::from_name(name).or(if name == "ln" { Some(Func::Log) } else { None }) {
            self.arity(name, span, &[1], args.len())?;
            return Ok(g.func(f, args[0]));
        }
        match name {
            "sqrt" => {
                self.arity(name, span, &[1], args.len())?;
                Ok(g.powi(args[0], 0.5))
            }
            "pow" => {
                self.arity(name, span, &[2], args.len())?;
                self.check(g, Op::Pow, args, span)?;
                Ok(g.pow(args[0], args[1]))
            }
            "logsumexp" => {
                // m + log(sum(exp(a - m))) with m the maximum over the axis: never overflows.
                self.arity(name, span, &[1, 2], args.len())?;
                let rank = g.shape(args[0]).len();
                if rank == 0 {
                    return Ok(args[0]);
                }
                let axis = match (args.get(1), arg_asts.get(1)) {
                    (Some(&k), Some(&at)) => self.integer(g, k, at, "the axis", 0..rank)?,
                    _ => rank - 1,
                };
                let m = g.max(args[0], Some(axis));
                let mut kept = g.shape(args[0]).to_vec();
                kept[axis] = 1;
                let kept = g.shape_id(&kept);
                let full = g.shape_id_of(args[0]);
                let mk = g.reshape(m, kept);
                let mb = g.broadcast(mk, full);
                let d = g.sub(args[0], mb);
                let e = g.func(Func::Exp, d);
                let s = g.sum(e, Some(axis));
                let l = g.func(Func::Log, s);
                Ok(g.add(&[m, l]))
            }
            "max" => {
                self.arity(name, span, &[1, 2], args.len())?;
                let rank = g.shape(args[0]).len();
                if args.len() == 2 && rank == 0 {
                    return Err(self.err(span, "a scalar has no axes; write `max(x)`"));
                }
                let axis = match (args.get(1), arg_asts.get(1)) {
                    (Some(&k), Some(&at)) => Some(self.integer(g, k, at, "the axis", 0..rank)?),
                    _ => None,
                };
                Ok(g.max(args[0], axis))
            }
            "sum" | "mean" => {
                self.arity(name, span, &[1, 2], args.len())?;
                let rank = g.shape(args[0]).len();
                if args.len() == 2 && rank == 0 {
                    return Err(self.err(span, format!("a scalar has no axes; write `{name}(x)`")));
                }
                let axis = match (args.get(1), arg_asts.get(1)) {
                    (Some(&k), Some(&at)) => Some(self.integer(g, k, at, "the axis", 0..rank)?),
                    _ => None,
                };
                let total = g.sum(args[0], axis);
                if name == "sum" {
                    return Ok(total);
                }
                let count: usize = match axis {
                    Some(k) => g.shape(args[0])[k],
                    None => g.shape(args[0]).iter().product(),
                };
                let inv = g.num(1.0 / count.max(1) as f64);
                Ok(g.mul(&[inv, total]))
            }
            "transpose" => {
                self.arity(name, span, &[1], args.len())?;
                self.check(g, Op::Transpose, args, span)?;
                Ok(g.transpose(args[0]))
            }
            "logsoftmax" => {
                self.arity(name, span, &[1], args.len())?;
                self.check(g, Op::LogSoftmax, args, span)?;
                Ok(g.log_softmax(args[0]))
            }
            "onehot" => {
                self.arity(name, span, &[2], args.len())?;
                let k = self.integer(g, args[1], arg_asts[1], "the number of classes", 1..1 << 24)?;
                Ok(g.one_hot(args[0], k))
            }
            "diff" => {
                self.arity(name, span, &[2, 3], args.len())?;
                if !g.is_scalar(args[0]) {
                    return Err(self
                        .err(self.ast.span(arg_asts[0]), "`diff` differentiates scalar expressions")
                        .with_help("for tensors, use `grad EXPR wrt NAME`"));
                }
                let var = args[1];
                if !matches!(g.op(var), Op::Var(_)) {
                    return Err(self.err(
                        self.ast.span(arg_asts[1]),
                        "the second argument of `diff` must be a variable name",
                    ));
                }
                let order = match args.get(2) {
                    None => 1,
                    Some(&n) => {
                        match g.as_num(n) {
                            Some(k) if k.fract() == 0.0 && (0.0..=MAX_ORDER as f64).contains(&k) => k as u32,
                            _ => {
                                return Err(self.err(
                                self.ast.span(arg_asts[2]),
                                format!("the order of a derivative must be a whole number from 0 to {MAX_ORDER}"),
                            ));
                            }
                        }
                    }
                };
                // One order at a time, within the node budget, so that a derivative that swells
                // (`diff(log(1 + x^x), x, 40)` doubles at every order) stops with an error
                // instead of running for hours or exhausting memory.
                let mut d = args[0];
                for k in 1..=order {
                    d = (self.derive)(g, d, var).map_err(|b| {
                        let what = if order == 1 {
                            "this derivative".to_owned()
                        } else {
                            format!("the derivative of order {order}")
                        };
                        let help = match k {
                            1 => "differentiate a simpler expression".to_owned(),
                            _ => format!("orders up to {} fit; ask for a lower order", k - 1),
                        };
                        self.err(name_span, b.message(&what)).with_help(help)
                    })?;
                }
                Ok(d)
            }
            _ => {
                let mut d = self.err(name_span, format!("unknown function `{name}`"));
                let candidates = builtin_names().map(str::to_owned).chain(self.functions.keys().cloned());
                if let Some(best) = suggest(name, candidates) {
                    d = d.with_help(format!("did you mean `{best}`?"));
                }
                Err(d)
            }
        }
    }
}

/// The sum of `items` (from [`Scope::lower_terms`], subtracted terms already negated right
/// after they were lowered): the same calls, in the same order, as lowering the chain
/// `t0 ± t1 ± ...` in one piece (`chain`), so the same nodes. `Err` if the
/// terms do not add up (shapes) or the sum is over the node budget; the caller then lowers
/// the text in one piece for the positioned error.
pub fn finish_sum(g: &mut Graph, items: &[Id]) -> Result<Id, ()> {
    let shapes: Vec<&[usize]> = items.iter().map(|&a| g.shape(a)).collect();
    if !items.iter().all(|&a| g.is_scalar(a)) && g.result_shape(Op::Add, &shapes).is_err() {
        return Err(());
    }
    let sum = g.add(items);
    g.check_budget().map_err(|_| ())?;
    Ok(sum)
}

/// The children of a syntax node that a scan lowers: none of an index's or a sum's, whose
/// subtrees are computed ([`Scope::whole`]) or lowered once per index value
/// ([`Scope::reduce`]) by the node itself.
fn children(k: &AstKind) -> SmallVec<[AstId; 4]> {
    match k {
        AstKind::Index(_) | AstKind::Reduce(_) => SmallVec::new(),
        other => other.children(),
    }
}

/// The right operand of a link `a op b` of a chain, as the chain's n-ary node takes it:
/// `-b` for `a - b`, `b^-1` for `a / b`, else `b`.
fn link(g: &mut Graph, op: BinOp, b: Id) -> Id {
    match op {
        BinOp::Sub => g.neg(b),
        BinOp::Div => g.recip(b),
        _ => b,
    }
}

/// The nodes lowered so far, by syntax node (from `base` on).
struct Lowered {
    base: usize,
    ids: Vec<Option<Id>>,
    /// For a link below the top of a chain, its right operand as the chain takes it
    /// ([`link`]).
    links: Vec<Option<Id>>,
}

impl Lowered {
    fn get(&self, a: &AstId) -> Id {
        self.ids[a.0 as usize - self.base].expect("children are lowered before their parents")
    }

    fn link(&self, a: &AstId) -> Id {
        self.links[a.0 as usize - self.base].expect("links are lowered before the top of their chain")
    }
}

/// Rebuilds `id`'s operator over new arguments through the simplifying constructors.
pub fn rebuild(g: &mut Graph, id: Id, args: &[Id]) -> Id {
    let op = g.op(id);
    rebuild_op(g, op, args).unwrap_or(id)
}

/// Builds `op` over `args` through the simplifying constructors (`None` for leaves). A
/// broadcast keeps its target unless its argument grew past it (substituting a tensor for a
/// scalar variable).
fn rebuild_op(g: &mut Graph, op: Op, args: &[Id]) -> Option<Id> {
    Some(match op {
        Op::Num(_) | Op::Const(_) | Op::Var(_) => return None,
        Op::Add => g.add(args),
        Op::Mul => g.mul(args),
        Op::Pow => g.pow(args[0], args[1]),
        Op::Func(f) => g.func(f, args[0]),
        Op::MatMul => g.matmul(args[0], args[1]),
        Op::Sum(axis) => g.sum(args[0], (axis != ALL_AXES).then_some(axis as usize)),
        Op::Max(axis) => g.max(args[0], (axis != ALL_AXES).then_some(axis as usize)),
        Op::Broadcast(s) => {
            let target =
                broadcast_shapes(g.shape_of(s), g.shape(args[0])).unwrap_or_else(|_| g.shape_of(s).to_vec());
            let t = g.shape_id(&target);
            g.broadcast(args[0], t)
        }
        Op::Reshape(s) => g.reshape(args[0], s),
        Op::Transpose => g.transpose(args[0]),
        Op::LogSoftmax => g.log_softmax(args[0]),
        Op::OneHot(k) => g.one_hot(args[0], k as usize),
    })
}

/// `root` with every node in `map` replaced by its image (simultaneously), re-simplified.
pub fn substitute(g: &mut Graph, root: Id, map: &HashMap<Id, Id>) -> Id {
    g.unbudgeted(|g| try_substitute(g, root, map)).unwrap_or(root)
}

/// [`substitute`], stopping with an error once the graph is over its node budget (inlining a
/// user's function can multiply sizes: `f2(x) = f1(x) + f1(x + 1)` doubles at every level).
pub fn try_substitute(g: &mut Graph, root: Id, map: &HashMap<Id, Id>) -> Result<Id, OverBudget> {
    let order = g.reachable(&[root]);
    let mut new: HashMap<Id, Id> = HashMap::with_capacity(order.len());
    let mut args = Vec::new();
    for &id in &order {
        let image = match map.get(&id) {
            Some(&to) => to,
            None => rebuild_over(g, id, &new, &mut args),
        };
        new.insert(id, image);
        g.check_budget()?;
    }
    Ok(new[&root])
}

/// `id` over the images `new` of its arguments: itself when none changed, else rebuilt
/// (`args` is scratch).
pub fn rebuild_over(g: &mut Graph, id: Id, new: &HashMap<Id, Id>, args: &mut Vec<Id>) -> Id {
    args.clear();
    let mut changed = false;
    for a in g.args(id) {
        let na = new[a];
        changed |= na != *a;
        args.push(na);
    }
    if changed { rebuild(g, id, args) } else { id }
}

/// The closest candidate within edit distance 2 (for "did you mean"); ties go to the
/// longer common prefix (`sinn` suggests `sin`, not `sign`).
pub fn suggest(word: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    if word.chars().count() < 3 {
        return None; // one- and two-letter names are too short to guess at
    }
    let mut best: Option<(usize, usize, String)> = None;
    for c in candidates {
        let d = edit_distance(word, &c);
        let limit = if word.len() <= 3 { 1 } else { 2 };
        let prefix = usize::MAX - word.chars().zip(c.chars()).take_while(|(a, b)| a == b).count();
        if d <= limit && d > 0 && best.as_ref().is_none_or(|(bd, bp, bc)| (d, prefix, &c) < (*bd, *bp, bc)) {
            best = Some((d, prefix, c));
        }
    }
    best.map(|(_, _, c)| c)
}

/// Edits from `a` to `b`: insertions, deletions, substitutions and swaps of two neighbours
/// (`sni` is one edit from `sin`), each counted once (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the table: i - 2, i - 1 and i.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j - 1] + cost).min(row[j - 1] + 1).min(last[j] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut last);
        std::mem::swap(&mut last, &mut row);
    }
    last[b.len()]
}

/// Copies the expression `root` of graph `from` into `to` (through the simplifying
/// constructors; variables are matched by name) and returns its id there.
pub fn import(to: &mut Graph, from: &Graph, root: Id) -> Id {
    import_with(to, from, root, HashMap::new())
}

/// [`import`] of several roots in one walk, so that what they share is copied once; their
/// ids in `to`, in order.
pub fn import_all(to: &mut Graph, from: &Graph, roots: &[Id]) -> Vec<Id> {
    let new = import_nodes(to, from, roots, HashMap::new());
    roots.iter().map(|r| new[r]).collect()
}

/// [`import`], with the nodes of `from` in `map` replaced by nodes of `to` (applying a
/// function defined in one graph to values of another).
pub fn import_with(to: &mut Graph, from: &Graph, root: Id, map: HashMap<Id, Id>) -> Id {
    import_nodes(to, from, &[root], map)[&root]
}

/// The images in `to` of every node of `from` under `roots` (and of `map`'s keys).
fn import_nodes(to: &mut Graph, from: &Graph, roots: &[Id], map: HashMap<Id, Id>) -> HashMap<Id, Id> {
    let order = from.reachable(roots);
    let mut new: HashMap<Id, Id> = map;
    let mut args = Vec::new();
    for &id in &order {
        if new.contains_key(&id) {
            continue;
        }
        args.clear();
        args.extend(from.args(id).iter().map(|a| new[a]));
        // Shape ids are per graph: translate them.
        let op = match from.op(id) {
            Op::Broadcast(s) => Op::Broadcast(to.shape_id(from.shape_of(s))),
            Op::Reshape(s) => Op::Reshape(to.shape_id(from.shape_of(s))),
            other => other,
        };
        let image = match op {
            Op::Num(bits) => to.num(f64::from_bits(bits)),
            Op::Const(c) => to.constant(c),
            Op::Var(_) => {
                let name = from.var_name(id).unwrap_or("?");
                to.var_shaped(name, from.shape(id)).unwrap_or_else(|_| to.var(name))
            }
            op => rebuild_op(to, op, &args).unwrap_or(id),
        };
        new.insert(id, image);
    }
    new
}

/// The variable name of element `at` of `base`: `x[3]`, `a[1,2]` (the inverse of
/// [`element`]).
pub(crate) fn element_name(base: &str, at: &[usize]) -> String {
    let ix: Vec<String> = at.iter().map(usize::to_string).collect();
    format!("{base}[{}]", ix.join(","))
}

/// `Some(("x", [3]))` for the name of an element `x[3]` (`a[1,2]`: two indices), as
/// lowering names them; `None` for any other name.
///
/// ```
/// assert_eq!(symdiff::element("x[3]"), Some(("x", vec![3])));
/// assert_eq!(symdiff::element("a[1,2]"), Some(("a", vec![1, 2])));
/// assert_eq!(symdiff::element("x"), None);
/// ```
pub fn element(name: &str) -> Option<(&str, Vec<usize>)> {
    let (base, ix) = name.strip_suffix(']')?.split_once('[')?;
    Some((base, ix.split(',').map(|i| i.parse().ok()).collect::<Option<_>>()?))
}
