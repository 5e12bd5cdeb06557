//! A signed-in user's own account: read it; change email, name and password, and nothing else.

use kit::PrincipalKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_reads_their_own_account() {
    let app = spawn_app().await;
    let user = app.create_named("heidi").await;
    app.create_named("ivan").await;

    let response = app.signed_in(&user).get("/users/me").await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.json(), user);
}

#[tokio::test]
async fn a_user_changes_their_email_name_and_password() {
    let app = spawn_app().await;
    let user = app.create_named("judy").await;

    let response = app
        .signed_in(&user)
        .patch("/users/me", &json!({ "email": "Judy@Example.org", "full_name": "Judy J.", "password": "new secret", "current_password": "password-of-judy" }))
        .await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let changed = response.json();
    assert_eq!(changed["email"], "judy@example.org");
    assert_eq!(changed["full_name"], "Judy J.");
    assert_eq!(changed["role"], user["role"]);
    assert_eq!(app.signed_in(&user).get("/users/me").await.json(), changed);
    assert_eq!(
        app.check_credentials("judy", "new secret").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.check_credentials("judy", "password-of-judy")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_user_cannot_change_their_own_username_role_scopes_or_activity() {
    let app = spawn_app().await;
    let user = app.create_named("ken").await;

    for (body, field) in [
        (json!({ "role": "admin" }), "role"),
        (json!({ "scopes": ["time:read", "time:precise"] }), "scopes"),
        (json!({ "is_active": true }), "is_active"),
        (json!({ "username": "kenneth" }), "username"),
        (json!({ "full_name": "Ken", "role": null }), "role"),
    ] {
        let response = app.signed_in(&user).patch("/users/me", &body).await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{body}: {}",
            response.text
        );
        let detail = response.problem()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(field),
            "the answer names `{field}`: {detail}"
        );
    }
    assert_eq!(
        app.signed_in(&user).get("/users/me").await.json(),
        user,
        "nothing changed"
    );
}

#[tokio::test]
async fn unknown_fields_in_a_change_of_ones_own_account_are_refused() {
    let app = spawn_app().await;
    let user = app.create_named("liam").await;

    let response = app
        .signed_in(&user)
        .patch("/users/me", &json!({ "nickname": "li" }))
        .await;

    assert_eq!(
        response.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        response.text
    );
    assert!(response.problem()["detail"]
        .as_str()
        .unwrap()
        .contains("nickname"));
}

#[tokio::test]
async fn invalid_changes_of_ones_own_account_list_each_field() {
    let app = spawn_app().await;
    let user = app.create_named("mia").await;

    let response = app
        .signed_in(&user)
        .patch(
            "/users/me",
            &json!({ "email": "nope", "password": "", "current_password": "password-of-mia" }),
        )
        .await;

    assert_eq!(response.invalid_fields(), ["email", "password"]);
}

#[tokio::test]
async fn the_account_of_a_deleted_user_is_not_found() {
    let app = spawn_app().await;
    let user = app.create_named("nina").await;
    app.admin()
        .delete(&format!("/users/{}", user["id"].as_str().unwrap()))
        .await;

    assert_eq!(
        app.signed_in(&user).get("/users/me").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.signed_in(&user)
            .patch("/users/me", &json!({ "full_name": "N" }))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn callers_that_are_not_users_have_no_account() {
    let app = spawn_app().await;
    let not_a_uuid =
        app.sign(&app.claims("not-a-uuid", PrincipalKind::User, Some("x"), &["user"], ""));

    for (caller, who) in [
        (app.client(&[]), "a machine client"),
        (app.gateway(), "the gateway"),
        (app.with_token(not_a_uuid), "a user without a UUID"),
    ] {
        let response = caller.get("/users/me").await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{who}: {}",
            response.text
        );
    }
}
