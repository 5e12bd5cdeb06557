//! `POST /api/login`: the users service checks the password (the gateway never sees a hash);
//! the gateway starts a session: an access token and a refresh token. Wrong password and
//! unknown user answer alike; repeated failures are throttled (see [`super::throttle`]). A
//! success also hands the client a device token (body field and cookie) for its next sign-in.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kit::extract::Json;
use kit::{FieldError, Problem};
use serde::Deserialize;

use super::session::DeviceGrant;
use super::{device, session, throttle, users};
use crate::app::App;
use crate::error::GatewayError;

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// The device token of an earlier sign-in (else the device cookie is looked at).
    #[serde(default)]
    device_token: Option<String>,
}

pub async fn login(
    State(state): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
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
        state.observe.gateway.sign_in("invalid_request");
        return Problem::invalid_fields(errors).into_response();
    }
    let result = async {
        // Anything but a valid token for this username is no token: an unknown device.
        let device = device::presented(request.device_token.as_deref(), &headers)
            .and_then(|token| state.devices.verify(token, &request.username));
        let attempt =
            throttle::Attempt::begin(&state, &request.username, peer.ip(), device).await?;
        let account: users::Account = attempt
            .outcome(users::check_password(&state, &request.username, &request.password).await)
            .await?;
        let as_of = account.read_at_ms;
        let pair = session::start(&state, account.into_subject(), false, as_of).await?;
        Ok::<_, GatewayError>((pair, DeviceGrant::issue(&state, &request.username)))
    }
    .await;
    state.observe.gateway.sign_in(match &result {
        Ok(_) => "signed_in",
        Err(error) => error.reason(),
    });
    match result {
        Ok((pair, device)) => session::respond_signed_in(pair, Some(device)),
        Err(error) => error.into_response(),
    }
}
