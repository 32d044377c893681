//! `/auth/mfa/...` and `POST /auth/reauthenticate`: TOTP enrolment, recovery codes,
//! completing a sign-in with its second factor, and step-up.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{SessionBody, signed_in};
use crate::app::Services;
use crate::domain::{ClientMeta, FactorProof, FactorSummary, MfaChallenge, RECOVERY_CODE_COUNT};
use crate::http::openapi::{
    AccessTokenRefused, EmailNotVerified, FactorConflict, InvalidJson, JsonBodyProblems, NotReady,
    NotReadyOrOverloaded, PasskeyNotFound, RateLimited, SecondFactorRefused, StepUpRequired,
};
use crate::http::{ApiError, ApiJson, Bearer};

/// The answer of a password check when the account has a second factor: no session yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always `true`.
    #[schema(value_type = bool, pattern = "^true$")]
    mfa_required: bool,
    /// Single use, valid `expires_in` seconds, from this client address only: send it to
    /// `POST /auth/mfa/verify` with the second factor.
    mfa_token: String,
    /// What may complete it: `totp`, `webauthn` (a passkey), `recovery_code`.
    #[schema(example = json!(["totp", "recovery_code"]))]
    factors: Vec<&'static str>,
    #[schema(example = 300)]
    expires_in: i64,
}

impl From<MfaChallenge> for MfaRequired {
    fn from(challenge: MfaChallenge) -> Self {
        Self {
            mfa_required: true,
            mfa_token: challenge.token,
            factors: challenge.factors,
            expires_in: challenge.expires_in,
        }
    }
}

/// A started TOTP enrolment.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollmentBody {
    /// The secret, base32 (to type into an app by hand).
    secret: String,
    /// `otpauth://totp/<issuer>:<email>?secret=...&issuer=...` (SHA-1, 6 digits, 30 s).
    otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    qr_svg: String,
}

/// A code from the authenticator app.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// The 6 digits the app shows now.
    #[schema(value_type = String, required = true, example = "123456")]
    code: Option<String>,
}

/// New recovery codes: shown this once, each good for one sign-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesBody {
    #[schema(example = json!(["abcd-efgh-ijkl", "mnop-qrst-uvwx"]))]
    recovery_codes: Vec<String>,
}

/// The password and a second factor (to turn TOTP off).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DisableTotpRequest {
    #[schema(value_type = String, required = true, format = Password)]
    password: Option<SecretString>,
    /// A current code, or else `recovery_code`.
    #[schema(value_type = Option<String>)]
    code: Option<String>,
    #[schema(value_type = Option<String>)]
    recovery_code: Option<SecretString>,
}

/// A challenge's token and the second factor that completes it: one of `code`,
/// `recovery_code`, `webauthn`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    #[schema(value_type = String, required = true)]
    mfa_token: Option<SecretString>,
    /// 6 digits from the authenticator app.
    #[schema(value_type = Option<String>)]
    code: Option<String>,
    /// One of the recovery codes (`xxxx-xxxx-xxxx`; case, spaces and dashes do not matter).
    #[schema(value_type = Option<String>)]
    recovery_code: Option<SecretString>,
    /// A passkey's assertion (`PublicKeyCredential.toJSON()`) for the options of
    /// `POST /auth/mfa/webauthn/options`.
    #[schema(value_type = Option<Object>)]
    webauthn: Option<serde_json::Value>,
}

/// A challenge's token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaTokenRequest {
    #[schema(value_type = String, required = true)]
    mfa_token: Option<String>,
}

/// WebAuthn request options (`PublicKeyCredentialRequestOptions`, JSON form) for the
/// account's passkeys.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebauthnOptionsBody {
    /// `{"publicKey": {...}}`: pass `publicKey` to
    /// `PublicKeyCredential.parseRequestOptionsFromJSON`.
    #[schema(value_type = Object)]
    options: serde_json::Value,
}

/// The password, to re-authenticate.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReauthenticateRequest {
    #[schema(value_type = String, required = true, format = Password)]
    password: Option<SecretString>,
}

/// A re-authenticated session's new access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReauthenticatedBody {
    /// Carries the new `auth_time` and `amr`.
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    expires_in: i64,
    /// When the user authenticated (now), seconds since the Unix epoch.
    auth_time: i64,
    /// How (RFC 8176): `["pwd"]`, or with the second factor `["pwd", "otp", "mfa"]`.
    amr: Vec<String>,
}

