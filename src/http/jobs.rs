//! `/v1/jobs`: submit, list, get and cancel training jobs; their SSE event stream, Keras History
//! and checkpoints.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::domain::job::{CreateJobRequest, JobPlan, JobStatus, ModelFacts, StopReason, Validation};
use crate::domain::labels::{self, JobPatch, Tags};
use crate::domain::model::ModelSpec;
use crate::jobs::{JobEvent, data};
use crate::nn::FieldError;
use crate::store::{self, jobs::JobFilter, jobs::JobRow, jobs::SortKey};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(compare_jobs))
        .routes(routes!(get_job, patch_job, delete_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_events))
        .routes(routes!(get_job_history))
        .routes(routes!(list_job_checkpoints))
}

/// Batches of the current epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressView {
    pub batches_done: i64,
    /// `null` until the job has started.
    pub batches_total: Option<i64>,
}

/// A training job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// The name given at creation or by `PATCH`, if any.
    pub name: Option<String>,
    /// String key-value labels.
    pub tags: Tags,
    /// Free text.
    pub notes: Option<String>,
    pub model_id: String,
    pub dataset_id: String,
    pub status: JobStatus,
    /// Last completed epoch (0-based); `null` before the first one ends.
    pub epoch: Option<i64>,
    /// Epochs requested.
    pub epochs: i64,
    pub progress: ProgressView,
    /// Early stopping's best epoch when configured, otherwise the checkpoint monitor's.
    pub best_epoch: Option<i64>,
    pub stop_reason: Option<StopReason>,
    /// Why the job failed.
    pub error: Option<String>,
    /// The saved model a succeeded job created.
    pub saved_model_id: Option<String>,
    /// Times a worker started the job (more than 1 after resuming from a restart, or after another
    /// node took it over).
    pub attempts: i64,
    /// The worker that runs the job, or ran it last: `<node>/<n>` (`--node-name`, default
    /// `<host>:<pid>`); `null` before it first starts.
    pub worker: Option<String>,
    /// The request, with defaults and the seed filled in.
    pub request: CreateJobRequest,
    /// The search trial this job runs, with its parameters; absent for jobs outside a search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<super::searches::JobSearchView>,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

/// Keras's `History`: epochs and, per metric, one value per epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub epoch: Vec<i64>,
    /// `loss`, `accuracy`, `val_loss`, `val_accuracy` (those the job computes) and `learning_rate`,
    /// the optimizer's rate at the end of each epoch (before callbacks change it). A loss that was
    /// not finite (`terminate_on_nan`'s last epoch) is `null`.
    #[schema(value_type = Object)]
    pub history: serde_json::Map<String, Value>,
}

/// A stored checkpoint (full training state) of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    pub epoch: i64,
    #[schema(value_type = Object)]
    pub metrics: Value,
    /// Best by the checkpoint monitor (`model_checkpoint.monitor`, else `val_loss` or `loss`).
    pub is_best: bool,
    pub created_at: String,
}

/// A job's checkpoints, oldest first: the latest and the best are kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    pub items: Vec<CheckpointView>,
}

/// `data` of an SSE `status` event: the job's status changed (queued, running, finished).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusEvent {
    pub status: JobStatus,
    /// The last completed epoch (0-based), if any.
    pub epoch: Option<i64>,
    /// How many times a worker has started the job.
    pub attempt: i64,
}

/// `data` of an SSE `progress` event: batches done in the running epoch. Sent at most a few times
/// a second, not stored and not replayed; its `id` repeats the last stored event's.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressEvent {
    /// The running epoch (0-based).
    pub epoch: i64,
    pub batches_done: i64,
    pub batches_total: i64,
}

/// `data` of an SSE `epoch` event: one completed epoch, the same values `History` holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochEvent {
    /// 0-based epoch.
    pub epoch: i64,
    /// `null` when not finite (`terminate_on_nan`).
    pub loss: Option<f64>,
    /// Classification losses only.
    pub accuracy: Option<f64>,
    /// With validation data only.
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// The optimizer's rate at the end of the epoch.
    pub learning_rate: f64,
    /// Wall time of the epoch in milliseconds.
    pub duration_ms: f64,
}

/// `data` of an SSE `checkpoint` event: the training state after an epoch was stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointEvent {
    pub epoch: i64,
    /// Best so far by the checkpoint monitor.
    pub is_best: bool,
    pub best_epoch: Option<i64>,
    /// The epoch's metrics, as in `History`.
    #[schema(value_type = Object)]
    pub metrics: serde_json::Map<String, Value>,
}

