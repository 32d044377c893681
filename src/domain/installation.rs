//! Keys of this installation, derived from one random secret that the first server to start
//! stores in the database (every replica then reads the same): the key that signs device
//! tokens, and the key that turns an address into the account identifier written to logs.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use uuid::Uuid;

use crate::store::Store;

type HmacSha256 = Hmac<Sha256>;

/// The name of the secret in the store.
const SECRET_NAME: &str = "installation/v1";
/// How long a device token vouches for its device.
pub const DEVICE_TOKEN_TTL: Duration = Duration::days(90);
/// A device token issued this far in the future (clock skew between replicas) still counts.
const ISSUED_AT_SKEW: Duration = Duration::minutes(5);

/// Layout of a device token before base64url: version, user id, issue time, random id.
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 16 + 8 + 16;
const TAG_LEN: usize = 32;

/// The keys derived from the installation secret.
#[derive(Clone)]
pub struct InstallationKeys {
    device: [u8; 32],
    account_ids: [u8; 32],
    factor_secrets: [u8; 32],
}

impl std::fmt::Debug for InstallationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallationKeys([redacted])")
    }
}

/// A device token that verified: the account it was issued to and the device's id (what its
/// own failure count is kept under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user_id: Uuid,
    pub id: String,
}

impl InstallationKeys {
    /// Reads the installation secret, creating it on the first start (atomically: replicas
    /// starting together agree on one).
    pub async fn load(store: &Arc<dyn Store>, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let mut candidate = [0_u8; 32];
        rand::fill(&mut candidate);
        let secret = store.ensure_secret(SECRET_NAME, &candidate, now).await?;
        Ok(Self::from_secret(&secret))
    }

    /// The keys of a secret: one HMAC per purpose, so the purposes never share a key.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            device: derive(secret, b"servauth/device-token/v1"),
            account_ids: derive(secret, b"servauth/log-account-id/v1"),
            factor_secrets: derive(secret, b"servauth/factor-secrets/v1"),
        }
    }

    /// The key that seals TOTP secrets when no key encryption key is set.
    pub fn factor_key(&self) -> super::KeyEncryptionKey {
        super::KeyEncryptionKey::from_bytes(self.factor_secrets)
    }

    /// The identifier of an account (by its email comparison key) in log lines: the same for
    /// the same address, whether or not an account has it, on every replica, and useless
    /// without the installation secret (the address cannot be read back or guessed from it).
    pub fn account_id(&self, email_key: &str) -> String {
        let tag = mac(&self.account_ids, email_key.as_bytes());
        tag.iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// A new device token for a client that just proved it knows the account's password.
    pub fn issue_device_token(&self, user_id: Uuid, now: DateTime<Utc>) -> String {
        let mut nonce = [0_u8; 16];
        rand::fill(&mut nonce);
        let mut token = Vec::with_capacity(PAYLOAD_LEN + TAG_LEN);
        token.push(VERSION);
        token.extend_from_slice(user_id.as_bytes());
        token.extend_from_slice(&now.timestamp().to_be_bytes());
        token.extend_from_slice(&nonce);
        let tag = mac(&self.device, &token);
        token.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The device a token stands for, if it is one we issued (tag checked in constant time)
    /// and it has not expired. Anything else — malformed, forged, expired — is `None`.
    pub fn verify_device_token(&self, token: &str, now: DateTime<Utc>) -> Option<Device> {
        if token.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != PAYLOAD_LEN + TAG_LEN {
            return None;
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        let mut check = HmacSha256::new_from_slice(&self.device).ok()?;
        check.update(payload);
        check.verify_slice(tag).ok()?;
        let (&version, rest) = payload.split_first()?;
        let (user, rest) = rest.split_at_checked(16)?;
        let (issued, nonce) = rest.split_at_checked(8)?;
        let issued_at = DateTime::from_timestamp(i64::from_be_bytes(issued.try_into().ok()?), 0)?;
        let fresh = issued_at <= now + ISSUED_AT_SKEW && now < issued_at + DEVICE_TOKEN_TTL;
        (version == VERSION && fresh).then(|| Device {
            user_id: Uuid::from_slice(user).unwrap_or_default(),
            id: URL_SAFE_NO_PAD.encode(nonce),
        })
    }
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    mac(secret, label)
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this never fails; the fallback is unreachable.
    let Ok(mut hmac) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    hmac.update(message);
    hmac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> InstallationKeys {
        InstallationKeys::from_secret(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_device_token_verifies_for_its_account_until_it_expires() {
        let (keys, user, now) = (keys(), Uuid::now_v7(), Utc::now());
        let token = keys.issue_device_token(user, now);
        let device = keys.verify_device_token(&token, now).unwrap();
        assert_eq!(device.user_id, user);
        assert_eq!(keys.verify_device_token(&token, now).unwrap().id, device.id);
        assert_ne!(
            keys.verify_device_token(&keys.issue_device_token(user, now), now)
                .unwrap()
                .id,
            device.id,
            "each token is its own device"
        );
        let later = now + DEVICE_TOKEN_TTL + Duration::seconds(1);
        assert_eq!(keys.verify_device_token(&token, later), None);
    }

    #[test]
    fn forged_truncated_or_foreign_tokens_are_no_device() {
        let (keys, now) = (keys(), Utc::now());
        let token = keys.issue_device_token(Uuid::now_v7(), now);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[2] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        let other = InstallationKeys::from_secret(b"another secret of this length....");
        for bad in [
            forged.as_str(),
            &token[..token.len() - 2],
            "",
            "not base64!",
            &other.issue_device_token(Uuid::now_v7(), now),
        ] {
            assert_eq!(keys.verify_device_token(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn account_ids_are_stable_keyed_and_short() {
        let keys = keys();
        let id = keys.account_id("ada@example.com");
        assert_eq!(id.len(), 16);
        assert_eq!(id, keys.account_id("ada@example.com"));
        assert_ne!(id, keys.account_id("bob@example.com"));
        let other = InstallationKeys::from_secret(b"another secret");
        assert_ne!(id, other.account_id("ada@example.com"));
    }
}
