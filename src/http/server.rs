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
//! Before a request takes its place, its body is read whole (up to one byte past the body
//! limit, so the router's `413` still answers an oversized one), within
//! `SERVAUTH_BODY_TIMEOUT`: a client trickling a body holds its connection, never a place,
//! and one that has not sent it all in time is marked [`BodyTimedOut`], which the router
//! answers `408` (with the request id, like every problem) and closes the connection.
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
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::BODY_LIMIT;

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
    /// How long a request's whole body may take to arrive.
    pub body_timeout: Duration,
}

/// In the extensions of a request whose body did not arrive whole within the body timeout;
/// its body is then empty. The router answers it `408 request_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimedOut;

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
        let service = peer_service(
            router.clone(),
            in_flight.clone(),
            requests.clone(),
            peer,
            settings.body_timeout,
        );
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
    body_timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        requests.fetch_add(1, Ordering::Relaxed);
        let router = router.clone();
        let in_flight = in_flight.clone();
        async move {
            let mut request = read_body(request, body_timeout).await;
            request.extensions_mut().insert(ConnectInfo(peer));
            // A timed-out request is answered at once: it needs no place. The semaphore is
            // never closed, so a place always comes.
            let _place = if is_probe(request.uri().path())
                || request.extensions().get::<BodyTimedOut>().is_some()
            {
                None
            } else {
                in_flight.acquire_owned().await.ok()
            };
            router.oneshot(request).await
        }
    })
}

/// The request with its body read into memory within `timeout`: at most one byte past
/// [`BODY_LIMIT`] of it (enough for the router to answer `413`), or, when the client
/// failed while sending it, what came before and then that error (the router answers as it
/// would have). A body announced as too large by its `Content-Length` is not read: the
/// router refuses it from the header alone.
async fn read_body(request: hyper::Request<Incoming>, timeout: Duration) -> hyper::Request<Body> {
    let (mut parts, incoming) = request.into_parts();
    if hyper::body::Body::is_end_stream(&incoming)
        || hyper::body::Body::size_hint(&incoming)
            .lower()
            .try_into()
            .is_ok_and(|lower: usize| lower > BODY_LIMIT)
    {
        return hyper::Request::from_parts(parts, Body::new(incoming));
    }
    let mut stream = Body::new(incoming).into_data_stream();
    let mut read = Vec::new();
    let collect = async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    read.extend_from_slice(&chunk);
                    if read.len() > BODY_LIMIT {
                        read.truncate(BODY_LIMIT + 1);
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    };
    let body = match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(())) => Body::from(read),
        Ok(Err(error)) => {
            let frames = [Ok(Bytes::from(read)), Err(error)];
            Body::from_stream(futures::stream::iter(frames))
        }
        Err(_) => {
            parts.extensions.insert(BodyTimedOut);
            Body::empty()
        }
    };
    hyper::Request::from_parts(parts, body)
}

/// The router's answer to a request marked [`BodyTimedOut`]: `408 request_timeout` (which
/// closes the connection), before any handler sees its empty body.
pub async fn refuse_timed_out_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.extensions().get::<BodyTimedOut>().is_some() {
        return axum::response::IntoResponse::into_response(super::ApiError::RequestTimeout);
    }
    next.run(request).await
}

/// Health and metrics endpoints: cheap, bounded by their own timeouts, and needed most
/// while other requests queue.
pub(super) fn is_probe(path: &str) -> bool {
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
