//! `/admin`: looking after users (search, create, update, ban, delete, sessions, reset
//! mail) and the audit log, for admins and services, on both backends.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use servauth::store::{AdminUpdate, Role};
use uuid::Uuid;

use crate::support::app::{PASSWORD, Reply, TestApp, read};
use crate::support::db::Backend;

const SERVICE: &str = "service-secret-service-secret-0123456789";
const BETTER_AUTH: &str = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz";

async fn spawn(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(
        backend,
        &[
            "--internal-secret",
            SERVICE,
            "--better-auth-secret",
            BETTER_AUTH,
        ],
    )
    .await
}

/// Registers `email` and makes it an admin through the store; its access token.
async fn admin(app: &TestApp, email: &str) -> String {
    let registered = app.register(email).await;
    let id: Uuid = registered["user"]["id"].as_str().unwrap().parse().unwrap();
    app.store
        .admin_update_user(
            id,
            &AdminUpdate {
                role: Some(Role::Admin),
                ..AdminUpdate::default()
            },
            app.clock_now(),
        )
        .await
        .unwrap();
    registered["access_token"].as_str().unwrap().to_owned()
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    app.send(method, path, body, Some(token)).await
}

async fn as_service(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Reply {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("x-service-auth", SERVICE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

fn id_of(body: &Value) -> String {
    body["user"]["id"].as_str().unwrap().to_owned()
}

fn emails(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["email"].as_str().unwrap().to_owned())
        .collect()
}

/// Every event of a user, oldest first.
async fn events_of(app: &TestApp, token: &str, user: &str) -> Vec<Value> {
    let reply = call(
        app,
        Method::GET,
        &format!("/admin/audit?user={user}&limit=200"),
        token,
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    let mut events = reply.body["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect()
}

async fn admin_routes_need_an_admin_or_the_service_secret(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let user = app.access_token("ada@example.com").await;

    app.get("/admin/users", None)
        .await
        .assert_problem(401, "missing_credentials");
    call(&app, Method::GET, "/admin/users", &user, None)
        .await
        .assert_problem(403, "forbidden");
    call(&app, Method::GET, "/admin/audit", &user, None)
        .await
        .assert_problem(403, "forbidden");
    // A token whose claims say admin but that this server did not sign gets nothing: the
    // role is read from the store, and the signature comes first.
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let mut parts = user.split('.');
    let (_, claims) = (parts.next(), parts.next().unwrap());
    let forged_claims = base64_url(
        String::from_utf8(decode_url(claims))
            .unwrap()
            .replace("\"role\":\"user\"", "\"role\":\"admin\"")
            .as_bytes(),
    );
    let forged = format!("{header}.{forged_claims}.");
    call(&app, Method::GET, "/admin/users", &forged, None)
        .await
        .assert_problem(401, "invalid_token");

    let listed = call(&app, Method::GET, "/admin/users", &root, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:#}", listed.body);
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    let served = as_service(&app, Method::GET, "/admin/users", None).await;
    assert_eq!(served.status, StatusCode::OK, "{:#}", served.body);
    let wrong = app
        .client
        .get(app.url("/admin/users"))
        .header("x-service-auth", "not-the-secret")
        .send()
        .await
        .unwrap();
    read(wrong).await.assert_problem(401, "invalid_token");
    // A demoted admin loses the routes at once (its token says nothing about roles).
    let ada = app.login_native("ada@example.com").await;
    let ada_id = listed.body["users"][1]["id"].as_str().unwrap().to_owned();
    let promoted = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{ada_id}"),
        &root,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(promoted.body["role"], "admin", "{:#}", promoted.body);
    assert_eq!(
        call(&app, Method::GET, "/admin/users", &ada.access, None)
            .await
            .status,
        StatusCode::OK
    );
    call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{ada_id}"),
        &root,
        Some(json!({"role": "user"})),
    )
    .await;
    call(&app, Method::GET, "/admin/users", &ada.access, None)
        .await
        .assert_problem(403, "forbidden");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

async fn admins_search_users_page_by_page(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    for email in [
        "ada@example.com",
        "adam@example.com",
        "bob@example.com",
        "a_b@example.com",
    ] {
        app.register(email).await;
    }
    // Stable order (creation), in pages.
    let first = call(&app, Method::GET, "/admin/users?limit=2", &root, None).await;
    assert_eq!(emails(&first.body), ["root@example.com", "ada@example.com"]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = call(
        &app,
        Method::GET,
        &format!("/admin/users?limit=2&cursor={cursor}"),
        &root,
        None,
    )
    .await;
    assert_eq!(
        emails(&second.body),
        ["adam@example.com", "bob@example.com"]
    );
    let cursor = second.body["next_cursor"].as_str().unwrap().to_owned();
    let last = call(
        &app,
        Method::GET,
        &format!("/admin/users?limit=2&cursor={cursor}"),
        &root,
        None,
    )
    .await;
    assert_eq!(emails(&last.body), ["a_b@example.com"]);
    assert_eq!(last.body["next_cursor"], Value::Null);

    // Prefix search, case-insensitive, with `_` and `%` matched literally.
    let ada = call(&app, Method::GET, "/admin/users?email=ADA", &root, None).await;
    assert_eq!(emails(&ada.body), ["ada@example.com", "adam@example.com"]);
    let underscore = call(&app, Method::GET, "/admin/users?email=a_", &root, None).await;
    assert_eq!(emails(&underscore.body), ["a_b@example.com"]);
    let percent = call(&app, Method::GET, "/admin/users?email=%25", &root, None).await;
    assert_eq!(emails(&percent.body), Vec::<String>::new());
    let injection = call(
        &app,
        Method::GET,
        "/admin/users?email=%27%20OR%201%3D1%20--",
        &root,
        None,
    )
    .await;
    assert_eq!(injection.status, StatusCode::OK);
    assert_eq!(emails(&injection.body), Vec::<String>::new());

    let admins = call(&app, Method::GET, "/admin/users?role=admin", &root, None).await;
    assert_eq!(emails(&admins.body), ["root@example.com"]);
    let unverified = call(
        &app,
        Method::GET,
        "/admin/users?verified=false&limit=200",
        &root,
        None,
    )
    .await;
    assert_eq!(unverified.body["users"].as_array().unwrap().len(), 5);
    assert_eq!(
        emails(
            &call(&app, Method::GET, "/admin/users?verified=true", &root, None)
                .await
                .body
        ),
        Vec::<String>::new()
    );

    // Hostile filters and cursors are field errors, never SQL.
    for (query, field, code) in [
        (
            "cursor=%27%3B%20DROP%20TABLE%20users%3B--",
            "cursor",
            "invalid_cursor",
        ),
        ("limit=0", "limit", "out_of_range"),
        ("limit=201", "limit", "out_of_range"),
        ("limit=-1", "limit", "out_of_range"),
        ("role=root", "role", "invalid_role"),
        ("verified=yes", "verified", "invalid_boolean"),
        ("banned=1", "banned", "invalid_boolean"),
        ("email=a%00b", "email", "invalid_characters"),
        ("limit=1&limit=2", "limit", "duplicate"),
    ] {
        let reply = call(
            &app,
            Method::GET,
            &format!("/admin/users?{query}"),
            &root,
            None,
        )
        .await;
        reply.assert_problem(422, "validation_failed");
        assert_eq!(
            reply.field_codes(),
            [(field.to_owned(), code.to_owned())],
            "{query}"
        );
    }
    for query in [
        "since=yesterday",
        "event=user.hacked",
        "user=42",
        "cursor=x",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
    ] {
        call(
            &app,
            Method::GET,
            &format!("/admin/audit?{query}"),
            &root,
            None,
        )
        .await
        .assert_problem(422, "validation_failed");
    }
}

async fn admins_create_update_and_delete_users(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let created = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "Grace@Example.com", "password": PASSWORD, "name": "Grace", "role": "admin", "email_verified": true})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:#}", created.body);
    assert_eq!(created.body["email"], "Grace@Example.com");
    assert_eq!(created.body["role"], "admin");
    assert_eq!(created.body["email_verified"], true);
    assert_eq!(created.body["banned"], false);
    let id = created.body["id"].as_str().unwrap().to_owned();
    // The account signs in with that password.
    app.login_native("grace@example.com").await;

    call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "grace@example.com", "password": PASSWORD})),
    )
    .await
    .assert_problem(409, "email_taken");
    let invalid = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "nope", "password": "short"})),
    )
    .await;
    invalid.assert_problem(422, "validation_failed");

    let updated = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{id}"),
        &root,
        Some(json!({"role": "user", "email_verified": false, "name": null})),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:#}", updated.body);
    assert_eq!(updated.body["role"], "user");
    assert_eq!(updated.body["email_verified"], false);
    assert_eq!(updated.body["name"], Value::Null);
    let fetched = call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}"),
        &root,
        None,
    )
    .await;
    assert_eq!(fetched.body, updated.body);
    call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{id}"),
        &root,
        Some(json!({"role": "god"})),
    )
    .await
    .assert_problem(422, "validation_failed");

    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}"),
        &root,
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}"),
        &root,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}"),
        &root,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    call(&app, Method::GET, "/admin/users/not-a-uuid", &root, None)
        .await
        .assert_problem(404, "not_found");
    // The address can register again.
    app.register("grace@example.com").await;
}

