//! The endpoints (wire spec §8), each over the domain services. Bodies and fields are
//! Better Auth's; the rules behind them are servauth's (see `docs/API.md`, "Better Auth
//! face", for where servauth is stricter).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::FaceError;
use super::{Bodies, Call, expire_session, expose, json, origin};
use crate::app::AppState;
use crate::domain::{
    AuthError, Email, LoginAttempt, OpenedTokenSession, ProfileUpdate, Registration,
    better_auth_lifetimes,
};
use crate::store::{SessionRecord, UserRecord};

type Answer = Result<Response, FaceError>;

/// Better Auth's date format: UTC with exactly three fraction digits and `Z` (the client
/// revives only those into `Date`s).
fn date(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The id this face shows for a user: the one it had in Better Auth when it was imported
/// from there (the app's own rows are keyed by it), servauth's otherwise.
fn face_user_id(user: &UserRecord) -> String {
    user.better_auth_id
        .clone()
        .unwrap_or_else(|| user.id.to_string())
}

/// Better Auth's `User`. A user without a display name (registered on the REST face) shows
/// `""`: Better Auth's `name` is a string.
fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": face_user_id(user),
        "name": user.name.as_deref().unwrap_or(""),
        "email": user.email,
        "emailVerified": user.email_verified,
        "image": user.image,
        "createdAt": date(user.created_at),
        "updatedAt": date(user.updated_at),
    })
}

/// Better Auth's `Session`. `token` is the raw session token for the caller's own session;
/// for any other (its token is not stored, only its hash) it is the session's id, which
/// `revoke-session` takes in place of a token. `updatedAt` is the last slide.
/// `user` is the session's owner.
fn session_json(session: &SessionRecord, user: &UserRecord, token: &str) -> Value {
    json!({
        "id": session.id.to_string(),
        "token": token,
        "userId": face_user_id(user),
        "expiresAt": date(session.expires_at),
        "ipAddress": session.ip.as_deref().unwrap_or(""),
        "userAgent": session.user_agent.as_deref().unwrap_or(""),
        "createdAt": date(session.created_at),
        "updatedAt": date(session.last_used_at),
    })
}

fn secret(value: String) -> SecretString {
    SecretString::from(value)
}

/// `{token, user}`, the answer of the endpoints that may open a session (`token: null`
/// when they do not).
fn token_and_user(token: Option<&str>, user: &UserRecord) -> Value {
    json!({"token": token, "user": user_json(user)})
}

/// The `{token, user}` answer for a session just opened, with its cookie.
fn signed_in(call: &Call, opened: &OpenedTokenSession, user: &UserRecord) -> Response {
    call.with_session(
        json(token_and_user(Some(&opened.token), user)),
        &opened.token,
        &opened.session,
    )
}

/// Better Auth's `[body] <field>: expected string` for a body field of another kind.
fn not_a_string(field: &str, value: &Value) -> FaceError {
    FaceError::validation(
        "body",
        field,
        &format!(
            "Invalid input: expected string, received {}",
            super::kind(Some(value))
        ),
    )
}

/// `POST /sign-up/email`: registers through `Accounts::register` (servauth's password
/// policy, hashing pool and verification mail) and signs in, unless verified emails are
/// required (then `{token: null, user}` and no session, as Better Auth does).
pub async fn sign_up(State(state): State<AppState>, request: Request) -> Response {
    answer(sign_up_inner(&state, request).await)
}

async fn sign_up_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::JsonOrForm).await?;
    let name = call.string("name")?;
    let email = call.string("email")?;
    let password = call.string("password")?;
    let image = call.optional_string("image")?;
    let remember = call.optional_bool("rememberMe")?.unwrap_or(true);
    call.optional_string("callbackURL")?;
    origin::check_login_csrf(&call.face, &call.headers)?;
    // Better Auth keeps addresses lower-cased; servauth compares them case-insensitively
    // either way, so this changes only what is shown.
    let email = email.trim().to_lowercase();
    let accounts = &call.services.accounts;
    let user = accounts
        .register(Registration {
            email: Some(email),
            password: Some(secret(password)),
            username: None,
            name: Some(name),
            image,
        })
        .await?;
    if accounts.requires_verified_email() {
        return Ok(json(token_and_user(None, &user)));
    }
    let opened = call.open_session(&user, None, remember).await?;
    Ok(signed_in(&call, &opened, &user))
}

