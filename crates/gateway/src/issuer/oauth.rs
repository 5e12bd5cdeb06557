//! `POST /api/oauth/token` (RFC 6749): the token endpoint for standard OAuth 2.0 clients.
//! `client_credentials` (§4.4) for machine clients, `password` (§4.3) for first-party apps,
//! `refresh_token` (§6) to renew a session.
//! Errors are RFC 6749 §5.2 bodies (`{"error","error_description"}`), as OAuth libraries expect.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kit::PrincipalKind;
use serde::Serialize;

use super::clients::{self, Client};
use super::session::{self, RenewError};
use super::{throttle, users};
use crate::app::App;
use crate::auth::tokens::{IssuedToken, Subject};
use crate::error::GatewayError;

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    code: &'static str,
    description: String,
    /// The client authenticated with HTTP Basic: a 401 then carries the Basic challenge.
    basic_challenge: bool,
    /// Sign-ins are throttled: when to try again.
    retry_after: Option<std::time::Duration>,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    fn invalid_client(basic: bool) -> Self {
        Self {
            basic_challenge: basic,
            ..Self::new("invalid_client", "Client authentication failed.")
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ if self.retry_after.is_some() => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({ "error": self.code, "error_description": self.description });
        let mut response = (status, no_store(), axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
        }
        response
    }
}

fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// A body the endpoint could not take (too large, stalled, broken) as an RFC 6749 §5.2 error,
/// with the status that says why (413, 408, 400) rather than a bare 400.
pub fn refused_body(error: &GatewayError) -> Response {
    let body =
        serde_json::json!({ "error": "invalid_request", "error_description": error.to_string() });
    let mut response = (error.status(), no_store(), axum::Json(body)).into_response();
    if error.leaves_body_unread() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

/// The form's parameters; each may appear at most once (RFC 6749 §3.2).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "The body must be application/x-www-form-urlencoded.",
            ));
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(other, _)| other == name) {
                return Err(OAuthError::invalid_request(format!(
                    "The parameter `{name}` is repeated."
                )));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| {
            OAuthError::invalid_request(format!("The parameter `{name}` is missing."))
        })
    }
}

/// How the client presented its credentials, if it did.
enum ClientCredentials {
    None,
    Basic { id: String, secret: String },
    Form { id: String, secret: String },
}

