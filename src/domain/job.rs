//! Training job requests as clients write them (`CreateJobRequest`), their validation field by field,
//! and their conversion into the engine's `nn::TrainConfig`; job statuses and stop reasons.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::nn::{
    self, Callback, FieldError, LearningRate, LearningRateScheduler, Loss, Mode, Optimizer,
    ReduceLrOnPlateau, Schedule, TerminateOnNan,
};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        match s {
            "queued" => Some(JobStatus::Queued),
            "running" => Some(JobStatus::Running),
            "succeeded" => Some(JobStatus::Succeeded),
            "failed" => Some(JobStatus::Failed),
            "cancelled" => Some(JobStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        match self {
            JobStatus::Queued | JobStatus::Running => false,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled => true,
        }
    }
}

/// Why a finished job stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every requested epoch ran.
    Completed,
    /// The `early_stopping` callback fired.
    EarlyStopping,
    /// The `terminate_on_nan` callback saw a NaN or infinite batch loss.
    TerminateOnNan,
    /// A client cancelled the job.
    Cancelled,
    /// Training failed (see `error`).
    Error,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::EarlyStopping => "early_stopping",
            StopReason::TerminateOnNan => "terminate_on_nan",
            StopReason::Cancelled => "cancelled",
            StopReason::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        match s {
            "completed" => Some(StopReason::Completed),
            "early_stopping" => Some(StopReason::EarlyStopping),
            "terminate_on_nan" => Some(StopReason::TerminateOnNan),
            "cancelled" => Some(StopReason::Cancelled),
            "error" => Some(StopReason::Error),
            _ => None,
        }
    }
}

/// Body of `POST /v1/jobs`: Keras's `compile` + `fit` for a stored model on a stored dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The architecture to train (`/v1/models/{id}`).
    pub model_id: String,
    /// The training data (`/v1/datasets/{id}`).
    pub dataset_id: String,
    /// Held-out data: the last `split` fraction of the dataset (Keras `validation_split`) or another
    /// dataset (`validation_data`). Omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,
    pub compile: CompileSpec,
    #[serde(default)]
    pub fit: FitSpec,
    /// Keras callbacks, applied in this order at the end of each epoch.
    #[serde(default)]
    pub callbacks: Vec<CallbackSpec>,
    /// A saved model id whose weights training starts from (continue training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<String>,
    /// A name to find the run by (1 to 200 characters); editable with `PATCH /v1/jobs/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// String key-value labels (at most 50; keys of `A-Z a-z 0-9 _ . - /`, up to 64 characters;
    /// values up to 256 characters); editable with `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// Free text (up to 10,000 characters); editable with `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Exactly one of `split` and `dataset_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Fraction in (0, 1) of the samples, taken from the end before shuffling, as Keras does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub split: Option<f64>,
    /// A separate dataset with the same input shape and label kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
}

/// Keras `compile` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompileSpec {
    pub optimizer: OptimizerSpec,
    /// `binary_crossentropy`, `categorical_crossentropy`, `sparse_categorical_crossentropy` or
    /// `mean_squared_error` (`mse`).
    pub loss: String,
    /// Only `accuracy` is supported (classification losses).
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// An optimizer by name with Keras defaults (`"adam"`), or an object with parameters.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OptimizerSpec {
    Name(String),
    Config(Box<OptimizerConfig>),
}

impl<'de> Deserialize<'de> for OptimizerSpec {
    /// A string or an object, each deserialized directly so a bad parameter is reported at its own
    /// path (an untagged enum would only say that no variant matched).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptimizerSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an optimizer name such as \"adam\" or an object with its type and parameters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OptimizerSpec, E> {
                Ok(OptimizerSpec::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OptimizerSpec, A::Error> {
                OptimizerConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|c| OptimizerSpec::Config(Box::new(c)))
            }
        }
        d.deserialize_any(V)
    }
}

/// An optimizer with its parameters; the ones left out take Keras 3's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd`, `adagrad`, `rmsprop` or `adam`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A number in (0, 1e6], or a schedule of the step count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<LearningRateSpec>,
    /// sgd, rmsprop: in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub momentum: Option<f64>,
    /// sgd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// rmsprop: in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub rho: Option<f64>,
    /// adam: in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub beta_1: Option<f64>,
    /// adam: in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub beta_2: Option<f64>,
    /// adagrad, rmsprop, adam: in (0, 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub epsilon: Option<f64>,
    /// adagrad: in [0, 1e6].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub initial_accumulator_value: Option<f64>,
}

/// A constant learning rate, or a Keras learning-rate schedule evaluated before every update.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LearningRateSpec {
    /// In (0, 1e6].
    Constant(f64),
    Schedule(ScheduleSpec),
}

