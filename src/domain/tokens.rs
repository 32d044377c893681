use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{Role, SessionRecord, SigningKeyRecord};

/// `typ` of our access tokens (RFC 9068).
const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock leeway on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: i64 = 30;
/// How many verified tokens [`AccessTokens`] remembers (about 250 bytes each).
const VERIFIED_CACHE_CAPACITY: usize = 50_000;

/// The `amr` of a session opened by a password sign-in (RFC 8176), the only kind so far.
pub const AMR_PASSWORD: &str = "pwd";

/// What a recently issued token says: session, user, role, verified, authentication time.
type RecentKey = (Uuid, Uuid, Role, bool, i64);

/// How long, in seconds, [`AccessTokens::issue_recent`] answers a token it signed again.
const RECENT_TOKEN_REUSE: i64 = 30;

/// The claims of an access token (RFC 9068 plus `sid`, `role` and `email_verified`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub sid: Uuid,
    pub role: Role,
    /// Whether the user's address was verified when the token was issued (OpenID Connect's
    /// claim name). Absent in tokens of earlier versions: read as `false`.
    #[serde(default)]
    pub email_verified: bool,
    /// When the user authenticated for this session (OpenID Connect's `auth_time`, seconds
    /// since the Unix epoch): the sign-in that opened it, kept across refreshes. Absent in
    /// tokens of earlier versions: read as `0` (unknown, so never fresh).
    #[serde(default)]
    pub auth_time: i64,
    /// How the user authenticated (RFC 8176 `amr` values): `["pwd"]` for a password sign-in.
    /// Absent in tokens of earlier versions: read as empty.
    #[serde(default)]
    pub amr: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    /// Signed with a `kid` this verifier does not know: maybe a key newer than what it
    /// loaded, so the caller may reload the keys and try once more.
    #[error("unknown signing key")]
    UnknownKey,
}

