//! Looking after users (issue 19): the use cases behind `/admin`, for an admin (a signed-in
//! user whose stored role is `admin`) or a service (`X-Service-Auth`). Every change is
//! audited with its actor; none can remove the last admin who can sign in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::audit::{Actor, Audit, Entry, EventType};
use super::{Accounts, AuthError, Email, FieldError, Registration, parse_name};
use crate::clock::Clock;
use crate::store::{
    AdminOutcome, AdminUpdate, AuditFilter, AuditRecord, Ban, DeadMessage, OutboxCounts, Role,
    SessionRecord, Store, UserFilter, UserRecord,
};

/// The most a page of users or events holds, and what it holds when not told.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

/// A user search as it arrives (already typed by the HTTP layer).
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub email_prefix: Option<String>,
    pub role: Option<Role>,
    pub email_verified: Option<bool>,
    pub banned: Option<bool>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// An audit search as it arrives.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user_id: Option<Uuid>,
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The last id of the previous page.
    pub before: Option<Uuid>,
    pub limit: Option<u32>,
}

/// One page, and the cursor of the next when there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Uuid>,
}

/// An account an admin creates.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub name: Option<String>,
    pub role: Option<Role>,
    pub email_verified: Option<bool>,
}

/// A ban as an admin asks for it.
#[derive(Debug, Clone, Default)]
pub struct BanRequest {
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The longest ban reason kept.
const MAX_REASON_CHARS: usize = 500;

/// The admin use cases. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    accounts: Accounts,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

fn page_size(limit: Option<u32>) -> Result<u32, AuthError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(AuthError::Validation(vec![FieldError::new(
            "limit",
            "out_of_range",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )])),
    }
}

