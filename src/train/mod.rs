//! Stage 6: training. Data sets (`data.rs`), the training loop (`trainer.rs`), optimizers,
//! weight files, training curves, evaluation metrics (`metrics.rs`) and learning-rate schedules
//! with ReduceLROnPlateau and EarlyStopping (`schedule.rs`).

pub mod checkpoint;
pub mod compiled;
pub mod data;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod schedule;
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
