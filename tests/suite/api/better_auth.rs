//! The Better Auth face under `/api/auth` (issue 16), over real HTTP on both backends: its
//! wire details (cookies, signatures, errors, origins) and that its sessions are servauth's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::app::{PASSWORD, Reply, TestApp, read};
use crate::support::{Backend, both_backends};

both_backends! {
    sign_up_sets_the_signed_cookie_and_get_session_answers_it,
    sign_in_honours_remember_me_and_callback_url,
    forged_truncated_or_base64url_signatures_are_no_session,
    bearer_tokens_raw_or_signed_authenticate_without_origin,
    origin_and_fetch_metadata_rules_refuse_cross_site_requests,
    errors_have_better_auths_codes_and_shapes,
    unknown_paths_and_methods_are_empty_404s,
    sliding_expiry_follows_update_age_and_never_passes_the_session_ttl,
    remember_me_false_sessions_last_a_day_and_never_slide,
    list_and_revoke_sessions_across_both_faces,
    update_user_and_change_password_use_servauths_rules,
    face_sessions_are_servauth_sessions,
    a_password_reset_and_account_deletion_end_face_sessions,
    https_public_urls_get_secure_prefixed_cookies,
    without_a_secret_the_face_answers_404,
    hostile_input_never_answers_500,
    rest_profile_takes_name_and_image,
    the_per_ip_limit_answers_better_auths_429,
    required_verification_opens_no_session_until_verified,
    recovery_endpoints_use_servauths_single_use_links,
    delete_user_needs_the_password,
}

/// The spec's worked example's secret.
const SECRET: &str = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const INTERNAL: &str = "service-secret-service-secret-0123456789";
/// The public URL's origin (the default `SERVAUTH_PUBLIC_URL`): trusted.
const ORIGIN: &str = "http://localhost:8080";
const COOKIE: &str = "better-auth.session_token";

async fn spawn(backend: Backend, extra: &[&str]) -> Option<TestApp> {
    let mut args = vec![
        "--better-auth-secret",
        SECRET,
        "--internal-secret",
        INTERNAL,
    ];
    args.extend_from_slice(extra);
    TestApp::spawn_with(backend, &args).await
}

/// A request to the face with a JSON body (when given) and extra headers.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/auth{path}")));
    if let Some(body) = body {
        request = request.json(&body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.send().await.expect("request sent")).await
}

