//! One part per process, as deployed: `gatehouse gateway`, `gatehouse users|orders|clock`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gateway::config::{self, Vars};
use kit::observe::{AccessLog, AccessLogTarget, Metrics};
use kit::shutdown::Shutdown;
use tokio::net::TcpListener;

/// The gateway on `config_path`, reloading it when it changes or on SIGHUP; on `shutdown` it
/// stops accepting and finishes the requests in flight (up to `drain_timeout`).
pub async fn gateway(config_path: &Path, shutdown: Shutdown) -> anyhow::Result<()> {
    let config = config::load_file(config_path, &Vars::new())?;
    let listen = config.listen;
    let admin_listen = config.admin_listen;
    let gateway = gateway::Gateway::build(config)
        .await?
        .watch_file(config_path, Vars::new());
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("admin_listen: cannot listen on {admin_listen}"))?;
    let admin = tokio::spawn(gateway.serve_admin(admin, shutdown.clone()));
    gateway.serve(listener, shutdown).await?;
    admin.await??;
    Ok(())
}

/// The services the binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Users,
    Orders,
    Clock,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => users::NAME,
            Self::Orders => orders::NAME,
            Self::Clock => clock::NAME,
        }
    }

    /// Where the part listens unless told otherwise (the ports `up` uses).
    pub fn default_listen(self) -> SocketAddr {
        let port = match self {
            Self::Users => 8101,
            Self::Orders => 8102,
            Self::Clock => 8103,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Where the part serves `/metrics` unless told otherwise: its port plus 100.
    pub fn default_admin_listen(self) -> SocketAddr {
        let port = match self {
            Self::Users => 8201,
            Self::Orders => 8202,
            Self::Clock => 8203,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// Settings of a service run on its own.
pub struct ServiceOptions {
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; ignored by services without data (clock).
    pub database_url: String,
    /// The gateway's JWKS: the keys of the identity tokens the service accepts.
    pub jwks_url: String,
    pub issuer: String,
    /// How the database pool waits (acquire timeout): an outage answers 503 within it.
    pub database: kit::db::PoolOptions,
    /// Where `/metrics` is served: never the public listener.
    pub admin_listen: SocketAddr,
    pub access_log: AccessLogTarget,
}

pub async fn service(
    part: Part,
    options: ServiceOptions,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let verifier = Arc::new(kit::IdentityVerifier::with_jwks(
        part.name(),
        options.issuer,
        options.jwks_url,
    ));
    let service = match part {
        Part::Users => users::service(
            users::connect_with(&options.database_url, options.database).await?,
            verifier,
        ),
        Part::Orders => orders::service(
            orders::connect_with(&options.database_url, options.database).await?,
            verifier,
        ),
        Part::Clock => clock::service(verifier),
    };
    let metrics = Metrics::new();
    let access_log =
        AccessLog::open(&options.access_log, &metrics).context("opening the access log")?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let admin = TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("admin: cannot listen on {}", options.admin_listen))?;
    service
        .with_observe(metrics, access_log)
        .with_admin_listener(admin)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
