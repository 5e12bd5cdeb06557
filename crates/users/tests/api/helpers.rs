//! `spawn_app()` and the typed helpers every test uses.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use kit::db::Backend;
use kit::identity::{IdentityClaims, VerifyingKey, TOKEN_TYPE};
use kit::shutdown::Shutdown;
use kit::{IdentityVerifier, PrincipalKind};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::net::TcpListener;
use uuid::Uuid;

/// When set (say `postgres://postgres@127.0.0.1:5432/test`), every test runs on PostgreSQL.
const POSTGRES_ENV: &str = "GATEHOUSE_TEST_POSTGRES";
pub const ISSUER: &str = "gatehouse";
const KEY_ID: &str = "test-key";

/// Strings no response may ever contain: the hash column's name and an argon2 hash.
const SECRETS: [&str; 2] = ["hashed_password", "$argon2"];

/// A running users service with its own database; stopped and cleaned up on drop.
pub struct TestApp {
    pub address: String,
    pub db: kit::db::Database,
    client: reqwest::Client,
    signing_key: EncodingKey,
    /// A key the service does not know, for tokens that must fail verification.
    stranger_key: EncodingKey,
    shutdown: Shutdown,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    let (database_url, database) = TestDatabase::create().await;
    let db = users::connect(&database_url)
        .await
        .expect("connecting and migrating the test database");
    let expected = if matches!(database, TestDatabase::Postgres { .. }) {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    assert_eq!(
        db.backend(),
        expected,
        "the test runs on the backend it asked for"
    );

    let signing = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let verifying_key = VerifyingKey {
        key: DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
        algorithm: Algorithm::EdDSA,
    };
    let verifier =
        IdentityVerifier::with_keys(users::NAME, ISSUER, [(KEY_ID.to_owned(), verifying_key)]);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(users::service(db.clone(), Arc::new(verifier)).serve(listener, shutdown.clone()));

    TestApp {
        address,
        db,
        client: reqwest::Client::new(),
        signing_key: encoding_key(&signing),
        stranger_key: encoding_key(&SigningKey::from_bytes(&rand::random::<[u8; 32]>())),
        shutdown,
        _database: database,
    }
}

fn encoding_key(key: &SigningKey) -> EncodingKey {
    EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes())
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Where a test's data lives: a temporary SQLite file, or a fresh PostgreSQL schema.
enum TestDatabase {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { server_url: String, schema: String },
}

impl TestDatabase {
    async fn create() -> (String, Self) {
        let Some(server_url) = std::env::var(POSTGRES_ENV)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/users.db", dir.path().display());
            return (url, Self::Sqlite { _dir: dir });
        };
        // Asked for PostgreSQL: never fall back to SQLite, or a broken set-up would pass unseen.
        let mut connection = sqlx::PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "{POSTGRES_ENV} is set but PostgreSQL at {} is unreachable: {error}",
                    kit::db::redact(&server_url)
                )
            });
        let schema = format!("t_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut connection)
            .await
            .unwrap();
        let separator = if server_url.contains('?') { '&' } else { '?' };
        let url = format!("{server_url}{separator}options=-c%20search_path%3D{schema}");
        (url, Self::Postgres { server_url, schema })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Self::Postgres { server_url, schema } = self else {
            return;
        };
        let (server_url, schema) = (server_url.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from a
        // thread with its own. Best effort: a leftover schema is only clutter.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut connection) = sqlx::PgConnection::connect(&server_url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut connection)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Claims as the gateway mints them for this service, valid for the next minute.
pub fn claims(
    sub: &str,
    kind: PrincipalKind,
    username: Option<&str>,
    roles: &[&str],
    scope: &str,
) -> IdentityClaims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    IdentityClaims {
        iss: ISSUER.to_owned(),
        aud: users::NAME.to_owned(),
        sub: sub.to_owned(),
        kind,
        username: username.map(str::to_owned),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scope: scope.to_owned(),
        iat: now,
        exp: now + 60,
    }
}

/// The JOSE header the gateway puts on identity tokens.
pub fn identity_header() -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(KEY_ID.to_owned());
    header
}

impl TestApp {
    /// A token signed with the gateway's key, as the gateway would send it.
    pub fn sign(&self, claims: &IdentityClaims) -> String {
        self.sign_as(&identity_header(), claims, false)
    }

    /// A token with `header`, signed with the gateway's key or (if `stranger`) an unknown one.
    pub fn sign_as(&self, header: &Header, claims: &IdentityClaims, stranger: bool) -> String {
        let key = if stranger {
            &self.stranger_key
        } else {
            &self.signing_key
        };
        jsonwebtoken::encode(header, claims, key).unwrap()
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

    /// An admin (who need not have an account here: the gateway vouches for the role).
    pub fn admin(&self) -> Caller<'_> {
        let id = Uuid::new_v4().to_string();
        self.with_token(self.sign(&claims(
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
        let claims = claims(
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
        self.with_token(self.sign(&claims("gateway", PrincipalKind::Gateway, None, &[], "")))
    }

    /// A machine client, with whatever roles the test gives it.
    pub fn client(&self, roles: &[&str]) -> Caller<'_> {
        self.with_token(self.sign(&claims(
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
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.address));
        if let Some(token) = &self.token {
            request = request.header(kit::identity::HEADER, token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "a response contains {secret:?}: {text}"
            );
        }
        TestResponse {
            status,
            headers,
            text,
        }
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// A problem body, checked to be one, without the members that differ per request.
    pub fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let mut body = self.json();
        let object = body.as_object_mut().unwrap();
        assert_eq!(object["status"], self.status.as_u16(), "{}", self.text);
        object
            .remove("request_id")
            .expect("a problem names its request");
        object.remove("instance");
        body
    }

    /// The fields a 422 problem lists, in order.
    pub fn invalid_fields(&self) -> Vec<String> {
        assert_eq!(
            self.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            self.text
        );
        let problem = self.problem();
        let errors = problem["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors listed: {problem}"));
        errors
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}
