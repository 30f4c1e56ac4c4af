//! Model commands: `train`, model `eval`, `predict`, `show` and `data fetch`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use symdiff::model::ModelSpec;
use symdiff::train::data::{self, Mnist};
use symdiff::train::trainer::{Dataset, TrainError, Trainer};
use symdiff::train::{EpochStats, checkpoint, plot, weights};

/// A failed command: the message to print (already rendered).
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(format!("error: {e}\n"))
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// Reads and validates a model file.
pub fn load_spec(path: &Path) -> Result<ModelSpec> {
    let text =
        std::fs::read(path).map_err(|e| Failure(format!("error: cannot read {}: {e}\n", path.display())))?;
    let text = String::from_utf8(text).map_err(|e| {
        Failure(format!(
            "error: {}: not UTF-8 text (at byte {})\n",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    ModelSpec::parse(&text, &path.display().to_string()).map_err(|d| Failure(d.render()))
}

fn load_data(dir: Option<&Path>) -> Result<Mnist> {
    let dir = data::resolve_mnist(dir, &mut |m| eprintln!("{m}"))?;
    Ok(data::load_mnist(&dir)?)
}

fn train_set(m: &Mnist) -> Dataset<'_> {
    Dataset { images: &m.train_images, labels: &m.train_labels, sample: vec![m.rows, m.cols] }
}

fn test_set(m: &Mnist) -> Dataset<'_> {
    Dataset { images: &m.test_images, labels: &m.test_labels, sample: vec![m.rows, m.cols] }
}

/// Options of `symdiff train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model file, e.g. examples/mnist.model.
    pub file: PathBuf,
    /// Override the file's epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Directory with the data set (default: $SYMDIFF_DATA, then the cache).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// One JSON object per epoch and a final one with the test accuracy.
    #[arg(long)]
    pub json: bool,
    /// Save the trained weights (safetensors).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Draw loss and accuracy per epoch into an SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Train with the tensor interpreter instead of the compiled step.
    #[arg(long)]
    pub interp: bool,
    /// Print the compile time and a per-kernel time breakdown of the training step.
    #[arg(long)]
    pub timings: bool,
    /// Write each compiled kernel's Cranelift IR into DIR.
    #[arg(long, value_name = "DIR")]
    pub dump_ir: Option<PathBuf>,
    /// Where to keep the checkpoint written after every epoch (default: the model file's
    /// name with `.checkpoint.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Write no checkpoints.
    #[arg(long, conflicts_with_all = ["checkpoint", "resume"])]
    pub no_checkpoint: bool,
    /// Continue from the checkpoint (same model file; ends with the same weights as an
    /// uninterrupted run).
    #[arg(long)]
    pub resume: bool,
}

/// The default checkpoint of a model file: `mnist.model` → `mnist.checkpoint.safetensors`.
pub fn default_checkpoint(file: &Path) -> PathBuf {
    file.with_extension("checkpoint.safetensors")
}

/// SHA-256 of a model file's bytes, in hex (a checkpoint records the model it belongs to).
fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes =
        std::fs::read(path).map_err(|e| Failure(format!("error: cannot read {}: {e}\n", path.display())))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let mut spec = load_spec(&args.file)?;
    if let Some(e) = args.epochs {
        if e == 0 {
            return Err(Failure("error: --epochs must be at least 1\n".into()));
        }
        spec.train.epochs = e;
    }
    let model_sha = file_sha256(&args.file)?;
    let ckpt_path = (!args.no_checkpoint)
        .then(|| args.checkpoint.clone().unwrap_or_else(|| default_checkpoint(&args.file)));
    if args.resume && ckpt_path.is_none() {
        return Err(Failure("error: --resume needs a checkpoint; drop --no-checkpoint\n".into()));
    }
    let mnist = load_data(args.data.as_deref())?;
    let (train, test) = (train_set(&mnist), test_set(&mnist));
    let epochs = spec.train.epochs;
    let params = spec.parameter_count();
    let mut trainer = Trainer::new(spec)?;
    let mut history: Vec<EpochStats> = Vec::new();
    let mut first_epoch = 1;
    if let (true, Some(path)) = (args.resume, &ckpt_path) {
        if !path.exists() {
            return Err(Failure(format!(
                "error: no checkpoint at {} to resume from (train without --resume to start)\n",
                path.display()
            )));
        }
        let resumed = checkpoint::load(path, &mut trainer, &model_sha)?;
        eprintln!("resuming from {} after epoch {}", path.display(), resumed.epoch);
        first_epoch = resumed.epoch + 1;
        history = resumed.history;
    }
    // Ctrl-C stops training between two steps; the checkpoint of the last finished epoch stays.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed));
    }
    trainer.stop = Some(stop);
    let mut engine = "the tensor interpreter".to_owned();
    if !args.interp {
        match trainer.compile(args.dump_ir.is_some()) {
            Ok(t) => {
                engine = format!("a compiled step ({:.1} ms to compile)", t.as_secs_f64() * 1e3);
                if args.timings {
                    trainer.time_kernels();
                }
            }
            Err(e) => eprintln!("warning: {e}; training with the interpreter"),
        }
    }
    if !args.json {
        eprintln!(
            "training {} ({params} parameters) on {} samples, validating on {}, with {engine}",
            args.file.display(),
            train.len(),
            test.len()
        );
    }
    let bar = !args.json && std::io::stderr().is_terminal();
    let start = Instant::now();
    for epoch in first_epoch..=epochs {
        let t = Instant::now();
        let pb = bar.then(|| {
            let pb = indicatif::ProgressBar::new(train.len().div_ceil(trainer.spec.train.batch) as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {pos}/{len} [{bar:30}] {elapsed} - ETA {eta} - {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix(format!("Epoch {epoch}/{epochs}"));
            pb
        });
        let done = trainer.train_epoch(&train, epoch, &mut |p| {
            if let Some(pb) = &pb
                && (p.step % 25 == 0 || p.step == p.steps)
            {
                pb.set_position(p.step as u64);
                pb.set_message(format!("loss: {:.4} - accuracy: {:.4}", p.loss, p.accuracy));
            }
        });
        let (loss, accuracy) = match done {
            Err(TrainError::Interrupted { epoch, step }) => {
                if let Some(pb) = pb {
                    pb.finish_and_clear();
                }
                let kept = match (&ckpt_path, epoch) {
                    (Some(p), e) if e > 1 && p.exists() => format!(
                        "the checkpoint after epoch {} is in {}; `symdiff train {} --resume` continues from it",
                        e - 1,
                        p.display(),
                        args.file.display()
                    ),
                    _ => "no epoch had finished, so there is no checkpoint".to_owned(),
                };
                return Err(Failure(format!(
                    "error: interrupted during epoch {epoch} (step {step}); {kept}\n"
                )));
            }
            other => other?,
        };
        let (val_loss, val_accuracy) = trainer.evaluate(&test)?;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let seconds = t.elapsed().as_secs_f64();
        let stats = EpochStats { epoch, loss, accuracy, val_loss, val_accuracy, seconds };
        if args.json {
            println!(
                "{}",
                json!({"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
                       "val_accuracy": val_accuracy, "seconds": seconds})
            );
        } else {
            println!(
                "Epoch {epoch}/{epochs} - {seconds:.1}s - loss: {loss:.4} - accuracy: {accuracy:.4} - val_loss: {val_loss:.4} - val_accuracy: {val_accuracy:.4}"
            );
        }
        history.push(stats);
        if let Some(path) = &ckpt_path {
            checkpoint::save(path, &mut trainer, epoch, &history, &model_sha)?;
        }
    }
    let fit = start.elapsed().as_secs_f64();
    trainer.sync();
    if let Some(dir) = &args.dump_ir {
        let n = trainer
            .dump_ir(dir)
            .map_err(|e| Failure(format!("error: cannot write {}: {e}\n", dir.display())))?;
        eprintln!("wrote the Cranelift IR of {n} kernels to {}", dir.display());
    }
    if let Some(kt) = &trainer.kernel_times {
        eprintln!("per-kernel times of the training step over {} steps:\n{}", kt.steps, kt.report());
    }
    let (test_loss, test_accuracy) = trainer.evaluate(&test)?;
    if args.json {
        println!("{}", json!({"test_loss": test_loss, "test_accuracy": test_accuracy, "fit_seconds": fit}));
    } else {
        println!("test: loss {test_loss:.4} - accuracy {test_accuracy:.4} ({fit:.1}s for {epochs} epochs)");
    }
    if let Some(path) = &args.save {
        let meta = [("model".to_owned(), args.file.display().to_string())].into_iter().collect();
        weights::save(path, &trainer.named_tensors(), meta)?;
        if !args.json {
            eprintln!("saved weights to {}", path.display());
        }
    }
    if let Some(path) = &args.plot {
        plot::plot(path, &history)
            .map_err(|e| Failure(format!("error: cannot draw {}: {e}\n", path.display())))?;
        if !args.json {
            eprintln!("drew training curves in {}", path.display());
        }
    }
    Ok(())
}

fn trainer_with_weights(file: &Path, weights_path: &Path) -> Result<Trainer> {
    let spec = load_spec(file)?;
    let mut trainer = Trainer::new(spec)?;
    let layout = trainer.tensor_layout();
    let tensors = weights::load(weights_path, &layout)?;
    trainer.set_tensors(tensors);
    Ok(trainer)
}

/// `symdiff eval FILE.model --weights W`: test loss and accuracy.
pub fn evaluate(file: &Path, weights_path: &Path, data_dir: Option<&Path>, json_out: bool) -> Result<String> {
    let mut trainer = trainer_with_weights(file, weights_path)?;
    let mnist = load_data(data_dir)?;
    let (loss, accuracy) = trainer.evaluate(&test_set(&mnist))?;
    Ok(if json_out {
        json!({"test_loss": loss, "test_accuracy": accuracy}).to_string()
    } else {
        format!("test: loss {loss:.4} - accuracy {accuracy:.4}")
    })
}

/// `symdiff predict FILE.model --weights W IMAGES.idx`: one class per image.
pub fn predict(file: &Path, weights_path: &Path, images: &Path, json_out: bool) -> Result<String> {
    let mut trainer = trainer_with_weights(file, weights_path)?;
    let idx = data::read_idx(images)?;
    let sample = &trainer.spec.input;
    if idx.dims.len() != sample.len() + 1 || idx.dims[1..] != sample[..] {
        return Err(Failure(format!(
            "error: {}: images are {:?}, the model takes N×{}\n",
            images.display(),
            idx.dims,
            sample.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
        )));
    }
    let labels = vec![0u8; idx.dims[0]];
    let set = Dataset { images: &idx.data, labels: &labels, sample: sample.clone() };
    let classes = trainer.predict(&set)?;
    Ok(if json_out {
        json!(classes).to_string()
    } else {
        classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n")
    })
}

/// `symdiff data fetch mnist [--dir DIR]`.
pub fn fetch(dataset: &str, dir: Option<&Path>) -> Result<String> {
    if dataset != "mnist" {
        return Err(Failure(format!("error: unknown data set `{dataset}`; symdiff knows `mnist`\n")));
    }
    let target = match dir {
        Some(d) => d.to_path_buf(),
        None => data::default_cache_dir().ok_or_else(|| {
            Failure("error: no cache directory (set HOME or XDG_CACHE_HOME), or pass --dir DIR\n".into())
        })?,
    };
    let path = data::fetch_mnist(&target, &mut |m| eprintln!("{m}"))?;
    Ok(format!("MNIST is in {}", path.display()))
}

/// `symdiff show FILE.model [--dot]`.
pub fn show(file: &Path, dot: bool) -> Result<String> {
    let spec = load_spec(file)?;
    let text = if dot { symdiff::model::show::dot(&spec) } else { symdiff::model::show::equations(&spec) };
    text.map(|t| t.trim_end().to_owned()).map_err(|d| Failure(d.render()))
}

/// The median of `times`, in microseconds.
fn median_us(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN) * 1e6
}

