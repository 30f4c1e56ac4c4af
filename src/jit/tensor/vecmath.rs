//! Inline vector math for fused kernels: `exp`, `log`, `sigmoid`, `tanh` and `softplus` on
//! `f32x4` (and on `f32`, through lane 0), emitted as straight-line Cranelift code.
//!
//! Cranelift has no instruction for any of them, and a call per lane into libm would cost
//! more than the rest of an elementwise loop, so each is a range reduction and a polynomial:
//!
//! * `exp(x)`: `x = n ln2 + r` with `|r| <= ln2/2` (`n` rounded with the 1.5*2^23 shifter,
//!   `ln2` in two parts so `r` is exact), a degree-7 polynomial for `exp(r)`, then `2^n` built
//!   in the exponent bits in two halves so that results near overflow and in the subnormal
//!   range round once.
//! * `log(x)`: the exponent and a mantissa in `[sqrt(1/2), sqrt(2))` from the bits, a
//!   degree-11 polynomial for `ln(1 + f)`; subnormals are scaled by 2^23 first.
//! * `sigmoid`, `tanh`, `softplus` are built from `exp(-|x|)`, which never overflows, with
//!   a polynomial for small `|tanh|` where `1 - e` would cancel.
//!
//! **Error bounds**, measured against the correctly rounded f64 result (the tests below hold
//! them over dense sweeps, random bit patterns, every binade and the special values; `log` was
//! also checked on every positive float): `exp`, `log`, `tanh` ≤ 1 ulp; `sigmoid`, `softplus`
//! ≤ 2 ulps. Infinities, NaN, zeros and subnormals give what `f64` gives rounded to `f32`.
//! The vector and scalar forms agree bit for bit.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `exp(x)` for an `f32` or `f32x4` value.
pub fn exp(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    lanewise(b, x, "exp", exp4)
}

/// Natural logarithm of an `f32` or `f32x4` value.
pub fn log(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    lanewise(b, x, "log", log4)
}

/// Logistic sigmoid `1 / (1 + exp(-x))`.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    lanewise(b, x, "sigmoid", sigmoid4)
}

/// Hyperbolic tangent.
pub fn tanh(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    lanewise(b, x, "tanh", tanh4)
}

/// `softplus(x) = ln(1 + exp(x))`.
pub fn softplus(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    lanewise(b, x, "softplus", softplus4)
}

/// Applies the `f32x4` emitter `f` to `x`; an `f32` is splatted, mapped and read back from lane 0.
fn lanewise(
    b: &mut FunctionBuilder<'_>,
    x: Value,
    name: &str,
    f: fn(&mut V<'_, '_>, Value) -> Value,
) -> Value {
    match b.func.dfg.value_type(x) {
        types::F32X4 => f(&mut V(b), x),
        types::F32 => {
            let v = b.ins().splat(types::F32X4, x);
            let r = f(&mut V(b), v);
            b.ins().extractlane(r, 0)
        }
        ty => panic!("vecmath::{name}: expected f32 or f32x4, got {ty}"),
    }
}

// ---- constants -------------------------------------------------------------------------------

/// Bits of the sign of an `f32`.
const SIGN: i32 = i32::MIN;
/// `ln 2` rounded to `f32`, and the rest: `LN2_HI + LN2_LO = ln 2` to about 2^-50.
const LN2_HI: f32 = f32::from_bits(0x3f31_7218);
const LN2_LO: f32 = -1.904_654_3e-9;

/// `exp` clamps its argument to `[EXP_LO, EXP_HI]`: outside it the result is 0 or +inf anyway,
/// and inside it the exponent `n` stays in `[-150, 145]`, so `2^(n/2)` is a normal float.
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 100.0;
/// `1.5 * 2^23`: adding it to `|y| < 2^22` rounds `y` to an integer, which then sits in the
/// low mantissa bits.
const SHIFTER: f32 = 12_582_912.0;
/// `exp(r) = 1 + r + r^2 * (EXP_P[0] * r^5 + ... + EXP_P[5])` on `|r| <= ln2/2` (SLEEF `expf_u10`).
const EXP_P: [f32; 6] = [0.00019852762, 0.0013930436, 0.008333361, 0.041666485, 0.16666667, 0.5];

