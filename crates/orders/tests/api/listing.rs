//! Listing: the caller's orders, newest first, in pages that never overlap.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{id_of, order_of, spawn_app, Caller};

/// Creates `count` orders one after another; answers their ids in creation order.
async fn create_orders(caller: &Caller, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let sku = format!("SKU-{n}");
        let order = caller.create_order(&order_of(&[(&sku, 1, n as i64)])).await;
        ids.push(id_of(&order).to_owned());
    }
    ids
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| id_of(order).to_owned())
        .collect()
}

#[tokio::test]
async fn orders_are_listed_newest_first_in_pages_that_never_overlap() {
    let app = spawn_app().await;
    let alice = app.user();
    let mut created = create_orders(&alice, 5).await;
    created.reverse();

    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let page = alice.get(&format!("/orders?limit=2&offset={offset}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let page = page.json();
        assert_eq!(page["total"], 5);
        assert_eq!(page["limit"], 2);
        assert_eq!(page["offset"], offset);
        paged.extend(ids(&page));
    }
    let past_the_end = alice.get("/orders?offset=5").await.json();

    assert_eq!(paged, created);
    assert_eq!(ids(&past_the_end), Vec::<String>::new());
    assert_eq!(past_the_end["total"], 5);
}

#[tokio::test]
async fn a_page_holds_50_orders_unless_asked_otherwise() {
    let app = spawn_app().await;
    let alice = app.user();
    create_orders(&alice, 51).await;

    let page = alice.get("/orders").await.json();
    let largest = alice.get("/orders?limit=200").await.json();

    assert_eq!(page["limit"], 50);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["total"], 51);
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert_eq!(largest["items"].as_array().unwrap().len(), 51);
}

#[tokio::test]
async fn orders_created_in_the_same_microsecond_are_ordered_by_id() {
    let app = spawn_app().await;
    let alice = app.user();
    create_orders(&alice, 4).await;
    sqlx::query("UPDATE orders SET created_at = '2026-12-01T10:00:00.000000Z'")
        .execute(app.db.pool())
        .await
        .unwrap();

    let listed = ids(&alice.get("/orders").await.json());

    let mut by_id = listed.clone();
    by_id.sort();
    by_id.reverse();
    assert_eq!(listed, by_id);
}

#[tokio::test]
async fn out_of_range_paging_is_422_naming_each_parameter() {
    let app = spawn_app().await;
    let alice = app.user();

    for (query, fields) in [
        ("limit=0", vec!["limit"]),
        ("limit=201", vec!["limit"]),
        ("limit=-5", vec!["limit"]),
        ("offset=-1", vec!["offset"]),
        ("limit=0&offset=-1", vec!["limit", "offset"]),
    ] {
        let response = alice.get(&format!("/orders?{query}")).await;
        assert_eq!(response.invalid_fields(), fields, "{query}");
    }
}

#[tokio::test]
async fn malformed_query_parameters_are_400() {
    let app = spawn_app().await;
    let admin = app.admin();

    for query in ["limit=ten", "offset=1.5", "user_id=not-a-uuid"] {
        let response = admin.get(&format!("/orders?{query}")).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            response.text
        );
        response.problem();
    }
}
