//! Compiled tensor programs: a planned schedule (`fuse.rs`) turned into native code
//! (`kernel.rs`) over one arena, with a driver function that runs the whole program in one
//! call. Used for training steps (forward, backward and optimizer update) and for inference.
//!
//! **Parts.** A program of more than `DRIVER_PART` instructions (a model of thousands of
//! layers) has a driver per part and one that calls them in turn, so that no function grows
//! with the model; below that there is one driver, as before.
//!
//! **Guard.** A training step checks its loss before the first instruction that overwrites an
//! input (the optimizer's updates are scheduled last): if the loss is NaN or infinite the step
//! returns there, leaving parameters and optimizer state as the step found them, so the
//! trainer can replay the step on the interpreter and name the first non-finite tensor.
//!
//! **Safety.** Every address the code touches is an arena offset fixed at compile time; the
//! plan only hands out slots inside `arena_len`, and the arena is allocated with that length
//! (plus alignment padding) before any code runs. Callers reach buffers only through
//! [`Program::slot`], which checks the node belongs to the program.

use std::time::{Duration, Instant};

use cranelift_codegen::ir::{AbiParam, InstBuilder, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use hashbrown::HashMap;

use super::fuse::{Instr, Plan, Request, Slot, Unsupported, plan};
use super::kernel::Emitter;
use crate::graph::{Graph, Id};
use crate::jit::runtime;

/// An f32 arena whose first element is 64-byte aligned.
struct Arena {
    storage: Vec<f32>,
    start: usize,
}

impl Arena {
    fn new(len: usize) -> Arena {
        let storage = vec![0.0f32; len + 16];
        let misalign = (storage.as_ptr() as usize % 64) / 4;
        let start = if misalign == 0 { 0 } else { 16 - misalign };
        Arena { storage, start }
    }

    fn ptr(&mut self) -> *mut f32 {
        self.storage[self.start..].as_mut_ptr()
    }

    fn slice(&self, s: Slot) -> &[f32] {
        &self.storage[self.start + s.offset..self.start + s.offset + s.len]
    }

    fn slice_mut(&mut self, s: Slot) -> &mut [f32] {
        &mut self.storage[self.start + s.offset..self.start + s.offset + s.len]
    }
}

/// What one kernel is, for timings and IR dumps.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// `gemm 32x784x128`, `map 32x128 (3 outputs)`, `sum 32x10`, ...
    pub name: String,
    /// Its Cranelift IR (empty for GEMM calls), when asked for.
    pub ir: String,
}

/// A compiled program over its own arena.
pub struct Program {
    module: Option<JITModule>,
    driver: *const u8,
    /// One entry per instruction: a kernel's code (null for GEMM calls).
    kernels: Vec<*const u8>,
    /// One entry per instruction: how its kernel is called.
    launches: Vec<Launch>,
    plan: Plan,
    arena: Arena,
    /// Name and IR of each instruction.
    pub info: Vec<KernelInfo>,
    /// Time spent compiling.
    pub compile_time: Duration,
    /// The instruction before which the guard's slot must hold a finite value.
    guard: Option<(usize, Slot)>,
}

// SAFETY: the code is immutable after finalization; the arena is owned and only reached
// through `&mut self`.
unsafe impl Send for Program {}

impl Drop for Program {
    fn drop(&mut self) {
        self.kernels.clear();
        if let Some(m) = self.module.take() {
            // SAFETY: no pointer into the module's memory outlives `self`.
            unsafe { m.free_memory() };
        }
    }
}

type Driver = unsafe extern "C" fn(*mut f32);

/// How the driver calls a kernel: over units `0..units` of its work, directly (`chunks` 1)
/// or cut into `chunks` ranges shared between threads (`runtime::sd_par_map`).
#[derive(Debug, Clone, Copy)]
struct Launch {
    units: usize,
    chunks: usize,
}

/// A map is shared between threads when it has at least this many elements (smaller ones
/// take less time than handing them out costs), in about this many elements per range.
const PARALLEL_ELEMENTS: usize = 16 * 1024;
const ELEMENTS_PER_RANGE: usize = 4096;

/// How a map over `elements` elements in `units` units runs with `threads` threads.
fn launch(elements: usize, units: usize, threads: usize) -> Launch {
    let chunks = if threads > 1 && elements >= PARALLEL_ELEMENTS && units >= 2 {
        (elements / ELEMENTS_PER_RANGE).clamp(threads, units)
    } else {
        1
    };
    Launch { units, chunks }
}

