//! One part per process, as deployed: `gatehouse gateway`, `gatehouse users|orders|clock`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gateway::config::{self, Vars};
use kit::config::{SecretUrl, ServiceConfig, ServiceDefaults};
use kit::observe::AccessLogTarget;
use kit::service::Definition;
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

/// What the command line (or its environment variables) says of a service run on its own:
/// each given value overrides the service's configuration file, which overrides its defaults.
#[derive(Debug, Default)]
pub struct ServiceOptions {
    /// The service's configuration file ([`kit::config::service`]); `None`: defaults only.
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// `sqlite://…` or `postgres://…`; ignored by a service without data (clock), so that one
    /// environment can serve every service.
    pub database_url: Option<String>,
    /// The gateway's JWKS: the keys of the identity tokens the service accepts.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    /// How long a query waits for a database connection before the request is answered 503.
    pub database_acquire_timeout: Option<Duration>,
    /// Where `/metrics` is served: never the public listener.
    pub admin_listen: Option<SocketAddr>,
    pub access_log: Option<AccessLogTarget>,
}

impl ServiceOptions {
    /// The configuration these options make of `defaults`: file first, then each option given.
    pub fn config(self, defaults: ServiceDefaults) -> anyhow::Result<ServiceConfig> {
        let mut config = match &self.config {
            Some(file) => defaults.load(file, &Vars::new())?,
            None => defaults.config(),
        };
        if defaults.keeps_data {
            if let Some(url) = self.database_url {
                config.database_url = Some(SecretUrl::new(url));
            }
        }
        config.listen = self.listen.unwrap_or(config.listen);
        config.admin_listen = self.admin_listen.unwrap_or(config.admin_listen);
        config.jwks_url = self.jwks_url.unwrap_or(config.jwks_url);
        config.issuer = self.issuer.unwrap_or(config.issuer);
        config.access_log = self.access_log.unwrap_or(config.access_log);
        if let Some(timeout) = self.database_acquire_timeout {
            config.database.acquire_timeout = timeout;
        }
        Ok(config)
    }
}

/// The service `part`, configured by `options`, until `shutdown` and the drain after it.
pub async fn service(
    part: Part,
    options: ServiceOptions,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    match part {
        Part::Users => run::<users::Users>(options, shutdown).await,
        Part::Orders => run::<orders::Orders>(options, shutdown).await,
        Part::Clock => run::<clock::Clock>(options, shutdown).await,
    }
}

async fn run<S: Definition>(options: ServiceOptions, shutdown: Shutdown) -> anyhow::Result<()> {
    let config = options.config(S::DEFAULTS)?;
    let verifier = Arc::new(kit::IdentityVerifier::with_jwks(
        S::DEFAULTS.name,
        config.issuer.clone(),
        config.jwks_url.clone(),
    ));
    S::build(&config, verifier)
        .await?
        .run(&config, shutdown)
        .await
}
