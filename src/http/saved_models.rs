//! `/v1/saved-models` (trained weights: from checkpoints, uploads and imports; list, get, delete,
//! predict, evaluate, weights and whole-model export) and `POST /v1/models/{id}/weights`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::body::read_limited;
use super::content::{BodyType, body_type, is_json, media_type, unsupported};
use super::inference::{self, EncodeFn, Encoded, ParseFn};
use super::{ApiError, AppJson, AppQuery, AppState, Problem, error::parse_json};
use crate::data::Labels;
use crate::domain::model::ModelSpec;
use crate::nn::{self, FieldError, NamedTensor, Targets};
use crate::serving;
use crate::serving::cache::CacheStats;
use crate::serving::predict::{self, Prediction};
use crate::serving::{
    EvaluationView, ExportMeta, FormatError, Nested, OutputKind, ServedModel, fastjson, formats, image, npy,
};
use crate::store::{
    self,
    models::ModelRow,
    saved_models::{SavedModelInfo, SavedModelRow, SavedModelSource},
};

pub fn router() -> OpenApiRouter<AppState> {
    // Batches, images and weight files exceed the JSON body limit; these handlers read their body
    // themselves, bounded by the predict limit (predict) or the upload limit (weights, imports).
    let large_bodies = OpenApiRouter::new()
        .routes(routes!(predict))
        .routes(routes!(import_saved_model))
        .routes(routes!(upload_weights))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes(routes!(create_saved_model, list_saved_models))
        .routes(routes!(get_saved_model, delete_saved_model))
        .routes(routes!(evaluate))
        .routes(routes!(get_weights))
        .routes(routes!(export_saved_model))
        .routes(routes!(get_model_cache))
        .merge(large_bodies)
}

/// Body of `POST /v1/saved-models`: a saved model from a stored checkpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSavedModelRequest {
    /// The job whose checkpoint to use.
    pub job_id: String,
    /// 0-based epoch of the checkpoint.
    pub epoch: i64,
}

/// Where a saved model's weights came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceView {
    Job,
    Checkpoint,
    WeightsUpload,
    Import,
}

impl From<SavedModelSource> for SourceView {
    fn from(s: SavedModelSource) -> Self {
        match s {
            SavedModelSource::Job => SourceView::Job,
            SavedModelSource::Checkpoint => SourceView::Checkpoint,
            SavedModelSource::WeightsUpload => SourceView::WeightsUpload,
            SavedModelSource::Import => SourceView::Import,
        }
    }
}

/// Trained weights for an architecture, ready to predict.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedModelView {
    pub id: String,
    /// The architecture (`/v1/models/{id}`) the weights instantiate.
    pub model_id: String,
    /// The job the weights come from; `null` for uploads and imports.
    pub job_id: Option<String>,
    /// 0-based epoch of the weights, when from a job.
    pub epoch: Option<i64>,
    pub source: SourceView,
    /// Metrics of that epoch (`loss`, `accuracy`, `val_loss`, ...); `{}` when unknown.
    #[schema(value_type = Object)]
    pub metrics: Value,
    /// Shape of one input sample.
    pub input_shape: Vec<u64>,
    /// How predictions are shaped: `classifier` (class + probabilities), `binary` (probability of
    /// class 1) or `regressor` (values).
    pub output_kind: OutputKind,
    /// Size of the stored weights file.
    pub size_bytes: i64,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of saved models.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedModelList {
    pub items: Vec<SavedModelView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

/// Query of `GET /v1/saved-models`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SavedModelQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
    /// Only saved models of this architecture.
    pub model_id: Option<String>,
    /// Only saved models from this job.
    pub job_id: Option<String>,
}

/// Body of `POST /v1/saved-models/{id}/predict` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Samples, each an array of numbers: nested in the model's input shape (e.g. 28 rows of 28
    /// numbers for `input_shape: [28, 28]`) or flat (784 numbers).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub instances: Nested,
}

