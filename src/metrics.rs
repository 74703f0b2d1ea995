//! Prometheus metrics: a `metrics` recorder per server, rendered by `GET /metrics`.
//!
//! The recorder is the server's own (not the process-global one), so several servers in one
//! process (as in the tests) keep separate counts. Counters and histograms are recorded where things
//! happen (requests, predictions, epochs, queue waits, event streams); gauges of state held
//! elsewhere (jobs by status, the model cache, the database pool) are read when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Database errors met while handling requests, process-wide (the store has no handle on a server).
pub static DB_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Upper bounds of the request and predict latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];
/// Upper bounds of the epoch duration buckets, in seconds.
const EPOCH_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Upper bounds of the queue wait buckets, in seconds.
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// One server's metrics.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("fitd_epoch_duration_seconds".into()), EPOCH_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("fitd_job_queue_wait_seconds".into()), WAIT_BUCKETS)
            })
            .expect("the bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics { recorder, handle };
        m.with(describe);
        m
    }

    /// Runs `f` with this server's recorder behind the `metrics` macros.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds buffered histogram samples in, so memory stays bounded between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// A finished HTTP request: `route` is the matched path template, never the raw URL.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.with(|| {
            let labels = [
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ];
            metrics::counter!("fitd_http_requests_total", &labels).increment(1);
            metrics::histogram!("fitd_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
        });
    }

    /// A successful predict or infer request on saved model `model`.
    pub fn prediction(&self, model: &str, instances: usize, elapsed: Duration) {
        self.with(|| {
            let labels = [("model", model.to_string())];
            metrics::counter!("fitd_predict_requests_total", &labels).increment(1);
            metrics::counter!("fitd_predicted_instances_total", &labels).increment(instances as u64);
            metrics::histogram!("fitd_predict_duration_seconds", &labels).record(elapsed.as_secs_f64());
        });
    }

    /// A training epoch finished: its duration and throughput.
    pub fn epoch(&self, duration: Duration, samples: usize) {
        self.with(|| {
            metrics::histogram!("fitd_epoch_duration_seconds").record(duration.as_secs_f64());
            metrics::counter!("fitd_epochs_total").increment(1);
            metrics::counter!("fitd_trained_samples_total").increment(samples as u64);
            if duration > Duration::ZERO {
                metrics::gauge!("fitd_training_samples_per_second")
                    .set(samples as f64 / duration.as_secs_f64());
            }
        });
    }

    /// A worker claimed a job for its first run, `waited` after it was submitted.
    pub fn job_started(&self, waited: Duration) {
        self.with(|| {
            metrics::histogram!("fitd_job_queue_wait_seconds").record(waited.as_secs_f64());
        });
    }

    /// An event stream opened; it counts as open until the returned guard drops.
    pub fn sse_opened(self: &std::sync::Arc<Self>) -> SseGuard {
        self.with(|| metrics::gauge!("fitd_sse_streams_open").increment(1.0));
        SseGuard(std::sync::Arc::clone(self))
    }

    /// Sets a gauge read at scrape time.
    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        self.with(|| metrics::gauge!(name, labels).set(value));
    }

    /// Sets a counter kept elsewhere (the model cache's) to its current total.
    pub fn set_counter(&self, name: &'static str, value: u64) {
        self.with(|| metrics::counter!(name).absolute(value));
    }
}

/// Keeps one event stream counted as open.
#[derive(Debug)]
pub struct SseGuard(std::sync::Arc<Metrics>);

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.0
            .with(|| metrics::gauge!("fitd_sse_streams_open").decrement(1.0));
    }
}

/// Counts a database error (for `fitd_db_errors_total`).
pub fn db_error() {
    DB_ERRORS.fetch_add(1, Ordering::Relaxed);
}

fn describe() {
    describe_counter!(
        "fitd_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "fitd_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, by method, route template and status (event streams: until they start)"
    );
    describe_gauge!("fitd_jobs", "Training jobs by status");
    describe_gauge!("fitd_job_queue_depth", "Jobs waiting in the queue");
    describe_histogram!(
        "fitd_job_queue_wait_seconds",
        Unit::Seconds,
        "Time from submitting a job to its first start"
    );
    describe_histogram!(
        "fitd_epoch_duration_seconds",
        Unit::Seconds,
        "Wall time of one training epoch"
    );
    describe_counter!("fitd_epochs_total", "Training epochs completed");
    describe_counter!(
        "fitd_trained_samples_total",
        "Training samples processed (one per sample per epoch)"
    );
    describe_gauge!(
        "fitd_training_samples_per_second",
        "Training samples per second of the last completed epoch"
    );
    describe_counter!(
        "fitd_predict_requests_total",
        "Successful predict and infer requests, by saved model"
    );
    describe_counter!(
        "fitd_predicted_instances_total",
        "Instances predicted, by saved model"
    );
    describe_histogram!(
        "fitd_predict_duration_seconds",
        Unit::Seconds,
        "Predict and infer time from the start of the request to the encoded answer, by saved model"
    );
    describe_counter!(
        "fitd_model_cache_hits_total",
        "Model lookups answered from memory"
    );
    describe_counter!(
        "fitd_model_cache_misses_total",
        "Model lookups that loaded the model"
    );
    describe_counter!(
        "fitd_model_cache_waits_total",
        "Model lookups that waited for another request's load"
    );
    describe_gauge!(
        "fitd_model_cache_bytes",
        "Bytes of decoded weights held by the model cache"
    );
    describe_gauge!("fitd_model_cache_models", "Models held by the model cache");
    describe_gauge!("fitd_sse_streams_open", "Job event streams open now");
    describe_gauge!(
        "fitd_db_pool_connections",
        "Database pool connections, by state (idle, in_use)"
    );
    describe_gauge!(
        "fitd_db_pool_max_connections",
        "Most connections the database pool opens"
    );
    describe_counter!(
        "fitd_db_errors_total",
        "Database errors met while handling requests"
    );
}
