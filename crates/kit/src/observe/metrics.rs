//! Prometheus metrics: one explicit registry per [`Metrics`], and the HTTP families every server
//! records into it.
//!
//! The registry is an object, not a process-global recorder: tests start many servers in one
//! process and each must count only its own requests, while `gatehouse up` runs every part in one
//! process and hands them all the same [`Metrics`], told apart by the `server` label.
//!
//! # Recording on a hot path
//! [`Family::get_or_create`] takes a read lock and hashes the labels on every call. A caller that
//! records the same series on every request (the gateway, per route) can look the series up once
//! and keep the handle, which is an `Arc` around an atomic:
//!
//! ```
//! # use kit::observe::{Metrics, RequestLabels, RouteLabel, MethodLabel, StatusClass};
//! let metrics = Metrics::new();
//! let ok = metrics
//!     .http()
//!     .requests
//!     .get_or_create_owned(&RequestLabels {
//!         server: "gateway",
//!         route: RouteLabel::template("/api/time"),
//!         method: MethodLabel::Get,
//!         status_class: StatusClass::Success,
//!         reason: "",
//!     });
//! ok.inc(); // per request: one atomic add, no lock, no allocation
//! ```

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::sharded::{Counter as RequestCounter, Histogram};

/// The `Content-Type` of [`Metrics::render`]'s output (the OpenMetrics text format, which
/// Prometheus reads).
pub const EXPOSITION_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the request-duration buckets, in seconds: 1-2.5-5 steps from 50 µs (a
/// loopback answer) to 10 s (past every timeout the gateway allows by default).
const DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A process part's (or, in `gatehouse up`, the whole process's) metrics. Cloning is cheap and
/// every clone records into, and renders, the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked only to register and to render, never to record.
    registry: Mutex<Names>,
    http: HttpMetrics,
    access_log_dropped: Counter,
    /// `gatehouse_service_open_connections`, by service.
    open_connections: Family<ServerLabel, Gauge>,
    /// `gatehouse_trace_spans_dropped_total{server, reason}`: spans never exported.
    trace_spans_dropped: Family<DroppedSpanLabels, Counter>,
}

/// Why spans were not exported: `queue_full` (the batch task fell behind) or `export_failed`
/// (the collector refused or did not answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedSpanLabels {
    pub server: &'static str,
    pub reason: &'static str,
}

/// The registry and the names already in it: a name registered twice would make the exposition
/// invalid for a scraper, so the second registration is refused.
struct Names {
    registry: Registry,
    taken: HashSet<String>,
}

/// The families every HTTP server records, the gateway and each service alike.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// `gatehouse_requests_total`: answers, by who answered, route, method, status class and reason.
    pub requests: Family<RequestLabels, RequestCounter>,
    /// `gatehouse_request_duration_seconds`: from the request's arrival to its body's last byte.
    pub duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// Counts one answer and observes its duration.
    pub fn record(
        &self,
        server: &'static str,
        route: &RouteLabel,
        method: &Method,
        status: StatusCode,
        reason: Option<&'static str>,
        duration: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                server,
                route: route.clone(),
                method: MethodLabel::of(method),
                status_class: StatusClass::of(status),
                reason: reason.unwrap_or(""),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                server,
                route: route.clone(),
            })
            .observe(duration.as_secs_f64());
    }
}

/// Standard methods × status classes: the series a route records when nothing went wrong.
const COMMON_SERIES: usize = 9 * 5;

/// One route's series, each looked up in its family at its first use and then kept: recording
/// into a kept series is one atomic addition, where [`HttpMetrics::record`] hashes the labels and
/// takes the family's read lock twice per request.
///
/// The series kept are those without a reason, by standard method and status class (a bounded
/// set); an answer with a reason, or a non-standard method, takes the families' path. A
/// `RouteSeries` belongs to the one [`HttpMetrics`] it is first recorded with (a route belongs to
/// one server), and to one route label.
#[derive(Debug)]
pub struct RouteSeries {
    requests: [OnceLock<RequestCounter>; COMMON_SERIES],
    duration: OnceLock<Histogram>,
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
        }
    }
}