/// `POST /sign-in/email`: the password through `Accounts::login` (the per-account
/// throttle, padding and re-hashing of the REST face), then a new session.
pub async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    answer(sign_in_inner(&state, request).await)
}

async fn sign_in_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::JsonOrForm).await?;
    let email = call.string("email")?;
    let password = call.string("password")?;
    let callback = call.optional_string("callbackURL")?;
    let remember = call.optional_bool("rememberMe")?.unwrap_or(true);
    origin::check_login_csrf(&call.face, &call.headers)?;
    if Email::parse(&email, "email").is_err() {
        return Err(FaceError::api(400, "INVALID_EMAIL", "Invalid email"));
    }
    let login = call
        .services
        .accounts
        .login(LoginAttempt {
            email: Some(email),
            password: Some(secret(password)),
            device_token: None,
            ip: call.meta.ip,
        })
        .await?;
    // An account with a second factor never gets a session from the password alone. Better
    // Auth's two-factor plugin answers this, without a session; its verify endpoints are
    // not part of this face, so such users sign in through `POST /auth/login` and
    // `POST /auth/mfa/verify` (or with a passkey).
    let factors = call
        .services
        .accounts
        .factor_summary(login.user.id)
        .await?
        .second_factors;
    if !factors.is_empty() {
        tracing::info!(user.id = %login.user.id, "Better Auth sign-in stopped: the account has a second factor");
        return Ok(json(json!({
            "twoFactorRedirect": true,
            "twoFactorMethods": factors,
        })));
    }
    let opened = call
        .open_session(&login.user, Some(login.password_hash), remember)
        .await?;
    let mut body = json!({
        "redirect": callback.is_some(),
        "token": opened.token,
        "user": user_json(&login.user),
    });
    if let Some(url) = &callback {
        body["url"] = Value::String(url.clone());
    }
    let mut response = json(body);
    if let Some(url) = callback
        .as_deref()
        .and_then(|url| HeaderValue::from_str(url).ok())
    {
        response.headers_mut().insert(header::LOCATION, url);
    }
    Ok(call.with_session(response, &opened.token, &opened.session))
}

/// `POST /sign-out`: ends the presented session, if any, and expires the cookies; always
/// `{success: true}`.
pub async fn sign_out(State(state): State<AppState>, request: Request) -> Response {
    answer(sign_out_inner(&state, request).await)
}

async fn sign_out_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    if let Some(resolved) = call.session(true).await? {
        call.services
            .sessions
            .revoke_token(resolved.caller.caller.user.id, &resolved.token)
            .await?;
    }
    let mut response = json(json!({"success": true}));
    expire_session(&call.face, &mut response);
    Ok(response)
}

/// `GET /get-session`: `{session, user}` or `null`, sliding the session when it is due
/// (then the cookie is re-issued), with `set-auth-jwt` (a servauth access token for the
/// session) whenever there is one.
pub async fn get_session(State(state): State<AppState>, request: Request) -> Response {
    let mut response = answer(get_session_inner(&state, request).await);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn get_session_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let presented = call.presented();
    let Some(resolved) = call.session(false).await? else {
        let mut response = json(Value::Null);
        // A validly signed token of no live session: its cookies go (a bad signature is
        // left alone, as Better Auth leaves it).
        if matches!(presented, super::Presented::Token(_)) {
            expire_session(&call.face, &mut response);
        }
        return Ok(response);
    };
    let sessions = &call.services.sessions;
    let mut session = resolved.caller.session.clone();
    let mut slid = false;
    if !call.dont_remember()
        && !call.query_flag("disableRefresh")
        && let Some(updated) = sessions.slide(&session).await?
    {
        session = updated;
        slid = true;
    }
    let user = &resolved.caller.caller.user;
    let mut response = json(json!({
        "session": session_json(&session, user, &resolved.token),
        "user": user_json(user),
    }));
    if slid {
        response = call.with_session(response, &resolved.token, &session);
    }
    let jwt = sessions.recent_access_token_for(&resolved.caller)?;
    if let Ok(value) = HeaderValue::from_str(&jwt) {
        response.headers_mut().insert("set-auth-jwt", value);
        expose(&mut response, "set-auth-jwt");
    }
    Ok(response)
}

