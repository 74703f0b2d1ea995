//! Training: the epoch loop with shuffling, validation, hooks and cancellation, callback decisions,
//! and a training state that can be saved and restored bit-identically.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, s};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use super::callbacks::{Callback, EarlyStopping, EpochLogs, ModelCheckpoint};
use super::config::{TrainConfig, validation_split_errors};
use super::error::{Error, Result};
use super::kernels::FlushToZero;
use super::loss::{BatchStats, Targets, batch_loss};
use super::model::{Gather, Model, NamedTensor, Workspace};
use super::optim::OptimizerState;
use super::pool::{Pool, SendPtr, resolve_threads};
use super::spec::ModelConfig;
use super::tensor_file;

/// Rows `start..end` of a shared input array: a view that owns its share, so a validation split
/// or a cached dataset is used by several trainers without copying it.
#[derive(Debug, Clone)]
pub struct Rows {
    all: Arc<Array2<f32>>,
    start: usize,
    end: usize,
    /// Set when every value is already known to be finite (a stored dataset was checked when it
    /// was created), so the trainer does not scan the array again.
    finite: bool,
}

impl Rows {
    /// All rows of `all`.
    pub fn new(all: Arc<Array2<f32>>) -> Rows {
        let end = all.nrows();
        Rows {
            all,
            start: 0,
            end,
            finite: false,
        }
    }

    /// All rows of `all`, whose values the caller has checked to be finite.
    pub fn known_finite(all: Arc<Array2<f32>>) -> Rows {
        Rows {
            finite: true,
            ..Rows::new(all)
        }
    }

    /// The rows as an array view.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        self.all.slice(s![self.start..self.end, ..])
    }

    /// Rows `range` of these rows, sharing the same array.
    ///
    /// # Panics
    /// When `range` reaches past [`Rows::nrows`].
    pub fn slice(&self, range: std::ops::Range<usize>) -> Rows {
        assert!(
            range.start <= range.end && range.end <= self.nrows(),
            "rows out of range"
        );
        Rows {
            all: Arc::clone(&self.all),
            start: self.start + range.start,
            end: self.start + range.end,
            finite: self.finite,
        }
    }

    pub fn nrows(&self) -> usize {
        self.end - self.start
    }

    pub fn ncols(&self) -> usize {
        self.all.ncols()
    }

    /// Whether every value is known to be finite without looking.
    pub fn is_known_finite(&self) -> bool {
        self.finite
    }

    /// Whether `self` and `other` are views of the same array.
    pub fn shares_array_with(&self, other: &Rows) -> bool {
        Arc::ptr_eq(&self.all, &other.all)
    }
}

impl From<Array2<f32>> for Rows {
    fn from(a: Array2<f32>) -> Rows {
        Rows::new(Arc::new(a))
    }
}

impl From<Arc<Array2<f32>>> for Rows {
    fn from(a: Arc<Array2<f32>>) -> Rows {
        Rows::new(a)
    }
}

/// Inputs and targets, shared so that several trainers (or a trainer and a server cache) can hold
/// the same data without copies.
#[derive(Debug, Clone)]
pub struct Data {
    /// Shape `(n_samples, input_dim)`.
    pub x: Rows,
    /// `n_samples` targets.
    pub y: Arc<Targets>,
}

