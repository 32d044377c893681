//! `/api/internal/*`: token validation and user lookup for other services.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{Reply, TestApp, read};
use crate::support::db::Backend;

const SECRET: &str = "service-secret-service-secret-0123456789";

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    secret: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = app.client.request(method, app.url(path));
    if let Some(secret) = secret {
        request = request.header("x-service-auth", secret);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn validate(app: &TestApp, token: &str) -> Reply {
    call(
        app,
        Method::POST,
        "/api/internal/validate",
        Some(SECRET),
        Some(json!({"token": token})),
    )
    .await
}

async fn validate_answers_in_the_shape_of_rfc_7662(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let token = registered["access_token"].as_str().unwrap();
    let reply = validate(&app, token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.body.as_object().unwrap();
    assert_eq!(body.len(), 10, "{body:?}");
    assert_eq!(body["active"], true);
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["sub"], registered["user"]["id"]);
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["role"], "user");
    assert!(body["sid"].is_string());
    assert_eq!(
        body["exp"].as_i64().unwrap() - body["iat"].as_i64().unwrap(),
        900
    );

    for garbage in ["", "garbage", "a.b.c"] {
        assert_eq!(
            validate(&app, garbage).await.body,
            json!({"active": false}),
            "{garbage:?}"
        );
    }
    let session = app.login_native("ada@example.com").await;
    let out = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        validate(&app, &session.access).await.body,
        json!({"active": false}),
        "revoked"
    );
    app.clock.advance(Duration::minutes(16));
    assert_eq!(
        validate(&app, token).await.body,
        json!({"active": false}),
        "expired"
    );
}

async fn internal_routes_need_the_service_secret(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let body = Some(json!({"token": "x"}));
    let missing = call(
        &app,
        Method::POST,
        "/api/internal/validate",
        None,
        body.clone(),
    )
    .await;
    missing.assert_problem(401, "missing_credentials");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let empty = call(
        &app,
        Method::POST,
        "/api/internal/validate",
        Some(""),
        body.clone(),
    )
    .await;
    empty.assert_problem(401, "missing_credentials");
    let wrong = call(
        &app,
        Method::POST,
        "/api/internal/validate",
        Some("service-secret"),
        body,
    )
    .await;
    wrong.assert_problem(401, "invalid_token");
    let request = app
        .client
        .post(app.url("/api/internal/validate"))
        .header("x-service-auth", "wrong")
        .header("content-type", "application/json")
        .body("{oops");
    read(request.send().await.unwrap())
        .await
        .assert_problem(400, "invalid_json");
    let no_token = call(
        &app,
        Method::POST,
        "/api/internal/validate",
        Some(SECRET),
        Some(json!({})),
    )
    .await;
    no_token.assert_problem(422, "validation_failed");
    let users = call(
        &app,
        Method::GET,
        "/api/internal/users/00000000-0000-0000-0000-000000000000",
        None,
        None,
    )
    .await;
    users.assert_problem(401, "missing_credentials");
}

async fn internal_user_lookup(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let id = registered["user"]["id"].as_str().unwrap();
    let found = call(
        &app,
        Method::GET,
        &format!("/api/internal/users/{id}"),
        Some(SECRET),
        None,
    )
    .await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body, registered["user"]);
    let unknown = format!("/api/internal/users/{}", uuid::Uuid::now_v7());
    call(&app, Method::GET, &unknown, Some(SECRET), None)
        .await
        .assert_problem(404, "not_found");
    call(
        &app,
        Method::GET,
        "/api/internal/users/nope",
        Some(SECRET),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

async fn internal_routes_do_not_exist_without_a_secret(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = call(
        &app,
        Method::POST,
        "/api/internal/validate",
        Some(SECRET),
        Some(json!({"token": "x"})),
    )
    .await;
    reply.assert_problem(404, "not_found");
    let user = call(
        &app,
        Method::GET,
        &format!("/api/internal/users/{}", uuid::Uuid::now_v7()),
        Some(SECRET),
        None,
    )
    .await;
    user.assert_problem(404, "not_found");
}

crate::support::both_backends!(
    validate_answers_in_the_shape_of_rfc_7662,
    tokens_say_when_and_how_the_user_signed_in_across_refreshes,
    internal_routes_need_the_service_secret,
    internal_user_lookup,
    internal_routes_do_not_exist_without_a_secret,
);

/// `auth_time` is the sign-in that opened the session and `amr` how it was made, in every
/// access token of the session (refreshes do not authenticate the user) and in validate's
/// answer.
async fn tokens_say_when_and_how_the_user_signed_in_across_refreshes(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.clock.advance(Duration::minutes(3));
    let signed_in_at = app.clock_now().timestamp();
    let session = app.login_native("ada@example.com").await;
    let first = validate(&app, &session.access).await.body;
    assert_eq!(first["auth_time"], signed_in_at, "{first:#}");
    assert_eq!(first["amr"], json!(["pwd"]));

    app.clock.advance(Duration::minutes(20));
    let refreshed = app.refresh_native(&session.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:#}", refreshed.body);
    let later = validate(&app, &refreshed.str("access_token")).await.body;
    assert_eq!(later["active"], true, "{later:#}");
    assert_eq!(
        later["auth_time"], signed_in_at,
        "the refresh is no sign-in"
    );
    assert_eq!(later["amr"], json!(["pwd"]));
    assert!(later["iat"].as_i64().unwrap() >= signed_in_at + 20 * 60);
}
