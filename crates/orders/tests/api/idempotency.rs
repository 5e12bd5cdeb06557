//! `Idempotency-Key`: a create retried, or sent many times at once, makes one order; the key
//! reused for another request is refused; keys are per user and last a day.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{id_of, order_of, spawn_app, two_items, TestResponse};

fn assert_replayed(response: &TestResponse, first: &serde_json::Value) {
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        response.header("location"),
        Some(format!("/orders/{}", id_of(first)).as_str())
    );
    assert_eq!(id_of(&response.json()), id_of(first));
}

#[tokio::test]
async fn a_retried_create_answers_with_the_first_order() {
    let app = spawn_app().await;
    let alice = app.user();

    let first = alice.post_idempotent(&two_items(), "order-attempt-1").await;
    let retry = alice.post_idempotent(&two_items(), "order-attempt-1").await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "the first one is new"
    );
    assert_replayed(&retry, &first.json());
    assert_eq!(retry.json(), first.json());
    assert_eq!(alice.get("/orders").await.json()["total"], 1);
}

#[tokio::test]
async fn the_same_request_is_recognised_whatever_its_spacing_and_key_order() {
    let app = spawn_app().await;
    let alice = app.user();
    let first = alice
        .post_idempotent(&order_of(&[("A", 1, 100)]), "k-1")
        .await
        .json();

    let reformatted = alice
        .send(
            Method::POST,
            "/orders",
            Some((
                "application/json",
                r#"  { "items" : [ { "unit_price_cents": 100, "quantity": 1.0, "sku": "A" } ] }  "#
                    .to_owned(),
            )),
            &[("idempotency-key", "k-1")],
        )
        .await;

    assert_replayed(&reformatted, &first);
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let alice = app.user();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let alice = alice.clone();
        tasks.spawn(async move { alice.post_idempotent(&two_items(), "checkout-42").await });
    }
    let responses: Vec<TestResponse> = tasks.join_all().await;

    let ids: BTreeSet<String> = responses
        .iter()
        .map(|response| {
            assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
            id_of(&response.json()).to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every response carries the same order: {ids:?}"
    );
    let replayed = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(
        replayed, 19,
        "one created it, the others were answered with it"
    );
    assert_eq!(alice.get("/orders").await.json()["total"], 1);
    let (lines,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM order_items")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(lines, 2, "no stray lines from the requests that lost");
}

#[tokio::test]
async fn concurrent_creates_with_one_key_and_two_bodies_make_one_order() {
    let app = spawn_app().await;
    let alice = app.user();
    let bodies = [order_of(&[("A", 1, 1)]), order_of(&[("B", 2, 2)])];

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (alice, body) = (alice.clone(), bodies[n % 2].clone());
        tasks.spawn(async move { (n % 2, alice.post_idempotent(&body, "race").await) });
    }
    let responses = tasks.join_all().await;

    let orders = alice.get("/orders").await.json();
    assert_eq!(orders["total"], 1);
    let winner = &orders["items"][0];
    let winning_body = usize::from(winner["items"][0]["sku"] == "B");
    for (body, response) in responses {
        if body == winning_body {
            assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
            assert_eq!(id_of(&response.json()), id_of(winner));
        } else {
            assert_eq!(
                response.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                response.text
            );
        }
    }
}

#[tokio::test]
async fn the_key_reused_with_another_body_is_refused() {
    let app = spawn_app().await;
    let alice = app.user();
    let first = alice.post_idempotent(&two_items(), "k").await.json();

    let other = alice
        .post_idempotent(&order_of(&[("BOOK-1", 3, 1250)]), "k")
        .await;

    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert!(other.detail().contains("Idempotency-Key"), "{}", other.text);
    let listed = alice.get("/orders").await.json();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0], first);
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let app = spawn_app().await;
    let alice = app.user();
    let bob = app.user();

    let alices = alice.post_idempotent(&two_items(), "shared-key").await;
    let bobs = bob.post_idempotent(&two_items(), "shared-key").await;

    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_eq!(bobs.header("idempotent-replayed"), None);
    assert_ne!(id_of(&bobs.json()), id_of(&alices.json()));
    assert_eq!(bobs.json()["user_id"], bob.user_id().to_string());
    assert_eq!(alice.get("/orders").await.json()["total"], 1);
    assert_eq!(bob.get("/orders").await.json()["total"], 1);
}