/// `data` of an SSE `done` event: the job finished; the stream ends after it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DoneEvent {
    pub status: JobStatus,
    pub stop_reason: StopReason,
    /// Why a failed job failed.
    pub error: Option<String>,
    /// The saved model of a succeeded job.
    pub saved_model_id: Option<String>,
    pub best_epoch: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs training this model.
    pub model_id: Option<String>,
    /// Only jobs training on this dataset.
    pub dataset_id: Option<String>,
    /// Only jobs whose name contains this text (ASCII letters compared without case).
    pub name: Option<String>,
    /// Only jobs created at or after this RFC 3339 time.
    pub created_after: Option<String>,
    /// Only jobs created before this RFC 3339 time.
    pub created_before: Option<String>,
    /// `created_at` (default), `final.<metric>` (the last epoch's value) or `best.<metric>` (the
    /// highest accuracy or the lowest loss or rate over all epochs), for a metric among `loss`,
    /// `accuracy`, `val_loss`, `val_accuracy` and `learning_rate`. Jobs without the metric come last.
    pub order_by: Option<String>,
    /// `asc` or `desc`; by default `asc` for `created_at`, `desc` for a metric.
    pub order: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
}

/// Whether deleting a dataset or model also deletes the finished jobs that used it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CascadeQuery {
    /// `true` deletes the finished jobs that used it (with their epochs, events and checkpoints;
    /// their saved models stay). Without it, such jobs make the delete a 409.
    pub cascade: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteJobQuery {
    /// `true` also deletes the saved models made from the job (refused while an alias points at one
    /// or a queued or running job starts from one). By default they stay.
    pub saved_models: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only epochs after this one.
    pub since: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
}

pub(crate) fn parse_json_column<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored {what} is unreadable: {e}")))
}

