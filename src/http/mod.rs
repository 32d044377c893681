//! The HTTP layer: every route and tower layer, in order ([`router`]); handlers live in
//! `routes/`, the status-code map in `problem.rs`.

mod extract;
mod problem;
mod request_id;
mod routes;
mod security_headers;

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use extract::{ApiJson, BODY_LIMIT, Bearer};
pub use problem::ApiError;

use crate::app::AppState;

/// The whole HTTP surface. Layers run outside-in in the reverse of the order listed: a
/// request gets its id first, is then traced, gets its security headers on the way out,
/// and a panic anywhere inside becomes a 500 problem rather than a dropped connection.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/register", post(routes::auth::register))
        .route("/auth/login", post(routes::auth::login))
        .route(
            "/auth/me",
            get(routes::me::show)
                .put(routes::me::update)
                .patch(routes::me::update)
                .delete(routes::me::delete),
        )
        .route("/.well-known/jwks.json", get(routes::health::jwks))
        .route("/health", get(routes::health::health))
        .route("/live", get(routes::health::live))
        .route("/ready", get(routes::health::ready))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(anyhow::anyhow!(
                "handler panicked"
            )))
        }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers::middleware,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// The span of one request: method, path without its query (queries may carry tokens) and
/// request id. Headers are left out: they hold cookies and `Authorization`.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<request_id::RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    )
}
