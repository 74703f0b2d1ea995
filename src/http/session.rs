//! `/v1/session`: the dashboard signs in with a token and gets a session cookie.
//!
//! The token travels once, in the JSON body of `POST /v1/session` (never in a URL, so never in a log
//! or the browser history); the answer sets `fitd_session`, `HttpOnly` (scripts cannot read it) and
//! `SameSite=Strict` (other sites' requests do not carry it), which `EventSource` sends on its own.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{SESSION_COOKIE, identify, session_cookie};
use super::{ApiError, AppJson, AppState, Problem};
use crate::auth::{self, Principal, SESSION_TTL};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_session, create_session, delete_session))
}

/// Body of `POST /v1/session`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token.
    pub token: String,
}

/// Who is signed in, and whether the server needs a token at all.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// False while no token exists (a loopback server is then open to everyone).
    pub auth_required: bool,
    /// Whether the request carried a valid session cookie or token.
    pub signed_in: bool,
    /// The token's name, when signed in.
    pub name: Option<String>,
    /// The token's scopes, when signed in.
    pub scopes: Vec<String>,
}

async fn view(state: &AppState, principal: Option<&Principal>) -> Result<SessionView, ApiError> {
    let auth_required = state.auth.enforced(&state.store).await?;
    let name = match principal {
        Some(p) => Some(crate::store::tokens::get(&state.store, &p.token_id).await?.name),
        None => None,
    };
    Ok(SessionView {
        auth_required,
        signed_in: principal.is_some(),
        name,
        scopes: principal
            .map(|p| p.scopes.iter().map(|s| s.as_str().to_string()).collect())
            .unwrap_or_default(),
    })
}

fn cookie(value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Who this request is signed in as (by session cookie or bearer token).
#[utoipa::path(get, path = "/session", operation_id = "get_session", tag = "tokens",
    responses((status = 200, description = "The session, or `signed_in: false`", body = SessionView)))]
pub async fn get_session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let principal = identify(&state, &headers).await.unwrap_or(None);
    Ok(AppJson(view(&state, principal.as_ref()).await?).into_response())
}

/// Sign in with a token: sets the `fitd_session` cookie (`HttpOnly`, `SameSite=Strict`, 12 hours).
#[utoipa::path(post, path = "/session", operation_id = "create_session", tag = "tokens",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` carries the session", body = SessionView),
        (status = 401, description = "Unknown or revoked token", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No token given", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    AppJson(body): AppJson<SignIn>,
) -> Result<Response, ApiError> {
    let token = body.token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid("token", "must not be empty"));
    }
    let Some(principal) = auth::authenticate(&state.store, token).await? else {
        return Err(ApiError::Status {
            status: StatusCode::UNAUTHORIZED,
            detail: "the API token is unknown or revoked".into(),
        });
    };
    let sid = state.sessions.create(&principal.token_id)?;
    tracing::info!(token_id = %principal.token_id, "dashboard session started");
    let mut res = AppJson(view(&state, Some(&principal)).await?).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie(&sid, SESSION_TTL.as_secs())?);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Sign out: ends the session and clears its cookie.
#[utoipa::path(delete, path = "/session", operation_id = "delete_session", tag = "tokens",
    responses((status = 204, description = "Signed out")))]
pub async fn delete_session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(sid) = session_cookie(&headers) {
        state.sessions.remove(sid);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie("", 0)?);
    Ok(res)
}
