//! **symdiff** is a symbolic differentiation and expression compiler. Formulas are parsed into
//! one hash-consed expression DAG, differentiated symbolically into new nodes of the same
//! graph, simplified as they are built, printed back as a person would write them, and
//! evaluated by an interpreter that refuses to return a silent NaN.
//!
//! ```
#![doc = include_str!("../examples/quickstart.rs")]
//! ```
//!
//! The pipeline, one module per stage (data flows down the list):
//!
//! * `syntax`: logos lexer, lalrpop grammar (`grammar/symdiff.lalrpop`), arena AST,
//!   positioned [`Diagnostic`]s;
//! * `graph`: the node arena, simplifying constructors, printer, interpreter;
//! * `diff`: symbolic derivatives;
//! * [`Expr`] and [`Session`]: the front doors for library users and the REPL.
//!
//! `ARCHITECTURE.md` in the repository has the map and the invariants.

#![warn(missing_docs)]

mod compiled;
mod diff;
mod directional;
mod expr;
mod graph;
mod jit;
#[doc(hidden)]
pub mod model;
mod session;
mod syntax;
#[doc(hidden)]
pub mod train;

pub use compiled::{
    Compiled, CompiledGradient, CompiledSparse, SparsePattern, Triangle, compile, compile_gradient,
    compile_gradient_params, compile_gradient_with, compile_hessian, compile_jacobian,
    compile_sparse_hessian, compile_sparse_jacobian, export_c, export_rust,
};
pub use directional::{CompiledDirectional, compile_hvp, compile_jvp, compile_vjp};
pub use expr::{Error, Expr, Operand, Point, Result, element, variable_order};
pub use graph::simplify::{RULES, Rule};
pub use graph::{EvalError, EvalErrorKind, NODE_BUDGET};
pub use jit::{ClassStats, CompileOptions, CompileStats, set_threads, threads};
pub use session::{HELP, Session};
pub use syntax::{Diagnostic, MAX_FORMULA, MAX_INPUT, Span};