impl RouteSeries {
    /// The slot of the series without a reason for `method` and `class`, if it is kept.
    fn slot(method: MethodLabel, class: StatusClass) -> Option<usize> {
        let method = match method {
            MethodLabel::Other => return None,
            standard => standard as usize,
        };
        Some(method * 5 + class as usize)
    }
}

impl HttpMetrics {
    /// What [`HttpMetrics::record`] does, through `series`, the handles kept for `route`.
    #[allow(clippy::too_many_arguments)] // the labels, each named as in `record`
    pub fn record_route(
        &self,
        series: &RouteSeries,
        server: &'static str,
        route: &RouteLabel,
        method: &Method,
        status: StatusCode,
        reason: Option<&'static str>,
        duration: Duration,
    ) {
        let method = MethodLabel::of(method);
        let status_class = StatusClass::of(status);
        let kept = match reason {
            None => RouteSeries::slot(method, status_class),
            Some(_) => None,
        };
        let labels = || RequestLabels {
            server,
            route: route.clone(),
            method,
            status_class,
            reason: reason.unwrap_or(""),
        };
        match kept {
            Some(slot) => series.requests[slot]
                .get_or_init(|| self.requests.get_or_create_owned(&labels()))
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        series
            .duration
            .get_or_init(|| {
                self.duration.get_or_create_owned(&RouteLabels {
                    server,
                    route: route.clone(),
                })
            })
            .observe(duration.as_secs_f64());
    }
}

/// The labels of `gatehouse_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which part answered: `gateway`, `users`, `orders`, `clock`.
    pub server: &'static str,
    pub route: RouteLabel,
    pub method: MethodLabel,
    pub status_class: StatusClass,
    /// Why the server answered as it did ([`super::Reason`]); `""` when nothing went wrong.
    pub reason: &'static str,
}

/// The label of a family counted per server alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: &'static str,
}

/// The labels of `gatehouse_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub server: &'static str,
    pub route: RouteLabel,
}

/// The route a request matched, as its template (`/users/{id}`), or `unmatched`. Never the raw
/// path: a path can hold ids without bound, and every distinct value is a new series.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel(Option<Arc<str>>);

impl RouteLabel {
    /// Requests no route matched.
    pub const UNMATCHED: Self = Self(None);

    /// The route whose template is `template`.
    pub fn template(template: impl Into<Arc<str>>) -> Self {
        Self(Some(template.into()))
    }

    /// The template, or `None` for [`RouteLabel::UNMATCHED`].
    pub fn as_template(&self) -> Option<&Arc<str>> {
        self.0.as_ref()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("unmatched")
    }
}

