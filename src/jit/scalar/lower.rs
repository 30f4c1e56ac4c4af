//! DAG to Cranelift IR to native code.
//!
//! The lowering is a forward scan over the nodes reachable from the outputs (id order is a
//! topological order, so every argument already has a value): each node becomes a few
//! instructions, or a call to a host function from `runtime.rs`. Then every output is stored
//! to its group's array.
//!
//! **Compile time stays linear.** Gradient-shaped code is hard on a register allocator: an
//! adjoint late in the function reads forward values computed long before, so thousands of
//! values are live at once. Cranelift's default (backtracking) allocator is superlinear on that
//! shape (about 0.8 s at 10,000 operations, over a minute at 100,000, in our probe). Three
//! measures keep it linear:
//!
//! 1. **Windows.** The node sequence is cut into windows of [`WINDOW`] weight (about that many
//!    instructions: every argument of a sum or product counts, see `weight`, so a node of
//!    999 arguments is not taken for one instruction). A value used only inside its window
//!    stays in a register; a value used later is stored to a scratch slot when computed and
//!    reloaded at each use; numbers are recomputed and inputs reloaded from the input array
//!    (see **Code size** below). No SSA value lives much longer than a window.
//! 2. **Chunks.** Functions of more than [`SMALL`] weight are split into chunks of about
//!    [`CHUNK`] (whole windows; smaller, down to [`MIN_CHUNK`], where that gives every core
//!    a chunk: the gradient of a product of 1,000 factors compiles in half the time on two
//!    cores), each its own Cranelift function; values cross chunk
//!    boundaries through the scratch slots anyway. The chunks are compiled on all cores in
//!    parallel, without the e-graph optimizer (the graph is already hash-consed and
//!    simplified, so the optimizer finds little; and its value numbering would merge the
//!    per-window copies of numbers back into long-lived values). Up to [`MEDIUM`] weight the
//!    chunks keep the backtracking allocator (linear thanks to the windows, and about twice
//!    as fast code); beyond, the single-pass allocator halves compile time. A call runs the
//!    chunks in order.
//! 3. **Small functions** (one chunk of at most [`SMALL`] weight) get the backtracking
//!    allocator and `opt_level=speed`: best code where compile time is small anyway.
//!
//! **Two points at once.** [`compile_lanes`] with 2 lanes compiles the same program over
//! `f64x2` values: lane 0 computes at one point, lane 1 at another (`eval_many`). Inputs,
//! outputs and scratch slots are then pairs, interleaved (`x0 y0 x1 y1 ...` for the points
//! `x` and `y`). Sums, products, divisions, square roots and `abs` are one vector instruction
//! for both lanes; a host function is one call for both lanes where the platform passes
//! `f64x2` in a register (x86-64 Unix: `runtime.rs`'s pair functions, each lane computed as the
//! one-lane function computes it), and the selects of `relu`, `step` and `sign` run lane by
//! lane. Every lane computes exactly what the one-lane code computes.
//!
//! **Four points at once.** With 4 lanes each node is emitted twice, for two pairs (points
//! 0, 1 and 2, 3; an input, output or scratch entry holds four values), and a host function
//! is one call for both pairs (`runtime.rs`'s four-lane functions write their two result
//! pairs to a stack slot). The host functions are paced by instruction count, so four lanes
//! pay off where the host computes them in one AVX register; windows, chunks and the tier
//! are those of the one-pair program.
//!
//! **Exactness.** The canonical form writes `a - b` as `a + (-1)*b`. Where a product with a
//! negative coefficient is used only by sums, the sums subtract the product of its absolute
//! value instead (`fsub`; a sum whose first term is such a product starts as `t1 - m`,
//! which is `-m + t1` exactly, with no negation on its critical path): IEEE negation is
//! exact and multiplication is symmetric in sign, so the result is bit-identical to the
//! interpreter's `a + ((-1)*b)`. The first two operands of
//! a sum or product may be swapped (`a*b` is `b*a` exactly; only the first two, since
//! swapping later ones would change the rounding), so that a number or a load is the second
//! one, which x86 reads from memory within the instruction.
//!
//! **Code size.** Large straight-line programs are paced by fetching their code, not by
//! arithmetic (a 100,000-operation random DAG's gradient is about 24 MB of machine code,
//! `Stats::code_bytes`). So numbers and loads are emitted at each use instead of being kept
//! in a register for the window: kept ones were spilled and reloaded by the allocator.

use std::time::{Duration, Instant};

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    AbiParam, FuncRef, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use hashbrown::HashMap;

use crate::graph::{Func, Graph, Id, Marks, NodeMap, Op, op_count};
use crate::jit::runtime;

/// Weight per window (see the module doc): about this many instructions.
pub const WINDOW: usize = 512;

/// Weight per chunk of a large function: a whole number of windows.
pub const CHUNK: usize = 32 * WINDOW;

/// The least weight per chunk when a function is split to give every core a chunk.
pub const MIN_CHUNK: usize = 4 * WINDOW;

/// Functions of at most this weight are compiled as one function with the best
/// (backtracking) register allocator and the optimizer.
pub const SMALL: usize = 4_000;

/// Functions of at most this weight keep the backtracking allocator in their chunks:
/// about twice the compile time of the single-pass one, and about twice as fast code.
pub const MEDIUM: usize = 100_000;

/// The weight of the node at position `p`: about the instructions it is lowered to, one per
/// argument of a sum or product (a fetch and an `fadd`/`fmul` each) and two for anything
/// else; leaves are materialized where used and weigh nothing. Windows, chunks and tiers are
/// measured in it, not in nodes, so that a node of 999 arguments is not taken for one
/// instruction.
fn weight(prog: &Program, p: usize) -> usize {
    match prog.op(p) {
        Op::Num(_) | Op::Const(_) | Op::Var(_) => 0,
        Op::Add | Op::Mul => prog.args(p).len(),
        _ => 2,
    }
}

/// Most inputs or outputs in one group: offsets must fit Cranelift's 32-bit immediates.
pub(crate) const MAX_ARRAY: usize = (i32::MAX / 8) as usize;

/// What can go wrong while compiling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JitError {
    /// The host CPU is not one Cranelift can generate code for.
    #[error("this machine is not supported by the code generator: {0}")]
    Host(String),
    /// An output depends on a variable that is not among the inputs.
    #[error("`{0}` is not one of the function's inputs")]
    NotAnInput(String),
    /// A tensor operation in a function compiled for scalars.
    #[error("`{0}` is a tensor operation; scalar functions are compiled from scalar expressions")]
    Tensor(String),
    /// Too many inputs or outputs for one function.
    #[error("too many values for one compiled function ({0}); the limit is {MAX_ARRAY}")]
    TooLarge(usize),
    /// Cranelift refused the function (a bug in symdiff if it ever happens).
    #[error("code generation failed: {0}")]
    Codegen(String),
}

pub(super) fn codegen(e: impl std::fmt::Display) -> JitError {
    JitError::Codegen(e.to_string())
}

/// How to compile.
///
/// ```
/// let f = symdiff::Expr::parse("log(x)*y + sqrt(y)")?;
/// let opts = symdiff::CompileOptions { check: true, ..Default::default() };
/// let g = symdiff::compile_gradient_with(&f, &["x", "y"], &opts)?; // checked at random points
/// # Ok::<(), symdiff::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Keep the function's Cranelift IR as text (for `:ir` and `--dump-ir`).
    pub keep_ir: bool,
    /// Before returning a compiled gradient, compare it with the interpreter at random points
    /// of the function's domain and fail with the first disagreement (see
    /// [`compile_gradient_with`](crate::compile_gradient_with)).
    pub check: bool,
}

