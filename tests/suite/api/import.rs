//! `servauth import better-auth` (issue 16), run as the operator runs it (the binary), from a
//! Better Auth database in Better Auth's own schema (what its migration creates on each
//! dialect) into a fresh servauth database: the SQLite source into the SQLite backend, the
//! PostgreSQL source into the PostgreSQL backend. The end-to-end run with a real Better Auth
//! server writing the source is `tests/better-auth/import.sh`.

use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{AssertSqlSafe, Connection as _};

use crate::support::app::TestApp;
use crate::support::db::TestDatabase;
use crate::support::{Backend, both_backends};

both_backends! {
    users_passwords_and_live_sessions_come_over_and_a_second_run_changes_nothing,
    a_hostile_database_gets_each_bad_row_refused_and_the_rest_imported,
    a_failure_while_writing_imports_nothing,
    a_database_without_better_auths_tables_imports_nothing,
    a_dry_run_writes_nothing,
}

const BIN: &str = env!("CARGO_BIN_EXE_servauth");
const SECRET: &str = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const ORIGIN: &str = "http://localhost:8080";

/// `correct horse battery staple` hashed by Better Auth 1.7.25's sign-up (scrypt
/// `saltHex:keyHex`).
const PASSWORD: &str = "correct horse battery staple";
const HASH: &str = "25a3f5acc0ec0100783a3f10a96791cd:dd8fad4b672749b08ea34a44e4ac038bcff434d00cc713e4e094cbc813e464728e8cc7eca22eb756cbdf8b2c5379dbf69bdbb8110d35c55af5a707559c974ec0";

/// Better Auth 1.7.25's schema as its migration (`getMigrations`) writes it on SQLite.
const SQLITE_SCHEMA: &str = r#"
create table "user" ("id" text not null primary key, "name" text not null, "email" text not null unique, "emailVerified" integer not null, "image" text, "createdAt" date not null, "updatedAt" date not null);
create table "session" ("id" text not null primary key, "expiresAt" date not null, "token" text not null unique, "createdAt" date not null, "updatedAt" date not null, "ipAddress" text, "userAgent" text, "userId" text not null references "user" ("id") on delete cascade);
create table "account" ("id" text not null primary key, "accountId" text not null, "providerId" text not null, "userId" text not null references "user" ("id") on delete cascade, "accessToken" text, "refreshToken" text, "idToken" text, "accessTokenExpiresAt" date, "refreshTokenExpiresAt" date, "scope" text, "password" text, "createdAt" date not null, "updatedAt" date not null);
"#;

/// The same on PostgreSQL.
const POSTGRES_SCHEMA: &str = r#"
create table "user" ("id" text not null primary key, "name" text not null, "email" text not null unique, "emailVerified" boolean not null, "image" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz default CURRENT_TIMESTAMP not null);
create table "session" ("id" text not null primary key, "expiresAt" timestamptz not null, "token" text not null unique, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null, "ipAddress" text, "userAgent" text, "userId" text not null references "user" ("id") on delete cascade);
create table "account" ("id" text not null primary key, "accountId" text not null, "providerId" text not null, "userId" text not null references "user" ("id") on delete cascade, "accessToken" text, "refreshToken" text, "idToken" text, "accessTokenExpiresAt" timestamptz, "refreshTokenExpiresAt" timestamptz, "scope" text, "password" text, "createdAt" timestamptz default CURRENT_TIMESTAMP not null, "updatedAt" timestamptz not null);
"#;

/// A Better Auth database of the backend's dialect, filled by the test.
struct Source {
    backend: Backend,
    /// What `--from` takes.
    from: String,
    _dir: Option<tempfile::TempDir>,
    _postgres: Option<TestDatabase>,
}

