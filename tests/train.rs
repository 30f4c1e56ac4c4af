//! Training end to end, through the `symdiff` binary, on the real MNIST files (found as
//! `symdiff train` finds them: `$SYMDIFF_DATA`, else the cache, fetched on first use): the seed model reaches Keras' accuracy, the
//! seed's variants come within a point of Keras, and weights, evaluation, prediction, curves
//! and `show` work together.

use std::path::PathBuf;
use std::process::Command;

mod common;

/// The real MNIST directory, found as `symdiff train` finds it (fetched on first use).
fn data_dir() -> PathBuf {
    common::mnist::mnist_dir()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn symdiff(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_symdiff")).args(args).output().expect("symdiff runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Trains `model` with `--json` and returns the per-epoch records and the final one.
fn train(model: &str, extra: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let data = data_dir();
    let mut args = vec!["train", model, "--json", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    if !extra.contains(&"--checkpoint") {
        args.push("--no-checkpoint"); // tests run in parallel: no checkpoints beside the examples
    }
    let (out, err, code) = symdiff(&args);
    assert_eq!(code, 0, "train {model} failed:\n{err}");
    let mut lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.pop().unwrap();
    (lines, last)
}

#[test]
fn seed_model_reaches_keras_accuracy_and_round_trips_its_weights() {
    let dir = std::env::temp_dir().join(format!("symdiff-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("w.safetensors");
    let curves = dir.join("curves.svg");
    let model = example("mnist.model");
    let (epochs, last) =
        train(&model, &["--save", weights.to_str().unwrap(), "--plot", curves.to_str().unwrap()]);
    assert_eq!(epochs.len(), 5);
    for (k, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], k + 1);
        for key in ["loss", "accuracy", "val_loss", "val_accuracy", "seconds"] {
            assert!(e[key].as_f64().is_some(), "{key} missing in {e}");
        }
    }
    // Training improves, and ends where Keras ends (97.6-98.0 %; the bar is 97.5 %).
    assert!(epochs[4]["loss"].as_f64() < epochs[0]["loss"].as_f64());
    let acc = last["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.975, "test accuracy {acc}");

    // The saved weights evaluate to the same accuracy...
    let data = data_dir();
    let (out, err, code) = symdiff(&[
        "eval",
        &model,
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let eval: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(eval["test_accuracy"].as_f64().unwrap(), acc);
    // ...and predict the test labels with that accuracy.
    let images = ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"]
        .map(|n| data.join(n))
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    let (out, err, code) =
        symdiff(&["predict", &model, "--weights", weights.to_str().unwrap(), images.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let predicted: Vec<u8> = out.lines().map(|l| l.parse().unwrap()).collect();
    let labels = symdiff::train::data::load_mnist(&data).unwrap().test_labels;
    let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert_eq!(right as f64 / labels.len() as f64, acc);
    // The curves are an SVG with both panels.
    let svg = std::fs::read_to_string(&curves).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("accuracy") && svg.contains("loss"));
    // Wrong weights for the model are refused with the tensor that does not fit.
    let (_, err, code) = symdiff(&[
        "eval",
        &example("mnist_batchnorm.model"),
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("batch_normalization_1.gamma"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seed_variants_come_within_a_point_of_keras() {
    // Keras after 5 epochs (../shared/anchors/mlp/RESULTS.md): 96.1 %, 97.0 %, 96.4 %.
    for (model, keras) in
        [("mnist_leaky.model", 0.961), ("mnist_batchnorm.model", 0.970), ("mnist_l2.model", 0.964)]
    {
        let (_, last) = train(&example(model), &[]);
        let acc = last["test_accuracy"].as_f64().unwrap();
        assert!(acc >= keras - 0.01, "{model}: {acc} against Keras' {keras}");
    }
}

#[test]
fn show_prints_forward_and_backward_equations() {
    let (out, err, code) = symdiff(&["show", &example("mnist.model")]);
    assert_eq!(code, 0, "{err}");
    // The snapshot must not depend on where the checkout is.
    let out = out.replace(env!("CARGO_MANIFEST_DIR"), "<checkout>");
    insta::assert_snapshot!(out);
    let (dot, _, code) = symdiff(&["show", &example("mnist.model"), "--dot"]);
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph symdiff {") && dot.contains("->") && dot.contains("dense_1.kernel"));
}

#[test]
fn missing_or_bad_inputs_are_explained() {
    let (_, err, code) = symdiff(&["train", &example("mnist.model"), "--data", "/nonexistent/mnist"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/mnist") && err.contains("symdiff data fetch mnist"), "{err}");
    let (_, err, code) = symdiff(&["train", "/nonexistent.model"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent.model"), "{err}");
    let (_, err, code) = symdiff(&["train", &example("mnist.model"), "--epochs", "0", "--data", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("--epochs must be at least 1"), "{err}");
}

/// Started by mpirun as one of several ranks, a binary built without the `mpi` feature
/// refuses (each rank would train alone and write the same files) and says how to build one
/// that works; as a single rank, or with no mpirun, it trains as ever.
#[cfg(not(feature = "mpi"))]
#[test]
fn ranks_without_the_mpi_feature_are_refused_with_the_way_to_build_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(["train", &example("mnist.model")])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("one of 2 ranks") && err.contains("--features mpi"), "{err}");
}

/// A small model (fast to train) in its own directory.
fn small_model(dir: &std::path::Path, name: &str, hidden: usize) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "data mnist\ninput 28x28\nflatten\ndense {hidden} relu\ndropout 0.2\ndense 10\n\
             loss softmax_cross_entropy\noptimizer adam lr=0.002\ntrain epochs=2 batch=64 seed=7\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("symdiff-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn resuming_ends_with_the_weights_of_an_uninterrupted_run() {
    let dir = scratch("resume");
    let model = small_model(&dir, "small.model", 64);
    let data = data_dir();
    let data = data.to_str().unwrap();
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let (_, err, code) = symdiff(&[&["train", &model, "--data", data], args].concat());
        assert_eq!(code, 0, "{args:?}:\n{err}");
        err
    };
    // Uninterrupted: two epochs.
    run(&["--checkpoint", &path("a.ckpt"), "--save", &path("a.safetensors")]);
    // Stopped after one epoch, then resumed to two.
    run(&["--epochs", "1", "--checkpoint", &path("b.ckpt")]);
    let err = run(&["--checkpoint", &path("b.ckpt"), "--resume", "--save", &path("b.safetensors")]);
    assert!(err.contains("resuming from") && err.contains("after epoch 1"), "{err}");
    let a = std::fs::read(path("a.safetensors")).unwrap();
    assert_eq!(a, std::fs::read(path("b.safetensors")).unwrap(), "resumed weights differ");
    // Killed (SIGKILL) early in the second epoch, with a half-written temporary checkpoint
    // left beside the real one as a crash during a write would leave it; then resumed.
    let mut child = train_until_checkpoint(&model, data, &path("c.ckpt"));
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(dir.join(".c.ckpt.tmp-99999"), b"half a checkpoint").unwrap();
    let err = run(&["--checkpoint", &path("c.ckpt"), "--resume", "--save", &path("c.safetensors")]);
    assert!(err.contains("resuming from") && err.contains("after epoch 1"), "{err}");
    assert_eq!(a, std::fs::read(path("c.safetensors")).unwrap(), "weights after kill -9 and resume differ");
    // Ctrl-C (SIGINT) in the second epoch: a clear message naming the checkpoint, exit 1.
    let child = train_until_checkpoint(&model, data, &path("d.ckpt"));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted during epoch 2") && err.contains("--resume"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Starts training `model` in the background and returns once its first checkpoint exists
/// (the second epoch has then just begun).
fn train_until_checkpoint(model: &str, data: &str, ckpt: &str) -> std::process::Child {
    spawn_with_stdout_until_checkpoint(
        &["train", model, "--data", data, "--checkpoint", ckpt],
        ckpt,
        std::process::Stdio::null(),
    )
}

#[test]
fn bad_checkpoints_are_refused_with_a_reason() {
    let dir = scratch("ckpt-errors");
    let model = small_model(&dir, "one.model", 8);
    let other = small_model(&dir, "other.model", 9);
    let data = data_dir();
    let data = data.to_str().unwrap();
    let ckpt = dir.join("one.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let check = |args: &[&str], want: &str| {
        let (_, err, code) = symdiff(args);
        assert_eq!(code, 1, "{args:?} should fail:\n{err}");
        assert!(err.contains(want), "{args:?}: `{want}` not in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    check(&["train", &model, "--data", data, "--checkpoint", ckpt, "--resume"], "no checkpoint at");
    let (_, err, code) = symdiff(&["train", &model, "--data", data, "--epochs", "1", "--checkpoint", ckpt]);
    assert_eq!(code, 0, "{err}");
    check(
        &["train", &other, "--data", data, "--checkpoint", ckpt, "--resume"],
        "belongs to another model file",
    );
    let bytes = std::fs::read(ckpt).unwrap();
    std::fs::write(ckpt, &bytes[..bytes.len() / 2]).unwrap();
    check(&["train", &model, "--data", data, "--checkpoint", ckpt, "--resume"], "not a safetensors file");
    std::fs::write(ckpt, b"").unwrap();
    check(&["train", &model, "--data", data, "--checkpoint", ckpt, "--resume"], "not a safetensors file");
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, safetensors_without_metadata()).unwrap();
    check(
        &["train", &model, "--data", data, "--checkpoint", weights.to_str().unwrap(), "--resume"],
        "not a symdiff checkpoint",
    );
}

/// A valid safetensors file with one tensor and no metadata.
fn safetensors_without_metadata() -> Vec<u8> {
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&1.0f32.to_le_bytes());
    out
}

#[test]
fn divergence_stops_training_and_names_the_first_tensor() {
    let dir = scratch("nan");
    let data = data_dir();
    let data = data.to_str().unwrap();
    let model = |name: &str, body: &str, optimizer: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "data mnist\ninput 28x28\n{body}\nloss softmax_cross_entropy\noptimizer {optimizer}\n\
                 train epochs=1 batch=32 seed=1\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let check = |file: &str, extra: &[&str], want: &str| {
        let ckpt = format!("{file}.ckpt");
        let (_, err, code) =
            symdiff(&[&["train", file, "--data", data, "--checkpoint", &ckpt], extra].concat());
        assert_eq!(code, 1, "{file} {extra:?} should fail:\n{err}");
        assert!(err.contains("training diverged at epoch 1, step"), "{err}");
        assert!(err.contains(want), "`{want}` not in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!std::path::Path::new(&ckpt).exists(), "a diverged run wrote a checkpoint");
    };
    // A step size that makes the weights so large that a product overflows at the next step.
    let huge = model("huge.model", "flatten\ndense 16 relu\ndense 10", "sgd lr=1e30");
    for engine in [&[][..], &["--interp"][..]] {
        check(&huge, engine, "@ dense_2.kernel` (computed from finite values)");
    }
    // An activation with no value for negative inputs: the first NaN comes from finite values.
    let log = model("log.model", "activation bad(x) = log(x)\nflatten\ndense 16 bad\ndense 10", "adam");
    for engine in [&[][..], &["--interp"][..]] {
        check(&log, engine, "log(");
    }
}

/// A synthetic MNIST-shaped data set of 2,000 noise samples in `dir` and, beside it, a model
/// that the interpreter trains at about half a second per epoch (batch 1): slow enough to
/// interrupt, fast enough to finish. No real data needed. Returns the model's path.
fn slow_synthetic_model(dir: &std::path::Path) -> String {
    common::mnist::write_synthetic(dir, 2000);
    let model = dir.join("slow.model");
    std::fs::write(
        &model,
        "data mnist\ninput 28x28\nflatten\ndense 64 relu\ndense 10\nloss softmax_cross_entropy\n\
         optimizer adam\ntrain epochs=2 batch=1 seed=5\n",
    )
    .unwrap();
    model.to_str().unwrap().to_owned()
}

/// Starts `symdiff args` in the background and returns once `ckpt` exists.
fn spawn_until_checkpoint(args: &[&str], ckpt: &str) -> std::process::Child {
    spawn_with_stdout_until_checkpoint(args, ckpt, std::process::Stdio::piped())
}

/// [`spawn_until_checkpoint`] with stdout going to `stdout`; waits at most 120 s.
fn spawn_with_stdout_until_checkpoint(
    args: &[&str],
    ckpt: &str,
    stdout: std::process::Stdio,
) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::path::Path::new(ckpt).exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

/// Sends `signal` to the child, and returns its exit code, stdout and stderr.
fn signal(child: std::process::Child, signal: &str) -> (Option<i32>, String, String) {
    let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The command in backquotes after "is in CKPT; " in an interruption message.
fn continuing_command(err: &str) -> Vec<String> {
    let quoted = err.split('`').nth(1).unwrap_or_else(|| panic!("no command in {err}"));
    assert!(err.contains(&format!("`{quoted}` continues from it")), "{err}");
    quoted.split(' ').map(str::to_owned).collect()
}

#[test]
fn sigterm_and_sighup_stop_training_between_steps_like_ctrl_c() {
    let dir = scratch("signals");
    let model = slow_synthetic_model(&dir);
    let data = dir.to_str().unwrap();
    for sig in ["TERM", "HUP", "INT"] {
        let ckpt = dir.join(format!("{sig}.ckpt"));
        let c = ckpt.to_str().unwrap();
        let args = ["train", &model, "--data", data, "--checkpoint", c, "--interp", "--epochs", "1000"];
        let child = spawn_until_checkpoint(&args, c);
        let (code, _, err) = signal(child, sig);
        assert_eq!(code, Some(1), "SIG{sig}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let done = symdiff::train::weights::metadata(&ckpt).unwrap()["epoch"].clone();
        let next: usize = done.parse::<usize>().unwrap() + 1;
        assert!(err.contains(&format!("error: interrupted during epoch {next} (step ")), "SIG{sig}: {err}");
        assert!(err.contains(&format!("the checkpoint after epoch {done} is in {c}")), "SIG{sig}: {err}");
        assert_eq!(
            continuing_command(&err).join(" "),
            format!("symdiff train {model} --epochs 1000 --data {data} --checkpoint {c} --interp --resume")
        );
    }
}

#[test]
fn the_command_an_interruption_names_continues_the_run() {
    let dir = scratch("continue");
    let model = slow_synthetic_model(&dir); // the file says epochs=2
    let data = dir.to_str().unwrap();
    let ckpt = dir.join("run.ckpt");
    let c = ckpt.to_str().unwrap();
    let child = spawn_until_checkpoint(
        &["train", &model, "--data", data, "--checkpoint", c, "--interp", "--epochs", "5"],
        c,
    );
    let (code, _, err) = signal(child, "INT");
    assert_eq!(code, Some(1), "{err}");
    let command = continuing_command(&err);
    assert!(command.windows(2).any(|w| w == ["--epochs", "5"]), "{command:?}");
    // A temporary file of a writer that died, and one being written now (young): the first
    // goes when the run starts, the second stays.
    let stale = dir.join(".run.ckpt.tmp-4194399");
    let young = dir.join(".run.ckpt.tmp-4194398");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(600))
        .unwrap();
    std::fs::write(&young, b"being written").unwrap();
    // The command, as printed, runs the remaining epochs of the five.
    assert_eq!(command[0], "symdiff");
    let (out, err, code) = symdiff(&command[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let done = err.split("after epoch ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
    let done: usize = done.parse().unwrap();
    assert!(err.contains(&format!("resuming from {c} after epoch {done}")), "{err}");
    assert!(out.contains("Epoch 5/5 - ") && !out.contains(&format!("Epoch {done}/5 ")), "{out}");
    let trained = 5 - done;
    assert!(out.contains(&format!("s for {trained} epoch")), "{out}");
    if std::path::Path::new("/proc/self").exists() {
        assert!(!stale.exists() && err.contains(&format!("removed {}", stale.display())), "{err}");
    }
    assert!(young.exists(), "a temporary file written a moment ago was removed");
    // Again: nothing is left to train, and it says so.
    let (out, err, code) = symdiff(&command[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the checkpoint is at epoch 5 of 5 (--epochs 5); nothing to train; pass --epochs N with N > 5 to train further"),
        "{err}"
    );
    assert!(out.contains("s for 0 epochs)"), "{out}");
    // Without --epochs, the model file's two epochs are behind the checkpoint: refused.
    let (_, err, code) =
        symdiff(&["train", &model, "--data", data, "--checkpoint", c, "--interp", "--resume"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: {c}: the checkpoint is after epoch 5, beyond this run's last epoch, 2 (the model file's epochs=2); \
             pass --epochs N with N > 5 to train further"
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