/// What compiling cost and produced.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Graph nodes lowered.
    pub nodes: usize,
    /// Arithmetic operations lowered (`Graph::ops`: a sum or product of k arguments is
    /// k - 1), every output group together.
    pub ops: usize,
    /// The operations the first output group needs on its own: for a compiled gradient, the
    /// function's, so that `ops / value_ops` is the gradient program's cost relative to the
    /// function ([`Stats::gradient_ratio`]).
    pub value_ops: usize,
    /// Cranelift functions the nodes were split into.
    pub chunks: usize,
    /// Scratch slots for values crossing windows.
    pub spilled: usize,
    /// Bytes of machine code (with its constants) that one call runs through, loops
    /// included: straight-line code grows with the program, and once it outgrows the
    /// processor's caches a call is paced by fetching it.
    pub code_bytes: usize,
    /// Wall time from the first instruction built to the code being executable.
    pub compile_time: Duration,
    /// `"backtracking"` or `"single_pass"`.
    pub allocator: &'static str,
    /// The classes of like terms compiled as loops (empty for straight-line code).
    pub classes: Vec<ClassStats>,
    /// Template nodes run in loops, counted once per member (`nodes` are straight-line).
    pub looped_nodes: usize,
}

impl Stats {
    /// How the work is split between loops and straight-line code, in words: `no classes
    /// of like terms: 41 nodes straight-line`, or `2 classes in loops (999 terms x 5 nodes,
    /// 999 x 3; 7992 node evaluations), 3 nodes straight-line`.
    pub fn structure(&self) -> String {
        if self.classes.is_empty() {
            return format!("no classes of like terms: {} nodes straight-line", self.nodes);
        }
        let list: Vec<String> = self
            .classes
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let terms = if k == 0 { " terms" } else { "" };
                format!("{}{terms} x {} nodes", c.members, c.template_nodes)
            })
            .collect();
        format!(
            "{} class{} in loops ({}; {} node evaluations), {} nodes straight-line",
            self.classes.len(),
            if self.classes.len() == 1 { "" } else { "es" },
            list.join(", "),
            self.looped_nodes,
            self.nodes
        )
    }
}

/// One class of like terms compiled as a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStats {
    /// Terms in the class.
    pub members: usize,
    /// Nodes of one term.
    pub template_nodes: usize,
    /// Operands one term reads (variables, numbers, shared subexpressions).
    pub slots: usize,
}

impl Stats {
    /// The program's operations over the first group's alone (for a compiled gradient: the
    /// value and gradient together relative to the function, at most 4 by the cheap-gradient
    /// bound that `tests/cheap_gradient.rs` checks). 1 for a program of no operations.
    pub fn gradient_ratio(&self) -> f64 {
        if self.value_ops == 0 { 1.0 } else { self.ops as f64 / self.value_ops as f64 }
    }
}

/// A compiled function. Owns its code; the code is freed when this is dropped.
pub struct CompiledFunction {
    modules: Vec<JITModule>,
    /// The chunks' entry points, called in order.
    chunks: Vec<*const u8>,
    inputs: usize,
    groups: Vec<usize>,
    /// Points computed per call (1, or 2 for `f64x2` code): inputs and outputs are that many
    /// interleaved values per entry.
    lanes: usize,
    /// f64 slots of scratch memory the code uses.
    scratch: usize,
    ir: Option<String>,
    stats: Stats,
}

// SAFETY: after `finalize_definitions` the code pages are immutable and the functions read
// only their arguments (scratch memory is per thread, see `with_scratch`), so calling them
// from several threads at once is safe. The modules are touched again only by `Drop`, which
// has exclusive access.
unsafe impl Send for CompiledFunction {}
unsafe impl Sync for CompiledFunction {}

impl Drop for CompiledFunction {
    fn drop(&mut self) {
        self.chunks.clear();
        for m in self.modules.drain(..) {
            // SAFETY: the chunk pointers into this module's memory were just dropped and
            // `CompiledFunction` hands out no copies of them.
            unsafe { m.free_memory() };
        }
    }
}

type Fn1 = unsafe extern "C" fn(*const f64, *mut f64, *mut f64);
type Fn2 = unsafe extern "C" fn(*const f64, *mut f64, *mut f64, *mut f64);

thread_local! {
    /// Scratch memory for spilled values, one buffer per thread, grown on demand and reused.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `len` slots of this thread's scratch memory.
fn with_scratch<T>(len: usize, f: impl FnOnce(*mut f64) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(s.as_mut_ptr())
    })
}

impl CompiledFunction {
    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Points computed per call (see [`compile_lanes`]).
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The size of each output group.
    pub fn groups(&self) -> &[usize] {
        &self.groups
    }

    /// The Cranelift IR, if it was kept.
    pub fn ir(&self) -> Option<&str> {
        self.ir.as_deref()
    }

    /// Compile statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls a one-group function. Returns `false` (and writes nothing) if the lengths do not
    /// match the compiled shape.
    pub fn call1(&self, inputs: &[f64], out: &mut [f64]) -> bool {
        let l = self.lanes;
        if self.groups.len() != 1 || inputs.len() != l * self.inputs || out.len() != l * self.groups[0] {
            return false;
        }
        with_scratch(self.scratch, |scratch| {
            for &code in &self.chunks {
                // SAFETY: every chunk was compiled for exactly this signature (one input
                // array, one output group, scratch); it reads at most `self.inputs` inputs,
                // writes at most `self.groups[0]` outputs and `self.scratch` scratch slots,
                // and those lengths were checked above (scratch by `with_scratch`).
                unsafe {
                    let f: Fn1 = std::mem::transmute::<*const u8, Fn1>(code);
                    f(inputs.as_ptr(), out.as_mut_ptr(), scratch);
                }
            }
        });
        true
    }

    /// Calls a two-group function (a value and a gradient, say). Returns `false` (and writes
    /// nothing) if the lengths do not match the compiled shape.
    pub fn call2(&self, inputs: &[f64], out0: &mut [f64], out1: &mut [f64]) -> bool {
        let l = self.lanes;
        if self.groups.len() != 2
            || inputs.len() != l * self.inputs
            || out0.len() != l * self.groups[0]
            || out1.len() != l * self.groups[1]
        {
            return false;
        }
        with_scratch(self.scratch, |scratch| {
            for &code in &self.chunks {
                // SAFETY: as in `call1`, for the two-group signature; lengths checked above.
                unsafe {
                    let f: Fn2 = std::mem::transmute::<*const u8, Fn2>(code);
                    f(inputs.as_ptr(), out0.as_mut_ptr(), out1.as_mut_ptr(), scratch);
                }
            }
        });
        true
    }
}

/// The nodes to compile by position, in the order they are emitted (a copy of their
/// operators and arguments, the arguments as positions): the graph's nodes are scattered
/// in memory, so every pass after the first, and the emitter, read these arrays instead,
/// in order. The node at position `p` is `op(p)` over the positions `args(p)`, each
/// smaller than `p`: for `order = [x, y, x*y, sin(x*y)]` the arguments of position 3 are
/// `[2]` and those of position 2 are `[0, 1]`.
struct Program {
    ops: Vec<Op>,
    /// `arg_pos[arg_start[p]..arg_start[p + 1]]`: the arguments of position `p`.
    arg_start: Vec<u32>,
    arg_pos: Vec<u32>,
}