/// Median time of `steps` training steps at `batch` (after a warm-up), compiled or not, for
/// each thread count of `threads` (`symdiff::set_threads`): the counts take turns in blocks
/// of a few steps, so that a change in the machine's load affects them alike.
fn time_steps(
    spec: &ModelSpec,
    data: &Dataset<'_>,
    batch: usize,
    steps: usize,
    compiled: bool,
    threads: &[usize],
) -> Result<Vec<f64>> {
    let mut spec = spec.clone();
    spec.train.batch = batch;
    let mut trainer = Trainer::new(spec)?;
    if compiled {
        trainer.compile(false)?;
    }
    let n = data.len();
    let warm = (steps / 10).max(3);
    let block = 10;
    let mut times = vec![Vec::with_capacity(steps); threads.len()];
    let mut s = 0;
    let before = symdiff::set_threads(0);
    while s < steps + warm {
        for (k, &t) in threads.iter().enumerate() {
            symdiff::set_threads(t);
            for _ in 0..block {
                let idx: Vec<usize> = (0..batch).map(|j| (s * batch + j) % n).collect();
                let start = Instant::now();
                let r = trainer.train_step(data, &idx, 1, s + 1);
                let elapsed = start.elapsed().as_secs_f64();
                if let Err(e) = r {
                    symdiff::set_threads(before);
                    return Err(e.into());
                }
                if s >= warm {
                    times[k].push(elapsed);
                }
            }
        }
        s += block;
    }
    symdiff::set_threads(before);
    Ok(times.into_iter().map(median_us).collect())
}