async fn a_ban_ends_every_session_at_once_and_stops_sign_in_on_both_faces(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let registered = app.register("ada@example.com").await;
    let id = id_of(&registered);
    let native = app.login_native("ada@example.com").await;
    let browser = app.login_browser("ada@example.com").await;

    let banned = call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/ban"),
        &root,
        Some(json!({"reason": "spam"})),
    )
    .await;
    assert_eq!(banned.status, StatusCode::OK, "{:#}", banned.body);
    assert_eq!(banned.body["banned"], true);
    assert_eq!(banned.body["ban_reason"], "spam");
    assert_eq!(banned.body["ban_expires_at"], Value::Null);

    for token in [
        &native.access,
        &browser.access,
        registered["access_token"].as_str().unwrap(),
    ] {
        app.get("/auth/me", Some(token))
            .await
            .assert_problem(401, "invalid_token");
    }
    app.refresh_native(&native.refresh)
        .await
        .assert_problem(401, "invalid_token");
    let login = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    login.assert_problem(403, "account_banned");
    // A wrong password tells nothing of the ban.
    app.post(
        "/auth/login",
        json!({"email": "ada@example.com", "password": "wrong password here"}),
    )
    .await
    .assert_problem(401, "invalid_credentials");
    let face = app
        .client
        .post(app.url("/api/auth/sign-in/email"))
        .header("origin", "http://localhost:8080")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let face = read(face).await;
    assert_eq!(face.status, StatusCode::FORBIDDEN, "{:#}", face.body);
    assert_eq!(face.body["code"], "BANNED_USER");
    let banned_list = call(&app, Method::GET, "/admin/users?banned=true", &root, None).await;
    assert_eq!(emails(&banned_list.body), ["ada@example.com"]);

    let lifted = call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/unban"),
        &root,
        None,
    )
    .await;
    assert_eq!(lifted.body["banned"], false, "{:#}", lifted.body);
    app.login_native("ada@example.com").await;

    // A ban with an end holds until then.
    let until = (app.clock_now() + Duration::hours(1)).to_rfc3339();
    let timed = call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/ban"),
        &root,
        Some(json!({"expires_at": until})),
    )
    .await;
    assert_eq!(timed.body["banned"], true, "{:#}", timed.body);
    app.post(
        "/auth/login",
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await
    .assert_problem(403, "account_banned");
    app.clock.advance(Duration::hours(2));
    app.login_native("ada@example.com").await;
    // (The admin's access token has expired meanwhile.)
    let root = app.login_native("root@example.com").await.access;
    let past = (app.clock_now() - Duration::minutes(1)).to_rfc3339();
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/ban"),
        &root,
        Some(json!({"expires_at": past})),
    )
    .await
    .assert_problem(422, "validation_failed");
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{}/ban", Uuid::now_v7()),
        &root,
        Some(json!({})),
    )
    .await
    .assert_problem(404, "not_found");
}

