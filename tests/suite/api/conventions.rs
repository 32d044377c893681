//! The contract's conventions: problem+json for every error, request ids, security headers,
//! body rules, unknown routes and methods, health endpoints.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp, read};
use crate::support::db::Backend;

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> crate::support::app::Reply {
    let mut request = app.client.post(app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    read(request.send().await.unwrap()).await
}

async fn malformed_bodies_get_the_contracts_status(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let json = Some("application/json");
    raw_post(&app, "/auth/login", json, b"{\"email\":".to_vec())
        .await
        .assert_problem(400, "invalid_json");
    raw_post(&app, "/auth/login", json, vec![b'"', 0xff, 0xfe, b'"'])
        .await
        .assert_problem(400, "invalid_json");
    raw_post(&app, "/auth/login", json, Vec::new())
        .await
        .assert_problem(400, "invalid_json");
    let array = raw_post(&app, "/auth/login", json, b"[1,2]".to_vec()).await;
    array.assert_problem(422, "validation_failed");
    raw_post(&app, "/auth/login", json, b"\"text\"".to_vec())
        .await
        .assert_problem(422, "validation_failed");
    let typed = raw_post(
        &app,
        "/auth/register",
        json,
        br#"{"email":5,"password":"x"}"#.to_vec(),
    )
    .await;
    typed.assert_problem(422, "validation_failed");
    assert_eq!(
        typed.field_codes(),
        vec![("email".into(), "invalid_type".into())]
    );
    let client = raw_post(
        &app,
        "/auth/register",
        json,
        br#"{"email":"a@b.co","password":"x","client":"tv"}"#.to_vec(),
    )
    .await;
    assert_eq!(client.field_codes()[0].0, "client");
    let form = raw_post(
        &app,
        "/auth/login",
        Some("application/x-www-form-urlencoded"),
        b"email=a".to_vec(),
    )
    .await;
    form.assert_problem(415, "unsupported_media_type");
    raw_post(&app, "/auth/login", None, b"{}".to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    let charset = raw_post(
        &app,
        "/auth/login",
        Some("application/json; charset=utf-8"),
        b"{}".to_vec(),
    )
    .await;
    charset.assert_problem(422, "validation_failed");
    let big = format!(
        r#"{{"email":"a@b.co","password":"{}"}}"#,
        "x".repeat(64 * 1024)
    );
    raw_post(&app, "/auth/login", json, big.into_bytes())
        .await
        .assert_problem(413, "payload_too_large");
    let unknown =
        json!({"email": "nobody@example.com", "password": PASSWORD, "extra": {"ignored": true}});
    app.post("/auth/login", unknown)
        .await
        .assert_problem(401, "invalid_credentials");
}

async fn malformed_json_is_refused_before_credentials_are_looked_at(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = read(
        app.client
            .patch(app.url("/auth/me"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_problem(400, "invalid_json");
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let missing = app.get("/auth/nothing-here", None).await;
    missing.assert_problem(404, "not_found");
    app.get("//auth/login", None)
        .await
        .assert_problem(404, "not_found");
    let wrong = app.send(Method::GET, "/auth/login", None, None).await;
    wrong.assert_problem(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    let me = app
        .send(Method::POST, "/auth/me", Some(json!({})), None)
        .await;
    me.assert_problem(405, "method_not_allowed");
    let allow = me.header("allow").unwrap();
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
}

async fn request_ids_are_echoed_when_acceptable_and_made_otherwise(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let get = |id: String| {
        let request = app
            .client
            .get(app.url("/auth/me"))
            .header("x-request-id", id);
        async move { read(request.send().await.unwrap()).await }
    };
    let echoed = get("trace-01J.abc_9".into()).await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-01J.abc_9"));
    assert_eq!(echoed.body["request_id"], "trace-01J.abc_9");
    for bad in [
        "has space".to_owned(),
        "x".repeat(129),
        "semi;colon".to_owned(),
    ] {
        let replaced = get(bad.clone()).await;
        let id = replaced.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    }
    let health = app.get("/health", None).await;
    assert!(
        health.header("x-request-id").is_some(),
        "every response, not only errors"
    );
}

async fn security_headers_are_on_every_response(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let replies = [
        app.get("/auth/me", Some(&token)).await,
        app.get("/auth/me", None).await,
        app.get("/health", None).await,
        app.get("/nowhere", None).await,
        app.get("/.well-known/jwks.json", None).await,
    ];
    for reply in &replies {
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(
            reply.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
        assert!(reply.header("server").is_none(), "no version banner");
    }
    for auth_reply in &replies[..2] {
        assert_eq!(auth_reply.header("cache-control"), Some("no-store"));
    }
    assert_eq!(replies[0].header("content-type"), Some("application/json"));
    assert_ne!(replies[2].header("cache-control"), Some("no-store"));
}

async fn health_live_and_ready_answer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let health = app.get("/health", None).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(app.get("/live", None).await.status, StatusCode::OK);
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.body,
        json!({"status": "ready", "database": "up", "redis": "disabled"})
    );
}

/// A client that hangs up does not cancel its request halfway: a registration whose client
/// gave up while its password was being hashed still creates the account, whole.
async fn a_request_whose_client_hangs_up_still_completes(backend: Backend) {
    // About a second of hashing, far beyond the impatient client's 300 ms (which leave a
    // loaded host time to read the request: the test is of a hang-up during it). The polling
    // logins below fail until the account exists: on a busy host that is more failures than
    // the per-account limit allows, so the limit is raised (it is not what this tests).
    let extra = [
        "--argon2-memory-kib",
        "65536",
        "--argon2-iterations",
        "16",
        "--login-failure-limit",
        "1000/1m",
    ];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let impatient = crate::support::client_builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(app.url("/auth/register"))
        .json(&json!({"email": "gone@example.com", "password": PASSWORD}))
        .send()
        .await;
    assert!(gave_up.is_err_and(|error| error.is_timeout()));
    let started = std::time::Instant::now();
    loop {
        let login = app
            .post(
                "/auth/login",
                json!({"email": "gone@example.com", "password": PASSWORD}),
            )
            .await;
        if login.status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the registration was dropped: {:?}",
            login.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A request head and the start of a body that is never finished, on a connection of its own.
async fn start_trickling(app: &TestApp, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let address = app.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: 64\r\n\r\n{{\"email\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Clients sending their bodies slowly hold no place among the requests in flight: with
/// room for two, two trickling bodies do not keep a third request waiting.
async fn trickling_bodies_hold_no_place_in_flight(backend: Backend) {
    let extra = ["--max-in-flight", "2", "--body-timeout", "30s"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let _slow = [
        start_trickling(&app, "/auth/login").await,
        start_trickling(&app, "/auth/register").await,
    ];
    // Let the server take both requests in.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let third = tokio::time::timeout(std::time::Duration::from_secs(5), app.get("/auth/me", None))
        .await
        .expect("a third request is answered while two bodies trickle in");
    third.assert_problem(401, "missing_credentials");
}

/// A body sent one byte every 1.5 s never arrives whole within the body timeout (each byte
/// on its own would beat an idle timeout): it is cut at the timeout with `408`, and the
/// connection is closed.
async fn a_body_trickled_past_the_body_timeout_gets_408_and_a_closed_connection(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(app) = TestApp::spawn_with(backend, &["--body-timeout", "2s"]).await else {
        return;
    };
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = start_trickling(&app, "/auth/login").await.into_split();
    let trickle = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            if writer.write_all(b" ").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let answer = async {
        let mut answer = Vec::new();
        reader.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::select! {
            answer = answer => answer,
            () = trickle => unreachable!(),
        }
    })
    .await
    .expect("the server answers and closes the connection");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_secs(2) && elapsed < std::time::Duration::from_secs(5),
        "cut at the timeout: {elapsed:?}"
    );
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 408"), "{answer}");
    assert!(head.contains("\r\nconnection: close"), "{answer}");
    assert!(
        head.contains("\r\ncontent-type: application/problem+json"),
        "{answer}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "request_timeout");
    assert_eq!(body["status"], 408);
    let id = body["request_id"]
        .as_str()
        .expect("the problem has the request id");
    assert!(head.contains(&format!("\r\nx-request-id: {}", id.to_ascii_lowercase())));
}

/// Opens a transaction with `begin` on `conn` (which takes the lock that blocks writers),
/// says so through `locked`, keeps it for `hold`, then commits. Only the opening statement
/// differs between the backends.
async fn hold_write_lock<C>(
    mut conn: C,
    begin: &'static str,
    locked: tokio::sync::oneshot::Sender<()>,
    hold: std::time::Duration,
) where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    sqlx::raw_sql(begin).execute(&mut conn).await.unwrap();
    locked.send(()).unwrap();
    tokio::time::sleep(hold).await;
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
}

/// A request not answered within the request timeout gets `503 timeout` with `Retry-After`,
/// and what it started still completes: the account is created once the database lets it.
async fn a_request_past_its_deadline_gets_503_and_its_work_completes(backend: Backend) {
    use sqlx::Connection as _;
    let Some(app) = TestApp::spawn_with(backend, &["--request-timeout", "1s"]).await else {
        return;
    };
    // Another connection holds the users table for 2.5 s, so the registration waits on the
    // database (not on the CPU) well past the one-second deadline.
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let url = app.db_url().to_owned();
    let hold = std::time::Duration::from_millis(2500);
    let holder = tokio::spawn(async move {
        match backend {
            Backend::Postgres => {
                let connection = sqlx::PgConnection::connect(&url).await.unwrap();
                let begin = "BEGIN; LOCK TABLE users IN EXCLUSIVE MODE";
                hold_write_lock(connection, begin, locked, hold).await;
            }
            Backend::Sqlite => {
                let connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
                hold_write_lock(connection, "BEGIN IMMEDIATE", locked, hold).await;
            }
        }
    });
    is_locked.await.unwrap();
    let started = std::time::Instant::now();
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "slow@example.com", "password": PASSWORD}),
        )
        .await;
    reply.assert_problem(503, "timeout");
    assert!(reply.header("retry-after").is_some());
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2200),
        "answered at the deadline, before the database let go: {:?}",
        started.elapsed()
    );
    holder.await.unwrap();
    let key = servauth::domain::Email::key_of("slow@example.com");
    loop {
        if app
            .store
            .find_credentials_by_email_key(&key)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the registration was cut short"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// U+0000 anywhere in a JSON string (value or key) is `422 invalid_characters` naming the
/// field, on every endpoint, before a database sees it (PostgreSQL refuses it in text, and
/// login answered 500 there).
async fn nul_characters_in_json_strings_are_refused_with_422(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let refused = |reply: crate::support::app::Reply, field: &str| {
        reply.assert_problem(422, "validation_failed");
        assert_eq!(
            reply.field_codes(),
            vec![(field.to_owned(), "invalid_characters".to_owned())],
            "{:#}",
            reply.body
        );
    };
    let nul_email = "ada\u{0}@example.com";
    refused(
        app.post(
            "/auth/login",
            json!({"email": nul_email, "password": PASSWORD}),
        )
        .await,
        "email",
    );
    refused(
        app.post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "correct horse\u{0}"}),
        )
        .await,
        "password",
    );
    refused(
        app.post(
            "/auth/register",
            json!({"email": "bob\u{0}@example.com", "password": PASSWORD}),
        )
        .await,
        "email",
    );
    refused(
        app.post(
            "/auth/register",
            json!({"email": "bob@example.com", "password": PASSWORD, "username": "b\u{0}b"}),
        )
        .await,
        "username",
    );
    refused(
        app.post("/auth/password/forgot", json!({"email": nul_email}))
            .await,
        "email",
    );
    refused(
        app.send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"username": "ada\u{0}"})),
            Some(&token),
        )
        .await,
        "username",
    );
    refused(
        app.post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD, "x\u{0}": true}),
        )
        .await,
        "x\\u0000",
    );
    // Nothing was stored: the account is as it was, and login still works.
    assert!(!app.login_native("ada@example.com").await.access.is_empty());
}

