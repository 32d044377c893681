//! `POST /auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::me::UserView;
use crate::app::Services;
use crate::config::{Config, SameSitePolicy};
use crate::domain::{
    AuthError, ClientKind, ClientMeta, DEVICE_TOKEN_TTL, IssuedSession, LoginAttempt,
    PresentedRefresh, Registration,
};
use crate::http::extract::RefreshCookie;
use crate::http::openapi::{
    self, AccountConflict, CsrfFailed, EmailNotVerified, InvalidJson, JsonBodyProblems,
    LoginRefused, LogoutRefused, NotReady, NotReadyOrOverloaded, RateLimited, RefreshForbidden,
    RefreshRefused,
};
use crate::http::{ApiError, ApiJson, Bearer};
use crate::store::UserRecord;

/// Name of the HttpOnly cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "servauth_refresh";
/// Name of the script-readable cookie holding the CSRF token.
pub const CSRF_COOKIE: &str = "servauth_csrf";
/// Name of the HttpOnly cookie holding a browser's device token.
pub const DEVICE_COOKIE: &str = "servauth_device";

/// A new account: the credentials to sign in with, and how the client keeps its session.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// Trimmed; one `@`, a domain with a dot, at most 254 characters. Unique, compared
    /// case-insensitively; stored as given.
    #[schema(value_type = String, required = true, example = "ada@example.com")]
    email: Option<String>,
    /// 15 (`SERVAUTH_PASSWORD_MIN_LENGTH`, at least 8) to 128 characters after NFKC
    /// normalization; not a common password, not the email or its local part.
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128, format = Password,
        example = "correct horse battery staple")]
    password: Option<SecretString>,
    /// Optional; 3 to 32 of `A-Z a-z 0-9 _ . -`, unique case-insensitively.
    #[schema(pattern = r"^[A-Za-z0-9_.-]{3,32}$", example = "ada")]
    username: Option<String>,
    /// `browser` (the default) or `native`.
    #[schema(value_type = Option<openapi::ClientKind>)]
    client: Option<ClientKind>,
}

/// Credentials, and how the client keeps its session.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(value_type = String, required = true, example = "ada@example.com")]
    email: Option<String>,
    #[schema(value_type = String, required = true, format = Password,
        example = "correct horse battery staple")]
    password: Option<SecretString>,
    /// `browser` (the default) or `native`.
    #[schema(value_type = Option<openapi::ClientKind>)]
    client: Option<ClientKind>,
    /// Native clients: the `device_token` of an earlier login or registration of this
    /// account. Failed logins of other clients never throttle a device that presents one.
    /// Browsers send theirs as the `servauth_device` cookie.
    #[schema(value_type = Option<String>)]
    device_token: Option<SecretString>,
}

/// A native client's refresh token (browsers send none: theirs is in the cookie).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The `refresh_token` of the last login, register or refresh answer (native clients).
    #[schema(value_type = Option<String>)]
    refresh_token: Option<SecretString>,
}

/// The body of a register, login or refresh answer: a browser gets `csrf_token` (and the
/// refresh token as a cookie), a native client `refresh_token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    /// The account (register and login only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    user: Option<UserView>,
    /// A JWT, sent back as `Authorization: Bearer <access_token>`.
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$", example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    expires_in: i64,
    /// Browser clients: the value to send as `X-CSRF-Token` with the refresh cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    csrf_token: Option<String>,
    /// Native clients: the refresh token (single use: every refresh rotates it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// Native clients, register and login only: keep it and send it with later logins as
    /// `device_token` (valid 90 days). Browsers get it as the `servauth_device` cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    device_token: Option<String>,
}

/// What a login answers: a session, or (with a second factor enrolled) a challenge.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    /// The new session.
    #[expect(dead_code, reason = "documents the answer `session_response` builds")]
    Session(Box<SessionBody>),
    /// The account has a second factor: complete the sign-in with it.
    MfaRequired(super::mfa::MfaRequired),
}

/// The answer of a registration while verified emails are required: the account, and no
/// session until the address is verified.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingVerification {
    user: UserView,
    /// Always `true`: sign in once the link mailed to the address has been used.
    #[schema(value_type = bool, pattern = "^true$")]
    verification_required: bool,
}

/// What a registration answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Registered {
    /// The account and its first session.
    #[expect(
        dead_code,
        reason = "documents the answer that `session_response` builds with its cookies"
    )]
    Session(SessionBody),
    /// With `SERVAUTH_REQUIRE_VERIFIED_EMAIL=true`: the account only.
    PendingVerification(PendingVerification),
}

