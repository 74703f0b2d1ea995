//! `/v1/searches`: hyperparameter searches over a base job. Create, list, the leaderboard, cancel,
//! and the search's SSE stream.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::jobs::{
    EventLog, EventsQuery, JobView, check_job, event_stream, last_event_id, not_found_as, parse_json_column,
};
use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::domain::labels;
use crate::jobs::search::{self as controller, trial_status};
use crate::nn::FieldError;
use crate::search::hyperband::{self, Bracket};
use crate::search::{self, CreateSearchRequest, ObjectiveSpec};
use crate::store::{self, searches::SearchRow, searches::TrialRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_search, list_searches))
        .routes(routes!(get_search))
        .routes(routes!(cancel_search))
        .routes(routes!(search_events))
}

/// The search trial a job runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSearchView {
    pub search_id: String,
    /// 0-based trial number.
    pub trial: i64,
    /// The values this trial sets, by path.
    #[schema(value_type = Object)]
    pub params: Value,
}

/// One trial on the leaderboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialView {
    /// 0-based trial number (the order trials were drawn in).
    pub trial: i64,
    /// The job training it; `null` when its parameters did not make a valid job.
    pub job_id: Option<String>,
    /// `queued`, `running`, `succeeded`, `stopped` (by ASHA at a rung), `failed` or `cancelled`.
    pub status: String,
    /// The values it sets, by path.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Its best objective value over the epochs so far.
    pub objective: Option<f64>,
    /// The epoch (0-based) of that value.
    pub objective_epoch: Option<i64>,
    /// Last completed epoch of its job.
    pub epoch: Option<i64>,
    /// hyperband: its bracket's `s` (how many rungs it has; 0 trains every epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bracket: Option<u32>,
    /// asha / hyperband: the rung (0-based) it was stopped at, if it was.
    pub stopped_rung: Option<i64>,
    /// asha / hyperband: the highest rung it was promoted past.
    pub promoted_rung: Option<i64>,
    /// The saved model its job created (the final or restored weights).
    pub saved_model_id: Option<String>,
    pub error: Option<String>,
}

/// The best trial so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct BestTrialView {
    pub trial: i64,
    pub job_id: Option<String>,
    pub objective: f64,
    #[schema(value_type = Object)]
    pub params: Value,
    /// Its saved model, once its job has ended.
    pub saved_model_id: Option<String>,
}

/// A hyperparameter search.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchView {
    pub id: String,
    /// `running`, `succeeded` (every trial over) or `cancelled`.
    pub status: String,
    pub method: String,
    pub objective: ObjectiveSpec,
    /// Whether a larger objective is better.
    pub maximize: bool,
    /// Trials the search runs in all (the grid's size when smaller than `max_trials`).
    pub trial_count: i64,
    /// Trials over (succeeded, stopped, failed or cancelled).
    pub trials_finished: i64,
    pub best: Option<BestTrialView>,
    /// The request, with defaults and the seeds filled in.
    pub request: CreateSearchRequest,
    /// The leaderboard: trials by objective, best first; those without a value last.
    /// Absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trials: Option<Vec<TrialView>>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

/// A page of searches.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchList {
    pub items: Vec<SearchView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

fn trial_view(t: &TrialRow, brackets: Option<&[Bracket]>) -> Result<TrialView, ApiError> {
    Ok(TrialView {
        bracket: brackets.map(|b| b[hyperband::bracket_of(b, t.trial as u64)].s),
        trial: t.trial,
        job_id: t.job_id.clone(),
        status: trial_status(t).to_string(),
        params: parse_json_column(&t.params, "trial parameters")?,
        objective: t.objective,
        objective_epoch: t.objective_epoch,
        epoch: t.job_epoch,
        stopped_rung: t.stopped_rung,
        promoted_rung: t.promoted_rung,
        saved_model_id: t.saved_model_id.clone(),
        error: t.error.clone().or_else(|| t.job_error.clone()),
    })
}