impl<'de> Deserialize<'de> for LearningRateSpec {
    /// A number or an object, each deserialized directly so errors keep their path.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LearningRateSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a schedule object with a type")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LearningRateSpec, E> {
                Ok(LearningRateSpec::Constant(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LearningRateSpec, E> {
                Ok(LearningRateSpec::Constant(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LearningRateSpec, E> {
                Ok(LearningRateSpec::Constant(v as f64))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LearningRateSpec, A::Error> {
                ScheduleSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(LearningRateSpec::Schedule)
            }
        }
        d.deserialize_any(V)
    }
}

/// A Keras 3 learning-rate schedule (`keras.optimizers.schedules`) with Keras's parameter names,
/// evaluated at the optimizer's step count before every update:
/// - `exponential_decay`: `initial_learning_rate * decay_rate ^ (step / decay_steps)` (`staircase`
///   floors the exponent); needs `initial_learning_rate`, `decay_steps`, `decay_rate`.
/// - `inverse_time_decay`: `initial_learning_rate / (1 + decay_rate * step / decay_steps)`; same
///   parameters.
/// - `piecewise_constant_decay`: `values[i]` while `boundaries[i-1] < step <= boundaries[i]`;
///   needs `boundaries` and one more `values`.
/// - `cosine_decay`: optional linear warmup from `initial_learning_rate` to `warmup_target` over
///   `warmup_steps`, then a cosine down to `alpha` times the peak over `decay_steps`.
/// - `polynomial_decay`: from `initial_learning_rate` to `end_learning_rate` (default 0.0001) over
///   `decay_steps` with exponent `power` (default 1); `cycle` restarts at multiples of `decay_steps`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `exponential_decay`, `inverse_time_decay`, `piecewise_constant_decay`, `cosine_decay` or
    /// `polynomial_decay`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The rate at step 0, in (0, 1e6] (cosine_decay with a warmup: [0, 1e6]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_learning_rate: Option<f64>,
    /// Steps (batches) the decay spans, 1 to 1e12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000000000_u64)]
    pub decay_steps: Option<u64>,
    /// exponential_decay: in (0, 1]; inverse_time_decay: in [0, 1e6].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay_rate: Option<f64>,
    /// exponential_decay, inverse_time_decay: decay at whole multiples of `decay_steps` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staircase: Option<bool>,
    /// piecewise_constant_decay: strictly increasing step numbers, 1 to 1000 of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundaries: Option<Vec<u64>>,
    /// piecewise_constant_decay: one rate per interval, in [0, 1e6]; one more than `boundaries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    /// cosine_decay: the final rate as a fraction of the peak, in [0, 1] (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub alpha: Option<f64>,
    /// cosine_decay: the rate the warmup reaches, in (0, 1e6]; omit for no warmup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_target: Option<f64>,
    /// cosine_decay: steps of linear warmup (default 0; needs `warmup_target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 1000000000000_u64)]
    pub warmup_steps: Option<u64>,
    /// polynomial_decay: the rate reached after `decay_steps`, in [0, 1e6] (default 0.0001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_learning_rate: Option<f64>,
    /// polynomial_decay: the exponent, in (0, 1000] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
    /// polynomial_decay: restart the decay at each multiple of `decay_steps` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<bool>,
}

/// Keras `fit` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FitSpec {
    /// 1..=100000 (default 1).
    #[serde(default = "default_epochs")]
    #[schema(minimum = 1, maximum = 100000)]
    pub epochs: u32,
    /// 1..=1048576 (default 32).
    #[serde(default = "default_batch_size")]
    #[schema(minimum = 1, maximum = 1048576)]
    pub batch_size: u32,
    /// Reshuffle before each epoch (default true).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Seeds weight initialisation, shuffling and dropout. Default: random, and stored with the job
    /// so a resumed run continues exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_epochs() -> u32 {
    1
}
fn default_batch_size() -> u32 {
    32
}
fn default_true() -> bool {
    true
}

impl Default for FitSpec {
    fn default() -> Self {
        FitSpec {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            shuffle: true,
            seed: None,
        }
    }
}

/// A Keras callback by `type`, with Keras's arguments and defaults:
/// - `model_checkpoint` (`monitor`, `mode`, `save_best_only`): which epochs count as best.
/// - `early_stopping` (`monitor`, `mode`, `patience`, `min_delta`, `restore_best_weights`).
/// - `reduce_lr_on_plateau` (`monitor`, `mode`, `factor`, `patience`, `min_delta`, `cooldown`,
///   `min_lr`): multiplies a constant learning rate by `factor` after `patience` epochs without
///   improvement.
/// - `terminate_on_nan` (`raise_error`): ends training at the first NaN or infinite batch loss.
/// - `learning_rate_scheduler` (`schedule`): sets a constant learning rate at the start of the
///   listed epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    /// `model_checkpoint`, `early_stopping`, `reduce_lr_on_plateau`, `terminate_on_nan` or
    /// `learning_rate_scheduler`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Metric to watch (default `val_loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// `auto` (default), `min` or `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// model_checkpoint: mark only improving epochs (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_best_only: Option<bool>,
    /// early_stopping (default 0), reduce_lr_on_plateau (default 10): epochs without improvement
    /// before acting, 0..=100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 100000)]
    pub patience: Option<u32>,
    /// early_stopping (default 0), reduce_lr_on_plateau (default 0.0001): smallest change that
    /// counts as an improvement; its sign is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delta: Option<f64>,
    /// early_stopping: at the end of training (whether or not patience ran out), go back to the
    /// weights of the best epoch (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_best_weights: Option<bool>,
    /// reduce_lr_on_plateau: the rate is multiplied by this, in (0, 1) (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub factor: Option<f64>,
    /// reduce_lr_on_plateau: epochs after a reduction before waiting resumes, 0..=100000 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 100000)]
    pub cooldown: Option<u32>,
    /// reduce_lr_on_plateau: the rate never goes below this, in [0, 1e6] (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub min_lr: Option<f64>,
    /// terminate_on_nan: fail the job instead of ending it as succeeded (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise_error: Option<bool>,
    /// learning_rate_scheduler: the rate to set at the start of each listed epoch (0-based, in
    /// increasing order); other epochs keep the current rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<EpochLearningRate>>,
}

/// One row of a `learning_rate_scheduler` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpochLearningRate {
    /// 0-based epoch at whose start the rate is set, 0..=99999.
    #[schema(maximum = 99999)]
    pub epoch: u32,
    /// In (0, 1e6].
    #[schema(exclusive_minimum = 0, maximum = 1000000)]
    pub learning_rate: f64,
}

