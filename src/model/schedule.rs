//! Learning-rate schedules, ReduceLROnPlateau and EarlyStopping (the `schedule`,
//! `reduce_lr_on_plateau` and `early_stopping` lines of a model file): the per-step and per-epoch
//! decisions of Keras' `keras.optimizers.schedules` and callbacks, as pure functions of a few
//! counters, for the trainer to call.
//!
//! * [`Schedule`]: the rate for a step from the optimizer's base rate `lr0`. `step` is the
//!   0-based global optimizer step (Keras' `optimizer.iterations` before the update, so the
//!   trainer's 1-based `t` minus one); `epoch` is 0-based.
//!   - `Constant`: `lr0`.
//!   - `Exponential` = `ExponentialDecay(lr0, decay_steps, decay_rate, staircase)`:
//!     `lr0 · rate^(step / decay_steps)`, the exponent `floor(step / decay_steps)` when
//!     `staircase`.
//!   - `Step` ("step decay", a `LearningRateScheduler` with a step function of the epoch):
//!     `lr0 · factor^floor(epoch / every)`.
//!   - `Cosine` = `CosineDecay(lr0, decay_steps, alpha)` without warmup:
//!     `lr0 · ((1 − alpha) · 0.5 · (1 + cos(π · min(step, decay_steps) / decay_steps)) + alpha)`.
//!
//!   Keras evaluates these in the dtype of the initial rate (float32 as a rule); here they are
//!   evaluated in f64, in the same order, and a staircase exponent is an exact integer division.
//! * [`Plateau`] = `ReduceLROnPlateau(monitor, factor, patience, min_delta, cooldown, min_lr)`
//!   (Keras defaults 0.1, 10, 1e-4, 0, 0): [`Plateau::end_epoch`] takes the epoch's monitored
//!   value and the current rate and returns the rate for the next epoch, by Keras'
//!   `on_epoch_end` step for step (see there).
//! * [`EarlyStopping`] = `EarlyStopping(monitor, min_delta, patience, restore_best_weights)` with
//!   Keras' `baseline=None, start_from_epoch=0`: [`EarlyStopping::observe`] says whether this
//!   epoch's weights are the new best, training goes on, or patience is exhausted.
//! * [`Monitor`]: the monitored metric and its direction (`mode="auto"` as Keras infers it).
//!
//! Improvement, for both callbacks, is Keras 3's `MonitorCallback._is_improvement`:
//! `value + min_delta < best` when lower is better, `value − min_delta > best` when higher is,
//! with `best` starting at `+∞` (or `−∞`), so the first value improves unless it is that infinity
//! itself or NaN, and a NaN never improves.
//!
//! Invariant: everything a callback remembers between epochs is in its `state()` (a few f64s, the
//! layout documented on each), so a checkpoint restores it bit for bit; the configuration is
//! validated once, in the constructor, and never changes.
//!
//! Never: panics on any input (a monitored value may be NaN or infinite, a rate NaN; an invalid
//! `Schedule` built by hand leaves the rate at `lr0`); reads files, clocks or the trainer; holds
//! weights (the integrator keeps the best weights; this module says when to copy them).

use std::f64::consts::PI;
use std::fmt;

/// Largest counter value stored in a `state()` vector: every integer up to 2^53 is exact in f64.
const MAX_COUNT: usize = 1 << 53;

/// A learning-rate schedule: the rate for a step, from the optimizer's base rate `lr0`.
///
/// Build one with [`Schedule::exponential`], [`Schedule::step`] or [`Schedule::cosine`], which
/// validate their parameters; a variant built by hand can be checked with
/// [`Schedule::validate`], and if it is invalid, [`Schedule::rate`] returns `lr0` unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `lr0` at every step.
    Constant,
    /// Keras' `ExponentialDecay(lr0, decay_steps, rate, staircase)`:
    /// `lr0 · rate^(step / decay_steps)`, the exponent floored when `staircase`.
    /// `decay_steps ≥ 1`, `rate > 0` and finite (a rate above 1 grows, as in Keras).
    Exponential { decay_steps: u64, rate: f64, staircase: bool },
    /// Step decay by the epoch: `lr0 · factor^floor(epoch / every)`. `every ≥ 1`,
    /// `0 < factor < 1`.
    Step { every: usize, factor: f64 },
    /// Keras' `CosineDecay(lr0, decay_steps, alpha)` without warmup:
    /// `lr0 · ((1 − alpha) · 0.5 · (1 + cos(π · min(step, decay_steps) / decay_steps)) + alpha)`,
    /// so `lr0` at step 0 and `alpha · lr0` from step `decay_steps` on. `decay_steps ≥ 1`,
    /// `0 ≤ alpha ≤ 1`.
    Cosine { decay_steps: u64, alpha: f64 },
}

impl Schedule {
    /// Keras' `ExponentialDecay`, validated.
    pub fn exponential(decay_steps: u64, rate: f64, staircase: bool) -> Result<Schedule, String> {
        let s = Schedule::Exponential { decay_steps, rate, staircase };
        s.validate().map(|()| s)
    }

    /// Step decay by the epoch, validated.
    pub fn step(every: usize, factor: f64) -> Result<Schedule, String> {
        let s = Schedule::Step { every, factor };
        s.validate().map(|()| s)
    }

    /// Keras' `CosineDecay` without warmup, validated.
    pub fn cosine(decay_steps: u64, alpha: f64) -> Result<Schedule, String> {
        let s = Schedule::Cosine { decay_steps, alpha };
        s.validate().map(|()| s)
    }