fn codegen(e: impl std::fmt::Display) -> Unsupported {
    Unsupported(format!("code generation failed: {e}"))
}

impl Program {
    /// Plans and compiles `req`. `keep_ir` keeps each kernel's Cranelift IR.
    pub fn compile(req: &Request<'_>, keep_ir: bool) -> Result<Program, Unsupported> {
        let start = Instant::now();
        let plan = plan(req)?;
        let g = req.graph;
        let mut flags = settings::builder();
        for (k, v) in [("opt_level", "speed"), ("is_pic", "false"), ("use_colocated_libcalls", "false")] {
            flags.set(k, v).map_err(codegen)?;
        }
        flags
            .set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })
            .map_err(codegen)?;
        let isa = cranelift_native::builder()
            .map_err(|m| Unsupported(m.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(codegen)?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, ptr) in runtime::symbols() {
            jb.symbol(name, ptr);
        }
        let mut module = JITModule::new(jb);
        let ptr = module.target_config().pointer_type();
        let mut ctx = module.make_context();
        let mut fbc = FunctionBuilderContext::new();
        let mut ids: Vec<Option<FuncId>> = Vec::new();
        let mut info = Vec::new();
        let mut launches = Vec::new();
        let threads = crate::jit::team::threads();
        for instr in &plan.instrs {
            let name = describe(g, instr);
            if let Instr::Gemm { .. } | Instr::Adam { .. } = instr {
                ids.push(None);
                info.push(KernelInfo { name, ir: String::new() });
                launches.push(Launch { units: 1, chunks: 1 });
                continue;
            }
            ctx.func.signature.params.push(AbiParam::new(ptr));
            ctx.func.signature.params.push(AbiParam::new(types::I64));
            ctx.func.signature.params.push(AbiParam::new(types::I64));
            let id = module.declare_anonymous_function(&ctx.func.signature).map_err(codegen)?;
            {
                let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
                let entry = b.create_block();
                b.append_block_params_for_function_params(entry);
                b.switch_to_block(entry);
                b.seal_block(entry);
                let (arena, from, to) =
                    (b.block_params(entry)[0], b.block_params(entry)[1], b.block_params(entry)[2]);
                let mut em =
                    Emitter { b: &mut b, module: &mut module, g, plan: &plan, arena, calls: HashMap::new() };
                launches.push(match instr {
                    Instr::Map { space, outputs } => {
                        let units = em.map(space, outputs, from, to)?;
                        launch(space.iter().product(), units, threads)
                    }
                    Instr::Reduce { node, out } => {
                        em.reduce(*node, out.offset)?;
                        Launch { units: 1, chunks: 1 }
                    }
                    Instr::LogSoftmax { node, out } => {
                        em.log_softmax(*node, out.offset)?;
                        Launch { units: 1, chunks: 1 }
                    }
                    Instr::Gemm { .. } | Instr::Adam { .. } => Launch { units: 1, chunks: 1 },
                });
                em.b.ins().return_(&[]);
                let config = module.target_config();
                b.finalize(config);
            }
            let ir = if keep_ir { ctx.func.display().to_string() } else { String::new() };
            module.define_function(id, &mut ctx).map_err(|e| codegen(format!("{e:?}")))?;
            module.clear_context(&mut ctx);
            ids.push(Some(id));
            info.push(KernelInfo { name, ir });
        }
        // The guard: checked before the first instruction that overwrites an input (the
        // updates come last).
        let aliased: hashbrown::HashSet<Id> = req.aliases.iter().map(|(o, _)| *o).collect();
        let first_update = plan.instrs.iter().position(|instr| match instr {
            Instr::Map { outputs, .. } => outputs.iter().any(|(n, _)| aliased.contains(n)),
            Instr::Adam { .. } => true,
            _ => false,
        });
        let guard = match (req.guard, first_update) {
            (Some(node), Some(first)) => plan.slots.get(&node).map(|&slot| (first, slot)),
            _ => None,
        };
        // The driver: every instruction in order, in one call. A program of more than
        // `DRIVER_PART` instructions (a model of thousands of layers) gets a driver per part
        // and one over them: register allocation of one function of a million calls would
        // cost more than in proportion to its length.
        let n = plan.instrs.len();
        let driver_id = if n <= DRIVER_PART {
            define_driver(&mut module, &mut ctx, &mut fbc, &plan, &ids, &launches, 0..n, guard, None)?
        } else {
            let mut parts = Vec::new();
            for (k, from) in (0..n).step_by(DRIVER_PART).enumerate() {
                let range = from..(from + DRIVER_PART).min(n);
                let name = format!("symdiff_step_{k}");
                parts.push(define_driver(
                    &mut module,
                    &mut ctx,
                    &mut fbc,
                    &plan,
                    &ids,
                    &launches,
                    range,
                    guard,
                    Some(&name),
                )?);
            }
            define_parts(&mut module, &mut ctx, &mut fbc, &parts)?
        };
        module.finalize_definitions().map_err(codegen)?;
        let driver = module.get_finalized_function(driver_id);
        let kernels = ids
            .iter()
            .map(|id| id.map_or(std::ptr::null(), |id| module.get_finalized_function(id)))
            .collect();
        let arena = Arena::new(plan.arena_len);
        Ok(Program {
            module: Some(module),
            driver,
            kernels,
            launches,
            plan,
            arena,
            info,
            compile_time: start.elapsed(),
            guard,
        })
    }

    /// The buffer of `node` (an input, an output, or any stored node), if it has one.
    pub fn slot(&self, node: Id) -> Option<&[f32]> {
        self.plan.slots.get(&node).map(|&s| self.arena.slice(s))
    }

    /// The buffer of `node`, for writing inputs.
    pub fn slot_mut(&mut self, node: Id) -> Option<&mut [f32]> {
        let s = *self.plan.slots.get(&node)?;
        Some(self.arena.slice_mut(s))
    }

    /// Runs the program once.
    pub fn run(&mut self) {
        let _run = super::sparse::begin_run();
        let p = self.arena.ptr();
        // SAFETY: the driver and the kernels it calls touch only arena offsets below
        // `plan.arena_len`, and the arena holds that many elements after `p` (module doc).
        unsafe {
            let f: Driver = std::mem::transmute::<*const u8, Driver>(self.driver);
            f(p);
        }
    }

    /// Runs the program once, instruction by instruction, adding each one's time to `times`.
    pub fn run_timed(&mut self, times: &mut Vec<Duration>) {
        times.resize(self.kernels.len(), Duration::ZERO);
        let _run = super::sparse::begin_run();
        let p = self.arena.ptr();
        for (k, ((instr, &code), l)) in
            self.plan.instrs.iter().zip(&self.kernels).zip(&self.launches).enumerate()
        {
            if let Some((first, slot)) = self.guard
                && k == first
                && !self.arena.slice(slot)[0].is_finite()
            {
                return;
            }
            let t = Instant::now();
            match instr {
                Instr::Gemm { m, n, k: kk, a, b, out, sparse_lhs } => {
                    let f = if *sparse_lhs { runtime::sd_sgemm_sparse_lhs } else { runtime::sd_sgemm };
                    // SAFETY: as in `run`; the views were planned inside the arena.
                    unsafe {
                        f(
                            *m as i64,
                            *n as i64,
                            *kk as i64,
                            p.add(a.slot.offset),
                            a.strides[0] as i64,
                            a.strides[1] as i64,
                            p.add(b.slot.offset),
                            b.strides[0] as i64,
                            b.strides[1] as i64,
                            p.add(out.offset),
                            *n as i64,
                            1,
                        )
                    }
                }
                Instr::Adam { shape, param, m, v, grad, alpha, coef } => {
                    let at = |s: &super::fuse::Slot| p.wrapping_add(s.offset);
                    // SAFETY: as in `run`; the slots were planned inside the arena.
                    unsafe {
                        runtime::sd_adam(
                            shape.iter().product::<usize>() as i64,
                            at(param),
                            at(m),
                            at(v),
                            at(grad),
                            at(alpha),
                            coef.beta1,
                            coef.c1,
                            coef.beta2,
                            coef.c2,
                            coef.eps,
                        )
                    }
                }
                // SAFETY: as in `run`; the launch is the one the driver uses.
                _ => unsafe {
                    let f = std::mem::transmute::<*const u8, runtime::MapKernel>(code);
                    if l.chunks > 1 {
                        runtime::sd_par_map(f, p, l.units as i64, l.chunks as i64);
                    } else {
                        f(p, 0, l.units as i64);
                    }
                },
            }
            times[k] += t.elapsed();
        }
    }

    /// Every node with a buffer, in id order.
    pub fn stored_nodes(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self.plan.slots.keys().copied().collect();
        v.sort();
        v
    }

    /// Number of f32 elements in the arena.
    pub fn arena_len(&self) -> usize {
        self.plan.arena_len
    }
}

