//! Settings: defaults → environment → flags (clap does that layering), then validated once
//! into a [`Config`]. Anything wrong stops the start with one line naming the setting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::KeyEncryptionKey;

/// Every setting of `servauth serve` (and of the other commands, which read the same).
/// Each flag has an environment variable of the same meaning; the flag wins.
///
/// Its `Debug` output redacts every field that may hold a secret: those are
/// [`SecretString`]s (the database URL included, which may carry a password).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Database: `sqlite://servauth.db` (file created if missing) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://servauth.db",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// Maximum connections in the database pool.
    #[arg(long, env = "SERVAUTH_DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Live sessions each server keeps in memory for token checks (0: none, every check
    /// asks the database).
    #[arg(long, env = "SERVAUTH_SESSION_CACHE", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub session_cache: u32,

    /// Address to listen on. Default 127.0.0.1:8080, or 0.0.0.0:$PORT when only PORT is set.
    #[arg(long, env = "SERVAUTH_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Port to listen on, on every interface (the container convention).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// The server's public base URL: the issuer default and the base of links in emails.
    #[arg(long, env = "SERVAUTH_PUBLIC_URL", default_value = "http://localhost:8080",
          value_parser = parse_http_url)]
    pub public_url: Url,

    /// `iss` of access tokens. Default: the public URL.
    #[arg(long, env = "SERVAUTH_ISSUER")]
    pub issuer: Option<String>,

    /// `aud` of access tokens.
    #[arg(long, env = "SERVAUTH_AUDIENCE", default_value = "servauth")]
    pub audience: String,

    /// Sign access tokens with HS256 and this secret (≥ 32 bytes) instead of EdDSA keys.
    #[arg(long, env = "SERVAUTH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// Lifetime of access tokens.
    #[arg(long, env = "SERVAUTH_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_ttl: Duration,

    /// A refresh token expires after this long without use.
    #[arg(long, env = "SERVAUTH_REFRESH_TTL", default_value = "7d", value_parser = parse_duration)]
    pub refresh_ttl: Duration,

    /// A session ends after this long, whatever its use.
    #[arg(long, env = "SERVAUTH_SESSION_TTL", default_value = "30d", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// A refresh token presented again within this long after its rotation gets the same
    /// answer (two tabs refreshing at once stay signed in); later reuse revokes the session.
    /// `0s` turns the grace off.
    #[arg(long, env = "SERVAUTH_REFRESH_REUSE_GRACE", default_value = "10s",
          value_parser = parse_grace)]
    pub refresh_reuse_grace: Duration,

    /// Browser origins allowed to call the API with credentials (CORS), comma-separated
    /// exact origins such as `https://app.example.com`.
    #[arg(long, env = "SERVAUTH_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Serve the Better Auth-compatible face under `/api/auth` (it also needs a secret:
    /// `SERVAUTH_BETTER_AUTH_SECRET` or `BETTER_AUTH_SECRET`).
    #[arg(long, env = "SERVAUTH_BETTER_AUTH", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub better_auth: bool,

    /// The secret that signs the Better Auth face's cookies (HMAC-SHA256 keyed with its
    /// UTF-8 bytes, as Better Auth's `secret`): the same value keeps a Better Auth app's
    /// cookies valid. Unset: `BETTER_AUTH_SECRET`; neither: the face answers 404.
    #[arg(long, env = "SERVAUTH_BETTER_AUTH_SECRET", hide_env_values = true)]
    pub better_auth_secret: Option<SecretString>,

    /// Better Auth's own variable for that secret, read when `SERVAUTH_BETTER_AUTH_SECRET`
    /// is unset.
    #[arg(
        long = "better-auth-secret-fallback",
        env = "BETTER_AUTH_SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub better_auth_secret_fallback: Option<SecretString>,

    /// Shared secret (≥ 32 bytes) other services send as `X-Service-Auth` to use
    /// `/api/internal/*`. Unset: those routes do not exist (404).
    #[arg(long, env = "SERVAUTH_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: Option<SecretString>,

    /// SMTP server for outgoing mail: `smtp://host:port` (add `?tls=required` for
    /// STARTTLS), `smtps://host:465` for TLS, with `user:password@` when it needs a login.
    /// Unset: mail is not sent (see `SERVAUTH_DEV_LOG_MAIL`).
    #[arg(long, env = "SERVAUTH_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Receives every audit event as a Standard Webhooks POST (needs `SERVAUTH_WEBHOOK_SECRET`).
    #[arg(long, env = "SERVAUTH_WEBHOOK_URL", value_parser = parse_http_url)]
    pub webhook_url: Option<Url>,

    /// The webhook signing secret, `whsec_` and base64 (24 to 64 bytes), as the receiver's
    /// Standard Webhooks library takes it.
    #[arg(long, env = "SERVAUTH_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,

    /// Development only: without an SMTP server, write each message, links included, to the
    /// log. Off, such mail is dropped with a log line that holds no link.
    #[arg(long, env = "SERVAUTH_DEV_LOG_MAIL", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub dev_log_mail: bool,

    /// Sender of outgoing mail.
    #[arg(
        long,
        env = "SERVAUTH_MAIL_FROM",
        default_value = "servauth <noreply@localhost>"
    )]
    pub mail_from: String,

    /// Base URL of the links in emails (`/reset-password?token=…`, `/verify-email?token=…`):
    /// the app that shows those pages. Default: the public URL.
    #[arg(long, env = "SERVAUTH_APP_URL", value_parser = parse_http_url)]
    pub app_url: Option<Url>,

    /// Lifetime of a password-reset link.
    #[arg(long, env = "SERVAUTH_RESET_TTL", default_value = "30m", value_parser = parse_duration)]
    pub reset_ttl: Duration,

    /// Lifetime of an email-verification (or email-change) link.
    #[arg(long, env = "SERVAUTH_VERIFY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub verify_ttl: Duration,

    /// How long audit events are kept; older ones are deleted in the background.
    #[arg(long, env = "SERVAUTH_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub audit_retention: Duration,

    /// Refuse login (`403 email_not_verified`) until the address is verified.
    #[arg(long, env = "SERVAUTH_REQUIRE_VERIFIED_EMAIL", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub require_verified_email: bool,

    /// Redis shared by every replica for rate limits (`redis://host:6379`). Unset: limits
    /// are kept per process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Requests per client IP on each of register, login, forgot, reset and verify:
    /// `COUNT/WINDOW`, e.g. `30/1m`.
    #[arg(long, env = "SERVAUTH_RATE_LIMIT", default_value = "30/1m", value_parser = parse_quota)]
    pub rate_limit: Quota,

    /// Refreshes per client IP (`/auth/refresh`): `COUNT/WINDOW`. Higher than the other
    /// endpoints' limit: every signed-in client behind one address refreshes.
    #[arg(long, env = "SERVAUTH_REFRESH_RATE_LIMIT", default_value = "120/1m",
          value_parser = parse_quota)]
    pub refresh_rate_limit: Quota,

    /// Failed logins per account before further logins to it wait: `COUNT/WINDOW`.
    #[arg(long, env = "SERVAUTH_LOGIN_FAILURE_LIMIT", default_value = "5/15m",
          value_parser = parse_quota)]
    pub login_failure_limit: Quota,

    /// Proxies whose `X-Forwarded-For` is believed (comma-separated CIDRs, e.g.
    /// `10.0.0.0/8,127.0.0.1/32`). Unset: the client is always the socket peer.
    #[arg(long, env = "SERVAUTH_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Gateways that may call `/api/internal/authorize` without `X-Service-Auth`, by the
    /// address they connect from (comma-separated CIDRs or addresses, e.g. `10.0.0.0/8`).
    #[arg(long, env = "SERVAUTH_FORWARD_AUTH_ALLOW", value_delimiter = ',', value_parser = parse_cidr)]
    pub forward_auth_allow: Vec<ipnet::IpNet>,

    /// Minimum password length in characters (8 at the least; NIST asks 15 for single-factor).
    #[arg(long, env = "SERVAUTH_PASSWORD_MIN_LENGTH", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(8..=128))]
    pub password_min_length: u32,

    /// Argon2id memory cost in KiB.
    #[arg(long, env = "SERVAUTH_ARGON2_MEMORY_KIB", default_value_t = 19_456,
          value_parser = clap::value_parser!(u32).range(8..=4_194_304))]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (time cost).
    #[arg(long, env = "SERVAUTH_ARGON2_ITERATIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub argon2_iterations: u32,

    /// Argon2id parallelism (lanes).
    #[arg(long, env = "SERVAUTH_ARGON2_PARALLELISM", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once. Default: the number of CPU cores.
    #[arg(long, env = "SERVAUTH_HASH_WORKERS",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hash_workers: Option<u32>,

    /// Hashes that may wait for a worker before login and register answer `503 overloaded`.
    #[arg(long, env = "SERVAUTH_HASH_QUEUE", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub hash_queue: u32,

    /// Mark cookies `Secure` (turn off only for plain-HTTP development).
    #[arg(long, env = "SERVAUTH_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// `SameSite` of the cookies: `none` for an app on another site (needs secure cookies).
    #[arg(long, env = "SERVAUTH_COOKIE_SAMESITE", value_enum, default_value_t = SameSitePolicy::Lax)]
    pub cookie_samesite: SameSitePolicy,

    /// `auto` applies the embedded migrations at start; `off` leaves that to `servauth migrate`.
    #[arg(long, env = "SERVAUTH_MIGRATE", value_enum, default_value_t = MigrateMode::Auto)]
    pub migrate: MigrateMode,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `servauth=debug,info`.
    #[arg(long, env = "SERVAUTH_LOG", default_value = "info")]
    pub log: String,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "SERVAUTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a client may take to send a request's head, idle time on a keep-alive
    /// connection before its next request included; then the connection is closed.
    #[arg(long, env = "SERVAUTH_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// The whole body of a request must arrive within this long, else `408 request_timeout`
    /// and the connection is closed. The body is read before the request takes its place
    /// among those in flight, so slow senders hold none.
    #[arg(long, env = "SERVAUTH_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// A request not answered within this long (counted once its body has arrived) gets
    /// `503 timeout` with `Retry-After`; the work it started still runs to its end.
    #[arg(long, env = "SERVAUTH_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Key sealing the private signing keys in the database (ChaCha20-Poly1305): 32 bytes as
    /// base64 or as 64 hex digits (e.g. `openssl rand -base64 32`). Unset: keys are stored
    /// in plain.
    #[arg(long, env = "SERVAUTH_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<SecretString>,

    /// The key encryption key before the current one: `servauth keys encrypt` opens keys
    /// sealed under it and seals them again under `SERVAUTH_KEY_ENCRYPTION_KEY`.
    #[arg(
        long,
        env = "SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY",
        hide_env_values = true
    )]
    pub previous_key_encryption_key: Option<SecretString>,

    /// How recent an authentication must be for a sensitive change (the password or email,
    /// deleting the account, adding or removing a second factor, new recovery codes): older,
    /// and the change answers `403 reauthentication_required`.
    #[arg(long, env = "SERVAUTH_REAUTH_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub reauth_max_age: Duration,

    /// The WebAuthn relying party id passkeys are bound to: a registrable domain the public
    /// URL's host is (or is under). Default: the public URL's host.
    #[arg(long, env = "SERVAUTH_WEBAUTHN_RP_ID")]
    pub webauthn_rp_id: Option<String>,

    /// Origins (comma-separated `scheme://host[:port]`) whose pages may register and use
    /// passkeys. Default: the public URL's origin and `SERVAUTH_CORS_ORIGINS`.
    #[arg(long, env = "SERVAUTH_WEBAUTHN_ORIGINS", value_delimiter = ',')]
    pub webauthn_origins: Vec<Url>,

    /// The name authenticators show for this service (passkeys), and the issuer of TOTP
    /// enrolments (what authenticator apps show beside the account).
    #[arg(long, env = "SERVAUTH_SERVICE_NAME", default_value = "servauth")]
    pub service_name: String,

    /// Requests handled at once; more wait, in arrival order, holding only their parsed
    /// head (`/live`, `/ready`, `/health` and `/metrics` never wait). Default: 512 per core.
    #[arg(long, env = "SERVAUTH_MAX_IN_FLIGHT",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SameSitePolicy {
    Lax,
    Strict,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateMode {
    Auto,
    Off,
}