    /// Checks the parameters; the message names the parameter and the value refused.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Exponential { decay_steps, rate, .. } => {
                if decay_steps == 0 {
                    Err("exponential decay: decay_steps must be at least 1, got 0".to_string())
                } else if !(rate > 0.0 && rate.is_finite()) {
                    Err(format!("exponential decay: rate must be positive and finite, got {rate}"))
                } else {
                    Ok(())
                }
            }
            Schedule::Step { every, factor } => {
                if every == 0 {
                    Err("step decay: every must be at least 1 epoch, got 0".to_string())
                } else if !(factor > 0.0 && factor < 1.0) {
                    Err(format!("step decay: factor must be in (0, 1), got {factor}"))
                } else {
                    Ok(())
                }
            }
            Schedule::Cosine { decay_steps, alpha } => {
                if decay_steps == 0 {
                    Err("cosine decay: decay_steps must be at least 1, got 0".to_string())
                } else if !(0.0..=1.0).contains(&alpha) {
                    Err(format!("cosine decay: alpha must be in [0, 1], got {alpha}"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The rate at 0-based optimizer step `step` in 0-based epoch `epoch`, from base rate `lr0`
    /// (the formulas on [`Schedule`]); `lr0` itself when the schedule is invalid.
    pub fn rate(&self, lr0: f64, step: u64, epoch: usize) -> f64 {
        if self.validate().is_err() {
            return lr0;
        }
        match *self {
            Schedule::Constant => lr0,
            Schedule::Exponential { decay_steps, rate, staircase } => {
                let p =
                    if staircase { (step / decay_steps) as f64 } else { step as f64 / decay_steps as f64 };
                lr0 * rate.powf(p)
            }
            Schedule::Step { every, factor } => lr0 * factor.powf((epoch / every) as f64),
            Schedule::Cosine { decay_steps, alpha } => {
                let fraction = step.min(decay_steps) as f64 / decay_steps as f64;
                let cosine = 0.5 * (1.0 + (PI * fraction).cos());
                lr0 * ((1.0 - alpha) * cosine + alpha)
            }
        }
    }

    /// True when the rate can change within an epoch, so the trainer must set it before every
    /// step; false when setting it at the start of each epoch is enough.
    pub fn per_step(&self) -> bool {
        match self {
            Schedule::Constant | Schedule::Step { .. } => false,
            Schedule::Exponential { .. } | Schedule::Cosine { .. } => true,
        }
    }

    /// A one-line description for the user, as in
    /// `exponential decay: lr 0.001 × 0.96^(step/1000)`.
    pub fn describe(&self, lr0: f64) -> String {
        match *self {
            Schedule::Constant => format!("constant: lr {lr0}"),
            Schedule::Exponential { decay_steps, rate, staircase: false } => {
                format!("exponential decay: lr {lr0} × {rate}^(step/{decay_steps})")
            }
            Schedule::Exponential { decay_steps, rate, staircase: true } => {
                format!("exponential decay: lr {lr0} × {rate}^floor(step/{decay_steps})")
            }
            Schedule::Step { every, factor } => {
                format!("step decay: lr {lr0} × {factor}^floor(epoch/{every})")
            }
            Schedule::Cosine { decay_steps: d, alpha } => format!(
                "cosine decay: lr {lr0} × ((1 − {alpha})·(1 + cos(π·min(step, {d})/{d}))/2 + {alpha})"
            ),
        }
    }
}

/// The monitored metric, and its direction as Keras' `mode="auto"` infers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    Loss,
    ValAccuracy,
    Accuracy,
    ValMae,
    Mae,
}

impl Monitor {
    /// Every monitor, in the order of [`Monitor::name`]s to offer the user.
    pub const ALL: [Monitor; 6] = [
        Monitor::ValLoss,
        Monitor::Loss,
        Monitor::ValAccuracy,
        Monitor::Accuracy,
        Monitor::ValMae,
        Monitor::Mae,
    ];

    /// The monitor named `name` (Keras' log keys, case-sensitive; `acc` and `val_acc`, the Keras 2
    /// names, are accepted too), or `None`.
    pub fn parse(name: &str) -> Option<Monitor> {
        match name {
            "acc" => Some(Monitor::Accuracy),
            "val_acc" => Some(Monitor::ValAccuracy),
            _ => Monitor::ALL.into_iter().find(|m| m.name() == name),
        }
    }

    /// Keras' log key: `val_loss`, `loss`, `val_accuracy`, `accuracy`, `val_mae` or `mae`.
    pub fn name(&self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::Loss => "loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::Accuracy => "accuracy",
            Monitor::ValMae => "val_mae",
            Monitor::Mae => "mae",
        }
    }

    /// True for losses and errors (`mode="min"`), false for accuracies (`mode="max"`).
    pub fn lower_is_better(&self) -> bool {
        !matches!(self, Monitor::ValAccuracy | Monitor::Accuracy)
    }

    /// Keras 3's `_is_improvement(value, best)`: `value + min_delta < best` (lower is better) or
    /// `value − min_delta > best`; false whenever either side is NaN.
    fn improves(&self, value: f64, best: f64, min_delta: f64) -> bool {
        if self.lower_is_better() { value + min_delta < best } else { value - min_delta > best }
    }

    /// The `best` a callback starts from: `+∞` when lower is better, `−∞` otherwise.
    fn worst(&self) -> f64 {
        if self.lower_is_better() { f64::INFINITY } else { f64::NEG_INFINITY }
    }
}

impl fmt::Display for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `min_delta` must be finite and non-negative (Keras takes `abs` of a negative one in
/// EarlyStopping and uses it signed in older ReduceLROnPlateau; here it is refused).
fn check_min_delta(who: &str, min_delta: f64) -> Result<(), String> {
    if min_delta >= 0.0 && min_delta.is_finite() {
        Ok(())
    } else {
        Err(format!("{who}: min_delta must be finite and at least 0, got {min_delta}"))
    }
}

/// A counter read back from a state vector: an integer in `0..=2^53`.
fn state_count(who: &str, what: &str, x: f64) -> Result<usize, String> {
    if (0.0..=MAX_COUNT as f64).contains(&x) && x.fract() == 0.0 {
        Ok(x as usize)
    } else {
        Err(format!("{who} state: {what} must be a whole number in 0..=2^53, got {x}"))
    }
}

/// A state vector's length, checked.
fn state_len(who: &str, state: &[f64], len: usize) -> Result<(), String> {
    if state.len() == len {
        Ok(())
    } else {
        Err(format!("{who} state: expected {len} numbers, got {}", state.len()))
    }
}

/// Keras' `ReduceLROnPlateau`: multiplies the rate by `factor` (not below `min_lr`) once the
/// monitored value has not improved for `patience` epochs, then waits `cooldown` epochs before
/// counting again.
#[derive(Debug, Clone, PartialEq)]
pub struct Plateau {
    monitor: Monitor,
    factor: f64,
    patience: usize,
    min_delta: f64,
    cooldown: usize,
    min_lr: f64,
    /// Keras' `best`: the best value seen, `±∞` before the first.
    best: f64,
    /// Keras' `wait`: epochs without improvement since the last improvement, reduction or
    /// cooldown epoch.
    wait: usize,
    /// Keras' `cooldown_counter`: cooldown epochs still to come.
    cooldown_left: usize,
}

impl Plateau {
    /// Keras' default `factor`.
    pub const DEFAULT_FACTOR: f64 = 0.1;
    /// Keras' default `patience`.
    pub const DEFAULT_PATIENCE: usize = 10;
    /// Keras' default `min_delta`.
    pub const DEFAULT_MIN_DELTA: f64 = 1e-4;
    /// Keras' default `cooldown`.
    pub const DEFAULT_COOLDOWN: usize = 0;
    /// Keras' default `min_lr`.
    pub const DEFAULT_MIN_LR: f64 = 0.0;

    /// Validates the configuration: `0 < factor < 1`, `min_delta` and `min_lr` finite and `≥ 0`.
    pub fn new(
        monitor: Monitor,
        factor: f64,
        patience: usize,
        min_delta: f64,
        cooldown: usize,
        min_lr: f64,
    ) -> Result<Plateau, String> {
        if !(factor > 0.0 && factor < 1.0) {
            return Err(format!(
                "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got {factor}"
            ));
        }
        check_min_delta("ReduceLROnPlateau", min_delta)?;
        if !(min_lr >= 0.0 && min_lr.is_finite()) {
            return Err(format!("ReduceLROnPlateau: min_lr must be finite and at least 0, got {min_lr}"));
        }
        Ok(Plateau {
            monitor,
            factor,
            patience,
            min_delta,
            cooldown,
            min_lr,
            best: monitor.worst(),
            wait: 0,
            cooldown_left: 0,
        })
    }

    /// The monitored metric.
    pub fn monitor(&self) -> Monitor {
        self.monitor
    }

    /// Called after each epoch with the epoch's monitored `value` and the rate `lr` in force;
    /// returns the rate for the next epoch (`lr` itself unless reduced). Keras' `on_epoch_end`:
    ///
    /// 1. in cooldown (`cooldown_left > 0`): `cooldown_left -= 1`, `wait = 0`;
    /// 2. if `value` improves on `best`: `best = value`, `wait = 0`, return `lr`;
    /// 3. else, unless still in cooldown after step 1: `wait += 1`, and when `wait ≥ patience`
    ///    and `lr > min_lr` (compared in f32, as Keras compares its float32 variable and as the
    ///    trainer applies the rate): return `max(lr · factor, min_lr)`, with
    ///    `cooldown_left = cooldown` and `wait = 0`;
    /// 4. otherwise return `lr` (at the floor, `wait` keeps counting and no cooldown starts).
    ///
    /// As the counter is decremented before the comparison, a cooldown of `c` skips the `c − 1`
    /// epochs after a reduction (Keras' behaviour: cooldown 1 acts as cooldown 0).
    pub fn end_epoch(&mut self, value: f64, lr: f64) -> f64 {
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.wait = 0;
        }
        if self.monitor.improves(value, self.best, self.min_delta) {
            self.best = value;
            self.wait = 0;
            return lr;
        }
        if self.cooldown_left == 0 {
            self.wait = (self.wait + 1).min(MAX_COUNT);
            if self.wait >= self.patience && (lr as f32) > (self.min_lr as f32) {
                self.cooldown_left = self.cooldown;
                self.wait = 0;
                return (lr * self.factor).max(self.min_lr);
            }
        }
        lr
    }

    /// The state between epochs, for a checkpoint: `[best, wait, cooldown_left]` (`best` is `±∞`
    /// before the first improvement, never NaN; the counters are whole numbers).
    pub fn state(&self) -> Vec<f64> {
        vec![self.best, self.wait as f64, self.cooldown_left.min(MAX_COUNT) as f64]
    }

    /// Restores a [`Plateau::state`]; on error nothing changes.
    pub fn set_state(&mut self, state: &[f64]) -> Result<(), String> {
        const WHO: &str = "ReduceLROnPlateau";
        state_len(WHO, state, 3)?;
        if state[0].is_nan() {
            return Err(format!("{WHO} state: best must not be NaN, got {}", state[0]));
        }
        let wait = state_count(WHO, "wait", state[1])?;
        let cooldown_left = state_count(WHO, "cooldown counter", state[2])?;
        (self.best, self.wait, self.cooldown_left) = (state[0], wait, cooldown_left);
        Ok(())
    }
}

/// What [`EarlyStopping::observe`] says about an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// This epoch's weights are now the ones to keep (copy them when restoring the best): the
    /// value improved, or this is the first epoch observed (Keras keeps the first observed
    /// epoch's weights whatever its value, so a run of NaNs restores the first epoch).
    NewBest,
    /// No new best, patience not yet exhausted.
    Continue,
    /// Patience exhausted: stop after this epoch, restoring `best_epoch`'s weights when
    /// restoring the best (`best` is its value). `best_epoch` is never later than this epoch,
    /// and equals it only when this is the first epoch observed.
    Stop { best_epoch: usize, best: f64 },
}

