//! `ApiError` → `application/problem+json` (RFC 9457): the only place a status code is chosen.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;
use crate::domain::{AuthError, FieldError};

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A use case refused (validation, credentials, conflicts, overload, …).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `400`: the body is not JSON (or not UTF-8).
    #[error("invalid json")]
    InvalidJson,
    /// `415`: a body without `Content-Type: application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// `413`: a body over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// `404`: no route has this path.
    #[error("no such route")]
    RouteNotFound,
    /// `405`: the route exists, the method does not (the router adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `408`: the body did not arrive whole within `SERVAUTH_BODY_TIMEOUT`; the connection
    /// is closed after the answer.
    #[error("request body timed out")]
    RequestTimeout,
    /// `503`: no answer within `SERVAUTH_REQUEST_TIMEOUT` (the work goes on to its end).
    #[error("request timed out")]
    Timeout,
    /// `503`: the server is still connecting to its database at start.
    #[error("not ready")]
    NotReady,
    /// `403`: a forward-auth caller that is no known gateway.
    #[error("gateway refused")]
    GatewayRefused,
    /// `500`: something unexpected; logged here, never described to the client.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// An RFC 9457 problem detail (`application/problem+json`): what every failed request gets.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank", "title": "Unauthorized", "status": 401,
    "code": "invalid_credentials", "detail": "Email or password is incorrect.",
    "request_id": "0190b0a4-5b6e-7c3d-8e9f-0a1b2c3d4e5f"
}))]
pub struct Problem<'a> {
    /// Always `about:blank`: `code` says what went wrong.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The reason phrase of `status`.
    title: &'a str,
    /// The HTTP status code of the response.
    status: u16,
    /// Stable, machine-readable, snake_case: what clients branch on.
    code: &'static str,
    /// For people; may change wording.
    detail: &'a str,
    /// Present on `422 validation_failed`: every rule the request breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<ProblemFieldError>, nullable = false)]
    errors: Option<&'a [FieldError]>,
    /// The request's `X-Request-Id`, for support and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    request_id: Option<String>,
}

/// One rule a field of the request breaks (the documented shape of `FieldError`).
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[expect(
    dead_code,
    reason = "documents the shape of `domain::FieldError`; never built"
)]
pub struct ProblemFieldError {
    /// The field, as a JSON path (`email`, `user.name`); empty for the body as a whole.
    field: String,
    /// Stable, snake_case: `required`, `invalid_type`, `invalid_email`, `password_too_short`, ….
    code: String,
    /// For people.
    message: String,
}

