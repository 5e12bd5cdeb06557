//! The quickstart's demo accounts.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_demo_accounts_sign_in_with_their_documented_passwords() {
    let app = spawn_app().await;

    users::seed_demo_accounts(&app.db).await.unwrap();

    let admin = app.check_credentials("admin", "a").await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.text);
    assert_eq!(admin.json()["role"], "admin");
    assert_eq!(admin.json()["scopes"], json!(["time:read", "time:precise"]));
    let test = app.check_credentials("test", "test").await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.text);
    assert_eq!(test.json()["role"], "user");
    assert_eq!(test.json()["scopes"], json!(["time:read"]));
}

#[tokio::test]
async fn seeding_again_keeps_the_accounts_as_they_are() {
    let app = spawn_app().await;
    users::seed_demo_accounts(&app.db).await.unwrap();
    let before = app.admin().get("/users").await.json();
    let test_id = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "test")
        .unwrap()["id"]
        .clone();
    app.admin()
        .patch(
            &format!("/users/{}", test_id.as_str().unwrap()),
            &json!({ "password": "changed" }),
        )
        .await;

    users::seed_demo_accounts(&app.db).await.unwrap();

    let after = app.admin().get("/users").await.json();
    assert_eq!(after["total"], 2);
    assert_eq!(after["items"][0]["id"], before["items"][0]["id"]);
    assert_eq!(
        app.check_credentials("test", "changed").await.status,
        StatusCode::OK,
        "the changed password stays"
    );
}
