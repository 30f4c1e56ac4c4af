//! The training loop, on the tensor interpreter (the reference semantics; the JIT-compiled
//! step must agree with it).
//!
//! One step: gather a batch (pixels scaled to [0, 1]), draw the dropout masks, evaluate the
//! training graph's loss, logits, parameter gradients and batch statistics in one walk, then
//! update every parameter with the optimizer and the batch-normalisation running statistics
//! (`running = momentum*running + (1 - momentum)*batch`, as Keras does). Everything random
//! (initial weights, the shuffle of each epoch, the masks) comes from one ChaCha8 stream
//! seeded by `train seed=...`, so a run is reproducible.

use hashbrown::HashMap;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use std::time::Duration;

use super::compiled::{
    CompiledStep, InferenceCache, KernelTimes, compile_gradients, compile_inference, compile_step, read,
    write,
};
use super::optimizer::{self, Slots};
use super::parallel::{Collective, ordered_sum, rows};
use crate::graph::Id;
use crate::graph::tensor::eval_tensors;
use crate::jit::fuse::Unsupported;
use crate::model::ModelSpec;
use crate::model::Optimizer;
use crate::model::build::{Built, Init, build};

/// Errors while training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Eval(String),
    /// A NaN or an infinity: where it first appeared.
    #[error("training diverged at epoch {epoch}, step {step}: {what} is not finite (NaN or infinite)")]
    NotFinite { epoch: usize, step: usize, what: String },
    #[error("{0}")]
    Data(String),
    /// The stop flag was raised (Ctrl-C, SIGTERM, SIGHUP) before step `step` of epoch `epoch`.
    #[error("interrupted during epoch {epoch}, before step {step}")]
    Interrupted { epoch: usize, step: usize },
}

/// The feature values of samples, row-major, as a file holds them: bytes (IDX files,
/// `uint8` NumPy arrays) or 32-bit floats (CSV, other NumPy arrays).
#[derive(Debug, Clone, Copy)]
pub enum Features<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

/// What the model learns to output for each sample.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// A class label per sample.
    Classes(&'a [u32]),
    /// `width` float targets per sample (regression).
    Values { width: usize, data: &'a [f32] },
}

/// How raw feature values become the model's input: divided by `divide`, then, when
/// `normalize` holds statistics, standardised per feature as `(v - mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputMap {
    pub divide: f32,
    /// Mean and standard deviation of each feature (of the divided values), as 1-D
    /// tensors: saved with the weights as `input.mean` and `input.std`.
    pub normalize: Option<(ArrayD<f32>, ArrayD<f32>)>,
}

/// Samples: `len × sample_size` feature values and one target (or row of targets) each.
pub struct Dataset<'a> {
    pub features: Features<'a>,
    pub targets: Targets<'a>,
    pub sample: Vec<usize>,
}

impl<'a> Dataset<'a> {
    /// Images of bytes with class labels (MNIST's shape of data).
    pub fn images(images: &'a [u8], labels: &'a [u32], sample: Vec<usize>) -> Dataset<'a> {
        Dataset { features: Features::U8(images), targets: Targets::Classes(labels), sample }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self.targets {
            Targets::Classes(l) => l.len(),
            Targets::Values { width, data } => data.len() / width.max(1),
        }
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sample_size(&self) -> usize {
        self.sample.iter().product()
    }

    /// Targets per sample: 1 for a class label.
    fn target_width(&self) -> usize {
        match self.targets {
            Targets::Classes(_) => 1,
            Targets::Values { width, .. } => width,
        }
    }

    /// Asks the processor to start loading the features of samples `idx` into its caches, so
    /// that a batch gathered later (while a step runs in between) does not wait for memory:
    /// the data set is larger than the caches and a shuffled batch touches it at random.
    fn prefetch(&self, idx: &[usize]) {
        #[cfg(target_arch = "x86_64")]
        {
            let s = self.sample_size();
            let (base, width) = match self.features {
                Features::U8(f) => (f.as_ptr(), 1),
                Features::F32(f) => (f.as_ptr() as *const u8, 4),
            };
            let len = self.len() * s * width;
            for &i in idx {
                let (from, to) = (i * s * width, (i + 1) * s * width);
                if to > len {
                    continue;
                }
                for at in (from..to).step_by(64) {
                    // SAFETY: a prefetch is only a hint; the address is inside the features.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            base.add(at) as *const i8
                        )
                    };
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = idx;
    }

    /// The targets of samples `idx` into `dst`, as floats (a class label as its number).
    fn fill_targets(&self, dst: &mut [f32], idx: &[usize]) {
        match self.targets {
            Targets::Classes(labels) => {
                for (d, &i) in dst.iter_mut().zip(idx) {
                    *d = labels[i] as f32;
                }
            }
            Targets::Values { width, data } => {
                for (row, &i) in dst.chunks_exact_mut(width.max(1)).zip(idx) {
                    row.copy_from_slice(&data[i * width..(i + 1) * width]);
                }
            }
        }
    }

    /// The targets of samples `idx` as the graph's `labels` takes them: `[b]` class labels,
    /// or `[b, width]` regression targets.
    fn targets(&self, idx: &[usize]) -> ArrayD<f32> {
        let w = self.target_width();
        let mut y = vec![0.0f32; idx.len() * w];
        self.fill_targets(&mut y, idx);
        let shape: Vec<usize> = match self.targets {
            Targets::Classes(_) => vec![idx.len()],
            Targets::Values { .. } => vec![idx.len(), w],
        };
        ArrayD::from_shape_vec(IxDyn(&shape), y).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&shape)))
    }

    /// The batch of samples `idx`: inputs through `map`, and targets as floats.
    fn batch(&self, idx: &[usize], map: &InputMap) -> (ArrayD<f32>, ArrayD<f32>) {
        let s = self.sample_size();
        let mut x = vec![0.0f32; idx.len() * s];
        fill_input(&mut x, self, idx, map);
        let mut shape = vec![idx.len()];
        shape.extend_from_slice(&self.sample);
        let x = ArrayD::from_shape_vec(IxDyn(&shape), x).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&shape)));
        (x, self.targets(idx))
    }

    /// How well `outputs` (one row of `width` per sample of `idx`) fit the targets, summed:
    /// the number of samples whose largest output is their label (classification), or the
    /// sum of absolute errors (regression).
    fn score(&self, outputs: &[f32], idx: &[usize], width: usize) -> f64 {
        let rows = outputs.chunks(width.max(1)).zip(idx);
        match self.targets {
            Targets::Classes(labels) => {
                rows.filter(|(row, i)| argmax(row) == labels[**i] as usize).count() as f64
            }
            Targets::Values { width: w, data } => rows
                .map(|(row, &i)| {
                    row.iter().zip(&data[i * w..(i + 1) * w]).map(|(p, t)| (p - t).abs() as f64).sum::<f64>()
                })
                .sum(),
        }
    }

    /// What [`score`](Self::score) sums are divided by for a mean over the whole set.
    fn score_count(&self) -> f64 {
        (self.len() * self.target_width()) as f64
    }
}

/// What `for_batches` hands each batch's results to: the loss, the logits, the labels.
type BatchSink<'a> = dyn FnMut(f64, &ArrayD<f32>, &ArrayD<f32>) + 'a;

