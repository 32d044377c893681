//! `servauth import better-auth --from <database>`: brings a Better Auth database's users,
//! their password hashes (in Better Auth's own scrypt format, verified as they are and
//! re-hashed to Argon2id at each user's next login) and their live sessions over, so that a
//! cookie Better Auth issued keeps working against servauth with the same secret.
//!
//! The source is read in one snapshot, every row is checked here (addresses, names, images,
//! hashes within cost bounds, dates), and what passes is written by the store in one
//! transaction ([`Store::import_better_auth`]): nothing is half-imported, a second run
//! changes nothing, and every refused row is reported by its Better Auth id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr as _;

use anyhow::Context as _;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use crate::domain::{Email, StoredHash, new_account, parse_image, parse_name, token_hash};
use crate::store::{BetterAuthImport, ImportOutcome, ImportRefusal, ImportedSession, ImportedUser};

/// The longest id or session token taken from the source (Better Auth's are 32 characters).
const MAX_ID_CHARS: usize = 255;
const MAX_TOKEN_CHARS: usize = 512;
/// As the Better Auth face keeps of a user agent.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Where the Better Auth database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A SQLite file (`sqlite://path`, `sqlite:path` or a plain path).
    Sqlite(PathBuf),
}

impl Source {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if path.is_empty() {
            return Err("name a postgres:// URL or a SQLite file".to_owned());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// A row as read, every column as text (booleans and dates are stored differently by Better
/// Auth's PostgreSQL and SQLite dialects; [`parse_bool`] and [`parse_date`] take both).
type Row = Vec<Option<String>>;

/// The three tables, in one snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    users: Vec<Row>,
    accounts: Vec<Row>,
    sessions: Vec<Row>,
}

// The same statements serve both dialects: `CAST(… AS TEXT)` and double-quoted names are
// standard SQL.
const USERS: (&str, &str) = (
    "user",
    "SELECT CAST(\"id\" AS TEXT), CAST(\"name\" AS TEXT), CAST(\"email\" AS TEXT), \
     CAST(\"emailVerified\" AS TEXT), CAST(\"image\" AS TEXT), CAST(\"createdAt\" AS TEXT), \
     CAST(\"updatedAt\" AS TEXT) FROM \"user\"",
);
const ACCOUNTS: (&str, &str) = (
    "account",
    "SELECT CAST(\"id\" AS TEXT), CAST(\"userId\" AS TEXT), CAST(\"providerId\" AS TEXT), \
     CAST(\"password\" AS TEXT) FROM \"account\"",
);
const SESSIONS: (&str, &str) = (
    "session",
    "SELECT CAST(\"id\" AS TEXT), CAST(\"token\" AS TEXT), CAST(\"userId\" AS TEXT), \
     CAST(\"expiresAt\" AS TEXT), CAST(\"createdAt\" AS TEXT), CAST(\"updatedAt\" AS TEXT), \
     CAST(\"ipAddress\" AS TEXT), CAST(\"userAgent\" AS TEXT) FROM \"session\"",
);

/// Reads the source's `user`, `account` and `session` tables. A missing table or column, or
/// a file that is not a SQLite database, is an error: nothing is imported.
pub async fn read(source: &Source) -> anyhow::Result<Snapshot> {
    match source {
        Source::Postgres(url) => {
            // The URL may hold a password: no error below repeats it.
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(|_| anyhow::anyhow!("--from: not a usable PostgreSQL URL"))?;
            let mut connection = sqlx::PgConnection::connect_with(&options)
                .await
                .context("cannot reach the Better Auth database (--from)")?;
            // One consistent snapshot of the three tables, dates rendered in UTC.
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut connection)
                .await?;
            sqlx::query("SET LOCAL TIME ZONE 'UTC'")
                .execute(&mut connection)
                .await?;
            let mut snapshot = Snapshot::default();
            for (table, rows) in [
                (USERS, &mut snapshot.users),
                (ACCOUNTS, &mut snapshot.accounts),
                (SESSIONS, &mut snapshot.sessions),
            ] {
                *rows = sqlx::query(table.1)
                    .fetch_all(&mut connection)
                    .await
                    .with_context(|| format!("reading the Better Auth table \"{}\"", table.0))?
                    .iter()
                    .map(|row| text_columns(row, row.len()))
                    .collect::<Result<_, _>>()?;
            }
            sqlx::query("COMMIT").execute(&mut connection).await?;
            connection.close().await.ok();
            Ok(snapshot)
        }
        Source::Sqlite(path) => {
            anyhow::ensure!(
                path.is_file(),
                "--from: {} is not a file (a SQLite database, or a postgres:// URL)",
                path.display()
            );
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .create_if_missing(false);
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            // A read transaction: one snapshot even if Better Auth is still writing.
            sqlx::query("BEGIN").execute(&mut connection).await?;
            let mut snapshot = Snapshot::default();
            for (table, rows) in [
                (USERS, &mut snapshot.users),
                (ACCOUNTS, &mut snapshot.accounts),
                (SESSIONS, &mut snapshot.sessions),
            ] {
                *rows = sqlx::query(table.1)
                    .fetch_all(&mut connection)
                    .await
                    .with_context(|| format!("reading the Better Auth table \"{}\"", table.0))?
                    .iter()
                    .map(|row| text_columns(row, row.len()))
                    .collect::<Result<_, _>>()?;
            }
            sqlx::query("COMMIT").execute(&mut connection).await?;
            connection.close().await.ok();
            Ok(snapshot)
        }
    }
}

