//! Changing one's own password or email through the gateway: a stolen access token alone is
//! not enough, and guessing the current password with it is throttled.

use reqwest::Method;
use serde_json::json;

use crate::harness::{assert_problem, spawn_app};

#[tokio::test]
async fn an_access_token_alone_cannot_change_the_password_or_email() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.create_user(&admin, "victim", "original").await;
    let stolen = app.token("victim", "original").await;
    let (app, stolen) = (&app, &stolen);
    let change = |body: serde_json::Value| async move {
        app.send_json(Method::PATCH, "/api/users/me", stolen, &body)
            .await
    };

    let missing = assert_problem(change(json!({ "password": "mine now" })).await, 422).await;
    assert_eq!(missing["errors"][0]["field"], "current_password");
    for guess in 1..=5 {
        let body =
            json!({ "email": "thief@example.com", "current_password": format!("guess {guess}") });
        let wrong = assert_problem(change(body).await, 403).await;
        assert_eq!(
            wrong["type"],
            "urn:gatehouse:problem:wrong-current-password"
        );
    }
    let throttled = change(json!({ "password": "mine now", "current_password": "original" })).await;
    assert!(throttled.headers().contains_key("retry-after"));
    assert_problem(throttled, 429).await;

    assert_eq!(
        app.login("victim", "original").await.status(),
        200,
        "the password is still the owner's"
    );
}

#[tokio::test]
async fn the_owner_changes_the_password_with_the_current_one() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.create_user(&admin, "owner", "original").await;
    let token = app.token("owner", "original").await;

    let response = app
        .send_json(
            Method::PATCH,
            "/api/users/me",
            &token,
            &json!({ "password": "renewed", "current_password": "original" }),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.login("owner", "renewed").await.status(), 200);
}