/// Instructions of one driver function, at most (see `Program::compile`).
pub(crate) const DRIVER_PART: usize = 4096;

/// Defines a driver that calls the instructions `range` of `plan` in order, checking the guard
/// before its instruction: the whole program's driver `fn(arena)` (`part` `None`), or a part
/// `fn(arena) -> i32` named `part` that returns 1 when the guard stopped the step.
#[allow(clippy::too_many_arguments)]
fn define_driver(
    module: &mut JITModule,
    ctx: &mut cranelift_codegen::Context,
    fbc: &mut FunctionBuilderContext,
    plan: &Plan,
    ids: &[Option<FuncId>],
    launches: &[Launch],
    range: std::ops::Range<usize>,
    guard: Option<(usize, Slot)>,
    part: Option<&str>,
) -> Result<FuncId, Unsupported> {
    let ptr = module.target_config().pointer_type();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    if part.is_some() {
        ctx.func.signature.returns.push(AbiParam::new(types::I32));
    }
    let driver_id = module
        .declare_function(part.unwrap_or("symdiff_step"), Linkage::Local, &ctx.func.signature)
        .map_err(codegen)?;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let arena = b.block_params(entry)[0];
        let mut gemm_sig = module.make_signature();
        for _ in 0..12 {
            gemm_sig.params.push(AbiParam::new(types::I64));
        }
        let gemm = module.declare_function("sd_sgemm", Linkage::Import, &gemm_sig).map_err(codegen)?;
        let gemm = module.declare_func_in_func(gemm, b.func);
        let sparse =
            module.declare_function("sd_sgemm_sparse_lhs", Linkage::Import, &gemm_sig).map_err(codegen)?;
        let sparse = module.declare_func_in_func(sparse, b.func);
        let mut par_sig = module.make_signature();
        for _ in 0..4 {
            par_sig.params.push(AbiParam::new(types::I64));
        }
        let par_map = module.declare_function("sd_par_map", Linkage::Import, &par_sig).map_err(codegen)?;
        let par_map = module.declare_func_in_func(par_map, b.func);
        let mut adam_sig = module.make_signature();
        for _ in 0..6 {
            adam_sig.params.push(AbiParam::new(types::I64));
        }
        for _ in 0..5 {
            adam_sig.params.push(AbiParam::new(types::F32));
        }
        let adam = module.declare_function("sd_adam", Linkage::Import, &adam_sig).map_err(codegen)?;
        let adam = module.declare_func_in_func(adam, b.func);
        let exit = b.create_block();
        for k in range {
            let (instr, id, l) = (&plan.instrs[k], &ids[k], &launches[k]);
            if let Some((first, slot)) = guard
                && k == first
            {
                // Stop before the updates unless the guard is finite (x - x is 0 exactly
                // when x is finite).
                let flags = cranelift_codegen::ir::MemFlagsData::new().with_notrap();
                let x = b.ins().load(types::F32, flags, arena, (slot.offset * 4) as i32);
                let d = b.ins().fsub(x, x);
                let zero = b.ins().f32const(0.0);
                let finite = b.ins().fcmp(cranelift_codegen::ir::condcodes::FloatCC::Equal, d, zero);
                let go = b.create_block();
                b.ins().brif(finite, go, &[], exit, &[]);
                b.seal_block(go);
                b.switch_to_block(go);
            }
            match (instr, id) {
                (_, Some(id)) => {
                    let f = module.declare_func_in_func(*id, b.func);
                    let units = b.ins().iconst(types::I64, l.units as i64);
                    if l.chunks > 1 {
                        let addr = b.ins().func_addr(ptr, f);
                        let chunks = b.ins().iconst(types::I64, l.chunks as i64);
                        b.ins().call(par_map, &[addr, arena, units, chunks]);
                    } else {
                        let zero = b.ins().iconst(types::I64, 0);
                        b.ins().call(f, &[arena, zero, units]);
                    }
                }
                (Instr::Gemm { m, n, k, a, b: bv, out, sparse_lhs }, None) => {
                    let mut args = Vec::with_capacity(12);
                    for x in [*m, *n, *k] {
                        args.push(b.ins().iconst(types::I64, x as i64));
                    }
                    for (view, rs, cs) in [
                        (a.slot.offset, a.strides[0], a.strides[1]),
                        (bv.slot.offset, bv.strides[0], bv.strides[1]),
                        (out.offset, *n as isize, 1),
                    ] {
                        args.push(b.ins().iadd_imm_s(arena, (view * 4) as i64));
                        args.push(b.ins().iconst(types::I64, rs as i64));
                        args.push(b.ins().iconst(types::I64, cs as i64));
                    }
                    b.ins().call(if *sparse_lhs { sparse } else { gemm }, &args);
                }
                (Instr::Adam { shape, param, m, v, grad, alpha, coef }, None) => {
                    let mut args = vec![b.ins().iconst(types::I64, shape.iter().product::<usize>() as i64)];
                    for s in [param, m, v, grad, alpha] {
                        args.push(b.ins().iadd_imm_s(arena, (s.offset * 4) as i64));
                    }
                    for x in [coef.beta1, coef.c1, coef.beta2, coef.c2, coef.eps] {
                        args.push(b.ins().f32const(x));
                    }
                    b.ins().call(adam, &args);
                }
                _ => {}
            }
        }
        if part.is_some() {
            // A part says whether the driver over the parts goes on (0) or stops (1).
            let go_on = b.ins().iconst(types::I32, 0);
            b.ins().return_(&[go_on]);
            b.seal_block(exit);
            b.switch_to_block(exit);
            let stop = b.ins().iconst(types::I32, 1);
            b.ins().return_(&[stop]);
        } else {
            b.ins().jump(exit, &[]);
            b.seal_block(exit);
            b.switch_to_block(exit);
            b.ins().return_(&[]);
        }
        let config = module.target_config();
        b.finalize(config);
    }
    module.define_function(driver_id, ctx).map_err(|e| codegen(format!("{e:?}")))?;
    module.clear_context(ctx);
    Ok(driver_id)
}

