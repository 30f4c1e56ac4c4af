//! Data-parallel training under `mpirun` (built with `--features mpi`; `.ci/run` installs Open
//! MPI with `scripts/install-mpi.sh` and runs this file): the contract against one process,
//! with 2 and 3 ranks (oversubscribed on a 2-core machine), for a model with dropout; only
//! rank 0 writes; a resumed run ends bit-identical to an uninterrupted one under the same
//! number of ranks and is refused under another; ranks started on other files are caught at
//! start-up; a killed rank ends the job with the checkpoint intact. The arithmetic of the
//! contract for every layer kind, loss and optimizer is `train::parallel`'s unit test, with
//! ranks as threads.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_symdiff");

/// A directory with a CSV data set (480 samples of 8 features, 3 classes) and a model file.
fn setup(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("symdiff-mpi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("a,b,c,d,e,f,g,h,y\n");
    for _ in 0..480 {
        let x: Vec<f64> = (0..8).map(|_| next() * 2.0 - 1.0).collect();
        let y = if x[0] + x[1] * x[2] > 0.3 {
            0
        } else if x[3] - x[4] > 0.0 {
            1
        } else {
            2
        };
        let row: Vec<String> = x.iter().map(|v| format!("{v:.5}")).collect();
        csv += &format!("{},{y}\n", row.join(","));
    }
    std::fs::write(dir.join("d.csv"), csv).unwrap();
    model(&dir, "m.model", "");
    dir
}

fn model(dir: &Path, name: &str, extra: &str) {
    let layers = "dense 16 relu\ndropout 0.3\ndense 3\nloss softmax_cross_entropy";
    variant(dir, name, layers, "adam lr=0.01", extra);
}

fn variant(dir: &Path, name: &str, layers: &str, optimizer: &str, extra: &str) {
    std::fs::write(
        dir.join(name),
        format!(
            "data csv \"d.csv\" label=y validation_split=0.25 normalize\ninput 8\n{layers}\n\
             optimizer {optimizer}\ntrain epochs=4 batch=25 seed=7\n{extra}"
        ),
    )
    .unwrap();
}

fn mpirun(ranks: usize, dir: &Path, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--oversubscribe", "-np", &ranks.to_string(), BIN, "train"])
        .args(args)
        .current_dir(dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .expect("mpirun (scripts/install-mpi.sh installs Open MPI)")
}

fn alone(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("train").args(args).current_dir(dir).output().unwrap()
}

/// The figures of each `--json` line, without the wall times.
fn figures(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("fit_seconds");
            v
        })
        .collect()
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn ranks_train_as_one_process_and_only_rank_0_writes() {
    let dir = setup("contract");
    let one = figures(&alone(&dir, &["m.model", "--json", "--no-checkpoint"]));
    for ranks in [2, 3] {
        let out = mpirun(ranks, &dir, &["m.model", "--json", "--no-checkpoint", "--save", "w.safetensors"]);
        let team = figures(&out);
        // Four epochs and the test line, once: the other ranks print nothing.
        assert_eq!(team.len(), 5, "{ranks} ranks:\n{}", String::from_utf8_lossy(&out.stdout));
        let text = mpirun(ranks, &dir, &["m.model", "--no-checkpoint"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&text.stderr));
        assert_eq!(stdout.matches("Epoch ").count(), 4, "{stdout}");
        assert_eq!(stderr.matches("training m.model").count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("on {ranks} ranks")), "{stderr}");
        // Bit for bit the same in a second run.
        let again = figures(&mpirun(ranks, &dir, &["m.model", "--json", "--no-checkpoint"]));
        assert_eq!(team, again, "{ranks} ranks: a second run differs");
        // One process's training, up to the order of additions.
        for (a, b) in one.iter().zip(&team) {
            for key in ["loss", "val_loss", "validation_loss"] {
                if a.get(key).is_some() {
                    let (x, y) = (number(a, key), number(b, key));
                    assert!((x - y).abs() <= 1e-3 * x.abs(), "{ranks} ranks: {key} {y} against {x}");
                }
            }
        }
        assert!(dir.join("w.safetensors").exists());
        std::fs::remove_file(dir.join("w.safetensors")).unwrap();
    }
}

/// Every layer kind, both losses and every optimizer: 2 and 3 ranks against one process.
#[test]
fn every_layer_loss_and_optimizer_trains_as_in_one_process() {
    let dir = setup("variants");
    let sce = "loss softmax_cross_entropy";
    let variants = [
        (format!("dense 16\nleaky_relu(0.2)\ndropout 0.5\ndense 3\n{sce}"), "sgd lr=0.05"),
        (format!("dense 16\nelu(0.7)\ndense 3 l2=0.01\n{sce}"), "sgd lr=0.05 momentum=0.9"),
        (format!("dense 16 sigmoid\ndense 3\n{sce}"), "sgd lr=0.1 momentum=0.9 nesterov=true"),
        ("dense 16 tanh\ndense 3\nloss mse".to_owned(), "adam beta1=0.8"),
        ("dense 16 softplus\ndense 3\nloss mse".to_owned(), "sgd lr=0.05"),
    ];
    for (k, (layers, optimizer)) in variants.iter().enumerate() {
        let name = format!("v{k}.model");
        variant(&dir, &name, layers, optimizer, "");
        let one = figures(&alone(&dir, &[&name, "--json", "--no-checkpoint"]));
        for ranks in [2, 3] {
            let team = figures(&mpirun(ranks, &dir, &[&name, "--json", "--no-checkpoint"]));
            let (x, y) = (number(&one[4], "validation_loss"), number(&team[4], "validation_loss"));
            assert!(
                (x - y).abs() <= 1e-3 * x.abs(),
                "{layers} / {optimizer}, {ranks} ranks: {y} against {x}"
            );
        }
    }
}

