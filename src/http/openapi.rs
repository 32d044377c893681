//! The frame of the OpenAPI document: info, tags, security schemes, the problem schemas and
//! the reusable problem responses that operations name (`(status = 401, response =
//! AccessTokenRefused)`). The paths come from each handler's `#[utoipa::path]`, registered
//! together with its route in [`super::router`], so the document cannot drift from the routes.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::{Tag, TagBuilder};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, InfoBuilder, LicenseBuilder, OpenApi,
    OpenApiBuilder, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{IntoResponses, ToResponse, ToSchema};

use super::problem::{Problem, ProblemFieldError};
use super::routes::auth::{REFRESH_COOKIE, RefreshRequest};
use super::routes::me::UpdateMeRequest;

const DESCRIPTION: &str = "\
A self-hosted authentication server: email + password accounts, short-lived JWT access \
tokens, rotating refresh tokens, per-device sessions, and a JWK Set for other services.

JSON in and out. A request with a body sends `Content-Type: application/json` (else `415`); \
bodies over 64 KiB get `413`, bodies not sent whole within `SERVAUTH_BODY_TIMEOUT` `408`; \
unknown fields are ignored. A request not answered within `SERVAUTH_REQUEST_TIMEOUT` gets \
`503 timeout` (its work still completes). Every response carries \
`X-Request-Id` (the request's own when it is 1-128 chars of `[A-Za-z0-9._-]`). Errors are \
RFC 9457 problem details (`application/problem+json`) whose `code` is the stable, \
machine-readable part. An undocumented method on a documented path answers \
`405 method_not_allowed` with `Allow`.

Browsers keep the refresh token in the HttpOnly cookie `servauth_refresh` and send \
`X-CSRF-Token` with it; native clients send `\"client\": \"native\"` at login or register and \
get the refresh token in the body instead. The access token always travels as \
`Authorization: Bearer <jwt>`.";

/// The document before any path is registered.
pub fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title("servauth")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(
            LicenseBuilder::new()
                .name(env!("CARGO_PKG_LICENSE"))
                .identifier(Some(env!("CARGO_PKG_LICENSE")))
                .build(),
        ))
        .build();
    let mut components = ComponentsBuilder::new()
        .schema_from::<Problem>()
        .schema_from::<ProblemFieldError>()
        // Optional bodies are named by `ref(…)`, which does not collect their schemas.
        .schema_from::<RefreshRequest>()
        .schema_from::<UpdateMeRequest>()
        .schema("ValidationProblem", validation_problem())
        .security_scheme("bearer", bearer())
        .security_scheme(
            "refresh_cookie",
            api_key(
                ApiKey::Cookie,
                REFRESH_COOKIE,
                "The browser session's refresh token, an HttpOnly cookie (`Path=/auth`) set by \
                 register, login and refresh. Always sent together with `X-CSRF-Token`.",
            ),
        )
        .security_scheme(
            "csrf_token",
            api_key(
                ApiKey::Header,
                "X-CSRF-Token",
                "The session's CSRF token (`csrf_token` of the last login, register or refresh \
                 answer, also in the readable cookie `servauth_csrf`). Needed with the refresh \
                 cookie; a request with an `Origin` must also come from the server's own \
                 origin or one of `SERVAUTH_CORS_ORIGINS`.",
            ),
        )
        .security_scheme(
            "service_auth",
            api_key(
                ApiKey::Header,
                "X-Service-Auth",
                "The shared secret `SERVAUTH_INTERNAL_SECRET`, for other services calling \
                 `/api/internal/*`.",
            ),
        );
    for (name, response) in problem_responses() {
        components = components.response(name, response);
    }
    let (name, response) = <ForwardAuthAllowed as ToResponse>::response();
    components = components.response(name, response);
    OpenApiBuilder::new()
        .info(info)
        .tags(Some(tags()))
        .components(Some(components.build()))
        .build()
}