impl Program {
    fn op(&self, p: usize) -> Op {
        self.ops[p]
    }

    fn args(&self, p: usize) -> &[u32] {
        &self.arg_pos[self.arg_start[p] as usize..self.arg_start[p + 1] as usize]
    }

    fn num(&self, p: usize) -> Option<f64> {
        match self.ops[p] {
            Op::Num(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    /// The arithmetic operations of position `p` (`Graph::ops`).
    fn ops(&self, p: usize) -> usize {
        let args = self.args(p);
        let negation = args.first().is_some_and(|&c| self.ops[c as usize] == Op::Num((-1.0f64).to_bits()));
        op_count(self.ops[p], args.len(), negation)
    }

    fn is_leaf(&self, p: usize) -> bool {
        matches!(self.ops[p], Op::Num(_) | Op::Const(_) | Op::Var(_))
    }

    /// [`step_factor`] by position.
    fn step_factor(&self, p: usize) -> Option<usize> {
        self.args(p).iter().position(|&a| self.ops[a as usize] == Op::Func(Func::Step))
    }

    /// `Some((|c|, factors))` for a product `c * factors...` with a negative number `c`.
    fn negative_product(&self, p: usize) -> Option<(f64, &[u32])> {
        if self.ops[p] != Op::Mul {
            return None;
        }
        let c = self.num(self.args(p)[0] as usize)?;
        (c < 0.0).then(|| (-c, &self.args(p)[1..]))
    }
}

/// What the lowering knows about the whole function before emitting any chunk.
struct Plan<'g> {
    g: &'g Graph,
    order: Vec<Id>,
    /// The nodes of `order`, by position.
    prog: Program,
    /// Position in `order` of each node (`u32::MAX` if unreached).
    pos_of: Marks<u32>,
    /// `input_at[p]`: the input index of the variable at position `p` (`u32::MAX` for
    /// other nodes).
    input_at: Vec<u32>,
    /// A product with a negative coefficient whose every use is a sum: never emitted, the
    /// sums subtract it (see the module doc).
    absorbed: Vec<bool>,
    /// `window[p]`: the window of position `p` (`window[n]`: the output stores', after all).
    window: Vec<u32>,
    /// Position where each chunk starts (the first is 0), on window boundaries.
    chunk_starts: Vec<usize>,
    /// The total weight (see [`weight`]).
    weight: usize,
    /// `slot_of[p]`: scratch slot of the value at position `p`, or `u32::MAX`.
    slot_of: Vec<u32>,
    slots: usize,
    groups: Vec<Vec<Id>>,
    /// `prefix[p] = (q, len)`: the product at `p` starts from the value at `q`, the
    /// product of its first `len` factors (see [`prefix_of`]); few products have one.
    prefix: HashMap<u32, (u32, u32)>,
    /// `stores[p]`: where the value at `p` goes in the output groups, `(group, index)`,
    /// stored as soon as it is computed (outputs that are leaves are stored at the end).
    stores: HashMap<usize, Vec<(usize, usize)>>,
    /// `F64`, or `F64X2` for two or four lanes.
    ty: types::Type,
    /// Points per call: 1, 2 or 4 (two `F64X2` values per node, see the module doc).
    lanes: usize,
}

impl<'g> Plan<'g> {
    fn new(g: &'g Graph, inputs: &[Id], groups: &[&[Id]], lanes: usize) -> Result<Plan<'g>, JitError> {
        let roots: Vec<Id> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        // Later groups first: a gradient's components each need a local part of the forward
        // computation, which the depth-first schedule then places right before them; the
        // value (usually a sum over everything) comes last and reuses it.
        let dfs_roots: Vec<Id> = groups.iter().rev().flat_map(|g| g.iter().copied()).collect();
        let (order, pos_of, prog) = schedule(g, &dfs_roots);
        let n = order.len();
        let mut input_of = NodeMap::new(inputs, u32::MAX);
        for (i, v) in inputs.iter().enumerate() {
            input_of.set(*v, i as u32);
        }
        let mut input_at = vec![u32::MAX; n];
        for p in 0..n {
            if let Op::Var(_) = prog.op(p) {
                input_at[p] = *input_of.get(order[p]);
                if input_at[p] == u32::MAX {
                    return Err(JitError::NotAnInput(g.var_name(order[p]).unwrap_or("?").to_owned()));
                }
            }
        }
        let pos = |id: &Id| pos_of.get(*id) as usize;
        // Absorbed negative products: every user is a sum, and it is not an output.
        // (A product with a step factor is masked, so it is emitted on its own.)
        let mut absorbed: Vec<bool> =
            (0..n).map(|p| prog.negative_product(p).is_some() && prog.step_factor(p).is_none()).collect();
        for r in &roots {
            absorbed[pos(r)] = false;
        }
        for p in 0..n {
            if prog.op(p) != Op::Add {
                for &a in prog.args(p) {
                    absorbed[a as usize] = false;
                }
            }
        }
        // Products that start from a prefix computed before them (see `prefix_of`).
        let mut prefix: HashMap<u32, (u32, u32)> = HashMap::new();
        for p in 0..n {
            if !absorbed[p]
                && prog.op(p) == Op::Mul
                && prog.args(p).len() >= 3
                && let Some(found) = prefix_of(g, order[p], |q| {
                    let k = pos_of.get(q) as usize;
                    k < p && !absorbed[k] && prog.step_factor(k).is_none()
                })
            {
                prefix.insert(p as u32, (pos_of.get(found.0), found.1 as u32));
            }
        }
        // Last use of every emitted value; an absorbed product's arguments are used by the
        // sums that use it, a product that starts from a prefix uses the prefix instead of
        // the factors in it.
        let mut last = vec![0usize; n];
        for p in 0..n {
            if absorbed[p] {
                continue;
            }
            let skip = match plan_prefix(&prefix, &prog, p) {
                Some((q, len)) => {
                    last[q as usize] = last[q as usize].max(p);
                    len as usize
                }
                None => 0,
            };
            for &a in &prog.args(p)[skip..] {
                let k = a as usize;
                if absorbed[k] {
                    for &b in prog.args(k) {
                        last[b as usize] = last[b as usize].max(p);
                    }
                } else {
                    last[k] = last[k].max(p);
                }
            }
        }
        // An output that is computed is stored where it is computed; one that is a leaf (a
        // number, an input) is stored at the very end, a use after the last node.
        let mut stores: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (k, group) in groups.iter().enumerate() {
            for (j, r) in group.iter().enumerate() {
                if prog.is_leaf(pos(r)) {
                    last[pos(r)] = n;
                } else {
                    stores.entry(pos(r)).or_default().push((k, j));
                }
            }
        }
        // Windows and chunks by weight: a window closes once it holds WINDOW of weight (a
        // node heavier than that is a window of its own), a chunk once it holds `chunk`:
        // CHUNK, or less where that gives every core a chunk to compile (no less than
        // MIN_CHUNK), since a function just past SMALL would otherwise be one chunk on one
        // core.
        let weight_of = |p: usize| if absorbed[p] { 0 } else { weight(&prog, p) };
        let all: usize = (0..n).map(weight_of).sum();
        let chunk = all.div_ceil(crate::jit::cores()).clamp(MIN_CHUNK, CHUNK);
        let mut window = Vec::with_capacity(n + 1);
        let mut chunk_starts = vec![0];
        let (mut w, mut in_window, mut in_chunk, mut total) = (0u32, 0usize, 0usize, 0usize);
        for p in 0..n {
            let wt = weight_of(p);
            if in_window > 0 && in_window + wt > WINDOW {
                w += 1;
                in_chunk += in_window;
                in_window = 0;
                if in_chunk >= chunk {
                    chunk_starts.push(p);
                    in_chunk = 0;
                }
            }
            in_window += wt;
            total += wt;
            window.push(w);
        }
        window.push(w + 1);
        let mut slot_of = vec![u32::MAX; n];
        let mut slots = 0;
        for p in 0..n {
            if !absorbed[p] && !prog.is_leaf(p) && window[last[p]] > window[p] {
                slot_of[p] = slots as u32;
                slots += 1;
            }
        }
        let groups = groups.iter().map(|g| g.to_vec()).collect();
        Ok(Plan {
            g,
            order,
            prog,
            pos_of,
            input_at,
            absorbed,
            window,
            chunk_starts,
            weight: total,
            slot_of,
            slots,
            groups,
            prefix,
            stores,
            ty: if lanes == 1 { types::F64 } else { types::F64X2 },
            lanes,
        })
    }

    /// The operations the outputs of group `k` need on their own (`Graph::ops_of`), by a
    /// walk over positions.
    fn ops_of_group(&self, k: usize) -> usize {
        let mut seen = vec![false; self.order.len()];
        let mut stack: Vec<usize> = self.groups[k].iter().map(|&r| self.pos(r)).collect();
        let mut ops = 0;
        while let Some(p) = stack.pop() {
            if !std::mem::replace(&mut seen[p], true) {
                ops += self.prog.ops(p);
                stack.extend(self.prog.args(p).iter().map(|&a| a as usize));
            }
        }
        ops
    }

    fn pos(&self, id: Id) -> usize {
        self.pos_of.get(id) as usize
    }

    /// Byte offset of entry `i` of an array of inputs, outputs or scratch slots, for the
    /// pair `s` (0 or 1; always 0 below four lanes): an entry holds one value per lane.
    fn offset(&self, i: usize, s: usize) -> i32 {
        (8 * self.lanes * i + 16 * s) as i32
    }

    /// Pairs of lanes each node is computed in: 2 for four lanes, else 1.
    fn streams(&self) -> usize {
        self.lanes.div_ceil(2)
    }

    /// Byte offset in the input array of the variable at position `p`, for pair `s`.
    fn input_offset(&self, p: usize, s: usize) -> i32 {
        self.offset(self.input_at[p] as usize, s)
    }

    fn spilled(&self, p: usize) -> bool {
        self.slot_of[p] != u32::MAX
    }

    fn slot(&self, p: usize, s: usize) -> i32 {
        self.offset(self.slot_of[p] as usize, s)
    }
}

/// The prefix the product at position `p` starts from, if any (only products of three or
/// more factors look: most nodes are not).
fn plan_prefix(prefix: &HashMap<u32, (u32, u32)>, prog: &Program, p: usize) -> Option<(u32, u32)> {
    if prog.op(p) == Op::Mul && prog.args(p).len() >= 3 { prefix.get(&(p as u32)).copied() } else { None }
}

/// The longest prefix of the product `id` that the program computes anyway, as a node and
/// the number of factors in it: `(q, len)` where `q` is `x0*x1` (in either order), or a
/// product of two of which one is such a prefix of `len - 1` factors and the other is the
/// next factor; `usable(q)` says whether the program computes `q` before `id`. `None` for
/// fewer than 2 factors found, or when `id` is not a plain product of 3 or more factors.
///
/// The reverse sweep over a wide product builds exactly these prefixes (`x0*x1`,
/// `(x0*x1)*x2`, ...: `rules::product_partials`), so without this the value
/// `x0*x1*...*xn` would be computed a second time, a third chain of dependent
/// multiplications beside the prefix and suffix products. Starting from the prefix is exact:
/// the n-ary product is the left fold `((x0*x1)*x2)*...` (with the first two in either
/// order, which `fmul` does not tell apart), and each prefix node computes one step of it.
fn prefix_of(g: &Graph, id: Id, usable: impl Fn(Id) -> bool) -> Option<(Id, usize)> {
    let args = g.args(id);
    if g.op(id) != Op::Mul || args.len() < 3 || step_factor(g, id).is_some() {
        return None;
    }
    let two = |a: Id, b: Id| g.find(Op::Mul, &[a, b]).or_else(|| g.find(Op::Mul, &[b, a]));
    let plain = |q: Id| g.args(q).len() == 2 && usable(q);
    let mut best = None;
    let mut at = two(args[0], args[1]).filter(|&q| plain(q))?;
    for (len, &next) in args.iter().enumerate().skip(2) {
        best = Some((at, len));
        match two(at, next).filter(|&q| plain(q)) {
            Some(q) => at = q,
            None => break,
        }
    }
    best
}

/// The order nodes are computed in: depth-first post-order from the outputs, so that each
/// node comes soon after its arguments (a sum right after its terms, rather than after every
/// node with a smaller id). Fewer values then cross windows, so fewer are spilled.
///
/// Returns the order, each node's position in it, and the nodes as a [`Program`], built as
/// the walk emits them (a node's arguments have positions by then): the walk reads every
/// node anyway, so the program costs no second pass over the graph's scattered nodes.
fn schedule(g: &Graph, roots: &[Id]) -> (Vec<Id>, Marks<u32>, Program) {
    let mut pos_of = Marks::new(roots, u32::MAX);
    let mut order = Vec::new();
    let mut prog = Program { ops: Vec::new(), arg_start: Vec::new(), arg_pos: Vec::new() };
    // (node, index of the next argument to visit)
    let mut stack: Vec<(Id, usize)> = Vec::new();
    for &r in roots {
        if pos_of.get(r) != u32::MAX {
            continue;
        }
        stack.push((r, 0));
        while let Some(&mut (id, ref mut next)) = stack.last_mut() {
            let args = g.args(id);
            if *next < args.len() {
                let a = args[*next];
                *next += 1;
                if pos_of.get(a) == u32::MAX {
                    stack.push((a, 0));
                }
            } else {
                stack.pop();
                if pos_of.set(id, order.len() as u32) {
                    order.push(id);
                    prog.ops.push(g.op(id));
                    prog.arg_start.push(prog.arg_pos.len() as u32);
                    prog.arg_pos.extend(args.iter().map(|&a| pos_of.get(a)));
                }
            }
        }
    }
    prog.arg_start.push(prog.arg_pos.len() as u32);
    (order, pos_of, prog)
}

/// The position of a `step(u)` factor of product `id`, if it has one: where that factor is 0
/// the product is 0 whatever the others are (the interpreter's rule, see `graph::eval`).
pub(super) fn step_factor(g: &Graph, id: Id) -> Option<usize> {
    g.args(id).iter().position(|&a| g.op(a) == Op::Func(Func::Step))
}

/// How a function is compiled, by size (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tier {
    /// One function, backtracking allocator, e-graph optimizer.
    Small,
    /// Chunks, backtracking allocator (the windows keep it linear), no optimizer.
    Medium,
    /// Chunks, single-pass allocator, no optimizer: fastest to compile.
    Large,
}

impl Tier {
    /// The tier for a function of this weight (see [`weight`]).
    fn of(weight: usize) -> Tier {
        if weight <= SMALL {
            Tier::Small
        } else if weight <= MEDIUM {
            Tier::Medium
        } else {
            Tier::Large
        }
    }

    fn allocator(self) -> &'static str {
        match self {
            Tier::Small | Tier::Medium => "backtracking",
            Tier::Large => "single_pass",
        }
    }
}

pub(super) fn make_isa(tier: Tier) -> Result<OwnedTargetIsa, JitError> {
    let mut flags = settings::builder();
    let mut set = |k: &str, v: &str| flags.set(k, v).map_err(codegen);
    set("opt_level", if tier == Tier::Small { "speed" } else { "none" })?;
    set("regalloc_algorithm", tier.allocator())?;
    set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    set("use_colocated_libcalls", "false")?;
    set("is_pic", "false")?;
    cranelift_native::builder()
        .map_err(|m| JitError::Host(m.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(codegen)
}

/// Compiles `groups` (the outputs, in one or two groups of one array each) as functions of
/// `inputs`.
pub fn compile(
    g: &Graph,
    inputs: &[Id],
    groups: &[&[Id]],
    opts: &CompileOptions,
) -> Result<CompiledFunction, JitError> {
    compile_lanes(g, inputs, groups, opts, 1)
}

/// [`compile`] for `lanes` points per call (1, 2 or 4, see the module doc).
pub fn compile_lanes(
    g: &Graph,
    inputs: &[Id],
    groups: &[&[Id]],
    opts: &CompileOptions,
    lanes: usize,
) -> Result<CompiledFunction, JitError> {
    assert!((1..=2).contains(&groups.len()), "one or two output groups");
    assert!([1, 2, 4].contains(&lanes), "one, two or four lanes");
    for n in std::iter::once(inputs.len()).chain(groups.iter().map(|g| g.len())) {
        if n * lanes > MAX_ARRAY {
            return Err(JitError::TooLarge(n));
        }
    }
    let start = Instant::now();
    let plan = Plan::new(g, inputs, groups, lanes)?;
    let n = plan.order.len();
    // Weights are one pair's (see the module doc): four-lane code gets the tier, and so the
    // register allocator, of its two-lane program.
    let tier = Tier::of(plan.weight);
    let small = tier == Tier::Small;
    let bounds: Vec<(usize, usize)> = if small {
        vec![(0, n)]
    } else {
        let mut ends: Vec<usize> = plan.chunk_starts[1..].to_vec();
        ends.push(n);
        plan.chunk_starts.iter().copied().zip(ends).collect()
    };
    let workers = crate::jit::cores().min(bounds.len());
    // Each worker compiles chunks taken from a shared counter into a module of its own, so
    // the cores stay busy even when chunks differ in cost.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |_: usize| -> Result<Finished, JitError> {
        let mut unit = Unit::new(tier)?;
        loop {
            let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(lo, hi)) = bounds.get(c) else { break };
            unit.add_chunk(&plan, c, lo, hi, opts.keep_ir)?;
        }
        unit.finish()
    };
    let results: Vec<Result<Finished, JitError>> = if workers <= 1 {
        vec![work(0)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|w| s.spawn(move || work(w).map(SendModule))).collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r.map(|m| m.0),
                    Err(_) => Err(JitError::Codegen("a compiler thread panicked".into())),
                })
                .collect()
        })
    };
    let mut modules = Vec::new();
    let mut numbered: Vec<(usize, *const u8)> = Vec::new();
    let mut irs = Vec::new();
    let mut code_bytes = 0;
    for r in results {
        let (m, codes, text, bytes) = r?;
        modules.push(m);
        numbered.extend(codes);
        irs.push(text);
        code_bytes += bytes;
    }
    numbered.sort_by_key(|&(c, _)| c);
    let chunks: Vec<*const u8> = numbered.into_iter().map(|(_, code)| code).collect();
    let ir = irs.concat();
    let ops = (0..n).map(|p| plan.prog.ops(p)).sum();
    let value_ops = if groups.len() > 1 { plan.ops_of_group(0) } else { ops };
    let stats = Stats {
        nodes: n,
        ops,
        value_ops,
        chunks: chunks.len(),
        spilled: plan.slots,
        code_bytes,
        compile_time: start.elapsed(),
        allocator: tier.allocator(),
        classes: Vec::new(),
        looped_nodes: 0,
    };
    Ok(CompiledFunction {
        modules,
        chunks,
        inputs: inputs.len(),
        groups: groups.iter().map(|g| g.len()).collect(),
        lanes,
        scratch: plan.slots * lanes,
        ir: opts.keep_ir.then_some(ir),
        stats,
    })
}

