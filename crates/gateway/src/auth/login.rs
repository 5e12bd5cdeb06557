//! `POST /api/login`: the users service checks the password (the gateway never sees a hash);
//! the gateway starts a session: an access token and a refresh token. Wrong password and
//! unknown user answer alike; repeated failures are throttled per username and per client IP.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use kit::extract::Json;
use kit::{FieldError, Problem};
use serde::Deserialize;

use super::{accounts, session, throttle};
use crate::server::SharedState;

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    let result = async {
        let attempt = throttle::Attempt::begin(&state, &request.username, peer.ip()).await?;
        let account: accounts::Account = attempt
            .outcome(accounts::check_password(&state, &request.username, &request.password).await)
            .await?;
        let as_of = account.read_at_ms;
        session::start(&state, account.into_subject(), false, as_of).await
    }
    .await;
    match result {
        Ok(pair) => session::respond(pair),
        Err(error) => error.into_response(),
    }
}
