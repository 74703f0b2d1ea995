//! The Open Inference Protocol (KServe v2 REST) for saved models: `/v2` server metadata, health,
//! model metadata and readiness, and `infer` with one `FP32` input tensor in row-major `data`.
//!
//! Errors are the same `application/problem+json` documents as the rest of the API, with the
//! protocol's `error` member added so KServe clients find their message where they look for it.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::saved_models::{json_with_timing, run_predict, served_model};
use super::{ApiError, AppJson, AppState, Problem, error::parse_json};
use crate::nn::FieldError;
use crate::serving::{Nested, predict};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(model_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(version_metadata))
        .routes(routes!(version_ready))
        // Batches exceed the JSON limit; `infer` reads its body bounded by the upload limit.
        .routes(routes!(infer))
        .routes(routes!(version_infer))
        .layer(DefaultBodyLimit::disable())
}

/// An [`ApiError`] rendered as a problem plus the protocol's `error` member.
#[derive(Debug)]
pub struct V2Error(pub ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        V2Error(e)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self.0 {
            tracing::error!(error = ?e, "request failed");
        }
        let problem = self.0.to_problem();
        let mut body = serde_json::to_value(&problem).expect("a problem always serializes");
        body["error"] = Value::String(problem.detail.clone());
        let mut res = (
            self.0.status_code(),
            serde_json::to_vec(&body).expect("JSON value"),
        )
            .into_response();
        res.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(super::error::PROBLEM_JSON),
        );
        res
    }
}

/// `GET /v2` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    /// Protocol extensions supported (none).
    pub extensions: Vec<String>,
}

/// Health answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveView {
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyView {
    pub ready: bool,
}

/// A model's readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelReadyView {
    pub name: String,
    pub ready: bool,
}

/// A tensor's description in model metadata; `-1` marks the batch dimension.
#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// The saved model id.
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// One input tensor of an inference request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferInput {
    /// Any name; the model has one input.
    pub name: String,
    /// `[batch, ...sample shape]`, the sample shape being the model's input shape or flat.
    pub shape: Vec<i64>,
    /// Must be `FP32`.
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// The values in row-major order, flat or nested.
    #[schema(value_type = Vec<f32>)]
    pub data: Nested,
}

/// An output the client asks for by name.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    /// `output`, the only output.
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

/// `POST /v2/models/{id}/infer` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Exactly one tensor.
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One output tensor.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    /// Row-major values: probabilities for classifiers, raw outputs otherwise.
    pub data: Vec<f32>,
}

/// `POST /v2/models/{id}/infer` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", operation_id = "v2_server_metadata", tag = "kserve-v2",
    responses((status = 200, description = "Server name and version", body = ServerMetadata)))]
pub async fn server_metadata() -> AppJson<ServerMetadata> {
    AppJson(ServerMetadata {
        name: "fitd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: Vec::new(),
    })
}

/// Liveness.
#[utoipa::path(get, path = "/v2/health/live", operation_id = "v2_live", tag = "kserve-v2",
    responses((status = 200, description = "The server is live", body = LiveView)))]
