//! The gateway's credential check: who the person is, or one 401 that never says why.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp, TestResponse};

fn assert_refused(response: &TestResponse) -> serde_json::Value {
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text
    );
    response.problem()
}

async fn create_yara(app: &TestApp) -> serde_json::Value {
    app.create_user(&json!({
        "username": "yara", "email": "yara@example.com", "password": "Right Password",
        "role": "admin", "scopes": ["time:read", "time:precise"],
    }))
    .await
}

#[tokio::test]
async fn right_credentials_identify_the_user() {
    let app = spawn_app().await;
    let user = create_yara(&app).await;

    let response = app.check_credentials("yara", "Right Password").await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        response.json(),
        json!({ "id": user["id"], "username": "yara", "role": "admin", "scopes": ["time:read", "time:precise"] })
    );
    let folded = app.check_credentials(" YARA ", "Right Password").await;
    assert_eq!(
        folded.status,
        StatusCode::OK,
        "usernames are case-insensitive: {}",
        folded.text
    );
}

#[tokio::test]
async fn a_wrong_password_an_unknown_user_and_an_impossible_username_get_the_same_401() {
    let app = spawn_app().await;
    create_yara(&app).await;

    let wrong_password = assert_refused(&app.check_credentials("yara", "right password").await);
    let unknown_user = assert_refused(&app.check_credentials("zed", "Right Password").await);
    let impossible_username = assert_refused(&app.check_credentials("not a username!", "x").await);
    let empty = assert_refused(&app.check_credentials("", "").await);

    assert_eq!(wrong_password, unknown_user);
    assert_eq!(wrong_password, impossible_username);
    assert_eq!(wrong_password, empty);
}

#[tokio::test]
async fn an_inactive_user_cannot_sign_in_and_is_told_nothing_more() {
    let app = spawn_app().await;
    let user = create_yara(&app).await;
    // Another active admin, so that yara (an admin) may be deactivated.
    app.create_user(&json!({
        "username": "zeno", "email": "zeno@example.com", "password": "z", "role": "admin",
    }))
    .await;
    let wrong_password = assert_refused(&app.check_credentials("yara", "wrong").await);
    let deactivated = app
        .admin()
        .patch(
            &format!("/users/{}", user["id"].as_str().unwrap()),
            &json!({ "is_active": false }),
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.text);

    let inactive = assert_refused(&app.check_credentials("yara", "Right Password").await);

    assert_eq!(inactive, wrong_password);
}

#[tokio::test]
async fn a_password_set_by_an_admin_replaces_the_old_one() {
    let app = spawn_app().await;
    let user = create_yara(&app).await;

    app.admin()
        .patch(
            &format!("/users/{}", user["id"].as_str().unwrap()),
            &json!({ "password": "Newer" }),
        )
        .await;

    assert_eq!(
        app.check_credentials("yara", "Newer").await.status,
        StatusCode::OK
    );
    assert_refused(&app.check_credentials("yara", "Right Password").await);
}

#[tokio::test]
async fn only_the_gateway_may_check_credentials() {
    let app = spawn_app().await;
    let user = create_yara(&app).await;
    let body = json!({ "username": "yara", "password": "Right Password" });

    for (caller, who) in [
        (app.signed_in(&user), "the user themselves"),
        (app.admin(), "an admin"),
        (app.client(&["admin"]), "a machine client"),
    ] {
        let response = caller.post("/internal/credentials", &body).await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{who}: {}",
            response.text
        );
    }
    assert_eq!(
        app.anonymous()
            .post("/internal/credentials", &body)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_credential_check_without_a_password_is_422() {
    let app = spawn_app().await;

    let response = app
        .gateway()
        .post("/internal/credentials", &json!({ "username": "yara" }))
        .await;

    assert_eq!(
        response.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        response.text
    );
}

#[tokio::test]
async fn credential_checks_are_throttled_per_caller_and_username() {
    // Whoever holds a copy of the gateway's identity token can call the check directly,
    // without the gateway's sign-in throttle: the service counts them itself.
    let app = spawn_app().await;
    create_yara(&app).await;

    for guess in 1..=30 {
        assert_refused(
            &app.check_credentials("yara", &format!("guess {guess}"))
                .await,
        );
    }
    let throttled = app.check_credentials("yara", "Right Password").await;

    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password is not even checked: {}",
        throttled.text
    );
    assert!(throttled.header("retry-after").is_some());
    assert_eq!(
        throttled.problem()["type"],
        "urn:gatehouse:problem:too-many-attempts"
    );
    // Another username, and another caller, have budgets of their own.
    app.create_user(&json!({ "username": "zed", "email": "zed@example.com", "password": "z" }))
        .await;
    assert_eq!(
        app.check_credentials("zed", "z").await.status,
        StatusCode::OK
    );
    let other_caller = app.with_token(app.sign(&app.claims(
        "gateway-two",
        kit::PrincipalKind::Gateway,
        None,
        &[],
        "",
    )));
    let response = other_caller
        .post(
            "/internal/credentials",
            &json!({ "username": "yara", "password": "Right Password" }),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
}

#[tokio::test]
async fn a_right_password_clears_the_callers_count_for_that_username() {
    let app = spawn_app().await;
    create_yara(&app).await;
    for _ in 0..2 {
        for guess in 1..=20 {
            assert_refused(
                &app.check_credentials("yara", &format!("guess {guess}"))
                    .await,
            );
        }
        let right = app.check_credentials("yara", "Right Password").await;
        assert_eq!(right.status, StatusCode::OK, "{}", right.text);
    }
}
