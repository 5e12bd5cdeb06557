//! Who may call: only requests with the gateway's identity token get in (401 otherwise), and
//! only signed-in users have orders (a machine client or the gateway itself: 403).

use kit::PrincipalKind;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{id_of, spawn_app, two_items, Caller};

/// Every operation, with a path to an order that exists (so a 404 cannot hide a refusal).
fn operations(order_id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/orders".to_owned()),
        (Method::GET, "/orders".to_owned()),
        (Method::GET, format!("/orders/{order_id}")),
        (Method::POST, format!("/orders/{order_id}/cancel")),
    ]
}

async fn call(caller: &Caller, method: &Method, path: &str) -> crate::helpers::TestResponse {
    let body = two_items().to_string();
    caller
        .send(method.clone(), path, Some(("application/json", body)), &[])
        .await
}

#[tokio::test]
async fn every_endpoint_answers_401_without_a_valid_identity_token() {
    let app = spawn_app().await;
    let order = app.user().create_order(&two_items()).await;
    let sub = Uuid::now_v7();
    let for_users = {
        let mut claims = app
            .gateway
            .claims(&sub.to_string(), PrincipalKind::User, &["admin"], "");
        claims.aud = "users".to_owned();
        app.gateway.sign(&claims)
    };
    let stranger = app.gateway.sign_as_stranger(&app.gateway.claims(
        &sub.to_string(),
        PrincipalKind::User,
        &["admin"],
        "",
    ));

    for (caller, reason) in [
        (app.anonymous(), "no token"),
        (
            app.with_token(for_users),
            "a token minted for the users service",
        ),
        (
            app.with_token(stranger),
            "a token signed by a key the service does not trust",
        ),
        (app.with_token("garbage".to_owned()), "not a JWT"),
    ] {
        for (method, path) in operations(id_of(&order)) {
            let response = call(&caller, &method, &path).await;
            assert_eq!(
                response.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {reason}: {}",
                response.text
            );
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert!(!response.problem().to_string().contains(id_of(&order)));
        }
    }
    assert_eq!(app.admin().get("/orders").await.json()["total"], 1);
}

#[tokio::test]
async fn the_x_user_id_header_alone_is_not_trusted() {
    let app = spawn_app().await;
    let alice = app.user();
    alice.create_order(&two_items()).await;

    let response = app
        .anonymous()
        .send(
            Method::GET,
            "/orders",
            None,
            &[("x-user-id", &alice.user_id().to_string())],
        )
        .await;

    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn machine_clients_and_the_gateway_have_no_orders() {
    let app = spawn_app().await;
    let order = app.user().create_order(&two_items()).await;

    for (caller, kind) in [
        (app.client(&[]), "a machine client"),
        (
            app.client(&["admin"]),
            "a machine client claiming the admin role",
        ),
        (app.gateway_itself(), "the gateway"),
    ] {
        for (method, path) in operations(id_of(&order)) {
            let response = call(&caller, &method, &path).await;
            assert_eq!(
                response.status,
                StatusCode::FORBIDDEN,
                "{method} {path} by {kind}: {}",
                response.text
            );
            assert!(
                response.detail().contains("signed-in users"),
                "the refusal says why: {}",
                response.text
            );
            assert!(!response.problem().to_string().contains(id_of(&order)));
        }
    }
    let client = app.client(&[]).post("/orders", &two_items()).await;
    assert!(
        client.detail().contains("machine client"),
        "{}",
        client.text
    );
    assert_eq!(
        app.admin().get("/orders").await.json()["total"],
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn a_user_token_whose_subject_is_not_a_uuid_is_403() {
    let app = spawn_app().await;
    let claims = app
        .gateway
        .claims("not-a-uuid", PrincipalKind::User, &["user"], "");

    let response = app
        .with_token(app.gateway.sign(&claims))
        .post("/orders", &two_items())
        .await;

    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.text);
}

#[tokio::test]
async fn a_validly_signed_identity_token_the_gateway_would_never_mint_is_401() {
    let app = spawn_app().await;
    let sub = Uuid::now_v7();
    let minted = app
        .gateway
        .claims(&sub.to_string(), PrincipalKind::User, &["admin"], "");
    let valid = serde_json::to_value(&minted).unwrap();
    // The gateway mints every identity for kit::identity::TOKEN_TTL; the service tolerates
    // a few seconds of skew on top, never an hour.
    let ttl = kit::identity::TOKEN_TTL.as_secs();
    let lifetime = |seconds: u64| {
        let mut claims = valid.clone();
        claims["exp"] = (minted.iat + seconds).into();
        claims
    };
    let without = |claim: &str| {
        let mut claims = valid.clone();
        claims.as_object_mut().unwrap().remove(claim);
        claims
    };
    let mut empty_jti = valid.clone();
    empty_jti["jti"] = "".into();
    let mut future = valid.clone();
    future["iat"] = (minted.iat + 3600).into();
    future["exp"] = (minted.iat + 3600 + ttl).into();

    for (claims, reason) in [
        (lifetime(3600), "a lifetime of an hour"),
        (
            lifetime(ttl + 6),
            "a lifetime past the identity lifetime and its 5 s of skew",
        ),
        (without("jti"), "no jti"),
        (empty_jti, "an empty jti"),
        (without("iat"), "no iat"),
        (future, "issued an hour from now"),
    ] {
        let response = app
            .with_token(app.gateway.sign_value(&claims))
            .get("/orders")
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{reason}: {}",
            response.text
        );
    }

    for (seconds, reason) in [(ttl, "as minted"), (ttl + 5, "within the skew")] {
        let response = app
            .with_token(app.gateway.sign_value(&lifetime(seconds)))
            .get("/orders")
            .await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{reason}: {}",
            response.text
        );
    }
}