/// The groups of operations, in the order the reference page shows them.
fn tags() -> Vec<Tag> {
    [
        (
            "auth",
            "Create an account, sign in, refresh the access token, sign out.",
        ),
        (
            "account",
            "The signed-in user's own account: profile, password, email address.",
        ),
        (
            "sessions",
            "The signed-in user's sessions, one per device or browser.",
        ),
        (
            "mfa",
            "Second factors: TOTP with recovery codes, completing a sign-in with one, and \
             re-authentication before sensitive changes.",
        ),
        (
            "passkeys",
            "WebAuthn passkeys: register them, sign in with one alone, or use one as the \
             second factor.",
        ),
        (
            "internal",
            "For other services, authenticated by `X-Service-Auth`. These routes are mounted \
             only when `SERVAUTH_INTERNAL_SECRET` is set; without it they answer `404`.",
        ),
        (
            "admin",
            "Looking after users and reading the audit log: for an access token whose user \
             has the `admin` role, or a service with `X-Service-Auth`.",
        ),
        ("keys", "The public keys that verify access tokens."),
        ("health", "Probes for orchestrators and load balancers."),
        ("reference", "This document and the page that shows it."),
    ]
    .into_iter()
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    })
    .collect()
}

fn bearer() -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "An access token (`access_token` of login, register or refresh) as \
                 `Authorization: Bearer <jwt>`. It expires after `SERVAUTH_ACCESS_TTL` \
                 (15 minutes by default) and stops working at once when its session is revoked.",
            ))
            .build(),
    )
}

fn api_key(place: fn(ApiKeyValue) -> ApiKey, name: &str, description: &str) -> SecurityScheme {
    SecurityScheme::ApiKey(place(ApiKeyValue::with_description(name, description)))
}

/// A `Problem` whose `errors` is always there.
fn validation_problem() -> RefOr<utoipa::openapi::schema::Schema> {
    AllOfBuilder::new()
        .item(Ref::from_schema_name(Problem::name()))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .required("errors"),
        )
        .description(Some(
            "A `422 validation_failed` problem: `errors` lists every rule the request breaks.",
        ))
        .into()
}

/// A problem response: its description names the `code`s it stands for.
fn problem(description: &str, schema: &str) -> ResponseBuilder {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content)
}

fn with_header(response: ResponseBuilder, name: &str, schema: Type, description: &str) -> Response {
    let header = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(schema)))
        .description(Some(description))
        .build();
    response.header(name, header).build()
}

fn unauthorized(description: &str) -> Response {
    with_header(
        problem(description, "Problem"),
        "WWW-Authenticate",
        Type::String,
        "`Bearer`, with `error=\"invalid_token\"` when a credential was sent.",
    )
}

fn unavailable(description: &str) -> Response {
    with_header(
        problem(description, "Problem"),
        "Retry-After",
        Type::Integer,
        "Seconds to wait before trying again.",
    )
}

fn rate_limited(description: &str) -> Response {
    let integer = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
            .description(Some(description))
            .build()
    };
    problem(description, "Problem")
        .header(
            "Retry-After",
            integer("Seconds to wait before trying again."),
        )
        .header(
            "RateLimit-Limit",
            integer("Requests allowed in the window."),
        )
        .header(
            "RateLimit-Remaining",
            integer("Requests left in the window (0)."),
        )
        .header(
            "RateLimit-Reset",
            integer("Seconds until the quota is whole again."),
        )
        .build()
}

/// Declares the reusable problem responses: one type each, for `response = …` in
/// `#[utoipa::path]`, and the list that puts them all in the document's components.
macro_rules! problem_responses {
    ($($(#[doc = $doc:literal])* $name:ident => $response:expr;)+) => {
        $(
            $(#[doc = $doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), RefOr::T($response))
                }
            }
        )+

        fn problem_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as ToResponse>::response()),+]
        }
    };
}