/// Peak resident memory of this process, in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `symdiff bench`: see the command's help.
pub fn bench(
    file: &Path,
    data_dir: Option<&Path>,
    epochs: Option<usize>,
    steps: usize,
    json_out: bool,
) -> Result<String> {
    let mut spec = load_spec(file)?;
    if let Some(e) = epochs {
        spec.train.epochs = e.max(1);
    }
    let steps = steps.max(1);
    let mnist = load_data(data_dir)?;
    let (train, test) = (train_set(&mnist), test_set(&mnist));
    let batch = spec.train.batch;
    // Compile time: the median of five compilations of the training step.
    let mut compiles = Vec::new();
    for _ in 0..5 {
        let mut t = Trainer::new(spec.clone())?;
        compiles.push(t.compile(false)?.as_secs_f64());
    }
    let compile_ms = median_us(compiles) / 1e3;
    // Every thread count the team has against one thread, taking turns.
    let threads = symdiff::threads();
    let configs: Vec<usize> = if threads > 1 { vec![threads, 1] } else { vec![1] };
    let at32 = time_steps(&spec, &train, 32, steps, true, &configs)?;
    let at256 = time_steps(&spec, &train, 256, (steps / 4).max(1), true, &configs)?;
    let (step32, step256) = (at32[0], at256[0]);
    let single = (threads > 1).then(|| (at32[1], at256[1]));
    let interp32 = time_steps(&spec, &train, 32, (steps / 10).max(5), false, &[threads])?[0];
    // The fit, as `symdiff train` runs it: compile, then every epoch with validation.
    let start = Instant::now();
    let mut trainer = Trainer::new(spec.clone())?;
    trainer.compile(false)?;
    let mut validation = 0.0;
    for epoch in 1..=spec.train.epochs {
        trainer.train_epoch(&train, epoch, &mut |_| {})?;
        let v = Instant::now();
        trainer.evaluate(&test)?;
        validation += v.elapsed().as_secs_f64();
    }
    let fit = start.elapsed().as_secs_f64();
    let (_, accuracy) = trainer.evaluate(&test)?;
    let train_flops = trainer.matmul_flops(batch, true)? as f64;
    let infer_flops = trainer.matmul_flops(batch, false)? as f64;
    let steps_per_epoch = train.len().div_ceil(batch) as f64;
    let val_batches = test.len().div_ceil(batch) as f64;
    let fit_flops = spec.train.epochs as f64 * (steps_per_epoch * train_flops + val_batches * infer_flops);
    let flops32 = trainer.matmul_flops(32, true)? as f64;
    let peak = peak_rss_mib();
    if json_out {
        return Ok(json!({
            "model": file.display().to_string(),
            "compile_ms": compile_ms,
            "threads": threads,
            "step32_us": step32,
            "step256_us": step256,
            "step32_one_thread_us": single.map(|s| s.0),
            "step256_one_thread_us": single.map(|s| s.1),
            "interp_step32_us": interp32,
            "fit_seconds": fit,
            "validation_seconds": validation,
            "epochs": spec.train.epochs,
            "test_accuracy": accuracy,
            "fit_gflops": fit_flops / 1e9,
            "fit_gflop_per_s": fit_flops / fit / 1e9,
            "step32_gflop_per_s": flops32 / step32 / 1e3,
            "peak_rss_mib": peak,
        })
        .to_string());
    }
    let mut out = format!("{}: batch {batch}, {} epochs\n", file.display(), spec.train.epochs);
    out += &format!("  compile the training step   {compile_ms:>9.2} ms\n");
    out += &format!(
        "  step @32 (median)           {step32:>9.1} µs   {:.1} GFLOP/s   interpreter {interp32:.1} µs ({:.1}x)\n",
        flops32 / step32 / 1e3,
        interp32 / step32
    );
    out += &format!("  step @256 (median)          {step256:>9.1} µs\n");
    if let Some((one32, one256)) = single {
        out += &format!(
            "  on 1 of {threads} threads (interleaved)  step @32 {one32:.1} µs ({:.2}x), step @256 {one256:.1} µs ({:.2}x)\n",
            one32 / step32,
            one256 / step256
        );
    }
    out += &format!(
        "  fit with validation         {fit:>9.2} s    {:.1} GFLOP of matmul, {:.1} GFLOP/s\n",
        fit_flops / 1e9,
        fit_flops / fit / 1e9
    );
    out += &format!("    of which validation       {validation:>9.2} s\n");
    out += &format!("  test accuracy               {:>9.2} %\n", accuracy * 100.0);
    if let Some(p) = peak {
        out += &format!("  peak memory (RSS)           {p:>9.0} MiB");
    }
    Ok(out)
}
