//! What the gateway learns when an account changes: the account as it is now, and the moment
//! before which its tokens are void.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn cutoff_of(app: &TestApp, user: &Value) -> Option<i64> {
    let answer = app.gateway().get("/internal/token-cutoffs?since=0").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()["cutoffs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_id"] == user["id"])
        .map(|c| c["cutoff_ms"].as_i64().unwrap())
}

#[tokio::test]
async fn changes_that_void_tokens_record_a_cutoff_and_others_do_not() {
    let app = spawn_app().await;
    let cases: &[(&str, Value, bool)] = &[
        ("a new full name", json!({ "full_name": "New Name" }), false),
        ("a new email", json!({ "email": "new@example.com" }), false),
        ("a new role", json!({ "role": "admin" }), true),
        ("new scopes", json!({ "scopes": ["time:precise"] }), true),
        ("a new password", json!({ "password": "another one" }), true),
        ("deactivation", json!({ "is_active": false }), true),
    ];
    for (i, (change, body, voids)) in cases.iter().enumerate() {
        let user = app.create_named(&format!("user{i}")).await;
        let before = chrono::Utc::now().timestamp_millis();
        let id = user["id"].as_str().unwrap();
        let patched = app.admin().patch(&format!("/users/{id}"), body).await;
        assert_eq!(patched.status, StatusCode::OK, "{change}: {}", patched.text);
        match (cutoff_of(&app, &user).await, voids) {
            (Some(cutoff), true) => assert!(
                cutoff >= before,
                "{change}: the cut-off is the moment of the change"
            ),
            (None, false) => {}
            (found, _) => panic!("{change}: cut-off {found:?}, expected one: {voids}"),
        }
    }
}

#[tokio::test]
async fn a_user_changing_their_own_password_and_a_deletion_void_tokens() {
    let app = spawn_app().await;
    let alice = app.create_named("alice").await;
    let changed = app
        .signed_in(&alice)
        .patch(
            "/users/me",
            &json!({ "password": "fresh password", "current_password": "password-of-alice" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert!(cutoff_of(&app, &alice).await.is_some());

    let bob = app.create_named("bob").await;
    let id = bob["id"].as_str().unwrap();
    assert_eq!(
        app.admin().delete(&format!("/users/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(
        cutoff_of(&app, &bob).await.is_some(),
        "a deleted account's tokens die with it"
    );
}

#[tokio::test]
async fn cutoffs_are_listed_from_a_moment_on() {
    let app = spawn_app().await;
    let user = app.create_named("carol").await;
    let id = user["id"].as_str().unwrap();
    app.admin()
        .patch(&format!("/users/{id}"), &json!({ "role": "admin" }))
        .await;
    let cutoff = cutoff_of(&app, &user).await.unwrap();

    let later = app
        .gateway()
        .get(&format!("/internal/token-cutoffs?since={}", cutoff + 1))
        .await;
    assert_eq!(later.json()["cutoffs"], json!([]));
    let bad = app
        .gateway()
        .get("/internal/token-cutoffs?since=yesterday")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_gateway_reads_an_account_as_it_is_now() {
    let app = spawn_app().await;
    let user = app.create_named("dora").await;
    let id = user["id"].as_str().unwrap();
    app.admin()
        .patch(
            &format!("/users/{id}"),
            &json!({ "is_active": false, "role": "admin" }),
        )
        .await;

    let account = app.gateway().get(&format!("/internal/users/{id}")).await;
    assert_eq!(account.status, StatusCode::OK);
    let account = account.json();
    assert_eq!(account["role"], "admin");
    assert_eq!(account["is_active"], false);
    assert!(!account.to_string().contains("hash"));

    let missing = app
        .gateway()
        .get(&format!("/internal/users/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_the_gateway_may_ask() {
    let app = spawn_app().await;
    let user = app.create_named("erin").await;
    let id = user["id"].as_str().unwrap();
    for path in [
        format!("/internal/users/{id}"),
        "/internal/token-cutoffs".to_owned(),
    ] {
        assert_eq!(
            app.admin().get(&path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            app.signed_in(&user).get(&path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            app.anonymous().get(&path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
}

#[tokio::test]
async fn cutoffs_sharing_a_millisecond_are_paged_through_without_end() {
    let app = spawn_app().await;
    let moment: i64 = 1_800_000_000_000;
    for _ in 0..1005 {
        sqlx::query("INSERT INTO token_cutoffs (user_id, cutoff_ms) VALUES ($1, $2)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(moment)
            .execute(app.db.pool())
            .await
            .unwrap();
    }
    let first = app
        .gateway()
        .get(&format!("/internal/token-cutoffs?since={moment}"))
        .await
        .json();
    let first = first["cutoffs"].as_array().unwrap().clone();
    assert_eq!(first.len(), 1000, "a page holds at most 1000");
    let last = first.last().unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app
        .gateway()
        .get(&format!(
            "/internal/token-cutoffs?since={moment}&after={last}"
        ))
        .await
        .json();
    let second = second["cutoffs"].as_array().unwrap().clone();
    assert_eq!(second.len(), 5, "the next page holds the rest");
    assert!(
        second.iter().all(|c| !first.contains(c)),
        "pages do not overlap"
    );
}
