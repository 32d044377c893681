//! Register, login, /auth/me: the account endpoints of the contract.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::Backend;

async fn register_opens_a_browser_session_with_cookies(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "Ada@Example.com", "password": PASSWORD, "username": "ada"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
    let user = &reply.body["user"];
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["username"], "ada");
    assert_eq!(user["email_verified"], false);
    assert_eq!(user["role"], "user");
    assert!(user.get("pending_email").is_none());
    assert!(user.get("password_hash").is_none());
    assert_eq!(user["id"].as_str().unwrap().len(), 36);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 900);
    assert!(
        reply.body.get("refresh_token").is_none(),
        "browsers get it only as a cookie"
    );
    let csrf = reply.body["csrf_token"].as_str().unwrap();
    assert!(csrf.len() >= 43);

    let cookies = reply.set_cookies();
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("servauth_refresh="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "Path=/auth",
        "SameSite=Lax",
        "Secure",
        "Max-Age=604800",
    ] {
        assert!(refresh.contains(attribute), "{refresh} lacks {attribute}");
    }
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("servauth_csrf="))
        .unwrap();
    assert!(
        csrf_cookie.starts_with(&format!("servauth_csrf={csrf};")),
        "{csrf_cookie}"
    );
    assert!(
        csrf_cookie.contains("Path=/;") || csrf_cookie.ends_with("Path=/"),
        "{csrf_cookie}"
    );
    assert!(
        !csrf_cookie.contains("HttpOnly"),
        "scripts must read the CSRF cookie"
    );

    let token = reply.body["access_token"].as_str().unwrap();
    let me = app.get("/auth/me", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK);
    // The account as register answered it, and (since issue 17) its second factors.
    let mut me = me.body;
    let mfa = me.as_object_mut().and_then(|me| me.remove("mfa"));
    assert_eq!(me, *user);
    assert_eq!(
        mfa,
        Some(
            serde_json::json!({"totp": false, "passkeys": 0, "recovery_codes_left": 0, "second_factors": []})
        )
    );
}

async fn register_as_native_client_returns_the_refresh_token_and_no_cookies(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "ada@example.com", "password": PASSWORD, "client": "native"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["refresh_token"].as_str().unwrap().len(), 43);
    assert!(reply.body.get("csrf_token").is_none());
    assert!(reply.set_cookies().is_empty());
    assert_eq!(reply.body["user"]["username"], serde_json::Value::Null);
}

async fn cookie_attributes_follow_the_settings(backend: Backend) {
    let extra = [
        "--cookie-secure",
        "false",
        "--cookie-samesite",
        "strict",
        "--refresh-ttl",
        "1h",
    ];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    for cookie in reply.set_cookies() {
        assert!(!cookie.contains("Secure"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        // The device cookie outlives sessions: it vouches for the device, not a login.
        let max_age = if cookie.starts_with("servauth_device=") {
            "Max-Age=7776000"
        } else {
            "Max-Age=3600"
        };
        assert!(cookie.contains(max_age), "{cookie}");
    }
    assert!(
        reply.header("strict-transport-security").is_none(),
        "no HSTS without secure cookies"
    );
}

async fn register_refuses_a_taken_email_whatever_its_case(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let reply = app
        .post(
            "/auth/register",
            json!({"email": " ADA@Example.COM ", "password": PASSWORD}),
        )
        .await;
    reply.assert_problem(409, "email_taken");
}

async fn register_refuses_a_taken_username_whatever_its_case(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = json!({"email": "ada@example.com", "password": PASSWORD, "username": "Ada"});
    assert_eq!(
        app.post("/auth/register", first).await.status,
        StatusCode::CREATED
    );
    let second = json!({"email": "bob@example.com", "password": PASSWORD, "username": "aDA"});
    app.post("/auth/register", second)
        .await
        .assert_problem(409, "username_taken");
}

async fn register_lists_every_broken_rule(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "not-an-email", "password": "password", "username": "a!"}),
        )
        .await;
    reply.assert_problem(422, "validation_failed");
    let codes = reply.field_codes();
    for expected in [
        ("email", "invalid_email"),
        ("username", "invalid_username"),
        ("password", "password_too_short"),
        ("password", "password_too_common"),
    ] {
        assert!(
            codes.contains(&(expected.0.into(), expected.1.into())),
            "{codes:?} lacks {expected:?}"
        );
    }
    let missing = app.post("/auth/register", json!({})).await;
    missing.assert_problem(422, "validation_failed");
    assert_eq!(
        missing.field_codes(),
        vec![
            ("email".into(), "required".into()),
            ("password".into(), "required".into())
        ]
    );
    let empty_username = app
        .post(
            "/auth/register",
            json!({"email": "a@example.com", "password": PASSWORD, "username": ""}),
        )
        .await;
    assert_eq!(
        empty_username.field_codes(),
        vec![("username".into(), "invalid_username".into())]
    );
}

