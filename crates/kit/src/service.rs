//! Wires a service's router into a served application: health endpoints, request ids,
//! problem-shaped 404/405, the identity verifier, metrics and access log, an admin listener for
//! `/metrics`, and graceful shutdown.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::{Extension, Router};
use tokio::net::TcpListener;

use crate::health::{self, Check};
use crate::identity::IdentityVerifier;
use crate::observe::{self, AccessLog, Metrics};
use crate::problem::Problem;
use crate::request_id;
use crate::shutdown::Shutdown;

/// A service's own routes plus everything the kit adds around them.
pub struct Service {
    /// The `server` label of its metrics and access-log lines, and its name in logs.
    name: &'static str,
    routes: Router,
    verifier: Arc<IdentityVerifier>,
    checks: Vec<(&'static str, Check)>,
    openapi: Option<utoipa::openapi::OpenApi>,
    metrics: Metrics,
    access_log: AccessLog,
    /// Where `/metrics` is served, apart from the public routes; `None` serves it nowhere.
    admin: Option<TcpListener>,
}

impl Service {
    /// A service counting into a registry of its own, with the access log off, until
    /// [`Service::with_observe`] says otherwise.
    pub fn new(name: &'static str, routes: Router, verifier: Arc<IdentityVerifier>) -> Self {
        Self {
            name,
            routes,
            verifier,
            checks: Vec::new(),
            openapi: None,
            metrics: Metrics::new(),
            access_log: AccessLog::off(),
            admin: None,
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

    /// Records every request in `metrics` and `access_log`: the process's own, or in
    /// `gatehouse up` the ones every part shares.
    pub fn with_observe(mut self, metrics: Metrics, access_log: AccessLog) -> Self {
        self.metrics = metrics;
        self.access_log = access_log;
        self
    }

    /// Serves the admin routes (`GET /metrics`) on `listener` beside the public one, until the
    /// same shutdown.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// The registry the service records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The public application, for tests that need no socket and for [`Service::serve`].
    /// `/metrics` is not in it: it is served on the admin listener only.
    pub fn into_router(self) -> Router {
        self.into_parts().0
    }

    /// The public router and the admin listener with its router.
    fn into_parts(self) -> (Router, Option<(TcpListener, Router)>) {
        let openapi = self
            .openapi
            .as_ref()
            .map(crate::openapi::router)
            .unwrap_or_default();
        let admin = self.admin.map(|listener| {
            let router = observe::admin_router(self.metrics.clone())
                .fallback(|| async { Problem::not_found("No such resource.") });
            (listener, router)
        });
        let public = self
            .routes
            .merge(health::router(self.checks))
            .merge(openapi)
            .fallback(|| async { Problem::not_found("No such resource.") })
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            // Inside the request id (it names the line) and per route (it knows the template).
            .layer(observe::layer(self.name, self.metrics, self.access_log))
            .layer(Extension(self.verifier))
            .layer(axum::middleware::from_fn(request_id::middleware));
        (public, admin)
    }

    /// Serves on `listener` (and the admin listener, if any) until `shutdown` fires, then
    /// finishes the requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let name = self.name;
        let address = listener.local_addr()?;
        let (public, admin) = self.into_parts();
        let admin = match admin {
            Some((listener, router)) => {
                let address = listener.local_addr()?;
                tracing::info!(service = %name, %address, "admin listening");
                let shutdown = shutdown.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move { shutdown.wait().await })
                        .await
                }))
            }
            None => None,
        };
        tracing::info!(service = %name, %address, "listening");
        axum::serve(listener, public)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await?;
        if let Some(admin) = admin {
            admin.await.map_err(std::io::Error::other)??;
        }
        tracing::info!(service = %name, "stopped");
        Ok(())
    }
}
