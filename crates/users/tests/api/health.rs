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
