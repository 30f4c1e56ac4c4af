//! Host functions the generated code calls: every transcendental that has no Cranelift
//! instruction (Cranelift has none for exp, log, sin, ...). Loop bodies compute `exp` inline
//! instead (`jit::scalar::math`), with the same operations as `sd_exp`'s `graph::math::exp`.
//! The pair forms of `exp`, `sigmoid`, `sin`, `cos` and `tanh` compute both lanes as one vector
//! (`graph::math`'s two-lane code), the others lane by lane; their four-lane forms (two pairs
//! in, two written back) compute all four in one AVX register where the processor has AVX2.
//!
//! Each is an `extern "C"` wrapper around **the same Rust function the interpreter uses**
//! (the function table's `eval`), so compiled code and interpreter agree to the bit on them.
//! Registered by name with the JIT builder; an unregistered name would panic inside Cranelift
//! at finalize time, so `lower.rs` only ever names functions from [`HOST_FUNCTIONS`].

use crate::graph::Func;
#[cfg(all(target_arch = "x86_64", unix))]
use crate::graph::math;

macro_rules! host {
    ($($name:ident, $pair:ident, $quad:ident => $func:expr $(, $lanes:path)?);* $(;)?) => {
        $(
            extern "C" fn $name(x: f64) -> f64 {
                Func::eval($func, x)
            }

            /// Both lanes of a pair at once (one call instead of two, and the caller's
            /// vector registers saved around one call instead of two), each lane exactly
            /// as the one-lane function computes it: by `graph::math`'s two-lane form where
            /// there is one (`exp`, `sigmoid`, `sin`, `cos`, `tanh`), else lane by lane.
            #[cfg(all(target_arch = "x86_64", unix))]
            #[allow(improper_ctypes_definitions)] // see `Pair`
            extern "C" fn $pair(x: Pair) -> Pair {
                $( return $lanes(crate::graph::math::X2(x)).0; )?
                #[allow(unreachable_code)]
                {
                    let [a, b] = from_pair(x);
                    to_pair([Func::eval($func, a), Func::eval($func, b)])
                }
            }

            /// Four lanes, as two pairs (lanes 0 and 1 in `a`), into `out[0]` and `out[1]`:
            /// each lane exactly as the one-lane function computes it, by `graph::math`'s
            /// four-lane form where there is one (in one AVX register where the processor
            /// has AVX2), else lane by lane. (Two vectors cannot be returned in registers:
            /// see [`Pair`].)
            ///
            /// # Safety
            /// `out` is valid for writing two pairs.
            #[cfg(all(target_arch = "x86_64", unix))]
            #[allow(improper_ctypes_definitions)] // see `Pair`
            unsafe extern "C" fn $quad(a: Pair, b: Pair, out: *mut Pair) {
                $(
                    /// The four lanes in one AVX register (`Y4`'s contract: compiled for
                    /// AVX2, called where the processor has it), stored to `out` at once.
                    ///
                    /// # Safety
                    /// As `$quad`'s.
                    #[target_feature(enable = "avx2")]
                    unsafe fn wide(a: &Pair, b: &Pair, out: *mut Pair) {
                        let r = $lanes(math::Y4::from_pairs(math::X2(*a), math::X2(*b)));
                        // SAFETY: as the contract says.
                        unsafe { r.store(out.cast()) };
                    }
                    if avx2() {
                        // SAFETY: the processor has AVX2; `out` as the contract says.
                        unsafe { wide(&a, &b, out) };
                    } else {
                        let r = $lanes(math::X4(math::X2(a), math::X2(b)));
                        // SAFETY: as the contract says.
                        unsafe { write_pairs(out, r.0.0, r.1.0) };
                    }
                    return;
                )?
                #[allow(unreachable_code)]
                {
                    let ([a0, a1], [b0, b1]) = (from_pair(a), from_pair(b));
                    let f = |x| Func::eval($func, x);
                    // SAFETY: as the contract says.
                    unsafe { write_pairs(out, to_pair([f(a0), f(a1)]), to_pair([f(b0), f(b1)])) };
                }
            }
        )*
        /// `(symbol, address, function)` for every unary host function.
        pub fn unary() -> Vec<(&'static str, *const u8, Func)> {
            vec![$((stringify!($name), $name as extern "C" fn(f64) -> f64 as *const u8, $func)),*]
        }

        /// `(symbol, address, function)` for every unary host function over a pair of lanes
        /// (none where the platform's calls do not pass vectors in registers).
        pub fn unary_pairs() -> Vec<(&'static str, *const u8, Func)> {
            #[cfg(all(target_arch = "x86_64", unix))]
            {
                vec![$((stringify!($pair), $pair as extern "C" fn(Pair) -> Pair as *const u8, $func)),*]
            }
            #[cfg(not(all(target_arch = "x86_64", unix)))]
            {
                Vec::new()
            }
        }

        /// `(symbol, address, function)` for every unary host function over four lanes
        /// (none where the platform's calls do not pass vectors in registers).
        pub fn unary_quads() -> Vec<(&'static str, *const u8, Func)> {
            #[cfg(all(target_arch = "x86_64", unix))]
            {
                vec![$((stringify!($quad), $quad as Quad as *const u8, $func)),*]
            }
            #[cfg(not(all(target_arch = "x86_64", unix)))]
            {
                Vec::new()
            }
        }
    };
}