impl Data {
    pub fn new(x: impl Into<Rows>, y: impl Into<Arc<Targets>>) -> Self {
        Data {
            x: x.into(),
            y: y.into(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.x.nrows() == 0
    }

    /// Keras's `validation_split` on shared data: the *last* `fraction` of the samples (before any
    /// shuffling) become validation data. The inputs of both sides are views of `self`'s array;
    /// only the targets are copied.
    pub fn split_validation(&self, fraction: f64) -> Result<(Data, Data)> {
        let errors = validation_split_errors(fraction);
        if !errors.is_empty() {
            return Err(Error::InvalidConfig(errors));
        }
        let n = self.x.nrows();
        if n != self.y.len() {
            return Err(Error::SampleCount {
                what: "training data",
                inputs: n,
                targets: self.y.len(),
            });
        }
        let split = (n as f64 * (1.0 - fraction)) as usize;
        if split == 0 || split == n {
            return Err(Error::TrainOption {
                field: "validation_split",
                reason: format!("{fraction} of {n} samples leaves one side empty"),
            });
        }
        Ok((
            Data::new(self.x.slice(0..split), self.y.slice(0..split)),
            Data::new(self.x.slice(split..n), self.y.slice(split..n)),
        ))
    }
}

impl From<(Array2<f32>, Targets)> for Data {
    fn from((x, y): (Array2<f32>, Targets)) -> Self {
        Data::new(x, y)
    }
}

/// Checks inputs against the model: their width, and that every value is finite unless that is
/// already known.
fn check_rows(model: &Model, rows: &Rows, what: &'static str) -> Result<()> {
    if rows.is_known_finite() {
        model.check_width(rows.ncols(), what)
    } else {
        model.check_inputs(rows.view(), what)
    }
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every configured epoch ran.
    AllEpochs,
    /// EarlyStopping saw no improvement for `patience` epochs.
    EarlyStopping { best_epoch: Option<usize> },
    /// The caller asked to stop ([`Trainer::request_stop`]).
    Requested,
    /// TerminateOnNaN saw a NaN or infinite batch loss; the weights are those before that batch.
    TerminatedOnNan,
}

/// What [`Trainer::run_epoch`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum EpochOutcome {
    Completed {
        logs: EpochLogs,
        /// The checkpoint decision: save now. With a [`ModelCheckpoint`] it is its decision;
        /// without one, whether `val_loss` (or `loss` without validation data) is the best so far.
        improved: bool,
        /// Set when this was the last epoch.
        stop: Option<StopReason>,
    },
    /// The cancel flag was seen between batches; the weights include the batches already run.
    Cancelled,
}

/// Trains one model on one data set, an epoch at a time.
pub struct Trainer {
    model: Model,
    cfg: TrainConfig,
    train: Data,
    val: Option<Data>,
    ws: Workspace,
    eval_ws: Option<Workspace>,
    opt: OptimizerState,
    rng: ChaCha8Rng,
    perm: Vec<usize>,
    epoch: usize,
    history: Vec<EpochLogs>,
    stopped: Option<StopReason>,
    best_weights: Option<Vec<NamedTensor>>,
    pool: Pool,
}

/// Rows per validation forward pass: wider GEMMs than a training batch and the same results.
const EVAL_ROWS: usize = 256;

/// Version 2 adds the learning-rate variable and each epoch's learning rate; version 1 states
/// (written when the rate was always the optimizer's constant) still restore.
const STATE_FORMAT: &str = "fitd-training-state/2";
const STATE_FORMAT_V1: &str = "fitd-training-state/1";

impl Trainer {
    /// Checks the data and configuration against the model, fits its `pca` layers on the training
    /// inputs and prepares every buffer.
    pub fn new(
        mut model: Model,
        cfg: TrainConfig,
        train: impl Into<Data>,
        val: Option<Data>,
    ) -> Result<Trainer> {
        let train = train.into();
        cfg.check(val.is_some()).map_err(Error::InvalidConfig)?;
        if train.is_empty() {
            return Err(Error::Empty("training data"));
        }
        check_rows(&model, &train.x, "training inputs")?;
        if let Some(v) = &val {
            check_rows(&model, &v.x, "validation inputs")?;
        }
        model.fit_pcas(train.x.view())?;
        Self::assemble(model, cfg, train, val)
    }