/// `multipart/form-data` form of a predict: one or more PNG images.
// Describes the form for the OpenAPI document only; the handler reads the parts itself.
#[derive(Debug, ToSchema)]
pub struct PredictUpload {
    /// A PNG of the model's 2-D input size; grayscale, or RGB converted to gray. Repeat for a batch.
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
}

/// Predictions, one per instance in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    pub predictions: Vec<Prediction>,
}

/// Body of `POST /v1/saved-models/{id}/evaluate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// A labelled dataset with the model's input shape.
    pub dataset_id: String,
}

/// The media type of `.npy` bodies.
const NPY: &str = "application/x-npy";

/// A NumPy `.npy` file.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct NpyFile(pub Vec<u8>);

/// A `.safetensors` file.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct SafetensorsFile(pub Vec<u8>);

/// `multipart/form-data` upload of a `.safetensors` file (the raw file as the body works too).
// Describes the form for the OpenAPI document only; the handler reads the parts itself.
#[derive(Debug, ToSchema)]
pub struct SafetensorsUpload {
    /// The `.safetensors` file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

fn saved_error(e: store::Error, id: &str) -> ApiError {
    match e {
        store::Error::NotFound("saved model") => ApiError::not_found("saved model", id),
        other => other.into(),
    }
}

fn view(info: &SavedModelInfo) -> Result<SavedModelView, ApiError> {
    let spec: ModelSpec = serde_json::from_str(&info.spec)
        .map_err(|e| anyhow::anyhow!("stored spec of saved model {} is unreadable: {e}", info.id))?;
    Ok(SavedModelView {
        id: info.id.clone(),
        model_id: info.model_id.clone(),
        job_id: info.job_id.clone(),
        epoch: info.epoch,
        source: info.source.into(),
        metrics: serde_json::from_str(&info.metrics).unwrap_or_else(|_| Value::Object(Default::default())),
        input_shape: spec.input_shape.clone(),
        output_kind: OutputKind::of(&spec),
        size_bytes: info.size_bytes,
        created_at: info.created_at.clone(),
    })
}

/// The decoded model of a saved model id or alias, from the cache or else from SQLite (then cached);
/// concurrent first requests for a cold model share one read and decode. An alias is looked up on
/// every call, so a request that starts after a `PUT /v1/aliases/{name}` answered uses its new model.
pub async fn served_model(state: &AppState, id_or_alias: &str) -> Result<Arc<ServedModel>, ApiError> {
    let id = &super::aliases::resolve(state, id_or_alias).await?;
    state
        .models
        .get_or_load(id, || async {
            let row = store::saved_models::get(&state.store, id)
                .await
                .map_err(|e| saved_error(e, id))?;
            tokio::task::spawn_blocking(move || -> anyhow::Result<ServedModel> {
                let spec: ModelSpec = serde_json::from_str(&row.spec)?;
                let tensors = store::saved_models::decode_weights(&row.weights)?;
                Ok(ServedModel::build(row.id, row.model_id, spec, &tensors)?)
            })
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|e| ApiError::from(anyhow::anyhow!("stored saved model {id} does not decode: {e:#}")))
        })
        .await
}

/// What the model cache holds and how well it serves: hits, misses, lookups that waited for
/// another request's load of the same model, loads, evictions and the hit rate.
#[utoipa::path(get, path = "/model-cache", operation_id = "get_model_cache", tag = "saved-models",
    responses((status = 200, description = "Cache size and counters since the server started", body = CacheStats)))]
pub async fn get_model_cache(State(state): State<AppState>) -> AppJson<CacheStats> {
    AppJson(state.models.stats())
}

/// Stores a new saved model made of `served`'s weights and caches it; returns `201` with its view.
/// Where a new saved model's weights come from.
struct Origin {
    job_id: Option<String>,
    epoch: Option<i64>,
    source: SavedModelSource,
    /// JSON object of the metrics that go with the weights.
    metrics: String,
}

