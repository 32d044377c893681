//! Passkeys (WebAuthn, through `webauthn-rs`): registering them to a signed-in account,
//! signing in with one alone (a discoverable credential: no email typed), and using one as
//! the second factor of a password sign-in. Every ceremony's state stays on the server, in a
//! single-use challenge named by a token the client holds.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, WebauthnError,
};

use super::audit::{Entry, EventType};
use super::mfa::{
    AMR_HWK, AMR_MFA, AMR_SWK, ChallengeState, MFA_CHALLENGE_TTL, from_starting_address,
};
use super::tokens::{opaque_token, token_hash};
use super::{Accounts, AuthError, Caller, FieldError};
use crate::store::{FactorKind, FactorRecord, NewChallenge, UserRecord};

const PURPOSE_REGISTER: &str = "passkey_register";
const PURPOSE_LOGIN: &str = "passkey_login";
/// The longest passkey name.
pub const MAX_PASSKEY_NAME_CHARS: usize = 64;
/// The most passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 20;

/// A WebAuthn ceremony just started: the options for `navigator.credentials.create()` or
/// `.get()` (WebAuthn's JSON form, base64url for binary), and the token naming it.
#[derive(Debug, Clone)]
pub struct PasskeyCeremony {
    pub token: String,
    pub options: serde_json::Value,
    pub expires_in: i64,
}

/// A registered passkey, as its owner sees it (no key material).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The authenticator may sync it to other devices (WebAuthn's BE flag).
    pub backup_eligible: bool,
    /// It is synced (WebAuthn's BS flag), as of its last use.
    pub backed_up: bool,
}

/// A passkey sign-in that verified.
#[derive(Debug, Clone)]
pub struct PasskeyLogin {
    pub user: UserRecord,
    pub amr: Vec<String>,
}

fn failed(what: &'static str, error: &WebauthnError) -> AuthError {
    // The error names what failed (origin, RP id, challenge, signature...), never the data.
    tracing::info!(error = %error, "{what} refused");
    AuthError::WebauthnFailed
}

/// A client's WebAuthn JSON as webauthn-rs's type; anything else is `WebauthnFailed`.
fn parse_response<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, AuthError> {
    serde_json::from_value(value).map_err(|error| {
        // The kind of error only: serde's text may quote what the client sent.
        tracing::info!(error = ?error.classify(), "passkey response refused: not a WebAuthn credential");
        AuthError::WebauthnFailed
    })
}

fn stored_passkey(factor: &FactorRecord) -> Option<Passkey> {
    serde_json::from_slice(&factor.secret).ok()
}

/// The BE and BS flags of a stored passkey (webauthn-rs keeps them inside its credential).
fn backup_flags(factor: &FactorRecord) -> (bool, bool) {
    let value: serde_json::Value = serde_json::from_slice(&factor.secret).unwrap_or_default();
    let flag = |name: &str| value["cred"][name].as_bool().unwrap_or(false);
    (flag("backup_eligible"), flag("backup_state"))
}

fn view(factor: &FactorRecord) -> PasskeyView {
    let (backup_eligible, backed_up) = backup_flags(factor);
    PasskeyView {
        id: factor.id,
        name: factor.name.clone().unwrap_or_else(|| "Passkey".to_owned()),
        created_at: factor.created_at,
        last_used_at: factor.last_used_at,
        backup_eligible,
        backed_up,
    }
}

/// A passkey name: trimmed, 1 to 64 characters, no control or format characters.
fn parse_passkey_name(raw: &str) -> Result<String, AuthError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_PASSKEY_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::Validation(vec![FieldError::new(
            "name",
            "invalid_name",
            format!("`name` must be 1 to {MAX_PASSKEY_NAME_CHARS} printable characters."),
        )]));
    }
    Ok(name.to_owned())
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, AuthError> {
    serde_json::to_value(value).map_err(|error| AuthError::Internal(error.into()))
}

impl Accounts {
    fn webauthn(&self) -> Result<&webauthn_rs::Webauthn, AuthError> {
        self.factors
            .webauthn
            .as_deref()
            .ok_or(AuthError::PasskeysUnavailable)
    }

