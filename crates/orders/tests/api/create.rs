//! Creating an order: the caller owns it, the service computes the totals, it starts pending.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{id_of, order_of, spawn_app, two_items};

#[tokio::test]
async fn a_new_order_is_pending_belongs_to_the_caller_and_has_its_totals_computed() {
    let app = spawn_app().await;
    let alice = app.user();

    let response = alice.post("/orders", &two_items()).await;

    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let order = response.json();
    assert_eq!(
        response.header("location"),
        Some(format!("/orders/{}", id_of(&order)).as_str())
    );
    assert_eq!(response.header("idempotent-replayed"), None);
    assert_eq!(order["user_id"], alice.user_id().to_string());
    assert_eq!(order["status"], "pending");
    assert_eq!(
        order["items"],
        json!([
            { "sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1250, "line_total_cents": 2500 },
            { "sku": "PEN-7", "quantity": 3, "unit_price_cents": 199, "line_total_cents": 597 },
        ])
    );
    assert_eq!(order["total_cents"], 3097);
    assert_eq!(order["created_at"], order["updated_at"]);
    let keys: Vec<&str> = order
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        7,
        "id, user_id, status, items, total_cents, created_at, updated_at: {order}"
    );

    let read = alice.get(&format!("/orders/{}", id_of(&order))).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), order, "what was answered is what was stored");
}

#[tokio::test]
async fn timestamps_are_rfc3339_utc_with_microseconds_and_ids_are_uuid_v7() {
    let app = spawn_app().await;
    let order = app.user().create_order(&two_items()).await;

    let created_at = order["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2026-12-01T10:00:00.000000Z".len(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    let id = uuid::Uuid::parse_str(id_of(&order)).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn the_owner_is_never_taken_from_the_body() {
    let app = spawn_app().await;
    let alice = app.user();
    let bob = app.user();
    let mut body = two_items();
    body["user_id"] = json!(bob.user_id().to_string());

    let response = alice.post("/orders", &body).await;

    assert_eq!(response.invalid_fields(), ["user_id"]);
    assert_eq!(bob.get("/orders").await.json()["total"], 0);
    assert_eq!(alice.get("/orders").await.json()["total"], 0);
}

#[tokio::test]
async fn free_items_and_one_hundred_lines_are_fine() {
    let app = spawn_app().await;
    let lines: Vec<(String, i64, i64)> = (0..100)
        .map(|i| (format!("SKU-{i:03}"), i + 1, i))
        .collect();
    let lines: Vec<(&str, i64, i64)> = lines.iter().map(|(s, q, p)| (s.as_str(), *q, *p)).collect();

    let order = app.user().create_order(&order_of(&lines)).await;

    let items = order["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["line_total_cents"], 0, "a free item");
    assert_eq!(
        items[99]["sku"], "SKU-099",
        "lines keep the order they were sent in"
    );
    let expected: i64 = (0..100).map(|i: i64| (i + 1) * i).sum();
    assert_eq!(order["total_cents"], expected);
}

#[tokio::test]
async fn the_largest_order_the_document_allows_is_accepted_with_its_exact_total() {
    let app = spawn_app().await;
    let lines: Vec<(String, i64, i64)> = (0..100)
        .map(|i| (format!("S{i}"), 1_000_000, 10_000_000_000))
        .collect();
    let lines: Vec<(&str, i64, i64)> = lines
        .iter()
        .map(|(sku, quantity, price)| (sku.as_str(), *quantity, *price))
        .collect();

    let order = app.user().create_order(&order_of(&lines)).await;

    assert_eq!(order["total_cents"], 1_000_000_000_000_000_000_i64);
}

#[tokio::test]
async fn skus_may_repeat_and_keep_their_case_and_unicode() {
    let app = spawn_app().await;

    let order = app
        .user()
        .create_order(&order_of(&[
            ("thé-vert 50g", 1, 500),
            ("thé-vert 50g", 2, 450),
        ]))
        .await;

    assert_eq!(order["items"][0]["sku"], "thé-vert 50g");
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["total_cents"], 1400);
}
