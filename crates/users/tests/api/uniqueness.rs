//! Usernames and emails are unique regardless of case; a clash is a 409 naming the field.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{new_user, spawn_app, TestResponse};

fn assert_conflict_on(response: &TestResponse, field: &str) {
    assert_eq!(response.status, StatusCode::CONFLICT, "{}", response.text);
    let detail = response.problem()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains(field),
        "the answer names `{field}`: {detail}"
    );
}

#[tokio::test]
async fn a_taken_username_in_any_case_is_a_conflict_on_create() {
    let app = spawn_app().await;
    app.create_named("tom").await;

    let response = app
        .admin()
        .post(
            "/users",
            &json!({ "username": " TOM ", "email": "other@example.com", "password": "p" }),
        )
        .await;

    assert_conflict_on(&response, "username");
}

#[tokio::test]
async fn a_taken_email_in_any_case_is_a_conflict_on_create() {
    let app = spawn_app().await;
    app.create_named("uma").await;

    let response = app
        .admin()
        .post(
            "/users",
            &json!({ "username": "uma2", "email": "UMA@Example.com", "password": "p" }),
        )
        .await;

    assert_conflict_on(&response, "email");
}

#[tokio::test]
async fn a_taken_username_or_email_is_a_conflict_on_change() {
    let app = spawn_app().await;
    app.create_named("vic").await;
    let other = app.create_named("walt").await;
    let path = format!("/users/{}", other["id"].as_str().unwrap());

    assert_conflict_on(
        &app.admin()
            .patch(&path, &json!({ "username": "Vic" }))
            .await,
        "username",
    );
    assert_conflict_on(
        &app.admin()
            .patch(&path, &json!({ "email": "VIC@example.com" }))
            .await,
        "email",
    );
    assert_conflict_on(
        &app.signed_in(&other)
            .patch(
                "/users/me",
                &json!({ "email": "vic@EXAMPLE.com", "current_password": "password-of-walt" }),
            )
            .await,
        "email",
    );
    assert_eq!(
        app.admin().get(&path).await.json(),
        other,
        "nothing changed"
    );
}

#[tokio::test]
async fn keeping_ones_own_username_and_email_is_no_conflict() {
    let app = spawn_app().await;
    let user = app.create_user(&new_user("xena")).await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    let response = app
        .admin()
        .patch(
            &path,
            &json!({ "username": "XENA", "email": "Xena@example.com" }),
        )
        .await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
}
