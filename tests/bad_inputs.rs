//! The bad-input table: malformed input at every front door of the `symdiff` binary
//! (formulas, evaluation domains, the REPL's stdin, model files, data files, weight files).
//! Each row states the command, the exit code, the message category (a fragment of the
//! message) and, for text, where the caret points; every run must also be free of panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong where: exit code, message fragment, position (`origin:line:col`) if text.
struct Expect {
    code: i32,
    message: &'static str,
    at: Option<&'static str>,
}

fn run(args: &[&str], stdin: &[u8]) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("symdiff runs");
    let mut input = child.stdin.take().expect("stdin");
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("symdiff finishes");
    writer.join().expect("stdin written");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), text)
}

fn check(what: &str, args: &[&str], stdin: &[u8], e: &Expect) {
    let (code, text) = run(args, stdin);
    assert!(!text.contains("panicked"), "{what}: panicked:\n{text}");
    assert_eq!(code, e.code, "{what}: exit code\n{text}");
    assert!(text.contains(e.message), "{what}: `{}` not in\n{text}", e.message);
    if let Some(at) = e.at {
        assert!(text.contains(&format!("--> {at}")), "{what}: no `--> {at}` in\n{text}");
    }
}

const fn err(message: &'static str, at: Option<&'static str>) -> Expect {
    Expect { code: 1, message, at }
}

#[rustfmt::skip]
const FORMULAS: &[(&str, Expect)] = &[
    ("(x + 1",        err("unexpected end of input; expected `)`", Some("formula:1:7"))),
    ("x + 1)",        err("unexpected `)`", Some("formula:1:6"))),
    ("2**",           err("unexpected end of input", Some("formula:1:4"))),
    ("x^^2",          err("unexpected `^`", Some("formula:1:3"))),
    ("",              err("empty input", Some("formula:1:1"))),
    ("sinn(x)",       err("unknown function `sinn`", Some("formula:1:1"))),
    ("sin(x, y)",     err("`sin` takes 1 argument, but 2 were given", Some("formula:1:1"))),
    ("log(x, 2, 3)",  err("`log` takes 1 argument, but 3 were given", Some("formula:1:1"))),
    ("x × 2",         err("unexpected character '×' (U+00D7)", Some("formula:1:3"))),
    ("x\u{1}",        err("unexpected character '\\u{1}'", Some("formula:1:2"))),
    ("1e999 * x",     err("too large for f64", Some("formula:1:1"))),
    ("f(,)",          err("unexpected `,`", Some("formula:1:3"))),
    ("x y",           err("unexpected name `y`", Some("formula:1:3"))),
    ("2 $ 3",         err("unexpected character `$`", Some("formula:1:3"))),
    ("diff(x^2, 3)",  err("must be a variable name", Some("formula:1:11"))),
    ("diff(log(1 + x^x), x, 44)", err("the derivative of order 44 is too large", Some("formula:1:1"))),
];

#[rustfmt::skip]
const DOMAINS: &[(&str, &str, Expect)] = &[
    ("log(x)",  "x=-1",     err("domain error in `log(x)`", None)),
    ("sqrt(x)", "x=-1",     err("square root of a negative number", None)),
    ("1/x",     "x=0",      err("division by zero in `1/x`", None)),
    ("exp(x)",  "x=1000",   err("overflow: `exp(x)` is too large for f64", None)),
    ("asin(x)", "x=2",      err("asin(x) is defined for -1 <= x <= 1", None)),
    ("x^x",     "x=0",      err("needs a positive base", None)),
    ("x*y",     "z=1",      err("`z` does not occur in the expression", Some("--at:1:1"))),
    ("x",       "x=",       err("unexpected end of input", Some("--at:1:3"))),
    ("x",       "x=abc",    err("a value cannot use the variable `abc`", Some("--at:1:3"))),
    ("x",       "=1",       err("unexpected `=`", Some("--at:1:1"))),
];

