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
use crate::config::ConfigError;
use crate::store::{SigningKeyRecord, Store};

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
    /// Opens sealed private keys and seals the keys this server creates; `None`: keys are
    /// created in plain and a sealed one cannot be used.
    pub key_encryption_key: Option<KeyEncryptionKey>,
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
            let candidate = new_stored_signing_key(source.key_encryption_key.as_ref(), now)?;
            source.store.ensure_signing_key(candidate).await?
        }
        None => anyhow::bail!("no current signing key in the database"),
    };
    let mut published = published;
    if !published.iter().any(|key| key.kid == current.kid) {
        published.insert(0, current.clone());
    }
    // Only the current key signs; the others are published by their public part alone.
    let kek = source.key_encryption_key.as_ref();
    let private_key =
        open_private_key(kek, &current.kid, &current.private_key).map_err(|error| {
            ConfigError::new(
                "SERVAUTH_KEY_ENCRYPTION_KEY",
                format!(
                    "the signing key {} is stored sealed and {}",
                    current.kid,
                    match error {
                        OpenKeyError::NoKey => "this setting is not set",
                        OpenKeyError::WrongKey => "does not open with this setting's key",
                    }
                ),
            )
        })?;
    if create && !is_sealed(&current.private_key) {
        if kek.is_some() {
            tracing::warn!(
                kid = %current.kid,
                "the signing key is stored in plain: run `servauth keys encrypt` to seal it"
            );
        } else {
            tracing::warn!(
                "private signing keys are stored in plain: set SERVAUTH_KEY_ENCRYPTION_KEY \
                 and run `servauth keys encrypt` to seal them"
            );
        }
    }
    let current = SigningKeyRecord {
        private_key,
        ..current
    };
    Ok(AccessTokens::eddsa(
        issuer, audience, ttl, &current, &published,
    ))
}

/// A new signing key as it is to be stored: its private part sealed under `key` when there
/// is one.
pub fn new_stored_signing_key(
    key: Option<&KeyEncryptionKey>,
    now: DateTime<Utc>,
) -> anyhow::Result<SigningKeyRecord> {
    let mut record = generate_signing_key(now)?;
    if let Some(key) = key {
        record.private_key = key.seal(&record.kid, &record.private_key)?;
    }
    Ok(record)
}

/// The key that seals private signing keys at rest (`SERVAUTH_KEY_ENCRYPTION_KEY`): 32
/// bytes. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; 32]);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

/// What starts a sealed private key, so that it can never be taken for PKCS#8 DER (which
/// starts with a SEQUENCE tag, `0x30`); the version lets the format change later.
const SEALED_PREFIX: &[u8] = b"servauth-sealed-v1:";
const NONCE_LEN: usize = 12;

/// Why a stored private key could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenKeyError {
    /// The key is sealed and no key encryption key was given.
    #[error("the key is sealed and no key encryption key is set")]
    NoKey,
    /// Sealed under another key, or damaged.
    #[error("the key does not open with the key encryption key given")]
    WrongKey,
}

impl KeyEncryptionKey {
    /// A key of these bytes (a key derived for another purpose, such as factor secrets).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// 32 bytes written as 64 hex digits or as base64 (standard or URL-safe, padded or not).
    /// The error never repeats the value.
    pub fn parse(value: &str) -> Result<Self, String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let value = value.trim();
        let bytes = if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|at| u8::from_str_radix(&value[2 * at..2 * at + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(value).ok())
        };
        bytes
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Self)
            .ok_or_else(|| {
                "expected 32 bytes as base64 or 64 hex digits (e.g. `openssl rand -base64 32`)"
                    .to_owned()
            })
    }

    /// Seals a private key (PKCS#8 DER): the version prefix, a random nonce, and the
    /// ChaCha20-Poly1305 ciphertext with `kid` as associated data, so a sealed key moved to
    /// another key's row does not open.
    pub fn seal(&self, kid: &str, private_key: &[u8]) -> anyhow::Result<Vec<u8>> {
        use chacha20poly1305::aead::{Aead as _, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Nonce};
        let mut nonce = [0_u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let cipher = ChaCha20Poly1305::new_from_slice(&self.0)
            .map_err(|_| anyhow::anyhow!("key encryption key of the wrong length"))?;
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: private_key,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing the signing key failed"))?;
        Ok([SEALED_PREFIX, nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`Self::seal`] sealed for `kid`.
    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenKeyError> {
        use chacha20poly1305::aead::{Aead as _, Payload};
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Nonce};
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(OpenKeyError::WrongKey)?;
        let (nonce, ciphertext) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(OpenKeyError::WrongKey)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenKeyError::WrongKey)?;
        let cipher =
            ChaCha20Poly1305::new_from_slice(&self.0).map_err(|_| OpenKeyError::WrongKey)?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| OpenKeyError::WrongKey)
    }
}

/// Whether a stored private key is sealed (else it is PKCS#8 DER in plain).
pub fn is_sealed(private_key: &[u8]) -> bool {
    private_key.starts_with(SEALED_PREFIX)
}

/// The PKCS#8 DER of a stored private key: a plain one as it is, a sealed one opened with
/// `key`.
pub fn open_private_key(
    key: Option<&KeyEncryptionKey>,
    kid: &str,
    stored: &[u8],
) -> Result<Vec<u8>, OpenKeyError> {
    if !is_sealed(stored) {
        return Ok(stored.to_vec());
    }
    key.ok_or(OpenKeyError::NoKey)?.open(kid, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey([byte; 32])
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_kid() {
        let plain = b"0\x2e pkcs8 private key bytes".to_vec();
        let sealed = kek(1).seal("kid-a", &plain).unwrap();
        assert!(is_sealed(&sealed) && !is_sealed(&plain));
        assert!(!sealed.windows(plain.len()).any(|w| w == plain.as_slice()));
        assert_eq!(
            open_private_key(Some(&kek(1)), "kid-a", &sealed),
            Ok(plain.clone())
        );
        assert_eq!(
            open_private_key(Some(&kek(2)), "kid-a", &sealed),
            Err(OpenKeyError::WrongKey)
        );
        assert_eq!(
            open_private_key(Some(&kek(1)), "kid-b", &sealed),
            Err(OpenKeyError::WrongKey)
        );
        assert_eq!(
            open_private_key(None, "kid-a", &sealed),
            Err(OpenKeyError::NoKey)
        );
        assert_eq!(open_private_key(None, "kid-a", &plain), Ok(plain));
        assert_ne!(
            sealed,
            kek(1)
                .seal("kid-a", b"0\x2e pkcs8 private key bytes")
                .unwrap(),
            "random nonce"
        );
    }

    #[test]
    fn the_key_debug_shows_nothing() {
        assert_eq!(format!("{:?}", kek(7)), "KeyEncryptionKey([redacted])");
    }
}