impl Source {
    async fn create(backend: Backend, schema: bool) -> Self {
        let source = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("better-auth.db");
                std::fs::File::create(&path).unwrap();
                Self {
                    backend,
                    from: path.display().to_string(),
                    _dir: Some(dir),
                    _postgres: None,
                }
            }
            Backend::Postgres => {
                let db = TestDatabase::create(Backend::Postgres)
                    .await
                    .expect("PostgreSQL for the source");
                Self {
                    backend,
                    from: db.url.clone(),
                    _dir: None,
                    _postgres: Some(db),
                }
            }
        };
        if schema {
            source
                .exec(match backend {
                    Backend::Sqlite => SQLITE_SCHEMA,
                    Backend::Postgres => POSTGRES_SCHEMA,
                })
                .await;
        }
        source
    }

    async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.from))
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.from).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// A boolean literal of the dialect.
    fn bool(&self, value: bool) -> &'static str {
        match (self.backend, value) {
            (Backend::Sqlite, true) => "1",
            (Backend::Sqlite, false) => "0",
            (Backend::Postgres, true) => "true",
            (Backend::Postgres, false) => "false",
        }
    }

    async fn user(&self, id: &str, email: &str, verified: bool) {
        let now = date(Duration::zero());
        self.exec(&format!(
            "INSERT INTO \"user\" VALUES ('{id}', 'Name of {id}', '{email}', {}, NULL, '{now}', '{now}')",
            self.bool(verified)
        ))
        .await;
    }

    async fn account(&self, id: &str, user: &str, provider: &str, password: Option<&str>) {
        let now = date(Duration::zero());
        let password = password.map_or("NULL".to_owned(), |hash| format!("'{hash}'"));
        self.exec(&format!(
            "INSERT INTO \"account\" (\"id\", \"accountId\", \"providerId\", \"userId\", \
             \"password\", \"createdAt\", \"updatedAt\") \
             VALUES ('{id}', '{user}', '{provider}', '{user}', {password}, '{now}', '{now}')"
        ))
        .await;
    }

    /// A session of `user` with this token that ends `expires_in` from now.
    async fn session(&self, id: &str, user: &str, token: &str, expires_in: Duration) {
        let (now, expires) = (date(-Duration::hours(1)), date(expires_in));
        self.exec(&format!(
            "INSERT INTO \"session\" VALUES ('{id}', '{expires}', '{token}', '{now}', '{now}', \
             '127.0.0.1', 'Mozilla/5.0 (test)', '{user}')"
        ))
        .await;
    }
}