/// Progress within an epoch, for progress bars.
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    /// Accuracy (classification) or mean absolute error (regression) so far.
    pub metric: f64,
}

/// A model being trained: its graphs (one per batch size met), parameters and state.
pub struct Trainer {
    pub spec: ModelSpec,
    train_graphs: HashMap<usize, Built>,
    infer_graphs: HashMap<usize, Built>,
    /// Parameter values, in the order of `Built::params`.
    pub params: Vec<ArrayD<f32>>,
    /// Names and shapes of the parameters.
    pub param_info: Vec<(String, Vec<usize>)>,
    slots: Vec<Slots>,
    /// Running mean and variance of each batch-normalisation layer, with its name.
    pub running: Vec<(String, ArrayD<f32>, ArrayD<f32>)>,
    /// Optimizer steps taken.
    pub step: u64,
    rng: ChaCha8Rng,
    /// The compiled step, when `compile` succeeded (the arena then holds the truth for
    /// parameters, optimizer state and running statistics; `sync` copies them out).
    compiled: Option<CompiledStep>,
    inference: InferenceCache,
    keep_ir: bool,
    /// Per-kernel times, when asked for with `time_kernels`.
    pub kernel_times: Option<KernelTimes>,
    /// Raised (by the handler of Ctrl-C, SIGTERM and SIGHUP) to stop training between two steps.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// How feature values become inputs (the `data` line's `divide`, and the `normalize`
    /// statistics once computed or loaded).
    pub input_map: InputMap,
    /// The optimizer's learning rate before the schedule: the file's `lr`, until
    /// `reduce_lr_on_plateau` lowers it.
    pub lr: f64,
    /// The 1-based epoch under way (the step schedule reads it).
    pub epoch: usize,
    /// The data-parallel ranks this trainer shares its batches with (`parallel.rs`), when
    /// there are more than one.
    team: Option<Box<dyn Collective>>,
    /// A team step's buffers, kept between steps (fresh ones cost page faults every step).
    exchange: Exchange,
}

/// What one rank sends, what it receives from all, and their sum (`team_step`).
#[derive(Default)]
struct Exchange {
    part: Vec<f32>,
    all: Vec<f32>,
    acc: Vec<f64>,
    sum: Vec<f32>,
}

fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

/// A dropout mask in place: each value kept (as `1/(1 - rate)`) with probability `1 - rate`,
/// when its draw `uniform(rng)` is below `1 - rate`.
///
/// The same draws, made faster: the generator's words are taken 64 at a time (the same
/// words, in the same order, as one `next_u32` each: a test holds it to that), and
/// `(x >> 8) / 2^24 < keep` is tested as `(x >> 8) < keep · 2^24`, which is the same
/// comparison scaled by a power of two, without a branch.
fn draw_mask(rng: &mut ChaCha8Rng, rate: f64, values: &mut [f32]) {
    let keep = 1.0 - rate as f32;
    let scale = 1.0 / keep;
    let threshold = keep * (1u32 << 24) as f32;
    let mut bytes = [0u8; 256];
    for chunk in values.chunks_mut(64) {
        let bytes = &mut bytes[..chunk.len() * 4];
        rng.fill_bytes(bytes);
        for (v, word) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let x = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            *v = scale * f32::from(u8::from(((x >> 8) as f32) < threshold));
        }
    }
}

