//! `GET /openapi.json` and `GET /docs`: the OpenAPI document and the reference page rendered
//! from it, both made once, when the router is built.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;

use crate::http::reference::ReferencePage;

/// The served forms of the document, shared by every request.
#[derive(Clone)]
pub struct ApiReference(Arc<Rendered>);

struct Rendered {
    json: Bytes,
    html: Bytes,
    csp: HeaderValue,
}

impl ApiReference {
    pub fn new(api: &OpenApi) -> Self {
        let page = ReferencePage::render(api);
        Self(Arc::new(Rendered {
            // Neither can fail: the document has string keys only, the policy is ASCII.
            json: serde_json::to_vec(api).unwrap_or_default().into(),
            html: page.html.into(),
            csp: HeaderValue::from_str(&page.csp)
                .unwrap_or(HeaderValue::from_static("default-src 'none'")),
        }))
    }
}

/// The OpenAPI document
///
/// This document: every route of the server, generated from the code that serves them.
#[utoipa::path(get, path = "/openapi.json", tag = "reference",
    responses((status = 200, description = "An OpenAPI 3.1 document.",
        body = serde_json::Value, content_type = "application/json")))]
pub async fn get_openapi(Extension(reference): Extension<ApiReference>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    (
        [(header::CONTENT_TYPE, content_type)],
        reference.0.json.clone(),
    )
        .into_response()
}

/// The API reference page
///
/// This document as a web page, for people. Plain HTML: no script, nothing loaded from
/// elsewhere.
#[utoipa::path(get, path = "/docs", tag = "reference",
    responses((status = 200, description = "An HTML page.", body = String,
        content_type = "text/html")))]
pub async fn get_docs(Extension(reference): Extension<ApiReference>) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CONTENT_SECURITY_POLICY, reference.0.csp.clone()),
    ];
    (headers, reference.0.html.clone()).into_response()
}
