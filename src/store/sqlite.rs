//! SQLite backend.
//!
//! Column encodings (see `migrations/sqlite/0001_initial.sql`): ids are hyphenated UUID text
//! (bound as [`Hyphenated`], because sqlx encodes a bare `Uuid` as a 16-byte BLOB, which
//! would never compare equal to the stored text), timestamps are sqlx's RFC 3339 text
//! (always `+00:00`, so they compare correctly as text), hashes are BLOBs, booleans 0/1.
//!
//! SQLite has one writer at a time. A deferred transaction that reads first and writes later
//! fails with `SQLITE_BUSY` instead of waiting when another connection wrote in between (the
//! busy timeout does not apply to a lock upgrade), so every write that spans several statements
//! starts with `BEGIN IMMEDIATE`: it takes the write lock up front, and writers of other
//! processes queue on the busy timeout instead of failing. That is also what makes the
//! read-then-write steps (rotation, first signing key, migrations) atomic here. Within this
//! process every write goes through one writer connection (see [`SqliteStore`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::batch::Batcher;
use super::{
    BetterAuthImport, EmailConfirmation, IMPORT_EMAIL_TAKEN, IMPORT_NO_USER, IMPORT_TOKEN_TAKEN,
    ImportOutcome, LiveSession, NewOneTimeToken, NewSession, NewTokenSession, NewUser,
    OneTimeTokenRecord, ProfileChange, Pruned, Pruning, RefreshTokenRecord, Role, Rotation,
    RotationOutcome, SessionRecord, SigningKeyRecord, Store, StoreError, StoreResult, TokenPurpose,
    UserCredentials, UserRecord,
};
use crate::domain::Email;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another one's write lock before giving up with
/// `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reader connection may sit unused before the pool closes it. Each open SQLite
/// connection keeps a thread and a page cache of up to 2 MiB; opening one again costs well
/// under a millisecond (a file open and a few pragmas), so an idle server closes its readers
/// while steady traffic keeps them. The writer connection stays open: it keeps the database
/// file (and its WAL) open between bursts.
const READER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A [`Store`] on an SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (WAL readers never wait for the writer).
    pool: SqlitePool,
    /// Every write, on one connection: writers of this process queue here, in order and
    /// without holding a reader connection, instead of polling in SQLite's busy handler
    /// (whose sleeps grow to 100 ms and made refresh latency seconds under load). Writes
    /// still begin `IMMEDIATE` and keep the busy timeout, for other processes on the file.
    writer: SqlitePool,
    /// Refresh rotations, group-committed: rotations that arrive while one is being written
    /// go into one transaction (one fsync), each applied in turn as if alone.
    rotations: Batcher<Rotation, Result<RotationOutcome, Arc<StoreError>>>,
}

/// The most rotations committed together.
const MAX_ROTATION_BATCH: usize = 64;

impl SqliteStore {
    /// Opens (creating if missing) the database file the `sqlite:` URL names, in WAL mode with
    /// full fsync, foreign keys enforced on every connection (the `ON DELETE CASCADE`s rely on
    /// it) and a 5 s busy timeout. A file it creates is readable by its owner only (mode
    /// 0600; SQLite gives the WAL and shared-memory files the database file's mode), and a
    /// file readable by group or others is warned about. Opens one connection at once, so that an unusable path fails
    /// here rather than at the first request. Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(invalid_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = options.get_filename() == std::path::Path::new(":memory:")
            || url.contains("mode=memory");
        if !in_memory && !url.contains("mode=ro") {
            prepare_file(options.get_filename())?;
        }
        // No ping before each use (sqlx's `test_before_acquire`): an SQLite connection is a
        // file handle in this process, with nothing at the other end to hang up, and the ping
        // is a round trip to the connection's thread, a quarter of those a login makes.
        let pool = SqlitePoolOptions::new()
            // A pool of zero connections could never serve a query.
            .max_connections(max_connections.max(1))
            .test_before_acquire(false)
            .idle_timeout(READER_IDLE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        let rotating = writer.clone();
        let rotations = Batcher::spawn(1, MAX_ROTATION_BATCH, move |batch| {
            rotate_together(rotating.clone(), batch)
        });
        Ok(Self {
            pool,
            writer,
            rotations,
        })
    }
}

