//! Refresh rotation with reuse detection, logout, and the sessions API.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::Backend;

async fn refresh_rotates_the_token_every_time(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let first = app.refresh_native(&session.refresh).await;
    assert_eq!(first.status, StatusCode::OK, "{:#}", first.body);
    assert_eq!(first.body["token_type"], "Bearer");
    assert_eq!(first.body["expires_in"], 900);
    assert!(first.body.get("csrf_token").is_none() && first.body.get("user").is_none());
    assert!(
        first.set_cookies().is_empty(),
        "native clients get no cookies"
    );
    let rotated = first.str("refresh_token");
    assert_ne!(rotated, session.refresh);
    assert_eq!(rotated.len(), 43);
    let access = first.str("access_token");
    assert_eq!(
        app.get("/auth/me", Some(&access)).await.status,
        StatusCode::OK
    );
    let second = app.refresh_native(&rotated).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_ne!(second.str("refresh_token"), rotated);
}

async fn reuse_after_the_grace_revokes_the_whole_session(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let other = app.login_native("ada@example.com").await;
    let first = app
        .refresh_native(&session.refresh)
        .await
        .str("refresh_token");
    let newest_reply = app.refresh_native(&first).await;
    let newest = newest_reply.str("refresh_token");
    let newest_access = newest_reply.str("access_token");
    app.clock.advance(Duration::seconds(11));
    let reused = app.refresh_native(&session.refresh).await;
    reused.assert_problem(401, "refresh_token_reused");
    assert_eq!(
        reused.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    // Every token of the family is dead, the newest included, and so are its access tokens.
    app.refresh_native(&newest)
        .await
        .assert_problem(401, "invalid_token");
    app.refresh_native(&first)
        .await
        .assert_problem(401, "invalid_token");
    app.get("/auth/me", Some(&newest_access))
        .await
        .assert_problem(401, "invalid_token");
    app.get("/auth/me", Some(&session.access))
        .await
        .assert_problem(401, "invalid_token");
    // Other sessions of the user are untouched.
    assert_eq!(
        app.get("/auth/me", Some(&other.access)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_native(&other.refresh).await.status,
        StatusCode::OK
    );
}

async fn a_retry_within_the_grace_gets_the_same_successor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let first = app.refresh_native(&session.refresh).await;
    app.clock.advance(Duration::seconds(10));
    let retry = app.refresh_native(&session.refresh).await;
    assert_eq!(retry.status, StatusCode::OK, "{:#}", retry.body);
    assert_eq!(
        retry.str("refresh_token"),
        first.str("refresh_token"),
        "no fork"
    );
    assert_eq!(
        app.get("/auth/me", Some(&retry.str("access_token")))
            .await
            .status,
        StatusCode::OK
    );
    // The family goes on from that one successor.
    assert_eq!(
        app.refresh_native(&first.str("refresh_token")).await.status,
        StatusCode::OK
    );
}

async fn a_zero_grace_makes_any_second_use_a_reuse(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--refresh-reuse-grace", "0s"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let first = app.refresh_native(&session.refresh).await;
    assert_eq!(first.status, StatusCode::OK);
    app.clock.advance(Duration::milliseconds(1));
    app.refresh_native(&session.refresh)
        .await
        .assert_problem(401, "refresh_token_reused");
    app.refresh_native(&first.str("refresh_token"))
        .await
        .assert_problem(401, "invalid_token");
}

async fn twenty_concurrent_refreshes_never_fork_the_session(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let replies =
        futures::future::join_all((0..20).map(|_| app.refresh_native(&session.refresh))).await;
    let successors: std::collections::HashSet<String> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
            reply.str("refresh_token")
        })
        .collect();
    assert_eq!(
        successors.len(),
        1,
        "every racer got the one successor: {successors:?}"
    );
    let successor = successors.into_iter().next().unwrap();
    assert_eq!(app.refresh_native(&successor).await.status, StatusCode::OK);
    let user_id = app.get("/auth/me", Some(&session.access)).await.str("id");
    let live = app
        .store
        .list_live_sessions(user_id.parse().unwrap(), app.clock_now())
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "register and login; the race opened none");
}

