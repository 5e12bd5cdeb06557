use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app};

#[tokio::test]
async fn the_right_password_gives_a_bearer_token_that_verifies_against_the_jwks() {
    let app = spawn_app().await;

    let response = app.login("admin", "a").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();

    let jwks: JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("the token names its key");
    let jwk = jwks.find(&kid).expect("the JWKS publishes the token's key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["gatehouse-api"]);
    validation.set_issuer(&["gatehouse"]);
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("a standard JWT library verifies the token with the JWKS")
            .claims;
    assert_eq!(claims["username"], "admin");
    assert_eq!(claims["roles"], json!(["admin"]));
    for claim in ["sub", "iat", "nbf", "exp", "jti", "scope"] {
        assert!(!claims[claim].is_null(), "claim {claim} is present");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = spawn_app().await;

    let wrong_password = assert_problem(app.login("admin", "not-the-password").await, 401).await;
    let unknown_user = assert_problem(app.login("nobody-by-this-name", "a").await, 401).await;
    let impossible_name = assert_problem(app.login("no such name!", "a").await, 401).await;

    // Each request has its own id and trace: everything else is the same.
    let comparable = |mut body: Value| {
        let fields = body.as_object_mut().unwrap();
        fields.remove("request_id");
        assert!(
            fields.remove("trace_id").is_some(),
            "a problem names its trace"
        );
        body
    };
    assert_eq!(
        comparable(wrong_password.clone()),
        comparable(unknown_user),
        "must not reveal who exists"
    );
    assert_eq!(comparable(wrong_password), comparable(impossible_name));
}

#[tokio::test]
async fn malformed_login_requests_are_client_errors_never_server_errors() {
    let app = spawn_app().await;
    let cases: &[(&str, &str, &str, u16)] = &[
        ("not JSON at all", "application/json", "{username", 400),
        ("an empty body", "application/json", "", 400),
        (
            "a missing password",
            "application/json",
            r#"{"username":"admin"}"#,
            422,
        ),
        (
            "a number for a name",
            "application/json",
            r#"{"username":1,"password":"a"}"#,
            422,
        ),
        ("a JSON array", "application/json", r#"[1,2]"#, 422),
        (
            "an empty username",
            "application/json",
            r#"{"username":"","password":"a"}"#,
            422,
        ),
        (
            "a username of 10 000 characters",
            "application/json",
            &format!(r#"{{"username":"{}","password":"a"}}"#, "x".repeat(10_000)),
            422,
        ),
        (
            "a form instead of JSON",
            "application/x-www-form-urlencoded",
            "username=admin&password=a",
            415,
        ),
    ];
    for (reason, content_type, body, status) in cases {
        let response = app
            .http
            .post(app.url("/api/login"))
            .header("content-type", *content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), *status, "{reason}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{reason}"
        );
    }
}

#[tokio::test]
async fn the_login_path_answers_only_post() {
    let app = spawn_app().await;
    let response = app.get("/api/login", None).await;
    assert_problem(response, 405).await;
}
