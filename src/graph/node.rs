//! The expression DAG: an append-only arena of hash-consed nodes.
//!
//! Owns [`Graph`], [`Id`], [`Op`] and the raw interning step. The *simplifying* constructors
//! (`add`, `mul`, `pow`, ...) live in `simplify.rs`; everything outside `graph/` builds nodes
//! only through them, so every node in a graph is in canonical form.
//!
//! **Invariant: children are built before their parents**, so every argument of a node has a
//! smaller [`Id`] than the node itself, and a forward scan over ids is a topological order.
//! `x^3 + 2*x^2 + 1` is stored as
//!
//! ```text
//! 0: Var x   1: Num 3   2: Pow(0, 1)   3: Num 2   4: Pow(0, 3)   5: Mul(3, 4)   6: Num 1   7: Add(2, 5, 6)
//! ```
//!
//! **Invariant: hash-consing.** A node is identified by its operator and argument ids; building
//! the same `(op, args)` twice returns the same [`Id`], so equal subexpressions are one node
//! (common subexpressions are shared for free) and equality of canonical expressions is
//! equality of ids. Nodes are never mutated or removed.
//!
//! **Shapes.** Every node has a shape: `[]` for scalars, `[2, 3]` for a 2×3 matrix. It is a
//! function of the operator and the arguments' shapes (numpy broadcasting for elementwise
//! operators), computed once when the node is interned; shapes are interned too, so a node
//! carries only a small [`ShapeId`]. Callers that build from user input check shapes first
//! (`lower.rs`, the model builder); inside the library, nodes are built shape-correct.
//!
//! **Constants.** When a node without variables below it is built, its value is computed with
//! the interpreter's own step (`eval::apply`): a node whose value exists is *known*
//! ([`Graph::constant_value`]); one the interpreter rejects (`0/0`, `log(-1)`, `exp(1000)`),
//! and every node above it, is *undefined* ([`Graph::is_undefined`]), which keeps the
//! simplifier from making it vanish.
//!
//! Nothing in this module recurses: deep expressions are long vectors, not deep call stacks.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::func::Func;

/// Index of a node in its [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub(crate) u32);

impl Id {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Named mathematical constants, kept symbolic so that they print as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Constant {
    Pi,
    E,
}

impl Constant {
    pub fn value(self) -> f64 {
        match self {
            Constant::Pi => std::f64::consts::PI,
            Constant::E => std::f64::consts::E,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Constant::Pi => "pi",
            Constant::E => "e",
        }
    }
}

/// What a node computes. Arguments are stored separately (see [`Graph::args`]).
///
/// The scalar core is deliberately small (in the spirit of a RISC instruction set): subtraction
/// is `a + (-1)*b`, division is `a * b^-1`, `sqrt(x)` is `x^0.5`. The printer turns these back
/// into what a person writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A number, as the bits of an `f64` (never `-0.0`; NaN or infinite only when a program
    /// built it with `Expr::num`, and then undefined).
    Num(u64),
    /// `pi` or `e`.
    Const(Constant),
    /// A named input; the index is into the graph's variable table.
    Var(u32),
    /// n-ary sum, at least two arguments, sorted by id (constant term last).
    Add,
    /// n-ary product, at least two arguments, numeric coefficient first, then sorted by id.
    Mul,
    /// `base ^ exponent`.
    Pow,
    /// A unary function from the function table (elementwise on tensors).
    Func(Func),
    /// Matrix product of two 2-D tensors: `[m, k] @ [k, n]` is `[m, n]`.
    MatMul,
    /// Sum over one axis (removing it), or over all axes when the axis is [`ALL_AXES`].
    Sum(u8),
    /// Maximum over one axis (removing it), or over all axes.
    Max(u8),
    /// Broadcast to the given shape (numpy rules).
    Broadcast(ShapeId),
    /// The same elements in another shape.
    Reshape(ShapeId),
    /// Transpose of a 2-D tensor.
    Transpose,
    /// `log(softmax(x))` over the last axis, computed stably.
    LogSoftmax,
    /// Integer labels to one-hot rows of the given width (no gradient).
    OneHot(u32),
}

/// `Op::Sum(ALL_AXES)` sums every element.
pub const ALL_AXES: u8 = u8::MAX;

/// Index of an interned shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub(crate) u32);

impl ShapeId {
    /// The scalar shape `[]`.
    pub const SCALAR: ShapeId = ShapeId(0);
}

#[derive(Debug, Clone, Copy)]
struct Node {
    op: Op,
    start: u32,
    len: u32,
    shape: ShapeId,
    /// [`KNOWN`], [`UNDEFINED`] or neither.
    flags: u8,
}

/// Node flag: a scalar constant with a finite value (no variables below it), which the
/// interpreter computes without error. Leaves keep the value in their op, other nodes in
/// `Graph::values`.
const KNOWN: u8 = 1;
/// Node flag: the node is, or has below it, a constant subexpression that the interpreter
/// rejects (`0/0`, `log(-1)`, `exp(1000)`): it has no value at any point. The simplifying
/// constructors never simplify such an argument away (see `simplify.rs`).
const UNDEFINED: u8 = 2;

/// A variable: its name is `names[start..start + len]`, and `id` is its node.
///
/// A look-up by name reads the hash table, this entry and the name's bytes, and nothing else:
/// no node and no separately allocated string. Formulas mostly name their variables in the
/// order they first wrote them, so those entries and bytes are read in order, from cache.
#[derive(Debug, Clone, Copy)]
struct Var {
    start: usize,
    len: usize,
    shape: ShapeId,
    id: Id,
}