pub async fn live() -> AppJson<LiveView> {
    AppJson(LiveView { live: true })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/v2/health/ready", operation_id = "v2_ready", tag = "kserve-v2",
    responses(
        (status = 200, description = "Ready", body = ReadyView),
        (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ready(State(state): State<AppState>) -> Result<AppJson<ReadyView>, V2Error> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    Ok(AppJson(ReadyView { ready: true }))
}

/// Model metadata: input and output tensors.
#[utoipa::path(get, path = "/v2/models/{id}", operation_id = "v2_model_metadata", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id")),
    responses(
        (status = 200, description = "The model's tensors", body = ModelMetadata),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<ModelMetadata>, V2Error> {
    let served = served_model(&state, &id).await?;
    let out = served.model.output_dim().unwrap_or(0) as i64;
    Ok(AppJson(ModelMetadata {
        name: id,
        versions: vec!["1".into()],
        platform: "fitd".into(),
        inputs: vec![TensorMetadata {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: std::iter::once(-1)
                .chain(served.spec.input_shape.iter().map(|&d| d as i64))
                .collect(),
        }],
        outputs: vec![TensorMetadata {
            name: "output".into(),
            datatype: "FP32".into(),
            shape: vec![-1, out],
        }],
    }))
}

/// Model readiness: the saved model exists and decodes (this loads it into the cache).
#[utoipa::path(get, path = "/v2/models/{id}/ready", operation_id = "v2_model_ready", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id")),
    responses(
        (status = 200, description = "Ready to infer", body = ModelReadyView),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn model_ready(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<ModelReadyView>, V2Error> {
    served_model(&state, &id).await?;
    Ok(AppJson(ModelReadyView {
        name: id,
        ready: true,
    }))
}

/// Inference: one `FP32` input `[batch, ...]`, one `FP32` output `output` `[batch, units]`.
#[utoipa::path(post, path = "/v2/models/{id}/infer", operation_id = "v2_infer", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id")),
    request_body = InferRequest,
    responses(
        (status = 200, description = "The output tensor", body = InferResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not one FP32 input, a shape that does not fit the data or the model, non-finite values, empty or oversized batch, unknown output", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn infer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, V2Error> {
    let t0 = Instant::now();
    let served = served_model(&state, &id).await?;
    let limit = state.config.max_upload_bytes;
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("the request body exceeds the limit of {limit} bytes"))
    })?;
    let t_read = Instant::now();
    let body: InferRequest = parse_json(&bytes)?;
    if let Some(outputs) = &body.outputs {
        for (i, o) in outputs.iter().enumerate() {
            if o.name != "output" {
                return Err(ApiError::invalid(
                    format!("outputs[{i}].name"),
                    format!(
                        "unknown output {:?}; the model has one output, \"output\"",
                        o.name
                    ),
                )
                .into());
            }
        }
    }
    let mut inputs = body.inputs;
    if inputs.len() != 1 {
        return Err(ApiError::invalid(
            "inputs",
            format!("the model takes exactly one input tensor, got {}", inputs.len()),
        )
        .into());
    }
    let input = inputs.pop().expect("one input");
    if input.datatype != "FP32" {
        return Err(ApiError::invalid(
            "inputs[0].datatype",
            format!("must be FP32, got {:?}", input.datatype),
        )
        .into());
    }
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid("inputs[0].shape", "dimensions must be non-negative integers"))?;
    let Some((&n, sample)) = shape.split_first() else {
        return Err(ApiError::invalid("inputs[0].shape", "must start with the batch dimension").into());
    };
    let declared = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if declared != Some(input.data.data.len()) {
        return Err(ApiError::invalid(
            "inputs[0].data",
            format!(
                "holds {} values but shape {:?} needs {}",
                input.data.data.len(),
                shape,
                declared.map_or("more than fit in memory".to_string(), |d| d.to_string())
            ),
        )
        .into());
    }
    predict::check_sample_shape(sample, &served.spec.input_shape)
        .map_err(|m| ApiError::validation(vec![FieldError::new("inputs[0].shape", m)]))?;
    let reshaped = Nested {
        data: input.data.data,
        shape: vec![n, served.input_dim()],
    };
    let x = predict::instances_matrix(
        "inputs[0].data",
        reshaped,
        &served.spec.input_shape,
        state.config.max_predict_rows,
    )
    .map_err(|e| ApiError::validation(vec![e]))?;
    predict::check_finite("inputs[0].data", x.view()).map_err(|e| ApiError::validation(vec![e]))?;
    let t1 = Instant::now();
    let out = run_predict(served, x, state.config.predict_inline_values).await?;
    let t2 = Instant::now();
    let (rows, cols) = out.dim();
    let resp = InferResponse {
        model_name: id,
        id: body.id,
        outputs: vec![InferOutput {
            name: "output".into(),
            shape: vec![rows, cols],
            datatype: "FP32".into(),
            data: out.into_raw_vec_and_offset().0,
        }],
    };
    let bytes = serde_json::to_vec(&resp).map_err(|e| ApiError::Internal(e.into()))?;
    let t3 = Instant::now();
    Ok(json_with_timing(
        bytes,
        [
            ("read", t0, t_read),
            ("parse", t_read, t1),
            ("predict", t1, t2),
            ("encode", t2, t3),
        ],
    ))
}

/// Saved models have one version, `1`; any other is unknown.
fn check_version(id: &str, version: &str) -> Result<(), V2Error> {
    if version == "1" {
        Ok(())
    } else {
        Err(ApiError::NotFound {
            what: "model version",
            id: format!("{id}/{version}"),
        }
        .into())
    }
}

/// Model metadata of a version (only `1` exists).
#[utoipa::path(get, path = "/v2/models/{id}/versions/{version}", operation_id = "v2_version_metadata", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id"), ("version" = String, Path, description = "Always `1`")),
    responses(
        (status = 200, description = "The model's tensors", body = ModelMetadata),
        (status = 404, description = "No such saved model or version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn version_metadata(
    state: State<AppState>,
    Path((id, version)): Path<(String, String)>,
) -> Result<AppJson<ModelMetadata>, V2Error> {
    check_version(&id, &version)?;
    model_metadata(state, Path(id)).await
}

/// Readiness of a version (only `1` exists).
#[utoipa::path(get, path = "/v2/models/{id}/versions/{version}/ready", operation_id = "v2_version_ready", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id"), ("version" = String, Path, description = "Always `1`")),
    responses(
        (status = 200, description = "Ready to infer", body = ModelReadyView),
        (status = 404, description = "No such saved model or version", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn version_ready(
    state: State<AppState>,
    Path((id, version)): Path<(String, String)>,
) -> Result<AppJson<ModelReadyView>, V2Error> {
    check_version(&id, &version)?;
    model_ready(state, Path(id)).await
}

/// Inference on a version (only `1` exists); the same as `POST /v2/models/{id}/infer`.
#[utoipa::path(post, path = "/v2/models/{id}/versions/{version}/infer", operation_id = "v2_version_infer", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id"), ("version" = String, Path, description = "Always `1`")),
    request_body = InferRequest,
    responses(
        (status = 200, description = "The output tensor", body = InferResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saved model or version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "See `POST /v2/models/{id}/infer`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn version_infer(
    state: State<AppState>,
    Path((id, version)): Path<(String, String)>,
    req: Request,
) -> Result<Response, V2Error> {
    check_version(&id, &version)?;
    infer(state, Path(id), req).await
}
