//! The gateway's observe phase, as an operator sees it: `/metrics` on the admin listener (and
//! nowhere on the public one), parsed with an exposition-format parser, counting a known mix of
//! answers exactly, each refusal with its reason; and one access-log line per request with every
//! field and nothing that could carry a token.

use std::time::Duration;

use kit::testing::observe::{parse, request_counts, RequestCount};
use serde_json::Value;

use crate::harness::{spawn_app, wait_for, TestApp};

const JWKS: &str = "/.well-known/jwks.json";

async fn scrape(app: &TestApp) -> String {
    let response = app.admin_get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The gateway's request series once they add up to `expected` (an answer is counted when its
/// body has gone out, a moment after the client read it).
async fn gateway_counts(app: &TestApp, expected: u64) -> (Vec<RequestCount>, String) {
    wait_for(&format!("{expected} gateway requests counted"), || async {
        let exposition = scrape(app).await;
        // The services fetch the gateway's keys as they start: not part of the mix.
        let series: Vec<RequestCount> = request_counts(&exposition)
            .into_iter()
            .filter(|series| series.server == "gateway" && series.route != JWKS)
            .collect();
        let total: u64 = series.iter().map(|s| s.count).sum();
        (total >= expected).then_some((series, exposition))
    })
    .await
}

fn count(series: &[RequestCount], route: &str, method: &str, class: &str, reason: &str) -> u64 {
    series
        .iter()
        .filter(|s| {
            s.route == route && s.method == method && s.status_class == class && s.reason == reason
        })
        .map(|s| s.count)
        .sum()
}

#[tokio::test]
async fn a_known_mix_of_answers_is_counted_exactly_and_every_refusal_names_its_reason() {
    let app = spawn_app().await;
    let status = |response: reqwest::Response| response.status().as_u16();

    for _ in 0..3 {
        assert_eq!(status(app.get("/api/public/a", None).await), 200);
    }
    for _ in 0..2 {
        assert_eq!(status(app.get("/api/no-such-route", None).await), 404);
    }
    assert_eq!(status(app.get("/api/echo/x", None).await), 401);
    assert_eq!(status(app.get("/api/echo/x", Some("not-a-jwt")).await), 401);
    let delete = app
        .http
        .delete(app.url("/api/public/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(delete), 405);
    assert_eq!(status(app.get("/api/dead", None).await), 503);
    assert_eq!(status(app.get("/api/slow", None).await), 504);
    assert_eq!(status(app.get("/api/garbage", None).await), 502);

    let (series, exposition) = gateway_counts(&app, 11).await;
    let expected = [
        ("/api/public/{*rest}", "GET", "2xx", "", 3),
        ("unmatched", "GET", "4xx", "no_route", 2),
        ("/api/echo/{*rest}", "GET", "4xx", "token_missing", 1),
        ("/api/echo/{*rest}", "GET", "4xx", "token_invalid", 1),
        ("unmatched", "DELETE", "4xx", "method_not_allowed", 1),
        ("/api/dead", "GET", "5xx", "upstream_unreachable", 1),
        ("/api/slow", "GET", "5xx", "upstream_timeout", 1),
        ("/api/garbage", "GET", "5xx", "upstream_bad_response", 1),
    ];
    for (route, method, class, reason, n) in expected {
        assert_eq!(
            count(&series, route, method, class, reason),
            n,
            "{route} {method} {class} {reason:?} in {series:#?}"
        );
    }
    assert_eq!(
        series.iter().map(|s| s.count).sum::<u64>(),
        11,
        "nothing else was counted: {series:#?}"
    );
    for refused in series.iter().filter(|s| s.status_class != "2xx") {
        assert!(!refused.reason.is_empty(), "{refused:?} has a reason");
    }

    // The gateway's own families are in the same, valid exposition.
    let families = parse(&exposition).families;
    for family in [
        "gatehouse_request_duration_seconds",
        "gatehouse_upstream_duration_seconds",
        "gatehouse_instance_healthy",
        "gatehouse_instance_ejected",
        "gatehouse_token_verifications",
        "gatehouse_open_connections",
    ] {
        assert!(families.contains_key(family), "{family} is exported");
    }
    assert!(
        exposition.contains(r#"gatehouse_token_verifications_total{outcome="token_missing"} 1"#),
        "{exposition}"
    );
}

#[tokio::test]
async fn metrics_and_the_detailed_readiness_are_not_on_the_public_port() {
    let app = spawn_app().await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status(), 404);
    assert!(!metrics.text().await.unwrap().contains("gatehouse_requests"));
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready, serde_json::json!({ "status": "ready" }));
    assert!(scrape(&app).await.contains("gatehouse_requests_total"));
}

#[tokio::test]
async fn the_access_log_line_of_a_request_has_every_field_and_never_a_token_or_query_value() {
    let app = spawn_app().await;
    let token = app.token("test", "test").await;
    let response = app
        .http
        .get(app.url("/api/echo/x?access_token=QUERYSECRET"))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body_length = response.bytes().await.unwrap().len() as u64;

    let log = app.data.path().join("access.log");
    let line = wait_for("the gateway's access-log line for the request", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("one JSON object per line"))
            .find(|line| line["server"] == "gateway" && line["request_id"] == "trace-me-42");
        let line = found?;
        assert!(!text.contains(&token), "no access token in the log");
        assert!(!text.contains("QUERYSECRET"), "no query value in the log");
        Some(line)
    })
    .await;
    assert_eq!(line["route"], "/api/echo/{*rest}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["reason"], Value::Null);
    assert!(
        line["principal"].as_str().is_some_and(|id| !id.is_empty()),
        "{line}"
    );
    assert!(
        line["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
    assert!(
        line["duration_ms"].as_f64() >= line["upstream_ms"].as_f64(),
        "{line}"
    );
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["bytes_out"], body_length, "{line}");
    assert!(
        line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_the_answer_is_counted_as_499_client_closed() {
    let app = spawn_app().await;
    // The service takes longer than the client waits (and than the route's 300 ms timeout).
    let gave_up = app
        .http
        .get(app.url("/api/slow"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up first");

    let (series, _) = gateway_counts(&app, 1).await;
    assert_eq!(
        count(&series, "/api/slow", "GET", "4xx", "client_closed"),
        1,
        "{series:#?}"
    );
    assert_eq!(
        count(&series, "/api/slow", "GET", "5xx", "upstream_timeout"),
        0,
        "the gateway stopped working on it when the client left: {series:#?}"
    );
}