/// Bytes of machine code and constants of the function `ctx` just compiled.
pub(super) fn code_size(ctx: &cranelift_codegen::Context) -> usize {
    ctx.compiled_code().map_or(0, |c| c.code_info().total_size as usize)
}

/// A worker's result: its module, the chunks in it (by number) and their IR text.
type Finished = (JITModule, Vec<(usize, *const u8)>, String, usize);

/// A finished module moving from a compiler thread to the caller.
struct SendModule(Finished);
// SAFETY: the module was finalized and is not used by the thread that made it any more; the
// pointers are addresses of its (immutable) code.
unsafe impl Send for SendModule {}

/// One worker's module and the chunks compiled into it.
struct Unit {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fbc: FunctionBuilderContext,
    /// (chunk number, function)
    ids: Vec<(usize, cranelift_module::FuncId)>,
    ir: String,
    /// Machine code and constants of the chunks added, in bytes.
    bytes: usize,
}

impl Unit {
    fn new(tier: Tier) -> Result<Unit, JitError> {
        let mut jb = JITBuilder::with_isa(make_isa(tier)?, default_libcall_names());
        for (name, ptr) in runtime::symbols() {
            jb.symbol(name, ptr);
        }
        let module = JITModule::new(jb);
        let ctx = module.make_context();
        Ok(Unit {
            module,
            ctx,
            fbc: FunctionBuilderContext::new(),
            ids: Vec::new(),
            ir: String::new(),
            bytes: 0,
        })
    }