/// The arena. See the module doc for its invariants.
#[derive(Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    /// All argument lists, concatenated; a node's arguments are `args[start..start+len]`.
    args: Vec<Id>,
    /// Hash-consing table (also called interning): `(op, args)` to the one node that has them,
    /// for the nodes whose look-up the users of their arguments cannot answer (see `intern`),
    /// stored with 32 bits of the key's hash (8 bytes an entry, half a cache line's worth of
    /// misses less than 16) so that growing the table never rehashes a key: the table's hash
    /// is [`spread`] of those bits.
    memo: HashTable<(u32, Id)>,
    /// Per node, who uses it as an argument: [`NO_USER`], the one user's id, or
    /// [`MANY_USERS`]. It lets `intern` answer most look-ups without `memo`, whose every
    /// probe misses the cache once a graph has millions of nodes (see `intern`).
    uses: Vec<u32>,
    /// Per node, how many of its distinct arguments have a single user (itself): it goes into
    /// `memo` when this reaches 0. A count, so that a product of 10⁴ factors is not scanned
    /// again each time one of them gains a second user.
    pending: Vec<u32>,
    /// The last node interned under each of [`RECENT`] hash values (`hash % RECENT`): a
    /// small table in cache in front of `memo`, which misses the cache on every look-up once
    /// a graph has millions of nodes. Written-out formulas repeat what they just built (the
    /// squared distance written twice in a term), and an entry is only a hint: it is used
    /// only if its node has exactly the key, so it never needs invalidating.
    recent: Box<[(u32, Id)]>,
    hasher: DefaultHashBuilder,
    /// Every variable's name, concatenated in the order the variables were built (one
    /// allocation, not one per name; see [`Var`]).
    names: String,
    /// The variables, indexed by `Op::Var`.
    vars: Vec<Var>,
    /// The variables, found by name: each entry keeps 32 bits of the name's hash (so that
    /// growing the table hashes no name again) and the `Op::Var` index, which leads to the
    /// name and the node in `vars`. No name is stored twice.
    var_ids: HashTable<(u32, u32)>,
    /// Interned shapes; `shapes[0]` is the scalar shape.
    shapes: Vec<Box<[usize]>>,
    shape_ids: hashbrown::HashMap<Box<[usize]>, ShapeId>,
    /// The values of the [`KNOWN`] nodes that are not leaves, computed by the interpreter's
    /// own step (`eval::apply`) when the node is built.
    values: hashbrown::HashMap<Id, f64>,
    /// The most nodes that building from user input may grow the graph to (see
    /// [`NODE_BUDGET`]).
    budget: usize,
    /// The last root a users index was asked for, and the index once built (see
    /// [`Graph::repeated_users`]).
    users: (Option<Id>, Option<std::sync::Arc<Users>>),
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({} nodes)", self.nodes.len())
    }
}

impl Default for Graph {
    fn default() -> Graph {
        let scalar: Box<[usize]> = Box::new([]);
        Graph {
            nodes: Vec::new(),
            args: Vec::new(),
            memo: HashTable::new(),
            uses: Vec::new(),
            pending: Vec::new(),
            recent: vec![(0, Id(u32::MAX)); RECENT].into_boxed_slice(),
            hasher: DefaultHashBuilder::default(),
            names: String::new(),
            vars: Vec::new(),
            var_ids: HashTable::new(),
            shapes: vec![scalar.clone()],
            shape_ids: [(scalar, ShapeId::SCALAR)].into_iter().collect(),
            values: hashbrown::HashMap::new(),
            budget: NODE_BUDGET,
            users: (None, None),
        }
    }
}

/// Why two shapes do not combine.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError(pub String);

/// `2x3`, or `scalar` for `[]`.
pub fn show_shape(shape: &[usize]) -> String {
    if shape.is_empty() {
        "scalar".to_owned()
    } else {
        shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
    }
}

/// The numpy broadcast of two shapes, if they are compatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(ShapeError(format!(
                    "shapes {} and {} do not broadcast together",
                    show_shape(a),
                    show_shape(b)
                )));
            }
        };
    }
    Ok(out)
}

/// Most nodes a graph may hold: ids are `u32` and a few bits stay free.
pub const MAX_NODES: usize = 1 << 30;

/// The node budget: the largest size, in operations (`Graph::size`: every node counts, and
/// every argument of an n-ary node counts once more, so a product of 999 factors is 1,000
/// and no wide node passes for a small one), a graph may grow to while it is built from user
/// input (a formula, a REPL line, a `diff(...)`, a derivative, gradient or Hessian asked for,
/// a user function inlined). At about 100 bytes a node that is at most about 1 GB. Every route that builds
/// nodes from input checks it as it goes (`Graph::check_budget`) and stops with an error
/// naming the limit, so no input, and no sequence of REPL lines, can grow a graph until the
/// allocator gives up. (A 16 MiB formula, the most a command reads, lowers to well under
/// this: only derivatives and function inlining multiply sizes. A graph the library parses
/// from longer text gets one node per byte instead, see `Expr::parse`.)
pub const NODE_BUDGET: usize = 10_000_000;

/// A route that builds nodes from user input reached the graph's node budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget, in operations ([`Graph::size`]).
    pub limit: usize,
}

impl OverBudget {
    /// The message for an error: `what` is too large.
    pub fn message(&self, what: &str) -> String {
        format!(
            "{what} is too large: building it would grow the expression graph past {} operations (the limit; a node of k arguments counts k + 1)",
            self.limit
        )
    }
}

/// A point in a graph's history to go back to ([`Graph::rollback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    nodes: usize,
    args: usize,
    vars: usize,
}

/// Who uses each node of one root's DAG: for every node reachable from the root, the nodes
/// (of that DAG) that have it as an argument, and at which argument position. Built for a
/// root that is walked again ([`Graph::repeated_users`]) and valid forever (the graph is
/// append-only), so that the derivatives of one function with respect to each of many
/// variables visit only the nodes between each variable and the root, not the whole DAG each
/// time.
pub struct Users {
    root: Id,
    /// The nodes reachable from the root, in id order.
    order: Vec<Id>,
    /// The position in `order` of every node there (`u32::MAX` elsewhere).
    position: NodeMap<u32>,
    /// `edges[start[p]..start[p + 1]]`: (position of a user, argument index) for position `p`.
    start: Vec<u32>,
    edges: Vec<(u32, u32)>,
    /// The root's operations ([`Graph::ops_of`]).
    ops: usize,
}

