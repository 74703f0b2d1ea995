//! The HTTP surface: one router per resource merged here, the middleware stack, and the OpenAPI document.

pub mod aliases;
pub mod auth;
pub mod body;
pub mod content;
pub mod cross_site;
pub mod dashboard;
pub mod datasets;
pub mod error;
pub mod health;
pub mod inference;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod pagination;
pub mod saved_models;
pub mod searches;
pub mod server;
pub mod session;
pub mod state;
pub mod tokens;
pub mod v2;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, StatusCode};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, AppJson, AppQuery, Problem, ProblemField};
pub use state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fitd",
        description = "Training as a service: upload datasets, define Keras-style Sequential models, \
                       train them in the background, stream metrics and serve predictions.",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "health", description = "Liveness and readiness probes"),
        (name = "datasets", description = "Training data: uploads, built-ins, samples, PCA"),
        (name = "models", description = "Model architectures (Sequential specs)"),
        (name = "saved-models", description = "Trained weights: predictions, evaluation, weights files, export and import"),
        (name = "kserve-v2", description = "Open Inference Protocol (KServe v2 REST) for saved models"),
        (name = "jobs", description = "Training jobs: queue, events, history, checkpoints, labels, comparison"),
        (name = "aliases", description = "Stable names for saved models, accepted wherever a saved model id is"),
        (name = "webhooks", description = "Signed, retried deliveries of job status changes"),
        (name = "tokens", description = "API tokens (the `admin` scope)"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "searches", description = "Hyperparameter searches: trials on the job queue, leaderboard, events"),
    ),

    paths(datasets::get_dataset_sample),
    components(schemas(Problem, ProblemField, jobs::StatusEvent, jobs::ProgressEvent, jobs::EpochEvent,
                       jobs::CheckpointEvent, jobs::DoneEvent)),
)]
struct ApiDoc;

/// Routes and their OpenAPI description, before state is attached; uploads may be up to
/// `max_upload_bytes`, every other body is limited by the JSON limit layered in [`router`].
pub fn api_router(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(datasets::router(max_upload_bytes))
        .merge(models::router())
        .merge(saved_models::router())
        .merge(jobs::router())
        .merge(aliases::router())
        .merge(webhooks::router())
        .merge(tokens::router())
        .merge(session::router())
        .merge(searches::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(metrics::router())
        .merge(v2::router())
        .nest("/v1", v1)
}

/// The OpenAPI document of the API, with each operation's token scope (see [`crate::auth::access`]),
/// as the JSON `/openapi.json` serves and `openapi/openapi.yaml` holds.
///
/// It stays a JSON value once completed: utoipa's own types cannot hold every schema the document
/// needs (an array of any JSON values, `items: {}`, reads back as an array without `items`).
pub fn openapi() -> serde_json::Value {
    let mut doc = api_router(1 << 30).into_openapi();
    document_security(&mut doc);
    complete_spec(doc)
}

/// Declares the bearer-token scheme and, on every operation, the scope it needs (`security: []`
/// for public ones) with its `401` and `403` answers, from the same rule the middleware applies.
fn document_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`fitd token create`, `POST /v1/tokens`); each operation lists \
                     the scope it needs. Enforced once any token exists.",
                ))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                error::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
            (Method::HEAD, &mut item.head),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            match crate::auth::access(&method, path) {
                crate::auth::Access::Public => op.security = Some(Vec::new()),
                crate::auth::Access::Scope(scope) => {
                    op.security = Some(vec![SecurityRequirement::new("bearer", [scope.as_str()])]);
                    let responses = &mut op.responses.responses;
                    responses.insert(
                        "401".into(),
                        problem("No API token, or an unknown or revoked one").into(),
                    );
                    responses.insert(
                        "403".into(),
                        problem(&format!("The API token lacks the `{scope}` scope")).into(),
                    );
                }
            }
        }
    }
}

