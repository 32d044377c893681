//! `/admin/*`: looking after users and reading the audit log, for an access token whose
//! user has the `admin` role (read from the store on every request, never from the token's
//! claims) or for a service with `X-Service-Auth`.

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::me::UserView;
use crate::app::Services;
use crate::domain::audit::Actor;
use crate::domain::{AuditQuery, AuthError, BanRequest, FieldError, NewAccount, UserQuery};
use crate::http::extract::{PathId, ServiceCredential};
use crate::http::openapi::{
    self, AccountConflict, AdminRefused, AdminUserNotFound, InvalidJson, JsonBodyProblems,
    LastAdmin, NotReady, NotReadyOrOverloaded,
};
use crate::http::{ApiError, ApiJson, Bearer};
use crate::store::{AuditRecord, DeadMessage, Role, SessionRecord, UserRecord};

/// Who is calling: an admin's access token, or a service's `X-Service-Auth`. A request with
/// `X-Service-Auth` is judged by it alone.
async fn actor(
    services: &Services,
    bearer: &Bearer,
    service: &ServiceCredential,
) -> Result<Actor, ApiError> {
    if service.0.is_some() {
        return match &services.service_secret {
            Some(secret) => {
                secret.check(service.0.as_deref())?;
                Ok(Actor::Service)
            }
            None => Err(AuthError::InvalidToken.into()),
        };
    }
    let caller = services.sessions.authenticate(bearer.token()).await?;
    if caller.user.role != Role::Admin {
        return Err(AuthError::Forbidden.into());
    }
    Ok(Actor::Admin(caller.user.id))
}

/// A user as an admin sees it: the user object with its ban.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminUser)]
pub struct AdminUserView {
    #[serde(flatten)]
    user: UserView,
    /// Whether a ban is in force now.
    banned: bool,
    /// The ban's reason, while banned.
    ban_reason: Option<String>,
    /// When the ban ends, while banned; `null`: never.
    ban_expires_at: Option<DateTime<Utc>>,
}

fn admin_view(user: UserRecord, now: DateTime<Utc>) -> AdminUserView {
    let ban = user.ban.clone().filter(|ban| ban.in_force(now));
    AdminUserView {
        banned: ban.is_some(),
        ban_reason: ban.as_ref().and_then(|ban| ban.reason.clone()),
        ban_expires_at: ban.and_then(|ban| ban.expires_at),
        user: UserView::from(user),
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<AdminUserView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// The query's pairs, decoded; the same name twice, an unknown name or a NUL is a field
/// error.
fn query_pairs(
    raw: Option<String>,
    known: &[&str],
) -> Result<Vec<(String, String)>, Vec<FieldError>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&name.as_ref()) {
            // Unknown parameters are ignored, like unknown JSON fields.
            continue;
        }
        if value.contains('\0') {
            errors.push(FieldError::new(
                name.as_ref(),
                "invalid_characters",
                "NUL is not allowed.",
            ));
        } else if pairs.iter().any(|(seen, _)| seen == name.as_ref()) {
            errors.push(FieldError::new(
                name.as_ref(),
                "duplicate",
                format!("`{name}` is given more than once."),
            ));
        } else {
            pairs.push((name.into_owned(), value.into_owned()));
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(errors)
    }
}

fn parse_field<T>(
    field: &str,
    value: &str,
    code: &'static str,
    what: &str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let parsed = parse(value);
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            code,
            format!("`{field}` must be {what}."),
        ));
    }
    parsed
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A cursor is the last id of the previous page, as we handed it out.
fn parse_cursor(value: &str) -> Option<Uuid> {
    Uuid::try_parse(value).ok()
}

fn parse_limit(value: &str) -> Option<u32> {
    value.parse().ok()
}

fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

