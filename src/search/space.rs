//! Search requests as clients write them, their validation (`check`), the search space's
//! dimensions, and the paths that address a field of the base job or of its model.
//!
//! Everything here is pure: no store, no clock. A checked [`SearchPlan`] turns a trial number into
//! its parameters ([`SearchPlan::params`]) and parameters into a job body and model spec
//! ([`SearchPlan::apply`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::job::CreateJobRequest;
use crate::domain::model::ModelSpec;
use crate::nn::FieldError;

/// Most dimensions a space may have.
pub const MAX_DIMENSIONS: usize = 16;
/// Most values of one `choice` dimension.
pub const MAX_CHOICES: usize = 256;
/// Most trials a search may run.
pub const MAX_TRIALS: u32 = 10_000;
/// Most trials of a search training at once.
pub const MAX_CONCURRENT: u32 = 64;
/// Longest path, in bytes, and deepest nesting of a path.
const MAX_PATH_LEN: usize = 256;
const MAX_PATH_DEPTH: usize = 8;
/// Largest list index a path may name.
const MAX_INDEX: usize = 100_000;
/// Most grid points of a `uniform` or `log_uniform` dimension.
const MAX_GRID_POINTS: u32 = 1000;

/// Body of `POST /v1/searches`: a base job, the space searched over it, the objective and the method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSearchRequest {
    /// The job every trial starts from, exactly as `POST /v1/jobs` takes it. With `asha` or
    /// `hyperband`, `fit.epochs` is the most epochs a trial trains.
    pub base: CreateJobRequest,
    /// The dimensions searched, 1 to 16.
    pub space: Vec<DimensionSpec>,
    pub objective: ObjectiveSpec,
    /// `grid` (every combination in order), `random` (seeded), `asha` (asynchronous successive
    /// halving: random trials, stopped early at rungs unless their objective is in the best
    /// `1 / reduction_factor` of the trials that reached the rung) or `hyperband` (brackets of
    /// successive halving, from the most aggressive to one training every trial fully, laid out
    /// as Keras Tuner's Hyperband; a trial is compared only with those of its bracket).
    pub method: String,
    /// Trials to run, 1 to 10000 (a grid runs at most its size).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_trials: u32,
    /// Trials queued or training at once, 1 to 64 (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub max_concurrent_trials: Option<u32>,
    /// Seeds the sampler; random when omitted, and stored so the search resumes identically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// asha / hyperband: epochs of the first rung (hyperband: of its most aggressive bracket), at
    /// least 1 and less than `base.fit.epochs` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub min_epochs: Option<u32>,
    /// asha / hyperband: asha's rung `k` is at `min_epochs * reduction_factor^k` epochs
    /// (hyperband: bracket `s` has rungs at `ceil(base.fit.epochs / reduction_factor^(s - k))`),
    /// and the best `1 / reduction_factor` go on; 2 to 100 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 2, maximum = 100)]
    pub reduction_factor: Option<u32>,
}

impl CreateSearchRequest {
    /// asha / hyperband: `min_epochs` and `reduction_factor`, defaults filled in.
    pub fn halving_settings(&self) -> (u32, u32) {
        (self.min_epochs.unwrap_or(1), self.reduction_factor.unwrap_or(3))
    }

    /// hyperband: the brackets of one iteration.
    pub fn hyperband_brackets(&self) -> Option<Vec<super::hyperband::Bracket>> {
        let (min_epochs, eta) = self.halving_settings();
        (self.method == "hyperband")
            .then(|| super::hyperband::brackets(min_epochs, self.base.fit.epochs, eta))
    }
}

/// One dimension: a field of the base job (`compile.optimizer.learning_rate`, `fit.batch_size`) or
/// of its model (`model.layers[1].units`) and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DimensionSpec {
    /// Dot-separated keys with `[i]` list indexes, under `compile`, `fit`, `callbacks`,
    /// `validation` or `model` (the base job's model spec: `model.layers[2].rate`).
    pub path: String,
    /// `choice`, `int`, `uniform` or `log_uniform`.
    #[serde(rename = "type")]
    pub type_: String,
    /// choice: the values, 1 to 256 (any JSON: numbers, strings, whole optimizer objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Value>>,
    /// int, uniform, log_uniform: the smallest value (log_uniform: above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// int, uniform, log_uniform: the largest value, at least `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// int: the spacing of the values from `low` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// uniform, log_uniform with `grid`: evenly spaced points from `low` to `high` (log-evenly for
    /// log_uniform), 2 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_points: Option<u32>,
}

