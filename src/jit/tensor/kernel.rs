//! Code generation for fused tensor kernels: one Cranelift function per planned instruction
//! (`fuse::Instr`), plus a driver that calls them and the GEMM in order.
//!
//! Every kernel has the signature `fn(arena: *mut f32, from: i64, to: i64)`: all buffers are
//! at fixed offsets of one arena, known when compiling, so a kernel needs no other argument
//! than the range of its work to do (units of 16 elements or rows of a map, see
//! [`Emitter::map`]; reductions and log-softmax do all their work whatever the range), and the
//! driver is a straight list of calls. Loops run over a kernel's iteration space, normalised to `[rows,
//! cols]`; the inner loop does four columns at a time in `f32x4` (Cranelift's widest vector,
//! which it never creates by itself) and the remaining columns one at a time. Each operand is
//! read according to its view: contiguous columns with one vector load, a broadcast value
//! with one load and a splat, anything else lane by lane.
//!
//! Transcendentals use the inline approximations of `vecmath` (exp, log, sigmoid, tanh,
//! softplus; their error bounds are documented there); the remaining functions call the host
//! function per lane, in f64, exactly as the interpreter computes them.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, FuncRef, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};
use hashbrown::HashMap;

use super::fuse::{Plan, Unsupported, View};
use super::vecmath;
use crate::graph::{ALL_AXES, Func, Graph, Id, Op};

type Cg<T> = Result<T, Unsupported>;

/// `[rows, cols]` of a shape of rank 0, 1 or 2.
fn space2(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [c] => (1, *c),
        [r, c] => (*r, *c),
        _ => (shape[..shape.len() - 1].iter().product(), shape[shape.len() - 1]),
    }
}

/// Strides `[row, col]` (in elements) with which a view is read over a 2-D space.
fn strides2(view: &View, space: &[usize]) -> (isize, isize) {
    let s = view.strides_in(space);
    match s.as_slice() {
        [] => (0, 0),
        [c] => (0, *c),
        [r, c] => (*r, *c),
        _ => (s[s.len() - 2], s[s.len() - 1]),
    }
}

/// Emits the body of one kernel.
pub struct Emitter<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub module: &'a mut JITModule,
    pub g: &'a Graph,
    pub plan: &'a Plan,
    pub arena: Value,
    /// Host functions declared in this function.
    pub calls: HashMap<&'static str, FuncRef>,
}

/// Where an expression is being evaluated: a row, a column (of four lanes, or one).
#[derive(Clone, Copy)]
struct At {
    /// The iteration space the kernel walks (its own shape, or the operand's for reductions).
    rows: usize,
    cols: usize,
    i: Value,
    j: Value,
    vector: bool,
}

impl<'a, 'b> Emitter<'a, 'b> {
    fn ty(&self, vector: bool) -> types::Type {
        if vector { types::F32X4 } else { types::F32 }
    }

    fn constant(&mut self, x: f32, vector: bool) -> Value {
        let c = self.b.ins().f32const(x);
        if vector { self.b.ins().splat(types::F32X4, c) } else { c }
    }

    /// Address of element `(i, j)` of `view` over a `rows × cols` space.
    fn address(&mut self, view: &View, shape: &[usize], i: Value, j: Value) -> Value {
        let (si, sj) = strides2(view, shape);
        let mut off = self.b.ins().iconst(types::I64, (view.slot.offset * 4) as i64);
        if si != 0 {
            let t = self.b.ins().imul_imm_s(i, si as i64 * 4);
            off = self.b.ins().iadd(off, t);
        }
        if sj != 0 {
            let t = self.b.ins().imul_imm_s(j, sj as i64 * 4);
            off = self.b.ins().iadd(off, t);
        }
        self.b.ins().iadd(self.arena, off)
    }

    fn load(&mut self, view: &View, shape: &[usize], at: At) -> Value {
        let flags = MemFlagsData::new().with_notrap();
        let (_, sj) = strides2(view, shape);
        if !at.vector || sj == 0 {
            let addr = self.address(view, shape, at.i, at.j);
            let x = self.b.ins().load(types::F32, flags, addr, 0);
            return if at.vector { self.b.ins().splat(types::F32X4, x) } else { x };
        }
        let addr = self.address(view, shape, at.i, at.j);
        if sj == 1 {
            return self.b.ins().load(types::F32X4, flags, addr, 0);
        }
        // Strided lanes (a transposed read): one at a time.
        let mut v = self.constant(0.0, true);
        for lane in 0..4u8 {
            let x = self.b.ins().load(types::F32, flags, addr, (lane as isize * sj * 4) as i32);
            v = self.b.ins().insertlane(v, x, lane);
        }
        v
    }