    fn assemble(model: Model, cfg: TrainConfig, train: Data, val: Option<Data>) -> Result<Trainer> {
        cfg.check(val.is_some()).map_err(Error::InvalidConfig)?;
        if !model.has_trainable() {
            return Err(Error::TrainOption {
                field: "layers",
                reason: "the model has no trainable layer; add a dense layer".into(),
            });
        }
        check_rows(&model, &train.x, "training inputs")?;
        model.check_targets(train.x.view(), &train.y, cfg.loss, "training data")?;
        if let Some(v) = &val {
            check_rows(&model, &v.x, "validation inputs")?;
            model.check_targets(v.x.view(), &v.y, cfg.loss, "validation data")?;
        }
        let n = train.len();
        let ws = Workspace::new(&model, cfg.batch_size.min(n), true);
        let eval_ws = val
            .as_ref()
            .map(|v| Workspace::new(&model, EVAL_ROWS.min(v.len()), false));
        let opt = OptimizerState::new(&cfg.optimizer, &model.param_lens());
        let cfg_threads = cfg.threads;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Ok(Trainer {
            model,
            cfg,
            train,
            val,
            ws,
            eval_ws,
            opt,
            rng,
            perm: (0..n).collect(),
            epoch: 0,
            history: Vec::new(),
            stopped: None,
            best_weights: None,
            pool: Pool::new(resolve_threads(cfg_threads)),
        })
    }

    /// Keras's `validation_split`: the *last* `fraction` of the samples (before any shuffling)
    /// become validation data.
    ///
    /// # Shapes
    /// `x`: `(n, input_dim)`, `y`: `n` targets.
    pub fn split_validation(x: ArrayView2<f32>, y: &Targets, fraction: f64) -> Result<(Data, Data)> {
        let errors = validation_split_errors(fraction);
        if !errors.is_empty() {
            return Err(Error::InvalidConfig(errors));
        }
        if x.nrows() != y.len() {
            return Err(Error::SampleCount {
                what: "training data",
                inputs: x.nrows(),
                targets: y.len(),
            });
        }
        Data::new(x.to_owned(), y.clone()).split_validation(fraction)
    }

