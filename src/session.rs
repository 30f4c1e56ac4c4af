//! The REPL's brain: one graph, the user's definitions and values, and the meaning of every
//! kind of line. The terminal front end (`cli::repl`) only reads lines and prints results.
//!
//! A line is one of (see `grammar/symdiff.lalrpop`):
//!
//! ```text
//! x^2 + 1                     a bare expression: printed simplified, or its value
//! d/dx EXPR   d^2/dx^2 EXPR   a derivative        diff(EXPR, x[, n]) works inside formulas
//! grad EXPR [wrt a, b]        every first partial (of a defined function: its parameters)
//! hessian EXPR [wrt a, b]     every second partial
//! f(x, y) = EXPR              a function definition
//! a = EXPR    let a = EXPR    a value (or, when it has free variables, a named expression)
//! ... at x = 4, y = 2         evaluate the result at a point
//! :help  :vars  :funcs  :latex  :text  :clear
//! ```
//!
//! Results are printed symbolically; when every variable of a result has a value (from `at`
//! or from an assignment), its value is printed instead. `ans` names the last result of an
//! expression or `d/dx` line (its value, or the expression as printed), as in MATLAB, Octave
//! and Julia: `d/dx ans` differentiates it again.
//!
//! Every line builds into the session's one graph, so every route that adds nodes (lowering,
//! `d/dx`, `grad`, `hessian`, `:ir`) keeps within the graph's node budget
//! (`graph::NODE_BUDGET`): no sequence of lines can grow it until memory runs out. Past the
//! budget a line fails, pointing at what grew it; `:clear` starts a new graph.
//!
//! [`Session::complete`] is the REPL's tab completion: built-in functions, the session's
//! names and the `:` commands.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use ndarray::ArrayD;

use crate::diff;
use crate::expr::{Error, Result, derive, variables};
use crate::graph::lower::MAX_ORDER;
use crate::graph::{self, FnDef, Graph, Id, Scope, Style, substitute, try_substitute};
use crate::jit::scalar::{GradientCode, GradientError};
use crate::jit::{self, CompileOptions};
use crate::syntax::{self, Ast, AstId, AstKind, Binding, Diagnostic, Span, Stmt};

/// Help text for `:help`.
pub const HELP: &str = "\
What a line can be:
  x^3 + 2*x^2 + 1            simplify (or evaluate, when every variable has a value)
  d/dx EXPR                  derivative; d^2/dx^2 EXPR for the second
  diff(EXPR, x, n)           n-th derivative, usable inside formulas
  grad EXPR [wrt x, y]       all first partials; grad f for a defined f
  hessian EXPR [wrt x, y]    all second partials
  f(x, y) = EXPR             define a function
  a = 3   let a = 3          give a name a value (w = [[1], [2]] a tensor);
                             with variables, `a = EXPR` names the expression
  ... at x = 4, y = 2        evaluate any of the above at a point
  ans                        the last result (of an expression or a d/dx line)
  :vars  :funcs              list values and functions
  :latex  :text              switch the output format
  :ir EXPR                   Cranelift IR of the compiled value and gradient (EXPR or f)
  :time EXPR at x = 1        time the compiled gradient against the interpreter
  :clear                     forget all definitions and values
  :help  :quit               this text; leave (or Ctrl-D)
Functions: exp log sqrt sin cos tan asin acos atan sinh cosh tanh abs sigmoid softplus relu
           step sign pow(a, b); constants pi, e. `^` and `**` are powers; -x^2 is -(x^2).";

/// An interactive session: definitions and values persist from line to line.
#[derive(Default)]
pub struct Session {
    g: Graph,
    functions: HashMap<String, FnDef>,
    values: BTreeMap<String, Value>,
    style: Style,
}

/// The value of a name: a number or a tensor (`w = [[1], [2]]`).
#[derive(Debug, Clone)]
enum Value {
    Scalar(f64),
    Tensor(ArrayD<f64>),
}

/// A tensor as nested brackets: `[[10], [20]]`.
fn show_tensor(t: &ArrayD<f64>) -> String {
    fn rec(t: ndarray::ArrayViewD<'_, f64>, out: &mut String) {
        if t.ndim() == 0 {
            out.push_str(&graph::print::decimal(t.iter().next().copied().unwrap_or(0.0)));
            return;
        }
        out.push('[');
        for (i, sub) in t.outer_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            rec(sub, out);
        }
        out.push(']');
    }
    let mut out = String::new();
    rec(t.view(), &mut out);
    out
}

/// A value given with `at` (already evaluated), and where it was written.
struct AtValue {
    name: String,
    span: Span,
    value: f64,
}

/// The values of one line's `at`, in the order written, with an index by name (a line may
/// bind 100,000 variables).
#[derive(Default)]
struct At {
    values: Vec<AtValue>,
    index: HashMap<String, usize>,
}

