use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::audit::{Actor, Audit, Entry, EventType};
use super::installation::InstallationKeys;
use super::tokens::{opaque_token, token_hash};
use super::{
    AuthError, Caller, Email, FieldError, HashError, Password, PasswordHashing, PasswordPolicy,
    Username, parse_image, parse_name,
};
use crate::clock::Clock;
use crate::limits::{FailureSubject, RateLimits, Scope};
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
    /// The display name (Better Auth's sign-up requires one; servauth's register does not).
    pub name: Option<String>,
    /// The picture URL.
    pub image: Option<String>,
}

/// A login as it arrives: the credentials, the device token the client kept from an earlier
/// login (if any), and where it came from (for the logs).
#[derive(Debug, Clone, Default)]
pub struct LoginAttempt {
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub device_token: Option<String>,
    pub ip: Option<IpAddr>,
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
    /// `Some(None)` removes the display name; `Some(Some(name))` sets it (see
    /// [`parse_name`](super::parse_name)).
    pub name: Option<Option<String>>,
    /// `Some(None)` removes the picture URL; `Some(Some(url))` sets it (see
    /// [`parse_image`](super::parse_image)).
    pub image: Option<Option<String>>,
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
        name: None,
        image: None,
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
    pub(super) limits: Arc<RateLimits>,
    pub(super) installation: InstallationKeys,
    pub(super) factors: super::FactorSettings,
    pub(super) audit: Audit,
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
    #[expect(
        clippy::too_many_arguments,
        reason = "called once, from start-up, with each part built there"
    )]
    pub fn new(
        store: Arc<dyn Store>,
        hashing: PasswordHashing,
        policy: PasswordPolicy,
        clock: Arc<dyn Clock>,
        mail: AccountMail,
        require_verified_email: bool,
        limits: Arc<RateLimits>,
        installation: InstallationKeys,
        factors: super::FactorSettings,
        audit: Audit,
    ) -> Self {
        Self {
            audit,
            factors,
            store,
            hashing,
            policy,
            clock,
            mail,
            require_verified_email,
            limits,
            installation,
        }
    }

    /// Whether an address must be verified before its account may sign in or use a session.
    pub fn requires_verified_email(&self) -> bool {
        self.require_verified_email
    }

    /// A new device token for a client that just proved it holds the account's password:
    /// later logins from it are not throttled by other clients' failures.
    pub fn device_token(&self, user_id: Uuid) -> String {
        self.installation
            .issue_device_token(user_id, self.clock.now())
    }

    /// The device id of a device token of `user_id` (see [`Self::device_token`]), if it is
    /// one: a second factor's failures then count against it, as the password's did.
    pub fn device_id(&self, token: Option<&str>, user_id: Uuid) -> Option<String> {
        token
            .and_then(|token| {
                self.installation
                    .verify_device_token(token, self.clock.now())
            })
            .filter(|device| device.user_id == user_id)
            .map(|device| device.id)
    }

    /// Creates an account and mails a verification link. Every broken input rule is
    /// reported at once (422); a taken email or username is `EmailTaken`/`UsernameTaken`.
    pub async fn register(&self, registration: Registration) -> Result<UserRecord, AuthError> {
        let result = self.register_checked(registration, Role::User, false).await;
        if let Ok(user) = &result {
            self.audit
                .record(Entry::by_user(EventType::Registered, user.id))
                .await;
        }
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

    /// An account an admin or service creates: the registration rules, with a role and, when
    /// `email_verified`, no verification mail.
    pub async fn create_account(
        &self,
        registration: Registration,
        role: Role,
        email_verified: bool,
    ) -> Result<UserRecord, AuthError> {
        self.register_checked(registration, role, email_verified)
            .await
    }

    async fn register_checked(
        &self,
        registration: Registration,
        role: Role,
        email_verified: bool,
    ) -> Result<UserRecord, AuthError> {
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
        let name = match registration
            .name
            .as_deref()
            .map(|raw| parse_name(raw, "name"))
        {
            Some(Ok(name)) => Some(name),
            Some(Err(error)) => {
                errors.push(error);
                None
            }
            None => None,
        };
        let image = match registration
            .image
            .as_deref()
            .map(|raw| parse_image(raw, "image"))
        {
            Some(Ok(image)) => Some(image),
            Some(Err(error)) => {
                errors.push(error);
                None
            }
            None => None,
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
        let account = NewUser {
            name,
            image,
            role,
            email_verified,
            ..new_account(&email, username, password_hash, self.clock.now())
        };
        let user = self.store.create_user(account).await?;
        tracing::info!(user.id = %user.id, "account registered");
        if !user.email_verified {
            self.send_verification(&user).await?;
        }
        Ok(user)
    }

    /// Checks an email and password. An unknown email and a wrong password are the same
    /// `InvalidCredentials` and cost the same hashing work. With verified emails required,
    /// a correct password on an unverified address is `EmailNotVerified`.
    /// Whether the hashing pool has no place left (login and register would answer
    /// `503 overloaded`).
    pub fn hashing_is_full(&self) -> bool {
        self.hashing.is_full()
    }

    pub async fn login(&self, attempt: LoginAttempt) -> Result<PasswordLogin, AuthError> {
        let result = self.login_checked(attempt).await;
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

    async fn login_checked(&self, attempt: LoginAttempt) -> Result<PasswordLogin, AuthError> {
        let (email, password) = match (attempt.email, attempt.password) {
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
        let started = std::time::Instant::now();
        let key = Email::key_of(&email);
        let account = self.installation.account_id(&key);
        let client_ip = attempt.ip.map(|ip| ip.to_canonical().to_string());
        let credentials = self.store.find_credentials_by_email_key(&key).await?;
        // A device token of this very account: its failures are its own (OWASP's device
        // cookie), so others guessing at the account never throttle the owner's device.
        let device = attempt
            .device_token
            .as_deref()
            .and_then(|token| {
                self.installation
                    .verify_device_token(token, self.clock.now())
            })
            .filter(|device| {
                credentials
                    .as_ref()
                    .is_some_and(|found| found.user.id == device.user_id)
            });
        let subject = match &device {
            Some(device) => FailureSubject::Device(&device.id),
            None => FailureSubject::Account(&key),
        };
        let reserved = self.limits.reserve_failure(subject).await;
        if !reserved.allowed {
            metrics::counter!("servauth_rate_limited_total", "limit" => "login_failures_per_account")
                .increment(1);
            tracing::warn!(
                account,
                client_ip,
                device = device.is_some(),
                "login refused: too many failed logins lately"
            );
            let user = credentials.as_ref().map(|found| found.user.id);
            self.audit
                .record(
                    Entry::by(Actor::Anonymous, EventType::SignInFailed, user)
                        .with("reason", "throttled"),
                )
                .await;
            return Err(AuthError::RateLimited(reserved));
        }
        let (user, stored) = credentials
            .map(|found| (found.user, found.password_hash))
            .unzip();
        let password = Password::for_verification(password.expose_secret());
        let verified = admission.verify(password.clone(), stored.clone()).await?;
        let known = user.as_ref().map(|user| user.id);
        match (user, stored) {
            (Some(user), Some(mut password_hash)) if verified.matches => {
                self.limits
                    .clear_failures(FailureSubject::Account(&key))
                    .await;
                if device.is_some() {
                    self.limits.clear_failures(subject).await;
                }
                if verified.needs_rehash
                    && let Some(rehashed) = self.rehash(&user, &password_hash, password).await
                {
                    password_hash = rehashed;
                }
                if self.require_verified_email && !user.email_verified {
                    tracing::info!(user.id = %user.id, "login refused: email not verified");
                    self.audit
                        .record(
                            Entry::by_user(EventType::SignInFailed, user.id)
                                .with("reason", "email_not_verified"),
                        )
                        .await;
                    return Err(AuthError::EmailNotVerified);
                }
                tracing::info!(user.id = %user.id, client_ip, "login succeeded");
                Ok(PasswordLogin {
                    user,
                    password_hash,
                })
            }
            _ => {
                self.hashing.pad_failure(started).await;
                tracing::info!(
                    account,
                    client_ip,
                    device = device.is_some(),
                    "login failed: invalid credentials"
                );
                // Told apart here only: outsiders get one answer either way.
                let reason = if known.is_some() {
                    "wrong_password"
                } else {
                    "unknown_email"
                };
                self.audit
                    .record(
                        Entry::by(Actor::Anonymous, EventType::SignInFailed, known)
                            .with("reason", reason),
                    )
                    .await;
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
    /// the current one; the address changes only when the link is used. The answer is the
    /// same whether or not the new address has an account (no oracle): for a taken address no
    /// link goes out, and its owner is told instead. Setting the current address again
    /// cancels a pending change.
    pub async fn update_profile(
        &self,
        caller: &Caller,
        update: ProfileUpdate,
    ) -> Result<UserRecord, AuthError> {
        let user = &caller.user;
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
        match update.name {
            Some(Some(raw)) => match parse_name(&raw, "name") {
                Ok(name) => change.name = Some(Some(name)),
                Err(error) => errors.push(error),
            },
            Some(None) => change.name = Some(None),
            None => {}
        }
        match update.image {
            Some(Some(raw)) => match parse_image(&raw, "image") {
                Ok(image) => change.image = Some(Some(image)),
                Err(error) => errors.push(error),
            },
            Some(None) => change.image = Some(None),
            None => {}
        }
        let new_email = match update
            .email
            .as_deref()
            .map(|raw| Email::parse(raw, "email"))
        {
            Some(Ok(email)) if email.key() != Email::key_of(&user.email) => Some(email),
            Some(Ok(_)) => {
                // Back to the current address: whatever change was pending is called off.
                if user.pending_email.is_some() {
                    change.pending_email = Some(None);
                }
                None
            }
            None => None,
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
        // The owner of the new address, if it has one: told, never linked.
        let mut owner = None;
        if let (Some(email), Some(current_password)) = (&new_email, &update.current_password) {
            self.confirm_password(caller, current_password).await?;
            self.require_second_factor_if_enrolled(caller).await?;
            owner = self
                .store
                .find_credentials_by_email_key(email.key())
                .await?
                .map(|found| found.user.email);
            change.pending_email = Some(Some(email.as_str().to_owned()));
        }
        let cancelled = change.pending_email == Some(None);
        let updated = self
            .store
            .update_profile(user.id, change, self.clock.now())
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if cancelled {
            tracing::info!(user.id = %user.id, "pending email change cancelled");
        }
        if let Some(email) = new_email {
            let templates = &self.mail.templates;
            let ttl = self.mail.verify_ttl;
            if let Some(owner) = owner {
                // No link: the change could never be confirmed. The address's owner learns
                // that someone tried, and the caller cannot tell this case from any other.
                if self.may_mail_link(&owner).await {
                    self.mail
                        .mailer
                        .send(templates.email_change_to_taken_address(&owner))
                        .await;
                }
                tracing::info!(user.id = %user.id, "email change asked for an address with an account");
            } else {
                self.send_link(
                    user.id,
                    TokenPurpose::EmailChange,
                    email.as_str(),
                    ttl,
                    |token| templates.confirm_new_email(email.as_str(), token, ttl),
                )
                .await?;
            }
            self.mail
                .mailer
                .send(templates.email_change_requested(&user.email, email.as_str()))
                .await;
            tracing::info!(user.id = %user.id, "email change requested");
        }
        Ok(updated)
    }

    /// Changes the password of a signed-in user who knows the current one; every other
    /// session ends, a pending email change is called off, the account's failed-login count
    /// is cleared, and a notice is mailed.
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
        self.confirm_password(caller, current).await?;
        self.require_second_factor_if_enrolled(caller).await?;
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
        self.limits
            .clear_failures(FailureSubject::Account(&Email::key_of(&user.email)))
            .await;
        tracing::info!(user.id = %user.id, "password changed; other sessions revoked");
        self.audit
            .record(
                Entry::by_user(EventType::PasswordChanged, user.id).session(caller.session_id()),
            )
            .await;
        self.mail
            .mailer
            .send(self.mail.templates.password_changed(&user.email))
            .await;
        Ok(())
    }

    /// Deletes the account with every session and token, after checking its password.
    pub async fn delete(
        &self,
        caller: &Caller,
        password: Option<SecretString>,
    ) -> Result<(), AuthError> {
        let password = password
            .ok_or_else(|| AuthError::Validation(vec![FieldError::required("password")]))?;
        self.confirm_password(caller, &password).await?;
        self.require_second_factor_if_enrolled(caller).await?;
        self.store.delete_user(caller.user.id).await?;
        tracing::info!(user.id = %caller.user.id, "account deleted");
        self.audit
            .record(Entry::by_user(EventType::Deleted, caller.user.id))
            .await;
        Ok(())
    }

    /// Re-authentication for a sensitive change: `WrongPassword` (403) when it fails. Each
    /// check counts against the session's re-check limit, and reserves a failed-login slot of
    /// the session and one of the account (the one login uses) before any hashing: a stolen
    /// access token buys no more guesses than the login form gives, and cannot keep the
    /// hashing pool busy. The session's own count decides (it proved itself at login, like a
    /// device token), so others' failed logins never stop the owner changing the password.
    pub(super) async fn confirm_password(
        &self,
        caller: &Caller,
        password: &SecretString,
    ) -> Result<(), AuthError> {
        let user_id = caller.user.id;
        let key = Email::key_of(&caller.user.email);
        let session = caller.session_id().to_string();
        let per_session = self.limits.hit(Scope::Reauthentication, &session).await;
        if !per_session.allowed {
            metrics::counter!("servauth_rate_limited_total", "limit" => "reauth_per_session")
                .increment(1);
            tracing::warn!(user.id = %user_id, "password re-check refused: too many from this session");
            return Err(AuthError::RateLimited(per_session));
        }
        let admission = self.hashing.admit()?;
        let reserved = self
            .limits
            .reserve_failure(FailureSubject::Session(&session))
            .await;
        if !reserved.allowed {
            metrics::counter!("servauth_rate_limited_total", "limit" => "login_failures_per_account")
                .increment(1);
            tracing::warn!(
                user.id = %user_id,
                account = self.installation.account_id(&key),
                "password re-check refused: too many wrong passwords from this session lately"
            );
            return Err(AuthError::RateLimited(reserved));
        }
        // Counted for the account too, so guessing through sessions also slows logins to it.
        self.limits
            .reserve_failure(FailureSubject::Account(&key))
            .await;
        let started = std::time::Instant::now();
        let stored = self
            .store
            .find_credentials(user_id)
            .await?
            .map(|found| found.password_hash);
        if stored.is_none() {
            return Err(AuthError::InvalidToken);
        }
        let password = Password::for_verification(password.expose_secret());
        if admission.verify(password, stored).await?.matches {
            self.limits
                .clear_failures(FailureSubject::Session(&session))
                .await;
            self.limits
                .clear_failures(FailureSubject::Account(&key))
                .await;
            Ok(())
        } else {
            self.hashing.pad_failure(started).await;
            tracing::info!(
                user.id = %user_id,
                account = self.installation.account_id(&key),
                "re-authentication failed"
            );
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

    /// Mails a fresh verification link for the user's current address (unless that address
    /// had its share of links lately).
    pub(super) async fn send_verification(&self, user: &UserRecord) -> Result<(), AuthError> {
        let ttl = self.mail.verify_ttl;
        let templates = &self.mail.templates;
        self.send_link(
            user.id,
            TokenPurpose::EmailVerification,
            &user.email,
            ttl,
            |token| templates.verify_email(&user.email, token, ttl),
        )
        .await?;
        Ok(())
    }

    /// Issues a single-use token (retiring older ones of its kind) and mails its link to
    /// `address`, unless that address got its share of link emails lately: the limit is
    /// consulted first, so a refused request issues and retires nothing and the last link
    /// sent keeps working. `true` when the link went out.
    pub(super) async fn send_link(
        &self,
        user_id: Uuid,
        purpose: TokenPurpose,
        address: &str,
        ttl: Duration,
        message: impl FnOnce(&str) -> OutgoingEmail,
    ) -> Result<bool, AuthError> {
        if !self.may_mail_link(address).await {
            return Ok(false);
        }
        // The token and the message carrying it are written in one transaction: a crash
        // leaves both or neither.
        let token = opaque_token();
        let now = self.clock.now();
        let mail = self.mail.mailer.prepare(&message(&token), now)?;
        self.store
            .issue_one_time_token(NewOneTimeToken {
                token_hash: token_hash(&token),
                user_id,
                purpose,
                email: address.to_owned(),
                now,
                expires_at: now + ttl,
                mail: Some(mail),
            })
            .await?;
        self.mail.mailer.queued();
        Ok(true)
    }

    /// Counts one link email to `address` against its limit; `false` (logged) when over it.
    pub(super) async fn may_mail_link(&self, address: &str) -> bool {
        let decision = self
            .limits
            .hit(Scope::LinkMail, &Email::key_of(address))
            .await;
        if !decision.allowed {
            metrics::counter!("servauth_rate_limited_total", "limit" => "link_email_per_address")
                .increment(1);
            tracing::warn!(
                account = self.installation.account_id(&Email::key_of(address)),
                "link email not sent: too many for this address lately"
            );
        }
        decision.allowed
    }
}
