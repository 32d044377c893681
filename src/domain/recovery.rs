//! The emailed links: password reset, address verification and confirmation of a change.

use secrecy::SecretString;
use uuid::Uuid;

use super::audit::{Actor, Entry, EventType};
use super::tokens::token_hash;
use super::{Accounts, AuthError, Caller, Email, FieldError};
use crate::limits::FailureSubject;
use crate::store::{EmailConfirmation, TokenPurpose};

impl Accounts {
    /// Starts a password reset for an address. Answers at once and the same way whether or
    /// not an account has that address: the lookup, the token and the mail happen in the
    /// background, so neither the answer nor its timing tells.
    pub fn forgot_password(&self, email: Option<String>) -> Result<(), AuthError> {
        let email = required_email(email)?;
        let accounts = self.clone();
        tokio::spawn(async move {
            if let Err(error) = accounts.send_reset_link(&email).await {
                tracing::error!(error = format!("{error:#}"), "password reset link not sent");
            }
        });
        Ok(())
    }

    async fn send_reset_link(&self, email: &Email) -> Result<(), AuthError> {
        let Some(found) = self
            .store
            .find_credentials_by_email_key(email.key())
            .await?
        else {
            tracing::info!("password reset asked for an address without an account");
            return Ok(());
        };
        let user = found.user;
        let ttl = self.mail.reset_ttl;
        let templates = &self.mail.templates;
        let sent = self
            .send_link(
                user.id,
                TokenPurpose::PasswordReset,
                &user.email,
                ttl,
                |token| templates.reset_password(&user.email, token, ttl),
            )
            .await?;
        if sent {
            tracing::info!(user.id = %user.id, "password reset link issued");
        }
        Ok(())
    }

    /// Sets a new password with a reset link's token. The token must be unused and
    /// unexpired; a password the policy rejects is 422 and leaves the token usable. On
    /// success every session of the account ends, a pending email change is called off, the
    /// account's failed-login count is cleared (a reset is how a throttled owner gets back in)
    /// and a notice is mailed.
    pub async fn reset_password(
        &self,
        token: Option<String>,
        password: Option<SecretString>,
    ) -> Result<(), AuthError> {
        let (Some(token), Some(password)) = (token.as_ref(), password) else {
            return Err(AuthError::Validation(FieldError::missing(&[
                ("token", token.is_none()),
                ("password", true),
            ])));
        };
        let hash = token_hash(token);
        let now = self.clock.now();
        let pending = self
            .store
            .find_one_time_token(&hash, TokenPurpose::PasswordReset, now)
            .await?
            .ok_or(AuthError::UnusableLinkToken)?;
        let user = self
            .store
            .find_user(pending.user_id)
            .await?
            .ok_or(AuthError::UnusableLinkToken)?;
        let email = Email::parse(&user.email, "email").ok();
        let password = self
            .check_policy(password, email, "password")
            .await?
            .map_err(AuthError::Validation)?;
        let password_hash = self.hashing.hash(password).await?;
        let user = self
            .store
            .reset_password(&hash, &password_hash, self.clock.now())
            .await?
            .ok_or(AuthError::UnusableLinkToken)?;
        self.limits
            .clear_failures(FailureSubject::Account(&Email::key_of(&user.email)))
            .await;
        tracing::info!(user.id = %user.id, "password reset; every session revoked");
        self.audit
            .record(Entry::by(
                Actor::Anonymous,
                EventType::PasswordReset,
                Some(user.id),
            ))
            .await;
        self.mail
            .mailer
            .send(self.mail.templates.password_changed(&user.email))
            .await;
        Ok(())
    }

    /// Whether a password-reset link's token is usable now (unused, unexpired), without
    /// using it: the Better Auth face's mail callback redirects on it.
    pub async fn reset_token_is_usable(&self, token: &str) -> Result<bool, AuthError> {
        Ok(self
            .store
            .find_one_time_token(
                &token_hash(token),
                TokenPurpose::PasswordReset,
                self.clock.now(),
            )
            .await?
            .is_some())
    }

    /// Uses a verification or email-change link's token. A change ends every session of the
    /// account but `keep` (the confirming client's own, when it sent one).
    pub async fn verify_email(
        &self,
        token: Option<String>,
        keep: Option<Uuid>,
    ) -> Result<(), AuthError> {
        let token =
            token.ok_or_else(|| AuthError::Validation(vec![FieldError::required("token")]))?;
        match self
            .store
            .confirm_email(&token_hash(&token), keep, self.clock.now())
            .await?
        {
            EmailConfirmation::Verified { user } => {
                tracing::info!(user.id = %user.id, "email verified");
                self.audit
                    .record(Entry::by(
                        Actor::Anonymous,
                        EventType::EmailVerified,
                        Some(user.id),
                    ))
                    .await;
                Ok(())
            }
            EmailConfirmation::Changed {
                user,
                previous_email,
            } => {
                tracing::info!(user.id = %user.id, "email changed; other sessions revoked");
                self.audit
                    .record(Entry::by(
                        Actor::Anonymous,
                        EventType::EmailChanged,
                        Some(user.id),
                    ))
                    .await;
                self.mail
                    .mailer
                    .send(
                        self.mail
                            .templates
                            .email_changed(&previous_email, &user.email),
                    )
                    .await;
                Ok(())
            }
            EmailConfirmation::EmailTaken => Err(AuthError::EmailTaken),
            EmailConfirmation::Invalid => Err(AuthError::UnusableLinkToken),
        }
    }

    /// Mails a fresh verification link (the older ones stop working). Nothing is sent for
    /// an address that is already verified.
    pub async fn resend_verification(&self, caller: &Caller) -> Result<(), AuthError> {
        if caller.user.email_verified {
            tracing::info!(user.id = %caller.user.id, "verification not resent: already verified");
            return Ok(());
        }
        self.send_verification(&caller.user).await
    }

    /// Mails a fresh verification link to an address, for a client without a session (with
    /// verified emails required, an unverified user has none). Answers at once and alike
    /// whether or not an unverified account has that address; the work happens in the
    /// background, under the same per-address link limit.
    pub fn resend_verification_to(&self, email: Option<String>) -> Result<(), AuthError> {
        let email = required_email(email)?;
        let accounts = self.clone();
        tokio::spawn(async move {
            let found = accounts
                .store
                .find_credentials_by_email_key(email.key())
                .await;
            let result = match found {
                Ok(Some(found)) if !found.user.email_verified => {
                    accounts.send_verification(&found.user).await
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error.into()),
            };
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "verification link not sent");
            }
        });
        Ok(())
    }
}

/// The `email` field of a request that needs one: present and a valid address.
fn required_email(email: Option<String>) -> Result<Email, AuthError> {
    let raw = email.ok_or_else(|| AuthError::Validation(vec![FieldError::required("email")]))?;
    Email::parse(&raw, "email").map_err(|error| AuthError::Validation(vec![error]))
}
