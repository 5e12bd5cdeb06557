//! The settings every service has: where it listens, its database, the gateway whose identity
//! tokens it accepts, its access log, its connection limits and how long it drains.
//!
//! Layered, weakest first: the service's own defaults ([`ServiceDefaults`], in its
//! `config.rs`), then its configuration file, if any (read by the kit's loader like the
//! gateway's: every mistake at once, each at file:line:column), then the command line and
//! environment, which the binary applies to the result.
//!
//! ```yaml
//! listen: 127.0.0.1:8101
//! admin_listen: 127.0.0.1:8201          # /metrics; keep it off the public network
//! database:                             # only for a service that keeps data
//!   url: postgres://users:${USERS_DB_PASSWORD}@db/users
//!   acquire_timeout: 2s
//! identity:
//!   jwks_url: http://127.0.0.1:8001/.well-known/jwks.json
//!   issuer: gatehouse
//! access_log: stdout                    # stderr, off, or a file path
//! drain_timeout: 30s
//! limits:                               # the gateway's knobs and defaults
//!   header_read_timeout: 10s
//!   send_timeout: 30s
//!   max_connections: 16384
//!   max_connections_per_ip: 512
//! ```

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use marked_yaml::Spanned;
use serde::Deserialize;

use super::load::{parse_collecting, read, LoadError};
use super::secret::SecretUrl;
use super::values::Period;
use super::vars::Vars;
use crate::db::{Database, Migrations, PoolOptions};
use crate::listener::Limits;
use crate::observe::AccessLogTarget;

/// A service's configuration, every value settled.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The public listener: the gateway's upstream address for this service.
    pub listen: SocketAddr,
    /// Where `/metrics` is served: never the public listener.
    pub admin_listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; `None` for a service that keeps no data.
    pub database_url: Option<SecretUrl>,
    /// How the database pool waits: an outage answers 503 within its acquire timeout.
    pub database: PoolOptions,
    /// The gateway's JWKS: the keys of the identity tokens the service accepts.
    pub jwks_url: String,
    /// The issuer the gateway puts in identity tokens.
    pub issuer: String,
    pub access_log: AccessLogTarget,
    /// The listener's connection limits (header deadline, send deadline, caps).
    pub limits: Limits,
    /// After SIGTERM, how long requests in flight may take before the service exits anyway.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long the service answers not-ready while still serving before it stops
    /// accepting: the time an orchestrator needs to stop sending it traffic (default: none).
    pub shutdown_delay: Duration,
    /// Span export over OTLP/HTTP (`GATEHOUSE_OTLP_ENDPOINT`); `None`: off.
    pub telemetry: Option<crate::trace::Telemetry>,
}

impl ServiceConfig {
    /// Opens the service's database (creating a SQLite file if missing) with the configured
    /// pool settings, and runs its `migrations`.
    pub async fn open_database(&self, migrations: Migrations) -> anyhow::Result<Database> {
        let url = self
            .database_url
            .as_ref()
            .context("a service that keeps data needs a database URL")?;
        Database::connect_with(url.expose_secret(), migrations, self.database)
            .await
            .with_context(|| format!("opening the database {}", url.redacted()))
    }
}

/// What one service sets apart from the others: its ports and, when it keeps data, its
/// database. Everything else defaults alike for every service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    /// The service's name: its SQLite file's name, and the one its mistakes are reported under.
    pub name: &'static str,
    /// The port of its public listener, on loopback (the one `gatehouse up` uses).
    pub port: u16,
    /// The port of its admin listener, on loopback.
    pub admin_port: u16,
    /// Whether it keeps data (then its database defaults to `sqlite://data/<name>.db`).
    pub keeps_data: bool,
}

