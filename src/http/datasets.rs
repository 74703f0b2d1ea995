//! `/v1/datasets`: uploads (IDX, CSV, NPY/NPZ) streamed to temporary files, built-ins and downloads,
//! list/get/delete, and sample images.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::content::{BodyType, body_type, unsupported};
use super::error::parse_json;
use super::pagination::ListQuery;
use super::{ApiError, AppJson, AppQuery, AppState, Problem};
use crate::data::{self, Budget, Dataset, Features, TaskHint, builtin::Builtin, download};
use crate::domain::dataset::DatasetKind;
use crate::store::{
    self,
    datasets::{DatasetRow, NewDataset},
};

pub fn router(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_dataset, list_datasets))
        .layer(DefaultBodyLimit::max(max_upload_bytes))
        .routes(routes!(get_dataset, delete_dataset))
        .routes(routes!(create_pca_dataset))
        .routes(routes!(get_dataset_cache))
}

/// What the dataset cache holds and how well it serves jobs: hits, misses, lookups that waited for
/// another job's load of the same dataset, loads, evictions, invalidations by deletes and the hit
/// rate.
#[utoipa::path(get, path = "/dataset-cache", operation_id = "get_dataset_cache", tag = "datasets",
    responses((status = 200, description = "Cache size and counters since the server started",
        body = store::cache::DatasetCacheStats)))]
pub async fn get_dataset_cache(State(state): State<AppState>) -> AppJson<store::cache::DatasetCacheStats> {
    AppJson(state.store.dataset_cache().stats())
}

/// Routes axum's path syntax cannot describe exactly (`{index}.png`); documented via `ApiDoc`.
pub fn extra_routes() -> Router<AppState> {
    Router::new().route("/v1/datasets/{id}/samples/{file}", get(get_dataset_sample))
}

/// A PNG image.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PngFile(pub Vec<u8>);

/// JSON body of `POST /v1/datasets`: a built-in or downloadable dataset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBuiltinDatasetRequest {
    /// Name of the new dataset (default: the source name).
    pub name: Option<String>,
    /// `digits`, `iris`, `wine`, `breast_cancer`, `diabetes` (in the binary) or `mnist`,
    /// `fashion_mnist` (downloaded and verified by SHA-256).
    pub source: String,
    /// For `mnist` and `fashion_mnist`: `train` (default) or `test`.
    pub split: Option<String>,
}

/// Multipart body of `POST /v1/datasets`. Send `images` + `labels` (IDX), `file` (CSV or NPZ with
/// arrays `x`, `y`), or `x` + `y` (NPY).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadDatasetForm {
    /// Name of the new dataset (default: the uploaded file name).
    name: Option<String>,
    /// IDX images, gzipped or raw.
    #[schema(value_type = Option<String>, format = Binary)]
    images: Option<Vec<u8>>,
    /// IDX labels, gzipped or raw.
    #[schema(value_type = Option<String>, format = Binary)]
    labels: Option<Vec<u8>>,
    /// A CSV with a header row, or an `.npz` archive with arrays `x` and `y`.
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    /// `.npy` features, samples along the first axis.
    #[schema(value_type = Option<String>, format = Binary)]
    x: Option<Vec<u8>>,
    /// `.npy` labels.
    #[schema(value_type = Option<String>, format = Binary)]
    y: Option<Vec<u8>>,
    /// CSV column holding the labels (default `label`).
    label_column: Option<String>,
    /// Shape of one sample for flat formats, e.g. `28,28`.
    input_shape: Option<String>,
    /// `classification` or `regression` (default: decided from the labels).
    task: Option<String>,
}

/// Smallest and largest feature value.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureRange {
    pub min: f32,
    pub max: f32,
}

