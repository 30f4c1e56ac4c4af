//! A real client: minimise the extended Rosenbrock function of 10⁴ variables (Moré, Garbow
//! and Hillstrom's: `n/2` independent pairs, `100*(x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2`)
//! with argmin's L-BFGS, driven by symdiff's compiled gradient: the sum is written out term
//! by term and compiled to one loop (index rules `x[2i]`, `x[2i+1]` recovered).
//!
//! `cargo run --release --example minimize [-- N]` prints the compile time, every 50th
//! iteration and the result; `tests/minimize.rs` runs it at a smaller size.

use std::cell::RefCell;
use std::time::Instant;

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{CostFunction, Error, Executor, Gradient, IterState, KV, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use symdiff::{CompiledGradient, Expr, compile_gradient};

/// The problem for argmin: the compiled value and gradient, with the last point's results
/// kept, since L-BFGS asks for the cost and then the gradient at the same point.
struct Problem {
    code: CompiledGradient,
    last: RefCell<(Vec<f64>, f64, Vec<f64>)>,
    evaluations: RefCell<usize>,
}

impl Problem {
    fn at(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.borrow_mut();
        if last.0 != x {
            let mut grad = vec![0.0; x.len()];
            let value = self.code.try_eval(x, &mut grad).expect("one value per variable");
            *last = (x.to_vec(), value, grad);
            *self.evaluations.borrow_mut() += 1;
        }
        (last.1, last.2.clone())
    }
}

impl CostFunction for Problem {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, Error> {
        Ok(self.at(x).0)
    }
}

impl Gradient for Problem {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Error> {
        Ok(self.at(x).1)
    }
}

/// Prints every `every`-th iteration (none when `every` is 0).
struct Progress {
    every: u64,
}

impl Observe<IterState<Vec<f64>, Vec<f64>, (), (), (), f64>> for Progress {
    fn observe_iter(
        &mut self,
        state: &IterState<Vec<f64>, Vec<f64>, (), (), (), f64>,
        _: &KV,
    ) -> Result<(), Error> {
        if self.every > 0 && state.get_iter().is_multiple_of(self.every) {
            println!("  iteration {:>5}: f = {:.6e}", state.get_iter(), state.get_cost());
        }
        Ok(())
    }
}

/// What a run found.
pub struct Outcome {
    pub iterations: u64,
    pub value: f64,
    /// The largest distance of a coordinate from the minimum (every coordinate 1).
    pub error: f64,
    pub evaluations: usize,
    pub converged: bool,
}

/// Minimises the extended Rosenbrock function of `n` (even) variables from the classic start
/// (-1.2, 1, -1.2, 1, ...).
pub fn run(n: usize, print_every: u64) -> Result<Outcome, Box<dyn std::error::Error>> {
    let text: Vec<String> =
        (0..n / 2).map(|i| format!("100*(x{} - x{}^2)^2 + (1 - x{})^2", 2 * i + 1, 2 * i, 2 * i)).collect();
    let start = Instant::now();
    let f = Expr::parse(&text.join(" + "))?;
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let code = compile_gradient(&f, &vars)?;
    if print_every > 0 {
        println!(
            "extended Rosenbrock, {n} variables: parsed and compiled in {:.1} ms ({})",
            start.elapsed().as_secs_f64() * 1e3,
            code.stats().structure()
        );
    }
    let x0: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { -1.2 } else { 1.0 }).collect();
    let problem =
        Problem { code, last: RefCell::new((Vec::new(), 0.0, Vec::new())), evaluations: RefCell::new(0) };
    let solver = LBFGS::new(MoreThuenteLineSearch::new().with_c(1e-4, 0.9)?, 7)
        .with_tolerance_grad(1e-10)?
        .with_tolerance_cost(0.0)?;
    let t = Instant::now();
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(x0).max_iters(20_000))
        .add_observer(Progress { every: print_every }, ObserverMode::Always)
        .run()?;
    let state = result.state();
    let best = state.get_best_param().ok_or("no point was evaluated")?;
    let error = best.iter().map(|x| (x - 1.0).abs()).fold(0.0, f64::max);
    let converged = matches!(state.get_termination_reason(), Some(TerminationReason::SolverConverged));
    let evaluations = *result.problem.problem.as_ref().map_or(&RefCell::new(0), |p| &p.evaluations).borrow();
    let outcome =
        Outcome { iterations: state.get_iter(), value: state.get_best_cost(), error, evaluations, converged };
    if print_every > 0 {
        println!(
            "{:?} after {} iterations ({} gradient evaluations, {:.1} ms): f = {:.3e}, max |x_i - 1| = {:.2e}",
            state.get_termination_reason(),
            outcome.iterations,
            outcome.evaluations,
            t.elapsed().as_secs_f64() * 1e3,
            outcome.value,
            outcome.error
        );
    }
    Ok(outcome)
}

fn main() {
    let n = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) if n >= 2 && n % 2 == 0 => n,
        Some(_) => {
            eprintln!("usage: minimize [N]   (an even number of variables, default 10000)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(n, 50) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
