//! The signing keys a server uses: loaded from the store at start, swapped atomically when
//! they are reloaded (periodically, and when a token names a key this server has not seen,
//! e.g. right after `servauth keys rotate` on another machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::Mutex;

use super::AccessTokens;
use super::tokens::generate_signing_key;
use crate::store::Store;

/// How often every server re-reads the keys, so that a rotation reaches all replicas.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// A token with an unknown `kid` makes a server reload at most this often.
const RELOAD_ON_UNKNOWN_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// What the keys are made from.
#[derive(Clone)]
pub struct KeySource {
    pub store: Arc<dyn Store>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: chrono::Duration,
    /// HS256 with this secret; `None`: EdDSA keys from the store.
    pub hs256_secret: Option<SecretString>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The current [`AccessTokens`], replaceable while requests use the previous one.
#[derive(Debug)]
pub struct SigningKeys {
    source: KeySource,
    current: ArcSwap<AccessTokens>,
    /// When the keys were last re-read; `None` until the first reload.
    last_reload: Mutex<Option<Instant>>,
}

impl SigningKeys {
    /// Loads the keys, creating the first signing key if there is none (atomically, so
    /// replicas starting together agree on one).
    pub async fn load(source: KeySource, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let tokens = build(&source, now, true).await?;
        Ok(Self {
            source,
            current: ArcSwap::from_pointee(tokens),
            last_reload: Mutex::new(None),
        })
    }

    /// The keys to sign and verify with now.
    pub fn current(&self) -> Arc<AccessTokens> {
        self.current.load_full()
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if self.source.hs256_secret.is_some() {
            return Ok(());
        }
        let tokens = build(&self.source, now, false).await?;
        if !self.current.load().same_keys(&tokens) {
            self.current.store(Arc::new(tokens));
        }
        *self.last_reload.lock().await = Some(Instant::now());
        Ok(())
    }

    /// Reloads unless that happened moments ago; `true` when it reloaded.
    pub async fn reload_for_unknown_key(&self, now: DateTime<Utc>) -> bool {
        {
            let last = self.last_reload.lock().await;
            if last.is_some_and(|last| last.elapsed() < RELOAD_ON_UNKNOWN_AT_MOST_EVERY) {
                return false;
            }
        }
        match self.reload(now).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reloading signing keys failed"
                );
                false
            }
        }
    }
}

/// Keys retired this long ago are still published: every token they signed has expired,
/// even one signed by a replica that had not reloaded yet.
fn retention(access_ttl: chrono::Duration) -> chrono::Duration {
    access_ttl + chrono::Duration::from_std(RELOAD_EVERY).unwrap_or_default() * 2
}

async fn build(
    source: &KeySource,
    now: DateTime<Utc>,
    create: bool,
) -> anyhow::Result<AccessTokens> {
    let (issuer, audience, ttl) = (
        source.issuer.clone(),
        source.audience.clone(),
        source.access_ttl,
    );
    if let Some(secret) = &source.hs256_secret {
        return Ok(AccessTokens::hs256(issuer, audience, ttl, secret));
    }
    let published = source.store.signing_keys(now - retention(ttl)).await?;
    let current = match published.iter().find(|key| key.retired_at.is_none()) {
        Some(current) => current.clone(),
        None if create => {
            source
                .store
                .ensure_signing_key(generate_signing_key(now)?)
                .await?
        }
        None => anyhow::bail!("no current signing key in the database"),
    };
    let mut published = published;
    if !published.iter().any(|key| key.kid == current.kid) {
        published.insert(0, current.clone());
    }
    Ok(AccessTokens::eddsa(
        issuer, audience, ttl, &current, &published,
    ))
}
