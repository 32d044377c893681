//! Answers the contract allows, for requests a fuzzer cannot send.

use reqwest::Method;

use crate::support::app::{TestApp, read};
use crate::support::db::Backend;

const SECRET: &str = "service-secret-service-secret-0123456789";

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

crate::support::both_backends!(malformed_path_ids_get_the_documented_problems);
