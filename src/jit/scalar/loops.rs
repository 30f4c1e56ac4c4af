//! One loop per class: a template's value and partials for every member, summed and
//! scattered.
//!
//! Owns [`ClassLoop`] (what one loop reads and writes) and [`compile`], which turns loops
//! into native functions of the signature
//! `fn(inputs: *const f64, grad: *mut f64, ext: *const f64, ext_adj: *mut f64, sum: *mut f64)`.
//! It knows nothing of where the classes came from (`graph/structure.rs`) or how a loop's
//! results are combined with the rest of the function (`program.rs`).
//!
//! The code for member `k`:
//!
//! 1. **Operands.** Each slot of the template is loaded from where member `k` keeps it: an
//!    input `inputs[a*k + b]` (an affine index rule, found when the members' inputs are
//!    evenly spaced) or `inputs[table[k]]`; a number `numbers[k]`; an external value
//!    `ext[table[k]]`. A slot that is the same for every member is loaded once, before the
//!    loop, and a number that is the same for every member is a literal in the template.
//! 2. **The template**: its nodes in id order (a topological order), each computed as the
//!    straight-line compiler computes it (`Emitter`: left folds, square-and-multiply, the
//!    same host functions; `exp` inline, `math.rs`, which computes what the host's `exp`
//!    computes), so each member's value is the term's value to the bit.
//! 3. **Results.** The value is added to a running sum; each partial is added to the
//!    gradient entry (or external adjoint) of its slot, or, for a slot the same in every
//!    member, to a running sum written once after the loop.
//!
//! Two members run per iteration, in `f64x2` registers (one host call for both, see
//! `Emitter::func_lanes`), and an
//! odd last one alone; each lane performs its member's operations, so the per-member results
//! are those of the scalar code. The gradient entries are updated lane by lane, in member
//! order. The running sums have one lane per parity of member, added together after the
//! loop: the order of additions across members changes, nothing else.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Module, default_libcall_names};
use hashbrown::HashMap;

use super::lower::{Emitter, JitError, Tier, codegen, make_isa};
use crate::graph::{Graph, Id, Op};
use crate::jit::runtime;

/// Where a slot's array lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Array {
    /// The function's inputs (and the gradient, for partials).
    Inputs,
    /// The external values (and their adjoints, for partials).
    External,
}

/// Where member `k` finds one slot.
#[derive(Debug, Clone)]
pub enum Source {
    /// `array[index]` for every member.
    Same(Array, u32),
    /// `array[step*k + first]`.
    Affine(Array, i64, i64),
    /// `array[table[k]]`.
    Table(Array, Vec<u32>),
    /// `numbers[k]` (no partial).
    Numbers(Vec<f64>),
}

impl Source {
    /// The rule for indices `column` into `array`: the same, affine, or a table.
    pub fn of_indices(array: Array, column: &[u32]) -> Source {
        let first = column[0] as i64;
        if column.iter().all(|&c| c == column[0]) {
            return Source::Same(array, column[0]);
        }
        let step = column.get(1).map_or(0, |&c| c as i64 - first);
        if column.iter().enumerate().all(|(k, &c)| c as i64 == first + step * k as i64) {
            Source::Affine(array, step, first)
        } else {
            Source::Table(array, column.to_vec())
        }
    }

    /// The smallest and largest input index members `0..members` read, `None` for a source
    /// that reads no input (externals, numbers).
    pub fn input_span(&self, members: usize) -> Option<(i64, i64)> {
        match self {
            Source::Same(Array::Inputs, i) => Some((i64::from(*i), i64::from(*i))),
            Source::Affine(Array::Inputs, step, first) => {
                let last = first + step * (members as i64 - 1);
                Some((*first.min(&last), *first.max(&last)))
            }
            Source::Table(Array::Inputs, t) => {
                let (lo, hi) = (t.iter().min()?, t.iter().max()?);
                Some((i64::from(*lo), i64::from(*hi)))
            }
            _ => None,
        }
    }

