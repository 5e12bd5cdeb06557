//! Wires a service's router into a served application: health endpoints, request ids,
//! problem-shaped 404/405, the identity verifier, metrics and access log, an admin listener for
//! `/metrics`, served by the gateway's listener ([`crate::listener`]: header-read deadline,
//! connection caps, drain) until shutdown.
//!
//! A service crate gives the kit the same few things, so the binary and the tests run every
//! service alike: `NAME`, `config::DEFAULTS`, `http::router(state)`, `service(…)`, and a
//! [`Definition`] tying them to a [`ServiceConfig`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{ServiceConfig, ServiceDefaults};
use crate::health::{self, Check};
use crate::identity::IdentityVerifier;
use crate::listener::{self, Limits};
use crate::observe::{self, AccessLog, Metrics};
use crate::problem::Problem;
use crate::request_id;
use crate::shutdown::Shutdown;
use crate::trace::{self, Tracer};

/// How long the admin listener's requests may take to finish at shutdown: they are quick.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);

/// A service crate as the binary runs it on its own: its defaults, and how it is built from
/// its configuration (opening and migrating its database when it keeps data).
pub trait Definition {
    /// Its name, ports and whether it keeps data: its `config.rs`.
    const DEFAULTS: ServiceDefaults;

    /// The service, ready to [`Service::run`]; `verifier` checks its identity tokens.
    fn build(
        config: &ServiceConfig,
        verifier: Arc<IdentityVerifier>,
    ) -> impl Future<Output = anyhow::Result<Service>> + Send;

    /// The service as `config` says: the verifier of its tokens on the configured JWKS and
    /// issuer, [`Definition::build`], and the configured limits and drain timeout. The one way
    /// the binary starts a service, on its own (`gatehouse users`) or beside the others
    /// (`gatehouse up`), so both serve alike.
    fn from_config(config: &ServiceConfig) -> impl Future<Output = anyhow::Result<Service>> + Send {
        async move {
            let verifier = Arc::new(IdentityVerifier::with_jwks(
                Self::DEFAULTS.name,
                config.issuer.clone(),
                config.jwks_url.clone(),
            ));
            Ok(Self::build(config, verifier).await?.configured(config))
        }
    }
}

/// What `/openapi.json` says of a service besides its operations.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The document's title, `gatehouse <name>`.
    pub title: &'static str,
    /// The crate's version (`env!("CARGO_PKG_VERSION")` in the service's crate).
    pub version: &'static str,
    /// What the service does, for whoever reads the document.
    pub description: &'static str,
}

