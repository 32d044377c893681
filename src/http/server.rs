//! The accept loop: hyper serving the router, with the connection settings chosen here.
//!
//! `axum::serve` fixes hyper's settings, and three of its choices cost an auth server that
//! holds thousands of keep-alive connections:
//! - It sets no timer, so hyper's header read timeout never runs: a client could hold a
//!   connection open forever by sending half a request.
//! - It sniffs each connection for HTTP/2 and hands hyper's HTTP/1 parser the 24 bytes read
//!   for that first, so the parser's 8 KiB read buffer is regrown to 16 KiB on every
//!   connection (heaptrack: 10,022 allocations of 16,384 bytes for 10,000 connections, a
//!   third of the heap). servauth speaks HTTP/1.1, as every client and proxy in front of it
//!   does; TLS and HTTP/2 to browsers belong to that proxy.
//! - HTTP/1 reads ahead while a request is handled, to notice a client that hangs up.
//!   Requests run to completion in their own task whether or not the client stays
//!   ([`super::request_id`]), so that notice buys nothing: `half_close` turns it off.
//!
//! Otherwise this does what `axum::serve` does: the peer's address as `ConnectInfo`, and
//! accept errors such as running out of file descriptors logged and retried after a pause.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
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

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets open
/// connections finish their requests (idle ones close at once) and returns when all have
/// closed or `grace` has passed. A connection that takes longer than `header_timeout` to
/// send a request's head (waiting idle for the next one included) is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    header_timeout: Duration,
) -> Stopped {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true);
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
        let service = peer_service(router.clone(), peer);
        let watcher = connections.watcher();
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(error) = watcher.watch(connection).await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => Stopped::Drained,
        () = tokio::time::sleep(grace) => Stopped::GraceExpired,
    }
}

/// The router as a hyper service for one connection, with the peer's address in each
/// request's extensions (what `into_make_service_with_connect_info` does for `axum::serve`).
fn peer_service(
    router: Router,
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
        router.clone().oneshot(request)
    })
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
