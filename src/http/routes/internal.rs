//! `/api/internal/*`: for the API gateway and other services, behind `X-Service-Auth`. The
//! router mounts these routes only when `SERVAUTH_INTERNAL_SECRET` is set (forward-auth also
//! when `SERVAUTH_FORWARD_AUTH_ALLOW` is); the OpenAPI document lists them either way.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use uuid::Uuid;

use super::me::UserView;
use crate::app::Services;
use crate::domain::{AuthError, Caller, FieldError};
use crate::http::better_auth::{self, Face};
use crate::http::extract::{Bearer, PathId, ServiceCredential};
use crate::http::openapi::{
    self, AccessTokenRefused, ForwardAuthAllowed, GatewayRefused, InternalDisabled, InvalidJson,
    JsonBodyProblems, NotReady, ServiceAuthRefused, UserNotFound,
};
use crate::http::{ApiError, ApiJson};
use crate::store::Role;

/// An access token to check.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateRequest {
    #[schema(value_type = String, required = true)]
    token: Option<String>,
}

/// The answer of token introspection, in the shape of RFC 7662.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Introspection {
    Active(ActiveToken),
    Inactive(InactiveToken),
}

/// An access token that verifies and whose session is live.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveToken {
    #[schema(schema_with = always_true)]
    active: bool,
    /// The user's id.
    sub: Uuid,
    /// The session's id.
    sid: Uuid,
    #[schema(value_type = openapi::Role)]
    role: Role,
    email: String,
    /// Whether the user's address is verified (now, not when the token was issued).
    email_verified: bool,
    /// When the user authenticated for this session (the sign-in that opened it), seconds
    /// since the Unix epoch; `0` for a token of an earlier version.
    auth_time: i64,
    /// How the user authenticated (RFC 8176): `["pwd"]` for a password sign-in.
    amr: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    exp: i64,
    /// Issue time, seconds since the Unix epoch.
    iat: i64,
}

/// Any other token (malformed, expired, revoked, …): exactly `{"active": false}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InactiveToken {
    #[schema(schema_with = always_false)]
    active: bool,
}

fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

fn always_false() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
        .build()
}

fn check(services: &Services, credential: &ServiceCredential) -> Result<(), AuthError> {
    match &services.service_secret {
        Some(secret) => secret.check(credential.0.as_deref()),
        // Not reachable: the routes are mounted only with a secret. Refuse all the same.
        None => Err(AuthError::NotFound),
    }
}

/// Validate an access token
///
/// Token introspection for other services: `active: true` with the token's subject for an
/// access token that verifies and whose session is live (revocations included, unlike an
/// offline check against the JWK Set), else exactly `{"active": false}`. Costs a signature
/// check and one indexed lookup, never a password hash. Mounted only when
/// `SERVAUTH_INTERNAL_SECRET` is set.
#[utoipa::path(post, path = "/api/internal/validate", tag = "internal",
    request_body = ValidateRequest,
    security(("service_auth" = [])),
    responses(
        (status = 200, description = "Whether the token is active, and whose it is.", body = Introspection),
        (status = 400, response = InvalidJson),
        (status = 401, response = ServiceAuthRefused),
        (status = 404, response = InternalDisabled),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn validate_token(
    services: Services,
    credential: ServiceCredential,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> Result<Json<Introspection>, ApiError> {
    check(&services, &credential)?;
    let token = body
        .token
        .ok_or_else(|| AuthError::Validation(vec![FieldError::required("token")]))?;
    let answer = match services.sessions.authenticate(Some(&token)).await {
        Ok(caller) => Introspection::Active(ActiveToken {
            active: true,
            sub: caller.claims.sub,
            sid: caller.claims.sid,
            role: caller.user.role,
            email: caller.user.email,
            email_verified: caller.user.email_verified,
            auth_time: caller.claims.auth_time,
            amr: caller.claims.amr,
            exp: caller.claims.exp,
            iat: caller.claims.iat,
        }),
        Err(
            AuthError::InvalidToken
            | AuthError::TokenExpired
            | AuthError::MissingCredentials
            | AuthError::EmailNotVerified,
        ) => Introspection::Inactive(InactiveToken { active: false }),
        Err(other) => return Err(other.into()),
    };
    Ok(Json(answer))
}

/// Look up a user
///
/// A user by id, for other services. Mounted only when `SERVAUTH_INTERNAL_SECRET` is set.
#[utoipa::path(get, path = "/api/internal/users/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("service_auth" = [])),
    responses(
        (status = 200, description = "The user.", body = UserView),
        (status = 401, response = ServiceAuthRefused),
        (status = 404, response = UserNotFound),
        (status = 503, response = NotReady),
    ))]
pub async fn get_user(
    services: Services,
    credential: ServiceCredential,
    PathId(id): PathId,
) -> Result<Json<UserView>, ApiError> {
    check(&services, &credential)?;
    let id = id.ok_or(AuthError::NotFound)?;
    let user = services
        .accounts
        .find(id)
        .await?
        .ok_or(AuthError::NotFound)?;
    Ok(Json(user.into()))
}

