use crate::store::StoreError;

/// One rule a field of a request breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The field is missing (or null where a value is needed).
    pub fn required(field: &str) -> Self {
        Self::new(field, "required", format!("`{field}` is required."))
    }

    /// A `required` error for each field flagged missing, in order.
    pub fn missing(fields: &[(&str, bool)]) -> Vec<Self> {
        fields
            .iter()
            .filter(|(_, missing)| *missing)
            .map(|(field, _)| Self::required(field))
            .collect()
    }
}

/// What a use case can fail with. The HTTP layer maps each to a status and `code` in one place.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request's fields break the input rules.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Login with an unknown email or a wrong password (indistinguishable on purpose).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A wrong `current_password`/`password` on a sensitive change of a signed-in user.
    #[error("wrong password")]
    WrongPassword,
    #[error("email taken")]
    EmailTaken,
    #[error("username taken")]
    UsernameTaken,
    /// No credential of the expected kind was sent.
    #[error("missing credentials")]
    MissingCredentials,
    /// A malformed, unknown, revoked or otherwise unacceptable token.
    #[error("invalid token")]
    InvalidToken,
    /// A correct password on an unverified address while verified emails are required.
    #[error("email not verified")]
    EmailNotVerified,
    /// An emailed token (reset, verification) that is unknown, used or expired: `400`.
    #[error("unusable link token")]
    UnusableLinkToken,
    /// A refresh token that was already rotated out: its whole session is now revoked.
    #[error("refresh token reused")]
    RefreshTokenReused,
    /// A cookie-authenticated request without the matching CSRF token or from a foreign
    /// origin.
    #[error("csrf check failed")]
    CsrfFailed,
    /// An access token past its `exp` (and the leeway).
    #[error("token expired")]
    TokenExpired,
    /// A rate limit refused the request (`429`, with when to retry).
    #[error("rate limited")]
    RateLimited(crate::limits::Decision),
    /// The password-hashing queue is full.
    #[error("overloaded")]
    Overloaded,
    #[error("not found")]
    NotFound,
    /// A wrong, reused or out-of-window second-factor code while signing in (`401`).
    #[error("invalid code")]
    InvalidCode,
    /// A wrong second-factor code on a signed-in user's change (`403`, like `WrongPassword`).
    #[error("wrong code")]
    WrongCode,
    /// An `mfa_token` that is unknown, used, expired or presented from another address.
    #[error("invalid mfa token")]
    InvalidMfaToken,
    /// A sensitive change needs a more recent authentication (`SERVAUTH_REAUTH_MAX_AGE`),
    /// with the second factor when one is enrolled.
    #[error("reauthentication required")]
    ReauthenticationRequired,
    /// The factors are not in the state the request needs (`409` with this code and text).
    #[error("factor conflict: {0}")]
    FactorConflict(&'static str, &'static str),
    /// A WebAuthn response that does not verify (malformed, another challenge, origin or RP
    /// id, bad signature, a counter gone backwards).
    #[error("webauthn failed")]
    WebauthnFailed,
    /// A WebAuthn ceremony token that is unknown, used, expired or from another address.
    #[error("invalid ceremony")]
    InvalidCeremony,
    /// Passkeys are not configured (the relying party settings did not make a valid one).
    #[error("passkeys unavailable")]
    PasskeysUnavailable,
    /// A sign-in of a banned user (after its password or passkey checked out): `403`.
    #[error("account banned")]
    AccountBanned,
    /// An authenticated caller without the rights the route needs (a non-admin on `/admin`).
    #[error("forbidden")]
    Forbidden,
    /// An admin change that would leave no admin who can sign in.
    #[error("last admin")]
    LastAdmin,
    /// Anything unexpected; its text is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for AuthError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::UsernameTaken => Self::UsernameTaken,
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}