    /// The index member `k` reads (`None` for numbers).
    pub fn index(&self, k: usize) -> Option<u32> {
        match self {
            Source::Same(_, i) => Some(*i),
            Source::Affine(_, step, first) => Some((first + step * k as i64) as u32),
            Source::Table(_, t) => Some(t[k]),
            Source::Numbers(_) => None,
        }
    }
}

/// One class as a loop: a template graph over slot variables, and where the slots live.
pub struct ClassLoop {
    /// The template: the member's value `value`, and `partials[s]` for the slots that have
    /// one (variables and externals).
    pub graph: Graph,
    pub value: Id,
    pub partials: Vec<(usize, Id)>,
    /// Second partials `(a, b, node)`, added to entry `row_a * width + row_b` of the
    /// output (a Hessian's rows; `a` and `b` are input slots), or, where `pair_at` is not
    /// empty, to the entry `pair_at[p].0[k]` of a sparse Hessian's values for member `k`,
    /// times `pair_at[p].1[k]` when there is such a column (2 where two slots of one
    /// member read one variable, so that the lower triangle's diagonal gets both). A table
    /// in arithmetic progression (a banded pattern's) is compiled as its rule, not read.
    pub pairs: Vec<(usize, usize, Id)>,
    pub width: usize,
    pub pair_at: Vec<(Vec<u32>, Option<Vec<f64>>)>,
    /// Where member `k`'s value is stored in the output (a vector function's classes of like
    /// outputs), instead of being added to the sum; empty for a sum.
    pub value_at: Vec<u32>,
    /// The slot variables of `graph`, in slot order (`None` for a literal number).
    pub slot_vars: Vec<Option<Id>>,
    pub sources: Vec<Source>,
    pub members: usize,
}

/// Compiled loops: entry points in the order of the classes, and the module that owns them.
pub struct Loops {
    module: Option<JITModule>,
    pub entries: Vec<*const u8>,
    /// Tables the code reads through baked-in addresses: they live as long as the code.
    _tables: Vec<Vec<u32>>,
    _numbers: Vec<Vec<f64>>,
    pub ir: String,
    /// Machine code and constants of the loops, in bytes.
    pub bytes: usize,
}

impl Drop for Loops {
    fn drop(&mut self) {
        self.entries.clear();
        if let Some(m) = self.module.take() {
            // SAFETY: the entry points into this module were just dropped, and no copies of
            // them are handed out.
            unsafe { m.free_memory() };
        }
    }
}

/// The signature of a compiled loop.
pub type LoopFn = unsafe extern "C" fn(*const f64, *mut f64, *const f64, *mut f64, *mut f64);

