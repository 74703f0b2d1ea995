//! A worker thread's life: claim the oldest queued job, train it epoch by epoch (storing each
//! epoch's metrics, event and checkpoint in one transaction before broadcasting), and end it as
//! succeeded, failed, cancelled or back in the queue. A panic fails the job, never the thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::search::{self, TrialCtx};
use super::{JobEvent, RunFlags, Shared, data, retention};
use crate::domain::job::{CreateJobRequest, JobStatus, ModelFacts, StopReason};
use crate::domain::model::ModelSpec;
use crate::nn::{self, EpochLogs, EpochOutcome, Model, Trainer};
use crate::store::jobs::{EpochRecord, EventRow, Finish, JobRow};
use crate::store::saved_models::{SavedModelRow, SavedModelSource, encode_weights};
use crate::store::{self, new_id, now_rfc3339};

/// At most this many progress events per second per job.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a run failed; the message becomes the job's `error`.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Nn(#[from] nn::Error),
    #[error("{0}")]
    Store(#[from] store::Error),
    #[error("{0}")]
    Load(#[from] data::LoadError),
    #[error("{0}")]
    Invalid(String),
}

/// How a run ended, when it did not fail.
enum Ended {
    /// Written as succeeded or cancelled.
    Finished,
    /// Put back in the queue by a shutdown.
    Requeued,
    /// Another writer already ended the job.
    Gone,
    /// The claim passed to another worker (this one's lease expired): nothing more was written.
    Lost,
}

/// Renews the job's lease every [`super::WorkerOptions::renew_every`] until cancelled. A renewal
/// also brings a cancel requested on any node; a refused one means the claim is lost, and the job
/// stops at its next batch without writing.
fn keep_lease(
    shared: &Arc<Shared>,
    job: &JobRow,
    flags: &Arc<RunFlags>,
) -> tokio_util::sync::CancellationToken {
    let done = tokio_util::sync::CancellationToken::new();
    let (store, id, attempt) = (shared.store.clone(), job.id.clone(), job.attempts);
    let (every, lease_ms) = (
        shared.options.renew_every(),
        shared.options.lease.as_millis() as i64,
    );
    let (flags, stop) = (Arc::clone(flags), done.clone());
    shared.rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store::jobs::renew_lease(&store, &id, attempt, lease_ms).await {
                Ok(Some(cancel)) => {
                    if cancel {
                        flags.stop.store(true, Ordering::SeqCst);
                    }
                }
                Ok(None) => {
                    if stop.is_cancelled() {
                        return;
                    }
                    flags.lost.store(true, Ordering::SeqCst);
                    flags.stop.store(true, Ordering::SeqCst);
                    return;
                }
                // The database may be back before the lease runs out: keep trying.
                Err(e) => tracing::warn!(job = %id, error = %e, "renewing the job's lease failed"),
            }
        }
    });
    done
}

pub(crate) fn worker_loop(shared: &Arc<Shared>, index: usize) {
    nn::enable_flush_to_zero();
    let worker = format!("{}/{index}", shared.options.node);
    let claimant = store::jobs::Claimant {
        worker: &worker,
        lease_ms: shared.options.lease.as_millis() as i64,
    };
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        // Read before looking at the queue, so a job queued in between still wakes us.
        let seen = shared.generation();
        let claimed = shared
            .rt
            .block_on(store::jobs::claim_next(&shared.store, claimant, |job| {
                store::jobs::status_event_data(JobStatus::Running, job.epoch, job.attempts)
            }));
        match claimed {
            Ok(Some((job, running))) => {
                if job.attempts == 1
                    && let Some(waited) = queue_wait(&job)
                {
                    shared.metrics.job_started(waited);
                }
                shared.hub.publish(&job.id, JobEvent::from(&running));
                tracing::info!(job = %job.id, attempt = job.attempts, %worker, "job claimed");
                run_claimed(shared, job);
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "claiming a job failed"),
        }
        // The timeout is a backstop: a missed wake-up costs at most this long.
        shared.wait_for_work(seen, Duration::from_secs(2));
    }
}

/// From submitting a job to its first start. Both timestamps have whole milliseconds, so a job
/// claimed within the millisecond it was created waits zero (never a negative, unrecorded wait).
fn queue_wait(job: &JobRow) -> Option<Duration> {
    use time::format_description::well_known::Rfc3339;
    let created = time::OffsetDateTime::parse(&job.created_at, &Rfc3339).ok()?;
    let started = time::OffsetDateTime::parse(job.started_at.as_deref()?, &Rfc3339).ok()?;
    Some((started - created).try_into().unwrap_or(Duration::ZERO))
}

