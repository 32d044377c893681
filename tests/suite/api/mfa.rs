//! Second factors over HTTP (issue 17): TOTP enrolment and sign-in with codes computed by
//! `oathtool` (Debian's `oathtool`, an RFC 6238 implementation nobody here wrote), recovery
//! codes, the sign-in challenge, step-up, and what the tokens say. Passkeys are driven by a
//! real browser in `tests/browser/passkeys.mjs`.

use std::process::Command;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{PASSWORD, Reply, TestApp};
use crate::support::db::Backend;

use super::mail::spawn;

const EMAIL: &str = "ada@example.com";

/// The TOTP code `oathtool` computes for a base32 secret at `at`; `None` (a skip) where
/// oathtool is not installed on a developer's machine, a failure in CI.
fn oathtool(secret: &str, at: DateTime<Utc>) -> Option<String> {
    let output = Command::new("oathtool")
        .args([
            "--totp",
            "-b",
            secret,
            "-N",
            &format!("@{}", at.timestamp()),
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => Some(
            String::from_utf8(output.stdout)
                .expect("oathtool prints ASCII")
                .trim()
                .to_owned(),
        ),
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs oathtool (apt-get install oathtool): {other:?}"
            );
            eprintln!("skipping: oathtool is not installed");
            None
        }
    }
}

/// The claims of a JWT, unverified (the server verified it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn amr(token: &str) -> Vec<String> {
    serde_json::from_value(claims(token)["amr"].clone()).expect("amr")
}

async fn login(app: &TestApp) -> Reply {
    app.post(
        "/auth/login",
        json!({"email": EMAIL, "password": PASSWORD, "client": "native"}),
    )
    .await
}

async fn send(app: &TestApp, method: Method, path: &str, body: Value, token: &str) -> Reply {
    app.send(method, path, Some(body), Some(token)).await
}

/// A user with TOTP enabled: the access token of the session that enabled it, the base32
/// secret and the recovery codes.
struct Enrolled {
    token: String,
    secret: String,
    codes: Vec<String>,
}

async fn enroll(app: &TestApp) -> Option<Enrolled> {
    let token = app.access_token(EMAIL).await;
    let started = app
        .send(Method::POST, "/auth/mfa/totp", None, Some(&token))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:#}", started.body);
    let secret = started.str("secret");
    let uri = started.str("otpauth_uri");
    assert!(
        uri.starts_with("otpauth://totp/servauth:ada%40example.com?")
            || uri.starts_with("otpauth://totp/servauth:ada@example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=servauth"), "{uri}");
    assert!(started.str("qr_svg").contains("<svg"));
    // Not active until confirmed: a login still opens a session at once.
    assert!(login(app).await.body["access_token"].is_string());
    let code = oathtool(&secret, app.clock_now())?;
    let confirmed = send(
        app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": code}),
        &token,
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{:#}", confirmed.body);
    let codes: Vec<String> =
        serde_json::from_value(confirmed.body["recovery_codes"].clone()).expect("codes");
    assert_eq!(codes.len(), 10);
    Some(Enrolled {
        token,
        secret,
        codes,
    })
}

/// The `mfa_token` of a password login that must now add its second factor.
async fn challenge(app: &TestApp) -> String {
    let reply = login(app).await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["mfa_required"], true, "{:#}", reply.body);
    assert!(reply.body.get("access_token").is_none(), "{:#}", reply.body);
    assert_eq!(reply.body["factors"], json!(["totp", "recovery_code"]));
    assert_eq!(reply.body["expires_in"], 300);
    reply.str("mfa_token")
}

async fn verify(app: &TestApp, body: Value) -> Reply {
    app.post("/auth/mfa/verify", body).await
}

async fn totp_sign_in_takes_an_oathtool_code_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    let me = app.get("/auth/me", Some(&enrolled.token)).await;
    assert_eq!(me.body["mfa"]["totp"], true, "{:#}", me.body);
    assert_eq!(me.body["mfa"]["recovery_codes_left"], 10);
    assert!(me.body["mfa"].get("secret").is_none());
    // The code that confirmed the enrolment is spent: the next step's code signs in.
    app.clock.advance(Duration::seconds(30));
    let mfa_token = challenge(&app).await;
    let code = oathtool(&enrolled.secret, app.clock_now()).expect("oathtool ran before");
    let signed_in = verify(&app, json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:#}", signed_in.body);
    let access = signed_in.str("access_token");
    assert_eq!(amr(&access), ["pwd", "otp", "mfa"]);
    assert_eq!(
        claims(&access)["auth_time"],
        app.clock_now().timestamp(),
        "the sign-in that completed"
    );
    assert!(signed_in.body["refresh_token"].is_string());
    // The same token again: used up.
    verify(&app, json!({"mfa_token": mfa_token, "code": code}))
        .await
        .assert_problem(401, "invalid_mfa_token");
    // The same code in a new challenge: a replay within its window, refused.
    let again = challenge(&app).await;
    verify(&app, json!({"mfa_token": again, "code": code}))
        .await
        .assert_problem(401, "invalid_code");
    // The previous step's code (±1 step is accepted) was not used yet... but a code of an
    // earlier step than one already accepted is a replay too.
    let previous = oathtool(&enrolled.secret, app.clock_now() - Duration::seconds(30)).unwrap();
    verify(&app, json!({"mfa_token": again, "code": previous}))
        .await
        .assert_problem(401, "invalid_code");
    // Out of the window: two steps ahead.
    let far = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(61)).unwrap();
    verify(&app, json!({"mfa_token": again, "code": far}))
        .await
        .assert_problem(401, "invalid_code");
    // The next step: accepted (the challenge survived the wrong codes).
    let next = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(30)).unwrap();
    let done = verify(&app, json!({"mfa_token": again, "code": next})).await;
    assert_eq!(done.status, StatusCode::OK, "{:#}", done.body);
    // The refresh keeps what the sign-in proved.
    let refreshed = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": done.str("refresh_token")}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:#}", refreshed.body);
    assert_eq!(amr(&refreshed.str("access_token")), ["pwd", "otp", "mfa"]);
}

