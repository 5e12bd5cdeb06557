//! The bundled services reached through the gateway: orders and clock, by users and by
//! machine clients.

use kit::client::ServiceClient;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app};

fn two_items() -> Value {
    json!({ "items": [{ "sku": "tea", "quantity": 2, "unit_price_cents": 350 }, { "sku": "cup", "quantity": 1, "unit_price_cents": 1200 }] })
}

#[tokio::test]
async fn users_see_only_their_own_orders_and_admins_see_all() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.create_user(&admin, "alice", "alice-pw").await;
    let alice = app.token("alice", "alice-pw").await;
    let bob = app.token("test", "test").await;

    let created = app
        .send_json(Method::POST, "/api/orders", &alice, &two_items())
        .await;
    assert_eq!(created.status(), 201);
    let order: Value = created.json().await.unwrap();
    assert_eq!(order["total_cents"], 1900);
    let id = order["id"].as_str().unwrap();

    let peek = app.get(&format!("/api/orders/{id}"), Some(&bob)).await;
    let body = assert_problem(peek, 404).await;
    assert!(
        !body.to_string().contains("tea"),
        "another user's order reveals nothing"
    );
    let cancel = app
        .send_json(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            &bob,
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), 404);
    let bobs: Value = app
        .get("/api/orders", Some(&bob))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["total"], 0);

    let all: Value = app
        .get("/api/orders", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], 1, "admins see every order");
    let cancelled = app
        .send_json(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            &alice,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        app.send_json(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            &alice,
            &json!({})
        )
        .await
        .status(),
        409
    );
}

#[tokio::test]
async fn an_idempotency_key_survives_the_gateway() {
    let app = spawn_app().await;
    let token = app.token("test", "test").await;
    let send = || {
        app.http
            .post(app.url("/api/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", "order-2026-11-26-1")
            .json(&two_items())
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(
        first["id"], second["id"],
        "a retried create makes no second order"
    );
    let list: Value = app
        .get("/api/orders", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn the_clock_answers_by_the_callers_scopes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.token("test", "test").await;

    let precise: Value = app
        .get("/api/time", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        precise["iso"].is_string() && precise["unix_ms"].is_i64(),
        "{precise}"
    );
    let plain: Value = app
        .get("/api/time", Some(&user))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        plain["iso"].is_string() && plain.get("unix_ms").is_none(),
        "{plain}"
    );

    app.create_user(&admin, "noscope", "pw").await;
    let me: Value = app
        .get("/api/users", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let id = me["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "noscope")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_json(
        Method::PATCH,
        &format!("/api/users/{id}"),
        &admin,
        &json!({ "scopes": [] }),
    )
    .await;
    let without = app.token("noscope", "pw").await;
    let body = assert_problem(app.get("/api/time", Some(&without)).await, 403).await;
    assert!(
        body["detail"].as_str().unwrap().contains("time:read"),
        "{body}"
    );
}

#[tokio::test]
async fn a_machine_client_calls_the_clock_with_its_own_token() {
    let app = spawn_app().await;
    let secret = app.add_client("reporting", "time:read");

    let client = ServiceClient::new(&app.gateway, "reporting", &secret);
    let time = client.get("/api/time").await.unwrap();
    assert_eq!(time.status(), 200);
    let time: Value = time.json().await.unwrap();
    assert!(time["iso"].is_string() && time.get("unix_ms").is_none());

    let orders = client.get("/api/orders").await.unwrap();
    assert_eq!(
        orders.status(),
        403,
        "a client holds no user id to own orders"
    );

    let wrong: Value = app
        .http
        .post(app.url("/api/oauth/token"))
        .basic_auth("reporting", Some("wrong-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["error"], "invalid_client");
}

#[tokio::test]
async fn every_service_serves_its_openapi_document() {
    let app = spawn_app().await;
    let running = [
        ("users", &app.users),
        ("orders", &app.orders),
        ("clock", &app.clock),
    ];
    for (name, base) in running {
        let document: Value = app
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            document["openapi"].as_str().unwrap().starts_with("3.1"),
            "{name}"
        );
        assert!(!document["paths"].as_object().unwrap().is_empty(), "{name}");
    }
}
