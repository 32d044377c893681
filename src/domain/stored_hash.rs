//! Password hashes as stored: ours (Argon2id, PHC string) and the ones imported from other
//! systems (argon2 with other parameters, scrypt in PHC form, bcrypt `$2a$`/`$2b$`/`$2y$`,
//! Better Auth's own scrypt format `<saltHex>:<keyHex>`). Every kind verifies; any but an
//! Argon2id hash with the current parameters asks to be re-hashed after the next successful
//! login.
//!
//! Parameters are bounded before any work: an imported hash with a huge cost would let one
//! login spend gigabytes or minutes (a denial of service), so such hashes never verify.

use argon2::password_hash::PasswordVerifier as _;
use password_hash::phc::PasswordHash;
use subtle::ConstantTimeEq as _;

use crate::config::Argon2Config;

/// Bounds for imported hashes (our own current parameters are always allowed).
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
const MAX_ARGON2_ITERATIONS: u32 = 10;
const MAX_ARGON2_PARALLELISM: u32 = 4;
const MAX_SCRYPT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
const MAX_BCRYPT_COST: u32 = 15;
/// bcrypt hashes at most this many bytes of a password.
const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;

/// Better Auth's scrypt parameters (`better-auth/crypto`, `@better-auth/utils/password`):
/// N = 2^14, r = 16, p = 1, a 64-byte key. Its hashes carry no parameters, so these are the
/// only ones ever used: the cost of verifying one is fixed (32 MiB, 128·N·r bytes, for one
/// scrypt run, about what `ln=15,r=8` costs) and bounded by construction, well within
/// [`MAX_SCRYPT_MEMORY_BYTES`]; no stored value can raise it.
const BETTER_AUTH_SCRYPT_LOG_N: u8 = 14;
const BETTER_AUTH_SCRYPT_R: u32 = 16;
const BETTER_AUTH_SCRYPT_P: u32 = 1;
const BETTER_AUTH_KEY_BYTES: usize = 64;
/// 16 random bytes, stored hex-encoded: 32 characters.
const BETTER_AUTH_SALT_HEX_CHARS: usize = 32;

/// A stored hash of a known kind, within bounds.
#[derive(Debug)]
pub enum StoredHash {
    Argon2 {
        hash: String,
        current: bool,
    },
    Scrypt(String),
    Bcrypt(String),
    /// Better Auth's `"<saltHex>:<keyHex>"` (lowercase hex, 16-byte salt, 64-byte key).
    BetterAuth(BetterAuthHash),
}

/// A Better Auth password hash, parsed. Better Auth passes the salt to scrypt as the hex
/// *string* (its ASCII bytes, not the 16 bytes they encode), so the text is what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetterAuthHash {
    salt_hex: String,
    key: [u8; BETTER_AUTH_KEY_BYTES],
}

/// Why a stored hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredHashError {
    #[error("not an argon2, scrypt, bcrypt or Better Auth hash")]
    Unknown,
    #[error("hash parameters beyond the accepted bounds")]
    TooCostly,
}

impl StoredHash {
    /// Recognizes a stored hash and checks its cost against the bounds (`current` are the
    /// parameters new hashes get).
    pub fn parse(stored: &str, current: Argon2Config) -> Result<Self, StoredHashError> {
        // No PHC or bcrypt string has a `:`, and a Better Auth hash has nothing else: anything
        // of that shape but not exactly Better Auth's is no hash we know.
        if !stored.starts_with('$')
            && let Some((salt_hex, key_hex)) = stored.split_once(':')
        {
            return BetterAuthHash::parse(salt_hex, key_hex)
                .map(Self::BetterAuth)
                .ok_or(StoredHashError::Unknown);
        }
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
    ///
    /// `password` is the NFKC-normalized form ([`super::Password`]'s), the form every kind
    /// was hashed from (Better Auth too normalizes to NFKC before hashing), so it is not
    /// normalized again here.
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
            // bcrypt reads at most 72 bytes and ignores the rest, so `password + "anything"`
            // would match too: a longer password never matches. (Not the crate's
            // `non_truncating_verify`: that also refuses exactly 72 bytes, which bcrypt does
            // hash in full, so a 72-byte password set elsewhere could never log in.)
            Self::Bcrypt(hash) => {
                password.len() <= BCRYPT_MAX_PASSWORD_BYTES
                    && bcrypt::verify(password, hash).unwrap_or(false)
            }
            Self::BetterAuth(hash) => hash.verify(password),
        }
    }

    /// Whether a successful login should replace this hash with one of the current kind.
    pub fn needs_rehash(&self) -> bool {
        !matches!(self, Self::Argon2 { current: true, .. })
    }
}

