//! The search controller: turns a stored search into trial jobs on the shared queue, at most
//! `max_concurrent_trials` unfinished at a time; takes the ASHA decision when a trial completes
//! the epochs of a rung; records each trial's end; ends the search with its best trial.
//!
//! Everything it decides is stored before it acts, and every step is idempotent, so the same
//! calls after a restart (`resume`) pick up where a crash left off: finished trials stay
//! finished, stored rung decisions are replayed, and the trials still missing are created with
//! the parameters the seed gives them.

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{EventHub, JobEvent};
use crate::domain::job::{CreateJobRequest, JobStatus};
use crate::domain::model::ModelSpec;
use crate::search::hyperband::{self, Bracket};
use crate::search::{self, CreateSearchRequest, Decision, Method, SearchPlan};
use crate::store::jobs::{EventRow, JobRow};
use crate::store::models::ModelRow;
use crate::store::searches::{self as db, SearchRow, TrialRow};
use crate::store::{self, Error, Store, new_id, now_rfc3339};

/// Serialises the controller's read-decide-write steps (one server per database).
static LOCK: Mutex<()> = Mutex::const_new(());

/// The event hub channel of a search's stream.
pub fn hub_key(search_id: &str) -> String {
    format!("search:{search_id}")
}

fn publish(hub: &EventHub, search_id: &str, rows: &[EventRow]) {
    hub.publish_rows(&hub_key(search_id), rows);
}

/// What a worker needs to know about the trial its job runs.
#[derive(Debug, Clone)]
pub struct TrialCtx {
    pub search_id: String,
    pub trial: i64,
    pub metric: String,
    pub maximize: bool,
    /// asha / hyperband: where the trial is judged and against whom.
    pub asha: Option<Rungs>,
    pub params: Value,
}

/// The rungs of a trial of an asha or hyperband search.
#[derive(Debug, Clone)]
pub struct Rungs {
    /// Epoch counts at which the trial is judged.
    pub epochs: Vec<u32>,
    pub eta: u32,
    /// hyperband: the brackets, as a trial is judged only against the trials of its own.
    pub brackets: Option<Vec<Bracket>>,
}

impl Rungs {
    /// The rungs of trial `n` under `method` (`None` for grid and random).
    pub fn of(method: Method, n: u64) -> Option<Rungs> {
        match method {
            Method::Asha {
                min_epochs,
                max_epochs,
                eta,
            } => Some(Rungs {
                epochs: search::rungs(min_epochs, max_epochs, eta),
                eta,
                brackets: None,
            }),
            Method::Hyperband {
                min_epochs,
                max_epochs,
                eta,
            } => {
                let brackets = hyperband::brackets(min_epochs, max_epochs, eta);
                let mine = hyperband::bracket_of(&brackets, n);
                Some(Rungs {
                    epochs: brackets[mine].rungs.clone(),
                    eta,
                    brackets: Some(brackets),
                })
            }
            Method::Grid | Method::Random => None,
        }
    }

    /// hyperband: the `s` of trial `n`'s bracket.
    pub fn bracket(&self, n: i64) -> Option<u32> {
        let br = self.brackets.as_ref()?;
        Some(br[hyperband::bracket_of(br, n as u64)].s)
    }

    /// Whether trials `a` and `b` are judged against each other.
    fn peers(&self, a: i64, b: i64) -> bool {
        self.brackets
            .as_ref()
            .is_none_or(|br| hyperband::bracket_of(br, a as u64) == hyperband::bracket_of(br, b as u64))
    }
}

/// A stored search's request, checked plan, base job and base model spec.
pub struct Loaded {
    pub request: CreateSearchRequest,
    pub plan: SearchPlan,
    pub base_job: Value,
    pub base_model: Value,
}