impl About {
    /// `api` with this `info`, the identity-token scheme and the problem schema.
    pub fn document(&self, api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
        crate::openapi::finish(api, self.title, self.version, self.description)
    }
}

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
    /// The public listener's connection limits.
    limits: Limits,
    /// How long requests in flight may take to finish once shutdown begins.
    drain_timeout: Duration,
    /// How long it answers not-ready, still serving, between the signal and the drain.
    shutdown_delay: Duration,
    /// Where its spans go (off unless telemetry is configured); traces are continued either way.
    tracer: Tracer,
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
            limits: Limits::default(),
            drain_timeout: crate::config::service::DEFAULT_DRAIN_TIMEOUT,
            shutdown_delay: Duration::ZERO,
            tracer: Tracer::off(),
        }
    }

    /// A service serving `routes`, whose `/openapi.json` is the document built with them: a
    /// route and its operation are registered by the same line, so neither exists alone.
    pub fn documented(
        name: &'static str,
        routes: OpenApiRouter,
        verifier: Arc<IdentityVerifier>,
        about: &About,
    ) -> Self {
        let (router, api) = routes.split_for_parts();
        Self::new(name, router, verifier).with_openapi(about.document(api))
    }

    /// Serves with the limits, drain timeout and shutdown delay of `config`.
    pub fn configured(self, config: &ServiceConfig) -> Self {
        self.with_limits(config.limits)
            .with_drain_timeout(config.drain_timeout)
            .with_shutdown_delay(config.shutdown_delay)
    }

    /// Serves with `limits` instead of the defaults (the gateway's).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Gives the requests in flight at most `timeout` to finish once shutdown begins.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Between the shutdown signal and the drain, answers `/readyz` not-ready for `delay` while
    /// still serving, so an orchestrator takes it out of rotation before it stops accepting.
    pub fn with_shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
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

    /// Exports the service's spans to `tracer` (see [`crate::trace`]); off by default.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
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
            .layer(
                observe::layer(self.name, self.metrics, self.access_log)
                    .with_tracer(self.tracer.clone()),
            )
            .layer(Extension(self.verifier))
            .layer(axum::middleware::from_fn(request_id::middleware))
            // Outermost: the trace is known to everything inside (problems, log line, span).
            .layer(axum::middleware::from_fn_with_state(
                self.tracer,
                trace::middleware,
            ));
        (public, admin)
    }

    /// Runs as `config` says, until `shutdown` and the drain that follows: listens on `listen`
    /// (and `/metrics` on `admin_listen`), with its access log, limits and drain timeout.
    pub async fn run(self, config: &ServiceConfig, shutdown: Shutdown) -> anyhow::Result<()> {
        let access_log =
            AccessLog::open(&config.access_log, &self.metrics).context("opening the access log")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("admin: cannot listen on {}", config.admin_listen))?;
        let metrics = self.metrics.clone();
        let tracer = match &config.telemetry {
            Some(telemetry) => Tracer::start(telemetry, self.name, &metrics)?,
            None => Tracer::off(),
        };
        self.with_observe(metrics, access_log)
            .with_tracer(tracer)
            .with_admin_listener(admin)
            .configured(config)
            .serve(listener, shutdown)
            .await?;
        Ok(())
    }

    /// Serves on `listener` (and the admin listener, if any) until `shutdown` fires and the
    /// shutdown delay has passed (answering not-ready meanwhile), then finishes the requests in
    /// flight (for at most the drain timeout).
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
        let delay = self.shutdown_delay;
        let stop_accepting = shutdown.after(move || delay);
        let signalled = shutdown.clone();
        let this = self.ready_when(
            "shutdown",
            Arc::new(move || {
                let signalled = signalled.is_triggered();
                Box::pin(async move {
                    if signalled {
                        Err("shutting down".to_owned())
                    } else {
                        Ok(())
                    }
                })
            }),
        );
        this.serve_until(listener, stop_accepting).await
    }

    /// Serves until `stop_accepting`, then drains.
    async fn serve_until(
        self,
        listener: TcpListener,
        stop_accepting: Shutdown,
    ) -> std::io::Result<()> {
        let name = self.name;
        let address = listener.local_addr()?;
        let (limits, drain_timeout) = (self.limits, self.drain_timeout);
        let open = self.metrics.open_connections(name);
        let (public, admin) = self.into_parts();
        let admin = match admin {
            Some((listener, router)) => {
                let address = listener.local_addr()?;
                tracing::info!(service = %name, %address, "admin listening");
                // The public listener's limits: an operator's scraper is a client like any other.
                Some(tokio::spawn(listener::serve(
                    listener,
                    router,
                    None,
                    stop_accepting.clone(),
                    move || limits,
                    || ADMIN_DRAIN,
                    prometheus_client::metrics::gauge::Gauge::default(),
                )))
            }
            None => None,
        };
        tracing::info!(service = %name, %address, "listening");
        listener::serve(
            listener,
            public,
            None,
            stop_accepting,
            move || limits,
            move || drain_timeout,
            open,
        )
        .await?;
        if let Some(admin) = admin {
            admin.await.map_err(std::io::Error::other)??;
        }
        tracing::info!(service = %name, "stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The listener as a service meets it: its limits and its drain, over real sockets. Every
    //! wait is for a condition, with a deadline far above what it takes.

    use std::sync::Arc;
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    use super::*;
    use crate::testing::wait_until;

    const DEADLINE: Duration = Duration::from_secs(20);
    const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

    struct Running {
        address: std::net::SocketAddr,
        metrics: Metrics,
        shutdown: Shutdown,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    /// A verifier whose keys no test request needs (the routes here take no identity).
    fn verifier() -> Arc<IdentityVerifier> {
        Arc::new(IdentityVerifier::with_jwks(
            "test",
            "gatehouse",
            "http://127.0.0.1:9/.well-known/jwks.json",
        ))
    }

    async fn start(routes: Router, limits: Limits) -> Running {
        let verifier = verifier();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let service = Service::new("test", routes, verifier).with_limits(limits);
        let metrics = service.metrics().clone();
        let served = tokio::spawn(service.serve(listener, shutdown.clone()));
        Running {
            address,
            metrics,
            shutdown,
            served,
        }
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(socket: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, socket.read_to_end(&mut answer))
            .await
            .expect("the server never closed the connection")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// One answer on a kept-alive connection (enough bytes for `/healthz`'s).
    async fn one_answer(socket: &mut TcpStream) -> String {
        answer_to(socket, HEALTHZ).await
    }

    /// The answer to `request` on a kept-alive connection (a small one: one read).
    async fn answer_to(socket: &mut TcpStream, request: &[u8]) -> String {
        socket.write_all(request).await.unwrap();
        let mut buffer = vec![0; 4096];
        let read = tokio::time::timeout(DEADLINE, socket.read(&mut buffer))
            .await
            .expect("no answer")
            .unwrap();
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    }

    fn open_connections(metrics: &Metrics) -> Option<String> {
        metrics
            .render()
            .lines()
            .find(|line| line.starts_with("gatehouse_service_open_connections{server=\"test\"}"))
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_request_is_closed_at_the_header_read_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let app = start(Router::new(), limits).await;

        let mut silent = TcpStream::connect(app.address).await.unwrap();

        assert_eq!(until_closed(&mut silent).await, "", "closed without a word");
    }

    /// Sends `head` and then one byte of a header value every 50 ms (a slowloris), until the
    /// server closes the connection or 20 s have passed; whether it was closed.
    async fn trickle_until_closed(socket: TcpStream, head: &[u8]) -> bool {
        let (mut reader, mut writer) = socket.into_split();
        let head = head.to_vec();
        let trickling = tokio::spawn(async move {
            if writer.write_all(&head).await.is_err() {
                return;
            }
            for _ in 0..400 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if writer.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut rest))
            .await
            .is_ok();
        trickling.abort();
        closed
    }

    /// A request's head up to a header value that then trickles in.
    const TRICKLED_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ";

    /// A service whose header deadline is 300 ms.
    async fn start_with_a_short_header_deadline() -> Running {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        start(Router::new(), limits).await
    }

    #[tokio::test]
    async fn a_first_request_whose_headers_trickle_in_is_closed_at_the_header_read_timeout() {
        let app = start_with_a_short_header_deadline().await;

        let socket = TcpStream::connect(app.address).await.unwrap();

        assert!(
            trickle_until_closed(socket, TRICKLED_HEAD).await,
            "a byte every 50 ms kept the connection open past the header deadline"
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connection_whose_next_headers_trickle_in_is_closed_after_its_answer() {
        let app = start_with_a_short_header_deadline().await;

        let mut socket = TcpStream::connect(app.address).await.unwrap();
        let first = one_answer(&mut socket).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");

        assert!(
            trickle_until_closed(socket, TRICKLED_HEAD).await,
            "the second request's trickle kept the connection open past the header deadline"
        );
    }

    #[tokio::test]
    async fn a_first_request_still_trickling_when_the_drain_begins_ends_at_its_header_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        // A drain that would outlast the test: only the header deadline can end this one.
        let service = Service::new("test", Router::new(), verifier())
            .with_limits(limits)
            .with_drain_timeout(Duration::from_secs(3600));
        let served = tokio::spawn(service.serve(listener, shutdown.clone()));

        let socket = TcpStream::connect(address).await.unwrap();
        let trickling = tokio::spawn(trickle_until_closed(socket, TRICKLED_HEAD));
        shutdown.trigger();

        tokio::time::timeout(DEADLINE, served)
            .await
            .expect("the drain waited for the trickling client")
            .unwrap()
            .unwrap();
        assert!(
            trickling.await.unwrap(),
            "the trickling connection was closed"
        );
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share_and_the_gauge_counts_what_is_open() {
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let app = start(Router::new(), limits).await;
        let mut first = TcpStream::connect(app.address).await.unwrap();
        assert!(one_answer(&mut first).await.starts_with("HTTP/1.1 200"));
        assert_eq!(
            open_connections(&app.metrics).as_deref(),
            Some("gatehouse_service_open_connections{server=\"test\"} 1")
        );

        let mut second = TcpStream::connect(app.address).await.unwrap();
        second.write_all(HEALTHZ).await.ok();

        assert_eq!(
            until_closed(&mut second).await,
            "",
            "over the address's share"
        );
        assert!(
            one_answer(&mut first).await.starts_with("HTTP/1.1 200"),
            "the first connection is still served"
        );
        drop(first);
        wait_until("the closed connection to leave the gauge", || {
            std::future::ready(
                open_connections(&app.metrics).is_some_and(|line| line.ends_with(" 0")),
            )
        })
        .await;
    }

    #[tokio::test]
    async fn a_request_in_flight_at_shutdown_is_answered_before_the_service_stops() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let routes = Router::new().route(
            "/slow",
            get({
                let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
                move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }
            }),
        );
        let app = start(routes, Limits::default()).await;
        let mut socket = TcpStream::connect(app.address).await.unwrap();
        socket
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        entered.notified().await;

        app.shutdown.trigger();
        release.notify_one();

        let answer = until_closed(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(DEADLINE, app.served)
            .await
            .expect("the service never stopped")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn after_the_signal_readiness_fails_at_once_while_new_connections_are_still_served() {
        let verifier = verifier();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        // Far longer than the test: the listener must still accept when it asks.
        let service = Service::new("test", Router::new(), verifier)
            .with_shutdown_delay(Duration::from_secs(3600));
        let served = tokio::spawn(service.serve(listener, shutdown.clone()));
        let ready = |path: &'static str| async move {
            let mut socket = TcpStream::connect(address).await.unwrap();
            socket
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            until_closed(&mut socket).await
        };
        assert!(ready("/readyz").await.starts_with("HTTP/1.1 200"));

        shutdown.trigger();

        let readiness = ready("/readyz").await;
        assert!(readiness.starts_with("HTTP/1.1 503"), "{readiness}");
        assert!(readiness.contains(r#""shutdown":"failing""#), "{readiness}");
        let health = ready("/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200"),
            "still serving: {health}"
        );
        assert!(!served.is_finished(), "the listener waits out the delay");
        served.abort();
    }

    /// The workers as a client meets them: connections are spread over the workers, one
    /// address's cap holds across them, and shutdown drains a request in flight.
    #[tokio::test]
    async fn on_the_workers_connections_are_spread_within_one_address_cap_and_drained() {
        use tokio::sync::Semaphore;

        let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let app = {
            let (entered, gate) = (Arc::clone(&entered), Arc::clone(&gate));
            Router::new()
                .route(
                    "/worker",
                    get(|| async { format!("{:?}", crate::workers::current()) }),
                )
                .route(
                    "/held",
                    get(move || async move {
                        entered.notify_one();
                        let _permit = gate.acquire().await;
                        "released"
                    }),
                )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let limits = Limits {
            max_connections_per_ip: 3,
            ..Limits::default()
        };
        let served = tokio::spawn(listener::serve_on_workers(
            listener,
            app,
            None,
            shutdown.clone(),
            move || limits,
            || DEADLINE,
            prometheus_client::metrics::gauge::Gauge::default(),
        ));
        const WORKER: &[u8] = b"GET /worker HTTP/1.1\r\nHost: test\r\n\r\n";

        // Three connections at once (as a client pool opens them): each on the least busy
        // worker, so they are spread over as many workers as there are, up to three.
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(TcpStream::connect(address).await.unwrap());
        }
        let mut workers = std::collections::BTreeSet::new();
        for socket in &mut open {
            let answer = answer_to(socket, WORKER).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let index = answer
                .rsplit_once("Some(")
                .map(|(_, index)| index.to_owned());
            workers.insert(index.expect("served off the workers"));
        }
        assert_eq!(workers.len(), crate::workers::count().min(3), "{workers:?}");
        // A fourth from the same address, whichever worker accepts it: closed unanswered.
        let mut fourth = TcpStream::connect(address).await.unwrap();
        let _ = fourth.write_all(WORKER).await;
        assert_eq!(until_closed(&mut fourth).await, "");

        // A request in flight at shutdown is answered whole; then every worker's loop ends.
        let mut held = open.pop().unwrap();
        held.write_all(b"GET /held HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, entered.notified())
            .await
            .expect("the held request never reached its handler");
        shutdown.trigger();
        gate.add_permits(1);
        let answer = until_closed(&mut held).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("released"), "{answer}");
        tokio::time::timeout(DEADLINE, served)
            .await
            .expect("the workers never stopped")
            .unwrap()
            .unwrap();
    }
}
