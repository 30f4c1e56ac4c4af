//! Fusion: scheduling a tensor graph (a training step: forward pass, loss, gradients and the
//! optimizer's update) into a few kernels over buffers planned once.
//!
//! The graph's nodes fall into four groups:
//!
//! * **Views** cost nothing: `reshape` and `transpose` of a materialized tensor are the same
//!   buffer read with other strides; `broadcast` is a stride of 0; numbers are constants.
//!   A number that is an output (a loss that does not depend on the batch) is still stored,
//!   by a map of one element, and a broadcast number that a matrix product or a transpose
//!   reads is materialized: every output's buffer is written by the program, every operand
//!   of a product has one.
//! * **Matrix products** are calls into a tuned GEMM, reading their operands through views
//!   (so `xᵀ @ δ` needs no transposed copy).
//! * **Reductions and row operators** (`sum`, `max` over an axis, `logsoftmax`) each get a
//!   kernel that computes its operand's elementwise expression on the fly.
//! * **Elementwise** nodes (`+ * ^`, functions, `onehot`) are inlined into whatever consumes
//!   them: a chain like bias + relu + dropout mask, or activation-derivative × adjoint, is one
//!   loop. An elementwise node is *materialized* (stored in a buffer) only when it is an
//!   output, when several operators use it, when a matrix product reads it, or when a consumer
//!   iterates over a larger shape (it would be recomputed per element otherwise). Materialized
//!   elementwise nodes of the same shape, scheduled next to each other, share one loop.
//!
//! **Aliased outputs.** An optimizer update writes its new parameter over the old one. Each
//! element of such an output depends only on the same element of its inputs, so the update
//! loop may read and write one buffer; and it is scheduled after every other kernel, so nothing
//! reads a parameter after it changed.
//!
//! **Bounded kernels.** An inlined expression and the outputs of one loop stay within
//! `INLINE_COST` (in rough instructions per element): a chain of thousands of activation layers
//! is cut into kernels of bounded size, so compiling a model costs in proportion to its depth.
//!
//! **Buffers** are slices of one arena, assigned by liveness: a buffer is reused once its last
//! reader has run. Inputs, parameters, optimizer state and outputs keep their own slices.

use hashbrown::HashMap;

use crate::graph::{Graph, Id, NodeMap, Op};

/// A slice of the arena: `len` f32 values starting at `offset` (in elements, 16-aligned so
/// that every buffer starts on a 64-byte boundary of an aligned arena).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub offset: usize,
    pub len: usize,
}

/// How a kernel reads a materialized tensor: its slot, the shape it is seen with, and the
/// stride (in elements) of each axis of that shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub slot: Slot,
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
}

impl View {
    fn contiguous(slot: Slot, shape: &[usize]) -> View {
        let mut strides = vec![0isize; shape.len()];
        let mut s = 1isize;
        for k in (0..shape.len()).rev() {
            strides[k] = s;
            s *= shape[k] as isize;
        }
        View { slot, shape: shape.to_vec(), strides }
    }

    /// Whether every element the view can reach lies inside its slot: the furthest one is
    /// `Σ (shape[d] - 1) * stride[d]` past the start (strides are never negative here).
    pub fn fits(&self) -> bool {
        let mut extent: usize = 0;
        for (&n, &st) in self.shape.iter().zip(&self.strides) {
            if n == 0 || st < 0 {
                return n != 0 && st >= 0;
            }
            let reach = (n - 1).checked_mul(st as usize).and_then(|r| extent.checked_add(r));
            match reach {
                Some(e) => extent = e,
                None => return false,
            }
        }
        extent < self.slot.len.max(1)
    }

    fn is_contiguous(&self) -> bool {
        *self == View::contiguous(self.slot, &self.shape)
    }

    /// The strides with which element `index` of a `space`-shaped iteration reads this view,
    /// broadcasting numpy-style (trailing axes aligned, size-1 and missing axes repeat).
    pub fn strides_in(&self, space: &[usize]) -> Vec<isize> {
        let mut out = vec![0isize; space.len()];
        let off = space.len() - self.shape.len().min(space.len());
        for (k, st) in out.iter_mut().enumerate().skip(off) {
            let d = k - off;
            if self.shape[d] != 1 {
                *st = self.strides[d];
            }
        }
        out
    }
}