fn text_columns<R>(row: &R, columns: usize) -> Result<Row, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    (0..columns).map(|index| row.try_get(index)).collect()
}

/// What the import will write, what it refused before the store saw it, and what it
/// leaves out on purpose.
#[derive(Debug, Default)]
pub struct Plan {
    pub import: BetterAuthImport,
    pub refused: Vec<ImportRefusal>,
    /// Sessions past their expiry: nothing to keep signed in.
    pub expired_sessions: u64,
    /// Accounts of other providers (sign-in with them comes later).
    pub other_accounts: u64,
}

/// The lifetimes the imported sessions must fit in.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub now: DateTime<Utc>,
    /// `SERVAUTH_SESSION_TTL`: no session outlives this from its start.
    pub session_ttl: Duration,
    pub argon2: crate::config::Argon2Config,
}

fn column(row: &Row, index: usize) -> Option<&str> {
    row.get(index).and_then(|value| value.as_deref())
}

/// A usable id: present, short, printable.
fn id_of(row: &Row, index: usize) -> Option<&str> {
    column(row, index).filter(|id| {
        !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control)
    })
}

/// An id for the report: the row's, escaped to one line, or `#<n>` (its position) when it
/// has none.
fn report_id(row: &Row, position: usize) -> String {
    match column(row, 0) {
        Some(id) if !id.is_empty() => id
            .chars()
            .take(MAX_ID_CHARS)
            .flat_map(char::escape_debug)
            .collect(),
        _ => format!("#{}", position + 1),
    }
}

/// Better Auth's booleans: PostgreSQL's `true`/`false`, SQLite's `1`/`0`.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// Better Auth's dates: ISO 8601 strings on SQLite (`2026-12-03T11:38:32.843Z`), PostgreSQL's
/// text rendering of `timestamptz` in UTC (`2026-12-03 11:38:32.843+00`), a zone-less
/// timestamp (taken as UTC), or milliseconds since the epoch.
fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(at.and_utc());
        }
    }
    raw.parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

fn date_column(row: &Row, index: usize, name: &str) -> Result<DateTime<Utc>, String> {
    column(row, index)
        .and_then(parse_date)
        .ok_or_else(|| format!("{name}: not a date"))
}

