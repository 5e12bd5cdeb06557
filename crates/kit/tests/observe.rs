//! The kit's observe layer seen from outside: a small service on real sockets, its `/metrics`
//! scraped from the admin listener and parsed as Prometheus would, its access log read back.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use kit::extract::{Json, Path};
use kit::observe::EXPOSITION_CONTENT_TYPE;
use kit::service::Service;
use kit::testing::{spawn_service, FakeGateway, SpawnedService};
use kit::{Identity, PrincipalKind, Problem};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// `GET /items/{id}`: item 1 exists; `POST /items` wants `{ "name": <non-empty string> }`.
fn routes() -> Router {
    #[derive(Deserialize)]
    struct NewItem {
        name: String,
    }
    async fn read(_caller: Identity, Path(id): Path<u32>) -> Result<Json<Value>, Problem> {
        match id {
            1 => Ok(Json(json!({ "id": 1, "name": "first" }))),
            _ => Err(Problem::not_found("No such item.")),
        }
    }
    async fn create(Json(item): Json<NewItem>) -> Result<Json<Value>, Problem> {
        if item.name.is_empty() {
            return Err(Problem::invalid_fields(vec![kit::FieldError::new(
                "name",
                "must not be empty",
            )]));
        }
        Ok(Json(json!({ "id": 2, "name": item.name })))
    }
    Router::new()
        .route("/items/{id}", get(read))
        .route("/items", post(create))
}

/// The items service, served as every service is in tests, and the stand-in gateway that
/// signs its identity tokens.
struct TestApp {
    service: SpawnedService,
    gateway: FakeGateway,
}

async fn spawn_app() -> TestApp {
    let gateway = FakeGateway::for_service("items");
    let service = spawn_service(Service::new(
        "items",
        routes(),
        Arc::new(gateway.verifier()),
    ))
    .await;
    TestApp { service, gateway }
}

