//! What `/v1/saved-models/{id}/predict` and `/v2/models/{id}/infer` share once their body is read:
//! parse, predict and encode in one step that runs on the request's task for small bodies and on the
//! blocking pool for large ones (so a big parse never stalls small requests), the choice of engine
//! threads, and the `Server-Timing` header.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ndarray::{Array2, ArrayView2};

use super::{ApiError, AppState};
use crate::nn;
use crate::serving::{ServedModel, predict};

/// How busy prediction is: a large batch takes every core only when the server is otherwise idle
/// (no other prediction in flight, no small one in the last [`QUIET`], no training job), so it never
/// slows down single-row requests or jobs.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    /// When the last small (inline) prediction started, in microseconds since `epoch`.
    last_small_us: AtomicU64,
    epoch: Instant,
}

/// How long after a small request the server still counts as serving them.
pub const QUIET: Duration = Duration::from_millis(20);

impl Default for Load {
    fn default() -> Self {
        Load {
            in_flight: AtomicUsize::new(0),
            last_small_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Load {
    fn now_us(&self) -> u64 {
        // Offset by QUIET so that a server that has seen no small request counts as quiet.
        (self.epoch.elapsed() + QUIET).as_micros() as u64
    }

    /// Counts a prediction until the guard drops.
    fn enter(&self, small: bool) -> Entered<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if small {
            self.last_small_us.store(self.now_us(), Ordering::Relaxed);
        }
        Entered(self)
    }

    /// Whether the caller (counted in flight) is the only prediction and small ones are quiet.
    fn alone(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 1
            && self
                .now_us()
                .saturating_sub(self.last_small_us.load(Ordering::Relaxed))
                >= QUIET.as_micros() as u64
    }
}

/// Counts one prediction while alive.
struct Entered<'a>(&'a Load);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body and its content type, with the times the work took.
pub struct Encoded {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Extra headers (name, value) such as `Inference-Header-Content-Length`.
    pub headers: Vec<(&'static str, String)>,
}

/// Times of the stages, for `Server-Timing`.
pub struct Timings {
    /// Model lookup and receiving the body.
    pub read: Duration,
    pub parse: Duration,
    pub predict: Duration,
    pub encode: Duration,
}

/// Parses a request body into `(inputs, what the encoder needs)`.
pub type ParseFn<C> = Box<dyn FnOnce(&ServedModel) -> Result<(Array2<f32>, C), ApiError> + Send>;
/// Turns the model's outputs into the response.
pub type EncodeFn<C> = Box<dyn FnOnce(&ServedModel, Array2<f32>, C) -> Result<Encoded, ApiError> + Send>;

/// Runs `parse`, the model and `encode`: inline when the body has at most `4 * predict_inline_values`
/// bytes (the size of that many float32 values), else on the blocking pool, the batch split over the
/// cores when nothing else competes for them.
pub async fn run<C: Send + 'static>(
    state: &AppState,
    served: Arc<ServedModel>,
    body_len: usize,
    started: Instant,
    parse: ParseFn<C>,
    encode: EncodeFn<C>,
) -> Result<Response, ApiError> {
    let read = started.elapsed();
    let inline = body_len <= state.config.predict_inline_values.saturating_mul(4);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = state.load.clone();
    let jobs_running = state.jobs.running_count();
    let model_id = served.id.clone();
    let work = move || -> Result<(Encoded, usize, [Duration; 3]), ApiError> {
        let _entered = load.enter(inline);
        let t0 = Instant::now();
        let (x, ctx) = parse(&served)?;
        let rows = x.nrows();
        let t1 = Instant::now();
        let threads = if inline || jobs_running > 0 || !load.alone() {
            1
        } else {
            cores
        };
        let out = predict_matrix(&served, x.view(), threads)?;
        drop(x);
        let t2 = Instant::now();
        let encoded = encode(&served, out, ctx)?;
        let t3 = Instant::now();
        Ok((encoded, rows, [t1 - t0, t2 - t1, t3 - t2]))
    };
    let (encoded, rows, [parse, predict, encode]) = if inline {
        work()?
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(anyhow::Error::from)??
    };
    state.metrics.prediction(&model_id, rows, started.elapsed());
    Ok(respond(
        encoded,
        Timings {
            read,
            parse,
            predict,
            encode,
        },
    ))
}

/// `model.predict(x)` over `threads` threads, engine errors as field errors of `instances`.
///
/// # Shapes
/// `x`: `(n, features)` -> `(n, outputs)`
pub fn predict_matrix(
    served: &ServedModel,
    x: ArrayView2<f32>,
    threads: usize,
) -> Result<Array2<f32>, ApiError> {
    predict::predict_split(&served.model, x, threads).map_err(|e| match e {
        nn::Error::NonFinite { row, col, .. } => ApiError::invalid(
            format!("instances[{row}]"),
            format!("feature {col} is not a finite number"),
        ),
        other => ApiError::invalid("instances", other.to_string()),
    })
}

/// A `200` with the body, its headers and `Server-Timing` (milliseconds, as the header's spec says).
pub fn respond(encoded: Encoded, t: Timings) -> Response {
    let timing = [
        ("read", t.read),
        ("parse", t.parse),
        ("predict", t.predict),
        ("encode", t.encode),
    ]
    .iter()
    .map(|(name, d)| format!("{name};dur={:.3}", d.as_secs_f64() * 1e3))
    .collect::<Vec<_>>()
    .join(", ");
    let mut res = (StatusCode::OK, encoded.body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoded.content_type),
    );
    for (name, value) in encoded.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    res
}
