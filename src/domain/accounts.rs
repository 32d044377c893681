use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::Duration;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::tokens::{opaque_token, token_hash};
use super::{
    AuthError, Caller, Email, FieldError, HashError, Password, PasswordHashing, PasswordPolicy,
    Username,
};
use crate::clock::Clock;
use crate::limits::RateLimits;
use crate::mail::{Mailer, OutgoingEmail, Templates};
use crate::store::{
    NewOneTimeToken, NewUser, ProfileChange, Role, Store, TokenPurpose, UserRecord,
};
use crate::telemetry::spawn_blocking_in_span;

/// A registration as it arrives: every field may be missing; [`Accounts::register`] judges.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub username: Option<String>,
}

/// A password that checked out: the user, and the stored hash it was checked against (or
/// the one that replaced it in a re-hash), which the new session must still find in place.
#[derive(Clone)]
pub struct PasswordLogin {
    pub user: UserRecord,
    pub password_hash: String,
}

impl std::fmt::Debug for PasswordLogin {
    /// Without the hash: it never goes to a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordLogin")
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// A profile change as it arrives. `username: Some(None)` removes the username.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    pub username: Option<Option<String>>,
    pub email: Option<String>,
    pub current_password: Option<SecretString>,
}

/// The row of a new account: unverified, with the `user` role, created `now`; callers with
/// other facts (an operator's account, an import) override fields with struct update.
pub fn new_account(
    email: &Email,
    username: Option<Username>,
    password_hash: String,
    now: chrono::DateTime<chrono::Utc>,
) -> NewUser {
    let (username, username_key) = username.map(Username::into_parts).unzip();
    NewUser {
        id: Uuid::now_v7(),
        email: email.as_str().to_owned(),
        email_key: email.key().to_owned(),
        username,
        username_key,
        password_hash,
        email_verified: false,
        role: Role::User,
        now,
    }
}

/// How accounts send mail: the queue, the messages, and how long their links live.
#[derive(Debug, Clone)]
pub struct AccountMail {
    pub mailer: Mailer,
    pub templates: Templates,
    pub reset_ttl: Duration,
    pub verify_ttl: Duration,
}

/// Accounts: registering, signing in, changing the profile and password, deleting, and
/// the emailed links (password reset, address verification and change; see `recovery.rs`).
#[derive(Debug, Clone)]
pub struct Accounts {
    pub(super) store: Arc<dyn Store>,
    pub(super) hashing: PasswordHashing,
    pub(super) policy: PasswordPolicy,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) mail: AccountMail,
    require_verified_email: bool,
    limits: Arc<RateLimits>,
    /// Emails with a link, per address: so that nobody can flood an inbox through us.
    mail_limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