/// Create an account
///
/// Opens a session at once, like login, and emails a link to verify the address. While
/// verified emails are required (`SERVAUTH_REQUIRE_VERIFIED_EMAIL=true`) it opens none: the
/// answer is the account with `verification_required: true`, and login works once the
/// address is verified.
#[utoipa::path(post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account and its first session (or, while verified \
            emails are required, the account alone). A browser client with a session also gets \
            the `servauth_refresh`, `servauth_csrf` and `servauth_device` cookies.", body = Registered,
            headers(("Set-Cookie" = String, description = "Browser clients: the refresh, CSRF and device cookies."))),
        (status = 400, response = InvalidJson),
        (status = 409, response = AccountConflict),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn create_account(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let kind = body.client.unwrap_or_default();
    let registration = Registration {
        email: body.email,
        password: body.password,
        username: body.username,
        ..Registration::default()
    };
    let user = services.accounts.register(registration).await?;
    if services.accounts.requires_verified_email() {
        let body = Registered::PendingVerification(PendingVerification {
            user: user.into(),
            verification_required: true,
        });
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let issued = services.sessions.open(&user, None, kind, meta).await?;
    let response = signed_in(&services, kind, user, issued);
    Ok((StatusCode::CREATED, response).into_response())
}

/// Sign in
///
/// Opens a session for a device. A wrong email and a wrong password get the same answer.
/// A client that signed in to this account before may send the device token it got then
/// (native: `device_token`; browsers: the `servauth_device` cookie): then only its own failed
/// attempts count towards the throttle, never other clients'.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session (a browser client also gets the \
            `servauth_refresh`, `servauth_csrf` and `servauth_device` cookies); or, when the \
            account has a second factor, the challenge to complete with it at \
            `POST /auth/mfa/verify` (no session yet).", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "Browser clients: the refresh, CSRF and device cookies."))),
        (status = 400, response = InvalidJson),
        (status = 401, response = LoginRefused),
        (status = 403, response = EmailNotVerified),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn create_session(
    services: Services,
    meta: ClientMeta,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret as _;
    let kind = body.client.unwrap_or_default();
    let device_token = body
        .device_token
        .map(|token| token.expose_secret().to_owned())
        .or_else(|| {
            jar.get(DEVICE_COOKIE)
                .map(|cookie| cookie.value().to_owned())
        });
    let attempt = LoginAttempt {
        email: body.email,
        password: body.password,
        device_token: device_token.clone(),
        ip: meta.ip,
    };
    let login = services.accounts.login(attempt).await?;
    let device = services
        .accounts
        .device_id(device_token.as_deref(), login.user.id);
    if let Some(challenge) = services
        .accounts
        .second_factor_challenge(&login.user, &login.password_hash, kind, device, meta.ip)
        .await?
    {
        return Ok(Json(LoginAnswer::MfaRequired(challenge.into())).into_response());
    }
    let issued = services
        .sessions
        .open(&login.user, Some(login.password_hash), kind, meta)
        .await?;
    Ok(signed_in(&services, kind, login.user, issued))
}

