//! Extractors whose rejections are problem+json: the JSON body, the bearer token, and where
//! the request came from.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum_extra::extract::cookie::CookieJar;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::ApiError;
use super::routes::auth::REFRESH_COOKIE;
use crate::app::AppState;
use crate::domain::{AuthError, ClientMeta, FieldError};

/// The largest body accepted (the contract's 64 KiB); enforced by `DefaultBodyLimit`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body. In order: a body needs `Content-Type: application/json` (415), fits
/// in 64 KiB (413), is JSON (400 `invalid_json`), is an object and has the fields with the
/// right types (422 `validation_failed`, naming each field). Unknown fields are ignored.
/// A request with no body and no content type reads as `{}`, so its missing fields are 422.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson
                }
            })?;
        let is_json = content_type
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .is_some_and(is_json_media_type);
        let value: serde_json::Value = match (is_json, content_type.is_some(), bytes.is_empty()) {
            (false, false, true) => serde_json::Value::Object(serde_json::Map::new()),
            (false, _, _) => return Err(ApiError::UnsupportedMediaType),
            (true, _, _) => serde_json::from_slice(&bytes).map_err(|_| ApiError::InvalidJson)?,
        };
        if !value.is_object() {
            let error = FieldError::new("", "invalid_type", "The body must be a JSON object.");
            return Err(AuthError::Validation(vec![error]).into());
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|error| {
                let field = error.path().to_string();
                let message = error.inner().to_string();
                AuthError::Validation(vec![FieldError::new(field, "invalid_type", message)]).into()
            })
    }
}

/// `application/json`, with parameters (`; charset=utf-8`) or a `+json` suffix type.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The token of an `Authorization: Bearer <token>` header; `None` when there is no header,
/// another scheme, or an empty token (all of which are `missing_credentials`).
#[derive(Debug, Clone, Default)]
pub struct Bearer(pub Option<String>);

impl Bearer {
    pub fn token(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                let token = token.trim();
                (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
                    .then(|| token.to_owned())
            });
        Ok(Self(token))
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy; then the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy (everything
/// left of it may be forged by the client).
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    let client = forwarded.iter().rev().find(|ip| !is_trusted(ip));
    Some(client.or(forwarded.first()).copied().unwrap_or(peer))
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let ip = client_ip(peer, &parts.headers, &state.config.trusted_proxies);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Self { ip, user_agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type("text/json+xml"));
    }
}

/// The refresh cookie of a request, with what the CSRF defence needs: the `X-CSRF-Token`
/// header and whether the request's origin may use the cookie. It never rejects: whether the
/// cookie is needed, and the checks, come after the body is read (a malformed body is 400
/// before any credential is looked at).
#[derive(Debug, Clone, Default)]
pub struct RefreshCookie {
    pub token: Option<String>,
    pub csrf: Option<String>,
    /// `Origin`, when sent, is the server's own or a CORS origin; without `Origin`, the
    /// browser did not flag the request `Sec-Fetch-Site: cross-site`.
    pub origin_allowed: bool,
}

impl FromRequestParts<AppState> for RefreshCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let jar = CookieJar::from_headers(headers);
        let token = jar
            .get(REFRESH_COOKIE)
            .map(|cookie| cookie.value().to_owned())
            .filter(|value| !value.is_empty());
        let csrf = headers
            .get("x-csrf-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let origin = headers
            .get(header::ORIGIN)
            .map(|value| value.to_str().unwrap_or_default());
        let origin_allowed = match origin {
            Some(origin) => {
                let config = &state.config;
                origin == config.public_origin
                    || config.cors_origins.iter().any(|allowed| allowed == origin)
            }
            None => headers
                .get("sec-fetch-site")
                .is_none_or(|site| !site.as_bytes().eq_ignore_ascii_case(b"cross-site")),
        };
        Ok(Self {
            token,
            csrf,
            origin_allowed,
        })
    }
}

/// The value of `X-Service-Auth`, checked by the handler after the body is read.
#[derive(Debug, Clone, Default)]
pub struct ServiceCredential(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ServiceCredential {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("x-service-auth")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Self(value))
    }
}

/// The `{id}` of a path, when it is a UUID. It never rejects: an id that is not a UUID (or not
/// even UTF-8 once percent-decoded) is no id, which the handler answers `404` like an unknown
/// one, after the credentials are checked.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let id = Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Path(id)| Uuid::parse_str(&id).ok());
        Ok(Self(id))
    }
}
