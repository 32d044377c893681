//! Forward-auth (`/api/internal/authorize`): on its own, and behind real gateways, nginx and
//! Caddy from Debian's packages, started with the configurations of `deploy/gateways/` as
//! shipped (only the addresses and the secret filled in) in front of a small upstream that
//! echoes what reached it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::app::{PASSWORD, Reply, TestApp, read};
use crate::support::db::Backend;

const SECRET: &str = "gateway-secret-gateway-secret-0123456789";
const BETTER_AUTH_SECRET: &str = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const IDENTITY: [&str; 6] = [
    "x-auth-user-id",
    "x-auth-session-id",
    "x-auth-role",
    "x-auth-email",
    "x-auth-email-verified",
    "x-auth-amr",
];

/// A request to forward-auth as a gateway sends it: the original request's headers, plus
/// the gateway's own `X-Service-Auth` when given.
async fn authorize(
    app: &TestApp,
    method: Method,
    secret: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = app
        .client
        .request(method, app.url("/api/internal/authorize"));
    if let Some(secret) = secret {
        request = request.header("x-service-auth", secret);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.send().await.expect("request sent")).await
}

/// [`authorize`] with a GET carrying `Authorization: <bearer>`.
async fn authorize_bearer(app: &TestApp, secret: Option<&str>, bearer: &str) -> Reply {
    authorize(app, Method::GET, secret, &[("authorization", bearer)]).await
}

fn identity(reply: &Reply) -> Vec<Option<String>> {
    IDENTITY
        .iter()
        .map(|name| reply.header(name).map(str::to_owned))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

async fn forward_auth_answers_with_the_identity_in_headers(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let me = app.get("/auth/me", Some(&token)).await;

    let trace = authorize(
        &app,
        Method::TRACE,
        Some(SECRET),
        &[("authorization", &bearer)],
    )
    .await;
    trace.assert_problem(405, "method_not_allowed");
    for method in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let reply = authorize(
            &app,
            method.clone(),
            Some(SECRET),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{method}: {:#}", reply.body);
        assert_eq!(reply.body, Value::Null, "no body");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let [user, session, role, email, verified, amr] =
            <[Option<String>; 6]>::try_from(identity(&reply)).unwrap();
        assert_eq!(user.as_deref(), registered["user"]["id"].as_str());
        assert_eq!(role.as_deref(), Some("user"));
        assert_eq!(email.as_deref(), Some("ada@example.com"));
        assert_eq!(verified.as_deref(), Some("false"));
        assert_eq!(amr.as_deref(), Some("pwd"));
        assert_eq!(
            session.as_deref().map(str::len),
            Some(36),
            "a session id: {session:?}"
        );
        assert_eq!(me.status, StatusCode::OK);
    }

    // OPTIONS is checked like the rest, never answered as a CORS preflight.
    let preflight = authorize(
        &app,
        Method::OPTIONS,
        Some(SECRET),
        &[
            ("origin", "http://localhost:8080"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    preflight.assert_problem(401, "missing_credentials");

    // No credential, a bad one, a refusal of the gateway itself.
    let none = authorize(&app, Method::GET, Some(SECRET), &[]).await;
    none.assert_problem(401, "missing_credentials");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    for garbage in ["Bearer garbage", "Bearer a.b.c", "Basic YTpi"] {
        let reply = authorize_bearer(&app, Some(SECRET), garbage).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{garbage}");
        assert!(identity(&reply).iter().all(Option::is_none), "{garbage}");
    }
    let garbage = authorize_bearer(&app, Some(SECRET), "Bearer a.b.c").await;
    garbage.assert_problem(401, "invalid_token");
    assert_eq!(
        garbage.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    for secret in [None, Some("wrong"), Some("")] {
        let reply = authorize_bearer(&app, secret, &bearer).await;
        reply.assert_problem(403, "forbidden");
        assert!(identity(&reply).iter().all(Option::is_none), "{secret:?}");
        let cookie = authorize(&app, Method::GET, secret, &[("cookie", "a=b")]).await;
        cookie.assert_problem(403, "forbidden");
        // Without any credential, the answer says only that.
        let none = authorize(&app, Method::GET, secret, &[]).await;
        none.assert_problem(401, "missing_credentials");
    }

    // A revocation holds at once; an expired token is refused.
    let session = app.login_native("ada@example.com").await;
    let second = format!("Bearer {}", session.access);
    let live = authorize_bearer(&app, Some(SECRET), &second).await;
    assert_eq!(live.status, StatusCode::OK);
    let out = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let revoked = authorize_bearer(&app, Some(SECRET), &second).await;
    revoked.assert_problem(401, "invalid_token");
    app.clock.advance(chrono::Duration::minutes(16));
    let expired = authorize_bearer(&app, Some(SECRET), &bearer).await;
    expired.assert_problem(401, "token_expired");
}

async fn gateways_on_the_allowlist_need_no_header(backend: Backend) {
    // Only the allowlist: forward-auth is mounted, the other internal routes are not.
    let Some(app) = TestApp::spawn_with(backend, &["--forward-auth-allow", "127.0.0.0/8"]).await
    else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let bearer = format!("Bearer {token}");
    let reply = authorize_bearer(&app, None, &bearer).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.header("x-auth-email"), Some("ada@example.com"));
    let validate = app
        .post("/api/internal/validate", json!({"token": token}))
        .await;
    validate.assert_problem(404, "not_found");

    // An allowlist the caller is not on, beside a secret: the secret is needed.
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            "--forward-auth-allow",
            "10.0.0.0/8,2001:db8::/32",
            "--internal-secret",
            SECRET,
        ],
    )
    .await
    else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let bearer = format!("Bearer {token}");
    let refused = authorize_bearer(&app, None, &bearer).await;
    refused.assert_problem(403, "forbidden");
    let allowed = authorize_bearer(&app, Some(SECRET), &bearer).await;
    assert_eq!(allowed.status, StatusCode::OK);

    // Neither: no forward-auth at all.
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let bearer = format!("Bearer {token}");
    let absent = authorize_bearer(&app, Some(SECRET), &bearer).await;
    absent.assert_problem(404, "not_found");
}

async fn better_auth_sessions_pass_by_cookie_and_bearer(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            "--internal-secret",
            SECRET,
            "--better-auth-secret",
            BETTER_AUTH_SECRET,
        ],
    )
    .await
    else {
        return;
    };
    let reply = app
        .client
        .post(app.url("/api/auth/sign-up/email"))
        .header("origin", "http://localhost:8080")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}))
        .send()
        .await
        .unwrap();
    let reply = read(reply).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    let user_id = reply.body["user"]["id"].as_str().unwrap().to_owned();
    let cookie = reply.cookie("better-auth.session_token").unwrap();
    let signed = reply.header("set-auth-token").unwrap().to_owned();
    let raw = reply.str("token");

    let cookie_header = format!("theme=dark; better-auth.session_token={cookie}");
    for headers in [
        vec![("cookie", cookie_header.as_str())],
        vec![("authorization", &*format!("Bearer {signed}"))],
        vec![("authorization", &*format!("Bearer {raw}"))],
    ] {
        let reply = authorize(&app, Method::GET, Some(SECRET), &headers).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{headers:?}: {:#}",
            reply.body
        );
        assert_eq!(reply.header("x-auth-user-id"), Some(user_id.as_str()));
        assert_eq!(reply.header("x-auth-amr"), Some("pwd"));
    }
    // A cookie whose signature does not verify is no session.
    let forged = format!("better-auth.session_token={raw}.forged");
    let reply = authorize(&app, Method::GET, Some(SECRET), &[("cookie", &forged)]).await;
    reply.assert_problem(401, "invalid_token");

    // Signed out on the face: refused at once.
    let out = app
        .client
        .post(app.url("/api/auth/sign-out"))
        .header("origin", "http://localhost:8080")
        .header("cookie", &cookie_header)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let reply = authorize(
        &app,
        Method::GET,
        Some(SECRET),
        &[("cookie", &cookie_header)],
    )
    .await;
    reply.assert_problem(401, "invalid_token");
}

