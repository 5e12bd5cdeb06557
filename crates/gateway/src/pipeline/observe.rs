//! Observe: metrics and the access log, once the answer's body has gone out (or the client has
//! gone away), never on the request's critical path: counters and histograms are atomic
//! additions, and the access-log line is formatted and written on the log's own thread.
//!
//! The families every server records (`gatehouse_requests_total`,
//! `gatehouse_request_duration_seconds`) come from [`kit::observe`]; the gateway adds its own
//! ([`GatewayMetrics`]). Routes are named by their template, instances by their address, reasons
//! by [`crate::error::GatewayError::reason`]: every label comes from the configuration or the
//! code, never from the request, so the number of series is bounded.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode};
use kit::observe::sharded::Histogram;
use kit::observe::{AccessLog, AccessRecord, Metrics, Observed, Reason, RouteLabel};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::app::App;
use crate::pipeline::upgrade::SocketLife;
use crate::proxy::forward::Attempted;
use crate::proxy::upstream::Upstreams;
use crate::router::Route;
use crate::status::window::Verdict;
use crate::trace::RequestTrace;
use kit::trace::{TraceId, Tracer};

/// The name the gateway's series and log lines carry in the `server` label.
pub const SERVER: &str = "gateway";

/// Where the gateway's observations go: the registry (shared with the services under `up`),
/// the access log, and the gateway's own families.
#[derive(Clone)]
pub struct Observe {
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub gateway: GatewayMetrics,
    /// Where recorded traces' spans go (off unless `telemetry:` is configured).
    pub tracer: Tracer,
}

impl Observe {
    /// The gateway's families registered in `metrics`; lines to `access_log`.
    pub fn new(metrics: Metrics, access_log: AccessLog) -> Self {
        let gateway = GatewayMetrics::register(&metrics);
        Self {
            metrics,
            access_log,
            gateway,
            tracer: Tracer::off(),
        }
    }

    /// Exports the spans of recorded traces to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub service: Arc<str>,
    pub instance: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub route: Arc<str>,
    pub reason: &'static str,
}

/// The gateway's own families, beside the HTTP ones.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// `gatehouse_upstream_duration_seconds{service}`: from the first attempt to the answer's
    /// headers (retries included).
    pub upstream_duration: Family<ServiceLabels, Histogram>,
    /// `gatehouse_upstream_retries_total{service}`.
    pub retries: Family<ServiceLabels, Counter>,
    /// `gatehouse_instance_healthy{service, instance}`: 1 when active health checks (if any)
    /// pass, else 0; refreshed at each scrape.
    pub instance_healthy: Family<InstanceLabels, Gauge>,
    /// `gatehouse_instance_ejected{service, instance}`: 1 while the breaker holds it out.
    pub instance_ejected: Family<InstanceLabels, Gauge>,
    /// `gatehouse_instance_in_flight{service, instance}`: requests it is answering now.
    pub instance_in_flight: Family<InstanceLabels, Gauge>,
    /// `gatehouse_token_verifications_total{outcome}`: `valid` or the refusal's reason.
    pub verifications: Family<OutcomeLabels, Counter>,
    /// Its `valid` series, held so the common case is one atomic addition.
    valid: Counter,
    /// `gatehouse_sign_ins_total{outcome}`: `signed_in` or the refusal's reason.
    pub sign_ins: Family<OutcomeLabels, Counter>,
    /// `gatehouse_config_reloads_total{outcome}`: `applied` or `refused`.
    pub reloads: Family<OutcomeLabels, Counter>,
    /// `gatehouse_tls_reloads_total{outcome}`: the certificate files, `applied` or `refused`.
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    /// `gatehouse_open_connections`: client connections open on the public listener.
    pub connections: Gauge,
    /// `gatehouse_cache_total{outcome}`: hit, miss, collapsed, stored, stale_served,
    /// stale_while_revalidate, and why an admitted answer was not stored (`cache::record`).
    /// The store's own families are in `cache::metrics`.
    pub cache: Family<OutcomeLabels, Counter>,
    /// `gatehouse_transform_skipped_total{route, reason}`: answers a route's `response.json`
    /// left untouched (`too_large`, `decoded_too_large`).
    pub transform_skipped: Family<SkipLabels, Counter>,
    /// `gatehouse_websockets_open`: WebSockets spliced now.
    pub websockets_open: Gauge,
    /// `gatehouse_websocket_upgrades_total{outcome}`: `upgraded`, `refused_by_upstream` (the
    /// instance answered other than 101; its answer went to the client), `failed` (no instance,
    /// no answer in time, or a 101 that does not answer the handshake: 502, 503, 504).
    pub websocket_upgrades: Family<OutcomeLabels, Counter>,
    /// `gatehouse_websocket_closes_total{outcome}`: why sockets ended (see
    /// `crate::proxy::splice::Closed`).
    pub websocket_closes: Family<OutcomeLabels, Counter>,
    /// One scrape at a time refreshes the instance gauges and renders.
    pub scrape: Arc<std::sync::Mutex<()>>,
}