#[tokio::test]
async fn a_replay_shows_the_order_as_it_is_now() {
    let app = spawn_app().await;
    let alice = app.user();
    let first = alice.post_idempotent(&two_items(), "k").await.json();
    alice.cancel(id_of(&first)).await;

    let retry = alice.post_idempotent(&two_items(), "k").await;

    assert_replayed(&retry, &first);
    assert_eq!(retry.json()["status"], "cancelled");
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let app = spawn_app().await;
    let alice = app.user();

    let invalid = alice
        .post_idempotent(&order_of(&[("A", 0, 100)]), "k")
        .await;
    let valid = alice.post_idempotent(&two_items(), "k").await;

    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(valid.status, StatusCode::CREATED, "{}", valid.text);
    assert_eq!(valid.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn keys_older_than_a_day_are_forgotten_and_purged() {
    let app = spawn_app().await;
    let alice = app.user();
    let first = alice.post_idempotent(&two_items(), "old-key").await.json();
    alice.post_idempotent(&two_items(), "fresh-key").await;
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000000Z' \
         WHERE idempotency_key = 'old-key'",
    )
    .execute(app.db.pool())
    .await
    .unwrap();

    let after_a_day = alice
        .post_idempotent(&order_of(&[("OTHER", 1, 1)]), "old-key")
        .await;

    assert_eq!(
        after_a_day.status,
        StatusCode::CREATED,
        "{}",
        after_a_day.text
    );
    assert_eq!(after_a_day.header("idempotent-replayed"), None);
    assert_ne!(id_of(&after_a_day.json()), id_of(&first));

    // Age the new row again: the purge removes it and leaves the fresh key.
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000000Z' \
         WHERE idempotency_key = 'old-key'",
    )
    .execute(app.db.pool())
    .await
    .unwrap();
    let cutoff = chrono::Utc::now() - orders::store::IDEMPOTENCY_KEY_LIFETIME;
    let purged = app.store().purge_idempotency_keys(cutoff).await.unwrap();
    assert_eq!(purged, 1);
    let fresh = alice.post_idempotent(&two_items(), "fresh-key").await;
    assert_eq!(
        fresh.header("idempotent-replayed"),
        Some("true"),
        "the fresh key is kept"
    );
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let app = spawn_app().await;
    let alice = app.user();
    let long = "k".repeat(256);

    for (headers, reason) in [
        (vec![("idempotency-key", "")], "empty"),
        (vec![("idempotency-key", long.as_str())], "256 characters"),
        (vec![("idempotency-key", "two words")], "a space"),
        (vec![("idempotency-key", "tab\there")], "a tab"),
        (
            vec![("idempotency-key", "one"), ("idempotency-key", "two")],
            "two headers",
        ),
    ] {
        let response = alice.post_with("/orders", &two_items(), &headers).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "a key with {reason}: {}",
            response.text
        );
        assert!(response.detail().contains("Idempotency-Key"), "{reason}");
    }
    assert_eq!(alice.get("/orders").await.json()["total"], 0);

    let longest = alice.post_idempotent(&two_items(), &"k".repeat(255)).await;
    assert_eq!(
        longest.status,
        StatusCode::CREATED,
        "255 characters are fine"
    );
    let visible = alice
        .post_idempotent(&two_items(), "!#$%&'*+-.^_`|~0123456789{}[]<>\"@:;,/?=")
        .await;
    assert_eq!(visible.status, StatusCode::CREATED, "{}", visible.text);
}

#[tokio::test]
async fn a_client_with_a_key_is_still_refused() {
    let app = spawn_app().await;

    let response = app
        .client(&["admin"])
        .post_idempotent(&json!({ "items": [] }), "k")
        .await;

    assert_eq!(response.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_create_that_loses_the_race_for_its_key_answers_with_the_winners_order() {
    use orders::domain::{Cents, IdempotencyKey, NewItem, NewOrder, Quantity, RequestHash, Sku};
    use orders::store::Created;

    let app = spawn_app().await;
    let alice = app.user();
    let store = app.store();
    let new = NewOrder::new(vec![NewItem {
        sku: Sku::parse("A").unwrap(),
        quantity: Quantity::new(1).unwrap(),
        unit_price: Cents::unit_price(100).unwrap(),
    }])
    .unwrap();
    let key = IdempotencyKey::parse(b"raced").unwrap();
    let hash = RequestHash::of(&new);
    let Created::New(winner) = store.create(alice.user_id(), &new, None).await.unwrap() else {
        panic!("a create without a key makes a new order");
    };

    // The winner's transaction holds the key, not yet committed, while the loser starts.
    let mut winning = app.db.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, order_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(alice.user_id().to_string())
    .bind(key.as_str())
    .bind(hash.as_str())
    .bind(winner.id.to_string())
    .bind(kit::time::now_text())
    .execute(&mut *winning)
    .await
    .unwrap();
    let losing = tokio::spawn({
        let (store, new, key, hash, user) = (
            store.clone(),
            new.clone(),
            key.clone(),
            hash.clone(),
            alice.user_id(),
        );
        async move { store.create(user, &new, Some((&key, &hash))).await }
    });
    // The loser must reach the key while the winner holds it. PostgreSQL shows it: its insert
    // waits on the winner's row, so the winner's backend blocks it. SQLite shows less from
    // outside (its BEGIN IMMEDIATE waits for the winner's lock inside the driver): the loser
    // has taken a second connection from the pool, the one it begins its transaction on. A
    // loser that comes later still must answer with the winner's order; what is awaited only
    // decides which of the two paths is tested, never whether the test passes.
    if app.db.backend() == kit::db::Backend::Postgres {
        let winner_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *winning)
            .await
            .unwrap();
        let pool = app.db.pool();
        kit::testing::wait_until(
            "the loser's insert to wait on the winner's key",
            || async move {
                let blocked: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                )
                .bind(winner_pid)
                .fetch_one(pool)
                .await
                .unwrap();
                blocked > 0
            },
        )
        .await;
    } else {
        let pool = app.db.pool();
        kit::testing::wait_until("the loser to take its own connection", || async move {
            pool.size() - u32::try_from(pool.num_idle()).unwrap() >= 2
        })
        .await;
    }
    winning.commit().await.unwrap();

    let outcome = losing.await.unwrap().unwrap();
    assert_eq!(outcome, Created::Replayed(winner));
    assert_eq!(
        alice.get("/orders").await.json()["total"],
        1,
        "the loser's order is gone"
    );
}