/// Applies a batch of rotations in one transaction, in order (each sees the ones before it,
/// exactly as if they had run one after the other), and commits once: the answers go out
/// after the commit. Should a statement fail, nothing of the batch is kept and each rotation
/// is retried in a transaction of its own, so that one failure fails only its own request.
async fn rotate_together(
    writer: SqlitePool,
    batch: Vec<Rotation>,
) -> StoreResult<Vec<Result<RotationOutcome, Arc<StoreError>>>> {
    match commit_rotations(&writer, &batch).await {
        Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
        Err(_) if batch.len() > 1 => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for rotation in &batch {
                let alone = commit_rotations(&writer, std::slice::from_ref(rotation)).await;
                outcomes.push(match alone {
                    Ok(mut one) => one.pop().ok_or_else(|| {
                        Arc::new(StoreError::Database("a rotation gave no outcome".into()))
                    }),
                    Err(error) => Err(Arc::new(error)),
                });
            }
            Ok(outcomes)
        }
        Err(error) => Err(error),
    }
}

/// Applies `rotations` in order in one `BEGIN IMMEDIATE` transaction and commits it.
async fn commit_rotations(
    writer: &SqlitePool,
    rotations: &[Rotation],
) -> StoreResult<Vec<RotationOutcome>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(rotations.len());
    for rotation in rotations {
        outcomes.push(rotate_in(&mut tx, rotation).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// One rotation (see [`Store::rotate_refresh_token`]) inside the caller's transaction.
async fn rotate_in(tx: &mut SqliteConnection, rotation: &Rotation) -> StoreResult<RotationOutcome> {
    let now = micros(rotation.now);

    // The session check is correlated (`EXISTS … s.id = session_id`): an uncorrelated
    // `session_id IN (SELECT id FROM sessions WHERE …)` made SQLite build the set of every
    // live session first, a scan of the whole table on every rotation.
    let rotated: Option<Hyphenated> = sqlx::query_scalar(
        "UPDATE refresh_tokens SET rotated_at = ?1, successor = ?2 \
             WHERE token_hash = ?3 AND rotated_at IS NULL AND expires_at > ?1 \
             AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id \
                 AND s.revoked_at IS NULL AND s.expires_at > ?1) \
             RETURNING session_id",
    )
    .bind(now)
    .bind(&rotation.sealed_successor)
    .bind(&rotation.presented_hash)
    .fetch_optional(&mut *tx)
    .await?;

    if let Some(session_id) = rotated {
        // The session first: its end caps the successor's expiry.
        let row = sqlx::query(concat!(
            "UPDATE sessions SET last_used_at = CASE WHEN last_used_at < ?3 THEN ?1 \
             ELSE last_used_at END WHERE id = ?2 RETURNING ",
            session_columns!()
        ))
        .bind(now)
        .bind(session_id)
        .bind(micros(rotation.now - rotation.last_used_precision))
        .fetch_one(&mut *tx)
        .await?;
        let session = session_from_row(&row)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, \
                 csrf_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&rotation.successor_hash)
        .bind(session_id)
        .bind(now)
        .bind(micros(
            rotation.successor_expires_at.min(session.expires_at),
        ))
        .bind(&rotation.csrf_hash)
        .execute(&mut *tx)
        .await?;
        let user = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = ?1"
        ))
        .bind(session.user_id.hyphenated())
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&user)?;
        return Ok(RotationOutcome::Rotated { session, user });
    }

    // Not rotated: find out why.
    let row = sqlx::query(
        "SELECT t.rotated_at AS token_rotated_at, t.successor AS token_successor, \
             s.id, s.user_id, s.user_agent, s.ip, s.created_at, s.last_used_at, s.expires_at, \
             s.revoked_at, s.remember, s.auth_time, s.amr \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = ?1",
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
        "UPDATE sessions SET revoked_at = ?1 \
             WHERE id = ?2 AND revoked_at IS NULL AND expires_at > ?1",
    )
    .bind(now)
    .bind(session.id.hyphenated())
    .execute(&mut *tx)
    .await?;
    Ok(if revoked.rows_affected() > 0 {
        RotationOutcome::Reused {
            session_id: session.id,
        }
    } else {
        RotationOutcome::Invalid
    })
}