/// Upstream answers take from a millisecond to the longest timeout.
const UPSTREAM_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn upstream_histogram() -> Histogram {
    Histogram::new(&UPSTREAM_BUCKETS)
}

impl GatewayMetrics {
    fn register(metrics: &Metrics) -> Self {
        let verifications: Family<OutcomeLabels, Counter> = Family::default();
        let valid = verifications
            .get_or_create(&OutcomeLabels { outcome: "valid" })
            .clone();
        let families = Self {
            verifications,
            valid,
            upstream_duration: Family::new_with_constructor(
                upstream_histogram as fn() -> Histogram,
            ),
            retries: Family::default(),
            instance_healthy: Family::default(),
            instance_ejected: Family::default(),
            instance_in_flight: Family::default(),
            sign_ins: Family::default(),
            reloads: Family::default(),
            tls_reloads: Family::default(),
            connections: Gauge::default(),
            cache: Family::default(),
            transform_skipped: Family::default(),
            websockets_open: Gauge::default(),
            websocket_upgrades: Family::default(),
            websocket_closes: Family::default(),
            scrape: Arc::default(),
        };
        let it = families.clone();
        metrics.register(
            "gatehouse_upstream_duration_seconds",
            "Time from a forwarded request's first attempt to its answer's headers, by service",
            it.upstream_duration,
        );
        metrics.register(
            "gatehouse_upstream_retries",
            "Attempts repeated on another instance, by service",
            it.retries,
        );
        metrics.register(
            "gatehouse_instance_healthy",
            "1 when the instance passes its active health checks (or has none), else 0",
            it.instance_healthy,
        );
        metrics.register(
            "gatehouse_instance_ejected",
            "1 while the instance's breaker holds it out of rotation, else 0",
            it.instance_ejected,
        );
        metrics.register(
            "gatehouse_instance_in_flight",
            "Requests the instance is answering now",
            it.instance_in_flight,
        );
        metrics.register(
            "gatehouse_token_verifications",
            "Access tokens checked on proxied routes, by outcome (valid, or the refusal's reason)",
            it.verifications,
        );
        metrics.register(
            "gatehouse_sign_ins",
            "Sign-ins (login and the password grant), by outcome",
            it.sign_ins,
        );
        metrics.register(
            "gatehouse_config_reloads",
            "Configuration reloads, by outcome (applied, refused)",
            it.reloads,
        );
        metrics.register(
            "gatehouse_tls_reloads",
            "TLS certificate reloads, by outcome (applied, refused)",
            it.tls_reloads,
        );
        metrics.register(
            "gatehouse_open_connections",
            "Client connections open on the public listener",
            it.connections,
        );
        metrics.register(
            "gatehouse_cache",
            "Response cache outcomes on cached routes (hit, miss, collapsed, stored, stale_served, stale_while_revalidate; too_large, budget_exceeded, trailers, body_failed, body_too_slow: admitted but not stored)",
            it.cache,
        );
        metrics.register(
            "gatehouse_transform_skipped",
            "Answers a route's JSON rules left untouched, by route and reason (too_large, decoded_too_large)",
            it.transform_skipped,
        );
        metrics.register(
            "gatehouse_websockets_open",
            "WebSockets open through the gateway now",
            it.websockets_open,
        );
        metrics.register(
            "gatehouse_websocket_upgrades",
            "WebSocket upgrades that passed the gateway's checks, by outcome (upgraded, refused_by_upstream, failed)",
            it.websocket_upgrades,
        );
        metrics.register(
            "gatehouse_websocket_closes",
            "WebSockets ended, by outcome (closed, broken, idle_timeout, max_lifetime, token_revoked, token_expired, client_gone)",
            it.websocket_closes,
        );
        families
    }

