//! `/auth/passkeys/...`: registering, listing, renaming and deleting passkeys, and signing
//! in with one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::signed_in;
use crate::app::Services;
use crate::domain::{ClientKind, ClientMeta, PasskeyCeremony, PasskeyView};
use crate::http::extract::PathId;
use crate::http::openapi::{
    self, AccessTokenRefused, EmailNotVerified, FactorConflict, InvalidJson, JsonBodyProblems,
    NotReady, PasskeyNotFound, PasskeyRefused, RateLimited, StepUpRequired,
};
use crate::http::{ApiError, ApiJson, Bearer};

/// A WebAuthn ceremony just started.
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyBody {
    /// Send it back with the authenticator's answer (single use, `expires_in` seconds).
    ceremony_token: String,
    /// `{"publicKey": {...}}` in WebAuthn's JSON form: pass `publicKey` to
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` (registration) or
    /// `parseRequestOptionsFromJSON` (sign-in).
    #[schema(value_type = Object)]
    options: serde_json::Value,
    expires_in: i64,
}

impl From<PasskeyCeremony> for CeremonyBody {
    fn from(ceremony: PasskeyCeremony) -> Self {
        Self {
            ceremony_token: ceremony.token,
            options: ceremony.options,
            expires_in: ceremony.expires_in,
        }
    }
}

/// The authenticator's answer to a registration.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterPasskeyRequest {
    #[schema(value_type = String, required = true)]
    ceremony_token: Option<String>,
    /// The new credential (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object, required = true)]
    credential: Option<serde_json::Value>,
    /// 1 to 64 characters; default `Passkey`.
    #[schema(example = "Laptop")]
    name: Option<String>,
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RenamePasskeyRequest {
    #[schema(value_type = String, required = true, example = "Phone")]
    name: Option<String>,
}

/// The authenticator's answer to a sign-in, and how the client keeps its session.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeyLoginRequest {
    #[schema(value_type = String, required = true)]
    ceremony_token: Option<String>,
    /// The assertion (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object, required = true)]
    credential: Option<serde_json::Value>,
    /// `browser` (the default) or `native`.
    #[schema(value_type = Option<openapi::ClientKind>)]
    client: Option<ClientKind>,
}

/// The caller's passkeys
///
/// Each with its name, when it was registered and last used, and whether it may be synced
/// (never key material).
#[utoipa::path(get, path = "/auth/passkeys", tag = "passkeys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's passkeys, oldest first.", body = [PasskeyView]),
        (status = 401, response = AccessTokenRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn list_passkeys(
    services: Services,
    bearer: Bearer,
) -> Result<Json<Vec<PasskeyView>>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    Ok(Json(services.accounts.list_passkeys(caller.user.id).await?))
}

/// Start registering a passkey
///
/// The options for `navigator.credentials.create()`: a discoverable credential with user
/// verification, excluding the caller's passkeys. Needs a recent authentication.
#[utoipa::path(post, path = "/auth/passkeys/registration/options", tag = "passkeys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ceremony.", body = CeremonyBody),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 404, response = PasskeyNotFound),
        (status = 409, response = FactorConflict),
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn start_passkey_registration(
    services: Services,
    meta: ClientMeta,
    bearer: Bearer,
) -> Result<Json<CeremonyBody>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let ceremony = services
        .accounts
        .start_passkey_registration(&caller, meta.ip)
        .await?;
    Ok(Json(ceremony.into()))
}

/// Finish registering a passkey
///
/// With the authenticator's answer: the passkey signs in to this account from now on, alone
/// or as the second factor of a password sign-in.
#[utoipa::path(post, path = "/auth/passkeys/registration", tag = "passkeys",
    request_body = RegisterPasskeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new passkey.", body = PasskeyView),
        (status = 400, response = PasskeyRefused),
        (status = 401, response = AccessTokenRefused),
        (status = 404, response = PasskeyNotFound),
        (status = 409, response = FactorConflict),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn finish_passkey_registration(
    services: Services,
    meta: ClientMeta,
    bearer: Bearer,
    ApiJson(body): ApiJson<RegisterPasskeyRequest>,
) -> Result<Response, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let passkey = services
        .accounts
        .finish_passkey_registration(
            &caller,
            body.ceremony_token.as_deref(),
            body.credential,
            body.name,
            meta.ip,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(passkey)).into_response())
}

/// Rename a passkey
///
/// Gives one of the caller's passkeys a new name (1 to 64 characters).
#[utoipa::path(patch, path = "/auth/passkeys/{id}", tag = "passkeys",
    params(("id" = uuid::Uuid, Path, description = "The passkey's id.")),
    request_body = RenamePasskeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The renamed passkey.", body = PasskeyView),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 404, response = PasskeyNotFound),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn rename_passkey(
    services: Services,
    bearer: Bearer,
    PathId(id): PathId,
    ApiJson(body): ApiJson<RenamePasskeyRequest>,
) -> Result<Json<PasskeyView>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let id = id.ok_or(crate::domain::AuthError::NotFound)?;
    Ok(Json(
        services
            .accounts
            .rename_passkey(&caller, id, body.name)
            .await?,
    ))
}

/// Delete a passkey
///
/// Needs a recent authentication with a second factor.
#[utoipa::path(delete, path = "/auth/passkeys/{id}", tag = "passkeys",
    params(("id" = uuid::Uuid, Path, description = "The passkey's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The passkey is gone."),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 404, response = PasskeyNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn delete_passkey(
    services: Services,
    bearer: Bearer,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let id = id.ok_or(crate::domain::AuthError::NotFound)?;
    services.accounts.delete_passkey(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a passkey sign-in
///
/// The options for `navigator.credentials.get()`: any passkey of this site, with user
/// verification; no email needed.
#[utoipa::path(post, path = "/auth/passkeys/login/options", tag = "passkeys",
    responses(
        (status = 200, description = "The ceremony.", body = CeremonyBody),
        (status = 404, response = PasskeyNotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn start_passkey_login(
    services: Services,
    meta: ClientMeta,
) -> Result<Json<CeremonyBody>, ApiError> {
    let ceremony = services.accounts.start_passkey_login(meta.ip).await?;
    Ok(Json(ceremony.into()))
}

/// Sign in with a passkey
///
/// With the authenticator's assertion: opens a session as login does. Its tokens say
/// `amr: ["hwk"|"swk", "mfa"]` (a passkey with user verification is two factors).
#[utoipa::path(post, path = "/auth/passkeys/login", tag = "passkeys",
    request_body = PasskeyLoginRequest,
    responses(
        (status = 200, description = "A new session (a browser also gets the cookies).", body = super::auth::SessionBody,
            headers(("Set-Cookie" = String, description = "Browser clients: the refresh, CSRF and device cookies."))),
        (status = 400, response = PasskeyRefused),
        (status = 403, response = EmailNotVerified),
        (status = 404, response = PasskeyNotFound),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn finish_passkey_login(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<PasskeyLoginRequest>,
) -> Result<Response, ApiError> {
    let kind = body.client.unwrap_or_default();
    let login = services
        .accounts
        .finish_passkey_login(body.ceremony_token.as_deref(), body.credential, meta.ip)
        .await?;
    let issued = services
        .sessions
        .open_as(&login.user, None, kind, meta, &login.amr)
        .await?;
    Ok(signed_in(&services, kind, login.user, issued))
}
