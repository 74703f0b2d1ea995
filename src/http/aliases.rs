//! `/v1/aliases`: stable names (`production`) for saved models. Predict, evaluate and the KServe v2
//! routes accept an alias wherever they accept a saved model id.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::store::{self, aliases::AliasRow};

/// Longest alias name, in characters.
pub const MAX_ALIAS_CHARS: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_aliases))
        .routes(routes!(get_alias, put_alias, delete_alias))
        .routes(routes!(alias_history))
}

/// An alias and the saved model it points at.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasView {
    pub name: String,
    pub saved_model_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// When it was last pointed at a saved model.
    pub updated_at: String,
}

/// A page of aliases, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasList {
    pub items: Vec<AliasView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

/// Body of `PUT /v1/aliases/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAlias {
    /// The saved model the alias names from now on.
    pub saved_model_id: String,
}

/// One move of an alias.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasHistoryEntry {
    /// Where the alias pointed from `created_at` on; `null` when it was deleted then.
    pub saved_model_id: Option<String>,
    pub created_at: String,
}

/// An alias's moves, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasHistory {
    pub name: String,
    pub items: Vec<AliasHistoryEntry>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AliasListQuery {
    /// Only aliases pointing at this saved model.
    pub saved_model_id: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AliasHistoryQuery {
    /// How many of the latest moves, 1..=500 (default 50).
    pub limit: Option<i64>,
}

fn view(r: AliasRow) -> AliasView {
    AliasView {
        name: r.name,
        saved_model_id: r.saved_model_id,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Checks an alias name: 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter, and not shaped like
/// a saved model id (a UUID), so a path segment names one or the other, never both.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.chars().count() > MAX_ALIAS_CHARS || !ok_chars {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {MAX_ALIAS_CHARS} of A-Z a-z 0-9 _ . -"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ApiError::invalid("name", "must start with a letter"));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ApiError::invalid(
            "name",
            "must not look like a saved model id (a UUID)",
        ));
    }
    Ok(())
}

/// The saved model id a path segment names: the target of the alias of that name, or the segment
/// itself (an id, checked later). Ids are UUIDs, which alias names cannot be, so they skip the lookup.
pub async fn resolve(state: &AppState, id_or_alias: &str) -> Result<String, ApiError> {
    if uuid::Uuid::parse_str(id_or_alias).is_ok() {
        return Ok(id_or_alias.to_string());
    }
    Ok(store::aliases::resolve(&state.store, id_or_alias)
        .await?
        .unwrap_or_else(|| id_or_alias.to_string()))
}

fn alias_error(e: store::Error, name: &str) -> ApiError {
    match e {
        store::Error::NotFound("alias") => ApiError::not_found("alias", name),
        other => other.into(),
    }
}

/// Point an alias at a saved model, creating it (`201`) or moving it (`200`) in one transaction;
/// every request that starts after the answer uses the new saved model. The move is recorded in the
/// alias's history.
#[utoipa::path(put, path = "/aliases/{name}", operation_id = "put_alias", tag = "aliases",
    params(("name" = String, Path, description = "Alias name: 1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter")),
    request_body = PutAlias,
    responses(
        (status = 200, description = "Moved", body = AliasView),
        (status = 201, description = "Created", body = AliasView),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad name or body; `errors` names the field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
    AppJson(body): AppJson<PutAlias>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (row, created) = store::aliases::put(&state.store, &name, &body.saved_model_id)
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::not_found("saved model", body.saved_model_id.clone()),
            other => other.into(),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AppJson(view(row))).into_response())
}

/// An alias and its saved model.
#[utoipa::path(get, path = "/aliases/{name}", operation_id = "get_alias", tag = "aliases",
    params(("name" = String, Path, description = "Alias name")),
    responses(
        (status = 200, description = "The alias", body = AliasView),
        (status = 404, description = "No such alias", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<AppJson<AliasView>, ApiError> {
    let row = store::aliases::get(&state.store, &name)
        .await
        .map_err(|e| alias_error(e, &name))?;
    Ok(AppJson(view(row)))
}

/// Delete an alias (its saved model stays); recorded in its history.
#[utoipa::path(delete, path = "/aliases/{name}", operation_id = "delete_alias", tag = "aliases",
    params(("name" = String, Path, description = "Alias name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such alias", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    store::aliases::delete(&state.store, &name)
        .await
        .map_err(|e| alias_error(e, &name))?;
    Ok(StatusCode::NO_CONTENT)
}

/// List aliases by name, optionally only those of one saved model.
#[utoipa::path(get, path = "/aliases", operation_id = "list_aliases", tag = "aliases",
    params(AliasListQuery),
    responses(
        (status = 200, description = "A page of aliases", body = AliasList),
        (status = 422, description = "Bad `limit`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_aliases(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<AliasListQuery>,
) -> Result<AppJson<AliasList>, ApiError> {
    let limit = ListQuery {
        limit: q.limit,
        after: None,
    }
    .limit()?;
    let page = store::aliases::list(
        &state.store,
        q.saved_model_id.as_deref(),
        limit,
        q.after.as_deref(),
    )
    .await?;
    Ok(AppJson(AliasList {
        items: page.items.into_iter().map(view).collect(),
        next: page.next,
    }))
}

/// Where an alias pointed over time, newest first; kept after the alias is deleted.
#[utoipa::path(get, path = "/aliases/{name}/history", operation_id = "alias_history", tag = "aliases",
    params(("name" = String, Path, description = "Alias name"), AliasHistoryQuery),
    responses(
        (status = 200, description = "The moves, newest first", body = AliasHistory),
        (status = 404, description = "The alias never existed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad `limit`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn alias_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    AppQuery(q): AppQuery<AliasHistoryQuery>,
) -> Result<AppJson<AliasHistory>, ApiError> {
    let limit = ListQuery {
        limit: q.limit,
        after: None,
    }
    .limit()?;
    let rows = store::aliases::history(&state.store, &name, limit)
        .await
        .map_err(|e| alias_error(e, &name))?;
    Ok(AppJson(AliasHistory {
        name,
        items: rows
            .into_iter()
            .map(|r| AliasHistoryEntry {
                saved_model_id: r.saved_model_id,
                created_at: r.created_at,
            })
            .collect(),
    }))
}