/// The inputs of samples `idx` into `dst` (one row of `s` values each): each feature value
/// `v` becomes `v / divide`, then `(v / divide - mean) / std` when the map normalises. The
/// one mapping every batch gets, interpreted or compiled, for training, evaluation and
/// prediction alike; MNIST's pixels are `p / 255`. Rows are shared between the team's
/// threads, and the arithmetic runs eight lanes at a time where the processor has AVX2 (the
/// same IEEE operations, so the same values).
fn fill_input(dst: &mut [f32], data: &Dataset<'_>, idx: &[usize], map: &InputMap) {
    fn rows(dst: &mut [f32], features: Features<'_>, idx: &[usize], s: usize, map: &InputMap) {
        let d = map.divide;
        for (row, &i) in dst.chunks_exact_mut(s).zip(idx) {
            match features {
                Features::U8(f) => {
                    for (o, &p) in row.iter_mut().zip(&f[i * s..(i + 1) * s]) {
                        *o = p as f32 / d;
                    }
                }
                Features::F32(f) if d == 1.0 => row.copy_from_slice(&f[i * s..(i + 1) * s]),
                Features::F32(f) => {
                    for (o, &v) in row.iter_mut().zip(&f[i * s..(i + 1) * s]) {
                        *o = v / d;
                    }
                }
            }
            if let Some((mean, std)) = &map.normalize {
                for ((o, m), sd) in row.iter_mut().zip(mean).zip(std) {
                    *o = (*o - m) / sd;
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn rows_avx2(dst: &mut [f32], features: Features<'_>, idx: &[usize], s: usize, map: &InputMap) {
        rows(dst, features, idx, s, map)
    }
    let s = data.sample_size();
    let n = idx.len().min(dst.len() / s.max(1));
    let chunks = crate::jit::threads().min(n).max(1);
    let dst_at = dst.as_mut_ptr() as usize;
    let features = data.features;
    crate::jit::parallel_for(chunks, &|c| {
        let (from, to) = (n * c / chunks, n * (c + 1) / chunks);
        // SAFETY: rows `from..to` of `dst` are this chunk's alone (chunks cover disjoint
        // rows, all below `n <= dst.len() / s`), and `dst` outlives the loop.
        let dst =
            unsafe { std::slice::from_raw_parts_mut((dst_at as *mut f32).add(from * s), (to - from) * s) };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected.
            return unsafe { rows_avx2(dst, features, &idx[from..to], s, map) };
        }
        rows(dst, features, &idx[from..to], s, map);
    });
}

impl Trainer {
    /// A fresh model: graphs for the configured batch size, weights initialised (Glorot
    /// uniform kernels, zero biases, unit scales) from the seed.
    pub fn new(spec: ModelSpec) -> Result<Trainer, TrainError> {
        let batch = spec.train.batch;
        let built = build(&spec, batch, true).map_err(|d| TrainError::Model(d.render()))?;
        let mut rng = ChaCha8Rng::seed_from_u64(spec.train.seed);
        let params: Vec<ArrayD<f32>> = built
            .params
            .iter()
            .map(|p| match p.init {
                Init::GlorotUniform { fan_in, fan_out } => {
                    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                    ArrayD::from_shape_simple_fn(IxDyn(&p.shape), || (2.0 * uniform(&mut rng) - 1.0) * limit)
                }
                Init::Zeros => ArrayD::zeros(IxDyn(&p.shape)),
                Init::Ones => ArrayD::ones(IxDyn(&p.shape)),
            })
            .collect();
        let param_info = built.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let slots = built.params.iter().map(|p| Slots::zeros(&p.shape)).collect();
        let running = built
            .batchnorms
            .iter()
            .map(|b| (b.name.clone(), ArrayD::zeros(IxDyn(&[b.width])), ArrayD::ones(IxDyn(&[b.width]))))
            .collect();
        let mut train_graphs = HashMap::new();
        train_graphs.insert(batch, built);
        let spec_lr = match spec.optimizer {
            Optimizer::Adam { lr, .. } | Optimizer::Sgd { lr, .. } => lr,
        };
        // Normalisation statistics start as the identity; the training data's replace them
        // (`set_normalization`), or a weight file's (`set_tensors`).
        let sample: usize = spec.input.iter().product();
        let input_map = InputMap {
            divide: spec.data.divide as f32,
            normalize: spec
                .data
                .normalize
                .then(|| (ArrayD::zeros(IxDyn(&[sample])), ArrayD::ones(IxDyn(&[sample])))),
        };
        Ok(Trainer {
            spec,
            train_graphs,
            infer_graphs: HashMap::new(),
            params,
            param_info,
            slots,
            running,
            step: 0,
            rng,
            compiled: None,
            inference: InferenceCache::default(),
            keep_ir: false,
            kernel_times: None,
            stop: None,
            input_map,
            lr: spec_lr,
            epoch: 1,
            team: None,
            exchange: Exchange::default(),
        })
    }

    /// Trains as one rank of a data-parallel team (see `parallel.rs`): each step computes
    /// this rank's rows of the global batch and the ranks sum their gradients. Call before
    /// [`compile`](Self::compile). A team of one changes nothing. Refused for a model with
    /// batch normalisation, whose batch statistics would be each rank's own.
    pub fn join(&mut self, team: Box<dyn Collective>) -> Result<(), TrainError> {
        if team.size() <= 1 {
            return Ok(());
        }
        if !self.running.is_empty() {
            return Err(TrainError::Model(format!(
                "{} ranks: batch normalisation (layer `{}`) is not supported in data-parallel \
                 training, whose batch statistics would be each rank's own rows; train it in one process",
                team.size(),
                self.running[0].0
            )));
        }
        if matches!(self.spec.loss, crate::model::Loss::Formula(_)) {
            return Err(TrainError::Model(format!(
                "{} ranks: a `loss = ...` formula is not supported in data-parallel training, which \
                 needs the loss to be a mean over the batch's samples (as `softmax_cross_entropy` \
                 and `mse` are) to add the ranks' gradients up; train it in one process",
                team.size()
            )));
        }
        self.team = Some(team);
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// This process's rank and the number of ranks: `(0, 1)` outside a team.
    pub fn rank(&self) -> (usize, usize) {
        self.team.as_ref().map_or((0, 1), |t| (t.rank(), t.size()))
    }

    /// Compiles the training step (and, on first use, inference) to native code; training then
    /// runs there. `keep_ir` keeps every kernel's Cranelift IR (for `dump_ir`).
    pub fn compile(&mut self, keep_ir: bool) -> Result<Duration, Unsupported> {
        let batch = self.spec.train.batch;
        let step = match &self.team {
            // A rank's rows of a full batch; the update runs after the exchange.
            Some(t) => {
                let (lo, hi) = rows(batch, t.rank(), t.size());
                compile_gradients(&self.spec, (hi - lo).max(1), keep_ir)?
            }
            None => compile_step(&self.spec, batch, keep_ir)?,
        };
        let time = step.program.compile_time;
        self.keep_ir = keep_ir;
        self.compiled = Some(step);
        self.unsync();
        Ok(time)
    }

    /// Whether training runs compiled code.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// Starts timing every kernel of the compiled step.
    pub fn time_kernels(&mut self) {
        if let Some(c) = &self.compiled {
            self.kernel_times = Some(KernelTimes {
                names: c.program.info.iter().map(|k| k.name.clone()).collect(),
                times: Vec::new(),
                steps: 0,
            });
        }
    }

    /// Writes every compiled kernel's Cranelift IR into `dir`, one file each; returns how many.
    pub fn dump_ir(&self, dir: &std::path::Path) -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let mut n = 0;
        let programs = self
            .compiled
            .iter()
            .map(|c| ("train", &c.program))
            .chain(self.inference.programs.iter().map(|(_, c)| ("infer", &c.program)));
        for (what, program) in programs {
            for (k, info) in program.info.iter().enumerate() {
                if info.ir.is_empty() {
                    continue;
                }
                let name: String =
                    info.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' }).collect();
                std::fs::write(
                    dir.join(format!("{what}-{k:02}-{name}.clif")),
                    format!("; {}\n{}", info.name, info.ir),
                )?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Copies parameters, optimizer state and running statistics out of the compiled step's
    /// arena (before saving or interpreting).
    pub fn sync(&mut self) {
        let Some(c) = &self.compiled else { return };
        for (k, p) in c.built.params.iter().enumerate() {
            read(&c.program, p.var, &mut self.params[k]);
            for (j, &s) in c.state[k].iter().enumerate() {
                read(&c.program, s, if j == 0 { &mut self.slots[k].m } else { &mut self.slots[k].v });
            }
        }
        for (bn, (_, mean, var)) in c.built.batchnorms.iter().zip(&mut self.running) {
            read(&c.program, bn.running_mean, mean);
            read(&c.program, bn.running_var, var);
        }
    }

    /// The inverse of `sync`: the interpreter's state into the arena.
    fn unsync(&mut self) {
        let Some(c) = &mut self.compiled else { return };
        for (k, p) in c.built.params.iter().enumerate() {
            write(&mut c.program, p.var, &self.params[k]);
            for (j, &s) in c.state[k].iter().enumerate() {
                write(&mut c.program, s, if j == 0 { &self.slots[k].m } else { &self.slots[k].v });
            }
        }
        for (bn, (_, mean, var)) in c.built.batchnorms.iter().zip(&self.running) {
            write(&mut c.program, bn.running_mean, mean);
            write(&mut c.program, bn.running_var, var);
        }
    }

    /// Draws the dropout masks of one step (the same stream in both engines).
    fn masks(&mut self, shapes: &[(Vec<usize>, f64)]) -> Vec<ArrayD<f32>> {
        shapes
            .iter()
            .map(|(shape, rate)| {
                let mut mask = ArrayD::zeros(IxDyn(shape));
                if let Some(values) = mask.as_slice_mut() {
                    draw_mask(&mut self.rng, *rate, values);
                }
                mask
            })
            .collect()
    }

    /// One compiled step; `None` when there is no compiled step for a batch of this size.
    fn compiled_step(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        epoch: usize,
        step: usize,
    ) -> Option<Result<(f64, f64), TrainError>> {
        let c = self.compiled.as_ref()?;
        if idx.len() != c.built.batch {
            return None;
        }
        let t = self.step + 1;
        let c = self.compiled.as_mut()?;
        // Masks straight into their buffers, in the interpreter's order of draws.
        for d in &c.built.dropouts {
            if let Some(dst) = c.program.slot_mut(d.mask) {
                draw_mask(&mut self.rng, d.rate, dst);
            }
        }
        fill_batch(c, data, idx, &self.input_map);
        let lr = self.spec.schedule.rate(self.lr, t - 1, self.epoch - 1);
        if let (Some(a), Optimizer::Adam { beta1, beta2, .. }) = (c.alpha, &self.spec.optimizer) {
            let alpha = (lr * (1.0 - beta2.powi(t as i32)).sqrt() / (1.0 - beta1.powi(t as i32))) as f32;
            if let Some(dst) = c.program.slot_mut(a) {
                dst[0] = alpha;
            }
        }
        if let Some(dst) = c.lr.and_then(|l| c.program.slot_mut(l)) {
            dst[0] = lr as f32;
        }
        match &mut self.kernel_times {
            Some(kt) => {
                c.program.run_timed(&mut kt.times);
                kt.steps += 1;
            }
            None => c.program.run(),
        }
        let loss = c.program.slot(c.built.loss).map_or(f32::NAN, |l| l[0]) as f64;
        if !loss.is_finite() {
            // The compiled step stopped before its updates (its guard), so the state is the one
            // this step started from: replay the step on the interpreter to find the culprit.
            let masks: Vec<ArrayD<f32>> = c
                .built
                .dropouts
                .iter()
                .map(|d| {
                    let mut m = ArrayD::zeros(IxDyn(&d.shape));
                    read(&c.program, d.mask, &mut m);
                    m
                })
                .collect();
            self.sync();
            let what = self.first_non_finite(data, idx, &masks).unwrap_or_else(|| "the loss".into());
            return Some(Err(TrainError::NotFinite { epoch, step, what }));
        }
        let right = c.program.slot(c.built.logits).map_or(0.0, |o| data.score(o, idx, self.spec.classes));
        self.step = t;
        Some(Ok((loss, right)))
    }

    /// The first tensor, in the order the step computes them, that holds a NaN or an
    /// infinity when the training graph runs on the samples `idx` with dropout `masks` from
    /// the current state: a parameter or running statistic (say which), or an expression of
    /// the forward pass (printed, shortened). `None` if every tensor is finite.
    fn first_non_finite(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        masks: &[ArrayD<f32>],
    ) -> Option<String> {
        let (x, y) = data.batch(idx, &self.input_map);
        self.graph(idx.len(), true).ok()?;
        let built = &self.train_graphs[&idx.len()];
        let inputs = step_inputs(built, &x, &y, &self.params, masks, &self.running);
        let g = &built.graph;
        let nodes = g.reachable(&[built.loss]);
        let values = eval_tensors::<f32>(g, &nodes, &|v| inputs.get(&v).cloned()).ok()?;
        let (node, _) = nodes.iter().zip(&values).find(|(_, v)| v.iter().any(|x| !x.is_finite()))?;
        if let Some(p) = built.params.iter().find(|p| p.var == *node) {
            return Some(format!("the parameter `{}`", p.name));
        }
        if let Some(name) = g.var_name(*node) {
            return Some(format!("the input `{name}`"));
        }
        let text = crate::graph::print(g, *node, crate::graph::Style::Text);
        let short: String = text.chars().take(100).collect();
        let more = if short.len() < text.len() { "…" } else { "" };
        Some(format!("`{short}{more}` (computed from finite values)"))
    }

    /// Floating-point operations of the matrix products in one step on `batch` samples (the
    /// training step with its gradients, or inference): `2*m*n*k` per product.
    pub fn matmul_flops(&mut self, batch: usize, training: bool) -> Result<u64, TrainError> {
        let built = self.graph(batch, training)?;
        let g = &built.graph;
        let mut roots = vec![built.loss, built.logits];
        if training {
            roots.extend(&built.grads);
        }
        Ok(g.reachable(&roots)
            .into_iter()
            .filter(|&id| matches!(g.op(id), crate::graph::Op::MatMul))
            .map(|id| {
                let (a, b) = (g.shape(g.args(id)[0]), g.shape(g.args(id)[1]));
                2 * (a[0] * a[1] * b[1]) as u64
            })
            .sum())
    }

    fn graph(&mut self, batch: usize, training: bool) -> Result<&Built, TrainError> {
        let graphs = if training { &mut self.train_graphs } else { &mut self.infer_graphs };
        if !graphs.contains_key(&batch) {
            let b = build(&self.spec, batch, training).map_err(|d| TrainError::Model(d.render()))?;
            graphs.insert(batch, b);
        }
        Ok(&graphs[&batch])
    }

    /// The optimizer with the learning rate of step `t` (1-based): the schedule's rate from
    /// [`lr`](Self::lr) at this epoch.
    fn optimizer_now(&self, t: u64) -> Optimizer {
        let lr = self.spec.schedule.rate(self.lr, t.saturating_sub(1), self.epoch.saturating_sub(1));
        match self.spec.optimizer.clone() {
            Optimizer::Adam { beta1, beta2, epsilon, .. } => Optimizer::Adam { lr, beta1, beta2, epsilon },
            Optimizer::Sgd { momentum, nesterov, .. } => Optimizer::Sgd { lr, momentum, nesterov },
        }
    }

    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.spec.schedule.rate(self.lr, self.step, self.epoch.saturating_sub(1))
    }

    /// One epoch over `data` in a fresh shuffled order. Returns the mean training loss and
    /// the metric, accuracy (classification) or mean absolute error (regression), with
    /// dropout active, as Keras reports them.
    pub fn train_epoch(
        &mut self,
        data: &Dataset<'_>,
        epoch: usize,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(f64, f64), TrainError> {
        let n = data.len();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        self.epoch = epoch;
        let batch = self.spec.train.batch;
        let steps = n.div_ceil(batch);
        let (mut loss_sum, mut score) = (0.0f64, 0.0f64);
        let width = data.score_count() / n.max(1) as f64;
        for s in 0..steps {
            // A team's ranks stop together, after the exchange that tells them (`team_step`).
            if self.team.is_none() && self.stopped() {
                return Err(TrainError::Interrupted { epoch, step: s + 1 });
            }
            let idx = &order[s * batch..((s + 1) * batch).min(n)];
            data.prefetch(&order[((s + 1) * batch).min(n)..((s + 2) * batch).min(n)]);
            let (loss, right) = self.train_step(data, idx, epoch, s + 1)?;
            loss_sum += loss * idx.len() as f64;
            score += right;
            let seen = ((s + 1) * batch).min(n);
            progress(&Progress {
                step: s + 1,
                steps,
                loss: loss_sum / seen as f64,
                metric: score / (seen as f64 * width),
            });
        }
        Ok((loss_sum / n as f64, score / data.score_count().max(1.0)))
    }

    /// One optimizer step on the samples `idx`. Returns the batch loss and the summed score
    /// ([`Dataset::score`]: correctly classified samples, or absolute errors).
    pub fn train_step(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        epoch: usize,
        step: usize,
    ) -> Result<(f64, f64), TrainError> {
        if self.team.is_some() {
            return self.team_step(data, idx, epoch, step);
        }
        if let Some(r) = self.compiled_step(data, idx, epoch, step) {
            return r;
        }
        // A batch of another size than the compiled one (the last of an epoch): interpret it,
        // with the state moved out of the arena and back.
        let compiled = self.compiled.is_some();
        if compiled {
            self.sync();
        }
        let r = self.interpret_step(data, idx, epoch, step);
        if compiled {
            self.unsync();
        }
        r
    }

    /// One step as a rank of a team (see `parallel.rs`): this rank's rows of the global batch
    /// `idx` (with its rows of every dropout mask, drawn for the whole batch as one process
    /// draws them), its loss and gradients (compiled, or interpreted for a batch of another
    /// size), every rank's exchanged and summed in rank order, then the update.
    fn team_step(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        epoch: usize,
        step: usize,
    ) -> Result<(f64, f64), TrainError> {
        let (rank, size) = self.rank();
        let b = idx.len();
        let (lo, hi) = rows(b, rank, size);
        let local = &idx[lo..hi];
        // The masks of the global batch, in the one-process order of draws; this rank's rows.
        self.graph(local.len().max(1), true)?;
        let shapes: Vec<(Vec<usize>, f64)> = self.train_graphs[&local.len().max(1)]
            .dropouts
            .iter()
            .map(|d| (d.shape.clone(), d.rate))
            .collect();
        let masks: Vec<ArrayD<f32>> = shapes
            .iter()
            .map(|(shape, rate)| {
                let row: usize = shape[1..].iter().product();
                let mut global = vec![0.0f32; b * row];
                draw_mask(&mut self.rng, *rate, &mut global);
                let mut shape = shape.clone();
                shape[0] = local.len();
                ArrayD::from_shape_vec(IxDyn(&shape), global[lo * row..hi * row].to_vec())
                    .expect("rows of the mask")
            })
            .collect();
        let count: usize = self.params.iter().map(|p| p.len()).sum();
        let mut ex = std::mem::take(&mut self.exchange);
        let width = count + 3;
        ex.part.resize(width, 0.0);
        ex.all.resize(width * size, 0.0);
        ex.acc.resize(width, 0.0);
        ex.sum.resize(width, 0.0);
        ex.part.fill(0.0);
        let done = self.exchange_step(data, local, &masks, count, &mut ex);
        let r = done.and_then(|()| {
            let all = &ex.all;
            if (0..size).any(|r| all[r * width + count + 2] != 0.0) {
                return Err(TrainError::Interrupted { epoch, step });
            }
            if let Some(r) = (0..size).find(|&r| !all[r * width + count].is_finite()) {
                let what = format!("the loss of rank {r}'s rows");
                return Err(TrainError::NotFinite { epoch, step, what });
            }
            let share = |r: usize| {
                let (lo, hi) = rows(b, r, size);
                (hi - lo) as f64 / b as f64
            };
            ordered_sum(all, size, share, &mut ex.acc, &mut ex.sum);
            let loss = f64::from(ex.sum[count]);
            let right: f64 = (0..size).map(|r| f64::from(all[r * width + count + 1])).sum();
            let mut at = 0;
            for (p, (name, _)) in self.params.iter().zip(&self.param_info) {
                if ex.sum[at..at + p.len()].iter().any(|x| !x.is_finite()) {
                    let what = format!("the gradient of {name}");
                    return Err(TrainError::NotFinite { epoch, step, what });
                }
                at += p.len();
            }
            self.step += 1;
            let opt = self.optimizer_now(self.step);
            let mut at = 0;
            for ((param, slots), (_, shape)) in
                self.params.iter_mut().zip(&mut self.slots).zip(&self.param_info)
            {
                let grad = &ex.sum[at..at + param.len()];
                at += param.len();
                team_update(&opt, self.step, param, grad, shape, slots);
            }
            self.unsync();
            Ok((loss, right))
        });
        self.exchange = ex;
        r
    }

    /// This rank's part of a step into `ex.part` (`[gradients, loss, score, stop]`), and
    /// every rank's into `ex.all`: a rank asked to stop (Ctrl-C, SIGTERM) still takes part in
    /// this exchange, and then every rank stops before the update, so that none waits for a
    /// partner that left.
    fn exchange_step(
        &mut self,
        data: &Dataset<'_>,
        local: &[usize],
        masks: &[ArrayD<f32>],
        count: usize,
        ex: &mut Exchange,
    ) -> Result<(), TrainError> {
        if !local.is_empty() {
            let (loss, right) = self.rank_gradients(data, local, masks, &mut ex.part[..count])?;
            ex.part[count] = loss as f32;
            ex.part[count + 1] = right as f32;
        }
        ex.part[count + 2] = f32::from(u8::from(self.stopped()));
        self.team.as_ref().expect("a team").all_gather(&ex.part, &mut ex.all);
        Ok(())
    }

    /// The loss, score and gradients (concatenated into `out`, in parameter order) of the
    /// samples `local` with dropout `masks`, compiled when a step for this many rows is.
    fn rank_gradients(
        &mut self,
        data: &Dataset<'_>,
        local: &[usize],
        masks: &[ArrayD<f32>],
        out: &mut [f32],
    ) -> Result<(f64, f64), TrainError> {
        let classes = self.spec.classes;
        if let Some(c) = self.compiled.as_mut().filter(|c| c.built.batch == local.len()) {
            for (d, m) in c.built.dropouts.iter().zip(masks) {
                if let Some(dst) = c.program.slot_mut(d.mask) {
                    dst.copy_from_slice(m.as_slice().expect("a mask is contiguous"));
                }
            }
            fill_batch(c, data, local, &self.input_map);
            c.program.run();
            let loss = c.program.slot(c.built.loss).map_or(f32::NAN, |l| l[0]) as f64;
            let right = c.program.slot(c.built.logits).map_or(0.0, |o| data.score(o, local, classes));
            let mut at = 0;
            for (&g, p) in c.built.grads.iter().zip(&self.params) {
                let dst = &mut out[at..at + p.len()];
                match c.program.slot(g) {
                    Some(src) => dst.copy_from_slice(src),
                    None => dst.fill(0.0),
                }
                at += p.len();
            }
            return Ok((loss, right));
        }
        let (x, y) = data.batch(local, &self.input_map);
        self.graph(local.len(), true)?;
        let built = &self.train_graphs[&local.len()];
        let inputs = step_inputs(built, &x, &y, &self.params, masks, &self.running);
        let mut roots = vec![built.loss, built.logits];
        roots.extend(&built.grads);
        let values = eval_tensors::<f32>(&built.graph, &roots, &|v| inputs.get(&v).cloned())
            .map_err(|e| TrainError::Eval(e.to_string()))?;
        let loss = values[0].iter().next().copied().unwrap_or(f32::NAN) as f64;
        let right = values[1].as_slice().map_or(0.0, |o| data.score(o, local, classes));
        let mut at = 0;
        for g in &values[2..] {
            for (d, &v) in out[at..at + g.len()].iter_mut().zip(g.iter()) {
                *d = v;
            }
            at += g.len();
        }
        Ok((loss, right))
    }

    fn interpret_step(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        epoch: usize,
        step: usize,
    ) -> Result<(f64, f64), TrainError> {
        let (x, y) = data.batch(idx, &self.input_map);
        let b = idx.len();
        self.graph(b, true)?;
        let built = &self.train_graphs[&b];
        // Dropout masks: keep with probability 1 - rate, scaled by 1/(1 - rate).
        let shapes: Vec<(Vec<usize>, f64)> =
            built.dropouts.iter().map(|d| (d.shape.clone(), d.rate)).collect();
        let masks = self.masks(&shapes);
        let built = &self.train_graphs[&b];
        let inputs = step_inputs(built, &x, &y, &self.params, &masks, &self.running);
        let mut roots = vec![built.loss, built.logits];
        roots.extend(&built.grads);
        for bn in &built.batchnorms {
            roots.extend(bn.batch_mean);
            roots.extend(bn.batch_var);
        }
        let out = eval_tensors::<f32>(&built.graph, &roots, &|v| inputs.get(&v).cloned())
            .map_err(|e| TrainError::Eval(e.to_string()))?;
        drop(inputs);
        let loss = out[0].iter().next().copied().unwrap_or(f32::NAN) as f64;
        if !loss.is_finite() {
            let what = self.first_non_finite(data, idx, &masks).unwrap_or_else(|| "the loss".into());
            return Err(TrainError::NotFinite { epoch, step, what });
        }
        let grads = &out[2..2 + built.params.len()];
        for (p, g) in built.params.iter().zip(grads) {
            if g.iter().any(|x| !x.is_finite()) {
                return Err(TrainError::NotFinite {
                    epoch,
                    step,
                    what: format!("the gradient of {}", p.name),
                });
            }
        }
        let right = out[1].as_slice().map_or(0.0, |o| data.score(o, idx, self.spec.classes));
        self.step += 1;
        let opt = self.optimizer_now(self.step);
        for ((param, grad), slots) in self.params.iter_mut().zip(grads).zip(&mut self.slots) {
            optimizer::update(&opt, self.step, param, grad.view(), slots);
        }
        let stats = &out[2 + built.params.len()..];
        for (k, bn) in built.batchnorms.iter().enumerate() {
            let m = bn.momentum as f32;
            let (_, mean, var) = &mut self.running[k];
            mean.zip_mut_with(&stats[2 * k], |r, &b| *r = *r * m + b * (1.0 - m));
            var.zip_mut_with(&stats[2 * k + 1], |r, &b| *r = *r * m + b * (1.0 - m));
        }
        Ok((loss, right))
    }

    /// Mean loss and accuracy over `data` with the inference graph (no dropout, running
    /// statistics), in batches of the training batch size.
    /// For regression, the metric is the mean absolute error over every target value.
    pub fn evaluate(&mut self, data: &Dataset<'_>) -> Result<(f64, f64), TrainError> {
        if !self.spec.regression {
            return self.evaluate_confusion(data).map(|(loss, accuracy, _)| (loss, accuracy));
        }
        let (mut loss_sum, mut score) = (0.0f64, 0.0f64);
        self.for_batches(data, &mut |loss, outputs, y| {
            loss_sum += loss * outputs.shape()[0] as f64;
            score += abs_errors(outputs, y);
        })?;
        Ok((loss_sum / data.len().max(1) as f64, score / data.score_count().max(1.0)))
    }

    /// [`evaluate`](Self::evaluate) with the confusion matrix of the predictions (the
    /// accuracy is its trace over the samples).
    pub fn evaluate_confusion(
        &mut self,
        data: &Dataset<'_>,
    ) -> Result<(f64, f64, super::metrics::Confusion), TrainError> {
        let mut confusion = super::metrics::Confusion::new(self.spec.classes);
        let mut loss_sum = 0.0f64;
        self.for_batches(data, &mut |loss, logits, y| {
            loss_sum += loss * logits.shape()[0] as f64;
            for (p, l) in argmax_rows(logits).into_iter().zip(y.iter()) {
                confusion.add(*l as usize, p);
            }
        })?;
        let n = data.len().max(1) as f64;
        Ok((loss_sum / n, confusion.accuracy(), confusion))
    }

    /// The predicted class of every sample.
    pub fn predict(&mut self, data: &Dataset<'_>) -> Result<Vec<usize>, TrainError> {
        let mut out = Vec::with_capacity(data.len());
        self.for_batches(data, &mut |_, logits, _| out.extend(argmax_rows(logits)))?;
        Ok(out)
    }

    /// The model's outputs for every sample, a row of `spec.classes` each: logits for
    /// classification, predicted values for regression.
    pub fn outputs(&mut self, data: &Dataset<'_>) -> Result<Vec<Vec<f32>>, TrainError> {
        let mut out = Vec::with_capacity(data.len());
        self.for_batches(data, &mut |_, logits, _| {
            out.extend(logits.outer_iter().map(|r| r.iter().copied().collect::<Vec<f32>>()))
        })?;
        Ok(out)
    }

    fn for_batches(&mut self, data: &Dataset<'_>, f: &mut BatchSink<'_>) -> Result<(), TrainError> {
        if self.compiled.is_some() {
            return self.for_batches_compiled(data, f);
        }
        let batch = self.spec.train.batch;
        let n = data.len();
        let idx: Vec<usize> = (0..n).collect();
        for chunk in idx.chunks(batch) {
            let (x, y) = data.batch(chunk, &self.input_map);
            self.graph(chunk.len(), false)?;
            let built = &self.infer_graphs[&chunk.len()];
            let mut inputs: HashMap<Id, ArrayViewD<'_, f32>> = HashMap::new();
            inputs.insert(built.input, x.view());
            inputs.insert(built.labels, y.view());
            for (p, v) in built.params.iter().zip(&self.params) {
                inputs.insert(p.var, v.view());
            }
            for (bn, (_, mean, var)) in built.batchnorms.iter().zip(&self.running) {
                inputs.insert(bn.running_mean, mean.view());
                inputs.insert(bn.running_var, var.view());
            }
            let out =
                eval_tensors::<f32>(&built.graph, &[built.loss, built.logits], &|v| inputs.get(&v).cloned())
                    .map_err(|e| TrainError::Eval(e.to_string()))?;
            let loss = out[0].iter().next().copied().unwrap_or(f32::NAN) as f64;
            f(loss, &out[1], &y);
        }
        Ok(())
    }

    fn for_batches_compiled(&mut self, data: &Dataset<'_>, f: &mut BatchSink<'_>) -> Result<(), TrainError> {
        self.sync();
        let batch = self.spec.train.batch;
        let n = data.len();
        let idx: Vec<usize> = (0..n).collect();
        let mut loaded: Vec<usize> = Vec::new();
        for chunk in idx.chunks(batch) {
            let b = chunk.len();
            if !self.inference.programs.contains_key(&b) {
                let c = compile_inference(&self.spec, b, self.keep_ir)
                    .map_err(|e| TrainError::Model(e.to_string()))?;
                self.inference.programs.insert(b, c);
            }
            let c =
                self.inference.programs.get_mut(&b).ok_or_else(|| TrainError::Model("inference".into()))?;
            if !loaded.contains(&b) {
                for (k, p) in c.built.params.iter().enumerate() {
                    write(&mut c.program, p.var, &self.params[k]);
                }
                for (bn, (_, mean, var)) in c.built.batchnorms.iter().zip(&self.running) {
                    write(&mut c.program, bn.running_mean, mean);
                    write(&mut c.program, bn.running_var, var);
                }
                loaded.push(b);
            }
            if let Some(dst) = c.program.slot_mut(c.built.input) {
                fill_input(dst, data, chunk, &self.input_map);
            }
            let y = data.targets(chunk);
            write(&mut c.program, c.built.labels, &y);
            c.program.run();
            let loss = c.program.slot(c.built.loss).map_or(f32::NAN, |l| l[0]) as f64;
            let classes = self.spec.classes;
            let logits = c
                .program
                .slot(c.built.logits)
                .map(|l| {
                    ArrayD::from_shape_vec(IxDyn(&[b, classes]), l.to_vec())
                        .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[b, classes])))
                })
                .unwrap_or_else(|| ArrayD::zeros(IxDyn(&[b, classes])));
            f(loss, &logits, &y);
        }
        Ok(())
    }

    /// Every tensor worth saving: parameters, then running statistics.
    pub fn named_tensors(&self) -> Vec<(String, &ArrayD<f32>)> {
        let mut v: Vec<(String, &ArrayD<f32>)> =
            self.param_info.iter().map(|(n, _)| n.clone()).zip(self.params.iter()).collect();
        for (name, mean, var) in &self.running {
            v.push((format!("{name}.moving_mean"), mean));
            v.push((format!("{name}.moving_variance"), var));
        }
        if let Some((mean, std)) = &self.input_map.normalize {
            v.push(("input.mean".to_owned(), mean));
            v.push(("input.std".to_owned(), std));
        }
        v
    }

    /// Sets the `normalize` statistics from the training samples `data`: per feature, the
    /// mean and the (population) standard deviation of the divided values, in f64; a
    /// feature with no spread gets 1, so that it maps to 0 rather than to a NaN. Nothing
    /// when the `data` line does not normalise.
    pub fn set_normalization(&mut self, data: &Dataset<'_>) {
        let Some((mean, std)) = &mut self.input_map.normalize else { return };
        let s = data.sample_size();
        let n = data.len();
        // The values `fill_input` gives before standardising, a block of samples at a time.
        let divided = InputMap { divide: self.input_map.divide, normalize: None };
        let (mut sum, mut sq) = (vec![0.0f64; s], vec![0.0f64; s]);
        let all: Vec<usize> = (0..n).collect();
        let mut rows = vec![0.0f32; 256 * s];
        for block in all.chunks(256) {
            let rows = &mut rows[..block.len() * s];
            fill_input(rows, data, block, &divided);
            for row in rows.chunks_exact(s.max(1)) {
                for ((a, b), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
                    *a += v as f64;
                    *b += v as f64 * v as f64;
                }
            }
        }
        let n = n.max(1) as f64;
        for j in 0..s.min(mean.len()) {
            let m = sum[j] / n;
            let var = (sq[j] / n - m * m).max(0.0);
            mean[j] = m as f32;
            std[j] = if var.sqrt() as f32 > 0.0 { var.sqrt() as f32 } else { 1.0 };
        }
    }

    /// Copies of [`named_tensors`](Self::named_tensors), taken out of the compiled step.
    pub fn snapshot(&mut self) -> Vec<ArrayD<f32>> {
        self.sync();
        self.named_tensors().into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// Puts back weights from [`snapshot`](Self::snapshot) (early stopping's best epoch),
    /// into the compiled step too; the optimizer state stays.
    pub fn put_back(&mut self, tensors: Vec<ArrayD<f32>>) {
        self.sync();
        self.set_tensors(tensors);
        self.unsync();
    }

    /// Replaces weights and running statistics from `tensors`, in `named_tensors` order.
    pub fn set_tensors(&mut self, tensors: Vec<ArrayD<f32>>) {
        let mut it = tensors.into_iter();
        for p in self.params.iter_mut() {
            if let Some(t) = it.next() {
                *p = t;
            }
        }
        for (_, mean, var) in self.running.iter_mut() {
            if let (Some(m), Some(v)) = (it.next(), it.next()) {
                *mean = m;
                *var = v;
            }
        }
        if let Some((mean, std)) = &mut self.input_map.normalize
            && let (Some(m), Some(s)) = (it.next(), it.next())
        {
            *mean = m;
            *std = s;
        }
    }

    /// The names and shapes `named_tensors` produces.
    /// Every tensor of a checkpoint (the weight file's tensors, then each parameter's
    /// optimizer state), copied out of the compiled step first.
    pub fn checkpoint_tensors(&mut self) -> Vec<(String, &ArrayD<f32>)> {
        self.sync();
        let mut v = self.named_tensors();
        for ((name, _), s) in self.param_info.iter().zip(&self.slots) {
            v.push((format!("{name}.optimizer.m"), &s.m));
            v.push((format!("{name}.optimizer.v"), &s.v));
        }
        v
    }

    /// Names and shapes of [`Self::checkpoint_tensors`].
    pub fn checkpoint_layout(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = self.tensor_layout();
        for (name, shape) in &self.param_info {
            v.push((format!("{name}.optimizer.m"), shape.clone()));
            v.push((format!("{name}.optimizer.v"), shape.clone()));
        }
        v
    }

    /// Where the random stream (shuffles, dropout masks) stands.
    pub fn rng_word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Puts back a checkpoint's state: tensors in [`Self::checkpoint_layout`]'s order, the
    /// optimizer's step count and the random stream's position.
    pub fn restore(&mut self, tensors: Vec<ArrayD<f32>>, step: u64, word_pos: u128) {
        let n = self.tensor_layout().len();
        let mut it = tensors.into_iter();
        self.set_tensors(it.by_ref().take(n).collect());
        for s in &mut self.slots {
            if let (Some(m), Some(v)) = (it.next(), it.next()) {
                s.m = m;
                s.v = v;
            }
        }
        self.step = step;
        self.rng.set_word_pos(word_pos);
        self.unsync();
    }

    pub fn tensor_layout(&self) -> Vec<(String, Vec<usize>)> {
        self.named_tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect()
    }
}

/// The values of a training graph's inputs for one step: the batch, the parameters, the
/// dropout masks and the running statistics.
/// The inputs and targets of the samples `idx` into a compiled step's buffers.
fn fill_batch(c: &mut CompiledStep, data: &Dataset<'_>, idx: &[usize], map: &InputMap) {
    if let Some(dst) = c.program.slot_mut(c.built.input) {
        fill_input(dst, data, idx, map);
    }
    if let Some(dst) = c.program.slot_mut(c.built.labels) {
        data.fill_targets(dst, idx);
    }
}

/// A team's update of one parameter: the one-process compiled step's, bit for bit where it
/// can be: Adam by its host kernel (`sd_adam`) with the coefficients `compile_step` gives
/// it; SGD, whose kernels compute the interpreter's formula, by the interpreter's.
fn team_update(
    opt: &Optimizer,
    t: u64,
    param: &mut ArrayD<f32>,
    grad: &[f32],
    shape: &[usize],
    slots: &mut Slots,
) {
    let view = || ArrayViewD::from_shape(IxDyn(shape), grad).expect("a gradient has its parameter's shape");
    let Optimizer::Adam { lr, beta1, beta2, epsilon } = *opt else {
        return optimizer::update(opt, t, param, view(), slots);
    };
    let alpha = (lr * (1.0 - beta2.powi(t as i32)).sqrt() / (1.0 - beta1.powi(t as i32))) as f32;
    let (Some(p), Some(m), Some(v)) = (param.as_slice_mut(), slots.m.as_slice_mut(), slots.v.as_slice_mut())
    else {
        return optimizer::update(opt, t, param, view(), slots);
    };
    // SAFETY: four distinct, contiguous buffers of one length (a parameter, its moments and
    // its gradient) and one `alpha`, as `sd_adam` requires.
    unsafe {
        crate::jit::sd_adam(
            p.len() as i64,
            p.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            grad.as_ptr(),
            &alpha,
            beta1 as f32,
            (1.0 - beta1) as f32,
            beta2 as f32,
            (1.0 - beta2) as f32,
            epsilon as f32,
        )
    }
}

fn step_inputs<'a>(
    built: &Built,
    x: &'a ArrayD<f32>,
    y: &'a ArrayD<f32>,
    params: &'a [ArrayD<f32>],
    masks: &'a [ArrayD<f32>],
    running: &'a [(String, ArrayD<f32>, ArrayD<f32>)],
) -> HashMap<Id, ArrayViewD<'a, f32>> {
    let mut inputs: HashMap<Id, ArrayViewD<'a, f32>> = HashMap::new();
    inputs.insert(built.input, x.view());
    inputs.insert(built.labels, y.view());
    for (p, v) in built.params.iter().zip(params) {
        inputs.insert(p.var, v.view());
    }
    for (d, m) in built.dropouts.iter().zip(masks) {
        inputs.insert(d.mask, m.view());
    }
    for (bn, (_, mean, var)) in built.batchnorms.iter().zip(running) {
        inputs.insert(bn.running_mean, mean.view());
        inputs.insert(bn.running_var, var.view());
    }
    inputs
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
        .0
}

fn argmax_rows(logits: &ArrayD<f32>) -> Vec<usize> {
    logits
        .outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
                .0
        })
        .collect()
}