/// Two `f64` lanes in one SSE register: the System V calling convention (x86-64 Unix; not
/// Windows, whose convention passes vectors by reference) passes and returns it in `xmm0`
/// (then `xmm1` for a second argument), as Cranelift does for an `f64x2` value.
/// The `improper_ctypes_definitions` lint does not know that layout (it wants `repr(C)`), so
/// the functions that take it allow the lint; `tests/compiled.rs` checks both lanes of every
/// pair function against the one-lane code.
#[cfg(all(target_arch = "x86_64", unix))]
type Pair = std::arch::x86_64::__m128d;

#[cfg(all(target_arch = "x86_64", unix))]
fn from_pair(x: Pair) -> [f64; 2] {
    // SAFETY: `__m128d` is two `f64`s, lane 0 first.
    unsafe { std::mem::transmute::<Pair, [f64; 2]>(x) }
}

#[cfg(all(target_arch = "x86_64", unix))]
fn to_pair(x: [f64; 2]) -> Pair {
    // SAFETY: as in `from_pair`.
    unsafe { std::mem::transmute::<[f64; 2], Pair>(x) }
}

/// A four-lane unary host function: two pairs in, two pairs written to the pointer.
#[cfg(all(target_arch = "x86_64", unix))]
#[allow(improper_ctypes_definitions)] // see `Pair`
type Quad = unsafe extern "C" fn(Pair, Pair, *mut Pair);

/// Writes `a` and `b` to `out[0]` and `out[1]`.
///
/// # Safety
/// `out` is valid for writing two pairs (alignment not needed).
#[cfg(all(target_arch = "x86_64", unix))]
unsafe fn write_pairs(out: *mut Pair, a: Pair, b: Pair) {
    // SAFETY: as the contract says.
    unsafe {
        out.write_unaligned(a);
        out.add(1).write_unaligned(b);
    }
}

host! {
    sd_exp, sd_exp_x2, sd_exp_x4 => Func::Exp, math::exp_lanes;
    sd_log, sd_log_x2, sd_log_x4 => Func::Log;
    sd_sin, sd_sin_x2, sd_sin_x4 => Func::Sin, math::sin_lanes;
    sd_cos, sd_cos_x2, sd_cos_x4 => Func::Cos, math::cos_lanes;
    sd_tan, sd_tan_x2, sd_tan_x4 => Func::Tan;
    sd_asin, sd_asin_x2, sd_asin_x4 => Func::Asin;
    sd_acos, sd_acos_x2, sd_acos_x4 => Func::Acos;
    sd_atan, sd_atan_x2, sd_atan_x4 => Func::Atan;
    sd_sinh, sd_sinh_x2, sd_sinh_x4 => Func::Sinh;
    sd_cosh, sd_cosh_x2, sd_cosh_x4 => Func::Cosh;
    sd_tanh, sd_tanh_x2, sd_tanh_x4 => Func::Tanh, math::tanh_lanes;
    sd_sigmoid, sd_sigmoid_x2, sd_sigmoid_x4 => Func::Sigmoid, math::sigmoid_lanes;
    sd_softplus, sd_softplus_x2, sd_softplus_x4 => Func::Softplus;
}