problem_responses! {
    /// 400 for every operation that reads a JSON body.
    InvalidJson => problem("`invalid_json`: the body is not valid JSON (or not UTF-8).", "Problem").build();
    /// 400 for the operations that take an emailed link's token.
    InvalidJsonOrLinkToken => problem(
        "`invalid_json`: the body is not valid JSON; `invalid_token`: the link's token is \
         unknown, already used or expired.",
        "Problem",
    ).build();
    /// 401 for the operations behind an access token.
    AccessTokenRefused => unauthorized(
        "`missing_credentials`: no `Authorization: Bearer` token; `invalid_token`: the token is \
         malformed, badly signed, or its session was revoked; `token_expired`: it is past `exp`.",
    );
    /// 401 of login.
    LoginRefused => unauthorized(
        "`invalid_credentials`: the email or the password is wrong (the same answer, in about \
         the same time, either way).",
    );
    /// 401 of refresh.
    RefreshRefused => unauthorized(
        "`missing_credentials`: neither a `refresh_token` in the body nor the refresh cookie; \
         `invalid_token`: the refresh token is unknown, expired or its session revoked; \
         `refresh_token_reused`: it was already rotated out (outside the grace period), so its \
         whole session is now revoked.",
    );
    /// 401 of logout.
    LogoutRefused => unauthorized(
        "`missing_credentials`: no bearer token, no `refresh_token` and no refresh cookie; \
         `invalid_token` or `token_expired`: the credential is not valid, or its session was \
         already revoked.",
    );
    /// 401 of the internal routes.
    ServiceAuthRefused => unauthorized(
        "`missing_credentials`: no `X-Service-Auth`; `invalid_token`: it is not the configured \
         secret.",
    );
    /// 403 of the operations that ask for the password again.
    PasswordRefused => problem(
        "`invalid_credentials`: the password given to confirm the change is wrong; \
         `email_not_verified`: `SERVAUTH_REQUIRE_VERIFIED_EMAIL` is set and the caller's \
         address is not verified yet.",
        "Problem",
    ).build();
    /// 403 of refresh.
    RefreshForbidden => problem(
        "`csrf_failed`: the refresh cookie came without the session's `X-CSRF-Token`, or from \
         an origin that is not allowed; `email_not_verified`: `SERVAUTH_REQUIRE_VERIFIED_EMAIL` \
         is set and the address is not verified yet.",
        "Problem",
    ).build();
    /// 403 of the operations that accept the refresh cookie.
    CsrfFailed => problem(
        "`csrf_failed`: the refresh cookie came without the session's `X-CSRF-Token`, or from \
         an origin that is not allowed.",
        "Problem",
    ).build();
    /// 403 of login and the signed-in reads when verified addresses are required.
    EmailNotVerified => problem(
        "`email_not_verified`: `SERVAUTH_REQUIRE_VERIFIED_EMAIL` is set and the address is not \
         verified yet (at login: the password was right); `account_banned`: an admin banned \
         the account (told only once the password, passkey or second factor was right).",
        "Problem",
    ).build();
    /// 404 of a session of the caller's.
    SessionNotFound => problem(
        "`not_found`: the caller has no live session with this id (another user's, an unknown \
         or a malformed id alike).",
        "Problem",
    ).build();
    /// 404 of the internal user lookup.
    UserNotFound => problem(
        "`not_found`: no user has this id (or the internal routes are not enabled).",
        "Problem",
    ).build();
    /// 403 of the admin routes.
    AdminRefused => problem(
        "`forbidden`: the access token's user is not an admin (its stored role, not a claim); \
         `email_not_verified`: `SERVAUTH_REQUIRE_VERIFIED_EMAIL` is set and the admin's \
         address is not verified.",
        "Problem",
    ).build();
    /// 404 of the admin routes about one user.
    AdminUserNotFound => problem(
        "`not_found`: no user (or no session of the user) has this id.",
        "Problem",
    ).build();
    /// 409 of the admin changes that could remove the last admin.
    LastAdmin => problem(
        "`last_admin`: the change would leave no admin who can sign in (none unbanned).",
        "Problem",
    ).build();
    /// 404 of the internal routes when they are not mounted.
    InternalDisabled => problem(
        "`not_found`: the internal routes are not enabled (`SERVAUTH_INTERNAL_SECRET` is unset; \
         for forward-auth, `SERVAUTH_FORWARD_AUTH_ALLOW` as well).",
        "Problem",
    ).build();
    /// 403 of forward-auth.
    GatewayRefused => problem(
        "`forbidden`: the caller is no gateway servauth knows (no valid `X-Service-Auth`, and \
         its address is not in `SERVAUTH_FORWARD_AUTH_ALLOW`); `email_not_verified`: \
         `SERVAUTH_REQUIRE_VERIFIED_EMAIL` is set and the user's address is not verified.",
        "Problem",
    ).build();
    /// 409 of the operations that set an email address or a username.
    AccountConflict => problem(
        "`email_taken`: another account has this email address; `username_taken`: another \
         account has this username (both compared case-insensitively).",
        "Problem",
    ).build();
    /// 409 of email verification.
    EmailTaken => problem(
        "`email_taken`: the link confirms a change to an address another account took meanwhile.",
        "Problem",
    ).build();
    /// 408 for every operation that reads a JSON body.
    RequestTimeout => problem(
        "`request_timeout`: the body did not arrive whole within `SERVAUTH_BODY_TIMEOUT`; the \
         connection is closed.",
        "Problem",
    ).build();
    /// 413 for every operation that reads a JSON body.
    PayloadTooLarge => problem("`payload_too_large`: the body is over 64 KiB.", "Problem").build();
    /// 415 for every operation that reads a JSON body.
    UnsupportedMediaType => problem(
        "`unsupported_media_type`: a body without `Content-Type: application/json`.",
        "Problem",
    ).build();
    /// 422 for every operation that reads a JSON body.
    ValidationFailed => problem(
        "`validation_failed`: missing or ill-typed fields, a body that is not a JSON object, or \
         values the input rules reject; `errors` lists each.",
        "ValidationProblem",
    ).build();
    /// 401 of completing a sign-in with its second factor.
    SecondFactorRefused => unauthorized(
        "`invalid_mfa_token`: the `mfa_token` is unknown, used, expired (5 minutes) or sent from \
         another client address; `invalid_code`: the code or recovery code is wrong, already \
         used, or out of its window.",
    );
    /// 403 of the changes that need a recent authentication.
    StepUpRequired => problem(
        "`reauthentication_required`: the session's last authentication is older than \
         `SERVAUTH_REAUTH_MAX_AGE` (or, with a second factor enrolled, did not use it): \
         `POST /auth/reauthenticate` first; `invalid_code`: the code given is wrong; \
         `invalid_credentials`: the password given is wrong.",
        "Problem",
    ).build();
    /// 409 of the second-factor operations.
    FactorConflict => problem(
        "The factors are not in the state this needs: `totp_already_enabled`, \
         `totp_not_pending`, `no_second_factor`, `too_many_passkeys`, \
         `passkey_already_registered`, `no_passkey` or `webauthn_not_started`.",
        "Problem",
    ).build();
    /// 400 of the passkey ceremonies.
    PasskeyRefused => problem(
        "`webauthn_failed`: the authenticator's response did not verify (malformed, another \
         challenge, origin or relying party, a bad signature, a signature counter gone \
         backwards); `invalid_ceremony`: the `ceremony_token` is unknown, used or expired; \
         `invalid_json`.",
        "Problem",
    ).build();
    /// 404 of the passkey operations.
    PasskeyNotFound => problem(
        "`not_found`: the caller has no passkey with this id; `passkeys_unavailable`: the \
         WebAuthn settings (`SERVAUTH_WEBAUTHN_RP_ID`, `SERVAUTH_WEBAUTHN_ORIGINS`) make no \
         valid relying party.",
        "Problem",
    ).build();
    /// 429 of the operations limited per client IP (and, for login, per account).
    RateLimited => rate_limited(
        "`rate_limited`: too many requests from this client (`SERVAUTH_RATE_LIMIT`), or, at \
         login, too many failed logins for this address (`SERVAUTH_LOGIN_FAILURE_LIMIT`; the \
         same for addresses without an account).",
    );
    /// 503 for every operation that needs the database.
    NotReady => unavailable(
        "`not_ready`: the server is still starting (database, migrations, keys); `timeout`: \
         no answer within `SERVAUTH_REQUEST_TIMEOUT` (what the request started still completes).",
    );
    /// 503 for the operations that hash a password.
    NotReadyOrOverloaded => unavailable(
        "`not_ready`: the server is still starting; `overloaded`: too many passwords are \
         waiting to be hashed; `timeout`: no answer within `SERVAUTH_REQUEST_TIMEOUT` (what \
         the request started still completes).",
    );
}

