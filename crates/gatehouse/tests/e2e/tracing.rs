//! Tracing across the fleet, as an operator's collector sees it: an OTLP/HTTP receiver of the
//! test's own (protobuf decoded with `opentelemetry-proto`) gets the spans of one request through
//! gateway → orders with one trace id and the right parents; the client's `traceparent` is
//! continued and a malformed one replaced; the access log and problem bodies carry the trace id.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::Value;

use crate::harness::{assert_problem, spawn_app, spawn_app_with, wait_for, TestApp};

/// One span as the collector received it, ids in the hex the W3C headers use.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    /// Empty for a span without a parent.
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A collector's OTLP/HTTP trace endpoint: `POST /v1/traces`, protobuf in and out.
struct Collector {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, spans }
    }

    /// The spans of `trace_id` once `expected` of them have arrived (the exporter batches).
    async fn trace(&self, trace_id: &str, expected: usize) -> Vec<Received> {
        wait_for(&format!("{expected} spans of trace {trace_id}"), || async {
            let spans: Vec<Received> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            (spans.len() >= expected).then_some(spans)
        })
        .await
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Received>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut answer = HeaderMap::new();
    answer.insert(
        header::CONTENT_TYPE,
        "application/x-protobuf".parse().unwrap(),
    );
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|kind| kind != "application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, answer, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, answer, Vec::new());
    };
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Received {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                        (kv.key.clone(), text(value))
                    })
                    .collect(),
            });
        }
    }
    let ok = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer, ok)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    }
}

/// The system with every part exporting to `collector`.
async fn traced_app(collector: &Collector) -> TestApp {
    let address = collector.address;
    spawn_app_with(move |config| {
        format!("{config}telemetry: {{ otlp_endpoint: \"http://{address}\", sample_ratio: 1 }}\n")
    })
    .await
}

/// The access-log lines (every part's: they share the file under `up`) of `trace_id`, once
/// `expected` of them are written.
async fn access_lines(app: &TestApp, trace_id: &str, expected: usize) -> Vec<Value> {
    let path = app.data.path().join("access.log");
    wait_for(
        &format!("{expected} access-log lines of {trace_id}"),
        || async {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .filter(|line| line["trace_id"] == trace_id)
                .collect();
            (lines.len() >= expected).then_some(lines)
        },
    )
    .await
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>() | 1))
        .collect()
}

#[tokio::test]
async fn one_request_through_gateway_and_orders_is_one_trace_with_each_phase_under_the_gateways_span(
) {
    let collector = Collector::start().await;
    let app = traced_app(&collector).await;
    let token = app.token("test", "test").await;
    let (trace_id, client_span) = (random_hex(16), random_hex(8));

    let response = app
        .http
        .get(app.url("/api/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The gateway's server span, route, authenticate, forward; the orders service's server span.
    let spans = collector.trace(&trace_id, 5).await;
    let named = |service: &str, name: &str| {
        spans
            .iter()
            .find(|span| span.service == service && span.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in {spans:#?}"))
    };
    let gateway = named("gateway", "request");
    assert_eq!(
        gateway.parent, client_span,
        "the client's span is the parent"
    );
    assert_eq!(gateway.attribute("http.route"), Some("/api/orders"));
    assert_eq!(gateway.attribute("http.response.status_code"), Some("200"));
    for phase in ["route", "authenticate", "forward"] {
        let span = named("gateway", phase);
        assert_eq!(span.parent, gateway.span_id, "{phase} is under the request");
    }
    let forward = named("gateway", "forward");
    assert_eq!(forward.attribute("gatehouse.service"), Some("orders"));
    assert_eq!(forward.attribute("gatehouse.retries"), Some("0"));
    assert_eq!(forward.attribute("http.response.status_code"), Some("200"));
    assert!(
        forward
            .attribute("gatehouse.instance")
            .is_some_and(|instance| app.orders.ends_with(instance.trim_start_matches("http://"))),
        "the instance that answered: {forward:?}"
    );
    let orders = named("orders", "request");
    assert_eq!(
        orders.parent, forward.span_id,
        "the service continues the trace under the gateway's forward span"
    );
    assert_eq!(orders.attribute("http.route"), Some("/orders"));
    // No limits, cache, transform or composition on this route: no span for them.
    for idle in ["limit", "cache", "transform", "part"] {
        assert!(
            !spans.iter().any(|span| span.name == idle),
            "{idle} did no work"
        );
    }
    // Nothing that could identify the caller or replay its token.
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(!value.contains(&token), "{key} carries the token");
            assert!(
                !key.contains("user") && !key.contains("principal") && !key.contains("query"),
                "{key} is personal"
            );
        }
    }

    let lines = access_lines(&app, &trace_id, 2).await;
    let servers: Vec<&str> = lines
        .iter()
        .map(|line| line["server"].as_str().unwrap())
        .collect();
    assert!(
        servers.contains(&"gateway") && servers.contains(&"orders"),
        "{servers:?}"
    );
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_that_the_404_problem_and_the_log_name() {
    let collector = Collector::start().await;
    let app = traced_app(&collector).await;
    let upper = format!("00-{}-{}-01", random_hex(16).to_uppercase(), random_hex(8));

    let response = app
        .http
        .get(app.url("/api/no-such-route"))
        .header("traceparent", &upper)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 404).await;

    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(
        !upper.to_ascii_lowercase().contains(&trace_id),
        "the malformed id is not echoed"
    );
    let spans = collector.trace(&trace_id, 2).await;
    let request = spans
        .iter()
        .find(|span| span.name == "request")
        .expect("the gateway's server span");
    assert_eq!(request.parent, "", "a new trace has no parent");
    assert_eq!(request.attribute("gatehouse.reason"), Some("no_route"));
    let route = spans.iter().find(|span| span.name == "route").unwrap();
    assert_eq!(route.attribute("gatehouse.reason"), Some("no_route"));

    let lines = access_lines(&app, &trace_id, 1).await;
    assert_eq!(lines[0]["request_id"], problem["request_id"]);
    assert_eq!(lines[0]["status"], 404);
}

#[tokio::test]
async fn with_export_off_the_service_still_continues_the_clients_trace_in_its_problem_and_log() {
    let app = spawn_app().await;
    let token = app.token("test", "test").await;
    let trace_id = random_hex(16);

    let response = app
        .http
        .get(app.url("/api/orders/00000000-0000-7000-8000-000000000000"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{}-00", random_hex(8)))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 404).await;

    assert_eq!(
        problem["trace_id"],
        trace_id.as_str(),
        "the orders service's problem"
    );
    let lines = access_lines(&app, &trace_id, 2).await;
    assert!(lines.iter().any(|line| line["server"] == "orders"));
    assert!(lines.iter().any(|line| line["server"] == "gateway"));
}