// Class: constant subexpressions without a value (issue 10, wrong answers). Each must stay an
// error naming the undefined part, whatever identity (`0*u`, `u - u`, `u/u`) surrounds it.
#[rustfmt::skip]
const UNDEFINED_CONSTANTS: &[(&str, Expect)] = &[
    ("0/0",                   err("division by zero in `1/0`", None)),
    ("(1/0) - (1/0)",         err("division by zero in `1/0`", None)),
    ("log(-1)/log(-1)",       err("domain error in `log(-1)`", None)),
    ("0*log(-1)",             err("domain error in `log(-1)`", None)),
    ("exp(1000) - exp(1000)", err("overflow: `exp(1000)` is too large for f64", None)),
];

#[test]
fn undefined_constants() {
    for (src, e) in UNDEFINED_CONSTANTS {
        check(src, &["eval", src], b"", e);
        // The derivative of a constant is 0 only where the constant has a value.
        check(src, &["diff", src], b"", e);
    }
}

// Class: the node budget (issue 10, aborts). Every route that builds nodes from input stops
// at `symdiff::NODE_BUDGET` with an error at what grew the graph, naming the limit, instead
// of growing until the allocator aborts; the REPL goes on with the graph as it was. (Each
// case builds up to the budget, about 1 GB, for a few seconds.)
#[test]
fn node_budget() {
    let limit = "operations (the limit";
    let mut nested = "x^x".to_owned();
    for _ in 0..25 {
        nested = format!("diff({nested}, x)");
    }
    check("nested diff", &["diff", &nested], b"", &err(limit, Some("formula:1:")));
    check(
        "diff order 40",
        &["eval", "diff(x^x, x, 40)", "--at", "x=1"],
        b"",
        &err(limit, Some("formula:1:1")),
    );
    check("d^40/dx^40", &["repl"], b"d^40/dx^40 x^x\n", &err(limit, Some("<stdin>:1:1")));
    let mut chain = String::from("f1(x) = diff(x^x, x)\n");
    let mut twice = String::from("g1(x) = x^2\n");
    for i in 2..40 {
        chain += &format!("f{i}(x) = diff(f{}(x), x)\n", i - 1);
        twice += &format!("g{i}(x) = g{}(sin(x)) + g{}(cos(x))\n", i - 1, i - 1);
    }
    for (what, lines, message) in [
        ("a chain of derivatives", chain + "f2(1)\n", "this derivative is too large"),
        ("functions that call the last one twice", twice + "g3(1) + 1\n", "this call of `g"),
    ] {
        let (code, text) = run(&["repl"], lines.as_bytes());
        assert!(!text.contains("panicked"), "{what}: panicked:\n{text}");
        assert_eq!(code, 1, "{what}: exit code");
        assert!(text.contains(message) && text.contains(limit), "{what}: no budget error in\n{text}");
        assert!(
            text.lines().any(|l| l.trim() == "2" || l.trim() == "3"),
            "{what}: the session did not go on:\n{text}"
        );
    }
}

// Class: text longer than `symdiff::MAX_INPUT` (issue 10, aborts: a 100 MB formula line
// aborted on allocation). Every text route refuses it with the size and the limit, at 1:1;
// the REPL reads such a line through without holding it and goes on. Text of exactly the
// limit is read (a comment keeps it cheap).
#[test]
fn oversized_input() {
    let limit = symdiff::MAX_INPUT;
    let big = format!("{}x\n", "x+".repeat(limit / 2 + 1));
    let size = format!("is {} bytes", limit + 3);
    let (code, text) = run(&["diff", "-"], big.as_bytes());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("the formula {size} (16.0 MiB); the limit is {limit} bytes")), "{text}");
    assert!(text.contains("--> formula:1:1") && text.len() < 1000, "{}", &text[..text.len().min(1000)]);
    let fits = format!("x + 1 #{}", "-".repeat(limit - 7));
    check(
        "exactly the limit",
        &["eval", "-", "--at", "x=1"],
        fits.as_bytes(),
        &Expect { code: 0, message: "2", at: None },
    );
    let (code, text) = run(&["repl"], format!("{big}1 + 1\n").as_bytes());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("<stdin>:1:1: the line {size}; the limit is {limit} bytes")), "{text}");
    assert!(text.lines().any(|l| l == "2"), "the REPL goes on after the long line:\n{text}");
    let dir = scratch("oversized");
    let path = dir.join("big.model");
    std::fs::write(&path, format!("{GOOD}# {}\n", "-".repeat(limit))).expect("write");
    let p = path.to_str().expect("utf-8 path");
    let (code, text) = run(&["show", p], b"");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the model file is") && text.contains(&format!("--> {p}:1:1")), "{text}");
}