/// 408, 413, 415 and 422: how [`ApiJson`](super::ApiJson) refuses a body, for every operation that
/// reads one. (Each lists its 400 itself: a few give it another `code` as well.)
pub struct JsonBodyProblems;

impl IntoResponses for JsonBodyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("408", RequestTimeout::response().0),
            ("413", PayloadTooLarge::response().0),
            ("415", UnsupportedMediaType::response().0),
            ("422", ValidationFailed::response().0),
        ]
        .into_iter()
        .map(|(status, name)| (status.to_owned(), Ref::from_response_name(name).into()))
        .collect()
    }
}

/// The documented `role` of a user: the values `store::Role` serializes to.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "documents `store::Role`; never built")
)]
pub enum Role {
    User,
    Admin,
}

/// The documented `client` of login and register: the values `domain::ClientKind` reads.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "documents `domain::ClientKind`; never built")
)]
pub enum ClientKind {
    /// The default: the refresh token in an HttpOnly cookie, a CSRF token in the body.
    Browser,
    /// The refresh token in the body; no cookies, no CSRF token.
    Native,
}

/// 200 of forward-auth: the caller, in headers, for the gateway to pass upstream.
pub struct ForwardAuthAllowed;

impl<'r> ToResponse<'r> for ForwardAuthAllowed {
    fn response() -> (&'r str, RefOr<Response>) {
        let header = |format: Option<&str>, description: &str| {
            let mut schema = ObjectBuilder::new().schema_type(Type::String);
            if let Some(format) = format {
                schema = schema.format(Some(utoipa::openapi::schema::SchemaFormat::Custom(
                    format.to_owned(),
                )));
            }
            HeaderBuilder::new()
                .schema(Some(schema))
                .description(Some(description))
                .build()
        };
        let response = ResponseBuilder::new()
            .description("The request may go on: who made it, and how they authenticated. No body.")
            .header("X-Auth-User-Id", header(Some("uuid"), "The user's id."))
            .header(
                "X-Auth-Session-Id",
                header(Some("uuid"), "The session's id."),
            )
            .header(
                "X-Auth-Role",
                header(None, "`user` or `admin` (the stored role, now)."),
            )
            .header("X-Auth-Email", header(None, "The user's email address."))
            .header(
                "X-Auth-Email-Verified",
                header(
                    None,
                    "`true` or `false` (now, not when the token was issued).",
                ),
            )
            .header(
                "X-Auth-Amr",
                header(
                    None,
                    "How the user authenticated (RFC 8176), comma-separated: `pwd`, `pwd,otp`, …",
                ),
            )
            .build();
        ("ForwardAuthAllowed", RefOr::T(response))
    }
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema as _;

