//! `/v1/models`: model architectures: create, list, get, delete, append a layer, summary.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::domain::model::{LayerSpec, ModelSpec, parse_input_shape, parse_layer};
use crate::nn::{FieldError, Summary};
use crate::store::{self, models::ModelRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_model, list_models))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(append_layer))
        .routes(routes!(get_model_summary))
}

/// Body of `POST /v1/models`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    /// A label for humans, 1-200 characters.
    pub name: String,
    /// Shape of one input sample without the batch axis, e.g. `[28, 28]`.
    pub input_shape: Vec<u64>,
    /// The layers in order.
    pub layers: Vec<LayerSpec>,
}

/// Parameter counts; `null` while they depend on a `pca` layer with a variance target not yet fitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParamsView {
    pub total: Option<u64>,
    pub trainable: Option<u64>,
    pub non_trainable: Option<u64>,
}

/// A model architecture.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    pub name: String,
    /// Shape of one input sample.
    pub input_shape: Vec<u64>,
    /// The layers with their Keras-style names filled in.
    pub layers: Vec<LayerSpec>,
    /// Output shape of one sample; `null` entries are only known after fitting a `pca` layer.
    pub output_shape: Vec<Option<u64>>,
    pub params: ParamsView,
    /// True once a training job used the model; layers can no longer be appended.
    pub locked: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A page of models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

/// One row of a model summary.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryRowView {
    pub name: String,
    /// Layer type (`dense`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// Keras class name (`Dense`, ...).
    pub class_name: String,
    /// Output shape including the batch axis as `null`, as Keras prints it.
    pub output_shape: Vec<Option<u64>>,
    pub params: Option<u64>,
    pub trainable: bool,
}

/// Keras `model.summary()` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryView {
    pub model_id: String,
    pub name: String,
    pub rows: Vec<SummaryRowView>,
    pub total_params: Option<u64>,
    pub trainable_params: Option<u64>,
    pub non_trainable_params: Option<u64>,
}

fn model_error(e: store::Error, id: &str) -> ApiError {
    match e {
        store::Error::NotFound("model") => ApiError::not_found("model", id),
        other => other.into(),
    }
}

fn model_view(row: &ModelRow, spec: &ModelSpec, summary: &Summary) -> ModelView {
    ModelView {
        id: row.id.clone(),
        name: row.name.clone(),
        input_shape: spec.input_shape.clone(),
        layers: spec.named_layers(),
        output_shape: summary.output_shape.iter().map(|d| d.map(|d| d as u64)).collect(),
        params: ParamsView {
            total: summary.total_params,
            trainable: summary.trainable_params,
            non_trainable: summary.non_trainable_params,
        },
        locked: row.locked,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
    }
}

/// Decodes a stored row; stored specs passed validation when written, so failures are server faults.
fn decode(row: &ModelRow, param_cap: u64) -> Result<(ModelSpec, Summary), ApiError> {
    let spec: ModelSpec = serde_json::from_str(&row.spec)
        .map_err(|e| anyhow::anyhow!("stored spec of model {} is unreadable: {e}", row.id))?;
    // The cap may have been lowered since the model was stored; the stored model stays viewable.
    let summary = spec
        .check(param_cap.max(u64::MAX / 2))
        .map_err(|errs| anyhow::anyhow!("stored spec of model {} no longer checks: {errs:?}", row.id))?;
    Ok((spec, summary))
}

/// Parses and validates a create request, reporting every bad field at once.
fn parse_create(body: &Value, param_cap: u64) -> Result<(String, ModelSpec, Summary), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if !["name", "input_shape", "layers"].contains(&key.as_str()) {
            errors.push(FieldError::new(
                key.clone(),
                "is not a known field (name, input_shape, layers)",
            ));
        }
    }
    let name = match obj.get("name").map(|v| v.as_str()) {
        None => {
            errors.push(FieldError::new("name", "is required"));
            String::new()
        }
        Some(Some(n)) if !n.trim().is_empty() && n.chars().count() <= 200 => n.to_string(),
        Some(_) => {
            errors.push(FieldError::new("name", "must be a string of 1-200 characters"));
            String::new()
        }
    };
    let input_shape = match obj.get("input_shape") {
        None => {
            errors.push(FieldError::new("input_shape", "is required"));
            Vec::new()
        }
        Some(Value::Array(dims)) => parse_input_shape(dims, &mut errors),
        Some(_) => {
            errors.push(FieldError::new(
                "input_shape",
                "must be an array of positive integers",
            ));
            Vec::new()
        }
    };
    let mut layers = Vec::new();
    // Positions of the layers that parsed, so their own rules can still be reported when others did not.
    let mut parsed = Vec::new();
    match obj.get("layers") {
        None => errors.push(FieldError::new("layers", "is required")),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(layer) = parse_layer(&format!("layers[{i}]"), item, &mut errors) {
                    parsed.push(i);
                    layers.push(layer);
                }
            }
        }
        Some(_) => errors.push(FieldError::new("layers", "must be an array of layers")),
    }
    if !errors.is_empty() {
        for (layer, i) in layers.iter().zip(parsed) {
            errors.extend(layer.to_nn().field_errors(i));
        }
        errors.sort_by(|a, b| natural_field_order(&a.field, &b.field));
        return Err(ApiError::validation(errors));
    }
    let spec = ModelSpec { input_shape, layers };
    let summary = spec.check(param_cap).map_err(ApiError::validation)?;
    Ok((name, spec, summary))
}