/// A stored dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    pub id: String,
    pub name: String,
    pub kind: DatasetKind,
    /// `idx`, `csv`, `npz`, `npy`, `builtin:<name>`, `download:<name>/<split>` or `pca`.
    pub source: String,
    pub n_samples: u64,
    /// Shape of one sample.
    pub input_shape: Vec<u64>,
    /// Number of classes (largest label + 1) for classification, `null` for regression.
    pub n_classes: Option<u64>,
    /// Number of regression targets, `null` for classification.
    pub n_targets: Option<u64>,
    /// Samples per class label, for classification.
    pub class_counts: Option<BTreeMap<String, u64>>,
    pub feature_range: FeatureRange,
    /// Bytes the decoded arrays take on disk.
    pub size_bytes: u64,
    /// The dataset this one was derived from (PCA).
    pub parent_id: Option<String>,
    /// How it was derived, e.g. `{"pca": {"n_components": 50, "explained_variance_ratio": [...]}}`.
    #[schema(value_type = Option<Object>)]
    pub derivation: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of datasets.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub items: Vec<DatasetView>,
    /// Cursor for the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

pub fn dataset_view(row: &DatasetRow) -> DatasetView {
    DatasetView {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: row.kind,
        source: row.source.clone(),
        n_samples: row.n_samples,
        input_shape: row.input_shape.iter().map(|&d| d as u64).collect(),
        n_classes: row.n_classes,
        n_targets: row.n_targets,
        class_counts: row
            .class_counts
            .as_ref()
            .map(|c| c.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
        feature_range: FeatureRange {
            min: row.feature_min,
            max: row.feature_max,
        },
        size_bytes: row.size_bytes,
        parent_id: row.parent_id.clone(),
        derivation: row.derivation.clone(),
        created_at: row.created_at.clone(),
    }
}

pub fn dataset_error(e: store::Error, id: &str) -> ApiError {
    match e {
        store::Error::NotFound("dataset") => ApiError::not_found("dataset", id),
        store::Error::Conflict(message) => ApiError::Conflict(message),
        other => other.into(),
    }
}

fn data_error(e: data::Error) -> ApiError {
    match e {
        data::Error::Invalid { part, message } => ApiError::invalid(part, message),
        data::Error::Io(e) => ApiError::Internal(e.into()),
    }
}

fn created(row: &DatasetRow) -> Result<Response, ApiError> {
    let mut res = (StatusCode::CREATED, AppJson(dataset_view(row))).into_response();
    let location = HeaderValue::from_str(&format!("/v1/datasets/{}", row.id)).map_err(anyhow::Error::from)?;
    res.headers_mut().insert(header::LOCATION, location);
    Ok(res)
}

/// Create a dataset: a multipart upload, or JSON naming a built-in or downloadable dataset.
#[utoipa::path(post, path = "/datasets", operation_id = "create_dataset", tag = "datasets",
    request_body(content(
        (UploadDatasetForm = "multipart/form-data"),
        (CreateBuiltinDatasetRequest = "application/json"),
    )),
    responses(
        (status = 201, description = "Created; `Location` names the new dataset", body = DatasetView,
         headers(("Location" = String, description = "URL of the new dataset"))),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither multipart nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The data is invalid or decodes to more than the server's dataset limit; the problem names the part and what is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The mirror answered with an error or a file whose SHA-256 differs", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The mirror is unreachable, or the server is already decoding as many uploads as it allows (then `Retry-After` says when to retry)", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = i32, description = "Seconds to wait before retrying, when every upload slot is taken"))),
    ))]
pub async fn create_dataset(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let kind = body_type(req.headers());
    if kind == BodyType::Multipart {
        // One body frame per poll: the multipart parser buffers whatever is ready, so without this a
        // fast client could fill memory faster than parts are checked and written out.
        let req = req.map(|body| Body::from_stream(OneFrameAtATime::new(body.into_data_stream())));
        let Some(_permit) = upload_permit(&state) else {
            let mut rest = req.into_body().into_data_stream();
            linger(async move { while let Some(Ok(_)) = futures_util::StreamExt::next(&mut rest).await {} });
            return Ok(busy());
        };
        let mut multipart = Multipart::from_request(req, &state)
            .await
            .map_err(|r| ApiError::Status {
                status: r.status(),
                detail: r.body_text(),
            })?;
        match upload(&state, &mut multipart).await {
            Ok(row) => created(&row),
            Err(e) => {
                linger(async move {
                    while let Ok(Some(mut field)) = multipart.next_field().await {
                        while let Ok(Some(_)) = field.chunk().await {}
                    }
                });
                Err(e)
            }
        }
    } else if kind == BodyType::Json {
        let bytes = axum::body::to_bytes(req.into_body(), state.config.max_json_bytes)
            .await
            .map_err(|_| {
                ApiError::PayloadTooLarge(format!(
                    "JSON bodies are limited to {} bytes",
                    state.config.max_json_bytes
                ))
            })?;
        let body: CreateBuiltinDatasetRequest = parse_json(&bytes)?;
        match from_source(&state, body).await? {
            Some(row) => created(&row),
            None => Ok(busy()),
        }
    } else {
        Err(unsupported(
            req.headers(),
            "multipart/form-data (an upload) or application/json (a built-in or downloaded source)",
        ))
    }
}

