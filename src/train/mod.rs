//! Stage 6: training. Data sets (`data.rs`: MNIST; `files.rs`: the user's CSV, `.npy` and
//! `.npz` files), the training loop (`trainer.rs`), optimizers, weight files, training curves
//! and evaluation metrics (`metrics.rs`).

pub mod checkpoint;
pub mod compiled;
pub mod data;
pub mod files;
pub mod metrics;
pub mod optimizer;
pub mod plot;
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