/// Issues and verifies access tokens. Exactly one algorithm is accepted: EdDSA with the
/// keys from the database (by `kid`), or HS256 with the configured secret. Keys are never
/// taken from the token (`jwk`, `jku`, `x5u`, `x5c` make a token invalid, as does a `crit`
/// extension we cannot honour) nor fetched.
pub struct AccessTokens {
    issuer: String,
    audience: String,
    ttl: Duration,
    algorithm: Algorithm,
    signing_key: EncodingKey,
    signing_kid: Option<String>,
    /// EdDSA: public keys by `kid`. HS256: the one secret under the empty kid.
    verifying_keys: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    validation: Validation,
    /// Claims of tokens whose header and signature verified with these keys, by the SHA-256
    /// of the token: a token seen again skips the signature check (Ed25519 verification was
    /// a quarter of the CPU of a token check), not the time checks. Only tokens that verified
    /// get in, so it cannot be filled without valid tokens; it is bounded all the same, and
    /// it goes with these keys when they change.
    verified: quick_cache::sync::Cache<[u8; 32], AccessClaims>,
    /// Tokens recently issued by [`Self::issue_recent`], by what they say (session, user,
    /// role, verified), with when they were signed.
    recent: quick_cache::sync::Cache<RecentKey, (String, i64)>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("algorithm", &self.algorithm)
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// EdDSA: `current` signs; `published` (current included) verify and form the JWKS.
    pub fn eddsa(
        issuer: String,
        audience: String,
        ttl: Duration,
        current: &SigningKeyRecord,
        published: &[SigningKeyRecord],
    ) -> Self {
        let verifying_keys = published
            .iter()
            .map(|key| (key.kid.clone(), DecodingKey::from_ed_der(&key.public_key)))
            .collect();
        let keys: Vec<serde_json::Value> = published
            .iter()
            .map(|key| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                    "kid": key.kid, "x": URL_SAFE_NO_PAD.encode(&key.public_key),
                })
            })
            .collect();
        Self::new(
            issuer,
            audience,
            ttl,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(&current.private_key),
            Some(current.kid.clone()),
            verifying_keys,
            serde_json::json!({ "keys": keys }),
        )
    }

    /// HS256 with a shared secret; the JWKS is empty (a secret is never published).
    pub fn hs256(issuer: String, audience: String, ttl: Duration, secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let verifying_keys = HashMap::from([(String::new(), DecodingKey::from_secret(secret))]);
        Self::new(
            issuer,
            audience,
            ttl,
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            None,
            verifying_keys,
            serde_json::json!({ "keys": [] }),
        )
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "private constructor behind two named ones"
    )]
    fn new(
        issuer: String,
        audience: String,
        ttl: Duration,
        algorithm: Algorithm,
        signing_key: EncodingKey,
        signing_kid: Option<String>,
        verifying_keys: HashMap<String, DecodingKey>,
        jwks: serde_json::Value,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        // Expiry is checked against the injected clock below, not the system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        Self {
            issuer,
            audience,
            ttl,
            algorithm,
            signing_key,
            signing_kid,
            verifying_keys,
            jwks,
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
            recent: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
        }
    }

    /// Whether `other` signs and verifies with exactly the keys of `self` (then a reload
    /// keeps `self`, and what it has verified).
    pub fn same_keys(&self, other: &Self) -> bool {
        let mut mine: Vec<&String> = self.verifying_keys.keys().collect();
        let mut theirs: Vec<&String> = other.verifying_keys.keys().collect();
        mine.sort_unstable();
        theirs.sort_unstable();
        self.algorithm == other.algorithm && self.signing_kid == other.signing_kid && mine == theirs
    }

    /// Lifetime of the tokens issued.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The public JWK Set.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Signs an access token for a session of `user`.
    pub fn issue_for(
        &self,
        user: &crate::store::UserRecord,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = self.claims_for(user, session, now);
        self.sign_claims(&claims)
    }

    /// As [`Self::issue_for`], but a token signed for the same session, user, role and
    /// verification less than [`RECENT_TOKEN_REUSE`] ago is answered again instead of a new
    /// signature: the Better Auth face's `get-session` hands one out on every call
    /// (`set-auth-jwt`), and Ed25519 signing was a quarter of that call's CPU. The caller has
    /// just checked the session is live; the token's `exp` is at most that much earlier than
    /// a fresh one's. Bounded, and gone with these keys when they change.
    pub fn issue_recent(
        &self,
        user: &crate::store::UserRecord,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        // The authentication time too: a re-authentication changes what the token says.
        let key = (
            session.id,
            user.id,
            user.role,
            user.email_verified,
            session.auth_time.timestamp(),
        );
        let at = now.timestamp();
        if let Some((token, issued)) = self.recent.get(&key)
            && (0..RECENT_TOKEN_REUSE).contains(&(at - issued))
        {
            return Ok(token);
        }
        let token = self.issue_for(user, session, now)?;
        self.recent.insert(key, (token.clone(), at));
        Ok(token)
    }

    /// Signs an access token for a session of an unverified user with this role.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = self.claims(user_id, session_id, role, false, now);
        self.sign_claims(&claims)
    }

    /// The claims an access token issued now for a session of `user` carries. The Better
    /// Auth face authenticates by session token, and its callers carry these unsigned.
    pub fn claims_for(
        &self,
        user: &crate::store::UserRecord,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> AccessClaims {
        AccessClaims {
            // The sign-in that opened the session, or the last re-authentication (refreshes
            // do not authenticate the user).
            auth_time: session.auth_time.timestamp(),
            amr: session.amr.clone(),
            ..self.claims(user.id, session.id, user.role, user.email_verified, now)
        }
    }

    fn claims(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
        email_verified: bool,
        now: DateTime<Utc>,
    ) -> AccessClaims {
        AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id,
            sid: session_id,
            role,
            email_verified,
            auth_time: now.timestamp(),
            amr: vec![AMR_PASSWORD.to_owned()],
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
            jti: Uuid::now_v7(),
        }
    }

    fn sign_claims(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid.clone_from(&self.signing_kid);
        jsonwebtoken::encode(&header, claims, &self.signing_key)
    }

    /// Verifies an access token's header, signature and claims at `now`. Whether its session
    /// is still live is the caller's question (see `Sessions::authenticate`).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified.get(&digest) {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signed(token)?;
                self.verified.insert(digest, claims.clone());
                claims
            }
        };
        let now = now.timestamp();
        if now > claims.exp.saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(LEEWAY_SECONDS) < claims.nbf {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The header and signature checks of [`Self::verify`], and the claims they vouch for.
    fn verify_signed(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        let embeds_key = header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.crit.is_some();
        if header.alg != self.algorithm || !typ_ok || embeds_key {
            return Err(TokenError::Invalid);
        }
        let kid = match self.algorithm {
            Algorithm::HS256 => "",
            _ => header.kid.as_deref().ok_or(TokenError::Invalid)?,
        };
        let key = self.verifying_keys.get(kid).ok_or(TokenError::UnknownKey)?;
        // `iat` is required by the claims' type: a token without it does not decode.
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)?;
        // A token living longer than this server issues was not made by its rules (a leaked
        // signing key minting long-lived tokens): refused, whatever its signature.
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_seconds() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The longest `exp - iat` of the tokens issued: the TTL, rounded up to whole seconds.
    fn max_lifetime_seconds(&self) -> i64 {
        let subsecond = self.ttl - Duration::seconds(self.ttl.num_seconds());
        self.ttl.num_seconds() + i64::from(subsecond > Duration::zero())
    }
}