/// The sum of absolute errors of a batch's outputs against its regression targets.
fn abs_errors(outputs: &ArrayD<f32>, y: &ArrayD<f32>) -> f64 {
    outputs.iter().zip(y.iter()).map(|(p, t)| (p - t).abs() as f64).sum()
}

#[cfg(test)]
mod tests {
    //! The compiled step against the interpreter: from the same weights, batch and dropout
    //! masks, a few steps of each leave the same parameters, optimizer state and running
    //! statistics (relative error ≤ 1e-5 against each tensor's largest element). Also: the
    //! fast dropout masks are exactly the masks of one draw per value.

    use super::*;

    fn check_mask(len: usize, rate: f64) {
        let (mut fast, mut slow) = (ChaCha8Rng::seed_from_u64(7), ChaCha8Rng::seed_from_u64(7));
        // Start mid-block, as a mask after other draws does.
        fast.next_u32();
        slow.next_u32();
        let mut got = vec![f32::NAN; len];
        draw_mask(&mut fast, rate, &mut got);
        let keep = 1.0 - rate as f32;
        let want: Vec<f32> =
            (0..len).map(|_| if uniform(&mut slow) < keep { 1.0 / keep } else { 0.0 }).collect();
        assert_eq!(got, want, "len {len} rate {rate}");
        assert_eq!(fast.next_u32(), slow.next_u32(), "len {len} rate {rate}: streams diverged");
    }

