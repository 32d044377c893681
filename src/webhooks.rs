//! Webhooks (issue 19): every audit event is POSTed to `SERVAUTH_WEBHOOK_URL`, signed per
//! the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), from the durable
//! outbox: the delivery row is written in the event's own transaction, and a worker on every
//! server claims rows under a lease, retries with backoff and, after the last attempt (or a
//! `410 Gone`), marks the row dead (`/admin/outbox`, `servauth_outbox_dead`). The
//! `webhook-id` is the row's id, the same on every attempt, so a receiver that deduplicates by
//! it sees each event once.
//!
//! The signature is written here with `hmac` and `sha2` rather than the `standardwebhooks`
//! crate: the signer is the two lines of the specification, and that crate pins an older
//! `base64`; the tests check it with the official library on the receiving side.
//!
//! A receiver that hangs, answers 5xx or cannot be reached only delays its own deliveries:
//! each attempt has a timeout, mail has its own worker, and no request waits for a webhook.
//! Redirects are never followed (a `3xx` is a failed attempt), so a receiver cannot send
//! servauth's requests to another host.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::WebhookTarget;
use crate::domain::audit::WEBHOOK;
use crate::store::{QueuedMessage, Store};

/// Attempts per delivery before it is dead, and the wait after each failed one (the
/// specification's schedule, shortened to about three hours).
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
/// One attempt's whole time; the lease is longer.
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LEASE: Duration = Duration::from_secs(30);
const BATCH: u32 = 8;
const POLL: Duration = Duration::from_millis(500);

/// The `webhook-signature` value of a message: `v1,` and the base64 of HMAC-SHA256 over
/// `"{id}.{timestamp}.{body}"` under the secret's key bytes.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// Makes ring the process's TLS crypto provider (once; later calls do nothing). The HTTP
/// client needs one, and servauth carries ring already (lettre's TLS), not aws-lc.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Starts this server's webhook worker. It stops with the store (when the server is gone).
pub fn start(
    target: WebhookTarget,
    store: &Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    install_crypto_provider();
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("servauth/", env!("CARGO_PKG_VERSION")))
        .build()?;
    // The store is held weakly between rounds, so a server that stops ends the worker.
    tokio::spawn(deliver_queued(target, Arc::downgrade(store), clock, client));
    Ok(())
}

/// Claims due deliveries and makes them, until the server is gone.
async fn deliver_queued(
    target: WebhookTarget,
    store: Weak<dyn Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
) {
    loop {
        let Some(store) = store.upgrade() else { return };
        let now = clock.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let claimed = match store.claim_messages(WEBHOOK, now, lease_until, BATCH).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error, "webhooks: claiming deliveries failed; retrying");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            drop(store);
            tokio::time::sleep(POLL).await;
            continue;
        }
        futures::future::join_all(
            claimed
                .into_iter()
                .map(|message| deliver(&target, &*store, &*clock, &client, message)),
        )
        .await;
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// `410 Gone`: the receiver wants no more of this.
    Gone,
    Failed(String),
}

async fn attempt(
    target: &WebhookTarget,
    client: &reqwest::Client,
    id: Uuid,
    body: Vec<u8>,
    timestamp: i64,
) -> Attempt {
    let id = id.to_string();
    let Some(signed) = signature(target.key.expose_secret(), &id, timestamp, &body) else {
        return Attempt::Failed("the signing key is unusable".to_owned());
    };
    let sent = client
        .post(target.url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) if response.status() == reqwest::StatusCode::GONE => Attempt::Gone,
        Ok(response) if response.status().is_redirection() => Attempt::Failed(format!(
            "answered {} (redirects are not followed)",
            response.status().as_u16()
        )),
        Ok(response) => Attempt::Failed(format!("answered {}", response.status().as_u16())),
        // The error names the URL; the URL is configuration, not a secret.
        Err(error) if error.is_timeout() => Attempt::Failed("timed out".to_owned()),
        Err(error) => Attempt::Failed(format!("not reached: {error}")),
    }
}

async fn deliver(
    target: &WebhookTarget,
    store: &dyn Store,
    clock: &dyn Clock,
    client: &reqwest::Client,
    message: QueuedMessage,
) {
    let timestamp = clock.now().timestamp();
    let outcome = attempt(target, client, message.id, message.payload, timestamp).await;
    let now = clock.now();
    let recorded = match outcome {
        Attempt::Delivered => {
            metrics::counter!("servauth_webhooks_total", "outcome" => "delivered").increment(1);
            store.message_delivered(message.id, now).await
        }
        Attempt::Gone => {
            tracing::warn!(message.id = %message.id, "webhook receiver answered 410 Gone; delivery dropped");
            metrics::counter!("servauth_webhooks_total", "outcome" => "gone").increment(1);
            store
                .message_failed(message.id, None, "answered 410 Gone", now)
                .await
        }
        Attempt::Failed(error) => {
            let retry_at = (message.attempts < ATTEMPTS).then(|| {
                let wait = usize::try_from(message.attempts - 1)
                    .ok()
                    .and_then(|index| BACKOFF.get(index))
                    .copied()
                    .unwrap_or(Duration::from_secs(7200));
                now + chrono::Duration::from_std(wait).unwrap_or_default()
            });
            if retry_at.is_some() {
                tracing::warn!(message.id = %message.id, attempt = message.attempts, error, "webhook delivery failed; retrying later");
            } else {
                tracing::error!(message.id = %message.id, attempts = message.attempts, error, "webhook delivery failed; giving up");
                metrics::counter!("servauth_webhooks_total", "outcome" => "failed").increment(1);
            }
            store
                .message_failed(message.id, retry_at, &error, now)
                .await
        }
    };
    if let Err(error) = recorded {
        tracing::warn!(message.id = %message.id, error = %error, "webhooks: recording a delivery failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks.md, "Signature scheme").
    #[test]
    fn signatures_follow_the_specification() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_default();
        let signed = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signed.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }
}
