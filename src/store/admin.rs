//! Operators' tools (issue 19): finding and looking after users (bans, roles, deletion that
//! never removes the last admin) and the audit log. One trait, [`AdminStore`], and one
//! implementation for both backends ([`impl_admin_store!`]): the statements are the same SQL
//! on both; the placeholders, id encoding, row locks and transaction start differ.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Role, StoreResult, UserRecord};

/// A user's ban as stored: in force while `expires_at` is `None` or later than now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Ban {
    /// Whether the ban holds at `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|end| end > now)
    }
}

/// One audit event as stored (see `domain::audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// UUID v7: the order of the log.
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub event: String,
    pub user_id: Option<Uuid>,
    /// `user`, `admin`, `service`, `system` or `anonymous`.
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// A JSON object of named facts, as text.
    pub detail: Option<String>,
}

/// An audit event written in the same transaction as the change it records (a sign-in's
/// with its session), with its webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditWrite {
    pub event: AuditRecord,
    pub webhook: Option<super::NewMessage>,
}

/// Which audit events to list: newest first, `limit` of them, older than `before` (the
/// cursor: the last id of the previous page).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    pub event: Option<String>,
    /// From this time on (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Which users to list: in id order (creation order), `limit` of them, after `after` (the
/// cursor: the last id of the previous page).
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Comparison keys starting with this (already lowercased the way keys are).
    pub email_prefix: Option<String>,
    pub role: Option<Role>,
    pub email_verified: Option<bool>,
    /// Banned (with the ban in force at `now`) or not.
    pub banned: Option<bool>,
    pub after: Option<Uuid>,
    pub limit: u32,
    pub now: DateTime<Utc>,
}

/// What an admin may change on a user. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AdminUpdate {
    pub role: Option<Role>,
    pub email_verified: Option<bool>,
    /// `Some(None)` removes the display name.
    pub name: Option<Option<String>>,
}

/// How an admin change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome<T> {
    Done(T),
    NotFound,
    /// It would leave no admin who can sign in: nothing changed.
    LastAdmin,
}

