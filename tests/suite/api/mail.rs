//! The email flows against a real SMTP server: verification, password reset and change,
//! email change. Tokens are read out of the delivered messages.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::Backend;
use crate::support::smtp::SmtpSink;

const VERIFY: &str = "Confirm your email address";
const RESET: &str = "Reset your password";
const NEW_PASSWORD: &str = "a brand new passphrase for ada";

/// A server that mails through a real SMTP server on loopback, with these extra settings.
pub(super) async fn spawn(backend: Backend, extra: &[&str]) -> Option<(TestApp, SmtpSink)> {
    let smtp = SmtpSink::start().await?;
    let url = smtp.url();
    let mut args = vec![
        "--smtp-url",
        &url,
        "--mail-from",
        "servauth <auth@example.com>",
    ];
    args.extend_from_slice(extra);
    let app = TestApp::spawn_with(backend, &args).await?;
    Some((app, smtp))
}

async fn registration_mails_a_verification_link_that_works_once(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &["--app-url", "https://app.example.com/"]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let mail = smtp.wait_for("ada@example.com", VERIFY).await;
    assert!(
        mail.body.contains("From: servauth <auth@example.com>"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("multipart/alternative"));
    assert!(mail.body.contains("text/plain") && mail.body.contains("text/html"));
    assert!(
        mail.body
            .contains("https://app.example.com/verify-email?token="),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("expires in 24 hours"));
    let link = mail.token();
    assert_eq!(link.len(), 43);
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.body["email_verified"],
        false
    );
    let verified = app.post("/auth/email/verify", json!({"token": link})).await;
    assert_eq!(
        verified.status,
        StatusCode::NO_CONTENT,
        "{:#}",
        verified.body
    );
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.body["email_verified"],
        true
    );
    app.post("/auth/email/verify", json!({"token": link}))
        .await
        .assert_problem(400, "invalid_token");
    app.post("/auth/email/verify", json!({"token": "made-up"}))
        .await
        .assert_problem(400, "invalid_token");
    app.post("/auth/email/verify", json!({}))
        .await
        .assert_problem(422, "validation_failed");
}

