//! The expression compiler: scalar DAGs to native functions.
//!
//! `lower.rs` turns the nodes reachable from the outputs into Cranelift IR and machine code;
//! `export.rs` writes the same program as C or Rust source.
//!
//! **Architecture Invariant:** compiled scalar code computes the same operations in the same
//! order as the interpreter (`graph::eval`): left folds for sums and products,
//! square-and-multiply for integer powers, the same Rust functions for transcendentals. It
//! does not allocate, branch on data (except inside host calls), or check domains: evaluation
//! errors are the interpreter's business.

pub mod export;
mod lower;

pub use lower::{CompileOptions, CompiledFunction, JitError, Stats, compile};
