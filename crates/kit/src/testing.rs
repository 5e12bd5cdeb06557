//! Test support shared by the services' test suites (feature `testing`): a database per test,
//! SQLite by default or PostgreSQL when `GATEHOUSE_TEST_POSTGRES` is set, a stand-in for the
//! gateway that mints identity tokens, and the service's metrics and access log read back.
//!
//! # Layout
//! - [`service`]: [`spawn_service`], the one way every suite starts a [`crate::service::Service`].
//! - [`conformance`]: the health and OpenAPI contract every service keeps, checked once.
//! - [`observe`]: `/metrics` parsed as Prometheus would, the access log read back.
//! - [`wait`]: waiting for a condition with a deadline instead of sleeping.
//! - [`redis`]: a Redis of the test's own on a unix socket, to kill and start again.
//! - here: [`TestDatabase`], [`FakeGateway`], [`TestResponse`], [`openapi`] readers, [`TcpCut`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use sqlx::Connection;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::identity::{IdentityClaims, VerifyingKey, TOKEN_TYPE};
use crate::{IdentityVerifier, PrincipalKind};

pub mod conformance;
pub mod observe;
pub mod redis;
pub mod service;
pub mod wait;

pub use redis::TestRedis;
pub use service::{spawn_on_database, spawn_service, SpawnedService};
pub use wait::{wait_for, wait_until};

/// When set (say `postgres://postgres@127.0.0.1:5432/test`), tests run on PostgreSQL.
pub const POSTGRES_ENV: &str = "GATEHOUSE_TEST_POSTGRES";

/// Where one test's data lives: a temporary SQLite file, or a fresh PostgreSQL schema that is
/// dropped with it.
pub struct TestDatabase {
    pub url: String,
    place: Place,
}

enum Place {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { server_url: String, schema: String },
}

impl TestDatabase {
    /// A new, empty database named after `name` (the file name on SQLite).
    pub async fn create(name: &str) -> Self {
        let Some(server_url) = std::env::var(POSTGRES_ENV)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            let dir = tempfile::tempdir().expect("a temporary folder for the test database");
            // In a folder of its own that the kit creates private: the temporary folder is not.
            let url = format!("sqlite://{}/data/{name}.db", dir.path().display());
            return Self {
                url,
                place: Place::Sqlite { _dir: dir },
            };
        };
        // Asked for PostgreSQL: never fall back to SQLite, or a broken set-up would pass unseen.
        let mut connection = sqlx::PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "{POSTGRES_ENV} is set but PostgreSQL at {} is unreachable: {error}",
                    crate::db::redact(&server_url)
                )
            });
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut connection)
            .await
            .expect("creating the test's PostgreSQL schema");
        let separator = if server_url.contains('?') { '&' } else { '?' };
        let url = format!("{server_url}{separator}options=-c%20search_path%3D{schema}");
        Self {
            url,
            place: Place::Postgres { server_url, schema },
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.place, Place::Postgres { .. })
    }

    /// Panics unless `db` runs on the backend this database was asked for: a suite asked for
    /// PostgreSQL must never pass on SQLite unseen.
    pub fn assert_backend_of(&self, db: &crate::db::Database) {
        let expected = if self.is_postgres() {
            crate::db::Backend::Postgres
        } else {
            crate::db::Backend::Sqlite
        };
        assert_eq!(
            db.backend(),
            expected,
            "the test runs on the backend it asked for"
        );
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Place::Postgres { server_url, schema } = &self.place else {
            return;
        };
        let (server_url, schema) = (server_url.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from a
        // thread with its own. Best effort: a leftover schema is only clutter.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test schema");
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

/// Stands in for the gateway: a signing key, the verifier a service gets, and identity tokens.
pub struct FakeGateway {
    service: String,
    key: EncodingKey,
    stranger: EncodingKey,
    verifying: VerifyingKey,
}

pub const ISSUER: &str = "gatehouse";
const KEY_ID: &str = "test-key";

impl FakeGateway {
    pub fn for_service(service: &str) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let stranger = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        Self {
            service: service.to_owned(),
            key: EncodingKey::from_ed_der(
                signing
                    .to_pkcs8_der()
                    .expect("an Ed25519 key encodes as PKCS#8")
                    .as_bytes(),
            ),
            stranger: EncodingKey::from_ed_der(
                stranger
                    .to_pkcs8_der()
                    .expect("an Ed25519 key encodes as PKCS#8")
                    .as_bytes(),
            ),
            verifying: VerifyingKey {
                key: DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
                algorithm: Algorithm::EdDSA,
            },
        }
    }

    pub fn verifier(&self) -> IdentityVerifier {
        IdentityVerifier::with_keys(
            &self.service,
            ISSUER,
            [(KEY_ID.to_owned(), self.verifying.clone())],
        )
    }

    /// Claims as the gateway mints them for this service, valid for the next minute.
    pub fn claims(
        &self,
        sub: &str,
        kind: PrincipalKind,
        roles: &[&str],
        scope: &str,
    ) -> IdentityClaims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        IdentityClaims {
            iss: ISSUER.to_owned(),
            aud: self.service.clone(),
            sub: sub.to_owned(),
            kind,
            username: Some(format!("user-{sub}")),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            scope: scope.to_owned(),
            iat: now,
            exp: now + 60,
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A signed identity token for `claims`.
    pub fn sign(&self, claims: &IdentityClaims) -> String {
        self.sign_with_header(&Self::identity_header(), claims)
    }

    /// `claims` under another JOSE header (a wrong `typ`, an unknown or missing `kid`), signed
    /// with the trusted key, so a refusal is for the header and not for the signature.
    pub fn sign_with_header(&self, header: &Header, claims: &IdentityClaims) -> String {
        jsonwebtoken::encode(header, claims, &self.key).expect("signing with the test key")
    }

    /// Any JSON as the claims, signed with the trusted key under the gateway's header: for
    /// tokens the gateway would never mint (a claim missing, a forged lifetime).
    pub fn sign_value(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Self::identity_header(), claims, &self.key)
            .expect("signing with the test key")
    }

    /// The same token signed by a key the service does not trust.
    pub fn sign_as_stranger(&self, claims: &IdentityClaims) -> String {
        jsonwebtoken::encode(&Self::identity_header(), claims, &self.stranger)
            .expect("signing with the stranger's key")
    }

    /// The identity token of a signed-in user.
    pub fn user(&self, user_id: &uuid::Uuid, roles: &[&str], scope: &str) -> String {
        self.sign(&self.claims(&user_id.to_string(), PrincipalKind::User, roles, scope))
    }

    /// The JOSE header the gateway puts on identity tokens, for tests that alter it.
    pub fn identity_header() -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(KEY_ID.to_owned());
        header
    }
}

