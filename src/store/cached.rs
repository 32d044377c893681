//! The store every server uses: a backend with the session cache in front of its token
//! checks. Reads of live sessions are answered from memory when known; every write that can
//! end a session or change what a check answers tells the cache (and, through the
//! [`Fanout`], every other server) before it returns. Everything else passes through.
//!
//! The rule of which write changes what lives here once, for both backends and every face.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fanout::Fanout;
use super::session_cache::Change;
use super::{
    AdminOutcome, AdminStore, AdminUpdate, AuditFilter, AuditRecord, Ban, BetterAuthImport,
    ChallengeRecord, DeadMessage, EmailConfirmation, FactorRecord, FactorStore, ImportOutcome,
    LiveSession, NewChallenge, NewMessage, NewOneTimeToken, NewSession, NewTokenSession, NewUser,
    OneTimeTokenRecord, OutboxCounts, OutboxStore, PoolStatus, ProfileChange, Pruned, Pruning,
    QueuedMessage, RefreshTokenRecord, Rotation, RotationOutcome, SessionAuthentication,
    SessionRecord, SigningKeyRecord, Store, StoreResult, StoredEmailKey, TokenPurpose,
    UserCredentials, UserFilter, UserRecord,
};

/// A backend with the session cache in front (see the module documentation).
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn Store>,
    fanout: Arc<Fanout>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>, fanout: Arc<Fanout>) -> Self {
        Self { inner, fanout }
    }

    /// The cache's end of the notification channel (for metrics and tests).
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// Tells every server about a change this one made, when `changed`, and waits until the
    /// others have it.
    async fn tell(&self, changed: bool, change: Change, mark: u64) {
        if changed {
            self.fanout.changed(change, mark, true).await;
        }
    }
}