// Class: hints a new user met (issue 10, rough edges): the help line says what was meant.
#[rustfmt::skip]
const HINTS: &[(&[&str], &str, Expect)] = &[
    (&["diff", "sni(x)"],                  "",               err("did you mean `sin`?", Some("formula:1:1"))),
    (&["diff", "sin x"],                   "",               err("function arguments go in parentheses: `sin(x)`", Some("formula:1:5"))),
    (&["eval", "x + y", "--at", "x=1 y=2"], "",              err("separate bindings with commas: `x=1,y=2`", Some("--at:1:5"))),
    (&["repl"],                            "f(t) = t^2\nf 3\n", err("function arguments go in parentheses: `f(3)`", Some("<stdin>:2:3"))),
];

// (replace this line of GOOD, with this, expected, at) as in MODELS, for the same class.
#[rustfmt::skip]
const MODEL_HINTS: &[(&str, &str, &str, &str)] = &[
    ("loss softmax_cross_entropy", "loss = -mean(sum(onehot(labels, 10) * logsoftmax(logit), 1))", "unknown name `logit`", "7:50"),
    ("loss softmax_cross_entropy", "loss = -mean(sum(onehot(labels, 10) * logsoftmax(logit), 1))", "did you mean `logits`?", "7:50"),
    ("loss softmax_cross_entropy", "loss softmax_cross_entropy\nregularizer = 0.01*sum(dense_1.kernel^2)", "is written `dense_1_kernel`", "8:31"),
];

#[test]
fn hints() {
    for (args, stdin, e) in HINTS {
        check(&args.join(" "), args, stdin.as_bytes(), e);
    }
    let dir = scratch("hints");
    for (k, (line, with, message, at)) in MODEL_HINTS.iter().enumerate() {
        let path = dir.join(format!("m{k}.model"));
        std::fs::write(&path, GOOD.replacen(line, with, 1)).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let (code, text) = run(&["show", p], b"");
        assert_eq!(code, 1, "{with}: exit code\n{text}");
        assert!(text.contains(message), "{with}: `{message}` not in\n{text}");
        assert!(text.contains(&format!("--> {p}:{at}")), "{with}: not at {at}:\n{text}");
    }
}

#[test]
fn formulas_and_domains() {
    for (src, e) in FORMULAS {
        check(src, &["diff", src], b"", e);
    }
    for (src, at, e) in DOMAINS {
        check(src, &["eval", src, "--at", at], b"", e);
    }
}

#[test]
fn hostile_repl_input() {
    let deep_open = "(".repeat(1_000_000);
    check(
        "1 MB of `(`",
        &["repl"],
        format!("{deep_open}\n").as_bytes(),
        &err("unexpected end of input", Some("<stdin>:1:1000001")),
    );
    check("non-UTF-8", &["repl"], b"x + \xff\n", &err("<stdin>:1:5: the line is not valid UTF-8", None));
    // Deep but well-formed input and a 1 MB sum work.
    let deep = format!("{}x{}\n", "(".repeat(100_000), ")".repeat(100_000));
    let (code, out) = run(&["repl"], deep.as_bytes());
    assert_eq!((code, out.trim()), (0, "x"));
    let sum = format!("{}x\n", "x+".repeat(500_000));
    let (code, out) = run(&["repl"], sum.as_bytes());
    assert_eq!((code, out.trim()), (0, "500001*x"));
}

