//! The gateway's part in a request's trace: the trace it continues or starts ([`kit::trace`]),
//! the `traceparent` each service is sent, and, when the trace is recorded, one span per
//! pipeline phase that did work, under the gateway's server span:
//!
//! ```text
//! request (server)            route template, method, status, reason
//! ├── route                   which route matched (or 404/405)
//! ├── limit                   the route's rate limits (before and after the token)
//! ├── authenticate            the caller's token, and authorize's roles and scopes
//! ├── cache                   a stored answer, or a miss
//! ├── forward (client)        service, instance, retries, status  ── the service's server span
//! ├── part <name> (client)    a composition's part, each its own  ── the part service's span
//! └── transform               the route's edits to the answer
//! ```
//!
//! Attributes are the route template, service, instance, status and reason: never a token, a
//! user id, a path's values or a query. Export off, a trace costs its ids and the header sent on:
//! [`Started`] is `None`, every `ended` is one branch, and no span is built.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use kit::trace::{self, KeyValue, SpanId, SpanKind, Trace, TraceId, Tracer};

use crate::error::GatewayError;
use crate::proxy::forward::Attempted;

/// When a phase started, taken only while the trace is recorded.
#[derive(Clone, Copy)]
pub struct Started(Option<SystemTime>);

/// One request's trace as the pipeline sees it.
#[derive(Default)]
pub struct RequestTrace {
    trace: Option<Trace>,
    /// The spans of the phases that ended; `None` unless the trace is recorded.
    spans: Option<Vec<trace::Span>>,
    /// The server span's start.
    started: Option<SystemTime>,
    /// The matched route's template and service, on every span once known.
    route: Option<(Arc<str>, Arc<str>)>,
}

/// The most spans one request records: the phases, and a composition's parts.
const EXPECTED_SPANS: usize = 8;

impl RequestTrace {
    /// The trace of a request arriving with `headers` (see [`Trace::begin`]).
    pub fn begin(headers: &HeaderMap, tracer: &Tracer) -> Self {
        let trace = Trace::begin(headers, tracer);
        let recording = trace.recording;
        Self {
            trace: Some(trace),
            spans: recording.then(|| Vec::with_capacity(EXPECTED_SPANS)),
            started: recording.then(SystemTime::now),
            route: None,
        }
    }