/// The metric a search optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// `loss`, `accuracy`, `val_loss` or `val_accuracy` (one the base job reports).
    pub metric: String,
    /// `min` or `max`; by default `max` for accuracies and `min` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Grid,
    Random,
    /// Asynchronous successive halving with one bracket (`asha`).
    Asha {
        min_epochs: u32,
        max_epochs: u32,
        eta: u32,
    },
    /// Hyperband (`hyperband`): brackets of asynchronous successive halving, see `hyperband`.
    Hyperband {
        min_epochs: u32,
        max_epochs: u32,
        eta: u32,
    },
}

impl Method {
    /// asha and hyperband: `(min_epochs, max_epochs, eta)`.
    pub fn halving(&self) -> Option<(u32, u32, u32)> {
        match *self {
            Method::Asha {
                min_epochs,
                max_epochs,
                eta,
            }
            | Method::Hyperband {
                min_epochs,
                max_epochs,
                eta,
            } => Some((min_epochs, max_epochs, eta)),
            Method::Grid | Method::Random => None,
        }
    }
}

/// One step of a path: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A parsed path, with whether it points into the model spec rather than the job body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub model: bool,
    pub steps: Vec<Step>,
}

/// A checked dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    Choice(Vec<Value>),
    Int {
        low: i64,
        high: i64,
        step: i64,
    },
    Uniform {
        low: f64,
        high: f64,
        points: Option<u32>,
    },
    LogUniform {
        low: f64,
        high: f64,
        points: Option<u32>,
    },
}

/// A checked search: what the controller and the samplers work from.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    pub dims: Vec<(String, FieldPath, Dimension)>,
    pub method: Method,
    pub metric: String,
    pub maximize: bool,
    pub max_trials: u32,
    pub max_concurrent: u32,
    pub seed: u64,
}

/// Parses `compile.optimizer.learning_rate` or `model.layers[1].units`.
pub fn parse_path(path: &str) -> Result<FieldPath, String> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(format!("must be 1 to {MAX_PATH_LEN} bytes"));
    }
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{part:?} is not a key (letters, digits, _) with optional [index]"
            ));
        }
        steps.push(Step::Key(key.to_string()));
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("{part:?} has an unclosed ["))?;
            let idx: usize = rest[1..close]
                .parse()
                .ok()
                .filter(|&i| i <= MAX_INDEX)
                .ok_or_else(|| format!("{part:?} has an index that is not an integer up to {MAX_INDEX}"))?;
            steps.push(Step::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("{part:?} has text after an index"));
            }
        }
        if steps.len() > MAX_PATH_DEPTH {
            return Err(format!("is deeper than {MAX_PATH_DEPTH} steps"));
        }
    }
    let model = steps[0] == Step::Key("model".into());
    let allowed = ["model", "compile", "fit", "callbacks", "validation"];
    match &steps[0] {
        Step::Key(k) if allowed.contains(&k.as_str()) => {}
        _ => {
            return Err(format!("must start with one of {}", allowed.join(", ")));
        }
    }
    if model && steps.len() < 2 {
        return Err("must name a field of the model spec (model.layers[1].units)".into());
    }
    let steps = if model { steps[1..].to_vec() } else { steps };
    Ok(FieldPath { model, steps })
}

