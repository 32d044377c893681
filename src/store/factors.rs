//! Second factors, recovery codes, challenges and how a session was authenticated (issue
//! 17): one trait, [`FactorStore`], and one implementation for both backends
//! ([`impl_factor_store!`]), since the statements are the same SQL on both and only the
//! placeholders, id encoding and transaction start differ.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// What kind of second factor a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    /// RFC 6238 TOTP: at most one per user, active once confirmed.
    Totp,
    /// A WebAuthn credential (passkey).
    Passkey,
}

impl FactorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
        }
    }

    fn from_stored(value: &str) -> Self {
        match value {
            "totp" => Self::Totp,
            _ => Self::Passkey,
        }
    }
}

/// A second factor as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct FactorRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: FactorKind,
    /// A passkey's name, given by its owner.
    pub name: Option<String>,
    /// A passkey's WebAuthn credential id (unique over all users).
    pub credential_id: Option<Vec<u8>>,
    /// TOTP: the secret, sealed; passkey: the credential (webauthn-rs's JSON).
    pub secret: Vec<u8>,
    /// TOTP: the last time step accepted.
    pub last_step: Option<i64>,
    /// TOTP: when the first code was confirmed (`None`: enrolment pending); passkeys: when
    /// registered.
    pub confirmed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for FactorRecord {
    /// Without the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("confirmed_at", &self.confirmed_at)
            .finish_non_exhaustive()
    }
}

/// A challenge to store: named by the SHA-256 of the token its client holds.
#[derive(Clone)]
pub struct NewChallenge {
    pub token_hash: Vec<u8>,
    pub user_id: Option<Uuid>,
    pub purpose: &'static str,
    pub session_id: Option<Uuid>,
    pub password_hash: Option<String>,
    pub ip: Option<String>,
    pub state: String,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewChallenge")
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A live (unused, unexpired) challenge as stored.
#[derive(Clone)]
pub struct ChallengeRecord {
    pub user_id: Option<Uuid>,
    pub purpose: String,
    pub session_id: Option<Uuid>,
    pub password_hash: Option<String>,
    pub ip: Option<String>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for ChallengeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeRecord")
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// How and when the user last authenticated for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAuthentication {
    pub auth_time: DateTime<Utc>,
    /// RFC 8176 values (see [`SessionRecord::amr`](super::SessionRecord::amr)).
    pub amr: Vec<String>,
}

/// What the second-factor services need stored. Every check-and-use is one statement, so
/// that two requests with one code or one challenge cannot both succeed.
#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Every factor of the user (pending TOTP too), oldest first.
    async fn list_factors(&self, user_id: Uuid) -> StoreResult<Vec<FactorRecord>>;

    /// Starts a TOTP enrolment: replaces a pending (unconfirmed) TOTP factor of the user with
    /// this one. `false` (nothing written) when the user has a confirmed one, or is gone.
    async fn start_totp(&self, factor: FactorRecord) -> StoreResult<bool>;

