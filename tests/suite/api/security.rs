//! Regression tests for the outside security review of the first release (issue 15): each
//! test reproduces a finding's attack and fails on the release that had the hole.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{PASSWORD, Reply, TestApp, read};
use crate::support::db::Backend;
use crate::support::redis::RedisServer;
use crate::support::smtp::SmtpSink;

use super::mail::spawn;

const RESET: &str = "Reset your password";
const VERIFY: &str = "Confirm your email address";
const CONFIRM_NEW: &str = "Confirm your new email address";
const TRIED: &str = "Someone tried to use your email address";
const NEW_PASSWORD: &str = "a brand new passphrase for ada";
const ATTACKER: &str = "mallory@evil.test";

async fn login(app: &TestApp, email: &str, password: &str, device: Option<&str>) -> Reply {
    let mut body = json!({"email": email, "password": password, "client": "native"});
    if let Some(device) = device {
        body["device_token"] = json!(device);
    }
    app.post("/auth/login", body).await
}

/// The owner of ada's account signs in (beside the attacker's session).
async fn owner_session(app: &TestApp) -> String {
    login(app, "ada@example.com", PASSWORD, None)
        .await
        .str("access_token")
}

/// A server with ada's account, where an attacker who knew the password has started moving
/// it to their own address: the server, its mail, and the attacker's confirmation link.
async fn attacker_changing_the_address(backend: Backend) -> Option<(TestApp, SmtpSink, String)> {
    let (app, smtp) = spawn(backend, &[]).await?;
    let attacker = app.access_token("ada@example.com").await;
    let link = start_change_to_attacker(&app, &smtp, &attacker).await;
    Some((app, smtp, link))
}

/// Starts an email change of `token`'s account to the attacker's address and returns the
/// confirmation link's token the attacker received.
async fn start_change_to_attacker(app: &TestApp, smtp: &SmtpSink, token: &str) -> String {
    let change = json!({"email": ATTACKER, "current_password": PASSWORD});
    let reply = app
        .send(Method::PATCH, "/auth/me", Some(change), Some(token))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["pending_email"], ATTACKER);
    smtp.wait_for(ATTACKER, CONFIRM_NEW).await.token()
}

/// The attacker's link no longer confirms anything, and the account kept its address.
async fn assert_change_is_dead(app: &TestApp, link: &str, password: &str) {
    app.post("/auth/email/verify", json!({"token": link}))
        .await
        .assert_problem(400, "invalid_token");
    let session = login(app, "ada@example.com", password, None).await;
    assert_eq!(session.status, StatusCode::OK, "{:#}", session.body);
    assert_eq!(session.body["user"]["email"], "ada@example.com");
    assert!(
        session.body["user"].get("pending_email").is_none(),
        "{:#}",
        session.body
    );
}

// ---- 1: a pending email change does not survive account recovery --------------------------

