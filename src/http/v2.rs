//! The Open Inference Protocol (KServe v2 REST) for saved models: `/v2` server metadata, health,
//! model metadata and readiness, and `infer` with one input tensor, as JSON `data` or with the binary
//! tensor data extension (`Inference-Header-Content-Length`, `binary_data_size`, raw little-endian
//! bytes after the JSON header, binary outputs on request) as Triton's client libraries use it.
//!
//! Errors are the same `application/problem+json` documents as the rest of the API, with the
//! protocol's `error` member added so KServe clients find their message where they look for it.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::response::{IntoResponse, Response};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::body::read_limited;
use super::content::{is_json, media_type, unsupported};
use super::inference::{self, EncodeFn, Encoded, ParseFn};
use super::saved_models::served_model;
use super::{ApiError, AppJson, AppState, Problem, error::parse_json};
use crate::nn::FieldError;
use crate::serving::tensor::{self, Dtype};
use crate::serving::{Nested, ServedModel, predict};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(model_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(version_metadata))
        .routes(routes!(version_ready))
        // Batches exceed the JSON limit; `infer` reads its body bounded by the predict limit.
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
    /// Protocol extensions supported: `binary_tensor_data`.
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

/// The `parameters` of an input tensor fitd reads; others are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InferInputParameters {
    /// Bytes of this input in the binary section after the JSON header (binary tensor data
    /// extension); the input then has no `data`.
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

/// One input tensor of an inference request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferInput {
    /// Any name; the model has one input.
    pub name: String,
    /// `[batch, ...sample shape]`, the sample shape being the model's input shape or flat.
    pub shape: Vec<i64>,
    /// `FP32`, `FP64`, `UINT8`, `INT8`, `UINT16`, `INT16`, `UINT32`, `INT32`, `UINT64` or `INT64`;
    /// values are converted to float32 for the model.
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<InferInputParameters>,
    /// The values (numbers) in row-major order, flat or nested in arrays following `shape`; absent
    /// when the tensor is binary.
    #[serde(default)]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub data: Option<Nested>,
}

/// The `parameters` of a requested output fitd reads.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RequestedOutputParameters {
    /// Return this output as raw little-endian bytes after the JSON header.
    #[serde(default)]
    pub binary_data: Option<bool>,
    /// The classification extension, which fitd does not offer (a 422 says so).
    #[serde(default)]
    pub classification: Option<u64>,
}

/// An output the client asks for by name.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    /// `output`, the only output.
    pub name: String,
    #[serde(default)]
    pub parameters: Option<RequestedOutputParameters>,
}

/// The request `parameters` fitd reads; others (`priority`, `timeout`, ...) are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InferRequestParameters {
    /// Default for every output's `binary_data`: return outputs as raw bytes.
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

/// `POST /v2/models/{id}/infer` body, or its JSON header when binary tensor data follows.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<InferRequestParameters>,
    /// Exactly one tensor.
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// The `parameters` of a binary output.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutputParameters {
    /// Bytes of this output in the binary section after the JSON header.
    pub binary_data_size: usize,
}

/// One output tensor.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    /// Present when the output is binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<InferOutputParameters>,
    /// Row-major values: probabilities for classifiers, raw outputs otherwise; absent when binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// `POST /v2/models/{id}/infer` answer, or its JSON header when binary outputs follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    /// Always `1`.
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// A request body with binary tensor data: the JSON header (its length in the
/// `Inference-Header-Content-Length` header) followed by each binary input's raw little-endian bytes
/// in input order.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct InferBinaryBody(pub Vec<u8>);

/// Server metadata.
#[utoipa::path(get, path = "/v2", operation_id = "v2_server_metadata", tag = "kserve-v2",
    responses((status = 200, description = "Server name and version", body = ServerMetadata)))]