#[test]
fn a_resumed_run_ends_as_an_uninterrupted_one_under_the_same_ranks() {
    let dir = setup("resume");
    let whole = figures(&mpirun(2, &dir, &["m.model", "--json", "--checkpoint", "whole.ckpt"]));
    let first = mpirun(2, &dir, &["m.model", "--json", "--epochs", "2", "--checkpoint", "part.ckpt"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let rest = figures(&mpirun(2, &dir, &["m.model", "--json", "--checkpoint", "part.ckpt", "--resume"]));
    assert_eq!(rest[..2], whole[2..4], "epochs 3 and 4 after resuming");
    assert_eq!(rest[2], whole[4], "the test figures after resuming");
    // Another number of ranks would sum in another order: refused, with the reason.
    let other = mpirun(3, &dir, &["m.model", "--checkpoint", "part.ckpt", "--resume", "--epochs", "5"]);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(stderr.contains("written by a run on 2 ranks, and this run has 3"), "{stderr}");
    assert!(stderr.contains("mpirun -np 2"), "{stderr}");
    // And one process refuses it too.
    let one = alone(&dir, &["m.model", "--checkpoint", "part.ckpt", "--resume", "--epochs", "5"]);
    assert!(String::from_utf8_lossy(&one.stderr).contains("on 2 ranks, and this run has 1"));
}

#[test]
fn ranks_on_other_files_are_caught_before_training() {
    let dir = setup("mismatch");
    model(&dir, "other.model", "# another file\n");
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "1", BIN, "train", "m.model", "--no-checkpoint", ":"])
        .args(["-np", "1", BIN, "train", "other.model", "--no-checkpoint"])
        .current_dir(&dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rank 1 of 2 read another model file or other data than rank 0"), "{stderr}");
    assert!(!stderr.contains("Epoch 1"), "{stderr}");
}

#[test]
fn batch_normalisation_is_refused_under_mpirun() {
    let dir = setup("batchnorm");
    std::fs::write(
        dir.join("bn.model"),
        "data csv \"d.csv\" label=y validation_split=0.25\ninput 8\ndense 16\nbatchnorm\nrelu\ndense 3\n\
         loss softmax_cross_entropy\noptimizer adam\ntrain epochs=1 batch=25\n",
    )
    .unwrap();
    let out = mpirun(2, &dir, &["bn.model", "--no-checkpoint"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("batch normalisation (layer `batch_normalization_1`) is not supported"),
        "{stderr}"
    );
}

#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_survives() {
    let dir = setup("kill");
    model(&dir, "long.model", "");
    let text = std::fs::read_to_string(dir.join("long.model")).unwrap().replace("epochs=4", "epochs=100000");
    std::fs::write(dir.join("long.model"), text).unwrap();
    let job = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2", BIN, "train", "long.model", "--checkpoint", "k.ckpt"])
        .current_dir(&dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = dir.join("k.ckpt");
    let start = std::time::Instant::now();
    while !ckpt.exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ckpt.exists(), "no checkpoint after a minute");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Rank 1 (its environment says which rank it is).
    let pids = Command::new("pgrep").args(["-f", "train long.model --checkpoint k.ckpt"]).output().unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == b"OMPI_COMM_WORLD_RANK=1"))
        })
        .expect("rank 1's process")
        .to_owned();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // mpirun names the rank, rank 0 the step it was waiting in.
    assert!(stderr.contains("process rank 1") && stderr.contains("signal 9"), "{stderr}");
    assert!(stderr.contains("waiting for the other ranks: one has left the job"), "{stderr}");
    assert!(stderr.contains("mpirun -np 2 symdiff train long.model"), "{stderr}");
    // The checkpoint of the last finished epoch is whole: a run resumes from it.
    let bytes = std::fs::read(&ckpt).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let epoch: usize = header["__metadata__"]["epoch"].as_str().unwrap().parse().unwrap();
    let resumed = mpirun(
        2,
        &dir,
        &["long.model", "--checkpoint", "k.ckpt", "--resume", "--epochs", &(epoch + 1).to_string(), "--json"],
    );
    let lines = figures(&resumed);
    assert_eq!(number(&lines[0], "epoch") as usize, epoch + 1);
}