    fn store(&mut self, slot_offset: usize, cols: usize, at: At, v: Value) {
        let flags = MemFlagsData::new().with_notrap();
        let row = self.b.ins().imul_imm_s(at.i, (cols * 4) as i64);
        let col = self.b.ins().imul_imm_s(at.j, 4);
        let off = self.b.ins().iadd(row, col);
        let base = self.b.ins().iadd_imm_s(self.arena, (slot_offset * 4) as i64);
        let addr = self.b.ins().iadd(base, off);
        self.b.ins().store(flags, v, addr, 0);
    }

    fn host(&mut self, symbol: &'static str, args: usize) -> Cg<FuncRef> {
        if let Some(&f) = self.calls.get(symbol) {
            return Ok(f);
        }
        let mut sig = self.module.make_signature();
        for _ in 0..args {
            sig.params.push(AbiParam::new(types::F64));
        }
        sig.returns.push(AbiParam::new(types::F64));
        let id = self
            .module
            .declare_function(symbol, Linkage::Import, &sig)
            .map_err(|e| Unsupported(e.to_string()))?;
        let f = self.module.declare_func_in_func(id, self.b.func);
        self.calls.insert(symbol, f);
        Ok(f)
    }

    /// `symbol(args)` computed in f64 by the host, lane by lane.
    fn per_lane(&mut self, symbol: &'static str, args: &[Value], vector: bool) -> Cg<Value> {
        let f = self.host(symbol, args.len())?;
        let lanes = if vector { 4 } else { 1 };
        let mut out = if vector { self.constant(0.0, true) } else { args[0] };
        for lane in 0..lanes {
            let xs: Vec<Value> = args
                .iter()
                .map(|&a| {
                    let s = if vector { self.b.ins().extractlane(a, lane) } else { a };
                    self.b.ins().fpromote(types::F64, s)
                })
                .collect();
            let call = self.b.ins().call(f, &xs);
            let r = self.b.inst_results(call)[0];
            let r = self.b.ins().fdemote(types::F32, r);
            out = if vector { self.b.ins().insertlane(out, r, lane) } else { r };
        }
        Ok(out)
    }

    /// The value of `node` at `at` (memoised per position in `memo`).
    fn eval(&mut self, node: Id, at: At, memo: &mut HashMap<Id, Value>) -> Cg<Value> {
        self.eval_in(node, at, memo, false)
    }

