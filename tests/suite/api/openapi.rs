//! `GET /openapi.json` and `GET /docs`: the document covers the contract's endpoint table and
//! nothing else, every operation documents the problems it can answer, the security schemes
//! are declared, and the reference page shows every path without loading anything.

use std::collections::BTreeSet;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::app::{PASSWORD, TestApp, read};
use crate::support::db::Backend;

const SECRET: &str = "service-secret-service-secret-0123456789";

/// The endpoint table of the contract (API.md), one method at a time.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("get", "/auth/me"),
    ("put", "/auth/me"),
    ("patch", "/auth/me"),
    ("delete", "/auth/me"),
    ("post", "/auth/password/forgot"),
    ("post", "/auth/password/reset"),
    ("post", "/auth/password/change"),
    ("post", "/auth/email/verify"),
    ("post", "/auth/email/resend"),
    ("get", "/auth/sessions"),
    ("delete", "/auth/sessions/{id}"),
    ("delete", "/auth/sessions"),
    ("get", "/admin/users"),
    ("post", "/admin/users"),
    ("get", "/admin/users/{id}"),
    ("patch", "/admin/users/{id}"),
    ("delete", "/admin/users/{id}"),
    ("post", "/admin/users/{id}/ban"),
    ("post", "/admin/users/{id}/unban"),
    ("get", "/admin/users/{id}/sessions"),
    ("delete", "/admin/users/{id}/sessions"),
    ("delete", "/admin/users/{id}/sessions/{session_id}"),
    ("post", "/admin/users/{id}/password-reset"),
    ("get", "/admin/audit"),
    ("get", "/admin/outbox"),
    ("post", "/api/internal/validate"),
    ("get", "/api/internal/users/{id}"),
    ("get", "/api/internal/authorize"),
    ("get", "/auth/mfa"),
    ("post", "/auth/mfa/totp"),
    ("delete", "/auth/mfa/totp"),
    ("post", "/auth/mfa/totp/confirm"),
    ("post", "/auth/mfa/recovery-codes"),
    ("post", "/auth/mfa/verify"),
    ("post", "/auth/mfa/webauthn/options"),
    ("post", "/auth/reauthenticate"),
    ("get", "/auth/passkeys"),
    ("post", "/auth/passkeys/registration/options"),
    ("post", "/auth/passkeys/registration"),
    ("patch", "/auth/passkeys/{id}"),
    ("delete", "/auth/passkeys/{id}"),
    ("post", "/auth/passkeys/login/options"),
    ("post", "/auth/passkeys/login"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/health"),
    ("get", "/live"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
];

/// The problem statuses each operation documents: what the contract says it can answer.
const PROBLEMS: &[(&str, &[u16])] = &[
    ("create_account", &[400, 408, 409, 413, 415, 422, 429, 503]),
    (
        "create_session",
        &[400, 401, 403, 408, 413, 415, 422, 429, 503],
    ),
    (
        "refresh_session",
        &[400, 401, 403, 408, 413, 415, 422, 429, 503],
    ),
    (
        "revoke_current_session",
        &[400, 401, 403, 408, 413, 415, 422, 503],
    ),
    ("get_me", &[401, 403, 503]),
    (
        "put_me",
        &[400, 401, 403, 408, 409, 413, 415, 422, 429, 503],
    ),
    (
        "update_me",
        &[400, 401, 403, 408, 409, 413, 415, 422, 429, 503],
    ),
    ("delete_me", &[400, 401, 403, 408, 413, 415, 422, 429, 503]),
    (
        "request_password_reset",
        &[400, 408, 413, 415, 422, 429, 503],
    ),
    ("reset_password", &[400, 408, 413, 415, 422, 429, 503]),
    (
        "change_password",
        &[400, 401, 403, 408, 413, 415, 422, 429, 503],
    ),
    ("verify_email", &[400, 408, 409, 413, 415, 422, 429, 503]),
    (
        "resend_verification_email",
        &[400, 401, 408, 413, 415, 422, 429, 503],
    ),
    ("list_sessions", &[401, 503]),
    ("revoke_session", &[401, 404, 503]),
    ("revoke_all_sessions", &[401, 503]),
    ("validate_token", &[400, 401, 404, 408, 413, 415, 422, 503]),
    ("get_user", &[401, 404, 503]),
    ("authorize_request", &[401, 403, 404, 503]),
    ("list_users", &[401, 403, 422, 503]),
    (
        "create_user",
        &[400, 401, 403, 408, 409, 413, 415, 422, 503],
    ),
    ("show_user", &[401, 403, 404, 503]),
    (
        "update_user",
        &[400, 401, 403, 404, 408, 409, 413, 415, 422, 503],
    ),
    ("delete_user", &[401, 403, 404, 409, 503]),
    (
        "ban_user",
        &[400, 401, 403, 404, 408, 409, 413, 415, 422, 503],
    ),
    ("unban_user", &[401, 403, 404, 503]),
    ("list_user_sessions", &[401, 403, 404, 503]),
    ("revoke_user_sessions", &[401, 403, 404, 503]),
    ("revoke_user_session", &[401, 403, 404, 503]),
    ("send_password_reset", &[401, 403, 404, 503]),
    ("list_audit_events", &[401, 403, 422, 503]),
    ("get_outbox", &[401, 403, 503]),
    ("get_factors", &[401, 503]),
    ("enroll_totp", &[401, 403, 409, 503]),
    (
        "disable_totp",
        &[400, 401, 403, 404, 408, 413, 415, 422, 429, 503],
    ),
    (
        "confirm_totp",
        &[400, 401, 403, 408, 409, 413, 415, 422, 429, 503],
    ),
    ("regenerate_recovery_codes", &[401, 403, 409, 503]),
    (
        "verify_second_factor",
        &[400, 401, 403, 408, 413, 415, 422, 429, 503],
    ),
    (
        "start_passkey_second_factor",
        &[400, 401, 404, 408, 409, 413, 415, 422, 503],
    ),
    (
        "reauthenticate_session",
        &[400, 401, 403, 408, 413, 415, 422, 429, 503],
    ),
    ("list_passkeys", &[401, 503]),
    (
        "start_passkey_registration",
        &[401, 403, 404, 409, 429, 503],
    ),
    (
        "finish_passkey_registration",
        &[400, 401, 404, 408, 409, 413, 415, 422, 429, 503],
    ),
    ("rename_passkey", &[400, 401, 404, 408, 413, 415, 422, 503]),
    ("delete_passkey", &[401, 403, 404, 503]),
    ("start_passkey_login", &[404, 429, 503]),
    (
        "finish_passkey_login",
        &[400, 403, 404, 408, 413, 415, 422, 429, 503],
    ),
    ("get_jwks", &[503]),
    ("get_health", &[]),
    ("get_liveness", &[]),
    ("get_readiness", &[503]),
    ("get_metrics", &[]),
    ("get_openapi", &[]),
    ("get_docs", &[]),
];

async fn document(app: &TestApp) -> Value {
    let reply = app.get("/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.body
}

/// `(method, path, operation)` for every operation of the document.
fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            found.push((method.clone(), path.clone(), operation));
        }
    }
    found
}

