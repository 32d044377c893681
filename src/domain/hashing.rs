use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::Password;
use super::stored_hash::StoredHash;
use crate::config::Argon2Config;
use crate::telemetry::spawn_blocking_in_span;

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the queue is full: answer 503 at once.
    #[error("password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Argon2id hashing on a bounded pool, never on the async workers.
///
/// At most `workers` hashes run at once (each holds `m` KiB, so memory stays bounded), at
/// most `queue` more wait for a worker, and beyond that a call fails at once with
/// [`HashError::Overloaded`] rather than letting latency grow without bound.
#[derive(Clone)]
pub struct PasswordHashing {
    argon2: Argon2<'static>,
    /// Permits for running or waiting: `workers + queue`.
    admission: Arc<Semaphore>,
    /// Permits for running: `workers`.
    workers: Arc<Semaphore>,
    /// A hash of a random password with the current parameters: verifying an unknown
    /// account's login against it costs what a real verification costs.
    dummy_hash: Arc<str>,
    /// The parameters new hashes get (a stored hash with others is re-hashed on login).
    params: Argon2Config,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash is of another kind or has other parameters than new hashes get.
    pub needs_rehash: bool,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing")
            .field("workers", &self.workers.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHashing {
    /// Builds the pool; computes the dummy hash once (one hash of start-up time).
    pub fn new(config: Argon2Config, workers: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|error| HashError::Failed(error.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0_u8; 32];
        rand::fill(&mut random);
        let dummy_hash = argon2
            .hash_password(&random)
            .map_err(|error| HashError::Failed(error.to_string()))?
            .to_string();
        let workers = workers.max(1);
        Ok(Self {
            argon2,
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            dummy_hash: dummy_hash.into(),
            params: config,
        })
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.run(move |argon2| {
            argon2
                .hash_password(password.expose().as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|error| HashError::Failed(error.to_string()))
        })
        .await?
    }

    /// Verifies a password against a stored hash (ours, or an imported argon2, scrypt or
    /// bcrypt hash), or, when there is no account, against the dummy hash (never a match)
    /// so that both cases cost the same. An unusable stored hash (unknown kind, or a cost
    /// beyond the bounds) never matches and is logged.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let stored = match StoredHash::parse(&stored, self.params) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(error = %error, "stored password hash cannot be verified");
                return Ok(Verification::default());
            }
        };
        let needs_rehash = stored.needs_rehash();
        let matches = self
            .run(move |_| stored.verify(password.expose().as_bytes()))
            .await?;
        Ok(Verification {
            matches: known && matches,
            needs_rehash,
        })
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&Argon2<'static>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let Ok(_admitted) = self.admission.clone().try_acquire_owned() else {
            metrics::counter!("servauth_password_hash_rejected_total").increment(1);
            return Err(HashError::Overloaded);
        };
        let queued = Instant::now();
        metrics::gauge!("servauth_password_hash_queue_depth").increment(1.0);
        let running = self.workers.clone().acquire_owned().await;
        metrics::gauge!("servauth_password_hash_queue_depth").decrement(1.0);
        metrics::histogram!("servauth_password_hash_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        let _running = running.map_err(|_| HashError::Failed("hashing pool closed".to_owned()))?;
        let argon2 = self.argon2.clone();
        let started = Instant::now();
        let result = spawn_blocking_in_span(move || work(&argon2))
            .await
            .map_err(|error| HashError::Failed(error.to_string()));
        metrics::histogram!("servauth_password_hash_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let pool = PasswordHashing::new(cheap(), 2, 4).unwrap();
        let hash = pool
            .hash(Password::for_verification("a long passphrase"))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        let ok = pool.verify(
            Password::for_verification("a long passphrase"),
            Some(hash.clone()),
        );
        assert_eq!(
            ok.await.unwrap(),
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = pool.verify(Password::for_verification("A long passphrase"), Some(hash));
        assert!(!wrong.await.unwrap().matches);
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let pool = PasswordHashing::new(cheap(), 1, 1).unwrap();
        let verified = pool
            .verify(Password::for_verification(""), None)
            .await
            .unwrap();
        assert!(!verified.matches);
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_at_once() {
        let pool = PasswordHashing::new(cheap(), 1, 0).unwrap();
        // Hold the only admission permit, as a running hash would.
        let _busy = pool.admission.clone().try_acquire_owned().unwrap();
        let result = pool
            .hash(Password::for_verification("whatever it is"))
            .await;
        assert!(matches!(result, Err(HashError::Overloaded)));
    }
}