    fn add_chunk(
        &mut self,
        plan: &Plan<'_>,
        c: usize,
        lo: usize,
        hi: usize,
        keep_ir: bool,
    ) -> Result<(), JitError> {
        let ptr_ty = self.module.target_config().pointer_type();
        // inputs, one pointer per output group, scratch
        for _ in 0..plan.groups.len() + 2 {
            self.ctx.func.signature.params.push(AbiParam::new(ptr_ty));
        }
        let fid = self.module.declare_anonymous_function(&self.ctx.func.signature).map_err(codegen)?;
        let store_outputs = hi == plan.order.len();
        lower_chunk(plan, lo, hi, store_outputs, &mut self.module, &mut self.ctx.func, &mut self.fbc)?;
        if keep_ir {
            self.ir += &format!("; chunk {c}: nodes {lo}..{hi}\n{}\n", self.ctx.func.display());
        }
        self.module.define_function(fid, &mut self.ctx).map_err(|e| codegen(format!("{e:?}")))?;
        self.bytes += code_size(&self.ctx);
        self.module.clear_context(&mut self.ctx);
        self.ids.push((c, fid));
        Ok(())
    }

    fn finish(mut self) -> Result<Finished, JitError> {
        self.module.finalize_definitions().map_err(codegen)?;
        let codes = self.ids.iter().map(|&(c, id)| (c, self.module.get_finalized_function(id))).collect();
        Ok((self.module, codes, self.ir, self.bytes))
    }
}

