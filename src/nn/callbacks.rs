//! EarlyStopping and ModelCheckpoint as pure decisions over the history of a monitored metric, so a
//! resumed run decides exactly as an uninterrupted one (the history is its whole state).

use std::time::Duration;

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
