use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::audit::{Actor, Audit, Entry, EventType};
use super::tokens::{TokenError, opaque_token, successor, token_hash};
use super::{AccessClaims, AccessTokens, AuthError, SigningKeys};
use crate::clock::Clock;
use crate::store::{
    AuditWrite, NewSession, NewTokenSession, RefreshTokenRecord, Rotation, RotationOutcome,
    SessionRecord, Store, UserRecord,
};

/// Which kind of client a session is for (see the contract's "Two kinds of client").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Refresh token in an HttpOnly cookie, CSRF token in the body and a readable cookie.
    #[default]
    Browser,
    /// Refresh token in the body; no cookies, no CSRF.
    Native,
}

/// Where a request came from, recorded on the session it opens.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The credentials a session hands to its client (at login, register and every refresh).
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub session_id: Uuid,
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    /// Seconds until the refresh token expires unused (the cookie's `Max-Age`).
    pub refresh_expires_in: i64,
    /// Browser sessions only.
    pub csrf_token: Option<String>,
}

/// A request authenticated by a valid access token of a live session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRecord,
    pub claims: AccessClaims,
}

impl Caller {
    pub fn session_id(&self) -> Uuid {
        self.claims.sid
    }
}

/// A refresh token as a client presented it.
#[derive(Debug, Clone, Copy)]
pub enum PresentedRefresh<'a> {
    /// In the body (native clients): no CSRF token needed.
    Native(&'a str),
    /// In the `servauth_refresh` cookie, with the `X-CSRF-Token` header (if any), which must
    /// match the CSRF token issued with that refresh token.
    Browser {
        token: &'a str,
        csrf: Option<&'a str>,
    },
}

impl PresentedRefresh<'_> {
    fn token(&self) -> &str {
        match self {
            Self::Native(token) | Self::Browser { token, .. } => token,
        }
    }
}

/// Sessions: opening one at login, refreshing and ending it, and authenticating access
/// tokens against the live ones.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    keys: Arc<SigningKeys>,
    clock: Arc<dyn Clock>,
    lifetimes: Lifetimes,
    /// `SERVAUTH_REQUIRE_VERIFIED_EMAIL`: sessions of unverified users are not usable.
    require_verified_email: bool,
    audit: Audit,
}

/// How exactly a refresh records a session's `last_used_at`: a minute, so a session
/// refreshed more often than that writes its row once a minute, not on every rotation (on
/// PostgreSQL the touch was a third of the rows a rotation wrote).
const LAST_USED_PRECISION: Duration = Duration::minutes(1);

/// How many successors a grace replay follows (a chain longer than this within the grace
/// window is not a browser's tabs racing).
const MAX_REPLAY_CHAIN: usize = 8;

/// How long the parts of a session live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// A refresh token expires after this long unused.
    pub refresh: Duration,
    /// A session ends after this long, whatever its use.
    pub session: Duration,
    /// A rotated-out refresh token still gets its rotation's answer for this long.
    pub reuse_grace: Duration,
}

/// The longest user agent we keep; the rest is cut (it is informational only).
const MAX_USER_AGENT_CHARS: usize = 256;

/// Better Auth's session lifetimes (its defaults, which its clients expect): a session
/// lasts `EXPIRES_IN` and is slid to `EXPIRES_IN` from now when used more than
/// `UPDATE_AGE` after its last slide; one opened with `rememberMe: false` lasts `SHORT`
/// and is never slid. servauth's `SERVAUTH_SESSION_TTL` from creation caps all of them.
pub mod better_auth_lifetimes {
    use chrono::Duration;

    /// Better Auth's `session.expiresIn`.
    pub const EXPIRES_IN: Duration = Duration::days(7);
    /// Better Auth's `session.updateAge`.
    pub const UPDATE_AGE: Duration = Duration::days(1);
    /// The lifetime of a `rememberMe: false` session.
    pub const SHORT: Duration = Duration::days(1);
    /// Better Auth's `session.freshAge`: how long after its start a session may list the
    /// user's sessions.
    pub const FRESH_AGE: Duration = Duration::days(1);
}

/// The length of a Better Auth session token (its `generateId(32)`).
pub const BETTER_AUTH_TOKEN_CHARS: usize = 32;

