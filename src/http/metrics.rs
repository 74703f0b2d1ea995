//! `GET /metrics` (Prometheus text format) and the middleware counting every request.
//!
//! The endpoint needs the `read` scope once tokens are enforced, like every other `GET` of data:
//! it names saved models and shows how the service is used. Prometheus sends a token with
//! `authorization: {credentials_file: ...}` in its scrape config.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState};
use crate::jobs::JobStatusCounts;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Records the request's method, route template (`/v1/jobs/{id}`, never the raw URL, so ids do not
/// multiply the series), status and time to the response head.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let res = next.run(req).await;
    state
        .metrics
        .http_request(&method, &route, res.status().as_u16(), started.elapsed());
    res
}

/// Metrics in the Prometheus text exposition format: HTTP requests and latency by route and status,
/// jobs by status, queue depth and wait, epoch duration and samples/s, predictions and predict
/// latency by saved model, model cache hits and misses, open event streams, database pool use and
/// errors.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    let counts: JobStatusCounts = crate::store::jobs::count_by_status(&state.store).await?;
    for (status, n) in &counts {
        m.set_gauge("fitd_jobs", &[("status", status.to_string())], *n as f64);
    }
    let queued = counts.iter().find(|(s, _)| *s == "queued").map_or(0, |(_, n)| *n);
    m.set_gauge("fitd_job_queue_depth", &[], queued as f64);
    let cache = state.models.stats();
    m.set_counter("fitd_model_cache_hits_total", cache.hits);
    m.set_counter("fitd_model_cache_misses_total", cache.misses);
    m.set_counter("fitd_model_cache_waits_total", cache.waits);
    m.set_gauge("fitd_model_cache_bytes", &[], cache.bytes as f64);
    m.set_gauge("fitd_model_cache_models", &[], cache.models as f64);
    let pool = &state.store.pool;
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    m.set_gauge("fitd_db_pool_connections", &[("state", "idle".into())], idle);
    m.set_gauge(
        "fitd_db_pool_connections",
        &[("state", "in_use".into())],
        (size - idle).max(0.0),
    );
    m.set_gauge(
        "fitd_db_pool_max_connections",
        &[],
        f64::from(pool.options().get_max_connections()),
    );
    m.set_counter(
        "fitd_db_errors_total",
        crate::metrics::DB_ERRORS.load(std::sync::atomic::Ordering::Relaxed),
    );
    let mut res = m.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(res)
}
