use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::AuthError;

/// The shared secret other services present as `X-Service-Auth`. Compared in constant time
/// over SHA-256 digests, so neither the content nor the length of the secret leaks through
/// timing.
#[derive(Clone)]
pub struct ServiceSecret {
    digest: [u8; 32],
}

impl std::fmt::Debug for ServiceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceSecret([redacted])")
    }
}

impl ServiceSecret {
    pub fn new(secret: &SecretString) -> Self {
        Self {
            digest: Sha256::digest(secret.expose_secret().as_bytes()).into(),
        }
    }

    /// `MissingCredentials` when nothing (or an empty value) was sent, `InvalidToken` when
    /// the value is wrong.
    pub fn check(&self, presented: Option<&str>) -> Result<(), AuthError> {
        let presented = presented
            .filter(|value| !value.is_empty())
            .ok_or(AuthError::MissingCredentials)?;
        let digest = Sha256::digest(presented.as_bytes());
        if bool::from(digest.as_slice().ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_passes() {
        let secret = ServiceSecret::new(&SecretString::from("s3cret-s3cret-s3cret-s3cret-s3cret"));
        assert!(
            secret
                .check(Some("s3cret-s3cret-s3cret-s3cret-s3cret"))
                .is_ok()
        );
        assert!(matches!(
            secret.check(Some("s3cret")),
            Err(AuthError::InvalidToken)
        ));
        assert!(matches!(
            secret.check(Some("")),
            Err(AuthError::MissingCredentials)
        ));
        assert!(matches!(
            secret.check(None),
            Err(AuthError::MissingCredentials)
        ));
        assert_eq!(format!("{secret:?}"), "ServiceSecret([redacted])");
    }
}