/// Sets the field at `steps` in `root` to `value`. Lists must already have the index; objects get
/// the key. An optimizer or schedule given by name (`"adam"`) becomes `{"type": "adam"}` when a
/// path goes into it.
pub fn set_path(root: &mut Value, steps: &[Step], value: Value) -> Result<(), String> {
    let mut cur = root;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        if let (Value::String(name), Step::Key(_)) = (&*cur, step) {
            *cur = serde_json::json!({"type": name});
        }
        cur = match (cur, step) {
            (Value::Object(map), Step::Key(k)) => {
                if last {
                    map.insert(k.clone(), value);
                    return Ok(());
                }
                map.get_mut(k)
                    .ok_or_else(|| format!("the base has no field {k:?}"))?
            }
            (Value::Array(list), Step::Index(n)) => {
                let len = list.len();
                let slot = list
                    .get_mut(*n)
                    .ok_or_else(|| format!("index {n} is past the end of a list of {len}"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            (_, Step::Key(k)) => return Err(format!("cannot set key {k:?}: not an object")),
            (_, Step::Index(n)) => return Err(format!("cannot set index {n}: not a list")),
        };
    }
    Err("is empty".into())
}

/// The optimisation direction of `metric` under `mode` (`None`: by the metric's name).
pub fn maximizes(metric: &str, mode: Option<&str>) -> Option<bool> {
    match mode {
        Some("max") => Some(true),
        Some("min") => Some(false),
        None => Some(metric.ends_with("accuracy")),
        Some(_) => None,
    }
}

fn push(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError::new(field, message));
}

/// Checks a search request against its base job (as JSON, with defaults filled) and the base
/// model's spec (JSON); each problem names its field. The base job's own problems are the
/// caller's to report (under `base`); `seed` is the sampler's seed.
pub fn check(
    req: &CreateSearchRequest,
    base_job: &Value,
    base_model: &Value,
    max_params: u64,
    seed: u64,
) -> Result<SearchPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let max_trials = req.max_trials;
    if !(1..=MAX_TRIALS).contains(&max_trials) {
        push(&mut errors, "max_trials", format!("must be 1 to {MAX_TRIALS}"));
    }
    let max_concurrent = req.max_concurrent_trials.unwrap_or(2);
    if !(1..=MAX_CONCURRENT).contains(&max_concurrent) {
        push(
            &mut errors,
            "max_concurrent_trials",
            format!("must be 1 to {MAX_CONCURRENT}"),
        );
    }
    let metrics = ["loss", "accuracy", "val_loss", "val_accuracy"];
    let metric = req.objective.metric.as_str();
    if !metrics.contains(&metric) {
        push(
            &mut errors,
            "objective.metric",
            format!("unknown metric {metric:?}; use {}", metrics.join(", ")),
        );
    } else {
        let has_val = req.base.validation.is_some();
        let has_acc = req
            .base
            .compile
            .metrics
            .iter()
            .any(|m| m == "accuracy" || m == "acc");
        if metric.starts_with("val_") && !has_val {
            push(
                &mut errors,
                "objective.metric",
                format!("{metric} needs validation data in base.validation"),
            );
        }
        if metric.ends_with("accuracy") && !has_acc {
            push(
                &mut errors,
                "objective.metric",
                format!("{metric} needs \"accuracy\" in base.compile.metrics"),
            );
        }
    }
    let maximize = match maximizes(metric, req.objective.mode.as_deref()) {
        Some(m) => m,
        None => {
            push(&mut errors, "objective.mode", "must be min or max");
            false
        }
    };
    let epochs = req.base.fit.epochs;
    let method = match req.method.as_str() {
        "grid" => Method::Grid,
        "random" => Method::Random,
        "asha" | "hyperband" => {
            let (min_epochs, eta) = req.halving_settings();
            if min_epochs < 1 || min_epochs >= epochs.max(1) {
                push(
                    &mut errors,
                    "min_epochs",
                    format!("must be at least 1 and less than base.fit.epochs ({epochs})"),
                );
            }
            if !(2..=100).contains(&eta) {
                push(&mut errors, "reduction_factor", "must be 2 to 100");
            }
            if req.method == "asha" {
                Method::Asha {
                    min_epochs,
                    max_epochs: epochs,
                    eta,
                }
            } else {
                Method::Hyperband {
                    min_epochs,
                    max_epochs: epochs,
                    eta,
                }
            }
        }
        other => {
            push(
                &mut errors,
                "method",
                format!("unknown method {other:?}; use grid, random, asha or hyperband"),
            );
            Method::Random
        }
    };
    if method.halving().is_none() {
        if req.min_epochs.is_some() {
            push(&mut errors, "min_epochs", "applies to asha and hyperband only");
        }
        if req.reduction_factor.is_some() {
            push(
                &mut errors,
                "reduction_factor",
                "applies to asha and hyperband only",
            );
        }
    }
    if req.space.is_empty() || req.space.len() > MAX_DIMENSIONS {
        push(
            &mut errors,
            "space",
            format!("must have 1 to {MAX_DIMENSIONS} dimensions"),
        );
    }
    let mut dims = Vec::new();
    for (i, d) in req.space.iter().enumerate().take(MAX_DIMENSIONS) {
        let at = |f: &str| format!("space[{i}].{f}");
        let path = match parse_path(&d.path) {
            Ok(p) => p,
            Err(m) => {
                push(&mut errors, at("path"), m);
                continue;
            }
        };
        if dims.iter().any(|(p, _, _)| p == &d.path) {
            push(&mut errors, at("path"), "is already a dimension");
            continue;
        }
        if method.halving().is_some()
            && !path.model
            && path.steps == [Step::Key("fit".into()), Step::Key("epochs".into())]
        {
            push(
                &mut errors,
                at("path"),
                "fit.epochs is the budget asha and hyperband share out; it cannot be searched",
            );
            continue;
        }
        let n_before = errors.len();
        let allowed: &[&str] = match d.type_.as_str() {
            "choice" => &["values"],
            "int" => &["low", "high", "step"],
            "uniform" | "log_uniform" => &["low", "high", "grid_points"],
            other => {
                push(
                    &mut errors,
                    at("type"),
                    format!("unknown dimension type {other:?}; use choice, int, uniform or log_uniform"),
                );
                continue;
            }
        };
        for (name, given) in [
            ("values", d.values.is_some()),
            ("low", d.low.is_some()),
            ("high", d.high.is_some()),
            ("step", d.step.is_some()),
            ("grid_points", d.grid_points.is_some()),
        ] {
            if given && !allowed.contains(&name) {
                push(&mut errors, at(name), format!("does not apply to {}", d.type_));
            }
        }
        let bounds = |errors: &mut Vec<FieldError>| -> Option<(f64, f64)> {
            let low = d.low.filter(|v| v.is_finite());
            let high = d.high.filter(|v| v.is_finite());
            if low.is_none() {
                push(errors, at("low"), "is required, a finite number");
            }
            if high.is_none() {
                push(errors, at("high"), "is required, a finite number");
            }
            let (low, high) = (low?, high?);
            if high < low {
                push(errors, at("high"), "must be at least low");
                return None;
            }
            Some((low, high))
        };
        let dim = match d.type_.as_str() {
            "choice" => match &d.values {
                Some(v) if (1..=MAX_CHOICES).contains(&v.len()) => Some(Dimension::Choice(v.clone())),
                _ => {
                    push(
                        &mut errors,
                        at("values"),
                        format!("must list 1 to {MAX_CHOICES} values"),
                    );
                    None
                }
            },
            "int" => {
                let b = bounds(&mut errors);
                let step = d.step.unwrap_or(1.0);
                let int = |v: f64| v.fract() == 0.0 && v.abs() <= 1e12;
                if !(int(step) && step >= 1.0) {
                    push(&mut errors, at("step"), "must be a whole number, at least 1");
                }
                match b {
                    Some((low, high)) if int(low) && int(high) && int(step) && step >= 1.0 => {
                        Some(Dimension::Int {
                            low: low as i64,
                            high: high as i64,
                            step: step as i64,
                        })
                    }
                    Some((low, high)) if !(int(low) && int(high)) => {
                        push(
                            &mut errors,
                            at("low"),
                            "low and high must be whole numbers up to 1e12",
                        );
                        None
                    }
                    Some(_) => None,
                    None => None,
                }
            }
            kind => {
                let b = bounds(&mut errors);
                let points = d.grid_points;
                if let Some(p) = points
                    && !(2..=MAX_GRID_POINTS).contains(&p)
                {
                    push(
                        &mut errors,
                        at("grid_points"),
                        format!("must be 2 to {MAX_GRID_POINTS}"),
                    );
                }
                if method == Method::Grid && points.is_none() {
                    push(
                        &mut errors,
                        at("grid_points"),
                        "is required with method grid for a continuous dimension",
                    );
                }
                match b {
                    Some((low, _)) if kind == "log_uniform" && low <= 0.0 => {
                        push(&mut errors, at("low"), "must be above 0 for log_uniform");
                        None
                    }
                    Some((low, high)) if kind == "log_uniform" => {
                        Some(Dimension::LogUniform { low, high, points })
                    }
                    Some((low, high)) => Some(Dimension::Uniform { low, high, points }),
                    None => None,
                }
            }
        };
        let Some(dim) = dim else { continue };
        if errors.len() > n_before {
            continue;
        }
        // Every extreme value must make a valid job: the base with only this dimension changed.
        for value in dim.extremes() {
            let check = apply_one(base_job, base_model, &path, value.clone())
                .and_then(|(job, model)| validate(&job, &model, max_params));
            if let Err(m) = check {
                push(&mut errors, at("path"), format!("with {value}: {m}"));
                break;
            }
        }
        dims.push((d.path.clone(), path, dim));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SearchPlan {
        dims,
        method,
        metric: metric.to_string(),
        maximize,
        max_trials,
        max_concurrent,
        seed,
    })
}