/// What a re-authentication answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReauthenticateAnswer {
    Done(ReauthenticatedBody),
    /// The account has a second factor: complete with it at `POST /auth/mfa/verify`.
    MfaRequired(MfaRequired),
}

/// What completing a challenge answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyAnswer {
    /// A sign-in: the new session (as login answers it).
    #[expect(dead_code, reason = "documents the answer `session_response` builds")]
    Session(Box<SessionBody>),
    /// A re-authentication: the session's new access token.
    Reauthenticated(ReauthenticatedBody),
}

/// The caller's second factors
///
/// Which factors are enrolled and how many recovery codes are left (never a secret).
#[utoipa::path(get, path = "/auth/mfa", tag = "mfa",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's factors.", body = FactorSummary),
        (status = 401, response = AccessTokenRefused),
        (status = 503, response = NotReady),
    ))]
pub async fn get_factors(
    services: Services,
    bearer: Bearer,
) -> Result<Json<FactorSummary>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    Ok(Json(
        services.accounts.factor_summary(caller.user.id).await?,
    ))
}

/// Start a TOTP enrolment
///
/// Answers the secret as an `otpauth://` URI and a QR code; TOTP is active only once a code
/// from it is confirmed (`POST /auth/mfa/totp/confirm`). Starting again replaces an
/// unconfirmed enrolment. Needs a recent authentication (`SERVAUTH_REAUTH_MAX_AGE`).
#[utoipa::path(post, path = "/auth/mfa/totp", tag = "mfa",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The enrolment to scan or type in.", body = TotpEnrollmentBody),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 409, response = FactorConflict),
        (status = 503, response = NotReady),
    ))]
pub async fn enroll_totp(
    services: Services,
    bearer: Bearer,
) -> Result<Json<TotpEnrollmentBody>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let enrollment = services.accounts.enroll_totp(&caller).await?;
    Ok(Json(TotpEnrollmentBody {
        secret: enrollment.secret,
        otpauth_uri: enrollment.uri,
        qr_svg: enrollment.qr_svg,
    }))
}

/// Confirm the TOTP enrolment
///
/// With a current code from the app: TOTP is active from now on, and the answer holds the
/// recovery codes, shown this once. Wrong codes count against the failure throttle.
#[utoipa::path(post, path = "/auth/mfa/totp/confirm", tag = "mfa",
    request_body = CodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "TOTP is on; the recovery codes.", body = RecoveryCodesBody),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 409, response = FactorConflict),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn confirm_totp(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodesBody>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let recovery_codes = services.accounts.confirm_totp(&caller, body.code).await?;
    debug_assert_eq!(recovery_codes.len(), RECOVERY_CODE_COUNT);
    Ok(Json(RecoveryCodesBody { recovery_codes }))
}

/// Turn TOTP off
///
/// Needs the password and a current code or a recovery code. Without another factor the
/// recovery codes go too, and sign-in needs the password only.
#[utoipa::path(delete, path = "/auth/mfa/totp", tag = "mfa",
    request_body = DisableTotpRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "TOTP is off."),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 404, response = PasskeyNotFound),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn disable_totp(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<DisableTotpRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let proof = FactorProof {
        code: body.code,
        recovery_code: body.recovery_code,
        webauthn: None,
    };
    services
        .accounts
        .disable_totp(&caller, body.password, proof)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// New recovery codes
///
/// The old ones stop working. Needs a recent authentication with the second factor.
#[utoipa::path(post, path = "/auth/mfa/recovery-codes", tag = "mfa",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new recovery codes, shown this once.", body = RecoveryCodesBody),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        (status = 409, response = FactorConflict),
        (status = 503, response = NotReady),
    ))]
pub async fn regenerate_recovery_codes(
    services: Services,
    bearer: Bearer,
) -> Result<Json<RecoveryCodesBody>, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    let recovery_codes = services.accounts.regenerate_recovery_codes(&caller).await?;
    Ok(Json(RecoveryCodesBody { recovery_codes }))
}

/// Complete a sign-in with the second factor
///
/// With the `mfa_token` of a login (or of a re-authentication, then with the session's
/// bearer token) and a TOTP code, a recovery code or a passkey assertion. A sign-in answers
/// the session as login does; a re-authentication, the session's new access token. A wrong
/// factor counts against the failure throttle and leaves the token usable until it expires.
#[utoipa::path(post, path = "/auth/mfa/verify", tag = "mfa",
    request_body = VerifyRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The session (sign-in; a browser also gets its cookies), \
            or the new access token (re-authentication).", body = VerifyAnswer,
            headers(("Set-Cookie" = String, description = "Browser sign-ins: the refresh, CSRF and device cookies."))),
        (status = 400, response = InvalidJson),
        (status = 401, response = SecondFactorRefused),
        (status = 403, response = EmailNotVerified),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    ))]
