//! Cancelling: only a pending order can be cancelled; a paid or cancelled one answers 409
//! naming its status.

use reqwest::StatusCode;

use crate::helpers::{id_of, spawn_app, two_items};

#[tokio::test]
async fn a_pending_order_can_be_cancelled_once() {
    let app = spawn_app().await;
    let alice = app.user();
    let order = alice.create_order(&two_items()).await;

    let first = alice.cancel(id_of(&order)).await;
    let second = alice.cancel(id_of(&order)).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let cancelled = first.json();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["items"], order["items"]);
    assert_eq!(cancelled["created_at"], order["created_at"]);
    assert!(
        cancelled["updated_at"].as_str() >= order["updated_at"].as_str(),
        "{cancelled}"
    );

    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    assert!(second.detail().contains("cancelled"), "{}", second.text);
    assert_eq!(
        alice
            .get(&format!("/orders/{}", id_of(&order)))
            .await
            .json(),
        cancelled,
        "the refused cancel changed nothing"
    );
}

#[tokio::test]
async fn a_paid_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let alice = app.user();
    let order = alice.create_order(&two_items()).await;
    let id = uuid::Uuid::parse_str(id_of(&order)).unwrap();
    let paid = app.store().mark_paid(id).await.unwrap();
    assert_eq!(paid.status, orders::domain::Status::Paid);

    let response = alice.cancel(id_of(&order)).await;
    let by_admin = app.admin().cancel(id_of(&order)).await;

    assert_eq!(response.status, StatusCode::CONFLICT, "{}", response.text);
    assert!(response.detail().contains("paid"), "{}", response.text);
    assert_eq!(by_admin.status, StatusCode::CONFLICT, "not even an admin");
    assert_eq!(
        alice
            .get(&format!("/orders/{}", id_of(&order)))
            .await
            .json()["status"],
        "paid"
    );
}

#[tokio::test]
async fn a_cancelled_order_cannot_be_paid_nor_a_paid_one_paid_again() {
    let app = spawn_app().await;
    let alice = app.user();
    let cancelled = alice.create_order(&two_items()).await;
    alice.cancel(id_of(&cancelled)).await;
    let paid = alice.create_order(&two_items()).await;
    let paid_id = uuid::Uuid::parse_str(id_of(&paid)).unwrap();
    app.store().mark_paid(paid_id).await.unwrap();

    let store = app.store();
    let paying_cancelled = store
        .mark_paid(uuid::Uuid::parse_str(id_of(&cancelled)).unwrap())
        .await;
    let paying_twice = store.mark_paid(paid_id).await;
    let paying_nothing = store.mark_paid(uuid::Uuid::now_v7()).await;

    assert!(matches!(
        paying_cancelled,
        Err(orders::error::Error::WrongStatus {
            status: orders::domain::Status::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        paying_twice,
        Err(orders::error::Error::WrongStatus {
            status: orders::domain::Status::Paid,
            ..
        })
    ));
    assert!(matches!(
        paying_nothing,
        Err(orders::error::Error::NotFound)
    ));
}

#[tokio::test]
async fn of_concurrent_cancels_exactly_one_succeeds() {
    let app = spawn_app().await;
    let alice = app.user();
    let order = alice.create_order(&two_items()).await;
    let id = id_of(&order).to_owned();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (alice, id) = (alice.clone(), id.clone());
        tasks.spawn(async move { alice.cancel(&id).await.status });
    }
    let statuses: Vec<StatusCode> = tasks.join_all().await;

    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflict = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflict), (1, 9), "{statuses:?}");
}
