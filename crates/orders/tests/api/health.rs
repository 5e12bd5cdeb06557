//! Health endpoints answer without an identity: orchestrators and the gateway call them.

use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_service_is_alive_and_ready_with_its_database() {
    let app = spawn_app().await;

    let alive = app.anonymous().get("/healthz").await;
    let ready = app.anonymous().get("/readyz").await;

    assert_eq!(alive.status, StatusCode::OK);
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["checks"]["database"], "ok");
}

#[tokio::test]
async fn connecting_twice_runs_the_migrations_once() {
    let app = spawn_app().await;
    let order = app.user().create_order(&crate::helpers::two_items()).await;

    // A second instance on the same database (a restart, or a replica).
    let again = orders::connect(app.database_url()).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
        .fetch_one(again.pool())
        .await
        .unwrap();

    assert_eq!(count, 1, "{order}");
}
