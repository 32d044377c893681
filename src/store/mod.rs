//! Persistence: one [`Store`] trait, one implementation per backend, chosen once from the
//! database URL ([`connect`]) and held as `Arc<dyn Store>`.
//!
//! The trait names what the services need, not tables. Every step that must be atomic
//! (creating a user against the unique indexes, rotating a refresh token, installing the
//! first signing key) is one method, so each backend can use its own locking for it.
//! Times always come from the caller (the injected clock), never from the database's `now()`.

mod admin;
mod batch;
mod cached;
pub(crate) mod factors;
pub mod fanout;
mod outbox;
mod postgres;
pub mod session_cache;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use admin::{
    AdminOutcome, AdminStore, AdminUpdate, AuditFilter, AuditRecord, AuditWrite, Ban, UserFilter,
};
pub use cached::CachedStore;
pub use factors::{
    ChallengeRecord, FactorKind, FactorRecord, FactorStore, NewChallenge, SessionAuthentication,
};
pub use outbox::{DeadMessage, NewMessage, OutboxCounts, OutboxStore, QueuedMessage};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What a store can fail with. Callers match on the first variants; `Database` is the
/// unexpected rest and becomes a 500 without its text reaching the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique email (compared case-insensitively) is already registered.
    #[error("email already taken")]
    EmailTaken,
    /// A unique username (compared case-insensitively) is already taken.
    #[error("username already taken")]
    UsernameTaken,
    /// The database URL is malformed or names an unknown scheme.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Any other database failure (connection, I/O, constraint we did not expect).
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Box::new(error))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Database(Box::new(error))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open (idle or in use).
    pub size: u32,
    /// Open connections waiting for work.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// A user's role. Stored as `'user'` / `'admin'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored form; anything unknown is treated as the least privileged role.
    pub fn from_stored(value: &str) -> Self {
        match value {
            "admin" => Self::Admin,
            _ => Self::User,
        }
    }
}

/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// A display name (Better Auth's `name`), 1 to 100 characters; `None` when unset.
    pub name: Option<String>,
    /// An absolute http(s) URL of the user's picture (Better Auth's `image`).
    pub image: Option<String>,
    pub email_verified: bool,
    pub role: Role,
    pub pending_email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The user's id in the Better Auth database it was imported from
    /// (`servauth import better-auth`); the Better Auth face shows it as the user's `id`.
    pub better_auth_id: Option<String>,
    /// The user's ban, if one was set and not lifted (it may have expired: see
    /// [`Ban::in_force`]).
    pub ban: Option<Ban>,
}

impl UserRecord {
    /// Whether a ban holds at `now`.
    pub fn is_banned(&self, now: DateTime<Utc>) -> bool {
        self.ban.as_ref().is_some_and(|ban| ban.in_force(now))
    }
}

/// A live session's user, as a token check finds it, and when the session ends.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub user: UserRecord,
    pub expires_at: DateTime<Utc>,
}

/// A user together with the stored password hash (PHC string), for login and re-auth.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: UserRecord,
    pub password_hash: String,
}

/// A user's address and its comparison key as stored (for bringing keys to a new rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEmailKey {
    pub user_id: Uuid,
    pub email: String,
    pub email_key: String,
}

/// A user to insert. `email_key` and `username_key` are the lowercased identity values the
/// unique indexes are on; the caller computes them (one rule for both backends).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub email_key: String,
    pub username: Option<String>,
    pub username_key: Option<String>,
    /// The display name, already validated by the caller.
    pub name: Option<String>,
    /// The picture URL, already validated by the caller.
    pub image: Option<String>,
    pub password_hash: String,
    pub email_verified: bool,
    pub role: Role,
    pub now: DateTime<Utc>,
}

/// A change to a user's profile. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// `Some(None)` removes the username; `Some(Some((username, key)))` sets it.
    pub username: Option<Option<(String, String)>>,
    /// `Some(None)` clears a pending email change; `Some(Some(email))` records one.
    pub pending_email: Option<Option<String>>,
    /// `Some(None)` removes the display name; `Some(Some(name))` sets it.
    pub name: Option<Option<String>>,
    /// `Some(None)` removes the picture URL; `Some(Some(url))` sets it.
    pub image: Option<Option<String>>,
}