/// Takes one more than asked: if it came, there is a next page, starting after the last
/// one kept.
fn paginate<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
    } else {
        None
    };
    Page { items, next }
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        accounts: Accounts,
        clock: Arc<dyn Clock>,
        audit: Audit,
    ) -> Self {
        Self {
            store,
            accounts,
            audit,
            clock,
        }
    }

    /// Users matching the query, in creation order.
    pub async fn list_users(&self, query: UserQuery) -> Result<Page<UserRecord>, AuthError> {
        let limit = page_size(query.limit)?;
        let filter = UserFilter {
            // The same comparison rule as the stored keys, so `Ada@` finds `ada@…`.
            email_prefix: query.email_prefix.as_deref().map(Email::key_of),
            role: query.role,
            email_verified: query.email_verified,
            banned: query.banned,
            after: query.after,
            limit: limit + 1,
            now: self.clock.now(),
        };
        let users = self.store.list_users(&filter).await?;
        Ok(paginate(users, limit, |user| user.id))
    }

    /// One user.
    pub async fn user(&self, id: Uuid) -> Result<UserRecord, AuthError> {
        self.store.find_user(id).await?.ok_or(AuthError::NotFound)
    }

    /// Creates an account with the registration rules (address, password policy); with
    /// `email_verified` no verification mail is sent.
    pub async fn create_user(
        &self,
        actor: Actor,
        account: NewAccount,
    ) -> Result<UserRecord, AuthError> {
        let registration = Registration {
            email: account.email,
            password: account.password,
            name: account.name,
            ..Registration::default()
        };
        let user = self
            .accounts
            .create_account(
                registration,
                account.role.unwrap_or(Role::User),
                account.email_verified.unwrap_or(false),
            )
            .await?;
        self.audit
            .record(
                Entry::by(actor, EventType::Created, Some(user.id))
                    .with("role", user.role.as_str()),
            )
            .await;
        Ok(user)
    }

    /// Changes a user's role, `email_verified` or name.
    pub async fn update_user(
        &self,
        actor: Actor,
        id: Uuid,
        role: Option<Role>,
        email_verified: Option<bool>,
        name: Option<Option<String>>,
    ) -> Result<UserRecord, AuthError> {
        let name = match name {
            Some(Some(raw)) => Some(Some(
                parse_name(&raw, "name").map_err(|error| AuthError::Validation(vec![error]))?,
            )),
            other => other,
        };
        let update = AdminUpdate {
            role,
            email_verified,
            name,
        };
        let now = self.clock.now();
        let user = match self.store.admin_update_user(id, &update, now).await? {
            AdminOutcome::Done(user) => user,
            AdminOutcome::NotFound => return Err(AuthError::NotFound),
            AdminOutcome::LastAdmin => return Err(AuthError::LastAdmin),
        };
        let mut entry = Entry::by(actor, EventType::Updated, Some(id));
        if let Some(role) = update.role {
            entry = entry.with("role", role.as_str());
        }
        if let Some(verified) = update.email_verified {
            entry = entry.with("email_verified", verified);
        }
        if update.name.is_some() {
            entry = entry.with("name_changed", true);
        }
        self.audit.record(entry).await;
        Ok(user)
    }

    /// Bans a user (until `expires_at`, or for good) and ends every session at once.
    pub async fn ban(
        &self,
        actor: Actor,
        id: Uuid,
        request: BanRequest,
    ) -> Result<UserRecord, AuthError> {
        let now = self.clock.now();
        let mut errors = Vec::new();
        let reason = request.reason.map(|reason| reason.trim().to_owned());
        if reason.as_deref().is_some_and(|reason| {
            reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control)
        }) {
            errors.push(FieldError::new(
                "reason",
                "invalid_reason",
                format!(
                    "the reason has at most {MAX_REASON_CHARS} characters and no control characters"
                ),
            ));
        }
        if request.expires_at.is_some_and(|end| end <= now) {
            errors.push(FieldError::new(
                "expires_at",
                "in_the_past",
                "a ban's end must be in the future",
            ));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let ban = Ban {
            at: now,
            reason: reason.filter(|reason| !reason.is_empty()),
            expires_at: request.expires_at,
        };
        let (user, revoked) = match self.store.ban_user(id, &ban, now).await? {
            AdminOutcome::Done(done) => done,
            AdminOutcome::NotFound => return Err(AuthError::NotFound),
            AdminOutcome::LastAdmin => return Err(AuthError::LastAdmin),
        };
        tracing::info!(user.id = %id, sessions = revoked, "user banned");
        let mut entry =
            Entry::by(actor, EventType::Banned, Some(id)).with("sessions_revoked", revoked);
        if let Some(reason) = &ban.reason {
            entry = entry.with("reason", reason.as_str());
        }
        if let Some(end) = ban.expires_at {
            entry = entry.with("expires_at", end.to_rfc3339());
        }
        self.audit.record(entry).await;
        Ok(user)
    }

    /// Lifts a user's ban.
    pub async fn unban(&self, actor: Actor, id: Uuid) -> Result<UserRecord, AuthError> {
        let user = self
            .store
            .unban_user(id, self.clock.now())
            .await?
            .ok_or(AuthError::NotFound)?;
        self.audit
            .record(Entry::by(actor, EventType::Unbanned, Some(id)))
            .await;
        Ok(user)
    }

    /// Deletes a user with every session.
    pub async fn delete(&self, actor: Actor, id: Uuid) -> Result<(), AuthError> {
        match self
            .store
            .delete_user_unless_last_admin(id, self.clock.now())
            .await?
        {
            AdminOutcome::Done(()) => {}
            AdminOutcome::NotFound => return Err(AuthError::NotFound),
            AdminOutcome::LastAdmin => return Err(AuthError::LastAdmin),
        }
        tracing::info!(user.id = %id, "account deleted by an admin");
        self.audit
            .record(Entry::by(actor, EventType::Deleted, Some(id)))
            .await;
        Ok(())
    }

    /// A user's live sessions, newest first.
    pub async fn sessions(&self, id: Uuid) -> Result<Vec<SessionRecord>, AuthError> {
        self.user(id).await?;
        Ok(self.store.list_live_sessions(id, self.clock.now()).await?)
    }

    /// Ends one of a user's sessions.
    pub async fn revoke_session(
        &self,
        actor: Actor,
        id: Uuid,
        session: Uuid,
    ) -> Result<(), AuthError> {
        if !self
            .store
            .revoke_session(id, session, self.clock.now())
            .await?
        {
            return Err(AuthError::NotFound);
        }
        self.audit
            .record(Entry::by(actor, EventType::SessionRevoked, Some(id)).session(session))
            .await;
        Ok(())
    }

    /// Ends every session of a user (and a pending email change, as signing out everywhere
    /// does).
    pub async fn revoke_sessions(&self, actor: Actor, id: Uuid) -> Result<u64, AuthError> {
        self.user(id).await?;
        let revoked = self
            .store
            .revoke_user_sessions(id, None, self.clock.now())
            .await?;
        self.audit
            .record(
                Entry::by(actor, EventType::SessionsRevoked, Some(id)).with("sessions", revoked),
            )
            .await;
        Ok(revoked)
    }

    /// Mails the user a password-reset link (within the link-mail limit, like forgot).
    pub async fn send_password_reset(&self, actor: Actor, id: Uuid) -> Result<(), AuthError> {
        let user = self.user(id).await?;
        self.accounts.forgot_password(Some(user.email))?;
        self.audit
            .record(Entry::by(actor, EventType::PasswordResetSent, Some(id)))
            .await;
        Ok(())
    }

    /// The outbox's counts and its newest dead messages.
    pub async fn outbox(&self) -> Result<(OutboxCounts, Vec<DeadMessage>), AuthError> {
        Ok((
            self.store.outbox_counts().await?,
            self.store.dead_messages(50).await?,
        ))
    }

    /// Audit events matching the query, newest first.
    pub async fn audit_events(&self, query: AuditQuery) -> Result<Page<AuditRecord>, AuthError> {
        let limit = page_size(query.limit)?;
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since >= until
        {
            return Err(AuthError::Validation(vec![FieldError::new(
                "since",
                "invalid_range",
                "since must be before until",
            )]));
        }
        let filter = AuditFilter {
            user_id: query.user_id,
            event: query.event,
            since: query.since,
            until: query.until,
            before: query.before,
            limit: limit + 1,
        };
        let events = self.store.list_audit_events(&filter).await?;
        Ok(paginate(events, limit, |event| event.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_knows_whether_another_follows() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = paginate(ids.clone(), 2, |id| *id);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(page.next, Some(ids[1]));
        let page = paginate(ids[..2].to_vec(), 2, |id| *id);
        assert_eq!(page.next, None);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).ok(), Some(DEFAULT_PAGE));
        assert_eq!(page_size(Some(MAX_PAGE)).ok(), Some(MAX_PAGE));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
