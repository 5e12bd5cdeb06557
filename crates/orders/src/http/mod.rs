//! The HTTP surface: the routes with their OpenAPI description, built in one place
//! ([`api`]) so the served routes and the published document cannot drift apart, [`router`]
//! giving them the state, and the extractors that say who may call what. Those run before the path and body are read, so a
//! caller who may not use an endpoint learns nothing from it but 401 or 403.

mod orders;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kit::db::Database;
use kit::{Identity, PrincipalKind};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::error::Error;
use crate::store::{OrderStore, Scope};

/// What every handler shares; cloned per request, cheaply.
#[derive(Clone, Debug)]
pub struct AppState {
    pub orders: OrderStore,
}

impl AppState {
    /// The store of the database `db`.
    pub fn new(db: Database) -> Self {
        Self {
            orders: OrderStore::new(db),
        }
    }
}

/// Every route of the service with its OpenAPI operation, before the state is given. The
/// service serves exactly the routes built here (see [`crate::service`]) and publishes the
/// document built with them.
pub fn api() -> OpenApiRouter<AppState> {
    // `default()`, not `new()`: `new()` fills the document's info from utoipa-axum's own package.
    OpenApiRouter::default().merge(orders::routes())
}

/// The service's routes on `state`; the kit adds health, request ids, the identity verifier
/// and `/openapi.json`.
pub fn router(state: AppState) -> OpenApiRouter {
    api().with_state(state)
}

/// A signed-in person: their user id, and whether they are an admin. Orders belong to people;
/// a machine client or the gateway itself has no user id, and is refused with 403.
#[derive(Debug, Clone, Copy)]
pub struct Customer {
    pub id: Uuid,
    pub is_admin: bool,
}

impl Customer {
    /// The orders this caller may see and change: an admin's are everyone's.
    pub fn scope(&self) -> Scope {
        if self.is_admin {
            Scope::All
        } else {
            Scope::OwnedBy(self.id)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Identity::from_request_parts(parts, state).await?;
        match identity.kind {
            PrincipalKind::User => Ok(Self {
                id: identity.user_id()?,
                is_admin: identity.is_admin(),
            }),
            PrincipalKind::Client => Err(Error::Forbidden(
                "Orders belong to signed-in users, and a machine client has no user id: \
                 it cannot create, list or read orders."
                    .to_owned(),
            )),
            PrincipalKind::Gateway => Err(Error::Forbidden(
                "Orders belong to signed-in users; the gateway itself has none.".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path) of every operation the document describes, sorted.
    fn operations() -> Vec<(String, String)> {
        let (_, document) = api().split_for_parts();
        let json = serde_json::to_value(&document).unwrap();
        let mut operations: Vec<(String, String)> = json["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();
        operations.sort();
        operations
    }

    #[test]
    fn the_document_describes_each_route_built_with_it() {
        // The integration tests request each of these over HTTP; this pins the list to the
        // router, so a route added without its operation (or the reverse) fails here.
        assert_eq!(
            operations(),
            [
                ("GET", "/orders"),
                ("GET", "/orders/{id}"),
                ("POST", "/orders"),
                ("POST", "/orders/{id}/cancel"),
            ]
            .map(|(method, path)| (method.to_owned(), path.to_owned()))
        );
    }
}
