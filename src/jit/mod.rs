//! Stage 4: native code. Lowers a DAG with several outputs to one Cranelift function and
//! JIT-compiles it.
//!
//! **Architecture Invariant:** `jit` never decides semantics. The interpreter
//! (`graph::eval`) is the definition; compiled code computes the same operations in the same
//! order (left folds for sums and products, square-and-multiply for integer powers, the same
//! Rust functions for transcendentals), and the tests hold it to that.
//!
//! The generated function has the C signature
//! `fn(inputs: *const f64, out_0: *mut f64, ..., out_k: *mut f64)`: one input array and one
//! pointer per output group (a gradient has two groups: the value and the partials).
//! It reads inputs, computes every node once in id order (a topological order), and stores
//! each group's outputs. It does not allocate, branch on data (except inside host calls), or
//! check domains: evaluation errors are the interpreter's business.

pub mod export;
pub mod fuse;
mod kernel;
mod lower;
mod runtime;
mod sparse;
pub mod step;
mod team;

pub(crate) use team::for_each as parallel_for;
pub use team::{set_threads, threads};
pub mod vecmath;

pub use lower::{CompileOptions, CompiledFunction, JitError, Stats as CompileStats, compile};

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