fn apply_one(job: &Value, model: &Value, path: &FieldPath, value: Value) -> Result<(Value, Value), String> {
    let (mut job, mut model) = (job.clone(), model.clone());
    let target = if path.model { &mut model } else { &mut job };
    set_path(target, &path.steps, value)?;
    Ok((job, model))
}

/// Checks a job body and model spec the way `POST /v1/jobs` and `POST /v1/models` do (everything
/// but the datasets); the first problem, with its field, as a message.
pub fn validate(job: &Value, model: &Value, max_params: u64) -> Result<(), String> {
    let req: CreateJobRequest =
        serde_json::from_value(job.clone()).map_err(|e| format!("the job is invalid: {e}"))?;
    if let Err(errs) = req.plan() {
        return Err(format!("{}: {}", errs[0].field, errs[0].message));
    }
    let mut errs = Vec::new();
    for (i, layer) in model["layers"].as_array().into_iter().flatten().enumerate() {
        crate::domain::model::parse_layer(&format!("layers[{i}]"), layer, &mut errs);
    }
    if let Some(e) = errs.first() {
        return Err(format!("model.{}: {}", e.field, e.message));
    }
    let spec: ModelSpec =
        serde_json::from_value(model.clone()).map_err(|e| format!("the model is invalid: {e}"))?;
    if let Err(errs) = spec.check(max_params) {
        return Err(format!("model.{}: {}", errs[0].field, errs[0].message));
    }
    Ok(())
}