fn run_claimed(shared: &Arc<Shared>, job: JobRow) {
    let flags = Arc::new(RunFlags::default());
    {
        let mut map = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(job.id.clone(), Arc::clone(&flags));
    }
    // The flags may have been missed: a shutdown or cancel that came before they were registered.
    if shared.shutdown.is_cancelled() {
        flags.requeue.store(true, Ordering::SeqCst);
        flags.stop.store(true, Ordering::SeqCst);
    }
    match shared.rt.block_on(store::jobs::get(&shared.store, &job.id)) {
        Ok(j) if j.cancel_requested => flags.stop.store(true, Ordering::SeqCst),
        _ => {}
    }
    if let Ok(seq) = shared
        .rt
        .block_on(store::jobs::last_event_seq(&shared.store, &job.id))
    {
        flags.last_seq.store(seq, Ordering::SeqCst);
    }
    tracing::info!(job = %job.id, attempt = job.attempts, "job started");
    let trial = match shared.rt.block_on(search::trial_ctx(&shared.store, &job.id)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "reading the job's search trial failed");
            None
        }
    };
    if let Some(t) = &trial
        && let Err(e) = shared.rt.block_on(search::trial_started(
            &shared.store,
            &shared.hub,
            t,
            &job.id,
            job.attempts,
        ))
    {
        tracing::error!(job = %job.id, error = %e, "recording a trial's start failed");
    }
    let keeper = keep_lease(shared, &job, &flags);
    let result = catch_unwind(AssertUnwindSafe(|| run(shared, &job, &flags, trial.as_ref())));
    keeper.cancel();
    let result = match result {
        Ok(Err(RunError::Store(store::Error::StaleClaim(_)))) => Ok(Ok(Ended::Lost)),
        _ if flags.lost.load(Ordering::SeqCst) => Ok(Ok(Ended::Lost)),
        other => other,
    };
    let failure = match result {
        Ok(Ok(Ended::Finished)) => None,
        Ok(Ok(Ended::Requeued)) => {
            tracing::info!(job = %job.id, "job put back in the queue");
            None
        }
        Ok(Ok(Ended::Gone)) => None,
        Ok(Ok(Ended::Lost)) => {
            tracing::warn!(job = %job.id, attempt = job.attempts,
                "the job's claim passed to another worker; stopped without writing more");
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Some(format!("training crashed: {msg}"))
        }
    };
    if let Some(error) = failure {
        tracing::warn!(job = %job.id, %error, "job failed");
        let status = store::jobs::status_event_data(JobStatus::Failed, None, job.attempts);
        let done = json!({"status": "failed", "stop_reason": "error", "error": error,
                          "saved_model_id": null, "best_epoch": null})
        .to_string();
        let f = Finish {
            job_id: &job.id,
            attempt: job.attempts,
            status: JobStatus::Failed.as_str(),
            stop_reason: StopReason::Error.as_str(),
            error: Some(&error),
            best_epoch: None,
            saved_model: None,
            status_event: &status,
            done_event: &done,
        };
        match shared.rt.block_on(store::jobs::finish(&shared.store, &f)) {
            Ok(Some(events)) => shared.hub.publish_rows(&job.id, &events),
            Ok(None) => {}
            Err(e) => tracing::error!(job = %job.id, error = %e, "recording a failed job failed"),
        }
    }
    {
        let mut map = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&job.id);
    }
    // A requeued job goes on later, a lost one elsewhere: their streams stay open.
    if !flags.requeue.load(Ordering::SeqCst) && !flags.lost.load(Ordering::SeqCst) {
        shared.hub.close(&job.id);
        if let Some(t) = &trial {
            // The trial is over: record it and queue the search's next trials.
            match shared
                .rt
                .block_on(search::reconcile(&shared.store, &shared.hub, &t.search_id))
            {
                Ok(n) if n > 0 => shared.wake_workers(),
                Ok(_) => {}
                Err(e) => tracing::error!(search = %t.search_id, error = %e, "updating a search failed"),
            }
        }
    }
}

