//! Only the gateway's identity token lets a request in; without a valid one, 401.

use jsonwebtoken::{Algorithm, Header};
use kit::testing::FakeGateway;
use kit::PrincipalKind;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{spawn_app, ROUTES};

#[tokio::test]
async fn every_endpoint_answers_401_with_a_bearer_challenge_without_an_identity_token() {
    let app = spawn_app().await;
    let someone = Uuid::new_v4().to_string();

    for (method, template) in ROUTES {
        let path = template.replace("{id}", &someone);
        let response = app
            .anonymous()
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                Some(("application/json", "{}".to_owned())),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            response.text
        );
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer"),
            "{method} {path}"
        );
        response.problem();
    }
}

#[tokio::test]
async fn the_x_user_id_header_alone_is_not_trusted() {
    let app = spawn_app().await;
    let user = app.create_named("grace").await;

    let response = reqwest::Client::new()
        .get(format!("{}/users/me", app.address))
        .header("x-user-id", user["id"].as_str().unwrap())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn identity_tokens_that_do_not_verify_are_401() {
    let app = spawn_app().await;
    let sub = Uuid::new_v4().to_string();
    let admin = || app.claims(&sub, PrincipalKind::User, Some("root"), &["admin"], "");

    let expired = {
        let mut claims = admin();
        claims.iat -= 600;
        claims.exp = claims.iat + 60;
        claims
    };
    let other_audience = {
        let mut claims = admin();
        claims.aud = "orders".to_owned();
        claims
    };
    let other_issuer = {
        let mut claims = admin();
        claims.iss = "someone-else".to_owned();
        claims
    };
    let access_token_type = {
        let mut header = FakeGateway::identity_header();
        header.typ = Some("at+jwt".to_owned());
        header
    };
    let unknown_kid = {
        let mut header = FakeGateway::identity_header();
        header.kid = Some("no-such-key".to_owned());
        header
    };
    let no_kid = {
        let mut header = FakeGateway::identity_header();
        header.kid = None;
        header
    };
    let valid = app.sign(&admin());
    let tampered = {
        // Same header and signature, a payload that claims more: the signature no longer matches.
        let parts: Vec<&str> = valid.split('.').collect();
        let mut forged = admin();
        forged.roles.push("superuser".to_owned());
        let forged_token = app.sign(&forged);
        let forged_payload = forged_token.split('.').nth(1).unwrap();
        format!("{}.{}.{}", parts[0], forged_payload, parts[2])
    };
    let hs256 = jsonwebtoken::encode(
        &Header {
            alg: Algorithm::HS256,
            ..FakeGateway::identity_header()
        },
        &admin(),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();

    for (token, reason) in [
        ("garbage".to_owned(), "not a JWT at all"),
        ("a.b.c".to_owned(), "three parts of nonsense"),
        (app.sign(&expired), "expired"),
        (app.sign(&other_audience), "minted for another service"),
        (app.sign(&other_issuer), "issued by someone else"),
        (
            app.gateway.sign_as_stranger(&admin()),
            "signed by a key the service does not know",
        ),
        (
            app.gateway.sign_with_header(&access_token_type, &admin()),
            "an access token's type, not an identity token's",
        ),
        (
            app.gateway.sign_with_header(&unknown_kid, &admin()),
            "naming an unknown key",
        ),
        (
            app.gateway.sign_with_header(&no_kid, &admin()),
            "naming no key",
        ),
        (tampered, "a payload that does not match the signature"),
        (
            hs256,
            "HMAC-signed, with an algorithm the key is not pinned to",
        ),
    ] {
        let response = app.with_token(token).get("/users").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "a token {reason}: {}",
            response.text
        );
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer"),
            "a token {reason}"
        );
    }

    assert_eq!(
        app.with_token(valid).get("/users").await.status,
        StatusCode::OK,
        "the control case"
    );
}
