//! `/health`, `/live`, `/ready` and the JWK Set.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{AppState, Services};

/// How long `/ready` waits for the database before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Liveness: the process answers (no dependency is consulted, so a database outage does not
/// get the process restarted).
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and start-up (migrations, keys) is done.
pub async fn ready(State(state): State<AppState>) -> Response {
    let database_up = matches!(
        tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let ready = database_up && state.is_initialized();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": if database_up { "up" } else { "down" },
        "redis": "disabled",
    });
    (status, Json(body)).into_response()
}

/// The public keys that verify access tokens; cacheable for a few minutes.
pub async fn jwks(services: Services) -> Response {
    let mut response = Json(services.sessions.access_tokens().jwks().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