    use super::*;
    use crate::domain;
    use crate::store;

    fn documented_values(schema: RefOr<utoipa::openapi::schema::Schema>) -> Vec<serde_json::Value> {
        let schema = serde_json::to_value(schema).unwrap();
        schema["enum"].as_array().unwrap().clone()
    }

    /// Each mirror documents the wire value of every variant of the real type, and nothing
    /// else. The matches are exhaustive: a new variant does not compile until it is mirrored.
    #[test]
    fn mirrored_enums_match_the_wire() {
        let roles = [store::Role::User, store::Role::Admin].map(|role| match role {
            store::Role::User => (role, Role::User),
            store::Role::Admin => (role, Role::Admin),
        });
        let documented = documented_values(Role::schema());
        assert_eq!(documented.len(), roles.len());
        for (role, _) in roles {
            assert!(documented.contains(&serde_json::to_value(role).unwrap()));
        }

        let kinds =
            [domain::ClientKind::Browser, domain::ClientKind::Native].map(|kind| match kind {
                domain::ClientKind::Browser => (kind, ClientKind::Browser),
                domain::ClientKind::Native => (kind, ClientKind::Native),
            });
        let documented = documented_values(ClientKind::schema());
        assert_eq!(documented.len(), kinds.len());
        for value in documented {
            let parsed: domain::ClientKind = serde_json::from_value(value).unwrap();
            assert!(kinds.iter().any(|(kind, _)| *kind == parsed));
        }
    }

    /// `ProblemFieldError` documents exactly the fields `FieldError` serializes.
    #[test]
    fn field_error_mirror_has_the_wire_fields() {
        let wire = serde_json::to_value(domain::FieldError::new("email", "required", "x")).unwrap();
        let documented = serde_json::to_value(ProblemFieldError::schema()).unwrap();
        let mut wire: Vec<_> = wire.as_object().unwrap().keys().cloned().collect();
        let mut documented: Vec<_> = documented["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        wire.sort();
        documented.sort();
        assert_eq!(wire, documented);
    }
}
