//! The rules of the server, with no HTTP and no SQL: identity types parsed once at the edge
//! (an [`Email`] that exists is valid), password policy and hashing, tokens, and the use
//! cases ([`Accounts`], [`Sessions`]). Errors leave as [`AuthError`].

mod accounts;
mod admin;
pub mod audit;
mod email;
mod error;
mod hashing;
mod installation;
mod keys;
mod mfa;
mod passkeys;
mod password;
mod profile;
mod recovery;
mod service_auth;
mod sessions;
mod stored_hash;
mod tokens;
mod username;

pub use accounts::{
    AccountMail, Accounts, LoginAttempt, PasswordLogin, ProfileUpdate, Registration, new_account,
};
pub use admin::{
    Admin, AuditQuery, BanRequest, DEFAULT_PAGE, MAX_PAGE, NewAccount, Page, UserQuery,
};
pub use email::Email;
pub use error::{AuthError, FieldError};
pub use hashing::{Admission, HashError, PasswordHashing, Verification};
pub use installation::{DEVICE_TOKEN_TTL, Device, InstallationKeys};
pub use keys::{
    KeyEncryptionKey, KeySource, OpenKeyError, RELOAD_EVERY, SigningKeys, is_sealed,
    new_stored_signing_key, open_private_key,
};
pub use mfa::{
    AMR_HWK, AMR_MFA, AMR_OTP, AMR_PWD, AMR_SWK, CompletedChallenge, FactorProof, FactorSealing,
    FactorSettings, FactorSummary, MFA_CHALLENGE_TTL, MfaChallenge, RECOVERY_CODE_COUNT,
    TotpEnrollment, totp_step,
};
pub use passkeys::{MAX_PASSKEY_NAME_CHARS, PasskeyCeremony, PasskeyLogin, PasskeyView};
pub use password::{Password, PasswordPolicy};
pub use profile::{MAX_IMAGE_CHARS, MAX_NAME_CHARS, parse_image, parse_name};
pub use service_auth::ServiceSecret;
pub use sessions::{
    BETTER_AUTH_TOKEN_CHARS, Caller, ClientKind, ClientMeta, IssuedSession, Lifetimes,
    OpenedTokenSession, PresentedRefresh, Sessions, TokenCaller, better_auth_lifetimes,
    better_auth_token,
};
pub use stored_hash::{StoredHash, StoredHashError};
pub use tokens::{
    AccessClaims, AccessTokens, TokenError, generate_signing_key, opaque_token, token_hash,
};
pub use username::Username;
