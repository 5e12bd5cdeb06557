//! Machine-to-machine clients and the OAuth 2.0 token endpoint (RFC 6749).

use kit::client::ServiceClient;
use serde_json::Value;

use crate::harness::spawn_app;

async fn token_request(app: &crate::harness::TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.http
        .post(app.url("/api/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn oauth_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "expected {code}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string());
}

#[tokio::test]
async fn clients_are_added_listed_and_removed_with_the_cli_while_the_gateway_runs() {
    let app = spawn_app().await;
    let secret = app.add_client("reporting", "time:read time:precise");
    assert!(secret.len() >= 43, "256 random bits");

    let (ok, listing) = app.cli(&["clients", "list"]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains("reporting") && listing.contains("time:read time:precise"),
        "{listing}"
    );
    assert!(!listing.contains(&secret), "the secret is shown only once");

    let (ok, output) = app.cli(&["clients", "add", "reporting", "--scopes", "time:read"]);
    assert!(!ok && output.contains("exists already"), "{output}");
    let (ok, output) = app.cli(&["clients", "add", "Bad Name!"]);
    assert!(!ok && output.contains("client id"), "{output}");

    let granted = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "reporting"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(
        granted.status(),
        200,
        "the running gateway sees the new client at once"
    );

    let (ok, output) = app.cli(&["clients", "remove", "reporting"]);
    assert!(ok, "{output}");
    let refused = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "reporting"),
            ("client_secret", &secret),
        ],
    )
    .await;
    oauth_error(refused, 401, "invalid_client").await;
    let (ok, _) = app.cli(&["clients", "remove", "reporting"]);
    assert!(!ok, "removing an unknown client fails");
}

#[tokio::test]
async fn a_client_gets_a_token_by_basic_or_form_and_calls_services_like_a_user() {
    let app = spawn_app().await;
    let secret = app.add_client("reporting", "time:read time:precise");

    let by_basic: Value = app
        .http
        .post(app.url("/api/oauth/token"))
        .basic_auth("reporting", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_basic["token_type"], "bearer");
    assert_eq!(by_basic["scope"], "time:read time:precise");
    assert_eq!(by_basic["expires_in"], 900);

    let by_form: Value = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "reporting"),
            ("client_secret", &secret),
            ("scope", "time:read"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        by_form["scope"], "time:read",
        "a narrower scope is granted when asked for"
    );

    let token = by_basic["access_token"].as_str().unwrap();
    let echoed: Value = app
        .get("/api/echo/as-client", Some(token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        echoed["headers"]["x-user-id"], "reporting",
        "sub is the client id"
    );
    assert_eq!(
        app.get("/api/precise-echo", Some(token)).await.status(),
        200,
        "scope routes accept client scopes"
    );
    assert_eq!(
        app.get("/api/admin-echo", Some(token)).await.status(),
        403,
        "a client holds no role"
    );
    let narrow = by_form["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/precise-echo", Some(narrow)).await.status(),
        403
    );
}

#[tokio::test]
async fn wrong_credentials_and_bad_requests_get_rfc_6749_errors() {
    let app = spawn_app().await;
    let secret = app.add_client("reporting", "time:read");
    let cc = "client_credentials";

    oauth_error(
        token_request(
            &app,
            &[
                ("grant_type", cc),
                ("client_id", "reporting"),
                ("client_secret", "wrong"),
            ],
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(
        token_request(
            &app,
            &[
                ("grant_type", cc),
                ("client_id", "nobody"),
                ("client_secret", &secret),
            ],
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(
        token_request(&app, &[("grant_type", cc)]).await,
        401,
        "invalid_client",
    )
    .await;

    let basic_wrong = app
        .http
        .post(app.url("/api/oauth/token"))
        .basic_auth("reporting", Some("wrong"))
        .form(&[("grant_type", cc)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic_wrong.headers()["www-authenticate"],
        "Basic realm=\"gatehouse\""
    );
    oauth_error(basic_wrong, 401, "invalid_client").await;
    let garbage_basic = app
        .http
        .post(app.url("/api/oauth/token"))
        .header("authorization", "Basic !!!")
        .form(&[("grant_type", cc)])
        .send()
        .await
        .unwrap();
    oauth_error(garbage_basic, 401, "invalid_client").await;

    let scope = token_request(
        &app,
        &[
            ("grant_type", cc),
            ("client_id", "reporting"),
            ("client_secret", &secret),
            ("scope", "time:precise"),
        ],
    )
    .await;
    oauth_error(scope, 400, "invalid_scope").await;
    oauth_error(
        token_request(&app, &[("grant_type", "authorization_code"), ("code", "x")]).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        token_request(&app, &[("client_id", "reporting")]).await,
        400,
        "invalid_request",
    )
    .await;
    oauth_error(
        token_request(&app, &[("grant_type", cc), ("grant_type", cc)]).await,
        400,
        "invalid_request",
    )
    .await;
    let both = app
        .http
        .post(app.url("/api/oauth/token"))
        .basic_auth("reporting", Some(&secret))
        .form(&[
            ("grant_type", cc),
            ("client_id", "reporting"),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap();
    oauth_error(both, 400, "invalid_request").await;
    let json = app
        .http
        .post(app.url("/api/oauth/token"))
        .json(&serde_json::json!({ "grant_type": cc }))
        .send()
        .await
        .unwrap();
    oauth_error(json, 400, "invalid_request").await;
}

#[tokio::test]
async fn the_password_grant_signs_users_in_for_standard_oauth_clients() {
    let app = spawn_app().await;
    let granted: Value = token_request(
        &app,
        &[
            ("grant_type", "password"),
            ("username", "test"),
            ("password", "test"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(granted["scope"], "time:read");
    let token = granted["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(token)).await.status(), 200);

    oauth_error(
        token_request(
            &app,
            &[
                ("grant_type", "password"),
                ("username", "test"),
                ("password", "nope"),
            ],
        )
        .await,
        400,
        "invalid_grant",
    )
    .await;
    oauth_error(
        token_request(&app, &[("grant_type", "password"), ("username", "test")]).await,
        400,
        "invalid_request",
    )
    .await;
    oauth_error(
        token_request(
            &app,
            &[
                ("grant_type", "password"),
                ("username", "test"),
                ("password", "test"),
                ("scope", "time:precise"),
            ],
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
}

#[tokio::test]
async fn the_kit_service_client_obtains_caches_and_uses_a_client_token() {
    let app = spawn_app().await;
    let secret = app.add_client("reporting", "time:read");
    let client = ServiceClient::new(&app.gateway, "reporting", &secret);

    let first = client.token().await.unwrap();
    assert_eq!(
        client.token().await.unwrap(),
        first,
        "the token is cached while it lives"
    );
    let echoed: Value = client
        .get("/api/echo/via-kit")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-user-id"], "reporting");

    let wrong = ServiceClient::new(&app.gateway, "reporting", "not-the-secret");
    assert!(matches!(
        wrong.token().await,
        Err(kit::client::ClientError::Refused(_))
    ));
}
