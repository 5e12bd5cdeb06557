//! `spawn_app()` and the typed helpers every test uses. The database, the stand-in gateway and
//! the served service come from `kit::testing`; what is here is about users.

use kit::identity::IdentityClaims;
pub use kit::testing::TestResponse;
use kit::testing::{spawn_on_database, FakeGateway, SpawnedService, TestDatabase};
use kit::PrincipalKind;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// Strings no response may ever contain: the hash column's name and an argon2 hash.
const SECRETS: [&str; 2] = ["hashed_password", "$argon2"];

/// Every route the service registers, as (method, path template): what `/openapi.json` must list,
/// and what must refuse a caller without an identity.
pub const ROUTES: [(&str, &str); 10] = [
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{id}"),
    ("PATCH", "/users/{id}"),
    ("DELETE", "/users/{id}"),
    ("GET", "/users/me"),
    ("PATCH", "/users/me"),
    ("POST", "/internal/credentials"),
    ("GET", "/internal/users/{id}"),
    ("GET", "/internal/token-cutoffs"),
];

/// A running users service with its own database; stopped and cleaned up on drop.
pub struct TestApp {
    pub address: String,
    pub db: kit::db::Database,
    /// Signs identity tokens the service trusts (and, for the tests that need them, ones it must not).
    pub gateway: FakeGateway,
    service: SpawnedService,
    database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    let database = TestDatabase::create("users").await;
    let db = users::connect(&database.url)
        .await
        .expect("connecting and migrating the test database");
    let (gateway, service) = spawn_on_database(&database, &db, users::NAME, users::service).await;

    TestApp {
        address: service.address.clone(),
        db,
        gateway,
        service,
        database,
    }
}

impl TestApp {
    /// Claims as the gateway mints them for this service, valid for the next minute.
    pub fn claims(
        &self,
        sub: &str,
        kind: PrincipalKind,
        username: Option<&str>,
        roles: &[&str],
        scope: &str,
    ) -> IdentityClaims {
        let mut claims = self.gateway.claims(sub, kind, roles, scope);
        claims.username = username.map(str::to_owned);
        claims
    }

    /// A token signed with the gateway's key, as the gateway would send it.
    pub fn sign(&self, claims: &IdentityClaims) -> String {
        self.gateway.sign(claims)
    }

    pub fn anonymous(&self) -> Caller<'_> {
        Caller {
            app: self,
            token: None,
        }
    }

    pub fn with_token(&self, token: String) -> Caller<'_> {
        Caller {
            app: self,
            token: Some(token),
        }
    }

    /// The URL of the test's database, for a second connection to it.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// The service as the kit's conformance checks see it.
    pub fn service(&self) -> &SpawnedService {
        &self.service
    }

    /// An admin (who need not have an account here: the gateway vouches for the role).
    pub fn admin(&self) -> Caller<'_> {
        let id = Uuid::new_v4().to_string();
        self.with_token(self.sign(&self.claims(
            &id,
            PrincipalKind::User,
            Some("root"),
            &["admin"],
            "",
        )))
    }

    /// The user `user` (a user JSON as the service answers it), signed in.
    pub fn signed_in(&self, user: &Value) -> Caller<'_> {
        let scope = user["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<Vec<_>>();
        let claims = self.claims(
            user["id"].as_str().unwrap(),
            PrincipalKind::User,
            user["username"].as_str(),
            &[user["role"].as_str().unwrap()],
            &scope.join(" "),
        );
        self.with_token(self.sign(&claims))
    }

    /// The gateway itself, as it calls the credential check.
    pub fn gateway(&self) -> Caller<'_> {
        self.with_token(self.sign(&self.claims("gateway", PrincipalKind::Gateway, None, &[], "")))
    }

    /// A machine client, with whatever roles the test gives it.
    pub fn client(&self, roles: &[&str]) -> Caller<'_> {
        self.with_token(self.sign(&self.claims(
            "reporting-job",
            PrincipalKind::Client,
            None,
            roles,
            "",
        )))
    }

    /// Creates a user through the admin API; panics unless it answers 201.
    pub async fn create_user(&self, body: &Value) -> Value {
        let response = self.admin().post("/users", body).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "creating {body}: {}",
            response.text
        );
        response.json()
    }

    /// Creates `name` with the password `password-of-<name>` and otherwise the defaults.
    pub async fn create_named(&self, name: &str) -> Value {
        self.create_user(&new_user(name)).await
    }

    pub async fn check_credentials(&self, username: &str, password: &str) -> TestResponse {
        self.gateway()
            .post(
                "/internal/credentials",
                &json!({ "username": username, "password": password }),
            )
            .await
    }
}

/// The smallest valid create body for `name`.
pub fn new_user(name: &str) -> Value {
    json!({ "username": name, "email": format!("{name}@example.com"), "password": format!("password-of-{name}") })
}

/// Someone calling the service: with an identity token, or without.
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Caller<'_> {
    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.send(
            Method::POST,
            path,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> TestResponse {
        self.send(
            Method::PATCH,
            path,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(Method::DELETE, path, None).await
    }

    /// Any request; `body` is a content type and the bytes to send as is.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> TestResponse {
        let mut call = self
            .app
            .service
            .call(method, path)
            .identity(self.token.as_deref());
        if let Some((content_type, bytes)) = body {
            call = call.body(content_type, bytes);
        }
        let response = call.send().await;
        let text = &response.text;
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "a response contains {secret:?}: {text}"
            );
        }
        response
    }
}