pub async fn server_metadata() -> AppJson<ServerMetadata> {
    AppJson(ServerMetadata {
        name: "fitd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["binary_tensor_data".into()],
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
    params(("id" = String, Path, description = "Saved model id or alias")),
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
    params(("id" = String, Path, description = "Saved model id or alias")),
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

/// The header naming the length of the JSON part of a body with binary tensor data.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Inference: one input `[batch, ...]` as JSON `data` or binary tensor data, one `FP32` output
/// `output` `[batch, units]`, as JSON `data` or binary on request.
///
/// Binary tensor data (the protocol's extension, as Triton's clients send it): the body is the JSON
/// header, whose length the `Inference-Header-Content-Length` header gives, followed by the raw
/// little-endian bytes of each input that has `parameters.binary_data_size` instead of `data`.
/// Outputs come back the same way when the request sets `parameters.binary_data_output` or the
/// output's `parameters.binary_data`; the response then carries `Inference-Header-Content-Length`.
#[utoipa::path(post, path = "/v2/models/{id}/infer", operation_id = "v2_infer", tag = "kserve-v2",
    params(("id" = String, Path, description = "Saved model id or alias"),
        ("Inference-Header-Content-Length" = Option<u64>, Header,
         description = "Length of the JSON header when binary tensor data follows it")),
    request_body(content(
        (InferRequest = "application/json"),
        (InferBinaryBody = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The output tensor; with binary outputs, the JSON header (its length in `Inference-Header-Content-Length`) followed by the raw float32 bytes",
         content((InferResponse = "application/json"), (InferBinaryBody = "application/octet-stream")),
         headers(("Inference-Header-Content-Length" = u64, description = "Length of the JSON header, when binary outputs follow it"))),
        (status = 400, description = "Malformed JSON, or an `Inference-Header-Content-Length` that is not a number or exceeds the body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saved model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the predict limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A content type other than JSON or (with binary data) `application/octet-stream`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not one input, an unknown datatype, a shape that does not fit the data or the model, binary sizes that disagree, non-finite values, empty or oversized batch, unknown output", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn infer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, V2Error> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let header_len = match parts.headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    super::error::bad_header(
                        "Inference-Header-Content-Length",
                        "must be a byte count (a non-negative integer)",
                    )
                })?,
        ),
    };
    match media_type(&parts.headers) {
        // Triton's client libraries send no content type.
        None => {}
        Some(m) if is_json(&m) => {}
        Some(m) if m == "application/octet-stream" && header_len.is_some() => {}
        Some(_) => {
            return Err(unsupported(
                &parts.headers,
                "application/json, or application/octet-stream (binary tensor data) with an \
                 Inference-Header-Content-Length header",
            )
            .into());
        }
    }
    let served = served_model(&state, &id).await?;
    let bytes = read_limited(
        &parts.headers,
        body,
        state.config.max_predict_bytes,
        "--max-predict-bytes",
    )
    .await?;
    let max_rows = state.config.max_predict_rows;
    let body_len = bytes.len();
    let parse: ParseFn<Reply> = Box::new(move |served| parse_infer(&bytes, header_len, served, max_rows));
    let encode: EncodeFn<Reply> = Box::new(move |_, out, reply| encode_infer(id, out, reply));
    Ok(inference::run(&state, served, body_len, started, parse, encode).await?)
}

/// What the response needs from the request.
struct Reply {
    request_id: Option<String>,
    binary: bool,
}

/// Splits the body into its JSON header and binary section and builds the input matrix; every size
/// is checked against the body and the model before anything is allocated for it.
fn parse_infer(
    bytes: &[u8],
    header_len: Option<usize>,
    served: &ServedModel,
    max_rows: usize,
) -> Result<(Array2<f32>, Reply), ApiError> {
    let (json, binary) = match header_len {
        None => (bytes, &bytes[..0]),
        Some(h) if h <= bytes.len() => bytes.split_at(h),
        Some(h) => {
            return Err(ApiError::BadRequest(format!(
                "Inference-Header-Content-Length is {h} but the body has {} bytes",
                bytes.len()
            )));
        }
    };
    let body: InferRequest = parse_json(json)?;
    let binary = binary_section(binary, &body)?;
    let binary_default = body
        .parameters
        .as_ref()
        .and_then(|p| p.binary_data_output)
        .unwrap_or(false);
    let mut binary_output = binary_default;
    if let Some(outputs) = &body.outputs {
        for (i, o) in outputs.iter().enumerate() {
            if o.name != "output" {
                return Err(ApiError::invalid(
                    format!("outputs[{i}].name"),
                    format!(
                        "unknown output {:?}; the model has one output, \"output\"",
                        o.name
                    ),
                ));
            }
            if i > 0 {
                return Err(ApiError::invalid(
                    format!("outputs[{i}].name"),
                    "\"output\" is requested twice",
                ));
            }
            let params = o.parameters.as_ref();
            if params.is_some_and(|p| p.classification.is_some()) {
                return Err(ApiError::invalid(
                    format!("outputs[{i}].parameters.classification"),
                    "the classification extension is not offered; read the class probabilities \
                     from \"output\"",
                ));
            }
            binary_output = params.and_then(|p| p.binary_data).unwrap_or(binary_default);
        }
    }
    let mut inputs = body.inputs;
    if inputs.len() != 1 {
        return Err(ApiError::invalid(
            "inputs",
            format!("the model takes exactly one input tensor, got {}", inputs.len()),
        ));
    }
    let input = inputs.pop().expect("one input");
    let dtype = Dtype::from_kserve(&input.datatype).ok_or_else(|| {
        ApiError::invalid(
            "inputs[0].datatype",
            format!(
                "must be one of {}, got {:?}",
                tensor::kserve_names(),
                input.datatype
            ),
        )
    })?;
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid("inputs[0].shape", "dimensions must be non-negative integers"))?;
    let Some((_, sample)) = shape.split_first() else {
        return Err(ApiError::invalid(
            "inputs[0].shape",
            "must start with the batch dimension",
        ));
    };
    let declared = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let fits = |e: FieldError| ApiError::validation(vec![e]);
    let x = match (input.data, binary) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "inputs[0].data",
                "give either data or parameters.binary_data_size, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "inputs[0].data",
                "is required, or parameters.binary_data_size with the tensor's bytes after the JSON header",
            ));
        }
        (None, Some(raw)) => {
            let need = declared.and_then(|d| d.checked_mul(dtype.size()));
            if need != Some(raw.len()) {
                return Err(ApiError::invalid(
                    "inputs[0].parameters.binary_data_size",
                    format!(
                        "is {} bytes but shape {shape:?} of {} needs {}",
                        raw.len(),
                        dtype.kserve_name(),
                        need.map_or("more than fit in memory".to_string(), |d| d.to_string())
                    ),
                ));
            }
            predict::check_sample_shape(sample, &served.spec.input_shape)
                .map_err(|m| fits(FieldError::new("inputs[0].shape", m)))?;
            predict::raw_matrix(
                "inputs[0].data",
                dtype,
                &shape,
                raw,
                &served.spec.input_shape,
                max_rows,
            )
            .map_err(fits)?
        }
        (Some(data), None) => {
            if declared != Some(data.data.len()) {
                return Err(ApiError::invalid(
                    "inputs[0].data",
                    format!(
                        "holds {} values but shape {:?} needs {}",
                        data.data.len(),
                        shape,
                        declared.map_or("more than fit in memory".to_string(), |d| d.to_string())
                    ),
                ));
            }
            if let Some((lo, hi)) = dtype.integer_range()
                && let Some(p) = data
                    .data
                    .iter()
                    .position(|&v| v.fract() != 0.0 || (v as f64) < lo || (v as f64) > hi)
            {
                return Err(ApiError::invalid(
                    format!("inputs[0].data[{p}]"),
                    format!("{} is not a {} value", data.data[p], dtype.kserve_name()),
                ));
            }
            predict::check_sample_shape(sample, &served.spec.input_shape)
                .map_err(|m| fits(FieldError::new("inputs[0].shape", m)))?;
            let rows = Nested {
                shape: std::iter::once(shape[0]).chain([served.input_dim()]).collect(),
                data: data.data,
            };
            predict::instances_matrix("inputs[0].data", rows, &served.spec.input_shape, max_rows)
                .map_err(fits)?
        }
    };
    predict::check_finite("inputs[0].data", x.view()).map_err(fits)?;
    Ok((
        x,
        Reply {
            request_id: body.id,
            binary: binary_output,
        },
    ))
}

