//! Access tokens: what /auth/me accepts and every token the contract rejects.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use servauth::store::SigningKeyRecord;

use crate::support::app::{Reply, TestApp};
use crate::support::db::Backend;

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn current_key(app: &TestApp) -> SigningKeyRecord {
    app.store
        .signing_keys(app.clock_now())
        .await
        .unwrap()
        .remove(0)
}

#[track_caller]
fn assert_invalid_token(reply: &Reply, why: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{why}: {:#}",
        reply.body
    );
    assert_eq!(reply.body["code"], "invalid_token", "{why}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "{why}"
    );
}

async fn access_tokens_are_eddsa_jwts_with_the_contracts_claims(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = app.register("ada@example.com").await;
    let token = body["access_token"].as_str().unwrap();
    let header = decode_part(token, 0);
    let key = current_key(&app).await;
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], key.kid.as_str());
    let claims = decode_part(token, 1);
    assert_eq!(claims["iss"], "http://localhost:8080");
    assert_eq!(claims["aud"], "servauth");
    assert_eq!(claims["sub"], body["user"]["id"]);
    assert_eq!(claims["role"], "user");
    assert!(claims["sid"].is_string() && claims["jti"].is_string());
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 900));

    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], key.kid.as_str());
    assert_eq!(keys[0]["x"], URL_SAFE_NO_PAD.encode(&key.public_key));
    assert!(keys[0].get("d").is_none(), "never the private part");
}

async fn me_requires_a_bearer_credential(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let none = app.get("/auth/me", None).await;
    none.assert_problem(401, "missing_credentials");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    for header in ["Basic YWRhOnB3", "Bearer", "Bearer   ", ""] {
        let reply = crate::support::app::read(
            app.client
                .get(app.url("/auth/me"))
                .header("authorization", header)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_problem(401, "missing_credentials");
    }
    assert_invalid_token(&app.get("/auth/me", Some("garbage")).await, "garbage");
}

async fn me_rejects_every_forged_or_unacceptable_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = app.register("ada@example.com").await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let key = current_key(&app).await;
    let claims = decode_part(&token, 1);
    let signing = EncodingKey::from_ed_der(&key.private_key);
    let header = || {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        header
    };
    let sign =
        |header: &Header, claims: &Value| jsonwebtoken::encode(header, claims, &signing).unwrap();
    let with = |field: &str, value: Value| {
        let mut claims = claims.clone();
        claims[field] = value;
        claims
    };
    let without = |field: &str| {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(field);
        claims
    };
    // Sanity: a token we forge the honest way is accepted, so each rejection below is
    // caused by the one thing that differs.
    assert_eq!(
        app.get("/auth/me", Some(&sign(&header(), &claims)))
            .await
            .status,
        StatusCode::OK
    );

    let mut cases: Vec<(&str, String)> = Vec::new();
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    let [h, p, s] = [0, 1, 2].map(|i| token.split('.').nth(i).unwrap().to_owned());
    cases.push((
        "alg none",
        format!("{}.{p}.", encode(&json!({"alg": "none", "typ": "at+jwt"}))),
    ));
    cases.push((
        "alg NoNe",
        format!("{}.{p}.", encode(&json!({"alg": "NoNe", "typ": "at+jwt"}))),
    ));
    let hs_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.public_key)).unwrap()
    };
    cases.push(("HS256 keyed with the public key", hs_with_public_key));
    let mut flipped = s.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    cases.push((
        "bad signature",
        format!("{h}.{p}.{}", String::from_utf8(flipped).unwrap()),
    ));
    cases.push((
        "payload swapped",
        format!("{h}.{}.{s}", encode(&with("role", json!("admin")))),
    ));
    let mut unknown_kid = header();
    unknown_kid.kid = Some("someone-elses-key".into());
    cases.push(("unknown kid", sign(&unknown_kid, &claims)));
    let mut no_kid = header();
    no_kid.kid = None;
    cases.push(("no kid", sign(&no_kid, &claims)));
    let mut embedded_jwk = header();
    embedded_jwk.jwk = Some(
        serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&key.public_key)
        }))
        .unwrap(),
    );
    cases.push(("embedded jwk", sign(&embedded_jwk, &claims)));
    let mut jku = header();
    jku.jku = Some("https://attacker.example/jwks.json".into());
    cases.push(("jku", sign(&jku, &claims)));
    let mut wrong_typ = header();
    wrong_typ.typ = Some("JWT".into());
    cases.push(("typ JWT", sign(&wrong_typ, &claims)));
    let mut no_typ = header();
    no_typ.typ = None;
    cases.push(("no typ", sign(&no_typ, &claims)));
    cases.push((
        "wrong iss",
        sign(&header(), &with("iss", json!("https://evil.example"))),
    ));
    cases.push((
        "wrong aud",
        sign(&header(), &with("aud", json!("another-service"))),
    ));
    for claim in ["exp", "iss", "aud", "sub"] {
        cases.push((claim, sign(&header(), &without(claim))));
    }
    cases.push((
        "string exp",
        sign(&header(), &with("exp", json!(claims["exp"].to_string()))),
    ));
    cases.push(("string nbf", sign(&header(), &with("nbf", json!("0")))));
    let future = claims["iat"].as_i64().unwrap() + 3600;
    cases.push((
        "nbf in the future",
        sign(&header(), &with("nbf", json!(future))),
    ));
    cases.push((
        "sub of another user",
        sign(&header(), &with("sub", json!(uuid::Uuid::now_v7()))),
    ));
    cases.push((
        "unknown sid",
        sign(&header(), &with("sid", json!(uuid::Uuid::now_v7()))),
    ));
    for (why, forged) in &cases {
        assert_invalid_token(&app.get("/auth/me", Some(forged)).await, why);
    }
}