/// The driver over the parts: calls each in turn, and stops after one that returns 1.
fn define_parts(
    module: &mut JITModule,
    ctx: &mut cranelift_codegen::Context,
    fbc: &mut FunctionBuilderContext,
    parts: &[FuncId],
) -> Result<FuncId, Unsupported> {
    let ptr = module.target_config().pointer_type();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let driver_id =
        module.declare_function("symdiff_step", Linkage::Local, &ctx.func.signature).map_err(codegen)?;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let arena = b.block_params(entry)[0];
        let exit = b.create_block();
        for &part in parts {
            let f = module.declare_func_in_func(part, b.func);
            let call = b.ins().call(f, &[arena]);
            let stop = b.inst_results(call)[0];
            let go = b.create_block();
            b.ins().brif(stop, exit, &[], go, &[]);
            b.seal_block(go);
            b.switch_to_block(go);
        }
        b.ins().jump(exit, &[]);
        b.seal_block(exit);
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        let config = module.target_config();
        b.finalize(config);
    }
    module.define_function(driver_id, ctx).map_err(|e| codegen(format!("{e:?}")))?;
    module.clear_context(ctx);
    Ok(driver_id)
}

fn describe(g: &Graph, instr: &Instr) -> String {
    let shape = |s: &[usize]| crate::graph::show_shape(s);
    match instr {
        Instr::Gemm { m, n, k, sparse_lhs, .. } => {
            format!("gemm {m}x{k} @ {k}x{n}{}", if *sparse_lhs { " (zero-skipping)" } else { "" })
        }
        Instr::Map { space, outputs } => format!(
            "map {} ({} output{})",
            shape(space),
            outputs.len(),
            if outputs.len() == 1 { "" } else { "s" }
        ),
        Instr::Reduce { node, .. } => {
            let what = match g.op(*node) {
                crate::graph::Op::Max(_) => "max",
                _ => "sum",
            };
            format!("{what} {} -> {}", shape(g.shape(g.args(*node)[0])), shape(g.shape(*node)))
        }
        Instr::LogSoftmax { node, .. } => format!("logsoftmax {}", shape(g.shape(*node))),
        Instr::Adam { shape: s, .. } => format!("adam {} (host kernel)", shape(s)),
    }
}