#[async_trait]
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn close(&self) {
        self.fanout.stop();
        self.inner.close().await;
    }

    fn pool_status(&self) -> PoolStatus {
        self.inner.pool_status()
    }

    async fn release_memory(&self) {
        self.inner.release_memory().await;
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord> {
        self.inner.create_user(user).await
    }

    async fn find_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        self.inner.find_user(id).await
    }

    async fn find_credentials_by_email_key(
        &self,
        email_key: &str,
    ) -> StoreResult<Option<UserCredentials>> {
        self.inner.find_credentials_by_email_key(email_key).await
    }

    async fn find_credentials(&self, id: Uuid) -> StoreResult<Option<UserCredentials>> {
        self.inner.find_credentials(id).await
    }

    async fn update_profile(
        &self,
        id: Uuid,
        change: ProfileChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let mark = self.fanout.mark();
        let updated = self.inner.update_profile(id, change, now).await?;
        self.tell(updated.is_some(), Change::User(id), mark).await;
        Ok(updated)
    }

    async fn set_password_hash(
        &self,
        id: Uuid,
        replacing: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let set = self
            .inner
            .set_password_hash(id, replacing, hash, now)
            .await?;
        self.tell(set, Change::User(id), mark).await;
        Ok(set)
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let deleted = self.inner.delete_user(id).await?;
        self.tell(deleted, Change::User(id), mark).await;
        Ok(deleted)
    }

    async fn users_with_non_ascii_email_keys(&self) -> StoreResult<Vec<StoredEmailKey>> {
        self.inner.users_with_non_ascii_email_keys().await
    }

    async fn replace_email_key(
        &self,
        id: Uuid,
        replacing: &str,
        email_key: &str,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let replaced = self
            .inner
            .replace_email_key(id, replacing, email_key)
            .await?;
        self.tell(replaced, Change::User(id), mark).await;
        Ok(replaced)
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<Option<SessionRecord>> {
        self.inner.create_session(session).await
    }

    async fn find_live_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSession>> {
        let cache = self.fanout.cache();
        if let Some((user, expires_at)) = cache.live_user(session_id, user_id, now) {
            return Ok(Some(LiveSession { user, expires_at }));
        }
        let ticket = cache.begin();
        let found = self
            .inner
            .find_live_session_user(session_id, user_id, now)
            .await?;
        if let (Some(ticket), Some(live)) = (ticket, &found) {
            cache.keep(ticket, session_id, live.user.clone(), live.expires_at, None);
        }
        Ok(found)
    }

    async fn create_token_session(
        &self,
        session: NewTokenSession,
    ) -> StoreResult<Option<SessionRecord>> {
        self.inner.create_token_session(session).await
    }

    async fn find_token_session(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let cache = self.fanout.cache();
        if let Some(found) = cache.token_session(token_hash, now) {
            return Ok(Some(found));
        }
        let ticket = cache.begin();
        let found = self.inner.find_token_session(token_hash, now).await?;
        if let (Some(ticket), Some((session, user))) = (ticket, &found) {
            cache.keep(
                ticket,
                session.id,
                user.clone(),
                session.expires_at,
                Some((session.clone(), token_hash)),
            );
        }
        Ok(found)
    }

    async fn slide_session(
        &self,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
        cap: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        let mark = self.fanout.mark();
        let slid = self
            .inner
            .slide_session(session_id, expires_at, cap, now)
            .await?;
        if let Some(session) = &slid {
            let change = Change::Session {
                user: Some(session.user_id),
                session: session_id,
            };
            self.tell(true, change, mark).await;
        }
        Ok(slid)
    }

    async fn revoke_token_session(
        &self,
        user_id: Uuid,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let revoked = self
            .inner
            .revoke_token_session(user_id, token_hash, now)
            .await?;
        self.tell(revoked, Change::User(user_id), mark).await;
        Ok(revoked)
    }

    async fn find_refresh_token(
        &self,
        refresh_hash: &[u8],
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        self.inner.find_refresh_token(refresh_hash).await
    }

    async fn rotate_refresh_token(&self, rotation: Rotation) -> StoreResult<RotationOutcome> {
        let mark = self.fanout.mark();
        let outcome = self.inner.rotate_refresh_token(rotation).await?;
        if let RotationOutcome::Reused { session_id } = &outcome {
            let change = Change::Session {
                user: None,
                session: *session_id,
            };
            self.tell(true, change, mark).await;
        }
        Ok(outcome)
    }

    async fn refresh_successor(&self, refresh_hash: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.refresh_successor(refresh_hash).await
    }

    async fn list_live_sessions(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.inner.list_live_sessions(user_id, now).await
    }

    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let revoked = self.inner.revoke_session(user_id, session_id, now).await?;
        let change = Change::Session {
            user: Some(user_id),
            session: session_id,
        };
        self.tell(revoked, change, mark).await;
        Ok(revoked)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mark = self.fanout.mark();
        let revoked = self.inner.revoke_user_sessions(user_id, keep, now).await?;
        // A pending email change may have ended even with no session revoked (told, but not
        // waited for: no trigger reports a write that changed nothing).
        self.fanout
            .changed(Change::User(user_id), mark, revoked > 0)
            .await;
        Ok(revoked)
    }

    async fn issue_one_time_token(&self, token: NewOneTimeToken) -> StoreResult<()> {
        self.inner.issue_one_time_token(token).await
    }

    async fn find_one_time_token(
        &self,
        token_hash: &[u8],
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<OneTimeTokenRecord>> {
        self.inner
            .find_one_time_token(token_hash, purpose, now)
            .await
    }

    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let mark = self.fanout.mark();
        let user = self
            .inner
            .reset_password(token_hash, password_hash, now)
            .await?;
        if let Some(user) = &user {
            self.tell(true, Change::User(user.id), mark).await;
        }
        Ok(user)
    }

    async fn confirm_email(
        &self,
        token_hash: &[u8],
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<EmailConfirmation> {
        let mark = self.fanout.mark();
        let confirmation = self.inner.confirm_email(token_hash, keep, now).await?;
        if let EmailConfirmation::Verified { user } | EmailConfirmation::Changed { user, .. } =
            &confirmation
        {
            self.tell(true, Change::User(user.id), mark).await;
        }
        Ok(confirmation)
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let changed = self
            .inner
            .change_password(user_id, password_hash, keep, now)
            .await?;
        self.tell(changed, Change::User(user_id), mark).await;
        Ok(changed)
    }

    async fn prune(&self, pruning: Pruning) -> StoreResult<Pruned> {
        // Only ended sessions go, which no cached answer holds past their end.
        self.inner.prune(pruning).await
    }

    async fn import_better_auth(&self, import: BetterAuthImport) -> StoreResult<ImportOutcome> {
        let mark = self.fanout.mark();
        let outcome = self.inner.import_better_auth(import).await?;
        self.tell(true, Change::Everything, mark).await;
        Ok(outcome)
    }

    async fn ensure_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<u8>> {
        self.inner.ensure_secret(name, candidate, now).await
    }

    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord> {
        self.inner.ensure_signing_key(candidate).await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner.rotate_signing_key(key, now).await
    }

    async fn signing_keys(
        &self,
        retired_after: DateTime<Utc>,
    ) -> StoreResult<Vec<SigningKeyRecord>> {
        self.inner.signing_keys(retired_after).await
    }

    async fn replace_signing_private_key(
        &self,
        kid: &str,
        previous: &[u8],
        private_key: &[u8],
    ) -> StoreResult<bool> {
        self.inner
            .replace_signing_private_key(kid, previous, private_key)
            .await
    }
}

