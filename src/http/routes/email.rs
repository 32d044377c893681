//! `POST /auth/email/verify`, `POST /auth/email/resend`.

use axum::Json;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::password::Accepted;
use crate::app::Services;
use crate::http::openapi::{
    AccessTokenRefused, EmailTaken, InvalidJson, InvalidJsonOrLinkToken, JsonBodyProblems,
    NotReady, RateLimited,
};
use crate::http::{ApiError, ApiJson, Bearer};

/// The token of a verification or email-change link.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The `token` of the link's query.
    #[schema(value_type = String, required = true)]
    token: Option<String>,
}

/// An address to send a fresh verification link to (clients without a session).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ResendRequest {
    #[schema(value_type = Option<String>, example = "ada@example.com")]
    email: Option<String>,
}

/// Verify an email address
///
/// With the token of a verification link, marks the address verified; with the token of an
/// email-change link, replaces the address by the new one (then verified) and ends every
/// session of the account but the one whose access token is sent along, if any. Each token
/// works once, for `SERVAUTH_VERIFY_TTL` (24 hours).
#[utoipa::path(post, path = "/auth/email/verify", tag = "account",
    request_body = VerifyRequest,
    security((), ("bearer" = [])),
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
    bearer: Bearer,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    // The link is the credential here; an access token only says which session to keep,
    // and one that does not check out keeps none.
    let keep = match bearer.token() {
        Some(token) => services
            .sessions
            .authenticate_any(Some(token))
            .await
            .ok()
            .map(|caller| caller.session_id()),
        None => None,
    };
    services.accounts.verify_email(body.token, keep).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a new verification email
///
/// With an access token: mails a fresh verification link to the caller's address (none when
/// it is already verified); no body. Without one (an unverified user has no session while
/// verified emails are required): `{"email": ...}`, answered `202` at once and alike whether
/// or not an unverified account has that address. At most 3 link emails go to one address
/// per 15 minutes.
#[utoipa::path(post, path = "/auth/email/resend", tag = "account",
    request_body(content = ref("#/components/schemas/ResendRequest"),
        description = "Without an access token only."),
    security(("bearer" = []), ()),
    responses(
        (status = 202, description = "Accepted; the email is on its way.", body = Accepted),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn resend_verification_email(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<ResendRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    if bearer.token().is_some() {
        let caller = services.sessions.authenticate_any(bearer.token()).await?;
        services.accounts.resend_verification(&caller).await?;
    } else {
        services.accounts.resend_verification_to(body.email)?;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted::new(None))))
}