    /// Confirms the user's pending TOTP factor with the step of the code that confirmed it,
    /// and replaces the user's recovery codes with these, in one transaction. `false` when
    /// there was no such pending factor.
    async fn confirm_totp(
        &self,
        user_id: Uuid,
        factor_id: Uuid,
        step: i64,
        recovery_hashes: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records that a confirmed TOTP factor accepted a code of `step`, if no code of this or
    /// a later step was accepted before (`false` otherwise: a replay).
    async fn use_totp_step(
        &self,
        factor_id: Uuid,
        step: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Adds a passkey. `false` when its credential id is registered already (to anyone).
    async fn insert_passkey(&self, factor: FactorRecord) -> StoreResult<bool>;

    /// The passkey with this credential id.
    async fn find_passkey(&self, credential_id: &[u8]) -> StoreResult<Option<FactorRecord>>;

    /// Replaces a passkey's stored credential (its counter and backup state moved on) and
    /// sets `last_used_at`.
    async fn update_passkey(
        &self,
        factor_id: Uuid,
        secret: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Renames a passkey of the user. `false` when the user has no such passkey.
    async fn rename_passkey(&self, user_id: Uuid, factor_id: Uuid, name: &str)
    -> StoreResult<bool>;

    /// Deletes a factor of the user; when no confirmed factor is left, the recovery codes go
    /// too. `false` when the user has no such factor.
    async fn delete_factor(&self, user_id: Uuid, factor_id: Uuid) -> StoreResult<bool>;

    /// Deletes every factor and recovery code of the user; how many factors went.
    async fn delete_factors(&self, user_id: Uuid) -> StoreResult<u64>;

    /// Replaces the user's recovery codes.
    async fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[Vec<u8>],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Uses an unused recovery code of the user: how many unused ones are left, or `None`
    /// when this one is unknown or used.
    async fn use_recovery_code(
        &self,
        user_id: Uuid,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>>;

    /// How many unused recovery codes the user has.
    async fn count_recovery_codes(&self, user_id: Uuid) -> StoreResult<u64>;

    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<()>;

    /// The challenge with this token hash and purpose, if unused and unexpired at `now`.
    async fn find_challenge(
        &self,
        token_hash: &[u8],
        purpose: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ChallengeRecord>>;

    /// Uses the challenge up: `true` for the one call that found it live.
    async fn consume_challenge(&self, token_hash: &[u8], now: DateTime<Utc>) -> StoreResult<bool>;

    /// Replaces a live challenge's state (a WebAuthn ceremony started on it).
    async fn update_challenge_state(
        &self,
        token_hash: &[u8],
        state: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records a new authentication of a live session (a second factor, a re-authentication).
    /// `false` when the session is no longer live.
    async fn set_session_authentication(
        &self,
        session_id: Uuid,
        auth_time: DateTime<Utc>,
        amr: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How and when the user last authenticated for a live session.
    async fn session_authentication(
        &self,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionAuthentication>>;

    /// Deletes challenges that expired before `before`; how many.
    async fn prune_challenges(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

pub(super) fn kind_from_stored(value: &str) -> FactorKind {
    FactorKind::from_stored(value)
}

/// The columns of [`FactorRecord`].
macro_rules! factor_columns {
    () => {
        "id, user_id, kind, name, credential_id, secret, last_step, confirmed_at, created_at, \
         last_used_at"
    };
}
pub(super) use factor_columns;

/// Implements [`FactorStore`] for a backend. The SQL is written once with `$n` placeholders;
/// `sql` turns it into the backend's form. `id` binds a [`Uuid`] as the backend stores it,
/// `get_id`/`get_opt_id` read one back, `at` brings a time to the stored precision, and
/// `begin` opens a write transaction.
macro_rules! impl_factor_store {
    (
        $store:ty, $row:ty,
        read = $read:ident, write = $write:ident,
        sql = $sql:path, id = $id:path, get_id = $get_id:path, get_opt_id = $get_opt_id:path,
        at = $at:path, begin = $begin:path $(,)?
    ) => {
        fn factor_from_row(row: &$row) -> Result<$crate::store::FactorRecord, sqlx::Error> {
            Ok($crate::store::FactorRecord {
                id: $get_id(row, "id")?,
                user_id: $get_id(row, "user_id")?,
                kind: $crate::store::factors::kind_from_stored(row.try_get("kind")?),
                name: row.try_get("name")?,
                credential_id: row.try_get("credential_id")?,
                secret: row.try_get("secret")?,
                last_step: row.try_get("last_step")?,
                confirmed_at: row.try_get("confirmed_at")?,
                created_at: row.try_get("created_at")?,
                last_used_at: row.try_get("last_used_at")?,
            })
        }

        #[async_trait]
        impl $crate::store::FactorStore for $store {
            async fn list_factors(
                &self,
                user_id: Uuid,
            ) -> StoreResult<Vec<$crate::store::FactorRecord>> {
                let sql = $sql(concat!(
                    "SELECT ",
                    $crate::store::factors::factor_columns!(),
                    " FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
                ));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($id(user_id))
                    .fetch_all(&self.$read)
                    .await?;
                Ok(rows
                    .iter()
                    .map(factor_from_row)
                    .collect::<Result<_, _>>()?)
            }

            async fn start_totp(&self, factor: $crate::store::FactorRecord) -> StoreResult<bool> {
                let mut tx = $begin(self).await?;
                let blocked: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                    "SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND kind = 'totp' \
                     AND confirmed_at IS NOT NULL",
                )))
                .bind($id(factor.user_id))
                .fetch_one(&mut *tx)
                .await?;
                if blocked > 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM mfa_factors WHERE user_id = $1 AND kind = 'totp'",
                )))
                .bind($id(factor.user_id))
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO mfa_factors (id, user_id, kind, secret, created_at) \
                     SELECT $1, $2, 'totp', $3, $4 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
                )))
                .bind($id(factor.id))
                .bind($id(factor.user_id))
                .bind(&factor.secret)
                .bind($at(factor.created_at))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(inserted == 1)
            }

            async fn confirm_totp(
                &self,
                user_id: Uuid,
                factor_id: Uuid,
                step: i64,
                recovery_hashes: &[Vec<u8>],
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let now = $at(now);
                let mut tx = $begin(self).await?;
                let confirmed = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE mfa_factors SET confirmed_at = $1, last_step = $2, last_used_at = $1 \
                     WHERE id = $3 AND user_id = $4 AND kind = 'totp' AND confirmed_at IS NULL",
                )))
                .bind(now)
                .bind(step)
                .bind($id(factor_id))
                .bind($id(user_id))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if confirmed != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                replace_codes(&mut tx, user_id, recovery_hashes, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn use_totp_step(
                &self,
                factor_id: Uuid,
                step: i64,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let used = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE mfa_factors SET last_step = $1, last_used_at = $2 \
                     WHERE id = $3 AND kind = 'totp' AND confirmed_at IS NOT NULL \
                     AND (last_step IS NULL OR last_step < $1)",
                )))
                .bind(step)
                .bind($at(now))
                .bind($id(factor_id))
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(used == 1)
            }

            async fn insert_passkey(
                &self,
                factor: $crate::store::FactorRecord,
            ) -> StoreResult<bool> {
                let result = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO mfa_factors (id, user_id, kind, name, credential_id, secret, \
                     confirmed_at, created_at) \
                     SELECT $1, $2, 'passkey', $3, $4, $5, $6, $6 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
                )))
                .bind($id(factor.id))
                .bind($id(factor.user_id))
                .bind(&factor.name)
                .bind(&factor.credential_id)
                .bind(&factor.secret)
                .bind($at(factor.created_at))
                .execute(&self.$write)
                .await;
                match result {
                    Ok(done) => Ok(done.rows_affected() == 1),
                    Err(sqlx::Error::Database(error))
                        if matches!(error.kind(), sqlx::error::ErrorKind::UniqueViolation) =>
                    {
                        Ok(false)
                    }
                    Err(error) => Err(error.into()),
                }
            }

            async fn find_passkey(
                &self,
                credential_id: &[u8],
            ) -> StoreResult<Option<$crate::store::FactorRecord>> {
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(concat!(
                    "SELECT ",
                    $crate::store::factors::factor_columns!(),
                    " FROM mfa_factors WHERE credential_id = $1 AND kind = 'passkey'"
                ))))
                .bind(credential_id)
                .fetch_optional(&self.$read)
                .await?;
                Ok(row.as_ref().map(factor_from_row).transpose()?)
            }

            async fn update_passkey(
                &self,
                factor_id: Uuid,
                secret: &[u8],
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let updated = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE mfa_factors SET secret = $1, last_used_at = $2 \
                     WHERE id = $3 AND kind = 'passkey'",
                )))
                .bind(secret)
                .bind($at(now))
                .bind($id(factor_id))
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn rename_passkey(
                &self,
                user_id: Uuid,
                factor_id: Uuid,
                name: &str,
            ) -> StoreResult<bool> {
                let updated = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE mfa_factors SET name = $1 \
                     WHERE id = $2 AND user_id = $3 AND kind = 'passkey'",
                )))
                .bind(name)
                .bind($id(factor_id))
                .bind($id(user_id))
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn delete_factor(&self, user_id: Uuid, factor_id: Uuid) -> StoreResult<bool> {
                let mut tx = $begin(self).await?;
                let deleted = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2",
                )))
                .bind($id(factor_id))
                .bind($id(user_id))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM recovery_codes WHERE user_id = $1 AND NOT EXISTS (SELECT 1 \
                     FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                )))
                .bind($id(user_id))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(deleted == 1)
            }

            async fn delete_factors(&self, user_id: Uuid) -> StoreResult<u64> {
                let mut tx = $begin(self).await?;
                let deleted = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM mfa_factors WHERE user_id = $1",
                )))
                .bind($id(user_id))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM recovery_codes WHERE user_id = $1",
                )))
                .bind($id(user_id))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(deleted)
            }

            async fn replace_recovery_codes(
                &self,
                user_id: Uuid,
                hashes: &[Vec<u8>],
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                let mut tx = $begin(self).await?;
                replace_codes(&mut tx, user_id, hashes, $at(now)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn use_recovery_code(
                &self,
                user_id: Uuid,
                hash: &[u8],
                now: DateTime<Utc>,
            ) -> StoreResult<Option<u64>> {
                let mut tx = $begin(self).await?;
                let used = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE recovery_codes SET used_at = $1 \
                     WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )))
                .bind($at(now))
                .bind($id(user_id))
                .bind(hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if used != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )))
                .bind($id(user_id))
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(u64::try_from(left).unwrap_or(0)))
            }

            async fn count_recovery_codes(&self, user_id: Uuid) -> StoreResult<u64> {
                let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )))
                .bind($id(user_id))
                .fetch_one(&self.$read)
                .await?;
                Ok(u64::try_from(left).unwrap_or(0))
            }

            async fn create_challenge(
                &self,
                challenge: $crate::store::NewChallenge,
            ) -> StoreResult<()> {
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO auth_challenges (token_hash, user_id, purpose, session_id, \
                     password_hash, ip, state, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )))
                .bind(&challenge.token_hash)
                .bind(challenge.user_id.map($id))
                .bind(challenge.purpose)
                .bind(challenge.session_id.map($id))
                .bind(&challenge.password_hash)
                .bind(&challenge.ip)
                .bind(&challenge.state)
                .bind($at(challenge.now))
                .bind($at(challenge.expires_at))
                .execute(&self.$write)
                .await?;
                Ok(())
            }

            async fn find_challenge(
                &self,
                token_hash: &[u8],
                purpose: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<$crate::store::ChallengeRecord>> {
                // From the writer: a challenge is read right after it is written or changed.
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT user_id, purpose, session_id, password_hash, ip, state, created_at, \
                     expires_at FROM auth_challenges WHERE token_hash = $1 AND purpose = $2 \
                     AND used_at IS NULL AND expires_at > $3",
                )))
                .bind(token_hash)
                .bind(purpose)
                .bind($at(now))
                .fetch_optional(&self.$write)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                Ok(Some($crate::store::ChallengeRecord {
                    user_id: $get_opt_id(&row, "user_id")?,
                    purpose: row.try_get("purpose")?,
                    session_id: $get_opt_id(&row, "session_id")?,
                    password_hash: row.try_get("password_hash")?,
                    ip: row.try_get("ip")?,
                    state: row.try_get("state")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                }))
            }

            async fn consume_challenge(
                &self,
                token_hash: &[u8],
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let used = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE auth_challenges SET used_at = $1 \
                     WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
                )))
                .bind($at(now))
                .bind(token_hash)
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(used == 1)
            }

            async fn update_challenge_state(
                &self,
                token_hash: &[u8],
                state: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let updated = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE auth_challenges SET state = $1 \
                     WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3",
                )))
                .bind(state)
                .bind(token_hash)
                .bind($at(now))
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn set_session_authentication(
                &self,
                session_id: Uuid,
                auth_time: DateTime<Utc>,
                amr: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let updated = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE sessions SET auth_time = $1, amr = $2 \
                     WHERE id = $3 AND revoked_at IS NULL AND expires_at > $4",
                )))
                .bind($at(auth_time))
                .bind(amr)
                .bind($id(session_id))
                .bind($at(now))
                .execute(&self.$write)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn session_authentication(
                &self,
                session_id: Uuid,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<$crate::store::SessionAuthentication>> {
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT created_at, auth_time, amr FROM sessions \
                     WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
                )))
                .bind($id(session_id))
                .bind($at(now))
                .fetch_optional(&self.$write)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let created_at: DateTime<Utc> = row.try_get("created_at")?;
                let auth_time: Option<DateTime<Utc>> = row.try_get("auth_time")?;
                let amr: Option<&str> = row.try_get("amr")?;
                Ok(Some($crate::store::SessionAuthentication {
                    auth_time: auth_time.unwrap_or(created_at),
                    amr: $crate::store::SessionRecord::amr_from_stored(amr),
                }))
            }

            async fn prune_challenges(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                Ok(sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM auth_challenges WHERE expires_at < $1",
                )))
                .bind($at(before))
                .execute(&self.$write)
                .await?
                .rows_affected())
            }
        }

        /// Replaces the user's recovery codes inside a transaction.
        async fn replace_codes(
            tx: &mut sqlx::Transaction<'_, <$row as sqlx::Row>::Database>,
            user_id: Uuid,
            hashes: &[Vec<u8>],
            now: DateTime<Utc>,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "DELETE FROM recovery_codes WHERE user_id = $1",
            )))
            .bind($id(user_id))
            .execute(&mut **tx)
            .await?;
            for hash in hashes {
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO recovery_codes (user_id, code_hash, created_at) \
                     VALUES ($1, $2, $3)",
                )))
                .bind($id(user_id))
                .bind(hash)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }
    };
}
pub(super) use impl_factor_store;