/// The gateway `gatehouse up` runs, whose keys sign the identity tokens.
pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:8001/.well-known/jwks.json";
/// The issuer the gateway writes into tokens unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "gatehouse";
/// The gateway's default too: as long as any request should take.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl ServiceDefaults {
    /// The configuration with nothing configured.
    pub fn config(self) -> ServiceConfig {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        ServiceConfig {
            listen: loopback(self.port),
            admin_listen: loopback(self.admin_port),
            database_url: self
                .keeps_data
                .then(|| SecretUrl::new(format!("sqlite://data/{}.db", self.name))),
            database: PoolOptions::default(),
            jwks_url: DEFAULT_JWKS_URL.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            access_log: AccessLogTarget::default(),
            limits: Limits::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_delay: Duration::ZERO,
            telemetry: None,
        }
    }

    /// The configuration in the file at `path` over these defaults; `Err` names every mistake.
    pub fn load(self, path: &Path, vars: &Vars) -> Result<ServiceConfig, LoadError> {
        let text = read(path)?;
        self.parse(&text, &path.display().to_string(), vars)
    }

    /// As [`ServiceDefaults::load`], from `text`, named `file` in mistakes.
    pub fn parse(self, text: &str, file: &str, vars: &Vars) -> Result<ServiceConfig, LoadError> {
        let (raw, mut mistakes) = parse_collecting::<File>(text, file, vars)?;
        let mut config = self.config();
        if let Some(database) = raw.database {
            if self.keeps_data {
                if let Some(url) = &database.url {
                    config.database_url = Some(url.clone());
                }
                if let Some(Period(timeout)) = database.acquire_timeout {
                    config.database.acquire_timeout = timeout;
                }
            } else {
                mistakes.at(
                    "database",
                    &database,
                    format!(
                        "{} keeps no data: it has no database to configure",
                        self.name
                    ),
                );
            }
        }
        if let Some(listen) = &raw.listen {
            config.listen = **listen;
        }
        if let Some(admin_listen) = &raw.admin_listen {
            config.admin_listen = **admin_listen;
        }
        if config.listen == config.admin_listen {
            let (field, span) = match (&raw.admin_listen, &raw.listen) {
                (Some(admin_listen), _) => ("admin_listen", Some(admin_listen.span())),
                (None, listen) => ("listen", listen.as_ref().map(Spanned::span)),
            };
            mistakes.add(
                field,
                span,
                "`listen` and `admin_listen` must differ: /metrics is never on the public listener",
            );
        }
        config.jwks_url = raw.identity.jwks_url.unwrap_or(config.jwks_url);
        config.issuer = raw.identity.issuer.unwrap_or(config.issuer);
        config.access_log = raw.access_log.unwrap_or(config.access_log);
        config.limits = raw.limits.into();
        config.drain_timeout = raw.drain_timeout.map_or(config.drain_timeout, |p| p.0);
        config.shutdown_delay = raw.shutdown_delay.unwrap_or(config.shutdown_delay);
        mistakes
            .finish(config)
            .map_err(|mistakes| LoadError::Invalid {
                file: file.to_owned(),
                mistakes,
            })
    }
}

/// The file as written; what it leaves out keeps the service's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    listen: Option<Spanned<SocketAddr>>,
    admin_listen: Option<Spanned<SocketAddr>>,
    database: Option<Spanned<DatabaseSection>>,
    identity: Identity,
    access_log: Option<AccessLogTarget>,
    drain_timeout: Option<Period>,
    #[serde(default, deserialize_with = "some_duration")]
    shutdown_delay: Option<Duration>,
    limits: ConnectionLimits,
}

/// `shutdown_delay` may be zero (no delay), unlike the periods.
fn some_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    super::values::any_duration(deserializer).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: Option<SecretUrl>,
    acquire_timeout: Option<Period>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Identity {
    jwks_url: Option<String>,
    issuer: Option<String>,
}

/// The `limits` section: the listener's knobs, named and defaulted as in the gateway's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    pub header_read_timeout: Period,
    pub send_timeout: Period,
    pub max_connections: NonZeroUsize,
    pub max_connections_per_ip: NonZeroUsize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        let limits = Limits::default();
        let at_least_one = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            header_read_timeout: Period(limits.header_read_timeout),
            send_timeout: Period(limits.send_timeout),
            max_connections: at_least_one(limits.max_connections),
            max_connections_per_ip: at_least_one(limits.max_connections_per_ip),
        }
    }
}

