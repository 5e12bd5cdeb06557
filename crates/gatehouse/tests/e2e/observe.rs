//! `gatehouse up` observes every service into one registry and one access log, told apart by
//! the `server` label. (The gateway's own observe phase is wired separately.)

use kit::testing::observe::{request_counts, RequestCount};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::process::StandaloneClock;
use crate::harness::{spawn_app, wait_for};

/// The shared registry's request series, once their total reaches `expected` (an answer is
/// counted when its body has ended, a moment after the client read it).
async fn counted(metrics: &kit::observe::Metrics, expected: u64) -> Vec<RequestCount> {
    wait_for(&format!("{expected} requests counted"), || async {
        let series = request_counts(&metrics.render());
        (series.iter().map(|s| s.count).sum::<u64>() >= expected).then_some(series)
    })
    .await
}

#[tokio::test]
async fn every_service_behind_the_gateway_counts_into_one_registry_by_server() {
    let app = spawn_app().await;
    let user = app.token("test", "test").await; // the users service checks the password
    let time = app.get("/api/time", Some(&user)).await; // clock
    assert_eq!(time.status(), 200);
    let order = json!({ "items": [{ "sku": "tea", "quantity": 1, "unit_price_cents": 350 }] });
    let created = app
        .send_json(Method::POST, "/api/orders", &user, &order)
        .await; // orders
    assert_eq!(created.status(), 201);

    let series = counted(&app.metrics, 3).await;

    for server in ["users", "clock", "orders"] {
        assert!(
            series.iter().any(|s| s.server == server),
            "{server} counts into the shared registry: {series:?}"
        );
    }
    let clock: Vec<&RequestCount> = series.iter().filter(|s| s.server == "clock").collect();
    assert_eq!(clock.len(), 1, "{clock:?}");
    assert_eq!(
        (
            clock[0].route.as_str(),
            clock[0].status_class.as_str(),
            clock[0].count
        ),
        ("/time", "2xx", 1)
    );
}

#[tokio::test]
async fn the_services_access_log_names_the_caller_and_never_the_query() {
    let app = spawn_app().await;
    let user = app.token("test", "test").await;

    let time = app
        .get("/api/time?access_token=secret-in-query", Some(&user))
        .await;
    assert_eq!(time.status(), 200);

    let path = app.data.path().join("access.log");
    let clock_line = wait_for("an access-log line from clock", || async {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let line = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|line| line["server"] == "clock")?;
        assert!(!text.contains("secret"), "{text}");
        Some(line)
    })
    .await;
    assert_eq!(clock_line["route"], "/time");
    assert!(
        clock_line["principal"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "the verified user: {clock_line}"
    );
}

#[tokio::test]
async fn a_standalone_service_serves_metrics_on_its_admin_port_and_logs_to_its_file() {
    let folder = tempfile::tempdir().unwrap();
    let log = folder.path().join("access.log");
    let clock = StandaloneClock::start(&log.display().to_string()).await;
    let http = crate::harness::client();
    let (public, admin) = (&clock.url, &clock.admin);
    crate::harness::wait_for("the clock process to answer", || async {
        let response = http.get(format!("{public}/healthz")).send().await;
        response.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;

    let on_public = http.get(format!("{public}/metrics")).send().await.unwrap();
    let exposition = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logged = wait_for("the /healthz answer in the access log", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let healthz = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .any(|line| line["route"] == "/healthz");
        healthz.then_some(text)
    })
    .await;
    drop(clock);

    assert!(logged.contains(r#""route":"/healthz""#), "{logged}");
    assert_eq!(on_public.status(), 404, "never on the public port");
    let series = request_counts(&exposition);
    assert!(
        series
            .iter()
            .any(|s| s.server == "clock" && s.route == "/healthz" && s.status_class == "2xx"),
        "{series:?}"
    );
}
