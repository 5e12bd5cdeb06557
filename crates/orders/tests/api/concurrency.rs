//! Many writers at once: every create lands exactly once, in its owner's list, with its totals.
//! Counts are asserted, never timings.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{id_of, order_of, spawn_app};

const USERS: usize = 10;
const ORDERS_PER_USER: usize = 20;

/// The body of order `n` of user `u`, and its expected total.
fn order(u: usize, n: usize) -> (Value, i64) {
    let (u, n) = (u as i64, n as i64);
    let sku = format!("U{u}-N{n}");
    let body = order_of(&[(&sku, n + 1, 100 * u + n), ("SHARED", 2, 50)]);
    (body, (n + 1) * (100 * u + n) + 100)
}

#[tokio::test]
async fn two_hundred_concurrent_creates_from_ten_users_make_two_hundred_orders() {
    let app = spawn_app().await;
    let users: Vec<_> = (0..USERS).map(|_| app.user()).collect();

    let mut tasks = tokio::task::JoinSet::new();
    for (u, user) in users.iter().enumerate() {
        for n in 0..ORDERS_PER_USER {
            let user = user.clone();
            tasks.spawn(async move {
                let (body, total) = order(u, n);
                (u, total, user.post("/orders", &body).await)
            });
        }
    }
    let mut created: BTreeMap<usize, BTreeMap<String, i64>> = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let (u, total, response) = result.unwrap();
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        let order = response.json();
        assert_eq!(order["total_cents"], total, "{order}");
        created
            .entry(u)
            .or_default()
            .insert(id_of(&order).to_owned(), total);
    }

    let all_ids: BTreeSet<&String> = created.values().flat_map(BTreeMap::keys).collect();
    assert_eq!(
        all_ids.len(),
        USERS * ORDERS_PER_USER,
        "every create made its own order"
    );

    for (u, user) in users.iter().enumerate() {
        let page = user.get("/orders?limit=200").await.json();
        assert_eq!(page["total"], ORDERS_PER_USER, "user {u}");
        let listed: BTreeMap<String, i64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|order| {
                assert_eq!(order["user_id"], user.user_id().to_string());
                (
                    id_of(order).to_owned(),
                    order["total_cents"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed, created[&u],
            "user {u} lists exactly their orders, totals intact"
        );
    }

    let everyone = app.admin().get("/orders?limit=200").await.json();
    assert_eq!(everyone["total"], USERS * ORDERS_PER_USER);
    let (items,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM order_items")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(
        items,
        (USERS * ORDERS_PER_USER * 2) as i64,
        "two lines per order, no strays"
    );
}