fn user_query(raw: Option<String>) -> Result<UserQuery, AuthError> {
    let pairs = query_pairs(
        raw,
        &["email", "role", "verified", "banned", "limit", "cursor"],
    )
    .map_err(AuthError::Validation)?;
    let mut query = UserQuery::default();
    let mut errors = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "email" if value.chars().count() > 320 => errors.push(FieldError::new(
                "email",
                "too_long",
                "`email` has at most 320 characters.",
            )),
            "email" => query.email_prefix = Some(value.clone()),
            "role" => {
                query.role = parse_field(
                    "role",
                    value,
                    "invalid_role",
                    "`user` or `admin`",
                    &mut errors,
                    |v| match v {
                        "user" => Some(Role::User),
                        "admin" => Some(Role::Admin),
                        _ => None,
                    },
                );
            }
            "verified" => {
                query.email_verified = parse_field(
                    "verified",
                    value,
                    "invalid_boolean",
                    "`true` or `false`",
                    &mut errors,
                    parse_bool,
                );
            }
            "banned" => {
                query.banned = parse_field(
                    "banned",
                    value,
                    "invalid_boolean",
                    "`true` or `false`",
                    &mut errors,
                    parse_bool,
                );
            }
            "limit" => {
                query.limit = parse_field(
                    "limit",
                    value,
                    "out_of_range",
                    "a number from 1 to 200",
                    &mut errors,
                    parse_limit,
                );
            }
            _ => {
                query.after = parse_field(
                    "cursor",
                    value,
                    "invalid_cursor",
                    "a `next_cursor` of this API",
                    &mut errors,
                    parse_cursor,
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(AuthError::Validation(errors))
    }
}

fn audit_query(raw: Option<String>) -> Result<AuditQuery, AuthError> {
    let pairs = query_pairs(raw, &["user", "event", "since", "until", "limit", "cursor"])
        .map_err(AuthError::Validation)?;
    let mut query = AuditQuery::default();
    let mut errors = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "user" => {
                query.user_id =
                    parse_field("user", value, "invalid_id", "a user id", &mut errors, |v| {
                        Uuid::try_parse(v).ok()
                    });
            }
            "event" => {
                query.event = parse_field(
                    "event",
                    value,
                    "invalid_event",
                    "an event type",
                    &mut errors,
                    |v| {
                        crate::domain::audit::EventType::from_name(v)
                            .map(|event| event.name().to_owned())
                    },
                );
            }
            "since" => {
                query.since = parse_field(
                    "since",
                    value,
                    "invalid_time",
                    "an RFC 3339 time",
                    &mut errors,
                    parse_time,
                );
            }
            "until" => {
                query.until = parse_field(
                    "until",
                    value,
                    "invalid_time",
                    "an RFC 3339 time",
                    &mut errors,
                    parse_time,
                );
            }
            "limit" => {
                query.limit = parse_field(
                    "limit",
                    value,
                    "out_of_range",
                    "a number from 1 to 200",
                    &mut errors,
                    parse_limit,
                );
            }
            _ => {
                query.before = parse_field(
                    "cursor",
                    value,
                    "invalid_cursor",
                    "a `next_cursor` of this API",
                    &mut errors,
                    parse_cursor,
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(AuthError::Validation(errors))
    }
}

/// List users
///
/// Users in creation order, filtered by an email prefix, role, verification and ban, one
/// page at a time (`next_cursor`).
#[utoipa::path(get, path = "/admin/users", tag = "admin",
    params(
        ("email" = Option<String>, Query, description = "Users whose address starts with this (compared case-insensitively; `%` and `_` are plain characters)."),
        ("role" = Option<String>, Query, description = "`user` or `admin`."),
        ("verified" = Option<bool>, Query, description = "Whether the address is verified."),
        ("banned" = Option<bool>, Query, description = "Whether a ban is in force."),
        ("limit" = Option<u32>, Query, description = "1 to 200 (default 50)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
    ),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "A page of users.", body = UserPage),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 422, response = openapi::ValidationFailed),
        (status = 503, response = NotReady),
    ))]