/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 2_000;

impl SqliteStore {
    /// Runs `statement` (`?1`: the cut-off, `?2`: the batch size) until it affects fewer than a
    /// batch of rows; the total affected.
    async fn prune_in_batches(
        &self,
        statement: &'static str,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let affected = sqlx::query(statement)
                .bind(cutoff)
                .bind(PRUNE_BATCH)
                .execute(&self.writer)
                .await?
                .rows_affected();
            total += affected;
            if affected < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }
}

/// Creates the database file, mode 0600, when it does not exist yet (SQLite would create it
/// with the umask's mode, usually world-readable: the file holds password hashes and signing
/// keys), and warns when an existing one is readable by group or others.
fn prepare_file(path: &std::path::Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Left to SQLite, whose error names what is wrong with the path.
            Err(_) => return Ok(()),
        }
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o044 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                "the database file is readable by group or others; it holds password hashes \
                 and signing keys (chmod 600 it, and its -wal and -shm files)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A URL that does not parse. sqlx's configuration errors name the problem (an unknown
/// parameter or value), never the whole URL.
fn invalid_url(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Configuration(source) => StoreError::InvalidUrl(source.to_string()),
        other => StoreError::InvalidUrl(other.to_string()),
    }
}

/// Maps a unique violation on the identity indexes to its meaning. SQLite does not report
/// the index name, only the columns (`UNIQUE constraint failed: users.email_key`).
fn map_unique_violation(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(database_error) = &error
        && database_error.kind() == ErrorKind::UniqueViolation
    {
        let message = database_error.message();
        if message.contains("users.email_key") {
            return StoreError::EmailTaken;
        }
        if message.contains("users.username_key") {
            return StoreError::UsernameTaken;
        }
    }
    error.into()
}

/// Truncates to whole microseconds, the resolution PostgreSQL's `timestamptz` keeps, so that
/// both backends store (and compare) the same instants.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

fn uuid_at(row: &SqliteRow, column: &str) -> Result<Uuid, sqlx::Error> {
    Ok(row.try_get::<Hyphenated, _>(column)?.into_uuid())
}

