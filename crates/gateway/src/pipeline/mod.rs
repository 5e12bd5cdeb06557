//! The request path, as the phases a request meets, in order (the order is [`Pipeline::handle`]):
//!
//! 1. [`accept`]: the listener (the kit's, shared with the services) takes the connection
//!    within its limits (per address, in all), reads the request's headers within their
//!    deadline, and drains on shutdown.
//! 2. [`normalize`]: Host, framing, dot segments, the declared body size.
//! 3. [`route`]: one of the gateway's own endpoints, or a configured route (404, 405).
//! 4. [`authenticate`]: the client certificate a route asks for (mTLS: 401 without, 403 when
//!    another), then the caller's access token, verified and not revoked (401); just before
//!    it, [`limit`] decides the route's `ip`/`route` policies (a bad token is counted too).
//! 5. [`authorize`]: the route's roles and scopes (403).
//! 6. [`limit`]: the route's `user`/`client` rate limits (429; `ip`/`route` ones are decided
//!    before the token is verified); every answer from the first decision on carries their
//!    headers. [`cache`]: a stored answer ends the request here; a miss is stored on its way
//!    back (never with the caller's rate-limit headers: they are added after it).
//!    On a route that takes WebSockets, [`upgrade`] checks an upgrade's handshake right after
//!    the route is found (400), and once the caller has passed authenticate, authorize and
//!    limit, opens the socket to an instance and splices it (no cache, no body checks).
//! 7. [`prepare`]: the route's edits to the request (headers, query). [`forward`]: to an
//!    instance of the route's service, retried when safe (502, 503, 504); on a composition
//!    route [`compose`] instead: its parts, one answer by part name. [`transform`]: the
//!    route's edits to the answer (headers, JSON fields), before the cache stores it.
//! 8. [`respond`]: a refusal as problem+json; the request id on every answer.
//! 9. [`observe`]: metrics and the access log, once the answer's body has gone out.
//!
//! Each phase is a function a newcomer can find by its name; a feature that acts on requests
//! takes its place in this list rather than wrapping the whole path in middleware.

pub mod accept;
pub mod authenticate;
pub mod authorize;
pub mod cache;
pub mod compose;
pub mod forward;
pub mod limit;
pub mod normalize;
pub mod observe;
pub mod prepare;
pub mod respond;
pub mod route;
pub mod transform;
pub mod upgrade;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use kit::request_id::{self, RequestContext};
use tower::ServiceExt;

use std::sync::Arc;

use kit::observe::RouteLabel;

use crate::app::App;
use crate::error::GatewayError;
use crate::trace::RequestTrace;
use route::{Destination, OwnEndpoints};

/// The gateway's request path: what every accepted request is handed to.
#[derive(Clone)]
pub struct Pipeline {
    app: App,
    own: OwnEndpoints,
}

impl Pipeline {
    pub fn new(app: App, own: OwnEndpoints) -> Self {
        Self { app, own }
    }