/// Strict mode: with no grace, the racers that lose see a reused token, so the session ends
/// (the winner's successor with it). At most one answer carries a successor, and none of
/// the family lives on.
async fn twenty_concurrent_refreshes_without_grace_end_the_session(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--refresh-reuse-grace", "0s"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let replies =
        futures::future::join_all((0..20).map(|_| app.refresh_native(&session.refresh))).await;
    let successors: Vec<String> = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::OK)
        .map(|reply| reply.str("refresh_token"))
        .collect();
    assert!(successors.len() <= 1, "{successors:?}");
    let reused = replies
        .iter()
        .filter(|reply| reply.body["code"] == "refresh_token_reused")
        .count();
    assert!(reused >= 1, "the losers detect the reuse");
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::OK)
    {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:#}", reply.body);
    }
    for successor in &successors {
        app.refresh_native(successor)
            .await
            .assert_problem(401, "invalid_token");
    }
    app.get("/auth/me", Some(&session.access))
        .await
        .assert_problem(401, "invalid_token");
}

async fn refresh_tokens_expire_unused_and_with_their_session(backend: Backend) {
    let extra = ["--refresh-ttl", "1h", "--session-ttl", "3h"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    app.register("ada@example.com").await;
    let idle = app.login_native("ada@example.com").await;
    let mut busy = app.login_native("ada@example.com").await.refresh;
    for _ in 0..2 {
        app.clock.advance(Duration::minutes(59));
        busy = app.refresh_native(&busy).await.str("refresh_token");
    }
    app.refresh_native(&idle.refresh)
        .await
        .assert_problem(401, "invalid_token");
    app.clock.advance(Duration::minutes(59));
    busy = app.refresh_native(&busy).await.str("refresh_token");
    app.clock.advance(Duration::minutes(5));
    app.refresh_native(&busy)
        .await
        .assert_problem(401, "invalid_token");
}

async fn refresh_keeps_last_used_at(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    app.clock.advance(Duration::minutes(42));
    let refreshed = app
        .refresh_native(&session.refresh)
        .await
        .str("access_token");
    let listed = app.get("/auth/sessions", Some(&refreshed)).await;
    let current = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()
        .clone();
    let created: chrono::DateTime<chrono::Utc> =
        current["created_at"].as_str().unwrap().parse().unwrap();
    let used: chrono::DateTime<chrono::Utc> =
        current["last_used_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(used - created, Duration::minutes(42));
}

async fn refresh_without_a_credential_or_with_an_unknown_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let none = app.post("/auth/refresh", json!({})).await;
    none.assert_problem(401, "missing_credentials");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    app.post("/auth/refresh", json!({"refresh_token": ""}))
        .await
        .assert_problem(401, "missing_credentials");
    app.refresh_native("not-a-token")
        .await
        .assert_problem(401, "invalid_token");
    let bare = crate::support::app::read(
        app.client
            .post(app.url("/auth/refresh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    bare.assert_problem(401, "missing_credentials");
}

async fn logout_by_bearer_ends_the_session_and_clears_cookies(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_browser("ada@example.com").await;
    let other = app.login_native("ada@example.com").await;
    let reply = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:#}", reply.body);
    let cleared = reply.set_cookies();
    assert_eq!(cleared.len(), 2);
    for cookie in &cleared {
        assert!(cookie.contains("Max-Age=0"), "{cookie}");
    }
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("servauth_refresh=;") && c.contains("Path=/auth"))
    );
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("servauth_csrf=;") && c.contains("Path=/"))
    );
    app.get("/auth/me", Some(&session.access))
        .await
        .assert_problem(401, "invalid_token");
    let dead = app
        .post_with_cookie(
            "/auth/refresh",
            &session.refresh_cookie,
            Some(&session.csrf),
            &[],
        )
        .await;
    dead.assert_problem(401, "invalid_token");
    let again = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    again.assert_problem(401, "invalid_token");
    assert_eq!(
        app.get("/auth/me", Some(&other.access)).await.status,
        StatusCode::OK
    );
}