    /// Runs one epoch: shuffle, every batch (calling `on_batch(done, total)` after each and checking
    /// `cancel` before each), validation, then the callback decisions.
    pub fn run_epoch(
        &mut self,
        on_batch: &mut dyn FnMut(usize, usize),
        cancel: &AtomicBool,
    ) -> Result<EpochOutcome> {
        if self.is_finished() {
            return Err(Error::Finished);
        }
        let _ftz = FlushToZero::new();
        let start = Instant::now();
        // LearningRateScheduler's `on_epoch_begin`.
        if let Some(lr) = self.scheduled_rate(self.epoch) {
            self.opt.learning_rate = lr as f32;
        }
        let x = self.train.x.clone();
        let n = x.nrows();
        let bs = self.ws.cap;
        let total = n.div_ceil(bs);
        // A fresh permutation each epoch, so the shuffle depends only on the RNG state.
        for (i, p) in self.perm.iter_mut().enumerate() {
            *p = i;
        }
        if self.cfg.shuffle {
            for i in (1..n).rev() {
                let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                self.perm.swap(i, j);
            }
        }
        let loss = self.cfg.loss;
        let ob = *self.ws.out_buf.last().expect("at least one layer");
        let mut stats = BatchStats::default();
        // Samples whose loss is in `stats`; all of them unless TerminateOnNaN ends the epoch early.
        let mut seen = n;
        let mut terminated = false;
        for b in 0..total {
            if cancel.load(Ordering::Relaxed) {
                return Ok(EpochOutcome::Cancelled);
            }
            let (lo, hi) = (b * bs, ((b + 1) * bs).min(n));
            let m = hi - lo;
            let mut input = std::mem::take(&mut self.ws.input);
            let base = input.as_mut_ptr();
            let gather = Gather {
                src: x.view(),
                rows: &self.perm[lo..hi],
                dst: SendPtr(base),
            };
            let in_par = self.ws.gathers_in_par(&self.pool);
            if !in_par {
                gather.copy_all();
            }
            // A view made from the buffer's pointer, not a borrow of it: the parallel forward pass
            // writes the rows through `gather.dst` before any layer reads them.
            // SAFETY: `input` holds `cap >= m` rows of the input width and lives past every use.
            let xb = unsafe { ArrayView2::from_shape_ptr((m, x.ncols()), base.cast_const()) };
            self.model.forward(
                xb,
                &mut self.ws,
                Some(&mut self.rng),
                &self.pool,
                in_par.then_some(gather),
            );
            let perm = &self.perm;
            let st = batch_loss(
                loss,
                self.ws.outs[ob].slice(s![..m, ..]),
                &self.train.y,
                |r| perm[lo + r],
                Some(self.ws.grads[ob].slice_mut(s![..m, ..])),
            );
            // Keras computes the loss in float32: one beyond its range has diverged as surely as NaN.
            let batch_loss = (st.loss / m as f64) as f32;
            if !batch_loss.is_finite() {
                self.ws.input = input;
                if !self.terminates_on_nan() {
                    return Err(Error::LossDiverged {
                        epoch: self.epoch,
                        batch: b,
                        value: batch_loss as f64,
                    });
                }
                // Keras stops after this batch and still ends the epoch (validation, callbacks),
                // logging the non-finite loss; here the batch's update is skipped, so the weights
                // stay finite.
                stats.loss = batch_loss as f64;
                stats.correct += st.correct;
                seen = hi;
                terminated = true;
                on_batch(b + 1, total);
                break;
            }
            stats.loss += st.loss;
            stats.correct += st.correct;
            self.model.backward(
                xb,
                &mut self.ws,
                loss.fused(),
                &self.pool,
                Some((&mut self.opt, &self.cfg.optimizer)),
            );
            self.opt.finish_step();
            self.ws.input = input;
            on_batch(b + 1, total);
        }
        let (val_loss, val_accuracy) = match (&self.val, &mut self.eval_ws) {
            (Some(v), Some(ws)) => {
                let e = self.model.evaluate_with(v.x.view(), &v.y, loss, ws, &self.pool);
                (Some(e.loss), e.accuracy)
            }
            _ => (None, None),
        };
        let accuracy = self.cfg.accuracy;
        let logs = EpochLogs {
            epoch: self.epoch,
            loss: stats.loss / seen as f64,
            accuracy: accuracy.then_some(stats.correct / seen as f64),
            val_loss,
            val_accuracy: val_accuracy.filter(|_| accuracy),
            learning_rate: self.opt.current_learning_rate(&self.cfg.optimizer) as f64,
            duration: start.elapsed(),
        };
        self.history.push(logs.clone());
        self.epoch += 1;
        let (improved, mut stop) = self.decide();
        if terminated {
            stop = Some(StopReason::TerminatedOnNan);
        }
        self.stopped = stop;
        Ok(EpochOutcome::Completed { logs, improved, stop })
    }

    fn monitored(&self, metric: &str) -> Vec<f64> {
        self.history
            .iter()
            .map(|l| l.get(metric).unwrap_or(f64::NAN))
            .collect()
    }

    /// LearningRateScheduler's rate for the start of `epoch`, if it sets one.
    fn scheduled_rate(&self, epoch: usize) -> Option<f64> {
        self.cfg.callbacks.iter().find_map(|c| match c {
            Callback::LearningRateScheduler(s) => s.rate_at(epoch),
            _ => None,
        })
    }

    /// Whether TerminateOnNaN ends training gracefully at a non-finite loss.
    fn terminates_on_nan(&self) -> bool {
        self.cfg
            .callbacks
            .iter()
            .any(|c| matches!(c, Callback::TerminateOnNan(t) if !t.raise_error))
    }

