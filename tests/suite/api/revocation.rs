//! Session state in memory: each server keeps the live sessions it checked, and a revocation
//! through any server is refused by every server at once: through PostgreSQL
//! `LISTEN/NOTIFY`, through Redis pub/sub, within one process on SQLite, while a server's
//! subscription is cut, and in a burst of revocations under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::replicas::{Replica, me, post, start_replica};
use crate::support::app::{PASSWORD, TestApp};
use crate::support::db::{Backend, DEFAULT_ADMIN_URL, TestDatabase};
use crate::support::redis::RedisServer;

crate::support::both_backends! {
    #[multi_thread] a_burst_of_revocations_under_load_is_refused_by_every_server,
}

/// Settings for replicas that log in many times from one address.
const OPEN_LIMITS: &[(&str, &str)] = &[("SERVAUTH_RATE_LIMIT", "100000/1m")];

/// Ada's native sign-in through `path` (`/auth/register`: 201, `/auth/login`: 200) with
/// `password`; the access token.
async fn ada(client: &reqwest::Client, replica: &Replica, path: &str, password: &str) -> String {
    let body = json!({"email": "ada@example.com", "password": password, "client": "native"});
    let reply = post(client, replica, path, body, None).await;
    let expected = if path == "/auth/register" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    assert_eq!(reply.status, expected, "{:#}", reply.body);
    reply.str("access_token")
}

/// Two replicas on this database (and Redis), both subscribed, with three sessions of Ada's
/// opened through the first and cached on the second.
async fn replicas_with_cached_sessions(
    database_url: &str,
    redis_url: Option<&str>,
) -> (Replica, Replica, reqwest::Client, [String; 3]) {
    let (a, b) = tokio::join!(
        start_replica(database_url, redis_url, OPEN_LIMITS),
        start_replica(database_url, redis_url, OPEN_LIMITS)
    );
    let client = crate::support::client();
    wait_subscribed(&client, &a, true).await;
    wait_subscribed(&client, &b, true).await;
    let sessions = [
        ada(&client, &a, "/auth/register", PASSWORD).await,
        ada(&client, &a, "/auth/login", PASSWORD).await,
        ada(&client, &a, "/auth/login", PASSWORD).await,
    ];
    for token in &sessions {
        cached_on(&client, &b, token).await;
    }
    (a, b, client, sessions)
}

/// The value of a metric without labels on a replica's `/metrics` (0 when absent).
async fn metric(client: &reqwest::Client, replica: &Replica, name: &str) -> f64 {
    crate::support::app::metric(client, &replica.base, name).await
}

