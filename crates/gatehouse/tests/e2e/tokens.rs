//! Route authentication against forged, expired and foreign tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app, TestApp};

/// The gateway's own signing key, read from its store, to forge tokens that differ in one claim.
async fn gateway_key(app: &TestApp) -> (String, EncodingKey) {
    let store = gateway::store::Store::connect(&app.store_url)
        .await
        .unwrap();
    let key = store.signing_keys().await.unwrap().remove(0);
    (
        key.kid,
        EncodingKey::from_ed_der(&STANDARD.decode(key.private_key).unwrap()),
    )
}

fn claims(overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": "gatehouse", "aud": "gatehouse-api", "sub": uuid::Uuid::new_v4().to_string(), "kind": "user",
        "username": "admin", "roles": ["admin"], "scope": "", "iat": now, "nbf": now, "exp": now + 600,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    for (name, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn sign(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn a_request_without_a_token_is_challenged() {
    let app = spawn_app().await;
    let response = app.get("/api/users", None).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_problem(response, 401).await;
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let app = spawn_app().await;
    let (kid, key) = gateway_key(&app).await;
    let stranger = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let stranger = EncodingKey::from_ed_der(stranger.to_pkcs8_der().unwrap().as_bytes());
    let valid = sign(&kid, &key, &claims(json!({})));
    let (head, rest) = valid.split_once('.').unwrap();
    let (_payload, signature) = rest.split_once('.').unwrap();
    let tampered_payload =
        URL_SAFE_NO_PAD.encode(claims(json!({ "roles": ["admin", "root"] })).to_string());
    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "at+jwt", "kid": kid }).to_string());
    let now = chrono::Utc::now().timestamp();

    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".to_owned()),
        ("not base64", "!!!.???.###".to_owned()),
        (
            "expired an hour ago",
            sign(&kid, &key, &claims(json!({ "exp": now - 3600 }))),
        ),
        (
            "not valid for an hour",
            sign(&kid, &key, &claims(json!({ "nbf": now + 3600 }))),
        ),
        (
            "no expiry",
            sign(&kid, &key, &claims(json!({ "exp": null }))),
        ),
        (
            "another issuer",
            sign(&kid, &key, &claims(json!({ "iss": "someone-else" }))),
        ),
        (
            "another audience",
            sign(&kid, &key, &claims(json!({ "aud": "users" }))),
        ),
        (
            "signed by another key under our kid",
            sign(&kid, &stranger, &claims(json!({}))),
        ),
        (
            "an unknown kid",
            sign("no-such-key", &key, &claims(json!({}))),
        ),
        (
            "a payload changed after signing",
            format!("{head}.{tampered_payload}.{signature}"),
        ),
        (
            "the signature stripped",
            format!("{head}.{}.", rest.split_once('.').unwrap().0),
        ),
        (
            "alg none",
            format!(
                "{none_header}.{}.",
                URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
            ),
        ),
        ("100 KB long", format!("{valid}{}", "A".repeat(100_000))),
    ];
    assert_eq!(
        app.get("/api/users", Some(&valid)).await.status(),
        200,
        "the unaltered token is accepted"
    );
    for (reason, token) in cases {
        let response = app.get("/api/users", Some(&token)).await;
        assert_eq!(response.status(), 401, "a token {reason} must be refused");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{reason}: {challenge}");
    }
}

#[tokio::test]
async fn a_token_for_a_role_is_needed_on_role_routes_and_a_scope_on_scope_routes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.token("test", "test").await;

    assert_eq!(app.get("/api/admin-echo", Some(&admin)).await.status(), 200);
    assert_problem(app.get("/api/admin-echo", Some(&user)).await, 403).await;

    assert_eq!(
        app.get("/api/precise-echo", Some(&admin)).await.status(),
        200,
        "admin holds time:precise"
    );
    let response = app.get("/api/precise-echo", Some(&user)).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let body = assert_problem(response, 403).await;
    assert!(
        body["detail"].as_str().unwrap().contains("time:precise"),
        "{body}"
    );
}

#[tokio::test]
async fn key_confusion_hostile_kids_and_identity_tokens_are_refused() {
    let app = spawn_app().await;
    let (kid, key) = gateway_key(&app).await;
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let public_x = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()["x"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some(kid.clone());
    confused.typ = Some("at+jwt".to_owned());
    let with_public_key_as_secret = jsonwebtoken::encode(
        &confused,
        &claims(json!({})),
        &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&public_x).unwrap()),
    )
    .unwrap();
    let with_public_text_as_secret = jsonwebtoken::encode(
        &confused,
        &claims(json!({})),
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();

    let mut identity_header = Header::new(Algorithm::EdDSA);
    identity_header.kid = Some(kid.clone());
    identity_header.typ = Some(kit::identity::TOKEN_TYPE.to_owned());
    let identity_token =
        jsonwebtoken::encode(&identity_header, &claims(json!({ "aud": "users" })), &key).unwrap();

    let mut cases: Vec<(String, String)> = vec![
        (
            "HS256 with the public key as secret".into(),
            with_public_key_as_secret,
        ),
        (
            "HS256 with the public key text as secret".into(),
            with_public_text_as_secret,
        ),
        (
            "an identity token (typ) presented as access token".into(),
            identity_token,
        ),
    ];
    for hostile in [
        "../../../../etc/passwd",
        "' OR '1'='1' --",
        "%00",
        "\"; DROP TABLE signing_keys; --",
        "",
    ] {
        cases.push((
            format!("kid {hostile:?}"),
            sign(hostile, &key, &claims(json!({}))),
        ));
    }
    for (reason, token) in cases {
        let response = app.get("/api/users", Some(&token)).await;
        assert_eq!(response.status(), 401, "{reason} must be refused");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{reason}"
        );
    }
    assert_eq!(
        app.get("/api/users", Some(&sign(&kid, &key, &claims(json!({})))))
            .await
            .status(),
        200,
        "the store survived"
    );
}

#[tokio::test]
async fn a_valid_token_of_another_gatehouse_deployment_is_refused() {
    let ours = spawn_app().await;
    let theirs = spawn_app().await;
    let foreign = theirs.admin().await;
    assert_eq!(theirs.get("/api/users", Some(&foreign)).await.status(), 200);
    assert_eq!(ours.get("/api/users", Some(&foreign)).await.status(), 401);
}

#[tokio::test]
async fn rs256_access_tokens_verify_with_the_published_rsa_key() {
    let app = crate::harness::spawn_app_with(|config| {
        config.replace("algorithm: EdDSA", "algorithm: RS256")
    })
    .await;
    let token = app.admin().await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let jwk = jwks
        .find(header.kid.as_ref().unwrap())
        .expect("the RSA key is published");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["gatehouse-api"]);
    jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("a standard library verifies RS256 tokens with the JWKS");
    assert_eq!(
        app.get("/api/users", Some(&token)).await.status(),
        200,
        "services still verify EdDSA identity tokens"
    );
}

#[tokio::test]
async fn hs256_keeps_its_secret_out_of_the_jwks() {
    let app = crate::harness::spawn_app_with(|config| {
        config.replace("algorithm: EdDSA", "algorithm: HS256")
    })
    .await;
    let token = app.admin().await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::HS256
    );
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert_ne!(
            key["kty"], "oct",
            "a shared secret is never published: {key}"
        );
        assert!(key.get("k").is_none());
    }
    assert_eq!(app.get("/api/users", Some(&token)).await.status(), 200);
}