    /// [`Self::eval`]; with `compute`, `node` is computed from its operands even though it has
    /// a buffer (it is the node a map loop is storing).
    fn eval_in(&mut self, node: Id, at: At, memo: &mut HashMap<Id, Value>, compute: bool) -> Cg<Value> {
        if let Some(&v) = memo.get(&node) {
            return Ok(v);
        }
        let g = self.g;
        let shape = [at.rows, at.cols];
        let space: &[usize] = &shape;
        let stored = if compute { None } else { self.plan.views.get(&node).cloned() };
        let v = if let Some(view) = stored {
            self.load(&view, space, at)
        } else {
            match g.op(node) {
                Op::Num(bits) => self.constant(f64::from_bits(bits) as f32, at.vector),
                Op::Const(c) => self.constant(c.value() as f32, at.vector),
                Op::Broadcast(_) => self.eval(g.args(node)[0], at, memo)?,
                Op::Add | Op::Mul => {
                    // In a product, factors `y^-1` that are not stored become divisions
                    // (`x*y^-1` is `x/y`, one rounding and one instruction fewer).
                    let inverse = |a: Id| -> Option<Id> {
                        let inline = !self.plan.views.contains_key(&a) && !memo.contains_key(&a);
                        (g.op(node) == Op::Mul
                            && inline
                            && g.op(a) == Op::Pow
                            && g.as_num(g.args(a)[1]) == Some(-1.0))
                        .then(|| g.args(a)[0])
                    };
                    let (dens, nums): (Vec<Id>, Vec<Id>) =
                        g.args(node).iter().partition(|&&a| inverse(a).is_some());
                    let dens: Vec<Id> = dens.into_iter().filter_map(inverse).collect();
                    let mut acc: Option<Value> = None;
                    for a in nums {
                        let x = self.eval(a, at, memo)?;
                        acc = Some(match (acc, g.op(node)) {
                            (None, _) => x,
                            (Some(p), Op::Add) => self.b.ins().fadd(p, x),
                            (Some(p), _) => self.b.ins().fmul(p, x),
                        });
                    }
                    for d in dens {
                        let y = self.eval(d, at, memo)?;
                        let x = match acc {
                            Some(x) => x,
                            None => self.constant(1.0, at.vector),
                        };
                        acc = Some(self.b.ins().fdiv(x, y));
                    }
                    acc.ok_or_else(|| Unsupported("an empty sum".into()))?
                }
                Op::Pow => {
                    let [bn, en] = [g.args(node)[0], g.args(node)[1]];
                    let x = self.eval(bn, at, memo)?;
                    match g.as_num(en) {
                        Some(2.0) => self.b.ins().fmul(x, x),
                        Some(-1.0) => {
                            let one = self.constant(1.0, at.vector);
                            self.b.ins().fdiv(one, x)
                        }
                        Some(0.5) => self.b.ins().sqrt(x),
                        Some(-0.5) => {
                            let s = self.b.ins().sqrt(x);
                            let one = self.constant(1.0, at.vector);
                            self.b.ins().fdiv(one, s)
                        }
                        Some(e) if e.fract() == 0.0 && e.abs() <= 16.0 => {
                            // `(1/x)^n` for a negative power, as `graph::eval::pow`.
                            let base = if e < 0.0 {
                                let one = self.constant(1.0, at.vector);
                                self.b.ins().fdiv(one, x)
                            } else {
                                x
                            };
                            match crate::jit::square_and_multiply(self.b, base, e.abs() as u32) {
                                Some(p) => p,
                                None => self.constant(1.0, at.vector),
                            }
                        }
                        _ => {
                            let e = self.eval(en, at, memo)?;
                            self.per_lane("sd_pow", &[x, e], at.vector)?
                        }
                    }
                }
                Op::Func(f) => {
                    let x = self.eval(g.args(node)[0], at, memo)?;
                    self.func(f, x, at.vector)?
                }
                Op::OneHot(_) => {
                    let labels = g.args(node)[0];
                    let Some(view) = self.plan.views.get(&labels).cloned() else {
                        return Err(Unsupported("onehot of a computed expression".into()));
                    };
                    // The label of row i, compared with the column index of each lane.
                    let mut lv = view.clone();
                    lv.shape.push(1);
                    lv.strides.push(0);
                    let label = self.load(&lv, space, At { vector: false, ..at });
                    let label = if at.vector { self.b.ins().splat(types::F32X4, label) } else { label };
                    let jf = self.column_index(at)?;
                    let eq = self.b.ins().fcmp(FloatCC::Equal, label, jf);
                    let one = self.constant(1.0, at.vector);
                    let zero = self.constant(0.0, at.vector);
                    self.choose(eq, one, zero, at.vector)
                }
                other => return Err(Unsupported(format!("{other:?} inside a fused loop"))),
            }
        };
        memo.insert(node, v);
        Ok(v)
    }