impl At {
    fn get(&self, name: &str) -> Option<f64> {
        self.index.get(name).map(|&k| self.values[k].value)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// The name of the last result.
const ANS: &str = "ans";

/// The `:` commands, for completion.
const COMMANDS: &[&str] = &[":help", ":vars", ":funcs", ":latex", ":text", ":ir", ":time", ":clear", ":quit"];

/// Words a line may use besides names and functions, for completion.
const KEYWORDS: &[&str] = &["grad", "hessian", "let", "at", "wrt", "pi"];

/// The error of a line whose result would grow the graph past its node budget.
/// The session's number named `n` (`let n = 3`), which the bounds and indices of sums read.
fn number(values: &BTreeMap<String, Value>, n: &str) -> Option<f64> {
    match values.get(n) {
        Some(Value::Scalar(x)) => Some(*x),
        _ => None,
    }
}

fn too_large(cx: &Cx<'_>, span: Span, what: &str, b: graph::OverBudget) -> Error {
    cx.err(span, b.message(what))
        .with_help(
            "ask for less (a lower order, fewer variables, a simpler expression); :clear starts a new graph",
        )
        .into()
}

impl Session {
    /// A session with no definitions.
    pub fn new() -> Session {
        Session::default()
    }

    /// Runs one line and returns what to print (possibly nothing). Errors leave the session
    /// as it was, its graph included: the nodes a failed line built are forgotten, so a line
    /// stopped at the node budget does not leave the budget spent.
    pub fn run(&mut self, src: &str) -> Result<String> {
        let mark = self.g.mark();
        let r = self.run_line(src);
        if r.is_err() {
            self.g.rollback(mark);
        }
        r
    }

    fn run_line(&mut self, src: &str) -> Result<String> {
        let trimmed = src.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(String::new());
        }
        if let Some(cmd) = trimmed.strip_prefix(':') {
            return self.command(cmd.trim());
        }
        let (ast, line) = syntax::parse_line(src, &|n| self.is_function(n))?;
        let cx = Cx { src, ast: &ast };
        let at = self.at_values(&cx, &line.at)?;
        match &line.stmt {
            Stmt::Expr(e) => {
                let id = self.lower(&cx, *e)?;
                self.check_at(&cx, &at, &[id])?;
                let (out, ans) = self.finish_with_answer(&cx, line.span, id, &at)?;
                self.set_ans(ans);
                Ok(out)
            }
            Stmt::Deriv { var, order, expr } => {
                if *order > MAX_ORDER {
                    return Err(cx
                        .err(var.span, format!("derivatives of order above {MAX_ORDER} are not supported"))
                        .into());
                }
                let id = self.lower(&cx, *expr)?;
                self.check_at(&cx, &at, &[id])?;
                if self.has_tensors(id) {
                    return Err(cx
                        .err(var.span, "`d/dx` differentiates scalar expressions")
                        .with_help("for tensors, use `grad EXPR wrt NAME`")
                        .into());
                }
                let v = self.g.var(&var.text);
                let d = diff::forward::try_nth_derivative(&mut self.g, id, v, *order).map_err(|b| {
                    let what = if *order == 1 {
                        "this derivative".to_owned()
                    } else {
                        format!("the derivative of order {order}")
                    };
                    too_large(&cx, var.span, &what, b)
                })?;
                let (out, ans) = self.finish_with_answer(&cx, line.span, d, &at)?;
                self.set_ans(ans);
                Ok(out)
            }
            Stmt::Grad { expr, wrt } | Stmt::Hessian { expr, wrt } => {
                let hessian = matches!(line.stmt, Stmt::Hessian { .. });
                let (label, body, vars) = self.target(&cx, *expr, wrt)?;
                self.check_at(&cx, &at, &[body])?;
                let var_ids: Vec<Id> = vars.iter().map(|v| self.g.var(v)).collect();
                let mut out = Vec::new();
                let tensors = self.has_tensors(body);
                if tensors && !self.g.is_scalar(body) {
                    return Err(cx
                        .err(line.span, "a gradient needs a scalar expression; this one is a tensor")
                        .with_help("reduce it first, as in `sum(...)`")
                        .into());
                }
                if hessian && tensors {
                    return Err(cx.err(line.span, "`hessian` works on scalar expressions of scalars").into());
                }
                if hessian {
                    let h = diff::forward::try_hessian(&mut self.g, body, &var_ids)
                        .map_err(|b| too_large(&cx, line.span, "this Hessian", b))?;
                    for i in 0..vars.len() {
                        for j in i..vars.len() {
                            let den = if i == j {
                                format!("d{}2", vars[i])
                            } else {
                                format!("d{}d{}", vars[i], vars[j])
                            };
                            out.push(format!(
                                "d2{label}/{den} = {}",
                                self.finish(&cx, line.span, h[i][j], &at)?
                            ));
                        }
                    }
                } else {
                    // Partials that share much (a product's) print once over named shared
                    // parts, when nothing gives them values (see `Expr::shared_partials`).
                    let symbolic = at.values.is_empty() && vars.iter().all(|v| !self.values.contains_key(v));
                    if !tensors && symbolic && vars.len() > 1 {
                        let shared = diff::reverse::try_gradient(&mut self.g, body, &var_ids)
                            .map_err(|b| too_large(&cx, line.span, "this gradient", b))?;
                        if let Some((texts, block)) = graph::print_shared(&self.g, &shared, self.style) {
                            for (v, t) in vars.iter().zip(texts) {
                                out.push(format!("d{label}/d{v} = {t}"));
                            }
                            out.push(block);
                            return Ok(out.join("\n"));
                        }
                    }
                    // Forward mode prints the textbook forms for scalar formulas; reverse mode
                    // handles tensors.
                    let grad = if tensors {
                        diff::reverse::try_gradient(&mut self.g, body, &var_ids)
                    } else {
                        diff::forward::try_gradient(&mut self.g, body, &var_ids)
                    };
                    let grad = grad.map_err(|b| too_large(&cx, line.span, "this gradient", b))?;
                    for (v, d) in vars.iter().zip(grad) {
                        out.push(format!("d{label}/d{v} = {}", self.finish(&cx, line.span, d, &at)?));
                    }
                }
                Ok(out.join("\n"))
            }
            Stmt::Let { name, value } => self.assign(&cx, &name.text, name.span, *value, &at),
            Stmt::Assign { lhs, rhs } => match &ast.node(*lhs).kind {
                AstKind::Name(name) => self.assign(&cx, name, ast.span(*lhs), *rhs, &at),
                AstKind::Call(c) => self.define(&cx, &c.name, c.name_span, &c.args, *rhs),
                _ => Err(cx
                    .err(ast.span(*lhs), "the left side of `=` must be a name or a function head")
                    .with_help("write `a = 3` or `f(x, y) = x*y`")
                    .into()),
            },
        }
    }

    fn command(&mut self, cmd: &str) -> Result<String> {
        let (word, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        match word {
            "ir" => self.ir(rest.trim()),
            "time" => self.time(rest.trim()),
            "help" | "h" | "?" => Ok(HELP.to_owned()),
            "vars" => Ok(self
                .values
                .iter()
                .map(|(k, v)| match v {
                    Value::Scalar(x) => format!("{k} = {}", graph::print::decimal(*x)),
                    Value::Tensor(t) => format!("{k} = {}", show_tensor(t)),
                })
                .collect::<Vec<_>>()
                .join("\n")),
            "funcs" => {
                let mut names: Vec<&String> = self.functions.keys().collect();
                names.sort();
                Ok(names
                    .into_iter()
                    .map(|n| {
                        let def = &self.functions[n];
                        let body = graph::print(&self.g, def.body, self.style);
                        if def.params.is_empty() {
                            format!("{n} = {body}")
                        } else {
                            format!("{n}({}) = {body}", def.params.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "latex" => {
                self.style = Style::Latex;
                Ok("output: LaTeX".to_owned())
            }
            "text" => {
                self.style = Style::Text;
                Ok("output: text".to_owned())
            }
            "clear" => {
                *self = Session { style: self.style, ..Session::default() };
                Ok("cleared".to_owned())
            }
            _ => Err(Error::Invalid(format!("unknown command `:{word}`; type :help for the list"))),
        }
    }

    /// The name `b` gives a value to (`x`, or `x[2]` with indices from the session's
    /// numbers).
    fn binding_name(&self, cx: &Cx<'_>, b: &Binding) -> Result<String> {
        let lets = |n: &str| number(&self.values, n);
        let scope = Scope { lets: &lets, ..Scope::new(cx.src, cx.ast, &self.functions, derive) };
        Ok(scope.binding_name(b)?)
    }

    fn lower(&mut self, cx: &Cx<'_>, e: AstId) -> Result<Id> {
        let functions = std::mem::take(&mut self.functions);
        // Named numbers give the bounds of sums and indices; elsewhere they stay names.
        let values = &self.values;
        let lets = |n: &str| number(values, n);
        let scope = Scope {
            src: cx.src,
            ast: cx.ast,
            functions: &functions,
            derive,
            lets: &lets,
            inline_lets: false,
        };
        let r = scope.lower(&mut self.g, e);
        self.functions = functions;
        Ok(r?)
    }

    fn at_values(&mut self, cx: &Cx<'_>, at: &[Binding]) -> Result<At> {
        let mut out = At::default();
        for b in at {
            let name = self.binding_name(cx, b)?;
            if out.contains(&name) {
                return Err(cx.err(b.name.span, format!("`{name}` is given a value twice")).into());
            }
            let id = self.lower(cx, b.value)?;
            let value = self.value_of(cx, id, cx.ast.span(b.value))?;
            out.index.insert(name.clone(), out.values.len());
            out.values.push(AtValue { name, span: b.name.span, value });
        }
        Ok(out)
    }

    /// A value from an expression in which every variable must have a value.
    fn value_of(&self, cx: &Cx<'_>, id: Id, span: Span) -> Result<f64> {
        let unbound: Vec<String> = variables(&self.g, &[id])
            .into_iter()
            .filter(|v| self.scalar(v).is_none() && !self.values.contains_key(v))
            .collect();
        if let Some(v) = unbound.first() {
            return Err(cx.err(span, format!("`{v}` has no value here")).into());
        }
        if let Some(v) = variables(&self.g, &[id])
            .into_iter()
            .find(|v| matches!(self.values.get(v), Some(Value::Tensor(_))))
        {
            return Err(cx.err(span, format!("`{v}` is a tensor; a value here must be a number")).into());
        }
        let lookup = |n: &str| self.scalar(n);
        Ok(graph::eval(&self.g, &[id], &lookup)?[0])
    }

    /// The value of `name` if it is a number: a named number, or an element `x[i]` (`a[i,j]`)
    /// of a named tensor.
    fn scalar(&self, name: &str) -> Option<f64> {
        match self.values.get(name) {
            Some(Value::Scalar(x)) => Some(*x),
            Some(Value::Tensor(_)) => None,
            None => {
                let (base, ix) = crate::expr::element(name)?;
                match self.values.get(base)? {
                    Value::Tensor(t) => t.get(ndarray::IxDyn(&ix)).copied(),
                    Value::Scalar(_) => None,
                }
            }
        }
    }

    /// Every element `x[i]` of a named tensor `x` among `vars` must be inside it.
    fn check_elements(&self, cx: &Cx<'_>, span: Span, vars: &[String]) -> Result<()> {
        for v in vars {
            let Some((base, _)) = crate::expr::element(v) else { continue };
            if let Some(Value::Tensor(t)) = self.values.get(base)
                && self.scalar(v).is_none()
            {
                let shape = t.shape().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
                return Err(cx
                    .err(span, format!("`{v}` is outside `{base}`, whose shape is [{shape}]"))
                    .with_help("indices start at 0 and stay below each dimension")
                    .into());
            }
        }
        Ok(())
    }

    /// Whether `id` involves tensors anywhere.
    fn has_tensors(&self, id: Id) -> bool {
        self.g.reachable(&[id]).iter().any(|&n| !self.g.is_scalar(n))
    }

    /// Evaluates `id` with every variable bound (by `at` or by a value): what to print, and
    /// the number for `ans` (none for a tensor).
    fn evaluate(&self, id: Id, at: &At) -> Result<(String, Option<f64>)> {
        if !self.has_tensors(id) {
            let lookup = |n: &str| at.get(n).or_else(|| self.scalar(n));
            let v = graph::eval(&self.g, &[id], &lookup)?[0];
            return Ok((graph::print::decimal(v), Some(v)));
        }
        let mut inputs: HashMap<Id, ArrayD<f64>> = HashMap::new();
        for name in variables(&self.g, &[id]) {
            let Some(v) = self.g.find_var(&name) else { continue };
            let value = match (at.get(&name), self.values.get(&name)) {
                (Some(a), _) => ArrayD::from_elem(ndarray::IxDyn(&[]), a),
                (None, Some(Value::Scalar(x))) => ArrayD::from_elem(ndarray::IxDyn(&[]), *x),
                (None, Some(Value::Tensor(t))) => t.clone(),
                (None, None) => continue,
            };
            inputs.insert(v, value);
        }
        let out = graph::tensor::eval_tensors::<f64>(&self.g, &[id], &|v| inputs.get(&v).map(|a| a.view()))?;
        let t = &out[0];
        if let Some(bad) = t.iter().find(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "the result has a non-finite element ({bad}); evaluate its parts to find where it comes from"
            )));
        }
        Ok((show_tensor(t), None))
    }

    /// Every `at` name must occur in what it applies to (a misspelt name would be silently
    /// ignored otherwise).
    fn check_at(&self, cx: &Cx<'_>, at: &At, roots: &[Id]) -> Result<()> {
        let vars = variables(&self.g, roots);
        let present: hashbrown::HashSet<&str> = vars.iter().map(String::as_str).collect();
        for a in &at.values {
            if !present.contains(a.name.as_str()) {
                let mut d = cx.err(a.span, format!("`{}` does not occur in the expression", a.name));
                if let Some(s) = graph::lower::suggest(&a.name, vars.iter().cloned()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(d.into());
            }
        }
        Ok(())
    }

    /// Substitutes `at` values, then prints the value if every variable has one, or the
    /// expression otherwise.
    fn finish(&mut self, cx: &Cx<'_>, span: Span, id: Id, at: &At) -> Result<String> {
        Ok(self.finish_with_answer(cx, span, id, at)?.0)
    }

    /// [`finish`](Self::finish), also returning what `ans` becomes: the value as a number
    /// node, or the expression as printed.
    fn finish_with_answer(&mut self, cx: &Cx<'_>, span: Span, id: Id, at: &At) -> Result<(String, Id)> {
        // Evaluate before substituting: numbers folded into the expression could lose the
        // position of a domain error, and evaluation is exact either way.
        let vars = variables(&self.g, &[id]);
        self.check_elements(cx, span, &vars)?;
        let all_bound =
            vars.iter().all(|v| self.values.contains_key(v) || at.contains(v) || self.scalar(v).is_some());
        if all_bound && !self.has_tensors(id) {
            let (out, value) = self.evaluate(id, at)?;
            let n = self.g.num(value.unwrap_or(0.0));
            return Ok((out, n));
        }
        let map: HashMap<Id, Id> = at
            .values
            .iter()
            .filter_map(|a| self.g.find_var(&a.name).map(|v| (v, a.value)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(v, x)| (v, self.g.num(x)))
            .collect();
        let r = if map.is_empty() {
            id
        } else {
            try_substitute(&mut self.g, id, &map).map_err(|b| too_large(cx, span, "this result", b))?
        };
        if all_bound {
            // A tensor: `ans` is the expression (its value is computed again where used).
            return Ok((self.evaluate(id, at)?.0, r));
        }
        Ok((graph::print(&self.g, r, self.style), r))
    }

    /// `ans` names `result` from now on (a named expression, inlined where it is used).
    fn set_ans(&mut self, result: Id) {
        // An `ans` the user gave a value is replaced; its value goes into the new one first.
        let result = match (self.g.find_var(ANS), self.scalar(ANS)) {
            (Some(v), Some(x)) => {
                let n = self.g.num(x);
                substitute(&mut self.g, result, &[(v, n)].into_iter().collect())
            }
            _ => result,
        };
        self.values.remove(ANS);
        self.functions.insert(ANS.to_owned(), FnDef { params: Vec::new(), body: result });
    }

    /// Whether `name` is a function here (built in or defined with parameters).
    fn is_function(&self, name: &str) -> bool {
        graph::lower::is_builtin_function(name)
            || self.functions.get(name).is_some_and(|d| !d.params.is_empty())
    }

    /// Tab completion: where the word before `pos` in `line` starts, and what it could be,
    /// sorted: the `:` commands for a word after a `:` that starts the line; otherwise the
    /// built-in functions, constants and keywords, and the session's functions and values.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let mut pos = pos.min(line.len());
        while !line.is_char_boundary(pos) {
            pos -= 1;
        }
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| c.is_alphanumeric() || c == '_')
            .last()
            .map_or(pos, |(i, _)| i);
        let word = &line[start..pos];
        if before[..start].trim_start() == ":" {
            let colon = before.find(':').unwrap_or(start);
            let typed = &line[colon..pos];
            let found = COMMANDS.iter().filter(|c| c.starts_with(typed)).map(|c| c.to_string()).collect();
            return (colon, found);
        }
        if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
            return (pos, Vec::new());
        }
        let builtins =
            graph::func::FUNCS.iter().map(|d| d.name).chain(graph::lower::BUILTINS.iter().copied());
        let mut found: Vec<String> = builtins
            .chain(KEYWORDS.iter().copied())
            .map(str::to_owned)
            .chain(self.functions.keys().cloned())
            .chain(self.values.keys().cloned())
            .filter(|n| n.starts_with(word))
            .collect();
        found.sort();
        found.dedup();
        (start, found)
    }

    /// What `grad`/`hessian` differentiate: a defined function (by name) or an expression,
    /// and with respect to which variables.
    fn target(&mut self, cx: &Cx<'_>, e: AstId, wrt: &[syntax::Name]) -> Result<(String, Id, Vec<String>)> {
        let (label, body, default_vars) = match &cx.ast.node(e).kind {
            AstKind::Name(n) if self.functions.contains_key(&**n) => {
                let def = &self.functions[&**n];
                let vars =
                    if def.params.is_empty() { variables(&self.g, &[def.body]) } else { def.params.clone() };
                (n.to_string(), def.body, vars)
            }
            _ => {
                let id = self.lower(cx, e)?;
                (String::new(), id, variables(&self.g, &[id]))
            }
        };
        if wrt.is_empty() {
            return Ok((label, body, default_vars));
        }
        let present = variables(&self.g, &[body]);
        let present: hashbrown::HashSet<&str> = present.iter().map(String::as_str).collect();
        let mut listed: hashbrown::HashSet<&str> = hashbrown::HashSet::new();
        let mut vars = Vec::new();
        for w in wrt {
            if !present.contains(w.text.as_str()) {
                return Err(cx.err(w.span, format!("`{}` does not occur in the expression", w.text)).into());
            }
            if !listed.insert(w.text.as_str()) {
                return Err(cx.err(w.span, format!("`{}` is listed twice", w.text)).into());
            }
            vars.push(w.text.clone());
        }
        Ok((label, body, vars))
    }

    /// Gives `name` a value (its variable node takes the value's shape).
    fn set_value(&mut self, cx: &Cx<'_>, name: &str, span: Span, value: Value) -> Result<()> {
        let shape: Vec<usize> = match &value {
            Value::Scalar(_) => Vec::new(),
            Value::Tensor(t) => t.shape().to_vec(),
        };
        self.g.var_shaped(name, &shape).map_err(|e| {
            cx.err(span, e.0).with_help("a name keeps one shape for the session; use another name, or :clear")
        })?;
        self.functions.remove(name);
        self.values.insert(name.to_owned(), value);
        Ok(())
    }

    /// A tensor literal `[[1, 2], [3, 4]]`: every element a constant, every row as long as
    /// its siblings.
    fn literal(&mut self, cx: &Cx<'_>, e: AstId) -> Result<ArrayD<f64>> {
        // Walk the nesting breadth-first, level by level, checking the shape as we go.
        let mut shape = Vec::new();
        let mut level = vec![e];
        loop {
            let lists: Vec<&Vec<AstId>> = level
                .iter()
                .filter_map(|&n| match &cx.ast.node(n).kind {
                    AstKind::List(items) => Some(items),
                    _ => None,
                })
                .collect();
            if lists.is_empty() {
                break;
            }
            if lists.len() != level.len() {
                return Err(cx
                    .err(cx.ast.span(e), "a tensor literal mixes numbers and rows at the same depth")
                    .into());
            }
            let width = lists[0].len();
            if width == 0 {
                return Err(cx.err(cx.ast.span(e), "a tensor literal cannot have an empty row").into());
            }
            if let Some((k, _)) = lists.iter().enumerate().find(|(_, l)| l.len() != width) {
                return Err(cx
                    .err(
                        cx.ast.span(level[k]),
                        format!("this row has {} elements, its first sibling {width}", lists[k].len()),
                    )
                    .into());
            }
            shape.push(width);
            level = lists.into_iter().flat_map(|l| l.iter().copied()).collect();
        }
        let mut data = Vec::with_capacity(level.len());
        for n in level {
            let id = self.lower(cx, n)?;
            if let Some(v) = variables(&self.g, &[id]).first() {
                return Err(cx
                    .err(cx.ast.span(n), format!("tensor elements must be numbers; `{v}` is a variable"))
                    .into());
            }
            data.push(graph::eval(&self.g, &[id], &|_| None)?[0]);
        }
        ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data).map_err(|e| Error::Invalid(e.to_string()))
    }

    fn assign(&mut self, cx: &Cx<'_>, name: &str, span: Span, rhs: AstId, at: &At) -> Result<String> {
        check_definable(cx, name, span)?;
        if matches!(cx.ast.node(rhs).kind, AstKind::List(_)) {
            let t = self.literal(cx, rhs)?;
            let value = if t.ndim() == 0 {
                Value::Scalar(t.iter().copied().next().unwrap_or(0.0))
            } else {
                Value::Tensor(t)
            };
            self.set_value(cx, name, span, value)?;
            return Ok(String::new());
        }
        let id = self.lower(cx, rhs)?;
        self.check_at(cx, at, &[id])?;
        let vars = variables(&self.g, &[id]);
        if vars.iter().any(|v| v == name) {
            return Err(cx.err(span, format!("`{name}` cannot be defined in terms of itself")).into());
        }
        if vars.is_empty() {
            // A constant: a value.
            let v = graph::eval(&self.g, &[id], &|_| None)?[0];
            self.set_value(cx, name, span, Value::Scalar(v))?;
        } else {
            // A named expression: a function of no parameters, inlined where it is used.
            self.values.remove(name);
            self.functions.insert(name.to_owned(), FnDef { params: Vec::new(), body: id });
        }
        Ok(String::new())
    }

    fn define(
        &mut self,
        cx: &Cx<'_>,
        name: &str,
        name_span: Span,
        params: &[AstId],
        rhs: AstId,
    ) -> Result<String> {
        check_definable(cx, name, name_span)?;
        let mut names: Vec<String> = Vec::new();
        for &p in params {
            match &cx.ast.node(p).kind {
                AstKind::Name(n) if &**n == "pi" || &**n == "e" => {
                    return Err(cx
                        .err(cx.ast.span(p), format!("`{n}` is a constant and cannot be a parameter"))
                        .into());
                }
                AstKind::Name(n) if names.iter().any(|m| **m == **n) => {
                    return Err(cx.err(cx.ast.span(p), format!("parameter `{n}` appears twice")).into());
                }
                AstKind::Name(n) => names.push(n.to_string()),
                _ => {
                    return Err(cx
                        .err(cx.ast.span(p), "parameters must be plain names")
                        .with_help(format!("write `{name}(x, y) = ...`"))
                        .into());
                }
            }
        }
        let body = self.lower(cx, rhs)?;
        self.values.remove(name);
        self.functions.insert(name.to_owned(), FnDef { params: names, body });
        Ok(String::new())
    }
}

impl Session {
    /// Parses `EXPR [at ...]` (after `:ir` or `:time`) and compiles its value and gradient.
    fn compile_line(&mut self, src: &str, keep_ir: bool) -> Result<(GradientCode, Vec<String>, At, Id)> {
        if src.is_empty() {
            return Err(Error::Invalid("give an expression or a function name, as in `:ir f`".into()));
        }
        let (ast, line) = syntax::parse_line(src, &|n| self.is_function(n))?;
        let cx = Cx { src, ast: &ast };
        let Stmt::Expr(e) = line.stmt else {
            return Err(cx.err(line.span, "expected an expression or a function name").into());
        };
        let at = self.at_values(&cx, &line.at)?;
        let (_, body, vars) = self.target(&cx, e, &[])?;
        if self.has_tensors(body) {
            return Err(cx.err(line.span, "`:ir` and `:time` compile scalar functions").into());
        }
        let var_ids: Vec<Id> = vars.iter().map(|v| self.g.var(v)).collect();
        let code = jit::scalar::compile_gradient(
            &mut self.g,
            body,
            &var_ids,
            &[],
            &CompileOptions { keep_ir, ..Default::default() },
        )
        .map_err(|e| match e {
            GradientError::Budget(b) => too_large(&cx, line.span, "this gradient", b),
            GradientError::Jit(e) => e.into(),
        })?;
        Ok((code, vars, at, body))
    }

    fn ir(&mut self, src: &str) -> Result<String> {
        let (code, vars, _, _) = self.compile_line(src, true)?;
        let s = code.stats();
        Ok(format!(
            "; value and gradient with respect to ({}): {} nodes, {} function(s), {} allocator, {} bytes of code\n; {}\n; signature: {}\n{}",
            vars.join(", "),
            s.nodes,
            s.chunks,
            s.allocator,
            s.code_bytes,
            s.structure(),
            if s.classes.is_empty() {
                "(inputs, value, gradient, scratch)"
            } else {
                "of each loop (inputs, gradient, externals, external adjoints, sum)"
            },
            code.ir().unwrap_or("").trim_end()
        ))
    }

    fn time(&mut self, src: &str) -> Result<String> {
        let t = Instant::now();
        let (code, vars, at, body) = self.compile_line(src, false)?;
        let compile = t.elapsed();
        let x: Vec<f64> = vars
            .iter()
            .map(|v| at.get(v).or_else(|| self.scalar(v)))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| {
                Error::Invalid(format!("give every variable a value: `:time {src} at {} = ...`", vars[0]))
            })?;
        let mut value = [0.0];
        let mut grad = vec![0.0; vars.len()];
        // Calibrate to about 50 ms per measurement.
        let per_call = |f: &mut dyn FnMut()| {
            let mut reps = 1u32;
            loop {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                let e = t.elapsed();
                if e > Duration::from_millis(50) || reps >= 1 << 26 {
                    return e / reps;
                }
                reps *= 4;
            }
        };
        let native = per_call(&mut || {
            value[0] = code.call(std::hint::black_box(&x), &mut grad).unwrap_or(f64::NAN);
        });
        let var_ids: Vec<Id> = vars.iter().map(|v| self.g.var(v)).collect();
        let grads = diff::reverse::gradient(&mut self.g, body, &var_ids); // built by compile_line
        let mut roots = vec![body];
        roots.extend(grads);
        let position: HashMap<&str, usize> = vars.iter().enumerate().map(|(k, v)| (v.as_str(), k)).collect();
        let lookup = |n: &str| position.get(n).map(|&k| x[k]);
        graph::eval(&self.g, &roots, &lookup)?;
        let interpreted = per_call(&mut || {
            let _ = std::hint::black_box(graph::eval(&self.g, &roots, &lookup));
        });
        Ok(format!(
            "compiled: {native:?} per call (value + {} partials), interpreter: {interpreted:?} per call ({:.0}x), compile: {compile:?}",
            vars.len(),
            interpreted.as_secs_f64() / native.as_secs_f64().max(1e-12)
        ))
    }
}

/// Built-in function names and constants cannot be redefined.
fn check_definable(cx: &Cx<'_>, name: &str, span: Span) -> Result<()> {
    if graph::Func::from_name(name).is_some() || graph::lower::BUILTINS.contains(&name) {
        return Err(cx.err(span, format!("`{name}` is a built-in function and cannot be redefined")).into());
    }
    if name == "pi" || name == "e" {
        return Err(cx.err(span, format!("`{name}` is a constant and cannot be redefined")).into());
    }
    Ok(())
}

/// The line being run, for diagnostics.
struct Cx<'a> {
    src: &'a str,
    ast: &'a Ast,
}

impl Cx<'_> {
    fn err(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.src, span, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `lines` in one session and returns the last line's output.
    fn run(lines: &[&str]) -> String {
        let mut s = Session::new();
        let mut out = String::new();
        for line in lines {
            out = s.run(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        out
    }

    #[test]
    fn derivatives_with_respect_to_any_name() {
        assert_eq!(run(&["d/dθ sin(θ)^2"]), run(&["d/dx sin(x)^2"]).replace('x', "θ"));
        assert_eq!(run(&["d^2/dθ^2 θ^3 at θ = 2"]), "12");
        assert_eq!(run(&["d/dx_1 x_1^2 at x_1 = 3"]), "6");
    }
}

#[cfg(test)]
mod budget {
    //! Every route by which a REPL line builds nodes stops at the graph's node budget, with a
    //! positioned error, and leaves the session (its graph included) as it was. The budgets
    //! here are small so that the tests are quick; `tests/bad_inputs.rs` hits the real one.

    use super::*;

    /// Runs `setup`, then gives the graph `room` more operations of budget and runs `line`, which
    /// must fail at the written `at` (the text under the caret) naming `what`.
    fn check(setup: &[&str], room: usize, line: &str, what: &str, at: &str) {
        let mut s = Session::new();
        for l in setup {
            s.run(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        s.g.set_budget(s.g.size() + room);
        let before = s.g.len();
        let err = s.run(line).expect_err(line);
        let Error::Parse(d) = &err else { panic!("{line}: not positioned: {err}") };
        assert!(d.message.contains(what), "{line}: `{}` lacks `{what}`", d.message);
        assert!(d.message.contains("operations (the limit"), "{line}: `{}` names no limit", d.message);
        assert_eq!(&line[d.span.start..d.span.end], at, "{line}: the caret");
        assert_eq!(s.g.len(), before, "{line}: the failed line's nodes are forgotten");
        assert_eq!(s.run("1 + 1").unwrap(), "2", "{line}: the session goes on");
    }

    #[test]
    fn nested_diff_in_a_formula() {
        let mut nested = "x^x".to_owned();
        for _ in 0..30 {
            nested = format!("diff({nested}, x)");
        }
        check(&[], 20_000, &nested, "this derivative is too large", "diff");
        check(&[], 20_000, "diff(x^x, x, 40)", "the derivative of order 40 is too large", "diff");
    }

    #[test]
    fn derivative_operator() {
        check(&[], 20_000, "d^40/dx^40 x^x", "the derivative of order 40 is too large", "d^40/dx^40");
        check(&["f(x) = diff(x^x, x, 8)"], 200, "d/dx f(x)", "this derivative is too large", "d/dx");
    }

    #[test]
    fn a_chain_of_definitions_each_differentiating_the_last() {
        let mut s = Session::new();
        s.g.set_budget(50_000);
        s.run("f1(x) = diff(x^x, x)").unwrap();
        let mut failed = None;
        for i in 2..40 {
            let before = s.g.len();
            match s.run(&format!("f{i}(x) = diff(f{}(x), x)", i - 1)) {
                Ok(_) => assert!(s.g.len() <= 50_000, "f{i}: {} nodes", s.g.len()),
                Err(e) => {
                    assert!(e.to_string().contains("operations (the limit"), "{e}");
                    assert_eq!(s.g.len(), before);
                    failed = Some(i);
                    break;
                }
            }
        }
        assert!(failed.is_some(), "the chain stops at the budget");
        assert_eq!(s.run("f2(1)").unwrap(), "2", "the functions defined before go on working");
    }

    #[test]
    fn inlining_functions_that_double() {
        let mut setup = vec!["f1(x) = x^2".to_owned()];
        for i in 2..12 {
            setup.push(format!("f{i}(x) = f{}(sin(x)) + f{}(cos(x))", i - 1, i - 1));
        }
        let setup: Vec<&str> = setup.iter().map(String::as_str).collect();
        check(
            &setup,
            2_000,
            "f12(x) = f11(sin(x)) + f11(cos(x))",
            "this call of `f11` is too large",
            "f11(sin(x))",
        );
    }

    #[test]
    fn grad_hessian_and_ir() {
        let setup = ["f(x, y) = diff(x^y*y^x, x, 4)"];
        check(&setup, 50, "grad f", "this gradient is too large", "grad f");
        check(&setup, 50, "hessian f", "this Hessian is too large", "hessian f");
        let mut s = Session::new();
        s.run(setup[0]).unwrap();
        s.g.set_budget(s.g.size() + 50);
        let err = s.run(":ir f").expect_err(":ir f");
        assert!(err.to_string().contains("this gradient is too large"), "{err}");
    }
}

#[cfg(test)]
mod ans_and_completion {
    use super::*;

    /// Runs `lines` in one session; each must give the output beside it.
    fn check(lines: &[(&str, &str)]) {
        let mut s = Session::new();
        for (line, want) in lines {
            let got = s.run(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(&got, want, "{line}");
        }
    }

    #[test]
    fn ans_is_the_last_result() {
        check(&[("d/dx x^3", "3*x^2"), ("d/dx ans", "6*x"), ("ans at x = 2", "12"), ("ans + 1", "13")]);
        check(&[("x^2 at x = 3", "9"), ("ans^2", "81"), ("a = 2", ""), ("ans*a", "162")]);
        // Definitions and assignments do not change it; grad does not either.
        check(&[
            ("sin(x)", "sin(x)"),
            ("f(y) = y^2", ""),
            ("b = 5", ""),
            ("grad x*y", "d/dx = y\nd/dy = x"),
            ("ans", "sin(x)"),
        ]);
        // A tensor result: `ans` is its expression, computed again where used.
        check(&[("w = [[1], [2]]", ""), ("w*2", "[[2], [4]]"), ("ans + 1", "[[3], [5]]")]);
        // A user's own `ans` is replaced by the next result, its value carried into it.
        check(&[("ans = 4", ""), ("ans*x", "ans*x"), ("ans at x = 1", "4"), ("ans", "4")]);
        // Before any result, `ans` is an ordinary free name.
        check(&[("ans + 1", "ans + 1")]);
        let mut s = Session::new();
        s.run("1/x").unwrap();
        assert!(s.run("ans at x = 0").is_err());
        assert_eq!(s.run("ans at x = 4").unwrap(), "0.25", "a failed line leaves ans");
        s.run(":clear").unwrap();
        assert_eq!(s.run("ans").unwrap(), "ans");
    }

    fn complete(s: &Session, line: &str) -> (usize, Vec<String>) {
        s.complete(line, line.len())
    }

    #[test]
    fn completion_offers_functions_names_and_commands() {
        let mut s = Session::new();
        let words = |v: &[&str]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(complete(&s, "si"), (0, words(&["sigmoid", "sign", "sin", "sinh"])));
        assert_eq!(complete(&s, "d/dx x*sof"), (7, words(&["softplus"])));
        assert_eq!(complete(&s, "logs"), (0, words(&["logsoftmax", "logsumexp"])));
        assert_eq!(complete(&s, "hes"), (0, words(&["hessian"])));
        s.run("velocity(t) = 3*t").unwrap();
        s.run("volume = 2").unwrap();
        s.run("θ1 = 1").unwrap();
        assert_eq!(complete(&s, "1 + v"), (4, words(&["velocity", "volume"])));
        assert_eq!(complete(&s, "θ"), (0, words(&["θ1"])));
        s.run("x^2").unwrap();
        assert_eq!(complete(&s, "an"), (0, words(&["ans"])));
        assert_eq!(complete(&s, ":"), (0, words(COMMANDS)));
        assert_eq!(complete(&s, "  :cl"), (2, words(&[":clear"])));
        assert_eq!(complete(&s, ":ir si"), (4, words(&["sigmoid", "sign", "sin", "sinh"])));
        // Nothing to complete: after an operator, inside a number, an unknown prefix.
        assert_eq!(complete(&s, "x + ").1, Vec::<String>::new());
        assert_eq!(complete(&s, "12").1, Vec::<String>::new());
        assert_eq!(complete(&s, "zzz").1, Vec::<String>::new());
        // The cursor may be inside the line, even inside a multi-byte character.
        assert_eq!(s.complete("co + x", 2), (0, words(&["cos", "cosh"])));
        assert_eq!(s.complete("θ1", 1).1, Vec::<String>::new());
    }
}