/// How access tokens are signed.
#[derive(Clone)]
pub enum SigningConfig {
    /// Ed25519 keys kept in the database (generated on first start).
    EdDsa,
    /// HS256 with a shared secret.
    Hs256(SecretString),
}

impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EdDsa => f.write_str("EdDsa"),
            Self::Hs256(_) => f.write_str("Hs256([redacted])"),
        }
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Validated configuration: every value here is usable as it is.
#[derive(Debug, Clone)]
pub struct Config {
    /// May hold a password: never logged.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub session_cache: usize,
    pub listen: SocketAddr,
    pub public_url: Url,
    pub issuer: String,
    pub audience: String,
    pub signing: SigningConfig,
    pub access_ttl: chrono::Duration,
    pub refresh_ttl: chrono::Duration,
    pub session_ttl: chrono::Duration,
    pub refresh_reuse_grace: chrono::Duration,
    /// Exact origins (`scheme://host[:port]`) allowed by CORS and by the CSRF origin check.
    pub cors_origins: Vec<String>,
    /// The public URL's own origin, always allowed by the CSRF origin check.
    pub public_origin: String,
    pub internal_secret: Option<SecretString>,
    /// `SERVAUTH_BETTER_AUTH`: whether the Better Auth face is mounted at all.
    pub better_auth: bool,
    /// The Better Auth cookie secret (`SERVAUTH_BETTER_AUTH_SECRET`, else
    /// `BETTER_AUTH_SECRET`); without one the face answers 404.
    pub better_auth_secret: Option<SecretString>,
    /// May hold SMTP credentials: never logged.
    pub smtp_url: Option<SecretString>,
    /// `SERVAUTH_WEBHOOK_URL` with its secret's key bytes (both or neither).
    pub webhook: Option<WebhookTarget>,
    /// Without SMTP, write messages (links included) to the log.
    pub dev_log_mail: bool,
    pub mail_from: lettre::message::Mailbox,
    /// Base of the links in emails, without a trailing slash.
    pub app_url: String,
    pub reset_ttl: chrono::Duration,
    pub verify_ttl: chrono::Duration,
    /// `SERVAUTH_AUDIT_RETENTION`.
    pub audit_retention: chrono::Duration,
    pub require_verified_email: bool,
    /// May hold a password: never logged.
    pub redis_url: Option<SecretString>,
    pub rate_limit: Quota,
    pub refresh_rate_limit: Quota,
    pub login_failure_limit: Quota,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `SERVAUTH_FORWARD_AUTH_ALLOW`: socket peers that may use forward-auth unauthenticated.
    pub forward_auth_allow: Vec<ipnet::IpNet>,
    pub password_min_length: usize,
    pub argon2: Argon2Config,
    pub hash_workers: usize,
    pub hash_queue: usize,
    pub cookie_secure: bool,
    pub cookie_same_site: SameSitePolicy,
    pub migrate: MigrateMode,
    pub log: String,
    pub shutdown_grace: Duration,
    pub header_timeout: Duration,
    /// How long a request's whole body may take to arrive.
    pub body_timeout: Duration,
    /// How long a request may take to be answered once its body has arrived.
    pub request_timeout: Duration,
    /// Seals private signing keys at rest; `None`: they are stored in plain.
    pub key_encryption_key: Option<KeyEncryptionKey>,
    /// Opens keys sealed under the key before (for `servauth keys encrypt`).
    pub previous_key_encryption_key: Option<KeyEncryptionKey>,
    pub max_in_flight: usize,
    /// How recent an authentication a sensitive change needs.
    pub reauth_max_age: chrono::Duration,
    /// The WebAuthn relying party id.
    pub webauthn_rp_id: String,
    /// Origins allowed to use passkeys (the first is the relying party's own).
    pub webauthn_origins: Vec<Url>,
    /// What authenticators and authenticator apps show for this service.
    pub service_name: String,
}

