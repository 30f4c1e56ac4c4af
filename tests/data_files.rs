//! `symdiff train` on a person's own files, through the binary: the same MNIST samples as
//! IDX, CSV, NumPy `.npy` and `.npz` train to the same numbers, bit for bit; real data sets
//! that scikit-learn ships (wine: classes; diabetes: regression) train well from CSV; the
//! learning-rate schedules and callbacks do what their formulas say; and every bad file is
//! refused with its file, line and column.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn symdiff(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_symdiff")).args(args).output().expect("symdiff runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("symdiff-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains the model file `model` with `--json`: the per-epoch records and the final one.
fn train(model: &Path, extra: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let m = model.to_str().unwrap();
    let mut args = vec!["train", m, "--json", "--no-checkpoint"];
    args.extend(extra);
    let (out, err, code) = symdiff(&args);
    assert_eq!(code, 0, "{m}:\n{err}");
    let mut lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.pop().unwrap();
    (lines, last)
}

/// The seed's model (`examples/mnist.model`: dense 128 relu, dropout 0.2, dense 10, Adam,
/// batch 32, seed 1), for two epochs, reading its samples from `data`.
fn mnist_model(dir: &Path, name: &str, data: &str) -> PathBuf {
    let path = dir.join(format!("{name}.model"));
    std::fs::write(
        &path,
        format!(
            "{data}\ninput 28x28\nflatten\ndense 128 relu\ndropout 0.2\ndense 10\n\
             loss softmax_cross_entropy\noptimizer adam lr=0.001\ntrain epochs=2 batch=32 seed=1\n"
        ),
    )
    .unwrap();
    path
}