/// `POST /get-session`: Better Auth answers 405 unless `deferSessionRefresh` is on (it is
/// not here).
pub async fn get_session_post() -> Response {
    FaceError::api(
        405,
        "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED",
        "POST method requires deferSessionRefresh to be enabled in session config",
    )
    .into_response()
}

/// `GET /list-sessions`: the user's live sessions of both faces. Needs a fresh session
/// (opened within Better Auth's `freshAge`, a day), as Better Auth 1.7 does.
pub async fn list_sessions(State(state): State<AppState>, request: Request) -> Response {
    answer(list_sessions_inner(&state, request).await)
}

async fn list_sessions_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let resolved = call.require_session(false).await?;
    let sessions = &call.services.sessions;
    let current = &resolved.caller.session;
    if sessions.now() - current.created_at >= better_auth_lifetimes::FRESH_AGE {
        return Err(FaceError::api(
            403,
            "SESSION_NOT_FRESH",
            "Session is not fresh",
        ));
    }
    let user = &resolved.caller.caller.user;
    let list: Vec<Value> = sessions
        .list(&resolved.caller.caller)
        .await?
        .iter()
        .map(|session| {
            if session.id == current.id {
                session_json(session, user, &resolved.token)
            } else {
                session_json(session, user, &session.id.to_string())
            }
        })
        .collect();
    Ok(json(Value::Array(list)))
}

/// `POST /revoke-session {token}`: ends one of the caller's sessions, named by its token or
/// by the handle `list-sessions` shows for it (its id); always `{status: true}`.
pub async fn revoke_session(State(state): State<AppState>, request: Request) -> Response {
    answer(revoke_session_inner(&state, request).await)
}

async fn revoke_session_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let token = call.string("token")?;
    let resolved = call.require_session(true).await?;
    let sessions = &call.services.sessions;
    let caller = &resolved.caller.caller;
    match Uuid::parse_str(&token) {
        Ok(id) => match sessions.revoke(caller, id).await {
            Ok(()) | Err(AuthError::NotFound) => {}
            Err(error) => return Err(error.into()),
        },
        Err(_) => {
            sessions.revoke_token(caller.user.id, &token).await?;
        }
    }
    Ok(json(json!({"status": true})))
}

/// `POST /revoke-sessions`: ends every session of the caller's, this one included, and
/// expires the cookies (as Better Auth 1.7.25 does).
pub async fn revoke_sessions(State(state): State<AppState>, request: Request) -> Response {
    answer(revoke_sessions_inner(&state, request).await)
}

async fn revoke_sessions_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let resolved = call.require_session(true).await?;
    call.services
        .sessions
        .revoke_all_but(&resolved.caller.caller, None)
        .await?;
    let mut response = json(json!({"status": true}));
    expire_session(&call.face, &mut response);
    Ok(response)
}

/// `POST /revoke-other-sessions`: ends every session of the caller's but this one.
pub async fn revoke_other_sessions(State(state): State<AppState>, request: Request) -> Response {
    answer(revoke_other_sessions_inner(&state, request).await)
}

async fn revoke_other_sessions_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let resolved = call.require_session(true).await?;
    let keep = resolved.caller.session.id;
    call.services
        .sessions
        .revoke_all_but(&resolved.caller.caller, Some(keep))
        .await?;
    Ok(json(json!({"status": true})))
}

/// `POST /update-user {name?, image?}`: through `Accounts::update_profile` (servauth's
/// rules for both); `{status: true}` and the session cookie re-issued.
pub async fn update_user(State(state): State<AppState>, request: Request) -> Response {
    answer(update_user_inner(&state, request).await)
}

async fn update_user_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let Some(Value::Object(fields)) = &call.body else {
        return Err(FaceError::api(
            400,
            "BODY_MUST_BE_AN_OBJECT",
            "Body must be an object",
        ));
    };
    let resolved = call.require_session(false).await?;
    if fields.contains_key("email") {
        return Err(FaceError::api(
            400,
            "EMAIL_CAN_NOT_BE_UPDATED",
            "Email can not be updated",
        ));
    }
    let name = match fields.get("name") {
        None => None,
        Some(Value::String(name)) => Some(Some(name.clone())),
        Some(other) => return Err(not_a_string("name", other)),
    };
    let image = match fields.get("image") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(image)) => Some(Some(image.clone())),
        Some(other) => return Err(not_a_string("image", other)),
    };
    if name.is_none() && image.is_none() {
        return Err(FaceError::message(400, "No fields to update"));
    }
    call.services
        .accounts
        .update_profile(
            &resolved.caller.caller,
            ProfileUpdate {
                name,
                image,
                ..ProfileUpdate::default()
            },
        )
        .await?;
    Ok(call.with_session(
        json(json!({"status": true})),
        &resolved.token,
        &resolved.caller.session,
    ))
}

