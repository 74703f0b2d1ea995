//! The HTTP/1.1 accept loop: bounded connections, a deadline on every request head, idle keep-alive
//! connections closed, and graceful shutdown.
//!
//! `axum::serve` has none of the first three, so one slow client per connection (slow-loris) could
//! hold sockets forever and exhaust the process's file descriptors. Here each connection runs a
//! watchdog over its phase:
//! - waiting for a request head (from accepting, or from the first byte after an idle pause): closed
//!   when the head is not complete within the header-read timeout, however slowly bytes trickle in;
//! - idle between keep-alive requests: closed after the idle timeout;
//! - busy (a request is being read or handled, or its response, an event stream included, is being
//!   sent): left alone; handlers have the request timeout.
//!
//! At most `max_connections` are open. When a new client arrives at the limit, the connection that
//! has waited longest without a request in flight is closed to make room, so connections that
//! never send a request cannot lock others out; if every connection is busy, the new one waits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Descriptors kept free for the database, dataset files and uploads when the connection limit is
/// fitted to the open-file limit.
const RESERVED_FDS: u64 = 64;

/// How long between two warnings that the connection limit was reached.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What bounds client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// From connecting, or from the first byte after an idle pause, to the end of the request head.
    pub header_read_timeout: Duration,
    /// Between the end of a response and the first byte of the next request.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl ConnLimits {
    /// The limits from the settings, with the connection limit fitted under the open-file limit
    /// (raising the soft limit towards the hard one first, as far as needed).
    pub fn from_config(config: &crate::config::Config) -> ConnLimits {
        let wanted = config.max_connections;
        let max_connections = match fd_room(wanted + RESERVED_FDS) {
            Some(fds) if fds < wanted + RESERVED_FDS => {
                let fitted = fds.saturating_sub(RESERVED_FDS).max(1);
                tracing::warn!(
                    wanted,
                    fitted,
                    open_file_limit = fds,
                    "the open-file limit is too low for the connection limit; lowering the connection limit"
                );
                fitted
            }
            _ => wanted,
        };
        ConnLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// The process's soft open-file limit after trying to raise it to `wanted` (never above the hard
/// limit); `None` where there is no such limit or it cannot be read.
#[cfg(unix)]
fn fd_room(wanted: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        // `rlim_t` is u64 on Linux but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        let (cur, max) = (lim.rlim_cur as u64, lim.rlim_max as u64);
        if cur < wanted && cur < max {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(max) as libc::rlim_t,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(wanted.min(max));
            }
        }
        Some(cur)
    }
}

#[cfg(not(unix))]
fn fd_room(_wanted: u64) -> Option<u64> {
    None
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head since this instant.
    Head(Instant),
    /// At least one request is being read or handled, or its response is being sent.
    Busy,
    /// Between keep-alive requests since this instant.
    Idle(Instant),
}

/// One connection's shared state: its phase, seen by the watchdog and the limit's eviction.
#[derive(Debug)]
struct Conn {
    phase: Mutex<Phase>,
    /// Requests whose responses have not been sent completely.
    in_flight: AtomicUsize,
    /// Whether the phase is `Idle`, so reads check it without the lock.
    idle: AtomicBool,
    /// Wakes the watchdog after a phase change.
    changed: Notify,
    /// Closes the connection to make room for a new one.
    evict: Notify,
    evicted: AtomicBool,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            phase: Mutex::new(Phase::Head(Instant::now())),
            in_flight: AtomicUsize::new(0),
            idle: AtomicBool::new(false),
            changed: Notify::new(),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        self.idle
            .store(matches!(phase, Phase::Idle(_)), Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a new request head.
    fn bytes_read(&self) {
        if self.idle.load(Ordering::Acquire) {
            let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*phase, Phase::Idle(_)) {
                *phase = Phase::Head(Instant::now());
                self.idle.store(false, Ordering::Release);
                self.changed.notify_one();
            }
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.set(Phase::Busy);
        InFlight(Arc::clone(self))
    }

    /// When the current phase's deadline passes, and what it is called in the log.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, &'static str)> {
        match self.phase() {
            Phase::Head(since) => Some((since + limits.header_read_timeout, "header read timeout")),
            Phase::Idle(since) => Some((since + limits.idle_timeout, "idle timeout")),
            Phase::Busy => None,
        }
    }

    /// Since when the connection has waited for a request, unless one is in flight.
    fn waiting_since(&self) -> Option<Instant> {
        match self.phase() {
            Phase::Head(since) | Phase::Idle(since) => Some(since),
            Phase::Busy => None,
        }
    }
}

/// Held from the moment a request head is parsed until its response body is sent or dropped.
#[derive(Debug)]
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.set(Phase::Idle(Instant::now()));
        }
    }
}

/// Resolves when the connection's current phase outlives its deadline, with the reason.
async fn watchdog(conn: &Conn, limits: &ConnLimits) -> &'static str {
    loop {
        let changed = conn.changed.notified();
        match conn.deadline(limits) {
            None => changed.await,
            Some((deadline, why)) => {
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        // The phase may have moved on just as the timer fired.
                        if conn.deadline(limits).is_some_and(|(d, _)| d <= Instant::now()) {
                            return why;
                        }
                    }
                }
            }
        }
    }
}

/// The open connections, for eviction at the limit.
#[derive(Debug, Default)]
struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn add(self: &Arc<Self>, conn: Arc<Conn>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn);
        Registered(Arc::clone(self), id)
    }

    /// Asks the connection that has waited longest without a request in flight to close; false
    /// when every connection is busy.
    fn evict_longest_waiting(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let victim = conns
            .values()
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .filter_map(|c| c.waiting_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, c)) => {
                c.evicted.store(true, Ordering::Release);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when its task ends.
struct Registered(Arc<Registry>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// The socket, telling its connection when bytes arrive.
struct Tracked<IO> {
    io: IO,
    conn: Arc<Conn>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_read();
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
struct CountedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops accepting,
/// lets every connection finish its request in flight, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let closing = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, then go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let evicted = registry.evict_longest_waiting();
                if last_warning.is_none_or(|t| t.elapsed() >= LIMIT_WARNING_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        evicted,
                        "connection limit reached; {}",
                        if evicted {
                            "closing the connection that waited longest for a request"
                        } else {
                            "every connection is busy, the new one waits"
                        }
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let conn = Arc::new(Conn::new());
        let registered = registry.add(Arc::clone(&conn));
        let router = router.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, conn, router, limits, closing).await;
            drop(registered);
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    conn: Arc<Conn>,
    router: Router,
    limits: ConnLimits,
    closing: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Tracked {
        io: stream,
        conn: Arc::clone(&conn),
    });
    let counting = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = counting.request_started();
        let mut router = router.clone();
        async move {
            let res = router.call(req.map(Body::new)).await?;
            Ok::<_, Infallible>(res.map(|inner| CountedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let http = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut http = pin!(http);
    let mut watchdog = pin!(watchdog(&conn, &limits));
    let mut graceful = false;
    loop {
        tokio::select! {
            done = http.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            why = &mut watchdog => {
                tracing::debug!(%peer, reason = why, "closing connection");
                return;
            }
            _ = conn.evict.notified() => {
                tracing::debug!(%peer, "closing connection to make room for a new one");
                return;
            }
            _ = closing.cancelled(), if !graceful => {
                graceful = true;
                http.as_mut().graceful_shutdown();
            }
        }
    }
}