/// Compiles every group of classes into one loop (the classes of a group have the same
/// number of members, and member `k` of each is computed in iteration `k`), all in one
/// module. Entry points are in group order.
pub fn compile(groups: &mut [Vec<ClassLoop>], keep_ir: bool) -> Result<Loops, JitError> {
    let mut jb = JITBuilder::with_isa(make_isa(Tier::Small)?, default_libcall_names());
    for (name, ptr) in runtime::symbols() {
        jb.symbol(name, ptr);
    }
    let mut module = JITModule::new(jb);
    let mut ctx = module.make_context();
    let mut fbc = FunctionBuilderContext::new();
    let mut ids = Vec::new();
    let mut bytes = 0;
    let mut ir = String::new();
    let mut tables = Vec::new();
    let mut numbers = Vec::new();
    let ptr = module.target_config().pointer_type();
    for (c, group) in groups.iter_mut().enumerate() {
        for _ in 0..5 {
            ctx.func.signature.params.push(AbiParam::new(ptr));
        }
        let fid = module.declare_anonymous_function(&ctx.func.signature).map_err(codegen)?;
        // The tables move into `Loops`; their heap buffers (and so the addresses baked into
        // the code) stay where they are.
        let addresses: Vec<Vec<i64>> = group
            .iter()
            .map(|l| {
                l.sources
                    .iter()
                    .map(|s| match s {
                        Source::Table(_, t) => t.as_ptr() as i64,
                        Source::Numbers(v) => v.as_ptr() as i64,
                        _ => 0,
                    })
                    .collect()
            })
            .collect();
        let pair_addresses: Vec<Vec<(i64, i64)>> = group
            .iter()
            .map(|l| {
                l.pair_at
                    .iter()
                    .map(|(t, w)| (t.as_ptr() as i64, w.as_ref().map_or(0, |w| w.as_ptr() as i64)))
                    .collect()
            })
            .collect();
        let value_addresses: Vec<i64> = group
            .iter()
            .map(|l| if l.value_at.is_empty() { 0 } else { l.value_at.as_ptr() as i64 })
            .collect();
        emit(group, &addresses, &pair_addresses, &value_addresses, &mut module, &mut ctx.func, &mut fbc)?;
        if keep_ir {
            let members = group.first().map_or(0, |l| l.members);
            ir += &format!(
                "; loop {c}: {} classes of {members} members\n{}\n",
                group.len(),
                ctx.func.display()
            );
        }
        module.define_function(fid, &mut ctx).map_err(|e| codegen(format!("{e:?}")))?;
        bytes += super::lower::code_size(&ctx);
        module.clear_context(&mut ctx);
        ids.push(fid);
        for l in group.iter_mut() {
            for s in std::mem::take(&mut l.sources) {
                match s {
                    Source::Table(_, t) => tables.push(t),
                    Source::Numbers(v) => numbers.push(v),
                    _ => {}
                }
            }
            for (t, w) in std::mem::take(&mut l.pair_at) {
                tables.push(t);
                numbers.extend(w);
            }
            tables.push(std::mem::take(&mut l.value_at));
        }
    }
    module.finalize_definitions().map_err(codegen)?;
    let entries = ids.iter().map(|&id| module.get_finalized_function(id)).collect();
    Ok(Loops { module: Some(module), entries, _tables: tables, _numbers: numbers, ir, bytes })
}

/// What every iteration of a group's loop reads: the arrays, and the slots hoisted out.
struct Frame<'a> {
    group: &'a [ClassLoop],
    addresses: &'a [Vec<i64>],
    /// Per class and pair: the addresses of its entry table and weight column (0 if none).
    pair_addresses: &'a [Vec<(i64, i64)>],
    /// Per class: the address of its table of output positions (0 for a sum).
    value_addresses: &'a [i64],
    inputs: Value,
    grad: Value,
    ext: Value,
    ext_adj: Value,
    /// Scalar values of the slots the same in every member, per class and slot.
    hoisted: Vec<Vec<Option<Value>>>,
    /// Array entries with partials that are the same in every member (carried in registers).
    carried: Vec<(Array, u32)>,
}

impl Frame<'_> {
    fn base(&self, a: Array, read: bool) -> Value {
        match (a, read) {
            (Array::Inputs, true) => self.inputs,
            (Array::Inputs, false) => self.grad,
            (Array::External, true) => self.ext,
            (Array::External, false) => self.ext_adj,
        }
    }
}

