//! Outgoing mail, through the durable outbox: a message is a row ([`Mailer::prepare`] for
//! one written in the transaction of the change that causes it, [`Mailer::send`] for one
//! written right after), sealed at rest (a link's token is in it) and emptied once
//! delivered. A worker on every server claims due rows under a lease, delivers them over SMTP
//! (lettre) with the row's id as `Message-ID`, and marks each delivered, due again later
//! (backoff) or, after [`ATTEMPTS`], dead (`/admin/outbox`, `servauth_outbox_dead`). A
//! server killed mid-delivery leaves its lease; once it ends any server delivers the row
//! again with the same `Message-ID`, so no message is lost and a receiver that deduplicates
//! by id sees each once. With no SMTP server configured, mail is not sent: a log line says
//! so, without the message (its links are credentials). Only in development, with
//! `SERVAUTH_DEV_LOG_MAIL=true`, is each message, links included, written to the log.

mod templates;

use std::sync::{Arc, Weak};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

pub use templates::Templates;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{AuthError, FactorSealing};
use crate::store::{NewMessage, QueuedMessage, Store};

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The queue's sending side, and its worker's. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    sealing: FactorSealing,
    clock: Arc<dyn Clock>,
    /// Rung when a message is queued, so the worker need not wait for its next poll.
    wake: Notify,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP server: one log line per message, with its text (links included) only when
    /// `with_body` (`SERVAUTH_DEV_LOG_MAIL`).
    Log {
        with_body: bool,
    },
}

/// The outbox's kind for mail.
const KIND: &str = "mail";
/// Attempts per message before it is dead, and the wait after each failed one.
pub const ATTEMPTS: i64 = 8;
const BACKOFF: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
];
/// How long a claimed message is this server's: longer than one SMTP conversation may take.
const LEASE: Duration = Duration::from_secs(15);
/// Messages claimed (and delivered at once) per round.
const BATCH: u32 = 4;
/// How often an idle worker looks for due messages (other servers' and retries).
const POLL: Duration = Duration::from_millis(500);
/// How often the outbox gauges are refreshed.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// Give up on one SMTP conversation after this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

fn transport(config: &Config, announce: bool) -> anyhow::Result<Transport> {
    Ok(match &config.smtp_url {
        Some(url) => Transport::Smtp(
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())?
                .timeout(Some(SMTP_TIMEOUT))
                .build(),
        ),
        None if config.dev_log_mail => {
            if announce {
                tracing::warn!(
                    "no SMTP server configured and SERVAUTH_DEV_LOG_MAIL=true: every message, \
                     links included, is written to the log (for development only)"
                );
            }
            Transport::Log { with_body: true }
        }
        None => {
            if announce {
                tracing::warn!(
                    "no SMTP server configured (SERVAUTH_SMTP_URL): mail is not sent, so \
                     password resets and address verification cannot reach anyone"
                );
            }
            Transport::Log { with_body: false }
        }
    })
}

impl Mailer {
    /// Starts this server's outbox worker for the configured transport. The SMTP URL was
    /// validated with the settings; the server is not contacted until there is mail.
    pub fn start(
        config: &Config,
        store: Arc<dyn Store>,
        sealing: FactorSealing,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let transport = transport(config, true)?;
        let inner = Arc::new(Inner {
            store,
            sealing,
            clock,
            wake: Notify::new(),
        });
        tokio::spawn(deliver_queued(
            Arc::downgrade(&inner),
            transport,
            config.mail_from.clone(),
        ));
        Ok(Self { inner })
    }

