//! Model files: every category of mistake gets a positioned message (snapshot of the
//! rendered reports), and the good files parse to what they say.

use symdiff::model::{Activation, Layer, Loss, ModelSpec, Optimizer};

const GOOD: &str = "data mnist\ninput 28x28\nflatten\ndense 128 relu\ndropout 0.2\ndense 10\nloss softmax_cross_entropy\noptimizer adam lr=0.001\ntrain epochs=5 batch=32 seed=1\n";

/// `GOOD` with line `n` (1-based) replaced by `line` (or removed when `line` is empty).
fn with_line(n: usize, line: &str) -> String {
    GOOD.lines()
        .enumerate()
        .filter_map(|(i, l)| if i + 1 == n { (!line.is_empty()).then_some(line) } else { Some(l) })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `src` must fail at `line:col` with a message (or help) containing `msg`.
fn check(src: &str, line: usize, col: usize, msg: &str) -> Result<String, String> {
    let err = match ModelSpec::parse(src, "test.model") {
        Ok(_) => return Err(format!("accepted:\n{src}")),
        Err(e) => e,
    };
    if err.line_col() != (line, col) {
        return Err(format!("at {:?}, expected {:?}:\n{}", err.line_col(), (line, col), err.render()));
    }
    if !(err.message.contains(msg) || err.help.as_deref().is_some_and(|h| h.contains(msg))) {
        return Err(format!("`{msg}` not in\n{}", err.render()));
    }
    Ok(err.render())
}

#[rustfmt::skip]
#[test]
fn malformed_model_files() {
    let cases: Vec<(String, usize, usize, &str)> = vec![
        (with_line(4, "dense 128 relu"), 0, 0, ""), // placeholder replaced below
        (with_line(4, "densee 128 relu"), 4, 1, "did you mean `dense`?"),
        (with_line(4, "dense 128 rleu"), 4, 11, "did you mean `relu`?"),
        (with_line(4, "dense 0 relu"), 4, 7, "the number of units must be a whole number from 1"),
        (with_line(4, "dense 12.5 relu"), 4, 7, "whole number"),
        (with_line(4, "dense relu"), 4, 1, "needs a number of units"),
        (with_line(4, "dense 128 relu l3=0.1"), 4, 16, "options of `dense`: l2"),
        (with_line(4, "dense 128 relu l22=0.1"), 4, 16, "did you mean `l2`?"),
        (with_line(4, "dense 128 relu l2=-1"), 4, 19, "l2 must be in"),
        (with_line(4, "dense 128 relu relu"), 4, 16, "one activation"),
        (with_line(4, "dense 16000000"), 6, 1, "would need"),
        (with_line(4, "dense 100000000"), 4, 7, "must be a whole number from 1 to 16777216"),
        (with_line(5, "dropout 1.5"), 5, 9, "the dropout rate must be in [0, 1)"),
        (with_line(5, "dropout"), 5, 1, "takes a rate"),
        (with_line(5, "dropout abc"), 5, 9, "must be a number"),
        (with_line(6, "dense 7"), 6, 1, "but `mnist` has 10 classes"),
        (with_line(3, ""), 3, 1, "needs a flat input"),
        (with_line(7, ""), 8, 31, "no `loss` line"),
        (with_line(7, "loss hinge"), 7, 6, "unknown loss `hinge`"),
        (with_line(7, "loss = foo + logits"), 7, 8, "unknown name `foo`"),
        (with_line(7, "loss = logits"), 7, 8, "must be a number"),
        (with_line(8, "optimizer adma"), 8, 11, "did you mean `adam`?"),
        (with_line(8, "optimizer adam lr=0"), 8, 19, "lr must be positive"),
        (with_line(8, "optimizer adam momentum=0.9"), 8, 16, "has no option `momentum`"),
        (with_line(8, "optimizer sgd lr=0.1 momentum=1"), 8, 31, "momentum must be in [0, 1)"),
        (with_line(8, "optimizer adam lr=0.001 lr=0.01"), 8, 25, "given twice"),
        (with_line(9, "train epochs=0"), 9, 14, "epochs must be a whole number"),
        (with_line(9, "train epoch=5"), 9, 7, "did you mean `epochs`?"),
        (with_line(9, "train 5"), 9, 7, "options are written `name=value`"),
        (with_line(1, "data cifar"), 1, 6, "unknown data set `cifar`"),
        // The `data` line of files: paths in quotes, the column to learn, options that go together.
        (with_line(1, "data"), 1, 1, "needs a data set or a file kind"),
        (with_line(1, "data csv"), 1, 1, "`data csv` takes one path"),
        (with_line(1, "data csv train.csv label=y"), 1, 15, "file paths are written in quotes"),
        (with_line(1, "data csv \"train.csv label=y"), 1, 10, "unterminated text"),
        (with_line(1, "data csv \"a\\q.csv\" label=y"), 1, 10, "unknown escape"),
        (with_line(1, "data csv \"train.csv\""), 1, 1, "needs the column to learn"),
        (with_line(1, "data csv \"train.csv\" label=y target=z"), 1, 37, "not both"),
        (with_line(1, "data csv \"train.csv\" \"test.csv\" label=y"), 1, 22, "takes one path"),
        (with_line(1, "data csv \"train.csv\" label=y delimiter=\";;\""), 1, 40, "one character"),
        (with_line(1, "data csv \"train.csv\" label=y validation_split=1"), 1, 47, "validation_split must be in [0, 1)"),
        (with_line(1, "data csv \"train.csv\" label=y validation_split=0"), 1, 47, "must be above 0"),
        (with_line(1, "data csv \"train.csv\" label=y divide=0"), 1, 37, "divide must be positive"),
        (with_line(1, "data csv \"train.csv\" label=y normalize normalize"), 1, 40, "`normalize` is given twice"),
        (with_line(1, "data csv \"train.csv\" label=y regression"), 1, 30, "`target=COLUMN`"),
        (with_line(1, "data csv \"train.csv\" label=y test_x=\"t.npy\""), 1, 30, "has no option `test_x`"),
        (with_line(1, "data csv \"train.csv\" label=y seperator=\";\""), 1, 30, "options of `data`"),
        (with_line(1, "data csv \"train.csv\" label=y test=test.csv"), 1, 39, "file paths are written in quotes"),
        (with_line(1, "data npy \"x.npy\""), 1, 1, "`data npy` takes two paths"),
        (with_line(1, "data mnist \"x\""), 1, 12, "takes no paths"),
        (with_line(1, "data idx \"a\" \"b\" test_images=\"c\""), 1, 30, "needs `test_labels=` too"),
        (with_line(1, "data npz \"m.npz\" trian"), 1, 18, "file paths are written in quotes"),
        (with_line(1, "data npz \"m.npz\" regression"), 7, 1, "needs class labels"),
        // Schedules and callbacks.
        (format!("{GOOD}schedule\n"), 10, 1, "takes a kind first"),
        (format!("{GOOD}schedule exponentail\n"), 10, 10, "did you mean `exponential`?"),
        (format!("{GOOD}schedule exponential rate=0.9\n"), 10, 1, "needs `decay_steps=`"),
        (format!("{GOOD}schedule step every=2 factor=1.5\n"), 10, 30, "factor"),
        (format!("{GOOD}schedule cosine decay_steps=100 alpha=2\n"), 10, 39, "alpha"),
        (format!("{GOOD}schedule step every=0 factor=0.5\n"), 10, 21, "every must be a whole number from 1"),
        (format!("{GOOD}schedule step 2\n"), 10, 15, "written `name=value`"),
        (format!("{GOOD}early_stopping monitor=val_los\n"), 10, 24, "did you mean `val_loss`?"),
        (format!("{GOOD}early_stopping patience=1.5\n"), 10, 25, "patience must be a whole number from 0"),
        (format!("{GOOD}early_stopping restore_best=yes\n"), 10, 29, "`true` or `false`"),
        (format!("{GOOD}early_stopping monitor=val_mae\n"), 10, 1, "a classifier reports `accuracy`"),
        (format!("{GOOD}reduce_lr_on_plateau factor=2\n"), 10, 29, "factor"),
        (format!("{GOOD}schedule step every=1 factor=0.5\nreduce_lr_on_plateau\n"), 11, 1, "both set the learning rate"),
        (format!("{GOOD}early_stopping\nearly_stopping\n"), 11, 1, "given twice"),
        (with_line(1, ""), 8, 31, "no `data` line"),
        (with_line(2, "input 32x32"), 2, 1, "`mnist` samples are 28x28"),
        (with_line(2, "input 0x28"), 2, 1, "positive"),
        (format!("{GOOD}loss mse\n"), 10, 1, "`loss` is given twice (first on line 7)"),
        (with_line(4, "dense 128 relu $"), 4, 16, "unexpected character `$`"),
        (with_line(4, "activation f(x, y) = x*y"), 4, 1, "exactly one parameter"),
        (with_line(4, "activation g(x) = x*y"), 4, 19, "not its parameter"),
        (with_line(4, "activation relu(x) = x"), 4, 12, "built in"),
        (with_line(4, "dense 128 leaky_relu(0.1, 2)"), 4, 11, "takes one number"),
        (with_line(4, "dense 128 sigmoid(2)"), 4, 11, "takes no alpha"),
        (with_line(4, "dense(128)"), 4, 1, "takes no arguments"),
        (with_line(4, "x = 3"), 4, 1, "is not a model line"),
        (with_line(4, "dense 128 relu)"), 4, 15, "unexpected `)`"),
        // Activations are elementwise: one number per unit, from operators that do not mix units.
        (with_line(4, "activation k(x) = onehot(x, 3)"), 4, 19, "applied to each unit on its own, but this uses onehot"),
        // A name in a formula is known even where it vanishes (`0*foo` is 0).
        (format!("{GOOD}regularizer = 0*foo\n"), 10, 17, "unknown name `foo` in the regularizer"),
        // Sums and `let` names in formulas and as values.
        (format!("{GOOD}regularizer = sum(i = 0..1, w[i]^2)\n"), 10, 29, "unknown name `w` in the regularizer"),
        (format!("{GOOD}regularizer = sum(i = 0..k, i*sum(dense_1_kernel^2))\n"), 10, 26, "`k` has no value here"),
        (format!("let k = m\nlet m = 2\n{GOOD}"), 1, 9, "`m` has no value here"),
        (format!("let k = 1/0\n{GOOD}"), 1, 9, "not a finite number"),
        (format!("let k = 2\nlet k = 3\n{GOOD}"), 2, 5, "`k` is given twice (first on line 1)"),
        (format!("let relu = 2\n{GOOD}"), 1, 5, "a `let` cannot rename it"),
        (format!("let sin = 2\n{GOOD}"), 1, 5, "a `let` cannot rename it"),
        (format!("let dense_1_kernel = 2\n{GOOD}"), 1, 5, "names a parameter of the model"),
        (format!("let units = 0\n{}", GOOD.replace("dense 128", "dense units")), 5, 7, "the number of units must be a whole number from 1"),
        (format!("let x = 2\nactivation f(x) = x^2\n{GOOD}"), 2, 14, "also a `let` name (line 1)"),
        (format!("let f = 2\nactivation f(x) = x^2\n{GOOD}"), 2, 12, "already a `let` name (line 1)"),
    ];
    let mut report = String::new();
    let mut failures = Vec::new();
    for (src, l, c, m) in cases.iter().skip(1) {
        match check(src, *l, *c, m) {
            Ok(r) => report += &format!("### {m}\n{r}\n"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
    // The memory available differs between machines: keep the snapshot stable.
    let report = match report.find(" GiB is available") {
        Some(end) => {
            let start = report[..end].rfind(' ').map_or(end, |s| s + 1);
            format!("{}<N>{}", &report[..start], &report[end..])
        }
        None => report,
    };
    insta::assert_snapshot!(report);
}

#[test]
fn good_files_mean_what_they_say() {
    let spec = ModelSpec::parse(GOOD, "good.model").unwrap();
    assert_eq!(spec.input, vec![28, 28]);
    assert_eq!(
        spec.layers,
        vec![
            Layer::Flatten,
            Layer::Dense { units: 128, activation: Some(Activation::Relu), l2: 0.0 },
            Layer::Dropout { rate: 0.2 },
            Layer::Dense { units: 10, activation: None, l2: 0.0 },
        ]
    );
    assert_eq!(spec.loss, Loss::SoftmaxCrossEntropy);
    assert_eq!(spec.optimizer, Optimizer::Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 });
    assert_eq!(spec.parameter_count(), 101_770);
    for file in ["mnist", "mnist_leaky", "mnist_batchnorm", "mnist_l2", "mnist_swish"] {
        let path = format!("{}/examples/{file}.model", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        ModelSpec::parse(&text, &path).unwrap_or_else(|d| panic!("{}", d.render()));
    }
}

/// `data` lines of files: what each option sets, the classes from the last layer, float
/// targets for regression with `loss mse`.
#[test]
fn data_lines_of_files_say_where_the_samples_come_from() {
    use std::path::PathBuf;
    use symdiff::model::data::{Source, Targets};
    let model = |data: &str, input: &str, out: &str, loss: &str| {
        let src = format!("{data}\ninput {input}\ndense 8 relu\n{out}\nloss {loss}\noptimizer adam\n");
        ModelSpec::parse(&src, "t.model").unwrap_or_else(|d| panic!("{}", d.render()))
    };
    let s = model(
        "data csv \"iris.csv\" label=species validation_split=0.2 normalize",
        "4",
        "dense 3",
        "softmax_cross_entropy",
    );
    assert_eq!(
        s.data.source,
        Source::Csv {
            train: "iris.csv".into(),
            test: None,
            delimiter: b',',
            targets: Targets::Label("species".into())
        }
    );
    assert_eq!(
        (s.data.validation_split, s.data.normalize, s.data.divide, s.data.regression),
        (Some(0.2), true, 1.0, false)
    );
    assert_eq!((s.classes, s.regression), (3, false));
    let s = model(
        "data csv \"h.csv\" target=\"price, rooms\" delimiter=tab test=\"t.csv\"",
        "8",
        "dense 2",
        "mse",
    );
    assert_eq!(
        s.data.source,
        Source::Csv {
            train: "h.csv".into(),
            test: Some("t.csv".into()),
            delimiter: b'\t',
            targets: Targets::Values(vec!["price".into(), "rooms".into()])
        }
    );
    assert_eq!((s.classes, s.regression), (2, true));
    let s = model("data npz \"mnist.npz\" divide=255", "28x28\nflatten", "dense 10", "softmax_cross_entropy");
    assert_eq!((s.data.source.clone(), s.data.divide), (Source::Npz { path: "mnist.npz".into() }, 255.0));
    let s = model(
        "data npy \"x.npy\" \"y.npy\" test_x=\"xt.npy\" test_y=\"yt.npy\" regression",
        "5",
        "dense 1",
        "mse",
    );
    assert_eq!(
        s.data.source,
        Source::Npy {
            train: ["x.npy".into(), "y.npy".into()],
            test: Some(["xt.npy".into(), "yt.npy".into()])
        }
    );
    assert!(s.regression);
    let s = model("data idx \"a.gz\" \"b.gz\"", "28x28\nflatten", "dense 10", "softmax_cross_entropy");
    assert_eq!(
        (s.data.source.clone(), s.data.divide),
        (Source::Idx { train: ["a.gz".into(), "b.gz".into()], test: None }, 255.0)
    );
    // Paths are relative to the model file's folder.
    let r = s.data.resolve(std::path::Path::new("/models"));
    assert_eq!(
        r.source,
        Source::Idx { train: [PathBuf::from("/models/a.gz"), PathBuf::from("/models/b.gz")], test: None }
    );
}

/// `let` names hold numbers for the whole file: in formulas (the bounds of sums, values) and
/// as the values of layer and setting lines; a let's value may use the lets above it.
#[test]
fn lets_name_numbers_in_the_whole_file() {
    let src = "let units = 64\nlet rate = 0.25\nlet k = 3\nlet lambda = 0.001/k\n".to_owned()
        + &GOOD
            .replace("dense 128 relu", "dense units relu")
            .replace("dropout 0.2", "dropout rate")
            .replace("epochs=5", "epochs=k")
        + "regularizer = sum(i = 1..k, lambda*i*sum(dense_1_kernel^2))\n";
    let spec = ModelSpec::parse(&src, "lets.model").unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(spec.layers[1], Layer::Dense { units: 64, activation: Some(Activation::Relu), l2: 0.0 });
    assert_eq!(spec.layers[2], Layer::Dropout { rate: 0.25 });
    assert_eq!(spec.train.epochs, 3);
    // The regularizer is (1 + 2 + 3)*lambda times the sum of squares: the same loss as
    // writing the number out.
    let written = GOOD.replace("dense 128 relu", "dense 64 relu").replace("dropout 0.2", "dropout 0.25")
        + "regularizer = 0.002*sum(dense_1_kernel^2)\n";
    let plain = ModelSpec::parse(&written, "plain.model").unwrap();
    let show =
        |s: &ModelSpec| symdiff::model::show::equations(s).unwrap_or_else(|d| panic!("{}", d.render()));
    let loss_line = |t: String| t.lines().find(|l| l.trim_start().starts_with("loss")).unwrap().to_owned();
    assert_eq!(loss_line(show(&spec)), loss_line(show(&plain)));
}

/// An activation that does not read its parameter (`0*x`, `3`, `x - x`, `x/x`, `x^0` all
/// simplify to numbers) is that number at every unit: every layer keeps its shape in the
/// training and the inference graph, and `show` prints the model.
#[test]
fn constant_activations_keep_the_layer_shape() {
    use symdiff::model::build::build;
    for body in ["0*x", "3", "x - x", "x/x", "x^0"] {
        for (layer, with) in [("dense 128 relu", "dense 128 k"), ("dense 10", "dense 10 k")] {
            let src = format!("activation k(x) = {body}\n{}", GOOD.replacen(layer, with, 1));
            let spec = ModelSpec::parse(&src, "k.model").unwrap_or_else(|d| panic!("{body}: {}", d.render()));
            for training in [true, false] {
                let built = build(&spec, 32, training).unwrap_or_else(|d| panic!("{body}: {}", d.render()));
                for (name, id) in &built.layer_outputs {
                    let shape = built.graph.shape(*id);
                    assert!(shape.len() == 2 && shape[0] == 32, "{body} ({with}): {name} is {shape:?}");
                }
                assert_eq!(built.graph.shape(built.logits), &[32, 10], "{body} ({with})");
            }
            let text =
                symdiff::model::show::equations(&spec).unwrap_or_else(|d| panic!("{body}: {}", d.render()));
            assert!(text.contains("[32x10]"), "{body} ({with}):\n{text}");
        }
    }
}

/// `show --dot` labels every output with what it is: the loss, and each parameter's gradient.
#[test]
fn dot_labels_the_outputs() {
    let spec = ModelSpec::parse(GOOD, "good.model").unwrap();
    let dot = symdiff::model::show::dot(&spec).unwrap();
    let labelled =
        |name: &str| dot.lines().any(|l| l.contains("[label=") && l.contains(&format!("\\n{name}\"")));
    assert!(labelled("loss"), "no node labelled `loss`:\n{dot}");
    for p in ["dense_1.kernel", "dense_1.bias", "dense_2.kernel", "dense_2.bias"] {
        assert!(labelled(&format!("d_{p}")), "no node labelled `d_{p}`:\n{dot}");
    }
}

/// `show` prints text in proportion to the model, however deep: a loss formula thousands of
/// functions deep prints its derivative's shared subexpressions once (`where t1 = ...`), and
/// a model of thousands of layers prints each equation over the names before it. Four times
/// the input gives about four times the text (the tree of the derivative gave sixteen).
#[test]
fn show_output_is_linear_in_the_model() {
    let shown = |src: String| {
        let spec = ModelSpec::parse(&src, "big.model").unwrap_or_else(|d| panic!("{}", d.render()));
        (src.len(), symdiff::model::show::equations(&spec).unwrap_or_else(|d| panic!("{}", d.render())).len())
    };
    let deep = |n: usize| {
        let loss = format!("sum({}logits{})", "sin(".repeat(n), ")".repeat(n));
        shown(GOOD.replace("loss softmax_cross_entropy", &format!("loss = {loss}")))
    };
    let layers = |n: usize| shown(GOOD.replace("dense 128 relu\n", &"dense 12 tanh\n".repeat(n)));
    for (what, f) in [("a deep loss", &deep as &dyn Fn(usize) -> (usize, usize)), ("many layers", &layers)] {
        let ((in1, out1), (in4, out4)) = (f(1000), f(4000));
        assert!(out4 <= 5 * out1, "{what}: {in1} bytes show as {out1}, {in4} bytes as {out4}");
    }
    // Each equation was printed by walking everything below it: 8000 layers took minutes.
    // Now a fraction of a second; the bound is generous.
    let start = std::time::Instant::now();
    layers(8000);
    assert!(start.elapsed().as_secs() < 30, "8000 layers took {:?}", start.elapsed());
}