/// A response read whole, with the checks every service's tests make of it.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl TestResponse {
    /// The `detail` of a problem body.
    pub fn detail(&self) -> String {
        self.problem()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("a text header"))
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
        let object = body
            .as_object_mut()
            .expect("a problem body is a JSON object");
        assert_eq!(object["status"], self.status.as_u16(), "{}", self.text);
        object
            .remove("request_id")
            .expect("a problem names its request");
        object
            .remove("trace_id")
            .expect("a problem names its trace");
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
            .map(|e| {
                e["field"]
                    .as_str()
                    .expect("each listed error names its field")
                    .to_owned()
            })
            .collect()
    }
}

/// Reading a service's OpenAPI document in tests: its `info`, and the limits it states.
pub mod openapi {
    use serde_json::Value;

    /// `info` names the project only: the service's title, its crate's version, the project's
    /// licence with its SPDX identifier, and no contact, author or e-mail of anyone else.
    pub fn assert_info_is_ours(document: &Value, title: &str, version: &str) {
        let info = &document["info"];
        assert_eq!(info["title"], title, "{info}");
        assert_eq!(info["version"], version, "{info}");
        assert_eq!(
            info["license"],
            serde_json::json!({ "name": crate::openapi::LICENSE, "identifier": crate::openapi::LICENSE }),
            "{info}"
        );
        assert_eq!(crate::openapi::LICENSE, "Apache-2.0");
        for field in ["contact", "termsOfService"] {
            assert!(info.get(field).is_none(), "info.{field}: {info}");
        }
        assert!(!info.to_string().contains('@'), "no e-mail in {info}");
        assert!(info["description"].as_str().is_some_and(|d| !d.is_empty()));
    }