/// The binary section as the one input's bytes: present exactly when that input declares
/// `binary_data_size`, and of that size.
fn binary_section<'a>(binary: &'a [u8], body: &InferRequest) -> Result<Option<&'a [u8]>, ApiError> {
    let mut offset = 0usize;
    let mut first = None;
    for (i, input) in body.inputs.iter().enumerate() {
        let Some(size) = input.parameters.as_ref().and_then(|p| p.binary_data_size) else {
            continue;
        };
        let field = format!("inputs[{i}].parameters.binary_data_size");
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| offset.checked_add(s))
            .filter(|&e| e <= binary.len())
            .ok_or_else(|| {
                ApiError::invalid(
                    &field,
                    format!(
                        "is {size} bytes but only {} bytes of binary data follow the JSON header",
                        binary.len() - offset
                    ),
                )
            })?;
        if i == 0 {
            first = Some(&binary[offset..end]);
        }
        offset = end;
    }
    if offset != binary.len() {
        return Err(ApiError::invalid(
            "parameters.binary_data_size",
            format!(
                "{} bytes follow the JSON header but the inputs' binary_data_size add up to {offset}",
                binary.len()
            ),
        ));
    }
    Ok(first)
}

fn encode_infer(model_name: String, out: Array2<f32>, reply: Reply) -> Result<Encoded, ApiError> {
    let (rows, cols) = out.dim();
    let values = out.into_raw_vec_and_offset().0;
    let mut resp = InferResponse {
        model_name,
        model_version: "1".into(),
        id: reply.request_id,
        outputs: vec![InferOutput {
            name: "output".into(),
            shape: vec![rows, cols],
            datatype: "FP32".into(),
            parameters: None,
            data: None,
        }],
    };
    if !reply.binary {
        resp.outputs[0].data = Some(values);
        let body = serde_json::to_vec(&resp).map_err(anyhow::Error::from)?;
        return Ok(Encoded {
            body,
            content_type: "application/json",
            headers: Vec::new(),
        });
    }
    resp.outputs[0].parameters = Some(InferOutputParameters {
        binary_data_size: values.len() * 4,
    });
    let mut body = serde_json::to_vec(&resp).map_err(anyhow::Error::from)?;
    let header_len = body.len();
    body.extend_from_slice(&tensor::f32_le_bytes(&values));
    Ok(Encoded {
        body,
        content_type: "application/octet-stream",
        headers: vec![(HEADER_LENGTH, header_len.to_string())],
    })
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
    params(("id" = String, Path, description = "Saved model id or alias"), ("version" = String, Path, description = "Always `1`")),
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
    params(("id" = String, Path, description = "Saved model id or alias"), ("version" = String, Path, description = "Always `1`")),
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
    params(("id" = String, Path, description = "Saved model id or alias"), ("version" = String, Path, description = "Always `1`"),
        ("Inference-Header-Content-Length" = Option<u64>, Header,
         description = "Length of the JSON header when binary tensor data follows it")),
    request_body(content(
        (InferRequest = "application/json"),
        (InferBinaryBody = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The output tensor (see `POST /v2/models/{id}/infer`)",
         content((InferResponse = "application/json"), (InferBinaryBody = "application/octet-stream")),
         headers(("Inference-Header-Content-Length" = u64, description = "Length of the JSON header, when binary outputs follow it"))),
        (status = 400, description = "Malformed JSON or `Inference-Header-Content-Length`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saved model or version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the predict limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
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