const GOOD: &str = "data mnist\ninput 28x28\nflatten\ndense 128 relu\ndropout 0.2\ndense 10\n\
                    loss softmax_cross_entropy\noptimizer adam lr=0.001\ntrain epochs=5 batch=32 seed=1\n";

/// (replace this line of GOOD, with this, expected) — `@` in `at` is the model file's path.
#[rustfmt::skip]
const MODELS: &[(&str, &str, &str, &str)] = &[
    ("dense 128 relu", "dens 128 relu",            "unknown layer `dens`", "4:1"),
    ("dense 128 relu", "dense 0",                  "the number of units must be a whole number from 1 to 16777216, not 0", "4:7"),
    ("dense 128 relu", "dense -3",                 "not -3", "4:7"),
    ("dense 128 relu", "dense 1000000000",         "not 1000000000", "4:7"),
    ("dense 128 relu", "dense 128 relu l2=-1",     "l2 must be in [0, 1000000], not -1", "4:19"),
    ("dense 128 relu", "dense 128 rleu",           "unknown activation `rleu`", "4:11"),
    ("dense 128 relu", "dense 100000 relu\ndense 100000", "would need 150.2 GiB", "7:1"),
    ("dropout 0.2",    "dropout 1.5",              "the dropout rate must be in [0, 1), not 1.5", "5:9"),
    ("dropout 0.2",    "dropout -0.1",             "not -0.1", "5:9"),
    ("dropout 0.2",    "batchnorm momentum=2",     "momentum must be in [0, 1), not 2", "5:20"),
    ("optimizer adam lr=0.001", "optimizer adam lr=-1",          "lr must be positive, not -1", "8:19"),
    ("optimizer adam lr=0.001", "optimizer adam lr=abc",         "lr must be a number", "8:19"),
    ("optimizer adam lr=0.001", "optimizer adm",                 "unknown optimizer `adm`", "8:11"),
    ("optimizer adam lr=0.001", "optimizer adam lr=0.1 lr=0.2",  "option `lr` is given twice", "8:23"),
    ("optimizer adam lr=0.001", "optimizer adam foo=1",          "`optimizer adam` has no option `foo`", "8:16"),
    ("optimizer adam lr=0.001", "optimizer sgd momentum=1.5",    "momentum must be in [0, 1), not 1.5", "8:24"),
    ("optimizer adam lr=0.001", "optimizer sgd nesterov=maybe",  "nesterov is `true` or `false`", "8:24"),
    ("train epochs=5 batch=32 seed=1", "train epochs=0 batch=32 seed=1", "epochs must be a whole number from 1 to 100000, not 0", "9:14"),
    ("train epochs=5 batch=32 seed=1", "train epochs=5 batch=0 seed=1",  "batch must be a whole number from 1 to 1048576, not 0", "9:22"),
    ("train epochs=5 batch=32 seed=1", "train epochs=5 batch=abc",       "batch must be a number", "9:22"),
    ("input 28x28",    "input 0x28",               "input sizes must be positive", "2:1"),
    ("input 28x28",    "input 27x28",              "`mnist` samples are 28x28, not 27x28", "2:1"),
    ("data mnist",     "data cifar",               "unknown data set `cifar`", "1:6"),
    ("loss softmax_cross_entropy", "loss hinge",   "unknown loss `hinge`", "7:6"),
    ("loss softmax_cross_entropy", "",             "the model has no `loss` line", "10:1"),
    ("dense 10",       "dense 11",                 "ends with 11 values per sample, but `mnist` has 10 classes", "6:1"),
    ("flatten",        "activation swish(x) = x * sigmoidd(x)\nflatten", "unknown function `sigmoidd`", "3:27"),
    ("flatten",        "activation act(x, y) = x*y\nflatten",            "an activation takes exactly one parameter", "3:1"),
    ("data mnist\n",   "",                         "the model has no `data` line", "9:1"),
];

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("symdiff-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn model_files() {
    let dir = scratch("models");
    for (k, (line, with, message, at)) in MODELS.iter().enumerate() {
        assert!(GOOD.contains(line), "{line}");
        let path = dir.join(format!("m{k}.model"));
        std::fs::write(&path, GOOD.replacen(line, with, 1)).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let (code, text) = run(&["show", p], b"");
        assert!(!text.contains("panicked"), "{with}: panicked:\n{text}");
        assert_eq!(code, 1, "{with}: exit code\n{text}");
        assert!(text.contains(message), "{with}: `{message}` not in\n{text}");
        assert!(text.contains(&format!("--> {p}:{at}")), "{with}: not at {at}:\n{text}");
    }
    let empty = dir.join("empty.model");
    std::fs::write(&empty, "").expect("write");
    check("empty model", &["show", empty.to_str().unwrap()], b"", &err("the model has no `data` line", None));
    let binary = dir.join("binary.model");
    std::fs::write(&binary, b"data mnist\ninput 28x28\xff\n").expect("write");
    check(
        "non-UTF-8 model",
        &["show", binary.to_str().unwrap()],
        b"",
        &err("not UTF-8 text (at byte 22)", None),
    );
    check(
        "missing model",
        &["show", dir.join("none.model").to_str().unwrap()],
        b"",
        &err("cannot read", None),
    );
}

