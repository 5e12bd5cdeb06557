//! Bad input is the client's to fix: 400, 415 or 422 with every bad field named, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{new_user, spawn_app};

/// `new_user("valid")` with `field` set to `value` (or removed, for `Value::Null`).
fn with(field: &str, value: Value) -> Value {
    let mut body = new_user("valid");
    if value.is_null() {
        body.as_object_mut().unwrap().remove(field);
    } else {
        body[field] = value;
    }
    body
}

/// `new_user("valid")` with `field` sent as `null`.
fn null(field: &str) -> Value {
    let mut body = new_user("valid");
    body[field] = Value::Null;
    body
}

#[tokio::test]
async fn invalid_new_users_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let long = |n: usize| "a".repeat(n);

    for (body, field, reason) in [
        (with("username", Value::Null), "username", "missing"),
        (with("username", json!("")), "username", "empty"),
        (with("username", json!("   ")), "username", "only spaces"),
        (
            with("username", json!("with space")),
            "username",
            "an inner space",
        ),
        (
            with("username", json!("al!ce")),
            "username",
            "a character outside [a-z0-9._-]",
        ),
        (
            with("username", json!(long(65))),
            "username",
            "65 characters",
        ),
        (with("email", Value::Null), "email", "missing"),
        (with("email", json!("")), "email", "empty"),
        (with("email", json!("no-at-sign")), "email", "no @"),
        (
            with("email", json!("a@b")),
            "email",
            "a domain without a dot",
        ),
        (
            with("email", json!(format!("{}@example.com", long(250)))),
            "email",
            "over 254 characters",
        ),
        (with("password", Value::Null), "password", "missing"),
        (with("password", json!("")), "password", "empty"),
        (
            with("password", json!(long(1025))),
            "password",
            "over 1024 characters",
        ),
        (
            with("full_name", json!(long(201))),
            "full_name",
            "over 200 characters",
        ),
        (
            with("full_name", json!("two\nlines")),
            "full_name",
            "a control character",
        ),
        (with("role", json!("root")), "role", "not admin or user"),
        (with("role", json!("Admin")), "role", "not in lower case"),
        (
            with("scopes", json!(["time:read", "Time:Precise"])),
            "scopes[1]",
            "an upper-case scope",
        ),
        (with("scopes", json!([""])), "scopes[0]", "an empty scope"),
        (
            with("scopes", json!([long(65)])),
            "scopes[0]",
            "a scope over 64 characters",
        ),
        (
            with(
                "scopes",
                json!((0..33).map(|i| format!("s{i}")).collect::<Vec<_>>()),
            ),
            "scopes",
            "33 scopes",
        ),
        // The document types these as a role, a list and a boolean, none of them nullable:
        // left out they take their defaults, and `null` is refused rather than taken for one.
        (null("role"), "role", "null"),
        (null("scopes"), "scopes", "null"),
        (null("is_active"), "is_active", "null"),
    ] {
        let response = app.admin().post("/users", &body).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "a {field} {reason}: {}",
            response.text
        );
        assert_eq!(response.invalid_fields(), [field], "a {field} {reason}");
    }
    assert_eq!(
        app.admin().get("/users").await.json()["total"],
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn every_invalid_field_is_listed_at_once() {
    let app = spawn_app().await;

    let response = app
        .admin()
        .post(
            "/users",
            &json!({ "username": "", "email": "x", "role": "boss", "scopes": ["ok", "NOT OK"] }),
        )
        .await;

    assert_eq!(
        response.invalid_fields(),
        ["username", "email", "password", "role", "scopes[1]"]
    );
    let problem = response.problem();
    for error in problem["errors"].as_array().unwrap() {
        assert!(
            !error["message"].as_str().unwrap().is_empty(),
            "each error says what is wrong: {error}"
        );
    }
}

#[tokio::test]
async fn invalid_changes_are_refused_naming_each_field() {
    let app = spawn_app().await;
    let user = app.create_named("olga").await;
    let path = format!("/users/{}", user["id"].as_str().unwrap());

    for (body, fields, reason) in [
        (
            json!({ "username": null }),
            vec!["username"],
            "a null username",
        ),
        (
            json!({ "email": null, "password": null }),
            vec!["email", "password"],
            "a null email and password",
        ),
        (
            json!({ "role": null, "scopes": null, "is_active": null }),
            vec!["role", "scopes", "is_active"],
            "null where a value is needed",
        ),
        (
            json!({ "username": "a b", "email": "@", "password": "" }),
            vec!["username", "email", "password"],
            "three bad values",
        ),
        (
            json!({ "scopes": ["UPPER"] }),
            vec!["scopes[0]"],
            "a bad scope",
        ),
    ] {
        let response = app.admin().patch(&path, &body).await;
        assert_eq!(response.invalid_fields(), fields, "{reason}");
    }
    assert_eq!(app.admin().get(&path).await.json(), user, "nothing changed");
}

#[tokio::test]
async fn unknown_fields_are_refused() {
    let app = spawn_app().await;
    let user = app.create_named("pat").await;
    let mut body = new_user("quinn");
    body["nickname"] = json!("q");

    let create = app.admin().post("/users", &body).await;
    let change = app
        .admin()
        .patch(
            &format!("/users/{}", user["id"].as_str().unwrap()),
            &json!({ "nickname": "p" }),
        )
        .await;

    for response in [create, change] {
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            response.text
        );
        assert!(
            response.problem()["detail"]
                .as_str()
                .unwrap()
                .contains("nickname"),
            "{}",
            response.text
        );
    }
}

