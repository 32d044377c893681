//! The HTTP layer: every route and tower layer, in order ([`router`]); handlers live in
//! `routes/`, the status-code map in `problem.rs`.

mod extract;
mod problem;
mod request_id;
mod routes;
mod security_headers;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{delete, get, post};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use extract::{ApiJson, BODY_LIMIT, Bearer};
pub use problem::ApiError;

use crate::app::AppState;
use crate::config::Config;

/// The whole HTTP surface. Layers run outside-in in the reverse of the order listed: a
/// request gets its id first, is then traced, gets its security headers on the way out,
/// CORS answers preflights, and a panic anywhere inside becomes a 500 problem rather than a
/// dropped connection.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/auth/register", post(routes::auth::register))
        .route("/auth/login", post(routes::auth::login))
        .route("/auth/refresh", post(routes::auth::refresh))
        .route("/auth/logout", post(routes::auth::logout))
        .route(
            "/auth/me",
            get(routes::me::show)
                .put(routes::me::update)
                .patch(routes::me::update)
                .delete(routes::me::delete),
        )
        .route(
            "/auth/sessions",
            get(routes::sessions::list).delete(routes::sessions::revoke_all),
        )
        .route("/auth/sessions/{id}", delete(routes::sessions::revoke))
        .route("/auth/password/forgot", post(routes::password::forgot))
        .route("/auth/password/reset", post(routes::password::reset))
        .route("/auth/password/change", post(routes::password::change))
        .route("/auth/email/verify", post(routes::email::verify))
        .route("/auth/email/resend", post(routes::email::resend))
        .route("/.well-known/jwks.json", get(routes::health::jwks))
        .route("/health", get(routes::health::health))
        .route("/live", get(routes::health::live))
        .route("/ready", get(routes::health::ready));
    if state.config.internal_secret.is_some() {
        router = router
            .route("/api/internal/validate", post(routes::internal::validate))
            .route("/api/internal/users/{id}", get(routes::internal::user));
    }
    router
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(anyhow::anyhow!(
                "handler panicked"
            )))
        }))
        .layer(cors(&state.config))
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

/// CORS for the browser origins of `SERVAUTH_CORS_ORIGINS`: exactly those get
/// `Access-Control-Allow-Origin` (with credentials, and `Vary: Origin`); preflights allow the
/// methods and headers the contract uses. With no origins configured no response carries
/// CORS headers, and browsers keep other origins out.
fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    let listed = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            listed.contains(origin)
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-csrf-token"),
            HeaderName::from_static(request_id::HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(request_id::HEADER),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(std::time::Duration::from_secs(600))
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