fn idx(dims: &[u32], data: &[u8], code: u8) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A tiny but valid MNIST-shaped data set of three samples.
fn synthetic(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    let images = vec![7u8; 3 * 784];
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx(&[3, 28, 28], &images, 8)),
        ("train-labels-idx1-ubyte", idx(&[3], &[0, 1, 2], 8)),
        ("t10k-images-idx3-ubyte", idx(&[3, 28, 28], &images, 8)),
        ("t10k-labels-idx1-ubyte", idx(&[3], &[0, 1, 2], 8)),
    ] {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn data_and_weight_files() {
    let root = scratch("data");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mnist.model");
    let noise: Vec<u8> = (0..2352u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut noisy = idx(&[3, 28, 28], &noise, 8);
    noisy.truncate(16 + 2352);
    let zipped = gzip(&noisy);
    #[rustfmt::skip]
    let mut cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("magic",     "train-images-idx3-ubyte", b"GIF89a-not-idx".to_vec(),           "byte 0: not an IDX file: magic is 47 49 46 38"),
        ("truncated", "train-images-idx3-ubyte", idx(&[3, 28, 28], &[7; 100], 8),      "header says 3×28×28 = 2352 bytes, file has 100 after the header"),
        ("count",     "train-labels-idx1-ubyte", idx(&[4], &[1, 2, 3, 4], 8),          "has 3 images but"),
        ("label",     "train-labels-idx1-ubyte", idx(&[3], &[1, 2, 10], 8),            "is 10; MNIST labels are 0 to 9"),
        ("dims",      "t10k-images-idx3-ubyte",  idx(&[3, 27, 28], &[0; 2268], 8),     "expected N×28×28 images with N ≥ 1, found 3×27×28"),
        ("empty",     "train-labels-idx1-ubyte", Vec::new(),                           "truncated header: 4 bytes needed for the magic number, file has 0"),
        ("type",      "train-labels-idx1-ubyte", idx(&[3], &[0; 12], 0x0c),            "IDX element type 0x0c (32-bit integer) is not supported"),
        ("zero",      "train-images-idx3-ubyte", idx(&[0, 28, 28], &[], 8),            "found 0×28×28"),
        ("absurd",    "train-images-idx3-ubyte", idx(&[4_000_000_000, 28, 28], &[], 8), "more than the limit of 2147483648; refusing to allocate"),
        ("gz garbage", "t10k-labels-idx1-ubyte.gz", b"\x1f\x8bgarbage".to_vec(),       "bad gzip stream"),
        ("gz cut",    "train-images-idx3-ubyte.gz", zipped[..zipped.len() / 2].to_vec(), "bad gzip stream"),
        ("gz no trailer", "train-images-idx3-ubyte.gz", zipped[..zipped.len() - 4].to_vec(), "bad gzip stream"),
    ];
    // A gzip bomb: a header for 3 images, then 20 MB of zeros (20 KB compressed). The stream is
    // inflated no further than the header declares, and refused at the first extra byte.
    let mut bomb = idx(&[3, 28, 28], &[], 8);
    bomb.resize(16 + (20 << 20), 0);
    cases.push((
        "gz bomb",
        "train-images-idx3-ubyte.gz",
        gzip(&bomb),
        "but the gzip stream holds more after the header (from byte 16): trailing bytes",
    ));
    for (tag, file, bytes, message) in &cases {
        let dir = root.join(tag);
        synthetic(&dir);
        if let Some(raw) = file.strip_suffix(".gz") {
            std::fs::remove_file(dir.join(raw)).expect("remove");
        }
        std::fs::write(dir.join(file), bytes).expect("write");
        let d = dir.to_str().unwrap();
        check(
            tag,
            &["train", model, "--data", d, "--epochs", "1", "--no-checkpoint"],
            b"",
            &err(message, None),
        );
    }
    let missing = root.join("missing");
    synthetic(&missing);
    std::fs::remove_file(missing.join("t10k-images-idx3-ubyte")).expect("remove");
    check(
        "missing file",
        &["train", model, "--data", missing.to_str().unwrap(), "--no-checkpoint"],
        b"",
        &err("missing t10k-images-idx3-ubyte", None),
    );
    // Weight files.
    let good = root.join("magic");
    let junk = root.join("junk.safetensors");
    std::fs::write(&junk, b"nonsense").expect("write");
    let (junk, good) = (junk.to_str().unwrap(), good.to_str().unwrap());
    check(
        "junk weights",
        &["eval", model, "--weights", junk, "--data", good],
        b"",
        &err("not a safetensors file", None),
    );
    check(
        "missing weights",
        &["eval", model, "--weights", "/nonexistent/w.safetensors", "--data", good],
        b"",
        &err("No such file", None),
    );
    let images = root.join("count").join("train-images-idx3-ubyte");
    check(
        "predict with junk weights",
        &["predict", model, "--weights", junk, images.to_str().unwrap()],
        b"",
        &err("not a safetensors file", None),
    );
}

// ---- Numbers in weight files and checkpoints (issue 10): a checkpoint's `epoch`, `step` and
// random-stream position out of range, and tensors holding NaN or infinity, in `eval`,
// `predict` and `train --resume`. Each file is a copy of a good one with one thing changed.

/// (metadata key, value written into a good checkpoint, message)
#[rustfmt::skip]
const CHECKPOINT_METADATA: &[(&str, &str, &str)] = &[
    ("epoch", "18446744073709551615",   "`epoch` is 18446744073709551615, but `history` lists 1 epoch"),
    ("epoch", "1180591620717411303424", "`epoch` must be the number of finished epochs (a whole number, at least 1), not `1180591620717411303424`"),
    ("epoch", "0",                      "`epoch` must be the number of finished epochs (a whole number, at least 1), not `0`"),
    ("epoch", "-1",                     "not `-1`"),
    ("epoch", "2",                      "`epoch` is 2, but `history` lists 1 epoch"),
    ("step", "18446744073709551616",    "`step` must be a whole number below 2^64, not `18446744073709551616`"),
    ("history", r#"[{"epoch":2,"loss":1,"accuracy":0,"val_loss":1,"val_accuracy":0,"seconds":1}]"#, "`history` does not list epochs 1 to 1 in order"),
    ("rng_word_pos", "295147905179352825856", "`rng_word_pos` must be a whole number below 2^68, not `295147905179352825856`"),
];

/// (tensor, value put into its first element, file: weights or checkpoint)
#[rustfmt::skip]
const NOT_FINITE: &[(&str, f32, &str)] = &[
    ("dense_1.kernel",             f32::NAN,          "weights"),
    ("dense_2.bias",               f32::INFINITY,     "weights"),
    ("dense_1.bias",               f32::NEG_INFINITY, "weights"),
    ("dense_2.kernel.optimizer.v", f32::NAN,          "checkpoint"),
];

/// A copy of the safetensors file `src` at `dst`, with metadata `key` set to `value` and
/// the first element of tensor `poison` (if any) replaced.
fn altered(src: &Path, dst: &Path, key: Option<(&str, &str)>, poison: Option<(&str, f32)>) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let bytes = std::fs::read(src).expect("read");
    let mut meta = symdiff::train::weights::metadata(src).expect("metadata");
    if let Some((k, v)) = key {
        meta.insert(k.to_owned(), v.to_owned());
    }
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    if let Some((name, x)) = poison {
        let t = owned.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no {name}"));
        t.3[..4].copy_from_slice(&x.to_le_bytes());
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, data)| (n.clone(), TensorView::new(*d, s.clone(), data).expect("view")))
        .collect();
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).expect("serialize")).expect("write");
}