impl Users {
    /// The operations of the root's DAG ([`Graph::ops_of`]).
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// The root this index is for.
    pub fn root(&self) -> Id {
        self.root
    }

    /// The position of `id` in the root's DAG, if it is there.
    pub fn position(&self, id: Id) -> Option<u32> {
        Some(*self.position.get(id)).filter(|&p| p != u32::MAX)
    }

    /// The node at position `p`.
    pub fn node(&self, p: u32) -> Id {
        self.order[p as usize]
    }

    /// The users of the node at position `p`: (position of the user, argument index).
    pub fn of(&self, p: u32) -> &[(u32, u32)] {
        &self.edges[self.start[p as usize] as usize..self.start[p as usize + 1] as usize]
    }
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Number of nodes in the arena (every id is below it).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `true` before the first node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn op(&self, id: Id) -> Op {
        self.nodes[id.index()].op
    }

    pub fn args(&self, id: Id) -> &[Id] {
        let n = &self.nodes[id.index()];
        &self.args[n.start as usize..(n.start + n.len) as usize]
    }

    /// The value of a `Num` node.
    pub fn as_num(&self, id: Id) -> Option<f64> {
        match self.op(id) {
            Op::Num(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    pub fn is_num(&self, id: Id, value: f64) -> bool {
        self.as_num(id) == Some(value)
    }

    /// The shape of node `id`.
    pub fn shape(&self, id: Id) -> &[usize] {
        &self.shapes[self.nodes[id.index()].shape.0 as usize]
    }

    /// The interned id of the shape of node `id`.
    pub fn shape_id_of(&self, id: Id) -> ShapeId {
        self.nodes[id.index()].shape
    }

    /// Whether node `id` is a scalar.
    pub fn is_scalar(&self, id: Id) -> bool {
        self.nodes[id.index()].shape == ShapeId::SCALAR
    }

    /// The shape behind an interned id.
    pub fn shape_of(&self, s: ShapeId) -> &[usize] {
        &self.shapes[s.0 as usize]
    }

    /// Interns `shape`.
    pub fn shape_id(&mut self, shape: &[usize]) -> ShapeId {
        if let Some(&s) = self.shape_ids.get(shape) {
            return s;
        }
        let s = ShapeId(self.shapes.len() as u32);
        self.shapes.push(shape.into());
        self.shape_ids.insert(shape.into(), s);
        s
    }

    /// The names of every variable built in this graph, in the order they were first built
    /// (for a freshly parsed formula: as they first appear in it).
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|v| self.name_of(v))
    }

    fn name_of(&self, v: &Var) -> &str {
        &self.names[v.start..v.start + v.len]
    }

    /// The name of variable node `id`, if it is one.
    pub fn var_name(&self, id: Id) -> Option<&str> {
        match self.op(id) {
            Op::Var(v) => Some(self.name_of(&self.vars[v as usize])),
            _ => None,
        }
    }

    /// The budget of this graph, in operations ([`NODE_BUDGET`] unless changed).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Changes the budget, in operations (tests use small ones).
    pub fn set_budget(&mut self, ops: usize) {
        self.budget = ops.min(2 * MAX_NODES);
    }

    /// An error once the graph's [`size`](Self::size) is over its budget. Routes that build
    /// from user input call this as they go: each step adds a bounded number of operations,
    /// so they stop close to the limit.
    pub fn check_budget(&self) -> Result<(), OverBudget> {
        if self.size() > self.budget { Err(OverBudget { limit: self.budget }) } else { Ok(()) }
    }

    // Sizes in operations. A node count hides wide nodes (the 1,000 partials of a product of
    // 1,000 factors, written out, are 1,000 nodes and a million multiplications), so every
    // limit, budget and compiler decision counts operations instead: `size` for what a graph
    // holds, `ops` for what evaluating a node costs.

    /// The graph's size in operations: every node counts one, and every argument of every
    /// node one more (what the arena holds, and about what compiling it all emits).
    pub fn size(&self) -> usize {
        self.nodes.len() + self.args.len()
    }

    /// The arithmetic operations evaluating node `id` takes, its arguments given: a sum or
    /// product of k arguments is k - 1 additions or multiplications, any other operator is
    /// one, a leaf (number, constant, variable) none. A coefficient -1 is a sign, not a
    /// multiplication (`a - b*c` is one multiplication and one subtraction, as compiled).
    pub fn ops(&self, id: Id) -> usize {
        let args = self.args(id);
        let negation = args.first().is_some_and(|&c| self.op(c) == Op::Num((-1.0f64).to_bits()));
        op_count(self.op(id), args.len(), negation)
    }

    /// The arithmetic operations ([`ops`](Self::ops)) of the program that computes `roots`:
    /// every node reachable from them counted once, shared ones included.
    pub fn ops_of(&self, roots: &[Id]) -> usize {
        self.reachable(roots).iter().map(|&id| self.ops(id)).sum()
    }

    /// Room for `nodes` more nodes of about two arguments each, made at once: a caller that
    /// knows it is about to build millions (a long formula read in pieces) saves the copies
    /// and page faults of growing the arrays by doubling. Untouched room costs only address
    /// space.
    pub fn reserve(&mut self, nodes: usize) {
        self.nodes.reserve(nodes);
        self.args.reserve(2 * nodes);
        self.uses.reserve(nodes);
        self.pending.reserve(nodes);
    }

    /// The graph's present state, to [`rollback`](Self::rollback) to.
    pub fn mark(&self) -> Mark {
        Mark { nodes: self.nodes.len(), args: self.args.len(), vars: self.vars.len() }
    }

    /// Forgets every node built since `mark`, as if they never were: for a REPL line (or a
    /// library call) that failed, so that a failure, one at the node budget above all,
    /// leaves the graph as it was. The caller holds no ids of those nodes. Costs nothing when
    /// nothing was built, and a pass over the hash-consing table otherwise.
    pub fn rollback(&mut self, mark: Mark) {
        if self.nodes.len() <= mark.nodes {
            return;
        }
        let keep = mark.nodes as u32;
        self.nodes.truncate(mark.nodes);
        self.uses.truncate(mark.nodes);
        // No kept node's `pending` changes: it counts arguments whose one user is that kept
        // node, and forgetting other nodes leaves them so.
        self.pending.truncate(mark.nodes);
        // A kept node whose one user is forgotten has none again; one with many keeps
        // `MANY_USERS`, which only sends its look-ups to `memo` (see `intern`).
        for a in self.args.drain(mark.args..) {
            if let Some(u) = self.uses.get_mut(a.index())
                && *u != MANY_USERS
                && *u >= keep
            {
                *u = NO_USER;
            }
        }
        self.memo.retain(|&mut (_, id)| id.0 < keep);
        if let Some(first) = self.vars.get(mark.vars) {
            self.names.truncate(first.start);
        }
        self.vars.truncate(mark.vars);
        self.var_ids.retain(|&mut (_, v)| (v as usize) < mark.vars);
        self.values.retain(|id, _| id.0 < keep);
        if self.users.0.is_some_and(|r| r.0 >= keep) {
            self.users = (None, None);
        }
    }

    /// `f` on this graph with no node budget (for the library's infallible calls), the budget
    /// restored afterwards.
    pub fn unbudgeted<T>(&mut self, f: impl FnOnce(&mut Graph) -> T) -> T {
        let saved = std::mem::replace(&mut self.budget, usize::MAX);
        let r = f(self);
        self.budget = saved;
        r
    }

    /// The users index of `root`'s DAG if `root` was asked for the last time too (built then,
    /// and cached until another root is asked for); `None` the first time. One walk over a
    /// DAG costs as much as building its index, so a single walk goes without it.
    pub fn repeated_users(&mut self, root: Id) -> Option<std::sync::Arc<Users>> {
        if let Some(u) = &self.users.1
            && u.root == root
        {
            return Some(std::sync::Arc::clone(u));
        }
        if self.users.0 != Some(root) {
            self.users = (Some(root), None);
            return None;
        }
        let order = self.reachable(&[root]);
        let mut position = NodeMap::new(&order, u32::MAX);
        for (p, &id) in order.iter().enumerate() {
            position.set(id, p as u32);
        }
        let mut start = vec![0u32; order.len() + 1];
        for &id in &order {
            for a in self.args(id) {
                start[*position.get(*a) as usize + 1] += 1;
            }
        }
        for p in 0..order.len() {
            start[p + 1] += start[p];
        }
        let mut fill = start.clone();
        let mut edges = vec![(0u32, 0u32); start[order.len()] as usize];
        for (p, &id) in order.iter().enumerate() {
            for (i, a) in self.args(id).iter().enumerate() {
                let c = *position.get(*a) as usize;
                edges[fill[c] as usize] = (p as u32, i as u32);
                fill[c] += 1;
            }
        }
        let ops = order.iter().map(|&id| self.ops(id)).sum();
        let u = std::sync::Arc::new(Users { root, order, position, start, edges, ops });
        self.users = (Some(root), Some(std::sync::Arc::clone(&u)));
        Some(u)
    }

    /// The node of variable `name`, if the graph has one.
    pub fn find_var(&self, name: &str) -> Option<Id> {
        let hash = self.hasher.hash_one(name) as u32;
        let Graph { names, vars, var_ids, .. } = self;
        var_ids
            .find(spread(hash), |&(h, v)| {
                let v = &vars[v as usize];
                h == hash && v.len == name.len() && &names[v.start..v.start + v.len] == name
            })
            .map(|&(_, v)| vars[v as usize].id)
    }

    /// The variable node `name` (created as a scalar on first use).
    pub fn var(&mut self, name: &str) -> Id {
        if let Some(id) = self.find_var(name) {
            return id;
        }
        self.new_var(name, ShapeId::SCALAR)
    }

    /// The variable node `name` with shape `shape`; an error if `name` already has another.
    pub fn var_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Id, ShapeError> {
        let s = self.shape_id(shape);
        if let Some(id) = self.find_var(name) {
            if self.shape_id_of(id) != s {
                return Err(ShapeError(format!(
                    "`{name}` is {} here but was {} before",
                    show_shape(shape),
                    show_shape(self.shape(id))
                )));
            }
            return Ok(id);
        }
        Ok(self.new_var(name, s))
    }

    fn new_var(&mut self, name: &str, shape: ShapeId) -> Id {
        let index = self.vars.len() as u32;
        let var = Var { start: self.names.len(), len: name.len(), shape, id: Id(self.nodes.len() as u32) };
        self.names.push_str(name);
        self.vars.push(var);
        // A new index: no node has this key yet, and none will look it up (variables are
        // found by name), so it goes straight in without `memo`.
        let id = self.push(Op::Var(index), &[], None);
        debug_assert_eq!(id, var.id);
        let hash = self.hasher.hash_one(name) as u32;
        self.var_ids.insert_unique(spread(hash), (hash, index), |&(h, _)| spread(h));
        id
    }

    /// A number node. `-0.0` becomes `0.0` and every NaN the one quiet NaN. Constant folding
    /// never produces a number that is not finite and the parser cannot write one; a program
    /// can (`Expr::num(f64::NAN)`), and such a number is an undefined constant (see the
    /// module doc): it has no value, and evaluating it fails.
    pub fn num(&mut self, x: f64) -> Id {
        let x = if x == 0.0 {
            0.0
        } else if x.is_nan() {
            f64::NAN
        } else {
            x
        };
        self.intern(Op::Num(x.to_bits()), &[])
    }

    pub fn constant(&mut self, c: Constant) -> Id {
        self.intern(Op::Const(c), &[])
    }

    /// Adds `(op, args)` as is, or returns the existing node. Callers guarantee the canonical
    /// form; only `simplify.rs` and the constructors above call this.
    ///
    /// **Look-up by users.** A node with the key `(op, args)` would be a user of every one of
    /// `args`, so an argument's users often answer without the hash table: if an argument has
    /// no user yet (it was just built, as most arguments are when a formula is built bottom
    /// up), the key is new; if it has one user, the key exists exactly when that user has it.
    /// Only a key whose arguments all have several users is looked up in `memo`. So `memo`
    /// needs to hold just those nodes whose arguments all have several users (leaves, which
    /// have no arguments, included): a node goes in when it is built so, or later, when the
    /// last of its arguments gains its second user. In `t = x*y; t + 1` the node `t` is never
    /// in `memo`, and building `x*y` again finds it as the one user of `x`.
    pub(crate) fn intern(&mut self, op: Op, args: &[Id]) -> Id {
        match self.find_by_users(op, args) {
            Some(Some(id)) => return id,
            Some(None) => return self.push(op, args, None),
            None => {}
        }
        let hash = hash_key(&self.hasher, op, args) as u32;
        let Graph { nodes, args: all_args, memo, recent, .. } = self;
        let is_key = |h: u32, id: Id| {
            h == hash
                && nodes.get(id.index()).is_some_and(|n| {
                    n.op == op && &all_args[n.start as usize..(n.start + n.len) as usize] == args
                })
        };
        let slot = hash as usize % RECENT;
        let (h, id) = recent[slot];
        if is_key(h, id) {
            return id;
        }
        if let Some(&(_, id)) = memo.find(spread(hash), |&(h, id)| is_key(h, id)) {
            recent[slot] = (hash, id);
            return id;
        }
        self.push(op, args, Some(hash))
    }

    /// The node `(op, args)` if the graph has it, building nothing (the look-up of
    /// [`intern`](Self::intern)).
    pub fn find(&self, op: Op, args: &[Id]) -> Option<Id> {
        if args.iter().any(|a| a.index() >= self.nodes.len()) {
            return None;
        }
        if let Some(answer) = self.find_by_users(op, args) {
            return answer;
        }
        let hash = hash_key(&self.hasher, op, args) as u32;
        let has_key = |id: Id| self.nodes[id.index()].op == op && self.args(id) == args;
        self.memo.find(spread(hash), |&(h, id)| h == hash && has_key(id)).map(|&(_, id)| id)
    }

    /// What the users of `args` say of the key `(op, args)` (see `intern`): `Some(Some(id))`
    /// where an argument's one user `id` has it, `Some(None)` where the key is new, `None`
    /// where every argument has several users and only `memo` can tell.
    fn find_by_users(&self, op: Op, args: &[Id]) -> Option<Option<Id>> {
        for &a in args {
            match self.uses[a.index()] {
                NO_USER => return Some(None),
                MANY_USERS => {}
                u => {
                    let u = Id(u);
                    return Some(Some(u).filter(|&u| self.nodes[u.index()].op == op && self.args(u) == args));
                }
            }
        }
        None
    }

    /// Adds the node `(op, args)`, which the graph does not have, keeping `uses` and `memo`
    /// as `intern` needs them; `hash` is the key's hash when the caller has it.
    fn push(&mut self, op: Op, args: &[Id], hash: Option<u32>) -> Id {
        assert!(self.nodes.len() < MAX_NODES, "expression graph exceeds {MAX_NODES} nodes");
        debug_assert!(args.iter().all(|a| a.index() < self.nodes.len()), "children before parents");
        let id = Id(self.nodes.len() as u32);
        let shape = self.infer_shape(op, args);
        let (flags, value) = self.classify(op, args, shape);
        if let Some(v) = value {
            self.values.insert(id, v);
        }
        self.nodes.push(Node { op, start: self.args.len() as u32, len: args.len() as u32, shape, flags });
        self.args.extend_from_slice(args);
        self.uses.push(NO_USER);
        let mut pending = 0;
        for &a in args {
            match self.uses[a.index()] {
                NO_USER => {
                    self.uses[a.index()] = id.0;
                    pending += 1;
                }
                MANY_USERS => {}
                u if u == id.0 => {}
                u => {
                    self.uses[a.index()] = MANY_USERS;
                    // `u` was not in `memo` (its argument `a` had one user); it goes in once
                    // all its arguments have several.
                    self.pending[u as usize] -= 1;
                    if self.pending[u as usize] == 0 {
                        self.remember(Id(u), None);
                    }
                }
            }
        }
        self.pending.push(pending);
        // Variables are found by name (`var_ids`), never by key.
        if pending == 0 && !matches!(op, Op::Var(_)) {
            self.remember(id, hash);
        }
        id
    }

    /// Puts the node `id` into `memo` (and `recent`); `hash` is its key's hash if known.
    fn remember(&mut self, id: Id, hash: Option<u32>) {
        let hash = hash.unwrap_or_else(|| hash_key(&self.hasher, self.op(id), self.args(id)) as u32);
        self.memo.insert_unique(spread(hash), (hash, id), |&(h, _)| spread(h));
        self.recent[hash as usize % RECENT] = (hash, id);
    }

    /// What is known about the value of a new node `op(args)` of shape `shape`: its flags,
    /// and its value if it is a [`KNOWN`] constant that is not a leaf.
    fn classify(&self, op: Op, args: &[Id], shape: ShapeId) -> (u8, Option<f64>) {
        match op {
            Op::Var(_) => return (0, None),
            Op::Num(bits) if f64::from_bits(bits).is_finite() => return (KNOWN, None),
            Op::Num(_) => return (UNDEFINED, None),
            Op::Const(_) => return (KNOWN, None),
            _ => {}
        }
        let mut known = true;
        for a in args {
            let f = self.nodes[a.index()].flags;
            if f & UNDEFINED != 0 {
                return (UNDEFINED, None);
            }
            known &= f & KNOWN != 0;
        }
        if !known || shape != ShapeId::SCALAR || !matches!(op, Op::Add | Op::Mul | Op::Pow | Op::Func(_)) {
            return (0, None);
        }
        match super::eval::apply(self, op, args, |a| self.constant_value(a).unwrap_or(f64::NAN)) {
            Ok(v) => (KNOWN, Some(v)),
            Err(_) => (UNDEFINED, None),
        }
    }

    /// The value of `id` if it is a scalar constant the interpreter can compute (`2`, `pi`,
    /// `sin(1)`), `None` for anything with a variable, a tensor, or no value.
    pub fn constant_value(&self, id: Id) -> Option<f64> {
        let n = &self.nodes[id.index()];
        if n.flags & KNOWN == 0 {
            return None;
        }
        match n.op {
            Op::Num(bits) => Some(f64::from_bits(bits)),
            Op::Const(c) => Some(c.value()),
            _ => self.values.get(&id).copied(),
        }
    }

    /// Whether `id` is, or contains, a constant subexpression without a value (`0/0`,
    /// `log(-1)`, `exp(1000)`, `1e308*10`): then `id` has no value at any point, and its
    /// evaluation fails naming that subexpression.
    pub fn is_undefined(&self, id: Id) -> bool {
        self.nodes[id.index()].flags & UNDEFINED != 0
    }

    /// A graph holding an exact copy of the nodes reachable from `roots` (no constructor is
    /// called, so nothing is simplified or regrouped: the copy computes bit for bit what the
    /// original does), and the roots' ids in it. For compiling later what is built now,
    /// without holding the original graph.
    ///
    /// Ids keep their order (a forward scan of `reachable` is a topological order), so the
    /// copy's children still come before their parents.
    pub fn extract(&self, roots: &[Id]) -> (Graph, Vec<Id>) {
        let mut to = Graph::new();
        let mut map: hashbrown::HashMap<Id, Id> = hashbrown::HashMap::new();
        let mut args: Vec<Id> = Vec::new();
        for id in self.reachable(roots) {
            let new = match self.op(id) {
                Op::Var(v) => {
                    let var = &self.vars[v as usize];
                    let shape = to.shape_id(self.shape_of(var.shape));
                    to.new_var(self.name_of(var), shape)
                }
                op => {
                    let op = match op {
                        Op::Broadcast(s) => Op::Broadcast(to.shape_id(self.shape_of(s))),
                        Op::Reshape(s) => Op::Reshape(to.shape_id(self.shape_of(s))),
                        other => other,
                    };
                    args.clear();
                    args.extend(self.args(id).iter().map(|a| map[a]));
                    to.intern(op, &args)
                }
            };
            map.insert(id, new);
        }
        let ids = roots.iter().map(|r| map[r]).collect();
        (to, ids)
    }

    /// The shape of a new node: a function of its operator and its arguments' shapes.
    /// Arguments are assumed compatible (see the module doc); an incompatible combination
    /// is a bug in the caller, caught here in debug builds.
    fn infer_shape(&mut self, op: Op, args: &[Id]) -> ShapeId {
        match op {
            Op::Num(_) | Op::Const(_) => return ShapeId::SCALAR,
            Op::Var(v) => return self.vars[v as usize].shape,
            Op::Func(_) | Op::LogSoftmax => return self.shape_id_of(args[0]),
            Op::Broadcast(s) | Op::Reshape(s) => return s,
            _ if args.iter().all(|a| self.is_scalar(*a)) && matches!(op, Op::Add | Op::Mul | Op::Pow) => {
                return ShapeId::SCALAR;
            }
            _ => {}
        }
        let shapes: Vec<&[usize]> = args.iter().map(|&a| self.shape(a)).collect();
        let shape = self.result_shape(op, &shapes);
        debug_assert!(shape.is_ok(), "{op:?}: {shape:?}");
        let shape = shape.unwrap_or_default();
        self.shape_id(&shape)
    }

    /// The shape `op` gives to arguments of shapes `args`, or why they do not fit. Builders
    /// of user input call this first, and report the error where the user wrote the operator.
    pub fn result_shape(&self, op: Op, args: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let fail = |m: String| Err(ShapeError(m));
        match op {
            Op::Num(_) | Op::Const(_) => Ok(Vec::new()),
            Op::Var(v) => Ok(self.shape_of(self.vars[v as usize].shape).to_vec()),
            Op::Func(_) => Ok(args[0].to_vec()),
            Op::Add | Op::Mul | Op::Pow => {
                let mut out: Vec<usize> = Vec::new();
                for a in args {
                    out = broadcast_shapes(&out, a)?;
                }
                Ok(out)
            }
            Op::MatMul => match (args[0], args[1]) {
                ([m, k], [k2, n]) if k == k2 => Ok(vec![*m, *n]),
                (a, b) => fail(format!(
                    "`@` needs an m×k and a k×n matrix; here {} @ {}",
                    show_shape(a),
                    show_shape(b)
                )),
            },
            Op::Sum(axis) | Op::Max(axis) => {
                let mut s = args[0].to_vec();
                if axis == ALL_AXES {
                    return Ok(Vec::new());
                }
                if axis as usize >= s.len() {
                    return fail(format!("axis {axis} does not exist in a {} tensor", show_shape(args[0])));
                }
                s.remove(axis as usize);
                Ok(s)
            }
            Op::Broadcast(t) => {
                let t = self.shape_of(t);
                match broadcast_shapes(args[0], t) {
                    Ok(b) if b == t => Ok(b),
                    _ => fail(format!("{} does not broadcast to {}", show_shape(args[0]), show_shape(t))),
                }
            }
            Op::Reshape(t) => {
                let t = self.shape_of(t);
                if t.iter().product::<usize>() == args[0].iter().product::<usize>() {
                    Ok(t.to_vec())
                } else {
                    fail(format!("cannot reshape {} into {}", show_shape(args[0]), show_shape(t)))
                }
            }
            Op::Transpose => match args[0] {
                [m, n] => Ok(vec![*n, *m]),
                [] => fail("transpose needs a matrix, not a scalar".to_owned()),
                a => fail(format!("transpose needs a matrix, not a {} tensor", show_shape(a))),
            },
            Op::LogSoftmax => {
                if args[0].is_empty() {
                    fail("logsoftmax needs a vector or a matrix, not a scalar".to_owned())
                } else {
                    Ok(args[0].to_vec())
                }
            }
            Op::OneHot(k) => {
                let mut s = args[0].to_vec();
                s.push(k as usize);
                Ok(s)
            }
        }
    }

    /// The shape `root` would have if every variable in `bind` had the given shape instead
    /// (checking every operator on the way): used before substituting tensors into a
    /// function defined over scalars.
    pub fn shape_under(
        &self,
        root: Id,
        bind: &hashbrown::HashMap<Id, Vec<usize>>,
    ) -> Result<Vec<usize>, ShapeError> {
        let order = self.reachable(&[root]);
        let mut shapes: NodeMap<Vec<usize>> = NodeMap::new(&order, Vec::new());
        for &id in &order {
            let s = match bind.get(&id) {
                Some(s) => s.clone(),
                None if self.args(id).is_empty() => self.shape(id).to_vec(),
                None => {
                    let args: Vec<&[usize]> =
                        self.args(id).iter().map(|a| shapes.get(*a).as_slice()).collect();
                    let args: Vec<Vec<usize>> = args.into_iter().map(|a| a.to_vec()).collect();
                    let refs: Vec<&[usize]> = args.iter().map(|a| a.as_slice()).collect();
                    self.result_shape(self.op(id), &refs)?
                }
            };
            shapes.set(id, s);
        }
        Ok(shapes.get(root).clone())
    }

    /// The nodes reachable from `roots`, in increasing id order (a topological order).
    ///
    /// Iterative (an explicit stack). The visited set starts as a hash set, so a small walk
    /// in a large graph costs in proportion to the walk; once the walk covers a sizable part of
    /// the ids below its largest root it switches to a dense bit per id, and the result is
    /// then read off the bits in order instead of sorted.
    pub fn reachable(&self, roots: &[Id]) -> Vec<Id> {
        let mut seen = Marks::new(roots, false);
        let mut stack: Vec<Id> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if seen.set(id, true) {
                stack.extend_from_slice(self.args(id));
            }
        }
        seen.into_sorted()
    }
}

