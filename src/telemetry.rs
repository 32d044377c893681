//! Logging: JSON lines through `tracing`, one line per request (see `http::router`).
//! Passwords, tokens, cookies and the `Authorization` header are never recorded: request
//! logs carry the method, the path without its query, the status and the latency only.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber. Lines are formatted where they are logged and
/// written to stdout by a thread of their own (in batches, not one write per line, and never
/// on the threads that answer requests or hash passwords); none is dropped: when that
/// thread falls 128k lines behind, loggers wait. Keep the guard until the process ends: its
/// drop writes what is left. Safe to call more than once (later calls install nothing and
/// return `None`).
pub fn init(filter: &str) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("servauth-log")
        .finish(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init()
        .ok()
        .map(|()| guard)
}

/// Runs blocking work (password hashing) on tokio's blocking pool inside the caller's span,
/// so its log lines keep the request id.
pub async fn spawn_blocking_in_span<F, R>(work: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work)).await
}