/// The small upstream behind the gateways: it answers every request with what reached it
/// (method, path, body length and the `X-Auth-*` headers) and counts the requests.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let echo = move |method: Method,
                         uri: axum::http::Uri,
                         headers: HeaderMap,
                         body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut seen = serde_json::Map::new();
                for (name, value) in &headers {
                    if name.as_str().starts_with("x-auth-") {
                        let values = seen
                            .entry(name.as_str())
                            .or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(values) = values {
                            values.push(Value::from(value.to_str().unwrap_or("<bytes>")));
                        }
                    }
                }
                axum::Json(json!({
                    "method": method.as_str(),
                    "uri": uri.to_string(),
                    "body_length": body.len(),
                    "headers": seen,
                }))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().fallback(echo);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A gateway process, stopped on drop.
struct Gateway {
    name: &'static str,
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` (the test is skipped) where the gateway is not installed on a developer's
/// machine; in CI, where `.ci/run` installs it, a failure.
fn absent<T>(what: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs {what} (apt-get install nginx caddy)"
    );
    eprintln!("skipped: {what} is not installed");
    None
}

/// `deploy/gateways/<file>` with each `(from, to)` replaced; every `from` must be there, so a
/// change of the shipped file cannot leave the test running something else.
fn shipped(file: &str, replacements: &[(&str, String)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/gateways")
        .join(file);
    let mut text = std::fs::read_to_string(&path).expect("the shipped configuration");
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

impl Gateway {
    async fn nginx(servauth: u16, upstream: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = dir.path().display().to_string();
        let temp_paths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .map(|kind| format!("    {kind}_temp_path {root}/{kind};\n"))
            .concat();
        let config = shipped(
            "nginx.conf",
            &[
                ("servauth:8080", format!("127.0.0.1:{servauth}")),
                ("app:3000", format!("127.0.0.1:{upstream}")),
                ("listen 8000;", format!("listen 127.0.0.1:{port};")),
                ("change-me-to-SERVAUTH_INTERNAL_SECRET", SECRET.to_owned()),
                (
                    "http {\n",
                    format!("http {{\n{temp_paths}    access_log {root}/access.log;\n"),
                ),
            ],
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let globals = format!(
            "daemon off; master_process off; pid {root}/nginx.pid; error_log {root}/error.log;"
        );
        let spawned = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", &globals])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(child) = spawned else {
            return absent("nginx");
        };
        Some(Self::started("nginx", child, port, dir).await)
    }

    async fn caddy(servauth: u16, upstream: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = shipped(
            "Caddyfile",
            &[
                ("servauth:8080", format!("127.0.0.1:{servauth}")),
                ("app:3000", format!("127.0.0.1:{upstream}")),
                (":8000 {", format!("http://127.0.0.1:{port} {{")),
                ("change-me-to-SERVAUTH_INTERNAL_SECRET", SECRET.to_owned()),
            ],
        );
        // No admin endpoint, certificates or saved state for a throwaway instance.
        let config = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, config).unwrap();
        let spawned = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(child) = spawned else {
            return absent("caddy");
        };
        Some(Self::started("caddy", child, port, dir).await)
    }

    async fn started(name: &'static str, mut child: Child, port: u16, dir: TempDir) -> Self {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut errors = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut errors);
                }
                panic!("{name} exited ({status}): {errors}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name} did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            name,
            child,
            port,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers).await
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut request = crate::support::client().request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }
}

/// What the real gateways must do with servauth behind them: a valid token reaches the app
/// with the identity headers (and nothing a client wrote under those names); a missing, a
/// forged, a revoked and an expired one never reach it.
async fn nginx_and_caddy_let_through_only_what_servauth_authorizes(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let servauth: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let upstream = Upstream::start().await;
    let Some(nginx) = Gateway::nginx(servauth, upstream.port).await else {
        return;
    };
    let Some(caddy) = Gateway::caddy(servauth, upstream.port).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let user_id = registered["user"]["id"].as_str().unwrap().to_owned();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let session = app.login_native("ada@example.com").await;
    let to_revoke = format!("Bearer {}", session.access);
    let forged = [
        ("x-auth-user-id", "00000000-0000-0000-0000-000000000000"),
        ("x-auth-role", "admin"),
        ("x-auth-amr", "hwk"),
    ];

    for gateway in [&nginx, &caddy] {
        let name = gateway.name;
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(forged);
        let reply = gateway.get("/orders?page=2", &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {:#}", reply.body);
        assert_eq!(reply.body["uri"], "/orders?page=2", "{name}");
        let seen = &reply.body["headers"];
        assert_eq!(seen["x-auth-user-id"], json!([user_id]), "{name}: {seen:#}");
        assert_eq!(seen["x-auth-role"], json!(["user"]), "{name}: {seen:#}");
        assert_eq!(seen["x-auth-email"], json!(["ada@example.com"]), "{name}");
        assert_eq!(seen["x-auth-email-verified"], json!(["false"]), "{name}");
        assert_eq!(seen["x-auth-amr"], json!(["pwd"]), "{name}: {seen:#}");
        assert_eq!(seen["x-auth-session-id"].as_array().map(Vec::len), Some(1));

        let before = upstream.hits();
        let missing = gateway.get("/orders", &forged).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"), "{name}");
        let garbage = gateway
            .get("/orders", &[("authorization", "Bearer a.b.c")])
            .await;
        assert_eq!(garbage.status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            garbage.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{name}"
        );
        // Every method of the original request is checked, OPTIONS included (a CORS layer
        // answers any OPTIONS `200` by itself: forward-auth must never be behind one).
        for method in [Method::OPTIONS, Method::POST, Method::DELETE] {
            let refused = gateway.send(method.clone(), "/orders", &forged).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{name} {method}");
        }
        assert_eq!(
            upstream.hits(),
            before,
            "{name}: refused requests reach no app"
        );
        let posted = gateway
            .send(
                Method::POST,
                "/orders",
                &[("authorization", bearer.as_str())],
            )
            .await;
        assert_eq!(posted.status, StatusCode::OK, "{name}");
        assert_eq!(posted.body["method"], "POST", "{name}");

        let live = gateway
            .get("/orders", &[("authorization", to_revoke.as_str())])
            .await;
        assert_eq!(live.status, StatusCode::OK, "{name}");
    }

    // Revoked through servauth: both gateways refuse it at once.
    let out = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let before = upstream.hits();
    for gateway in [&nginx, &caddy] {
        let revoked = gateway
            .get("/orders", &[("authorization", to_revoke.as_str())])
            .await;
        assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{}", gateway.name);
    }
    // Past its expiry: refused too.
    app.clock.advance(chrono::Duration::minutes(16));
    for gateway in [&nginx, &caddy] {
        let expired = gateway
            .get("/orders", &[("authorization", bearer.as_str())])
            .await;
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{}", gateway.name);
    }
    assert_eq!(upstream.hits(), before);
}

crate::support::both_backends!(
    forward_auth_answers_with_the_identity_in_headers,
    gateways_on_the_allowlist_need_no_header,
    better_auth_sessions_pass_by_cookie_and_bearer,
    nginx_and_caddy_let_through_only_what_servauth_authorizes,
);
