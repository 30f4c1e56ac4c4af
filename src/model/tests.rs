//! The whole training graph of small models (every layer kind, every loss) against central
//! finite differences of the loss, in f64.

use hashbrown::HashMap;
use ndarray::{ArrayD, IxDyn};

use super::ModelSpec;
use super::build::build;
use crate::graph::Id;
use crate::graph::tensor::eval_tensors;

fn fill(shape: &[usize], seed: u64, scale: f64) -> ArrayD<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    })
}

/// Checks ∂loss/∂param for a few entries of every parameter of the model in `body` (layers
/// and loss, between the fixed data/input/optimizer lines).
fn check(name: &str, body: &str) {
    let src = format!("data mnist\ninput 28x28\n{body}\noptimizer adam\ntrain batch=3\n");
    let spec = ModelSpec::parse(&src, name).unwrap_or_else(|d| panic!("{name}: {}", d.render()));
    let built = build(&spec, 3, true).unwrap_or_else(|d| panic!("{name}: {}", d.render()));
    let g = &built.graph;
    let mut values: HashMap<Id, ArrayD<f64>> = HashMap::new();
    values.insert(built.input, fill(&[3, 28, 28], 1, 1.0));
    values.insert(built.labels, ArrayD::from_shape_vec(IxDyn(&[3]), vec![2.0, 7.0, 0.0]).unwrap());
    for (k, p) in built.params.iter().enumerate() {
        values.insert(p.var, fill(&p.shape, 10 + k as u64, 0.3));
    }
    for (k, d) in built.dropouts.iter().enumerate() {
        let keep =
            fill(&d.shape, 50 + k as u64, 1.0).mapv(|u| if u > -0.5 { 1.0 / (1.0 - d.rate) } else { 0.0 });
        values.insert(d.mask, keep);
    }
    for bn in &built.batchnorms {
        values.insert(bn.running_mean, ArrayD::zeros(IxDyn(&[bn.width])));
        values.insert(bn.running_var, ArrayD::ones(IxDyn(&[bn.width])));
    }
    let eval = |vals: &HashMap<Id, ArrayD<f64>>, roots: &[Id]| {
        eval_tensors::<f64>(g, roots, &|v| vals.get(&v).map(|a| a.view()))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let grads = eval(&values, &built.grads);
    for (k, p) in built.params.iter().enumerate() {
        let n = values[&p.var].len();
        for probe in 0..5 {
            let idx = (probe * 7919 + k * 31) % n;
            let h = 1e-6;
            let mut plus = values.clone();
            let mut minus = values.clone();
            plus.get_mut(&p.var).unwrap().as_slice_mut().unwrap()[idx] += h;
            minus.get_mut(&p.var).unwrap().as_slice_mut().unwrap()[idx] -= h;
            let fd = (eval(&plus, &[built.loss])[0].sum() - eval(&minus, &[built.loss])[0].sum()) / (2.0 * h);
            let an = grads[k].iter().nth(idx).copied().unwrap_or(f64::NAN);
            assert!(
                (fd - an).abs() <= 1e-6 * fd.abs().max(1e-2),
                "{name}: ∂loss/∂{}[{idx}] is {an}, finite differences give {fd}",
                p.name
            );
        }
    }
}

#[rustfmt::skip]
#[test]
fn training_graphs_against_finite_differences() {
    check("seed", "flatten\ndense 6 relu\ndropout 0.2\ndense 10\nloss softmax_cross_entropy");
    check("mse", "flatten\ndense 6 tanh\ndense 10\nloss mse");
    check("leaky + elu", "flatten\ndense 6\nleaky_relu(0.2)\ndense 5 elu\ndense 10\nloss softmax_cross_entropy");
    check("sigmoid + softplus", "flatten\ndense 6 sigmoid\ndense 5 softplus\ndense 10\nloss softmax_cross_entropy");
    check("batchnorm", "flatten\ndense 6\nbatchnorm\nrelu\ndropout 0.5\ndense 10\nloss softmax_cross_entropy");
    check("l2", "flatten\ndense 6 relu l2=0.01\ndense 10\nloss softmax_cross_entropy");
    check("swish", "activation swish(x) = x * sigmoid(x)\nflatten\ndense 6 swish\ndense 10\nloss softmax_cross_entropy");
    check("formula loss", "flatten\ndense 6 tanh\ndense 10\nloss = mean((logits - onehot(labels, 10))^2) + 0.01*sum(dense_1_kernel^2)");
    check("regularizer", "flatten\ndense 6 relu\ndense 10\nloss softmax_cross_entropy\nregularizer = 0.001 * sum(abs(dense_2_kernel))");
}

/// Every formula of a file is lowered from a tree of its own size (lowering reads the tree
/// below its root's id, so from the file's one tree the k-th of many formulas cost k), with the
/// file's positions.
#[test]
fn each_formula_is_lowered_from_a_tree_of_its_own_size() {
    use crate::syntax::{AstId, ModelLine};
    let defs: String = (0..2000).map(|i| format!("activation a{i}(x) = x*{i} + sin(x)\n")).collect();
    let src = format!("{defs}data mnist\ninput 28x28\nflatten\ndense 10\nloss softmax_cross_entropy\n");
    let (ast, lines) = crate::syntax::parse_model(&src).unwrap();
    let mut seen = 0;
    for line in &lines {
        if let ModelLine::Define { body, .. } = line {
            let (tree, root) = super::own_tree(&ast, *body);
            // x, the number, x*n, x, sin(x), the sum.
            assert_eq!(root, AstId(5), "formula {seen}");
            assert_eq!(tree.span(root), ast.span(*body));
            seen += 1;
        }
    }
    assert_eq!(seen, 2000);
}

/// The memory check names where the batch size comes from: the `batch=` value, the `train`
/// line, or (no `train` line, the default batch) the layer with the most values per sample;
/// and it says what would fit.
#[test]
fn the_memory_check_points_at_the_batch_size() {
    let body = "data mnist\ninput 28x28\nflatten\ndense 300 relu\ndense 4000 relu\ndense 10\nloss mse\noptimizer adam\n";
    for (train, at) in [("train batch=64 epochs=2\n", (9, 13)), ("train epochs=2\n", (9, 1)), ("", (5, 1))] {
        let src = format!("{body}{train}");
        let spec = ModelSpec::parse(&src, "m").unwrap_or_else(|d| panic!("{}", d.render()));
        let built = build(&spec, spec.train.batch, true).unwrap();
        let need = super::memory::needed(&spec, &built);
        assert!(spec.check_memory_within(&built, need.total()).is_ok(), "{train}");
        let e = spec.check_memory_within(&built, need.total() - 1).map(|_| ()).unwrap_err();
        assert_eq!(e.line_col(), at, "{train}: {}", e.render());
        assert!(
            e.message.contains(&format!("at batch {}, training needs about", spec.train.batch)),
            "{}",
            e.render()
        );
        assert!(e.help.as_deref().is_some_and(|h| h.contains("a batch of at most about")), "{}", e.render());
    }
}
