//! The observe layer of a kit service: every answer counted in the metrics and written to the
//! access log once its body has gone out.
//!
//! The route is axum's [`MatchedPath`] (the template, never the raw path); the reason is the
//! [`Reason`] the answer carries, else its status's; the principal is the caller the
//! [`crate::Identity`] extractor verified, if the handler asked for one (see [`note_principal`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use super::access_log::{AccessLog, AccessRecord};
use super::body::Observed;
use super::metrics::{Metrics, RouteLabel};
use super::reason::Reason;
use crate::request_id;
use crate::trace::{self, KeyValue, Trace, Tracer};

/// The layer [`layer`] returns.
#[derive(Clone)]
pub struct ObserveLayer {
    server: &'static str,
    metrics: Metrics,
    access_log: AccessLog,
    /// Where the request's server span goes when its trace is recorded.
    tracer: Tracer,
}

/// Metrics and access log for every request of a service's router, recorded as `server`. Apply
/// it inside the request-id middleware (so the id is known) and with `Router::layer` (so the
/// matched route is).
pub fn layer(server: &'static str, metrics: Metrics, access_log: AccessLog) -> ObserveLayer {
    ObserveLayer {
        server,
        metrics,
        access_log,
        tracer: Tracer::off(),
    }
}

impl ObserveLayer {
    /// Exports each request's server span to `tracer` (when its trace is recorded).
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            observe: self.clone(),
        }
    }
}

/// The service [`ObserveLayer`] wraps around each route.
#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    observe: ObserveLayer,
}

/// What the request's side learns for its log line while the handler runs: the bytes of the body
/// it read, and who the caller turned out to be.
#[derive(Default)]
struct Seen {
    bytes_in: AtomicU64,
    principal: OnceLock<String>,
}

/// The request extension through which the handler's extractors report to the layer.
#[derive(Clone)]
struct SeenHandle(Arc<Seen>);

/// Records `principal` (a user or client id) as the caller of the request whose extensions these
/// are, for its access-log line. The [`crate::Identity`] extractor calls it once it has verified
/// the caller; without the observe layer it does nothing.
pub fn note_principal(extensions: &http::Extensions, principal: &str) {
    if let Some(seen) = extensions.get::<SeenHandle>() {
        let _ = seen.0.principal.set(principal.to_owned());
    }
}

impl<S> tower::Service<Request> for ObserveService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = RouteLabel::from(
            request
                .extensions()
                .get::<MatchedPath>()
                .map(|matched| Arc::<str>::from(matched.as_str())),
        );
        let method = request.method().clone();
        let request_id = request_id::from_headers(request.headers());
        // Put there by `trace::middleware`; absent only on a router built without it.
        let trace = request.extensions().get::<Trace>().cloned();
        // The span's wall-clock start, taken only when the span will be exported.
        let span_start = trace
            .as_ref()
            .filter(|trace| trace.recording)
            .map(|_| std::time::SystemTime::now());
        let seen = Arc::new(Seen::default());

        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(SeenHandle(Arc::clone(&seen)));
        let counted = Arc::clone(&seen);
        let body = Body::new(Observed::new(body, move |bytes, _complete| {
            counted.bytes_in.store(bytes, Ordering::Relaxed);
        }));
        let request = Request::from_parts(parts, body);

        // The clone that was polled ready is the one to call (tower's rule for `Clone` services).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let observe = self.observe.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let (parts, body) = response.into_parts();
            let status = parts.status;
            let reason = parts
                .extensions
                .get::<Reason>()
                .copied()
                .or_else(|| Reason::for_status(status))
                .map(Reason::as_str);
            let body = Observed::new(body, move |bytes_out, _complete| {
                let duration = started.elapsed();
                observe.metrics.http().record(
                    observe.server,
                    &route,
                    &method,
                    status,
                    reason,
                    duration,
                );
                if let (Some(start), Some(trace)) = (span_start, &trace) {
                    server_span(
                        &observe.tracer,
                        trace,
                        start,
                        &route,
                        &method,
                        status,
                        reason,
                    );
                }
                observe.access_log.record(AccessRecord {
                    request_id,
                    trace_id: trace.as_ref().map(|trace| trace.trace_id),
                    server: observe.server,
                    route: route.as_template().cloned(),
                    method,
                    status: status.as_u16(),
                    reason,
                    principal: seen.principal.get().cloned(),
                    instance: None,
                    duration,
                    upstream_duration: None,
                    bytes_in: seen.bytes_in.load(Ordering::Relaxed),
                    bytes_out,
                });
            });
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// The request's server span: its route template, method, status and reason (never the path,
/// query or caller).
fn server_span(
    tracer: &Tracer,
    trace: &Trace,
    start: std::time::SystemTime,
    route: &RouteLabel,
    method: &http::Method,
    status: http::StatusCode,
    reason: Option<&'static str>,
) {
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.as_str().to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
    ];
    if let Some(template) = route.as_template() {
        attributes.push(KeyValue::new("http.route", template.to_string()));
    }
    if let Some(reason) = reason {
        attributes.push(KeyValue::new("gatehouse.reason", reason));
    }
    let span = trace::Span::server(trace, start, attributes, status.is_server_error());
    tracer.record(trace, span);
}
