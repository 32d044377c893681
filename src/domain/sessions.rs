use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use uuid::Uuid;

use super::tokens::{TokenError, opaque_token, token_hash};
use super::{AccessTokens, AuthError};
use crate::clock::Clock;
use crate::store::{NewSession, Store, UserRecord};

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

/// The credentials a new session hands to its client.
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
    pub session_id: Uuid,
}

/// Sessions: opening one at login, and authenticating access tokens against the live ones.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    tokens: Arc<AccessTokens>,
    clock: Arc<dyn Clock>,
    refresh_ttl: Duration,
    session_ttl: Duration,
}

/// The longest user agent we keep; the rest is cut (it is informational only).
const MAX_USER_AGENT_CHARS: usize = 256;

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<AccessTokens>,
        clock: Arc<dyn Clock>,
        refresh_ttl: Duration,
        session_ttl: Duration,
    ) -> Self {
        Self {
            store,
            tokens,
            clock,
            refresh_ttl,
            session_ttl,
        }
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    /// Opens a new session for a user who just proved who they are (a new session id and
    /// new tokens every time: no session fixation).
    pub async fn open(
        &self,
        user: &UserRecord,
        kind: ClientKind,
        meta: ClientMeta,
    ) -> Result<IssuedSession, AuthError> {
        let now = self.clock.now();
        let expires_at = now + self.session_ttl;
        let refresh_expires_at = (now + self.refresh_ttl).min(expires_at);
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
            })
            .await?;
        let access_token = self
            .tokens
            .issue(user.id, session.id, user.role, now)
            .map_err(|error| AuthError::Internal(error.into()))?;
        Ok(IssuedSession {
            session_id: session.id,
            access_token,
            expires_in: self.tokens.ttl().num_seconds(),
            refresh_token,
            refresh_expires_in: (refresh_expires_at - now).num_seconds(),
            csrf_token,
        })
    }

    /// The caller behind a bearer token: the token verifies, its session is live and its
    /// user exists. A revoked session or a deleted user is refused at once.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let token = bearer.ok_or(AuthError::MissingCredentials)?;
        let now = self.clock.now();
        let claims = self
            .tokens
            .verify(token, now)
            .map_err(|error| match error {
                TokenError::Expired => AuthError::TokenExpired,
                TokenError::Invalid => AuthError::InvalidToken,
            })?;
        let user = self
            .store
            .find_live_session_user(claims.sid, claims.sub, now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        Ok(Caller {
            user,
            session_id: claims.sid,
        })
    }
}
