//! The syntax tree, stored as an arena.
//!
//! Owns [`Ast`], the parse result of a formula or REPL line. It knows nothing about graphs,
//! values or derivatives: it only records what was written and where.
//!
//! **Invariant: children are pushed before their parents**, so every child has a smaller
//! [`AstId`] than its parent and a forward scan over the arena is a bottom-up (post-order)
//! walk. For `-x^2 + 1` the arena is
//!
//! ```text
//! 0: Name x    1: Num 2    2: Binary(Pow, 0, 1)    3: Neg(2)    4: Num 1    5: Binary(Add, 3, 4)
//! ```
//!
//! This is why nothing that walks an AST needs recursion: a 100,000-deep nesting is just a long
//! vector, and dropping it is freeing one allocation.

use super::Span;

/// Index of a node in an [`Ast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AstId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `@`, the matrix product.
    MatMul,
}

/// What a syntax node is. Kept small (32 bytes: calls are boxed, names are `Box<str>`), as a
/// formula of millions of nodes is millions of these.
#[derive(Debug, Clone, PartialEq)]
pub enum AstKind {
    Num(f64),
    Name(Box<str>),
    Neg(AstId),
    Binary(BinOp, AstId, AstId),
    /// `name(args)`.
    Call(Box<Call>),
    /// `[a, b, c]`: a tensor literal row (nested for higher ranks).
    List(Vec<AstId>),
    /// `x[i]`, `a[i, j]`: one element of an indexed variable.
    Index(Box<Index>),
    /// `sum(i = lo..hi, body)` or `prod(...)`.
    Reduce(Box<Reduce>),
}

impl AstKind {
    /// The children, in the order they were written.
    pub fn children(&self) -> smallvec::SmallVec<[AstId; 4]> {
        match self {
            AstKind::Neg(a) => smallvec::smallvec![*a],
            AstKind::Binary(_, a, b) => smallvec::smallvec![*a, *b],
            AstKind::Call(c) => c.args.iter().copied().collect(),
            AstKind::List(args) => args.iter().copied().collect(),
            AstKind::Index(ix) => ix.indices.iter().copied().collect(),
            AstKind::Reduce(r) => smallvec::smallvec![r.lo, r.hi, r.body],
            AstKind::Num(_) | AstKind::Name(_) => smallvec::SmallVec::new(),
        }
    }

    /// The same node over other children: `f` maps each child.
    pub fn map_children(&self, f: impl Fn(AstId) -> AstId) -> AstKind {
        match self {
            AstKind::Neg(a) => AstKind::Neg(f(*a)),
            AstKind::Binary(op, a, b) => AstKind::Binary(*op, f(*a), f(*b)),
            AstKind::Call(c) => {
                let mut c = c.clone();
                c.args.iter_mut().for_each(|a| *a = f(*a));
                AstKind::Call(c)
            }
            AstKind::List(args) => AstKind::List(args.iter().map(|a| f(*a)).collect()),
            AstKind::Index(ix) => {
                let mut ix = ix.clone();
                ix.indices.iter_mut().for_each(|a| *a = f(*a));
                AstKind::Index(ix)
            }
            AstKind::Reduce(r) => {
                let mut r = r.clone();
                (r.lo, r.hi, r.body) = (f(r.lo), f(r.hi), f(r.body));
                AstKind::Reduce(r)
            }
            AstKind::Num(_) | AstKind::Name(_) => self.clone(),
        }
    }
}

/// A call `name(args)`; `name_span` is where the name is, for "unknown function" carets.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub name_span: Span,
    pub args: Vec<AstId>,
}

/// `name[indices]`. The indices are integer arithmetic on numbers, `let` names and the
/// indices of enclosing sums, evaluated when the formula is lowered.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: String,
    pub name_span: Span,
    pub indices: Vec<AstId>,
}

/// `name(index = lo..hi, body)`: a sum or product over `index` from `lo` to `hi`, both
/// included. The bounds are integer arithmetic as an [`Index`]'s are.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    pub name: String,
    pub name_span: Span,
    pub index: Name,
    pub lo: AstId,
    pub hi: AstId,
    pub body: AstId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AstNode {
    pub kind: AstKind,
    pub span: Span,
}

/// The arena. See the module doc for its invariant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ast {
    nodes: Vec<AstNode>,
}

impl Ast {
    pub fn push(&mut self, kind: AstKind, span: Span) -> AstId {
        let id = AstId(self.nodes.len() as u32);
        self.nodes.push(AstNode { kind, span });
        id
    }

    pub fn node(&self, id: AstId) -> &AstNode {
        &self.nodes[id.0 as usize]
    }

    pub fn span(&self, id: AstId) -> Span {
        self.nodes[id.0 as usize].span
    }
}

/// A name written in the source, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

/// `x = 4` inside `... at x = 4, y = 2`; `x[2] = 4` for one element (`index` holds the
/// index expressions, empty for a plain name).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub name: Name,
    pub index: Vec<AstId>,
    pub value: AstId,
}

/// One REPL line (also what `symdiff diff` and friends parse their arguments into).
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// A bare expression, possibly `... at x = 1`.
    Expr(AstId),
    /// `lhs = rhs`: a definition `f(x, y) = ...` or an assignment `a = 3`; which one is
    /// decided when the left side is checked, not by the grammar.
    Assign { lhs: AstId, rhs: AstId },
    /// `let a = 3`.
    Let { name: Name, value: AstId },
    /// `d/dx expr` or `d^n/dx^n expr`.
    Deriv { var: Name, order: u32, expr: AstId },
    /// `grad expr [wrt a, b]`.
    Grad { expr: AstId, wrt: Vec<Name> },
    /// `hessian expr [wrt a, b]`.
    Hessian { expr: AstId, wrt: Vec<Name> },
}

/// A parsed REPL line: the statement and its `at` bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub stmt: Stmt,
    pub at: Vec<Binding>,
    pub span: Span,
}

/// A value in a model file: after `=` in an option, or inside `leaky_relu(0.2)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Word(String),
    Dims(Vec<usize>),
    /// `"train.csv"`: text in quotes (a file path, a column name).
    Text(String),
}

/// A value with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// One word of a model line after its head: `128`, `relu`, `28x28`, `lr=0.001`,
/// `leaky_relu(0.2)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Spanned<Value>),
    Option { name: Name, value: Spanned<Value> },
    Call { name: Name, args: Vec<Spanned<Value>>, span: Span },
}

impl Item {
    /// Where the item was written.
    pub fn span(&self) -> Span {
        match self {
            Item::Value(v) => v.span,
            Item::Option { name, value } => Span::new(name.span.start, value.span.end),
            Item::Call { span, .. } => *span,
        }
    }
}

/// One line of a model file.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelLine {
    /// `dense 128 relu l2=0.001`, `leaky_relu(0.2)`, `optimizer adam lr=0.001`.
    Statement { head: Name, args: Vec<Spanned<Value>>, items: Vec<Item>, span: Span },
    /// `activation swish(x) = x * sigmoid(x)`.
    Define { head: Name, name: Name, params: Vec<Spanned<Value>>, body: AstId, span: Span },
    /// `loss = mean(...)`, `regularizer = 0.001 * sum(dense_1_kernel^2)`.
    Formula { head: Name, body: AstId, span: Span },
    /// `let n = 10`: a name for a number, in the whole file.
    Let { name: Name, value: AstId, span: Span },
}

/// The values out of boxes (the grammar returns large items boxed, see its header).
pub fn unbox<T>(items: Vec<Box<T>>) -> Vec<T> {
    items.into_iter().map(|b| *b).collect()
}
