//! `POST /auth/register`, `POST /auth/login`.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::me::UserView;
use crate::app::Services;
use crate::config::{Config, SameSitePolicy};
use crate::domain::{ClientKind, ClientMeta, IssuedSession, Registration};
use crate::http::{ApiError, ApiJson};
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

/// The body of a register or login answer.
#[derive(Debug, Serialize)]
pub struct SessionBody {
    user: UserView,
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
    Ok(session_response(
        &services.config,
        StatusCode::CREATED,
        user,
        kind,
        issued,
    ))
}

pub async fn login(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let kind = body.client.unwrap_or_default();
    let user = services.accounts.login(body.email, body.password).await?;
    let issued = services.sessions.open(&user, kind, meta).await?;
    Ok(session_response(
        &services.config,
        StatusCode::OK,
        user,
        kind,
        issued,
    ))
}

/// The answer that hands a client a new session: browsers get the refresh token only in
/// an HttpOnly cookie and the CSRF token in the body and a readable cookie; native clients
/// get the refresh token in the body and no cookies.
fn session_response(
    config: &Config,
    status: StatusCode,
    user: UserRecord,
    kind: ClientKind,
    issued: IssuedSession,
) -> Response {
    let mut headers = HeaderMap::new();
    let (csrf_token, refresh_token) = match kind {
        ClientKind::Browser => {
            let max_age = issued.refresh_expires_in;
            let refresh = cookie(
                config,
                REFRESH_COOKIE,
                issued.refresh_token,
                "/auth",
                true,
                max_age,
            );
            let csrf_value = issued.csrf_token.clone().unwrap_or_default();
            let csrf = cookie(config, CSRF_COOKIE, csrf_value, "/", false, max_age);
            for cookie in [refresh, csrf] {
                if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            (issued.csrf_token, None)
        }
        ClientKind::Native => (None, Some(issued.refresh_token)),
    };
    let body = SessionBody {
        user: UserView::from(user),
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        csrf_token,
        refresh_token,
    };
    (status, headers, Json(body)).into_response()
}

fn cookie(
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
