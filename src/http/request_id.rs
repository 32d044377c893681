//! `X-Request-Id`: the client's own when it is 1–128 chars of `[A-Za-z0-9._-]`, a new UUID
//! otherwise. It is on every response, in every log line of the request (the request span)
//! and in every problem body (read from a task-local, so errors need not carry it).
//!
//! The middleware also runs the rest of the request in a task of its own, so that a client
//! hanging up does not cancel it halfway: a request's work either happens whole or, failing,
//! by its own error path. Besides keeping multi-step work whole, this keeps database
//! connections sound: sqlx 0.9 leaves a PostgreSQL connection inside an open transaction when
//! a future is dropped during `BEGIN` (transact-rs/sqlx#4393, fixed upstream after 0.9.0),
//! and the pool would hand it to the next request.
//!
//! The same task is what lets a request be answered `503 timeout` when it takes longer than
//! `SERVAUTH_REQUEST_TIMEOUT` without cutting its work short: the answer stops waiting for
//! the task, the task runs on to its end (health probes, bounded by their own timeouts, are
//! never cut).

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tracing::Instrument as _;

use super::problem::ApiError;
use crate::app::AppState;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The request's id, for the trace span (set by [`middleware`] before the span is made).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(value: &HeaderValue) -> Option<String> {
    let value = value.to_str().ok()?;
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| value.to_owned())
}

/// Gives the request its id, runs the rest in a task of its own, and answers `503 timeout`
/// when that task has not answered within the request timeout.
pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let deadline =
        (!super::server::is_probe(request.uri().path())).then_some(state.config.request_timeout);
    // Where the request came from, for the audit events its work records.
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let origin = crate::domain::audit::Origin {
        ip: super::extract::client_ip(peer, request.headers(), &state.config.trusted_proxies)
            .map(|ip| ip.to_string()),
        user_agent: request
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(256).collect()),
        request_id: Some(id.clone()),
    };
    let work = CURRENT.scope(id.clone(), origin.scope(next.run(request)));
    let task = tokio::spawn(work.in_current_span());
    let finished = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, task).await,
        None => Ok(task.await),
    };
    let mut response = match finished {
        Ok(Ok(response)) => response,
        // Panics are caught further in; this is a task that could not finish at all.
        Ok(Err(error)) => {
            CURRENT
                .scope(id.clone(), async {
                    ApiError::Internal(anyhow::anyhow!("request task failed: {error}"))
                        .into_response()
                })
                .await
        }
        // Dropping the handle detaches the task: the work goes on.
        Err(_) => {
            tracing::warn!(
                request_id = %id,
                "no answer within SERVAUTH_REQUEST_TIMEOUT; answered 503, the work goes on"
            );
            CURRENT
                .scope(id.clone(), async { ApiError::Timeout.into_response() })
                .await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
