//! Access tokens: signing and verifying one, EdDSA (the default) and HS256, as the hot
//! paths do them (`/auth/login` and `/auth/refresh` sign; every bearer request and
//! `/api/internal/validate` verify, before the session lookup).
//!
//! - `*/verify_first`: a token this verifier has not seen (header, signature, claims).
//! - `*/verify_again`: a token it has verified before (remembered by the SHA-256 of the token;
//!   only the time checks run again), which is what most bearer requests are.
//!
//! `cargo bench --bench tokens`

#![expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop"
)]

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use servauth::domain::{AccessTokens, generate_signing_key};
use servauth::store::Role;
use uuid::Uuid;

fn access_tokens(c: &mut Criterion) {
    let now = Utc::now();
    let key = generate_signing_key(now).expect("signing key");
    let issuer = "http://127.0.0.1:8080".to_owned();
    let eddsa = AccessTokens::eddsa(
        issuer.clone(),
        "servauth".to_owned(),
        Duration::minutes(15),
        &key,
        std::slice::from_ref(&key),
    );
    let secret = SecretString::from("bench-hs256-secret-0123456789abcdef");
    let hs256 = AccessTokens::hs256(
        issuer,
        "servauth".to_owned(),
        Duration::minutes(15),
        &secret,
    );
    let (user, session) = (Uuid::now_v7(), Uuid::now_v7());

    let mut group = c.benchmark_group("access_token");
    group.throughput(Throughput::Elements(1));
    for (name, tokens) in [("eddsa", &eddsa), ("hs256", &hs256)] {
        let token = tokens.issue(user, session, Role::User, now).expect("sign");
        tokens.verify(&token, now).expect("verify");
        group.bench_function(format!("{name}/sign"), |b| {
            b.iter(|| tokens.issue(black_box(user), black_box(session), Role::User, now));
        });
        group.bench_function(format!("{name}/verify_first"), |b| {
            b.iter_batched(
                || tokens.issue(user, session, Role::User, now).expect("sign"),
                |fresh| tokens.verify(black_box(&fresh), now),
                criterion::BatchSize::SmallInput,
            );
        });
        group.bench_function(format!("{name}/verify_again"), |b| {
            b.iter(|| tokens.verify(black_box(&token), now));
        });
    }
    group.finish();
}

criterion_group!(benches, access_tokens);
criterion_main!(benches);
