//! Structure recovery: the terms of a large sum that are the same expression up to which
//! inputs and which numbers they read.
//!
//! Owns [`recover`] and what it finds ([`LoopSum`], [`Class`], [`Slot`]). It only reads the
//! graph: it builds no node, and the compiler decides what to do with a class (one loop over
//! the members, see `jit/scalar/program.rs`).
//!
//! **What a class is.** A *member* is one term of an n-ary sum together with its *private*
//! nodes: the nodes below it that nothing else uses (no other term, nothing outside the
//! sum). Everything else a member reads is a *slot*: a variable, a number, or an *external*
//! node (a subexpression shared with other terms or with the rest of the function, such as
//! the `S` of `Σ w_i·(x_i − log S)`). Two members are in one class when their private nodes
//! are the same operators with the same arguments in the same order, and their slots are
//! read in the same pattern: the terms of
//!
//! ```text
//! 100*(x1 - x0^2)^2 + 100*(x2 - x1^2)^2 + ... + (1 - x0)^2 + (1 - x1)^2 + ...
//! ```
//!
//! form two classes, `100*(p1 - p0^2)^2` with slots `(x_{i+1}, x_i)` and `(1 - p0)^2` with
//! slot `x_i`. The numbers `100` and `1` are slots too; a slot that holds the same leaf in
//! every member (here: those numbers) is *uniform*, and the compiler keeps it a literal.
//! Exponents of powers are part of the operator, not slots (`x^2` and `x^3` compile to
//! different code). Near misses are not merged: a term with another number in an exponent,
//! another operator, arguments in another order, or a node shared with another term has
//! another signature.
//!
//! **Why the members compute what the terms compute.** A member's private nodes are copied
//! as they are, in the graph's canonical form and argument order, so a loop over a class
//! performs, per member, the same operations in the same order as the term itself; only the
//! order in which the terms are added together changes.
//!
//! **Cost.** The owners are found in one backward scan over the reachable nodes; every
//! private node belongs to exactly one member and is visited once when its member's
//! signature is built (an explicit stack, no recursion). Linear in the function. The
//! signatures of a sum of thousands of groups are built on two threads, each taking half of
//! the groups in order, and the two halves' classes joined by signature: the classes, their
//! order and their members are those of one pass (a test compares both).

use hashbrown::HashMap;

use smallvec::SmallVec;

use super::node::Constant;
use super::{Graph, Id, NodeMap, Op};

/// Fewest members a class needs to become a loop; smaller ones stay straight-line code.
pub const MIN_MEMBERS: usize = 24;
/// Fewest terms a sum needs before it is searched for classes.
pub const MIN_TERMS: usize = MIN_MEMBERS;
/// Most private nodes one member may have (a larger term is not repeated structure worth
/// a loop, and the template is compiled as one block).
pub const MAX_TEMPLATE: usize = 512;
/// Most slots one member may read.
pub const MAX_SLOTS: usize = 64;

/// What a slot holds in every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A variable node.
    Var,
    /// A number node.
    Num,
    /// Any other node, computed outside the class (a shared subexpression).
    External,
}

/// One operand of a class: what each member reads there.
#[derive(Debug, Clone)]
pub struct Slot {
    pub kind: SlotKind,
    /// The leaf of member `k` is `column[k]`.
    pub column: Vec<Id>,
}

impl Slot {
    /// Every member reads the same node here.
    pub fn uniform(&self) -> bool {
        self.column.iter().all(|&c| c == self.column[0])
    }
}

/// Terms of one sum that share one signature.
#[derive(Debug, Clone)]
pub struct Class {
    /// The members: each one term, or a few terms that share nodes only among themselves;
    /// in the sum's argument order.
    pub members: Vec<SmallVec<[Id; 2]>>,
    /// What every member computes, over its slots: arguments come before the nodes that use
    /// them, and the last node is the member's value (the sum of its terms).
    pub template: Vec<TNode>,
    /// The slots, numbered in the order the signature first meets them.
    pub slots: Vec<Slot>,
}

