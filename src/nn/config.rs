//! How to train (Keras's `compile` and `fit` arguments) and the one check of every value in it.
//!
//! [`TrainConfig::check`] is the only place the rules on training parameters live: the HTTP layer
//! calls it before queueing a job, the trainer calls it before training. Each broken rule names its
//! field by the path a job request writes it at (`compile.optimizer.learning_rate`, `fit.epochs`,
//! `callbacks[1].factor`), so a client, or a search varying those fields, can map it back.

use super::callbacks::{Callback, EarlyStopping, ModelCheckpoint};
use super::loss::Loss;
use super::optim::Optimizer;
use super::spec::FieldError;

/// Epochs a run may ask for.
pub const MAX_EPOCHS: usize = 100_000;
/// Largest batch size (larger ones are clipped to the data anyway, but the buffers are sized by it).
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// More threads than this is a configuration mistake, not a machine.
pub const MAX_THREADS: usize = 1024;
/// Largest step count a schedule may name; far beyond any run, and exact in f64.
pub const MAX_STEPS: u64 = 1_000_000_000_000;

/// Paths of the fields as a job request writes them.
pub mod path {
    pub const OPTIMIZER: &str = "compile.optimizer";
    pub const METRICS: &str = "compile.metrics";
    pub const EPOCHS: &str = "fit.epochs";
    pub const BATCH_SIZE: &str = "fit.batch_size";
    pub const VALIDATION_SPLIT: &str = "validation.split";
    pub const THREADS: &str = "threads";

    /// `callbacks[i]`.
    pub fn callback(i: usize) -> String {
        format!("callbacks[{i}]")
    }
}

/// How to train: Keras's `compile` and `fit` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub loss: Loss,
    pub optimizer: Optimizer,
    /// Report accuracy (Keras `metrics=["accuracy"]`); only for classification losses.
    pub accuracy: bool,
    pub epochs: usize,
    pub batch_size: usize,
    /// Reshuffle the training samples before each epoch.
    pub shuffle: bool,
    /// Seeds shuffling and dropout; with the model seed it fixes the whole run.
    pub seed: u64,
    /// Keras callbacks, run in this order at the end of each epoch.
    pub callbacks: Vec<Callback>,
    /// Threads for this trainer's batches and validation (1 by default; 0 = every core). The first
    /// dense layer's work is split across persistent workers owned by the trainer; results are
    /// deterministic for a given count (and, with the GEMM backend used, equal across counts).
    /// Measured with `benches/compare.sh` (2 cores, book model, quiet machine, 3 rounds): batch 256
    /// takes 0.18 s/epoch with 2 threads (rounds 0.18-0.25) against 0.29 with 1; batch 32 a median
    /// 0.28 with 2 threads but 0.54 in one round of three (each batch needs two hand-offs, which
    /// stall whenever a thread loses its core), against a steady 0.34-0.35 with 1. So: 2 threads for
    /// large batches with cores to spare; 1 thread for small batches when steadiness matters or the
    /// machine is shared with other jobs.
    pub threads: usize,
}

impl TrainConfig {
    /// Keras's `fit` defaults: 1 epoch, batch size 32, shuffling, no callbacks; seed 0; accuracy
    /// reported whenever the loss has it.
    pub fn new(loss: Loss, optimizer: Optimizer) -> Self {
        TrainConfig {
            loss,
            optimizer,
            accuracy: loss.has_accuracy(),
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            callbacks: Vec::new(),
            threads: 1,
        }
    }

    /// The early-stopping callback, if any.
    pub fn early_stopping(&self) -> Option<&EarlyStopping> {
        self.callbacks.iter().find_map(|c| match c {
            Callback::EarlyStopping(e) => Some(e),
            _ => None,
        })
    }

    /// The model-checkpoint callback, if any.
    pub fn checkpoint(&self) -> Option<&ModelCheckpoint> {
        self.callbacks.iter().find_map(|c| match c {
            Callback::ModelCheckpoint(c) => Some(c),
            _ => None,
        })
    }

