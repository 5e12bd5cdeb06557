//! The clock service: the time, for callers with the scope to read it.
//!
//! It is the kit's proof, and the service docs/NEW_SERVICE.md walks through: one handler, and
//! everything else (the verified caller, problem errors, request ids, health, `/openapi.json`,
//! the listener's limits and drain) comes from [`kit`]. It has the rooms every service has, each
//! small: a service with data adds `store/` and `migrations/` (see users and orders).
//!
//! # Layout
//! - [`config`]: its defaults (ports; no database) under the settings every service shares.
//! - [`domain`]: what a caller may read of the clock ([`domain::Reading`]), decided by its
//!   scopes, and where the time comes from ([`domain::Now`]).
//! - [`http`]: `GET /time` with its OpenAPI operation, and [`http::router`] from the state.
//! - [`error`]: the service's one error type and its status codes.

pub mod config;
pub mod domain;
pub mod error;
pub mod http;

use std::sync::Arc;

use kit::config::{ServiceConfig, ServiceDefaults};
use kit::service::{About, Definition, Service};

/// The service's name: the audience of its identity tokens, and its name in logs.
pub const NAME: &str = "clock";

/// What `/openapi.json` says of the service.
pub const ABOUT: About = About {
    title: "gatehouse clock",
    version: env!("CARGO_PKG_VERSION"),
    description: "The current time in UTC, for callers with the scope `time:read`; \
                  `time:precise` adds the Unix time in milliseconds.",
};

/// The service (routes, `/openapi.json` and the kit's layers) reading the system clock, ready
/// for `.serve(listener, shutdown)` or `.into_router()`.
pub fn service(verifier: Arc<kit::IdentityVerifier>) -> Service {
    service_with(http::AppState::default(), verifier)
}

/// The service on `state` (a test's fixed clock, say).
pub fn service_with(state: http::AppState, verifier: Arc<kit::IdentityVerifier>) -> Service {
    Service::documented(NAME, http::router(state), verifier, &ABOUT)
}

/// The service's OpenAPI 3.1 document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ABOUT.document(http::api().into_openapi())
}

/// The clock service as the binary runs it.
pub struct Clock;

impl Definition for Clock {
    const DEFAULTS: ServiceDefaults = config::DEFAULTS;

    // It keeps no state: nothing to open.
    async fn build(
        _config: &ServiceConfig,
        verifier: Arc<kit::IdentityVerifier>,
    ) -> anyhow::Result<Service> {
        Ok(service(verifier))
    }
}
