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

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tracing::Instrument as _;

use super::problem::ApiError;

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

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let work = CURRENT.scope(id.clone(), next.run(request));
    let mut response = match tokio::spawn(work.in_current_span()).await {
        Ok(response) => response,
        // Panics are caught further in; this is a task that could not finish at all.
        Err(error) => {
            CURRENT
                .scope(id.clone(), async {
                    ApiError::Internal(anyhow::anyhow!("request task failed: {error}"))
                        .into_response()
                })
                .await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
