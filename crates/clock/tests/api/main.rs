//! The clock service, tested from the outside: the real service on a real socket, and identity
//! tokens signed the way the gateway signs them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kit::testing::conformance::{assert_conforms, Contract};
use kit::testing::observe::RequestCount;
use kit::testing::{spawn_service, FakeGateway, SpawnedService};
use kit::PrincipalKind;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A running clock service and the stand-in gateway whose tokens it trusts; stopped on drop.
struct TestApp {
    service: SpawnedService,
    gateway: FakeGateway,
}

async fn spawn_app() -> TestApp {
    spawn_app_on(clock::http::AppState::default()).await
}

/// The service on `state`: a fixed clock, say.
async fn spawn_app_on(state: clock::http::AppState) -> TestApp {
    let gateway = FakeGateway::for_service(clock::NAME);
    let service = spawn_service(clock::service_with(state, Arc::new(gateway.verifier()))).await;
    TestApp { service, gateway }
}

impl TestApp {
    /// The identity token of a signed-in user with `scope`.
    fn user(&self, scope: &str) -> String {
        self.gateway.user(&new_id(), &["user"], scope)
    }

    /// `GET path` with the identity token `token`, if any.
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let response = self
            .service
            .call(Method::GET, path)
            .identity(token)
            .send()
            .await;
        (response.status, response.json())
    }

    async fn time(&self, token: &str) -> (StatusCode, Value) {
        self.get("/time", Some(token)).await
    }
}

fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Parses `iso` and checks it is the present moment, written in UTC.
fn assert_is_now_in_utc(iso: &str) -> DateTime<Utc> {
    assert!(iso.ends_with('Z'), "not written in UTC: {iso}");
    let at = DateTime::parse_from_rfc3339(iso)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {iso}"))
        .with_timezone(&Utc);
    let off_by = (Utc::now() - at).num_seconds().abs();
    assert!(off_by < 60, "{iso} is {off_by}s away from now");
    at
}

#[tokio::test]
async fn time_read_gives_the_time_in_utc_and_nothing_more() {
    let app = spawn_app().await;

    let (status, body) = app.time(&app.user("time:read")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_is_now_in_utc(body["iso"].as_str().unwrap());
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["iso"], "no unix_ms without time:precise: {body}");
}

#[tokio::test]
async fn time_precise_adds_the_unix_time_of_the_same_instant_in_milliseconds() {
    let app = spawn_app().await;

    let (status, body) = app.time(&app.user("time:read time:precise")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let at = assert_is_now_in_utc(body["iso"].as_str().unwrap());
    let unix_ms = body["unix_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("unix_ms is not an integer: {body}"));
    assert_eq!(unix_ms, at.timestamp_millis(), "{body}");
}

#[tokio::test]
async fn the_answer_is_the_instant_of_the_services_clock_to_the_millisecond() {
    let at = DateTime::parse_from_rfc3339("2026-11-26T12:00:00.123987Z")
        .unwrap()
        .with_timezone(&Utc);
    let app = spawn_app_on(clock::http::AppState {
        now: clock::domain::Now::fixed(at),
    })
    .await;

    let (status, body) = app.time(&app.user("time:read time:precise")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "iso": "2026-11-26T12:00:00.123Z", "unix_ms": 1_795_694_400_123_i64 })
    );
}

#[tokio::test]
async fn without_time_read_the_answer_is_403_naming_the_scope() {
    let app = spawn_app().await;

    for (scope, who) in [
        ("", "a caller with no scope"),
        ("orders:read", "a caller with other scopes"),
        ("time:precise", "a caller with time:precise alone"),
        ("TIME:READ", "a caller whose scope differs in case"),
    ] {
        let (status, body) = app.time(&app.user(scope)).await;

        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("`time:read`"),
            "{who}: {body}"
        );
        assert_eq!(body["status"], 403, "{who}: a problem body: {body}");
    }
}

#[tokio::test]
async fn a_machine_client_with_time_read_gets_the_time_too() {
    let app = spawn_app().await;
    let claims = app
        .gateway
        .claims("reporting-job", PrincipalKind::Client, &[], "time:read");

    let (status, body) = app.time(&app.gateway.sign(&claims)).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_is_now_in_utc(body["iso"].as_str().unwrap());
}

#[tokio::test]
async fn without_a_valid_identity_token_the_answer_is_401() {
    let app = spawn_app().await;
    let for_users = {
        let mut claims =
            app.gateway
                .claims(&new_id().to_string(), PrincipalKind::User, &[], "time:read");
        claims.aud = "users".to_owned();
        app.gateway.sign(&claims)
    };
    let unknown_key = {
        let claims =
            app.gateway
                .claims(&new_id().to_string(), PrincipalKind::User, &[], "time:read");
        app.gateway.sign_as_stranger(&claims)
    };

    for (token, reason) in [
        (None, "no identity token"),
        (
            Some(for_users.as_str()),
            "a token minted for another service",
        ),
        (
            Some(unknown_key.as_str()),
            "a token signed by an unknown key",
        ),
    ] {
        let (status, body) = app.get("/time", token).await;

        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
        assert_eq!(body["status"], 401, "{reason}: a problem body: {body}");
    }
}

#[tokio::test]
async fn the_service_keeps_the_contract_every_service_keeps() {
    let app = spawn_app().await;

    let document = assert_conforms(
        &app.service,
        &Contract {
            title: "gatehouse clock",
            version: env!("CARGO_PKG_VERSION"),
            operations: &[("GET", "/time")],
            path_values: &[],
            ready_checks: &[],
            unbounded_strings: &[],
        },
    )
    .await;

    assert_eq!(
        document["paths"]["/time"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Time"
    );
}

#[tokio::test]
async fn answers_are_counted_by_route_with_the_reason_of_every_refusal() {
    let app = spawn_app().await;
    let reader = app.user("time:read");

    for _ in 0..2 {
        assert_eq!(app.time(&reader).await.0, StatusCode::OK);
    }
    assert_eq!(app.get("/time", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.time(&app.user("")).await.0, StatusCode::FORBIDDEN);

    let mut counted = app.service.request_counts(4).await;
    counted.sort_by(|a, b| a.reason.cmp(&b.reason));

    let series = |class: &str, reason: &str, count| RequestCount {
        server: "clock".into(),
        route: "/time".into(),
        method: "GET".into(),
        status_class: class.into(),
        reason: reason.into(),
        count,
    };
    assert_eq!(
        counted,
        vec![
            series("2xx", "", 2),
            series("4xx", "forbidden", 1),
            series("4xx", "token_missing", 1),
        ]
    );
    let lines = app.service.watch.log_lines(4);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|line| line["server"] == "clock"));
}
