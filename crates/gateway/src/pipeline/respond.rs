//! Respond: what goes back to the client. A refusal becomes its problem+json (rendered in one
//! place, [`crate::error`]), and every answer carries the request's id.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use kit::request_id::{self, RequestContext};

use crate::error::GatewayError;

/// The problem answering `error`, naming the request (`request_id`, `trace_id`, `instance`) like every
/// problem the gateway or a service makes.
pub fn refusal(
    error: GatewayError,
    id: &HeaderValue,
    path: &str,
    trace: Option<&kit::trace::Trace>,
) -> Response {
    let context = RequestContext {
        id: id.to_str().unwrap_or_default().to_owned(),
        path: path.to_owned(),
        trace: trace.cloned(),
    };
    request_id::within(context, || error.into_response())
}

/// `response` as it goes out: with the request's id.
pub fn finish(mut response: Response, id: HeaderValue) -> Response {
    response.headers_mut().insert(request_id::HEADER, id);
    response
}
