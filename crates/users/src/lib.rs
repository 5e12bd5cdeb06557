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

/// An account to create outside the API: the quickstart's demo accounts, or a deployment's
/// first admin (`gatehouse accounts create`), which no admin exists yet to create by the API.
pub struct Account<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub full_name: &'a str,
    pub password: String,
    pub role: Role,
    pub scopes: Vec<String>,
}

/// What [`create_account`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New(uuid::Uuid),
    /// An account with that username exists; it was left as it is.
    Exists,
    /// Another account holds this one's `field` (its email): nothing was created.
    Taken(&'static str),
}

/// Creates `account` with every value checked as the API checks it (a bad one is an error
/// naming the field), the password hashed with argon2id.
pub async fn create_account(db: &Database, account: Account<'_>) -> anyhow::Result<Created> {
    let users = UserStore::new(db.clone());
    let name = account.username;
    let invalid =
        |e: kit::FieldError| anyhow::anyhow!("account {name}: {}: {}", e.field, e.message);
    let username = Username::parse(name).map_err(invalid)?;
    if users.username_exists(&username).await? {
        return Ok(Created::Exists);
    }
    let new = NewUser {
        email: Email::parse(account.email).map_err(invalid)?,
        full_name: FullName::parse(account.full_name).map_err(invalid)?,
        password_hash: Password::parse(account.password)
            .map_err(invalid)?
            .hash()
            .await?,
        role: account.role,
        scopes: Scopes::parse(&account.scopes)
            .map_err(|errors| anyhow::anyhow!("account {name}: bad scopes {errors:?}"))?,
        is_active: true,
        username,
    };
    match users.insert(new).await {
        Ok(user) => Ok(Created::New(user.id)),
        // Created meanwhile by another replica starting beside this one.
        Err(Error::Conflict { field: "username" }) => Ok(Created::Exists),
        Err(Error::Conflict { field }) => Ok(Created::Taken(field)),
        Err(other) => Err(anyhow::Error::new(other)).context("creating an account"),
    }
}

/// Creates admin/"a" (role admin, scopes `time:read time:precise`) and test/"test" (role user,
/// scope `time:read`). Idempotent: an account that exists is left as it is.
pub async fn seed_demo_accounts(db: &Database) -> anyhow::Result<()> {
    for (name, password, role, scopes) in DEMO_ACCOUNTS {
        let account = Account {
            username: name,
            email: &format!("{name}@example.com"),
            full_name: &format!("Demo {name}"),
            password: password.to_owned(),
            role,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        match create_account(db, account)
            .await
            .context("creating a demo account")?
        {
            Created::New(id) => {
                tracing::info!(user.id = %id, username = name, "demo account created")
            }
            Created::Exists => {}
            Created::Taken(field) => tracing::warn!(
                username = name,
                field,
                "demo account not created: another user has its {field}"
            ),
        }
    }
    Ok(())
}
