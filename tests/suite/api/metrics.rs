//! `GET /metrics`: Prometheus text with the request, auth, hashing and pool metrics.
//! The recorder is per process (as Prometheus scrapes it), so every test server shares it:
//! these tests check presence and growth, not exact totals.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp, sample};
use crate::support::db::Backend;

async fn metrics_count_requests_logins_and_the_hashing_pool(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let before = app.get("/metrics", None).await;
    assert_eq!(before.status, StatusCode::OK);
    let before = before.body.as_str().unwrap_or_default().to_owned();
    let count = |text: &str, prefix: &str| sample(text, prefix).unwrap_or(0.0);

    app.register("ada@example.com").await;
    let ok = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "not it, not at all"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let session = app.login_native("ada@example.com").await;
    let first = app.refresh_native(&session.refresh).await;
    assert_eq!(first.status, StatusCode::OK);
    app.clock.advance(chrono::Duration::seconds(11));
    app.refresh_native(&session.refresh)
        .await
        .assert_problem(401, "refresh_token_reused");

    let reply = app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let after = reply.body.as_str().unwrap().to_owned();
    let grew = |prefix: &str, by: f64| {
        let (was, is) = (count(&before, prefix), count(&after, prefix));
        assert!(is - was >= by, "{prefix}: {was} -> {is}\n{after}");
    };
    grew(r#"servauth_logins_total{outcome="success"}"#, 2.0);
    grew(
        r#"servauth_logins_total{outcome="invalid_credentials"}"#,
        1.0,
    );
    grew(r#"servauth_registrations_total{outcome="success"}"#, 1.0);
    grew("servauth_refresh_reuse_detected_total", 1.0);
    grew(
        r#"servauth_http_requests_total{method="POST",route="/auth/login",status="200"}"#,
        2.0,
    );
    grew(
        r#"servauth_http_requests_total{method="POST",route="/auth/login",status="401"}"#,
        1.0,
    );
    grew(
        r#"servauth_http_request_duration_seconds_count{method="POST",route="/auth/login"}"#,
        3.0,
    );
    grew("servauth_password_hash_duration_seconds_count", 4.0);
    grew("servauth_password_hash_wait_seconds_count", 4.0);
    for name in [
        "servauth_password_hash_queue_depth",
        r#"servauth_db_pool_connections{state="idle"}"#,
        r#"servauth_db_pool_connections{state="in_use"}"#,
        "servauth_db_pool_max_connections",
        r#"servauth_http_request_duration_seconds_bucket{method="POST",route="/auth/login",le="0.005"}"#,
    ] {
        assert!(sample(&after, name).is_some(), "{name} missing:\n{after}");
    }
    // jemalloc's figures: live bytes within the pages they occupy, within what is resident.
    let allocator = |kind: &str| {
        sample(
            &after,
            &format!(r#"servauth_allocator_bytes{{kind="{kind}"}}"#),
        )
        .unwrap_or_else(|| panic!("allocator {kind} missing:\n{after}"))
    };
    assert!(allocator("allocated") > 0.0);
    assert!(allocator("active") >= allocator("allocated"));
    assert!(allocator("resident") >= allocator("active"));
    assert!(allocator("metadata") > 0.0 && allocator("thread_caches") >= 0.0);
    assert!(
        !after.contains("ada@example.com"),
        "no personal data in labels"
    );
    let path = format!("/auth/sessions/{}", uuid::Uuid::now_v7());
    let by_id = app.send(reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(by_id.status, StatusCode::UNAUTHORIZED);
    let text = app
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains(r#"route="/auth/sessions/{id}",status="401""#),
        "route templates, not raw paths"
    );
}

crate::support::both_backends!(metrics_count_requests_logins_and_the_hashing_pool);