fn user_from_row(row: &SqliteRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: uuid_at(row, "id")?,
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

fn credentials_from_row(row: &SqliteRow) -> Result<UserCredentials, sqlx::Error> {
    Ok(UserCredentials {
        user: user_from_row(row)?,
        password_hash: row.try_get("password_hash")?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, sqlx::Error> {
    session_from_columns(row, "id", "created_at")
}

/// A [`SessionRecord`] from a row with the session's id and creation time in the columns
/// named by `id` and `created_at`, the rest under their own names (a join with `users`
/// renames the two that clash).
fn session_from_columns(
    row: &SqliteRow,
    id: &str,
    created_at: &str,
) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: uuid_at(row, id)?,
        user_id: uuid_at(row, "user_id")?,
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
fn refresh_token_from_row(row: &SqliteRow) -> Result<RefreshTokenRecord, sqlx::Error> {
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

fn one_time_token_from_row(row: &SqliteRow) -> Result<OneTimeTokenRecord, sqlx::Error> {
    Ok(OneTimeTokenRecord {
        user_id: uuid_at(row, "user_id")?,
        purpose: purpose_from_stored(row.try_get("purpose")?)?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
    })
}

/// Uses up the token with this hash if it has one of `purposes` and is unused and unexpired at
/// `now`: one conditional statement, so of concurrent calls (serialised by `BEGIN IMMEDIATE`)
/// at most one gets the token back. `now` must already be truncated ([`micros`]).
async fn consume_one_time_token(
    conn: &mut SqliteConnection,
    token_hash: &[u8],
    purposes: &[TokenPurpose],
    now: DateTime<Utc>,
) -> Result<Option<OneTimeTokenRecord>, sqlx::Error> {
    // Two slots are enough for every caller; an unused slot repeats the first purpose.
    debug_assert!(
        (1..=2).contains(&purposes.len()),
        "one or two purposes, got {purposes:?}"
    );
    let first = purposes.first().map(|purpose| purpose.as_str());
    let second = purposes.get(1).map(|purpose| purpose.as_str()).or(first);
    let row = sqlx::query(concat!(
        "UPDATE one_time_tokens SET used_at = ?1 \
         WHERE token_hash = ?2 AND purpose IN (?3, ?4) AND used_at IS NULL AND expires_at > ?1 \
         RETURNING ",
        one_time_token_columns!()
    ))
    .bind(now)
    .bind(token_hash)
    .bind(first)
    .bind(second)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(one_time_token_from_row).transpose()
}

/// Retires (marks used at `now`) the user's unused one-time tokens of `purpose`, or of every
/// purpose when `None`.
async fn retire_one_time_tokens(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    purpose: Option<TokenPurpose>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE one_time_tokens SET used_at = ?1 \
         WHERE user_id = ?2 AND used_at IS NULL AND (?3 IS NULL OR purpose = ?3)",
    )
    .bind(now)
    .bind(user_id.hyphenated())
    .bind(purpose.map(TokenPurpose::as_str))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

/// Ends the user's pending email change, if any: `pending_email` is cleared and its unused
/// tokens are retired.
async fn end_email_change(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET pending_email = NULL WHERE id = ?1 AND pending_email IS NOT NULL",
    )
    .bind(user_id.hyphenated())
    .execute(&mut *conn)
    .await?;
    retire_one_time_tokens(conn, user_id, Some(TokenPurpose::EmailChange), now).await?;
    Ok(())
}

/// Revokes the user's live sessions at `now`, all but `keep` when given.
async fn revoke_live_sessions(
    conn: &mut SqliteConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = ?1 \
         WHERE user_id = ?2 AND revoked_at IS NULL AND expires_at > ?1 \
         AND (?3 IS NULL OR id <> ?3)",
    )
    .bind(now)
    .bind(user_id.hyphenated())
    .bind(keep.map(|id| id.hyphenated()))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

fn signing_key_from_row(row: &SqliteRow) -> Result<SigningKeyRecord, sqlx::Error> {
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// sqlx's SQLite migrator takes no lock, so two stores migrating one fresh file at once
    /// would both see no migration applied and the second would fail on `CREATE TABLE`. The
    /// whole run therefore happens inside one `BEGIN IMMEDIATE` transaction (the migrator's
    /// own per-migration transactions become savepoints in it): the second store waits for
    /// the write lock, then finds everything applied. Consequence: a future migration that
    /// must run outside a transaction (`-- no-transaction`, e.g. `VACUUM`) cannot work here.
    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // `run_direct` is `run` on a connection we already hold (`run` itself wants an
        // `Acquire` impl for any lifetime, which `&mut SqliteConnection` cannot give inside
        // an `async_trait` future). It is `#[doc(hidden)]` in sqlx 0.9 but public, and sqlx's
        // own `run` is a thin wrapper around it; recheck on sqlx upgrades.
        MIGRATOR.run_direct(None, &mut *tx, false).await?;
        tx.commit().await?;
        super::rekey_email_addresses(self).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// The writer stays open for good (readers close when idle), and its page cache grows to
    /// `cache_size` (2 MiB) with the database: `PRAGMA shrink_memory` frees the pages it
    /// holds unused. Skipped when a write is under way: it will be idle again soon enough.
    async fn release_memory(&self) {
        let Some(mut writer) = self.writer.try_acquire() else {
            return;
        };
        if let Err(error) = sqlx::query("PRAGMA shrink_memory")
            .execute(&mut *writer)
            .await
        {
            tracing::warn!(%error, "SQLite: could not release the writer's page cache");
        }
    }

    // ---- users -------------------------------------------------------------------------

    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord> {
        let now = micros(user.now);
        let row = sqlx::query(concat!(
            "INSERT INTO users (id, email, email_key, username, username_key, password_hash, \
             email_verified, role, created_at, updated_at, name, image) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11) RETURNING ",
            user_columns!()
        ))
        .bind(user.id.hyphenated())
        .bind(&user.email)
        .bind(&user.email_key)
        .bind(&user.username)
        .bind(&user.username_key)
        .bind(&user.password_hash)
        .bind(user.email_verified)
        .bind(user.role.as_str())
        .bind(now)
        .bind(&user.name)
        .bind(&user.image)
        .fetch_one(&self.writer)
        .await
        .map_err(map_unique_violation)?;
        Ok(user_from_row(&row)?)
    }

    async fn find_user(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = ?1"
        ))
        .bind(id.hyphenated())
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
            ", password_hash FROM users WHERE email_key = ?1"
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
            ", password_hash FROM users WHERE id = ?1"
        ))
        .bind(id.hyphenated())
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
        let now = micros(now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(concat!(
            "UPDATE users SET \
             username = CASE WHEN ?1 THEN ?2 ELSE username END, \
             username_key = CASE WHEN ?1 THEN ?3 ELSE username_key END, \
             pending_email = CASE WHEN ?4 THEN ?5 ELSE pending_email END, \
             name = CASE WHEN ?8 THEN ?9 ELSE name END, \
             image = CASE WHEN ?10 THEN ?11 ELSE image END, \
             updated_at = ?6 \
             WHERE id = ?7 RETURNING ",
            user_columns!()
        ))
        .bind(set_username)
        .bind(username)
        .bind(username_key)
        .bind(set_pending_email)
        .bind(pending_email)
        .bind(now)
        .bind(id.hyphenated())
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
            "UPDATE users SET password_hash = ?1, updated_at = ?2 \
             WHERE id = ?3 AND password_hash = ?4",
        )
        .bind(hash)
        .bind(micros(now))
        .bind(id.hyphenated())
        .bind(replacing)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        // Sessions, refresh tokens and one-time tokens go with it through ON DELETE CASCADE
        // (enforced because every connection has `foreign_keys` on).
        let result = sqlx::query("DELETE FROM users WHERE id = ?1")
            .bind(id.hyphenated())
            .execute(&self.writer)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn users_with_non_ascii_email_keys(&self) -> StoreResult<Vec<super::StoredEmailKey>> {
        // `length` counts characters of a text and bytes of a blob: they differ exactly when
        // a character is outside ASCII.
        let rows = sqlx::query(
            "SELECT id, email, email_key FROM users \
             WHERE length(CAST(email_key AS BLOB)) <> length(email_key)",
        )
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(super::StoredEmailKey {
                    user_id: uuid_at(row, "id")?,
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
            sqlx::query("UPDATE users SET email_key = ?1 WHERE id = ?2 AND email_key = ?3")
                .bind(email_key)
                .bind(id.hyphenated())
                .bind(replacing)
                .execute(&self.writer)
                .await
                .map_err(map_unique_violation)?;
        Ok(result.rows_affected() > 0)
    }

    // ---- sessions ----------------------------------------------------------------------

    async fn create_session(&self, session: NewSession) -> StoreResult<Option<SessionRecord>> {
        let now = micros(session.now);
        // The write lock from the start: a reset or change either committed before this
        // check or waits for this commit, and then revokes this session. The check is part
        // of the INSERT (no row to insert without the user, or with another hash).
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, user_id, user_agent, ip, created_at, last_used_at, \
             expires_at, revoked_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?6, NULL WHERE EXISTS (SELECT 1 FROM users \
             WHERE id = ?2 AND (?7 IS NULL OR password_hash = ?7) \
             AND (banned_at IS NULL OR ban_expires_at <= ?5)) RETURNING ",
            session_columns!()
        ))
        .bind(session.id.hyphenated())
        .bind(session.user_id.hyphenated())
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(now)
        .bind(micros(session.expires_at))
        .bind(&session.password_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let record = session_from_row(&row)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, \
             csrf_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&session.refresh_hash)
        .bind(session.id.hyphenated())
        .bind(now)
        .bind(micros(session.refresh_expires_at))
        .bind(&session.csrf_hash)
        .execute(&mut *tx)
        .await?;
        if let Some(audit) = &session.audit {
            insert_audit(&mut tx, &audit.event, audit.webhook.as_ref()).await?;
        }
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn find_live_session_user(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSession>> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.username, u.name, u.image, u.email_verified, u.role, \
             u.pending_email, u.created_at, u.updated_at, u.better_auth_id, \
             u.banned_at, u.ban_reason, u.ban_expires_at, \
             s.expires_at AS session_expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = ?1 AND s.user_id = ?2 AND s.revoked_at IS NULL AND s.expires_at > ?3",
        )
        .bind(session_id.hyphenated())
        .bind(user_id.hyphenated())
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LiveSession {
            user: user_from_row(&row)?,
            expires_at: row.try_get("session_expires_at")?,
        }))
    }

    async fn create_token_session(
        &self,
        session: NewTokenSession,
    ) -> StoreResult<Option<SessionRecord>> {
        // On the writer: the user and hash check is part of the INSERT, and a reset or
        // change serialises with it as with `create_session`; the audit event in the same
        // transaction.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, user_id, user_agent, ip, created_at, last_used_at, \
             expires_at, revoked_at, token_hash, remember) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?6, NULL, ?8, ?9 WHERE EXISTS (SELECT 1 FROM users \
             WHERE id = ?2 AND (?7 IS NULL OR password_hash = ?7) \
             AND (banned_at IS NULL OR ban_expires_at <= ?5)) RETURNING ",
            session_columns!()
        ))
        .bind(session.id.hyphenated())
        .bind(session.user_id.hyphenated())
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(micros(session.now))
        .bind(micros(session.expires_at))
        .bind(&session.password_hash)
        .bind(&session.token_hash)
        .bind(session.remember)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let record = session_from_row(&row)?;
        if let Some(audit) = &session.audit {
            insert_audit(&mut tx, &audit.event, audit.webhook.as_ref()).await?;
        }
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn find_token_session(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let row = sqlx::query(
            "SELECT s.id AS s_id, s.user_id, s.user_agent, s.ip, s.created_at AS s_created_at, \
             s.last_used_at, s.expires_at, s.revoked_at, s.remember, s.auth_time, s.amr, \
             u.id, u.email, u.username, u.name, u.image, u.email_verified, u.role, \
             u.pending_email, u.created_at, u.updated_at, u.better_auth_id, \
             u.banned_at, u.ban_reason, u.ban_expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2",
        )
        .bind(token_hash)
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_columns(&row, "s_id", "s_created_at")?;
        Ok(Some((session, user_from_row(&row)?)))
    }

    async fn slide_session(
        &self,
        session_id: Uuid,
        expires_at: DateTime<Utc>,
        cap: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET expires_at = ?1, last_used_at = ?2 \
             WHERE id = ?3 AND revoked_at IS NULL AND expires_at > ?2 RETURNING ",
            session_columns!()
        ))
        .bind(micros(expires_at.min(cap)))
        .bind(micros(now))
        .bind(session_id.hyphenated())
        .fetch_optional(&self.writer)
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
            "UPDATE sessions SET revoked_at = ?1 \
             WHERE token_hash = ?2 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?1",
        )
        .bind(micros(now))
        .bind(token_hash)
        .bind(user_id.hyphenated())
        .execute(&self.writer)
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
             WHERE t.token_hash = ?1"
        ))
        .bind(refresh_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(refresh_token_from_row).transpose()?)
    }

    /// Under `BEGIN IMMEDIATE` the whole exchange runs with the write lock held, so concurrent
    /// calls with one token run one after the other: the first rotates it, the others find it
    /// rotated.
    async fn rotate_refresh_token(&self, rotation: Rotation) -> StoreResult<RotationOutcome> {
        self.rotations
            .load(rotation)
            .await?
            .map_err(|shared| StoreError::Database(Box::new(shared)))
    }

    async fn refresh_successor(&self, refresh_hash: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let successor: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT successor FROM refresh_tokens \
             WHERE token_hash = ?1 AND rotated_at IS NOT NULL",
        )
        .bind(refresh_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(successor.flatten())
    }

    /// Each kind goes in batches of [`PRUNE_BATCH`] rows, one short write transaction each
    /// (the writer connection is shared by every request), until a batch comes back short.
    async fn prune(&self, pruning: Pruning) -> StoreResult<Pruned> {
        let ended_before = micros(pruning.ended_before);
        let now = micros(pruning.now);
        let rotated_before = micros(pruning.rotated_before);
        let sessions = self
            .prune_in_batches(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE revoked_at < ?1 OR expires_at < ?1 LIMIT ?2)",
                ended_before,
            )
            .await?;
        let refresh_tokens = self
            .prune_in_batches(
                "DELETE FROM refresh_tokens WHERE token_hash IN (SELECT token_hash \
                 FROM refresh_tokens WHERE rotated_at IS NULL AND expires_at < ?1 LIMIT ?2)",
                now,
            )
            .await?;
        let successors = self
            .prune_in_batches(
                "UPDATE refresh_tokens SET successor = NULL WHERE token_hash IN (SELECT \
                 token_hash FROM refresh_tokens WHERE successor IS NOT NULL \
                 AND rotated_at < ?1 LIMIT ?2)",
                rotated_before,
            )
            .await?;
        let one_time_tokens = self
            .prune_in_batches(
                "DELETE FROM one_time_tokens WHERE token_hash IN (SELECT token_hash \
                 FROM one_time_tokens WHERE used_at < ?1 OR expires_at < ?1 LIMIT ?2)",
                ended_before,
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut ids: HashMap<String, Uuid> = HashMap::new();
        for imported in &import.users {
            let present: Option<Hyphenated> =
                sqlx::query_scalar("SELECT id FROM users WHERE better_auth_id = ?1")
                    .bind(&imported.better_auth_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(id) = present {
                ids.insert(imported.better_auth_id.clone(), id.into_uuid());
                outcome.users_present += 1;
                continue;
            }
            let user = &imported.user;
            let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE email_key = ?1")
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .bind(user.id.hyphenated())
            .bind(&user.email)
            .bind(&user.email_key)
            .bind(&user.username)
            .bind(&user.username_key)
            .bind(&user.password_hash)
            .bind(user.email_verified)
            .bind(user.role.as_str())
            .bind(micros(user.now))
            .bind(micros(imported.updated_at))
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
            let holder: Option<Hyphenated> =
                sqlx::query_scalar("SELECT user_id FROM sessions WHERE token_hash = ?1")
                    .bind(&session.token_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            match holder.map(Hyphenated::into_uuid) {
                Some(holder) if holder == user_id => outcome.sessions_present += 1,
                Some(_) => outcome.refuse("session", &session.better_auth_id, IMPORT_TOKEN_TAKEN),
                None => {
                    sqlx::query(
                        "INSERT INTO sessions (id, user_id, user_agent, ip, created_at, \
                         last_used_at, expires_at, revoked_at, token_hash, remember) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, 1)",
                    )
                    .bind(session.id.hyphenated())
                    .bind(user_id.hyphenated())
                    .bind(&session.user_agent)
                    .bind(&session.ip)
                    .bind(micros(session.created_at))
                    .bind(micros(session.last_used_at))
                    .bind(micros(session.expires_at))
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn list_live_sessions(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id.hyphenated())
        .bind(micros(now))
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
            "UPDATE sessions SET revoked_at = ?1 \
             WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?1",
        )
        .bind(micros(now))
        .bind(session_id.hyphenated())
        .bind(user_id.hyphenated())
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let now = micros(now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        end_email_change(&mut tx, user_id, now).await?;
        let revoked = revoke_live_sessions(&mut tx, user_id, keep, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    // ---- emailed single-use tokens ----------------------------------------------------

    async fn issue_one_time_token(&self, token: NewOneTimeToken) -> StoreResult<()> {
        let now = micros(token.now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        retire_one_time_tokens(&mut tx, token.user_id, Some(token.purpose), now).await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, created_at, \
             expires_at, used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
        )
        .bind(&token.token_hash)
        .bind(token.user_id.hyphenated())
        .bind(token.purpose.as_str())
        .bind(&token.email)
        .bind(now)
        .bind(micros(token.expires_at))
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
            " FROM one_time_tokens WHERE token_hash = ?1 AND purpose = ?2 \
             AND used_at IS NULL AND expires_at > ?3"
        ))
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(one_time_token_from_row).transpose()?)
    }

    /// `BEGIN IMMEDIATE` holds the write lock from the start, so concurrent calls with one
    /// token run one after the other and only the first finds it unused.
    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let now = micros(now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let consumed =
            consume_one_time_token(&mut tx, token_hash, &[TokenPurpose::PasswordReset], now)
                .await?;
        let Some(token) = consumed else {
            tx.rollback().await?;
            return Ok(None);
        };
        // The token's user exists: deleting a user deletes its tokens (cascade).
        sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
            .bind(password_hash)
            .bind(now)
            .bind(token.user_id.hyphenated())
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
            " FROM users WHERE id = ?1"
        ))
        .bind(token.user_id.hyphenated())
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Every outcome but success rolls back, so a refused token stays unused.
    async fn confirm_email(
        &self,
        token_hash: &[u8],
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> StoreResult<EmailConfirmation> {
        let now = micros(now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
        let current =
            sqlx::query("SELECT email, email_key, pending_email FROM users WHERE id = ?1")
                .bind(token.user_id.hyphenated())
                .fetch_one(&mut *tx)
                .await?;
        let email: String = current.try_get("email")?;
        let email_key: String = current.try_get("email_key")?;
        let pending_email: Option<String> = current.try_get("pending_email")?;
        let token_key = Email::key_of(&token.email);

        match token.purpose {
            TokenPurpose::EmailVerification if token_key == email_key => {
                let row = sqlx::query(concat!(
                    "UPDATE users SET email_verified = 1, updated_at = ?1 WHERE id = ?2 \
                     RETURNING ",
                    user_columns!()
                ))
                .bind(now)
                .bind(token.user_id.hyphenated())
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
                    "UPDATE users SET email = ?1, email_key = ?2, email_verified = 1, \
                     pending_email = NULL, updated_at = ?3 WHERE id = ?4 RETURNING ",
                    user_columns!()
                ))
                .bind(&token.email)
                .bind(&token_key)
                .bind(now)
                .bind(token.user_id.hyphenated())
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

    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = micros(now);
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let updated =
            sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id.hyphenated())
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

    /// The candidate's `retired_at` is ignored: a key installed as the current one is
    /// unretired by definition.
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> StoreResult<SigningKeyRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
                     created_at, retired_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL) RETURNING ",
                    signing_key_columns!()
                ))
                .bind(&candidate.kid)
                .bind(&candidate.algorithm)
                .bind(&candidate.private_key)
                .bind(&candidate.public_key)
                .bind(micros(candidate.created_at))
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at, retired_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(micros(key.created_at))
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
            " FROM signing_keys WHERE retired_at IS NULL OR retired_at > ?1 \
             ORDER BY created_at DESC, kid DESC"
        ))
        .bind(micros(retired_after))
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
            "UPDATE signing_keys SET private_key = ?3 WHERE kid = ?1 AND private_key = ?2",
        )
        .bind(kid)
        .bind(previous)
        .bind(private_key)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

