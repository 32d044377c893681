//! `POST /auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::me::UserView;
use crate::app::Services;
use crate::config::{Config, SameSitePolicy};
use crate::domain::{
    AuthError, ClientKind, ClientMeta, IssuedSession, PresentedRefresh, Registration,
};
use crate::http::extract::RefreshCookie;
use crate::http::{ApiError, ApiJson, Bearer};
use crate::store::UserRecord;

/// Name of the HttpOnly cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "servauth_refresh";
/// Name of the script-readable cookie holding the CSRF token.
pub const CSRF_COOKIE: &str = "servauth_csrf";

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    email: Option<String>,
    password: Option<SecretString>,
    username: Option<String>,
    client: Option<ClientKind>,
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    email: Option<String>,
    password: Option<SecretString>,
    client: Option<ClientKind>,
}

/// A native client's refresh token (browsers send none: theirs is in the cookie).
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    refresh_token: Option<SecretString>,
}

/// The body of a register, login or refresh answer.
#[derive(Debug, Serialize)]
pub struct SessionBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

pub async fn register(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let kind = body.client.unwrap_or_default();
    let registration = Registration {
        email: body.email,
        password: body.password,
        username: body.username,
    };
    let user = services.accounts.register(registration).await?;
    let issued = services.sessions.open(&user, kind, meta).await?;
    let response = session_response(&services.config, kind, Some(user), issued);
    Ok((StatusCode::CREATED, response).into_response())
}

pub async fn login(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let kind = body.client.unwrap_or_default();
    let user = services.accounts.login(body.email, body.password).await?;
    let issued = services.sessions.open(&user, kind, meta).await?;
    Ok(session_response(&services.config, kind, Some(user), issued))
}

pub async fn refresh(
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
    Ok(session_response(&services.config, kind, None, issued))
}

/// Ends the current session, named by the bearer token, else by the refresh token (native
/// body, or cookie with its CSRF token). The cookies are cleared.
pub async fn logout(
    services: Services,
    bearer: Bearer,
    cookie: RefreshCookie,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    if bearer.token().is_some() {
        let caller = services.sessions.authenticate(bearer.token()).await?;
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

/// The answer that hands a client a session's new credentials: browsers get the refresh
/// token only in an HttpOnly cookie and the CSRF token in the body and a readable cookie;
/// native clients get the refresh token in the body and no cookies.
fn session_response(
    config: &Config,
    kind: ClientKind,
    user: Option<UserRecord>,
    issued: IssuedSession,
) -> Response {
    let mut headers = HeaderMap::new();
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