/// One node of a template: an operator of the scalar core over earlier nodes and slots.
#[derive(Debug, Clone, PartialEq)]
pub struct TNode {
    pub op: Op,
    pub args: SmallVec<[TArg; 3]>,
}

/// An argument of a template node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TArg {
    /// An earlier node of the template (its index).
    Node(u32),
    /// A slot (its index).
    Slot(u32),
    /// The exponent of a power, the same in every member.
    Exponent(f64),
    /// `pi` or `e`.
    Constant(Constant),
}

/// A sum with classes among its terms.
#[derive(Debug, Clone)]
pub struct LoopSum {
    pub sum: Id,
    pub classes: Vec<Class>,
    /// The terms in no class, in argument order.
    pub rest: Vec<Id>,
}

/// Owner marks (see [`recover`]): a member number, or one of these.
const UNSET: u32 = u32::MAX;
const SHARED: u32 = u32::MAX - 1;
const OUTSIDE: u32 = u32::MAX - 2;

fn combine(old: u32, new: u32) -> u32 {
    if old == UNSET || old == new { new } else { SHARED }
}

/// Most operations in a cheap node: a shared expression of leaves this small is recomputed
/// by every member that reads it instead of being computed once outside.
pub const CHEAP_NODES: usize = 3;

/// Most terms in one member.
pub const MAX_GROUP: usize = 4;

/// `reach` with member (or OUTSIDE) `m` added: up to two members are remembered.
fn reach2((a, b): (u32, u32), m: u32) -> (u32, u32) {
    if a == UNSET {
        (m, UNSET)
    } else if a == m || b == m {
        (a, b)
    } else if a < OUTSIDE && b == UNSET && m < OUTSIDE {
        (a, m)
    } else {
        (SHARED, UNSET)
    }
}

fn find(group: &mut [u32], mut m: u32) -> u32 {
    while group[m as usize] != m {
        let up = group[group[m as usize] as usize];
        group[m as usize] = up;
        m = up;
    }
    m
}

/// The sums below `roots` (in id order) that have classes of at least [`MIN_MEMBERS`]
/// members.
///
/// The algorithm. (1) Owners: scan the reachable nodes from the largest id down (users
/// before the nodes they use). A sum of at least [`MIN_TERMS`] terms gives each term a
/// member number of its own; any other node passes its own owner down (a node owned by no
/// member passes *outside*). A node reached from two different owners is *shared*. A node
/// is private to member `m` when its owner is `m`. (2) Signatures: for each term whose root
/// is private to it, walk its private nodes depth-first, numbering them in post-order and
/// its slots in the order first met, and write each node as its operator, arity and
/// arguments (a private node's number, or a slot's kind and number, or an exponent's
/// value). (3) Classes: terms with equal signatures, kept when there are enough of them.
///
/// Also returns the number of operation nodes (nodes with arguments) below `roots`, counted
/// on the walk it makes anyway: whether loops pay depends on it.
pub fn recover(g: &Graph, roots: &[Id]) -> (Vec<LoopSum>, usize) {
    let order = g.reachable(roots);
    let operations = order.iter().filter(|&&id| !g.args(id).is_empty()).count();
    (recover_in(g, order, MAX_GROUP), operations)
}

/// [`recover`] with members of at most `max_group` terms: 1 for the outputs of a vector
/// function gathered as the terms of one (unsimplified) sum, where each member must be one
/// output.
pub fn recover_grouped(g: &Graph, roots: &[Id], max_group: usize) -> Vec<LoopSum> {
    recover_in(g, g.reachable(roots), max_group)
}

/// [`recover_grouped`] over `order`, the nodes reachable from its roots in id order.
fn recover_in(g: &Graph, order: Vec<Id>, max_group: usize) -> Vec<LoopSum> {
    recover_split(g, order, max_group, PARALLEL_GROUPS)
}

