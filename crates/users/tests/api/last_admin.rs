//! The last active admin stays: no change (demotion, deactivation, deletion), by themselves or
//! by anyone, may leave the service without an active admin, not even two at once.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{new_user, spawn_app, TestApp};

async fn create_admin(app: &TestApp, name: &str) -> Value {
    let mut body = new_user(name);
    body["role"] = json!("admin");
    app.create_user(&body).await
}

fn path_of(user: &Value) -> String {
    format!("/users/{}", user["id"].as_str().unwrap())
}

async fn active_admins(app: &TestApp) -> usize {
    let page = app.admin().get("/users?limit=200").await.json();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|user| user["role"] == "admin" && user["is_active"] == true)
        .count()
}

#[tokio::test]
async fn the_last_active_admin_cannot_demote_deactivate_or_delete_themselves() {
    let app = spawn_app().await;
    let root = create_admin(&app, "root").await;
    let as_root = app.signed_in(&root);
    let path = path_of(&root);

    for change in [json!({ "role": "user" }), json!({ "is_active": false })] {
        let response = as_root.patch(&path, &change).await;
        assert_eq!(
            response.status,
            StatusCode::CONFLICT,
            "{change}: {}",
            response.text
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            response.json()["detail"]
                .as_str()
                .unwrap()
                .contains("last active admin"),
            "the answer says why: {}",
            response.text
        );
    }
    let response = as_root.delete(&path).await;
    assert_eq!(response.status, StatusCode::CONFLICT, "{}", response.text);

    let still = as_root.get(&path).await.json();
    assert_eq!(still["role"], "admin", "nothing changed");
    assert_eq!(still["is_active"], true);
}

#[tokio::test]
async fn nobody_else_can_remove_the_last_active_admin_either() {
    let app = spawn_app().await;
    let root = create_admin(&app, "root").await;
    let path = path_of(&root);

    // `app.admin()` is an admin the gateway vouches for without an account here.
    assert_eq!(
        app.admin()
            .patch(&path, &json!({ "role": "user" }))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(app.admin().delete(&path).await.status, StatusCode::CONFLICT);
    // An inactive admin does not count as the one who is left.
    let mut dormant = new_user("dormant");
    dormant["role"] = json!("admin");
    dormant["is_active"] = json!(false);
    app.create_user(&dormant).await;
    assert_eq!(
        app.admin()
            .patch(&path, &json!({ "is_active": false }))
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn an_admin_may_step_down_while_another_active_admin_remains() {
    let app = spawn_app().await;
    let root = create_admin(&app, "root").await;
    create_admin(&app, "deputy").await;

    let response = app
        .signed_in(&root)
        .patch(
            &path_of(&root),
            &json!({ "role": "user", "full_name": "Former root" }),
        )
        .await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.json()["role"], "user");
    assert_eq!(active_admins(&app).await, 1);
    // Changing anything else of the last admin is not refused.
    let deputy = app.check_credentials("deputy", "password-of-deputy").await;
    assert_eq!(deputy.status, StatusCode::OK);
}

#[tokio::test]
async fn two_admins_removing_each_other_at_once_leave_one_standing() {
    let app = spawn_app().await;
    for round in 0..5 {
        let first = create_admin(&app, &format!("first{round}")).await;
        let second = create_admin(&app, &format!("second{round}")).await;
        // Earlier rounds' survivors would keep an admin standing: demote them first.
        for user in app.admin().get("/users?limit=200").await.json()["items"]
            .as_array()
            .unwrap()
        {
            if user["id"] != first["id"] && user["id"] != second["id"] && user["role"] == "admin" {
                let response = app
                    .admin()
                    .patch(&path_of(user), &json!({ "role": "user" }))
                    .await;
                assert_eq!(response.status, StatusCode::OK, "{}", response.text);
            }
        }
        assert_eq!(active_admins(&app).await, 2);

        let as_first = app.signed_in(&first);
        let as_second = app.signed_in(&second);
        let first_path = path_of(&first);
        let second_path = path_of(&second);
        let demote = json!({ "role": "user" });
        let deactivate = json!({ "is_active": false });
        let (a, b) = if round % 2 == 0 {
            tokio::join!(
                as_first.patch(&second_path, &demote),
                as_second.patch(&first_path, &demote),
            )
        } else {
            tokio::join!(
                as_first.delete(&second_path),
                as_second.patch(&first_path, &deactivate),
            )
        };

        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert!(
            statuses[0].is_success() && statuses[1] == StatusCode::CONFLICT,
            "round {round}: one wins, the other is refused: {} {} / {} {}",
            a.status,
            a.text,
            b.status,
            b.text
        );
        assert_eq!(active_admins(&app).await, 1, "round {round}");
    }
}
