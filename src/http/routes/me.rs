//! `GET/PUT/PATCH/DELETE /auth/me`: the signed-in user's own account.

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::Services;
use crate::domain::ProfileUpdate;
use crate::http::openapi::{
    self, AccessTokenRefused, AccountConflict, EmailNotVerified, InvalidJson, JsonBodyProblems,
    NotReady, NotReadyOrOverloaded, PasswordRefused, RateLimited,
};
use crate::http::{ApiError, ApiJson, Bearer};
use crate::store::{Role, UserRecord};

/// A user account. Never holds the password hash or a token.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    id: Uuid,
    /// As given at registration (or by a confirmed change).
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(example = "ada")]
    username: Option<String>,
    /// The display name; `null` when unset.
    #[schema(example = "Ada Lovelace")]
    name: Option<String>,
    /// The picture's URL (absolute, `http` or `https`); `null` when unset.
    image: Option<String>,
    email_verified: bool,
    #[schema(value_type = openapi::Role)]
    role: Role,
    /// The new address of an email change that awaits confirmation; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pending_email: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// `GET /auth/me` only: the account's second factors (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    mfa: Option<crate::domain::FactorSummary>,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            name: user.name,
            image: user.image,
            email_verified: user.email_verified,
            role: user.role,
            pending_email: user.pending_email,
            created_at: user.created_at,
            updated_at: user.updated_at,
            mfa: None,
        }
    }
}

/// Changes to the profile; an absent field is left as it is.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    /// Absent: unchanged; `null`: removed; a string: set (3 to 32 of `A-Z a-z 0-9 _ . -`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z0-9_.-]{3,32}$")]
    username: Option<Option<String>>,
    /// A new address: needs `current_password`; it becomes `pending_email` until the link
    /// mailed to it is used (`POST /auth/email/verify`).
    email: Option<String>,
    /// Needed to change `email`.
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<SecretString>,
    /// Absent: unchanged; `null`: removed; a string: set (1 to 100 characters after
    /// trimming, no control characters).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100)]
    name: Option<Option<String>>,
    /// Absent: unchanged; `null`: removed; a string: set (an absolute `http`/`https` URL of
    /// at most 2048 characters).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    image: Option<Option<String>>,
}

/// The password, to confirm the deletion.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteMeRequest {
    #[schema(value_type = String, required = true, format = Password)]
    password: Option<SecretString>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, via `default`).
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The signed-in user
///
/// The account of the access token's user, `pending_email` included while an email change
/// awaits confirmation, and `mfa`: which second factors it has.
#[utoipa::path(get, path = "/auth/me", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account, with `mfa`.", body = UserView),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = EmailNotVerified),
        (status = 503, response = NotReady),
    ))]
pub async fn get_me(services: Services, bearer: Bearer) -> Result<Json<UserView>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let mfa = services
        .accounts
        .factor_summary_for_display(caller.user.id)
        .await?;
    Ok(Json(UserView {
        mfa: Some(mfa),
        ..caller.user.into()
    }))
}

/// Update the profile
///
/// Sets or removes the username, the display name or the picture URL, or starts an email change: the account then shows
/// `pending_email`, a confirmation link goes to the new address and a notice to the old one,
/// and the address changes only when the link is used.
#[utoipa::path(patch, path = "/auth/me", tag = "account",
    request_body(content = ref("#/components/schemas/UpdateMeRequest"),
        description = "Optional: no body changes nothing."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated account.", body = UserView),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = PasswordRefused),
        (status = 409, response = AccountConflict),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn update_me(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserView>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let update = ProfileUpdate {
        username: body.username,
        email: body.email,
        current_password: body.current_password,
        name: body.name,
        image: body.image,
    };
    let user = services.accounts.update_profile(&caller, update).await?;
    Ok(Json(user.into()))
}

/// Update the profile (PUT)
///
/// The same as `PATCH /auth/me`: an absent field is left as it is.
#[utoipa::path(put, path = "/auth/me", tag = "account",
    request_body(content = ref("#/components/schemas/UpdateMeRequest"),
        description = "Optional: no body changes nothing."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated account.", body = UserView),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = PasswordRefused),
        (status = 409, response = AccountConflict),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn put_me(
    services: Services,
    bearer: Bearer,
    body: ApiJson<UpdateMeRequest>,
) -> Result<Json<UserView>, ApiError> {
    update_me(services, bearer, body).await
}

/// Delete the account
///
/// Deletes the account and every session; the email address can register again.
#[utoipa::path(delete, path = "/auth/me", tag = "account",
    request_body = DeleteMeRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The account is gone."),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = PasswordRefused),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn delete_me(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<DeleteMeRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services.accounts.delete(&caller, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