    pub fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace.as_ref().map(|trace| trace.trace_id)
    }

    /// The route the request matched: its template and service go on every span from now on.
    pub fn matched(&mut self, template: &Arc<str>, service: &Arc<str>) {
        if self.spans.is_some() {
            self.route = Some((Arc::clone(template), Arc::clone(service)));
        }
    }

    /// Now, if the trace is recorded.
    pub fn start(&self) -> Started {
        Started(self.spans.as_ref().map(|_| SystemTime::now()))
    }

    /// As [`RequestTrace::start`] for a phase that has work on this route (`does_work`): a phase
    /// with nothing to do (a public route's authenticate, a route without limits) gets no span.
    pub fn start_if(&self, does_work: bool) -> Started {
        if does_work {
            self.start()
        } else {
            Started(None)
        }
    }

    /// The span id a call to a service gets as its parent: a new one for its span while the
    /// trace is recorded, else the gateway's server span.
    pub fn call_span(&self) -> SpanId {
        match (&self.trace, &self.spans) {
            (Some(_), Some(_)) => trace::new_span_id(),
            (Some(trace), None) => trace.span_id,
            (None, _) => SpanId::INVALID,
        }
    }

    /// The gateway's server span: the parent of a request it makes without a span of its own
    /// (a cache refresh in the background).
    pub fn server_span(&self) -> SpanId {
        self.trace
            .as_ref()
            .map_or(SpanId::INVALID, |trace| trace.span_id)
    }

    /// `traceparent` (naming `span` as the parent) and `tracestate` into a service's request.
    pub fn propagate(&self, headers: &mut HeaderMap, span: SpanId) {
        if let Some(trace) = &self.trace {
            trace.propagate(headers, span);
        }
    }

    /// Records the phase `name` that began at `started`; a refusal names its reason.
    pub fn ended(&mut self, name: &'static str, started: Started, refused: Option<&GatewayError>) {
        let Some(start) = started.0 else { return };
        let mut attributes = self.route_attributes(2);
        if let Some(error) = refused {
            attributes.push(KeyValue::new("gatehouse.reason", error.reason()));
        }
        let failed = refused.is_some_and(|error| error.status().is_server_error());
        self.push(
            name,
            SpanKind::Internal,
            trace::new_span_id(),
            start,
            attributes,
            failed,
        );
    }

    /// Records a call to a service (the forward, or a composition's part) as span `span`:
    /// its service, the instance that answered, the retries, and the status or the reason.
    pub fn called(&mut self, call: Call<'_>) {
        let Some(start) = call.started.0 else { return };
        let mut attributes = self.route_attributes(5);
        if self.route.is_none() || call.part.is_some() {
            attributes.push(KeyValue::new("gatehouse.service", call.service.to_owned()));
        }
        if let Some(part) = call.part {
            attributes.push(KeyValue::new("gatehouse.part", part.to_string()));
        }
        if let Some(instance) = &call.attempted.instance {
            attributes.push(KeyValue::new("gatehouse.instance", instance.to_string()));
        }
        attributes.push(KeyValue::new(
            "gatehouse.retries",
            i64::from(call.attempted.retries),
        ));
        match call.outcome {
            Ok(status) => attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            )),
            Err(reason) => attributes.push(KeyValue::new("gatehouse.reason", reason)),
        }
        let failed = match call.outcome {
            Ok(status) => status.is_server_error(),
            Err(_) => true,
        };
        let name = if call.part.is_some() {
            "part"
        } else {
            "forward"
        };
        self.push(name, SpanKind::Client, call.span, start, attributes, failed);
    }

    /// Exports the server span and the phases' spans, once the answer has gone out.
    pub fn finish(
        self,
        tracer: &Tracer,
        method: &http::Method,
        status: StatusCode,
        reason: Option<&'static str>,
    ) {
        let (Some(trace), Some(spans), Some(start)) = (self.trace, self.spans, self.started) else {
            return;
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        ];
        if let Some((template, service)) = &self.route {
            attributes.push(KeyValue::new("http.route", template.to_string()));
            attributes.push(KeyValue::new("gatehouse.service", service.to_string()));
        }
        if let Some(reason) = reason {
            attributes.push(KeyValue::new("gatehouse.reason", reason));
        }
        let span = trace::Span::server(&trace, start, attributes, status.is_server_error());
        tracer.record(&trace, span);
        for span in spans {
            tracer.record(&trace, span);
        }
    }

    fn route_attributes(&self, more: usize) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(2 + more);
        if let Some((template, service)) = &self.route {
            attributes.push(KeyValue::new("http.route", template.to_string()));
            attributes.push(KeyValue::new("gatehouse.service", service.to_string()));
        }
        attributes
    }

    fn push(
        &mut self,
        name: &'static str,
        kind: SpanKind,
        span_id: SpanId,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        failed: bool,
    ) {
        let (Some(spans), Some(trace)) = (&mut self.spans, &self.trace) else {
            return;
        };
        spans.push(trace::Span {
            name,
            kind,
            span_id,
            parent: Some(trace.span_id),
            start,
            end: SystemTime::now(),
            attributes,
            failed,
        });
    }
}

/// A call to a service, as its span records it.
pub struct Call<'a> {
    pub started: Started,
    /// The span id its `traceparent` named ([`RequestTrace::call_span`]).
    pub span: SpanId,
    pub service: &'a str,
    /// A composition's part name; `None` for the route's forward.
    pub part: Option<&'a str>,
    pub attempted: &'a Attempted,
    /// The service's status, or why there was none.
    pub outcome: Result<StatusCode, &'static str>,
}
