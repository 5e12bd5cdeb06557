//! The users service: accounts, their argon2id password hashes, and the credential check the
//! gateway calls at sign-in.
//!
//! Admins manage accounts (`/users`, `/users/{id}`); anyone signed in reads and changes their
//! own (`/users/me`); the gateway alone checks a username and password
//! (`POST /internal/credentials`). Every request must carry the gateway's identity token (see
//! [`kit::identity`]). A password hash never leaves the service: no response type has a field
//! for one.
//!
//! # Layout
//! - [`config`]: its defaults (ports, `sqlite://data/users.db`) under the settings every
//!   service shares.
//! - [`domain`]: types that cannot hold a bad value (`Username`, `Email`, `Password`, `Role`,
//!   `Scopes`, …), and password hashing, off the async workers.
//! - [`store`]: the SQL, portable across SQLite and PostgreSQL.
//! - [`http`]: routers per feature (`users` for admins, `me`, `credentials`), merged in one
//!   ([`http::router`] from the state), each handler annotated for the `/openapi.json` the
//!   service serves.
//! - [`error`]: the service's one error type and its status codes.
//! - `migrations/{sqlite,postgres}`: the schema, embedded and run at [`connect`].

pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use kit::config::{ServiceConfig, ServiceDefaults};
use kit::db::{Database, Migrations};
use kit::service::{About, Definition, Service};
use sqlx::migrate::Migrator;

use crate::domain::{Email, FullName, NewUser, Password, Role, Scopes, Username};
use crate::error::Error;
use crate::store::UserStore;

/// The service's name: the audience of its identity tokens, and its name in logs.
pub const NAME: &str = "users";

/// What `/openapi.json` says of the service.
pub const ABOUT: About = About {
    title: "gatehouse users",
    version: env!("CARGO_PKG_VERSION"),
    description: "Accounts: admin CRUD at `/users`, each signed-in user's own account at \
                  `/users/me`, and the credential check the gateway calls at sign-in. Reached \
                  through the gateway only; password hashes never leave the service.",
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

/// The service (routes and the kit's layers), ready for `.serve(listener, shutdown)` or
/// `.into_router()`.
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

/// The service's OpenAPI 3.1 document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ABOUT.document(http::api().into_openapi())
}

/// The users service as the binary runs it.
pub struct Users;

impl Definition for Users {
    const DEFAULTS: ServiceDefaults = config::DEFAULTS;

    async fn build(
        config: &ServiceConfig,
        verifier: Arc<kit::IdentityVerifier>,
    ) -> anyhow::Result<Service> {
        Ok(service(config.open_database(MIGRATIONS).await?, verifier))
    }
}

/// A demo account of the quickstart: username, password, role, scopes.
const DEMO_ACCOUNTS: [(&str, &str, Role, &[&str]); 2] = [
    ("admin", "a", Role::Admin, &["time:read", "time:precise"]),
    ("test", "test", Role::User, &["time:read"]),
];

/// Creates admin/"a" (role admin, scopes `time:read time:precise`) and test/"test" (role user,
/// scope `time:read`). Idempotent: an account that exists is left as it is.
pub async fn seed_demo_accounts(db: &Database) -> anyhow::Result<()> {
    let users = UserStore::new(db.clone());
    for (name, password, role, scopes) in DEMO_ACCOUNTS {
        let invalid =
            |e: kit::FieldError| anyhow::anyhow!("demo account {name}: {}: {}", e.field, e.message);
        let username = Username::parse(name).map_err(invalid)?;
        if users.username_exists(&username).await? {
            continue;
        }
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let new = NewUser {
            email: Email::parse(&format!("{name}@example.com")).map_err(invalid)?,
            full_name: FullName::parse(&format!("Demo {name}")).map_err(invalid)?,
            password_hash: Password::parse(password.to_owned())
                .map_err(invalid)?
                .hash()
                .await?,
            role,
            scopes: Scopes::parse(&scopes)
                .map_err(|errors| anyhow::anyhow!("demo account {name}: bad scopes {errors:?}"))?,
            is_active: true,
            username,
        };
        match users.insert(new).await {
            Ok(user) => tracing::info!(user.id = %user.id, username = name, "demo account created"),
            // Created meanwhile by another replica starting beside this one.
            Err(Error::Conflict { field: "username" }) => {}
            Err(Error::Conflict { field }) => {
                tracing::warn!(
                    username = name,
                    field,
                    "demo account not created: another user has its {field}"
                );
            }
            Err(other) => return Err(anyhow::Error::new(other)).context("creating a demo account"),
        }
    }
    Ok(())
}
