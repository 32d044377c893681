//! The Better Auth-compatible face under `/api/auth` (issue 16; wire protocol:
//! `docs/API.md`, "Better Auth face"). An adapter over the same domain services as the REST
//! face: it parses Better Auth's wire format, calls [`Accounts`](crate::domain::Accounts)
//! and [`Sessions`](crate::domain::Sessions), and answers in Better Auth's shapes. A Better
//! Auth session token is one more credential of a servauth session.
//!
//! `error.rs` is the face's one error map, `cookies.rs` the signed cookies, `origin.rs` the
//! CSRF rules, `handlers.rs` the endpoints.

mod cookies;
mod error;
mod handlers;
mod origin;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, on};
use axum::{Extension, Router};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::app::{AppState, Services};
use crate::config::Config;
use crate::domain::{AuthError, ClientMeta, OpenedTokenSession, TokenCaller};
use crate::http::extract::{BODY_LIMIT, client_ip, find_nul_characters};
use crate::store::{SessionRecord, UserRecord};

pub use cookies::CookieSigner;
pub use error::FaceError;

/// Where the face is mounted (Better Auth's default `basePath`).
pub const BASE_PATH: &str = "/api/auth";

/// What the face knows of its settings: the cookie signer and names, and the origins it
/// trusts.
#[derive(Debug)]
pub struct Face {
    signer: CookieSigner,
    /// `__Secure-` prefix and `Secure` attribute: the public URL is https.
    secure: bool,
    session_cookie: String,
    dont_remember_cookie: String,
    session_data_cookie: String,
    /// The public URL's origin, then `SERVAUTH_CORS_ORIGINS`.
    trusted_origins: Vec<String>,
    /// `SERVAUTH_PUBLIC_URL`: what relative redirect targets resolve against.
    public_url: url::Url,
}

impl Face {
    /// The face for these settings; `None` without a secret.
    pub fn new(config: &Config) -> Option<Self> {
        let secret = config.better_auth_secret.as_ref()?;
        let signer = CookieSigner::new(secret.expose_secret())?;
        let secure = config.public_url.scheme() == "https";
        let prefix = if secure { "__Secure-" } else { "" };
        let mut trusted_origins = vec![config.public_origin.clone()];
        trusted_origins.extend(config.cors_origins.iter().cloned());
        Some(Self {
            signer,
            secure,
            session_cookie: format!("{prefix}better-auth.session_token"),
            dont_remember_cookie: format!("{prefix}better-auth.dont_remember"),
            session_data_cookie: format!("{prefix}better-auth.session_data"),
            trusted_origins,
            public_url: config.public_url.clone(),
        })
    }

    /// Exact `scheme://host[:port]` equality with a trusted origin.
    pub fn is_trusted_origin(&self, origin: &str) -> bool {
        self.trusted_origins.iter().any(|trusted| trusted == origin)
    }
}

/// The face's settings when it is on: mounted (`SERVAUTH_BETTER_AUTH`) and with a secret.
pub fn face(config: &Config) -> Option<Arc<Face>> {
    config
        .better_auth
        .then(|| Face::new(config))
        .flatten()
        .map(Arc::new)
}

/// The face's routes over `face` (from [`face`]), or, without a secret, a 404 for everything
/// under `/api/auth` (and a start-up log line saying why). `None` when
/// `SERVAUTH_BETTER_AUTH=false`.
pub fn router(config: &Config, face: Option<Arc<Face>>) -> Option<Router<AppState>> {
    if !config.better_auth {
        return None;
    }
    let Some(face) = face else {
        tracing::warn!(
            "Better Auth face off: set SERVAUTH_BETTER_AUTH_SECRET (or BETTER_AUTH_SECRET) to \
             serve /api/auth; until then it answers 404"
        );
        return Some(
            Router::new()
                .route(BASE_PATH, any(not_found))
                .route(&format!("{BASE_PATH}/{{*rest}}"), any(not_found)),
        );
    };
    use handlers as h;
    let routes: [(&str, MethodRouter<AppState>); 21] = [
        ("/sign-up/email", post(h::sign_up)),
        ("/sign-in/email", post(h::sign_in)),
        ("/sign-out", post(h::sign_out)),
        (
            "/get-session",
            get(h::get_session).on(MethodFilter::POST, h::get_session_post),
        ),
        ("/list-sessions", get(h::list_sessions)),
        ("/revoke-session", post(h::revoke_session)),
        ("/revoke-sessions", post(h::revoke_sessions)),
        ("/revoke-other-sessions", post(h::revoke_other_sessions)),
        ("/update-user", post(h::update_user)),
        ("/change-password", post(h::change_password)),
        ("/token", get(h::token)),
        ("/jwks", get(h::jwks)),
        ("/ok", get(h::ok)),
        ("/error", get(h::error_page)),
        ("/delete-user", post(h::delete_user)),
        ("/change-email", post(h::change_email)),
        ("/request-password-reset", post(h::request_password_reset)),
        ("/reset-password", post(h::reset_password)),
        ("/send-verification-email", post(h::send_verification_email)),
        ("/verify-email", get(h::verify_email)),
        ("/reset-password/{token}", get(h::reset_password_callback)),
    ];
    let mut router = Router::new()
        .route(BASE_PATH, any(not_found))
        .route(&format!("{BASE_PATH}/{{*rest}}"), any(not_found));
    for (path, route) in routes {
        // Any other method is Better Auth's 404 (never 405), HEAD included.
        router = router.route(
            &format!("{BASE_PATH}{path}"),
            route.head(not_found).fallback(not_found),
        );
    }
    Some(router.layer(Extension(face)))
}