    /// The outbox row of a message, sealed, for the caller to write in its own transaction;
    /// call [`Self::queued`] once that committed.
    pub fn prepare(
        &self,
        email: &OutgoingEmail,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<NewMessage, AuthError> {
        let id = Uuid::now_v7();
        let json = serde_json::to_vec(email).map_err(|error| AuthError::Internal(error.into()))?;
        Ok(NewMessage {
            id,
            kind: KIND,
            payload: self.inner.sealing.seal(id, &json)?,
            now,
        })
    }

    /// Tells the worker a message was queued.
    pub fn queued(&self) {
        self.inner.wake.notify_one();
    }

    /// Queues a message (one insert) and returns. A failure is logged and counted: the
    /// change that sends it stands.
    pub async fn send(&self, email: OutgoingEmail) {
        let queued = match self.prepare(&email, self.inner.clock.now()) {
            Ok(message) => self
                .inner
                .store
                .enqueue_message(message)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match queued {
            Ok(()) => self.queued(),
            Err(error) => {
                tracing::error!(subject = email.subject, error, "mail not queued");
                metrics::counter!("servauth_emails_total", "outcome" => "dropped").increment(1);
            }
        }
    }
}

/// Delivers one message now, for a command that exits right after (`servauth users
/// reset-mfa`), over the same transport.
pub async fn send_and_wait(config: &Config, email: OutgoingEmail) -> anyhow::Result<()> {
    let transport = transport(config, false)?;
    deliver(&transport, &config.mail_from, &email, Uuid::now_v7())
        .await
        .map_err(anyhow::Error::msg)
}

/// This server's outbox worker: claims due messages, delivers them, records the outcome;
/// ends with the server (when the last [`Mailer`] is dropped).
async fn deliver_queued(inner: Weak<Inner>, transport: Transport, from: Mailbox) {
    let mut counted = tokio::time::Instant::now() - COUNT_EVERY;
    loop {
        let Some(mailer) = inner.upgrade() else {
            return;
        };
        if counted.elapsed() >= COUNT_EVERY {
            counted = tokio::time::Instant::now();
            if let Ok(counts) = mailer.store.outbox_counts().await {
                #[expect(clippy::cast_precision_loss, reason = "a gauge")]
                {
                    metrics::gauge!("servauth_outbox_pending").set(counts.pending as f64);
                    metrics::gauge!("servauth_outbox_dead").set(counts.dead as f64);
                }
            }
        }
        let now = mailer.clock.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let claimed = match mailer
            .store
            .claim_messages(KIND, now, lease_until, BATCH)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error, "outbox: claiming messages failed; retrying");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            // Woken by a new message, or polled: other servers' messages and retries.
            // (The strong reference lasts one wait: once the server drops its mailer, the
            // next round ends the worker.)
            let _ = tokio::time::timeout(POLL, mailer.wake.notified()).await;
            continue;
        }
        futures::future::join_all(
            claimed
                .into_iter()
                .map(|message| deliver_claimed(&mailer, &transport, &from, message)),
        )
        .await;
    }
}

async fn deliver_claimed(
    mailer: &Inner,
    transport: &Transport,
    from: &Mailbox,
    message: QueuedMessage,
) {
    let email = mailer
        .sealing
        .open(message.id, &message.payload)
        .and_then(|json| serde_json::from_slice::<OutgoingEmail>(&json).ok());
    let outcome = match &email {
        Some(email) => deliver(transport, from, email, message.id).await,
        None => Err("the stored message does not open (another key?)".to_owned()),
    };
    let now = mailer.clock.now();
    let recorded = match outcome {
        Ok(()) => mailer.store.message_delivered(message.id, now).await,
        Err(error) => {
            let retry = email.is_some() && message.attempts < ATTEMPTS;
            let retry_at = retry.then(|| {
                let wait = usize::try_from(message.attempts - 1)
                    .ok()
                    .and_then(|index| BACKOFF.get(index))
                    .copied()
                    .unwrap_or(Duration::from_secs(7200));
                now + chrono::Duration::from_std(wait).unwrap_or_default()
            });
            if retry {
                tracing::warn!(message.id = %message.id, attempt = message.attempts, error, "email delivery failed; retrying later");
            } else {
                tracing::error!(message.id = %message.id, attempts = message.attempts, error, "email delivery failed; giving up");
                metrics::counter!("servauth_emails_total", "outcome" => "failed").increment(1);
            }
            mailer
                .store
                .message_failed(message.id, retry_at, &error, now)
                .await
        }
    };
    if let Err(error) = recorded {
        // The lease ends and the message is delivered again (under the same id).
        tracing::warn!(message.id = %message.id, error = %error, "outbox: recording a delivery failed");
    }
}

/// One delivery attempt.
async fn deliver(
    transport: &Transport,
    from: &Mailbox,
    email: &OutgoingEmail,
    id: Uuid,
) -> Result<(), String> {
    let smtp = match transport {
        Transport::Log { with_body: true } => {
            tracing::info!(
                to = %email.to,
                subject = %email.subject,
                body = %email.text,
                "email not sent: no SMTP server configured (SERVAUTH_SMTP_URL); \
                 logged whole for development (SERVAUTH_DEV_LOG_MAIL)"
            );
            metrics::counter!("servauth_emails_total", "outcome" => "logged").increment(1);
            return Ok(());
        }
        Transport::Log { with_body: false } => {
            tracing::warn!(
                subject = %email.subject,
                "mail not sent: no SMTP server configured (SERVAUTH_SMTP_URL)"
            );
            metrics::counter!("servauth_emails_total", "outcome" => "not_sent").increment(1);
            return Ok(());
        }
        Transport::Smtp(smtp) => smtp,
    };
    let message =
        build(from, email, id).map_err(|error| format!("the message cannot be built: {error}"))?;
    match smtp.send(message).await {
        Ok(_) => {
            tracing::info!(subject = %email.subject, message.id = %id, "email delivered");
            metrics::counter!("servauth_emails_total", "outcome" => "delivered").increment(1);
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// The message, with the outbox row's id as its `Message-ID` (the same on every attempt).
fn build(from: &Mailbox, email: &OutgoingEmail, id: Uuid) -> anyhow::Result<Message> {
    Ok(Message::builder()
        .message_id(Some(format!("<{id}@servauth>")))
        .from(from.clone())
        .to(email.to.parse()?)
        .subject(&email.subject)
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))?)
}
