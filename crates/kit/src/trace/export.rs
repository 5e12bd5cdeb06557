//! Export: finished spans, queued to a task that posts them to an OTLP/HTTP collector in batches.
//!
//! The request's side only builds a span when its trace is recorded, and hands it over with a
//! `try_send`: a full queue drops the span and counts it (`reason="queue_full"`), so a collector
//! that is slow or gone costs spans, never requests. The batch task waits up to
//! [`BATCH_DELAY`] to fill a batch of [`BATCH_SIZE`], then posts it (protobuf, `/v1/traces`);
//! a batch the collector refuses is counted (`reason="export_failed"`) and logged once per run of
//! failures, not once per batch.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::Trace;
use crate::observe::Metrics;

/// Spans waiting for the batch task; beyond this, new ones are dropped.
const QUEUE_CAPACITY: usize = 8192;
/// The most spans one post carries.
const BATCH_SIZE: usize = 512;
/// The longest a span waits for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// One post's deadline: a collector that does not answer by then loses the batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans go and how many traces are kept.
///
/// ```yaml
/// telemetry:
///   otlp_endpoint: http://otel-collector:4318   # OTLP/HTTP; spans are posted to /v1/traces
///   service_name: gateway                       # the `service.name` resource attribute
///   sample_ratio: 0.1                           # traces this server starts that are recorded
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub otlp_endpoint: OtlpEndpoint,
    pub service_name: String,
    /// For traces this server starts; a caller's `sampled` flag decides for the ones it continues.
    pub sample_ratio: SampleRatio,
}

/// An OTLP/HTTP collector's base address: `http://host:port`, optionally with a path prefix,
/// without query or fragment. Plain HTTP only: the gateway carries no TLS client for it (put a
/// collector or sidecar on the same host or network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(http::Uri);

impl OtlpEndpoint {
    /// Where the spans are posted: the base with `/v1/traces` appended.
    pub fn traces_url(&self) -> String {
        let base = self.0.to_string();
        format!("{}/v1/traces", base.trim_end_matches('/'))
    }
}

impl std::str::FromStr for OtlpEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("{text:?} is not a URL like http://otel-collector:4318"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{text:?}: only http:// is supported (no TLS client for the collector); use a local collector or sidecar"
                ))
            }
            _ => return Err(format!("{text:?} must start with http://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("{text:?} names no host"));
        };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(format!(
                "{text:?} must name a host, without user information"
            ));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(format!("{text:?} must have no query or fragment"));
        }
        Ok(Self(uri))
    }
}

impl std::fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for OtlpEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The share of new traces recorded, from 0 (none) to 1 (all, the default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio(f64);

impl SampleRatio {
    pub const ALL: Self = Self(1.0);

    pub fn new(ratio: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(Self(ratio))
        } else {
            Err(format!(
                "{ratio} is not a ratio between 0 and 1 (0.1 records one trace in ten)"
            ))
        }
    }

    /// Whether a new trace with `trace_id` is recorded: decided by its id (its low 63 bits
    /// against the ratio, as OpenTelemetry's `TraceIdRatioBased` does), so every server with
    /// the same ratio decides alike.
    fn samples(self, trace_id: TraceId) -> bool {
        if self.0 >= 1.0 {
            return true;
        }
        let bytes = trace_id.to_bytes();
        let mut low = [0; 8];
        low.copy_from_slice(&bytes[8..]);
        let low = u64::from_be_bytes(low) >> 1;
        // The ratio's share of 2^63; the float product is exact enough for a sampling rate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bound = (self.0 * (1u64 << 63) as f64) as u64;
        low < bound
    }
}

impl Default for SampleRatio {
    fn default() -> Self {
        Self::ALL
    }
}

impl<'de> Deserialize<'de> for SampleRatio {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ratio = f64::deserialize(deserializer)?;
        Self::new(ratio).map_err(serde::de::Error::custom)
    }
}

/// The exporter could not be set up (its HTTP client or endpoint).
#[derive(Debug, thiserror::Error)]
#[error("setting up the OTLP exporter for {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// Where a server's finished spans go: nowhere (off, the default), or the export queue. Clones
/// share the queue; the batch task ends, after posting what is left, when the last clone is gone.
#[derive(Clone, Default)]
pub struct Tracer {
    export: Option<Arc<Export>>,
}

struct Export {
    queue: mpsc::Sender<SpanData>,
    ratio: SampleRatio,
    scope: InstrumentationScope,
    queue_full: Counter,
}

impl Tracer {
    /// Export off: spans are never built; traces are still continued and their ids logged.
    pub fn off() -> Self {
        Self::default()
    }

