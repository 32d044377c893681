//! The HTTP layer: every route and tower layer, in order ([`router`]); handlers live in
//! `routes/`, the status-code map in `problem.rs`, the frame of the OpenAPI document in
//! `openapi.rs` and the reference page made from it in `reference.rs`.

pub(crate) mod better_auth;
mod extract;
mod openapi;
mod problem;
mod rate_limit;
mod reference;
mod request_id;
mod routes;
mod security_headers;
pub mod server;
mod shed;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::{Extension, Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::{ApiJson, BODY_LIMIT, Bearer};
pub use problem::ApiError;
pub use routes::admin::audit_event_json;

use crate::app::AppState;
use crate::config::Config;
use routes::docs::ApiReference;

/// The whole HTTP surface. Each route is registered with its `#[utoipa::path]`, so the
/// OpenAPI document (`/openapi.json`, `/docs`) is made from the same list and cannot drift.
/// Layers run outside-in in the reverse of the order listed: a request gets its id (and its
/// deadline) first, is then traced, gets its security headers on the way out, CORS answers
/// preflights, a body that did not arrive in time is answered 408, and a panic anywhere
/// inside becomes a 500 problem rather than a dropped connection. Forward-auth alone sits
/// outside CORS (see below).
pub fn router(state: AppState) -> Router {
    use routes::{
        admin, auth, docs, email, health, internal, me, mfa, passkeys, password, sessions,
    };
    let (mut router, mut api) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(auth::create_account))
        .routes(routes!(auth::create_session))
        .routes(routes!(auth::refresh_session))
        .routes(routes!(auth::revoke_current_session))
        .routes(routes!(
            me::get_me,
            me::put_me,
            me::update_me,
            me::delete_me
        ))
        .routes(routes!(password::request_password_reset))
        .routes(routes!(password::reset_password))
        .routes(routes!(password::change_password))
        .routes(routes!(email::verify_email))
        .routes(routes!(email::resend_verification_email))
        .routes(routes!(
            sessions::list_sessions,
            sessions::revoke_all_sessions
        ))
        .routes(routes!(sessions::revoke_session))
        .routes(routes!(mfa::get_factors))
        .routes(routes!(mfa::enroll_totp, mfa::disable_totp))
        .routes(routes!(mfa::confirm_totp))
        .routes(routes!(mfa::regenerate_recovery_codes))
        .routes(routes!(mfa::verify_second_factor))
        .routes(routes!(mfa::start_passkey_second_factor))
        .routes(routes!(mfa::reauthenticate_session))
        .routes(routes!(passkeys::list_passkeys))
        .routes(routes!(passkeys::start_passkey_registration))
        .routes(routes!(passkeys::finish_passkey_registration))
        .routes(routes!(passkeys::rename_passkey, passkeys::delete_passkey))
        .routes(routes!(passkeys::start_passkey_login))
        .routes(routes!(passkeys::finish_passkey_login))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(
            admin::show_user,
            admin::update_user,
            admin::delete_user
        ))
        .routes(routes!(admin::ban_user))
        .routes(routes!(admin::unban_user))
        .routes(routes!(
            admin::list_user_sessions,
            admin::revoke_user_sessions
        ))
        .routes(routes!(admin::revoke_user_session))
        .routes(routes!(admin::send_password_reset))
        .routes(routes!(admin::list_audit_events))
        .routes(routes!(admin::get_outbox))
        .routes(routes!(health::get_jwks))
        .routes(routes!(health::get_health))
        .routes(routes!(health::get_liveness))
        .routes(routes!(health::get_readiness))
        .routes(routes!(health::get_metrics))
        .routes(routes!(docs::get_openapi))
        .routes(routes!(docs::get_docs))
        .split_for_parts();
    // Documented always, served only when a secret is configured.
    let (internal, internal_api) = OpenApiRouter::default()
        .routes(routes!(internal::validate_token))
        .routes(routes!(internal::get_user))
        .split_for_parts();
    api.merge(internal_api);
    // Documented as GET; routed below for every method.
    let (_, authorize_api) = OpenApiRouter::<AppState>::default()
        .routes(routes!(internal::authorize_request))
        .split_for_parts();
    api.merge(authorize_api);
    let face = better_auth::face(&state.config);
    // Forward-auth: every method an app's request may have (a gateway sends the original
    // one, or GET; never TRACE or CONNECT), and for gateways that cannot add a header,
    // mounted on an address allowlist alone.
    use axum::routing::MethodFilter as M;
    let methods = [M::HEAD, M::POST, M::PUT, M::PATCH, M::DELETE, M::OPTIONS]
        .into_iter()
        .fold(M::GET, M::or);
    let forward_auth = axum::routing::on(methods, internal::authorize_request)
        .layer(Extension(internal::GatewayFace(face.clone())));
    if state.config.internal_secret.is_some() {
        router = router.merge(internal);
    }
    // The Better Auth face: outside the OpenAPI document (it is Better Auth's protocol, not
    // servauth's), inside every layer below (rate limit, metrics, limits, timeouts, CORS).
    if let Some(face) = better_auth::router(&state.config, face) {
        router = router.merge(face);
    }
    let app = router
        // Only matched routes: their template (`/auth/sessions/{id}`) is the metric label.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::middleware,
        ))
        .route_layer(middleware::from_fn(crate::metrics::track))
        .layer(Extension(ApiReference::new(&api)))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(catch_panic())
        .layer(middleware::from_fn(server::refuse_timed_out_bodies))
        .layer(cors(&state.config))
        .with_state(state.clone());
    // Forward-auth stands outside CORS, which answers every OPTIONS itself as a preflight:
    // a gateway passing an OPTIONS request on would read that `200` as "authorized". It reads
    // no body, so the body limits have nothing to do there either.
    let mut outer = Router::new();
    if state.config.internal_secret.is_some() || !state.config.forward_auth_allow.is_empty() {
        outer = outer
            .route("/api/internal/authorize", forward_auth)
            .route_layer(middleware::from_fn(crate::metrics::track))
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(catch_panic());
    }
    outer
        .fallback_service(app)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // The response line above has the status; internal errors log their cause at
                // ERROR where they happen, and a 503 under load is no error worth a second line.
                .on_failure(()),
        )
        // Outside the request log, the rate limits and the body: see `shed`.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            shed::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_id::middleware,
        ))
        .with_state(state)
}

/// A panic anywhere inside becomes a 500 problem rather than a dropped connection.
fn catch_panic() -> CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> axum::response::Response> {
    CatchPanicLayer::custom(|_| {
        axum::response::IntoResponse::into_response(ApiError::Internal(anyhow::anyhow!(
            "handler panicked"
        )))
    })
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
            // The Better Auth face's bearer and JWT plugins hand tokens out in these.
            HeaderName::from_static("set-auth-token"),
            HeaderName::from_static("set-auth-jwt"),
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
