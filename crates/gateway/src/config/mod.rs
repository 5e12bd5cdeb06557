//! The gateway's configuration: the YAML file as written, typed ([`schema`], its values in
//! [`values`]), read by the kit's loader ([`kit::config`]: positions from the parser, `${VAR}`
//! inside scalars, every mistake at once) in [`load`], and checked across values into a
//! [`GatewayConfig`] that cannot hold a wrong one ([`validate`]). `gatehouse check-config` and
//! the hot reload run exactly this path.

mod load;
pub mod schema;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};

pub use load::{load_file, parse, Vars};
pub use validate::{MAX_CACHE_TTL, MAX_RETRIES, MAX_STALE_IF_ERROR};

/// Configuration mistakes, each named by file, line, column and field so it can be fixed
/// without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    /// Every mistake in the file, one per line: `file:line:column: field: message`.
    #[error("{}", kit::config::LoadError::Invalid { file: file.clone(), mistakes: mistakes.clone() })]
    Mistakes {
        file: String,
        mistakes: Vec<kit::config::Mistake>,
    },
    /// A file that is sound but cannot replace the running one (see `reload`).
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

impl From<kit::config::LoadError> for ConfigError {
    fn from(error: kit::config::LoadError) -> Self {
        match error {
            kit::config::LoadError::Read { file, cause } => Self::Read { file, cause },
            kit::config::LoadError::Invalid { file, mistakes } => Self::Mistakes { file, mistakes },
        }
    }
}

/// A validated gateway configuration.
///
/// A reload replaces `limits`, `rate_limits`, `services`, `routes`, `drain_timeout` and `watch*` while the gateway
/// serves; the other settings are read once at start (see [`GatewayConfig::needs_restart`]).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// TLS on the public listener (`tls:`), its files checked at load (read at start; the
    /// certificate files themselves are watched and reloaded, see `crate::entrance`).
    pub tls: Option<TlsSettings>,
    /// Where `/metrics` and the detailed `/readyz` are served: an address only operators reach.
    pub admin_listen: SocketAddr,
    /// Where the access log goes (one JSON line per request).
    pub access_log: kit::observe::AccessLogTarget,
    /// Durable store: `sqlite://…` or `postgres://…`; it may hold a password, so `Debug` masks it.
    pub store: kit::config::SecretUrl,
    /// How the store's pool waits: a store that does not answer within `acquire_timeout` is
    /// an outage (503), answered within the request's deadline.
    pub store_pool: kit::db::PoolOptions,
    pub state: crate::state::StateSettings,
    pub tokens: TokenSettings,
    pub auth: AuthEndpoints,
    pub limits: Limits,
    /// The response cache's bounds; a route opts in with [`RouteSettings::cache`].
    pub cache: CacheSettings,
    pub services: BTreeMap<String, ServiceSettings>,
    /// Named rate-limit policies (`rate_limits:`); routes hold the ones they take.
    pub rate_limits: BTreeMap<String, std::sync::Arc<crate::limit::RatePolicy>>,
    pub routes: Vec<RouteSettings>,
    /// After SIGTERM, how long requests in flight may take before the gateway exits anyway.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long the gateway answers `/readyz` not-ready while still serving
    /// before it stops accepting (read at start).
    pub shutdown_delay: Duration,
    /// How often the configuration file is checked for changes; `None`: only on SIGHUP.
    pub watch: Option<Duration>,
    /// How long a changed file must stay the same before the watch applies it, so a writer
    /// that pauses mid-file is not caught half-way.
    pub watch_settle: Duration,
    /// Span export over OTLP/HTTP (read at start); `None`: off.
    pub telemetry: Option<kit::trace::Telemetry>,
}

impl GatewayConfig {
    /// The settings of `self` that differ from `running` but are only read at start, by name.
    pub fn needs_restart(&self, running: &GatewayConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.listen != running.listen {
            fields.push("listen");
        }
        if self.admin_listen != running.admin_listen {
            fields.push("admin_listen");
        }
        // The names come from the certificates' contents, which are reloaded on their own.
        let start_only = |tls: &Option<TlsSettings>| {
            tls.as_ref()
                .map(|tls| (tls.files.clone(), tls.hsts.clone(), tls.redirect_http))
        };
        if start_only(&self.tls) != start_only(&running.tls) {
            fields.push("tls");
        }
        if self.access_log != running.access_log {
            fields.push("access_log");
        }
        if self.store != running.store || self.store_pool != running.store_pool {
            fields.push("store");
        }
        if self.state != running.state {
            fields.push("state");
        }
        if self.tokens != running.tokens {
            fields.push("tokens");
        }
        if self.auth != running.auth {
            fields.push("auth");
        }
        // The in-memory store is sized once, at start.
        if self.cache.memory_bytes != running.cache.memory_bytes {
            fields.push("cache.memory");
        }
        // The export task is started once, with the gateway.
        if self.telemetry != running.telemetry {
            fields.push("telemetry");
        }
        fields
    }

