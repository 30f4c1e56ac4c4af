//! `exp` inline in compiled scalar code, on `f64` or on both lanes of an `f64x2`: the
//! operations of `graph::math::exp`, one for one, so that compiled code and the interpreter
//! agree to the bit (the algorithm and its error bound are explained there).
//!
//! Each step below names the line of `graph::math::exp` it mirrors. The vector form works on
//! both lanes at once except for the table lookup, which extracts each lane's index and loads
//! its entry from `graph::math::TABLE` (SSE has no gather); a single `f64` is splatted into
//! both lanes and read back from lane 0.
//!
//! **Invariant:** the table index is masked to `0..128` before the load, whatever the input
//! (NaN included), so the generated code never reads outside the table.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use crate::graph::math::{BIAS, C2, C3, C4, C5, EXP_HI, EXP_LO, INV_LN2N, LN2N_HI, LN2N_LO, SHIFTER, TABLE};

/// Reads of the table: it is a `static`, never written, always mapped.
const TABLE_READ: MemFlagsData = MemFlagsData::new().with_notrap().with_readonly().with_can_move();

/// `e^x` for an `f64` or `f64x2` value, bit for bit as `graph::math::exp`.
pub fn exp(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    match b.func.dfg.value_type(x) {
        types::F64X2 => exp2(b, x),
        types::F64 => {
            let v = b.ins().splat(types::F64X2, x);
            let r = exp2(b, v);
            b.ins().extractlane(r, 0)
        }
        ty => panic!("math::exp: expected f64 or f64x2, got {ty}"),
    }
}

fn float(b: &mut FunctionBuilder<'_>, c: f64) -> Value {
    let s = b.ins().f64const(c);
    b.ins().splat(types::F64X2, s)
}

fn int(b: &mut FunctionBuilder<'_>, c: i64) -> Value {
    let s = b.ins().iconst(types::I64, c);
    b.ins().splat(types::I64X2, s)
}

fn bits(b: &mut FunctionBuilder<'_>, v: Value) -> Value {
    b.ins().bitcast(types::I64X2, MemFlagsData::new(), v)
}

fn to_float(b: &mut FunctionBuilder<'_>, v: Value) -> Value {
    b.ins().bitcast(types::F64X2, MemFlagsData::new(), v)
}

/// `cond(a, c) ? t : f` lane by lane.
fn select(b: &mut FunctionBuilder<'_>, cc: FloatCC, a: Value, c: Value, t: Value, f: Value) -> Value {
    let m = b.ins().fcmp(cc, a, c);
    let m = to_float(b, m);
    b.ins().bitselect(m, t, f)
}

/// The `f64` at `offset` in each lane's table entry, as one `f64x2`.
fn gather(b: &mut FunctionBuilder<'_>, entry: [Value; 2], offset: i32) -> Value {
    let lo = b.ins().load(types::F64, TABLE_READ, entry[0], offset);
    let hi = b.ins().load(types::F64, TABLE_READ, entry[1], offset);
    let v = b.ins().scalar_to_vector(types::F64X2, lo);
    b.ins().insertlane(v, hi, 1)
}

fn exp2(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    // let x = if EXP_HI < x { EXP_HI } else { x }; let x = if x < EXP_LO { EXP_LO } else { x };
    let hi = float(b, EXP_HI);
    let x = select(b, FloatCC::LessThan, hi, x, hi, x);
    let lo = float(b, EXP_LO);
    let x = select(b, FloatCC::LessThan, x, lo, lo, x);
    // let t = x * INV_LN2N + SHIFTER; let kf = t - SHIFTER;
    let inv = float(b, INV_LN2N);
    let shifter = float(b, SHIFTER);
    let z = b.ins().fmul(x, inv);
    let t = b.ins().fadd(z, shifter);
    let kf = b.ins().fsub(t, shifter);
    // let r = (x - kf * LN2N_HI) - kf * LN2N_LO;
    let c_hi = float(b, LN2N_HI);
    let c_lo = float(b, LN2N_LO);
    let a = b.ins().fmul(kf, c_hi);
    let d = b.ins().fsub(x, a);
    let e = b.ins().fmul(kf, c_lo);
    let r = b.ins().fsub(d, e);
    // let kb = bits(t) - (bits(SHIFTER) - BIAS); let [top, tail] = TABLE[kb & 127];
    let ti = bits(b, t);
    let off = int(b, (SHIFTER.to_bits() as i64).wrapping_sub(BIAS));
    let kb = b.ins().isub(ti, off);
    let mask = int(b, 127);
    let j = b.ins().band(kb, mask);
    let base = b.ins().iconst(types::I64, TABLE.as_ptr() as i64);
    let entry = [0u8, 1].map(|lane| {
        let jl = b.ins().extractlane(j, lane);
        let byte = b.ins().ishl_imm_u(jl, 4); // 16 bytes an entry
        b.ins().iadd(base, byte)
    });
    let top = gather(b, entry, 0);
    let tail = gather(b, entry, 8);
    // let eb = kb >> 7; let e1b = eb >> 1; let e2b = eb - e1b;
    let eb = b.ins().ushr_imm_u(kb, 7);
    let e1b = b.ins().ushr_imm_u(eb, 1);
    let e2b = b.ins().isub(eb, e1b);
    // let s1 = from_bits(top + ((e1b - 544) << 52)); let s2 = from_bits((e2b + 1023 - 544) << 52);
    let k544 = int(b, 544);
    let e1 = b.ins().isub(e1b, k544);
    let e1 = b.ins().ishl_imm_u(e1, 52);
    let top = bits(b, top);
    let s1 = b.ins().iadd(top, e1);
    let s1 = to_float(b, s1);
    let k479 = int(b, 1023 - 544);
    let e2 = b.ins().iadd(e2b, k479);
    let e2 = b.ins().ishl_imm_u(e2, 52);
    let s2 = to_float(b, e2);
    // let r2 = r * r; let p = tail + r + r2 * (C2 + r * C3) + r2 * r2 * (C4 + r * C5);
    let r2 = b.ins().fmul(r, r);
    let c3 = float(b, C3);
    let c2 = float(b, C2);
    let q = b.ins().fmul(r, c3);
    let q = b.ins().fadd(c2, q);
    let q = b.ins().fmul(r2, q);
    let c5 = float(b, C5);
    let c4 = float(b, C4);
    let u = b.ins().fmul(r, c5);
    let u = b.ins().fadd(c4, u);
    let r4 = b.ins().fmul(r2, r2);
    let u = b.ins().fmul(r4, u);
    let p = b.ins().fadd(tail, r);
    let p = b.ins().fadd(p, q);
    let p = b.ins().fadd(p, u);
    // (s1 + s1 * p) * s2
    let y = b.ins().fmul(s1, p);
    let y = b.ins().fadd(s1, y);
    b.ins().fmul(y, s2)
}
