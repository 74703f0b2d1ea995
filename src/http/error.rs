//! `ApiError`, the one error type handlers return, rendered as RFC 9457 `application/problem+json`.
//!
//! Also the `AppJson` extractor and the middleware that turn axum's own rejections (bad JSON, wrong
//! content type, 404 route, 405, 413, 408) into the same format, so a client handles one error shape.

use axum::extract::{
    FromRequest, FromRequestParts, Request, rejection::JsonRejection, rejection::QueryRejection,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use crate::nn::FieldError;
use crate::store;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:fitd:problem:<slug>`); stable, meant for programs.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    #[schema(value_type = i32)]
    pub status: u16,
    /// What went wrong in this request, for humans.
    pub detail: String,
    /// For validation problems: every offending field with the rule it broke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProblemField {
    /// Path of the field, e.g. `layers[2].rate`.
    pub field: String,
    /// The rule it broke, e.g. `must be in [0, 1)`.
    pub message: String,
}

impl From<FieldError> for ProblemField {
    fn from(e: FieldError) -> Self {
        ProblemField {
            field: e.field,
            message: e.message,
        }
    }
}

/// Everything a handler can fail with; each variant has exactly one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{detail}")]
    Unprocessable { detail: String, errors: Vec<FieldError> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail} ({url})")]
    Upstream { detail: String, url: String },
    #[error("{detail} ({url})")]
    UpstreamUnreachable { detail: String, url: String },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A response axum or tower produced on its own (405, 408, ...), re-rendered as a problem.
    #[error("{detail}")]
    Status { status: StatusCode, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound { what, id: id.into() }
    }

    /// A 422 with one field error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        ApiError::Unprocessable {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// A 422 listing every broken field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => format!("{}: {}", errors[0].field, errors[0].message),
            n => format!("{n} fields are invalid"),
        };
        ApiError::Unprocessable { detail, errors }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamUnreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Status { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not-found",
            ApiError::Unprocessable { .. } => "validation-error",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Upstream { .. } => "upstream-error",
            ApiError::UpstreamUnreachable { .. } => "upstream-unreachable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Status { status, .. } => status_slug(*status),
            ApiError::Internal(_) => "internal-error",
        }
    }

    /// The problem document; every string in it quotes at most a bounded part of the request, so an
    /// error about a huge or deeply nested input stays small.
    pub fn to_problem(&self) -> Problem {
        let status = self.status_code();
        let detail = match self {
            // 5xx details can leak paths and SQL; they are logged instead.
            ApiError::Internal(_) => "the server failed to handle this request; see its log".to_string(),
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Unprocessable { errors, .. } => errors
                .iter()
                .take(MAX_FIELD_ERRORS)
                .map(|e| ProblemField {
                    field: bounded(&e.field, MAX_FIELD_CHARS),
                    message: bounded(&e.message, MAX_DETAIL_CHARS),
                })
                .collect(),
            _ => Vec::new(),
        };
        Problem {
            type_: format!("urn:fitd:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: bounded(&detail, MAX_DETAIL_CHARS),
            errors,
        }
    }
}

/// Longest `detail` (and field `message`) a problem carries, in characters.
pub const MAX_DETAIL_CHARS: usize = 1000;
/// Longest field path a problem names, in characters.
pub const MAX_FIELD_CHARS: usize = 200;
/// Most field errors one problem lists.
pub const MAX_FIELD_ERRORS: usize = 100;

/// `text` cut to `max` characters, saying how much was left out.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} more bytes)", &text[..cut], text.len() - cut),
    }
}

fn status_slug(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::NOT_ACCEPTABLE => "not-acceptable",
        s if s.is_server_error() => "internal-error",
        _ => "bad-request",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        let problem = self.to_problem();
        problem_response(self.status_code(), &problem)
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).expect("a problem always serializes");
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound(what) => ApiError::NotFound {
                what,
                id: String::new(),
            },
            store::Error::Conflict(msg) => ApiError::Conflict(msg),
            store::Error::Sqlx(_) => {
                crate::metrics::db_error();
                ApiError::Internal(anyhow::Error::new(e))
            }
            store::Error::Migrate(_)
            | store::Error::Io(_)
            | store::Error::Corrupt(_)
            | store::Error::StaleClaim(_)
            | store::Error::Locked { .. } => ApiError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = rejection.body_text();
        match rejection {
            // Syntactically valid JSON of the wrong shape (unknown field, wrong type, missing field).
            JsonRejection::JsonDataError(_) => ApiError::Unprocessable {
                errors: field_from_serde_message(&detail).into_iter().collect(),
                detail,
            },
            JsonRejection::JsonSyntaxError(_) => match out_of_range_field(&detail) {
                Some(field) => ApiError::Unprocessable {
                    errors: vec![field],
                    detail,
                },
                None => ApiError::BadRequest(detail),
            },
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(r) => ApiError::Status {
                status: r.status(),
                detail: r.body_text(),
            },
            other => ApiError::Status {
                status: other.status(),
                detail,
            },
        }
    }
}

/// Splits a rejection's text (`<summary>: [<path>: ]<serde message>`) into the path of the field
/// serde stopped at (empty at the top level) and serde's own message.
fn path_and_message(detail: &str) -> (&str, &str) {
    let serde_part = detail.split_once(": ").map_or(detail, |(_, rest)| rest);
    let is_path = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    };
    match serde_part.split_once(": ") {
        Some((path, message)) if is_path(path) => (path, message),
        _ => ("", serde_part),
    }
}

/// `parent.name`, or `name` at the top level.
fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The field a serde data error names: "unknown field `x`" / "missing field `x`" inside the
/// object at the error's path, else the path itself with serde's message (a wrong type, a negative
/// count, ...).
fn field_from_serde_message(detail: &str) -> Option<FieldError> {
    let (path, message) = path_and_message(detail);
    for (marker, rule) in [
        ("unknown field `", "is not a known field"),
        ("missing field `", "is required"),
    ] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            let end = rest.find('`')?;
            return Some(FieldError::new(join_path(path, &rest[..end]), rule));
        }
    }
    let message = message.split(" at line ").next().unwrap_or(message);
    (!path.is_empty()).then(|| FieldError::new(path, message))
}