fn post<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    on(MethodFilter::POST, handler)
}

fn get<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    on(MethodFilter::GET, handler)
}

/// Better Auth's answer to a path or method it does not serve: 404, empty body.
async fn not_found() -> Response {
    FaceError::NotFound.into_response()
}

/// Which bodies an endpoint takes: JSON only, or also a urlencoded form (sign-in, sign-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bodies {
    Json,
    JsonOrForm,
}

/// One request on the face, read and past the checks every endpoint shares (wire spec
/// §1.2's order): the media type and JSON (415/400), then the origin rule and the
/// redirect-target fields (403).
struct Call {
    face: Arc<Face>,
    services: Services,
    meta: ClientMeta,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    /// `None`: no body (or one without a content type, which Better Auth ignores).
    body: Option<Value>,
}

impl Call {
    async fn read(state: &AppState, request: Request, bodies: Bodies) -> Result<Self, FaceError> {
        let (parts, body) = request.into_parts();
        let face = parts
            .extensions
            .get::<Arc<Face>>()
            .cloned()
            .ok_or(FaceError::NotFound)?;
        let services = state
            .services()
            .cloned()
            .ok_or_else(|| FaceError::Auth(AuthError::Overloaded))?;
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let meta = ClientMeta {
            ip: client_ip(peer, &parts.headers, &state.config.trusted_proxies),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        };
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|_| FaceError::api(413, "PAYLOAD_TOO_LARGE", "Request body is too large"))?;
        let body = parse_body(&parts.headers, &bytes, bodies)?;
        origin::check_origin(&face, &parts.method, &parts.headers)?;
        // GETs skip rule 1, its URL checks included (the GET endpoints with a callback
        // check their own).
        if parts.method != axum::http::Method::GET {
            origin::check_url_fields(&face, body.as_ref(), &query)?;
        }
        Ok(Self {
            face,
            services,
            meta,
            headers: parts.headers,
            query,
            body,
        })
    }

    /// The body as an object: Better Auth's `[body] … expected object` otherwise.
    fn object(&self) -> Result<&serde_json::Map<String, Value>, FaceError> {
        match &self.body {
            Some(Value::Object(fields)) => Ok(fields),
            other => Err(FaceError::validation(
                "body",
                "",
                &format!(
                    "Invalid input: expected object, received {}",
                    kind(other.as_ref())
                ),
            )),
        }
    }

    /// A required string field of the body.
    fn string(&self, field: &str) -> Result<String, FaceError> {
        self.optional_string(field)?.ok_or_else(|| {
            FaceError::validation(
                "body",
                field,
                "Invalid input: expected string, received undefined",
            )
        })
    }

    /// An optional string field of the body (`null` reads as absent).
    fn optional_string(&self, field: &str) -> Result<Option<String>, FaceError> {
        match self.object()?.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(other) => Err(FaceError::validation(
                "body",
                field,
                &format!(
                    "Invalid input: expected string, received {}",
                    kind(Some(other))
                ),
            )),
        }
    }

    /// An optional boolean field of the body (a form's `"true"`/`"false"` too).
    fn optional_bool(&self, field: &str) -> Result<Option<bool>, FaceError> {
        match self.object()?.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(Value::String(value)) if value == "true" => Ok(Some(true)),
            Some(Value::String(value)) if value == "false" => Ok(Some(false)),
            Some(other) => Err(FaceError::validation(
                "body",
                field,
                &format!(
                    "Invalid input: expected boolean, received {}",
                    kind(Some(other))
                ),
            )),
        }
    }

    /// A query flag as Better Auth's `z.coerce.boolean()` reads it: any non-empty value,
    /// `"false"` included, is true.
    fn query_flag(&self, name: &str) -> bool {
        self.query
            .iter()
            .any(|(key, value)| key == name && !value.is_empty())
    }

    /// The first value of the query parameter `name`, if it is there.
    fn query_value(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    /// Opens a token session for `user` from this request's client.
    async fn open_session(
        &self,
        user: &UserRecord,
        password_hash: Option<String>,
        remember: bool,
    ) -> Result<OpenedTokenSession, FaceError> {
        Ok(self
            .services
            .sessions
            .open_token_session(user, password_hash, remember, self.meta.clone())
            .await?)
    }

    /// `response` with the session cookie (and `set-auth-token`) for `token`'s session.
    fn with_session(
        &self,
        mut response: Response,
        token: &str,
        session: &SessionRecord,
    ) -> Response {
        set_session(
            &self.face,
            &mut response,
            token,
            session,
            self.services.sessions.now(),
        );
        response
    }

    /// The session token the request presents, if any: see [`presented`].
    fn presented(&self) -> Presented {
        presented(&self.face, &self.headers)
    }

    /// The caller's live session, if the request presents one. `any`: an unverified user's
    /// session counts even while verified emails are required (sign-out, revocations).
    async fn session(&self, any: bool) -> Result<Option<Resolved>, FaceError> {
        let Presented::Token(token) = self.presented() else {
            return Ok(None);
        };
        let sessions = &self.services.sessions;
        let found = if any {
            sessions.authenticate_token_any(&token).await
        } else {
            sessions.authenticate_token(&token).await
        };
        match found {
            Ok(caller) => Ok(Some(Resolved { token, caller })),
            Err(AuthError::InvalidToken) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// As [`Self::session`], answering `401 UNAUTHORIZED` without one.
    async fn require_session(&self, any: bool) -> Result<Resolved, FaceError> {
        self.session(any).await?.ok_or_else(FaceError::unauthorized)
    }

    /// Whether the request holds a validly signed `dont_remember` cookie (set by a
    /// `rememberMe: false` sign-in, possibly by the Better Auth app servauth replaced).
    fn dont_remember(&self) -> bool {
        cookies::read_cookie(&self.headers, &self.face.dont_remember_cookie)
            .is_some_and(|value| self.face.signer.verify(&value) == Some("true"))
    }
}

/// The session token a request presents, if any: a valid `Authorization: Bearer` (raw or
/// signed; a bad one is ignored, as Better Auth's bearer plugin ignores it), else the signed
/// session cookie.
fn presented(face: &Face, headers: &HeaderMap) -> Presented {
    if let Some(token) = bearer(face, headers) {
        return Presented::Token(token);
    }
    match cookies::read_cookie(headers, &face.session_cookie) {
        None => Presented::Nothing,
        Some(value) => match face.signer.verify(&value) {
            Some(token) => Presented::Token(token.to_owned()),
            None => Presented::Forged,
        },
    }
}

fn bearer(face: &Face, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = value.get(7..)?.trim();
    if token.is_empty() {
        return None;
    }
    if token.contains('.') {
        let decoded = cookies::decode_component(token);
        return face.signer.verify(&decoded).map(str::to_owned);
    }
    Some(token.to_owned())
}

/// The Better Auth session token a request to another face presents (forward-auth reads
/// it): as the face itself reads it, `None` for none or a forged one.
pub fn session_token(face: &Face, headers: &HeaderMap) -> Option<String> {
    match presented(face, headers) {
        Presented::Token(token) => Some(token),
        Presented::Nothing | Presented::Forged => None,
    }
}

/// What credential a request presents.
enum Presented {
    Nothing,
    /// A session cookie whose signature does not verify: no session (never an error).
    Forged,
    Token(String),
}

/// A request's live session: the raw token it presented and the caller.
struct Resolved {
    token: String,
    caller: TokenCaller,
}

/// The zod name of a JSON value's type.
fn kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// Reads a body as Better Auth does: JSON (or, where allowed, a urlencoded form) by the
/// part of `Content-Type` before `;`, case-insensitively; another type with a body is 415;
/// a body without a type is ignored; malformed JSON is 400. Strings holding U+0000 are
/// refused here, before any of them reaches a database.
fn parse_body(
    headers: &HeaderMap,
    bytes: &[u8],
    bodies: Bodies,
) -> Result<Option<Value>, FaceError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let content_type = content_type.to_str().unwrap_or("invalid");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let value = match essence.as_str() {
        "application/json" => {
            if bytes.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice::<Value>(bytes)
                .map_err(|_| FaceError::api(400, "BAD_REQUEST", "Invalid JSON in request body"))?
        }
        "application/x-www-form-urlencoded" if bodies == Bodies::JsonOrForm => {
            let mut fields = serde_json::Map::new();
            for (key, value) in url::form_urlencoded::parse(bytes) {
                fields
                    .entry(key.into_owned())
                    .or_insert(Value::String(value.into_owned()));
            }
            Value::Object(fields)
        }
        _ if bytes.is_empty() => return Ok(None),
        _ => {
            let allowed = match bodies {
                Bodies::Json => "application/json",
                Bodies::JsonOrForm => "application/x-www-form-urlencoded, application/json",
            };
            return Err(FaceError::api(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                format!("Content-Type \"{content_type}\" is not allowed. Allowed types: {allowed}"),
            ));
        }
    };
    let mut with_nul = Vec::new();
    find_nul_characters(&value, &mut String::new(), &mut with_nul);
    if let Some(field) = with_nul.first() {
        return Err(FaceError::validation(
            "body",
            field,
            "Invalid input: must not contain U+0000",
        ));
    }
    Ok(Some(value))
}

/// A JSON `200` (Better Auth answers every success with 200).
fn json(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// Appends `name` to the response's `Access-Control-Expose-Headers`.
fn expose(response: &mut Response, name: &str) {
    let headers = response.headers_mut();
    let value = match headers
        .get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .and_then(|value| value.to_str().ok())
    {
        Some(existing) if !existing.is_empty() => format!("{existing}, {name}"),
        _ => name.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
}

/// The `Max-Age` of a session cookie: what is left of the session in whole seconds, rounded
/// up (the session was opened a few milliseconds before this answer is made, and Better
/// Auth's own cookie says exactly `expiresIn`, 604800), at least 1.
fn cookie_max_age(
    expires_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> i64 {
    let left = (expires_at - now).num_milliseconds();
    (left.saturating_add(999) / 1000).max(1)
}

/// Sets the session cookie for `token` (its `Max-Age` what is left of the session; none
/// for a `rememberMe: false` session, which also gets `dont_remember`), and, as Better
/// Auth's bearer plugin does on every response that sets a live session cookie,
/// `set-auth-token` with the signed value.
fn set_session(
    face: &Face,
    response: &mut Response,
    token: &str,
    session: &SessionRecord,
    now: chrono::DateTime<chrono::Utc>,
) {
    let signed = face.signer.signed(token);
    let max_age = session
        .remember
        .then(|| cookie_max_age(session.expires_at, now));
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookies::set_cookie(
            &face.session_cookie,
            &cookies::encode_component(&signed),
            max_age,
            face.secure,
        ),
    );
    if !session.remember {
        let dont_remember = cookies::encode_component(&face.signer.signed("true"));
        headers.append(
            header::SET_COOKIE,
            cookies::set_cookie(
                &face.dont_remember_cookie,
                &dont_remember,
                None,
                face.secure,
            ),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&signed) {
        headers.insert("set-auth-token", value);
    }
    expose(response, "set-auth-token");
}

/// Expires the session cookies (`session_token`, `session_data`, `dont_remember`).
fn expire_session(face: &Face, response: &mut Response) {
    let headers = response.headers_mut();
    for name in [
        &face.session_cookie,
        &face.session_data_cookie,
        &face.dont_remember_cookie,
    ] {
        headers.append(
            header::SET_COOKIE,
            cookies::expired_cookie(name, face.secure),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_sessions_cookie_lives_its_whole_expires_in() {
        let opened = chrono::Utc::now();
        let expires = opened + chrono::Duration::days(7);
        let answered = opened + chrono::Duration::milliseconds(3);
        assert_eq!(cookie_max_age(expires, answered), 604_800);
        assert_eq!(
            cookie_max_age(expires, expires),
            1,
            "never 0: that would expire it"
        );
        assert_eq!(
            cookie_max_age(expires, expires - chrono::Duration::seconds(10)),
            10
        );
    }
}
