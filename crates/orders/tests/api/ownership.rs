//! A user sees and changes only their own orders; another user's order is 404, never 403 and
//! never its content. Admins see and cancel everyone's.

use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{id_of, order_of, spawn_app, two_items, TestResponse};

const SECRET_SKU: &str = "BOBS-SECRET-SKU";

/// Asserts a 404 that tells nothing about the order `id` beyond the path that was asked for.
fn assert_hidden(response: &TestResponse, id: &str, what: &str) {
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "{what}: {}",
        response.text
    );
    // The problem's `instance` is the path the client sent; nothing else may name the order.
    let problem = response.problem().to_string();
    assert!(!problem.contains(id), "{what} names the order: {problem}");
    assert!(
        !response.text.contains(SECRET_SKU),
        "{what} shows the order's items: {}",
        response.text
    );
}

#[tokio::test]
async fn another_users_order_is_not_found_to_read_list_or_cancel() {
    let app = spawn_app().await;
    let bob = app.user();
    let alice = app.user();
    let order = bob.create_order(&order_of(&[(SECRET_SKU, 1, 100)])).await;
    let id = id_of(&order);

    let read = alice.get(&format!("/orders/{id}")).await;
    let cancel = alice.cancel(id).await;
    let listed = alice.get("/orders").await;

    assert_hidden(&read, id, "reading");
    assert_hidden(&cancel, id, "cancelling");
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["total"], 0);
    assert!(!listed.text.contains(id) && !listed.text.contains(SECRET_SKU));

    // Exactly the answer for an order that does not exist.
    let missing = alice.get(&format!("/orders/{}", Uuid::now_v7())).await;
    assert_eq!(read.problem(), missing.problem());

    let still = bob.get(&format!("/orders/{id}")).await;
    assert_eq!(
        still.json()["status"],
        "pending",
        "alice's cancel changed nothing"
    );
}

#[tokio::test]
async fn a_user_may_not_list_another_users_orders_but_may_name_themselves() {
    let app = spawn_app().await;
    let alice = app.user();
    let bob = app.user();
    bob.create_order(&two_items()).await;
    alice.create_order(&two_items()).await;

    let snooping = alice
        .get(&format!("/orders?user_id={}", bob.user_id()))
        .await;
    let own = alice
        .get(&format!("/orders?user_id={}", alice.user_id()))
        .await;

    assert_eq!(snooping.status, StatusCode::FORBIDDEN, "{}", snooping.text);
    assert!(snooping.detail().contains("admin"), "{}", snooping.text);
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["total"], 1);
}

#[tokio::test]
async fn admins_list_everyones_orders_or_one_users() {
    let app = spawn_app().await;
    let alice = app.user();
    let bob = app.user();
    let alices = alice.create_order(&two_items()).await;
    let bobs = bob.create_order(&two_items()).await;
    let admin = app.admin();

    let everyone = admin.get("/orders").await.json();
    let only_alice = admin
        .get(&format!("/orders?user_id={}", alice.user_id()))
        .await
        .json();
    let only_bob = admin
        .get(&format!("/orders?user_id={}", bob.user_id()))
        .await
        .json();
    let nobody = admin
        .get(&format!("/orders?user_id={}", Uuid::now_v7()))
        .await
        .json();
    let own = admin
        .get(&format!("/orders?user_id={}", admin.user_id()))
        .await
        .json();

    assert_eq!(everyone["total"], 2);
    assert_eq!(
        everyone["items"],
        serde_json::json!([bobs, alices]),
        "newest first"
    );
    assert_eq!(only_alice["items"], serde_json::json!([alices]));
    assert_eq!(only_bob["items"], serde_json::json!([bobs]));
    assert_eq!(nobody["total"], 0);
    assert_eq!(own["total"], 0, "an admin's own orders are their own");
}

#[tokio::test]
async fn admins_read_and_cancel_anyones_order() {
    let app = spawn_app().await;
    let bob = app.user();
    let order = bob.create_order(&two_items()).await;
    let path = format!("/orders/{}", id_of(&order));
    let admin = app.admin();

    let read = admin.get(&path).await;
    let cancelled = admin.cancel(id_of(&order)).await;

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), order);
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(
        cancelled.json()["user_id"],
        bob.user_id().to_string(),
        "still bob's"
    );
    assert_eq!(bob.get(&path).await.json()["status"], "cancelled");
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_not_found() {
    let app = spawn_app().await;
    let alice = app.user();
    alice.create_order(&two_items()).await;

    for path in [
        "/orders/42",
        "/orders/not-a-uuid",
        "/orders/42/cancel",
        "/orders/%20/cancel",
    ] {
        let response = if path.ends_with("/cancel") {
            alice.send(Method::POST, path, None, &[]).await
        } else {
            alice.get(path).await
        };
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            response.text
        );
        response.problem();
    }
}