/// A new Ed25519 signing key, its `kid` the RFC 7638 JWK thumbprint of its public key.
pub fn generate_signing_key(now: DateTime<Utc>) -> anyhow::Result<SigningKeyRecord> {
    let mut seed = [0_u8; 32];
    rand::fill(&mut seed);
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_key = signing_key.to_pkcs8_der()?.as_bytes().to_vec();
    let public_key = signing_key.verifying_key().to_bytes().to_vec();
    let thumbprint_input = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&public_key)
    );
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
    Ok(SigningKeyRecord {
        kid,
        algorithm: "EdDSA".to_owned(),
        private_key,
        public_key,
        created_at: now,
        retired_at: None,
    })
}

/// A new opaque secret token: 256 bits from the OS-seeded CSPRNG, base64url (43 chars).
pub fn opaque_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of an opaque token: its SHA-256 (it has 256 bits of entropy, so a plain
/// hash suffices; ASVS 6.5.2).
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eddsa_tokens() -> (AccessTokens, SigningKeyRecord) {
        let key = generate_signing_key(Utc::now()).unwrap();
        let tokens = AccessTokens::eddsa(
            "http://issuer".into(),
            "servauth".into(),
            Duration::minutes(15),
            &key,
            std::slice::from_ref(&key),
        );
        (tokens, key)
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let (tokens, _) = eddsa_tokens();
        let now = Utc::now();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let token = tokens.issue(user, session, Role::User, now).unwrap();
        let claims = tokens.verify(&token, now).unwrap();
        assert_eq!(
            (claims.sub, claims.sid, claims.exp),
            (user, session, now.timestamp() + 900)
        );
        assert!(
            tokens
                .verify(&token, now + Duration::seconds(900 + 30))
                .is_ok(),
            "leeway"
        );
        assert_eq!(
            tokens.verify(&token, now + Duration::seconds(931)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_recent_token_is_answered_again_only_for_the_same_claims_and_briefly() {
        let (tokens, _) = eddsa_tokens();
        let now = Utc::now();
        let user = crate::store::UserRecord {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            username: None,
            name: None,
            image: None,
            email_verified: false,
            role: Role::User,
            pending_email: None,
            created_at: now,
            updated_at: now,
            better_auth_id: None,
            ban: None,
        };
        let session = SessionRecord {
            id: Uuid::now_v7(),
            user_id: user.id,
            user_agent: None,
            ip: None,
            created_at: now - Duration::hours(2),
            last_used_at: now,
            expires_at: now + Duration::days(1),
            revoked_at: None,
            remember: true,
            auth_time: now - Duration::hours(2),
            amr: vec!["pwd".to_owned()],
        };
        let other = SessionRecord {
            id: Uuid::now_v7(),
            ..session.clone()
        };
        let first = tokens.issue_recent(&user, &session, now).unwrap();
        // It says when and how the user signed in: the session's start, by password.
        let claims = tokens.verify(&first, now).unwrap();
        assert_eq!(claims.auth_time, session.created_at.timestamp());
        assert_eq!(claims.amr, vec!["pwd".to_owned()]);
        let soon = now + Duration::seconds(RECENT_TOKEN_REUSE - 1);
        assert_eq!(tokens.issue_recent(&user, &session, soon).unwrap(), first);
        // Another session, a changed role or verification: a token of its own.
        assert_ne!(tokens.issue_recent(&user, &other, soon).unwrap(), first);
        let admin = crate::store::UserRecord {
            role: Role::Admin,
            ..user.clone()
        };
        let promoted = tokens.issue_recent(&admin, &session, soon).unwrap();
        assert_eq!(tokens.verify(&promoted, soon).unwrap().role, Role::Admin);
        let verified = crate::store::UserRecord {
            email_verified: true,
            ..user.clone()
        };
        let token = tokens.issue_recent(&verified, &session, soon).unwrap();
        assert!(tokens.verify(&token, soon).unwrap().email_verified);
        // Past the reuse window: signed afresh, with a later expiry.
        let later = now + Duration::seconds(RECENT_TOKEN_REUSE);
        let fresh = tokens.issue_recent(&user, &session, later).unwrap();
        assert_ne!(fresh, first);
        assert_eq!(
            tokens.verify(&fresh, later).unwrap().exp,
            later.timestamp() + 900
        );
    }

    #[test]
    fn a_remembered_token_still_gets_every_time_check() {
        let (tokens, _) = eddsa_tokens();
        let now = Utc::now();
        let token = tokens
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::User, now)
            .unwrap();
        assert!(tokens.verify(&token, now).is_ok());
        assert_eq!(tokens.verified.len(), 1, "verified once, remembered");
        // Before its nbf (beyond the leeway) and after its exp, the remembered claims fail.
        assert_eq!(
            tokens.verify(&token, now - Duration::seconds(31)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens.verify(&token, now + Duration::seconds(931)),
            Err(TokenError::Expired)
        );
        // A token that does not verify is not remembered.
        let mut forged = token;
        forged.pop();
        assert_eq!(tokens.verify(&forged, now), Err(TokenError::Invalid));
        assert_eq!(tokens.verified.len(), 1);
    }

    #[test]
    fn same_keys_compares_signing_and_verifying_keys() {
        let (tokens, key) = eddsa_tokens();
        let again = AccessTokens::eddsa(
            "http://issuer".into(),
            "servauth".into(),
            Duration::minutes(15),
            &key,
            std::slice::from_ref(&key),
        );
        assert!(tokens.same_keys(&again));
        let newer = generate_signing_key(Utc::now()).unwrap();
        let rotated = AccessTokens::eddsa(
            "http://issuer".into(),
            "servauth".into(),
            Duration::minutes(15),
            &newer,
            &[newer.clone(), key],
        );
        assert!(!tokens.same_keys(&rotated));
        let (other, _) = eddsa_tokens();
        assert!(!tokens.same_keys(&other));
    }

    #[test]
    fn the_jwks_publishes_only_public_parts() {
        let (tokens, key) = eddsa_tokens();
        let jwk = &tokens.jwks()["keys"][0];
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk.as_object().unwrap().len(), 6, "{jwk}");
        assert!(jwk.get("d").is_none());
    }

    #[test]
    fn hs256_tokens_are_refused_by_an_eddsa_verifier_and_back() {
        let (eddsa, _) = eddsa_tokens();
        let secret = SecretString::from("0123456789abcdef0123456789abcdef");
        let hs = AccessTokens::hs256(
            "http://issuer".into(),
            "servauth".into(),
            Duration::minutes(15),
            &secret,
        );
        let now = Utc::now();
        let hs_token = hs
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::User, now)
            .unwrap();
        assert!(hs.verify(&hs_token, now).is_ok());
        assert_eq!(eddsa.verify(&hs_token, now), Err(TokenError::Invalid));
        let ed_token = eddsa
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::User, now)
            .unwrap();
        assert_eq!(hs.verify(&ed_token, now), Err(TokenError::Invalid));
        assert!(hs.jwks()["keys"].as_array().unwrap().is_empty());
    }

    /// Signs `claims` with `key` as the server would, whatever they say.
    fn mint(key: &SigningKeyRecord, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&key.private_key)).unwrap()
    }

    #[test]
    fn tokens_living_longer_than_the_ttl_or_without_iat_are_refused() {
        let (tokens, key) = eddsa_tokens();
        let now = Utc::now().timestamp();
        let claims = |iat: Option<i64>, exp: i64| {
            let mut claims = serde_json::json!({
                "iss": "http://issuer", "aud": "servauth", "sub": Uuid::now_v7(),
                "sid": Uuid::now_v7(), "role": "user", "nbf": now, "exp": exp,
                "jti": Uuid::now_v7(),
            });
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            claims
        };
        let at = Utc::now();
        let within = mint(&key, &claims(Some(now), now + 900));
        assert!(tokens.verify(&within, at).is_ok(), "exactly the TTL");
        let long = mint(&key, &claims(Some(now), now + 901));
        assert_eq!(tokens.verify(&long, at), Err(TokenError::Invalid));
        let year = mint(&key, &claims(Some(now), now + 365 * 86_400));
        assert_eq!(tokens.verify(&year, at), Err(TokenError::Invalid));
        let no_iat = mint(&key, &claims(None, now + 60));
        assert_eq!(tokens.verify(&no_iat, at), Err(TokenError::Invalid));
    }

    #[test]
    fn opaque_tokens_are_long_random_and_hashed() {
        let (a, b) = (opaque_token(), opaque_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 32);
        assert_eq!(token_hash(&a), token_hash(&a));
    }
}

