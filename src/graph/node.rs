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
    /// A number, as the bits of an `f64` (never NaN, never `-0.0`).
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
    /// A unary function from the function table.
    Func(Func),
}

#[derive(Debug, Clone, Copy)]
struct Node {
    op: Op,
    start: u32,
    len: u32,
}

/// The arena. See the module doc for its two invariants.
#[derive(Clone, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    /// All argument lists, concatenated; a node's arguments are `args[start..start+len]`.
    args: Vec<Id>,
    /// Hash-consing table (also called interning): `(op, args)` to the one node that has them,
    /// stored with the key's hash so that growing the table never rehashes a key.
    memo: HashTable<(u64, Id)>,
    hasher: DefaultHashBuilder,
    /// Variable names, indexed by `Op::Var`.
    vars: Vec<String>,
    var_ids: hashbrown::HashMap<String, Id>,
}

/// Most nodes a graph may hold: ids are `u32` and a few bits stay free.
pub const MAX_NODES: usize = 1 << 30;

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
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

    /// The name of variable node `id`, if it is one.
    pub fn var_name(&self, id: Id) -> Option<&str> {
        match self.op(id) {
            Op::Var(v) => Some(&self.vars[v as usize]),
            _ => None,
        }
    }

    /// The node of variable `name`, if the graph has one.
    pub fn find_var(&self, name: &str) -> Option<Id> {
        self.var_ids.get(name).copied()
    }

    /// The variable node `name` (created on first use).
    pub fn var(&mut self, name: &str) -> Id {
        if let Some(&id) = self.var_ids.get(name) {
            return id;
        }
        let index = self.vars.len() as u32;
        self.vars.push(name.to_owned());
        let id = self.intern(Op::Var(index), &[]);
        self.var_ids.insert(name.to_owned(), id);
        id
    }

    /// A number node. `-0.0` becomes `0.0`; NaN is refused by the callers (constant folding
    /// never produces it, and the parser cannot write it).
    pub fn num(&mut self, x: f64) -> Id {
        debug_assert!(!x.is_nan(), "NaN constant");
        let x = if x == 0.0 { 0.0 } else { x };
        self.intern(Op::Num(x.to_bits()), &[])
    }

    pub fn constant(&mut self, c: Constant) -> Id {
        self.intern(Op::Const(c), &[])
    }

    /// Adds `(op, args)` as is, or returns the existing node. Callers guarantee the canonical
    /// form; only `simplify.rs` and the constructors above call this.
    pub(crate) fn intern(&mut self, op: Op, args: &[Id]) -> Id {
        let hash = hash_key(&self.hasher, op, args);
        let Graph { nodes, args: all_args, memo, .. } = self;
        let found = memo.find(hash, |&(h, id)| {
            let n = &nodes[id.index()];
            h == hash && n.op == op && &all_args[n.start as usize..(n.start + n.len) as usize] == args
        });
        if let Some(&(_, id)) = found {
            return id;
        }
        assert!(nodes.len() < MAX_NODES, "expression graph exceeds {MAX_NODES} nodes");
        debug_assert!(args.iter().all(|a| a.index() < nodes.len()), "children before parents");
        let id = Id(nodes.len() as u32);
        nodes.push(Node { op, start: all_args.len() as u32, len: args.len() as u32 });
        all_args.extend_from_slice(args);
        memo.insert_unique(hash, (hash, id), |&(h, _)| h);
        id
    }

    /// The nodes reachable from `roots`, in increasing id order (a topological order).
    ///
    /// Iterative (an explicit stack). The visited set starts as a hash set, so a small walk
    /// in a large graph costs in proportion to the walk; once the walk covers a sizable part of
    /// the ids below its largest root it switches to a dense bit per id, and the result is
    /// then read off the bits in order instead of sorted.
    pub fn reachable(&self, roots: &[Id]) -> Vec<Id> {
        let Some(top) = roots.iter().max() else { return Vec::new() };
        let mut sparse: hashbrown::HashSet<Id> = hashbrown::HashSet::new();
        let mut dense: Option<Vec<bool>> = None;
        let mut stack: Vec<Id> = roots.to_vec();
        let mut count = 0usize;
        while let Some(id) = stack.pop() {
            let fresh = match &mut dense {
                Some(d) => !std::mem::replace(&mut d[id.index()], true),
                None => sparse.insert(id),
            };
            if !fresh {
                continue;
            }
            count += 1;
            stack.extend_from_slice(self.args(id));
            if dense.is_none() && count * 16 > top.index() + 64 {
                let mut d = vec![false; top.index() + 1];
                for v in sparse.drain() {
                    d[v.index()] = true;
                }
                dense = Some(d);
            }
        }
        match dense {
            Some(d) => d.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| Id(i as u32)).collect(),
            None => {
                let mut v: Vec<Id> = sparse.into_iter().collect();
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

fn hash_key(hasher: &DefaultHashBuilder, op: Op, args: &[Id]) -> u64 {
    let mut h = hasher.build_hasher();
    op.hash(&mut h);
    args.hash(&mut h);
    h.finish()
}