/// Stores a new saved model, with `new_architecture` (an imported model's) in the same transaction
/// so a failure leaves neither row behind.
async fn store_new(
    state: &AppState,
    new_architecture: Option<&ModelRow>,
    served: ServedModel,
    spec_json: String,
    origin: Origin,
) -> Result<Response, ApiError> {
    let Origin {
        job_id,
        epoch,
        source,
        metrics,
    } = origin;
    let row = SavedModelRow {
        id: served.id.clone(),
        model_id: served.model_id.clone(),
        job_id,
        epoch,
        source,
        metrics,
        spec: spec_json,
        weights: store::saved_models::encode_weights(&served.model.tensors()),
        created_at: store::now_rfc3339(),
    };
    let mut tx = state.store.pool.begin().await.map_err(store::Error::from)?;
    if let Some(model) = new_architecture {
        store::models::insert_with(&mut *tx, model).await?;
    }
    store::saved_models::insert_with(&mut *tx, &row).await?;
    tx.commit().await.map_err(store::Error::from)?;
    state.models.insert(Arc::new(served));
    let info = store::saved_models::get_info(&state.store, &row.id).await?;
    created(&format!("/v1/saved-models/{}", row.id), view(&info)?)
}

fn created<T: Serialize>(location: &str, body: T) -> Result<Response, ApiError> {
    let mut res = (StatusCode::CREATED, AppJson(body)).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// Engine refusals of weights as a 422 listing each tensor (`dense.kernel: expected shape ...`).
fn weights_error(e: nn::Error) -> ApiError {
    match e {
        nn::Error::WeightMismatch(msgs) => {
            let errors: Vec<FieldError> = msgs
                .iter()
                .map(|m| match m.split_once(": ") {
                    Some((name, rule)) => FieldError::new(name, rule),
                    None => FieldError::new("weights", m.clone()),
                })
                .collect();
            ApiError::Unprocessable {
                detail: format!("the weights do not match the model: {}", msgs.join("; ")),
                errors,
            }
        }
        other => ApiError::invalid("weights", other.to_string()),
    }
}

fn format_error(field: &str, e: FormatError) -> ApiError {
    match e {
        FormatError::Dtype(list) => ApiError::Unprocessable {
            detail: format!("tensors must be F32: {}", list.join("; ")),
            errors: list
                .into_iter()
                .map(|m| {
                    let name = m.split(' ').next().unwrap_or_default().to_string();
                    FieldError::new(name, m)
                })
                .collect(),
        },
        other => ApiError::invalid(field, other.to_string()),
    }
}

/// Reads a request body up to the upload limit.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.max_upload_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("the request body exceeds the limit of {limit} bytes"))
    })
}

/// The parts of a multipart body as `(name, bytes)`.
async fn multipart_parts(parts: Parts, body: Bytes) -> Result<Vec<(String, Bytes)>, ApiError> {
    let req = Request::from_parts(parts, Body::from(body));
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text())))?;
    let mut parts = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text())))?;
        parts.push((name, data));
    }
    Ok(parts)
}

/// A file given either as the raw body or as the multipart part named `part`.
async fn file_body(state: &AppState, req: Request, part: &str) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(state, body).await?;
    if body_type(&parts.headers) != BodyType::Multipart {
        if bytes.is_empty() {
            return Err(ApiError::invalid(part, "the request body is empty"));
        }
        return Ok(bytes);
    }
    let mut found = None;
    for (name, data) in multipart_parts(parts, bytes).await? {
        if name == part {
            found = Some(data);
        } else {
            return Err(ApiError::invalid(
                name,
                format!("unknown part; send the file as part `{part}`"),
            ));
        }
    }
    found.ok_or_else(|| ApiError::invalid(part, "is required"))
}