/// A session (a login on one device) to insert, with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 of the CSRF token paired with the first refresh token (browser sessions);
    /// `None` for native clients.
    pub csrf_hash: Option<Vec<u8>>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub now: DateTime<Utc>,
    /// Absolute end of the session, whatever its use.
    pub expires_at: DateTime<Utc>,
    /// SHA-256 of the first refresh token.
    pub refresh_hash: Vec<u8>,
    /// Idle expiry of the first refresh token.
    pub refresh_expires_at: DateTime<Utc>,
    /// The password hash the login was verified against, if it was a password login.
    pub password_hash: Option<String>,
    /// The sign-in's audit event, written in the same transaction as the session.
    pub audit: Option<AuditWrite>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// End of the session: absolute for the REST face's sessions; for a Better Auth
    /// session, the sliding expiry (never past `created_at + SERVAUTH_SESSION_TTL`).
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `false` for a Better Auth session opened with `rememberMe: false` (never slid);
    /// `true` otherwise.
    pub remember: bool,
    /// When the user last authenticated for this session: the sign-in that opened it, or a
    /// later re-authentication.
    pub auth_time: DateTime<Utc>,
    /// How (RFC 8176 `amr` values): `["pwd"]` for a password sign-in.
    pub amr: Vec<String>,
}

impl SessionRecord {
    /// The `amr` of a session as stored (space-separated; `NULL`: a password sign-in).
    pub fn amr_from_stored(stored: Option<&str>) -> Vec<String> {
        match stored {
            Some(values) if !values.trim().is_empty() => {
                values.split_whitespace().map(str::to_owned).collect()
            }
            _ => vec!["pwd".to_owned()],
        }
    }
}

/// A Better Auth session to insert: its credential is a session token (stored only as its
/// SHA-256), not a refresh token, so it has no `refresh_tokens` row.
#[derive(Debug, Clone)]
pub struct NewTokenSession {
    pub id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 of the session token.
    pub token_hash: Vec<u8>,
    /// See [`SessionRecord::remember`].
    pub remember: bool,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub now: DateTime<Utc>,
    /// The first expiry (Better Auth's `expiresIn` from now, within the absolute cap).
    pub expires_at: DateTime<Utc>,
    /// As [`NewSession::password_hash`].
    pub password_hash: Option<String>,
    /// As [`NewSession::audit`].
    pub audit: Option<AuditWrite>,
}

/// A refresh token as stored, with its session, whatever their state (the caller judges:
/// a CSRF check needs the token's pair even when the token was rotated a moment ago).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub session: SessionRecord,
    /// SHA-256 of the CSRF token issued with this refresh token; `None` for native clients.
    pub csrf_hash: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

/// One exchange of a refresh token for its successor.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// SHA-256 of the token presented.
    pub presented_hash: Vec<u8>,
    /// SHA-256 of the successor to install.
    pub successor_hash: Vec<u8>,
    /// The successor's credentials sealed under the presented token, kept on the presented
    /// token's row so that a retry within the grace window gets the same answer.
    pub sealed_successor: Vec<u8>,
    /// Idle expiry of the successor; the store caps it at the session's end (so the caller
    /// need not read the session first).
    pub successor_expires_at: DateTime<Utc>,
    /// SHA-256 of the CSRF token paired with the successor (browser sessions rotate it with
    /// the refresh token); `None` for native clients.
    pub csrf_hash: Option<Vec<u8>>,
    pub now: DateTime<Utc>,
    /// How long after its rotation a token may still be presented and get the same answer
    /// (inclusive); zero: never.
    pub grace: chrono::Duration,
    /// The session's `last_used_at` moves to `now` only when it is older than this (zero:
    /// always): a session refreshed every few seconds need not be written every time.
    pub last_used_precision: chrono::Duration,
}

/// How a [`Store::rotate_refresh_token`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "`Rotated` is the common outcome: boxing it would allocate on every refresh"
)]
pub enum RotationOutcome {
    /// The token was live and is now rotated; the successor (with its CSRF hash) is
    /// installed and the session's `last_used_at` is `now` (or within
    /// [`Rotation::last_used_precision`] of it). With the session's user, read in
    /// the same transaction (the access token's claims need it).
    Rotated {
        session: SessionRecord,
        user: UserRecord,
    },
    /// The token was rotated within the grace window: nothing changed; here is the sealed
    /// successor its rotation stored.
    Replayed {
        session: SessionRecord,
        sealed_successor: Vec<u8>,
    },
    /// The token was rotated out before the grace window: the whole session is now revoked
    /// (committed, even though the caller answers with an error).
    Reused { session_id: Uuid },
    /// Unknown token, expired token, or a token of a revoked or expired session.
    Invalid,
}