/// `b^e` for exponents the generated code does not expand inline (same as the interpreter).
pub extern "C" fn sd_pow(b: f64, e: f64) -> f64 {
    crate::graph::eval::pow(b, e)
}

/// `b^e` in both lanes of a pair, each as [`sd_pow`].
#[cfg(all(target_arch = "x86_64", unix))]
#[allow(improper_ctypes_definitions)] // see `Pair`
extern "C" fn sd_pow_x2(b: Pair, e: Pair) -> Pair {
    let ([b0, b1], [e0, e1]) = (from_pair(b), from_pair(e));
    to_pair([sd_pow(b0, e0), sd_pow(b1, e1)])
}

/// `b^e` in four lanes (bases in `b0`, `b1`, exponents in `e0`, `e1`), each as [`sd_pow`],
/// into `out[0]` and `out[1]`.
///
/// # Safety
/// `out` is valid for writing two pairs.
#[cfg(all(target_arch = "x86_64", unix))]
#[allow(improper_ctypes_definitions)] // see `Pair`
unsafe extern "C" fn sd_pow_x4(b0: Pair, b1: Pair, e0: Pair, e1: Pair, out: *mut Pair) {
    // SAFETY: as the contract says.
    unsafe { write_pairs(out, sd_pow_x2(b0, e0), sd_pow_x2(b1, e1)) };
}

/// The symbol of the host function computing `f`, if `f` is computed by a call.
pub fn symbol_of(f: Func) -> Option<&'static str> {
    unary().into_iter().find(|(_, _, g)| *g == f).map(|(name, _, _)| name)
}

/// The symbol of the host function computing `f` in both lanes of a pair, if there is one.
pub fn pair_symbol_of(f: Func) -> Option<&'static str> {
    unary_pairs().into_iter().find(|(_, _, g)| *g == f).map(|(name, _, _)| name)
}

/// The symbol of the host function computing `f` in four lanes, if there is one.
pub fn quad_symbol_of(f: Func) -> Option<&'static str> {
    unary_quads().into_iter().find(|(_, _, g)| *g == f).map(|(name, _, _)| name)
}

/// The symbol of `b^e` over pairs, if the platform has one.
pub fn pow_pair_symbol() -> Option<&'static str> {
    cfg!(all(target_arch = "x86_64", unix)).then_some("sd_pow_x2")
}

/// The symbol of `b^e` over four lanes, if the platform has one.
pub fn pow_quad_symbol() -> Option<&'static str> {
    cfg!(all(target_arch = "x86_64", unix)).then_some("sd_pow_x4")
}

/// Every host symbol with its address, for the JIT builder.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    let mut v: Vec<(&'static str, *const u8)> = unary().into_iter().map(|(n, p, _)| (n, p)).collect();
    v.push(("sd_pow", sd_pow as extern "C" fn(f64, f64) -> f64 as *const u8));
    v.extend(unary_pairs().into_iter().map(|(n, p, _)| (n, p)));
    v.extend(unary_quads().into_iter().map(|(n, p, _)| (n, p)));
    #[cfg(all(target_arch = "x86_64", unix))]
    {
        v.push(("sd_pow_x2", sd_pow_x2 as extern "C" fn(Pair, Pair) -> Pair as *const u8));
        #[allow(improper_ctypes_definitions)] // see `Pair`
        type PowQuad = unsafe extern "C" fn(Pair, Pair, Pair, Pair, *mut Pair);
        v.push(("sd_pow_x4", sd_pow_x4 as PowQuad as *const u8));
    }
    type Gemm =
        unsafe extern "C" fn(i64, i64, i64, *const f32, i64, i64, *const f32, i64, i64, *mut f32, i64, i64);
    v.push(("sd_sgemm", sd_sgemm as Gemm as *const u8));
    v.push(("sd_sgemm_sparse_lhs", sd_sgemm_sparse_lhs as Gemm as *const u8));
    v.push(("sd_par_map", sd_par_map as unsafe extern "C" fn(MapKernel, *mut f32, i64, i64) as *const u8));
    v.push(("sd_adam", sd_adam as AdamKernel as *const u8));
    v
}

