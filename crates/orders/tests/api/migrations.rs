//! The schema is the service's to migrate, once, however many instances connect. (Health
//! endpoints are the kit's contract: `openapi::the_service_keeps_the_contract_every_service_keeps`.)

use crate::helpers::spawn_app;

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