    async fn start_ceremony(
        &self,
        user_id: Option<Uuid>,
        purpose: &'static str,
        session_id: Option<Uuid>,
        ip: Option<IpAddr>,
        state: serde_json::Value,
        options: serde_json::Value,
    ) -> Result<PasskeyCeremony, AuthError> {
        let token = opaque_token();
        let now = self.clock.now();
        self.store
            .create_challenge(NewChallenge {
                token_hash: token_hash(&token),
                user_id,
                purpose,
                session_id,
                password_hash: None,
                ip: ip.map(|ip| ip.to_canonical().to_string()),
                state: state.to_string(),
                now,
                expires_at: now + MFA_CHALLENGE_TTL,
            })
            .await?;
        Ok(PasskeyCeremony {
            token,
            options,
            expires_in: MFA_CHALLENGE_TTL.num_seconds(),
        })
    }

    /// Uses up a live ceremony of this purpose (any answer to it ends it: a WebAuthn
    /// challenge is signed once). `InvalidCeremony` when it is unknown, used, expired, or
    /// from another address.
    async fn take_ceremony(
        &self,
        token: Option<&str>,
        purpose: &'static str,
        ip: Option<IpAddr>,
    ) -> Result<crate::store::ChallengeRecord, AuthError> {
        let token = token
            .filter(|token| !token.is_empty())
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("ceremony_token")]))?;
        let hash = token_hash(token);
        let now = self.clock.now();
        let challenge = self
            .store
            .find_challenge(&hash, purpose, now)
            .await?
            .ok_or(AuthError::InvalidCeremony)?;
        if !from_starting_address(&challenge, ip) {
            return Err(AuthError::InvalidCeremony);
        }
        if !self.store.consume_challenge(&hash, now).await? {
            return Err(AuthError::InvalidCeremony);
        }
        Ok(challenge)
    }

    /// The user's passkeys.
    pub async fn list_passkeys(&self, user_id: Uuid) -> Result<Vec<PasskeyView>, AuthError> {
        Ok(self
            .store
            .list_factors(user_id)
            .await?
            .iter()
            .filter(|f| f.kind == FactorKind::Passkey)
            .map(view)
            .collect())
    }

    /// Starts registering a passkey to the caller's account (needs a recent
    /// authentication). The options ask for a discoverable credential with user
    /// verification, and exclude the passkeys the account has.
    pub async fn start_passkey_registration(
        &self,
        caller: &Caller,
        ip: Option<IpAddr>,
    ) -> Result<PasskeyCeremony, AuthError> {
        let webauthn = self.webauthn()?;
        self.require_recent_authentication(caller).await?;
        let user = &caller.user;
        let existing: Vec<FactorRecord> = self
            .store
            .list_factors(user.id)
            .await?
            .into_iter()
            .filter(|f| f.kind == FactorKind::Passkey)
            .collect();
        if existing.len() >= MAX_PASSKEYS {
            return Err(AuthError::FactorConflict(
                "too_many_passkeys",
                "This account has as many passkeys as it may; delete one first.",
            ));
        }
        let exclude = existing
            .iter()
            .filter_map(|f| f.credential_id.clone())
            .collect::<Vec<_>>();
        let display = user.name.as_deref().unwrap_or(&user.email);
        let (mut options, state): (CreationChallengeResponse, PasskeyRegistration) = webauthn
            .start_passkey_registration(user.id, &user.email, display, Some(exclude))
            .map_err(|error| failed("passkey registration start", &error))?;
        // Discoverable (a passkey signs in without an email typed): webauthn-rs leaves
        // residency to the authenticator, so the options ask for it. The check of the
        // response does not depend on it.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
        }
        self.start_ceremony(
            Some(user.id),
            PURPOSE_REGISTER,
            Some(caller.session_id()),
            ip,
            to_json(&state)?,
            to_json(&options)?,
        )
        .await
    }

    /// Finishes a registration with the authenticator's answer: the passkey is the
    /// account's from now on.
    pub async fn finish_passkey_registration(
        &self,
        caller: &Caller,
        token: Option<&str>,
        credential: Option<serde_json::Value>,
        name: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<PasskeyView, AuthError> {
        let webauthn = self.webauthn()?;
        let credential = credential
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("credential")]))?;
        let name = name.as_deref().map(parse_passkey_name).transpose()?;
        let challenge = self.take_ceremony(token, PURPOSE_REGISTER, ip).await?;
        let user = &caller.user;
        if challenge.user_id != Some(user.id) || challenge.session_id != Some(caller.session_id()) {
            return Err(AuthError::InvalidCeremony);
        }
        let state: PasskeyRegistration = serde_json::from_str(&challenge.state)
            .map_err(|error| AuthError::Internal(error.into()))?;
        let response: RegisterPublicKeyCredential = parse_response(credential)?;
        let passkey = webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|error| failed("passkey registration", &error))?;
        let now = self.clock.now();
        let factor = FactorRecord {
            id: Uuid::now_v7(),
            user_id: user.id,
            kind: FactorKind::Passkey,
            name: Some(name.unwrap_or_else(|| "Passkey".to_owned())),
            credential_id: Some(passkey.cred_id().to_vec()),
            secret: serde_json::to_vec(&passkey)
                .map_err(|error| AuthError::Internal(error.into()))?,
            last_step: None,
            confirmed_at: Some(now),
            created_at: now,
            last_used_at: None,
        };
        if !self.store.insert_passkey(factor.clone()).await? {
            return Err(AuthError::FactorConflict(
                "passkey_already_registered",
                "This passkey is registered already.",
            ));
        }
        self.factors_changed(user.id);
        tracing::info!(user.id = %user.id, factor.id = %factor.id, "passkey registered");
        self.audit
            .record(
                Entry::by_user(EventType::FactorAdded, user.id)
                    .with("kind", "passkey")
                    .with("factor_id", factor.id.to_string()),
            )
            .await;
        self.mail
            .mailer
            .send(self.mail.templates.factor_added(&user.email, "a passkey"))
            .await;
        Ok(view(&factor))
    }

    /// Renames one of the caller's passkeys.
    pub async fn rename_passkey(
        &self,
        caller: &Caller,
        id: Uuid,
        name: Option<String>,
    ) -> Result<PasskeyView, AuthError> {
        let name = name
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("name")]))
            .and_then(|name| parse_passkey_name(&name))?;
        if !self.store.rename_passkey(caller.user.id, id, &name).await? {
            return Err(AuthError::NotFound);
        }
        self.store
            .list_factors(caller.user.id)
            .await?
            .iter()
            .find(|f| f.id == id)
            .map(view)
            .ok_or(AuthError::NotFound)
    }

    /// Deletes one of the caller's passkeys (needs a recent authentication with a second
    /// factor).
    pub async fn delete_passkey(&self, caller: &Caller, id: Uuid) -> Result<(), AuthError> {
        let user = &caller.user;
        let owned = self
            .store
            .list_factors(user.id)
            .await?
            .iter()
            .any(|f| f.id == id && f.kind == FactorKind::Passkey);
        if !owned {
            return Err(AuthError::NotFound);
        }
        self.require_recent_authentication(caller).await?;
        if !self.store.delete_factor(user.id, id).await? {
            return Err(AuthError::NotFound);
        }
        self.factors_changed(user.id);
        tracing::info!(user.id = %user.id, factor.id = %id, "passkey deleted");
        self.audit
            .record(
                Entry::by_user(EventType::FactorRemoved, user.id)
                    .with("kind", "passkey")
                    .with("factor_id", id.to_string()),
            )
            .await;
        self.mail
            .mailer
            .send(self.mail.templates.factor_removed(&user.email, "a passkey"))
            .await;
        Ok(())
    }

    /// Starts a passkey sign-in: the options let the browser offer any passkey of this
    /// site (discoverable credentials), with user verification.
    pub async fn start_passkey_login(
        &self,
        ip: Option<IpAddr>,
    ) -> Result<PasskeyCeremony, AuthError> {
        let webauthn = self.webauthn()?;
        let (mut options, state): (_, DiscoverableAuthentication) = webauthn
            .start_discoverable_authentication()
            .map_err(|error| failed("passkey sign-in start", &error))?;
        // webauthn-rs asks for conditional mediation (autofill UI); a sign-in button wants
        // the modal one, and a page that wants autofill sets `mediation` itself.
        options.mediation = None;
        self.start_ceremony(
            None,
            PURPOSE_LOGIN,
            None,
            ip,
            to_json(&state)?,
            to_json(&options)?,
        )
        .await
    }

    /// Finishes a passkey sign-in: the credential names its account (the user handle) and
    /// must be a passkey registered to it, signed over this ceremony's challenge from an
    /// allowed origin, with user verification and a counter that went forward.
    pub async fn finish_passkey_login(
        &self,
        token: Option<&str>,
        credential: Option<serde_json::Value>,
        ip: Option<IpAddr>,
    ) -> Result<PasskeyLogin, AuthError> {
        let webauthn = self.webauthn()?;
        let credential = credential
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("credential")]))?;
        let challenge = self.take_ceremony(token, PURPOSE_LOGIN, ip).await?;
        let state: DiscoverableAuthentication = serde_json::from_str(&challenge.state)
            .map_err(|error| AuthError::Internal(error.into()))?;
        let response: PublicKeyCredential = parse_response(credential)?;
        let (user_id, credential_id) = webauthn
            .identify_discoverable_authentication(&response)
            .map_err(|error| failed("passkey sign-in", &error))?;
        let factor = self
            .store
            .find_passkey(credential_id)
            .await?
            .filter(|factor| factor.user_id == user_id)
            .ok_or_else(|| {
                tracing::info!("passkey sign-in refused: unknown credential");
                AuthError::WebauthnFailed
            })?;
        let mut passkey = stored_passkey(&factor).ok_or(AuthError::WebauthnFailed)?;
        let result = webauthn
            .finish_discoverable_authentication_v2(&response, state, &passkey)
            .map_err(|error| self.assertion_refused(&factor, &error))?;
        self.passkey_used(&factor, &mut passkey, &result).await?;
        let user = self
            .store
            .find_user(user_id)
            .await?
            .ok_or(AuthError::WebauthnFailed)?;
        if self.requires_verified_email() && !user.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        tracing::info!(user.id = %user.id, "signed in with a passkey");
        self.audit
            .record(
                Entry::by_user(EventType::FactorUsed, user.id)
                    .with("method", passkey_amr(&result))
                    .with("purpose", "passkey_sign_in"),
            )
            .await;
        Ok(PasskeyLogin {
            user,
            amr: vec![
                passkey_amr(&result).to_owned(),
                // webauthn-rs's passkey ceremonies require user verification: the key and
                // the PIN or biometric that unlocked it are two factors.
                AMR_MFA.to_owned(),
            ],
        })
    }

    /// Starts the passkey step of a sign-in or re-authentication waiting for its second
    /// factor: the options for the account's passkeys. The challenge keeps the state.
    pub async fn start_passkey_second_factor(
        &self,
        mfa_token: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<serde_json::Value, AuthError> {
        let webauthn = self.webauthn()?;
        let token = mfa_token
            .filter(|token| !token.is_empty())
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("mfa_token")]))?;
        let hash = token_hash(token);
        let (challenge, _) = self.live_mfa_challenge(&hash, ip).await?;
        let now = self.clock.now();
        let user_id = challenge.user_id.ok_or(AuthError::InvalidMfaToken)?;
        let passkeys: Vec<Passkey> = self
            .store
            .list_factors(user_id)
            .await?
            .iter()
            .filter(|f| f.kind == FactorKind::Passkey)
            .filter_map(stored_passkey)
            .collect();
        if passkeys.is_empty() {
            return Err(AuthError::FactorConflict(
                "no_passkey",
                "This account has no passkey; use another factor.",
            ));
        }
        let (options, auth_state): (_, PasskeyAuthentication) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|error| failed("passkey second factor start", &error))?;
        let mut state: ChallengeState = serde_json::from_str(&challenge.state).unwrap_or_default();
        state.webauthn = Some(to_json(&auth_state)?);
        let state =
            serde_json::to_string(&state).map_err(|error| AuthError::Internal(error.into()))?;
        if !self
            .store
            .update_challenge_state(&hash, &state, now)
            .await?
        {
            return Err(AuthError::InvalidMfaToken);
        }
        to_json(&options)
    }

    /// Checks a passkey assertion as the second factor of `user`, against the WebAuthn
    /// state its challenge keeps; the `amr` value it earns.
    pub(super) async fn check_passkey_assertion(
        &self,
        user: &UserRecord,
        assertion: &serde_json::Value,
        state: Option<&serde_json::Value>,
    ) -> Result<&'static str, AuthError> {
        let webauthn = self.webauthn()?;
        let state: PasskeyAuthentication = state
            .and_then(|state| serde_json::from_value(state.clone()).ok())
            .ok_or_else(|| {
                AuthError::FactorConflict(
                    "webauthn_not_started",
                    "Ask for the passkey options of this challenge first.",
                )
            })?;
        let response: PublicKeyCredential = parse_response(assertion.clone())?;
        let factor = self
            .store
            .find_passkey(response.get_credential_id())
            .await?
            .filter(|factor| factor.user_id == user.id)
            .ok_or(AuthError::WebauthnFailed)?;
        let mut passkey = stored_passkey(&factor).ok_or(AuthError::WebauthnFailed)?;
        let result = webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(|error| self.assertion_refused(&factor, &error))?;
        self.passkey_used(&factor, &mut passkey, &result).await?;
        Ok(passkey_amr(&result))
    }

    fn assertion_refused(&self, factor: &FactorRecord, error: &WebauthnError) -> AuthError {
        if matches!(error, WebauthnError::CredentialPossibleCompromise) {
            metrics::counter!("servauth_passkey_clones_total").increment(1);
            tracing::warn!(
                user.id = %factor.user_id,
                factor.id = %factor.id,
                "passkey refused: its signature counter went backwards (a cloned authenticator?)"
            );
            return AuthError::WebauthnFailed;
        }
        failed("passkey assertion", error)
    }

    /// Stores what an assertion moved on (the counter, the backup state).
    async fn passkey_used(
        &self,
        factor: &FactorRecord,
        passkey: &mut Passkey,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), AuthError> {
        passkey.update_credential(result);
        let secret =
            serde_json::to_vec(&*passkey).map_err(|error| AuthError::Internal(error.into()))?;
        self.store
            .update_passkey(factor.id, &secret, self.clock.now())
            .await?;
        Ok(())
    }
}