/// Rebuilds the plan a search was created with (the same check, on the stored snapshots).
pub fn load(row: &SearchRow) -> Result<Loaded, String> {
    let request: CreateSearchRequest =
        serde_json::from_str(&row.request).map_err(|e| format!("stored search is unreadable: {e}"))?;
    let base_job: Value =
        serde_json::from_str(&row.base_job).map_err(|e| format!("stored base job is unreadable: {e}"))?;
    let base_model: Value = serde_json::from_str(&row.base_model_spec)
        .map_err(|e| format!("stored base model is unreadable: {e}"))?;
    let plan = search::check(
        &request,
        &base_job,
        &base_model,
        u64::MAX,
        request.seed.unwrap_or(0),
    )
    .map_err(|errs| {
        format!(
            "stored search no longer checks: {}: {}",
            errs[0].field, errs[0].message
        )
    })?;
    Ok(Loaded {
        request,
        plan,
        base_job,
        base_model,
    })
}

/// The trial a job runs, if any.
pub async fn trial_ctx(store: &Store, job_id: &str) -> Result<Option<TrialCtx>, Error> {
    let Some(t) = db::trial_of_job(store, job_id).await? else {
        return Ok(None);
    };
    let row = db::get(store, &t.search_id).await?;
    let loaded = load(&row).map_err(Error::Corrupt)?;
    let asha = Rungs::of(loaded.plan.method, t.trial as u64);
    Ok(Some(TrialCtx {
        search_id: t.search_id,
        trial: t.trial,
        metric: loaded.plan.metric,
        maximize: loaded.plan.maximize,
        asha,
        params: serde_json::from_str(&t.params).unwrap_or(Value::Null),
    }))
}

/// A worker took the trial's job.
pub async fn trial_started(
    store: &Store,
    hub: &EventHub,
    t: &TrialCtx,
    job_id: &str,
    attempt: i64,
) -> Result<(), Error> {
    let mut data = json!({"trial": t.trial, "job_id": job_id, "attempt": attempt, "params": t.params});
    if let Some(s) = t.asha.as_ref().and_then(|r| r.bracket(t.trial)) {
        data["bracket"] = json!(s);
    }
    let ev = db::add_event(store, &t.search_id, "trial_started", &data.to_string()).await?;
    publish(hub, &t.search_id, &[ev]);
    Ok(())
}