async fn verification_links_expire(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &["--verify-ttl", "1h"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let link = smtp.wait_for("ada@example.com", VERIFY).await.token();
    app.clock.advance(Duration::minutes(61));
    app.post("/auth/email/verify", json!({"token": link}))
        .await
        .assert_problem(400, "invalid_token");
}

async fn resend_mails_a_fresh_link_and_retires_the_old_one(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let first = smtp.wait_for("ada@example.com", VERIFY).await.token();
    let resent = app
        .send(Method::POST, "/auth/email/resend", None, Some(&token))
        .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED);
    let second = smtp.wait_for_n("ada@example.com", VERIFY, 2).await[1].token();
    assert_ne!(first, second);
    app.post("/auth/email/verify", json!({"token": first}))
        .await
        .assert_problem(400, "invalid_token");
    assert_eq!(
        app.post("/auth/email/verify", json!({"token": second}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let again = app
        .send(Method::POST, "/auth/email/resend", None, Some(&token))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        smtp.messages_to("ada@example.com", VERIFY).len(),
        2,
        "nothing to send once verified"
    );
    // Without a session the address is asked for (see security.rs for that form).
    app.send(Method::POST, "/auth/email/resend", None, None)
        .await
        .assert_problem(422, "validation_failed");
}

async fn login_waits_for_a_verified_address_when_required(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &["--require-verified-email", "true"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    app.post("/auth/login", login.clone())
        .await
        .assert_problem(403, "email_not_verified");
    let wrong = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "not it at all, no"}),
        )
        .await;
    wrong.assert_problem(401, "invalid_credentials");
    let link = smtp.wait_for("ada@example.com", VERIFY).await.token();
    assert_eq!(
        app.post("/auth/email/verify", json!({"token": link}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.post("/auth/login", login).await.status, StatusCode::OK);
}

async fn forgot_password_answers_alike_and_mails_only_an_account(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let known = app
        .post("/auth/password/forgot", json!({"email": "ADA@example.com"}))
        .await;
    let unknown = app
        .post(
            "/auth/password/forgot",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    assert_eq!(known.header("content-type"), unknown.header("content-type"));
    let mail = smtp.wait_for("ada@example.com", RESET).await;
    assert!(
        mail.body
            .contains("http://localhost:8080/reset-password?token=")
    );
    assert!(mail.body.contains("expires in 30 minutes"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(smtp.messages_to("nobody@example.com", "").is_empty());
    let invalid = app
        .post("/auth/password/forgot", json!({"email": "not an address"}))
        .await;
    invalid.assert_problem(422, "validation_failed");
}

async fn a_reset_link_sets_the_password_once_and_ends_every_session(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let sessions = [
        app.login_native("ada@example.com").await,
        app.login_native("ada@example.com").await,
    ];
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let link = smtp.wait_for("ada@example.com", RESET).await.token();
    let weak = app
        .post(
            "/auth/password/reset",
            json!({"token": link, "password": "password"}),
        )
        .await;
    weak.assert_problem(422, "validation_failed");
    let as_email = app
        .post(
            "/auth/password/reset",
            json!({"token": link, "password": "ada@example.com"}),
        )
        .await;
    assert!(
        as_email
            .field_codes()
            .contains(&("password".into(), "password_contains_email".into()))
    );
    let reset = app
        .post(
            "/auth/password/reset",
            json!({"token": link, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(
        reset.status,
        StatusCode::NO_CONTENT,
        "the token survived the refused passwords"
    );
    for session in &sessions {
        app.get("/auth/me", Some(&session.access))
            .await
            .assert_problem(401, "invalid_token");
        app.refresh_native(&session.refresh)
            .await
            .assert_problem(401, "invalid_token");
    }
    let old = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    old.assert_problem(401, "invalid_credentials");
    let new = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);
    let again = app
        .post(
            "/auth/password/reset",
            json!({"token": link, "password": "yet another passphrase"}),
        )
        .await;
    again.assert_problem(400, "invalid_token");
    smtp.wait_for("ada@example.com", "Your password was changed")
        .await;
}

async fn a_newer_reset_link_retires_the_older_one(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let first = smtp.wait_for("ada@example.com", RESET).await.token();
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let second = smtp.wait_for_n("ada@example.com", RESET, 2).await[1].token();
    let old = app
        .post(
            "/auth/password/reset",
            json!({"token": first, "password": NEW_PASSWORD}),
        )
        .await;
    old.assert_problem(400, "invalid_token");
    let new = app
        .post(
            "/auth/password/reset",
            json!({"token": second, "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(new.status, StatusCode::NO_CONTENT);
}

async fn reset_links_expire(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &["--reset-ttl", "10m"]).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let mail = smtp.wait_for("ada@example.com", RESET).await;
    assert!(mail.body.contains("expires in 10 minutes"));
    app.clock.advance(Duration::minutes(11));
    let late = app
        .post(
            "/auth/password/reset",
            json!({"token": mail.token(), "password": NEW_PASSWORD}),
        )
        .await;
    late.assert_problem(400, "invalid_token");
}

async fn concurrent_resets_with_one_link_succeed_once(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let link = smtp.wait_for("ada@example.com", RESET).await.token();
    let attempts = (0..10).map(|i| {
        let body = json!({"token": link, "password": format!("{NEW_PASSWORD} number {i}")});
        app.post("/auth/password/reset", body)
    });
    let replies = futures::future::join_all(attempts).await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 400).count(),
        9,
        "{statuses:?}"
    );
}

async fn link_emails_are_limited_per_address(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    smtp.wait_for("ada@example.com", VERIFY).await;
    for _ in 0..5 {
        let reply = app
            .post("/auth/password/forgot", json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "the answer never changes"
        );
    }
    smtp.wait_for_n("ada@example.com", RESET, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        smtp.messages_to("ada@example.com", RESET).len(),
        2,
        "3 per address at once, the verification mail included"
    );
}

async fn a_password_change_needs_the_current_one_and_ends_other_sessions(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    app.register("ada@example.com").await;
    let current = app.login_native("ada@example.com").await;
    let other = app.login_native("ada@example.com").await;
    let change = |current_password: &str, new_password: &str| {
        let body = json!({"current_password": current_password, "new_password": new_password});
        app.send(
            Method::POST,
            "/auth/password/change",
            Some(body),
            Some(&current.access),
        )
    };
    change("not the password, no", NEW_PASSWORD)
        .await
        .assert_problem(403, "invalid_credentials");
    let weak = change(PASSWORD, "12345678").await;
    weak.assert_problem(422, "validation_failed");
    assert!(
        weak.field_codes()
            .iter()
            .all(|(field, _)| field == "new_password")
    );
    let missing = app
        .send(
            Method::POST,
            "/auth/password/change",
            Some(json!({})),
            Some(&current.access),
        )
        .await;
    assert_eq!(missing.field_codes().len(), 2);
    assert_eq!(
        change(PASSWORD, NEW_PASSWORD).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/auth/me", Some(&current.access)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_native(&current.refresh).await.status,
        StatusCode::OK
    );
    app.get("/auth/me", Some(&other.access))
        .await
        .assert_problem(401, "invalid_token");
    app.refresh_native(&other.refresh)
        .await
        .assert_problem(401, "invalid_token");
    let login = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    smtp.wait_for("ada@example.com", "Your password was changed")
        .await;
}

async fn an_email_change_takes_effect_when_the_new_address_confirms(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let verification = smtp.wait_for("ada@example.com", VERIFY).await.token();
    app.post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    let reset = smtp.wait_for("ada@example.com", RESET).await.token();

    let change = json!({"email": "Ada@New.example", "current_password": PASSWORD});
    let pending = app
        .send(Method::PATCH, "/auth/me", Some(change), Some(&token))
        .await;
    assert_eq!(pending.status, StatusCode::OK, "{:#}", pending.body);
    assert_eq!(pending.body["pending_email"], "Ada@New.example");
    let confirm = smtp
        .wait_for("Ada@New.example", "Confirm your new email address")
        .await;
    let notice = smtp
        .wait_for("ada@example.com", "Your email address is being changed")
        .await;
    assert!(notice.body.contains("Ada@New.example"));
    assert!(
        !notice.body.contains("token="),
        "the old address gets no link"
    );
    let old_login = json!({"email": "ada@example.com", "password": PASSWORD});
    assert_eq!(
        app.post("/auth/login", old_login.clone()).await.status,
        StatusCode::OK,
        "not yet changed"
    );

    // Confirmed from the signed-in app, whose session stays (the others end).
    let confirmed = app
        .send(
            Method::POST,
            "/auth/email/verify",
            Some(json!({"token": confirm.token()})),
            Some(&token),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{:#}",
        confirmed.body
    );
    let me = app.get("/auth/me", Some(&token)).await.body;
    assert_eq!(me["email"], "Ada@New.example");
    assert_eq!(me["email_verified"], true);
    assert!(me.get("pending_email").is_none());
    app.post("/auth/login", old_login)
        .await
        .assert_problem(401, "invalid_credentials");
    let new_login = json!({"email": "ada@new.example", "password": PASSWORD});
    assert_eq!(
        app.post("/auth/login", new_login).await.status,
        StatusCode::OK
    );
    // The old address's links died with the change.
    app.post("/auth/email/verify", json!({"token": verification}))
        .await
        .assert_problem(400, "invalid_token");
    let late_reset = app
        .post(
            "/auth/password/reset",
            json!({"token": reset, "password": NEW_PASSWORD}),
        )
        .await;
    late_reset.assert_problem(400, "invalid_token");
    app.post("/auth/email/verify", json!({"token": confirm.token()}))
        .await
        .assert_problem(400, "invalid_token");
    smtp.wait_for("ada@example.com", "Your email address was changed")
        .await;
}

async fn an_email_change_to_an_address_taken_meanwhile_is_a_conflict(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let change = json!({"email": "shared@example.com", "current_password": PASSWORD});
    assert_eq!(
        app.send(Method::PUT, "/auth/me", Some(change), Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    let confirm = smtp
        .wait_for("shared@example.com", "Confirm your new email address")
        .await
        .token();
    app.register("shared@example.com").await;
    let taken = app
        .post("/auth/email/verify", json!({"token": confirm}))
        .await;
    taken.assert_problem(409, "email_taken");
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.body["email"],
        "ada@example.com"
    );
}

crate::support::both_backends!(
    registration_mails_a_verification_link_that_works_once,
    verification_links_expire,
    resend_mails_a_fresh_link_and_retires_the_old_one,
    login_waits_for_a_verified_address_when_required,
    forgot_password_answers_alike_and_mails_only_an_account,
    a_reset_link_sets_the_password_once_and_ends_every_session,
    a_newer_reset_link_retires_the_older_one,
    reset_links_expire,
    #[multi_thread]
    concurrent_resets_with_one_link_succeed_once,
    link_emails_are_limited_per_address,
    a_password_change_needs_the_current_one_and_ends_other_sessions,
    an_email_change_takes_effect_when_the_new_address_confirms,
    an_email_change_to_an_address_taken_meanwhile_is_a_conflict,
);