/// Bits of `f32` `sqrt(1/2)`: `log` scales the mantissa into `[sqrt(1/2), sqrt(2))`.
const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
/// `ln(1 + f) = f - f^2/2 + f^3 * P(f)` on `[sqrt(1/2) - 1, sqrt(2) - 1]` (Cephes `logf`).
const LOG_P: [f32; 9] = [
    0.070376836,
    -0.1151461,
    0.11676999,
    -0.12420141,
    0.14249323,
    -0.16668057,
    0.20000716,
    -0.24999994,
    0.3333333,
];

/// `tanh(x) = x + x^3 * P(x^2)` on `|x| < TANH_SMALL` (Cephes `tanhf`).
const TANH_SMALL: f32 = 0.625;
const TANH_P: [f32; 5] = [-0.0057049887, 0.02063909, -0.053739715, 0.13331442, -0.3333328];

// ---- emitters ---------------------------------------------------------------------------------

/// A function builder with shorthands for `f32x4` arithmetic.
struct V<'a, 'b>(&'a mut FunctionBuilder<'b>);

impl V<'_, '_> {
    fn f(&mut self, c: f32) -> Value {
        let s = self.0.ins().f32const(c);
        self.0.ins().splat(types::F32X4, s)
    }
    fn i(&mut self, c: i32) -> Value {
        let s = self.0.ins().iconst(types::I32, i64::from(c as u32));
        self.0.ins().splat(types::I32X4, s)
    }
    fn bits(&mut self, v: Value) -> Value {
        self.0.ins().bitcast(types::I32X4, MemFlagsData::new(), v)
    }
    fn float(&mut self, v: Value) -> Value {
        self.0.ins().bitcast(types::F32X4, MemFlagsData::new(), v)
    }
    fn add(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().fadd(a, b)
    }
    fn sub(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().fsub(a, b)
    }
    fn mul(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().fmul(a, b)
    }
    fn div(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().fdiv(a, b)
    }
    /// `a * b + c`, rounded once.
    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.0.ins().fma(a, b, c)
    }
    fn fma_k(&mut self, a: Value, b: f32, c: Value) -> Value {
        let b = self.f(b);
        self.fma(a, b, c)
    }
    /// Horner: `p[0] * x^(n-1) + ... + p[n-1]`.
    fn poly(&mut self, x: Value, p: &[f32]) -> Value {
        let mut u = self.f(p[0]);
        for &c in &p[1..] {
            let c = self.f(c);
            u = self.fma(u, x, c);
        }
        u
    }
    /// An all-ones/all-zeros lane mask (as `f32x4`) where `a cc b`.
    fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        let m = self.0.ins().fcmp(cc, a, b);
        self.float(m)
    }
    /// `mask ? t : f` lane by lane.
    fn sel(&mut self, mask: Value, t: Value, f: Value) -> Value {
        self.0.ins().bitselect(mask, t, f)
    }
    /// `a < b ? a : b`: `minps`; a NaN `b` passes through.
    fn min(&mut self, a: Value, b: Value) -> Value {
        let m = self.cmp(FloatCC::LessThan, a, b);
        self.sel(m, a, b)
    }
    /// `b < a ? a : b`: `maxps`; a NaN `b` passes through.
    fn max(&mut self, a: Value, b: Value) -> Value {
        let m = self.cmp(FloatCC::LessThan, b, a);
        self.sel(m, a, b)
    }
    fn iadd(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().iadd(a, b)
    }
    fn isub(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().isub(a, b)
    }
    fn iand(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().band(a, b)
    }
    fn ior(&mut self, a: Value, b: Value) -> Value {
        self.0.ins().bor(a, b)
    }
    /// `2^k` for integer lanes `k` in `[-126, 127]`.
    fn pow2(&mut self, k: Value) -> Value {
        let e = self.0.ins().ishl_imm_s(k, 23);
        let one = self.i(1.0f32.to_bits() as i32);
        let e = self.iadd(e, one);
        self.float(e)
    }
    /// `-|x|`
    fn neg_abs(&mut self, x: Value) -> Value {
        let xi = self.bits(x);
        let s = self.i(SIGN);
        let r = self.ior(xi, s);
        self.float(r)
    }
}