/// At most 3 link emails per address in a burst, then one more every 5 minutes.
const MAIL_BURST: u32 = 3;
const MAIL_REFILL: std::time::Duration = std::time::Duration::from_secs(300);
/// Forget idle per-address counters once this many are kept.
const MAIL_LIMITER_KEYS: usize = 10_000;

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
        mail: AccountMail,
        require_verified_email: bool,
        limits: Arc<RateLimits>,
    ) -> Self {
        let burst = NonZeroU32::new(MAIL_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(MAIL_REFILL)
            .map_or(Quota::per_hour(burst), |quota| quota.allow_burst(burst));
        Self {
            store,
            hashing,
            policy,
            clock,
            mail,
            require_verified_email,
            limits,
            mail_limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// Creates an account and mails a verification link. Every broken input rule is
    /// reported at once (422); a taken email or username is `EmailTaken`/`UsernameTaken`.
    pub async fn register(&self, registration: Registration) -> Result<UserRecord, AuthError> {
        let result = self.register_checked(registration).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(AuthError::Validation(_)) => "invalid",
            Err(AuthError::EmailTaken) => "email_taken",
            Err(AuthError::UsernameTaken) => "username_taken",
            Err(AuthError::Overloaded) => "overloaded",
            Err(_) => "error",
        };
        metrics::counter!("servauth_registrations_total", "outcome" => outcome).increment(1);
        result
    }

    async fn register_checked(&self, registration: Registration) -> Result<UserRecord, AuthError> {
        // A place in the hashing pool first: when it is full, 503 before any other work.
        let admission = self.hashing.admit()?;
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
            Some(raw) => match self.check_policy(raw, email.clone(), "password").await? {
                Ok(password) => Some(password),
                Err(broken) => {
                    errors.extend(broken);
                    None
                }
            },
            None => {
                errors.push(FieldError::required("password"));
                None
            }
        };
        let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let password_hash = admission.hash(password).await?;
        let account = new_account(&email, username, password_hash, self.clock.now());
        let user = self.store.create_user(account).await?;
        tracing::info!(user.id = %user.id, "account registered");
        self.send_verification(&user).await?;
        Ok(user)
    }

    /// Checks an email and password. An unknown email and a wrong password are the same
    /// `InvalidCredentials` and cost the same hashing work. With verified emails required,
    /// a correct password on an unverified address is `EmailNotVerified`.
    pub async fn login(
        &self,
        email: Option<String>,
        password: Option<SecretString>,
    ) -> Result<PasswordLogin, AuthError> {
        let result = self.login_checked(email, password).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(AuthError::InvalidCredentials) => "invalid_credentials",
            Err(AuthError::EmailNotVerified) => "email_not_verified",
            Err(AuthError::Validation(_)) => "invalid",
            Err(AuthError::Overloaded) => "overloaded",
            Err(AuthError::RateLimited(_)) => "throttled",
            Err(_) => "error",
        };
        metrics::counter!("servauth_logins_total", "outcome" => outcome).increment(1);
        result
    }

    async fn login_checked(
        &self,
        email: Option<String>,
        password: Option<SecretString>,
    ) -> Result<PasswordLogin, AuthError> {
        let (email, password) = match (email, password) {
            (Some(email), Some(password)) => (email, password),
            (email, password) => {
                return Err(AuthError::Validation(FieldError::missing(&[
                    ("email", email.is_none()),
                    ("password", password.is_none()),
                ])));
            }
        };
        // A place in the hashing pool first: when it is full, 503 before any other work and
        // before a failure slot is taken (an overloaded server is not the user's failure).
        let admission = self.hashing.admit()?;
        let key = Email::key_of(&email);
        let reserved = self.limits.reserve_login(&key).await;
        if !reserved.allowed {
            metrics::counter!("servauth_rate_limited_total", "limit" => "login_failures_per_account")
                .increment(1);
            tracing::warn!("login refused: too many failed logins for this address lately");
            return Err(AuthError::RateLimited(reserved));
        }
        let credentials = self.store.find_credentials_by_email_key(&key).await?;
        let (user, stored) = credentials
            .map(|found| (found.user, found.password_hash))
            .unzip();
        let password = Password::for_verification(password.expose_secret());
        let verified = admission.verify(password.clone(), stored.clone()).await?;
        match (user, stored) {
            (Some(user), Some(mut password_hash)) if verified.matches => {
                self.limits.login_succeeded(&key).await;
                if verified.needs_rehash
                    && let Some(rehashed) = self.rehash(&user, &password_hash, password).await
                {
                    password_hash = rehashed;
                }
                if self.require_verified_email && !user.email_verified {
                    tracing::info!(user.id = %user.id, "login refused: email not verified");
                    return Err(AuthError::EmailNotVerified);
                }
                tracing::info!(user.id = %user.id, "login succeeded");
                Ok(PasswordLogin {
                    user,
                    password_hash,
                })
            }
            _ => {
                tracing::info!("login failed: invalid credentials");
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Replaces an imported or outdated hash with one of the current parameters, unless the
    /// password changed meanwhile; the new hash when it was stored. A failure (the pool is
    /// busy, the database hiccups) is logged; the next login tries again.
    async fn rehash(
        &self,
        user: &UserRecord,
        replacing: &str,
        password: Password,
    ) -> Option<String> {
        let replaced = match self.hashing.hash(password).await {
            Ok(hash) => self
                .store
                .set_password_hash(user.id, replacing, &hash, self.clock.now())
                .await
                .map(|stored| stored.then_some(hash))
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match replaced {
            Ok(Some(hash)) => {
                tracing::info!(user.id = %user.id, "password re-hashed with the current parameters");
                Some(hash)
            }
            Ok(None) => {
                tracing::info!(user.id = %user.id, "re-hash dropped: the password changed meanwhile");
                None
            }
            Err(error) => {
                tracing::warn!(user.id = %user.id, error, "re-hashing the password failed");
                None
            }
        }
    }

    /// The user with this id, if any.
    pub async fn find(&self, id: Uuid) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.store.find_user(id).await?)
    }

    /// Changes the username and/or starts an email change: that needs the current password,
    /// records `pending_email`, mails a confirmation link to the new address and a notice to
    /// the current one; the address changes only when the link is used.
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
        if let (Some(email), Some(current_password)) = (&new_email, &update.current_password) {
            self.confirm_password(user.id, current_password).await?;
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
        let updated = self
            .store
            .update_profile(user.id, change, self.clock.now())
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if let Some(email) = new_email {
            let token = self
                .issue_token(
                    user.id,
                    TokenPurpose::EmailChange,
                    email.as_str(),
                    self.mail.verify_ttl,
                )
                .await?;
            let templates = &self.mail.templates;
            self.mail_with_link(templates.confirm_new_email(
                email.as_str(),
                &token,
                self.mail.verify_ttl,
            ));
            self.mail
                .mailer
                .send(templates.email_change_requested(&user.email, email.as_str()));
            tracing::info!(user.id = %user.id, "email change requested");
        }
        Ok(updated)
    }

    /// Changes the password of a signed-in user who knows the current one; every other
    /// session ends, and a notice is mailed.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current_password: Option<SecretString>,
        new_password: Option<SecretString>,
    ) -> Result<(), AuthError> {
        let (Some(current), Some(new)) = (current_password.as_ref(), new_password) else {
            return Err(AuthError::Validation(FieldError::missing(&[
                ("current_password", current_password.is_none()),
                ("new_password", true),
            ])));
        };
        let user = &caller.user;
        self.confirm_password(user.id, current).await?;
        let email = Email::parse(&user.email, "email").ok();
        let password = self
            .check_policy(new, email, "new_password")
            .await?
            .map_err(AuthError::Validation)?;
        let hash = self.hashing.hash(password).await?;
        let now = self.clock.now();
        if !self
            .store
            .change_password(user.id, &hash, caller.session_id(), now)
            .await?
        {
            return Err(AuthError::InvalidToken);
        }
        tracing::info!(user.id = %user.id, "password changed; other sessions revoked");
        self.mail
            .mailer
            .send(self.mail.templates.password_changed(&user.email));
        Ok(())
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
        let password = Password::for_verification(password.expose_secret());
        if self.hashing.verify(password, stored).await?.matches {
            Ok(())
        } else {
            tracing::info!(user.id = %user_id, "re-authentication failed");
            Err(AuthError::WrongPassword)
        }
    }

    /// Runs the password policy off the async workers (it scores the password against
    /// large dictionaries). The outer error is a failure to run; the inner, broken rules.
    pub(super) async fn check_policy(
        &self,
        raw: SecretString,
        email: Option<Email>,
        field: &'static str,
    ) -> Result<Result<Password, Vec<FieldError>>, AuthError> {
        let policy = self.policy;
        spawn_blocking_in_span(move || policy.check(raw.expose_secret(), email.as_ref(), field))
            .await
            .map_err(|error| AuthError::Internal(error.into()))
    }

    /// Mails a fresh verification link for the user's current address.
    pub(super) async fn send_verification(&self, user: &UserRecord) -> Result<(), AuthError> {
        let ttl = self.mail.verify_ttl;
        let token = self
            .issue_token(user.id, TokenPurpose::EmailVerification, &user.email, ttl)
            .await?;
        self.mail_with_link(self.mail.templates.verify_email(&user.email, &token, ttl));
        Ok(())
    }

    /// Stores a new single-use token (retiring older ones of its kind) and returns it.
    pub(super) async fn issue_token(
        &self,
        user_id: Uuid,
        purpose: TokenPurpose,
        email: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let token = opaque_token();
        let now = self.clock.now();
        self.store
            .issue_one_time_token(NewOneTimeToken {
                token_hash: token_hash(&token),
                user_id,
                purpose,
                email: email.to_owned(),
                now,
                expires_at: now + ttl,
            })
            .await?;
        Ok(token)
    }

    /// Queues a message with a link, unless this address got too many of them lately.
    pub(super) fn mail_with_link(&self, email: OutgoingEmail) {
        if self.mail_limiter.len() > MAIL_LIMITER_KEYS {
            self.mail_limiter.retain_recent();
        }
        if self
            .mail_limiter
            .check_key(&Email::key_of(&email.to))
            .is_ok()
        {
            self.mail.mailer.send(email);
        } else {
            metrics::counter!("servauth_rate_limited_total", "limit" => "link_email_per_address")
                .increment(1);
            tracing::warn!(subject = %email.subject, "link email not sent: too many for this address lately");
        }
    }
}