pub async fn list_users(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    RawQuery(raw): RawQuery,
) -> Result<Json<UserPage>, ApiError> {
    actor(&services, &bearer, &service).await?;
    let page = services.admin.list_users(user_query(raw)?).await?;
    let now = services.sessions.now();
    Ok(Json(UserPage {
        users: page
            .items
            .into_iter()
            .map(|user| admin_view(user, now))
            .collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// An account to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    #[schema(value_type = String, required = true, format = Password)]
    password: Option<SecretString>,
    name: Option<String>,
    #[schema(value_type = Option<openapi::Role>)]
    role: Option<Role>,
    /// `true`: no verification mail is sent.
    email_verified: Option<bool>,
}

/// Create a user
///
/// An account with the registration rules (address, password policy), with a role and
/// whether the address counts as verified.
#[utoipa::path(post, path = "/admin/users", tag = "admin",
    request_body = CreateUserRequest,
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 201, description = "The account.", body = AdminUserView),
        (status = 400, response = InvalidJson),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 409, response = AccountConflict),
        JsonBodyProblems,
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn create_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<AdminUserView>), ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    let user = services
        .admin
        .create_user(
            actor,
            NewAccount {
                email: body.email,
                password: body.password,
                name: body.name,
                role: body.role,
                email_verified: body.email_verified,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(admin_view(user, services.sessions.now())),
    ))
}

fn user_id(id: PathId) -> Result<Uuid, ApiError> {
    id.0.ok_or_else(|| AuthError::NotFound.into())
}

/// Get a user
///
/// One user, with its ban.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The user.", body = AdminUserView),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn show_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<Json<AdminUserView>, ApiError> {
    actor(&services, &bearer, &service).await?;
    let user = services.admin.user(user_id(id)?).await?;
    Ok(Json(admin_view(user, services.sessions.now())))
}

/// What an admin may change on a user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUserRequest {
    #[schema(value_type = Option<openapi::Role>)]
    role: Option<Role>,
    email_verified: Option<bool>,
    /// `null` removes the display name.
    #[serde(default, deserialize_with = "super::me::present")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
}

/// Update a user
///
/// Sets the role, `email_verified` or the display name (an absent field is left as it is).
/// Demoting the last admin who can sign in is `409 last_admin`.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = UpdateUserRequest,
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The user.", body = AdminUserView),
        (status = 400, response = InvalidJson),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 409, response = LastAdmin),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn update_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    let user = services
        .admin
        .update_user(
            actor,
            user_id(id)?,
            body.role,
            body.email_verified,
            body.name,
        )
        .await?;
    Ok(Json(admin_view(user, services.sessions.now())))
}

/// Delete a user
///
/// Deletes the account with every session. The last admin who can sign in is `409
/// last_admin`.
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 409, response = LastAdmin),
        (status = 503, response = NotReady),
    ))]
pub async fn delete_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    services.admin.delete(actor, user_id(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A ban.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BanUserRequest {
    /// Why (kept with the ban and in the audit log; at most 500 characters).
    reason: Option<String>,
    /// When the ban ends (RFC 3339, in the future); absent: never.
    expires_at: Option<DateTime<Utc>>,
}

/// Ban a user
///
/// The user cannot sign in on any face (`403 account_banned`) until the ban ends or is
/// lifted, and every session ends at once. The last admin who can sign in is `409
/// last_admin`.
#[utoipa::path(post, path = "/admin/users/{id}/ban", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = BanUserRequest,
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The user, banned.", body = AdminUserView),
        (status = 400, response = InvalidJson),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 409, response = LastAdmin),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn ban_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
    ApiJson(body): ApiJson<BanUserRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    let user = services
        .admin
        .ban(
            actor,
            user_id(id)?,
            BanRequest {
                reason: body.reason,
                expires_at: body.expires_at,
            },
        )
        .await?;
    Ok(Json(admin_view(user, services.sessions.now())))
}

