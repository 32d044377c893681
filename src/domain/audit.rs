//! The audit log: one row per auth event, written by the domain service that made the
//! change (so every face records alike), with who did it and where the request came from.
//!
//! The request's origin (client IP, user agent, request id) travels in a task-local set by
//! the HTTP layer for the whole request ([`Origin::scope`]), so the services need not pass it
//! through every call; events recorded outside a request (the command line, the background
//! jobs) have none.
//!
//! Recording never fails the request it records: it is one insert after the change; a
//! failed insert is logged and counted (`servauth_audit_failures_total`), and the change
//! stands. Nothing secret goes into an event: [`Detail`] holds only named facts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::Clock;
use crate::store::{AuditRecord, AuditWrite, NewMessage, Store};

/// The outbox's kind for webhook deliveries.
pub const WEBHOOK: &str = "webhook";

/// An event as a webhook receives it: Standard Webhooks' `{type, timestamp, data}`, `data`
/// in the shape of `GET /admin/audit`'s events.
pub fn webhook_payload(record: &AuditRecord) -> String {
    let detail = record
        .detail
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| serde_json::Value::Object(Detail::new()));
    serde_json::json!({
        "type": record.event,
        "timestamp": record.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "id": record.id,
            "at": record.at,
            "event": record.event,
            "user_id": record.user_id,
            "actor": record.actor,
            "actor_id": record.actor_id,
            "session_id": record.session_id,
            "ip": record.ip,
            "user_agent": record.user_agent,
            "request_id": record.request_id,
            "detail": detail,
        }
    })
    .to_string()
}

/// Where the request being handled came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

impl Origin {
    /// Runs `work` with this origin as the current one.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        ORIGIN.scope(self, work).await
    }

    /// The origin of the request being handled (empty outside one).
    pub fn current() -> Self {
        ORIGIN.try_with(Clone::clone).unwrap_or_default()
    }
}

/// What happened. The stored and published name is [`EventType::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    /// An account was registered (either face).
    #[serde(rename = "user.registered")]
    Registered,
    /// An account was created by an admin or a service.
    #[serde(rename = "user.created")]
    Created,
    /// A sign-in opened a session (password, second factor, passkey; either face).
    #[serde(rename = "user.signed_in")]
    SignedIn,
    /// A sign-in was refused; `detail.reason` tells why (`unknown_email`, `wrong_password`,
    /// `banned`, `throttled`, `second_factor_failed`, `email_not_verified`). Outsiders get one
    /// answer for an unknown address and a wrong password; only this log tells them apart.
    #[serde(rename = "user.sign_in_failed")]
    SignInFailed,
    /// A session was ended by its own user (sign-out).
    #[serde(rename = "session.signed_out")]
    SignedOut,
    /// A session was ended by another of its user's sessions or by an admin.
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    /// Every session of a user was ended (sign-out everywhere, or an admin).
    #[serde(rename = "user.sessions_revoked")]
    SessionsRevoked,
    /// A refresh token was presented again after its rotation: the session was revoked.
    #[serde(rename = "session.refresh_reuse_detected")]
    RefreshReuseDetected,
    #[serde(rename = "user.password_changed")]
    PasswordChanged,
    #[serde(rename = "user.password_reset")]
    PasswordReset,
    /// A password-reset link was sent at an admin's or service's request.
    #[serde(rename = "user.password_reset_sent")]
    PasswordResetSent,
    #[serde(rename = "user.email_verified")]
    EmailVerified,
    #[serde(rename = "user.email_changed")]
    EmailChanged,
    /// A second factor was enrolled; `detail.kind` is `totp`, `passkey` or `recovery_codes`.
    #[serde(rename = "factor.added")]
    FactorAdded,
    #[serde(rename = "factor.removed")]
    FactorRemoved,
    /// A second factor was used to sign in or re-authenticate.
    #[serde(rename = "factor.used")]
    FactorUsed,
    #[serde(rename = "user.banned")]
    Banned,
    #[serde(rename = "user.unbanned")]
    Unbanned,
    /// An admin or service changed a user's role, `email_verified` or name.
    #[serde(rename = "user.updated")]
    Updated,
    #[serde(rename = "user.deleted")]
    Deleted,
}

impl EventType {
    pub const ALL: [Self; 20] = [
        Self::Registered,
        Self::Created,
        Self::SignedIn,
        Self::SignInFailed,
        Self::SignedOut,
        Self::SessionRevoked,
        Self::SessionsRevoked,
        Self::RefreshReuseDetected,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::PasswordResetSent,
        Self::EmailVerified,
        Self::EmailChanged,
        Self::FactorAdded,
        Self::FactorRemoved,
        Self::FactorUsed,
        Self::Banned,
        Self::Unbanned,
        Self::Updated,
        Self::Deleted,
    ];