/// A response, with a `$ref` to the document's reusable responses followed.
fn resolve<'a>(document: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("unexpected response reference {reference}"));
            &document["components"]["responses"][name]
        }
        None => response,
    }
}

async fn the_document_is_openapi_3_1_and_lists_exactly_the_contracts_endpoints(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "servauth");
    assert!(document["info"]["version"].is_string());

    let documented: BTreeSet<(String, String)> = operations(&document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let contract: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        documented, contract,
        "documented operations vs the contract"
    );

    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{method} {path}: operationId {id:?} twice"
        );
        let (verb, resource) = id.split_once('_').unwrap_or_default();
        assert!(
            !verb.is_empty() && !resource.is_empty(),
            "{id}: <verb>_<resource>"
        );
        for field in ["summary", "description"] {
            assert!(operation[field].is_string(), "{method} {path}: no {field}");
        }
        assert!(
            operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.len() == 1),
            "{method} {path}: one tag"
        );
        let success = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|status| status.starts_with('2'))
            .count();
        assert_eq!(success, 1, "{method} {path}: one success status");
    }
}

async fn every_operation_documents_its_problem_responses(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let document = document(&app).await;
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap();
        let expected = PROBLEMS
            .iter()
            .find(|(operation_id, _)| *operation_id == id)
            .unwrap_or_else(|| panic!("{id} is not in PROBLEMS"))
            .1;
        let responses = operation["responses"].as_object().unwrap();
        let problems: Vec<u16> = responses
            .keys()
            .map(|status| status.parse::<u16>().unwrap())
            .filter(|status| *status >= 400)
            .collect();
        assert_eq!(problems, expected, "{method} {path} ({id})");

        if operation.get("requestBody").is_some() {
            for status in ["400", "408", "413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{id}: a body can get {status}"
                );
            }
        }
        for (status, response) in responses.iter().filter(|(s, _)| s.as_str() >= "400") {
            let response = resolve(&document, response);
            if id == "get_readiness" {
                // Not a problem: the readiness report itself, with what is down.
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/Readiness");
                continue;
            }
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| d.contains('`')),
                "{id} {status}: the codes it stands for"
            );
            let schema = response["content"]["application/problem+json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} {status}: not application/problem+json"));
            let expected_schema = if status == "422" {
                "#/components/schemas/ValidationProblem"
            } else {
                "#/components/schemas/Problem"
            };
            assert_eq!(schema, expected_schema, "{id} {status}");
            if status == "401" {
                assert!(
                    response["headers"]["WWW-Authenticate"].is_object(),
                    "{id}: 401 names its challenge"
                );
            }
            if status == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{id}: 503 says when to retry"
                );
            }
        }
    }

    let problem = &document["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["type", "title", "status", "code", "detail"])
    );
    for field in ["errors", "request_id"] {
        assert!(problem["properties"][field].is_object(), "Problem.{field}");
    }
    let validation = &document["components"]["schemas"]["ValidationProblem"]["allOf"];
    assert_eq!(validation[0]["$ref"], "#/components/schemas/Problem");
    assert_eq!(validation[1]["required"], json!(["errors"]));
}

