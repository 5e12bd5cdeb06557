//! Accounts, for admins: create, read, list, change, delete; and nobody else.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{new_user, spawn_app};

#[tokio::test]
async fn an_admin_creates_a_user_with_the_defaults_and_reads_it_back() {
    let app = spawn_app().await;

    let response = app.admin().post("/users", &new_user("alice")).await;

    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let user = response.json();
    let id = user["id"].as_str().unwrap();
    assert!(Uuid::parse_str(id).is_ok());
    assert_eq!(
        response.header("location"),
        Some(format!("/users/{id}").as_str())
    );
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["full_name"], json!(null));
    assert_eq!(user["role"], "user");
    assert_eq!(user["scopes"], json!(["time:read"]));
    assert_eq!(user["is_active"], true);
    let created_at = user["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2024-01-01T00:00:00.000000Z".len(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z'));
    assert_eq!(user["updated_at"], user["created_at"]);
    let mut keys: Vec<_> = user.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "full_name",
            "id",
            "is_active",
            "role",
            "scopes",
            "updated_at",
            "username"
        ]
    );

    let read = app.admin().get(&format!("/users/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), user);
}

#[tokio::test]
async fn an_admin_sets_every_field_at_creation() {
    let app = spawn_app().await;

    let user = app
        .create_user(&json!({
            "username": "  Bob.Smith ",
            "email": " Bob@Example.COM",
            "password": "x",
            "full_name": "  Bob Smith ",
            "role": "admin",
            "scopes": ["time:read", "time:precise", "time:read"],
            "is_active": false,
        }))
        .await;

    assert_eq!(user["username"], "bob.smith", "trimmed and case-folded");
    assert_eq!(user["email"], "bob@example.com", "trimmed and lower-cased");
    assert_eq!(user["full_name"], "Bob Smith");
    assert_eq!(user["role"], "admin");
    assert_eq!(
        user["scopes"],
        json!(["time:read", "time:precise"]),
        "duplicates dropped"
    );
    assert_eq!(user["is_active"], false);
}

#[tokio::test]
async fn an_admin_changes_any_field_of_a_user() {
    let app = spawn_app().await;
    let user = app.create_named("carol").await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    let response = app
        .admin()
        .patch(
            &path,
            &json!({
                "username": "Caroline",
                "email": "caroline@example.org",
                "full_name": "Caroline Doe",
                "role": "admin",
                "scopes": ["time:precise"],
                "is_active": false,
            }),
        )
        .await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let changed = response.json();
    assert_eq!(changed["id"], user["id"]);
    assert_eq!(changed["username"], "caroline");
    assert_eq!(changed["email"], "caroline@example.org");
    assert_eq!(changed["full_name"], "Caroline Doe");
    assert_eq!(changed["role"], "admin");
    assert_eq!(changed["scopes"], json!(["time:precise"]));
    assert_eq!(changed["is_active"], false);
    assert_eq!(changed["created_at"], user["created_at"]);
    assert!(
        changed["updated_at"].as_str() > user["updated_at"].as_str(),
        "{changed}"
    );
    assert_eq!(app.admin().get(&path).await.json(), changed);
}

#[tokio::test]
async fn a_patch_changes_only_the_fields_it_names() {
    let app = spawn_app().await;
    let user = app.create_user(&json!({ "username": "dan", "email": "dan@example.com", "password": "p", "full_name": "Dan" })).await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    let changed = app
        .admin()
        .patch(&path, &json!({ "scopes": [] }))
        .await
        .json();
    assert_eq!(changed["scopes"], json!([]));
    assert_eq!(changed["full_name"], "Dan");
    assert_eq!(changed["email"], "dan@example.com");

    let cleared = app
        .admin()
        .patch(&path, &json!({ "full_name": null }))
        .await
        .json();
    assert_eq!(cleared["full_name"], json!(null), "null clears the name");

    let unchanged = app.admin().patch(&path, &json!({})).await;
    assert_eq!(unchanged.status, StatusCode::OK);
    assert_eq!(unchanged.json(), cleared, "an empty patch changes nothing");
}

#[tokio::test]
async fn an_admin_deletes_a_user_and_it_is_gone() {
    let app = spawn_app().await;
    let user = app.create_named("erin").await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    let response = app.admin().delete(&path).await;

    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(response.text.is_empty());
    assert_eq!(app.admin().get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.admin().delete(&path).await.status,
        StatusCode::NOT_FOUND,
        "a second delete finds nothing"
    );
}

#[tokio::test]
async fn users_are_listed_in_creation_order_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        created.push(app.create_named(name).await["id"].clone());
    }

    let all = app.admin().get("/users").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let all = all.json();
    assert_eq!(
        (
            all["total"].clone(),
            all["limit"].clone(),
            all["offset"].clone()
        ),
        (json!(5), json!(50), json!(0))
    );
    let ids: Vec<_> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, created);

    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let page = app
            .admin()
            .get(&format!("/users?limit=2&offset={offset}"))
            .await
            .json();
        assert_eq!(page["total"], 5);
        assert_eq!(page["limit"], 2);
        assert_eq!(page["offset"], offset);
        paged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].clone()),
        );
    }
    assert_eq!(paged, created, "pages neither overlap nor skip");

    let beyond = app.admin().get("/users?offset=10").await.json();
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 5);
}

