//! PostgreSQL backend.
//!
//! Transactions run at the default READ COMMITTED level. The atomic steps rely on row locks
//! and on PostgreSQL re-checking an `UPDATE`'s `WHERE` against the newest committed row once
//! it holds the row's lock: of two transactions updating one row with the same condition, the
//! second waits for the first and then no longer matches.
//!
//! Lock order. Every transaction that writes several tables locks rows parent first:
//!
//! - `delete_user` locks the user row, then its cascade locks the user's sessions (and their
//!   refresh tokens) and one-time tokens;
//! - `rotate_refresh_token` locks one session row, then that session's refresh tokens, and
//!   never waits for a user or one-time token row;
//! - the one-time-token methods (`issue_one_time_token`, `reset_password`, `confirm_email`,
//!   `change_password`) lock the user row first (`FOR NO KEY UPDATE`, or `FOR UPDATE` when
//!   the unique `email_key` may change), then the user's one-time tokens, then its sessions.
//!
//! Two of these that meet on one user therefore queue on the user row before either holds a
//! child row, and a rotation (or `revoke_session(s)`, which lock only session rows) waits for
//! nothing they hold: no cycle. Consuming the token before locking the user would make one
//! with `delete_user` (token then user, against user then token); the store contract's race
//! test hits exactly that deadlock (`40P01`) when the user lock is left out.
//!
//! `FOR NO KEY UPDATE` does not block the `FOR KEY SHARE` that inserting a session or token
//! takes on its user row (foreign key), so logins go on during a reset; `FOR UPDATE` (email
//! change) makes them wait for the commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Row};
use uuid::Uuid;

use super::batch::Batcher;
use super::{
    BetterAuthImport, EmailConfirmation, IMPORT_EMAIL_TAKEN, IMPORT_NO_USER, IMPORT_TOKEN_TAKEN,
    ImportOutcome, LiveSession, NewOneTimeToken, NewSession, NewTokenSession, NewUser,
    OneTimeTokenRecord, ProfileChange, Pruned, Pruning, RefreshTokenRecord, Role, Rotation,
    RotationOutcome, SessionRecord, SigningKeyRecord, Store, StoreError, StoreResult, TokenPurpose,
    UserCredentials, UserRecord,
};
use crate::domain::Email;

/// The CTEs that write a statement's audit event and its webhook delivery from its `created`
/// row (none when the statement created nothing), with the parameters' numbers: the event's
/// 11 columns, then the delivery's 4; a NULL event id (or delivery id) writes none.
macro_rules! audited_ctes {
    ($id:literal, $at:literal, $event:literal, $user:literal, $actor:literal,
     $actor_id:literal, $session:literal, $ip:literal, $agent:literal, $request:literal,
     $detail:literal, $message:literal, $kind:literal, $payload:literal, $now:literal) => {
        concat!(
            "audited AS (INSERT INTO audit_events (id, at, event, user_id, actor, actor_id, \
             session_id, ip, user_agent, request_id, detail) SELECT ",
            $id,
            ", ",
            $at,
            ", ",
            $event,
            ", ",
            $user,
            ", ",
            $actor,
            ", ",
            $actor_id,
            ", ",
            $session,
            ", ",
            $ip,
            ", ",
            $agent,
            ", ",
            $request,
            ", ",
            $detail,
            " FROM created WHERE ",
            $id,
            "::uuid IS NOT NULL), ",
            "queued AS (INSERT INTO outbox (id, kind, payload, created_at, attempts, \
             next_attempt_at) SELECT ",
            $message,
            ", ",
            $kind,
            ", ",
            $payload,
            ", ",
            $now,
            ", 0, ",
            $now,
            " FROM created WHERE ",
            $message,
            "::uuid IS NOT NULL)"
        )
    };
}

/// Binds the parameters of [`audited_ctes!`], in its order: NULLs for what is absent.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    audit: Option<&'q super::AuditWrite>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let event = audit.map(|audit| &audit.event);
    let webhook = audit.and_then(|audit| audit.webhook.as_ref());
    query
        .bind(event.map(|event| event.id))
        .bind(event.map(|event| event.at))
        .bind(event.map(|event| event.event.as_str()))
        .bind(event.and_then(|event| event.user_id))
        .bind(event.map(|event| event.actor.as_str()))
        .bind(event.and_then(|event| event.actor_id))
        .bind(event.and_then(|event| event.session_id))
        .bind(event.and_then(|event| event.ip.as_deref()))
        .bind(event.and_then(|event| event.user_agent.as_deref()))
        .bind(event.and_then(|event| event.request_id.as_deref()))
        .bind(event.and_then(|event| event.detail.as_deref()))
        .bind(webhook.map(|message| message.id))
        .bind(webhook.map(|message| message.kind))
        .bind(webhook.map(|message| message.payload.as_slice()))
        .bind(webhook.map(|message| message.now))
}

/// The embedded migrations. sqlx's migrator takes a session-level advisory lock (keyed on the
/// database name) around the whole run, so replicas starting together apply each migration
/// exactly once. Locking is on by default and must stay on: do not call `set_locking(false)`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a query waits for a pooled connection (including connecting) before failing, so
/// that a down database makes `/ready` and requests fail fast instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection unused for this long is pinged before it is handed out; one in steady
/// use is not. sqlx's default pings on every acquire: a round trip to the server before each
/// query, a quarter of those a login made. A connection the server dropped while it sat
/// idle (a restart, an idle timeout) is still caught and replaced before a query fails on
/// it; one dropped within the last second fails its query, as any in-flight one does.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Key of the transaction-scoped advisory lock that serialises [`Store::ensure_signing_key`]
/// across replicas: the ASCII bytes of `"servauth"` read as a big-endian `i64`. sqlx's
/// migrator derives its own lock key from the database name, so the two do not collide.
const SIGNING_KEY_LOCK: i64 = 0x7365_7276_6175_7468;

/// The columns of [`UserRecord`], in `users`.
macro_rules! user_columns {
    () => {
        "id, email, username, name, image, email_verified, role, pending_email, created_at, \
         updated_at, better_auth_id, banned_at, ban_reason, ban_expires_at"
    };
}

