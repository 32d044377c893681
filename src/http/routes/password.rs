//! `POST /auth/password/forgot`, `/auth/password/reset`, `/auth/password/change`.

use axum::Json;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::Services;
use crate::http::openapi::{
    AccessTokenRefused, InvalidJson, InvalidJsonOrLinkToken, JsonBodyProblems, NotReady,
    NotReadyOrOverloaded, PasswordRefused, RateLimited,
};
use crate::http::{ApiError, ApiJson, Bearer};

/// The address to send a reset link to.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotRequest {
    #[schema(value_type = String, required = true, example = "ada@example.com")]
    email: Option<String>,
}

/// The token of a reset link and the new password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    /// The `token` of the link's query.
    #[schema(value_type = String, required = true)]
    token: Option<String>,
    /// The new password, under the same rules as at registration.
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128, format = Password)]
    password: Option<SecretString>,
}

/// The current password and the new one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeRequest {
    #[schema(value_type = String, required = true, format = Password)]
    current_password: Option<SecretString>,
    /// Under the same rules as at registration.
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128, format = Password)]
    new_password: Option<SecretString>,
}

/// The answer of a request whose effect happens in the background (an email).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(value_type = String, pattern = "^accepted$", example = "accepted")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    detail: Option<&'static str>,
}

impl Accepted {
    pub const fn new(detail: Option<&'static str>) -> Self {
        Self {
            status: "accepted",
            detail,
        }
    }
}

/// Ask for a password-reset link
///
/// The same `202`, just as fast, whether or not the address has an account; when it has
/// one, a single-use link valid for `SERVAUTH_RESET_TTL` (30 minutes) is emailed to it.
#[utoipa::path(post, path = "/auth/password/forgot", tag = "account",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "Accepted; a link is on its way if the account exists.", body = Accepted),
        (status = 400, response = InvalidJson),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn request_password_reset(
    services: Services,
    ApiJson(body): ApiJson<ForgotRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    services.accounts.forgot_password(body.email)?;
    let detail = "If an account has this address, a link to reset its password is on its way.";
    Ok((StatusCode::ACCEPTED, Json(Accepted::new(Some(detail)))))
}

/// Reset the password
///
/// With the token of a reset link: sets the new password and revokes every session. The
/// token works once; a password the policy rejects gets `422` and leaves it usable.
#[utoipa::path(post, path = "/auth/password/reset", tag = "account",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "The password is changed; every session is revoked."),
        (status = 400, response = InvalidJsonOrLinkToken),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn reset_password(
    services: Services,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    services
        .accounts
        .reset_password(body.token, body.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password
///
/// Needs the current password; revokes every other session.
#[utoipa::path(post, path = "/auth/password/change", tag = "account",
    request_body = ChangeRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The password is changed; the other sessions are revoked."),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = PasswordRefused),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn change_password(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services
        .accounts
        .change_password(&caller, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