/// Emits one loop over the classes of `group` (see the module doc): two members per
/// iteration in `f64x2` registers, then the last member alone when their number is odd.
fn emit(
    group: &[ClassLoop],
    addresses: &[Vec<i64>],
    pair_addresses: &[Vec<(i64, i64)>],
    value_addresses: &[i64],
    module: &mut JITModule,
    func: &mut cranelift_codegen::ir::Function,
    fbc: &mut FunctionBuilderContext,
) -> Result<(), JitError> {
    let members = group[0].members;
    let mut b = FunctionBuilder::new(func, fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    let sum_ptr = p[4];
    let mut em = Emitter { b, module, calls: HashMap::new(), inline_exp: true, quad_out: None };
    let flags = MemFlagsData::trusted();
    let mut frame = Frame {
        group,
        addresses,
        pair_addresses,
        value_addresses,
        inputs: p[0],
        grad: p[1],
        ext: p[2],
        ext_adj: p[3],
        hoisted: Vec::new(),
        carried: Vec::new(),
    };
    // Before the loop: slots the same in every member.
    for l in group {
        let mut h = vec![None; l.sources.len()];
        for (s, src) in l.sources.iter().enumerate() {
            if let (Source::Same(a, i), Some(_)) = (src, l.slot_vars[s]) {
                h[s] = Some(em.b.ins().load(types::F64, READ_ONLY, frame.base(*a, true), 8 * *i as i32));
            }
        }
        frame.hoisted.push(h);
    }
    for (c, l) in group.iter().enumerate() {
        for (s, _) in &l.partials {
            if let (Source::Same(a, i), Some(_)) = (&l.sources[*s], frame.hoisted[c][*s])
                && !frame.carried.contains(&(*a, *i))
            {
                frame.carried.push((*a, *i));
            }
        }
    }
    let start_sum = em.b.ins().load(types::F64, flags, sum_ptr, 0);
    let zero = em.b.ins().f64const(0.0);
    let zeros = vec![zero; frame.carried.len()];
    let pairs = members / 2;
    let (mut sum, mut carried) = (start_sum, zeros.clone());
    if pairs > 0 {
        let vzero = em.b.ins().splat(types::F64X2, zero);
        let (vsum, vcarried) = run(&mut em, &frame, 2, 0, 2 * pairs, vzero, vec![vzero; zeros.len()])?;
        let lane = |em: &mut Emitter, v: Value, l: u8| em.b.ins().extractlane(v, l);
        let (s0, s1) = (lane(&mut em, vsum, 0), lane(&mut em, vsum, 1));
        let t = em.b.ins().fadd(sum, s0);
        sum = em.b.ins().fadd(t, s1);
        for (c, v) in vcarried.into_iter().enumerate() {
            let (a, b) = (lane(&mut em, v, 0), lane(&mut em, v, 1));
            carried[c] = em.b.ins().fadd(a, b);
        }
    }
    if members % 2 == 1 {
        (sum, carried) = run(&mut em, &frame, 1, members - 1, members, sum, carried)?;
    }
    em.b.ins().store(flags, sum, sum_ptr, 0);
    for (c, &(a, i)) in frame.carried.iter().enumerate() {
        let at = frame.base(a, false);
        let old = em.b.ins().load(types::F64, flags, at, 8 * i as i32);
        let new = em.b.ins().fadd(old, carried[c]);
        em.b.ins().store(flags, new, at, 8 * i as i32);
    }
    em.b.ins().return_(&[]);
    let config = em.module.target_config();
    em.b.finalize(config);
    Ok(())
}

/// Inputs and externals are not written while a loop runs. No alignment is promised: a
/// vector load of two inputs starts at any input.
const READ_ONLY: MemFlagsData = MemFlagsData::new().with_notrap().with_readonly().with_can_move();
/// Gradient and adjoint entries.
const WRITE: MemFlagsData = MemFlagsData::new().with_notrap();

/// Emits the loop over members `from..to`, `lanes` (1 or 2) at a time, starting from `sum`
/// and the `carried` sums (scalars or vectors, as `lanes` says); returns them after the
/// loop.
fn run(
    em: &mut Emitter,
    frame: &Frame,
    lanes: u8,
    from: usize,
    to: usize,
    sum: Value,
    carried: Vec<Value>,
) -> Result<(Value, Vec<Value>), JitError> {
    let vector = lanes == 2;
    let ty = if vector { types::F64X2 } else { types::F64 };
    // Hoisted slots, as this loop's values.
    let hoisted: Vec<Vec<Option<Value>>> = frame
        .hoisted
        .iter()
        .map(|h| h.iter().map(|v| v.map(|v| if vector { em.b.ins().splat(ty, v) } else { v })).collect())
        .collect();
    let header = em.b.create_block();
    let exit = em.b.create_block();
    em.b.append_block_param(header, types::I64);
    em.b.append_block_param(header, ty);
    em.b.append_block_param(exit, ty);
    for _ in &carried {
        em.b.append_block_param(header, ty);
        em.b.append_block_param(exit, ty);
    }
    let k0 = em.b.ins().iconst(types::I64, from as i64);
    let mut init: Vec<BlockArg> = vec![k0.into(), sum.into()];
    init.extend(carried.iter().map(|&v| BlockArg::from(v)));
    em.b.ins().jump(header, &init);
    em.b.switch_to_block(header);
    let hp = em.b.block_params(header).to_vec();
    let k = hp[0];
    let mut sum = hp[1];
    let mut carried_now: Vec<Value> = hp[2..].to_vec();
    // Partials to indexed entries, by the rule of the entry: partials of one entry in one
    // member are added together before the entry is updated once.
    let mut scatter: Vec<(String, Vec<Value>, Value)> = Vec::new();
    for (c, l) in frame.group.iter().enumerate() {
        let g = &l.graph;
        // Operands of these members, and the address of each indexed slot per lane.
        let mut slot_value: Vec<Option<Value>> = hoisted[c].clone();
        let mut slot_addr: Vec<Option<(String, Vec<Value>)>> = vec![None; l.sources.len()];
        // Byte offsets and rule of every input slot, per lane (for second partials).
        let mut slot_offset: Vec<Option<(String, Vec<Value>)>> = vec![None; l.sources.len()];
        for (s, src) in l.sources.iter().enumerate() {
            if l.slot_vars[s].is_none() {
                continue;
            }
            let (array, rule, contiguous) = match src {
                Source::Same(a, i) => {
                    if !l.pairs.is_empty() && *a == Array::Inputs {
                        let o = em.b.ins().iconst(types::I64, 8 * *i as i64);
                        slot_offset[s] = Some((format!("same {i}"), vec![o; lanes as usize]));
                    }
                    continue;
                }
                Source::Affine(a, step, first) => (Some(*a), format!("{a:?} {step} {first}"), *step == 1),
                Source::Table(a, t) => (Some(*a), format!("{a:?} @{:x}", t.as_ptr() as usize), false),
                Source::Numbers(_) => (None, String::new(), false),
            };
            // Byte offset into the slot's array (or the address of the number) of each lane.
            let mut offsets = Vec::new();
            for lane in 0..lanes {
                let kl = if lane == 0 { k } else { em.b.ins().iadd_imm_s(k, lane as i64) };
                offsets.push(match src {
                    Source::Affine(_, step, first) => {
                        let t = em.b.ins().imul_imm_s(kl, 8 * step);
                        em.b.ins().iadd_imm_s(t, 8 * first)
                    }
                    Source::Table(..) => {
                        let t = em.b.ins().imul_imm_s(kl, 4);
                        let at = em.b.ins().iadd_imm_s(t, frame.addresses[c][s]);
                        let i = em.b.ins().uload32(READ_ONLY, at, 0);
                        em.b.ins().ishl_imm_s(i, 3)
                    }
                    Source::Numbers(_) => {
                        let t = em.b.ins().imul_imm_s(kl, 8);
                        em.b.ins().iadd_imm_s(t, frame.addresses[c][s])
                    }
                    Source::Same(..) => unreachable!("skipped above"),
                });
            }
            let Some(a) = array else {
                slot_value[s] = Some(gather(em, lanes, &offsets));
                continue;
            };
            let read: Vec<Value> = offsets.iter().map(|&o| em.b.ins().iadd(frame.base(a, true), o)).collect();
            slot_value[s] = Some(if contiguous && vector {
                em.b.ins().load(ty, READ_ONLY, read[0], 0)
            } else {
                gather(em, lanes, &read)
            });
            let write: Vec<Value> =
                offsets.iter().map(|&o| em.b.ins().iadd(frame.base(a, false), o)).collect();
            if !l.pairs.is_empty() && a == Array::Inputs {
                slot_offset[s] = Some((rule.clone(), offsets.clone()));
            }
            slot_addr[s] = Some((rule, write));
        }
        // The template.
        let var_slot: HashMap<Id, usize> =
            l.slot_vars.iter().enumerate().filter_map(|(s, v)| v.map(|v| (v, s))).collect();
        let roots: Vec<Id> = std::iter::once(l.value)
            .chain(l.partials.iter().map(|p| p.1))
            .chain(l.pairs.iter().map(|p| p.2))
            .collect();
        let mut values: HashMap<Id, Value> = HashMap::new();
        for id in g.reachable(&roots) {
            let args: Vec<Value> = g.args(id).iter().map(|a| values[a]).collect();
            let v = match g.op(id) {
                Op::Num(bits) => em.constant(ty, f64::from_bits(bits)),
                Op::Const(c) => em.constant(ty, c.value()),
                Op::Var(_) => slot_value[var_slot[&id]].expect("every slot variable has a value"),
                Op::Add => args[1..].iter().fold(args[0], |acc, &x| em.b.ins().fadd(acc, x)),
                Op::Mul => match *g.args(id) {
                    // exactly (-1)*x
                    [a, x] if g.is_num(a, -1.0) => em.b.ins().fneg(values[&x]),
                    [x, a] if g.is_num(a, -1.0) => em.b.ins().fneg(values[&x]),
                    _ => {
                        let product = args[1..].iter().fold(args[0], |acc, &x| em.b.ins().fmul(acc, x));
                        match super::lower::step_factor(g, id) {
                            Some(k) => em.zero_where(ty, args[k], product),
                            None => product,
                        }
                    }
                },
                Op::Pow => em.pow_lanes(ty, args[0], args[1], g.as_num(g.args(id)[1]))?,
                Op::Func(f) => em.func_lanes(ty, f, args[0])?,
                _ => return Err(JitError::Tensor(crate::graph::print(g, id, crate::graph::Style::Text))),
            };
            values.insert(id, v);
        }
        // Results.
        if frame.value_addresses[c] != 0 {
            // Each member's value to its own output, lane by lane.
            let v = values[&l.value];
            for lane in 0..lanes {
                let kl = if lane == 0 { k } else { em.b.ins().iadd_imm_s(k, lane as i64) };
                let t = em.b.ins().imul_imm_s(kl, 4);
                let t = em.b.ins().iadd_imm_s(t, frame.value_addresses[c]);
                let i = em.b.ins().uload32(READ_ONLY, t, 0);
                let off = em.b.ins().ishl_imm_s(i, 3);
                let at = em.b.ins().iadd(frame.grad, off);
                let x = if vector { em.b.ins().extractlane(v, lane) } else { v };
                em.b.ins().store(WRITE, x, at, 0);
            }
        } else {
            sum = em.b.ins().fadd(sum, values[&l.value]);
        }
        for (s, d) in &l.partials {
            if let Some((rule, at)) = &slot_addr[*s] {
                match scatter.iter_mut().find(|(r, ..)| r == rule) {
                    Some((.., p)) => *p = em.b.ins().fadd(*p, values[d]),
                    None => scatter.push((rule.clone(), at.clone(), values[d])),
                }
            } else if let Source::Same(a, i) = l.sources[*s] {
                let c = frame.carried.iter().position(|&e| e == (a, i)).expect("carried above");
                carried_now[c] = em.b.ins().fadd(carried_now[c], values[d]);
            }
        }
        for (p, &(a, b, d)) in l.pairs.iter().enumerate() {
            if !l.pair_at.is_empty() {
                // A sparse entry per member, from the pair's table (never merged with
                // another pair's: the tables differ).
                let (table, weights) = frame.pair_addresses[c][p];
                // Entry positions in arithmetic progression (a banded pattern's usually
                // are) are computed, not read from the table.
                let rule = match Source::of_indices(Array::Inputs, &l.pair_at[p].0) {
                    Source::Same(_, i) => Some((i64::from(i), 0)),
                    Source::Affine(_, step, first) => Some((first, step)),
                    _ => None,
                };
                let mut at = Vec::new();
                let mut weight = Vec::new();
                for lane in 0..lanes {
                    let kl = if lane == 0 { k } else { em.b.ins().iadd_imm_s(k, lane as i64) };
                    let off = match rule {
                        Some((first, step)) => {
                            let t = em.b.ins().imul_imm_s(kl, 8 * step);
                            em.b.ins().iadd_imm_s(t, 8 * first)
                        }
                        None => {
                            let t = em.b.ins().imul_imm_s(kl, 4);
                            let t = em.b.ins().iadd_imm_s(t, table);
                            let i = em.b.ins().uload32(READ_ONLY, t, 0);
                            em.b.ins().ishl_imm_s(i, 3)
                        }
                    };
                    at.push(em.b.ins().iadd(frame.grad, off));
                    if weights != 0 {
                        let t = em.b.ins().imul_imm_s(kl, 8);
                        weight.push(em.b.ins().iadd_imm_s(t, weights));
                    }
                }
                let mut v = values[&d];
                if !weight.is_empty() {
                    let w = gather(em, lanes, &weight);
                    v = em.b.ins().fmul(v, w);
                }
                scatter.push((format!("sparse {c} {p}"), at, v));
                continue;
            }
            let (Some((ra, oa)), Some((rb, ob))) = (&slot_offset[a], &slot_offset[b]) else {
                return Err(JitError::Codegen("a second partial of a slot that is not an input".into()));
            };
            let rule = format!("pair {ra} | {rb}");
            match scatter.iter_mut().find(|(r, ..)| *r == rule) {
                Some((.., p)) => *p = em.b.ins().fadd(*p, values[&d]),
                None => {
                    let at: Vec<Value> = oa
                        .iter()
                        .zip(ob)
                        .map(|(&x, &y)| {
                            let row = em.b.ins().imul_imm_s(x, l.width as i64);
                            let off = em.b.ins().iadd(row, y);
                            em.b.ins().iadd(frame.grad, off)
                        })
                        .collect();
                    scatter.push((rule, at, values[&d]));
                }
            }
        }
    }
    // Lane by lane, in order: two members may update one entry, and a vector update of two
    // neighbouring entries would make the next, overlapping one wait for its store (a
    // failed store-to-load forward).
    for (_, at, p) in scatter {
        for (lane, &a) in at.iter().enumerate() {
            let x = if vector { em.b.ins().extractlane(p, lane as u8) } else { p };
            let old = em.b.ins().load(types::F64, WRITE, a, 0);
            let new = em.b.ins().fadd(old, x);
            em.b.ins().store(WRITE, new, a, 0);
        }
    }
    let next = em.b.ins().iadd_imm_s(k, lanes as i64);
    let more = em.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, to as i64);
    let mut back: Vec<BlockArg> = vec![next.into(), sum.into()];
    back.extend(carried_now.iter().map(|&v| BlockArg::from(v)));
    let mut out: Vec<BlockArg> = vec![sum.into()];
    out.extend(carried_now.iter().map(|&v| BlockArg::from(v)));
    em.b.ins().brif(more, header, &back, exit, &out);
    em.b.seal_block(header);
    em.b.switch_to_block(exit);
    em.b.seal_block(exit);
    let ep = em.b.block_params(exit).to_vec();
    Ok((ep[0], ep[1..].to_vec()))
}

/// The numbers at `addresses`, one per lane.
fn gather(em: &mut Emitter, lanes: u8, addresses: &[Value]) -> Value {
    let first = em.b.ins().load(types::F64, READ_ONLY, addresses[0], 0);
    if lanes == 1 {
        return first;
    }
    let v = em.b.ins().scalar_to_vector(types::F64X2, first);
    let second = em.b.ins().load(types::F64, READ_ONLY, addresses[1], 0);
    em.b.ins().insertlane(v, second, 1)
}
