//! Outgoing mail. Requests put messages on a bounded queue ([`Mailer::send`] never waits);
//! a worker delivers them over SMTP (lettre), retrying a failed delivery a few times with
//! backoff and logging every failure. With no SMTP server configured, mail is not sent: a
//! log line says so, without the message (its links are credentials). Only in development,
//! with `SERVAUTH_DEV_LOG_MAIL=true`, is each message, links included, written to the log.

mod templates;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use tokio::sync::{Semaphore, mpsc};

pub use templates::Templates;

use crate::config::Config;

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The sending side of the mail queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailer {
    queue: mpsc::Sender<OutgoingEmail>,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP server: one log line per message, with its text (links included) only when
    /// `with_body` (`SERVAUTH_DEV_LOG_MAIL`).
    Log {
        with_body: bool,
    },
}

/// Messages that may wait for delivery; beyond that a message is dropped with an error log
/// (a request never waits on mail).
const QUEUE_CAPACITY: usize = 1024;
/// Deliveries in flight at once.
const CONCURRENT_DELIVERIES: usize = 4;
/// Attempts per message, and the wait before the second (doubled each time after).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(500);
/// Give up on one SMTP conversation after this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

impl Mailer {
    /// Starts the delivery worker for the configured transport. The SMTP URL was validated
    /// with the settings; the server is not contacted until there is mail.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            None if config.dev_log_mail => {
                tracing::warn!(
                    "no SMTP server configured and SERVAUTH_DEV_LOG_MAIL=true: every message, \
                     links included, is written to the log (for development only)"
                );
                Transport::Log { with_body: true }
            }
            None => {
                tracing::warn!(
                    "no SMTP server configured (SERVAUTH_SMTP_URL): mail is not sent, so \
                     password resets and address verification cannot reach anyone"
                );
                Transport::Log { with_body: false }
            }
        };
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(deliver_all(
            receiver,
            Arc::new(transport),
            config.mail_from.clone(),
        ));
        Ok(Self { queue })
    }

    /// Queues a message for delivery and returns at once.
    pub fn send(&self, email: OutgoingEmail) {
        let subject = email.subject.clone();
        if self.queue.try_send(email).is_err() {
            tracing::error!(subject, "mail queue full or closed: message dropped");
            metrics::counter!("servauth_emails_total", "outcome" => "dropped").increment(1);
        }
    }
}

/// Delivers one message now, for a command that exits right after (`servauth users
/// reset-mfa`): the same transport and retries as the queue, awaited.
pub async fn send_and_wait(config: &Config, email: OutgoingEmail) -> anyhow::Result<()> {
    let transport = match &config.smtp_url {
        Some(url) => Transport::Smtp(
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())?
                .timeout(Some(SMTP_TIMEOUT))
                .build(),
        ),
        None => Transport::Log {
            with_body: config.dev_log_mail,
        },
    };
    deliver(&transport, &config.mail_from, email).await;
    Ok(())
}

async fn deliver_all(
    mut receiver: mpsc::Receiver<OutgoingEmail>,
    transport: Arc<Transport>,
    from: Mailbox,
) {
    let in_flight = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    while let Some(email) = receiver.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (transport, from) = (transport.clone(), from.clone());
        tokio::spawn(async move {
            deliver(&transport, &from, email).await;
            drop(permit);
        });
    }
}

async fn deliver(transport: &Transport, from: &Mailbox, email: OutgoingEmail) {
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
            return;
        }
        Transport::Log { with_body: false } => {
            tracing::warn!(
                subject = %email.subject,
                "mail not sent: no SMTP server configured (SERVAUTH_SMTP_URL)"
            );
            metrics::counter!("servauth_emails_total", "outcome" => "not_sent").increment(1);
            return;
        }
        Transport::Smtp(smtp) => smtp,
    };
    let message = match build(from, &email) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(subject = %email.subject, error = %error, "email could not be built");
            return;
        }
    };
    let mut wait = FIRST_RETRY_AFTER;
    for attempt in 1..=ATTEMPTS {
        match smtp.send(message.clone()).await {
            Ok(_) => {
                tracing::info!(subject = %email.subject, attempt, "email delivered");
                metrics::counter!("servauth_emails_total", "outcome" => "delivered").increment(1);
                return;
            }
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(subject = %email.subject, attempt, error = %error, "email delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                tracing::error!(
                    subject = %email.subject,
                    attempts = ATTEMPTS,
                    error = %error,
                    "email delivery failed; giving up"
                );
                metrics::counter!("servauth_emails_total", "outcome" => "failed").increment(1);
            }
        }
    }
}

fn build(from: &Mailbox, email: &OutgoingEmail) -> anyhow::Result<Message> {
    Ok(Message::builder()
        .from(from.clone())
        .to(email.to.parse()?)
        .subject(&email.subject)
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))?)
}