async fn expired_access_tokens_are_token_expired(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    app.clock
        .advance(Duration::minutes(15) + Duration::seconds(30));
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.status,
        StatusCode::OK,
        "within the 30 s leeway"
    );
    app.clock.advance(Duration::seconds(1));
    let reply = app.get("/auth/me", Some(&token)).await;
    reply.assert_problem(401, "token_expired");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
}

async fn tokens_of_a_revoked_session_are_rejected_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = app.register("ada@example.com").await;
    let token = body["access_token"].as_str().unwrap();
    let claims = decode_part(token, 1);
    let user_id = uuid::Uuid::parse_str(claims["sub"].as_str().unwrap()).unwrap();
    let session_id = uuid::Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap();
    let other = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": crate::support::app::PASSWORD}),
        )
        .await;
    let other_token = other.body["access_token"].as_str().unwrap();
    assert!(
        app.store
            .revoke_session(user_id, session_id, app.clock_now())
            .await
            .unwrap()
    );
    assert_invalid_token(&app.get("/auth/me", Some(token)).await, "revoked session");
    assert_eq!(
        app.get("/auth/me", Some(other_token)).await.status,
        StatusCode::OK,
        "other sessions live on"
    );
}

async fn tokens_of_an_expired_session_are_rejected(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with(backend, &["--access-ttl", "2d", "--session-ttl", "1d"]).await
    else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    assert_invalid_token(
        &app.get("/auth/me", Some(&token)).await,
        "session past its lifetime",
    );
}

async fn hs256_mode_signs_with_the_secret_and_publishes_no_key(backend: Backend) {
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let extra = [
        "--jwt-secret",
        secret,
        "--issuer",
        "https://auth.example",
        "--audience",
        "api",
    ];
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    assert_eq!(decode_part(&token, 0)["alg"], "HS256");
    let claims = decode_part(&token, 1);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some("https://auth.example"), Some("api"))
    );
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/.well-known/jwks.json", None).await.body,
        json!({"keys": []})
    );
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let wrong_secret = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!!"),
    )
    .unwrap();
    assert_invalid_token(
        &app.get("/auth/me", Some(&wrong_secret)).await,
        "HS256 with another secret",
    );
    let right_secret = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        app.get("/auth/me", Some(&right_secret)).await.status,
        StatusCode::OK
    );
}

async fn replicas_on_one_database_share_the_signing_key(backend: Backend) {
    let Some(first) = TestApp::spawn(backend).await else {
        return;
    };
    let db_url = first.db_url().to_owned();
    let second = TestApp::spawn_sharing(&first, &db_url).await;
    let token = first.access_token("ada@example.com").await;
    assert_eq!(
        second.get("/auth/me", Some(&token)).await.status,
        StatusCode::OK
    );
    let first_keys = first.get("/.well-known/jwks.json", None).await.body;
    assert_eq!(
        first_keys,
        second.get("/.well-known/jwks.json", None).await.body
    );
}

/// A token signed with the server's own key but living longer than `SERVAUTH_ACCESS_TTL`
/// (what a leaked key would mint), or without `iat`, is refused.
async fn tokens_living_longer_than_the_access_ttl_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = app.register("ada@example.com").await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let key = current_key(&app).await;
    let signing = EncodingKey::from_ed_der(&key.private_key);
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid.clone());
    let sign = |claims: &Value| jsonwebtoken::encode(&header, claims, &signing).unwrap();
    let claims = decode_part(&token, 1);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(
        app.get("/auth/me", Some(&sign(&claims))).await.status,
        StatusCode::OK,
        "the honest claims, re-signed, are accepted"
    );
    let mut long_lived = claims.clone();
    long_lived["exp"] = json!(iat + 365 * 86_400);
    assert_invalid_token(
        &app.get("/auth/me", Some(&sign(&long_lived))).await,
        "a year-long token",
    );
    let mut one_second_over = claims.clone();
    one_second_over["exp"] = json!(iat + 15 * 60 + 1);
    assert_invalid_token(
        &app.get("/auth/me", Some(&sign(&one_second_over))).await,
        "one second over the TTL",
    );
    let mut no_iat = claims.clone();
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_invalid_token(&app.get("/auth/me", Some(&sign(&no_iat))).await, "no iat");
}

crate::support::both_backends!(
    tokens_living_longer_than_the_access_ttl_are_refused,
    access_tokens_are_eddsa_jwts_with_the_contracts_claims,
    me_requires_a_bearer_credential,
    me_rejects_every_forged_or_unacceptable_token,
    expired_access_tokens_are_token_expired,
    tokens_of_a_revoked_session_are_rejected_at_once,
    tokens_of_an_expired_session_are_rejected,
    hs256_mode_signs_with_the_secret_and_publishes_no_key,
    replicas_on_one_database_share_the_signing_key,
);
