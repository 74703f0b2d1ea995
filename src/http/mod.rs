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
pub mod server;
pub mod session;
pub mod state;
pub mod tokens;
pub mod v2;

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

pub use error::{ApiError, AppJson, Problem, ProblemField};
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
        (name = "tokens", description = "API tokens (the `admin` scope)"),
        (name = "metrics", description = "Prometheus metrics"),
    ),

    paths(datasets::get_dataset_sample),
    components(schemas(Problem, ProblemField)),
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
        .merge(tokens::router())
        .merge(session::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(metrics::router())
        .merge(v2::router())
        .nest("/v1", v1)
}

/// The OpenAPI document of the API, with each operation's token scope (see [`crate::auth::access`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router(1 << 30).into_openapi();
    document_security(&mut doc);
    doc
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

/// The OpenAPI document as YAML, what `fitd openapi` prints and `openapi/openapi.yaml` holds.
pub fn openapi_yaml() -> anyhow::Result<String> {
    Ok(openapi().to_yaml()?)
}

/// The complete application: API routes, docs, and the middleware stack.
pub fn router(state: AppState) -> Router {
    let (api, mut spec) = api_router(state.config.max_upload_bytes).split_for_parts();
    document_security(&mut spec);
    let config = state.config.clone();
    let auth_state = state.clone();
    let metrics_state = state.clone();
    let guard_state = state.clone();
    let api = api
        .merge(datasets::extra_routes())
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
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