async fn search_view(state: &AppState, row: SearchRow, with_trials: bool) -> Result<SearchView, ApiError> {
    let request: CreateSearchRequest = parse_json_column(&row.request, "search request")?;
    let maximize = search::space::maximizes(&request.objective.metric, request.objective.mode.as_deref())
        .unwrap_or(false);
    let trials = store::searches::trials(&state.store, &row.id).await?;
    let best = controller::best_trial(&trials, maximize)
        .map(|t| {
            Ok::<_, ApiError>(BestTrialView {
                trial: t.trial,
                job_id: t.job_id.clone(),
                objective: t.objective.unwrap_or(f64::NAN),
                params: parse_json_column(&t.params, "trial parameters")?,
                saved_model_id: t.saved_model_id.clone(),
            })
        })
        .transpose()?;
    let leaderboard = if with_trials {
        let brackets = request.hyperband_brackets();
        let mut views = trials
            .iter()
            .map(|t| trial_view(t, brackets.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        views.sort_by(|a, b| {
            let key = |v: &TrialView| v.objective.filter(|o| o.is_finite());
            match (key(a), key(b)) {
                (Some(x), Some(y)) => {
                    let ord = if maximize {
                        y.total_cmp(&x)
                    } else {
                        x.total_cmp(&y)
                    };
                    ord.then(a.trial.cmp(&b.trial))
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.trial.cmp(&b.trial),
            }
        });
        Some(views)
    } else {
        None
    };
    Ok(SearchView {
        id: row.id,
        status: row.status,
        method: request.method.clone(),
        objective: ObjectiveSpec {
            metric: request.objective.metric.clone(),
            mode: Some(if maximize { "max" } else { "min" }.into()),
        },
        maximize,
        trial_count: row.trial_count,
        trials_finished: trials.iter().filter(|t| t.finished).count() as i64,
        best,
        request,
        trials: leaderboard,
        created_at: row.created_at,
        finished_at: row.finished_at,
        updated_at: row.updated_at,
    })
}

/// Adds the search trial, where there is one, to each job view.
pub(crate) async fn attach_trials(st: &store::Store, views: &mut [JobView]) -> Result<(), ApiError> {
    for v in views.iter_mut() {
        if let Some(t) = store::searches::trial_of_job(st, &v.id).await? {
            v.search = Some(JobSearchView {
                search_id: t.search_id,
                trial: t.trial,
                params: parse_json_column(&t.params, "trial parameters")?,
            });
        }
    }
    Ok(())
}

/// Puts `base.` before the fields of a problem about the base job.
fn under_base(e: ApiError) -> ApiError {
    match e {
        ApiError::Unprocessable { errors, .. } => ApiError::validation(
            errors
                .into_iter()
                .map(|f| FieldError::new(format!("base.{}", f.field), f.message))
                .collect(),
        ),
        other => other,
    }
}

/// Start a hyperparameter search: trials of the base job with values from the space, run as
/// ordinary jobs on the shared worker pool, `max_concurrent_trials` at a time.
#[utoipa::path(post, path = "/searches", operation_id = "create_search", tag = "searches",
    request_body = CreateSearchRequest,
    responses(
        (status = 202, description = "Started; `Location` is the search", body = SearchView),
        (status = 404, description = "Unknown model, dataset or initial weights in the base job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid request; `errors` names each field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_search(
    State(state): State<AppState>,
    AppJson(mut req): AppJson<CreateSearchRequest>,
) -> Result<Response, ApiError> {
    let st = &state.store;
    let mut label_errors = Vec::new();
    if let Some(n) = &req.base.name {
        labels::check_name("name", n, &mut label_errors);
    }
    if let Some(t) = &req.base.tags {
        labels::check_tags(t, &mut label_errors);
    }
    if let Some(n) = &req.base.notes {
        labels::check_notes("notes", n, &mut label_errors);
    }
    let plan = match req.base.plan() {
        Ok(plan) if label_errors.is_empty() => plan,
        Ok(_) => return Err(under_base(ApiError::validation(label_errors))),
        Err(mut errors) => {
            errors.extend(label_errors);
            return Err(under_base(ApiError::validation(errors)));
        }
    };
    check_job(st, &req.base, plan).await.map_err(under_base)?;
    let seed = *req
        .seed
        .get_or_insert_with(|| uuid::Uuid::new_v4().as_u64_pair().0 >> 1);
    if req.base.fit.seed.is_none() {
        // Every trial starts from the same initial weights and shuffles, as Keras Tuner's do.
        req.base.fit.seed = Some(seed);
    }
    let model = store::models::get(st, &req.base.model_id).await?;
    let base_job = serde_json::to_value(&req.base).map_err(anyhow::Error::from)?;
    let base_model: Value = parse_json_column(&model.spec, "model spec")?;
    let plan = search::check(&req, &base_job, &base_model, state.config.max_params, seed)
        .map_err(ApiError::validation)?;
    let now = store::now_rfc3339();
    let row = SearchRow {
        seq: 0,
        id: store::new_id(),
        status: "running".into(),
        request: serde_json::to_string(&req).map_err(anyhow::Error::from)?,
        base_job: base_job.to_string(),
        base_model_id: model.id.clone(),
        base_model_name: model.name.clone(),
        base_model_spec: model.spec.clone(),
        trial_count: plan.trial_count() as i64,
        cancel_requested: false,
        created_at: now.clone(),
        finished_at: None,
        updated_at: now,
    };
    store::searches::insert(st, &row).await?;
    let queued = controller::reconcile(st, state.jobs.hub(), &row.id).await?;
    if queued > 0 {
        state.jobs.notify_queued();
    }
    let row = store::searches::get(st, &row.id).await?;
    let location = format!("/v1/searches/{}", row.id);
    let mut res = (
        StatusCode::ACCEPTED,
        AppJson(search_view(&state, row, true).await?),
    )
        .into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// List searches, oldest first (without their trials).
#[utoipa::path(get, path = "/searches", operation_id = "list_searches", tag = "searches",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of searches", body = SearchList),
        (status = 422, description = "Bad `limit` or unknown `after` cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_searches(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<AppJson<SearchList>, ApiError> {
    let page = store::searches::list(&state.store, q.limit()?, q.after.as_deref())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::invalid("after", "is not the id of a search"),
            other => other.into(),
        })?;
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        items.push(search_view(&state, row, false).await?);
    }
    Ok(AppJson(SearchList {
        items,
        next: page.next,
    }))
}

/// A search with its leaderboard: every trial with its parameters, status and objective, best
/// first, and the best trial's saved model.
#[utoipa::path(get, path = "/searches/{id}", operation_id = "get_search", tag = "searches",
    params(("id" = String, Path, description = "Search id")),
    responses(
        (status = 200, description = "The search", body = SearchView),
        (status = 404, description = "No such search", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_search(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<SearchView>, ApiError> {
    let row = store::searches::get(&state.store, &id)
        .await
        .map_err(not_found_as("search", &id))?;
    Ok(AppJson(search_view(&state, row, true).await?))
}

/// Cancel a search: no trial starts any more, queued trials are cancelled and running ones stop
/// within a batch; the search ends `cancelled` once they have.
#[utoipa::path(post, path = "/searches/{id}/cancel", operation_id = "cancel_search", tag = "searches",
    params(("id" = String, Path, description = "Search id")),
    responses(
        (status = 202, description = "Stopping (or already stopped when no trial was running)", body = SearchView),
        (status = 404, description = "No such search", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The search has already ended", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_search(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = &state.store;
    let row = store::searches::get(st, &id)
        .await
        .map_err(not_found_as("search", &id))?;
    if !store::searches::request_cancel(st, &id).await? {
        return Err(ApiError::Conflict(format!(
            "search {id:?} has already ended ({})",
            row.status
        )));
    }
    for t in store::searches::trials(st, &id).await? {
        let Some(job_id) = &t.job_id else { continue };
        let job = match store::jobs::get(st, job_id).await {
            Ok(j) => j,
            Err(store::Error::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let status = serde_json::json!({"status": "cancelled", "epoch": job.epoch, "attempt": job.attempts})
            .to_string();
        let done = serde_json::json!({"status": "cancelled", "stop_reason": "cancelled", "error": null,
                                      "saved_model_id": null, "best_epoch": job.best_epoch})
        .to_string();
        if let Some(events) = store::jobs::cancel_queued(st, job_id, &status, &done).await? {
            state.jobs.hub().publish_rows(job_id, &events);
            state.jobs.hub().close(job_id);
        } else if store::jobs::request_cancel(st, job_id).await? {
            state.jobs.stop_running(job_id);
        }
    }
    controller::reconcile(st, state.jobs.hub(), &id).await?;
    let row = store::searches::get(st, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(search_view(&state, row, true).await?),
    )
        .into_response())
}

/// Server-Sent Events of a search: `trial_started`, `trial_epoch`, `trial_promoted`,
/// `trial_stopped`, `trial_finished` and `done` (the search ended, with its best trial). Each has
/// an `id`; reconnecting with `Last-Event-ID` replays every event after it, in order, none twice.
/// The stream ends after `done`.
#[utoipa::path(get, path = "/searches/{id}/events", operation_id = "search_events", tag = "searches",
    params(("id" = String, Path, description = "Search id"), EventsQuery,
           ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such search", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = last_event_id(&headers, &q)?;
    store::searches::get(&state.store, &id)
        .await
        .map_err(not_found_as("search", &id))?;
    Ok(event_stream(state, EventLog::Search(id), last))
}