/// The arithmetic operations of a node `op` of `arity` arguments ([`Graph::ops`]):
/// `negation` says that its first argument is the number `-1` (then a product of it and one
/// factor is a negation, and a product of more saves one multiplication).
pub fn op_count(op: Op, arity: usize, negation: bool) -> usize {
    match op {
        Op::Num(_) | Op::Const(_) | Op::Var(_) => 0,
        Op::Mul if negation => arity - 2,
        Op::Add | Op::Mul => arity.saturating_sub(1),
        _ => 1,
    }
}

/// Data attached to the nodes one walk from `roots` meets, while the walk is under way (so
/// its size is not known yet, unlike [`NodeMap`]'s): a hash map while the walk is small
/// beside its largest id, then a dense array (once it has set a sixteenth of the ids below
/// it). So a walk costs in proportion to its own size, not to the graph's. Entries equal
/// to `default` count as unset.
pub struct Marks<T> {
    top: usize,
    count: usize,
    default: T,
    sparse: hashbrown::HashMap<Id, T>,
    dense: Option<Vec<T>>,
}

impl<T: Copy + PartialEq> Marks<T> {
    /// For a walk from `roots` (every node it meets has an id at most the largest root's).
    pub fn new(roots: &[Id], default: T) -> Marks<T> {
        let top = roots.iter().max().map_or(0, |m| m.index());
        Marks { top, count: 0, default, sparse: hashbrown::HashMap::new(), dense: None }
    }