    /// `cond ? a : b` for a comparison result `cond` (lane masks for vectors).
    fn choose(&mut self, cond: Value, a: Value, b: Value, vector: bool) -> Value {
        if vector {
            let mask = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), cond);
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(cond, a, b)
        }
    }

    /// The column index of each lane at `at`, as floats.
    fn column_index(&mut self, at: At) -> Cg<Value> {
        let j = self.b.ins().fcvt_from_sint(types::F32, at.j);
        if !at.vector {
            return Ok(j);
        }
        let mut v = self.b.ins().splat(types::F32X4, j);
        let iota = {
            let mut w = self.constant(0.0, true);
            for lane in 1..4u8 {
                let c = self.b.ins().f32const(lane as f32);
                w = self.b.ins().insertlane(w, c, lane);
            }
            w
        };
        v = self.b.ins().fadd(v, iota);
        Ok(v)
    }

    fn func(&mut self, f: Func, x: Value, vector: bool) -> Cg<Value> {
        Ok(match f {
            Func::Abs => self.b.ins().fabs(x),
            Func::Relu => {
                // fmax propagates NaN and maps -0 to 0, as the interpreter's relu does.
                let zero = self.constant(0.0, vector);
                self.b.ins().fmax(x, zero)
            }
            Func::Step => {
                let zero = self.constant(0.0, vector);
                let one = self.constant(1.0, vector);
                let pos = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.choose(pos, one, zero, vector)
            }
            Func::Sign => {
                let zero = self.constant(0.0, vector);
                let one = self.constant(1.0, vector);
                let minus = self.constant(-1.0, vector);
                let pos = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let s = self.choose(pos, one, x, vector);
                let neg = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                self.choose(neg, minus, s, vector)
            }
            Func::Exp => vecmath::exp(self.b, x),
            Func::Log => vecmath::log(self.b, x),
            Func::Sigmoid => vecmath::sigmoid(self.b, x),
            Func::Tanh => vecmath::tanh(self.b, x),
            Func::Softplus => vecmath::softplus(self.b, x),
            other => {
                let symbol = crate::jit::runtime::symbol_of(other)
                    .ok_or_else(|| Unsupported(format!("no host function for {}", other.name())))?;
                self.per_lane(symbol, &[x], vector)?
            }
        })
    }

    /// `for k in from..to { body(k) }` with constant bounds.
    fn for_range(
        &mut self,
        from: usize,
        to: usize,
        mut body: impl FnMut(&mut Self, Value) -> Cg<()>,
    ) -> Cg<()> {
        if to <= from {
            return Ok(());
        }
        if to - from == 1 {
            let k = self.b.ins().iconst(types::I64, from as i64);
            return body(self, k);
        }
        let header = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        let start = self.b.ins().iconst(types::I64, from as i64);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let k = self.b.block_params(header)[0];
        body(self, k)?;
        let next = self.b.ins().iadd_imm_s(k, 1);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, to as i64);
        self.b.ins().brif(more, header, &[next.into()], exit, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// Whether every tensor the expressions of `outputs` read is either laid out exactly like
    /// the iteration space (contiguous, same shape) or a single value, and nothing depends on
    /// the column index: then the loop can run over the flat index `0..rows*cols`.
    fn flat(&self, space: &[usize], outputs: &[(Id, super::fuse::Slot)]) -> bool {
        let (rows, cols) = space2(space);
        let shape = [rows, cols];
        let mut stack: Vec<Id> = Vec::new();
        for &(node, _) in outputs {
            stack.extend_from_slice(self.g.args(node));
            if matches!(self.g.op(node), Op::OneHot(_)) {
                return false;
            }
        }
        let mut seen = hashbrown::HashSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(view) = self.plan.views.get(&n) {
                let st = strides2(view, &shape);
                if st != (cols as isize, 1) && st != (0, 0) {
                    return false;
                }
                continue;
            }
            if matches!(self.g.op(n), Op::OneHot(_)) {
                return false;
            }
            stack.extend_from_slice(self.g.args(n));
        }
        true
    }

    /// Every output at the `lanes`-wide position `j` (a flat index when `i` is 0 and the
    /// loop is flat, a column otherwise).
    /// Values that are the same at every position of a loop over `space`: the single-element
    /// nodes the outputs read (a step size, a scalar input, their products), loaded and
    /// splatted once before the loop instead of once per position (Cranelift does not hoist
    /// loads out of loops: a store in the loop might alias them).
    fn invariants(
        &mut self,
        space: &[usize],
        outputs: &[(Id, super::fuse::Slot)],
        vector: bool,
    ) -> Cg<HashMap<Id, Value>> {
        let mut memo = HashMap::new();
        let (rows, cols) = space2(space);
        if rows * cols == 1 {
            return Ok(memo);
        }
        let g = self.g;
        let mut stack: Vec<Id> = outputs.iter().flat_map(|&(n, _)| g.args(n).iter().copied()).collect();
        let mut seen = hashbrown::HashSet::new();
        let mut scalars = Vec::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if g.shape(n).iter().product::<usize>() == 1 && !outputs.iter().any(|&(o, _)| o == n) {
                scalars.push(n);
            } else if !self.plan.views.contains_key(&n) {
                stack.extend_from_slice(g.args(n));
            }
        }
        let zero = self.b.ins().iconst(types::I64, 0);
        let at = At { rows, cols, i: zero, j: zero, vector };
        for n in scalars {
            self.eval(n, at, &mut memo)?;
        }
        Ok(memo)
    }

    fn map_at(&mut self, outputs: &[(Id, super::fuse::Slot)], at: At, base: &HashMap<Id, Value>) -> Cg<()> {
        let mut memo = base.clone();
        for &(node, slot) in outputs {
            let v = self.eval_in(node, at, &mut memo, true)?;
            memo.insert(node, v);
            self.store(slot.offset, at.cols, at, v);
        }
        Ok(())
    }

    /// `for k in from..to { body(k) }` with bounds known only when the kernel runs.
    fn for_dynamic(
        &mut self,
        from: Value,
        to: Value,
        mut body: impl FnMut(&mut Self, Value) -> Cg<()>,
    ) -> Cg<()> {
        let header = self.b.create_block();
        let inside = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[from.into()]);
        self.b.switch_to_block(header);
        let k = self.b.block_params(header)[0];
        let more = self.b.ins().icmp(IntCC::SignedLessThan, k, to);
        self.b.ins().brif(more, inside, &[], exit, &[]);
        self.b.switch_to_block(inside);
        self.b.seal_block(inside);
        body(self, k)?;
        let next = self.b.ins().iadd_imm_s(k, 1);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// The loop of a map instruction: every output at the positions of `space` that units
    /// `from..to` cover (the kernel's two parameters after the arena), so that the driver can
    /// share one map between threads. Returns the number of units of the whole space.
    ///
    /// When the operands allow it ([`Self::flat`]) the loop runs over the flat index and a
    /// unit is 16 elements (four `f32x4` per iteration, so that the processor overlaps the
    /// independent chains: an Adam update is a `sqrt` and a division deep); the range that
    /// ends at the last unit also does the remaining elements, as single vectors and then
    /// scalars. Otherwise a unit is a row, done four columns at a time, then the columns left.
    pub fn map(
        &mut self,
        space: &[usize],
        outputs: &[(Id, super::fuse::Slot)],
        from: Value,
        to: Value,
    ) -> Cg<usize> {
        let (rows, cols) = space2(space);
        let (v4, v1) = (self.invariants(space, outputs, true)?, self.invariants(space, outputs, false)?);
        if rows > 1 && self.flat(space, outputs) {
            let total = rows * cols;
            let i = self.b.ins().iconst(types::I64, 0);
            let unrolled = total / 16;
            self.for_dynamic(from, to, |em, jj| {
                let base = em.b.ins().imul_imm_s(jj, 16);
                for u in 0..4 {
                    let j = em.b.ins().iadd_imm_s(base, 4 * u);
                    em.map_at(outputs, At { rows, cols, i, j, vector: true }, &v4)?;
                }
                Ok(())
            })?;
            if total % 16 != 0 {
                let tail = self.b.create_block();
                let done = self.b.create_block();
                let last = self.b.ins().icmp_imm_s(IntCC::Equal, to, unrolled as i64);
                self.b.ins().brif(last, tail, &[], done, &[]);
                self.b.switch_to_block(tail);
                self.b.seal_block(tail);
                self.for_range(unrolled * 4, total / 4, |em, jv| {
                    let j = em.b.ins().imul_imm_s(jv, 4);
                    em.map_at(outputs, At { rows, cols, i, j, vector: true }, &v4)
                })?;
                self.for_range(total / 4 * 4, total, |em, j| {
                    em.map_at(outputs, At { rows, cols, i, j, vector: false }, &v1)
                })?;
                self.b.ins().jump(done, &[]);
                self.b.switch_to_block(done);
                self.b.seal_block(done);
            }
            return Ok(unrolled);
        }
        let vec_cols = cols / 4;
        self.for_dynamic(from, to, |em, i| {
            em.for_range(0, vec_cols, |em, jv| {
                let j = em.b.ins().imul_imm_s(jv, 4);
                em.map_at(outputs, At { rows, cols, i, j, vector: true }, &v4)
            })?;
            em.for_range(vec_cols * 4, cols, |em, j| {
                em.map_at(outputs, At { rows, cols, i, j, vector: false }, &v1)
            })
        })?;
        Ok(rows)
    }

    fn combine(&mut self, max: bool, a: Value, x: Value) -> Value {
        if max { self.b.ins().fmax(a, x) } else { self.b.ins().fadd(a, x) }
    }

    /// The four lanes of `v` combined into one.
    fn horizontal(&mut self, max: bool, v: Value) -> Value {
        let l: Vec<Value> = (0..4u8).map(|k| self.b.ins().extractlane(v, k)).collect();
        let a = self.combine(max, l[0], l[1]);
        let c = self.combine(max, l[2], l[3]);
        self.combine(max, a, c)
    }

    /// A `sum`/`max` instruction.
    pub fn reduce(&mut self, node: Id, out_offset: usize) -> Cg<()> {
        let g = self.g;
        let operand = g.args(node)[0];
        let (max, axis) = match g.op(node) {
            Op::Sum(a) => (false, a),
            Op::Max(a) => (true, a),
            _ => return Err(Unsupported("not a reduction".into())),
        };
        let shape = g.shape(operand).to_vec();
        let (rows, cols) = space2(&shape);
        let init = if max { f32::NEG_INFINITY } else { 0.0 };
        let vec_cols = cols / 4;
        let flags = MemFlagsData::new().with_notrap();
        let whole = axis == ALL_AXES || shape.len() == 1;
        let along_rows = !whole && axis as usize == shape.len() - 1;
        if whole || along_rows {
            // Accumulators per row (or one for everything): vector lanes, then a scalar tail.
            let accs: Vec<Value> = {
                let v = self.constant(init, true);
                let s = self.constant(init, false);
                vec![v, s]
            };
            let vvar = self.b.declare_var(types::F32X4);
            let svar = self.b.declare_var(types::F32);
            self.b.def_var(vvar, accs[0]);
            self.b.def_var(svar, accs[1]);
            let body = |em: &mut Self, i: Value| -> Cg<()> {
                if along_rows {
                    let v0 = em.constant(init, true);
                    let s0 = em.constant(init, false);
                    em.b.def_var(vvar, v0);
                    em.b.def_var(svar, s0);
                }
                em.for_range(0, vec_cols, |em, jv| {
                    let j = em.b.ins().imul_imm_s(jv, 4);
                    let x = em.eval(operand, At { rows, cols, i, j, vector: true }, &mut HashMap::new())?;
                    let a = em.b.use_var(vvar);
                    let a = em.combine(max, a, x);
                    em.b.def_var(vvar, a);
                    Ok(())
                })?;
                em.for_range(vec_cols * 4, cols, |em, j| {
                    let x = em.eval(operand, At { rows, cols, i, j, vector: false }, &mut HashMap::new())?;
                    let a = em.b.use_var(svar);
                    let a = em.combine(max, a, x);
                    em.b.def_var(svar, a);
                    Ok(())
                })?;
                if along_rows {
                    let v = em.b.use_var(vvar);
                    let h = em.horizontal(max, v);
                    let s = em.b.use_var(svar);
                    let r = em.combine(max, h, s);
                    let off = em.b.ins().imul_imm_s(i, 4);
                    let base = em.b.ins().iadd_imm_s(em.arena, (out_offset * 4) as i64);
                    let addr = em.b.ins().iadd(base, off);
                    em.b.ins().store(flags, r, addr, 0);
                }
                Ok(())
            };
            self.for_range(0, rows, body)?;
            if whole {
                let v = self.b.use_var(vvar);
                let h = self.horizontal(max, v);
                let s = self.b.use_var(svar);
                let r = self.combine(max, h, s);
                let base = self.b.ins().iadd_imm_s(self.arena, (out_offset * 4) as i64);
                self.b.ins().store(flags, r, base, 0);
            }
            return Ok(());
        }
        // Over the rows (axis 0 of a matrix): one accumulator per column, four columns at a time.
        for vector in [true, false] {
            let (from, to, step) = if vector { (0, vec_cols, 4) } else { (vec_cols * 4, cols, 1) };
            let ty = self.ty(vector);
            self.for_range(from, to, |em, jj| {
                let j = if vector { em.b.ins().imul_imm_s(jj, step) } else { jj };
                let var = em.b.declare_var(ty);
                let z = em.constant(init, vector);
                em.b.def_var(var, z);
                em.for_range(0, rows, |em, i| {
                    let x = em.eval(operand, At { rows, cols, i, j, vector }, &mut HashMap::new())?;
                    let a = em.b.use_var(var);
                    let a = em.combine(max, a, x);
                    em.b.def_var(var, a);
                    Ok(())
                })?;
                let r = em.b.use_var(var);
                let off = em.b.ins().imul_imm_s(j, 4);
                let base = em.b.ins().iadd_imm_s(em.arena, (out_offset * 4) as i64);
                let addr = em.b.ins().iadd(base, off);
                em.b.ins().store(flags, r, addr, 0);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A `logsoftmax` instruction over the rows of a matrix: store the operand, then its
    /// maximum, `log(sum(exp(x - max)))` and the difference, row by row.
    pub fn log_softmax(&mut self, node: Id, out_offset: usize) -> Cg<()> {
        let g = self.g;
        let operand = g.args(node)[0];
        let (rows, cols) = space2(g.shape(node));
        let vec_cols = cols / 4;
        let out_view = View {
            slot: super::fuse::Slot { offset: out_offset, len: rows * cols },
            shape: vec![rows, cols],
            strides: vec![cols as isize, 1],
        };
        let shape = [rows, cols];
        self.for_range(0, rows, |em, i| {
            // Pass 1: the operand into the output row, with its maximum.
            let vmax = em.b.declare_var(types::F32X4);
            let smax = em.b.declare_var(types::F32);
            let v0 = em.constant(f32::NEG_INFINITY, true);
            let s0 = em.constant(f32::NEG_INFINITY, false);
            em.b.def_var(vmax, v0);
            em.b.def_var(smax, s0);
            for vector in [true, false] {
                let (from, to) = if vector { (0, vec_cols) } else { (vec_cols * 4, cols) };
                let var = if vector { vmax } else { smax };
                em.for_range(from, to, |em, jj| {
                    let j = if vector { em.b.ins().imul_imm_s(jj, 4) } else { jj };
                    let at = At { rows, cols, i, j, vector };
                    let x = em.eval(operand, at, &mut HashMap::new())?;
                    em.store(out_offset, cols, at, x);
                    let m = em.b.use_var(var);
                    let m = em.b.ins().fmax(m, x);
                    em.b.def_var(var, m);
                    Ok(())
                })?;
            }
            let vm = em.b.use_var(vmax);
            let hm = em.horizontal(true, vm);
            let sm = em.b.use_var(smax);
            let row_max = em.b.ins().fmax(hm, sm);
            // Pass 2: sum of exp(x - max).
            let vsum = em.b.declare_var(types::F32X4);
            let ssum = em.b.declare_var(types::F32);
            let z4 = em.constant(0.0, true);
            let z1 = em.constant(0.0, false);
            em.b.def_var(vsum, z4);
            em.b.def_var(ssum, z1);
            for vector in [true, false] {
                let (from, to) = if vector { (0, vec_cols) } else { (vec_cols * 4, cols) };
                let var = if vector { vsum } else { ssum };
                em.for_range(from, to, |em, jj| {
                    let j = if vector { em.b.ins().imul_imm_s(jj, 4) } else { jj };
                    let at = At { rows, cols, i, j, vector };
                    let x = em.load(&out_view, &shape, at);
                    let m = if vector { em.b.ins().splat(types::F32X4, row_max) } else { row_max };
                    let d = em.b.ins().fsub(x, m);
                    let e = vecmath::exp(em.b, d);
                    let s = em.b.use_var(var);
                    let s = em.b.ins().fadd(s, e);
                    em.b.def_var(var, s);
                    Ok(())
                })?;
            }
            let vs = em.b.use_var(vsum);
            let hs = em.horizontal(false, vs);
            let ss = em.b.use_var(ssum);
            let total = em.b.ins().fadd(hs, ss);
            let log_total = vecmath::log(em.b, total);
            let lse = em.b.ins().fadd(row_max, log_total);
            // Pass 3: x - lse.
            for vector in [true, false] {
                let (from, to) = if vector { (0, vec_cols) } else { (vec_cols * 4, cols) };
                em.for_range(from, to, |em, jj| {
                    let j = if vector { em.b.ins().imul_imm_s(jj, 4) } else { jj };
                    let at = At { rows, cols, i, j, vector };
                    let x = em.load(&out_view, &shape, at);
                    let l = if vector { em.b.ins().splat(types::F32X4, lse) } else { lse };
                    let y = em.b.ins().fsub(x, l);
                    em.store(out_offset, cols, at, y);
                    Ok(())
                })?;
            }
            Ok(())
        })
    }
}