/// Like `check` with exit code 1, for messages built at run time (they hold paths).
fn refused(what: &str, args: &[&str], fragments: &[&str]) {
    let (code, text) = run(args, b"");
    assert!(!text.contains("panicked"), "{what}: panicked:\n{text}");
    assert_eq!(code, 1, "{what}: exit code\n{text}");
    for f in fragments {
        assert!(text.contains(f), "{what}: `{f}` not in\n{text}");
    }
}

#[test]
fn checkpoint_and_weight_values() {
    let root = scratch("values");
    let data = root.join("data");
    synthetic(&data);
    let d = data.to_str().unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mnist.model");
    let (ckpt, weights) = (root.join("good.ckpt"), root.join("good.safetensors"));
    let (c, w) = (ckpt.to_str().unwrap(), weights.to_str().unwrap());
    let (code, text) =
        run(&["train", model, "--data", d, "--epochs", "1", "--checkpoint", c, "--save", w], b"");
    assert_eq!(code, 0, "{text}");
    for (k, (key, value, message)) in CHECKPOINT_METADATA.iter().enumerate() {
        let bad = root.join(format!("meta{k}.ckpt"));
        altered(&ckpt, &bad, Some((key, value)), None);
        let b = bad.to_str().unwrap();
        let what = format!("checkpoint {key}={value}");
        refused(&what, &["train", model, "--data", d, "--checkpoint", b, "--resume"], &[message, b]);
    }
    let images = data.join("t10k-images-idx3-ubyte");
    let images = images.to_str().unwrap();
    for (k, (tensor, x, file)) in NOT_FINITE.iter().enumerate() {
        let what = format!("{tensor} = {x} in the {file}");
        let message = format!("`{tensor}` holds a NaN or an infinity");
        if *file == "weights" {
            let bad = root.join(format!("nan{k}.safetensors"));
            altered(&weights, &bad, None, Some((tensor, *x)));
            let b = bad.to_str().unwrap();
            refused(&what, &["eval", model, "--weights", b, "--data", d], &[&message, b]);
            refused(&what, &["predict", model, "--weights", b, images], &[&message, b]);
        } else {
            let bad = root.join(format!("nan{k}.ckpt"));
            altered(&ckpt, &bad, None, Some((tensor, *x)));
            let b = bad.to_str().unwrap();
            refused(&what, &["train", model, "--data", d, "--checkpoint", b, "--resume"], &[&message, b]);
        }
    }
}