/// `swk` for a passkey that may be synced (backup eligible), `hwk` for one bound to its
/// authenticator.
fn passkey_amr(result: &webauthn_rs::prelude::AuthenticationResult) -> &'static str {
    if result.backup_eligible() {
        AMR_SWK
    } else {
        AMR_HWK
    }
}

#[cfg(test)]
mod tests {
    //! A real assertion (Chromium's virtual authenticator, `benches/fixtures/`) against the
    //! relying party and ceremony it was made for, and against everything it was not.

    use serde_json::Value;
    use webauthn_rs::prelude::Url;

    use super::*;

    fn fixture() -> Value {
        serde_json::from_str(include_str!(
            "../../benches/fixtures/passkey_assertion.json"
        ))
        .unwrap()
    }

    fn verify(rp_id: &str, origin: &str, state: &Value, assertion: &Value) -> bool {
        let origin = Url::parse(origin).unwrap();
        let Ok(builder) = webauthn_rs::WebauthnBuilder::new(rp_id, &origin) else {
            return false;
        };
        let webauthn = builder.build().unwrap();
        let (Ok(state), Ok(assertion)) = (
            serde_json::from_value::<PasskeyAuthentication>(state.clone()),
            parse_response::<PublicKeyCredential>(assertion.clone()),
        ) else {
            return false;
        };
        webauthn
            .finish_passkey_authentication(&assertion, &state)
            .is_ok()
    }