/// [`recover_in`], with the signatures of a sum of at least `parallel` groups built on two
/// threads (where there is a second one).
fn recover_split(g: &Graph, order: Vec<Id>, max_group: usize, parallel: usize) -> Vec<LoopSum> {
    if !order.iter().any(|&id| is_candidate(g, id)) {
        return Vec::new();
    }
    // The structural hashes need only the graph: on a large graph they are computed on a
    // second thread while this one finds the owners.
    let (shape, owners) = if order.len() >= PARALLEL_NODES && super::second_thread() {
        super::both(|| shapes(g, &order), || owners(g, &order, max_group))
    } else {
        (shapes(g, &order), owners(g, &order, max_group))
    };
    classes(g, &order, owners, &shape, parallel)
}

/// Fewest reachable nodes for the structural hashes to be computed on a second thread.
const PARALLEL_NODES: usize = 1 << 16;

/// A sum that is searched for classes.
fn is_candidate(g: &Graph, id: Id) -> bool {
    g.op(id) == Op::Add && g.args(id).len() >= MIN_TERMS && g.is_scalar(id)
}

/// What the owner passes find (see [`recover`]).
struct Owners {
    /// The size of every cheap node (`u8::MAX` for others).
    small: NodeMap<u8>,
    /// The group (its first member) of every member.
    group: Vec<u32>,
    /// The owner of every node: a group, or [`SHARED`], [`OUTSIDE`].
    owner: NodeMap<u32>,
}

/// Steps (1) of [`recover`]: the cheap nodes, who reaches each node, the groups and the
/// owners.
fn owners(g: &Graph, order: &[Id], max_group: usize) -> Owners {
    let is_candidate = |id: Id| is_candidate(g, id);
    // Cheap nodes: small expressions of leaves, which every member that reads one computes
    // itself (see `Walk::computes`); their sizes, in one forward scan.
    let mut small = NodeMap::new(order, 0u8);
    for &id in order {
        let size = if is_leaf(g, id) {
            0
        } else if matches!(g.op(id), Op::Add | Op::Mul | Op::Pow | Op::Func(_)) && g.args(id).len() <= 3 {
            let s: u32 = g.args(id).iter().map(|&a| u32::from(*small.get(a))).sum::<u32>() + 1;
            if s as usize <= CHEAP_NODES { s as u8 } else { u8::MAX }
        } else {
            u8::MAX
        };
        small.set(id, size);
    }
    let cheap = |id: Id| !is_leaf(g, id) && usize::from(*small.get(id)) <= CHEAP_NODES;
    // Pass 1: who reaches each node, up to two members (`(a, b)`; `b` is UNSET for one).
    let mut reach = NodeMap::new(order, (UNSET, UNSET));
    let mut members = 0u32;
    let mut sum_of: Vec<u32> = Vec::new(); // the sum (by number) each member belongs to
    let mut sums = 0u32;
    for &id in order.iter().rev() {
        if is_candidate(id) {
            for &a in g.args(id) {
                let r = reach2(*reach.get(a), members);
                reach.set(a, r);
                sum_of.push(sums);
                members += 1;
            }
            sums += 1;
        } else {
            let (a, b) = *reach.get(id);
            for &c in g.args(id) {
                let mut r = *reach.get(c);
                r = reach2(r, if a < OUTSIDE { a } else { OUTSIDE });
                if b != UNSET {
                    r = reach2(r, b);
                }
                reach.set(c, r);
            }
        }
    }
    // Terms of one sum that share a node no one else uses are one member (a group): the two
    // powers of `4*(r2^-6 - r2^-3)` share `r2`. Groups are kept small.
    let mut group: Vec<u32> = (0..members).collect();
    let mut size: Vec<u32> = vec![1; members as usize];
    for &id in order {
        let (a, b) = *reach.get(id);
        if b < OUTSIDE
            && a < OUTSIDE
            && !is_leaf(g, id)
            && !cheap(id)
            && sum_of[a as usize] == sum_of[b as usize]
        {
            let (ra, rb) = (find(&mut group, a), find(&mut group, b));
            if ra != rb && size[ra as usize] + size[rb as usize] <= max_group as u32 {
                let (big, small) = if ra < rb { (ra, rb) } else { (rb, ra) };
                group[small as usize] = big;
                size[big as usize] += size[small as usize];
            }
        }
    }
    for m in 0..members {
        let r = find(&mut group, m);
        group[m as usize] = r;
    }
    // Pass 2: owners, with the members of a group as one. Without groups, they are what
    // pass 1 found.
    let mut owner = NodeMap::new(order, UNSET);
    if (0..members).all(|m| group[m as usize] == m) {
        for &id in order {
            let (a, b) = *reach.get(id);
            owner.set(id, if b == UNSET || a >= OUTSIDE { a } else { SHARED });
        }
    } else {
        let mut tag = 0u32;
        for &id in order.iter().rev() {
            if is_candidate(id) {
                for &a in g.args(id) {
                    let o = combine(*owner.get(a), group[tag as usize]);
                    owner.set(a, o);
                    tag += 1;
                }
            } else {
                let mine = *owner.get(id);
                let pass = if mine < OUTSIDE { mine } else { OUTSIDE };
                for &a in g.args(id) {
                    let o = combine(*owner.get(a), pass);
                    owner.set(a, o);
                }
            }
        }
    }
    drop(reach);
    Owners { small, group, owner }
}

