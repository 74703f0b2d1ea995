//! `AppState`, what every handler can reach: settings, storage, the outbound HTTP client.

use std::sync::Arc;

use crate::config::Config;
use crate::jobs::Jobs;
use crate::serving::ModelCache;
use crate::store::Store;

/// Shared by all handlers; every field is cheap to clone (an `Arc` or a pool handle).
///
/// Add subsystems (a job queue, an event hub, a model cache) as further fields.
#[derive(Clone)]
pub struct AppState {
    /// The settings the server was started with.
    pub config: Arc<Config>,
    /// SQLite pool and dataset files.
    pub store: Store,
    /// Client for dataset downloads; one per server so connections are reused.
    pub http_client: reqwest::Client,
    /// Decoded saved models, so predictions never touch SQLite once a model is warm.
    pub models: Arc<ModelCache>,
    /// The training job system: worker pool, event hub, cancellation.
    pub jobs: Jobs,
    /// Predictions in flight, so a large batch uses every core only when nothing else needs one.
    pub load: Arc<super::inference::Load>,
    /// Permits for dataset uploads and downloads being decoded, so a burst of them cannot exhaust
    /// memory or disk; a request that finds none is answered 503 at once.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Whether requests need a token (latched once any token exists).
    pub auth: Arc<crate::auth::AuthState>,
    /// Dashboard sessions (cookie id -> token).
    pub sessions: Arc<crate::auth::Sessions>,
    /// Prometheus metrics, the same recorder the job workers use.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn new(config: Config, store: Store, jobs: Jobs) -> anyhow::Result<AppState> {
        let http_client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("fitd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(AppState {
            models: Arc::new(ModelCache::new(config.model_cache_bytes)),
            uploads: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_uploads as usize,
            )),
            metrics: jobs.metrics(),
            config: Arc::new(config),
            store,
            http_client,
            jobs,
            load: Arc::default(),
            auth: Arc::default(),
            sessions: Arc::default(),
        })
    }
}
