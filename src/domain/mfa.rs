//! Second factors: TOTP (RFC 6238) with single-use recovery codes, the sign-in challenge a
//! password login answers when the account has a factor, re-authentication (step-up) for
//! sensitive changes, and what an operator may reset. Passkeys are in `passkeys.rs`; both
//! are [`Accounts`] use cases, so every face gets the same rules.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::audit::{Entry, EventType};
use super::tokens::{opaque_token, token_hash};
use super::{Accounts, AuthError, Caller, ClientKind, Email, FieldError, KeyEncryptionKey};
use crate::limits::FailureSubject;
use crate::store::{ChallengeRecord, FactorKind, FactorRecord, NewChallenge, UserRecord};

/// How long a sign-in waits for its second factor.
pub const MFA_CHALLENGE_TTL: Duration = Duration::minutes(5);
/// How many recovery codes an enrolment (or a regeneration) hands out.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters of a recovery code (base32, 5 bits each: 60 bits), shown as `xxxx-xxxx-xxxx`.
const RECOVERY_CODE_CHARS: usize = 12;
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// RFC 6238's defaults, which every authenticator app supports.
const TOTP_DIGITS: usize = 6;
const TOTP_STEP_SECONDS: u64 = 30;
/// The secret's length: 160 bits, RFC 4226's recommendation.
const TOTP_SECRET_BYTES: usize = 20;

/// Challenge purposes, as stored.
pub(super) const PURPOSE_LOGIN: &str = "mfa_login";
pub(super) const PURPOSE_REAUTH: &str = "mfa_reauth";

/// RFC 8176 `amr` values.
pub const AMR_PWD: &str = "pwd";
pub const AMR_OTP: &str = "otp";
pub const AMR_MFA: &str = "mfa";
/// A hardware-bound key (a passkey that cannot be synced).
pub const AMR_HWK: &str = "hwk";
/// A software key (a synced passkey).
pub const AMR_SWK: &str = "swk";

/// What second factors need from the settings.
#[derive(Clone)]
pub struct FactorSettings {
    /// Seals TOTP secrets: the key encryption key when one is set, else a key derived from
    /// the installation secret.
    pub sealing: FactorSealing,
    /// The issuer TOTP enrolments name (`SERVAUTH_SERVICE_NAME`).
    pub service_name: String,
    /// `SERVAUTH_REAUTH_MAX_AGE`.
    pub reauth_max_age: Duration,
    /// Passkeys (`None` when the relying party settings do not make a valid one).
    pub webauthn: Option<std::sync::Arc<webauthn_rs::Webauthn>>,
    /// What `GET /auth/me` shows of a user's factors, kept briefly (see
    /// [`Accounts::factor_summary_for_display`]).
    pub summaries: std::sync::Arc<SummaryCache>,
}

/// How long `GET /auth/me` may show a summary of factors read earlier. A change made through
/// this server shows at once; one made through another replica (or `servauth users
/// reset-mfa`) within this long. Nothing decides on it: every sign-in and step-up reads
/// the factors themselves.
pub const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(5);
const SUMMARY_CAPACITY: usize = 10_000;

/// Recently read factor summaries by user, each with when it was read.
pub struct SummaryCache(quick_cache::sync::Cache<Uuid, (FactorSummary, std::time::Instant)>);

impl SummaryCache {
    pub fn new() -> Self {
        Self(quick_cache::sync::Cache::new(SUMMARY_CAPACITY))
    }
}

impl Default for SummaryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FactorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorSettings")
            .field("service_name", &self.service_name)
            .field("reauth_max_age", &self.reauth_max_age)
            .field("webauthn", &self.webauthn.is_some())
            .finish_non_exhaustive()
    }
}

/// The keys that seal TOTP secrets at rest (ChaCha20-Poly1305, through
/// [`KeyEncryptionKey`], with the factor's id as associated data). A sealed secret starts
/// with a byte naming its key, so secrets sealed before a key encryption key was set still
/// open after.
#[derive(Clone)]
pub struct FactorSealing {
    kek: Option<KeyEncryptionKey>,
    installation: KeyEncryptionKey,
}

const SEALED_WITH_KEK: u8 = b'k';
const SEALED_WITH_INSTALLATION: u8 = b'i';

impl FactorSealing {
    pub fn new(kek: Option<KeyEncryptionKey>, installation: KeyEncryptionKey) -> Self {
        Self { kek, installation }
    }