/// What the request's datasets look like, as far as validation needs (from their stored metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFacts {
    pub n_samples: usize,
    pub n_features: usize,
    /// `Some(number of classes)` for class labels, `None` for regression targets.
    pub n_classes: Option<usize>,
    /// Regression target width.
    pub n_targets: Option<usize>,
}

/// What the model looks like, as far as validation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub input_dim: usize,
    /// Units and activation of the last layer when it is dense.
    pub last_dense: Option<(usize, nn::Activation)>,
}

/// Where the validation data comes from, once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    None,
    Split(f64),
    Dataset(String),
}

/// A request checked and turned into engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub train: nn::TrainConfig,
    pub validation: Validation,
    /// Report `accuracy` (asked for in `metrics` and meaningful for the loss).
    pub accuracy: bool,
    /// Metric that decides which checkpoint is the best.
    pub checkpoint_monitor: String,
    pub checkpoint_mode: Mode,
}

impl CreateJobRequest {
    /// The seed the job runs with; the request stored with a job always has one.
    pub fn seed(&self) -> u64 {
        self.fit.seed.unwrap_or(0)
    }

    /// Checks everything that does not need the datasets or the model and builds the engine
    /// settings; each problem names its field, in the order the request writes them.
    ///
    /// Names and the shape of the request are read here; every value is checked by the engine's
    /// one [`nn::TrainConfig::check`]. A part that cannot be read (an unknown optimizer type, say)
    /// takes a stand-in so the rest is still checked, and the engine's errors under it are dropped.
    pub fn plan(&self) -> Result<JobPlan, Vec<FieldError>> {
        let mut p = Parser::default();
        let loss = Loss::from_name(&self.compile.loss);
        if loss.is_none() {
            p.error(
                "compile.loss",
                format!(
                    "unknown loss {:?}; use binary_crossentropy, categorical_crossentropy, \
                     sparse_categorical_crossentropy or mean_squared_error",
                    self.compile.loss
                ),
            );
        }
        let mut accuracy = false;
        for (i, m) in self.compile.metrics.iter().enumerate() {
            match m.as_str() {
                "accuracy" | "acc" => match loss {
                    Some(l) if !l.has_accuracy() => p.error(
                        format!("compile.metrics[{i}]"),
                        format!("accuracy is not defined for loss {}", l.as_str()),
                    ),
                    _ => accuracy = true,
                },
                other => p.error(
                    format!("compile.metrics[{i}]"),
                    format!("unknown metric {other:?}; only \"accuracy\" is supported"),
                ),
            }
        }
        let optimizer = p.optimizer(&self.compile.optimizer);
        let validation = match &self.validation {
            None => Validation::None,
            Some(ValidationSpec {
                split: Some(s),
                dataset_id: None,
            }) => {
                p.errors.extend(nn::config::validation_split_errors(*s));
                Validation::Split(*s)
            }
            Some(ValidationSpec {
                split: None,
                dataset_id: Some(id),
            }) => Validation::Dataset(id.clone()),
            Some(_) => {
                p.error("validation", "give exactly one of split and dataset_id");
                Validation::None
            }
        };
        let callbacks = self
            .callbacks
            .iter()
            .enumerate()
            .map(|(i, cb)| p.callback(i, cb))
            .collect();
        let has_val = validation != Validation::None;
        // An unknown loss stands in as one with accuracy, so no monitor is refused for it.
        let train = nn::TrainConfig {
            epochs: self.fit.epochs as usize,
            batch_size: self.fit.batch_size as usize,
            shuffle: self.fit.shuffle,
            seed: self.seed(),
            accuracy,
            callbacks,
            ..nn::TrainConfig::new(loss.unwrap_or(Loss::SparseCategoricalCrossentropy), optimizer)
        };
        if let Err(errs) = train.check(has_val) {
            let unread = std::mem::take(&mut p.unread);
            p.errors.extend(
                errs.into_iter()
                    .filter(|e| !unread.iter().any(|u| is_under(&e.field, u))),
            );
        }
        if !p.errors.is_empty() {
            let mut errors = p.errors;
            errors.sort_by_cached_key(|e| request_order(&e.field));
            return Err(errors);
        }
        let (checkpoint_monitor, checkpoint_mode) = match train.checkpoint() {
            Some(c) => (c.monitor.clone(), c.mode),
            None if has_val => ("val_loss".to_string(), Mode::Auto),
            None => ("loss".to_string(), Mode::Auto),
        };
        Ok(JobPlan {
            train,
            validation,
            accuracy,
            checkpoint_monitor,
            checkpoint_mode,
        })
    }
}