type AdamKernel =
    unsafe extern "C" fn(i64, *mut f32, *mut f32, *mut f32, *const f32, *const f32, f32, f32, f32, f32, f32);

/// One Adam update in place over `n` elements:
///
/// ```text
/// m' = beta1*m + c1*g      v' = beta2*v + c2*g*g      p' = p - alpha*(m' / (sqrt(v') + eps))
/// ```
///
/// `alpha` points at the step size (an input of the step). Why a host
/// kernel: the update is a square root and a division per element, and the processor does
/// those at the same rate per instruction whatever the vector width, so Cranelift's 128-bit
/// vectors run it at half the speed of 256-bit ones (measured: 81 µs with 4 lanes, 43 µs with
/// 8, for 100k parameters). Chunks of the elements are shared between the team's threads; the
/// lanes use AVX2 when the processor has it, with the graph's operations in the graph's order
/// (no fused multiply-adds), so lanes and tail compute the same numbers.
///
/// # Safety
/// `p`, `m`, `v` and `g` hold `n` floats (`g` may not overlap the others), `alpha` one.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sd_adam(
    n: i64,
    p: *mut f32,
    m: *mut f32,
    v: *mut f32,
    g: *const f32,
    alpha: *const f32,
    beta1: f32,
    c1: f32,
    beta2: f32,
    c2: f32,
    eps: f32,
) {
    let n = n.max(0) as usize;
    // SAFETY: as in the contract.
    let alpha = unsafe { *alpha };
    let c = [beta1, c1, beta2, c2, eps];
    let chunks = if n >= 16 * 1024 { (n / 4096).clamp(1, crate::jit::team::MAX_CHUNKS) } else { 1 };
    let (p, m, v, g) = (p as usize, m as usize, v as usize, g as usize);
    let fast = avx2();
    crate::jit::team::for_each(chunks, &|ch| {
        // Chunk bounds on multiples of 8 so that only the last chunk has a scalar tail.
        let (from, to) =
            ((n / 8 * ch / chunks) * 8, if ch + 1 == chunks { n } else { (n / 8 * (ch + 1) / chunks) * 8 });
        let at = |x: usize| (x as *mut f32).wrapping_add(from);
        // SAFETY: chunks cover disjoint element ranges inside the buffers (contract).
        unsafe { adam_range(to - from, at(p), at(m), at(v), at(g), alpha, c, fast) }
    });
}

/// Whether AVX2 may be used.
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`sd_adam`] over `n` elements on one thread.
///
/// # Safety
/// As `sd_adam`; `fast` only where AVX2 was detected.
#[allow(clippy::too_many_arguments)]
unsafe fn adam_range(
    n: usize,
    p: *mut f32,
    m: *mut f32,
    v: *mut f32,
    g: *mut f32,
    alpha: f32,
    c: [f32; 5],
    fast: bool,
) {
    let [beta1, c1, beta2, c2, eps] = c;
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2 detected; buffers as in the contract.
        k = unsafe { adam_avx2(n, p, m, v, g, alpha, c) };
    }
    let _ = fast;
    while k < n {
        // SAFETY: `k < n` (contract).
        unsafe {
            let gk = *g.add(k);
            let mk = beta1 * *m.add(k) + c1 * gk;
            let vk = beta2 * *v.add(k) + c2 * (gk * gk);
            *m.add(k) = mk;
            *v.add(k) = vk;
            *p.add(k) -= alpha * (mk / (vk.sqrt() + eps));
        }
        k += 1;
    }
}

