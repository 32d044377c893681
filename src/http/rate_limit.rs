//! The per-client-IP limit on the endpoints an attacker hammers. A route layer: it sees
//! the matched route template, so `//auth/login` or a trailing slash get no fresh quota
//! (they match no route at all).

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::extract::client_ip;
use super::problem::{ApiError, rate_limit_headers};
use crate::app::AppState;
use crate::domain::AuthError;

/// The routes counted per client IP (`SERVAUTH_RATE_LIMIT` each).
const LIMITED: &[&str] = &[
    "/auth/register",
    "/auth/login",
    "/auth/password/forgot",
    "/auth/password/reset",
    "/auth/email/verify",
];

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let Some(route) = route
        .filter(|route| LIMITED.contains(route))
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let Some(ip) = client_ip(peer, request.headers(), &state.config.trusted_proxies) else {
        return next.run(request).await;
    };
    let decision = state.limits.hit_ip(&route, ip).await;
    if !decision.allowed {
        metrics::counter!("servauth_rate_limited_total", "limit" => "per_ip").increment(1);
        tracing::warn!(route, "rate limit reached for a client");
        return ApiError::from(AuthError::RateLimited(decision)).into_response();
    }
    let mut response = next.run(request).await;
    if !response.headers().contains_key("ratelimit-limit") {
        rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}