/// The columns of [`SessionRecord`], in `sessions`.
macro_rules! session_columns {
    () => {
        "id, user_id, user_agent, ip, created_at, last_used_at, expires_at, revoked_at, remember, \
         auth_time, amr"
    };
}

/// The columns of [`RefreshTokenRecord`], from `refresh_tokens t JOIN sessions s`: the
/// session's under their own names, the token's prefixed with `token_` (both tables have
/// `created_at` and `expires_at`).
macro_rules! refresh_token_columns {
    () => {
        "s.id, s.user_id, s.user_agent, s.ip, s.created_at, s.last_used_at, s.expires_at, \
         s.revoked_at, s.remember, s.auth_time, s.amr, t.csrf_hash AS token_csrf_hash, t.created_at AS token_created_at, \
         t.expires_at AS token_expires_at, t.rotated_at AS token_rotated_at"
    };
}

/// The columns of [`OneTimeTokenRecord`], in `one_time_tokens`.
macro_rules! one_time_token_columns {
    () => {
        "user_id, purpose, email, created_at, expires_at, used_at"
    };
}

/// The columns of [`SigningKeyRecord`], in `signing_keys`.
macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, private_key, public_key, created_at, retired_at"
    };
}

/// A [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// [`Store::find_live_session_user`], the query behind every token check, batched.
    session_lookups: Batcher<SessionLookup, Option<LiveSession>>,
    /// The Better Auth face's token checks, batched the same way.
    token_lookups: Batcher<TokenLookup, Option<(SessionRecord, UserRecord)>>,
}

/// The key of one session lookup: session, its user, and the caller's time.
type SessionLookup = (Uuid, Uuid, DateTime<Utc>);

/// A Better Auth session token's hash and the time it is checked at.
type TokenLookup = (Vec<u8>, DateTime<Utc>);

/// The most lookups answered by one query.
const MAX_LOOKUP_BATCH: usize = 256;

impl PostgresStore {
    /// The pool (for the session notifications' connection options and pings).
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Parses the URL and builds a pool that connects lazily: a well-formed URL whose server
    /// does not answer is not an error here (the server may come up after us); queries, and
    /// [`Store::ping`], fail after the acquire timeout instead. Must be called inside a Tokio
    /// runtime (the pool spawns its maintenance task). Does not migrate.
    pub fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(invalid_url)?;
        let pool = PgPoolOptions::new()
            // A pool of zero connections could never serve a query.
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        // Up to half the pool answers token checks, so logins and refreshes keep the rest.
        let lookup_workers = usize::try_from(max_connections / 2)
            .unwrap_or(1)
            .clamp(1, 8);
        let lookups_pool = pool.clone();
        let session_lookups = Batcher::spawn(lookup_workers, MAX_LOOKUP_BATCH, move |keys| {
            find_live_session_users(lookups_pool.clone(), keys)
        });
        // The face's token checks get up to a quarter more: together under three quarters.
        let token_workers = usize::try_from(max_connections / 4)
            .unwrap_or(1)
            .clamp(1, 4);
        let tokens_pool = pool.clone();
        let token_lookups = Batcher::spawn(token_workers, MAX_LOOKUP_BATCH, move |keys| {
            find_token_sessions(tokens_pool.clone(), keys)
        });
        Ok(Self {
            pool,
            session_lookups,
            token_lookups,
        })
    }
}

/// One query for a batch of session lookups: each key's user if its session is live at the
/// key's time, in key order. Keys pair up by their position (`WITH ORDINALITY`), so the same
/// session asked twice gets two answers.
async fn find_live_session_users(
    pool: PgPool,
    keys: Vec<SessionLookup>,
) -> StoreResult<Vec<Option<LiveSession>>> {
    let mut session_ids = Vec::with_capacity(keys.len());
    let mut user_ids = Vec::with_capacity(keys.len());
    let mut times = Vec::with_capacity(keys.len());
    for (session_id, user_id, now) in keys {
        session_ids.push(session_id);
        user_ids.push(user_id);
        times.push(now);
    }
    let rows = sqlx::query(concat!(
        "SELECT position, session_expires_at, ",
        user_columns!(),
        " FROM users JOIN ( \
           SELECT k.position, s.user_id AS live_user, s.expires_at AS session_expires_at \
           FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) \
                WITH ORDINALITY AS k(session_id, user_id, now, position) \
           JOIN sessions s ON s.id = k.session_id AND s.user_id = k.user_id \
                AND s.revoked_at IS NULL AND s.expires_at > k.now \
         ) live ON users.id = live.live_user"
    ))
    .bind(&session_ids)
    .bind(&user_ids)
    .bind(&times)
    .fetch_all(&pool)
    .await?;
    let mut users: Vec<Option<LiveSession>> = vec![None; session_ids.len()];
    for row in &rows {
        let position: i64 = row.try_get("position")?;
        let slot = usize::try_from(position - 1)
            .ok()
            .and_then(|index| users.get_mut(index))
            .ok_or_else(|| StoreError::Database("lookup position out of range".into()))?;
        *slot = Some(LiveSession {
            user: user_from_row(row)?,
            expires_at: row.try_get("session_expires_at")?,
        });
    }
    Ok(users)
}

/// One query for a batch of Better Auth token checks: each key's live session and its
/// user, in key order (paired by position, as in [`find_live_session_users`]).
async fn find_token_sessions(
    pool: PgPool,
    keys: Vec<TokenLookup>,
) -> StoreResult<Vec<Option<(SessionRecord, UserRecord)>>> {
    let (hashes, times): (Vec<Vec<u8>>, Vec<DateTime<Utc>>) = keys.into_iter().unzip();
    let rows = sqlx::query(
        "SELECT k.position, s.id AS s_id, s.user_id, s.user_agent, s.ip, \
         s.created_at AS s_created_at, s.last_used_at, s.expires_at, s.revoked_at, s.remember, s.auth_time, s.amr, \
         u.id, u.email, u.username, u.name, u.image, u.email_verified, u.role, \
         u.pending_email, u.created_at, u.updated_at, u.better_auth_id, \
             u.banned_at, u.ban_reason, u.ban_expires_at \
         FROM unnest($1::bytea[], $2::timestamptz[]) WITH ORDINALITY AS k(token_hash, now, position) \
         JOIN sessions s ON s.token_hash = k.token_hash AND s.revoked_at IS NULL \
              AND s.expires_at > k.now \
         JOIN users u ON u.id = s.user_id",
    )
    .bind(&hashes)
    .bind(&times)
    .fetch_all(&pool)
    .await?;
    let mut found: Vec<Option<(SessionRecord, UserRecord)>> = vec![None; hashes.len()];
    for row in &rows {
        let position: i64 = row.try_get("position")?;
        let slot = usize::try_from(position - 1)
            .ok()
            .and_then(|index| found.get_mut(index))
            .ok_or_else(|| StoreError::Database("lookup position out of range".into()))?;
        let session = session_from_columns(row, "s_id", "s_created_at")?;
        *slot = Some((session, user_from_row(row)?));
    }
    Ok(found)
}