pub async fn verify_second_factor(
    services: Services,
    meta: ClientMeta,
    bearer: Bearer,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let caller_session = match bearer.token() {
        Some(_) => Some(
            services
                .sessions
                .authenticate(bearer.token())
                .await?
                .session_id(),
        ),
        None => None,
    };
    let proof = FactorProof {
        code: body.code,
        recovery_code: body.recovery_code,
        webauthn: body.webauthn,
    };
    let completed = services
        .accounts
        .complete_challenge(body.mfa_token, proof, meta.ip, caller_session)
        .await?;
    if let Some(session_id) = completed.reauthenticated_session {
        services
            .accounts
            .record_authentication(session_id, &completed.amr)
            .await?;
        let body = reauthenticated(&services, &completed.user, session_id).await?;
        return Ok(Json(VerifyAnswer::Reauthenticated(body)).into_response());
    }
    let kind = completed.client;
    let issued = services
        .sessions
        .open_as(
            &completed.user,
            completed.password_hash,
            kind,
            meta,
            &completed.amr,
        )
        .await?;
    Ok(signed_in(&services, kind, completed.user, issued))
}

async fn reauthenticated(
    services: &Services,
    user: &crate::store::UserRecord,
    session_id: uuid::Uuid,
) -> Result<ReauthenticatedBody, ApiError> {
    let (access_token, expires_in, session) = services.sessions.reissue(user, session_id).await?;
    Ok(ReauthenticatedBody {
        access_token,
        token_type: "Bearer",
        expires_in,
        auth_time: session.auth_time.timestamp(),
        amr: session.amr,
    })
}

/// Passkey options for a challenge
///
/// The WebAuthn request options for the account's passkeys, to complete the challenge with
/// one (`webauthn` at `POST /auth/mfa/verify`).
#[utoipa::path(post, path = "/auth/mfa/webauthn/options", tag = "mfa",
    request_body = MfaTokenRequest,
    responses(
        (status = 200, description = "The options for `navigator.credentials.get()`.", body = WebauthnOptionsBody),
        (status = 400, response = InvalidJson),
        (status = 401, response = SecondFactorRefused),
        (status = 404, response = PasskeyNotFound),
        (status = 409, response = FactorConflict),
        JsonBodyProblems,
        (status = 503, response = NotReady),
    ))]
pub async fn start_passkey_second_factor(
    services: Services,
    meta: ClientMeta,
    ApiJson(body): ApiJson<MfaTokenRequest>,
) -> Result<Json<WebauthnOptionsBody>, ApiError> {
    let options = services
        .accounts
        .start_passkey_second_factor(body.mfa_token.as_deref(), meta.ip)
        .await?;
    Ok(Json(WebauthnOptionsBody { options }))
}

/// Re-authenticate
///
/// Proves the password again, for the changes that need a recent authentication
/// (`SERVAUTH_REAUTH_MAX_AGE`). Without a second factor the session counts as authenticated
/// now and the answer is a new access token; with one, the answer is a challenge to complete
/// with it at `POST /auth/mfa/verify` (with this bearer token).
#[utoipa::path(post, path = "/auth/reauthenticate", tag = "mfa",
    request_body = ReauthenticateRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A new access token, or the second-factor challenge.", body = ReauthenticateAnswer),
        (status = 400, response = InvalidJson),
        (status = 401, response = AccessTokenRefused),
        (status = 403, response = StepUpRequired),
        JsonBodyProblems,
        (status = 429, response = RateLimited),
        (status = 503, response = NotReadyOrOverloaded),
    ))]
pub async fn reauthenticate_session(
    services: Services,
    meta: ClientMeta,
    bearer: Bearer,
    ApiJson(body): ApiJson<ReauthenticateRequest>,
) -> Result<Response, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    match services
        .accounts
        .reauthenticate(&caller, body.password, meta.ip)
        .await?
    {
        Some(challenge) => {
            let answer = ReauthenticateAnswer::MfaRequired(challenge.into());
            Ok(Json(answer).into_response())
        }
        None => {
            let body = reauthenticated(&services, &caller.user, caller.session_id()).await?;
            Ok(Json(ReauthenticateAnswer::Done(body)).into_response())
        }
    }
}
