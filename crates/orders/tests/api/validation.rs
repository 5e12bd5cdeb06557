//! Bad input is the client's to fix: 400, 415 or 422 with every bad field named by its path
//! (`items[2].quantity`), never a 500, and never an order.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{order_of, spawn_app};

/// A valid line.
fn line() -> Value {
    json!({ "sku": "SKU-1", "quantity": 1, "unit_price_cents": 100 })
}

/// A valid line with `field` set to `value` (or removed, for `Value::Null`).
fn line_with(field: &str, value: Value) -> Value {
    let mut line = line();
    if value.is_null() {
        line.as_object_mut().unwrap().remove(field);
    } else {
        line[field] = value;
    }
    line
}

/// A body whose one line has `field` set to `value`.
fn with(field: &str, value: Value) -> Value {
    json!({ "items": [line_with(field, value)] })
}

#[tokio::test]
async fn invalid_orders_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let alice = app.user();

    for (body, field, reason) in [
        (json!({}), "items", "no items member"),
        (json!({ "items": null }), "items", "null items"),
        (json!({ "items": [] }), "items", "no items"),
        (
            json!({ "items": "SKU-1" }),
            "items",
            "items that are not an array",
        ),
        (json!({ "items": vec![line(); 101] }), "items", "101 items"),
        (
            json!({ "items": [5] }),
            "items[0]",
            "an item that is not an object",
        ),
        (
            json!({ "items": [line(), []] }),
            "items[1]",
            "an item that is an array",
        ),
        (with("sku", Value::Null), "items[0].sku", "a missing sku"),
        (with("sku", json!("")), "items[0].sku", "an empty sku"),
        (
            with("sku", json!("a".repeat(65))),
            "items[0].sku",
            "a sku of 65 characters",
        ),
        (
            with("sku", json!("two\nlines")),
            "items[0].sku",
            "a sku with a newline",
        ),
        (
            with("sku", json!(" SKU")),
            "items[0].sku",
            "a sku with a leading space",
        ),
        (
            with("sku", json!(42)),
            "items[0].sku",
            "a sku that is a number",
        ),
        (
            with("quantity", Value::Null),
            "items[0].quantity",
            "a missing quantity",
        ),
        (
            with("quantity", json!(0)),
            "items[0].quantity",
            "quantity 0",
        ),
        (
            with("quantity", json!(-3)),
            "items[0].quantity",
            "a negative quantity",
        ),
        (
            with("quantity", json!(1.5)),
            "items[0].quantity",
            "a fractional quantity",
        ),
        (
            with("quantity", json!("2")),
            "items[0].quantity",
            "a quantity in a string",
        ),
        (
            with("quantity", json!(true)),
            "items[0].quantity",
            "a boolean quantity",
        ),
        (
            with("quantity", json!(u64::MAX)),
            "items[0].quantity",
            "a quantity past 64 bits",
        ),
        (
            with("unit_price_cents", Value::Null),
            "items[0].unit_price_cents",
            "a missing price",
        ),
        (
            with("unit_price_cents", json!(-1)),
            "items[0].unit_price_cents",
            "a negative price",
        ),
        (
            with("unit_price_cents", json!(9.99)),
            "items[0].unit_price_cents",
            "a price in fractional cents",
        ),
        (
            json!({ "items": [line(), line(), line_with("quantity", json!(0))] }),
            "items[2].quantity",
            "a bad third line",
        ),
        (
            with("colour", json!("red")),
            "items[0].colour",
            "an unknown member of a line",
        ),
        (
            json!({ "items": [line()], "coupon": "FREE" }),
            "coupon",
            "an unknown member of the order",
        ),
        (
            json!({ "items": [line()], "total_cents": 1 }),
            "total_cents",
            "a total the service computes",
        ),
        (
            json!({ "items": [line()], "status": "paid" }),
            "status",
            "a status the service sets",
        ),
        (
            order_of(&[("A", 1_000_001, 1)]),
            "items[0].quantity",
            "a quantity past a million",
        ),
        (
            order_of(&[("A", 1, 10_000_000_001)]),
            "items[0].unit_price_cents",
            "a unit price past 100 million",
        ),
        (
            order_of(&[("A", 1, 1), ("B", i64::MAX, 0)]),
            "items[1].quantity",
            "the largest 64-bit quantity",
        ),
        (
            order_of(&[("A", 1, i64::MAX)]),
            "items[0].unit_price_cents",
            "the largest 64-bit price",
        ),
    ] {
        let response = alice.post("/orders", &body).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reason}: {}",
            response.text
        );
        assert_eq!(response.invalid_fields(), [field], "{reason}");
        let problem = response.problem();
        assert!(
            !problem["errors"][0]["message"].as_str().unwrap().is_empty(),
            "{reason}: the error says what is wrong"
        );
    }
    assert_eq!(
        alice.get("/orders").await.json()["total"],
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn every_invalid_field_is_listed_at_once() {
    let app = spawn_app().await;

    let response = app
        .user()
        .post(
            "/orders",
            &json!({
                "items": [
                    { "sku": "", "quantity": 0, "unit_price_cents": 100 },
                    { "sku": "OK", "quantity": 1 },
                    { "sku": "OK", "quantity": 1, "unit_price_cents": -5, "colour": "red" },
                    line(),
                ],
                "coupon": "FREE",
            }),
        )
        .await;

    assert_eq!(
        response.invalid_fields(),
        [
            "items[0].sku",
            "items[0].quantity",
            "items[1].unit_price_cents",
            "items[2].unit_price_cents",
            "items[2].colour",
            "coupon",
        ]
    );
}

#[tokio::test]
async fn a_quantity_or_price_past_its_maximum_says_the_maximum() {
    let app = spawn_app().await;

    let response = app
        .user()
        .post("/orders", &order_of(&[("A", 1_000_001, 10_000_000_001)]))
        .await;

    let problem = response.problem();
    let messages: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["must be at most 1000000", "must be at most 10000000000"],
        "{problem}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_and_one_not_sent_as_json_is_415() {
    let app = spawn_app().await;
    let alice = app.user();

    for (content_type, body, status, reason) in [
        (
            Some("application/json"),
            "{\"items\": [",
            StatusCode::BAD_REQUEST,
            "truncated JSON",
        ),
        (
            Some("application/json"),
            "items=1",
            StatusCode::BAD_REQUEST,
            "not JSON at all",
        ),
        (
            Some("application/json"),
            "",
            StatusCode::BAD_REQUEST,
            "an empty body",
        ),
        (
            Some("text/plain"),
            r#"{"items": []}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "items=1",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a form",
        ),
        (
            None,
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no body and no content type",
        ),
        (
            Some("application/json"),
            "[]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "an array",
        ),
        (
            Some("application/json"),
            "null",
            StatusCode::UNPROCESSABLE_ENTITY,
            "null",
        ),
        (
            Some("application/json"),
            "17",
            StatusCode::UNPROCESSABLE_ENTITY,
            "a number",
        ),
    ] {
        let response = alice
            .send(
                Method::POST,
                "/orders",
                content_type.map(|content_type| (content_type, body.to_owned())),
                &[],
            )
            .await;
        assert_eq!(response.status, status, "{reason}: {}", response.text);
        response.problem();
    }
    assert_eq!(alice.get("/orders").await.json()["total"], 0);
}
