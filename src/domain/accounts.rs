use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::{
    AuthError, Email, FieldError, HashError, Password, PasswordHashing, PasswordPolicy, Username,
};
use crate::clock::Clock;
use crate::store::{NewUser, ProfileChange, Role, Store, UserRecord};
use crate::telemetry::spawn_blocking_in_span;

/// A registration as it arrives: every field may be missing; [`Accounts::register`] judges.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub username: Option<String>,
}

/// A profile change as it arrives. `username: Some(None)` removes the username.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    pub username: Option<Option<String>>,
    pub email: Option<String>,
    pub current_password: Option<SecretString>,
}

/// Accounts: registering, signing in, changing the profile, deleting.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    hashing: PasswordHashing,
    policy: PasswordPolicy,
    clock: Arc<dyn Clock>,
}

impl From<HashError> for AuthError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Overloaded => Self::Overloaded,
            HashError::Failed(message) => Self::Internal(anyhow::anyhow!(message)),
        }
    }
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        hashing: PasswordHashing,
        policy: PasswordPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            hashing,
            policy,
            clock,
        }
    }

    /// Creates an account. Every broken input rule is reported at once (422); a taken
    /// email or username is `EmailTaken`/`UsernameTaken` (409).
    pub async fn register(&self, registration: Registration) -> Result<UserRecord, AuthError> {
        let mut errors = Vec::new();
        let email = match registration
            .email
            .as_deref()
            .map(|raw| Email::parse(raw, "email"))
        {
            Some(Ok(email)) => Some(email),
            Some(Err(error)) => {
                errors.push(error);
                None
            }
            None => {
                errors.push(FieldError::required("email"));
                None
            }
        };
        let username = match registration.username.as_deref().map(Username::parse) {
            Some(Ok(username)) => Some(username),
            Some(Err(error)) => {
                errors.push(error);
                None
            }
            None => None,
        };
        let password = match registration.password {
            Some(raw) => {
                let (policy, email) = (self.policy, email.clone());
                let checked = spawn_blocking_in_span(move || {
                    policy.check(raw.expose_secret(), email.as_ref(), "password")
                })
                .await
                .map_err(|error| AuthError::Internal(error.into()))?;
                checked.map_err(|broken| errors.extend(broken)).ok()
            }
            None => {
                errors.push(FieldError::required("password"));
                None
            }
        };
        let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let password_hash = self.hashing.hash(password).await?;
        let (username, username_key) = username.map(Username::into_parts).unzip();
        let user = self
            .store
            .create_user(NewUser {
                id: Uuid::now_v7(),
                email: email.as_str().to_owned(),
                email_key: email.key().to_owned(),
                username,
                username_key,
                password_hash,
                email_verified: false,
                role: Role::User,
                now: self.clock.now(),
            })
            .await?;
        tracing::info!(user.id = %user.id, "account registered");
        Ok(user)
    }

    /// Checks an email and password. An unknown email and a wrong password are the same
    /// `InvalidCredentials` and cost the same hashing work.
    pub async fn login(
        &self,
        email: Option<String>,
        password: Option<SecretString>,
    ) -> Result<UserRecord, AuthError> {
        let (email, password) = match (email, password) {
            (Some(email), Some(password)) => (email, password),
            (email, password) => {
                let missing = [("email", email.is_none()), ("password", password.is_none())];
                let errors = missing
                    .into_iter()
                    .filter(|(_, missing)| *missing)
                    .map(|(field, _)| FieldError::required(field))
                    .collect();
                return Err(AuthError::Validation(errors));
            }
        };
        let credentials = self
            .store
            .find_credentials_by_email_key(&Email::key_of(&email))
            .await?;
        let (user, stored) = credentials
            .map(|found| (found.user, found.password_hash))
            .unzip();
        let verified = self
            .hashing
            .verify(Password::for_verification(password.expose_secret()), stored)
            .await?;
        match user {
            Some(user) if verified => {
                tracing::info!(user.id = %user.id, "login succeeded");
                Ok(user)
            }
            _ => {
                tracing::info!("login failed: invalid credentials");
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Changes the username and/or records an email change (which needs the current
    /// password and takes effect only when the new address is confirmed).
    pub async fn update_profile(
        &self,
        user: &UserRecord,
        update: ProfileUpdate,
    ) -> Result<UserRecord, AuthError> {
        let mut errors = Vec::new();
        let mut change = ProfileChange::default();
        match update.username {
            Some(Some(raw)) => match Username::parse(&raw) {
                Ok(username) => change.username = Some(Some(username.into_parts())),
                Err(error) => errors.push(error),
            },
            Some(None) => change.username = Some(None),
            None => {}
        }
        let new_email = match update
            .email
            .as_deref()
            .map(|raw| Email::parse(raw, "email"))
        {
            Some(Ok(email)) if email.key() != Email::key_of(&user.email) => Some(email),
            Some(Ok(_)) | None => None,
            Some(Err(error)) => {
                errors.push(error);
                None
            }
        };
        if new_email.is_some() && update.current_password.is_none() {
            errors.push(FieldError::required("current_password"));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        if let (Some(email), Some(current_password)) = (new_email, update.current_password) {
            self.confirm_password(user.id, &current_password).await?;
            if self
                .store
                .find_credentials_by_email_key(email.key())
                .await?
                .is_some()
            {
                return Err(AuthError::EmailTaken);
            }
            change.pending_email = Some(Some(email.as_str().to_owned()));
        }
        self.store
            .update_profile(user.id, change, self.clock.now())
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// The user with this id, if any.
    pub async fn find(&self, id: Uuid) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.store.find_user(id).await?)
    }

    /// Deletes the account with every session and token, after checking its password.
    pub async fn delete(
        &self,
        user: &UserRecord,
        password: Option<SecretString>,
    ) -> Result<(), AuthError> {
        let password = password
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("password")]))?;
        self.confirm_password(user.id, &password).await?;
        self.store.delete_user(user.id).await?;
        tracing::info!(user.id = %user.id, "account deleted");
        Ok(())
    }

    /// Re-authentication for a sensitive change: `WrongPassword` (403) when it fails.
    async fn confirm_password(
        &self,
        user_id: Uuid,
        password: &SecretString,
    ) -> Result<(), AuthError> {
        let stored = self
            .store
            .find_credentials(user_id)
            .await?
            .map(|found| found.password_hash);
        if stored.is_none() {
            return Err(AuthError::InvalidToken);
        }
        if self
            .hashing
            .verify(Password::for_verification(password.expose_secret()), stored)
            .await?
        {
            Ok(())
        } else {
            tracing::info!(user.id = %user_id, "re-authentication failed");
            Err(AuthError::WrongPassword)
        }
    }
}
