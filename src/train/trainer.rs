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

use super::optimizer::{self, Slots};
use crate::graph::Id;
use crate::graph::tensor::eval_tensors;
use crate::model::ModelSpec;
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
}

/// Samples: `images` are `len × sample_size` bytes, `labels` one byte each.
pub struct Dataset<'a> {
    pub images: &'a [u8],
    pub labels: &'a [u8],
    pub sample: Vec<usize>,
}

impl Dataset<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn sample_size(&self) -> usize {
        self.sample.iter().product()
    }

    /// The batch of samples `idx`: images scaled to [0, 1] and labels as floats.
    fn batch(&self, idx: &[usize]) -> (ArrayD<f32>, ArrayD<f32>) {
        let s = self.sample_size();
        let mut x = Vec::with_capacity(idx.len() * s);
        for &i in idx {
            x.extend(self.images[i * s..(i + 1) * s].iter().map(|&p| p as f32 / 255.0));
        }
        let mut shape = vec![idx.len()];
        shape.extend_from_slice(&self.sample);
        let x = ArrayD::from_shape_vec(IxDyn(&shape), x).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&shape)));
        let y =
            ArrayD::from_shape_vec(IxDyn(&[idx.len()]), idx.iter().map(|&i| self.labels[i] as f32).collect())
                .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[idx.len()])));
        (x, y)
    }
}

/// What `for_batches` hands each batch's results to: the loss, the logits, the labels.
type BatchSink<'a> = dyn FnMut(f64, &ArrayD<f32>, &ArrayD<f32>) + 'a;

/// Progress within an epoch, for progress bars.
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub accuracy: f64,
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
}

fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
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
        })
    }

    fn graph(&mut self, batch: usize, training: bool) -> Result<&Built, TrainError> {
        let graphs = if training { &mut self.train_graphs } else { &mut self.infer_graphs };
        if !graphs.contains_key(&batch) {
            let b = build(&self.spec, batch, training).map_err(|d| TrainError::Model(d.render()))?;
            graphs.insert(batch, b);
        }
        Ok(&graphs[&batch])
    }

    /// One epoch over `data` in a fresh shuffled order. Returns the mean training loss and
    /// accuracy (with dropout active, as Keras reports them).
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
        let batch = self.spec.train.batch;
        let steps = n.div_ceil(batch);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for s in 0..steps {
            let idx = &order[s * batch..((s + 1) * batch).min(n)];
            let (loss, right) = self.train_step(data, idx, epoch, s + 1)?;
            loss_sum += loss * idx.len() as f64;
            correct += right;
            let seen = ((s + 1) * batch).min(n);
            progress(&Progress {
                step: s + 1,
                steps,
                loss: loss_sum / seen as f64,
                accuracy: correct as f64 / seen as f64,
            });
        }
        Ok((loss_sum / n as f64, correct as f64 / n as f64))
    }

    /// One optimizer step on the samples `idx`. Returns the batch loss and the number of
    /// correctly classified samples.
    pub fn train_step(
        &mut self,
        data: &Dataset<'_>,
        idx: &[usize],
        epoch: usize,
        step: usize,
    ) -> Result<(f64, usize), TrainError> {
        let (x, y) = data.batch(idx);
        let b = idx.len();
        self.graph(b, true)?;
        let built = &self.train_graphs[&b];
        // Dropout masks: keep with probability 1 - rate, scaled by 1/(1 - rate).
        let masks: Vec<ArrayD<f32>> = built
            .dropouts
            .iter()
            .map(|d| {
                let keep = 1.0 - d.rate as f32;
                let scale = 1.0 / keep;
                ArrayD::from_shape_simple_fn(IxDyn(&d.shape), || {
                    if uniform(&mut self.rng) < keep { scale } else { 0.0 }
                })
            })
            .collect();
        let mut inputs: HashMap<Id, ArrayViewD<'_, f32>> = HashMap::new();
        inputs.insert(built.input, x.view());
        inputs.insert(built.labels, y.view());
        for (p, v) in built.params.iter().zip(&self.params) {
            inputs.insert(p.var, v.view());
        }
        for (d, m) in built.dropouts.iter().zip(&masks) {
            inputs.insert(d.mask, m.view());
        }
        for (bn, (_, mean, var)) in built.batchnorms.iter().zip(&self.running) {
            inputs.insert(bn.running_mean, mean.view());
            inputs.insert(bn.running_var, var.view());
        }
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
            return Err(TrainError::NotFinite { epoch, step, what: "the loss".into() });
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
        let right = correct(&out[1], &y);
        self.step += 1;
        for ((param, grad), slots) in self.params.iter_mut().zip(grads).zip(&mut self.slots) {
            optimizer::update(&self.spec.optimizer, self.step, param, grad, slots);
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
    pub fn evaluate(&mut self, data: &Dataset<'_>) -> Result<(f64, f64), TrainError> {
        let (mut loss_sum, mut right) = (0.0f64, 0usize);
        self.for_batches(data, &mut |loss, logits, y| {
            loss_sum += loss * y.len() as f64;
            right += correct(logits, y);
        })?;
        let n = data.len().max(1) as f64;
        Ok((loss_sum / n, right as f64 / n))
    }

    /// The predicted class of every sample.
    pub fn predict(&mut self, data: &Dataset<'_>) -> Result<Vec<usize>, TrainError> {
        let mut out = Vec::with_capacity(data.len());
        self.for_batches(data, &mut |_, logits, _| out.extend(argmax_rows(logits)))?;
        Ok(out)
    }

    fn for_batches(&mut self, data: &Dataset<'_>, f: &mut BatchSink<'_>) -> Result<(), TrainError> {
        let batch = self.spec.train.batch;
        let n = data.len();
        let idx: Vec<usize> = (0..n).collect();
        for chunk in idx.chunks(batch) {
            let (x, y) = data.batch(chunk);
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

    /// Every tensor worth saving: parameters, then running statistics.
    pub fn named_tensors(&self) -> Vec<(String, &ArrayD<f32>)> {
        let mut v: Vec<(String, &ArrayD<f32>)> =
            self.param_info.iter().map(|(n, _)| n.clone()).zip(self.params.iter()).collect();
        for (name, mean, var) in &self.running {
            v.push((format!("{name}.moving_mean"), mean));
            v.push((format!("{name}.moving_variance"), var));
        }
        v
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
    }

    /// The names and shapes `named_tensors` produces.
    pub fn tensor_layout(&self) -> Vec<(String, Vec<usize>)> {
        self.named_tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect()
    }
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

fn correct(logits: &ArrayD<f32>, y: &ArrayD<f32>) -> usize {
    argmax_rows(logits).iter().zip(y.iter()).filter(|(p, l)| **p == **l as usize).count()
}
