//! Who an account is and how its password is checked: imported bcrypt hashes never truncate,
//! Better Auth's own hashes verify as they are and become Argon2id, failed password checks
//! take the same time whatever the account, and email addresses compare by one key whatever
//! their Unicode form.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use servauth::domain::{Email, new_account};
use servauth::store::NewUser;

use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::Backend;

/// Stores a verified account as `servauth users import` would, with a bcrypt hash of
/// `password` at `cost`.
async fn import_bcrypt_account(app: &TestApp, email: &str, password: &str, cost: u32) {
    let email = Email::parse(email, "email").unwrap();
    let hash = bcrypt::hash(password, cost).unwrap();
    let account = NewUser {
        email_verified: true,
        ..new_account(&email, None, hash, app.clock_now())
    };
    app.store.create_user(account).await.unwrap();
}

async fn login(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.post("/auth/login", json!({"email": email, "password": password}))
        .await
        .status
}

async fn a_bcrypt_password_with_anything_after_72_bytes_does_not_log_in(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // 72 bytes: what bcrypt hashes of it in full.
    let password = "an imported passphrase long enough to reach the bcrypt limit of 72 bytes";
    assert_eq!(password.len(), 72);
    import_bcrypt_account(&app, "old@example.com", password, 4).await;
    for longer in [format!("{password}anything"), format!("{password} ")] {
        let reply = app
            .post(
                "/auth/login",
                json!({"email": "old@example.com", "password": longer}),
            )
            .await;
        reply.assert_problem(401, "invalid_credentials");
    }
    // Nothing replaced the imported hash: the real password still works (and re-hashes).
    assert_eq!(
        login(&app, "old@example.com", password).await,
        StatusCode::OK
    );
    assert_eq!(
        login(&app, "old@example.com", password).await,
        StatusCode::OK
    );
    let longer = format!("{password}anything");
    assert_eq!(
        login(&app, "old@example.com", &longer).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A password and its hash as the real Better Auth 1.7.25's own `hashPassword`
/// (`better-auth/crypto`, from npm, on node 20) made it once: "Grüße ﬁ① Ångström" (U+FB01, U+2460, U+212B ANGSTROM SIGN) as
/// typed, which Better Auth NFKC-normalizes before hashing. The same vector is in
/// `src/domain/stored_hash.rs`.
const BETTER_AUTH_PASSWORD: &str = "Gr\u{FC}\u{DF}e \u{FB01}\u{2460} \u{212B}ngstr\u{F6}m";
const BETTER_AUTH_HASH: &str = "2673146ed1a07e252652f1861d02ed31:e0639079ab2eefbed4798d104ac97a738564881551bf389ffd681fd14b444343cdee123c6de2c582f04fdbbcc5063892e8fcc046b2a07c2ac69a74b0bff58f2a";

async fn password_hash_of(app: &TestApp, id: uuid::Uuid) -> String {
    app.store
        .find_credentials(id)
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

async fn a_better_auth_hash_logs_in_and_becomes_argon2id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Put in place as an import from a Better Auth database would: the hash as it is.
    let email = Email::parse("moved@example.com", "email").unwrap();
    let account = NewUser {
        email_verified: true,
        ..new_account(&email, None, BETTER_AUTH_HASH.to_owned(), app.clock_now())
    };
    let id = app.store.create_user(account).await.unwrap().id;
    for wrong in [
        "Gr\u{FC}\u{DF}e fi1 Angstr\u{F6}m",
        "not the password of anyone here",
    ] {
        app.post(
            "/auth/login",
            json!({"email": "moved@example.com", "password": wrong}),
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    assert_eq!(password_hash_of(&app, id).await, BETTER_AUTH_HASH);
    // Typed in another Unicode form (decomposed "u" + U+0308, "fi1", "A" + U+030A): the same
    // password after NFKC, as for Better Auth.
    let decomposed = "Gru\u{308}\u{DF}e fi1 A\u{30A}ngstro\u{308}m";
    let reply = app
        .post(
            "/auth/login",
            json!({"email": "moved@example.com", "password": decomposed}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
    assert_eq!(reply.body["user"]["id"], id.to_string());
    // The Better Auth hash is gone, replaced by one of the current kind.
    let rehashed = password_hash_of(&app, id).await;
    assert!(rehashed.starts_with("$argon2id$v=19$"), "{rehashed}");
    // The password (in either form) still works against the new hash; a wrong one does not.
    for form in [BETTER_AUTH_PASSWORD, decomposed] {
        assert_eq!(login(&app, "moved@example.com", form).await, StatusCode::OK);
    }
    assert_eq!(password_hash_of(&app, id).await, rehashed, "re-hashed once");
    app.post(
        "/auth/login",
        json!({"email": "moved@example.com", "password": "Gr\u{FC}sse fi1 \u{C5}ngstr\u{F6}m"}),
    )
    .await
    .assert_problem(401, "invalid_credentials");
}

/// How long a failed login for `email` takes, seen by the client.
async fn failed_login_time(app: &TestApp, email: &str) -> Duration {
    let started = Instant::now();
    let status = login(app, email, "not the password of anyone here").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}");
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn a_failed_login_takes_as_long_for_an_unknown_address_as_for_an_imported_bcrypt_account(
    backend: Backend,
) {
    // The test servers' Argon2 (64 KiB, t=1) is far cheaper than bcrypt at cost 10.
    let limits = [
        "--rate-limit",
        "1000/1m",
        "--login-failure-limit",
        "1000/1m",
    ];
    let Some(app) = TestApp::spawn_with(backend, &limits).await else {
        return;
    };
    import_bcrypt_account(&app, "imported@example.com", PASSWORD, 10).await;
    // One failure for the server to learn how long a bcrypt verification takes.
    failed_login_time(&app, "imported@example.com").await;
    let (mut unknown, mut imported) = (Vec::new(), Vec::new());
    for attempt in 0..5 {
        unknown.push(failed_login_time(&app, &format!("nobody{attempt}@example.com")).await);
        imported.push(failed_login_time(&app, "imported@example.com").await);
    }
    let (unknown, imported) = (median(unknown), median(imported));
    assert!(
        unknown * 2 >= imported,
        "unknown address {unknown:?}, imported bcrypt account {imported:?}"
    );
}

async fn a_failed_password_recheck_takes_as_long_as_an_imported_bcrypt_verification(
    backend: Backend,
) {
    let limits = [
        "--rate-limit",
        "1000/1m",
        "--login-failure-limit",
        "1000/1m",
    ];
    let Some(app) = TestApp::spawn_with(backend, &limits).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    import_bcrypt_account(&app, "imported@example.com", PASSWORD, 10).await;
    let bcrypt = failed_login_time(&app, "imported@example.com").await;
    let mut rechecks = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let wrong = json!({"password": "not the password of anyone here"});
        app.send(
            reqwest::Method::DELETE,
            "/auth/me",
            Some(wrong),
            Some(&token),
        )
        .await
        .assert_problem(403, "invalid_credentials");
        rechecks.push(started.elapsed());
    }
    let recheck = median(rechecks);
    assert!(
        recheck * 2 >= bcrypt,
        "wrong password on an Argon2 account {recheck:?}, bcrypt verification {bcrypt:?}"
    );
}

async fn register(app: &TestApp, email: &str) -> crate::support::app::Reply {
    app.post(
        "/auth/register",
        json!({"email": email, "password": PASSWORD, "client": "native"}),
    )
    .await
}

/// Logs in with `typed` and answers the address of the account it found.
async fn account_found_by(app: &TestApp, typed: &str) -> String {
    let reply = app
        .post("/auth/login", json!({"email": typed, "password": PASSWORD}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{typed:?}: {:#}", reply.body);
    reply.body["user"]["email"].as_str().unwrap().to_owned()
}

async fn invisible_and_direction_characters_in_an_address_are_invalid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for email in [
        "ada\u{200B}@example.com",             // zero-width space
        "ada\u{202E}moc.elpmaxe@example.com",  // right-to-left override
        "\u{FEFF}ada@example.com",             // byte order mark
        "ada@exam\u{00AD}ple.com",             // soft hyphen
        "victim\u{FF20}example.com@evil.test", // a full-width `＠`: two of them
    ] {
        let reply = register(&app, email).await;
        reply.assert_problem(422, "validation_failed");
        assert_eq!(
            reply.field_codes(),
            vec![("email".to_owned(), "invalid_email".to_owned())],
            "{email:?}"
        );
    }
}

async fn one_address_in_another_unicode_form_is_the_same_account(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let composed = "jos\u{E9}@example.com";
    let decomposed = "jose\u{301}@example.com";
    app.register(composed).await;
    register(&app, decomposed)
        .await
        .assert_problem(409, "email_taken");
    assert_eq!(account_found_by(&app, decomposed).await, composed);
    assert_eq!(account_found_by(&app, composed).await, composed);
}

async fn a_domain_and_its_a_label_are_the_same_account(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // An A-label account, then its Unicode form…
    app.register("ada@xn--exmple-cua.org").await;
    register(&app, "ada@ex\u{E4}mple.org")
        .await
        .assert_problem(409, "email_taken");
    assert_eq!(
        account_found_by(&app, "ada@Ex\u{C4}mple.org").await,
        "ada@xn--exmple-cua.org"
    );
    // …and the reverse.
    app.register("bob@ex\u{E4}mple.org").await;
    register(&app, "bob@XN--exmple-cua.org")
        .await
        .assert_problem(409, "email_taken");
    assert_eq!(
        account_found_by(&app, "bob@xn--exmple-cua.org").await,
        "bob@ex\u{E4}mple.org"
    );
}

crate::support::both_backends!(
    invisible_and_direction_characters_in_an_address_are_invalid,
    one_address_in_another_unicode_form_is_the_same_account,
    a_domain_and_its_a_label_are_the_same_account,
    a_bcrypt_password_with_anything_after_72_bytes_does_not_log_in,
    a_better_auth_hash_logs_in_and_becomes_argon2id,
    a_failed_login_takes_as_long_for_an_unknown_address_as_for_an_imported_bcrypt_account,
    a_failed_password_recheck_takes_as_long_as_an_imported_bcrypt_verification,
);