/// The Better Auth face's settings, for forward-auth to read its session cookie; `None`
/// when the face is off.
#[derive(Clone)]
pub struct GatewayFace(pub Option<Arc<Face>>);

/// The identity headers of an authorized request (the gateway copies them upstream).
const USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");
const ROLE: HeaderName = HeaderName::from_static("x-auth-role");
const EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const EMAIL_VERIFIED: HeaderName = HeaderName::from_static("x-auth-email-verified");
const AMR: HeaderName = HeaderName::from_static("x-auth-amr");

/// Authorize a request (forward-auth)
///
/// For gateways (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`): the
/// original request's headers come along, and its credential is checked as validate checks
/// one, revocations included: `Authorization: Bearer` with an access token, else (when the
/// Better Auth face is on) a Better Auth session token as bearer or the face's signed
/// session cookie. `200` with the caller in `X-Auth-*` headers and no body, or `401` with
/// `WWW-Authenticate`. GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are answered alike
/// (gateways send the original method or `GET`); the request's body is never read. The
/// gateway sends `X-Service-Auth`, or connects from an address in
/// `SERVAUTH_FORWARD_AUTH_ALLOW`; anything else is `403` (but a request without
/// `Authorization` or `Cookie` is `401 missing_credentials` from anyone). Mounted only when
/// one of those two is configured.
#[utoipa::path(get, path = "/api/internal/authorize", tag = "internal",
    security(("service_auth" = [], "bearer" = [])),
    responses(
        (status = 200, response = ForwardAuthAllowed),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = GatewayRefused),
        (status = 404, response = InternalDisabled),
        (status = 503, response = NotReady),
    ))]
pub async fn authorize_request(
    services: Services,
    credential: ServiceCredential,
    Bearer(bearer): Bearer,
    Extension(GatewayFace(face)): Extension<GatewayFace>,
    request: Request,
) -> Result<Response, ApiError> {
    // A request with no credential at all is told so first (that tells nothing, and checks
    // nothing); any credential it presents is looked at only for a known gateway.
    if !presents_credential(request.headers()) {
        return Err(AuthError::MissingCredentials.into());
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical());
    let allowed = peer.is_some_and(|ip| {
        services
            .config
            .forward_auth_allow
            .iter()
            .any(|net| net.contains(&ip))
    });
    if !allowed {
        let secret = services.service_secret.as_ref();
        if secret.is_none_or(|secret| secret.check(credential.0.as_deref()).is_err()) {
            return Err(ApiError::GatewayRefused);
        }
    }
    let caller = match (bearer, face) {
        // An access token is a JWT: three dot-separated parts. Anything else is a Better Auth
        // session token, raw or signed, read the way the face reads it.
        (Some(token), _) if token.split('.').count() == 3 => {
            services.sessions.authenticate(Some(&token)).await?
        }
        (_, Some(face)) => match better_auth::session_token(&face, request.headers()) {
            Some(token) => services.sessions.authenticate_token(&token).await?.caller,
            // A credential was sent (checked above): a forged cookie, a bad bearer.
            None => return Err(AuthError::InvalidToken.into()),
        },
        (Some(_), None) => return Err(AuthError::InvalidToken.into()),
        (None, None) => return Err(AuthError::MissingCredentials.into()),
    };
    Ok((StatusCode::OK, identity_headers(&caller)).into_response())
}

/// Whether the request carries anything that could be a user's credential.
fn presents_credential(headers: &HeaderMap) -> bool {
    headers.contains_key(axum::http::header::AUTHORIZATION)
        || headers.contains_key(axum::http::header::COOKIE)
}

/// `X-Auth-*` for `caller`. Every header is always there, so a gateway that copies them
/// replaces whatever the client sent under those names.
fn identity_headers(caller: &Caller) -> HeaderMap {
    let user = &caller.user;
    let mut headers = HeaderMap::with_capacity(6);
    let text = |value: &str| HeaderValue::from_str(value).ok();
    let values = [
        (USER_ID, text(&user.id.to_string())),
        (SESSION_ID, text(&caller.claims.sid.to_string())),
        (ROLE, Some(HeaderValue::from_static(user.role.as_str()))),
        // An address is printable ASCII, or UTF-8 (an internationalized one), which a
        // header carries as its raw bytes.
        (EMAIL, HeaderValue::from_bytes(user.email.as_bytes()).ok()),
        (
            EMAIL_VERIFIED,
            Some(HeaderValue::from_static(if user.email_verified {
                "true"
            } else {
                "false"
            })),
        ),
        (AMR, text(&caller.claims.amr.join(","))),
    ];
    for (name, value) in values {
        headers.insert(name, value.unwrap_or_else(|| HeaderValue::from_static("")));
    }
    headers
}
