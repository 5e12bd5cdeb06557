//! A service's view of the gateway's keys: fetched from the JWKS, renewed, and a retired key
//! stops verifying.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::identity::{IdentityClaims, TOKEN_TYPE};
use kit::testing::wait_until;
use kit::{IdentityVerifier, PrincipalKind};
use serde_json::{json, Value};

struct Key {
    kid: &'static str,
    signing: EncodingKey,
    jwk: Value,
}

fn key(kid: &'static str) -> Key {
    let secret = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    Key {
        kid,
        signing: EncodingKey::from_ed_der(secret.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                     "x": URL_SAFE_NO_PAD.encode(secret.verifying_key().as_bytes()) }),
    }
}

fn token(key: &Key) -> String {
    signed_for(key, &uuid::Uuid::new_v4().to_string())
}

/// Each token its own subject, so none is a copy of one verified before.
fn signed_for(key: &Key, subject: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.to_owned());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = IdentityClaims {
        iss: "gatehouse".into(),
        aud: "clock".into(),
        sub: subject.into(),
        kind: PrincipalKind::Client,
        username: None,
        roles: vec![],
        scope: "time:read".into(),
        iat: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jsonwebtoken::encode(&header, &claims, &key.signing).unwrap()
}

/// A JWKS endpoint whose key list the test changes.
async fn serve_jwks(keys: Arc<Mutex<Vec<Value>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let keys = keys.lock().unwrap().clone();
            async move { Json(json!({ "keys": keys })) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/.well-known/jwks.json")
}

#[tokio::test]
async fn a_key_that_leaves_the_jwks_stops_verifying_once_the_keys_are_renewed() {
    let (old, new) = (key("old"), key("new"));
    let published = Arc::new(Mutex::new(vec![old.jwk.clone(), new.jwk.clone()]));
    let url = serve_jwks(Arc::clone(&published)).await;
    let verifier = IdentityVerifier::with_jwks("clock", "gatehouse", url)
        .renewing_keys_every(Duration::from_millis(200));

    assert!(verifier.verify(&token(&old)).await.is_ok());
    assert!(verifier.verify(&token(&new)).await.is_ok());

    *published.lock().unwrap() = vec![new.jwk.clone()];
    wait_until("a retired key to verify nothing", || async {
        verifier.verify(&token(&old)).await.is_err()
    })
    .await;
    assert!(verifier.verify(&token(&new)).await.is_ok());
}

#[tokio::test]
async fn a_key_rotated_in_is_fetched_when_a_token_names_it() {
    let (first, second) = (key("first"), key("second"));
    let published = Arc::new(Mutex::new(vec![first.jwk.clone()]));
    let url = serve_jwks(Arc::clone(&published)).await;
    let verifier = IdentityVerifier::with_jwks("clock", "gatehouse", url);
    assert!(verifier.verify(&token(&first)).await.is_ok());

    published.lock().unwrap().push(second.jwk.clone());
    // Refetches are spaced (a flood of unknown kids is not a flood of fetches): the token is
    // accepted once the next one is allowed.
    wait_until("an unknown kid to refetch the JWKS", || async {
        verifier.verify(&token(&second)).await.is_ok()
    })
    .await;
}
