//! Stage 4: native code, in two rooms that share the host functions (`runtime.rs`) and the
//! thread team (`team.rs`):
//!
//! * `scalar/`: the expression compiler. A scalar DAG with several outputs (a function, its
//!   gradient, a Jacobian) becomes native functions of the C signature
//!   `fn(inputs: *const f64, out_0: *mut f64, ..., out_k: *mut f64, scratch: *mut f64)`.
//! * `tensor/`: the tensor-program compiler. A training step or an inference graph becomes
//!   planned buffers, fused `f32x4` loop kernels and one driver function.
//!
//! **Architecture Invariant:** `jit` never decides semantics. The interpreters (`graph::eval`,
//! `graph::tensor`) are the definition; each room states how closely it follows them.

mod runtime;
pub mod scalar;
mod team;
pub mod tensor;

pub(crate) use runtime::sd_adam;
pub use scalar::export;
pub use scalar::{ClassStats, CompileOptions, JitError, Stats as CompileStats};
pub(crate) use team::for_each as parallel_for;
pub use team::{set_threads, threads};
pub use tensor::{fuse, step};

pub(crate) use crate::graph::cores;

/// `x^n` by square-and-multiply, in the order of `graph::eval::powi` (so scalar code matches
/// the interpreter to the bit); `None` for `n = 0`. Works on any float or vector type.
pub(crate) fn square_and_multiply(
    b: &mut cranelift_frontend::FunctionBuilder<'_>,
    x: cranelift_codegen::ir::Value,
    mut n: u32,
) -> Option<cranelift_codegen::ir::Value> {
    use cranelift_codegen::ir::InstBuilder;
    let mut result = None;
    let mut base = x;
    while n > 0 {
        if n & 1 == 1 {
            result = Some(match result {
                None => base,
                Some(r) => b.ins().fmul(r, base),
            });
        }
        n >>= 1;
        if n > 0 {
            base = b.ins().fmul(base, base);
        }
    }
    result
}
