//! The tensor-program compiler: a training step or an inference graph to one native call.
//!
//! `fuse.rs` plans (which nodes are stored, which inlined, buffers in one arena);
//! `kernel.rs` emits one Cranelift function per planned instruction (with the inline
//! transcendentals of `vecmath.rs`); `step.rs` is the `Program` with its driver;
//! `sparse.rs` the zero-skipping products for data operands.
//!
//! **Architecture Invariant:** tensor programs may sum in another order than the tensor
//! interpreter and use the inline transcendentals; they are held to it within 1e-5 (relative
//! to each tensor's largest element) by `train/compiled.rs`' tests.

pub mod fuse;
mod kernel;
pub(crate) mod sparse;
pub mod step;
pub mod vecmath;