pub(crate) fn job_view(state: &AppState, row: JobRow) -> Result<JobView, ApiError> {
    let status = JobStatus::parse(&row.status)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown job status {:?}", row.status)))?;
    let progress = match state.jobs.running(&row.id) {
        Some(f) if status == JobStatus::Running => ProgressView {
            batches_done: f.batches_done.load(Ordering::Relaxed) as i64,
            batches_total: Some(f.batches_total.load(Ordering::Relaxed) as i64).filter(|&t| t > 0),
        },
        _ => ProgressView {
            batches_done: row.batches_done,
            batches_total: row.batches_total,
        },
    };
    Ok(JobView {
        request: parse_json_column(&row.request, "request")?,
        search: None,
        tags: parse_json_column(&row.tags, "tags")?,
        name: row.name,
        notes: row.notes,
        stop_reason: row.stop_reason.as_deref().and_then(StopReason::parse),
        id: row.id,
        model_id: row.model_id,
        dataset_id: row.dataset_id,
        status,
        epoch: row.epoch,
        epochs: row.epochs,
        progress,
        best_epoch: row.best_epoch,
        error: row.error,
        saved_model_id: row.saved_model_id,
        attempts: row.attempts,
        worker: row.worker,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn not_found_as(what: &'static str, id: &str) -> impl FnOnce(store::Error) -> ApiError {
    let id = id.to_string();
    move |e| match e {
        store::Error::NotFound(_) => ApiError::not_found(what, id),
        other => other.into(),
    }
}

/// What `POST /v1/jobs` checks once the request itself is valid (`plan`): that its model,
/// datasets and initial weights exist and fit together. Field names are the request's.
pub(crate) async fn check_job(
    st: &store::Store,
    req: &CreateJobRequest,
    plan: JobPlan,
) -> Result<JobPlan, ApiError> {
    let model = store::models::get(st, &req.model_id)
        .await
        .map_err(not_found_as("model", &req.model_id))?;
    let spec: ModelSpec = parse_json_column(&model.spec, "model spec")?;
    let config = spec.to_nn();
    let facts = ModelFacts {
        input_dim: config.input_shape.iter().product(),
        last_dense: crate::jobs::last_dense(&config),
    };
    let train = data::facts(st, &req.dataset_id)
        .await
        .map_err(not_found_as("dataset", &req.dataset_id))?;
    let val = match &plan.validation {
        Validation::Dataset(id) => Some(data::facts(st, id).await.map_err(not_found_as("dataset", id))?),
        Validation::None | Validation::Split(_) => None,
    };
    plan.check_data(&facts, &train, val.as_ref())
        .map_err(ApiError::validation)?;
    if let Some(id) = &req.initial_weights {
        let saved = store::saved_models::get(st, id)
            .await
            .map_err(not_found_as("saved model", id))?;
        if saved.spec != model.spec && saved.model_id != model.id {
            return Err(ApiError::validation(vec![FieldError::new(
                "initial_weights",
                format!(
                    "saved model {id:?} has another architecture than model {:?}",
                    model.id
                ),
            )]));
        }
    }
    Ok(plan)
}

/// Submit a training job (Keras `compile` + `fit`); it is validated, queued and run by a worker.
#[utoipa::path(post, path = "/jobs", operation_id = "create_job", tag = "jobs",
    request_body = CreateJobRequest,
    responses(
        (status = 202, description = "Queued; `Location` is the job", body = JobView),
        (status = 404, description = "Unknown model, dataset or initial weights", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request; `errors` names each field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_job(
    State(state): State<AppState>,
    AppJson(mut req): AppJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    // Labels are columns of their own (editable later), not part of the stored request.
    let (name, tags, notes) = (
        req.name.take(),
        req.tags.take().unwrap_or_default(),
        req.notes.take(),
    );
    let mut label_errors = Vec::new();
    if let Some(n) = &name {
        labels::check_name("name", n, &mut label_errors);
    }
    labels::check_tags(&tags, &mut label_errors);
    if let Some(n) = &notes {
        labels::check_notes("notes", n, &mut label_errors);
    }
    let plan = match req.plan() {
        Ok(plan) if label_errors.is_empty() => plan,
        Ok(_) => return Err(ApiError::validation(label_errors)),
        Err(mut errors) => {
            errors.extend(label_errors);
            return Err(ApiError::validation(errors));
        }
    };
    let st = &state.store;
    let plan = check_job(st, &req, plan).await?;
    if req.fit.seed.is_none() {
        // Stored with the job so a resumed run continues with the same shuffles and dropout.
        req.fit.seed = Some(uuid::Uuid::new_v4().as_u64_pair().0 >> 1);
    }
    let row = JobRow::queued(&req, &plan.validation, name, &tags, notes).map_err(anyhow::Error::from)?;
    let status = store::jobs::status_event_data(JobStatus::Queued, None, 0);
    let ev = store::jobs::insert(st, &row, &status).await?;
    state.jobs.hub().publish(&row.id, JobEvent::from(&ev));
    // The response shows the job as it was queued (a worker of any node may claim it at once);
    // only the queue position is the database's.
    let mut row = row;
    row.seq = store::cursor_seq(st, store::Listed::Jobs, Some(&row.id)).await?;
    state.jobs.notify_queued();
    let location = format!("/v1/jobs/{}", row.id);
    let mut res = (StatusCode::ACCEPTED, AppJson(job_view(&state, row)?)).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// Normalizes an RFC 3339 time given in a query to UTC, or names the parameter.
fn query_time(field: &str, v: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid(field, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z"))?;
    // The stored form, so the string comparison with `created_at` orders times correctly.
    Ok(Some(store::format_time(t)))
}

/// The `tag` parameters of a query string: `key` (has the tag) or `key:value`.
fn query_tags(raw: Option<&str>) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::invalid("query", "is not valid URL encoding"))?;
    let mut tags = Vec::new();
    for (k, v) in pairs {
        if k != "tag" {
            continue;
        }
        if tags.len() == labels::MAX_TAGS {
            return Err(ApiError::invalid(
                "tag",
                format!("at most {} tag filters", labels::MAX_TAGS),
            ));
        }
        let (key, value) = match v.split_once(':') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (v, None),
        };
        let mut errors = Vec::new();
        labels::check_tag_key("tag", &key, &mut errors);
        if let Some(v) = &value {
            labels::check_tag_value("tag", v, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        tags.push((key, value));
    }
    Ok(tags)
}

/// List jobs, filtered by status, model, dataset, name, tags and creation time, in submission order
/// or sorted by a final or best metric. Pages follow `next` and stay stable under any order.
#[utoipa::path(get, path = "/jobs", operation_id = "list_jobs", tag = "jobs",
    params(JobListQuery,
           ("tag" = Option<Vec<String>>, Query, description = "Only jobs with this tag: `key` (any value) \
             or `key:value`; repeat the parameter to require several tags")),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 422, description = "A bad filter, `order_by`, `order`, `limit` or `after`; `errors` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<JobListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<AppJson<JobList>, ApiError> {
    let limit = ListQuery {
        limit: q.limit,
        after: None,
    }
    .limit()?;
    let sort = match &q.order_by {
        None => SortKey::Created,
        Some(s) => SortKey::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "order_by",
                format!(
                    "must be created_at, final.<metric> or best.<metric> with a metric among {}",
                    store::jobs::SORT_METRICS.join(", ")
                ),
            )
        })?,
    };
    let descending = match q.order.as_deref() {
        None => sort != SortKey::Created,
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::invalid("order", "must be asc or desc")),
    };
    let filter = JobFilter {
        status: q.status.map(|s| s.as_str().to_string()),
        model_id: q.model_id.clone(),
        dataset_id: q.dataset_id.clone(),
        name: q.name.clone(),
        tags: query_tags(raw.as_deref())?,
        created_after: query_time("created_after", &q.created_after)?,
        created_before: query_time("created_before", &q.created_before)?,
    };
    let page = store::jobs::list(&state.store, &filter, sort, descending, limit, q.after.as_deref())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => {
                ApiError::invalid("after", "is not a cursor of this list (with this order)")
            }
            other => other.into(),
        })?;
    let mut items: Vec<JobView> = page
        .items
        .into_iter()
        .map(|r| job_view(&state, r))
        .collect::<Result<_, _>>()?;
    super::searches::attach_trials(&state.store, &mut items).await?;
    Ok(AppJson(JobList {
        items,
        next: page.next,
    }))
}