async fn the_security_schemes_are_declared_and_used(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let document = document(&app).await;
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    for (name, place, key) in [
        ("refresh_cookie", "cookie", "servauth_refresh"),
        ("csrf_token", "header", "X-CSRF-Token"),
        ("service_auth", "header", "X-Service-Auth"),
    ] {
        assert_eq!(schemes[name]["type"], "apiKey", "{name}");
        assert_eq!(schemes[name]["in"], place, "{name}");
        assert_eq!(schemes[name]["name"], key, "{name}");
    }

    let security = |method: &str, path: &str| document["paths"][path][method]["security"].clone();
    let bearer = json!([{"bearer": []}]);
    for (method, path) in [
        ("get", "/auth/me"),
        ("patch", "/auth/me"),
        ("delete", "/auth/me"),
        ("post", "/auth/password/change"),
        ("get", "/auth/sessions"),
        ("delete", "/auth/sessions/{id}"),
        ("delete", "/auth/sessions"),
    ] {
        assert_eq!(security(method, path), bearer, "{method} {path}");
    }
    let cookie = json!({"refresh_cookie": [], "csrf_token": []});
    let refresh = security("post", "/auth/refresh");
    assert_eq!(refresh, json!([cookie, {}]), "cookie and CSRF, or a body");
    let resend = security("post", "/auth/email/resend");
    assert_eq!(
        resend,
        json!([{"bearer": []}, {}]),
        "a bearer token, or an address"
    );
    let verify = security("post", "/auth/email/verify");
    assert_eq!(
        verify,
        json!([{}, {"bearer": []}]),
        "the link; a bearer keeps its session"
    );
    let logout = security("post", "/auth/logout");
    assert_eq!(logout, json!([{"bearer": []}, cookie, {}]));
    for path in ["/api/internal/validate", "/api/internal/users/{id}"] {
        let method = if path.ends_with("validate") {
            "post"
        } else {
            "get"
        };
        assert_eq!(security(method, path), json!([{"service_auth": []}]));
    }
    assert_eq!(
        security("get", "/api/internal/authorize"),
        json!([{"service_auth": [], "bearer": []}]),
        "the gateway's secret with the original request's bearer"
    );
    for (method, path) in [
        ("post", "/auth/register"),
        ("post", "/auth/login"),
        ("get", "/health"),
    ] {
        assert!(
            security(method, path).is_null(),
            "{method} {path} is public"
        );
    }
}

