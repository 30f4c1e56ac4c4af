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
//!    same host functions), so each member's value is the term's value to the bit.
//! 3. **Results.** The value is added to a running sum; each partial is added to the
//!    gradient entry (or external adjoint) of its slot, or, for a slot the same in every
//!    member, to a running sum written once after the loop.
//!
//! Members are visited in order, so the sums over members are left folds in member order.

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
}

/// One class as a loop: a template graph over slot variables, and where the slots live.
pub struct ClassLoop {
    /// The template: the member's value `value`, and `partials[s]` for the slots that have
    /// one (variables and externals).
    pub graph: Graph,
    pub value: Id,
    pub partials: Vec<(usize, Id)>,
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
        emit(group, &addresses, &mut module, &mut ctx.func, &mut fbc)?;
        if keep_ir {
            let members = group.first().map_or(0, |l| l.members);
            ir += &format!(
                "; loop {c}: {} classes of {members} members\n{}\n",
                group.len(),
                ctx.func.display()
            );
        }
        module.define_function(fid, &mut ctx).map_err(|e| codegen(format!("{e:?}")))?;
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
        }
    }
    module.finalize_definitions().map_err(codegen)?;
    let entries = ids.iter().map(|&id| module.get_finalized_function(id)).collect();
    Ok(Loops { module: Some(module), entries, _tables: tables, _numbers: numbers, ir })
}