/// A JWT signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_key: Vec<u8>,
    /// Raw public key bytes.
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// What an emailed single-use token is for. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    EmailVerification,
    EmailChange,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::EmailChange => "email_change",
        }
    }
}

/// An emailed single-use token to insert.
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    /// The address the token is sent to, and (for verification and email change) confirms.
    pub email: String,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The message that carries the token, queued in the same transaction (so a crash
    /// leaves either both or neither).
    pub mail: Option<NewMessage>,
}

/// An emailed single-use token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeTokenRecord {
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// How a [`Store::confirm_email`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailConfirmation {
    /// A verification token: the user's address is now verified.
    Verified { user: UserRecord },
    /// An email-change token: the address is now the new one, verified; `previous_email`
    /// is the address it replaced.
    Changed {
        user: UserRecord,
        previous_email: String,
    },
    /// The new address belongs to another account by now; nothing changed and the token
    /// was not used up.
    EmailTaken,
    /// Unknown, used, expired, of another purpose, or no longer matching the account.
    Invalid,
}

/// What [`Store::prune`] deletes.
#[derive(Debug, Clone, Copy)]
pub struct Pruning {
    /// Sessions revoked or expired before this go, with their refresh tokens; one-time tokens
    /// used or expired before this go.
    pub ended_before: DateTime<Utc>,
    /// Refresh tokens never rotated and expired before this go (they can only be refused).
    pub now: DateTime<Utc>,
    /// Rotated refresh tokens rotated before this lose their sealed successor (the grace
    /// replay is over); their hash stays until the session ends, for reuse detection.
    pub rotated_before: DateTime<Utc>,
}

/// How many rows [`Store::prune`] deleted (or, for successors, emptied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub successors: u64,
    pub one_time_tokens: u64,
}

/// A user brought over from a Better Auth database (`servauth import better-auth`),
/// already validated: `user.now` is its creation time there.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub user: NewUser,
    pub updated_at: DateTime<Utc>,
    /// Its id in Better Auth: what a second import recognises it by.
    pub better_auth_id: String,
}

/// A live Better Auth session to bring over with its user, as a session of the Better Auth
/// face (its token stored only as its SHA-256).
#[derive(Debug, Clone)]
pub struct ImportedSession {
    /// Its id in Better Auth, for the report.
    pub better_auth_id: String,
    /// Its user's id in Better Auth.
    pub user_better_auth_id: String,
    pub id: Uuid,
    pub token_hash: Vec<u8>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What [`Store::import_better_auth`] writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BetterAuthImport {
    pub users: Vec<ImportedUser>,
    pub sessions: Vec<ImportedSession>,
    /// Do everything, then roll back: the outcome says what a real run would do.
    pub dry_run: bool,
}

/// A row the store refused, named by its Better Auth id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRefusal {
    /// `user` or `session`.
    pub kind: &'static str,
    pub id: String,
    pub reason: String,
}

/// What [`Store::import_better_auth`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub users_imported: u64,
    /// Users an earlier import brought over (same Better Auth id): left as they are.
    pub users_present: u64,
    pub sessions_imported: u64,
    /// Sessions already here (same token): left as they are.
    pub sessions_present: u64,
    pub refused: Vec<ImportRefusal>,
}

impl ImportOutcome {
    pub(crate) fn refuse(&mut self, kind: &'static str, id: &str, reason: &str) {
        self.refused.push(ImportRefusal {
            kind,
            id: id.to_owned(),
            reason: reason.to_owned(),
        });
    }
}

/// The store's refusals of an imported user: its address belongs to another account.
pub(crate) const IMPORT_EMAIL_TAKEN: &str =
    "its address belongs to another servauth account (not imported from this user)";
/// The store's refusal of an imported session whose user was not brought over.
pub(crate) const IMPORT_NO_USER: &str = "its user was not imported";
/// The store's refusal of an imported session whose token another session already has.
pub(crate) const IMPORT_TOKEN_TAKEN: &str = "its token belongs to another user's session";