impl From<ConnectionLimits> for Limits {
    fn from(raw: ConnectionLimits) -> Self {
        Self {
            header_read_timeout: raw.header_read_timeout.0,
            send_timeout: raw.send_timeout.0,
            max_connections: raw.max_connections.get(),
            max_connections_per_ip: raw.max_connections_per_ip.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mistake, Position};

    const USERS: ServiceDefaults = ServiceDefaults {
        name: "users",
        port: 8101,
        admin_port: 8201,
        keeps_data: true,
    };
    const CLOCK: ServiceDefaults = ServiceDefaults {
        name: "clock",
        port: 8103,
        admin_port: 8203,
        keeps_data: false,
    };

    fn mistakes(defaults: ServiceDefaults, text: &str) -> Vec<Mistake> {
        match defaults.parse(text, "users.yaml", &Vars::new()) {
            Err(LoadError::Invalid { mistakes, .. }) => mistakes,
            other => panic!("expected mistakes, got {other:?}"),
        }
    }

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn an_empty_file_keeps_every_default_and_the_defaults_are_the_gateways() {
        let config = USERS.parse("", "users.yaml", &Vars::new()).unwrap();

        assert_eq!(config, USERS.config());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8101");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:8201");
        assert_eq!(
            config.database_url,
            Some(SecretUrl::new("sqlite://data/users.db"))
        );
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert_eq!(CLOCK.config().database_url, None, "the clock keeps no data");
    }

    #[test]
    fn every_setting_is_read_from_the_file() {
        let text = "\
listen: 0.0.0.0:9101
admin_listen: 127.0.0.1:9201
database: { url: postgres://users@db/users, acquire_timeout: 250ms }
identity: { jwks_url: http://gateway:8001/.well-known/jwks.json, issuer: edge }
access_log: off
drain_timeout: 5s
limits: { header_read_timeout: 2s, send_timeout: 3s, max_connections: 100, max_connections_per_ip: 7 }
";
        let config = USERS.parse(text, "users.yaml", &Vars::new()).unwrap();

        assert_eq!(config.listen.to_string(), "0.0.0.0:9101");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9201");
        assert_eq!(
            config.database_url,
            Some(SecretUrl::new("postgres://users@db/users"))
        );
        assert_eq!(config.database.acquire_timeout, Duration::from_millis(250));
        assert_eq!(config.jwks_url, "http://gateway:8001/.well-known/jwks.json");
        assert_eq!(config.issuer, "edge");
        assert_eq!(config.access_log, AccessLogTarget::Off);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(
            config.limits,
            Limits {
                header_read_timeout: Duration::from_secs(2),
                send_timeout: Duration::from_secs(3),
                max_connections: 100,
                max_connections_per_ip: 7,
            }
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_line_column_and_field() {
        let text = "\
listen: 127.0.0.1:9101
limits:
  header_read_timeout: soon
  max_connections: 0
databse: { url: sqlite://x.db }
admin_listen: 127.0.0.1:9101
";
        let found: Vec<(String, Option<Position>)> = mistakes(USERS, text)
            .into_iter()
            .map(|mistake| (mistake.field, mistake.at))
            .collect();

        assert_eq!(
            found,
            [
                ("limits.header_read_timeout".to_owned(), at(3, 24)),
                ("limits.max_connections".to_owned(), at(4, 20)),
                ("databse".to_owned(), at(5, 1)),
                ("admin_listen".to_owned(), at(6, 15)),
            ]
        );
    }

    #[test]
    fn a_service_without_data_refuses_a_database_section_where_it_is_written() {
        let found = mistakes(
            CLOCK,
            "listen: 127.0.0.1:9103\ndatabase: { url: sqlite://x.db }\n",
        );

        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "database");
        assert_eq!(found[0].at.map(|at| at.line), Some(2));
        assert!(found[0].message.contains("keeps no data"), "{found:?}");
    }

    #[test]
    fn a_database_password_from_the_environment_never_shows_in_debug_output() {
        let vars = Vars::new().set("USERS_DB_PASSWORD", "hunter2");
        let config = USERS
            .parse(
                "database: { url: \"postgres://users:${USERS_DB_PASSWORD}@db/users\" }\n",
                "users.yaml",
                &vars,
            )
            .unwrap();

        let url = config.database_url.as_ref().unwrap();
        assert_eq!(url.expose_secret(), "postgres://users:hunter2@db/users");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://users:***@db/users"), "{shown}");
    }

    #[test]
    fn a_variable_that_makes_a_bad_value_is_named_in_the_mistake() {
        let vars = Vars::new().set("DRAIN", "a while");
        let found = match USERS.parse("drain_timeout: ${DRAIN}\n", "users.yaml", &vars) {
            Err(LoadError::Invalid { mistakes, .. }) => mistakes,
            other => panic!("expected a mistake, got {other:?}"),
        };

        assert_eq!(found[0].field, "drain_timeout");
        assert!(found[0].message.contains("${DRAIN}"), "{found:?}");
    }
}