    #[test]
    fn fast_masks_are_the_masks_of_one_draw_per_value() {
        for len in [0, 1, 3, 63, 64, 65, 4096, 1000] {
            for rate in [0.0, 0.2, 0.5, 0.999] {
                check_mask(len, rate);
            }
        }
    }

    /// `skip`: parameters whose gradient is zero but for rounding (a bias before batch
    /// normalisation), which Adam scales up to full steps of either sign in both engines; the
    /// batch means after such a step differ too, so those cases take a single `steps`.
    fn check_skipping(name: &str, body: &str, optimizer: &str, skip: &[&str], steps: usize) {
        let src = format!("data mnist\ninput 28x28\n{body}\noptimizer {optimizer}\ntrain batch=8 seed=3\n");
        let spec = ModelSpec::parse(&src, "test").unwrap_or_else(|e| panic!("{}", e.render()));
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // Mostly zeros, as real images are, so that the zero-skipping products run.
        let images: Vec<u8> = (0..40 * 784).map(|_| if next() % 5 == 0 { next() as u8 } else { 0 }).collect();
        let labels: Vec<u32> = (0..40).map(|_| (next() % 10) as u32).collect();
        let data = Dataset::images(&images, &labels, vec![28, 28]);
        let mut interp = Trainer::new(spec.clone()).unwrap();
        let mut compiled = Trainer::new(spec).unwrap();
        compiled.compile(false).unwrap_or_else(|e| panic!("{name}: {e}"));
        for step in 0..steps {
            let idx: Vec<usize> = (0..8).map(|k| (k * 7 + step * 5) % 40).collect();
            let a = interp.train_step(&data, &idx, 1, step + 1).unwrap();
            let b = compiled.train_step(&data, &idx, 1, step + 1).unwrap();
            assert!((a.0 - b.0).abs() <= 1e-5 * a.0.abs().max(1.0), "{name}: loss {} vs {}", a.0, b.0);
            assert_eq!(a.1, b.1, "{name}: correct count");
        }
        compiled.sync();
        let close = |what: &str, x: &ArrayD<f32>, y: &ArrayD<f32>, rel: f32| {
            let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let err = x.iter().zip(y).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= rel * scale, "{name}: {what} differs by {err} (scale {scale})");
        };
        for (k, (name_k, _)) in interp.param_info.iter().enumerate() {
            if skip.contains(&name_k.as_str()) {
                continue;
            }
            close(name_k, &interp.params[k], &compiled.params[k], 1e-5);
            close(&format!("{name_k} m"), &interp.slots[k].m, &compiled.slots[k].m, 1e-5);
            // Adam's second moment sums squared gradients: their relative error doubles.
            close(&format!("{name_k} v"), &interp.slots[k].v, &compiled.slots[k].v, 2e-5);
        }
        for (a, b) in interp.running.iter().zip(&compiled.running) {
            close(&a.0, &a.1, &b.1, 1e-5);
            close(&a.0, &a.2, &b.2, 1e-5);
        }
    }

    fn check(name: &str, body: &str, optimizer: &str) {
        check_skipping(name, body, optimizer, &[], 3);
    }

    #[test]
    fn compiled_steps_match_interpreted_steps() {
        let sce = "loss softmax_cross_entropy";
        check("seed", &format!("flatten\ndense 12 relu\ndropout 0.2\ndense 10\n{sce}"), "adam");
        check("leaky", &format!("flatten\ndense 12\nleaky_relu(0.2)\ndropout 0.5\ndense 10\n{sce}"), "adam");
        check("elu", &format!("flatten\ndense 12\nelu(0.7)\ndense 10\n{sce}"), "adam");
        check("sigmoid", &format!("flatten\ndense 12 sigmoid\ndense 10\n{sce}"), "adam");
        check("tanh", &format!("flatten\ndense 12 tanh\ndense 10\n{sce}"), "adam beta1=0.8");
        check("softplus", &format!("flatten\ndense 12 softplus\ndense 10\n{sce}"), "adam");
        let bn = format!("flatten\ndense 12\nbatchnorm\nrelu\ndropout 0.5\ndense 10\n{sce}");
        check_skipping("bn", &bn, "adam", &["dense_1.bias"], 1);
        check("l2", &format!("flatten\ndense 12 relu l2=0.001\ndense 10\n{sce}"), "adam");
        check(
            "swish",
            &format!("activation swish(x) = x * sigmoid(x)\nflatten\ndense 12 swish\ndense 10\n{sce}"),
            "adam",
        );
        check("mse", "flatten\ndense 12 relu\ndense 10\nloss mse", "sgd lr=0.1");
        check("sgd", &format!("flatten\ndense 12 relu\ndense 10\n{sce}"), "sgd lr=0.1");
        check("momentum", &format!("flatten\ndense 12 relu\ndense 10\n{sce}"), "sgd lr=0.1 momentum=0.9");
        check(
            "nesterov",
            &format!("flatten\ndense 12 relu\ndense 10\n{sce}"),
            "sgd lr=0.1 momentum=0.9 nesterov=true",
        );
    }
}
