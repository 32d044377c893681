//! A real servauth on a random loopback port with a fresh database, and a small client.

use std::sync::Arc;

use clap::Parser;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use servauth::app::App;
use servauth::cli::{Cli, Command};
use servauth::clock::ManualClock;
use servauth::store::Store;

use super::db::{Backend, TestDatabase};

/// A long, uncommon password that every test account uses unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    // Dropped last: the database outlives the server.
    _db: TestDatabase,
}

/// A response read whole: status, headers and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["code"], code, "{:#}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_eq!(
            self.body["request_id"].as_str(),
            self.header("x-request-id")
        );
    }

    /// The codes of the field errors of a 422.
    pub fn field_codes(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| {
                        (
                            error["field"].as_str().unwrap_or_default().to_owned(),
                            error["code"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Settings that every test server gets: a random port, cheap Argon2 (the suite hashes in
/// almost every test) and the default everything else.
const BASE_ARGS: &[&str] = &[
    "--listen",
    "127.0.0.1:0",
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--log",
    "warn",
];

impl TestApp {
    /// A server on a fresh database of this backend; `None` when the backend is absent on
    /// a developer's machine (never in CI, where that panics in `TestDatabase::create`).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, &[]).await
    }

    /// As [`spawn`](Self::spawn), with extra `serve` flags.
    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> Option<Self> {
        let db = TestDatabase::create(backend).await?;
        Some(Self::spawn_on(db, extra).await)
    }

    /// A server on an existing test database.
    pub async fn spawn_on(db: TestDatabase, extra: &[&str]) -> Self {
        init_logs();
        let clock = Arc::new(ManualClock::starting_now());
        let app = App::build(config(&db.url, extra), clock.clone())
            .await
            .expect("server starts");
        let base = format!("http://{}", app.local_addr().expect("bound"));
        let store = app.store();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.serve(async move {
            let _ = stop.await;
        }));
        let client = crate::support::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base,
            client,
            clock,
            store,
            shutdown: Some(shutdown),
            _db: db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional JSON body and bearer token, and reads the reply.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), None).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, None, token).await
    }

    /// Registers `email` with [`PASSWORD`] as a native client; returns the 201 body.
    pub async fn register(&self, email: &str) -> Value {
        let reply = self
            .post(
                "/auth/register",
                json!({"email": email, "password": PASSWORD, "client": "native"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
        reply.body
    }

    /// Registers and returns the access token.
    pub async fn access_token(&self, email: &str) -> String {
        self.register(email).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The value of the first sample in Prometheus text whose line starts with `prefix` (name
/// and labels).
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The value of the unlabelled metric `name` on the server at `base` (0 when absent).
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics fetched")
        .text()
        .await
        .expect("metrics read");
    sample(&text, &format!("{name} ")).unwrap_or(0.0)
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Validated settings for a test server on `database_url`.
pub fn config(database_url: &str, extra: &[&str]) -> servauth::config::Config {
    let mut args = vec!["servauth", "serve", "--database-url", database_url];
    // The base settings, less those the test sets itself.
    for pair in BASE_ARGS.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    let Command::Serve(settings) = Cli::try_parse_from(args)
        .expect("test settings parse")
        .into_command()
    else {
        unreachable!("serve was asked for");
    };
    settings.validate().expect("test settings are valid")
}

/// Server logs in test output only when `TEST_LOG` is set.
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        // Kept for the life of the test process (its last lines need no flush).
        std::mem::forget(servauth::telemetry::init("info"));
    }
}

impl TestApp {
    /// The server's clock, as tests see it.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use servauth::clock::Clock as _;
        self.clock.now()
    }
}

impl TestApp {
    pub fn db_url(&self) -> &str {
        &self._db.url
    }

    /// A second server (a replica) on the database of `first`, which must outlive it.
    pub async fn spawn_sharing(first: &TestApp, database_url: &str) -> Replica {
        let clock = first.clock.clone();
        let app = App::build(config(database_url, &[]), clock)
            .await
            .expect("replica starts");
        let base = format!("http://{}", app.local_addr().expect("bound"));
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.serve(async move {
            let _ = stop.await;
        }));
        Replica {
            base,
            client: first.client.clone(),
            _shutdown: shutdown,
        }
    }
}

/// Another server on a test database that a [`TestApp`] owns.
pub struct Replica {
    pub base: String,
    pub client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Replica {
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request sent")).await
    }
}

/// The credentials of a browser session: the access token, and the refresh and CSRF
/// cookies' values as the browser would keep them.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub access: String,
    pub refresh_cookie: String,
    pub csrf: String,
}

/// The credentials of a native session.
#[derive(Debug, Clone)]
pub struct NativeSession {
    pub access: String,
    pub refresh: String,
}

impl Reply {
    /// The value a `Set-Cookie` of this reply gives the cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|cookie| {
            let (pair, _) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {:#}", self.body))
            .to_owned()
    }
}

impl TestApp {
    /// Logs in as a browser; the account must exist with [`PASSWORD`].
    pub async fn login_browser(&self, email: &str) -> BrowserSession {
        let reply = self
            .post("/auth/login", json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
        BrowserSession {
            access: reply.str("access_token"),
            refresh_cookie: reply.cookie("servauth_refresh").expect("refresh cookie"),
            csrf: reply.str("csrf_token"),
        }
    }

    /// Logs in as a native client; the account must exist with [`PASSWORD`].
    pub async fn login_native(&self, email: &str) -> NativeSession {
        let reply = self
            .post(
                "/auth/login",
                json!({"email": email, "password": PASSWORD, "client": "native"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
        NativeSession {
            access: reply.str("access_token"),
            refresh: reply.str("refresh_token"),
        }
    }

    /// `POST /auth/refresh` as a native client.
    pub async fn refresh_native(&self, refresh: &str) -> Reply {
        self.post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
    }

    /// `POST` to `path` as a browser would with the refresh cookie: `csrf` as
    /// `X-CSRF-Token`, plus any extra headers (`Origin`, `Sec-Fetch-Site`, …). No body.
    pub async fn post_with_cookie(
        &self,
        path: &str,
        refresh_cookie: &str,
        csrf: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).header(
            "cookie",
            format!("servauth_refresh={refresh_cookie}; servauth_csrf=whatever"),
        );
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }
}

impl Replica {
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        let request = self.client.post(format!("{}{path}", self.base)).json(&body);
        read(request.send().await.expect("request sent")).await
    }
}

impl TestApp {
    /// Signals the server to stop: it stops accepting and finishes what is in flight.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