/// A number too large for a 64-bit float (`1e400`) is valid JSON that serde refuses as a syntax
/// error; it is a bad value of a known field, so it gets the 422 other bad values get.
fn out_of_range_field(detail: &str) -> Option<FieldError> {
    let (path, message) = path_and_message(detail);
    (!path.is_empty() && message.starts_with("number out of range")).then(|| {
        FieldError::new(
            path,
            "is out of range: numbers must fit a 64-bit float (about 1.8e308)",
        )
    })
}

/// `Json<T>` whose rejections are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        super::content::require_json(req.headers())?;
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(AppJson(value))
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections are 422 problems naming the parameter that failed to parse
/// (`?limit=abc`, `?status=bogus`): the one rule for query values and headers fitd cannot read.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(AppQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let detail = rejection.body_text();
    let (path, message) = path_and_message(&detail);
    let field = if path.is_empty() { "query" } else { path };
    ApiError::Unprocessable {
        detail: format!("query parameter {field}: {message}"),
        errors: vec![FieldError::new(field, message)],
    }
}

/// A header that is present but does not parse: the same 422 as a bad query value, naming it.
pub fn bad_header(name: &str, rule: &str) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("header {name}: {rule}"),
        errors: vec![FieldError::new(name, rule)],
    }
}

/// Parses a JSON body already read into memory, with the same errors as [`AppJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    value.map_err(|e| {
        let detail = format!("failed to parse the JSON body: {e}");
        if e.is_data() {
            ApiError::Unprocessable {
                errors: field_from_serde_message(&detail).into_iter().collect(),
                detail,
            }
        } else {
            ApiError::BadRequest(detail)
        }
    })
}

/// Middleware: any error response that is not already a problem (axum's 404/405/413 plain-text
/// rejections, tower-http's 408) is rewritten into one, keeping its status and text as the detail.
pub async fn problem_for_plain_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON));
    if is_problem {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => "no such route".to_string(),
            StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method".to_string(),
            StatusCode::REQUEST_TIMEOUT => "the request took too long".to_string(),
            s => s.canonical_reason().unwrap_or("error").to_string(),
        }
    } else {
        text
    };
    let mut out = ApiError::Status { status, detail }.into_response();
    // Keep headers such as `Allow` on 405.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
