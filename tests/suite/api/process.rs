//! The real binary: settings errors at start, `migrate`, logs that never hold a secret, and
//! a graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{PASSWORD, read};
use crate::support::smtp::SmtpSink;

const BIN: &str = env!("CARGO_BIN_EXE_servauth");

/// Runs `servauth serve` with these environment variables and expects it to refuse to start.
fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        )
        .env("SERVAUTH_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn invalid_settings_stop_the_start_with_one_line_naming_the_setting() {
    let cases = [
        (("DATABASE_URL", "mysql://db/servauth"), "DATABASE_URL"),
        (("SERVAUTH_JWT_SECRET", "too-short"), "SERVAUTH_JWT_SECRET"),
        (("SERVAUTH_ACCESS_TTL", "fortnight"), "SERVAUTH_ACCESS_TTL"),
        (("SERVAUTH_SESSION_TTL", "0s"), "SERVAUTH_SESSION_TTL"),
        (
            ("SERVAUTH_PASSWORD_MIN_LENGTH", "6"),
            "SERVAUTH_PASSWORD_MIN_LENGTH",
        ),
        (
            ("SERVAUTH_COOKIE_SAMESITE", "sideways"),
            "SERVAUTH_COOKIE_SAMESITE",
        ),
        (("SERVAUTH_PUBLIC_URL", "not a url"), "SERVAUTH_PUBLIC_URL"),
    ];
    for ((name, value), expected) in cases {
        let line = refused_start(&[(name, value)]);
        assert!(line.contains(expected), "{name}={value}: {line}");
        assert!(
            !line.contains("too-short"),
            "the secret is not echoed: {line}"
        );
    }
    let both = refused_start(&[
        ("SERVAUTH_COOKIE_SAMESITE", "none"),
        ("SERVAUTH_COOKIE_SECURE", "false"),
    ]);
    assert!(both.contains("SERVAUTH_COOKIE_SAMESITE"), "{both}");
    let bad_postgres = refused_start(&[("DATABASE_URL", "postgres://user@host:notaport/db")]);
    assert!(bad_postgres.contains("DATABASE_URL"), "{bad_postgres}");
}

#[test]
fn migrate_creates_and_migrates_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh.db");
    let status = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", file.display()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(file.exists());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary on a fresh SQLite file and a free port, with cheap hashing and these
/// extra settings, its output piped; returns once it answers `/health`.
/// Stops a server of [`spawn_server`] with SIGTERM and reads what it logged: the whole
/// output, and its lines that are JSON.
pub(super) fn stop_and_read_log(child: std::process::Child) -> (String, Vec<Value>) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stdout = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let lines = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (stdout, lines)
}

pub(super) async fn spawn_server(
    extra: &[(&str, &str)],
) -> (std::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn_server_in(&dir, extra).await;
    (child, base, dir)
}

