//! `POST /auth/email/verify`, `POST /auth/email/resend`.

use axum::Json;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::password::Accepted;
use crate::app::Services;
use crate::http::openapi::{
    AccessTokenRefused, EmailTaken, InvalidJsonOrLinkToken, JsonBodyProblems, NotReady, RateLimited,
};
use crate::http::{ApiError, ApiJson, Bearer};

/// The token of a verification or email-change link.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The `token` of the link's query.
    #[schema(value_type = String, required = true)]
    token: Option<String>,
}

/// Verify an email address
///
/// With the token of a verification link, marks the address verified; with the token of an
/// email-change link, replaces the address by the new one (then verified). Each token works
/// once, for `SERVAUTH_VERIFY_TTL` (24 hours).
#[utoipa::path(post, path = "/auth/email/verify", tag = "account",
    request_body = VerifyRequest,
    responses(
        (status = 204, description = "The address is verified (or changed)."),
        (status = 400, response = InvalidJsonOrLinkToken),
        (status = 409, response = EmailTaken),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn verify_email(
    services: Services,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    services.accounts.verify_email(body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a new verification email
///
/// Mails a fresh verification link to the caller's address (none when it is already
/// verified). Takes no body.
#[utoipa::path(post, path = "/auth/email/resend", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the email is on its way.", body = Accepted),
        (status = 401, response = AccessTokenRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn resend_verification_email(
    services: Services,
    bearer: Bearer,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services.accounts.resend_verification(&caller).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted::new(None))))
}
