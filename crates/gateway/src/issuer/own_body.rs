//! The bodies of the gateway's own endpoints (login, refresh, logout, the OAuth token endpoint):
//! read whole before the handler runs, within `limits.max_body` and the client's idle timeout
//! (`limits.body_idle_timeout`), like a proxied body. A declared `Content-Length` over the limit
//! is refused before a byte is read. The refusal is the endpoint's own kind of error: a problem
//! (413, 408, 400) on the JSON endpoints, an RFC 6749 §5.2 body with the same status on the
//! token endpoint, never axum's plain text.
//!
//! The limit is the smaller of `limits.max_body` and [`OWN_BODY_MAX`] (16 KiB): these bodies are
//! a few hundred bytes, and each is held in memory before the sign-in throttle runs, so a flood of
//! sign-ins costs at most `max_connections` × 16 KiB rather than × `max_body`.
//!
//! The limit is read per request, so a reload changes it; axum's fixed default limit (2 MB) is
//! switched off on these routes (`DefaultBodyLimit::disable`) so that it never answers instead.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::oauth;
use crate::app::App;
use crate::error::GatewayError;
use crate::proxy::forward::{read_whole, BodyError};

/// The largest body any of these endpoints takes, whatever `limits.max_body` allows: a sign-in,
/// refresh or token request is a username (64 characters), a password (1,024 characters: at
/// most 6 KiB even if every one is JSON-escaped as `\uXXXX`), a token or two and a device token.
pub const OWN_BODY_MAX: u64 = 16 * 1024;

/// For the JSON endpoints: a body declared as another type is refused with 415 (logout read its
/// optional body whatever its declared type; login and refresh also refuse an undeclared one).
pub async fn json(State(state): State<App>, request: Request, next: Next) -> Response {
    let (parts, body) = match read(&state, request).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    if body.iter().any(|b| !b.is_ascii_whitespace()) && declared_not_json(&parts.headers) {
        return GatewayError::UnsupportedMediaType(
            "The body must be JSON: send `Content-Type: application/json`.",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// For the OAuth token endpoint: the form's content type is checked by the endpoint itself.
pub async fn form(State(state): State<App>, request: Request, next: Next) -> Response {
    match read(&state, request).await {
        Ok((parts, body)) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(error) => oauth::refused_body(&error),
    }
}

/// The body of `request`, read whole within the limits in force.
async fn read(state: &App, request: Request) -> Result<(Parts, Bytes), GatewayError> {
    let (limit, idle) = {
        let config = state.config();
        (
            config.limits.max_body_bytes.min(OWN_BODY_MAX),
            config.limits.body_idle_timeout,
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let (parts, body) = request.into_parts();
    let bytes = read_whole(body, usize::try_from(limit).unwrap_or(usize::MAX), idle)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => GatewayError::PayloadTooLarge { limit },
            BodyError::Stalled => GatewayError::BodyStalled { idle },
            BodyError::Broken => {
                GatewayError::BadRequest("The request body could not be read.".to_owned())
            }
        })?;
    Ok((parts, bytes))
}

/// A `Content-Type` other than `application/json` or a `+json` type (parameters aside).
fn declared_not_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let media = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        !(media == "application/json" || media.ends_with("+json"))
    })
}