impl JobPlan {
    /// Checks the model and datasets against the plan: input width, loss vs output layer, labels vs
    /// loss, split sizes.
    pub fn check_data(
        &self,
        model: &ModelFacts,
        train: &DatasetFacts,
        val: Option<&DatasetFacts>,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let loss = self.train.loss;
        for (field, d) in [("dataset_id", Some(train)), ("validation.dataset_id", val)] {
            let Some(d) = d else { continue };
            if d.n_features != model.input_dim {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "the dataset has {} features per sample but the model's input shape needs {}",
                        d.n_features, model.input_dim
                    ),
                ));
                continue;
            }
            let Some((units, act)) = model.last_dense else {
                if loss != Loss::MeanSquaredError {
                    errors.push(FieldError::new(
                        "compile.loss",
                        format!("{} needs a dense output layer", loss.as_str()),
                    ));
                }
                continue;
            };
            let msg = match (loss, d.n_classes) {
                (Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy, Some(k)) => {
                    if act != nn::Activation::Softmax {
                        Some((
                            "compile.loss",
                            format!(
                                "{} needs a softmax output layer, the last layer uses {}",
                                loss.as_str(),
                                act.as_str()
                            ),
                        ))
                    } else if units < k.max(2) {
                        Some((
                            field,
                            format!("the dataset has {k} classes but the output layer has {units} units"),
                        ))
                    } else {
                        None
                    }
                }
                (Loss::BinaryCrossentropy, Some(k)) => {
                    if act != nn::Activation::Sigmoid || units != 1 {
                        Some((
                            "compile.loss",
                            format!(
                                "binary_crossentropy needs one sigmoid output unit, the last layer has {units} {} units",
                                act.as_str()
                            ),
                        ))
                    } else if k > 2 {
                        Some((
                            field,
                            format!("binary_crossentropy needs 0/1 labels, the dataset has {k} classes"),
                        ))
                    } else {
                        None
                    }
                }
                (Loss::MeanSquaredError, None) => match d.n_targets {
                    Some(t) if t != units => Some((
                        field,
                        format!(
                            "the dataset has {t} regression targets but the output layer has {units} units"
                        ),
                    )),
                    _ => None,
                },
                (Loss::MeanSquaredError, Some(_)) => Some((
                    "compile.loss",
                    "mean_squared_error needs regression targets; this dataset has class labels".to_string(),
                )),
                (_, None) => Some((
                    "compile.loss",
                    format!(
                        "{} needs class labels; this dataset has regression targets",
                        loss.as_str()
                    ),
                )),
            };
            if let Some((f, m)) = msg {
                errors.push(FieldError::new(f, m));
            }
        }
        if let Validation::Split(s) = self.validation {
            let n = train.n_samples;
            let cut = (n as f64 * (1.0 - s)) as usize;
            if cut == 0 || cut == n {
                errors.push(FieldError::new(
                    "validation.split",
                    format!("{s} of {n} samples leaves one side empty"),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// Reads the names and shape of a request into engine types, collecting what cannot be read.
#[derive(Default)]
struct Parser {
    errors: Vec<FieldError>,
    /// Paths that took a stand-in; the engine's errors under them say nothing about the request.
    unread: Vec<String>,
}

/// Whether `field` is `parent` or lies inside it.
fn is_under(field: &str, parent: &str) -> bool {
    field
        .strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Every field name of a job request in the order the request declares them, so errors are listed
/// in document order.
const FIELD_ORDER: &[&str] = &[
    "model_id",
    "dataset_id",
    "validation",
    "split",
    "compile",
    "optimizer",
    "type",
    "epoch",
    "learning_rate",
    "initial_learning_rate",
    "decay_steps",
    "decay_rate",
    "staircase",
    "boundaries",
    "values",
    "alpha",
    "warmup_target",
    "warmup_steps",
    "end_learning_rate",
    "power",
    "cycle",
    "momentum",
    "nesterov",
    "rho",
    "beta_1",
    "beta_2",
    "epsilon",
    "initial_accumulator_value",
    "loss",
    "metrics",
    "fit",
    "epochs",
    "batch_size",
    "shuffle",
    "seed",
    "callbacks",
    "monitor",
    "mode",
    "save_best_only",
    "patience",
    "min_delta",
    "restore_best_weights",
    "factor",
    "cooldown",
    "min_lr",
    "raise_error",
    "schedule",
    "initial_weights",
];

/// A sort key for a field path: each name by its place in [`FIELD_ORDER`], each `[i]` by `i`.
fn request_order(path: &str) -> Vec<u64> {
    let mut key = Vec::new();
    for segment in path.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next().unwrap_or_default();
        key.push(
            FIELD_ORDER
                .iter()
                .position(|n| *n == name)
                .unwrap_or(FIELD_ORDER.len()) as u64,
        );
        for index in parts {
            key.push(index.trim_end_matches(']').parse().unwrap_or(u64::MAX));
        }
    }
    key
}

impl Parser {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Refuses arguments `kind` does not take and asks for the ones it needs.
    fn arguments(
        &mut self,
        path: &str,
        kind: &str,
        word: &str,
        given: &[(&str, bool)],
        allowed: &[&str],
        required: &[&str],
    ) {
        for &(name, set) in given {
            if set && !allowed.contains(&name) {
                self.error(format!("{path}.{name}"), format!("is not {word} of {kind}"));
            } else if !set && required.contains(&name) {
                self.error(format!("{path}.{name}"), format!("is required for {kind}"));
            }
        }
    }

    fn optimizer(&mut self, spec: &OptimizerSpec) -> Optimizer {
        const PATH: &str = "compile.optimizer";
        let unknown = |name: &str| format!("unknown optimizer {name:?}; use sgd, adagrad, rmsprop or adam");
        let c = match spec {
            OptimizerSpec::Name(name) => {
                return Optimizer::from_name(name).unwrap_or_else(|| {
                    self.error(PATH, unknown(name));
                    self.unread.push(PATH.into());
                    Optimizer::adam_default()
                });
            }
            OptimizerSpec::Config(c) => c,
        };
        let Some(mut opt) = Optimizer::from_name(&c.type_) else {
            self.error(format!("{PATH}.type"), unknown(&c.type_));
            self.unread.push(PATH.into());
            return Optimizer::adam_default();
        };
        let allowed: &[&str] = match opt {
            Optimizer::Sgd { .. } => &["momentum", "nesterov"],
            Optimizer::Adagrad { .. } => &["initial_accumulator_value", "epsilon"],
            Optimizer::Rmsprop { .. } => &["rho", "momentum", "epsilon"],
            Optimizer::Adam { .. } => &["beta_1", "beta_2", "epsilon"],
        };
        self.arguments(
            PATH,
            &c.type_,
            "a parameter",
            &[
                ("momentum", c.momentum.is_some()),
                ("nesterov", c.nesterov.is_some()),
                ("rho", c.rho.is_some()),
                ("beta_1", c.beta_1.is_some()),
                ("beta_2", c.beta_2.is_some()),
                ("epsilon", c.epsilon.is_some()),
                ("initial_accumulator_value", c.initial_accumulator_value.is_some()),
            ],
            allowed,
            &[],
        );
        let set = |v: &mut f64, given: Option<f64>| *v = given.unwrap_or(*v);
        match &mut opt {
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => {
                set(momentum, c.momentum);
                *nesterov = c.nesterov.unwrap_or(*nesterov);
            }
            Optimizer::Adagrad {
                initial_accumulator_value,
                epsilon,
                ..
            } => {
                set(initial_accumulator_value, c.initial_accumulator_value);
                set(epsilon, c.epsilon);
            }
            Optimizer::Rmsprop {
                rho,
                momentum,
                epsilon,
                ..
            } => {
                set(rho, c.rho);
                set(momentum, c.momentum);
                set(epsilon, c.epsilon);
            }
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            } => {
                set(beta_1, c.beta_1);
                set(beta_2, c.beta_2);
                set(epsilon, c.epsilon);
            }
        }
        match &c.learning_rate {
            None => opt,
            Some(LearningRateSpec::Constant(v)) => opt.with_learning_rate(LearningRate::Constant(*v)),
            Some(LearningRateSpec::Schedule(s)) => {
                let path = format!("{PATH}.learning_rate");
                match self.schedule(&path, s) {
                    Some(s) => opt.with_learning_rate(LearningRate::Schedule(s)),
                    None => {
                        self.unread.push(path);
                        opt
                    }
                }
            }
        }
    }

    /// A schedule with its parameters; missing required ones are reported and stand in as valid
    /// values so the others are still checked.
    fn schedule(&mut self, path: &str, s: &ScheduleSpec) -> Option<Schedule> {
        let (allowed, required): (&[&str], &[&str]) = match s.type_.as_str() {
            "exponential_decay" | "inverse_time_decay" => (
                &["initial_learning_rate", "decay_steps", "decay_rate", "staircase"],
                &["initial_learning_rate", "decay_steps", "decay_rate"],
            ),
            "piecewise_constant_decay" => (&["boundaries", "values"], &["boundaries", "values"]),
            "cosine_decay" => (
                &[
                    "initial_learning_rate",
                    "decay_steps",
                    "alpha",
                    "warmup_target",
                    "warmup_steps",
                ],
                &["initial_learning_rate", "decay_steps"],
            ),
            "polynomial_decay" => (
                &[
                    "initial_learning_rate",
                    "decay_steps",
                    "end_learning_rate",
                    "power",
                    "cycle",
                ],
                &["initial_learning_rate", "decay_steps"],
            ),
            other => {
                self.error(
                    format!("{path}.type"),
                    format!(
                        "unknown schedule {other:?}; use exponential_decay, inverse_time_decay, \
                         piecewise_constant_decay, cosine_decay or polynomial_decay"
                    ),
                );
                return None;
            }
        };
        self.arguments(
            path,
            &s.type_,
            "a parameter",
            &[
                ("initial_learning_rate", s.initial_learning_rate.is_some()),
                ("decay_steps", s.decay_steps.is_some()),
                ("decay_rate", s.decay_rate.is_some()),
                ("staircase", s.staircase.is_some()),
                ("boundaries", s.boundaries.is_some()),
                ("values", s.values.is_some()),
                ("alpha", s.alpha.is_some()),
                ("warmup_target", s.warmup_target.is_some()),
                ("warmup_steps", s.warmup_steps.is_some()),
                ("end_learning_rate", s.end_learning_rate.is_some()),
                ("power", s.power.is_some()),
                ("cycle", s.cycle.is_some()),
            ],
            allowed,
            required,
        );
        let initial_learning_rate = s.initial_learning_rate.unwrap_or(0.001);
        let decay_steps = s.decay_steps.unwrap_or(1);
        Some(match s.type_.as_str() {
            "exponential_decay" => Schedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate: s.decay_rate.unwrap_or(1.0),
                staircase: s.staircase.unwrap_or(false),
            },
            "inverse_time_decay" => Schedule::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate: s.decay_rate.unwrap_or(0.0),
                staircase: s.staircase.unwrap_or(false),
            },
            "piecewise_constant_decay" => {
                let boundaries = s.boundaries.clone().unwrap_or_else(|| vec![0]);
                let values = s
                    .values
                    .clone()
                    .unwrap_or_else(|| vec![0.001; boundaries.len() + 1]);
                Schedule::PiecewiseConstantDecay { boundaries, values }
            }
            "cosine_decay" => Schedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha: s.alpha.unwrap_or(0.0),
                warmup_target: s.warmup_target,
                warmup_steps: s.warmup_steps.unwrap_or(0),
            },
            _ => Schedule::PolynomialDecay {
                initial_learning_rate,
                decay_steps,
                end_learning_rate: s.end_learning_rate.unwrap_or(0.0001),
                power: s.power.unwrap_or(1.0),
                cycle: s.cycle.unwrap_or(false),
            },
        })
    }

    /// A callback with Keras's defaults for what is left out.
    fn callback(&mut self, i: usize, cb: &CallbackSpec) -> Callback {
        let path = nn::config::path::callback(i);
        let placeholder = Callback::TerminateOnNan(TerminateOnNan::default());
        let allowed: &[&str] = match cb.type_.as_str() {
            "model_checkpoint" => &["monitor", "mode", "save_best_only"],
            "early_stopping" => &["monitor", "mode", "patience", "min_delta", "restore_best_weights"],
            "reduce_lr_on_plateau" => &[
                "monitor",
                "mode",
                "factor",
                "patience",
                "min_delta",
                "cooldown",
                "min_lr",
            ],
            "terminate_on_nan" => &["raise_error"],
            "learning_rate_scheduler" => &["schedule"],
            other => {
                self.error(
                    format!("{path}.type"),
                    format!(
                        "unknown callback {other:?}; use model_checkpoint, early_stopping, \
                         reduce_lr_on_plateau, terminate_on_nan or learning_rate_scheduler"
                    ),
                );
                self.unread.push(path);
                return placeholder;
            }
        };
        let required: &[&str] = if cb.type_ == "learning_rate_scheduler" {
            &["schedule"]
        } else {
            &[]
        };
        self.arguments(
            &path,
            &cb.type_,
            "an argument",
            &[
                ("monitor", cb.monitor.is_some()),
                ("mode", cb.mode.is_some()),
                ("save_best_only", cb.save_best_only.is_some()),
                ("patience", cb.patience.is_some()),
                ("min_delta", cb.min_delta.is_some()),
                ("restore_best_weights", cb.restore_best_weights.is_some()),
                ("factor", cb.factor.is_some()),
                ("cooldown", cb.cooldown.is_some()),
                ("min_lr", cb.min_lr.is_some()),
                ("raise_error", cb.raise_error.is_some()),
                ("schedule", cb.schedule.is_some()),
            ],
            allowed,
            required,
        );
        let monitor = cb.monitor.clone().unwrap_or_else(|| "val_loss".into());
        let mode = match cb.mode.as_deref() {
            None => Mode::Auto,
            Some(m) => Mode::parse(m).unwrap_or_else(|| {
                self.error(
                    format!("{path}.mode"),
                    format!("unknown mode {m:?}; use auto, min or max"),
                );
                Mode::Auto
            }),
        };
        match cb.type_.as_str() {
            "model_checkpoint" => Callback::ModelCheckpoint(nn::ModelCheckpoint {
                monitor,
                save_best_only: cb.save_best_only.unwrap_or(false),
                mode,
            }),
            "early_stopping" => Callback::EarlyStopping(nn::EarlyStopping {
                monitor,
                min_delta: cb.min_delta.unwrap_or(0.0),
                patience: cb.patience.unwrap_or(0) as usize,
                mode,
                restore_best_weights: cb.restore_best_weights.unwrap_or(false),
            }),
            "reduce_lr_on_plateau" => {
                let d = ReduceLrOnPlateau::default();
                Callback::ReduceLrOnPlateau(ReduceLrOnPlateau {
                    monitor,
                    factor: cb.factor.unwrap_or(d.factor),
                    patience: cb.patience.map_or(d.patience, |p| p as usize),
                    min_delta: cb.min_delta.unwrap_or(d.min_delta),
                    cooldown: cb.cooldown.map_or(d.cooldown, |c| c as usize),
                    min_lr: cb.min_lr.unwrap_or(d.min_lr),
                    mode,
                })
            }
            "terminate_on_nan" => Callback::TerminateOnNan(TerminateOnNan {
                raise_error: cb.raise_error.unwrap_or(false),
            }),
            _ => match &cb.schedule {
                Some(rows) => Callback::LearningRateScheduler(LearningRateScheduler {
                    schedule: rows.iter().map(|r| (r.epoch as usize, r.learning_rate)).collect(),
                }),
                None => placeholder,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> CreateJobRequest {
        serde_json::from_value(body).expect("request parses")
    }

    fn fields(r: Result<JobPlan, Vec<FieldError>>) -> Vec<String> {
        r.expect_err("invalid").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_bare_optimizer_name_takes_keras_defaults() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"}}));
        let plan = r.plan().unwrap();
        assert_eq!(plan.train.optimizer, Optimizer::adam_default());
        assert_eq!(plan.train.epochs, 1);
        assert_eq!(plan.train.batch_size, 32);
        assert_eq!(plan.checkpoint_monitor, "loss");
    }

    #[test]
    fn optimizer_parameters_override_defaults_and_are_range_checked() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": true},
                        "loss": "mse"}}));
        assert_eq!(
            r.plan().unwrap().train.optimizer,
            Optimizer::Sgd {
                learning_rate: LearningRate::Constant(0.1),
                momentum: 0.9,
                nesterov: true
            }
        );
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "adam", "learning_rate": -1, "beta_1": 1.0, "rho": 0.9},
                        "loss": "mse"}}));
        assert_eq!(
            fields(r.plan()),
            [
                "compile.optimizer.learning_rate",
                "compile.optimizer.rho",
                "compile.optimizer.beta_1"
            ]
        );
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": "adam", "loss": "mse"}}));
        let mut train = r.plan().unwrap().train;
        train.optimizer = train.optimizer.with_learning_rate(LearningRate::Constant(2e6));
        // The engine refuses what the request check refuses: it is the same check.
        assert_eq!(
            train.check(false).unwrap_err()[0].field,
            "compile.optimizer.learning_rate"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "validation": {"split": 1.5},
            "compile": {"optimizer": "nadam", "loss": "hinge", "metrics": ["f1"]},
            "fit": {"epochs": 0, "batch_size": 0},
            "callbacks": [{"type": "early_stopping", "monitor": "val_auc"}, {"type": "lr_schedule"}]}));
        assert_eq!(
            fields(r.plan()),
            [
                "validation.split",
                "compile.optimizer",
                "compile.loss",
                "compile.metrics[0]",
                "fit.epochs",
                "fit.batch_size",
                "callbacks[0].monitor",
                "callbacks[1].type"
            ]
        );
    }

    #[test]
    fn numbers_that_overflow_or_vanish_in_32_bit_floats_are_refused_before_queueing() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "rmsprop", "learning_rate": 1e308, "rho": 0.9,
                                      "momentum": 1.0, "epsilon": 1e-300},
                        "loss": "mse"},
            "fit": {"epochs": 100001, "batch_size": 2_000_000}}));
        let errs = r.plan().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "compile.optimizer.learning_rate",
                "compile.optimizer.epsilon",
                "fit.epochs",
                "fit.batch_size"
            ]
        );
        assert!(errs[0].message.contains("(0, 1e6]"), "{errs:?}");
        assert!(errs[1].message.contains("32-bit"), "{errs:?}");
        // rmsprop's momentum follows Keras's [0, 1], as SGD's does: 1.0 was accepted above.
    }

    #[test]
    fn schedules_and_new_callbacks_become_engine_settings_with_keras_defaults() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "validation": {"split": 0.2},
            "compile": {"optimizer": {"type": "sgd", "learning_rate": 0.1}, "loss": "mse"},
            "callbacks": [{"type": "reduce_lr_on_plateau", "factor": 0.5},
                          {"type": "terminate_on_nan"},
                          {"type": "learning_rate_scheduler",
                           "schedule": [{"epoch": 0, "learning_rate": 0.05}, {"epoch": 3, "learning_rate": 0.01}]}]}));
        let plan = r.plan().unwrap();
        assert_eq!(
            plan.train.callbacks,
            [
                Callback::ReduceLrOnPlateau(ReduceLrOnPlateau {
                    factor: 0.5,
                    ..Default::default()
                }),
                Callback::TerminateOnNan(TerminateOnNan { raise_error: false }),
                Callback::LearningRateScheduler(LearningRateScheduler {
                    schedule: vec![(0, 0.05), (3, 0.01)]
                }),
            ]
        );
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "adam", "learning_rate":
                {"type": "cosine_decay", "initial_learning_rate": 0.0, "decay_steps": 1000,
                 "warmup_target": 0.01, "warmup_steps": 100}}, "loss": "mse"}}));
        assert_eq!(
            r.plan().unwrap().train.optimizer.learning_rate(),
            &LearningRate::Schedule(Schedule::CosineDecay {
                initial_learning_rate: 0.0,
                decay_steps: 1000,
                alpha: 0.0,
                warmup_target: Some(0.01),
                warmup_steps: 100
            })
        );
    }

    #[test]
    fn schedule_and_callback_arguments_are_named_when_missing_misplaced_or_out_of_range() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "sgd", "learning_rate":
                {"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_rate": 1.5,
                 "alpha": 0.1}}, "loss": "mse"},
            "callbacks": [
                {"type": "reduce_lr_on_plateau", "monitor": "loss", "factor": 1.0, "cooldown": 200000,
                 "min_lr": -1, "save_best_only": true},
                {"type": "learning_rate_scheduler"},
                {"type": "early_stopping", "monitor": "loss", "patience": 100001, "mode": "up"},
                {"type": "terminate_on_nan", "patience": 1}]}));
        assert_eq!(
            fields(r.plan()),
            [
                "compile.optimizer.learning_rate.decay_steps",
                "compile.optimizer.learning_rate.decay_rate",
                "compile.optimizer.learning_rate.alpha",
                "callbacks[0].type",
                "callbacks[0].save_best_only",
                "callbacks[0].factor",
                "callbacks[0].cooldown",
                "callbacks[0].min_lr",
                "callbacks[1].schedule",
                "callbacks[2].mode",
                "callbacks[2].patience",
                "callbacks[3].patience",
            ]
        );
    }

    #[test]
    fn an_unknown_schedule_type_hides_only_its_own_parameters() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": {"type": "adam", "learning_rate": {"type": "step_decay", "decay_steps": 0},
                                      "beta_1": 2}, "loss": "mse"}}));
        assert_eq!(
            fields(r.plan()),
            ["compile.optimizer.learning_rate.type", "compile.optimizer.beta_1"]
        );
    }

    #[test]
    fn monitors_need_the_metrics_the_job_produces() {
        let r = request(serde_json::json!({"model_id": "m", "dataset_id": "d",
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
            "callbacks": [{"type": "early_stopping", "monitor": "val_loss"},
                          {"type": "model_checkpoint", "monitor": "accuracy"}]}));
        assert_eq!(fields(r.plan()), ["callbacks[0].monitor", "callbacks[1].monitor"]);
    }

    #[test]
    fn loss_must_fit_the_output_layer_and_labels() {
        let plan = |loss: &str| {
            request(serde_json::json!({"model_id": "m", "dataset_id": "d",
                "compile": {"optimizer": "adam", "loss": loss}}))
            .plan()
            .unwrap()
        };
        let ten = DatasetFacts {
            n_samples: 100,
            n_features: 64,
            n_classes: Some(10),
            n_targets: None,
        };
        let softmax10 = ModelFacts {
            input_dim: 64,
            last_dense: Some((10, nn::Activation::Softmax)),
        };
        let softmax5 = ModelFacts {
            input_dim: 64,
            last_dense: Some((5, nn::Activation::Softmax)),
        };
        let wrong_input = ModelFacts {
            input_dim: 784,
            ..softmax10.clone()
        };
        let sparse = plan("sparse_categorical_crossentropy");
        assert!(sparse.check_data(&softmax10, &ten, None).is_ok());
        let f =
            |r: Result<(), Vec<FieldError>>| r.unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(f(sparse.check_data(&softmax5, &ten, None)), ["dataset_id"]);
        assert_eq!(f(sparse.check_data(&wrong_input, &ten, None)), ["dataset_id"]);
        assert_eq!(
            f(plan("binary_crossentropy").check_data(&softmax10, &ten, None)),
            ["compile.loss"]
        );
        assert_eq!(
            f(plan("mse").check_data(&softmax10, &ten, None)),
            ["compile.loss"]
        );
    }
}