    /// The entry of `id` (`default` if unset, or above every root).
    pub fn get(&self, id: Id) -> T {
        match &self.dense {
            Some(d) => d.get(id.index()).copied().unwrap_or(self.default),
            None => self.sparse.get(&id).copied().unwrap_or(self.default),
        }
    }

    /// Sets the entry of `id` (not to `default`); `true` if it was unset.
    pub fn set(&mut self, id: Id, value: T) -> bool {
        let old = match &mut self.dense {
            Some(d) => std::mem::replace(&mut d[id.index()], value),
            None => self.sparse.insert(id, value).unwrap_or(self.default),
        };
        let fresh = old == self.default;
        if fresh {
            self.count += 1;
            if self.dense.is_none() && self.count * 16 > self.top + 64 {
                let mut d = vec![self.default; self.top + 1];
                for (k, v) in self.sparse.drain() {
                    d[k.index()] = v;
                }
                self.dense = Some(d);
            }
        }
        fresh
    }
}

impl Marks<bool> {
    /// The nodes set, in id order.
    pub fn into_sorted(self) -> Vec<Id> {
        match self.dense {
            Some(d) => d.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| Id(i as u32)).collect(),
            None => {
                let mut v: Vec<Id> = self.sparse.into_keys().collect();
                v.sort_unstable();
                v
            }
        }
    }
}

