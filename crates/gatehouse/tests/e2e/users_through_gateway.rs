//! The users service reached through the gateway, as the quickstart uses it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app};

#[tokio::test]
async fn an_admin_lists_reads_creates_patches_and_deletes_users() {
    let app = spawn_app().await;
    let admin = app.admin().await;

    let list: Value = app
        .get("/api/users", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "test"], "the demo accounts are seeded");

    let alice = app.create_user(&admin, "alice", "wonderland").await;
    let id = alice["id"].as_str().unwrap();
    let read: Value = app
        .get(&format!("/api/users/{id}"), Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["username"], "alice");

    let patched = app
        .send_json(
            Method::PATCH,
            &format!("/api/users/{id}"),
            &admin,
            &json!({ "full_name": "Alice Liddell" }),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(
        patched.json::<Value>().await.unwrap()["full_name"],
        "Alice Liddell"
    );

    let page: Value = app
        .get("/api/users?limit=1&offset=2", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["items"][0]["username"], "alice",
        "the query string reaches the service"
    );
    assert_eq!(page["total"], 3);

    let deleted = app
        .http
        .delete(app.url(&format!("/api/users/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_problem(
        app.get(&format!("/api/users/{id}"), Some(&admin)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_user_is_forbidden_from_the_admin_routes_but_owns_their_account() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.create_user(&admin, "alice", "wonderland").await;
    let id = alice["id"].as_str().unwrap();
    let user = app.token("alice", "wonderland").await;

    assert_problem(app.get("/api/users", Some(&user)).await, 403).await;
    assert_problem(app.get(&format!("/api/users/{id}"), Some(&user)).await, 403).await;
    let body = json!({ "username": "mallory", "email": "m@example.com", "password": "x" });
    assert_problem(
        app.send_json(Method::POST, "/api/users", &user, &body)
            .await,
        403,
    )
    .await;
    let promote = json!({ "role": "admin" });
    assert_problem(
        app.send_json(Method::PATCH, &format!("/api/users/{id}"), &user, &promote)
            .await,
        403,
    )
    .await;
    assert_problem(
        app.send_json(
            Method::DELETE,
            &format!("/api/users/{id}"),
            &user,
            &json!({}),
        )
        .await,
        403,
    )
    .await;

    let me: Value = app
        .get("/api/users/me", Some(&user))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], alice["id"]);
    let renamed = app
        .send_json(
            Method::PATCH,
            "/api/users/me",
            &user,
            &json!({ "full_name": "Alice" }),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.json::<Value>().await.unwrap()["full_name"], "Alice");
}

#[tokio::test]
async fn no_response_of_any_endpoint_carries_a_password_hash() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.create_user(&admin, "alice", "wonderland").await;
    let id = alice["id"].as_str().unwrap().to_owned();
    let user = app.token("alice", "wonderland").await;

    let mut bodies = vec![alice.to_string()];
    let mut capture = |text: String| bodies.push(text);
    capture(app.login("alice", "wonderland").await.text().await.unwrap());
    capture(app.login("alice", "wrong").await.text().await.unwrap());
    capture(
        app.get("/api/users", Some(&admin))
            .await
            .text()
            .await
            .unwrap(),
    );
    capture(
        app.get(&format!("/api/users/{id}"), Some(&admin))
            .await
            .text()
            .await
            .unwrap(),
    );
    capture(
        app.get("/api/users/me", Some(&user))
            .await
            .text()
            .await
            .unwrap(),
    );
    let patch = json!({ "password": "new-password" });
    capture(
        app.send_json(Method::PATCH, "/api/users/me", &user, &patch)
            .await
            .text()
            .await
            .unwrap(),
    );
    capture(
        app.send_json(Method::PATCH, &format!("/api/users/{id}"), &admin, &patch)
            .await
            .text()
            .await
            .unwrap(),
    );
    let duplicate = json!({ "username": "alice", "email": "other@example.com", "password": "x" });
    capture(
        app.send_json(Method::POST, "/api/users", &admin, &duplicate)
            .await
            .text()
            .await
            .unwrap(),
    );

    for body in &bodies {
        assert!(!body.contains("hashed_password"), "{body}");
        assert!(!body.contains("$argon2"), "{body}");
    }
}

#[tokio::test]
async fn the_users_service_refuses_requests_that_bypass_the_gateway() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let me: Value = app
        .get("/api/users/me", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let admin_id = me["id"].as_str().unwrap();

    let attempts = [
        ("no identity at all", vec![]),
        (
            "a spoofed X-User-Id",
            vec![("x-user-id", admin_id.to_owned())],
        ),
        (
            "the access token as identity",
            vec![("x-gatehouse-identity", admin.clone())],
        ),
        (
            "the access token as bearer",
            vec![("authorization", format!("Bearer {admin}"))],
        ),
    ];
    for (reason, headers) in attempts {
        let mut request = app.http.get(format!("{}/users", app.users));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{reason} must not pass");
    }
}
