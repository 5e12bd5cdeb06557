//! The gateway assembled: its state opened, its own endpoints and the request pipeline put
//! together, served on the public listener (and the admin one) until shutdown.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::shutdown::Shutdown;
use kit::Problem;
use serde_json::json;
use tokio::net::TcpListener;

use axum::extract::State;
use axum::http::header;
use kit::observe::{AccessLog, Metrics, EXPOSITION_CONTENT_TYPE};

use crate::app::{App, AppState};
use crate::clock::Clock;
use crate::config::{GatewayConfig, Vars};
use crate::entrance::{self, Entrance};
use crate::issuer::{jwks, login, oauth, own_body, session, upkeep};
use crate::openapi;
use crate::pipeline::observe::{Observe, SERVER};
use crate::pipeline::route::OwnEndpoints;
use crate::pipeline::{accept, Pipeline};
use crate::proxy::health;
use crate::readiness;
use crate::reload::Reloader;
use crate::status;
use kit::trace::Tracer;

/// How long the admin listener's requests may take to finish at shutdown: they are quick.
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Gateway {
    app: App,
    reloader: Option<Reloader>,
    /// TLS on the public listener, when configured.
    entrance: Option<Entrance>,
}

impl Gateway {
    /// Opens the store (creating the first signing key if needed) and builds the route table;
    /// metrics in a registry of its own, the access log where the configuration says.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        Self::build_at(config, Clock::System).await
    }

    /// As [`Gateway::build`], reading the time from `clock` (a test's
    /// [`crate::clock::ManualClock`], to cross a back-off or a lifetime without waiting it out).
    pub async fn build_at(config: GatewayConfig, clock: Clock) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let access_log = AccessLog::open(&config.access_log, &metrics)
            .map_err(|error| anyhow::anyhow!("access_log: {error}"))?;
        Self::build_observed(config, metrics, access_log, clock).await
    }

    /// As [`Gateway::build`], recording into `metrics` and `access_log` (shared with the
    /// services when they run in the same process), reading the time from `clock`.
    pub async fn build_observed(
        config: GatewayConfig,
        metrics: Metrics,
        access_log: AccessLog,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let tracer = match &config.telemetry {
            Some(telemetry) => Tracer::start(telemetry, SERVER, &metrics)?,
            None => Tracer::off(),
        };
        let observe = Observe::new(metrics, access_log).with_tracer(tracer);
        let entrance = config
            .tls
            .as_ref()
            .map(Entrance::open)
            .transpose()
            .map_err(|error| anyhow::anyhow!("tls: {error}"))?;
        Ok(Self {
            app: Arc::new(AppState::open(config, observe, clock).await?),
            reloader: None,
            entrance,
        })
    }

    /// Reloads the configuration from `path` while serving: when its contents change (checked
    /// every `watch`) and on SIGHUP. `vars` are the `${VAR}` values the gateway started with.
    pub fn watch_file(mut self, path: impl Into<PathBuf>, vars: Vars) -> Self {
        self.reloader = Some(Reloader::new(Arc::clone(&self.app), path.into(), vars));
        self
    }

    /// Serves the public listener over TLS with `settings`, whatever the configuration says
    /// (`gatehouse up --tls`); the certificate files are watched as configured ones are.
    pub fn with_tls(mut self, settings: &crate::config::TlsSettings) -> anyhow::Result<Self> {
        let entrance = Entrance::open(settings).map_err(|error| anyhow::anyhow!("tls: {error}"))?;
        self.entrance = Some(entrance);
        Ok(self)
    }

    /// The reloader of the watched file, to reload on demand.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.clone()
    }

    /// The certificate files of the TLS entrance, to look at them on demand (a test's looks,
    /// between which it moves the clock); `None` without TLS.
    pub fn certificate_files(&self) -> Option<entrance::CertificateFiles> {
        self.entrance
            .as_ref()
            .map(|entrance| entrance.files(Arc::clone(&self.app)))
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// The request path every public request takes.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(Arc::clone(&self.app), self.own_endpoints())
    }

    /// The endpoints the gateway answers itself on the public listener: sign-in and tokens,
    /// the public keys, liveness and (bare) readiness. Their paths are fixed at start (`auth`
    /// needs a restart to change).
    fn own_endpoints(&self) -> OwnEndpoints {
        let app = &self.app;
        let auth = app.config().auth.clone();
        // The gateway's own endpoints read their bodies within the live limits (issuer::own_body).
        let json_body = || axum::middleware::from_fn_with_state(Arc::clone(app), own_body::json);
        let form_body = || axum::middleware::from_fn_with_state(Arc::clone(app), own_body::form);
        let router = Router::new()
            .route(&auth.login_path, post(login::login))
            .route(&auth.refresh_path, post(session::refresh))
            .route(&auth.logout_path, post(session::logout))
            .route_layer(json_body())
            .route(
                &auth.token_path,
                post(oauth::token).route_layer(form_body()),
            )
            .layer(DefaultBodyLimit::disable())
            .route(jwks::PATH, get(jwks::serve))
            .route(
                "/healthz",
                get(|| async { Json(json!({ "status": "ok" })) }),
            )
            .route("/readyz", get(readiness::public))
            .route(openapi::DOCUMENT_PATH, get(openapi::serve_document))
            .merge(openapi::pages::router())
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            .with_state(Arc::clone(app));
        let paths = vec![
            auth.login_path,
            auth.refresh_path,
            auth.logout_path,
            auth.token_path,
            jwks::PATH.to_owned(),
            "/healthz".to_owned(),
            "/readyz".to_owned(),
            openapi::DOCUMENT_PATH.to_owned(),
        ];
        let (pages, assets) = openapi::pages::paths();
        OwnEndpoints::new(paths.into_iter().chain(pages).collect(), router)
            .with_prefixes(vec![assets])
    }

    /// The admin listener's application: `/metrics`, the detailed readiness, the status page
    /// and the JWKS. All but the JWKS never on the public listener.
    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/readyz", get(readiness::detailed))
            // The public keys, in plain HTTP on loopback: for services in the same process when
            // the public listener speaks TLS only (`up --tls`).
            .route(jwks::PATH, get(jwks::serve))
            .merge(status::router())
            .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED) })
            .fallback(|| async {
                Problem::not_found(
                    "No such admin endpoint: try /metrics, /readyz, /status or /status.json.",
                )
            })
            .with_state(Arc::clone(&self.app))
    }

    /// Serves the admin application on `listener` until `shutdown` fires, with the public
    /// listener's connection limits (an operator's scraper is a client like any other).
    pub fn serve_admin(
        &self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        let app = Arc::clone(&self.app);
        let router = self.admin_router();
        async move {
            let address = listener.local_addr()?;
            tracing::info!(%address, "gateway admin listening");
            // Metrics and the detailed readiness stay up as long as the public listener does.
            serve_beside(app, listener, router, shutdown).await
        }
    }

    /// The plain-HTTP listener of `tls.redirect_http`, if configured: every request is sent to
    /// the same path over HTTPS on `https_port` (the public listener's), for a host the
    /// certificates are for. Serves until `shutdown` fires and `shutdown_delay` has passed.
    pub fn serve_redirect(
        &self,
        listener: TcpListener,
        https_port: u16,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        let app = Arc::clone(&self.app);
        let router = app
            .config()
            .tls
            .as_ref()
            .map(|tls| entrance::redirect_router(tls, https_port));
        async move {
            let Some(router) = router else {
                return Ok(());
            };
            let address = listener.local_addr()?;
            tracing::info!(%address, https_port, "redirecting plain HTTP to HTTPS");
            serve_beside(app, listener, router, shutdown).await
        }
    }

    /// Serves on `listener` until `shutdown` fires and `shutdown_delay` has passed (answering
    /// `/readyz` not-ready meanwhile), then finishes the requests in flight (for at most the
    /// configured `drain_timeout`).
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        let app = Arc::clone(&self.app);
        tracing::info!(
            %address,
            routes = app.config().routes.len(),
            tls = self.entrance.is_some(),
            "gateway listening"
        );
        let _ = app.serving.set(shutdown.clone());
        for (_, upstream) in app.upstreams().iter() {
            health::start(upstream, &shutdown);
        }
        let upkeep = tokio::spawn(upkeep::run(Arc::clone(&app), shutdown.clone()));
        let stopping = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.wait().await;
                std::time::Instant::now()
            })
        };
        let watch = self
            .reloader
            .clone()
            .map(|reloader| tokio::spawn(reloader.run(shutdown.clone())));
        let certificates = self
            .entrance
            .as_ref()
            .map(|entrance| tokio::spawn(entrance.watch(Arc::clone(&app), shutdown.clone())));
        let stop_accepting = {
            let app = Arc::clone(&app);
            shutdown.after(move || app.config().shutdown_delay)
        };
        let (handler, tls) = match &self.entrance {
            Some(entrance) => (
                entrance.secure(self.pipeline()),
                Some(entrance.acceptor.clone()),
            ),
            None => (entrance::Secure::plain(self.pipeline()), None),
        };
        // The public listener's connections are served on the workers (one single-threaded
        // runtime per core: a request's wakes stay on one thread); everything else runs here.
        kit::listener::serve_on_workers(
            listener,
            handler,
            tls,
            stop_accepting,
            || accept::limits(&app.config().limits),
            || app.config().drain_timeout,
            app.observe.gateway.connections.clone(),
        )
        .await?;
        upkeep.abort();
        // Store writes still queued get what is left of the drain deadline, then are logged.
        let stopped_at = stopping.await.unwrap_or_else(|_| std::time::Instant::now());
        let left = app
            .config()
            .drain_timeout
            .saturating_sub(stopped_at.elapsed());
        app.store.flush_pending(left).await;
        if let Some(watch) = watch {
            watch.abort();
        }
        if let Some(certificates) = certificates {
            certificates.abort();
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// A plain-HTTP listener beside the public one (admin, redirect): the public listener's limits
/// (its clients are clients like any other), serving as long as the public listener does (until
/// `shutdown` and the shutdown delay), then a short drain: its requests are quick.
async fn serve_beside(
    app: App,
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let stop_accepting = {
        let app = Arc::clone(&app);
        shutdown.after(move || app.config().shutdown_delay)
    };
    kit::listener::serve(
        listener,
        router,
        None,
        stop_accepting,
        || accept::limits(&app.config().limits),
        || ADMIN_DRAIN,
        prometheus_client::metrics::gauge::Gauge::default(),
    )
    .await
}

/// `GET /metrics` (admin): the exposition, with the per-instance gauges read just now.
async fn metrics(State(app): State<App>) -> impl axum::response::IntoResponse {
    let observe = &app.observe;
    let exposition = {
        let _one_at_a_time = observe
            .gateway
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        observe.gateway.refresh_instances(&app.upstreams());
        observe.metrics.render()
    };
    (
        [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
        exposition,
    )
}