/// Edit a job's name, tags and notes: a JSON merge patch (a field left out stays, `null` removes
/// it; in `tags`, a key set to `null` is removed, the others are added or changed).
#[utoipa::path(patch, path = "/jobs/{id}", operation_id = "patch_job", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    request_body = JobPatch,
    responses(
        (status = 200, description = "The job as changed", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid name, tag or notes; `errors` names each", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(patch): AppJson<JobPatch>,
) -> Result<AppJson<JobView>, ApiError> {
    loop {
        let row = store::jobs::get(&state.store, &id)
            .await
            .map_err(not_found_as("job", &id))?;
        let old = store::jobs::Labels {
            name: row.name.clone(),
            tags: row.tags.clone(),
            notes: row.notes.clone(),
        };
        let mut name = row.name.clone();
        let mut tags: Tags = parse_json_column(&row.tags, "tags")?;
        let mut notes = row.notes.clone();
        patch
            .apply(&mut name, &mut tags, &mut notes)
            .map_err(ApiError::validation)?;
        let new = store::jobs::Labels {
            name,
            tags: serde_json::to_string(&tags).map_err(anyhow::Error::from)?,
            notes,
        };
        if store::jobs::set_labels(&state.store, &id, &old, &new)
            .await
            .map_err(not_found_as("job", &id))?
        {
            let row = store::jobs::get(&state.store, &id).await?;
            return Ok(AppJson(job_view(&state, row)?));
        }
    }
}

/// A job with its status, epoch, progress and outcome.
#[utoipa::path(get, path = "/jobs/{id}", operation_id = "get_job", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<JobView>, ApiError> {
    let row = store::jobs::get(&state.store, &id)
        .await
        .map_err(not_found_as("job", &id))?;
    let mut view = [job_view(&state, row)?];
    super::searches::attach_trials(&state.store, &mut view).await?;
    let [view] = view;
    Ok(AppJson(view))
}

