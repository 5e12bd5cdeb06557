//! Forwarding one request to a service, streaming both bodies, and mapping failures the way
//! Envoy does: no connection → 503, no answer in time → 504, a broken answer → 502.

use std::error::Error as _;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::Request;

use super::headers;
use super::upstream::Upstream;
use crate::error::GatewayError;

/// Sends `request` (its URI already pointing at the upstream) and waits at most `timeout` for
/// the response headers; the response body then streams through as it arrives.
pub async fn send(
    upstream: &Upstream,
    request: Request<Body>,
    timeout: Duration,
) -> Result<Response, GatewayError> {
    let service = || upstream.name.to_string();
    let response = match tokio::time::timeout(timeout, upstream.client.request(request)).await {
        Err(_elapsed) => {
            tracing::warn!(service = %upstream.name, timeout_ms = timeout.as_millis() as u64, "upstream timed out");
            return Err(GatewayError::Timeout { service: service() });
        }
        Ok(Err(error)) => return Err(classify(upstream, &error)),
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    headers::sanitize_response(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn classify(upstream: &Upstream, error: &hyper_util::client::legacy::Error) -> GatewayError {
    let service = upstream.name.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(limit) = cause.downcast_ref::<http_body_util::LengthLimitError>() {
            tracing::debug!(%limit, "request body over the limit");
            return GatewayError::PayloadTooLarge { limit: 0 };
        }
        source = cause.source();
    }
    if error.is_connect() {
        tracing::warn!(service = %upstream.name, error = %error_chain(error), "upstream connection failed");
        GatewayError::Unavailable { service }
    } else {
        tracing::warn!(service = %upstream.name, error = %error_chain(error), "upstream answered badly");
        GatewayError::BadGateway { service }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