/// The statuses every operation shares by how it reads its request, added where a handler's own
/// annotation leaves them out, so the spec documents each status a client can get:
/// - a query parameter or header that does not parse is `422` naming it ([`AppQuery`],
///   [`error::bad_header`]);
/// - a JSON body is `400` when malformed, `413` over the body limit, `415` with another content
///   type and `422` when a field is invalid.
///
/// Also keeps the document plain for client generators: named schemas instead of inline variants
/// and a named enum for the optimizer's string form, and `additionalProperties: false` (which some
/// generators cannot name) said in words.
fn complete_spec(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    let problem = |description: &str| {
        json!({"description": description,
               "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
    };
    const PARSE_422: &str =
        "A query parameter or header does not parse or is out of range; `errors` names it.";
    if let Some(paths) = v["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(ops) = item.as_object_mut() else { continue };
            for op in ops.values_mut() {
                let reads_params = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| matches!(p["in"].as_str(), Some("query" | "header")))
                });
                // A header is text on the wire, and generated clients hand a header's value to
                // their HTTP library as it is typed: a number there fails (httpx refuses an `int`).
                if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                    for p in params.iter_mut().filter(|p| p["in"] == "header") {
                        let types = &p["schema"]["type"];
                        let integer = types == "integer"
                            || types.as_array().is_some_and(|t| t.contains(&json!("integer")));
                        if integer {
                            p["schema"] = json!({"type": "string", "pattern": "^[0-9]+$"});
                            let d = p["description"]
                                .as_str()
                                .unwrap_or_default()
                                .trim_end_matches('.');
                            p["description"] = Value::String(format!("{d} (a decimal integer)."));
                        }
                    }
                }
                let json_body = op["requestBody"]["content"]
                    .as_object()
                    .is_some_and(|c| c.contains_key("application/json"));
                let Some(responses) = op["responses"].as_object_mut() else {
                    continue;
                };
                if json_body {
                    for (status, text) in [
                        ("400", "The body is not well-formed JSON"),
                        ("413", "The body is over the server's size limit"),
                        ("415", "The body's `Content-Type` is not one this operation takes"),
                        ("422", "A field is invalid; `errors` names each one"),
                    ] {
                        responses.entry(status).or_insert_with(|| problem(text));
                    }
                }
                if reads_params {
                    match responses.get_mut("422") {
                        None => {
                            responses.insert("422".into(), problem(PARSE_422));
                        }
                        Some(r) => {
                            let d = r["description"].as_str().unwrap_or_default();
                            if !d.contains("does not parse") {
                                r["description"] =
                                    Value::String(format!("{}. {PARSE_422}", d.trim_end_matches('.')));
                            }
                        }
                    }
                }
                // Statuses in numeric order, as a reader expects.
                let mut sorted: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                responses.extend(sorted);
            }
        }
    }
    let schemas = &mut v["components"]["schemas"];
    if let Some(spec) = schemas.get_mut("OptimizerSpec")
        && let Some(variants) = spec["oneOf"].as_array_mut()
    {
        for variant in variants.iter_mut() {
            if variant.get("type") == Some(&json!("string")) {
                *variant = json!({"$ref": "#/components/schemas/OptimizerName"});
            }
        }
        schemas["OptimizerName"] = json!({
            "type": "string",
            "description": "An optimizer by name, with Keras's default parameters.",
            "enum": ["sgd", "adagrad", "rmsprop", "adam"],
        });
    }
    if let Some(variants) = schemas
        .get_mut("Prediction")
        .and_then(|p| p["oneOf"].as_array_mut())
    {
        let mut named = Vec::new();
        for variant in variants.iter_mut() {
            let required = variant["required"].clone();
            let name = if required == json!(["class", "probabilities"]) {
                "ClassPrediction"
            } else if required == json!(["class", "probability"]) {
                "BinaryPrediction"
            } else {
                "ValuePrediction"
            };
            named.push((
                name,
                std::mem::replace(variant, json!({"$ref": format!("#/components/schemas/{name}")})),
            ));
        }
        for (name, schema) in named {
            schemas[name] = schema;
        }
    }
    // KServe v2 errors carry the protocol's `error` beside the problem fields.
    let mut v2_problem = v["components"]["schemas"]["Problem"].clone();
    v2_problem["description"] =
        json!("A problem document with the Open Inference Protocol's `error` (the same text as `detail`).");
    v2_problem["properties"]["error"] =
        json!({"type": "string", "description": "The error message, as KServe v2 clients read it."});
    if let Some(required) = v2_problem["required"].as_array_mut() {
        required.push(json!("error"));
    }
    v["components"]["schemas"]["InferenceProblem"] = v2_problem;
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            if path.starts_with("/v2") {
                replace_ref(
                    item,
                    "#/components/schemas/Problem",
                    "#/components/schemas/InferenceProblem",
                );
            }
        }
    }
    strip_closed_objects(&mut v);
    inline_maps(&mut v);
    if let Some(schemas) = v["components"]["schemas"].as_object_mut() {
        schemas.sort_keys();
    }
    v
}

fn replace_ref(v: &mut serde_json::Value, from: &str, to: &str) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("$ref").and_then(|r| r.as_str()) == Some(from) {
                map.insert("$ref".into(), serde_json::Value::String(to.into()));
            }
            map.values_mut().for_each(|x| replace_ref(x, from, to));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|x| replace_ref(x, from, to)),
        _ => {}
    }
}

