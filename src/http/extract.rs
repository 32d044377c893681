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
        // No store keeps U+0000 the same way (PostgreSQL refuses it in text, C strings end
        // at it): refused here, before any of it reaches a database.
        let mut with_nul = Vec::new();
        find_nul_characters(&value, &mut String::new(), &mut with_nul);
        if !with_nul.is_empty() {
            let errors = with_nul
                .into_iter()
                .map(|field| {
                    FieldError::new(
                        field,
                        "invalid_characters",
                        "Must not contain the character U+0000.",
                    )
                })
                .collect();
            return Err(AuthError::Validation(errors).into());
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

/// Appends to `found` the path (as `serde_path_to_error` writes it: `user.name`, `tags[2]`)
/// of every string value or object key under `value` that contains U+0000; `path` is the
/// path of `value`.
pub(crate) fn find_nul_characters(
    value: &serde_json::Value,
    path: &mut String,
    found: &mut Vec<String>,
) {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => found.push(path.clone()),
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                find_nul_characters(item, path, found);
                path.truncate(len);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                // The key is named with its NUL shown as `\u0000`, so the path is readable.
                path.push_str(&key.replace('\0', "\\u0000"));
                if key.contains('\0') {
                    found.push(path.clone());
                } else {
                    find_nul_characters(item, path, found);
                }
                path.truncate(len);
            }
        }
        _ => {}
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

/// The client's address: the socket peer, unless the peer is a trusted proxy; then
/// `X-Forwarded-For` is walked from the right (each proxy appends the address it got the
/// request from) to the first address that is not a trusted proxy: everything left of it
/// may be written by the client. An entry may be `IP`, `IP:port`, `[IPv6]` or
/// `[IPv6]:port`. An entry that is none of those (`unknown`, an obfuscated name, garbage)
/// ends the walk: what is left of it cannot be told apart from forgery, so the client is the
/// nearest trusted hop already passed, the proxy that appended that entry.
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
    // Several headers read as one list, in order (RFC 9110 §5.3). A header that is not even
    // text is an unparseable entry.
    let values: Vec<Option<&str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().ok())
        .collect();
    let mut nearest_trusted = peer;
    for value in values.iter().rev() {
        let Some(value) = value else {
            return Some(nearest_trusted);
        };
        for entry in value.rsplit(',') {
            let Some(ip) = forwarded_address(entry.trim()) else {
                return Some(nearest_trusted);
            };
            if !is_trusted(&ip) {
                return Some(ip);
            }
            nearest_trusted = ip;
        }
    }
    Some(nearest_trusted)
}

/// The address of one `X-Forwarded-For` entry: `IP`, `IP:port`, `[IPv6]`, `[IPv6]:port`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = entry.parse::<SocketAddr>() {
        socket.ip()
    } else {
        let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
        IpAddr::V6(inner.parse::<std::net::Ipv6Addr>().ok()?)
    };
    Some(ip.to_canonical())
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

    fn with_nul(value: &serde_json::Value) -> Vec<String> {
        let mut found = Vec::new();
        find_nul_characters(value, &mut String::new(), &mut found);
        found
    }

    #[test]
    fn nul_characters_are_found_in_values_and_keys_anywhere() {
        let value = serde_json::json!({
            "email": "a\u{0}@example.com",
            "password": "fine",
            "user": {"name": "x\u{0}", "ok": "y"},
            "tags": ["a", "\u{0}b"],
            "k\u{0}ey": 1,
        });
        let mut found = with_nul(&value);
        found.sort();
        assert_eq!(found, ["email", "k\\u0000ey", "tags[1]", "user.name"]);
        assert!(with_nul(&serde_json::json!({"a": "b", "n": 1, "c": [null]})).is_empty());
    }

    fn headers(forwarded: &[&str]) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.1";

    fn client(forwarded: &[&str]) -> Option<IpAddr> {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        client_ip(Some(ip(PROXY)), &headers(forwarded), &trusted)
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        assert_eq!(client(&["203.0.113.7"]), Some(ip("203.0.113.7")));
        assert_eq!(client(&["203.0.113.7:5678"]), Some(ip("203.0.113.7")));
        assert_eq!(client(&["[2001:db8::1]:443"]), Some(ip("2001:db8::1")));
        assert_eq!(client(&["[2001:db8::1]"]), Some(ip("2001:db8::1")));
        assert_eq!(client(&["2001:db8::1"]), Some(ip("2001:db8::1")));
        assert_eq!(
            client(&[" 203.0.113.7 , 10.0.0.2 "]),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client(&["::ffff:203.0.113.7"]), Some(ip("203.0.113.7")));
    }

    #[test]
    fn a_client_written_left_entry_never_wins_over_the_appended_address() {
        // The proxy appends `ip:port`; the client wrote the left entry itself.
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.7:5123"]),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(&["6.6.6.6", "[2001:db8::7]:5123"]),
            Some(ip("2001:db8::7"))
        );
    }

    #[test]
    fn an_unparseable_entry_stops_at_the_nearest_trusted_hop() {
        assert_eq!(client(&["6.6.6.6, unknown"]), Some(ip(PROXY)));
        assert_eq!(
            client(&["6.6.6.6, unknown, 10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client(&["6.6.6.6, garbage:1:2:3, 10.0.0.3:80"]),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(client(&["6.6.6.6, [2001:db8::1"]), Some(ip(PROXY)));
        assert_eq!(client(&["6.6.6.6,"]), Some(ip(PROXY)), "an empty entry");
    }

    #[test]
    fn untrusted_peers_and_all_trusted_chains() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let forged = headers(&["6.6.6.6"]);
        assert_eq!(
            client_ip(Some(ip("198.51.100.9")), &forged, &trusted),
            Some(ip("198.51.100.9")),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client(&[]), Some(ip(PROXY)));
        assert_eq!(client(&["10.0.0.5, 10.0.0.2"]), Some(ip("10.0.0.5")));
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