/// `POST /change-password {currentPassword, newPassword, revokeOtherSessions?}`: through
/// `Accounts::change_password`, which always ends the other sessions (servauth's rule).
/// With `revokeOtherSessions: true` this session is replaced by a new one too, whose token
/// is answered and set, as Better Auth does.
pub async fn change_password(State(state): State<AppState>, request: Request) -> Response {
    answer(change_password_inner(&state, request).await)
}

async fn change_password_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let new_password = call.string("newPassword")?;
    let current_password = call.string("currentPassword")?;
    let revoke_others = call.optional_bool("revokeOtherSessions")?.unwrap_or(false);
    let resolved = call.require_session(false).await?;
    let caller = &resolved.caller.caller;
    let accounts = &call.services.accounts;
    accounts
        .change_password(
            caller,
            Some(secret(current_password)),
            Some(secret(new_password)),
        )
        .await?;
    let user = accounts
        .find(caller.user.id)
        .await?
        .ok_or(AuthError::InvalidToken)?;
    if !revoke_others {
        return Ok(json(token_and_user(None, &user)));
    }
    let opened = call
        .open_session(&user, None, resolved.caller.session.remember)
        .await?;
    // The new session stands for the same authentication as the one it replaces (with its
    // second factor, if any), just renewed by the password.
    call.services
        .accounts
        .record_authentication(opened.session.id, &resolved.caller.session.amr)
        .await?;
    call.services
        .sessions
        .revoke_token(user.id, &resolved.token)
        .await?;
    Ok(signed_in(&call, &opened, &user))
}

/// `GET /token` (JWT plugin): a servauth access token for the session (`sid` = its id), so
/// `/api/internal/validate` and every servauth resource server accept it.
pub async fn token(State(state): State<AppState>, request: Request) -> Response {
    answer(token_inner(&state, request).await)
}

async fn token_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let resolved = call.require_session(false).await?;
    let token = call.services.sessions.access_token_for(&resolved.caller)?;
    Ok(json(json!({"token": token})))
}

/// `GET /jwks` (JWT plugin): the keys of `/.well-known/jwks.json`.
pub async fn jwks(State(state): State<AppState>) -> Response {
    match state.services() {
        Some(services) => json(services.sessions.access_tokens().jwks().clone()),
        None => FaceError::Auth(AuthError::Overloaded).into_response(),
    }
}

/// `GET /ok`.
pub async fn ok() -> Response {
    json(json!({"ok": true}))
}

/// `GET /error?error=CODE`: Better Auth's plain error page; a code outside
/// `['A-Za-z0-9_-]` reads as `UNKNOWN`. Nothing of the query reaches the page unescaped.
pub async fn error_page(request: Request) -> Response {
    let code = request
        .uri()
        .query()
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "error")
                .map(|(_, value)| value.into_owned())
        })
        .filter(|code| {
            !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '\'' | '_' | '-'))
        })
        .unwrap_or_else(|| "UNKNOWN".to_owned());
    let code = html_escape::encode_text(&code);
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Error</title></head>\
         <body><h1>Something went wrong</h1><p>Error code: <code>{code}</code></p></body></html>"
    );
    let mut response = page.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn answer(result: Answer) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /delete-user {password}`: through `Accounts::delete`, which always re-checks the
/// password (servauth's rule): without one the answer is Better Auth's `400
/// SESSION_EXPIRED`, as for a session too old to delete without re-authentication.
pub async fn delete_user(State(state): State<AppState>, request: Request) -> Response {
    answer(delete_user_inner(&state, request).await)
}