/// Lift a ban
///
/// The user may sign in again (an expired ban is cleared too).
#[utoipa::path(post, path = "/admin/users/{id}/unban", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The user, not banned.", body = AdminUserView),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn unban_user(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<Json<AdminUserView>, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    let user = services.admin.unban(actor, user_id(id)?).await?;
    Ok(Json(admin_view(user, services.sessions.now())))
}

/// A user's live sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSessionList {
    sessions: Vec<AdminSessionView>,
}

/// One session, as an admin sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminSession)]
pub struct AdminSessionView {
    id: Uuid,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// How the user authenticated (RFC 8176).
    amr: Vec<String>,
}

impl From<SessionRecord> for AdminSessionView {
    fn from(session: SessionRecord) -> Self {
        Self {
            id: session.id,
            user_agent: session.user_agent,
            ip: session.ip,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
            amr: session.amr,
        }
    }
}

/// List a user's sessions
///
/// The user's live sessions, newest first, with how each was authenticated.
#[utoipa::path(get, path = "/admin/users/{id}/sessions", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The live sessions, newest first.", body = AdminSessionList),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn list_user_sessions(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<Json<AdminSessionList>, ApiError> {
    actor(&services, &bearer, &service).await?;
    let sessions = services.admin.sessions(user_id(id)?).await?;
    Ok(Json(AdminSessionList {
        sessions: sessions.into_iter().map(AdminSessionView::from).collect(),
    }))
}

/// Revoke every session of a user
///
/// Signs the user out everywhere (and ends a pending email change, as signing out
/// everywhere does).
#[utoipa::path(delete, path = "/admin/users/{id}/sessions", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 204, description = "Every session is revoked."),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn revoke_user_sessions(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    services.admin.revoke_sessions(actor, user_id(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `{id}` and `{session_id}` of a path, when they are UUIDs.
#[derive(Debug, Deserialize)]
pub struct UserSession {
    id: String,
    session_id: String,
}

/// Revoke one session of a user
///
/// Ends one session of the user; another user's session id or an unknown one is `404`.
#[utoipa::path(delete, path = "/admin/users/{id}/sessions/{session_id}", tag = "admin",
    params(
        ("id" = Uuid, Path, description = "The user's id."),
        ("session_id" = Uuid, Path, description = "The session's id."),
    ),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 204, description = "The session is revoked."),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn revoke_user_session(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    path: Result<axum::extract::Path<UserSession>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    let ids = path.ok().and_then(|axum::extract::Path(path)| {
        Some((
            Uuid::try_parse(&path.id).ok()?,
            Uuid::try_parse(&path.session_id).ok()?,
        ))
    });
    let (id, session) = ids.ok_or(AuthError::NotFound)?;
    services.admin.revoke_session(actor, id, session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a password-reset link
///
/// Mails the user a reset link, within the link-mail limit (as forgot-password does).
#[utoipa::path(post, path = "/admin/users/{id}/password-reset", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 202, description = "The link is on its way (unless the link-mail limit held it back)."),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 404, response = AdminUserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn send_password_reset(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    id: PathId,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&services, &bearer, &service).await?;
    services
        .admin
        .send_password_reset(actor, user_id(id)?)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditEventView {
    id: Uuid,
    at: DateTime<Utc>,
    /// The event type, e.g. `user.signed_in`.
    event: String,
    /// The user the event is about.
    user_id: Option<Uuid>,
    /// `user`, `admin`, `service`, `system` or `anonymous`.
    actor: String,
    /// The acting user or admin.
    actor_id: Option<Uuid>,
    session_id: Option<Uuid>,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    /// Named facts of the event (e.g. `reason` of a failed sign-in); never a secret.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<AuditRecord> for AuditEventView {
    fn from(record: AuditRecord) -> Self {
        let detail = record
            .detail
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        Self {
            id: record.id,
            at: record.at,
            event: record.event,
            user_id: record.user_id,
            actor: record.actor,
            actor_id: record.actor_id,
            session_id: record.session_id,
            ip: record.ip,
            user_agent: record.user_agent,
            request_id: record.request_id,
            detail,
        }
    }
}

/// One event as JSON, the way `GET /admin/audit` shows it (for `servauth audit export`).
pub fn audit_event_json(record: AuditRecord) -> serde_json::Value {
    serde_json::to_value(AuditEventView::from(record)).unwrap_or(serde_json::Value::Null)
}

/// A page of audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last.
    next_cursor: Option<String>,
}

/// Read the audit log
///
/// Auth events, newest first, filtered by user, event type and time, one page at a time.
#[utoipa::path(get, path = "/admin/audit", tag = "admin",
    params(
        ("user" = Option<Uuid>, Query, description = "The user the events are about."),
        ("event" = Option<String>, Query, description = "One event type, e.g. `user.signed_in`."),
        ("since" = Option<DateTime<Utc>>, Query, description = "From this time on (RFC 3339, inclusive)."),
        ("until" = Option<DateTime<Utc>>, Query, description = "Before this time (RFC 3339, exclusive)."),
        ("limit" = Option<u32>, Query, description = "1 to 200 (default 50)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
    ),
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "A page of events.", body = AuditPage),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 422, response = openapi::ValidationFailed),
        (status = 503, response = NotReady),
    ))]