async fn a_password_reset_ends_a_pending_email_change(backend: Backend) {
    let Some((app, smtp, link)) = attacker_changing_the_address(backend).await else {
        return;
    };
    // The owner recovers the account.
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let reset = smtp.wait_for("ada@example.com", RESET).await.token();
    let done = app
        .post(
            "/auth/password/reset",
            json!({"token": reset, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:#}", done.body);
    assert_change_is_dead(&app, &link, NEW_PASSWORD).await;
}

async fn a_password_change_ends_a_pending_email_change(backend: Backend) {
    let Some((app, _smtp, link)) = attacker_changing_the_address(backend).await else {
        return;
    };
    let owner = owner_session(&app).await;
    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let changed = app
        .send(
            Method::POST,
            "/auth/password/change",
            Some(change),
            Some(&owner),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:#}", changed.body);
    assert_change_is_dead(&app, &link, NEW_PASSWORD).await;
}

async fn signing_out_everywhere_ends_a_pending_email_change(backend: Backend) {
    let Some((app, _smtp, link)) = attacker_changing_the_address(backend).await else {
        return;
    };
    let owner = owner_session(&app).await;
    let out = app
        .send(Method::DELETE, "/auth/sessions", None, Some(&owner))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_change_is_dead(&app, &link, PASSWORD).await;
}

async fn setting_the_current_address_again_cancels_a_pending_change(backend: Backend) {
    let Some((app, _smtp, link)) = attacker_changing_the_address(backend).await else {
        return;
    };
    let owner = owner_session(&app).await;
    let back = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": "ADA@example.com"})),
            Some(&owner),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{:#}", back.body);
    assert!(back.body.get("pending_email").is_none(), "{:#}", back.body);
    assert_change_is_dead(&app, &link, PASSWORD).await;
}

async fn confirming_an_email_change_ends_the_other_sessions(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let first = app.access_token("ada@example.com").await;
    let other = login(&app, "ada@example.com", PASSWORD, None).await;
    let change = json!({"email": "ada@new.example", "current_password": PASSWORD});
    app.send(Method::PATCH, "/auth/me", Some(change), Some(&first))
        .await;
    let link = smtp.wait_for("ada@new.example", CONFIRM_NEW).await.token();
    let confirmed = app
        .send(
            Method::POST,
            "/auth/email/verify",
            Some(json!({"token": link})),
            Some(&first),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{:#}",
        confirmed.body
    );
    let me = app.get("/auth/me", Some(&first)).await;
    assert_eq!(
        me.body["email"], "ada@new.example",
        "the confirming session stays"
    );
    app.get("/auth/me", Some(&other.str("access_token")))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh_native(&other.str("refresh_token"))
        .await
        .assert_problem(401, "invalid_token");
}

// ---- 2: password re-checks are throttled; no email oracle ----------------------------------

async fn wrong_password_rechecks_are_throttled_like_logins(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let wrong = "not my password at all";
    let attempts = [
        (
            Method::POST,
            "/auth/password/change",
            json!({"current_password": wrong, "new_password": NEW_PASSWORD}),
        ),
        (Method::DELETE, "/auth/me", json!({"password": wrong})),
        (
            Method::PATCH,
            "/auth/me",
            json!({"email": "ada@new.example", "current_password": wrong}),
        ),
    ];
    for (method, path, body) in attempts.clone() {
        app.send(method, path, Some(body), Some(&token))
            .await
            .assert_problem(403, "invalid_credentials");
    }
    for (method, path, body) in attempts {
        app.send(method, path, Some(body), Some(&token))
            .await
            .assert_problem(429, "rate_limited");
    }
    // They counted for the account too: a login without a device token now waits.
    login(&app, "ada@example.com", PASSWORD, None)
        .await
        .assert_problem(429, "rate_limited");
}

async fn password_rechecks_are_limited_per_session_whatever_the_ip(backend: Backend) {
    let extra = ["--rate-limit", "3/1m", "--trusted-proxies", "127.0.0.1/32"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let reply = read(
            app.client
                .delete(app.url("/auth/me"))
                .bearer_auth(&token)
                .header("x-forwarded-for", format!("198.51.100.{n}"))
                .json(&json!({"password": "not my password at all"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        statuses,
        [403, 403, 403, 429],
        "four addresses, one session"
    );
}

async fn an_email_change_to_a_taken_address_answers_like_any_other(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("victim@example.com").await;
    let token = app.access_token("ada@example.com").await;
    let mut answers = Vec::new();
    for address in ["Victim@example.com", "free@example.com"] {
        let change = json!({"email": address, "current_password": PASSWORD});
        let reply = app
            .send(Method::PATCH, "/auth/me", Some(change), Some(&token))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
        assert_eq!(reply.body["pending_email"], address);
        let mut body = reply.body.clone();
        for field in ["pending_email", "updated_at"] {
            body.as_object_mut().unwrap().remove(field);
        }
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1], "the same answer either way");
    smtp.wait_for("victim@example.com", TRIED).await;
    smtp.wait_for("free@example.com", CONFIRM_NEW).await;
    assert!(
        smtp.messages_to("victim@example.com", CONFIRM_NEW)
            .is_empty(),
        "no link to an address with an account"
    );
}

// ---- 3: forgot-password consults the mail limit before it retires anything -----------------

async fn forgot_password_beyond_the_mail_limit_retires_no_link(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    // The registration's verification link is one of the address's three link emails.
    smtp.wait_for("ada@example.com", VERIFY).await;
    // One after the other: each request's work runs in the background.
    for mailed in [1, 2] {
        let reply = app
            .post("/auth/password/forgot", json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        smtp.wait_for_n("ada@example.com", RESET, mailed).await;
    }
    for _ in 0..2 {
        let reply = app
            .post("/auth/password/forgot", json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "the same answer when refused"
        );
    }
    // Give the refused requests' background work time to (not) act.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let links = smtp.messages_to("ada@example.com", RESET);
    assert_eq!(smtp.messages_to("ada@example.com", RESET).len(), 2);
    let newest = links.last().unwrap().token();
    let reset = app
        .post(
            "/auth/password/reset",
            json!({"token": newest, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(
        reset.status,
        StatusCode::NO_CONTENT,
        "the last link mailed still works: {:#}",
        reset.body
    );
}

// ---- 4: failed logins cannot keep the owner out ---------------------------------------------

async fn fail_until_throttled(app: &TestApp, email: &str) {
    for _ in 0..3 {
        login(app, email, "not the right password", None)
            .await
            .assert_problem(401, "invalid_credentials");
    }
    login(app, email, PASSWORD, None)
        .await
        .assert_problem(429, "rate_limited");
}

async fn a_password_reset_clears_the_failed_login_count(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    fail_until_throttled(&app, "ada@example.com").await;
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let reset = smtp.wait_for("ada@example.com", RESET).await.token();
    app.post(
        "/auth/password/reset",
        json!({"token": reset, "password": NEW_PASSWORD}),
    )
    .await;
    let after = login(&app, "ada@example.com", NEW_PASSWORD, None).await;
    assert_eq!(after.status, StatusCode::OK, "{:#}", after.body);
}

async fn a_password_change_clears_the_failed_login_count(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    fail_until_throttled(&app, "ada@example.com").await;
    // The signed-in owner is not throttled by those failures, and the change clears them.
    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let changed = app
        .send(
            Method::POST,
            "/auth/password/change",
            Some(change),
            Some(&token),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:#}", changed.body);
    let after = login(&app, "ada@example.com", NEW_PASSWORD, None).await;
    assert_eq!(after.status, StatusCode::OK, "{:#}", after.body);
}

async fn a_device_token_is_not_throttled_by_other_clients_failures(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let device = registered["device_token"].as_str().unwrap().to_owned();
    fail_until_throttled(&app, "ada@example.com").await;
    // Another account's token, or a forged one, counts for nothing.
    let bob = app.register("bob@example.com").await;
    login(
        &app,
        "ada@example.com",
        PASSWORD,
        bob["device_token"].as_str(),
    )
    .await
    .assert_problem(429, "rate_limited");
    login(
        &app,
        "ada@example.com",
        PASSWORD,
        Some("forged-device-token"),
    )
    .await
    .assert_problem(429, "rate_limited");
    let owner = login(&app, "ada@example.com", PASSWORD, Some(&device)).await;
    assert_eq!(owner.status, StatusCode::OK, "{:#}", owner.body);
    let device = owner.str("device_token");
    // The device's own failures still throttle it.
    for _ in 0..3 {
        login(&app, "ada@example.com", "wrong again, sorry", Some(&device))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    login(&app, "ada@example.com", PASSWORD, Some(&device))
        .await
        .assert_problem(429, "rate_limited");
}

async fn browsers_keep_their_device_token_in_an_httponly_cookie(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let browser = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let cookie = browser
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("servauth_device="))
        .expect("a device cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/auth"),
        "{cookie}"
    );
    assert!(browser.body.get("device_token").is_none());
    let device = browser.cookie("servauth_device").unwrap();
    fail_until_throttled(&app, "ada@example.com").await;
    let again = read(
        app.client
            .post(app.url("/auth/login"))
            .header("cookie", format!("servauth_device={device}"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{:#}", again.body);
}

// ---- 5: a required verified email is required everywhere ------------------------------------

fn claims(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn a_required_verified_email_gives_no_session_until_verified(backend: Backend) {
    let secret = "an internal secret of at least 32 bytes";
    let extra = [
        "--require-verified-email",
        "true",
        "--internal-secret",
        secret,
    ];
    let Some((app, smtp)) = spawn(backend, &extra).await else {
        return;
    };
    let registered = app
        .post(
            "/auth/register",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:#}",
        registered.body
    );
    assert_eq!(registered.body["verification_required"], true);
    assert_eq!(registered.body["user"]["email"], "ada@example.com");
    assert!(registered.body.get("access_token").is_none());
    assert!(
        registered.set_cookies().is_empty(),
        "no session, no cookies"
    );
    login(&app, "ada@example.com", PASSWORD, None)
        .await
        .assert_problem(403, "email_not_verified");

    // A session the account got before the setting was on is of no use either.
    let user_id = uuid::Uuid::parse_str(registered.body["user"]["id"].as_str().unwrap()).unwrap();
    let user = app.store.find_user(user_id).await.unwrap().unwrap();
    let old = old_session(&app, &user).await;
    app.get("/auth/me", Some(&old.0))
        .await
        .assert_problem(403, "email_not_verified");
    app.refresh_native(&old.1)
        .await
        .assert_problem(403, "email_not_verified");
    let validated = app
        .client
        .post(app.url("/api/internal/validate"))
        .header("x-service-auth", secret)
        .json(&json!({"token": old.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(read(validated).await.body, json!({"active": false}));

    // Without a session, a new link is asked for by address.
    smtp.wait_for("ada@example.com", VERIFY).await;
    let resend = app
        .post("/auth/email/resend", json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(resend.status, StatusCode::ACCEPTED, "{:#}", resend.body);
    let links = smtp.wait_for_n("ada@example.com", VERIFY, 2).await;
    let verified = app
        .post("/auth/email/verify", json!({"token": links[1].token()}))
        .await;
    assert_eq!(
        verified.status,
        StatusCode::NO_CONTENT,
        "{:#}",
        verified.body
    );
    let session = login(&app, "ada@example.com", PASSWORD, None).await;
    assert_eq!(session.status, StatusCode::OK, "{:#}", session.body);
    assert_eq!(claims(&session.str("access_token"))["email_verified"], true);
    assert_eq!(claims(&old.0)["email_verified"], false);
}

/// A session opened straight through the domain, as one opened before the requirement was
/// switched on would be: its access and refresh tokens.
async fn old_session(app: &TestApp, user: &servauth::store::UserRecord) -> (String, String) {
    // A second server on the same database without the requirement opens it.
    let replica = TestApp::spawn_sharing(app, app.db_url()).await;
    let reply = replica
        .post(
            "/auth/login",
            json!({"email": user.email, "password": PASSWORD, "client": "native"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    (reply.str("access_token"), reply.str("refresh_token"))
}

// ---- 8: refresh and resend are limited per client --------------------------------------------

async fn refresh_and_resend_are_limited_per_ip(backend: Backend) {
    let extra = ["--refresh-rate-limit", "3/1m", "--rate-limit", "3/1m"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    for _ in 0..3 {
        app.refresh_native("not-a-refresh-token")
            .await
            .assert_problem(401, "invalid_token");
        let resend = app
            .post("/auth/email/resend", json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(resend.status, StatusCode::ACCEPTED);
    }
    app.refresh_native("not-a-refresh-token")
        .await
        .assert_problem(429, "rate_limited");
    app.post("/auth/email/resend", json!({"email": "ada@example.com"}))
        .await
        .assert_problem(429, "rate_limited");
}

// ---- 15: grace replays answer the newest successor; counts survive Redis ------------------

async fn a_grace_replay_answers_the_newest_successor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let first = app.login_native("ada@example.com").await.refresh;
    // Tab A refreshes twice; tab B then replays the first token within the grace.
    let second = app.refresh_native(&first).await.str("refresh_token");
    let third = app.refresh_native(&second).await.str("refresh_token");
    let replayed = app.refresh_native(&first).await;
    assert_eq!(replayed.status, StatusCode::OK, "{:#}", replayed.body);
    assert_eq!(
        replayed.str("refresh_token"),
        third,
        "the live token, not a rotated one"
    );
    app.clock.advance(chrono::Duration::seconds(30));
    let next = app.refresh_native(&replayed.str("refresh_token")).await;
    assert_eq!(
        next.status,
        StatusCode::OK,
        "still signed in: {:#}",
        next.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_counts_survive_a_redis_restart() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let extra = [
        "--redis-url",
        url.as_str(),
        "--login-failure-limit",
        "3/15m",
    ];
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, &extra).await else {
        return;
    };
    wait_for_redis(&app, "up").await;
    app.register("ada@example.com").await;
    fail_until_throttled(&app, "ada@example.com").await;
    // Redis restarts empty (no persistence): the count comes back from this server's mirror.
    redis.stop();
    wait_for_redis(&app, "down").await;
    login(&app, "ada@example.com", PASSWORD, None)
        .await
        .assert_problem(429, "rate_limited");
    redis.restart().await;
    wait_for_redis(&app, "up").await;
    login(&app, "ada@example.com", PASSWORD, None)
        .await
        .assert_problem(429, "rate_limited");
}

async fn wait_for_redis(app: &TestApp, state: &str) {
    let started = std::time::Instant::now();
    while app.get("/ready", None).await.body["redis"] != state {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis never {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- 14: failed logins are logged with an account id and the client IP ---------------------

#[tokio::test]
async fn failed_logins_are_logged_with_a_keyed_account_id_and_the_client_ip() {
    let (child, base, _dir) = super::process::spawn_server(&[]).await;
    let client = crate::support::client();
    for email in ["ada@example.com", "ada@example.com", "bob@example.com"] {
        let reply = client
            .post(format!("{base}/auth/login"))
            .json(&json!({"email": email, "password": "wrong password here"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 401);
    }
    let (stdout, lines) = super::process::stop_and_read_log(child);
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "login failed: invalid credentials")
        .collect();
    assert_eq!(failures.len(), 3, "{stdout}");
    let account = |n: usize| failures[n]["account"].as_str().unwrap().to_owned();
    assert_eq!(account(0).len(), 16);
    assert_eq!(account(0), account(1), "one address, one id");
    assert_ne!(account(0), account(2));
    assert!(
        !stdout.contains("ada@example.com"),
        "no address in clear: {stdout}"
    );
    for failure in &failures {
        assert_eq!(failure["client_ip"], "127.0.0.1", "{failure}");
    }
}

crate::support::both_backends!(
    a_password_reset_ends_a_pending_email_change,
    a_password_change_ends_a_pending_email_change,
    signing_out_everywhere_ends_a_pending_email_change,
    setting_the_current_address_again_cancels_a_pending_change,
    confirming_an_email_change_ends_the_other_sessions,
    wrong_password_rechecks_are_throttled_like_logins,
    password_rechecks_are_limited_per_session_whatever_the_ip,
    an_email_change_to_a_taken_address_answers_like_any_other,
    forgot_password_beyond_the_mail_limit_retires_no_link,
    a_password_reset_clears_the_failed_login_count,
    a_password_change_clears_the_failed_login_count,
    a_device_token_is_not_throttled_by_other_clients_failures,
    browsers_keep_their_device_token_in_an_httponly_cookie,
    a_required_verified_email_gives_no_session_until_verified,
    refresh_and_resend_are_limited_per_ip,
    a_grace_replay_answers_the_newest_successor,
);
