//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers too).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Probe answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// Always `ok` when the request succeeds.
    pub status: String,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "The server is alive", body = HealthView)))]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok".into() })
}

/// Readiness: the database is reachable.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve requests", body = HealthView),
        (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
    state.store.ping().await.map_err(|e| {
        crate::metrics::db_error();
        ApiError::Unavailable(format!("database: {e}"))
    })?;
    Ok(Json(HealthView { status: "ok".into() }))
}