    /// Checks every value against its rule (finite, in range, consistent with the rest); lists
    /// every broken one. `validation` says whether validation data will be given, which `val_*`
    /// monitors need.
    pub fn check(&self, validation: bool) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        self.optimizer.field_errors(path::OPTIMIZER, &mut errors);
        if self.accuracy && !self.loss.has_accuracy() {
            errors.push(FieldError::new(
                path::METRICS,
                format!("accuracy is not defined for loss {}", self.loss.as_str()),
            ));
        }
        check_int(
            &mut errors,
            path::EPOCHS,
            self.epochs as u64,
            1,
            MAX_EPOCHS as u64,
        );
        check_int(
            &mut errors,
            path::BATCH_SIZE,
            self.batch_size as u64,
            1,
            MAX_BATCH_SIZE as u64,
        );
        if self.threads > MAX_THREADS {
            errors.push(FieldError::new(
                path::THREADS,
                format!("must be at most {MAX_THREADS} (0 = every core)"),
            ));
        }
        let metrics = Produced {
            validation,
            accuracy: self.accuracy,
        };
        let schedule = self.optimizer.learning_rate().constant().is_none();
        for (i, cb) in self.callbacks.iter().enumerate() {
            let p = path::callback(i);
            cb.field_errors(&p, &metrics, &mut errors);
            let first = self.callbacks.iter().position(|c| c.name() == cb.name());
            if cb.unique() && first != Some(i) {
                errors.push(FieldError::new(
                    format!("{p}.type"),
                    format!("only one {} is allowed", cb.name()),
                ));
            }
            if schedule && cb.sets_learning_rate() {
                errors.push(FieldError::new(
                    format!("{p}.type"),
                    format!(
                        "{} changes the optimizer's learning rate, which a schedule in \
                         {}.learning_rate fixes; give a constant learning_rate (Keras refuses \
                         this combination too)",
                        cb.name(),
                        path::OPTIMIZER
                    ),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// The metrics a run produces, which callback monitors must be among.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub validation: bool,
    pub accuracy: bool,
}

impl Produced {
    /// Metric names a monitor may use.
    pub const KNOWN: [&'static str; 6] = ["loss", "accuracy", "acc", "val_loss", "val_accuracy", "val_acc"];

    /// Why `monitor` cannot be watched in this run, if it cannot.
    pub fn monitor_error(&self, monitor: &str) -> Option<String> {
        let known = Self::KNOWN;
        if !known.contains(&monitor) {
            Some(format!("unknown metric {monitor:?}; use one of {known:?}"))
        } else if monitor.starts_with("val_") && !self.validation {
            Some(format!(
                "{monitor} needs validation data (validation.split or validation.dataset_id)"
            ))
        } else if monitor.contains("acc") && !self.accuracy {
            Some(format!(
                "{monitor} is only computed with metrics [\"accuracy\"] and a classification loss"
            ))
        } else {
            None
        }
    }
}

/// The fraction of the samples held out by Keras's `validation_split`: in (0, 1).
pub fn validation_split_errors(fraction: f64) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_f64(
        &mut errors,
        path::VALIDATION_SPLIT,
        fraction,
        Range::open(0.0, 1.0),
        false,
    );
    errors
}

/// An interval of allowed values; open or closed at each end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub min_open: bool,
    pub max: f64,
    pub max_open: bool,
}

impl Range {
    /// A learning rate the optimizer starts from or is set to: (0, 1e6].
    pub const LEARNING_RATE: Range = Range::new_open_closed(0.0, 1e6);
    /// A learning rate a schedule may reach on its way: [0, 1e6].
    pub const SCHEDULED_RATE: Range = Range::closed(0.0, 1e6);

    pub const fn closed(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: false,
            max,
            max_open: false,
        }
    }

    pub const fn open(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: true,
            max,
            max_open: true,
        }
    }

    /// `(min, max]`.
    pub const fn new_open_closed(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: true,
            max,
            max_open: false,
        }
    }

    /// `[min, max)`.
    pub const fn closed_open(min: f64, max: f64) -> Range {
        Range {
            min,
            min_open: false,
            max,
            max_open: true,
        }
    }

    /// Whether `v` is a finite number inside the interval.
    pub fn contains(&self, v: f64) -> bool {
        v.is_finite()
            && (if self.min_open {
                v > self.min
            } else {
                v >= self.min
            })
            && (if self.max_open {
                v < self.max
            } else {
                v <= self.max
            })
    }
}

