//! Keras's training callbacks: EarlyStopping, ModelCheckpoint and ReduceLROnPlateau as pure
//! decisions over the history of a monitored metric (so a resumed run decides exactly as an
//! uninterrupted one: the history is their whole state), TerminateOnNaN, and LearningRateScheduler
//! as an epoch table.

use std::time::Duration;

use super::config::{MAX_EPOCHS, Produced, Range, check_f64, check_int};
use super::spec::FieldError;

/// What one epoch produced, as the per-epoch hook and the metrics stream see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLogs {
    /// 0-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples (dropout on, weights changing, as Keras reports).
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// The optimizer's learning rate as read at the end of the epoch, before callbacks change it
    /// (Keras's `float(optimizer.learning_rate)`): the rate the epoch trained with, or under a
    /// schedule the rate at the epoch's final step count.
    pub learning_rate: f64,
    pub duration: Duration,
}

impl EpochLogs {
    /// The value of a metric by its Keras name (`loss`, `accuracy`/`acc`, `val_loss`, `val_accuracy`/`val_acc`).
    pub fn get(&self, metric: &str) -> Option<f64> {
        match metric {
            "loss" => Some(self.loss),
            "accuracy" | "acc" => self.accuracy,
            "val_loss" => self.val_loss,
            "val_accuracy" | "val_acc" => self.val_accuracy,
            "learning_rate" => Some(self.learning_rate),
            _ => None,
        }
    }
}

/// Whether a monitored metric should go down or up; `Auto` decides from its name as Keras does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Auto,
    Min,
    Max,
}

impl Mode {
    /// Keras's name (`auto`, `min`, `max`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }

    /// A mode by its Keras name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" => Some(Mode::Auto),
            "min" => Some(Mode::Min),
            "max" => Some(Mode::Max),
            _ => None,
        }
    }

    /// `true` if larger values are better for `monitor`.
    pub fn maximizes(self, monitor: &str) -> bool {
        match self {
            Mode::Min => false,
            Mode::Max => true,
            Mode::Auto => monitor.contains("acc"),
        }
    }
}

/// Keras's `EarlyStopping` (without `baseline` and `start_from_epoch`).
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub monitor: String,
    /// Smallest change that counts as an improvement (its sign is ignored, as in Keras).
    pub min_delta: f64,
    /// Epochs without improvement to wait before stopping.
    pub patience: usize,
    pub mode: Mode,
    /// At the end of training, go back to the weights of the best epoch.
    pub restore_best_weights: bool,
}

impl Default for EarlyStopping {
    /// Keras's defaults: `val_loss`, `min_delta` 0, `patience` 0, `mode` auto, no restoring.
    fn default() -> Self {
        EarlyStopping {
            monitor: "val_loss".into(),
            min_delta: 0.0,
            patience: 0,
            mode: Mode::Auto,
            restore_best_weights: false,
        }
    }
}

/// Where an early-stopping history stands after its last epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStoppingDecision {
    /// 0-based epoch with the best value so far, if any value was seen.
    pub best_epoch: Option<usize>,
    pub best: Option<f64>,
    /// Epochs since the last improvement.
    pub wait: usize,
    /// Whether training stops after the last epoch of the history.
    pub stop: bool,
}

impl EarlyStopping {
    fn is_improvement(&self, value: f64, reference: Option<f64>) -> bool {
        let delta = self.min_delta.abs();
        match reference {
            None => true,
            Some(r) if self.mode.maximizes(&self.monitor) => value - delta > r,
            Some(r) => value + delta < r,
        }
    }

    /// Replays Keras's `on_epoch_end` over the monitored values of epochs 0, 1, ... (NaN values are
    /// never an improvement).
    pub fn decide(&self, history: &[f64]) -> EarlyStoppingDecision {
        let mut d = EarlyStoppingDecision {
            best_epoch: None,
            best: None,
            wait: 0,
            stop: false,
        };
        for (epoch, &value) in history.iter().enumerate() {
            d.wait += 1;
            d.stop = false;
            if !value.is_nan() && self.is_improvement(value, d.best) {
                d.best = Some(value);
                d.best_epoch = Some(epoch);
                d.wait = 0;
                continue;
            }
            if d.wait >= self.patience && epoch > 0 {
                d.stop = true;
            }
        }
        d
    }
}

/// Keras's `ModelCheckpoint` decision: whether to save after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCheckpoint {
    pub monitor: String,
    /// Save only when the monitored value beats every earlier one; otherwise save every epoch.
    pub save_best_only: bool,
    pub mode: Mode,
}