/// The internal routes are documented whether or not they are mounted, and the document is
/// the same either way.
async fn internal_routes_are_documented_even_when_not_mounted(backend: Backend) {
    let Some(without) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(with) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let unmounted = document(&without).await;
    assert!(unmounted["paths"]["/api/internal/validate"]["post"].is_object());
    assert!(unmounted["paths"]["/api/internal/users/{id}"]["get"].is_object());
    assert!(unmounted["paths"]["/api/internal/authorize"]["get"].is_object());
    let description = unmounted["paths"]["/api/internal/validate"]["post"]["description"]
        .as_str()
        .unwrap();
    assert!(
        description.contains("SERVAUTH_INTERNAL_SECRET"),
        "{description}"
    );
    without
        .post("/api/internal/validate", json!({"token": "x"}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(document(&with).await, unmounted);
}

async fn the_reference_page_shows_every_operation_and_loads_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let document = document(&app).await;
    let reply = app.get("/docs", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = reply.body.as_str().expect("an HTML body");
    assert!(html.starts_with("<!doctype html>"));
    for (method, path) in CONTRACT {
        assert!(
            html.contains(&format!("<code class=\"path\">{path}</code>")),
            "{path}"
        );
        let id = document["paths"][path][method]["operationId"]
            .as_str()
            .unwrap();
        assert!(html.contains(&format!("id=\"op-{id}\"")), "{id}");
    }
    assert_eq!(
        html.matches("<h3 class=\"operation\">").count(),
        CONTRACT.len()
    );
    for name in document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            html.contains(&format!("id=\"schema-{name}\"")),
            "schema {name}"
        );
    }
    for code in [
        "invalid_json",
        "validation_failed",
        "refresh_token_reused",
        "csrf_failed",
    ] {
        assert!(html.contains(code), "{code}");
    }

    // Nothing from elsewhere: no script, no external reference, and a policy that lets only
    // the page's own stylesheet apply.
    for absent in ["<script", "src=", "http://", "https://", "<link"] {
        assert!(!html.contains(absent), "{absent}");
    }
    let style = html
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .expect("an inline stylesheet")
        .0;
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style.as_bytes()));
    let policy = reply.header("content-security-policy").unwrap();
    assert_eq!(
        policy,
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        )
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
}

/// `value` has every field `schema` requires and none it does not name.
#[track_caller]
fn assert_fields(document: &Value, schema: &str, value: &Value) {
    let schema_body = &document["components"]["schemas"][schema];
    let names = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default()
    };
    let documented = names(&schema_body["properties"]);
    let required: BTreeSet<String> = schema_body["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    let present = names(value);
    assert!(!present.is_empty(), "{schema}: not an object: {value}");
    assert!(
        present.is_subset(&documented),
        "{schema}: undocumented fields in {value}"
    );
    assert!(
        required.is_subset(&present),
        "{schema}: required fields missing from {value}"
    );
}