    /// `schema` with `$ref`s to components resolved, and a nullable `oneOf`/`anyOf` read as its
    /// non-null member.
    pub fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
        if let Some(reference) = schema["$ref"].as_str() {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            return resolve(
                document,
                document
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference}")),
            );
        }
        for combinator in ["oneOf", "anyOf", "allOf"] {
            if let Some(members) = schema[combinator].as_array() {
                let mut real = members.iter().filter(|m| m["type"] != "null");
                if let (Some(only), None) = (real.next(), real.next()) {
                    return resolve(document, only);
                }
            }
        }
        schema
    }

    /// The schema of `property` of the component schema `component`, resolved.
    pub fn property<'a>(document: &'a Value, component: &str, property: &str) -> &'a Value {
        let schema = &document["components"]["schemas"][component];
        assert!(schema.is_object(), "no schema {component}");
        let property_schema = &schema["properties"][property];
        assert!(
            property_schema.is_object(),
            "{component} has no property {property}: {schema}"
        );
        resolve(document, property_schema)
    }

    /// Whether `schema` may be a string.
    pub fn is_string(schema: &Value) -> bool {
        match &schema["type"] {
            Value::String(kind) => kind == "string",
            Value::Array(kinds) => kinds.iter().any(|k| k == "string"),
            _ => false,
        }
    }

    /// Where a client may send a string the document does not bound: every string in a request
    /// body or a parameter without `maxLength`, unless its `format` or `enum` bounds it. Each
    /// as `place` (say `POST /users body.username` or `GET /users query.limit`).
    pub fn unbounded_request_strings(document: &Value) -> Vec<String> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let name = format!("{} {path}", method.to_uppercase());
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let place = format!(
                        "{name} {}.{}",
                        parameter["in"].as_str().unwrap_or("?"),
                        parameter["name"].as_str().unwrap_or("?")
                    );
                    walk(document, &parameter["schema"], &place, &mut found, 0);
                }
                for (_, media) in operation["requestBody"]["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    walk(
                        document,
                        &media["schema"],
                        &format!("{name} body"),
                        &mut found,
                        0,
                    );
                }
            }
        }
        found
    }

    fn walk(document: &Value, schema: &Value, place: &str, found: &mut Vec<String>, depth: u8) {
        assert!(depth < 16, "{place}: schemas nest too deep");
        let schema = resolve(document, schema);
        if is_string(schema)
            && schema.get("maxLength").is_none()
            && schema.get("format").is_none()
            && schema.get("enum").is_none()
        {
            found.push(place.to_owned());
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            walk(
                document,
                property,
                &format!("{place}.{name}"),
                found,
                depth + 1,
            );
        }
        if schema["items"].is_object() {
            walk(
                document,
                &schema["items"],
                &format!("{place}[]"),
                found,
                depth + 1,
            );
        }
    }
}

/// A TCP forwarder in front of a server (a database) that a test can cut and restore, as a
/// network partition would: [`TcpCut::cut`] closes every forwarded connection and holds new
/// ones open without an answer (so clients meet their timeouts, not a quick refusal);
/// [`TcpCut::restore`] forwards again.
pub struct TcpCut {
    /// `host:port` to connect to instead of the server.
    pub address: std::net::SocketAddr,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_replace(true);
    }
}

impl TcpCut {
    /// Forwards a new local port to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the forwarder");
        let address = listener.local_addr().expect("the forwarder's own address");
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let target = target.to_owned();
        let sender = std::sync::Arc::clone(&cut);
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                if *sender.borrow() {
                    // Partitioned: the connection is neither answered nor refused.
                    held.push(client);
                    continue;
                }
                held.clear();
                let mut watch = sender.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            address,
            cut,
            accept,
        }
    }

    /// A forwarder in front of the server of `url` (`postgres://user@host:port/db…`), and `url`
    /// pointed at it.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let rest = url
            .split_once("://")
            .expect("a database URL with a scheme")
            .1;
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let host_port = authority
            .rsplit('@')
            .next()
            .expect("rsplit yields at least one part");
        let target = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        let cut = Self::start(&target).await;
        let routed = cut.route(url);
        (cut, routed)
    }

    /// `url` (a `postgres://` URL) pointed at this forwarder instead of its host and port.
    pub fn route(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a database URL with a scheme");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let credentials = authority.rfind('@').map_or("", |at| &authority[..=at]);
        format!("{scheme}://{credentials}{}{path}", self.address)
    }

    /// Breaks every forwarded connection and leaves new ones unanswered.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Another process's write lock on a SQLite database, as a stuck batch job or an operator's
/// command gone wrong holds it: taken with `BEGIN EXCLUSIVE` on a connection of its own, held
/// until [`SqliteWriteLock::release`] (or the drop, which closes the connection).
pub struct SqliteWriteLock {
    connection: sqlx::SqliteConnection,
}

impl SqliteWriteLock {
    /// Takes the lock on the database at `path` (a file path, not a URL).
    pub async fn take(path: &str) -> Self {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .expect("a second connection to the test's SQLite database");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut connection)
            .await
            .expect("taking the write lock");
        Self { connection }
    }

    /// Gives the lock up, as the other process finishing would.
    pub async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.connection)
            .await
            .expect("giving the write lock up");
    }
}
