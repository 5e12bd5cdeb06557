//! Only the gateway's identity token lets a request in; without a valid one, 401.

use jsonwebtoken::{Algorithm, Header};
use kit::PrincipalKind;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{claims, identity_header, spawn_app};

#[tokio::test]
async fn every_endpoint_answers_401_with_a_bearer_challenge_without_an_identity_token() {
    let app = spawn_app().await;
    let someone = format!("/users/{}", Uuid::new_v4());

    for (method, path) in [
        (Method::GET, "/users"),
        (Method::POST, "/users"),
        (Method::GET, someone.as_str()),
        (Method::PATCH, someone.as_str()),
        (Method::DELETE, someone.as_str()),
        (Method::GET, "/users/me"),
        (Method::PATCH, "/users/me"),
        (Method::POST, "/internal/credentials"),
    ] {
        let response = app
            .anonymous()
            .send(
                method.clone(),
                path,
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
    let admin = || claims(&sub, PrincipalKind::User, Some("root"), &["admin"], "");

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
        let mut header = identity_header();
        header.typ = Some("at+jwt".to_owned());
        header
    };
    let unknown_kid = {
        let mut header = identity_header();
        header.kid = Some("no-such-key".to_owned());
        header
    };
    let no_kid = {
        let mut header = identity_header();
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
            typ: Some(kit::identity::TOKEN_TYPE.to_owned()),
            kid: Some("test-key".to_owned()),
            ..Header::new(Algorithm::HS256)
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
            app.sign_as(&identity_header(), &admin(), true),
            "signed by a key the service does not know",
        ),
        (
            app.sign_as(&access_token_type, &admin(), false),
            "an access token's type, not an identity token's",
        ),
        (
            app.sign_as(&unknown_kid, &admin(), false),
            "naming an unknown key",
        ),
        (app.sign_as(&no_kid, &admin(), false), "naming no key"),
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
