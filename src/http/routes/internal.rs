//! `/api/internal/*`: for the API gateway and other services, behind `X-Service-Auth`. The
//! router mounts these routes only when `SERVAUTH_INTERNAL_SECRET` is set (the OpenAPI
//! document lists them either way).

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use uuid::Uuid;

use super::me::UserView;
use crate::app::Services;
use crate::domain::{AuthError, FieldError};
use crate::http::extract::{PathId, ServiceCredential};
use crate::http::openapi::{
    self, InternalDisabled, InvalidJson, JsonBodyProblems, NotReady, ServiceAuthRefused,
    UserNotFound,
};
use crate::http::{ApiError, ApiJson};
use crate::store::Role;

/// An access token to check.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateRequest {
    #[schema(value_type = String, required = true)]
    token: Option<String>,
}

/// The answer of token introspection, in the shape of RFC 7662.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Introspection {
    Active(ActiveToken),
    Inactive(InactiveToken),
}

/// An access token that verifies and whose session is live.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveToken {
    #[schema(schema_with = always_true)]
    active: bool,
    /// The user's id.
    sub: Uuid,
    /// The session's id.
    sid: Uuid,
    #[schema(value_type = openapi::Role)]
    role: Role,
    email: String,
    /// Whether the user's address is verified (now, not when the token was issued).
    email_verified: bool,
    /// When the user authenticated for this session (the sign-in that opened it), seconds
    /// since the Unix epoch; `0` for a token of an earlier version.
    auth_time: i64,
    /// How the user authenticated (RFC 8176): `["pwd"]` for a password sign-in.
    amr: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    exp: i64,
    /// Issue time, seconds since the Unix epoch.
    iat: i64,
}

/// Any other token (malformed, expired, revoked, …): exactly `{"active": false}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InactiveToken {
    #[schema(schema_with = always_false)]
    active: bool,
}

fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

fn always_false() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
        .build()
}

fn check(services: &Services, credential: &ServiceCredential) -> Result<(), AuthError> {
    match &services.service_secret {
        Some(secret) => secret.check(credential.0.as_deref()),
        // Not reachable: the routes are mounted only with a secret. Refuse all the same.
        None => Err(AuthError::NotFound),
    }
}

/// Validate an access token
///
/// Token introspection for other services: `active: true` with the token's subject for an
/// access token that verifies and whose session is live (revocations included, unlike an
/// offline check against the JWK Set), else exactly `{"active": false}`. Costs a signature
/// check and one indexed lookup, never a password hash. Mounted only when
/// `SERVAUTH_INTERNAL_SECRET` is set.
#[utoipa::path(post, path = "/api/internal/validate", tag = "internal",
    request_body = ValidateRequest,
    security(("service_auth" = [])),
    responses(
        (status = 200, description = "Whether the token is active, and whose it is.", body = Introspection),
        (status = 400, response = InvalidJson),
        (status = 401, response = ServiceAuthRefused),
        (status = 404, response = InternalDisabled),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn validate_token(
    services: Services,
    credential: ServiceCredential,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Introspection>, ApiError> {
    check(&services, &credential)?;
    let token = body
        .token
        .ok_or_else(|| AuthError::Validation(vec![FieldError::required("token")]))?;
    let answer = match services.sessions.authenticate(Some(&token)).await {
        Ok(caller) => Introspection::Active(ActiveToken {
            active: true,
            sub: caller.claims.sub,
            sid: caller.claims.sid,
            role: caller.user.role,
            email: caller.user.email,
            email_verified: caller.user.email_verified,
            auth_time: caller.claims.auth_time,
            amr: caller.claims.amr,
            exp: caller.claims.exp,
            iat: caller.claims.iat,
        }),
        Err(
            AuthError::InvalidToken
            | AuthError::TokenExpired
            | AuthError::MissingCredentials
            | AuthError::EmailNotVerified,
        ) => Introspection::Inactive(InactiveToken { active: false }),
        Err(other) => return Err(other.into()),
    };
    Ok(Json(answer))
}

/// Look up a user
///
/// A user by id, for other services. Mounted only when `SERVAUTH_INTERNAL_SECRET` is set.
#[utoipa::path(get, path = "/api/internal/users/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("service_auth" = [])),
    responses(
        (status = 200, description = "The user.", body = UserView),
        (status = 401, response = ServiceAuthRefused),
        (status = 404, response = UserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn get_user(
    services: Services,
    credential: ServiceCredential,
    PathId(id): PathId,
) -> Result<Json<UserView>, ApiError> {
    check(&services, &credential)?;
    let id = id.ok_or(AuthError::NotFound)?;
    let user = services
        .accounts
        .find(id)
        .await?
        .ok_or(AuthError::NotFound)?;
    Ok(Json(user.into()))
}