/// What `WWW-Authenticate` a 401 carries.
enum Challenge {
    None,
    Bearer,
    InvalidToken,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Challenge) {
        use AuthError as A;
        match self {
            Self::Auth(error) => match error {
                A::Validation(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "The request has invalid fields.",
                    Challenge::None,
                ),
                A::InvalidCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "Email or password is incorrect.",
                    Challenge::Bearer,
                ),
                A::WrongPassword => (
                    StatusCode::FORBIDDEN,
                    "invalid_credentials",
                    "The password is incorrect.",
                    Challenge::None,
                ),
                A::EmailTaken => (
                    StatusCode::CONFLICT,
                    "email_taken",
                    "An account with this email already exists.",
                    Challenge::None,
                ),
                A::UsernameTaken => (
                    StatusCode::CONFLICT,
                    "username_taken",
                    "This username is taken.",
                    Challenge::None,
                ),
                A::MissingCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "missing_credentials",
                    "Authentication is required.",
                    Challenge::Bearer,
                ),
                A::InvalidToken => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "The token is invalid or has been revoked.",
                    Challenge::InvalidToken,
                ),
                A::EmailNotVerified => (
                    StatusCode::FORBIDDEN,
                    "email_not_verified",
                    "Confirm your email address before signing in.",
                    Challenge::None,
                ),
                A::UnusableLinkToken => (
                    StatusCode::BAD_REQUEST,
                    "invalid_token",
                    "This link is invalid, already used or expired.",
                    Challenge::None,
                ),
                A::RefreshTokenReused => (
                    StatusCode::UNAUTHORIZED,
                    "refresh_token_reused",
                    "This refresh token was already used; the session has been ended.",
                    Challenge::InvalidToken,
                ),
                A::CsrfFailed => (
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "The CSRF token is missing or wrong, or the request came from another origin.",
                    Challenge::None,
                ),
                A::TokenExpired => (
                    StatusCode::UNAUTHORIZED,
                    "token_expired",
                    "The access token has expired.",
                    Challenge::InvalidToken,
                ),
                A::RateLimited(_) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests. Retry after the time in Retry-After.",
                    Challenge::None,
                ),
                A::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "The server is busy. Retry shortly.",
                    Challenge::None,
                ),
                A::NotFound => (
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Not found.",
                    Challenge::None,
                ),
                A::InvalidCode => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_code",
                    "The code is wrong, already used or expired.",
                    Challenge::None,
                ),
                A::WrongCode => (
                    StatusCode::FORBIDDEN,
                    "invalid_code",
                    "The code is wrong, already used or expired.",
                    Challenge::None,
                ),
                A::InvalidMfaToken => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_mfa_token",
                    "This sign-in challenge is unknown, used or expired, or came from another \
                     client. Sign in again.",
                    Challenge::None,
                ),
                A::ReauthenticationRequired => (
                    StatusCode::FORBIDDEN,
                    "reauthentication_required",
                    "This change needs a recent sign-in: re-authenticate (POST \
                     /auth/reauthenticate), with your second factor if you have one, and retry.",
                    Challenge::None,
                ),
                A::FactorConflict(code, detail) => {
                    (StatusCode::CONFLICT, *code, *detail, Challenge::None)
                }
                A::WebauthnFailed => (
                    StatusCode::BAD_REQUEST,
                    "webauthn_failed",
                    "The passkey response did not verify.",
                    Challenge::None,
                ),
                A::InvalidCeremony => (
                    StatusCode::BAD_REQUEST,
                    "invalid_ceremony",
                    "This passkey ceremony is unknown, used or expired. Start again.",
                    Challenge::None,
                ),
                A::AccountBanned => (
                    StatusCode::FORBIDDEN,
                    "account_banned",
                    "This account is banned.",
                    Challenge::None,
                ),
                A::Forbidden => (
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "This needs an admin.",
                    Challenge::None,
                ),
                A::LastAdmin => (
                    StatusCode::CONFLICT,
                    "last_admin",
                    "This would leave no admin who can sign in.",
                    Challenge::None,
                ),
                A::PasskeysUnavailable => (
                    StatusCode::NOT_FOUND,
                    "passkeys_unavailable",
                    "Passkeys are not configured on this server.",
                    Challenge::None,
                ),
                A::Internal(_) => internal(),
            },
            Self::InvalidJson => (
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The body is not valid JSON.",
                Challenge::None,
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with `Content-Type: application/json`.",
                Challenge::None,
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The body is larger than 64 KiB.",
                Challenge::None,
            ),
            Self::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "There is nothing at this path.",
                Challenge::None,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This path does not accept this method.",
                Challenge::None,
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time.",
                Challenge::None,
            ),
            Self::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "The server did not answer in time; what the request started still completes. \
                 Check before retrying a change.",
                Challenge::None,
            ),
            Self::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "The server is starting. Retry shortly.",
                Challenge::None,
            ),
            Self::GatewayRefused => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forward-auth needs X-Service-Auth or a gateway address in \
                 SERVAUTH_FORWARD_AUTH_ALLOW.",
                Challenge::None,
            ),
            Self::Internal(_) => internal(),
        }
    }
}

fn internal() -> (StatusCode, &'static str, &'static str, Challenge) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Something went wrong on our side.",
        Challenge::None,
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail, challenge) = self.parts();
        if let Self::Internal(error) | Self::Auth(AuthError::Internal(error)) = &self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let errors = match &self {
            Self::Auth(AuthError::Validation(errors)) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail,
            errors,
            request_id: request_id::current(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match challenge {
            Challenge::None => {}
            Challenge::Bearer => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Challenge::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
        }
        if let Self::Auth(AuthError::RateLimited(decision)) = &self {
            rate_limit_headers(headers, decision);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RequestTimeout = self {
            // The rest of the body may still be on its way: the connection cannot carry
            // another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up), and
/// `Retry-After` when the request was refused (never earlier than the reset).
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, decision: &crate::limits::Decision) {
    let reset = decision.reset.as_secs() + u64::from(decision.reset.subsec_nanos() > 0);
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
    if !decision.allowed {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(reset.max(1)));
    }
}
