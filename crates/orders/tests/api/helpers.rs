//! `spawn_app()` and the typed helpers every test uses.

use kit::testing::service::ServiceClient;
pub use kit::testing::TestResponse;
use kit::testing::{spawn_on_database, FakeGateway, SpawnedService, TestDatabase};
use kit::PrincipalKind;
use orders::store::OrderStore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A running orders service with its own database; stopped and cleaned up on drop.
pub struct TestApp {
    pub db: kit::db::Database,
    pub gateway: FakeGateway,
    /// The service as served: its admin listener (`/metrics`), metrics and access log.
    pub service: SpawnedService,
    database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    let database = TestDatabase::create("orders").await;
    let db = orders::connect(&database.url)
        .await
        .expect("connecting and migrating the test database");
    spawn_app_on(database, db).await
}

/// The service on `db`, a pool the test opened on `database` (perhaps through a proxy).
pub async fn spawn_app_on(database: TestDatabase, db: kit::db::Database) -> TestApp {
    let (gateway, service) = spawn_on_database(&database, &db, orders::NAME, orders::service).await;
    TestApp {
        db,
        gateway,
        service,
        database,
    }
}

impl TestApp {
    /// The URL of the test's database, for a second connection to it.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// The store behind the service, for what no endpoint does (marking an order paid).
    pub fn store(&self) -> OrderStore {
        OrderStore::new(self.db.clone())
    }

    fn caller(&self, id: Option<Uuid>, token: Option<String>) -> Caller {
        Caller {
            service: self.service.client(),
            token,
            id,
        }
    }

    pub fn anonymous(&self) -> Caller {
        self.caller(None, None)
    }

    /// A new signed-in user with the role `user` (the gateway vouches; no account is needed).
    pub fn user(&self) -> Caller {
        self.user_with_id(Uuid::now_v7())
    }

    pub fn user_with_id(&self, id: Uuid) -> Caller {
        self.caller(
            Some(id),
            Some(self.gateway.user(&id, &["user"], "time:read")),
        )
    }

    /// A new signed-in admin.
    pub fn admin(&self) -> Caller {
        let id = Uuid::now_v7();
        self.caller(Some(id), Some(self.gateway.user(&id, &["admin"], "")))
    }

    /// A machine client (no user id), whatever roles it has.
    pub fn client(&self, roles: &[&str]) -> Caller {
        let claims = self
            .gateway
            .claims("reporting-job", PrincipalKind::Client, roles, "");
        self.caller(None, Some(self.gateway.sign(&claims)))
    }

    /// The gateway itself, as it calls services on its own behalf.
    pub fn gateway_itself(&self) -> Caller {
        let claims = self
            .gateway
            .claims("gateway", PrincipalKind::Gateway, &[], "");
        self.caller(None, Some(self.gateway.sign(&claims)))
    }

    pub fn with_token(&self, token: String) -> Caller {
        self.caller(None, Some(token))
    }
}

/// A create body with one line per `(sku, quantity, unit_price_cents)`.
pub fn order_of(lines: &[(&str, i64, i64)]) -> Value {
    json!({
        "items": lines
            .iter()
            .map(|(sku, quantity, price)| json!({ "sku": sku, "quantity": quantity, "unit_price_cents": price }))
            .collect::<Vec<_>>()
    })
}

/// A small valid create body.
pub fn two_items() -> Value {
    order_of(&[("BOOK-1", 2, 1250), ("PEN-7", 3, 199)])
}

/// Someone calling the service: with an identity token, or without. Owns what it needs, so it
/// can move into spawned tasks.
#[derive(Clone)]
pub struct Caller {
    service: ServiceClient,
    token: Option<String>,
    /// The user id the token carries, for signed-in users.
    pub id: Option<Uuid>,
}

impl Caller {
    pub fn user_id(&self) -> Uuid {
        self.id.expect("a signed-in user")
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.post_with(path, body, &[]).await
    }

    /// A JSON POST with extra headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        self.send(
            Method::POST,
            path,
            Some(("application/json", body.to_string())),
            headers,
        )
        .await
    }

    /// A POST with `Idempotency-Key: key`.
    pub async fn post_idempotent(&self, body: &Value, key: &str) -> TestResponse {
        self.post_with("/orders", body, &[("idempotency-key", key)])
            .await
    }

    /// `POST /orders/{id}/cancel`, without a body.
    pub async fn cancel(&self, id: &str) -> TestResponse {
        self.send(Method::POST, &format!("/orders/{id}/cancel"), None, &[])
            .await
    }

    /// Creates an order; panics unless it answers 201.
    pub async fn create_order(&self, body: &Value) -> Value {
        let response = self.post("/orders", body).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "creating {body}: {}",
            response.text
        );
        response.json()
    }

    /// Any request; `body` is a content type and the bytes to send as is.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut call = self
            .service
            .call(method, path)
            .identity(self.token.as_deref());
        if let Some((content_type, bytes)) = body {
            call = call.body(content_type, bytes);
        }
        for (name, value) in headers {
            call = call.header(name, value);
        }
        call.send().await
    }
}

/// The id of an order JSON.
pub fn id_of(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}