async fn the_last_admin_cannot_be_banned_demoted_or_deleted(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let me = call(&app, Method::GET, "/auth/me", &root, None).await;
    let root_id = me.body["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            Method::POST,
            format!("/admin/users/{root_id}/ban"),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/admin/users/{root_id}"),
            Some(json!({"role": "user"})),
        ),
        (Method::DELETE, format!("/admin/users/{root_id}"), None),
    ] {
        call(&app, method.clone(), &path, &root, body.clone())
            .await
            .assert_problem(409, "last_admin");
        // Through the service secret alike.
        as_service(&app, method, &path, body)
            .await
            .assert_problem(409, "last_admin");
    }
    // With a second admin, one may go; then the other is the last.
    let second = admin(&app, "second@example.com").await;
    let demoted = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{root_id}"),
        &second,
        Some(json!({"role": "user"})),
    )
    .await;
    assert_eq!(demoted.status, StatusCode::OK, "{:#}", demoted.body);
    let second_id = call(&app, Method::GET, "/auth/me", &second, None)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{second_id}"),
        &second,
        None,
    )
    .await
    .assert_problem(409, "last_admin");
    // A banned admin does not count as one who can sign in.
    let third = admin(&app, "third@example.com").await;
    let third_id = call(&app, Method::GET, "/auth/me", &third, None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let banned = call(
        &app,
        Method::POST,
        &format!("/admin/users/{third_id}/ban"),
        &second,
        Some(json!({})),
    )
    .await;
    assert_eq!(banned.status, StatusCode::OK, "{:#}", banned.body);
    call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{second_id}"),
        &second,
        Some(json!({"role": "user"})),
    )
    .await
    .assert_problem(409, "last_admin");
}

