//! What a model file asks of the machine's memory, checked before anything is allocated.
//!
//! Training at batch size `B` holds, at its peak:
//!
//! * **the step's tensors**: every node of the training graph at batch `B` (the batch itself,
//!   the activations, the adjoints, the gradients, the parameters the interpreter copies in).
//!   This is what one interpreted step holds at once, and it bounds the compiled step's arena,
//!   which stores only some of these nodes and reuses dead buffers;
//! * **validation**: the forward pass of a validation batch (`B`, or the whole test split when
//!   it is smaller: the inference program's buffers, or the interpreter's tensors);
//! * **the parameters and optimizer state**: the trainer's parameters and both moments, the
//!   compiled step's copy of the moments, and a checkpoint's copy of all three: 8 values per
//!   parameter;
//! * **the gathered batch**: the interpreter scales a batch's pixels into a tensor of its own
//!   (at most the training split).
//!
//! All in f32. [`needed`] adds them up from the graph, so every layer kind, activation and loss
//! formula is counted as built; [`check`] refuses a model that needs more than
//! [`super::memory_budget`], naming the batch size (or the widest layer) where the file sets it.

use super::ModelSpec;
use super::build::Built;
use crate::graph::{Graph, Id};

/// Bytes a model needs to train, by what they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    /// The batch size these are for.
    pub batch: usize,
    /// Every tensor of one training step.
    pub step: u64,
    /// The forward pass of one validation batch.
    pub validation: u64,
    /// Parameters and optimizer state.
    pub state: u64,
    /// The gathered batch.
    pub gathered: u64,
}

impl Needed {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.step.saturating_add(self.validation).saturating_add(self.state).saturating_add(self.gathered)
    }

    /// What one more sample of a batch adds, about (everything but the parameters and
    /// optimizer state grows with the batch; parameter-sized tensors of the step are counted
    /// here too, so this errs high).
    pub fn per_sample(&self) -> u64 {
        (self.total() - self.state).div_ceil(self.batch.max(1) as u64)
    }
}

/// Elements of the tensors of every node reachable from `roots`.
fn elements(g: &Graph, roots: &[Id]) -> u64 {
    g.reachable(roots)
        .into_iter()
        .map(|id| g.shape(id).iter().fold(1u64, |n, &d| n.saturating_mul(d as u64)))
        .fold(0u64, u64::saturating_add)
}

/// The memory training `spec` needs at the batch size of `built`, a training graph.
pub fn needed(spec: &ModelSpec, built: &Built) -> Needed {
    let g = &built.graph;
    let mut roots = vec![built.loss, built.logits];
    roots.extend(&built.grads);
    for bn in &built.batchnorms {
        roots.extend(bn.batch_mean);
        roots.extend(bn.batch_var);
    }
    let params: u64 = built.params.iter().map(|p| p.shape.iter().product::<usize>() as u64).sum();
    let sample: u64 = spec.input.iter().product::<usize>() as u64;
    // Batches are no larger than the data set's splits (the last of an epoch is smaller).
    let (train, test) = spec.data.sizes();
    let b = built.batch as u64;
    let scaled = |bytes: u64, n: usize| (bytes as u128 * b.min(n as u64) as u128 / b.max(1) as u128) as u64;
    Needed {
        batch: built.batch,
        step: elements(g, &roots).saturating_mul(4),
        validation: scaled(elements(g, &[built.loss, built.logits]).saturating_mul(4), test),
        state: params.saturating_mul(8 * 4),
        gathered: b.min(train as u64).saturating_mul(sample + 1).saturating_mul(4),
    }
}

/// `bytes` for a person: GiB with one decimal, MiB below one GiB.
pub fn show_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes as f64 >= GIB / 2.0 {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else if bytes as f64 >= MIB / 2.0 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Refuses (with the message of `refusal`) a model that needs more than `budget` bytes.
pub fn check(need: &Needed, budget: u64) -> Result<(), (String, String)> {
    if need.total() <= budget { Ok(()) } else { Err(refusal(need, budget)) }
}

/// The message and the help for a model that needs more than `budget`.
fn refusal(need: &Needed, budget: u64) -> (String, String) {
    let message = format!(
        "at batch {}, training needs about {} ({} bytes: {} for the tensors of a step, {} for validation, {} for the parameters and optimizer state, {} for the gathered batch); {} is available",
        need.batch,
        show_bytes(need.total()),
        need.total(),
        show_bytes(need.step),
        show_bytes(need.validation),
        show_bytes(need.state),
        show_bytes(need.gathered),
        show_bytes(budget),
    );
    let per = need.per_sample().max(1);
    let fits = budget.saturating_sub(need.state) / per;
    let help = if fits == 0 {
        format!(
            "even one sample does not fit: each needs about {}, next to {} for the parameters; make the layers narrower",
            show_bytes(per),
            show_bytes(need.state)
        )
    } else {
        format!(
            "each sample of a batch needs about {}: a batch of at most about {fits} fits",
            show_bytes(per)
        )
    };
    (message, help)
}