fn model_spec_of(row: &ModelRow) -> Result<ModelSpec, ApiError> {
    serde_json::from_str(&row.spec)
        .map_err(|e| anyhow::anyhow!("stored spec of model {} is unreadable: {e}", row.id).into())
}

/// Builds a model off the async runtime (big models take a while to allocate and load).
async fn build_blocking(
    model_id: String,
    spec: ModelSpec,
    tensors: Vec<NamedTensor>,
) -> Result<ServedModel, ApiError> {
    tokio::task::spawn_blocking(move || ServedModel::build(store::new_id(), model_id, spec, &tensors))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(weights_error)
}

/// Make a saved model from a stored checkpoint of a job.
#[utoipa::path(post, path = "/saved-models", operation_id = "create_saved_model", tag = "saved-models",
    request_body = CreateSavedModelRequest,
    responses(
        (status = 201, description = "Created; `Location` names the saved model", body = SavedModelView,
         headers(("Location" = String, description = "URL of the new saved model"))),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The job has no checkpoint at that epoch (the stored epochs are listed)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_saved_model(
    State(state): State<AppState>,
    AppJson(req): AppJson<CreateSavedModelRequest>,
) -> Result<Response, ApiError> {
    let job = store::saved_models::job_ref(&state.store, &req.job_id)
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::not_found("job", &req.job_id),
            other => other.into(),
        })?;
    let (state_bytes, metrics) =
        match store::saved_models::checkpoint_state(&state.store, &req.job_id, req.epoch).await {
            Ok(found) => found,
            Err(store::Error::NotFound(_)) => {
                let epochs = store::saved_models::checkpoint_epochs(&state.store, &req.job_id).await?;
                return Err(ApiError::invalid(
                    "epoch",
                    format!(
                        "job {:?} has no checkpoint at epoch {}; stored epochs: {epochs:?}",
                        req.job_id, req.epoch
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
    let model_row = store::models::get(&state.store, &job.model_id).await?;
    let spec = model_spec_of(&model_row)?;
    let tensors = formats::weights_from_training_state(&state_bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint of job {} epoch {}: {e}", req.job_id, req.epoch))?;
    let served = build_blocking(job.model_id, spec, tensors).await?;
    store_new(
        &state,
        None,
        served,
        model_row.spec,
        Origin {
            job_id: Some(req.job_id),
            epoch: Some(req.epoch),
            source: SavedModelSource::Checkpoint,
            metrics,
        },
    )
    .await
}

/// List saved models, oldest first.
#[utoipa::path(get, path = "/saved-models", operation_id = "list_saved_models", tag = "saved-models",
    params(SavedModelQuery),
    responses(
        (status = 200, description = "A page of saved models", body = SavedModelList),
        (status = 422, description = "Bad `limit` or unknown `after` cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_saved_models(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<SavedModelQuery>,
) -> Result<AppJson<SavedModelList>, ApiError> {
    let limit = super::pagination::ListQuery {
        limit: q.limit,
        after: None,
    }
    .limit()?;
    let page = store::saved_models::list(
        &state.store,
        limit,
        q.after.as_deref(),
        q.model_id.as_deref(),
        q.job_id.as_deref(),
    )
    .await
    .map_err(|e| match e {
        store::Error::NotFound(_) => ApiError::invalid("after", "is not the id of a saved model"),
        other => other.into(),
    })?;
    let items = page.items.iter().map(view).collect::<Result<_, _>>()?;
    Ok(AppJson(SavedModelList {
        items,
        next: page.next,
    }))
}

/// Get a saved model.
#[utoipa::path(get, path = "/saved-models/{id}", operation_id = "get_saved_model", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id")),
    responses(
        (status = 200, description = "The saved model", body = SavedModelView),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_saved_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<SavedModelView>, ApiError> {
    let info = store::saved_models::get_info(&state.store, &id)
        .await
        .map_err(|e| saved_error(e, &id))?;
    Ok(AppJson(view(&info)?))
}

/// Delete a saved model.
#[utoipa::path(delete, path = "/saved-models/{id}", operation_id = "delete_saved_model", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An alias points at it, or a queued or running job uses it as `initial_weights`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_saved_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    store::saved_models::delete(&state.store, &id)
        .await
        .map_err(|e| saved_error(e, &id))?;
    state.models.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// The answer format a predict client accepts: JSON (the default) or `.npy`; `406` when neither.
fn wants_npy(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(false);
    };
    // The quality of each acceptable type; the better one wins, JSON on a tie.
    let (mut json, mut npy) = (None::<f32>, None::<f32>);
    for range in accept.split(',') {
        let mut fields = range.split(';');
        let media = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = fields
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let best = |cur: Option<f32>| Some(cur.map_or(q, |c| c.max(q)));
        match media.as_str() {
            "application/x-npy" => npy = best(npy),
            "*/*" | "application/*" | "application/json" => json = best(json),
            _ => {}
        }
    }
    match (json, npy) {
        (None, None) => Err(ApiError::Status {
            status: StatusCode::NOT_ACCEPTABLE,
            detail: "predictions are answered as application/json or application/x-npy".into(),
        }),
        (Some(j), Some(n)) => Ok(n > j),
        (j, _) => Ok(j.is_none()),
    }
}

/// Parses `{"instances": [...]}` straight into the input matrix.
fn parse_instances_json(
    bytes: &[u8],
    served: &ServedModel,
    max_rows: usize,
) -> Result<Array2<f32>, ApiError> {
    let instances = match fastjson::instances_body(bytes) {
        Some(n) => n,
        None => parse_json::<PredictRequest>(bytes)?.instances,
    };
    let x = predict::instances_matrix("instances", instances, &served.spec.input_shape, max_rows)
        .map_err(|e| ApiError::validation(vec![e]))?;
    predict::check_finite("instances", x.view()).map_err(|e| ApiError::validation(vec![e]))?;
    Ok(x)
}

/// Reads an `.npy` array of instances into the input matrix, its declared size checked against the
/// body before anything is allocated.
fn parse_instances_npy(bytes: &[u8], served: &ServedModel, max_rows: usize) -> Result<Array2<f32>, ApiError> {
    let a = npy::parse(bytes).map_err(|e| ApiError::invalid("instances", e.0))?;
    let x = predict::raw_matrix(
        "instances",
        a.dtype,
        &a.shape,
        a.data,
        &served.spec.input_shape,
        max_rows,
    )
    .map_err(|e| ApiError::validation(vec![e]))?;
    predict::check_finite("instances", x.view()).map_err(|e| ApiError::validation(vec![e]))?;
    Ok(x)
}

/// Decodes PNG parts into the input matrix.
fn parse_images(images: &[Bytes], served: &ServedModel, max_rows: usize) -> Result<Array2<f32>, ApiError> {
    if images.is_empty() {
        return Err(ApiError::invalid(
            "image",
            "is required: at least one PNG part `image`",
        ));
    }
    if images.len() > max_rows {
        return Err(ApiError::invalid(
            "image",
            format!(
                "{} images; at most {max_rows} are accepted per request",
                images.len()
            ),
        ));
    }
    let features = served.input_dim();
    let mut x = Array2::zeros((images.len(), features));
    for (i, data) in images.iter().enumerate() {
        let gray = image::decode_gray(data, &served.spec.input_shape)
            .map_err(|e| ApiError::invalid(format!("image[{i}]"), e.to_string()))?;
        x.row_mut(i)
            .as_slice_mut()
            .expect("rows of a new array")
            .copy_from_slice(&gray);
    }
    Ok(x)
}

/// Predict with a saved model: JSON `instances`, a `.npy` array of instances, or PNG images as
/// multipart parts `image`. Answers JSON predictions, or with `Accept: application/x-npy` the model's
/// outputs (probabilities, or values for regressors) as a float32 `.npy` array `(n, outputs)`.
///
/// An `.npy` body holds the instances as one float32 or uint8 array (other little-endian integer
/// and float types are converted too) of shape `(n, *input_shape)` or `(n, features)`.
#[utoipa::path(post, path = "/saved-models/{id}/predict", operation_id = "predict", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id or alias"),
        ("Accept" = Option<String>, Header, description = "`application/json` (default) or `application/x-npy`")),
    request_body(content(
        (PredictRequest = "application/json"),
        (NpyFile = "application/x-npy"),
        (PredictUpload = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "One prediction per instance, as JSON or (with `Accept: application/x-npy`) a float32 `.npy` array of the outputs. `Server-Timing` gives read, parse, predict and encode times.",
         content((PredictResponse = "application/json"), (NpyFile = "application/x-npy"))),
        (status = 400, description = "Malformed JSON or multipart body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "An `Accept` header that allows neither JSON nor `.npy`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the predict limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON, `.npy` or multipart", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong instance shape, non-finite value, empty or oversized batch, unreadable `.npy`, non-PNG or wrong-size image", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn predict(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let served = served_model(&state, &id).await?;
    let (parts, body) = req.into_parts();
    let npy_out = wants_npy(&parts.headers)?;
    let media = media_type(&parts.headers).unwrap_or_default();
    if !(is_json(&media) || media == NPY || media == "multipart/form-data") {
        return Err(unsupported(
            &parts.headers,
            "application/json ({\"instances\": [...]}), application/x-npy (a .npy array) or \
             multipart/form-data (PNG parts `image`)",
        ));
    }
    let bytes = read_limited(
        &parts.headers,
        body,
        state.config.max_predict_bytes,
        "--max-predict-bytes",
    )
    .await?;
    let body_len = bytes.len();
    let max_rows = state.config.max_predict_rows;
    let parse: ParseFn<()> = if is_json(&media) {
        Box::new(move |served| Ok((parse_instances_json(&bytes, served, max_rows)?, ())))
    } else if media == NPY {
        Box::new(move |served| Ok((parse_instances_npy(&bytes, served, max_rows)?, ())))
    } else {
        let mut images = Vec::new();
        for (name, data) in multipart_parts(parts, bytes).await? {
            if name != "image" {
                return Err(ApiError::invalid(
                    name,
                    "unknown part; send PNG images as parts `image`",
                ));
            }
            images.push(data);
        }
        Box::new(move |served| Ok((parse_images(&images, served, max_rows)?, ())))
    };
    let encode: EncodeFn<()> = Box::new(move |served, out, ()| {
        if npy_out {
            let (n, k) = out.dim();
            return Ok(Encoded {
                body: npy::encode_f32(&[n, k], out.as_slice().expect("a new array")),
                content_type: NPY,
                headers: Vec::new(),
            });
        }
        let body = serde_json::to_vec(&PredictResponse {
            predictions: predict::shape_predictions(served.kind, out.view()),
        })
        .map_err(anyhow::Error::from)?;
        Ok(Encoded {
            body,
            content_type: "application/json",
            headers: Vec::new(),
        })
    });
    inference::run(&state, served, body_len, started, parse, encode).await
}

/// Evaluate a saved model on a labelled dataset: loss, accuracy and a confusion matrix.
///
/// The loss follows the output layer: sparse categorical crossentropy for softmax classifiers
/// (categorical for one-hot targets), binary crossentropy for one sigmoid unit, mean squared error
/// otherwise.
#[utoipa::path(post, path = "/saved-models/{id}/evaluate", operation_id = "evaluate", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id or alias")),
    request_body = EvaluateRequest,
    responses(
        (status = 200, description = "Loss, accuracy, sample count and confusion matrix (`[true][predicted]`)", body = EvaluationView),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown dataset, or one whose shape or labels do not fit the model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn evaluate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(req): AppJson<EvaluateRequest>,
) -> Result<AppJson<EvaluationView>, ApiError> {
    let served = served_model(&state, &id).await?;
    let data = store::datasets::load_arrays(&state.store, &req.dataset_id)
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::invalid(
                "dataset_id",
                format!("dataset {:?} does not exist", req.dataset_id),
            ),
            other => other.into(),
        })?;
    if data.x.ncols() != served.input_dim() {
        return Err(ApiError::invalid(
            "dataset_id",
            format!(
                "the dataset's samples have shape {:?} ({} features) but the model's input shape {:?} needs {}",
                data.input_shape,
                data.x.ncols(),
                served.spec.input_shape,
                served.input_dim()
            ),
        ));
    }
    let targets = match data.labels {
        Labels::Classes(c) => Targets::Classes(c),
        Labels::Targets(t) => Targets::Dense(t),
    };
    let view = tokio::task::spawn_blocking(move || {
        predict::evaluate(&served.model, served.kind, data.x.view(), &targets)
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(|e| ApiError::invalid("dataset_id", e.to_string()))?;
    Ok(AppJson(view))
}

fn file_response(bytes: Vec<u8>, filename: &str) -> Result<Response, ApiError> {
    let mut res = (StatusCode::OK, bytes).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// The weights as a `.safetensors` file (Keras `save_weights`): `float32` tensors named
/// `<layer>.kernel` `(inputs, units)`, `<layer>.bias` `(units,)`, and for fitted `pca` layers
/// `<layer>.mean`, `<layer>.components` `(k, features)`, `<layer>.explained_variance_ratio`.
#[utoipa::path(get, path = "/saved-models/{id}/weights", operation_id = "get_weights", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id or alias")),
    responses(
        (status = 200, description = "The weights file", body = SafetensorsFile, content_type = "application/octet-stream"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_weights(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let served = served_model(&state, &id).await?;
    let bytes = formats::encode_weights(&served.model.tensors());
    file_response(bytes, &format!("{id}.weights.safetensors"))
}

/// Query of `GET /v1/saved-models/{id}/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `safetensors` (default): fitd's own file, which `POST /v1/saved-models/import` reads back;
    /// `onnx`: an ONNX model (opset 13) of the preprocessing and the network.
    pub format: Option<String>,
}

/// The whole model as one file.
///
/// `format=safetensors` (the default, Keras `save`): the weights, and in the metadata `format`
/// (`fitd.model/1`), `spec` (the architecture JSON, layers named), `name`, `metrics` and
/// `preprocessing` (rescaling scale/offset and fitted PCA sizes).
///
/// `format=onnx`: an ONNX model (opset 13, IR 7) with the whole preprocessing (rescaling, PCA) and
/// the network; input `input` `[batch, ...input_shape]` float32 with a dynamic batch dimension,
/// output `probabilities` `[batch, units]` for classifiers (softmax or one sigmoid unit), else
/// `values`. onnxruntime reproduces fitd's predictions to float32 rounding.
#[utoipa::path(get, path = "/saved-models/{id}/export", operation_id = "export_saved_model", tag = "saved-models",
    params(("id" = String, Path, description = "Saved model id or alias"), ExportQuery),
    responses(
        (status = 200, description = "The model file (`.safetensors` or `.onnx`, named in `Content-Disposition`)", body = SafetensorsFile, content_type = "application/octet-stream"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown `format`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_saved_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let onnx = match q.format.as_deref() {
        None | Some("safetensors") => false,
        Some("onnx") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("must be safetensors or onnx, got {other:?}"),
            ));
        }
    };
    let served = served_model(&state, &id).await?;
    let info = store::saved_models::get_info(&state.store, &id)
        .await
        .map_err(|e| saved_error(e, &id))?;
    let name = match store::models::get(&state.store, &served.model_id).await {
        Ok(row) => row.name,
        Err(store::Error::NotFound(_)) => "model".to_string(),
        Err(e) => return Err(e.into()),
    };
    if onnx {
        let bytes = tokio::task::spawn_blocking(move || serving::onnx::export(&served, &name))
            .await
            .map_err(anyhow::Error::from)?;
        return file_response(bytes, &format!("{id}.onnx"));
    }
    let meta = ExportMeta {
        spec: served.spec.clone(),
        name,
        metrics: serde_json::from_str(&info.metrics).unwrap_or_else(|_| serde_json::json!({})),
    };
    let bytes = formats::encode_export(&served.model.tensors(), &meta);
    file_response(bytes, &format!("{id}.fitd.safetensors"))
}

/// Load an exported model file (Keras `load_model`): creates its architecture and a saved model.
#[utoipa::path(post, path = "/saved-models/import", operation_id = "import_saved_model", tag = "saved-models",
    request_body(content(
        (SafetensorsFile = "application/octet-stream"),
        (SafetensorsUpload = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Created; `Location` names the saved model", body = SavedModelView,
         headers(("Location" = String, description = "URL of the new saved model"))),
        (status = 413, description = "Body over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a safetensors file, not a fitd export, invalid spec, or weights that do not fit it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn import_saved_model(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let bytes = file_body(&state, req, "file").await?;
    let (tensors, meta, _) = formats::decode_export(&bytes).map_err(|e| format_error("file", e))?;
    meta.spec.check(state.config.max_params).map_err(|errs| {
        ApiError::validation(
            errs.into_iter()
                .map(|e| FieldError::new(format!("spec.{}", e.field), e.message))
                .collect(),
        )
    })?;
    let name: String = meta.name.chars().take(200).collect();
    let name = if name.trim().is_empty() {
        "imported".to_string()
    } else {
        name
    };
    let spec_json = serde_json::to_string(&meta.spec).map_err(anyhow::Error::from)?;
    let now = store::now_rfc3339();
    let model_row = ModelRow {
        id: store::new_id(),
        name,
        spec: spec_json.clone(),
        // Its weights exist already, so its layers are as frozen as a trained model's.
        locked: true,
        created_at: now.clone(),
        updated_at: now,
    };
    let served = build_blocking(model_row.id.clone(), meta.spec, tensors).await?;
    store_new(
        &state,
        Some(&model_row),
        served,
        spec_json,
        Origin {
            job_id: None,
            epoch: None,
            source: SavedModelSource::Import,
            metrics: meta.metrics.to_string(),
        },
    )
    .await
}

/// Upload weights for an architecture (Keras `load_weights`): every tensor's name, dtype and shape is
/// checked against the spec. Creates a saved model and freezes the architecture's layers.
#[utoipa::path(post, path = "/models/{id}/weights", operation_id = "upload_weights", tag = "saved-models",
    params(("id" = String, Path, description = "Model (architecture) id")),
    request_body(content(
        (SafetensorsFile = "application/octet-stream"),
        (SafetensorsUpload = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Created; `Location` names the saved model", body = SavedModelView,
         headers(("Location" = String, description = "URL of the new saved model"))),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a safetensors file, or tensors missing, extra, not F32 or of the wrong shape (each listed)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_weights(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let model_row = store::models::get(&state.store, &id).await.map_err(|e| match e {
        store::Error::NotFound(_) => ApiError::not_found("model", &id),
        other => other.into(),
    })?;
    let bytes = file_body(&state, req, "file").await?;
    let (tensors, _) = formats::decode(&bytes).map_err(|e| format_error("file", e))?;
    let spec = model_spec_of(&model_row)?;
    let served = build_blocking(id.clone(), spec, tensors).await?;
    store::models::lock(&state.store, &id).await?;
    store_new(
        &state,
        None,
        served,
        model_row.spec,
        Origin {
            job_id: None,
            epoch: None,
            source: SavedModelSource::WeightsUpload,
            metrics: "{}".into(),
        },
    )
    .await
}
