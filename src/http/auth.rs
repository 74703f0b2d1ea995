//! The authentication middleware: every route's [`Access`] rule applied to the request's token.
//!
//! Requests carry `Authorization: Bearer <token>`. No or an unknown or revoked token: `401`; a
//! token without the route's scope: `403`; both `application/problem+json` with a
//! `WWW-Authenticate` challenge (RFC 6750). While no token exists, the server is open (it refused to
//! start that way unless bound to loopback or told `--insecure-no-auth`).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::{self, Access, Scope};

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The cookie holding a dashboard session id.
pub const SESSION_COOKIE: &str = "fitd_session";

/// The dashboard session id of the `Cookie` header.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE && !v.is_empty()).then_some(v)
        })
}

/// Who sent the request: its bearer token, else its session cookie. `Ok(None)` when neither
/// names a live token; `Err` with the `401` to send for a bad bearer token.
pub async fn identify(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<crate::auth::Principal>, Response> {
    if let Some(token) = bearer(headers) {
        return match auth::authenticate(&state.store, token).await {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => Err(challenge(
                StatusCode::UNAUTHORIZED,
                "the API token is unknown or revoked".into(),
                r#"Bearer realm="fitd", error="invalid_token""#.into(),
            )),
            Err(e) => Err(ApiError::from(e).into_response()),
        };
    }
    match session_cookie(headers) {
        None => Ok(None),
        Some(sid) => auth::session_principal(&state.store, &state.sessions, sid)
            .await
            .map_err(|e| ApiError::from(e).into_response()),
    }
}

fn challenge(status: StatusCode, detail: String, www: String) -> Response {
    let mut res = ApiError::Status { status, detail }.into_response();
    if let Ok(v) = HeaderValue::from_str(&www) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// Checks the request's token against its route's rule; see the module docs.
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Preflights carry no credentials; the CORS layer answers them.
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let access = {
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str())
            .unwrap_or_else(|| req.uri().path());
        auth::access(req.method(), path)
    };
    let Access::Scope(scope) = access else {
        return next.run(req).await;
    };
    match state.auth.enforced(&state.store).await {
        Ok(true) => {}
        Ok(false) => return next.run(req).await,
        Err(e) => return ApiError::from(e).into_response(),
    }
    let principal = match identify(&state, req.headers()).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return challenge(
                StatusCode::UNAUTHORIZED,
                "this request needs an API token: send `Authorization: Bearer <token>` (or sign in \
                 to the dashboard)"
                    .into(),
                r#"Bearer realm="fitd""#.into(),
            );
        }
        Err(res) => return res,
    };
    if !principal.scopes.contains(&scope) {
        return forbidden(scope);
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn forbidden(scope: Scope) -> Response {
    challenge(
        StatusCode::FORBIDDEN,
        format!("the API token lacks the `{scope}` scope this request needs"),
        format!(r#"Bearer realm="fitd", error="insufficient_scope", scope="{scope}""#),
    )
}