/// Writes string-keyed maps where they are used instead of as named schemas of their own (a Rust
/// type name such as `BTreeMap` means nothing to a client, and generators cannot name a schema that
/// is only a map), and drops `propertyNames: {type: string}`, which every JSON object satisfies.
fn inline_maps(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn drop_property_names(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if map.get("propertyNames") == Some(&serde_json::json!({"type": "string"})) {
                    map.remove("propertyNames");
                }
                map.values_mut().for_each(drop_property_names);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_property_names),
            _ => {}
        }
    }
    fn inline(v: &mut Value, maps: &serde_json::Map<String, Value>) {
        match v {
            Value::Object(map) => {
                let target = map
                    .get("$ref")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    .and_then(|name| maps.get(name));
                if let Some(Value::Object(target)) = target {
                    map.remove("$ref");
                    for (key, value) in target {
                        map.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
                map.values_mut().for_each(|x| inline(x, maps));
            }
            Value::Array(items) => items.iter_mut().for_each(|x| inline(x, maps)),
            _ => {}
        }
    }
    drop_property_names(v);
    let Some(schemas) = v["components"]["schemas"].as_object_mut() else {
        return;
    };
    let names: Vec<String> = schemas
        .iter()
        .filter(|(_, s)| {
            s["type"] == "object" && s.get("additionalProperties").is_some() && s.get("properties").is_none()
        })
        .map(|(name, _)| name.clone())
        .collect();
    let mut maps = serde_json::Map::new();
    for name in names {
        if let Some(schema) = schemas.shift_remove(&name) {
            maps.insert(name, schema);
        }
    }
    inline(v, &maps);
}

/// Replaces `additionalProperties: false` with a sentence in the schema's description, and gives
/// an array of any JSON values (nested numbers) the `items: {}` generators require.
fn strip_closed_objects(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let is_array = match map.get("type") {
                Some(serde_json::Value::String(t)) => t == "array",
                Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "array"),
                _ => false,
            };
            if is_array && !map.contains_key("items") {
                map.insert("items".into(), serde_json::json!({}));
            }
            if map.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                map.remove("additionalProperties");
                let d = map
                    .get("description")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default()
                    .trim_end()
                    .to_string();
                let sep = if d.is_empty() {
                    ""
                } else if d.ends_with('.') {
                    " "
                } else {
                    ". "
                };
                map.insert(
                    "description".into(),
                    serde_json::Value::String(format!("{d}{sep}Unknown fields are refused (422).")),
                );
            }
            map.values_mut().for_each(strip_closed_objects);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_closed_objects),
        _ => {}
    }
}

/// The OpenAPI document as YAML, what `fitd openapi` prints and `openapi/openapi.yaml` holds.
pub fn openapi_yaml() -> anyhow::Result<String> {
    Ok(yaml_serde::to_string(&openapi())?)
}

/// The complete application: API routes, docs, and the middleware stack.
/// The routes of a worker node (`fitd worker`): liveness, readiness and metrics, behind the same
/// token check as the API; every other path is 404.
pub fn worker_router(state: AppState) -> Router {
    let (routes, _) = OpenApiRouter::new()
        .merge(health::router())
        .merge(metrics::router())
        .split_for_parts();
    let auth_state = state.clone();
    routes
        .with_state(state)
        .fallback(|| async {
            ApiError::Status {
                status: StatusCode::NOT_FOUND,
                detail: "a worker node serves only /healthz, /readyz and /metrics".into(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            auth_state,
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(error::problem_for_plain_errors))
}

pub fn router(state: AppState) -> Router {
    let (api, mut spec) = api_router(state.config.max_upload_bytes).split_for_parts();
    document_security(&mut spec);
    let spec = complete_spec(spec);
    let config = state.config.clone();
    let auth_state = state.clone();
    let metrics_state = state.clone();
    let guard_state = state.clone();
    let api = api
        .merge(datasets::extra_routes())
        .with_state(state)
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", spec))
        .merge(dashboard::router());
    api.fallback(|| async {
        ApiError::Status {
            status: StatusCode::NOT_FOUND,
            detail: "no such route".into(),
        }
    })
    .layer(DefaultBodyLimit::max(config.max_json_bytes))
    .layer(axum::middleware::from_fn_with_state(
        auth_state,
        auth::require_token,
    ))
    .layer(axum::middleware::from_fn_with_state(
        guard_state,
        cross_site::guard,
    ))
    .layer(axum::middleware::from_fn(error::problem_for_plain_errors))
    .layer(CompressionLayer::new().gzip(true))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.request_timeout_secs),
    ))
    .layer(axum::middleware::from_fn_with_state(
        metrics_state,
        metrics::track,
    ))
    .layer(tower::util::option_layer(cross_site::cors_layer(
        &config.cors_origins,
    )))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(
        TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }),
    )
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
