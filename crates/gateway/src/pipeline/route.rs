//! Route: which answers the request, one of the gateway's own endpoints (sign-in, tokens, keys,
//! health) or a configured route. The own endpoints are a handful of exact paths, checked first,
//! so a configured route can never shadow the login.

use std::sync::Arc;

use axum::Router;
use http::request::Parts;

use crate::error::GatewayError;
use crate::router::{Lookup, Route};
use crate::routing::Routing;

/// The gateway's own endpoints: their paths, and the axum router that answers them.
#[derive(Clone)]
pub struct OwnEndpoints {
    paths: Arc<[String]>,
    /// Path prefixes the gateway answers everything under (the documentation pages' assets).
    prefixes: Arc<[&'static str]>,
    router: Router,
}

impl OwnEndpoints {
    pub fn new(paths: Vec<String>, router: Router) -> Self {
        Self {
            paths: paths.into(),
            prefixes: Arc::new([]),
            router,
        }
    }

    /// Also answers every path under each of `prefixes`.
    pub fn with_prefixes(mut self, prefixes: Vec<&'static str>) -> Self {
        self.prefixes = prefixes.into();
        self
    }

    fn answers(&self, path: &str) -> bool {
        self.paths.iter().any(|own| own == path)
            || self.prefixes.iter().any(|prefix| path.starts_with(prefix))
    }

    /// What metrics and the access log name an own endpoint by: its path, or for a path under
    /// a prefix the prefix's template, so requests for made-up asset names add no series.
    pub fn label(&self, path: &str) -> String {
        match self
            .prefixes
            .iter()
            .find(|prefix| path.starts_with(*prefix))
        {
            Some(prefix) => format!("{prefix}{{*asset}}"),
            None => path.to_owned(),
        }
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }
}

/// Where a request goes.
pub enum Destination {
    /// One of the gateway's own endpoints.
    Own,
    /// A configured route, with the path on its service (the `to` template filled in, the query
    /// appended).
    Service { route: Arc<Route>, target: String },
}

/// Finds what answers `parts`: 404 when nothing does, 405 (with `Allow`) when the path exists
/// for other methods.
pub fn find(
    own: &OwnEndpoints,
    routing: &Routing,
    parts: &Parts,
) -> Result<Destination, GatewayError> {
    let path = parts.uri.path();
    if own.answers(path) {
        return Ok(Destination::Own);
    }
    let (route, mut target) = match routing.table.lookup(&parts.method, path) {
        Lookup::Found { route, params } => (Arc::clone(route), route.to.render(&params)),
        Lookup::MethodNotAllowed { allow } => {
            return Err(GatewayError::MethodNotAllowed {
                allow: allow.clone(),
            })
        }
        Lookup::NotFound => return Err(GatewayError::NoRoute),
    };
    if let Some(query) = parts.uri.query() {
        // A `to` with its own query (`/items?v=2`) takes the client's after it, not a second `?`.
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(query);
    }
    Ok(Destination::Service { route, target })
}