    /// `self` with the start-only settings of `running`: what a reload can apply.
    pub fn keeping_start_settings_of(mut self, running: &GatewayConfig) -> Self {
        self.listen = running.listen;
        self.admin_listen = running.admin_listen;
        self.tls.clone_from(&running.tls);
        self.access_log = running.access_log.clone();
        self.store.clone_from(&running.store);
        self.store_pool = running.store_pool;
        self.state = running.state.clone();
        self.tokens = running.tokens.clone();
        self.auth = running.auth.clone();
        self.cache.memory_bytes = running.cache.memory_bytes;
        self.telemetry.clone_from(&running.telemetry);
        self
    }

    /// Services some route (or the login) sends requests to.
    pub fn routed_services(&self) -> std::collections::BTreeSet<&str> {
        self.routes
            .iter()
            .filter(|route| route.compose.is_none())
            .map(|route| route.service.as_str())
            .chain(
                self.routes
                    .iter()
                    .filter_map(|route| route.compose.as_deref())
                    .flat_map(crate::compose::Plan::services),
            )
            .chain(std::iter::once(self.auth.credentials_service.as_str()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub access_ttl: Duration,
    /// How long an unused refresh token stays valid; each refresh starts it anew.
    pub refresh_ttl: Duration,
    /// How long a rotated-in key is published before it signs (see `auth::keys`).
    pub key_activation: Duration,
    pub issuer: String,
    /// The `aud` of access tokens; never the name of a service, so an access token is never
    /// mistaken for an identity token.
    pub audience: String,
    pub algorithm: SigningAlgorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    RS256,
    HS256,
}

/// Where the gateway's own endpoints live, and which service checks passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEndpoints {
    pub login_path: String,
    /// The OAuth 2.0 token endpoint.
    pub token_path: String,
    pub refresh_path: String,
    pub logout_path: String,
    pub cutoff_poll: Duration,
    pub throttle: ThrottleSettings,
    /// The service with `POST /internal/credentials`.
    pub credentials_service: String,
    pub credentials_path: String,
    /// Rate-limit policies on the login endpoint (`auth.rate_limit`), before any password check.
    pub login_rate_limit: Vec<std::sync::Arc<crate::limit::RatePolicy>>,
}

/// Failed logins allowed within a window, before 429: per username from devices not known to
/// have signed in as it (all of them together), per client IP, and per known device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub per_username: u64,
    pub per_ip: u64,
    /// A known device's own budget (see `auth::device`); past it, it counts as unknown.
    pub per_device: u64,
    /// Password checks in flight at once on a replica, for unknown devices (more answer 503 at
    /// once) and, separately, for known ones (which wait their turn).
    pub concurrent: usize,
    pub window: Duration,
    /// How long a device token (and its cookie) lasts.
    pub device_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body forwarded; past it, 413.
    pub max_body_bytes: u64,
    /// A client silent this long while sending a request body gets 408; the instance is not
    /// blamed.
    pub body_idle_timeout: Duration,
    /// From accept (or the end of the previous request on a keep-alive connection) until a
    /// request's headers are complete; past it the connection is closed.
    pub header_read_timeout: Duration,
    /// How long a connection may stay unable to write its answer to a client that does not read
    /// it; past it the connection is dropped, and the upstream's answer with it.
    pub send_timeout: Duration,
    /// Connections served at once; past it the gateway stops accepting until one closes.
    pub max_connections: usize,
    /// Connections open at once from one client IP; past it a new one is closed at accept.
    pub max_connections_per_ip: usize,
}

/// One service: its instances and how the proxy treats them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// Its instances (scheme, host and port only), each at most once, all `http://` or all
    /// `https://`.
    pub upstreams: Vec<Uri>,
    /// HTTP/1.1, or HTTP/2 (ALPN `h2` over TLS, prior knowledge on `http://`).
    pub protocol: UpstreamProtocol,
    /// How its `https://` instances are verified and what it presents to them; `None` for
    /// `http://` instances.
    pub tls: Option<std::sync::Arc<crate::proxy::tls::TlsClient>>,
    /// From the first attempt to the response headers, retries included; a route may override it.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub balance: Balance,
    /// Active health checks; `None`: instances are judged by the traffic alone.
    pub health: Option<HealthCheck>,
    pub breaker: BreakerSettings,
    pub retries: RetrySettings,
    /// With health checks, the gateway is not ready after start until a required service it
    /// routes to has passed a check (once; see `crate::readiness`).
    pub required: bool,
}

/// The HTTP version the gateway speaks to a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// A pool of keep-alive connections, one request on each at a time.
    #[default]
    Http1,
    /// One connection per instance, every request a stream on it.
    Http2,
}

/// How a request chooses among the healthy instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each instance in turn.
    RoundRobin,
    /// The one with fewer requests in flight out of two picked at random ("power of two choices").
    LeastRequests,
}