/// How long the rest of a refused upload is read and discarded after the answer has gone out.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what a client is still sending after its upload was refused, for at most
/// [`LINGER`]. Closing at once would make the kernel reset the connection, which can destroy the
/// answer before a client busy sending has read it.
fn linger(drain: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// Seconds a client is asked to wait when every upload slot is taken.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// A slot among the uploads and downloads being decoded, if one is free.
fn upload_permit(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    state.uploads.clone().try_acquire_owned().ok()
}

/// The answer when every upload slot is taken: 503 with `Retry-After`, before the body is read.
fn busy() -> Response {
    let mut res = ApiError::Unavailable(format!(
        "the server is already decoding as many dataset uploads as it allows; retry in {BUSY_RETRY_AFTER_SECS} seconds"
    ))
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECS));
    res
}

/// Passes a body stream through, but never more than one frame per poll, so a consumer that
/// buffers "everything ready" takes one frame and comes back once it has dealt with it.
struct OneFrameAtATime<S> {
    inner: S,
    just_yielded: bool,
}

impl<S> OneFrameAtATime<S> {
    fn new(inner: S) -> Self {
        OneFrameAtATime {
            inner,
            just_yielded: false,
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for OneFrameAtATime<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.just_yielded {
            self.just_yielded = false;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        self.just_yielded = matches!(next, std::task::Poll::Ready(Some(_)));
        next
    }
}

fn parse_task(text: Option<&String>) -> Result<TaskHint, ApiError> {
    match text.map(String::as_str) {
        None | Some("") | Some("auto") => Ok(TaskHint::Auto),
        Some("classification") => Ok(TaskHint::Classification),
        Some("regression") => Ok(TaskHint::Regression),
        Some(other) => Err(ApiError::invalid(
            "task",
            format!("{other:?} must be classification, regression or auto"),
        )),
    }
}

const TEXT_PARTS: [&str; 4] = ["name", "label_column", "input_shape", "task"];
const FILE_PARTS: [&str; 5] = ["images", "labels", "file", "x", "y"];

/// The longest text part (`name`, `task`, ...) read; longer ones are refused as soon as they pass it.
const MAX_TEXT_PART_BYTES: usize = 4096;

/// The longest dataset name, in characters.
const MAX_NAME_CHARS: usize = 200;

fn multipart_err(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::Status {
        status: e.status(),
        detail: e.body_text(),
    }
}

/// Reads a text part chunk by chunk, refusing it once it passes [`MAX_TEXT_PART_BYTES`].
async fn read_text(field: &mut axum::extract::multipart::Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
        if bytes.len() + chunk.len() > MAX_TEXT_PART_BYTES {
            return Err(ApiError::invalid(
                name,
                format!("is longer than {MAX_TEXT_PART_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(name, "is not UTF-8 text"))
}

/// Checks a dataset name given by the client, or taken from an uploaded file's name.
fn check_name(name: &str, field: &str, origin: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if name.is_empty() || chars > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("{origin}must be 1-{MAX_NAME_CHARS} characters, not {chars}"),
        ));
    }
    Ok(name.to_string())
}

async fn upload(state: &AppState, multipart: &mut Multipart) -> Result<DatasetRow, ApiError> {
    let mut text: HashMap<String, String> = HashMap::new();
    let mut files: HashMap<String, NamedTempFile> = HashMap::new();
    // The first file part's name in upload order names the dataset when no `name` is sent.
    let mut first_filename: Option<(String, String)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_err)? {
        let name = field.name().unwrap_or_default().to_string();
        if text.contains_key(&name) || files.contains_key(&name) {
            return Err(ApiError::invalid(name, "is given more than once"));
        }
        if TEXT_PARTS.contains(&name.as_str()) {
            let value = read_text(&mut field, &name).await?;
            text.insert(name, value);
        } else if FILE_PARTS.contains(&name.as_str()) {
            let filename = field.file_name().map(str::to_string);
            if first_filename.is_none()
                && let Some(f) = &filename
            {
                first_filename = Some((name.clone(), f.clone()));
            }
            // Stream to disk chunk by chunk so an upload is never held in memory whole.
            let tmp = NamedTempFile::new_in(state.store.tmp_dir()).map_err(anyhow::Error::from)?;
            let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(anyhow::Error::from)?);
            while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                out.write_all(&chunk).await.map_err(anyhow::Error::from)?;
            }
            out.flush().await.map_err(anyhow::Error::from)?;
            files.insert(name, tmp);
        } else {
            return Err(ApiError::invalid(
                name,
                "is not a known part (name, images, labels, file, x, y, label_column, input_shape, task)",
            ));
        }
    }
    let input_shape = text
        .get("input_shape")
        .filter(|s| !s.trim().is_empty())
        .map(|s| data::parse_shape(s))
        .transpose()
        .map_err(data_error)?;
    let task = parse_task(text.get("task"))?;
    let label_column = text.get("label_column").filter(|s| !s.is_empty()).cloned();
    let has = |k: &str| files.contains_key(k);
    let format = match (has("images"), has("labels"), has("file"), has("x"), has("y")) {
        (true, true, false, false, false) => Format::Idx,
        (false, false, true, false, false) => sniff(&files["file"])?,
        (false, false, false, true, true) => Format::NpyPair,
        _ => {
            return Err(ApiError::invalid(
                "file",
                "send parts images + labels (IDX), file (CSV or NPZ), or x + y (NPY)",
            ));
        }
    };
    if label_column.is_some() && format != Format::Csv {
        return Err(ApiError::invalid("label_column", "applies to CSV uploads only"));
    }
    let name = match (text.get("name"), &first_filename) {
        (Some(n), _) => check_name(n, "name", "")?,
        (None, Some((part, filename))) if !filename.trim().is_empty() => check_name(
            filename,
            "name",
            &format!("is not given, so it comes from the file name of part {part}, which "),
        )?,
        (None, _) => "dataset".to_string(),
    };
    let paths: HashMap<String, std::path::PathBuf> = files
        .iter()
        .map(|(k, f)| (k.clone(), f.path().to_path_buf()))
        .collect();
    let mut budget = Budget::new(state.config.max_dataset_bytes);
    let dataset = tokio::task::spawn_blocking(move || -> Result<Dataset, data::Error> {
        let budget = &mut budget;
        match format {
            Format::Idx => data::idx::load(&paths["images"], &paths["labels"], input_shape, budget),
            Format::Csv => {
                let f = std::io::BufReader::new(std::fs::File::open(&paths["file"])?);
                data::csv::load(f, "file", label_column.as_deref(), input_shape, task, budget)
            }
            Format::Npz => data::npy::load_npz(&paths["file"], "file", input_shape, task, budget),
            Format::NpyPair => data::npy::load_pair(&paths["x"], &paths["y"], input_shape, task, budget),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("parsing task failed: {e}"))?
    .map_err(data_error)?;
    drop(files);
    let new = NewDataset {
        name,
        source: format.as_str().to_string(),
        parent_id: None,
        derivation: None,
        image_shape: None,
        extra: Vec::new(),
    };
    Ok(store::datasets::create(&state.store, new, dataset).await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Idx,
    Csv,
    Npz,
    NpyPair,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Csv => "csv",
            Format::Npz => "npz",
            Format::NpyPair => "npy",
        }
    }
}

/// Tells NPZ from CSV by the first bytes of the `file` part, and explains other formats sent there.
fn sniff(file: &NamedTempFile) -> Result<Format, ApiError> {
    use std::io::Read;
    let mut head = [0u8; 6];
    let mut f = file.reopen().map_err(anyhow::Error::from)?;
    let n = f.read(&mut head).map_err(anyhow::Error::from)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        Ok(Format::Npz)
    } else if head.starts_with(b"\x93NUMPY") {
        Err(ApiError::invalid(
            "file",
            "a single .npy array has no labels; send parts x and y, or an .npz with arrays x and y",
        ))
    } else if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0, 0, 8]) {
        Err(ApiError::invalid(
            "file",
            "looks like IDX data; send it as parts images and labels",
        ))
    } else if n == 0 {
        Err(ApiError::invalid("file", "is empty"))
    } else {
        Ok(Format::Csv)
    }
}