/// Emits the nodes at positions `lo..hi` (and the output stores, in the last chunk).
fn lower_chunk(
    plan: &Plan<'_>,
    lo: usize,
    hi: usize,
    store_outputs: bool,
    module: &mut JITModule,
    func: &mut cranelift_codegen::ir::Function,
    fbc: &mut FunctionBuilderContext,
) -> Result<(), JitError> {
    let g = plan.g;
    let prog = &plan.prog;
    let mut b = FunctionBuilder::new(func, fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let scratch = params[plan.groups.len() + 1];
    let mut em = Emitter { b, module, calls: HashMap::new(), inline_exp: false, quad_out: None };
    let ty = plan.ty;
    let streams = plan.streams();
    // Not `trusted()`: that promises alignment, and a pair of lanes is only 8-byte aligned.
    let flags = MemFlagsData::new().with_notrap();
    let read_only = flags.with_readonly().with_can_move();
    // The SSA values of each node computed in this chunk (`values[p - lo]`, one per pair of
    // lanes), with the window they may be used in; a node of an earlier chunk is reloaded
    // from scratch.
    let mut values: Vec<Option<(usize, [Value; 2])>> = vec![None; hi - lo];
    // A node's value in pair `s` for use in `window`: its own SSA value if computed there,
    // otherwise recomputed (numbers), reloaded from the inputs (variables) or from scratch.
    // Loads and numbers are emitted at each use, not kept for the window: a value with one
    // use right after it is computed is folded into that instruction as its memory operand
    // (`vmulsd 0x1230(%r15), %xmm1, %xmm2`), where a value kept in a register across the
    // window would be spilled to the stack and reloaded by the register allocator.
    let fetch = |em: &mut Emitter,
                 values: &[Option<(usize, [Value; 2])>],
                 k: usize,
                 window: usize,
                 s: usize| {
        if k >= lo
            && let Some((w, v)) = values[k - lo]
            && w == window
        {
            return Operand { value: v[s], kind: Kind::Register };
        }
        match prog.op(k) {
            Op::Num(bits) => Operand { value: em.constant(ty, f64::from_bits(bits)), kind: Kind::Constant },
            Op::Const(c) => Operand { value: em.constant(ty, c.value()), kind: Kind::Constant },
            Op::Var(_) => Operand {
                value: em.b.ins().load(ty, read_only, params[0], plan.input_offset(k, s)),
                kind: Kind::Load,
            },
            _ => Operand { value: em.b.ins().load(ty, flags, scratch, plan.slot(k, s)), kind: Kind::Load },
        }
    };
    // The value of the node at `p` in pair `s`, for every node but a host call over four
    // lanes (both pairs at once, below).
    let node = |em: &mut Emitter,
                values: &[Option<(usize, [Value; 2])>],
                args: &mut Vec<Operand>,
                p: usize,
                window: usize,
                s: usize|
     -> Result<Value, JitError> {
        Ok(match prog.op(p) {
            Op::Num(_) | Op::Const(_) | Op::Var(_) => unreachable!("leaves are not emitted"),
            Op::Add => {
                let mut acc: Option<Operand> = None;
                // A first term that is a negative product, `-m`, waiting for the second:
                // `-m + t` is `t - m` exactly (`fadd` is commutative), with no negation.
                let mut negated: Option<Value> = None;
                for &k in prog.args(p) {
                    let k = k as usize;
                    if plan.absorbed[k] {
                        // acc - |c|*factors (exactly acc + c*factors)
                        let (c, factors) =
                            prog.negative_product(k).expect("absorbed nodes are negative products");
                        args.clear();
                        if c != 1.0 {
                            args.push(Operand { value: em.constant(ty, c), kind: Kind::Constant });
                        }
                        for &f in factors {
                            args.push(fetch(em, values, f as usize, window, s));
                        }
                        let m = em.fold(args, |b, x, y| b.ins().fmul(x, y));
                        let value = match (acc, negated.take()) {
                            (None, None) => {
                                negated = Some(m);
                                continue;
                            }
                            (None, Some(first)) => {
                                let first = em.b.ins().fneg(first);
                                em.b.ins().fsub(first, m)
                            }
                            (Some(acc), _) => em.b.ins().fsub(acc.value, m),
                        };
                        acc = Some(Operand { value, kind: Kind::Register });
                    } else {
                        let x = fetch(em, values, k, window, s);
                        if let Some(first) = negated.take() {
                            acc = Some(Operand {
                                value: em.b.ins().fsub(x.value, first),
                                kind: Kind::Register,
                            });
                            continue;
                        }
                        acc = Some(match acc {
                            None => x,
                            // `fold` of the two: the first two terms may swap.
                            Some(acc) => Operand {
                                value: em.fold(&[acc, x], |b, x, y| b.ins().fadd(x, y)),
                                kind: Kind::Register,
                            },
                        });
                    }
                }
                match (acc, negated) {
                    (Some(acc), _) => acc.value,
                    (None, Some(m)) => em.b.ins().fneg(m),
                    (None, None) => unreachable!("a sum has terms"),
                }
            }
            Op::Mul => {
                // The factors not in the prefix it starts from, if any (then it has no step
                // factor: `prefix_of`).
                let start = plan_prefix(&plan.prefix, prog, p);
                let skip = start.map_or(0, |(_, len)| len as usize);
                args.clear();
                for &a in &prog.args(p)[skip..] {
                    args.push(fetch(em, values, a as usize, window, s));
                }
                // (-1*f1)*f2*... as the interpreter computes it: the product of `-1` and one
                // factor is that factor negated, exactly.
                let product = match start {
                    Some((q, len)) => {
                        let mut acc = fetch(em, values, q as usize, window, s).value;
                        debug_assert_eq!(len as usize, skip);
                        for x in args.iter() {
                            acc = em.b.ins().fmul(acc, x.value);
                        }
                        acc
                    }
                    None => em.fold(args, |b, x, y| b.ins().fmul(x, y)),
                };
                match prog.step_factor(p) {
                    Some(k) => em.zero_where(ty, args[k].value, product),
                    None => product,
                }
            }
            Op::Pow => {
                let (base, exp) = (prog.args(p)[0] as usize, prog.args(p)[1] as usize);
                let b = fetch(em, values, base, window, s).value;
                let e = fetch(em, values, exp, window, s).value;
                em.pow_lanes(ty, b, e, prog.num(exp))?
            }
            Op::Func(f) => {
                let x = fetch(em, values, prog.args(p)[0] as usize, window, s).value;
                em.func_lanes(ty, f, x)?
            }
            Op::MatMul
            | Op::Sum(_)
            | Op::Max(_)
            | Op::Broadcast(_)
            | Op::Reshape(_)
            | Op::Transpose
            | Op::LogSoftmax
            | Op::OneHot(_) => {
                return Err(JitError::Tensor(crate::graph::print(
                    g,
                    plan.order[p],
                    crate::graph::Style::Text,
                )));
            }
        })
    };
    let mut args: Vec<Operand> = Vec::new();
    for p in lo..hi {
        // Numbers and inputs are materialized where they are used (`fetch`); absorbed
        // products inside the sums that use them.
        if plan.absorbed[p] || prog.is_leaf(p) {
            continue;
        }
        let window = plan.window[p] as usize;
        let v = match prog.op(p) {
            // Four lanes: one host call for both pairs.
            Op::Func(f) if streams == 2 => {
                let x = [0, 1].map(|s| fetch(&mut em, &values, prog.args(p)[0] as usize, window, s).value);
                em.func_quad(f, x)?
            }
            Op::Pow if streams == 2 => {
                let (base, exp) = (prog.args(p)[0] as usize, prog.args(p)[1] as usize);
                let b = [0, 1].map(|s| fetch(&mut em, &values, base, window, s).value);
                let e = [0, 1].map(|s| fetch(&mut em, &values, exp, window, s).value);
                em.pow_quad(b, e, prog.num(exp))?
            }
            _ => {
                let first = node(&mut em, &values, &mut args, p, window, 0)?;
                let second =
                    if streams == 2 { node(&mut em, &values, &mut args, p, window, 1)? } else { first };
                [first, second]
            }
        };
        for (s, &v) in v.iter().enumerate().take(streams) {
            if plan.spilled(p) {
                em.b.ins().store(flags, v, scratch, plan.slot(p, s));
            }
            for &(k, j) in plan.stores.get(&p).map_or(&[][..], |s| &s[..]) {
                em.b.ins().store(flags, v, params[1 + k], plan.offset(j, s));
            }
        }
        values[p - lo] = Some((window, v));
    }
    if store_outputs {
        // Outputs that are leaves; their stores count as uses after the last node (see
        // `Plan::new`).
        let end = plan.window[plan.order.len()] as usize;
        for (k, group) in plan.groups.iter().enumerate() {
            for (j, id) in group.iter().enumerate() {
                if !matches!(g.op(*id), Op::Num(_) | Op::Const(_) | Op::Var(_)) {
                    continue;
                }
                for s in 0..streams {
                    let v = fetch(&mut em, &values, plan.pos(*id), end, s).value;
                    em.b.ins().store(flags, v, params[1 + k], plan.offset(j, s));
                }
            }
        }
    }
    em.b.ins().return_(&[]);
    let config = em.module.target_config();
    em.b.finalize(config);
    Ok(())
}

/// An argument as `lower_chunk` fetched it, and what it is.
#[derive(Clone, Copy)]
struct Operand {
    value: Value,
    kind: Kind,
}

/// What an [`Operand`] is, in the order in which it is better as the second operand of an
/// arithmetic instruction, the one x86 can read from memory: a number always is (from the
/// constant pool; as the first it is built in a general register and moved over, two
/// instructions), a load emitted for this use sometimes is (Cranelift folds it into its one
/// use when that use's own result is used once), a value in a register never is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Register,
    Load,
    Constant,
}

