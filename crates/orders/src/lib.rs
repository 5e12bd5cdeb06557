//! The orders service: the orders of signed-in users, their items, and totals in integer cents.
//!
//! An order belongs to the user who created it: the owner comes from the gateway's identity
//! token (see [`kit::identity`]), never from a request body. A user sees and cancels only their
//! own orders (another user's order is 404, exactly as one that does not exist); admins see and
//! cancel everyone's. Machine clients have no user id and no orders (403). A create may carry an
//! `Idempotency-Key`: retried, or sent many times at once, it makes one order.
//!
//! `POST /orders`, `GET /orders`, `GET /orders/{id}` and `POST /orders/{id}/cancel`, described
//! at `GET /openapi.json` by the same code that routes them.
//!
//! # Layout
//! - [`config`]: its defaults (ports, `sqlite://data/orders.db`) under the settings every
//!   service shares.
//! - [`domain`]: types that cannot hold a bad value (`Sku`, `Quantity`, `Cents`, `NewOrder`
//!   with its checked totals, `Status`, `IdempotencyKey`), and the order as responses show it.
//! - [`store`]: the SQL, portable across SQLite and PostgreSQL; transactions, idempotency keys,
//!   retries while the database is busy.
//! - [`http`]: the routes with their OpenAPI operations, built in one place ([`http::api`]), the
//!   router from the state ([`http::router`]), and who may call them.
//! - [`error`]: the service's one error type and its status codes.
//! - `migrations/{sqlite,postgres}`: the schema, embedded and run at [`connect`].

pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod store;

use std::sync::Arc;

use kit::config::{ServiceConfig, ServiceDefaults};
use kit::db::{Database, Migrations};
use kit::service::{About, Definition, Service};
use sqlx::migrate::Migrator;

/// The service's name: the audience of its identity tokens, and its name in logs.
pub const NAME: &str = "orders";

/// What `/openapi.json` says of the service.
pub const ABOUT: About = About {
    title: "gatehouse orders",
    version: env!("CARGO_PKG_VERSION"),
    description: "The orders of signed-in users: create (safe to retry with an Idempotency-Key), \
                  list newest first, read, cancel. Reached through the gateway, which vouches \
                  for the caller with an identity token; another user's order is 404.",
};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The schema, for SQLite and for PostgreSQL.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// Connects (creating a SQLite file if missing) and runs this crate's migrations.
pub async fn connect(database_url: &str) -> anyhow::Result<Database> {
    Database::connect(database_url, MIGRATIONS).await
}

/// The service (routes, their OpenAPI document and the kit's layers), ready for
/// `.serve(listener, shutdown)` or `.into_router()`.
pub fn service(db: Database, verifier: Arc<kit::IdentityVerifier>) -> Service {
    let readiness = db.readiness_check();
    Service::documented(
        NAME,
        http::router(http::AppState::new(db)),
        verifier,
        &ABOUT,
    )
    .ready_when("database", readiness)
}

/// The service's OpenAPI 3.1 document, as `GET /openapi.json` serves it (for a gateway that
/// merges the services' documents, and for tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ABOUT.document(http::api().into_openapi())
}

/// The orders service as the binary runs it.
pub struct Orders;

impl Definition for Orders {
    const DEFAULTS: ServiceDefaults = config::DEFAULTS;

    async fn build(
        config: &ServiceConfig,
        verifier: Arc<kit::IdentityVerifier>,
    ) -> anyhow::Result<Service> {
        Ok(service(config.open_database(MIGRATIONS).await?, verifier))
    }
}