    pub fn seal(&self, factor_id: Uuid, secret: &[u8]) -> Result<Vec<u8>, AuthError> {
        let (tag, key) = match &self.kek {
            Some(kek) => (SEALED_WITH_KEK, kek),
            None => (SEALED_WITH_INSTALLATION, &self.installation),
        };
        let sealed = key.seal(&factor_id.to_string(), secret)?;
        Ok([&[tag], sealed.as_slice()].concat())
    }

    /// The secret [`Self::seal`] sealed for this factor; `None` when it does not open.
    pub fn open(&self, factor_id: Uuid, stored: &[u8]) -> Option<Vec<u8>> {
        let (&tag, sealed) = stored.split_first()?;
        let key = match tag {
            SEALED_WITH_KEK => self.kek.as_ref()?,
            SEALED_WITH_INSTALLATION => &self.installation,
            _ => return None,
        };
        super::open_private_key(Some(key), &factor_id.to_string(), sealed).ok()
    }
}

/// What `GET /auth/mfa` and `GET /auth/me` tell about a user's factors (never a secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FactorSummary {
    /// Whether a confirmed TOTP factor is active.
    pub totp: bool,
    /// How many passkeys are registered.
    pub passkeys: usize,
    /// Unused recovery codes left.
    pub recovery_codes_left: u64,
    /// The factors a sign-in with the password must add one of (empty: none is asked).
    #[schema(example = json!(["totp", "recovery_code"]))]
    pub second_factors: Vec<&'static str>,
}

/// A TOTP enrolment just started: what an authenticator app needs.
pub struct TotpEnrollment {
    /// The secret in base32 (for typing it in by hand).
    pub secret: String,
    /// The `otpauth://totp/...` URI.
    pub uri: String,
    /// The URI as a QR code (SVG).
    pub qr_svg: String,
}

/// A sign-in (or re-authentication) that waits for its second factor.
#[derive(Debug, Clone)]
pub struct MfaChallenge {
    /// The single-use token that names it (handed to the client once).
    pub token: String,
    pub factors: Vec<&'static str>,
    pub expires_in: i64,
}

/// How a client proves its second factor.
#[derive(Debug, Clone, Default)]
pub struct FactorProof {
    pub code: Option<String>,
    pub recovery_code: Option<SecretString>,
    /// A WebAuthn assertion (the `PublicKeyCredential` as JSON).
    pub webauthn: Option<serde_json::Value>,
}

/// A challenge its second factor completed.
#[derive(Debug, Clone)]
pub struct CompletedChallenge {
    pub user: UserRecord,
    /// The hash the password was checked against (the session must still find it).
    pub password_hash: Option<String>,
    pub client: ClientKind,
    /// The authentication's `amr`.
    pub amr: Vec<String>,
    /// `Some`: a re-authentication of this session, not a sign-in.
    pub reauthenticated_session: Option<Uuid>,
}

/// What a challenge remembers between its two steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ChallengeState {
    /// `browser` or `native` (sign-ins).
    #[serde(default)]
    pub native: bool,
    /// The device id of the device token the password step presented, if any: the second
    /// step's failures count against it, as the first step's did.
    #[serde(default)]
    pub device: Option<String>,
    /// The methods proven so far.
    #[serde(default)]
    pub amr: Vec<String>,
    /// A WebAuthn authentication in progress (webauthn-rs's state, as JSON).
    #[serde(default)]
    pub webauthn: Option<serde_json::Value>,
}

/// A recovery code as typed: lowercase, without dashes or spaces.
fn normalize_recovery_code(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    (code.len() == RECOVERY_CODE_CHARS && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(code)
}

fn recovery_code_hash(normalized: &str) -> Vec<u8> {
    Sha256::digest(normalized.as_bytes()).to_vec()
}

/// New recovery codes, formatted for showing, with the hashes to store.
fn new_recovery_codes() -> (Vec<String>, Vec<Vec<u8>>) {
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let mut bytes = [0_u8; RECOVERY_CODE_CHARS];
            rand::fill(&mut bytes);
            // 256 is a multiple of 32: every character equally likely.
            let code: String = bytes
                .iter()
                .map(|byte| char::from(RECOVERY_ALPHABET[usize::from(byte % 32)]))
                .collect();
            let shown = format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..]);
            (shown, recovery_code_hash(&code))
        })
        .unzip()
}