/// A setting that cannot be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// The shortest HS256 secret we accept (RFC 7518 §3.2: a key at least as long as the hash).
const MIN_JWT_SECRET_BYTES: usize = 32;

impl Settings {
    /// Checks the settings together and turns them into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let scheme = self
            .database_url
            .expose_secret()
            .split_once(':')
            .map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "expected sqlite://<file> or postgres://<user>@<host>/<database>",
            ));
        }
        let listen = match (self.listen, self.port) {
            (Some(listen), _) => listen,
            (None, Some(port)) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            (None, None) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
        };
        let signing = match self.jwt_secret {
            Some(secret) if secret.expose_secret().len() < MIN_JWT_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "SERVAUTH_JWT_SECRET",
                    format!(
                        "must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`)"
                    ),
                ));
            }
            Some(secret) => SigningConfig::Hs256(secret),
            None => SigningConfig::EdDsa,
        };
        if self.cookie_samesite == SameSitePolicy::None && !self.cookie_secure {
            return Err(ConfigError::new(
                "SERVAUTH_COOKIE_SAMESITE",
                "`none` needs secure cookies (browsers drop SameSite=None cookies without Secure)",
            ));
        }
        if self.argon2_memory_kib < 8 * self.argon2_parallelism {
            return Err(ConfigError::new(
                "SERVAUTH_ARGON2_MEMORY_KIB",
                "must be at least 8 × SERVAUTH_ARGON2_PARALLELISM",
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::new("SERVAUTH_AUDIENCE", "must not be empty"));
        }
        let issuer = match self.issuer {
            Some(issuer) if issuer.trim().is_empty() => {
                return Err(ConfigError::new("SERVAUTH_ISSUER", "must not be empty"));
            }
            Some(issuer) => issuer,
            None => self.public_url.as_str().trim_end_matches('/').to_owned(),
        };
        if let Some(secret) = &self.internal_secret
            && secret.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(ConfigError::new(
                "SERVAUTH_INTERNAL_SECRET",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        if let Some(url) = &self.smtp_url {
            let transport =
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url.expose_secret());
            if transport.is_err() {
                return Err(ConfigError::new(
                    "SERVAUTH_SMTP_URL",
                    "expected smtp://host:port, smtp://host:port?tls=required or smtps://host:port",
                ));
            }
        }
        let mail_from: lettre::message::Mailbox = self.mail_from.parse().map_err(|_| {
            ConfigError::new(
                "SERVAUTH_MAIL_FROM",
                "expected `Name <address@domain>` or `address@domain`",
            )
        })?;
        let app_url = self.app_url.as_ref().unwrap_or(&self.public_url);
        let app_url = app_url.as_str().trim_end_matches('/').to_owned();
        if let Some(url) = &self.redis_url
            && redis::Client::open(url.expose_secret()).is_err()
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                "expected redis://host:port[/db]",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(ConfigError::new(
                "SERVAUTH_LOG",
                "not a valid log filter (try `info`)",
            ));
        }
        let key_encryption_key = self
            .key_encryption_key
            .as_ref()
            .map(|key| KeyEncryptionKey::parse(key.expose_secret()))
            .transpose()
            .map_err(|message| ConfigError::new("SERVAUTH_KEY_ENCRYPTION_KEY", message))?;
        let previous_key_encryption_key = self
            .previous_key_encryption_key
            .as_ref()
            .map(|key| KeyEncryptionKey::parse(key.expose_secret()))
            .transpose()
            .map_err(|message| ConfigError::new("SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY", message))?;
        let webhook = match (self.webhook_url, &self.webhook_secret) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SERVAUTH_WEBHOOK_SECRET",
                    "SERVAUTH_WEBHOOK_URL needs a signing secret (whsec_...)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SERVAUTH_WEBHOOK_URL",
                    "SERVAUTH_WEBHOOK_SECRET is set but there is no URL to send to",
                ));
            }
            (Some(url), Some(secret)) => Some(WebhookTarget {
                url,
                key: webhook_key(secret.expose_secret())
                    .map_err(|message| ConfigError::new("SERVAUTH_WEBHOOK_SECRET", message))?,
            }),
        };
        // An empty value counts as unset (a template's `BETTER_AUTH_SECRET=`).
        let better_auth_secret = self
            .better_auth_secret
            .or(self.better_auth_secret_fallback)
            .filter(|secret| !secret.expose_secret().is_empty());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let hash_workers = self.hash_workers.map_or(cores, |workers| workers as usize);
        let max_in_flight = self
            .max_in_flight
            .map_or(cores.saturating_mul(512), |limit| limit as usize);
        let webauthn_rp_id = match self.webauthn_rp_id {
            Some(id) if id.trim().is_empty() || id.contains(['/', ':']) => {
                return Err(ConfigError::new(
                    "SERVAUTH_WEBAUTHN_RP_ID",
                    "expected a domain name such as example.com",
                ));
            }
            Some(id) => id.trim().to_ascii_lowercase(),
            None => self.public_url.host_str().unwrap_or("localhost").to_owned(),
        };
        let webauthn_origins = if self.webauthn_origins.is_empty() {
            let mut origins = vec![self.public_url.clone()];
            origins.extend(self.cors_origins.iter().filter_map(|o| Url::parse(o).ok()));
            origins
        } else {
            self.webauthn_origins
        };
        if self.service_name.trim().is_empty() || self.service_name.contains(':') {
            return Err(ConfigError::new(
                "SERVAUTH_SERVICE_NAME",
                "must not be empty or contain `:`",
            ));
        }
        Ok(Config {
            reauth_max_age: to_chrono(self.reauth_max_age, "SERVAUTH_REAUTH_MAX_AGE")?,
            webauthn_rp_id,
            webauthn_origins,
            service_name: self.service_name,
            database_url: self.database_url,
            database_max_connections: self.database_max_connections,
            session_cache: self.session_cache as usize,
            listen,
            public_origin: self.public_url.origin().ascii_serialization(),
            public_url: self.public_url,
            issuer,
            audience: self.audience,
            signing,
            access_ttl: to_chrono(self.access_ttl, "SERVAUTH_ACCESS_TTL")?,
            refresh_ttl: to_chrono(self.refresh_ttl, "SERVAUTH_REFRESH_TTL")?,
            session_ttl: to_chrono(self.session_ttl, "SERVAUTH_SESSION_TTL")?,
            refresh_reuse_grace: to_chrono(
                self.refresh_reuse_grace,
                "SERVAUTH_REFRESH_REUSE_GRACE",
            )?,
            cors_origins: self.cors_origins,
            internal_secret: self.internal_secret,
            better_auth: self.better_auth,
            better_auth_secret,
            smtp_url: self.smtp_url,
            webhook,
            dev_log_mail: self.dev_log_mail,
            mail_from,
            app_url,
            reset_ttl: to_chrono(self.reset_ttl, "SERVAUTH_RESET_TTL")?,
            verify_ttl: to_chrono(self.verify_ttl, "SERVAUTH_VERIFY_TTL")?,
            audit_retention: to_chrono(self.audit_retention, "SERVAUTH_AUDIT_RETENTION")?,
            require_verified_email: self.require_verified_email,
            redis_url: self.redis_url,
            rate_limit: self.rate_limit,
            refresh_rate_limit: self.refresh_rate_limit,
            login_failure_limit: self.login_failure_limit,
            trusted_proxies: self.trusted_proxies,
            forward_auth_allow: self.forward_auth_allow,
            password_min_length: self.password_min_length as usize,
            argon2: Argon2Config {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            hash_workers,
            hash_queue: self.hash_queue as usize,
            cookie_secure: self.cookie_secure,
            cookie_same_site: self.cookie_samesite,
            migrate: self.migrate,
            log: self.log,
            shutdown_grace: self.shutdown_grace,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            request_timeout: self.request_timeout,
            key_encryption_key,
            previous_key_encryption_key,
            max_in_flight,
        })
    }
}

