//! What operators see of the orders service: exact counts by route template and reason on the
//! admin listener's `/metrics`, and an access-log line per request that carries no secret.

use kit::testing::observe::{duration_count, RequestCount};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{id_of, spawn_app, two_items};

fn series(route: &str, method: &str, class: &str, reason: &str, count: u64) -> RequestCount {
    RequestCount {
        server: "orders".into(),
        route: route.into(),
        method: method.into(),
        status_class: class.into(),
        reason: reason.into(),
        count,
    }
}

#[tokio::test]
async fn a_known_mix_of_requests_is_counted_exactly_with_a_reason_for_every_error() {
    let app = spawn_app().await;
    let alice = app.user();
    let order = alice.create_order(&two_items()).await;
    let id = id_of(&order);

    for _ in 0..3 {
        assert_eq!(alice.get(&format!("/orders/{id}")).await.status, 200);
    }
    for _ in 0..2 {
        let missing = format!("/orders/{}", uuid::Uuid::now_v7());
        assert_eq!(alice.get(&missing).await.status, 404);
    }
    let invalid = alice.post("/orders", &json!({ "items": [] })).await;
    assert_eq!(invalid.status, 422);

    let mut counted = app.service.request_counts(7).await;
    counted.sort_by(|a, b| (&a.route, &a.method, &a.reason).cmp(&(&b.route, &b.method, &b.reason)));

    assert_eq!(
        counted,
        vec![
            series("/orders", "POST", "2xx", "", 1),
            series("/orders", "POST", "4xx", "validation_failed", 1),
            series("/orders/{id}", "GET", "2xx", "", 3),
            series("/orders/{id}", "GET", "4xx", "not_found", 2),
        ]
    );
    let exposition = app.service.scrape().await;
    assert_eq!(duration_count(&exposition, "orders", "/orders/{id}"), 5);
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_with_every_field_and_no_token_or_query() {
    let app = spawn_app().await;
    let alice = app.user();
    let order = alice.create_order(&two_items()).await;

    let read = alice
        .send(
            Method::GET,
            &format!("/orders/{}?access_token=secret", id_of(&order)),
            None,
            &[
                ("authorization", "Bearer secret"),
                ("x-request-id", "req-42"),
            ],
        )
        .await;
    assert_eq!(read.status, 200);

    let lines = app.service.watch.log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = &lines[1];
    kit::testing::observe::assert_every_field(line);
    assert_eq!(line["request_id"], "req-42");
    assert_eq!(line["route"], "/orders/{id}");
    assert_eq!(line["principal"], alice.user_id().to_string());
    assert_eq!(line["bytes_out"], read.text.len() as u64);
    assert_eq!(lines[0]["status"], 201);
    assert_eq!(lines[0]["bytes_in"], two_items().to_string().len() as u64);
    let text = app.service.watch.log_text();
    assert!(!text.contains("secret"), "{text}");
    assert!(!text.contains("access_token"), "{text}");
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_listener() {
    let app = spawn_app().await;

    let public = app.anonymous().get("/metrics").await;

    assert_eq!(public.status, 404);
    assert!(!public.text.contains("gatehouse_requests"));
    assert!(app
        .service
        .scrape()
        .await
        .contains("gatehouse_requests_total"));
}