async fn admins_list_and_revoke_a_users_sessions_and_send_a_reset(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let registered = app.register("ada@example.com").await;
    let id = id_of(&registered);
    let other = app.login_native("ada@example.com").await;
    let listed = call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}/sessions"),
        &root,
        None,
    )
    .await;
    let sessions = listed.body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{:#}", listed.body);
    assert_eq!(sessions[0]["amr"], json!(["pwd"]));
    let newest = sessions[0]["id"].as_str().unwrap();
    let revoked = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}/sessions/{newest}"),
        &root,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{:#}", revoked.body);
    app.get("/auth/me", Some(&other.access))
        .await
        .assert_problem(401, "invalid_token");
    let first = registered["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/auth/me", Some(first)).await.status,
        StatusCode::OK
    );
    call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}/sessions/{newest}"),
        &root,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let all = call(
        &app,
        Method::DELETE,
        &format!("/admin/users/{id}/sessions"),
        &root,
        None,
    )
    .await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    app.get("/auth/me", Some(first))
        .await
        .assert_problem(401, "invalid_token");
    let listed = call(
        &app,
        Method::GET,
        &format!("/admin/users/{id}/sessions"),
        &root,
        None,
    )
    .await;
    assert_eq!(listed.body["sessions"], json!([]));

    let reset = call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/password-reset"),
        &root,
        None,
    )
    .await;
    assert_eq!(reset.status, StatusCode::ACCEPTED, "{:#}", reset.body);
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{}/password-reset", Uuid::now_v7()),
        &root,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let events = events_of(&app, &root, &id).await;
    let admin_events: Vec<&Value> = events
        .iter()
        .filter(|event| event["actor"] == "admin")
        .collect();
    assert_eq!(
        names(&admin_events.into_iter().cloned().collect::<Vec<_>>()),
        [
            "session.revoked",
            "user.sessions_revoked",
            "user.password_reset_sent"
        ]
    );
}