/// An activation that simplifies to a number (`0*x`, `3`, `x - x`, `x/x`, `x^0`) panicked in
/// `show`, `train` and `eval`: now its layer is that number at every unit. Every command runs
/// such a model, and both engines train it to the same losses.
#[test]
fn constant_activations_run_everywhere() {
    let root = scratch("constant-activations");
    let data = root.join("data");
    synthetic(&data);
    let d = data.to_str().unwrap();
    for (k, body) in ["0*x", "3", "x - x", "x/x", "x^0"].iter().enumerate() {
        for (layer, with) in [("dense 128 relu", "dense 128 k"), ("dense 10\n", "dense 10 k\n")] {
            let src = format!(
                "activation k(x) = {body}\n{}",
                GOOD.replacen(layer, with, 1).replace("batch=32", "batch=3")
            );
            let path = root.join(format!("k{k}-{}.model", with.trim().replace(' ', "-")));
            std::fs::write(&path, src).expect("write");
            let p = path.to_str().unwrap();
            let weights = root.join(format!("k{k}.safetensors"));
            let w = weights.to_str().unwrap();
            let what = format!("{body} ({})", with.trim());
            let (code, text) = run(&["show", p], b"");
            assert!(code == 0 && !text.contains("panicked"), "{what}: show:\n{text}");
            let train = |extra: &[&str]| {
                let mut args = vec!["train", p, "--data", d, "--epochs", "1", "--no-checkpoint", "--json"];
                args.extend_from_slice(extra);
                let (code, text) = run(&args, b"");
                assert!(code == 0 && !text.contains("panicked"), "{what}: train {extra:?}:\n{text}");
                let epoch: serde_json::Value = text
                    .lines()
                    .find(|l| l.contains("\"epoch\""))
                    .and_then(|l| serde_json::from_str(l).ok())
                    .unwrap_or_else(|| panic!("{what}: no epoch line:\n{text}"));
                ["loss", "accuracy", "val_loss", "val_accuracy"]
                    .map(|k| epoch[k].as_f64().unwrap_or(f64::NAN))
            };
            let compiled = train(&["--save", w]);
            let interpreted = train(&["--interp"]);
            for (a, b) in compiled.iter().zip(&interpreted) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{what}: compiled {compiled:?}, interpreted {interpreted:?}"
                );
            }
            let (code, text) = run(&["eval", p, "--weights", w, "--data", d], b"");
            assert!(code == 0 && text.contains("test: loss"), "{what}: eval:\n{text}");
        }
    }
}

