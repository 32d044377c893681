//! `/health`, `/live`, `/ready` and the JWK Set.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::{AppState, Services};
use crate::http::openapi::NotReady;
use crate::limits::RedisState;

/// How long `/ready` waits for the database before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Up {
    #[schema(value_type = String, pattern = "^ok$", example = "ok")]
    status: &'static str,
}

const UP: Up = Up { status: "ok" };

/// Whether the server can take traffic, and the state of what it depends on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    status: ReadyStatus,
    database: DependencyStatus,
    redis: DependencyStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyStatus {
    Up,
    Down,
    /// Not configured.
    Disabled,
}

/// The public keys that verify access tokens (RFC 7517). Empty with HS256, whose secret is
/// never published.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the JWK Set that `AccessTokens` builds; never built"
)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// An Ed25519 public key.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the JWK Set that `AccessTokens` builds; never built"
)]
pub struct Jwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    #[schema(rename = "use", example = "sig")]
    key_use: String,
    #[schema(example = "EdDSA")]
    alg: String,
    /// The `kid` of the tokens this key verifies.
    kid: String,
    /// The public key, base64url without padding.
    x: String,
}

/// Health
///
/// The process is up.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Up.", body = Up)))]
pub async fn get_health() -> Json<Up> {
    Json(UP)
}

/// Liveness
///
/// The process answers. No dependency is consulted, so a database outage does not get the
/// process restarted.
#[utoipa::path(get, path = "/live", tag = "health",
    responses((status = 200, description = "Alive.", body = Up)))]
pub async fn get_liveness() -> Json<Up> {
    Json(UP)
}

/// Readiness
///
/// The database answers and start-up (migrations, keys) is done.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic.", body = Readiness),
        (status = 503, description = "Not ready: the database (or a configured Redis) does \
            not answer, or start-up is not done.", body = Readiness),
    ))]
pub async fn get_readiness(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database_up = matches!(
        tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let redis = match state.limits.redis_state() {
        RedisState::Disabled => DependencyStatus::Disabled,
        RedisState::Up => DependencyStatus::Up,
        RedisState::Down => DependencyStatus::Down,
    };
    let redis_ok = !matches!(redis, DependencyStatus::Down);
    let ready = database_up && redis_ok && state.is_initialized();
    let (status, body_status) = if ready {
        (StatusCode::OK, ReadyStatus::Ready)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady)
    };
    let body = Readiness {
        status: body_status,
        database: if database_up {
            DependencyStatus::Up
        } else {
            DependencyStatus::Down
        },
        redis,
    };
    (status, Json(body))
}

/// The JWK Set
///
/// The current and previous public keys that verify access tokens, for services that check
/// tokens offline (they see a revocation only when the token expires). Cacheable for five
/// minutes.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses(
        (status = 200, description = "The public keys.", body = JwkSet),
        (status = 503, response = NotReady),
    ))]
pub async fn get_jwks(services: Services) -> Response {
    let mut response = Json(services.sessions.access_tokens().jwks().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Metrics
///
/// Prometheus text exposition: requests by route and status with latency histograms,
/// logins and registrations by outcome, refresh reuse detections, rate-limit rejections,
/// mail deliveries, the password-hashing queue and the database pool. Meant for the
/// scraper on the internal network; keep it off the public ingress.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format.",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(state.store.as_ref());
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
