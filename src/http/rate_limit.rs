//! The per-client-IP limit on the endpoints an attacker hammers. A route layer: it sees
//! the matched route template, so `//auth/login` or a trailing slash get no fresh quota
//! (they match no route at all).

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::extract::client_ip;
use super::problem::{ApiError, rate_limit_headers};
use crate::app::AppState;
use crate::domain::AuthError;

/// Which quota a request to a route counts against, per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `SERVAUTH_RATE_LIMIT`.
    Default,
    /// `SERVAUTH_REFRESH_RATE_LIMIT`.
    Refresh,
}

/// The routes counted per client IP: method (`None`: any) and route template. Whatever checks
/// a password, mails a link or rotates a token is here; reads such as `GET /auth/me` are not.
const LIMITED: &[(Option<Method>, &str, Limit)] = &[
    (None, "/auth/register", Limit::Default),
    (None, "/auth/login", Limit::Default),
    (None, "/auth/password/forgot", Limit::Default),
    (None, "/auth/password/reset", Limit::Default),
    (None, "/auth/password/change", Limit::Default),
    (None, "/auth/email/verify", Limit::Default),
    (None, "/auth/email/resend", Limit::Default),
    (Some(Method::PUT), "/auth/me", Limit::Default),
    (Some(Method::PATCH), "/auth/me", Limit::Default),
    (Some(Method::DELETE), "/auth/me", Limit::Default),
    (None, "/auth/refresh", Limit::Refresh),
    // Second factors and passkeys: whatever checks a code, a password or an assertion.
    (None, "/auth/reauthenticate", Limit::Default),
    (None, "/auth/mfa/verify", Limit::Default),
    (None, "/auth/mfa/webauthn/options", Limit::Default),
    (None, "/auth/mfa/totp/confirm", Limit::Default),
    (Some(Method::DELETE), "/auth/mfa/totp", Limit::Default),
    (None, "/auth/passkeys/login/options", Limit::Default),
    (None, "/auth/passkeys/login", Limit::Default),
    (None, "/auth/passkeys/registration/options", Limit::Default),
    (None, "/auth/passkeys/registration", Limit::Default),
    // The Better Auth face's counterparts of the routes above.
    (None, "/api/auth/sign-up/email", Limit::Default),
    (None, "/api/auth/sign-in/email", Limit::Default),
    (None, "/api/auth/change-password", Limit::Default),
    (None, "/api/auth/update-user", Limit::Default),
    (None, "/api/auth/request-password-reset", Limit::Default),
    (None, "/api/auth/reset-password", Limit::Default),
    (None, "/api/auth/send-verification-email", Limit::Default),
    (None, "/api/auth/verify-email", Limit::Default),
    (None, "/api/auth/change-email", Limit::Default),
    (None, "/api/auth/delete-user", Limit::Default),
];

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let method = request.method();
    let limited = route.and_then(|route| {
        LIMITED
            .iter()
            .find(|(only, limited, _)| {
                *limited == route && only.as_ref().is_none_or(|only| only == method)
            })
            .map(|(_, route, limit)| (*route, *limit))
    });
    let Some((route, limit)) = limited else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let Some(ip) = client_ip(peer, request.headers(), &state.config.trusted_proxies) else {
        return next.run(request).await;
    };
    // The method is part of the key: `PATCH` and `DELETE /auth/me` have a quota each.
    let key = format!("{method} {route}");
    let decision = match limit {
        Limit::Default => state.limits.hit_ip(&key, ip).await,
        Limit::Refresh => state.limits.hit_ip_refresh(&key, ip).await,
    };
    if !decision.allowed {
        metrics::counter!("servauth_rate_limited_total", "limit" => "per_ip").increment(1);
        tracing::warn!(route, client_ip = %ip, "rate limit reached for a client");
        // Each face answers in its own format (Better Auth's 429 has `X-Retry-After`).
        if route.starts_with("/api/auth/") {
            return super::better_auth::FaceError::from(AuthError::RateLimited(decision))
                .into_response();
        }
        return ApiError::from(AuthError::RateLimited(decision)).into_response();
    }
    let mut response = next.run(request).await;
    if !response.headers().contains_key("ratelimit-limit") {
        rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}
