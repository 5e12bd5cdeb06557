//! `POST /api/login`: the users service checks the password (the gateway never sees a hash);
//! the gateway starts a session: an access token and a refresh token. Wrong password and
//! unknown user answer alike; repeated failures are throttled (see [`super::throttle`]). A
//! success also hands the client a device token (body field and cookie) for its next sign-in.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kit::extract::Json;
use kit::fields::{Field, Fields};
use kit::Problem;
use serde::Deserialize;

use super::session::DeviceGrant;
use super::{device, session, throttle, users};
use crate::app::App;
use crate::error::GatewayError;

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

/// `{"username", "password", "device_token"?}` as sent: every member is read, so one 422 lists
/// every bad one. Other members are ignored, as they always were at sign-in.
#[derive(Default, Deserialize)]
#[serde(default, expecting = "an object with `username` and `password`")]
pub struct LoginRequest {
    username: Field<String>,
    password: Field<String>,
    /// The device token of an earlier sign-in (else the device cookie is looked at).
    device_token: Field<String>,
}

/// A sign-in whose members all passed their checks.
struct Credentials {
    username: String,
    password: String,
    device_token: Option<String>,
}

impl LoginRequest {
    /// The credentials, or the 422 naming every member that is missing, mistyped or too long.
    fn check(self) -> Result<Credentials, Problem> {
        let mut fields = Fields::default();
        let username = fields
            .required("username", self.username)
            .and_then(|name| fields.check("username", within(name, MAX_USERNAME, false)));
        let password = fields
            .required("password", self.password)
            .and_then(|password| fields.check("password", within(password, MAX_PASSWORD, true)));
        // Left out is none; `null` is a value of the wrong type, as the document says.
        let device_token = fields.not_null("device_token", self.device_token);
        // Each required one is `None` exactly when it had an error; past both checks, every
        // member is valid.
        let (Some(username), Some(password)) = (username, password) else {
            return Err(fields.into_problem());
        };
        fields.finish()?;
        Ok(Credentials {
            username,
            password,
            device_token,
        })
    }
}

/// `text` if it has 1 to `max` characters (as JSON Schema's `maxLength` counts them, so the
/// document's limits are these), and something besides blanks unless `blank_allowed` (a
/// password may be all spaces; a username may not).
fn within(text: String, max: usize, blank_allowed: bool) -> Result<String, String> {
    let length = text.chars().count();
    if length == 0 || length > max {
        Err(format!("must be 1 to {max} characters"))
    } else if !blank_allowed && text.trim().is_empty() {
        Err("must not be blank".to_owned())
    } else {
        Ok(text)
    }
}

pub async fn login(
    State(state): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Response {
    let request = match request.check() {
        Ok(credentials) => credentials,
        Err(problem) => {
            state.observe.gateway.sign_in("invalid_request");
            return problem.into_response();
        }
    };
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The members a sign-in body's 422 names, in order.
    fn refused(body: &str) -> Vec<String> {
        let request: LoginRequest = serde_json::from_str(body).unwrap();
        let problem = request
            .check()
            .err()
            .unwrap_or_else(|| panic!("{body} passed"));
        super::super::listed_errors(&problem)
    }

    #[test]
    fn one_refusal_lists_every_bad_member_of_a_sign_in() {
        let long_name = "n".repeat(MAX_USERNAME + 1);
        let long_password = "p".repeat(MAX_PASSWORD + 1);
        let cases: [(&str, &[&str]); 6] = [
            ("{}", &["username: is required", "password: is required"]),
            (
                r#"{"username": 1, "password": null, "device_token": 42}"#,
                &[
                    "username: must be a string",
                    "password: is required",
                    "device_token: must be a string",
                ],
            ),
            (
                r#"{"username": "   ", "password": "", "device_token": null}"#,
                &[
                    "username: must not be blank",
                    "password: must be 1 to 1024 characters",
                    "device_token: must not be null",
                ],
            ),
            (
                &format!(r#"{{"username": "{long_name}", "password": "{long_password}"}}"#),
                &[
                    "username: must be 1 to 256 characters",
                    "password: must be 1 to 1024 characters",
                ],
            ),
            (
                r#"{"username": ["admin"], "password": {"is": "a"}}"#,
                &["username: must be a string", "password: must be a string"],
            ),
            (
                r#"{"username": "admin", "password": true}"#,
                &["password: must be a string"],
            ),
        ];
        for (body, listed) in cases {
            assert_eq!(refused(body), listed, "{body}");
        }
    }

    #[test]
    fn a_sign_in_may_carry_a_blank_password_a_device_token_and_members_it_does_not_know() {
        let request: LoginRequest = serde_json::from_str(
            r#"{"username": "admin", "password": "   ", "device_token": "d", "remember": true}"#,
        )
        .unwrap();

        let credentials = request
            .check()
            .unwrap_or_else(|problem| panic!("{problem:?}"));

        assert_eq!(credentials.username, "admin");
        assert_eq!(credentials.password, "   ", "a password is taken as typed");
        assert_eq!(credentials.device_token.as_deref(), Some("d"));
    }

    #[test]
    fn lengths_are_counted_in_characters_as_the_document_counts_them() {
        // 256 and 1024 characters of four bytes each: within the document's `maxLength`.
        let body =
            json!({ "username": "𝔞".repeat(MAX_USERNAME), "password": "🔑".repeat(MAX_PASSWORD) });
        let request: LoginRequest = serde_json::from_value(body).unwrap();
        assert!(request.check().is_ok());

        let body = json!({ "username": "𝔞".repeat(MAX_USERNAME + 1), "password": "🔑" });
        assert_eq!(
            refused(&body.to_string()),
            ["username: must be 1 to 256 characters"]
        );
    }
}
