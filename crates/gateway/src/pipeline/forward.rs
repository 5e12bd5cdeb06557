//! Forward: the request as its service gets it (the client's claims to identity stripped, the
//! forwarding headers added, the caller's identity token in place of its bearer token), then to
//! an instance of the service, retried on another when that is safe (see [`crate::proxy`]).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::proxy::forward::{self, Attempted, Outbound};
use crate::proxy::headers::{self, Forwarding};
use crate::proxy::upstream::Upstream;
use crate::router::Route;
use crate::routing::Routing;

/// What the pipeline knows of a request by the time it is forwarded.
pub struct Forwardable<'a> {
    pub route: &'a Route,
    /// The path and query on the service.
    pub target: String,
    pub parts: Parts,
    pub body: Body,
    /// The authority the client addressed, validated by `normalize`.
    pub host: Option<HeaderValue>,
    pub client_ip: IpAddr,
    pub caller: Option<Arc<AccessClaims>>,
}

/// Sends `request` to its route's service and returns the service's answer (or why there is
/// none: 502, 503, 504, 408, 413).
pub async fn to_service(
    app: &AppState,
    routing: &Routing,
    request: Forwardable<'_>,
    attempted: &mut Attempted,
) -> Result<Response, GatewayError> {
    let Forwardable {
        route,
        target,
        mut parts,
        body,
        host,
        client_ip,
        caller,
    } = request;
    let upstream = upstream_of(routing, route)?;
    for_service(
        app,
        upstream,
        &mut parts.headers,
        host.as_ref(),
        client_ip,
        caller.as_deref(),
    )?;

    let timeout = route.settings.timeout.unwrap_or(upstream.timeout);
    let outbound = Outbound {
        method: parts.method,
        target,
        headers: parts.headers,
        body,
    };
    forward::forward(
        upstream,
        outbound,
        timeout,
        &routing.config.limits,
        attempted,
    )
    .await
}

/// The service `route` forwards to, in `routing`.
pub fn upstream_of<'r>(
    routing: &'r Routing,
    route: &Route,
) -> Result<&'r Arc<Upstream>, GatewayError> {
    routing
        .upstreams
        .get(&route.settings.service)
        .ok_or_else(|| {
            GatewayError::Internal(anyhow::anyhow!(
                "no upstream for service {}",
                route.settings.service
            ))
        })
}

/// The client's headers made into those `upstream` gets: hop-by-hop and gateway-asserted ones
/// removed, the forwarding headers added, the caller's identity token in place of its bearer
/// token. Also for a WebSocket upgrade ([`super::upgrade`]), which then adds its own.
pub fn for_service(
    app: &AppState,
    upstream: &Upstream,
    outgoing: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client_ip: IpAddr,
    caller: Option<&AccessClaims>,
) -> Result<(), GatewayError> {
    headers::sanitize_request(outgoing);
    headers::add_forwarding(
        outgoing,
        &Forwarding {
            client_ip,
            host,
            proto: "http",
        },
    );
    if let Some(claims) = caller {
        // Services get the identity, not the bearer token: they cannot replay it elsewhere.
        let identity = app.auth.identities.for_caller(claims, &upstream.name)?;
        outgoing.remove(header::AUTHORIZATION);
        outgoing.insert(kit::identity::HEADER, identity);
        if let Some(id) = claims.minted.user_id(&claims.sub) {
            outgoing.insert(headers::X_USER_ID, id);
        }
    }
    Ok(())
}
