//! Stage 6: training. Data sets (`data.rs`: MNIST and IDX files; `files.rs`: the user's CSV,
//! `.npy` and `.npz` files; `source.rs`: a model's `data` line to checked, split samples), the
//! training loop (`trainer.rs`), optimizers, weight files, training curves, evaluation
//! metrics (`metrics.rs`) and a person's own picture of a digit made into an MNIST sample
//! (`picture.rs`).

pub mod checkpoint;
pub mod compiled;
pub mod data;
pub mod files;
pub mod metrics;
pub mod optimizer;
pub mod parallel;
pub mod picture;
pub mod plot;
#[cfg(test)]
mod scratch;
pub mod source;
pub mod trainer;
pub mod weights;

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}
