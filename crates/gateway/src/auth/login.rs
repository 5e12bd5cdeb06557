//! `POST /api/login`: the users service checks the password (the gateway never sees a hash);
//! the gateway issues the access token. Wrong password and unknown user answer alike.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use kit::extract::Json;
use kit::{FieldError, PrincipalKind, Problem};
use serde::{Deserialize, Serialize};

use super::tokens::Subject;
use crate::error::GatewayError;
use crate::proxy::forward;
use crate::server::SharedState;

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;
/// The credential check's answer is a few hundred bytes; anything far larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// What the users service says of valid credentials.
#[derive(Deserialize)]
pub struct VerifiedUser {
    id: String,
    username: String,
    role: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl VerifiedUser {
    pub fn into_subject(self) -> Subject {
        Subject {
            id: self.id,
            kind: PrincipalKind::User,
            username: Some(self.username),
            roles: vec![self.role],
            scopes: self.scopes,
        }
    }
}

pub async fn login(
    State(state): State<SharedState>,
    Json(request): Json<LoginRequest>,
) -> Response {
    let mut errors = Vec::new();
    if request.username.trim().is_empty() || request.username.len() > MAX_USERNAME {
        errors.push(FieldError::new(
            "username",
            format!("must be 1 to {MAX_USERNAME} characters"),
        ));
    }
    if request.password.is_empty() || request.password.len() > MAX_PASSWORD {
        errors.push(FieldError::new(
            "password",
            format!("must be 1 to {MAX_PASSWORD} characters"),
        ));
    }
    if !errors.is_empty() {
        return Problem::invalid_fields(errors).into_response();
    }
    match authenticate(&state, &request.username, &request.password).await {
        Ok(user) => issue(&state, user).unwrap_or_else(IntoResponse::into_response),
        Err(error) => error.into_response(),
    }
}

fn issue(state: &SharedState, user: VerifiedUser) -> Result<Response, GatewayError> {
    let issued = state.tokens.issue(user.into_subject())?;
    let body = LoginResponse {
        access_token: issued.token,
        token_type: "bearer",
        expires_in: issued.expires_in,
    };
    // RFC 6749 §5.1: token responses must not be cached.
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response())
}

/// Asks the credentials service whether `username` and `password` match an active user.
pub async fn authenticate(
    state: &SharedState,
    username: &str,
    password: &str,
) -> Result<VerifiedUser, GatewayError> {
    let auth = &state.config.auth;
    let upstream = state
        .upstreams
        .get(&auth.credentials_service)
        .ok_or_else(|| {
            GatewayError::Internal(anyhow::anyhow!(
                "credentials service missing from upstreams"
            ))
        })?;
    let body =
        serde_json::to_vec(&serde_json::json!({ "username": username, "password": password }))
            .map_err(|e| GatewayError::Internal(e.into()))?;
    let mut call = Request::builder()
        .method(Method::POST)
        .uri(upstream.uri_for(&auth.credentials_path)?)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            kit::identity::HEADER,
            state.identities.for_gateway(&upstream.name)?,
        );
    if let Some(context) = kit::request_id::current() {
        if let Ok(id) = HeaderValue::from_str(&context.id) {
            call = call.header(kit::request_id::HEADER, id);
        }
    }
    let call = call
        .body(Body::from(body))
        .map_err(|e| GatewayError::Internal(e.into()))?;
    let response = forward::send(upstream, call, upstream.timeout).await?;
    let status = response.status();
    let bad_answer = || GatewayError::BadGateway {
        service: upstream.name.to_string(),
    };
    match status {
        StatusCode::OK => {
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| bad_answer())?
                .to_bytes();
            serde_json::from_slice(&bytes).map_err(|_| bad_answer())
        }
        // A name that cannot be a username is as unknown as any other: the same answer.
        StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            Err(GatewayError::InvalidCredentials)
        }
        other => {
            tracing::error!(service = %upstream.name, status = other.as_u16(), "credential check failed");
            Err(bad_answer())
        }
    }
}