impl Dimension {
    /// The values `check` tries: every choice, or both ends.
    fn extremes(&self) -> Vec<Value> {
        match self {
            Dimension::Choice(v) => v.clone(),
            Dimension::Int { low, high, step } => {
                let last = low + (high - low) / step * step;
                vec![Value::from(*low), Value::from(last)]
            }
            Dimension::Uniform { low, high, .. } | Dimension::LogUniform { low, high, .. } => {
                vec![Value::from(*low), Value::from(*high)]
            }
        }
    }

    /// How many values a grid takes from this dimension.
    pub fn grid_len(&self) -> u64 {
        match self {
            Dimension::Choice(v) => v.len() as u64,
            Dimension::Int { low, high, step } => ((high - low) / step) as u64 + 1,
            Dimension::Uniform { points, .. } | Dimension::LogUniform { points, .. } => {
                points.unwrap_or(1) as u64
            }
        }
    }

    /// The `i`-th grid value, `i < grid_len()`.
    pub fn grid_value(&self, i: u64) -> Value {
        match self {
            Dimension::Choice(v) => v[i as usize].clone(),
            Dimension::Int { low, step, .. } => Value::from(low + i as i64 * step),
            Dimension::Uniform { low, high, points } => {
                let n = points.unwrap_or(1).max(2) as f64;
                Value::from(low + (high - low) * i as f64 / (n - 1.0))
            }
            Dimension::LogUniform { low, high, points } => {
                let n = points.unwrap_or(1).max(2) as f64;
                let (a, b) = (low.ln(), high.ln());
                Value::from((a + (b - a) * i as f64 / (n - 1.0)).exp())
            }
        }
    }

    /// A value drawn with `u`, uniform in [0, 1).
    pub fn sample(&self, u: f64) -> Value {
        match self {
            Dimension::Choice(v) => v[((u * v.len() as f64) as usize).min(v.len() - 1)].clone(),
            Dimension::Int { .. } => {
                let n = self.grid_len();
                self.grid_value(((u * n as f64) as u64).min(n - 1))
            }
            Dimension::Uniform { low, high, .. } => Value::from(low + (high - low) * u),
            Dimension::LogUniform { low, high, .. } => {
                let (a, b) = (low.ln(), high.ln());
                Value::from((a + (b - a) * u).exp())
            }
        }
    }
}
