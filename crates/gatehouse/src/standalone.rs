//! One part per process, as deployed: `gatehouse gateway`, `gatehouse users|orders|clock`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    let redirect_http = config.tls.as_ref().and_then(|tls| tls.redirect_http);
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
    let redirect = match redirect_http {
        Some(address) => {
            let plain = TcpListener::bind(address)
                .await
                .with_context(|| format!("tls.redirect_http: cannot listen on {address}"))?;
            let https_port = listener.local_addr()?.port();
            Some(tokio::spawn(gateway.serve_redirect(
                plain,
                https_port,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    gateway.serve(listener, shutdown).await?;
    admin.await??;
    if let Some(redirect) = redirect {
        redirect.await??;
    }
    Ok(())
}

/// The services the binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Users,
    Orders,
    Clock,
}

/// What the command line (or its environment variables) says of a service run on its own (one
/// service per process, so the names are plain): each value given overrides the service's
/// configuration file, which overrides its defaults.
#[derive(Debug, Default, clap::Args)]
pub struct ServiceOptions {
    /// Address to listen on (default: the service's port on 127.0.0.1, as in `up`).
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `sqlite://…` or `postgres://…` (default: sqlite://data/<service>.db). Ignored by a
    /// service that keeps no data (clock), so that one environment can serve every service.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The gateway's JWKS, whose keys sign the identity tokens this service accepts (default:
    /// http://127.0.0.1:8001/.well-known/jwks.json).
    #[arg(long, env = "GATEHOUSE_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The issuer of the identity tokens (default: gatehouse).
    #[arg(long, env = "GATEHOUSE_ISSUER")]
    pub issuer: Option<String>,
    /// How long a query waits for a database connection before the request is answered 503
    /// (`250ms`, `2s`, …; default: 2s).
    #[arg(long, env = "GATEHOUSE_DATABASE_ACQUIRE_TIMEOUT", value_parser = above_zero)]
    pub database_acquire_timeout: Option<Duration>,
    /// Address of the admin listener, which serves `/metrics` (default: 127.0.0.1:8201 for
    /// users, 8202 for orders, 8203 for clock). Keep it off the public network.
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Where access-log lines go: `stdout`, `stderr`, `off` or a file path (appended to,
    /// created 0600); default: stdout.
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG")]
    pub access_log: Option<AccessLogTarget>,
    /// After SIGTERM, how long the service answers `/readyz` not-ready while still serving,
    /// before it stops accepting and drains (`5s`; default: 0, no delay). Set it to the time
    /// your load balancer or Kubernetes needs to stop sending new connections.
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_DELAY", value_parser = kit::config::values::parse_any_duration)]
    pub shutdown_delay: Option<Duration>,
    /// An OpenTelemetry collector's OTLP/HTTP address (`http://otel-collector:4318`): the
    /// service's spans are exported there, every trace it starts recorded (default: off).
    #[arg(long, env = "GATEHOUSE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<kit::trace::OtlpEndpoint>,
    /// The service's configuration file (YAML: listen, admin_listen, database, identity,
    /// access_log, drain_timeout, shutdown_delay, limits), under the options above; default: none.
    #[arg(long, env = "GATEHOUSE_SERVICE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A duration as a configuration file writes it, above zero.
fn above_zero(text: &str) -> Result<Duration, String> {
    kit::config::Period::parse(text).map(|period| period.0)
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
        config.shutdown_delay = self.shutdown_delay.unwrap_or(config.shutdown_delay);
        if let Some(otlp_endpoint) = self.otlp_endpoint {
            config.telemetry = Some(kit::trace::Telemetry {
                otlp_endpoint,
                service_name: defaults.name.to_owned(),
                sample_ratio: kit::trace::SampleRatio::ALL,
            });
        }
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
    S::from_config(&config).await?.run(&config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_given_overrides_the_file_which_overrides_the_defaults() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("users.yaml");
        std::fs::write(
            &file,
            "listen: 127.0.0.1:9101\nidentity: { issuer: from-file }\nlimits: { max_connections_per_ip: 3 }\n",
        )
        .unwrap();
        let options = ServiceOptions {
            config: Some(file),
            issuer: Some("from-flag".to_owned()),
            database_url: Some("postgres://users@db/users".to_owned()),
            ..ServiceOptions::default()
        };

        let config = options.config(users::Users::DEFAULTS).unwrap();

        assert_eq!(config.listen.to_string(), "127.0.0.1:9101", "the file's");
        assert_eq!(config.issuer, "from-flag", "the flag's, over the file's");
        assert_eq!(config.limits.max_connections_per_ip, 3, "the file's");
        assert_eq!(
            config.admin_listen.to_string(),
            "127.0.0.1:8201",
            "users' default"
        );
        assert_eq!(
            config.database_url,
            Some(SecretUrl::new("postgres://users@db/users"))
        );
    }

    #[test]
    fn a_database_url_in_the_environment_is_ignored_by_a_service_without_data() {
        let options = ServiceOptions {
            database_url: Some("postgres://shared@db/x".to_owned()),
            ..ServiceOptions::default()
        };

        let config = options.config(clock::Clock::DEFAULTS).unwrap();

        assert_eq!(config.database_url, None);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8103");
    }

    #[test]
    fn a_bad_file_fails_with_every_mistake_named_by_file_line_and_column() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("clock.yaml");
        std::fs::write(
            &file,
            "drain_timeout: soon\ndatabase: { url: sqlite://x.db }\n",
        )
        .unwrap();
        let options = ServiceOptions {
            config: Some(file.clone()),
            ..ServiceOptions::default()
        };

        let error = options
            .config(clock::Clock::DEFAULTS)
            .unwrap_err()
            .to_string();

        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(lines.len(), 2, "{error}");
        let shown = file.display().to_string();
        assert!(
            lines[0].starts_with(&format!("{shown}:1:16: drain_timeout: ")),
            "{error}"
        );
        assert!(
            lines[1].starts_with(&format!("{shown}:2:11: database: ")),
            "{error}"
        );
    }
}
