//! A copy of the gateway's identity token, used round the gateway against the credential
//! check, meets the users service's own limit per caller and username.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::harness::{assert_problem, TestApp};

/// An identity token exactly as the gateway mints it for its own calls to users.
async fn captured_gateway_identity(app: &TestApp) -> String {
    let store = gateway::store::Store::connect(&app.store_url)
        .await
        .unwrap();
    let key = store.signing_keys().await.unwrap().remove(0);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid);
    header.typ = Some(kit::identity::TOKEN_TYPE.to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": "gatehouse", "aud": "users", "sub": "gateway", "kind": "gateway",
        "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let private = EncodingKey::from_ed_der(&STANDARD.decode(key.private_key).unwrap());
    jsonwebtoken::encode(&header, &claims, &private).unwrap()
}

#[tokio::test]
async fn a_captured_gateway_identity_cannot_guess_passwords_at_the_users_service() {
    let app = crate::harness::spawn_app().await;
    let identity = captured_gateway_identity(&app).await;
    let check = |password: String| {
        app.http
            .post(format!("{}/internal/credentials", app.users))
            .header(kit::identity::HEADER, &identity)
            .json(&json!({ "username": "test", "password": password }))
            .send()
    };
    assert_eq!(
        check("test".to_owned()).await.unwrap().status(),
        200,
        "the copy is as good as the gateway's own"
    );

    for guess in 1..=30 {
        let response = check(format!("guess {guess}")).await.unwrap();
        assert_eq!(response.status(), 401, "guess {guess}");
    }
    let throttled = check("test".to_owned()).await.unwrap();
    assert_eq!(
        throttled.status(),
        429,
        "the right password is not even checked"
    );
    assert!(throttled.headers().contains_key("retry-after"));

    // The gateway shares that caller's budget: its sign-in answers 429 too, not a 5xx.
    let through_gateway = app.login("test", "test").await;
    assert!(through_gateway.headers().contains_key("retry-after"));
    assert_problem(through_gateway, 429).await;
    assert_eq!(
        app.login("admin", "a").await.status(),
        200,
        "other users sign in"
    );
}