#[async_trait]
impl FactorStore for CachedStore {
    async fn list_factors(&self, user_id: Uuid) -> StoreResult<Vec<FactorRecord>> {
        self.inner.list_factors(user_id).await
    }

    async fn start_totp(&self, factor: FactorRecord) -> StoreResult<bool> {
        self.inner.start_totp(factor).await
    }

    async fn confirm_totp(
        &self,
        user_id: Uuid,
        factor_id: Uuid,
        step: i64,
        recovery_hashes: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner
            .confirm_totp(user_id, factor_id, step, recovery_hashes, now)
            .await
    }

    async fn use_totp_step(
        &self,
        factor_id: Uuid,
        step: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.use_totp_step(factor_id, step, now).await
    }

    async fn insert_passkey(&self, factor: FactorRecord) -> StoreResult<bool> {
        self.inner.insert_passkey(factor).await
    }

    async fn find_passkey(&self, credential_id: &[u8]) -> StoreResult<Option<FactorRecord>> {
        self.inner.find_passkey(credential_id).await
    }

    async fn update_passkey(
        &self,
        factor_id: Uuid,
        secret: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.update_passkey(factor_id, secret, now).await
    }

    async fn rename_passkey(
        &self,
        user_id: Uuid,
        factor_id: Uuid,
        name: &str,
    ) -> StoreResult<bool> {
        self.inner.rename_passkey(user_id, factor_id, name).await
    }

    async fn delete_factor(&self, user_id: Uuid, factor_id: Uuid) -> StoreResult<bool> {
        self.inner.delete_factor(user_id, factor_id).await
    }

    async fn delete_factors(&self, user_id: Uuid) -> StoreResult<u64> {
        self.inner.delete_factors(user_id).await
    }