async fn delete_user_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let password = match &call.body {
        Some(Value::Object(_)) => call.optional_string("password")?,
        _ => None,
    };
    let resolved = call.require_session(false).await?;
    let Some(password) = password else {
        return Err(FaceError::api(
            400,
            "SESSION_EXPIRED",
            "Session expired. Re-authenticate to perform this action.",
        ));
    };
    call.services
        .accounts
        .delete(&resolved.caller.caller, Some(secret(password)))
        .await?;
    let mut response = json(json!({"success": true, "message": "User deleted"}));
    expire_session(&call.face, &mut response);
    Ok(response)
}

/// `POST /change-email {newEmail, callbackURL?, password}`: servauth's email change
/// (`Accounts::update_profile`): a link to the new address and a notice to the old one; the
/// address moves when the link is used (`verify-email`), and an address that already has an
/// account gets the same answer and no link. Stricter than Better Auth, which asks for no
/// password here: the current password is required, so a stolen session alone cannot move
/// the account to another address (and take it over through a reset).
pub async fn change_email(State(state): State<AppState>, request: Request) -> Response {
    answer(change_email_inner(&state, request).await)
}

async fn change_email_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let new_email = call.string("newEmail")?;
    call.optional_string("callbackURL")?;
    let password = call.optional_string("password")?;
    let resolved = call.require_session(false).await?;
    let caller = &resolved.caller.caller;
    if Email::key_of(&new_email) == Email::key_of(&caller.user.email) {
        return Err(FaceError::message(400, "Email is the same"));
    }
    let Some(password) = password else {
        return Err(FaceError::validation(
            "body",
            "password",
            "servauth asks for the current password to change the email address",
        ));
    };
    let update = ProfileUpdate {
        email: Some(new_email),
        current_password: Some(secret(password)),
        ..ProfileUpdate::default()
    };
    call.services
        .accounts
        .update_profile(caller, update)
        .await?;
    Ok(json(json!({"status": true})))
}

/// `POST /request-password-reset {email, redirectTo?}`: servauth's reset mail (its link
/// goes to `SERVAUTH_APP_URL/reset-password?token=…`, whose page calls `reset-password`);
/// the same answer whether or not the address has an account.
pub async fn request_password_reset(State(state): State<AppState>, request: Request) -> Response {
    answer(request_password_reset_inner(&state, request).await)
}

async fn request_password_reset_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let email = call.string("email")?;
    call.optional_string("redirectTo")?;
    call.services.accounts.forgot_password(Some(email))?;
    Ok(json(json!({
        "status": true,
        "message": "If this email exists in our system, check your email for the reset link",
    })))
}

/// `POST /reset-password {newPassword, token}` (or `?token=`): through
/// `Accounts::reset_password`: single use, and every session of the account ends
/// (servauth's rule; Better Auth keeps them unless configured otherwise).
pub async fn reset_password(State(state): State<AppState>, request: Request) -> Response {
    answer(reset_password_inner(&state, request).await)
}

async fn reset_password_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let new_password = call.string("newPassword")?;
    let token = match call.optional_string("token")? {
        Some(token) => Some(token),
        None => call.query_value("token"),
    };
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return Err(FaceError::api(400, "INVALID_TOKEN", "Invalid token"));
    };
    call.services
        .accounts
        .reset_password(Some(token), Some(secret(new_password)))
        .await
        .map_err(|error| match error {
            // The policy names servauth's field; this face's is `newPassword`.
            AuthError::Validation(mut errors) => {
                for error in &mut errors {
                    if error.field == "password" {
                        "new_password".clone_into(&mut error.field);
                    }
                }
                FaceError::Auth(AuthError::Validation(errors))
            }
            other => other.into(),
        })?;
    Ok(json(json!({"status": true})))
}

/// `POST /send-verification-email {email, callbackURL?}`: with a session, for its own
/// address (`400 EMAIL_MISMATCH`, `400 EMAIL_ALREADY_VERIFIED`); without, the same answer
/// whether or not an unverified account has the address. servauth's link goes to
/// `SERVAUTH_APP_URL/verify-email?token=…`, whose page calls `verify-email`.
pub async fn send_verification_email(State(state): State<AppState>, request: Request) -> Response {
    answer(send_verification_email_inner(&state, request).await)
}