    /// The callback decisions after the last epoch of the history; snapshots the best weights and
    /// applies ReduceLROnPlateau's new learning rate.
    fn decide(&mut self) -> (bool, Option<StopReason>) {
        let last = self.epoch - 1;
        let mut stop = None;
        for c in &self.cfg.callbacks {
            if let Callback::ReduceLrOnPlateau(r) = c {
                let rates = self.monitored("learning_rate");
                if let Some(lr) = r.decide(&self.monitored(&r.monitor), &rates).new_lr {
                    self.opt.learning_rate = lr;
                }
            }
        }
        if let Some(es) = self.cfg.early_stopping() {
            let d = es.decide(&self.monitored(&es.monitor));
            if es.restore_best_weights && d.best_epoch == Some(last) {
                self.best_weights = Some(self.model.tensors());
            }
            if d.stop {
                stop = Some(StopReason::EarlyStopping {
                    best_epoch: d.best_epoch,
                });
            }
        }
        let improved = match self.cfg.checkpoint() {
            Some(c) => c.should_save(&self.monitored(&c.monitor)),
            None => {
                let metric = if self.val.is_some() { "val_loss" } else { "loss" };
                let c = ModelCheckpoint {
                    monitor: metric.into(),
                    save_best_only: true,
                    mode: Default::default(),
                };
                c.should_save(&self.monitored(metric))
            }
        };
        if stop.is_none() && self.epoch >= self.cfg.epochs {
            stop = Some(StopReason::AllEpochs);
        }
        (improved, stop)
    }

    /// Ends training after the current epoch (the per-epoch hook's "stop").
    pub fn request_stop(&mut self) {
        if self.stopped.is_none() {
            self.stopped = Some(StopReason::Requested);
        }
    }

    /// Completed epochs.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Whether no further epoch will run.
    pub fn is_finished(&self) -> bool {
        self.stopped.is_some() || self.epoch >= self.cfg.epochs
    }

    /// Why training ended, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stopped
            .or((self.epoch >= self.cfg.epochs).then_some(StopReason::AllEpochs))
    }

    /// The epoch EarlyStopping considers best (or, without it, the one with the lowest `val_loss`,
    /// else `loss`).
    pub fn best_epoch(&self) -> Option<usize> {
        match self.cfg.early_stopping() {
            Some(es) => es.decide(&self.monitored(&es.monitor)).best_epoch,
            None => {
                let metric = if self.val.is_some() { "val_loss" } else { "loss" };
                let es = EarlyStopping {
                    monitor: metric.into(),
                    ..Default::default()
                };
                es.decide(&self.monitored(metric)).best_epoch
            }
        }
    }

    /// Logs of every completed epoch.
    pub fn history(&self) -> &[EpochLogs] {
        &self.history
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The trained model, with the best epoch's weights if EarlyStopping's `restore_best_weights` is
    /// set (as Keras 3 does at the end of training).
    pub fn finish(mut self) -> Model {
        if let Some(best) = self.best_weights.take()
            && self.cfg.early_stopping().is_some_and(|e| e.restore_best_weights)
        {
            self.model
                .load_tensors(&best)
                .expect("a snapshot of this model's own tensors always loads");
        }
        self.model
    }

    /// Everything needed to continue exactly where this trainer is: weights, optimizer slots and
    /// step count, epoch, RNG position, metric history (the callbacks' whole state) and the best
    /// weights. A safetensors file with string metadata.
    pub fn save_state(&self) -> Vec<u8> {
        let mut tensors: Vec<NamedTensor> = Vec::new();
        let named = |name: String, shape: Vec<usize>, data: &[f32]| NamedTensor {
            name,
            shape,
            data: data.to_vec(),
        };
        for t in self.model.tensors() {
            tensors.push(named(format!("model/{}", t.name), t.shape, &t.data));
        }
        let slot_names = self.cfg.optimizer.slot_names();
        for (pname, slots) in self.model.param_names().iter().zip(&self.opt.slots) {
            for (sname, slot) in slot_names.iter().zip(slots) {
                tensors.push(named(format!("opt/{pname}/{sname}"), vec![slot.len()], slot));
            }
        }
        for t in self.best_weights.iter().flatten() {
            tensors.push(named(format!("best/{}", t.name), t.shape.clone(), &t.data));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), STATE_FORMAT.to_string());
        meta.insert("optimizer".into(), self.cfg.optimizer.name().into());
        meta.insert("slots".into(), slot_names.join(","));
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("iterations".into(), self.opt.iterations.to_string());
        meta.insert(
            "learning_rate".into(),
            format!("{:08x}", self.opt.learning_rate.to_bits()),
        );
        meta.insert("rng_seed".into(), hex::encode(self.rng.get_seed()));
        meta.insert("rng_stream".into(), self.rng.get_stream().to_string());
        meta.insert("rng_word_pos".into(), self.rng.get_word_pos().to_string());
        meta.insert("history".into(), encode_history(&self.history));
        meta.insert(
            "stopped".into(),
            match self.stopped {
                None => String::new(),
                Some(StopReason::AllEpochs) => "all_epochs".into(),
                Some(StopReason::Requested) => "requested".into(),
                Some(StopReason::TerminatedOnNan) => "terminate_on_nan".into(),
                Some(StopReason::EarlyStopping { best_epoch }) => {
                    format!(
                        "early_stopping:{}",
                        best_epoch.map_or("-".into(), |e| e.to_string())
                    )
                }
            },
        );
        tensor_file::encode(&tensors, meta)
    }