/// The store's part of the admin API and the audit log.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Appends one event, and queues its webhook delivery in the same transaction.
    async fn append_audit_event(
        &self,
        event: AuditRecord,
        webhook: Option<super::NewMessage>,
    ) -> StoreResult<()>;

    /// Events matching `filter`, newest first.
    async fn list_audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;

    /// Deletes the events older than `before`; how many.
    async fn prune_audit_events(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Users matching `filter`, in id order.
    async fn list_users(&self, filter: &UserFilter) -> StoreResult<Vec<UserRecord>>;

    /// Applies an admin's change and sets `updated_at`; `LastAdmin` when it would demote the
    /// last admin in force (one not banned).
    async fn admin_update_user(
        &self,
        id: Uuid,
        update: &AdminUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<UserRecord>>;

    /// Bans the user and revokes every live session, in one transaction (a sign-in racing
    /// with it either comes first, and its session is revoked here, or is refused); the
    /// user and how many sessions ended. `LastAdmin` for the last admin in force.
    async fn ban_user(
        &self,
        id: Uuid,
        ban: &Ban,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<(UserRecord, u64)>>;

    /// Lifts the user's ban (an expired one too).
    async fn unban_user(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<UserRecord>>;

    /// Deletes the user as [`Store::delete_user`](super::Store::delete_user) does, unless it
    /// is the last admin in force.
    async fn delete_user_unless_last_admin(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<AdminOutcome<()>>;
}

/// `LIKE` pattern for keys starting with `prefix`: `\`, `%` and `_` are matched literally
/// (escaped with `\`, named by `ESCAPE '\'` in the statement), so a search string is data,
/// never a pattern.
pub(super) fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The condition "this row's ban is in force at the bound time", for a `users` row.
macro_rules! ban_in_force {
    () => {
        "(banned_at IS NOT NULL AND (ban_expires_at IS NULL OR ban_expires_at > "
    };
}
pub(super) use ban_in_force;

/// Implements [`AdminStore`] for a backend. `db` is the sqlx database (for the query
/// builder of the filtered lists), `lock` the row-lock clause that holds the admins' rows
/// while the last-admin rule is checked (PostgreSQL `FOR UPDATE`; SQLite's write
/// transaction already excludes every other writer), the rest as in `impl_factor_store!`.
/// `user_columns` and `user_from_row` are the backend's own.
macro_rules! impl_admin_store {
    (
        $store:ty, $row:ty, $db:ty,
        read = $read:ident,
        sql = $sql:path, id = $id:path, get_id = $get_id:path, get_opt_id = $get_opt_id:path,
        at = $at:path, begin = $begin:path, lock = $lock:expr $(,)?
    ) => {
        fn audit_from_row(row: &$row) -> Result<$crate::store::AuditRecord, sqlx::Error> {
            Ok($crate::store::AuditRecord {
                id: $get_id(row, "id")?,
                at: row.try_get("at")?,
                event: row.try_get("event")?,
                user_id: $get_opt_id(row, "user_id")?,
                actor: row.try_get("actor")?,
                actor_id: $get_opt_id(row, "actor_id")?,
                session_id: $get_opt_id(row, "session_id")?,
                ip: row.try_get("ip")?,
                user_agent: row.try_get("user_agent")?,
                request_id: row.try_get("request_id")?,
                detail: row.try_get("detail")?,
            })
        }

        /// Whether removing `id` from the admins in force would leave none, with the admins'
        /// rows held (`lock`) until the caller's transaction ends. `None`: no such user.
        async fn would_remove_last_admin(
            tx: &mut <$db as sqlx::Database>::Connection,
            id: Uuid,
            now: DateTime<Utc>,
        ) -> Result<Option<bool>, sqlx::Error> {
            let exists: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe($sql(
                "SELECT role FROM users WHERE id = $1",
            )))
            .bind($id(id))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(role) = exists else {
                return Ok(None);
            };
            if $crate::store::Role::from_stored(&role) != $crate::store::Role::Admin {
                return Ok(Some(false));
            }
            let sql = format!(
                "{} WHERE role = 'admin' AND NOT {}{})){}",
                "SELECT id FROM users",
                $crate::store::admin::ban_in_force!(),
                $sql("$1"),
                $lock
            );
            let admins: Vec<$row> = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind($at(now))
                .fetch_all(&mut *tx)
                .await?;
            let others = admins
                .iter()
                .filter_map(|row| $get_id(row, "id").ok())
                .filter(|admin| *admin != id)
                .count();
            let in_force = admins.len() > others;
            Ok(Some(in_force && others == 0))
        }

        /// Inserts an audit event, and queues its webhook delivery, in the caller's
        /// transaction.
        async fn insert_audit(
            tx: &mut <$db as sqlx::Database>::Connection,
            event: &$crate::store::AuditRecord,
            webhook: Option<&$crate::store::NewMessage>,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "INSERT INTO audit_events (id, at, event, user_id, actor, actor_id, \
                 session_id, ip, user_agent, request_id, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )))
            .bind($id(event.id))
            .bind($at(event.at))
            .bind(&event.event)
            .bind(event.user_id.map($id))
            .bind(&event.actor)
            .bind(event.actor_id.map($id))
            .bind(event.session_id.map($id))
            .bind(&event.ip)
            .bind(&event.user_agent)
            .bind(&event.request_id)
            .bind(&event.detail)
            .execute(&mut *tx)
            .await?;
            if let Some(webhook) = webhook {
                insert_message(&mut *tx, webhook).await?;
            }
            Ok(())
        }

        async fn fetch_user(
            tx: &mut <$db as sqlx::Database>::Connection,
            id: Uuid,
        ) -> Result<Option<UserRecord>, sqlx::Error> {
            let row = sqlx::query(sqlx::AssertSqlSafe($sql(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))))
            .bind($id(id))
            .fetch_optional(&mut *tx)
            .await?;
            row.as_ref().map(user_from_row).transpose()
        }

        #[async_trait]
        impl $crate::store::AdminStore for $store {
            async fn append_audit_event(
                &self,
                event: $crate::store::AuditRecord,
                webhook: Option<$crate::store::NewMessage>,
            ) -> StoreResult<()> {
                let mut tx = $begin(self).await?;
                insert_audit(&mut tx, &event, webhook.as_ref()).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_audit_events(
                &self,
                filter: &$crate::store::AuditFilter,
            ) -> StoreResult<Vec<$crate::store::AuditRecord>> {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, at, event, user_id, actor, actor_id, session_id, ip, \
                     user_agent, request_id, detail FROM audit_events WHERE 1 = 1",
                );
                if let Some(user_id) = filter.user_id {
                    query.push(" AND user_id = ").push_bind($id(user_id));
                }
                if let Some(event) = &filter.event {
                    query.push(" AND event = ").push_bind(event.clone());
                }
                if let Some(since) = filter.since {
                    query.push(" AND at >= ").push_bind($at(since));
                }
                if let Some(until) = filter.until {
                    query.push(" AND at < ").push_bind($at(until));
                }
                if let Some(before) = filter.before {
                    query.push(" AND id < ").push_bind($id(before));
                }
                query
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind(i64::from(filter.limit));
                let rows = query.build().fetch_all(&self.$read).await?;
                Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
            }

            async fn prune_audit_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let mut tx = $begin(self).await?;
                let deleted = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "DELETE FROM audit_events WHERE at < $1",
                )))
                .bind($at(before))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }

            async fn list_users(
                &self,
                filter: &$crate::store::UserFilter,
            ) -> StoreResult<Vec<UserRecord>> {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE 1 = 1"
                ));
                if let Some(prefix) = &filter.email_prefix {
                    query
                        .push(" AND email_key LIKE ")
                        .push_bind($crate::store::admin::prefix_pattern(prefix))
                        .push(" ESCAPE '\\'");
                }
                if let Some(role) = filter.role {
                    query.push(" AND role = ").push_bind(role.as_str());
                }
                if let Some(verified) = filter.email_verified {
                    query.push(" AND email_verified = ").push_bind(verified);
                }
                if let Some(banned) = filter.banned {
                    query
                        .push(if banned { " AND " } else { " AND NOT " })
                        .push($crate::store::admin::ban_in_force!())
                        .push_bind($at(filter.now))
                        .push("))");
                }
                if let Some(after) = filter.after {
                    query.push(" AND id > ").push_bind($id(after));
                }
                query
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(i64::from(filter.limit));
                let rows = query.build().fetch_all(&self.$read).await?;
                Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
            }

            async fn admin_update_user(
                &self,
                id: Uuid,
                update: &$crate::store::AdminUpdate,
                now: DateTime<Utc>,
            ) -> StoreResult<$crate::store::AdminOutcome<UserRecord>> {
                use $crate::store::AdminOutcome;
                let mut tx = $begin(self).await?;
                if update.role == Some($crate::store::Role::User) {
                    match would_remove_last_admin(&mut tx, id, now).await? {
                        None => return Ok(AdminOutcome::NotFound),
                        Some(true) => return Ok(AdminOutcome::LastAdmin),
                        Some(false) => {}
                    }
                }
                let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE users SET updated_at = ");
                query.push_bind($at(now));
                if let Some(role) = update.role {
                    query.push(", role = ").push_bind(role.as_str());
                }
                if let Some(verified) = update.email_verified {
                    query.push(", email_verified = ").push_bind(verified);
                }
                if let Some(name) = &update.name {
                    query.push(", name = ").push_bind(name.clone());
                }
                query.push(" WHERE id = ").push_bind($id(id));
                let changed = query.build().execute(&mut *tx).await?.rows_affected();
                if changed == 0 {
                    return Ok(AdminOutcome::NotFound);
                }
                let user = fetch_user(&mut tx, id).await?;
                tx.commit().await?;
                Ok(user.map_or(AdminOutcome::NotFound, AdminOutcome::Done))
            }

            async fn ban_user(
                &self,
                id: Uuid,
                ban: &$crate::store::Ban,
                now: DateTime<Utc>,
            ) -> StoreResult<$crate::store::AdminOutcome<(UserRecord, u64)>> {
                use $crate::store::AdminOutcome;
                let mut tx = $begin(self).await?;
                match would_remove_last_admin(&mut tx, id, now).await? {
                    None => return Ok(AdminOutcome::NotFound),
                    Some(true) if ban.in_force(now) => return Ok(AdminOutcome::LastAdmin),
                    Some(_) => {}
                }
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE users SET banned_at = $1, ban_reason = $2, ban_expires_at = $3, \
                     updated_at = $4 WHERE id = $5",
                )))
                .bind($at(ban.at))
                .bind(&ban.reason)
                .bind(ban.expires_at.map($at))
                .bind($at(now))
                .bind($id(id))
                .execute(&mut *tx)
                .await?;
                let revoked = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE sessions SET revoked_at = $1 \
                     WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1",
                )))
                .bind($at(now))
                .bind($id(id))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let user = fetch_user(&mut tx, id).await?;
                tx.commit().await?;
                Ok(user.map_or(AdminOutcome::NotFound, |user| {
                    AdminOutcome::Done((user, revoked))
                }))
            }

            async fn unban_user(
                &self,
                id: Uuid,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<UserRecord>> {
                let mut tx = $begin(self).await?;
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE users SET banned_at = NULL, ban_reason = NULL, \
                     ban_expires_at = NULL, updated_at = $1 WHERE id = $2",
                )))
                .bind($at(now))
                .bind($id(id))
                .execute(&mut *tx)
                .await?;
                let user = fetch_user(&mut tx, id).await?;
                tx.commit().await?;
                Ok(user)
            }

            async fn delete_user_unless_last_admin(
                &self,
                id: Uuid,
                now: DateTime<Utc>,
            ) -> StoreResult<$crate::store::AdminOutcome<()>> {
                use $crate::store::AdminOutcome;
                let mut tx = $begin(self).await?;
                match would_remove_last_admin(&mut tx, id, now).await? {
                    None => return Ok(AdminOutcome::NotFound),
                    Some(true) => return Ok(AdminOutcome::LastAdmin),
                    Some(false) => {}
                }
                let deleted =
                    sqlx::query(sqlx::AssertSqlSafe($sql("DELETE FROM users WHERE id = $1")))
                        .bind($id(id))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                tx.commit().await?;
                Ok(if deleted > 0 {
                    AdminOutcome::Done(())
                } else {
                    AdminOutcome::NotFound
                })
            }
        }
    };
}
pub(super) use impl_admin_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_string_is_never_a_pattern() {
        assert_eq!(prefix_pattern("ada"), "ada%");
        assert_eq!(prefix_pattern("a%b_c\\"), "a\\%b\\_c\\\\%");
        assert_eq!(prefix_pattern(""), "%");
    }
}
