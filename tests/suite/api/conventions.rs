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
    // About half a second of hashing, far beyond the impatient client's 50 ms.
    let extra = ["--argon2-memory-kib", "65536", "--argon2-iterations", "8"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(50))
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

crate::support::both_backends!(
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
    let client = reqwest::Client::new();
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