/// Data attached to the nodes of one walk (`order`, from [`Graph::reachable`] or similar):
/// a dense array indexed by id when the walk covers a good part of the ids below its largest
/// one, a hash map otherwise. Either way a walk costs in proportion to its own size, not to
/// the size of the graph it is part of.
pub struct NodeMap<T> {
    dense: Vec<T>,
    sparse: hashbrown::HashMap<Id, T>,
    default: T,
}

impl<T: Clone> NodeMap<T> {
    /// A map for the nodes of `order`, every entry `default`.
    pub fn new(order: &[Id], default: T) -> NodeMap<T> {
        let top = order.iter().max().map_or(0, |m| m.index() + 1);
        let dense = if top <= 8 * order.len() + 4096 { vec![default.clone(); top] } else { Vec::new() };
        NodeMap { dense, sparse: hashbrown::HashMap::new(), default }
    }

    /// The entry of `id` (the default if never set).
    pub fn get(&self, id: Id) -> &T {
        if !self.dense.is_empty() {
            return self.dense.get(id.index()).unwrap_or(&self.default);
        }
        self.sparse.get(&id).unwrap_or(&self.default)
    }

    /// The entry of `id`, for changing it.
    pub fn get_mut(&mut self, id: Id) -> &mut T {
        if !self.dense.is_empty() {
            if id.index() >= self.dense.len() {
                self.dense.resize(id.index() + 1, self.default.clone());
            }
            return &mut self.dense[id.index()];
        }
        self.sparse.entry(id).or_insert_with(|| self.default.clone())
    }

