//! The durable outbox (issue 19): messages to deliver (mail) are rows, written with what
//! caused them where that is one transaction, claimed by a background worker under a lease,
//! and marked delivered, retried later or dead. A server killed mid-delivery leaves the
//! row leased; once the lease ends any server delivers it again, under the same id, so a
//! receiver that deduplicates by id sees it once. One trait, [`OutboxStore`], one
//! implementation for both backends ([`impl_outbox_store!`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// A message to queue. `payload` is sealed by the caller (it may hold a link's token).
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// UUID v7: the id receivers deduplicate by (a mail's `Message-ID`).
    pub id: Uuid,
    /// `mail` or `webhook`.
    pub kind: &'static str,
    pub payload: Vec<u8>,
    pub now: DateTime<Utc>,
}

impl std::fmt::Debug for NewMessage {
    /// Without the payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A message claimed for delivery.
#[derive(Clone)]
pub struct QueuedMessage {
    pub id: Uuid,
    pub kind: String,
    pub payload: Vec<u8>,
    /// Including this one.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for QueuedMessage {
    /// Without the payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedMessage")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A message given up on, for `/admin/outbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadMessage {
    pub id: Uuid,
    pub kind: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub dead_at: DateTime<Utc>,
}

/// How many messages wait and how many are dead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
}

