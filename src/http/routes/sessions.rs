//! `GET /auth/sessions`, `DELETE /auth/sessions/{id}`, `DELETE /auth/sessions`.

use axum::Json;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::Services;
use crate::domain::AuthError;
use crate::http::extract::PathId;
use crate::http::openapi::{AccessTokenRefused, NotReady, SessionNotFound};
use crate::http::{ApiError, Bearer};

/// The caller's live sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// One device's session, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    id: Uuid,
    /// The session of the access token that asked.
    current: bool,
    /// The `User-Agent` that opened the session (at most 256 characters).
    user_agent: Option<String>,
    /// The client address that opened the session.
    ip: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// List the sessions
///
/// The caller's live sessions, one per device (register opens one, like login).
#[utoipa::path(get, path = "/auth/sessions", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The live sessions.", body = SessionList),
        (status = 401, response = AccessTokenRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn list_sessions(
    services: Services,
    bearer: Bearer,
) -> Result<Json<SessionList>, ApiError> {
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

/// Revoke a session
///
/// Ends one of the caller's sessions (signs that device out). Another user's id, an unknown
/// id and a malformed id all answer `404` alike.
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The session is revoked."),
        (status = 401, response = AccessTokenRefused),
        (status = 404, response = SessionNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn revoke_session(
    services: Services,
    bearer: Bearer,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate_any(bearer.token()).await?;
    let id = id.ok_or(AuthError::NotFound)?;
    services.sessions.revoke(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every session
///
/// Signs the caller out everywhere, this session included.
#[utoipa::path(delete, path = "/auth/sessions", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the caller is revoked."),
        (status = 401, response = AccessTokenRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn revoke_all_sessions(
    services: Services,
    bearer: Bearer,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate_any(bearer.token()).await?;
    services.sessions.revoke_all(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
