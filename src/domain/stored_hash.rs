//! Password hashes as stored: ours (Argon2id, PHC string) and the ones imported from other
//! systems (argon2 with other parameters, scrypt in PHC form, bcrypt `$2a$`/`$2b$`/`$2y$`).
//! Every kind verifies; any but an Argon2id hash with the current parameters asks to be
//! re-hashed after the next successful login.
//!
//! Parameters are bounded before any work: an imported hash with a huge cost would let one
//! login spend gigabytes or minutes (a denial of service), so such hashes never verify.

use argon2::password_hash::PasswordVerifier as _;
use password_hash::phc::PasswordHash;

use crate::config::Argon2Config;

/// Bounds for imported hashes (our own current parameters are always allowed).
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
const MAX_ARGON2_ITERATIONS: u32 = 10;
const MAX_ARGON2_PARALLELISM: u32 = 4;
const MAX_SCRYPT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
const MAX_BCRYPT_COST: u32 = 15;

/// A stored hash of a known kind, within bounds.
#[derive(Debug)]
pub enum StoredHash {
    Argon2 { hash: String, current: bool },
    Scrypt(String),
    Bcrypt(String),
}

/// Why a stored hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredHashError {
    #[error("not an argon2, scrypt or bcrypt hash")]
    Unknown,
    #[error("hash parameters beyond the accepted bounds")]
    TooCostly,
}

impl StoredHash {
    /// Recognizes a stored hash and checks its cost against the bounds (`current` are the
    /// parameters new hashes get).
    pub fn parse(stored: &str, current: Argon2Config) -> Result<Self, StoredHashError> {
        if let Some(cost) = bcrypt_cost(stored) {
            return if cost <= MAX_BCRYPT_COST {
                Ok(Self::Bcrypt(stored.to_owned()))
            } else {
                Err(StoredHashError::TooCostly)
            };
        }
        let parsed = PasswordHash::new(stored).map_err(|_| StoredHashError::Unknown)?;
        let decimal = |name: &str| parsed.params.get_decimal(name);
        match parsed.algorithm.as_str() {
            "argon2id" | "argon2i" | "argon2d" => {
                let (m, t, p) = (decimal("m"), decimal("t"), decimal("p"));
                let (Some(m), Some(t), Some(p)) = (m, t, p) else {
                    return Err(StoredHashError::Unknown);
                };
                let within = (m <= MAX_ARGON2_MEMORY_KIB.max(current.memory_kib))
                    && (t <= MAX_ARGON2_ITERATIONS.max(current.iterations))
                    && (p <= MAX_ARGON2_PARALLELISM.max(current.parallelism));
                if !within {
                    return Err(StoredHashError::TooCostly);
                }
                let is_current = parsed.algorithm.as_str() == "argon2id"
                    && parsed.version == Some(0x13)
                    && (m, t, p) == (current.memory_kib, current.iterations, current.parallelism);
                Ok(Self::Argon2 {
                    hash: stored.to_owned(),
                    current: is_current,
                })
            }
            "scrypt" => {
                let (Some(log_n), Some(r), Some(p)) = (decimal("ln"), decimal("r"), decimal("p"))
                else {
                    return Err(StoredHashError::Unknown);
                };
                let memory = 1_u64
                    .checked_shl(log_n)
                    .and_then(|n| n.checked_mul(128 * u64::from(r)))
                    .ok_or(StoredHashError::TooCostly)?;
                if memory > MAX_SCRYPT_MEMORY_BYTES || p > 4 || log_n > 24 {
                    return Err(StoredHashError::TooCostly);
                }
                Ok(Self::Scrypt(stored.to_owned()))
            }
            _ => Err(StoredHashError::Unknown),
        }
    }

    /// Whether the password matches. CPU- and memory-heavy: run it on the hashing pool.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Argon2 { hash, .. } => argon2::Argon2::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            Self::Scrypt(hash) => PasswordHash::new(hash).is_ok_and(|parsed| {
                scrypt::Scrypt::new()
                    .verify_password(password, &parsed)
                    .is_ok()
            }),
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }

    /// Whether a successful login should replace this hash with one of the current kind.
    pub fn needs_rehash(&self) -> bool {
        !matches!(self, Self::Argon2 { current: true, .. })
    }
}

/// The cost of a bcrypt hash (`$2a$12$…`, also `$2b$`/`$2x$`/`$2y$`), if it is one.
fn bcrypt_cost(stored: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .find_map(|prefix| stored.strip_prefix(prefix))?;
    let (cost, body) = rest.split_once('$')?;
    (cost.len() == 2 && body.len() == 53)
        .then(|| cost.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordHasher as _;

    use super::*;

    const CURRENT: Argon2Config = Argon2Config {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn argon2_hash(m: u32, t: u32, p: u32, password: &str) -> String {
        let params = argon2::Params::new(m, t, p, None).unwrap();
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon2
            .hash_password(password.as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn our_current_argon2_hash_needs_no_rehash() {
        let stored = StoredHash::parse(&argon2_hash(64, 1, 1, "pw"), CURRENT).unwrap();
        assert!(stored.verify(b"pw") && !stored.verify(b"PW"));
        assert!(!stored.needs_rehash());
    }

    #[test]
    fn argon2_with_other_parameters_verifies_and_asks_for_a_rehash() {
        let stored = StoredHash::parse(&argon2_hash(128, 2, 1, "pw"), CURRENT).unwrap();
        assert!(stored.verify(b"pw"));
        assert!(stored.needs_rehash());
    }

    #[test]
    fn bcrypt_and_scrypt_verify_and_ask_for_a_rehash() {
        let bcrypt = bcrypt::hash("pw", 4).unwrap();
        let stored = StoredHash::parse(&bcrypt, CURRENT).unwrap();
        assert!(stored.verify(b"pw") && !stored.verify(b"pX") && stored.needs_rehash());
        // A PHC scrypt hash (ln=4 keeps the test cheap).
        let params = scrypt::Params::new(4, 8, 1).unwrap();
        let scrypt_hash = <scrypt::Scrypt as password_hash::CustomizedPasswordHasher<
            PasswordHash,
        >>::hash_password_with_params(
            &scrypt::Scrypt::new(),
            b"password",
            b"saltsaltsaltsalt",
            params,
        )
        .unwrap()
        .to_string();
        let stored = StoredHash::parse(&scrypt_hash, CURRENT).unwrap();
        assert!(stored.verify(b"password") && !stored.verify(b"passw0rd") && stored.needs_rehash());
    }

    #[test]
    fn costly_or_unknown_hashes_are_refused_before_any_work() {
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(
            StoredHash::parse(huge, CURRENT).unwrap_err(),
            StoredHashError::TooCostly
        );
        let slow_bcrypt = format!("$2b$31${}", "a".repeat(53));
        assert_eq!(
            StoredHash::parse(&slow_bcrypt, CURRENT).unwrap_err(),
            StoredHashError::TooCostly
        );
        let scrypt = "$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert_eq!(
            StoredHash::parse(scrypt, CURRENT).unwrap_err(),
            StoredHashError::TooCostly
        );
        for unknown in [
            "",
            "plaintext",
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
            "$1$md5$x",
        ] {
            assert_eq!(
                StoredHash::parse(unknown, CURRENT).unwrap_err(),
                StoredHashError::Unknown
            );
        }
    }
}