fn exp4(v: &mut V<'_, '_>, x: Value) -> Value {
    let hi = v.f(EXP_HI);
    let x = v.min(hi, x);
    let lo = v.f(EXP_LO);
    let x = v.max(lo, x);
    // n = round(x / ln 2), as a float and as an integer
    let shifter = v.f(SHIFTER);
    let t = v.fma_k(x, std::f32::consts::LOG2_E, shifter);
    let n = v.sub(t, shifter);
    let r = v.fma_k(n, -LN2_HI, x);
    let r = v.fma_k(n, -LN2_LO, r);
    let u = v.poly(r, &EXP_P);
    let one = v.f(1.0);
    let u = v.fma(u, r, one);
    let p = v.fma(u, r, one);
    // p * 2^n as p * 2^a * 2^(n-a): both factors normal, the product rounds once.
    let ti = v.bits(t);
    let s = v.i(SHIFTER.to_bits() as i32);
    let ni = v.isub(ti, s);
    let a = v.0.ins().sshr_imm_s(ni, 1);
    let c = v.isub(ni, a);
    let pa = v.pow2(a);
    let pc = v.pow2(c);
    let y = v.mul(p, pa);
    v.mul(y, pc)
}

/// `ln x` for `x` in `[2^-126, 2^128)`; other lanes get garbage (the callers fix them).
fn log_core(v: &mut V<'_, '_>, x: Value, extra_exponent: Option<Value>) -> Value {
    let xi = v.bits(x);
    let off = v.i(SQRT_HALF_BITS);
    let t = v.isub(xi, off);
    let mut e = v.0.ins().sshr_imm_s(t, 23);
    if let Some(k) = extra_exponent {
        e = v.iadd(e, k);
    }
    let mask = v.i(0x007f_ffff);
    let mi = v.iand(t, mask);
    let mi = v.iadd(mi, off);
    let m = v.float(mi);
    let one = v.f(1.0);
    let f = v.sub(m, one);
    let ef = v.0.ins().fcvt_from_sint(types::F32X4, e);
    let z = v.mul(f, f);
    let q = v.poly(f, &LOG_P);
    let fz = v.mul(f, z);
    let y = v.mul(fz, q);
    let y = v.fma_k(ef, LN2_LO, y);
    let y = v.fma_k(z, -0.5, y);
    let r = v.add(f, y);
    v.fma_k(ef, LN2_HI, r)
}

fn log4(v: &mut V<'_, '_>, x: Value) -> Value {
    // Subnormals: scale by 2^23 and take 23 off the exponent.
    let min = v.f(f32::MIN_POSITIVE);
    let tiny = v.cmp(FloatCC::LessThan, x, min);
    let k = v.f(8_388_608.0);
    let scaled = v.mul(x, k);
    let xs = v.sel(tiny, scaled, x);
    let tiny_i = v.bits(tiny);
    let m23 = v.i(-23);
    let adj = v.iand(tiny_i, m23);
    let r = log_core(v, xs, Some(adj));
    // +inf and NaN: x itself; x < 0: NaN; x = ±0: -inf.
    let inf = v.f(f32::INFINITY);
    let big = v.cmp(FloatCC::UnorderedOrGreaterThanOrEqual, x, inf);
    let r = v.sel(big, x, r);
    let zero = v.f(0.0);
    let neg = v.cmp(FloatCC::LessThan, x, zero);
    let nan = v.f(f32::NAN);
    let r = v.sel(neg, nan, r);
    let is_zero = v.cmp(FloatCC::Equal, x, zero);
    let ninf = v.f(f32::NEG_INFINITY);
    v.sel(is_zero, ninf, r)
}

fn sigmoid4(v: &mut V<'_, '_>, x: Value) -> Value {
    // e = exp(-|x|) in (0, 1]; sigmoid = 1/(1+e) for x >= 0, e/(1+e) for x < 0.
    let nx = v.neg_abs(x);
    let e = exp4(v, nx);
    let one = v.f(1.0);
    let d = v.add(one, e);
    let zero = v.f(0.0);
    let pos = v.cmp(FloatCC::GreaterThanOrEqual, x, zero);
    let num = v.sel(pos, one, e);
    v.div(num, d)
}

