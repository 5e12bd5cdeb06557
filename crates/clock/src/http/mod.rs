//! The HTTP surface: the routes with their OpenAPI operations, built in one place ([`api`]) so
//! the served routes and the published document cannot drift apart, and [`router`] giving them
//! the state. The kit adds health, request ids, the identity verifier and `/openapi.json`.

mod time;

use utoipa_axum::router::OpenApiRouter;

use crate::domain::Now;

/// What every handler shares; cloned per request, cheaply.
#[derive(Clone, Debug, Default)]
pub struct AppState {
    /// The clock read by `GET /time`: the system's, unless a test fixes it.
    pub now: Now,
}

/// Every route of the service with its OpenAPI operation, before the state is given.
pub fn api() -> OpenApiRouter<AppState> {
    // `default()`, not `new()`: `new()` fills the document's info from utoipa-axum's own package.
    OpenApiRouter::default().merge(time::routes())
}

/// The service's routes on `state`.
pub fn router(state: AppState) -> OpenApiRouter {
    api().with_state(state)
}