async fn send_verification_email_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let email = call.string("email")?;
    call.optional_string("callbackURL")?;
    let accounts = &call.services.accounts;
    match call.session(true).await? {
        Some(resolved) => {
            let user = &resolved.caller.caller.user;
            if Email::key_of(&email) != Email::key_of(&user.email) {
                return Err(FaceError::api(400, "EMAIL_MISMATCH", "Email mismatch"));
            }
            if user.email_verified {
                return Err(FaceError::api(
                    400,
                    "EMAIL_ALREADY_VERIFIED",
                    "Email is already verified",
                ));
            }
            accounts
                .resend_verification(&resolved.caller.caller)
                .await?;
        }
        None => accounts.resend_verification_to(Some(email))?,
    }
    Ok(json(json!({"status": true})))
}

/// `GET /verify-email?token=…&callbackURL=…`: through `Accounts::verify_email` (a
/// verification or an email-change link; single use). With a `callbackURL` (checked like
/// every redirect target) the answer is a redirect there, `?error=INVALID_TOKEN` on failure.
pub async fn verify_email(State(state): State<AppState>, request: Request) -> Response {
    answer(verify_email_inner(&state, request).await)
}

async fn verify_email_inner(state: &AppState, request: Request) -> Answer {
    let call = Call::read(state, request, Bodies::Json).await?;
    let Some(token) = call.query_value("token") else {
        return Err(FaceError::validation(
            "query",
            "token",
            "Invalid input: expected string, received undefined",
        ));
    };
    let callback = call.query_value("callbackURL");
    if let Some(callback) = &callback {
        origin::check_url(
            &call.face,
            callback,
            "INVALID_CALLBACK_URL",
            "Invalid callbackURL",
        )?;
    }
    // Confirming an email change ends every other session; the confirming client's own (if
    // it sent one that checks out) is kept, as on the REST face.
    let keep = call
        .session(true)
        .await
        .ok()
        .flatten()
        .map(|resolved| resolved.caller.caller.session_id());
    let result = call.services.accounts.verify_email(Some(token), keep).await;
    match (result, callback) {
        (Ok(()), Some(callback)) => Ok(redirect(&callback)),
        (Ok(()), None) => Ok(json(json!({"status": true, "user": null}))),
        (Err(AuthError::UnusableLinkToken | AuthError::EmailTaken), Some(callback)) => {
            let joiner = if callback.contains('?') { '&' } else { '?' };
            Ok(redirect(&format!("{callback}{joiner}error=INVALID_TOKEN")))
        }
        (Err(AuthError::UnusableLinkToken | AuthError::EmailTaken), None) => {
            Err(FaceError::api(401, "INVALID_TOKEN", "Invalid token"))
        }
        (Err(error), _) => Err(error.into()),
    }
}

/// `302` to `location`, empty body (Better Auth's `ctx.redirect`).
fn redirect(location: &str) -> Response {
    let mut response = axum::http::StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `GET /reset-password/{token}?callbackURL=…`: Better Auth's mail callback. A usable token
/// redirects to the callback (resolved against `SERVAUTH_PUBLIC_URL`) with `?token=`, any
/// other with `?error=INVALID_TOKEN`; the token is not used here. servauth's own reset mail
/// links to the app directly; this serves links in Better Auth's shape.
pub async fn reset_password_callback(State(state): State<AppState>, request: Request) -> Response {
    answer(reset_password_callback_inner(&state, request).await)
}

async fn reset_password_callback_inner(state: &AppState, request: Request) -> Answer {
    let token = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .map(|token| super::cookies::decode_component(token).into_owned())
        .unwrap_or_default();
    let call = Call::read(state, request, Bodies::Json).await?;
    let Some(callback) = call.query_value("callbackURL") else {
        return Err(FaceError::validation(
            "query",
            "callbackURL",
            "Invalid input: expected string, received undefined",
        ));
    };
    origin::check_url(
        &call.face,
        &callback,
        "INVALID_CALLBACK_URL",
        "Invalid callbackURL",
    )?;
    let mut target = call
        .face
        .public_url
        .join(&callback)
        .map_err(|_| FaceError::api(403, "INVALID_CALLBACK_URL", "Invalid callbackURL"))?;
    let usable = !token.is_empty() && call.services.accounts.reset_token_is_usable(&token).await?;
    if usable {
        target.query_pairs_mut().append_pair("token", &token);
    } else {
        target
            .query_pairs_mut()
            .append_pair("error", "INVALID_TOKEN");
    }
    Ok(redirect(target.as_str()))
}