/// Create a model architecture.
#[utoipa::path(post, path = "/models", operation_id = "create_model", tag = "models",
    request_body = CreateModelRequest,
    responses(
        (status = 201, description = "Created; `Location` names the new model", body = ModelView,
         headers(("Location" = String, description = "URL of the new model"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid spec, every bad field listed, or too many parameters", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_model(
    State(state): State<AppState>,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let (name, spec, summary) = parse_create(&body, state.config.max_params)?;
    let now = store::now_rfc3339();
    let row = ModelRow {
        id: store::new_id(),
        name,
        spec: serde_json::to_string(&spec).map_err(anyhow::Error::from)?,
        locked: false,
        created_at: now.clone(),
        updated_at: now,
    };
    store::models::insert(&state.store, &row).await?;
    let location = format!("/v1/models/{}", row.id);
    let mut res = (StatusCode::CREATED, AppJson(model_view(&row, &spec, &summary))).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// List model architectures, oldest first.
#[utoipa::path(get, path = "/models", operation_id = "list_models", tag = "models",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of models", body = ModelList),
        (status = 422, description = "Bad `limit` or unknown `after` cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_models(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<AppJson<ModelList>, ApiError> {
    let page = store::models::list(&state.store, q.limit()?, q.after.as_deref())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::invalid("after", "is not the id of a model"),
            other => other.into(),
        })?;
    let items = page
        .items
        .iter()
        .map(|row| decode(row, state.config.max_params).map(|(spec, s)| model_view(row, &spec, &s)))
        .collect::<Result<_, _>>()?;
    Ok(AppJson(ModelList {
        items,
        next: page.next,
    }))
}

/// Get a model architecture.
#[utoipa::path(get, path = "/models/{id}", operation_id = "get_model", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<ModelView>, ApiError> {
    let row = store::models::get(&state.store, &id)
        .await
        .map_err(|e| model_error(e, &id))?;
    let (spec, summary) = decode(&row, state.config.max_params)?;
    Ok(AppJson(model_view(&row, &spec, &summary)))
}

/// Delete a model architecture. Finished jobs that trained it are deleted with it only with
/// `cascade=true` (its saved models stay: they keep a copy of the spec); otherwise they make it a 409.
#[utoipa::path(delete, path = "/models/{id}", operation_id = "delete_model", tag = "models",
    params(("id" = String, Path, description = "Model id"), super::jobs::CascadeQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A queued or running job uses the model, or finished jobs do and `cascade` is not `true`; `detail` names the jobs", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<super::jobs::CascadeQuery>,
) -> Result<StatusCode, ApiError> {
    store::models::delete(&state.store, &id, q.cascade.unwrap_or(false))
        .await
        .map_err(|e| model_error(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Append one layer to a model (Keras `model.add`).
#[utoipa::path(post, path = "/models/{id}/layers", operation_id = "append_layer", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    request_body = LayerSpec,
    responses(
        (status = 200, description = "The model with the layer appended", body = ModelView),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A job has used the model; its layers are frozen", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid layer or resulting model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn append_layer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(body): AppJson<Value>,
) -> Result<AppJson<ModelView>, ApiError> {
    let row = store::models::get(&state.store, &id)
        .await
        .map_err(|e| model_error(e, &id))?;
    if row.locked {
        return Err(ApiError::Conflict(format!(
            "model {id:?} has been used by a training job; its layers can no longer change"
        )));
    }
    let (mut spec, _) = decode(&row, state.config.max_params)?;
    let index = spec.layers.len();
    let mut errors = Vec::new();
    let layer = parse_layer(&format!("layers[{index}]"), &body, &mut errors);
    let Some(layer) = layer else {
        return Err(ApiError::validation(errors));
    };
    spec.layers.push(layer);
    let summary = spec
        .check(state.config.max_params)
        .map_err(ApiError::validation)?;
    let new_spec = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
    store::models::update_spec(&state.store, &id, &row.spec, &new_spec)
        .await
        .map_err(|e| model_error(e, &id))?;
    let row = store::models::get(&state.store, &id)
        .await
        .map_err(|e| model_error(e, &id))?;
    Ok(AppJson(model_view(&row, &spec, &summary)))
}

/// The model's summary: JSON rows, or with `Accept: text/plain` the Keras-style table.
#[utoipa::path(get, path = "/models/{id}/summary", operation_id = "get_model_summary", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The summary", content(
            (SummaryView = "application/json"),
            (String = "text/plain"),
        )),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_model_summary(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let row = store::models::get(&state.store, &id)
        .await
        .map_err(|e| model_error(e, &id))?;
    let (_, summary) = decode(&row, state.config.max_params)?;
    if prefers_text(&headers) {
        let mut res = summary.to_table(&row.name).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(res);
    }
    let rows = summary
        .rows
        .iter()
        .map(|r| SummaryRowView {
            name: r.name.clone(),
            type_: r.kind.to_string(),
            class_name: r.class_name.to_string(),
            output_shape: std::iter::once(None)
                .chain(r.output_shape.iter().map(|d| d.map(|d| d as u64)))
                .collect(),
            params: r.params,
            trainable: r.trainable,
        })
        .collect();
    Ok(AppJson(SummaryView {
        model_id: row.id,
        name: row.name,
        rows,
        total_params: summary.total_params,
        trainable_params: summary.trainable_params,
        non_trainable_params: summary.non_trainable_params,
    })
    .into_response())
}

/// True when the client asked for text/plain and not for JSON first.
fn prefers_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pos = |needle: &str| accept.find(needle);
    match (pos("text/plain"), pos("application/json")) {
        (Some(_), None) => true,
        (Some(t), Some(j)) => t < j,
        _ => false,
    }
}

/// Orders field paths as they appear in the request (`layers[2]` before `layers[10]`).
fn natural_field_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |f: &str| {
        let index = f
            .strip_prefix("layers[")
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse::<usize>().ok());
        (index.is_some(), index)
    };
    key(a).cmp(&key(b))
}