/// Waits until `replica`'s subscription is `up` (or not).
async fn wait_subscribed(client: &reqwest::Client, replica: &Replica, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    let started = Instant::now();
    while metric(client, replica, "servauth_session_cache_subscribed").await != want {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "subscription never became {up}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `token` on `replica` twice and shows that the second answer came from memory.
async fn cached_on(client: &reqwest::Client, replica: &Replica, token: &str) {
    assert_eq!(me(client, replica, token).await, StatusCode::OK);
    let hits = metric(client, replica, "servauth_session_cache_hits_total").await;
    assert_eq!(me(client, replica, token).await, StatusCode::OK);
    assert!(
        metric(client, replica, "servauth_session_cache_hits_total").await > hits,
        "the second check was answered from the cache"
    );
}

/// How long another server may take to refuse a session revoked elsewhere. The revoking
/// server answers once its own notification has come back (the channel delivers to every
/// server at once), so the others almost always refuse at once; on a host whose CPU is
/// taken (the suite runs in parallel on two cores) a server or its database connection may
/// be scheduled late, which the contract allows "within milliseconds".
const LAG: Duration = Duration::from_millis(500);

/// Asserts that `replica` refuses `token` within [`LAG`].
async fn refused_soon(client: &reqwest::Client, replica: &Replica, token: &str) {
    let started = Instant::now();
    while me(client, replica, token).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < LAG,
            "a revoked session was still accepted after {LAG:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn logout(client: &reqwest::Client, replica: &Replica, token: &str) {
    let reply = post(client, replica, "/auth/logout", json!({}), Some(token)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:#}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_notifications_reach_every_replica_before_the_revoking_request_answers() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let (a, b, client, [first, second, third]) = replicas_with_cached_sessions(&db.url, None).await;

    // One session: logout through A, refused by B (which had it cached) at once.
    logout(&client, &a, &first).await;
    refused_soon(&client, &b, &first).await;
    assert_eq!(me(&client, &b, &second).await, StatusCode::OK);

    // A user-wide change: a profile update through A is what B answers next.
    let renamed = client
        .patch(format!("{}/auth/me", a.base))
        .bearer_auth(&second)
        .json(&json!({"name": "Ada L."}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let seen: serde_json::Value = client
        .get(format!("{}/auth/me", b.base))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["name"], "Ada L.");

    // A password change through A ends the other sessions everywhere.
    let change =
        json!({"current_password": PASSWORD, "new_password": "another long passphrase 42"});
    let changed = post(&client, &a, "/auth/password/change", change, Some(&second)).await;
    assert!(changed.status.is_success(), "{:#}", changed.body);
    refused_soon(&client, &b, &third).await;

    // A revocation written by hand in the database (an operator's SQL) reaches B too.
    let fourth = ada(&client, &a, "/auth/login", "another long passphrase 42").await;
    cached_on(&client, &b, &fourth).await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE revoked_at IS NULL")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let started = Instant::now();
    while me(&client, &b, &fourth).await != StatusCode::UNAUTHORIZED {
        assert!(started.elapsed() < Duration::from_secs(2), "B never heard");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop((a, b));
    db.drop_database().await;
}

/// The admin URL's connection, for what a test database's own connections cannot do.
async fn admin() -> PgConnection {
    let url =
        std::env::var("SERVAUTH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    PgConnection::connect(&url).await.unwrap()
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_postgres_subscription_empties_the_cache_until_it_is_back() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let (a, b) = tokio::join!(
        start_replica(&db.url, None, OPEN_LIMITS),
        start_replica(&db.url, None, OPEN_LIMITS)
    );
    let client = crate::support::client();
    wait_subscribed(&client, &b, true).await;
    let token = ada(&client, &a, "/auth/register", PASSWORD).await;
    let spare = ada(&client, &a, "/auth/login", PASSWORD).await;
    cached_on(&client, &b, &token).await;
    cached_on(&client, &b, &spare).await;

    // Cut: no new connection to the database, and the listening ones terminated. The pools'
    // open connections go on serving.
    let name = database_name(&db.url);
    let mut admin = admin().await;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'servauth-notifications'",
    )
    .bind(&name)
    .execute(&mut admin)
    .await
    .unwrap();
    wait_subscribed(&client, &b, false).await;

    // Revoked meanwhile: no notification reaches B, which checks the database instead.
    logout(&client, &a, &token).await;
    assert_eq!(me(&client, &b, &token).await, StatusCode::UNAUTHORIZED);
    let hits = metric(&client, &b, "servauth_session_cache_hits_total").await;
    assert_eq!(me(&client, &b, &spare).await, StatusCode::OK);
    assert_eq!(me(&client, &b, &spare).await, StatusCode::OK);
    assert_eq!(
        metric(&client, &b, "servauth_session_cache_hits_total").await,
        hits,
        "nothing is answered from memory while the subscription is down"
    );

    // Back: cached again, and revocations heard again.
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    wait_subscribed(&client, &b, true).await;
    cached_on(&client, &b, &spare).await;
    logout(&client, &a, &spare).await;
    refused_soon(&client, &b, &spare).await;
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_notifications_and_a_redis_outage() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let redis_url = redis.url();
    let (a, b, client, [first, second, third]) =
        replicas_with_cached_sessions(&db.url, Some(&redis_url)).await;
    logout(&client, &a, &first).await;
    refused_soon(&client, &b, &first).await;

    // Redis down: B's subscription is lost, so it asks the database, and a revocation
    // through A (which cannot publish it) is still refused by B.
    redis.stop();
    wait_subscribed(&client, &b, false).await;
    logout(&client, &a, &second).await;
    assert_eq!(me(&client, &b, &second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&client, &b, &third).await, StatusCode::OK);

    redis.restart().await;
    wait_subscribed(&client, &a, true).await;
    wait_subscribed(&client, &b, true).await;
    cached_on(&client, &b, &third).await;
    logout(&client, &a, &third).await;
    refused_soon(&client, &b, &third).await;
    drop((a, b));
    db.drop_database().await;
}

/// Many sessions checked continuously through a second server while they are revoked one
/// by one through the first: once a revocation has answered, no check that starts after it
/// (by more than [`LAG`]) succeeds, on either server.
async fn a_burst_of_revocations_under_load_is_refused_by_every_server(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--rate-limit", "100000/1m"]).await else {
        return;
    };
    let replica = TestApp::spawn_sharing(&app, app.db_url()).await;
    let first = app.access_token("ada@example.com").await;
    let mut tokens = vec![first];
    for _ in 0..23 {
        tokens.push(app.login_native("ada@example.com").await.access);
    }
    let tokens = Arc::new(tokens);
    let revoked: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..6)
        .map(|worker| {
            let (tokens, revoked, stop) = (tokens.clone(), revoked.clone(), stop.clone());
            let (client, base) = (replica.client.clone(), replica.base.clone());
            tokio::spawn(async move {
                let (mut checks, mut late) = (0_u64, Vec::new());
                let mut index = worker;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    index = (index + 7) % tokens.len();
                    let started = Instant::now();
                    let status = client
                        .get(format!("{base}/auth/me"))
                        .bearer_auth(&tokens[index])
                        .send()
                        .await
                        .unwrap()
                        .status();
                    checks += 1;
                    let done = revoked.lock().unwrap().get(&index).copied();
                    if status == StatusCode::OK && done.is_some_and(|at| at + LAG < started) {
                        late.push(index);
                    }
                }
                (checks, late)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (index, token) in tokens.iter().enumerate() {
        let out = app
            .send(reqwest::Method::POST, "/auth/logout", None, Some(token))
            .await;
        assert_eq!(out.status, StatusCode::NO_CONTENT);
        revoked.lock().unwrap().insert(index, Instant::now());
        let started = Instant::now();
        while replica.get("/auth/me", Some(token)).await.status != StatusCode::UNAUTHORIZED {
            assert!(
                started.elapsed() < LAG,
                "session {index} still accepted after {LAG:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut checks = 0;
    for worker in load {
        let (count, late) = worker.await.unwrap();
        checks += count;
        assert!(late.is_empty(), "revoked sessions let through: {late:?}");
    }
    assert!(checks > 100, "the load ran ({checks} checks)");
}