/// Checks every row and decides what to bring over (see the module's documentation).
pub fn plan(snapshot: &Snapshot, limits: Limits) -> Plan {
    let mut plan = Plan::default();
    let refuse = |plan: &mut Plan, kind: &'static str, id: String, reason: String| {
        plan.refused.push(ImportRefusal { kind, id, reason });
    };

    // Credential accounts by user id; others counted.
    let mut credentials: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in &snapshot.accounts {
        if column(row, 2) != Some("credential") {
            plan.other_accounts += 1;
            continue;
        }
        if let Some(user_id) = column(row, 1) {
            credentials.entry(user_id).or_default().push(row);
        }
    }
    let mut user_ids: HashMap<&str, usize> = HashMap::new();
    for row in &snapshot.users {
        if let Some(id) = column(row, 0) {
            *user_ids.entry(id).or_default() += 1;
        }
    }
    for (user_id, rows) in &credentials {
        if !user_ids.contains_key(user_id) {
            for row in rows {
                refuse(
                    &mut plan,
                    "account",
                    report_id(row, 0),
                    "its user is not in the \"user\" table".to_owned(),
                );
            }
        }
    }

    // Users: each checked alone, then addresses compared across all of them.
    let mut candidates: Vec<(String, ImportedUser)> = Vec::new();
    for (position, row) in snapshot.users.iter().enumerate() {
        let shown = report_id(row, position);
        match check_user(row, &user_ids, &credentials, limits) {
            Ok(user) => candidates.push((shown, user)),
            Err(reason) => refuse(&mut plan, "user", shown, reason),
        }
    }
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (_, user) in &candidates {
        by_key
            .entry(user.user.email_key.as_str())
            .or_default()
            .push(user.better_auth_id.as_str());
    }
    let mut accepted: HashMap<String, ()> = HashMap::new();
    let mut users = Vec::new();
    for (shown, user) in &candidates {
        let holders = &by_key[user.user.email_key.as_str()];
        if holders.len() > 1 {
            // Which of them owns the address cannot be told from here: none is imported.
            let others: Vec<&str> = holders
                .iter()
                .copied()
                .filter(|id| *id != user.better_auth_id)
                .collect();
            refuse(
                &mut plan,
                "user",
                shown.clone(),
                format!(
                    "its address is also that of user {} (the same up to case or Unicode form)",
                    others.join(", ")
                ),
            );
            continue;
        }
        accepted.insert(user.better_auth_id.clone(), ());
        users.push(user.clone());
    }

    // Sessions of accepted users that are still live.
    let mut tokens: HashMap<&str, usize> = HashMap::new();
    for row in &snapshot.sessions {
        if let Some(token) = column(row, 1) {
            *tokens.entry(token).or_default() += 1;
        }
    }
    let mut sessions = Vec::new();
    for (position, row) in snapshot.sessions.iter().enumerate() {
        let shown = report_id(row, position);
        match check_session(row, &tokens, &accepted, limits) {
            Ok(Some(session)) => sessions.push(session),
            Ok(None) => plan.expired_sessions += 1,
            Err(reason) => refuse(&mut plan, "session", shown, reason),
        }
    }
    plan.import = BetterAuthImport {
        users,
        sessions,
        dry_run: false,
    };
    plan
}

fn check_user(
    row: &Row,
    user_ids: &HashMap<&str, usize>,
    credentials: &HashMap<&str, Vec<&Row>>,
    limits: Limits,
) -> Result<ImportedUser, String> {
    let id = id_of(row, 0).ok_or("id: missing, too long or not printable")?;
    if user_ids.get(id).copied().unwrap_or(0) > 1 {
        return Err("another row has the same id".to_owned());
    }
    let email = Email::parse(column(row, 2).unwrap_or(""), "email")
        .map_err(|error| format!("email: {}", error.message))?;
    let name = match column(row, 1).map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            Some(parse_name(raw, "name").map_err(|error| format!("name: {}", error.message))?)
        }
    };
    let image = match column(row, 4).map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            Some(parse_image(raw, "image").map_err(|error| format!("image: {}", error.message))?)
        }
    };
    let email_verified = column(row, 3)
        .and_then(parse_bool)
        .ok_or("emailVerified: not a boolean")?;
    let created_at = date_column(row, 5, "createdAt")?.min(limits.now);
    let updated_at = date_column(row, 6, "updatedAt")?.clamp(created_at, limits.now);
    let password_hash = match credentials.get(id).map(Vec::as_slice) {
        None | Some([]) => {
            return Err(
                "no credential account (a password): sign-in with other providers is not \
                 supported yet"
                    .to_owned(),
            );
        }
        Some([account]) => column(account, 3)
            .filter(|hash| !hash.is_empty())
            .ok_or("its credential account has no password")?,
        Some(_) => return Err("more than one credential account".to_owned()),
    };
    // Never quoted: the reason names the kind of problem, not the hash.
    StoredHash::parse(password_hash, limits.argon2)
        .map_err(|error| format!("password: {error}"))?;
    Ok(ImportedUser {
        user: crate::store::NewUser {
            name,
            image,
            email_verified,
            ..new_account(&email, None, password_hash.to_owned(), created_at)
        },
        updated_at,
        better_auth_id: id.to_owned(),
    })
}