/// The persistence the services need. Implemented by [`SqliteStore`] and [`PostgresStore`].
#[async_trait]
pub trait Store:
    FactorStore + AdminStore + OutboxStore + Send + Sync + std::fmt::Debug + 'static
{
    /// Which backend this is, for logs and `/ready`.
    fn backend(&self) -> &'static str;

    /// Applies the embedded migrations (PostgreSQL: under an advisory lock, so replicas
    /// starting together apply them exactly once), then brings every stored email key to
    /// the current comparison rule ([`rekey_email_addresses`]).
    async fn migrate(&self) -> StoreResult<()>;

    /// Answers when the database does (a trivial query).
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// How the connection pool is used right now (for metrics).
    fn pool_status(&self) -> PoolStatus;

    /// Gives back memory the database driver keeps in this process only to go faster,
    /// called when the server has been idle for a while (SQLite: the writer connection's
    /// page cache; PostgreSQL keeps its caches in its own server, so nothing).
    async fn release_memory(&self) {}

    // ---- users -------------------------------------------------------------------------

    /// Inserts a user. `EmailTaken` / `UsernameTaken` when a unique key is already used.
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord>;

    /// The user with this id.
    async fn find_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>>;

    /// The user whose `email_key` is this, with the password hash.
    async fn find_credentials_by_email_key(
        &self,
        email_key: &str,
    ) -> StoreResult<Option<UserCredentials>>;

    /// The user with this id, with the password hash.
    async fn find_credentials(&self, id: Uuid) -> StoreResult<Option<UserCredentials>>;

    /// Applies a profile change and sets `updated_at`. `None` when the user is gone;
    /// `UsernameTaken` when the new username is someone else's. Any change of
    /// `pending_email` (a new one, or clearing it) also retires the user's unused
    /// email-change tokens, in the same transaction: only a link for the pending address, sent
    /// after this change, can confirm it.
    async fn update_profile(
        &self,
        id: Uuid,
        change: ProfileChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>>;

    /// Replaces the password hash `replacing` with `hash` (a re-hash) and sets `updated_at`.
    /// `false` when the user is gone or the hash is no longer `replacing`: a re-hash computed
    /// from the old password never overwrites a password reset or change made meanwhile.
    async fn set_password_hash(
        &self,
        id: Uuid,
        replacing: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Deletes the user with every session, refresh token and one-time token (cascade).
    /// `false` when there was no such user.
    async fn delete_user(&self, id: Uuid) -> StoreResult<bool>;

    /// Every user whose `email_key` has a character outside ASCII, with the address: the
    /// only keys a change of the comparison rule has changed (an ASCII key has been the
    /// lowercased address under every rule). In no particular order.
    async fn users_with_non_ascii_email_keys(&self) -> StoreResult<Vec<StoredEmailKey>>;

    /// Replaces the user's `email_key` `replacing` with `email_key`, leaving `updated_at`
    /// (the address is the same). `false` when the user is gone or its key is no longer
    /// `replacing` (an email change came first); `EmailTaken` when another user has the key.
    async fn replace_email_key(
        &self,
        id: Uuid,
        replacing: &str,
        email_key: &str,
    ) -> StoreResult<bool>;

    // ---- sessions ----------------------------------------------------------------------

    /// Inserts a session and its first refresh token, in one transaction, if the user exists
    /// and, with `password_hash` set, while the user's password hash is still that one
    /// (`None` otherwise, nothing written). The check holds the user row against a
    /// concurrent password reset or change, which therefore either comes first and refuses
    /// the session or comes after and revokes it.
    async fn create_session(&self, session: NewSession) -> StoreResult<Option<SessionRecord>>;

    /// The user behind an access token, if its session is live: the session exists, belongs
    /// to `user_id`, is not revoked and has not expired at `now`, and the user exists; with
    /// the session's end.
    async fn find_live_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSession>>;

    /// Inserts a Better Auth session holding a session token (see [`NewTokenSession`]), on
    /// the same terms as [`Store::create_session`]: `None` (nothing written) when the user is
    /// gone or, with `password_hash` set, no longer has that hash.
    async fn create_token_session(
        &self,
        session: NewTokenSession,
    ) -> StoreResult<Option<SessionRecord>>;

    /// The live session (not revoked, not expired at `now`) holding the session token with
    /// this hash, with its user.
    async fn find_token_session(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>>;

    /// Slides a live session's expiry: `expires_at` becomes `expires_at.min(cap)` (`cap` is
    /// the session's absolute end, which no slide passes) and `last_used_at` becomes `now`.
    /// The updated session, or `None` when it is no longer live at `now` (nothing changed).
    async fn slide_session(
        &self,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
        cap: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>>;

    /// Revokes the live session of `user_id` holding the session token with this hash.
    /// `false` when there is none (unknown token, another user's, already ended).
    async fn revoke_token_session(
        &self,
        user_id: Uuid,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// The refresh token with this hash and its session, in whatever state they are.
    async fn find_refresh_token(
        &self,
        refresh_hash: &[u8],
    ) -> StoreResult<Option<RefreshTokenRecord>>;

    /// Exchanges a refresh token for its successor, atomically: of many concurrent calls with
    /// one token, at most one gets `Rotated`; the rest see the rotation (`Replayed` within the
    /// grace window, `Reused` after it).
    async fn rotate_refresh_token(&self, rotation: Rotation) -> StoreResult<RotationOutcome>;

    /// The sealed successor kept on a rotated refresh token's row (see [`Rotation`]), if the
    /// token with this hash was rotated and its successor is still kept.
    async fn refresh_successor(&self, refresh_hash: &[u8]) -> StoreResult<Option<Vec<u8>>>;

    /// The user's live sessions (not revoked, not expired), newest first.
    async fn list_live_sessions(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Revokes one live session of this user. `false` when there is no such live session
    /// (unknown, another user's, or already revoked).
    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Revokes every live session of the user, except `keep` when given, and ends a pending
    /// email change (clears `pending_email`, retires the unused email-change tokens), in one
    /// transaction: signing out everywhere also takes back what a session started. Returns
    /// how many sessions were revoked.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    // ---- emailed single-use tokens ----------------------------------------------------

    /// Inserts a token and retires (marks used at `now`) the user's older unused tokens of
    /// the same purpose, in one transaction: only the newest link of each kind works.
    async fn issue_one_time_token(&self, token: NewOneTimeToken) -> StoreResult<()>;

    /// The token with this hash and purpose if it is unused and unexpired at `now`.
    async fn find_one_time_token(
        &self,
        token_hash: &[u8],
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<OneTimeTokenRecord>>;

    /// Uses up a password-reset token and applies it, atomically (of concurrent calls with
    /// one token, at most one succeeds): the token must be unused and unexpired; the
    /// password hash is replaced, every session of the user is revoked, the user's other
    /// reset tokens are retired and a pending email change ends (`pending_email` cleared, its
    /// tokens retired: whoever started it may have known the password being replaced).
    /// Returns the user, or `None` when the token was not usable.
    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>>;

    /// Uses up an email-verification or email-change token and applies it, atomically.
    /// Verification: the token's address must still be the user's (case-insensitively),
    /// which becomes verified. Email change: the token's address must still be the user's
    /// `pending_email`; it becomes the address (`email_key` = `Email::key_of`), verified,
    /// `pending_email` is cleared, and every unused reset, verification and email-change
    /// token of the user is retired (they were bound to the old address). A unique
    /// violation on the new address is `EmailTaken` with nothing changed. A change also
    /// revokes every live session of the user but `keep` (the confirming client's own, if it
    /// sent one): the account's identity moved, so sessions opened before it do not follow.
    async fn confirm_email(
        &self,
        token_hash: &[u8],
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<EmailConfirmation>;

    /// Sets a new password hash after a password change, atomically revoking every other
    /// live session of the user (all but `keep`), retiring the user's unused reset tokens and
    /// ending a pending email change (as [`Store::reset_password`] does). `false` when the
    /// user is gone.
    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // ---- upkeep ------------------------------------------------------------------------

    /// Deletes what nothing needs any more (see [`Pruning`]), in batches so that no write
    /// holds the database for long. Returns how many rows of each kind went.
    async fn prune(&self, pruning: Pruning) -> StoreResult<Pruned>;

    /// Brings Better Auth users and their sessions over, all or nothing: one transaction.
    /// A user already imported (same Better Auth id) and a session already here (same
    /// token) are left alone, so a second run changes nothing; a user whose address another
    /// account has, and a session whose user is neither imported now nor before, are
    /// refused and reported.
    async fn import_better_auth(&self, import: BetterAuthImport) -> StoreResult<ImportOutcome>;

    /// The secret named `name`: `candidate` is stored if there is none yet, atomically, so
    /// replicas starting together agree on one value.
    async fn ensure_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<u8>>;

    // ---- signing keys ------------------------------------------------------------------

    /// Makes `candidate` the signing key unless an unretired key already exists, atomically
    /// (replicas starting together end up with one key). Returns the current key: the
    /// unretired key with the latest `created_at` (ties broken by `kid`).
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord>;

    /// Makes `key` the current signing key, atomically: every unretired key is retired at
    /// `now` and `key` is inserted (unretired). Retired keys stay published while tokens
    /// they signed may still be live (see [`Store::signing_keys`]).
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Every key that is unretired or was retired after `retired_after`, newest first.
    async fn signing_keys(
        &self,
        retired_after: DateTime<Utc>,
    ) -> StoreResult<Vec<SigningKeyRecord>>;

    /// Replaces the stored private part of the key `kid` with `private_key` (the same key,
    /// sealed or sealed anew: `servauth keys encrypt`), only while it still holds `previous`,
    /// so two runs at once cannot overwrite each other's result with a stale one. `false`
    /// when no key `kid` holds `previous`.
    async fn replace_signing_private_key(
        &self,
        kid: &str,
        previous: &[u8],
        private_key: &[u8],
    ) -> StoreResult<bool>;
}

/// What [`rekey_email_addresses`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Keys replaced by the current rule's.
    pub changed: usize,
    /// Keys left as they were because another account already has the current rule's key.
    pub collisions: usize,
}

/// Brings the `email_key` of every account to the current comparison rule
/// ([`Email::key_of`](crate::domain::Email::key_of): NFKC, the domain as its IDNA A-label),
/// after the migrations. Only non-ASCII keys can differ, so only those are read. A key that
/// another account already holds under the new rule (two addresses that now compare
/// equal) is left as it was and logged with both user ids, for an operator to settle;
/// nothing else about either account changes. Safe to run again and from replicas at once.
pub async fn rekey_email_addresses(store: &dyn Store) -> StoreResult<Rekeyed> {
    let mut rekeyed = Rekeyed::default();
    for stored in store.users_with_non_ascii_email_keys().await? {
        let key = crate::domain::Email::key_of(&stored.email);
        if key == stored.email_key {
            continue;
        }
        match store
            .replace_email_key(stored.user_id, &stored.email_key, &key)
            .await
        {
            Ok(true) => rekeyed.changed += 1,
            Ok(false) => {}
            Err(StoreError::EmailTaken) => {
                rekeyed.collisions += 1;
                let holder = store
                    .find_credentials_by_email_key(&key)
                    .await?
                    .map(|found| found.user.id.to_string());
                tracing::warn!(
                    user.id = %stored.user_id,
                    other_user.id = holder.as_deref().unwrap_or("unknown"),
                    "email key left as it was: another account has the same address under \
                     the current comparison rule"
                );
            }
            Err(error) => return Err(error),
        }
    }
    if rekeyed.changed > 0 {
        tracing::info!(
            changed = rekeyed.changed,
            "email keys brought to the current comparison rule"
        );
    }
    Ok(rekeyed)
}

/// Connects to the database the URL names: `sqlite:` (file created if missing, WAL mode)
/// or `postgres:`/`postgresql:` (pooled). Does not migrate.
///
/// A malformed URL is an error at once; a well-formed one whose server does not answer is
/// not (the pools connect lazily, and `/ready` reports the database as down meanwhile).
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    Ok(match open_backend(url, max_connections).await? {
        Backend::Sqlite(store) => Arc::new(store),
        Backend::Postgres(store) => Arc::new(store),
    })
}

/// The backend a URL names, opened.
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

async fn open_backend(url: &str, max_connections: u32) -> StoreResult<Backend> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Backend::Sqlite(
            SqliteStore::connect(url, max_connections).await?,
        )),
        "postgres" | "postgresql" => Ok(Backend::Postgres(PostgresStore::connect(
            url,
            max_connections,
        )?)),
        _ => Err(StoreError::InvalidUrl(
            "expected a sqlite://… or postgres://… URL".to_owned(),
        )),
    }
}

/// As [`connect`], for a server: the backend with the session cache in front
/// ([`CachedStore`]) of at most `cache_capacity` sessions, its changes fanned out through
/// PostgreSQL `LISTEN/NOTIFY`, through Redis pub/sub when `redis` is given (PostgreSQL only:
/// SQLite is one process's), or within this process on SQLite. Must be called inside a
/// Tokio runtime.
pub async fn connect_cached(
    url: &str,
    max_connections: u32,
    redis: Option<redis::Client>,
    cache_capacity: usize,
) -> StoreResult<Arc<CachedStore>> {
    use fanout::{Channel, Fanout};
    let (inner, channel): (Arc<dyn Store>, Channel) =
        match open_backend(url, max_connections).await? {
            Backend::Sqlite(store) => (Arc::new(store), Channel::Local(url.to_owned())),
            Backend::Postgres(store) => {
                let channel = match redis {
                    Some(client) => Channel::Redis(client),
                    None => Channel::Postgres(store.pool()),
                };
                (Arc::new(store), channel)
            }
        };
    let fanout = Fanout::start(channel, cache_capacity);
    Ok(Arc::new(CachedStore::new(inner, fanout)))
}