/// A structural hash of every node (leaves by kind only, the two operands of a two-term
/// sum or product in either order): equal for like terms, to put those operands in one
/// order (see `Walk::arguments`).
fn shapes(g: &Graph, order: &[Id]) -> NodeMap<u64> {
    let mut shape = NodeMap::new(order, 0u64);
    for &id in order {
        let op = g.op(id);
        let h = match op {
            Op::Var(_) => 0x9e37_79b9,
            Op::Num(bits) => bits.wrapping_mul(31) ^ 0x51,
            Op::Const(c) => 0x77 + c as u64,
            _ => {
                let mut kids: SmallVec<[u64; 4]> = g
                    .args(id)
                    .iter()
                    .map(|&a| if matches!(g.op(a), Op::Num(_)) { 0x51 } else { *shape.get(a) })
                    .collect();
                if kids.len() == 2 && matches!(op, Op::Add | Op::Mul) {
                    kids.sort_unstable();
                }
                let mut h = match op {
                    Op::Add => 1u64,
                    Op::Mul => 2,
                    Op::Pow => 3 ^ g.as_num(g.args(id)[1]).map_or(0, f64::to_bits),
                    Op::Func(f) => 16 + f as u64,
                    _ => 4,
                };
                for k in kids {
                    h = (h.rotate_left(5) ^ k).wrapping_mul(0x0100_0000_01b3);
                }
                h
            }
        };
        shape.set(id, h);
    }
    shape
}