impl Default for ModelCheckpoint {
    /// Keras's defaults: `val_loss`, saving every epoch, mode auto.
    fn default() -> Self {
        ModelCheckpoint {
            monitor: "val_loss".into(),
            save_best_only: false,
            mode: Mode::Auto,
        }
    }
}

impl ModelCheckpoint {
    /// Whether to save after the last epoch of `history` (the monitored values of epochs 0, 1, ...).
    pub fn should_save(&self, history: &[f64]) -> bool {
        let Some((&last, earlier)) = history.split_last() else {
            return false;
        };
        if !self.save_best_only {
            return true;
        }
        if last.is_nan() {
            return false;
        }
        let max = self.mode.maximizes(&self.monitor);
        earlier
            .iter()
            .filter(|v| !v.is_nan())
            .all(|&v| if max { last > v } else { last < v })
    }
}

/// Keras's `ReduceLROnPlateau`: multiply the learning rate by `factor` once the monitored metric
/// has not improved for `patience` epochs, then wait `cooldown` epochs before counting again.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    pub monitor: String,
    /// In (0, 1): the new rate is `max(rate * factor, min_lr)`.
    pub factor: f64,
    /// Epochs without improvement before a reduction.
    pub patience: usize,
    /// Smallest change that counts as an improvement (its sign is ignored, as in Keras).
    pub min_delta: f64,
    /// Epochs after a reduction during which no epoch counts as waiting. As in Keras, the count
    /// goes down before each epoch is looked at, so `cooldown` c rests c - 1 epochs.
    pub cooldown: usize,
    /// The rate is never reduced below this.
    pub min_lr: f64,
    pub mode: Mode,
}

impl Default for ReduceLrOnPlateau {
    /// Keras's defaults: `val_loss`, factor 0.1, patience 10, min_delta 1e-4, no cooldown, min_lr 0.
    fn default() -> Self {
        ReduceLrOnPlateau {
            monitor: "val_loss".into(),
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            mode: Mode::Auto,
        }
    }
}

/// Where a plateau history stands after its last epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauDecision {
    pub best: Option<f64>,
    /// Epochs counted as waiting since the last improvement or reduction.
    pub wait: usize,
    /// Cooldown epochs left.
    pub cooldown_counter: usize,
    /// The learning rate to set after the last epoch, when it is reduced.
    pub new_lr: Option<f32>,
}

impl ReduceLrOnPlateau {
    fn is_improvement(&self, value: f64, best: Option<f64>) -> bool {
        let delta = self.min_delta.abs();
        match best {
            None => true,
            Some(b) if self.mode.maximizes(&self.monitor) => value - delta > b,
            Some(b) => value + delta < b,
        }
    }

    /// Replays Keras's `on_epoch_end` over the monitored values of epochs 0, 1, ... and the learning
    /// rate each epoch trained with (NaN values are never an improvement).
    pub fn decide(&self, values: &[f64], learning_rates: &[f64]) -> PlateauDecision {
        let mut d = PlateauDecision {
            best: None,
            wait: 0,
            cooldown_counter: 0,
            new_lr: None,
        };
        for (&value, &lr) in values.iter().zip(learning_rates) {
            d.new_lr = None;
            if d.cooldown_counter > 0 {
                d.cooldown_counter -= 1;
                d.wait = 0;
            }
            if !value.is_nan() && self.is_improvement(value, d.best) {
                d.best = Some(value);
                d.wait = 0;
            } else if d.cooldown_counter == 0 {
                d.wait += 1;
                // Keras reads the float32 variable into a Python float, compares it with min_lr as
                // float32, computes in float64 and stores the result back as float32.
                if d.wait >= self.patience && lr > self.min_lr as f32 as f64 {
                    d.new_lr = Some((lr * self.factor).max(self.min_lr) as f32);
                    d.cooldown_counter = self.cooldown;
                    d.wait = 0;
                }
            }
        }
        d
    }
}

/// Keras's `TerminateOnNaN`: end training at the first batch whose loss is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminateOnNan {
    /// Fail the run with the divergence error instead of ending it as finished (Keras 3's
    /// `raise_error`); without this callback a non-finite loss fails the run as well.
    pub raise_error: bool,
}

/// Keras's `LearningRateScheduler` with the schedule given as a table: at the start of each listed
/// epoch the learning rate is set to its value; other epochs keep the current rate (Keras's
/// `schedule(epoch, lr)` returning `lr`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LearningRateScheduler {
    /// `(epoch, learning rate)`, 0-based epochs in increasing order.
    pub schedule: Vec<(usize, f64)>,
}