    #[test]
    fn an_assertion_verifies_only_for_its_relying_party_origin_and_challenge() {
        let fixture = fixture();
        let (rp_id, origin) = (
            fixture["rp_id"].as_str().unwrap(),
            fixture["origin"].as_str().unwrap(),
        );
        let (state, assertion) = (&fixture["state"], &fixture["assertion"]);
        assert!(verify(rp_id, origin, state, assertion));
        // Another origin, another RP id.
        assert!(!verify(rp_id, "http://localhost:1", state, assertion));
        assert!(!verify(
            "example.com",
            "https://example.com",
            state,
            assertion
        ));
        // Another ceremony's challenge.
        let mut other = state.clone();
        other["ast"]["challenge"] =
            Value::String("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
        assert!(!verify(rp_id, origin, &other, assertion));
        // A counter the authenticator did not pass (a clone replaying).
        let mut seen = state.clone();
        seen["ast"]["credentials"][0]["counter"] = Value::from(1_000);
        assert!(!verify(rp_id, origin, &seen, assertion));
    }

    #[test]
    fn hostile_assertions_are_refused_without_a_panic() {
        let fixture = fixture();
        let (rp_id, origin) = (
            fixture["rp_id"].as_str().unwrap(),
            fixture["origin"].as_str().unwrap(),
        );
        let state = &fixture["state"];
        let field = |name: &str| {
            fixture["assertion"]["response"][name]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let with = |name: &str, value: Value| {
            let mut assertion = fixture["assertion"].clone();
            assertion["response"][name] = value;
            assertion
        };
        let signature = field("signature");
        let data = field("authenticatorData");
        let flipped = format!(
            "{}{}",
            &signature[..signature.len() - 2],
            if signature.ends_with("AA") {
                "BA"
            } else {
                "AA"
            }
        );
        for assertion in [
            with("signature", Value::String(flipped)),
            with("signature", Value::String(String::new())),
            with(
                "authenticatorData",
                Value::String(data[..data.len() / 2].to_owned()),
            ),
            with("authenticatorData", Value::String("!!".into())),
            with("clientDataJSON", Value::String("e30".into())),
            with("userHandle", Value::from(7)),
            serde_json::json!({}),
            serde_json::json!([1, 2, 3]),
        ] {
            assert!(!verify(rp_id, origin, state, &assertion), "{assertion}");
        }
    }
}
