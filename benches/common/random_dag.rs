//! The random DAG that `benches/gradient.rs`, `benches/structure.rs` and
//! `tests/cheap_gradient.rs` share: a graph with no structure to recover.
//!
//! Each of `ops` nodes combines two earlier nodes (mostly recent ones, as real programs do)
//! with one of seven templates (`+ - *`, `sin`, `exp`, `tanh`, a quotient), over 100
//! variables; the output is the sum of the last 100 nodes. Everything lives in one graph, so
//! sharing is real: a DAG, not a tree, and there is no text form short of naming every node.
//!
//! The generator also keeps the recipe (`steps`), so that [`RandomDag::by_hand`] can evaluate
//! the same function and its gradient as plain Rust: a forward sweep over the steps and a
//! backward sweep that accumulates adjoints, the hand-written baseline for a function that
//! only exists as a program.

use symdiff::Expr;

/// The templates, `a` and `b` standing for the two earlier nodes.
const TEMPLATES: [&str; 7] =
    ["a + b", "a*b", "a - b", "sin(a) + b", "a*exp(-b^2)", "tanh(a)*b", "a/(1 + b^2)"];

/// The generated function: the expression, its variables, and how it was built.
pub struct RandomDag {
    pub expr: Expr,
    pub vars: Vec<String>,
    /// Node `100 + k` is `TEMPLATES[steps[k].0]` applied to nodes `steps[k].1` and `.2`
    /// (nodes `0..100` are the variables).
    steps: Vec<(usize, usize, usize)>,
}

/// A random DAG of `ops` nodes (at least the 100 variables): the benchmarks' graph.
pub fn random_dag(ops: usize) -> RandomDag {
    generate(100, ops, 0x9e37_79b9_7f4a_7c15, 64)
}

/// A random DAG of `ops` nodes over `vars` variables, from `seed` (odd), each node reading two
/// earlier ones that are mostly among the `window` most recent; the output is the sum of the
/// last `vars` nodes.
pub fn generate(vars: usize, ops: usize, seed: u64, window: u64) -> RandomDag {
    let outputs = vars;
    let vars: Vec<String> = (0..vars).map(|i| format!("v{i}")).collect();
    let base = Expr::parse(&vars.join(" + ")).unwrap();
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut nodes: Vec<Expr> = vars.iter().map(|v| base.parse_with(v).unwrap()).collect();
    let templates: Vec<Expr> = TEMPLATES.iter().map(|t| base.parse_with(t).unwrap()).collect();
    let mut steps = Vec::new();
    while nodes.len() < ops {
        let k = nodes.len();
        let pick = |r: u64| {
            if r.is_multiple_of(4) { ((r >> 8) as usize) % k } else { k - ((r % window) as usize + 1).min(k) }
        };
        let (a, b) = (pick(next()), pick(next()));
        let t = (next() % templates.len() as u64) as usize;
        let e = templates[t].substitute_all(&[("a", &nodes[a]), ("b", &nodes[b])]);
        nodes.push(e);
        steps.push((t, a, b));
    }
    // The output: the sum of the last `outputs` nodes.
    let plus = base.parse_with("acc + term").unwrap();
    let mut out = nodes[nodes.len() - 1].clone();
    for n in nodes.iter().rev().skip(1).take(outputs - 1) {
        out = plus.substitute_all(&[("acc", &out), ("term", n)]);
    }
    RandomDag { expr: out, vars, steps }
}

impl RandomDag {
    /// The value at `x` (one entry per variable), with the gradient written to `g`: a forward
    /// sweep over the recipe, then a backward sweep (`v` and `adj` are scratch, resized here).
    pub fn by_hand(&self, x: &[f64], g: &mut [f64], v: &mut Vec<f64>, adj: &mut Vec<f64>) -> f64 {
        let n = x.len() + self.steps.len();
        v.clear();
        v.extend_from_slice(x);
        for &(t, a, b) in &self.steps {
            let (a, b) = (v[a], v[b]);
            v.push(match t {
                0 => a + b,
                1 => a * b,
                2 => a - b,
                3 => a.sin() + b,
                4 => a * (-(b * b)).exp(),
                5 => a.tanh() * b,
                _ => a / (1.0 + b * b),
            });
        }
        adj.clear();
        adj.resize(n, 0.0);
        let mut value = 0.0;
        for k in n - self.vars.len().min(n)..n {
            value += v[k];
            adj[k] += 1.0;
        }
        for (k, &(t, a, b)) in self.steps.iter().enumerate().rev() {
            let d = adj[x.len() + k];
            if d == 0.0 {
                continue;
            }
            let (va, vb) = (v[a], v[b]);
            let (da, db) = match t {
                0 => (1.0, 1.0),
                1 => (vb, va),
                2 => (1.0, -1.0),
                3 => (va.cos(), 1.0),
                4 => {
                    let e = (-(vb * vb)).exp();
                    (e, -2.0 * va * vb * e)
                }
                5 => {
                    let th = va.tanh();
                    ((1.0 - th * th) * vb, th)
                }
                _ => {
                    let q = 1.0 + vb * vb;
                    (1.0 / q, -2.0 * va * vb / (q * q))
                }
            };
            adj[a] += d * da;
            adj[b] += d * db;
        }
        g.copy_from_slice(&adj[..x.len()]);
        value
    }
}