async fn logout_by_refresh_token_for_native_and_browser_clients(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let native = app.login_native("ada@example.com").await;
    let out = app
        .post("/auth/logout", json!({"refresh_token": native.refresh}))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    app.get("/auth/me", Some(&native.access))
        .await
        .assert_problem(401, "invalid_token");
    let again = app
        .post("/auth/logout", json!({"refresh_token": native.refresh}))
        .await;
    again.assert_problem(401, "invalid_token");

    let browser = app.login_browser("ada@example.com").await;
    let no_csrf = app
        .post_with_cookie("/auth/logout", &browser.refresh_cookie, None, &[])
        .await;
    no_csrf.assert_problem(403, "csrf_failed");
    let out = app
        .post_with_cookie(
            "/auth/logout",
            &browser.refresh_cookie,
            Some(&browser.csrf),
            &[],
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{:#}", out.body);
    app.get("/auth/me", Some(&browser.access))
        .await
        .assert_problem(401, "invalid_token");
    app.post("/auth/logout", json!({}))
        .await
        .assert_problem(401, "missing_credentials");
}

async fn sessions_are_listed_and_revoked_by_their_owner_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let first = app.login_native("ada@example.com").await;
    let second = app.login_native("ada@example.com").await;
    let bob = app.access_token("bob@example.com").await;
    let listed = app.get("/auth/sessions", Some(&second.access)).await;
    assert_eq!(listed.status, StatusCode::OK);
    let sessions = listed.body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "register and two logins");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(
        sessions[0]["current"], true,
        "newest first, and that is the caller's"
    );
    for session in &sessions {
        let keys: Vec<&str> = session
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert_eq!(session["ip"], "127.0.0.1");
    }
    let first_id = sessions[1]["id"].as_str().unwrap().to_owned();
    let bobs_view = app
        .send(
            Method::DELETE,
            &format!("/auth/sessions/{first_id}"),
            None,
            Some(&bob),
        )
        .await;
    bobs_view.assert_problem(404, "not_found");
    assert_eq!(
        app.get("/auth/me", Some(&first.access)).await.status,
        StatusCode::OK
    );
    let revoked = app
        .send(
            Method::DELETE,
            &format!("/auth/sessions/{first_id}"),
            None,
            Some(&second.access),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    app.get("/auth/me", Some(&first.access))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh_native(&first.refresh)
        .await
        .assert_problem(401, "invalid_token");
    let twice = app
        .send(
            Method::DELETE,
            &format!("/auth/sessions/{first_id}"),
            None,
            Some(&second.access),
        )
        .await;
    twice.assert_problem(404, "not_found");
    let malformed = app
        .send(
            Method::DELETE,
            "/auth/sessions/not-a-uuid",
            None,
            Some(&second.access),
        )
        .await;
    malformed.assert_problem(404, "not_found");
    assert_eq!(
        app.get("/auth/sessions", Some(&second.access)).await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let everywhere = app
        .send(Method::DELETE, "/auth/sessions", None, Some(&second.access))
        .await;
    assert_eq!(everywhere.status, StatusCode::NO_CONTENT);
    app.get("/auth/me", Some(&second.access))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh_native(&second.refresh)
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(
        app.get("/auth/me", Some(&bob)).await.status,
        StatusCode::OK,
        "other users keep theirs"
    );
    app.get("/auth/sessions", None)
        .await
        .assert_problem(401, "missing_credentials");
}

async fn a_revocation_survives_a_restart(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let session = app.login_native("ada@example.com").await;
    let out = app
        .send(Method::POST, "/auth/logout", None, Some(&session.access))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let restarted = TestApp::spawn_sharing(&app, app.db_url()).await;
    restarted
        .get("/auth/me", Some(&session.access))
        .await
        .assert_problem(401, "invalid_token");
    let refresh = restarted
        .post("/auth/refresh", json!({"refresh_token": session.refresh}))
        .await;
    refresh.assert_problem(401, "invalid_token");
    let login = restarted
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
}

crate::support::both_backends!(
    refresh_rotates_the_token_every_time,
    reuse_after_the_grace_revokes_the_whole_session,
    a_retry_within_the_grace_gets_the_same_successor,
    a_zero_grace_makes_any_second_use_a_reuse,
    #[multi_thread]
    twenty_concurrent_refreshes_never_fork_the_session,
    #[multi_thread]
    twenty_concurrent_refreshes_without_grace_end_the_session,
    refresh_tokens_expire_unused_and_with_their_session,
    refresh_keeps_last_used_at,
    refresh_without_a_credential_or_with_an_unknown_one,
    logout_by_bearer_ends_the_session_and_clears_cookies,
    logout_by_refresh_token_for_native_and_browser_clients,
    sessions_are_listed_and_revoked_by_their_owner_only,
    a_revocation_survives_a_restart,
);