/// A POST as the browser client sends it: JSON, `Origin`, the session cookie when given.
async fn post(app: &TestApp, path: &str, body: Value, cookie: Option<&str>) -> Reply {
    let cookie = cookie.map(|value| format!("{COOKIE}={value}"));
    let mut headers = vec![("origin", ORIGIN)];
    if let Some(cookie) = &cookie {
        headers.push(("cookie", cookie));
    }
    call(app, Method::POST, path, Some(body), &headers).await
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Reply {
    let cookie = cookie.map(|value| format!("{COOKIE}={value}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
    call(app, Method::GET, path, None, &headers).await
}

/// Signs up `email` (name "Ada"); returns the raw token and the cookie value as set.
async fn sign_up(app: &TestApp, email: &str) -> (String, String) {
    let reply = post(
        app,
        "/sign-up/email",
        json!({"email": email, "password": PASSWORD, "name": "Ada"}),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    (
        reply.str("token"),
        reply.cookie(COOKIE).expect("session cookie"),
    )
}

async fn sign_in(app: &TestApp, email: &str, extra: Value) -> Reply {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    post(app, "/sign-in/email", body, None).await
}

/// The `get-session` answer for the session cookie `cookie` (`null` for no live session).
async fn session_of(app: &TestApp, cookie: &str) -> Value {
    get(app, "/get-session", Some(cookie)).await.body
}

/// `POST /update-user` as the browser client sends it, with the session cookie.
async fn update_user(app: &TestApp, cookie: &str, body: Value) -> Reply {
    post(app, "/update-user", body, Some(cookie)).await
}

/// `POST /change-password` as the browser client sends it, with the session cookie.
async fn change_password(app: &TestApp, cookie: &str, body: Value) -> Reply {
    post(app, "/change-password", body, Some(cookie)).await
}

/// `POST /sign-in/email` with `body`, as the browser client sends it, without a cookie.
async fn sign_in_with(app: &TestApp, body: Value) -> Reply {
    post(app, "/sign-in/email", body, None).await
}

/// `POST /sign-up/email` with `body`, as the browser client sends it, without a cookie.
async fn sign_up_with(app: &TestApp, body: Value) -> Reply {
    post(app, "/sign-up/email", body, None).await
}

/// A POST to the face with a body of any content type, and nothing else (no `Origin`).
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/auth{path}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// servauth's `/api/internal/validate` for the access token `access`.
async fn validate(app: &TestApp, access: &str) -> Reply {
    let response = app
        .client
        .post(app.url("/api/internal/validate"))
        .header("x-service-auth", INTERNAL)
        .json(&json!({"token": access}))
        .send()
        .await
        .unwrap();
    read(response).await
}

fn signature(value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// JS `encodeURIComponent` of a signed value (only `+ / =` occur besides `[A-Za-z0-9.]`).
fn encoded(signed: &str) -> String {
    signed
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn is_millisecond_date(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[19] == b'.'
        && DateTime::parse_from_rfc3339(text).is_ok()
}

fn date(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a date"))
        .expect("rfc 3339")
        .with_timezone(&Utc)
}

#[track_caller]
fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:#}", reply.body);
    assert_eq!(reply.body["code"], code, "{:#}", reply.body);
    assert!(reply.body["message"].is_string(), "{:#}", reply.body);
    assert_eq!(reply.body.as_object().map(|body| body.len()), Some(2));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json"))
    );
}

async fn sign_up_sets_the_signed_cookie_and_get_session_answers_it(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let reply = sign_up_with(
        &app,
        json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    let token = reply.str("token");
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    let user = &reply.body["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["emailVerified"], false);
    assert_eq!(user["image"], Value::Null);
    assert!(user["id"].is_string());
    assert!(is_millisecond_date(&user["createdAt"]), "{user}");
    let signed = format!("{token}.{}", signature(&token));
    assert_eq!(
        reply.set_cookies(),
        vec![format!(
            "{COOKIE}={}; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax",
            encoded(&signed)
        )]
    );
    assert_eq!(reply.header("set-auth-token"), Some(signed.as_str()));
    assert!(
        reply
            .header("access-control-expose-headers")
            .is_some_and(|value| value.contains("set-auth-token"))
    );

    let cookie = reply.cookie(COOKIE).unwrap();
    let session = get(&app, "/get-session", Some(&cookie)).await;
    assert_eq!(session.status, StatusCode::OK, "{:#}", session.body);
    assert_eq!(session.header("cache-control"), Some("no-store"));
    assert_eq!(session.header("pragma"), Some("no-cache"));
    assert_eq!(session.body["session"]["token"], token.as_str());
    assert_eq!(session.body["session"]["userId"], user["id"]);
    assert_eq!(session.body["user"]["id"], user["id"]);
    for field in ["expiresAt", "createdAt", "updatedAt"] {
        assert!(is_millisecond_date(&session.body["session"][field]));
    }
    assert!(
        session
            .header("set-auth-jwt")
            .is_some_and(|jwt| jwt.starts_with("eyJ"))
    );
    assert!(session.set_cookies().is_empty(), "nothing to slide yet");

    let none = get(&app, "/get-session", None).await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body, Value::Null);
    assert_eq!(none.header("cache-control"), Some("no-store"));
    assert!(none.header("set-auth-jwt").is_none());
}

async fn sign_in_honours_remember_me_and_callback_url(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    sign_up(&app, "ada@example.com").await;
    let reply = sign_in(
        &app,
        "ada@example.com",
        json!({"rememberMe": false, "callbackURL": "/dashboard"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["redirect"], true);
    assert_eq!(reply.body["url"], "/dashboard");
    assert_eq!(reply.header("location"), Some("/dashboard"));
    let token = reply.str("token");
    let signed = format!("{token}.{}", signature(&token));
    assert_eq!(
        reply.set_cookies(),
        vec![
            format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
                encoded(&signed)
            ),
            format!(
                "better-auth.dont_remember={}; Path=/; HttpOnly; SameSite=Lax",
                encoded(&format!("true.{}", signature("true")))
            ),
        ]
    );
    let plain = sign_in(&app, "ada@example.com", json!({})).await;
    assert_eq!(plain.body["redirect"], false);
    assert!(plain.body.get("url").is_none());
    assert!(plain.header("location").is_none());
    // An absolute callback must be of a trusted origin.
    let evil = sign_in(
        &app,
        "ada@example.com",
        json!({"callbackURL": "https://evil.test/"}),
    )
    .await;
    assert_error(&evil, 403, "INVALID_CALLBACK_URL");
    let trusted = sign_in(
        &app,
        "ada@example.com",
        json!({"callbackURL": "http://localhost:8080/x"}),
    )
    .await;
    assert_eq!(trusted.status, StatusCode::OK, "{:#}", trusted.body);
    let wrong = sign_in_with(
        &app,
        json!({"email": "ada@example.com", "password": "wrong password entirely"}),
    )
    .await;
    assert_error(&wrong, 401, "INVALID_EMAIL_OR_PASSWORD");
    let unknown = sign_in(&app, "nobody@example.com", json!({})).await;
    assert_error(&unknown, 401, "INVALID_EMAIL_OR_PASSWORD");
}

async fn forged_truncated_or_base64url_signatures_are_no_session(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (token, cookie) = sign_up(&app, "ada@example.com").await;
    let sig = signature(&token);
    let url_safe = sig.replace('+', "-").replace('/', "_");
    let forged = format!(
        "{}{}=",
        &sig[..39],
        if &sig[39..43] == "AAAA" {
            "BBBB"
        } else {
            "AAAA"
        }
    );
    let mut bads = vec![];
    // A signature without `+` or `/` reads the same in base64url (the unit tests cover the
    // spec's example, which has them).
    if url_safe != sig {
        bads.push(format!("{token}.{url_safe}"));
    }
    for bad in bads.into_iter().chain([
        format!("{token}.{}", &sig[..43]),                   // unpadded
        format!("{token}.{}", &sig[..40]),                   // truncated
        format!("{token}.{forged}"),                         // forged
        encoded(&format!("{token}.{}", signature("other"))), // another value's signature
        token.clone(),                                       // no signature
        format!(".{}", encoded(&sig)),                       // no value
        "abc.def".to_owned(),
        "%E0%A4%A".to_owned(),
    ]) {
        let reply = get(&app, "/get-session", Some(&bad)).await;
        assert_eq!(reply.status, StatusCode::OK, "{bad}: {:#}", reply.body);
        assert_eq!(reply.body, Value::Null, "{bad}");
        assert!(
            reply.set_cookies().is_empty(),
            "{bad}: a bad signature expires nothing"
        );
        let bearer = format!("Bearer {bad}.x");
        let reply = call(
            &app,
            Method::GET,
            "/get-session",
            None,
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(reply.body, Value::Null, "{bad}");
    }
    // The real one, for contrast; and quoted, as some clients send it.
    assert!(session_of(&app, &cookie).await["session"].is_object());
    assert!(session_of(&app, &format!("\"{cookie}\"")).await["session"].is_object());
}

async fn bearer_tokens_raw_or_signed_authenticate_without_origin(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (token, _) = sign_up(&app, "ada@example.com").await;
    let signed = format!("{token}.{}", signature(&token));
    for value in [token.clone(), signed.clone(), encoded(&signed)] {
        let bearer = format!("Bearer {value}");
        let reply = call(
            &app,
            Method::GET,
            "/get-session",
            None,
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(reply.body["session"]["token"], token.as_str(), "{value}");
        let lower = format!("bearer {value}");
        let reply = call(
            &app,
            Method::GET,
            "/get-session",
            None,
            &[("authorization", &lower)],
        )
        .await;
        assert!(reply.body["session"].is_object(), "{value}");
    }
    // No cookie, no Origin: the origin rule does not apply to bearer clients.
    let bearer = format!("Bearer {signed}");
    let reply = call(
        &app,
        Method::POST,
        "/update-user",
        Some(json!({"name": "Ada B"})),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body, json!({"status": true}));
    assert_eq!(reply.header("set-auth-token"), Some(signed.as_str()));
    // A bearer of an ended session is no session.
    let reply = call(
        &app,
        Method::POST,
        "/sign-out",
        Some(json!({})),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.body, json!({"success": true}));
    let reply = call(
        &app,
        Method::GET,
        "/get-session",
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.body, Value::Null);
}

async fn origin_and_fetch_metadata_rules_refuse_cross_site_requests(backend: Backend) {
    let Some(app) = spawn(backend, &["--cors-origins", "https://app.example.com"]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let cookie_header = format!("{COOKIE}={cookie}");
    let update = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            call(
                app,
                Method::POST,
                "/update-user",
                Some(json!({"name": "X"})),
                &headers,
            )
            .await
        }
    };
    let with_cookie = |extra: &[(&'static str, &str)]| {
        let mut headers = vec![("cookie", cookie_header.clone())];
        headers.extend(
            extra
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        headers
    };
    assert_error(
        &update(with_cookie(&[])).await,
        403,
        "MISSING_OR_NULL_ORIGIN",
    );
    assert_error(
        &update(with_cookie(&[("origin", "null")])).await,
        403,
        "MISSING_OR_NULL_ORIGIN",
    );
    assert_error(
        &update(with_cookie(&[("origin", "http://evil.test")])).await,
        403,
        "INVALID_ORIGIN",
    );
    assert_error(
        &update(with_cookie(&[("referer", "http://evil.test/page")])).await,
        403,
        "INVALID_ORIGIN",
    );
    // Any cookie at all brings the rule, even one of no session.
    let other = call(
        &app,
        Method::POST,
        "/sign-out",
        Some(json!({})),
        &[("cookie", "foo=bar")],
    )
    .await;
    assert_error(&other, 403, "MISSING_OR_NULL_ORIGIN");
    for allowed in [
        with_cookie(&[("origin", ORIGIN)]),
        with_cookie(&[("origin", "https://app.example.com")]),
        with_cookie(&[("referer", "http://localhost:8080/some/page")]),
    ] {
        assert_eq!(update(allowed).await.status, StatusCode::OK);
    }
    // Sign-in without cookies: the fetch-metadata rule.
    let body = json!({"email": "ada@example.com", "password": PASSWORD});
    let login = |headers: Vec<(&'static str, &'static str)>| {
        let app = &app;
        let body = body.clone();
        async move { call(app, Method::POST, "/sign-in/email", Some(body), &headers).await }
    };
    assert_error(
        &login(vec![
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ])
        .await,
        403,
        "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED",
    );
    assert_error(
        &login(vec![
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ])
        .await,
        403,
        "MISSING_OR_NULL_ORIGIN",
    );
    assert_error(
        &login(vec![("origin", "null")]).await,
        403,
        "MISSING_OR_NULL_ORIGIN",
    );
    assert_error(
        &login(vec![("origin", "http://evil.test")]).await,
        403,
        "INVALID_ORIGIN",
    );
    assert_eq!(
        login(vec![]).await.status,
        StatusCode::OK,
        "curl and servers pass"
    );
    assert_eq!(
        login(vec![("sec-fetch-mode", "cors"), ("origin", ORIGIN)])
            .await
            .status,
        StatusCode::OK
    );
    // CORS for a trusted origin: credentials, and the bearer and JWT headers exposed.
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/auth/sign-in/email"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );
    let cross = call(
        &app,
        Method::GET,
        "/get-session",
        None,
        &[
            ("origin", "https://app.example.com"),
            ("cookie", &cookie_header),
        ],
    )
    .await;
    let exposed: Vec<&str> = cross
        .headers
        .get_all("access-control-expose-headers")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let exposed = exposed.join(", ");
    assert!(
        exposed.contains("set-auth-token") && exposed.contains("set-auth-jwt"),
        "{exposed}"
    );
}

async fn errors_have_better_auths_codes_and_shapes(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let again = sign_up_with(
        &app,
        json!({"email": "ADA@example.com", "password": PASSWORD, "name": "Ada"}),
    )
    .await;
    assert_error(&again, 422, "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    assert_error(
        &sign_up_with(
            &app,
            json!({"email": "b@example.com", "password": "short", "name": "B"}),
        )
        .await,
        400,
        "PASSWORD_TOO_SHORT",
    );
    assert_error(
        &sign_up_with(
            &app,
            json!({"email": "b@example.com", "password": "x".repeat(129), "name": "B"}),
        )
        .await,
        400,
        "PASSWORD_TOO_LONG",
    );
    assert_error(
        &sign_up_with(
            &app,
            json!({"email": "b@example.com", "password": "passwordpassword", "name": "B"}),
        )
        .await,
        400,
        "PASSWORD_TOO_COMMON",
    );
    let bad_email = sign_up_with(
        &app,
        json!({"email": "bob", "password": PASSWORD, "name": "B"}),
    )
    .await;
    assert_error(&bad_email, 400, "VALIDATION_ERROR");
    assert_eq!(
        bad_email.body["message"],
        "[body.email] Invalid email address"
    );
    let no_name = sign_up_with(
        &app,
        json!({"email": "b@example.com", "password": PASSWORD}),
    )
    .await;
    assert_error(&no_name, 400, "VALIDATION_ERROR");
    assert_eq!(
        no_name.body["message"],
        "[body.name] Invalid input: expected string, received undefined"
    );
    let text = post_raw(&app, "/sign-up/email", "text/plain", "hello").await;
    let text = read(text).await;
    assert_error(&text, 415, "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(
        text.body["message"],
        "Content-Type \"text/plain\" is not allowed. Allowed types: application/x-www-form-urlencoded, application/json"
    );
    let malformed = post_raw(
        &app,
        "/sign-in/email",
        "application/json; charset=utf-8",
        "{nope",
    )
    .await;
    let malformed = read(malformed).await;
    assert_error(&malformed, 400, "BAD_REQUEST");
    assert_eq!(malformed.body["message"], "Invalid JSON in request body");
    // A form sign-in (no Origin, no fetch metadata: a server posting) works.
    let form = post_raw(
        &app,
        "/sign-in/email",
        "application/x-www-form-urlencoded",
        format!(
            "email=ada%40example.com&password={}",
            PASSWORD.replace(' ', "+")
        ),
    )
    .await;
    assert_eq!(form.status(), StatusCode::OK);
    assert_error(
        &sign_in(&app, "not-an-email", json!({})).await,
        400,
        "INVALID_EMAIL",
    );
    assert_error(
        &get(&app, "/list-sessions", None).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(&get(&app, "/token", None).await, 401, "UNAUTHORIZED");
    // Validation comes before the session check, as in Better Auth.
    assert_error(
        &post(&app, "/revoke-session", json!({}), None).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_error(
        &post(&app, "/update-user", json!({"name": "X"}), None).await,
        401,
        "UNAUTHORIZED",
    );
    let nothing = update_user(&app, &cookie, json!({"foo": "bar"})).await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);
    assert_eq!(nothing.body, json!({"message": "No fields to update"}));
    assert_error(
        &update_user(&app, &cookie, json!({"email": "x@y.z"})).await,
        400,
        "EMAIL_CAN_NOT_BE_UPDATED",
    );
    assert_error(
        &update_user(&app, &cookie, json!({"name": "x".repeat(101)})).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_error(
        &update_user(&app, &cookie, json!({"image": "javascript:alert(1)"})).await,
        400,
        "VALIDATION_ERROR",
    );
    let not_string = sign_in_with(
        &app,
        json!({"email": "a@b.c", "password": "x", "callbackURL": 5}),
    )
    .await;
    assert_eq!(not_string.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        not_string.body,
        json!({"message": "Invalid callbackURL: expected a string"})
    );
    let post_session = call(&app, Method::POST, "/get-session", None, &[]).await;
    assert_error(
        &post_session,
        405,
        "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED",
    );
    let ok = get(&app, "/ok", None).await;
    assert_eq!(ok.body, json!({"ok": true}));
    let page = get(&app, "/error?error=%3Cscript%3E", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .is_some_and(|value| value.starts_with("text/html"))
    );
    let html = page.body.as_str().unwrap_or_default();
    assert!(
        html.contains("UNKNOWN") && !html.contains("<script>"),
        "{html}"
    );
}

async fn unknown_paths_and_methods_are_empty_404s(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/ok/"),
        (Method::GET, "//ok"),
        (Method::PUT, "/get-session"),
        (Method::HEAD, "/get-session"),
        (Method::GET, "/sign-in/email"),
        (Method::POST, "/forget-password"),
        (Method::DELETE, "/sign-out"),
        (Method::GET, ""),
    ] {
        let reply = call(&app, method.clone(), path, None, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(reply.body, Value::Null, "{method} {path}: empty body");
    }
}

async fn sliding_expiry_follows_update_age_and_never_passes_the_session_ttl(backend: Backend) {
    let Some(app) = spawn(backend, &["--session-ttl", "10d"]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let started = app.clock_now();
    let first = get(&app, "/get-session", Some(&cookie)).await;
    assert_eq!(
        date(&first.body["session"]["expiresAt"]),
        trunc(started + Duration::days(7))
    );
    // Within updateAge: not slid.
    app.clock.advance(Duration::hours(23));
    let early = get(&app, "/get-session", Some(&cookie)).await;
    assert!(early.set_cookies().is_empty());
    assert_eq!(
        early.body["session"]["expiresAt"],
        first.body["session"]["expiresAt"]
    );
    // Past it: slid to 7 days from now, the cookie re-issued (and set-auth-token with it).
    app.clock.advance(Duration::hours(2));
    let slid = get(&app, "/get-session", Some(&cookie)).await;
    let now = app.clock_now();
    assert_eq!(
        date(&slid.body["session"]["expiresAt"]),
        trunc(started + Duration::days(10)).min(trunc(now + Duration::days(7)))
    );
    assert_eq!(date(&slid.body["session"]["updatedAt"]), trunc(now));
    assert_eq!(slid.set_cookies().len(), 1);
    assert!(slid.set_cookies()[0].starts_with(&format!("{COOKIE}={cookie};")));
    assert!(slid.header("set-auth-token").is_some());
    // `disableRefresh` (any value, as z.coerce.boolean reads it) skips the slide.
    app.clock.advance(Duration::days(2));
    let kept = get(&app, "/get-session?disableRefresh=false", Some(&cookie)).await;
    assert!(kept.set_cookies().is_empty());
    // Near the cap: slid only up to SERVAUTH_SESSION_TTL from creation.
    let capped = get(&app, "/get-session", Some(&cookie)).await;
    assert_eq!(
        date(&capped.body["session"]["expiresAt"]),
        trunc(started + Duration::days(10))
    );
    app.clock.advance(Duration::days(7));
    let ended = get(&app, "/get-session", Some(&cookie)).await;
    assert_eq!(ended.body, Value::Null);
    // A validly signed cookie of an ended session: its cookies are expired.
    assert_eq!(
        ended.set_cookies(),
        vec![
            format!("{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"),
            "better-auth.session_data=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax".to_owned(),
            "better-auth.dont_remember=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax".to_owned(),
        ]
    );
}

/// Both backends keep whole microseconds; the face shows milliseconds.
fn trunc(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

async fn remember_me_false_sessions_last_a_day_and_never_slide(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    sign_up(&app, "ada@example.com").await;
    let started = app.clock_now();
    let reply = sign_in(&app, "ada@example.com", json!({"rememberMe": false})).await;
    let cookie = reply.cookie(COOKIE).unwrap();
    app.clock.advance(Duration::hours(20));
    let session = get(&app, "/get-session", Some(&cookie)).await;
    assert_eq!(
        date(&session.body["session"]["expiresAt"]),
        trunc(started + Duration::days(1))
    );
    assert!(session.set_cookies().is_empty());
    app.clock.advance(Duration::hours(5));
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
}

async fn list_and_revoke_sessions_across_both_faces(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (token, cookie) = sign_up(&app, "ada@example.com").await;
    let other = sign_in(&app, "ada@example.com", json!({})).await;
    let other_cookie = other.cookie(COOKIE).unwrap();
    let rest = app.login_native("ada@example.com").await;
    let list = get(&app, "/list-sessions", Some(&cookie)).await;
    assert_eq!(list.status, StatusCode::OK, "{:#}", list.body);
    let sessions = list.body.as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let current: Vec<&Value> = sessions
        .iter()
        .filter(|s| s["token"] == token.as_str())
        .collect();
    assert_eq!(current.len(), 1, "the caller's own session shows its token");
    // Others show their id as the handle revoke-session takes.
    for session in sessions.iter().filter(|s| s["token"] != token.as_str()) {
        assert_eq!(session["token"], session["id"]);
    }
    let other_id = session_of(&app, &other_cookie).await["session"]["id"].clone();
    let revoked = post(
        &app,
        "/revoke-session",
        json!({"token": other_id}),
        Some(&cookie),
    )
    .await;
    assert_eq!(revoked.body, json!({"status": true}));
    assert_eq!(session_of(&app, &other_cookie).await, Value::Null);
    // A bogus token is answered alike and changes nothing.
    assert_eq!(
        post(
            &app,
            "/revoke-session",
            json!({"token": "nope"}),
            Some(&cookie)
        )
        .await
        .body,
        json!({"status": true})
    );
    // revoke-other-sessions ends the REST face's session too.
    let others = post(&app, "/revoke-other-sessions", json!({}), Some(&cookie)).await;
    assert_eq!(others.body, json!({"status": true}));
    app.get("/auth/me", Some(&rest.access))
        .await
        .assert_problem(401, "invalid_token");
    assert!(session_of(&app, &cookie).await["session"].is_object());
    // Revoking by raw token works for the caller's own session.
    let third = sign_in(&app, "ada@example.com", json!({})).await;
    let revoked = post(
        &app,
        "/revoke-session",
        json!({"token": third.str("token")}),
        Some(&cookie),
    )
    .await;
    assert_eq!(revoked.body, json!({"status": true}));
    assert_eq!(
        session_of(&app, &third.cookie(COOKIE).unwrap()).await,
        Value::Null
    );
    // revoke-sessions ends them all and expires the cookies.
    let all = post(&app, "/revoke-sessions", json!({}), Some(&cookie)).await;
    assert_eq!(all.body, json!({"status": true}));
    assert_eq!(all.set_cookies().len(), 3);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
    // list-sessions needs a fresh session (a day old at most).
    let (_, fresh) = sign_up(&app, "bob@example.com").await;
    app.clock.advance(Duration::hours(25));
    assert_error(
        &get(&app, "/list-sessions", Some(&fresh)).await,
        403,
        "SESSION_NOT_FRESH",
    );
}

async fn update_user_and_change_password_use_servauths_rules(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (token, cookie) = sign_up(&app, "ada@example.com").await;
    let other = sign_in(&app, "ada@example.com", json!({}))
        .await
        .cookie(COOKIE)
        .unwrap();
    let updated = update_user(
        &app,
        &cookie,
        json!({"name": "  Ada Lovelace ", "image": "https://img.example/a.png"}),
    )
    .await;
    assert_eq!(updated.body, json!({"status": true}));
    assert!(updated.set_cookies()[0].starts_with(&format!("{COOKIE}={cookie};")));
    let user = session_of(&app, &cookie).await["user"].clone();
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["image"], "https://img.example/a.png");
    let cleared = update_user(&app, &cookie, json!({"image": null})).await;
    assert_eq!(cleared.body, json!({"status": true}));
    assert_eq!(
        session_of(&app, &cookie).await["user"]["image"],
        Value::Null
    );

    let wrong = change_password(
        &app,
        &cookie,
        json!({"currentPassword": "not the password at all", "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_error(&wrong, 400, "INVALID_PASSWORD");
    let weak = change_password(
        &app,
        &cookie,
        json!({"currentPassword": PASSWORD, "newPassword": "short"}),
    )
    .await;
    assert_error(&weak, 400, "PASSWORD_TOO_SHORT");
    let changed = change_password(
        &app,
        &cookie,
        json!({"currentPassword": PASSWORD, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:#}", changed.body);
    assert_eq!(changed.body["token"], Value::Null);
    assert_eq!(changed.body["user"]["name"], "Ada Lovelace");
    // servauth ends the other sessions on every change; this one stays.
    assert_eq!(session_of(&app, &other).await, Value::Null);
    assert_eq!(
        session_of(&app, &cookie).await["session"]["token"],
        token.as_str()
    );
    let replaced = change_password(
        &app,
        &cookie,
        json!({"currentPassword": "a brand new passphrase", "newPassword": "yet another passphrase", "revokeOtherSessions": true}),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:#}", replaced.body);
    let new_token = replaced.str("token");
    assert_ne!(new_token, token);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
    let new_cookie = replaced.cookie(COOKIE).unwrap();
    assert_eq!(
        session_of(&app, &new_cookie).await["session"]["token"],
        new_token.as_str()
    );
    let again = sign_in_with(
        &app,
        json!({"email": "ada@example.com", "password": "yet another passphrase"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
}

async fn face_sessions_are_servauth_sessions(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let session_id = session_of(&app, &cookie).await["session"]["id"].clone();
    let token = get(&app, "/token", Some(&cookie)).await;
    assert_eq!(token.status, StatusCode::OK, "{:#}", token.body);
    let access = token.str("token");
    let validated = validate(&app, &access).await;
    assert_eq!(validated.body["active"], true, "{:#}", validated.body);
    assert_eq!(validated.body["sid"], session_id);
    let me = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me.body["name"], "Ada");
    let listed = app.get("/auth/sessions", Some(&access)).await;
    let ids: Vec<&Value> = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, vec![&session_id]);
    // The JWKS is servauth's.
    let jwks = get(&app, "/jwks", None).await;
    assert_eq!(
        jwks.body,
        app.get("/.well-known/jwks.json", None).await.body
    );
    // Signing out everywhere on the REST face ends the face's session.
    let out = app
        .send(Method::DELETE, "/auth/sessions", None, Some(&access))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
    let validated = validate(&app, &access).await;
    assert_eq!(validated.body["active"], false);
}

async fn a_password_reset_and_account_deletion_end_face_sessions(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let user_id = session_of(&app, &cookie).await["user"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let link = "a-reset-link-token-for-this-test-only-0123";
    let now = app.clock_now();
    app.store
        .issue_one_time_token(servauth::store::NewOneTimeToken {
            token_hash: servauth::domain::token_hash(link),
            user_id,
            purpose: servauth::store::TokenPurpose::PasswordReset,
            email: "ada@example.com".to_owned(),
            now,
            expires_at: now + Duration::minutes(30),
            mail: None,
        })
        .await
        .unwrap();
    let reset = app
        .post(
            "/auth/password/reset",
            json!({"token": link, "password": "a brand new passphrase"}),
        )
        .await;
    assert!(reset.status.is_success(), "{:#}", reset.body);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);

    let signed_in = sign_in_with(
        &app,
        json!({"email": "ada@example.com", "password": "a brand new passphrase"}),
    )
    .await;
    let cookie = signed_in.cookie(COOKIE).unwrap();
    let access = get(&app, "/token", Some(&cookie)).await.str("token");
    let deleted = app
        .send(
            Method::DELETE,
            "/auth/me",
            Some(json!({"password": "a brand new passphrase"})),
            Some(&access),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:#}", deleted.body);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
}

async fn https_public_urls_get_secure_prefixed_cookies(backend: Backend) {
    let Some(app) = spawn(backend, &["--public-url", "https://auth.example.test"]).await else {
        return;
    };
    let reply = call(
        &app,
        Method::POST,
        "/sign-up/email",
        Some(json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"})),
        &[("origin", "https://auth.example.test")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    let cookie = &reply.set_cookies()[0];
    assert!(
        cookie.starts_with("__Secure-better-auth.session_token="),
        "{cookie}"
    );
    assert!(
        cookie.ends_with("; Max-Age=604800; Path=/; HttpOnly; Secure; SameSite=Lax"),
        "{cookie}"
    );
    let value = reply.cookie("__Secure-better-auth.session_token").unwrap();
    // The unprefixed name is ignored by a secure server.
    assert_eq!(session_of(&app, &value).await, Value::Null);
    let prefixed = format!("__Secure-better-auth.session_token={value}");
    let session = call(
        &app,
        Method::GET,
        "/get-session",
        None,
        &[("cookie", &prefixed)],
    )
    .await;
    assert!(session.body["session"].is_object());
}

async fn without_a_secret_the_face_answers_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for path in ["/api/auth/ok", "/api/auth/sign-in/email", "/api/auth"] {
        let reply = app.get(path, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body, Value::Null, "{path}");
    }
    let Some(off) = spawn(backend, &["--better-auth", "false"]).await else {
        return;
    };
    assert_eq!(
        off.get("/api/auth/ok", None).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn hostile_input_never_answers_500(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let bodies = [
        json!(null),
        json!([]),
        json!("text"),
        json!(42),
        json!({"email": 1, "password": [], "name": {}}),
        json!({"email": "a\u{0}@example.com", "password": PASSWORD, "name": "x"}),
        json!({"email": "ada@example.com", "password": "x".repeat(10_000), "name": "n"}),
        json!({"token": {"$ne": 1}, "newPassword": true, "currentPassword": null}),
        json!({"name": "\u{202e}evil", "image": "https://a/".to_owned() + &"x".repeat(3000)}),
        json!({"callbackURL": "//evil.test", "redirectTo": "javascript:alert(1)"}),
        json!({"rememberMe": "maybe", "revokeOtherSessions": 3}),
    ];
    let paths = [
        "/sign-up/email",
        "/sign-in/email",
        "/sign-out",
        "/revoke-session",
        "/revoke-sessions",
        "/revoke-other-sessions",
        "/update-user",
        "/change-password",
        "/delete-user",
        "/request-password-reset",
        "/reset-password",
        "/send-verification-email",
    ];
    for path in paths {
        for body in &bodies {
            for with_cookie in [false, true] {
                let reply = post(
                    &app,
                    path,
                    body.clone(),
                    with_cookie.then_some(cookie.as_str()),
                )
                .await;
                assert!(
                    reply.status.as_u16() < 500 && reply.status != StatusCode::NOT_FOUND,
                    "{path} {body}: {} {:#}",
                    reply.status,
                    reply.body
                );
            }
        }
    }
    for header in [
        "Bearer",
        "Bearer ",
        "Bearer ....",
        "Bearer %%%",
        "Basic abc",
        "bearer \u{7f}",
    ] {
        let request = app
            .client
            .get(app.url("/api/auth/get-session"))
            .header("authorization", header.as_bytes());
        if let Ok(response) = request.send().await {
            assert_eq!(response.status(), StatusCode::OK, "{header}");
        }
    }
    let huge = post_raw(
        &app,
        "/sign-in/email",
        "application/json",
        vec![b' '; 100 * 1024],
    )
    .await;
    assert!(huge.status().is_client_error(), "{}", huge.status());
}

async fn rest_profile_takes_name_and_image(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let access = app.access_token("ada@example.com").await;
    let me = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me.body["name"], Value::Null);
    assert_eq!(me.body["image"], Value::Null);
    let updated = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"name": "  Ada ", "image": "https://img.example/a.png"})),
            Some(&access),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:#}", updated.body);
    assert_eq!(updated.body["name"], "Ada");
    assert_eq!(updated.body["image"], "https://img.example/a.png");
    let bad = app
        .send(
            Method::PUT,
            "/auth/me",
            Some(json!({"name": "", "image": "ftp://img.example/a.png"})),
            Some(&access),
        )
        .await;
    bad.assert_problem(422, "validation_failed");
    let mut codes = bad.field_codes();
    codes.sort();
    assert_eq!(
        codes,
        vec![
            ("image".to_owned(), "invalid_image".to_owned()),
            ("name".to_owned(), "invalid_name".to_owned())
        ]
    );
    let cleared = app
        .send(
            Method::PATCH,
            "/auth/me",
            Some(json!({"name": null})),
            Some(&access),
        )
        .await;
    assert_eq!(cleared.body["name"], Value::Null);
    assert_eq!(cleared.body["image"], "https://img.example/a.png");
}

/// Issues a password-reset (or verification) link token for `user_id` straight into the
/// store, as the mail would carry it.
async fn issue_link(
    app: &TestApp,
    user_id: &str,
    purpose: servauth::store::TokenPurpose,
    link: &str,
) {
    let now = app.clock_now();
    app.store
        .issue_one_time_token(servauth::store::NewOneTimeToken {
            token_hash: servauth::domain::token_hash(link),
            user_id: user_id.parse().unwrap(),
            purpose,
            email: "ada@example.com".to_owned(),
            now,
            expires_at: now + Duration::minutes(30),
            mail: None,
        })
        .await
        .unwrap();
}

async fn recovery_endpoints_use_servauths_single_use_links(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    let user_id = session_of(&app, &cookie).await["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &post(
            &app,
            "/reset-password",
            json!({"newPassword": "a brand new passphrase", "token": "bogus"}),
            None,
        )
        .await,
        400,
        "INVALID_TOKEN",
    );
    assert_error(
        &post(
            &app,
            "/reset-password",
            json!({"newPassword": "a brand new passphrase"}),
            None,
        )
        .await,
        400,
        "INVALID_TOKEN",
    );
    let link = "a-reset-link-token-for-the-face-only-0123";
    issue_link(
        &app,
        &user_id,
        servauth::store::TokenPurpose::PasswordReset,
        link,
    )
    .await;
    assert_error(
        &post(
            &app,
            "/reset-password",
            json!({"newPassword": "short", "token": link}),
            None,
        )
        .await,
        400,
        "PASSWORD_TOO_SHORT",
    );
    // The mail callback in Better Auth's shape: to the callback with the token, not using it.
    let callback = get(
        &app,
        &format!("/reset-password/{link}?callbackURL=%2Freset"),
        None,
    )
    .await;
    assert_eq!(callback.status, StatusCode::FOUND);
    assert_eq!(
        callback.header("location"),
        Some(format!("http://localhost:8080/reset?token={link}").as_str())
    );
    let bogus = get(&app, "/reset-password/nope?callbackURL=%2Freset", None).await;
    assert_eq!(
        bogus.header("location"),
        Some("http://localhost:8080/reset?error=INVALID_TOKEN")
    );
    assert_error(
        &get(&app, "/reset-password/nope", None).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_error(
        &get(
            &app,
            "/reset-password/nope?callbackURL=https://evil.test/",
            None,
        )
        .await,
        403,
        "INVALID_CALLBACK_URL",
    );
    let reset = post(
        &app,
        "/reset-password",
        json!({"newPassword": "a brand new passphrase", "token": link}),
        None,
    )
    .await;
    assert_eq!(reset.body, json!({"status": true}));
    assert_eq!(
        session_of(&app, &cookie).await,
        Value::Null,
        "every session ends"
    );
    assert_error(
        &post(
            &app,
            "/reset-password",
            json!({"newPassword": "another new passphrase", "token": link}),
            None,
        )
        .await,
        400,
        "INVALID_TOKEN",
    );

    assert_error(
        &get(&app, "/verify-email?token=bogus", None).await,
        401,
        "INVALID_TOKEN",
    );
    let redirected = get(&app, "/verify-email?token=bogus&callbackURL=/cb", None).await;
    assert_eq!(redirected.status, StatusCode::FOUND);
    assert_eq!(
        redirected.header("location"),
        Some("/cb?error=INVALID_TOKEN")
    );
    assert_error(
        &get(
            &app,
            "/verify-email?token=bogus&callbackURL=https://evil.test/",
            None,
        )
        .await,
        403,
        "INVALID_CALLBACK_URL",
    );
    let verify = "a-verification-link-token-for-the-face-01";
    issue_link(
        &app,
        &user_id,
        servauth::store::TokenPurpose::EmailVerification,
        verify,
    )
    .await;
    let verified = get(
        &app,
        &format!("/verify-email?token={verify}&callbackURL=/done"),
        None,
    )
    .await;
    assert_eq!(verified.status, StatusCode::FOUND);
    assert_eq!(verified.header("location"), Some("/done"));

    let signed_in = sign_in_with(
        &app,
        json!({"email": "ada@example.com", "password": "a brand new passphrase"}),
    )
    .await;
    let cookie = signed_in.cookie(COOKIE).unwrap();
    assert_eq!(
        session_of(&app, &cookie).await["user"]["emailVerified"],
        true
    );
    assert_error(
        &post(
            &app,
            "/send-verification-email",
            json!({"email": "other@example.com"}),
            Some(&cookie),
        )
        .await,
        400,
        "EMAIL_MISMATCH",
    );
    assert_error(
        &post(
            &app,
            "/send-verification-email",
            json!({"email": "ada@example.com"}),
            Some(&cookie),
        )
        .await,
        400,
        "EMAIL_ALREADY_VERIFIED",
    );
    let anonymous = post(
        &app,
        "/send-verification-email",
        json!({"email": "nobody@example.com"}),
        None,
    )
    .await;
    assert_eq!(anonymous.body, json!({"status": true}));
    // Last: the reset mail (sent in the background) retires the links issued above.
    let asked = post(
        &app,
        "/request-password-reset",
        json!({"email": "ada@example.com", "redirectTo": "/reset"}),
        None,
    )
    .await;
    assert_eq!(asked.status, StatusCode::OK, "{:#}", asked.body);
    assert_eq!(asked.body["status"], true);
    let unknown = post(
        &app,
        "/request-password-reset",
        json!({"email": "nobody@example.com"}),
        None,
    )
    .await;
    assert_eq!(unknown.body, asked.body, "no oracle");
    assert_error(
        &post(
            &app,
            "/request-password-reset",
            json!({"email": "ada@example.com", "redirectTo": "https://evil.test/r"}),
            None,
        )
        .await,
        403,
        "INVALID_REDIRECT_URL",
    );
}

async fn delete_user_needs_the_password(backend: Backend) {
    let Some(app) = spawn(backend, &[]).await else {
        return;
    };
    let (_, cookie) = sign_up(&app, "ada@example.com").await;
    assert_error(
        &post(&app, "/delete-user", json!({}), None).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &post(&app, "/delete-user", json!({}), Some(&cookie)).await,
        400,
        "SESSION_EXPIRED",
    );
    assert_error(
        &post(
            &app,
            "/delete-user",
            json!({"password": "not the password at all"}),
            Some(&cookie),
        )
        .await,
        400,
        "INVALID_PASSWORD",
    );
    let deleted = post(
        &app,
        "/delete-user",
        json!({"password": PASSWORD}),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        deleted.body,
        json!({"success": true, "message": "User deleted"})
    );
    assert_eq!(deleted.set_cookies().len(), 3);
    assert_eq!(session_of(&app, &cookie).await, Value::Null);
    assert_error(
        &sign_in(&app, "ada@example.com", json!({})).await,
        401,
        "INVALID_EMAIL_OR_PASSWORD",
    );
}

async fn the_per_ip_limit_answers_better_auths_429(backend: Backend) {
    let Some(app) = spawn(backend, &["--rate-limit", "2/1m"]).await else {
        return;
    };
    for _ in 0..2 {
        let reply = sign_in(&app, "nobody@example.com", json!({})).await;
        assert_error(&reply, 401, "INVALID_EMAIL_OR_PASSWORD");
    }
    let limited = sign_in(&app, "nobody@example.com", json!({})).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:#}",
        limited.body
    );
    assert_eq!(
        limited.body,
        json!({"message": "Too many requests. Please try again later."})
    );
    assert!(
        limited
            .header("x-retry-after")
            .and_then(|value| value.parse::<u64>().ok())
            .is_some_and(|seconds| (1..=60).contains(&seconds))
    );
    // Reads are not limited.
    assert_eq!(get(&app, "/get-session", None).await.status, StatusCode::OK);
}

async fn required_verification_opens_no_session_until_verified(backend: Backend) {
    let Some(app) = spawn(backend, &["--require-verified-email", "true"]).await else {
        return;
    };
    let reply = sign_up_with(
        &app,
        json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["token"], Value::Null);
    assert_eq!(reply.body["user"]["emailVerified"], false);
    assert!(reply.set_cookies().is_empty(), "no session, no cookie");
    assert!(reply.header("set-auth-token").is_none());
    assert_error(
        &sign_in(&app, "ada@example.com", json!({})).await,
        403,
        "EMAIL_NOT_VERIFIED",
    );
    let user_id = reply.body["user"]["id"].as_str().unwrap().to_owned();
    let link = "a-verification-link-token-for-the-face-02";
    issue_link(
        &app,
        &user_id,
        servauth::store::TokenPurpose::EmailVerification,
        link,
    )
    .await;
    let verified = get(&app, &format!("/verify-email?token={link}"), None).await;
    assert_eq!(verified.body, json!({"status": true, "user": null}));
    let signed_in = sign_in(&app, "ada@example.com", json!({})).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:#}", signed_in.body);
    assert_eq!(signed_in.body["user"]["emailVerified"], true);
}