/// The lanes of [`adam_range`], eight at a time; returns how many elements it did.
///
/// # Safety
/// As `adam_range`, on a processor with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_avx2(
    n: usize,
    p: *mut f32,
    m: *mut f32,
    v: *mut f32,
    g: *mut f32,
    alpha: f32,
    c: [f32; 5],
) -> usize {
    use std::arch::x86_64::*;
    let [beta1, c1, beta2, c2, eps] = c.map(|x| _mm256_set1_ps(x));
    let alpha = _mm256_set1_ps(alpha);
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: `k + 8 <= n` (contract).
        unsafe {
            let gk = _mm256_loadu_ps(g.add(k));
            let mk = _mm256_add_ps(_mm256_mul_ps(beta1, _mm256_loadu_ps(m.add(k))), _mm256_mul_ps(c1, gk));
            let vk = _mm256_add_ps(
                _mm256_mul_ps(beta2, _mm256_loadu_ps(v.add(k))),
                _mm256_mul_ps(c2, _mm256_mul_ps(gk, gk)),
            );
            _mm256_storeu_ps(m.add(k), mk);
            _mm256_storeu_ps(v.add(k), vk);
            let step = _mm256_div_ps(mk, _mm256_add_ps(_mm256_sqrt_ps(vk), eps));
            _mm256_storeu_ps(p.add(k), _mm256_sub_ps(_mm256_loadu_ps(p.add(k)), _mm256_mul_ps(alpha, step)));
        }
        k += 8;
    }
    k
}

/// A compiled map kernel: `fn(arena, from, to)` over units `from..to` of its space.
pub type MapKernel = unsafe extern "C" fn(*mut f32, i64, i64);

/// Runs map kernel `kernel` over units `0..units`, cut into `chunks` ranges shared between
/// the threads of the team (`team.rs`). The range that ends at `units` is the one that also
/// does the elements after the last whole unit (see `kernel::Emitter::map`).
///
/// # Safety
/// `kernel` must be a map kernel compiled for `arena`'s program, with `units` its unit count;
/// ranges of different units write different elements, so they may run at the same time.
pub unsafe extern "C" fn sd_par_map(kernel: MapKernel, arena: *mut f32, units: i64, chunks: i64) {
    let (units, chunks) = (units.max(0) as usize, chunks.clamp(1, units.max(1)) as usize);
    let arena = arena as usize;
    crate::jit::team::for_each(chunks, &|c| {
        let (from, to) = (units * c / chunks, units * (c + 1) / chunks);
        // SAFETY: forwarded from this function's contract; chunks cover disjoint units.
        unsafe { kernel(arena as *mut f32, from as i64, to as i64) }
    });
}

/// `c = a @ b` in f32 (`m×k` times `k×n`), every operand given by a pointer and its row and
/// column strides in elements: the GEMM that compiled training steps call. Products of more
/// than [`PARALLEL_FLOPS`] are cut in two or more along the side whose operand is larger
/// (rows of `a`, or columns of `b`) and shared between the team's threads.
///
/// # Safety
/// Every pointer must be valid for the elements its strides and sizes reach; `c` must not
/// overlap `a` or `b`. Compiled steps only pass slices of their arena checked when planned.
pub unsafe extern "C" fn sd_sgemm(
    m: i64,
    n: i64,
    k: i64,
    a: *const f32,
    rsa: i64,
    csa: i64,
    b: *const f32,
    rsb: i64,
    csb: i64,
    c: *mut f32,
    rsc: i64,
    csc: i64,
) {
    let (m, n, k) = (m.max(0) as usize, n.max(0) as usize, k.max(0) as usize);
    let (rsa, csa, rsb, csb, rsc, csc) =
        (rsa as isize, csa as isize, rsb as isize, csb as isize, rsc as isize, csc as isize);
    let flops = 2 * m * n * k;
    let threads = crate::jit::team::threads();
    let along_rows = m * k >= k * n;
    let side = if along_rows { m } else { n };
    let chunks = if flops >= PARALLEL_FLOPS { threads.min(side / 16).max(1) } else { 1 };
    let (a, b, c) = (a as usize, b as usize, c as usize);
    crate::jit::team::for_each(chunks, &|ch| {
        let (from, to) = (side * ch / chunks, side * (ch + 1) / chunks);
        let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
        // SAFETY: forwarded from this function's contract; chunks write disjoint parts of `c`.
        unsafe {
            if along_rows {
                let (a, c) = (a.offset(from as isize * rsa), c.offset(from as isize * rsc));
                matrixmultiply::sgemm(to - from, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc)
            } else {
                let (b, c) = (b.offset(from as isize * csb), c.offset(from as isize * csc));
                matrixmultiply::sgemm(m, k, to - from, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc)
            }
        }
    });
}

