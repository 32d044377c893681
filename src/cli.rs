//! The command line: `servauth [serve]`, `servauth migrate`. Every command reads the same
//! settings ([`Settings`]), each a flag with its environment variable.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "servauth",
    version,
    about = "Self-hosted authentication server"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// With no subcommand, `servauth` serves with these settings.
    #[command(flatten)]
    pub serve: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Settings),
    /// Apply the embedded database migrations, then exit.
    Migrate(Settings),
    /// Configuration: `servauth config check`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Signing keys: `servauth keys rotate`, `servauth keys encrypt`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Accounts: `servauth users create`.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Bring accounts over from another system: `servauth import better-auth --from …`.
    #[command(subcommand)]
    Import(ImportCommand),
    /// The audit log: `servauth audit export`.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Ask the server on the configured listen address whether it is live (`GET /live`);
    /// exit 0 when it is. For container health checks.
    Healthcheck(Settings),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the settings and reach the database, then exit 0, or name what is wrong.
    Check(Settings),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current. Previous public keys stay in the JWKS until every
    /// token they signed has expired; every server picks the new key up within a minute.
    Rotate(Settings),
    /// Seal every stored private signing key under `SERVAUTH_KEY_ENCRYPTION_KEY`: plain ones,
    /// and ones sealed under `SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY` (re-encryption after a
    /// change of key). Keys already sealed under the current key are left alone.
    Encrypt(Settings),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account (its address counts as verified), reading the password from
    /// standard input.
    Create(CreateUser),
    /// Import accounts from a JSON Lines file of `{email, password_hash, username?,
    /// email_verified?, created_at?}`: bcrypt, scrypt and argon2 hashes, re-hashed with the
    /// current parameters at each account's next login.
    Import(ImportUsers),
    /// Remove every second factor of an account (TOTP, passkeys, recovery codes), for a user
    /// who lost them; its owner is mailed. The password alone signs in afterwards.
    ResetMfa(ResetMfa),
}

#[derive(Debug, clap::Args)]
pub struct ResetMfa {
    #[arg(long)]
    pub email: String,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the audit events to standard output as JSON Lines, oldest first (the shape of
    /// `GET /admin/audit`'s events).
    Export(ExportAudit),
}

#[derive(Debug, clap::Args)]
pub struct ExportAudit {
    /// Only events from this time on (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a Better Auth database: its users (`user`), their passwords (`account` rows of
    /// provider `credential`, Better Auth's scrypt hashes, re-hashed at each user's next
    /// login) and their live sessions (`session`), so that with the same secret the cookies
    /// Better Auth issued keep working. One transaction; a second run changes nothing; each
    /// refused row is reported by its id (exit 3 when any was).
    BetterAuth(ImportBetterAuth),
}

#[derive(Debug, clap::Args)]
pub struct ImportBetterAuth {
    /// The Better Auth database: a `postgres://` URL or a SQLite file.
    #[arg(long, value_name = "URL_OR_FILE")]
    pub from: String,
    /// Check and report everything, then write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, clap::Args)]
pub struct ImportUsers {
    /// The JSON Lines file (`-` for standard input).
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, clap::Args)]
pub struct CreateUser {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub username: Option<String>,
    /// Give the account the `admin` role.
    #[arg(long)]
    pub admin: bool,
    /// Read the password from standard input (one line; only the line break is removed).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub settings: Settings,
}

impl Cli {
    /// Parses the process arguments. A bad value ends the process with one line that names
    /// the setting by its environment variable and flag; `--help`/`--version` print as usual.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse() {
            Ok(cli) => cli,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
            {
                error.exit()
            }
            Err(error) => {
                eprintln!("servauth: {}", one_line(&error));
                std::process::exit(2);
            }
        }
    }

    /// The command to run, `serve` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

/// Renders a clap error as one line, naming the environment variable behind a flag.
fn one_line(error: &clap::Error) -> String {
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.clone()),
        _ => None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let reason = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| {
            error
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    match (arg, value) {
        (Some(arg), Some(_)) => {
            let flag = arg.split_whitespace().next().unwrap_or_default().to_owned();
            let env = env_var_of(&flag)
                .map(|env| format!("{env} ({flag})"))
                .unwrap_or(flag);
            format!("invalid {env}: {reason}")
        }
        _ => reason.trim_start_matches("error: ").to_owned(),
    }
}

/// The environment variable of a `--flag` of `serve`, if it has one.
fn env_var_of(flag: &str) -> Option<String> {
    let long = flag.strip_prefix("--")?;
    let command = Cli::command();
    let serve = command.find_subcommand("serve")?;
    serve
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["servauth", "--port", "9000"]).unwrap();
        assert!(
            matches!(cli.into_command(), Command::Serve(settings) if settings.port == Some(9000))
        );
    }

    #[test]
    fn a_bad_duration_is_one_line_naming_the_variable() {
        let error = Cli::try_parse_from(["servauth", "serve", "--access-ttl", "soon"]).unwrap_err();
        let line = one_line(&error);
        assert!(
            line.starts_with("invalid SERVAUTH_ACCESS_TTL (--access-ttl): "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}