/// Steps (2) and (3) of [`recover`]: the signatures and the classes of every sum.
fn classes(g: &Graph, order: &[Id], owners: Owners, shape: &NodeMap<u64>, parallel: usize) -> Vec<LoopSum> {
    let Owners { small, group, owner } = owners;
    let is_candidate = |id: Id| is_candidate(g, id);
    let mut walk = Walk::new(order, shape, &small);
    let mut found = Vec::new();
    // Member numbers were handed out from the largest sum down, in argument order; walk the
    // sums in that order again to know each term's number.
    let sums: Vec<Id> = order.iter().rev().copied().filter(|&id| is_candidate(id)).collect();
    let mut tag = 0u32;
    for &sum in &sums {
        // The groups of this sum's terms, in the order of their first term.
        let mut groups: Vec<(u32, SmallVec<[Id; 2]>)> = Vec::new();
        let mut slot_of_group: HashMap<u32, usize> = HashMap::new();
        for &term in g.args(sum) {
            let me = group[tag as usize];
            tag += 1;
            let k = *slot_of_group.entry(me).or_insert_with(|| {
                groups.push((me, SmallVec::new()));
                groups.len() - 1
            });
            groups[k].1.push(term);
        }
        // A long sum's second half is sorted on a second thread, into classes of its own
        // that are then added to the first half's (see `Sorted::join`).
        let half = groups.len() / 2;
        let sorted = if groups.len() >= parallel.max(2) && super::second_thread() {
            let (first, second) = groups.split_at(half);
            let (next, mut sorted) = super::both(
                || Sorted::of(&mut Walk::new(order, shape, &small), g, &owner, second),
                || Sorted::of(&mut walk, g, &owner, first),
            );
            sorted.join(next);
            sorted
        } else {
            Sorted::of(&mut walk, g, &owner, &groups)
        };
        let Sorted { classes, mut rest, .. } = sorted;
        let mut kept = Vec::new();
        for c in classes {
            if c.members.len() >= MIN_MEMBERS {
                kept.push(c);
            } else {
                rest.extend(c.members.iter().flatten());
            }
        }
        if !kept.is_empty() {
            rest.sort_unstable();
            found.push(LoopSum { sum, classes: kept, rest });
        }
    }
    found.sort_by_key(|l| l.sum);
    found
}

/// Fewest groups in a sum for its signatures to be built on two threads.
const PARALLEL_GROUPS: usize = 4096;

/// Some consecutive groups of one sum's terms, sorted into classes by signature (classes in
/// the order of their first member, members in the sum's order), and the terms in none.
struct Sorted {
    /// Each class's signature, by class.
    keys: Vec<Vec<u64>>,
    by_key: HashMap<Vec<u64>, usize>,
    classes: Vec<Class>,
    rest: Vec<Id>,
}

impl Sorted {
    fn of(
        walk: &mut Walk<'_>,
        g: &Graph,
        owner: &NodeMap<u32>,
        groups: &[(u32, SmallVec<[Id; 2]>)],
    ) -> Sorted {
        let mut sorted =
            Sorted { keys: Vec::new(), by_key: HashMap::new(), classes: Vec::new(), rest: Vec::new() };
        for (me, terms) in groups {
            let me = *me;
            if terms.iter().any(|&t| *owner.get(t) != me || is_leaf(g, t))
                || !walk.signature(g, owner, me, terms, false)
            {
                sorted.rest.extend_from_slice(terms);
                continue;
            }
            let k = match sorted.by_key.get(&walk.key) {
                Some(&k) => k,
                None => {
                    // The first member of a class: walked again for the template (the same
                    // walk, so the same signature).
                    let again = walk.signature(g, owner, me, terms, true);
                    debug_assert!(again);
                    let k = sorted.classes.len();
                    sorted.by_key.insert(walk.key.clone(), k);
                    sorted.keys.push(walk.key.clone());
                    let slots =
                        walk.leaves.iter().map(|&(kind, _)| Slot { kind, column: Vec::new() }).collect();
                    sorted.classes.push(Class {
                        members: Vec::new(),
                        template: walk.template.clone(),
                        slots,
                    });
                    k
                }
            };
            let class = &mut sorted.classes[k];
            class.members.push(terms.clone());
            for (slot, &(_, leaf)) in class.slots.iter_mut().zip(&walk.leaves) {
                slot.column.push(leaf);
            }
        }
        sorted
    }

    /// Adds the groups that come next, sorted apart: a class of `next` with the signature of
    /// one here gets its members appended (equal signatures, equal templates), any other
    /// comes after these classes, so the result is what sorting all the groups in one pass
    /// gives.
    fn join(&mut self, next: Sorted) {
        for (key, class) in next.keys.into_iter().zip(next.classes) {
            match self.by_key.get(&key) {
                Some(&k) => {
                    let mine = &mut self.classes[k];
                    mine.members.extend(class.members);
                    for (slot, more) in mine.slots.iter_mut().zip(class.slots) {
                        slot.column.extend(more.column);
                    }
                }
                None => {
                    self.by_key.insert(key.clone(), self.classes.len());
                    self.keys.push(key);
                    self.classes.push(class);
                }
            }
        }
        self.rest.extend(next.rest);
    }
}