    /// Spans of `server` exported as `telemetry` says. Starts the batch task: call it within a
    /// Tokio runtime.
    pub fn start(
        telemetry: &Telemetry,
        server: &'static str,
        metrics: &Metrics,
    ) -> Result<Self, TelemetryError> {
        let endpoint = telemetry.otlp_endpoint.traces_url();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| TelemetryError {
                endpoint: endpoint.clone(),
                reason: error.to_string(),
            })?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(telemetry.service_name.clone())
                .build(),
        );
        let (queue, spans) = mpsc::channel(QUEUE_CAPACITY);
        let failed = metrics.trace_spans_dropped(server, "export_failed");
        tokio::spawn(ship(spans, exporter, failed, endpoint));
        Ok(Self {
            export: Some(Arc::new(Export {
                queue,
                ratio: telemetry.sample_ratio,
                scope: InstrumentationScope::builder("gatehouse")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
                queue_full: metrics.trace_spans_dropped(server, "queue_full"),
            })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.export.is_some()
    }

    /// Whether a trace this server starts is recorded (never, when export is off).
    pub fn samples(&self, trace_id: TraceId) -> bool {
        self.export
            .as_ref()
            .is_some_and(|export| export.ratio.samples(trace_id))
    }

    /// Queues `span` of `trace` for export; dropped (and counted) when the queue is full. Call
    /// it only for a recorded trace ([`Trace::recording`]); otherwise it does nothing.
    pub fn record(&self, trace: &Trace, span: Span) {
        let Some(export) = self.export.as_ref().filter(|_| trace.recording) else {
            return;
        };
        let (parent_span_id, parent_span_is_remote) = match span.parent {
            Some(parent) => (parent, false),
            None => (
                trace.parent.unwrap_or(SpanId::INVALID),
                trace.parent.is_some(),
            ),
        };
        let data = SpanData {
            span_context: SpanContext::new(
                trace.trace_id,
                span.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id,
            parent_span_is_remote,
            span_kind: span.kind,
            name: Cow::Borrowed(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if span.failed {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: export.scope.clone(),
        };
        if export.queue.try_send(data).is_err() {
            export.queue_full.inc();
        }
    }
}

/// A finished span, as a server records it.
#[derive(Debug)]
pub struct Span {
    pub name: &'static str,
    pub kind: SpanKind,
    pub span_id: SpanId,
    /// A span of this server; `None` for the request's server span, whose parent is the caller's.
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Route template, service, instance, status, reason: never tokens, user ids or query values.
    pub attributes: Vec<KeyValue>,
    /// The span ended in an error (a 5xx, or a phase that refused the request).
    pub failed: bool,
}

impl Span {
    /// The request's server span (named `request`), ending now; its parent is the caller's.
    pub fn server(
        trace: &Trace,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        failed: bool,
    ) -> Self {
        Self {
            name: "request",
            kind: SpanKind::Server,
            span_id: trace.span_id,
            parent: None,
            start,
            end: SystemTime::now(),
            attributes,
            failed,
        }
    }
}

/// The batch task: posts what the queue holds, a batch at a time, until every sender is gone.
async fn ship(
    mut spans: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    failed: Counter,
    endpoint: String,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    loop {
        if spans.recv_many(&mut batch, BATCH_SIZE).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH_SIZE {
            let room = BATCH_SIZE - batch.len();
            match tokio::time::timeout_at(deadline, spans.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let count = batch.len() as u64;
        let posted = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_SIZE));
        match exporter.export(posted).await {
            Ok(()) => {
                if failing {
                    tracing::info!(collector = %endpoint, "trace export recovered");
                }
                failing = false;
            }
            Err(error) => {
                failed.inc_by(count);
                if !failing {
                    tracing::warn!(collector = %endpoint, error = %error, "trace export failed; spans are dropped until the collector answers");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_plain_http_with_a_host_and_no_query() {
        let endpoint: OtlpEndpoint = "http://collector:4318".parse().unwrap();
        assert_eq!(endpoint.traces_url(), "http://collector:4318/v1/traces");
        let prefixed: OtlpEndpoint = "http://127.0.0.1:4318/otel/".parse().unwrap();
        assert_eq!(
            prefixed.traces_url(),
            "http://127.0.0.1:4318/otel/v1/traces"
        );
        let refused = [
            ("https://collector:4318", "TLS"),
            ("collector:4318", "no scheme"),
            ("ftp://collector", "another scheme"),
            ("http://user:pw@collector:4318", "user information"),
            ("http://collector:4318/?debug=1", "a query"),
            ("http://collector:4318/#x", "a fragment"),
            ("http://", "no host"),
            ("", "empty"),
            ("http://coll ector:4318", "a space"),
        ];
        for (text, why) in refused {
            assert!(text.parse::<OtlpEndpoint>().is_err(), "{why}: {text:?}");
        }
    }

    #[test]
    fn a_sample_ratio_is_between_zero_and_one_and_decides_by_trace_id() {
        assert!(SampleRatio::new(-0.1).is_err());
        assert!(SampleRatio::new(1.5).is_err());
        assert!(SampleRatio::new(f64::NAN).is_err());
        let none = SampleRatio::new(0.0).unwrap();
        let all = SampleRatio::ALL;
        let half = SampleRatio::new(0.5).unwrap();
        let low = TraceId::from(0x1_u128);
        let high = TraceId::from(u128::from(u64::MAX));
        assert!(!none.samples(low) && !none.samples(high));
        assert!(all.samples(low) && all.samples(high));
        assert!(half.samples(low) && !half.samples(high));
    }

    #[test]
    fn with_export_off_nothing_is_sampled_or_recorded() {
        let tracer = Tracer::off();
        assert!(!tracer.is_on());
        assert!(!tracer.samples(TraceId::from(1_u128)));
    }
}
