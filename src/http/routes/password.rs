//! `POST /auth/password/forgot`, `/auth/password/reset`, `/auth/password/change`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::app::Services;
use crate::http::{ApiError, ApiJson, Bearer};

#[derive(Debug, Deserialize)]
pub struct ForgotRequest {
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ResetRequest {
    token: Option<String>,
    password: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
pub struct ChangeRequest {
    current_password: Option<SecretString>,
    new_password: Option<SecretString>,
}

/// Always the same 202 for a well-formed address, whether or not it has an account.
pub async fn forgot(
    services: Services,
    ApiJson(body): ApiJson<ForgotRequest>,
) -> Result<Response, ApiError> {
    services.accounts.forgot_password(body.email)?;
    let body = json!({
        "status": "accepted",
        "detail": "If an account has this address, a link to reset its password is on its way.",
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn reset(
    services: Services,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    services
        .accounts
        .reset_password(body.token, body.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn change(
    services: Services,
    bearer: Bearer,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = services.sessions.authenticate(bearer.token()).await?;
    services
        .accounts
        .change_password(&caller, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