/// A URL that does not parse. sqlx's configuration errors name the problem (e.g. an invalid
/// port number), never the URL itself, so no password ends up in the message.
fn invalid_url(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Configuration(source) => StoreError::InvalidUrl(source.to_string()),
        other => StoreError::InvalidUrl(other.to_string()),
    }
}

/// Maps a unique violation on the identity indexes (reported by index name) to its meaning.
fn map_unique_violation(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(database_error) = &error {
        match database_error.constraint() {
            Some("users_email_key") => return StoreError::EmailTaken,
            Some("users_username_key") => return StoreError::UsernameTaken,
            _ => {}
        }
    }
    error.into()
}

fn user_from_row(row: &PgRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        image: row.try_get("image")?,
        email_verified: row.try_get("email_verified")?,
        role: Role::from_stored(row.try_get("role")?),
        pending_email: row.try_get("pending_email")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        better_auth_id: row.try_get("better_auth_id")?,
        ban: match row.try_get::<Option<DateTime<Utc>>, _>("banned_at")? {
            Some(at) => Some(super::Ban {
                at,
                reason: row.try_get("ban_reason")?,
                expires_at: row.try_get("ban_expires_at")?,
            }),
            None => None,
        },
    })
}

fn credentials_from_row(row: &PgRow) -> Result<UserCredentials, sqlx::Error> {
    Ok(UserCredentials {
        user: user_from_row(row)?,
        password_hash: row.try_get("password_hash")?,
    })
}

fn session_from_row(row: &PgRow) -> Result<SessionRecord, sqlx::Error> {
    session_from_columns(row, "id", "created_at")
}

/// A [`SessionRecord`] from a row with the session's id and creation time in the columns
/// named by `id` and `created_at`, the rest under their own names (a join with `users`
/// renames the two that clash).
fn session_from_columns(
    row: &PgRow,
    id: &str,
    created_at: &str,
) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: row.try_get(id)?,
        user_id: row.try_get("user_id")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
        created_at: row.try_get(created_at)?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        remember: row.try_get("remember")?,
        auth_time: row
            .try_get::<Option<DateTime<Utc>>, _>("auth_time")?
            .unwrap_or(row.try_get(created_at)?),
        amr: SessionRecord::amr_from_stored(row.try_get::<Option<&str>, _>("amr")?),
    })
}

/// A [`RefreshTokenRecord`] from a row with the session's columns under their own names and
/// the token's as `token_csrf_hash`, `token_created_at`, `token_expires_at`, `token_rotated_at`
/// (see `refresh_token_columns!`).
fn refresh_token_from_row(row: &PgRow) -> Result<RefreshTokenRecord, sqlx::Error> {
    Ok(RefreshTokenRecord {
        session: session_from_row(row)?,
        csrf_hash: row.try_get("token_csrf_hash")?,
        created_at: row.try_get("token_created_at")?,
        expires_at: row.try_get("token_expires_at")?,
        rotated_at: row.try_get("token_rotated_at")?,
    })
}

/// The purpose a stored `one_time_tokens.purpose` names. The `CHECK` constraint admits only
/// known names, so anything else is a database error, not a panic.
fn purpose_from_stored(value: &str) -> Result<TokenPurpose, sqlx::Error> {
    [
        TokenPurpose::PasswordReset,
        TokenPurpose::EmailVerification,
        TokenPurpose::EmailChange,
    ]
    .into_iter()
    .find(|purpose| purpose.as_str() == value)
    .ok_or_else(|| sqlx::Error::Decode(format!("unknown one-time token purpose {value:?}").into()))
}