    /// Rebuilds a trainer from [`Trainer::save_state`] bytes, the same model configuration, training
    /// configuration (the epoch count may differ) and data.
    pub fn restore(
        model_config: &ModelConfig,
        cfg: TrainConfig,
        bytes: &[u8],
        train: impl Into<Data>,
        val: Option<Data>,
    ) -> Result<Trainer> {
        let bad = |m: String| Error::State(m);
        let (all, meta) = tensor_file::decode(bytes).map_err(|e| bad(e.to_string()))?;
        let get = |k: &str| {
            meta.get(k)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("missing metadata {k:?}")))
        };
        let v1 = match get("format")? {
            STATE_FORMAT => false,
            STATE_FORMAT_V1 => true,
            other => return Err(bad(format!("unknown format {other:?}"))),
        };
        let tensors: HashMap<String, NamedTensor> = all.into_iter().map(|t| (t.name.clone(), t)).collect();
        let prefixed = |prefix: &str| -> Vec<NamedTensor> {
            let mut v: Vec<NamedTensor> = tensors
                .values()
                .filter_map(|t| {
                    t.name.strip_prefix(prefix).map(|n| NamedTensor {
                        name: n.to_string(),
                        ..t.clone()
                    })
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let mut model = Model::new(model_config, 0)?;
        model.load_tensors(&prefixed("model/"))?;
        let mut t = Self::assemble(model, cfg, train.into(), val)?;
        let slot_names = t.cfg.optimizer.slot_names();
        if get("optimizer")? != t.cfg.optimizer.name() || get("slots")? != slot_names.join(",") {
            return Err(bad(format!(
                "saved with optimizer {} ({}), restored with {} ({})",
                get("optimizer")?,
                get("slots")?,
                t.cfg.optimizer.name(),
                slot_names.join(",")
            )));
        }
        for (p, pname) in t.model.param_names().iter().enumerate() {
            for (s, sname) in slot_names.iter().enumerate() {
                let key = format!("opt/{pname}/{sname}");
                let tensor = tensors
                    .get(&key)
                    .ok_or_else(|| bad(format!("missing optimizer slot {key}")))?;
                if tensor.data.len() != t.opt.slots[p][s].len() {
                    return Err(bad(format!("optimizer slot {key} has the wrong length")));
                }
                t.opt.slots[p][s].copy_from_slice(&tensor.data);
            }
        }
        let parse =
            |k: &str| -> Result<u128> { get(k)?.parse::<u128>().map_err(|e| bad(format!("{k}: {e}"))) };
        t.opt.iterations = parse("iterations")? as u64;
        t.epoch = parse("epoch")? as usize;
        let seed: [u8; 32] = hex::decode(get("rng_seed")?)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("rng_seed must be 64 hex digits".into()))?;
        t.rng = ChaCha8Rng::from_seed(seed);
        t.rng.set_stream(parse("rng_stream")? as u64);
        t.rng.set_word_pos(parse("rng_word_pos")?);
        // Version 1 states come from runs whose rate was always the optimizer's constant.
        let v1_rate = t.opt.learning_rate as f64;
        t.history = decode_history(get("history")?, v1.then_some(v1_rate))
            .ok_or_else(|| bad("unreadable history".into()))?;
        if !v1 {
            t.opt.learning_rate = u32::from_str_radix(get("learning_rate")?, 16)
                .map(f32::from_bits)
                .map_err(|e| bad(format!("learning_rate: {e}")))?;
        }
        if t.history.len() != t.epoch {
            return Err(bad(format!(
                "history has {} epochs, state says {}",
                t.history.len(),
                t.epoch
            )));
        }
        t.stopped = match get("stopped")? {
            "" => None,
            "all_epochs" => (t.epoch >= t.cfg.epochs).then_some(StopReason::AllEpochs),
            "requested" => Some(StopReason::Requested),
            "terminate_on_nan" => Some(StopReason::TerminatedOnNan),
            other => match other.strip_prefix("early_stopping:") {
                Some(e) => Some(StopReason::EarlyStopping {
                    best_epoch: e.parse().ok(),
                }),
                None => return Err(bad(format!("unknown stop reason {other:?}"))),
            },
        };
        let best = prefixed("best/");
        if !best.is_empty() {
            let mut check = t.model.clone();
            check.load_tensors(&best)?;
            t.best_weights = Some(best);
        }
        Ok(t)
    }
}

