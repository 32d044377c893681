//! The accept loop: hyper serving the router, with the connection settings chosen here.
//!
//! `axum::serve` fixes hyper's settings, and three of its choices cost an auth server that
//! holds thousands of keep-alive connections:
//! - It sets no timer, so hyper's header read timeout never runs: a client could hold a
//!   connection open forever by sending half a request.
//! - It sniffs each connection for HTTP/2 and hands hyper's HTTP/1 parser the 24 bytes read
//!   for that first, so the parser's 8 KiB read buffer is regrown to 16 KiB on every
//!   connection (heaptrack, 10,000 connections: 10,022 allocations of 16,384 bytes; the read
//!   buffers were 148 of the 204 MB of heap at the peak). servauth speaks HTTP/1.1, as every
//!   client and proxy in front of it does; TLS and HTTP/2 to browsers belong to that proxy.
//! - HTTP/1 reads ahead while a request is handled, to notice a client that hangs up.
//!   Requests run to completion in their own task whether or not the client stays
//!   ([`super::request_id`]), so that notice buys nothing: `half_close` turns it off.
//!
//! It also bounds the requests handled at once. Beyond that many, a request waits before
//! the router sees it, holding only its parsed head (about 1 KiB) instead of the futures of
//! every layer and the handler (about 12 KiB, heaptrack): with 10,000 connections each
//! waiting on an answer, that is the difference between 120 and 20 MB. Waiting is in
//! arrival order (Tokio's semaphore is fair), and health probes never wait, so a stalled
//! database cannot make `/live` look dead.
//!
//! Otherwise this does what `axum::serve` does: the peer's address as `ConnectInfo`, and
//! accept errors such as running out of file descriptors logged and retried after a pause.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How long to wait after an accept error that is not about one connection (e.g. `EMFILE`).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished after the shutdown signal.
    Drained,
    /// `grace` ran out with connections still open; they were dropped.
    GraceExpired,
}

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// After the shutdown signal, how long open connections get to finish.
    pub grace: Duration,
    /// How long a connection may take to send a request's head, waiting idle for the next
    /// one included, before it is closed.
    pub header_timeout: Duration,
    /// Requests handled at once (health probes not counted).
    pub max_in_flight: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets open
/// connections finish their requests (idle ones close at once) and returns when all have
/// closed or the grace has passed. `on_idle` is called once each time no request has come
/// for a while, beside the allocator's own release ([`crate::memory::release_when_idle`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    settings: Settings,
    on_idle: impl FnMut() + Send + 'static,
) -> Stopped {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .half_close(true);
    let in_flight = Arc::new(Semaphore::new(
        settings.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let requests = Arc::new(AtomicU64::new(0));
    let idle_release = tokio::spawn(crate::memory::release_when_idle(requests.clone(), on_idle));
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Responses are written whole; no reason to hold the last segment back.
        let _ = stream.set_nodelay(true);
        let service = peer_service(router.clone(), in_flight.clone(), requests.clone(), peer);
        let watcher = connections.watcher();
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(error) = watcher.watch(connection).await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let stopped = tokio::select! {
        () = connections.shutdown() => Stopped::Drained,
        () = tokio::time::sleep(settings.grace) => Stopped::GraceExpired,
    };
    idle_release.abort();
    stopped
}

/// The router as a hyper service for one connection: the peer's address in each request's
/// extensions (what `into_make_service_with_connect_info` does for `axum::serve`), and a
/// place among the requests in flight before the router is called. Each request is counted
/// in `requests`, which tells [`crate::memory::release_when_idle`] when the server is idle.
fn peer_service(
    router: Router,
    in_flight: Arc<Semaphore>,
    requests: Arc<AtomicU64>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        requests.fetch_add(1, Ordering::Relaxed);
        let router = router.clone();
        let in_flight = in_flight.clone();
        async move {
            // The semaphore is never closed, so a place always comes.
            let _place = if is_probe(request.uri().path()) {
                None
            } else {
                in_flight.acquire_owned().await.ok()
            };
            router.oneshot(request).await
        }
    })
}

/// Health and metrics endpoints: cheap, bounded by their own timeouts, and needed most
/// while other requests queue.
fn is_probe(path: &str) -> bool {
    matches!(path, "/live" | "/ready" | "/health" | "/metrics")
}

/// Errors about one connection that the client gave up on before it was accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