    /// Sets the entry of `id`.
    pub fn set(&mut self, id: Id, value: T) {
        *self.get_mut(id) = value;
    }
}

/// `Graph::uses` of a node that no node uses yet.
const NO_USER: u32 = u32::MAX;
/// `Graph::uses` of a node with more than one user.
const MANY_USERS: u32 = u32::MAX - 1;

/// Entries of the cache of recently interned nodes (`Graph::recent`): 8 KiB.
const RECENT: usize = 1024;

/// The hash table's 64-bit hash from the 32 bits a memo entry keeps: a multiplication by an
/// odd constant, which keeps the low bits (the bucket) a permutation of the kept bits and
/// fills the high bits (hashbrown's tag byte) from all of them.
fn spread(h: u32) -> u64 {
    (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn hash_key(hasher: &DefaultHashBuilder, op: Op, args: &[Id]) -> u64 {
    let mut h = hasher.build_hasher();
    op.hash(&mut h);
    args.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    //! Hash-consing against a plain map of every key built: `intern` answers most look-ups
    //! from the arguments' users instead of `memo`, and `rollback` must leave both right.

    use super::*;
    use proptest::prelude::*;

    /// One step: build a key over earlier nodes (`picks` index into them), build the key of
    /// an earlier step again, take a mark, or roll back to the last mark.
    #[derive(Debug, Clone)]
    enum Step {
        Leaf(u8),
        Var(u8),
        Node(u8, Vec<u16>),
        Again(u16),
        Mark,
        Rollback,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => (0u8..6).prop_map(Step::Leaf),
            2 => (0u8..6).prop_map(Step::Var),
            8 => (0u8..3, prop::collection::vec(any::<u16>(), 1..5)).prop_map(|(o, a)| Step::Node(o, a)),
            4 => any::<u16>().prop_map(Step::Again),
            1 => Just(Step::Mark),
            1 => Just(Step::Rollback),
        ]
    }

    proptest! {
        #[test]
        fn interning_finds_every_key_once(steps in prop::collection::vec(step(), 1..300)) {
            let mut g = Graph::new();
            let mut keys: Vec<(Op, Vec<Id>)> = Vec::new();
            let mut seen: hashbrown::HashMap<(Op, Vec<Id>), Id> = hashbrown::HashMap::new();
            let mut marks: Vec<(Mark, usize)> = Vec::new();
            for s in steps {
                let key = match s {
                    Step::Leaf(k) => (Op::Num(f64::from(k).to_bits()), vec![]),
                    Step::Var(k) => {
                        let id = g.var(&format!("v{k}"));
                        prop_assert_eq!(g.find_var(&format!("v{k}")), Some(id));
                        continue;
                    }
                    Step::Node(_, _) | Step::Again(_) if g.is_empty() => continue,
                    Step::Node(o, picks) => {
                        let op = [Op::Add, Op::Mul, Op::Pow][o as usize];
                        let n = if op == Op::Pow { 2 } else { picks.len() };
                        let args: Vec<Id> =
                            (0..n).map(|i| Id((picks[i % picks.len()] as usize % g.len()) as u32)).collect();
                        (op, args)
                    }
                    Step::Again(k) if keys.is_empty() => { let _ = k; continue; }
                    Step::Again(k) => keys[k as usize % keys.len()].clone(),
                    Step::Mark => {
                        marks.push((g.mark(), keys.len()));
                        continue;
                    }
                    Step::Rollback => {
                        if let Some((m, k)) = marks.pop() {
                            let keep = m.nodes as u32;
                            g.rollback(m);
                            keys.truncate(k);
                            keys.retain(|(_, a)| a.iter().all(|a| a.0 < keep));
                            seen.retain(|_, id| id.0 < keep);
                        }
                        continue;
                    }
                };
                let before = g.len();
                let id = g.intern(key.0, &key.1);
                match seen.get(&key) {
                    Some(&old) => prop_assert_eq!(id, old, "{:?} built twice", key),
                    None => {
                        prop_assert_eq!(id.index(), before, "{:?} is new but was found", key);
                        seen.insert(key.clone(), id);
                    }
                }
                keys.push(key);
            }
            // Every key is still found, and finding it builds nothing.
            let len = g.len();
            for (key, &id) in &seen {
                prop_assert_eq!(g.intern(key.0, &key.1), id);
            }
            prop_assert_eq!(g.len(), len);
        }
    }
}