/// A live session to bring over, `None` for one already expired.
fn check_session(
    row: &Row,
    tokens: &HashMap<&str, usize>,
    accepted: &HashMap<String, ()>,
    limits: Limits,
) -> Result<Option<ImportedSession>, String> {
    let id = id_of(row, 0).ok_or("id: missing, too long or not printable")?;
    let token = column(row, 1)
        .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN_CHARS)
        .ok_or("token: missing or too long")?;
    if tokens.get(token).copied().unwrap_or(0) > 1 {
        return Err("another session has the same token".to_owned());
    }
    let user_id = column(row, 2).unwrap_or("");
    let expires_at = date_column(row, 3, "expiresAt")?;
    let created_at = date_column(row, 4, "createdAt")?;
    let updated_at = date_column(row, 5, "updatedAt")?;
    if expires_at <= limits.now {
        return Ok(None);
    }
    if !accepted.contains_key(user_id) {
        return Err("its user is not imported (refused or not in the \"user\" table)".to_owned());
    }
    // servauth caps a session at SERVAUTH_SESSION_TTL from its start. A Better Auth session
    // slid for longer than that keeps its own expiry (at most expiresIn away) and is not slid
    // past it: its start is taken as late as that needs.
    let expires_at = expires_at.min(limits.now + limits.session_ttl);
    let created_at = created_at
        .max(expires_at - limits.session_ttl)
        .min(limits.now);
    let last_used_at = updated_at.clamp(created_at, limits.now);
    let ip = column(row, 6).and_then(|raw| raw.trim().parse::<IpAddr>().ok());
    let user_agent = column(row, 7)
        .filter(|agent| !agent.is_empty())
        .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect());
    Ok(Some(ImportedSession {
        better_auth_id: id.to_owned(),
        user_better_auth_id: user_id.to_owned(),
        id: Uuid::now_v7(),
        token_hash: token_hash(token),
        user_agent,
        ip: ip.map(|ip| ip.to_string()),
        created_at,
        last_used_at,
        expires_at,
    }))
}

/// The summary line of a run.
pub fn summary(plan: &Plan, outcome: &ImportOutcome, dry_run: bool) -> String {
    let refused = plan.refused.len() + outcome.refused.len();
    format!(
        "{}imported: {} users, {} sessions; already present: {} users, {} sessions; skipped: \
         {} expired sessions, {} accounts of other providers; refused: {refused}",
        if dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        outcome.users_imported,
        outcome.sessions_imported,
        outcome.users_present,
        outcome.sessions_present,
        plan.expired_sessions,
        plan.other_accounts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("postgres://u:p@h/db"),
            Ok(Source::Postgres("postgres://u:p@h/db".to_owned()))
        );
        assert_eq!(
            Source::parse("sqlite:///tmp/a.db"),
            Ok(Source::Sqlite(PathBuf::from("/tmp/a.db")))
        );
        assert_eq!(
            Source::parse("./auth.db"),
            Ok(Source::Sqlite(PathBuf::from("./auth.db")))
        );
        assert!(Source::parse(" ").is_err());
    }

    #[test]
    fn dates_of_both_dialects() {
        let expected = DateTime::parse_from_rfc3339("2026-12-03T11:38:32.843Z")
            .map(|at| at.with_timezone(&Utc))
            .ok();
        assert_eq!(parse_date("2026-12-03T11:38:32.843Z"), expected);
        assert_eq!(parse_date("2026-12-03 11:38:32.843+00"), expected);
        assert_eq!(parse_date("2026-12-03 11:38:32.843"), expected);
        assert_eq!(parse_date("1796297912843"), expected);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_bool("t"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
