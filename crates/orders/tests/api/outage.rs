//! A database that cannot be reached is an outage, not a bug: 503 problem+json with
//! `Retry-After` while it is still out (the pool's acquire timeout, never a wait for it to come
//! back, never a 500); and the service answers normally once the database is back.

use kit::testing::wait::within_patience;
use kit::testing::{SqliteWriteLock, TcpCut, TestDatabase, TestResponse};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_on, two_items};

fn assert_outage(response: &TestResponse, what: &str) {
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        response.text
    );
    assert!(
        response.header("retry-after").is_some(),
        "{what}: a 503 says when to retry"
    );
    assert_eq!(response.problem()["status"], 503, "{what}: a problem body");
}

#[tokio::test]
async fn a_database_locked_by_another_process_answers_503_in_time_then_recovers() {
    let app = spawn_app().await;
    let Some(path) = app.database_url().strip_prefix("sqlite://") else {
        eprintln!("runs on SQLite; the cut-database test covers PostgreSQL");
        return;
    };
    let user = app.user();
    // Another process takes the write lock and keeps it, as a stuck batch job would.
    let holder = SqliteWriteLock::take(path).await;

    // Answered while the lock is still held: the service did not wait for it.
    let refused = within_patience("creating an order", user.post("/orders", &two_items())).await;
    assert_outage(&refused, "creating an order");

    holder.release().await;
    let created = user.post("/orders", &two_items()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}

#[tokio::test]
async fn a_cut_database_answers_503_in_time_not_500_and_recovers() {
    let database = TestDatabase::create("orders").await;
    if !database.is_postgres() {
        eprintln!("GATEHOUSE_TEST_POSTGRES is not set: the cut-database test checks nothing (the locked-file test covers SQLite)");
        return;
    }
    let (cut, url) = TcpCut::in_front_of(&database.url).await;
    let db = orders::connect(&url).await.unwrap();
    let app = spawn_app_on(database, db).await;
    let user = app.user();
    user.create_order(&two_items()).await;

    // Answered while the database is still cut: the service did not wait for it.
    cut.cut();
    let listing = within_patience("listing orders", user.get("/orders")).await;
    assert_outage(&listing, "listing orders");
    let creating = within_patience("creating an order", user.post("/orders", &two_items())).await;
    assert_outage(&creating, "creating an order");
    let ready = within_patience("readiness", app.anonymous().get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    cut.restore();
    kit::testing::wait_until(
        "the service to answer again once the database is back",
        || async { user.get("/orders").await.status == StatusCode::OK },
    )
    .await;
}