/// What a refresh hands out, sealed under the refresh token it replaced, so that a retry
/// with that token within the grace window gets the very same successor, without the
/// successor ever being stored in plain text: only the holder of the previous token (which
/// the server does not keep either, only its hash) can open it.
///
/// Sealing is ChaCha20-Poly1305 with a key derived from the previous token (SHA-256 with a
/// domain label, so unrelated to the stored hash) and a random nonce stored in front.
pub mod successor {
    use chacha20poly1305::aead::Aead as _;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Nonce};
    use sha2::{Digest as _, Sha256};

    const KEY_LABEL: &[u8] = b"servauth/refresh-successor/v1\0";
    const NONCE_LEN: usize = 12;
    const TOKEN_LEN: usize = 43;

    fn cipher(previous_token: &str) -> Option<ChaCha20Poly1305> {
        let key = Sha256::new()
            .chain_update(KEY_LABEL)
            .chain_update(previous_token)
            .finalize();
        ChaCha20Poly1305::new_from_slice(&key).ok()
    }

    /// Seals the successor refresh token and, for browsers, its CSRF token.
    pub fn seal(
        previous_token: &str,
        refresh_token: &str,
        csrf_token: Option<&str>,
    ) -> Option<Vec<u8>> {
        let mut nonce = [0_u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let plaintext = format!("{refresh_token}{}", csrf_token.unwrap_or_default());
        let sealed = cipher(previous_token)?
            .encrypt(&Nonce::from(nonce), plaintext.as_bytes())
            .ok()?;
        Some([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`seal`] sealed under the same previous token.
    pub fn open(previous_token: &str, sealed: &[u8]) -> Option<(String, Option<String>)> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let plain = cipher(previous_token)?
            .decrypt(&Nonce::from(nonce), ciphertext)
            .ok()?;
        let plain = String::from_utf8(plain).ok()?;
        match plain.len() {
            TOKEN_LEN => Some((plain, None)),
            len if len == 2 * TOKEN_LEN => {
                let (refresh, csrf) = plain.split_at(TOKEN_LEN);
                Some((refresh.to_owned(), Some(csrf.to_owned())))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::domain::opaque_token;

        #[test]
        fn only_the_previous_token_opens_the_successor() {
            let (previous, refresh, csrf) = (opaque_token(), opaque_token(), opaque_token());
            let sealed = seal(&previous, &refresh, Some(&csrf)).unwrap();
            assert!(
                !sealed
                    .windows(refresh.len())
                    .any(|w| w == refresh.as_bytes()),
                "not plain"
            );
            assert_eq!(
                open(&previous, &sealed),
                Some((refresh.clone(), Some(csrf)))
            );
            assert_eq!(open(&opaque_token(), &sealed), None);
            let native = seal(&previous, &refresh, None).unwrap();
            assert_eq!(open(&previous, &native), Some((refresh, None)));
            assert_eq!(open(&previous, &sealed[..10]), None);
        }
    }
}
