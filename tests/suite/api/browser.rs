//! Browser mode over HTTP: the refresh cookie, its CSRF token and origin checks, and CORS.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{BrowserSession, Reply, TestApp, read};
use crate::support::db::Backend;

const APP_ORIGIN: &str = "https://app.example.com";

async fn spawn(backend: Backend) -> Option<TestApp> {
    let origins = format!("{APP_ORIGIN},http://localhost:5173");
    TestApp::spawn_with(backend, &["--cors-origins", &origins]).await
}

async fn browser_refresh_rotates_the_cookie_and_the_csrf_token(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_browser("ada@example.com").await;
    let reply = app
        .post_with_cookie(
            "/auth/refresh",
            &session.refresh_cookie,
            Some(&session.csrf),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert!(
        reply.body.get("refresh_token").is_none(),
        "never in a browser's body"
    );
    let csrf = reply.str("csrf_token");
    let refresh_cookie = reply.cookie("servauth_refresh").unwrap();
    assert_ne!(csrf, session.csrf);
    assert_ne!(refresh_cookie, session.refresh_cookie);
    assert_eq!(reply.cookie("servauth_csrf").unwrap(), csrf);
    let set = reply.set_cookies();
    let refresh = set
        .iter()
        .find(|c| c.starts_with("servauth_refresh="))
        .unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/auth"] {
        assert!(refresh.contains(attribute), "{refresh}");
    }
    assert_eq!(
        app.get("/auth/me", Some(&reply.str("access_token")))
            .await
            .status,
        StatusCode::OK
    );
    // The old CSRF token does not go with the new cookie.
    let stale = app
        .post_with_cookie("/auth/refresh", &refresh_cookie, Some(&session.csrf), &[])
        .await;
    stale.assert_problem(403, "csrf_failed");
    let fresh = app
        .post_with_cookie("/auth/refresh", &refresh_cookie, Some(&csrf), &[])
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
}

async fn two_tabs_refreshing_at_once_stay_signed_in(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_browser("ada@example.com").await;
    let (a, b) = tokio::join!(
        app.post_with_cookie(
            "/auth/refresh",
            &session.refresh_cookie,
            Some(&session.csrf),
            &[]
        ),
        app.post_with_cookie(
            "/auth/refresh",
            &session.refresh_cookie,
            Some(&session.csrf),
            &[]
        ),
    );
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{:#} {:#}",
        a.body,
        b.body
    );
    assert_eq!(a.cookie("servauth_refresh"), b.cookie("servauth_refresh"));
    assert_eq!(a.str("csrf_token"), b.str("csrf_token"));
}

async fn the_cookie_needs_the_matching_csrf_token(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_browser("ada@example.com").await;
    let other = app.login_browser("ada@example.com").await;
    let cookie = &session.refresh_cookie;
    app.post_with_cookie("/auth/refresh", cookie, None, &[])
        .await
        .assert_problem(403, "csrf_failed");
    app.post_with_cookie("/auth/refresh", cookie, Some(""), &[])
        .await
        .assert_problem(403, "csrf_failed");
    let wrong = app
        .post_with_cookie("/auth/refresh", cookie, Some("forged-token"), &[])
        .await;
    wrong.assert_problem(403, "csrf_failed");
    let anothers = app
        .post_with_cookie("/auth/refresh", cookie, Some(&other.csrf), &[])
        .await;
    anothers.assert_problem(403, "csrf_failed");
    // None of those rotated or revoked anything.
    let ok = app
        .post_with_cookie("/auth/refresh", cookie, Some(&session.csrf), &[])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // A native refresh token planted in the cookie has no CSRF pair at all.
    let native = app.login_native("ada@example.com").await;
    let planted = app
        .post_with_cookie("/auth/refresh", &native.refresh, Some(&session.csrf), &[])
        .await;
    planted.assert_problem(403, "csrf_failed");
}

async fn the_cookie_is_refused_from_a_foreign_origin(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let mut session = app.login_browser("ada@example.com").await;
    let denied: [&[(&str, &str)]; 6] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", "https://app.example.com.evil.example")],
        &[("origin", "http://app.example.com")],
        &[("sec-fetch-site", "cross-site")],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    ];
    for extra in denied {
        let reply = refresh_with(&app, &session, extra).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{extra:?}");
        assert_eq!(reply.body["code"], "csrf_failed", "{extra:?}");
    }
    let allowed: [&[(&str, &str)]; 6] = [
        &[("origin", APP_ORIGIN)],
        &[("origin", APP_ORIGIN), ("sec-fetch-site", "cross-site")],
        &[("origin", "http://localhost:8080")],
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "same-site")],
        &[],
    ];
    for extra in allowed {
        let reply = refresh_with(&app, &session, extra).await;
        assert_eq!(reply.status, StatusCode::OK, "{extra:?}: {:#}", reply.body);
        session.refresh_cookie = reply.cookie("servauth_refresh").unwrap();
        session.csrf = reply.str("csrf_token");
    }
}

async fn refresh_with(app: &TestApp, session: &BrowserSession, extra: &[(&str, &str)]) -> Reply {
    app.post_with_cookie(
        "/auth/refresh",
        &session.refresh_cookie,
        Some(&session.csrf),
        extra,
    )
    .await
}

async fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> Reply {
    let request = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/refresh"))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers);
    read(request.send().await.unwrap()).await
}

async fn cors_allows_exactly_the_listed_origins_with_credentials(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let allowed = preflight(
        &app,
        APP_ORIGIN,
        "POST",
        "content-type,x-csrf-token,authorization,x-request-id",
    )
    .await;
    assert!(allowed.status.is_success(), "{:?}", allowed.status);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = allowed
        .header("access-control-allow-methods")
        .unwrap()
        .to_ascii_uppercase();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "authorization",
        "content-type",
        "x-csrf-token",
        "x-request-id",
    ] {
        assert!(headers.contains(header), "{headers}");
    }
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    assert!(
        allowed
            .header("vary")
            .is_some_and(|vary| vary.to_ascii_lowercase().contains("origin"))
    );

    let denied = preflight(&app, "https://evil.example", "POST", "content-type").await;
    assert!(denied.header("access-control-allow-origin").is_none());
    assert!(denied.header("access-control-allow-credentials").is_none());

    let simple = |origin: &'static str| {
        let request = app.client.get(app.url("/health")).header("origin", origin);
        async move { read(request.send().await.unwrap()).await }
    };
    let listed = simple("http://localhost:5173").await;
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert!(
        listed
            .header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );
    assert!(
        simple("https://evil.example")
            .await
            .header("access-control-allow-origin")
            .is_none()
    );
    let login = read(
        app.client
            .post(app.url("/auth/login"))
            .header("origin", "https://evil.example")
            .json(&json!({"email": "a@b.co", "password": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(login.header("access-control-allow-origin").is_none());
}

async fn without_cors_origins_no_response_allows_another_origin(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = preflight(&app, APP_ORIGIN, "POST", "content-type").await;
    assert!(reply.header("access-control-allow-origin").is_none());
}

crate::support::both_backends!(
    browser_refresh_rotates_the_cookie_and_the_csrf_token,
    #[multi_thread]
    two_tabs_refreshing_at_once_stay_signed_in,
    the_cookie_needs_the_matching_csrf_token,
    the_cookie_is_refused_from_a_foreign_origin,
    cors_allows_exactly_the_listed_origins_with_credentials,
    without_cors_origins_no_response_allows_another_origin,
);