async fn register_applies_the_password_rules_of_the_contract(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--password-min-length", "8"]).await else {
        return;
    };
    for common in ["password", "12345678", "123456789", "qwertyuiop"] {
        let reply = app
            .post(
                "/auth/register",
                json!({"email": "ada@example.com", "password": common}),
            )
            .await;
        assert_eq!(
            reply.field_codes(),
            vec![("password".into(), "password_too_common".into())],
            "{common}"
        );
    }
    let as_email = app
        .post(
            "/auth/register",
            json!({"email": "lovelace.ada@example.com", "password": "LOVELACE.ADA@example.com"}),
        )
        .await;
    assert!(
        as_email
            .field_codes()
            .contains(&("password".into(), "password_contains_email".into()))
    );
    let local_part = app
        .post(
            "/auth/register",
            json!({"email": "lovelace.ada@example.com", "password": "Lovelace.Ada"}),
        )
        .await;
    assert!(
        local_part
            .field_codes()
            .contains(&("password".into(), "password_contains_email".into()))
    );
    let too_long = app
        .post(
            "/auth/register",
            json!({"email": "ada@example.com", "password": "ž".repeat(129)}),
        )
        .await;
    assert_eq!(
        too_long.field_codes(),
        vec![("password".into(), "password_too_long".into())]
    );
    let longest = app.post("/auth/register", json!({"email": "ada@example.com", "password": "žluťoučký kůň úpěl ďábelské ódy ".repeat(4)})).await;
    assert_eq!(
        longest.status,
        StatusCode::CREATED,
        "128 code points are allowed"
    );
    let short = TestApp::spawn(backend).await.unwrap();
    let fourteen = short
        .post(
            "/auth/register",
            json!({"email": "b@example.com", "password": "kq8#vLm2!pz7Rw"}),
        )
        .await;
    assert_eq!(
        fourteen.field_codes(),
        vec![("password".into(), "password_too_short".into())],
        "default minimum is 15"
    );
}

async fn login_opens_a_new_session_each_time(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let login = json!({"email": "ADA@example.com", "password": PASSWORD, "client": "native"});
    let first = app.post("/auth/login", login.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{:#}", first.body);
    assert_eq!(first.body["user"], registered["user"]);
    let second = app.post("/auth/login", login).await;
    assert_ne!(first.body["refresh_token"], second.body["refresh_token"]);
    assert_ne!(first.body["access_token"], second.body["access_token"]);
    let browser = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(browser.status, StatusCode::OK);
    assert!(browser.body["csrf_token"].is_string());
    assert_eq!(
        browser.set_cookies().len(),
        3,
        "refresh, CSRF and device cookies"
    );
    let user_id = uuid::Uuid::parse_str(registered["user"]["id"].as_str().unwrap()).unwrap();
    let sessions = app
        .store
        .list_live_sessions(user_id, app.clock_now())
        .await
        .unwrap();
    assert_eq!(
        sessions.len(),
        4,
        "register and three logins each open a session"
    );
    assert!(
        sessions
            .iter()
            .all(|session| session.ip.as_deref() == Some("127.0.0.1"))
    );
}

async fn login_answers_alike_for_an_unknown_email_and_a_wrong_password(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    let wrong = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "not the password at all"}),
        )
        .await;
    let unknown = app
        .post(
            "/auth/login",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    let malformed = app
        .post(
            "/auth/login",
            json!({"email": "nobody", "password": PASSWORD}),
        )
        .await;
    for reply in [&wrong, &unknown, &malformed] {
        reply.assert_problem(401, "invalid_credentials");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert!(reply.set_cookies().is_empty());
    }
    let strip = |reply: &crate::support::app::Reply| {
        let mut body = reply.body.clone();
        body.as_object_mut().unwrap().remove("request_id");
        body
    };
    assert_eq!(strip(&wrong), strip(&unknown));
    assert_eq!(strip(&wrong), strip(&malformed));
    app.post("/auth/login", json!({"email": "ada@example.com"}))
        .await
        .assert_problem(422, "validation_failed");
}