/// Keras' `EarlyStopping(monitor, min_delta, patience, restore_best_weights)` with
/// `baseline=None` and `start_from_epoch=0`.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    min_delta: f64,
    restore_best: bool,
    /// Keras' `wait`: epochs observed since the last improvement (counting a first NaN).
    wait: usize,
    /// Keras' `best`: the value to beat, `±∞` until a value improves on it.
    reference: f64,
    /// Keras' `best_epoch` and the value then: the epoch whose weights to keep.
    best: Option<(usize, f64)>,
}

impl EarlyStopping {
    /// Keras' default `patience`.
    pub const DEFAULT_PATIENCE: usize = 0;
    /// Keras' default `min_delta`.
    pub const DEFAULT_MIN_DELTA: f64 = 0.0;

    /// Validates the configuration: `min_delta` finite and `≥ 0`.
    pub fn new(
        monitor: Monitor,
        patience: usize,
        min_delta: f64,
        restore_best: bool,
    ) -> Result<EarlyStopping, String> {
        check_min_delta("EarlyStopping", min_delta)?;
        Ok(EarlyStopping {
            monitor,
            patience,
            min_delta,
            restore_best,
            wait: 0,
            reference: monitor.worst(),
            best: None,
        })
    }

    /// Called after each epoch with its 0-based number and monitored value. Keras'
    /// `on_epoch_end`: the first epoch observed becomes the best epoch; `wait += 1`; if `value`
    /// improves on the reference, it becomes the reference and the best, `wait = 0`, and the
    /// verdict is [`Verdict::NewBest`]; otherwise training stops when `wait ≥ patience` and
    /// `epoch > 0` (so patience 0 stops at the first epoch that does not improve).
    pub fn observe(&mut self, epoch: usize, value: f64) -> Verdict {
        let first = self.best.is_none();
        if first {
            self.best = Some((epoch, value));
        }
        self.wait = (self.wait + 1).min(MAX_COUNT);
        if self.monitor.improves(value, self.reference, self.min_delta) {
            self.reference = value;
            self.best = Some((epoch, value));
            self.wait = 0;
            return Verdict::NewBest;
        }
        match self.best {
            Some((best_epoch, best)) if self.wait >= self.patience && epoch > 0 => {
                Verdict::Stop { best_epoch, best }
            }
            _ if first => Verdict::NewBest,
            _ => Verdict::Continue,
        }
    }

