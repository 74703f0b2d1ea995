//! The training job system: a persisted FIFO queue claimed by a pool of worker threads, the event
//! hub that streams each job's progress, cancellation, and resume after a restart or shutdown.
//!
//! Workers are plain OS threads (training is CPU-bound and must not block the async runtime); they
//! reach SQLite through the runtime's `Handle`.

pub mod data;
pub mod hub;
pub mod relay;
pub mod retention;
mod runner;
pub mod search;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub use hub::{EventHub, JobEvent};
pub use runner::last_dense;

/// Jobs per status, every status listed (zero when none).
pub type JobStatusCounts = Vec<(&'static str, i64)>;

use crate::store::{self, Store};

/// Flags and live counters of one running job, shared by its worker and the HTTP handlers.
#[derive(Debug, Default)]
pub struct RunFlags {
    /// Checked by the trainer before each batch.
    pub stop: AtomicBool,
    /// Set with `stop` when the server is shutting down: the job goes back to the queue.
    pub requeue: AtomicBool,
    pub batches_done: AtomicUsize,
    pub batches_total: AtomicUsize,
    /// Seq of the job's last stored event, the id given to live progress events.
    pub last_seq: AtomicI64,
    /// Set with `stop` when the job's claim passed to another worker (its lease expired): the job
    /// stops without writing anything more.
    pub lost: AtomicBool,
}

/// How this node's workers take jobs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Worker threads; 0 makes an API-only node.
    pub workers: usize,
    /// This node's name, recorded with `/<worker>` on the jobs it runs.
    pub node: String,
    /// How long a claim holds without renewal; a worker renews it every [`WorkerOptions::renew_every`].
    pub lease: Duration,
}

impl WorkerOptions {
    /// One worker thread named after this host, with the default lease (for tests and tools).
    pub fn single(workers: usize) -> WorkerOptions {
        WorkerOptions {
            workers,
            node: default_node_name(),
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
        }
    }

    /// A third of the lease, at most a second: renewals also carry cancel requests made on other
    /// nodes, which should arrive within about a second.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 3)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(50))
    }
}

/// The lease a claim has unless configured otherwise.
pub const DEFAULT_LEASE_SECS: u64 = 15;

/// `<host>:<pid>`, unique among the nodes of a cluster.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "fitd".into());
    format!("{host}:{}", std::process::id())
}

pub(crate) struct Shared {
    store: Store,
    hub: Arc<EventHub>,
    /// Bumped (and waiters woken) when a job is queued or the server stops; a condvar rather than
    /// a tokio `Notify` so idle workers wait without the runtime, which may be shutting down.
    queued: Mutex<u64>,
    wake: Condvar,
    running: Mutex<HashMap<String, Arc<RunFlags>>>,
    /// Workers stop claiming jobs and running jobs go back to the queue.
    shutdown: CancellationToken,
    /// Event streams end; cancelled after the workers stopped, so their last events still go out.
    streams: CancellationToken,
    rt: Handle,
    /// Engine threads for a job, by batch size.
    threads: Box<dyn Fn(usize) -> usize + Send + Sync>,
    /// The server's metrics: queue waits, epochs.
    metrics: Arc<crate::metrics::Metrics>,
    options: WorkerOptions,
}

impl Shared {
    fn wake_workers(&self) {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.wake.notify_all();
    }

    /// The wake-up generation, read before looking at the queue.
    fn generation(&self) -> u64 {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps until the generation moves past `seen` or `timeout` passes.
    fn wait_for_work(&self, seen: u64, timeout: Duration) {
        let guard = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .wake
            .wait_timeout_while(guard, timeout, |g| *g == seen && !self.shutdown.is_cancelled());
    }
}

/// The job system of one server: submit wake-ups, cancellation, live progress, shutdown.
#[derive(Clone)]
pub struct Jobs {
    shared: Arc<Shared>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Jobs {
    /// The server's metrics, shared with the HTTP handlers.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// On SQLite (one node, holding the database's lock) puts jobs left `running` by a crash back
    /// in the queue; with PostgreSQL the jobs of a node that died are taken over when their lease
    /// expires. Then starts `options.workers` threads. `threads` picks the engine threads of a job
    /// from its batch size.
    pub async fn start(
        store: Store,
        options: WorkerOptions,
        threads: impl Fn(usize) -> usize + Send + Sync + 'static,
    ) -> Result<Jobs, store::Error> {
        if store.backend() == store::Backend::Sqlite {
            let resumed = store::jobs::requeue_running(&store).await?;
            if !resumed.is_empty() {
                tracing::info!(jobs = ?resumed, "resuming jobs interrupted by a restart");
            }
        }
        let hub = Arc::new(EventHub::default());
        // Searches go on where they stopped: trials that ended are recorded, missing ones created.
        search::resume(&store, &hub).await?;
        let shared = Arc::new(Shared {
            store,
            hub,
            queued: Mutex::new(0),
            wake: Condvar::new(),
            running: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            streams: CancellationToken::new(),
            rt: Handle::current(),
            threads: Box::new(threads),
            metrics: Arc::default(),
            options: options.clone(),
        });
        let handles = (0..options.workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("fitd-worker-{i}"))
                    .spawn(move || runner::worker_loop(&shared, i))
                    .expect("spawning a worker thread")
            })
            .collect();
        Ok(Jobs {
            shared,
            workers: Arc::new(Mutex::new(handles)),
        })
    }

    pub fn hub(&self) -> &EventHub {
        &self.shared.hub
    }

    /// Cancelled when the server shuts down, once running jobs are back in the queue; SSE streams
    /// end on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.streams.clone()
    }

    /// Wakes idle workers after a job was queued.
    pub fn notify_queued(&self) {
        self.shared.wake_workers();
    }

    /// The flags of a job while a worker runs it.
    pub fn running(&self, job_id: &str) -> Option<Arc<RunFlags>> {
        let map = self.shared.running.lock().unwrap_or_else(|p| p.into_inner());
        map.get(job_id).cloned()
    }

    /// How many jobs are training right now.
    pub fn running_count(&self) -> usize {
        self.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Asks a running job to stop before its next batch.
    pub fn stop_running(&self, job_id: &str) {
        if let Some(f) = self.running(job_id) {
            f.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Stops every running job between batches (each goes back to the queue, resuming from its last
    /// epoch checkpoint on the next start), waits up to `grace` for the workers to exit, then ends
    /// the event streams.
    pub fn shutdown(&self, grace: Duration) {
        self.shared.shutdown.cancel();
        self.shared.wake_workers();
        {
            let map = self.shared.running.lock().unwrap_or_else(|p| p.into_inner());
            for f in map.values() {
                f.requeue.store(true, Ordering::SeqCst);
                f.stop.store(true, Ordering::SeqCst);
            }
        }
        let handles = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + grace;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!("a worker did not stop in time; its job resumes on the next start");
            }
        }
        self.shared.streams.cancel();
    }
}