/// A TOTP code as typed: 6 digits, spaces allowed between them.
fn parse_totp_code(raw: &str) -> Option<String> {
    let code: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == TOTP_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// RFC 6238 as servauth uses it: SHA-1 (the default), 6 digits, 30 s, ±1 step.
fn totp_builder(secret: Vec<u8>) -> totp_rs::Builder {
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_digits(TOTP_DIGITS as u8)
        .with_skew(1)
        .with_step_duration(TOTP_STEP_SECONDS)
}

fn totp_for(secret: Vec<u8>, account: &str, issuer: &str) -> Result<totp_rs::Totp, AuthError> {
    // An account name or issuer with `:` cannot be in an otpauth label; the email is only a
    // label there, so such a character is replaced.
    totp_builder(secret)
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some(issuer.replace(':', "_")))
        .build()
        .map_err(|error| AuthError::Internal(anyhow::anyhow!("TOTP: {error}")))
}

/// The step a code matches at `now` (±1 step), or `None`. What a TOTP check costs besides
/// opening the secret and the one `UPDATE` that records the step.
pub fn totp_step(secret: Vec<u8>, code: &str, now: DateTime<Utc>) -> Option<i64> {
    let totp = totp_builder(secret).build().ok()?;
    let time = u64::try_from(now.timestamp()).ok()?;
    totp.check(code, time)
        .and_then(|step| i64::try_from(step).ok())
}

/// The second factors a sign-in may be completed with, for a user's confirmed factors.
fn second_factors(factors: &[FactorRecord], recovery_codes_left: u64) -> Vec<&'static str> {
    let mut available = Vec::new();
    if confirmed_totp(factors).is_some() {
        available.push("totp");
    }
    if factors.iter().any(|f| f.kind == FactorKind::Passkey) {
        available.push("webauthn");
    }
    if !available.is_empty() && recovery_codes_left > 0 {
        available.push("recovery_code");
    }
    available
}

/// The user's active (confirmed) TOTP factor.
fn confirmed_totp(factors: &[FactorRecord]) -> Option<&FactorRecord> {
    factors
        .iter()
        .find(|f| f.kind == FactorKind::Totp && f.confirmed_at.is_some())
}

fn has_confirmed_factor(factors: &[FactorRecord]) -> bool {
    factors.iter().any(|f| f.confirmed_at.is_some())
}

impl Accounts {
    /// The user's factors as `GET /auth/me` shows them: read at most [`SUMMARY_TTL`] ago
    /// (`GET /auth/me` is a hot path; a database read on each call halved its rate).
    pub async fn factor_summary_for_display(
        &self,
        user_id: Uuid,
    ) -> Result<FactorSummary, AuthError> {
        if let Some((summary, read)) = self.factors.summaries.0.get(&user_id)
            && read.elapsed() < SUMMARY_TTL
        {
            return Ok(summary);
        }
        let summary = self.factor_summary(user_id).await?;
        self.factors
            .summaries
            .0
            .insert(user_id, (summary.clone(), std::time::Instant::now()));
        Ok(summary)
    }

    /// Forgets the summary shown for a user whose factors just changed through this server.
    pub(super) fn factors_changed(&self, user_id: Uuid) {
        self.factors.summaries.0.remove(&user_id);
    }

    /// The user's factors, as `GET /auth/mfa` shows them (read now).
    pub async fn factor_summary(&self, user_id: Uuid) -> Result<FactorSummary, AuthError> {
        let factors = self.store.list_factors(user_id).await?;
        let left = if has_confirmed_factor(&factors) {
            self.store.count_recovery_codes(user_id).await?
        } else {
            0
        };
        Ok(FactorSummary {
            totp: confirmed_totp(&factors).is_some(),
            passkeys: factors
                .iter()
                .filter(|f| f.kind == FactorKind::Passkey)
                .count(),
            recovery_codes_left: left,
            second_factors: second_factors(&factors, left),
        })
    }

    /// Step-up: the caller's session authenticated within `SERVAUTH_REAUTH_MAX_AGE`, and,
    /// when the user has a second factor, with it. `ReauthenticationRequired` otherwise.
    pub async fn require_recent_authentication(&self, caller: &Caller) -> Result<(), AuthError> {
        let factors = self.store.list_factors(caller.user.id).await?;
        self.require_recent_with(caller, has_confirmed_factor(&factors))
            .await
    }