fn date(from_now: Duration) -> String {
    (Utc::now() + from_now).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Runs `servauth import better-auth --from <source> [extra]` against the servauth database.
/// Asynchronous, so that a server of the test's own runtime keeps running meanwhile (a
/// blocked runtime would hold whatever write that server had begun).
async fn import(
    database_url: &str,
    source: &Source,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let output: Output = tokio::process::Command::new(BIN)
        .args(["import", "better-auth", "--from", &source.from])
        .args(extra)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The cookie value Better Auth sets for a session token: `token.base64(HMAC-SHA256)`,
/// URL-encoded.
fn signed_cookie(token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    let value = format!("{token}.{signature}");
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn get_session(app: &TestApp, token: &str) -> Value {
    let reply = app
        .client
        .get(app.url("/api/auth/get-session"))
        .header(
            "cookie",
            format!("better-auth.session_token={}", signed_cookie(token)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    reply.json().await.unwrap()
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.client
        .post(app.url("/api/auth/sign-in/email"))
        .header("origin", ORIGIN)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn serve(db: TestDatabase) -> TestApp {
    TestApp::spawn_on(db, &["--better-auth-secret", SECRET]).await
}

async fn users_passwords_and_live_sessions_come_over_and_a_second_run_changes_nothing(
    backend: Backend,
) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let source = Source::create(backend, true).await;
    source
        .user("baUserAda0000000000000000000001", "ada@example.com", true)
        .await;
    source
        .user("baUserBob0000000000000000000002", "bob@example.com", false)
        .await;
    source
        .account(
            "acc1",
            "baUserAda0000000000000000000001",
            "credential",
            Some(HASH),
        )
        .await;
    source
        .account(
            "acc2",
            "baUserBob0000000000000000000002",
            "credential",
            Some(HASH),
        )
        .await;
    source
        .account("acc3", "baUserAda0000000000000000000001", "github", None)
        .await;
    source
        .session(
            "s1",
            "baUserAda0000000000000000000001",
            "adaLiveToken000000000000000001",
            Duration::days(6),
        )
        .await;
    source
        .session(
            "s2",
            "baUserBob0000000000000000000002",
            "bobLiveToken000000000000000002",
            Duration::days(3),
        )
        .await;
    source
        .session(
            "s3",
            "baUserBob0000000000000000000002",
            "bobDeadToken000000000000000003",
            -Duration::minutes(1),
        )
        .await;

    let (code, out, err) = import(&db.url, &source, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "imported: 2 users, 2 sessions; already present: 0 users, 0 sessions; skipped: 1 \
             expired sessions, 1 accounts of other providers; refused: 0"
        ),
        "{out}"
    );

    let url = db.url.clone();
    let app = serve(db).await;
    // The cookies Better Auth issued are sessions here, of the same users, shown with their
    // Better Auth ids.
    let ada = get_session(&app, "adaLiveToken000000000000000001").await;
    assert_eq!(
        ada["user"]["id"], "baUserAda0000000000000000000001",
        "{ada:#}"
    );
    assert_eq!(ada["user"]["email"], "ada@example.com");
    assert_eq!(
        ada["user"]["name"],
        "Name of baUserAda0000000000000000000001"
    );
    assert_eq!(ada["user"]["emailVerified"], true);
    assert_eq!(ada["session"]["userId"], "baUserAda0000000000000000000001");
    let bob = get_session(&app, "bobLiveToken000000000000000002").await;
    assert_eq!(bob["user"]["emailVerified"], false, "{bob:#}");
    assert_eq!(
        get_session(&app, "bobDeadToken000000000000000003").await,
        Value::Null
    );
    assert_eq!(
        get_session(&app, "neverIssued0000000000000000000").await,
        Value::Null
    );
    // Its tokens say the user signed in when Better Auth's session began (an hour ago).
    let token: Value = app
        .client
        .get(app.url("/api/auth/token"))
        .header(
            "cookie",
            format!(
                "better-auth.session_token={}",
                signed_cookie("adaLiveToken000000000000000001")
            ),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payload = token["token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let signed_in = (Utc::now() - Duration::hours(1)).timestamp();
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!((auth_time - signed_in).abs() <= 5, "{claims:#}");
    // servauth's own face sees the same session.
    let validate = app
        .client
        .get(app.url("/api/auth/list-sessions"))
        .header(
            "cookie",
            format!(
                "better-auth.session_token={}",
                signed_cookie("adaLiveToken000000000000000001")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), StatusCode::OK);

    // Their Better Auth passwords sign in (and are re-hashed to Argon2id).
    assert_eq!(
        sign_in(&app, "ada@example.com", PASSWORD).await,
        StatusCode::OK
    );
    assert_eq!(
        sign_in(&app, "ada@example.com", "not the password at all").await,
        StatusCode::UNAUTHORIZED
    );
    let hashes = app
        .store
        .find_credentials_by_email_key("ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(hashes.password_hash.starts_with("$argon2id$"), "rehashed");

    // A second run changes nothing: the re-hashed password and the sessions stay as they are.
    let (code, out, err) = import(&url, &source, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("imported: 0 users, 0 sessions; already present: 2 users, 2 sessions"),
        "{out}"
    );
    let again = app
        .store
        .find_credentials_by_email_key("ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.password_hash, hashes.password_hash);
    assert_eq!(
        sign_in(&app, "ada@example.com", PASSWORD).await,
        StatusCode::OK
    );
    let ada = get_session(&app, "adaLiveToken000000000000000001").await;
    assert_eq!(ada["user"]["id"], "baUserAda0000000000000000000001");
}

async fn a_hostile_database_gets_each_bad_row_refused_and_the_rest_imported(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    // An account servauth already has, not from this import.
    let store = db.migrated_store().await;
    let taken = servauth::domain::Email::parse("taken@example.com", "email").unwrap();
    store
        .create_user(servauth::domain::new_account(
            &taken,
            None,
            HASH.to_owned(),
            Utc::now(),
        ))
        .await
        .unwrap();
    store.close().await;

    let source = Source::create(backend, true).await;
    source.user("good", "good@example.com", true).await;
    source
        .account("a-good", "good", "credential", Some(HASH))
        .await;
    // Unknown hash format; absurd scrypt cost; no password; no credential account at all.
    source.user("md5", "md5@example.com", true).await;
    source
        .account(
            "a-md5",
            "md5",
            "credential",
            Some("$1$abcdefgh$0123456789abcdefghijkl"),
        )
        .await;
    source.user("costly", "costly@example.com", true).await;
    source
        .account(
            "a-costly",
            "costly",
            "credential",
            Some("$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
        )
        .await;
    source.user("nopass", "nopass@example.com", true).await;
    source
        .account("a-nopass", "nopass", "credential", None)
        .await;
    source.user("social", "social@example.com", true).await;
    source.account("a-social", "social", "google", None).await;
    // Two users whose addresses differ only in case: which one owns it cannot be told.
    source.user("upper", "Twin@Example.com", true).await;
    source
        .account("a-upper", "upper", "credential", Some(HASH))
        .await;
    source.user("lower", "twin@example.com", true).await;
    source
        .account("a-lower", "lower", "credential", Some(HASH))
        .await;
    // Not an address; an address servauth already has.
    source.user("bademail", "not an address", true).await;
    source
        .account("a-bademail", "bademail", "credential", Some(HASH))
        .await;
    source.user("taken", "taken@example.com", true).await;
    source
        .account("a-taken", "taken", "credential", Some(HASH))
        .await;
    // Sessions: of a refused user, with a duplicated token, live and good.
    source
        .session(
            "s-md5",
            "md5",
            "md5Token00000000000000000000001",
            Duration::days(1),
        )
        .await;
    source
        .session(
            "s-good",
            "good",
            "goodToken0000000000000000000001",
            Duration::days(1),
        )
        .await;
    if backend == Backend::Sqlite {
        // What only a dialect without types can hold: a date that is none, a boolean that
        // is none, a duplicated token.
        source
            .exec(
                "INSERT INTO \"user\" VALUES ('baddate', 'B', 'baddate@example.com', 1, NULL, \
                 'yesterday', 'yesterday'); \
                 INSERT INTO \"user\" VALUES ('badbool', 'B', 'badbool@example.com', 'maybe', \
                 NULL, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
            )
            .await;
        source
            .account("a-baddate", "baddate", "credential", Some(HASH))
            .await;
        source
            .account("a-badbool", "badbool", "credential", Some(HASH))
            .await;
    }

    let (code, out, err) = import(&db.url, &source, &[]).await;
    assert_eq!(code, Some(3), "{out}{err}");
    let mut expected = vec![
        ("user md5:", "password"),
        ("user costly:", "password"),
        ("user nopass:", "no password"),
        ("user social:", "no credential account"),
        ("user upper:", "also that of user lower"),
        ("user lower:", "also that of user upper"),
        ("user bademail:", "email"),
        ("user taken:", "another servauth account"),
        ("session s-md5:", "its user is not imported"),
    ];
    if backend == Backend::Sqlite {
        expected.push(("user baddate:", "createdAt: not a date"));
        expected.push(("user badbool:", "emailVerified: not a boolean"));
    }
    for (row, reason) in &expected {
        assert!(
            err.lines()
                .any(|line| line.starts_with(&format!("refused {row}")) && line.contains(reason)),
            "no `refused {row} …{reason}…` in:\n{err}"
        );
    }
    let refused_lines = err
        .lines()
        .filter(|line| line.starts_with("refused "))
        .count();
    assert_eq!(refused_lines, expected.len(), "{err}");
    assert!(!err.contains(HASH), "a hash was quoted:\n{err}");
    assert!(out.contains("imported: 1 users, 1 sessions"), "{out}");

    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM users").await,
        2,
        "the good user and the one servauth had"
    );
    let app = serve(db).await;
    assert_eq!(
        sign_in(&app, "good@example.com", PASSWORD).await,
        StatusCode::OK
    );
    for refused in ["md5@example.com", "twin@example.com", "Twin@Example.com"] {
        assert_eq!(
            sign_in(&app, refused, PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "{refused}"
        );
    }
    let good = get_session(&app, "goodToken0000000000000000000001").await;
    assert_eq!(good["user"]["id"], "good");
    assert_eq!(
        get_session(&app, "md5Token00000000000000000000001").await,
        Value::Null
    );
}

async fn a_failure_while_writing_imports_nothing(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    db.migrated_store().await.close().await;
    // The target refuses the second user mid-import: the first must not stay behind.
    match backend {
        Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON users \
                 WHEN NEW.email = 'boom@example.com' BEGIN SELECT RAISE(ABORT, 'boom'); END",
            )
            .await;
        }
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.email = 'boom@example.com' THEN RAISE EXCEPTION 'boom'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON users FOR EACH ROW \
                 EXECUTE FUNCTION refuse_boom()",
            )
            .await;
        }
    }
    let source = Source::create(backend, true).await;
    source.user("a-first", "first@example.com", true).await;
    source
        .account("acc-first", "a-first", "credential", Some(HASH))
        .await;
    source.user("b-boom", "boom@example.com", true).await;
    source
        .account("acc-boom", "b-boom", "credential", Some(HASH))
        .await;
    source
        .session(
            "s-first",
            "a-first",
            "firstToken000000000000000000001",
            Duration::days(1),
        )
        .await;

    let (code, out, err) = import(&db.url, &source, &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await, 0);
}

async fn a_database_without_better_auths_tables_imports_nothing(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    db.migrated_store().await.close().await;
    // Users but no sessions table.
    let source = Source::create(backend, false).await;
    source
        .exec(match backend {
            Backend::Sqlite => SQLITE_SCHEMA
                .split("create table \"session\"")
                .next()
                .unwrap_or(""),
            Backend::Postgres => POSTGRES_SCHEMA
                .split("create table \"session\"")
                .next()
                .unwrap_or(""),
        })
        .await;
    source.user("u1", "u1@example.com", true).await;
    let (code, out, err) = import(&db.url, &source, &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("reading the Better Auth table \"account\""),
        "{err}"
    );
    assert!(!out.contains("imported:"), "{out}");
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 0);

    if backend == Backend::Sqlite {
        // A file that is no database, and one that does not exist.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a SQLite database, not even close to one....",
        )
        .unwrap();
        for from in [
            junk.display().to_string(),
            dir.path().join("absent.db").display().to_string(),
        ] {
            let output = Command::new(BIN)
                .args(["import", "better-auth", "--from", &from])
                .env_clear()
                .env("DATABASE_URL", &db.url)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(1), "{from}");
            assert!(
                !dir.path().join("absent.db").exists(),
                "the source is never created"
            );
        }
    } else {
        // A password in the URL is never repeated.
        let output = Command::new(BIN)
            .args([
                "import",
                "better-auth",
                "--from",
                "postgres://someone:hunter2secret@127.0.0.1:1/none",
            ])
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!err.contains("hunter2secret"), "{err}");
    }
}

async fn a_dry_run_writes_nothing(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let source = Source::create(backend, true).await;
    source.user("u1", "u1@example.com", true).await;
    source.account("a1", "u1", "credential", Some(HASH)).await;
    source
        .session(
            "s1",
            "u1",
            "dryRunToken00000000000000000001",
            Duration::days(1),
        )
        .await;
    let (code, out, err) = import(&db.url, &source, &["--dry-run"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("dry run, nothing written: imported: 1 users, 1 sessions"),
        "{out}"
    );
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await, 0);
}
