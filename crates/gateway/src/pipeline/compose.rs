//! Compose: in place of forward on a route with `compose:`, the parts are asked (see
//! [`crate::compose`]) and their answers put together. The route's own phases (authenticate,
//! authorize, limit) have run once, before; each part is then a GET to its service with the
//! caller's identity minted for that service.
//!
//! A part gets only what it needs of the client's request: the forwarding headers, the request
//! id, `Accept-Language` and `User-Agent`, never the client's `Authorization`, cookies or
//! conditional headers (a `304` or a compressed body would be no JSON to compose), and no body.

use std::net::IpAddr;
use std::sync::Arc;

use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::compose::{answer, run, Plan};
use crate::error::GatewayError;
use crate::proxy::headers::{self, Forwarding};
use crate::router::Lookup;
use crate::routing::Routing;
use crate::trace::RequestTrace;

/// The client's headers a part may see (and `traceparent`, `tracestate` naming the part's span).
const PASSED_ON: [header::HeaderName; 3] = [
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
    kit::request_id::HEADER,
];

/// What the pipeline knows of a request on a composition route.
pub struct Composable<'a> {
    pub plan: &'a Plan,
    pub parts: &'a Parts,
    /// The authority the client addressed, validated by `normalize`.
    pub host: Option<HeaderValue>,
    pub client_ip: IpAddr,
    pub caller: Option<Arc<AccessClaims>>,
    /// Each part gets a span of its own under the gateway's (see [`crate::trace`]).
    pub trace: &'a mut RequestTrace,
}

/// The composed answer (200, partial or not), or the failure of a required part (502, 503,
/// 504 naming it).
pub async fn answer(
    app: &AppState,
    routing: &Routing,
    request: Composable<'_>,
) -> Result<Response, GatewayError> {
    let Composable {
        plan,
        parts,
        host,
        client_ip,
        caller,
        trace,
    } = request;
    // The route was found by this lookup already; only a composition needs its parameters.
    let params = match routing.table.lookup(&parts.method, parts.uri.path()) {
        Lookup::Found { params, .. } => params,
        Lookup::MethodNotAllowed { .. } | Lookup::NotFound => Vec::new(),
    };
    let mut headers = HeaderMap::with_capacity(12);
    for name in PASSED_ON {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers::add_forwarding(
        &mut headers,
        &Forwarding {
            client_ip,
            host: host.as_ref(),
            proto: "http",
        },
    );
    if let Some(id) = caller
        .as_deref()
        .and_then(|claims| claims.minted.user_id(&claims.sub))
    {
        headers.insert(headers::X_USER_ID, id);
    }
    let call = run::Call {
        params,
        query: parts.uri.query(),
        headers,
        caller: caller.as_deref(),
    };
    match run::run(app, routing, plan, &call, trace).await {
        Ok(outcomes) => Ok(answer::composed(plan, outcomes)),
        Err(failed) => Err(GatewayError::PartFailed {
            part: Arc::clone(&plan.parts[failed.part].name),
            failure: failed.failure,
        }),
    }
}