/// Products of at least this many floating-point operations are shared between threads
/// (at batch 256 the three products with the 10 logits take 2x less time on two threads,
/// mostly because each thread packs half of the larger operand; at batch 32 they stay below).
pub const PARALLEL_FLOPS: usize = 1 << 18;

/// `c = a @ b` for a left operand that is data and often mostly zeros: see `sparse.rs`;
/// the dense [`sd_sgemm`] when skipping zeros does not pay.
///
/// # Safety
/// As [`sd_sgemm`].
pub unsafe extern "C" fn sd_sgemm_sparse_lhs(
    m: i64,
    n: i64,
    k: i64,
    a: *const f32,
    rsa: i64,
    csa: i64,
    b: *const f32,
    rsb: i64,
    csb: i64,
    c: *mut f32,
    rsc: i64,
    csc: i64,
) {
    let (mu, nu, ku) = (m.max(0) as usize, n.max(0) as usize, k.max(0) as usize);
    let is = |x: i64| x as isize;
    // SAFETY: forwarded from this function's contract.
    let done = unsafe {
        crate::jit::tensor::sparse::product(
            mu,
            nu,
            ku,
            a,
            is(rsa),
            is(csa),
            b,
            is(rsb),
            is(csb),
            c,
            is(rsc),
            is(csc),
        )
    };
    if !done {
        // SAFETY: as above.
        unsafe { sd_sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, rsc, csc) }
    }
}

#[cfg(test)]
mod tests {
    //! The Adam kernel (vector lanes, tails, chunks on several threads) against the formula
    //! written out one element at a time: the same operations in the same order, so the same
    //! bits.

    use super::sd_adam;

    fn check(n: usize) {
        let mut s = 0x2545_f491_4f6c_dd1du64 ^ n as u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let p: Vec<f32> = (0..n).map(|_| next()).collect();
        let m: Vec<f32> = (0..n).map(|_| next() * 0.1).collect();
        let v: Vec<f32> = (0..n).map(|_| next().abs() * 0.01).collect();
        let g: Vec<f32> = (0..n).map(|_| next()).collect();
        let (alpha, beta1, beta2, eps) = (0.001f32, 0.9f32, 0.999f32, 1e-7f32);
        let (c1, c2) = ((1.0 - 0.9f64) as f32, (1.0 - 0.999f64) as f32);
        let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
        // SAFETY: every buffer holds `n` floats; `alpha` one.
        unsafe {
            sd_adam(
                n as i64,
                p2.as_mut_ptr(),
                m2.as_mut_ptr(),
                v2.as_mut_ptr(),
                g.as_ptr(),
                &alpha,
                beta1,
                c1,
                beta2,
                c2,
                eps,
            )
        };
        for k in 0..n {
            let mk = beta1 * m[k] + c1 * g[k];
            let vk = beta2 * v[k] + c2 * (g[k] * g[k]);
            let pk = p[k] - alpha * (mk / (vk.sqrt() + eps));
            assert_eq!((p2[k], m2[k], v2[k]), (pk, mk, vk), "n {n}, element {k}");
        }
    }

    #[test]
    fn adam_kernel_is_the_formula_to_the_bit() {
        for n in [0, 1, 7, 8, 9, 100, 16 * 1024, 100_352, 70_001] {
            check(n);
        }
    }
}
