//! Abuse resistance: per-IP limits, the per-account login throttle, trusted proxies,
//! hashing back-pressure, Redis-shared limits and an outage of Redis.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{PASSWORD, Reply, TestApp, metric, read};
use crate::support::db::Backend;
use crate::support::redis::RedisServer;

async fn login_from(app: &TestApp, email: &str, password: &str, forwarded: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    read(request.send().await.unwrap()).await
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

async fn each_endpoint_allows_its_quota_per_ip_then_answers_429(backend: Backend) {
    let extra = ["--rate-limit", "3/1m", "--login-failure-limit", "100/1m"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    for remaining in [2, 1, 0] {
        let reply = login_from(&app, "nobody@example.com", PASSWORD, None).await;
        reply.assert_problem(401, "invalid_credentials");
        assert_eq!(header_u64(&reply, "ratelimit-limit"), 3);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
    }
    let limited = login_from(&app, "nobody@example.com", PASSWORD, None).await;
    limited.assert_problem(429, "rate_limited");
    let retry = header_u64(&limited, "retry-after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header_u64(&limited, "ratelimit-remaining"), 0);
    assert!(header_u64(&limited, "ratelimit-reset") >= retry);
    // Another endpoint has its own quota; a path variant is no route and no fresh quota.
    let forgot = app
        .post("/auth/password/forgot", json!({"email": "a@example.com"}))
        .await;
    assert_eq!(forgot.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.post("/auth/login/", json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    // Token paths are not limited per IP.
    for _ in 0..5 {
        assert_eq!(
            app.get("/auth/me", None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

async fn failed_logins_throttle_an_account_alike_whether_it_exists_or_not(backend: Backend) {
    let extra = ["--login-failure-limit", "3/15m", "--rate-limit", "1000/1m"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    app.register("ada@example.com").await;
    app.register("bob@example.com").await;
    // A success clears the count.
    for _ in 0..2 {
        login_from(&app, "ada@example.com", "a wrong password here", None)
            .await
            .assert_problem(401, "invalid_credentials");
    }
    assert_eq!(
        login_from(&app, "ada@example.com", PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..3 {
        login_from(&app, "ada@example.com", "a wrong password here", None)
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let known = login_from(&app, "ADA@example.com", PASSWORD, None).await;
    known.assert_problem(429, "rate_limited");
    assert!(
        header_u64(&known, "retry-after") > 800,
        "the rest of the 15 minutes"
    );
    for _ in 0..3 {
        login_from(&app, "ghost@example.com", "a wrong password here", None).await;
    }
    let unknown = login_from(&app, "ghost@example.com", PASSWORD, None).await;
    unknown.assert_problem(429, "rate_limited");
    let strip = |reply: &Reply| {
        let mut body = reply.body.clone();
        body.as_object_mut().unwrap().remove("request_id");
        body
    };
    assert_eq!(
        strip(&known),
        strip(&unknown),
        "a 429 reveals nothing about the account"
    );
    assert_eq!(
        login_from(&app, "bob@example.com", PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
}

async fn a_parallel_burst_cannot_exceed_the_failure_limit(backend: Backend) {
    let extra = ["--login-failure-limit", "5/15m", "--rate-limit", "1000/1m"];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    app.register("ada@example.com").await;
    let attempts =
        (0..20).map(|_| login_from(&app, "ada@example.com", "a wrong password here", None));
    let replies = futures::future::join_all(attempts).await;
    let checked = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (checked, throttled),
        (5, 15),
        "only 5 passwords were ever checked"
    );
}

async fn forwarded_for_counts_only_from_trusted_proxies(backend: Backend) {
    let Some(direct) = TestApp::spawn_with(backend, &["--rate-limit", "2/1m"]).await else {
        return;
    };
    for forwarded in ["1.1.1.1", "2.2.2.2"] {
        login_from(&direct, "a@example.com", PASSWORD, Some(forwarded))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let spoofed = login_from(&direct, "a@example.com", PASSWORD, Some("3.3.3.3")).await;
    spoofed.assert_problem(429, "rate_limited");

    let extra = [
        "--rate-limit",
        "2/1m",
        "--trusted-proxies",
        "127.0.0.0/8,10.0.0.0/8",
    ];
    let Some(proxied) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    // The client is the right-most address that is not a trusted proxy; what it put to the
    // left of that is ignored.
    for forwarded in ["1.1.1.1", "9.9.9.9, 1.1.1.1", "2.2.2.2"] {
        let reply = login_from(&proxied, "a@example.com", PASSWORD, Some(forwarded)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{forwarded}");
    }
    for forwarded in ["1.1.1.1, 10.0.0.7", "8.8.8.8, 1.1.1.1"] {
        login_from(&proxied, "a@example.com", PASSWORD, Some(forwarded))
            .await
            .assert_problem(429, "rate_limited");
    }
    let registered = read(
        proxied
            .client
            .post(proxied.url("/auth/register"))
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.7")
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let sessions = proxied
        .get("/auth/sessions", Some(&registered.str("access_token")))
        .await;
    assert_eq!(
        sessions.body["sessions"][0]["ip"], "203.0.113.9",
        "the client, not the proxy"
    );
}

async fn a_full_hashing_queue_answers_503_at_once(backend: Backend) {
    let extra = [
        "--hash-workers",
        "1",
        "--hash-queue",
        "0",
        "--argon2-memory-kib",
        "65536",
        "--argon2-iterations",
        "3",
        "--rate-limit",
        "1000/1m",
        "--login-failure-limit",
        "6/1m",
    ];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    app.register("a@example.com").await;
    let replies = futures::future::join_all(
        (0..6).map(|_| login_from(&app, "a@example.com", "not the password", None)),
    )
    .await;
    let overloaded: Vec<&Reply> = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !overloaded.is_empty(),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        overloaded.len() < 6,
        "the one worker still served a request"
    );
    for reply in &overloaded {
        reply.assert_problem(503, "overloaded");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    // Only the checked passwords count as failures: had the refused ones counted too, the
    // burst would have used up the limit of 6 and the right password would get 429.
    let right = login_from(&app, "a@example.com", PASSWORD, None).await;
    assert_eq!(right.status, StatusCode::OK, "{:?}", right.body);
}

/// While the hashing pool is full, sign-ins on both faces are refused before any other
/// work (no log line, no rate count, no body parsed), each in its face's shape, with
/// `Retry-After` and the usual headers; they are counted in `servauth_requests_shed_total`.
async fn a_storm_of_sign_ins_is_refused_cheaply_in_each_faces_shape(backend: Backend) {
    let extra = [
        "--hash-workers",
        "1",
        "--hash-queue",
        "0",
        "--argon2-memory-kib",
        "65536",
        "--argon2-iterations",
        "12",
        "--better-auth-secret",
        "test-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    ];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    app.register("a@example.com").await;
    let before = metric(&app.client, &app.base, "servauth_requests_shed_total").await;
    // One login takes the only place for most of a second.
    let busy = {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"email": "a@example.com", "password": PASSWORD}))
                .send()
                .await
                .map(|reply| reply.status())
        })
    };
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest = login_from(&app, "a@example.com", PASSWORD, None).await;
    let face = app
        .client
        .post(app.url("/api/auth/sign-in/email"))
        .header("origin", "http://localhost:8080")
        .json(&json!({"email": "a@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let face_status = face.status();
    let face_headers = face.headers().clone();
    let face_body: serde_json::Value = face.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "both refusals came while the first login was still hashing"
    );
    rest.assert_problem(503, "overloaded");
    assert_eq!(rest.header("retry-after"), Some("1"));
    assert_eq!(rest.header("x-content-type-options"), Some("nosniff"));
    assert!(rest.header("x-request-id").is_some());
    assert_eq!(face_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(face_body["code"], "SERVICE_UNAVAILABLE", "{face_body}");
    assert!(
        face_body.get("type").is_none(),
        "the face's shape, not problem+json"
    );
    assert_eq!(
        face_headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(metric(&app.client, &app.base, "servauth_requests_shed_total").await >= before + 2.0);
    assert_eq!(
        busy.await.unwrap().unwrap(),
        StatusCode::OK,
        "the admitted login succeeds"
    );
}

crate::support::both_backends!(
    #[multi_thread]
    a_storm_of_sign_ins_is_refused_cheaply_in_each_faces_shape,
    each_endpoint_allows_its_quota_per_ip_then_answers_429,
    failed_logins_throttle_an_account_alike_whether_it_exists_or_not,
    #[multi_thread]
    a_parallel_burst_cannot_exceed_the_failure_limit,
    forwarded_for_counts_only_from_trusted_proxies,
    #[multi_thread]
    a_full_hashing_queue_answers_503_at_once,
);

async fn ready_redis(app: &TestApp, expect: &str) -> Reply {
    let started = std::time::Instant::now();
    loop {
        let reply = app.get("/ready", None).await;
        if reply.body["redis"] == expect {
            return reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis never {expect}: {:#}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two servers on one Redis share the per-IP quota; when Redis stops they keep limiting
/// in process, say so on `/ready`, and share again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_through_redis_and_survive_its_outage() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let extra = ["--redis-url", url.as_str(), "--rate-limit", "3/1m"];
    let Some(first) = TestApp::spawn_with(Backend::Sqlite, &extra).await else {
        return;
    };
    let Some(second) = TestApp::spawn_with(Backend::Sqlite, &extra).await else {
        return;
    };
    let ready = ready_redis(&first, "up").await;
    assert_eq!(ready.status, StatusCode::OK);
    ready_redis(&second, "up").await;
    for app in [&first, &second, &first] {
        login_from(app, "a@example.com", PASSWORD, None)
            .await
            .assert_problem(401, "invalid_credentials");
    }
    login_from(&second, "a@example.com", PASSWORD, None)
        .await
        .assert_problem(429, "rate_limited");

    redis.stop();
    let down = ready_redis(&first, "down").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.body["database"], "up");
    // Still answering, with in-process limits (a fresh local quota).
    let during = login_from(&first, "b@example.com", PASSWORD, None).await;
    during.assert_problem(401, "invalid_credentials");
    assert_eq!(header_u64(&during, "ratelimit-limit"), 3);

    redis.restart().await;
    let back = ready_redis(&first, "up").await;
    assert_eq!(back.status, StatusCode::OK);
    ready_redis(&second, "up").await;
    let after = login_from(&second, "c@example.com", PASSWORD, None).await;
    assert_eq!(
        header_u64(&after, "ratelimit-remaining"),
        2,
        "counting in Redis again (fresh after the restart)"
    );
}
