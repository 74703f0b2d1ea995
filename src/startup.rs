//! Composition root: storage, state, router and listener, plus running until a shutdown signal.

use std::future::Future;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::server::ConnLimits;
use crate::http::{self, AppState};
use crate::jobs::Jobs;
use crate::store::Store;
use crate::store::lock::DbLock;

/// How long shutdown waits for running jobs to reach a batch boundary and go back to the queue.
const JOB_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a process serves besides its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The whole HTTP API (`fitd serve`).
    Api,
    /// Probes and metrics only (`fitd worker`).
    Worker,
}

/// A server that is bound and ready to run; building it first lets callers learn the port.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    router: Router,
    limits: ConnLimits,
    /// Held until the server has stopped, so no second server uses the same SQLite file (nodes
    /// sharing PostgreSQL need none).
    lock: Option<DbLock>,
}

impl Application {
    /// Takes the database's lock, opens it (applying migrations), removes what an interrupted run
    /// left in its data directory, builds the state and router, and binds `config.addr`.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_as(config, Role::Api).await
    }

    /// A worker node (`fitd worker`): trains jobs from the shared database and answers only
    /// `/healthz`, `/readyz` and `/metrics` on `config.addr`.
    pub async fn build_worker(config: Config) -> anyhow::Result<Application> {
        Application::build_as(config, Role::Worker).await
    }

    async fn build_as(config: Config, role: Role) -> anyhow::Result<Application> {
        let lock = config.db.sqlite_path().map(DbLock::acquire).transpose()?;
        let store = Store::open(&config.db, config.data_dir.as_deref())
            .await
            .with_context(|| format!("opening the database {}", config.db))?;
        store.dataset_cache().set_capacity(config.dataset_cache_bytes);
        crate::store::sweep::sweep_leftovers(&store)
            .await
            .context("removing leftovers of interrupted uploads")?;
        check_auth(&config, &store).await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        let port = listener.local_addr()?.port();
        let policy = config.clone();
        let jobs = Jobs::start(store.clone(), config.worker_options(), move |batch| {
            policy.job_threads(batch)
        })
        .await
        .context("starting the job workers")?;
        let limits = ConnLimits::from_config(&config);
        let state = AppState::new(config, store, jobs)?;
        http::webhooks::spawn_sender(&state).context("starting the webhook sender")?;
        spawn_metrics_upkeep(&state.metrics);
        if let crate::store::Db::Postgres(url) = &state.config.db {
            let relay = crate::jobs::relay::Relay {
                store: state.store.clone(),
                jobs: state.jobs.clone(),
                models: Some(state.models.clone()),
            };
            crate::jobs::relay::spawn(url.clone(), relay, state.jobs.shutdown_token());
        }
        let router = match role {
            Role::Api => http::router(state.clone()),
            Role::Worker => http::worker_router(state.clone()),
        };
        Ok(Application {
            listener,
            port,
            state,
            router,
            limits,
            lock,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(
            port = self.port,
            max_connections = self.limits.max_connections,
            header_read_timeout_s = self.limits.header_read_timeout.as_secs(),
            idle_timeout_s = self.limits.idle_timeout.as_secs(),
            "fitd listening"
        );
        let jobs = self.state.jobs.clone();
        // Running jobs stop between batches and go back to the queue (their last epoch checkpoint is
        // the resume point) and event streams end, so in-flight SSE responses do not hold the exit.
        let shutdown = async move {
            shutdown.await;
            let stopping = tokio::task::spawn_blocking(move || jobs.shutdown(JOB_SHUTDOWN_GRACE));
            if let Err(e) = stopping.await {
                tracing::error!(error = %e, "stopping the job workers failed");
            }
        };
        http::server::serve(self.listener, self.router, self.limits, shutdown).await;
        self.state.store.pool.close().await;
        if let Some(lock) = self.lock {
            lock.release();
        }
        tracing::info!("fitd stopped");
        Ok(())
    }
}

/// Folds histogram samples in every 10 s, until the server's metrics are dropped.
fn spawn_metrics_upkeep(metrics: &std::sync::Arc<crate::metrics::Metrics>) {
    let weak = std::sync::Arc::downgrade(metrics);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            match weak.upgrade() {
                Some(m) => m.upkeep(),
                None => return,
            }
        }
    });
}

/// Registers `--admin-token-file`, then refuses to serve a non-loopback address without tokens
/// unless `--insecure-no-auth` says so; logs which way the server runs.
async fn check_auth(config: &Config, store: &Store) -> anyhow::Result<()> {
    if let Some(path) = &config.admin_token_file
        && crate::auth::register_token_file(store, path).await?
    {
        tracing::info!(file = %path.display(), "registered the admin token from the token file");
    }
    let has_tokens = crate::store::tokens::any(store).await?;
    let loopback = config.addr.ip().is_loopback();
    if has_tokens {
        tracing::info!("API tokens are required (Authorization: Bearer)");
    } else if loopback {
        tracing::warn!(
            addr = %config.addr,
            "no API tokens exist: fitd is open to every client of this machine; create one with \
             `fitd token create --scope read,train,predict,admin --name me` to require tokens"
        );
    } else if config.insecure_no_auth {
        tracing::warn!(
            addr = %config.addr,
            "--insecure-no-auth: fitd is open to everyone who can reach this address"
        );
    } else {
        anyhow::bail!(
            "refusing to serve {} without API tokens: anyone who can reach it could train, delete and \
             export. Create a token first (`fitd token create --db {} --scope read,train,predict,admin \
             --name admin`, or --admin-token-file), listen on 127.0.0.1, or pass --insecure-no-auth",
            config.addr,
            config.db
        );
    }
    Ok(())
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// accept loop may answer requests before it polls its shutdown future, and a SIGTERM arriving in
/// that window must still shut down gracefully instead of killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = wait(interrupt, "SIGINT") => tracing::info!("SIGINT received, shutting down"),
                _ = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received, shutting down");
    }
}
