//! Stage 3: derivatives as graphs.
//!
//! Owns symbolic forward differentiation (`forward.rs`), reverse mode (`reverse.rs`), structural
//! sparsity patterns of Jacobians and Hessians (`sparsity.rs`) and the local rules both apply
//! (`rules.rs`). Derivatives are built as new hash-consed nodes in the same graph, so they
//! share the forward expression instead of copying it.
//!
//! **Architecture Invariant:** derivative rules live in one place: `rules.rs` for `+ * ^`
//! and the function table (`graph::func`) for functions. Nothing here evaluates numbers.

pub mod forward;
pub mod reverse;
pub mod rules;
pub mod sparsity;

pub use forward::{hessian, nth_derivative};
