//! Stage 6: training. Data sets (`data.rs`: MNIST and IDX files; `files.rs`: CSV and NumPy
//! files; `source.rs`: a model's `data` line to checked, split samples), the training loop (`trainer.rs`), optimizers,
//! weight files, training curves and evaluation metrics (`metrics.rs`).

pub mod checkpoint;
pub mod compiled;
pub mod data;
pub mod files;
pub mod metrics;
pub mod optimizer;
pub mod picture;
pub mod plot;
pub mod schedule;
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
