//! `/api/internal/*`: for the API gateway and other services, behind `X-Service-Auth`. The
//! router mounts these routes only when `SERVAUTH_INTERNAL_SECRET` is set.

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::me::UserView;
use crate::app::Services;
use crate::domain::{AuthError, FieldError};
use crate::http::extract::{PathId, ServiceCredential};
use crate::http::{ApiError, ApiJson};

#[derive(Debug, Deserialize)]
pub struct ValidateRequest {
    token: Option<String>,
}

fn check(services: &Services, credential: &ServiceCredential) -> Result<(), AuthError> {
    match &services.service_secret {
        Some(secret) => secret.check(credential.0.as_deref()),
        // Not reachable: the routes are mounted only with a secret. Refuse all the same.
        None => Err(AuthError::NotFound),
    }
}

/// Token introspection in the shape of RFC 7662: `{active:true, sub, sid, role, email, exp,
/// iat}` for an access token that verifies and whose session is live, else exactly
/// `{active:false}`. Costs a signature check and one indexed lookup, never a password hash.
pub async fn validate(
    services: Services,
    credential: ServiceCredential,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Value>, ApiError> {
    check(&services, &credential)?;
    let token = body
        .token
        .ok_or_else(|| AuthError::Validation(vec![FieldError::required("token")]))?;
    let answer = match services.sessions.authenticate(Some(&token)).await {
        Ok(caller) => json!({
            "active": true,
            "sub": caller.claims.sub,
            "sid": caller.claims.sid,
            "role": caller.user.role,
            "email": caller.user.email,
            "exp": caller.claims.exp,
            "iat": caller.claims.iat,
        }),
        Err(AuthError::InvalidToken | AuthError::TokenExpired | AuthError::MissingCredentials) => {
            json!({ "active": false })
        }
        Err(other) => return Err(other.into()),
    };
    Ok(Json(answer))
}

/// A user by id, for other services; 404 when there is none.
pub async fn user(
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