/// Delete a finished job with its epochs, events and checkpoints, and reclaim their space. A queued
/// or running job is a 409: cancel it, wait for `cancelled`, then delete it. Its saved models stay
/// (their `job_id` then names a deleted job) unless `saved_models=true`.
#[utoipa::path(delete, path = "/jobs/{id}", operation_id = "delete_job", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), DeleteJobQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is queued or running, or one of its saved models (with `saved_models=true`) is an alias's target or a running job's initial weights", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<DeleteJobQuery>,
) -> Result<StatusCode, ApiError> {
    let deleted = store::jobs::delete(&state.store, &id, q.saved_models.unwrap_or(false))
        .await
        .map_err(not_found_as("job", &id))?;
    for sm in &deleted.saved_models {
        state.models.remove(sm);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a job: a queued one never starts (200); a running one stops before its next batch,
/// keeping its epochs and checkpoints (202, then `status: cancelled`).
#[utoipa::path(post, path = "/jobs/{id}/cancel", operation_id = "cancel_job", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = JobView),
        (status = 202, description = "Stopping; the job ends `cancelled` within one batch", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already finished", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let st = &state.store;
    let row = store::jobs::get(st, &id)
        .await
        .map_err(not_found_as("job", &id))?;
    let status =
        serde_json::json!({"status": "cancelled", "epoch": row.epoch, "attempt": row.attempts}).to_string();
    let done = serde_json::json!({"status": "cancelled", "stop_reason": "cancelled", "error": null,
                                  "saved_model_id": null, "best_epoch": row.best_epoch})
    .to_string();
    if let Some(events) = store::jobs::cancel_queued(st, &id, &status, &done).await? {
        state.jobs.hub().publish_rows(&id, &events);
        state.jobs.hub().close(&id);
        let row = store::jobs::get(st, &id).await?;
        return Ok((StatusCode::OK, AppJson(job_view(&state, row)?)).into_response());
    }
    if store::jobs::request_cancel(st, &id).await? {
        state.jobs.stop_running(&id);
        let row = store::jobs::get(st, &id).await?;
        return Ok((StatusCode::ACCEPTED, AppJson(job_view(&state, row)?)).into_response());
    }
    let row = store::jobs::get(st, &id).await?;
    Err(ApiError::Conflict(format!(
        "job {id:?} has already finished ({})",
        row.status
    )))
}

fn sse_event(ev: &JobEvent) -> Event {
    Event::default()
        .id(ev.seq.to_string())
        .event(ev.event.as_ref())
        .data(ev.data.as_ref())
}

/// The stored event log an SSE stream follows: a job's or a search's. Both number their events
/// from 1, end with `done`, and are fed live through the event hub.
#[derive(Debug, Clone)]
pub(crate) enum EventLog {
    Job(String),
    Search(String),
}

impl EventLog {
    fn id(&self) -> &str {
        match self {
            EventLog::Job(id) | EventLog::Search(id) => id,
        }
    }

    fn hub_key(&self) -> String {
        match self {
            EventLog::Job(id) => id.clone(),
            EventLog::Search(id) => crate::jobs::search::hub_key(id),
        }
    }

    async fn events_after(
        &self,
        st: &store::Store,
        after: i64,
    ) -> Result<Vec<store::jobs::EventRow>, store::Error> {
        match self {
            EventLog::Job(id) => store::jobs::events_after(st, id, after).await,
            EventLog::Search(id) => store::searches::events_after(st, id, after).await,
        }
    }

    /// Whether every event the log will ever have is stored.
    async fn finished(&self, st: &store::Store) -> Result<bool, store::Error> {
        Ok(match self {
            EventLog::Job(id) => {
                JobStatus::parse(&store::jobs::get(st, id).await?.status).is_none_or(JobStatus::is_terminal)
            }
            EventLog::Search(id) => store::searches::get(st, id).await?.status != "running",
        })
    }
}

/// Follows one job or search for one SSE client: stored events after `last` first, then live
/// ones, skipping what was already sent and backfilling from SQLite whenever the live channel
/// lagged.
async fn follow(
    state: AppState,
    log: EventLog,
    mut last: i64,
    mut live: broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let shutdown = state.jobs.shutdown_token();
    // Sends stored events after `last`; `Some(true)` once `done` was sent, `None` if the client left.
    async fn backfill(
        state: &AppState,
        log: &EventLog,
        last: &mut i64,
        tx: &mpsc::Sender<Result<Event, Infallible>>,
    ) -> Option<bool> {
        let rows = match log.events_after(&state.store, *last).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(id = log.id(), error = %e, "reading events failed");
                return Some(true);
            }
        };
        for r in &rows {
            tx.send(Ok(sse_event(&JobEvent::from(r)))).await.ok()?;
            *last = r.seq;
            if r.event == "done" {
                return Some(true);
            }
        }
        Some(false)
    }
    match backfill(&state, &log, &mut last, &tx).await {
        Some(false) => {}
        Some(true) | None => return,
    }
    // A finished job writes its final status and `done` in one transaction, so once it reads as
    // finished every event it will ever have is stored: send what the client lacks and end, also
    // when it already has `done` (an EventSource reconnects with that id after the stream ends).
    let finished = match log.finished(&state.store).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(id = log.id(), error = %e, "reading the job or search failed");
            true
        }
    };
    if finished {
        let _ = backfill(&state, &log, &mut last, &tx).await;
        return;
    }
    loop {
        // Biased: events already broadcast are sent before a shutdown ends the stream.
        let received = tokio::select! {
            biased;
            r = live.recv() => r,
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
        };
        match received {
            Ok(ev) if ev.persisted && ev.seq <= last => {}
            Ok(ev) if ev.persisted && ev.seq == last + 1 => {
                if tx.send(Ok(sse_event(&ev))).await.is_err() {
                    return;
                }
                last = ev.seq;
                if ev.event.as_ref() == "done" {
                    return;
                }
            }
            Ok(ev) if !ev.persisted && ev.seq <= last => {
                if ev.seq == last && tx.send(Ok(sse_event(&ev))).await.is_err() {
                    return;
                }
            }
            // A gap: something was stored that this subscriber has not seen.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                match backfill(&state, &log, &mut last, &tx).await {
                    Some(false) => {}
                    Some(true) | None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = backfill(&state, &log, &mut last, &tx).await;
                return;
            }
        }
    }
}

