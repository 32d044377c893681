//! `GET/PUT/PATCH/DELETE /auth/me`: the signed-in user's own account.

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::app::Services;
use crate::domain::ProfileUpdate;
use crate::http::{ApiError, ApiJson, Bearer};
use crate::store::{Role, UserRecord};

/// The user object of the contract. Never holds the password hash or a token.
#[derive(Debug, Serialize)]
pub struct UserView {
    id: Uuid,
    email: String,
    username: Option<String>,
    email_verified: bool,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_email: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            email_verified: user.email_verified,
            role: user.role,
            pending_email: user.pending_email,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct UpdateMeRequest {
    /// Absent: unchanged; `null`: removed; a string: set.
    #[serde(default, deserialize_with = "present")]
    username: Option<Option<String>>,
    email: Option<String>,
    current_password: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteMeRequest {
    password: Option<SecretString>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, via `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub async fn show(services: Services, bearer: Bearer) -> Result<Json<UserView>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    Ok(Json(caller.user.into()))
}

pub async fn update(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserView>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let update = ProfileUpdate {
        username: body.username,
        email: body.email,
        current_password: body.current_password,
    };
    let user = services
        .accounts
        .update_profile(&caller.user, update)
        .await?;
    Ok(Json(user.into()))
}

pub async fn delete(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<DeleteMeRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services
        .accounts
        .delete(&caller.user, body.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
