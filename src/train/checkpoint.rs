//! Checkpoints: everything needed to continue training exactly where it stopped.
//!
//! A checkpoint is a safetensors file (so numpy and PyTorch users can open it too) holding the
//! parameters and running statistics under their weight-file names, each parameter's optimizer
//! state (`dense_1.kernel.optimizer.m` and `.v`), and in its metadata: the number of epochs
//! completed, the optimizer's step count, the position of the random stream (shuffles and
//! dropout masks come from one seeded ChaCha8 stream, so its word position is all the state it
//! has), the SHA-256 of the model file it belongs to, and the per-epoch history.
//!
//! **Invariant:** a checkpoint on disk is always whole and always finite. It is written at the
//! end of an epoch through `weights::write_atomic` (temporary file, fsync, rename, fsync of the
//! directory), so a crash or `kill -9` at any moment leaves either the previous checkpoint or
//! the new one; and a state with a NaN or an infinity is refused before anything is written,
//! so the last good checkpoint survives a diverging run.
//!
//! Resuming from the checkpoint of epoch `k` with the same model file ends with the same
//! weights, bit for bit, as a run that was never interrupted: epoch `k + 1` starts from the
//! same parameters, optimizer state and random-stream position.

use std::collections::HashMap;
use std::path::Path;

use super::EpochStats;
use super::trainer::Trainer;
use super::weights::{self, WeightsError};

/// What went wrong with a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: not a symdiff checkpoint ({reason})")]
    Format { path: String, reason: String },
    #[error(
        "{path}: this checkpoint belongs to another model file (its SHA-256 differs); \
         train from scratch without --resume, or pass --checkpoint with another path"
    )]
    OtherModel { path: String },
    #[error(
        "{path}: this checkpoint was written by a run on {saved} rank{}, and this run has {now}: \
         its gradients are summed in another order, so it would not continue the same training; \
         resume with {saved} rank{} (`{}`), or train from scratch without --resume",
        plural(*saved), plural(*saved), launch(*saved)
    )]
    OtherRanks { path: String, saved: usize, now: usize },
    #[error("not writing a checkpoint after epoch {epoch}: {what} is not finite; {kept}")]
    NotFinite { epoch: usize, what: String, kept: String },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn launch(ranks: usize) -> String {
    if ranks == 1 {
        "symdiff train ... --resume".to_owned()
    } else {
        format!("mpirun -np {ranks} symdiff train ... --resume")
    }
}

/// What a checkpoint says beyond its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// Epochs completed.
    pub epoch: usize,
    /// The statistics of those epochs.
    pub history: Vec<EpochStats>,
}

fn stats_json(h: &[EpochStats]) -> String {
    serde_json::Value::Array(
        h.iter()
            .map(|s| {
                serde_json::json!({"epoch": s.epoch, "loss": s.loss, "accuracy": s.accuracy,
                    "val_loss": s.val_loss, "val_accuracy": s.val_accuracy, "seconds": s.seconds})
            })
            .collect(),
    )
    .to_string()
}

fn parse_stats(text: &str) -> Option<Vec<EpochStats>> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.as_array()?
        .iter()
        .map(|e| {
            let f = |k: &str| e.get(k).and_then(serde_json::Value::as_f64);
            Some(EpochStats {
                epoch: e.get("epoch")?.as_u64()? as usize,
                loss: f("loss")?,
                accuracy: f("accuracy")?,
                val_loss: f("val_loss")?,
                val_accuracy: f("val_accuracy")?,
                seconds: f("seconds")?,
            })
        })
        .collect()
}