async fn malformed_and_hostile_second_factors_get_clear_answers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(_enrolled) = enroll(&app).await else {
        return;
    };
    let mfa_token = challenge(&app).await;
    for (body, field) in [
        (json!({"mfa_token": mfa_token, "code": "12345"}), "code"),
        (json!({"mfa_token": mfa_token, "code": "abcdef"}), "code"),
        (json!({"mfa_token": mfa_token, "code": "١٢٣٤٥٦"}), "code"),
        (
            json!({"mfa_token": mfa_token, "code": "123456\u{0}"}),
            "code",
        ),
        (
            json!({"mfa_token": mfa_token, "recovery_code": "not-a-code"}),
            "recovery_code",
        ),
        (json!({"mfa_token": mfa_token}), "code"),
        (json!({"code": "123456"}), "mfa_token"),
    ] {
        let reply = verify(&app, body).await;
        reply.assert_problem(422, "validation_failed");
        assert!(
            reply.field_codes().iter().any(|(f, _)| f == field),
            "{:#}",
            reply.body
        );
    }
    verify(&app, json!({"mfa_token": "forged", "code": "123456"}))
        .await
        .assert_problem(401, "invalid_mfa_token");
    verify(
        &app,
        json!({"mfa_token": mfa_token, "webauthn": {"id": "x", "type": "public-key"}}),
    )
    .await
    .assert_problem(409, "webauthn_not_started");
    // Expired after five minutes.
    app.clock
        .advance(Duration::minutes(5) + Duration::seconds(1));
    let code = oathtool(&_enrolled.secret, app.clock_now()).unwrap();
    verify(&app, json!({"mfa_token": mfa_token, "code": code}))
        .await
        .assert_problem(401, "invalid_mfa_token");
}

async fn failed_codes_count_against_the_login_throttle(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--login-failure-limit", "3/15m"]).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    let mfa_token = challenge(&app).await;
    let right = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(30)).unwrap();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        verify(&app, json!({"mfa_token": mfa_token, "code": wrong}))
            .await
            .assert_problem(401, "invalid_code");
    }
    // The throttle now refuses even the right code.
    let refused = verify(&app, json!({"mfa_token": mfa_token, "code": right})).await;
    refused.assert_problem(429, "rate_limited");
}