/// Scratch state for building signatures, reused across terms.
struct Walk<'a> {
    /// The structural hash of every node.
    shape: &'a NodeMap<u64>,
    /// The size of every cheap node (`u8::MAX` for others).
    small: &'a NodeMap<u8>,
    /// `(walk, number)` of each node walked: its template index for a node computed in the
    /// member, its slot for a leaf; valid when the walk matches `stamp`.
    seen: NodeMap<(u32, u32)>,
    /// This walk's number: one per signature, so that a member can be walked again.
    stamp: u32,
    key: Vec<u64>,
    /// Whether the walk builds `template` too (only the first member of a class needs it:
    /// every other has the same one).
    templates: bool,
    /// The nodes computed in the member so far (the template's length, had it been built).
    computed: u32,
    template: Vec<TNode>,
    leaves: Vec<(SlotKind, Id)>,
    stack: Vec<(Id, usize, SmallVec<[Id; 3]>)>,
}

/// Tags of the words in a signature.
const NODE: u64 = 1 << 60;
const VAR: u64 = 2 << 60;
const NUM: u64 = 3 << 60;
const EXTERNAL: u64 = 4 << 60;
const EXPONENT: u64 = 5 << 60;
const CONSTANT: u64 = 6 << 60;

impl<'a> Walk<'a> {
    fn new(order: &[Id], shape: &'a NodeMap<u64>, small: &'a NodeMap<u8>) -> Walk<'a> {
        Walk {
            shape,
            small,
            seen: NodeMap::new(order, (u32::MAX, 0)),
            stamp: 0,
            key: Vec::new(),
            templates: false,
            computed: 0,
            template: Vec::new(),
            leaves: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// Whether member `me` computes node `a` itself: a node private to it, or a cheap node
    /// that it shares (at most [`CHEAP_NODES`] operations over leaves: `-x`, `x^2`,
    /// `exp(-t*b)`), which every member that reads it recomputes (the same operations on the
    /// same values: the same result, to the bit).
    fn computes(&self, g: &Graph, owner: &NodeMap<u32>, me: u32, a: Id) -> bool {
        if is_leaf(g, a) {
            return false;
        }
        *owner.get(a) == me || usize::from(*self.small.get(a)) <= CHEAP_NODES
    }

    /// A node's arguments in the order the signature takes them: as stored, except that the
    /// two arguments of a two-term sum or product are put in a fixed order of their kinds
    /// (computed, variable, number, external) and, for two computed ones, of their
    /// structural hashes, so that `x5 + t` and `t + x7` match (both operations are
    /// commutative, exactly, for two operands).
    fn arguments(&self, g: &Graph, owner: &NodeMap<u32>, me: u32, id: Id) -> SmallVec<[Id; 3]> {
        let mut args: SmallVec<[Id; 3]> = g.args(id).iter().copied().collect();
        if args.len() == 2 && matches!(g.op(id), Op::Add | Op::Mul) {
            let rank = |a: Id| {
                if self.computes(g, owner, me, a) {
                    (0, *self.shape.get(a))
                } else {
                    let r = match g.op(a) {
                        Op::Var(_) => 1,
                        Op::Num(_) => 2,
                        Op::Const(_) => 4,
                        _ => 3,
                    };
                    (r, 0)
                }
            };
            if rank(args[1]) < rank(args[0]) {
                args.swap(0, 1);
            }
        }
        args
    }

    /// Builds the signature of member `me` rooted at `term` into `self.key`, its template
    /// into `self.template` if `templates` is set, and its slots into `self.leaves`; `false`
    /// when the member is too large or has a tensor operator.
    fn signature(&mut self, g: &Graph, owner: &NodeMap<u32>, me: u32, terms: &[Id], templates: bool) -> bool {
        self.key.clear();
        self.template.clear();
        self.leaves.clear();
        self.templates = templates;
        self.computed = 0;
        self.stamp += 1;
        let mut roots: SmallVec<[TArg; 3]> = SmallVec::new();
        for &term in terms {
            if self.seen.get(term).0 != self.stamp && !self.walk(g, owner, me, term) {
                return false;
            }
            self.key.push(0); // between terms
            roots.push(TArg::Node(self.seen.get(term).1));
        }
        if roots.len() > 1 && templates {
            self.template.push(TNode { op: Op::Add, args: roots });
        }
        true
    }

    /// The depth-first walk of [`signature`](Self::signature) from one term.
    fn walk(&mut self, g: &Graph, owner: &NodeMap<u32>, me: u32, term: Id) -> bool {
        self.stack.clear();
        self.seen.set(term, (self.stamp, u32::MAX));
        let args = self.arguments(g, owner, me, term);
        self.stack.push((term, 0, args));
        while let Some((id, next, args)) = self.stack.last_mut() {
            let id = *id;
            if *next < args.len() {
                let a = args[*next];
                *next += 1;
                if self.computes(g, owner, me, a) && self.seen.get(a).0 != self.stamp {
                    if self.computed as usize + self.stack.len() > MAX_TEMPLATE {
                        return false;
                    }
                    self.seen.set(a, (self.stamp, u32::MAX)); // on the stack
                    let args = self.arguments(g, owner, me, a);
                    self.stack.push((a, 0, args));
                }
                continue;
            }
            let (_, _, args) = self.stack.pop().expect("the loop saw it");
            let op = g.op(id);
            self.key.push(match op {
                Op::Add => 1,
                Op::Mul => 2,
                Op::Pow => 3,
                Op::Func(f) => 16 + f as u64,
                _ => return false,
            });
            self.key.push(args.len() as u64);
            let mut targs = SmallVec::new();
            for (i, &a) in args.iter().enumerate() {
                if self.computes(g, owner, me, a) {
                    let k = self.seen.get(a).1;
                    self.key.push(NODE | u64::from(k));
                    if self.templates {
                        targs.push(TArg::Node(k));
                    }
                    continue;
                }
                match g.op(a) {
                    Op::Num(bits) if op == Op::Pow && i == 1 => {
                        self.key.push(EXPONENT);
                        self.key.push(bits);
                        if self.templates {
                            targs.push(TArg::Exponent(f64::from_bits(bits)));
                        }
                    }
                    Op::Const(c) => {
                        self.key.push(CONSTANT | c as u64);
                        if self.templates {
                            targs.push(TArg::Constant(c));
                        }
                    }
                    leaf => {
                        let kind = match leaf {
                            Op::Var(_) => SlotKind::Var,
                            Op::Num(_) => SlotKind::Num,
                            _ => SlotKind::External,
                        };
                        let (m, s) = *self.seen.get(a);
                        let slot = if m == self.stamp {
                            s
                        } else {
                            let s = self.leaves.len() as u32;
                            if s as usize >= MAX_SLOTS {
                                return false;
                            }
                            self.leaves.push((kind, a));
                            self.seen.set(a, (self.stamp, s));
                            s
                        };
                        self.key.push(
                            match kind {
                                SlotKind::Var => VAR,
                                SlotKind::Num => NUM,
                                SlotKind::External => EXTERNAL,
                            } | u64::from(slot),
                        );
                        if self.templates {
                            targs.push(TArg::Slot(slot));
                        }
                    }
                }
            }
            self.seen.set(id, (self.stamp, self.computed));
            self.computed += 1;
            if self.templates {
                self.template.push(TNode { op, args: targs });
            }
        }
        true
    }
}

fn is_leaf(g: &Graph, id: Id) -> bool {
    matches!(g.op(id), Op::Num(_) | Op::Var(_) | Op::Const(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `src`, recovers its classes and describes them as
    /// `members x nodes [slot kinds, u for uniform]`, sums separated by `;` and classes by `,`.
    fn check(src: &str, expected: &str) {
        let e = crate::Expr::parse(src).expect("formula");
        let g = e.graph();
        let found = recover(&g, &[e.node()]).0;
        let text: Vec<String> = found
            .iter()
            .map(|l| {
                let classes: Vec<String> = l
                    .classes
                    .iter()
                    .map(|c| {
                        let slots: String = c
                            .slots
                            .iter()
                            .map(|s| {
                                let k = match s.kind {
                                    SlotKind::Var => 'v',
                                    SlotKind::Num => 'n',
                                    SlotKind::External => 'e',
                                };
                                if s.uniform() { k.to_ascii_uppercase() } else { k }
                            })
                            .collect();
                        format!("{}x{} [{slots}]", c.members.len(), c.template.len())
                    })
                    .collect();
                format!("{} + {} rest", classes.join(", "), l.rest.len())
            })
            .collect();
        assert_eq!(text.join("; "), expected, "{src}");
    }

    fn sum(n: usize, term: impl Fn(usize) -> String) -> String {
        (0..n).map(term).collect::<Vec<_>>().join(" + ")
    }

    #[test]
    fn classes() {
        let rosen = sum(30, |i| format!("100*(x{} - x{i}^2)^2 + (1 - x{i})^2", i + 1));
        check(&rosen, "30x5 [vNvN], 30x3 [vNN] + 0 rest");
        check(&sum(10, |i| format!("x{i}^2")), "");
        check(&sum(24, |i| format!("sin(x{i})")), "24x1 [v] + 0 rest");
        // Numbers that vary are slots; a uniform variable is a uniform slot.
        check(&sum(24, |i| format!("(y - {}.5*x{i})^2", i + 1)), "24x3 [vnV] + 0 rest");
        // Near misses: another exponent, another function.
        let mixed = sum(24, |i| format!("x{i}^2")) + " + x99^3 + " + &sum(24, |i| format!("cos(y{i})"));
        check(&mixed, "24x1 [v], 24x1 [v] + 1 rest");
        // A shared subexpression is an external slot of every member.
        let shared = sum(24, |i| format!("w{i}*(x{i} - log(exp(x0) + exp(x1)))"));
        check(&shared, "24x2 [vEv] + 0 rest");
    }

    /// Signatures built on two threads, each sorting half of a sum's groups, give what one
    /// pass gives: the same classes in the same order, the same members, slots and rest.
    #[test]
    fn two_threads_sort_a_sum_as_one_does() {
        let lj = |i: usize, j: usize| {
            let r2 = format!("((x{i} - x{j})^2 + (y{i} - y{j})^2)");
            format!("4*((1/{r2})^6 - (1/{r2})^3)")
        };
        let cases = [
            // Classes that start in the first half, in the second only, and in both.
            sum(60, |i| match i % 7 {
                0 if i >= 30 => format!("cos(z{i})"),
                0 | 1 => format!("x{i}^2"),
                2 => format!("exp(-{}*y{i})", i + 1),
                _ => format!("sin(x{i})*y{i}"),
            }),
            // Members of two terms, a shared node, near misses.
            (0..40)
                .map(|i| lj(i, i + 1))
                .chain(["x3^3".into(), "log(x1 + y1)".into()])
                .collect::<Vec<_>>()
                .join(" + "),
            sum(80, |i| format!("w{i}*(x{i} - log(exp(x0) + exp(x1)))")),
        ];
        for src in cases {
            let e = crate::Expr::parse(&src).expect("formula");
            let g = e.graph();
            let order = || g.reachable(&[e.node()]);
            let one = recover_split(&g, order(), MAX_GROUP, usize::MAX);
            let two = recover_split(&g, order(), MAX_GROUP, 2);
            assert!(!one.is_empty(), "{src}");
            assert_eq!(format!("{one:?}"), format!("{two:?}"), "{src}");
        }
    }
}