/// Server-Sent Events of a job: `status`, `epoch`, `progress` (throttled, not replayed),
/// `checkpoint` and `done`. Each has an `id`; reconnecting with `Last-Event-ID` replays every
/// stored event after it, in order, none twice. The stream ends after `done`.
#[utoipa::path(get, path = "/jobs/{id}/events", operation_id = "job_events", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), EventsQuery,
           ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An event stream. Each event's `data` is one JSON object, by event name: \
`status` a `StatusEvent`, `progress` a `ProgressEvent`, `epoch` an `EpochEvent`, `checkpoint` a \
`CheckpointEvent`, `done` a `DoneEvent`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = last_event_id(&headers, &q)?;
    store::jobs::get(&state.store, &id)
        .await
        .map_err(not_found_as("job", &id))?;
    Ok(event_stream(state, EventLog::Job(id), last))
}

/// The SSE response following `log` after event `last`.
pub(crate) fn event_stream(state: AppState, log: EventLog, last: i64) -> Response {
    // Subscribe before reading the stored events, so nothing falls between the two.
    let key = log.hub_key();
    let live = state.jobs.hub().subscribe(&key);
    let (tx, rx) = mpsc::channel(64);
    let open = state.metrics.sse_opened();
    tokio::spawn(async move {
        let _open = open;
        let hub_state = state.clone();
        follow(state, log, last, live, tx).await;
        hub_state.jobs.hub().release(&key);
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The event id a client resumes after: `Last-Event-ID`, else `?last_event_id=`, else 0.
pub(crate) fn last_event_id(headers: &HeaderMap, q: &EventsQuery) -> Result<i64, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| super::error::bad_header("Last-Event-ID", "must be an event id (an integer)")),
        None => Ok(q.last_event_id.unwrap_or(0)),
    }
}

/// Keras `History` of a job: per-metric lists, one value per completed epoch. `?since=N` returns
/// epochs after N. Send the `ETag` back in `If-None-Match` to get `304` when nothing changed.
#[utoipa::path(get, path = "/jobs/{id}/history", operation_id = "get_job_history", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), HistoryQuery),
    responses(
        (status = 200, description = "The history", body = HistoryView),
        (status = 304, description = "Unchanged since the `ETag` given in `If-None-Match`"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_job_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    store::jobs::get(&state.store, &id)
        .await
        .map_err(not_found_as("job", &id))?;
    let rows = store::jobs::epochs_since(&state.store, &id, q.since.unwrap_or(-1)).await?;
    let mut epochs = Vec::with_capacity(rows.len());
    let mut metrics: Vec<serde_json::Map<String, Value>> = Vec::with_capacity(rows.len());
    for r in &rows {
        epochs.push(r.epoch);
        metrics.push(parse_json_column(&r.metrics, "epoch metrics")?);
    }
    let mut history = serde_json::Map::new();
    for key in ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"] {
        if metrics.iter().any(|m| m.contains_key(key)) {
            let values = metrics
                .iter()
                .map(|m| m.get(key).cloned().unwrap_or(Value::Null))
                .collect();
            history.insert(key.into(), Value::Array(values));
        }
    }
    let body = serde_json::to_vec(&HistoryView {
        epoch: epochs,
        history,
    })
    .map_err(anyhow::Error::from)?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_value = HeaderValue::from_str(&etag).map_err(anyhow::Error::from)?;
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        ],
        body,
    )
        .into_response())
}