impl ClientCredentials {
    fn from_request(headers: &HeaderMap, form: &Form) -> Result<Self, OAuthError> {
        let basic = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                Some(basic_credentials(value).ok_or_else(|| OAuthError::invalid_client(true))?)
            }
        };
        let in_form = form
            .get("client_secret")
            .map(|secret| (form.get("client_id"), secret));
        match (basic, in_form) {
            (Some(_), Some(_)) => Err(OAuthError::invalid_request(
                "Use one way to authenticate the client: Basic or the form, not both.",
            )),
            (Some((id, secret)), None) => Ok(Self::Basic { id, secret }),
            (None, Some((Some(id), secret))) => Ok(Self::Form {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            (None, Some((None, _))) => Err(OAuthError::invalid_request(
                "The parameter `client_id` is missing.",
            )),
            (None, None) => Ok(Self::None),
        }
    }

    async fn authenticate(self, state: &App) -> Result<Option<Client>, OAuthError> {
        let (id, secret, basic) = match self {
            Self::None => return Ok(None),
            Self::Basic { id, secret } => (id, secret, true),
            Self::Form { id, secret } => (id, secret, false),
        };
        match clients::authenticate(&state.store, &id, &secret).await {
            Ok(Some(client)) => Ok(Some(client)),
            Ok(None) => {
                tracing::info!(client.id = %id, "client authentication failed");
                Err(OAuthError::invalid_client(basic))
            }
            Err(error) if kit::outage::caused_by_outage(&error) => Err(store_unavailable(&error)),
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "client lookup failed");
                Err(OAuthError::new(
                    "server_error",
                    "The client could not be checked; try again.",
                ))
            }
        }
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |part: &str| {
        form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

pub async fn token(
    State(state): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match grant(&state, peer.ip(), &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn grant(
    state: &App,
    peer: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = Form::parse(headers, body)?;
    let grant_type = form.require("grant_type")?;
    let credentials = ClientCredentials::from_request(headers, &form)?;
    match grant_type {
        "client_credentials" => {
            let client = credentials.authenticate(state).await?.ok_or_else(|| OAuthError::invalid_client(false))?;
            let scopes = granted_scopes(form.get("scope"), &client.scopes)?;
            let subject = Subject { id: client.id, kind: PrincipalKind::Client, username: None, roles: Vec::new(), scopes };
            // No refresh token for a client (RFC 6749 §4.4.3): it asks again with its secret.
            let issued = state.auth.tokens.issue(subject, None).map_err(upstream_failure)?;
            Ok(respond(issued))
        }
        "password" => {
            // A confidential client that authenticates must do so correctly; a public one may not.
            credentials.authenticate(state).await?;
            let username = form.require("username")?;
            let password = form.require("password")?;
            let device = form.get("device_token").and_then(|token| state.devices.verify(token, username));
            let signed_in = async {
                let attempt = throttle::Attempt::begin(state, username, peer, device).await?;
                attempt.outcome(users::check_password(state, username, password).await).await
            }
            .await;
            state.observe.gateway.sign_in(match &signed_in {
                Ok(_) => "signed_in",
                Err(error) => error.reason(),
            });
            let account = match signed_in {
                Ok(account) => account,
                Err(GatewayError::InvalidCredentials) => {
                    return Err(OAuthError::new("invalid_grant", "Invalid username or password."))
                }
                Err(other) => return Err(upstream_failure(other)),
            };
            let scopes = granted_scopes(form.get("scope"), &account.scopes)?;
            let narrowed = scopes.len() < account.scopes.len();
            let as_of = account.read_at_ms;
            let mut subject = account.into_subject();
            subject.scopes = scopes;
            let session = session::start(state, subject, narrowed, as_of).await.map_err(upstream_failure)?;
            // An OAuth client is no browser: the device token in the answer, no cookie.
            let device = session::DeviceGrant { cookie: None, ..session::DeviceGrant::issue(state, username) };
            Ok(session::respond_signed_in(session, Some(device)))
        }
        "refresh_token" => {
            credentials.authenticate(state).await?;
            let presented = form.require("refresh_token")?;
            if form.get("scope").is_some() {
                return Err(OAuthError::new("invalid_scope", "A refresh keeps the session's scopes; omit `scope`."));
            }
            match session::renew(state, presented).await {
                Ok(session) => Ok(session::respond(session)),
                Err(RenewError::Refused(reason)) => Err(OAuthError::new("invalid_grant", reason)),
                Err(RenewError::Failed(error)) => Err(upstream_failure(error)),
            }
        }
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("The grant type {other:?} is not supported; use client_credentials, password or refresh_token."),
        )),
    }
}

/// The requested scopes when all are allowed; every allowed scope when none is requested.
fn granted_scopes(requested: Option<&str>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let requested = clients::parse_scopes(requested)
        .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    match requested.iter().find(|scope| !allowed.contains(scope)) {
        Some(scope) => Err(OAuthError::new(
            "invalid_scope",
            format!("The scope {scope:?} is not granted to this caller."),
        )),
        None => Ok(requested),
    }
}

fn upstream_failure(error: GatewayError) -> OAuthError {
    match error {
        GatewayError::TooManyAttempts { retry_after } => OAuthError {
            retry_after: Some(retry_after),
            ..OAuthError::new(
                "invalid_grant",
                "Too many failed attempts; try again later.",
            )
        },
        GatewayError::Unavailable { .. } | GatewayError::Timeout { .. } | GatewayError::Busy => {
            OAuthError::new(
                "temporarily_unavailable",
                "The credential check is unavailable; try again.",
            )
        }
        GatewayError::StoreUnavailable(cause) => store_unavailable(&cause),
        other => {
            tracing::error!(error = %other, "token endpoint failure");
            OAuthError::new("server_error", "The token could not be issued; try again.")
        }
    }
}

/// The store is out of reach: RFC 6749's `temporarily_unavailable` (503) with `Retry-After`.
fn store_unavailable(cause: &anyhow::Error) -> OAuthError {
    tracing::warn!(error = %format!("{cause:#}"), "token endpoint: the store is unavailable");
    OAuthError {
        retry_after: Some(kit::outage::RETRY_AFTER),
        ..OAuthError::new(
            "temporarily_unavailable",
            "The token store is unavailable; try again shortly.",
        )
    }
}

fn respond(issued: IssuedToken) -> Response {
    let body = TokenResponse {
        scope: issued.claims.scope.clone(),
        access_token: issued.token,
        token_type: "bearer",
        expires_in: issued.expires_in,
    };
    (no_store(), axum::Json(body)).into_response()
}
