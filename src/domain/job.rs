//! Training job requests as clients write them (`CreateJobRequest`), their validation field by field,
//! and their conversion into the engine's `nn::TrainConfig`; job statuses and stop reasons.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::nn::{self, FieldError, Loss, Mode, Optimizer};

pub const MAX_EPOCHS: u32 = 100_000;
pub const MAX_BATCH_SIZE: u32 = 1 << 20;

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
            StopReason::Cancelled => "cancelled",
            StopReason::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        match s {
            "completed" => Some(StopReason::Completed),
            "early_stopping" => Some(StopReason::EarlyStopping),
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
    #[serde(default)]
    pub callbacks: Vec<CallbackSpec>,
    /// A saved model id whose weights training starts from (continue training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<String>,
}

/// Exactly one of `split` and `dataset_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Fraction in (0, 1) of the samples, taken from the end before shuffling, as Keras does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OptimizerSpec {
    Name(String),
    Config(OptimizerConfig),
}

/// An optimizer with its parameters; the ones left out take Keras 3's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd`, `adagrad`, `rmsprop` or `adam`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// sgd, rmsprop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// sgd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// rmsprop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// adam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_1: Option<f64>,
    /// adam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_2: Option<f64>,
    /// adagrad, rmsprop, adam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// adagrad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_accumulator_value: Option<f64>,
}

/// Keras `fit` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FitSpec {
    /// 1..=100000 (default 1).
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// 1..=1048576 (default 32).
    #[serde(default = "default_batch_size")]
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

