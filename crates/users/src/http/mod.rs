//! The HTTP surface: one router per feature, merged here over one shared [`AppState`], and the
//! extractors that say who may call what. Those run before the path and body are read, so a
//! caller who may not use an endpoint learns nothing from it but 401 or 403.
//!
//! Every handler carries a `#[utoipa::path]`, and the routers are `OpenApiRouter`s: a route and
//! its entry in `/openapi.json` are registered by the same line, so neither exists without the
//! other.

mod credentials;
mod guesses;
mod me;
mod users;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kit::db::Database;
use kit::{Identity, PrincipalKind};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::error::Error;
use crate::store::{AttemptStore, UserStore};

/// What every handler shares; cloned per request, cheaply.
#[derive(Clone, Debug)]
pub struct AppState {
    pub users: UserStore,
    /// Password guesses counted per account, and per caller and username.
    pub attempts: AttemptStore,
}

impl AppState {
    /// The stores of the database `db`.
    pub fn new(db: Database) -> Self {
        Self {
            attempts: AttemptStore::new(db.clone()),
            users: UserStore::new(db),
        }
    }
}

/// Every route of the service with its OpenAPI operation, before the state is given: the
/// document ([`crate::openapi`]) is built from exactly these.
pub fn api() -> OpenApiRouter<AppState> {
    // `default()`, not `new()`: `new()` fills the document's info from utoipa-axum's own package.
    let mut api = OpenApiRouter::default()
        .merge(users::router())
        .merge(me::router())
        .merge(credentials::router());
    me::state_that_secrets_need_the_current_password(api.get_openapi_mut());
    api
}

/// The service's own routes on `state`; the kit adds health, request ids, the identity
/// verifier and `/openapi.json`.
pub fn router(state: AppState) -> OpenApiRouter {
    api().with_state(state)
}

/// A signed-in user with the role `admin`, by their id when the caller is a user (a machine
/// client granted the role has none).
pub struct Admin(pub Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Identity::from_request_parts(parts, state).await?;
        identity.require_role("admin")?;
        Ok(Self(identity.user_id().ok()))
    }
}

/// Any signed-in user, by their id.
pub struct SignedInUser(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for SignedInUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Identity::from_request_parts(parts, state).await?;
        Ok(Self(identity.user_id()?))
    }
}

/// The gateway itself, as opposed to a user or client it forwards for; by its identity's
/// subject, which limits are counted under.
pub struct Gateway {
    pub subject: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Gateway {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Identity::from_request_parts(parts, state).await?;
        identity.require_kind(PrincipalKind::Gateway)?;
        Ok(Self {
            subject: identity.subject,
        })
    }
}