impl From<Option<Arc<str>>> for RouteLabel {
    fn from(template: Option<Arc<str>>) -> Self {
        Self(template)
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// A request method as a label: the standard methods by name, anything else `other`, so a client
/// inventing methods cannot add series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl MethodLabel {
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::DELETE => Self::Delete,
            Method::CONNECT => Self::Connect,
            Method::OPTIONS => Self::Options,
            Method::TRACE => Self::Trace,
            Method::PATCH => Self::Patch,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other => "other",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// A status code's class, `1xx` to `5xx`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    /// The class of `status`. Codes past 599, which no standard defines, count as server errors:
    /// a server that sends one has gone wrong.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(&DURATION_BUCKETS)
}

impl Metrics {
    /// A registry holding the HTTP families and the access log's drop counter.
    pub fn new() -> Self {
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        let access_log_dropped = Counter::default();
        let open_connections = Family::<ServerLabel, Gauge>::default();
        let trace_spans_dropped = Family::<DroppedSpanLabels, Counter>::default();
        let metrics = Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Names {
                    registry: Registry::default(),
                    taken: HashSet::new(),
                }),
                http: http.clone(),
                access_log_dropped: access_log_dropped.clone(),
                open_connections: open_connections.clone(),
                trace_spans_dropped: trace_spans_dropped.clone(),
            }),
        };
        metrics.register(
            "gatehouse_requests",
            "Requests answered, by the part that answered, route template, method, status class and reason",
            http.requests,
        );
        // The unit is in the name, without a `# UNIT` line: it is optional, and some parsers
        // refuse it on a histogram.
        metrics.register(
            "gatehouse_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer, by route template",
            http.duration,
        );
        metrics.register(
            "gatehouse_access_log_dropped",
            "Access-log lines dropped because the writer fell behind (its queue was full)",
            access_log_dropped,
        );
        // The gateway counts its own (`gatehouse_open_connections`, unlabelled, as it always has).
        metrics.register(
            "gatehouse_service_open_connections",
            "Client connections open on a service's public listener, by service",
            open_connections,
        );
        metrics.register(
            "gatehouse_trace_spans_dropped",
            "Spans not exported, by the part that made them and why (queue_full, export_failed)",
            trace_spans_dropped,
        );
        metrics
    }

    /// The gauge of the connections open on `server`'s public listener: what the listener
    /// counts into.
    pub fn open_connections(&self, server: &'static str) -> Gauge {
        self.inner
            .open_connections
            .get_or_create(&ServerLabel { server })
            .clone()
    }

    /// The families every server records.
    pub fn http(&self) -> &HttpMetrics {
        &self.inner.http
    }

    /// The counter of `server`'s spans dropped for `reason` (see [`DroppedSpanLabels`]).
    pub(crate) fn trace_spans_dropped(
        &self,
        server: &'static str,
        reason: &'static str,
    ) -> Counter {
        self.inner
            .trace_spans_dropped
            .get_or_create(&DroppedSpanLabels { server, reason })
            .clone()
    }

    /// The counter of access-log lines dropped for a full queue.
    pub(crate) fn access_log_dropped(&self) -> Counter {
        self.inner.access_log_dropped.clone()
    }

    /// Adds `metric` under `name` (the full name, e.g. `gatehouse_retries`, without the suffixes
    /// the exposition adds: `_total` for a counter) and `help` (one sentence; the exposition
    /// adds its full stop). Keep a clone of `metric` to record into.
    ///
    /// A name already taken is refused and logged, so the exposition stays valid.
    pub fn register<M: Metric>(&self, name: &str, help: &str, metric: M) {
        self.add(name, None, |registry| registry.register(name, help, metric));
    }

    /// As [`Metrics::register`], with a unit the exposition appends to the name
    /// (`gatehouse_sent` + bytes → `gatehouse_sent_bytes_total`). For a histogram, put the unit
    /// in the name and use [`Metrics::register`]: some parsers refuse a histogram's `# UNIT`.
    pub fn register_with_unit<M: Metric>(&self, name: &str, help: &str, unit: Unit, metric: M) {
        let suffix = unit.as_str().to_owned();
        self.add(name, Some(&suffix), |registry| {
            registry.register_with_unit(name, help, unit, metric)
        });
    }

    fn add(&self, name: &str, unit: Option<&str>, register: impl FnOnce(&mut Registry)) {
        let full = match unit {
            Some(unit) => format!("{name}_{unit}"),
            None => name.to_owned(),
        };
        let mut names = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !names.taken.insert(full.clone()) {
            tracing::error!(metric = %full, "a metric of this name is already registered; the second is not exported");
            return;
        }
        register(&mut names.registry);
    }

    /// The text exposition, as served at `/metrics`.
    pub fn render(&self) -> String {
        let names = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(8 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &names.registry) {
            // Writing to a String cannot fail; a metric that refuses to encode can.
            tracing::error!(%error, "encoding the metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_outside_the_standard_ones_is_one_label() {
        assert_eq!(MethodLabel::of(&Method::GET).as_str(), "GET");
        assert_eq!(MethodLabel::of(&Method::PATCH).as_str(), "PATCH");
        for invented in ["PROPFIND", "BREW", "X-SECRET-abc123"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(MethodLabel::of(&method), MethodLabel::Other, "{invented}");
        }
    }

    #[test]
    fn status_classes_cover_every_code() {
        for (code, class) in [
            (100, "1xx"),
            (204, "2xx"),
            (308, "3xx"),
            (404, "4xx"),
            (499, "4xx"),
            (503, "5xx"),
            (999, "5xx"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(StatusClass::of(status).as_str(), class, "{code}");
        }
    }

    #[test]
    fn a_routes_kept_series_count_into_the_same_families_as_the_labelled_path() {
        let kept = Metrics::new();
        let labelled = Metrics::new();
        let series = RouteSeries::default();
        let route = RouteLabel::template("/api/time");
        let answers: [(Method, StatusCode, Option<&'static str>); 5] = [
            (Method::GET, StatusCode::OK, None),
            (Method::GET, StatusCode::OK, None),
            (Method::POST, StatusCode::CREATED, None),
            (Method::GET, StatusCode::UNAUTHORIZED, Some("token_expired")),
            (Method::from_bytes(b"BREW").unwrap(), StatusCode::OK, None),
        ];
        for (method, status, reason) in answers {
            let took = Duration::from_millis(2);
            kept.http()
                .record_route(&series, "gateway", &route, &method, status, reason, took);
            labelled
                .http()
                .record("gateway", &route, &method, status, reason, took);
        }

        // Series come out in the families' hash order, which differs between registries.
        let sorted = |metrics: &Metrics| {
            let mut lines: Vec<String> = metrics.render().lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&kept), sorted(&labelled));
    }

    #[test]
    fn two_registries_count_apart() {
        let one = Metrics::new();
        let other = Metrics::new();
        let route = RouteLabel::template("/time");

        one.http().record(
            "clock",
            &route,
            &Method::GET,
            StatusCode::OK,
            None,
            Duration::from_millis(1),
        );

        assert!(one.render().contains("gatehouse_requests_total{"));
        assert!(!other.render().contains("gatehouse_requests_total{"));
    }

    #[test]
    fn a_name_registered_twice_is_exported_once() {
        let metrics = Metrics::new();
        metrics.register("gatehouse_retries", "Retries.", Counter::<u64>::default());
        metrics.register(
            "gatehouse_retries",
            "Retries again.",
            Counter::<u64>::default(),
        );

        let rendered = metrics.render();

        assert_eq!(
            rendered.matches("# TYPE gatehouse_retries counter").count(),
            1,
            "{rendered}"
        );
    }

    #[test]
    fn the_exposition_is_valid_openmetrics_with_what_callers_register() {
        let metrics = Metrics::new();
        metrics.http().record(
            "gateway",
            &RouteLabel::template("/api/echo/{*rest}"),
            &Method::POST,
            StatusCode::BAD_GATEWAY,
            Some("upstream_refused"),
            Duration::from_millis(3),
        );
        let upstream = Family::<RouteLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        metrics.register(
            "gatehouse_upstream_duration_seconds",
            "Time the upstream took",
            upstream.clone(),
        );
        upstream
            .get_or_create(&RouteLabels {
                server: "gateway",
                route: RouteLabel::template("/api/time"),
            })
            .observe(0.002);
        let sent = Counter::<u64>::default();
        metrics.register_with_unit("gatehouse_sent", "Bytes sent", Unit::Bytes, sent.clone());
        sent.inc_by(10);

        let rendered = metrics.render();
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&rendered)
            .unwrap_or_else(|error| panic!("{error:?}:\n{rendered}"));

        for family in [
            "gatehouse_requests",
            "gatehouse_request_duration_seconds",
            "gatehouse_access_log_dropped",
            "gatehouse_upstream_duration_seconds",
            "gatehouse_sent_bytes",
        ] {
            assert!(
                parsed.families.contains_key(family),
                "{family}:\n{rendered}"
            );
        }
    }

    #[test]
    fn durations_render_in_seconds_with_buckets_from_50_microseconds_to_10_seconds() {
        let metrics = Metrics::new();
        metrics.http().record(
            "clock",
            &RouteLabel::UNMATCHED,
            &Method::GET,
            StatusCode::NOT_FOUND,
            Some("not_found"),
            Duration::from_micros(70),
        );

        let rendered = metrics.render();

        assert!(rendered.contains("# TYPE gatehouse_request_duration_seconds histogram"));
        assert!(rendered.contains(r#"le="5e-5""#) || rendered.contains(r#"le="0.00005""#));
        assert!(rendered.contains(r#"le="10.0""#), "{rendered}");
        assert!(rendered.contains(r#"route="unmatched""#));
    }
}
