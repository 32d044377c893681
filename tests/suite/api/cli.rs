//! The administrative commands against a live server's database, and graceful shutdown.

use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_servauth");

/// Asynchronous, so that the test's own server keeps running meanwhile: a blocked runtime
/// would hold whatever SQLite write that server had begun (the outbox worker's, say), and the
/// command would wait for the lock in vain.
async fn servauth(args: &[&str], database_url: &str, stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("SERVAUTH_ARGON2_MEMORY_KIB", "64")
        .env("SERVAUTH_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// As [`servauth`], with extra environment variables and no standard input.
async fn servauth_with(args: &[&str], database_url: &str, env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

/// Two key encryption keys, as an operator would write them (hex and base64).
const KEK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const NEW_KEK: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";

/// Whether a stored private key is the PKCS#8 DER of an Ed25519 key, in plain.
fn is_plain_pkcs8(private_key: &[u8]) -> bool {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    ed25519_dalek::SigningKey::from_pkcs8_der(private_key).is_ok()
}

async fn stored_keys(app: &TestApp) -> Vec<servauth::store::SigningKeyRecord> {
    app.store
        .signing_keys(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .await
        .unwrap()
}

/// With `SERVAUTH_KEY_ENCRYPTION_KEY`, the private signing key is stored sealed (not PKCS#8
/// in plain, no plain bytes inside), and the server signs and verifies with it.
async fn with_a_key_encryption_key_private_keys_are_stored_sealed(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--key-encryption-key", KEK]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.status,
        StatusCode::OK
    );
    let keys = stored_keys(&app).await;
    assert_eq!(keys.len(), 1);
    assert!(!is_plain_pkcs8(&keys[0].private_key), "sealed at rest");
    assert!(servauth::domain::is_sealed(&keys[0].private_key));
    // A server started with the same key opens it and accepts the first one's tokens.
    let clock = std::sync::Arc::new(servauth::clock::ManualClock::starting_now());
    let config = crate::support::app::config(app.db_url(), &["--key-encryption-key", KEK]);
    assert!(servauth::app::App::build(config, clock).await.is_ok());
}

/// A sealed key and no `SERVAUTH_KEY_ENCRYPTION_KEY` (or another one) stops the start with
/// a message naming the setting, rather than a server that cannot sign.
async fn a_sealed_key_without_its_key_stops_the_start_naming_the_setting(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--key-encryption-key", KEK]).await else {
        return;
    };
    for extra in [&[][..], &["--key-encryption-key", NEW_KEK][..]] {
        let clock = std::sync::Arc::new(servauth::clock::ManualClock::starting_now());
        let config = crate::support::app::config(app.db_url(), extra);
        let Err(error) = servauth::app::App::build(config, clock).await else {
            panic!("started without the key that opens the signing key ({extra:?})");
        };
        let message = format!("{error:#}");
        assert!(
            message.contains("SERVAUTH_KEY_ENCRYPTION_KEY"),
            "{extra:?}: {message}"
        );
    }
    // The binary says so on one line and exits 2, like any unusable setting.
    let refused = servauth_with(
        &["serve"],
        app.db_url(),
        &[("SERVAUTH_LISTEN", "127.0.0.1:0")],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("SERVAUTH_KEY_ENCRYPTION_KEY"),
        "{}",
        text(&refused.stderr)
    );
}

/// `keys encrypt` seals plain keys under the key encryption key; given the previous one, it
/// seals them again under a new one; the server keeps working with what it did.
async fn keys_encrypt_seals_plain_keys_and_reencrypts_under_a_new_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    let rotated = servauth(&["keys", "rotate"], app.db_url(), None).await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let plain = stored_keys(&app).await;
    assert_eq!(plain.len(), 2);
    assert!(plain.iter().all(|key| is_plain_pkcs8(&key.private_key)));

    let without = servauth_with(&["keys", "encrypt"], app.db_url(), &[]).await;
    assert_eq!(without.status.code(), Some(2));
    assert!(text(&without.stderr).contains("SERVAUTH_KEY_ENCRYPTION_KEY"));

    let kek = [("SERVAUTH_KEY_ENCRYPTION_KEY", KEK)];
    let encrypted = servauth_with(&["keys", "encrypt"], app.db_url(), &kek).await;
    assert!(encrypted.status.success(), "{}", text(&encrypted.stderr));
    assert!(
        text(&encrypted.stdout).contains("sealed 2 signing keys"),
        "{}",
        text(&encrypted.stdout)
    );
    let sealed = stored_keys(&app).await;
    assert!(sealed.iter().all(|key| !is_plain_pkcs8(&key.private_key)));
    // Running it again changes nothing.
    let again = servauth_with(&["keys", "encrypt"], app.db_url(), &kek).await;
    assert!(text(&again.stdout).contains("sealed 0 signing keys; 2 already sealed"));
    assert_eq!(stored_keys(&app).await, sealed);

    // A new key cannot open them alone…
    let new_only = servauth_with(
        &["keys", "encrypt"],
        app.db_url(),
        &[("SERVAUTH_KEY_ENCRYPTION_KEY", NEW_KEK)],
    )
    .await;
    assert!(!new_only.status.success());
    assert_eq!(stored_keys(&app).await, sealed, "nothing changed");
    // …but with the previous one named, it seals them anew.
    let reencrypted = servauth_with(
        &["keys", "encrypt"],
        app.db_url(),
        &[
            ("SERVAUTH_KEY_ENCRYPTION_KEY", NEW_KEK),
            ("SERVAUTH_PREVIOUS_KEY_ENCRYPTION_KEY", KEK),
        ],
    )
    .await;
    assert!(
        reencrypted.status.success(),
        "{}",
        text(&reencrypted.stderr)
    );
    let resealed = stored_keys(&app).await;
    assert!(resealed.iter().all(|key| !is_plain_pkcs8(&key.private_key)));
    assert_ne!(resealed, sealed);

    // A server with the new key opens the current key: it verifies the token signed before
    // and signs new ones; with the old key alone it does not start.
    let clock = std::sync::Arc::new(servauth::clock::ManualClock::starting_now());
    let old = crate::support::app::config(app.db_url(), &["--key-encryption-key", KEK]);
    assert!(servauth::app::App::build(old, clock.clone()).await.is_err());
    let replica_config = ["--key-encryption-key", NEW_KEK];
    let replica = servauth::app::App::build(
        crate::support::app::config(app.db_url(), &replica_config),
        clock,
    )
    .await
    .expect("starts with the new key");
    let base = format!("http://{}", replica.local_addr().unwrap());
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(replica.serve(async move {
        let _ = stop.await;
    }));
    let me = app
        .client
        .get(format!("{base}/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let login = app
        .client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let _ = stop_tx.send(());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn keys_rotate_keeps_old_tokens_valid_and_reaches_every_server(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let old_token = app.access_token("ada@example.com").await;
    let old_kid = app.get("/.well-known/jwks.json", None).await.body["keys"][0]["kid"].clone();
    let rotated = servauth(&["keys", "rotate"], app.db_url(), None).await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert!(text(&rotated.stdout).contains("is current"));
    // A server started after the rotation signs with the new key…
    let replica = TestApp::spawn_sharing(&app, app.db_url()).await;
    let new_login = replica
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let new_token = new_login.str("access_token");
    let new_jwks = replica.get("/.well-known/jwks.json", None).await.body;
    assert_eq!(
        new_jwks["keys"].as_array().unwrap().len(),
        2,
        "old and new: {new_jwks}"
    );
    assert_ne!(new_jwks["keys"][0]["kid"], old_kid, "newest first");
    // …and the server running since before accepts both: the new key's token makes it reload.
    assert_eq!(
        app.get("/auth/me", Some(&old_token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/auth/me", Some(&new_token)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.get("/.well-known/jwks.json", None).await.body, new_jwks);
    assert_eq!(
        replica.get("/auth/me", Some(&old_token)).await.status,
        StatusCode::OK
    );
}

async fn users_create_makes_a_verified_account_with_the_role_asked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let created = servauth(
        &[
            "users",
            "create",
            "--email",
            "root@example.com",
            "--username",
            "root",
            "--admin",
            "--password-stdin",
        ],
        app.db_url(),
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(text(&created.stdout).starts_with("created admin root@example.com"));
    let login = app
        .post(
            "/auth/login",
            json!({"email": "root@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let me = app
        .get("/auth/me", Some(&login.str("access_token")))
        .await
        .body;
    assert_eq!(
        (me["role"].as_str(), me["email_verified"].as_bool()),
        (Some("admin"), Some(true))
    );
    assert_eq!(me["username"], "root");

    let weak = servauth(
        &[
            "users",
            "create",
            "--email",
            "weak@example.com",
            "--password-stdin",
        ],
        app.db_url(),
        Some("password\n"),
    )
    .await;
    assert_eq!(weak.status.code(), Some(1));
    assert!(
        text(&weak.stderr).contains("password refused"),
        "{}",
        text(&weak.stderr)
    );
    let taken = servauth(
        &[
            "users",
            "create",
            "--email",
            "ROOT@example.com",
            "--password-stdin",
        ],
        app.db_url(),
        Some(PASSWORD),
    )
    .await;
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        text(&taken.stderr).contains("email"),
        "{}",
        text(&taken.stderr)
    );
    let no_flag = servauth(
        &["users", "create", "--email", "x@example.com"],
        app.db_url(),
        Some(PASSWORD),
    )
    .await;
    assert_eq!(
        no_flag.status.code(),
        Some(2),
        "--password-stdin is required"
    );
}

async fn config_check_reaches_the_database(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ok = servauth(&["config", "check"], app.db_url(), None).await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("configuration ok"));
}

/// `servauth audit export`: every event as one JSON line, oldest first, in the admin API's
/// shape; `--since` keeps the later ones.
async fn audit_export_writes_json_lines_oldest_first(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.post(
        "/auth/login",
        json!({"email": "ada@example.com", "password": "not the password at all"}),
    )
    .await;
    app.clock.advance(chrono::Duration::minutes(10));
    let since = app.clock_now().to_rfc3339();
    app.login_native("ada@example.com").await;

    let all = servauth(&["audit", "export"], app.db_url(), None).await;
    assert!(all.status.success(), "{}", text(&all.stderr));
    let events: Vec<serde_json::Value> = text(&all.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user.registered",
            "user.signed_in",
            "user.sign_in_failed",
            "user.signed_in"
        ]
    );
    assert_eq!(events[2]["detail"]["reason"], "wrong_password");
    assert!(!text(&all.stdout).contains("not the password at all"));

    let later = servauth(&["audit", "export", "--since", &since], app.db_url(), None).await;
    assert!(later.status.success(), "{}", text(&later.stderr));
    assert_eq!(text(&later.stdout).lines().count(), 1);
    let bad = servauth(
        &["audit", "export", "--since", "yesterday"],
        app.db_url(),
        None,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

crate::support::both_backends!(
    audit_export_writes_json_lines_oldest_first,
    with_a_key_encryption_key_private_keys_are_stored_sealed,
    a_sealed_key_without_its_key_stops_the_start_naming_the_setting,
    keys_encrypt_seals_plain_keys_and_reencrypts_under_a_new_key,
    imported_hashes_log_in_and_are_rehashed_with_the_current_parameters,
    keys_rotate_keeps_old_tokens_valid_and_reaches_every_server,
    users_create_makes_a_verified_account_with_the_role_asked,
    config_check_reaches_the_database,
);

#[tokio::test]
async fn config_check_names_what_is_wrong() {
    let down = servauth(
        &["config", "check"],
        "postgres://postgres@127.0.0.1:1/nothing",
        None,
    )
    .await;
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down.stderr).contains("DATABASE_URL"),
        "{}",
        text(&down.stderr)
    );
    let malformed = servauth(&["config", "check"], "mysql://x", None).await;
    assert_eq!(malformed.status.code(), Some(2));
    assert!(text(&malformed.stderr).contains("DATABASE_URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_answers_for_a_live_server_only() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let address = app.base.trim_start_matches("http://").to_owned();
    let live = Command::new(BIN)
        .args(["healthcheck", "--listen", &address])
        .env_clear()
        .output()
        .unwrap();
    assert!(live.status.success(), "{}", text(&live.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = Command::new(BIN)
        .args(["healthcheck", "--port", &port.to_string()])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(dead.status.code(), Some(1));
}

/// A request in flight when the shutdown signal comes is finished, not cut; new
/// connections are refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    // Slow hashing, so that a login is surely still running when the signal comes.
    let extra = ["--argon2-memory-kib", "131072", "--argon2-iterations", "3"];
    let Some(mut app) = TestApp::spawn_with(Backend::Sqlite, &extra).await else {
        return;
    };
    app.register("ada@example.com").await;
    let login = tokio::spawn({
        let request = app
            .client
            .post(app.url("/auth/login"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}));
        async move { request.send().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    app.begin_shutdown();
    let response = login
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.json::<serde_json::Value>().await.unwrap()["access_token"].is_string());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = crate::support::client()
        .get(app.url("/health"))
        .send()
        .await;
    assert!(
        after.is_err(),
        "no new connections after shutdown: {after:?}"
    );
}

/// Hashes from other systems: bcrypt, scrypt (PHC) and argon2 with other parameters.
fn foreign_hashes() -> Vec<(&'static str, String)> {
    use argon2::password_hash::PasswordHasher as _;
    let argon2 = |algorithm, m, t| {
        let params = argon2::Params::new(m, t, 1, None).unwrap();
        argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
            .hash_password(PASSWORD.as_bytes())
            .unwrap()
            .to_string()
    };
    let scrypt = <scrypt::Scrypt as password_hash::CustomizedPasswordHasher<
        password_hash::phc::PasswordHash,
    >>::hash_password_with_params(
        &scrypt::Scrypt::new(),
        PASSWORD.as_bytes(),
        b"0123456789abcdef",
        scrypt::Params::new(6, 8, 1).unwrap(),
    )
    .unwrap()
    .to_string();
    vec![
        ("bcrypt@example.com", bcrypt::hash(PASSWORD, 5).unwrap()),
        ("scrypt@example.com", scrypt),
        (
            "argon2id@example.com",
            argon2(argon2::Algorithm::Argon2id, 256, 2),
        ),
        (
            "argon2i@example.com",
            argon2(argon2::Algorithm::Argon2i, 64, 1),
        ),
    ]
}

async fn imported_hashes_log_in_and_are_rehashed_with_the_current_parameters(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.register("taken@example.com").await;
    let hashes = foreign_hashes();
    let mut lines: Vec<String> = hashes
        .iter()
        .map(|(email, hash)| {
            json!({"email": email, "password_hash": hash, "email_verified": true,
                   "created_at": "2020-01-02T03:04:05Z", "username": email.split('@').next()})
            .to_string()
        })
        .collect();
    lines.push(json!({"email": "plain@example.com", "password_hash": "hunter2"}).to_string());
    lines.push(
        json!({"email": "taken@example.com", "password_hash": bcrypt::hash("x", 4).unwrap()})
            .to_string(),
    );
    lines.push(json!({"email": "costly@example.com", "password_hash": format!("$2b$31${}", "a".repeat(53))}).to_string());
    lines.push("not json".to_owned());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();

    let output = servauth(
        &["users", "import", file.path().to_str().unwrap()],
        app.db_url(),
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "some lines were refused");
    assert!(
        text(&output.stdout).contains("imported 4 users; refused 4 lines"),
        "{}",
        text(&output.stdout)
    );
    let errors = text(&output.stderr);
    for line in ["line 5:", "line 6:", "line 7:", "line 8:"] {
        assert!(errors.contains(line), "{errors}");
    }

    for (email, imported_hash) in &hashes {
        let stored = || app.store.find_credentials_by_email_key(email);
        let before = stored().await.unwrap().unwrap();
        assert_eq!(&before.password_hash, imported_hash, "stored as imported");
        assert!(before.user.email_verified);
        assert_eq!(
            before.user.created_at.to_rfc3339(),
            "2020-01-02T03:04:05+00:00"
        );
        let wrong = app
            .post(
                "/auth/login",
                json!({"email": email, "password": "definitely not it"}),
            )
            .await;
        wrong.assert_problem(401, "invalid_credentials");
        assert_eq!(
            stored().await.unwrap().unwrap().password_hash,
            before.password_hash,
            "no rehash on failure"
        );
        let login = app
            .post("/auth/login", json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(login.status, StatusCode::OK, "{email}: {:#}", login.body);
        let after = stored().await.unwrap().unwrap().password_hash;
        assert!(
            after.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{email}: {after}"
        );
        let again = app
            .post("/auth/login", json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(again.status, StatusCode::OK);
    }
}

/// A client that sends half a request head and stalls (slowloris), or leaves a keep-alive
/// connection idle, is disconnected after `SERVAUTH_HEADER_TIMEOUT`, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_before_a_request_head_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, &["--header-timeout", "1s"]).await else {
        return;
    };
    let address = app.base.trim_start_matches("http://").to_owned();
    let until_closed = |head: &'static [u8]| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(head).await.unwrap();
            let started = std::time::Instant::now();
            let mut received = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read_to_end(&mut received),
            )
            .await;
            assert!(read.is_ok(), "the connection was still open after 10 s");
            (
                started.elapsed(),
                String::from_utf8_lossy(&received).into_owned(),
            )
        }
    };
    let (stalled, idle) = tokio::join!(
        until_closed(b"GET /health HTTP/1.1\r\nHost: servauth\r\n"),
        until_closed(b"GET /health HTTP/1.1\r\nHost: servauth\r\n\r\n"),
    );
    assert!(
        stalled.0 >= std::time::Duration::from_millis(900),
        "{stalled:?}"
    );
    assert!(!stalled.1.contains(" 200 "), "{stalled:?}");
    assert!(idle.0 >= std::time::Duration::from_millis(900), "{idle:?}");
    assert!(idle.1.starts_with("HTTP/1.1 200 "), "{idle:?}");
}

/// With one request allowed in flight, a second waits until the first is answered, while
/// health probes are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_wait_but_probes_do_not() {
    // Slow hashing, so that a login is surely still running while the others are sent.
    let extra = [
        "--max-in-flight",
        "1",
        "--argon2-memory-kib",
        "131072",
        "--argon2-iterations",
        "3",
    ];
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, &extra).await else {
        return;
    };
    app.register("ada@example.com").await;
    let started = std::time::Instant::now();
    let login = tokio::spawn({
        let request = app
            .client
            .post(app.url("/auth/login"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}));
        async move {
            let response = request.send().await;
            (response, started.elapsed())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let live = app.client.get(app.url("/live")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(!login.is_finished(), "the login was already answered");
    let jwks = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let jwks_answered = started.elapsed();
    assert_eq!(jwks.status(), StatusCode::OK);
    let (response, login_answered) = login.await.unwrap();
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    // The JWKS request could only start once the login's place was free; allow for the two
    // responses reaching this client in either order by a hair.
    assert!(
        jwks_answered + std::time::Duration::from_millis(20) >= login_answered,
        "jwks answered at {jwks_answered:?}, login at {login_answered:?}"
    );
}