/// One step of the schedule.
#[derive(Debug, Clone)]
pub enum Instr {
    /// `out = a @ b` (`m×k` times `k×n`), through views.
    /// `sparse_lhs`: `a` is data (see `Request::data`), worth checking for zeros.
    Gemm { m: usize, n: usize, k: usize, a: View, b: View, out: Slot, sparse_lhs: bool },
    /// One loop over `space` computing and storing every node of `outputs` (all of shape
    /// `space`), each into its slot.
    Map { space: Vec<usize>, outputs: Vec<(Id, Slot)> },
    /// `sum`/`max` node `node`, its operand computed on the fly.
    Reduce { node: Id, out: Slot },
    /// `logsoftmax` node `node` over rows, its operand computed on the fly.
    LogSoftmax { node: Id, out: Slot },
    /// One Adam update in place, by the host kernel `runtime::sd_adam` (see [`AdamUpdate`]).
    Adam { shape: Vec<usize>, param: Slot, m: Slot, v: Slot, grad: Slot, alpha: Slot, coef: AdamCoefficients },
}

/// The constants of an Adam update: `m' = beta1*m + c1*g`, `v' = beta2*v + c2*g²`,
/// `p' = p - alpha*(m' / (sqrt(v') + eps))`, with `c1 = 1 - beta1`, `c2 = 1 - beta2` as the
/// graph's constants round them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamCoefficients {
    pub beta1: f32,
    pub c1: f32,
    pub beta2: f32,
    pub c2: f32,
    pub eps: f32,
}

/// An Adam update done by a host kernel instead of graph nodes: parameter, moments and the
/// gradient (which must be one of the request's outputs), all of one shape, and the scalar
/// input `alpha` (the step size with both bias corrections). The update runs after every
/// other instruction, in place, and only when the guard holds.
#[derive(Debug, Clone)]
pub struct AdamUpdate {
    pub param: Id,
    pub m: Id,
    pub v: Id,
    pub grad: Id,
    pub alpha: Id,
    pub coef: AdamCoefficients,
}

/// The compiled form of a graph's schedule.
#[derive(Debug, Clone)]
pub struct Plan {
    pub instrs: Vec<Instr>,
    /// Arena size in f32 elements.
    pub arena_len: usize,
    /// Where every materialized node (and every input) lives.
    pub slots: HashMap<Id, Slot>,
    /// How kernels read a node that is a view of a materialized one (reshape, transpose,
    /// broadcast chains), and materialized nodes themselves.
    pub views: HashMap<Id, View>,
}

/// Why a graph cannot be fused (the caller falls back to the interpreter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot compile this step: {0}")]
pub struct Unsupported(pub String);

/// What is being planned: the graph, its inputs (each gets a slot of its own), its outputs,
/// and which outputs overwrite which inputs (optimizer updates).
pub struct Request<'g> {
    pub graph: &'g Graph,
    pub inputs: Vec<Id>,
    pub outputs: Vec<Id>,
    /// `(output, input)`: the output is written into the input's slot, after everything else.
    pub aliases: Vec<(Id, Id)>,
    /// Inputs that hold data rather than parameters (images, masks): a matrix product reading
    /// one on the left may skip its zeros.
    pub data: Vec<Id>,
    /// A single-element output (the loss) that must be finite for the aliased updates to run:
    /// when it is NaN or infinite the step stops before overwriting any input, so the
    /// parameters stay as they were and the caller can find where the fault came from.
    pub guard: Option<Id>,
    /// Reuse dead buffers (off only for tests that read every stored node after a run).
    pub reuse: bool,
    /// Adam updates done by the host kernel, after everything else.
    pub adam: Vec<AdamUpdate>,
}

fn is_elementwise(op: Op) -> bool {
    matches!(op, Op::Add | Op::Mul | Op::Pow | Op::Func(_) | Op::OneHot(_))
}

fn is_view(op: Op) -> bool {
    matches!(op, Op::Reshape(_) | Op::Transpose | Op::Broadcast(_))
}

const ALIGN: usize = 16;