fn one_time_token_from_row(row: &PgRow) -> Result<OneTimeTokenRecord, sqlx::Error> {
    Ok(OneTimeTokenRecord {
        user_id: row.try_get("user_id")?,
        purpose: purpose_from_stored(row.try_get("purpose")?)?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

/// How strongly [`lock_token_user`] locks the user row.
#[derive(Debug, Clone, Copy)]
enum UserLock {
    /// For changes that leave the user's unique keys alone (what such an `UPDATE` takes).
    NoKeyUpdate,
    /// For a change of `email_key`: taken up front rather than upgraded to later.
    Update,
}

/// Locks the row of the user the token with this hash belongs to, whatever the token's state,
/// and returns its id; `None` when there is no such token (or its user was deleted meanwhile).
/// This is the first lock of the token methods (see the module's lock order); the token row
/// itself is judged afterwards by [`consume_one_time_token`]. A token never changes owner,
/// so reading its `user_id` unlocked is safe.
async fn lock_token_user(
    conn: &mut PgConnection,
    token_hash: &[u8],
    lock: UserLock,
) -> Result<Option<Uuid>, sqlx::Error> {
    let sql = match lock {
        UserLock::NoKeyUpdate => {
            "SELECT u.id FROM one_time_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 FOR NO KEY UPDATE OF u"
        }
        UserLock::Update => {
            "SELECT u.id FROM one_time_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 FOR UPDATE OF u"
        }
    };
    sqlx::query_scalar(sql)
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await
}

/// Uses up the token with this hash if it has one of `purposes` and is unused and unexpired at
/// `now`: one conditional statement. A concurrent call that used it first holds its row lock
/// until it commits; this statement then re-checks `used_at IS NULL` against the committed row
/// and matches nothing, so of concurrent calls at most one gets the token back.
async fn consume_one_time_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
    purposes: &[TokenPurpose],
    now: DateTime<Utc>,
) -> Result<Option<OneTimeTokenRecord>, sqlx::Error> {
    let purposes: Vec<&str> = purposes.iter().map(|purpose| purpose.as_str()).collect();
    let row = sqlx::query(concat!(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND purpose = ANY($3) AND used_at IS NULL AND expires_at > $1 \
         RETURNING ",
        one_time_token_columns!()
    ))
    .bind(now)
    .bind(token_hash)
    .bind(purposes)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(one_time_token_from_row).transpose()
}

/// Retires (marks used at `now`) the user's unused one-time tokens of `purpose`, or of every
/// purpose when `None`.
async fn retire_one_time_tokens(
    conn: &mut PgConnection,
    user_id: Uuid,
    purpose: Option<TokenPurpose>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE user_id = $2 AND used_at IS NULL AND ($3::text IS NULL OR purpose = $3)",
    )
    .bind(now)
    .bind(user_id)
    .bind(purpose.map(TokenPurpose::as_str))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

/// Ends the user's pending email change, if any: `pending_email` is cleared and its unused
/// tokens are retired. Locks the user row, then its tokens (the module's lock order).
async fn end_email_change(
    conn: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET pending_email = NULL WHERE id = $1 AND pending_email IS NOT NULL",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    retire_one_time_tokens(conn, user_id, Some(TokenPurpose::EmailChange), now).await?;
    Ok(())
}

/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 2_000;

/// Runs `statement` (`$1`: the cut-off, `$2`: the batch size) until it affects fewer than a
/// batch of rows; the total affected.
async fn prune_in_batches(
    pool: &PgPool,
    statement: &'static str,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let affected = sqlx::query(statement)
            .bind(cutoff)
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        total += affected;
        if affected < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Revokes the user's live sessions at `now`, all but `keep` when given.
async fn revoke_live_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 \
         WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 \
         AND ($3::uuid IS NULL OR id <> $3)",
    )
    .bind(now)
    .bind(user_id)
    .bind(keep)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

fn signing_key_from_row(row: &PgRow) -> Result<SigningKeyRecord, sqlx::Error> {
    Ok(SigningKeyRecord {
        kid: row.try_get("kid")?,
        algorithm: row.try_get("algorithm")?,
        private_key: row.try_get("private_key")?,
        public_key: row.try_get("public_key")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        // Locking stays on (the default): see `MIGRATOR`.
        MIGRATOR.run(&self.pool).await?;
        super::rekey_email_addresses(self).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users -------------------------------------------------------------------------

    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord> {
        let row = sqlx::query(concat!(
            "INSERT INTO users (id, email, email_key, username, username_key, password_hash, \
             email_verified, role, created_at, updated_at, name, image) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING ",
            user_columns!()
        ))
        .bind(user.id)
        .bind(&user.email)
        .bind(&user.email_key)
        .bind(&user.username)
        .bind(&user.username_key)
        .bind(&user.password_hash)
        .bind(user.email_verified)
        .bind(user.role.as_str())
        .bind(user.now)
        .bind(&user.name)
        .bind(&user.image)
        .fetch_one(&self.pool)
        .await
        .map_err(map_unique_violation)?;
        Ok(user_from_row(&row)?)
    }

    async fn find_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn find_credentials_by_email_key(
        &self,
        email_key: &str,
    ) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE email_key = $1"
        ))
        .bind(email_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(credentials_from_row).transpose()?)
    }

    async fn find_credentials(&self, id: Uuid) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(credentials_from_row).transpose()?)
    }

    /// One statement whatever the change: each field is assigned either its new value or
    /// itself, chosen by a flag, so there is no SQL to assemble at run time.
    async fn update_profile(
        &self,
        id: Uuid,
        change: ProfileChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let set_username = change.username.is_some();
        let (username, username_key) = change.username.flatten().unzip();
        let set_pending_email = change.pending_email.is_some();
        let pending_email = change.pending_email.flatten();
        let set_name = change.name.is_some();
        let name = change.name.flatten();
        let set_image = change.image.is_some();
        let image = change.image.flatten();
        // The user row first, then its tokens (the module's lock order).
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE users SET \
             username = CASE WHEN $1 THEN $2 ELSE username END, \
             username_key = CASE WHEN $1 THEN $3 ELSE username_key END, \
             pending_email = CASE WHEN $4 THEN $5 ELSE pending_email END, \
             name = CASE WHEN $8 THEN $9 ELSE name END, \
             image = CASE WHEN $10 THEN $11 ELSE image END, \
             updated_at = $6 \
             WHERE id = $7 RETURNING ",
            user_columns!()
        ))
        .bind(set_username)
        .bind(username)
        .bind(username_key)
        .bind(set_pending_email)
        .bind(pending_email)
        .bind(now)
        .bind(id)
        .bind(set_name)
        .bind(name)
        .bind(set_image)
        .bind(image)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_unique_violation)?;
        let user = row.as_ref().map(user_from_row).transpose()?;
        if user.is_some() && set_pending_email {
            retire_one_time_tokens(&mut tx, id, Some(TokenPurpose::EmailChange), now).await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    async fn set_password_hash(
        &self,
        id: Uuid,
        replacing: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 \
             WHERE id = $3 AND password_hash = $4",
        )
        .bind(hash)
        .bind(now)
        .bind(id)
        .bind(replacing)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        // Sessions, refresh tokens and one-time tokens go with it through ON DELETE CASCADE.
        let result = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn users_with_non_ascii_email_keys(&self) -> StoreResult<Vec<super::StoredEmailKey>> {
        // The databases are UTF-8: a key has more bytes than characters exactly when one of
        // them is outside ASCII.
        let rows = sqlx::query(
            "SELECT id, email, email_key FROM users \
             WHERE octet_length(email_key) <> char_length(email_key)",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(super::StoredEmailKey {
                    user_id: row.try_get("id")?,
                    email: row.try_get("email")?,
                    email_key: row.try_get("email_key")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(keys)
    }

    async fn replace_email_key(
        &self,
        id: Uuid,
        replacing: &str,
        email_key: &str,
    ) -> StoreResult<bool> {
        let result =
            sqlx::query("UPDATE users SET email_key = $1 WHERE id = $2 AND email_key = $3")
                .bind(email_key)
                .bind(id)
                .bind(replacing)
                .execute(&self.pool)
                .await
                .map_err(map_unique_violation)?;
        Ok(result.rows_affected() > 0)
    }

    // ---- sessions ----------------------------------------------------------------------

    /// One statement, so one round trip and no explicit transaction (a login used to make
    /// five: BEGIN, the check, two INSERTs, COMMIT). The check's `FOR SHARE` waits for a reset
    /// or change holding the user row, then re-checks the hash on the committed row; once
    /// taken, it makes them wait for this statement's commit, after which their revocation
    /// sees this session. With no user row (or another hash), the INSERTs see no rows. The
    /// sign-in's audit event (and its webhook delivery) is part of the same statement.
    async fn create_session(&self, session: NewSession) -> StoreResult<Option<SessionRecord>> {
        let query = sqlx::query(concat!(
            "WITH checked AS (\
                 SELECT id FROM users \
                 WHERE id = $2 AND ($7::text IS NULL OR password_hash = $7) \
                 AND (banned_at IS NULL OR ban_expires_at <= $5) FOR SHARE\
             ), created AS (\
                 INSERT INTO sessions (id, user_id, user_agent, ip, created_at, last_used_at, \
                 expires_at, revoked_at) \
                 SELECT $1, id, $3, $4, $5, $5, $6, NULL FROM checked RETURNING ",
            session_columns!(),
            "), token AS (\
                 INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, \
                 csrf_hash) SELECT $8, id, $5, $9, $10 FROM created\
             ), ",
            audited_ctes!(
                "$11", "$12", "$13", "$14", "$15", "$16", "$17", "$18", "$19", "$20", "$21", "$22",
                "$23", "$24", "$25"
            ),
            " SELECT ",
            session_columns!(),
            " FROM created"
        ))
        .bind(session.id)
        .bind(session.user_id)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(session.now)
        .bind(session.expires_at)
        .bind(&session.password_hash)
        .bind(&session.refresh_hash)
        .bind(session.refresh_expires_at)
        .bind(&session.csrf_hash);
        let row = bind_audit(query, session.audit.as_ref())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn find_live_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSession>> {
        self.session_lookups.load((session_id, user_id, now)).await
    }

    async fn create_token_session(
        &self,
        session: NewTokenSession,
    ) -> StoreResult<Option<SessionRecord>> {
        // The user row is held (`FOR SHARE`) as in `create_session`: a concurrent reset or
        // change either comes first and refuses the session or comes after and revokes it.
        // The audit event is part of the statement, as there.
        let query = sqlx::query(concat!(
            "WITH checked AS (\
                 SELECT id FROM users \
                 WHERE id = $2 AND ($7::text IS NULL OR password_hash = $7) \
                 AND (banned_at IS NULL OR ban_expires_at <= $5) FOR SHARE\
             ), created AS (\
                 INSERT INTO sessions (id, user_id, user_agent, ip, created_at, last_used_at, \
                 expires_at, revoked_at, token_hash, remember) \
                 SELECT $1, id, $3, $4, $5, $5, $6, NULL, $8, $9 FROM checked RETURNING ",
            session_columns!(),
            "), ",
            audited_ctes!(
                "$10", "$11", "$12", "$13", "$14", "$15", "$16", "$17", "$18", "$19", "$20", "$21",
                "$22", "$23", "$24"
            ),
            " SELECT ",
            session_columns!(),
            " FROM created"
        ))
        .bind(session.id)
        .bind(session.user_id)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(session.now)
        .bind(session.expires_at)
        .bind(&session.password_hash)
        .bind(&session.token_hash)
        .bind(session.remember);
        let row = bind_audit(query, session.audit.as_ref())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn find_token_session(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        // Batched with the token checks in flight (see `find_token_sessions`).
        self.token_lookups.load((token_hash.to_vec(), now)).await
    }

    async fn slide_session(
        &self,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
        cap: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET expires_at = $1, last_used_at = $2 \
             WHERE id = $3 AND revoked_at IS NULL AND expires_at > $2 RETURNING ",
            session_columns!()
        ))
        .bind(expires_at.min(cap))
        .bind(now)
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn revoke_token_session(
        &self,
        user_id: Uuid,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE token_hash = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn find_refresh_token(
        &self,
        refresh_hash: &[u8],
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            refresh_token_columns!(),
            " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1"
        ))
        .bind(refresh_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(refresh_token_from_row).transpose()?)
    }

    /// The token's session row is locked first (`FOR UPDATE`), which serialises every
    /// exchange within one session and takes locks in the same order as `delete_user`'s
    /// cascade (session, then its tokens), so the two cannot deadlock. The conditional
    /// `UPDATE` then rotates the token only if it is still current; a concurrent call that
    /// got there first leaves it matching no row, and the lookup below sees its committed
    /// rotation.
    async fn rotate_refresh_token(&self, rotation: Rotation) -> StoreResult<RotationOutcome> {
        let now = rotation.now;
        // The usual case, a live token of a live session, in one statement (one round trip,
        // its own transaction): lock the session (`FOR UPDATE`, re-checked on the newest row
        // version once a concurrent revocation or rotation commits), mark the token rotated
        // (re-checked the same way, so of two concurrent rotations one finds it rotated
        // already), install the successor and touch the session.
        let row = sqlx::query(concat!(
            "WITH locked AS (\
                 SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens \
                 WHERE token_hash = $3) AND revoked_at IS NULL AND expires_at > $1 \
                 FOR UPDATE\
             ), rotated AS (\
                 UPDATE refresh_tokens SET rotated_at = $1, successor = $2 \
                 WHERE token_hash = $3 AND rotated_at IS NULL AND expires_at > $1 \
                 AND session_id IN (SELECT id FROM locked) RETURNING session_id\
             ), installed AS (\
                 INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, \
                 csrf_hash) SELECT $4, r.session_id, $1, LEAST($5, l.expires_at), $6 \
                 FROM rotated r JOIN locked l ON l.id = r.session_id\
             ), touched AS (\
                 UPDATE sessions SET last_used_at = $1 \
                 WHERE id IN (SELECT session_id FROM rotated) AND last_used_at < $7 \
                 RETURNING id, last_used_at\
             ) SELECT l.id AS s_id, l.user_id, l.user_agent, l.ip, l.created_at AS s_created_at, \
             COALESCE(t.last_used_at, l.last_used_at) AS last_used_at, l.expires_at, \
             l.revoked_at, l.remember, l.auth_time, l.amr, \
             u.id, u.email, u.username, u.name, u.image, u.email_verified, u.role, \
             u.pending_email, u.created_at, u.updated_at, u.better_auth_id, \
             u.banned_at, u.ban_reason, u.ban_expires_at \
             FROM rotated r JOIN locked l ON l.id = r.session_id \
             LEFT JOIN touched t ON t.id = l.id JOIN users u ON u.id = l.user_id"
        ))
        .bind(now)
        .bind(&rotation.sealed_successor)
        .bind(&rotation.presented_hash)
        .bind(&rotation.successor_hash)
        .bind(rotation.successor_expires_at)
        .bind(&rotation.csrf_hash)
        .bind(now - rotation.last_used_precision)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(RotationOutcome::Rotated {
                session: session_from_columns(&row, "s_id", "s_created_at")?,
                user: user_from_row(&row)?,
            });
        }

        // Anything else (unknown, expired, revoked, already rotated: a replay or a reuse) is
        // classified under the session's lock, as before; it may also find the token
        // rotatable after all (a race the statement above lost to nothing), and rotate it.
        let mut tx = self.pool.begin().await?;

        let locked: Option<Uuid> = sqlx::query_scalar(
            "SELECT s.id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1 FOR UPDATE OF s",
        )
        .bind(&rotation.presented_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            return Ok(RotationOutcome::Invalid);
        }

        let rotated: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET rotated_at = $1, successor = $2 \
             WHERE token_hash = $3 AND rotated_at IS NULL AND expires_at > $1 \
             AND session_id IN \
                 (SELECT id FROM sessions WHERE revoked_at IS NULL AND expires_at > $1) \
             RETURNING session_id",
        )
        .bind(now)
        .bind(&rotation.sealed_successor)
        .bind(&rotation.presented_hash)
        .fetch_optional(&mut *tx)
        .await?;

        if let Some(session_id) = rotated {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, \
                 csrf_hash) SELECT $1, id, $3, LEAST($4, expires_at), $5 FROM sessions \
                 WHERE id = $2",
            )
            .bind(&rotation.successor_hash)
            .bind(session_id)
            .bind(now)
            .bind(rotation.successor_expires_at)
            .bind(&rotation.csrf_hash)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(concat!(
                "UPDATE sessions SET last_used_at = CASE WHEN last_used_at < $3 THEN $1 \
                 ELSE last_used_at END WHERE id = $2 RETURNING ",
                session_columns!()
            ))
            .bind(now)
            .bind(session_id)
            .bind(now - rotation.last_used_precision)
            .fetch_one(&mut *tx)
            .await?;
            let session = session_from_row(&row)?;
            let user = sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))
            .bind(session.user_id)
            .fetch_one(&mut *tx)
            .await?;
            let user = user_from_row(&user)?;
            tx.commit().await?;
            return Ok(RotationOutcome::Rotated { session, user });
        }

        // Not rotated: find out why. READ COMMITTED gives this statement a fresh snapshot, so
        // it sees a rotation another transaction committed while we waited for the lock.
        let row = sqlx::query(
            "SELECT t.rotated_at AS token_rotated_at, t.successor AS token_successor, \
             s.id, s.user_id, s.user_agent, s.ip, s.created_at, s.last_used_at, s.expires_at, \
             s.revoked_at, s.remember, s.auth_time, s.amr \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
        )
        .bind(&rotation.presented_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RotationOutcome::Invalid);
        };
        let session = session_from_row(&row)?;
        let rotated_at: Option<DateTime<Utc>> = row.try_get("token_rotated_at")?;
        let successor: Option<Vec<u8>> = row.try_get("token_successor")?;
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Ok(RotationOutcome::Invalid);
        }
        // Never rotated: it was not rotated just now, so it must have expired.
        let Some(rotated_at) = rotated_at else {
            return Ok(RotationOutcome::Invalid);
        };
        // A zero grace turns replays off altogether, even for a retry in the same microsecond.
        if rotation.grace > chrono::Duration::zero() && now - rotated_at <= rotation.grace {
            // A rotated row always has its successor; a missing one is treated as unknown.
            return Ok(match successor {
                Some(sealed_successor) => RotationOutcome::Replayed {
                    session,
                    sealed_successor,
                },
                None => RotationOutcome::Invalid,
            });
        }

        // Rotated out before the grace window: someone holds a stale copy of the token, so
        // the whole session is compromised. Revoke it and commit, whatever the caller answers.
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(session.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if revoked.rows_affected() > 0 {
            RotationOutcome::Reused {
                session_id: session.id,
            }
        } else {
            RotationOutcome::Invalid
        })
    }

    async fn refresh_successor(&self, refresh_hash: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let successor: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT successor FROM refresh_tokens \
             WHERE token_hash = $1 AND rotated_at IS NOT NULL",
        )
        .bind(refresh_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(successor.flatten())
    }

    /// Each kind goes in batches; rows another transaction holds are skipped (`SKIP LOCKED`),
    /// so pruning never waits on, or deadlocks with, a request (the next run takes them).
    async fn prune(&self, pruning: Pruning) -> StoreResult<Pruned> {
        let sessions = prune_in_batches(
            &self.pool,
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE revoked_at < $1 OR expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            pruning.ended_before,
        )
        .await?;
        let refresh_tokens = prune_in_batches(
            &self.pool,
            "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash \
             FROM refresh_tokens WHERE rotated_at IS NULL AND expires_at < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
            pruning.now,
        )
        .await?;
        let successors = prune_in_batches(
            &self.pool,
            "UPDATE refresh_tokens SET successor = NULL WHERE token_hash IN (SELECT token_hash \
             FROM refresh_tokens WHERE successor IS NOT NULL AND rotated_at < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
            pruning.rotated_before,
        )
        .await?;
        let one_time_tokens = prune_in_batches(
            &self.pool,
            "DELETE FROM one_time_tokens WHERE token_hash IN (SELECT token_hash \
             FROM one_time_tokens WHERE used_at < $1 OR expires_at < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
            pruning.ended_before,
        )
        .await?;
        Ok(Pruned {
            sessions,
            refresh_tokens,
            successors,
            one_time_tokens,
        })
    }

    async fn import_better_auth(&self, import: BetterAuthImport) -> StoreResult<ImportOutcome> {
        let mut outcome = ImportOutcome::default();
        let mut tx = self.pool.begin().await?;
        let mut ids: HashMap<String, Uuid> = HashMap::new();
        for imported in &import.users {
            let present: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM users WHERE better_auth_id = $1")
                    .bind(&imported.better_auth_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(id) = present {
                ids.insert(imported.better_auth_id.clone(), id);
                outcome.users_present += 1;
                continue;
            }
            let user = &imported.user;
            let taken: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE email_key = $1")
                .bind(&user.email_key)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                outcome.refuse("user", &imported.better_auth_id, IMPORT_EMAIL_TAKEN);
                continue;
            }
            sqlx::query(
                "INSERT INTO users (id, email, email_key, username, username_key, password_hash, \
                 email_verified, role, created_at, updated_at, name, image, better_auth_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.email_key)
            .bind(&user.username)
            .bind(&user.username_key)
            .bind(&user.password_hash)
            .bind(user.email_verified)
            .bind(user.role.as_str())
            .bind(user.now)
            .bind(imported.updated_at)
            .bind(&user.name)
            .bind(&user.image)
            .bind(&imported.better_auth_id)
            .execute(&mut *tx)
            .await
            .map_err(map_unique_violation)?;
            ids.insert(imported.better_auth_id.clone(), user.id);
            outcome.users_imported += 1;
        }
        for session in &import.sessions {
            let Some(&user_id) = ids.get(&session.user_better_auth_id) else {
                outcome.refuse("session", &session.better_auth_id, IMPORT_NO_USER);
                continue;
            };
            let holder: Option<Uuid> =
                sqlx::query_scalar("SELECT user_id FROM sessions WHERE token_hash = $1")
                    .bind(&session.token_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            match holder {
                Some(holder) if holder == user_id => outcome.sessions_present += 1,
                Some(_) => outcome.refuse("session", &session.better_auth_id, IMPORT_TOKEN_TAKEN),
                None => {
                    sqlx::query(
                        "INSERT INTO sessions (id, user_id, user_agent, ip, created_at, \
                         last_used_at, expires_at, revoked_at, token_hash, remember) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, TRUE)",
                    )
                    .bind(session.id)
                    .bind(user_id)
                    .bind(&session.user_agent)
                    .bind(&session.ip)
                    .bind(session.created_at)
                    .bind(session.last_used_at)
                    .bind(session.expires_at)
                    .bind(&session.token_hash)
                    .execute(&mut *tx)
                    .await?;
                    outcome.sessions_imported += 1;
                }
            }
        }
        if import.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn ensure_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<u8>> {
        // The insert is atomic on its own; whoever lost reads the winner's committed value.
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn list_live_sessions(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(session_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        end_email_change(&mut tx, user_id, now).await?;
        let revoked = revoke_live_sessions(&mut tx, user_id, keep, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    // ---- emailed single-use tokens ----------------------------------------------------

    /// Locks the user row first (module lock order), so this cannot deadlock with a
    /// `confirm_email` that holds it and waits for one of the rows retired here.
    async fn issue_one_time_token(&self, token: NewOneTimeToken) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // A missing user is left to the insert's foreign key to report.
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(token.user_id)
            .fetch_optional(&mut *tx)
            .await?;
        retire_one_time_tokens(&mut tx, token.user_id, Some(token.purpose), token.now).await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, created_at, \
             expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&token.token_hash)
        .bind(token.user_id)
        .bind(token.purpose.as_str())
        .bind(&token.email)
        .bind(token.now)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some(mail) = &token.mail {
            insert_message(&mut tx, mail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_one_time_token(
        &self,
        token_hash: &[u8],
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<OneTimeTokenRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            one_time_token_columns!(),
            " FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2 \
             AND used_at IS NULL AND expires_at > $3"
        ))
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(one_time_token_from_row).transpose()?)
    }

    /// Locks: the user row, then the token (consumed by one conditional `UPDATE`), the user's
    /// other reset tokens, then its sessions (see the module's lock order). Concurrent calls
    /// with one token queue on the user row; each then re-checks the token, and only the
    /// first finds it unused.
    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let mut tx = self.pool.begin().await?;
        if lock_token_user(&mut tx, token_hash, UserLock::NoKeyUpdate)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let consumed =
            consume_one_time_token(&mut tx, token_hash, &[TokenPurpose::PasswordReset], now)
                .await?;
        let Some(token) = consumed else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now)
            .bind(token.user_id)
            .execute(&mut *tx)
            .await?;
        retire_one_time_tokens(
            &mut tx,
            token.user_id,
            Some(TokenPurpose::PasswordReset),
            now,
        )
        .await?;
        end_email_change(&mut tx, token.user_id, now).await?;
        revoke_live_sessions(&mut tx, token.user_id, None, now).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(token.user_id)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Locks the user row `FOR UPDATE` first (an email change rewrites the unique
    /// `email_key`), then the token. Every outcome but success rolls back, so a refused
    /// token stays unused; a unique violation aborts the transaction, which is rolled back.
    async fn confirm_email(
        &self,
        token_hash: &[u8],
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<EmailConfirmation> {
        let mut tx = self.pool.begin().await?;
        if lock_token_user(&mut tx, token_hash, UserLock::Update)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(EmailConfirmation::Invalid);
        }
        let consumed = consume_one_time_token(
            &mut tx,
            token_hash,
            &[TokenPurpose::EmailVerification, TokenPurpose::EmailChange],
            now,
        )
        .await?;
        let Some(token) = consumed else {
            tx.rollback().await?;
            return Ok(EmailConfirmation::Invalid);
        };
        // The user row is locked: this is its current state until we commit.
        let current =
            sqlx::query("SELECT email, email_key, pending_email FROM users WHERE id = $1")
                .bind(token.user_id)
                .fetch_one(&mut *tx)
                .await?;
        let email: String = current.try_get("email")?;
        let email_key: String = current.try_get("email_key")?;
        let pending_email: Option<String> = current.try_get("pending_email")?;
        let token_key = Email::key_of(&token.email);

        match token.purpose {
            TokenPurpose::EmailVerification if token_key == email_key => {
                let row = sqlx::query(concat!(
                    "UPDATE users SET email_verified = TRUE, updated_at = $1 WHERE id = $2 \
                     RETURNING ",
                    user_columns!()
                ))
                .bind(now)
                .bind(token.user_id)
                .fetch_one(&mut *tx)
                .await?;
                let user = user_from_row(&row)?;
                tx.commit().await?;
                Ok(EmailConfirmation::Verified { user })
            }
            TokenPurpose::EmailChange
                if pending_email.as_deref().map(Email::key_of).as_deref()
                    == Some(token_key.as_str()) =>
            {
                // The address becomes the one the token was sent to (and confirms).
                let updated = sqlx::query(concat!(
                    "UPDATE users SET email = $1, email_key = $2, email_verified = TRUE, \
                     pending_email = NULL, updated_at = $3 WHERE id = $4 RETURNING ",
                    user_columns!()
                ))
                .bind(&token.email)
                .bind(&token_key)
                .bind(now)
                .bind(token.user_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_unique_violation);
                let row = match updated {
                    Ok(row) => row,
                    Err(StoreError::EmailTaken) => {
                        tx.rollback().await?;
                        return Ok(EmailConfirmation::EmailTaken);
                    }
                    Err(error) => return Err(error),
                };
                let user = user_from_row(&row)?;
                // Every token still out was bound to the old address.
                retire_one_time_tokens(&mut tx, user.id, None, now).await?;
                revoke_live_sessions(&mut tx, user.id, keep, now).await?;
                tx.commit().await?;
                Ok(EmailConfirmation::Changed {
                    user,
                    previous_email: email,
                })
            }
            // The address moved on since the token was sent (or, impossibly, a purpose the
            // statement above excluded): the token stays as it was.
            _ => {
                tx.rollback().await?;
                Ok(EmailConfirmation::Invalid)
            }
        }
    }

    /// The `UPDATE` of the user row comes first and takes its lock; then the reset tokens,
    /// then the sessions (see the module's lock order).
    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        retire_one_time_tokens(&mut tx, user_id, Some(TokenPurpose::PasswordReset), now).await?;
        end_email_change(&mut tx, user_id, now).await?;
        revoke_live_sessions(&mut tx, user_id, Some(keep), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- signing keys ------------------------------------------------------------------

    /// Replicas starting together each come with their own candidate. The advisory lock makes
    /// the check-then-insert one critical section across them (a unique index could not: the
    /// candidates have different kids). The candidate's `retired_at` is ignored: a key
    /// installed as the current one is unretired by definition.
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord> {
        let mut tx = self.pool.begin().await?;
        // Released automatically at commit or rollback.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        let current = sqlx::query(concat!(
            "SELECT ",
            signing_key_columns!(),
            " FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, kid DESC LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await?;
        let key = match current {
            Some(row) => signing_key_from_row(&row)?,
            None => {
                let row = sqlx::query(concat!(
                    "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, \
                     created_at, retired_at) VALUES ($1, $2, $3, $4, $5, NULL) RETURNING ",
                    signing_key_columns!()
                ))
                .bind(&candidate.kid)
                .bind(&candidate.algorithm)
                .bind(&candidate.private_key)
                .bind(&candidate.public_key)
                .bind(candidate.created_at)
                .fetch_one(&mut *tx)
                .await?;
                signing_key_from_row(&row)?
            }
        };
        tx.commit().await?;
        Ok(key)
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    fn pool_status(&self) -> super::PoolStatus {
        super::PoolStatus {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn signing_keys(
        &self,
        retired_after: DateTime<Utc>,
    ) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            signing_key_columns!(),
            " FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1 \
             ORDER BY created_at DESC, kid DESC"
        ))
        .bind(retired_after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(signing_key_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn replace_signing_private_key(
        &self,
        kid: &str,
        previous: &[u8],
        private_key: &[u8],
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE signing_keys SET private_key = $3 WHERE kid = $1 AND private_key = $2",
        )
        .bind(kid)
        .bind(previous)
        .bind(private_key)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

// ---- second factors (issue 17): the shared statements of `factors.rs` -----------------

/// `factors.rs` writes PostgreSQL's own `$n` placeholders.
fn factor_sql(text: &'static str) -> &'static str {
    text
}

fn bind_id(id: Uuid) -> Uuid {
    id
}

fn uuid_at(row: &PgRow, column: &str) -> Result<Uuid, sqlx::Error> {
    row.try_get(column)
}

fn opt_uuid_at(row: &PgRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
    row.try_get(column)
}

/// PostgreSQL keeps microseconds itself.
fn same_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at
}

async fn begin_write(
    store: &PostgresStore,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    store.pool.begin().await
}

super::factors::impl_factor_store!(
    PostgresStore,
    PgRow,
    read = pool,
    write = pool,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    get_opt_id = opt_uuid_at,
    at = same_time,
    begin = begin_write,
);

super::admin::impl_admin_store!(
    PostgresStore,
    PgRow,
    sqlx::Postgres,
    read = pool,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    get_opt_id = opt_uuid_at,
    at = same_time,
    begin = begin_write,
    lock = " FOR UPDATE",
);

super::outbox::impl_outbox_store!(
    PostgresStore,
    PgRow,
    sqlx::Postgres,
    read = pool,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    at = same_time,
    begin = begin_write,
    lock = " FOR UPDATE SKIP LOCKED",
);