    /// The event's name as stored, filtered on and published.
    pub fn name(self) -> &'static str {
        match self {
            Self::Registered => "user.registered",
            Self::Created => "user.created",
            Self::SignedIn => "user.signed_in",
            Self::SignInFailed => "user.sign_in_failed",
            Self::SignedOut => "session.signed_out",
            Self::SessionRevoked => "session.revoked",
            Self::SessionsRevoked => "user.sessions_revoked",
            Self::RefreshReuseDetected => "session.refresh_reuse_detected",
            Self::PasswordChanged => "user.password_changed",
            Self::PasswordReset => "user.password_reset",
            Self::PasswordResetSent => "user.password_reset_sent",
            Self::EmailVerified => "user.email_verified",
            Self::EmailChanged => "user.email_changed",
            Self::FactorAdded => "factor.added",
            Self::FactorRemoved => "factor.removed",
            Self::FactorUsed => "factor.used",
            Self::Banned => "user.banned",
            Self::Unbanned => "user.unbanned",
            Self::Updated => "user.updated",
            Self::Deleted => "user.deleted",
        }
    }

    /// The event with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.name() == name)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The user the event is about, or a user acting on their own account.
    User(Uuid),
    /// An admin, through `/admin`.
    Admin(Uuid),
    /// A service, with `X-Service-Auth`.
    Service,
    /// The server itself, or its command line.
    System,
    /// Nobody known yet (a failed sign-in, a reset link's holder).
    Anonymous,
}

impl Actor {
    pub fn kind(self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Admin(_) => "admin",
            Self::Service => "service",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }

    pub fn id(self) -> Option<Uuid> {
        match self {
            Self::User(id) | Self::Admin(id) => Some(id),
            _ => None,
        }
    }
}

/// Named facts of an event: never a password, token or code.
pub type Detail = serde_json::Map<String, serde_json::Value>;

/// One event to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: EventType,
    /// The user the event is about.
    pub user: Option<Uuid>,
    pub actor: Actor,
    pub session: Option<Uuid>,
    pub detail: Detail,
}

impl Entry {
    /// An event a user caused on their own account.
    pub fn by_user(event: EventType, user: Uuid) -> Self {
        Self {
            event,
            user: Some(user),
            actor: Actor::User(user),
            session: None,
            detail: Detail::new(),
        }
    }

    /// An event about `user` that `actor` caused.
    pub fn by(actor: Actor, event: EventType, user: Option<Uuid>) -> Self {
        Self {
            event,
            user,
            actor,
            session: None,
            detail: Detail::new(),
        }
    }

    pub fn session(mut self, session: Uuid) -> Self {
        self.session = Some(session);
        self
    }

    /// Adds a named fact.
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.insert(name.to_owned(), value.into());
        self
    }
}

/// Writes events (see the module documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// `SERVAUTH_WEBHOOK_URL` is set: each event also queues its delivery there, in the
    /// event's transaction.
    webhooks: bool,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, webhooks: bool) -> Self {
        Self {
            store,
            clock,
            webhooks,
        }
    }

    /// Records one event, with the current request's origin.
    pub async fn record(&self, entry: Entry) {
        let write = self.prepare(entry);
        let event = write.event.event.clone();
        if let Err(error) = self
            .store
            .append_audit_event(write.event, write.webhook)
            .await
        {
            metrics::counter!("servauth_audit_failures_total").increment(1);
            tracing::error!(event, error = %error, "audit event not recorded");
        } else {
            Self::written(&event);
        }
    }

    /// The event, with the current request's origin (and its webhook delivery), for a
    /// store call that writes it in its own transaction; [`Self::written`] once that
    /// committed.
    pub fn prepare(&self, entry: Entry) -> AuditWrite {
        let event = self.record_for(entry, self.clock.now(), Origin::current());
        let webhook = self.webhooks.then(|| NewMessage {
            id: Uuid::now_v7(),
            kind: WEBHOOK,
            payload: webhook_payload(&event).into_bytes(),
            now: event.at,
        });
        AuditWrite { event, webhook }
    }

    /// Counts an event written (`servauth_audit_events_total`).
    pub fn written(event: &str) {
        metrics::counter!("servauth_audit_events_total", "event" => event.to_owned()).increment(1);
    }

    fn record_for(&self, entry: Entry, at: DateTime<Utc>, origin: Origin) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            at,
            event: entry.event.name().to_owned(),
            user_id: entry.user,
            actor: entry.actor.kind().to_owned(),
            actor_id: entry.actor.id(),
            session_id: entry.session,
            ip: origin.ip,
            user_agent: origin.user_agent,
            request_id: origin.request_id,
            detail: (!entry.detail.is_empty())
                .then(|| serde_json::Value::Object(entry.detail).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_name_reads_back() {
        for event in EventType::ALL {
            assert_eq!(EventType::from_name(event.name()), Some(event));
            assert_eq!(
                serde_json::to_value(event).ok(),
                Some(serde_json::Value::String(event.name().to_owned()))
            );
        }
        assert_eq!(EventType::from_name("user.Registered"), None);
    }
}