/// Emits one loop over the classes of `group` (see the module doc).
fn emit(
    group: &[ClassLoop],
    addresses: &[Vec<i64>],
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
    let (inputs, grad, ext, ext_adj, sum_ptr) = (p[0], p[1], p[2], p[3], p[4]);
    let mut em = Emitter { b, module, calls: HashMap::new() };
    let flags = MemFlagsData::trusted();
    // Inputs and externals are not written while the loop runs.
    let read_only = MemFlagsData::trusted().with_readonly().with_can_move();
    let base = |a: Array, read: bool| match (a, read) {
        (Array::Inputs, true) => inputs,
        (Array::Inputs, false) => grad,
        (Array::External, true) => ext,
        (Array::External, false) => ext_adj,
    };
    // Before the loop: slots the same in every member.
    let mut hoisted: Vec<Vec<Option<Value>>> = Vec::new();
    for l in group {
        let mut h = vec![None; l.sources.len()];
        for (s, src) in l.sources.iter().enumerate() {
            if let (Source::Same(a, i), Some(_)) = (src, l.slot_vars[s]) {
                h[s] = Some(em.b.ins().load(types::F64, read_only, base(*a, true), 8 * *i as i32));
            }
        }
        hoisted.push(h);
    }
    // Loop-carried: the member index, the value's sum, and one sum per array entry that is
    // the same in every member and has partials (several partials to one entry share it).
    let mut carried: Vec<(Array, u32)> = Vec::new();
    for (c, l) in group.iter().enumerate() {
        for (s, _) in &l.partials {
            if let (Source::Same(a, i), Some(_)) = (&l.sources[*s], hoisted[c][*s])
                && !carried.contains(&(*a, *i))
            {
                carried.push((*a, *i));
            }
        }
    }
    let header = em.b.create_block();
    let exit = em.b.create_block();
    em.b.append_block_param(header, types::I64);
    em.b.append_block_param(header, types::F64);
    for _ in &carried {
        em.b.append_block_param(header, types::F64);
        em.b.append_block_param(exit, types::F64);
    }
    em.b.append_block_param(exit, types::F64);
    let zero_i = em.b.ins().iconst(types::I64, 0);
    let start_sum = em.b.ins().load(types::F64, flags, sum_ptr, 0);
    let zero = em.b.ins().f64const(0.0);
    let mut init: Vec<BlockArg> = vec![zero_i.into(), start_sum.into()];
    init.extend(carried.iter().map(|_| BlockArg::from(zero)));
    em.b.ins().jump(header, &init);
    em.b.switch_to_block(header);
    let hp = em.b.block_params(header).to_vec();
    let k = hp[0];
    let mut sum = hp[1];
    let mut carried_now: Vec<Value> = hp[2..].to_vec();
    // Partials to indexed entries, by the rule of the entry: partials of one entry in one
    // member are added together before the entry is updated once.
    let mut scatter: Vec<(String, Value, Value)> = Vec::new();
    for (c, l) in group.iter().enumerate() {
        let g = &l.graph;
        // Operands of member k, and the address of each indexed slot (for its partial).
        let mut slot_value: Vec<Option<Value>> = hoisted[c].clone();
        let mut slot_addr: Vec<Option<(String, Value)>> = vec![None; l.sources.len()];
        for (s, src) in l.sources.iter().enumerate() {
            if l.slot_vars[s].is_none() {
                continue;
            }
            let offset = match src {
                Source::Same(..) => continue,
                Source::Affine(_, step, first) => {
                    let t = em.b.ins().imul_imm_s(k, 8 * step);
                    em.b.ins().iadd_imm_s(t, 8 * first)
                }
                Source::Table(..) => {
                    let t = em.b.ins().imul_imm_s(k, 4);
                    let at = em.b.ins().iadd_imm_s(t, addresses[c][s]);
                    let i = em.b.ins().uload32(read_only, at, 0);
                    em.b.ins().ishl_imm_s(i, 3)
                }
                Source::Numbers(_) => {
                    let t = em.b.ins().imul_imm_s(k, 8);
                    let at = em.b.ins().iadd_imm_s(t, addresses[c][s]);
                    slot_value[s] = Some(em.b.ins().load(types::F64, read_only, at, 0));
                    continue;
                }
            };
            let (a, rule) = match src {
                Source::Affine(a, step, first) => (*a, format!("{a:?} {step} {first}")),
                Source::Table(a, t) => (*a, format!("{a:?} @{:x}", t.as_ptr() as usize)),
                _ => unreachable!("handled above"),
            };
            let read = em.b.ins().iadd(base(a, true), offset);
            slot_value[s] = Some(em.b.ins().load(types::F64, read_only, read, 0));
            slot_addr[s] = Some((rule, em.b.ins().iadd(base(a, false), offset)));
        }
        // The template.
        let var_slot: HashMap<Id, usize> =
            l.slot_vars.iter().enumerate().filter_map(|(s, v)| v.map(|v| (v, s))).collect();
        let roots: Vec<Id> = std::iter::once(l.value).chain(l.partials.iter().map(|p| p.1)).collect();
        let mut values: HashMap<Id, Value> = HashMap::new();
        for id in g.reachable(&roots) {
            let args: Vec<Value> = g.args(id).iter().map(|a| values[a]).collect();
            let v = match g.op(id) {
                Op::Num(bits) => em.b.ins().f64const(f64::from_bits(bits)),
                Op::Const(c) => em.b.ins().f64const(c.value()),
                Op::Var(_) => slot_value[var_slot[&id]].expect("every slot variable has a value"),
                Op::Add => args[1..].iter().fold(args[0], |acc, &x| em.b.ins().fadd(acc, x)),
                Op::Mul => match *g.args(id) {
                    // exactly (-1)*x
                    [a, x] if g.is_num(a, -1.0) => em.b.ins().fneg(values[&x]),
                    [x, a] if g.is_num(a, -1.0) => em.b.ins().fneg(values[&x]),
                    _ => args[1..].iter().fold(args[0], |acc, &x| em.b.ins().fmul(acc, x)),
                },
                Op::Pow => em.pow(args[0], args[1], g.as_num(g.args(id)[1]))?,
                Op::Func(f) => em.func(f, args[0])?,
                _ => return Err(JitError::Tensor(crate::graph::print(g, id, crate::graph::Style::Text))),
            };
            values.insert(id, v);
        }
        // Results.
        sum = em.b.ins().fadd(sum, values[&l.value]);
        for (s, d) in &l.partials {
            if let Some((rule, at)) = &slot_addr[*s] {
                match scatter.iter_mut().find(|(r, _, _)| r == rule) {
                    Some((_, _, p)) => *p = em.b.ins().fadd(*p, values[d]),
                    None => scatter.push((rule.clone(), *at, values[d])),
                }
            } else if let Source::Same(a, i) = l.sources[*s] {
                let c = carried.iter().position(|&e| e == (a, i)).expect("carried above");
                carried_now[c] = em.b.ins().fadd(carried_now[c], values[d]);
            }
        }
    }
    for (_, at, p) in scatter {
        let old = em.b.ins().load(types::F64, flags, at, 0);
        let new = em.b.ins().fadd(old, p);
        em.b.ins().store(flags, new, at, 0);
    }
    let next = em.b.ins().iadd_imm_s(k, 1);
    let more = em.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, members as i64);
    let mut back: Vec<BlockArg> = vec![next.into(), sum.into()];
    back.extend(carried_now.iter().map(|&v| BlockArg::from(v)));
    let mut out: Vec<BlockArg> = carried_now.iter().map(|&v| BlockArg::from(v)).collect();
    out.push(sum.into());
    em.b.ins().brif(more, header, &back, exit, &out);
    em.b.seal_block(header);
    em.b.switch_to_block(exit);
    em.b.seal_block(exit);
    let ep = em.b.block_params(exit).to_vec();
    em.b.ins().store(flags, ep[carried.len()], sum_ptr, 0);
    for (c, &(a, i)) in carried.iter().enumerate() {
        let at = base(a, false);
        let old = em.b.ins().load(types::F64, flags, at, 8 * i as i32);
        let new = em.b.ins().fadd(old, ep[c]);
        em.b.ins().store(flags, new, at, 8 * i as i32);
    }
    em.b.ins().return_(&[]);
    let config = em.module.target_config();
    em.b.finalize(config);
    Ok(())
}