/// Most code of an elementwise expression inlined into one kernel, or of the outputs of one
/// loop, in units of [`weight`] (see `plan`): 16 inline transcendentals, or 512 additions.
const INLINE_COST: usize = 512;

/// About how many instructions a kernel spends on one element of node `op`, relative to an
/// addition: the inline transcendentals of `vecmath` are a few dozen, functions the host
/// computes lane by lane a call per lane.
fn weight(op: Op) -> usize {
    use crate::graph::Func;
    match op {
        Op::Func(Func::Exp | Func::Log | Func::Sigmoid | Func::Tanh | Func::Softplus) => 32,
        Op::Func(_) => 16,
        Op::Pow | Op::OneHot(_) => 4,
        _ => 1,
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Plans `req`: which nodes to store, in what order to compute them, and where.
pub fn plan(req: &Request<'_>) -> Result<Plan, Unsupported> {
    let g = req.graph;
    let order = g.reachable(&req.outputs);
    // Membership tests by hash: a model of thousands of layers has thousands of inputs and
    // outputs, and a scan of them per node would cost their product.
    let inputs: hashbrown::HashSet<Id> = req.inputs.iter().copied().collect();
    let outputs: hashbrown::HashSet<Id> = req.outputs.iter().copied().collect();
    let mut alias_of: HashMap<Id, Id> = HashMap::new();
    for &(o, i) in &req.aliases {
        alias_of.entry(o).or_insert(i);
    }
    // Users of every node.
    let mut users: NodeMap<Vec<Id>> = NodeMap::new(&order, Vec::new());
    for &id in &order {
        for &a in g.args(id) {
            let u = users.get_mut(a);
            if !u.contains(&id) {
                u.push(id);
            }
        }
    }
    for &id in &order {
        if g.shape(id).len() > 2 && !matches!(g.op(id), Op::Var(_) | Op::Reshape(_)) {
            return Err(Unsupported(format!(
                "tensors of rank {} (only matrices are fused)",
                g.shape(id).len()
            )));
        }
        if matches!(g.op(id), Op::Var(_)) && !inputs.contains(&id) {
            return Err(Unsupported(format!("`{}` is not an input", g.var_name(id).unwrap_or("?"))));
        }
    }
    // Which nodes are stored.
    let mut stored: NodeMap<bool> = NodeMap::new(&order, false);
    for &o in &req.outputs {
        stored.set(o, true);
    }
    for &id in &order {
        let op = g.op(id);
        match op {
            Op::MatMul | Op::Sum(_) | Op::Max(_) | Op::LogSoftmax => stored.set(id, true),
            _ if is_elementwise(op) => {
                let us = users.get(id);
                let several = us.len() >= 2;
                let read_by_gemm = us.iter().any(|&u| reads_through_views(g, u, id, &users));
                let shape = g.shape(id);
                let wider =
                    us.iter().any(|&u| g.shape(u) != shape && !matches!(g.op(u), Op::Sum(_) | Op::Max(_)));
                if several || read_by_gemm || wider {
                    stored.set(id, true);
                }
            }
            _ => {}
        }
    }
    // Bounded kernels: an elementwise expression inlined into one loop grows with the model
    // (a chain of ten thousand activation layers is one expression), and so would its kernel,
    // whose compile time (register allocation) grows faster than its length. A node whose
    // inlined expression would cost more than `INLINE_COST` is stored instead, cutting the
    // chain into kernels of bounded size. No layer of an ordinary model comes near the bound.
    // `cost`: the code a loop computing the node holds for it (itself and what is inlined into
    // it, by `weight`); `inline`: what it adds to a loop that reads it (0 once it is stored).
    let mut cost: NodeMap<usize> = NodeMap::new(&order, 0);
    let mut inline: NodeMap<usize> = NodeMap::new(&order, 0);
    for &id in &order {
        let op = g.op(id);
        if !(is_elementwise(op) || matches!(op, Op::Broadcast(_))) {
            continue;
        }
        let size = g.args(id).iter().fold(weight(op), |n, &a| n.saturating_add(*inline.get(a)));
        if size > INLINE_COST {
            stored.set(id, true);
        }
        cost.set(id, size);
        if !*stored.get(id) {
            inline.set(id, size);
        }
    }
    // A broadcast number (a layer whose activation is a constant) has no buffer to be a view
    // of: where a matrix product or a reshape/transpose reads it, it is stored (filled by a map).
    for &id in &order {
        if matches!(g.op(id), Op::Broadcast(_))
            && matches!(g.op(g.args(id)[0]), Op::Num(_) | Op::Const(_))
            && users.get(id).iter().any(|&u| matches!(g.op(u), Op::MatMul | Op::Reshape(_) | Op::Transpose))
        {
            stored.set(id, true);
        }
    }
    // Views over stored nodes: reshape/transpose of something that is not a stored node or a
    // view of one cannot be read without storing it first.
    for &id in &order {
        if matches!(g.op(id), Op::Reshape(_) | Op::Transpose) {
            let a = g.args(id)[0];
            let base_ok = *stored.get(a) || matches!(g.op(a), Op::Var(_)) || is_view(g.op(a));
            if !base_ok {
                stored.set(a, true);
            }
        }
    }
    // Schedule: stored nodes in topological order; aliased outputs last. A number is inlined
    // where it is read, but one that is an output (a loss that does not depend on the batch)
    // is stored too, by a map of one element: every output's buffer is written by the program.
    let is_number = |id: Id| matches!(g.op(id), Op::Num(_) | Op::Const(_));
    let mut seq: Vec<Id> = order
        .iter()
        .copied()
        .filter(|&id| {
            *stored.get(id) && !matches!(g.op(id), Op::Var(_)) && (!is_number(id) || outputs.contains(&id))
        })
        .collect();
    seq.sort_by_key(|id| alias_of.contains_key(id));
    // Every output is an input or computed by an instruction (else its buffer would hold
    // whatever the arena held: a wrong answer, not an error).
    let computed: hashbrown::HashSet<Id> = seq.iter().copied().collect();
    if let Some(o) = req.outputs.iter().find(|o| !computed.contains(*o) && !inputs.contains(*o)) {
        return Err(Unsupported(format!("internal error: output node {} is never computed", o.index())));
    }
    // Slots: inputs first (fixed), then liveness-planned intermediates, aliases share.
    let mut slots: HashMap<Id, Slot> = HashMap::new();
    let mut next = 0usize;
    let mut fixed = |len: usize| {
        let s = Slot { offset: next, len };
        next += round_up(len.max(1));
        s
    };
    for &i in &req.inputs {
        let len = g.shape(i).iter().product::<usize>();
        slots.insert(i, fixed(len));
    }
    for &o in &req.outputs {
        if let Some(input) = alias_of.get(&o) {
            let s = slots[input];
            slots.insert(o, s);
        } else if !slots.contains_key(&o) {
            let len = g.shape(o).iter().product::<usize>();
            slots.insert(o, fixed(len));
        }
    }
    // Group the schedule: consecutive stored elementwise nodes of one shape share a loop, as
    // long as the loop's body stays within `INLINE_COST`.
    let mut groups: Vec<Vec<Id>> = Vec::new();
    let mut group_cost = 0usize;
    for &id in &seq {
        let op = g.op(id);
        let joins = (is_elementwise(op) || is_view(op))
            && group_cost.saturating_add(*cost.get(id)) <= INLINE_COST
            && groups.last().is_some_and(|grp| {
                let h = grp[0];
                (is_elementwise(g.op(h)) || is_view(g.op(h))) && g.shape(h) == g.shape(id)
            });
        match groups.last_mut() {
            Some(grp) if joins => {
                grp.push(id);
                group_cost += *cost.get(id);
            }
            _ => {
                groups.push(vec![id]);
                group_cost = *cost.get(id);
            }
        }
    }
    // Liveness by group: a stored intermediate dies after the last group that reads it.
    let group_of: HashMap<Id, usize> =
        groups.iter().enumerate().flat_map(|(k, grp)| grp.iter().map(move |&id| (id, k))).collect();
    let mut last: HashMap<Id, usize> = HashMap::new();
    for (k, grp) in groups.iter().enumerate() {
        for &id in grp {
            for leaf in leaves(g, id, &stored) {
                let e = last.entry(leaf).or_insert(k);
                *e = (*e).max(k);
            }
        }
    }
    let mut dying: Vec<Vec<Id>> = vec![Vec::new(); groups.len()];
    for (&id, &k) in &last {
        if group_of.contains_key(&id) && !outputs.contains(&id) && !inputs.contains(&id) {
            dying[k].push(id);
        }
    }
    // Greedy reuse of freed slots of a fitting size. A group's outputs get their slots before
    // the group's dying inputs are freed, so a loop never writes over what it still reads.
    let mut free: Vec<Slot> = Vec::new();
    for (k, grp) in groups.iter().enumerate() {
        for &id in grp {
            if slots.contains_key(&id) {
                continue;
            }
            let len = g.shape(id).iter().product::<usize>();
            let fit = if req.reuse {
                free.iter().position(|f| f.len >= len && f.len <= 2 * round_up(len.max(1)))
            } else {
                None
            };
            let s = match fit {
                Some(p) => Slot { offset: free.swap_remove(p).offset, len },
                None => fixed(len),
            };
            slots.insert(id, s);
        }
        for d in &dying[k] {
            if let Some(s) = slots.get(d) {
                free.push(Slot { offset: s.offset, len: round_up(s.len.max(1)) });
            }
        }
    }
    // Views for every node kernels may read directly.
    let mut views: HashMap<Id, View> = HashMap::new();
    for &id in &order {
        // Numbers are constants in the code that reads them, even one stored as an output.
        if is_number(id) {
            continue;
        }
        if let Some(&s) = slots.get(&id) {
            views.insert(id, View::contiguous(s, g.shape(id)));
            continue;
        }
        let op = g.op(id);
        if !is_view(op) {
            continue;
        }
        let a = g.args(id)[0];
        let Some(v) = views.get(&a).cloned() else { continue };
        let view = match op {
            Op::Reshape(_) if v.is_contiguous() => View::contiguous(v.slot, g.shape(id)),
            Op::Reshape(_) => continue,
            Op::Transpose => View {
                slot: v.slot,
                shape: v.shape.iter().rev().copied().collect(),
                strides: v.strides.iter().rev().copied().collect(),
            },
            _ => View { slot: v.slot, shape: g.shape(id).to_vec(), strides: v.strides_in(g.shape(id)) },
        };
        views.insert(id, view);
    }
    // Instructions, one per group.
    let mut instrs: Vec<Instr> = Vec::new();
    for grp in &groups {
        let id = grp[0];
        let op = g.op(id);
        let out = slots[&id];
        match op {
            Op::MatMul => {
                let [a, b] = [g.args(id)[0], g.args(id)[1]];
                let (Some(va), Some(vb)) = (views.get(&a).cloned(), views.get(&b).cloned()) else {
                    return Err(Unsupported("a matrix product of an unstored operand".into()));
                };
                let (m, k, n) = (g.shape(a)[0], g.shape(a)[1], g.shape(b)[1]);
                let mut base = a;
                while is_view(g.op(base)) {
                    base = g.args(base)[0];
                }
                let sparse_lhs = req.data.contains(&base);
                instrs.push(Instr::Gemm { m, n, k, a: va, b: vb, out, sparse_lhs });
            }
            Op::Sum(_) | Op::Max(_) => instrs.push(Instr::Reduce { node: id, out }),
            Op::LogSoftmax => {
                if g.shape(id).len() != 2 {
                    return Err(Unsupported("logsoftmax of a non-matrix".into()));
                }
                instrs.push(Instr::LogSoftmax { node: id, out });
            }
            _ if is_elementwise(op) || is_view(op) || is_number(id) => instrs.push(Instr::Map {
                space: g.shape(id).to_vec(),
                outputs: grp.iter().map(|&n| (n, slots[&n])).collect(),
            }),
            other => return Err(Unsupported(format!("operator {other:?}"))),
        }
    }
    for u in &req.adam {
        if !outputs.contains(&u.grad) {
            return Err(Unsupported("internal error: an Adam gradient that is not an output".into()));
        }
        let shape = g.shape(u.param).to_vec();
        let slot = |id: Id| {
            slots.get(&id).copied().ok_or_else(|| Unsupported("internal error: Adam operand".into()))
        };
        if [u.m, u.v, u.grad].iter().any(|&x| g.shape(x) != shape.as_slice())
            || g.shape(u.alpha).iter().product::<usize>() != 1
        {
            return Err(Unsupported("internal error: Adam operands of different shapes".into()));
        }
        instrs.push(Instr::Adam {
            shape,
            param: slot(u.param)?,
            m: slot(u.m)?,
            v: slot(u.v)?,
            grad: slot(u.grad)?,
            alpha: slot(u.alpha)?,
            coef: u.coef,
        });
    }
    let plan = Plan { instrs, arena_len: next, slots, views };
    check_bounds(&plan)?;
    Ok(plan)
}

/// The bounds check done once, when a step is compiled, that makes every address the
/// generated code computes lie inside the arena: each slot inside `arena_len`, each view
/// inside its slot, each GEMM's operands and result inside theirs, each map's outputs the size
/// of its iteration space.
fn check_bounds(plan: &Plan) -> Result<(), Unsupported> {
    let outside = |what: &str| Err(Unsupported(format!("internal error: {what} reaches outside its buffer")));
    for s in plan.slots.values() {
        if s.offset.checked_add(s.len).is_none_or(|end| end > plan.arena_len) {
            return outside("a buffer");
        }
    }
    if plan.views.values().any(|v| !v.fits()) {
        return outside("a view");
    }
    for instr in &plan.instrs {
        match instr {
            Instr::Gemm { m, n, k, a, b, out, .. } => {
                let ok =
                    a.shape == [*m, *k] && b.shape == [*k, *n] && a.fits() && b.fits() && out.len == m * n;
                if !ok {
                    return outside("a matrix product");
                }
            }
            Instr::Map { space, outputs } => {
                let len: usize = space.iter().product();
                if outputs.iter().any(|(_, s)| s.len != len) {
                    return outside("a map's output");
                }
            }
            Instr::Adam { shape, param, m, v, grad, alpha, .. } => {
                let len: usize = shape.iter().product();
                if [param, m, v, grad].iter().any(|s| s.len != len) || alpha.len != 1 {
                    return outside("an Adam update");
                }
            }
            Instr::Reduce { .. } | Instr::LogSoftmax { .. } => {}
        }
    }
    Ok(())
}

/// Whether `user` reads `node` as a matrix-product operand (possibly through views).
fn reads_through_views(g: &Graph, user: Id, node: Id, users: &NodeMap<Vec<Id>>) -> bool {
    match g.op(user) {
        Op::MatMul => true,
        op if is_view(op) && g.args(user)[0] == node => {
            users.get(user).iter().any(|&u| reads_through_views(g, u, user, users))
        }
        _ => false,
    }
}

/// The stored nodes (and inputs) an instruction computing `id` reads: its expression down to
/// stored nodes, through views and inlined elementwise nodes.
fn leaves(g: &Graph, id: Id, stored: &NodeMap<bool>) -> Vec<Id> {
    let mut out = Vec::new();
    let mut stack: Vec<Id> = g.args(id).to_vec();
    let mut seen = hashbrown::HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        if *stored.get(n) || matches!(g.op(n), Op::Var(_)) {
            out.push(n);
        } else {
            stack.extend_from_slice(g.args(n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Slot, View};

    fn check(len: usize, shape: &[usize], strides: &[isize], fits: bool) {
        let v = View { slot: Slot { offset: 32, len }, shape: shape.to_vec(), strides: strides.to_vec() };
        assert_eq!(v.fits(), fits, "{len} {shape:?} {strides:?}");
    }

    #[test]
    fn views_must_fit_their_buffers() {
        check(16, &[4, 4], &[4, 1], true);
        check(15, &[4, 4], &[4, 1], false);
        check(16, &[4, 4], &[1, 4], true); // a transpose
        check(4, &[8, 4], &[0, 1], true); // a broadcast row
        check(3, &[8, 4], &[0, 1], false);
        check(1, &[], &[], true);
        check(10, &[usize::MAX, 2], &[2, 1], false); // overflow is refused, not wrapped
        check(10, &[2, 2], &[-1, 1], false);
    }
}