/// Creates a built-in or downloaded dataset; `None` when every upload slot is taken.
async fn from_source(
    state: &AppState,
    body: CreateBuiltinDatasetRequest,
) -> Result<Option<DatasetRow>, ApiError> {
    let sources = "digits, iris, wine, breast_cancer, diabetes, mnist, fashion_mnist";
    let name = match body.name.as_deref() {
        Some(n) => Some(check_name(n, "name", "")?),
        None => None,
    };
    if let Some(builtin) = Builtin::parse(&body.source) {
        if body.split.is_some() {
            return Err(ApiError::invalid(
                "split",
                "applies to mnist and fashion_mnist only",
            ));
        }
        let dataset = tokio::task::spawn_blocking(move || builtin.load())
            .await
            .map_err(|e| anyhow::anyhow!("decoding a built-in failed: {e}"))?
            .map_err(data_error)?;
        let new = NewDataset {
            name: name.unwrap_or_else(|| builtin.name().to_string()),
            source: format!("builtin:{}", builtin.name()),
            parent_id: None,
            derivation: None,
            image_shape: None,
            extra: Vec::new(),
        };
        return Ok(Some(store::datasets::create(&state.store, new, dataset).await?));
    }
    let Some(remote) = download::Remote::parse(&body.source) else {
        return Err(ApiError::invalid(
            "source",
            format!("{:?} must be one of {sources}", body.source),
        ));
    };
    let split_name = body.split.as_deref().unwrap_or("train");
    let Some(split) = download::Split::parse(split_name) else {
        return Err(ApiError::invalid("split", "must be train or test"));
    };
    let Some(_permit) = upload_permit(state) else {
        return Ok(None);
    };
    let base = match remote {
        download::Remote::Mnist => &state.config.mnist_url,
        download::Remote::FashionMnist => &state.config.fashion_mnist_url,
    };
    let [images, labels] = download::fetch_split(
        &state.http_client,
        base,
        remote,
        split,
        &state.config.digest_overrides(),
        &state.store.tmp_dir(),
    )
    .await
    .map_err(|e| match e {
        download::DownloadError::Unreachable { url, detail } => ApiError::UpstreamUnreachable {
            detail: format!("the dataset mirror is unreachable: {detail}"),
            url,
        },
        e @ (download::DownloadError::BadStatus { .. } | download::DownloadError::Checksum { .. }) => {
            ApiError::Upstream {
                url: e.url().to_string(),
                detail: e.to_string(),
            }
        }
        e @ download::DownloadError::Io { .. } => ApiError::Internal(e.into()),
    })?;
    let mut budget = Budget::new(state.config.max_dataset_bytes);
    let dataset =
        tokio::task::spawn_blocking(move || data::idx::load(images.path(), labels.path(), None, &mut budget))
            .await
            .map_err(|e| anyhow::anyhow!("decoding a download failed: {e}"))?
            .map_err(data_error)?;
    let new = NewDataset {
        name: name.unwrap_or_else(|| format!("{}-{split_name}", remote.name())),
        source: format!("download:{}/{split_name}", remote.name()),
        parent_id: None,
        derivation: None,
        image_shape: None,
        extra: Vec::new(),
    };
    Ok(Some(store::datasets::create(&state.store, new, dataset).await?))
}