/// Refresh the access token
///
/// Rotates the refresh token: a browser sends the cookie with `X-CSRF-Token` and no body, a
/// native client `{"refresh_token": "..."}`. A refresh token already rotated out revokes its
/// whole session, except within `SERVAUTH_REFRESH_REUSE_GRACE` (10 s) of its rotation, when it
/// gets the same answer again.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    request_body(content = ref("#/components/schemas/RefreshRequest"),
        description = "Native clients only; a browser sends no body."),
    security(("refresh_cookie" = [], "csrf_token" = []), ()),
    responses(
        (status = 200, description = "A new access token and the next refresh token (a browser \
            gets it as a cookie, with a new CSRF token).", body = SessionBody,
            headers(("Set-Cookie" = String, description = "Browser clients: the rotated refresh and CSRF cookies."))),
        (status = 400, response = InvalidJson),
        (status = 401, response = RefreshRefused),
        (status = 403, response = RefreshForbidden),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn refresh_session(
    services: Services,
    cookie: RefreshCookie,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = presented_refresh(body.refresh_token.as_ref(), &cookie)?;
    let kind = match presented {
        PresentedRefresh::Native(_) => ClientKind::Native,
        PresentedRefresh::Browser { .. } => ClientKind::Browser,
    };
    let issued = services.sessions.refresh(presented).await?;
    Ok(session_response(&services.config, kind, None, issued, None))
}

/// Sign out
///
/// Ends the current session, named by the bearer token, else by the refresh token (a native
/// client's in the body, or the cookie with its CSRF token). The cookies are cleared.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    request_body(content = ref("#/components/schemas/RefreshRequest"),
        description = "Native clients without a bearer token only."),
    security(("bearer" = []), ("refresh_cookie" = [], "csrf_token" = []), ()),
    responses(
        (status = 204, description = "The session is revoked and the cookies cleared.",
            headers(("Set-Cookie" = String, description = "Expired `servauth_refresh` and `servauth_csrf` cookies."))),
        (status = 400, response = InvalidJson),
        (status = 401, response = LogoutRefused),
        (status = 403, response = CsrfFailed),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn revoke_current_session(
    services: Services,
    bearer: Bearer,
    cookie: RefreshCookie,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    if bearer.token().is_some() {
        let caller = services.sessions.authenticate_any(bearer.token()).await?;
        services.sessions.logout(&caller).await?;
    } else {
        let presented = presented_refresh(body.refresh_token.as_ref(), &cookie)?;
        services.sessions.logout_with_refresh(presented).await?;
    }
    let mut headers = HeaderMap::new();
    for (name, path, http_only) in [(REFRESH_COOKIE, "/auth", true), (CSRF_COOKIE, "/", false)] {
        let removal = cookie_for(&services.config, name, String::new(), path, http_only, 0);
        append_cookie(&mut headers, &removal);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The refresh token a request presents: the body's (native) first, else the cookie's,
/// which counts only from an allowed origin.
fn presented_refresh<'a>(
    body_token: Option<&'a SecretString>,
    cookie: &'a RefreshCookie,
) -> Result<PresentedRefresh<'a>, AuthError> {
    use secrecy::ExposeSecret as _;
    if let Some(token) = body_token
        .map(|token| token.expose_secret())
        .filter(|t| !t.is_empty())
    {
        return Ok(PresentedRefresh::Native(token));
    }
    let token = cookie
        .token
        .as_deref()
        .ok_or(AuthError::MissingCredentials)?;
    if !cookie.origin_allowed {
        tracing::warn!("refresh cookie sent from an origin that is not allowed");
        return Err(AuthError::CsrfFailed);
    }
    Ok(PresentedRefresh::Browser {
        token,
        csrf: cookie.csrf.as_deref(),
    })
}

/// The answer to a sign-in (register, login, a second factor, a passkey): the session's
/// credentials, the account, and a new device token.
pub(super) fn signed_in(
    services: &Services,
    kind: ClientKind,
    user: UserRecord,
    issued: IssuedSession,
) -> Response {
    let device = services.accounts.device_token(user.id);
    session_response(&services.config, kind, Some(user), issued, Some(device))
}

/// The answer that hands a client a session's new credentials: browsers get the refresh
/// token only in an HttpOnly cookie and the CSRF token in the body and a readable cookie;
/// native clients get the refresh token in the body and no cookies.
fn session_response(
    config: &Config,
    kind: ClientKind,
    user: Option<UserRecord>,
    issued: IssuedSession,
    device_token: Option<String>,
) -> Response {
    let mut headers = HeaderMap::new();
    let device_token = match (kind, device_token) {
        (ClientKind::Browser, Some(token)) => {
            let max_age = DEVICE_TOKEN_TTL.num_seconds();
            let cookie = cookie_for(config, DEVICE_COOKIE, token, "/auth", true, max_age);
            append_cookie(&mut headers, &cookie);
            None
        }
        (ClientKind::Native, token) => token,
        (ClientKind::Browser, None) => None,
    };
    let (csrf_token, refresh_token) = match kind {
        ClientKind::Browser => {
            let max_age = issued.refresh_expires_in;
            let csrf = issued.csrf_token.clone().unwrap_or_default();
            let refresh_cookie = cookie_for(
                config,
                REFRESH_COOKIE,
                issued.refresh_token,
                "/auth",
                true,
                max_age,
            );
            append_cookie(&mut headers, &refresh_cookie);
            append_cookie(
                &mut headers,
                &cookie_for(config, CSRF_COOKIE, csrf, "/", false, max_age),
            );
            (issued.csrf_token, None)
        }
        ClientKind::Native => (None, Some(issued.refresh_token)),
    };
    let body = SessionBody {
        user: user.map(UserView::from),
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        csrf_token,
        refresh_token,
        device_token,
    };
    (headers, Json(body)).into_response()
}

fn append_cookie(headers: &mut HeaderMap, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        headers.append(header::SET_COOKIE, value);
    }
}

fn cookie_for(
    config: &Config,
    name: &'static str,
    value: String,
    path: &'static str,
    http_only: bool,
    max_age_seconds: i64,
) -> Cookie<'static> {
    let same_site = match config.cookie_same_site {
        SameSitePolicy::Lax => SameSite::Lax,
        SameSitePolicy::Strict => SameSite::Strict,
        SameSitePolicy::None => SameSite::None,
    };
    Cookie::build((name, value))
        .path(path)
        .http_only(http_only)
        .secure(config.cookie_secure)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(max_age_seconds))
        .build()
}