#[tokio::test]
async fn bad_pagination_parameters_are_refused() {
    let app = spawn_app().await;
    for (query, status, reason) in [
        (
            "limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "a limit below 1",
        ),
        (
            "limit=201",
            StatusCode::UNPROCESSABLE_ENTITY,
            "a limit above 200",
        ),
        (
            "offset=-1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "a negative offset",
        ),
        (
            "limit=ten",
            StatusCode::BAD_REQUEST,
            "a limit that is not a number",
        ),
        (
            "offset=1.5",
            StatusCode::BAD_REQUEST,
            "an offset that is not an integer",
        ),
    ] {
        let response = app.admin().get(&format!("/users?{query}")).await;
        assert_eq!(response.status, status, "{reason}: {}", response.text);
        response.problem();
    }
    assert_eq!(
        app.admin().get("/users?limit=200").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let app = spawn_app().await;
    let unknown = format!("/users/{}", Uuid::new_v4());
    for path in [unknown.as_str(), "/users/not-a-uuid", "/users/42"] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let body = (method == Method::PATCH)
                .then(|| ("application/json", json!({ "full_name": "x" }).to_string()));
            let response = app.admin().send(method.clone(), path, body).await;
            assert_eq!(
                response.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                response.text
            );
            response.problem();
        }
    }
}

#[tokio::test]
async fn a_user_is_forbidden_from_every_admin_endpoint() {
    let app = spawn_app().await;
    let user = app.create_named("frank").await;
    let someone = format!("/users/{}", user["id"].as_str().unwrap());
    let caller = app.signed_in(&user);

    for (method, path, body) in [
        (Method::GET, "/users", None),
        (
            Method::POST,
            "/users",
            Some(new_user("mallory").to_string()),
        ),
        (Method::POST, "/users", Some("{not json".to_owned())),
        (Method::GET, someone.as_str(), None),
        (
            Method::PATCH,
            someone.as_str(),
            Some(json!({ "role": "admin" }).to_string()),
        ),
        (Method::DELETE, someone.as_str(), None),
        (Method::GET, "/users/not-a-uuid", None),
    ] {
        let body = body.map(|b| ("application/json", b));
        let response = caller.send(method.clone(), path, body).await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            response.text
        );
        response.problem();
    }
    let after = app.admin().get(&someone).await.json();
    assert_eq!(after, user, "nothing changed");
    assert_eq!(
        app.admin().get("/users").await.json()["total"],
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn a_machine_client_is_not_an_admin_even_with_the_role() {
    let app = spawn_app().await;

    let response = app.client(&["admin"]).get("/users").await;

    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.text);
}