    /// Takes one request from `peer` through the phases; the answer, whatever happens. The body
    /// is hyper's `Incoming` from a connection, or any body a test builds (the pipeline is then
    /// called without a socket, as a `tower::Service` through `tower::service_fn`).
    pub async fn handle<B>(self, request: http::Request<B>, peer: SocketAddr) -> Response
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let id = request_id::header_value(request.headers());
        let mut pending = observe::Pending::begin(
            &self.app,
            request.method(),
            declared_length(&request),
            id.clone(),
        );
        // Kept for a refusal's problem (`instance`); sharing the parsed bytes, not copying them.
        let uri = request.uri().clone();
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(request_id::HEADER, id.clone());
        let exchange = pending.exchange();
        // The client's trace continued, or a new one (an invalid `traceparent` is not echoed).
        exchange.trace = RequestTrace::begin(&parts.headers, &self.app.observe.tracer);
        // Set once the route's limits counted the request: whatever answers it from then on
        // (the upstream, or the gateway's own 401/502/503/504/408/413) carries the headers.
        let mut quota = None;
        let response = match self
            .pass(parts, Body::new(body), peer, exchange, &mut quota)
            .await
        {
            Ok(response) => response,
            Err(error) => respond::refusal(error, &id, uri.path(), exchange.trace.trace()),
        };
        let response = limit::annotate(response, quota);
        pending.answer(respond::finish(response, id))
    }

    /// Phases 2 to 7; what they learn of the request goes into `exchange`.
    async fn pass(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        peer: SocketAddr,
        exchange: &mut observe::Exchange,
        quota: &mut Option<limit::Quota>,
    ) -> Result<Response, GatewayError> {
        let routing = self.app.routing();
        let host = normalize::request(&parts)?;
        let started = exchange.trace.start();
        let found = route::find(&self.own, &routing, &parts);
        exchange.trace.ended("route", started, found.as_ref().err());
        let (route, target) = match found? {
            Destination::Service { route, target } => (route, target),
            Destination::Own => {
                exchange.route = RouteLabel::template(self.own.label(parts.uri.path()));
                if parts.uri.path() == routing.config.auth.login_path {
                    *quota = limit::admit_login(&self.app, &routing.config, peer.ip()).await?;
                }
                let trace = exchange.trace.trace().cloned();
                return Ok(Box::pin(self.own_endpoint(parts, body, peer, trace)).await);
            }
        };
        exchange.route = RouteLabel::template(Arc::clone(&route.template));
        exchange.matched = Some(Arc::clone(&route));
        exchange.trace.matched(&route.template, &route.service);
        normalize::path(parts.uri.path())?;
        normalize::declared_body(&parts, routing.config.limits.max_body_bytes)?;
        let handshake = upgrade::read(&route, &mut parts)?;
        let (app, ip) = (&self.app, peer.ip());
        let trace = &mut exchange.trace;
        limit::admit_traced(
            app,
            &route,
            limit::Stage::BeforeAuth,
            None,
            ip,
            quota,
            trace,
        )
        .await?;
        let started = exchange
            .trace
            .start_if(route.settings.auth.needs_identity() || route.settings.client_cert.is_some());
        let caller = match authenticate::certificate(&route, &parts.extensions) {
            Ok(()) => authenticate::caller(&self.app, &route, &parts.headers)
                .await
                .and_then(|caller| authorize::check(&route, caller.as_deref()).map(|()| caller)),
            Err(refused) => Err(refused),
        };
        exchange
            .trace
            .ended("authenticate", started, caller.as_ref().err());
        let caller = caller?;
        if let Some(claims) = caller
            .as_ref()
            .filter(|_| self.app.observe.access_log.is_on())
        {
            exchange.principal = Some(claims.sub.clone());
        }
        let claims = caller.as_deref();
        let trace = &mut exchange.trace;
        limit::admit_traced(
            app,
            &route,
            limit::Stage::AfterAuth,
            claims,
            ip,
            quota,
            trace,
        )
        .await?;
        if let Some(handshake) = handshake {
            let request = forward::Forwardable {
                route: &route,
                target,
                parts,
                body,
                host,
                client_ip: ip,
                caller,
            };
            let attempted = &mut exchange.attempted;
            return Box::pin(upgrade::open(app, &routing, request, handshake, attempted)).await;
        }
        if let Some(plan) = route.settings.compose.as_deref() {
            let request = compose::Composable {
                plan,
                parts: &parts,
                host,
                client_ip: ip,
                caller,
                trace: &mut exchange.trace,
            };
            return Box::pin(compose::answer(&self.app, &routing, request)).await;
        }
        // A body the service's schema refuses never leaves the gateway (`validate_body`).
        let body = crate::openapi::body::check(app, &route, &parts, &target, body).await?;
        // cache: a stored answer ends the request here; a miss goes on, to be stored on return.
        let started = exchange.trace.start_if(route.settings.cache.is_some());
        let consulted = cache::consult(&self.app, &routing, &route, &parts, host.as_ref(), claims);
        let consulted = consulted.await;
        exchange.trace.ended("cache", started, None);
        let plan = match consulted {
            cache::Consulted::Answer(response) => return Ok(response),
            cache::Consulted::Forward(plan) => plan,
            cache::Consulted::Refresh(response, plan) => {
                let span = exchange.trace.server_span();
                exchange.trace.propagate(&mut parts.headers, span);
                let (route, ip) = (Arc::clone(&route), peer.ip());
                let to = cache::Refresh {
                    route,
                    target,
                    host,
                    client_ip: ip,
                    caller,
                };
                cache::refresh_in_background(&self.app, routing, &parts, to, plan);
                return Ok(response);
            }
        };
        let mut target = target;
        let terms = prepare::request(&route, &parts.method, &mut parts.headers, &mut target);
        // The service's `traceparent` names the forward span (the gateway's, when not recording).
        let (span, started) = (exchange.trace.call_span(), exchange.trace.start());
        exchange.trace.propagate(&mut parts.headers, span);
        let request = forward::Forwardable {
            route: &route,
            target,
            parts,
            body,
            host,
            client_ip: peer.ip(),
            caller,
        };
        let answer =
            forward::to_service(&self.app, &routing, request, &mut exchange.attempted).await;
        exchange.trace.called(crate::trace::Call {
            started,
            span,
            service: &route.service,
            part: None,
            attempted: &exchange.attempted,
            outcome: match &answer {
                Ok(response) => Ok(response.status()),
                Err(error) => Err(error.reason()),
            },
        });
        let transforms = route.settings.transform.response.is_some();
        let started = exchange.trace.start_if(transforms);
        let answer = transform::answer(&self.app, &route, terms, answer).await;
        exchange
            .trace
            .ended("transform", started, answer.as_ref().err());
        cache::settle(&self.app, plan, answer).await
    }

    /// The gateway's own endpoints are an axum router (they are few and not the hot path): it
    /// gets the client's address, and the request's id for its problems and log lines.
    async fn own_endpoint(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        peer: SocketAddr,
        trace: Option<kit::trace::Trace>,
    ) -> Response {
        parts.extensions.insert(ConnectInfo(peer));
        let context = RequestContext {
            id: parts
                .headers
                .get(request_id::HEADER)
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            path: parts.uri.path().to_owned(),
            trace,
        };
        let span = tracing::info_span!("request", request_id = %context.id, method = %parts.method, path = %context.path);
        let answer = self
            .own
            .router()
            .oneshot(http::Request::from_parts(parts, body));
        match tracing::Instrument::instrument(request_id::scope(context, answer), span).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        }
    }
}

/// The request body's declared length (0 without one): what the access log counts as received.
fn declared_length<B>(request: &http::Request<B>) -> u64 {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}
