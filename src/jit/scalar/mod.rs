//! The expression compiler: scalar DAGs to native functions.
//!
//! `lower.rs` turns the nodes reachable from the outputs into Cranelift IR and machine code;
//! `loops.rs` compiles a class of like terms (`graph/structure.rs`) as one loop;
//! `program.rs` puts loops and straight-line phases together into a gradient;
//! `math.rs` emits `exp` inline in loop bodies (two lanes at a time), as
//! `graph::math::exp` computes it;
//! `export.rs` writes the same program as C or Rust source.
//!
//! **Architecture Invariant:** compiled scalar code computes the same operations in the same
//! order as the interpreter (`graph::eval`): left folds for sums and products,
//! square-and-multiply for integer powers, the same Rust functions for transcendentals (called
//! from `jit::runtime`; `exp`'s operations inline in loops). It
//! does not allocate, branch on data (except inside host calls), or check domains: evaluation
//! errors are the interpreter's business.

pub mod export;
mod loops;
mod lower;
mod math;
mod program;

pub(crate) use lower::MAX_ARRAY;
pub use lower::{ClassStats, CompileOptions, JitError, Stats};
pub use program::{
    GradientCode, GradientError, VectorCode, compile_gradient, compile_hessian, compile_sparse_hessian,
    compile_sparse_jacobian, compile_vector,
};