    /// The epoch whose weights to keep and its value; `None` before the first epoch.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best
    }

    /// Whether the integrator restores the best epoch's weights at the end
    /// (`restore_best_weights`).
    pub fn restore_best(&self) -> bool {
        self.restore_best
    }

    /// The monitored metric.
    pub fn monitor(&self) -> Monitor {
        self.monitor
    }

    /// The state between epochs, for a checkpoint: `[wait, reference, best_epoch, best_value]`,
    /// `best_epoch` being `−1` (and `best_value` NaN) before the first epoch. `reference` is
    /// never NaN; `best_value` may be (a first epoch whose value was NaN). Epoch numbers past
    /// 2^53 do not survive the trip (restoring them is refused).
    pub fn state(&self) -> Vec<f64> {
        let (epoch, value) = self.best.map_or((-1.0, f64::NAN), |(e, v)| (e as f64, v));
        vec![self.wait as f64, self.reference, epoch, value]
    }

    /// Restores an [`EarlyStopping::state`]; on error nothing changes.
    pub fn set_state(&mut self, state: &[f64]) -> Result<(), String> {
        const WHO: &str = "EarlyStopping";
        state_len(WHO, state, 4)?;
        let wait = state_count(WHO, "wait", state[0])?;
        if state[1].is_nan() {
            return Err(format!("{WHO} state: reference must not be NaN, got {}", state[1]));
        }
        let best = if state[2] == -1.0 {
            None
        } else {
            Some((state_count(WHO, "best epoch (or -1)", state[2])?, state[3]))
        };
        (self.wait, self.reference, self.best) = (wait, state[1], best);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule's rate against the value worked out by hand, to a few ulps (exactly at 0).
    fn check(s: Schedule, lr0: f64, step: u64, epoch: usize, want: f64) {
        let got = s.rate(lr0, step, epoch);
        assert!(
            (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
            "{s:?} at step {step}, epoch {epoch}: {got} != {want}"
        );
    }

    #[rustfmt::skip]
    #[test]
    fn rates() {
        let exp = Schedule::exponential(100, 0.5, false).unwrap();
        let stair = Schedule::exponential(100, 0.5, true).unwrap();
        let step = Schedule::step(3, 0.5).unwrap();
        let cos = Schedule::cosine(100, 0.0).unwrap();
        let cos_alpha = Schedule::cosine(100, 0.1).unwrap();
        check(Schedule::Constant, 1e-3, 0, 0, 1e-3);
        check(Schedule::Constant, 1e-3, 1 << 40, 500, 1e-3);
        // 0.5^(step/100): 1 at 0, 0.5 at decay_steps, 2^-2.5 = 1/(4√2) at 2.5 decay_steps.
        check(exp, 1.0, 0, 0, 1.0);
        check(exp, 1.0, 50, 0, std::f64::consts::FRAC_1_SQRT_2);
        check(exp, 1.0, 100, 0, 0.5);
        check(exp, 1.0, 250, 7, 0.1767766952966369);
        check(Schedule::exponential(1000, 0.96, false).unwrap(), 0.1, 1000, 0, 0.096);
        // Staircase: 0.5^floor(step/100).
        check(stair, 1.0, 0, 0, 1.0);
        check(stair, 1.0, 99, 0, 1.0);
        check(stair, 1.0, 100, 0, 0.5);
        check(stair, 1.0, 250, 0, 0.25);
        // 0.5^floor(epoch/3), whatever the step.
        check(step, 1.0, 0, 0, 1.0);
        check(step, 1.0, 1000, 2, 1.0);
        check(step, 1.0, 0, 3, 0.5);
        check(step, 1.0, 0, 9, 0.125);
        // (1 + cos(π·min(step, 100)/100))/2: 1, (1 + cos(π/4))/2, 1/2, 0, and 0 past the end.
        check(cos, 1.0, 0, 0, 1.0);
        check(cos, 1.0, 25, 0, 0.8535533905932737);
        check(cos, 1.0, 50, 0, 0.5);
        check(cos, 1.0, 100, 0, 0.0);
        check(cos, 1.0, 250, 0, 0.0);
        // 2·(0.9·(1 + cos(π·min(step, 100)/100))/2 + 0.1): 2, 1.1, 0.2, 0.2.
        check(cos_alpha, 2.0, 0, 0, 2.0);
        check(cos_alpha, 2.0, 25, 0, 1.7363961030678927);
        check(cos_alpha, 2.0, 50, 0, 1.1);
        check(cos_alpha, 2.0, 100, 0, 0.2);
        check(cos_alpha, 2.0, 1000, 0, 0.2);
        // Built by hand with invalid parameters: the rate stays lr0.
        check(Schedule::Step { every: 0, factor: 0.5 }, 1.0, 5, 5, 1.0);
        check(Schedule::Exponential { decay_steps: 0, rate: 0.5, staircase: true }, 1.0, 5, 5, 1.0);
        check(Schedule::Cosine { decay_steps: 0, alpha: 0.0 }, 1.0, 5, 5, 1.0);
        check(Schedule::Cosine { decay_steps: 10, alpha: f64::NAN }, 1.0, 5, 5, 1.0);
    }

    /// A schedule's description and whether it changes within an epoch.
    fn check_describe(s: Schedule, lr0: f64, per_step: bool, want: &str) {
        assert_eq!((s.per_step(), s.describe(lr0).as_str()), (per_step, want), "{s:?}");
    }

    #[rustfmt::skip]
    #[test]
    fn descriptions() {
        check_describe(Schedule::Constant, 0.01, false, "constant: lr 0.01");
        check_describe(Schedule::exponential(1000, 0.96, false).unwrap(), 0.001, true, "exponential decay: lr 0.001 × 0.96^(step/1000)");
        check_describe(Schedule::exponential(1000, 0.96, true).unwrap(), 0.001, true, "exponential decay: lr 0.001 × 0.96^floor(step/1000)");
        check_describe(Schedule::step(10, 0.5).unwrap(), 0.1, false, "step decay: lr 0.1 × 0.5^floor(epoch/10)");
        check_describe(Schedule::cosine(500, 0.1).unwrap(), 0.1, true, "cosine decay: lr 0.1 × ((1 − 0.1)·(1 + cos(π·min(step, 500)/500))/2 + 0.1)");
    }

    /// A monitor name: what it parses to, and its direction and canonical name when known.
    fn check_monitor(name: &str, want: Option<Monitor>, lower: bool, canonical: &str) {
        let m = Monitor::parse(name);
        assert_eq!(m, want, "{name}");
        if let Some(m) = m {
            assert_eq!(
                (m.lower_is_better(), m.name(), m.to_string().as_str()),
                (lower, canonical, canonical),
                "{name}"
            );
        }
    }

    #[rustfmt::skip]
    #[test]
    fn monitors() {
        check_monitor("val_loss", Some(Monitor::ValLoss), true, "val_loss");
        check_monitor("loss", Some(Monitor::Loss), true, "loss");
        check_monitor("val_accuracy", Some(Monitor::ValAccuracy), false, "val_accuracy");
        check_monitor("accuracy", Some(Monitor::Accuracy), false, "accuracy");
        check_monitor("val_mae", Some(Monitor::ValMae), true, "val_mae");
        check_monitor("mae", Some(Monitor::Mae), true, "mae");
        check_monitor("acc", Some(Monitor::Accuracy), false, "accuracy");
        check_monitor("val_acc", Some(Monitor::ValAccuracy), false, "val_accuracy");
        check_monitor("Loss", None, true, "");
        check_monitor("val_", None, true, "");
        check_monitor("", None, true, "");
        check_monitor("val_loss ", None, true, "");
    }

    /// A verdict as a short word: `best`, `-`, or `stop@EPOCH:VALUE`.
    fn word(v: Verdict) -> String {
        match v {
            Verdict::NewBest => "best".to_string(),
            Verdict::Continue => "-".to_string(),
            Verdict::Stop { best_epoch, best } => format!("stop@{best_epoch}:{best}"),
        }
    }

    /// The verdicts over a sequence of values (epochs 0, 1, ...), with and without restoring the
    /// best weights (the verdicts are the same; the flag is reported), and the best at the end.
    fn check_stopping(monitor: Monitor, patience: usize, min_delta: f64, values: &[f64], want: &str) {
        for restore in [false, true] {
            let mut es = EarlyStopping::new(monitor, patience, min_delta, restore).unwrap();
            let words: Vec<String> =
                values.iter().enumerate().map(|(e, &v)| word(es.observe(e, v))).collect();
            assert_eq!(
                words.join(" "),
                want,
                "{monitor} patience {patience} min_delta {min_delta} {values:?}"
            );
            assert_eq!((es.restore_best(), es.monitor()), (restore, monitor));
            let last_best = words.iter().rposition(|w| w == "best").map(|e| (e, values[e]));
            assert_eq!(format!("{:?}", es.best()), format!("{last_best:?}"));
        }
    }

    #[rustfmt::skip]
    #[test]
    fn early_stopping() {
        let inf = f64::INFINITY;
        let nan = f64::NAN;
        check_stopping(Monitor::ValLoss, 0, 0.0, &[], "");
        check_stopping(Monitor::ValLoss, 0, 0.0, &[1.0], "best");
        // Patience 0 stops at the first epoch that does not improve (an equal value does not).
        check_stopping(Monitor::ValLoss, 0, 0.0, &[1.0, 0.9, 0.95], "best best stop@1:0.9");
        check_stopping(Monitor::Loss, 0, 0.0, &[1.0, 1.0], "best stop@0:1");
        check_stopping(Monitor::Loss, 1, 0.0, &[1.0, 0.5, 0.6], "best best stop@1:0.5");
        // Patience 3: three epochs without improvement; an improvement resets the count.
        check_stopping(Monitor::ValLoss, 3, 0.0, &[3.0, 2.0, 2.5, 2.5, 1.5, 1.6, 1.7, 1.8], "best best - - best - - stop@4:1.5");
        // After a stop, each further epoch without improvement says stop again.
        check_stopping(Monitor::Loss, 1, 0.0, &[1.0, 1.0, 1.0, 0.5], "best stop@0:1 stop@0:1 best");
        // min_delta 0.25: improvement is value + 0.25 < best; 0.25 + 0.25 = 0.5 is not below the best 0.5.
        check_stopping(Monitor::ValLoss, 2, 0.25, &[1.0, 0.875, 0.5, 0.375, 0.25], "best - best - stop@2:0.5");
        check_stopping(Monitor::ValLoss, 1, 0.25, &[1.0, 0.75, 0.5], "best stop@0:1 best");
        // Max mode: higher is better; min_delta 0.125: value − 0.125 > best.
        check_stopping(Monitor::ValAccuracy, 1, 0.0, &[0.5, 0.75, 0.75], "best best stop@1:0.75");
        check_stopping(Monitor::Accuracy, 2, 0.125, &[0.5, 0.625, 0.75, 0.8125, 0.875], "best - best - stop@2:0.75");
        check_stopping(Monitor::ValMae, 0, 0.0, &[0.5, 0.75], "best stop@0:0.5");
        // NaN never improves; a first NaN is still the epoch kept, and epoch 0 never stops.
        check_stopping(Monitor::ValLoss, 1, 0.0, &[1.0, nan], "best stop@0:1");
        check_stopping(Monitor::ValLoss, 0, 0.0, &[nan, nan], "best stop@0:NaN");
        check_stopping(Monitor::ValLoss, 2, 0.0, &[nan, nan], "best stop@0:NaN");
        check_stopping(Monitor::ValLoss, 1, 0.0, &[nan, 2.0, 3.0], "best best stop@1:2");
        check_stopping(Monitor::ValAccuracy, 3, 0.0, &[nan, nan, 0.5, nan], "best - best -");
        // Infinities: -∞ is unbeatable in min mode; +∞ is never an improvement on +∞.
        check_stopping(Monitor::Loss, 0, 0.0, &[-inf, 0.0], "best stop@0:-inf");
        check_stopping(Monitor::Loss, 1, 0.0, &[inf, 1.0], "best best");
        check_stopping(Monitor::Loss, 0, 0.0, &[inf, inf], "best stop@0:inf");
    }

    /// The rate after each epoch of a plateau run from `lr0` (exact: the factors are binary).
    fn check_plateau(mut p: Plateau, lr0: f64, values: &[f64], want: &[f64]) {
        let mut lr = lr0;
        let got: Vec<f64> = values
            .iter()
            .map(|&v| {
                lr = p.end_epoch(v, lr);
                lr
            })
            .collect();
        assert_eq!(got, want, "{p:?} from {lr0} over {values:?}");
    }

    fn plateau(
        monitor: Monitor,
        factor: f64,
        patience: usize,
        min_delta: f64,
        cooldown: usize,
        min_lr: f64,
    ) -> Plateau {
        Plateau::new(monitor, factor, patience, min_delta, cooldown, min_lr).unwrap()
    }

    #[rustfmt::skip]
    #[test]
    fn reduce_on_plateau() {
        let nan = f64::NAN;
        let l = Monitor::ValLoss;
        // Patience 2: the first epoch improves; every second flat epoch halves the rate.
        check_plateau(plateau(l, 0.5, 2, 0.0, 0, 0.0), 1.0, &[1.0, 1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 0.5, 0.5, 0.25]);
        check_plateau(plateau(l, 0.5, 2, 0.0, 0, 0.0), 1.0, &[1.0, 1.0, 0.5, 0.5, 0.5], &[1.0, 1.0, 1.0, 1.0, 0.5]);
        check_plateau(plateau(l, 0.5, 0, 0.0, 0, 0.0), 1.0, &[1.0, 1.0, 1.0], &[1.0, 0.5, 0.25]);
        // Cooldown 2: the two epochs after a reduction do not count.
        check_plateau(plateau(l, 0.5, 1, 0.0, 2, 0.0), 1.0, &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &[1.0, 0.5, 0.5, 0.25, 0.25, 0.125]);
        // Keras decrements the cooldown counter before comparing, so cooldown c skips the c − 1
        // epochs after a reduction (cooldown 1 is cooldown 0); an improvement during cooldown
        // still becomes the best.
        check_plateau(plateau(l, 0.5, 1, 0.0, 1, 0.0), 1.0, &[1.0, 1.0, 0.5, 0.5, 0.5], &[1.0, 0.5, 0.5, 0.25, 0.125]);
        check_plateau(plateau(l, 0.5, 1, 0.0, 3, 0.0), 1.0, &[1.0, 1.0, 0.5, 0.25, 0.25, 0.25, 0.25], &[1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]);
        // min_lr clamps the reduction, and at the floor the rate stays.
        check_plateau(plateau(l, 0.5, 0, 0.0, 0, 0.3), 1.0, &[1.0, 1.0, 1.0, 1.0], &[1.0, 0.5, 0.3, 0.3]);
        check_plateau(plateau(l, 0.5, 0, 0.0, 0, 0.3), 0.3, &[1.0, 1.0, 1.0], &[0.3, 0.3, 0.3]);
        check_plateau(plateau(l, 0.5, 0, 0.0, 0, 0.5), 0.25, &[1.0, 1.0], &[0.25, 0.25]);
        // The floor is compared in f32: 0.1·0.1·0.1 is above 0.001 in f64 but not in f32.
        check_plateau(plateau(l, 0.1, 0, 0.0, 0, 1e-3), 0.1, &[1.0, 1.0, 1.0, 1.0], &[0.1, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002]);
        // min_delta 0.25: 0.875 does not improve on 1, 0.5 does, and then 0.125 on 0.5.
        check_plateau(plateau(l, 0.5, 1, 0.25, 0, 0.0), 1.0, &[1.0, 0.875, 0.5, 0.125], &[1.0, 0.5, 0.5, 0.5]);
        check_plateau(plateau(l, 0.5, 1, 0.25, 0, 0.0), 1.0, &[1.0, 0.875, 0.5, 0.25], &[1.0, 0.5, 0.5, 0.25]);
        // Max mode.
        check_plateau(plateau(Monitor::Accuracy, 0.5, 1, 0.0, 0, 0.0), 1.0, &[0.5, 0.75, 0.75], &[1.0, 1.0, 0.5]);
        check_plateau(plateau(Monitor::ValAccuracy, 0.5, 1, 0.125, 0, 0.0), 1.0, &[0.5, 0.625, 0.75], &[1.0, 0.5, 0.5]);
        // NaN never improves (a first NaN included).
        check_plateau(plateau(l, 0.5, 1, 0.0, 0, 0.0), 1.0, &[1.0, nan, nan], &[1.0, 0.5, 0.25]);
        check_plateau(plateau(l, 0.5, 0, 0.0, 0, 0.0), 1.0, &[nan, 2.0], &[0.5, 0.5]);
        // Keras' defaults: ten flat epochs after the first, then × 0.1.
        let defaults = plateau(l, Plateau::DEFAULT_FACTOR, Plateau::DEFAULT_PATIENCE, Plateau::DEFAULT_MIN_DELTA, Plateau::DEFAULT_COOLDOWN, Plateau::DEFAULT_MIN_LR);
        check_plateau(defaults, 1.0, &[1.0; 12], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1]);
    }

    fn bits(xs: &[f64]) -> Vec<u64> {
        xs.iter().map(|x| x.to_bits()).collect()
    }

    /// EarlyStopping stopped after each prefix, its state restored into a fresh one that
    /// continues: the same verdicts, and the same final state bit for bit, as an uninterrupted run.
    fn check_stopping_resume(fresh: impl Fn() -> EarlyStopping, values: &[f64]) {
        let mut whole = fresh();
        let want: Vec<String> = values.iter().enumerate().map(|(e, &v)| word(whole.observe(e, v))).collect();
        for cut in 0..=values.len() {
            let mut first = fresh();
            let mut got: Vec<String> =
                values[..cut].iter().enumerate().map(|(e, &v)| word(first.observe(e, v))).collect();
            let mut second = fresh();
            second.set_state(&first.state()).unwrap();
            assert_eq!(bits(&second.state()), bits(&first.state()), "cut {cut}");
            got.extend(values[cut..].iter().enumerate().map(|(e, &v)| word(second.observe(cut + e, v))));
            assert_eq!(got, want, "cut {cut} of {values:?}");
            assert_eq!(bits(&second.state()), bits(&whole.state()), "cut {cut} of {values:?}");
        }
    }

    /// The same for a plateau: the rates, and the final state.
    fn check_plateau_resume(fresh: impl Fn() -> Plateau, values: &[f64]) {
        let run = |p: &mut Plateau, lr: &mut f64, vs: &[f64]| -> Vec<f64> {
            vs.iter()
                .map(|&v| {
                    *lr = p.end_epoch(v, *lr);
                    *lr
                })
                .collect()
        };
        let mut whole = fresh();
        let want = run(&mut whole, &mut 1.0, values);
        for cut in 0..=values.len() {
            let (mut first, mut lr) = (fresh(), 1.0);
            let mut got = run(&mut first, &mut lr, &values[..cut]);
            let mut second = fresh();
            second.set_state(&first.state()).unwrap();
            assert_eq!(bits(&second.state()), bits(&first.state()), "cut {cut}");
            got.extend(run(&mut second, &mut lr, &values[cut..]));
            assert_eq!(bits(&got), bits(&want), "cut {cut} of {values:?}");
            assert_eq!(bits(&second.state()), bits(&whole.state()), "cut {cut} of {values:?}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn state_round_trips() {
        let nan = f64::NAN;
        check_stopping_resume(|| EarlyStopping::new(Monitor::ValLoss, 3, 0.0, true).unwrap(), &[3.0, 2.0, 2.5, 2.5, 1.5, 1.6, 1.7, 1.8]);
        check_stopping_resume(|| EarlyStopping::new(Monitor::ValLoss, 2, 0.25, false).unwrap(), &[nan, 1.0, 0.875, 0.5, nan, 0.375, 0.25]);
        check_stopping_resume(|| EarlyStopping::new(Monitor::Accuracy, 1, 0.0, true).unwrap(), &[nan, nan, 0.5, 0.5]);
        check_plateau_resume(|| plateau(Monitor::ValLoss, 0.5, 1, 0.0, 2, 0.1), &[1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        check_plateau_resume(|| plateau(Monitor::Accuracy, 0.5, 2, 0.125, 1, 0.0), &[nan, 0.5, 0.5, 0.75, 0.5, 0.5, 0.5, 0.5]);
    }

    /// A refused state: the message names the bad number, and the object is unchanged.
    fn check_bad_state<T: Clone + PartialEq + fmt::Debug>(
        mut obj: T,
        set: impl Fn(&mut T, &[f64]) -> Result<(), String>,
        state: &[f64],
        needle: &str,
    ) {
        let before = obj.clone();
        let err = set(&mut obj, state).unwrap_err();
        assert!(err.contains(needle), "{state:?}: {err}");
        assert_eq!(format!("{obj:?}"), format!("{before:?}"));
    }

    #[rustfmt::skip]
    #[test]
    fn bad_states() {
        let nan = f64::NAN;
        let mut es = EarlyStopping::new(Monitor::ValLoss, 2, 0.0, false).unwrap();
        es.observe(0, 1.0);
        let es_set = |o: &mut EarlyStopping, s: &[f64]| o.set_state(s);
        check_bad_state(es.clone(), es_set, &[], "expected 4 numbers, got 0");
        check_bad_state(es.clone(), es_set, &[0.0, 1.0, 0.0], "expected 4 numbers, got 3");
        check_bad_state(es.clone(), es_set, &[-1.0, 1.0, 0.0, 1.0], "wait must be a whole number in 0..=2^53, got -1");
        check_bad_state(es.clone(), es_set, &[0.5, 1.0, 0.0, 1.0], "got 0.5");
        check_bad_state(es.clone(), es_set, &[nan, 1.0, 0.0, 1.0], "wait must be a whole number in 0..=2^53, got NaN");
        check_bad_state(es.clone(), es_set, &[1e300, 1.0, 0.0, 1.0], "wait must be a whole number in 0..=2^53");
        check_bad_state(es.clone(), es_set, &[0.0, nan, 0.0, 1.0], "reference must not be NaN");
        check_bad_state(es.clone(), es_set, &[0.0, 1.0, -2.0, 1.0], "best epoch (or -1) must be a whole number in 0..=2^53, got -2");
        check_bad_state(es.clone(), es_set, &[0.0, 1.0, 1.5, 1.0], "got 1.5");
        let mut p = plateau(Monitor::ValLoss, 0.5, 2, 0.0, 1, 0.0);
        p.end_epoch(1.0, 1.0);
        let p_set = |o: &mut Plateau, s: &[f64]| o.set_state(s);
        check_bad_state(p.clone(), p_set, &[1.0, 0.0, 0.0, 0.0], "expected 3 numbers, got 4");
        check_bad_state(p.clone(), p_set, &[nan, 0.0, 0.0], "best must not be NaN");
        check_bad_state(p.clone(), p_set, &[1.0, -0.0001, 0.0], "wait must be a whole number in 0..=2^53, got -0.0001");
        check_bad_state(p.clone(), p_set, &[1.0, 0.0, f64::INFINITY], "cooldown counter must be a whole number in 0..=2^53, got inf");
        // The states nothing has happened to yet are accepted.
        assert_eq!(bits(&EarlyStopping::new(Monitor::Loss, 0, 0.0, false).unwrap().state()), bits(&[0.0, f64::INFINITY, -1.0, nan]));
        assert_eq!(Plateau::new(Monitor::Accuracy, 0.1, 0, 0.0, 0, 0.0).unwrap().state(), [f64::NEG_INFINITY, 0.0, 0.0]);
        es.set_state(&[0.0, f64::INFINITY, -1.0, nan]).unwrap();
        assert_eq!(es.best(), None);
    }

    /// A constructor's refusal, naming the bad value.
    fn check_err<T: fmt::Debug>(r: Result<T, String>, want: &str) {
        assert_eq!(r.unwrap_err(), want);
    }

    #[rustfmt::skip]
    #[test]
    fn constructor_errors() {
        let l = Monitor::ValLoss;
        check_err(Plateau::new(l, 1.0, 10, 1e-4, 0, 0.0), "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got 1");
        check_err(Plateau::new(l, 1.5, 10, 1e-4, 0, 0.0), "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got 1.5");
        check_err(Plateau::new(l, 0.0, 10, 1e-4, 0, 0.0), "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got 0");
        check_err(Plateau::new(l, -0.1, 10, 1e-4, 0, 0.0), "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got -0.1");
        check_err(Plateau::new(l, f64::NAN, 10, 1e-4, 0, 0.0), "ReduceLROnPlateau: factor must be in (0, 1) (new lr = lr × factor), got NaN");
        check_err(Plateau::new(l, 0.1, 10, -1e-4, 0, 0.0), "ReduceLROnPlateau: min_delta must be finite and at least 0, got -0.0001");
        check_err(Plateau::new(l, 0.1, 10, f64::NAN, 0, 0.0), "ReduceLROnPlateau: min_delta must be finite and at least 0, got NaN");
        check_err(Plateau::new(l, 0.1, 10, 1e-4, 0, -1.0), "ReduceLROnPlateau: min_lr must be finite and at least 0, got -1");
        check_err(Plateau::new(l, 0.1, 10, 1e-4, 0, f64::INFINITY), "ReduceLROnPlateau: min_lr must be finite and at least 0, got inf");
        check_err(EarlyStopping::new(l, 0, -0.5, false), "EarlyStopping: min_delta must be finite and at least 0, got -0.5");
        check_err(EarlyStopping::new(l, 0, f64::INFINITY, true), "EarlyStopping: min_delta must be finite and at least 0, got inf");
        check_err(Schedule::exponential(0, 0.5, false), "exponential decay: decay_steps must be at least 1, got 0");
        check_err(Schedule::exponential(10, 0.0, false), "exponential decay: rate must be positive and finite, got 0");
        check_err(Schedule::exponential(10, -0.5, true), "exponential decay: rate must be positive and finite, got -0.5");
        check_err(Schedule::exponential(10, f64::NAN, true), "exponential decay: rate must be positive and finite, got NaN");
        check_err(Schedule::exponential(10, f64::INFINITY, true), "exponential decay: rate must be positive and finite, got inf");
        check_err(Schedule::step(0, 0.5), "step decay: every must be at least 1 epoch, got 0");
        check_err(Schedule::step(5, 0.0), "step decay: factor must be in (0, 1), got 0");
        check_err(Schedule::step(5, 1.0), "step decay: factor must be in (0, 1), got 1");
        check_err(Schedule::step(5, 2.0), "step decay: factor must be in (0, 1), got 2");
        check_err(Schedule::cosine(0, 0.0), "cosine decay: decay_steps must be at least 1, got 0");
        check_err(Schedule::cosine(10, -0.1), "cosine decay: alpha must be in [0, 1], got -0.1");
        check_err(Schedule::cosine(10, 1.5), "cosine decay: alpha must be in [0, 1], got 1.5");
        check_err(Schedule::cosine(10, f64::NAN), "cosine decay: alpha must be in [0, 1], got NaN");
        // The edges that are accepted.
        assert!(Schedule::cosine(1, 0.0).is_ok() && Schedule::cosine(1, 1.0).is_ok());
        assert!(Schedule::exponential(1, 1.5, false).is_ok() && Schedule::Constant.validate().is_ok());
        assert!(Plateau::new(l, 0.999, 0, 0.0, 0, 0.0).is_ok() && EarlyStopping::new(l, 0, 0.0, false).is_ok());
    }
}