/// The job's stored checkpoints (full training states): the latest, which a restart resumes from,
/// and the best by the checkpoint monitor.
#[utoipa::path(get, path = "/jobs/{id}/checkpoints", operation_id = "list_job_checkpoints", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The checkpoints", body = CheckpointList),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_job_checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<CheckpointList>, ApiError> {
    store::jobs::get(&state.store, &id)
        .await
        .map_err(not_found_as("job", &id))?;
    let items = store::jobs::list_checkpoints(&state.store, &id)
        .await?
        .into_iter()
        .map(|c| {
            Ok(CheckpointView {
                epoch: c.epoch,
                metrics: parse_json_column(&c.metrics, "checkpoint metrics")?,
                is_best: c.is_best,
                created_at: c.created_at,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(AppJson(CheckpointList { items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jobs::Jobs;
    use crate::store::Store;

    async fn append(state: &AppState, id: &str, event: &str) -> store::jobs::EventRow {
        let mut tx = state.store.pool.begin().await.unwrap();
        let ev = store::jobs::append_event(&mut tx, id, event, "{}").await.unwrap();
        tx.commit().await.unwrap();
        ev
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_that_lags_behind_the_broadcast_is_backfilled_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path().join("fitd.db"));
        let store = Store::open(&config.db, None).await.unwrap();
        let jobs = Jobs::start(store.clone(), crate::jobs::WorkerOptions::single(1), |_| 1)
            .await
            .unwrap();
        let state = AppState::new(config, store, jobs).unwrap();
        let id = "job-1";
        // A running job (so no worker claims it), written directly.
        sqlx::query(
            "INSERT INTO jobs (id, model_id, dataset_id, status, request, seed, epochs, created_at, updated_at) \
             VALUES ($1, 'm', 'd', 'running', '{}', 0, 1000, 'now', 'now')",
        )
        .bind(id)
        .execute(&state.store.pool)
        .await
        .unwrap();
        append(&state, id, "status").await;
        let live = state.jobs.hub().subscribe(id);
        let (tx, mut rx) = mpsc::channel(64);
        let follower = tokio::spawn(follow(state.clone(), EventLog::Job(id.to_string()), 0, live, tx));
        // The stored event arrives first; the follower is now on the live channel.
        assert!(rx.recv().await.is_some());
        // Far more than the broadcast keeps (256) while the client reads nothing.
        let n = 1000;
        for i in 2..=n {
            let ev = append(&state, id, if i == n { "done" } else { "epoch" }).await;
            state.jobs.hub().publish(id, JobEvent::from(&ev));
        }
        let mut got = Vec::new();
        while let Some(ev) = rx.recv().await {
            got.push(ev);
        }
        follower.await.unwrap();
        let body = Sse::new(futures_util::stream::iter(got))
            .into_response()
            .into_body();
        let text = String::from_utf8(axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec()).unwrap();
        let ids: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        // Every event after the first exactly once, in order, and the stream ended after `done`.
        assert_eq!(ids, (2..=n).collect::<Vec<_>>());
    }
}

/// Most jobs one comparison takes.
pub const MAX_COMPARE: usize = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Comma-separated ids of 2 to 20 jobs, in the order to show them.
    pub ids: Option<String>,
}

/// One job of a comparison: who it is, how it ended, and its History on the shared epoch axis.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComparedJob {
    pub id: String,
    pub name: Option<String>,
    pub tags: Tags,
    pub status: JobStatus,
    pub best_epoch: Option<i64>,
    pub saved_model_id: Option<String>,
    /// Per metric, one value per entry of the comparison's `epoch`: `null` where this job has no
    /// such epoch (it ran fewer) or no value.
    #[schema(value_type = Object)]
    pub history: serde_json::Map<String, Value>,
}

/// One hyperparameter, by its path in the job request, with each job's value (`null` when the job
/// does not set it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ComparedParam {
    /// Dotted path, e.g. `compile.optimizer.learning_rate` or `callbacks[0].patience`.
    pub path: String,
    /// One value per job, in the order of `jobs`.
    pub values: Vec<Value>,
    /// Whether the jobs disagree on it.
    pub differs: bool,
}

/// Several jobs side by side.
#[derive(Debug, Serialize, ToSchema)]
pub struct Comparison {
    /// The shared epoch axis: 0-based epochs from 0 to the longest job's last.
    pub epoch: Vec<i64>,
    pub jobs: Vec<ComparedJob>,
    /// Every hyperparameter any job's request sets (model, data, compile, fit, callbacks, initial
    /// weights), sorted by path.
    pub params: Vec<ComparedParam>,
    /// The paths of `params` whose values differ.
    pub differing: Vec<String>,
}

/// Flattens a JSON request into `path -> scalar` pairs (objects by `.key`, arrays by `[i]`).
fn flatten(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Several jobs side by side: their histories aligned by epoch and their hyperparameters, with the
/// ones that differ named.
#[utoipa::path(get, path = "/jobs/compare", operation_id = "compare_jobs", tag = "jobs",
    params(CompareQuery),
    responses(
        (status = 200, description = "The comparison", body = Comparison),
        (status = 404, description = "One of the jobs does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`ids` missing, with fewer than 2 or more than 20 jobs, or a job twice", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn compare_jobs(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<CompareQuery>,
) -> Result<AppJson<Comparison>, ApiError> {
    let raw = q.ids.unwrap_or_default();
    let ids: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.len() < 2 || ids.len() > MAX_COMPARE {
        return Err(ApiError::invalid(
            "ids",
            format!("must list 2 to {MAX_COMPARE} job ids, separated by commas"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(ApiError::invalid("ids", format!("lists job {dup:?} twice")));
    }
    let mut rows = Vec::with_capacity(ids.len());
    let mut epochs = Vec::with_capacity(ids.len());
    for id in &ids {
        let row = store::jobs::get(&state.store, id)
            .await
            .map_err(not_found_as("job", id))?;
        let e = store::jobs::epochs_since(&state.store, id, -1).await?;
        rows.push(row);
        epochs.push(e);
    }
    let last = epochs.iter().filter_map(|e| e.last().map(|r| r.epoch)).max();
    let axis: Vec<i64> = match last {
        Some(l) => (0..=l).collect(),
        None => Vec::new(),
    };
    let mut jobs = Vec::with_capacity(rows.len());
    let mut flat = Vec::with_capacity(rows.len());
    for (row, eps) in rows.into_iter().zip(epochs) {
        let mut by_epoch = vec![None; axis.len()];
        for r in &eps {
            if let Some(slot) = usize::try_from(r.epoch).ok().and_then(|i| by_epoch.get_mut(i)) {
                *slot = Some(parse_json_column::<serde_json::Map<String, Value>>(
                    &r.metrics,
                    "epoch metrics",
                )?);
            }
        }
        let mut history = serde_json::Map::new();
        for key in ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"] {
            if by_epoch.iter().flatten().any(|m| m.contains_key(key)) {
                let values = by_epoch
                    .iter()
                    .map(|m| {
                        m.as_ref()
                            .and_then(|m| m.get(key))
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect();
                history.insert(key.into(), Value::Array(values));
            }
        }
        let request: Value = parse_json_column(&row.request, "request")?;
        let mut params = std::collections::BTreeMap::new();
        flatten("", &request, &mut params);
        flat.push(params);
        let status = JobStatus::parse(&row.status)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown job status {:?}", row.status)))?;
        jobs.push(ComparedJob {
            tags: parse_json_column(&row.tags, "tags")?,
            id: row.id,
            name: row.name,
            status,
            best_epoch: row.best_epoch,
            saved_model_id: row.saved_model_id,
            history,
        });
    }
    let paths: std::collections::BTreeSet<&String> = flat.iter().flat_map(|p| p.keys()).collect();
    let mut params = Vec::with_capacity(paths.len());
    let mut differing = Vec::new();
    for path in paths {
        let values: Vec<Value> = flat
            .iter()
            .map(|p| p.get(path).cloned().unwrap_or(Value::Null))
            .collect();
        let differs = values.iter().any(|v| *v != values[0]);
        if differs {
            differing.push(path.clone());
        }
        params.push(ComparedParam {
            path: path.clone(),
            values,
            differs,
        });
    }
    Ok(AppJson(Comparison {
        epoch: axis,
        jobs,
        params,
        differing,
    }))
}