// ---- second factors (issue 17): the shared statements of `factors.rs` -----------------

/// `factors.rs` writes `$n` placeholders; SQLite's positional form is `?n`.
fn factor_sql(text: &'static str) -> String {
    text.replace('$', "?")
}

fn bind_id(id: Uuid) -> Hyphenated {
    id.hyphenated()
}

fn opt_uuid_at(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, sqlx::Error> {
    Ok(row
        .try_get::<Option<Hyphenated>, _>(column)?
        .map(Hyphenated::into_uuid))
}

/// The write lock from the start, as every other write transaction here.
async fn begin_write(
    store: &SqliteStore,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    store.writer.begin_with("BEGIN IMMEDIATE").await
}

super::factors::impl_factor_store!(
    SqliteStore,
    SqliteRow,
    read = pool,
    write = writer,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    get_opt_id = opt_uuid_at,
    at = micros,
    begin = begin_write,
);

super::admin::impl_admin_store!(
    SqliteStore,
    SqliteRow,
    sqlx::Sqlite,
    read = pool,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    get_opt_id = opt_uuid_at,
    at = micros,
    begin = begin_write,
    lock = "",
);

super::outbox::impl_outbox_store!(
    SqliteStore,
    SqliteRow,
    sqlx::Sqlite,
    read = pool,
    sql = factor_sql,
    id = bind_id,
    get_id = uuid_at,
    at = micros,
    begin = begin_write,
    lock = "",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_truncates_below_a_microsecond() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(micros(at).nanosecond(), 123_456_000);
    }
}