crate::support::both_backends!(
    trickling_bodies_hold_no_place_in_flight,
    a_body_trickled_past_the_body_timeout_gets_408_and_a_closed_connection,
    a_request_past_its_deadline_gets_503_and_its_work_completes,
    nul_characters_in_json_strings_are_refused_with_422,
    malformed_bodies_get_the_contracts_status,
    malformed_json_is_refused_before_credentials_are_looked_at,
    unknown_routes_and_methods_are_problems,
    request_ids_are_echoed_when_acceptable_and_made_otherwise,
    security_headers_are_on_every_response,
    health_live_and_ready_answer,
    a_request_whose_client_hangs_up_still_completes,
);

/// A well-formed URL of a database that does not answer: the server starts anyway, `/ready`
/// says the database is down, and account endpoints answer 503 instead of hanging.
#[tokio::test]
async fn an_unreachable_database_is_reported_not_fatal() {
    let app_config = crate::support::app::config("postgres://postgres@127.0.0.1:1/nothing", &[]);
    let clock = std::sync::Arc::new(servauth::clock::ManualClock::starting_now());
    let app = servauth::app::App::build(app_config, clock)
        .await
        .expect("starts without its database");
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(async move {
        let _ = stop.await;
    }));
    let client = crate::support::client();
    let ready = read(client.get(format!("{base}/ready")).send().await.unwrap()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["database"], "down");
    let live = read(client.get(format!("{base}/live")).send().await.unwrap()).await;
    assert_eq!(live.status, StatusCode::OK);
    let login = read(
        client
            .post(format!("{base}/auth/login"))
            .json(&json!({"email": "a@b.co", "password": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    login.assert_problem(503, "not_ready");
    assert!(login.header("retry-after").is_some());
    let _ = stop_tx.send(());
}