    pub fn websocket_upgrade(&self, outcome: &'static str) {
        self.websocket_upgrades
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn websocket_closed(&self, outcome: &'static str) {
        self.websocket_closes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One response-cache outcome (a closed set, named in `pipeline/cache.rs`).
    pub fn cache(&self, outcome: &'static str) {
        self.cache.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn verification(&self, outcome: &'static str) {
        if outcome == "valid" {
            self.valid.inc();
            return;
        }
        self.verifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn sign_in(&self, outcome: &'static str) {
        self.sign_ins
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn tls_reload(&self, outcome: &'static str) {
        self.tls_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the per-instance gauges from `upstreams` (at each scrape: the state is read where it
    /// lives, not copied on every change). Instances a reload removed are dropped. The caller
    /// holds the scrape lock (see `server::metrics`), so a concurrent scrape never renders the
    /// families between their clearing and their refilling.
    pub fn refresh_instances(&self, upstreams: &Upstreams) {
        self.instance_healthy.clear();
        self.instance_ejected.clear();
        self.instance_in_flight.clear();
        for (service, upstream) in upstreams.iter() {
            for instance in upstream.instances().iter() {
                let labels = InstanceLabels {
                    service: Arc::from(service.as_str()),
                    instance: Arc::clone(&instance.name),
                };
                self.instance_healthy
                    .get_or_create(&labels)
                    .set(i64::from(instance.is_healthy()));
                self.instance_ejected
                    .get_or_create(&labels)
                    .set(i64::from(instance.is_ejected()));
                self.instance_in_flight
                    .get_or_create(&labels)
                    .set(i64::try_from(instance.in_flight()).unwrap_or(i64::MAX));
            }
        }
    }
}

/// One request as the observe phase sees it, filled in by the phases as they learn it.
pub struct Exchange {
    started: Instant,
    method: Method,
    pub route: RouteLabel,
    /// The configured route it matched, with its kept series.
    pub matched: Option<Arc<Route>>,
    /// The verified caller (a user or a client id).
    pub principal: Option<String>,
    pub attempted: Attempted,
    pub bytes_in: u64,
    /// The gateway made the answer itself (it carries a [`Reason`]): a 4xx then is a refusal of
    /// the gateway's, where a service's own 4xx passed on is an answer like any other.
    own_answer: bool,
    /// The request's trace, and its phases' spans when recorded ([`crate::trace`]).
    pub trace: RequestTrace,
}

impl Exchange {
    pub fn begin(method: &Method, bytes_in: u64) -> Self {
        Self {
            started: Instant::now(),
            method: method.clone(),
            route: RouteLabel::UNMATCHED,
            matched: None,
            principal: None,
            attempted: Attempted::default(),
            bytes_in,
            own_answer: false,
            trace: RequestTrace::default(),
        }
    }
}

/// An exchange the pipeline is still working on. Dropped unanswered (the client closed the
/// connection before the answer's headers were ready), it is counted and logged as nginx's 499
/// `client_closed`, so abandoned requests do not vanish from the numbers.
pub struct Pending {
    app: App,
    request_id: HeaderValue,
    exchange: Exchange,
    answered: bool,
}

/// What nginx logs for a request whose client went away first; not a status anyone receives.
const CLIENT_CLOSED: u16 = 499;

impl Pending {
    pub fn begin(app: &App, method: &Method, bytes_in: u64, request_id: HeaderValue) -> Self {
        Self {
            app: Arc::clone(app),
            request_id,
            exchange: Exchange::begin(method, bytes_in),
            answered: false,
        }
    }

    pub fn exchange(&mut self) -> &mut Exchange {
        &mut self.exchange
    }

    /// `response` with its body watched: when the body has gone out (or the client is gone),
    /// the exchange is counted and logged. An error answer that names no reason gets its
    /// status's; a body cut short is logged as such (`answer_incomplete`).
    pub fn answer(mut self, mut response: Response) -> Response {
        self.answered = true;
        let mut exchange = std::mem::replace(&mut self.exchange, Exchange::begin(&Method::GET, 0));
        let app = Arc::clone(&self.app);
        let request_id = self.request_id.clone();
        let status = response.status();
        let own_reason = response.extensions().get::<Reason>().copied();
        exchange.own_answer = own_reason.is_some();
        let reason = own_reason
            .or_else(|| Reason::for_status(status))
            .map(Reason::as_str);
        if let Some(life) = response.extensions_mut().remove::<SocketLife>() {
            socket_opened(app, exchange, request_id, status, life);
            return response;
        }
        response.map(move |body| {
            Body::new(Observed::new(body, move |bytes_out, complete| {
                let reason = if complete {
                    reason
                } else {
                    reason.or(Some("answer_incomplete"))
                };
                finish(
                    &app.observe,
                    exchange,
                    &request_id,
                    status,
                    reason,
                    bytes_out,
                );
            }))
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut exchange = std::mem::replace(&mut self.exchange, Exchange::begin(&Method::GET, 0));
        exchange.own_answer = true;
        let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
        finish(
            &self.app.observe,
            exchange,
            &self.request_id,
            status,
            Some("client_closed"),
            0,
        );
    }
}

/// A WebSocket (its 101 answered): counted now, as the answer to its upgrade request, so the
/// request metrics time the handshake and not the socket's life; logged when it closes, with
/// its duration, the bytes each way and why it ended as the line's `reason`.
fn socket_opened(
    app: App,
    exchange: Exchange,
    request_id: HeaderValue,
    status: StatusCode,
    life: SocketLife,
) {
    let mut exchange = exchange;
    let trace = std::mem::take(&mut exchange.trace);
    let trace_id = trace.trace_id();
    trace.finish(&app.observe.tracer, &exchange.method, status, None);
    let ended = Instant::now();
    let handshake = ended.saturating_duration_since(exchange.started);
    record(&app.observe, &exchange, status, None, ended, handshake);
    tokio::spawn(async move {
        let (from_client, from_upstream, closed) = match life.ended().await {
            Ok(spliced) => (
                spliced.from_client,
                spliced.from_upstream,
                spliced.closed.as_str(),
            ),
            Err(_) => (0, 0, crate::proxy::splice::Closed::Broken.as_str()),
        };
        exchange.bytes_in = exchange.bytes_in.saturating_add(from_client);
        let answer = Answered {
            request_id: &request_id,
            trace_id,
            status,
            reason: Some(closed),
            duration: exchange.started.elapsed(),
            bytes_out: from_upstream,
        };
        log(&app.observe, exchange, answer);
    });
}

fn finish(
    observe: &Observe,
    mut exchange: Exchange,
    request_id: &HeaderValue,
    status: http::StatusCode,
    reason: Option<&'static str>,
    bytes_out: u64,
) {
    let trace = std::mem::take(&mut exchange.trace);
    let trace_id = trace.trace_id();
    trace.finish(&observe.tracer, &exchange.method, status, reason);
    let ended = Instant::now();
    let duration = ended.saturating_duration_since(exchange.started);
    record(observe, &exchange, status, reason, ended, duration);
    let answer = Answered {
        request_id,
        trace_id,
        status,
        reason,
        duration,
        bytes_out,
    };
    log(observe, exchange, answer);
}

/// The exchange in the request metrics (and its upstream's) and its route's live window.
fn record(
    observe: &Observe,
    exchange: &Exchange,
    status: http::StatusCode,
    reason: Option<&'static str>,
    ended: Instant,
    duration: std::time::Duration,
) {
    let http = observe.metrics.http();
    let Some(route) = &exchange.matched else {
        // The gateway's own endpoints and requests no route matched: few, so by the labels.
        http.record(
            SERVER,
            &exchange.route,
            &exchange.method,
            status,
            reason,
            duration,
        );
        return;
    };
    http.record_route(
        &route.series,
        SERVER,
        &exchange.route,
        &exchange.method,
        status,
        reason,
        duration,
    );
    route.window.record(
        crate::clock::monotonic_ms_at(ended.into_std()),
        duration,
        Verdict::of(
            status.as_u16(),
            exchange.own_answer.then_some(reason).flatten(),
        ),
    );
    if let Some(upstream) = exchange.attempted.upstream {
        let labels = || ServiceLabels {
            service: Arc::clone(&route.service),
        };
        route
            .upstream_duration
            .get_or_init(|| {
                observe
                    .gateway
                    .upstream_duration
                    .get_or_create_owned(&labels())
            })
            .observe(upstream.as_secs_f64());
        if exchange.attempted.retries > 0 {
            observe
                .gateway
                .retries
                .get_or_create(&labels())
                .inc_by(u64::from(exchange.attempted.retries));
        }
    }
}

/// How the exchange was answered, for its log line.
struct Answered<'a> {
    request_id: &'a HeaderValue,
    trace_id: Option<TraceId>,
    status: http::StatusCode,
    reason: Option<&'static str>,
    duration: std::time::Duration,
    bytes_out: u64,
}

/// The exchange's access-log line, when the log is on.
fn log(observe: &Observe, exchange: Exchange, answer: Answered<'_>) {
    let Answered {
        request_id,
        trace_id,
        status,
        reason,
        duration,
        bytes_out,
    } = answer;
    if observe.access_log.is_on() {
        observe.access_log.record(AccessRecord {
            request_id: request_id.to_str().unwrap_or_default().to_owned(),
            trace_id,
            server: SERVER,
            route: exchange.route.as_template().cloned(),
            method: exchange.method,
            status: status.as_u16(),
            reason,
            principal: exchange.principal,
            instance: exchange.attempted.instance,
            duration,
            upstream_duration: exchange.attempted.upstream,
            bytes_in: exchange.bytes_in,
            bytes_out,
        });
    }
}