impl std::fmt::Display for Range {
    /// `(0, 1e6]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.min_open { '(' } else { '[' },
            fmt_num(self.min),
            fmt_num(self.max),
            if self.max_open { ')' } else { ']' }
        )
    }
}

/// A number as people write bounds: `0.5`, `1e6`, `1e-7`.
fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Pushes an error unless `v` is a finite number in `range`; with `as_f32`, also unless the
/// 32-bit float training computes with keeps it (zero, or a normal float: smaller ones would be
/// flushed to zero).
pub(crate) fn check_f64(errors: &mut Vec<FieldError>, path: &str, v: f64, range: Range, as_f32: bool) {
    if !range.contains(v) {
        errors.push(FieldError::new(
            path,
            format!("must be a finite number in {range}"),
        ));
    } else if as_f32 && v != 0.0 && !(v as f32).is_normal() {
        errors.push(FieldError::new(
            path,
            format!(
                "is too small for the 32-bit floats training computes in (the smallest is {:e})",
                f32::MIN_POSITIVE
            ),
        ));
    }
}

/// Pushes an error unless `min <= v <= max`.
pub(crate) fn check_int(errors: &mut Vec<FieldError>, path: &str, v: u64, min: u64, max: u64) {
    if !(min..=max).contains(&v) {
        errors.push(FieldError::new(
            path,
            format!("must be an integer in {min}..={max}"),
        ));
    }
}

/// A step count (of optimizer updates): `min..=MAX_STEPS`.
pub(crate) fn check_steps(errors: &mut Vec<FieldError>, path: &str, v: u64, min: u64) {
    check_int(errors, path, v, min, MAX_STEPS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::callbacks::{ReduceLrOnPlateau, TerminateOnNan};
    use crate::nn::schedule::{LearningRate, Schedule};

    fn fields(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.expect_err("invalid").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn ranges_print_as_intervals() {
        assert_eq!(Range::LEARNING_RATE.to_string(), "(0, 1e6]");
        assert_eq!(Range::closed_open(0.0, 1.0).to_string(), "[0, 1)");
        assert_eq!(Range::closed(1e-7, 0.5).to_string(), "[1e-7, 0.5]");
    }

    #[test]
    fn huge_tiny_and_non_finite_values_are_refused_with_their_paths() {
        let mut cfg = TrainConfig::new(
            Loss::MeanSquaredError,
            Optimizer::Adam {
                learning_rate: LearningRate::Constant(1e308),
                beta_1: f64::NAN,
                beta_2: 1.0,
                epsilon: 1e-40,
            },
        );
        cfg.epochs = 0;
        cfg.batch_size = MAX_BATCH_SIZE + 1;
        cfg.accuracy = true;
        assert_eq!(
            fields(cfg.check(false)),
            [
                "compile.optimizer.learning_rate",
                "compile.optimizer.beta_1",
                "compile.optimizer.beta_2",
                "compile.optimizer.epsilon",
                "compile.metrics",
                "fit.epochs",
                "fit.batch_size"
            ]
        );
        let ok = TrainConfig::new(Loss::MeanSquaredError, Optimizer::adam_default());
        assert_eq!(ok.check(false), Ok(()));
    }

    #[test]
    fn callbacks_that_set_the_learning_rate_need_a_constant_one() {
        let schedule = LearningRate::Schedule(Schedule::ExponentialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 100,
            decay_rate: 0.9,
            staircase: false,
        });
        let mut cfg = TrainConfig::new(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Sgd {
                learning_rate: schedule,
                momentum: 0.0,
                nesterov: false,
            },
        );
        cfg.callbacks = vec![
            Callback::TerminateOnNan(TerminateOnNan::default()),
            Callback::ReduceLrOnPlateau(ReduceLrOnPlateau {
                monitor: "loss".into(),
                ..Default::default()
            }),
            Callback::TerminateOnNan(TerminateOnNan::default()),
        ];
        let errs = cfg.check(false).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "callbacks[1].type");
        assert!(errs[0].message.contains("schedule"), "{errs:?}");
    }
}
