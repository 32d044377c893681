use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::tokens::{TokenError, opaque_token, successor, token_hash};
use super::{AccessClaims, AccessTokens, AuthError, SigningKeys};
use crate::clock::Clock;
use crate::store::{
    NewSession, RefreshTokenRecord, Rotation, RotationOutcome, SessionRecord, Store, UserRecord,
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
}

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

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SigningKeys>,
        clock: Arc<dyn Clock>,
        lifetimes: Lifetimes,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            lifetimes,
        }
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
        let now = self.clock.now();
        let expires_at = now + self.lifetimes.session;
        let refresh_expires_at = (now + self.lifetimes.refresh).min(expires_at);
        let refresh_token = opaque_token();
        let csrf_token = (kind == ClientKind::Browser).then(opaque_token);
        let session = self
            .store
            .create_session(NewSession {
                id: Uuid::now_v7(),
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
            })
            .await?
            .ok_or_else(|| {
                tracing::info!(user.id = %user.id, "login refused: the password changed meanwhile");
                AuthError::InvalidCredentials
            })?;
        self.issue(user, &session, now, refresh_token, csrf_token)
    }

    /// Exchanges a refresh token for a new one and a new access token: every use rotates.
    /// A token already rotated out revokes its session (`RefreshTokenReused`), except within
    /// the reuse grace, where the answer is the successor its rotation issued.
    pub async fn refresh(
        &self,
        presented: PresentedRefresh<'_>,
    ) -> Result<IssuedSession, AuthError> {
        let token = presented.token();
        let record = self.find_presented(presented).await?;
        let now = self.clock.now();
        let refresh_token = opaque_token();
        let csrf_token = matches!(presented, PresentedRefresh::Browser { .. }).then(opaque_token);
        let sealed = successor::seal(token, &refresh_token, csrf_token.as_deref())
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("sealing the successor failed")))?;
        let rotation = Rotation {
            presented_hash: token_hash(token),
            successor_hash: token_hash(&refresh_token),
            sealed_successor: sealed,
            successor_expires_at: self.refresh_expiry(&record.session, now),
            csrf_hash: csrf_token.as_deref().map(token_hash),
            now,
            grace: self.lifetimes.reuse_grace,
        };
        let (session, refresh_token, csrf_token) =
            match self.store.rotate_refresh_token(rotation).await? {
                RotationOutcome::Rotated { session } => (session, refresh_token, csrf_token),
                RotationOutcome::Replayed {
                    session,
                    sealed_successor,
                } => {
                    let (refresh_token, csrf_token) =
                        successor::open(token, &sealed_successor).ok_or(AuthError::InvalidToken)?;
                    (session, refresh_token, csrf_token)
                }
                RotationOutcome::Reused { session_id } => {
                    metrics::counter!("servauth_refresh_reuse_detected_total").increment(1);
                    tracing::warn!(
                        session.id = %session_id,
                        "refresh token reuse detected: session revoked"
                    );
                    return Err(AuthError::RefreshTokenReused);
                }
                RotationOutcome::Invalid => return Err(AuthError::InvalidToken),
            };
        let user = self
            .store
            .find_live_session_user(session.id, session.user_id, now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        self.issue(&user, &session, now, refresh_token, csrf_token)
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
        Ok(())
    }

    /// Ends the caller's own session (logout by bearer token).
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        self.revoke(caller, caller.session_id())
            .await
            .map_err(|_| AuthError::InvalidToken)
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
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// Revokes every session of the caller's, the current one included.
    pub async fn revoke_all(&self, caller: &Caller) -> Result<u64, AuthError> {
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_user_sessions(caller.user.id, None, now)
            .await?;
        tracing::info!(user.id = %caller.user.id, revoked, "all sessions revoked");
        Ok(revoked)
    }

    /// The caller behind a bearer token: the token verifies, its session is live and its
    /// user exists. A revoked session or a deleted user is refused at once.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
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
            .ok_or(AuthError::InvalidToken)?;
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
            .issue(user.id, session.id, user.role, now)
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