fn to_chrono(duration: Duration, setting: &'static str) -> Result<chrono::Duration, ConfigError> {
    chrono::Duration::from_std(duration).map_err(|_| ConfigError::new(setting, "too long"))
}

/// Durations such as `30s`, `15m`, `24h`, `30d`: one second at the least.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value.trim())
        .map_err(|_| format!("`{value}` is not a duration (use e.g. 30s, 15m, 24h, 30d)"))?;
    if duration < Duration::from_secs(1) {
        return Err(format!("`{value}` is shorter than 1s"));
    }
    if duration > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err(format!("`{value}` is longer than ten years"));
    }
    Ok(duration)
}

/// A rate: at most `count` in each `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub window: Duration,
}

/// `COUNT/WINDOW`, e.g. `30/1m`, `5/15m`.
fn parse_quota(value: &str) -> Result<Quota, String> {
    let (count, window) = value
        .split_once('/')
        .ok_or_else(|| format!("`{value}` is not COUNT/WINDOW (e.g. 30/1m)"))?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| format!("`{count}` is not a positive count"))?;
    Ok(Quota {
        count,
        window: parse_duration(window)?,
    })
}

/// A CIDR (`10.0.0.0/8`) or a single address.
fn parse_cidr(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{value}` is not a CIDR such as 10.0.0.0/8"))
}

/// The reuse grace: a duration, or `0s` for none.
fn parse_grace(value: &str) -> Result<Duration, String> {
    if humantime::parse_duration(value.trim()).is_ok_and(|duration| duration.is_zero()) {
        return Ok(Duration::ZERO);
    }
    parse_duration(value)
}

/// An exact origin: `http(s)://host[:port]`, no path, no wildcard. Returned in the form
/// browsers send in `Origin` (lowercase host, default port dropped).
fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    let url = parse_http_url(value)?;
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "`{value}` is not an origin (scheme://host[:port], nothing after)"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// Where audit events go, and the key that signs them.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: Url,
    /// The secret's bytes (after `whsec_`, base64-decoded).
    pub key: secrecy::SecretSlice<u8>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url.as_str())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes.