impl LearningRateScheduler {
    /// The rate to set at the start of `epoch`, if the table lists it.
    pub fn rate_at(&self, epoch: usize) -> Option<f64> {
        self.schedule
            .binary_search_by_key(&epoch, |&(e, _)| e)
            .ok()
            .map(|i| self.schedule[i].1)
    }
}

/// A Keras callback; they run in their listed order.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    EarlyStopping(EarlyStopping),
    ModelCheckpoint(ModelCheckpoint),
    ReduceLrOnPlateau(ReduceLrOnPlateau),
    TerminateOnNan(TerminateOnNan),
    LearningRateScheduler(LearningRateScheduler),
}

impl Callback {
    /// The request's `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            Callback::EarlyStopping(_) => "early_stopping",
            Callback::ModelCheckpoint(_) => "model_checkpoint",
            Callback::ReduceLrOnPlateau(_) => "reduce_lr_on_plateau",
            Callback::TerminateOnNan(_) => "terminate_on_nan",
            Callback::LearningRateScheduler(_) => "learning_rate_scheduler",
        }
    }

    /// Whether a second one would contradict the first (every kind but `terminate_on_nan`).
    pub(crate) fn unique(&self) -> bool {
        match self {
            Callback::EarlyStopping(_)
            | Callback::ModelCheckpoint(_)
            | Callback::ReduceLrOnPlateau(_)
            | Callback::LearningRateScheduler(_) => true,
            Callback::TerminateOnNan(_) => false,
        }
    }

    /// Whether it sets the optimizer's learning rate, which a schedule does not allow.
    pub(crate) fn sets_learning_rate(&self) -> bool {
        match self {
            Callback::ReduceLrOnPlateau(_) | Callback::LearningRateScheduler(_) => true,
            Callback::EarlyStopping(_) | Callback::ModelCheckpoint(_) | Callback::TerminateOnNan(_) => false,
        }
    }

    /// The rules on this callback's own arguments, each error naming `path.<argument>`.
    pub(crate) fn field_errors(&self, path: &str, metrics: &Produced, errors: &mut Vec<FieldError>) {
        let f = |name: &str| format!("{path}.{name}");
        let monitor = |m: &str, errors: &mut Vec<FieldError>| {
            if let Some(msg) = metrics.monitor_error(m) {
                errors.push(FieldError::new(f("monitor"), msg));
            }
        };
        let max_epochs = MAX_EPOCHS as u64;
        match self {
            Callback::EarlyStopping(e) => {
                monitor(&e.monitor, errors);
                check_f64(
                    errors,
                    &f("min_delta"),
                    e.min_delta,
                    Range::closed(-1e30, 1e30),
                    false,
                );
                check_int(errors, &f("patience"), e.patience as u64, 0, max_epochs);
            }
            Callback::ModelCheckpoint(c) => monitor(&c.monitor, errors),
            Callback::ReduceLrOnPlateau(r) => {
                monitor(&r.monitor, errors);
                // Keras refuses factor >= 1; 0 or less would zero or negate the rate.
                check_f64(errors, &f("factor"), r.factor, Range::open(0.0, 1.0), false);
                check_int(errors, &f("patience"), r.patience as u64, 0, max_epochs);
                check_f64(
                    errors,
                    &f("min_delta"),
                    r.min_delta,
                    Range::closed(-1e30, 1e30),
                    false,
                );
                check_int(errors, &f("cooldown"), r.cooldown as u64, 0, max_epochs);
                check_f64(errors, &f("min_lr"), r.min_lr, Range::SCHEDULED_RATE, true);
            }
            Callback::TerminateOnNan(_) => {}
            Callback::LearningRateScheduler(s) => {
                if s.schedule.is_empty() || s.schedule.len() > MAX_EPOCHS {
                    errors.push(FieldError::new(
                        f("schedule"),
                        format!("must list 1 to {MAX_EPOCHS} epochs"),
                    ));
                    return;
                }
                for (i, &(epoch, lr)) in s.schedule.iter().enumerate() {
                    let entry = format!("{path}.schedule[{i}]");
                    if i > 0 && epoch <= s.schedule[i - 1].0 {
                        errors.push(FieldError::new(
                            format!("{entry}.epoch"),
                            "must be larger than the epoch before it (epochs are listed in increasing order)",
                        ));
                    } else {
                        check_int(errors, &format!("{entry}.epoch"), epoch as u64, 0, max_epochs - 1);
                    }
                    check_f64(
                        errors,
                        &format!("{entry}.learning_rate"),
                        lr,
                        Range::LEARNING_RATE,
                        true,
                    );
                }
            }
        }
    }
}