impl BetterAuthHash {
    /// Exactly 32 and 128 lowercase hex digits (what Better Auth writes, and all that its
    /// own `verifyPassword` ever matches), or `None`.
    fn parse(salt_hex: &str, key_hex: &str) -> Option<Self> {
        let mut salt = [0_u8; BETTER_AUTH_SALT_HEX_CHARS / 2];
        let mut key = [0_u8; BETTER_AUTH_KEY_BYTES];
        let lengths = salt_hex.len() == BETTER_AUTH_SALT_HEX_CHARS
            && key_hex.len() == 2 * BETTER_AUTH_KEY_BYTES;
        // `lower::decode` refuses odd lengths, uppercase and non-hex characters.
        (lengths
            && base16ct::lower::decode(salt_hex, &mut salt).is_ok()
            && base16ct::lower::decode(key_hex, &mut key).is_ok())
        .then(|| Self {
            salt_hex: salt_hex.to_owned(),
            key,
        })
    }

    /// Better Auth's `verifyPassword`: scrypt of the password's UTF-8 bytes with the salt's
    /// hex text as salt, compared with the stored key in constant time.
    fn verify(&self, password: &[u8]) -> bool {
        let Ok(params) = scrypt::Params::new(
            BETTER_AUTH_SCRYPT_LOG_N,
            BETTER_AUTH_SCRYPT_R,
            BETTER_AUTH_SCRYPT_P,
        ) else {
            return false;
        };
        let mut derived = [0_u8; BETTER_AUTH_KEY_BYTES];
        scrypt::scrypt(password, self.salt_hex.as_bytes(), &params, &mut derived).is_ok()
            && bool::from(derived.as_slice().ct_eq(self.key.as_slice()))
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
    fn bcrypt_never_matches_a_password_longer_than_72_bytes() {
        let password = "x".repeat(71) + "y";
        assert_eq!(password.len(), 72);
        let stored = StoredHash::parse(&bcrypt::hash(&password, 4).unwrap(), CURRENT).unwrap();
        assert!(
            stored.verify(password.as_bytes()),
            "72 bytes are hashed in full"
        );
        for longer in [format!("{password}anything"), format!("{password}y")] {
            assert!(!stored.verify(longer.as_bytes()), "{longer:?}");
        }
        assert!(!stored.verify(&password.as_bytes()[..71]));
        // The same with a hash the bcrypt crate made of the longer password (it truncated).
        let truncated =
            StoredHash::parse(&bcrypt::hash("z".repeat(80), 4).unwrap(), CURRENT).unwrap();
        assert!(!truncated.verify("z".repeat(80).as_bytes()));
        assert!(truncated.verify("z".repeat(72).as_bytes()));
    }

    /// Made once by the real library: `npm install better-auth@1.7.25` (with it
    /// `@better-auth/utils` 0.5.1), then on node 20 `console.log(await hashPassword(password))`
    /// with `hashPassword` from `better-auth/crypto` (which is `@better-auth/utils/password`'s
    /// node implementation: `node:crypto` scrypt). Random salts: fixed vectors, pasted here.
    const BETTER_AUTH_ASCII: (&str, &str) = (
        "correct horse battery staple",
        "25a3f5acc0ec0100783a3f10a96791cd:dd8fad4b672749b08ea34a44e4ac038bcff434d00cc713e4e094cbc813e464728e8cc7eca22eb756cbdf8b2c5379dbf69bdbb8110d35c55af5a707559c974ec0",
    );
    /// The same password, hashed by `@better-auth/utils/password`'s `hashPassword` directly.
    const BETTER_AUTH_UTILS_ASCII: &str = "1f2d41736da082a4e7b786a880996b56:04a31e5c276b9336ccadb9bf1529352e04f7981254648256c5047dcc9b599fda099cf81fc0539272c333f259c6565f0321bedbbe5007f3a6a2eaea45d92b3c9c";
    /// The second was hashed from this password as typed in JavaScript, not NFKC-normalized
    /// first (Better Auth normalizes it): "Grüße ﬁ① Ångström" with U+FB01, U+2460 and
    /// U+212B ANGSTROM SIGN, whose NFKC is "Grüße fi1 Ångström".
    const BETTER_AUTH_NON_ASCII: (&str, &str) = (
        "Gr\u{FC}\u{DF}e \u{FB01}\u{2460} \u{212B}ngstr\u{F6}m",
        "2673146ed1a07e252652f1861d02ed31:e0639079ab2eefbed4798d104ac97a738564881551bf389ffd681fd14b444343cdee123c6de2c582f04fdbbcc5063892e8fcc046b2a07c2ac69a74b0bff58f2a",
    );

    /// What the hashing pool passes to [`StoredHash::verify`]: the NFKC form.
    fn typed(raw: &str) -> Vec<u8> {
        crate::domain::Password::for_verification(raw)
            .expose()
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn better_auth_hashes_verify_and_ask_for_a_rehash() {
        let (password, hash) = BETTER_AUTH_ASCII;
        for hash in [hash, BETTER_AUTH_UTILS_ASCII] {
            let stored = StoredHash::parse(hash, CURRENT).unwrap();
            assert!(matches!(stored, StoredHash::BetterAuth(_)));
            assert!(stored.verify(&typed(password)), "{hash}");
            assert!(stored.needs_rehash());
            for wrong in [
                "correct horse battery stapl",
                "Correct horse battery staple",
                "correct horse battery staple ",
                "",
            ] {
                assert!(!stored.verify(&typed(wrong)), "{wrong:?}");
            }
        }
    }

    #[test]
    fn a_better_auth_hash_of_a_non_ascii_password_verifies_in_any_unicode_form() {
        let (password, hash) = BETTER_AUTH_NON_ASCII;
        let stored = StoredHash::parse(hash, CURRENT).unwrap();
        // As typed, its NFKC form, and decomposed (NFD "u" + U+0308 etc.): one password.
        for form in [
            password,
            "Gr\u{FC}\u{DF}e fi1 \u{C5}ngstr\u{F6}m",
            "Gru\u{308}\u{DF}e \u{FB01}\u{2460} A\u{30A}ngstro\u{308}m",
        ] {
            assert!(stored.verify(&typed(form)), "{form:?}");
        }
        // The normalization is `Password`'s, done once: raw bytes that are not NFKC do not match.
        assert!(!stored.verify(password.as_bytes()));
        assert!(!stored.verify(&typed("Gr\u{FC}\u{DF}e fi1 Angstr\u{F6}m")));
        assert!(!stored.verify(&typed("Grüsse fi1 Ångström")));
    }

    #[test]
    fn better_auth_salts_are_their_hex_text_not_the_bytes_it_encodes() {
        let (password, hash) = BETTER_AUTH_ASCII;
        let (salt_hex, key_hex) = hash.split_once(':').unwrap();
        let params = scrypt::Params::new(14, 16, 1).unwrap();
        let key = base16ct::lower::decode_vec(key_hex).unwrap();
        let derive = |salt: &[u8]| {
            let mut derived = [0_u8; 64];
            scrypt::scrypt(password.as_bytes(), salt, &params, &mut derived).unwrap();
            derived.to_vec()
        };
        assert_eq!(derive(salt_hex.as_bytes()), key);
        assert_ne!(derive(&base16ct::lower::decode_vec(salt_hex).unwrap()), key);
    }

    #[test]
    fn malformed_better_auth_hashes_are_unknown() {
        let (_, hash) = BETTER_AUTH_ASCII;
        let (salt, key) = hash.split_once(':').unwrap();
        let malformed = [
            // Odd lengths, wrong lengths.
            format!("{}:{key}", &salt[1..]),
            format!("{salt}:{}", &key[1..]),
            format!("{}:{key}", &salt[2..]),
            format!("{salt}:{}", &key[2..]),
            format!("{salt}0:{key}"),
            format!("{salt}00:{key}"),
            format!("{salt}:{key}0"),
            format!("{salt}:{key}00"),
            format!("{salt}{salt}:{key}"),
            format!("{salt}:{}", &key[..64]),
            // Not hex, or not lowercase hex: Better Auth writes lowercase only, and its own
            // `verifyPassword` refuses uppercase too (node 20, checked with the vectors above;
            // the salt's case changes the salt, and the key is compared as lowercase text).
            format!("{}g:{key}", &salt[1..]),
            format!("{salt}:{}z", &key[1..]),
            format!("{}:{key}", salt.to_uppercase()),
            format!("{salt}:{}", key.to_uppercase()),
            format!("{salt}:{}A", &key[1..]),
            format!("{} :{key}", &salt[1..]),
            format!("{salt}:{}\n", &key[1..]),
            format!("{}é:{key}", &salt[2..]),
            // Missing parts, more parts, other separators, padding.
            format!("{salt}:"),
            format!(":{key}"),
            ":".to_owned(),
            format!("{salt}:{key}:"),
            format!("{salt}:{key}:{key}"),
            format!("{salt}::{key}"),
            format!("{salt}${key}"),
            format!(" {salt}:{key}"),
            format!("{salt}:{key} "),
            format!("$scrypt${salt}:{key}"),
        ];
        for stored in malformed {
            assert_eq!(
                StoredHash::parse(&stored, CURRENT).unwrap_err(),
                StoredHashError::Unknown,
                "{stored:?}"
            );
        }
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