#[tokio::test]
async fn a_password_hash_cannot_be_set_directly() {
    let app = spawn_app().await;
    let mut body = new_user("rita");
    body["hashed_password"] = json!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g");

    // Sent raw: the refusal names the unknown field, which the checked helpers would flag.
    let response = reqwest::Client::new()
        .post(format!("{}/users", app.address))
        .header(kit::identity::HEADER, admin_token(&app))
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.admin().get("/users").await.json()["total"], 0);
}

fn admin_token(app: &crate::helpers::TestApp) -> String {
    let claims = app.claims(
        &uuid::Uuid::new_v4().to_string(),
        kit::PrincipalKind::User,
        None,
        &["admin"],
        "",
    );
    app.sign(&claims)
}

#[tokio::test]
async fn wrongly_typed_fields_are_422_naming_the_field() {
    let app = spawn_app().await;

    for (field, value) in [
        ("username", json!(5)),
        ("is_active", json!("yes")),
        ("scopes", json!("time:read")),
    ] {
        let response = app.admin().post("/users", &with(field, value)).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            response.text
        );
        assert!(
            response.problem()["detail"]
                .as_str()
                .unwrap()
                .contains(field),
            "{}",
            response.text
        );
    }
}

// These once stopped at the first member serde could not read (a wrong type or an unknown
// member answered alone); now every bad member of a body is listed in the same 422.
#[tokio::test]
async fn wrong_types_unknown_members_and_invalid_values_are_listed_together() {
    let app = spawn_app().await;
    let user = app.create_named("tess").await;

    let created = app
        .admin()
        .post(
            "/users",
            &json!({
                "username": 5, "email": "no-at-sign", "password": "secret",
                "is_active": "yes", "nickname": "t", "scopes": "time:read"
            }),
        )
        .await;
    assert_eq!(
        created.invalid_fields(),
        ["username", "email", "scopes", "is_active", "nickname"],
        "{}",
        created.text
    );
    let messages: Vec<String> = created.problem()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages[0], "must be a string", "{messages:?}");
    assert_eq!(messages[2], "must be an array", "{messages:?}");

    let changed = app
        .signed_in(&user)
        .patch(
            "/users/me",
            &json!({ "email": [], "full_name": "two\nlines", "colour": "red" }),
        )
        .await;
    assert_eq!(
        changed.invalid_fields(),
        ["email", "full_name", "current_password", "colour"],
        "{}",
        changed.text
    );

    let checked = app
        .gateway()
        .post("/internal/credentials", &json!({ "password": 7 }))
        .await;
    assert_eq!(
        checked.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        checked.text
    );
    assert_eq!(checked.invalid_fields(), ["username", "password"]);
    assert_eq!(app.admin().get("/users").await.json()["total"], 1);
}

#[tokio::test]
async fn malformed_json_is_400_and_a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let user = app.create_named("sam").await;
    let someone = format!("/users/{}", user["id"].as_str().unwrap());

    for (method, path) in [
        (Method::POST, "/users"),
        (Method::PATCH, someone.as_str()),
        (Method::PATCH, "/users/me"),
    ] {
        let caller = if path == "/users/me" {
            app.signed_in(&user)
        } else {
            app.admin()
        };

        let malformed = caller
            .send(
                method.clone(),
                path,
                Some(("application/json", "{\"username\": ".to_owned())),
            )
            .await;
        assert_eq!(
            malformed.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {}",
            malformed.text
        );
        malformed.problem();

        let not_json = caller
            .send(
                method.clone(),
                path,
                Some(("text/plain", "username=x".to_owned())),
            )
            .await;
        assert_eq!(
            not_json.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path}: {}",
            not_json.text
        );
        not_json.problem();

        let no_body = caller.send(method.clone(), path, None).await;
        assert_eq!(
            no_body.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path}: {}",
            no_body.text
        );
    }
    for (body, status) in [
        ("[", StatusCode::BAD_REQUEST),
        ("{\"username\": \"a\", ", StatusCode::BAD_REQUEST),
        ("[]", StatusCode::UNPROCESSABLE_ENTITY),
        ("\"alice\"", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "{\"username\": \"a\", \"username\": \"b\", \"password\": \"c\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let credentials = app
            .gateway()
            .send(
                Method::POST,
                "/internal/credentials",
                Some(("application/json", body.to_owned())),
            )
            .await;
        assert_eq!(credentials.status, status, "{body}: {}", credentials.text);
        credentials.problem();
    }
}