/// How long a worker keeps retrying a write the database refused for a passing reason (it
/// restarted, the connection dropped, the disk was full) before the job fails.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Runs a store write, retrying with backoff (0.1 s doubling to 5 s) while it fails for a reason
/// that may pass, for up to [`WRITE_RETRY_FOR`]; constraint violations, a lost claim and shutdown
/// end it at once. The write must be a single transaction, so a retry never doubles anything.
fn retrying<T, F, Fut>(
    shared: &Shared,
    flags: &RunFlags,
    job_id: &str,
    what: &str,
    mut write: F,
) -> Result<T, store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, store::Error>>,
{
    let start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match shared.rt.block_on(write()) {
            Err(e @ (store::Error::Sqlx(_) | store::Error::Io(_)))
                if transient(&e)
                    && start.elapsed() < WRITE_RETRY_FOR
                    && !flags.lost.load(Ordering::SeqCst)
                    && !shared.shutdown.is_cancelled() =>
            {
                tracing::warn!(job = job_id, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "{what} failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Whether a failed write may succeed later: the connection, the pool, the server or the disk,
/// as opposed to a statement the data will always refuse.
fn transient(e: &store::Error) -> bool {
    match e {
        store::Error::Io(_) => true,
        store::Error::Sqlx(sqlx::Error::Database(db)) => !matches!(
            db.kind(),
            sqlx::error::ErrorKind::UniqueViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::CheckViolation
        ),
        store::Error::Sqlx(_) => true,
        _ => false,
    }
}

/// The metrics JSON stored per epoch and shown in History and checkpoints.
fn metrics_json(logs: &EpochLogs, accuracy: bool) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("loss".into(), json!(logs.loss));
    if accuracy && let Some(a) = logs.accuracy {
        m.insert("accuracy".into(), json!(a));
    }
    if let Some(v) = logs.val_loss {
        m.insert("val_loss".into(), json!(v));
    }
    if accuracy && let Some(a) = logs.val_accuracy {
        m.insert("val_accuracy".into(), json!(a));
    }
    Value::Object(m)
}

fn monitored(history: &[EpochLogs], metric: &str) -> Vec<f64> {
    history
        .iter()
        .map(|l| l.get(metric).unwrap_or(f64::NAN))
        .collect()
}

fn run(
    shared: &Arc<Shared>,
    job: &JobRow,
    flags: &RunFlags,
    trial: Option<&TrialCtx>,
) -> Result<Ended, RunError> {
    let rt = &shared.rt;
    let st = &shared.store;
    let req: CreateJobRequest = serde_json::from_str(&job.request)
        .map_err(|e| RunError::Invalid(format!("stored request is unreadable: {e}")))?;
    let mut plan = req.plan().map_err(|errs| {
        RunError::Invalid(
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    plan.train.threads = (shared.threads)(plan.train.batch_size);
    let model_row = rt.block_on(store::models::get(st, &job.model_id))?;
    let spec: ModelSpec = serde_json::from_str(&model_row.spec)
        .map_err(|e| RunError::Invalid(format!("stored model spec is unreadable: {e}")))?;
    let config = spec.to_nn();
    let facts = model_facts(&config);
    let units = facts.last_dense.map_or(0, |(u, _)| u);
    let setup = Instant::now();
    let (train, val) = rt.block_on(data::load(
        st,
        &job.dataset_id,
        &plan.validation,
        plan.train.loss,
        units,
    ))?;
    let n_train = train.len();
    let checkpoint = rt.block_on(store::jobs::latest_checkpoint(st, &job.id))?;
    let mut stored: Vec<usize> = rt
        .block_on(store::jobs::list_checkpoints(st, &job.id))?
        .iter()
        .map(|c| c.epoch as usize)
        .collect();
    let mut trainer = match checkpoint {
        Some((_, state)) => Trainer::restore(&config, plan.train.clone(), &state, train, val)?,
        None => {
            let mut model = Model::new(&config, req.seed())?;
            if let Some(id) = &req.initial_weights {
                let saved = rt.block_on(store::saved_models::get(st, id))?;
                let tensors = store::saved_models::decode_weights(&saved.weights)?;
                model.load_tensors(&tensors)?;
            }
            Trainer::new(model, plan.train.clone(), train, val)?
        }
    };
    tracing::info!(job = %job.id, ms = setup.elapsed().as_millis() as u64, resumed_at = ?trainer.history().len(),
        "job data loaded and trainer ready");
    let maximize = plan.checkpoint_mode.maximizes(&plan.checkpoint_monitor);
    let mut last_progress: Option<Instant> = None;
    // Set when the search stops the trial at a rung.
    let mut stopped_by_search = false;
    while !trainer.is_finished() {
        let epoch = trainer.history().len();
        if let Some(t) = trial
            && rt.block_on(search::at_rung(st, &shared.hub, t, &job.id, epoch))?
                == Some(crate::search::Decision::Stop)
        {
            stopped_by_search = true;
            trainer.request_stop();
            break;
        }
        let hub = &shared.hub;
        let outcome = trainer.run_epoch(
            &mut |done, total| {
                flags.batches_done.store(done, Ordering::Relaxed);
                flags.batches_total.store(total, Ordering::Relaxed);
                if last_progress.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    last_progress = Some(Instant::now());
                    let data = json!({"epoch": epoch, "batches_done": done, "batches_total": total});
                    hub.publish(
                        &job.id,
                        JobEvent {
                            seq: flags.last_seq.load(Ordering::SeqCst),
                            event: "progress".into(),
                            data: data.to_string().into(),
                            persisted: false,
                        },
                    );
                }
            },
            &flags.stop,
        )?;
        let logs = match outcome {
            EpochOutcome::Completed { logs, .. } => logs,
            EpochOutcome::Cancelled => return stop(shared, job, flags),
        };
        shared.metrics.epoch(logs.duration, n_train);
        let mut metrics = metrics_json(&logs, plan.accuracy);
        // History's `learning_rate`, as Keras's rate callbacks log it.
        metrics["learning_rate"] = json!(logs.learning_rate);
        let duration_ms = logs.duration.as_secs_f64() * 1000.0;
        let mut event = json!({"epoch": logs.epoch, "loss": logs.loss,
            "accuracy": null, "val_loss": logs.val_loss, "val_accuracy": null,
            "learning_rate": logs.learning_rate, "duration_ms": duration_ms});
        if plan.accuracy {
            event["accuracy"] = json!(logs.accuracy);
            event["val_accuracy"] = json!(logs.val_accuracy);
        }
        stored.push(logs.epoch);
        let values = monitored(trainer.history(), &plan.checkpoint_monitor);
        let keep = retention::decide(&values, maximize, &stored);
        stored.retain(|e| !keep.delete.contains(e));
        let job_best = job_best_epoch(&trainer, keep.best);
        let state = trainer.save_state();
        let ckpt_event = json!({"epoch": logs.epoch, "is_best": keep.best == Some(logs.epoch),
            "best_epoch": keep.best, "metrics": metrics});
        let delete: Vec<i64> = keep.delete.iter().map(|&e| e as i64).collect();
        let total = flags.batches_total.load(Ordering::Relaxed) as i64;
        let metrics_text = metrics.to_string();
        let (epoch_event, checkpoint_event) = (event.to_string(), ckpt_event.to_string());
        let record = EpochRecord {
            job_id: &job.id,
            attempt: job.attempts,
            epoch: logs.epoch as i64,
            metrics: &metrics_text,
            duration_ms,
            epoch_event: &epoch_event,
            state: &state,
            best_epoch: keep.best.map(|e| e as i64),
            delete: &delete,
            checkpoint_event: &checkpoint_event,
            batches_total: total,
            job_best_epoch: job_best.map(|e| e as i64),
        };
        let events = retrying(shared, flags, &job.id, "storing an epoch", || {
            store::jobs::record_epoch(st, &record)
        })?;
        publish(shared, job, flags, &events);
        if let Some(t) = trial
            && let Err(e) = rt.block_on(search::trial_epoch(
                st,
                &shared.hub,
                t,
                &job.id,
                logs.epoch,
                &metrics,
            ))
        {
            tracing::error!(job = %job.id, error = %e, "recording a trial's epoch failed");
        }
    }
    succeed(
        shared,
        job,
        flags,
        &model_row.spec,
        &plan,
        trainer,
        stopped_by_search,
    )
}

fn publish(shared: &Shared, job: &JobRow, flags: &RunFlags, events: &[EventRow]) {
    if let Some(last) = events.last() {
        flags.last_seq.store(last.seq, Ordering::SeqCst);
    }
    shared.hub.publish_rows(&job.id, events);
}

/// The best epoch as the job reports it: early stopping's when configured (the one
/// `restore_best_weights` goes back to), else the checkpoint monitor's.
fn job_best_epoch(trainer: &Trainer, checkpoint_best: Option<usize>) -> Option<usize> {
    match trainer.config().early_stopping() {
        Some(_) => trainer.best_epoch(),
        None => checkpoint_best,
    }
}

fn model_facts(config: &nn::ModelConfig) -> ModelFacts {
    ModelFacts {
        input_dim: config.input_shape.iter().product(),
        last_dense: last_dense(config),
    }
}

/// Units and activation of the last layer when it is dense.
pub fn last_dense(config: &nn::ModelConfig) -> Option<(usize, nn::Activation)> {
    match config.layers.last().map(|l| &l.kind) {
        Some(nn::LayerKind::Dense {
            units, activation, ..
        }) => Some((*units, *activation)),
        _ => None,
    }
}

/// The trainer saw the stop flag: back to the queue on shutdown, else cancelled.
fn stop(shared: &Shared, job: &JobRow, flags: &RunFlags) -> Result<Ended, RunError> {
    let rt = &shared.rt;
    if flags.lost.load(Ordering::SeqCst) {
        return Ok(Ended::Lost);
    }
    if flags.requeue.load(Ordering::SeqCst) {
        let ev = rt.block_on(store::jobs::requeue(
            &shared.store,
            &job.id,
            job.attempts,
            &store::jobs::status_event_data(JobStatus::Queued, job.epoch, job.attempts),
        ))?;
        if let Some(ev) = ev {
            publish(shared, job, flags, &[ev]);
        }
        return Ok(Ended::Requeued);
    }
    let best = rt.block_on(store::jobs::get(&shared.store, &job.id))?.best_epoch;
    let status = store::jobs::status_event_data(JobStatus::Cancelled, None, job.attempts);
    let done = json!({"status": "cancelled", "stop_reason": "cancelled", "error": null,
                      "saved_model_id": null, "best_epoch": best})
    .to_string();
    let f = Finish {
        job_id: &job.id,
        attempt: job.attempts,
        status: JobStatus::Cancelled.as_str(),
        stop_reason: StopReason::Cancelled.as_str(),
        error: None,
        best_epoch: None,
        saved_model: None,
        status_event: &status,
        done_event: &done,
    };
    match rt.block_on(store::jobs::finish(&shared.store, &f))? {
        Some(events) => {
            publish(shared, job, flags, &events);
            Ok(Ended::Finished)
        }
        None => Ok(Ended::Gone),
    }
}

/// Stores the final (or restored best) weights as a saved model and ends the job succeeded.
fn succeed(
    shared: &Shared,
    job: &JobRow,
    flags: &RunFlags,
    spec: &str,
    plan: &crate::domain::job::JobPlan,
    trainer: Trainer,
    stopped_by_search: bool,
) -> Result<Ended, RunError> {
    let stop_reason = match trainer.stop_reason() {
        // A search's early stop of a trial at a rung.
        Some(nn::StopReason::Requested) if stopped_by_search => StopReason::EarlyStopping,
        Some(nn::StopReason::EarlyStopping { .. }) => StopReason::EarlyStopping,
        Some(nn::StopReason::TerminatedOnNan) => StopReason::TerminateOnNan,
        Some(nn::StopReason::AllEpochs | nn::StopReason::Requested) | None => StopReason::Completed,
    };
    let history = trainer.history().to_vec();
    let restores = trainer
        .config()
        .early_stopping()
        .is_some_and(|e| e.restore_best_weights);
    let best = match trainer.config().early_stopping() {
        Some(_) => trainer.best_epoch(),
        None => retention::best_epoch(
            &monitored(&history, &plan.checkpoint_monitor),
            plan.checkpoint_mode.maximizes(&plan.checkpoint_monitor),
        ),
    };
    let weights_epoch = if restores {
        best.or(history.last().map(|l| l.epoch))
    } else {
        history.last().map(|l| l.epoch)
    };
    let metrics = weights_epoch
        .and_then(|e| history.get(e))
        .map_or(json!({}), |l| metrics_json(l, plan.accuracy));
    let model = trainer.finish();
    let saved = SavedModelRow {
        id: new_id(),
        model_id: job.model_id.clone(),
        job_id: Some(job.id.clone()),
        epoch: weights_epoch.map(|e| e as i64),
        source: SavedModelSource::Job,
        metrics: metrics.to_string(),
        spec: spec.to_string(),
        weights: encode_weights(&model.tensors()),
        created_at: now_rfc3339(),
    };
    let status = store::jobs::status_event_data(
        JobStatus::Succeeded,
        history.last().map(|l| l.epoch as i64),
        job.attempts,
    );
    let done = json!({"status": "succeeded", "stop_reason": stop_reason.as_str(), "error": null,
                      "saved_model_id": saved.id, "best_epoch": best})
    .to_string();
    let f = Finish {
        job_id: &job.id,
        attempt: job.attempts,
        status: JobStatus::Succeeded.as_str(),
        stop_reason: stop_reason.as_str(),
        error: None,
        best_epoch: best.map(|e| e as i64),
        saved_model: Some(&saved),
        status_event: &status,
        done_event: &done,
    };
    match retrying(shared, flags, &job.id, "finishing the job", || {
        store::jobs::finish(&shared.store, &f)
    })? {
        Some(events) => {
            publish(shared, job, flags, &events);
            tracing::info!(job = %job.id, saved_model = %saved.id, "job succeeded");
            Ok(Ended::Finished)
        }
        None => Ok(Ended::Gone),
    }
}