impl TestApp {
    /// The identity token of `subject`, a user with no role or scope.
    fn token_for(&self, subject: &str) -> String {
        self.gateway
            .sign(&self.gateway.claims(subject, PrincipalKind::User, &[], ""))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::StatusCode {
        let call = self.service.call(Method::GET, path).identity(token);
        call.send().await.status
    }

    async fn create(&self, body: &Value) -> reqwest::StatusCode {
        let call = self.service.call(Method::POST, "/items");
        call.body("application/json", body.to_string())
            .send()
            .await
            .status
    }

    /// `/metrics` from the admin listener, checked to be valid OpenMetrics.
    async fn scrape(&self) -> Exposition {
        let response = self
            .service
            .http
            .get(format!("{}/metrics", self.service.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            EXPOSITION_CONTENT_TYPE,
            "Prometheus picks the parser by content type"
        );
        let text = response.text().await.unwrap();
        openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|error| panic!("not valid OpenMetrics ({error:?}):\n{text}"))
    }

    /// The `gatehouse_requests_total` series, scraped until their total is `expected`: an
    /// answer is counted when its body has ended, a moment after the client read it.
    async fn requests_once_counted(&self, expected: u64) -> Vec<(Vec<(String, String)>, u64)> {
        kit::testing::wait::read_until(
            || self.requests_series(),
            |series| series.iter().map(|(_, count)| count).sum::<u64>() >= expected,
        )
        .await
    }

    /// The `gatehouse_requests_total` series now, each as its sorted labels and its count.
    async fn requests_series(&self) -> Vec<(Vec<(String, String)>, u64)> {
        let exposition = self.scrape().await;
        exposition
            .families
            .get("gatehouse_requests")
            .map(|family| {
                let names = family.get_label_names().to_vec();
                family
                    .iter_samples()
                    .map(|sample| {
                        let set = sample.get_labelset().unwrap();
                        let mut labels: Vec<(String, String)> = names
                            .iter()
                            .map(|name| {
                                let value = set.get_label_value(name).unwrap_or_default();
                                (name.clone(), value.to_owned())
                            })
                            .collect();
                        labels.sort();
                        let OpenMetricsValue::Counter(counter) = &sample.value else {
                            panic!("a counter: {:?}", sample.value);
                        };
                        (labels, counter.value.as_f64() as u64)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log_lines(&self, count: usize) -> Vec<Value> {
        self.service.watch.log_lines(count)
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

#[tokio::test]
async fn a_known_mix_of_answers_is_counted_exactly_by_route_template_with_reasons() {
    let app = spawn_app().await;
    let token = app.token_for("user-1");

    for _ in 0..3 {
        assert_eq!(app.get("/items/1", Some(&token)).await, 200);
    }
    assert_eq!(app.get("/items/2", Some(&token)).await, 404);
    assert_eq!(app.get("/nowhere", None).await, 404);
    assert_eq!(app.create(&json!({ "name": "" })).await, 422);

    let series = app.requests_once_counted(6).await;

    let expected = [
        (
            labels(&[
                ("server", "items"),
                ("route", "/items/{id}"),
                ("method", "GET"),
                ("status_class", "2xx"),
                ("reason", ""),
            ]),
            3,
        ),
        (
            labels(&[
                ("server", "items"),
                ("route", "/items/{id}"),
                ("method", "GET"),
                ("status_class", "4xx"),
                ("reason", "not_found"),
            ]),
            1,
        ),
        (
            labels(&[
                ("server", "items"),
                ("route", "unmatched"),
                ("method", "GET"),
                ("status_class", "4xx"),
                ("reason", "not_found"),
            ]),
            1,
        ),
        (
            labels(&[
                ("server", "items"),
                ("route", "/items"),
                ("method", "POST"),
                ("status_class", "4xx"),
                ("reason", "validation_failed"),
            ]),
            1,
        ),
    ];
    for want in &expected {
        assert!(series.contains(want), "missing {want:?} in {series:?}");
    }
    assert_eq!(series.len(), expected.len(), "no other series: {series:?}");
}

#[tokio::test]
async fn every_error_series_names_its_reason() {
    let app = spawn_app().await;
    let token = app.token_for("user-1");

    assert_eq!(app.get("/items/1", None).await, 401);
    assert_eq!(app.get("/items/1", Some("not-a-token")).await, 401);
    assert_eq!(app.get("/items/not-a-number", Some(&token)).await, 404);
    let response = app
        .service
        .http
        .post(format!("{}/items", app.service.address))
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .service
        .http
        .delete(format!("{}/items/1", app.service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    let series = app.requests_once_counted(5).await;

    let reasons: Vec<&str> = series
        .iter()
        .filter(|(labels, _)| {
            labels
                .iter()
                .any(|(k, v)| k == "status_class" && (v == "4xx" || v == "5xx"))
        })
        .map(|(labels, _)| {
            labels
                .iter()
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        })
        .collect();
    assert_eq!(reasons.len(), series.len(), "all were errors: {series:?}");
    assert!(
        reasons.iter().all(|reason| !reason.is_empty()),
        "{series:?}"
    );
    assert!(reasons.contains(&"token_missing"), "{reasons:?}");
    assert!(reasons.contains(&"token_invalid"), "{reasons:?}");
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_with_every_field_and_no_secret() {
    let app = spawn_app().await;
    let token = app.token_for("user-7");

    let response = app
        .service
        .http
        .get(format!(
            "{}/items/1?access_token=secret-in-query",
            app.service.address
        ))
        .header(kit::identity::HEADER, &token)
        .header("authorization", "Bearer secret-in-header")
        .header("x-request-id", "req-observe-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body_length = response.bytes().await.unwrap().len() as u64;
    assert_eq!(app.create(&json!({ "name": "second" })).await, 200);

    let lines = app.log_lines(2);

    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = &lines[0];
    kit::testing::observe::assert_every_field(line);
    assert_eq!(line["request_id"], "req-observe-1");
    assert_eq!(line["server"], "items");
    assert_eq!(line["route"], "/items/{id}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["reason"], Value::Null);
    assert_eq!(line["principal"], "user-7", "the caller the token named");
    assert_eq!(line["bytes_out"], body_length);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    let created = &lines[1];
    assert_eq!(created["principal"], Value::Null, "no identity asked for");
    assert_eq!(
        created["bytes_in"],
        json!({ "name": "second" }).to_string().len() as u64
    );

    let text = app.service.watch.log_text();
    for secret in ["secret", "access_token", &token[..20], "Bearer"] {
        assert!(!text.contains(secret), "{secret:?} in the log: {text}");
    }
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let app = spawn_app().await;

    let public = app
        .service
        .http
        .get(format!("{}/metrics", app.service.address))
        .send()
        .await
        .unwrap();

    assert_eq!(public.status(), 404);
    assert!(!public.text().await.unwrap().contains("gatehouse_requests"));
    let counted = app.requests_once_counted(1).await;
    assert_eq!(
        counted.len(),
        1,
        "the public 404 is counted, and seen on the admin port"
    );
    let other = app
        .service
        .http
        .get(format!("{}/healthz", app.service.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the admin listener serves metrics only"
    );
}

#[tokio::test]
async fn a_duration_is_observed_per_answer_under_its_route_template() {
    let app = spawn_app().await;

    for id in [1, 2, 3] {
        app.get(&format!("/items/{id}"), Some(&app.token_for("u")))
            .await;
    }
    app.requests_once_counted(3).await;

    let exposition = app.scrape().await;
    let family = &exposition.families["gatehouse_request_duration_seconds"];
    let sample = family
        .iter_samples()
        .find(|sample| {
            sample.get_labelset().unwrap().get_label_value("route") == Some("/items/{id}")
        })
        .unwrap();
    let OpenMetricsValue::Histogram(histogram) = &sample.value else {
        panic!("a histogram: {:?}", sample.value);
    };
    assert_eq!(histogram.count, Some(3));
    let first = histogram.buckets.first().unwrap();
    let last_finite = histogram
        .buckets
        .iter()
        .rfind(|bucket| bucket.upper_bound.is_finite())
        .unwrap();
    assert_eq!(first.upper_bound, 0.000_05);
    assert_eq!(last_finite.upper_bound, 10.0);
}
