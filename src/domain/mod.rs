//! The rules of the server, with no HTTP and no SQL: identity types parsed once at the edge
//! (an [`Email`] that exists is valid), password policy and hashing, tokens, and the use
//! cases ([`Accounts`], [`Sessions`]). Errors leave as [`AuthError`].

mod accounts;
mod email;
mod error;
mod hashing;
mod keys;
mod password;
mod recovery;
mod service_auth;
mod sessions;
mod stored_hash;
mod tokens;
mod username;

pub use accounts::{
    AccountMail, Accounts, PasswordLogin, ProfileUpdate, Registration, new_account,
};
pub use email::Email;
pub use error::{AuthError, FieldError};
pub use hashing::{Admission, HashError, PasswordHashing, Verification};
pub use keys::{KeySource, RELOAD_EVERY, SigningKeys};
pub use password::{Password, PasswordPolicy};
pub use service_auth::ServiceSecret;
pub use sessions::{
    Caller, ClientKind, ClientMeta, IssuedSession, Lifetimes, PresentedRefresh, Sessions,
};
pub use stored_hash::{StoredHash, StoredHashError};
pub use tokens::{
    AccessClaims, AccessTokens, TokenError, generate_signing_key, opaque_token, token_hash,
};
pub use username::Username;