    /// As [`Self::require_recent_authentication`], after the request itself proved the
    /// password: a user without a second factor has just authenticated (the password is the
    /// only factor), one with a factor needs a recent authentication with it.
    pub(super) async fn require_second_factor_if_enrolled(
        &self,
        caller: &Caller,
    ) -> Result<(), AuthError> {
        let factors = self.store.list_factors(caller.user.id).await?;
        if has_confirmed_factor(&factors) {
            self.require_recent_with(caller, true).await
        } else {
            Ok(())
        }
    }

    async fn require_recent_with(&self, caller: &Caller, strong: bool) -> Result<(), AuthError> {
        let now = self.clock.now();
        let auth = self
            .store
            .session_authentication(caller.session_id(), now)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let recent = now - auth.auth_time <= self.factors.reauth_max_age;
        let with_factor = !strong || auth.amr.iter().any(|m| m == AMR_MFA);
        if recent && with_factor {
            Ok(())
        } else {
            tracing::info!(user.id = %caller.user.id, "sensitive change refused: re-authentication required");
            Err(AuthError::ReauthenticationRequired)
        }
    }

    /// Starts a TOTP enrolment (replacing one not yet confirmed): active only once a code
    /// from it is confirmed. `TotpAlreadyEnabled` when one is active.
    pub async fn enroll_totp(&self, caller: &Caller) -> Result<TotpEnrollment, AuthError> {
        let factors = self.store.list_factors(caller.user.id).await?;
        if confirmed_totp(&factors).is_some() {
            return Err(totp_already_enabled());
        }
        self.require_recent_with(caller, has_confirmed_factor(&factors))
            .await?;
        let mut secret = vec![0_u8; TOTP_SECRET_BYTES];
        rand::fill(secret.as_mut_slice());
        let totp = totp_for(
            secret.clone(),
            &caller.user.email,
            &self.factors.service_name,
        )?;
        let uri = totp
            .to_url()
            .map_err(|error| AuthError::Internal(anyhow::anyhow!("TOTP URI: {error}")))?;
        let qr_svg = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|error| AuthError::Internal(anyhow::anyhow!("QR code: {error}")))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        let id = Uuid::now_v7();
        let now = self.clock.now();
        let factor = FactorRecord {
            id,
            user_id: caller.user.id,
            kind: FactorKind::Totp,
            name: None,
            credential_id: None,
            secret: self.factors.sealing.seal(id, &secret)?,
            last_step: None,
            confirmed_at: None,
            created_at: now,
            last_used_at: None,
        };
        if !self.store.start_totp(factor).await? {
            return Err(totp_already_enabled());
        }
        tracing::info!(user.id = %caller.user.id, "TOTP enrolment started");
        Ok(TotpEnrollment {
            secret: totp.secret().to_base32(),
            uri,
            qr_svg,
        })
    }

    /// Confirms the pending TOTP enrolment with a current code: TOTP is active from now on,
    /// and the answer is the new recovery codes (shown this once).
    pub async fn confirm_totp(
        &self,
        caller: &Caller,
        code: Option<String>,
    ) -> Result<Vec<String>, AuthError> {
        let code = required_code(code)?;
        let user = &caller.user;
        let pending = self
            .store
            .list_factors(user.id)
            .await?
            .into_iter()
            .find(|f| f.kind == FactorKind::Totp && f.confirmed_at.is_none())
            .ok_or(AuthError::FactorConflict(
                "totp_not_pending",
                "No TOTP enrolment is waiting for confirmation; start one first.",
            ))?;
        let subject = caller.session_id().to_string();
        self.reserve_code_attempt(FailureSubject::Session(&subject), user)
            .await?;
        let now = self.clock.now();
        let step = self
            .factors
            .sealing
            .open(pending.id, &pending.secret)
            .and_then(|secret| totp_step(secret, &code, now));
        let Some(step) = step else {
            tracing::info!(user.id = %user.id, "TOTP confirmation failed: wrong code");
            return Err(AuthError::WrongCode);
        };
        let (codes, hashes) = new_recovery_codes();
        if !self
            .store
            .confirm_totp(user.id, pending.id, step, &hashes, now)
            .await?
        {
            return Err(AuthError::FactorConflict(
                "totp_not_pending",
                "No TOTP enrolment is waiting for confirmation; start one first.",
            ));
        }
        self.limits
            .clear_failures(FailureSubject::Session(&subject))
            .await;
        self.factors_changed(user.id);
        tracing::info!(user.id = %user.id, "TOTP enabled");
        self.audit
            .record(Entry::by_user(EventType::FactorAdded, user.id).with("kind", "totp"))
            .await;
        self.mail
            .mailer
            .send(
                self.mail
                    .templates
                    .factor_added(&user.email, "an authenticator app (TOTP)"),
            )
            .await;
        Ok(codes)
    }

    /// Turns TOTP off: needs the password and a current code or a recovery code (a full
    /// authentication in the request itself). With no factor left, the recovery codes go too.
    pub async fn disable_totp(
        &self,
        caller: &Caller,
        password: Option<SecretString>,
        proof: FactorProof,
    ) -> Result<(), AuthError> {
        let user = &caller.user;
        let Some(password) = password else {
            return Err(AuthError::Validation(vec![FieldError::required(
                "password",
            )]));
        };
        if proof.code.is_none() && proof.recovery_code.is_none() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "code",
                "required",
                "`code` (from the authenticator app) or `recovery_code` is required.",
            )]));
        }
        let factors = self.store.list_factors(user.id).await?;
        let totp = confirmed_totp(&factors).ok_or(AuthError::NotFound)?.clone();
        self.confirm_password(caller, &password).await?;
        let subject = caller.session_id().to_string();
        self.check_second_factor(user, &factors, &proof, FailureSubject::Session(&subject))
            .await?;
        self.store.delete_factor(user.id, totp.id).await?;
        self.factors_changed(user.id);
        tracing::info!(user.id = %user.id, "TOTP disabled");
        self.audit
            .record(Entry::by_user(EventType::FactorRemoved, user.id).with("kind", "totp"))
            .await;
        self.mail
            .mailer
            .send(
                self.mail
                    .templates
                    .factor_removed(&user.email, "an authenticator app (TOTP)"),
            )
            .await;
        Ok(())
    }

    /// New recovery codes (the old ones stop working); needs a recent authentication with
    /// the second factor.
    pub async fn regenerate_recovery_codes(
        &self,
        caller: &Caller,
    ) -> Result<Vec<String>, AuthError> {
        let user = &caller.user;
        let factors = self.store.list_factors(user.id).await?;
        if !has_confirmed_factor(&factors) {
            return Err(AuthError::FactorConflict(
                "no_second_factor",
                "Recovery codes come with a second factor; enable one first.",
            ));
        }
        self.require_recent_with(caller, true).await?;
        let (codes, hashes) = new_recovery_codes();
        self.store
            .replace_recovery_codes(user.id, &hashes, self.clock.now())
            .await?;
        self.factors_changed(user.id);
        tracing::info!(user.id = %user.id, "recovery codes regenerated");
        self.audit
            .record(Entry::by_user(EventType::FactorAdded, user.id).with("kind", "recovery_codes"))
            .await;
        Ok(codes)
    }

    /// After a correct password: the challenge the sign-in must complete when the account
    /// has a second factor, else `None` (the session opens at once).
    pub async fn second_factor_challenge(
        &self,
        user: &UserRecord,
        password_hash: &str,
        client: ClientKind,
        device: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<Option<MfaChallenge>, AuthError> {
        let factors = self.store.list_factors(user.id).await?;
        if !has_confirmed_factor(&factors) {
            return Ok(None);
        }
        let left = self.store.count_recovery_codes(user.id).await?;
        let state = ChallengeState {
            native: client == ClientKind::Native,
            device,
            amr: vec![AMR_PWD.to_owned()],
            webauthn: None,
        };
        let challenge = self
            .create_challenge(
                user.id,
                PURPOSE_LOGIN,
                None,
                Some(password_hash.to_owned()),
                ip,
                &state,
                second_factors(&factors, left),
            )
            .await?;
        tracing::info!(user.id = %user.id, "sign-in waits for the second factor");
        Ok(Some(challenge))
    }

    /// Re-authentication of a signed-in user (step-up) with the password: without a second
    /// factor the session counts as authenticated now (`Ok(None)`); with one, the answer is
    /// a challenge that [`Self::complete_challenge`] finishes with the factor.
    pub async fn reauthenticate(
        &self,
        caller: &Caller,
        password: Option<SecretString>,
        ip: Option<IpAddr>,
    ) -> Result<Option<MfaChallenge>, AuthError> {
        let Some(password) = password else {
            return Err(AuthError::Validation(vec![FieldError::required(
                "password",
            )]));
        };
        self.confirm_password(caller, &password).await?;
        let factors = self.store.list_factors(caller.user.id).await?;
        if !has_confirmed_factor(&factors) {
            self.record_authentication(caller.session_id(), &[AMR_PWD.to_owned()])
                .await?;
            tracing::info!(user.id = %caller.user.id, "re-authenticated with the password");
            return Ok(None);
        }
        let left = self.store.count_recovery_codes(caller.user.id).await?;
        let state = ChallengeState {
            amr: vec![AMR_PWD.to_owned()],
            ..ChallengeState::default()
        };
        let challenge = self
            .create_challenge(
                caller.user.id,
                PURPOSE_REAUTH,
                Some(caller.session_id()),
                None,
                ip,
                &state,
                second_factors(&factors, left),
            )
            .await?;
        Ok(Some(challenge))
    }

    /// Records that the user authenticated for a session just now, with these methods.
    pub async fn record_authentication(
        &self,
        session_id: Uuid,
        amr: &[String],
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        if self
            .store
            .set_session_authentication(session_id, now, &amr.join(" "), now)
            .await?
        {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one row's fields; the two callers name each"
    )]
    async fn create_challenge(
        &self,
        user_id: Uuid,
        purpose: &'static str,
        session_id: Option<Uuid>,
        password_hash: Option<String>,
        ip: Option<IpAddr>,
        state: &ChallengeState,
        factors: Vec<&'static str>,
    ) -> Result<MfaChallenge, AuthError> {
        let token = opaque_token();
        let now = self.clock.now();
        self.store
            .create_challenge(NewChallenge {
                token_hash: token_hash(&token),
                user_id: Some(user_id),
                purpose,
                session_id,
                password_hash,
                ip: ip.map(|ip| ip.to_canonical().to_string()),
                state: serde_json::to_string(state)
                    .map_err(|error| AuthError::Internal(error.into()))?,
                now,
                expires_at: now + MFA_CHALLENGE_TTL,
            })
            .await?;
        Ok(MfaChallenge {
            token,
            factors,
            expires_in: MFA_CHALLENGE_TTL.num_seconds(),
        })
    }

    /// Completes a sign-in or re-authentication challenge with a second factor. The token
    /// must be live and presented from the address that started it; a wrong factor counts
    /// against the same throttle as a wrong password and leaves the challenge usable until
    /// it expires; success uses it up. For a re-authentication, `caller_session` must be the
    /// session it was started for.
    pub async fn complete_challenge(
        &self,
        token: Option<SecretString>,
        proof: FactorProof,
        ip: Option<IpAddr>,
        caller_session: Option<Uuid>,
    ) -> Result<CompletedChallenge, AuthError> {
        let token = token
            .filter(|token| !token.expose_secret().is_empty())
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("mfa_token")]))?;
        if proof.code.is_none() && proof.recovery_code.is_none() && proof.webauthn.is_none() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "code",
                "required",
                "One of `code`, `recovery_code` or `webauthn` is required.",
            )]));
        }
        let hash = token_hash(token.expose_secret());
        let now = self.clock.now();
        let (challenge, purpose) = self.live_mfa_challenge(&hash, ip).await?;
        if purpose == PURPOSE_REAUTH && challenge.session_id != caller_session {
            return Err(AuthError::InvalidMfaToken);
        }
        let user_id = challenge.user_id.ok_or(AuthError::InvalidMfaToken)?;
        let user = self
            .store
            .find_user(user_id)
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        let state: ChallengeState = serde_json::from_str(&challenge.state).unwrap_or_default();
        let factors = self.store.list_factors(user.id).await?;
        let key = Email::key_of(&user.email);
        let subject = match &state.device {
            Some(device) => FailureSubject::Device(device),
            None => FailureSubject::Account(&key),
        };
        let method = match self
            .check_second_factor_with(&user, &factors, &proof, subject, state.webauthn.as_ref())
            .await
        {
            Ok(method) => method,
            Err(error) => {
                if matches!(error, AuthError::InvalidCode | AuthError::WebauthnFailed) {
                    self.audit
                        .record(
                            Entry::by_user(EventType::SignInFailed, user.id)
                                .with("reason", "second_factor_failed")
                                .with("purpose", purpose),
                        )
                        .await;
                }
                return Err(error);
            }
        };
        if !self.store.consume_challenge(&hash, now).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let mut amr = state.amr;
        amr.push(method.to_owned());
        amr.push(AMR_MFA.to_owned());
        tracing::info!(user.id = %user.id, method, "second factor accepted");
        self.audit
            .record(
                Entry::by_user(EventType::FactorUsed, user.id)
                    .with("method", method)
                    .with("purpose", purpose),
            )
            .await;
        Ok(CompletedChallenge {
            user,
            password_hash: challenge.password_hash,
            client: if state.native {
                ClientKind::Native
            } else {
                ClientKind::Browser
            },
            amr,
            reauthenticated_session: (purpose == PURPOSE_REAUTH)
                .then_some(challenge.session_id)
                .flatten(),
        })
    }

    /// The live sign-in or re-authentication challenge with this token hash, with its
    /// purpose; `InvalidMfaToken` when there is none, or it came from another address.
    pub(super) async fn live_mfa_challenge(
        &self,
        hash: &[u8],
        ip: Option<IpAddr>,
    ) -> Result<(ChallengeRecord, &'static str), AuthError> {
        let now = self.clock.now();
        for purpose in [PURPOSE_LOGIN, PURPOSE_REAUTH] {
            let Some(challenge) = self.store.find_challenge(hash, purpose, now).await? else {
                continue;
            };
            if !from_starting_address(&challenge, ip) {
                tracing::warn!("second factor refused: the challenge came from another address");
                return Err(AuthError::InvalidMfaToken);
            }
            return Ok((challenge, purpose));
        }
        Err(AuthError::InvalidMfaToken)
    }

    /// Checks a TOTP code or recovery code of the user (WebAuthn is not accepted here).
    async fn check_second_factor(
        &self,
        user: &UserRecord,
        factors: &[FactorRecord],
        proof: &FactorProof,
        subject: FailureSubject<'_>,
    ) -> Result<&'static str, AuthError> {
        if proof.webauthn.is_some() && proof.code.is_none() && proof.recovery_code.is_none() {
            return Err(AuthError::Validation(vec![FieldError::new(
                "webauthn",
                "not_accepted",
                "Use `code` or `recovery_code` here.",
            )]));
        }
        self.check_second_factor_with(user, factors, proof, subject, None)
            .await
            .map_err(|error| match error {
                AuthError::InvalidCode => AuthError::WrongCode,
                other => other,
            })
    }

    /// Checks one proof of a second factor; the `amr` value it earns. Every attempt takes a
    /// failure slot of `subject` first (cleared on success), as a password attempt does.
    async fn check_second_factor_with(
        &self,
        user: &UserRecord,
        factors: &[FactorRecord],
        proof: &FactorProof,
        subject: FailureSubject<'_>,
        webauthn_state: Option<&serde_json::Value>,
    ) -> Result<&'static str, AuthError> {
        // Malformed input is refused before it costs a failure slot.
        let code = proof
            .code
            .as_deref()
            .map(|raw| parse_totp_code(raw).ok_or_else(|| malformed_code("code")))
            .transpose()?;
        let recovery = proof
            .recovery_code
            .as_ref()
            .map(|raw| {
                normalize_recovery_code(raw.expose_secret())
                    .ok_or_else(|| malformed_code("recovery_code"))
            })
            .transpose()?;
        self.reserve_code_attempt(subject, user).await?;
        let now = self.clock.now();
        let method = if let Some(code) = code {
            let step = confirmed_totp(factors).and_then(|factor| {
                self.factors
                    .sealing
                    .open(factor.id, &factor.secret)
                    .and_then(|secret| totp_step(secret, &code, now))
                    .map(|step| (factor.id, step))
            });
            match step {
                Some((factor_id, step))
                    if self.store.use_totp_step(factor_id, step, now).await? =>
                {
                    AMR_OTP
                }
                Some(_) => {
                    tracing::warn!(user.id = %user.id, "TOTP code refused: already used");
                    return Err(AuthError::InvalidCode);
                }
                None => {
                    tracing::info!(user.id = %user.id, "TOTP code refused: wrong");
                    return Err(AuthError::InvalidCode);
                }
            }
        } else if let Some(recovery) = recovery {
            let Some(left) = self
                .store
                .use_recovery_code(user.id, &recovery_code_hash(&recovery), now)
                .await?
            else {
                tracing::info!(user.id = %user.id, "recovery code refused");
                return Err(AuthError::InvalidCode);
            };
            self.factors_changed(user.id);
            tracing::warn!(user.id = %user.id, left, "recovery code used");
            self.mail
                .mailer
                .send(self.mail.templates.recovery_code_used(&user.email, left))
                .await;
            AMR_OTP
        } else if let Some(assertion) = &proof.webauthn {
            self.check_passkey_assertion(user, assertion, webauthn_state)
                .await?
        } else {
            return Err(AuthError::InvalidCode);
        };
        self.limits.clear_failures(subject).await;
        Ok(method)
    }

    /// Takes a failure slot for a code attempt (cleared when the code is right).
    async fn reserve_code_attempt(
        &self,
        subject: FailureSubject<'_>,
        user: &UserRecord,
    ) -> Result<(), AuthError> {
        let reserved = self.limits.reserve_failure(subject).await;
        if reserved.allowed {
            return Ok(());
        }
        metrics::counter!("servauth_rate_limited_total", "limit" => "second_factor_failures")
            .increment(1);
        tracing::warn!(user.id = %user.id, "second factor refused: too many failed attempts lately");
        Err(AuthError::RateLimited(reserved))
    }
}