/// `model_checkpoint` or `early_stopping`, with Keras's arguments and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    /// `model_checkpoint` or `early_stopping`.
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
    /// early_stopping: epochs without improvement before stopping (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// early_stopping: smallest change that counts as improvement (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delta: Option<f64>,
    /// early_stopping: at the end of training (whether or not patience ran out), go back to the
    /// weights of the best epoch (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_best_weights: Option<bool>,
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
    /// settings; each problem names its field.
    pub fn plan(&self) -> Result<JobPlan, Vec<FieldError>> {
        let mut errors = Vec::new();
        let loss = Loss::from_name(&self.compile.loss);
        if loss.is_none() {
            errors.push(FieldError::new(
                "compile.loss",
                format!(
                    "unknown loss {:?}; use binary_crossentropy, categorical_crossentropy, \
                     sparse_categorical_crossentropy or mean_squared_error",
                    self.compile.loss
                ),
            ));
        }
        let mut accuracy = false;
        for (i, m) in self.compile.metrics.iter().enumerate() {
            match m.as_str() {
                "accuracy" | "acc" => match loss {
                    Some(l) if !l.has_accuracy() => errors.push(FieldError::new(
                        format!("compile.metrics[{i}]"),
                        format!("accuracy is not defined for loss {}", l.as_str()),
                    )),
                    _ => accuracy = true,
                },
                other => errors.push(FieldError::new(
                    format!("compile.metrics[{i}]"),
                    format!("unknown metric {other:?}; only \"accuracy\" is supported"),
                )),
            }
        }
        let optimizer = parse_optimizer(&self.compile.optimizer, &mut errors);
        let fit = &self.fit;
        if fit.epochs == 0 || fit.epochs > MAX_EPOCHS {
            errors.push(FieldError::new(
                "fit.epochs",
                format!("must be in 1..={MAX_EPOCHS}"),
            ));
        }
        if fit.batch_size == 0 || fit.batch_size > MAX_BATCH_SIZE {
            errors.push(FieldError::new(
                "fit.batch_size",
                format!("must be in 1..={MAX_BATCH_SIZE}"),
            ));
        }
        let validation = match &self.validation {
            None => Validation::None,
            Some(ValidationSpec {
                split: Some(s),
                dataset_id: None,
            }) => {
                if !(s.is_finite() && *s > 0.0 && *s < 1.0) {
                    errors.push(FieldError::new("validation.split", "must be in (0, 1)"));
                }
                Validation::Split(*s)
            }
            Some(ValidationSpec {
                split: None,
                dataset_id: Some(id),
            }) => Validation::Dataset(id.clone()),
            Some(_) => {
                errors.push(FieldError::new(
                    "validation",
                    "give exactly one of split and dataset_id",
                ));
                Validation::None
            }
        };
        let has_val = validation != Validation::None;
        let check_monitor = |field: String, monitor: &str, errors: &mut Vec<FieldError>| {
            let known = ["loss", "accuracy", "acc", "val_loss", "val_accuracy", "val_acc"];
            let msg = if !known.contains(&monitor) {
                Some(format!("unknown metric {monitor:?}; use one of {known:?}"))
            } else if monitor.starts_with("val_") && !has_val {
                Some(format!(
                    "{monitor} needs validation data (validation.split or validation.dataset_id)"
                ))
            } else if monitor.contains("acc") && !accuracy {
                Some(format!(
                    "{monitor} is only computed with metrics [\"accuracy\"] and a classification loss"
                ))
            } else {
                None
            };
            if let Some(m) = msg {
                errors.push(FieldError::new(field, m));
            }
        };
        let mut early_stopping = None;
        let mut checkpoint = None;
        for (i, cb) in self.callbacks.iter().enumerate() {
            let f = |name: &str| format!("callbacks[{i}].{name}");
            let monitor = cb.monitor.clone().unwrap_or_else(|| "val_loss".into());
            check_monitor(f("monitor"), &monitor, &mut errors);
            let mode = match cb.mode.as_deref() {
                None | Some("auto") => Mode::Auto,
                Some("min") => Mode::Min,
                Some("max") => Mode::Max,
                Some(other) => {
                    errors.push(FieldError::new(
                        f("mode"),
                        format!("unknown mode {other:?}; use auto, min or max"),
                    ));
                    Mode::Auto
                }
            };
            let not_for = |name: &str, set: bool, errors: &mut Vec<FieldError>| {
                if set {
                    errors.push(FieldError::new(
                        f(name),
                        format!("is not an argument of {}", cb.type_),
                    ));
                }
            };
            match cb.type_.as_str() {
                "model_checkpoint" => {
                    not_for("patience", cb.patience.is_some(), &mut errors);
                    not_for("min_delta", cb.min_delta.is_some(), &mut errors);
                    not_for(
                        "restore_best_weights",
                        cb.restore_best_weights.is_some(),
                        &mut errors,
                    );
                    if checkpoint.is_some() {
                        errors.push(FieldError::new(f("type"), "only one model_checkpoint is allowed"));
                    }
                    checkpoint = Some(nn::ModelCheckpoint {
                        monitor,
                        save_best_only: cb.save_best_only.unwrap_or(false),
                        mode,
                    });
                }
                "early_stopping" => {
                    not_for("save_best_only", cb.save_best_only.is_some(), &mut errors);
                    let min_delta = cb.min_delta.unwrap_or(0.0);
                    if !min_delta.is_finite() {
                        errors.push(FieldError::new(f("min_delta"), "must be a finite number"));
                    }
                    if early_stopping.is_some() {
                        errors.push(FieldError::new(f("type"), "only one early_stopping is allowed"));
                    }
                    early_stopping = Some(nn::EarlyStopping {
                        monitor,
                        min_delta,
                        patience: cb.patience.unwrap_or(0) as usize,
                        mode,
                        restore_best_weights: cb.restore_best_weights.unwrap_or(false),
                    });
                }
                other => errors.push(FieldError::new(
                    f("type"),
                    format!("unknown callback {other:?}; use model_checkpoint or early_stopping"),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(loss), Some(optimizer)) = (loss, optimizer) else {
            unreachable!("a missing loss or optimizer was reported as an error above")
        };
        let (checkpoint_monitor, checkpoint_mode) = match &checkpoint {
            Some(c) => (c.monitor.clone(), c.mode),
            None if has_val => ("val_loss".to_string(), Mode::Auto),
            None => ("loss".to_string(), Mode::Auto),
        };
        let train = nn::TrainConfig {
            epochs: fit.epochs as usize,
            batch_size: fit.batch_size as usize,
            shuffle: fit.shuffle,
            seed: self.seed(),
            early_stopping,
            checkpoint,
            ..nn::TrainConfig::new(loss, optimizer)
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

fn parse_optimizer(spec: &OptimizerSpec, errors: &mut Vec<FieldError>) -> Option<Optimizer> {
    let unknown = |name: &str| format!("unknown optimizer {name:?}; use sgd, adagrad, rmsprop or adam");
    let c = match spec {
        OptimizerSpec::Name(name) => {
            let o = Optimizer::from_name(name);
            if o.is_none() {
                errors.push(FieldError::new("compile.optimizer", unknown(name)));
            }
            return o;
        }
        OptimizerSpec::Config(c) => c,
    };
    let Some(mut opt) = Optimizer::from_name(&c.type_) else {
        errors.push(FieldError::new("compile.optimizer.type", unknown(&c.type_)));
        return None;
    };
    let before = errors.len();
    let field = |name: &str| format!("compile.optimizer.{name}");
    // Each parameter: its range check, and whether this optimizer has it.
    let mut take =
        |name: &str, v: Option<f64>, applies: bool, ok: fn(f64) -> bool, rule: &str| -> Option<f32> {
            let v = v?;
            if !applies {
                errors.push(FieldError::new(
                    field(name),
                    format!("is not a parameter of {}", c.type_),
                ));
                return None;
            }
            if !(v.is_finite() && ok(v)) {
                errors.push(FieldError::new(field(name), rule.to_string()));
                return None;
            }
            Some(v as f32)
        };
    let positive: fn(f64) -> bool = |v| v > 0.0;
    let unit: fn(f64) -> bool = |v| (0.0..1.0).contains(&v);
    let non_neg: fn(f64) -> bool = |v| v >= 0.0;
    let is = |n: &str| c.type_ == n;
    let lr = take(
        "learning_rate",
        c.learning_rate,
        true,
        positive,
        "must be a positive number",
    );
    let momentum = take(
        "momentum",
        c.momentum,
        is("sgd") || is("rmsprop"),
        unit,
        "must be in [0, 1)",
    );
    let rho = take("rho", c.rho, is("rmsprop"), unit, "must be in [0, 1)");
    let beta_1 = take("beta_1", c.beta_1, is("adam"), unit, "must be in [0, 1)");
    let beta_2 = take("beta_2", c.beta_2, is("adam"), unit, "must be in [0, 1)");
    let eps = take(
        "epsilon",
        c.epsilon,
        !is("sgd"),
        positive,
        "must be a positive number",
    );
    let init = take(
        "initial_accumulator_value",
        c.initial_accumulator_value,
        is("adagrad"),
        non_neg,
        "must be a non-negative number",
    );
    if c.nesterov.is_some() && !is("sgd") {
        errors.push(FieldError::new(
            field("nesterov"),
            format!("is not a parameter of {}", c.type_),
        ));
    }
    match &mut opt {
        Optimizer::Sgd {
            learning_rate,
            momentum: m,
            nesterov,
        } => {
            *learning_rate = lr.unwrap_or(*learning_rate);
            *m = momentum.unwrap_or(*m);
            *nesterov = c.nesterov.unwrap_or(*nesterov);
        }
        Optimizer::Adagrad {
            learning_rate,
            initial_accumulator_value,
            epsilon,
        } => {
            *learning_rate = lr.unwrap_or(*learning_rate);
            *initial_accumulator_value = init.unwrap_or(*initial_accumulator_value);
            *epsilon = eps.unwrap_or(*epsilon);
        }
        Optimizer::Rmsprop {
            learning_rate,
            rho: r,
            momentum: m,
            epsilon,
        } => {
            *learning_rate = lr.unwrap_or(*learning_rate);
            *r = rho.unwrap_or(*r);
            *m = momentum.unwrap_or(*m);
            *epsilon = eps.unwrap_or(*epsilon);
        }
        Optimizer::Adam {
            learning_rate,
            beta_1: b1,
            beta_2: b2,
            epsilon,
        } => {
            *learning_rate = lr.unwrap_or(*learning_rate);
            *b1 = beta_1.unwrap_or(*b1);
            *b2 = beta_2.unwrap_or(*b2);
            *epsilon = eps.unwrap_or(*epsilon);
        }
    }
    (errors.len() == before).then_some(opt)
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
                learning_rate: 0.1,
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
                "compile.loss",
                "compile.metrics[0]",
                "compile.optimizer",
                "fit.epochs",
                "fit.batch_size",
                "validation.split",
                "callbacks[0].monitor",
                "callbacks[1].type"
            ]
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