/// A new Better Auth session token: 32 characters of `[A-Za-z0-9]` (about 190 bits) from
/// the OS-seeded CSPRNG, the shape Better Auth's own tokens have. Rejection sampling keeps
/// every character equally likely.
pub fn better_auth_token() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut token = String::with_capacity(BETTER_AUTH_TOKEN_CHARS);
    while token.len() < BETTER_AUTH_TOKEN_CHARS {
        let mut bytes = [0_u8; 64];
        rand::fill(&mut bytes);
        for byte in bytes {
            // 248 = 4 × 62: bytes above it would favour the first characters.
            if byte < 248 && token.len() < BETTER_AUTH_TOKEN_CHARS {
                token.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    token
}

/// A Better Auth session just opened: the raw token (handed to the client once, stored only
/// as its SHA-256) and the session.
#[derive(Clone)]
pub struct OpenedTokenSession {
    pub token: String,
    pub session: SessionRecord,
}

impl std::fmt::Debug for OpenedTokenSession {
    /// Without the token: it never goes to a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedTokenSession")
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

/// A request authenticated by a live Better Auth session token.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    pub session: SessionRecord,
    /// The same caller, as the account services take it.
    pub caller: Caller,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SigningKeys>,
        clock: Arc<dyn Clock>,
        lifetimes: Lifetimes,
        require_verified_email: bool,
        audit: Audit,
    ) -> Self {
        Self {
            audit,
            store,
            keys,
            clock,
            lifetimes,
            require_verified_email,
        }
    }

    /// A banned user opens no session, whichever way they proved who they are. (The store
    /// checks again as it inserts, so a ban racing with the sign-in cannot be missed.)
    async fn refuse_banned(&self, user: &UserRecord, now: DateTime<Utc>) -> Result<(), AuthError> {
        if user.is_banned(now) {
            tracing::info!(user.id = %user.id, "sign-in refused: the account is banned");
            self.audit
                .record(Entry::by_user(EventType::SignInFailed, user.id).with("reason", "banned"))
                .await;
            return Err(AuthError::AccountBanned);
        }
        Ok(())
    }

    /// The audit event of a sign-in into the session `session_id`, written with it.
    fn sign_in_event(
        &self,
        user: &UserRecord,
        session_id: Uuid,
        amr: &str,
        face: &str,
    ) -> AuditWrite {
        self.audit.prepare(
            Entry::by_user(EventType::SignedIn, user.id)
                .session(session_id)
                .with("amr", amr)
                .with("face", face),
        )
    }

    /// The keys that sign and verify access tokens now.
    pub fn access_tokens(&self) -> Arc<AccessTokens> {
        self.keys.current()
    }

    /// Opens a new session for a user who just proved who they are (a new session id and
    /// new tokens every time: no session fixation). After a password login, `password_hash`
    /// is the hash the password was checked against: if a reset or change replaced it
    /// meanwhile, no session is opened (`InvalidCredentials`), since the password used is no
    /// longer the account's.
    pub async fn open(
        &self,
        user: &UserRecord,
        password_hash: Option<String>,
        kind: ClientKind,
        meta: ClientMeta,
    ) -> Result<IssuedSession, AuthError> {
        self.open_as(user, password_hash, kind, meta, &[]).await
    }

    /// As [`Self::open`], for a sign-in that proved more than the password (or other than
    /// it): `amr` is what the session's tokens say (empty: `["pwd"]`).
    pub async fn open_as(
        &self,
        user: &UserRecord,
        password_hash: Option<String>,
        kind: ClientKind,
        meta: ClientMeta,
        amr: &[String],
    ) -> Result<IssuedSession, AuthError> {
        let now = self.clock.now();
        self.refuse_banned(user, now).await?;
        let expires_at = now + self.lifetimes.session;
        let refresh_expires_at = (now + self.lifetimes.refresh).min(expires_at);
        let refresh_token = opaque_token();
        let csrf_token = (kind == ClientKind::Browser).then(opaque_token);
        let id = Uuid::now_v7();
        let signed_in = if amr.is_empty() {
            super::AMR_PWD.to_owned()
        } else {
            amr.join(" ")
        };
        let audit = self.sign_in_event(user, id, &signed_in, "rest");
        let event = audit.event.event.clone();
        let session = self
            .store
            .create_session(NewSession {
                id,
                user_id: user.id,
                csrf_hash: csrf_token.as_deref().map(token_hash),
                user_agent: meta
                    .user_agent
                    .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect()),
                ip: meta.ip.map(|ip| ip.to_canonical().to_string()),
                now,
                expires_at,
                refresh_hash: token_hash(&refresh_token),
                refresh_expires_at,
                password_hash,
                audit: Some(audit),
            })
            .await?
            .ok_or_else(|| {
                tracing::info!(user.id = %user.id, "login refused: the password changed meanwhile");
                AuthError::InvalidCredentials
            })?;
        Audit::written(&event);
        let session = self.authenticated_as(session, amr, now).await?;
        self.issue(user, &session, now, refresh_token, csrf_token)
    }

    /// Records a sign-in's `amr` on the session just opened (a password sign-in's is the
    /// stored default, so nothing is written for it).
    async fn authenticated_as(
        &self,
        mut session: SessionRecord,
        amr: &[String],
        now: DateTime<Utc>,
    ) -> Result<SessionRecord, AuthError> {
        if amr.is_empty() || amr == [super::AMR_PWD] {
            return Ok(session);
        }
        if !self
            .store
            .set_session_authentication(session.id, now, &amr.join(" "), now)
            .await?
        {
            return Err(AuthError::InvalidToken);
        }
        session.auth_time = now;
        session.amr = amr.to_vec();
        Ok(session)
    }

    /// A new access token for a live session of `user` (after a re-authentication: it
    /// carries the new `auth_time` and `amr`), with its lifetime in seconds.
    pub async fn reissue(
        &self,
        user: &UserRecord,
        session_id: Uuid,
    ) -> Result<(String, i64, SessionRecord), AuthError> {
        let now = self.clock.now();
        let session = self
            .store
            .list_live_sessions(user.id, now)
            .await?
            .into_iter()
            .find(|session| session.id == session_id)
            .ok_or(AuthError::InvalidToken)?;
        let tokens = self.keys.current();
        let token = tokens
            .issue_for(user, &session, now)
            .map_err(|error| AuthError::Internal(error.into()))?;
        Ok((token, tokens.ttl().num_seconds(), session))
    }

    /// Opens a Better Auth session for a user who just proved who they are (as
    /// [`Self::open`]: a fresh id and token every time, and no session when the password
    /// checked was replaced meanwhile). Its credential is a session token, returned raw once
    /// and stored only as its SHA-256; it lasts Better Auth's `expiresIn` (or a day with
    /// `remember == false`), within `SERVAUTH_SESSION_TTL`.
    pub async fn open_token_session(
        &self,
        user: &UserRecord,
        password_hash: Option<String>,
        remember: bool,
        meta: ClientMeta,
    ) -> Result<OpenedTokenSession, AuthError> {
        let now = self.clock.now();
        self.refuse_banned(user, now).await?;
        let lifetime = if remember {
            better_auth_lifetimes::EXPIRES_IN
        } else {
            better_auth_lifetimes::SHORT
        };
        let token = better_auth_token();
        let id = Uuid::now_v7();
        let audit = self.sign_in_event(user, id, super::AMR_PWD, "better_auth");
        let event = audit.event.event.clone();
        let session = self
            .store
            .create_token_session(NewTokenSession {
                id,
                user_id: user.id,
                token_hash: token_hash(&token),
                remember,
                user_agent: meta
                    .user_agent
                    .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect()),
                ip: meta.ip.map(|ip| ip.to_canonical().to_string()),
                now,
                expires_at: (now + lifetime).min(now + self.lifetimes.session),
                password_hash,
                audit: Some(audit),
            })
            .await?
            .ok_or_else(|| {
                tracing::info!(user.id = %user.id, "sign-in refused: the password changed meanwhile");
                AuthError::InvalidCredentials
            })?;
        Audit::written(&event);
        Ok(OpenedTokenSession { token, session })
    }

    /// The caller behind a Better Auth session token: its session is live and its user
    /// exists (`InvalidToken` otherwise); an unverified user while verified emails are
    /// required is `EmailNotVerified`, as on the REST face.
    pub async fn authenticate_token(&self, token: &str) -> Result<TokenCaller, AuthError> {
        let caller = self.authenticate_token_any(token).await?;
        self.check_verified(&caller.caller.user)?;
        Ok(caller)
    }

    /// As [`Self::authenticate_token`], for what an unverified user may always do with a
    /// session (sign out, end sessions).
    pub async fn authenticate_token_any(&self, token: &str) -> Result<TokenCaller, AuthError> {
        let now = self.clock.now();
        let (session, user) = self
            .store
            .find_token_session(&token_hash(token), now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let claims = self.keys.current().claims_for(&user, &session, now);
        Ok(TokenCaller {
            session,
            caller: Caller { user, claims },
        })
    }

    /// Better Auth's sliding expiry: a session used more than `updateAge` after its last
    /// slide (or its start) gets `expiresIn` from now, never past `SERVAUTH_SESSION_TTL`
    /// from its creation; a `rememberMe: false` session never slides. The slid session, or
    /// `None` when nothing was due (or it ended meanwhile).
    pub async fn slide(&self, session: &SessionRecord) -> Result<Option<SessionRecord>, AuthError> {
        if !session.remember {
            return Ok(None);
        }
        let now = self.clock.now();
        if now < session.last_used_at + better_auth_lifetimes::UPDATE_AGE {
            return Ok(None);
        }
        let cap = session.created_at + self.lifetimes.session;
        let expires_at = (now + better_auth_lifetimes::EXPIRES_IN).min(cap);
        if expires_at <= session.expires_at {
            return Ok(None);
        }
        Ok(self
            .store
            .slide_session(session.id, expires_at, cap, now)
            .await?)
    }

    /// Ends the caller's own session whose token this is, if it is the caller's and live;
    /// `false` otherwise (Better Auth answers alike either way).
    pub async fn revoke_token(&self, user_id: Uuid, token: &str) -> Result<bool, AuthError> {
        let revoked = self
            .store
            .revoke_token_session(user_id, &token_hash(token), self.clock.now())
            .await?;
        if revoked {
            tracing::info!(user.id = %user_id, "session revoked by its token");
            self.audit
                .record(Entry::by_user(EventType::SignedOut, user_id).with("face", "better_auth"))
                .await;
        }
        Ok(revoked)
    }

    /// Revokes every session of the caller's but `keep` (all of them with `None`), and calls
    /// off a pending email change, like [`Self::revoke_all`].
    pub async fn revoke_all_but(
        &self,
        caller: &Caller,
        keep: Option<Uuid>,
    ) -> Result<u64, AuthError> {
        let revoked = self
            .store
            .revoke_user_sessions(caller.user.id, keep, self.clock.now())
            .await?;
        tracing::info!(user.id = %caller.user.id, revoked, "sessions revoked");
        self.audit
            .record(
                Entry::by_user(EventType::SessionsRevoked, caller.user.id)
                    .with("sessions", revoked)
                    .with("kept_current", keep.is_some()),
            )
            .await;
        Ok(revoked)
    }

    /// A fresh access token for the caller's session (the Better Auth face's `/token`).
    pub fn access_token_for(&self, caller: &TokenCaller) -> Result<String, AuthError> {
        self.keys
            .current()
            .issue_for(&caller.caller.user, &caller.session, self.clock.now())
            .map_err(|error| AuthError::Internal(error.into()))
    }

    /// As [`Self::access_token_for`], answering a token signed moments ago for the same
    /// session and claims again (see `AccessTokens::issue_recent`): for `get-session`'s
    /// `set-auth-jwt`, which every call carries.
    pub fn recent_access_token_for(&self, caller: &TokenCaller) -> Result<String, AuthError> {
        self.keys
            .current()
            .issue_recent(&caller.caller.user, &caller.session, self.clock.now())
            .map_err(|error| AuthError::Internal(error.into()))
    }

    /// Now, on the services' clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Exchanges a refresh token for a new one and a new access token: every use rotates.
    /// A token already rotated out revokes its session (`RefreshTokenReused`), except within
    /// the reuse grace, where the answer is the successor its rotation issued.
    pub async fn refresh(
        &self,
        presented: PresentedRefresh<'_>,
    ) -> Result<IssuedSession, AuthError> {
        let token = presented.token();
        // A browser's CSRF token is checked against the presented token's pair before
        // anything changes; a native client's token goes straight to the rotation, which
        // refuses what is not live (one round trip fewer on the common path).
        if let PresentedRefresh::Browser { .. } = presented {
            self.find_presented(presented).await?;
        }
        let now = self.clock.now();
        let refresh_token = opaque_token();
        let csrf_token = matches!(presented, PresentedRefresh::Browser { .. }).then(opaque_token);
        let sealed = successor::seal(token, &refresh_token, csrf_token.as_deref())
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("sealing the successor failed")))?;
        let rotation = Rotation {
            presented_hash: token_hash(token),
            successor_hash: token_hash(&refresh_token),
            sealed_successor: sealed,
            // Capped at the session's end by the store.
            successor_expires_at: now + self.lifetimes.refresh,
            csrf_hash: csrf_token.as_deref().map(token_hash),
            now,
            grace: self.lifetimes.reuse_grace,
            last_used_precision: LAST_USED_PRECISION,
        };
        let (session, user, refresh_token, csrf_token) =
            match self.store.rotate_refresh_token(rotation).await? {
                RotationOutcome::Rotated { session, user } => {
                    (session, Some(user), refresh_token, csrf_token)
                }
                RotationOutcome::Replayed {
                    session,
                    sealed_successor,
                } => {
                    let (refresh_token, csrf_token) =
                        self.newest_successor(token, &sealed_successor).await?;
                    (session, None, refresh_token, csrf_token)
                }
                RotationOutcome::Reused { session_id } => {
                    metrics::counter!("servauth_refresh_reuse_detected_total").increment(1);
                    tracing::warn!(
                        session.id = %session_id,
                        "refresh token reuse detected: session revoked"
                    );
                    // Rare, so the owner is looked up for the log (the token's row stays).
                    let user = self
                        .store
                        .find_refresh_token(&token_hash(token))
                        .await
                        .ok()
                        .flatten()
                        .map(|record| record.session.user_id);
                    self.audit
                        .record(
                            Entry::by(Actor::Anonymous, EventType::RefreshReuseDetected, user)
                                .session(session_id),
                        )
                        .await;
                    return Err(AuthError::RefreshTokenReused);
                }
                RotationOutcome::Invalid => return Err(AuthError::InvalidToken),
            };
        // A rotation read the user with it; a replay looks it up (and the session again).
        let user = match user {
            Some(user) => user,
            None => {
                self.store
                    .find_live_session_user(session.id, session.user_id, now)
                    .await?
                    .ok_or(AuthError::InvalidToken)?
                    .user
            }
        };
        self.check_verified(&user)?;
        self.issue(&user, &session, now, refresh_token, csrf_token)
    }

    /// What a grace replay of `token` answers: the successor its rotation sealed, or, when
    /// that successor was itself rotated meanwhile (a second tab refreshed again), that one's
    /// successor, and so on to the newest: handing back a token already rotated out would
    /// end the session at the client's next refresh. Each link opens only with the token
    /// before it, so the chain is never readable from the database alone.
    async fn newest_successor(
        &self,
        token: &str,
        sealed: &[u8],
    ) -> Result<(String, Option<String>), AuthError> {
        let mut current = successor::open(token, sealed).ok_or(AuthError::InvalidToken)?;
        for _ in 0..MAX_REPLAY_CHAIN {
            let Some(next) = self
                .store
                .refresh_successor(&token_hash(&current.0))
                .await?
            else {
                break;
            };
            match successor::open(&current.0, &next) {
                Some(opened) => current = opened,
                None => break,
            }
        }
        Ok(current)
    }

    /// With verified emails required, an unverified user's session is not usable.
    fn check_verified(&self, user: &UserRecord) -> Result<(), AuthError> {
        if self.require_verified_email && !user.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        Ok(())
    }

    /// Ends the session a refresh token belongs to (logout by cookie or native body). Any
    /// token of a live session ends it; a token of an ended session is `InvalidToken`.
    pub async fn logout_with_refresh(
        &self,
        presented: PresentedRefresh<'_>,
    ) -> Result<(), AuthError> {
        let record = self.find_presented(presented).await?;
        let now = self.clock.now();
        let expired_unused = record.rotated_at.is_none() && record.expires_at <= now;
        let session = &record.session;
        if expired_unused
            || !self
                .store
                .revoke_session(session.user_id, session.id, now)
                .await?
        {
            return Err(AuthError::InvalidToken);
        }
        tracing::info!(session.id = %session.id, "logged out");
        self.audit
            .record(Entry::by_user(EventType::SignedOut, session.user_id).session(session.id))
            .await;
        Ok(())
    }

    /// Ends the caller's own session (logout by bearer token).
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        let session_id = caller.session_id();
        if !self
            .store
            .revoke_session(caller.user.id, session_id, self.clock.now())
            .await?
        {
            return Err(AuthError::InvalidToken);
        }
        tracing::info!(session.id = %session_id, "logged out");
        self.audit
            .record(Entry::by_user(EventType::SignedOut, caller.user.id).session(session_id))
            .await;
        Ok(())
    }

    /// The caller's live sessions, newest first.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<SessionRecord>, AuthError> {
        Ok(self
            .store
            .list_live_sessions(caller.user.id, self.clock.now())
            .await?)
    }

    /// Revokes one of the caller's own live sessions; `NotFound` for any other id.
    pub async fn revoke(&self, caller: &Caller, session_id: Uuid) -> Result<(), AuthError> {
        let now = self.clock.now();
        if self
            .store
            .revoke_session(caller.user.id, session_id, now)
            .await?
        {
            tracing::info!(session.id = %session_id, "session revoked");
            self.audit
                .record(
                    Entry::by_user(EventType::SessionRevoked, caller.user.id)
                        .session(session_id)
                        .with("current", session_id == caller.session_id()),
                )
                .await;
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// Revokes every session of the caller's, the current one included, and calls off a
    /// pending email change (whoever started it may hold one of the sessions being ended).
    pub async fn revoke_all(&self, caller: &Caller) -> Result<u64, AuthError> {
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_user_sessions(caller.user.id, None, now)
            .await?;
        tracing::info!(user.id = %caller.user.id, revoked, "all sessions revoked");
        self.audit
            .record(
                Entry::by_user(EventType::SessionsRevoked, caller.user.id)
                    .with("sessions", revoked),
            )
            .await;
        Ok(revoked)
    }

    /// The caller behind a bearer token: the token verifies, its session is live and its
    /// user exists. A revoked session or a deleted user is refused at once; so is an
    /// unverified user while verified emails are required (`EmailNotVerified`).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let caller = self.authenticate_any(bearer).await?;
        self.check_verified(&caller.user)?;
        Ok(caller)
    }

    /// As [`Self::authenticate`], for what an unverified user may always do with a session
    /// (sign out, end sessions, ask for a new verification link).
    pub async fn authenticate_any(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let token = bearer.ok_or(AuthError::MissingCredentials)?;
        let now = self.clock.now();
        let mut verified = self.keys.current().verify(token, now);
        if verified == Err(TokenError::UnknownKey) && self.keys.reload_for_unknown_key(now).await {
            verified = self.keys.current().verify(token, now);
        }
        let claims = verified.map_err(|error| match error {
            TokenError::Expired => AuthError::TokenExpired,
            TokenError::Invalid | TokenError::UnknownKey => AuthError::InvalidToken,
        })?;
        let user = self
            .store
            .find_live_session_user(claims.sid, claims.sub, now)
            .await?
            .ok_or(AuthError::InvalidToken)?
            .user;
        Ok(Caller { user, claims })
    }

    /// Looks a presented refresh token up and, for a cookie, checks the CSRF token issued
    /// with it (in constant time). An unknown token is `InvalidToken`.
    async fn find_presented(
        &self,
        presented: PresentedRefresh<'_>,
    ) -> Result<RefreshTokenRecord, AuthError> {
        let record = self
            .store
            .find_refresh_token(&token_hash(presented.token()))
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if let PresentedRefresh::Browser { csrf, .. } = presented {
            let matches = match (csrf, &record.csrf_hash) {
                (Some(csrf), Some(expected)) => bool::from(token_hash(csrf).ct_eq(expected)),
                _ => false,
            };
            if !matches {
                tracing::warn!(session.id = %record.session.id, "CSRF token missing or wrong");
                return Err(AuthError::CsrfFailed);
            }
        }
        Ok(record)
    }

    /// A refresh token expires after the refresh TTL unused, and never after its session.
    fn refresh_expiry(&self, session: &SessionRecord, now: DateTime<Utc>) -> DateTime<Utc> {
        (now + self.lifetimes.refresh).min(session.expires_at)
    }

    fn issue(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        now: DateTime<Utc>,
        refresh_token: String,
        csrf_token: Option<String>,
    ) -> Result<IssuedSession, AuthError> {
        let tokens = self.keys.current();
        let access_token = tokens
            .issue_for(user, session, now)
            .map_err(|error| AuthError::Internal(error.into()))?;
        Ok(IssuedSession {
            session_id: session.id,
            access_token,
            expires_in: tokens.ttl().num_seconds(),
            refresh_token,
            refresh_expires_in: (self.refresh_expiry(session, now) - now).num_seconds(),
            csrf_token,
        })
    }
}