async fn the_challenge_is_bound_to_the_client_address(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--trusted-proxies", "127.0.0.1/32"]).await
    else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    let from = |ip: &'static str| {
        app.client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", ip)
    };
    let started = crate::support::app::read(
        from("203.0.113.7")
            .json(&json!({"email": EMAIL, "password": PASSWORD, "client": "native"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mfa_token = started.str("mfa_token");
    let code = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(30)).unwrap();
    let elsewhere = crate::support::app::read(
        app.client
            .post(app.url("/auth/mfa/verify"))
            .header("x-forwarded-for", "198.51.100.9")
            .json(&json!({"mfa_token": mfa_token, "code": code}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    elsewhere.assert_problem(401, "invalid_mfa_token");
    let same = crate::support::app::read(
        app.client
            .post(app.url("/auth/mfa/verify"))
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"mfa_token": mfa_token, "code": code}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(same.status, StatusCode::OK, "{:#}", same.body);
}

async fn recovery_codes_sign_in_once_each_and_are_mailed_about(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    smtp.wait_for(EMAIL, "A second factor was added to your account")
        .await;
    let mfa_token = challenge(&app).await;
    // However typed: upper case, spaces for dashes.
    let typed = enrolled.codes[0].to_uppercase().replace('-', " ");
    let signed_in = verify(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": typed}),
    )
    .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:#}", signed_in.body);
    let mail = smtp.wait_for(EMAIL, "A recovery code was used").await;
    assert!(
        mail.body.contains("9 unused codes are left"),
        "{}",
        mail.body
    );
    assert!(!mail.body.contains(&enrolled.codes[0]));
    let again = challenge(&app).await;
    verify(
        &app,
        json!({"mfa_token": again, "recovery_code": enrolled.codes[0]}),
    )
    .await
    .assert_problem(401, "invalid_code");
    // Regenerated (from the session the recovery code opened: a recent second factor; the
    // enrolling session proved the password only): the old ones die, the new ones work.
    app.send(
        Method::POST,
        "/auth/mfa/recovery-codes",
        None,
        Some(&enrolled.token),
    )
    .await
    .assert_problem(403, "reauthentication_required");
    let fresh = app
        .send(
            Method::POST,
            "/auth/mfa/recovery-codes",
            None,
            Some(&signed_in.str("access_token")),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{:#}", fresh.body);
    let new_codes: Vec<String> =
        serde_json::from_value(fresh.body["recovery_codes"].clone()).unwrap();
    verify(
        &app,
        json!({"mfa_token": again, "recovery_code": enrolled.codes[1]}),
    )
    .await
    .assert_problem(401, "invalid_code");
    let done = verify(
        &app,
        json!({"mfa_token": again, "recovery_code": new_codes[0]}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{:#}", done.body);
    assert_eq!(amr(&done.str("access_token")), ["pwd", "otp", "mfa"]);
}

async fn sensitive_changes_need_a_recent_second_factor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    // The session that enrolled authenticated by password alone: changing the password now
    // needs the second factor, even with the right current password.
    let change =
        json!({"current_password": PASSWORD, "new_password": "another long passphrase 77"});
    send(
        &app,
        Method::POST,
        "/auth/password/change",
        change.clone(),
        &enrolled.token,
    )
    .await
    .assert_problem(403, "reauthentication_required");
    send(
        &app,
        Method::DELETE,
        "/auth/me",
        json!({"password": PASSWORD}),
        &enrolled.token,
    )
    .await
    .assert_problem(403, "reauthentication_required");
    let reauth = send(
        &app,
        Method::POST,
        "/auth/reauthenticate",
        json!({"password": PASSWORD}),
        &enrolled.token,
    )
    .await;
    assert_eq!(reauth.status, StatusCode::OK, "{:#}", reauth.body);
    assert_eq!(reauth.body["mfa_required"], true);
    let mfa_token = reauth.str("mfa_token");
    let code = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(30)).unwrap();
    // Completing a re-authentication needs the very session that started it.
    verify(&app, json!({"mfa_token": mfa_token, "code": code}))
        .await
        .assert_problem(401, "invalid_mfa_token");
    let done = send(
        &app,
        Method::POST,
        "/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": code}),
        &enrolled.token,
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{:#}", done.body);
    assert_eq!(done.body["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(amr(&done.str("access_token")), ["pwd", "otp", "mfa"]);
    let changed = send(
        &app,
        Method::POST,
        "/auth/password/change",
        change,
        &enrolled.token,
    )
    .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:#}", changed.body);
    // Eleven minutes later it is stale again (SERVAUTH_REAUTH_MAX_AGE = 10 min).
    app.clock.advance(Duration::minutes(11));
    app.send(
        Method::POST,
        "/auth/mfa/recovery-codes",
        None,
        Some(&enrolled.token),
    )
    .await
    .assert_problem(403, "reauthentication_required");
}

async fn step_up_without_a_second_factor_is_the_password(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token(EMAIL).await;
    app.clock.advance(Duration::minutes(11));
    // Enrolling a factor needs a recent authentication.
    app.send(Method::POST, "/auth/mfa/totp", None, Some(&token))
        .await
        .assert_problem(403, "reauthentication_required");
    // The password change carries the password itself: it is the fresh authentication.
    let changed = send(
        &app,
        Method::POST,
        "/auth/password/change",
        json!({"current_password": PASSWORD, "new_password": "another long passphrase 77"}),
        &token,
    )
    .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:#}", changed.body);
    let reauth = send(
        &app,
        Method::POST,
        "/auth/reauthenticate",
        json!({"password": "another long passphrase 77"}),
        &token,
    )
    .await;
    assert_eq!(reauth.status, StatusCode::OK, "{:#}", reauth.body);
    assert_eq!(reauth.body["amr"], json!(["pwd"]));
    assert_eq!(reauth.body["auth_time"], app.clock_now().timestamp());
    let fresh = reauth.str("access_token");
    assert_eq!(claims(&fresh)["auth_time"], app.clock_now().timestamp());
    let started = app
        .send(Method::POST, "/auth/mfa/totp", None, Some(&fresh))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:#}", started.body);
    send(
        &app,
        Method::POST,
        "/auth/reauthenticate",
        json!({"password": "wrong password entirely"}),
        &token,
    )
    .await
    .assert_problem(403, "invalid_credentials");
}

async fn disabling_totp_needs_the_password_and_a_code(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    let code = oathtool(&enrolled.secret, app.clock_now() + Duration::seconds(30)).unwrap();
    send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": PASSWORD}),
        &enrolled.token,
    )
    .await
    .assert_problem(422, "validation_failed");
    send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": "not the password at all", "code": code}),
        &enrolled.token,
    )
    .await
    .assert_problem(403, "invalid_credentials");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": PASSWORD, "code": wrong}),
        &enrolled.token,
    )
    .await
    .assert_problem(403, "invalid_code");
    // Still on.
    assert_eq!(login(&app).await.body["mfa_required"], true);
    let off = send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": PASSWORD, "code": code}),
        &enrolled.token,
    )
    .await;
    assert_eq!(off.status, StatusCode::NO_CONTENT, "{:#}", off.body);
    smtp.wait_for(EMAIL, "A second factor was removed from your account")
        .await;
    assert!(login(&app).await.body["access_token"].is_string());
    let me = app.get("/auth/me", Some(&enrolled.token)).await;
    assert_eq!(
        me.body["mfa"],
        json!({"totp": false, "passkeys": 0, "recovery_codes_left": 0, "second_factors": []})
    );
}

async fn enrolment_rules_hold(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(enrolled) = enroll(&app).await else {
        return;
    };
    app.send(Method::POST, "/auth/mfa/totp", None, Some(&enrolled.token))
        .await
        .assert_problem(409, "totp_already_enabled");
    send(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": "123456"}),
        &enrolled.token,
    )
    .await
    .assert_problem(409, "totp_not_pending");
    // A second user: a wrong confirmation code leaves the factor pending, then a new
    // enrolment replaces it.
    let other = app.access_token("grace@example.com").await;
    let first = app
        .send(Method::POST, "/auth/mfa/totp", None, Some(&other))
        .await;
    let code = oathtool(&first.str("secret"), app.clock_now()).unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    send(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": wrong}),
        &other,
    )
    .await
    .assert_problem(403, "invalid_code");
    let second = app
        .send(Method::POST, "/auth/mfa/totp", None, Some(&other))
        .await;
    assert_ne!(first.str("secret"), second.str("secret"));
    send(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": code}),
        &other,
    )
    .await
    .assert_problem(403, "invalid_code");
    app.send(Method::POST, "/auth/mfa/recovery-codes", None, Some(&other))
        .await
        .assert_problem(409, "no_second_factor");
    // Secrets are sealed at rest: the stored bytes do not hold the secret.
    let factors = app
        .store
        .list_factors(claims(&other)["sub"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    let secret = base32_decode(&second.str("secret"));
    assert_eq!(factors.len(), 1);
    assert!(!factors[0].secret.windows(secret.len()).any(|w| w == secret));
}

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0_u64;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte).expect("base32") as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

async fn better_auth_sign_in_does_not_skip_the_second_factor(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            "--better-auth-secret",
            "a-better-auth-secret-of-32-bytes-at-least!",
        ],
    )
    .await
    else {
        return;
    };
    let Some(_enrolled) = enroll(&app).await else {
        return;
    };
    let reply = crate::support::app::read(
        app.client
            .post(app.url("/api/auth/sign-in/email"))
            .header("origin", "http://localhost:8080")
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["twoFactorRedirect"], true, "{:#}", reply.body);
    assert!(reply.body.get("token").is_none(), "{:#}", reply.body);
    assert!(
        reply
            .set_cookies()
            .iter()
            .all(|cookie| !cookie.contains("session_token=") || cookie.contains("Max-Age=0")),
        "{:?}",
        reply.set_cookies()
    );
}

async fn operators_reset_factors_and_the_user_is_told(backend: Backend) {
    let Some((app, smtp)) = spawn(backend, &[]).await else {
        return;
    };
    let Some(_enrolled) = enroll(&app).await else {
        return;
    };
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_servauth"))
        .args(["users", "reset-mfa", "--email", EMAIL])
        .env("DATABASE_URL", app.db_url())
        .env("SERVAUTH_SMTP_URL", smtp.url())
        .env("SERVAUTH_MAIL_FROM", "servauth <auth@example.com>")
        .env("SERVAUTH_LOG", "warn")
        .output()
        .await
        .expect("servauth runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("removed 1 second factors"), "{stdout}");
    smtp.wait_for(EMAIL, "Your second factors were removed")
        .await;
    assert!(login(&app).await.body["access_token"].is_string());
    let unknown = tokio::process::Command::new(env!("CARGO_BIN_EXE_servauth"))
        .args(["users", "reset-mfa", "--email", "nobody@example.com"])
        .env("DATABASE_URL", app.db_url())
        .env("SERVAUTH_LOG", "warn")
        .output()
        .await
        .expect("servauth runs");
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}

/// The real binary's log after an enrolment and a sign-in with each kind of proof holds no
/// secret, code, recovery code, challenge token or otpauth URI.
#[tokio::test]
async fn nothing_about_a_factor_reaches_the_log() {
    use super::process::{spawn_server, stop_and_read_log};
    let (child, base, _dir) = spawn_server(&[("SERVAUTH_LOG", "debug,sqlx=warn")]).await;
    let client = crate::support::client();
    let post = |path: &str, body: Value, token: Option<&str>| {
        let mut request = client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { crate::support::app::read(request.send().await.unwrap()).await }
    };
    let registered = post(
        "/auth/register",
        json!({"email": EMAIL, "password": PASSWORD, "client": "native"}),
        None,
    )
    .await;
    let token = registered.str("access_token");
    let started = post("/auth/mfa/totp", json!({}), Some(&token)).await;
    let secret = started.str("secret");
    let Some(code) = oathtool(&secret, Utc::now()) else {
        return;
    };
    let confirmed = post(
        "/auth/mfa/totp/confirm",
        json!({"code": code}),
        Some(&token),
    )
    .await;
    let codes: Vec<String> =
        serde_json::from_value(confirmed.body["recovery_codes"].clone()).unwrap();
    let challenge = post(
        "/auth/login",
        json!({"email": EMAIL, "password": PASSWORD, "client": "native"}),
        None,
    )
    .await;
    let mfa_token = challenge.str("mfa_token");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    post(
        "/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": wrong}),
        None,
    )
    .await
    .assert_problem(401, "invalid_code");
    let done = post(
        "/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "recovery_code": codes[0]}),
        None,
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{:#}", done.body);
    let (stdout, _) = stop_and_read_log(child);
    assert!(stdout.contains("second factor accepted"), "{stdout}");
    let mut leaks = vec![
        secret.clone(),
        started.str("otpauth_uri"),
        code.clone(),
        wrong.to_owned(),
        mfa_token,
        done.str("access_token"),
    ];
    leaks.extend(codes.iter().cloned());
    leaks.extend(codes.iter().map(|code| code.replace('-', "")));
    for leak in leaks {
        assert!(!stdout.contains(&leak), "{leak} in the log: {stdout}");
    }
}

crate::support::both_backends! {
    totp_sign_in_takes_an_oathtool_code_once,
    malformed_and_hostile_second_factors_get_clear_answers,
    failed_codes_count_against_the_login_throttle,
    the_challenge_is_bound_to_the_client_address,
    recovery_codes_sign_in_once_each_and_are_mailed_about,
    sensitive_changes_need_a_recent_second_factor,
    step_up_without_a_second_factor_is_the_password,
    disabling_totp_needs_the_password_and_a_code,
    enrolment_rules_hold,
    better_auth_sign_in_does_not_skip_the_second_factor,
    operators_reset_factors_and_the_user_is_told,
}
