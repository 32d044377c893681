//! What each command does, given its settings.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::app::{App, connect_store};
use crate::cli::{
    AuditCommand, Command, ConfigCommand, CreateUser, ExportAudit, ImportBetterAuth, ImportCommand,
    KeysCommand, UsersCommand,
};
use crate::clock::{Clock as _, SystemClock};
use crate::config::{Config, ConfigError, MigrateMode, Settings, SigningConfig};
use crate::domain::{
    Email, OpenKeyError, PasswordHashing, PasswordPolicy, Username, is_sealed, new_account,
    new_stored_signing_key, open_private_key,
};
use crate::store::{NewUser, Role, Store};
use crate::telemetry;

/// Runs a command to completion and says how the process should exit.
pub async fn run(command: Command) -> ExitCode {
    let (settings, action): (Settings, Action) = match command {
        Command::Serve(settings) => (settings, Action::Serve),
        Command::Migrate(settings) => (settings, Action::Migrate),
        Command::Config(ConfigCommand::Check(settings)) => (settings, Action::CheckConfig),
        Command::Keys(KeysCommand::Rotate(settings)) => (settings, Action::RotateKeys),
        Command::Keys(KeysCommand::Encrypt(settings)) => (settings, Action::EncryptKeys),
        Command::Users(UsersCommand::Create(create)) => {
            let settings = create.settings.clone();
            (settings, Action::CreateUser(Box::new(create)))
        }
        Command::Users(UsersCommand::ResetMfa(reset)) => {
            let settings = reset.settings.clone();
            (settings, Action::ResetMfa(reset.email))
        }
        Command::Users(UsersCommand::Import(import)) => {
            let settings = import.settings.clone();
            (settings, Action::ImportUsers(import.file))
        }
        Command::Import(ImportCommand::BetterAuth(import)) => {
            let settings = import.settings.clone();
            (settings, Action::ImportBetterAuth(Box::new(import)))
        }
        Command::Audit(AuditCommand::Export(export)) => {
            let settings = export.settings.clone();
            (settings, Action::ExportAudit(Box::new(export)))
        }
        Command::Healthcheck(settings) => (settings, Action::Healthcheck),
    };
    let config = match Settings::validate(settings) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("servauth: {error}");
            return ExitCode::from(2);
        }
    };
    // Held to the end: dropping it writes the log lines still queued.
    let _log = if matches!(action, Action::Serve) {
        telemetry::init(&config.log)
    } else {
        None
    };
    let result = match action {
        Action::Serve => serve(config).await,
        Action::Migrate => migrate(&config).await,
        Action::CheckConfig => check_config(&config).await,
        Action::RotateKeys => rotate_keys(&config).await,
        Action::EncryptKeys => encrypt_keys(&config).await,
        Action::CreateUser(create) => create_user(&config, *create).await,
        Action::ImportUsers(file) => import_users(&config, &file).await,
        Action::ResetMfa(email) => reset_mfa(&config, &email).await,
        Action::ImportBetterAuth(import) => import_better_auth(&config, &import).await,
        Action::ExportAudit(export) => export_audit(&config, &export).await,
        Action::Healthcheck => healthcheck(&config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Done, but some rows were refused (each reported above).
        Err(error) if error.downcast_ref::<RowsRefused>().is_some() => {
            eprintln!("servauth: {error}");
            ExitCode::from(3)
        }
        // A setting found unusable only when used (a malformed database URL): one line, as
        // for the settings checked up front.
        Err(error) if error.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("servauth: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "servauth stopped");
            eprintln!("servauth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

enum Action {
    ImportBetterAuth(Box<ImportBetterAuth>),
    Serve,
    Migrate,
    CheckConfig,
    RotateKeys,
    EncryptKeys,
    CreateUser(Box<CreateUser>),
    ImportUsers(std::path::PathBuf),
    ResetMfa(String),
    ExportAudit(Box<ExportAudit>),
    Healthcheck,
}

/// The audit log as JSON Lines, oldest first: read newest first in pages (the admin API's
/// order), then written in reverse, page by page from the oldest end.
async fn export_audit(config: &Config, export: &ExportAudit) -> anyhow::Result<()> {
    let store = reachable_store(config).await?;
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_audit_events(&crate::store::AuditFilter {
                since: export.since,
                until: export.until,
                before,
                limit: 1000,
                ..crate::store::AuditFilter::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(page);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in pages.iter().rev().flat_map(|page| page.iter().rev()) {
        let line = crate::http::audit_event_json(event.clone());
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    store.close().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    App::build(config, Arc::new(SystemClock))
        .await?
        .serve(shutdown_signal())
        .await
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = connect_store(config).await?;
    store.migrate().await?;
    println!("migrations applied ({})", store.backend());
    store.close().await;
    Ok(())
}

/// How long the administrative commands wait for the database.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and, unless `SERVAUTH_MIGRATE=off`, migrates: for the commands that write.
async fn ready_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = reachable_store(config).await?;
    if config.migrate == MigrateMode::Auto {
        store.migrate().await.context("applying migrations")?;
    }
    Ok(store)
}

/// Connects and pings, naming `DATABASE_URL` when the database does not answer.
async fn reachable_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = connect_store(config).await?;
    tokio::time::timeout(DATABASE_TIMEOUT, store.ping())
        .await
        .context("the database did not answer within 5s (DATABASE_URL)")?
        .context("cannot reach the database (DATABASE_URL)")?;
    Ok(store)
}

async fn check_config(config: &Config) -> anyhow::Result<()> {
    let store = reachable_store(config).await?;
    println!("configuration ok; database reachable ({})", store.backend());
    store.close().await;
    Ok(())
}

async fn rotate_keys(config: &Config) -> anyhow::Result<()> {
    if let SigningConfig::Hs256(_) = config.signing {
        anyhow::bail!(
            "SERVAUTH_JWT_SECRET is set: tokens are signed with HS256 and there is no key to rotate \
             (change the secret instead)"
        );
    }
    let store = ready_store(config).await?;
    let now = SystemClock.now();
    let key = new_stored_signing_key(config.key_encryption_key.as_ref(), now)?;
    let kid = key.kid.clone();
    store.rotate_signing_key(key, now).await?;
    println!("new signing key {kid} is current; servers pick it up within a minute");
    store.close().await;
    Ok(())
}

/// Seals every stored private key under the current key encryption key, opening sealed ones
/// with the current or the previous key. Fails, naming the key, when one opens with neither;
/// the others are still sealed.
async fn encrypt_keys(config: &Config) -> anyhow::Result<()> {
    let Some(key) = config.key_encryption_key.as_ref() else {
        return Err(ConfigError::new(
            "SERVAUTH_KEY_ENCRYPTION_KEY",
            "must be set: it is the key the signing keys are sealed under",
        )
        .into());
    };
    let previous = config.previous_key_encryption_key.as_ref();
    let store = ready_store(config).await?;
    // Every key: none was retired before 1970.
    let keys = store
        .signing_keys(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .await?;
    let (mut sealed, mut unchanged, mut failed) = (0_usize, 0_usize, Vec::new());
    for record in keys {
        let plain = if !is_sealed(&record.private_key) {
            record.private_key.clone()
        } else if open_private_key(Some(key), &record.kid, &record.private_key).is_ok() {
            unchanged += 1;
            continue;
        } else {
            match open_private_key(previous, &record.kid, &record.private_key) {
                Ok(plain) => plain,
                Err(OpenKeyError::NoKey | OpenKeyError::WrongKey) => {
                    failed.push(record.kid);
                    continue;
                }
            }
        };
        let resealed = key.seal(&record.kid, &plain)?;
        if store
            .replace_signing_private_key(&record.kid, &record.private_key, &resealed)
            .await?
        {
            sealed += 1;
        } else {
            failed.push(record.kid);
        }
    }
    println!("sealed {sealed} signing keys; {unchanged} already sealed under this key");
    store.close().await;
    if !failed.is_empty() {
        return Err(ConfigError::new(
            "SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY",
            format!(
                "signing keys {} open with neither SERVAUTH_KEY_ENCRYPTION_KEY nor this \
                 setting (or changed meanwhile); they were left as they were",
                failed.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

async fn create_user(config: &Config, create: CreateUser) -> anyhow::Result<()> {
    let password = read_password_line()?;
    let email =
        Email::parse(&create.email, "email").map_err(|error| anyhow::anyhow!(error.message))?;
    let username = create
        .username
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|error| anyhow::anyhow!(error.message))?;
    let policy = PasswordPolicy::new(config.password_min_length);
    let password = policy
        .check(&password, Some(&email), "password")
        .map_err(|broken| {
            let reasons: Vec<String> = broken.into_iter().map(|error| error.message).collect();
            anyhow::anyhow!("password refused: {}", reasons.join(" "))
        })?;
    let hashing = PasswordHashing::new(config.argon2, 1, 0)?;
    let password_hash = hashing.hash(password).await?;
    let store = ready_store(config).await?;
    let role = if create.admin {
        Role::Admin
    } else {
        Role::User
    };
    let account = NewUser {
        email_verified: true,
        role,
        ..new_account(&email, username, password_hash, SystemClock.now())
    };
    let user = store.create_user(account).await?;
    println!("created {} {} ({})", role.as_str(), user.email, user.id);
    store.close().await;
    Ok(())
}

/// `servauth users reset-mfa`: every factor and recovery code of the account goes; its
/// owner is mailed. An unknown address is an error (exit 1).
async fn reset_mfa(config: &Config, email: &str) -> anyhow::Result<()> {
    let store = ready_store(config).await?;
    let Some(found) = store
        .find_credentials_by_email_key(&Email::key_of(email))
        .await?
    else {
        store.close().await;
        anyhow::bail!("no account has the address {email}");
    };
    let user = found.user;
    let removed = store.delete_factors(user.id).await?;
    store.close().await;
    tracing::warn!(user.id = %user.id, removed, "second factors reset by an operator");
    let templates = crate::mail::Templates::new(config.app_url.clone());
    crate::mail::send_and_wait(config, templates.factors_reset(&user.email)).await?;
    println!(
        "removed {removed} second factors of {} ({})",
        user.email, user.id
    );
    Ok(())
}

/// An import that finished but refused some rows: exit status 3.
#[derive(Debug, thiserror::Error)]
#[error("{0} rows were refused (see above); the rest were imported")]
struct RowsRefused(usize);

/// `servauth import better-auth`: read, check, write in one transaction, report.
async fn import_better_auth(config: &Config, import: &ImportBetterAuth) -> anyhow::Result<()> {
    use crate::import;
    let source = import::Source::parse(&import.from)
        .map_err(|message| ConfigError::new("--from", message))?;
    let snapshot = import::read(&source).await?;
    let limits = import::Limits {
        now: SystemClock.now(),
        session_ttl: config.session_ttl,
        argon2: config.argon2,
    };
    let mut plan = import::plan(&snapshot, limits);
    plan.import.dry_run = import.dry_run;
    let store = ready_store(config).await?;
    let outcome = store
        .import_better_auth(plan.import.clone())
        .await
        .context("writing the import (nothing was imported)");
    store.close().await;
    let outcome = outcome?;
    for refusal in plan.refused.iter().chain(&outcome.refused) {
        eprintln!(
            "refused {} {}: {}",
            refusal.kind, refusal.id, refusal.reason
        );
    }
    println!("{}", import::summary(&plan, &outcome, import.dry_run));
    let refused = plan.refused.len() + outcome.refused.len();
    if refused > 0 {
        return Err(RowsRefused(refused).into());
    }
    Ok(())
}

/// One line of a `users import` file.
#[derive(Debug, serde::Deserialize)]
struct ImportedUser {
    email: String,
    password_hash: String,
    username: Option<String>,
    email_verified: Option<bool>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Imports every valid line; a refused line (malformed, an unusable hash, a taken email or
/// username) is reported with its number and the rest go on. Fails when any was refused.
async fn import_users(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let store = ready_store(config).await?;
    let (mut imported, mut refused) = (0_usize, 0_usize);
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        match import_line(config, store.as_ref(), line).await {
            Ok(()) => imported += 1,
            Err(reason) => {
                refused += 1;
                eprintln!("line {}: {reason}", index + 1);
            }
        }
    }
    println!("imported {imported} users; refused {refused} lines");
    store.close().await;
    anyhow::ensure!(refused == 0, "{refused} lines were refused (see above)");
    Ok(())
}

async fn import_line(config: &Config, store: &dyn Store, line: &str) -> Result<(), String> {
    let user: ImportedUser =
        serde_json::from_str(line).map_err(|error| format!("not a user: {error}"))?;
    let email = Email::parse(&user.email, "email").map_err(|error| error.message)?;
    let username = user
        .username
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|error| error.message)?;
    crate::domain::StoredHash::parse(&user.password_hash, config.argon2)
        .map_err(|error| format!("password_hash: {error}"))?;
    let created_at = user.created_at.unwrap_or_else(|| SystemClock.now());
    let account = NewUser {
        email_verified: user.email_verified.unwrap_or(false),
        ..new_account(&email, username, user.password_hash, created_at)
    };
    store
        .create_user(account)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// One line of standard input without its line break; nothing else is trimmed.
fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    anyhow::ensure!(!line.is_empty(), "no password on standard input");
    Ok(line.to_owned())
}

/// `GET /live` on the configured listen address (loopback when it listens everywhere).
/// Written on a raw socket: a one-line request does not justify an HTTP client in the binary.
async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .context("no answer within 3s")?
        .with_context(|| format!("cannot reach {address}"))?;
    anyhow::ensure!(
        head.ends_with(b" 200"),
        "not live: {}",
        String::from_utf8_lossy(&head)
    );
    let _ = std::io::stdout().write_all(b"live\n");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
