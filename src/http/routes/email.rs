//! `POST /auth/email/verify`, `POST /auth/email/resend`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::Services;
use crate::http::{ApiError, ApiJson, Bearer};

#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    token: Option<String>,
}

/// Confirms an address with the token of a verification or email-change link.
pub async fn verify(
    services: Services,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    services.accounts.verify_email(body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn resend(services: Services, bearer: Bearer) -> Result<Response, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services.accounts.resend_verification(&caller).await?;
    let body = json!({ "status": "accepted" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
