//! Route authentication against forged, expired and foreign tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::{assert_problem, spawn_app, TestApp};

/// The gateway's own signing key, read from its store, to forge tokens that differ in one claim.
async fn gateway_key(app: &TestApp) -> (String, EncodingKey) {
    let url = format!("sqlite://{}/data/gateway.db", app.data.path().display());
    let store = gateway::store::Store::connect(&url).await.unwrap();
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