/// What the server sends has the documented shape (Schemathesis checks every body against the
/// document; this keeps the suite honest on its own).
async fn answers_have_the_documented_fields(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let document = document(&app).await;
    let native = app.register("ada@example.com").await;
    assert_fields(&document, "SessionBody", &native);
    assert_fields(&document, "User", &native["user"]);
    // The display name and picture (issue 16): shown on the user, taken by PUT/PATCH /auth/me.
    let schemas = &document["components"]["schemas"];
    for field in ["name", "image"] {
        assert!(
            schemas["User"]["properties"][field].is_object(),
            "User.{field}"
        );
        assert!(
            schemas["UpdateMeRequest"]["properties"][field].is_object(),
            "UpdateMeRequest.{field}"
        );
        assert_eq!(native["user"][field], Value::Null, "unset: null");
    }
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    let browser = app.post("/auth/login", login).await;
    assert_fields(&document, "SessionBody", &browser.body);
    let token = native["access_token"].as_str().unwrap();

    assert_fields(
        &document,
        "User",
        &app.get("/auth/me", Some(token)).await.body,
    );
    let sessions = app.get("/auth/sessions", Some(token)).await.body;
    assert_fields(&document, "SessionList", &sessions);
    for session in sessions["sessions"].as_array().unwrap() {
        assert_fields(&document, "Session", session);
    }
    let jwks = app.get("/.well-known/jwks.json", None).await.body;
    assert_fields(&document, "JwkSet", &jwks);
    for key in jwks["keys"].as_array().unwrap() {
        assert_fields(&document, "Jwk", key);
    }
    assert_fields(&document, "Up", &app.get("/health", None).await.body);
    assert_fields(&document, "Up", &app.get("/live", None).await.body);
    assert_fields(&document, "Readiness", &app.get("/ready", None).await.body);
    let forgot = app
        .post("/auth/password/forgot", json!({"email": "ada@example.com"}))
        .await;
    assert_fields(&document, "Accepted", &forgot.body);

    let validate = |token: &str| {
        let request = app
            .client
            .post(app.url("/api/internal/validate"))
            .header("x-service-auth", SECRET)
            .json(&json!({"token": token}));
        async move { read(request.send().await.unwrap()).await.body }
    };
    assert_fields(&document, "ActiveToken", &validate(token).await);
    assert_fields(&document, "InactiveToken", &validate("garbage").await);
    let user = app.url(&format!(
        "/api/internal/users/{}",
        native["user"]["id"].as_str().unwrap()
    ));
    let user = read(
        app.client
            .get(user)
            .header("x-service-auth", SECRET)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_fields(&document, "User", &user.body);

    let invalid = app.post("/auth/register", json!({"email": "nope"})).await;
    assert_fields(&document, "Problem", &invalid.body);
    for error in invalid.body["errors"].as_array().unwrap() {
        assert_fields(&document, "FieldError", error);
    }
}

/// Path ids that are not UUIDs, not even UTF-8 once percent-decoded, get the documented `404`
/// problem once the credentials pass (and `401` before), never a plain-text `400` from the
/// router. Schemathesis cannot send these: it only generates valid text.
async fn malformed_path_ids_get_the_documented_problems(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &["--internal-secret", SECRET]).await else {
        return;
    };
    let token = app.access_token("ada@example.com").await;
    for id in ["%FF", "%C3%28", "not-a-uuid", "%00"] {
        let path = format!("/auth/sessions/{id}");
        let reply = app.send(Method::DELETE, &path, None, Some(&token)).await;
        reply.assert_problem(404, "not_found");
        let reply = app.send(Method::DELETE, &path, None, None).await;
        reply.assert_problem(401, "missing_credentials");

        let url = app.url(&format!("/api/internal/users/{id}"));
        let reply = read(
            app.client
                .get(&url)
                .header("x-service-auth", SECRET)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_problem(404, "not_found");
        let reply = read(app.client.get(&url).send().await.unwrap()).await;
        reply.assert_problem(401, "missing_credentials");
    }
}

crate::support::both_backends!(
    malformed_path_ids_get_the_documented_problems,
    answers_have_the_documented_fields,
    the_document_is_openapi_3_1_and_lists_exactly_the_contracts_endpoints,
    every_operation_documents_its_problem_responses,
    the_security_schemes_are_declared_and_used,
    internal_routes_are_documented_even_when_not_mounted,
    the_reference_page_shows_every_operation_and_loads_nothing,
);
