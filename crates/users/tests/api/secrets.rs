//! A password hash never leaves the service. Every helper request already checks its response
//! for one; this test walks every endpoint on purpose, errors included.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{new_user, spawn_app, TestResponse};

#[tokio::test]
async fn no_response_of_any_endpoint_carries_a_password_hash() {
    let app = spawn_app().await;
    let user = app.create_named("zoe").await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    let responses: Vec<TestResponse> = vec![
        app.admin().get("/users").await,
        app.admin().post("/users", &new_user("zack")).await,
        app.admin().post("/users", &new_user("zack")).await,
        app.admin().post("/users", &json!({ "username": "" })).await,
        app.admin().get(&path).await,
        app.admin()
            .patch(&path, &json!({ "password": "another", "full_name": "Zoe" }))
            .await,
        app.admin().get(&format!("/users/{}", Uuid::new_v4())).await,
        app.signed_in(&user).get("/users/me").await,
        app.signed_in(&user)
            .patch(
                "/users/me",
                &json!({ "password": "mine", "current_password": "another" }),
            )
            .await,
        app.signed_in(&user)
            .patch("/users/me", &json!({ "role": "admin" }))
            .await,
        app.check_credentials("zoe", "mine").await,
        app.check_credentials("zoe", "wrong").await,
        app.admin().delete(&path).await,
        app.anonymous().send(Method::GET, "/users", None).await,
    ];

    assert_eq!(
        responses[10].status,
        StatusCode::OK,
        "{}",
        responses[10].text
    );
    for response in &responses {
        for secret in [
            "hashed_password",
            "$argon2",
            "password-of-zoe",
            "another",
            "mine",
        ] {
            assert!(
                !response.text.contains(secret),
                "{secret:?} in {}",
                response.text
            );
        }
    }
}