fn tanh4(v: &mut V<'_, '_>, x: Value) -> Value {
    let xi = v.bits(x);
    let abs_mask = v.i(i32::MAX);
    let ai = v.iand(xi, abs_mask);
    let ax = v.float(ai);
    // small |x|: odd polynomial
    let z = v.mul(ax, ax);
    let q = v.poly(z, &TANH_P);
    let az = v.mul(ax, z);
    let small = v.fma(q, az, ax);
    // large |x|: (1 - e) / (1 + e), e = exp(-2|x|)
    let m2 = v.f(-2.0);
    let y = v.mul(ax, m2);
    let e = exp4(v, y);
    let one = v.f(1.0);
    let num = v.sub(one, e);
    let den = v.add(one, e);
    let large = v.div(num, den);
    let lim = v.f(TANH_SMALL);
    let is_small = v.cmp(FloatCC::LessThan, ax, lim);
    let t = v.sel(is_small, small, large);
    // restore the sign
    let ti = v.bits(t);
    let sign = v.i(SIGN);
    let s = v.iand(xi, sign);
    let r = v.ior(ti, s);
    v.float(r)
}

fn softplus4(v: &mut V<'_, '_>, x: Value) -> Value {
    let nx = v.neg_abs(x);
    let e = exp4(v, nx);
    // log1p(e) = log(u) + c/u with u = 1 + e rounded and c = e - (u - 1) its rounding error.
    let one = v.f(1.0);
    let u = v.add(one, e);
    let um1 = v.sub(u, one);
    let c = v.sub(e, um1);
    let cu = v.div(c, u);
    let l = log_core(v, u, None);
    let l = v.add(l, cu);
    let zero = v.f(0.0);
    let m = v.max(x, zero);
    v.add(m, l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::{AbiParam, Function};
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_frontend::FunctionBuilderContext;
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{Module, default_libcall_names};

    type Kernel = unsafe extern "C" fn(*const f32, *mut f32, i64);
    type Emit = fn(&mut FunctionBuilder<'_>, Value) -> Value;

    /// A function compiled twice: an `f32x4` loop and an `f32` loop over a buffer.
    struct Compiled {
        _module: JITModule,
        vector: Kernel,
        scalar: Kernel,
        /// Disassembly of the vector kernel.
        disasm: String,
    }

    fn isa() -> cranelift_codegen::isa::OwnedTargetIsa {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").unwrap();
        flags.set("use_colocated_libcalls", "false").unwrap();
        flags.set("is_pic", "false").unwrap();
        cranelift_native::builder().unwrap().finish(settings::Flags::new(flags)).unwrap()
    }

    /// `fn(input, output, n)`: `output[i] = f(input[i])` for `i < n`, `lanes` at a time.
    fn build(module: &JITModule, func: &mut Function, fbc: &mut FunctionBuilderContext, f: Emit, lanes: i64) {
        let ty = if lanes == 4 { types::F32X4 } else { types::F32 };
        let mut b = FunctionBuilder::new(func, fbc);
        let entry = b.create_block();
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.append_block_param(head, types::I64);
        b.switch_to_block(entry);
        let &[input, output, n] = b.block_params(entry) else { unreachable!() };
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(head, &[zero.into()]);
        b.switch_to_block(head);
        let i = b.block_params(head)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, i, n);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        let off = b.ins().ishl_imm_s(i, 2);
        let src = b.ins().iadd(input, off);
        let dst = b.ins().iadd(output, off);
        let flags = MemFlagsData::new().with_notrap();
        let x = b.ins().load(ty, flags, src, 0);
        let y = f(&mut b, x);
        b.ins().store(flags, y, dst, 0);
        let next = b.ins().iadd_imm_s(i, lanes);
        b.ins().jump(head, &[next.into()]);
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }

    fn compile(f: Emit) -> Compiled {
        let mut module = JITModule::new(JITBuilder::with_isa(isa(), default_libcall_names()));
        let mut ctx = module.make_context();
        let mut fbc = FunctionBuilderContext::new();
        let ptr = module.target_config().pointer_type();
        let mut ids = Vec::new();
        let mut disasm = String::new();
        for lanes in [4, 1] {
            ctx.func.signature.params.extend([
                AbiParam::new(ptr),
                AbiParam::new(ptr),
                AbiParam::new(types::I64),
            ]);
            let id = module.declare_anonymous_function(&ctx.func.signature).unwrap();
            build(&module, &mut ctx.func, &mut fbc, f, lanes);
            ctx.set_disasm(lanes == 4);
            module.define_function(id, &mut ctx).unwrap_or_else(|e| panic!("{e:?}"));
            if lanes == 4 {
                disasm = ctx.compiled_code().and_then(|c| c.vcode.clone()).unwrap_or_default();
            }
            module.clear_context(&mut ctx);
            ids.push(id);
        }
        module.finalize_definitions().unwrap();
        // SAFETY: both functions were built with the signature `Kernel` describes.
        let [vector, scalar] = [ids[0], ids[1]]
            .map(|id| unsafe { std::mem::transmute::<*const u8, Kernel>(module.get_finalized_function(id)) });
        Compiled { _module: module, vector, scalar, disasm }
    }

    impl Compiled {
        fn run(&self, xs: &[f32], vector: bool) -> Vec<f32> {
            let mut input = xs.to_vec();
            input.resize(xs.len().next_multiple_of(4), 0.0);
            let mut out = vec![0.0f32; input.len()];
            let k = if vector { self.vector } else { self.scalar };
            // SAFETY: both buffers hold `input.len()` floats, a multiple of 4.
            unsafe { k(input.as_ptr(), out.as_mut_ptr(), input.len() as i64) };
            out.truncate(xs.len());
            out
        }
    }

    /// Distance in representable floats; 0 for two NaNs, `u64::MAX` for a NaN and a number.
    fn ulps(a: f32, b: f32) -> u64 {
        fn key(f: f32) -> i64 {
            let m = i64::from(f.to_bits() & 0x7fff_ffff);
            if f.is_sign_negative() { -m } else { m }
        }
        match (a.is_nan(), b.is_nan()) {
            (true, true) => 0,
            (false, false) => key(a).abs_diff(key(b)),
            _ => u64::MAX,
        }
    }

    /// Largest error (in ulps) and where it occurs; also checks vector and scalar code agree
    /// bit for bit.
    fn max_error(k: &Compiled, xs: &[f32], reference: impl Fn(f32) -> f32) -> (u64, f32) {
        let vs = k.run(xs, true);
        let ss = k.run(xs, false);
        let mut worst = (0, f32::NAN);
        for ((&x, &v), &s) in xs.iter().zip(&vs).zip(&ss) {
            assert_eq!(v.to_bits(), s.to_bits(), "f32x4 and f32 differ at x = {x:e}: {v:e} vs {s:e}");
            let d = ulps(v, reference(x));
            if d > worst.0 {
                worst = (d, x);
            }
        }
        worst
    }

    // ---- inputs ----

    /// `lo, lo + step, ...` up to `hi`.
    fn sweep(lo: f32, hi: f32, step: f32) -> Vec<f32> {
        let n = ((hi - lo) / step) as usize;
        (0..=n).map(|i| lo + i as f32 * step).collect()
    }

    /// Every float from `a` to `b`, both of the same sign, `|a| <= |b|`.
    fn every(a: f32, b: f32) -> Vec<f32> {
        (a.to_bits()..=b.to_bits()).map(f32::from_bits).collect()
    }

    /// Every `n`-th float from `a` to `b` (as [`every`]).
    fn every_nth(a: f32, b: f32, n: usize) -> Vec<f32> {
        (a.to_bits()..=b.to_bits()).step_by(n).map(f32::from_bits).collect()
    }

    /// Every `step`-th bit pattern that is a finite float.
    fn strided(step: usize) -> Vec<f32> {
        (0..=u32::MAX).step_by(step).map(f32::from_bits).filter(|x| x.is_finite()).collect()
    }

    /// splitmix64
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    /// `n` uniform values in `[lo, hi)`.
    fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut r = rng(seed);
        (0..n).map(|_| lo + (hi - lo) * ((r() >> 40) as f32 / (1u64 << 24) as f32)).collect()
    }

    /// `n` finite floats with uniformly random bit patterns (all magnitudes equally likely).
    fn random_bits(n: usize, seed: u64) -> Vec<f32> {
        let mut r = rng(seed);
        std::iter::repeat_with(|| f32::from_bits(r() as u32)).filter(|x| x.is_finite()).take(n).collect()
    }

    /// 4096 values in every binade from `2^lo` to `2^hi` (and their negations if `neg`).
    fn binades(lo: i32, hi: i32) -> Vec<f32> {
        let first = ((lo + 127).max(0) as u32) << 23;
        let last = ((hi + 127).min(255) as u32) << 23;
        (first..last).step_by(1 << 11).map(f32::from_bits).collect()
    }

    fn sigmoid_ref(x: f32) -> f32 {
        (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
    }
    fn tanh_ref(x: f32) -> f32 {
        f64::from(x).tanh() as f32
    }
    fn softplus_ref(x: f32) -> f32 {
        let x = f64::from(x);
        (x.max(0.0) + (-x.abs()).exp().ln_1p()) as f32
    }

    fn exp_ref(x: f32) -> f32 {
        f64::from(x).exp() as f32
    }
    fn log_ref(x: f32) -> f32 {
        f64::from(x).ln() as f32
    }

    /// Inputs shared by every function: dense sweeps, random magnitudes and bit patterns.
    fn common() -> Vec<(&'static str, Vec<f32>)> {
        vec![
            ("sweep", sweep(-110.0, 110.0, 1.0 / 512.0)),
            ("fine", sweep(-4.0, 4.0, 1.0 / 65536.0)),
            ("uniform", uniform(200_000, 1, -110.0, 110.0)),
            ("bits", random_bits(200_000, 2)),
            ("strided", strided(4099)),
            ("near zero", every_nth(0.0, 1e-6, 4099)),
        ]
    }

    const SPECIAL: [f32; 12] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-45,
        f32::MAX,
        f32::MIN,
        88.72,
    ];

    /// `f` is within `bound` ulps of `reference` on every input set, f32x4 and f32 agree bit
    /// for bit, and special values (infinities, NaN, zeros, subnormals) come out exactly as
    /// the reference says.
    fn check(name: &str, f: Emit, reference: fn(f32) -> f32, bound: u64, extra: Vec<f32>) {
        let k = compile(f);
        let mut sets = common();
        sets.push(("extra", extra));
        for (what, xs) in sets {
            let (err, at) = max_error(&k, &xs, reference);
            assert!(err <= bound, "{name} on {what}: {err} ulps at x = {at:e} (bound {bound})");
        }
        let (err, at) = max_error(&k, &SPECIAL, reference);
        assert!(err <= bound, "{name} on special values: {err} ulps at x = {at:e}");
        assert!(
            !k.disasm.lines().any(|l| l.trim_start().starts_with("call")),
            "{name} must be inline:\n{}",
            k.disasm
        );
    }

    #[test]
    fn exp_is_within_one_ulp() {
        // Around the overflow and underflow thresholds, and every float in [-1/16, 1/16].
        let mut edges = sweep(85.0, 90.0, 1.0 / 8192.0);
        edges.extend(sweep(-106.0, -85.0, 1.0 / 4096.0));
        edges.extend(every_nth(0.0, 0.0625, 1021));
        edges.extend(every_nth(-0.0, -0.0625, 1021));
        check("exp", exp, exp_ref, 1, edges);
    }

    #[test]
    fn log_is_within_one_ulp() {
        // 4096 values in every binade, subnormals included, and every float near 1.
        let mut xs = binades(-149, 128);
        xs.extend(every(0.99, 1.01));
        xs.extend(every_nth(0.0, f32::MIN_POSITIVE, 1021));
        check("log", log, log_ref, 1, xs);
    }

    #[test]
    fn sigmoid_is_within_two_ulps() {
        check("sigmoid", sigmoid, sigmoid_ref, 2, binades(-30, 8));
    }

    #[test]
    fn tanh_is_within_one_ulp() {
        check("tanh", tanh, tanh_ref, 1, binades(-30, 8));
    }

    #[test]
    fn softplus_is_within_two_ulps() {
        check("softplus", softplus, softplus_ref, 2, binades(-30, 8));
    }
}