/// The best objective over the job's first `epochs` epochs (all with `None`), with its epoch.
async fn best_so_far(
    store: &Store,
    t: &TrialCtx,
    job_id: &str,
    epochs: Option<usize>,
) -> Result<Option<(i64, f64)>, Error> {
    let rows = store::jobs::epochs_since(store, job_id, -1).await?;
    let values: Vec<(i64, f64)> = rows
        .iter()
        .filter(|r| epochs.is_none_or(|n| (r.epoch as usize) < n))
        .map(|r| {
            let m: Value = serde_json::from_str(&r.metrics).unwrap_or(Value::Null);
            (r.epoch, m[&t.metric].as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    Ok(search::asha::best(values.iter().map(|v| v.1), t.maximize).map(|(i, v)| (values[i].0, v)))
}

/// After each stored epoch: the trial's best objective and its `trial_epoch` event.
pub async fn trial_epoch(
    store: &Store,
    hub: &EventHub,
    t: &TrialCtx,
    job_id: &str,
    epoch: usize,
    metrics: &Value,
) -> Result<(), Error> {
    let best = best_so_far(store, t, job_id, None).await?;
    db::set_objective(store, &t.search_id, t.trial, best.map(|b| b.1), best.map(|b| b.0)).await?;
    let data = json!({"trial": t.trial, "job_id": job_id, "epoch": epoch, "metrics": metrics,
                      "objective": metrics[&t.metric]});
    let ev = db::add_event(store, &t.search_id, "trial_epoch", &data.to_string()).await?;
    publish(hub, &t.search_id, &[ev]);
    Ok(())
}

/// Before training the next epoch: when `epochs_done` completes a rung, the ASHA decision for the
/// trial there (the stored one if it was already taken). `None` when not at a rung.
pub async fn at_rung(
    store: &Store,
    hub: &EventHub,
    t: &TrialCtx,
    job_id: &str,
    epochs_done: usize,
) -> Result<Option<Decision>, Error> {
    let Some(rungs) = &t.asha else {
        return Ok(None);
    };
    let Some(rung) = rungs.epochs.iter().position(|&r| r as usize == epochs_done) else {
        return Ok(None);
    };
    let _guard = LOCK.lock().await;
    let taken = db::rung_decisions(store, &t.search_id, rung as i64).await?;
    if let Some((_, _, d)) = taken.iter().find(|(trial, _, _)| *trial == t.trial) {
        return Ok(Decision::parse(d));
    }
    let value = best_so_far(store, t, job_id, Some(epochs_done))
        .await?
        .map_or(f64::NAN, |b| b.1);
    // hyperband: the same rung number in another bracket is another rung.
    let earlier: Vec<f64> = taken
        .iter()
        .filter(|(trial, _, _)| rungs.peers(*trial, t.trial))
        .map(|(_, v, _)| *v)
        .collect();
    let decision = search::decide(&earlier, value, rungs.eta, t.maximize);
    let mut data = json!({"trial": t.trial, "job_id": job_id, "rung": rung, "epochs": epochs_done,
                      "objective": value.is_finite().then_some(value), "rung_results": earlier.len() + 1});
    if let Some(s) = rungs.bracket(t.trial) {
        data["bracket"] = json!(s);
    }
    let ev = db::record_decision(
        store,
        &t.search_id,
        t.trial,
        rung as i64,
        value,
        decision == Decision::Promote,
        &data.to_string(),
    )
    .await?;
    publish(hub, &t.search_id, &[ev]);
    Ok(Some(decision))
}

/// A trial's status as the leaderboard shows it.
pub fn trial_status(t: &TrialRow) -> &'static str {
    if t.error.is_some() {
        return "failed";
    }
    match t.job_status.as_deref().and_then(JobStatus::parse) {
        None => "cancelled",
        Some(JobStatus::Succeeded) if t.stopped_rung.is_some() => "stopped",
        Some(s) => s.as_str(),
    }
}

fn trial_over(t: &TrialRow) -> bool {
    t.error.is_some()
        || t.job_status
            .as_deref()
            .and_then(JobStatus::parse)
            .is_none_or(JobStatus::is_terminal)
}

/// The best trial by objective (ties: the earlier trial).
pub fn best_trial(trials: &[TrialRow], maximize: bool) -> Option<&TrialRow> {
    let idx = search::asha::best(trials.iter().map(|t| t.objective.unwrap_or(f64::NAN)), maximize)?.0;
    trials.get(idx)
}

/// Records finished trials, tops the search up to its concurrency with new trial jobs and ends it
/// when every trial is over. Returns how many jobs it queued.
pub async fn reconcile(store: &Store, hub: &EventHub, search_id: &str) -> Result<usize, Error> {
    let _guard = LOCK.lock().await;
    let _cluster = db::lock_reconcile(store, search_id).await?;
    let row = db::get(store, search_id).await?;
    for t in db::trials(store, search_id).await? {
        if !t.finished && trial_over(&t) {
            let data = json!({"trial": t.trial, "job_id": t.job_id, "status": trial_status(&t),
                "objective": t.objective, "objective_epoch": t.objective_epoch,
                "saved_model_id": t.saved_model_id, "error": t.error.as_ref().or(t.job_error.as_ref())});
            let ev = db::finish_trial(store, search_id, t.trial, &data.to_string()).await?;
            publish(hub, search_id, &[ev]);
        }
    }
    if row.status != "running" {
        return Ok(0);
    }
    let loaded = match load(&row) {
        Ok(l) => l,
        Err(m) => {
            tracing::error!(search = search_id, error = %m, "a search cannot go on");
            return Ok(0);
        }
    };
    let mut trials = db::trials(store, search_id).await?;
    let mut queued = 0;
    if !row.cancel_requested {
        let mut active = trials.iter().filter(|t| !t.finished).count() as u64;
        let mut next = trials.len() as u64;
        while active < loaded.plan.max_concurrent as u64 && next < row.trial_count as u64 {
            if create_trial(store, hub, &row, &loaded, next).await? {
                active += 1;
                queued += 1;
            }
            next += 1;
        }
        trials = db::trials(store, search_id).await?;
    }
    let all_over = trials.iter().all(|t| t.finished);
    if all_over && (row.cancel_requested || trials.len() as i64 >= row.trial_count) {
        let best = best_trial(&trials, loaded.plan.maximize);
        let status = if row.cancel_requested {
            "cancelled"
        } else {
            "succeeded"
        };
        let data = json!({"status": status, "best_trial": best.map(|t| t.trial),
            "best_job_id": best.and_then(|t| t.job_id.clone()),
            "best_objective": best.and_then(|t| t.objective),
            "best_saved_model_id": best.and_then(|t| t.saved_model_id.clone()),
            "trials": trials.len()});
        if let Some(ev) = db::finish(store, search_id, status, &data.to_string()).await? {
            publish(hub, search_id, &[ev]);
            hub.close(&hub_key(search_id));
            tracing::info!(search = search_id, status, "search ended");
        }
    }
    Ok(queued)
}

/// Creates trial `n`: its model when a dimension changes the model, its queued job and its row, in
/// one transaction. Parameters that do not make a valid job give a trial that failed at once.
/// Returns whether a job was queued.
async fn create_trial(
    store: &Store,
    hub: &EventHub,
    row: &SearchRow,
    l: &Loaded,
    n: u64,
) -> Result<bool, Error> {
    let values = l.plan.params(n);
    let params = l.plan.params_object(&values).to_string();
    let built = l
        .plan
        .apply(&l.base_job, &l.base_model, &values)
        .and_then(|(job, model)| {
            let spec = model.as_ref().unwrap_or(&l.base_model);
            search::space::validate(&job, spec, u64::MAX)?;
            Ok((job, model))
        })
        .and_then(|(job, model)| {
            let req: CreateJobRequest = serde_json::from_value(job).map_err(|e| e.to_string())?;
            let plan = req
                .plan()
                .map_err(|errs| format!("{}: {}", errs[0].field, errs[0].message))?;
            let spec = match model {
                Some(m) => Some(serde_json::from_value::<ModelSpec>(m).map_err(|e| e.to_string())?),
                None => None,
            };
            Ok((req, plan, spec))
        });
    let mut tx = store.pool.begin().await?;
    let (req, plan, spec) = match built {
        Ok(b) => b,
        Err(m) => {
            db::insert_trial(&mut tx, &row.id, n as i64, None, &params, Some(&m)).await?;
            tx.commit().await?;
            // Recorded as finished by the next reconcile.
            return Ok(false);
        }
    };
    let mut req = req;
    // Every trial carries the base job's labels.
    let (name, tags, notes) = (
        req.name.take(),
        req.tags.take().unwrap_or_default(),
        req.notes.take(),
    );
    if let Some(spec) = spec {
        let now = now_rfc3339();
        let model = ModelRow {
            id: new_id(),
            name: format!("{} (search {} trial {n})", row.base_model_name, row.id),
            spec: serde_json::to_string(&spec).map_err(|e| Error::Corrupt(e.to_string()))?,
            locked: true,
            created_at: now.clone(),
            updated_at: now,
        };
        store::models::insert_with(&mut *tx, &model).await?;
        req.model_id = model.id;
    }
    let job = JobRow::queued(&req, &plan.validation, name, &tags, notes)
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let status = store::jobs::status_event_data(JobStatus::Queued, None, 0);
    let ev = store::jobs::insert_in(&mut tx, &job, &status).await?;
    db::insert_trial(&mut tx, &row.id, n as i64, Some(&job.id), &params, None).await?;
    tx.commit().await?;
    hub.publish(&job.id, JobEvent::from(&ev));
    Ok(true)
}

/// After a start: every running search is reconciled (trials that ended while the server was down
/// recorded, missing trials created). Returns how many jobs were queued.
pub async fn resume(store: &Store, hub: &EventHub) -> Result<usize, Error> {
    let mut queued = 0;
    for id in db::running_ids(store).await? {
        queued += reconcile(store, hub, &id).await?;
    }
    Ok(queued)
}
