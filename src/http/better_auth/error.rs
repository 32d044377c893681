//! The Better Auth face's one error map: every [`AuthError`] to Better Auth's status and
//! `{message, code}` body (wire spec §3), exhaustively, so that a new domain error cannot
//! reach this face unmapped. servauth's problem+json stays on its own routes.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{AuthError, FieldError};

/// What a request on this face can fail with.
#[derive(Debug)]
pub enum FaceError {
    /// A domain error, mapped by [`auth_error`].
    Auth(AuthError),
    /// A wire error of the face itself: status, Better Auth's code, message.
    Api {
        status: StatusCode,
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// The few Better Auth errors that carry only a message (`"No fields to update"`).
    Message {
        status: StatusCode,
        message: Cow<'static, str>,
    },
    /// `404` with an empty body (unknown path or method, the face switched off).
    NotFound,
}

impl FaceError {
    /// A `{message, code}` error; an unknown status reads as 500.
    pub fn api(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Api {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }

    /// A `{message}` error without a code.
    pub fn message(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Message {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    /// `400 VALIDATION_ERROR` with Better Auth's `[body.field] …` message shape.
    pub fn validation(place: &str, field: &str, message: &str) -> Self {
        let path = if field.is_empty() {
            place.to_owned()
        } else {
            format!("{place}.{field}")
        };
        Self::api(400, "VALIDATION_ERROR", format!("[{path}] {message}"))
    }

    /// `401 UNAUTHORIZED`: the endpoint needs a session and the request has none.
    pub fn unauthorized() -> Self {
        Self::api(401, "UNAUTHORIZED", "Unauthorized")
    }
}

impl From<AuthError> for FaceError {
    fn from(error: AuthError) -> Self {
        Self::Auth(error)
    }
}

impl IntoResponse for FaceError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(error) => auth_error(error),
            Self::Api {
                status,
                code,
                message,
            } => body(status, Some(code), &message),
            Self::Message { status, message } => body(status, None, &message),
            Self::NotFound => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

fn body(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let value = match code {
        Some(code) => json!({"message": message, "code": code}),
        None => json!({"message": message}),
    };
    (status, axum::Json(value)).into_response()
}

/// The map. Session errors are Better Auth's `401 UNAUTHORIZED` whatever their cause (it
/// never tells an expired session from an unknown one); a wrong password on a sensitive
/// change is `400 INVALID_PASSWORD`; a taken address on sign-up `422`.
pub fn auth_error(error: AuthError) -> Response {
    match error {
        AuthError::Validation(errors) => validation_error(&errors).into_response(),
        AuthError::InvalidCredentials => body(
            StatusCode::UNAUTHORIZED,
            Some("INVALID_EMAIL_OR_PASSWORD"),
            "Invalid email or password",
        ),
        AuthError::WrongPassword => body(
            StatusCode::BAD_REQUEST,
            Some("INVALID_PASSWORD"),
            "Invalid password",
        ),
        AuthError::EmailTaken => body(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"),
            "User already exists. Use another email.",
        ),
        AuthError::UsernameTaken => body(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("USER_ALREADY_EXISTS"),
            "User already exists.",
        ),
        AuthError::MissingCredentials
        | AuthError::InvalidToken
        | AuthError::TokenExpired
        | AuthError::RefreshTokenReused => body(
            StatusCode::UNAUTHORIZED,
            Some("UNAUTHORIZED"),
            "Unauthorized",
        ),
        AuthError::EmailNotVerified => body(
            StatusCode::FORBIDDEN,
            Some("EMAIL_NOT_VERIFIED"),
            "Email not verified",
        ),
        AuthError::UnusableLinkToken => body(
            StatusCode::BAD_REQUEST,
            Some("INVALID_TOKEN"),
            "Invalid token",
        ),
        AuthError::CsrfFailed => body(
            StatusCode::FORBIDDEN,
            Some("INVALID_ORIGIN"),
            "Invalid origin",
        ),
        AuthError::RateLimited(decision) => {
            // Better Auth's own 429: a message, no code, and `X-Retry-After` in seconds.
            let mut response = body(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "Too many requests. Please try again later.",
            );
            let seconds = decision.reset.as_secs().max(1);
            let headers = response.headers_mut();
            headers.insert("x-retry-after", HeaderValue::from(seconds));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        AuthError::Overloaded => {
            let mut response = body(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("SERVICE_UNAVAILABLE"),
                "The server is busy. Please try again later.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        AuthError::NotFound | AuthError::PasskeysUnavailable => {
            StatusCode::NOT_FOUND.into_response()
        }
        // The two-factor plugin's codes for the second-factor errors this face can meet.
        AuthError::InvalidCode | AuthError::WrongCode => body(
            StatusCode::UNAUTHORIZED,
            Some("INVALID_CODE"),
            "Invalid code",
        ),
        AuthError::InvalidMfaToken | AuthError::InvalidCeremony => body(
            StatusCode::UNAUTHORIZED,
            Some("INVALID_TWO_FACTOR_COOKIE"),
            "Invalid two factor cookie",
        ),
        AuthError::ReauthenticationRequired => body(
            StatusCode::FORBIDDEN,
            Some("SESSION_NOT_FRESH"),
            "Session is not fresh",
        ),
        AuthError::FactorConflict(_, message) => body(StatusCode::BAD_REQUEST, None, message),
        AuthError::WebauthnFailed => body(
            StatusCode::BAD_REQUEST,
            Some("AUTHENTICATION_FAILED"),
            "Authentication failed",
        ),
        // The admin plugin's code and text for a banned user's sign-in.
        AuthError::AccountBanned => body(
            StatusCode::FORBIDDEN,
            Some("BANNED_USER"),
            "You have been banned from this application",
        ),
        AuthError::Forbidden => body(StatusCode::FORBIDDEN, Some("FORBIDDEN"), "Forbidden"),
        AuthError::LastAdmin => body(
            StatusCode::BAD_REQUEST,
            Some("LAST_ADMIN"),
            "This would leave no admin who can sign in",
        ),
        AuthError::Internal(error) => {
            tracing::error!(error = format!("{error:#}"), "internal error");
            // Better Auth answers unhandled errors with an empty 500.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The error Better Auth gives for a set of broken input rules: the first schema-like
/// error (`VALIDATION_ERROR`) before any password rule, whose codes are Better Auth's
/// (`PASSWORD_TOO_SHORT`, `PASSWORD_TOO_LONG`) or servauth's additions in the same style
/// (`PASSWORD_TOO_COMMON`, `PASSWORD_CONTAINS_EMAIL`).
pub fn validation_error(errors: &[FieldError]) -> FaceError {
    let password = |code: &str| {
        matches!(
            code,
            "password_too_short"
                | "password_too_long"
                | "password_too_common"
                | "password_contains_email"
        )
    };
    if let Some(error) = errors.iter().find(|error| !password(error.code)) {
        let field = camel_case(&error.field);
        let message = match error.field.as_str() {
            "email" if error.code == "invalid_email" => "Invalid email address",
            _ if error.code == "required" => "Invalid input: expected string, received undefined",
            _ => error.message.as_str(),
        };
        return FaceError::validation("body", &field, message);
    }
    match errors.first().map(|error| error.code) {
        Some("password_too_short") => {
            FaceError::api(400, "PASSWORD_TOO_SHORT", "Password too short")
        }
        Some("password_too_long") => FaceError::api(400, "PASSWORD_TOO_LONG", "Password too long"),
        Some("password_too_common") => FaceError::api(
            400,
            "PASSWORD_TOO_COMMON",
            "Password is too common or too easy to guess",
        ),
        Some("password_contains_email") => FaceError::api(
            400,
            "PASSWORD_CONTAINS_EMAIL",
            "Password cannot be the email address or the part before its @",
        ),
        _ => FaceError::validation("body", "", "Invalid input"),
    }
}

/// `new_password` → `newPassword`: servauth's field names as this face's clients spell them.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_camel_cased() {
        assert_eq!(camel_case("new_password"), "newPassword");
        assert_eq!(camel_case("email"), "email");
    }

    #[test]
    fn schema_errors_come_before_password_rules() {
        let errors = vec![
            FieldError::new("password", "password_too_short", "short"),
            FieldError::new("email", "invalid_email", "bad"),
        ];
        let FaceError::Api { code, message, .. } = validation_error(&errors) else {
            panic!("an api error");
        };
        assert_eq!(code, "VALIDATION_ERROR");
        assert_eq!(message, "[body.email] Invalid email address");
        let errors = vec![FieldError::new("new_password", "password_too_long", "long")];
        let FaceError::Api { code, .. } = validation_error(&errors) else {
            panic!("an api error");
        };
        assert_eq!(code, "PASSWORD_TOO_LONG");
    }
}