/// As [`spawn_server`], on the database file in `dir` (a server started again finds what
/// the last one left).
pub(super) async fn spawn_server_in(
    dir: &tempfile::TempDir,
    extra: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = free_port();
    let child = Command::new(BIN)
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("server.db").display()),
        )
        .env("SERVAUTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("SERVAUTH_ARGON2_MEMORY_KIB", "64")
        .env("SERVAUTH_ARGON2_ITERATIONS", "1")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::support::client();
    let started = Instant::now();
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

#[tokio::test]
async fn logs_are_json_lines_without_secrets_and_sigterm_stops_cleanly() {
    let (child, base, _dir) = spawn_server(&[("SERVAUTH_DEV_LOG_MAIL", "true")]).await;
    let client = crate::support::client();
    let register = read(
        client
            .post(format!("{base}/auth/register"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let login = read(
        client
            .post(format!("{base}/auth/login"))
            .header(
                "cookie",
                "servauth_refresh=cookie-value-that-must-not-be-logged",
            )
            .json(&json!({"email": "ada@example.com", "password": PASSWORD, "client": "native"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let me = client
        .get(format!("{base}/auth/me?token=query-secret"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit 0 after SIGTERM: {output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let request_lines = lines
        .iter()
        .filter(|line| line["message"] == "finished processing request")
        .count();
    assert_eq!(
        request_lines, 4,
        "one line per request (health polls included): {stdout}"
    );
    let secrets = [
        PASSWORD.to_owned(),
        access,
        login.body["refresh_token"].as_str().unwrap().to_owned(),
        register.body["csrf_token"].as_str().unwrap().to_owned(),
        "cookie-value-that-must-not-be-logged".to_owned(),
        "query-secret".to_owned(),
    ];
    for secret in &secrets {
        assert!(
            !stdout.contains(secret.as_str()),
            "log holds a secret: {secret}"
        );
    }
    assert!(stdout.contains("servauth listening"));
    assert!(
        stdout.contains("email not sent: no SMTP server configured")
            && stdout.contains("/verify-email?token="),
        "without SMTP and with SERVAUTH_DEV_LOG_MAIL, mail and its link go to the log"
    );
}

/// Without SMTP and without `SERVAUTH_DEV_LOG_MAIL`, no mail is sent and no link (a
/// credential) reaches the log: one line says the mail was not sent, and the start warns.
#[tokio::test]
async fn without_smtp_mail_is_not_sent_and_no_link_reaches_the_log() {
    let (child, base, _dir) = spawn_server(&[]).await;
    let client = crate::support::client();
    let register = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let forgot = client
        .post(format!("{base}/auth/password/forgot"))
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 202);
    // Mail is handled after the answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stdout, lines) = stop_and_read_log(child);
    let not_sent = lines
        .iter()
        .filter(|line| {
            line["message"] == "mail not sent: no SMTP server configured (SERVAUTH_SMTP_URL)"
        })
        .count();
    assert_eq!(not_sent, 2, "verification and reset: {stdout}");
    assert!(
        lines.iter().any(|line| line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|message| message.contains("mail is not sent"))),
        "a warning at start: {stdout}"
    );
    for leak in ["token=", "/verify-email", "/reset-password"] {
        assert!(!stdout.contains(leak), "{leak} in the log: {stdout}");
    }
}

/// A database file the server creates is readable by its owner only, and so are the WAL
/// and shared-memory files SQLite makes beside it (they hold the same data).
#[cfg(unix)]
#[tokio::test]
async fn a_fresh_sqlite_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = crate::support::app::TestApp::spawn(crate::support::db::Backend::Sqlite)
        .await
        .unwrap();
    app.register("ada@example.com").await;
    let file = app.db_url().strip_prefix("sqlite://").unwrap().to_owned();
    for path in [file.clone(), format!("{file}-wal"), format!("{file}-shm")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}: {mode:o}");
    }
}

/// A mail server that is down costs the API nothing; each message waits in the outbox
/// and is delivered once the server is back (the first retry is 5 s after the failure).
#[tokio::test]
async fn a_mail_server_that_is_down_is_retried_and_logged_while_the_api_answers() {
    let closed = free_port();
    let smtp = format!("smtp://127.0.0.1:{closed}");
    let (child, base, _dir) = spawn_server(&[("SERVAUTH_SMTP_URL", &smtp)]).await;
    let client = crate::support::client();
    let register = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        register.status(),
        201,
        "the API answers whatever the mail server does"
    );
    let forgot = client
        .post(format!("{base}/auth/password/forgot"))
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let Some(sink) = SmtpSink::start_with(closed, None).await else {
        return;
    };
    sink.wait_for_n("ada@example.com", "Confirm your email", 1)
        .await;
    sink.wait_for_n("ada@example.com", "Reset your password", 1)
        .await;
    let (stdout, lines) = stop_and_read_log(child);
    let retried: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "email delivery failed; retrying later")
        .collect();
    assert_eq!(
        retried.len(),
        2,
        "one failed attempt for each message: {stdout}"
    );
    assert!(
        retried
            .iter()
            .all(|line| line["level"] == "WARN" && line["attempt"] == 1)
    );
    assert_eq!(
        lines
            .iter()
            .filter(|line| line["message"] == "email delivered")
            .count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains("token="), "no link in the log: {stdout}");
}

/// `kill -9` while the mail server holds the messages unanswered: nothing is lost, and the
/// server started again delivers each again under its `Message-ID`, so a receiver that
/// deduplicates by id gets each exactly once.
#[tokio::test]
async fn the_outbox_survives_a_kill_mid_delivery() {
    let port = free_port();
    let Some(sink) = SmtpSink::start_with(port, Some(Duration::from_secs(3))).await else {
        return;
    };
    let smtp = format!("smtp://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_server_in(&dir, &[("SERVAUTH_SMTP_URL", &smtp)]).await;
    let client = crate::support::client();
    let addresses = ["ada@example.com", "bob@example.com", "eve@example.com"];
    for email in addresses {
        let registered = client
            .post(format!("{base}/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
    }
    // Stored by the mail server, not yet answered: kill the sender now.
    for email in addresses {
        sink.wait_for(email, "Confirm your email").await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(sink.messages().len(), 3);

    let (child, _base) = spawn_server_in(&dir, &[("SERVAUTH_SMTP_URL", &smtp)]).await;
    // What was in flight is delivered again once the dead server's lease (15 s) is over.
    let started = Instant::now();
    while sink.messages().len() <= 3 {
        if started.elapsed() > Duration::from_secs(40) {
            let (stdout, _) = stop_and_read_log(child);
            panic!("not delivered again: {stdout}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let messages = sink.messages();
    let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for mail in &messages {
        assert!(!mail.message_id.is_empty(), "{mail:?}");
        by_id
            .entry(mail.message_id.clone())
            .or_default()
            .push(mail.to.clone());
    }
    // Deduplicated by id: exactly the three messages, each always to its one address.
    assert_eq!(
        by_id.len(),
        3,
        "three messages, each under one id: {by_id:?}"
    );
    for (id, to) in &by_id {
        assert!(to.iter().all(|address| *address == to[0]), "{id}: {to:?}");
        assert!(to.len() <= 2, "{id} sent {} times", to.len());
    }
    for email in addresses {
        assert!(by_id.values().any(|to| to[0].contains(email)), "{email}");
    }
    let (stdout, _) = stop_and_read_log(child);
    assert!(!stdout.contains("token="), "{stdout}");
}

#[test]
fn the_readme_lists_every_setting() {
    use clap::CommandFactory as _;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let command = servauth::cli::Cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    let variables: Vec<String> = serve
        .get_arguments()
        .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
        .collect();
    assert!(variables.len() >= 20, "{variables:?}");
    for variable in variables {
        assert!(
            readme.contains(&format!("| `{variable}` |")),
            "README lacks {variable}"
        );
    }
}