fn encode_f64(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:016x}", v.to_bits()))
}

fn decode_f64(s: &str) -> Option<Option<f64>> {
    if s == "-" {
        Some(None)
    } else {
        u64::from_str_radix(s, 16).ok().map(|b| Some(f64::from_bits(b)))
    }
}

/// One line per epoch; floats as their bit patterns so a resumed run compares metrics exactly.
fn encode_history(history: &[EpochLogs]) -> String {
    history
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {} {} {} {}",
                l.epoch,
                encode_f64(Some(l.loss)),
                encode_f64(l.accuracy),
                encode_f64(l.val_loss),
                encode_f64(l.val_accuracy),
                l.duration.as_nanos(),
                encode_f64(Some(l.learning_rate)),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads [`encode_history`]'s lines; version 1 lines have no learning rate and take `v1_rate`.
fn decode_history(s: &str, v1_rate: Option<f64>) -> Option<Vec<EpochLogs>> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let learning_rate = match (f.len(), v1_rate) {
                (6, Some(r)) => r,
                (7, None) => decode_f64(f[6])??,
                _ => return None,
            };
            Some(EpochLogs {
                epoch: f[0].parse().ok()?,
                loss: decode_f64(f[1])??,
                accuracy: decode_f64(f[2])?,
                val_loss: decode_f64(f[3])?,
                val_accuracy: decode_f64(f[4])?,
                duration: Duration::from_nanos(f[5].parse().ok()?),
                learning_rate,
            })
        })
        .collect()
}

/// Trains `model` until the epochs run out, EarlyStopping fires or `on_epoch` returns
/// `ControlFlow::Break`; returns the finished model and every epoch's logs.
pub fn fit(
    model: Model,
    cfg: TrainConfig,
    train: impl Into<Data>,
    val: Option<Data>,
    mut on_epoch: impl FnMut(&EpochLogs) -> ControlFlow<()>,
) -> Result<(Model, Vec<EpochLogs>)> {
    let mut trainer = Trainer::new(model, cfg, train, val)?;
    let never = AtomicBool::new(false);
    while !trainer.is_finished() {
        if let EpochOutcome::Completed { logs, .. } = trainer.run_epoch(&mut |_, _| {}, &never)?
            && on_epoch(&logs).is_break()
        {
            trainer.request_stop();
        }
    }
    let history = trainer.history().to_vec();
    Ok((trainer.finish(), history))
}
