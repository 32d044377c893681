//! `GET /auth/sessions`, `DELETE /auth/sessions/{id}`, `DELETE /auth/sessions`.

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::app::Services;
use crate::domain::AuthError;
use crate::http::extract::PathId;
use crate::http::{ApiError, Bearer};

#[derive(Debug, Serialize)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// One device's session, as its owner sees it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    id: Uuid,
    /// The session of the access token that asked.
    current: bool,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

pub async fn list(services: Services, bearer: Bearer) -> Result<Json<SessionList>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let sessions = services.sessions.list(&caller).await?;
    let sessions = sessions
        .into_iter()
        .map(|session| SessionView {
            current: session.id == caller.session_id(),
            id: session.id,
            user_agent: session.user_agent,
            ip: session.ip,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Revokes one of the caller's sessions. Another user's id, an unknown id and a malformed id
/// all answer 404 alike.
pub async fn revoke(
    services: Services,
    bearer: Bearer,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let id = id.ok_or(AuthError::NotFound)?;
    services.sessions.revoke(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Logout everywhere.
pub async fn revoke_all(services: Services, bearer: Bearer) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services.sessions.revoke_all(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
