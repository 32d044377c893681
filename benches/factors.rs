//! Second factors, as `POST /auth/mfa/verify` checks them:
//!
//! - `totp/verify`: open the sealed secret (ChaCha20-Poly1305) and check a code against the
//!   ±1-step window (three HMAC-SHA-1 at most). `totp/verify_wrong`: a wrong code, which
//!   always tries all three steps.
//! - `passkey/assertion_verify`: webauthn-rs checking a real assertion (ES256, from
//!   Chromium's virtual authenticator, captured by
//!   `tests/browser/capture-passkey-fixture.mjs` into `benches/fixtures/`) against the
//!   stored passkey and the ceremony's state: client data, origin, RP id hash, flags,
//!   counter, signature.
//!
//! Neither does any Argon2 work: a sign-in with a second factor costs its password check
//! once, plus this and two database statements.
//!
//! `cargo bench --bench factors`

#![expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop"
)]

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use servauth::domain::{FactorSealing, KeyEncryptionKey, totp_step};
use uuid::Uuid;
use webauthn_rs::prelude::{Passkey, PasskeyAuthentication, PublicKeyCredential, Url};

fn totp(c: &mut Criterion) {
    let now = Utc::now();
    let sealing = FactorSealing::new(None, KeyEncryptionKey::from_bytes([7; 32]));
    let id = Uuid::now_v7();
    let secret = vec![0x5a_u8; 20];
    let sealed = sealing.seal(id, &secret).expect("seal");
    let generator = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .expect("totp");
    let time = u64::try_from(now.timestamp()).expect("after 1970");
    let code = generator.generate(time).to_string();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let check = |code: &str| {
        let secret = sealing.open(id, &sealed).expect("opens");
        totp_step(secret, code, now)
    };
    assert!(check(&code).is_some(), "the right code verifies");
    assert!(check(wrong).is_none(), "a wrong code does not");

    let mut group = c.benchmark_group("totp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| b.iter(|| check(black_box(&code))));
    group.bench_function("verify_wrong", |b| b.iter(|| check(black_box(wrong))));
    group.finish();
}

fn passkey(c: &mut Criterion) {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/passkey_assertion.json")).expect("fixture");
    let origin = Url::parse(fixture["origin"].as_str().expect("origin")).expect("origin URL");
    let webauthn =
        webauthn_rs::WebauthnBuilder::new(fixture["rp_id"].as_str().expect("rp_id"), &origin)
            .expect("relying party")
            .build()
            .expect("webauthn");
    let passkey: Passkey = serde_json::from_value(fixture["passkey"].clone()).expect("passkey");
    let state: PasskeyAuthentication =
        serde_json::from_value(fixture["state"].clone()).expect("state");
    let assertion: PublicKeyCredential =
        serde_json::from_value(fixture["assertion"].clone()).expect("assertion");
    let result = webauthn
        .finish_passkey_authentication(&assertion, &state)
        .expect("the captured assertion verifies");
    assert_eq!(result.cred_id(), passkey.cred_id());

    let mut group = c.benchmark_group("passkey");
    group.throughput(Throughput::Elements(1));
    group.bench_function("assertion_verify", |b| {
        b.iter(|| webauthn.finish_passkey_authentication(black_box(&assertion), &state));
    });
    group.finish();
}

criterion_group!(benches, totp, passkey);
criterion_main!(benches);
