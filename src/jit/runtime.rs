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
    v
}

/// `c = a @ b` in f32 (`m×k` times `k×n`), every operand given by a pointer and its row and
/// column strides in elements: the GEMM that compiled training steps call.
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
    // SAFETY: forwarded from this function's contract.
    unsafe {
        matrixmultiply::sgemm(
            m as usize,
            k as usize,
            n as usize,
            1.0,
            a,
            rsa as isize,
            csa as isize,
            b,
            rsb as isize,
            csb as isize,
            0.0,
            c,
            rsc as isize,
            csc as isize,
        )
    }
}
