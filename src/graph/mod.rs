//! Stage 2: the expression DAG.
//!
//! Owns the hash-consed node arena ([`Graph`]), the simplifying constructors and their rule
//! table, the built-in function table, lowering from syntax trees, the printer and the
//! interpreter (the reference semantics every compiled function is tested against).
//!
//! **Architecture Invariant:** `graph` never does I/O and never recurses over a graph: every
//! walk is a scan over ids (children before parents) or uses an explicit stack.

pub mod eval;
pub mod func;
pub mod lower;
pub mod math;
pub mod node;
pub mod print;
pub mod simplify;
pub mod structure;
pub mod tensor;

pub use eval::{EvalError, EvalErrorKind, eval};
pub use func::Func;
pub use lower::{FnDef, Lets, Scope, substitute, try_substitute};
pub use node::{
    ALL_AXES, Graph, Id, Marks, NODE_BUDGET, NodeMap, Op, OverBudget, ShapeId, op_count, show_shape,
};
pub use print::{Style, print, print_named, print_shared};

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup
/// files on every call, microseconds that a batch of small functions would feel.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |p| p.get()))
}

/// Whether reading and analysing a large formula may use a second thread: there are two
/// processors or more, and `SYMDIFF_THREADS` is not 1.
pub(crate) fn second_thread() -> bool {
    cores() >= 2 && !std::env::var("SYMDIFF_THREADS").is_ok_and(|t| t.trim() == "1")
}

/// `(a(), b())`, with `a` run on a second thread while this one runs `b`, or both here where
/// no thread can be had (`a` is `Fn` so that it can still run here then). A panic in `a` is
/// resumed here.
pub(crate) fn both<A: Send, B>(a: impl Fn() -> A + Sync, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, &a);
        let b = b();
        let a = match other.map(|t| t.join()) {
            Ok(Ok(a)) => a,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => a(),
        };
        (a, b)
    })
}