/// Whether a challenge is presented from the address that started it (one that started
/// from no known address may be presented from any).
pub(super) fn from_starting_address(challenge: &ChallengeRecord, ip: Option<IpAddr>) -> bool {
    challenge.ip.is_none() || challenge.ip == ip.map(|ip| ip.to_canonical().to_string())
}

fn totp_already_enabled() -> AuthError {
    AuthError::FactorConflict(
        "totp_already_enabled",
        "TOTP is already enabled; disable it before enrolling again.",
    )
}

fn required_code(code: Option<String>) -> Result<String, AuthError> {
    let raw = code.ok_or_else(|| AuthError::Validation(vec![FieldError::required("code")]))?;
    parse_totp_code(&raw).ok_or_else(|| malformed_code("code"))
}

fn malformed_code(field: &'static str) -> AuthError {
    let message = if field == "code" {
        "`code` must be the 6 digits the authenticator app shows."
    } else {
        "`recovery_code` must be one of the recovery codes, as `xxxx-xxxx-xxxx`."
    };
    AuthError::Validation(vec![FieldError::new(field, "invalid_format", message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_distinct_and_read_back_however_typed() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
        let shown = &codes[0];
        assert_eq!(shown.len(), RECOVERY_CODE_CHARS + 2);
        let typed = format!(" {} ", shown.to_uppercase().replace('-', " "));
        let normalized = normalize_recovery_code(&typed).unwrap();
        assert_eq!(recovery_code_hash(&normalized), hashes[0]);
        assert!(normalize_recovery_code("abcd-efgh-ijk").is_none());
        assert!(normalize_recovery_code("abcd-efgh-ijk1").is_none());
    }

    #[test]
    fn totp_codes_match_their_step_and_its_neighbours_only() {
        // RFC 6238 appendix B, SHA-1: the secret "12345678901234567890", 8 digits there;
        // the 6-digit code is the last six of the same value.
        let secret = b"12345678901234567890".to_vec();
        let at = DateTime::from_timestamp(59, 0).unwrap();
        assert_eq!(totp_step(secret.clone(), "287082", at), Some(1));
        let later = DateTime::from_timestamp(59 + 30, 0).unwrap();
        assert_eq!(totp_step(secret.clone(), "287082", later), Some(1));
        let too_late = DateTime::from_timestamp(59 + 61, 0).unwrap();
        assert_eq!(totp_step(secret.clone(), "287082", too_late), None);
        assert_eq!(totp_step(secret, "287083", at), None);
        assert_eq!(parse_totp_code("287 082").as_deref(), Some("287082"));
        assert!(parse_totp_code("28708").is_none());
        assert!(parse_totp_code("２８７０８２").is_none());
    }

    #[test]
    fn sealed_secrets_open_only_for_their_factor() {
        let installation = KeyEncryptionKey::from_bytes([7; 32]);
        let sealing = FactorSealing::new(None, installation.clone());
        let id = Uuid::now_v7();
        let sealed = sealing.seal(id, b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealing.open(id, &sealed).unwrap(), b"secret");
        assert!(sealing.open(Uuid::now_v7(), &sealed).is_none());
        // A key encryption key set later: old secrets still open, new ones use it.
        let with_kek =
            FactorSealing::new(Some(KeyEncryptionKey::from_bytes([9; 32])), installation);
        assert_eq!(with_kek.open(id, &sealed).unwrap(), b"secret");
        let resealed = with_kek.seal(id, b"secret").unwrap();
        assert_eq!(resealed[0], SEALED_WITH_KEK);
        assert!(sealing.open(id, &resealed).is_none());
    }
}
