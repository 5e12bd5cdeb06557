//! What the observe phase costs a request: queueing an access-log line, and counting an answer
//! through a cached counter handle or through the family's lookup.
//!
//! `cargo bench -p kit --bench observe`. Numbers go in docs/BENCHMARKS.md, never in a test.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, StatusCode};
use kit::observe::{
    AccessLog, AccessRecord, MethodLabel, Metrics, RequestLabels, RouteLabel, StatusClass,
};

fn record(route: &Arc<str>) -> AccessRecord {
    AccessRecord {
        request_id: "0192f1a0-7c2e-7c3a-9d1e-5b8f2a3c4d5e".to_owned(),
        trace_id: Some(kit::trace::TraceId::from(
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        )),
        server: "gateway",
        route: Some(Arc::clone(route)),
        method: Method::GET,
        status: 200,
        reason: None,
        principal: Some("0192f1a0-7c2e-7c3a-9d1e-000000000001".to_owned()),
        instance: Some(Arc::from("http://127.0.0.1:8103")),
        duration: Duration::from_micros(420),
        upstream_duration: Some(Duration::from_micros(310)),
        bytes_in: 0,
        bytes_out: 512,
    }
}

fn observe(c: &mut Criterion) {
    let metrics = Metrics::new();
    let route: Arc<str> = Arc::from("/api/time");
    let labels = RequestLabels {
        server: "gateway",
        route: RouteLabel::template(Arc::clone(&route)),
        method: MethodLabel::Get,
        status_class: StatusClass::Success,
        reason: "",
    };

    let cached = metrics.http().requests.get_or_create_owned(&labels);
    c.bench_function("cached counter inc", |b| b.iter(|| cached.inc()));

    let route_label = RouteLabel::template(Arc::clone(&route));
    c.bench_function("HttpMetrics::record (family lookup + histogram)", |b| {
        b.iter(|| {
            metrics.http().record(
                "gateway",
                &route_label,
                &Method::GET,
                StatusCode::OK,
                None,
                Duration::from_micros(420),
            )
        })
    });

    // The writer thread formats to a sink; when it falls behind, `record` drops and counts,
    // which costs no more than a send.
    let log = AccessLog::to_writer(std::io::sink(), 4096, &metrics).expect("a writer thread");
    c.bench_function(
        "AccessLog::record (building the record + queueing it)",
        |b| b.iter(|| log.record(record(&route))),
    );
}

criterion_group!(benches, observe);
criterion_main!(benches);
