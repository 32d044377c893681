//! Cheap refusals under a storm of sign-ins. When the password-hashing pool has no place
//! left, a sign-in or sign-up (REST or Better Auth face) is held [`HOLD`] on a timer, which
//! costs no CPU, and answered `503 overloaded` with `Retry-After` at once if the pool is
//! still full, before the request is logged, rate-counted or parsed. A client that ignores
//! `Retry-After` and sends again at once then gets at most one answer per connection every
//! few milliseconds, each a few microseconds of work, and the hashing threads keep the
//! cores: goodput stays near the pool's limit however hard it pushes.
//!
//! These refusals are not logged one by one (a storm would be thousands of lines a
//! second): they are counted in `servauth_requests_shed_total` and summed up in one warning
//! at most every [`REPORT_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::better_auth::FaceError;
use super::problem::ApiError;
use crate::app::AppState;
use crate::domain::AuthError;

/// How long a sign-in waits for a place before it is refused (within the 5 ms a refusal may
/// take at p99).
const HOLD: Duration = Duration::from_millis(2);

/// How often the refusals are summed up in the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The routes whose every request hashes a password: what a storm of sign-ins hits.
fn hashes(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/auth/login"
                | "/auth/register"
                | "/api/auth/sign-in/email"
                | "/api/auth/sign-up/email"
        )
}

/// Refusals since the last report, and when that was (milliseconds since `EPOCH`).
static SHED: AtomicU64 = AtomicU64::new(0);
static REPORTED_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let full = || {
        state
            .services()
            .is_some_and(|s| s.accounts.hashing_is_full())
    };
    let path = request.uri().path();
    if hashes(request.method(), path) && full() {
        let face = path.starts_with("/api/auth/");
        tokio::time::sleep(HOLD).await;
        if full() {
            count();
            // Each face answers in its own error shape.
            return if face {
                FaceError::Auth(AuthError::Overloaded).into_response()
            } else {
                ApiError::Auth(AuthError::Overloaded).into_response()
            };
        }
    }
    next.run(request).await
}

fn count() {
    metrics::counter!("servauth_requests_shed_total").increment(1);
    let shed = SHED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
    let last = REPORTED_AT.load(Ordering::Relaxed);
    let every = u64::try_from(REPORT_EVERY.as_millis()).unwrap_or(u64::MAX);
    if now.saturating_sub(last) >= every
        && REPORTED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SHED.fetch_sub(shed, Ordering::Relaxed);
        tracing::warn!(
            refused = shed,
            "sign-ins refused with 503 overloaded: the password-hashing pool is full"
        );
    }
}
