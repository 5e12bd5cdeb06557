//! A database that cannot be reached is an outage, not a bug: 503 problem+json with
//! `Retry-After` while it is still out (the pool's acquire timeout, never a wait for it to come
//! back, never a 500).

use kit::testing::wait::within_patience;
use kit::testing::SqliteWriteLock;
use reqwest::StatusCode;

use crate::helpers::{new_user, spawn_app};

#[tokio::test]
async fn a_database_locked_by_another_process_answers_503_in_time_then_recovers() {
    let app = spawn_app().await;
    let Some(path) = app.database_url().strip_prefix("sqlite://") else {
        eprintln!("runs on SQLite; the gateway's and orders' cut-database tests cover PostgreSQL");
        return;
    };
    let holder = SqliteWriteLock::take(path).await;

    // Answered while the lock is still held: the service did not wait for it.
    let refused = within_patience(
        "creating a user",
        app.admin().post("/users", &new_user("locked")),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert!(
        refused.header("retry-after").is_some(),
        "a 503 says when to retry"
    );
    assert_eq!(refused.problem()["status"], 503);

    holder.release().await;
    let created = app.admin().post("/users", &new_user("locked")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}