/// The store's part of the outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues one message, due now.
    async fn enqueue_message(&self, message: NewMessage) -> StoreResult<()>;

    /// Claims up to `limit` due messages of `kind` (not delivered, not dead, due at `now`, no lease in
    /// force): each gets a lease until `lease_until` and one more attempt counted. Of
    /// several servers claiming at once, each message goes to one (PostgreSQL: `FOR UPDATE
    /// SKIP LOCKED`; SQLite: one writer).
    async fn claim_messages(
        &self,
        kind: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMessage>>;

    /// Marks a message delivered and erases its payload.
    async fn message_delivered(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;

    /// Records a failed attempt: due again at `retry_at`, or dead with `None`.
    async fn message_failed(
        &self,
        id: Uuid,
        retry_at: Option<DateTime<Utc>>,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Pending and dead messages.
    async fn outbox_counts(&self) -> StoreResult<OutboxCounts>;

    /// The newest dead messages.
    async fn dead_messages(&self, limit: u32) -> StoreResult<Vec<DeadMessage>>;

    /// Deletes delivered and dead messages older than `before`; how many.
    async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Implements [`OutboxStore`] for a backend; `lock` is the claim's row-lock clause
/// (PostgreSQL `FOR UPDATE SKIP LOCKED`; nothing on SQLite, whose write transaction already
/// excludes other writers), the rest as in `impl_factor_store!`.
macro_rules! impl_outbox_store {
    (
        $store:ty, $row:ty, $db:ty,
        read = $read:ident,
        sql = $sql:path, id = $id:path, get_id = $get_id:path,
        at = $at:path, begin = $begin:path, lock = $lock:expr $(,)?
    ) => {
        /// Inserts a queued message in the caller's transaction.
        async fn insert_message(
            tx: &mut <$db as sqlx::Database>::Connection,
            message: &$crate::store::NewMessage,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "INSERT INTO outbox (id, kind, payload, created_at, attempts, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, 0, $4)",
            )))
            .bind($id(message.id))
            .bind(message.kind)
            .bind(&message.payload)
            .bind($at(message.now))
            .execute(&mut *tx)
            .await?;
            Ok(())
        }

        #[async_trait]
        impl $crate::store::OutboxStore for $store {
            async fn enqueue_message(&self, message: $crate::store::NewMessage) -> StoreResult<()> {
                let mut tx = $begin(self).await?;
                insert_message(&mut tx, &message).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_messages(
                &self,
                kind: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::store::QueuedMessage>> {
                // A read first: an idle outbox costs no write (SQLite's write lock) per poll.
                let due: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                    "SELECT 1 FROM outbox WHERE kind = $2 AND delivered_at IS NULL \
                     AND dead_at IS NULL AND next_attempt_at <= $1 \
                     AND (locked_until IS NULL OR locked_until <= $1) LIMIT 1",
                )))
                .bind($at(now))
                .bind(kind)
                .fetch_optional(&self.$read)
                .await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                let mut tx = $begin(self).await?;
                let sql = format!(
                    "{}{}) RETURNING id, kind, payload, attempts, created_at",
                    $sql(
                        "UPDATE outbox SET locked_until = $2, attempts = attempts + 1 \
                         WHERE id IN (SELECT id FROM outbox WHERE kind = $4 \
                         AND delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
                         AND (locked_until IS NULL OR locked_until <= $1) \
                         ORDER BY next_attempt_at LIMIT $3"
                    ),
                    $lock
                );
                let rows: Vec<$row> = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($at(now))
                    .bind($at(lease_until))
                    .bind(i64::from(limit))
                    .bind(kind)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    claimed.push($crate::store::QueuedMessage {
                        id: $get_id(row, "id")?,
                        kind: row.try_get("kind")?,
                        payload: row.try_get("payload")?,
                        attempts: row.try_get("attempts")?,
                        created_at: row.try_get("created_at")?,
                    });
                }
                Ok(claimed)
            }

            async fn message_delivered(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
                let mut tx = $begin(self).await?;
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE outbox SET delivered_at = $1, locked_until = NULL, payload = $2, \
                     last_error = NULL WHERE id = $3",
                )))
                .bind($at(now))
                .bind(Vec::<u8>::new())
                .bind($id(id))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn message_failed(
                &self,
                id: Uuid,
                retry_at: Option<DateTime<Utc>>,
                error: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                let error: String = error.chars().take(500).collect();
                let mut tx = $begin(self).await?;
                match retry_at {
                    Some(retry_at) => {
                        sqlx::query(sqlx::AssertSqlSafe($sql(
                            "UPDATE outbox SET next_attempt_at = $1, locked_until = NULL, \
                             last_error = $2 WHERE id = $3",
                        )))
                        .bind($at(retry_at))
                        .bind(&error)
                        .bind($id(id))
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query(sqlx::AssertSqlSafe($sql(
                            "UPDATE outbox SET dead_at = $1, locked_until = NULL, \
                             last_error = $2 WHERE id = $3",
                        )))
                        .bind($at(now))
                        .bind(&error)
                        .bind($id(id))
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn outbox_counts(&self) -> StoreResult<$crate::store::OutboxCounts> {
                let row: $row = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT \
                     COUNT(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN 1 END) AS pending, \
                     COUNT(dead_at) AS dead FROM outbox",
                )))
                .fetch_one(&self.$read)
                .await?;
                let pending: i64 = row.try_get("pending")?;
                let dead: i64 = row.try_get("dead")?;
                Ok($crate::store::OutboxCounts {
                    pending: u64::try_from(pending).unwrap_or(0),
                    dead: u64::try_from(dead).unwrap_or(0),
                })
            }

            async fn dead_messages(
                &self,
                limit: u32,
            ) -> StoreResult<Vec<$crate::store::DeadMessage>> {
                let rows: Vec<$row> = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT id, kind, attempts, last_error, created_at, dead_at FROM outbox \
                     WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT $1",
                )))
                .bind(i64::from(limit))
                .fetch_all(&self.$read)
                .await?;
                let mut dead = Vec::with_capacity(rows.len());
                for row in &rows {
                    dead.push($crate::store::DeadMessage {
                        id: $get_id(row, "id")?,
                        kind: row.try_get("kind")?,
                        attempts: row.try_get("attempts")?,
                        last_error: row.try_get("last_error")?,
                        created_at: row.try_get("created_at")?,
                        dead_at: row.try_get("dead_at")?,
                    });
                }
                Ok(dead)
            }

            async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let mut tx = $begin(self).await?;
                let deleted = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM outbox WHERE delivered_at < $1 OR dead_at < $1",
                )))
                .bind($at(before))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }
        }
    };
}
pub(super) use impl_outbox_store;