/// Writes the trainer's state after `epoch` epochs to `path`, atomically; refuses (writing
/// nothing) if any tensor holds a NaN or an infinity.
pub fn save(
    path: &Path,
    trainer: &mut Trainer,
    epoch: usize,
    history: &[EpochStats],
    model_sha256: &str,
) -> Result<(), CheckpointError> {
    let step = trainer.step;
    let word_pos = trainer.rng_word_pos();
    let ranks = trainer.rank().1;
    let tensors = trainer.checkpoint_tensors();
    if let Some((name, _)) = tensors.iter().find(|(_, t)| t.iter().any(|x| !x.is_finite())) {
        let kept = if path.exists() {
            format!("the last good checkpoint is kept in {}", path.display())
        } else {
            "no checkpoint was written".to_owned()
        };
        return Err(CheckpointError::NotFinite { epoch, what: format!("`{name}`"), kept });
    }
    let meta: HashMap<String, String> = [
        ("format", "symdiff checkpoint 1".to_owned()),
        ("epoch", epoch.to_string()),
        ("step", step.to_string()),
        ("rng_word_pos", word_pos.to_string()),
        ("model_sha256", model_sha256.to_owned()),
        ("history", stats_json(history)),
        // Data-parallel ranks (`parallel.rs`): resuming needs as many, so the sums keep their order.
        ("ranks", ranks.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    weights::save(path, &tensors, meta)?;
    Ok(())
}

/// Restores `trainer` from the checkpoint at `path`, which must belong to the model file whose
/// SHA-256 is `model_sha256`. Every number of the metadata is range-checked (`epoch` at least
/// 1 and matching the history, `step` within 64 bits, the random stream's position within its
/// 68), and every tensor must be finite; whether the epoch fits the run is the caller's
/// question.
pub fn load(path: &Path, trainer: &mut Trainer, model_sha256: &str) -> Result<Resumed, CheckpointError> {
    let shown = path.display().to_string();
    let format = |reason: &str| CheckpointError::Format { path: shown.clone(), reason: reason.to_owned() };
    let meta = weights::metadata(path)?;
    if meta.get("format").map(String::as_str) != Some("symdiff checkpoint 1") {
        return Err(format("no `format: symdiff checkpoint 1` in its metadata"));
    }
    if meta.get("model_sha256").map(String::as_str) != Some(model_sha256) {
        return Err(CheckpointError::OtherModel { path: shown });
    }
    let value = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
    let bad = |k: &str, want: &str| format(&format!("`{k}` must be {want}, not `{}`", value(k)));
    // Checkpoints from before data-parallel training have no `ranks`: one process wrote them.
    let saved = match meta.get("ranks") {
        None => 1,
        Some(r) => r
            .parse::<usize>()
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| bad("ranks", "a whole number, at least 1"))?,
    };
    let now = trainer.rank().1;
    if saved != now {
        return Err(CheckpointError::OtherRanks { path: shown, saved, now });
    }
    let epoch = value("epoch")
        .parse::<u64>()
        .ok()
        .and_then(|e| usize::try_from(e).ok())
        .filter(|&e| e >= 1)
        .ok_or_else(|| bad("epoch", "the number of finished epochs (a whole number, at least 1)"))?;
    let step = value("step").parse::<u64>().map_err(|_| bad("step", "a whole number below 2^64"))?;
    let word_pos = value("rng_word_pos")
        .parse::<u128>()
        .ok()
        .filter(|&w| w < 1 << 68)
        .ok_or_else(|| bad("rng_word_pos", "a whole number below 2^68"))?;
    let history = meta.get("history").and_then(|h| parse_stats(h)).ok_or_else(|| format("bad `history`"))?;
    if history.len() != epoch {
        let n = history.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(format(&format!("`epoch` is {epoch}, but `history` lists {n} epoch{s}")));
    }
    if history.iter().enumerate().any(|(k, s)| s.epoch != k + 1) {
        return Err(format(&format!("`history` does not list epochs 1 to {epoch} in order")));
    }
    // Refuses NaN and infinity, naming the tensor.
    let tensors = weights::load(path, &trainer.checkpoint_layout())?;
    trainer.restore(tensors, step, word_pos);
    Ok(Resumed { epoch, history })
}