/// Emits the operations of one function (shared with the loop compiler, `loops.rs`).
pub(super) struct Emitter<'a> {
    pub(super) b: FunctionBuilder<'a>,
    pub(super) module: &'a mut JITModule,
    /// Host functions already declared in this function.
    pub(super) calls: HashMap<&'static str, FuncRef>,
    /// `exp` inline (`math.rs`) rather than a call to the host's `sd_exp`, which computes
    /// the same bits: in loop bodies, run many times, where a call costs more than the rest
    /// of the body. Straight-line code, streamed through once per evaluation, is faster
    /// with the shorter call: inline, a 10⁴-operation random DAG ran 1.4× slower one point
    /// at a time and 1.3× slower in pairs.
    pub(super) inline_exp: bool,
    /// Where the four-lane host functions write their two pairs (one slot per function,
    /// made at the first such call).
    pub(super) quad_out: Option<StackSlot>,
}

impl Emitter<'_> {
    /// The host function `symbol`, declared in this function the first time (`params` is
    /// only read then: every call site after the first costs one lookup).
    fn host(
        &mut self,
        symbol: &'static str,
        params: impl IntoIterator<Item = types::Type>,
        ret: Option<types::Type>,
    ) -> Result<FuncRef, JitError> {
        if let Some(&f) = self.calls.get(symbol) {
            return Ok(f);
        }
        let mut sig = self.module.make_signature();
        sig.params.extend(params.into_iter().map(AbiParam::new));
        sig.returns.extend(ret.map(AbiParam::new));
        let fid = self.module.declare_function(symbol, Linkage::Import, &sig).map_err(codegen)?;
        let f = self.module.declare_func_in_func(fid, self.b.func);
        self.calls.insert(symbol, f);
        Ok(f)
    }

    /// A call of the host function `symbol` over `f64`s, or `f64x2` pairs (in and out alike)
    /// for the two-lane functions.
    pub(super) fn call(&mut self, symbol: &'static str, args: &[Value]) -> Result<Value, JitError> {
        let ty = args.first().map_or(types::F64, |&a| self.b.func.dfg.value_type(a));
        let fref = self.host(symbol, std::iter::repeat_n(ty, args.len()), Some(ty))?;
        let inst = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(inst)[0])
    }

    /// A call of the four-lane host function `symbol` on `args` (pairs): it writes its two
    /// result pairs to a stack slot (two vectors do not come back in registers, see
    /// `runtime::Pair`), which are loaded from there.
    fn call_quad(&mut self, symbol: &'static str, args: &[Value]) -> Result<[Value; 2], JitError> {
        let ptr = self.module.target_config().pointer_type();
        let params = std::iter::repeat_n(types::F64X2, args.len()).chain([ptr]);
        let fref = self.host(symbol, params, None)?;
        let slot = *self.quad_out.get_or_insert_with(|| {
            self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 32, 4))
        });
        let out = self.b.ins().stack_addr(ptr, slot, 0);
        let mut all = args.to_vec();
        all.push(out);
        self.b.ins().call(fref, &all);
        let flags = MemFlagsData::new().with_notrap();
        Ok([0, 16].map(|at| self.b.ins().load(types::F64X2, flags, out, at)))
    }

    /// `f(x)` in the four lanes of the two pairs `x`: one call of the four-lane host
    /// function where there is one, else [`func_lanes`](Self::func_lanes) on each pair.
    pub(super) fn func_quad(&mut self, f: Func, x: [Value; 2]) -> Result<[Value; 2], JitError> {
        match runtime::quad_symbol_of(f) {
            Some(symbol) if !self.func_inline(f) => self.call_quad(symbol, &x),
            _ => Ok([self.func_lanes(types::F64X2, f, x[0])?, self.func_lanes(types::F64X2, f, x[1])?]),
        }
    }

    /// `b^e` in the four lanes of the pairs `b` and `e`, as [`pow_lanes`](Self::pow_lanes)
    /// computes each.
    pub(super) fn pow_quad(
        &mut self,
        b: [Value; 2],
        e: [Value; 2],
        exponent: Option<f64>,
    ) -> Result<[Value; 2], JitError> {
        let inline = exponent.is_some_and(|x| self.pow_is_inline(x));
        match runtime::pow_quad_symbol() {
            Some(symbol) if !inline => self.call_quad(symbol, &[b[0], b[1], e[0], e[1]]),
            _ => Ok([
                self.pow_lanes(types::F64X2, b[0], e[0], exponent)?,
                self.pow_lanes(types::F64X2, b[1], e[1], exponent)?,
            ]),
        }
    }

    /// The number `x` in every lane of `ty` (`F64` or `F64X2`).
    /// `((x0 op x1) op x2) op ...`, with the first two swapped when the first is the better
    /// memory operand ([`Kind`]): `op` must be commutative (`fadd`, `fmul`: exact in either
    /// order), and only the first two commute without changing the rounding.
    fn fold(
        &mut self,
        xs: &[Operand],
        op: impl Fn(&mut FunctionBuilder<'_>, Value, Value) -> Value,
    ) -> Value {
        let (first, rest) = xs.split_first().expect("at least one operand");
        let Some((second, rest)) = rest.split_first() else {
            return first.value;
        };
        let mut acc = if first.kind > second.kind {
            op(&mut self.b, second.value, first.value)
        } else {
            op(&mut self.b, first.value, second.value)
        };
        for x in rest {
            acc = op(&mut self.b, acc, x.value);
        }
        acc
    }

    pub(super) fn constant(&mut self, ty: types::Type, x: f64) -> Value {
        let c = self.b.ins().f64const(x);
        if ty == types::F64 { c } else { self.b.ins().splat(ty, c) }
    }

    /// `f` applied to each lane of `args` (host calls and selects work on scalars); `f`
    /// itself for `F64`.
    pub(super) fn per_lane(
        &mut self,
        ty: types::Type,
        args: &[Value],
        mut f: impl FnMut(&mut Self, &[Value]) -> Result<Value, JitError>,
    ) -> Result<Value, JitError> {
        if ty == types::F64 {
            return f(self, args);
        }
        let mut out = None;
        for lane in 0..ty.lane_count() as u8 {
            let xs: Vec<Value> = args.iter().map(|&a| self.b.ins().extractlane(a, lane)).collect();
            let r = f(self, &xs)?;
            out = Some(match out {
                None => self.b.ins().scalar_to_vector(ty, r),
                Some(v) => self.b.ins().insertlane(v, r, lane),
            });
        }
        Ok(out.expect("a vector has lanes"))
    }

    /// `f(x)` in every lane of `ty`: `abs` as one instruction for all lanes, `exp` inline
    /// where `inline_exp` says so, a host function
    /// as one call for both lanes of a pair where the platform has the pair's version
    /// (`runtime::pair_symbol_of`: the same function per lane), the rest (the selects of
    /// `relu`, `step` and `sign`) lane by lane.
    pub(super) fn func_lanes(&mut self, ty: types::Type, f: Func, x: Value) -> Result<Value, JitError> {
        if self.func_inline(f) {
            return self.func(f, x);
        }
        if ty == types::F64X2
            && let Some(symbol) = runtime::pair_symbol_of(f)
        {
            return self.call(symbol, &[x]);
        }
        self.per_lane(ty, &[x], |em, xs| em.func(f, xs[0]))
    }

    /// Whether [`func`](Self::func) computes `f` inline, in every lane of its argument at
    /// once: `abs` (one instruction), and `exp` where `inline_exp` says so.
    fn func_inline(&self, f: Func) -> bool {
        f == Func::Abs || (f == Func::Exp && self.inline_exp)
    }

    /// `b^e` in every lane of `ty`, exactly as [`Emitter::pow`] (and the interpreter)
    /// computes it.
    pub(super) fn pow_lanes(
        &mut self,
        ty: types::Type,
        b: Value,
        e: Value,
        exponent: Option<f64>,
    ) -> Result<Value, JitError> {
        if ty == types::F64 {
            return self.pow(b, e, exponent);
        }
        match (self.pow_inline(ty, b, exponent), runtime::pow_pair_symbol()) {
            (Some(p), _) => Ok(p),
            (None, Some(symbol)) => self.call(symbol, &[b, e]),
            (None, None) => self.per_lane(ty, &[b, e], |em, xs| em.pow(xs[0], xs[1], exponent)),
        }
    }

    /// `b^e`, exactly as `graph::eval::pow` computes it.
    pub(super) fn pow(&mut self, b: Value, e: Value, exponent: Option<f64>) -> Result<Value, JitError> {
        match self.pow_inline(types::F64, b, exponent) {
            Some(p) => Ok(p),
            None => self.call("sd_pow", &[b, e]),
        }
    }

    /// `b^x` for a numeric exponent that `graph::eval::pow` computes without `powf` (2, -1,
    /// ±0.5, integers up to 64), in the same operations, on `F64` or `F64X2` values; `None`
    /// when the host's `pow` is needed.
    pub(super) fn pow_inline(&mut self, ty: types::Type, b: Value, exponent: Option<f64>) -> Option<Value> {
        let x = exponent?;
        if !self.pow_is_inline(x) {
            return None;
        }
        let one = |em: &mut Self| em.constant(ty, 1.0);
        Some(if x == 2.0 {
            self.b.ins().fmul(b, b)
        } else if x == -1.0 {
            let c = one(self);
            self.b.ins().fdiv(c, b)
        } else if x == 0.5 {
            self.b.ins().sqrt(b)
        } else if x == -0.5 {
            let s = self.b.ins().sqrt(b);
            let c = one(self);
            self.b.ins().fdiv(c, s)
        } else {
            // An integer up to 64 (`pow_is_inline`): `(1/b)^n` for a negative power: the same division for every negative power of
            // `b`, which Cranelift's value numbering then computes once.
            let base = if x < 0.0 {
                let c = one(self);
                self.b.ins().fdiv(c, b)
            } else {
                b
            };
            match crate::jit::square_and_multiply(&mut self.b, base, x.abs() as u32) {
                Some(p) => p,
                None => one(self),
            }
        })
    }

    /// Whether [`pow_inline`](Self::pow_inline) computes `b^x` without the host's `pow`:
    /// 2, -1, ±0.5, integers up to 64.
    fn pow_is_inline(&self, x: f64) -> bool {
        x == 2.0 || x == -1.0 || x.abs() == 0.5 || (x.fract() == 0.0 && x.abs() <= 64.0)
    }

    /// `step == 0 ? 0 : product`, lane by lane for a vector type `ty`: a product with a step
    /// factor that is 0, which must be 0 even where another factor is infinite or NaN.
    pub(super) fn zero_where(&mut self, ty: types::Type, step: Value, product: Value) -> Value {
        let b = &mut self.b;
        if ty == types::F64 {
            let zero = b.ins().f64const(0.0);
            let off = b.ins().fcmp(FloatCC::Equal, step, zero);
            b.ins().select(off, zero, product)
        } else {
            let zero = b.ins().f64const(0.0);
            let zero = b.ins().splat(ty, zero);
            let off = b.ins().fcmp(FloatCC::Equal, step, zero);
            let mask = b.ins().bitcast(ty, MemFlagsData::new(), off);
            b.ins().bitselect(mask, zero, product)
        }
    }

    pub(super) fn func(&mut self, f: Func, x: Value) -> Result<Value, JitError> {
        let b = &mut self.b;
        Ok(match f {
            Func::Abs => b.ins().fabs(x),
            Func::Exp if self.inline_exp => super::math::exp(b, x),
            Func::Relu => {
                // x if x > 0 or x is NaN, else 0 (as the interpreter).
                let zero = b.ins().f64const(0.0);
                let keep = b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, x, zero);
                b.ins().select(keep, x, zero)
            }
            Func::Step => {
                let zero = b.ins().f64const(0.0);
                let one = b.ins().f64const(1.0);
                let pos = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let s = b.ins().select(pos, one, zero);
                let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
                b.ins().select(nan, x, s)
            }
            Func::Sign => {
                let zero = b.ins().f64const(0.0);
                let one = b.ins().f64const(1.0);
                let minus = b.ins().f64const(-1.0);
                let pos = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let s = b.ins().select(pos, one, x);
                let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
                b.ins().select(neg, minus, s)
            }
            other => match runtime::symbol_of(other) {
                Some(symbol) => self.call(symbol, &[x])?,
                None => return Err(JitError::Codegen(format!("no host function for {}", other.name()))),
            },
        })
    }
}