async fn passwords_are_compared_after_nfkc_normalization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // U+FB01 LATIN SMALL LIGATURE FI normalizes to "fi"; the full-width digits to ASCII.
    let set = "ﬁnest passphrase ９９ here";
    let typed = "finest passphrase 99 here";
    let reply = app
        .post(
            "/auth/register",
            json!({"email": "ada@example.com", "password": set}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
    let login = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": typed}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let untrimmed = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": format!(" {typed}")}),
        )
        .await;
    untrimmed.assert_problem(401, "invalid_credentials");
}

async fn me_changes_and_removes_the_username(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let set = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"username": "ada"})),
            Some(&token),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:#}", set.body);
    assert_eq!(set.body["username"], "ada");
    let untouched = app
        .send(Method::PUT, "/auth/me", Some(json!({})), Some(&token))
        .await;
    assert_eq!(
        untouched.body["username"], "ada",
        "an absent field is left as it is"
    );
    let removed = app
        .send(
            Method::PUT,
            "/auth/me",
            Some(json!({"username": null})),
            Some(&token),
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.body["username"], serde_json::Value::Null);
    let invalid = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"username": "x"})),
            Some(&token),
        )
        .await;
    invalid.assert_problem(422, "validation_failed");

    let other = app.access_token("bob@example.com").await;
    app.send(
        Method::PATCH,
        "/auth/me",
        Some(json!({"username": "Bob"})),
        Some(&other),
    )
    .await;
    let taken = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"username": "BOB"})),
            Some(&token),
        )
        .await;
    taken.assert_problem(409, "username_taken");
}

async fn me_email_change_needs_the_current_password_and_stays_pending(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    app.register("bob@example.com").await;
    let missing = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": "ada@new.example"})),
            Some(&token),
        )
        .await;
    assert_eq!(
        missing.field_codes(),
        vec![("current_password".into(), "required".into())]
    );
    let wrong = json!({"email": "ada@new.example", "current_password": "not my password, no"});
    app.send(Method::PATCH, "/auth/me", Some(wrong), Some(&token))
        .await
        .assert_problem(403, "invalid_credentials");
    // An address with an account answers like any other: no oracle (its owner is told).
    let taken = json!({"email": "BOB@example.com", "current_password": PASSWORD});
    let answer = app
        .send(Method::PATCH, "/auth/me", Some(taken), Some(&token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
    assert_eq!(answer.body["pending_email"], "BOB@example.com");
    let change = json!({"email": "ada@new.example", "current_password": PASSWORD});
    let changed = app
        .send(Method::PATCH, "/auth/me", Some(change), Some(&token))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:#}", changed.body);
    assert_eq!(
        changed.body["email"], "ada@example.com",
        "changes only when confirmed"
    );
    assert_eq!(changed.body["pending_email"], "ada@new.example");
}

async fn me_delete_needs_the_password_and_frees_the_email(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let wrong = app
        .send(
            Method::DELETE,
            "/auth/me",
            Some(json!({"password": "certainly not it"})),
            Some(&token),
        )
        .await;
    wrong.assert_problem(403, "invalid_credentials");
    let missing = app
        .send(Method::DELETE, "/auth/me", None, Some(&token))
        .await;
    assert_eq!(
        missing.field_codes(),
        vec![("password".into(), "required".into())]
    );
    let deleted = app
        .send(
            Method::DELETE,
            "/auth/me",
            Some(json!({"password": PASSWORD})),
            Some(&token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get("/auth/me", Some(&token))
        .await
        .assert_problem(401, "invalid_token");
    let login = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    login.assert_problem(401, "invalid_credentials");
    app.register("ada@example.com").await;
}

crate::support::both_backends!(
    register_opens_a_browser_session_with_cookies,
    register_as_native_client_returns_the_refresh_token_and_no_cookies,
    cookie_attributes_follow_the_settings,
    register_refuses_a_taken_email_whatever_its_case,
    register_refuses_a_taken_username_whatever_its_case,
    register_lists_every_broken_rule,
    register_applies_the_password_rules_of_the_contract,
    login_opens_a_new_session_each_time,
    login_answers_alike_for_an_unknown_email_and_a_wrong_password,
    passwords_are_compared_after_nfkc_normalization,
    me_changes_and_removes_the_username,
    me_email_change_needs_the_current_password_and_stays_pending,
    me_delete_needs_the_password_and_frees_the_email,
);