    async fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner
            .replace_recovery_codes(user_id, hashes, now)
            .await
    }

    async fn use_recovery_code(
        &self,
        user_id: Uuid,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>> {
        self.inner.use_recovery_code(user_id, hash, now).await
    }

    async fn count_recovery_codes(&self, user_id: Uuid) -> StoreResult<u64> {
        self.inner.count_recovery_codes(user_id).await
    }

    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<()> {
        self.inner.create_challenge(challenge).await
    }

    async fn find_challenge(
        &self,
        token_hash: &[u8],
        purpose: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ChallengeRecord>> {
        self.inner.find_challenge(token_hash, purpose, now).await
    }

    async fn consume_challenge(&self, token_hash: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        self.inner.consume_challenge(token_hash, now).await
    }

    async fn update_challenge_state(
        &self,
        token_hash: &[u8],
        state: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner
            .update_challenge_state(token_hash, state, now)
            .await
    }

    async fn set_session_authentication(
        &self,
        session_id: Uuid,
        auth_time: DateTime<Utc>,
        amr: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mark = self.fanout.mark();
        let set = self
            .inner
            .set_session_authentication(session_id, auth_time, amr, now)
            .await?;
        let change = Change::Session {
            user: None,
            session: session_id,
        };
        self.tell(set, change, mark).await;
        Ok(set)
    }

    async fn session_authentication(
        &self,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionAuthentication>> {
        self.inner.session_authentication(session_id, now).await
    }

    async fn prune_challenges(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune_challenges(before).await
    }
}

/// Every admin change of a user is a change of what a token check answers (its role, its
/// sessions, the user itself), told like any other.
#[async_trait]
impl AdminStore for CachedStore {
    async fn append_audit_event(
        &self,
        event: AuditRecord,
        webhook: Option<NewMessage>,
    ) -> StoreResult<()> {
        self.inner.append_audit_event(event, webhook).await
    }

    async fn list_audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        self.inner.list_audit_events(filter).await
    }

    async fn prune_audit_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune_audit_events(before).await
    }

    async fn list_users(&self, filter: &UserFilter) -> StoreResult<Vec<UserRecord>> {
        self.inner.list_users(filter).await
    }

    async fn admin_update_user(
        &self,
        id: Uuid,
        update: &AdminUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<UserRecord>> {
        let mark = self.fanout.mark();
        let outcome = self.inner.admin_update_user(id, update, now).await?;
        let changed = matches!(outcome, AdminOutcome::Done(_));
        self.tell(changed, Change::User(id), mark).await;
        Ok(outcome)
    }

    async fn ban_user(
        &self,
        id: Uuid,
        ban: &Ban,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<(UserRecord, u64)>> {
        let mark = self.fanout.mark();
        let outcome = self.inner.ban_user(id, ban, now).await?;
        let changed = matches!(outcome, AdminOutcome::Done(_));
        self.tell(changed, Change::User(id), mark).await;
        Ok(outcome)
    }

    async fn unban_user(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<UserRecord>> {
        let mark = self.fanout.mark();
        let user = self.inner.unban_user(id, now).await?;
        self.tell(user.is_some(), Change::User(id), mark).await;
        Ok(user)
    }

    async fn delete_user_unless_last_admin(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<()>> {
        let mark = self.fanout.mark();
        let outcome = self.inner.delete_user_unless_last_admin(id, now).await?;
        let changed = matches!(outcome, AdminOutcome::Done(()));
        self.tell(changed, Change::User(id), mark).await;
        Ok(outcome)
    }
}

#[async_trait]
impl OutboxStore for CachedStore {
    async fn enqueue_message(&self, message: NewMessage) -> StoreResult<()> {
        self.inner.enqueue_message(message).await
    }

    async fn claim_messages(
        &self,
        kind: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMessage>> {
        self.inner
            .claim_messages(kind, now, lease_until, limit)
            .await
    }

    async fn message_delivered(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        self.inner.message_delivered(id, now).await
    }

    async fn message_failed(
        &self,
        id: Uuid,
        retry_at: Option<DateTime<Utc>>,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner.message_failed(id, retry_at, error, now).await
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        self.inner.outbox_counts().await
    }

    async fn dead_messages(&self, limit: u32) -> StoreResult<Vec<DeadMessage>> {
        self.inner.dead_messages(limit).await
    }

    async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune_outbox(before).await
    }
}