/// List datasets, oldest first.
#[utoipa::path(get, path = "/datasets", operation_id = "list_datasets", tag = "datasets",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of datasets", body = DatasetList),
        (status = 422, description = "Bad `limit` or unknown `after` cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_datasets(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<AppJson<DatasetList>, ApiError> {
    let page = store::datasets::list(&state.store, q.limit()?, q.after.as_deref())
        .await
        .map_err(|e| match e {
            store::Error::NotFound(_) => ApiError::invalid("after", "is not the id of a dataset"),
            other => other.into(),
        })?;
    Ok(AppJson(DatasetList {
        items: page.items.iter().map(dataset_view).collect(),
        next: page.next,
    }))
}

/// Get a dataset.
#[utoipa::path(get, path = "/datasets/{id}", operation_id = "get_dataset", tag = "datasets",
    params(("id" = String, Path, description = "Dataset id")),
    responses(
        (status = 200, description = "The dataset", body = DatasetView),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_dataset(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<DatasetView>, ApiError> {
    let row = store::datasets::get(&state.store, &id)
        .await
        .map_err(|e| dataset_error(e, &id))?;
    Ok(AppJson(dataset_view(&row)))
}

/// Delete a dataset and its stored arrays. Finished jobs that trained or validated on it are deleted
/// with it only with `cascade=true` (their saved models stay); otherwise they make it a 409.
#[utoipa::path(delete, path = "/datasets/{id}", operation_id = "delete_dataset", tag = "datasets",
    params(("id" = String, Path, description = "Dataset id"), super::jobs::CascadeQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A queued or running job uses the dataset, or finished jobs do and `cascade` is not `true`; `detail` names the jobs", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_dataset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<super::jobs::CascadeQuery>,
) -> Result<StatusCode, ApiError> {
    store::datasets::delete(&state.store, &id, q.cascade.unwrap_or(false))
        .await
        .map_err(|e| dataset_error(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One sample as a grayscale PNG (2-D samples only), its label in `X-Label`.
///
/// Pixels map the dataset's feature range onto 0..255 (raw bytes for IDX data); samples of a PCA
/// dataset show the `inverse_transform` reconstruction, scaled by its own range.
#[utoipa::path(get, path = "/v1/datasets/{id}/samples/{sample}.png", operation_id = "get_dataset_sample",
    tag = "datasets",
    params(
        ("id" = String, Path, description = "Dataset id"),
        ("sample" = i64, Path, description = "Sample index, from 0"),
    ),
    responses(
        (status = 200, description = "The sample image", content_type = "image/png", body = PngFile,
         headers(("X-Label" = String, description = "The class label, or comma-separated regression targets"))),
        (status = 404, description = "No such dataset or sample", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The samples are not 2-D", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_dataset_sample(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: u64 = file
        .strip_suffix(".png")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found("sample image", file.clone()))?;
    let row = store::datasets::get(&state.store, &id)
        .await
        .map_err(|e| dataset_error(e, &id))?;
    if index >= row.n_samples {
        return Err(ApiError::NotFound {
            what: "sample",
            id: format!("{index} (the dataset has {} samples)", row.n_samples),
        });
    }
    let Some(shape) = row.image_shape.clone() else {
        return Err(ApiError::invalid(
            "index",
            format!("samples of shape {:?} are not 2-D images", row.input_shape),
        ));
    };
    let (values, label) = store::datasets::read_sample(&state.store, &row, index).await?;
    let (pixels, lo, hi) = if row.source == "pca" {
        let mean = store::datasets::load_extra(&state.store, &id, "pca_mean").await?;
        let components = store::datasets::load_extra(&state.store, &id, "pca_components").await?;
        let recon = reconstruct(&values, &mean, &components)?;
        let (lo, hi) = min_max(&recon);
        (recon, lo, hi)
    } else {
        (values, row.feature_min, row.feature_max)
    };
    let png = data::png::render_gray(&pixels, shape[0], shape[1], lo, hi).map_err(|e| anyhow::anyhow!(e))?;
    let mut res = Response::new(Body::from(png));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    res.headers_mut().insert(
        "x-label",
        HeaderValue::from_str(&label).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

/// `mean + z · components`, the PCA inverse transform of one sample.
fn reconstruct(
    z: &[f32],
    mean: &ndarray::ArrayD<f32>,
    components: &ndarray::ArrayD<f32>,
) -> Result<Vec<f32>, ApiError> {
    let comps = components
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| anyhow::anyhow!("stored PCA components: {e}"))?;
    let z = ndarray::ArrayView1::from(z);
    let out = z.dot(&comps);
    Ok(out.iter().zip(mean.iter()).map(|(a, m)| a + m).collect())
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}

/// Body of `POST /v1/datasets/{id}/pca`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePcaRequest {
    /// Components to keep, 1 to the number of features.
    pub n_components: i64,
    /// Name of the derived dataset (default: `<parent name>-pca<k>`).
    pub name: Option<String>,
}

/// The derived dataset and how much variance each kept component explains.
#[derive(Debug, Serialize, ToSchema)]
pub struct PcaDatasetView {
    pub dataset: DatasetView,
    /// Fraction of the total variance per component, largest first.
    pub explained_variance_ratio: Vec<f64>,
}

/// Derive a dataset of PCA features (fitted on this dataset); its sample PNGs show the
/// `inverse_transform` reconstruction.
#[utoipa::path(post, path = "/datasets/{id}/pca", operation_id = "create_pca_dataset", tag = "datasets",
    params(("id" = String, Path, description = "Dataset id")),
    request_body = CreatePcaRequest,
    responses(
        (status = 201, description = "The derived dataset; `Location` names it", body = PcaDatasetView,
         headers(("Location" = String, description = "URL of the derived dataset"))),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`n_components` out of range", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_pca_dataset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(body): AppJson<CreatePcaRequest>,
) -> Result<Response, ApiError> {
    let parent = store::datasets::get(&state.store, &id)
        .await
        .map_err(|e| dataset_error(e, &id))?;
    let k = body.n_components;
    if k < 1 || k as u64 > parent.n_features {
        return Err(ApiError::invalid(
            "n_components",
            format!(
                "must be between 1 and the {} features of the dataset",
                parent.n_features
            ),
        ));
    }
    if parent.n_samples < 2 {
        return Err(ApiError::invalid(
            "id",
            "PCA needs a dataset of at least 2 samples",
        ));
    }
    let name = match body.name.as_deref() {
        Some(n) => check_name(n, "name", "")?,
        None => format!("{}-pca{k}", parent.name),
    };
    let arrays = store::datasets::load_arrays(&state.store, &id)
        .await
        .map_err(|e| dataset_error(e, &id))?;
    let k = k as usize;
    let (pca, z) = tokio::task::spawn_blocking(move || {
        crate::nn::Pca::fit(arrays.x.view(), crate::nn::PcaSize::Components(k)).map(|pca| {
            let z = pca.transform(arrays.x.view());
            (pca, z, arrays.labels)
        })
    })
    .await
    .map_err(|e| anyhow::anyhow!("PCA task failed: {e}"))?
    .map(|(pca, z, labels)| {
        (
            pca,
            Dataset {
                x: Features::F32(z),
                labels,
                input_shape: vec![k],
            },
        )
    })
    .map_err(|e| ApiError::invalid("n_components", e.to_string()))?;
    let ratios = pca.explained_variance_ratio.clone();
    let new = NewDataset {
        name,
        source: "pca".to_string(),
        parent_id: Some(parent.id.clone()),
        derivation: Some(serde_json::json!({
            "pca": {"n_components": k, "explained_variance_ratio": ratios}
        })),
        image_shape: parent.image_shape.clone(),
        extra: vec![
            ("pca_mean".to_string(), pca.mean.clone().into_dyn()),
            ("pca_components".to_string(), pca.components.clone().into_dyn()),
        ],
    };
    let row = store::datasets::create(&state.store, new, z).await?;
    let mut res = (
        StatusCode::CREATED,
        AppJson(PcaDatasetView {
            dataset: dataset_view(&row),
            explained_variance_ratio: ratios,
        }),
    )
        .into_response();
    let location = HeaderValue::from_str(&format!("/v1/datasets/{}", row.id)).map_err(anyhow::Error::from)?;
    res.headers_mut().insert(header::LOCATION, location);
    Ok(res)
}