fn webhook_key(value: &str) -> Result<secrecy::SecretSlice<u8>, String> {
    use base64::Engine as _;
    let encoded = value
        .strip_prefix("whsec_")
        .ok_or("expected whsec_ followed by base64")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "expected whsec_ followed by base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the key has {} bytes; 24 to 64 expected",
            key.len()
        ));
    }
    Ok(key.into())
}

fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|error| format!("`{value}` is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{value}` is not an http(s) URL with a host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn webhook_secrets_are_whsec_and_base64_of_24_to_64_bytes() {
        assert!(webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(webhook_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(webhook_key("whsec_not base64!").is_err());
        assert!(webhook_key("whsec_c2hvcnQ=").is_err());
    }

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Result<Settings, clap::Error> {
        let argv = std::iter::once("servauth").chain(args.iter().copied());
        Wrapper::try_parse_from(argv).map(|wrapper| wrapper.settings)
    }

    #[test]
    fn defaults_validate() {
        let config = settings(&["--database-url", "sqlite://x.db"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.access_ttl, chrono::Duration::minutes(15));
        assert_eq!(config.refresh_ttl, chrono::Duration::days(7));
        assert_eq!(config.session_ttl, chrono::Duration::days(30));
        assert_eq!(config.password_min_length, 15);
        assert_eq!(config.issuer, "http://localhost:8080");
        assert_eq!(
            config.argon2,
            Argon2Config {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
    }

    #[test]
    fn port_alone_binds_every_interface() {
        let config = settings(&["--port", "9000"]).unwrap().validate().unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let error = settings(&["--jwt-secret", "short"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "SERVAUTH_JWT_SECRET");
    }

    #[test]
    fn a_database_url_of_another_kind_is_refused() {
        let error = settings(&["--database-url", "mysql://x"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "DATABASE_URL");
    }

    #[test]
    fn samesite_none_needs_secure_cookies() {
        let error = settings(&["--cookie-samesite", "none", "--cookie-secure", "false"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "SERVAUTH_COOKIE_SAMESITE");
    }

    #[test]
    fn durations_parse_and_reject_nonsense() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(settings(&["--access-ttl", "soon"]).is_err());
    }

    #[test]
    fn cors_origins_are_exact_and_normalized() {
        let config = settings(&[
            "--cors-origins",
            "https://App.Example.com:443,http://localhost:5173",
        ])
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            config.cors_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert_eq!(config.public_origin, "http://localhost:8080");
        for bad in [
            "*",
            "https://app.example.com/path",
            "app.example.com",
            "ftp://x.example",
        ] {
            assert!(settings(&["--cors-origins", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotas_and_proxies_parse() {
        let config = settings(&[
            "--trusted-proxies",
            "10.0.0.0/8, 127.0.0.1",
            "--rate-limit",
            "100/10s",
        ])
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            config.rate_limit,
            Quota {
                count: 100,
                window: Duration::from_secs(10)
            }
        );
        assert_eq!(
            config.login_failure_limit,
            Quota {
                count: 5,
                window: Duration::from_secs(900)
            }
        );
        assert_eq!(config.trusted_proxies.len(), 2);
        let gateways = settings(&["--forward-auth-allow", "10.0.0.0/8, 192.0.2.7"]).unwrap();
        assert_eq!(gateways.forward_auth_allow.len(), 2);
        assert!(settings(&["--forward-auth-allow", "gateway.local"]).is_err());
        assert!(settings(&["--rate-limit", "0/1m"]).is_err());
        assert!(settings(&["--rate-limit", "30"]).is_err());
        assert!(settings(&["--trusted-proxies", "everyone"]).is_err());
        assert!(
            settings(&["--redis-url", "http://x"])
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn the_reuse_grace_can_be_turned_off() {
        let config = settings(&["--refresh-reuse-grace", "0s"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.refresh_reuse_grace, chrono::Duration::zero());
        let default = settings(&[]).unwrap().validate().unwrap();
        assert_eq!(default.refresh_reuse_grace, chrono::Duration::seconds(10));
    }

    #[test]
    fn settings_debug_output_hides_secrets() {
        let parsed = settings(&[
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--redis-url",
            "redis://:redispass@h:6379",
            "--smtp-url",
            "smtp://mailer:smtppass@h:587",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef-secret",
            "--internal-secret",
            "internal-0123456789abcdef0123456789",
            "--key-encryption-key",
            "kek0123456789abcdef0123456789abcdef0123456",
        ])
        .unwrap();
        let printed = format!("{parsed:?}");
        for secret in [
            "hunter2",
            "redispass",
            "smtppass",
            "abcdef-secret",
            "internal-",
            "kek0123",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("access_ttl"), "still a useful Debug");
    }

    #[test]
    fn timeouts_default_and_parse() {
        let config = settings(&[]).unwrap().validate().unwrap();
        assert_eq!(config.body_timeout, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        let config = settings(&["--body-timeout", "2s", "--request-timeout", "1m"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            (config.body_timeout, config.request_timeout),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
        assert!(settings(&["--body-timeout", "0s"]).is_err());
    }

    #[test]
    fn key_encryption_keys_are_32_bytes_of_base64_or_hex() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let config = settings(&["--key-encryption-key", hex])
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.key_encryption_key.is_some());
        let base64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        let config = settings(&["--key-encryption-key", base64])
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.key_encryption_key.is_some());
        for bad in ["short", "ABEiM0RVZneImaq7zN3u", &hex[..62]] {
            let error = settings(&["--key-encryption-key", bad])
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(error.setting, "SERVAUTH_KEY_ENCRYPTION_KEY", "{bad}");
            assert!(!error.to_string().contains(bad), "the value is not echoed");
        }
        let error = settings(&["--previous-key-encryption-key", "short"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = settings(&[
            "--database-url",
            "postgres://app:hunter2hunter2@db/servauth",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef-secret",
        ])
        .unwrap()
        .validate()
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("abcdef-secret"), "{printed}");
    }
}
