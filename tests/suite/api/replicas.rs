//! Three servauth processes on one PostgreSQL and one Redis: shared rate limits, revocation
//! seen everywhere at once, and refreshes spread over replicas that still rotate safely.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{PASSWORD, Reply, read};
use crate::support::db::{Backend, TestDatabase};
use crate::support::redis::RedisServer;

pub(super) struct Replica {
    child: Child,
    pub(super) base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(database_url: &str, redis_url: &str) -> Replica {
    start_replica(
        database_url,
        Some(redis_url),
        &[("SERVAUTH_RATE_LIMIT", "4/1m")],
    )
    .await
}

/// A servauth process on this database (and this Redis, when given), with these settings,
/// ready.
pub(super) async fn start_replica(
    database_url: &str,
    redis_url: Option<&str>,
    settings: &[(&str, &str)],
) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_servauth"));
    command.env_clear().env("DATABASE_URL", database_url);
    if let Some(redis_url) = redis_url {
        command.env("REDIS_URL", redis_url);
    }
    command.envs(settings.iter().copied());
    let child = command
        .env("SERVAUTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("SERVAUTH_ARGON2_MEMORY_KIB", "64")
        .env("SERVAUTH_ARGON2_ITERATIONS", "1")
        .env("SERVAUTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let replica = Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = crate::support::client();
    let started = Instant::now();
    loop {
        if let Ok(reply) = client.get(format!("{}/ready", replica.base)).send().await
            && reply.status() == StatusCode::OK
        {
            return replica;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn post(
    client: &reqwest::Client,
    replica: &Replica,
    path: &str,
    body: serde_json::Value,
    bearer: Option<&str>,
) -> Reply {
    let mut request = client.post(format!("{}{path}", replica.base)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    read(request.send().await.unwrap()).await
}

pub(super) async fn me(client: &reqwest::Client, replica: &Replica, token: &str) -> StatusCode {
    client
        .get(format!("{}/auth/me", replica.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_limits_revocations_and_refresh_rotation() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (url, redis_url) = (db.url.clone(), redis.url());
    let (a, b, c) = tokio::join!(
        start(&url, &redis_url),
        start(&url, &redis_url),
        start(&url, &redis_url)
    );
    let replicas = [&a, &b, &c];
    let client = crate::support::client();
    let account = json!({"email": "ada@example.com", "password": PASSWORD, "client": "native"});
    assert_eq!(
        post(&client, &a, "/auth/register", account.clone(), None)
            .await
            .status,
        StatusCode::CREATED
    );

    // Sessions and revocation: a logout through one replica is refused by all at once.
    let login = post(&client, &b, "/auth/login", account.clone(), None).await;
    let access = login.str("access_token");
    for replica in replicas {
        assert_eq!(me(&client, replica, &access).await, StatusCode::OK);
    }
    let out = post(&client, &c, "/auth/logout", json!({}), Some(&access)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    for replica in replicas {
        assert_eq!(
            me(&client, replica, &access).await,
            StatusCode::UNAUTHORIZED
        );
    }

    // Concurrent refreshes with one token, spread over the replicas: one successor.
    let session = post(&client, &a, "/auth/login", account.clone(), None).await;
    let refresh = session.str("refresh_token");
    let attempts = (0..21).map(|i| {
        let replica = replicas[i % 3];
        post(
            &client,
            replica,
            "/auth/refresh",
            json!({"refresh_token": refresh}),
            None,
        )
    });
    let replies = futures::future::join_all(attempts).await;
    let successors: std::collections::HashSet<String> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
            reply.str("refresh_token")
        })
        .collect();
    assert_eq!(successors.len(), 1, "no fork across replicas");
    let successor = successors.into_iter().next().unwrap();
    let next = post(
        &client,
        &b,
        "/auth/refresh",
        json!({"refresh_token": successor}),
        None,
    )
    .await;
    assert_eq!(next.status, StatusCode::OK);

    // The per-IP quota of /auth/login (4 a minute) is shared: two logins so far, two more on
    // any replicas, then every replica refuses.
    let wrong = json!({"email": "ada@example.com", "password": "not the password at all"});
    assert_eq!(
        post(&client, &c, "/auth/login", wrong.clone(), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&client, &a, "/auth/login", wrong.clone(), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for replica in replicas {
        post(&client, replica, "/auth/login", wrong.clone(), None)
            .await
            .assert_problem(429, "rate_limited");
    }
}
