//! Host functions the generated code calls: every transcendental that has no Cranelift
//! instruction (Cranelift has none for exp, log, sin, ...).
//!
//! Each is an `extern "C"` wrapper around **the same Rust function the interpreter uses**
//! (the function table's `eval`), so compiled code and interpreter agree to the bit on them.
//! Registered by name with the JIT builder; an unregistered name would panic inside Cranelift
//! at finalize time, so `lower.rs` only ever names functions from [`HOST_FUNCTIONS`].

use crate::graph::Func;

macro_rules! host {
    ($($name:ident => $func:expr),* $(,)?) => {
        $(
            extern "C" fn $name(x: f64) -> f64 {
                Func::eval($func, x)
            }
        )*
        /// `(symbol, address, function)` for every unary host function.
        pub fn unary() -> Vec<(&'static str, *const u8, Func)> {
            vec![$((stringify!($name), $name as extern "C" fn(f64) -> f64 as *const u8, $func)),*]
        }
    };
}

host! {
    sd_exp => Func::Exp,
    sd_log => Func::Log,
    sd_sin => Func::Sin,
    sd_cos => Func::Cos,
    sd_tan => Func::Tan,
    sd_asin => Func::Asin,
    sd_acos => Func::Acos,
    sd_atan => Func::Atan,
    sd_sinh => Func::Sinh,
    sd_cosh => Func::Cosh,
    sd_tanh => Func::Tanh,
    sd_sigmoid => Func::Sigmoid,
    sd_softplus => Func::Softplus,
}

/// `b^e` for exponents the generated code does not expand inline (same as the interpreter).
pub extern "C" fn sd_pow(b: f64, e: f64) -> f64 {
    crate::graph::eval::pow(b, e)
}

/// The symbol of the host function computing `f`, if `f` is computed by a call.
pub fn symbol_of(f: Func) -> Option<&'static str> {
    unary().into_iter().find(|(_, _, g)| *g == f).map(|(name, _, _)| name)
}

/// Every host symbol with its address, for the JIT builder.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    let mut v: Vec<(&'static str, *const u8)> = unary().into_iter().map(|(n, p, _)| (n, p)).collect();
    v.push(("sd_pow", sd_pow as extern "C" fn(f64, f64) -> f64 as *const u8));
    type Gemm =
        unsafe extern "C" fn(i64, i64, i64, *const f32, i64, i64, *const f32, i64, i64, *mut f32, i64, i64);
    v.push(("sd_sgemm", sd_sgemm as Gemm as *const u8));
    v.push(("sd_sgemm_sparse_lhs", sd_sgemm_sparse_lhs as Gemm as *const u8));
    v.push(("sd_par_map", sd_par_map as unsafe extern "C" fn(MapKernel, *mut f32, i64, i64) as *const u8));
    v
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
    super::team::for_each(chunks, &|c| {
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
    let threads = super::team::threads();
    let along_rows = m * k >= k * n;
    let side = if along_rows { m } else { n };
    let chunks = if flops >= PARALLEL_FLOPS { threads.min(side / 16).max(1) } else { 1 };
    let (a, b, c) = (a as usize, b as usize, c as usize);
    super::team::for_each(chunks, &|ch| {
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

/// Products of at least this many floating-point operations are shared between threads.
pub const PARALLEL_FLOPS: usize = 1 << 21;

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
        super::sparse::product(mu, nu, ku, a, is(rsa), is(csa), b, is(rsb), is(csb), c, is(rsc), is(csc))
    };
    if !done {
        // SAFETY: as above.
        unsafe { sd_sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, rsc, csc) }
    }
}
