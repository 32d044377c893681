//! Throwaway databases: one fresh database per test, on either backend.
//!
//! SQLite: a file in a temporary directory that lives as long as the [`TestDatabase`].
//! PostgreSQL: a database `servauth_test_<uuid>` created through the admin URL in
//! `SERVAUTH_TEST_POSTGRES_URL` (default [`DEFAULT_ADMIN_URL`]) and dropped afterwards, by
//! [`TestDatabase::drop_database`] or, if the test panicked first, by `Drop`.

use std::sync::Arc;
use std::time::Duration;

use servauth::store::{self, Store};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};
use tempfile::TempDir;
use url::Url;
use uuid::Uuid;

/// Where PostgreSQL is expected when `SERVAUTH_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long to wait for the PostgreSQL admin connection before calling the server unreachable.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pool size of the stores the tests use: enough for the concurrency tests to really overlap.
const TEST_POOL_SIZE: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name the store reports for this backend ([`Store::backend`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A fresh, empty database (not migrated) for one test.
pub struct TestDatabase {
    /// The URL to give to `servauth::store::connect` (or the server's configuration).
    pub url: String,
    pub backend: Backend,
    /// Keeps the SQLite file's directory alive; removed with it on drop.
    _dir: Option<TempDir>,
    /// The PostgreSQL database to drop, until it is dropped.
    postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    /// Creates a fresh database. `None` when the backend is PostgreSQL and no server is
    /// reachable outside CI (the caller returns early: the test is skipped, with a note on
    /// stderr). In CI (`CI=true`) an unreachable server panics instead: a suite that silently
    /// skipped PostgreSQL must not pass there.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let path = dir.path().join("servauth.db");
                Some(Self {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let admin_url = std::env::var("SERVAUTH_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
                let mut admin = match connect_admin(&admin_url).await {
                    Ok(admin) => admin,
                    Err(reason) => {
                        postgres_unreachable(&admin_url, &reason);
                        return None;
                    }
                };
                let name = format!("servauth_test_{}", Uuid::now_v7().simple());
                // The name is ours (a UUID), so formatting it into the statement is safe.
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                admin.close().await.expect("close the admin connection");
                let mut url = Url::parse(&admin_url).expect("the admin URL parses");
                url.set_path(&format!("/{name}"));
                Some(Self {
                    url: url.to_string(),
                    backend,
                    _dir: None,
                    postgres: Some(PostgresDatabase { admin_url, name }),
                })
            }
        }
    }

    /// Connects a store to this database, without migrating.
    pub async fn connect(&self) -> Arc<dyn Store> {
        store::connect(&self.url, TEST_POOL_SIZE)
            .await
            .expect("connect a store to the test database")
    }

    /// Connects a store to this database and applies the migrations.
    pub async fn migrated_store(&self) -> Arc<dyn Store> {
        let store = self.connect().await;
        store.migrate().await.expect("migrate the test database");
        store
    }

    /// Runs one statement on a connection of its own (bypassing the store), for setting up
    /// states the store offers no method for. Returns the rows affected.
    pub async fn execute(&self, sql: &'static str) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.expect("connect");
                let done = sqlx::query(sql).execute(&mut conn).await.expect("execute");
                conn.close().await.expect("close");
                done.rows_affected()
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                let done = sqlx::query(sql).execute(&mut conn).await.expect("execute");
                conn.close().await.expect("close");
                done.rows_affected()
            }
        }
    }

    /// Runs a query returning one integer (e.g. a `COUNT(*)`) on a connection of its own, to
    /// check what the store really wrote.
    pub async fn query_i64(&self, sql: &'static str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.expect("connect");
                let value = sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("query");
                conn.close().await.expect("close");
                value
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                let value = sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("query");
                conn.close().await.expect("close");
                value
            }
        }
    }

    /// Drops the database (PostgreSQL; SQLite's directory goes with `self`). Close the stores
    /// first; any connection still open is terminated (`WITH (FORCE)`).
    pub async fn drop_database(mut self) {
        if let Some(database) = self.postgres.take() {
            database.remove().await.expect("drop the test database");
        }
    }
}

impl Drop for TestDatabase {
    /// Best effort for a test that panicked before `drop_database`: drops the PostgreSQL
    /// database from a thread with its own runtime (this may run on a runtime's thread, which
    /// cannot block on another runtime), and waits for it so the process does not exit first.
    fn drop(&mut self) {
        let Some(database) = self.postgres.take() else {
            return;
        };
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    if let Err(error) = runtime.block_on(database.remove()) {
                        eprintln!("could not drop test database {}: {error}", database.name);
                    }
                }
                Err(error) => eprintln!("could not drop test database {}: {error}", database.name),
            }
        });
        let _ = cleanup.join();
    }
}

struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    async fn remove(&self) -> Result<(), sqlx::Error> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
}

async fn connect_admin(admin_url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(ADMIN_CONNECT_TIMEOUT, PgConnection::connect(admin_url)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {ADMIN_CONNECT_TIMEOUT:?}")),
    }
}

fn postgres_unreachable(admin_url: &str, reason: &str) {
    let shown = redacted(admin_url);
    let in_ci = std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    assert!(
        !in_ci,
        "PostgreSQL not reachable at {shown} ({reason}); in CI the PostgreSQL suite must run: \
         start a server or set SERVAUTH_TEST_POSTGRES_URL"
    );
    eprintln!("skipping: PostgreSQL not reachable at {shown} ({reason})");
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable SERVAUTH_TEST_POSTGRES_URL>".to_owned(),
    }
}
