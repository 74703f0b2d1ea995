//! `/v1/tokens`: API tokens, managed by tokens with the `admin` scope.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppJson, AppState, Problem};
use crate::auth::{self, CreateError, Scope};
use crate::nn::FieldError;
use crate::store::{self, tokens::TokenRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, 1-200 characters (e.g. `ci`, `grafana`).
    pub name: String,
    /// One or more of `read`, `train`, `predict`, `admin`.
    pub scopes: Vec<String>,
}

/// An API token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Some of `read`, `train`, `predict`, `admin`.
    pub scopes: Vec<String>,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `null` while the token is valid.
    pub revoked_at: Option<String>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenView {
    #[serde(flatten)]
    pub info: TokenView,
    /// The token to send as `Authorization: Bearer <token>`; it cannot be shown again.
    pub token: String,
}

/// Every token, revoked ones included.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

pub fn token_view(row: &TokenRow) -> TokenView {
    TokenView {
        id: row.id.clone(),
        name: row.name.clone(),
        scopes: auth::scopes_from_str(&row.scopes)
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        prefix: row.prefix.clone(),
        created_at: row.created_at.clone(),
        revoked_at: row.revoked_at.clone(),
    }
}

/// Create an API token; its secret is in this response only.
#[utoipa::path(post, path = "/tokens", operation_id = "create_token", tag = "tokens",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "Created; `token` is shown only now", body = CreatedTokenView,
         headers(("Location" = String, description = "URL of the new token"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad name or scopes, each named", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_token(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > auth::MAX_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("must be 1-{} characters", auth::MAX_NAME_CHARS),
        ));
    }
    if body.scopes.is_empty() {
        errors.push(FieldError::new(
            "scopes",
            "needs at least one of read, train, predict, admin",
        ));
    }
    let mut scopes = Vec::new();
    for (i, s) in body.scopes.iter().enumerate().take(16) {
        match s.parse::<Scope>() {
            Ok(scope) => scopes.push(scope),
            Err(e) => errors.push(FieldError::new(format!("scopes[{i}]"), e)),
        }
    }
    if body.scopes.len() > 16 {
        errors.push(FieldError::new("scopes", "lists at most 16 entries"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let created = auth::create_token(&state.store, name, &scopes)
        .await
        .map_err(|e| match e {
            CreateError::Name => ApiError::invalid("name", e.to_string()),
            CreateError::NoScopes => ApiError::invalid("scopes", e.to_string()),
            CreateError::Store(e) => e.into(),
            CreateError::Other(e) => ApiError::Internal(e),
        })?;
    state.auth.latch();
    tracing::info!(token_id = %created.row.id, name = %created.row.name, scopes = %created.row.scopes, "API token created");
    let location = format!("/v1/tokens/{}", created.row.id);
    let view = CreatedTokenView {
        info: token_view(&created.row),
        token: created.token,
    };
    let mut res = (StatusCode::CREATED, AppJson(view)).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(anyhow::Error::from)?,
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// List API tokens (never their secrets), oldest first.
#[utoipa::path(get, path = "/tokens", operation_id = "list_tokens", tag = "tokens",
    responses((status = 200, description = "Every token", body = TokenList)))]
pub async fn list_tokens(State(state): State<AppState>) -> Result<AppJson<TokenList>, ApiError> {
    let rows = store::tokens::list(&state.store).await?;
    Ok(AppJson(TokenList {
        items: rows.iter().map(token_view).collect(),
    }))
}

/// Revoke an API token; requests with it are refused from now on.
#[utoipa::path(delete, path = "/tokens/{id}", operation_id = "revoke_token", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = TokenView),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<TokenView>, ApiError> {
    let row = store::tokens::revoke(&state.store, &id, &store::now_rfc3339())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::not_found("token", &id),
            other => other.into(),
        })?;
    tracing::info!(token_id = %row.id, "API token revoked");
    Ok(AppJson(token_view(&row)))
}
