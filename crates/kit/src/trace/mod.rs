//! Tracing across the fleet: one request followed from the gateway through every service it
//! reaches, by its W3C trace id (<https://www.w3.org/TR/trace-context/>).
//!
//! Every server (the gateway and each kit service) reads the caller's `traceparent`, continues
//! that trace or starts one, and sends `traceparent` on with its own span as the parent. The trace
//! id is in every access-log line and every problem body (`trace_id`), with or without export.
//!
//! Export is OpenTelemetry over OTLP/HTTP (protobuf), on when an endpoint is configured. It is
//! off by default, and then a request costs one branch: no span is built. On, finished spans are
//! queued (bounded; a full queue drops and counts them in `gatehouse_trace_spans_dropped_total`)
//! and a background task posts them in batches, so a slow or absent collector never holds up a
//! request.
//!
//! # Layout
//! - [`context`]: `traceparent` and `tracestate`, read strictly and written.
//! - [`export`]: [`Tracer`], the export handle (off, or a queue to the batch task), and
//!   [`Telemetry`], its settings.
//! - [`Trace`] (here): one request's place in its trace.

pub mod context;
pub mod export;

use http::{HeaderMap, HeaderValue};
pub use opentelemetry::trace::{SpanId, SpanKind, TraceId};
pub use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

pub use context::{Parent, TRACEPARENT, TRACESTATE};
pub use export::{OtlpEndpoint, SampleRatio, Span, Telemetry, TelemetryError, Tracer};

/// One request's place in its trace, decided when it arrives.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: TraceId,
    /// This server's span for the request (kind `server`): the parent of the spans it records
    /// and, when it records none, of the requests it makes.
    pub span_id: SpanId,
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent: Option<SpanId>,
    /// The `sampled` flag sent on: this server's decision when it exports, else the caller's.
    pub sampled: bool,
    /// This server records the request's spans (export is on and the trace is sampled).
    pub recording: bool,
    /// The caller's `tracestate`, passed on unchanged (only beside a valid `traceparent`).
    pub state: Option<HeaderValue>,
}

impl Trace {
    /// The trace of a request with `headers`: the caller's, continued, or a new one. An invalid
    /// `traceparent` starts a new trace (and its `tracestate` is dropped): it is never echoed.
    pub fn begin(headers: &HeaderMap, tracer: &Tracer) -> Self {
        let span_id = new_span_id();
        match Parent::from_headers(headers) {
            Some(parent) => {
                // The caller decided (parent-based sampling, OpenTelemetry's default): a trace
                // recorded upstream is recorded here too, and one it left out stays out.
                let sampled = parent.sampled;
                Self {
                    trace_id: parent.trace_id,
                    span_id,
                    parent: Some(parent.span_id),
                    sampled,
                    recording: sampled && tracer.is_on(),
                    state: context::tracestate(headers),
                }
            }
            None => {
                let trace_id = RandomIdGenerator::default().new_trace_id();
                let sampled = tracer.samples(trace_id);
                Self {
                    trace_id,
                    span_id,
                    parent: None,
                    sampled,
                    recording: sampled && tracer.is_on(),
                    state: None,
                }
            }
        }
    }

    /// Puts `traceparent` (naming `parent`, a span of this server, as the next hop's parent) and
    /// the caller's `tracestate` into `headers`, replacing any the request came with.
    pub fn propagate(&self, headers: &mut HeaderMap, parent: SpanId) {
        headers.insert(
            TRACEPARENT,
            context::traceparent(self.trace_id, parent, self.sampled),
        );
        match &self.state {
            Some(state) => headers.insert(TRACESTATE, state.clone()),
            None => headers.remove(TRACESTATE),
        };
    }
}

/// axum middleware, outermost on a service's router: the request's [`Trace`] as a request
/// extension, for the request-id middleware (problems), the observe layer (access log, server
/// span) and [`crate::client::ServiceClient`] (passed on).
pub async fn middleware(
    axum::extract::State(tracer): axum::extract::State<Tracer>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let trace = Trace::begin(request.headers(), &tracer);
    request.extensions_mut().insert(trace);
    next.run(request).await
}

/// A new random span id (never zero).
pub fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_our_own() {
        let trace = Trace::begin(
            &headers(&[("traceparent", CALLER), ("tracestate", "congo=t61rcWkgMzE")]),
            &Tracer::off(),
        );
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace.parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert_ne!(trace.span_id, trace.parent.unwrap());
        assert!(trace.sampled, "the caller's flag passes through");
        assert!(!trace.recording, "export is off");

        let mut sent = HeaderMap::new();
        trace.propagate(&mut sent, trace.span_id);
        assert_eq!(
            sent[TRACEPARENT],
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span_id)
        );
        assert_eq!(sent[TRACESTATE], "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace_and_drops_the_tracestate() {
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let trace = Trace::begin(
            &headers(&[("traceparent", upper), ("tracestate", "congo=x")]),
            &Tracer::off(),
        );
        assert_ne!(
            trace.trace_id.to_string(),
            upper[3..35].to_ascii_lowercase()
        );
        assert_ne!(trace.trace_id, TraceId::INVALID);
        assert_eq!(trace.parent, None);
        assert_eq!(trace.state, None);
        let mut sent = headers(&[("tracestate", "congo=x")]);
        trace.propagate(&mut sent, trace.span_id);
        assert!(!sent.contains_key(TRACESTATE), "never passed on alone");
        assert!(sent[TRACEPARENT]
            .to_str()
            .unwrap()
            .contains(&trace.trace_id.to_string()));
    }

    #[test]
    fn without_a_traceparent_each_request_starts_its_own_trace() {
        let first = Trace::begin(&HeaderMap::new(), &Tracer::off());
        let second = Trace::begin(&HeaderMap::new(), &Tracer::off());
        assert_ne!(first.trace_id, second.trace_id);
        assert!(!first.sampled, "nothing records it when export is off");
    }
}
