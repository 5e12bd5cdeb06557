//! The gateway's calls to the credentials service (users): password checks, the current state
//! of an account when a session is refreshed, and per-user revocation cut-offs. The gateway
//! calls with its own identity token and never sees a password hash.

use axum::body::{Body, Bytes};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use kit::PrincipalKind;
use serde::Deserialize;

use crate::app::App;
use crate::auth::tokens::Subject;
use crate::error::GatewayError;
use crate::proxy::forward;

/// The credentials service's answers are small; anything far larger is not one of them.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// An account as the credentials service describes it.
#[derive(Debug, Deserialize)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub role: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "active")]
    pub is_active: bool,
    /// When the gateway asked (Unix ms): a token describing this account is issued as of then,
    /// so a cut-off recorded while the answer was on its way still refuses it.
    #[serde(skip)]
    pub read_at_ms: u64,
}

fn active() -> bool {
    true
}

impl Account {
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

/// "Tokens of `user_id` issued before `cutoff_ms` are void."
#[derive(Debug, Deserialize)]
pub struct Cutoff {
    pub user_id: String,
    pub cutoff_ms: u64,
}

#[derive(Deserialize)]
struct Cutoffs {
    cutoffs: Vec<Cutoff>,
}

/// The active account `username` and `password` belong to, or `InvalidCredentials`.
pub async fn check_password(
    state: &App,
    username: &str,
    password: &str,
) -> Result<Account, GatewayError> {
    let body = serde_json::json!({ "username": username, "password": password });
    let asked_at = crate::clock::unix_ms();
    let (status, headers, bytes) = call(
        state,
        Method::POST,
        &state.config().auth.credentials_path,
        Some(body),
    )
    .await?;
    match status {
        StatusCode::OK => parse(state, &bytes).map(|account| Account {
            read_at_ms: asked_at,
            ..account
        }),
        // The service's own limit per caller and username (against a captured identity token
        // used round the gateway): the gateway's throttle admitted the attempt, but the answer
        // is the same, and no outage.
        StatusCode::TOO_MANY_REQUESTS => Err(GatewayError::TooManyAttempts {
            retry_after: retry_after(&headers),
        }),
        StatusCode::UNAUTHORIZED if is_invalid_credentials(&bytes) => {
            Err(GatewayError::InvalidCredentials)
        }
        // A name that cannot be a username is as unknown as any other: the same answer.
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            Err(GatewayError::InvalidCredentials)
        }
        // Any other 401 refuses the gateway itself (keys or issuer out of step): an outage to
        // fix, never a wrong password to count against the user.
        StatusCode::UNAUTHORIZED => {
            tracing::error!(
                service = %state.config().auth.credentials_service,
                "the credentials service refuses the gateway's identity: check the issuer and its JWKS URL"
            );
            Err(unexpected(state, StatusCode::UNAUTHORIZED))
        }
        other => Err(unexpected(state, other)),
    }
}

/// The account `user_id` as it is now; `None` when it no longer exists.
pub async fn current(state: &App, user_id: &str) -> Result<Option<Account>, GatewayError> {
    let Ok(id) = uuid::Uuid::parse_str(user_id) else {
        return Ok(None);
    };
    let asked_at = crate::clock::unix_ms();
    let (status, _, bytes) =
        call(state, Method::GET, &format!("/internal/users/{id}"), None).await?;
    match status {
        StatusCode::OK => parse(state, &bytes).map(|account| {
            Some(Account {
                read_at_ms: asked_at,
                ..account
            })
        }),
        StatusCode::NOT_FOUND => Ok(None),
        other => Err(unexpected(state, other)),
    }
}

/// A page of cut-offs at or after `since_ms` (strictly after (`since_ms`, `after_user`) when
/// given), in (`cutoff_ms`, `user_id`) order.
pub async fn cutoffs_since(
    state: &App,
    since_ms: u64,
    after_user: Option<&str>,
) -> Result<Vec<Cutoff>, GatewayError> {
    let mut path = format!("/internal/token-cutoffs?since={since_ms}");
    if let Some(user) = after_user {
        // User ids are UUIDs; anything else is not sent on.
        if uuid::Uuid::parse_str(user).is_ok() {
            path.push_str("&after=");
            path.push_str(user);
        }
    }
    let (status, _, bytes) = call(state, Method::GET, &path, None).await?;
    match status {
        StatusCode::OK => parse::<Cutoffs>(state, &bytes).map(|c| c.cutoffs),
        other => Err(unexpected(state, other)),
    }
}

/// `Retry-After` in seconds; a minute when missing or unreadable.
fn retry_after(headers: &http::HeaderMap) -> std::time::Duration {
    let seconds = headers
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(seconds.clamp(1, 24 * 60 * 60))
}

fn is_invalid_credentials(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|problem| problem["type"] == kit::problem::INVALID_CREDENTIALS)
}

fn parse<T: serde::de::DeserializeOwned>(state: &App, bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|error| {
        tracing::error!(%error, "the credentials service answered with an unexpected body");
        GatewayError::BadGateway {
            service: state.config().auth.credentials_service.clone(),
        }
    })
}

fn unexpected(state: &App, status: StatusCode) -> GatewayError {
    // The service says it is unavailable (its database is down, say): an outage to pass on as
    // 503 with `Retry-After`, not an invalid answer.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(service = %state.config().auth.credentials_service, "credentials service unavailable");
        return GatewayError::Unavailable {
            service: state.config().auth.credentials_service.clone(),
            retry_after: kit::outage::RETRY_AFTER,
            why: crate::error::Unavailability::SaysUnavailable,
        };
    }
    tracing::error!(service = %state.config().auth.credentials_service, status = status.as_u16(), "credentials service failed");
    GatewayError::BadGateway {
        service: state.config().auth.credentials_service.clone(),
    }
}

async fn call(
    state: &App,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), GatewayError> {
    let config = state.config();
    let service = &config.auth.credentials_service;
    let upstreams = state.upstreams();
    let upstream = upstreams.get(service).ok_or_else(|| {
        GatewayError::Internal(anyhow::anyhow!(
            "credentials service {service} has no upstream"
        ))
    })?;
    let mut request = Request::builder()
        .method(method)
        .uri(upstream.uri_for(path)?)
        .header(
            kit::identity::HEADER,
            state.auth.identities.for_gateway(&upstream.name)?,
        );
    if let Some(context) = kit::request_id::current() {
        if let Ok(id) = HeaderValue::from_str(&context.id) {
            request = request.header(kit::request_id::HEADER, id);
        }
        // The sign-in's trace continues into the users service, under the gateway's span.
        if let (Some(trace), Some(headers)) = (&context.trace, request.headers_mut()) {
            trace.propagate(headers, trace.span_id);
        }
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&json).map_err(|e| GatewayError::Internal(e.into()))?)
        }
        None => Body::empty(),
    };
    let request = request
        .body(body)
        .map_err(|e| GatewayError::Internal(e.into()))?;
    let response = forward::send(upstream, request, upstream.timeout).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| GatewayError::BadGateway {
            service: service.clone(),
        })?
        .to_bytes();
    Ok((status, headers, bytes))
}
