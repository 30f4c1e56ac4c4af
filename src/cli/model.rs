//! Model commands: `train`, model `eval`, `predict`, `show`, `bench` and `data fetch`.
//!
//! `train` prints one line per epoch through the CLI's writer ([`Out`]) and writes the
//! epoch's checkpoint *before* its line, so no failure to print loses a finished epoch. Ctrl-C,
//! SIGTERM and SIGHUP stop it between two steps; so does standard output closing (at the end
//! of the epoch whose line could not be written). Each way out names the checkpoint and the
//! exact command that continues from it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::{Out, OutputError};
use symdiff::model::ModelSpec;
use symdiff::model::schedule::{Monitor, Verdict};
use symdiff::train::data;
#[cfg(feature = "mpi")]
use symdiff::train::parallel::Collective as _;
use symdiff::train::source::{self, Loaded};
use symdiff::train::trainer::{Dataset, TrainError, Trainer};
use symdiff::train::{EpochStats, checkpoint, plot, weights};

/// A failed command.
pub enum Failure {
    /// The message to print on stderr (already rendered).
    Message(String),
    /// Standard output could not be written (quiet when it was closed).
    Output(OutputError),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Message(format!("error: {e}\n"))
    }
}

impl From<OutputError> for Failure {
    fn from(e: OutputError) -> Failure {
        Failure::Output(e)
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// Reads and validates a model file.
pub fn load_spec(path: &Path) -> Result<ModelSpec> {
    // The size first: a model file is text for the parser, never more than it accepts.
    let cannot =
        |e: std::io::Error| Failure::Message(format!("error: cannot read {}: {e}\n", path.display()));
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    let limit = symdiff::MAX_INPUT;
    if len > limit as u64 {
        let message = format!(
            "the model file is {len} bytes ({:.1} MiB); the limit is {limit} bytes ({} MiB)",
            len as f64 / (1u64 << 20) as f64,
            limit >> 20
        );
        let d = symdiff::Diagnostic::new("", symdiff::Span::new(0, 0), message)
            .with_origin(path.display().to_string())
            .with_help("split it into smaller pieces; it is refused before it is read");
        return Err(Failure::Message(d.render()));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(cannot)?, limit as u64 + 1),
        &mut text,
    )
    .map_err(cannot)?;
    let text = String::from_utf8(text).map_err(|e| {
        Failure::Message(format!(
            "error: {}: not UTF-8 text (at byte {})\n",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    ModelSpec::parse(&text, &path.display().to_string()).map_err(|d| Failure::Message(d.render()))
}

/// The samples of the model file's `data` line (paths relative to the model file's
/// folder; `data mnist` from `--data DIR`, `$SYMDIFF_DATA` or the cache).
fn load_data(spec: &ModelSpec, file: &Path, dir: Option<&Path>) -> Result<Loaded> {
    let model_dir = file.parent().unwrap_or(Path::new("."));
    source::load(spec, model_dir, dir, symdiff::model::memory_budget(), &mut |m| note!("{m}")).map_err(|e| {
        match e {
            // Already rendered, with `error:` and the model file's line where there is one.
            source::SourceError::Model(text) => Failure::Message(text),
            other => Failure::Message(format!("error: {other}\n")),
        }
    })
}

/// Options of `symdiff train`.
#[derive(clap::Args, Clone)]
pub struct TrainArgs {
    /// The model file, e.g. examples/mnist.model.
    pub file: PathBuf,
    /// Override the file's epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Directory with the MNIST files, for `data mnist` (default: $SYMDIFF_DATA, then the
    /// cache); a `data` line that names files reads them relative to the model file.
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
    /// Log every epoch's metrics to a CSV file (epoch,loss,accuracy,val_loss,val_accuracy,
    /// seconds; a resumed run's earlier epochs included), rewritten whole after each epoch.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
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
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Message(format!("error: cannot read {}: {e}\n", path.display())))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Shell-quotes `arg` where it needs it (single quotes; `'` as `'\''`).
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

/// The command that continues an interrupted run: the same `symdiff train` command line, with
/// every option the user gave (`--epochs`, `--checkpoint`, `--data`, `--save`, ...), and
/// `--resume`.
pub fn resume_command(args: &TrainArgs) -> String {
    let path = |p: &Path| shell_word(&p.display().to_string());
    let mut words = vec!["symdiff".to_owned(), "train".to_owned(), path(&args.file)];
    let mut opt = |name: &str, value: Option<String>| {
        words.push(name.to_owned());
        words.extend(value);
    };
    if let Some(e) = args.epochs {
        opt("--epochs", Some(e.to_string()));
    }
    for (name, value) in [
        ("--data", &args.data),
        ("--checkpoint", &args.checkpoint),
        ("--save", &args.save),
        ("--plot", &args.plot),
        ("--log", &args.log),
        ("--dump-ir", &args.dump_ir),
    ] {
        if let Some(v) = value {
            opt(name, Some(path(v)));
        }
    }
    for (name, on) in [("--json", args.json), ("--interp", args.interp), ("--timings", args.timings)] {
        if on {
            opt(name, None);
        }
    }
    opt("--resume", None);
    words.join(" ")
}

/// What is kept when training stops early after `done` finished epochs: the checkpoint and
/// the command that continues from it, or why there is none.
fn kept(args: &TrainArgs, ckpt: Option<&Path>, done: usize, ranks: usize) -> String {
    // A team's run resumes with as many ranks (`checkpoint::load` checks it).
    let ranks = if ranks > 1 { format!("mpirun -np {ranks} ") } else { String::new() };
    match ckpt {
        None => "checkpoints were off (--no-checkpoint), so the run cannot be resumed".to_owned(),
        Some(p) if done >= 1 && p.exists() => format!(
            "the checkpoint after epoch {done} is in {}; `{ranks}{}` continues from it",
            p.display(),
            resume_command(args)
        ),
        Some(_) => "no epoch had finished, so there is no checkpoint".to_owned(),
    }
}

/// The progress bar's layout: the figures first, then a bar as wide as the terminal leaves
/// (indicatif's `wide_bar`), so that the line fits the terminal's width.
const PROGRESS_TEMPLATE: &str = "{prefix} {pos}/{len} [{wide_bar}] {elapsed} - ETA {eta} - {msg}";

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(steps as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(PROGRESS_TEMPLATE)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(format!("Epoch {epoch}/{epochs}"));
    pb
}

/// The progress bar's message: the running loss and metric (accuracy, or `mae`).
fn progress_message(loss: f64, metric: &str, value: f64) -> String {
    format!("loss: {loss:.4} - {metric}: {value:.4}")
}

pub fn train(args: TrainArgs, out: &mut Out) -> Result<()> {
    // Under `mpirun`, one rank of a data-parallel team (`train::parallel`); only rank 0
    // prints and writes files.
    let (team, exchanges) = ranks()?.unzip();
    let rank = team.as_ref().map_or(0, |t| t.rank());
    train_as(args, out, team, exchanges).map_err(|e| match e {
        // What every rank meets alike (an interruption, divergence), rank 0 reports; what
        // happened to one rank alone, it says itself.
        Failure::Message(m) if rank > 0 => {
            let shared = ["error: interrupted", "error: training diverged"].iter().any(|p| m.starts_with(p));
            Failure::Message(if shared { String::new() } else { format!("rank {rank}: {m}") })
        }
        other => other,
    })
}

fn train_as(
    args: TrainArgs,
    out: &mut Out,
    team: Option<Box<dyn symdiff::train::parallel::Collective>>,
    exchanges: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<()> {
    let lead = team.as_ref().is_none_or(|t| t.rank() == 0);
    macro_rules! say {
        ($($arg:tt)*) => {{
            if lead {
                note!($($arg)*);
            }
        }};
    }
    let mut spec = load_spec(&args.file)?;
    if let Some(e) = args.epochs {
        if e == 0 {
            return Err(Failure::Message("error: --epochs must be at least 1\n".into()));
        }
        spec.train.epochs = e;
    }
    let model_sha = file_sha256(&args.file)?;
    let ckpt_path = (!args.no_checkpoint)
        .then(|| args.checkpoint.clone().unwrap_or_else(|| default_checkpoint(&args.file)));
    if args.resume && ckpt_path.is_none() {
        return Err(Failure::Message("error: --resume needs a checkpoint; drop --no-checkpoint\n".into()));
    }
    // Temporary files that a crashed writer left beside the checkpoint or the weights.
    for target in ckpt_path.iter().chain(&args.save).filter(|_| lead) {
        for stale in weights::remove_stale_temps(target) {
            say!("removed {}, a temporary file left by an interrupted write", stale.display());
        }
    }
    let loaded = load_data(&spec, &args.file, args.data.as_deref())?;
    let train = source::dataset(&loaded.train, &spec);
    let (Some(validation), Some(test)) = (loaded.validation(), loaded.test()) else {
        return Err(Failure::Message("error: the data has no samples to validate on\n".into()));
    };
    let (validation, test) = (source::dataset(validation, &spec), source::dataset(test, &spec));
    let test_name = loaded.test_name();
    let epochs = spec.train.epochs;
    let params = spec.parameter_count();
    let metric = if spec.regression { "mae" } else { "accuracy" };
    let mut trainer = Trainer::new(spec)?;
    trainer.set_normalization(&train);
    let ranks_line = match team {
        Some(team) => {
            let size = team.size();
            let digest = digest(&model_sha, [&train, &validation, &test]);
            let others = symdiff::train::parallel::disagreeing(team.as_ref(), digest);
            if !others.is_empty() {
                let list = others.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
                return Err(Failure::Message(format!(
                    "error: rank{} {list} of {size} read another model file or other data than rank 0 \
                     (their SHA-256 and samples differ); every rank must be started on the same files\n",
                    if others.len() == 1 { "" } else { "s" }
                )));
            }
            trainer.join(team)?;
            format!(" on {size} ranks (data-parallel over MPI, {} samples of each batch per rank)", {
                let b = trainer.spec.train.batch;
                let (lo, hi) = symdiff::train::parallel::rows(b, 0, size);
                hi - lo
            })
        }
        None => String::new(),
    };
    let mut history: Vec<EpochStats> = Vec::new();
    let mut first_epoch = 1;
    if let (true, Some(path)) = (args.resume, &ckpt_path) {
        if !path.exists() {
            return Err(Failure::Message(format!(
                "error: no checkpoint at {} to resume from (train without --resume to start)\n",
                path.display()
            )));
        }
        let resumed = checkpoint::load(path, &mut trainer, &model_sha)?;
        let of_run = match args.epochs {
            Some(_) => format!("--epochs {epochs}"),
            None => format!("the model file's epochs={epochs}"),
        };
        if resumed.epoch > epochs {
            return Err(Failure::Message(format!(
                "error: {}: the checkpoint is after epoch {}, beyond this run's last epoch, {epochs} \
                 ({of_run}); pass --epochs N with N > {} to train further\n",
                path.display(),
                resumed.epoch,
                resumed.epoch
            )));
        }
        say!("resuming from {} after epoch {}", path.display(), resumed.epoch);
        if resumed.epoch == epochs {
            say!(
                "the checkpoint is at epoch {epochs} of {epochs} ({of_run}); nothing to train; \
                 pass --epochs N with N > {epochs} to train further"
            );
        }
        first_epoch = resumed.epoch + 1;
        history = resumed.history;
    }
    // The log is written once before training, so that a path that cannot be written is
    // an error now and not after the first epoch.
    if let Some(path) = args.log.as_ref().filter(|_| lead) {
        write_log(path, &history, metric)?;
    }
    // Ctrl-C, SIGTERM and SIGHUP stop training between two steps; the checkpoint of the last
    // finished epoch stays.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Where training is (epoch << 32 | step). A signal that finds this rank of a team blocked
    // in an exchange (a rank has left the job, and mpirun is ending it: SIGTERM, then SIGKILL
    // a second later) is reported here, naming the step, before exiting.
    let position = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        use std::sync::atomic::Ordering::Relaxed;
        let (stop, position, exchanges) = (stop.clone(), position.clone(), exchanges.clone());
        let ranks = trainer.rank().1;
        let (args, ckpt) = (args.clone(), ckpt_path.clone());
        let _ = ctrlc::set_handler(move || {
            stop.store(true, Relaxed);
            let Some(exchanges) = &exchanges else { return };
            let at = exchanges.load(Relaxed);
            if at % 2 == 1 {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if exchanges.load(Relaxed) == at {
                    let p = position.load(Relaxed);
                    let (epoch, step) = ((p >> 32) as usize, (p & 0xffff_ffff) as usize + 1);
                    if lead {
                        note!(
                            "error: stopped in epoch {epoch}, step {step}, waiting for the other ranks: \
                             one has left the job (mpirun names it); {}",
                            kept(&args, ckpt.as_deref(), epoch.saturating_sub(1), ranks)
                        );
                    }
                    std::process::exit(1);
                }
            }
        });
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
            Err(e) => say!("warning: {e}; training with the interpreter"),
        }
    }
    if !args.json {
        // The layers first, as Keras users see them before `fit`.
        if let Ok(table) = symdiff::model::summary::summary(&trainer.spec) {
            say!("{table}\n");
        }
        say!(
            "training {} ({params} parameters) on {} samples of {}, validating on {}, with {engine}{ranks_line}",
            args.file.display(),
            train.len(),
            loaded.origin,
            validation.len()
        );
    }
    // Callbacks: their state after the epochs a resumed run already has, replayed from the
    // history (the same values give the same decisions).
    let mut plateau = trainer.spec.plateau.clone();
    let mut stopper = trainer.spec.early_stopping.clone();
    let best_path = ckpt_path.as_ref().map(|p| p.with_extension("best.safetensors"));
    let mut best: Option<(usize, Vec<ndarray::ArrayD<f32>>)> = None;
    let mut stopped = None;
    for h in &history {
        if let Some(p) = &mut plateau {
            trainer.lr = p.end_epoch(monitored(h, p.monitor()), trainer.lr);
        }
        if let Some(e) = &mut stopper
            && let Verdict::Stop { best_epoch, .. } = e.observe(h.epoch - 1, monitored(h, e.monitor()))
        {
            stopped = Some(best_epoch + 1);
        }
    }
    if let (Some(e), Some(path)) = (&stopper, &best_path)
        && e.restore_best()
        && let Some((b, _)) = e.best()
        && path.exists()
    {
        // The best epoch's weights, kept beside the checkpoint when they were the best.
        let kept_epoch = weights::metadata(path)?.get("epoch").and_then(|e| e.parse::<usize>().ok());
        if kept_epoch == Some(b + 1) {
            best = Some((b + 1, weights::load(path, &trainer.tensor_layout())?));
        }
    }
    if let (Some(b), true) = (stopped, first_epoch <= epochs) {
        say!(
            "early stopping ended this run after epoch {}; nothing to train (its best epoch was {b})",
            first_epoch - 1
        );
    }
    let last_epoch = if stopped.is_some() { first_epoch - 1 } else { epochs };
    let bar = lead && !args.json && std::io::stderr().is_terminal();
    let steps = train.len().div_ceil(trainer.spec.train.batch);
    let start = Instant::now();
    for epoch in first_epoch..=last_epoch {
        let t = Instant::now();
        let pb = bar.then(|| progress_bar(steps, epoch, epochs));
        position.store((epoch as u64) << 32, std::sync::atomic::Ordering::Relaxed);
        let done = trainer.train_epoch(&train, epoch, &mut |p| {
            position.store((epoch as u64) << 32 | p.step as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(pb) = &pb
                && (p.step % 25 == 0 || p.step == p.steps)
            {
                pb.set_position(p.step as u64);
                pb.set_message(progress_message(p.loss, metric, p.metric));
            }
        });
        let (loss, accuracy) = match done {
            Err(TrainError::Interrupted { epoch, step }) => {
                if let Some(pb) = pb {
                    pb.finish_and_clear();
                }
                return Err(Failure::Message(format!(
                    "error: interrupted during epoch {epoch} (step {step}); {}\n",
                    kept(&args, ckpt_path.as_deref(), epoch - 1, trainer.rank().1)
                )));
            }
            other => other?,
        };
        let (val_loss, val_accuracy) = trainer.evaluate(&validation)?;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        let seconds = t.elapsed().as_secs_f64();
        // The learning rate, where it changes (as Keras logs `learning_rate` then): the
        // schedule's rate at the epoch's end, before `reduce_lr_on_plateau` acts on it.
        let lr = trainer.spec.lr_varies().then(|| trainer.current_lr());
        let h = EpochStats { epoch, loss, accuracy, val_loss, val_accuracy, seconds };
        history.push(h.clone());
        // The checkpoint first: a line that cannot be printed must not lose the epoch.
        if let Some(path) = ckpt_path.as_ref().filter(|_| lead) {
            checkpoint::save(path, &mut trainer, epoch, &history, &model_sha)?;
        }
        if let Some(path) = args.log.as_ref().filter(|_| lead) {
            write_log(path, &history, metric).map_err(|e| match e {
                Failure::Message(m) => Failure::Message(format!(
                    "{}; training stopped after epoch {epoch}; {}\n",
                    m.trim_end(),
                    kept(&args, ckpt_path.as_deref(), epoch, trainer.rank().1)
                )),
                other => other,
            })?;
        }
        let line = if args.json {
            let mut j = serde_json::Map::new();
            j.insert("epoch".into(), json!(epoch));
            j.insert("loss".into(), json!(loss));
            j.insert(metric.into(), json!(accuracy));
            j.insert("val_loss".into(), json!(val_loss));
            j.insert(format!("val_{metric}"), json!(val_accuracy));
            j.insert("seconds".into(), json!(seconds));
            if let Some(lr) = lr {
                j.insert("learning_rate".into(), json!(lr));
            }
            serde_json::Value::Object(j).to_string()
        } else {
            let rate = lr.map_or(String::new(), |lr| format!(" - learning_rate: {lr:.4e}"));
            format!(
                "Epoch {epoch}/{epochs} - {seconds:.1}s - loss: {loss:.4} - {metric}: {accuracy:.4} - val_loss: {val_loss:.4} - val_{metric}: {val_accuracy:.4}{rate}"
            )
        };
        if let Err(e) = if lead { out.line(&line) } else { Ok(()) } {
            // Stop here, as after Ctrl-C: quietly if the reader went away.
            return Err(if e.is_closed() {
                Failure::Output(e)
            } else {
                Failure::Message(format!(
                    "error: {}; training stopped after epoch {epoch}; {}\n",
                    e.message(),
                    kept(&args, ckpt_path.as_deref(), epoch, trainer.rank().1)
                ))
            });
        }
        // The callbacks, after the epoch's line: a lower learning rate for the next epoch, or
        // the end of training (with the best epoch's weights back, when asked).
        if let Some(p) = &mut plateau {
            let lr = p.end_epoch(monitored(&h, p.monitor()), trainer.lr);
            if lr != trainer.lr {
                say!(
                    "Epoch {epoch}: {} did not improve; learning rate {} -> {lr}",
                    p.monitor().name(),
                    trainer.lr
                );
                trainer.lr = lr;
            }
        }
        if let Some(e) = &mut stopper {
            match e.observe(epoch - 1, monitored(&h, e.monitor())) {
                Verdict::NewBest if e.restore_best() => {
                    let tensors = trainer.snapshot();
                    if let Some(path) = best_path.as_ref().filter(|_| lead) {
                        let named: Vec<(String, &ndarray::ArrayD<f32>)> =
                            trainer.tensor_layout().into_iter().map(|(n, _)| n).zip(tensors.iter()).collect();
                        let meta = [("epoch".to_owned(), epoch.to_string())].into_iter().collect();
                        weights::save(path, &named, meta)?;
                    }
                    best = Some((epoch, tensors));
                }
                Verdict::Stop { best_epoch, best: value } => {
                    let name = e.monitor().name();
                    let restore = match best.take() {
                        Some((b, tensors)) if e.restore_best() && b != epoch => {
                            trainer.put_back(tensors);
                            format!("; restored the weights of epoch {b}")
                        }
                        _ => String::new(),
                    };
                    say!(
                        "Epoch {epoch}: early stopping: {name} has not improved on {value:.4} (epoch {}) for {} epoch{}{restore}",
                        best_epoch + 1,
                        epoch - best_epoch - 1,
                        if epoch - best_epoch - 1 == 1 { "" } else { "s" }
                    );
                    stopped = Some(epoch);
                    break;
                }
                _ => {}
            }
        }
    }
    let fit = start.elapsed().as_secs_f64();
    let trained = (stopped.unwrap_or(epochs).min(epochs) + 1).saturating_sub(first_epoch);
    trainer.sync();
    if !lead {
        // The other ranks hold the same weights; rank 0 reports and writes them.
        return Ok(());
    }
    if let Some(dir) = &args.dump_ir {
        let n = trainer
            .dump_ir(dir)
            .map_err(|e| Failure::Message(format!("error: cannot write {}: {e}\n", dir.display())))?;
        say!("wrote the Cranelift IR of {n} kernels to {}", dir.display());
    }
    if let Some(kt) = &trainer.kernel_times {
        say!("per-kernel times of the training step over {} steps:\n{}", kt.steps, kt.report());
    }
    let (test_loss, test_accuracy) = trainer.evaluate(&test)?;
    let line = if args.json {
        let mut j = serde_json::Map::new();
        j.insert(format!("{test_name}_loss"), json!(test_loss));
        j.insert(format!("{test_name}_{metric}"), json!(test_accuracy));
        j.insert("fit_seconds".into(), json!(fit));
        serde_json::Value::Object(j).to_string()
    } else {
        let plural = if trained == 1 { "" } else { "s" };
        format!(
            "{test_name}: loss {test_loss:.4} - {metric} {test_accuracy:.4} ({fit:.1}s for {trained} epoch{plural})"
        )
    };
    // The weights and curves are written even if this last line cannot be.
    let printed = out.line(&line);
    if let Some(path) = &args.save {
        let meta = [("model".to_owned(), args.file.display().to_string())].into_iter().collect();
        weights::save(path, &trainer.named_tensors(), meta)?;
        if !args.json {
            say!("saved weights to {}", path.display());
        }
    }
    if let Some(path) = &args.plot {
        plot::plot(path, &history, metric)
            .map_err(|e| Failure::Message(format!("error: cannot draw {}: {e}\n", path.display())))?;
        if !args.json {
            say!("drew training curves in {}", path.display());
        }
    }
    Ok(printed?)
}

/// The ranks of an `mpirun` job, counting its exchanges (odd while one is under way) for the
/// signal handler of `train`.
#[cfg(feature = "mpi")]
struct Ranks {
    mpi: symdiff::train::parallel::Mpi,
    exchanges: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(feature = "mpi")]
impl symdiff::train::parallel::Collective for Ranks {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn size(&self) -> usize {
        self.mpi.size()
    }

    fn all_gather(&self, local: &[f32], all: &mut [f32]) {
        use std::sync::atomic::Ordering::Relaxed;
        self.exchanges.fetch_add(1, Relaxed);
        self.mpi.all_gather(local, all);
        self.exchanges.fetch_add(1, Relaxed);
    }
}

/// A team's exchange, and the count of its exchanges (odd while one is under way).
type Team = (Box<dyn symdiff::train::parallel::Collective>, std::sync::Arc<std::sync::atomic::AtomicU64>);

/// The data-parallel team this process belongs to, when `mpirun` started it with more than
/// one rank; `None` otherwise. A binary built without the `mpi` feature refuses to run as one
/// of several ranks (each would train alone and write the same files).
fn ranks() -> Result<Option<Team>> {
    #[cfg(feature = "mpi")]
    {
        use symdiff::train::parallel::{Mpi, launched_by_mpirun};
        if !launched_by_mpirun() {
            return Ok(None);
        }
        let Some(mpi) = Mpi::init() else {
            return Err(Failure::Message("error: MPI could not be initialised\n".into()));
        };
        if mpi.size() <= 1 {
            return Ok(None);
        }
        let exchanges = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        Ok(Some((Box::new(Ranks { mpi, exchanges: exchanges.clone() }), exchanges)))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let size = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
            .iter()
            .find_map(|v| std::env::var(v).ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1);
        if size > 1 {
            return Err(Failure::Message(format!(
                "error: started by mpirun as one of {size} ranks, but this symdiff was built without \
                 MPI; build it with `cargo build --release --features mpi` (after \
                 `scripts/install-mpi.sh`), or run it without mpirun\n"
            )));
        }
        Ok(None)
    }
}

/// A digest of the model file's SHA-256 and every sample and target of the data sets, which
/// the ranks of a team compare before training.
fn digest(model_sha: &str, sets: [&Dataset<'_>; 3]) -> u64 {
    use std::hash::Hasher;
    use symdiff::train::trainer::{Features, Targets};
    let mut h = rustc_hash::FxHasher::default();
    h.write(model_sha.as_bytes());
    for set in sets {
        h.write_usize(set.len());
        match set.features {
            Features::U8(f) => h.write(f),
            Features::F32(f) => f.iter().for_each(|v| h.write_u32(v.to_bits())),
        }
        match set.targets {
            Targets::Classes(c) => c.iter().for_each(|&v| h.write_u32(v)),
            Targets::Values { data, .. } => data.iter().for_each(|v| h.write_u32(v.to_bits())),
        }
    }
    h.finish()
}

/// The value of the metric `m` in an epoch's figures.
fn monitored(h: &EpochStats, m: Monitor) -> f64 {
    match m {
        Monitor::Loss => h.loss,
        Monitor::ValLoss => h.val_loss,
        Monitor::Accuracy | Monitor::Mae => h.accuracy,
        Monitor::ValAccuracy | Monitor::ValMae => h.val_accuracy,
    }
}

/// The `--log` file: a header and one row per finished epoch, as Keras' `CSVLogger` writes
/// them, replaced whole (temporary file and rename) so that a crash never leaves half a row.
fn write_log(path: &Path, history: &[EpochStats], metric: &str) -> Result<()> {
    let mut text = format!("epoch,loss,{metric},val_loss,val_{metric},seconds\n");
    for h in history {
        text += &format!(
            "{},{},{},{},{},{:.3}\n",
            h.epoch, h.loss, h.accuracy, h.val_loss, h.val_accuracy, h.seconds
        );
    }
    weights::write_atomic(path, text.as_bytes())
        .map_err(|e| Failure::Message(format!("error: cannot write the log {}: {e}\n", path.display())))
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
    let loaded = load_data(&trainer.spec, file, data_dir)?;
    let Some(test) = loaded.test() else {
        return Err(Failure::Message("error: the data has no test samples\n".into()));
    };
    let test = source::dataset(test, &trainer.spec);
    let name = loaded.test_name();
    if trainer.spec.regression {
        let (loss, mae) = trainer.evaluate(&test)?;
        return Ok(if json_out {
            json!({format!("{name}_loss"): loss, format!("{name}_mae"): mae}).to_string()
        } else {
            format!("{name}: loss {loss:.4} - mae {mae:.4}")
        });
    }
    let (loss, accuracy, confusion) = trainer.evaluate_confusion(&test)?;
    Ok(if json_out {
        let per_class: Vec<serde_json::Value> = (0..confusion.classes())
            .map(|c| {
                json!({"class": c, "precision": confusion.precision(c), "recall": confusion.recall(c),
                       "support": confusion.support(c)})
            })
            .collect();
        let mut j = serde_json::Map::new();
        j.insert(format!("{name}_loss"), json!(loss));
        j.insert(format!("{name}_accuracy"), json!(accuracy));
        j.insert("confusion".into(), json!(confusion.rows()));
        j.insert("per_class".into(), json!(per_class));
        serde_json::Value::Object(j).to_string()
    } else {
        format!("{name}: loss {loss:.4} - accuracy {accuracy:.4}\n\n{confusion}")
    })
}

/// What `predict` was given, by its first bytes (and a CSV by its name).
enum PredictInput {
    Picture,
    Idx,
    Csv,
}

fn predict_input(path: &Path) -> Result<PredictInput> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Failure::Message(format!("error: cannot read {}: {e}\n", path.display())))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    Ok(match (&head[..n], ext.as_deref()) {
        ([0x89, b'P', b'N', b'G'], _) | ([0xff, 0xd8, 0xff, _], _) => PredictInput::Picture,
        (_, Some("png" | "jpg" | "jpeg")) => PredictInput::Picture, // says what is wrong with it
        ([0, 0, 8, _], _) | ([0x1f, 0x8b, ..], _) => PredictInput::Idx,
        (_, Some("csv" | "tsv" | "txt")) => PredictInput::Csv,
        _ => {
            return Err(Failure::Message(format!(
                "error: {}: not a picture (PNG, JPEG), IDX images (raw or gzip) or a CSV file (.csv)\n",
                path.display()
            )));
        }
    })
}

/// `symdiff predict FILE.model --weights W INPUT`: a picture of a digit (PNG or JPEG), IDX
/// images, or a CSV file of feature rows (with a header; the model's label or target columns
/// are left out when present). One line per sample: the class (classification) or the
/// values (regression); for a picture, the probabilities and the preprocessing too.
pub fn predict(file: &Path, weights_path: &Path, input: &Path, json_out: bool) -> Result<String> {
    let mut trainer = trainer_with_weights(file, weights_path)?;
    let spec = trainer.spec.clone();
    let want: usize = spec.input.iter().product();
    let shape = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
    match predict_input(input)? {
        PredictInput::Picture => {
            if want != 28 * 28 {
                return Err(Failure::Message(format!(
                    "error: {}: a picture becomes a 28×28 sample, but the model takes {}\n",
                    input.display(),
                    shape(&spec.input)
                )));
            }
            let prepared = symdiff::train::picture::prepare_digit(input)?;
            // The picture is in [0, 1] already, as MNIST pixels are after their division.
            trainer.input_map.divide = 1.0;
            let labels = [0u32];
            let set = Dataset {
                features: symdiff::train::trainer::Features::F32(&prepared.pixels),
                targets: symdiff::train::trainer::Targets::Classes(&labels),
                sample: spec.input.clone(),
            };
            let out = trainer.outputs(&set)?.pop().unwrap_or_default();
            if spec.regression {
                return Ok(if json_out {
                    json!({"file": input.display().to_string(), "values": out, "preprocessing": prepared.steps})
                        .to_string()
                } else {
                    format!("{}: {out:?}\npreprocessing: {}", input.display(), prepared.steps.join("; "))
                });
            }
            let top = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f64> = out.iter().map(|&l| ((l - top) as f64).exp()).collect();
            let total: f64 = exp.iter().sum();
            let p: Vec<f64> = exp.iter().map(|e| e / total).collect();
            let class = p.iter().enumerate().fold(0, |b, (i, &x)| if x > p[b] { i } else { b });
            Ok(if json_out {
                json!({"file": input.display().to_string(), "class": class, "probabilities": p,
                       "preprocessing": prepared.steps})
                .to_string()
            } else {
                let probs: Vec<String> = p.iter().enumerate().map(|(c, x)| format!("{c}: {x:.3}")).collect();
                format!(
                    "{}: {class} (probability {:.3})\nprobabilities: {}\npreprocessing: {}",
                    input.display(),
                    p[class],
                    probs.join("  "),
                    prepared.steps.join("; ")
                )
            })
        }
        PredictInput::Idx => {
            let idx = data::read_idx(input)?;
            if idx.dims.is_empty() || idx.dims[1..].iter().product::<usize>() != want {
                return Err(Failure::Message(format!(
                    "error: {}: images are {}, the model takes N×{}\n",
                    input.display(),
                    shape(&idx.dims),
                    shape(&spec.input)
                )));
            }
            let labels = vec![0u32; idx.dims[0]];
            let set = Dataset::images(&idx.data, &labels, spec.input.clone());
            predicted_rows(&mut trainer, &set, json_out)
        }
        PredictInput::Csv => {
            use symdiff::model::data::Source;
            use symdiff::train::files::{self, CsvOptions, TargetSpec};
            let delimiter = match &spec.data.source {
                Source::Csv { delimiter, .. } => *delimiter,
                _ => b',',
            };
            // The model's own label or target columns, if this file has them, are not features.
            // Only the first line (at most 1 MiB of it): the reader below reads the file.
            let mut line = Vec::new();
            if let Ok(f) = std::fs::File::open(input) {
                use std::io::{BufRead, Read};
                let _ = std::io::BufReader::new(f.take(1 << 20)).read_until(b'\n', &mut line);
            }
            let header = String::from_utf8_lossy(&line).into_owned();
            let columns: Vec<String> = header
                .trim_start_matches('\u{feff}')
                .split(char::from(delimiter))
                .map(|c| c.trim().trim_matches('"').to_owned())
                .collect();
            let targets = match &spec.data.source {
                Source::Csv { targets, .. } => match source::target_spec(targets) {
                    TargetSpec::Label(l) if columns.iter().any(|c| c == l) => TargetSpec::Label(l),
                    TargetSpec::Target(v) if v.iter().all(|n| columns.contains(n)) => TargetSpec::Target(v),
                    _ => TargetSpec::None,
                },
                _ => TargetSpec::None,
            };
            let opts = CsvOptions { delimiter, targets, max_bytes: symdiff::model::memory_budget() };
            let table = files::read_csv(input, &opts)?;
            if table.sample_size() != want {
                return Err(Failure::Message(format!(
                    "error: {}: rows of {} features, but the model takes {}\n",
                    input.display(),
                    table.sample_size(),
                    shape(&spec.input)
                )));
            }
            // The targets (the file's own labels, or none) are not read.
            let set = source::dataset(&table, &spec);
            predicted_rows(&mut trainer, &set, json_out)
        }
    }
}

/// One line per sample: the class, or the predicted values of a regression.
fn predicted_rows(trainer: &mut Trainer, set: &Dataset<'_>, json_out: bool) -> Result<String> {
    if trainer.spec.regression {
        let rows = trainer.outputs(set)?;
        return Ok(if json_out {
            json!(rows).to_string()
        } else {
            rows.iter()
                .map(|r| r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let classes = trainer.predict(set)?;
    Ok(if json_out {
        json!(classes).to_string()
    } else {
        classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n")
    })
}

/// `symdiff data fetch mnist [--dir DIR]`.
pub fn fetch(dataset: &str, dir: Option<&Path>) -> Result<String> {
    if dataset != "mnist" {
        return Err(Failure::Message(format!(
            "error: unknown data set `{dataset}`; symdiff knows `mnist`\n"
        )));
    }
    let target = match dir {
        Some(d) => d.to_path_buf(),
        None => data::default_cache_dir().ok_or_else(|| {
            Failure::Message(
                "error: no cache directory (set HOME or XDG_CACHE_HOME), or pass --dir DIR\n".into(),
            )
        })?,
    };
    let path = data::fetch_mnist(&target, &mut |m| note!("{m}"))?;
    Ok(format!("MNIST is in {}", path.display()))
}

/// `symdiff summary FILE.model [--json]`.
pub fn summary(file: &Path, json: bool) -> Result<String> {
    let spec = load_spec(file)?;
    let s = symdiff::model::summary::summary(&spec).map_err(|d| Failure::Message(d.render()))?;
    if !json {
        return Ok(s.to_string());
    }
    let layers: Vec<serde_json::Value> = s
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({"name": r.name, "type": r.kind, "output_shape": r.shape, "params": r.params})
        })
        .collect();
    Ok(serde_json::json!({
        "model": s.origin,
        "layers": layers,
        "total": s.trainable + s.non_trainable,
        "trainable": s.trainable,
        "non_trainable": s.non_trainable,
    })
    .to_string())
}

/// `symdiff show FILE.model [--dot]`.
pub fn show(file: &Path, dot: bool) -> Result<String> {
    let spec = load_spec(file)?;
    let text = if dot { symdiff::model::show::dot(&spec) } else { symdiff::model::show::equations(&spec) };
    text.map(|t| t.trim_end().to_owned()).map_err(|d| Failure::Message(d.render()))
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
    let block = 10;
    // Whole blocks: a block is timed or not as a whole, by where it starts (a warm-up that
    // ended inside the last block timed nothing at all: `--steps 10` printed NaN µs).
    let warm = (steps / 10).max(3).next_multiple_of(block);
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
    let loaded = load_data(&spec, file, data_dir)?;
    let train = source::dataset(&loaded.train, &spec);
    let Some(test) = loaded.validation() else {
        return Err(Failure::Message("error: the data has no samples to validate on\n".into()));
    };
    let test = source::dataset(test, &spec);
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
    let report = BenchReport {
        model: file.display().to_string(),
        batch,
        epochs: spec.train.epochs,
        compile_ms,
        threads,
        step32,
        step256,
        single,
        interp32,
        fit,
        validation,
        accuracy,
        fit_flops,
        flops32,
        peak: peak_rss_mib(),
    };
    Ok(if json_out { report.json() } else { report.text() })
}

/// What `symdiff bench` measured. Flop counts are dense-equivalent: `2*m*n*k` per matrix
/// product with every zero counted, although the zero-skipping products on the pixels do less
/// arithmetic than that; the rates say so.
struct BenchReport {
    model: String,
    batch: usize,
    epochs: usize,
    compile_ms: f64,
    threads: usize,
    /// Median step times (µs) at batch 32 and 256 on every thread.
    step32: f64,
    step256: f64,
    /// The same on one thread, when there are more.
    single: Option<(f64, f64)>,
    interp32: f64,
    fit: f64,
    validation: f64,
    accuracy: f64,
    /// Dense-equivalent flops of the fit and of one step at batch 32.
    fit_flops: f64,
    flops32: f64,
    peak: Option<f64>,
}

impl BenchReport {
    fn json(&self) -> String {
        json!({
            "model": self.model,
            "compile_ms": self.compile_ms,
            "threads": self.threads,
            "step32_us": self.step32,
            "step256_us": self.step256,
            "step32_one_thread_us": self.single.map(|s| s.0),
            "step256_one_thread_us": self.single.map(|s| s.1),
            "interp_step32_us": self.interp32,
            "fit_seconds": self.fit,
            "validation_seconds": self.validation,
            "epochs": self.epochs,
            "test_accuracy": self.accuracy,
            "flop_counting": "dense-equivalent: 2*m*n*k per matrix product, skipped zeros included",
            "fit_gflops": self.fit_flops / 1e9,
            "fit_gflop_per_s": self.fit_flops / self.fit / 1e9,
            "step32_gflop_per_s": self.flops32 / self.step32 / 1e3,
            "peak_rss_mib": self.peak,
        })
        .to_string()
    }

    fn text(&self) -> String {
        let r = self;
        let s = if r.epochs == 1 { "" } else { "s" };
        let mut out = format!("{}: batch {}, {} epoch{s}\n", r.model, r.batch, r.epochs);
        out += &format!("  compile the training step   {:>9.2} ms\n", r.compile_ms);
        out += &format!(
            "  step @32 (median)           {:>9.1} µs   {:.1} GFLOP/s*   interpreter {:.1} µs ({:.1}× slower)\n",
            r.step32,
            r.flops32 / r.step32 / 1e3,
            r.interp32,
            r.interp32 / r.step32
        );
        out += &format!("  step @256 (median)          {:>9.1} µs\n", r.step256);
        if let Some((one32, one256)) = r.single {
            let t = r.threads;
            out += &format!(
                "  on 1 thread (interleaved)   step @32 {one32:.1} µs, step @256 {one256:.1} µs: \
                 1 thread / {t} threads = {:.2}× and {:.2}× (higher is better for {t} threads)\n",
                one32 / r.step32,
                one256 / r.step256
            );
        }
        out += &format!(
            "  fit with validation         {:>9.2} s    {:.1} GFLOP* of matmul, {:.1} GFLOP/s*\n",
            r.fit,
            r.fit_flops / 1e9,
            r.fit_flops / r.fit / 1e9
        );
        out += &format!("    of which validation       {:>9.2} s\n", r.validation);
        out += &format!("  test accuracy               {:>9.2} %\n", r.accuracy * 100.0);
        if let Some(p) = r.peak {
            out += &format!("  peak memory (RSS)           {p:>9.0} MiB\n");
        }
        out += "  * dense-equivalent: 2·m·n·k per matrix product, zeros included; the zero-skipping \
                products on the pixels do less arithmetic than is counted here";
        out
    }
}

#[cfg(test)]
mod tests {
    //! Pure formatting: the resume command, the bench report, the progress bar's line.

    use super::*;

    fn args(extra: &[&str]) -> TrainArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            train: TrainArgs,
        }
        Cli::parse_from([&["train"][..], extra].concat()).train
    }

    #[test]
    fn the_resume_command_repeats_every_option() {
        let check = |given: &[&str], want: &str| assert_eq!(resume_command(&args(given)), want, "{given:?}");
        check(&["m.model"], "symdiff train m.model --resume");
        check(&["m.model", "--epochs", "12"], "symdiff train m.model --epochs 12 --resume");
        check(
            &["dir/m.model", "--resume", "--checkpoint", "c.ckpt", "--epochs", "12", "--json", "--data", "d"],
            "symdiff train dir/m.model --epochs 12 --data d --checkpoint c.ckpt --json --resume",
        );
        check(
            &["my model.model", "--save", "it's.safetensors", "--plot", "p.svg", "--interp"],
            "symdiff train 'my model.model' --save 'it'\\''s.safetensors' --plot p.svg --interp --resume",
        );
    }

    fn report(single: Option<(f64, f64)>) -> BenchReport {
        BenchReport {
            model: "m.model".into(),
            batch: 32,
            epochs: 5,
            compile_ms: 12.0,
            threads: 4,
            step32: 100.0,
            step256: 500.0,
            single,
            interp32: 1000.0,
            fit: 10.0,
            validation: 1.0,
            accuracy: 0.975,
            fit_flops: 2e10,
            flops32: 1e6,
            peak: Some(200.0),
        }
    }

    #[test]
    fn bench_labels_its_flops_and_the_direction_of_its_ratios() {
        let text = report(Some((180.0, 1000.0))).text();
        assert!(text.contains("10.0 GFLOP/s*"), "{text}");
        assert!(text.contains("20.0 GFLOP* of matmul, 2.0 GFLOP/s*"), "{text}");
        assert!(text.contains("* dense-equivalent: 2·m·n·k per matrix product, zeros included"), "{text}");
        assert!(
            text.contains("1 thread / 4 threads = 1.80× and 2.00× (higher is better for 4 threads)"),
            "{text}"
        );
        assert!(text.contains("interpreter 1000.0 µs (10.0× slower)"), "{text}");
        assert!(!report(None).text().contains("1 thread /"));
        let json: serde_json::Value = serde_json::from_str(&report(None).json()).unwrap();
        assert!(json["flop_counting"].as_str().unwrap().starts_with("dense-equivalent"));
        assert_eq!(json["fit_gflop_per_s"], 2.0);
    }

    /// A terminal of a given width that keeps what is drawn on it.
    #[derive(Debug)]
    struct Screen {
        width: u16,
        drawn: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.is_empty() {
                self.drawn.lock().unwrap().push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_progress_bar_fits_the_terminal_and_keeps_the_accuracy() {
        for width in [72u16, 80, 100, 160] {
            let drawn = std::sync::Arc::default();
            let pb = progress_bar(1875, 3, 12);
            let screen = Screen { width, drawn: std::sync::Arc::clone(&drawn) };
            pb.set_draw_target(indicatif::ProgressDrawTarget::term_like(Box::new(screen)));
            pb.set_position(1234);
            pb.set_message(progress_message(0.123456, "accuracy", 0.987654));
            pb.force_draw();
            let drawn = drawn.lock().unwrap();
            let line = drawn.iter().rev().find(|l| l.contains("Epoch")).expect("a drawn line");
            let chars = line.chars().count();
            assert!(chars <= width as usize, "width {width}: {chars} chars: {line}");
            assert!(line.starts_with("Epoch 3/12 1234/1875 ["), "{line}");
            assert!(line.trim_end().ends_with("loss: 0.1235 - accuracy: 0.9877"), "width {width}: {line}");
            // The bar takes what is left: wider on a wider terminal.
            let bar = line.split('[').nth(1).and_then(|b| b.split(']').next()).unwrap_or("");
            assert!(bar.chars().count() + 70 >= width as usize, "width {width}: {line}");
        }
    }
}