pub async fn list_audit_events(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    actor(&services, &bearer, &service).await?;
    let page = services.admin.audit_events(audit_query(raw)?).await?;
    Ok(Json(AuditPage {
        events: page.items.into_iter().map(AuditEventView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_queries_are_field_errors() {
        assert!(user_query(Some("cursor=%27%20OR%201%3D1".into())).is_err());
        assert!(user_query(Some("email=a%00b".into())).is_err());
        assert!(user_query(Some("limit=1&limit=2".into())).is_err());
        assert!(user_query(Some("role=root".into())).is_err());
        assert!(audit_query(Some("since=yesterday".into())).is_err());
        assert!(audit_query(Some("event=user.hacked".into())).is_err());
        let query = user_query(Some("email=ad%25a&verified=true&other=1".into()));
        assert!(
            matches!(query, Ok(UserQuery { email_prefix: Some(ref p), email_verified: Some(true), .. }) if p == "ad%a")
        );
    }
}

/// The outbox: how many messages wait, how many were given up on, and the newest of those.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxView {
    /// Messages not yet delivered (due now or waiting for a retry).
    pending: u64,
    /// Messages given up on after every attempt.
    dead: u64,
    /// The newest 50 dead messages (never their content).
    dead_messages: Vec<DeadMessageView>,
}

/// A message given up on.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeadMessage)]
pub struct DeadMessageView {
    id: Uuid,
    /// `mail`.
    kind: String,
    attempts: i64,
    /// What the last attempt met.
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    dead_at: DateTime<Utc>,
}

impl From<DeadMessage> for DeadMessageView {
    fn from(message: DeadMessage) -> Self {
        Self {
            id: message.id,
            kind: message.kind,
            attempts: message.attempts,
            last_error: message.last_error,
            created_at: message.created_at,
            dead_at: message.dead_at,
        }
    }
}

/// Read the outbox
///
/// Mail waiting for delivery and the messages given up on (the dead letters), newest first.
#[utoipa::path(get, path = "/admin/outbox", tag = "admin",
    security(("bearer" = []), ("service_auth" = [])),
    responses(
        (status = 200, description = "The outbox.", body = OutboxView),
        (status = 401, response = openapi::AccessTokenRefused),
        (status = 403, response = AdminRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn get_outbox(
    services: Services,
    bearer: Bearer,
    service: ServiceCredential,
) -> Result<Json<OutboxView>, ApiError> {
    actor(&services, &bearer, &service).await?;
    let (counts, dead) = services.admin.outbox().await?;
    Ok(Json(OutboxView {
        pending: counts.pending,
        dead: counts.dead,
        dead_messages: dead.into_iter().map(DeadMessageView::from).collect(),
    }))
}