/// The first `n` training and `m` test samples of the real MNIST, written as IDX, CSV (a
/// `label` column, then 784 pixel columns of whole numbers), `.npy` pairs and an `.npz` with
/// Keras' names: every format trains to the same losses and accuracies, to the last bit.
#[test]
fn mnist_as_idx_csv_npy_and_npz_trains_to_the_same_numbers() {
    use ndarray::{Array1, Array3};
    let dir = scratch("formats");
    let mnist = symdiff::train::data::load_mnist(&common::mnist::mnist_dir()).unwrap();
    let (n, m) = (3000, 600);
    let split = |images: &[u8], labels: &[u8], k: usize| (images[..k * 784].to_vec(), labels[..k].to_vec());
    let (train_x, train_y) = split(&mnist.train_images, &mnist.train_labels, n);
    let (test_x, test_y) = split(&mnist.test_images, &mnist.test_labels, m);
    // IDX
    let idx = |dims: &[u32], data: &[u8]| {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    };
    std::fs::write(dir.join("train-images"), idx(&[n as u32, 28, 28], &train_x)).unwrap();
    std::fs::write(dir.join("train-labels"), idx(&[n as u32], &train_y)).unwrap();
    std::fs::write(dir.join("test-images"), idx(&[m as u32, 28, 28], &test_x)).unwrap();
    std::fs::write(dir.join("test-labels"), idx(&[m as u32], &test_y)).unwrap();
    // CSV
    let csv = |x: &[u8], y: &[u8]| {
        let mut text = String::from("label");
        for p in 0..784 {
            text += &format!(",pixel{p}");
        }
        text += "\n";
        for (row, label) in x.chunks(784).zip(y) {
            text += &label.to_string();
            for p in row {
                text += &format!(",{p}");
            }
            text += "\n";
        }
        text
    };
    std::fs::write(dir.join("train.csv"), csv(&train_x, &train_y)).unwrap();
    std::fs::write(dir.join("test.csv"), csv(&test_x, &test_y)).unwrap();
    // NumPy
    let x3 = |x: &[u8], k: usize| Array3::from_shape_vec((k, 28, 28), x.to_vec()).unwrap();
    ndarray_npy::write_npy(dir.join("x_train.npy"), &x3(&train_x, n)).unwrap();
    ndarray_npy::write_npy(
        dir.join("y_train.npy"),
        &Array1::from(train_y.iter().map(|&l| l as i64).collect::<Vec<_>>()),
    )
    .unwrap();
    ndarray_npy::write_npy(dir.join("x_test.npy"), &x3(&test_x, m)).unwrap();
    ndarray_npy::write_npy(dir.join("y_test.npy"), &Array1::from(test_y.clone())).unwrap();
    let mut npz =
        ndarray_npy::NpzWriter::new_compressed(std::fs::File::create(dir.join("mnist.npz")).unwrap());
    npz.add_array("x_train", &x3(&train_x, n)).unwrap();
    npz.add_array("y_train", &Array1::from(train_y.clone())).unwrap();
    npz.add_array("x_test", &x3(&test_x, m)).unwrap();
    npz.add_array("y_test", &Array1::from(test_y.clone())).unwrap();
    npz.finish().unwrap();

    let runs = [
        (
            "idx",
            "data idx \"train-images\" \"train-labels\" test_images=\"test-images\" test_labels=\"test-labels\"",
        ),
        ("csv", "data csv \"train.csv\" label=label test=\"test.csv\" divide=255"),
        (
            "npy",
            "data npy \"x_train.npy\" \"y_train.npy\" test_x=\"x_test.npy\" test_y=\"y_test.npy\" divide=255",
        ),
        ("npz", "data npz \"mnist.npz\" divide=255"),
    ];
    let results: Vec<_> =
        runs.iter().map(|(name, data)| (name, train(&mnist_model(&dir, name, data), &[]))).collect();
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("seconds");
        o.remove("fit_seconds");
        v
    };
    let (_, (epochs0, last0)) = &results[0];
    assert!(last0["test_accuracy"].as_f64().unwrap() > 0.8, "{last0}");
    for (name, (epochs, last)) in &results[1..] {
        let a: Vec<_> = epochs.iter().map(strip).collect();
        let b: Vec<_> = epochs0.iter().map(strip).collect();
        assert_eq!(a, b, "{name}: the epochs differ from IDX's");
        assert_eq!(strip(last), strip(last0), "{name}: the test figures differ from IDX's");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// scikit-learn's wine data (178 samples, 13 features, 3 classes) from CSV, with a validation
/// split and standardised features: a small network separates the classes.
#[test]
fn wine_from_csv_with_a_validation_split_and_normalize() {
    let dir = scratch("wine");
    let text = String::from_utf8(common::sklearn::data_file("wine_data.csv")).unwrap();
    // The file's first line holds counts and class names; the columns are given a header.
    let mut csv = (1..=13).map(|i| format!("f{i}")).collect::<Vec<_>>().join(",") + ",class\n";
    for line in text.lines().skip(1) {
        csv += line;
        csv += "\n";
    }
    std::fs::write(dir.join("wine.csv"), csv).unwrap();
    let model = dir.join("wine.model");
    std::fs::write(
        &model,
        "data csv \"wine.csv\" label=class validation_split=0.25 normalize\ninput 13\ndense 16 relu\ndense 3\n\
         loss softmax_cross_entropy\noptimizer adam lr=0.01\ntrain epochs=40 batch=16 seed=3\n",
    )
    .unwrap();
    let (epochs, last) = train(&model, &[]);
    assert_eq!(epochs.len(), 40);
    let acc = last["validation_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "wine validation accuracy {acc}: {last}");
    // The same model without `normalize` reads the raw features (proline is in the
    // thousands), and learns far less in the same epochs: the statistics are applied.
    std::fs::write(&model, std::fs::read_to_string(&model).unwrap().replace(" normalize", "")).unwrap();
    let (_, raw) = train(&model, &[]);
    assert!(raw["validation_accuracy"].as_f64().unwrap() < acc, "{raw}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// scikit-learn's diabetes data (442 patients, 10 measurements, disease progression a year
/// later) as a space-separated file: regression with `loss mse` beats predicting the mean of
/// the training targets by a wide margin on the held-out samples; `eval` agrees with the
/// end of `train` (the normalisation statistics travel with the weights).
#[test]
fn diabetes_regression_beats_the_mean() {
    let dir = scratch("diabetes");
    let x = String::from_utf8(common::sklearn::data_file("diabetes_data_raw.csv.gz")).unwrap();
    let y = String::from_utf8(common::sklearn::data_file("diabetes_target.csv.gz")).unwrap();
    let mut text = String::from("age sex bmi bp s1 s2 s3 s4 s5 s6 progression\n");
    let targets: Vec<f64> = y.lines().map(|l| l.trim().parse().unwrap()).collect();
    for (row, t) in x.lines().zip(&targets) {
        text += &format!("{} {t}\n", row.trim());
    }
    std::fs::write(dir.join("diabetes.txt"), text).unwrap();
    let model = dir.join("diabetes.model");
    std::fs::write(
        &model,
        "data csv \"diabetes.txt\" target=progression delimiter=\" \" validation_split=0.2 normalize\n\
         input 10\ndense 32 relu\ndense 1\nloss mse\noptimizer adam lr=0.01\ntrain epochs=60 batch=16 seed=1\n",
    )
    .unwrap();
    let weights = dir.join("w.safetensors");
    let (_, last) = train(&model, &["--save", weights.to_str().unwrap()]);
    let mse = last["validation_loss"].as_f64().unwrap();
    // The mean predictor's error on the same validation samples.
    let (train_rows, val_rows) = symdiff::train::source::validation_rows(targets.len(), 0.2, 1);
    let mean = train_rows.iter().map(|&i| targets[i]).sum::<f64>() / train_rows.len() as f64;
    let baseline = val_rows.iter().map(|&i| (targets[i] - mean).powi(2)).sum::<f64>() / val_rows.len() as f64;
    assert!(mse < 0.65 * baseline, "validation MSE {mse} against the mean's {baseline}");
    let (out, err, code) =
        symdiff(&["eval", model.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let eval: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(common::close(eval["validation_loss"].as_f64().unwrap(), mse, 1e-6), "{eval} vs {last}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small classification problem in a CSV file, for the schedule and callback tests.
fn blobs(dir: &Path, extra: &str) -> PathBuf {
    let mut csv = String::from("a,b,y\n");
    let mut s: u64 = 12345;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..200 {
        let k = i % 2;
        csv += &format!("{},{},{k}\n", k as f64 + next(), next() - k as f64);
    }
    std::fs::write(dir.join("blobs.csv"), csv).unwrap();
    let model = dir.join("blobs.model");
    std::fs::write(
        &model,
        format!(
            "data csv \"blobs.csv\" label=y validation_split=0.25\ninput 2\ndense 4 relu\ndense 2\n\
             loss softmax_cross_entropy\ntrain epochs=6 batch=10 seed=1\n{extra}\n"
        ),
    )
    .unwrap();
    model
}

/// Each schedule's rate, as `--json` reports it at every epoch's end, against its formula
/// (15 steps an epoch: 150 training samples in batches of 10).
#[test]
fn schedules_set_the_rate_their_formulas_give() {
    let dir = scratch("schedules");
    let steps = 15.0;
    type Rate = Box<dyn Fn(f64) -> f64>;
    let cases: [(&str, &str, Rate); 4] = [
        (
            "sgd lr=0.1",
            "schedule step every=2 factor=0.5",
            Box::new(|e: f64| 0.1 * 0.5f64.powf(((e - 1.0) / 2.0).floor())),
        ),
        (
            "adam lr=0.01",
            "schedule exponential decay_steps=10 rate=0.9",
            Box::new(move |e: f64| 0.01 * 0.9f64.powf(e * steps / 10.0)),
        ),
        (
            "adam lr=0.01",
            "schedule exponential decay_steps=10 rate=0.9 staircase=true",
            Box::new(move |e: f64| 0.01 * 0.9f64.powf((e * steps / 10.0).floor())),
        ),
        (
            "sgd lr=0.2 momentum=0.9",
            "schedule cosine decay_steps=60 alpha=0.1",
            Box::new(move |e: f64| {
                let t = (e * steps).min(60.0) / 60.0;
                0.2 * (0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()) + 0.1)
            }),
        ),
    ];
    for (optimizer, schedule, rate) in &cases {
        let model = blobs(&dir, &format!("optimizer {optimizer}\n{schedule}"));
        let (epochs, last) = train(&model, &[]);
        for (k, e) in epochs.iter().enumerate() {
            let got = e["learning_rate"].as_f64().unwrap_or(f64::NAN);
            let want = rate((k + 1) as f64);
            assert!(common::close(got, want, 1e-12), "{schedule}, epoch {}: {got} vs {want}", k + 1);
        }
        assert!(last["validation_accuracy"].as_f64().unwrap() > 0.8, "{schedule}: {last}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `early_stopping` with a `min_delta` no epoch can meet stops after `patience` epochs that do
/// not improve on the first, and `restore_best` puts the first epoch's weights back;
/// `reduce_lr_on_plateau` multiplies the rate by its factor after `patience` such epochs.
#[test]
fn early_stopping_and_reduce_on_plateau_act_after_their_patience() {
    let dir = scratch("callbacks");
    let model = blobs(
        &dir,
        "optimizer adam lr=0.01\nearly_stopping monitor=val_loss patience=2 min_delta=100 restore_best=true",
    );
    let (out, err, code) = symdiff(&["train", model.to_str().unwrap(), "--json", "--no-checkpoint"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "3 epochs and the final line:\n{out}");
    assert!(
        err.contains("Epoch 3: early stopping: val_loss has not improved")
            && err.contains("restored the weights of epoch 1"),
        "{err}"
    );
    assert_eq!(lines[3]["validation_loss"], lines[0]["val_loss"], "the first epoch's weights are back");

    let model = blobs(
        &dir,
        "optimizer adam lr=0.01\nreduce_lr_on_plateau monitor=val_loss patience=2 factor=0.5 min_delta=100",
    );
    let (epochs, _) = train(&model, &[]);
    let rates: Vec<f64> = epochs.iter().map(|e| e["learning_rate"].as_f64().unwrap()).collect();
    // The rate logged is the one the epoch ran with: lowered after epochs 3 and 5.
    assert_eq!(rates, [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What is wrong with a data file is said with the file, the line and the column, or with the
/// model file's line where the file and the model disagree; nothing trains.
#[rustfmt::skip]
#[test]
fn bad_data_files_are_refused_with_where() {
    let dir = scratch("bad");
    let model = |data: &str, input: &str, out: usize| {
        let p = dir.join("m.model");
        std::fs::write(&p, format!("{data}\ninput {input}\ndense 4 relu\ndense {out}\nloss softmax_cross_entropy\noptimizer adam\n")).unwrap();
        p
    };
    let check = |csv: &str, data: &str, input: &str, out: usize, wanted: &[&str]| {
        std::fs::write(dir.join("d.csv"), csv).unwrap();
        let m = model(data, input, out);
        let (stdout, err, code) = symdiff(&["train", m.to_str().unwrap(), "--no-checkpoint"]);
        assert_eq!(code, 1, "{csv:?}: exit {code}\n{err}");
        assert!(stdout.is_empty(), "{csv:?}: trained:\n{stdout}");
        for w in wanted {
            assert!(err.contains(w), "{csv:?}: `{w}` not in\n{err}");
        }
    };
    let good = "data csv \"d.csv\" label=y validation_split=0.5";
    check("a,b,y\n1,2,0\n3,x,1\n", good, "2", 2, &["d.csv:3:2 (column \"b\")", "\"x\" is not a number"]);
    check("a,b,y\n1,2,0\n3,4\n", good, "2", 2, &["d.csv:3"]);
    check("a,b,y\n1,2,0\n3,nan,1\n", good, "2", 2, &["d.csv:3:2", "NaN"]);
    check("a,b,y\n1,2,0\n3,4,1.5\n", good, "2", 2, &["d.csv:3:3", "not a class label"]);
    check("a,b,label\n1,2,0\n3,4,1\n", good, "2", 2, &["no column \"y\"", "\"label\""]);
    check("a,b,y\n1,2,0\n3,4,7\n", good, "2", 2, &["d.csv:3:3: label 7 is out of range", "m.model:4:1", "needs 8"]);
    check("a,b,y\n1,2,0\n3,4,1\n", good, "3", 2, &["2 feature values per sample", "m.model:2:1"]);
    check("a,b,y\n1,2,0\n3,4,1\n", "data csv \"missing.csv\" label=y validation_split=0.5", "2", 2, &["missing.csv"]);
    check("a,b,y\n1,2,0\n3,4,1\n", "data csv \"d.csv\" label=y", "2", 2, &["no test split", "validation_split"]);
    check("a,b,y\n1,2,0\n", good, "2", 2, &["leaves 0 to train on"]);
    // `--data DIR` is MNIST's folder; a line that names files does not take it.
    let m = model(good, "2", 2);
    let (_, err, code) = symdiff(&["train", m.to_str().unwrap(), "--data", "/tmp", "--no-checkpoint"]);
    assert_eq!(code, 1);
    assert!(err.contains("--data /tmp names MNIST's folder") && err.contains("m.model:1:1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A picture drawn in code: a dark stroke on light paper (or the reverse), `w`×`h` pixels,
/// with ink where `ink(x, y)` (coordinates in [0, 1]).
fn picture(path: &Path, w: u32, h: u32, light_paper: bool, ink: impl Fn(f64, f64) -> bool) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let on = ink(x as f64 / w as f64, y as f64 / h as f64);
        let v = if on != light_paper { 250 } else { 20 };
        image::Rgb([v, v, if light_paper { v.saturating_sub(30) } else { v }])
    });
    img.save(path).unwrap();
}

/// `predict` on a person's own pictures, drawn at other sizes and colours than MNIST's, with
/// a model trained on MNIST: a bar is a 1 and a ring a 0, and the preprocessing is said; on
/// a CSV of feature rows, one class per row (the label column left out when present).
#[test]
fn predict_reads_pictures_and_csv_rows() {
    let dir = scratch("predict");
    let model = std::fs::read_to_string(format!("{}/examples/mnist.model", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("epochs=5", "epochs=1");
    let m = dir.join("mnist.model");
    std::fs::write(&m, model).unwrap();
    let w = dir.join("w.safetensors");
    let data = common::mnist::mnist_dir();
    let (_, err, code) = symdiff(&[
        "train",
        m.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--no-checkpoint",
        "--save",
        w.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let bar = |x: f64, y: f64| (x - 0.5).abs() < 0.06 && (0.15..0.85).contains(&y);
    let ring = |x: f64, y: f64| {
        let r = ((x - 0.5).powi(2) / 0.09 + (y - 0.5).powi(2) / 0.16).sqrt();
        (0.75..1.0).contains(&r)
    };
    type Ink<'a> = &'a dyn Fn(f64, f64) -> bool;
    let cases: [(&str, u32, u32, bool, Ink<'_>, usize); 4] = [
        ("one.png", 200, 300, true, &bar, 1),
        ("one-dark.jpg", 90, 120, false, &bar, 1),
        ("zero.png", 400, 400, true, &ring, 0),
        ("zero.jpg", 640, 480, true, &ring, 0),
    ];
    for (name, pw, ph, light, ink, class) in cases {
        let p = dir.join(name);
        picture(&p, pw, ph, light, ink);
        let (out, err, code) = symdiff(&[
            "predict",
            m.to_str().unwrap(),
            "--weights",
            w.to_str().unwrap(),
            p.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["class"], class, "{name}: {v}");
        let p: Vec<f64> =
            v["probabilities"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(common::close(p.iter().sum(), 1.0, 1e-9) && p.len() == 10, "{name}: {v}");
        let steps = v["preprocessing"].to_string();
        assert_eq!(steps.contains("inverted"), light, "{name}: {steps}");
        assert!(steps.contains("centred by mass"), "{name}: {steps}");
    }
    // Not a picture, and a picture for a model that does not take 28×28 samples.
    std::fs::write(dir.join("notes.png"), "hello").unwrap();
    let (_, err, code) = symdiff(&[
        "predict",
        m.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        dir.join("notes.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("notes.png"), "{err}");

    // CSV rows, with and without the label column, for a model trained from CSV.
    let model = blobs(&dir, "optimizer adam lr=0.01");
    let bw = dir.join("blobs.safetensors");
    let (_, err, code) =
        symdiff(&["train", model.to_str().unwrap(), "--no-checkpoint", "--save", bw.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(dir.join("rows.csv"), "a,b\n1.5,-1.5\n0.1,0.9\n").unwrap();
    std::fs::write(dir.join("labelled.csv"), "y,a,b\n1,1.5,-1.5\n0,0.1,0.9\n").unwrap();
    for rows in ["rows.csv", "labelled.csv"] {
        let (out, err, code) = symdiff(&[
            "predict",
            model.to_str().unwrap(),
            "--weights",
            bw.to_str().unwrap(),
            dir.join(rows).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{rows}: {err}");
        assert_eq!(out.trim(), "1\n0", "{rows}");
    }
    std::fs::write(dir.join("wide.csv"), "a,b,c\n1,2,3\n").unwrap();
    let (_, err, code) = symdiff(&[
        "predict",
        model.to_str().unwrap(),
        "--weights",
        bw.to_str().unwrap(),
        dir.join("wide.csv").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("rows of 3 features, but the model takes 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