/// `GET path` on every instance each `interval` (a round never starts before the last ended, so
/// checks never overlap); `healthy` passes in a row bring an instance back, `unhealthy` failures
/// in a row (no 2xx within `timeout`) take it out, checked `interval / unhealthy` apart once the
/// first failed so that it is out within about one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive outlier detection: `failures` in a row (5xx, connection failure, timeout, broken
/// answer) eject an instance for `backoff`, doubled at each ejection in a row up to `max_backoff`;
/// then one trial request decides whether it is back. An instance back in rotation for `decay`
/// is forgiven: its next ejection starts from `backoff` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long in rotation resets the doubling; `None`: as long as the back-off last served.
    pub decay: Option<Duration>,
}

/// Retries of idempotent requests on another instance, at most `attempts` more per request and
/// over time at most `budget_percent` of the requests (plus a small burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub attempts: u32,
    pub budget_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    /// The public path, with `{name}` parameters and an optional trailing `{*rest}`.
    pub path: String,
    pub methods: Vec<Method>,
    /// The service it forwards to; empty on a composition route, whose parts name theirs.
    pub service: String,
    /// The upstream path, which may use the public path's parameters.
    pub to: String,
    pub auth: AuthPolicy,
    /// Overrides the service's timeout for this route.
    pub timeout: Option<Duration>,
    /// The rate-limit policies the route takes (`rate_limit: [name, …]`), every one applying.
    pub rate_limit: Vec<std::sync::Arc<crate::limit::RatePolicy>>,
    /// Its GET and HEAD answers are cached (see `crate::cache`); `None`: never.
    pub cache: Option<CacheRule>,
    /// A composition route (`compose:`, see `crate::compose`): its parts, checked and ordered.
    pub compose: Option<std::sync::Arc<crate::compose::Plan>>,
    /// Its `request:` and `response:` edits (see `crate::transform`).
    pub transform: crate::transform::RouteTransform,
    /// What the gateway checks of a request before forwarding it (`request:`).
    pub request_checks: RequestChecks,
    /// The client certificate a request must come with (`client_cert:`); `None`: none asked.
    pub client_cert: Option<ClientCertRule>,
    /// A WebSocket upgrade is let through, with these limits (`websocket:`); `None`: the
    /// `Upgrade` header is stripped like any hop-by-hop header.
    pub websocket: Option<WebSocketRule>,
}

/// One route's WebSocket limits: past either, both sides of the socket are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketRule {
    /// No byte in either direction for this long.
    pub idle_timeout: Duration,
    /// From the upgrade, however busy the socket is.
    pub max_lifetime: Duration,
}

// --- TLS at the entrance (issue 16) ---

/// TLS on the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub files: kit::tls::TlsFiles,
    /// The DNS names and addresses the certificates are for, as loaded at start: the only hosts
    /// the HTTPS redirect sends clients to.
    pub names: Vec<String>,
    /// `Strict-Transport-Security` on every answer over TLS; `None`: not sent.
    pub hsts: Option<http::HeaderValue>,
    /// A plain-HTTP listener that redirects every request to HTTPS.
    pub redirect_http: Option<SocketAddr>,
}

/// What a route asks of the client certificate (`client_cert:`): every part given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertRule {
    /// The subject, exactly as RFC 4514 writes it (`CN=orders-batch,O=Shop`).
    pub subject: Option<String>,
    /// One of these DNS names among the certificate's SANs.
    pub dns: Vec<String>,
    /// One of these URIs (a SPIFFE ID…) among the certificate's SANs.
    pub uri: Vec<String>,
}

impl ClientCertRule {
    pub fn admits(&self, certificate: &kit::tls::ClientCertificate) -> bool {
        let one_of = |wanted: &[String], held: &[String]| {
            wanted.is_empty() || wanted.iter().any(|name| held.contains(name))
        };
        self.subject
            .as_ref()
            .is_none_or(|subject| *subject == certificate.subject)
            && one_of(&self.dns, &certificate.dns_names)
            && one_of(&self.uri, &certificate.uris)
    }
}

// --- end of TLS ---

/// A route's checks of its requests before they are forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestChecks {
    /// JSON bodies are validated against the service's OpenAPI schema for the operation.
    pub validate_body: bool,
}

// --- response cache (issue 13) ---

/// The response cache's bounds, for every route that opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// What the in-memory store may hold, bodies and headers counted (read at start).
    pub memory_bytes: u64,
    /// The largest body stored when a route does not say; larger ones pass through.
    pub max_body_bytes: u64,
}

/// One route's cache: how long its answers stay fresh at most, how long past that they may
/// stand in for a failing service, and the largest body stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRule {
    pub ttl: Duration,
    /// Zero: a failing service's error goes to the client.
    pub stale_if_error: Duration,
    /// How long past its freshness an answer is served at once while one request refreshes it
    /// in the background (RFC 5861), unless the service's `stale-while-revalidate` says.
    pub stale_while_revalidate: Duration,
    pub max_body_bytes: u64,
}

// --- end of response cache ---

/// Who may call a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    Public,
    Authenticated,
    /// Signed in, with at least one of `roles` (when not empty) and every one of `scopes`.
    Require {
        roles: Vec<String>,
        scopes: Vec<String>,
    },
}

impl AuthPolicy {
    pub fn needs_identity(&self) -> bool {
        !matches!(self, Self::Public)
    }
}
