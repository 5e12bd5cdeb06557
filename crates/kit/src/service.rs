//! Wires a service's router into a served application: health endpoints, request ids,
//! problem-shaped 404/405, the identity verifier, and graceful shutdown.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::{Extension, Router};
use tokio::net::TcpListener;

use crate::health::{self, Check};
use crate::identity::IdentityVerifier;
use crate::problem::Problem;
use crate::request_id;
use crate::shutdown::Shutdown;

/// A service's own routes plus everything the kit adds around them.
pub struct Service {
    name: String,
    routes: Router,
    verifier: Arc<IdentityVerifier>,
    checks: Vec<(&'static str, Check)>,
    openapi: Option<utoipa::openapi::OpenApi>,
}

impl Service {
    pub fn new(name: impl Into<String>, routes: Router, verifier: Arc<IdentityVerifier>) -> Self {
        Self {
            name: name.into(),
            routes,
            verifier,
            checks: Vec::new(),
            openapi: None,
        }
    }

    /// `/readyz` fails while `check` does.
    pub fn ready_when(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check));
        self
    }

    /// Serves `api` at `/openapi.json`.
    pub fn with_openapi(mut self, api: utoipa::openapi::OpenApi) -> Self {
        self.openapi = Some(api);
        self
    }

    /// The complete application, for tests that need no socket and for [`Service::serve`].
    pub fn into_router(self) -> Router {
        let openapi = self
            .openapi
            .as_ref()
            .map(crate::openapi::router)
            .unwrap_or_default();
        self.routes
            .merge(health::router(self.checks))
            .merge(openapi)
            .fallback(|| async { Problem::not_found("No such resource.") })
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            .layer(Extension(self.verifier))
            .layer(axum::middleware::from_fn(request_id::middleware))
    }

    /// Serves on `listener` until `shutdown` fires, then finishes the requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let name = self.name.clone();
        let address = listener.local_addr()?;
        tracing::info!(service = %name, %address, "listening");
        axum::serve(listener, self.into_router())
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await?;
        tracing::info!(service = %name, "stopped");
        Ok(())
    }
}