/// Memory for batch-sized tensors: `dense 16384 relu` at `batch=1048576` has few enough
/// parameters but needs hundreds of GiB per step; it aborted on a 278 GB allocation. Every
/// command that reads the model refuses it first, with the bytes and the batch size's place.
#[test]
fn batch_sized_memory_is_checked_before_anything_is_allocated() {
    let root = scratch("memory");
    let data = root.join("data");
    synthetic(&data);
    let src = GOOD.replace("dense 128 relu", "dense 16384 relu").replace("batch=32", "batch=1048576");
    let path = root.join("wide.model");
    std::fs::write(&path, &src).expect("write");
    let (p, d) = (path.to_str().unwrap(), data.to_str().unwrap());
    let images = data.join("t10k-images-idx3-ubyte");
    let commands: [&[&str]; 5] = [
        &["show", p],
        &["show", p, "--dot"],
        &["train", p, "--data", d, "--no-checkpoint"],
        &["eval", p, "--weights", "/nonexistent.safetensors", "--data", d],
        &["predict", p, "--weights", "/nonexistent.safetensors", images.to_str().unwrap()],
    ];
    let at: &'static str = Box::leak(format!("{p}:9:22").into_boxed_str());
    for args in commands {
        check(&args.join(" "), args, b"", &err("at batch 1048576, training needs about", Some(at)));
    }
}
