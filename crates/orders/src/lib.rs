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
//! - [`domain`]: types that cannot hold a bad value (`Sku`, `Quantity`, `Cents`, `NewOrder`
//!   with its checked totals, `Status`, `IdempotencyKey`), and the order as responses show it.
//! - [`store`]: the SQL, portable across SQLite and PostgreSQL; transactions, idempotency keys,
//!   retries while the database is busy.
//! - `http`: the routes with their OpenAPI operations, built in one place, and who may call them.
//! - [`error`]: the service's one error type and its status codes.
//! - `migrations/{sqlite,postgres}`: the schema, embedded and run at [`connect`].

pub mod domain;
pub mod error;
mod http;
pub mod store;

use std::sync::Arc;

use kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;

use crate::store::OrderStore;

/// The service's name: the audience of its identity tokens, and its name in logs.
pub const NAME: &str = "orders";

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// Connects (creating a SQLite file if missing) and runs this crate's migrations.
pub async fn connect(database_url: &str) -> anyhow::Result<Database> {
    connect_with(database_url, kit::db::PoolOptions::default()).await
}

/// [`connect`] with the pool settings of the kit's configuration.
pub async fn connect_with(
    database_url: &str,
    options: kit::db::PoolOptions,
) -> anyhow::Result<Database> {
    Database::connect_with(
        database_url,
        Migrations {
            sqlite: &SQLITE,
            postgres: &POSTGRES,
        },
        options,
    )
    .await
}

/// The service (routes, their OpenAPI document and the kit's layers), ready for
/// `.serve(listener, shutdown)` or `.into_router()`.
pub fn service(db: Database, verifier: Arc<kit::IdentityVerifier>) -> kit::service::Service {
    let readiness = db.readiness_check();
    let state = http::AppState {
        orders: OrderStore::new(db),
    };
    let (routes, api) = http::api().split_for_parts();
    kit::service::Service::new(NAME, routes.with_state(state), verifier)
        .ready_when("database", readiness)
        .with_openapi(document(api))
}

/// The service's OpenAPI 3.1 document, as `GET /openapi.json` serves it (for a gateway that
/// merges the services' documents, and for tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(http::api().into_openapi())
}

fn document(api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    kit::openapi::finish(
        api,
        "gatehouse orders",
        env!("CARGO_PKG_VERSION"),
        "The orders of signed-in users: create (safe to retry with an Idempotency-Key), list \
         newest first, read, cancel. Reached through the gateway, which vouches for the caller \
         with an identity token; another user's order is 404.",
    )
}