/// The trail of one account through every kind of event, with who, from where and which
/// request; never a password or token.
async fn the_audit_log_records_each_event_with_its_actor_and_origin(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let root = admin(&app, "root@example.com").await;
    let root_id = call(&app, Method::GET, "/auth/me", &root, None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let registered = app.register("ada@example.com").await;
    let id = id_of(&registered);
    // A failed sign-in for a known address and one for an unknown address: one answer
    // outside, two reasons here.
    let wrong = app
        .client
        .post(app.url("/auth/login"))
        .header("x-request-id", "req-wrong-password")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"email": "ada@example.com", "password": "wrong password here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    app.post(
        "/auth/login",
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    )
    .await
    .assert_problem(401, "invalid_credentials");
    let session = app.login_native("ada@example.com").await;
    // Reuse of a rotated refresh token (past the grace window).
    let rotated = app.refresh_native(&session.refresh).await;
    assert_eq!(rotated.status, StatusCode::OK);
    app.clock.advance(Duration::minutes(5));
    app.refresh_native(&session.refresh)
        .await
        .assert_problem(401, "refresh_token_reused");
    let again = app.login_native("ada@example.com").await;
    let changed = app
        .send(
            Method::POST,
            "/auth/password/change",
            Some(
                json!({"current_password": PASSWORD, "new_password": "another long passphrase 42"}),
            ),
            Some(&again.access),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:#}", changed.body);
    let logout = app
        .send(Method::POST, "/auth/logout", None, Some(&again.access))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{:#}", logout.body);
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/ban"),
        &root,
        Some(json!({"reason": "test"})),
    )
    .await;
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/unban"),
        &root,
        None,
    )
    .await;
    as_service(
        &app,
        Method::PATCH,
        &format!("/admin/users/{id}"),
        Some(json!({"email_verified": true})),
    )
    .await;

    let events = events_of(&app, &root, &id).await;
    assert_eq!(
        names(&events),
        [
            "user.registered",
            "user.signed_in",
            "user.sign_in_failed",
            "user.signed_in",
            "session.refresh_reuse_detected",
            "user.signed_in",
            "user.password_changed",
            "session.signed_out",
            "user.banned",
            "user.unbanned",
            "user.updated",
        ],
        "{events:#?}"
    );
    let failed = &events[2];
    assert_eq!(failed["detail"]["reason"], "wrong_password");
    assert_eq!(failed["actor"], "anonymous");
    assert_eq!(failed["request_id"], "req-wrong-password");
    assert_eq!(failed["user_agent"], "audit-test/1.0");
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(events[1]["actor"], "user");
    assert_eq!(events[1]["actor_id"], id.as_str());
    assert!(events[1]["session_id"].is_string());
    assert_eq!(events[1]["detail"]["amr"], "pwd");
    assert_eq!(events[8]["actor"], "admin");
    assert_eq!(events[8]["actor_id"], root_id.as_str());
    assert_eq!(events[8]["detail"]["reason"], "test");
    assert_eq!(events[10]["actor"], "service");
    assert_eq!(events[10]["actor_id"], Value::Null);
    assert_eq!(events[10]["detail"]["email_verified"], true);

    // The unknown address has its own failure, about nobody.
    let unknown = call(
        &app,
        Method::GET,
        "/admin/audit?event=user.sign_in_failed",
        &root,
        None,
    )
    .await;
    let reasons: Vec<&str> = unknown.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["detail"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["unknown_email", "wrong_password"]);
    assert_eq!(unknown.body["events"][0]["user_id"], Value::Null);

    // Time range and pages.
    let everything = call(&app, Method::GET, "/admin/audit?limit=200", &root, None).await;
    let all = everything.body["events"].as_array().unwrap().clone();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/admin/audit?limit=3&cursor={cursor}"),
            None => "/admin/audit?limit=3".to_owned(),
        };
        let page = call(&app, Method::GET, &path, &root, None).await;
        seen.extend(page.body["events"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let later = (app.clock_now() - Duration::minutes(1)).to_rfc3339();
    let recent = call(
        &app,
        Method::GET,
        &format!("/admin/audit?user={id}&since={}", later.replace('+', "%2B")),
        &root,
        None,
    )
    .await;
    assert_eq!(
        names(recent.body["events"].as_array().unwrap()).len(),
        events.len() - 4,
        "{:#}",
        recent.body
    );
    // No secret anywhere in the log.
    let text = everything.body.to_string();
    for secret in [
        PASSWORD,
        "another long passphrase 42",
        &session.refresh,
        &again.access,
        "wrong password here",
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }

    // Retention: events older than SERVAUTH_AUDIT_RETENTION go at the next pruning.
    let lifetimes = servauth::domain::Lifetimes {
        refresh: Duration::days(30),
        session: Duration::days(30),
        reuse_grace: Duration::seconds(30),
    };
    servauth::app::prune(
        &*app.store,
        app.clock_now() + Duration::days(91),
        lifetimes,
        Duration::days(90),
    )
    .await;
    let pruned = call(&app, Method::GET, "/admin/audit", &root, None).await;
    assert_eq!(pruned.body["events"], json!([]), "{:#}", pruned.body);
}

crate::support::both_backends!(
    admin_routes_need_an_admin_or_the_service_secret,
    admins_search_users_page_by_page,
    admins_create_update_and_delete_users,
    a_ban_ends_every_session_at_once_and_stops_sign_in_on_both_faces,
    the_last_admin_cannot_be_banned_demoted_or_deleted,
    admins_list_and_revoke_a_users_sessions_and_send_a_reset,
    the_audit_log_records_each_event_with_its_actor_and_origin,
    undeliverable_mail_ends_in_the_dead_letters,
);

/// Mail that cannot be delivered is retried with backoff and, after every attempt, dead:
/// visible in `/admin/outbox` and `/metrics`, never with its content.
async fn undeliverable_mail_ends_in_the_dead_letters(backend: Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let smtp = format!("smtp://127.0.0.1:{closed}");
    let Some(app) = TestApp::spawn_with(
        backend,
        &["--internal-secret", SERVICE, "--smtp-url", &smtp],
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    let mut outbox = Value::Null;
    for _ in 0..40 {
        outbox = as_service(&app, Method::GET, "/admin/outbox", None)
            .await
            .body;
        if outbox["dead"] == 1 {
            break;
        }
        // Past the next retry (the longest backoff is 2 h).
        app.clock.advance(Duration::hours(3));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(outbox["dead"], 1, "{outbox:#}");
    assert_eq!(outbox["pending"], 0, "{outbox:#}");
    let dead = &outbox["dead_messages"][0];
    assert_eq!(dead["kind"], "mail");
    assert_eq!(dead["attempts"], 8);
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|error| !error.is_empty())
    );
    assert!(!outbox.to_string().contains("token="), "{outbox:#}");
    let started = std::time::Instant::now();
    loop {
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if crate::support::app::sample(&text, "servauth_outbox_dead ") == Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
