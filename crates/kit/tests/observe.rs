//! The kit's observe layer seen from outside: a small service on real sockets, its `/metrics`
//! scraped from the admin listener and parsed as Prometheus would, its access log read back.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use kit::extract::{Json, Path};
use kit::identity::{IdentityClaims, VerifyingKey, TOKEN_TYPE};
use kit::observe::{AccessLog, AccessLogTarget, Metrics, EXPOSITION_CONTENT_TYPE};
use kit::service::Service;
use kit::shutdown::Shutdown;
use kit::{Identity, IdentityVerifier, PrincipalKind, Problem};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

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

/// Signs identity tokens for the test service, as the gateway would.
struct Signer {
    key: EncodingKey,
    verifier: Arc<IdentityVerifier>,
}

impl Signer {
    fn new() -> Self {
        let secret = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let verifying = VerifyingKey {
            key: DecodingKey::from_ed_der(secret.verifying_key().as_bytes()),
            algorithm: Algorithm::EdDSA,
        };
        Self {
            key: EncodingKey::from_ed_der(secret.to_pkcs8_der().unwrap().as_bytes()),
            verifier: Arc::new(IdentityVerifier::with_keys(
                "items",
                "gatehouse",
                [("k1".to_owned(), verifying)],
            )),
        }
    }

    fn token_for(&self, subject: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some("k1".to_owned());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = IdentityClaims {
            iss: "gatehouse".into(),
            aud: "items".into(),
            sub: subject.into(),
            kind: PrincipalKind::User,
            username: None,
            roles: vec![],
            scope: String::new(),
            iat: now,
            exp: now + 60,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

struct TestApp {
    public: String,
    admin: String,
    log: std::path::PathBuf,
    signer: Signer,
    http: reqwest::Client,
    shutdown: Shutdown,
    _folder: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn spawn_app() -> TestApp {
    let folder = tempfile::tempdir().unwrap();
    let log = folder.path().join("access.log");
    let metrics = Metrics::new();
    let access_log = AccessLog::open(&AccessLogTarget::File(log.clone()), &metrics).unwrap();
    let signer = Signer::new();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addresses = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let service = Service::new("items", routes(), Arc::clone(&signer.verifier))
        .with_observe(metrics, access_log)
        .with_admin_listener(admin);
    tokio::spawn(service.serve(public, shutdown.clone()));
    TestApp {
        public: format!("http://{}", addresses.0),
        admin: format!("http://{}", addresses.1),
        log,
        signer,
        http: reqwest::Client::new(),
        shutdown,
        _folder: folder,
    }
}

impl TestApp {
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::StatusCode {
        let mut request = self.http.get(format!("{}{path}", self.public));
        if let Some(token) = token {
            request = request.header(kit::identity::HEADER, token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        response.bytes().await.unwrap();
        status
    }

    async fn create(&self, body: &Value) -> reqwest::StatusCode {
        let response = self
            .http
            .post(format!("{}/items", self.public))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        response.bytes().await.unwrap();
        status
    }

    /// `/metrics` from the admin listener, checked to be valid OpenMetrics.
    async fn scrape(&self) -> Exposition {
        let response = self
            .http
            .get(format!("{}/metrics", self.admin))
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exposition = self.scrape().await;
            let series: Vec<(Vec<(String, String)>, u64)> = exposition
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
                .unwrap_or_default();
            let total: u64 = series.iter().map(|(_, count)| count).sum();
            if total >= expected || Instant::now() > deadline {
                return series;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_lines(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
    let token = app.signer.token_for("user-1");

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
    let token = app.signer.token_for("user-1");

    assert_eq!(app.get("/items/1", None).await, 401);
    assert_eq!(app.get("/items/1", Some("not-a-token")).await, 401);
    assert_eq!(app.get("/items/not-a-number", Some(&token)).await, 404);
    let response = app
        .http
        .post(format!("{}/items", app.public))
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .http
        .delete(format!("{}/items/1", app.public))
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
    let token = app.signer.token_for("user-7");

    let response = app
        .http
        .get(format!(
            "{}/items/1?access_token=secret-in-query",
            app.public
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

    let text = std::fs::read_to_string(&app.log).unwrap();
    for secret in ["secret", "access_token", &token[..20], "Bearer"] {
        assert!(!text.contains(secret), "{secret:?} in the log: {text}");
    }
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let app = spawn_app().await;

    let public = app
        .http
        .get(format!("{}/metrics", app.public))
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
        .http
        .get(format!("{}/healthz", app.admin))
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
        app.get(&format!("/items/{id}"), Some(&app.signer.token_for("u")))
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
